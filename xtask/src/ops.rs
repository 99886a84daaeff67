//! The operations package: dashboards/, alerts/, runbooks/ and k8s/,
//! generated from one source where they repeat each other and checked
//! offline (`cargo xtask ops-check`, also run by `cargo xtask test`). The
//! live half of the check — every dashboard query and the main alert
//! expressions against a real Prometheus scraping a real daemon — is the
//! end-to-end test `tests/e2e/ops_live.rs`, which `ops-check` runs too.

mod alerts;
mod dashboards;
mod k8s;
mod runbooks;

use anyhow::{Result, bail};

use crate::setup::Report;
use crate::{cmd, paths};

/// One part of the offline check: its name and the function that runs it.
type Check = (&'static str, fn() -> Result<()>);

/// Installs the tools the checks call (mdbook, kubernetes-validate).
pub fn ensure_tools(report: Report) -> Result<()> {
    runbooks::ensure_tools(report)?;
    k8s::ensure_tools(report)
}

/// `cargo xtask ops-generate`: rewrites every generated file.
pub fn generate() -> Result<()> {
    dashboards::generate()?;
    k8s::generate()?;
    Ok(())
}

/// The offline checks, each run whatever failed before it.
pub fn check_offline() -> Result<()> {
    let checks: [Check; 4] = [
        ("dashboards", dashboards::check),
        ("alerts", alerts::check),
        ("runbooks", runbooks::check),
        ("k8s", k8s::check),
    ];
    let mut failed = Vec::new();
    for (name, check) in checks {
        println!("ops-check: {name}");
        match check() {
            Ok(()) => println!("ops-check: {name}: ok"),
            Err(e) => {
                eprintln!("ops-check: {name}: FAILED: {e:#}");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("ops-check failed: {}", failed.join(", "));
    }
    Ok(())
}

/// `cargo xtask ops-check`: the offline checks, then the live one.
pub fn check() -> Result<()> {
    crate::setup::ensure_setup()?;
    let offline = check_offline();
    let live = live();
    offline?;
    live
}

/// The live check: the `ops_live` end-to-end test (needs root: XDP, netns).
fn live() -> Result<()> {
    let mut cargo = paths::cargo([
        "test",
        "-p",
        "fraiseql-edge-tests",
        "--test",
        "e2e",
        "--",
        "ops_live",
        "--nocapture",
    ])?;
    println!("ops-check: live: {}", cmd::describe(&cargo));
    cmd::run(&mut cargo)
}
