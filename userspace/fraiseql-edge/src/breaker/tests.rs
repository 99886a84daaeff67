use std::time::{Duration, Instant};

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn run(b: &Arc<Breaker>, now: Instant, success: bool) -> Option<Transition> {
    let (permit, _) = b.admit(now).expect("admitted");
    b.record(permit, success, now)
}

#[test]
fn opens_after_consecutive_failures_and_refuses_fast() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    for _ in 0..4 {
        assert_eq!(run(&b, t0, false), None);
    }
    assert_eq!(
        run(&b, t0, false),
        Some(Transition {
            from: State::Closed,
            to: State::Open
        })
    );
    assert_eq!(b.state(), State::Open);
    assert!(b.admit(t0 + ms(4_999)).is_err());
}

#[test]
fn a_success_resets_the_consecutive_count() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    for i in 0..12 {
        // fail, fail, fail, fail, ok, …: never 5 in a row, and the ratio
        // needs 20 requests first.
        run(&b, t0, i % 5 == 4);
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn opens_on_failure_ratio_over_the_window_only_with_enough_requests() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    // 19 requests, alternating: 50 % failures but below min_requests.
    for i in 0..19 {
        assert_eq!(run(&b, t0 + ms(i * 100), i % 2 == 0), None);
    }
    assert_eq!(b.state(), State::Closed);
    // The 20th is a failure: 10/20 = 50 % → open.
    assert_eq!(
        run(&b, t0 + ms(1_950), false),
        Some(Transition {
            from: State::Closed,
            to: State::Open
        })
    );
}

#[test]
fn old_outcomes_leave_the_window() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    // 18 requests, a quarter failing, never 5 in a row: stays closed.
    for i in 0..18 {
        run(&b, t0, i % 4 != 0);
    }
    // 11 s later the earlier failures are outside the 10 s window: 19
    // successes and one failure is 5 %, far below the threshold. Had the old
    // second still counted, 6/38 would still not trip — so also check that
    // a burst of failures after the window needs the full min_requests.
    for _ in 0..19 {
        run(&b, t0 + Duration::from_secs(11), true);
    }
    assert_eq!(run(&b, t0 + Duration::from_secs(11), false), None);
    assert_eq!(b.state(), State::Closed);
    // 21 s: fresh window again; 4 failures + 4 successes is 50 % of 8 < 20.
    let t2 = t0 + Duration::from_secs(21);
    for i in 0..8 {
        run(&b, t2, i % 2 == 0);
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn half_open_admits_one_probe_and_closes_on_success() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    for _ in 0..5 {
        run(&b, t0, false);
    }
    let later = t0 + ms(5_000);
    let (probe, tr) = b.admit(later).expect("probe admitted");
    assert_eq!(
        tr,
        Some(Transition {
            from: State::Open,
            to: State::HalfOpen
        })
    );
    assert!(b.admit(later).is_err(), "only one probe at a time");
    assert_eq!(
        b.record(probe, true, later),
        Some(Transition {
            from: State::HalfOpen,
            to: State::Closed
        })
    );
    assert!(b.admit(later).is_ok());
}

#[test]
fn failed_probe_reopens_and_cancelled_probe_frees_the_slot() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    for _ in 0..5 {
        run(&b, t0, false);
    }
    let t1 = t0 + ms(5_000);
    let (probe, _) = b.admit(t1).unwrap();
    drop(probe); // cancelled: no outcome
    let (probe, _) = b.admit(t1).expect("slot was freed");
    assert_eq!(
        b.record(probe, false, t1),
        Some(Transition {
            from: State::HalfOpen,
            to: State::Open
        })
    );
    assert!(b.admit(t1 + ms(4_000)).is_err());
    assert!(b.admit(t1 + ms(5_000)).is_ok());
}

#[test]
fn operator_overrides() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    b.force(Force::Open);
    assert_eq!(b.state(), State::Open);
    assert!(b.admit(t0).is_err());
    b.force(Force::Closed);
    for _ in 0..50 {
        run(&b, t0, false);
    }
    assert_eq!(b.state(), State::Closed);
    b.force(Force::None);
    for _ in 0..5 {
        run(&b, t0, false);
    }
    assert_eq!(b.state(), State::Open);
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert!(b.admit(t0).is_ok());
}

// A permit belongs to the period it was admitted in: its outcome, or its
// drop, never decides a later period.

fn two_probes() -> BreakerConfig {
    BreakerConfig {
        half_open_probes: 2,
        ..BreakerConfig::default()
    }
}

