//! One replica of a subgraph: its URL, its pool and its health.
//!
//! Health is a small state machine fed by active checks
//! ([`Endpoint::report_check`]) and by live traffic
//! ([`Endpoint::report_passive`]). While the endpoint is healthy both count
//! alike: `unhealthy_after` consecutive failures eject it (its pool drops
//! every connection and it gets no traffic), and a success breaks a failure
//! streak. Once it is ejected only active checks count: `healthy_after`
//! consecutive successful checks bring it back. Live traffic of an ejected
//! endpoint is what was in flight when it was ejected, so its outcomes say
//! nothing about recovery.

use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, Ordering},
};

use http::Uri;

use super::pool::Pool;
use crate::config::{HealthConfig, PoolConfig};

/// What a health report changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthChange {
    /// Nothing.
    None,
    /// The endpoint was ejected.
    Ejected,
    /// The endpoint is back in rotation.
    Restored,
}

#[derive(Default)]
struct Streaks {
    successes: u32,
    failures: u32,
}

/// A subgraph replica.
pub struct Endpoint {
    /// The configured URL.
    pub uri: Uri,
    /// `host:port`, the label in metrics and logs.
    pub addr: String,
    /// Path and query sent upstream (`/graphql`).
    pub path: String,
    /// `path` as a request target, built once.
    pub target: Uri,
    /// The `Host` header sent upstream, built once.
    pub host: http::HeaderValue,
    /// Its connection pool.
    pub pool: Pool,
    healthy: AtomicBool,
    streaks: Mutex<Streaks>,
    health: HealthConfig,
}

impl Endpoint {
    /// An endpoint that starts healthy (traffic flows before the first check).
    pub fn new(uri: Uri, pool_cfg: PoolConfig, health: HealthConfig) -> Self {
        let host = uri.host().unwrap_or("localhost");
        let port = uri.port_u16().unwrap_or(80);
        // IPv6 literals keep their brackets in `host:port`.
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        let target = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
        let host = http::HeaderValue::from_str(&addr)
            .unwrap_or_else(|_| http::HeaderValue::from_static("localhost"));
        Self {
            pool: Pool::new(addr.clone(), pool_cfg),
            uri,
            addr,
            path,
            target,
            host,
            healthy: AtomicBool::new(true),
            streaks: Mutex::new(Streaks::default()),
            health,
        }
    }

    /// Whether the endpoint takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records the outcome of an active health check: it can eject the
    /// endpoint and bring it back.
    pub fn report_check(&self, success: bool) -> HealthChange {
        let mut s = self.lock_streaks();
        self.apply(&mut s, success)
    }

    /// Records the outcome of live traffic: while healthy it counts like a
    /// check (it can eject the endpoint); while ejected it changes nothing —
    /// only checks bring an endpoint back.
    pub fn report_passive(&self, success: bool) -> HealthChange {
        let mut s = self.lock_streaks();
        // `healthy` only changes under the lock, so this holds for `apply`.
        if !self.is_healthy() {
            return HealthChange::None;
        }
        self.apply(&mut s, success)
    }

    fn lock_streaks(&self) -> MutexGuard<'_, Streaks> {
        self.streaks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one outcome; the caller holds the streaks' lock.
    fn apply(&self, s: &mut Streaks, success: bool) -> HealthChange {
        if success {
            s.failures = 0;
            s.successes = s.successes.saturating_add(1);
            if !self.is_healthy() && s.successes >= self.health.healthy_after {
                self.healthy.store(true, Ordering::Release);
                self.pool.restore();
                return HealthChange::Restored;
            }
        } else {
            s.successes = 0;
            s.failures = s.failures.saturating_add(1);
            if self.is_healthy() && s.failures >= self.health.unhealthy_after {
                self.healthy.store(false, Ordering::Release);
                self.pool.eject();
                return HealthChange::Ejected;
            }
        }
        HealthChange::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::new(
            "http://127.0.0.1:1/graphql".parse().unwrap(),
            PoolConfig::default(),
            HealthConfig::default(),
        )
    }

    #[test]
    fn fall_after_three_rise_after_two() {
        let e = endpoint();
        assert_eq!(e.addr, "127.0.0.1:1");
        assert_eq!(e.path, "/graphql");
        assert_eq!(e.report_check(false), HealthChange::None);
        assert_eq!(e.report_check(false), HealthChange::None);
        assert!(e.is_healthy());
        assert_eq!(e.report_check(false), HealthChange::Ejected);
        assert!(!e.is_healthy() && e.pool.is_ejected());
        assert_eq!(e.report_check(true), HealthChange::None);
        assert_eq!(e.report_check(false), HealthChange::None);
        assert_eq!(e.report_check(true), HealthChange::None);
        assert_eq!(e.report_check(true), HealthChange::Restored);
        assert!(e.is_healthy() && !e.pool.is_ejected());
    }

    #[test]
    fn a_success_breaks_a_failure_streak() {
        let e = endpoint();
        for _ in 0..10 {
            e.report_check(false);
            e.report_passive(false);
            e.report_passive(true);
            e.report_passive(false);
            e.report_check(false);
            e.report_check(true);
        }
        assert!(e.is_healthy());
    }

    #[test]
    fn passive_failures_eject_with_checks_failing_or_not() {
        let e = endpoint();
        assert_eq!(e.report_passive(false), HealthChange::None);
        assert_eq!(e.report_check(false), HealthChange::None);
        assert_eq!(e.report_passive(false), HealthChange::Ejected);
        assert!(!e.is_healthy() && e.pool.is_ejected());
        let e = endpoint();
        for _ in 0..2 {
            assert_eq!(e.report_passive(false), HealthChange::None);
        }
        assert_eq!(e.report_passive(false), HealthChange::Ejected);
    }

    #[test]
    fn passive_successes_do_not_restore_an_ejected_endpoint() {
        let e = endpoint();
        for _ in 0..3 {
            e.report_passive(false);
        }
        assert!(!e.is_healthy());
        // Late answers of requests sent before the ejection.
        for _ in 0..10 {
            assert_eq!(e.report_passive(true), HealthChange::None);
        }
        assert!(!e.is_healthy() && e.pool.is_ejected());
        assert_eq!(e.report_check(true), HealthChange::None);
        assert_eq!(e.report_check(true), HealthChange::Restored);
    }

    #[test]
    fn passive_failures_do_not_delay_the_checks_of_an_ejected_endpoint() {
        let e = endpoint();
        for _ in 0..3 {
            e.report_check(false);
        }
        assert_eq!(e.report_check(true), HealthChange::None);
        assert_eq!(e.report_passive(false), HealthChange::None);
        assert_eq!(e.report_check(true), HealthChange::Restored);
    }
}
