//! The scorer's bounded tables (keys, shared bots): a map with approximate-LRU eviction.
//!
//! Why not the `lru` crate: its linked list costs three or four cache misses per access (the
//! node, both neighbours, the head), and in a churning stream that lookup was the scorer's
//! largest single cost. Here an access is one probe of a small index plus the slot itself, and
//! recency is a stamp in the slot. When the table is full, the stalest of [`SAMPLES`]
//! pseudo-randomly chosen slots is evicted (Redis's approximation of LRU): the evicted key is
//! on average among the least recently used ~1/(SAMPLES+1) of the table, and never one that was
//! just used.

use std::{collections::HashMap, hash::Hash};

/// Slots compared per eviction.
const SAMPLES: usize = 8;

type FastHash = foldhash::fast::RandomState;

struct Slot<K, V> {
    id: K,
    /// Value of the table's access counter at the last access through [`KeyTable::get_or_insert_with`].
    used: u64,
    value: V,
}

pub struct KeyTable<K, V> {
    /// Id to slot index.
    index: HashMap<K, u32, FastHash>,
    slots: Vec<Slot<K, V>>,
    cap: usize,
    clock: u64,
    /// xorshift state for picking eviction samples.
    rng: u64,
}

impl<K: Copy + Eq + Hash, V> KeyTable<K, V> {
    /// A table of at most `cap` entries (at least 1, at most `u32::MAX`).
    pub fn new(cap: usize) -> Self {
        Self {
            index: HashMap::default(),
            slots: Vec::new(),
            cap: cap.clamp(1, u32::MAX as usize),
            clock: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The entry for `id`, marked as just used; created with `make` if absent, evicting a
    /// stale entry when full. Also says whether it was created and whether that evicted one.
    pub fn get_or_insert_with(&mut self, id: K, make: impl FnOnce() -> V) -> (&mut V, bool, bool) {
        self.clock += 1;
        let used = self.clock;
        if let Some(&i) = self.index.get(&id) {
            let slot = &mut self.slots[i as usize];
            slot.used = used;
            return (&mut slot.value, false, false);
        }
        let evicted = self.slots.len() >= self.cap;
        if evicted {
            self.evict_one();
        }
        let i = self.slots.len();
        self.index.insert(id, i as u32);
        self.slots.push(Slot {
            id,
            used,
            value: make(),
        });
        (&mut self.slots[i].value, true, evicted)
    }

    /// The entry for `id`, without marking it used.
    pub fn peek(&self, id: &K) -> Option<&V> {
        let i = *self.index.get(id)?;
        Some(&self.slots[i as usize].value)
    }

    /// The entry for `id`, mutable, without marking it used.
    pub fn peek_mut(&mut self, id: &K) -> Option<&mut V> {
        let i = *self.index.get(id)?;
        Some(&mut self.slots[i as usize].value)
    }

    /// The bytes the table itself holds: its slot array and its index at their capacities
    /// (what the entries own on the heap is the caller's to add).
    pub fn table_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket, buckets = capacity / (7/8) rounded up to a
        // power of two.
        let buckets = (self.index.capacity() * 8 / 7 + 1).next_power_of_two();
        self.slots.capacity() * size_of::<Slot<K, V>>() + buckets * (size_of::<(K, u32)>() + 1)
    }

    /// Every entry, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().map(|s| &s.value)
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.slots.iter().map(|s| &s.id)
    }

    /// Every entry, least recently used first (for snapshots: put back in this order, the
    /// table's recency order survives a restart).
    pub fn entries_oldest_first(&self) -> Vec<(&K, &V)> {
        let mut v: Vec<&Slot<K, V>> = self.slots.iter().collect();
        v.sort_unstable_by_key(|s| s.used);
        v.into_iter().map(|s| (&s.id, &s.value)).collect()
    }

    /// Removes the entry for `id`, if there is one.
    pub fn remove(&mut self, id: &K) {
        if let Some(i) = self.index.remove(id) {
            self.remove_slot(i as usize);
        }
    }

    /// Removes a slot whose index entry is already gone; the last slot moves into its place.
    fn remove_slot(&mut self, i: usize) {
        self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.id, i as u32);
        }
    }

    /// Removes the stalest of a few sampled slots; the last slot moves into its place.
    fn evict_one(&mut self) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        let mut victim = self.next_rand() as usize % n;
        for _ in 1..SAMPLES.min(n) {
            let j = self.next_rand() as usize % n;
            if self.slots[j].used < self.slots[victim].used {
                victim = j;
            }
        }
        let gone = self.slots[victim].id;
        self.index.remove(&gone);
        self.remove_slot(victim);
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_consistent() {
        let mut t = KeyTable::new(100);
        for id in 0..10_000u64 {
            let (v, created, evicted) = t.get_or_insert_with(id, || id * 2);
            assert!(created);
            assert_eq!(evicted, id >= 100);
            assert_eq!(*v, id * 2);
            assert!(t.len() <= 100);
        }
        // The index and the slots agree after every swap_remove.
        for (id, &i) in &t.index {
            assert_eq!(t.slots[i as usize].id, *id);
            assert_eq!(t.slots[i as usize].value, id * 2);
        }
        assert_eq!(t.index.len(), t.len());
    }

    #[test]
    fn recently_used_keys_survive_eviction() {
        let mut t = KeyTable::new(1_000);
        for id in 0..1_000u64 {
            t.get_or_insert_with(id, || ());
        }
        // Keys 0..100 stay hot while 5,000 new keys stream through.
        for new in 1_000..6_000u64 {
            for hot in 0..100u64 {
                if new % 50 == hot % 50 {
                    t.get_or_insert_with(hot, || ());
                }
            }
            t.get_or_insert_with(new, || ());
        }
        let kept = (0..100u64).filter(|id| t.peek(id).is_some()).count();
        assert!(kept >= 95, "only {kept} of 100 hot keys kept");
    }

    #[test]
    fn hit_updates_in_place() {
        let mut t: KeyTable<u64, u64> = KeyTable::new(4);
        *t.get_or_insert_with(7, || 1).0 += 1;
        let (v, created, evicted) = t.get_or_insert_with(7, || 100);
        assert_eq!((*v, created, evicted), (2, false, false));
        assert_eq!(t.peek(&7), Some(&2));
        *t.peek_mut(&7).unwrap() = 5;
        assert_eq!(t.values().copied().collect::<Vec<_>>(), vec![5]);
        assert!(t.peek(&8).is_none());
        t.get_or_insert_with(8, || 8);
        t.get_or_insert_with(9, || 9);
        t.remove(&7);
        t.remove(&7);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t.peek(&7), t.peek(&8), t.peek(&9)),
            (None, Some(&8), Some(&9))
        );
        for (id, &i) in &t.index {
            assert_eq!(t.slots[i as usize].id, *id);
        }
    }
}
