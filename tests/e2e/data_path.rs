//! Data-path hardening end to end: a real `fraiseql-edge` in front of real
//! `demo-subgraph` processes, attacked and overloaded the way production
//! traffic does it — slowloris clients, a subgraph stalling mid-body,
//! hundreds of concurrent slow requests, spoofed forwarding headers,
//! random entity typenames, SIGTERM under load. No privileges needed.
//!
//! Runs under `proxy_e2e`'s serial lock: these tests load the machine and
//! must not overlap the proxy tests' correctness deadlines.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use fraiseql_edge_api::v1 as pb;
use fraiseql_edge_tests::{
    graphql::{Client, assert_refused},
    subgraphs::{DemoOptions, DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
    wait::eventually,
};
use serde_json::{Value, json};

use crate::proxy_e2e::serial;

const QUERY: &str = "{ users(first: 2) { id name } }";
/// Health checks that stay out of the way: one at start, then none for a minute.
const QUIET_HEALTH: &str = "interval_ms = 60000, timeout_ms = 5000";

/// A subgraph answering every request (health checks too) after 1.5 s.
fn slow_subgraph() -> DemoSubgraph {
    DemoSubgraph::start_with(
        "users",
        &DemoOptions {
            latency_ms: 1500,
            ..DemoOptions::default()
        },
    )
}

/// The edge in front of `sg` alone, health checks out of the way.
fn quiet_edge(sg: &DemoSubgraph) -> Edge {
    Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [sg]).table("health", QUIET_HEALTH),
    ))
}

/// Opens `n` connections that each send a request line and then a header
/// one byte at a time, forever (until closed by the server or dropped).
struct Slowloris {
    socks: Vec<TcpStream>,
}

impl Slowloris {
    fn open(addr: SocketAddr, n: usize) -> Self {
        let socks = (0..n)
            .map(|i| {
                let mut s =
                    TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
                s.write_all(b"POST /users/graphql HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
                    .expect("request line");
                s.set_nonblocking(true).expect("nonblocking");
                s
            })
            .collect();
        Self { socks }
    }

    /// One more header byte on every connection still open; returns how
    /// many the server has closed (a read sees EOF or a reset, or a write fails).
    fn trickle(&mut self) -> usize {
        let mut closed = 0;
        for s in &mut self.socks {
            let mut buf = [0u8; 1024];
            let gone = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue, // a 408 or 400 before the close
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if gone || s.write(b"a").is_err() {
                closed += 1;
            }
        }
        closed
    }
}

#[test]
fn slowloris_connections_are_cut_at_the_header_deadline_and_queries_still_flow() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    // The default header deadline (10 s): what a user runs.
    let edge = quiet_edge(&sg);
    let c = Client::new(Duration::from_secs(10));
    let url = edge.route("users");
    let mut attack = Slowloris::open(edge.graphql, 300);
    let started = Instant::now();
    let mut served = 0;
    let mut closed = 0;
    // Well past the 10 s header deadline, and far short of any OS timeout:
    // only the header deadline can close these connections.
    while started.elapsed() < Duration::from_secs(25) {
        closed = attack.trickle();
        let r = c.query(&url, QUERY);
        assert!(
            r.is_data(),
            "a legitimate query during the attack: {} {}",
            r.status,
            r.text()
        );
        served += 1;
        if closed == attack.socks.len() {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{closed}/300 slowloris connections closed after {:?}; {served} queries served meanwhile",
        started.elapsed()
    );
    assert_eq!(closed, 300, "connections trickling headers must be closed");
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "closed before the deadline"
    );
}

