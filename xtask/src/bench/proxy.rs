//! `cargo xtask bench proxy`: what the user-space proxy costs, measured side
//! by side in one run and reported as ratios.
//!
//! One `demo-subgraph` on loopback is loaded by `wrk` three ways: directly,
//! through fraiseql-edge (`kernel.enabled = false`) and through HAProxy set up
//! as the equivalent reverse proxy. Same generator, query, duration and
//! connection counts for all three; the targets take turns within each
//! concurrency level and each repetition starts with a different one, so slow
//! drift of a shared machine spreads over all of them. Every measured run is
//! preceded by a warm-up run on the same target; both must be free of error
//! responses and socket errors, and the subgraph must have served at least as
//! many queries as wrk counted, or the benchmark fails.

mod http;
mod procs;
mod report;
mod targets;
mod wrk;

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::setup::ensure_setup;
use crate::{compile, paths};
use report::Cell;
use targets::{Kind, Target};

#[derive(Parser)]
#[command(
    name = "cargo xtask bench proxy",
    about = "Load the same subgraph directly, through fraiseql-edge and through HAProxy; print medians and ratios"
)]
struct Args {
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of the warm-up run before each measured run (discarded).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrent connections, one level per value (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [8, 64])]
    connections: Vec<u32>,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Repetitions of the whole schedule; the tables show medians.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Use the existing release binaries instead of building them first.
    #[arg(long)]
    no_build: bool,
}

/// Pause between runs, for connections of the previous one to close.
const SETTLE: Duration = Duration::from_millis(500);

pub fn run(raw: &[String]) -> Result<()> {
    let args = match Args::try_parse_from(
        std::iter::once("cargo xtask bench proxy".to_owned()).chain(raw.iter().cloned()),
    ) {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            print!("{e}");
            return Ok(());
        }
        Err(e) => bail!("{e}"),
    };
    check_args(&args)?;
    ensure_setup()?;
    for tool in ["wrk", "haproxy"] {
        if which::which(tool).is_err() {
            bail!(
                "`{tool}` is not installed: run `cargo xtask setup` as root (or apt-get install {tool})"
            );
        }
    }
    if !args.no_build {
        compile::build_release(&["-p", "fraiseql-edge", "-p", "demo-subgraph"])?;
    }
    procs::watch_signals()?;
    let release = paths::target_dir().join("release");
    let dir = paths::target_dir().join("bench-proxy");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("query.lua");
    std::fs::write(&script, wrk::script())
        .with_context(|| format!("writing {}", script.display()))?;

    let machine = machine();
    println!("bench: {machine}");
    // Dropped in reverse: HAProxy, the edge, then the subgraph.
    let subgraph = targets::start_subgraph(&release.join("demo-subgraph"))?;
    let edge = targets::start_edge(&release.join("fraiseql-edge"), &dir, subgraph.target.addr)?;
    let haproxy = targets::start_haproxy(&dir, subgraph.target.addr)?;

    let runs = args.repeats * args.connections.len() * Kind::ALL.len();
    let secs = runs as u64 * (args.warmup + args.duration);
    println!(
        "bench: {runs} runs of {}s (+{}s warm-up each): about {}m{:02}s of load",
        args.duration,
        args.warmup,
        secs / 60,
        secs % 60
    );
    let mut all = [subgraph.target, edge, haproxy];
    let cells = measure(&args, &mut all, subgraph.admin, &script)?;

    let table = report::render(&cells, &args.connections);
    let text = format!(
        "{machine}\n\nwrk -t{} -c<connections> -d{}s (after a {}s warm-up), {} repetitions interleaved; medians.\n\n{table}",
        args.threads, args.duration, args.warmup, args.repeats
    );
    let out = dir.join("results.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("\n{text}\n(also in {})", out.display());
    Ok(())
}

