//! `cargo xtask bench cluster`: what cluster mode (per-identity limits
//! shared through Redis) costs, and what it buys, measured side by side in
//! one run and reported as ratios. Three parts:
//!
//! 1. **micro**: one limit check, the node's own limiter against
//!    `GlobalLimiter::check` on a real `redis-server` on loopback, with 1,
//!    16 and 64 checks in flight (criterion, `benches/cluster.rs`).
//! 2. **load**: the full pipeline under `wrk`, the measuring loop of the
//!    other load benchmarks, in front of each upstream: three edges that
//!    differ only in cluster mode — no `[cluster]`; `[cluster]` with the
//!    limit local (`global = false`: Redis is never asked); and
//!    `global = true` (every request asks Redis after the local check). The
//!    per-identity limit is on in all three and never refuses (wrk is one
//!    client).
//! 3. **admission**: two edges sharing the Redis, one identity sending to
//!    both as fast as it can for `t` seconds with a small limit; admitted
//!    requests against `burst + rate·t`, the limit global and local.
//!
//! Redis is this benchmark's own `redis-server`: loopback, no persistence.

mod admission;
mod configs;
mod counters;
mod micro;
mod redis;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use super::proxy::procs;
use super::proxy::targets::{self, free_port};
use super::proxy::upstream::Upstream;
use super::proxy::{Schedule, wrk};
use super::runs::{self, Contender, find, measure, medians_table};
use crate::setup::ensure_setup;
use crate::{compile, paths};
use configs::Mode;
use counters::Counters;

const DEFAULT_TIME: &str = "With the defaults: 2 upstreams x 3 levels x 3 targets x 3 repetitions \
    = 54 runs of 8 s, each after a 2 s warm-up: about 10 minutes; then 2 x 3 over-admission runs \
    of 10 s; plus the criterion bench (about 1 minute) and the builds.";

#[derive(Parser)]
#[command(
    name = "cargo xtask bench cluster",
    about = "Cluster mode: one local vs global limit check (criterion), the edge under load without [cluster], with it and with global limits, and over-admission across two nodes; print medians and ratios",
    after_help = DEFAULT_TIME
)]
struct Args {
    /// Parts to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Part::ALL)]
    parts: Vec<Part>,
    #[command(flatten)]
    schedule: Schedule,
    /// Over-admission: seconds of load per run (`t`).
    #[arg(long, default_value_t = 10)]
    admission_seconds: u64,
    /// Over-admission: runs per mode (global, local).
    #[arg(long, default_value_t = 3)]
    admission_repeats: u32,
    /// Over-admission: `requests_per_minute` of the limit.
    #[arg(long, default_value_t = 600)]
    admission_rpm: u32,
    /// Over-admission: `burst` of the limit.
    #[arg(long, default_value_t = 20)]
    admission_burst: u32,
    /// Over-admission: wrk connections to each node.
    #[arg(long, default_value_t = 8)]
    admission_connections: u32,
}

/// A part of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Micro,
    Load,
    Admission,
}

impl Part {
    const ALL: [Part; 3] = [Part::Micro, Part::Load, Part::Admission];
}

/// What a load run loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Role(Mode);

impl Role {
    const ALL: [Role; 3] = [Role(Mode::Off), Role(Mode::Local), Role(Mode::Global)];
}

impl runs::Role for Role {
    fn label(self) -> &'static str {
        match self.0 {
            Mode::Off => "edge, cluster mode off",
            Mode::Local => "edge, [cluster], limit local",
            Mode::Global => "edge, [cluster], limit global",
        }
    }

    fn short(self) -> &'static str {
        match self.0 {
            Mode::Off => "off",
            Mode::Local => "cluster-local",
            Mode::Global => "cluster-global",
        }
    }
}