#[test]
fn a_subgraph_stalling_mid_body_frees_its_slot_and_the_client_gets_an_error() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&sg])
            .table("pool", "min_idle = 0, max = 2, acquire_timeout_ms = 500")
            .table("timeouts", "body_idle_ms = 1000")
            .table("health", QUIET_HEALTH),
    ));
    let c = Client::new(Duration::from_secs(20));
    let url = edge.route("users");
    assert!(c.query(&url, QUERY).is_data());
    sg.faults(&json!({"stall_body": true}));
    // More stalled requests than the pool has slots: leaked slots would
    // turn the later ones into UPSTREAM_SATURATED.
    for i in 0..4 {
        let t = Instant::now();
        match c.try_query(&url, QUERY) {
            Ok(r) => assert!(
                !r.is_data(),
                "stalled request {i} answered with data: {}",
                r.text()
            ),
            Err(e) => println!("stalled request {i}: {e} after {:?}", t.elapsed()),
        }
        assert!(t.elapsed() < Duration::from_secs(15), "request {i} hung");
    }
    sg.faults(&json!({"stall_body": false}));
    for i in 0..4 {
        let r = c.query(&url, QUERY);
        assert!(
            r.is_data(),
            "after the stall, query {i}: {} {}",
            r.status,
            r.text()
        );
    }
    let m = c.metrics(&edge.admin_url("/metrics"));
    let cut = m.get(
        "fraiseql_edge_response_body_timeouts_total",
        &[("subgraph", "users"), ("reason", "idle")],
    );
    assert_eq!(cut, Some(4.0), "each stalled body was cut off once");
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_frees_the_slot() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = Edge::start(
        &ProxySetup::one(
            SubgraphSpec::new("users", [&sg])
                .table("pool", "min_idle = 0, max = 1, acquire_timeout_ms = 500")
                .table("health", QUIET_HEALTH),
        )
        .proxy("client_write_timeout_ms = 1000"),
    );
    // A 20 MB answer: far more than the socket buffers on the way hold.
    let aliases: String = (0..20).map(|i| format!(" a{i}: echo(value: $v)")).collect();
    let body = json!({
        "query": format!("query($v: String!) {{{aliases} }}"),
        "variables": {"v": "x".repeat(1_000_000)},
    })
    .to_string();
    // A small receive buffer, as a slow mobile client's window would be.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    sock.connect(&edge.graphql.into()).expect("connect");
    let mut stuck: TcpStream = sock.into();
    write!(
        stuck,
        "POST /users/graphql HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    assert!(
        eventually(Duration::from_secs(10), || sg.stats().graphql() == 1),
        "the big request reached the subgraph"
    );
    // The client never reads. Its connection holds the only pool slot
    // until the edge gives up writing to it.
    let c = Client::new(Duration::from_secs(10));
    let url = edge.route("users");
    assert!(
        eventually(Duration::from_secs(15), || c.query(&url, QUERY).is_data()),
        "the stuck reader kept the pool slot"
    );
    let mut buf = [0u8; 65536];
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = 0usize;
    let closed = loop {
        match stuck.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                break false;
            }
            Err(_) => break true,
        }
    };
    println!("the stuck reader got {got} bytes before the close");
    assert!(closed, "the edge closed the stuck reader's connection");
    assert!(got < 20_000_000, "the answer was cut, not completed");
}

#[test]
fn a_slow_but_live_body_is_not_cut_off() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&sg])
            .table("timeouts", "body_idle_ms = 1500")
            .table("health", QUIET_HEALTH),
    ));
    let c = Client::new(Duration::from_secs(60));
    let url = edge.route("users");
    let direct = c.query(&sg.url(), QUERY);
    sg.faults(&json!({"slow_body_ms": 300}));
    let r = c.query(&url, QUERY);
    assert!(r.is_data(), "{} {}", r.status, r.text());
    assert_eq!(r.body, direct.body, "the slow body arrived whole");
}

