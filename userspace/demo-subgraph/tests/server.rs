//! Starts the real `demo-subgraph` binary on free loopback ports and checks
//! what tests and benchmarks of the proxy rely on: GraphQL over POST and GET,
//! the counters, and every fault control.
//!
//! The client is a few lines of blocking HTTP/1.1 over `std::net`, so that
//! connection counts are exactly the connections this file opens.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_demo-subgraph");
const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- harness

/// A running demo-subgraph, killed on drop.
struct Subgraph {
    child: Child,
    graphql: SocketAddr,
    admin: SocketAddr,
}

impl Subgraph {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--name", "itest"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo-subgraph");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).expect("ready line");
        let (graphql, admin) =
            parse_ready_line(&line).unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        Self {
            child,
            graphql,
            admin,
        }
    }

    fn stats(&self) -> Value {
        let resp = request(self.admin, "GET", "/stats", None).unwrap();
        assert_eq!(resp.status, 200);
        resp.json()
    }

    fn reset_stats(&self) {
        assert_eq!(
            request(self.admin, "POST", "/stats/reset", Some(""))
                .unwrap()
                .status,
            200
        );
    }

    fn set_faults(&self, patch: Value) -> Value {
        let resp = request(self.admin, "POST", "/faults", Some(&patch.to_string())).unwrap();
        assert_eq!(resp.status, 200, "{}", resp.body);
        resp.json()
    }

    fn post(&self, query: &str) -> Response {
        let body = json!({ "query": query }).to_string();
        request(self.graphql, "POST", "/graphql", Some(&body)).unwrap()
    }

    /// Posts `query` with `Idempotency-Key: key`.
    fn post_keyed(&self, key: &str, query: &str) -> Response {
        keyed(self.graphql, key, query)
    }

    fn idempotency(&self) -> Value {
        let resp = request(self.admin, "GET", "/idempotency", None).unwrap();
        assert_eq!(resp.status, 200);
        resp.json()
    }

    fn stock(&self, item: &str) -> Value {
        let query = format!(r#"{{ stock(item: "{item}") }}"#);
        self.post(&query).json()["data"]["stock"].clone()
    }

    /// Polls `/stats` until `check` holds.
    fn wait_for_stats(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let stats = self.stats();
            if check(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Subgraph {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `demo-subgraph <name> listening on <addr> (admin <addr>)`
fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line
        .trim_end()
        .strip_prefix("demo-subgraph itest listening on ")?;
    let (graphql, admin) = rest.split_once(" (admin ")?;
    Some((
        graphql.parse().ok()?,
        admin.strip_suffix(')')?.parse().ok()?,
    ))
}

#[derive(Debug)]
struct Response {
    status: u16,
    /// Header lines, lower-cased.
    headers: Vec<String>,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}:");
        self.headers
            .iter()
            .find_map(|h| h.strip_prefix(&prefix))
            .map(str::trim)
    }
}

/// One request on a fresh connection (`Connection: close`).
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> io::Result<Response> {
    let mut stream = connect(addr)?;
    send(&mut stream, method, path, body, true)
}

/// Posts `query` with `Idempotency-Key: key` on a fresh connection.
fn keyed(addr: SocketAddr, key: &str, query: &str) -> Response {
    let mut conn = connect(addr).unwrap();
    let body = json!({ "query": query }).to_string();
    let headers = [("Idempotency-Key", key)];
    write_request(&mut conn, "POST", "/graphql", &headers, Some(&body), true).unwrap();
    read_response(&conn).unwrap()
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// Sends one HTTP/1.1 request on `stream` and reads its response.
fn send(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    body: Option<&str>,
    close: bool,
) -> io::Result<Response> {
    write_request(stream, method, path, &[], body, close)?;
    read_response(stream)
}

/// Reads one HTTP/1.1 response from `stream`.
fn read_response(stream: &TcpStream) -> io::Result<Response> {
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    let length = content_length(&headers);
    let mut body = Vec::new();
    match length {
        Some(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }
        None if headers.iter().any(|h| h == "transfer-encoding: chunked") => loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).map_err(io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        },
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8(body).map_err(io::Error::other)?,
    })
}

/// Writes one HTTP/1.1 request, with `headers` after `Host`.
fn write_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    close: bool,
) -> io::Result<()> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or(""));
    stream.write_all(head.as_bytes())
}

