//! Counters that tests and benchmarks read from `GET /stats` on the admin port.
//!
//! Plain atomics: every counter is touched on the request path, and a snapshot
//! needs no lock. Gauges (`connections_open`, `in_flight`) are only moved through
//! RAII guards, so a connection or request that is dropped half-way (a refused
//! listener, a client that hangs up on a hung request) still decrements them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Live counters of one demo-subgraph process.
#[derive(Debug)]
pub struct Stats {
    name: String,
    requests: AtomicU64,
    health_checks: AtomicU64,
    mutations: AtomicU64,
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    max_connections_open: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// The JSON body of `GET /stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// The `--name` of this subgraph.
    pub name: String,
    /// GraphQL HTTP requests received (health checks and injected faults included).
    pub requests: u64,
    /// Requests whose query is `{ __typename }` or `query { __typename }`.
    pub health_checks: u64,
    /// Mutation root fields executed (`createUser`, `incrementCounter`,
    /// `reserve`, `release`), failed ones included.
    pub mutations: u64,
    /// TCP connections accepted on the GraphQL port.
    pub connections_accepted: u64,
    /// TCP connections open on the GraphQL port now.
    pub connections_open: u64,
    /// Highest `connections_open` since start or the last reset.
    pub max_connections_open: u64,
    /// GraphQL requests being processed now.
    pub in_flight: u64,
    /// Highest `in_flight` since start or the last reset.
    pub max_in_flight: u64,
}

impl Stats {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            requests: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            mutations: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            max_connections_open: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        }
    }

    /// Counts a GraphQL request and holds it in `in_flight` until the guard drops.
    pub fn request_started(&self) -> GaugeGuard<'_> {
        self.requests.fetch_add(1, Relaxed);
        GaugeGuard::enter(&self.in_flight, &self.max_in_flight)
    }

    pub fn record_health_check(&self) {
        self.health_checks.fetch_add(1, Relaxed);
    }

    pub fn record_mutation(&self) {
        self.mutations.fetch_add(1, Relaxed);
    }

    /// Counts an accepted connection and holds it open until the guard drops.
    pub fn connection_accepted(&self) -> GaugeGuard<'_> {
        self.connections_accepted.fetch_add(1, Relaxed);
        GaugeGuard::enter(&self.connections_open, &self.max_connections_open)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            name: self.name.clone(),
            requests: self.requests.load(Relaxed),
            health_checks: self.health_checks.load(Relaxed),
            mutations: self.mutations.load(Relaxed),
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            max_connections_open: self.max_connections_open.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            max_in_flight: self.max_in_flight.load(Relaxed),
        }
    }

    /// Zeroes the counters. The gauges stay (they describe the present), and the
    /// high-water marks restart from them rather than from zero, so that
    /// `max_* >= *` holds at all times.
    pub fn reset(&self) {
        self.requests.store(0, Relaxed);
        self.health_checks.store(0, Relaxed);
        self.mutations.store(0, Relaxed);
        self.connections_accepted.store(0, Relaxed);
        self.max_connections_open
            .store(self.connections_open.load(Relaxed), Relaxed);
        self.max_in_flight
            .store(self.in_flight.load(Relaxed), Relaxed);
    }
}

/// Increments a gauge (and its high-water mark) on creation, decrements on drop.
#[derive(Debug)]
pub struct GaugeGuard<'a> {
    gauge: &'a AtomicU64,
}

impl<'a> GaugeGuard<'a> {
    fn enter(gauge: &'a AtomicU64, high_water: &AtomicU64) -> Self {
        let now = gauge.fetch_add(1, Relaxed) + 1;
        high_water.fetch_max(now, Relaxed);
        Self { gauge }
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_move_gauges_and_high_water_marks() {
        let stats = Stats::new("t");
        let a = stats.connection_accepted();
        let b = stats.connection_accepted();
        drop(a);
        let snap = stats.snapshot();
        assert_eq!(snap.connections_accepted, 2);
        assert_eq!(snap.connections_open, 1);
        assert_eq!(snap.max_connections_open, 2);

        stats.reset();
        let snap = stats.snapshot();
        assert_eq!(snap.connections_accepted, 0);
        assert_eq!(snap.connections_open, 1, "gauges survive a reset");
        assert_eq!(
            snap.max_connections_open, 1,
            "high water restarts at the gauge"
        );
        drop(b);
        assert_eq!(stats.snapshot().connections_open, 0);
    }

    #[test]
    fn requests_count_and_release_in_flight() {
        let stats = Stats::new("t");
        {
            let _r = stats.request_started();
            stats.record_health_check();
            assert_eq!(stats.snapshot().in_flight, 1);
        }
        let snap = stats.snapshot();
        assert_eq!((snap.requests, snap.health_checks), (1, 1));
        assert_eq!((snap.in_flight, snap.max_in_flight), (0, 1));
    }
}
