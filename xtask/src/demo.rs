//! `cargo xtask demo`: the daemon enforcing per-client rate limits and a
//! block on real traffic between a network namespace and the host.

mod daemon;
mod graphql;
mod kernel;
mod netns;
mod pins;
mod signals;
mod subgraph;
mod table;
mod traffic;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::setup::ensure_setup;
use crate::{compile, paths, system};
use daemon::Daemon;
use graphql::{GqlClient, GqlTraffic};
use kernel::Kernel;
use netns::Netns;
use pins::PinDir;
use table::{KernelView, Snapshot};
use traffic::{Client, Traffic};

const PIN_PATH: &str = "/sys/fs/bpf/fraiseql-edge-demo";
const PORT: u16 = 8080;
const BLOCKED: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 13);
const BLOCK_AT_SECOND: u64 = 5;
const BLOCK_TTL_SECS: u64 = 10;

const CLIENTS: [Client; 4] = [
    Client {
        addr: Ipv4Addr::new(10, 203, 0, 10),
        rate: 100,
        note: "under the limit",
    },
    Client {
        addr: Ipv4Addr::new(10, 203, 0, 11),
        rate: 5_000,
        note: "over the limit",
    },
    Client {
        addr: Ipv4Addr::new(10, 203, 0, 12),
        rate: 20_000,
        note: "far over the limit",
    },
    Client {
        addr: BLOCKED,
        rate: 1_000,
        note: "blocked at t=5s for 10s",
    },
];

/// GraphQL clients; they send through the edge (XDP in front of the proxy).
const GQL_BLOCKED: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 21);
const GQL_CLIENTS: [GqlClient; 2] = [
    GqlClient {
        addr: Ipv4Addr::new(10, 203, 0, 20),
        rate: 20,
        note: "steady queries",
    },
    GqlClient {
        addr: GQL_BLOCKED,
        rate: 20,
        note: "blocked at t=5s for 10s",
    },
];

fn config() -> String {
    format!(
        "[kernel]\n\
         interfaces = [\"{iface}\"]\n\
         protected_ports = [{PORT}]\n\
         rate = 1000        # packets per second per client\n\
         burst = 200\n\
         max_conns = 64\n\
         pin_path = \"{PIN_PATH}\"\n\
         \n\
         [proxy]\n\
         listen = \"0.0.0.0:{PORT}\"\n\
         default_subgraph = \"users\"\n\
         \n\
         [admin]\n\
         listen = \"127.0.0.1:19090\"\n\
         \n\
         [rate_limit]\n\
         requests_per_minute = 6000   # the demo's steady client sends 20/s\n\
         \n\
         [[subgraphs]]\n\
         name = \"users\"\n\
         endpoints = [\"http://{subgraph}/graphql\"]\n",
        iface = netns::HOST_IF,
        subgraph = subgraph::LISTEN,
    )
}

/// Which daemon the demo runs.
pub enum DaemonChoice {
    /// None: only the network and the traffic (to check the harness itself).
    Without,
    /// The workspace's, built in release mode first.
    Build,
    /// A given binary.
    Binary(PathBuf),
}

impl DaemonChoice {
    pub fn from_flags(no_daemon: bool, binary: Option<PathBuf>) -> Self {
        match (no_daemon, binary) {
            (true, _) => DaemonChoice::Without,
            (false, Some(path)) => DaemonChoice::Binary(path),
            (false, None) => DaemonChoice::Build,
        }
    }

    /// Builds when asked to; the binary to run, if any.
    fn prepare(self) -> Result<Option<PathBuf>> {
        match self {
            DaemonChoice::Without => Ok(None),
            DaemonChoice::Binary(path) => Ok(Some(std::path::absolute(path)?)),
            DaemonChoice::Build => {
                compile::build_release(&["-p", "fraiseql-edge", "-p", "demo-subgraph"])?;
                Ok(Some(paths::daemon_binary()))
            }
        }
    }
}

/// Runs the demo for `seconds`.
pub fn demo(seconds: u64, choice: DaemonChoice) -> Result<()> {
    if !system::is_root() {
        bail!("the demo needs root (network namespaces, XDP, bpffs)");
    }
    ensure_setup()?;
    let binary = choice.prepare()?;
    let interrupted = signals::watch()?;
    daemon::stop_leftover(&files_dir())?;
    // Dropped in reverse: the daemon stops, its pins are detached and
    // removed, then the namespace (and with it the veth pair) goes.
    let addrs: Vec<Ipv4Addr> = CLIENTS
        .iter()
        .map(|c| c.addr)
        .chain(GQL_CLIENTS.iter().map(|c| c.addr))
        .collect();
    let _netns = Netns::create(&addrs)?;
    let _pins = PinDir::claim(PIN_PATH, binary.clone())?;
    let _subgraph = match &binary {
        Some(_) => Some(subgraph::Subgraph::start(
            &paths::target_dir().join("release").join("demo-subgraph"),
        )?),
        None => None,
    };
    let mut daemon = match binary {
        Some(binary) => Some(start_daemon(binary, &interrupted)?),
        None => None,
    };
    let flooded = flood(seconds, daemon.as_mut(), &interrupted);
    let stopped = daemon.as_mut().map_or(Ok(()), Daemon::stop);
    flooded.and(stopped)
}

