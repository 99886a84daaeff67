//! docs/metrics.md against a real scrape. A real `fraiseql-edge` with XDP
//! on the host side of a veth pair, `[auth]` with a JWKS URL, a healthy and
//! a failing demo subgraph, and mixed traffic: good queries, an entity
//! fetch, a depth bomb, bad tokens, a UDP flood over the kernel's rate from
//! a client in a network namespace, and requests to the failing subgraph
//! until its breaker opens. `/metrics` must pass `promtool check metrics`,
//! show every family the page lists (the degraded-mode ones excepted), and
//! nothing with the prefix that the page does not list.
//!
//! A second daemon, degraded (its kernel layer cannot pin), shows the other
//! side: `degraded_mode` 1, the limiter's families instead of the kernel's.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use fraiseql_edge_tests::{
    clients::flood_for,
    graphql::{Client, Metrics},
    kernel_tests_enabled, promtool,
    subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
    wait::eventually,
};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::{
    jwt_e2e::keys::{claims, p256, sign_with},
    proxy_e2e::serial,
    testbed::{BURST, QUIET_HEALTH, RATE, Testbed},
};

const QUERY: &str = "{ users(first: 2) { id name } }";
const DOC: &str = include_str!("../../docs/metrics.md");
/// The page's section whose families only a degraded daemon exports.
const DEGRADED_SECTION: &str = "Degraded mode (user-space limiter)";
const UDP_PORT: u16 = 18601;

/// The page's families: name → (section, type).
fn documented() -> BTreeMap<String, (String, String)> {
    let mut section = String::new();
    let mut out = BTreeMap::new();
    for line in DOC.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title.to_string();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("`fraiseql_edge_") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        out.insert(name, (section.clone(), cells[2].to_string()));
    }
    assert!(out.len() > 40, "docs/metrics.md: {} rows parsed", out.len());
    out
}

