//! `cargo xtask bench proxy`: what the user-space proxy costs, measured side
//! by side in one run and reported as ratios.
//!
//! Each kind of upstream on loopback — `demo-subgraph`, and nginx answering
//! with a fixed response so the proxy is the bottleneck — is loaded by `wrk`
//! three ways: directly, through fraiseql-edge (`kernel.enabled = false`) and
//! through HAProxy set up as the equivalent reverse proxy. The upstreams take
//! turns, one block each, with only that upstream and its two proxies
//! running. Same generator, query, duration and connection counts for all
//! three targets; they take turns within each concurrency level and each
//! repetition starts with a different one, so slow drift of a shared machine
//! spreads over all of them. Every measured run is preceded by a warm-up run
//! on the same target; both must be free of error responses and socket
//! errors, and the upstream must have served at least as many requests as
//! wrk counted, or the benchmark fails.

pub(super) mod http;
pub(super) mod nginx;
pub(super) mod procs;
pub(super) mod report;
pub(super) mod subgraph;
pub(super) mod targets;
pub(super) mod upstream;
pub(super) mod wrk;

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
use upstream::{Served, Upstream};

/// How long the defaults take; a unit test keeps it equal to [`estimate`].
const DEFAULT_TIME: &str = "With the defaults: 2 upstreams x 3 levels x 3 targets x 3 repetitions \
    = 54 runs of 8 s, each after a 2 s warm-up: about 10 minutes, plus the build.";

#[derive(Parser)]
#[command(
    name = "cargo xtask bench proxy",
    about = "Load each upstream directly, through fraiseql-edge and through HAProxy; print medians and ratios",
    after_help = DEFAULT_TIME
)]
struct Args {
    #[command(flatten)]
    schedule: Schedule,
}

impl std::ops::Deref for Args {
    type Target = Schedule;

    fn deref(&self) -> &Schedule {
        &self.schedule
    }
}

/// The load schedule's options, shared by the load benchmarks.
#[derive(clap::Args)]
pub(super) struct Schedule {
    /// Upstream kinds, measured one after the other (comma-separated):
    /// `demo` is demo-subgraph, `fixed` is nginx with a fixed response.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Upstream::ALL)]
    pub upstreams: Vec<Upstream>,
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 8)]
    pub duration: u64,
    /// Seconds of the warm-up run before each measured run (discarded).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Concurrent connections, one level per value (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [8, 64, 256])]
    pub connections: Vec<u32>,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Repetitions of the whole schedule; the tables show medians.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Use the existing release binaries instead of building them first.
    #[arg(long)]
    pub no_build: bool,
}

impl Schedule {
    /// Measured runs (each with its warm-up) of the whole schedule, with
    /// `targets` targets per level.
    pub fn run_count(&self, targets: usize) -> usize {
        self.upstreams.len() * self.repeats * self.connections.len() * targets
    }

    /// How long the schedule takes: load, warm-up and the pauses between
    /// runs, plus `start` to start each upstream and its proxies.
    pub fn estimate(&self, targets: usize, start: Duration) -> Duration {
        let pauses = if self.warmup > 0 { 2 } else { 1 };
        let per_run = Duration::from_secs(self.warmup + self.duration) + SETTLE * pauses;
        let runs = u32::try_from(self.run_count(targets)).unwrap_or(u32::MAX);
        let upstreams = u32::try_from(self.upstreams.len()).unwrap_or(u32::MAX);
        per_run.saturating_mul(runs) + start.saturating_mul(upstreams)
    }

    /// Refuses options that cannot make a schedule.
    pub fn check(&self) -> Result<()> {
        if self.duration == 0 || self.repeats == 0 || self.threads == 0 {
            bail!("--duration, --repeats and --threads must be at least 1");
        }
        if self.connections.is_empty() || self.upstreams.is_empty() {
            bail!("--connections and --upstreams need at least one value");
        }
        let list = &self.upstreams;
        if (1..list.len()).any(|i| list[..i].contains(&list[i])) {
            bail!("--upstreams names an upstream twice");
        }
        if let Some(c) = self.connections.iter().find(|&&c| c < self.threads) {
            bail!(
                "--connections {c} is below --threads {} (wrk needs a connection per thread)",
                self.threads
            );
        }
        Ok(())
    }
}

/// Pause between runs, for connections of the previous one to close.
pub(super) const SETTLE: Duration = Duration::from_millis(500);

