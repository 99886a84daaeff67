//! An offline link checker for the generated HTML: every relative `href`
//! and `src` must name a file of the built book, and every `#fragment` an
//! `id` of the page it points to. External links (any URL with a scheme,
//! or `//host/…`) are not fetched.
//!
//! The HTML is mdbook's own, so a small tag scanner is enough: it reads
//! tags and their attributes, skips comments and the bodies of `<script>`
//! and `<style>`, and decodes the character references attribute values
//! may hold.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// The ids and links of one HTML page.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    /// Every `id` (and `<a name>`) in the page: what a fragment may name.
    ids: BTreeSet<String>,
    /// Every `href` and `src` value, decoded, in order.
    links: Vec<String>,
    /// The `<base href>`, if the page has one.
    base: Option<String>,
}

/// A built book: every file it holds and the parsed HTML pages.
#[derive(Debug)]
pub struct Site {
    /// Every file, relative to the book's root with `/` separators.
    files: BTreeSet<String>,
    /// The HTML pages by path.
    pages: BTreeMap<String, Page>,
    /// The URL path the book is served from (`/…/`): absolute links under
    /// it point into the book, any other absolute path is outside it.
    site_url: String,
}

impl Site {
    /// Reads the book built in `out`.
    pub fn read(out: &Path, site_url: &str) -> Result<Self> {
        let mut files = BTreeSet::new();
        let mut pages = BTreeMap::new();
        walk(out, out, &mut |relative, path| {
            if relative.ends_with(".html") {
                let html = fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                pages.insert(relative.clone(), parse(&html));
            }
            files.insert(relative);
            Ok(())
        })?;
        Ok(Self {
            files,
            pages,
            site_url: site_url.to_string(),
        })
    }

    /// The number of HTML pages.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Every broken link and anchor, one message each, as
    /// `page: link `…`: why`.
    pub fn broken_links(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (path, page) in &self.pages {
            for link in &page.links {
                if let Err(why) = self.resolve(path, page, link) {
                    problems.push(format!("{path}: link `{link}`: {why}"));
                }
            }
        }
        problems
    }

    /// Checks one link of `page` (at `path`); the error says what is wrong.
    fn resolve(&self, path: &str, page: &Page, link: &str) -> Result<(), String> {
        if is_external(link) {
            return Ok(());
        }
        let (target, fragment) = match link.split_once('#') {
            Some((target, fragment)) => (target, Some(fragment)),
            None => (link, None),
        };
        let target = target.split('?').next().unwrap_or_default();
        let file = if target.is_empty() {
            path.to_string()
        } else {
            self.target_file(path, page, &percent_decode(target))?
        };
        let Some(fragment) = fragment.filter(|f| !f.is_empty()) else {
            return Ok(());
        };
        let Some(target) = self.pages.get(&file) else {
            return Ok(());
        };
        let fragment = percent_decode(fragment);
        if target.ids.contains(&fragment) {
            Ok(())
        } else {
            Err(format!("no id `{fragment}` in {file}"))
        }
    }

    /// The existing file a link's (decoded, non-empty) path names, from
    /// `page` at `path`: relative to the page's directory, or to the root
    /// under a `<base>` at the site URL; an absolute path must lie under the
    /// site URL; a directory stands for its `index.html`.
    fn target_file(&self, path: &str, page: &Page, target: &str) -> Result<String, String> {
        let site = self.site_url.trim_matches('/');
        let (dir, relative) = match target.strip_prefix('/') {
            Some(absolute) => {
                let inside = absolute
                    .strip_prefix(site)
                    .ok_or_else(|| format!("absolute path outside the book ({})", self.site_url))?;
                ("", inside)
            }
            None if page.base.as_deref().map(|b| b.trim_matches('/')) == Some(site) => ("", target),
            None => (path.rsplit_once('/').map_or("", |(dir, _)| dir), target),
        };
        let mut file = join(dir, relative).ok_or("leads out of the book")?;
        if file.is_empty() || file.ends_with('/') || self.is_dir(&file) {
            file = format!("{}index.html", with_slash(&file));
        }
        if self.files.contains(&file) {
            return Ok(file);
        }
        Err(match file.strip_suffix("README.html") {
            // mdbook renders README.md as index.html but leaves links to
            // README.md pointing at README.html.
            Some(dir) if self.files.contains(&format!("{dir}index.html")) => format!(
                "no file {file} (mdbook renders README.md as index.html: link to index.html)"
            ),
            _ => format!("no file {file}"),
        })
    }

    /// True when some file lies below `dir`.
    fn is_dir(&self, dir: &str) -> bool {
        let prefix = with_slash(dir);
        self.files
            .range(prefix.clone()..)
            .next()
            .is_some_and(|f| f.starts_with(&prefix))
    }
}

