//! `edgectl` end to end: the real CLI binary against a real `fraiseql-edge`
//! (control socket and tokens in a temporary directory) in front of a real
//! `demo-subgraph`. Every subcommand runs once as text and is checked as
//! `--json`, and each exit code is provoked the way an operator would.
//!
//! Most tests run the daemon degraded (a `[kernel]` section whose pin path
//! is not on bpffs): the kernel RPCs are then served by the user-space
//! enforcement, so they need no privileges and never skip. The last test
//! drives a running kernel layer (root, a network namespace).

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    process::Child,
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use fraiseql_edge::kernel::KernelMaps;
use fraiseql_edge_tests::{
    PinDir,
    clients::flood_for,
    control::READ_TOKEN,
    daemon::EdgeConfig,
    edgectl::{ControlFiles, Edgectl},
    graphql::{Client, assert_refused},
    kernel_tests_enabled,
    netns::NetNs,
    servers::UdpCounter,
    subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
    wait::{eventually, settled},
};
use serde_json::{Value, json};

use crate::proxy_e2e::serial;

const QUERY: &str = "{ users(first: 2) { id name } }";
/// The exit codes `edgectl --help` documents.
const UNREACHABLE: i32 = 3;
const AUTH: i32 = 4;
const INVALID: i32 = 5;
const NOT_FOUND: i32 = 6;
const PRECONDITION: i32 = 7;

/// A daemon with its control API on, the subgraph behind it, and the
/// files the CLI points at.
struct Controlled {
    edge: Edge,
    files: ControlFiles,
    subgraph: DemoSubgraph,
    _pins: tempfile::TempDir,
}

impl Controlled {
    /// Degraded: the kernel limits are enforced in user space.
    fn degraded() -> Self {
        Self::start(true)
    }

    /// `kernel.enabled = false`.
    fn without_kernel() -> Self {
        Self::start(false)
    }

    /// `kernel`: a `[kernel]` section that degrades, else
    /// `kernel.enabled = false`. The control API is on a unix socket and a
    /// loopback port.
    fn start(kernel: bool) -> Self {
        let subgraph = DemoSubgraph::start("users");
        let pins = tempfile::tempdir().expect("temp dir");
        let files = ControlFiles::new();
        let kernel = if kernel {
            // Not bpffs: the kernel layer cannot pin here and the daemon degrades.
            format!(
                "interfaces = [\"lo\"]\nprotected_ports = [8080]\nrate = 100000\nburst = 1000\n\
                 pin_path = {:?}\n",
                pins.path().join("pins")
            )
        } else {
            "enabled = false\n".to_string()
        };
        let setup = ProxySetup::one(
            SubgraphSpec::new("users", [&subgraph])
                .table("health", "interval_ms = 60000, timeout_ms = 5000"),
        )
        .rate_limit("requests_per_minute = 600\nburst = 50")
        .section("[slow_queries]\nthreshold_ms = 200")
        .control(&files.section());
        let edge = Edge::start_toml(&setup.to_toml_with_kernel(&kernel));
        assert!(
            eventually(Duration::from_secs(10), || files.socket().exists()),
            "no control socket at {}; stderr:\n{}",
            files.socket().display(),
            edge.daemon.log()
        );
        Self {
            edge,
            files,
            subgraph,
            _pins: pins,
        }
    }

    /// `edgectl` with the admin token.
    fn admin(&self) -> Edgectl {
        Edgectl::socket(&self.files.socket(), &self.files.admin_token())
    }

    /// `edgectl` with the read-only token.
    fn reader(&self) -> Edgectl {
        Edgectl::socket(&self.files.socket(), &self.files.read_token())
    }

    /// `edgectl` with a token file holding `token`.
    fn with_token(&self, token: &str) -> Edgectl {
        let path = self.files.path("other.token");
        std::fs::write(&path, token).expect("writing a token file");
        Edgectl::socket(&self.files.socket(), &path)
    }
}

/// A TCP port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    l.local_addr().expect("local address").port()
}

