//! The retry budget of a subgraph: failover retries may add at most
//! `percent` % of the requests, plus a floor of `min_per_sec` retries a
//! second, over a sliding window (as Linkerd's and tower's retry budgets;
//! Envoy's is the same idea over concurrent requests).
//!
//! Every request [deposits](RetryBudget::deposit); a retry
//! [withdraws](RetryBudget::withdraw) and is allowed when, over the window,
//!
//! ```text
//! (withdrawn + 1) × 100 ≤ deposited × percent + min_per_sec × window_secs × 100
//! ```
//!
//! so the retries never exceed the budget, not even by a fraction: 33 % of
//! 300 requests is 99 retries, and 20 % of 4 requests is none. The window
//! is kept in one-second buckets keyed by whole seconds since the budget was
//! made; time is passed in, so tests do not sleep.
//!
//! Unlike tower's `TpsBudget` (which this replaces) the arithmetic is
//! integer only, so it is exact for every percent, and nothing panics:
//! settings out of bounds are an error at start-up ([`validate`]), and
//! counts saturate instead of wrapping. With the bounds below the sums are
//! exact up to 10^15 requests per window.

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// The largest `percent`: a hundred retries per request. A request is
/// retried at most `retry.retries` times anyway, so a budget above
/// `100 × retries` % limits nothing; the bound catches typos.
pub const MAX_PERCENT: u32 = 10_000;

/// The longest window (as tower and Finagle): a budget is about the last
/// few seconds, and each second is a bucket that a withdrawal sums.
pub const MAX_WINDOW: Duration = Duration::from_secs(60);

/// The data path's window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Budget settings that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The percent is above [`MAX_PERCENT`].
    #[error(
        "budget_percent must be at most {MAX_PERCENT} (a hundred retries per request), not {0}"
    )]
    Percent(u32),
    /// The window is not a whole number of seconds in 1..=[`MAX_WINDOW`].
    #[error("the budget window must be a whole number of seconds from 1 to 60, not {0:?}")]
    Window(Duration),
}

