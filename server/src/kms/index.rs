//! The domain's in-memory indexes (key id -> key, instance id -> instance): maps split into
//! shards, each behind its own lock, so that the wrap path takes no lock that all keys share.
//! Entries are `Arc`s, cloned out of the shard: a reader holds a shard's read lock only for
//! the lookup. [`Ordered`] keeps each group's entries (an instance's keys) in listing order
//! (creation time, then id), so that a page is found by seeking rather than by sorting
//! everything; only creations, purges and listings touch it, never the wrap path.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, RandomState};
use std::ops::Bound;
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

/// Entries grouped (by instance) and ordered (by creation time, then id) within a group.
#[derive(Debug)]
pub(crate) struct Ordered<G, O, V> {
    groups: RwLock<HashMap<G, BTreeMap<O, V>>>,
}

impl<G, O, V> Default for Ordered<G, O, V> {
    fn default() -> Self {
        Self {
            groups: RwLock::new(HashMap::new()),
        }
    }
}

impl<G: Hash + Eq, O: Ord + Clone, V: Clone> Ordered<G, O, V> {
    /// Adds `value` at `order` in `group`.
    pub(crate) fn insert(&self, group: G, order: O, value: V) {
        write(&self.groups)
            .entry(group)
            .or_default()
            .insert(order, value);
    }

    /// Removes the entry at `order` in `group`.
    pub(crate) fn remove(&self, group: &G, order: &O) {
        let mut groups = write(&self.groups);
        if let Some(entries) = groups.get_mut(group) {
            entries.remove(order);
            if entries.is_empty() {
                groups.remove(group);
            }
        }
    }

    /// Removes every entry.
    pub(crate) fn clear(&self) {
        write(&self.groups).clear();
    }

    /// Replaces the whole content (start-up and reloads).
    pub(crate) fn replace(&self, entries: impl IntoIterator<Item = (G, O, V)>) {
        let mut groups = write(&self.groups);
        groups.clear();
        for (group, order, value) in entries {
            groups.entry(group).or_default().insert(order, value);
        }
    }

    /// Visits `group`'s entries in order, from the first one after `after` (or the first),
    /// until `visit` returns `false`. The group is read-locked meanwhile: `visit` must not
    /// change this index.
    pub(crate) fn scan(&self, group: &G, after: Option<&O>, visit: &mut dyn FnMut(&O, &V) -> bool) {
        let groups = read(&self.groups);
        let Some(entries) = groups.get(group) else {
            return;
        };
        let start = after.map_or(Bound::Unbounded, |order| Bound::Excluded(order.clone()));
        for (order, value) in entries.range((start, Bound::Unbounded)) {
            if !visit(order, value) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_groups_seek_after_a_cursor() {
        let index: Ordered<u8, (i64, u32), u32> = Ordered::default();
        index.replace([
            (1, (20, 2), 2),
            (1, (10, 1), 1),
            (2, (5, 9), 9),
            (1, (20, 3), 3),
        ]);
        let collect = |group: u8, after: Option<(i64, u32)>, limit: usize| {
            let mut seen = Vec::new();
            index.scan(&group, after.as_ref(), &mut |_, v| {
                seen.push(*v);
                seen.len() < limit
            });
            seen
        };
        assert_eq!(collect(1, None, 10), [1, 2, 3]);
        assert_eq!(collect(1, Some((10, 1)), 10), [2, 3]);
        assert_eq!(collect(1, Some((20, 2)), 10), [3]);
        assert_eq!(collect(1, None, 2), [1, 2]);
        assert_eq!(collect(2, None, 10), [9]);
        assert_eq!(collect(3, None, 10), Vec::<u32>::new());
        index.insert(2, (1, 1), 7);
        index.remove(&1, &(20, 2));
        assert_eq!(collect(1, None, 10), [1, 3]);
        assert_eq!(collect(2, None, 10), [7, 9]);
        index.remove(&2, &(1, 1));
        index.remove(&2, &(5, 9));
        assert!(read(&index.groups).get(&2).is_none());
        index.clear();
        assert_eq!(collect(1, None, 10), Vec::<u32>::new());
    }

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
