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
    let mut s = new_state(1_000);
    let passed = (0..1000).filter(|_| take(&mut s, &limits, 1_000)).count();
    assert_eq!(passed, 20);
}

#[test]
fn rate_over_window_is_burst_plus_rate_times_time() {
    let limits = Limits::new(1_000, 50, 0).unwrap();
    let mut s = new_state(0);
    // 100k packets/s offered for 2 s against 1000/s + 50 burst.
    let passed = flood(&mut s, &limits, 0, 10_000, 2 * SEC);
    assert!((2049..=2051).contains(&passed), "passed {passed}");
}

#[test]
fn refill_after_idle_is_capped_at_burst() {
    let limits = Limits::new(10, 5, 0).unwrap();
    let mut s = new_state(0);
    assert_eq!(flood(&mut s, &limits, 0, 1, 1000), 5);
    // An hour idle refills to the burst, not to 36 000 tokens.
    let later = 3600 * SEC;
    let passed = (0..100).filter(|_| take(&mut s, &limits, later)).count();
    assert_eq!(passed, 5);
}

#[test]
fn partial_refill_is_proportional() {
    let limits = Limits::new(10, 5, 0).unwrap();
    let mut s = new_state(0);
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
    // 333 ns and let 0.1 % too many through. Fixed point stays within 4 ppm.
    // (A burst above 1 keeps the bucket below its cap under overload, so no
    // refill is lost to the cap between two arrivals.)
    let limits = Limits::new(3_000_000, 10, 0).unwrap();
    let mut s = new_state(0);
    let passed = flood(&mut s, &limits, 0, 7, SEC / 10);
    let expected = 300_010_i64;
    assert!((passed as i64 - expected).abs() <= 3, "passed {passed}");
    // and a rate of one packet per second is not rounded to zero.
    let slow = Limits::new(1, 1, 0).unwrap();
    let mut s = new_state(0);
    assert_eq!(flood(&mut s, &slow, 0, SEC / 100, 10 * SEC), 10);
}

#[test]
fn clock_going_backwards_refills_nothing_and_never_locks_out() {
    let limits = Limits::new(10, 2, 0).unwrap();
    let now = 100 * SEC;
    let mut s = new_state(now);
    assert!(take(&mut s, &limits, now));
    assert!(take(&mut s, &limits, now));
    assert!(!take(&mut s, &limits, now));
    // The clock jumps back 50 s: no tokens appear out of nowhere …
    let back = now - 50 * SEC;
    assert!(!take(&mut s, &limits, back));
    // … and refill resumes from the new reading, not after 50 s.
    assert!(take(&mut s, &limits, back + SEC / 10));
    assert!(!take(&mut s, &limits, back + SEC / 10));
}

#[test]
fn the_clock_may_wrap_the_fixed_point() {
    // 2^56 ns of uptime overflows the fixed point; differences still work.
    let limits = Limits::new(10, 2, 0).unwrap();
    let start = (1u64 << 56) - SEC / 20;
    let mut s = new_state(start);
    assert!(take(&mut s, &limits, start));
    assert!(take(&mut s, &limits, start));
    assert!(!take(&mut s, &limits, start));
    // 0.1 s later the clock has wrapped in fixed point: one more packet.
    let later = start + SEC / 10;
    assert!(fixed(later) < fixed(start));
    assert!(take(&mut s, &limits, later));
    assert!(!take(&mut s, &limits, later));
    // An idle hour later the burst is back, and only the burst.
    let idle = later + 3600 * SEC;
    assert_eq!((0..10).filter(|_| take(&mut s, &limits, idle)).count(), 2);
}

#[test]
fn admit_never_moves_the_schedule_on_a_drop() {
    let limits = Limits::new(1000, 3, 0).unwrap();
    let now = fixed(5 * SEC);
    let mut tat = now;
    for _ in 0..3 {
        let (next, pass) = admit(tat, &limits, now);
        assert!(pass, "within the burst");
        tat = next;
    }
    assert_eq!(admit(tat, &limits, now), (tat, false));
    assert_eq!(tat, now + 3 * limits.interval);
}

#[test]
fn rate_zero_disables_the_rate_limit() {
    let limits = Limits::new(0, 0, 3).unwrap();
    let mut s = new_state(0);
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
    let slow = Limits::new(1, MAX_BURST, 0).unwrap();
    assert!(slow.window < 1 << 62, "window {}", slow.window);
    let mut s = new_state(0);
    assert!(take(&mut s, &l, u64::MAX));
    let mut s = new_state(u64::MAX);
    assert_eq!(
        (0..10).filter(|_| take(&mut s, &slow, u64::MAX)).count(),
        10
    );
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
        // The interval is rounded down to 1/256 ns: the effective rate is
        // never below the configured one and at most 4 ppm above it.
        let effective = l.rate_per_sec();
        assert!(effective >= rate, "{rate}/s became {effective}/s");
        assert!(
            effective - rate <= rate / 250_000,
            "{rate}/s became {effective}/s"
        );
        assert_eq!(l.burst(), burst);
    }
}