fn check_args(args: &Args) -> Result<()> {
    if args.duration == 0 || args.repeats == 0 || args.threads == 0 {
        bail!("--duration, --repeats and --threads must be at least 1");
    }
    if args.connections.is_empty() {
        bail!("--connections needs at least one value");
    }
    if let Some(c) = args.connections.iter().find(|&&c| c < args.threads) {
        bail!(
            "--connections {c} is below --threads {} (wrk needs a connection per thread)",
            args.threads
        );
    }
    Ok(())
}

/// The schedule: repetition → concurrency → every target, the first target
/// rotating with the repetition.
fn measure(
    args: &Args,
    targets: &mut [Target; 3],
    admin: std::net::SocketAddr,
    script: &Path,
) -> Result<Vec<Cell>> {
    let mut cells: Vec<Cell> = Vec::new();
    for &connections in &args.connections {
        for kind in Kind::ALL {
            cells.push(Cell {
                kind,
                connections,
                samples: Vec::new(),
            });
        }
    }
    let started = Instant::now();
    for rep in 0..args.repeats {
        for &connections in &args.connections {
            for i in 0..targets.len() {
                let index = (i + rep) % targets.len();
                for t in targets.iter_mut() {
                    t.proc.check_alive()?;
                }
                let target = &targets[index];
                let sample = one_run(args, target, connections, admin, script)?;
                println!(
                    "bench: [{:>3}s] run {}/{} c={connections:<3} {:<8} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
                    started.elapsed().as_secs(),
                    rep + 1,
                    args.repeats,
                    target.kind.short(),
                    sample.rps,
                    sample.p50_ms,
                    sample.p99_ms,
                    sample.p999_ms
                );
                let cell = cells
                    .iter_mut()
                    .find(|c| c.kind == target.kind && c.connections == connections)
                    .context("no cell for a run")?;
                cell.samples.push(sample);
            }
        }
    }
    Ok(cells)
}

/// A warm-up run then the measured run, both checked.
fn one_run(
    args: &Args,
    target: &Target,
    connections: u32,
    admin: std::net::SocketAddr,
    script: &Path,
) -> Result<wrk::Sample> {
    let url = target.url();
    let mut load = wrk::Load {
        url: &url,
        threads: args.threads,
        connections,
        seconds: args.warmup,
    };
    if args.warmup > 0 {
        let warm = wrk::run(script, &load)?;
        check_clean(target, connections, "warm-up", &warm)?;
        thread::sleep(SETTLE);
    }
    load.seconds = args.duration;
    let before = targets::served(admin)?;
    let sample = wrk::run(script, &load)?;
    let after = targets::served(admin)?;
    check_clean(target, connections, "run", &sample)?;
    let served = after - before;
    if served < sample.requests {
        bail!(
            "{} at {connections} connections: wrk counted {} responses but the subgraph served only {served} queries",
            target.kind.label(),
            sample.requests
        );
    }
    thread::sleep(SETTLE);
    Ok(sample)
}

/// Fails loudly on any error response or socket error.
fn check_clean(target: &Target, connections: u32, what: &str, s: &wrk::Sample) -> Result<()> {
    if s.requests == 0 || s.non2xx > 0 || s.socket_errors > 0 {
        bail!(
            "{} at {connections} connections ({what}): {} responses, {} of them with status >= 400, \
             {} socket errors/timeouts; every response must be a 200\n{}",
            target.kind.label(),
            s.requests,
            s.non2xx,
            s.socket_errors,
            target.proc.tail()
        );
    }
    Ok(())
}

/// CPUs, CPU model, kernel, and the versions of wrk and HAProxy.
fn machine() -> String {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let first_line = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&o.stderr));
                text.lines().next().unwrap_or("").trim().to_owned()
            })
            .unwrap_or_default()
    };
    format!(
        "machine: {cpus} CPUs ({model}), Linux {}; {}; {}",
        kernel.trim(),
        first_line("wrk", "-v"),
        first_line("haproxy", "-v")
    )
}
