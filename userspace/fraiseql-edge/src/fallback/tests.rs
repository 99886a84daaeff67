use std::sync::Arc;

use super::*;
use crate::config::Config;

fn limiter(extra: &str) -> Arc<UserLimiter> {
    limiter_with("rate = 10\nburst = 3\n", extra)
}

fn limiter_with(limits: &str, extra: &str) -> Arc<UserLimiter> {
    let cfg = Config::from_toml(&format!(
        "[kernel]\ninterfaces = [\"lo\"]\nmax_conns = 2\n{limits}{extra}"
    ))
    .unwrap();
    Arc::new(UserLimiter::new(&cfg.kernel))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn same_bucket_math_as_the_kernel() {
    let l = limiter("");
    let a = ip("192.0.2.1");
    let passed = (0..10)
        .filter(|_| l.admit_at(a, 1_000, false).is_ok())
        .count();
    assert_eq!(passed, 3);
    assert_eq!(l.admit_at(a, 1_000, false), Err(Refusal::Rate));
    // 0.1 s at 10/s: one more, and only one.
    assert!(l.admit_at(a, 101_000_000, false).is_ok());
    assert_eq!(l.admit_at(a, 101_000_000, false), Err(Refusal::Rate));
    // Another client is unaffected.
    assert!(l.admit_at(ip("192.0.2.2"), 1_000, false).is_ok());
}

#[test]
fn connection_cap_and_release() {
    let l = limiter_with("rate = 0\n", "");
    let a = ip("198.51.100.7");
    let c1 = l.admit_connection(a).unwrap();
    let _c2 = l.admit_connection(a).unwrap();
    assert_eq!(l.admit_connection(a).err(), Some(Refusal::Conn));
    assert_eq!(l.conns(a), 2);
    drop(c1);
    assert_eq!(l.conns(a), 1);
    assert!(l.admit_connection(a).is_ok());
}

#[test]
fn overrides_and_blocks() {
    let l = limiter(
        "[[kernel.overrides]]\ncidr = \"10.0.0.0/8\"\naction = \"deny\"\n\
         [[kernel.overrides]]\ncidr = \"10.1.0.0/16\"\naction = \"allow\"\n",
    );
    assert_eq!(l.admit_at(ip("10.2.0.1"), 0, false), Err(Refusal::Deny));
    // Longest prefix wins: allow bypasses the tiny limit.
    assert!((0..100).all(|_| l.admit_at(ip("10.1.0.1"), 0, false).is_ok()));
    let b = ip("203.0.113.9");
    l.block_until(b, 5_000);
    assert_eq!(l.admit_at(b, 4_999, false), Err(Refusal::Block));
    assert!(l.admit_at(b, 5_000, false).is_ok());
}
