//! A bounded map that evicts its least recently used entry when a new key
//! arrives and it is full: the user-space stand-in for the kernel's
//! `LruHashMap` of clients.
//!
//! Recency is kept by the `lru` crate (O(1) per operation, exact: the
//! kernel's LRU is an approximation; exact is the stricter promise). The
//! cache is unbounded to the crate and bounded here, so memory is only
//! taken as entries arrive: a capacity of a million costs nothing until a
//! million clients have been seen.

use std::hash::Hash;

use lru::LruCache;

/// The map.
pub struct LruMap<K, V> {
    capacity: usize,
    cache: LruCache<K, V>,
}

impl<K: Hash + Eq + Copy, V> LruMap<K, V> {
    /// An empty map holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            cache: LruCache::unbounded(),
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Every entry, most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.cache.iter()
    }

    /// The value of `key`, without touching it.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.cache.peek(key)
    }

    /// The value of `key`, touched (now the most recently used). When `key`
    /// is new it is inserted with `make()`, evicting the least recently used
    /// entry first if the map is full; the second value says whether one was.
    pub fn touch_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> (&mut V, bool) {
        let mut evicted = false;
        if !self.cache.contains(&key) {
            if self.cache.len() >= self.capacity {
                evicted = self.cache.pop_lru().is_some();
            }
            self.cache.put(key, make());
        }
        let value = self
            .cache
            .get_mut(&key)
            .expect("the entry was there or inserted above");
        (value, evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_touched_entry() {
        let mut m = LruMap::new(3);
        for k in [1, 2, 3] {
            assert!(!m.touch_or_insert_with(k, || k * 10).1);
        }
        // 1 is used again: 2 is now the oldest.
        *m.touch_or_insert_with(1, || unreachable!()).0 += 1;
        let (v, evicted) = m.touch_or_insert_with(4, || 40);
        assert_eq!((*v, evicted), (40, true));
        assert_eq!(m.len(), 3);
        assert_eq!(m.peek(&2), None);
        assert_eq!(m.peek(&1), Some(&11), "a touched entry keeps its value");
        // Peeking does not count as use: 3 goes next.
        assert!(m.touch_or_insert_with(5, || 50).1);
        assert_eq!(m.peek(&3), None);
        assert_eq!(
            (m.peek(&1), m.peek(&4), m.peek(&5)),
            (Some(&11), Some(&40), Some(&50))
        );
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let mut m = LruMap::new(100);
        let mut evictions = 0;
        for k in 0..10_000u32 {
            evictions += u32::from(m.touch_or_insert_with(k, || k).1);
            assert!(m.len() <= 100);
        }
        assert_eq!((m.len(), evictions), (100, 10_000 - 100));
        // The survivors are the last hundred keys.
        assert!((9_900..10_000).all(|k| m.peek(&k) == Some(&k)));
    }
}
