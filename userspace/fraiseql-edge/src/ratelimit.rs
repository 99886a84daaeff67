//! Phase 3, rate limit: requests per identity, and escalation of abusive
//! addresses to the block list.
//!
//! * **Limiter**: GCRA per key (the JWT subject, else the client address),
//!   `requests_per_minute` with a `burst`; exactly `burst + rate·t` requests
//!   pass in any interval of length `t`. The key table is an LRU bounded by
//!   `max_keys`: a key pushed out forgets its history, which can only admit
//!   more (never refuse a well-behaved client). Time is passed in, so the
//!   arithmetic is tested without sleeping.
//! * **Decision** carries what the `RateLimit-Limit`, `RateLimit-Remaining`,
//!   `RateLimit-Reset` and `Retry-After` headers say.
//! * **Escalation**: an address that collects `threshold` strikes (rate-limit
//!   refusals, authentication failures) within `window_secs` is reported
//!   once, for the caller to block it for `block_secs` (in the kernel, or in
//!   degraded mode in user space).

mod escalation;

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lru::LruCache;
use serde::Deserialize;

pub use self::escalation::{Escalation, EscalationConfig};

/// `[rate_limit]`: the per-identity limit.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per minute per identity; 0 disables the limit.
    pub requests_per_minute: u32,
    /// Requests an idle identity may send at once.
    pub burst: u32,
    /// Identities tracked at once (least recently seen forgotten first).
    pub max_keys: usize,
    /// Whether the limit holds across every node (`[cluster]`, Redis), on
    /// top of this node's own check.
    pub global: bool,
    /// Blocking addresses that keep getting refused.
    pub escalation: EscalationConfig,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            // The product plan's default.
            requests_per_minute: 1000,
            // A page load's worth of queries at once, a tenth of a minute's budget.
            burst: 100,
            // About 10 MB of state at most; far more clients than one node serves.
            max_keys: 100_000,
            global: false,
            escalation: EscalationConfig::default(),
        }
    }
}

impl RateLimitConfig {
    /// Checks ranges; `at` is the section's path for the error.
    pub fn validate(&self, at: &str) -> Result<(), (String, String)> {
        if self.requests_per_minute > 0 && self.burst == 0 {
            return Err((
                format!("{at}.burst"),
                "must be at least 1 when requests_per_minute is set".into(),
            ));
        }
        if self.max_keys == 0 {
            return Err((format!("{at}.max_keys"), "must be at least 1".into()));
        }
        self.escalation.validate(&format!("{at}.escalation"))
    }
}

/// A subgraph's own per-identity limit (`[subgraphs.rate_limit]`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitOverride {
    /// Sustained requests per minute per identity; 0 turns the limit off
    /// for this subgraph.
    pub requests_per_minute: u32,
    /// Requests an idle identity may send at once.
    pub burst: u32,
    /// Whether this limit holds across every node (`None`: as
    /// `[rate_limit] global` says).
    #[serde(default)]
    pub global: Option<bool>,
}

impl RateLimitOverride {
    /// The global configuration with this rate and burst.
    pub fn apply(&self, global: &RateLimitConfig) -> RateLimitConfig {
        RateLimitConfig {
            requests_per_minute: self.requests_per_minute,
            burst: self.burst,
            ..global.clone()
        }
    }
}

/// Whom a limit applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// An authenticated subject.
    Subject(String),
    /// An anonymous client, by address.
    Address(IpAddr),
}

/// The outcome of one check, with its header values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// `RateLimit-Limit`: the burst.
    pub limit: u32,
    /// `RateLimit-Remaining`: requests that could pass right now.
    pub remaining: u32,
    /// `RateLimit-Reset`: seconds until the full burst is available again.
    pub reset_secs: u64,
    /// `Retry-After` of a refusal: seconds until one request may pass.
    pub retry_after_secs: u64,
}

/// The keyed GCRA limiter.
pub struct RateLimiter {
    /// Time between requests at the sustained rate, in nanoseconds.
    interval: u64,
    /// How far ahead of now a key's theoretical arrival time may run.
    tolerance: u64,
    burst: u32,
    epoch: Instant,
    tats: Mutex<LruCache<Key, u64>>,
}

