//! Cluster mode's building blocks: what the DaemonSet's nodes share through
//! Redis (or Valkey), as Envoy's global rate limit service and Cosmo Router
//! do, with no cluster protocol of our own.
//!
//! * [`ClusterConfig`]: the `[cluster]` section (where Redis is, how long to
//!   wait for it, what to do without it).
//! * [`GlobalLimiter`]: a GCRA limit checked atomically in Redis by one Lua
//!   script, with the local limiter's exact arithmetic (`burst + rate·t`
//!   requests in any interval `t`, across every node), in the Redis
//!   server's clock so that the nodes agree on time.
//! * Redis trouble is not an outage: every call has a deadline, and a
//!   [`Breaker`] stops calling a Redis that keeps failing for a while; the
//!   caller then gets [`GlobalDecision::Unavailable`] at once and applies
//!   its failure mode (by default: the local limit alone). The transitions
//!   between reachable and unreachable are logged once each.
//!
//! The proxy's rate-limit phase asks it after the local limit admitted a
//! request, for the limits marked `global` (`[rate_limit] global = true`).

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::ratelimit::Decision;

pub mod blocks;

/// What a node does while Redis cannot be asked.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Admit what the local limits admit (Envoy's default).
    #[default]
    Open,
    /// Refuse what needs a global check.
    Closed,
}

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub redis_url: String,
    /// With `rediss://`: the PEM file of the CA that signed Redis's
    /// certificate (default: the system's trusted roots).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// This node's name in logs and shared records (default: the host name).
    pub node: Option<String>,
    /// Prepended to every key, so several deployments can share a Redis.
    pub key_prefix: String,
    /// The longest wait for Redis per call (connecting included).
    pub timeout_ms: u64,
    /// What happens while Redis cannot be asked.
    pub failure_mode: FailureMode,
    /// Consecutive failed calls that make a node stop asking Redis…
    pub breaker_failures: u32,
    /// …for this long, before it tries again.
    pub breaker_open_ms: u64,
    /// Share blocks with the other nodes (see [`blocks`]).
    pub blocks: bool,
    /// How often the whole shared block set is loaded again, besides at
    /// start and after Redis comes back (missed messages are made up).
    pub resync_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            tls_ca_file: None,
            node: None,
            key_prefix: "fraiseql-edge:".to_string(),
            // A global check sits on the request path: a Redis slower than
            // this is treated as gone for that request.
            timeout_ms: 50,
            failure_mode: FailureMode::Open,
            breaker_failures: 3,
            breaker_open_ms: 2_000,
            blocks: true,
            resync_secs: 30,
        }
    }
}

impl ClusterConfig {
    /// This node's name: `node`, or the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(crate::config::host_name)
    }

    /// Checks what serde cannot; `Err((key, reason))`.
    pub fn validate(&self, at: &str) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: String| Err((format!("{at}.{key}"), reason));
        if let Err(why) = check_url(&self.redis_url) {
            return bad("redis_url", why);
        }
        if self.tls_ca_file.is_some() && !self.redis_url.starts_with("rediss://") {
            return bad(
                "tls_ca_file",
                "is for TLS: the URL must start with rediss://".into(),
            );
        }
        if !(1..=10_000).contains(&self.timeout_ms) {
            return bad("timeout_ms", "must be between 1 and 10000".into());
        }
        if self.breaker_failures == 0 {
            return bad("breaker_failures", "must be at least 1".into());
        }
        if !(1..=600_000).contains(&self.breaker_open_ms) {
            return bad("breaker_open_ms", "must be between 1 and 600000".into());
        }
        if !(1..=3_600).contains(&self.resync_secs) {
            return bad("resync_secs", "must be between 1 and 3600".into());
        }
        if self.node.as_deref().is_some_and(str::is_empty) {
            return bad(
                "node",
                "must not be empty (leave it out for the host name)".into(),
            );
        }
        Ok(())
    }
}

/// A URL the client can use, or why not (never echoing a password).
fn check_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("is required (redis://host:port)".into());
    }
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err(format!(
            "must start with redis:// or rediss:// (got {:?})",
            url.split("://").next().unwrap_or_default()
        ));
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("is not a usable Redis URL: {}", kind(&e)))
}