/// `dir` with one trailing `/`, or empty for the root.
fn with_slash(dir: &str) -> String {
    if dir.is_empty() || dir.ends_with('/') {
        dir.to_string()
    } else {
        format!("{dir}/")
    }
}

/// Calls `visit(relative path, path)` for every file below `dir`.
fn walk(root: &Path, dir: &Path, visit: &mut dyn FnMut(String, &Path) -> Result<()>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, visit)?;
        } else {
            let relative = path.strip_prefix(root).expect("walk stays below root");
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            visit(parts.join("/"), &path)?;
        }
    }
    Ok(())
}

/// A link the checker leaves alone: a URL with a scheme (`https:`,
/// `mailto:`, `javascript:`, `data:`) or a network path (`//host/…`).
fn is_external(link: &str) -> bool {
    if link.starts_with("//") {
        return true;
    }
    let scheme = link.split(':').next().unwrap_or_default();
    scheme.len() < link.len()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `relative` resolved against the directory `dir` (both `/`-separated,
/// relative to the book's root); `None` when `..` climbs above the root.
/// A trailing `/` is kept.
fn join(dir: &str, relative: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    let mut joined = parts.join("/");
    if relative.ends_with('/') && !joined.is_empty() {
        joined.push('/');
    }
    Some(joined)
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes the character references of an attribute value (`&amp;`,
/// `&quot;`, `&#39;`, `&#x27;`, …); unknown ones are kept as written.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let decoded = rest.find(';').and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => name.strip_prefix('#').and_then(|n| {
                    let code = match n.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => n.parse().ok(),
                    };
                    code.and_then(char::from_u32)
                }),
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Reads the ids and links of an HTML page.
pub fn parse(html: &str) -> Page {
    let mut page = Page::default();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some((tag, after)) = read_tag(&rest[1..]) else {
            rest = &rest[1..];
            continue;
        };
        rest = after;
        if tag.closing {
            continue;
        }
        for (name, value) in &tag.attributes {
            match name.as_str() {
                "id" => {
                    page.ids.insert(value.clone());
                }
                "name" if tag.name == "a" => {
                    page.ids.insert(value.clone());
                }
                "href" if tag.name == "base" => page.base = Some(value.clone()),
                "href" | "src" => page.links.push(value.clone()),
                _ => {}
            }
        }
        if matches!(tag.name.as_str(), "script" | "style") && !tag.self_closing {
            let end = format!("</{}", tag.name);
            rest = find_ignore_case(rest, &end).map_or("", |i| &rest[i..]);
        }
    }
    page
}

/// One tag: its lower-case name and attributes (names lower-cased, values
/// decoded).
struct Tag {
    name: String,
    closing: bool,
    self_closing: bool,
    attributes: Vec<(String, String)>,
}

/// Reads a tag from just after its `<`; returns it and the text after its
/// `>`, or `None` when this `<` starts no tag (`a < b`, `<!DOCTYPE`).
fn read_tag(text: &str) -> Option<(Tag, &str)> {
    let (closing, text) = match text.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let name_len = text
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .unwrap_or(text.len());
    if name_len == 0 || !text.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let mut tag = Tag {
        name: text[..name_len].to_ascii_lowercase(),
        closing,
        self_closing: false,
        attributes: Vec::new(),
    };
    let mut rest = &text[name_len..];
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("/>") {
            tag.self_closing = true;
            return Some((tag, after));
        }
        if let Some(after) = rest.strip_prefix('>') {
            return Some((tag, after));
        }
        if rest.is_empty() {
            return Some((tag, rest));
        }
        let name_len = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '=' | '>' | '/'))
            .unwrap_or(rest.len())
            .max(1);
        let name = rest[..name_len].to_ascii_lowercase();
        rest = rest[name_len..].trim_start();
        let Some(value) = rest.strip_prefix('=') else {
            tag.attributes.push((name, String::new()));
            continue;
        };
        let value = value.trim_start();
        let (raw, after) = match value.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let inner = &value[1..];
                let end = inner.find(quote).unwrap_or(inner.len());
                (&inner[..end], inner.get(end + 1..).unwrap_or(""))
            }
            _ => {
                let end = value
                    .find(|c: char| c.is_whitespace() || c == '>')
                    .unwrap_or(value.len());
                (&value[..end], &value[end..])
            }
        };
        tag.attributes.push((name, decode_entities(raw)));
        rest = after;
    }
}

