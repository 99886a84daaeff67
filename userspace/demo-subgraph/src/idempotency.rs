//! Idempotency keys on the GraphQL port, as FraiseQL subgraphs deduplicate
//! saga steps: a `POST` carrying `Idempotency-Key: <key>` executes once per
//! key, and its answer is kept for the TTL (24 h unless
//! `--idempotency-ttl-ms` says otherwise).
//!
//! - The key is the header's value taken as it is: 1 to 255 visible ASCII
//!   characters (`!` to `~`), once. Anything else (empty, longer, a space, a
//!   control or non-ASCII byte, the header repeated) is a 400 with the code
//!   `INVALID_IDEMPOTENCY_KEY`. A client that sends the draft's structured
//!   string form (`"…"`) is fine too: the quotes are part of its key, and it
//!   sends them every time.
//! - The request is fingerprinted by the SHA-256 of its body, byte for byte
//!   (the path, `/graphql` or `/`, and the other headers do not count).
//! - First time: the request executes and its answer (status,
//!   `Content-Type`, body) is stored with the fingerprint.
//! - Same key, same body: the stored answer is sent again without executing
//!   anything, with `Idempotent-Replayed: true` (in the media type of the
//!   first answer, whatever the retry's `Accept` says).
//! - Same key, different body: 409 with the code `IDEMPOTENCY_KEY_REUSED`
//!   (the IETF draft would say 422; FraiseQL's subgraphs say 409, and this
//!   subgraph stands in for them).
//! - Same key while the first request is still executing: 409 with the code
//!   `IDEMPOTENCY_KEY_IN_PROGRESS` and `Retry-After: 1`, at once, rather than
//!   waiting: draft-ietf-httpapi-idempotency-key-header (Error Handling: a
//!   request retried while the original is still being processed SHOULD get
//!   a 409) and Stripe (409 `idempotency_key_in_use`; no result is saved for
//!   a request that conflicts with one executing concurrently) both answer
//!   so. Nothing is stored for it; retried later with the same key, it gets
//!   the first request's answer. (A different body is
//!   `IDEMPOTENCY_KEY_REUSED` here too.)
//! - Only answers of an execution are stored: whatever the GraphQL engine
//!   answered, field errors and "200 with errors" included. A request refused
//!   before it (a bad key, a body that is not a GraphQL request, an injected
//!   fault from `faults.rs`) stores nothing, so its retry executes for real.
//!
//! The idempotency layer stands in front of the faults: a replay or a 409 is
//! answered at once, whatever `hang`, `latency_ms`, `error_rate` or
//! `fail_field` say; a request that claimed its key then meets them like any
//! other, holding the key (so a hung request is "in progress"). Body faults
//! (`stall_body`, `slow_body_ms`) apply to every answer, replays included.
//!
//! Bounds: an answer expires `ttl` after it was stored (expired keys execute
//! again); at most `max_entries` answers (`--idempotency-max-entries`,
//! default [`DEFAULT_MAX_ENTRIES`]) and [`MAX_STORED_BYTES`] of bodies are
//! kept, the oldest evicted first (never the one just stored). Keys whose
//! request is still executing are not evicted and do not count. Per-key
//! counters (`GET /idempotency`) are kept for the first [`MAX_COUNTED_KEYS`]
//! keys seen since start or the last reset; the totals count every key.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, StatusCode},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The request header.
pub const KEY_HEADER: &str = "idempotency-key";
/// The response header marking a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// How long an answer is kept by default, in milliseconds: FraiseQL's 24 h.
pub const DEFAULT_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Answers kept at most, by default.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Bytes of stored bodies kept at most.
pub const MAX_STORED_BYTES: usize = 64 << 20;
/// Keys with their own counters in `GET /idempotency` at most.
pub const MAX_COUNTED_KEYS: usize = 10_000;

/// The SHA-256 of a request body.
pub type Fingerprint = [u8; 32];

pub fn fingerprint(body: &[u8]) -> Fingerprint {
    Sha256::digest(body).into()
}

/// Why an `Idempotency-Key` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("Idempotency-Key is empty")]
    Empty,
    #[error("Idempotency-Key is {0} characters long (at most {MAX_KEY_LEN})")]
    TooLong(usize),
    #[error("Idempotency-Key must be visible ASCII characters only")]
    NotVisibleAscii,
    #[error("Idempotency-Key is sent more than once")]
    Repeated,
}

