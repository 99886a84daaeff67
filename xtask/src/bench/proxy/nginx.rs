//! The fixed-response upstream: nginx answering every request on the
//! GraphQL path with one constant GraphQL response, from memory, so that a
//! proxy in front of it — not the upstream — is what runs out of CPU.
//!
//! It runs in the foreground from a directory of its own under
//! `target/bench-proxy/nginx` (config, pid file, temp paths; errors go to
//! stderr, no access log), as the current user, so no system config or
//! service is involved. One process, which is its own worker
//! (`master_process off`): a single event loop answers a constant string far
//! faster than either proxy forwards a request, and a second worker would
//! only take CPU from the proxy and wrk on a small machine. Without a master
//! there is no worker for `--pdeathsig` to miss: a killed xtask leaves no
//! nginx behind (a worker outlives a SIGKILLed master). A second `server`
//! on its own port exposes `stub_status`, whose request count is the
//! upstream's side of the "served at least what wrk counted" check.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::http;
use super::procs::Proc;
use super::targets::{self, Kind, SUBGRAPH_PATH, Target};

/// The body of every answer on the GraphQL path.
pub const RESPONSE: &str = r#"{"data":{"__typename":"Query"}}"#;
/// Where the second server serves `stub_status`.
const STATUS_PATH: &str = "/stats";

/// nginx's configuration for a prefix directory `dir`.
pub fn config(dir: &Path, listen: SocketAddr, status: SocketAddr) -> String {
    let at = |name: &str| quote(&dir.join(name));
    format!(
        "# Written by `cargo xtask bench proxy`.\n\
        master_process off;\n\
        pid {pid};\n\
        error_log stderr warn;\n\
        \n\
        events {{\n\
        \x20   worker_connections 4096;\n\
        }}\n\
        \n\
        http {{\n\
        \x20   access_log off;\n\
        \x20   client_body_temp_path {body};\n\
        \x20   proxy_temp_path {proxy};\n\
        \x20   fastcgi_temp_path {fastcgi};\n\
        \x20   uwsgi_temp_path {uwsgi};\n\
        \x20   scgi_temp_path {scgi};\n\
        \x20   # Above the edge's pool idle timeout (90 s), so a pooled connection\n\
        \x20   # is never closed under a request; no request limit per connection\n\
        \x20   # (the default of 1000 would make both proxies reconnect).\n\
        \x20   keepalive_timeout 120s;\n\
        \x20   keepalive_requests 1000000000;\n\
        \n\
        \x20   server {{\n\
        \x20       listen {listen};\n\
        \x20       location = {SUBGRAPH_PATH} {{\n\
        \x20           default_type application/json;\n\
        \x20           return 200 '{RESPONSE}';\n\
        \x20       }}\n\
        \x20       location / {{\n\
        \x20           return 404;\n\
        \x20       }}\n\
        \x20   }}\n\
        \n\
        \x20   server {{\n\
        \x20       listen {status};\n\
        \x20       location = {STATUS_PATH} {{\n\
        \x20           stub_status;\n\
        \x20       }}\n\
        \x20   }}\n\
        }}\n",
        pid = at("nginx.pid"),
        body = at("tmp/body"),
        proxy = at("tmp/proxy"),
        fastcgi = at("tmp/fastcgi"),
        uwsgi = at("tmp/uwsgi"),
        scgi = at("tmp/scgi"),
    )
}

/// A path as an nginx string: double-quoted, `"` and `\` escaped.
fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Starts nginx in the foreground on free loopback ports, waits for a 200
/// with [`RESPONSE`], and returns it with the address of `stub_status`.
pub fn start(dir: &Path) -> Result<(Target, SocketAddr)> {
    let binary = which::which("nginx")
        .context("nginx is not installed (as root, `cargo xtask setup` installs it)")?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp"))
        .with_context(|| format!("creating {}", prefix.display()))?;
    let addr = targets::free_port()?;
    let status = targets::free_port()?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, config(&prefix, addr, status))
        .with_context(|| format!("writing {}", conf.display()))?;
    let mut args: Vec<std::ffi::OsString> = vec!["-p".into(), prefix.clone().into_os_string()];
    args.extend(["-c".into(), conf.into_os_string()]);
    // The error log before the config is read (-e) and the foreground (-g).
    args.extend([
        "-e".into(),
        "stderr".into(),
        "-g".into(),
        "daemon off;".into(),
    ]);
    let mut proc = Proc::spawn("nginx", binary, &args)?;
    println!("bench: starting `{}`", proc.describe());
    targets::wait_listening(&mut proc, "nginx", addr)?;
    let target = Target {
        kind: Kind::Direct,
        addr,
        path: SUBGRAPH_PATH,
        answer: RESPONSE,
        proc,
    };
    targets::probe(&target)?;
    println!("bench: nginx ready on {}", target.url());
    Ok((target, status))
}

/// Requests nginx has answered so far (all servers, so this includes the
/// edge's health checks and the `stub_status` requests themselves).
pub fn served(status: SocketAddr) -> Result<u64> {
    let r = http::request(status, "GET", STATUS_PATH, None)?;
    if r.status != 200 {
        bail!("GET http://{status}{STATUS_PATH}: HTTP {}", r.status);
    }
    parse_status(&r.body).with_context(|| format!("reading nginx's stub_status: {:?}", r.body))
}

/// The third number on the line after `server accepts handled requests`.
fn parse_status(body: &str) -> Result<u64> {
    let mut lines = body.lines();
    lines
        .find(|l| {
            l.trim_start()
                .starts_with("server accepts handled requests")
        })
        .context("no counters header")?;
    let counters = lines.next().context("no counters line")?;
    let requests = counters
        .split_whitespace()
        .nth(2)
        .context("no requests counter")?;
    requests
        .parse()
        .with_context(|| format!("bad requests counter {requests:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_answers_the_graphql_path_with_the_fixed_response() {
        let listen: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let status: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let conf = config(Path::new("/t/bench-proxy/nginx"), listen, status);
        assert!(conf.contains("master_process off;\n"));
        assert!(conf.contains("pid \"/t/bench-proxy/nginx/nginx.pid\";\n"));
        assert!(conf.contains("    access_log off;\n"));
        assert!(conf.contains("    keepalive_requests 1000000000;\n"));
        assert!(conf.contains(
            "        listen 127.0.0.1:1;\n        location = /graphql {\n            default_type application/json;\n            return 200 '{\"data\":{\"__typename\":\"Query\"}}';\n"
        ));
        assert!(conf.contains(
            "        listen 127.0.0.1:2;\n        location = /stats {\n            stub_status;\n"
        ));
        // Every block closes (the response's own braces balance too).
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn quotes_paths() {
        assert_eq!(quote(Path::new("/a b/\"c\"")), r#""/a b/\"c\"""#);
    }

    #[test]
    fn reads_the_request_counter() {
        let body = "Active connections: 1 \nserver accepts handled requests\n 3 3 17 \nReading: 0 Writing: 1 Waiting: 0 \n";
        assert_eq!(parse_status(body).unwrap(), 17);
        assert!(parse_status("Active connections: 1\n").is_err());
    }
}
