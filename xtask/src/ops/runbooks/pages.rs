//! Checks of the book's Markdown sources: the outline (`SUMMARY.md`) and
//! the files agree both ways, the book is not thin, no page is a stub, and
//! every alert page has the sections an on-call reader looks for.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// Fewest pages the book may have.
const MIN_PAGES: usize = 50;

/// Fewest words of prose (outside code blocks) a page may have.
const MIN_WORDS: usize = 150;

/// Markers of unfinished text; a page containing one (as a word) is a stub.
const STUB_MARKERS: [&str; 3] = ["TODO", "TBD", "FIXME"];

/// The sections every alert page has, in this order.
const ALERT_SECTIONS: [&str; 4] = ["Meaning", "Impact", "Diagnosis", "Mitigation"];

/// Alert pages: `alerts/<AlertName>.md` with this prefix.
const ALERT_PREFIX: &str = "alerts/FraiseqlEdge";

/// The book's sources: what `SUMMARY.md` lists and the Markdown files that
/// exist, as paths relative to `src/` with `/` separators.
#[derive(Debug, Default)]
pub struct Sources {
    /// Entries of `SUMMARY.md`, in order.
    listed: Vec<String>,
    /// Every `.md` file under `src/` but `SUMMARY.md`, with its text.
    files: Vec<(String, String)>,
}

impl Sources {
    /// Reads `src/SUMMARY.md` and every Markdown file under `src`.
    pub fn read(src: &Path) -> Result<Self> {
        let summary_path = src.join("SUMMARY.md");
        let summary = fs::read_to_string(&summary_path)
            .with_context(|| format!("reading {}", summary_path.display()))?;
        let mut files = Vec::new();
        collect_markdown(src, src, &mut files)?;
        files.retain(|(path, _)| path != "SUMMARY.md");
        files.sort();
        Ok(Self {
            listed: summary_links(&summary),
            files,
        })
    }

    /// Entries of `SUMMARY.md` whose file does not exist.
    pub fn missing(&self) -> Vec<&str> {
        let existing: BTreeSet<&str> = self.files.iter().map(|(p, _)| p.as_str()).collect();
        self.listed
            .iter()
            .map(String::as_str)
            .filter(|p| !existing.contains(p))
            .collect()
    }

    /// Pages listed in `SUMMARY.md` that exist.
    pub fn page_count(&self) -> usize {
        self.listed.len() - self.missing().len()
    }

    /// Every problem of the sources, one message each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .missing()
            .into_iter()
            .map(|p| format!("SUMMARY.md lists {p}, which does not exist"))
            .collect();
        let listed: BTreeSet<&str> = self.listed.iter().map(String::as_str).collect();
        for (path, text) in &self.files {
            if !listed.contains(path.as_str()) {
                problems.push(format!("{path} is not listed in SUMMARY.md"));
            }
            problems.extend(page_problems(path, text));
        }
        let pages = self.page_count();
        if pages < MIN_PAGES {
            problems.push(format!(
                "the book has {pages} pages, fewer than {MIN_PAGES}"
            ));
        }
        problems
    }
}

/// Appends every `.md` file below `dir` (relative to `src`) with its text.
fn collect_markdown(src: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_markdown(src, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "md") {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let relative = path
                .strip_prefix(src)
                .expect("collect_markdown walks below src");
            let name: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((name.join("/"), text));
        }
    }
    Ok(())
}

/// The link targets of `SUMMARY.md`: `[Title](path.md)` entries, in order
/// (draft chapters, `[Title]()`, have none and are skipped).
fn summary_links(summary: &str) -> Vec<String> {
    let mut links = Vec::new();
    for line in summary.lines() {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].trim();
            if !target.is_empty() {
                links.push(target.trim_start_matches("./").to_string());
            }
            rest = &after[end + 1..];
        }
    }
    links
}

/// The problems of one page: a stub marker, too little prose, and for an
/// alert page its title and sections.
pub fn page_problems(path: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let prose = prose(text);
    for marker in STUB_MARKERS {
        if prose
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == marker)
        {
            problems.push(format!("{path} contains {marker}"));
        }
    }
    let words = prose.split_whitespace().count();
    if words < MIN_WORDS {
        problems.push(format!(
            "{path} has {words} words of prose, fewer than {MIN_WORDS} (a stub)"
        ));
    }
    if let Some(name) = path
        .strip_prefix("alerts/")
        .and_then(|p| p.strip_suffix(".md"))
        .filter(|_| path.starts_with(ALERT_PREFIX))
    {
        problems.extend(alert_problems(path, name, text));
    }
    problems
}