/// The request's idempotency key: `None` without the header.
pub fn key(headers: &HeaderMap) -> Option<Result<String, KeyError>> {
    let mut values = headers.get_all(KEY_HEADER).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return Some(Err(KeyError::Repeated));
    }
    Some(parse_key(value))
}

fn parse_key(value: &HeaderValue) -> Result<String, KeyError> {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(KeyError::Empty);
    }
    if !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(KeyError::NotVisibleAscii);
    }
    if bytes.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(bytes.len()));
    }
    // Visible ASCII is UTF-8.
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// A stored answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// What to do with a request carrying a valid key.
#[derive(Debug)]
pub enum Decision {
    /// First time: execute, then [`Claim::store`] the answer.
    Execute(Claim),
    /// Seen with the same body: send this again.
    Replay(Arc<Answer>),
    /// Seen with a different body.
    Reused,
    /// The first request with this key is still executing.
    InProgress,
}

/// Counters of one key, or of all (the JSON of `GET /idempotency`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Requests that executed and stored their answer.
    pub executions: u64,
    /// Stored answers sent again.
    pub replays: u64,
    /// Refused: same key, different body (`IDEMPOTENCY_KEY_REUSED`).
    pub conflicts: u64,
    /// Refused: same key while the first was executing
    /// (`IDEMPOTENCY_KEY_IN_PROGRESS`).
    pub in_progress: u64,
    /// Claimed the key, then met an injected fault: nothing stored.
    pub faults: u64,
}

/// The JSON body of `GET /idempotency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub ttl_ms: u64,
    pub max_entries: usize,
    pub max_bytes: usize,
    /// Answers stored now.
    pub stored: usize,
    /// Bytes of their bodies.
    pub stored_bytes: usize,
    /// Keys whose request is executing now.
    pub executing: usize,
    /// Every key's counters added up.
    pub totals: Counts,
    /// Answers dropped because they expired.
    pub expired: u64,
    /// Answers dropped to keep within the bounds.
    pub evicted: u64,
    /// Each key's counters (the first [`MAX_COUNTED_KEYS`] keys).
    pub keys: BTreeMap<String, Counts>,
    /// Keys seen beyond those, counted in `totals` only.
    pub keys_not_listed: u64,
}

/// The keys, their answers and their counters.
#[derive(Debug)]
pub struct IdempotencyStore {
    ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    executing: HashMap<String, Fingerprint>,
    stored: HashMap<String, Stored>,
    /// Stored keys, oldest first (by when they were stored).
    order: VecDeque<(Instant, String)>,
    stored_bytes: usize,
    keys: BTreeMap<String, Counts>,
    keys_not_listed: u64,
    totals: Counts,
    expired: u64,
    evicted: u64,
}

#[derive(Debug)]
struct Stored {
    fingerprint: Fingerprint,
    answer: Arc<Answer>,
    at: Instant,
}

impl IdempotencyStore {
    /// `max_entries` is at least 1.
    pub fn new(ttl: Duration, max_entries: usize) -> Arc<Self> {
        Self::with_max_bytes(ttl, max_entries, MAX_STORED_BYTES)
    }

