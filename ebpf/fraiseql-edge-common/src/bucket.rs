//! Rate-limit arithmetic, shared by the XDP program, the daemon's user-space
//! fallback and the unit tests.
//!
//! The limiter is a GCRA (the virtual-scheduling form of a token bucket): a
//! client's whole state is one number, its *theoretical arrival time* (TAT),
//! so the XDP program can update it with a single compare-and-swap when one
//! client's packets are processed on several CPUs at once. A token bucket of
//! `burst` tokens refilled at `rate` per second admits exactly the same
//! packets: `burst` back to back, then one per `1/rate` seconds.
//!
//! * times are fixed point nanoseconds with [`FP_SHIFT`] fractional bits, so
//!   the interval of a rate that does not divide 10⁹ (3 Mpps: 333.33 ns) is
//!   kept to 1/256 ns — off by less than 4 per million;
//! * they are wrapping `u64`s compared by their difference, so the clock may
//!   pass 2⁵⁶ ns (2.3 years of uptime) without harm; a client idle for more
//!   than 2⁵⁵ ns (1.1 years) would be misread, and the LRU map forgets idle
//!   clients long before that;
//! * user space turns `(rate per second, burst)` into [`Limits`] once — the
//!   only divisions — and the hot path ([`admit`]) only adds and compares;
//! * a clock that goes backwards refills nothing and never locks a client
//!   out: the client continues from an empty bucket at the new reading.

use crate::abi::ClientState;
pub use crate::abi::Limits;

/// Fractional bits of the fixed-point nanoseconds.
pub const FP_SHIFT: u32 = 8;
/// Largest accepted rate (packets per second).
pub const MAX_RATE: u64 = 1_000_000_000;
/// Largest accepted burst: `window` (burst × interval) stays below 2⁶².
pub const MAX_BURST: u64 = (1 << 23) - 1;

const NS_PER_SEC: u64 = 1_000_000_000;

/// Why a `(rate, burst)` pair cannot be turned into [`Limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitError {
    /// The rate exceeds [`MAX_RATE`].
    RateTooHigh,
    /// A rate is set but the burst is 0 (nothing could ever pass).
    BurstZero,
    /// The burst exceeds [`MAX_BURST`].
    BurstTooHigh,
}

impl LimitError {
    /// A human-readable reason, for configuration errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateTooHigh => "rate must be at most 1000000000 packets per second",
            Self::BurstZero => "burst must be at least 1 when a rate is set",
            Self::BurstTooHigh => "burst must be at most 8388607 packets",
        }
    }
}

impl Limits {
    /// Precomputes the hot-path form of a limit.
    ///
    /// `rate_per_sec == 0` disables the packet-rate limit (only `max_conns`
    /// applies); `max_conns == 0` disables the connection cap.
    pub fn new(rate_per_sec: u64, burst: u64, max_conns: u32) -> Result<Self, LimitError> {
        if rate_per_sec == 0 {
            return Ok(Self {
                max_conns,
                ..Self::default()
            });
        }
        if rate_per_sec > MAX_RATE {
            return Err(LimitError::RateTooHigh);
        }
        if burst == 0 {
            return Err(LimitError::BurstZero);
        }
        if burst > MAX_BURST {
            return Err(LimitError::BurstTooHigh);
        }
        // Rounded down: the sustained rate is never below the configured one.
        // At most 2^38 (1 packet/s) and at least 2^8 (MAX_RATE).
        let interval = (NS_PER_SEC << FP_SHIFT) / rate_per_sec;
        Ok(Self {
            interval,
            window: burst * interval,
            max_conns,
            rate_enabled: 1,
        })
    }

    /// The rate in packets per second these limits were built from (rounded).
    pub fn rate_per_sec(&self) -> u64 {
        if self.rate_enabled == 0 || self.interval == 0 {
            return 0;
        }
        ((NS_PER_SEC << FP_SHIFT) + self.interval / 2) / self.interval
    }

    /// The burst these limits were built from.
    pub fn burst(&self) -> u64 {
        if self.interval == 0 {
            return 0;
        }
        self.window / self.interval
    }
}

/// A CLOCK_MONOTONIC reading in the limiter's fixed point (wrapping).
#[inline(always)]
pub fn fixed(now_ns: u64) -> u64 {
    now_ns << FP_SHIFT
}

/// State of a client seen for the first time at `now_ns`: a full burst available.
#[inline(always)]
pub fn new_state(now_ns: u64) -> ClientState {
    ClientState {
        tat: fixed(now_ns),
        passed: 0,
        dropped: 0,
    }
}

/// The GCRA decision for one packet at `now` (fixed point, see [`fixed`]):
/// the TAT to store and whether the packet may pass. The XDP program stores
/// the TAT with a compare-and-swap against `tat`, retrying on a lost race;
/// a drop usually leaves it unchanged (nothing to store).
///
/// A TAT further ahead than the window (the clock went backwards, or a
/// reload shrank the limits) is pulled back to `now + window`: the client
/// continues from an empty bucket, neither refilled nor locked out.
#[inline(always)]
pub fn admit(tat: u64, limits: &Limits, now: u64) -> (u64, bool) {
    let ahead = tat.wrapping_sub(now) as i64;
    let base = if ahead <= 0 {
        // A TAT in the past: the bucket is full.
        now
    } else if ahead as u64 > limits.window {
        now.wrapping_add(limits.window)
    } else {
        tat
    };
    let next = base.wrapping_add(limits.interval);
    if next.wrapping_sub(now) > limits.window {
        (base, false)
    } else {
        (next, true)
    }
}

/// Applies [`admit`] to a state owned by one thread (user space, tests).
/// Returns `true` when the packet may pass.
#[inline(always)]
pub fn take(state: &mut ClientState, limits: &Limits, now_ns: u64) -> bool {
    if limits.rate_enabled == 0 {
        return true;
    }
    let (tat, pass) = admit(state.tat, limits, fixed(now_ns));
    state.tat = tat;
    pass
}

#[cfg(test)]
mod tests;
