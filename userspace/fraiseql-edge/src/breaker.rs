//! Circuit breaker per subgraph: closed → open → half-open → closed.
//!
//! * **Closed**: requests flow; outcomes are counted in a sliding window of
//!   one-second buckets. The breaker opens when, over the window, at least
//!   `min_requests` finished and the failure ratio is ≥ `failure_ratio`, or
//!   after `consecutive_failures` failures in a row.
//! * **Open**: every request is refused at once (the caller answers 503
//!   `CIRCUIT_OPEN` without touching the network) until `open_for` has passed.
//! * **Half-open**: up to `half_open_probes` requests are let through; one
//!   success closes the breaker (fresh window), one failure re-opens it.
//!
//! Operators can force it open or closed, and reset it. Time is passed in, so
//! the state machine is tested without sleeping.
//!
//! **Periods.** Every state change and every operator action (a change of
//! override, a reset) starts a new period, numbered by a generation counter.
//! A [`Permit`] remembers the period it was admitted in, and its outcome
//! counts only in that period: a late answer from an earlier half-open
//! period, or from before a reset or an override, is ignored — it neither
//! opens nor closes the breaker, nor enters the window, nor frees a probe
//! slot of the current period (each period starts with all its slots free).
//! Within one closed period, outcomes count in the window whenever they
//! arrive. A permit dropped without an outcome (a cancelled request) frees
//! its probe slot if its period is still current, and counts as nothing.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde::Deserialize;

/// Breaker settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failure ratio over the window that opens the breaker (0.0–1.0).
    pub failure_ratio: f64,
    /// Length of the sliding window, in whole seconds.
    pub window_secs: u32,
    /// Requests the window must hold before the ratio counts.
    pub min_requests: u32,
    /// Failures in a row that open the breaker regardless of the window.
    pub consecutive_failures: u32,
    /// How long the breaker stays open before probing, in milliseconds.
    pub open_ms: u64,
    /// Requests admitted while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            // Half the traffic failing means the subgraph is down for most users.
            failure_ratio: 0.5,
            // Long enough to smooth a blip, short enough to react within seconds.
            window_secs: 10,
            // Below 20 requests a ratio is noise.
            min_requests: 20,
            // Catches a hard-down subgraph under low traffic.
            consecutive_failures: 5,
            // Gives a restarting subgraph a moment without hammering it.
            open_ms: 5_000,
            // One probe: a recovering subgraph gets one request, not a stampede.
            half_open_probes: 1,
        }
    }
}

/// Breaker state; the `u8` is the metric encoding (FraiseQL's convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed = 0,
    /// Requests are refused.
    Open = 1,
    /// A few probes are admitted.
    HalfOpen = 2,
}

/// An operator override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Force {
    /// No override: the state machine decides.
    None,
    /// Refuse everything.
    Open,
    /// Admit everything, whatever the outcomes.
    Closed,
}

/// A state change, for logs, metrics and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
}

/// The request was refused: the breaker is open (or half-open and busy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit open")]
pub struct Rejected;

#[derive(Clone, Copy, Default)]
struct Bucket {
    second: u64,
    ok: u32,
    failed: u32,
}

struct Inner {
    state: State,
    force: Force,
    /// The current period; bumped by [`Inner::next_period`].
    generation: u64,
    opened_at: Instant,
    consecutive: u32,
    probes: u32,
    buckets: Vec<Bucket>,
}

impl Inner {
    /// Starts a new period: permits of earlier ones stop counting, and the
    /// probe slots they held are given back to the new period.
    fn next_period(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.probes = 0;
    }
}

/// One subgraph's breaker.
pub struct Breaker {
    cfg: BreakerConfig,
    epoch: Instant,
    inner: Mutex<Inner>,
}

