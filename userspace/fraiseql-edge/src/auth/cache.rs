//! Verified tokens, remembered by hash so a token seen again skips the
//! signature check (an RSA or ECDSA verification costs far more than a hash).
//!
//! An entry holds the [`Identity`] and the token's `exp`, and is refused from
//! `exp` on (the leeway is not extended to cached entries), so it never
//! outlives the token. Tokens without `exp` are not cached. Each entry also
//! records the key epoch it was verified under: when a key set changes (a
//! rotated or revoked key), older entries no longer count.

use std::{num::NonZeroUsize, sync::Mutex};

use lru::LruCache;
use sha2::{Digest, Sha256};

use super::Identity;

struct Entry {
    identity: Identity,
    expires_at: u64,
    epoch: u64,
}

/// A bounded LRU of verified tokens; size 0 disables it.
pub struct TokenCache {
    entries: Option<Mutex<LruCache<[u8; 32], Entry>>>,
}

fn key(token: &str) -> [u8; 32] {
    let digest = Sha256::digest(token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(&digest);
    key
}

impl TokenCache {
    /// A cache of at most `size` tokens.
    pub fn new(size: usize) -> Self {
        Self {
            entries: NonZeroUsize::new(size).map(|n| Mutex::new(LruCache::new(n))),
        }
    }

    /// The identity of a token verified before, if still valid at `now`
    /// (Unix seconds) and verified under key epoch `epoch`.
    pub fn get(&self, token: &str, now: u64, epoch: u64) -> Option<Identity> {
        let entries = self.entries.as_ref()?;
        let key = key(token);
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&key) {
            Some(e) if now < e.expires_at && e.epoch == epoch => Some(e.identity.clone()),
            Some(_) => {
                entries.pop(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until `expires_at` (its `exp`).
    pub fn insert(&self, token: &str, identity: Identity, expires_at: u64, epoch: u64) {
        if let Some(entries) = &self.entries {
            let entry = Entry {
                identity,
                expires_at,
                epoch,
            };
            entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(key(token), entry);
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.entries
            .as_ref()
            .map_or(0, |e| e.lock().unwrap_or_else(|p| p.into_inner()).len())
    }

    /// True when no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
