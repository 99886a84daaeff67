//! A subgraph: its endpoints, breaker, retry budget, and the background work
//! that keeps them current (pool maintenance every second, health checks
//! every `health.interval_ms`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use tower::retry::budget::{Budget as _, TpsBudget};

use super::{
    endpoint::{Endpoint, HealthChange},
    metrics::ProxyMetrics,
    pool::Pool,
};
use crate::{
    breaker::{Breaker, State},
    config::{PoolConfig, SubgraphConfig},
};

/// A subgraph at run time.
pub struct Subgraph {
    /// Configuration it was built from.
    pub cfg: SubgraphConfig,
    /// Replicas.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Its circuit breaker.
    pub breaker: Arc<Breaker>,
    budget: TpsBudget,
    next: AtomicUsize,
}

impl Subgraph {
    /// Builds the subgraph; nothing connects until [`Subgraph::spawn_background`].
    pub fn new(cfg: SubgraphConfig) -> Arc<Self> {
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|uri| {
                Arc::new(Endpoint::new(
                    uri.clone(),
                    cfg.pool.clone(),
                    cfg.health.clone(),
                ))
            })
            .collect();
        let budget = TpsBudget::new(
            Duration::from_secs(10),
            cfg.retry.budget_min_per_sec,
            cfg.retry.budget_percent as f32 / 100.0,
        );
        Arc::new(Self {
            breaker: Breaker::new(cfg.breaker.clone(), Instant::now()),
            endpoints,
            budget,
            next: AtomicUsize::new(0),
            cfg,
        })
    }

    /// The subgraph's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Round-robin over healthy endpoints not in `tried`.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|i| !tried.contains(i) && self.endpoints[*i].is_healthy())
    }

    /// Counts a request toward the retry budget.
    pub fn deposit(&self) {
        self.budget.deposit();
    }

    /// Takes one retry from the budget.
    pub fn withdraw(&self) -> bool {
        self.budget.withdraw()
    }

    /// Starts pool maintenance and health checks; they stop when the
    /// subgraph is dropped.
    pub fn spawn_background(self: &Arc<Self>, metrics: ProxyMetrics) {
        let weak = Arc::downgrade(self);
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(sg) = weak.upgrade() else { return };
                for ep in &sg.endpoints {
                    ep.pool.maintain().await;
                    let s = ep.pool.stats();
                    let labels = |state| [sg.name(), ep.addr.as_str(), state];
                    m.pool_connections
                        .with_label_values(&labels("idle"))
                        .set(i64::from(s.idle));
                    m.pool_connections
                        .with_label_values(&labels("busy"))
                        .set(i64::from(s.busy));
                    m.pool_max
                        .with_label_values(&[sg.name(), ep.addr.as_str()])
                        .set(i64::from(s.max));
                }
                let state = sg.breaker.state() as i64;
                m.breaker_state.with_label_values(&[sg.name()]).set(state);
            }
        });
        for (i, _) in self.endpoints.iter().enumerate() {
            let weak = Arc::downgrade(self);
            let m = metrics.clone();
            tokio::spawn(async move {
                let interval = match weak.upgrade() {
                    Some(sg) => Duration::from_millis(sg.cfg.health.interval_ms),
                    None => return,
                };
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // The first check comes one interval after start, once the
                // pool holds its warm connections (it then reuses one of
                // them instead of racing the fill with a connection of its own).
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(sg) = weak.upgrade() else { return };
                    let ok = sg.check(i).await;
                    sg.record_health(i, ok, &m);
                }
            });
        }
    }

    /// Feeds an outcome (active or passive) into an endpoint's health.
    pub fn record_health(&self, i: usize, ok: bool, m: &ProxyMetrics) {
        let ep = &self.endpoints[i];
        let change = ep.report(ok);
        let labels = [self.name(), ep.addr.as_str()];
        m.endpoint_healthy
            .with_label_values(&labels)
            .set(i64::from(ep.is_healthy()));
        let to = match change {
            HealthChange::None => return,
            HealthChange::Ejected => "unhealthy",
            HealthChange::Restored => "healthy",
        };
        tracing::warn!(subgraph = self.name(), endpoint = %ep.addr, to, "endpoint health changed");
        m.health_transitions
            .with_label_values(&[self.name(), ep.addr.as_str(), to])
            .inc();
    }

    /// One active check: `{ __typename }` (or GET `http_path`) within the timeout.
    async fn check(&self, i: usize) -> bool {
        let ep = &self.endpoints[i];
        let h = &self.cfg.health;
        let (method, path, body) = match &h.http_path {
            Some(p) => (Method::GET, p.clone(), Bytes::new()),
            None => (
                Method::POST,
                ep.path.clone(),
                Bytes::from_static(br#"{"query":"{ __typename }"}"#),
            ),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, ep.addr.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body));
        let Ok(req) = req else { return false };
        // An ejected endpoint has no pool: probe it over a one-off connection.
        let one_off;
        let pool = if ep.pool.is_ejected() {
            one_off = Pool::new(
                ep.addr.clone(),
                PoolConfig {
                    min_idle: 0,
                    max: 1,
                    ..self.cfg.pool.clone()
                },
            );
            &one_off
        } else {
            &ep.pool
        };
        let attempt = async {
            let mut conn = pool.get().await.ok()?;
            let resp = conn.send(req).await.ok()?;
            let ok = resp.status().is_success();
            // Read the body so the connection can be reused.
            resp.into_body().collect().await.ok()?;
            Some(ok)
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(h.timeout_ms), attempt).await,
            Ok(Some(true))
        )
    }

    /// Notes a breaker transition in logs and metrics.
    pub fn note_transition(&self, from: State, to: State, m: &ProxyMetrics) {
        let name = |s: State| match s {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        };
        tracing::warn!(
            subgraph = self.name(),
            from = name(from),
            to = name(to),
            "circuit breaker"
        );
        m.breaker_transitions
            .with_label_values(&[self.name(), name(from), name(to)])
            .inc();
        m.breaker_state
            .with_label_values(&[self.name()])
            .set(to as i64);
    }
}