pub fn run(raw: &[String]) -> Result<()> {
    let Some(args) = super::parse_args::<Args>("cargo xtask bench cluster", raw)? else {
        return Ok(());
    };
    let schedule = &args.schedule;
    schedule.check()?;
    if args.parts.is_empty() {
        bail!("--parts: name at least one of micro, load, admission");
    }
    if args.admission_seconds == 0 || args.admission_repeats == 0 || args.admission_rpm == 0 {
        bail!("--admission-seconds, --admission-repeats and --admission-rpm must be at least 1");
    }
    if args.admission_burst == 0 || args.admission_connections == 0 {
        bail!("--admission-burst and --admission-connections must be at least 1");
    }
    ensure_setup()?;
    let load = args.parts.contains(&Part::Load);
    let admission = args.parts.contains(&Part::Admission);
    let mut tools = vec!["redis-server"];
    if load || admission {
        tools.push("wrk");
    }
    if load && schedule.upstreams.contains(&Upstream::Fixed) {
        tools.push("nginx");
    }
    for tool in tools {
        if which::which(tool).is_err() {
            bail!(
                "`{tool}` is not installed: run `cargo xtask setup` as root (or apt-get install {tool})"
            );
        }
    }
    if (load || admission) && !schedule.no_build {
        compile::build_release(&[
            "-p",
            "fraiseql-edge",
            "-p",
            "demo-subgraph",
            "--bin",
            "fraiseql-edge",
            "--bin",
            "demo-subgraph",
        ])?;
    }
    let machine = super::proxy::machine();
    println!("bench: {machine}");
    let mut sections = vec![machine];
    if args.parts.contains(&Part::Micro) {
        let table = micro::run()?;
        sections.push(format!(
            "One limit check (criterion, --warm-up-time 1 --measurement-time 3; medians):\n\n{table}"
        ));
    }
    procs::watch_signals()?;
    let release = paths::target_dir().join("release");
    let dir = paths::target_dir().join("bench-cluster");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if load || admission {
        let mut redis = redis::Redis::start(&dir)?;
        let started = Instant::now();
        if load {
            sections.push(load_part(schedule, &release, &dir, &mut redis, started)?);
        }
        if admission {
            let s = admission::Settings {
                seconds: args.admission_seconds,
                repeats: args.admission_repeats,
                rpm: args.admission_rpm,
                burst: args.admission_burst,
                connections: args.admission_connections,
            };
            let runs = admission::run(&release, &dir, &mut redis, &s)?;
            sections.push(format!(
                "Over-admission: two nodes sharing the Redis, one identity (127.0.0.1) sending to both at once \
                 (wrk -t1 -c{} -d{}s to each), requests_per_minute = {}, burst = {}, escalation off; \
                 each run with two fresh nodes and an empty Redis:\n\n{}",
                s.connections,
                s.seconds,
                s.rpm,
                s.burst,
                admission::render(&runs, &s)
            ));
        }
        let elapsed = started.elapsed().as_secs();
        println!("bench: done in {}m{:02}s", elapsed / 60, elapsed % 60);
    }
    let text = sections.join("\n\n");
    let out = dir.join("results.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("\n{text}\n(also in {})", out.display());
    Ok(())
}

/// Part 2: the three edges in front of each upstream, under wrk.
fn load_part(
    schedule: &Schedule,
    release: &Path,
    dir: &Path,
    redis: &mut redis::Redis,
    started: Instant,
) -> Result<String> {
    let script = dir.join("query.lua");
    std::fs::write(&script, wrk::script())
        .with_context(|| format!("writing {}", script.display()))?;
    let runs = schedule.run_count(Role::ALL.len());
    let secs = schedule
        .estimate(Role::ALL.len(), Duration::from_secs(5))
        .as_secs();
    println!(
        "bench: {runs} load runs of {}s (+{}s warm-up each): about {}m{:02}s",
        schedule.duration,
        schedule.warmup,
        secs / 60,
        secs % 60
    );
    let mut cells = Vec::new();
    let mut checks = Vec::new();
    for &upstream in &schedule.upstreams {
        println!("bench: upstream {}", upstream.label());
        redis.flush()?;
        let (direct, served) = upstream.start(release, dir)?;
        let mut all = Vec::new();
        let mut admins = Vec::new();
        for role in Role::ALL {
            let (addr, admin) = (free_port()?, free_port()?);
            let text = configs::load_edge(role.0, addr, admin, direct.addr, redis.addr)?;
            let path = dir.join(format!(
                "edge-{}-{}.toml",
                runs::Role::short(role),
                upstream.short()
            ));
            let target = targets::launch_edge(
                &release.join("fraiseql-edge"),
                &path,
                &text,
                addr,
                upstream.answer(),
                &[],
            )?;
            println!(
                "bench: {} ready on {}",
                runs::Role::label(role),
                target.url()
            );
            admins.push((role, admin, Counters::read(admin)?));
            all.push(Contender { role, target });
        }
        let measured = measure(schedule, upstream, &mut all, served, &script, started);
        let seen: Result<Vec<String>> = admins
            .iter()
            .map(|&(role, admin, before)| check_counters(upstream, role, admin, before))
            .collect();
        drop(all);
        drop(direct);
        cells.extend(measured?);
        checks.extend(seen?);
        redis.check_alive()?;
    }
    Ok(format!(
        "{}\n\nwrk -t{} -c<connections> -d{}s (after a {}s warm-up), {} repetitions interleaved; medians; \
         the per-identity limit ({} requests per minute, burst {}) checked on every request and never refusing.\n\n{}",
        checks.join("\n"),
        schedule.threads,
        schedule.duration,
        schedule.warmup,
        schedule.repeats,
        configs::LOAD_RATE,
        configs::LOAD_BURST,
        render(&cells, &schedule.upstreams, &schedule.connections)
    ))
}

/// What an edge's counters say about its load runs: the global edge asked
/// Redis for every request and was never refused or cut off from it; the
/// others never asked. Returns one printed line.
fn check_counters(
    upstream: Upstream,
    role: Role,
    admin: SocketAddr,
    before: Counters,
) -> Result<String> {
    let c = Counters::read(admin)?.since(before);
    let line = format!(
        "check: {} / {}: {:.0} global checks allowed, {:.0} limited, {:.0} with Redis unavailable; {:.0} refused locally",
        upstream.label(),
        runs::Role::label(role),
        c.allowed,
        c.limited,
        c.unavailable,
        c.refused_local
    );
    println!("bench: {line}");
    let asked = c.allowed + c.limited + c.unavailable;
    let fine = match role.0 {
        Mode::Global => c.allowed > 0.0 && c.limited == 0.0,
        Mode::Off | Mode::Local => asked == 0.0,
    };
    if !fine || c.refused_local > 0.0 {
        bail!("{line}: not what this edge's configuration should do");
    }
    Ok(line)
}

/// The medians, then each cluster edge against the edge without.
fn render(cells: &[runs::Cell<Role>], upstreams: &[Upstream], connections: &[u32]) -> String {
    use std::fmt::Write as _;
    let mut out = medians_table(cells, &Role::ALL, upstreams, connections);
    out.push_str("\n| upstream | connections | target | req/s / off | p50 / off | p99 / off |\n");
    out.push_str("|---|---:|---|---:|---:|---:|\n");
    for &u in upstreams {
        for &c in connections {
            let Some(off) = find(cells, u, Role(Mode::Off), c) else {
                continue;
            };
            for role in [Role(Mode::Local), Role(Mode::Global)] {
                let Some(m) = find(cells, u, role, c) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| {} | {c} | {} | {:.3} | {:.2} | {:.2} |",
                    u.label(),
                    runs::Role::label(role),
                    m.rps / off.rps,
                    m.p50_ms / off.p50_ms,
                    m.p99_ms / off.p99_ms
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::proxy::wrk::Sample;
    use super::*;

    #[test]
    fn the_help_tells_how_long_the_load_takes() {
        let args = Args::try_parse_from(["bench"]).unwrap();
        let s = &args.schedule;
        let runs = s.run_count(Role::ALL.len());
        let minutes = (s
            .estimate(Role::ALL.len(), Duration::from_secs(5))
            .as_secs()
            + 30)
            / 60;
        let told = format!(
            "{} upstreams x {} levels x {} targets x {} repetitions = {runs} runs of {} s, \
             each after a {} s warm-up: about {minutes} minutes; then 2 x {} over-admission runs \
             of {} s",
            s.upstreams.len(),
            s.connections.len(),
            Role::ALL.len(),
            s.repeats,
            s.duration,
            s.warmup,
            args.admission_repeats,
            args.admission_seconds
        );
        assert!(DEFAULT_TIME.contains(&told), "{DEFAULT_TIME:?} vs {told:?}");
        assert_eq!(args.parts, Part::ALL);
    }

    #[test]
    fn ratios_are_to_the_edge_without_cluster_mode() {
        let sample = |rps: f64, p99_ms: f64| Sample {
            requests: 1,
            rps,
            p50_ms: 1.0,
            p99_ms,
            p999_ms: 4.0,
            non2xx: 0,
            socket_errors: 0,
        };
        let cell = |mode, rps, p99| runs::Cell {
            upstream: Upstream::Demo,
            role: Role(mode),
            connections: 8,
            samples: vec![sample(rps, p99)],
        };
        let cells = [
            cell(Mode::Off, 1000.0, 2.0),
            cell(Mode::Local, 990.0, 2.0),
            cell(Mode::Global, 500.0, 5.0),
        ];
        let table = render(&cells, &[Upstream::Demo], &[8]);
        assert!(
            table.contains(
                "| demo-subgraph | 8 | edge, [cluster], limit local | 0.990 | 1.00 | 1.00 |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| demo-subgraph | 8 | edge, [cluster], limit global | 0.500 | 1.00 | 2.50 |"
            ),
            "{table}"
        );
    }
}
