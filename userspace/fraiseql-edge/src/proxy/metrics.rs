//! Data-path metrics, registered into a registry that is passed in.
//! Names: prefix `fraiseql_edge_`, base units, `_total` counters; every
//! label has a bounded set of values (configured names, stable codes, fixed
//! reasons). docs/metrics.md is the catalogue, checked against this file by
//! `crate::metrics`'s tests.
//!
//! Label values known in advance are initialised at start, at 0 (`known`),
//! so that a family is in the scrape, and `rate()` sees its first
//! increment, before anything happened. Buckets are in `buckets`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use super::operation::OperationKind;

mod buckets;
mod known;

pub use buckets::latency_buckets;
use buckets::{cost_buckets, depth_buckets};

/// The `code` label of a request the edge did not refuse.
pub const NO_CODE: &str = "none";

/// One subgraph's hot-path metric handles, resolved once: a label lookup
/// hashes every label value and takes a lock, on every request otherwise.
pub struct SubgraphMetrics {
    /// `requests_total{status="200",code="none"}` by operation (query,
    /// mutation, subscription).
    ok: [IntCounter; 3],
    /// `request_duration_seconds` of the subgraph.
    pub request_duration: Histogram,
    /// `upstream_duration_seconds` by endpoint index.
    pub upstream_duration: Vec<Histogram>,
    /// `graphql_query_depth` of the subgraph.
    pub depth: Histogram,
    /// `graphql_query_cost` of the subgraph.
    pub cost: Histogram,
}

impl SubgraphMetrics {
    /// Resolves the handles of subgraph `name` with endpoints `endpoints`,
    /// and initialises its counters with every label value known in advance.
    pub fn new(m: &ProxyMetrics, name: &str, endpoints: &[&str]) -> Self {
        m.init_subgraph(name, endpoints);
        let ok = |op: OperationKind| {
            m.requests
                .with_label_values(&[name, "200", op.as_str(), NO_CODE])
        };
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
            depth: m.graphql_depth.with_label_values(&[name]),
            cost: m.graphql_cost.with_label_values(&[name]),
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
    /// Where breaker and health transitions and escalations are also
    /// published (a bus nobody watches until [`ProxyMetrics::with_events`]).
    pub events: crate::events::EventBus,
    /// Requests by subgraph, HTTP status, operation type and refusal code.
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
    /// Depth of the operations that passed the limits, by subgraph.
    pub graphql_depth: HistogramVec,
    /// Static cost of the operations that passed the limits, by subgraph.
    pub graphql_cost: HistogramVec,
    /// Requests slower than `slow_queries.threshold_ms`, by subgraph.
    pub slow_queries: IntCounterVec,
}

impl ProxyMetrics {
    /// These metrics, publishing transitions on `events`.
    #[must_use]
    pub fn with_events(self, events: crate::events::EventBus) -> Self {
        Self { events, ..self }
    }

    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let p = "fraiseql_edge_";
        let m = Self {
            events: crate::events::EventBus::new(),
            requests: IntCounterVec::new(
                Opts::new(
                    format!("{p}requests_total"),
                    "GraphQL requests handled, by subgraph, HTTP status, operation type and the edge's refusal code (none: not refused)",
                ),
                &["subgraph", "status", "operation", "code"],
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
            graphql_depth: HistogramVec::new(
                HistogramOpts::new(
                    format!("{p}graphql_query_depth"),
                    "Deepest field nesting of the operations that passed the limits",
                )
                .buckets(depth_buckets()),
                &["subgraph"],
            )?,
            graphql_cost: HistogramVec::new(
                HistogramOpts::new(
                    format!("{p}graphql_query_cost"),
                    "Static cost (with the variables sent) of the operations that passed the limits",
                )
                .buckets(cost_buckets()),
                &["subgraph"],
            )?,
            slow_queries: IntCounterVec::new(
                Opts::new(
                    format!("{p}slow_queries_total"),
                    "Requests slower than slow_queries.threshold_ms (until response headers), by subgraph",
                ),
                &["subgraph"],
            )?,
        };
        for c in m.collectors() {
            registry.register(c)?;
        }
        m.init_global();
        Ok(m)
    }

    /// Every family, as a collector to register (and for the catalogue
    /// test, which needs the families that have no sample yet too).
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.slow_queries.clone()),
            Box::new(self.graphql_depth.clone()),
            Box::new(self.graphql_cost.clone()),
            Box::new(self.document_cache.clone()),
            Box::new(self.authz_refusals.clone()),
            Box::new(self.persisted_queries.clone()),
            Box::new(self.graphql_refusals.clone()),
            Box::new(self.auth_failures.clone()),
            Box::new(self.rate_limited.clone()),
            Box::new(self.escalations.clone()),
            Box::new(self.entities_uninspected.clone()),
            Box::new(self.panic_requests.clone()),
            Box::new(self.panic_mode.clone()),
            Box::new(self.body_timeouts.clone()),
            Box::new(self.requests.clone()),
            Box::new(self.entities.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.upstream_duration.clone()),
            Box::new(self.pool_connections.clone()),
            Box::new(self.pool_max.clone()),
            Box::new(self.pool_wait.clone()),
            Box::new(self.endpoint_healthy.clone()),
            Box::new(self.breaker_state.clone()),
            Box::new(self.breaker_transitions.clone()),
            Box::new(self.breaker_rejections.clone()),
            Box::new(self.failovers.clone()),
            Box::new(self.retry_budget_exhausted.clone()),
            Box::new(self.health_transitions.clone()),
        ]
    }
}
