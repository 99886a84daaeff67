//! The Grafana dashboards, defined once here and written to
//! `dashboards/<name>.json` by `cargo xtask ops-generate`.
//!
//! Every dashboard gets the same header: a `datasource` variable and the
//! `job`, `instance` (and, where a panel is per subgraph, `subgraph`)
//! variables, all read from the daemon's own series, so one definition
//! serves every Prometheus. Every panel has a title, a description and a
//! unit; every rate uses `$__rate_interval`. The check compares the
//! committed files with what this module generates and lints them, and the
//! live check (`tests/e2e/ops_live.rs`) runs every panel query against a
//! real Prometheus scraping a real daemon.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::paths;

/// Selector of the instances picked in the header.
const SEL: &str = r#"job=~"$job", instance=~"$instance""#;
/// … and of the subgraphs picked.
const SEL_SG: &str = r#"job=~"$job", instance=~"$instance", subgraph=~"$subgraph""#;

/// How a panel shows its numbers.
#[derive(Clone, Copy)]
enum Kind {
    /// Lines over time.
    Series,
    /// One number per series, coloured by thresholds.
    Stat,
    /// Circuit-breaker state: 0 closed, 1 open, 2 half-open.
    BreakerState,
}

struct Panel {
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    kind: Kind,
    /// `(PromQL, legend)`; `$S` stands for the instance selector, `$G` for
    /// the instance-and-subgraph one.
    targets: Vec<(String, &'static str)>,
}

fn panel(
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    targets: &[(&str, &'static str)],
) -> Panel {
    Panel {
        title,
        description,
        unit,
        kind: Kind::Series,
        targets: targets
            .iter()
            .map(|(expr, legend)| (expr.replace("$S", SEL).replace("$G", SEL_SG), *legend))
            .collect(),
    }
}

impl Panel {
    fn stat(mut self) -> Self {
        self.kind = Kind::Stat;
        self
    }

    fn breaker(mut self) -> Self {
        self.kind = Kind::BreakerState;
        self
    }
}

struct Row {
    title: &'static str,
    panels: Vec<Panel>,
}

struct Dashboard {
    /// File name (without `.json`) and the uid's suffix.
    name: &'static str,
    title: &'static str,
    description: &'static str,
    rows: Vec<Row>,
}

/// Latency quantiles of a histogram family, one target each.
fn quantiles(family: &str, by: &str, selector: &str) -> Vec<(String, &'static str)> {
    [
        ("0.5", "P50"),
        ("0.95", "P95"),
        ("0.99", "P99"),
        ("0.999", "P99.9"),
    ]
    .into_iter()
    .map(|(q, name)| {
        (
            format!(
                "histogram_quantile({q}, sum by (le, {by}) (rate({family}_bucket{{{selector}}}[$__rate_interval])))"
            ),
            match (name, by) {
                ("P50", "subgraph") => "P50 {{subgraph}}",
                ("P95", "subgraph") => "P95 {{subgraph}}",
                ("P99", "subgraph") => "P99 {{subgraph}}",
                ("P99.9", "subgraph") => "P99.9 {{subgraph}}",
                ("P50", _) => "P50 {{endpoint}}",
                ("P95", _) => "P95 {{endpoint}}",
                ("P99", _) => "P99 {{endpoint}}",
                _ => "P99.9 {{endpoint}}",
            },
        )
    })
    .collect()
}

fn series(
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    targets: Vec<(String, &'static str)>,
) -> Panel {
    Panel {
        title,
        description,
        unit,
        kind: Kind::Series,
        targets,
    }
}

fn overview() -> Dashboard {
    Dashboard {
        name: "overview",
        title: "fraiseql-edge / Federation overview",
        description: "Traffic through the edge: requests per subgraph, operation types and entity resolution.",
        rows: vec![
            Row {
                title: "Traffic",
                panels: vec![
                    panel(
                        "Requests per subgraph",
                        "GraphQL requests answered per second, by the subgraph their route leads to (`none`: no route matched).",
                        "reqps",
                        &[("sum by (subgraph) (rate(fraiseql_edge_requests_total{$G}[$__rate_interval]))", "{{subgraph}}")],
                    ),
                    panel(
                        "Share of requests per subgraph",
                        "Each subgraph's part of all requests: how the federated traffic spreads across subgraphs.",
                        "percentunit",
                        &[("sum by (subgraph) (rate(fraiseql_edge_requests_total{$S}[$__rate_interval])) / ignoring (subgraph) group_left sum(rate(fraiseql_edge_requests_total{$S}[$__rate_interval]))", "{{subgraph}}")],
                    ),
                    panel(
                        "Operation types",
                        "Requests per second by operation type (`unknown`: refused before the document was read).",
                        "reqps",
                        &[("sum by (operation) (rate(fraiseql_edge_requests_total{$G}[$__rate_interval]))", "{{operation}}")],
                    ),
                    panel(
                        "Availability",
                        "Share of requests answered without a 5xx status over the range shown.",
                        "percentunit",
                        &[("1 - (sum(rate(fraiseql_edge_requests_total{$G, status=~\"5..\"}[$__rate_interval])) or vector(0)) / sum(rate(fraiseql_edge_requests_total{$G}[$__rate_interval]))", "availability")],
                    )
                    .stat(),
                ],
            },
            Row {
                title: "Entities",
                panels: vec![
                    panel(
                        "Entity resolutions by typename",
                        "`_entities` representations the subgraphs resolved per second, by subgraph and typename.",
                        "ops",
                        &[("sum by (subgraph, typename) (rate(fraiseql_edge_entities_total{$G, outcome=\"resolved\"}[$__rate_interval]))", "{{subgraph}} {{typename}}")],
                    ),
                    panel(
                        "Entity resolution failures by typename",
                        "`_entities` representations the subgraphs failed to resolve per second, by subgraph and typename.",
                        "ops",
                        &[("sum by (subgraph, typename) (rate(fraiseql_edge_entities_total{$G, outcome=\"failed\"}[$__rate_interval]))", "{{subgraph}} {{typename}}")],
                    ),
                    panel(
                        "Entity resolution failure ratio",
                        "Failed over all `_entities` representations, by subgraph.",
                        "percentunit",
                        &[("sum by (subgraph) (rate(fraiseql_edge_entities_total{$G, outcome=\"failed\"}[$__rate_interval])) / sum by (subgraph) (rate(fraiseql_edge_entities_total{$G}[$__rate_interval]))", "{{subgraph}}")],
                    ),
                    panel(
                        "Entity answers not inspected",
                        "`_entities` answers passed on without counting, because they were too large or the inspection buffer was full.",
                        "ops",
                        &[("sum by (subgraph, reason) (rate(fraiseql_edge_entities_uninspected_total{$G}[$__rate_interval]))", "{{subgraph}} {{reason}}")],
                    ),
                ],
            },
            Row {
                title: "Sagas",
                panels: vec![
                    panel(
                        "Sagas finished by outcome",
                        "Sagas (`POST /sagas`) that reached an end per second: completed, compensated, failed (parked, partially compensated) or cancelled. Details on the Saga Transactions dashboard.",
                        "ops",
                        &[("sum by (outcome) (rate(fraiseql_edge_saga_finished_total{$S}[$__rate_interval]))", "{{outcome}}")],
                    ),
                    panel(
                        "Saga steps per subgraph",
                        "Tries of saga steps per second by subgraph and status: how the cross-subgraph mutations spread.",
                        "ops",
                        &[("sum by (subgraph, status) (rate(fraiseql_edge_saga_steps_total{$G}[$__rate_interval]))", "{{subgraph}} {{status}}")],
                    ),
                ],
            },
        ],
    }
}

fn performance() -> Dashboard {
    Dashboard {
        name: "performance",
        title: "fraiseql-edge / Performance",
        description: "Latency through the edge per route and subgraph, query depth and cost, and the document cache.",
        rows: vec![
            Row {
                title: "Latency",
                panels: vec![
                    series(
                        "Request latency per subgraph",
                        "P50, P95, P99 and P99.9 of the time from the request to the response headers, through the edge, per subgraph (each subgraph has one route).",
                        "s",
                        quantiles("fraiseql_edge_request_duration_seconds", "subgraph", SEL_SG),
                    ),
                    series(
                        "Upstream latency per endpoint",
                        "P50, P95, P99 and P99.9 of one try's time at each subgraph endpoint (until its response headers).",
                        "s",
                        quantiles(
                            "fraiseql_edge_upstream_duration_seconds",
                            "endpoint",
                            SEL_SG,
                        ),
                    ),
                    panel(
                        "Edge overhead (P95)",
                        "P95 through the edge minus P95 at the endpoints, per subgraph: what the edge adds, retries and queueing included.",
                        "s",
                        &[(
                            "histogram_quantile(0.95, sum by (le, subgraph) (rate(fraiseql_edge_request_duration_seconds_bucket{$G}[$__rate_interval]))) - histogram_quantile(0.95, sum by (le, subgraph) (rate(fraiseql_edge_upstream_duration_seconds_bucket{$G}[$__rate_interval])))",
                            "{{subgraph}}",
                        )],
                    ),
                    panel(
                        "Request rate",
                        "Requests per second per subgraph, for reading the latency beside the load.",
                        "reqps",
                        &[(
                            "sum by (subgraph) (rate(fraiseql_edge_requests_total{$G}[$__rate_interval]))",
                            "{{subgraph}}",
                        )],
                    ),
                ],
            },
            Row {
                title: "Query shape",
                panels: vec![
                    panel(
                        "Query depth",
                        "P50 and P95 of the deepest field nesting of the operations that passed the limits, per subgraph.",
                        "none",
                        &[
                            (
                                "histogram_quantile(0.5, sum by (le, subgraph) (rate(fraiseql_edge_graphql_query_depth_bucket{$G}[$__rate_interval])))",
                                "P50 {{subgraph}}",
                            ),
                            (
                                "histogram_quantile(0.95, sum by (le, subgraph) (rate(fraiseql_edge_graphql_query_depth_bucket{$G}[$__rate_interval])))",
                                "P95 {{subgraph}}",
                            ),
                        ],
                    ),
                    panel(
                        "Query cost",
                        "P50 and P95 of the static cost (with the variables sent) of the operations that passed the limits, per subgraph.",
                        "none",
                        &[
                            (
                                "histogram_quantile(0.5, sum by (le, subgraph) (rate(fraiseql_edge_graphql_query_cost_bucket{$G}[$__rate_interval])))",
                                "P50 {{subgraph}}",
                            ),
                            (
                                "histogram_quantile(0.95, sum by (le, subgraph) (rate(fraiseql_edge_graphql_query_cost_bucket{$G}[$__rate_interval])))",
                                "P95 {{subgraph}}",
                            ),
                        ],
                    ),
                    panel(
                        "Document cache hit rate",
                        "Share of document lookups answered from the cache (parse, limits and validation of a document seen before).",
                        "percentunit",
                        &[(
                            "sum(rate(fraiseql_edge_graphql_document_cache_total{$S, result=\"hit\"}[$__rate_interval])) / sum(rate(fraiseql_edge_graphql_document_cache_total{$S}[$__rate_interval]))",
                            "hit rate",
                        )],
                    ),
                    panel(
                        "Persisted queries",
                        "Operations per second by how their document was found: APQ hits and registrations, safelist ids and documents.",
                        "ops",
                        &[(
                            "sum by (outcome) (rate(fraiseql_edge_persisted_queries_total{$S}[$__rate_interval]))",
                            "{{outcome}}",
                        )],
                    ),
                ],
            },
        ],
    }
}

fn errors() -> Dashboard {
    Dashboard {
        name: "errors",
        title: "fraiseql-edge / Errors",
        description: "What went wrong: error rate by code and status, failed entity resolutions, circuit breakers, retries and failovers.",
        rows: vec![
            Row {
                title: "Errors",
                panels: vec![
                    panel(
                        "5xx ratio per subgraph",
                        "Share of requests answered with a 5xx status, per subgraph (the HighErrorRate alert fires above 1 %).",
                        "percentunit",
                        &[("(sum by (subgraph) (rate(fraiseql_edge_requests_total{$G, status=~\"5..\"}[$__rate_interval])) or sum by (subgraph) (rate(fraiseql_edge_requests_total{$G}[$__rate_interval])) * 0) / sum by (subgraph) (rate(fraiseql_edge_requests_total{$G}[$__rate_interval]))", "{{subgraph}}")],
                    ),
                    panel(
                        "Responses by status",
                        "Requests per second by the HTTP status the edge sent.",
                        "reqps",
                        &[("sum by (status) (rate(fraiseql_edge_requests_total{$G}[$__rate_interval]))", "{{status}}")],
                    ),
                    panel(
                        "Refusals by code",
                        "Requests per second the edge refused, by its stable `extensions.code`.",
                        "reqps",
                        &[("sum by (code) (rate(fraiseql_edge_requests_total{$G, code!=\"none\"}[$__rate_interval]))", "{{code}}")],
                    ),
                    panel(
                        "Failed entity resolutions",
                        "`_entities` representations that failed per second, by subgraph and typename.",
                        "ops",
                        &[("sum by (subgraph, typename) (rate(fraiseql_edge_entities_total{$G, outcome=\"failed\"}[$__rate_interval]))", "{{subgraph}} {{typename}}")],
                    ),
                ],
            },
            Row {
                title: "Circuit breakers",
                panels: vec![
                    panel(
                        "Circuit breaker state",
                        "Each subgraph's breaker: 0 closed, 1 open (requests refused with 503 CIRCUIT_OPEN), 2 half-open (probing).",
                        "none",
                        &[("max by (subgraph) (fraiseql_edge_circuit_breaker_state{$G})", "{{subgraph}}")],
                    )
                    .breaker(),
                    panel(
                        "Breaker trips",
                        "Transitions to open per subgraph over the interval (by failures, a failed probe or an operator).",
                        "short",
                        &[("sum by (subgraph) (increase(fraiseql_edge_circuit_breaker_transitions_total{$G, to=\"open\"}[$__rate_interval]))", "{{subgraph}}")],
                    ),
                    panel(
                        "Breaker rejections",
                        "Requests per second refused by an open breaker, per subgraph.",
                        "reqps",
                        &[("sum by (subgraph) (rate(fraiseql_edge_circuit_breaker_rejections_total{$G}[$__rate_interval]))", "{{subgraph}}")],
                    ),
                ],
            },
            Row {
                title: "Retries and failovers",
                panels: vec![
                    panel(
                        "Failovers by reason",
                        "Tries retried on another endpoint per second, by subgraph and reason (saturated pool, timeout, endpoint unavailable).",
                        "ops",
                        &[("sum by (subgraph, reason) (rate(fraiseql_edge_failovers_total{$G}[$__rate_interval]))", "{{subgraph}} {{reason}}")],
                    ),
                    panel(
                        "Retry budget exhausted",
                        "Retries skipped per second because the subgraph's retry budget was spent.",
                        "ops",
                        &[("sum by (subgraph) (rate(fraiseql_edge_retry_budget_exhausted_total{$G}[$__rate_interval]))", "{{subgraph}}")],
                    ),
                    panel(
                        "Response bodies cut off",
                        "Response bodies ended early per second: the upstream stalled (`idle`) or the request deadline passed mid-body (`deadline`).",
                        "ops",
                        &[("sum by (subgraph, reason) (rate(fraiseql_edge_response_body_timeouts_total{$G}[$__rate_interval]))", "{{subgraph}} {{reason}}")],
                    ),
                ],
            },
        ],
    }
}

fn upstreams() -> Dashboard {
    Dashboard {
        name: "upstreams",
        title: "fraiseql-edge / Upstream & pools",
        description: "The subgraphs as the edge sees them: pooled connections, checkout waits, latency and health per endpoint, slow queries.",
        rows: vec![
            Row {
                title: "Pools",
                panels: vec![
                    panel(
                        "Pool utilization",
                        "Busy over maximum pooled connections per endpoint (the UpstreamPoolExhausted alert fires at 90 %).",
                        "percentunit",
                        &[(
                            "sum by (subgraph, endpoint) (fraiseql_edge_pool_connections{$G, state=\"busy\"}) / sum by (subgraph, endpoint) (fraiseql_edge_pool_max_connections{$G})",
                            "{{subgraph}} {{endpoint}}",
                        )],
                    ),
                    panel(
                        "Pooled connections",
                        "Idle and busy pooled connections per subgraph.",
                        "short",
                        &[(
                            "sum by (subgraph, state) (fraiseql_edge_pool_connections{$G})",
                            "{{subgraph}} {{state}}",
                        )],
                    ),
                    panel(
                        "Pool checkout wait",
                        "P50 and P99 of the time to check out a pooled connection (all pools).",
                        "s",
                        &[
                            (
                                "histogram_quantile(0.5, sum by (le) (rate(fraiseql_edge_pool_wait_seconds_bucket{$S}[$__rate_interval])))",
                                "P50",
                            ),
                            (
                                "histogram_quantile(0.99, sum by (le) (rate(fraiseql_edge_pool_wait_seconds_bucket{$S}[$__rate_interval])))",
                                "P99",
                            ),
                        ],
                    ),
                    series(
                        "Latency per endpoint",
                        "P50, P95, P99 and P99.9 of one try's time at each endpoint.",
                        "s",
                        quantiles(
                            "fraiseql_edge_upstream_duration_seconds",
                            "endpoint",
                            SEL_SG,
                        ),
                    ),
                ],
            },
            Row {
                title: "Health",
                panels: vec![
                    panel(
                        "Endpoint health",
                        "1 while the endpoint takes traffic, 0 while the health checks have ejected it.",
                        "bool",
                        &[(
                            "min by (subgraph, endpoint) (fraiseql_edge_endpoint_healthy{$G})",
                            "{{subgraph}} {{endpoint}}",
                        )],
                    ),
                    panel(
                        "Health transitions",
                        "Endpoints ejected or restored over the interval.",
                        "short",
                        &[(
                            "sum by (subgraph, endpoint, to) (increase(fraiseql_edge_endpoint_health_transitions_total{$G}[$__rate_interval]))",
                            "{{subgraph}} {{endpoint}} {{to}}",
                        )],
                    ),
                    panel(
                        "Panic mode",
                        "1 while every endpoint of the subgraph is ejected and traffic goes to all of them anyway.",
                        "bool",
                        &[(
                            "max by (subgraph) (fraiseql_edge_panic_mode{$G})",
                            "{{subgraph}}",
                        )],
                    ),
                ],
            },
            Row {
                title: "Slow queries",
                panels: vec![
                    panel(
                        "Slow queries",
                        "Requests per second slower than `[slow_queries] threshold_ms` (listed by `edgectl slow-queries`).",
                        "reqps",
                        &[(
                            "sum by (subgraph) (rate(fraiseql_edge_slow_queries_total{$G}[$__rate_interval]))",
                            "{{subgraph}}",
                        )],
                    ),
                    panel(
                        "Slow query ratio",
                        "Slow requests over all requests, per subgraph (the SlowQueries alert fires above 5 %).",
                        "percentunit",
                        &[(
                            "sum by (subgraph) (rate(fraiseql_edge_slow_queries_total{$G}[$__rate_interval])) / sum by (subgraph) (rate(fraiseql_edge_requests_total{$G}[$__rate_interval]))",
                            "{{subgraph}}",
                        )],
                    ),
                ],
            },
        ],
    }
}

fn kernel() -> Dashboard {
    Dashboard {
        name: "kernel",
        title: "fraiseql-edge / Kernel enforcement",
        description: "The XDP layer: packets by verdict, tracked clients and connections, map fill, attachment per interface, degraded mode.",
        rows: vec![
            Row {
                title: "Packets",
                panels: vec![
                    panel(
                        "Packets by verdict",
                        "Packets per second seen by the XDP program, by verdict (passed, or dropped and why).",
                        "pps",
                        &[("sum by (verdict) (rate(fraiseql_edge_kernel_packets_total{$S}[$__rate_interval]))", "{{verdict}}")],
                    ),
                    panel(
                        "Drops by reason",
                        "Packets per second dropped, by reason: rate limit, connection cap, block list, deny override, fragments, extension headers.",
                        "pps",
                        &[("sum by (verdict) (rate(fraiseql_edge_kernel_packets_total{$S, verdict=~\"dropped_.*\"}[$__rate_interval]))", "{{verdict}}")],
                    ),
                    panel(
                        "Drop ratio",
                        "Dropped over all packets seen, per instance (the KernelDropSurge alert fires above 10 % and 100 packets/s).",
                        "percentunit",
                        &[("sum by (instance) (rate(fraiseql_edge_kernel_packets_total{$S, verdict=~\"dropped_.*\"}[$__rate_interval])) / sum by (instance) (rate(fraiseql_edge_kernel_packets_total{$S}[$__rate_interval]))", "{{instance}}")],
                    ),
                    panel(
                        "Drop events lost",
                        "Drop events per second lost because the ring buffer to the daemon was full (the counters above stay exact).",
                        "ops",
                        &[("sum by (instance) (rate(fraiseql_edge_kernel_drop_events_lost_total{$S}[$__rate_interval]))", "{{instance}}")],
                    ),
                ],
            },
            Row {
                title: "Clients and connections",
                panels: vec![
                    panel(
                        "Tracked clients",
                        "Clients in the kernel's client map, each with a token bucket.",
                        "short",
                        &[("sum by (instance) (fraiseql_edge_kernel_tracked_clients{$S})", "{{instance}}")],
                    ),
                    panel(
                        "New clients",
                        "Clients first seen by the XDP program per second.",
                        "ops",
                        &[("sum by (instance) (rate(fraiseql_edge_kernel_clients_total{$S}[$__rate_interval]))", "{{instance}}")],
                    ),
                    panel(
                        "Live connections",
                        "Connections on protected ports: slots held minus handshakes in flight, and the handshakes in flight.",
                        "short",
                        &[
                            ("sum by (instance) (fraiseql_edge_kernel_connection_slots{$S} - fraiseql_edge_kernel_pending_handshakes{$S})", "live {{instance}}"),
                            ("sum by (instance) (fraiseql_edge_kernel_pending_handshakes{$S})", "handshakes {{instance}}"),
                        ],
                    ),
                    panel(
                        "Connection events",
                        "Connections opened and closed per second, and handshake reservations that expired.",
                        "ops",
                        &[("sum by (event) (rate(fraiseql_edge_kernel_connections_total{$S}[$__rate_interval]))", "{{event}}")],
                    ),
                ],
            },
            Row {
                title: "Maps and attachment",
                panels: vec![
                    panel(
                        "Map fill",
                        "Entries over capacity of each bounded kernel map (the KernelMapNearlyFull alert fires above 90 %).",
                        "percentunit",
                        &[("max by (map) (fraiseql_edge_kernel_map_fill_ratio{$S})", "{{map}}")],
                    ),
                    panel(
                        "Inserts refused by a full map",
                        "Per second, per map: the connection was admitted uncounted or unreserved.",
                        "ops",
                        &[("sum by (map) (rate(fraiseql_edge_kernel_map_full_total{$S}[$__rate_interval]))", "{{map}}")],
                    ),
                    panel(
                        "Program attached",
                        "1 while the XDP program's pinned link exists on the interface.",
                        "bool",
                        &[("min by (instance, interface) (fraiseql_edge_kernel_program_attached{$S})", "{{instance}} {{interface}}")],
                    )
                    .stat(),
                    panel(
                        "Degraded mode",
                        "1 while the per-client limits are enforced in user space because the kernel layer is unavailable.",
                        "bool",
                        &[("max by (instance) (fraiseql_edge_degraded_mode{$S})", "{{instance}}")],
                    )
                    .stat(),
                    panel(
                        "Maps readable",
                        "1 if the last scrape could read the kernel maps; 0 means the kernel values are stale.",
                        "bool",
                        &[("min by (instance) (fraiseql_edge_kernel_maps_readable{$S})", "{{instance}}")],
                    )
                    .stat(),
                ],
            },
        ],
    }
}

fn security() -> Dashboard {
    Dashboard {
        name: "security",
        title: "fraiseql-edge / Security",
        description: "Who was turned away and why: authentication, rate limits and escalations, blocks, cluster mode (limits and blocks shared through Redis), validation and authorization refusals, JWKS freshness.",
        rows: vec![
            Row {
                title: "Authentication",
                panels: vec![
                    panel(
                        "Auth failures by reason",
                        "Requests per second refused with 401, by reason (missing, malformed or expired token, unknown key, bad signature, …).",
                        "reqps",
                        &[(
                            "sum by (reason) (rate(fraiseql_edge_auth_failures_total{$S}[$__rate_interval]))",
                            "{{reason}}",
                        )],
                    ),
                    panel(
                        "Auth failure ratio",
                        "401s over all requests (the AuthFailureSurge alert fires above 10 % and 1/s).",
                        "percentunit",
                        &[(
                            "sum(rate(fraiseql_edge_auth_failures_total{$S}[$__rate_interval])) / sum(rate(fraiseql_edge_requests_total{$S}[$__rate_interval]))",
                            "ratio",
                        )],
                    ),
                    panel(
                        "JWKS age",
                        "Seconds since each JWKS URL last answered with a usable key set (the JwksRefreshFailing alert fires above 900 s).",
                        "s",
                        &[(
                            "max by (source) (fraiseql_edge_auth_jwks_refresh_age_seconds{$S})",
                            "{{source}}",
                        )],
                    ),
                    panel(
                        "JWKS refresh failures",
                        "Failed JWKS fetches over the interval (the last good key set stays in use).",
                        "short",
                        &[(
                            "sum by (source) (increase(fraiseql_edge_auth_jwks_refresh_failures_total{$S}[$__rate_interval]))",
                            "{{source}}",
                        )],
                    ),
                ],
            },
            Row {
                title: "Limits and blocks",
                panels: vec![
                    panel(
                        "Rate-limit rejections",
                        "Requests per second refused with 429, by layer (per identity, or the degraded-mode limiter), and packets per second the kernel dropped for rate.",
                        "reqps",
                        &[
                            (
                                "sum by (layer) (rate(fraiseql_edge_rate_limited_total{$S}[$__rate_interval]))",
                                "{{layer}}",
                            ),
                            (
                                "sum(rate(fraiseql_edge_kernel_packets_total{$S, verdict=\"dropped_rate\"}[$__rate_interval]))",
                                "kernel (packets)",
                            ),
                        ],
                    ),
                    panel(
                        "Escalations",
                        "Clients put on the block list per interval for repeated refusals, and escalations that could not block.",
                        "short",
                        &[(
                            "sum by (outcome) (increase(fraiseql_edge_escalations_total{$S}[$__rate_interval]))",
                            "{{outcome}}",
                        )],
                    ),
                    panel(
                        "Blocked clients",
                        "Entries in the block list (kernel, or the user-space list in degraded mode).",
                        "short",
                        &[(
                            "sum by (instance) (fraiseql_edge_kernel_blocked_clients{$S}) or sum by (instance) (fraiseql_edge_degraded_blocked_clients{$S})",
                            "{{instance}}",
                        )],
                    ),
                    panel(
                        "Packets dropped by blocks and denies",
                        "Packets per second the kernel dropped for the block list and deny overrides.",
                        "pps",
                        &[(
                            "sum by (verdict) (rate(fraiseql_edge_kernel_packets_total{$S, verdict=~\"dropped_block|dropped_deny\"}[$__rate_interval]))",
                            "{{verdict}}",
                        )],
                    ),
                ],
            },
            Row {
                title: "Cluster mode",
                panels: vec![
                    panel(
                        "Redis reachable",
                        "Per node: 1 while its global checks reach Redis and while it is subscribed to the shared blocks and has loaded them; 0 while it falls back (local limits, blocks on this node only).",
                        "short",
                        &[
                            (
                                "min by (instance) (fraiseql_edge_cluster_redis_up{$S})",
                                "{{instance}} global checks",
                            ),
                            (
                                "min by (instance) (fraiseql_edge_cluster_block_sync_up{$S})",
                                "{{instance}} shared blocks",
                            ),
                        ],
                    )
                    .stat(),
                    panel(
                        "Global limit checks",
                        "Checks per second of the limits marked global, by outcome; `unavailable` ones fell back to the failure mode (the ClusterGlobalChecksUnavailable alert fires above 5 %).",
                        "reqps",
                        &[(
                            "sum by (result) (rate(fraiseql_edge_cluster_checks_total{$S}[$__rate_interval]))",
                            "{{result}}",
                        )],
                    ),
                    panel(
                        "Shared block changes",
                        "Blocks and unblocks per interval written to Redis by these nodes (published) and applied from other nodes (received).",
                        "short",
                        &[(
                            "sum by (direction, op) (increase(fraiseql_edge_cluster_blocks_total{$S}[$__rate_interval]))",
                            "{{direction}} {{op}}",
                        )],
                    ),
                    panel(
                        "Block changes waiting for Redis",
                        "Block changes made while Redis was unreachable, not written yet (they hold on their own node), and loads of the whole shared set.",
                        "short",
                        &[
                            (
                                "max by (instance) (fraiseql_edge_cluster_block_pending{$S})",
                                "{{instance}} pending",
                            ),
                            (
                                "sum by (instance) (increase(fraiseql_edge_cluster_block_resyncs_total{$S}[$__rate_interval]))",
                                "{{instance}} resyncs",
                            ),
                        ],
                    ),
                ],
            },
            Row {
                title: "Validation and authorization",
                panels: vec![
                    panel(
                        "Validation refusals by code",
                        "Requests per second refused by parsing, limits (depth, aliases, cost, …), validation or the safelist.",
                        "reqps",
                        &[(
                            "sum by (code) (rate(fraiseql_edge_graphql_refusals_total{$S}[$__rate_interval]))",
                            "{{code}}",
                        )],
                    ),
                    panel(
                        "Authorization refusals",
                        "Operations per second refused (entry point, fields) or filtered by field authorization.",
                        "reqps",
                        &[(
                            "sum by (reason) (rate(fraiseql_edge_authorization_refusals_total{$S}[$__rate_interval]))",
                            "{{reason}}",
                        )],
                    ),
                ],
            },
        ],
    }
}

fn sagas() -> Dashboard {
    Dashboard {
        name: "sagas",
        title: "fraiseql-edge / Saga Transactions",
        description: "The saga coordinator (`[sagas]`): sagas started and finished, their duration, steps and compensations per subgraph, recovery, and what waits in the log.",
        rows: vec![
            Row {
                title: "Throughput",
                panels: vec![
                    panel(
                        "Sagas started",
                        "Sagas accepted by `POST /sagas` and written to the log per second (a replayed submission is not counted again).",
                        "ops",
                        &[("sum(rate(fraiseql_edge_saga_started_total{$S}[$__rate_interval]))", "started")],
                    ),
                    panel(
                        "Sagas finished by outcome",
                        "Sagas that reached an end per second. `failed` is a rollback given up: the saga is parked for an operator (the SagaCompensationFailing alert).",
                        "ops",
                        &[("sum by (outcome) (rate(fraiseql_edge_saga_finished_total{$S}[$__rate_interval]))", "{{outcome}}")],
                    ),
                    panel(
                        "Compensation rate",
                        "Share of finished sagas that were rolled back (compensated, or failed while compensating). The SagaCompensationRateHigh alert fires above 10 %.",
                        "percentunit",
                        &[("sum(rate(fraiseql_edge_saga_finished_total{$S, outcome=~\"compensated|failed\"}[$__rate_interval])) / sum(rate(fraiseql_edge_saga_finished_total{$S}[$__rate_interval]))", "compensated")],
                    ),
                    panel(
                        "Sagas in flight",
                        "Sagas neither finished nor parked, by state, as the log holds them (read every second).",
                        "short",
                        &[("sum by (state) (fraiseql_edge_saga_in_flight{$S})", "{{state}}")],
                    ),
                ],
            },
            Row {
                title: "Duration",
                panels: vec![
                    panel(
                        "Saga duration by outcome",
                        "P50 and P95 of the time from a saga's submission to its end, by outcome.",
                        "s",
                        &[
                            ("histogram_quantile(0.5, sum by (le, outcome) (rate(fraiseql_edge_saga_duration_seconds_bucket{$S}[$__rate_interval])))", "P50 {{outcome}}"),
                            ("histogram_quantile(0.95, sum by (le, outcome) (rate(fraiseql_edge_saga_duration_seconds_bucket{$S}[$__rate_interval])))", "P95 {{outcome}}"),
                        ],
                    ),
                    series(
                        "Step duration per subgraph",
                        "P50, P95, P99 and P99.9 of one try of a step or a compensation, per subgraph.",
                        "s",
                        quantiles("fraiseql_edge_saga_step_duration_seconds", "subgraph", SEL_SG),
                    ),
                ],
            },
            Row {
                title: "Steps and compensations",
                panels: vec![
                    panel(
                        "Step tries by status",
                        "Tries of saga steps per second by subgraph and status: `completed`, `failed` (refused, or no answer after every retry) and `retried` (sent again with the same key after no answer).",
                        "ops",
                        &[("sum by (subgraph, status) (rate(fraiseql_edge_saga_steps_total{$G}[$__rate_interval]))", "{{subgraph}} {{status}}")],
                    ),
                    panel(
                        "Compensations by result",
                        "Tries of compensating mutations per second by subgraph and result. Failures are retried with backoff up to `sagas.compensation_retries`, then the saga is parked.",
                        "ops",
                        &[("sum by (subgraph, result) (rate(fraiseql_edge_saga_compensations_total{$G}[$__rate_interval]))", "{{subgraph}} {{result}}")],
                    ),
                ],
            },
            Row {
                title: "Recovery and the log",
                panels: vec![
                    panel(
                        "Recovery outcomes",
                        "Sagas recovery picked up per second (at start and every `sagas.recovery_interval_secs`): driven on to an end or a park (`success`), or the log could not be read or written (`failure`, the SagaRecoveryFailing alert).",
                        "ops",
                        &[("sum by (result) (rate(fraiseql_edge_saga_recovery_total{$S}[$__rate_interval]))", "{{result}}")],
                    ),
                    panel(
                        "Recovery success rate",
                        "Share of recoveries that succeeded (100 % when none failed, including when there was nothing to recover).",
                        "percentunit",
                        &[("1 - sum(rate(fraiseql_edge_saga_recovery_total{$S, result=\"failure\"}[$__rate_interval])) / clamp_min(sum(rate(fraiseql_edge_saga_recovery_total{$S}[$__rate_interval])), 1e-9)", "success")],
                    )
                    .stat(),
                    panel(
                        "Parked sagas",
                        "Sagas left for an operator: a compensation given up (partially compensated) or a park by recovery. `edgectl sagas list --state Failed`, then `show`, `retry` or `cancel`.",
                        "short",
                        &[("sum by (instance) (fraiseql_edge_saga_parked{$S})", "{{instance}}")],
                    )
                    .stat(),
                    panel(
                        "Oldest saga in flight",
                        "Age of the oldest saga neither finished nor parked (0 when none is). The SagaStuck alert fires above 15 minutes.",
                        "s",
                        &[("max by (instance) (fraiseql_edge_saga_oldest_in_flight_age_seconds{$S})", "{{instance}}")],
                    ),
                ],
            },
        ],
    }
}

fn all() -> Vec<Dashboard> {
    vec![
        overview(),
        performance(),
        errors(),
        upstreams(),
        kernel(),
        security(),
        sagas(),
    ]
}

fn template_variables(with_subgraph: bool) -> Value {
    let query_var = |name: &str, label: &str, query: String| {
        json!({
            "name": name,
            "label": label,
            "type": "query",
            "datasource": { "type": "prometheus", "uid": "${datasource}" },
            "query": { "query": query, "refId": format!("{name}-variable") },
            "definition": query,
            "refresh": 2,
            "includeAll": true,
            "allValue": ".*",
            "multi": true,
            "sort": 1,
            "current": { "selected": true, "text": ["All"], "value": ["$__all"] },
        })
    };
    let mut list = vec![
        json!({
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "refresh": 1,
            "current": {},
        }),
        query_var(
            "job",
            "Job",
            "label_values(fraiseql_edge_build_info, job)".into(),
        ),
        query_var(
            "instance",
            "Instance",
            r#"label_values(fraiseql_edge_build_info{job=~"$job"}, instance)"#.into(),
        ),
    ];
    if with_subgraph {
        list.push(query_var(
            "subgraph",
            "Subgraph",
            r#"label_values(fraiseql_edge_circuit_breaker_state{job=~"$job", instance=~"$instance"}, subgraph)"#.into(),
        ));
    }
    json!({ "list": list })
}

fn panel_json(p: &Panel, id: u64, x: u64, y: u64) -> Value {
    let targets: Vec<Value> = p
        .targets
        .iter()
        .zip('A'..)
        .map(|((expr, legend), ref_id)| {
            json!({
                "datasource": { "type": "prometheus", "uid": "${datasource}" },
                "expr": expr,
                "legendFormat": legend,
                "refId": ref_id.to_string(),
            })
        })
        .collect();
    let (kind, options, mappings) = match p.kind {
        Kind::Series => (
            "timeseries",
            json!({ "legend": { "displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"] }, "tooltip": { "mode": "multi", "sort": "desc" } }),
            json!([]),
        ),
        Kind::Stat => (
            "stat",
            json!({ "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false }, "colorMode": "value", "graphMode": "area" }),
            json!([]),
        ),
        Kind::BreakerState => (
            "state-timeline",
            json!({ "mergeValues": true, "showValue": "auto", "legend": { "displayMode": "list", "placement": "bottom" } }),
            json!([{ "type": "value", "options": {
                "0": { "text": "closed", "color": "green", "index": 0 },
                "1": { "text": "open", "color": "red", "index": 1 },
                "2": { "text": "half-open", "color": "orange", "index": 2 },
            } }]),
        ),
    };
    json!({
        "id": id,
        "type": kind,
        "title": p.title,
        "description": p.description,
        "datasource": { "type": "prometheus", "uid": "${datasource}" },
        "gridPos": { "h": 8, "w": 12, "x": x, "y": y },
        "fieldConfig": { "defaults": { "unit": p.unit, "mappings": mappings }, "overrides": [] },
        "options": options,
        "targets": targets,
    })
}

fn dashboard_json(d: &Dashboard) -> Value {
    let mut panels = Vec::new();
    let mut id = 1;
    let mut y = 0;
    let mut uses_subgraph = false;
    for row in &d.rows {
        panels.push(json!({
            "id": id, "type": "row", "title": row.title, "collapsed": false,
            "gridPos": { "h": 1, "w": 24, "x": 0, "y": y }, "panels": [],
        }));
        id += 1;
        y += 1;
        for (i, p) in row.panels.iter().enumerate() {
            uses_subgraph |= p.targets.iter().any(|(e, _)| e.contains("$subgraph"));
            let x = if i % 2 == 0 { 0 } else { 12 };
            panels.push(panel_json(p, id, x, y));
            id += 1;
            if i % 2 == 1 || i + 1 == row.panels.len() {
                y += 8;
            }
        }
    }
    json!({
        "uid": format!("fraiseql-edge-{}", d.name),
        "title": d.title,
        "description": d.description,
        "tags": ["fraiseql-edge"],
        "editable": true,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": { "from": "now-1h", "to": "now" },
        "timezone": "",
        "templating": template_variables(uses_subgraph),
        "annotations": { "list": [] },
        "links": [{
            "title": "fraiseql-edge dashboards", "type": "dashboards",
            "tags": ["fraiseql-edge"], "asDropdown": true, "includeVars": true, "keepTime": true,
        }],
        "panels": panels,
    })
}

fn dir() -> PathBuf {
    paths::root().join("dashboards")
}

/// Every dashboard as its file name and pretty-printed JSON.
fn rendered() -> Result<Vec<(String, String)>> {
    all()
        .iter()
        .map(|d| {
            let mut text = serde_json::to_string_pretty(&dashboard_json(d))?;
            text.push('\n');
            Ok((format!("{}.json", d.name), text))
        })
        .collect()
}

/// Writes dashboards/*.json.
pub fn generate() -> Result<()> {
    for (file, text) in rendered()? {
        let path = dir().join(&file);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("ops-generate: {}", path.display());
    }
    Ok(())
}

/// The committed files are what [`generate`] writes, and every dashboard
/// keeps the conventions.
pub fn check() -> Result<()> {
    let mut problems = Vec::new();
    let expected = rendered()?;
    let names: BTreeSet<&str> = expected.iter().map(|(f, _)| f.as_str()).collect();
    for (file, text) in &expected {
        let path = dir().join(file);
        match fs::read_to_string(&path) {
            Ok(found) if &found == text => {}
            Ok(_) => problems.push(format!(
                "{} differs from its source (run `cargo xtask ops-generate`)",
                path.display()
            )),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
        let value: Value = serde_json::from_str(text)?;
        problems.extend(lint(&value).into_iter().map(|p| format!("{file}: {p}")));
    }
    for entry in fs::read_dir(dir()).with_context(|| format!("reading {}", dir().display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !names.contains(name.as_str()) {
            problems.push(format!(
                "dashboards/{name} is not generated by xtask/src/ops/dashboards.rs"
            ));
        }
    }
    if expected.len() < 6 {
        problems.push(format!(
            "{} dashboards, at least 6 expected",
            expected.len()
        ));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

/// What a dashboard breaks of the conventions (empty when none).
fn lint(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .map(|l| l.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    for needed in ["datasource", "job", "instance"] {
        if !vars.contains(&needed) {
            out.push(format!("no `{needed}` variable"));
        }
    }
    if d["uid"]
        .as_str()
        .is_none_or(|u| !u.starts_with("fraiseql-edge-"))
    {
        out.push("uid missing or without the fraiseql-edge- prefix".into());
    }
    let panels = d["panels"].as_array().cloned().unwrap_or_default();
    let mut real = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        real += 1;
        let title = p["title"].as_str().unwrap_or("");
        if title.is_empty() {
            out.push(format!("panel {} has no title", p["id"]));
        }
        if p["description"].as_str().is_none_or(str::is_empty) {
            out.push(format!("panel `{title}` has no description"));
        }
        if p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            out.push(format!("panel `{title}` has no unit"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            out.push(format!("panel `{title}` has no query"));
        }
        for t in &targets {
            let expr = t["expr"].as_str().unwrap_or("");
            if expr.contains("rate(") && !expr.contains("[$__rate_interval]") {
                out.push(format!("panel `{title}`: a rate without $__rate_interval"));
            }
            if !expr.contains(r#"job=~"$job""#) {
                out.push(format!("panel `{title}`: a query without the job selector"));
            }
            if expr.contains("$subgraph") && !vars.contains(&"subgraph") {
                out.push(format!(
                    "panel `{title}` uses $subgraph, which is not defined"
                ));
            }
        }
    }
    if real == 0 {
        out.push("no panels".into());
    }
    out
}

/// Every panel query of the committed dashboards with the variables
/// substituted as the live check uses them: `(dashboard, panel, query)`.
#[cfg(test)]
fn queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for d in all() {
        for row in &d.rows {
            for p in &row.panels {
                for (expr, _) in &p.targets {
                    out.push((d.name.to_string(), p.title.to_string(), expr.clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_dashboards_keep_the_conventions() {
        for (file, text) in rendered().unwrap() {
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(lint(&value), Vec::<String>::new(), "{file}");
        }
    }

    #[test]
    fn the_lint_finds_what_is_missing() {
        let d = json!({
            "uid": "other",
            "templating": { "list": [{ "name": "datasource" }] },
            "panels": [{ "id": 1, "type": "timeseries", "title": "t",
                "fieldConfig": { "defaults": {} },
                "targets": [{ "expr": "rate(x[5m])" }] }],
        });
        let found = lint(&d).join("\n");
        for expected in [
            "no `job` variable",
            "no `instance` variable",
            "uid missing",
            "has no description",
            "has no unit",
            "without $__rate_interval",
            "without the job selector",
        ] {
            assert!(found.contains(expected), "{expected} not in:\n{found}");
        }
    }

    #[test]
    fn uids_are_unique_and_every_query_is_distinct_per_panel() {
        let uids: BTreeSet<String> = all().iter().map(|d| d.name.to_string()).collect();
        assert_eq!(uids.len(), all().len());
        assert!(queries().len() > 60, "{} queries", queries().len());
    }
}
