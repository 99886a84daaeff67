//! The GraphQL data path end to end: a real `fraiseql-edge` (kernel layer
//! off, listeners on loopback port 0) in front of real `demo-subgraph`
//! processes, driven over HTTP. No privileges needed.
//!
//! Each test starts its own subgraphs and daemon. They run one at a time
//! (`serial`): the deadlines below (health intervals, per-try timeouts)
//! assume a test has the machine's two cores to itself, and they are
//! correctness deadlines with wide margins, never performance thresholds.
//! Waits poll for an outcome ([`eventually`]) instead of sleeping and hoping.

use std::{
    sync::{
        Arc, Barrier, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use fraiseql_edge_tests::{
    daemon::run_cli,
    graphql::{Client, Metrics, Reply, assert_refused},
    subgraphs::{DemoOptions, DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
    wait::eventually,
};
use serde_json::json;

/// Health checks that stay out of the way: one at start, then none for a minute.
const QUIET_HEALTH: &str = "interval_ms = 60000, timeout_ms = 5000";
const QUERY: &str = "{ users(first: 2) { id name } }";

pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Same status, content type and body bytes.
#[track_caller]
fn assert_same(what: &str, direct: &Reply, via_edge: &Reply) {
    assert_eq!(direct.status, via_edge.status, "{what}: status");
    assert_eq!(
        direct.content_type, via_edge.content_type,
        "{what}: content type"
    );
    if direct.body != via_edge.body {
        let at = direct
            .body
            .iter()
            .zip(&via_edge.body)
            .position(|(a, b)| a != b)
            .unwrap_or(direct.body.len().min(via_edge.body.len()));
        let tail = |b: &[u8]| String::from_utf8_lossy(&b[at..b.len().min(at + 80)]).into_owned();
        panic!(
            "{what}: bodies differ at byte {at} (direct {} bytes, edge {} bytes): {:?} vs {:?}",
            direct.body.len(),
            via_edge.body.len(),
            tail(&direct.body),
            tail(&via_edge.body)
        );
    }
}

fn metrics(c: &Client, edge: &Edge) -> Metrics {
    c.metrics(&edge.admin_url("/metrics"))
}

fn endpoint(sg: &DemoSubgraph) -> String {
    sg.addr.to_string()
}

/// Polls `value` until it has not changed for `quiet` (at most `timeout`).
fn stable(timeout: Duration, quiet: Duration, mut value: impl FnMut() -> u64) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut last = value();
    let mut since = Instant::now();
    while since.elapsed() < quiet && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        let now = value();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// Waits until the edge's start-up work (the pool fill) has settled, so it
/// does not overlap what a test measures. With `QUIET_HEALTH` the first
/// health check comes a minute after start, outside every test.
fn wait_settled(sgs: &[&DemoSubgraph]) {
    for sg in sgs {
        stable(Duration::from_secs(15), Duration::from_millis(500), || {
            sg.stats().connections_open
        });
        assert_eq!(sg.stats().graphql(), 0, "nothing was sent before the test");
    }
}

#[test]
fn pass_through_is_byte_identical() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&sg]).table("health", QUIET_HEALTH),
    ));
    let c = Client::default();
    let (direct, via) = (sg.url(), edge.route("users"));

    let posts = [
        (
            "variables",
            json!({"query": "query U($id: ID!) { user(id: $id) { id name email } }",
                   "variables": {"id": "7"}, "operationName": "U"}),
        ),
        ("subgraph GraphQL error", json!({"query": "{ boom }"})),
        ("validation error", json!({"query": "{ nope }"})),
        ("large response", json!({"query": "{ bigList(n: 200000) }"})),
        (
            "mutation",
            json!({"query": "mutation C($n: String!) { createUser(name: $n) { name email } }",
                   "variables": {"n": "fidelity"}}),
        ),
    ];
    for (what, body) in &posts {
        let d = c.post_json(&direct, body);
        let e = c.post_json(&via, body);
        println!("{what}: {} {} bytes", e.status, e.body.len());
        assert_same(what, &d, &e);
    }
    // Variables that are not an object: the edge refuses them itself, and
    // the subgraph never sees the request.
    let before = sg.stats().graphql();
    let bad_vars = json!({"query": "{ products { upc } }", "variables": [1]});
    assert_refused(&c.post_json(&via, &bad_vars), 400, "BAD_REQUEST");
    assert_eq!(sg.stats().graphql(), before);
    let big = c.query(&via, "{ bigList(n: 200000) }");
    let items = big.json()["data"]["bigList"].as_array().map(Vec::len);
    assert_eq!(items, Some(200_000), "the large response arrives whole");
    assert_eq!(
        c.post_json(&via, &posts[1].1).json()["data"]["boom"],
        json!(null)
    );
    assert_eq!(
        sg.stats().mutations,
        2,
        "the mutation ran once directly, once through the edge"
    );

    let gets: [(&str, &[(&str, &str)]); 3] = [
        ("GET query", &[("query", "{ user(id: \"3\") { name } }")]),
        (
            "GET with variables",
            &[
                ("query", "query L($n: Int!) { bigList(n: $n) }"),
                ("variables", "{\"n\":5}"),
                ("operationName", "L"),
            ],
        ),
        ("GET subgraph error", &[("query", "{ boom }")]),
    ];
    for (what, params) in gets {
        let d = c.get(&direct, params);
        let e = c.get(&via, params);
        println!("{what}: {} {}", e.status, e.text());
        assert_same(what, &d, &e);
        assert_eq!(e.status, 200, "{what}");
    }

    let before = sg.stats().graphql();
    for bad in [
        &b"{not json"[..],
        b"",
        b"42",
        b"[]",
        b"{}",
        br#"{"query": 5}"#,
        br#"{"query": "{ products { upc } }", "operationName": 7}"#,
    ] {
        let r = c.post_raw(&via, bad);
        assert_refused(&r, 400, "BAD_REQUEST");
    }
    let r = c.get(&via, &[("variables", "{}")]);
    assert_refused(&r, 400, "BAD_REQUEST");
    assert_eq!(
        sg.stats().graphql(),
        before,
        "malformed requests never reach the subgraph"
    );
}

