//! The slow-query log (`[slow_queries]`): a request answered more slowly
//! than `threshold_ms` (until its response headers, like
//! `fraiseql_edge_request_duration_seconds`) is logged at `warn` with its
//! operation, document hash, subgraph, client, duration, status and trace
//! id, counted in `fraiseql_edge_slow_queries_total{subgraph}`, and kept in
//! a ring of the last `keep` for the control API (`ListSlowQueries`).

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use serde::Deserialize;

/// `[slow_queries]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SlowQueriesConfig {
    /// A request slower than this is a slow query (0: the log is off).
    pub threshold_ms: u64,
    /// Slow queries kept for the control API (the most recent).
    pub keep: usize,
}

impl Default for SlowQueriesConfig {
    fn default() -> Self {
        Self {
            // Half a second is slow for an API call an edge fronts, and
            // rare enough on a healthy subgraph for the log to stay quiet.
            threshold_ms: 500,
            // Enough to see a pattern; each entry is a few hundred bytes.
            keep: 100,
        }
    }
}

/// Most slow queries kept.
const MAX_KEEP: usize = 100_000;

impl SlowQueriesConfig {
    /// Checks what serde cannot; `Err((key, reason))`.
    pub fn validate(&self, at: &str) -> Result<(), (String, String)> {
        if self.keep > MAX_KEEP {
            return Err((format!("{at}.keep"), format!("must be at most {MAX_KEEP}")));
        }
        if self.threshold_ms > 3_600_000 {
            return Err((
                format!("{at}.threshold_ms"),
                "must be at most 3600000 (an hour)".into(),
            ));
        }
        Ok(())
    }
}

/// One slow request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlowQuery {
    /// When it finished (Unix time, milliseconds).
    pub unix_ms: u64,
    /// How long it took (until the response headers).
    pub duration: Duration,
    /// The operation's name (`""`: anonymous or unknown).
    pub operation_name: String,
    /// `query`, `mutation`, `subscription`, or `unknown` (refused before the
    /// document was read).
    pub operation_type: String,
    /// SHA-256 (hex) of the document, or the persisted-query hash it was
    /// sent as (`""`: no document).
    pub document_hash: String,
    /// The subgraph (`none`: no route).
    pub subgraph: String,
    /// The token's subject, or the client address.
    pub client: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The request's trace id (32 hex digits).
    pub trace_id: String,
}

/// The log: its threshold and the most recent slow queries.
#[derive(Debug)]
pub struct SlowLog {
    threshold: Duration,
    keep: usize,
    ring: Mutex<VecDeque<SlowQuery>>,
}

impl SlowLog {
    /// An empty log for `cfg`.
    pub fn new(cfg: &SlowQueriesConfig) -> Self {
        Self {
            threshold: Duration::from_millis(cfg.threshold_ms),
            keep: cfg.keep,
            ring: Mutex::new(VecDeque::with_capacity(cfg.keep.min(1024))),
        }
    }

    /// The threshold (zero: the log is off).
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Whether the log is on.
    pub fn enabled(&self) -> bool {
        !self.threshold.is_zero()
    }

    /// Whether a request that took `elapsed` is a slow query.
    pub fn is_slow(&self, elapsed: Duration) -> bool {
        self.enabled() && elapsed > self.threshold
    }

    /// Keeps `q`, dropping the oldest beyond `keep`.
    pub fn record(&self, q: SlowQuery) {
        if self.keep == 0 {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == self.keep {
            ring.pop_front();
        }
        ring.push_back(q);
    }

    /// At most `limit` of the kept slow queries, newest first.
    pub fn recent(&self, limit: usize) -> Vec<SlowQuery> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().take(limit).cloned().collect()
    }
}

/// SHA-256 of a document's text, lowercase hex (the APQ form).
pub fn document_hash(text: &str) -> String {
    use crate::graphql::persisted::{hex, sha256};
    hex(&sha256(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: u64) -> SlowQuery {
        SlowQuery {
            unix_ms: n,
            duration: Duration::from_millis(n),
            operation_name: format!("Op{n}"),
            operation_type: "query".into(),
            document_hash: String::new(),
            subgraph: "users".into(),
            client: "192.0.2.1".into(),
            status: 200,
            trace_id: format!("{n:032x}"),
        }
    }

    fn log(threshold_ms: u64, keep: usize) -> SlowLog {
        SlowLog::new(&SlowQueriesConfig { threshold_ms, keep })
    }

    #[test]
    fn the_ring_keeps_the_last_n_newest_first() {
        let l = log(1, 3);
        assert!(l.recent(10).is_empty());
        for n in 1..=5 {
            l.record(q(n));
        }
        let names: Vec<u64> = l.recent(10).iter().map(|q| q.unix_ms).collect();
        assert_eq!(names, [5, 4, 3]);
        let names: Vec<u64> = l.recent(2).iter().map(|q| q.unix_ms).collect();
        assert_eq!(names, [5, 4]);
        assert!(l.recent(0).is_empty());
    }

    #[test]
    fn keep_zero_keeps_nothing() {
        let l = log(1, 0);
        l.record(q(1));
        assert!(l.recent(10).is_empty());
    }

    #[test]
    fn the_threshold_decides_and_zero_is_off() {
        let l = log(500, 10);
        assert_eq!(l.threshold(), Duration::from_millis(500));
        assert!(!l.is_slow(Duration::from_millis(500)));
        assert!(l.is_slow(Duration::from_millis(501)));
        let off = log(0, 10);
        assert!(!off.enabled());
        assert!(!off.is_slow(Duration::from_secs(3600)));
    }

    #[test]
    fn config_defaults_and_limits() {
        let d = SlowQueriesConfig::default();
        assert_eq!((d.threshold_ms, d.keep), (500, 100));
        assert!(d.validate("slow_queries").is_ok());
        let big = SlowQueriesConfig {
            keep: MAX_KEEP + 1,
            ..d
        };
        assert_eq!(
            big.validate("slow_queries").unwrap_err().0,
            "slow_queries.keep"
        );
    }

    #[test]
    fn document_hash_is_sha256_hex() {
        assert_eq!(
            document_hash("{ __typename }"),
            "7f56e67dd21ab3f30d1ff8b7bed08893f0a0db86449836189b361dd1e56ddb4b"
        );
    }
}
