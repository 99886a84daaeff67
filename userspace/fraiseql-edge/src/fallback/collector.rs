//! The user-space limiter's counters as Prometheus metrics, read at scrape
//! time like the kernel's (`fraiseql_edge_degraded_*`; registered only in
//! degraded mode).

use std::sync::Arc;

use prometheus::{
    IntCounter, IntCounterVec, IntGauge, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::UserLimiter;

/// The collector; register it into the daemon's registry.
pub struct LimiterCollector {
    limiter: Arc<UserLimiter>,
    checks: IntCounterVec,
    evictions: IntCounter,
    clients: IntGauge,
    conn_clients: IntGauge,
    blocked: IntGauge,
}

impl LimiterCollector {
    /// A collector over `limiter`.
    pub fn new(limiter: Arc<UserLimiter>) -> prometheus::Result<Self> {
        let p = "fraiseql_edge_degraded_";
        Ok(Self {
            limiter,
            checks: IntCounterVec::new(
                Opts::new(
                    format!("{p}checks_total"),
                    "Connections and requests checked by the user-space limiter, by verdict",
                ),
                &["verdict"],
            )?,
            evictions: IntCounter::new(
                format!("{p}client_evictions_total"),
                "Least recently seen clients evicted from the full client table",
            )?,
            clients: IntGauge::new(
                format!("{p}clients"),
                "Clients with a token bucket in the user-space limiter",
            )?,
            conn_clients: IntGauge::new(
                format!("{p}connection_clients"),
                "Clients holding live connections (the connection-count table)",
            )?,
            blocked: IntGauge::new(
                format!("{p}blocked_clients"),
                "Entries in the user-space block list",
            )?,
        })
    }
}

impl Collector for LimiterCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.checks.desc(),
            self.evictions.desc(),
            self.clients.desc(),
            self.conn_clients.desc(),
            self.blocked.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.limiter.stats();
        let set = |c: &IntCounter, value: u64| c.inc_by(value.saturating_sub(c.get()));
        for (verdict, value) in [
            ("passed", s.passed),
            ("bypassed", s.bypassed),
            ("dropped_rate", s.dropped_rate),
            ("dropped_conn", s.dropped_conn),
            ("dropped_conn_table_full", s.dropped_conn_table_full),
            ("dropped_block", s.dropped_block),
            ("dropped_deny", s.dropped_deny),
        ] {
            set(&self.checks.with_label_values(&[verdict]), value);
        }
        set(&self.evictions, s.evicted);
        let gauge = |g: &IntGauge, value: u64| g.set(i64::try_from(value).unwrap_or(i64::MAX));
        gauge(&self.clients, s.clients);
        gauge(&self.conn_clients, s.conn_clients);
        gauge(&self.blocked, s.blocks);
        [
            self.checks.collect(),
            self.evictions.collect(),
            self.clients.collect(),
            self.conn_clients.collect(),
            self.blocked.collect(),
        ]
        .concat()
    }
}
