//! `cargo xtask bench monitoring`: what observability costs the edge under
//! load — requests/s and latency with metrics scraped and every request
//! traced and exported, against the same edge with neither — measured side
//! by side in one run and reported as ratios.
//!
//! Two edges in front of the same upstream take turns under `wrk`:
//!
//! * **off**: no admin listener (nothing scrapes), no span exporter, text
//!   logs;
//! * **on**: the admin listener scraped once a second by this benchmark,
//!   request and phase spans exported over OTLP/gRPC to a local sink
//!   (`otlp-sink`, which counts what it receives: the run fails if nothing
//!   arrived), JSON logs, the slow-query log at its default threshold — once
//!   with 1 % of the traces sampled (a production setting), once with every
//!   trace (`sample_ratio = 1.0`, the default).
//!
//! The counters and histograms themselves are part of the data path and are
//! recorded in both; their cost per request is in the `tracing` and
//! `data_path` criterion benchmarks. Runs are checked as in the other load
//! benchmarks.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use super::proxy::procs::{self, Proc};
use super::proxy::targets::{self, free_port};
use super::proxy::upstream::Upstream;
use super::proxy::{Schedule, http, wrk};
use super::runs::{self, Contender, find, measure, medians_table};
use crate::setup::ensure_setup;
use crate::{compile, paths};

const DEFAULT_TIME: &str = "With the defaults: 2 upstreams x 3 levels x 3 targets x 3 repetitions \
    = 54 runs of 8 s, each after a 2 s warm-up: about 10 minutes, plus the build.";

/// The goal: monitoring costs under 2 % of throughput.
const GOAL_RPS_RATIO: f64 = 0.98;

#[derive(Parser)]
#[command(
    name = "cargo xtask bench monitoring",
    about = "Load the edge with metrics scraped and every request traced and exported, and without; print medians and ratios",
    after_help = DEFAULT_TIME
)]
struct Args {
    #[command(flatten)]
    schedule: Schedule,
}

/// What a run loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Off,
    /// 1 % of the traces exported.
    OnSampled,
    /// Every trace exported.
    On,
}

impl Role {
    const ALL: [Role; 3] = [Role::Off, Role::OnSampled, Role::On];

    /// `[tracing] sample_ratio` of an edge with monitoring on.
    fn sample_ratio(self) -> Option<f64> {
        match self {
            Role::Off => None,
            Role::OnSampled => Some(0.01),
            Role::On => Some(1.0),
        }
    }
}

impl runs::Role for Role {
    fn label(self) -> &'static str {
        match self {
            Role::Off => "edge, monitoring off",
            Role::OnSampled => "edge, metrics scraped + 1 % of traces exported",
            Role::On => "edge, metrics scraped + every trace exported",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Role::Off => "off",
            Role::OnSampled => "on-1%",
            Role::On => "on-100%",
        }
    }
}

