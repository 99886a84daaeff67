//! Real GraphQL subgraphs behind a real edge: `demo-subgraph` processes
//! ([`DemoSubgraph`]: start, counters, faults, crash, restart on the same
//! port) and the `fraiseql-edge` daemon proxying to them ([`Edge`], started
//! from a [`ProxySetup`] with the kernel layer off — or a `[kernel]` section
//! of the test's own — and every listener on port 0).
//!
//! The demo-subgraph binary is built like the daemon's (see
//! [`crate::daemon`]): the first [`demo_subgraph_bin`] call of a test
//! process runs `cargo build -p demo-subgraph` with the test executable's
//! profile and target directory; `DEMO_SUBGRAPH_BIN=/path` skips the build.

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    time::Duration,
};

use serde_json::Value;

use crate::{
    daemon::{Daemon, workspace_bin},
    graphql::Client,
};

/// How long a demo subgraph may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The demo-subgraph binary, built on first use (`DEMO_SUBGRAPH_BIN`
/// points at a prebuilt one).
pub fn demo_subgraph_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("demo-subgraph", "DEMO_SUBGRAPH_BIN"))
}

/// Start-up options of a demo subgraph.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    /// GraphQL port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Delay before every GraphQL answer, health checks included.
    pub latency_ms: u64,
}

/// The counters of `GET /stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubgraphStats {
    /// GraphQL requests received (health checks included).
    pub requests: u64,
    /// `{ __typename }` requests.
    pub health_checks: u64,
    /// Mutation root fields executed.
    pub mutations: u64,
    /// Connections accepted on the GraphQL port.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Highest `connections_open` since start or reset.
    pub max_connections_open: u64,
    /// Requests in progress now.
    pub in_flight: u64,
    /// Highest `in_flight` since start or reset.
    pub max_in_flight: u64,
}

impl SubgraphStats {
    /// Requests other than health checks: the traffic the edge routed here.
    pub fn graphql(&self) -> u64 {
        self.requests - self.health_checks
    }
}

/// A running `demo-subgraph`; dropping it kills it.
pub struct DemoSubgraph {
    child: Child,
    name: String,
    /// The GraphQL address.
    pub addr: SocketAddr,
    /// The admin address (`/stats`, `/faults`, `/crash`).
    pub admin: SocketAddr,
    log: Arc<Mutex<String>>,
    client: Client,
}

impl DemoSubgraph {
    /// Starts a healthy subgraph on a free port.
    pub fn start(name: &str) -> Self {
        Self::start_with(name, &DemoOptions::default())
    }

    /// Starts a subgraph with `opts`. A fixed port (a restart after a crash)
    /// is retried for a few seconds while the old socket lingers.
    pub fn start_with(name: &str, opts: &DemoOptions) -> Self {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(name, opts) {
                Ok(sg) => return sg,
                Err(log) if opts.port != 0 && attempt < 20 => {
                    eprintln!("demo-subgraph {name} did not start (retrying): {log}");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(log) => panic!("demo-subgraph {name} did not start; stderr:\n{log}"),
            }
        }
    }

