//! Degraded mode end to end: a real `fraiseql-edge` whose kernel layer
//! cannot start (its `pin_path` is not on bpffs — as for a daemon without
//! BPF privileges, it logs `eBPF UNAVAILABLE` and enforces the kernel limits
//! on its own listener) in front of a real `demo-subgraph`. Clients are
//! loopback source addresses (127.0.0.2, 127.0.0.3, …), so these tests need
//! no privileges and never skip.
//!
//! The last test drives the same block API against a running kernel layer
//! (root, a network namespace) to show that one API serves both.
//!
//! Assertions are on outcomes (statuses, codes, counters, what the server
//! received); waits poll with generous deadlines, and nothing is timed.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use fraiseql_edge::kernel::KernelMaps;
use fraiseql_edge_api::v1 as pb;
use fraiseql_edge_common::Counter;
use fraiseql_edge_tests::{
    PinDir,
    clients::flood_for,
    control::{self, Control},
    daemon::{Daemon, EdgeConfig},
    graphql::{Client, Reply, assert_refused},
    kernel_tests_enabled,
    loopback::LoopbackClient,
    netns::NetNs,
    servers::UdpCounter,
    subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec, logged_addr},
    wait::{eventually, settled},
};

const QUERY: &str = "{ users(first: 2) { id name } }";
const PATH: &str = "/users/graphql";
/// Deadline of one client call (a stuck daemon fails the test, not hangs it).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One of these tests at a time: the rate test's client must not compete
/// with another test's daemon for the two cores.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn client_ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A demo subgraph and a degraded edge in front of it, enforcing `limits`
/// (`[kernel]` keys). The protected port is nominal: in degraded mode the
/// limits guard the daemon's own listener, wherever it is bound.
struct Degraded {
    edge: Edge,
    _subgraph: DemoSubgraph,
    _pins: tempfile::TempDir,
}

impl Degraded {
    fn start(limits: &str) -> Self {
        Self::start_with(limits, "requests_per_minute = 0")
    }

    /// As [`Self::start`], with `rate_limit` as the `[rate_limit]` keys.
    fn start_with(limits: &str, rate_limit: &str) -> Self {
        let subgraph = DemoSubgraph::start("users");
        // Not bpffs: the kernel layer cannot pin here and the daemon degrades.
        let pins = tempfile::tempdir().expect("temp dir");
        let kernel = format!(
            "interfaces = [\"lo\"]\nprotected_ports = [8080]\npin_path = {:?}\n{limits}",
            pins.path().join("pins")
        );
        let setup = ProxySetup::one(
            SubgraphSpec::new("users", [&subgraph])
                .table("health", "interval_ms = 60000, timeout_ms = 5000"),
        )
        .rate_limit(rate_limit);
        let edge = Edge::start_toml(&setup.to_toml_with_kernel(&kernel));
        let log = edge.daemon.log();
        assert!(
            log.contains("eBPF UNAVAILABLE"),
            "the daemon did not degrade; stderr:\n{log}"
        );
        Self {
            edge,
            _subgraph: subgraph,
            _pins: pins,
        }
    }

    fn connect(&self, client: IpAddr) -> LoopbackClient {
        LoopbackClient::connect(client, self.edge.graphql, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connecting from {client}: {e}"))
    }

    fn admin(&self, path: &str) -> String {
        self.edge.admin_url(path)
    }

    /// The addresses on the block list, over the control API.
    fn blocked(&self, ctl: &Control) -> Vec<(String, Option<u64>)> {
        ctl.blocks()
            .expect("ListBlocks")
            .into_iter()
            .map(|b| (b.address, b.expires_in_seconds))
            .collect()
    }

    /// `fraiseql_edge_degraded_checks_total{verdict}`.
    fn checks(&self, verdict: &str) -> f64 {
        Client::default()
            .metrics(&self.admin("/metrics"))
            .get(
                "fraiseql_edge_degraded_checks_total",
                &[("verdict", verdict)],
            )
            .unwrap_or(0.0)
    }
}

/// The request on `conn` got no answer: the daemon closed the connection
/// (refused at accept) rather than leaving it hanging.
#[track_caller]
fn assert_closed_unanswered(what: &str, answer: std::io::Result<Reply>) {
    match answer {
        Ok(reply) => panic!("{what}: answered {} {}", reply.status, reply.text()),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ),
            "{what}: expected the daemon to close the connection, got {e}"
        ),
    }
}

