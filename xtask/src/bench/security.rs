//! `cargo xtask bench security`: what the edge's security phases cost under
//! load, next to HAProxy doing the same checks, measured side by side in one
//! run and reported as ratios.
//!
//! In front of each upstream of the proxy benchmark, five targets take
//! turns under `wrk`, every request carrying the same valid RS256 bearer
//! token:
//!
//! * the edge as a plain proxy (no `[auth]`, rate limit off: the proxy
//!   benchmark's edge);
//! * the edge's full pipeline: the token verified against a JWKS file
//!   (`iss`, `aud`, `exp` checked), the per-identity rate limit checked,
//!   the document validated and costed against the subgraph's SDL;
//! * the same with the verified-token cache off, so that every request
//!   verifies the signature as HAProxy does;
//! * HAProxy with `jwt_verify` (RS256) and the same claim checks, and a
//!   stick table counting each subject's `http_req_rate`;
//! * HAProxy as a plain proxy (the proxy benchmark's).
//!
//! Before measuring, each target is asked once with the good token, a token
//! with a bad signature and no token: the checking targets must answer 200,
//! 401 and 401, the plain ones 200 three times. Runs are checked as in the
//! proxy benchmark (no error response, no socket error, the upstream served
//! at least what wrk counted).

mod configs;
mod report;
mod token;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use super::proxy::targets::{self, PROXY_PATH, free_port, request_body};
use super::proxy::upstream::Upstream;
use super::proxy::{Schedule, procs};
use super::proxy::{http, wrk};
use super::runs::measure;
use crate::setup::ensure_setup;
use crate::{compile, paths};

type Contender = super::runs::Contender<Role>;

const DEFAULT_TIME: &str = "With the defaults: 2 upstreams x 3 levels x 5 targets x 3 repetitions \
    = 90 runs of 8 s, each after a 2 s warm-up: about 17 minutes, plus the build.";

#[derive(Parser)]
#[command(
    name = "cargo xtask bench security",
    about = "Load the edge's full security pipeline, the plain edge, and HAProxy with and without JWT checks; print medians and ratios",
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

/// What a run loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    EdgePlain,
    EdgeFull,
    EdgeFullNoCache,
    HaproxyJwt,
    HaproxyPlain,
}

impl super::runs::Role for Role {
    fn label(self) -> &'static str {
        Role::label(self)
    }

    fn short(self) -> &'static str {
        Role::short(self)
    }
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::EdgePlain,
        Role::EdgeFull,
        Role::EdgeFullNoCache,
        Role::HaproxyJwt,
        Role::HaproxyPlain,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Role::EdgePlain => "edge, plain proxy",
            Role::EdgeFull => "edge, full pipeline",
            Role::EdgeFullNoCache => "edge, full pipeline, token cache off",
            Role::HaproxyJwt => "HAProxy, jwt_verify + stick table",
            Role::HaproxyPlain => "HAProxy, plain proxy",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Role::EdgePlain => "edge-plain",
            Role::EdgeFull => "edge-full",
            Role::EdgeFullNoCache => "edge-nocache",
            Role::HaproxyJwt => "haproxy-jwt",
            Role::HaproxyPlain => "haproxy",
        }
    }

    /// Whether the target checks the token (and so refuses a bad one).
    fn checks_tokens(self) -> bool {
        matches!(
            self,
            Role::EdgeFull | Role::EdgeFullNoCache | Role::HaproxyJwt
        )
    }
}