#[test]
fn pool_keeps_min_idle_connections_open() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&sg])
            .table("pool", "min_idle = 5, max = 20")
            .table("health", QUIET_HEALTH),
    ));
    let c = Client::default();
    let open = stable(Duration::from_secs(20), Duration::from_millis(2500), || {
        sg.stats().connections_open
    });
    let s = sg.stats();
    println!("before any request: {s:?}");
    assert_eq!(s.graphql(), 0, "no request was sent yet");
    assert_eq!(open, 5, "connections the subgraph sees open");
    assert_eq!(s.connections_accepted, 5, "connections ever opened");
    let labels = [("subgraph", "users"), ("state", "idle")];
    assert!(
        eventually(Duration::from_secs(5), || {
            metrics(&c, &edge).get("fraiseql_edge_pool_connections", &labels) == Some(5.0)
        }),
        "pool gauge: {:?}",
        metrics(&c, &edge).get("fraiseql_edge_pool_connections", &labels)
    );
    // A few requests reuse the warm connections.
    for _ in 0..10 {
        assert!(c.query(&edge.route("users"), QUERY).is_data());
    }
    assert_eq!(sg.stats().connections_open, 5, "warm connections reused");
}

/// Fires `n` copies of `query` at once (a barrier releases them together).
fn burst(c: &Client, url: &str, query: &'static str, n: usize) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (c, url, barrier) = (c.clone(), url.to_string(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                c.query(&url, query)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

#[test]
fn pool_never_exceeds_max() {
    let _serial = serial();
    let sg = DemoSubgraph::start_with(
        "users",
        &DemoOptions {
            latency_ms: 300,
            ..DemoOptions::default()
        },
    );
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&sg])
            .table("pool", "min_idle = 2, max = 20, acquire_timeout_ms = 30000")
            .table("timeouts", "per_try_ms = 40000, overall_ms = 60000")
            .table("health", QUIET_HEALTH),
    ));
    wait_settled(&[&sg]);
    sg.reset_stats();
    let c = Client::default();
    let replies = burst(&c, &edge.route("users"), QUERY, 300);
    let failed: Vec<_> = replies.iter().filter(|r| !r.is_data()).collect();
    let s = sg.stats();
    println!("after 300 concurrent requests: {s:?}");
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed[0]
    );
    assert!(
        (2..=20).contains(&s.max_connections_open),
        "max connections open: {}",
        s.max_connections_open
    );
    assert!(s.max_in_flight <= 20, "in flight: {}", s.max_in_flight);
    assert_eq!(s.graphql(), 300);
}

