//! `cargo xtask test`: the project's one test command (CI runs it through
//! `.ci/run`): formatting, clippy, the operations package's offline checks
//! ([`crate::ops`]; its live check is a test of the suite), the test suite,
//! then (under `CI=true`) a bounded run of the admission fuzz target
//! ([`crate::fuzz`]).

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::setup::ensure_setup;
use crate::{cmd, fuzz, image, ops, paths, system};

/// What one step ended with, for the summary.
enum Outcome {
    Ok,
    Skipped,
    Failed(String),
}

impl Outcome {
    fn from(result: Result<()>) -> Self {
        match result {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Failed(format!("{e:#}")),
        }
    }

    fn word(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Skipped => "skipped",
            Outcome::Failed(_) => "FAILED",
        }
    }
}

/// Test counts summed over every `test result:` line cargo test printed,
/// and the failed tests with what they printed, repeated after the summary
/// so the tail of a long CI log names them.
#[derive(Default, Debug, PartialEq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// `path::to::test` of every `test … ... FAILED` line.
    failures: Vec<String>,
    /// The `---- name stdout ----` sections, each cut to its last lines.
    reports: Vec<Vec<String>>,
    /// Whether the line being read belongs to the last report.
    in_report: bool,
}

/// Lines kept from the end of each failed test's output.
const REPORT_LINES: usize = 40;

pub fn test(args: &[String]) -> Result<()> {
    check_privileges()?;
    ensure_setup()?;
    let fmt = Outcome::from(step(["fmt", "--all", "--", "--check"]));
    let clippy = Outcome::from(step(["clippy", "--all-targets", "--", "-D", "warnings"]));
    let ops = Outcome::from(ops::check_offline());
    let mut counts = Counts::default();
    let tests = Outcome::from(run_tests(args, &mut counts));
    let image = image_check();
    let fuzz = match fuzz::in_test() {
        Ok(true) => Outcome::Ok,
        Ok(false) => Outcome::Skipped,
        Err(e) => Outcome::Failed(format!("{e:#}")),
    };
    let mut all_ok = true;
    for outcome in [&fmt, &clippy, &ops, &tests, &image, &fuzz] {
        if let Outcome::Failed(why) = outcome {
            eprintln!("error: {why}");
            all_ok = false;
        }
    }
    println!(
        "xtask test: {} (fmt {}, clippy {}, ops {}, cargo test {}, image {}, fuzz {})",
        if all_ok { "OK" } else { "FAILED" },
        fmt.word(),
        clippy.word(),
        ops.word(),
        tests.word(),
        image.word(),
        fuzz.word()
    );
    counts.print_failures();
    println!(
        "summary: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    if !all_ok {
        bail!("cargo xtask test failed");
    }
    Ok(())
}

/// The container image built from the test build (buildah and podman need
/// root here; without it the step is skipped, which `CI=true` forbids
/// through [`check_privileges`]).
fn image_check() -> Outcome {
    if !system::is_root() {
        println!("test: image: skipped (building images needs root)");
        return Outcome::Skipped;
    }
    println!("test: image: the Containerfile built from target/debug and run");
    Outcome::from(image::check_with_test_build())
}

/// Kernel tests need root; without it they skip, which CI must not allow.
fn check_privileges() -> Result<()> {
    if system::is_root() {
        return Ok(());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        bail!(
            "CI=true but not running as root: the kernel tests (XDP, maps, netns) must run in CI"
        );
    }
    println!(
        "warning: not running as root: the kernel tests will skip (run as root to include them)"
    );
    Ok(())
}

fn step<const N: usize>(args: [&str; N]) -> Result<()> {
    let mut cargo = paths::cargo(args)?;
    println!("test: {}", cmd::describe(&cargo));
    cmd::run(&mut cargo)
}

/// `cargo test ARGS`, its standard output passed through as it comes and
/// read for the `test result:` lines.
fn run_tests(args: &[String], counts: &mut Counts) -> Result<()> {
    // Every test binary runs, whatever failed before it.
    let mut cargo = paths::cargo(["test", "--no-fail-fast"])?;
    cargo.args(args).stdout(Stdio::piped());
    println!("test: {}", cmd::describe(&cargo));
    let status = tee_and_count(&mut cargo, counts)?;
    cmd::check(&cargo, status)
}

fn tee_and_count(cargo: &mut Command, counts: &mut Counts) -> Result<std::process::ExitStatus> {
    let mut child = cargo
        .spawn()
        .with_context(|| format!("could not start `{}`", cmd::describe(cargo)))?;
    let mut stdout = child
        .stdout
        .take()
        .context("cargo test's stdout was not piped")?;
    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    let mut out = std::io::stdout();
    loop {
        let n = stdout
            .read(&mut buf)
            .context("reading cargo test's output")?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            counts.add_line(&String::from_utf8_lossy(&line));
        }
    }
    child.wait().context("waiting for cargo test")
}

impl Counts {
    /// Adds `test result: ok. 5 passed; 0 failed; 1 ignored; …` to the sums,
    /// and records failed tests and their output.
    fn add_line(&mut self, line: &str) {
        let trimmed = line.trim_end();
        if let Some(name) = trimmed
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            self.reports.push(vec![format!("---- {name} ----")]);
            self.in_report = true;
            return;
        }
        if trimmed == "failures:" || trimmed.starts_with("test result:") {
            self.in_report = false;
        }
        if self.in_report
            && let Some(report) = self.reports.last_mut()
        {
            if report.len() > REPORT_LINES {
                report.remove(1);
            }
            report.push(trimmed.to_string());
            return;
        }
        if let Some(name) = trimmed
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failures.push(name.to_string());
            return;
        }
        let Some(rest) = trimmed.trim_start().strip_prefix("test result:") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }

    fn print_failures(&self) {
        if self.failures.is_empty() && self.reports.is_empty() {
            return;
        }
        println!("failed tests (their output, last {REPORT_LINES} lines each):");
        for report in &self.reports {
            for line in report {
                println!("  {line}");
            }
        }
        for name in &self.failures {
            println!("FAILED: {name}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_test_result_lines() {
        let mut counts = Counts::default();
        counts.add_line("test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n");
        counts.add_line(
            "test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out\n",
        );
        counts.add_line("test foo ... ok\n");
        assert_eq!((counts.passed, counts.failed, counts.ignored), (7, 3, 1));
        assert!(counts.failures.is_empty());
    }

    #[test]
    fn keeps_failed_tests_and_the_end_of_their_output() {
        let mut counts = Counts::default();
        for line in [
            "test a::passes ... ok",
            "test a::breaks ... FAILED",
            "",
            "failures:",
            "",
            "---- a::breaks stdout ----",
        ] {
            counts.add_line(line);
        }
        for i in 0..100 {
            counts.add_line(&format!("line {i}"));
        }
        for line in [
            "thread 'a::breaks' panicked at src/a.rs:1:1:",
            "",
            "failures:",
            "    a::breaks",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored",
        ] {
            counts.add_line(line);
        }
        assert_eq!(counts.failures, ["a::breaks"]);
        assert_eq!(counts.reports.len(), 1);
        let report = &counts.reports[0];
        assert_eq!(report[0], "---- a::breaks ----");
        assert_eq!(report.len(), REPORT_LINES + 1);
        assert!(report.iter().any(|l| l.contains("panicked at")));
        assert!(!report.iter().any(|l| l == "line 0"));
        assert_eq!((counts.passed, counts.failed), (1, 1));
    }
}
