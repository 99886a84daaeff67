//! Retry gaps: exponential with "equal jitter" (half the gap fixed, half
//! random). Unlike full jitter, each gap is at least as long as the longest
//! the previous try could have had, so gaps grow until the cap — what an
//! operator reading the log expects — while tries from many sagas that
//! failed together still spread out.

use std::time::Duration;

/// Exponential backoff with equal jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
}

impl Backoff {
    /// Gaps of `base_ms`, doubling, capped at `max_ms`.
    pub fn new(base_ms: u64, max_ms: u64) -> Self {
        Self {
            base_ms: base_ms.max(1),
            max_ms: max_ms.max(base_ms.max(1)),
        }
    }

    /// The ceiling of the gap before retry `retry` (0: the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let ms = self
            .base_ms
            .saturating_mul(1u64.checked_shl(retry.min(63)).unwrap_or(u64::MAX))
            .min(self.max_ms);
        Duration::from_millis(ms)
    }

    /// The gap before retry `retry`, given `unit` uniform in [0, 1): between
    /// half the ceiling and the ceiling.
    pub fn gap(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(retry);
        ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    /// [`Self::gap`] with a random `unit`.
    pub fn random_gap(&self, retry: u32) -> Duration {
        let unit = getrandom::u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
        self.gap(retry, unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_double_up_to_the_cap() {
        let b = Backoff::new(100, 1_000);
        let ceilings: Vec<u64> = (0..6).map(|r| b.ceiling(r).as_millis() as u64).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(b.ceiling(200), Duration::from_millis(1_000));
    }

    #[test]
    fn jitter_keeps_each_gap_at_least_the_previous_longest() {
        let b = Backoff::new(100, 10_000);
        for r in 0..5 {
            let shortest_next = b.gap(r + 1, 0.0);
            let longest_this = b.gap(r, 1.0);
            assert!(shortest_next >= longest_this, "retry {r}");
        }
        assert_eq!(b.gap(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.gap(0, 1.0), Duration::from_millis(100));
        let g = b.random_gap(2);
        assert!(g >= Duration::from_millis(200) && g <= Duration::from_millis(400));
    }
}