impl RateLimiter {
    /// A limiter for `cfg`; `None` when the limit is disabled.
    pub fn new(cfg: &RateLimitConfig, epoch: Instant) -> Option<Self> {
        if cfg.requests_per_minute == 0 {
            return None;
        }
        let interval = 60_000_000_000 / u64::from(cfg.requests_per_minute);
        let burst = cfg.burst.max(1);
        Some(Self {
            interval,
            tolerance: interval * u64::from(burst - 1),
            burst,
            epoch,
            tats: Mutex::new(LruCache::new(
                NonZeroUsize::new(cfg.max_keys).unwrap_or(NonZeroUsize::MIN),
            )),
        })
    }

    /// Checks (and, when allowed, counts) one request of `key` at `now`.
    pub fn check(&self, key: &Key, now: Instant) -> Decision {
        self.check_n(key, 1, now)
    }

    /// Checks (and, when allowed, counts) `n` requests of `key` at once (a
    /// batch: every operation counts); all pass or none.
    pub fn check_n(&self, key: &Key, n: u32, now: Instant) -> Decision {
        let n = u64::from(n.max(1));
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        let cost = self.interval.saturating_mul(n);
        // The last of the n must fit within the tolerance.
        let allowed = (tat - now).saturating_add(cost - self.interval) <= self.tolerance;
        let new_tat = if allowed {
            tat.saturating_add(cost)
        } else {
            tat
        };
        if allowed {
            tats.put(key.clone(), new_tat);
        }
        drop(tats);
        // Room left: how many more intervals fit before the tolerance.
        let ahead = new_tat - now;
        let remaining = (self.tolerance + self.interval).saturating_sub(ahead) / self.interval;
        let retry_after = if allowed {
            0
        } else {
            (tat - now + cost - self.interval)
                .saturating_sub(self.tolerance)
                .div_ceil(1_000_000_000)
        };
        Decision {
            allowed,
            limit: self.burst,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_secs: ahead.div_ceil(1_000_000_000),
            retry_after_secs: retry_after.max(u64::from(!allowed)),
        }
    }

    /// Identities tracked now.
    pub fn len(&self) -> usize {
        self.tats.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no identity is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The time between two requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }

    /// A limiter for `cfg` that starts from this one's state: every
    /// identity keeps the share of its burst it has used, so lowering a
    /// limit during an attack does not hand every client a fresh burst, and
    /// raising one lets a throttled client through at once. `None` when
    /// `cfg` disables the limit.
    pub fn reconfigured(&self, cfg: &RateLimitConfig, now: Instant) -> Option<Self> {
        let mut next = Self::new(cfg, self.epoch)?;
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let old = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let mut tats = LruCache::new(NonZeroUsize::new(cfg.max_keys).unwrap_or(NonZeroUsize::MIN));
        // Oldest first, so the most recently seen stay if the table shrinks.
        for (key, tat) in old.iter().rev() {
            // Time ahead of now, in requests owed, at the new interval.
            let owed = u128::from(tat.saturating_sub(now)) * u128::from(next.interval)
                / u128::from(self.interval);
            let tat = now.saturating_add(u64::try_from(owed).unwrap_or(u64::MAX));
            tats.put(key.clone(), tat);
        }
        drop(old);
        next.tats = Mutex::new(tats);
        Some(next)
    }
}

/// The per-identity limiters in force: the global one and the subgraphs'
/// own. A change builds a new set ([`RateLimits::update`]) that the data
/// path swaps in whole.
pub struct RateLimits {
    global_cfg: RateLimitConfig,
    global: Option<Arc<RateLimiter>>,
    /// Subgraphs with a limit of their own (`None` inside: no limit there).
    own: HashMap<String, (RateLimitOverride, Option<Arc<RateLimiter>>)>,
}

/// One subgraph's limit as [`RateLimits::describe`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubgraphLimit {
    /// The subgraph.
    pub subgraph: String,
    /// Requests per minute in force (0: off).
    pub requests_per_minute: u32,
    /// Burst in force.
    pub burst: u32,
    /// Whether the subgraph has a limit of its own.
    pub overridden: bool,
    /// Whether it is held across every node (cluster mode).
    pub cluster_wide: bool,
}