/// The entry of `list` whose `key` is `value`.
#[track_caller]
fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no entry with {key} = {value:?} in {list}"))
}

#[test]
fn status_over_the_socket_and_over_tcp() {
    let _serial = serial();
    let c = Controlled::degraded();
    let listen = c
        .edge
        .control
        .expect("the control API's TCP listener")
        .to_string();

    let text = c.admin().ok(&["status"]);
    assert!(
        text.contains("ready:") && text.contains("user_space"),
        "{text}"
    );
    let status = c.reader().json(&["status"]);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"), "{status}");
    assert_eq!(status["enforcement"], "user_space", "{status}");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["not_ready"], json!([]), "{status}");
    assert_eq!(status["subgraphs"], 1, "{status}");
    assert!(status["uptime_seconds"].is_u64(), "{status}");
    assert!(
        status["config_path"]
            .as_str()
            .is_some_and(|p| p.ends_with(".toml")),
        "{status}"
    );

    // The same daemon over TCP; --addr wins over --socket.
    let tcp = Edgectl::socket(&c.files.path("no.sock"), &c.files.admin_token())
        .with(&["--addr", &listen]);
    assert_eq!(tcp.json(&["status"])["version"], status["version"]);
}

#[test]
fn connection_and_token_failures_have_their_exit_codes() {
    let _serial = serial();
    let c = Controlled::degraded();
    let files = &c.files;

    // Unreachable: the message names what was tried.
    let missing = files.path("missing.sock");
    let run = Edgectl::socket(&missing, &files.admin_token()).fails(
        &["status"],
        UNREACHABLE,
        &missing.display().to_string(),
    );
    assert!(run.stdout.is_empty());
    let closed = format!("127.0.0.1:{}", free_port());
    Edgectl::bare()
        .with(&["--addr", &closed, "--token", "x"])
        .fails(&["status"], UNREACHABLE, &closed);

    // Authentication: no token, an unreadable file, an empty one, a wrong one.
    Edgectl::bare()
        .with(&["--socket", files.socket().to_str().expect("UTF-8")])
        .fails(&["status"], AUTH, "no token");
    Edgectl::socket(&files.socket(), &files.path("nope.token")).fails(
        &["status"],
        AUTH,
        "cannot read token file",
    );
    c.with_token("  \n").fails(&["status"], AUTH, "is empty");
    c.with_token("not-the-token")
        .fails(&["status"], AUTH, "authentication failed");
    c.admin()
        .with(&["--token", "not-the-token"])
        .fails(&["blocks"], AUTH, "authentication failed");
    // --token wins over --token-file.
    let via_flag =
        Edgectl::socket(&files.socket(), &files.path("nope.token")).with(&["--token", READ_TOKEN]);
    assert_eq!(via_flag.json(&["blocks"])["blocks"], json!([]));

    // Permission: the read-only token on every mutating call.
    let reader = c.reader();
    for args in [
        &["block", "192.0.2.7"][..],
        &["unblock", "192.0.2.7"],
        &["limits", "set", "rate", "--rpm", "1"],
        &["limits", "set", "kernel", "--rate", "1"],
        &["overrides", "add", "10.0.0.0/8", "--action", "deny"],
        &["overrides", "remove", "10.0.0.0/8"],
        &["breaker", "users", "open"],
        &["reload"],
    ] {
        reader.fails(args, AUTH, "permission denied");
    }
    assert_eq!(
        c.admin().json(&["blocks"])["blocks"],
        json!([]),
        "nothing was blocked"
    );

    // Values refused before connecting: no daemon needed.
    let nowhere = Edgectl::socket(&missing, &files.admin_token());
    nowhere.fails(
        &["overrides", "add", "10.0.0.300/8", "--action", "deny"],
        INVALID,
        "not a CIDR",
    );
    nowhere.fails(
        &["overrides", "remove", "10.0.0.1/8"],
        INVALID,
        "did you mean 10.0.0.0/8",
    );
    nowhere.fails(&["block", "10.0.0.0/8"], INVALID, "not an IP address");
    nowhere.fails(&["block", "192.0.2.7", "--ttl", "0"], INVALID, "--ttl 0");
    nowhere.fails(
        &["--addr", "localhost", "status"],
        INVALID,
        "--addr `localhost`",
    );
    // A usage mistake is clap's 2.
    assert_eq!(nowhere.run(&["limits", "set", "rate", "--inherit"]).code, 2);
}