pub fn run(raw: &[String]) -> Result<()> {
    let Some(args) = super::parse_args::<Args>("cargo xtask bench monitoring", raw)? else {
        return Ok(());
    };
    let schedule = &args.schedule;
    schedule.check()?;
    ensure_setup()?;
    let mut tools = vec!["wrk"];
    if schedule.upstreams.contains(&Upstream::Fixed) {
        tools.push("nginx");
    }
    for tool in tools {
        if which::which(tool).is_err() {
            bail!(
                "`{tool}` is not installed: run `cargo xtask setup` as root (or apt-get install {tool})"
            );
        }
    }
    if !schedule.no_build {
        compile::build_release(&[
            "-p",
            "fraiseql-edge",
            "-p",
            "demo-subgraph",
            "-p",
            "fraiseql-edge-tests",
            "--bin",
            "otlp-sink",
            "--bin",
            "fraiseql-edge",
            "--bin",
            "demo-subgraph",
        ])?;
    }
    procs::watch_signals()?;
    let release = paths::target_dir().join("release");
    let dir = paths::target_dir().join("bench-monitoring");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("query.lua");
    std::fs::write(&script, wrk::script())
        .with_context(|| format!("writing {}", script.display()))?;

    let machine = super::proxy::machine();
    println!("bench: {machine}");
    let runs = schedule.run_count(Role::ALL.len());
    let secs = schedule
        .estimate(Role::ALL.len(), Duration::from_secs(5))
        .as_secs();
    println!(
        "bench: {runs} runs of {}s (+{}s warm-up each): about {}m{:02}s",
        schedule.duration,
        schedule.warmup,
        secs / 60,
        secs % 60
    );
    let started = Instant::now();
    let mut cells = Vec::new();
    let mut checks = Vec::new();
    for &upstream in &schedule.upstreams {
        println!("bench: upstream {}", upstream.label());
        let (direct, served) = upstream.start(&release, &dir)?;
        let sink = Sink::start(&release)?;
        let mut all = start_both(&release, &dir, upstream, direct.addr, sink.addr)?;
        let scrapers: Vec<Scraper> = all
            .iter()
            .filter(|e| e.role != Role::Off)
            .map(|e| Scraper::start(e.admin))
            .collect();
        let mut contenders: Vec<Contender<Role>> = all
            .iter_mut()
            .map(|e| Contender {
                role: e.role,
                target: e.target.take().expect("started"),
            })
            .collect();
        let measured = measure(
            schedule,
            upstream,
            &mut contenders,
            served,
            &script,
            started,
        );
        let scrapes: Vec<Scrapes> = scrapers.into_iter().map(Scraper::stop).collect();
        drop(contenders);
        let spans = sink.stop()?;
        drop(direct);
        let measured = measured?;
        for s in &scrapes {
            if s.ok == 0 || s.failed > 0 {
                bail!(
                    "a monitored edge answered {} scrapes and failed {}: every scrape must succeed",
                    s.ok,
                    s.failed
                );
            }
        }
        if spans == 0 {
            bail!("the OTLP sink received no span from the monitored edge");
        }
        checks.push(format!(
            "check: {}: {} scrapes of /metrics answered (one a second per monitored edge), {spans} spans received by the OTLP sink",
            upstream.label(),
            scrapes.iter().map(|s| s.ok).sum::<u64>()
        ));
        cells.extend(measured);
    }
    let elapsed = started.elapsed().as_secs();
    println!("bench: done in {}m{:02}s", elapsed / 60, elapsed % 60);

    let table = render(&cells, &schedule.upstreams, &schedule.connections);
    let text = format!(
        "{machine}\n\n{}\n\nwrk -t{} -c<connections> -d{}s (after a {}s warm-up), {} repetitions interleaved; medians.\n\n{table}",
        checks.join("\n"),
        schedule.threads,
        schedule.duration,
        schedule.warmup,
        schedule.repeats
    );
    let out = dir.join("results.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("\n{text}\n(also in {})", out.display());
    Ok(())
}

/// One edge of the comparison, with its admin address (on only).
struct Edge {
    role: Role,
    target: Option<targets::Target>,
    admin: SocketAddr,
}

/// The edge's config for `role`: the proxy benchmark's, with the admin
/// listener and OTLP export for `on` only.
fn config(
    role: Role,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    sink: SocketAddr,
) -> Result<String> {
    let plain = targets::edge_config(listen, admin, upstream);
    let admin_table = format!("[admin]\nlisten = \"{admin}\"\n");
    if !plain.contains(&admin_table) {
        bail!("the proxy benchmark's edge config changed: update the monitoring benchmark");
    }
    Ok(match role.sample_ratio() {
        None => plain.replace(&admin_table, ""),
        Some(ratio) => format!(
            "{plain}\n[tracing]\notlp_endpoint = \"http://{sink}\"\nsample_ratio = {ratio:?}\n"
        ),
    })
}

fn start_both(
    release: &Path,
    dir: &Path,
    upstream: Upstream,
    upstream_addr: SocketAddr,
    sink: SocketAddr,
) -> Result<Vec<Edge>> {
    let mut all = Vec::new();
    for role in Role::ALL {
        let (addr, admin) = (free_port()?, free_port()?);
        let text = config(role, addr, admin, upstream_addr, sink)?;
        let path = dir.join(format!(
            "edge-{}-{}.toml",
            runs::Role::short(role),
            upstream.short()
        ));
        let extra: &[&str] = match role {
            Role::Off => &[],
            Role::OnSampled | Role::On => &["--log-json"],
        };
        let target = targets::launch_edge_with(
            &release.join("fraiseql-edge"),
            &path,
            &text,
            extra,
            addr,
            upstream.answer(),
            &[],
        )?;
        println!(
            "bench: {} ready on {}",
            runs::Role::label(role),
            target.url()
        );
        all.push(Edge {
            role,
            target: Some(target),
            admin,
        });
    }
    Ok(all)
}

/// The OTLP/gRPC sink (`otlp-sink` of the tests crate): accepts every
/// export and prints how many spans it received when stdin closes.
struct Sink {
    proc: Proc,
    addr: SocketAddr,
}

impl Sink {
    fn start(release: &Path) -> Result<Self> {
        let addr = free_port()?;
        let mut proc = Proc::spawn(
            "otlp-sink",
            release.join("otlp-sink"),
            ["--listen".to_string(), addr.to_string()],
        )?;
        proc.wait_for_line(|l| l.contains("listening"), Duration::from_secs(10))?;
        Ok(Self { proc, addr })
    }

    /// Stops the sink; the spans it received.
    fn stop(mut self) -> Result<u64> {
        self.proc.signal_term();
        let (_, lines) = self.proc.wait_output(Duration::from_secs(10))?;
        let Some(line) = lines.iter().rev().find(|l| l.starts_with("spans ")) else {
            bail!("otlp-sink printed no span count:\n{}", lines.join("\n"));
        };
        line.trim_start_matches("spans ")
            .trim()
            .parse()
            .with_context(|| format!("otlp-sink printed `{line}`"))
    }
}

/// Scrapes `/metrics` of the monitored edge once a second.
struct Scraper {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

/// What the scraper saw.
struct Scrapes {
    ok: u64,
    failed: u64,
}

impl Scraper {
    fn start(admin: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http::request_with(admin, "GET", "/metrics", None, &[]) {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    thread::sleep(Duration::from_secs(1));
                }
            })
        };
        Self {
            stop,
            ok,
            failed,
            thread,
        }
    }

    fn stop(self) -> Scrapes {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        Scrapes {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// The medians, then on/off ratios per upstream and concurrency.
fn render(cells: &[runs::Cell<Role>], upstreams: &[Upstream], connections: &[u32]) -> String {
    use std::fmt::Write as _;
    let mut out = medians_table(cells, &Role::ALL, upstreams, connections);
    out.push_str(
        "\n| upstream | connections | traces exported | on/off req/s | on/off p99 | throughput lost | goal met |\n",
    );
    out.push_str("|---|---:|---|---:|---:|---:|---|\n");
    for &u in upstreams {
        for &c in connections {
            let Some(off) = find(cells, u, Role::Off, c) else {
                continue;
            };
            for (role, share) in [(Role::OnSampled, "1 %"), (Role::On, "all")] {
                let Some(on) = find(cells, u, role, c) else {
                    continue;
                };
                let ratio = on.rps / off.rps;
                let _ = writeln!(
                    out,
                    "| {} | {c} | {share} | {ratio:.3} | {:.2} | {:.1} % | {} |",
                    u.label(),
                    on.p99_ms / off.p99_ms,
                    (1.0 - ratio) * 100.0,
                    if ratio >= GOAL_RPS_RATIO { "yes" } else { "no" }
                );
            }
        }
    }
    out.push_str(
        "\ngoal met: monitoring on loses under 2 % of the median req/s (on/off ≥ 0.98).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::proxy::wrk::Sample;
    use super::*;

    #[test]
    fn the_help_tells_how_long_the_defaults_take() {
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
             each after a {} s warm-up: about {minutes} minutes",
            s.upstreams.len(),
            s.connections.len(),
            Role::ALL.len(),
            s.repeats,
            s.duration,
            s.warmup
        );
        assert!(DEFAULT_TIME.contains(&told), "{DEFAULT_TIME:?} vs {told:?}");
    }

    #[test]
    fn configs_differ_only_in_monitoring() {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let off = config(Role::Off, a(1), a(2), a(3), a(4)).unwrap();
        let on = config(Role::On, a(1), a(2), a(3), a(4)).unwrap();
        let sampled = config(Role::OnSampled, a(1), a(2), a(3), a(4)).unwrap();
        assert!(!off.contains("[admin]") && !off.contains("otlp"));
        assert!(on.contains("[admin]\nlisten = \"127.0.0.1:2\""));
        assert!(on.contains("otlp_endpoint = \"http://127.0.0.1:4\""));
        assert!(on.contains("sample_ratio = 1.0\n"), "{on}");
        assert!(sampled.contains("sample_ratio = 0.01\n"), "{sampled}");
        assert_eq!(
            on.replace("[admin]\nlisten = \"127.0.0.1:2\"\n", "")
                .split("\n[tracing]")
                .next(),
            Some(off.as_str())
        );
    }

    #[test]
    fn ratios_and_the_goal() {
        let sample = |rps: f64, p99_ms: f64| Sample {
            requests: 1,
            rps,
            p50_ms: 1.0,
            p99_ms,
            p999_ms: 4.0,
            non2xx: 0,
            socket_errors: 0,
        };
        let cell = |role, connections, rps, p99| runs::Cell {
            upstream: Upstream::Demo,
            role,
            connections,
            samples: vec![sample(rps, p99)],
        };
        let cells = [
            cell(Role::Off, 8, 1000.0, 2.0),
            cell(Role::OnSampled, 8, 990.0, 2.2),
            cell(Role::On, 8, 900.0, 3.0),
        ];
        let table = render(&cells, &[Upstream::Demo], &[8]);
        assert!(
            table.contains("| demo-subgraph | 8 | 1 % | 0.990 | 1.10 | 1.0 % | yes |"),
            "{table}"
        );
        assert!(
            table.contains("| demo-subgraph | 8 | all | 0.900 | 1.50 | 10.0 % | no |"),
            "{table}"
        );
    }
}
