use super::*;

fn limiter(rpm: u32, burst: u32, max_keys: usize) -> (RateLimiter, Instant) {
    let t0 = Instant::now();
    let cfg = RateLimitConfig {
        requests_per_minute: rpm,
        burst,
        max_keys,
        ..RateLimitConfig::default()
    };
    (RateLimiter::new(&cfg, t0).expect("enabled"), t0)
}

fn subject(s: &str) -> Key {
    Key::Subject(s.to_string())
}

#[test]
fn exactly_burst_plus_rate_times_t_pass() {
    // 600/min = one every 100 ms, burst 5.
    let (l, t0) = limiter(600, 5, 100);
    let a = subject("a");
    let mut passed = 0;
    // 10 s of one request per millisecond.
    for ms in 0..10_000u64 {
        if l.check(&a, t0 + Duration::from_millis(ms)).allowed {
            passed += 1;
        }
    }
    // burst + floor(9.999 s / 100 ms) = 5 + 99.
    assert_eq!(passed, 5 + 99);
    // Another identity is unaffected.
    assert!(
        l.check(&subject("b"), t0 + Duration::from_millis(9_999))
            .allowed
    );
    assert!(
        l.check(&Key::Address("192.0.2.1".parse().unwrap()), t0)
            .allowed
    );
}

#[test]
fn decisions_carry_the_header_values() {
    // 60/min: one per second, burst 3.
    let (l, t0) = limiter(60, 3, 100);
    let k = subject("a");
    let d = l.check(&k, t0);
    assert_eq!(
        (d.allowed, d.limit, d.remaining, d.reset_secs),
        (true, 3, 2, 1)
    );
    assert_eq!(l.check(&k, t0).remaining, 1);
    let d = l.check(&k, t0);
    assert_eq!((d.allowed, d.remaining, d.reset_secs), (true, 0, 3));
    let d = l.check(&k, t0);
    assert_eq!((d.allowed, d.remaining, d.retry_after_secs), (false, 0, 1));
    // Half a second later: still refused, one second to wait (rounded up).
    let d = l.check(&k, t0 + Duration::from_millis(500));
    assert_eq!((d.allowed, d.retry_after_secs), (false, 1));
    // After a second one request passes again.
    assert!(l.check(&k, t0 + Duration::from_secs(1)).allowed);
}

#[test]
fn the_key_table_is_bounded() {
    let (l, t0) = limiter(60, 1, 1000);
    for i in 0..10_000u32 {
        l.check(&subject(&format!("s{i}")), t0);
    }
    assert_eq!(l.len(), 1000);
}

#[test]
fn zero_disables_and_bad_settings_are_named() {
    let off = RateLimitConfig {
        requests_per_minute: 0,
        ..RateLimitConfig::default()
    };
    assert!(RateLimiter::new(&off, Instant::now()).is_none());
    let bad = RateLimitConfig {
        burst: 0,
        ..RateLimitConfig::default()
    };
    assert_eq!(
        bad.validate("rate_limit").unwrap_err().0,
        "rate_limit.burst"
    );
    assert!(RateLimitConfig::default().validate("rate_limit").is_ok());
    let d = RateLimitConfig::default();
    assert_eq!((d.requests_per_minute, d.burst), (1000, 100));
}

#[test]
fn escalation_fires_once_per_window_at_the_threshold() {
    let cfg = EscalationConfig {
        threshold: 3,
        window_secs: 10,
        block_secs: 60,
        max_addresses: 10,
    };
    let e = Escalation::new(&cfg).expect("enabled");
    let t0 = Instant::now();
    let a: IpAddr = "198.51.100.1".parse().unwrap();
    let b: IpAddr = "198.51.100.2".parse().unwrap();
    assert_eq!(e.strike(a, t0), None);
    assert_eq!(e.strike(b, t0), None);
    assert_eq!(e.strike(a, t0), None);
    assert_eq!(e.strike(a, t0), Some(Duration::from_secs(60)));
    assert_eq!(e.strike(a, t0), None, "once per window");
    // Strikes spread wider than the window never add up.
    let c: IpAddr = "198.51.100.3".parse().unwrap();
    for s in 0..10 {
        assert_eq!(e.strike(c, t0 + Duration::from_secs(6 * s)), None);
    }
    // A new window can escalate again.
    let later = t0 + Duration::from_secs(11);
    assert_eq!(e.strike(a, later), None);
    assert_eq!(e.strike(a, later), None);
    assert_eq!(e.strike(a, later), Some(Duration::from_secs(60)));
    let off = EscalationConfig {
        threshold: 0,
        ..EscalationConfig::default()
    };
    assert!(Escalation::new(&off).is_none());
}