/// An alert page is titled with the alert's name and has the
/// [`ALERT_SECTIONS`] as `##` headings, in order.
fn alert_problems(path: &str, name: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let headings = headings(text);
    let title = headings
        .iter()
        .find(|(level, _)| *level == 1)
        .map(|(_, t)| t.as_str());
    if title != Some(name) {
        problems.push(format!(
            "{path}: the title should be `# {name}`, found {}",
            title.map_or("no title".to_string(), |t| format!("`# {t}`"))
        ));
    }
    let sections: Vec<&str> = headings
        .iter()
        .filter(|(level, _)| *level == 2)
        .map(|(_, t)| t.as_str())
        .collect();
    let missing: Vec<&str> = ALERT_SECTIONS
        .into_iter()
        .filter(|s| !sections.contains(s))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{path}: missing section(s) {}",
            missing
                .iter()
                .map(|s| format!("`## {s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    } else {
        let order: Vec<&str> = sections
            .iter()
            .copied()
            .filter(|s| ALERT_SECTIONS.contains(s))
            .collect();
        if order != ALERT_SECTIONS {
            problems.push(format!(
                "{path}: sections should come in the order {}",
                ALERT_SECTIONS.join(", ")
            ));
        }
    }
    problems
}

/// The ATX headings outside code blocks, as (level, text).
fn headings(text: &str) -> Vec<(usize, String)> {
    prose(text)
        .lines()
        .filter_map(|line| {
            let level = line.bytes().take_while(|&b| b == b'#').count();
            let rest = &line[level..];
            ((1..=6).contains(&level) && rest.starts_with(' '))
                .then(|| (level, rest.trim().trim_end_matches('#').trim().to_string()))
        })
        .collect()
}

/// The text without fenced code blocks (``` or ~~~).
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match fence {
            Some(marker) => {
                if trimmed.starts_with(marker) {
                    fence = None;
                }
            }
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` words of filler prose.
    fn words(n: usize) -> String {
        vec!["word"; n].join(" ")
    }

    fn alert_page(title: &str, sections: &[&str]) -> String {
        let mut page = format!("# {title}\n\n{}\n", words(160));
        for s in sections {
            page.push_str(&format!("\n## {s}\n\nText.\n"));
        }
        page
    }

    #[test]
    fn reads_summary_entries() {
        let summary = "# Summary\n\n[Introduction](README.md)\n\n# Part\n\n\
                       - [A](install/a.md)\n  - [B](./install/b.md)\n- [Draft]()\n";
        assert_eq!(
            summary_links(summary),
            ["README.md", "install/a.md", "install/b.md"]
        );
    }

    #[test]
    fn summary_and_files_must_agree() {
        let page = words(200);
        let sources = Sources {
            listed: vec!["README.md".into(), "gone.md".into()],
            files: vec![
                ("README.md".into(), page.clone()),
                ("extra.md".into(), page),
            ],
        };
        assert_eq!(sources.missing(), ["gone.md"]);
        let problems = sources.problems();
        assert!(problems.contains(&"SUMMARY.md lists gone.md, which does not exist".into()));
        assert!(problems.contains(&"extra.md is not listed in SUMMARY.md".into()));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("has 1 pages, fewer than 50"))
        );
    }

    #[test]
    fn a_full_page_passes() {
        assert!(page_problems("ops/a.md", &words(150)).is_empty());
        let alert = alert_page("FraiseqlEdgeDown", &ALERT_SECTIONS);
        assert_eq!(
            page_problems("alerts/FraiseqlEdgeDown.md", &alert),
            Vec::<String>::new()
        );
    }

    #[test]
    fn stubs_are_reported() {
        let short = page_problems("ops/a.md", "# A\n\nShort.\n");
        assert_eq!(short.len(), 1);
        assert!(short[0].contains("fewer than 150"), "{short:?}");
        let todo = page_problems("ops/a.md", &format!("{}\nTODO: the rest.\n", words(200)));
        assert_eq!(todo, ["ops/a.md contains TODO"]);
        // Code is not prose: a long code block does not make a page.
        let code = format!("# A\n\n```sh\n{}\n```\n", words(300));
        assert_eq!(page_problems("ops/a.md", &code).len(), 1);
        // A marker inside a word is not one.
        assert!(page_problems("ops/a.md", &format!("{} TODOS\n", words(200))).is_empty());
    }

    #[test]
    fn alert_sections_are_checked() {
        let path = "alerts/FraiseqlEdgeDown.md";
        let missing = alert_page("FraiseqlEdgeDown", &["Meaning", "Mitigation"]);
        assert_eq!(
            page_problems(path, &missing),
            [format!(
                "{path}: missing section(s) `## Impact`, `## Diagnosis`"
            )]
        );
        let shuffled = alert_page(
            "FraiseqlEdgeDown",
            &["Impact", "Meaning", "Diagnosis", "Mitigation"],
        );
        assert_eq!(page_problems(path, &shuffled).len(), 1);
        let titled = alert_page("Something else", &ALERT_SECTIONS);
        assert!(page_problems(path, &titled)[0].contains("the title should be"));
        // A heading inside a code block is not a section.
        let fenced = format!(
            "# FraiseqlEdgeDown\n\n{}\n```\n## Meaning\n```\n## Impact\n## Diagnosis\n## Mitigation\n",
            words(160)
        );
        assert_eq!(
            page_problems(path, &fenced),
            [format!("{path}: missing section(s) `## Meaning`")]
        );
        // The alert index is no alert page.
        assert!(page_problems("alerts/README.md", &words(200)).is_empty());
    }
}