pub fn run(raw: &[String]) -> Result<()> {
    let Some(args) = super::parse_args::<Args>("cargo xtask bench proxy", raw)? else {
        return Ok(());
    };
    check_args(&args)?;
    ensure_setup()?;
    let mut tools = vec!["wrk", "haproxy"];
    if args.upstreams.contains(&Upstream::Fixed) {
        tools.push("nginx");
    }
    for tool in tools {
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
    let runs = run_count(&args);
    let secs = estimate(&args).as_secs();
    println!(
        "bench: {runs} runs of {}s (+{}s warm-up each): about {}m{:02}s",
        args.duration,
        args.warmup,
        secs / 60,
        secs % 60
    );
    let started = Instant::now();
    let mut cells = Vec::new();
    for &upstream in &args.upstreams {
        println!("bench: upstream {}", upstream.label());
        let (direct, served) = upstream.start(&release, &dir)?;
        let edge =
            targets::start_edge(&release.join("fraiseql-edge"), &dir, upstream, direct.addr)?;
        let haproxy = targets::start_haproxy(&dir, upstream, direct.addr)?;
        let mut all = [direct, edge, haproxy];
        let measured = measure(&args, upstream, &mut all, served, &script, started);
        // Stopped in reverse: HAProxy, the edge, then the upstream.
        let [direct, edge, haproxy] = all;
        drop(haproxy);
        drop(edge);
        drop(direct);
        cells.extend(measured?);
    }
    let elapsed = started.elapsed().as_secs();
    println!("bench: done in {}m{:02}s", elapsed / 60, elapsed % 60);

    let table = report::render(&cells, &args.upstreams, &args.connections);
    let text = format!(
        "{machine}\n\nwrk -t{} -c<connections> -d{}s (after a {}s warm-up), {} repetitions interleaved; medians.\n\n{table}",
        args.threads, args.duration, args.warmup, args.repeats
    );
    let out = dir.join("results.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("\n{text}\n(also in {})", out.display());
    Ok(())
}

/// Measured runs (each with its warm-up) of the whole schedule.
fn run_count(args: &Args) -> usize {
    args.run_count(Kind::ALL.len())
}

/// How long the schedule takes, with a few seconds to start each upstream
/// and its proxies.
fn estimate(args: &Args) -> Duration {
    args.estimate(Kind::ALL.len(), Duration::from_secs(3))
}

fn check_args(args: &Args) -> Result<()> {
    args.check()
}

/// The schedule of one upstream: repetition → concurrency → every target,
/// the first target rotating with the repetition.
fn measure(
    args: &Args,
    upstream: Upstream,
    targets: &mut [Target; 3],
    served: Served,
    script: &Path,
    started: Instant,
) -> Result<Vec<Cell>> {
    let mut cells: Vec<Cell> = Vec::new();
    for &connections in &args.connections {
        for kind in Kind::ALL {
            cells.push(Cell {
                upstream,
                kind,
                connections,
                samples: Vec::new(),
            });
        }
    }
    for rep in 0..args.repeats {
        for &connections in &args.connections {
            for i in 0..targets.len() {
                let index = (i + rep) % targets.len();
                for t in targets.iter_mut() {
                    t.proc.check_alive()?;
                }
                let target = &targets[index];
                let sample = one_run(args, target, connections, served, script)?;
                println!(
                    "bench: [{:>3}s] {:<5} run {}/{} c={connections:<3} {:<8} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
                    started.elapsed().as_secs(),
                    upstream.short(),
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
    served: Served,
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
    let before = served.read()?;
    let sample = wrk::run(script, &load)?;
    let after = served.read()?;
    check_clean(target, connections, "run", &sample)?;
    let count = after.saturating_sub(before);
    if count < sample.requests {
        bail!(
            "{} at {connections} connections: wrk counted {} responses but the upstream served only {count} requests",
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

/// CPUs, CPU model, kernel, and the versions of wrk, HAProxy and nginx.
pub(super) fn machine() -> String {
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
        "machine: {cpus} CPUs ({model}), Linux {}; {}; {}; {}",
        kernel.trim(),
        first_line("wrk", "-v"),
        first_line("haproxy", "-v"),
        first_line("nginx", "-v")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_help_tells_how_long_the_defaults_take() {
        let args = parse(&[]);
        assert_eq!(args.upstreams, Upstream::ALL);
        assert_eq!(args.connections, [8, 64, 256]);
        let runs = run_count(&args);
        let minutes = (estimate(&args).as_secs() + 30) / 60;
        let told = format!(
            "{} upstreams x {} levels x 3 targets x {} repetitions = {runs} runs of {} s, \
             each after a {} s warm-up: about {minutes} minutes",
            args.upstreams.len(),
            args.connections.len(),
            args.repeats,
            args.duration,
            args.warmup
        );
        assert!(DEFAULT_TIME.contains(&told), "{DEFAULT_TIME:?} vs {told:?}");
    }

    #[test]
    fn upstreams_are_named_on_the_command_line() {
        let args = parse(&["--upstreams", "fixed", "--connections", "64"]);
        assert_eq!(args.upstreams, [Upstream::Fixed]);
        assert!(check_args(&args).is_ok());
        assert!(check_args(&parse(&["--upstreams", "demo,demo"])).is_err());
    }
}
