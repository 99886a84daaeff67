use std::sync::Arc;

use super::*;
use crate::config::Config;

fn limiter(extra: &str) -> Arc<UserLimiter> {
    limiter_with("rate = 10\nburst = 3\n", extra)
}

fn limiter_with(limits: &str, extra: &str) -> Arc<UserLimiter> {
    small_limiter(limits, extra, Capacity::default())
}

fn small_limiter(limits: &str, extra: &str, capacity: Capacity) -> Arc<UserLimiter> {
    let cfg = Config::from_toml(&format!(
        "[kernel]\ninterfaces = [\"lo\"]\nmax_conns = 2\n{limits}{extra}"
    ))
    .unwrap();
    Arc::new(UserLimiter::with_capacity(&cfg.kernel, capacity))
}

fn capacity(clients: usize, conn_clients: usize, blocks: usize) -> Capacity {
    Capacity {
        clients,
        conn_clients,
        blocks,
    }
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
    l.block_until(b, 5_000).unwrap();
    assert_eq!(l.admit_at(b, 4_999, false), Err(Refusal::Block));
    assert!(l.admit_at(b, 5_000, false).is_ok());
}

#[test]
fn capacities_default_to_the_kernel_maps() {
    use fraiseql_edge_common::{MAX_BLOCKS, MAX_CLIENTS, MAX_CONN_CLIENTS};
    assert_eq!(
        Capacity::default(),
        capacity(
            MAX_CLIENTS as usize,
            MAX_CONN_CLIENTS as usize,
            MAX_BLOCKS as usize
        )
    );
}

#[test]
fn client_table_is_bounded_and_evicts_the_least_recently_seen() {
    // burst 3, no refill worth speaking of within the test's nanoseconds.
    let l = small_limiter("rate = 1\nburst = 3\n", "", capacity(3, 16, 16));
    let [a, b, c, d] = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"].map(ip);
    for client in [a, b, c] {
        assert!(l.admit_at(client, 0, false).is_ok());
    }
    // a spends its bucket; b is now the least recently seen.
    while l.admit_at(a, 1, false).is_ok() {}
    assert_eq!(l.stats().evicted, 0);
    assert!(
        l.admit_at(d, 2, false).is_ok(),
        "a new client always gets in"
    );
    let s = l.stats();
    assert_eq!((s.clients, s.evicted), (3, 1));
    assert!(!l.tracks(b), "the least recently seen client was evicted");
    assert!(l.tracks(a) && l.tracks(c) && l.tracks(d));
    // The recently seen client keeps its (empty) bucket: no reset by churn.
    assert_eq!(l.admit_at(a, 3, false), Err(Refusal::Rate));

    // A flood of new addresses never grows the table.
    for i in 0..1000u32 {
        let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        assert!(l.admit_at(addr, 4, false).is_ok());
        assert!(l.stats().clients <= 3);
    }
    assert_eq!(l.stats().evicted, 1 + 1000);
    // An evicted client comes back with a full bucket, as in the kernel.
    assert_eq!(
        (0..10).filter(|_| l.admit_at(b, 5, false).is_ok()).count(),
        3
    );
}

#[test]
fn live_connection_counts_are_never_evicted() {
    let l = small_limiter("rate = 0\n", "", capacity(1, 16, 16));
    let a = ip("198.51.100.1");
    let held = [
        l.admit_connection(a).unwrap(),
        l.admit_connection(a).unwrap(),
    ];
    // Many other clients churn the one-entry client table.
    for i in 0..100u32 {
        let other = IpAddr::from(std::net::Ipv4Addr::from(0xc633_6500 + 10 + i));
        drop(l.admit_connection(other).unwrap());
    }
    assert!(l.stats().evicted >= 100);
    assert_eq!(l.conns(a), 2, "the count survived every eviction");
    assert_eq!(
        l.admit_connection(a).err(),
        Some(Refusal::Conn),
        "the cap still holds"
    );
    drop(held);
    assert_eq!((l.conns(a), l.stats().conn_clients), (0, 0));
}