#[test]
fn three_hundred_concurrent_slow_requests_eject_nothing() {
    let _serial = serial();
    let sg = slow_subgraph();
    // Default pool, health, breaker and timeouts: what a user runs.
    let edge = Edge::start(&ProxySetup::one(SubgraphSpec::new("users", [&sg])));
    let url = edge.route("users");
    let c = Client::new(Duration::from_secs(30));
    let barrier = Arc::new(Barrier::new(300));
    // Two health checks (every 5 s) happen inside the run.
    let run = Duration::from_secs(13);
    let clients: Vec<_> = (0..300)
        .map(|_| {
            let (c, url, barrier) = (c.clone(), url.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let (mut ok, mut saturated, mut other) = (0u64, 0u64, Vec::new());
                while started.elapsed() < run {
                    match c.try_query(&url, QUERY) {
                        Ok(r) if r.is_data() => ok += 1,
                        Ok(r) if r.code().as_deref() == Some("UPSTREAM_SATURATED") => {
                            saturated += 1;
                            thread::sleep(Duration::from_millis(100));
                        }
                        Ok(r) => other.push(format!("{} {}", r.status, r.text())),
                        Err(e) => other.push(e.to_string()),
                    }
                }
                (ok, saturated, other)
            })
        })
        .collect();
    let (mut ok, mut saturated, mut other) = (0, 0, Vec::new());
    for t in clients {
        let (o, s, f) = t.join().expect("client thread");
        ok += o;
        saturated += s;
        other.extend(f);
    }
    let m = Client::default().metrics(&edge.admin_url("/metrics"));
    let transitions = m.sum("fraiseql_edge_endpoint_health_transitions_total", &[]);
    let breaker = m.sum("fraiseql_edge_circuit_breaker_transitions_total", &[]);
    println!(
        "{ok} answered, {saturated} saturated, {} other; health transitions {transitions}, \
         breaker transitions {breaker}; subgraph {:?}",
        other.len(),
        sg.stats()
    );
    assert_eq!(transitions, 0.0, "an endpoint was ejected under load");
    assert_eq!(breaker, 0.0, "the breaker moved under load");
    assert!(
        other.is_empty(),
        "only answers or 503 UPSTREAM_SATURATED: {:?}",
        &other[..other.len().min(5)]
    );
    assert!(ok >= 100, "the subgraph served the pool's worth of queries");
    assert!(
        sg.stats().health_checks >= 2,
        "the health checks ran during the load"
    );
}

