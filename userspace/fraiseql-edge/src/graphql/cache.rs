//! A bounded cache of checked documents.
//!
//! The key is a 128-bit hash of (document, operation name, schema identity,
//! limits) under two independently and randomly keyed SipHash hashers, so a
//! client can neither predict nor aim for a collision; the value is the
//! outcome of [`check`](super::check) — a refusal is cached too, so a
//! repeated hostile document is refused without being parsed again. Limits
//! are part of the key: a reload of the limits never serves an outcome
//! decided under the old ones.

use std::{
    hash::{BuildHasher, Hash, Hasher, RandomState},
    num::NonZeroUsize,
    sync::{Mutex, PoisonError},
};

use lru::LruCache;
use prometheus::IntCounter;

use super::{Checked, GraphqlError, GraphqlLimits, SubgraphSchema, check_for};

type Outcome = Result<Checked, GraphqlError>;

/// Outcomes of [`check`](super::check), least recently used evicted first.
pub struct DocumentCache {
    entries: Mutex<LruCache<u128, Outcome>>,
    keys: (RandomState, RandomState),
    hits: IntCounter,
    misses: IntCounter,
}

impl DocumentCache {
    /// A cache holding at most `capacity` outcomes.
    pub fn new(capacity: NonZeroUsize) -> Self {
        let counter = || IntCounter::new("document_cache", "lookups").expect("a valid name");
        Self::with_counters(capacity, counter(), counter())
    }

    /// A cache counting its hits and misses in the given (registered)
    /// counters.
    pub fn with_counters(capacity: NonZeroUsize, hits: IntCounter, misses: IntCounter) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            keys: (RandomState::new(), RandomState::new()),
            hits,
            misses,
        }
    }

    /// [`check`](super::check), answered from the cache when the same
    /// document, operation name, schema and limits were checked before.
    ///
    /// Documents over `max_document_bytes` are refused before hashing and
    /// are not cached (nor counted).
    pub fn check(
        &self,
        doc: &str,
        operation_name: Option<&str>,
        schema: Option<&SubgraphSchema>,
        limits: &GraphqlLimits,
    ) -> Outcome {
        if doc.len() > limits.max_document_bytes {
            return Err(GraphqlError::DocumentTooLarge {
                limit: limits.max_document_bytes,
                measured: doc.len(),
            });
        }
        let key = self.key(doc, operation_name, schema.map(SubgraphSchema::id), limits);
        if let Some(outcome) = self.lock().get(&key) {
            self.hits.inc();
            return outcome.clone();
        }
        self.misses.inc();
        // Checked outside the lock: a slow document never blocks others.
        let outcome = check_for(doc, operation_name, schema, limits);
        self.lock().put(key, outcome.clone());
        outcome
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// Lookups that had to check the document.
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    /// Outcomes held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key(
        &self,
        doc: &str,
        operation_name: Option<&str>,
        schema_id: Option<u64>,
        limits: &GraphqlLimits,
    ) -> u128 {
        let hash = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            doc.hash(&mut hasher);
            operation_name.hash(&mut hasher);
            schema_id.hash(&mut hasher);
            limits.hash(&mut hasher);
            hasher.finish()
        };
        (u128::from(hash(&self.keys.0)) << 64) | u128::from(hash(&self.keys.1))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<u128, Outcome>> {
        // The cache holds no invariant a panic could break.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> DocumentCache {
        DocumentCache::new(NonZeroUsize::new(capacity).unwrap())
    }

    #[test]
    fn second_lookup_is_a_hit_and_returns_the_same_outcome() {
        let cache = cache(8);
        let limits = GraphqlLimits::default();
        let first = cache.check("{ a }", None, None, &limits);
        let second = cache.check("{ a }", None, None, &limits);
        assert_eq!(first, second);
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
    }

    #[test]
    fn refusals_are_cached_too() {
        let cache = cache(8);
        let limits = GraphqlLimits::default();
        for _ in 0..3 {
            let err = cache.check("{ __schema { types { name } } }", None, None, &limits);
            assert_eq!(err.unwrap_err().code(), "INTROSPECTION_DISABLED");
        }
        assert_eq!((cache.hits(), cache.misses()), (2, 1));
    }

    #[test]
    fn operation_name_schema_and_limits_are_part_of_the_key() {
        let cache = cache(8);
        let limits = GraphqlLimits::default();
        let doc = "query A { a } query B { __schema { types { name } } }";
        assert!(cache.check(doc, Some("A"), None, &limits).is_ok());
        assert_eq!(
            cache
                .check(doc, Some("B"), None, &limits)
                .unwrap_err()
                .code(),
            "INTROSPECTION_DISABLED"
        );
        let open = GraphqlLimits {
            introspection: true,
            ..GraphqlLimits::default()
        };
        assert!(cache.check(doc, Some("B"), None, &open).is_ok());
        let schema = SubgraphSchema::parse("type Query { a: Int }").unwrap();
        assert!(cache.check(doc, Some("A"), Some(&schema), &limits).is_ok());
        assert_eq!((cache.hits(), cache.misses()), (0, 4));
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn size_is_bounded_and_the_least_recent_is_evicted() {
        let cache = cache(2);
        let limits = GraphqlLimits::default();
        for field in ["a", "b", "c"] {
            cache
                .check(&format!("{{ {field} }}"), None, None, &limits)
                .unwrap();
        }
        assert_eq!(cache.len(), 2);
        cache.check("{ c }", None, None, &limits).unwrap();
        assert_eq!(cache.hits(), 1);
        cache.check("{ a }", None, None, &limits).unwrap();
        assert_eq!((cache.hits(), cache.misses()), (1, 4));
    }

    #[test]
    fn oversized_documents_are_refused_before_hashing_and_not_cached() {
        let cache = cache(2);
        let limits = GraphqlLimits {
            max_document_bytes: 10,
            ..GraphqlLimits::default()
        };
        let err = cache
            .check("{ aaaaaaaaaaaaaaaa }", None, None, &limits)
            .unwrap_err();
        assert_eq!(err.code(), "DOCUMENT_TOO_LARGE");
        assert!(cache.is_empty());
        assert_eq!((cache.hits(), cache.misses()), (0, 0));
    }
}