#[test]
fn full_connection_table_refuses_new_capped_clients_and_counts_it() {
    let l = small_limiter(
        "rate = 0\n",
        "[[kernel.overrides]]\ncidr = \"10.9.0.0/16\"\naction = \"allow\"\n",
        capacity(16, 2, 16),
    );
    let [a, b, c] = ["203.0.113.1", "203.0.113.2", "203.0.113.3"].map(ip);
    let _a1 = l.admit_connection(a).unwrap();
    let b1 = l.admit_connection(b).unwrap();
    assert_eq!(l.admit_connection(c).err(), Some(Refusal::ConnTableFull));
    assert_eq!(l.admit_connection(c).err(), Some(Refusal::ConnTableFull));
    assert_eq!(l.stats().dropped_conn_table_full, 2);
    assert_eq!(l.conns(c), 0);
    // Clients already in the table keep their cap, not a refusal.
    let _a2 = l.admit_connection(a).unwrap();
    assert_eq!(l.admit_connection(a).err(), Some(Refusal::Conn));
    // An allow-listed client has no cap to enforce: admitted, uncounted.
    let allowed = ip("10.9.1.1");
    let guard = l.admit_connection(allowed).unwrap();
    assert_eq!((l.conns(allowed), l.stats().conn_clients), (0, 2));
    drop(guard);
    assert_eq!(l.conns(a), 2, "an uncounted guard uncounts nothing");
    // A slot freed is a slot for the next client.
    drop(b1);
    let _c1 = l.admit_connection(c).unwrap();
    assert_eq!(l.conns(c), 1);
}

#[test]
fn blocks_are_bounded_listed_and_swept_when_expired() {
    let l = small_limiter("rate = 0\n", "", capacity(16, 16, 2));
    let [a, b, c] = ["192.0.2.10", "192.0.2.11", "192.0.2.12"].map(ip);
    let forever = l.block_until(a, u64::MAX).unwrap();
    assert_eq!(forever.expires_in_secs, None);
    l.block_until(b, 3_000_000_000).unwrap();
    assert_eq!(l.block_until(c, u64::MAX), Err(BlockListFull(2)));
    // Re-blocking a listed client replaces its entry, full or not.
    l.block_until(b, 2_000_000_000).unwrap();
    let listed = l.blocks_at(500_000_000);
    assert_eq!(
        listed,
        vec![
            BlockInfo {
                client: a,
                expires_in_secs: None
            },
            BlockInfo {
                client: b,
                expires_in_secs: Some(2)
            },
        ]
    );
    assert_eq!(l.admit_at(b, 1_999_999_999, false), Err(Refusal::Block));
    assert!(l.expire_blocks_at(1_999_999_999).is_empty());
    // Expired: no longer enforced, then deleted by the sweep.
    assert!(l.admit_at(b, 2_000_000_000, false).is_ok());
    assert_eq!(l.expire_blocks_at(2_000_000_000), vec![b]);
    assert_eq!(l.stats().blocks, 1);
    assert!(l.block_until(c, u64::MAX).is_ok(), "the swept slot is free");
    assert!(l.unblock(a));
    assert!(!l.unblock(a));
    assert!(l.admit_at(a, 0, false).is_ok());
    assert_eq!(l.expire_blocks_at(u64::MAX - 1), Vec::<IpAddr>::new());
}

#[test]
fn verdicts_are_counted() {
    let l = limiter("[[kernel.overrides]]\ncidr = \"10.0.0.0/8\"\naction = \"deny\"\n");
    let a = ip("192.0.2.1");
    for _ in 0..5 {
        let _ = l.admit_at(a, 0, false);
    }
    let _ = l.admit_at(ip("10.1.1.1"), 0, false);
    l.block_until(ip("192.0.2.9"), u64::MAX).unwrap();
    let _ = l.admit_at(ip("192.0.2.9"), 0, false);
    let s = l.stats();
    assert_eq!(
        (s.passed, s.dropped_rate, s.dropped_deny, s.dropped_block),
        (3, 2, 1, 1)
    );
}

/// The override vectors the XDP program's tests use too
/// (`tests/vectors/overrides.json`): the same source address gets the same
/// override in the kernel and in degraded mode.
#[test]
fn override_vectors_shared_with_the_kernel() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../../../../tests/vectors/overrides.json")).unwrap();
    for case in vectors["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        for check in case["checks"].as_array().unwrap() {
            // A fresh limiter per address: earlier packets of the same /64
            // must not decide this one.
            let l = limiter_with("rate = 1\nburst = 3\n", case["kernel"].as_str().unwrap());
            let src = ip(check["src"].as_str().unwrap());
            let passed = (0..5)
                .filter(|_| l.admit_at(src, 1_000, false).is_ok())
                .count();
            let want = match check["expect"].as_str().unwrap() {
                "allow" => 5,
                "default" => 3,
                "limit" => 1,
                "deny" => 0,
                other => panic!("unknown expectation {other}"),
            };
            assert_eq!(passed, want, "{name}: {src}");
        }
    }
}