    fn with_max_bytes(ttl: Duration, max_entries: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            ttl,
            max_entries: max_entries.max(1),
            max_bytes,
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent before it can panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides what a request with `key` and this body fingerprint gets, and
    /// counts it (an execution is counted once it is stored).
    pub fn begin(self: &Arc<Self>, key: String, fingerprint: Fingerprint) -> Decision {
        self.begin_at(key, fingerprint, Instant::now())
    }

    fn begin_at(self: &Arc<Self>, key: String, fingerprint: Fingerprint, now: Instant) -> Decision {
        let mut inner = self.lock();
        inner.expire(now, self.ttl);
        let decision = if let Some(stored) = inner.stored.get(&key) {
            if stored.fingerprint == fingerprint {
                Decision::Replay(stored.answer.clone())
            } else {
                Decision::Reused
            }
        } else if let Some(running) = inner.executing.get(&key) {
            if *running == fingerprint {
                Decision::InProgress
            } else {
                Decision::Reused
            }
        } else {
            inner.executing.insert(key.clone(), fingerprint);
            return Decision::Execute(Claim {
                store: self.clone(),
                key: Some(key),
            });
        };
        inner.count(&key, |c| match decision {
            Decision::Replay(_) => &mut c.replays,
            Decision::Reused => &mut c.conflicts,
            _ => &mut c.in_progress,
        });
        decision
    }

    /// Stores `answer` for a claimed key, evicting the oldest answers beyond
    /// the bounds.
    fn store_at(&self, key: String, answer: Answer, now: Instant) {
        let mut inner = self.lock();
        let Some(fingerprint) = inner.executing.remove(&key) else {
            return;
        };
        inner.count(&key, |c| &mut c.executions);
        inner.stored_bytes += answer.body.len();
        let answer = Arc::new(answer);
        inner.order.push_back((now, key.clone()));
        inner.stored.insert(
            key,
            Stored {
                fingerprint,
                answer,
                at: now,
            },
        );
        while inner.order.len() > 1
            && (inner.stored.len() > self.max_entries || inner.stored_bytes > self.max_bytes)
        {
            if inner.pop_oldest() {
                inner.evicted += 1;
            }
        }
    }

    /// Gives a claimed key up without storing anything.
    fn release(&self, key: &str, faulted: bool) {
        let mut inner = self.lock();
        inner.executing.remove(key);
        if faulted {
            inner.count(key, |c| &mut c.faults);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut inner = self.lock();
        inner.expire(Instant::now(), self.ttl);
        Snapshot {
            ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
            stored: inner.stored.len(),
            stored_bytes: inner.stored_bytes,
            executing: inner.executing.len(),
            totals: inner.totals,
            expired: inner.expired,
            evicted: inner.evicted,
            keys: inner.keys.clone(),
            keys_not_listed: inner.keys_not_listed,
        }
    }

    /// Forgets the stored answers and zeroes the counters. Requests executing
    /// now keep their keys and store their answers when they finish.
    pub fn reset(&self) {
        let mut inner = self.lock();
        let executing = std::mem::take(&mut inner.executing);
        *inner = Inner {
            executing,
            ..Inner::default()
        };
    }
}

impl Inner {
    fn count(&mut self, key: &str, field: impl Fn(&mut Counts) -> &mut u64) {
        *field(&mut self.totals) += 1;
        if let Some(counts) = self.keys.get_mut(key) {
            *field(counts) += 1;
        } else if self.keys.len() < MAX_COUNTED_KEYS {
            let mut counts = Counts::default();
            *field(&mut counts) += 1;
            self.keys.insert(key.to_string(), counts);
        } else {
            self.keys_not_listed += 1;
        }
    }

    /// Drops the answers stored `ttl` or longer ago (the oldest come first).
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < ttl {
                break;
            }
            if self.pop_oldest() {
                self.expired += 1;
            }
        }
    }

    /// Drops the oldest stored answer; false if there was none.
    fn pop_oldest(&mut self) -> bool {
        let Some((at, key)) = self.order.pop_front() else {
            return false;
        };
        match self.stored.get(&key) {
            Some(stored) if stored.at == at => {
                self.stored_bytes -= stored.answer.body.len();
                self.stored.remove(&key);
                true
            }
            _ => false,
        }
    }
}

/// The right to execute a key's request. Store its answer with
/// [`Claim::store`]; dropped without it, the key is free again and nothing is
/// stored.
#[derive(Debug)]
pub struct Claim {
    store: Arc<IdempotencyStore>,
    /// `None` once stored or released.
    key: Option<String>,
}

impl Claim {
    /// Stores the answer of the execution.
    pub fn store(self, answer: Answer) {
        self.store_at(answer, Instant::now());
    }

    fn store_at(mut self, answer: Answer, now: Instant) {
        if let Some(key) = self.key.take() {
            self.store.store_at(key, answer, now);
        }
    }

    /// Gives the key up after an injected fault (counted as such).
    pub fn faulted(mut self) {
        if let Some(key) = self.key.take() {
            self.store.release(&key, true);
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.store.release(&key, false);
        }
    }
}

#[cfg(test)]
mod tests;