    fn try_start(name: &str, opts: &DemoOptions) -> Result<Self, String> {
        let mut child = Command::new(demo_subgraph_bin())
            .args(["--listen", &format!("127.0.0.1:{}", opts.port)])
            .args(["--admin-listen", "127.0.0.1:0", "--name", name])
            .args(["--latency-ms", &opts.latency_ms.to_string()])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning demo-subgraph");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = BufReader::new(stderr).read_to_string(&mut text);
                log.lock().expect("log lock").push_str(&text);
            });
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let Ok(line) = rx.recv_timeout(READY_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            return Err(log.lock().expect("log lock").clone());
        };
        let (addr, admin) =
            parse_ready(&line).unwrap_or_else(|| panic!("unexpected ready line: {line}"));
        Ok(Self {
            child,
            name: name.to_string(),
            addr,
            admin,
            log,
            client: Client::new(Duration::from_secs(10)),
        })
    }

    /// Starts a new process on this one's GraphQL port (after a crash).
    pub fn restart(&self, opts: &DemoOptions) -> Self {
        let opts = DemoOptions {
            port: self.addr.port(),
            ..opts.clone()
        };
        Self::start_with(&self.name, &opts)
    }

    /// `http://127.0.0.1:PORT/graphql`.
    pub fn url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// What the process wrote to stderr (complete once it exited).
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET /stats`.
    pub fn stats(&self) -> SubgraphStats {
        let v = self.client.get(&self.admin_url("/stats"), &[]).json();
        let n = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("/stats has no `{k}`: {v}"))
        };
        SubgraphStats {
            requests: n("requests"),
            health_checks: n("health_checks"),
            mutations: n("mutations"),
            connections_accepted: n("connections_accepted"),
            connections_open: n("connections_open"),
            max_connections_open: n("max_connections_open"),
            in_flight: n("in_flight"),
            max_in_flight: n("max_in_flight"),
        }
    }

    /// `GET /last-request`: how many GraphQL requests (health checks aside)
    /// it has seen, and the last one's headers in order.
    pub fn last_request(&self) -> (u64, Vec<(String, String)>) {
        let v = self
            .client
            .get(&self.admin_url("/last-request"), &[])
            .json();
        let headers = v["headers"]
            .as_array()
            .unwrap_or_else(|| panic!("/last-request has no `headers`: {v}"))
            .iter()
            .map(|pair| {
                let s = |i: usize| pair[i].as_str().unwrap_or_default().to_string();
                (s(0), s(1))
            })
            .collect();
        (v["seen"].as_u64().unwrap_or_default(), headers)
    }

    /// `POST /stats/reset`: counters to zero, high-water marks to the gauges.
    pub fn reset_stats(&self) {
        let reply = self.client.post_raw(&self.admin_url("/stats/reset"), b"{}");
        assert_eq!(reply.status, 200, "stats reset: {}", reply.text());
    }

    /// `POST /faults` with a patch such as `{"error_rate": 1.0}`.
    pub fn faults(&self, patch: &Value) {
        let reply = self.client.post_json(&self.admin_url("/faults"), patch);
        assert_eq!(reply.status, 200, "faults {patch}: {}", reply.text());
    }

    /// `POST /crash`, then waits for the process to be gone.
    pub fn crash(&mut self) {
        let _ = self.client.try_post(&self.admin_url("/crash"), None, b"");
        let status = self.child.wait().expect("waiting for the crashed subgraph");
        assert!(!status.success(), "crash exited with {status}");
    }
}

impl Drop for DemoSubgraph {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `demo-subgraph NAME listening on ADDR (admin ADDR)`.
fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.split_once(" listening on ")?.1;
    let (graphql, admin) = rest.split_once(" (admin ")?;
    Some((
        graphql.trim().parse().ok()?,
        admin.trim().trim_end_matches(')').parse().ok()?,
    ))
}

/// One `[[subgraphs]]` entry.
#[derive(Clone, Debug)]
pub struct SubgraphSpec {
    name: String,
    endpoints: Vec<String>,
    tables: Vec<(&'static str, String)>,
}

impl SubgraphSpec {
    /// A subgraph served by `endpoints` (URLs), default route `/<name>/graphql`.
    pub fn new<'a>(name: &str, endpoints: impl IntoIterator<Item = &'a DemoSubgraph>) -> Self {
        Self {
            name: name.to_string(),
            endpoints: endpoints.into_iter().map(DemoSubgraph::url).collect(),
            tables: Vec::new(),
        }
    }

    /// Sets a sub-table as inline TOML: `.table("pool", "min_idle = 5, max = 20")`.
    pub fn table(mut self, table: &'static str, keys: &str) -> Self {
        self.tables.push((table, keys.to_string()));
        self
    }

    fn to_toml(&self) -> String {
        let mut s = format!(
            "\n[[subgraphs]]\nname = {:?}\nendpoints = {:?}\n",
            self.name, self.endpoints
        );
        for (table, keys) in &self.tables {
            s += &format!("{table} = {{ {keys} }}\n");
        }
        s
    }
}

/// The edge's configuration: kernel layer off, listeners on loopback port 0.
#[derive(Clone, Debug, Default)]
pub struct ProxySetup {
    /// `proxy.max_body_bytes` (daemon default when `None`).
    pub max_body_bytes: Option<usize>,
    /// The subgraphs.
    pub subgraphs: Vec<SubgraphSpec>,
    /// More `[proxy]` keys, one `key = value` line each.
    pub proxy_keys: Vec<String>,
    /// The `[rate_limit]` section's keys; `None`: the per-identity limit
    /// off, so that tests of other things can send as fast as they need.
    pub rate_limit: Option<String>,
    /// More top-level tables, as TOML text (`[authorization]` …).
    pub sections: Vec<String>,
    /// The `[control]` section; `None`: [`crate::control::section`].
    pub control: Option<String>,
}

impl ProxySetup {
    /// One subgraph, daemon defaults otherwise.
    pub fn one(subgraph: SubgraphSpec) -> Self {
        Self {
            subgraphs: vec![subgraph],
            ..Self::default()
        }
    }

    /// Sets the `[rate_limit]` section's keys (one `key = value` per line;
    /// an empty string keeps every default).
    pub fn rate_limit(mut self, keys: &str) -> Self {
        self.rate_limit = Some(keys.to_string());
        self
    }

    /// Replaces the `[control]` section (e.g. to add a unix socket).
    pub fn control(mut self, toml: &str) -> Self {
        self.control = Some(toml.to_string());
        self
    }

    /// Adds top-level tables: `.section("[authorization]\nmode = \"filter\"")`.
    pub fn section(mut self, toml: &str) -> Self {
        self.sections.push(toml.to_string());
        self
    }

    /// Adds a `[proxy]` key: `.proxy("trusted_proxies = [\"127.0.0.0/8\"]")`.
    pub fn proxy(mut self, line: &str) -> Self {
        self.proxy_keys.push(line.to_string());
        self
    }

    /// The configuration file's text.
    pub fn to_toml(&self) -> String {
        self.to_toml_with_kernel("enabled = false\n")
    }

    /// The configuration file's text with `kernel` as the keys of its
    /// `[kernel]` section (e.g. limits and a pin path where the kernel layer
    /// cannot pin, to run the daemon degraded).
    pub fn to_toml_with_kernel(&self, kernel: &str) -> String {
        let mut s = format!("[kernel]\n{kernel}\n[proxy]\nlisten = \"127.0.0.1:0\"\n");
        if let Some(max) = self.max_body_bytes {
            s += &format!("max_body_bytes = {max}\n");
        }
        for line in &self.proxy_keys {
            s += line;
            s += "\n";
        }
        s += "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
        let control = self.control.clone().unwrap_or_else(crate::control::section);
        s += &format!("\n{control}");
        let rate_limit = self
            .rate_limit
            .as_deref()
            .unwrap_or("requests_per_minute = 0");
        s += &format!("\n[rate_limit]\n{rate_limit}\n");
        for section in &self.sections {
            s += &format!("\n{section}\n");
        }
        for sg in &self.subgraphs {
            s += &sg.to_toml();
        }
        s
    }
}

/// A running edge daemon and the addresses it bound.
pub struct Edge {
    /// The process.
    pub daemon: Daemon,
    /// The GraphQL listener.
    pub graphql: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The control API's TCP listener, when the configuration has one.
    pub control: Option<SocketAddr>,
}

impl Edge {
    /// Starts the daemon with `setup` and waits for `ready`.
    pub fn start(setup: &ProxySetup) -> Self {
        Self::start_toml(&setup.to_toml())
    }

    /// Starts the daemon with the configuration `toml` (which must have
    /// `[proxy]` and `[admin]`) and waits for `ready`.
    pub fn start_toml(toml: &str) -> Self {
        Self::start_toml_with(toml, &[])
    }

    /// [`Self::start_toml`] with extra command-line arguments
    /// (`--log-json`).
    pub fn start_toml_with(toml: &str, args: &[&str]) -> Self {
        let mut daemon = Daemon::spawn(toml, args);
        daemon.wait_ready();
        let addr_of = |what: &str| -> SocketAddr {
            logged_addr(&daemon, what).unwrap_or_else(|| {
                panic!(
                    "no `{what}` address in the log:\n{}\nconfig:\n{toml}",
                    daemon.log()
                )
            })
        };
        Self {
            graphql: addr_of("GraphQL listener"),
            admin: addr_of("admin listener"),
            control: logged_addr(&daemon, "control API"),
            daemon,
        }
    }

    /// `http://<graphql listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.graphql)
    }

    /// The default route of `subgraph`: `http://…/<subgraph>/graphql`.
    pub fn route(&self, subgraph: &str) -> String {
        self.url(&format!("/{subgraph}/graphql"))
    }

    /// A client of the control API.
    pub fn control(&self) -> crate::control::Control {
        crate::control::Control::connect(
            self.control
                .expect("the configuration has a [control] section with listen"),
        )
    }

    /// `http://<admin listener><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

/// The `addr=` of the first log line of `daemon` that mentions `what`
/// (`"GraphQL listener"`, `"admin listener"`); in a `--log-json` record,
/// its `addr` field.
pub fn logged_addr(daemon: &Daemon, what: &str) -> Option<SocketAddr> {
    strip_ansi(&daemon.log())
        .lines()
        .filter(|l| l.contains(what))
        .find_map(|l| {
            if let Ok(record) = serde_json::from_str::<Value>(l) {
                return record["fields"]["addr"].as_str()?.parse().ok();
            }
            l.split_once("addr=")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

/// Removes ANSI colour escapes (`ESC [ … letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_and_ansi() {
        let (g, a) =
            parse_ready("demo-subgraph a listening on 127.0.0.1:4001 (admin 127.0.0.1:5001)")
                .unwrap();
        assert_eq!((g.port(), a.port()), (4001, 5001));
        assert_eq!(
            strip_ansi("\u{1b}[32m INFO\u{1b}[0m x \u{1b}[3maddr\u{1b}[0m=1"),
            " INFO x addr=1"
        );
    }
}
