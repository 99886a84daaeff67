//! Polling for state changes: the kernel and the daemon change state
//! asynchronously, so tests wait for an outcome with a generous deadline
//! instead of sleeping a fixed time and hoping.

use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `value` until it has not changed for 300 ms (in-flight packets
/// landed), for at most `timeout`; returns the last value.
pub fn settled(timeout: Duration, mut value: impl FnMut() -> u64) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut last = value();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = value();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_millis(300) || Instant::now() >= deadline {
            return last;
        }
    }
}
