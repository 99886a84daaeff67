//! Data-path metrics, registered into a registry that is passed in.
//! Names: prefix `fraiseql_edge_`, base units, `_total` counters.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};

use super::operation::OperationKind;

/// One subgraph's hot-path metric handles, resolved once: a label lookup
/// hashes every label value and takes a lock, on every request otherwise.
pub struct SubgraphMetrics {
    /// `requests_total{status="200"}` by operation (query, mutation, subscription).
    ok: [IntCounter; 3],
    /// `request_duration_seconds` of the subgraph.
    pub request_duration: Histogram,
    /// `upstream_duration_seconds` by endpoint index.
    pub upstream_duration: Vec<Histogram>,
}

impl SubgraphMetrics {
    /// Resolves the handles of subgraph `name` with endpoints `endpoints`.
    pub fn new(m: &ProxyMetrics, name: &str, endpoints: &[&str]) -> Self {
        let ok = |op: OperationKind| m.requests.with_label_values(&[name, "200", op.as_str()]);
        Self {
            ok: [
                ok(OperationKind::Query),
                ok(OperationKind::Mutation),
                ok(OperationKind::Subscription),
            ],
            request_duration: m.request_duration.with_label_values(&[name]),
            upstream_duration: endpoints
                .iter()
                .map(|e| m.upstream_duration.with_label_values(&[name, e]))
                .collect(),
        }
    }

    /// The `requests_total` counter of a 200 answer to `op`.
    pub fn ok(&self, op: OperationKind) -> &IntCounter {
        &self.ok[op as usize]
    }
}

/// Every metric of the data path.
#[derive(Clone)]
pub struct ProxyMetrics {
    /// Requests by subgraph, HTTP status and operation type.
    pub requests: IntCounterVec,
    /// Whole-request latency by subgraph.
    pub request_duration: HistogramVec,
    /// Upstream latency (until response headers) by subgraph and endpoint.
    pub upstream_duration: HistogramVec,
    /// Pool connections by subgraph, endpoint and state (idle, busy).
    pub pool_connections: IntGaugeVec,
    /// Pool maximum by subgraph and endpoint.
    pub pool_max: IntGaugeVec,
    /// Time spent waiting for a pooled connection.
    pub pool_wait: Histogram,
    /// 1 healthy, 0 ejected, by subgraph and endpoint.
    pub endpoint_healthy: IntGaugeVec,
    /// Breaker state by subgraph: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGaugeVec,
    /// Breaker transitions by subgraph, from and to.
    pub breaker_transitions: IntCounterVec,
    /// Requests refused by an open breaker.
    pub breaker_rejections: IntCounterVec,
    /// Retries on another endpoint (failovers) by subgraph and reason.
    pub failovers: IntCounterVec,
    /// Failovers refused by the retry budget.
    pub retry_budget_exhausted: IntCounterVec,
    /// Health transitions by subgraph, endpoint and direction.
    pub health_transitions: IntCounterVec,
    /// `_entities` representations by subgraph, typename and outcome.
    pub entities: IntCounterVec,
    /// `_entities` responses passed on uncounted, by subgraph and reason.
    pub entities_uninspected: IntCounterVec,
    /// Tries sent while every endpoint was ejected (panic mode), by subgraph.
    pub panic_requests: IntCounterVec,
    /// 1 while a subgraph is in panic mode.
    pub panic_mode: IntGaugeVec,
    /// Response bodies cut off by a deadline, by subgraph and reason.
    pub body_timeouts: IntCounterVec,
    /// Requests refused by a rate limit, by layer (`identity`, `degraded`).
    pub rate_limited: IntCounterVec,
    /// Addresses escalated to the block list, by outcome.
    pub escalations: IntCounterVec,
    /// Requests refused by authentication, by reason.
    pub auth_failures: IntCounterVec,
    /// Requests refused by the graphql phase, by code.
    pub graphql_refusals: IntCounterVec,
    /// Document-cache lookups by result (`hit`, `miss`).
    pub document_cache: IntCounterVec,
    /// Operations by how their document was found (APQ, safelist, plain).
    pub persisted_queries: IntCounterVec,
    /// Operations refused or filtered by authorization, by reason.
    pub authz_refusals: IntCounterVec,
    /// Requests slower than `slow_queries.threshold_ms`, by subgraph.
    pub slow_queries: IntCounterVec,
}

