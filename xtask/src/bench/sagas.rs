//! `cargo xtask bench sagas`: what running two mutations as a saga costs
//! against sending the same two mutations bare, side by side in one run.
//!
//! One `demo-subgraph` (release build) and, in front of it, one
//! fraiseql-edge per saga log: SQLite, and PostgreSQL (by default a private
//! cluster `pg-server` starts from Debian's binaries, `fsync` on),
//! `[kernel] enabled = false`. At each concurrency level the contenders
//! take turns, each run preceded by a warm-up:
//!
//! * **bare**: `c` clients each send `reserve(item, 1)` then
//!   `release(item, 1)` through the edge, one after the other, in a loop;
//!   one operation is the pair.
//! * **saga**: `c` sagas in flight at all times, each the same two
//!   mutations as steps (`POST /sagas` with a fresh `Idempotency-Key`).
//!   Ends are read from the daemon's `fraiseql_edge_saga_finished_total`
//!   every 2 ms; a submitter takes a slot when fewer than `c` sagas are in
//!   flight. One operation is a completed saga.
//!
//! Reported: operations per second (median of the repetitions), the mean
//! time of one operation (bare: measured by the client; saga: submission to
//! end, from the daemon's `fraiseql_edge_saga_duration_seconds`), the mean
//! time of one step's request to the subgraph
//! (`fraiseql_edge_saga_step_duration_seconds`) and what the coordinator
//! adds per step beyond that request: the log writes (each on disk before
//! the coordinator goes on), the re-read of the saga before each move and
//! the scheduling. Any failed mutation or saga that does not complete fails
//! the benchmark.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

use super::proxy::procs::{self, Proc, check_interrupted};
use super::proxy::targets::{self, PROXY_PATH, Target, free_port};
use super::proxy::{http, subgraph};
use crate::setup::ensure_setup;
use crate::{compile, paths};

#[derive(Parser)]
#[command(
    name = "cargo xtask bench sagas",
    about = "Two mutations as a saga (SQLite and PostgreSQL logs) against the same two mutations bare; print medians and ratios"
)]
struct Args {
    /// Operations in flight (comma-separated levels).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<u32>,
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 6)]
    duration: u64,
    /// Seconds of warm-up before each measured run.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Measured runs per contender and level (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// The PostgreSQL log: `auto` starts a private cluster (`pg-server`),
    /// `off` measures SQLite only, anything else is the URL of a database
    /// to use (`postgres://user@host:port/db`).
    #[arg(long, default_value = "auto")]
    postgres: String,
    /// Use the release binaries already built.
    #[arg(long)]
    no_build: bool,
}

/// One saga: the pair of mutations, as steps.
const STEPS: u32 = 2;
/// The demo subgraph's items (`upc-1` … `upc-10`, 100 in stock each).
const ITEMS: u64 = 10;
/// initdb and the first start of a cluster.
const PG_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the saga contender reads the daemon's counters.
const POLL: Duration = Duration::from_millis(2);

/// What a run loads.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Contender {
    Bare,
    Saga(Store),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Store {
    Sqlite,
    Postgres(String),
}

impl Contender {
    fn label(&self) -> &'static str {
        match self {
            Contender::Bare => "2 mutations, bare",
            Contender::Saga(Store::Sqlite) => "2-step saga, SQLite log",
            Contender::Saga(Store::Postgres(_)) => "2-step saga, PostgreSQL log",
        }
    }
}

/// One measured run.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// Operations per second.
    ops: f64,
    /// Mean time of one operation (s).
    op_time: f64,
    /// Mean time of one step's request to the subgraph (s; sagas only).
    step_time: f64,
}