#[test]
fn a_batch_counts_every_operation_and_passes_whole_or_not_at_all() {
    // 60/min: one per second, burst 10.
    let (l, t0) = limiter(60, 10, 100);
    let a = subject("a");
    assert!(l.check_n(&a, 4, t0).allowed);
    assert!(l.check_n(&a, 4, t0).allowed);
    let refused = l.check_n(&a, 4, t0);
    assert!(!refused.allowed, "8 of 10 used: 4 more do not fit");
    assert_eq!(refused.remaining, 2);
    assert_eq!(
        refused.retry_after_secs, 2,
        "two more seconds free two more slots"
    );
    assert!(
        l.check_n(&a, 2, t0).allowed,
        "the refused batch took nothing"
    );
    assert!(!l.check(&a, t0).allowed);
    assert!(l.check_n(&a, 2, t0 + Duration::from_secs(2)).allowed);
    assert!(
        !l.check_n(&subject("b"), 11, t0).allowed,
        "a batch larger than the burst never passes"
    );
    assert!(l.check_n(&subject("b"), 10, t0).allowed, "and took nothing");
}

fn cfg(rpm: u32, burst: u32) -> RateLimitConfig {
    RateLimitConfig {
        requests_per_minute: rpm,
        burst,
        ..RateLimitConfig::default()
    }
}

#[test]
fn a_changed_limit_keeps_each_identitys_share_of_its_burst() {
    // 60/min, burst 4: `a` spends its whole burst, `b` half of it.
    let (l, t0) = limiter(60, 4, 100);
    let (a, b) = (subject("a"), subject("b"));
    for _ in 0..4 {
        assert!(l.check(&a, t0).allowed);
    }
    assert!(!l.check(&a, t0).allowed);
    assert!(l.check(&b, t0).allowed && l.check(&b, t0).allowed);

    // Looser (6000/min, burst 100): `a` is let through at once.
    let loose = l.reconfigured(&cfg(6000, 100), t0).expect("enabled");
    assert!(loose.check(&a, t0).allowed);

    // Stricter (6/min, burst 4): the debt in requests is kept — `a` still
    // has none left, `b` has its other half.
    let strict = l.reconfigured(&cfg(6, 4), t0).expect("enabled");
    assert!(!strict.check(&a, t0).allowed);
    assert!(strict.check(&b, t0).allowed && strict.check(&b, t0).allowed);
    assert!(!strict.check(&b, t0).allowed);
    // An identity it has never seen gets the full burst.
    assert_eq!(strict.check(&subject("c"), t0).remaining, 3);

    // Off.
    assert!(l.reconfigured(&cfg(0, 4), t0).is_none());
}

#[test]
fn rate_limits_keep_an_unchanged_limiter_and_its_state() {
    let t0 = Instant::now();
    let own = RateLimitOverride {
        requests_per_minute: 60,
        burst: 1,
        global: None,
    };
    let set = RateLimits::new(&cfg(60, 1), [("users", None), ("orders", Some(own))], t0);
    let a = subject("a");
    assert!(set.for_subgraph("users").unwrap().check(&a, t0).allowed);
    assert!(set.for_subgraph("orders").unwrap().check(&a, t0).allowed);
    // Only the global limit changes: `orders` keeps its limiter as it was.
    let next = set.update(&cfg(120, 1), [("users", None), ("orders", Some(own))]);
    assert!(!next.for_subgraph("orders").unwrap().check(&a, t0).allowed);
    assert_eq!(next.global().requests_per_minute, 120);
    let described = next.describe(["orders", "users"]);
    assert_eq!(
        described
            .iter()
            .map(|d| (d.subgraph.as_str(), d.requests_per_minute, d.overridden))
            .collect::<Vec<_>>(),
        [("orders", 60, true), ("users", 120, false)]
    );
    // Turned off for one subgraph only.
    let off = next.update(
        &cfg(120, 1),
        [
            ("users", None),
            (
                "orders",
                Some(RateLimitOverride {
                    requests_per_minute: 0,
                    burst: 1,
                    global: None,
                }),
            ),
        ],
    );
    assert!(off.for_subgraph("orders").is_none());
    assert!(off.for_subgraph("users").is_some());
}

#[test]
fn each_limit_is_global_as_configured_and_subgraphs_inherit_the_switch() {
    let t0 = Instant::now();
    let own = |rpm, global| RateLimitOverride {
        requests_per_minute: rpm,
        burst: 5,
        global,
    };
    let mut base = cfg(60, 10);
    base.global = true;
    let set = RateLimits::new(
        &base,
        [
            ("users", None),
            ("orders", Some(own(120, None))),
            ("search", Some(own(600, Some(false)))),
            ("billing", Some(own(0, Some(true)))),
        ],
        t0,
    );
    // The default limit and a subgraph that inherits the switch: global.
    assert_eq!(
        set.global_params(Some("users")),
        Some(("default".into(), 60, 10))
    );
    assert_eq!(set.global_params(None), Some(("default".into(), 60, 10)));
    assert_eq!(
        set.global_params(Some("orders")),
        Some(("orders".into(), 120, 5))
    );
    // Marked local, or off: no global check.
    assert_eq!(set.global_params(Some("search")), None);
    assert_eq!(set.global_params(Some("billing")), None);
    // The other way round: only one subgraph's limit is global.
    base.global = false;
    let set = RateLimits::new(
        &base,
        [("users", None), ("payments", Some(own(30, Some(true))))],
        t0,
    );
    assert_eq!(set.global_params(Some("users")), None);
    assert_eq!(
        set.global_params(Some("payments")),
        Some(("payments".into(), 30, 5))
    );
}