#[test]
fn pool_acquire_timeout_answers_saturated() {
    let _serial = serial();
    let sg = DemoSubgraph::start_with(
        "users",
        &DemoOptions {
            latency_ms: 2000,
            ..DemoOptions::default()
        },
    );
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&sg])
            .table("pool", "min_idle = 0, max = 3, acquire_timeout_ms = 200")
            .table("timeouts", "per_try_ms = 5000, overall_ms = 10000")
            .table("health", QUIET_HEALTH),
    ));
    wait_settled(&[&sg]);
    sg.reset_stats();
    let c = Client::default();
    let replies = burst(&c, &edge.route("users"), QUERY, 12);
    let ok = replies.iter().filter(|r| r.is_data()).count();
    let saturated = replies
        .iter()
        .filter(|r| r.status == 503 && r.code().as_deref() == Some("UPSTREAM_SATURATED"))
        .count();
    let s = sg.stats();
    println!("ok {ok}, saturated {saturated}; subgraph {s:?}");
    assert_eq!(
        ok + saturated,
        12,
        "only successes and UPSTREAM_SATURATED: {:?}",
        replies
            .iter()
            .map(|r| (r.status, r.code()))
            .collect::<Vec<_>>()
    );
    assert!((1..=3).contains(&ok), "successes: {ok}");
    assert!(saturated >= 9, "saturated: {saturated}");
    assert_eq!(s.graphql(), ok as u64, "refused waiters never reached it");
    assert!(s.max_connections_open <= 3);
}

/// Query load from `threads` threads until stopped (or 60 s); collects failures.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    pub(crate) fn start(c: &Client, url: &str, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let (c, url, stop) = (c.clone(), url.to_string(), stop.clone());
                thread::spawn(move || {
                    let (mut ok, mut failed) = (0, Vec::new());
                    let started = Instant::now();
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(60)
                    {
                        match c.try_query(&url, QUERY) {
                            Ok(r) if r.is_data() => ok += 1,
                            Ok(r) => failed.push(format!("{} {}", r.status, r.text())),
                            Err(e) => failed.push(e.to_string()),
                        }
                        thread::sleep(Duration::from_millis(10));
                    }
                    (ok, failed)
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops and returns (successes, failures).
    pub(crate) fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = (0, Vec::new());
        for t in self.threads {
            let (ok, failed) = t.join().expect("load thread");
            total.0 += ok;
            total.1.extend(failed);
        }
        total
    }
}

#[test]
fn failover_hides_a_crashed_endpoint() {
    let _serial = serial();
    let mut a = DemoSubgraph::start("a");
    let b = DemoSubgraph::start("b");
    let interval = Duration::from_millis(500);
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&a, &b])
            .table("pool", "min_idle = 2, max = 20")
            .table(
                "health",
                "interval_ms = 500, timeout_ms = 400, healthy_after = 2, unhealthy_after = 3",
            ),
    ));
    let c = Client::default();
    let healthy = |ep: &str| {
        metrics(&c, &edge).get(
            "fraiseql_edge_endpoint_healthy",
            &[("subgraph", "users"), ("endpoint", ep)],
        )
    };
    let (ep_a, ep_b) = (endpoint(&a), endpoint(&b));
    assert!(eventually(Duration::from_secs(5), || healthy(&ep_a)
        == Some(1.0)
        && healthy(&ep_b) == Some(1.0)));

    let load = Load::start(&c, &edge.route("users"), 3);
    assert!(
        eventually(Duration::from_secs(10), || a.stats().graphql() >= 10
            && b.stats().graphql() >= 10),
        "both endpoints take traffic"
    );
    a.crash();
    let crashed = Instant::now();
    assert!(
        eventually(interval * 3 * 2, || healthy(&ep_a) == Some(0.0)),
        "endpoint still healthy {:?} after the crash",
        crashed.elapsed()
    );
    println!("ejected {:?} after the crash", crashed.elapsed());
    thread::sleep(interval * 2);

    // A new process on the same port: health checks only, until it is healthy again.
    let a2 = a.restart(&DemoOptions::default());
    let restarted = Instant::now();
    let mut polls = 0;
    let back = eventually(Duration::from_secs(10), || {
        let stats = a2.stats(); // read before the gauge: traffic implies healthy
        let h = healthy(&ep_a);
        polls += 1;
        if h == Some(0.0) {
            assert_eq!(
                stats.graphql(),
                0,
                "the ejected endpoint got traffic: {stats:?}"
            );
        }
        h == Some(1.0)
    });
    assert!(
        back,
        "restarted endpoint not healthy again: {:?}",
        a2.stats()
    );
    println!(
        "healthy again {:?} after the restart ({polls} polls); health checks seen: {}",
        restarted.elapsed(),
        a2.stats().health_checks
    );
    assert!(a2.stats().health_checks >= 2, "restored by health checks");
    assert!(
        eventually(Duration::from_secs(10), || a2.stats().graphql() >= 10),
        "the restored endpoint takes traffic again: {:?}",
        a2.stats()
    );
    let (ok, failed) = load.finish();
    println!("load: {ok} ok, {} failed", failed.len());
    assert!(failed.is_empty(), "failed queries: {failed:?}");
    let m = metrics(&c, &edge);
    let transitions = |to| {
        m.sum(
            "fraiseql_edge_endpoint_health_transitions_total",
            &[("endpoint", ep_a.as_str()), ("to", to)],
        )
    };
    assert_eq!(
        (transitions("unhealthy"), transitions("healthy")),
        (1.0, 1.0)
    );
}