/// Runs the traffic for `seconds` with the table, then the closing summary.
fn flood(seconds: u64, daemon: Option<&mut Daemon>, interrupted: &AtomicBool) -> Result<()> {
    let server = SocketAddr::new(IpAddr::V4(netns::HOST_ADDR), PORT);
    let n = CLIENTS.len();
    println!("demo: flooding {server} from {n} clients for {seconds}s");
    let mut traffic = Traffic::start(&CLIENTS, server, &netns::path())?;
    let mut gql = match daemon {
        Some(_) => {
            let to = std::net::SocketAddrV4::new(netns::HOST_ADDR, PORT);
            println!(
                "demo: GraphQL queries to http://{to}/graphql from {} clients",
                GQL_CLIENTS.len()
            );
            Some(GqlTraffic::start(&GQL_CLIENTS, to, &netns::path())?)
        }
        None => None,
    };
    let counters = Arc::clone(&traffic.counters);
    let start = Instant::now();
    let shown = show(seconds, &mut traffic, gql.as_mut(), daemon, interrupted);
    let elapsed = start.elapsed().as_secs_f64();
    let finished = traffic.finish();
    let finished = match gql {
        Some(g) => finished.and(g.finish()),
        None => finished,
    };
    table::print_summary(&CLIENTS, &Snapshot::take(&counters), elapsed);
    shown.and(finished)
}

/// Where the demo keeps the daemon's config, log and pid file.
fn files_dir() -> PathBuf {
    paths::target_dir().join("demo")
}

fn start_daemon(binary: PathBuf, interrupted: &AtomicBool) -> Result<Daemon> {
    let dir = files_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config_file = dir.join(daemon::CONFIG);
    std::fs::write(&config_file, config())
        .with_context(|| format!("writing {}", config_file.display()))?;
    let kernel = Kernel {
        binary,
        pin_path: PIN_PATH.to_owned(),
    };
    let mut daemon = Daemon::start(kernel, &dir)?;
    daemon.wait_ready(netns::HOST_IF, interrupted)?;
    println!("demo: the daemon is up (maps pinned at {PIN_PATH})");
    Ok(daemon)
}

/// The once-a-second loop: table, health checks, and the block at t=5s.
fn show(
    seconds: u64,
    traffic: &mut Traffic,
    mut gql: Option<&mut GqlTraffic>,
    mut daemon: Option<&mut Daemon>,
    interrupted: &AtomicBool,
) -> Result<()> {
    let start = Instant::now();
    let mut before = Snapshot::default();
    let mut gql_before = vec![(0, 0); GQL_CLIENTS.len()];
    for second in 1..=seconds {
        sleep_until(start + Duration::from_secs(second), interrupted)?;
        traffic.check()?;
        let view = match daemon.as_deref_mut() {
            Some(daemon) => Some(kernel_view(daemon)?),
            None => None,
        };
        let now = Snapshot::take(&traffic.counters);
        table::print(
            &format!("t={second}s"),
            &CLIENTS,
            &now,
            &before,
            view.as_ref(),
        );
        before = now;
        if let Some(gql) = gql.as_deref_mut() {
            gql.check()?;
            for (i, c) in GQL_CLIENTS.iter().enumerate() {
                let ok = gql.counters.ok[i].load(Ordering::Relaxed);
                let failed = gql.counters.failed[i].load(Ordering::Relaxed);
                let (ok0, failed0) = gql_before[i];
                println!(
                    "  graphql {:<14} {:<26} answered {:>4}/s  failed {:>3}/s",
                    c.addr.to_string(),
                    c.note,
                    ok - ok0,
                    failed - failed0
                );
                gql_before[i] = (ok, failed);
            }
        }
        if let Some(daemon) = daemon.as_deref()
            && second == BLOCK_AT_SECOND
        {
            daemon.kernel.block(IpAddr::V4(BLOCKED), BLOCK_TTL_SECS)?;
            daemon
                .kernel
                .block(IpAddr::V4(GQL_BLOCKED), BLOCK_TTL_SECS)?;
        }
    }
    Ok(())
}

fn kernel_view(daemon: &mut Daemon) -> Result<KernelView> {
    daemon.check_alive()?;
    Ok(KernelView {
        clients: daemon.kernel.clients()?,
        stats: daemon.kernel.stats()?,
    })
}

fn sleep_until(deadline: Instant, interrupted: &AtomicBool) -> Result<()> {
    loop {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Prints a line during cleanup, where a closed stdout (`| head`) must not
/// panic and cut the cleanup short.
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "demo: {line}");
}

/// Like [`say`], on stderr, for a cleanup step that failed.
fn warn(e: &anyhow::Error) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "demo: cleanup: {e:#}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_demo_interface_and_pins() {
        let config = config();
        assert!(config.contains("interfaces = [\"fedemo0\"]"));
        assert!(config.contains("protected_ports = [8080]"));
        assert!(config.contains("pin_path = \"/sys/fs/bpf/fraiseql-edge-demo\""));
    }
}
