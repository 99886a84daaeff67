use super::*;

const SEC: u64 = 1_000_000_000;

/// Sends one packet every `gap_ns` for `duration_ns` starting at `start`,
/// returns how many passed.
fn flood(
    state: &mut ClientState,
    limits: &Limits,
    start: u64,
    gap_ns: u64,
    duration_ns: u64,
) -> u64 {
    let mut passed = 0;
    let mut t = start;
    while t < start + duration_ns {
        if take(state, limits, t) {
            passed += 1;
        }
        t += gap_ns;
    }
    passed
}

#[test]
fn burst_passes_back_to_back_then_stops() {
    let limits = Limits::new(100, 20, 0).unwrap();
    let mut s = new_state(&limits, 1_000);
    let passed = (0..1000).filter(|_| take(&mut s, &limits, 1_000)).count();
    assert_eq!(passed, 20);
}

#[test]
fn rate_over_window_is_burst_plus_rate_times_time() {
    let limits = Limits::new(1_000, 50, 0).unwrap();
    let mut s = new_state(&limits, 0);
    // 100k packets/s offered for 2 s against 1000/s + 50 burst.
    let passed = flood(&mut s, &limits, 0, 10_000, 2 * SEC);
    assert!((2049..=2051).contains(&passed), "passed {passed}");
}

#[test]
fn refill_after_idle_is_capped_at_burst() {
    let limits = Limits::new(10, 5, 0).unwrap();
    let mut s = new_state(&limits, 0);
    assert_eq!(flood(&mut s, &limits, 0, 1, 1000), 5);
    // An hour idle refills to the burst, not to 36 000 tokens.
    let later = 3600 * SEC;
    let passed = (0..100).filter(|_| take(&mut s, &limits, later)).count();
    assert_eq!(passed, 5);
}

#[test]
fn partial_refill_is_proportional() {
    let limits = Limits::new(10, 5, 0).unwrap();
    let mut s = new_state(&limits, 0);
    assert_eq!(flood(&mut s, &limits, 0, 1, 1000), 5);
    // 0.35 s at 10/s = 3.5 tokens → 3 packets pass, the half token stays.
    let t = 350_000_000;
    assert_eq!((0..10).filter(|_| take(&mut s, &limits, t)).count(), 3);
    // another 0.05 s completes the fourth token.
    assert!(take(&mut s, &limits, t + 50_000_000));
    assert!(!take(&mut s, &limits, t + 50_000_000));
}

#[test]
fn no_truncation_at_high_packet_rates() {
    // 3 Mpps does not divide 1e9: a whole-nanosecond interval would be
    // 333 ns and let 0.1 % too many through. Fixed point stays exact.
    // (A burst above 1 keeps the bucket below its cap under overload, so no
    // refill is lost to the cap between two arrivals.)
    let limits = Limits::new(3_000_000, 10, 0).unwrap();
    let mut s = new_state(&limits, 0);
    let passed = flood(&mut s, &limits, 0, 7, SEC / 10);
    let expected = 300_010_i64;
    assert!((passed as i64 - expected).abs() <= 3, "passed {passed}");
    // and a rate of one packet per second is not rounded to zero.
    let slow = Limits::new(1, 1, 0).unwrap();
    let mut s = new_state(&slow, 0);
    assert_eq!(flood(&mut s, &slow, 0, SEC / 100, 10 * SEC), 10);
}

#[test]
fn clock_going_backwards_refills_nothing_and_never_locks_out() {
    let limits = Limits::new(10, 2, 0).unwrap();
    let now = 100 * SEC;
    let mut s = new_state(&limits, now);
    assert!(take(&mut s, &limits, now));
    assert!(take(&mut s, &limits, now));
    assert!(!take(&mut s, &limits, now));
    // The clock jumps back 50 s: no tokens appear out of nowhere …
    let back = now - 50 * SEC;
    assert!(!take(&mut s, &limits, back));
    // … and refill resumes from the new reading, not after 50 s.
    assert!(take(&mut s, &limits, back + SEC / 10));
}

#[test]
fn rate_zero_disables_the_rate_limit() {
    let limits = Limits::new(0, 0, 3).unwrap();
    let mut s = new_state(&limits, 0);
    assert!((0..10_000).all(|i| take(&mut s, &limits, i)));
    assert_eq!(limits.max_conns, 3);
}

#[test]
fn invalid_limits_are_rejected() {
    assert_eq!(Limits::new(10, 0, 0), Err(LimitError::BurstZero));
    assert_eq!(
        Limits::new(MAX_RATE + 1, 1, 0),
        Err(LimitError::RateTooHigh)
    );
    assert_eq!(
        Limits::new(1, MAX_BURST + 1, 0),
        Err(LimitError::BurstTooHigh)
    );
    // The extremes themselves work and cannot overflow on refill.
    let l = Limits::new(MAX_RATE, MAX_BURST, 0).unwrap();
    let mut s = new_state(&l, 0);
    s.tokens = 0;
    assert!(take(&mut s, &l, u64::MAX));
    assert!(s.tokens <= l.capacity);
}

#[test]
fn limits_round_trip_to_rate_and_burst() {
    for (rate, burst) in [
        (1, 1),
        (7, 3),
        (1000, 200),
        (3_000_000, 100),
        (MAX_RATE, 10),
    ] {
        let l = Limits::new(rate, burst, 0).unwrap();
        assert_eq!(l.rate_per_sec(), rate);
        assert_eq!(l.burst(), burst);
    }
}