#[test]
fn breaker_opens_rejects_fast_and_closes_after_recovery() {
    let _serial = serial();
    let a = DemoSubgraph::start("a");
    let b = DemoSubgraph::start("b");
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&a, &b])
            .table(
                "health",
                "interval_ms = 300, timeout_ms = 200, healthy_after = 2, unhealthy_after = 3",
            )
            .table(
                "breaker",
                "consecutive_failures = 5, open_ms = 1500, min_requests = 20",
            ),
    ));
    let c = Client::default();
    let url = edge.route("users");
    let state = || {
        metrics(&c, &edge).get(
            "fraiseql_edge_circuit_breaker_state",
            &[("subgraph", "users")],
        )
    };
    let rejections = || {
        metrics(&c, &edge)
            .get(
                "fraiseql_edge_circuit_breaker_rejections_total",
                &[("subgraph", "users")],
            )
            .unwrap_or(0.0)
    };
    for _ in 0..4 {
        assert!(c.query(&url, QUERY).is_data());
    }
    assert!(eventually(Duration::from_secs(5), || state() == Some(0.0)));

    for sg in [&a, &b] {
        sg.faults(&json!({"error_rate": 1.0, "error_status": 503}));
    }
    let mut before_open = Vec::new();
    let opened = (0..100).any(|_| {
        let r = c.query(&url, QUERY);
        if r.code().as_deref() == Some("CIRCUIT_OPEN") {
            return true;
        }
        before_open.push((r.status, r.code()));
        thread::sleep(Duration::from_millis(20));
        false
    });
    let seen_open = Instant::now();
    println!("before the breaker opened: {before_open:?}");
    assert!(opened, "breaker never opened");
    assert!(
        before_open.iter().all(|(status, _)| *status == 503),
        "failing subgraphs answer 503"
    );
    assert_eq!(state(), Some(1.0), "state gauge: open");
    let m = metrics(&c, &edge);
    let transition = |from, to| {
        m.sum(
            "fraiseql_edge_circuit_breaker_transitions_total",
            &[("subgraph", "users"), ("from", from), ("to", to)],
        )
    };
    assert!(transition("closed", "open") >= 1.0);

    // While open: fast CIRCUIT_OPEN, nothing reaches the subgraphs.
    let (seen_a, seen_b) = (a.stats().graphql(), b.stats().graphql());
    let rejected_before = rejections();
    let mut n = 0;
    while seen_open.elapsed() < Duration::from_millis(600) {
        let t = Instant::now();
        let r = c.query(&url, QUERY);
        assert_refused(&r, 503, "CIRCUIT_OPEN");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        n += 1;
    }
    println!("{n} requests refused while open");
    assert!(n >= 1);
    assert_eq!(rejections() - rejected_before, f64::from(n));
    assert_eq!(
        (a.stats().graphql(), b.stats().graphql()),
        (seen_a, seen_b),
        "an open breaker sends nothing upstream"
    );

    // Recovery: faults cleared, endpoints restored by health checks, the
    // half-open probe succeeds and the breaker closes.
    for sg in [&a, &b] {
        sg.faults(&json!({"error_rate": 0.0}));
    }
    let cleared = Instant::now();
    let mut last = None;
    let closed = eventually(Duration::from_secs(15), || {
        let r = c.query(&url, QUERY);
        let ok = r.is_data();
        last = Some((r.status, r.code()));
        thread::sleep(Duration::from_millis(100));
        ok
    });
    assert!(closed, "no success after recovery; last: {last:?}");
    println!("first success {:?} after clearing", cleared.elapsed());
    assert_eq!(state(), Some(0.0), "state gauge: closed");
    let m = metrics(&c, &edge);
    assert!(
        m.sum(
            "fraiseql_edge_circuit_breaker_transitions_total",
            &[
                ("subgraph", "users"),
                ("from", "half_open"),
                ("to", "closed")
            ],
        ) >= 1.0
    );
    for _ in 0..10 {
        assert!(c.query(&url, QUERY).is_data(), "requests flow again");
    }
}