/// The client for `cfg` (validated first): with `rediss://`, TLS through
/// rustls, trusting `tls_ca_file` or the system's roots. (rustls's crypto
/// provider is the one its features enable: ring, see Cargo.toml.)
pub(crate) fn client(cfg: &ClusterConfig) -> Result<redis::Client, ClusterError> {
    cfg.validate("cluster")
        .map_err(|(key, reason)| ClusterError { key, reason })?;
    let url = cfg.redis_url.as_str();
    let built = match &cfg.tls_ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| ClusterError {
                key: "cluster.tls_ca_file".into(),
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
            if !pem.starts_with(b"-----BEGIN") {
                return Err(ClusterError {
                    key: "cluster.tls_ca_file".into(),
                    reason: format!("{} is not a PEM file", path.display()),
                });
            }
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
        None => redis::Client::open(url),
    };
    built.map_err(|e| ClusterError {
        key: "cluster.redis_url".into(),
        reason: kind(&e),
    })
}

/// An error's kind without its detail, which may quote the URL.
fn kind(e: &redis::RedisError) -> String {
    format!("{:?}", e.kind())
}

/// Why the global limiter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("[cluster] {key}: {reason}")]
pub struct ClusterError {
    /// The offending key.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Stops calls to a Redis that keeps failing, for a while.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    failures: u32,
    open_until: Option<Instant>,
}

/// A change of the breaker's mind, to log once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The threshold was reached: Redis is treated as unreachable.
    Opened,
    /// A call succeeded after failures: Redis is reachable again.
    Closed,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            failures: 0,
            open_until: None,
        }
    }

    /// Whether a call may be made at `now`: closed, or open long enough
    /// that one call may probe.
    pub fn allow(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }

    /// A call succeeded.
    pub fn success(&mut self) -> Option<Transition> {
        let was_open = self.open_until.take().is_some();
        self.failures = 0;
        was_open.then_some(Transition::Closed)
    }

    /// A call failed at `now`.
    pub fn failure(&mut self, now: Instant) -> Option<Transition> {
        self.failures = self.failures.saturating_add(1);
        if self.failures < self.threshold {
            return None;
        }
        let was_open = self.open_until.is_some();
        self.open_until = Some(now + self.open_for);
        (!was_open).then_some(Transition::Opened)
    }
}

/// The outcome of a global check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalDecision {
    /// Redis answered.
    Checked(Decision),
    /// Redis could not be asked (down, slow, or the breaker is open).
    Unavailable,
}

/// A rate and burst, in the script's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gcra {
    /// µs between two requests at the sustained rate.
    interval: u64,
    /// µs the theoretical arrival time may run ahead of now.
    tolerance: u64,
    burst: u32,
}

impl Gcra {
    fn new(requests_per_minute: u32, burst: u32) -> Self {
        // At least 1 µs: a faster rate (over 60,000,000 a minute) is held
        // to one a µs, never to an interval of 0.
        let interval = (60_000_000 / u64::from(requests_per_minute.max(1))).max(1);
        let burst = burst.max(1);
        Self {
            interval,
            tolerance: interval * u64::from(burst - 1),
            burst,
        }
    }

    /// The decision the script's answer means, as the local limiter words
    /// it (`ahead`: TAT − now after the call, `before`: before it, in µs).
    fn decision(self, allowed: bool, ahead: u64, before: u64, n: u32) -> Decision {
        let cost = self.interval.saturating_mul(u64::from(n.max(1)));
        let remaining = (self.tolerance + self.interval).saturating_sub(ahead) / self.interval;
        let retry_after = if allowed {
            0
        } else {
            (before + cost - self.interval)
                .saturating_sub(self.tolerance)
                .div_ceil(1_000_000)
                .max(1)
        };
        Decision {
            allowed,
            limit: self.burst,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_secs: ahead.div_ceil(1_000_000),
            retry_after_secs: retry_after,
        }
    }
}

/// `cluster_checks_total{result}` values.
const RESULTS: [&str; 3] = ["allowed", "limited", "unavailable"];

/// The limiter's metric handles (docs/metrics.md, "Cluster").
#[derive(Clone)]
pub struct ClusterMetrics {
    /// `fraiseql_edge_cluster_redis_up`.
    pub up: prometheus::IntGauge,
    /// `fraiseql_edge_cluster_checks_total{result}`.
    pub checks: prometheus::IntCounterVec,
}

impl ClusterMetrics {
    /// Registers the families into `registry`, every label value at 0.
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let m = Self {
            up: prometheus::IntGauge::new(
                "fraiseql_edge_cluster_redis_up",
                "0 while the node falls back to its local limits because its last call to Redis failed, else 1",
            )?,
            checks: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "fraiseql_edge_cluster_checks_total",
                    "Cluster-wide limit checks: allowed, limited, or unavailable (Redis could not be asked)",
                ),
                &["result"],
            )?,
        };
        registry.register(Box::new(m.up.clone()))?;
        registry.register(Box::new(m.checks.clone()))?;
        m.up.set(1);
        for r in RESULTS {
            m.checks.with_label_values(&[r]);
        }
        Ok(m)
    }
}

