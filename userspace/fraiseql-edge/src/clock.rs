//! The clock the kernel programs use (`bpf_ktime_get_ns` is CLOCK_MONOTONIC),
//! so block expiries written from user space compare correctly in the kernel.

use nix::time::{ClockId, clock_gettime};

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}