#[test]
fn timed_out_mutation_is_not_retried_but_a_query_is() {
    let _serial = serial();
    let slow = DemoOptions {
        latency_ms: 3000,
        ..DemoOptions::default()
    };
    let a = DemoSubgraph::start_with("a", &slow);
    let b = DemoSubgraph::start_with("b", &slow);
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&a, &b])
            .table("timeouts", "per_try_ms = 500, overall_ms = 10000")
            .table("pool", "acquire_timeout_ms = 200")
            .table("health", &format!("{QUIET_HEALTH}, unhealthy_after = 10"))
            .table("breaker", "consecutive_failures = 10"),
    ));
    wait_settled(&[&a, &b]);
    a.reset_stats();
    b.reset_stats();
    let c = Client::default();
    let url = edge.route("users");

    let r = c.query(&url, "mutation { incrementCounter }");
    assert_refused(&r, 504, "UPSTREAM_TIMEOUT");
    thread::sleep(Duration::from_millis(3500)); // the subgraph's latency has passed
    let (sa, sb) = (a.stats(), b.stats());
    println!("after the mutation: a {sa:?}, b {sb:?}");
    assert_eq!(
        sa.graphql() + sb.graphql(),
        1,
        "the mutation was sent once, not retried"
    );
    // The subgraph finishes a request whose client went away, as real
    // servers do: the timed-out mutation ran, exactly once.
    assert_eq!(
        sa.mutations + sb.mutations,
        1,
        "the mutation ran exactly once"
    );

    a.reset_stats();
    b.reset_stats();
    let r = c.query(&url, QUERY);
    assert_refused(&r, 504, "UPSTREAM_TIMEOUT");
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(
        (sa.graphql(), sb.graphql()),
        (1, 1),
        "the query was tried on both endpoints"
    );
    let m = metrics(&c, &edge);
    assert_eq!(
        m.get(
            "fraiseql_edge_failovers_total",
            &[("subgraph", "users"), ("reason", "timeout")]
        ),
        Some(1.0)
    );
    for (op, n) in [("mutation", 1.0), ("query", 1.0)] {
        let labels = [("subgraph", "users"), ("status", "504"), ("operation", op)];
        assert_eq!(m.get("fraiseql_edge_requests_total", &labels), Some(n));
    }
}

#[test]
fn slow_endpoint_is_failed_over_and_the_overall_deadline_holds() {
    let _serial = serial();
    let slow = DemoOptions {
        latency_ms: 2000,
        ..DemoOptions::default()
    };
    let c = Client::default();
    {
        let s = DemoSubgraph::start_with("slow", &slow);
        let f = DemoSubgraph::start("fast");
        let edge = Edge::start(&ProxySetup::one(
            SubgraphSpec::new("users", [&s, &f])
                .table("timeouts", "per_try_ms = 300, overall_ms = 5000")
                .table("pool", "acquire_timeout_ms = 200")
                .table("health", QUIET_HEALTH),
        ));
        for i in 0..20 {
            let r = c.query(&edge.route("users"), QUERY);
            assert!(r.is_data(), "query {i}: {} {}", r.status, r.text());
        }
        let m = metrics(&c, &edge);
        let failovers = m.get(
            "fraiseql_edge_failovers_total",
            &[("subgraph", "users"), ("reason", "timeout")],
        );
        println!(
            "failovers {failovers:?}; slow saw {}, fast saw {}",
            s.stats().graphql(),
            f.stats().graphql()
        );
        assert!(
            failovers >= Some(1.0),
            "the slow endpoint was tried and left"
        );
        assert!(s.stats().graphql() >= 1);
        assert_eq!(f.stats().graphql(), 20);
    }
    let s1 = DemoSubgraph::start_with("slow-1", &slow);
    let s2 = DemoSubgraph::start_with("slow-2", &slow);
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&s1, &s2])
            .table("timeouts", "per_try_ms = 800, overall_ms = 1000")
            .table("pool", "acquire_timeout_ms = 200")
            .table("health", QUIET_HEALTH),
    ));
    wait_settled(&[&s1, &s2]);
    let t = Instant::now();
    let r = c.query(&edge.route("users"), QUERY);
    let took = t.elapsed();
    println!("both slow: {} after {took:?}", r.status);
    assert_refused(&r, 504, "UPSTREAM_TIMEOUT");
    assert!(
        took >= Duration::from_millis(800),
        "answered before the first try could time out: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1800),
        "the overall deadline (1 s) was not enforced: {took:?}"
    );
}

