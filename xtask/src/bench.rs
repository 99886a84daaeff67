//! `cargo xtask bench kernel|proxy|security|monitoring|sagas|cluster`.

mod cluster;
mod monitoring;
mod proxy;
mod runs;
mod sagas;
mod security;

use anyhow::Result;

use crate::setup::ensure_setup;
use crate::{cmd, paths};

/// Runs the kernel fast-path benchmark (`BPF_PROG_TEST_RUN` based) of the
/// tests crate, passing `args` through.
pub fn kernel(args: &[String]) -> Result<()> {
    ensure_setup()?;
    let mut cargo = paths::cargo(["run", "--release", "-p", "fraiseql-edge-tests"])?;
    cargo.args(["--bin", "bench-kernel", "--"]).args(args);
    println!("bench: {}", cmd::describe(&cargo));
    cmd::run(&mut cargo)
}

/// Runs the proxy load benchmark: the same subgraph direct, through
/// fraiseql-edge and through HAProxy, under `wrk` (see [`proxy`]).
pub fn proxy(args: &[String]) -> Result<()> {
    proxy::run(args)
}

/// Runs the monitoring-overhead load benchmark: the edge with metrics
/// scraped and spans exported against the same edge without (see
/// [`monitoring`]).
pub fn monitoring(args: &[String]) -> Result<()> {
    monitoring::run(args)
}

/// Runs the security load benchmark: the edge's full pipeline (JWT, rate
/// limit, validation) against the plain edge and HAProxy with `jwt_verify`
/// (see [`security`]).
pub fn security(args: &[String]) -> Result<()> {
    security::run(args)
}

/// Runs the saga benchmark: two mutations as a saga (SQLite and, with
/// `--postgres`, PostgreSQL logs) against the same two bare (see [`sagas`]).
pub fn sagas(args: &[String]) -> Result<()> {
    sagas::run(args)
}

/// Runs the cluster-mode benchmark: one local against one global limit
/// check, the edge under load without `[cluster]`, with it and with global
/// limits, and over-admission across two nodes (see [`cluster`]).
pub fn cluster(args: &[String]) -> Result<()> {
    cluster::run(args)
}

/// A benchmark's arguments after `cargo xtask bench <name>`; `None` when
/// clap printed help or the version (nothing to run).
fn parse_args<A: clap::Parser>(name: &str, raw: &[String]) -> Result<Option<A>> {
    match A::try_parse_from(std::iter::once(name.to_owned()).chain(raw.iter().cloned())) {
        Ok(args) => Ok(Some(args)),
        Err(e) if !e.use_stderr() => {
            print!("{e}");
            Ok(None)
        }
        // clap's text starts with its own "error: "; ours adds one.
        Err(e) => anyhow::bail!("{}", e.to_string().trim_start_matches("error: ")),
    }
}