/// Reads a status line and headers (lower-cased), up to the blank line.
fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<String>)> {
    let mut status_line = String::new();
    if reader.read_line(&mut status_line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    Ok((status, headers))
}

fn content_length(headers: &[String]) -> Option<usize> {
    headers
        .iter()
        .find_map(|h| h.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A GraphQL response read as its bytes arrive, to see how the body is sent.
struct Arrival {
    stream: TcpStream,
    status: u16,
    /// The announced `Content-Length`.
    length: usize,
    /// The body bytes received so far.
    body: Vec<u8>,
    /// How many reads returned body bytes.
    reads: usize,
}

impl Arrival {
    /// Posts `query` on a fresh connection and reads the response head (and
    /// any body bytes that came with it). The response must have a length.
    fn start(addr: SocketAddr, query: &str) -> io::Result<Self> {
        let mut stream = connect(addr)?;
        let body = json!({ "query": query }).to_string();
        write_request(&mut stream, "POST", "/graphql", &[], Some(&body), true)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let (status, headers) = read_head(&mut reader)?;
        let length = content_length(&headers)
            .ok_or_else(|| io::Error::other(format!("no content-length in {headers:?}")))?;
        let body = reader.buffer().to_vec();
        Ok(Self {
            stream,
            status,
            length,
            reads: usize::from(!body.is_empty()),
            body,
        })
    }

    /// Reads once, waiting at most `wait`; returns how many bytes came (0: none
    /// in time).
    fn read_once(&mut self, wait: Duration) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(wait))?;
        let mut buf = [0; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.body.extend_from_slice(&buf[..n]);
                self.reads += 1;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Waits for the first body byte, then reads until `quiet` passes without one.
    fn read_until_quiet(&mut self, quiet: Duration) -> io::Result<()> {
        while self.body.is_empty() {
            if self.read_once(TIMEOUT)? == 0 {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        while self.read_once(quiet)? > 0 {}
        Ok(())
    }

    /// Reads the rest of the body (each read waiting at most [`TIMEOUT`]).
    fn finish(&mut self) -> io::Result<()> {
        while self.body.len() < self.length {
            if self.read_once(TIMEOUT)? == 0 {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        Ok(())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------- tests

#[test]
fn queries_over_post_and_get_on_both_paths() {
    let sg = Subgraph::start(&[]);

    for path in ["/graphql", "/"] {
        let body = json!({"query": "{ user(id: \"1\") { name } }"}).to_string();
        let resp = request(sg.graphql, "POST", path, Some(&body)).unwrap();
        assert_eq!(resp.status, 200, "POST {path}: {}", resp.body);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.json(), json!({"data": {"user": {"name": "user-1"}}}));

        let query = "query Echo($v: String!) { echo(value: $v) }";
        let uri = format!(
            "{path}?query={}&variables={}&operationName=Echo",
            encode(query),
            encode(r#"{"v":"hello"}"#)
        );
        let resp = request(sg.graphql, "GET", &uri, None).unwrap();
        assert_eq!(resp.status, 200, "GET {path}: {}", resp.body);
        assert_eq!(resp.json(), json!({"data": {"echo": "hello"}}));
    }

    let resp = sg.post("{ boom }");
    assert_eq!(resp.status, 200);
    let body = resp.json();
    assert_eq!(body["data"], json!({"boom": null}));
    assert_eq!(body["errors"][0]["message"], "boom");

    let resp = sg.post("{ bigList(n: 200000) }");
    assert_eq!(
        resp.json()["data"]["bigList"].as_array().unwrap().len(),
        200_000
    );

    let resp = request(sg.graphql, "POST", "/graphql", Some("not json")).unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.json()["errors"][0]["extensions"]["code"],
        "INVALID_REQUEST"
    );

    assert_eq!(
        sg.post("{ __typename }").json(),
        json!({"data": {"__typename": "Query"}})
    );
    let uri = format!("/graphql?query={}", encode("query {\n  __typename\n}"));
    assert_eq!(request(sg.graphql, "GET", &uri, None).unwrap().status, 200);

    let stats = sg.stats();
    assert_eq!(stats["name"], "itest");
    assert_eq!(stats["requests"], 9);
    assert_eq!(stats["health_checks"], 2);
    assert_eq!(stats["mutations"], 0);
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(stats["max_in_flight"], 1);
}

#[test]
fn mutations_run_once_and_never_over_get() {
    let sg = Subgraph::start(&[]);

    let resp = sg.post("mutation { incrementCounter }");
    assert_eq!(resp.json(), json!({"data": {"incrementCounter": 1}}));
    assert_eq!(sg.stats()["mutations"], 1);

    let uri = format!("/graphql?query={}", encode("mutation { incrementCounter }"));
    let resp = request(sg.graphql, "GET", &uri, None).unwrap();
    assert_eq!(resp.status, 405, "{}", resp.body);
    assert_eq!(resp.header("allow"), Some("post"));
    assert_eq!(
        resp.json()["errors"][0]["extensions"]["code"],
        "MUTATION_OVER_GET"
    );
    assert_eq!(
        sg.stats()["mutations"],
        1,
        "GET must not execute the mutation"
    );

    let resp = sg.post(r#"mutation { createUser(name: "ann") { id name } }"#);
    assert_eq!(
        resp.json(),
        json!({"data": {"createUser": {"id": "101", "name": "ann"}}})
    );
    let stats = sg.stats();
    assert_eq!(
        (stats["mutations"].clone(), stats["requests"].clone()),
        (json!(2), json!(3))
    );

    sg.reset_stats();
    let stats = sg.stats();
    assert_eq!(
        (stats["mutations"].clone(), stats["requests"].clone()),
        (json!(0), json!(0))
    );
}

#[test]
fn connections_are_counted() {
    let sg = Subgraph::start(&[]);
    let mut conns: Vec<TcpStream> = (0..3).map(|_| connect(sg.graphql).unwrap()).collect();
    for conn in &mut conns {
        // Two requests per connection: keep-alive, so still three connections.
        for _ in 0..2 {
            let body = json!({"query": "{ echo(value: \"x\") }"}).to_string();
            let resp = send(conn, "POST", "/graphql", Some(&body), false).unwrap();
            assert_eq!(resp.status, 200);
        }
    }
    let stats = sg.stats();
    assert_eq!(stats["connections_accepted"], 3, "{stats}");
    assert_eq!(stats["connections_open"], 3, "{stats}");
    assert_eq!(stats["max_connections_open"], 3, "{stats}");
    assert_eq!(stats["requests"], 6, "{stats}");

    conns.truncate(1);
    let stats = sg.wait_for_stats("two connections closed", |s| s["connections_open"] == 1);
    assert_eq!(stats["max_connections_open"], 3);
    sg.reset_stats();
    let stats = sg.stats();
    assert_eq!(stats["connections_accepted"], 0);
    assert_eq!(
        stats["max_connections_open"], 1,
        "high water restarts at the open count"
    );
    drop(conns);
    sg.wait_for_stats("all connections closed", |s| s["connections_open"] == 0);
}

#[test]
fn error_rate_answers_with_the_error_status() {
    let sg = Subgraph::start(&[]);
    let faults = sg.set_faults(json!({"error_rate": 1.0}));
    assert_eq!(
        faults,
        json!({"latency_ms": 0, "error_rate": 1.0, "error_status": 503, "refuse": false,
               "hang": false, "stall_body": false, "slow_body_ms": 0,
               "fail_field": null, "fail_times": 0, "fail_status": 503})
    );
    let resp = sg.post("{ echo(value: \"x\") }");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.json(),
        json!({"errors": [{"message": "injected fault"}]})
    );

    sg.set_faults(json!({"error_status": 500}));
    assert_eq!(sg.post("{ __typename }").status, 500);
    assert_eq!(
        sg.stats()["health_checks"],
        1,
        "health checks count even when failed"
    );

    sg.set_faults(json!({"error_rate": 0.0}));
    assert_eq!(sg.post("{ __typename }").status, 200);
    let current = request(sg.admin, "GET", "/faults", None).unwrap().json();
    assert_eq!(current["error_status"], 500);

    for bad in [
        json!({"error_rate": 2.0}),
        json!({"latency": 1}),
        json!({"error_status": 42}),
        json!({"fail_field": "nope", "fail_times": 1}),
        json!({"fail_times": 1}),
        json!({"fail_status": 42}),
    ] {
        let resp = request(sg.admin, "POST", "/faults", Some(&bad.to_string())).unwrap();
        assert_eq!(resp.status, 400, "{bad}: {}", resp.body);
        assert_eq!(resp.json()["code"], "INVALID_FAULTS");
    }

    // The same faults from the command line.
    let sg = Subgraph::start(&["--error-rate", "1", "--error-status", "502"]);
    assert_eq!(sg.post("{ __typename }").status, 502);
}

#[test]
fn refuse_closes_the_port_and_its_connections_until_lifted() {
    let sg = Subgraph::start(&[]);
    let mut conn = connect(sg.graphql).unwrap();
    let body = json!({"query": "{ __typename }"}).to_string();
    assert_eq!(
        send(&mut conn, "POST", "/", Some(&body), false)
            .unwrap()
            .status,
        200
    );

    assert_eq!(sg.set_faults(json!({"refuse": true}))["refuse"], true);
    let err = TcpStream::connect(sg.graphql).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    let mut buf = [0; 16];
    match conn.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("open connection not closed: {other:?}"),
    }
    sg.wait_for_stats("connections dropped", |s| s["connections_open"] == 0);
    // Still refusing after a repeated request.
    sg.set_faults(json!({"refuse": true}));
    assert!(TcpStream::connect(sg.graphql).is_err());

    assert_eq!(sg.set_faults(json!({"refuse": false}))["refuse"], false);
    assert_eq!(sg.post("{ __typename }").status, 200);
    assert_eq!(sg.stats()["connections_accepted"], 2);
}

#[test]
fn hang_and_latency_delay_answers() {
    let sg = Subgraph::start(&[]);
    sg.set_faults(json!({"hang": true}));
    let addr = sg.graphql;
    let pending = thread::spawn(move || {
        let body = json!({"query": "{ echo(value: \"late\") }"}).to_string();
        request(addr, "POST", "/graphql", Some(&body))
    });
    sg.wait_for_stats("a hung request", |s| s["in_flight"] == 1);
    thread::sleep(Duration::from_millis(200));
    assert!(!pending.is_finished(), "a hung request was answered");
    sg.set_faults(json!({"hang": false}));
    let resp = pending.join().unwrap().unwrap();
    assert_eq!(resp.json(), json!({"data": {"echo": "late"}}));

    sg.set_faults(json!({"latency_ms": 300}));
    let started = Instant::now();
    assert_eq!(sg.post("{ __typename }").status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn stall_body_sends_the_head_and_half_the_body_until_lifted() {
    let sg = Subgraph::start(&[]);
    let faults = sg.set_faults(json!({"stall_body": true}));
    assert_eq!(faults["stall_body"], true);
    let bad = json!({"stall_body": "yes"}).to_string();
    let resp = request(sg.admin, "POST", "/faults", Some(&bad)).unwrap();
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(
        request(sg.admin, "GET", "/faults", None).unwrap().json()["stall_body"],
        true
    );

    let query = r#"{ echo(value: "stalled in the middle of the body") }"#;
    let expected = json!({"data": {"echo": "stalled in the middle of the body"}});
    let mut stalled = Arrival::start(sg.graphql, query).unwrap();
    assert_eq!(stalled.status, 200);
    assert_eq!(
        stalled.length,
        expected.to_string().len(),
        "the full length is announced"
    );
    stalled
        .read_until_quiet(Duration::from_millis(500))
        .unwrap();
    assert_eq!(
        stalled.body.len(),
        stalled.length / 2,
        "{:?}",
        String::from_utf8_lossy(&stalled.body)
    );

    // Health checks stall too, and the admin port is not affected.
    let mut health = Arrival::start(sg.graphql, "{ __typename }").unwrap();
    health.read_until_quiet(Duration::from_millis(500)).unwrap();
    assert_eq!(health.body.len(), health.length / 2);
    let stats = sg.stats();
    assert_eq!(
        (&stats["requests"], &stats["health_checks"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(
        stats["connections_open"], 2,
        "stalled connections stay open"
    );
    assert_eq!(stalled.read_once(Duration::from_millis(200)).unwrap(), 0);

    // Lifted: the stalled responses finish.
    sg.set_faults(json!({"stall_body": false}));
    stalled.finish().unwrap();
    assert_eq!(stalled.json(), expected);
    health.finish().unwrap();
    assert_eq!(health.json(), json!({"data": {"__typename": "Query"}}));
    assert_eq!(sg.post("{ __typename }").status, 200);
}

#[test]
fn slow_body_sends_the_whole_body_spread_over_time() {
    let sg = Subgraph::start(&[]);
    assert_eq!(
        sg.set_faults(json!({"slow_body_ms": 100}))["slow_body_ms"],
        100
    );
    let value = "x".repeat(64);
    let expected = json!({"data": {"echo": value}});
    let started = Instant::now();
    let mut slow = Arrival::start(sg.graphql, &format!(r#"{{ echo(value: "{value}") }}"#)).unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(slow.length, expected.to_string().len());
    slow.finish().unwrap();
    assert_eq!(slow.json(), expected);
    assert!(slow.reads >= 2, "the body came in one piece");
    // Every 16-byte piece after the first waits 100 ms: a lower bound that
    // holds however loaded the machine is.
    let pieces = u32::try_from(slow.length.div_ceil(16)).unwrap();
    let least = Duration::from_millis(100) * (pieces - 1);
    assert!(
        started.elapsed() >= least,
        "{:?} < {least:?}",
        started.elapsed()
    );

    sg.set_faults(json!({"slow_body_ms": 0}));
    assert_eq!(sg.post("{ __typename }").status, 200);
}

#[test]
fn request_header_returns_the_headers_as_received() {
    let sg = Subgraph::start(&[]);
    let query = r#"{ xff: requestHeader(name: "X-Forwarded-For")
        fwd: requestHeader(name: "forwarded") ip: requestHeader(name: "x-real-ip") }"#;
    let headers = [
        ("X-Forwarded-For", "203.0.113.7"),
        ("Forwarded", "for=203.0.113.7;proto=https"),
        ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
    ];
    let expected = json!({"data": {
        "xff": ["203.0.113.7", "10.0.0.1, 10.0.0.2"],
        "fwd": ["for=203.0.113.7;proto=https"],
        "ip": [],
    }});

    let mut conn = connect(sg.graphql).unwrap();
    let body = json!({ "query": query }).to_string();
    write_request(&mut conn, "POST", "/graphql", &headers, Some(&body), true).unwrap();
    let resp = read_response(&conn).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json(), expected);

    let mut conn = connect(sg.graphql).unwrap();
    let uri = format!("/?query={}", encode(query));
    write_request(&mut conn, "GET", &uri, &headers, None, true).unwrap();
    assert_eq!(read_response(&conn).unwrap().json(), expected);
}

#[test]
fn crash_exits_with_code_1() {
    let mut sg = Subgraph::start(&[]);
    // The process dies before it answers, so the request itself fails.
    let _ = request(sg.admin, "POST", "/crash", Some(""));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = sg.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after /crash");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    assert!(TcpStream::connect(sg.graphql).is_err());
}

#[test]
fn print_sdl_and_bad_flags() {
    let out = Command::new(BIN).arg("--print-sdl").output().unwrap();
    assert!(out.status.success());
    let sdl = String::from_utf8(out.stdout).unwrap();
    assert!(sdl.contains(r#"type User @key(fields: "id")"#), "{sdl}");
    assert!(sdl.contains(r#"type Product @key(fields: "upc")"#), "{sdl}");

    for bad in [
        ["--error-rate", "1.5"],
        ["--error-status", "42"],
        ["--idempotency-ttl-ms", "0"],
        ["--idempotency-max-entries", "0"],
    ] {
        let out = Command::new(BIN).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?} accepted");
    }
}

#[test]
fn media_types_follow_graphql_over_http() {
    let sg = Subgraph::start(&[]);
    // A body not declared application/json is refused (`fetch` sends a
    // string body as text/plain).
    let body = json!({ "query": "{ __typename }" }).to_string();
    let mut conn = connect(sg.graphql).unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all((head + &body).as_bytes()).unwrap();
    let resp = read_response(&conn).unwrap();
    assert_eq!(resp.status, 415, "{}", resp.body);
    assert_eq!(
        resp.json()["errors"][0]["extensions"]["code"],
        "UNSUPPORTED_MEDIA_TYPE"
    );

    let ask = |accept: &str, query: &str| {
        let mut conn = connect(sg.graphql).unwrap();
        let body = json!({ "query": query }).to_string();
        let headers = [("Accept", accept)];
        write_request(&mut conn, "POST", "/graphql", &headers, Some(&body), true).unwrap();
        read_response(&conn).unwrap()
    };
    let new = "application/graphql-response+json, application/json;q=0.9";
    let typed = |r: &Response, ty: &str| r.headers.contains(&format!("content-type: {ty}"));

    let ok = ask(new, "{ __typename }");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        typed(&ok, "application/graphql-response+json"),
        "{:?}",
        ok.headers
    );
    assert_eq!(ok.json(), json!({"data": {"__typename": "Query"}}));

    // A document that does not parse: 400 without `data` in the new type,
    // 200 with `data: null` in application/json.
    let bad = ask(new, "{");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        typed(&bad, "application/graphql-response+json"),
        "{:?}",
        bad.headers
    );
    assert!(bad.json().get("data").is_none() && bad.json()["errors"].is_array());
    let legacy = ask("application/json", "{");
    assert_eq!(legacy.status, 200, "{}", legacy.body);
    assert!(typed(&legacy, "application/json"), "{:?}", legacy.headers);
    assert_eq!(legacy.json()["data"], Value::Null);

    // A field error is an executed request: 200 in either type.
    let field = ask(new, "{ boom }");
    assert_eq!(field.status, 200, "{}", field.body);
}

#[test]
fn fail_field_fails_the_next_requests_selecting_it() {
    let sg = Subgraph::start(&[]);
    let faults =
        sg.set_faults(json!({"fail_field": "release", "fail_times": 3, "fail_status": 503}));
    assert_eq!(
        (&faults["fail_field"], &faults["fail_times"]),
        (&json!("release"), &json!(3))
    );
    let release = r#"mutation { release(item: "upc-1", quantity: 5) }"#;
    for left in [2, 1, 0] {
        // Other fields are not affected.
        assert_eq!(
            sg.post(r#"{ stock(item: "upc-1") }"#).json()["data"]["stock"],
            100
        );
        let resp = sg.post(release);
        assert_eq!(resp.status, 503, "{}", resp.body);
        assert_eq!(resp.json()["errors"][0]["message"], "injected fault");
        let now = request(sg.admin, "GET", "/faults", None).unwrap().json();
        assert_eq!(now["fail_times"], left, "{now}");
    }
    assert_eq!(sg.stats()["mutations"], 0, "a failed try does not execute");
    assert_eq!(sg.post(release).json(), json!({"data": {"release": true}}));
    assert_eq!(
        sg.post(r#"{ stock(item: "upc-1") }"#).json()["data"]["stock"],
        105
    );
}

fn code(resp: &Response) -> Value {
    resp.json()["errors"][0]["extensions"]["code"].clone()
}

#[test]
fn idempotency_keys_execute_once_then_replay() {
    let sg = Subgraph::start(&[]);
    let reserve = r#"mutation { reserve(item: "upc-1", quantity: 10) { id remaining } }"#;
    let first = sg.post_keyed("saga-1:step-1", reserve);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.json(),
        json!({"data": {"reserve": {"id": "r-1", "remaining": 90}}})
    );
    assert_eq!(first.header("idempotent-replayed"), None);

    let again = sg.post_keyed("saga-1:step-1", reserve);
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("content-type"), Some("application/json"));
    assert_eq!(again.body, first.body, "the stored answer, byte for byte");
    assert_eq!(sg.stats()["mutations"], 1, "a replay executes nothing");
    assert_eq!(sg.stock("upc-1"), 90);

    // The same key with another body is refused, and changes nothing.
    let other = r#"mutation { reserve(item: "upc-1", quantity: 20) { id remaining } }"#;
    let reused = sg.post_keyed("saga-1:step-1", other);
    assert_eq!(reused.status, 409, "{}", reused.body);
    assert_eq!(code(&reused), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(sg.stock("upc-1"), 90);

    // The compensation has a key of its own.
    let release = r#"mutation { release(item: "upc-1", quantity: 10) }"#;
    for _ in 0..2 {
        let resp = sg.post_keyed("saga-1:step-1:compensate", release);
        assert_eq!(resp.json(), json!({"data": {"release": true}}));
    }
    assert_eq!(sg.stock("upc-1"), 100, "released once");

    let idem = sg.idempotency();
    assert_eq!(
        idem["keys"]["saga-1:step-1"],
        json!({"executions": 1, "replays": 1, "conflicts": 1, "in_progress": 0, "faults": 0})
    );
    assert_eq!(idem["keys"]["saga-1:step-1:compensate"]["executions"], 1);
    assert_eq!(idem["keys"]["saga-1:step-1:compensate"]["replays"], 1);
    assert_eq!(idem["totals"]["executions"], 2);
    assert_eq!(idem["totals"]["replays"], 2);
    assert_eq!(idem["stored"], 2);
    assert_eq!(idem["ttl_ms"], 86_400_000);
    assert_eq!(idem["max_entries"], 10_000);

    // Without the header, requests behave as they always did.
    let plain = sg.post(reserve);
    assert_eq!(plain.json()["data"]["reserve"]["remaining"], 90);
    assert_eq!(plain.header("idempotent-replayed"), None);
    assert_eq!(sg.post(reserve).json()["data"]["reserve"]["remaining"], 80);

    // Reset: the answers are forgotten, the key executes again.
    let resp = request(sg.admin, "POST", "/idempotency/reset", Some("")).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["totals"]["executions"], 0);
    assert_eq!(resp.json()["stored"], 0);
    let fresh = sg.post_keyed("saga-1:step-1", reserve);
    assert_eq!(fresh.json()["data"]["reserve"]["remaining"], 70);
    assert_eq!(fresh.header("idempotent-replayed"), None);
}

#[test]
fn errors_of_an_execution_are_stored_too() {
    let sg = Subgraph::start(&[]);
    // HTTP 200 with errors and no data: what a saga treats as a failed step.
    let too_many = r#"mutation { reserve(item: "upc-2", quantity: 101) { id } }"#;
    let failed = sg.post_keyed("saga-2:step-1", too_many);
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(failed.json()["data"], Value::Null);
    assert_eq!(code(&failed), "INSUFFICIENT_STOCK");

    // Even once the stock would allow it, the retry gets the stored failure.
    sg.post(r#"mutation { release(item: "upc-2", quantity: 1) }"#);
    let retried = sg.post_keyed("saga-2:step-1", too_many);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(retried.body, failed.body);
    assert_eq!(sg.stock("upc-2"), 101);
}

#[test]
fn invalid_idempotency_keys_are_refused() {
    let sg = Subgraph::start(&[]);
    let increment = "mutation { incrementCounter }";
    let long = "k".repeat(256);
    for bad in ["", "a b", long.as_str()] {
        let resp = sg.post_keyed(bad, increment);
        assert_eq!(resp.status, 400, "{bad:?}: {}", resp.body);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(code(&resp), "INVALID_IDEMPOTENCY_KEY", "{bad:?}");
    }
    // Twice the header.
    let mut conn = connect(sg.graphql).unwrap();
    let body = json!({ "query": increment }).to_string();
    let headers = [("Idempotency-Key", "a"), ("Idempotency-Key", "a")];
    write_request(&mut conn, "POST", "/graphql", &headers, Some(&body), true).unwrap();
    let resp = read_response(&conn).unwrap();
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(code(&resp), "INVALID_IDEMPOTENCY_KEY");
    assert_eq!(sg.stats()["mutations"], 0);

    // The longest key is fine; a body that is not a request stores nothing.
    let longest = "k".repeat(255);
    assert_eq!(sg.post_keyed(&longest, increment).status, 200);
    let mut conn = connect(sg.graphql).unwrap();
    let headers = [("Idempotency-Key", "bad-body")];
    write_request(&mut conn, "POST", "/graphql", &headers, Some("{"), true).unwrap();
    assert_eq!(read_response(&conn).unwrap().status, 400);
    assert_eq!(
        sg.post_keyed("bad-body", increment).json()["data"]["incrementCounter"],
        2
    );
    assert_eq!(sg.idempotency()["totals"]["executions"], 2);
}

#[test]
fn idempotency_keys_expire_after_the_ttl() {
    // Long enough that the replay below comes in time on a loaded machine.
    let sg = Subgraph::start(&["--idempotency-ttl-ms", "1500"]);
    let increment = "mutation { incrementCounter }";
    assert_eq!(
        sg.post_keyed("k", increment).json()["data"]["incrementCounter"],
        1
    );
    let replay = sg.post_keyed("k", increment);
    assert_eq!(replay.json()["data"]["incrementCounter"], 1);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    thread::sleep(Duration::from_millis(1600));
    let after = sg.post_keyed("k", increment);
    assert_eq!(
        after.json()["data"]["incrementCounter"],
        2,
        "expired: executed again"
    );
    assert_eq!(after.header("idempotent-replayed"), None);
    let idem = sg.idempotency();
    assert_eq!(idem["ttl_ms"], 1500);
    assert_eq!(idem["expired"], 1);
    assert_eq!(idem["keys"]["k"]["executions"], 2);
}

#[test]
fn a_key_in_progress_is_refused_until_its_request_finishes() {
    let sg = Subgraph::start(&[]);
    let increment = "mutation { incrementCounter }";
    // The first request claims the key, then hangs.
    sg.set_faults(json!({"hang": true}));
    let addr = sg.graphql;
    let first = thread::spawn(move || keyed(addr, "k", increment));
    let deadline = Instant::now() + TIMEOUT;
    while sg.idempotency()["executing"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the first request never claimed its key"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let busy = sg.post_keyed("k", increment);
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert_eq!(code(&busy), "IDEMPOTENCY_KEY_IN_PROGRESS");
    assert_eq!(busy.header("retry-after"), Some("1"));
    let reused = sg.post_keyed("k", "mutation { createUser(name: \"x\") { id } }");
    assert_eq!(code(&reused), "IDEMPOTENCY_KEY_REUSED");

    sg.set_faults(json!({"hang": false}));
    let first = first.join().unwrap();
    assert_eq!(first.json(), json!({"data": {"incrementCounter": 1}}));
    let retried = sg.post_keyed("k", increment);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(retried.json(), json!({"data": {"incrementCounter": 1}}));
    assert_eq!(sg.stats()["mutations"], 1);
    assert_eq!(
        sg.idempotency()["keys"]["k"],
        json!({"executions": 1, "replays": 1, "conflicts": 1, "in_progress": 1, "faults": 0})
    );
}

#[test]
fn parallel_requests_with_one_key_execute_once() {
    let sg = Subgraph::start(&[]);
    // Slow enough that the requests overlap.
    sg.set_faults(json!({"latency_ms": 200}));
    let addr = sg.graphql;
    let tries: Vec<_> = (0..8)
        .map(|_| thread::spawn(move || keyed(addr, "parallel", "mutation { incrementCounter }")))
        .collect();
    for answer in tries.into_iter().map(|t| t.join().unwrap()) {
        match answer.status {
            200 => assert_eq!(answer.json(), json!({"data": {"incrementCounter": 1}})),
            409 => assert_eq!(code(&answer), "IDEMPOTENCY_KEY_IN_PROGRESS"),
            other => panic!("{other}: {}", answer.body),
        }
    }
    assert_eq!(sg.stats()["mutations"], 1);
    let counts = &sg.idempotency()["keys"]["parallel"];
    assert_eq!(counts["executions"], 1, "{counts}");
    assert_eq!(
        counts["in_progress"].as_u64().unwrap() + counts["replays"].as_u64().unwrap(),
        7
    );
}

#[test]
fn injected_faults_are_not_stored() {
    let sg = Subgraph::start(&[]);
    let increment = "mutation { incrementCounter }";
    sg.set_faults(json!({"error_rate": 1.0}));
    assert_eq!(sg.post_keyed("k", increment).status, 503);
    sg.set_faults(json!({"error_rate": 0.0}));
    let real = sg.post_keyed("k", increment);
    assert_eq!(real.json(), json!({"data": {"incrementCounter": 1}}));
    assert_eq!(real.header("idempotent-replayed"), None);

    // A replay is the idempotency layer's own answer: the faults do not reach it.
    sg.set_faults(json!({"error_rate": 1.0}));
    let replay = sg.post_keyed("k", increment);
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    sg.set_faults(json!({"error_rate": 0.0}));

    // A compensation that fails three times, then succeeds.
    sg.set_faults(json!({"fail_field": "release", "fail_times": 3}));
    let release = r#"mutation { release(item: "upc-3", quantity: 4) }"#;
    for _ in 0..3 {
        assert_eq!(sg.post_keyed("s:compensate", release).status, 503);
    }
    assert_eq!(
        sg.post_keyed("s:compensate", release).json(),
        json!({"data": {"release": true}})
    );
    assert_eq!(
        sg.post_keyed("s:compensate", release)
            .header("idempotent-replayed"),
        Some("true")
    );
    assert_eq!(sg.stock("upc-3"), 104, "released once");
    let idem = sg.idempotency();
    assert_eq!(
        idem["keys"]["s:compensate"],
        json!({"executions": 1, "replays": 1, "conflicts": 0, "in_progress": 0, "faults": 3})
    );
    assert_eq!(idem["keys"]["k"]["faults"], 1);
    assert_eq!(idem["totals"]["faults"], 4);
}