#[test]
fn bad_requests_are_refused_before_the_subgraph() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = Edge::start(&ProxySetup {
        max_body_bytes: Some(1024),
        subgraphs: vec![SubgraphSpec::new("users", [&sg]).table("health", QUIET_HEALTH)],
        ..ProxySetup::default()
    });
    let c = Client::default();
    let url = edge.route("users");
    let query = json!({"query": QUERY}).to_string();

    assert_refused(
        &c.post_raw(&edge.url("/nope/graphql"), query.as_bytes()),
        404,
        "NOT_FOUND",
    );
    assert_refused(
        &c.post_raw(&edge.url("/users"), query.as_bytes()),
        404,
        "NOT_FOUND",
    );
    let big = json!({"query": QUERY, "variables": {"pad": "x".repeat(2000)}}).to_string();
    assert_refused(&c.post_raw(&url, big.as_bytes()), 413, "PAYLOAD_TOO_LARGE");
    let fits = json!({"query": QUERY, "variables": {"pad": "x".repeat(900)}}).to_string();
    assert!(fits.len() <= 1024 && c.post_raw(&url, fits.as_bytes()).is_data());
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = c.try_post(&url, ct, query.as_bytes()).expect("POST");
        assert_refused(&r, 415, "UNSUPPORTED_MEDIA_TYPE");
    }
    let r = c.get(&url, &[("query", "mutation { incrementCounter }")]);
    assert_refused(&r, 405, "METHOD_NOT_ALLOWED");
    assert_refused(&c.put(&url, query.as_bytes()), 405, "METHOD_NOT_ALLOWED");
    let s = sg.stats();
    assert_eq!(
        (s.graphql(), s.mutations),
        (1, 0),
        "only the request that fits arrived"
    );
}

/// Runs `check-config` on `toml`; asserts exit 2 naming `key`.
#[track_caller]
fn assert_config_rejected(toml: &str, key: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, toml).expect("writing the config");
    let out = run_cli(&["check-config", "--config", path.to_str().expect("UTF-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{key}: {}", stderr.trim());
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("edge.toml: {key}: ")),
        "stderr does not name `{key}`: {stderr}"
    );
}

