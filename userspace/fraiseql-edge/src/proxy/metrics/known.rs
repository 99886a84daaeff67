//! The label values known in advance, and the initialisation of every
//! counter with them (at 0), so that a family is in the scrape, and `rate()`
//! sees its first increment, before anything happened.

use super::ProxyMetrics;

/// `rate_limited_total{layer}`.
const LAYERS: [&str; 3] = ["identity", "global", "degraded"];
/// `escalations_total{outcome}`.
const ESCALATIONS: [&str; 3] = ["blocked", "failed", "no_block_list"];
/// `authorization_refusals_total{reason}`.
const AUTHZ: [&str; 3] = ["entry_point", "fields", "filtered"];
/// `failovers_total{reason}`.
const FAILOVERS: [&str; 3] = ["saturated", "timeout", "unavailable"];
/// `endpoint_health_transitions_total{to}`.
const HEALTH: [&str; 2] = ["healthy", "unhealthy"];
/// `circuit_breaker_transitions_total{from,to}`: every change of state
/// (an operator's override can make any of them).
const BREAKER: [(&str, &str); 6] = [
    ("closed", "open"),
    ("closed", "half_open"),
    ("open", "closed"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("half_open", "open"),
];
/// `entities_uninspected_total{reason}`.
const UNINSPECTED: [&str; 2] = ["too_large", "buffer_full"];
/// `response_body_timeouts_total{reason}`.
const BODY_TIMEOUTS: [&str; 2] = ["idle", "deadline"];

impl ProxyMetrics {
    /// Initialises the label values that do not depend on a subgraph.
    pub(super) fn init_global(&self) {
        for layer in LAYERS {
            self.rate_limited.with_label_values(&[layer]);
        }
        for outcome in ESCALATIONS {
            self.escalations.with_label_values(&[outcome]);
        }
        for e in &crate::auth::AuthError::ALL {
            self.auth_failures.with_label_values(&[e.reason()]);
        }
        let codes = crate::graphql::GraphqlError::examples()
            .iter()
            .map(crate::graphql::GraphqlError::code)
            .chain(
                crate::graphql::persisted::PersistedError::ALL
                    .iter()
                    .map(crate::graphql::persisted::PersistedError::code),
            )
            .collect::<Vec<_>>();
        for code in codes {
            self.graphql_refusals.with_label_values(&[code]);
        }
        for result in ["hit", "miss"] {
            self.document_cache.with_label_values(&[result]);
        }
        for outcome in crate::graphql::persisted::Outcome::COUNTED {
            self.persisted_queries
                .with_label_values(&[outcome.as_str()]);
        }
        for reason in AUTHZ {
            self.authz_refusals.with_label_values(&[reason]);
        }
    }

    /// Initialises the counters of subgraph `name` (endpoints `endpoints`).
    /// `entities_total` is not: its typenames are learnt from the traffic
    /// or the SDL.
    pub(super) fn init_subgraph(&self, name: &str, endpoints: &[&str]) {
        self.breaker_state.with_label_values(&[name]);
        self.breaker_rejections.with_label_values(&[name]);
        for (from, to) in BREAKER {
            self.breaker_transitions
                .with_label_values(&[name, from, to]);
        }
        for reason in FAILOVERS {
            self.failovers.with_label_values(&[name, reason]);
        }
        self.retry_budget_exhausted.with_label_values(&[name]);
        self.panic_requests.with_label_values(&[name]);
        self.panic_mode.with_label_values(&[name]);
        for reason in UNINSPECTED {
            self.entities_uninspected.with_label_values(&[name, reason]);
        }
        for reason in BODY_TIMEOUTS {
            self.body_timeouts.with_label_values(&[name, reason]);
        }
        for ep in endpoints {
            for to in HEALTH {
                self.health_transitions.with_label_values(&[name, ep, to]);
            }
        }
    }
}
