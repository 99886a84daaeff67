//! A subgraph: its endpoints, breaker, retry budget, and the background work
//! that keeps them current (pool maintenance every second, health checks
//! every `health.interval_ms`).
//!
//! Health checks never queue behind traffic: each endpoint has a probe
//! connection of its own, outside the traffic pool, so a saturated pool
//! cannot fail its endpoint's checks. A check that times out discards its
//! connection (it may be mid-response).
//!
//! When every endpoint is ejected and `health.panic_mode` is on, endpoint
//! selection ignores health (Envoy's panic threshold): checks may be wrong,
//! and trying beats refusing every request.

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

use super::{
    budget::{self, RetryBudget},
    endpoint::{Endpoint, HealthChange},
    entities::EntityLabels,
    metrics::{ProxyMetrics, SubgraphMetrics},
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
    /// The `typename` labels of its entity metrics.
    pub entity_labels: EntityLabels,
    /// Its SDL, parsed and validated, for the graphql phase.
    pub schema: Option<crate::graphql::SubgraphSchema>,
    /// Its own limits, where its configuration overrides the global ones.
    pub limits: SubgraphLimits,
    /// One health-check connection per endpoint, outside the traffic pools.
    probes: Vec<Pool>,
    /// A digest of the SDL text it was built with (a reload rebuilds the
    /// subgraph when the file changed).
    sdl_digest: Option<u64>,
    /// Hot-path metric handles, resolved by [`Subgraph::spawn_background`].
    metrics: std::sync::OnceLock<SubgraphMetrics>,
    budget: RetryBudget,
    next: AtomicUsize,
}

/// A subgraph's overrides of the global document limits (`None`: the
/// global ones). Its per-identity limit lives with the others in
/// [`crate::ratelimit::RateLimits`], which a reload swaps.
#[derive(Default)]
pub struct SubgraphLimits {
    /// `[graphql]` with the subgraph's `graphql` keys in place.
    pub graphql: Option<crate::graphql::GraphqlLimits>,
}

impl SubgraphLimits {
    /// The overrides of `cfg` over the global `graphql` (validated with the
    /// configuration).
    pub fn of(cfg: &SubgraphConfig, graphql: &crate::graphql::GraphqlLimits) -> Self {
        Self {
            graphql: cfg.graphql.as_ref().map(|t| {
                graphql.overridden(t).unwrap_or_else(|e| {
                    tracing::warn!(subgraph = %cfg.name, error = %e, "graphql overrides ignored");
                    graphql.clone()
                })
            }),
        }
    }
}

/// An endpoint chosen for a try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// Index into [`Subgraph::endpoints`].
    pub index: usize,
    /// Chosen in panic mode (every endpoint ejected).
    pub panic: bool,
}

impl Subgraph {
    /// Builds the subgraph; nothing connects until [`Subgraph::spawn_background`].
    /// Without an SDL, at most `max_typenames` typenames label its entity
    /// metrics.
    pub fn new(cfg: SubgraphConfig, max_typenames: usize) -> Arc<Self> {
        Self::with_limits(cfg, max_typenames, SubgraphLimits::default())
    }

    /// [`Subgraph::new`] with limits of its own.
    pub fn with_limits(
        cfg: SubgraphConfig,
        max_typenames: usize,
        limits: SubgraphLimits,
    ) -> Arc<Self> {
        Self::rebuilt(cfg, max_typenames, limits, None)
    }

    /// [`Subgraph::with_limits`], taking over from `old` (a reload) the
    /// endpoints whose URL, pool and health settings did not change — with
    /// their pools and health — and the breaker, if its settings did not
    /// change.
    pub fn rebuilt(
        cfg: SubgraphConfig,
        max_typenames: usize,
        limits: SubgraphLimits,
        old: Option<&Subgraph>,
    ) -> Arc<Self> {
        let keeps_endpoints =
            old.is_some_and(|o| o.cfg.pool == cfg.pool && o.cfg.health == cfg.health);
        let endpoints: Vec<Arc<Endpoint>> = cfg
            .endpoints
            .iter()
            .map(|uri| {
                old.filter(|_| keeps_endpoints)
                    .and_then(|o| o.endpoints.iter().find(|e| e.uri == *uri))
                    .map_or_else(
                        || {
                            Arc::new(Endpoint::new(
                                uri.clone(),
                                cfg.pool.clone(),
                                cfg.health.clone(),
                            ))
                        },
                        Arc::clone,
                    )
            })
            .collect();
        let probe_cfg = PoolConfig {
            min_idle: 0,
            max: 1,
            acquire_timeout_ms: cfg.health.timeout_ms,
            ..cfg.pool.clone()
        };
        let probes = endpoints
            .iter()
            .map(|e| Pool::new(e.addr.clone(), probe_cfg.clone()))
            .collect();
        let sdl = cfg.sdl.as_ref().and_then(|path| {
            std::fs::read_to_string(path)
                .inspect_err(|e| {
                    tracing::warn!(subgraph = %cfg.name, sdl = %path.display(), error = %e,
                        "cannot read the SDL; entity metrics fall back to a capped label set");
                })
                .ok()
        });
        let now = Instant::now();
        let r = &cfg.retry;
        // Validated with the configuration; the fallback is never used.
        let budget = RetryBudget::new(r.budget_percent, r.budget_min_per_sec, budget::WINDOW, now)
            .unwrap_or_else(|_| RetryBudget::new(20, 10, budget::WINDOW, now).expect("defaults"));
        let schema = sdl.as_deref().and_then(|text| {
            crate::graphql::SubgraphSchema::parse(text)
                .inspect_err(|e| {
                    tracing::warn!(subgraph = %cfg.name, error = %e,
                        "the SDL does not validate; documents are held to the limits but not validated against it");
                })
                .ok()
        });
        let breaker = match old {
            Some(o) if o.cfg.breaker == cfg.breaker => Arc::clone(&o.breaker),
            _ => Breaker::new(cfg.breaker.clone(), now),
        };
        Arc::new(Self {
            breaker,
            sdl_digest: sdl.as_deref().map(digest),
            schema,
            limits,
            entity_labels: EntityLabels::new(sdl.as_deref(), max_typenames),
            probes,
            metrics: std::sync::OnceLock::new(),
            endpoints,
            budget,
            next: AtomicUsize::new(0),
            cfg,
        })
    }