pub fn run(raw: &[String]) -> Result<()> {
    let Some(args) = super::parse_args::<Args>("cargo xtask bench sagas", raw)? else {
        return Ok(());
    };
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency: give levels of at least 1");
    }
    if args.duration == 0 || args.repeats == 0 {
        bail!("--duration and --repeats must be at least 1");
    }
    ensure_setup()?;
    let auto_pg = args.postgres == "auto";
    if !args.no_build {
        let mut build = vec![
            "-p",
            "fraiseql-edge",
            "-p",
            "demo-subgraph",
            "--bin",
            "fraiseql-edge",
            "--bin",
            "demo-subgraph",
        ];
        if auto_pg {
            build.extend(["-p", "fraiseql-edge-tests", "--bin", "pg-server"]);
        }
        compile::build_release(&build)?;
    }
    procs::watch_signals()?;
    let release = paths::target_dir().join("release");
    let dir = paths::target_dir().join("bench-sagas");
    // A fresh log each run: the figures are for a log of this run's sagas.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let machine = super::proxy::machine();
    println!("bench: {machine}");

    let (upstream, _upstream_admin) = subgraph::start(&release.join("demo-subgraph"))?;
    let mut stores = vec![Store::Sqlite];
    // Kept until the end: the cluster stops with it.
    let mut _pg = None;
    match args.postgres.as_str() {
        "off" => {}
        "auto" => {
            let (proc, url) = start_postgres(&release)?;
            _pg = Some(proc);
            stores.push(Store::Postgres(url));
        }
        url => stores.push(Store::Postgres(url.to_owned())),
    }
    let mut edges = Vec::new();
    for store in &stores {
        edges.push((
            store.clone(),
            start_edge(&release, &dir, store, upstream.addr)?,
        ));
    }
    let mut contenders = vec![(Contender::Bare, 0usize)];
    contenders.extend((0..edges.len()).map(|i| (Contender::Saga(edges[i].0.clone()), i)));

    let started = Instant::now();
    let mut cells: Vec<(u32, Contender, Vec<Sample>)> = Vec::new();
    for &c in &args.concurrency {
        for (contender, _) in &contenders {
            cells.push((c, contender.clone(), Vec::new()));
        }
        for rep in 0..args.repeats {
            // Each repetition starts with another contender.
            let n = contenders.len();
            for k in 0..n {
                let (contender, edge) = &contenders[(k + rep as usize) % n];
                let edge = &edges[*edge].1;
                check_interrupted()?;
                one(contender, edge, c, Duration::from_secs(args.warmup))
                    .with_context(|| format!("warm-up of {} at {c}", contender.label()))?;
                let sample = one(contender, edge, c, Duration::from_secs(args.duration))
                    .with_context(|| format!("{} at {c}", contender.label()))?;
                println!(
                    "bench: {} c={c} rep {}: {:.0} ops/s, {:.2} ms per operation",
                    contender.label(),
                    rep + 1,
                    sample.ops,
                    sample.op_time * 1e3
                );
                cells
                    .iter_mut()
                    .find(|(cc, cn, _)| *cc == c && cn == contender)
                    .expect("cell")
                    .2
                    .push(sample);
            }
        }
    }
    let elapsed = started.elapsed().as_secs();
    println!("bench: done in {}m{:02}s", elapsed / 60, elapsed % 60);
    drop(edges);
    drop(upstream);

    let text = format!(
        "{machine}\n\n{} s runs after a {} s warm-up, {} repetitions interleaved; medians.\n\n{}",
        args.duration,
        args.warmup,
        args.repeats,
        render(&cells, &args.concurrency)
    );
    let out = dir.join("results.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("\n{text}\n(also in {})", out.display());
    Ok(())
}

/// Starts `pg-server` and returns it with its database's URL.
fn start_postgres(release: &Path) -> Result<(Proc, String)> {
    let mut proc = Proc::spawn("pg-server", release.join("pg-server"), [] as [&str; 0])?;
    println!("bench: starting `{}`", proc.describe());
    let line = proc.wait_for_line(|l| l.starts_with("pg-server ready "), PG_TIMEOUT)?;
    let url = line["pg-server ready ".len()..].trim().to_owned();
    println!("bench: PostgreSQL ready at {url}");
    Ok((proc, url))
}

/// An edge in front of the subgraph with `[sagas]` on `store`, and its
/// admin address.
struct Edge {
    target: Target,
    admin: SocketAddr,
}

fn start_edge(release: &Path, dir: &Path, store: &Store, upstream: SocketAddr) -> Result<Edge> {
    let addr = free_port()?;
    let admin = free_port()?;
    let (name, section) = match store {
        Store::Sqlite => (
            "sqlite",
            format!(
                "[sagas]\npath = {:?}\n",
                dir.join("sagas.db").to_str().context("UTF-8 path")?
            ),
        ),
        Store::Postgres(url) => (
            "postgres",
            format!("[sagas]\nstore = \"postgres\"\npostgres_url = {url:?}\nnode = \"bench\"\n"),
        ),
    };
    let text = format!("{}\n{section}", targets::edge_config(addr, admin, upstream));
    let config = dir.join(format!("edge-{name}.toml"));
    let target = targets::launch_edge(
        &release.join("fraiseql-edge"),
        &config,
        &text,
        addr,
        subgraph::ANSWER,
        &[],
    )?;
    println!(
        "bench: fraiseql-edge ({name} saga log) ready on {}",
        target.url()
    );
    Ok(Edge { target, admin })
}