#[test]
fn blocks_are_set_listed_and_lifted() {
    let _serial = serial();
    let c = Controlled::degraded();
    let ctl = c.admin();

    let text = ctl.ok(&["block", "192.0.2.7", "--ttl", "600", "--reason", "e2e test"]);
    assert!(text.contains("blocked 192.0.2.7 for 10m"), "{text}");
    let blocked = ctl.json(&["block", "2001:db8::5"]);
    assert_eq!(
        blocked["blocked"]["expires_in_seconds"],
        Value::Null,
        "{blocked}"
    );
    assert_eq!(blocked["blocked"]["enforced_by"], "user_space", "{blocked}");

    let list = ctl.json(&["blocks"]);
    let entry = find(&list["blocks"], "address", "192.0.2.7");
    let left = entry["expires_in_seconds"].as_u64().expect("a TTL");
    assert!((590..=600).contains(&left), "{entry}");
    assert_eq!(entry["enforced_by"], "user_space");
    let text = c.reader().ok(&["blocks"]);
    assert!(
        text.starts_with("ADDRESS") && text.contains("192.0.2.7") && text.contains("never"),
        "{text}"
    );

    let unblocked = ctl.json(&["unblock", "192.0.2.7"]);
    assert_eq!(unblocked, json!({"address": "192.0.2.7", "removed": true}));
    let list = ctl.json(&["blocks"]);
    assert_eq!(list["blocks"].as_array().map(Vec::len), Some(1), "{list}");
    ctl.fails(&["unblock", "192.0.2.7"], NOT_FOUND, "was not blocked");
    ctl.ok(&["unblock", "2001:db8::5"]);
}

#[test]
fn limits_are_changed_and_a_reload_restores_the_file() {
    let _serial = serial();
    let c = Controlled::degraded();
    let ctl = c.admin();

    let limits = c.reader().json(&["limits", "get"]);
    assert_eq!(
        limits["rate_limit"],
        json!({"requests_per_minute": 600, "burst": 50, "cluster_wide": false})
    );
    assert_eq!(limits["kernel"]["rate"], 100_000, "{limits}");
    assert_eq!(
        limits["kernel"]["protected_ports"],
        json!([8080]),
        "{limits}"
    );
    let text = ctl.ok(&["limits", "get"]);
    assert!(
        text.contains("600 requests/min") && text.contains("100,000 packets/s"),
        "{text}"
    );

    let set = ctl.json(&["limits", "set", "rate", "--rpm", "120"]);
    assert_eq!(set["rate_limit"]["requests_per_minute"], 120, "{set}");
    let limits = ctl.json(&["limits", "get"]);
    assert_eq!(
        limits["rate_limit"],
        json!({"requests_per_minute": 120, "burst": 50, "cluster_wide": false})
    );

    // A subgraph's own limit, then back to the global one.
    ctl.ok(&[
        "limits",
        "set",
        "rate",
        "--subgraph",
        "users",
        "--rpm",
        "30",
        "--burst",
        "5",
    ]);
    let users = find(
        &ctl.json(&["limits", "get"])["subgraphs"],
        "subgraph",
        "users",
    )
    .clone();
    assert_eq!(
        (
            users["requests_per_minute"].clone(),
            users["burst"].clone(),
            users["overridden"].clone()
        ),
        (json!(30), json!(5), json!(true)),
        "{users}"
    );
    ctl.ok(&["limits", "set", "rate", "--subgraph", "users", "--inherit"]);
    let users = find(
        &ctl.json(&["limits", "get"])["subgraphs"],
        "subgraph",
        "users",
    )
    .clone();
    assert_eq!(users["overridden"], false, "{users}");
    assert_eq!(users["requests_per_minute"], 120, "{users}");

    ctl.fails(
        &["limits", "set", "rate", "--subgraph", "nope", "--rpm", "1"],
        NOT_FOUND,
        "nope",
    );
    // Refused by the daemon, not the CLI: a limit without a burst.
    ctl.fails(
        &["limits", "set", "rate", "--rpm", "60", "--burst", "0"],
        INVALID,
        "burst",
    );

    let kernel = ctl.json(&[
        "limits",
        "set",
        "kernel",
        "--rate",
        "500",
        "--max-conns",
        "7",
    ]);
    assert_eq!(kernel["kernel"]["rate"], 500, "{kernel}");
    assert_eq!(
        kernel["kernel"]["burst"], 1000,
        "unset fields keep their value: {kernel}"
    );
    assert_eq!(kernel["kernel"]["max_conns"], 7, "{kernel}");

    let reload = ctl.json(&["reload"]);
    assert!(
        reload["applied"].is_array() && reload["needs_restart"].is_array(),
        "{reload}"
    );
    let limits = ctl.json(&["limits", "get"]);
    assert_eq!(
        limits["rate_limit"],
        json!({"requests_per_minute": 600, "burst": 50, "cluster_wide": false}),
        "a reload goes back to the file"
    );
    assert_eq!(limits["kernel"]["rate"], 100_000, "{limits}");
    let text = ctl.ok(&["reload"]);
    assert!(text.starts_with("reloaded"), "{text}");
}