/// GCRA limits shared by every node through one Redis.
pub struct GlobalLimiter {
    client: redis::Client,
    /// The shared connection (multiplexed: one for every request), made on
    /// first use and dropped after a failure. Held only to clone it.
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    breaker: Mutex<Breaker>,
    up: AtomicBool,
    failure_mode: FailureMode,
    metrics: Option<ClusterMetrics>,
}

impl GlobalLimiter {
    /// A limiter for `cfg` (validated first). Connects lazily: a Redis that
    /// is down at start is a fallback, not a failure to start.
    pub fn new(cfg: &ClusterConfig) -> Result<Self, ClusterError> {
        let client = client(cfg)?;
        Ok(Self {
            client,
            conn: Mutex::new(None),
            script: redis::Script::new(include_str!("cluster/gcra.lua")),
            prefix: cfg.key_prefix.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms),
            breaker: Mutex::new(Breaker::new(
                cfg.breaker_failures,
                Duration::from_millis(cfg.breaker_open_ms),
            )),
            up: AtomicBool::new(true),
            failure_mode: cfg.failure_mode,
            metrics: None,
        })
    }

    /// The same, counting into `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: ClusterMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// What the node does while Redis cannot be asked.
    pub fn failure_mode(&self) -> FailureMode {
        self.failure_mode
    }

    fn count(&self, result: &str) {
        if let Some(m) = &self.metrics {
            m.checks.with_label_values(&[result]).inc();
            m.up.set(i64::from(self.is_up()));
        }
    }

    /// Global checks so far: allowed, limited, unavailable.
    pub fn counts(&self) -> [u64; 3] {
        self.metrics.as_ref().map_or([0; 3], |m| {
            RESULTS.map(|r| m.checks.with_label_values(&[r]).get())
        })
    }

    /// Whether the last call to Redis succeeded (true until one failed).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Option<redis::aio::MultiplexedConnection>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `n` requests of `key` against `requests_per_minute` with
    /// `burst`, across every node; all pass or none.
    pub async fn check(
        &self,
        key: &str,
        requests_per_minute: u32,
        burst: u32,
        n: u32,
    ) -> GlobalDecision {
        if !self.breaker().allow(Instant::now()) {
            self.count("unavailable");
            return GlobalDecision::Unavailable;
        }
        let gcra = Gcra::new(requests_per_minute, burst);
        let key = format!("{}rl:{key}", self.prefix);
        match tokio::time::timeout(self.timeout, self.call(&key, gcra, n)).await {
            Ok(Ok((allowed, ahead, before))) => {
                self.breaker().success();
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::warn!("Redis is reachable again: global limits are back in force");
                }
                self.count(if allowed { "allowed" } else { "limited" });
                GlobalDecision::Checked(gcra.decision(allowed, ahead, before, n))
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {:?}", self.timeout),
                };
                // The connection may be broken: the next call makes another.
                *self.conn() = None;
                self.breaker().failure(Instant::now());
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %why, failure_mode = ?self.failure_mode, "Redis unreachable: falling back to the local limits");
                }
                self.count("unavailable");
                GlobalDecision::Unavailable
            }
        }
    }

    /// One run of the script: `(allowed, ahead µs, before µs)`.
    async fn call(&self, key: &str, gcra: Gcra, n: u32) -> redis::RedisResult<(bool, u64, u64)> {
        let held = self.conn().clone();
        let mut conn = match held {
            Some(c) => c,
            None => {
                // Not under the lock: a slow connect holds up no one else
                // (each call is bounded by the deadline and the breaker).
                let c = self.client.get_multiplexed_async_connection().await?;
                *self.conn() = Some(c.clone());
                c
            }
        };
        let mut run = self.script.key(key);
        run.arg(gcra.interval).arg(gcra.tolerance).arg(n.max(1));
        let (allowed, ahead, before): (i64, i64, i64) = run.invoke_async(&mut conn).await?;
        Ok((
            allowed == 1,
            u64::try_from(ahead).unwrap_or(0),
            u64::try_from(before).unwrap_or(0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{Key, RateLimitConfig, RateLimiter};

    #[test]
    fn the_breaker_opens_after_the_threshold_and_closes_on_a_success() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(2));
        assert_eq!(b.failure(t0), None);
        assert_eq!(b.failure(t0), None);
        assert!(b.allow(t0));
        assert_eq!(b.failure(t0), Some(Transition::Opened));
        assert!(!b.allow(t0 + Duration::from_secs(1)), "open: no calls");
        assert!(b.allow(t0 + Duration::from_secs(2)), "then one may probe");
        // A failed probe keeps it open, without a second "opened".
        assert_eq!(b.failure(t0 + Duration::from_secs(2)), None);
        assert!(!b.allow(t0 + Duration::from_secs(3)));
        assert_eq!(b.success(), Some(Transition::Closed));
        assert!(b.allow(t0 + Duration::from_secs(3)));
        assert_eq!(b.success(), None, "closed already");
    }

    #[test]
    fn the_scripts_arithmetic_words_decisions_like_the_local_limiter() {
        // 60 a minute (one a second), burst 3; the same moves locally.
        let cfg = RateLimitConfig {
            requests_per_minute: 60,
            burst: 3,
            ..RateLimitConfig::default()
        };
        let epoch = Instant::now();
        let local = RateLimiter::new(&cfg, epoch).unwrap();
        let key = Key::Subject("alice".into());
        let gcra = Gcra::new(60, 3);
        assert_eq!((gcra.interval, gcra.tolerance), (1_000_000, 2_000_000));
        // Three pass at once: TAT − now goes 0 → 1 → 2 → 3 s.
        for (i, before) in [0u64, 1, 2].into_iter().enumerate() {
            let remote = gcra.decision(true, (before + 1) * 1_000_000, before * 1_000_000, 1);
            assert_eq!(remote, local.check(&key, epoch), "request {i}");
        }
        // The fourth is refused: TAT − now stays 3 s, retry after 1 s.
        let remote = gcra.decision(false, 3_000_000, 3_000_000, 1);
        assert_eq!(remote, local.check(&key, epoch));
        assert_eq!(remote.retry_after_secs, 1);
    }

    #[test]
    fn a_rate_above_one_a_microsecond_is_one_a_microsecond_not_a_panic() {
        // 60,000,000 a minute is one a µs, the script's unit; above that the
        // interval would be 0 (a division by zero in the decision).
        for rpm in [60_000_000, 60_000_001, u32::MAX] {
            let g = Gcra::new(rpm, 5);
            assert_eq!(g.interval, 1, "{rpm}");
            let d = g.decision(true, 1, 0, 1);
            assert!(d.allowed);
            assert_eq!(d.limit, 5);
            let refused = g.decision(false, 5, 5, 1);
            assert_eq!(refused.retry_after_secs, 1);
        }
    }

    #[test]
    fn bad_configs_are_refused_without_echoing_a_password() {
        let base = ClusterConfig {
            redis_url: "redis://127.0.0.1:6379".into(),
            ..ClusterConfig::default()
        };
        assert_eq!(base.validate("cluster"), Ok(()));
        let tls = ClusterConfig {
            redis_url: "rediss://default:hunter2@cache:6380/0".into(),
            tls_ca_file: Some("/etc/ssl/redis-ca.pem".into()),
            ..base.clone()
        };
        assert_eq!(tls.validate("cluster"), Ok(()));
        for (cfg, key, words) in [
            (
                ClusterConfig {
                    redis_url: String::new(),
                    ..base.clone()
                },
                "cluster.redis_url",
                "required",
            ),
            (
                ClusterConfig {
                    redis_url: "http://user:hunter2@cache:6379".into(),
                    ..base.clone()
                },
                "cluster.redis_url",
                "redis://",
            ),
            (
                ClusterConfig {
                    tls_ca_file: Some("/etc/ssl/redis-ca.pem".into()),
                    ..base.clone()
                },
                "cluster.tls_ca_file",
                "rediss://",
            ),
            (
                ClusterConfig {
                    timeout_ms: 0,
                    ..base.clone()
                },
                "cluster.timeout_ms",
                "between",
            ),
            (
                ClusterConfig {
                    breaker_failures: 0,
                    ..base.clone()
                },
                "cluster.breaker_failures",
                "at least 1",
            ),
            (
                ClusterConfig {
                    resync_secs: 0,
                    ..base.clone()
                },
                "cluster.resync_secs",
                "between 1 and 3600",
            ),
        ] {
            let (k, why) = cfg.validate("cluster").unwrap_err();
            assert_eq!(k, key);
            assert!(why.contains(words), "{why}");
            assert!(!why.contains("hunter2"), "{why}");
        }
    }
}