fn trip(b: &Arc<Breaker>, now: Instant) {
    for _ in 0..5 {
        run(b, now, false);
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn a_late_success_from_an_earlier_half_open_period_does_not_close() {
    let t0 = Instant::now();
    let b = Breaker::new(two_probes(), t0);
    trip(&b, t0);
    let t1 = t0 + ms(5_000);
    let (late, _) = b.admit(t1).expect("first probe of period 1");
    let (other, _) = b.admit(t1).expect("second probe of period 1");
    assert!(b.record(other, false, t1).is_some(), "re-opened");
    let t2 = t1 + ms(5_000);
    let (probe, tr) = b.admit(t2).expect("first probe of period 2");
    assert_eq!(tr.map(|t| t.to), Some(State::HalfOpen));
    assert_eq!(b.record(late, true, t2), None);
    assert_eq!(b.state(), State::HalfOpen);
    // Nor did it free a slot: period 2 still has exactly one more.
    let (_second, _) = b.admit(t2).expect("second probe of period 2");
    assert!(b.admit(t2).is_err(), "period 2 has two probe slots");
    drop(probe);
}

#[test]
fn a_late_failure_from_an_earlier_half_open_period_does_not_reopen() {
    let t0 = Instant::now();
    let b = Breaker::new(two_probes(), t0);
    trip(&b, t0);
    let t1 = t0 + ms(5_000);
    let (late, _) = b.admit(t1).unwrap();
    let (other, _) = b.admit(t1).unwrap();
    b.record(other, false, t1);
    let t2 = t1 + ms(5_000);
    let (probe, _) = b.admit(t2).unwrap();
    assert_eq!(b.record(late, false, t2), None);
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(
        b.record(probe, true, t2),
        Some(Transition {
            from: State::HalfOpen,
            to: State::Closed
        })
    );
}

#[test]
fn dropping_a_probe_of_an_earlier_period_frees_no_slot() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    trip(&b, t0);
    let t1 = t0 + ms(5_000);
    let (stale, _) = b.admit(t1).unwrap();
    b.reset();
    trip(&b, t1);
    let t2 = t1 + ms(5_000);
    let (_probe, _) = b.admit(t2).expect("the one probe of the new period");
    drop(stale);
    assert!(b.admit(t2).is_err(), "still one probe at a time");
}

#[test]
fn an_outcome_from_before_a_reset_does_not_count_in_the_fresh_window() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    let (before, _) = b.admit(t0).unwrap();
    b.reset();
    for _ in 0..4 {
        run(&b, t0, false);
    }
    // Four failures in a row since the reset; the fifth is from before it.
    assert_eq!(b.record(before, false, t0), None);
    assert_eq!(b.state(), State::Closed);
    assert!(
        run(&b, t0, false).is_some(),
        "the fifth fresh failure opens"
    );
}

#[test]
fn an_outcome_from_before_the_breaker_last_closed_does_not_count() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    let (before, _) = b.admit(t0).unwrap();
    trip(&b, t0);
    let t1 = t0 + ms(5_000);
    assert_eq!(run(&b, t1, true).map(|t| t.to), Some(State::Closed));
    for _ in 0..4 {
        run(&b, t1, false);
    }
    assert_eq!(b.record(before, false, t1), None);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn an_outcome_admitted_under_an_override_does_not_count_after_it() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    b.force(Force::Closed);
    let (forced, _) = b.admit(t0).unwrap();
    b.force(Force::None);
    for _ in 0..4 {
        run(&b, t0, false);
    }
    assert_eq!(b.record(forced, false, t0), None);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn an_override_ends_the_half_open_period() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    trip(&b, t0);
    let t1 = t0 + ms(5_000);
    let (stale, _) = b.admit(t1).unwrap();
    b.force(Force::Open);
    b.force(Force::None);
    assert_eq!(b.state(), State::HalfOpen);
    // A fresh period: its one slot is free, and only its probe decides.
    let (probe, _) = b.admit(t1).expect("the new period's probe");
    assert_eq!(b.record(stale, true, t1), None);
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.record(probe, false, t1).map(|t| t.to), Some(State::Open));
}

#[test]
fn outcomes_admitted_in_the_same_closed_period_all_count() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerConfig::default(), t0);
    let permits: Vec<Permit> = (0..5).map(|_| b.admit(t0).unwrap().0).collect();
    let transitions: Vec<_> = permits
        .into_iter()
        .map(|p| b.record(p, false, t0 + ms(300)))
        .collect();
    assert_eq!(transitions[..4], [None; 4]);
    assert_eq!(transitions[4].map(|t| t.to), Some(State::Open));
}