pub fn run(raw: &[String]) -> Result<()> {
    let Some(args) = super::parse_args::<Args>("cargo xtask bench security", raw)? else {
        return Ok(());
    };
    check_args(&args)?;
    ensure_setup()?;
    let mut tools = vec!["wrk", "haproxy", "openssl"];
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
    let dir = paths::target_dir().join("bench-security");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let tokens = token::make(&dir)?;
    let sdl = dir.join("subgraph.graphql");
    std::fs::write(&sdl, configs::subgraph_sdl(&release.join("demo-subgraph"))?)
        .with_context(|| format!("writing {}", sdl.display()))?;
    let bearer = format!("Bearer {}", tokens.good);
    let script = dir.join("query.lua");
    std::fs::write(&script, wrk::script_with(&[("authorization", &bearer)]))
        .with_context(|| format!("writing {}", script.display()))?;

    let machine = super::proxy::machine();
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
    let mut checks = Vec::new();
    for &upstream in &args.upstreams {
        println!("bench: upstream {}", upstream.label());
        let (direct, served) = upstream.start(&release, &dir)?;
        let contenders = start_all(&release, &dir, upstream, direct.addr, &tokens, &sdl);
        let measured = contenders.and_then(|mut all| {
            checks.extend(check_tokens(upstream, &all, &tokens)?);
            let cells = measure(&args.schedule, upstream, &mut all, served, &script, started);
            // Stopped in reverse order of start, before the upstream.
            while let Some(c) = all.pop() {
                drop(c);
            }
            cells
        });
        drop(direct);
        cells.extend(measured?);
    }
    let elapsed = started.elapsed().as_secs();
    println!("bench: done in {}m{:02}s", elapsed / 60, elapsed % 60);

    let table = report::render(&cells, &args.upstreams, &args.connections);
    let text = format!(
        "{machine}\n\n{}\n\nwrk -t{} -c<connections> -d{}s (after a {}s warm-up), {} repetitions interleaved; medians; every request carries the same RS256 bearer token.\n\n{table}",
        checks.join("\n"),
        args.threads,
        args.duration,
        args.warmup,
        args.repeats
    );
    let out = dir.join("results.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("\n{text}\n(also in {})", out.display());
    Ok(())
}

/// Starts the five targets in front of `upstream`, in [`Role::ALL`] order.
fn start_all(
    release: &Path,
    dir: &Path,
    upstream: Upstream,
    upstream_addr: std::net::SocketAddr,
    tokens: &token::Tokens,
    sdl: &Path,
) -> Result<Vec<Contender>> {
    let bearer = format!("Bearer {}", tokens.good);
    let headers = [("authorization", bearer.as_str())];
    let edge = release.join("fraiseql-edge");
    let u = upstream.short();
    let mut all = Vec::new();
    for role in Role::ALL {
        let addr = free_port()?;
        let target = match role {
            Role::EdgePlain | Role::EdgeFull | Role::EdgeFullNoCache => {
                let admin = free_port()?;
                let text = match role {
                    Role::EdgePlain => targets::edge_config(addr, admin, upstream_addr),
                    Role::EdgeFull => {
                        configs::edge_full(addr, admin, upstream_addr, &tokens.jwks, sdl, 10_000)?
                    }
                    _ => configs::edge_full(addr, admin, upstream_addr, &tokens.jwks, sdl, 0)?,
                };
                let config = dir.join(format!("{}-{u}.toml", role.short()));
                targets::launch_edge(&edge, &config, &text, addr, upstream.answer(), &headers)?
            }
            Role::HaproxyJwt | Role::HaproxyPlain => {
                let text = match role {
                    Role::HaproxyJwt => {
                        configs::haproxy_jwt(addr, upstream_addr, &tokens.public_pem)?
                    }
                    _ => targets::haproxy_config(addr, upstream_addr),
                };
                let config = dir.join(format!("{}-{u}.cfg", role.short()));
                targets::launch_haproxy(&config, &text, addr, upstream.answer(), &headers)?
            }
        };
        println!("bench: {} ready on {}", role.label(), target.url());
        all.push(Contender { role, target });
    }
    Ok(all)
}

/// Asks every target once with the good token, a bad signature and no
/// token; the checking targets must answer 200/401/401, the others 200 to
/// all three. Returns one printed line per target.
fn check_tokens(
    upstream: Upstream,
    all: &[Contender],
    tokens: &token::Tokens,
) -> Result<Vec<String>> {
    let body = request_body();
    let good = format!("Bearer {}", tokens.good);
    let bad = format!("Bearer {}", tokens.bad);
    let mut lines = Vec::new();
    for c in all {
        let ask = |auth: Option<&str>| -> Result<u16> {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("authorization", a)).into_iter().collect();
            Ok(
                http::request_with(c.target.addr, "POST", PROXY_PATH, Some(&body), &headers)?
                    .status,
            )
        };
        let got = [ask(Some(&good))?, ask(Some(&bad))?, ask(None)?];
        let want = if c.role.checks_tokens() {
            [200, 401, 401]
        } else {
            [200, 200, 200]
        };
        let line = format!(
            "check: {} / {}: good token {}, bad signature {}, no token {}",
            upstream.label(),
            c.role.label(),
            got[0],
            got[1],
            got[2]
        );
        println!("bench: {line}");
        if got != want {
            bail!("{line}: expected {want:?}\n{}", c.target.proc.tail());
        }
        lines.push(format!("{line} (as expected)"));
    }
    Ok(lines)
}

fn run_count(args: &Args) -> usize {
    args.run_count(Role::ALL.len())
}

fn estimate(args: &Args) -> Duration {
    args.estimate(Role::ALL.len(), Duration::from_secs(5))
}

fn check_args(args: &Args) -> Result<()> {
    args.check()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_tells_how_long_the_defaults_take() {
        let args = Args::try_parse_from(["bench"]).unwrap();
        let runs = run_count(&args);
        let minutes = (estimate(&args).as_secs() + 30) / 60;
        let told = format!(
            "{} upstreams x {} levels x {} targets x {} repetitions = {runs} runs of {} s, \
             each after a {} s warm-up: about {minutes} minutes",
            args.upstreams.len(),
            args.connections.len(),
            Role::ALL.len(),
            args.repeats,
            args.duration,
            args.warmup
        );
        assert!(DEFAULT_TIME.contains(&told), "{DEFAULT_TIME:?} vs {told:?}");
    }
}