/// Checks retry budget settings for the data path's [`WINDOW`]; the message
/// names the bad setting. Every `min_per_sec` is accepted.
pub fn validate(percent: u32, min_per_sec: u32) -> Result<(), String> {
    Params::new(percent, min_per_sec, WINDOW)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Checked settings.
#[derive(Clone, Copy, Debug)]
struct Params {
    percent: u32,
    /// `min_per_sec × window_secs × 100`: the floor, in hundredths of a retry.
    floor: u64,
    window_secs: u64,
}

impl Params {
    fn new(percent: u32, min_per_sec: u32, window: Duration) -> Result<Self, BudgetError> {
        if percent > MAX_PERCENT {
            return Err(BudgetError::Percent(percent));
        }
        if window.is_zero() || window.subsec_nanos() != 0 || window > MAX_WINDOW {
            return Err(BudgetError::Window(window));
        }
        let window_secs = window.as_secs();
        Ok(Self {
            percent,
            // At most (2^32 - 1) × 60 × 100 < 2^45: exact.
            floor: u64::from(min_per_sec) * window_secs * 100,
            window_secs,
        })
    }
}

/// Retries still allowed with `deposited` requests and `withdrawn` retries
/// in the window: ⌊(deposited × percent + floor − withdrawn × 100) / 100⌋,
/// saturating (never wrapping) at both ends.
fn headroom(deposited: u64, withdrawn: u64, percent: u32, floor: u64) -> u64 {
    let allowance = deposited
        .saturating_mul(u64::from(percent))
        .saturating_add(floor);
    allowance.saturating_sub(withdrawn.saturating_mul(100)) / 100
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Whole seconds since the epoch this bucket counts.
    second: u64,
    deposited: u64,
    withdrawn: u64,
}

struct Buckets {
    /// The latest second seen; an older `now` (a caller that read the clock
    /// before another one) counts here, so it never wipes a newer bucket.
    latest: u64,
    ring: Vec<Bucket>,
}

impl Buckets {
    /// Moves the window to end at `second` (unless it already ends later),
    /// emptying the bucket it reuses.
    fn advance(&mut self, second: u64) {
        self.latest = self.latest.max(second);
        let second = self.latest;
        let bucket = self.latest_mut();
        if bucket.second != second {
            *bucket = Bucket {
                second,
                ..Bucket::default()
            };
        }
    }

    /// The bucket of the latest second.
    fn latest_mut(&mut self) -> &mut Bucket {
        let len = self.ring.len() as u64;
        &mut self.ring[(self.latest % len) as usize]
    }

    /// Deposits and withdrawals over the window ending at the latest second.
    fn totals(&self) -> (u64, u64) {
        let len = self.ring.len() as u64;
        self.ring
            .iter()
            .filter(|b| b.second.saturating_add(len) > self.latest)
            .fold((0, 0), |(d, w), b| {
                (d.saturating_add(b.deposited), w.saturating_add(b.withdrawn))
            })
    }
}

/// One subgraph's retry budget; shared by its requests (`&self`, a mutex).
pub struct RetryBudget {
    params: Params,
    epoch: Instant,
    buckets: Mutex<Buckets>,
}

impl RetryBudget {
    /// A budget of `percent` % of requests plus `min_per_sec` retries a
    /// second over `window`, starting empty at `now`. Errors when `percent`
    /// is above [`MAX_PERCENT`] or `window` is not whole seconds from 1 to 60.
    pub fn new(
        percent: u32,
        min_per_sec: u32,
        window: Duration,
        now: Instant,
    ) -> Result<Self, BudgetError> {
        let params = Params::new(percent, min_per_sec, window)?;
        Ok(Self {
            epoch: now,
            buckets: Mutex::new(Buckets {
                latest: 0,
                ring: vec![Bucket::default(); params.window_secs as usize],
            }),
            params,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Buckets> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Counts a request made at `now`.
    pub fn deposit(&self, now: Instant) {
        let mut buckets = self.lock();
        buckets.advance(self.second(now));
        let bucket = buckets.latest_mut();
        bucket.deposited = bucket.deposited.saturating_add(1);
    }

    /// Takes one retry at `now` if the budget allows it; a refusal takes
    /// nothing.
    pub fn withdraw(&self, now: Instant) -> bool {
        let mut buckets = self.lock();
        buckets.advance(self.second(now));
        if self.headroom(&buckets) == 0 {
            return false;
        }
        let bucket = buckets.latest_mut();
        bucket.withdrawn = bucket.withdrawn.saturating_add(1);
        true
    }

    /// Retries the budget would allow at `now` (for metrics and tests).
    pub fn remaining(&self, now: Instant) -> u64 {
        let mut buckets = self.lock();
        buckets.advance(self.second(now));
        self.headroom(&buckets)
    }

    fn headroom(&self, buckets: &Buckets) -> u64 {
        let (deposited, withdrawn) = buckets.totals();
        headroom(deposited, withdrawn, self.params.percent, self.params.floor)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread};

    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn budget(percent: u32, min_per_sec: u32, t0: Instant) -> RetryBudget {
        RetryBudget::new(percent, min_per_sec, WINDOW, t0).expect("valid settings")
    }

    /// Withdraws until refused; the number of retries taken.
    fn drain(b: &RetryBudget, now: Instant) -> u64 {
        let mut n = 0;
        while b.withdraw(now) {
            n += 1;
            assert!(n <= 1_000_000, "the budget never ran out");
        }
        n
    }

    #[test]
    fn exact_at_the_boundary_for_any_percent() {
        // (percent, requests, retries allowed)
        let cases = [
            (33, 300, 99),
            (33, 303, 99),
            (33, 304, 100),
            (1, 99, 0),
            (1, 100, 1),
            (20, 4, 0),
            (20, 5, 1),
            (20, 1_000, 200),
            (100, 7, 7),
            (1_000, 3, 30),
            (MAX_PERCENT, 2, 200),
            (0, 1_000, 0),
        ];
        let t0 = Instant::now();
        for (percent, requests, retries) in cases {
            let b = budget(percent, 0, t0);
            for _ in 0..requests {
                b.deposit(t0);
            }
            let case = format!("{percent} % of {requests}");
            assert_eq!(b.remaining(t0), retries, "{case}");
            assert_eq!(drain(&b, t0), retries, "{case}");
            assert_eq!(b.remaining(t0), 0, "{case}");
        }
    }

    #[test]
    fn the_floor_allows_retries_without_requests_and_adds_to_the_percent() {
        let t0 = Instant::now();
        // 10 a second over 10 s.
        assert_eq!(drain(&budget(20, 10, t0), t0), 100);
        assert_eq!(drain(&budget(0, 10, t0), t0), 100);
        let b = budget(33, 10, t0);
        for _ in 0..300 {
            b.deposit(t0);
        }
        assert_eq!(drain(&b, t0), 199);
        // No floor, no requests: no retries.
        assert!(!budget(20, 0, t0).withdraw(t0));
    }

    #[test]
    fn deposits_and_withdrawals_leave_the_window() {
        let t0 = Instant::now();
        let b = budget(100, 0, t0);
        for _ in 0..10 {
            b.deposit(t0);
        }
        let t5 = t0 + secs(5);
        for _ in 0..10 {
            b.deposit(t5);
        }
        assert_eq!(drain(&b, t5), 20);
        let almost = t0 + Duration::from_millis(9_999);
        b.deposit(almost);
        assert_eq!(b.remaining(almost), 1, "second 0 still counts");
        // At 10 s the ten deposits of second 0 left, the withdrawals of
        // second 5 did not: 12 requests, 20 retries.
        b.deposit(t0 + secs(10));
        assert_eq!(b.remaining(t0 + secs(10)), 0);
        b.deposit(t0 + secs(15));
        // At 15 s second 5 left too: the deposits of seconds 9, 10 and 15.
        assert_eq!(b.remaining(t0 + secs(15)), 3);
        // An hour later the bucket of second 0 is reused, fresh.
        let t3600 = t0 + secs(3_600);
        b.deposit(t3600);
        assert_eq!(b.remaining(t3600), 1);
    }

    #[test]
    fn an_earlier_now_counts_at_the_latest_second() {
        let t0 = Instant::now();
        let b = budget(100, 0, t0);
        b.deposit(t0 + secs(12));
        // Second 2 shares second 12's bucket: it must not empty it.
        b.deposit(t0 + secs(2));
        assert_eq!(b.remaining(t0 + secs(2)), 2);
        assert_eq!(b.remaining(t0 + secs(12)), 2);
        // A time before the epoch is second 0.
        let b = budget(100, 0, t0 + secs(1));
        b.deposit(t0);
        assert_eq!(b.remaining(t0), 1);
    }

    #[test]
    fn concurrent_withdrawals_take_exactly_the_budget() {
        let t0 = Instant::now();
        let b = Arc::new(budget(33, 0, t0));
        for _ in 0..300 {
            b.deposit(t0);
        }
        let taken: u64 = (0..8)
            .map(|_| {
                let b = Arc::clone(&b);
                thread::spawn(move || (0..50).filter(|_| b.withdraw(t0)).count() as u64)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(taken, 99);
    }

    #[test]
    fn settings_out_of_bounds_are_errors_not_panics() {
        let t0 = Instant::now();
        let new = |percent, min, window| RetryBudget::new(percent, min, window, t0).err();
        assert_eq!(
            new(MAX_PERCENT + 1, 0, WINDOW),
            Some(BudgetError::Percent(10_001))
        );
        assert_eq!(
            new(u32::MAX, u32::MAX, WINDOW),
            Some(BudgetError::Percent(u32::MAX))
        );
        for window in [
            Duration::ZERO,
            Duration::from_millis(1_500),
            secs(61),
            Duration::MAX,
        ] {
            assert_eq!(new(20, 10, window), Some(BudgetError::Window(window)));
        }
        assert!(validate(20, 10).is_ok());
        assert!(validate(MAX_PERCENT, u32::MAX).is_ok());
        let e = validate(MAX_PERCENT + 1, 10).unwrap_err();
        assert!(e.contains("budget_percent"), "{e}");
    }

    #[test]
    fn huge_settings_are_exact() {
        let t0 = Instant::now();
        let b = RetryBudget::new(MAX_PERCENT, u32::MAX, MAX_WINDOW, t0).unwrap();
        let floor = u64::from(u32::MAX) * 60;
        assert_eq!(b.remaining(t0), floor);
        b.deposit(t0);
        assert_eq!(b.remaining(t0), floor + 100);
        assert!(b.withdraw(t0));
        assert_eq!(b.remaining(t0), floor + 99);
    }

    #[test]
    fn the_arithmetic_saturates() {
        let max_floor = u64::from(u32::MAX) * 60 * 100;
        assert_eq!(
            headroom(u64::MAX, 0, MAX_PERCENT, max_floor),
            u64::MAX / 100
        );
        assert_eq!(headroom(u64::MAX, u64::MAX, u32::MAX, u64::MAX), 0);
        assert_eq!(headroom(0, u64::MAX, 0, 0), 0);
        assert_eq!(headroom(1 << 40, 0, MAX_PERCENT, 0), 100 << 40);
    }
}