#[test]
fn forwarding_headers_are_rebuilt_from_the_trusted_client_address() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let headers_seen = |edge: &Edge, sent: &[(&str, &str)]| -> Value {
        let q = r#"{ xff: requestHeader(name: "x-forwarded-for") real: requestHeader(name: "x-real-ip") fwd: requestHeader(name: "forwarded") }"#;
        let mut req = ureq::post(&edge.route("users")).header("content-type", "application/json");
        for (k, v) in sent {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(json!({ "query": q }).to_string()).expect("query");
        let v: Value = serde_json::from_reader(resp.body_mut().as_reader()).expect("JSON");
        v["data"].clone()
    };
    let spoof = [
        ("x-forwarded-for", "1.1.1.1, 6.6.6.6"),
        ("x-real-ip", "2.2.2.2"),
        ("forwarded", "for=3.3.3.3"),
    ];
    {
        // The test connects from 127.0.0.1, which is not trusted here.
        let edge = Edge::start(
            &ProxySetup::one(SubgraphSpec::new("users", [&sg]).table("health", QUIET_HEALTH))
                .proxy(r#"trusted_proxies = ["10.0.0.0/8"]"#),
        );
        let seen = headers_seen(&edge, &spoof);
        assert_eq!(
            seen,
            json!({"xff": ["127.0.0.1"], "real": ["127.0.0.1"], "fwd": []})
        );
    }
    let edge = Edge::start(
        &ProxySetup::one(SubgraphSpec::new("users", [&sg]).table("health", QUIET_HEALTH))
            .proxy(r#"trusted_proxies = ["127.0.0.0/8"]"#),
    );
    let seen = headers_seen(&edge, &spoof);
    assert_eq!(
        seen,
        json!({"xff": ["6.6.6.6, 127.0.0.1"], "real": ["6.6.6.6"], "fwd": []}),
        "behind a trusted proxy the rightmost untrusted address is the client"
    );
}

#[test]
fn random_typenames_add_a_bounded_number_of_series() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    // Default settings: no SDL, so the first 100 typenames are labels.
    // The test client (loopback) is the trusted router.
    let edge = Edge::start(
        &ProxySetup::one(SubgraphSpec::new("users", [&sg]).table("health", QUIET_HEALTH))
            .section("[authorization.trusted_router]\ncidrs = [\"127.0.0.0/8\"]"),
    );
    let c = Client::default();
    let url = edge.route("users");
    let doc = "query($representations: [_Any!]!) { _entities(representations: $representations) { ... on User { id } } }";
    for batch in 0..10 {
        let reps: Vec<Value> = (0..1000)
            .map(|i| json!({"__typename": format!("T{batch}x{i}"), "id": "1"}))
            .collect();
        let body = json!({"query": doc, "variables": {"representations": reps}});
        let r = c.post_json(&url, &body);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let reps = vec![json!({"__typename": "User", "id": "1"})];
    let r = c.post_json(
        &url,
        &json!({"query": doc, "variables": {"representations": reps}}),
    );
    assert!(r.is_data());
    let m = c.metrics(&edge.admin_url("/metrics"));
    let series = m.matching("fraiseql_edge_entities_total", &[("subgraph", "users")]);
    println!("{} series after 10 000 random typenames", series.len());
    // 100 named typenames and `other`, each with two outcomes.
    assert!(series.len() <= 2 * 101, "{} series", series.len());
    let other = m.sum(
        "fraiseql_edge_entities_total",
        &[("subgraph", "users"), ("typename", "other")],
    );
    assert_eq!(
        other,
        10_000.0 - 100.0 + 1.0,
        "everything past the cap counted as `other`"
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let _serial = serial();
    let sg = slow_subgraph();
    let mut edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&sg]).table("health", QUIET_HEALTH),
    ));
    let url = edge.route("users");
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || Client::new(Duration::from_secs(20)).try_query(&url, QUERY))
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || sg.stats().in_flight == 20),
        "20 requests in flight: {:?}",
        sg.stats()
    );
    let graphql = edge.graphql;
    let pid = nix::unistd::Pid::from_raw(edge.daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    assert!(
        eventually(Duration::from_secs(1), || TcpStream::connect(graphql)
            .is_err()),
        "new connections are refused while draining"
    );
    let mut failed = Vec::new();
    for t in clients {
        match t.join().expect("client") {
            Ok(r) if r.is_data() => {}
            Ok(r) => failed.push(format!("{} {}", r.status, r.text())),
            Err(e) => failed.push(e.to_string()),
        }
    }
    assert!(failed.is_empty(), "in-flight requests failed: {failed:?}");
    let status = edge
        .daemon
        .wait_exit(Duration::from_secs(10))
        .expect("exited");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        edge.daemon.log()
    );
    assert!(
        edge.daemon.log().contains("drained"),
        "{}",
        edge.daemon.log()
    );
}

#[test]
fn smaller_edges_of_the_http_contract() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = quiet_edge(&sg);
    let c = Client::default();
    let url = edge.route("users");
    let r = c.get(
        &url,
        &[
            ("query", "{ __typename }"),
            ("query", "mutation { incrementCounter }"),
        ],
    );
    assert_refused(&r, 400, "BAD_REQUEST");
    let r = c.get(
        &url,
        &[
            ("query", QUERY),
            ("operationName", "A"),
            ("operationName", "B"),
        ],
    );
    assert_refused(&r, 400, "BAD_REQUEST");
    let body = json!({"query": QUERY}).to_string();
    let r = c
        .try_post(
            &url,
            Some("application/graphql-response+json"),
            body.as_bytes(),
        )
        .expect("POST");
    assert_refused(&r, 415, "UNSUPPORTED_MEDIA_TYPE");
    assert_eq!(sg.stats().graphql(), 0, "nothing reached the subgraph");

    // The admin listener only reads, so a web page cannot drive the daemon
    // through it; the control API takes no call without a token.
    for ct in [None, Some("text/plain"), Some("application/json")] {
        let r = c
            .try_post(&edge.admin_url("/v1/subgraphs/users/breaker/open"), ct, b"")
            .expect("POST");
        assert_eq!(r.status, 405, "{ct:?}");
    }
    let ctl = edge.control();
    let mut anonymous = ctl.with_token(None);
    let refused = ctl
        .run(anonymous.set_breaker(pb::SetBreakerRequest {
            subgraph: "users".into(),
            action: pb::BreakerAction::Open as i32,
        }))
        .expect_err("a call without a token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        c.query(&url, QUERY).is_data(),
        "the breaker was not forced open"
    );
}