/// Permission to send one request, valid for the period it was admitted in.
/// Report its outcome with [`Breaker::record`]; dropping it unreported
/// releases its probe slot (if its period is still current).
pub struct Permit {
    breaker: Arc<Breaker>,
    generation: u64,
    probe: bool,
    done: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done && self.probe {
            let mut inner = self.breaker.lock();
            if inner.generation == self.generation {
                inner.probes = inner.probes.saturating_sub(1);
            }
        }
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig, now: Instant) -> Arc<Self> {
        let window = cfg.window_secs.max(1) as usize;
        Arc::new(Self {
            cfg,
            epoch: now,
            inner: Mutex::new(Inner {
                state: State::Closed,
                force: Force::None,
                generation: 0,
                opened_at: now,
                consecutive: 0,
                probes: 0,
                buckets: vec![Bucket::default(); window],
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state (forced states included).
    pub fn state(&self) -> State {
        let inner = self.lock();
        match inner.force {
            Force::Open => State::Open,
            Force::Closed => State::Closed,
            Force::None => inner.state,
        }
    }

    /// Asks to send a request at `now`. `Ok` carries the permit and, when the
    /// open period just ended, the open → half-open transition.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Result<(Permit, Option<Transition>), Rejected> {
        let mut inner = self.lock();
        match inner.force {
            Force::Open => return Err(Rejected),
            Force::Closed => return Ok((self.permit(&inner, false), None)),
            Force::None => {}
        }
        let mut transition = None;
        if inner.state == State::Open {
            if now.saturating_duration_since(inner.opened_at)
                < Duration::from_millis(self.cfg.open_ms)
            {
                return Err(Rejected);
            }
            inner.state = State::HalfOpen;
            inner.next_period();
            transition = Some(Transition {
                from: State::Open,
                to: State::HalfOpen,
            });
        }
        if inner.state == State::HalfOpen {
            if inner.probes >= self.cfg.half_open_probes {
                return Err(Rejected);
            }
            inner.probes += 1;
            return Ok((self.permit(&inner, true), transition));
        }
        Ok((self.permit(&inner, false), transition))
    }

    fn permit(self: &Arc<Self>, inner: &Inner, probe: bool) -> Permit {
        Permit {
            breaker: Arc::clone(self),
            generation: inner.generation,
            probe,
            done: false,
        }
    }

    /// Records the outcome of a permitted request finished at `now`. An
    /// outcome from an earlier period (see the module docs) is ignored.
    pub fn record(&self, mut permit: Permit, success: bool, now: Instant) -> Option<Transition> {
        permit.done = true;
        let mut inner = self.lock();
        if permit.generation != inner.generation {
            return None;
        }
        if permit.probe {
            inner.probes = inner.probes.saturating_sub(1);
        }
        if inner.force != Force::None {
            return None;
        }
        match inner.state {
            State::HalfOpen if permit.probe => {
                if success {
                    self.close(&mut inner);
                    Some(Transition {
                        from: State::HalfOpen,
                        to: State::Closed,
                    })
                } else {
                    self.open(&mut inner, now);
                    Some(Transition {
                        from: State::HalfOpen,
                        to: State::Open,
                    })
                }
            }
            State::Closed => {
                let second = now.saturating_duration_since(self.epoch).as_secs();
                let len = inner.buckets.len();
                let bucket = &mut inner.buckets[(second % len as u64) as usize];
                if bucket.second != second {
                    *bucket = Bucket {
                        second,
                        ok: 0,
                        failed: 0,
                    };
                }
                if success {
                    bucket.ok += 1;
                    inner.consecutive = 0;
                    return None;
                }
                bucket.failed += 1;
                inner.consecutive += 1;
                if inner.consecutive >= self.cfg.consecutive_failures
                    || self.ratio_tripped(&inner, second)
                {
                    self.open(&mut inner, now);
                    return Some(Transition {
                        from: State::Closed,
                        to: State::Open,
                    });
                }
                None
            }
            // Same period, so not reachable: opening and half-opening both
            // start a new period, and a half-open period admits only probes.
            _ => None,
        }
    }

    fn ratio_tripped(&self, inner: &Inner, second: u64) -> bool {
        let oldest = second.saturating_sub(inner.buckets.len() as u64 - 1);
        let (ok, failed) = inner
            .buckets
            .iter()
            .filter(|b| b.second >= oldest && b.second <= second)
            .fold((0u64, 0u64), |(o, f), b| {
                (o + u64::from(b.ok), f + u64::from(b.failed))
            });
        let total = ok + failed;
        total >= u64::from(self.cfg.min_requests)
            && failed as f64 >= self.cfg.failure_ratio * total as f64
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        inner.state = State::Open;
        inner.opened_at = now;
        inner.next_period();
    }

    fn close(&self, inner: &mut Inner) {
        inner.state = State::Closed;
        inner.next_period();
        inner.consecutive = 0;
        inner.buckets.fill(Bucket::default());
    }

    /// Forces the breaker open or closed, or lifts the override. A change of
    /// override starts a new period (repeating the current one changes
    /// nothing); the state underneath is kept.
    pub fn force(&self, force: Force) {
        let mut inner = self.lock();
        if inner.force != force {
            inner.force = force;
            inner.next_period();
        }
    }

    /// The operator's override in force.
    pub fn forced(&self) -> Force {
        self.lock().force
    }

    /// Lifts any override and closes the breaker with a fresh window, in a
    /// new period.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.force = Force::None;
        self.close(&mut inner);
    }
}

#[cfg(test)]
mod tests;