#[test]
fn bad_subgraph_configs_name_the_key() {
    let base = "[kernel]\nenabled = false\n[proxy]\nlisten = \"127.0.0.1:0\"\n";
    let sg = |name: &str, endpoints: &str, extra: &str| {
        format!("\n[[subgraphs]]\nname = \"{name}\"\nendpoints = [{endpoints}]\n{extra}")
    };
    let good = "\"http://127.0.0.1:4001/graphql\"";
    let ok = format!("{base}{}", sg("users", good, ""));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, &ok).expect("write");
    let out = run_cli(&["check-config", "--config", path.to_str().expect("UTF-8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_config_rejected(
        &format!("{base}{}{}", sg("users", good, ""), sg("users", good, "")),
        "subgraphs[1].name",
    );
    for bad in [
        "\"http://exa mple/graphql\"",
        "\"ftp://127.0.0.1/graphql\"",
        "\"127.0.0.1:4001/graphql\"",
    ] {
        assert_config_rejected(
            &format!("{base}{}", sg("users", bad, "")),
            "subgraphs[0].endpoints[0]",
        );
    }
    assert_config_rejected(
        &format!("{base}{}", sg("users", &format!("{good}, \"http://\""), "")),
        "subgraphs[0].endpoints[1]",
    );
    assert_config_rejected(
        &format!(
            "{base}{}",
            sg("users", good, "pool = { min_idle = 30, max = 20 }\n")
        ),
        "subgraphs[0].pool.min_idle",
    );
    assert_config_rejected(
        &format!("{base}{}", sg("users", good, "pool = { max_conns = 5 }\n")),
        "subgraphs[0].pool.max_conns",
    );
    assert_config_rejected(
        &format!("{base}{}", sg("users", good, "retries = 2\n")),
        "subgraphs[0].retries",
    );
}

#[test]
fn metrics_and_probes_describe_the_traffic() {
    let _serial = serial();
    let u = DemoSubgraph::start("users");
    let p1 = DemoSubgraph::start("products-1");
    let p2 = DemoSubgraph::start("products-2");
    let r = DemoSubgraph::start("reviews");
    let health = "interval_ms = 300, timeout_ms = 200, healthy_after = 2, unhealthy_after = 3";
    let no_panic = format!("{health}, panic_mode = false");
    let edge = Edge::start(&ProxySetup {
        max_body_bytes: None,
        subgraphs: vec![
            SubgraphSpec::new("users", [&u])
                .table("pool", "min_idle = 3, max = 7")
                .table("health", health),
            SubgraphSpec::new("products", [&p1, &p2]).table("health", health),
            SubgraphSpec::new("reviews", [&r]).table("health", &no_panic),
        ],
        ..ProxySetup::default()
    });
    let c = Client::default();
    let (users, products) = (edge.route("users"), edge.route("products"));
    assert_eq!(c.get(&edge.admin_url("/healthz"), &[]).status, 200);
    assert_eq!(c.get(&edge.admin_url("/readyz"), &[]).status, 200);

    for _ in 0..5 {
        assert!(c.query(&users, QUERY).is_data());
    }
    assert_eq!(c.query(&users, "mutation { incrementCounter }").status, 200);
    for _ in 0..2 {
        assert_eq!(c.post_raw(&users, b"{oops").status, 400);
    }
    assert_eq!(c.query(&edge.url("/nope/graphql"), QUERY).status, 404);
    for _ in 0..3 {
        assert!(c.query(&products, "{ products { upc } }").is_data());
    }

    // The real exposition text passes Prometheus's own linter.
    let text = c.get(&edge.admin_url("/metrics"), &[]).text();
    fraiseql_edge_tests::promtool::check_metrics("metrics_and_probes_describe_the_traffic", &text);

    let m = metrics(&c, &edge);
    let requests = |sg, status, op| {
        m.get(
            "fraiseql_edge_requests_total",
            &[("subgraph", sg), ("status", status), ("operation", op)],
        )
    };
    assert_eq!(requests("users", "200", "query"), Some(5.0));
    assert_eq!(requests("users", "200", "mutation"), Some(1.0));
    assert_eq!(requests("users", "400", "unknown"), Some(2.0));
    // An unknown path is refused before its body is read: operation unknown.
    assert_eq!(requests("none", "404", "unknown"), Some(1.0));
    assert_eq!(requests("products", "200", "query"), Some(3.0));
    assert_eq!(m.sum("fraiseql_edge_requests_total", &[]), 12.0);
    assert_eq!(
        m.get(
            "fraiseql_edge_request_duration_seconds_count",
            &[("subgraph", "users")]
        ),
        Some(8.0)
    );
    for (sg, ep) in [("users", &u), ("products", &p1), ("products", &p2)] {
        let ep = endpoint(ep);
        let labels = [("subgraph", sg), ("endpoint", ep.as_str())];
        assert_eq!(
            m.get("fraiseql_edge_endpoint_healthy", &labels),
            Some(1.0),
            "{labels:?}"
        );
    }
    let ep_u = endpoint(&u);
    let pool = |m: &Metrics, name, state: Option<&str>| {
        let mut labels = vec![("subgraph", "users"), ("endpoint", ep_u.as_str())];
        labels.extend(state.map(|s| ("state", s)));
        m.get(name, &labels)
    };
    assert_eq!(
        pool(&m, "fraiseql_edge_pool_max_connections", None),
        Some(7.0)
    );
    let mut seen = None;
    let settled = eventually(Duration::from_secs(5), || {
        let m = metrics(&c, &edge);
        let state = m.get(
            "fraiseql_edge_circuit_breaker_state",
            &[("subgraph", "users")],
        );
        let idle = pool(&m, "fraiseql_edge_pool_connections", Some("idle"));
        let busy = pool(&m, "fraiseql_edge_pool_connections", Some("busy"));
        let open = u.stats().connections_open as f64;
        seen = Some((state, idle, busy, open));
        // At least min_idle idle connections, all of them open at the
        // subgraph — which may also hold the health checks' own probe
        // connection (one per endpoint, outside the pool).
        state == Some(0.0)
            && idle.is_some_and(|n| (3.0..=7.0).contains(&n) && (open == n || open == n + 1.0))
            && busy == Some(0.0)
    });
    assert!(
        settled,
        "(breaker state, idle, busy, open at the subgraph): {seen:?}"
    );

    // Every endpoint of `products` (panic mode) and `reviews` (no panic
    // mode) down: not ready because of `reviews` — a subgraph in panic mode
    // is still tried, so it does not take the node out — and /readyz says
    // which.
    for p in [&p1, &p2, &r] {
        p.faults(&json!({"refuse": true}));
    }
    let mut last = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = c.get(&edge.admin_url("/readyz"), &[]);
            let down = r.status == 503;
            last = Some(r);
            down
        }),
        "/readyz stayed {:?}",
        last.map(|r| (r.status, r.text()))
    );
    let ready = c.get(&edge.admin_url("/readyz"), &[]);
    assert!(
        ready.text().contains("reviews")
            && !ready.text().contains("products")
            && !ready.text().contains("users"),
        "{}",
        ready.text()
    );
    // Panic mode (the default): with every endpoint ejected, requests are
    // still tried on them — here they refuse connections, so 502.
    assert_refused(
        &c.query(&products, "{ products { upc } }"),
        502,
        "UPSTREAM_UNAVAILABLE",
    );
    assert!(
        eventually(Duration::from_secs(5), || metrics(&c, &edge)
            .get("fraiseql_edge_panic_mode", &[("subgraph", "products")])
            == Some(1.0)),
        "the panic-mode gauge shows products"
    );
    assert!(
        metrics(&c, &edge).get(
            "fraiseql_edge_panic_mode_requests_total",
            &[("subgraph", "products")]
        ) >= Some(1.0)
    );
    assert!(c.query(&users, QUERY).is_data(), "users is unaffected");
    assert_eq!(c.get(&edge.admin_url("/healthz"), &[]).status, 200);

    for p in [&p1, &p2, &r] {
        p.faults(&json!({"refuse": false}));
    }
    assert!(
        eventually(Duration::from_secs(10), || c
            .get(&edge.admin_url("/readyz"), &[])
            .status
            == 200),
        "/readyz not ready again after recovery"
    );
}

