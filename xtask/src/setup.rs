//! `cargo xtask setup`: everything a fresh clone on a fresh machine needs,
//! done idempotently. Other commands call [`ensure_setup`] first.

use std::process::Command;

use anyhow::{Context, Result};

use crate::{cmd, linker, system};

/// Prints what setup finds and does. Checks that pass are only printed by
/// `cargo xtask setup` itself; actions and skips are always printed.
#[derive(Clone, Copy)]
pub struct Report {
    pub verbose: bool,
}

impl Report {
    pub fn ok(self, what: &str) {
        if self.verbose {
            println!("setup: {what}: already in place");
        }
    }

    pub fn doing(self, what: &str, cmd: &Command) {
        println!("setup: {what}: running `{}`", cmd::describe(cmd));
    }

    pub fn note(self, msg: &str) {
        println!("setup: {msg}");
    }
}

/// `cargo xtask setup`.
pub fn setup() -> Result<()> {
    run(Report { verbose: true })?;
    println!("setup: done");
    Ok(())
}

/// Makes sure the toolchain, bpf-linker and (as root) the kernel file
/// systems and Debian packages are in place. Cheap when they are.
pub fn ensure_setup() -> Result<()> {
    run(Report { verbose: false })
}

fn run(report: Report) -> Result<()> {
    ensure_nightly(report).context("setting up the nightly toolchain")?;
    linker::ensure_bpf_linker(report).context("setting up bpf-linker")?;
    system::ensure_system(report)?;
    crate::ops::ensure_tools(report).context("setting up the operations package's tools")
}

/// The nightly toolchain with rust-src (the eBPF build and fuzzing use it).
pub fn ensure_nightly(report: Report) -> Result<()> {
    let toolchains = cmd::output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !has_nightly(&toolchains) {
        let mut install = Command::new("rustup");
        install.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
        install.args(["--component", "rust-src"]);
        report.doing("nightly toolchain missing", &install);
        return cmd::run(&mut install);
    }
    let components = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if components.lines().any(|l| l.trim().starts_with("rust-src")) {
        report.ok("nightly toolchain with rust-src");
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
    report.doing("rust-src missing from nightly", &add);
    cmd::run(&mut add)
}

/// True when `rustup toolchain list` shows a plain `nightly` toolchain.
fn has_nightly(list: &str) -> bool {
    list.lines().any(|line| {
        let name = line.split_whitespace().next().unwrap_or("");
        name == "nightly" || name.starts_with("nightly-") && !is_dated(name)
    })
}

/// `nightly-2026-01-01-…` is a pinned toolchain, not `nightly`.
fn is_dated(name: &str) -> bool {
    let rest = &name["nightly-".len()..];
    rest.len() >= 10 && rest[..4].bytes().all(|b| b.is_ascii_digit()) && rest.as_bytes()[4] == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nightly_among_toolchains() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
    }

    #[test]
    fn dated_nightly_is_not_nightly() {
        let list = "stable-x86_64-unknown-linux-gnu (default)\n\
                    nightly-2025-01-01-x86_64-unknown-linux-gnu\n";
        assert!(!has_nightly(list));
        assert!(!has_nightly("no installed toolchains\n"));
    }
}
