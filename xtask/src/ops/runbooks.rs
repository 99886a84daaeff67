//! The runbooks: an mdBook in `runbooks/`, one page per alert plus the
//! operating procedures.
//!
//! [`ensure_tools`] installs a pinned mdbook into `target/toolchain`;
//! [`check`] checks the Markdown sources ([`pages`]: the outline, page
//! count, stubs, the sections of alert pages), builds the book and checks
//! every link of the generated HTML offline ([`links`]).

mod links;
mod pages;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::setup::Report;
use crate::{cmd, paths};

/// The mdbook release the book is built with. 0.4.x: the 0.5 series
/// changed the configuration and the theme the book relies on.
const MDBOOK_VERSION: &str = "0.4.52";

/// Where the book is served from (`output.html.site-url` in
/// `runbooks/book.toml`): absolute links under it point into the book.
const SITE_URL: &str = "/fraiseql-edge/runbooks/";

/// The mdbook binary installed by [`ensure_tools`].
fn mdbook_binary() -> Result<PathBuf> {
    Ok(paths::toolchain_dir()?.join("bin").join("mdbook"))
}

/// Installs mdbook [`MDBOOK_VERSION`] into `target/toolchain/bin` unless
/// that version is already there.
///
/// Built with `--no-default-features`: the html renderer is always
/// compiled in, and the book needs neither `serve`/`watch` (a web server
/// and a file watcher) nor `search` (the search index).
pub fn ensure_tools(report: Report) -> Result<()> {
    let root = paths::toolchain_dir()?;
    let mdbook = mdbook_binary()?;
    let wanted = format!("mdbook v{MDBOOK_VERSION}");
    if let Ok(version) = cmd::output(Command::new(&mdbook).arg("--version"))
        && version.trim() == wanted
    {
        report.ok(&format!("{wanted} ({})", mdbook.display()));
        return Ok(());
    }
    let mut cargo = Command::new("cargo");
    cargo
        .args(["install", "mdbook", "--version", MDBOOK_VERSION])
        .args(["--locked", "--no-default-features", "--force"])
        .arg("--root")
        .arg(&root)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    report.doing(&format!("{wanted} missing at {}", mdbook.display()), &cargo);
    cmd::run(&mut cargo)?;
    let version = cmd::output(Command::new(&mdbook).arg("--version"))
        .context("the freshly installed mdbook does not run")?;
    if version.trim() != wanted {
        bail!(
            "{} reports `{}`, expected `{wanted}`",
            mdbook.display(),
            version.trim()
        );
    }
    Ok(())
}

/// Checks the runbooks: the sources, then (when every page of the outline
/// exists) the built book's links. Every problem found is listed in the
/// error, not only the first.
pub fn check() -> Result<()> {
    ensure_tools(Report { verbose: false })?;
    let root = paths::root();
    check_book(
        &mdbook_binary()?,
        &root.join("runbooks"),
        &root.join("target").join("runbooks"),
    )
}

/// [`check`] for the book in `book` (holding `book.toml` and `src/`),
/// built into `out`.
fn check_book(mdbook: &Path, book: &Path, out: &Path) -> Result<()> {
    let src = book.join("src");
    let sources = pages::Sources::read(&src)?;
    let mut problems = sources.problems();
    if sources.missing().is_empty() {
        build(mdbook, book, out)?;
        let site = links::Site::read(out, SITE_URL)?;
        problems.extend(site.broken_links());
        println!(
            "runbooks: {} pages, {} HTML files link-checked in {}",
            sources.page_count(),
            site.page_count(),
            out.display()
        );
    } else {
        problems.push(format!(
            "the book was not built: {} page(s) of SUMMARY.md do not exist",
            sources.missing().len()
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let list: String = problems.iter().map(|p| format!("\n  - {p}")).collect();
    bail!("{} problem(s) in {}:{list}", problems.len(), book.display())
}

/// `mdbook build BOOK --dest-dir OUT`, from an empty `OUT` so no page of
/// an earlier build can satisfy a link.
fn build(mdbook: &Path, book: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    let mut build = Command::new(mdbook);
    build.arg("build").arg(book).arg("--dest-dir").arg(out);
    println!("runbooks: {}", cmd::describe(&build));
    cmd::run(&mut build)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`SITE_URL`] repeats `output.html.site-url` of `runbooks/book.toml`.
    #[test]
    fn site_url_matches_book_toml() {
        let path = paths::root().join("runbooks").join("book.toml");
        let toml = std::fs::read_to_string(&path).expect("runbooks/book.toml");
        let site_url = toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("site-url"))
            .and_then(|rest| rest.trim().strip_prefix('='))
            .map(|v| v.trim().trim_matches('"'));
        assert_eq!(site_url, Some(SITE_URL), "site-url in {}", path.display());
    }
}