/// One run of `contender` at `c` for `length`.
fn one(contender: &Contender, edge: &Edge, c: u32, length: Duration) -> Result<Sample> {
    match contender {
        Contender::Bare => bare(edge, c, length),
        Contender::Saga(_) => sagas(edge, c, length),
    }
}

fn mutation(name: &str, item: u64) -> Value {
    let selection = if name == "reserve" {
        " { item remaining }"
    } else {
        ""
    };
    json!({
        "query": format!("mutation($i: String!) {{ {name}(item: $i, quantity: 1){selection} }}"),
        "variables": { "i": format!("upc-{}", item % ITEMS + 1) },
    })
}

/// Sends one GraphQL mutation through the edge; fails unless it answered
/// 200 with data and no errors.
fn send(addr: SocketAddr, body: &str) -> Result<()> {
    let r = http::request(addr, "POST", PROXY_PATH, Some(body))?;
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    if r.status != 200 || v.get("errors").is_some() || v["data"].is_null() {
        bail!("mutation answered HTTP {}: {}", r.status, r.body);
    }
    Ok(())
}

fn bare(edge: &Edge, c: u32, length: Duration) -> Result<Sample> {
    let addr = edge.target.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..c)
        .map(|w| {
            let stop = stop.clone();
            thread::spawn(move || -> Result<(u64, Duration)> {
                let (reserve, release) = (
                    mutation("reserve", u64::from(w)).to_string(),
                    mutation("release", u64::from(w)).to_string(),
                );
                let (mut pairs, mut busy) = (0, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    send(addr, &reserve)?;
                    send(addr, &release)?;
                    busy += t.elapsed();
                    pairs += 1;
                }
                Ok((pairs, busy))
            })
        })
        .collect();
    let started = Instant::now();
    thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    let (mut pairs, mut busy) = (0, Duration::ZERO);
    for w in workers {
        let (p, b) = w
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
        pairs += p;
        busy += b;
    }
    let secs = started.elapsed().as_secs_f64();
    if pairs == 0 {
        bail!("no pair of mutations completed");
    }
    Ok(Sample {
        ops: pairs as f64 / secs,
        op_time: busy.as_secs_f64() / pairs as f64,
        step_time: 0.0,
    })
}

/// The daemon's saga counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    finished: f64,
    completed: f64,
    duration_sum: f64,
    step_sum: f64,
    step_count: f64,
}

fn counters(admin: SocketAddr) -> Result<Counters> {
    let r = http::request(admin, "GET", "/metrics", None)?;
    if r.status != 200 {
        bail!("GET http://{admin}/metrics: HTTP {}", r.status);
    }
    Ok(parse_counters(&r.body))
}

/// The saga counters of a Prometheus text exposition.
fn parse_counters(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let family = name.split('{').next().unwrap_or("");
        let completed = name.contains(r#"outcome="completed""#);
        match family {
            "fraiseql_edge_saga_finished_total" => {
                c.finished += value;
                if completed {
                    c.completed += value;
                }
            }
            "fraiseql_edge_saga_duration_seconds_sum" if completed => c.duration_sum += value,
            "fraiseql_edge_saga_step_duration_seconds_sum" => c.step_sum += value,
            "fraiseql_edge_saga_step_duration_seconds_count" => c.step_count += value,
            _ => {}
        }
    }
    c
}