/// One POST of `QUERY` with ureq, for its headers.
fn post_with_headers(url: &str) -> (u16, Option<String>, http_headers::Headers) {
    let mut resp = ureq::post(url)
        .header("content-type", "application/json")
        .config()
        .http_status_as_error(false)
        .build()
        .send(json!({ "query": QUERY }).to_string())
        .expect("POST");
    let headers = http_headers::Headers::of(resp.headers());
    let body: Value = serde_json::from_reader(resp.body_mut().as_reader()).unwrap_or(Value::Null);
    let code = body["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_string);
    (resp.status().as_u16(), code, headers)
}

mod http_headers {
    /// The headers a test looks at, as text.
    pub struct Headers(Vec<(String, String)>);

    impl Headers {
        pub fn of(h: &ureq::http::HeaderMap) -> Self {
            Self(
                h.iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
                    .collect(),
            )
        }

        pub fn get(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
    }
}

#[test]
fn the_identity_rate_limit_admits_the_burst_then_refuses_with_headers() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    // One request per second sustained, a burst of 5; escalation off.
    let edge = Edge::start(
        &ProxySetup::one(SubgraphSpec::new("users", [&sg]).table("health", QUIET_HEALTH))
            .rate_limit("requests_per_minute = 60\nburst = 5\nescalation = { threshold = 0 }"),
    );
    let url = edge.route("users");
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        outcomes.push(post_with_headers(&url));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "too slow to test a burst"
    );
    let statuses: Vec<u16> = outcomes.iter().map(|o| o.0).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let (_, code, headers) = &outcomes[5];
    assert_eq!(code.as_deref(), Some("RATE_LIMITED"));
    assert_eq!(headers.get("ratelimit-limit"), Some("5"));
    assert_eq!(headers.get("ratelimit-remaining"), Some("0"));
    let retry: u64 = headers
        .get("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=1).contains(&retry), "Retry-After {retry}");

    // Another client is unaffected.
    let other = "127.0.0.9".parse().unwrap();
    let mut c = fraiseql_edge_tests::loopback::LoopbackClient::connect(
        other,
        edge.graphql,
        Duration::from_secs(10),
    )
    .expect("connect from 127.0.0.9");
    for i in 0..5 {
        let r = c.query("/users/graphql", QUERY).expect("answer");
        assert!(r.is_data(), "other client, request {i}: {}", r.text());
    }
    assert_eq!(
        sg.stats().graphql(),
        10,
        "refused requests never reached the subgraph"
    );
    // A second later the first client has one more request.
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(post_with_headers(&url).0, 200);
    let m = Client::default().metrics(&edge.admin_url("/metrics"));
    assert_eq!(
        m.get("fraiseql_edge_rate_limited_total", &[("layer", "identity")]),
        Some(3.0)
    );
}

#[test]
fn the_default_identity_limit_is_on() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    // An empty [rate_limit]: 1000 requests a minute, a burst of 100.
    let edge = Edge::start(
        &ProxySetup::one(SubgraphSpec::new("users", [&sg]).table("health", QUIET_HEALTH))
            .rate_limit(""),
    );
    let c = Client::default();
    let url = edge.route("users");
    let started = Instant::now();
    let mut refused = 0;
    for _ in 0..150 {
        let r = c.query(&url, QUERY);
        if r.status == 429 {
            refused += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let allowed_at_most = 100.0 + 1000.0 / 60.0 * secs;
    println!("150 requests in {secs:.2} s: {refused} refused (at most {allowed_at_most:.0} pass)");
    assert!(150.0 - f64::from(refused) <= allowed_at_most.floor() + 1.0);
    assert!(refused > 0, "the default limit refused nothing");
}
