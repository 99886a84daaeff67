//! The measuring loop the comparison benchmarks share: each target in turn
//! under `wrk`, the first rotating with the repetition, every run after a
//! warm-up and checked (no error response, no socket error, the upstream
//! served at least what wrk counted); medians per cell.

use std::path::Path;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::proxy::report::median;
use super::proxy::targets::Target;
use super::proxy::upstream::{Served, Upstream};
use super::proxy::{SETTLE, Schedule, wrk};

/// What a target is in a benchmark's comparison.
pub trait Role: Copy + PartialEq {
    /// For tables.
    fn label(self) -> &'static str;
    /// For progress lines and file names.
    fn short(self) -> &'static str;
}

/// A target with its role.
pub struct Contender<R> {
    pub role: R,
    pub target: Target,
}

/// The samples of one target in front of one upstream at one concurrency.
pub struct Cell<R> {
    pub upstream: Upstream,
    pub role: R,
    pub connections: u32,
    pub samples: Vec<wrk::Sample>,
}

/// Medians of a cell, each metric on its own, and the req/s range.
#[derive(Clone, Copy, Debug)]
pub struct Median {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub rps_min: f64,
    pub rps_max: f64,
}

impl<R> Cell<R> {
    pub fn median(&self) -> Median {
        let of = |f: fn(&wrk::Sample) -> f64| median(self.samples.iter().map(f).collect());
        let rps: Vec<f64> = self.samples.iter().map(|s| s.rps).collect();
        Median {
            rps: of(|s| s.rps),
            p50_ms: of(|s| s.p50_ms),
            p99_ms: of(|s| s.p99_ms),
            p999_ms: of(|s| s.p999_ms),
            rps_min: rps.iter().copied().fold(f64::INFINITY, f64::min),
            rps_max: rps.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// The median of the cell of `role` in front of `upstream` at `c` connections.
pub fn find<R: Role>(cells: &[Cell<R>], upstream: Upstream, role: R, c: u32) -> Option<Median> {
    cells
        .iter()
        .find(|cell| cell.upstream == upstream && cell.role == role && cell.connections == c)
        .map(Cell::median)
}

/// Repetition → concurrency → every target, the first rotating with the
/// repetition.
pub fn measure<R: Role>(
    schedule: &Schedule,
    upstream: Upstream,
    all: &mut [Contender<R>],
    served: Served,
    script: &Path,
    started: Instant,
) -> Result<Vec<Cell<R>>> {
    let mut cells: Vec<Cell<R>> = Vec::new();
    for &connections in &schedule.connections {
        for c in all.iter() {
            cells.push(Cell {
                upstream,
                role: c.role,
                connections,
                samples: Vec::new(),
            });
        }
    }
    for rep in 0..schedule.repeats {
        for &connections in &schedule.connections {
            for i in 0..all.len() {
                let index = (i + rep) % all.len();
                for c in all.iter_mut() {
                    c.target.proc.check_alive()?;
                }
                let c = &all[index];
                let sample = one_run(schedule, c, connections, served, script)?;
                println!(
                    "bench: [{:>4}s] {:<5} run {}/{} c={connections:<3} {:<12} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
                    started.elapsed().as_secs(),
                    upstream.short(),
                    rep + 1,
                    schedule.repeats,
                    c.role.short(),
                    sample.rps,
                    sample.p50_ms,
                    sample.p99_ms,
                    sample.p999_ms
                );
                cells
                    .iter_mut()
                    .find(|cell| cell.role == c.role && cell.connections == connections)
                    .context("no cell for a run")?
                    .samples
                    .push(sample);
            }
        }
    }
    Ok(cells)
}

/// A warm-up run then the measured run, both checked.
fn one_run<R: Role>(
    schedule: &Schedule,
    c: &Contender<R>,
    connections: u32,
    served: Served,
    script: &Path,
) -> Result<wrk::Sample> {
    let url = c.target.url();
    let mut load = wrk::Load {
        url: &url,
        threads: schedule.threads,
        connections,
        seconds: schedule.warmup,
    };
    if schedule.warmup > 0 {
        let warm = wrk::run(script, &load)?;
        check_clean(c, connections, "warm-up", &warm)?;
        thread::sleep(SETTLE);
    }
    load.seconds = schedule.duration;
    let before = served.read()?;
    let sample = wrk::run(script, &load)?;
    let after = served.read()?;
    check_clean(c, connections, "run", &sample)?;
    let count = after.saturating_sub(before);
    if count < sample.requests {
        bail!(
            "{} at {connections} connections: wrk counted {} responses but the upstream served only {count} requests",
            c.role.label(),
            sample.requests
        );
    }
    thread::sleep(SETTLE);
    Ok(sample)
}

/// Fails loudly on any error response or socket error.
fn check_clean<R: Role>(
    c: &Contender<R>,
    connections: u32,
    what: &str,
    s: &wrk::Sample,
) -> Result<()> {
    if s.requests == 0 || s.non2xx > 0 || s.socket_errors > 0 {
        bail!(
            "{} at {connections} connections ({what}): {} responses, {} of them with status >= 400, \
             {} socket errors/timeouts; every response must be a 200\n{}",
            c.role.label(),
            s.requests,
            s.non2xx,
            s.socket_errors,
            c.target.proc.tail()
        );
    }
    Ok(())
}

/// The medians table: one row per upstream, concurrency and role.
pub fn medians_table<R: Role>(
    cells: &[Cell<R>],
    roles: &[R],
    upstreams: &[Upstream],
    connections: &[u32],
) -> String {
    use std::fmt::Write as _;
    let runs = cells.first().map_or(0, |c| c.samples.len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| upstream | target | connections | req/s (median of {runs}) | req/s range | p50 ms | p99 ms | p99.9 ms |"
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for &u in upstreams {
        for &c in connections {
            for &role in roles {
                let Some(m) = find(cells, u, role, c) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {c} | {:.0} | {:.0}–{:.0} | {:.2} | {:.2} | {:.2} |",
                    u.label(),
                    role.label(),
                    m.rps,
                    m.rps_min,
                    m.rps_max,
                    m.p50_ms,
                    m.p99_ms,
                    m.p999_ms
                );
            }
        }
    }
    out
}