/// |a − b| ≤ tolerance · b.
fn within(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance * expected
}

/// (a) The token bucket: over a measured time t, burst + rate·t checks pass
/// (± 10 %); every request beyond is a 429 `RATE_LIMITED`.
#[test]
fn degraded_rate_limit_admits_burst_plus_rate_times_duration() {
    let _serial = serial();
    const RATE: u64 = 10;
    const BURST: u64 = 20;
    let edge = Degraded::start(&format!("rate = {RATE}\nburst = {BURST}\nmax_conns = 4\n"));
    let client = client_ip(2);

    // The connection takes a token as its SYN would; then requests at
    // twenty times the rate for four seconds, one connection, kept alive.
    let started = Instant::now();
    let mut conn = edge.connect(client);
    let interval = Duration::from_secs(1) / (20 * RATE as u32);
    let (mut admitted, mut refused, mut sent) = (0u64, 0u64, 0u64);
    let mut due = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let reply = conn.query(PATH, QUERY).expect("an answer");
        sent += 1;
        if reply.status == 200 {
            assert!(reply.is_data(), "{}", reply.text());
            admitted += 1;
        } else {
            assert_refused(&reply, 429, "RATE_LIMITED");
            refused += 1;
        }
        due += interval;
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => thread::sleep(wait),
            // A stall (busy machine): restart the pacing, no catch-up burst.
            None => due = Instant::now(),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // Tokens over the measured time, less the connection's.
    let expected = BURST as f64 + RATE as f64 * secs - 1.0;
    println!(
        "degraded rate: sent {sent} in {secs:.2} s, admitted {admitted}, refused {refused}, \
         expected {expected:.1} (burst {BURST} + {RATE}/s × {secs:.2} s − 1 for the connection)"
    );
    assert!(
        sent as f64 > 2.0 * expected,
        "the client ({sent} requests) was not well above the limit"
    );
    assert!(
        within(admitted as f64, expected, 0.10),
        "admitted {admitted}, expected {expected:.1} ± 10 %"
    );
    // The daemon's own count: the connection and the admitted requests
    // passed, every refusal was the bucket's.
    assert_eq!(edge.checks("passed"), (admitted + 1) as f64);
    assert_eq!(edge.checks("dropped_rate"), refused as f64);
    let text = Client::default().get(&edge.admin("/metrics"), &[]).text();
    fraiseql_edge_tests::promtool::check_metrics(
        "degraded_rate_limit_admits_burst_plus_rate_times_duration",
        &text,
    );
}

/// (b) The connection cap: K connections are served, the (K+1)th is closed
/// unanswered; another client is unaffected; closing one frees a slot.
#[test]
fn degraded_connection_cap_admits_max_conns_per_client() {
    let _serial = serial();
    const K: usize = 3;
    let edge = Degraded::start(&format!("rate = 0\nmax_conns = {K}\n"));
    let (capped, other) = (client_ip(3), client_ip(4));

    let mut held: Vec<LoopbackClient> = (0..K).map(|_| edge.connect(capped)).collect();
    for (i, conn) in held.iter_mut().enumerate() {
        let reply = conn.query(PATH, QUERY).expect("an answer");
        assert!(
            reply.is_data(),
            "connection {} of {K}: {}",
            i + 1,
            reply.text()
        );
    }
    // The kernel completes the handshake before the daemon's accept, so the
    // refusal shows as a connection closed without an answer.
    let mut extra = edge.connect(capped);
    assert_closed_unanswered("connection K+1", extra.query(PATH, QUERY));
    assert_eq!(edge.checks("dropped_conn"), 1.0);

    let mut elsewhere = edge.connect(other);
    assert!(elsewhere.query(PATH, QUERY).expect("an answer").is_data());
    for conn in &mut held {
        assert!(conn.query(PATH, QUERY).expect("an answer").is_data());
    }

    // Closing one frees its slot once the daemon has seen it close.
    drop(held.pop());
    let mut replacement = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut conn = edge.connect(capped);
            let served = conn.query(PATH, QUERY).is_ok_and(|r| r.is_data());
            if served {
                replacement = Some(conn);
            }
            served
        }),
        "no connection was served after one of {K} was closed"
    );
    held.extend(replacement);
    let mut extra = edge.connect(capped);
    assert_closed_unanswered("connection K+1 again", extra.query(PATH, QUERY));
}

