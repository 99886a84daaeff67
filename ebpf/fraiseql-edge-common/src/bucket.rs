//! Token-bucket arithmetic, shared by the XDP program, the daemon's
//! user-space fallback and the unit tests.
//!
//! Tokens are fixed point with [`FP_SHIFT`] fractional bits. User space turns
//! `(rate per second, burst)` into [`Limits`] once — the only divisions — and
//! the hot path ([`take`]) only adds, multiplies and compares:
//!
//! * refill: `tokens += min(now - last, fill_ns) * refill_per_ns`, capped at
//!   the capacity. Capping the elapsed time at `fill_ns` (the time an empty
//!   bucket needs to fill) keeps the product from overflowing after any idle.
//! * a clock that goes backwards refills nothing and restarts the clock; it
//!   never locks a client out.
//! * with 40 fractional bits, rounding `refill_per_ns` up adds less than
//!   0.1 % at 1 packet/s and less as the rate grows; there is no per-packet
//!   truncation because each refill is computed from elapsed nanoseconds.

use crate::abi::ClientState;
pub use crate::abi::Limits;

/// Fractional bits of the token fixed point.
pub const FP_SHIFT: u32 = 40;
/// One token in fixed point.
pub const ONE: u64 = 1 << FP_SHIFT;
/// Largest accepted rate (packets per second).
pub const MAX_RATE: u64 = 1_000_000_000;
/// Largest accepted burst: `capacity` must leave headroom below `2^63`.
pub const MAX_BURST: u64 = (1 << (63 - FP_SHIFT)) - 1;

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
        // Rounded up, so a whole second (or any exact multiple of the
        // interval) always yields its whole tokens; computed in 128 bits
        // because rate << 40 exceeds 64 bits above 2^24 packets/s. The
        // result is at most 2^40 (at MAX_RATE).
        let refill_per_ns =
            ((u128::from(rate_per_sec) << FP_SHIFT).div_ceil(u128::from(NS_PER_SEC))) as u64;
        let capacity = burst << FP_SHIFT;
        let fill_ns = capacity.div_ceil(refill_per_ns);
        Ok(Self {
            refill_per_ns,
            capacity,
            fill_ns,
            max_conns,
            rate_enabled: 1,
        })
    }

    /// The rate in packets per second these limits were built from (rounded).
    pub fn rate_per_sec(&self) -> u64 {
        if self.rate_enabled == 0 {
            return 0;
        }
        ((self.refill_per_ns as u128 * NS_PER_SEC as u128 + (ONE as u128 / 2)) >> FP_SHIFT) as u64
    }

    /// The burst these limits were built from.
    pub fn burst(&self) -> u64 {
        self.capacity >> FP_SHIFT
    }
}

/// State of a client seen for the first time at `now`: a full bucket.
#[inline(always)]
pub fn new_state(limits: &Limits, now: u64) -> ClientState {
    ClientState {
        tokens: limits.capacity,
        last_ns: now,
        passed: 0,
        dropped: 0,
    }
}

/// Refills the bucket for the time since the last packet and takes one token.
/// Returns `true` when the packet may pass.
#[inline(always)]
pub fn take(state: &mut ClientState, limits: &Limits, now: u64) -> bool {
    if limits.rate_enabled == 0 {
        return true;
    }
    let mut elapsed = now.saturating_sub(state.last_ns);
    if elapsed > limits.fill_ns {
        elapsed = limits.fill_ns;
    }
    // elapsed ≤ fill_ns = ⌈capacity / refill⌉, so the product is below
    // capacity + refill < 2^63 for limits built by `Limits::new`; a plain
    // multiply keeps the hot path free of 128-bit helpers the BPF target lacks.
    let mut tokens = state
        .tokens
        .saturating_add(elapsed.wrapping_mul(limits.refill_per_ns));
    if tokens > limits.capacity {
        tokens = limits.capacity;
    }
    state.last_ns = now;
    if tokens >= ONE {
        state.tokens = tokens - ONE;
        true
    } else {
        state.tokens = tokens;
        false
    }
}

#[cfg(test)]
mod tests;
