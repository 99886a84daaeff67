//! The kinds of upstream the proxies are measured in front of, one at a
//! time: `demo-subgraph` (a real GraphQL server, see [`super::subgraph`]) and
//! nginx answering with a fixed response (see [`super::nginx`]).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;

use super::targets::Target;
use super::{nginx, subgraph};

/// What answers behind the proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Upstream {
    /// `demo-subgraph`: parses and executes the query, from memory.
    Demo,
    /// nginx: one constant GraphQL response, so the proxy is the bottleneck.
    Fixed,
}

impl Upstream {
    pub const ALL: [Upstream; 2] = [Upstream::Demo, Upstream::Fixed];

    pub fn label(self) -> &'static str {
        match self {
            Upstream::Demo => "demo-subgraph",
            Upstream::Fixed => "nginx (fixed)",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Upstream::Demo => "demo",
            Upstream::Fixed => "fixed",
        }
    }

    /// A fragment of every answer to the benchmark's query, through any target.
    pub fn answer(self) -> &'static str {
        match self {
            Upstream::Demo => subgraph::ANSWER,
            Upstream::Fixed => nginx::RESPONSE,
        }
    }

    /// Starts the upstream and returns it as the direct target, with where
    /// to read how many requests it served.
    pub fn start(self, release: &Path, dir: &Path) -> Result<(Target, Served)> {
        match self {
            Upstream::Demo => {
                let (target, admin) = subgraph::start(&release.join("demo-subgraph"))?;
                Ok((target, Served::Subgraph(admin)))
            }
            Upstream::Fixed => {
                let (target, status) = nginx::start(dir)?;
                Ok((target, Served::Nginx(status)))
            }
        }
    }
}

/// The upstream's own count of requests served, read before and after a
/// run: it must grow by at least what wrk counted.
#[derive(Clone, Copy, Debug)]
pub enum Served {
    /// The subgraph's `/stats`: GraphQL queries, health checks excluded.
    Subgraph(SocketAddr),
    /// nginx's `stub_status`: every request, the edge's health checks (one
    /// per 5 s) and the status requests included, so a few too many.
    Nginx(SocketAddr),
}

impl Served {
    pub fn read(self) -> Result<u64> {
        match self {
            Served::Subgraph(admin) => subgraph::served(admin),
            Served::Nginx(status) => nginx::served(status),
        }
    }
}