    /// Whether its SDL file (if it has one) still holds the text it was
    /// built with.
    pub fn sdl_unchanged(&self) -> bool {
        let Some(path) = &self.cfg.sdl else {
            return true;
        };
        std::fs::read_to_string(path).ok().as_deref().map(digest) == self.sdl_digest
    }

    /// The subgraph's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Round-robin over healthy endpoints not in `tried`; when none is
    /// healthy (and panic mode is on), over every endpoint not in `tried`.
    pub fn pick(&self, tried: &[usize]) -> Option<Pick> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order = (0..n).map(|i| (start + i) % n);
        if let Some(index) = order
            .clone()
            .find(|i| !tried.contains(i) && self.endpoints[*i].is_healthy())
        {
            return Some(Pick {
                index,
                panic: false,
            });
        }
        if !self.in_panic() {
            return None;
        }
        order
            .find(|i| !tried.contains(i))
            .map(|index| Pick { index, panic: true })
    }

    /// Hot-path metric handles, resolved on first use.
    pub fn metrics(&self, m: &ProxyMetrics) -> &SubgraphMetrics {
        self.metrics.get_or_init(|| {
            let addrs: Vec<&str> = self.endpoints.iter().map(|e| e.addr.as_str()).collect();
            SubgraphMetrics::new(m, self.name(), &addrs)
        })
    }

    /// Every endpoint is ejected and panic mode is on.
    pub fn in_panic(&self) -> bool {
        self.cfg.health.panic_mode && !self.endpoints.iter().any(|e| e.is_healthy())
    }

    /// Counts a request toward the retry budget.
    pub fn deposit(&self) {
        self.budget.deposit(Instant::now());
    }

    /// Retries the budget would allow now.
    pub fn retries_left(&self) -> u64 {
        self.budget.remaining(Instant::now())
    }

    /// Takes one retry from the budget.
    pub fn withdraw(&self) -> bool {
        self.budget.withdraw(Instant::now())
    }

    /// Starts pool maintenance and health checks; they stop when the
    /// subgraph is dropped.
    pub fn spawn_background(self: &Arc<Self>, metrics: ProxyMetrics) {
        self.metrics(&metrics); // resolve the hot-path handles now
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
                    m.endpoint_healthy
                        .with_label_values(&[sg.name(), ep.addr.as_str()])
                        .set(i64::from(ep.is_healthy()));
                }
                let state = sg.breaker.state() as i64;
                m.breaker_state.with_label_values(&[sg.name()]).set(state);
                m.panic_mode
                    .with_label_values(&[sg.name()])
                    .set(i64::from(sg.in_panic()));
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
                    sg.record_check(i, ok, &m);
                }
            });
        }
    }

    /// Feeds an active check's outcome into an endpoint's health.
    pub fn record_check(&self, i: usize, ok: bool, m: &ProxyMetrics) {
        let change = self.endpoints[i].report_check(ok);
        self.health_changed(i, change, m);
    }

    /// Feeds a live request's outcome into an endpoint's health (it can
    /// eject an endpoint, never bring one back).
    pub fn record_passive(&self, i: usize, ok: bool, m: &ProxyMetrics) {
        let change = self.endpoints[i].report_passive(ok);
        self.health_changed(i, change, m);
    }

    fn health_changed(&self, i: usize, change: HealthChange, m: &ProxyMetrics) {
        let to = match change {
            HealthChange::None => return, // the common case: no metric work
            HealthChange::Ejected => "unhealthy",
            HealthChange::Restored => "healthy",
        };
        let ep = &self.endpoints[i];
        m.endpoint_healthy
            .with_label_values(&[self.name(), ep.addr.as_str()])
            .set(i64::from(ep.is_healthy()));
        tracing::warn!(subgraph = self.name(), endpoint = %ep.addr, to, "endpoint health changed");
        m.health_transitions
            .with_label_values(&[self.name(), ep.addr.as_str(), to])
            .inc();
        m.events.publish(
            crate::events::Event::new(
                crate::events::Kind::Health,
                ep.addr.as_str(),
                format!("endpoint {to}"),
            )
            .by("health")
            .with("subgraph", self.name())
            .with("to", to),
        );
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
        let probes = &self.probes[i];
        let attempt = async {
            let mut conn = probes.get().await.ok()?;
            // Reused only once the whole answer is read: a check cut off by
            // its timeout leaves the connection mid-response.
            conn.discard();
            let resp = conn.send(req).await.ok()?;
            let ok = resp.status().is_success();
            resp.into_body().collect().await.ok()?;
            conn.keep();
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
        m.events.publish(
            crate::events::Event::new(
                crate::events::Kind::Breaker,
                self.name(),
                format!("{} -> {}", name(from), name(to)),
            )
            .by("breaker")
            .with("from", name(from))
            .with("to", name(to)),
        );
    }
}

#[cfg(test)]
mod tests;

fn digest(text: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}