impl RateLimits {
    /// The limiters for `global` and each subgraph's override (`None`: it
    /// uses the global limit).
    pub fn new<'a>(
        global: &RateLimitConfig,
        subgraphs: impl IntoIterator<Item = (&'a str, Option<RateLimitOverride>)>,
        epoch: Instant,
    ) -> Self {
        let own = subgraphs
            .into_iter()
            .filter_map(|(name, o)| o.map(|o| (name, o)))
            .map(|(name, o)| {
                let limiter = RateLimiter::new(&o.apply(global), epoch).map(Arc::new);
                (name.to_string(), (o, limiter))
            })
            .collect();
        Self {
            global_cfg: global.clone(),
            global: RateLimiter::new(global, epoch).map(Arc::new),
            own,
        }
    }

    /// The set for new settings. A limiter whose settings did not change
    /// is kept as it is; a changed one starts from the old one's state.
    #[must_use]
    pub fn update<'a>(
        &self,
        global: &RateLimitConfig,
        subgraphs: impl IntoIterator<Item = (&'a str, Option<RateLimitOverride>)>,
    ) -> Self {
        let epoch = Instant::now();
        let carry = |old: Option<&Arc<RateLimiter>>,
                     old_cfg: &RateLimitConfig,
                     cfg: &RateLimitConfig|
         -> Option<Arc<RateLimiter>> {
            match old {
                Some(l) if old_cfg == cfg => Some(Arc::clone(l)),
                Some(l) => l.reconfigured(cfg, epoch).map(Arc::new),
                None => RateLimiter::new(cfg, epoch).map(Arc::new),
            }
        };
        let own = subgraphs
            .into_iter()
            .filter_map(|(name, o)| o.map(|o| (name, o)))
            .map(|(name, o)| {
                let cfg = o.apply(global);
                let limiter = match self.own.get(name) {
                    Some((old, l)) => carry(l.as_ref(), &old.apply(&self.global_cfg), &cfg),
                    // It used the global limiter: start from that state.
                    None => carry(self.global.as_ref(), &self.global_cfg, &cfg),
                };
                (name.to_string(), (o, limiter))
            })
            .collect();
        Self {
            global_cfg: global.clone(),
            global: carry(self.global.as_ref(), &self.global_cfg, global),
            own,
        }
    }

    /// The limiter for requests to `subgraph`; `None`: no limit.
    pub fn for_subgraph(&self, subgraph: &str) -> Option<&RateLimiter> {
        match self.own.get(subgraph) {
            Some((_, own)) => own.as_deref(),
            None => self.global.as_deref(),
        }
    }

    /// What a cluster-wide check of a request to `subgraph` needs: the
    /// limit's scope in Redis, its rate and burst; `None` when the limit is
    /// off or not global.
    pub fn global_params(&self, subgraph: Option<&str>) -> Option<(String, u32, u32)> {
        let (scope, rpm, burst, global) =
            match subgraph.and_then(|s| self.own.get(s).map(|o| (s, o))) {
                Some((name, (own, _))) => (
                    name,
                    own.requests_per_minute,
                    own.burst,
                    own.global.unwrap_or(self.global_cfg.global),
                ),
                None => (
                    "default",
                    self.global_cfg.requests_per_minute,
                    self.global_cfg.burst,
                    self.global_cfg.global,
                ),
            };
        (global && rpm > 0).then(|| (scope.to_string(), rpm, burst))
    }

    /// The global limiter (`None`: the global limit is off).
    pub fn global_limiter(&self) -> Option<&RateLimiter> {
        self.global.as_deref()
    }

    /// The global settings.
    pub fn global(&self) -> &RateLimitConfig {
        &self.global_cfg
    }

    /// The subgraph's own limit, if it has one.
    pub fn own(&self, subgraph: &str) -> Option<RateLimitOverride> {
        self.own.get(subgraph).map(|(o, _)| *o)
    }

    /// The limit in force for each of `subgraphs`.
    pub fn describe<'a>(&self, subgraphs: impl IntoIterator<Item = &'a str>) -> Vec<SubgraphLimit> {
        subgraphs
            .into_iter()
            .map(|name| {
                let (rpm, burst, overridden) = match self.own.get(name) {
                    Some((o, _)) => (o.requests_per_minute, o.burst, true),
                    None => (
                        self.global_cfg.requests_per_minute,
                        self.global_cfg.burst,
                        false,
                    ),
                };
                SubgraphLimit {
                    subgraph: name.to_string(),
                    requests_per_minute: rpm,
                    burst,
                    overridden,
                    cluster_wide: self.global_params(Some(name)).is_some(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