/// The scrape's families: name → type, from the `# TYPE` lines.
fn scraped(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// Checks `text` against the page: every documented family is in the
/// scrape with its type, except those `absent(section, name)` names, which
/// must not be; every `fraiseql_edge_` family of the scrape is documented.
fn check_against_the_page(text: &str, absent: impl Fn(&str, &str) -> bool) {
    let doc = documented();
    let scrape = scraped(text);
    let mut missing = Vec::new();
    for (name, (section, kind)) in &doc {
        match (!absent(section, name), scrape.get(name)) {
            (true, None) => missing.push(format!("{name} ({section})")),
            (true, Some(found)) => assert_eq!(found, kind, "{name}: type in the scrape"),
            (false, Some(_)) => panic!("{name} ({section}) is in the scrape:\n{text}"),
            (false, None) => {}
        }
    }
    assert!(
        missing.is_empty(),
        "documented but not in the scrape: {missing:#?}\n--- scrape ---\n{text}"
    );
    let undocumented: BTreeSet<&String> = scrape
        .keys()
        .filter(|n| n.starts_with("fraiseql_edge_") && !doc.contains_key(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "in the scrape but not in docs/metrics.md: {undocumented:?}"
    );
}

/// POSTs `body` with an optional bearer token: (status, `extensions.code`).
fn post(url: &str, body: &Value, token: Option<&str>) -> (u16, Option<String>) {
    let agent: ureq::Agent = fraiseql_edge_tests::graphql::agent(Duration::from_secs(30));
    let mut req = agent.post(url).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut resp = req
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let reply: Value = serde_json::from_reader(resp.body_mut().as_reader()).unwrap_or(Value::Null);
    let code = reply["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_string);
    (resp.status().as_u16(), code)
}

fn scrape(edge: &Edge) -> String {
    Client::default()
        .get(&edge.admin_url("/metrics"), &[])
        .text()
}

#[test]
fn a_real_scrape_matches_the_metrics_page() {
    if !kernel_tests_enabled("a_real_scrape_matches_the_metrics_page") {
        return;
    }
    let _serial = serial();
    let saga_dir = tempfile::tempdir().expect("temp dir");
    let sagas = format!("[sagas]\npath = {:?}", saga_dir.path().join("sagas.db"));
    // Cluster mode too, when a Redis can be started (always in CI).
    let redis = fraiseql_edge_tests::redis::Redis::start();
    let mut sections = vec![sagas];
    if let Some(r) = &redis {
        sections.push(format!("[cluster]\nredis_url = {:?}", r.url()));
    }
    let sections: Vec<&str> = sections.iter().map(String::as_str).collect();
    let mut bed = Testbed::start("metrics", 60, UDP_PORT, vec![], &sections);
    let (flooder, udp_dst) = (bed.flooder, bed.udp_dst);
    let token = sign_with(Algorithm::ES256, &bed.key, &claims("alice"));
    let users_url = bed.edge.route("users");
    let broken_url = bed.edge.route("broken");
    let query = json!({ "query": QUERY });

    // Good queries, and an entity fetch.
    for _ in 0..5 {
        assert_eq!(post(&users_url, &query, Some(&token)), (200, None));
    }
    let entities = json!({
        "query": "query($representations: [_Any!]!) { _entities(representations: $representations) { ... on User { id name } } }",
        "variables": { "representations": [{ "__typename": "User", "id": "1" }] },
    });
    assert_eq!(post(&users_url, &entities, Some(&token)).0, 200);
    // A depth bomb, refused by the graphql phase.
    let deep = format!(
        "{{ users {}id{} }}",
        "{ friends ".repeat(40),
        " }".repeat(40)
    );
    assert_eq!(
        post(&users_url, &json!({ "query": deep }), Some(&token)),
        (400, Some("MAX_DEPTH_EXCEEDED".into()))
    );
    // Authentication failures.
    assert_eq!(
        post(&users_url, &query, None),
        (401, Some("MISSING_TOKEN".into()))
    );
    assert_eq!(
        post(&users_url, &query, Some("not.a.jwt")),
        (401, Some("MALFORMED_TOKEN".into()))
    );
    // The JWKS server goes away; a token naming an unknown key makes the
    // edge refetch, which fails (the known key stays in use).
    bed.jwks.stop();
    let stranger = p256("stranger");
    assert_eq!(
        post(
            &users_url,
            &query,
            Some(&sign_with(Algorithm::ES256, &stranger, &claims("eve")))
        ),
        (401, Some("UNKNOWN_KEY".into()))
    );
    assert_eq!(post(&users_url, &query, Some(&token)), (200, None));
    // The failing subgraph, until its breaker opens.
    bed.broken
        .faults(&json!({"error_rate": 1.0, "error_status": 503}));
    let opened = (0..50)
        .any(|_| post(&broken_url, &query, Some(&token)).1.as_deref() == Some("CIRCUIT_OPEN"));
    assert!(opened, "the breaker of `broken` never opened");
    // A UDP flood at ten times the kernel's rate, from the namespace.
    let report = flood_for(&bed.ns, flooder, udp_dst, 10 * RATE, Duration::from_secs(2));
    println!(
        "flood: sent {}, received {}",
        report.sent,
        bed.udp.received(flooder)
    );

    let c = Client::default();
    let metrics = || c.metrics(&bed.edge.admin_url("/metrics"));
    // The pool and health gauges are set by each subgraph's one-second task.
    assert!(eventually(Duration::from_secs(5), || {
        metrics()
            .get(
                "fraiseql_edge_circuit_breaker_state",
                &[("subgraph", "broken")],
            )
            .is_some_and(|s| s == 1.0)
    }));
    let text = scrape(&bed.edge);
    promtool::check_metrics("a_real_scrape_matches_the_metrics_page", &text);
    check_against_the_page(&text, |section, _| {
        section == DEGRADED_SECTION || (redis.is_none() && section == "Cluster")
    });

    // What the traffic did, as the metrics tell it.
    let m = Metrics::parse(&text);
    let one = |name: &str, labels: &[(&str, &str)]| {
        m.get(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?}"))
    };
    let host_if = bed.ns.host_if();
    assert_eq!(one("fraiseql_edge_degraded_mode", &[]), 0.0);
    assert_eq!(
        one(
            "fraiseql_edge_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        one(
            "fraiseql_edge_kernel_program_attached",
            &[("interface", host_if)]
        ),
        1.0
    );
    assert_eq!(one("fraiseql_edge_kernel_maps_readable", &[]), 1.0);
    assert!(
        one(
            "fraiseql_edge_kernel_packets_total",
            &[("verdict", "dropped_rate")]
        ) > 0.0
    );
    assert!(one("fraiseql_edge_kernel_tracked_clients", &[]) >= 1.0);
    assert!(one("fraiseql_edge_kernel_map_fill_ratio", &[("map", "clients")]) > 0.0);
    assert_eq!(
        one(
            "fraiseql_edge_requests_total",
            &[
                ("subgraph", "users"),
                ("status", "200"),
                ("operation", "query"),
                ("code", "none"),
            ]
        ),
        7.0
    );
    assert_eq!(
        one(
            "fraiseql_edge_requests_total",
            &[
                ("subgraph", "users"),
                ("status", "400"),
                ("code", "MAX_DEPTH_EXCEEDED"),
            ]
        ),
        1.0
    );
    assert_eq!(
        one(
            "fraiseql_edge_graphql_refusals_total",
            &[("code", "MAX_DEPTH_EXCEEDED")]
        ),
        1.0
    );
    assert_eq!(
        one(
            "fraiseql_edge_graphql_query_depth_count",
            &[("subgraph", "users")]
        ),
        7.0
    );
    for reason in ["missing_token", "malformed_token", "unknown_key"] {
        assert_eq!(
            one("fraiseql_edge_auth_failures_total", &[("reason", reason)]),
            1.0
        );
    }
    let source = bed.jwks.url();
    let age = one(
        "fraiseql_edge_auth_jwks_refresh_age_seconds",
        &[("source", &source)],
    );
    assert!((0.0..600.0).contains(&age), "JWKS refresh age {age}");
    assert_eq!(
        one(
            "fraiseql_edge_auth_jwks_refresh_failures_total",
            &[("source", &source)]
        ),
        1.0
    );
    assert_eq!(
        one(
            "fraiseql_edge_entities_total",
            &[
                ("subgraph", "users"),
                ("typename", "User"),
                ("outcome", "resolved")
            ]
        ),
        1.0
    );
    assert_eq!(
        one(
            "fraiseql_edge_circuit_breaker_transitions_total",
            &[("subgraph", "broken"), ("from", "closed"), ("to", "open")]
        ),
        1.0
    );
    assert!(
        one(
            "fraiseql_edge_circuit_breaker_rejections_total",
            &[("subgraph", "broken")]
        ) >= 1.0
    );
    assert_eq!(
        one(
            "fraiseql_edge_circuit_breaker_state",
            &[("subgraph", "users")]
        ),
        0.0
    );
}

#[test]
fn a_degraded_daemon_exports_the_limiter_families_instead_of_the_kernel_ones() {
    let _serial = serial();
    let users = DemoSubgraph::start("users");
    // Not bpffs: the kernel layer cannot pin here and the daemon degrades.
    let pins = tempfile::tempdir().expect("temp dir");
    let kernel = format!(
        "interfaces = [\"lo\"]\nprotected_ports = [8080]\nrate = {RATE}\nburst = {BURST}\n\
         pin_path = {:?}\n",
        pins.path().join("pins")
    );
    let edge = Edge::start_toml(
        &ProxySetup::one(SubgraphSpec::new("users", [&users]).table("health", QUIET_HEALTH))
            .to_toml_with_kernel(&kernel),
    );
    let log = edge.daemon.log();
    assert!(
        log.contains("eBPF UNAVAILABLE"),
        "the daemon did not degrade; stderr:\n{log}"
    );
    let c = Client::default();
    assert!(c.query(&edge.route("users"), QUERY).is_data());
    let text = scrape(&edge);
    promtool::check_metrics(
        "a_degraded_daemon_exports_the_limiter_families_instead_of_the_kernel_ones",
        &text,
    );
    // No `[auth]` here: the JWKS families are absent too, and with no
    // entity fetch sent, `entities_total` has no typename to show.
    // No `[sagas]` or `[cluster]` either: their families are absent.
    check_against_the_page(&text, |section, name| {
        section.starts_with("Kernel")
            || section == "Sagas"
            || section == "Cluster"
            || name.starts_with("fraiseql_edge_auth_jwks_")
            || name == "fraiseql_edge_entities_total"
    });
    let m = Metrics::parse(&text);
    assert_eq!(m.get("fraiseql_edge_degraded_mode", &[]), Some(1.0));
    assert!(
        m.get(
            "fraiseql_edge_degraded_checks_total",
            &[("verdict", "passed")]
        )
        .is_some_and(|n| n >= 1.0)
    );
}