/// (c) A block set through the control API while degraded refuses the
/// client (403 `FORBIDDEN` on an open connection, new connections closed);
/// lifting it lets the client through; another client never notices. Timed
/// blocks are deleted by the sweep when they expire.
#[test]
fn degraded_blocks_are_set_and_lifted_through_the_control_api() {
    let _serial = serial();
    let edge = Degraded::start("rate = 0\nmax_conns = 0\n");
    let ctl = edge.edge.control();
    let (blocked, bystander) = (client_ip(5), client_ip(6));
    let mut b = edge.connect(blocked);
    let mut o = edge.connect(bystander);
    assert!(b.query(PATH, QUERY).expect("an answer").is_data());
    assert!(o.query(PATH, QUERY).expect("an answer").is_data());

    let entry = ctl.block(&blocked.to_string(), None).expect("Block");
    assert_eq!(
        (
            entry.address.as_str(),
            entry.expires_in_seconds,
            entry.enforced_by.as_str()
        ),
        ("127.0.0.5", None, "user_space")
    );
    assert_refused(&b.query(PATH, QUERY).expect("an answer"), 403, "FORBIDDEN");
    assert_closed_unanswered(
        "a new connection from a blocked client",
        edge.connect(blocked).query(PATH, QUERY),
    );
    assert!(o.query(PATH, QUERY).expect("an answer").is_data());
    assert_eq!(edge.blocked(&ctl), [("127.0.0.5".to_string(), None)]);

    // Bad input: INVALID_ARGUMENT with the reason, and nothing is blocked.
    for (address, ttl, says) in [
        ("127.0.0.300", None, "not an IP address"),
        ("127.0.0.6", Some(0), "ttl"),
        ("127.0.0.6", Some(99_999_999_999), "ttl"),
        ("", None, "not an IP address"),
    ] {
        let e = ctl.block(address, ttl).expect_err("a bad block");
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "{address} {ttl:?}: {e:?}"
        );
        assert!(e.message().contains(says), "{e:?}");
    }
    assert_eq!(edge.blocked(&ctl).len(), 1);
    // The read-only token cannot block.
    let mut reader = ctl.reader();
    let e = ctl
        .run(reader.block(pb::BlockRequest {
            address: "127.0.0.6".into(),
            ttl_seconds: None,
            reason: String::new(),
        }))
        .expect_err("a read-only block");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(o.query(PATH, QUERY).expect("an answer").is_data());

    assert!(ctl.unblock(&blocked.to_string()).expect("Unblock"));
    assert!(!ctl.unblock(&blocked.to_string()).expect("Unblock again"));
    assert!(b.query(PATH, QUERY).expect("an answer").is_data());
    assert!(
        edge.connect(blocked)
            .query(PATH, QUERY)
            .expect("an answer")
            .is_data()
    );
    assert!(edge.blocked(&ctl).is_empty());
    assert_eq!(edge.checks("dropped_block"), 2.0);

    // A timed block expires and the once-a-second sweep deletes it. (Whether
    // a request lands inside the one second is up to the scheduler, so the
    // refusal itself is shown above with an untimed block.)
    let entry = ctl.block("127.0.0.8", Some(1)).expect("Block");
    assert_eq!(entry.expires_in_seconds, Some(1));
    assert!(
        eventually(Duration::from_secs(10), || edge.blocked(&ctl).is_empty()),
        "the expired block was not deleted: {:?}",
        edge.blocked(&ctl)
    );
    // A connection opened after the expiry (one held idle through the wait
    // may meet the listener's idle timeout on a loaded machine).
    let mut timed = edge.connect(client_ip(8));
    assert!(timed.query(PATH, QUERY).expect("an answer").is_data());
    assert!(
        eventually(Duration::from_secs(5), || edge
            .edge
            .daemon
            .log()
            .lines()
            .any(|l| l.contains("block expired") && l.contains("127.0.0.8"))),
        "the sweep logs what it deletes; stderr:\n{}",
        edge.edge.daemon.log()
    );
    let m = Client::default().metrics(&edge.admin("/metrics"));
    assert_eq!(
        m.get("fraiseql_edge_degraded_blocked_clients", &[]),
        Some(0.0)
    );
}