/// Operators force the breaker open and closed and reset it over the gRPC
/// control API, and list subgraphs with their endpoints.
#[test]
fn operators_force_and_reset_the_breaker() {
    use fraiseql_edge_api::v1::{BreakerAction, BreakerState};
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&sg])
            .table("pool", "min_idle = 1")
            .table("health", QUIET_HEALTH),
    ));
    wait_settled(&[&sg]);
    let c = Client::default();
    let url = edge.route("users");
    let ctl = edge.control();

    let listing = ctl.subgraphs().expect("ListSubgraphs");
    assert_eq!(listing[0].name, "users");
    assert_eq!(listing[0].breaker, BreakerState::Closed as i32);
    assert!(listing[0].endpoints[0].healthy);
    assert!(
        listing[0].endpoints[0].url.contains(&sg.addr.to_string()),
        "{listing:?}"
    );

    let s = ctl.breaker("users", BreakerAction::Open).expect("open");
    assert_eq!(
        (s.breaker, s.breaker_forced.as_str()),
        (BreakerState::Open as i32, "open")
    );
    let before = sg.stats().graphql();
    for _ in 0..5 {
        assert_refused(&c.query(&url, QUERY), 503, "CIRCUIT_OPEN");
    }
    assert_eq!(
        sg.stats().graphql(),
        before,
        "a forced-open breaker sends nothing"
    );
    assert_eq!(
        metrics(&c, &edge).get(
            "fraiseql_edge_circuit_breaker_rejections_total",
            &[("subgraph", "users")]
        ),
        Some(5.0)
    );

    let s = ctl.breaker("users", BreakerAction::Reset).expect("reset");
    assert_eq!(
        (s.breaker, s.breaker_forced.as_str()),
        (BreakerState::Closed as i32, "")
    );
    assert!(c.query(&url, QUERY).is_data());

    // Forced closed: failures no longer open it.
    ctl.breaker("users", BreakerAction::Close).expect("close");
    sg.faults(&serde_json::json!({"error_rate": 1.0, "error_status": 503}));
    for _ in 0..10 {
        assert_eq!(c.query(&url, QUERY).status, 503);
    }
    assert_eq!(
        ctl.subgraphs().expect("ListSubgraphs")[0].breaker,
        BreakerState::Closed as i32
    );

    let unknown = ctl.breaker("nope", BreakerAction::Open).unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    assert!(unknown.message().contains("nope"));
    let bad = ctl
        .breaker("users", BreakerAction::Unspecified)
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
}
