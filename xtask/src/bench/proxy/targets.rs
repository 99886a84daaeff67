//! The targets wrk loads, all on loopback: the upstream itself (direct), and
//! in front of it fraiseql-edge and HAProxy configured alike (HTTP/1.1
//! keep-alive to the client and to the upstream, connection reuse, two
//! worker threads, no access log).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::http;
use super::procs::{Proc, check_interrupted};
use super::subgraph;
use super::upstream::Upstream;

/// The query every request sends.
pub const QUERY: &str = r#"{ user(id: "1") { id name email } }"#;
/// The path the proxies serve the subgraph under.
pub const PROXY_PATH: &str = "/bench/graphql";
/// The upstream's own path (both kinds).
pub const SUBGRAPH_PATH: &str = "/graphql";
/// Worker threads of both proxies: the edge's tokio runtime has two.
pub const PROXY_THREADS: u32 = 2;

pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The JSON body of every request.
pub fn request_body() -> String {
    serde_json::json!({ "query": QUERY }).to_string()
}

/// What a benchmark run sends its load to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Edge,
    Haproxy,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Direct, Kind::Edge, Kind::Haproxy];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Edge => "fraiseql-edge",
            Kind::Haproxy => "HAProxy",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Edge => "edge",
            Kind::Haproxy => "haproxy",
        }
    }
}

/// A target: where to send and what answers there.
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub path: &'static str,
    /// A fragment of every good answer (see [`Upstream::answer`]).
    pub answer: &'static str,
    pub proc: Proc,
}

impl Target {
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }
}

/// The daemon's config: no kernel layer, one subgraph at `/bench/graphql`
/// whose one endpoint is the upstream, the admin port on a free port too.
pub fn edge_config(listen: SocketAddr, admin: SocketAddr, upstream: SocketAddr) -> String {
    let name = subgraph::NAME;
    format!(
        "[kernel]\n\
         enabled = false\n\
         \n\
         [proxy]\n\
         listen = \"{listen}\"\n\
         \n\
         [admin]\n\
         listen = \"{admin}\"\n\
         \n\
         # wrk is one client: the per-identity limit would refuse it.\n\
         [rate_limit]\n\
         requests_per_minute = 0\n\
         \n\
         [[subgraphs]]\n\
         name = \"{name}\"\n\
         endpoints = [\"http://{upstream}{SUBGRAPH_PATH}\"]\n"
    )
}

/// Starts fraiseql-edge in front of `upstream` on a free port and waits for
/// `ready` and a 200.
pub fn start_edge(
    binary: &Path,
    dir: &Path,
    kind: Upstream,
    upstream: SocketAddr,
) -> Result<Target> {
    let addr = free_port()?;
    let admin = free_port()?;
    let config = dir.join(format!("edge-{}.toml", kind.short()));
    let text = edge_config(addr, admin, upstream);
    let target = launch_edge(binary, &config, &text, addr, kind.answer(), &[])?;
    println!("bench: fraiseql-edge ready on {}", target.url());
    Ok(target)
}

/// Writes `text` to `config`, starts fraiseql-edge with it (listening on
/// `addr`) and waits for `ready` and a 200 to the query sent with `headers`.
pub fn launch_edge(
    binary: &Path,
    config: &Path,
    text: &str,
    addr: SocketAddr,
    answer: &'static str,
    headers: &[(&str, &str)],
) -> Result<Target> {
    launch_edge_with(binary, config, text, &[], addr, answer, headers)
}