#[test]
fn overrides_are_added_listed_and_removed() {
    let _serial = serial();
    let c = Controlled::degraded();
    let ctl = c.admin();

    let added = ctl.json(&["overrides", "add", "10.0.0.0/8", "--action", "deny"]);
    assert_eq!(added["added"]["cidr"], "10.0.0.0/8", "{added}");
    assert_eq!(added["added"]["action"], "deny", "{added}");
    ctl.ok(&[
        "overrides",
        "add",
        "2001:DB8::/32",
        "--action",
        "limit",
        "--rate",
        "10",
        "--burst",
        "20",
        "--max-conns",
        "3",
    ]);
    let list = c.reader().json(&["overrides", "list"]);
    let limit = find(&list["overrides"], "cidr", "2001:db8::/32");
    assert_eq!(
        (
            limit["action"].clone(),
            limit["rate"].clone(),
            limit["burst"].clone(),
            limit["max_conns"].clone()
        ),
        (json!("limit"), json!(10), json!(20), json!(3)),
        "{list}"
    );
    find(&list["overrides"], "cidr", "10.0.0.0/8");
    let text = ctl.ok(&["overrides", "list"]);
    assert!(
        text.starts_with("CIDR") && text.contains("2001:db8::/32"),
        "{text}"
    );

    let removed = ctl.json(&["overrides", "remove", "10.0.0.0/8"]);
    assert_eq!(removed["removed"]["cidr"], "10.0.0.0/8", "{removed}");
    let list = ctl.json(&["overrides", "list"]);
    assert_eq!(
        list["overrides"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    ctl.fails(
        &["overrides", "remove", "10.0.0.0/8"],
        NOT_FOUND,
        "10.0.0.0/8",
    );
    ctl.fails(
        &["overrides", "add", "10.0.0.0/33", "--action", "allow"],
        INVALID,
        "not a CIDR",
    );
}

#[test]
fn breakers_are_forced_and_released() {
    let _serial = serial();
    let c = Controlled::degraded();
    let ctl = c.admin();
    let route = c.edge.route("users");
    let client = Client::default();

    let list = c.reader().json(&["subgraphs"]);
    let users = find(&list["subgraphs"], "name", "users");
    assert_eq!(users["breaker"], "closed", "{users}");
    assert_eq!(users["breaker_forced"], Value::Null, "{users}");
    assert_eq!(users["endpoints"][0]["url"], c.subgraph.url(), "{users}");
    assert!(
        users["endpoints"][0]["pool"]["max"]
            .as_u64()
            .is_some_and(|m| m > 0),
        "{users}"
    );
    let text = ctl.ok(&["subgraphs"]);
    assert!(
        text.starts_with("SUBGRAPH") && text.contains(&c.subgraph.url()),
        "{text}"
    );

    let forced = ctl.json(&["breaker", "users", "open"]);
    assert_eq!(
        (forced["breaker"].clone(), forced["breaker_forced"].clone()),
        (json!("open"), json!("open"))
    );
    let users = find(&ctl.json(&["subgraphs"])["subgraphs"], "name", "users").clone();
    assert_eq!(users["breaker"], "open", "{users}");
    assert_refused(&client.query(&route, QUERY), 503, "CIRCUIT_OPEN");

    let auto = ctl.json(&["breaker", "users", "auto"]);
    assert_eq!(auto["breaker_forced"], Value::Null, "{auto}");
    ctl.ok(&["breaker", "users", "reset"]);
    let users = find(&ctl.json(&["subgraphs"])["subgraphs"], "name", "users").clone();
    assert_eq!(users["breaker"], "closed", "{users}");
    assert_eq!(client.query(&route, QUERY).status, 200);

    ctl.fails(&["breaker", "nope", "open"], NOT_FOUND, "nope");
}

/// `child`'s first line of stdout, as it arrives.
fn first_line(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx
}

/// Blocks `<net>.1`, `<net>.2`, … until `watch` prints a line (its stream
/// may start after the first block); that line.
fn block_until_seen(ctl: &Edgectl, watch: &mut Child, net: &str) -> String {
    let line = first_line(watch);
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in 1..=250u8 {
        let address = format!("{net}.{i}");
        ctl.ok(&["block", &address, "--ttl", "60", "--reason", "watch test"]);
        if let Ok(line) = line.recv_timeout(Duration::from_millis(200)) {
            return line;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    panic!("`edgectl watch` printed nothing");
}

#[test]
fn watch_streams_events_until_count_ctrl_c_or_a_lost_daemon() {
    let _serial = serial();
    let mut c = Controlled::degraded();
    let ctl = c.admin();

    // JSON: one object per line; only the kinds asked for.
    let mut child = c
        .reader()
        .spawn(&["--json", "watch", "--kind", "block", "--count", "1"]);
    let line = block_until_seen(&ctl, &mut child, "198.51.100");
    let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(event["kind"], "block", "{event}");
    assert!(
        event["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("198.51.100.")),
        "{event}"
    );
    assert!(
        event["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("operator")),
        "{event}"
    );
    assert!(
        event["seq"].is_u64() && event["unix_ms"].is_u64(),
        "{event}"
    );
    assert!(event["attributes"].is_object(), "{event}");
    let status = child.wait().expect("waiting for edgectl watch");
    assert_eq!(status.code(), Some(0), "--count 1 ends the stream");

    // Text; Ctrl-C (SIGINT) ends it with 0.
    let mut child = c.reader().spawn(&["watch", "--kind", "block"]);
    let line = block_until_seen(&ctl, &mut child, "203.0.113");
    assert!(
        line.contains("block") && line.contains("203.0.113."),
        "{line}"
    );
    assert!(line.ends_with('\n') && !line.starts_with('{'), "{line}");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = child.wait().expect("waiting for edgectl watch");
    assert_eq!(status.code(), Some(0), "Ctrl-C is a normal end");

    // The daemon dies under a watcher: exit 3, as for any lost daemon
    // (if the watcher had not connected yet, connecting fails: 3 too).
    let child = c.reader().spawn(&["watch"]);
    std::thread::sleep(Duration::from_millis(300));
    c.edge.daemon.kill();
    let out = child.wait_with_output().expect("waiting for edgectl watch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(UNREACHABLE), "{stderr}");
    assert!(
        stderr.contains(&c.files.socket().display().to_string()),
        "{stderr}"
    );
}

#[test]
fn top_and_metrics() {
    let _serial = serial();
    let c = Controlled::degraded();
    let ctl = c.reader();
    let client = Client::default();
    for _ in 0..5 {
        assert_eq!(client.query(&c.edge.route("users"), QUERY).status, 200);
    }

    // Degraded: the user-space enforcement counts what the daemon's own
    // listener admitted, per client address.
    let top = ctl.json(&["top", "--limit", "5"]);
    let clients = top["clients"].as_array().expect("a list of clients");
    assert!(clients.len() <= 5, "{top}");
    let me = find(&top["clients"], "address", "127.0.0.1");
    assert!(me["passed"].as_u64().is_some_and(|p| p >= 5), "{top}");
    let text = ctl.ok(&["top"]);
    assert!(
        text.starts_with("ADDRESS") && text.contains("127.0.0.1"),
        "{text}"
    );
    ctl.fails(&["top", "--limit", "0"], INVALID, "--limit 0");

    let metrics = ctl.json(&["metrics", "--prefix", "fraiseql_edge_"]);
    let families = metrics["families"].as_array().expect("families");
    assert!(!families.is_empty(), "no metric families");
    for f in families {
        assert!(
            f["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("fraiseql_edge_")),
            "{f}"
        );
        assert!(f["type"].is_string() && f["samples"].is_array(), "{f}");
    }
    let text = ctl.ok(&["metrics", "--prefix", "fraiseql_edge_"]);
    assert!(text.contains("# TYPE fraiseql_edge_"), "{text}");
    assert!(
        text.lines()
            .all(|l| l.starts_with('#') || l.starts_with("fraiseql_edge_")),
        "{text}"
    );
    let none = ctl.json(&["metrics", "--prefix", "no_such_metric_"]);
    assert_eq!(none["families"], json!([]));
}

#[test]
fn kernel_calls_without_a_kernel_layer_are_a_failed_precondition() {
    let _serial = serial();
    let c = Controlled::without_kernel();
    let ctl = c.admin();
    assert_eq!(ctl.json(&["status"])["enforcement"], "disabled");
    assert_eq!(ctl.json(&["limits", "get"])["kernel"], Value::Null);
    let text = ctl.ok(&["limits", "get"]);
    assert!(text.contains("disabled"), "{text}");
    ctl.fails(
        &["limits", "set", "kernel", "--rate", "5"],
        PRECONDITION,
        "",
    );
    // The per-identity limit does not need the kernel layer.
    ctl.ok(&["limits", "set", "rate", "--rpm", "120"]);
}

#[test]
fn edgectl_drives_a_running_kernel_layer() {
    if !kernel_tests_enabled("edgectl_drives_a_running_kernel_layer") {
        return;
    }
    let _serial = serial();
    const PORT: u16 = 18711;
    let pin = PinDir::new("edgectl");
    let ns = NetNs::new("edgectl", 8, 1);
    let dst = SocketAddr::new(ns.host_v4().into(), PORT);
    let server = UdpCounter::bind(&[dst]);
    let files = ControlFiles::new();
    let cfg = EdgeConfig::new(ns.host_if(), &[PORT], &pin.0);
    let mut daemon = fraiseql_edge_tests::daemon::Daemon::spawn(
        &format!("{}\n{}", cfg.to_toml(), files.section()),
        &[],
    );
    daemon.wait_ready();
    assert!(
        !daemon.log().contains("eBPF UNAVAILABLE"),
        "{}",
        daemon.log()
    );
    assert!(eventually(Duration::from_secs(10), || files
        .socket()
        .exists()));
    let ctl = Edgectl::socket(&files.socket(), &files.admin_token());
    let maps = KernelMaps::open_pinned(&pin.0).expect("the daemon's pinned maps");

    let status = ctl.json(&["status"]);
    assert_eq!(status["enforcement"], "kernel", "{status}");
    let iface = find(&status["interfaces"], "name", ns.host_if());
    assert!(
        matches!(iface["mode"].as_str(), Some("native" | "skb")),
        "{status}"
    );

    let client = ns.client(0).to_string();
    flood_for(&ns, ns.client(0), dst, 200, Duration::from_millis(300));
    assert!(eventually(Duration::from_secs(3), || server
        .received(ns.client(0))
        > 0));
    let top = ctl.json(&["top"]);
    let entry = find(&top["clients"], "address", &client);
    assert!(entry["passed"].as_u64().is_some_and(|p| p > 0), "{top}");

    let blocked = ctl.json(&["block", &client, "--ttl", "600"]);
    assert_eq!(blocked["blocked"]["enforced_by"], "kernel", "{blocked}");
    let kernel_blocks = maps.blocks().expect("reading the block map");
    assert_eq!(kernel_blocks.len(), 1);
    assert_eq!(kernel_blocks[0].client.to_string(), client);
    let before = settled(Duration::from_secs(3), || server.received(ns.client(0)));
    flood_for(&ns, ns.client(0), dst, 200, Duration::from_millis(300));
    let after = settled(Duration::from_secs(3), || server.received(ns.client(0)));
    assert_eq!(
        after, before,
        "a blocked client's packets reached the server"
    );

    ctl.ok(&["unblock", &client]);
    assert!(maps.blocks().expect("reading the block map").is_empty());
    let limits = ctl.json(&["limits", "set", "kernel", "--max-conns", "9"]);
    assert_eq!(limits["kernel"]["max_conns"], 9, "{limits}");
}

#[test]
fn slow_queries_are_listed() {
    let _serial = serial();
    let c = Controlled::degraded();
    let ctl = c.reader();
    let client = Client::default();
    let route = c.edge.route("users");
    assert_eq!(client.query(&route, QUERY).status, 200, "a fast query");
    c.subgraph.faults(&json!({"latency_ms": 300}));
    let named = "query Slow { users(first: 1) { id } }";
    assert_eq!(client.query(&route, named).status, 200);

    let slow = ctl.json(&["slow"]);
    assert_eq!(slow["threshold_seconds"], 0.2, "{slow}");
    let queries = slow["queries"].as_array().expect("a list of queries");
    assert_eq!(queries.len(), 1, "only the slow one: {slow}");
    let q = &queries[0];
    assert_eq!(q["operation_name"], "Slow", "{q}");
    assert_eq!(q["operation_type"], "query", "{q}");
    assert_eq!(q["subgraph"], "users", "{q}");
    assert_eq!(q["status"], 200, "{q}");
    assert!(
        q["duration_seconds"].as_f64().is_some_and(|d| d >= 0.3),
        "{q}"
    );
    assert!(
        q["document_hash"].as_str().is_some_and(|h| h.len() == 64),
        "{q}"
    );
    assert!(q["unix_ms"].as_u64().is_some_and(|t| t > 0), "{q}");

    assert_eq!(client.query(&route, named).status, 200);
    let newest = ctl.json(&["slow", "--limit", "1"]);
    assert_eq!(
        newest["queries"].as_array().map(Vec::len),
        Some(1),
        "{newest}"
    );
    let text = ctl.ok(&["slow"]);
    assert!(
        text.starts_with("slower than 200 ms") && text.contains("query Slow"),
        "{text}"
    );
}

/// SIGTERM with a watcher connected: the daemon ends the event stream and
/// exits (a forgotten `edgectl watch` does not hold it up), and the watcher
/// exits 3.
#[test]
fn a_watcher_does_not_hold_up_the_daemon_s_shutdown() {
    let _serial = serial();
    let mut c = Controlled::degraded();
    let mut child = c.reader().spawn(&["watch"]);
    let line = block_until_seen(&c.admin(), &mut child, "198.51.100");
    assert!(line.contains("block"), "{line}");
    let status = c.edge.daemon.terminate();
    assert!(status.success(), "{status:?}");
    let out = child.wait_with_output().expect("waiting for edgectl watch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(UNREACHABLE), "{stderr}");
}
