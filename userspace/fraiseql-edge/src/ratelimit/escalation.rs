//! Escalation: strikes per address in a fixed window; the strike that
//! reaches the threshold asks for a block, once per window.

use std::{
    net::IpAddr,
    num::NonZeroUsize,
    sync::Mutex,
    time::{Duration, Instant},
};

use lru::LruCache;
use serde::Deserialize;

/// `[rate_limit.escalation]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationConfig {
    /// Strikes (rate-limit refusals, authentication failures) within the
    /// window that get an address blocked; 0 disables escalation.
    pub threshold: u32,
    /// The window, in seconds.
    pub window_secs: u64,
    /// How long an escalated address stays blocked, in seconds.
    pub block_secs: u64,
    /// Addresses tracked at once (least recently struck forgotten first).
    pub max_addresses: usize,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        Self {
            // A client that keeps hammering after a hundred refusals in a
            // minute is not a browser retrying.
            threshold: 100,
            window_secs: 60,
            // Long enough to stop a script, short enough to forgive a NAT.
            block_secs: 300,
            max_addresses: 100_000,
        }
    }
}

impl EscalationConfig {
    /// Checks ranges; `at` is the section's path for the error.
    pub fn validate(&self, at: &str) -> Result<(), (String, String)> {
        if self.threshold > 0 && (self.window_secs == 0 || self.block_secs == 0) {
            return Err((
                format!("{at}.window_secs"),
                "window_secs and block_secs must be positive when threshold is set".into(),
            ));
        }
        if self.max_addresses == 0 {
            return Err((format!("{at}.max_addresses"), "must be at least 1".into()));
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Strikes {
    since: Instant,
    count: u32,
    escalated: bool,
}

/// Strike counting per address.
pub struct Escalation {
    threshold: u32,
    window: Duration,
    block: Duration,
    table: Mutex<LruCache<IpAddr, Strikes>>,
}

impl Escalation {
    /// Escalation per `cfg`; `None` when disabled.
    pub fn new(cfg: &EscalationConfig) -> Option<Self> {
        (cfg.threshold > 0).then(|| Self {
            threshold: cfg.threshold,
            window: Duration::from_secs(cfg.window_secs),
            block: Duration::from_secs(cfg.block_secs),
            table: Mutex::new(LruCache::new(
                NonZeroUsize::new(cfg.max_addresses).unwrap_or(NonZeroUsize::MIN),
            )),
        })
    }

    /// Counts one strike of `addr` at `now`; returns how long to block it
    /// when this strike reaches the threshold (once per window).
    pub fn strike(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let s = table.get_or_insert_mut(addr, || Strikes {
            since: now,
            count: 0,
            escalated: false,
        });
        if now.saturating_duration_since(s.since) >= self.window {
            *s = Strikes {
                since: now,
                count: 0,
                escalated: false,
            };
        }
        s.count = s.count.saturating_add(1);
        if s.count >= self.threshold && !s.escalated {
            s.escalated = true;
            return Some(self.block);
        }
        None
    }
}