/// The same API with the kernel layer running: blocks land in the pinned
/// kernel map and XDP drops the client's packets; lifting them passes them.
#[test]
fn block_api_writes_the_kernel_block_map_when_the_kernel_layer_runs() {
    if !kernel_tests_enabled("block_api_writes_the_kernel_block_map_when_the_kernel_layer_runs") {
        return;
    }
    let _serial = serial();
    const PORT: u16 = 18701;
    let pin = PinDir::new("blockapi");
    let ns = NetNs::new("blkapi", 7, 1);
    let dst = SocketAddr::new(ns.host_v4().into(), PORT);
    let server = UdpCounter::bind(&[dst]);
    let cfg = EdgeConfig::new(ns.host_if(), &[PORT], &pin.0);
    let mut daemon = Daemon::spawn(&format!("{}\n{}", cfg.to_toml(), control::section()), &[]);
    daemon.wait_ready();
    assert!(!daemon.log().contains("eBPF UNAVAILABLE"));
    let ctl =
        Control::connect(logged_addr(&daemon, "control API").expect("the control API's address"));
    let maps = KernelMaps::open_pinned(&pin.0).expect("the daemon's pinned maps");
    let client = ns.client(0);

    let entry = ctl.block(&client.to_string(), Some(600)).expect("Block");
    assert_eq!(entry.enforced_by, "kernel");
    let kernel_blocks = maps.blocks().expect("reading the block map");
    assert_eq!(kernel_blocks.len(), 1);
    assert_eq!(kernel_blocks[0].client, client);
    assert!(kernel_blocks[0].expires_in_secs.is_some_and(|s| s <= 600));
    assert_eq!(
        ctl.blocks().expect("ListBlocks")[0].address,
        client.to_string()
    );

    flood_for(&ns, client, dst, 200, Duration::from_millis(500));
    let received = settled(Duration::from_secs(3), || server.received(client));
    assert_eq!(received, 0, "a blocked client's packets reached the server");
    assert!(maps.counter(Counter::DroppedBlock).expect("counter") > 0);

    assert!(ctl.unblock(&client.to_string()).expect("Unblock"));
    assert!(maps.blocks().expect("reading the block map").is_empty());
    flood_for(&ns, client, dst, 200, Duration::from_millis(500));
    assert!(
        eventually(Duration::from_secs(3), || server.received(client) > 0),
        "an unblocked client's packets do not arrive"
    );
}

/// Escalation: a client that keeps hitting the per-identity limit is put on
/// the (degraded-mode) block list; its next connections are refused at
/// accept, and other clients are unaffected.
#[test]
fn repeated_rate_limit_refusals_escalate_to_a_block() {
    let _serial = serial();
    let edge = Degraded::start_with(
        "rate = 0\nmax_conns = 0\n",
        "requests_per_minute = 60\nburst = 2\nescalation = { threshold = 5, window_secs = 60, block_secs = 120 }",
    );
    let abuser = client_ip(7);
    let mut conn = edge.connect(abuser);
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(conn.query(PATH, QUERY).expect("an answer").status);
    }
    // Two pass, five are refused: the fifth refusal escalates.
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429, 429]);
    let r = conn.query(PATH, QUERY).expect("an answer");
    assert_refused(&r, 403, "FORBIDDEN");
    let mut fresh = edge.connect(abuser);
    assert_closed_unanswered(
        "a new connection from the blocked client",
        fresh.query(PATH, QUERY),
    );
    let listed = edge.blocked(&edge.edge.control());
    assert!(
        listed.iter().any(|(a, _)| a == "127.0.0.7"),
        "the block is listed: {listed:?}"
    );
    let mut other = edge.connect(client_ip(8));
    assert!(other.query(PATH, QUERY).expect("an answer").is_data());
    let m = Client::default().metrics(&edge.admin("/metrics"));
    assert_eq!(
        m.get("fraiseql_edge_escalations_total", &[("outcome", "blocked")]),
        Some(1.0)
    );
    assert!(
        edge.edge
            .daemon
            .log()
            .contains("client blocked: too many refused requests")
    );
}