/// The byte offset of `needle` (ASCII) in `haystack`, ignoring case.
fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(pages: &[(&str, &str)], other_files: &[&str]) -> Site {
        Site {
            files: pages
                .iter()
                .map(|(p, _)| p.to_string())
                .chain(other_files.iter().map(|f| f.to_string()))
                .collect(),
            pages: pages
                .iter()
                .map(|(p, html)| (p.to_string(), parse(html)))
                .collect(),
            site_url: "/book/".to_string(),
        }
    }

    #[test]
    fn parses_ids_and_links() {
        let html = r#"<!DOCTYPE html><html><head>
            <link rel="stylesheet" href="css/a.css?v=1">
            <script src="book.js"></script>
            <script>if (a < b) { x.innerHTML = '<a href="nowhere.html">'; }</script>
            <!-- <a href="commented.html"> -->
            </head><body>
            <h2 id="meaning"><a class="header" href='#meaning'>Meaning</a></h2>
            <a name=legacy href=../up.html>x</a>
            <a href="other.html?x=1&amp;y=2#sec%20one">y</a>
            <IMG SRC="img/p.png"/>
            </body></html>"#;
        let page = parse(html);
        assert_eq!(
            page.links,
            [
                "css/a.css?v=1",
                "book.js",
                "#meaning",
                "../up.html",
                "other.html?x=1&y=2#sec%20one",
                "img/p.png"
            ]
        );
        assert_eq!(
            page.ids.iter().map(String::as_str).collect::<Vec<_>>(),
            ["legacy", "meaning"]
        );
        assert_eq!(page.base, None);
    }

    #[test]
    fn good_links_pass() {
        let alert = r##"<h1 id="down">Down</h1>
            <a href="#down">self</a>
            <a href="../incidents/flood.html#steps">flood</a>
            <a href="../index.html">home</a>
            <a href="../">home again</a>
            <a href="/book/alerts/Down.html">absolute</a>
            <a href="https://github.com/fraiseql/fraiseql-edge#readme">external</a>
            <a href="mailto:ops@example.com">mail</a>
            <img src="../img/x.png">"##;
        let flood = r#"<h2 id="steps">Steps</h2>"#;
        let site = site(
            &[
                ("alerts/Down.html", alert),
                ("incidents/flood.html", flood),
                ("index.html", "<p>home</p>"),
            ],
            &["img/x.png"],
        );
        assert_eq!(site.broken_links(), Vec::<String>::new());
    }

    #[test]
    fn broken_links_and_anchors_are_reported() {
        let alert = r##"<h1 id="down">Down</h1>
            <a href="#nowhere">self</a>
            <a href="../incidents/flood.html#missing">flood</a>
            <a href="../incidents/gone.html">gone</a>
            <a href="README.html">index</a>
            <a href="../../../etc/passwd">out</a>
            <a href="/elsewhere/page.html">absolute</a>"##;
        let site = site(
            &[
                ("alerts/Down.html", alert),
                ("incidents/flood.html", r#"<h2 id="steps">Steps</h2>"#),
                ("alerts/index.html", ""),
            ],
            &[],
        );
        assert_eq!(
            site.broken_links(),
            [
                "alerts/Down.html: link `#nowhere`: no id `nowhere` in alerts/Down.html",
                "alerts/Down.html: link `../incidents/flood.html#missing`: \
                 no id `missing` in incidents/flood.html",
                "alerts/Down.html: link `../incidents/gone.html`: no file incidents/gone.html",
                "alerts/Down.html: link `README.html`: no file alerts/README.html \
                 (mdbook renders README.md as index.html: link to index.html)",
                "alerts/Down.html: link `../../../etc/passwd`: leads out of the book",
                "alerts/Down.html: link `/elsewhere/page.html`: \
                 absolute path outside the book (/book/)",
            ]
        );
    }

    #[test]
    fn a_base_at_the_site_url_resolves_from_the_root() {
        let not_found = r#"<base href="/book/"><a href="alerts/Down.html">x</a>"#;
        let good = site(&[("404.html", not_found), ("alerts/Down.html", "")], &[]);
        assert!(good.broken_links().is_empty());
        let elsewhere = r#"<base href="/book/"><a href="alerts/Gone.html">x</a>"#;
        let broken = site(&[("sub/404.html", elsewhere)], &[]);
        assert_eq!(
            broken.broken_links(),
            ["sub/404.html: link `alerts/Gone.html`: no file alerts/Gone.html"]
        );
    }

    #[test]
    fn helpers() {
        assert!(is_external("https://example.com/x"));
        assert!(is_external("//cdn.example.com/x.js"));
        assert!(is_external("javascript:void(0)"));
        assert!(!is_external("../a.html"));
        assert!(!is_external("a.html#b:c"));
        assert_eq!(join("a/b", "../c.html").as_deref(), Some("a/c.html"));
        assert_eq!(join("a", "./b/").as_deref(), Some("a/b/"));
        assert_eq!(join("", "../x"), None);
        assert_eq!(percent_decode("a%20b%zz%"), "a b%zz%");
        assert_eq!(
            decode_entities("a&amp;b&#39;c&#x41;&bogus;"),
            "a&b'cA&bogus;"
        );
    }
}
