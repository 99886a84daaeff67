//! Tracing end to end: W3C trace context through a real edge to real
//! demo subgraphs (which record the headers of the last request they saw,
//! `GET /last-request`), span export to an OTLP/gRPC receiver running in
//! the test, and the slow-query log. No privileges needed.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use fraiseql_edge_tests::{
    graphql::{Client, Reply},
    subgraphs::{DemoOptions, DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
    wait::eventually,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::proxy_e2e::serial;

const QUIET_HEALTH: &str = "interval_ms = 60000, timeout_ms = 5000";
const QUERY: &str = "query Users { users(first: 2) { id name } }";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

fn client_traceparent(flags: &str) -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-{flags}")
}

/// A `traceparent` the edge sent, checked for the version-00 shape:
/// (trace id, parent id, flags).
#[track_caller]
fn parse_traceparent(v: &str) -> (String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && s.bytes().any(|b| b != b'0')
    };
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && (parts[3] == "00" || parts[3] == "01"),
        "not a valid version-00 traceparent: {v:?}"
    );
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

/// The values of `name` in the last request `sg` saw.
fn received(sg: &DemoSubgraph, name: &str) -> Vec<String> {
    sg.last_request()
        .1
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

fn query(c: &Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    c.post_json_with(url, &json!({ "query": QUERY }), headers)
}

fn one_subgraph(sg: &DemoSubgraph) -> ProxySetup {
    ProxySetup::one(SubgraphSpec::new("users", [sg]).table("health", QUIET_HEALTH))
}

#[test]
fn the_client_trace_is_continued_to_the_subgraph_or_a_new_one_started() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = Edge::start(&one_subgraph(&sg));
    let c = Client::default();
    let url = edge.route("users");

    // A valid parent: same trace, the edge's own span, the client's flags;
    // tracestate passed through; one traceparent, the client's replaced.
    let tp = client_traceparent("01");
    let r = query(
        &c,
        &url,
        &[
            ("traceparent", &tp),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = received(&sg, "traceparent");
    assert_eq!(sent.len(), 1, "exactly one traceparent upstream: {sent:?}");
    let (trace, parent, flags) = parse_traceparent(&sent[0]);
    assert_eq!(trace, CLIENT_TRACE, "the client's trace is continued");
    assert_ne!(parent, CLIENT_PARENT, "the parent is the edge's span");
    assert_eq!(flags, "01");
    assert_eq!(
        received(&sg, "tracestate"),
        ["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"]
    );

    let r = query(&c, &url, &[("traceparent", &client_traceparent("00"))]);
    assert_eq!(r.status, 200);
    let (trace, _, flags) = parse_traceparent(&received(&sg, "traceparent")[0]);
    assert_eq!(
        (trace.as_str(), flags.as_str()),
        (CLIENT_TRACE, "00"),
        "not sampled stays not sampled"
    );

    // No parent, or one that is not valid: a new trace (never a refusal),
    // and the client's tracestate goes nowhere.
    let mut traces = Vec::new();
    for headers in [
        vec![],
        vec![
            ("traceparent", "garbage"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
        vec![(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )],
        vec![(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        )],
        vec![(
            "traceparent",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    ] {
        let r = query(&c, &url, &headers);
        assert_eq!(r.status, 200, "{headers:?}: {}", r.text());
        let sent = received(&sg, "traceparent");
        assert_eq!(sent.len(), 1, "{headers:?}: {sent:?}");
        let (trace, _, flags) = parse_traceparent(&sent[0]);
        assert_ne!(trace, CLIENT_TRACE, "{headers:?}");
        assert_eq!(flags, "01", "new traces are sampled (sample_ratio 1.0)");
        assert!(received(&sg, "tracestate").is_empty(), "{headers:?}");
        traces.push(trace);
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 5, "each new trace has its own id");
}

#[test]
fn every_upstream_try_carries_the_trace() {
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
    let c = Client::default();
    let tp = client_traceparent("01");
    let r = query(&c, &edge.route("users"), &[("traceparent", &tp)]);
    assert_eq!(r.status, 504, "both tries time out: {}", r.text());
    for sg in [&a, &b] {
        let sent = received(sg, "traceparent");
        assert_eq!(sent.len(), 1, "{sent:?}");
        let (trace, parent, _) = parse_traceparent(&sent[0]);
        assert_eq!(trace, CLIENT_TRACE);
        assert_ne!(parent, CLIENT_PARENT);
    }
}

#[test]
fn a_distrusted_client_parent_starts_a_new_trace() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge =
        Edge::start(&one_subgraph(&sg).section("[tracing]\ntrust_client_traceparent = false"));
    let c = Client::default();
    let tp = client_traceparent("01");
    let r = query(
        &c,
        &edge.route("users"),
        &[("traceparent", &tp), ("tracestate", "congo=t61rcWkgMzE")],
    );
    assert_eq!(r.status, 200);
    let (trace, _, _) = parse_traceparent(&received(&sg, "traceparent")[0]);
    assert_ne!(trace, CLIENT_TRACE);
    assert!(received(&sg, "tracestate").is_empty());
}

fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn slow_counter(c: &Client, edge: &Edge) -> Option<f64> {
    c.metrics(&edge.admin_url("/metrics"))
        .get("fraiseql_edge_slow_queries_total", &[("subgraph", "users")])
}

/// The `slow query` records of a `--log-json` log.
fn slow_records(edge: &Edge) -> Vec<Value> {
    edge.daemon
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["fields"]["message"] == "slow query")
        .collect()
}

#[test]
fn a_slow_request_is_logged_with_its_trace_and_counted_and_a_fast_one_is_not() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let setup = one_subgraph(&sg).section("[slow_queries]\nthreshold_ms = 100\nkeep = 10");
    let mut edge = Edge::start_toml_with(&setup.to_toml(), &["--log-json"]);
    let c = Client::default();
    let url = edge.route("users");
    assert_eq!(slow_counter(&c, &edge), Some(0.0), "pre-initialised");

    // Fast: not a slow query.
    let r = query(&c, &url, &[("traceparent", &client_traceparent("01"))]);
    assert_eq!(r.status, 200);
    assert_eq!(slow_counter(&c, &edge), Some(0.0));

    // Far above the threshold.
    sg.faults(&json!({ "latency_ms": 1500 }));
    let r = query(&c, &url, &[("traceparent", &client_traceparent("01"))]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(slow_counter(&c, &edge), Some(1.0));
    assert!(
        edge.daemon.wait_for_record(
            |r| r["fields"]["message"] == "slow query",
            Duration::from_secs(10)
        ),
        "no slow-query record:\n{}",
        edge.daemon.log()
    );
    let records = slow_records(&edge);
    assert_eq!(records.len(), 1, "{records:?}");
    let rec = &records[0];
    let f = &rec["fields"];
    assert_eq!(rec["level"], "WARN");
    assert_eq!(f["operation_name"], "Users");
    assert_eq!(f["operation_type"], "query");
    assert_eq!(f["document_hash"], sha256_hex(QUERY));
    assert_eq!(f["subgraph"], "users");
    assert_eq!(f["client"], "127.0.0.1");
    assert_eq!(f["status"], 200);
    assert_eq!(f["trace_id"], CLIENT_TRACE);
    assert!(
        f["duration_ms"].as_u64().is_some_and(|ms| ms >= 1500),
        "{f}"
    );
    // The record is written inside the request's span: its trace id is there too.
    assert_eq!(rec["span"]["name"], "request", "{rec}");
    assert_eq!(rec["span"]["trace_id"], CLIENT_TRACE, "{rec}");

    // Fast again: nothing new.
    sg.faults(&json!({ "latency_ms": 0 }));
    let r = query(&c, &url, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(slow_counter(&c, &edge), Some(1.0));
    assert_eq!(slow_records(&edge).len(), 1);
}

/// What the test's OTLP receiver was sent: (service.name, span) pairs.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serves OTLP/gRPC on a loopback port in a runtime of its own.
    fn start(&self) -> (SocketAddr, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = TraceServiceServer::new(self.clone());
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (addr, rt)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// (service, name, trace id, span id, parent span id) of every span.
    fn received(&self) -> Vec<(String, String, String, String, String)> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|(svc, s)| {
                (
                    svc.clone(),
                    s.name.clone(),
                    Self::hex(&s.trace_id),
                    Self::hex(&s.span_id),
                    Self::hex(&s.parent_span_id),
                )
            })
            .collect()
    }
}

#[test]
fn spans_are_exported_over_otlp_with_the_trace_the_subgraph_receives() {
    let _serial = serial();
    let receiver = Receiver::default();
    let (addr, _rt) = receiver.start();
    let sg = DemoSubgraph::start("users");
    let mut edge = Edge::start(&one_subgraph(&sg).section(&format!(
        "[tracing]\notlp_endpoint = \"http://{addr}\"\nservice_name = \"edge-under-test\""
    )));
    let c = Client::default();
    let url = edge.route("users");

    let r = query(&c, &url, &[("traceparent", &client_traceparent("01"))]);
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, sent_parent, _) = parse_traceparent(&received(&sg, "traceparent")[0]);
    // A new trace, and one the client asked not to sample.
    let r = query(&c, &url, &[]);
    assert_eq!(r.status, 200);
    let (new_trace, _, flags) = parse_traceparent(&received(&sg, "traceparent")[0]);
    assert_eq!(flags, "01");
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let r = query(
        &c,
        &url,
        &[(
            "traceparent",
            &format!("00-{unsampled}-b7ad6b7169203331-00"),
        )],
    );
    assert_eq!(r.status, 200);
    let (trace, _, flags) = parse_traceparent(&received(&sg, "traceparent")[0]);
    assert_eq!((trace.as_str(), flags.as_str()), (unsampled, "00"));

    // The batch is flushed at shutdown at the latest.
    edge.daemon.terminate();
    let exported = eventually(Duration::from_secs(20), || {
        receiver
            .received()
            .iter()
            .any(|s| s.2 == new_trace && s.1 == "upstream_try")
    });
    assert!(
        exported,
        "spans not exported: {:?}\nedge log:\n{}",
        receiver.received(),
        edge.daemon.log()
    );
    let spans = receiver.received();
    assert!(spans.iter().all(|s| s.0 == "edge-under-test"), "{spans:?}");
    let of = |trace: &str| -> Vec<_> { spans.iter().filter(|s| s.2 == trace).collect() };
    let client = of(CLIENT_TRACE);
    let request = client
        .iter()
        .find(|s| s.1 == "request")
        .unwrap_or_else(|| panic!("no request span in the client's trace: {spans:?}"));
    assert_eq!(
        request.4, CLIENT_PARENT,
        "the request span's parent is the client's"
    );
    let try_span = client
        .iter()
        .find(|s| s.1 == "upstream_try")
        .unwrap_or_else(|| panic!("no upstream_try span: {spans:?}"));
    assert_eq!(
        try_span.3, sent_parent,
        "the subgraph's parent is the exported try span"
    );
    for phase in ["accept", "graphql", "forward", "respond"] {
        assert!(
            client.iter().any(|s| s.1 == phase),
            "no {phase} span: {client:?}"
        );
    }
    assert!(
        of(unsampled).is_empty(),
        "an unsampled trace is not exported"
    );
}
