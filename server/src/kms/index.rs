//! The domain's in-memory indexes (key id -> key, instance id -> instance): maps split into
//! shards, each behind its own lock, so that the wrap path takes no lock that all keys share.
//! Entries are `Arc`s, cloned out of the shard: a reader holds a shard's read lock only for
//! the lookup.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::RwLock;

use crate::kms::{read, write};

/// How many shards a map has (a power of two).
const SHARDS: usize = 32;

/// A map split into [`SHARDS`] independently locked shards.
#[derive(Debug)]
pub(crate) struct ShardedMap<K, V> {
    hasher: RandomState,
    shards: Vec<RwLock<HashMap<K, V>>>,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }
}

impl<K: Hash + Eq, V: Clone> ShardedMap<K, V> {
    fn shard(&self, key: &K) -> &RwLock<HashMap<K, V>> {
        // The remainder is below SHARDS, so it fits in usize and indexes `shards`.
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// The value for `key`.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        read(self.shard(key)).get(key).cloned()
    }

    /// Inserts, returning the previous value.
    pub(crate) fn insert(&self, key: K, value: V) -> Option<V> {
        write(self.shard(&key)).insert(key, value)
    }

    /// Removes, returning the value.
    pub(crate) fn remove(&self, key: &K) -> Option<V> {
        write(self.shard(key)).remove(key)
    }

    /// How many entries (shard by shard: not a single instant under concurrent changes).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| read(shard).len()).sum()
    }

    /// Every value (shard by shard).
    pub(crate) fn values(&self) -> Vec<V> {
        self.shards
            .iter()
            .flat_map(|shard| read(shard).values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Removes every entry.
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            write(shard).clear();
        }
    }

    /// Replaces the whole content with `entries` (start-up and reloads).
    pub(crate) fn replace(&self, entries: HashMap<K, V>) {
        self.clear();
        for (key, value) in entries {
            self.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_one_map() {
        let map: ShardedMap<u32, u32> = ShardedMap::default();
        map.replace((0..1000).map(|i| (i, i * 2)).collect());
        assert_eq!(map.len(), 1000);
        assert_eq!(map.get(&7), Some(14));
        assert_eq!(map.insert(7, 1), Some(14));
        assert_eq!(map.remove(&7), Some(1));
        assert_eq!(map.get(&7), None);
        let mut values = map.values();
        values.sort_unstable();
        assert_eq!(values.len(), 999);
        assert_eq!(values[0], 0);
        map.clear();
        assert_eq!(map.len(), 0);
    }
}
