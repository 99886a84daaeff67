//! The `demo-subgraph` upstream: a real GraphQL server answering from
//! memory, with an admin port whose `/stats` counts the queries it served.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::http;
use super::procs::Proc;
use super::targets::{self, Kind, READY_TIMEOUT, SUBGRAPH_PATH, Target};

/// The subgraph's name (and the edge's route `/bench/graphql`).
pub const NAME: &str = "bench";
/// In every answer to the benchmark's query.
pub const ANSWER: &str = "user-1@example.com";

/// Starts `demo-subgraph` on free loopback ports, waits for its ready line
/// and a 200, and returns it with the address of its admin port.
pub fn start(binary: &Path) -> Result<(Target, SocketAddr)> {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--name",
        NAME,
    ];
    let mut proc = Proc::spawn("demo-subgraph", binary, args)?;
    println!("bench: starting `{}`", proc.describe());
    let line = proc.wait_for_line(|l| l.contains(" listening on "), READY_TIMEOUT)?;
    let (addr, admin) = parse_ready(&line)?;
    println!("bench: {line}");
    let target = Target {
        kind: Kind::Direct,
        addr,
        path: SUBGRAPH_PATH,
        answer: ANSWER,
        proc,
    };
    targets::probe(&target)?;
    Ok((target, admin))
}

/// `demo-subgraph <name> listening on <addr> (admin <addr>)` → the two addresses.
fn parse_ready(line: &str) -> Result<(SocketAddr, SocketAddr)> {
    let rest = line
        .split_once(" listening on ")
        .map(|(_, r)| r)
        .context("no address")?;
    let (addr, admin) = rest.split_once(" (admin ").context("no admin address")?;
    let admin = admin.trim_end().trim_end_matches(')');
    let parse = |s: &str| {
        s.parse::<SocketAddr>()
            .with_context(|| format!("bad address {s:?} in the ready line {line:?}"))
    };
    Ok((parse(addr)?, parse(admin)?))
}

/// GraphQL requests the subgraph has received, health checks not counted.
pub fn served(admin: SocketAddr) -> Result<u64> {
    let r = http::request(admin, "GET", "/stats", None)?;
    if r.status != 200 {
        bail!("GET http://{admin}/stats: HTTP {}", r.status);
    }
    let stats: serde_json::Value =
        serde_json::from_str(&r.body).context("the subgraph's /stats is not JSON")?;
    let field = |name: &str| {
        stats[name]
            .as_u64()
            .with_context(|| format!("no {name} in /stats: {}", r.body))
    };
    Ok(field("requests")? - field("health_checks")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ready_line() {
        let line = "demo-subgraph bench listening on 127.0.0.1:4001 (admin 127.0.0.1:5001)";
        let (addr, admin) = parse_ready(line).unwrap();
        assert_eq!(addr.port(), 4001);
        assert_eq!(admin.port(), 5001);
    }
}