fn latency_buckets() -> Vec<f64> {
    // 100 µs … ~26 s
    exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")
}

impl ProxyMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let p = "fraiseql_edge_";
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(format!("{p}requests_total"), "GraphQL requests handled"),
                &["subgraph", "status", "operation"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    format!("{p}request_duration_seconds"),
                    "Time from request to response headers, through the edge",
                )
                .buckets(latency_buckets()),
                &["subgraph"],
            )?,
            upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    format!("{p}upstream_duration_seconds"),
                    "Time an upstream took to answer one try (until headers)",
                )
                .buckets(latency_buckets()),
                &["subgraph", "endpoint"],
            )?,
            pool_connections: IntGaugeVec::new(
                Opts::new(
                    format!("{p}pool_connections"),
                    "Pooled upstream connections",
                ),
                &["subgraph", "endpoint", "state"],
            )?,
            pool_max: IntGaugeVec::new(
                Opts::new(format!("{p}pool_max_connections"), "Pool size limit"),
                &["subgraph", "endpoint"],
            )?,
            pool_wait: Histogram::with_opts(
                HistogramOpts::new(
                    format!("{p}pool_wait_seconds"),
                    "Time to check out a pooled connection",
                )
                .buckets(latency_buckets()),
            )?,
            endpoint_healthy: IntGaugeVec::new(
                Opts::new(
                    format!("{p}endpoint_healthy"),
                    "1 if the endpoint takes traffic",
                ),
                &["subgraph", "endpoint"],
            )?,
            breaker_state: IntGaugeVec::new(
                Opts::new(
                    format!("{p}circuit_breaker_state"),
                    "Circuit breaker state: 0 closed, 1 open, 2 half-open",
                ),
                &["subgraph"],
            )?,
            breaker_transitions: IntCounterVec::new(
                Opts::new(
                    format!("{p}circuit_breaker_transitions_total"),
                    "Circuit breaker state changes",
                ),
                &["subgraph", "from", "to"],
            )?,
            breaker_rejections: IntCounterVec::new(
                Opts::new(
                    format!("{p}circuit_breaker_rejections_total"),
                    "Requests refused by an open circuit breaker",
                ),
                &["subgraph"],
            )?,
            failovers: IntCounterVec::new(
                Opts::new(
                    format!("{p}failovers_total"),
                    "Tries repeated on another endpoint",
                ),
                &["subgraph", "reason"],
            )?,
            retry_budget_exhausted: IntCounterVec::new(
                Opts::new(
                    format!("{p}retry_budget_exhausted_total"),
                    "Failovers skipped because the retry budget was spent",
                ),
                &["subgraph"],
            )?,
            health_transitions: IntCounterVec::new(
                Opts::new(
                    format!("{p}endpoint_health_transitions_total"),
                    "Endpoints ejected or restored",
                ),
                &["subgraph", "endpoint", "to"],
            )?,
            entities: IntCounterVec::new(
                Opts::new(
                    format!("{p}entities_total"),
                    "Federation entity representations resolved or failed by subgraphs",
                ),
                &["subgraph", "typename", "outcome"],
            )?,
            entities_uninspected: IntCounterVec::new(
                Opts::new(
                    format!("{p}entities_uninspected_total"),
                    "Entity fetch responses passed on without counting (too large, or the inspection buffer full)",
                ),
                &["subgraph", "reason"],
            )?,
            panic_requests: IntCounterVec::new(
                Opts::new(
                    format!("{p}panic_mode_requests_total"),
                    "Tries sent to ejected endpoints because every endpoint of the subgraph was ejected",
                ),
                &["subgraph"],
            )?,
            panic_mode: IntGaugeVec::new(
                Opts::new(
                    format!("{p}panic_mode"),
                    "1 while every endpoint of the subgraph is ejected and traffic goes to all of them",
                ),
                &["subgraph"],
            )?,
            body_timeouts: IntCounterVec::new(
                Opts::new(
                    format!("{p}response_body_timeouts_total"),
                    "Upstream response bodies cut off: idle too long, or past the request deadline",
                ),
                &["subgraph", "reason"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    format!("{p}rate_limited_total"),
                    "Requests refused by a rate limit",
                ),
                &["layer"],
            )?,
            escalations: IntCounterVec::new(
                Opts::new(
                    format!("{p}escalations_total"),
                    "Addresses put on the block list for repeated refusals (blocked, or failed)",
                ),
                &["outcome"],
            )?,
            auth_failures: IntCounterVec::new(
                Opts::new(
                    format!("{p}auth_failures_total"),
                    "Requests refused by authentication (401), by reason",
                ),
                &["reason"],
            )?,
            graphql_refusals: IntCounterVec::new(
                Opts::new(
                    format!("{p}graphql_refusals_total"),
                    "Requests refused by GraphQL parsing, limits or validation, by code",
                ),
                &["code"],
            )?,
            document_cache: IntCounterVec::new(
                Opts::new(
                    format!("{p}graphql_document_cache_total"),
                    "Document-cache lookups (parse, limits, validation outcomes), by result (hit, miss)",
                ),
                &["result"],
            )?,
            persisted_queries: IntCounterVec::new(
                Opts::new(
                    format!("{p}persisted_queries_total"),
                    "Operations by how their document was found (apq_hit, apq_registered, safelist_id, safelist_document, not_in_safelist_logged)",
                ),
                &["outcome"],
            )?,
            authz_refusals: IntCounterVec::new(
                Opts::new(
                    format!("{p}authorization_refusals_total"),
                    "Operations refused (entry_point, fields) or filtered (filtered) by authorization",
                ),
                &["reason"],
            )?,
            slow_queries: IntCounterVec::new(
                Opts::new(
                    format!("{p}slow_queries_total"),
                    "Requests slower than slow_queries.threshold_ms (until response headers), by subgraph",
                ),
                &["subgraph"],
            )?,
        };
        registry.register(Box::new(m.slow_queries.clone()))?;
        registry.register(Box::new(m.document_cache.clone()))?;
        registry.register(Box::new(m.authz_refusals.clone()))?;
        registry.register(Box::new(m.persisted_queries.clone()))?;
        registry.register(Box::new(m.graphql_refusals.clone()))?;
        registry.register(Box::new(m.auth_failures.clone()))?;
        registry.register(Box::new(m.rate_limited.clone()))?;
        registry.register(Box::new(m.escalations.clone()))?;
        registry.register(Box::new(m.entities_uninspected.clone()))?;
        registry.register(Box::new(m.panic_requests.clone()))?;
        registry.register(Box::new(m.panic_mode.clone()))?;
        registry.register(Box::new(m.body_timeouts.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.entities.clone()))?;
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.upstream_duration.clone()))?;
        registry.register(Box::new(m.pool_connections.clone()))?;
        registry.register(Box::new(m.pool_max.clone()))?;
        registry.register(Box::new(m.pool_wait.clone()))?;
        registry.register(Box::new(m.endpoint_healthy.clone()))?;
        registry.register(Box::new(m.breaker_state.clone()))?;
        registry.register(Box::new(m.breaker_transitions.clone()))?;
        registry.register(Box::new(m.breaker_rejections.clone()))?;
        registry.register(Box::new(m.failovers.clone()))?;
        registry.register(Box::new(m.retry_budget_exhausted.clone()))?;
        registry.register(Box::new(m.health_transitions.clone()))?;
        Ok(m)
    }
}
