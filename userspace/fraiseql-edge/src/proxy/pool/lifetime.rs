//! Per-connection lifetimes: `max_lifetime` less a random jitter of up to a
//! tenth, so that connections opened together (the warm set at start, or
//! after a restore) are not all replaced in the same maintenance pass, nor
//! all rebalanced onto the same replica at once.
//!
//! The randomness is a per-process random SipHash key (std's `RandomState`,
//! a fresh key per pool) hashing a per-pool counter: no RNG dependency, and
//! plenty for spreading expiry times.

use std::{
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// The lifetime for a draw uniform over `u64`: from `max` (draw 0) down to
/// just above nine tenths of `max` (draw `u64::MAX`). Never above `max`.
pub(super) fn jittered(max: Duration, draw: u64) -> Duration {
    // The draw's top 32 bits as a fraction of 2^32, times a tenth. In u128,
    // `max` in nanoseconds (< 2^94) times the fraction (< 2^32) cannot
    // overflow.
    let cut = max.as_nanos() * u128::from(draw >> 32) / (10 << 32);
    // Only a `max` of centuries takes more than u64 nanoseconds off: cap.
    max.saturating_sub(Duration::from_nanos(u64::try_from(cut).unwrap_or(u64::MAX)))
}

/// One pool's source of jitter draws.
#[derive(Default)]
pub(super) struct Jitter {
    key: RandomState,
    next: AtomicU64,
}

impl Jitter {
    /// A fresh draw, uniform over `u64`.
    pub(super) fn draw(&self) -> u64 {
        self.key.hash_one(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The lifetime of a new connection.
    pub(super) fn lifetime(&self, max: Duration) -> Duration {
        jittered(max, self.draw())
    }
}