/// [`launch_edge`] with `extra` command-line arguments (e.g. `--log-json`).
pub fn launch_edge_with(
    binary: &Path,
    config: &Path,
    text: &str,
    extra: &[&str],
    addr: SocketAddr,
    answer: &'static str,
    headers: &[(&str, &str)],
) -> Result<Target> {
    std::fs::write(config, text).with_context(|| format!("writing {}", config.display()))?;
    let mut args = vec![std::ffi::OsStr::new("--config"), config.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let mut proc = Proc::spawn("fraiseql-edge", binary, args)?;
    println!("bench: starting `{}`", proc.describe());
    proc.wait_for_line(
        |l| l.trim_end().ends_with(" ready") || l.contains(r#""message":"ready""#),
        READY_TIMEOUT,
    )?;
    let target = Target {
        kind: Kind::Edge,
        addr,
        path: PROXY_PATH,
        answer,
        proc,
    };
    probe_with(&target, headers)?;
    Ok(target)
}

/// HAProxy doing what the edge does for this route: `/bench/graphql` to the
/// upstream's `/graphql` over reused keep-alive connections, anything else 404.
pub fn haproxy_config(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "global\n\
        \x20   nbthread {PROXY_THREADS}\n\
        \x20   maxconn 4096\n\
        \n\
        defaults\n\
        \x20   mode http\n\
        \x20   option http-keep-alive\n\
        \x20   http-reuse always\n\
        \x20   timeout connect 1s\n\
        \x20   timeout client 30s\n\
        \x20   timeout server 30s\n\
        \x20   timeout http-request 10s\n\
        \x20   timeout http-keep-alive 30s\n\
        \x20   maxconn 4096\n\
        \n\
        frontend bench\n\
        \x20   bind {listen}\n\
        \x20   acl bench_route path {PROXY_PATH}\n\
        \x20   http-request deny deny_status 404 unless bench_route\n\
        \x20   use_backend subgraph if bench_route\n\
        \n\
        backend subgraph\n\
        \x20   http-request set-path {SUBGRAPH_PATH}\n\
        \x20   server bench {upstream} maxconn 100\n"
    )
}

/// Starts HAProxy (foreground, no log) in front of `upstream` on a free port
/// and waits for a 200.
pub fn start_haproxy(dir: &Path, kind: Upstream, upstream: SocketAddr) -> Result<Target> {
    let addr = free_port()?;
    let config = dir.join(format!("haproxy-{}.cfg", kind.short()));
    let text = haproxy_config(addr, upstream);
    let target = launch_haproxy(&config, &text, addr, kind.answer(), &[])?;
    println!("bench: HAProxy ready on {}", target.url());
    Ok(target)
}

/// Writes `text` to `config`, starts HAProxy with it (listening on `addr`)
/// and waits for a 200 to the query sent with `headers`.
pub fn launch_haproxy(
    config: &Path,
    text: &str,
    addr: SocketAddr,
    answer: &'static str,
    headers: &[(&str, &str)],
) -> Result<Target> {
    let binary = which::which("haproxy")
        .context("haproxy is not installed (as root, `cargo xtask setup` installs it)")?;
    std::fs::write(config, text).with_context(|| format!("writing {}", config.display()))?;
    let mut proc = Proc::spawn(
        "haproxy",
        binary,
        [
            std::ffi::OsStr::new("-db"),
            "-f".as_ref(),
            config.as_os_str(),
        ],
    )?;
    println!("bench: starting `{}`", proc.describe());
    wait_listening(&mut proc, "haproxy", addr)?;
    let target = Target {
        kind: Kind::Haproxy,
        addr,
        path: PROXY_PATH,
        answer,
        proc,
    };
    probe_with(&target, headers)?;
    Ok(target)
}

/// Waits until `addr` accepts connections, failing if `proc` exits first.
pub fn wait_listening(proc: &mut Proc, name: &str, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while std::net::TcpStream::connect(addr).is_err() {
        check_interrupted()?;
        proc.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "{name} did not listen on {addr} within {READY_TIMEOUT:?}\n{}",
                proc.tail()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Sends the benchmark's query once, insisting on a 200 with the expected
/// answer in it (retrying while the target warms up, e.g. a pool filling).
pub fn probe(target: &Target) -> Result<()> {
    probe_with(target, &[])
}

/// [`probe`] with extra request headers.
pub fn probe_with(target: &Target, headers: &[(&str, &str)]) -> Result<()> {
    let body = request_body();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        check_interrupted()?;
        let last = match http::request_with(target.addr, "POST", target.path, Some(&body), headers)
        {
            Ok(r) if r.status == 200 && r.body.contains(target.answer) => return Ok(()),
            Ok(r) => format!("HTTP {}: {}", r.status, r.body.trim()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "{} at {} does not answer the query with 200: {last}\n{}",
                target.kind.label(),
                target.url(),
                target.proc.tail()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_route_bench_to_the_upstream() {
        let listen: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let sub: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let admin: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let edge = edge_config(listen, admin, sub);
        assert!(edge.contains("enabled = false"));
        assert!(edge.contains("[admin]\nlisten = \"127.0.0.1:3\"\n"));
        assert!(edge.contains("endpoints = [\"http://127.0.0.1:2/graphql\"]"));
        let ha = haproxy_config(listen, sub);
        assert!(ha.contains("    http-reuse always\n"));
        assert!(ha.contains("    nbthread 2\n"));
        assert!(ha.contains("    http-request set-path /graphql\n"));
        assert!(ha.contains("    server bench 127.0.0.1:2 maxconn 100\n"));
    }

    #[test]
    fn the_body_escapes_the_query() {
        assert_eq!(
            request_body(),
            r#"{"query":"{ user(id: \"1\") { id name email } }"}"#
        );
    }
}