fn sagas(edge: &Edge, c: u32, length: Duration) -> Result<Sample> {
    let (addr, admin) = (edge.target.addr, edge.admin);
    let before = counters(admin)?;
    // Sagas submitted and finished during this run.
    let submitted = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let run_id = format!("{:x}", rand_u64());
    let watcher = {
        let (finished, stop) = (finished.clone(), stop.clone());
        thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let now = counters(admin)?;
                finished.store((now.finished - before.finished) as u64, Ordering::Relaxed);
                thread::sleep(POLL);
            }
            Ok(())
        })
    };
    let workers: Vec<_> = (0..c)
        .map(|w| {
            let (submitted, finished, stop) = (submitted.clone(), finished.clone(), stop.clone());
            let run_id = run_id.clone();
            thread::spawn(move || -> Result<()> {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let taken = submitted.load(Ordering::Relaxed);
                    if taken - finished.load(Ordering::Relaxed).min(taken) >= u64::from(c)
                        || submitted
                            .compare_exchange(taken, taken + 1, Ordering::AcqRel, Ordering::Relaxed)
                            .is_err()
                    {
                        thread::sleep(Duration::from_micros(500));
                        continue;
                    }
                    let item = u64::from(w) + n;
                    n += 1;
                    let step = |name: &str, undo: &str| {
                        let (m, u) = (mutation(name, item), mutation(undo, item));
                        json!({
                            "subgraph": subgraph::NAME,
                            "mutation": m["query"], "variables": m["variables"],
                            "compensation": u["query"], "compensationVariables": u["variables"],
                        })
                    };
                    let body = json!({ "steps": [step("reserve", "release"), step("release", "reserve")] })
                        .to_string();
                    let key = format!("bench-{run_id}-{w}-{n}");
                    let r = http::request_with(
                        addr,
                        "POST",
                        "/sagas",
                        Some(&body),
                        &[("idempotency-key", &key)],
                    )?;
                    if r.status != 202 {
                        bail!("POST /sagas answered HTTP {}: {}", r.status, r.body);
                    }
                }
                Ok(())
            })
        })
        .collect();
    let started = Instant::now();
    thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a submitter panicked"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the watcher panicked"))??;
    // Let the sagas in flight end, so the next run starts from none.
    let want = submitted.load(Ordering::Relaxed) as f64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = counters(admin)?;
        if now.finished - before.finished >= want {
            break now;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {want} sagas finished 30 s after the run",
                now.finished - before.finished
            );
        }
        thread::sleep(POLL);
    };
    let (done, completed) = (
        after.finished - before.finished,
        after.completed - before.completed,
    );
    if completed < done || done == 0.0 {
        bail!("{done} sagas finished, {completed} of them completed: every saga must complete");
    }
    let steps = after.step_count - before.step_count;
    Ok(Sample {
        ops: done / secs,
        op_time: (after.duration_sum - before.duration_sum) / done,
        step_time: if steps > 0.0 {
            (after.step_sum - before.step_sum) / steps
        } else {
            0.0
        },
    })
}

/// A run id, so a second run's keys never replay the first's sagas.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn render(cells: &[(u32, Contender, Vec<Sample>)], levels: &[u32]) -> String {
    let mut out = String::from(
        "| contender | in flight | ops/s (median) | ops/s range | ms per operation | ms per step request |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let med = |samples: &[Sample], f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    for (c, contender, samples) in cells {
        let lo = samples.iter().map(|s| s.ops).fold(f64::INFINITY, f64::min);
        let hi = samples.iter().map(|s| s.ops).fold(0.0, f64::max);
        let step = match contender {
            Contender::Bare => "—".to_string(),
            Contender::Saga(_) => format!("{:.2}", med(samples, |s| s.step_time) * 1e3),
        };
        out += &format!(
            "| {} | {c} | {:.0} | {lo:.0}–{hi:.0} | {:.2} | {step} |\n",
            contender.label(),
            med(samples, |s| s.ops),
            med(samples, |s| s.op_time) * 1e3,
        );
    }
    out += "\n| saga log | in flight | saga/bare ops/s | saga/bare time per operation | coordinator time per step (ms) |\n|---|---:|---:|---:|---:|\n";
    for &c in levels {
        let find = |want: &Contender| {
            cells
                .iter()
                .find(|(cc, cn, _)| *cc == c && cn == want)
                .map(|(_, _, s)| s.as_slice())
        };
        let Some(bare) = find(&Contender::Bare) else {
            continue;
        };
        for (_, contender, samples) in cells
            .iter()
            .filter(|(cc, cn, _)| *cc == c && *cn != Contender::Bare)
        {
            let log = match contender {
                Contender::Saga(Store::Postgres(_)) => "PostgreSQL",
                _ => "SQLite",
            };
            let (op, step) = (med(samples, |s| s.op_time), med(samples, |s| s.step_time));
            out += &format!(
                "| {log} | {c} | {:.3} | {:.2} | {:.2} |\n",
                med(samples, |s| s.ops) / med(bare, |s| s.ops),
                op / med(bare, |s| s.op_time),
                (op / f64::from(STEPS) - step) * 1e3,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_saga_counters() {
        let text = "# HELP x\n\
            fraiseql_edge_saga_finished_total{outcome=\"completed\"} 7\n\
            fraiseql_edge_saga_finished_total{outcome=\"compensated\"} 2\n\
            fraiseql_edge_saga_duration_seconds_sum{outcome=\"completed\"} 0.7\n\
            fraiseql_edge_saga_duration_seconds_sum{outcome=\"compensated\"} 5\n\
            fraiseql_edge_saga_step_duration_seconds_sum{subgraph=\"bench\"} 0.28\n\
            fraiseql_edge_saga_step_duration_seconds_count{subgraph=\"bench\"} 14\n";
        let c = parse_counters(text);
        assert_eq!((c.finished, c.completed), (9.0, 7.0));
        assert!((c.duration_sum - 0.7).abs() < 1e-9);
        assert_eq!(c.step_count, 14.0);
    }
}
