//! Part 3: over-admission with two nodes. Two edges share one Redis; one
//! identity (wrk's address, 127.0.0.1) sends as fast as it can to both at
//! once for `t` seconds. With the limit global, at most `burst + rate·t`
//! requests may pass across both; with it local, each node admits that
//! much on its own. Admitted requests are counted by the upstream (the
//! subgraph's `/stats`), refusals by each node's counters.

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::super::proxy::procs::check_interrupted;
use super::super::proxy::subgraph;
use super::super::proxy::targets::{self, Target, free_port};
use super::super::proxy::wrk;
use super::configs::admission_node;
use super::counters::Counters;
use super::redis::Redis;

/// What a run does.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// `t`: seconds of load.
    pub seconds: u64,
    /// Runs per mode.
    pub repeats: u32,
    /// `requests_per_minute` of the limit.
    pub rpm: u32,
    /// `burst` of the limit.
    pub burst: u32,
    /// wrk connections per node.
    pub connections: u32,
}

/// One run's outcome.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub global: bool,
    /// Answers of 200 wrk read from node a, node b.
    pub ok: [u64; 2],
    /// Requests the upstream served during the run: what both admitted
    /// (at least the sum of `ok`; more by requests wrk stopped waiting for).
    pub served: u64,
    /// Responses wrk read from each node (all statuses).
    pub responses: [u64; 2],
    /// Seconds from the start of the first wrk to the end of the last.
    pub secs: f64,
    /// What each node's counters say about the run.
    pub counters: [Counters; 2],
}

impl Run {
    /// `burst + rate·t` for this run's `t`.
    pub fn bound(&self, s: &Settings) -> f64 {
        f64::from(s.burst) + f64::from(s.rpm) / 60.0 * self.secs
    }
}

/// The runs: global then local, alternating which goes first.
pub fn run(release: &Path, dir: &Path, redis: &mut Redis, s: &Settings) -> Result<Vec<Run>> {
    let (upstream, upstream_admin) = subgraph::start(&release.join("demo-subgraph"))?;
    let script = dir.join("admission.lua");
    std::fs::write(&script, wrk::script())
        .with_context(|| format!("writing {}", script.display()))?;
    let mut runs = Vec::new();
    for rep in 0..s.repeats {
        let order = if rep % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for global in order {
            check_interrupted()?;
            redis.flush()?;
            let run = one(
                release,
                dir,
                redis.addr,
                upstream.addr,
                upstream_admin,
                &script,
                global,
                s,
            )
            .with_context(|| format!("over-admission run, global = {global}"))?;
            println!(
                "bench: admission global={global:<5} run {}/{}: {} + {} answers of 200, {} served upstream in {:.2} s (bound {:.0}), {} + {} responses",
                rep + 1,
                s.repeats,
                run.ok[0],
                run.ok[1],
                run.served,
                run.secs,
                run.bound(s),
                run.responses[0],
                run.responses[1]
            );
            runs.push(run);
            redis.check_alive()?;
        }
    }
    drop(upstream);
    Ok(runs)
}

/// Two fresh nodes, both loaded at once; stopped at the end.
#[expect(
    clippy::too_many_arguments,
    reason = "one run's wiring, named at the one call"
)]
fn one(
    release: &Path,
    dir: &Path,
    redis: SocketAddr,
    upstream: SocketAddr,
    upstream_admin: SocketAddr,
    script: &Path,
    global: bool,
    s: &Settings,
) -> Result<Run> {
    let mut nodes: Vec<(Target, SocketAddr)> = Vec::new();
    for name in ["a", "b"] {
        let (addr, admin) = (free_port()?, free_port()?);
        let text = admission_node(global, addr, admin, upstream, redis, name, (s.rpm, s.burst))?;
        let config = dir.join(format!("admission-{name}.toml"));
        let target = targets::launch_edge(
            &release.join("fraiseql-edge"),
            &config,
            &text,
            addr,
            subgraph::ANSWER,
            &[],
        )?;
        nodes.push((target, admin));
    }
    // The readiness probes took a request each: let the buckets refill
    // (one interval per request) so every run starts from a full burst.
    thread::sleep(Duration::from_secs(1) + Duration::from_secs(120) / s.rpm.max(1));
    let before = [Counters::read(nodes[0].1)?, Counters::read(nodes[1].1)?];
    let served_before = subgraph::served(upstream_admin)?;
    let urls: Vec<String> = nodes.iter().map(|(t, _)| t.url()).collect();
    let started = Instant::now();
    let samples: Vec<Result<wrk::Sample>> = thread::scope(|scope| {
        let loads: Vec<_> = urls
            .iter()
            .map(|url| {
                scope.spawn(move || {
                    wrk::run(
                        script,
                        &wrk::Load {
                            url,
                            threads: 1,
                            connections: s.connections,
                            seconds: s.seconds,
                        },
                    )
                })
            })
            .collect();
        loads
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a wrk thread panicked")))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut responses = [0; 2];
    let mut ok = [0; 2];
    for (i, sample) in samples.into_iter().enumerate() {
        let sample = sample?;
        responses[i] = sample.requests;
        ok[i] = sample.requests - sample.non2xx;
    }
    // Requests still in flight when wrk stopped may reach the upstream
    // after it: let them land before counting.
    thread::sleep(Duration::from_millis(500));
    let served = subgraph::served(upstream_admin)? - served_before;
    let counters = [
        Counters::read(nodes[0].1)?.since(before[0]),
        Counters::read(nodes[1].1)?.since(before[1]),
    ];
    for (t, _) in &mut nodes {
        t.proc.check_alive()?;
    }
    drop(nodes);
    if served < ok[0] + ok[1] {
        bail!(
            "wrk read {} + {} answers of 200 but the upstream served only {served} requests",
            ok[0],
            ok[1]
        );
    }
    Ok(Run {
        global,
        ok,
        served,
        responses,
        secs,
        counters,
    })
}

/// The runs' table: admitted against the bound.
pub fn render(runs: &[Run], s: &Settings) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| limit | t (s) | 200s via node a | 200s via node b | admitted (upstream count) | bound: burst + rate·t | admitted / bound | refused by the node's limit | refused by the global limit | Redis unavailable |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for global in [true, false] {
        for r in runs.iter().filter(|r| r.global == global) {
            let sum = |f: fn(&Counters) -> f64| f(&r.counters[0]) + f(&r.counters[1]);
            let _ = writeln!(
                out,
                "| {} | {:.2} | {} | {} | {} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} |",
                if global { "global" } else { "local (per node)" },
                r.secs,
                r.ok[0],
                r.ok[1],
                r.served,
                r.bound(s),
                r.served as f64 / r.bound(s),
                sum(|c| c.refused_local),
                sum(|c| c.refused_global),
                sum(|c| c.unavailable),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_burst_plus_rate_times_t() {
        let s = Settings {
            seconds: 10,
            repeats: 1,
            rpm: 600,
            burst: 20,
            connections: 8,
        };
        let run = Run {
            global: true,
            ok: [70, 50],
            served: 120,
            responses: [9000, 9000],
            secs: 10.0,
            counters: [Counters::default(); 2],
        };
        assert_eq!(run.bound(&s), 120.0);
        let table = render(&[run], &s);
        assert!(
            table.contains("| global | 10.00 | 70 | 50 | 120 | 120 | 1.00 | 0 | 0 | 0 |"),
            "{table}"
        );
    }
}
