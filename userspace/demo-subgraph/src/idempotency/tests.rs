use std::time::{Duration, Instant};

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, StatusCode},
};

use super::*;

fn answer(body: &'static str) -> Answer {
    Answer {
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static("application/json")),
        body: Bytes::from_static(body.as_bytes()),
    }
}

fn claim(decision: Decision) -> Claim {
    match decision {
        Decision::Execute(claim) => claim,
        other => panic!("expected to execute, got {other:?}"),
    }
}

fn replayed(decision: Decision) -> Arc<Answer> {
    match decision {
        Decision::Replay(answer) => answer,
        other => panic!("expected a replay, got {other:?}"),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn keys_are_one_to_255_visible_ascii_characters() {
    let with = |values: &[&[u8]]| {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(KEY_HEADER, HeaderValue::from_bytes(v).unwrap());
        }
        key(&h)
    };
    assert_eq!(key(&HeaderMap::new()), None);
    assert_eq!(with(&[b"step-1"]), Some(Ok("step-1".into())));
    assert_eq!(
        with(&[b"3f2c:compensate"]),
        Some(Ok("3f2c:compensate".into()))
    );
    assert_eq!(with(&[b"\"quoted\""]), Some(Ok("\"quoted\"".into())));
    let longest = "k".repeat(255);
    assert_eq!(with(&[longest.as_bytes()]), Some(Ok(longest.clone())));
    assert_eq!(
        with(&[format!("{longest}k").as_bytes()]),
        Some(Err(KeyError::TooLong(256)))
    );
    assert_eq!(with(&[b""]), Some(Err(KeyError::Empty)));
    for bad in [&b"a b"[..], b"a\tb", b"caf\xe9"] {
        assert_eq!(
            with(&[bad]),
            Some(Err(KeyError::NotVisibleAscii)),
            "{bad:?}"
        );
    }
    assert_eq!(with(&[b"a", b"a"]), Some(Err(KeyError::Repeated)));
}

#[test]
fn fingerprints_are_the_sha256_of_the_body() {
    // SHA-256("abc"), FIPS 180-2 appendix B.1.
    let hex: String = fingerprint(b"abc")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn a_key_executes_once_then_replays_or_conflicts() {
    let store = IdempotencyStore::new(HOUR, 10);
    let (a, b) = (fingerprint(b"a"), fingerprint(b"b"));
    let first = claim(store.begin("k".into(), a));
    assert!(matches!(store.begin("k".into(), a), Decision::InProgress));
    assert!(matches!(store.begin("k".into(), b), Decision::Reused));
    first.store(answer("first"));
    assert_eq!(replayed(store.begin("k".into(), a)).body, "first");
    assert_eq!(replayed(store.begin("k".into(), a)).body, "first");
    assert!(matches!(store.begin("k".into(), b), Decision::Reused));
    // Another key is another request.
    claim(store.begin("other".into(), b)).store(answer("other"));

    let snap = store.snapshot();
    let k = Counts {
        executions: 1,
        replays: 2,
        conflicts: 2,
        in_progress: 1,
        faults: 0,
    };
    assert_eq!(snap.keys["k"], k);
    assert_eq!(snap.totals.executions, 2);
    assert_eq!((snap.stored, snap.executing), (2, 0));
    assert_eq!(snap.stored_bytes, "first".len() + "other".len());

    store.reset();
    let snap = store.snapshot();
    assert_eq!(
        (snap.stored, snap.totals, snap.keys.len()),
        (0, Counts::default(), 0)
    );
    claim(store.begin("k".into(), b)).store(answer("again"));
}

#[test]
fn a_fault_or_a_dropped_claim_stores_nothing() {
    let store = IdempotencyStore::new(HOUR, 10);
    let a = fingerprint(b"a");
    claim(store.begin("k".into(), a)).faulted();
    drop(claim(store.begin("k".into(), a)));
    claim(store.begin("k".into(), a)).store(answer("done"));
    assert_eq!(replayed(store.begin("k".into(), a)).body, "done");
    let counts = store.snapshot().keys["k"];
    assert_eq!(
        (counts.faults, counts.executions, counts.replays),
        (1, 1, 1)
    );
}

#[test]
fn answers_expire_after_the_ttl() {
    let store = IdempotencyStore::new(Duration::from_secs(10), 10);
    let a = fingerprint(b"a");
    let t0 = Instant::now();
    claim(store.begin_at("k".into(), a, t0)).store_at(answer("one"), t0);
    let later = t0 + Duration::from_secs(9);
    assert_eq!(replayed(store.begin_at("k".into(), a, later)).body, "one");
    let expired = t0 + Duration::from_secs(10);
    claim(store.begin_at("k".into(), a, expired)).store_at(answer("two"), expired);
    assert_eq!(replayed(store.begin_at("k".into(), a, expired)).body, "two");
    let snap = store.snapshot();
    assert_eq!((snap.expired, snap.keys["k"].executions), (1, 2));
}

#[test]
fn the_oldest_answers_are_evicted_beyond_the_bounds() {
    let store = IdempotencyStore::new(HOUR, 2);
    let a = fingerprint(b"a");
    for key in ["k1", "k2", "k3"] {
        claim(store.begin(key.into(), a)).store(answer("12345"));
    }
    let snap = store.snapshot();
    assert_eq!((snap.stored, snap.evicted), (2, 1));
    assert!(matches!(store.begin("k1".into(), a), Decision::Execute(_)));
    assert!(matches!(store.begin("k3".into(), a), Decision::Replay(_)));

    // The byte bound: never the answer just stored.
    let store = IdempotencyStore::with_max_bytes(HOUR, 10, 8);
    claim(store.begin("k1".into(), a)).store(answer("12345"));
    claim(store.begin("k2".into(), a)).store(answer("123456789"));
    let snap = store.snapshot();
    assert_eq!((snap.stored, snap.stored_bytes, snap.evicted), (1, 9, 1));
    assert!(matches!(store.begin("k2".into(), a), Decision::Replay(_)));
}

#[test]
fn executing_keys_survive_a_reset_and_store_after_it() {
    let store = IdempotencyStore::new(HOUR, 10);
    let a = fingerprint(b"a");
    let running = claim(store.begin("k".into(), a));
    store.reset();
    assert!(matches!(store.begin("k".into(), a), Decision::InProgress));
    running.store(answer("late"));
    assert_eq!(replayed(store.begin("k".into(), a)).body, "late");
}
