//! The scorer's bounded tables (keys, shared bots): a map with approximate-LRU eviction.
//!
//! Why not the `lru` crate: its linked list costs three or four cache misses per access (the
//! node, both neighbours, the head), and in a churning stream that lookup was the scorer's
//! largest single cost. Here an access is one probe of a small index plus the slot itself, and
//! recency is a stamp in the slot. When the table is full, the stalest of [`SAMPLES`]
//! pseudo-randomly chosen slots is evicted (Redis's approximation of LRU): the evicted key is
//! on average among the least recently used ~1/(SAMPLES+1) of the table, and never one that was
//! just used.
//!
//! The index holds only the slot number and a hash tag (4 bytes a bucket), hashed from the id
//! kept in the slot, where a `HashMap<K, u32>` would store the id a second time (16 bytes a
//! bucket with padding): about 25 bytes a key over a million keys. It is our own
//! (`slot_index.rs`, which says why), so that a lookup can be started ahead ([`KeyTable::prefetch`]).
//! The slots themselves lie in chunks that never move (`slot_chunks.rs`, which says why), so
//! that growing the table copies nothing.

use std::hash::{BuildHasher as _, Hash};

use super::{slot_chunks::SlotChunks, slot_index::SlotIndex};

/// Slots compared per eviction.
const SAMPLES: usize = 8;

/// Seeded per table: the ids are attacker-controlled on a live agent (names and addresses from
/// the wire), so their placement in the index must not be predictable; foldhash's fast hash
/// with a random seed is that at a few cycles per integer.
type FastHash = foldhash::fast::RandomState;

struct Slot<K, V> {
    id: K,
    /// Value of the table's access counter at the last access through [`KeyTable::get_or_insert_with`].
    used: u64,
    value: V,
}

pub struct KeyTable<K, V> {
    /// Slot numbers, hashed by their slot's id.
    index: SlotIndex,
    hasher: FastHash,
    /// Numbered from 0 without gaps (removals move the last slot into the hole).
    slots: SlotChunks<Slot<K, V>>,
    cap: usize,
    clock: u64,
    /// xorshift state for picking eviction samples.
    rng: u64,
}

impl<K: Copy + Eq + Hash, V> KeyTable<K, V> {
    /// A table of at most `cap` entries (at least 1, at most `u32::MAX`).
    pub fn new(cap: usize) -> Self {
        let cap = cap.clamp(1, u32::MAX as usize);
        Self {
            index: SlotIndex::new(cap as u32),
            hasher: FastHash::default(),
            slots: SlotChunks::new(cap),
            cap,
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
        if let Some(i) = self.find(&id) {
            let slot = &mut self.slots[i];
            slot.used = used;
            return (&mut slot.value, false, false);
        }
        let evicted = self.slots.len() >= self.cap;
        if evicted {
            self.evict_one();
        }
        let i = self.slots.len();
        self.slots.push(Slot {
            id,
            used,
            value: make(),
        });
        self.index_insert(i);
        (&mut self.slots[i].value, true, evicted)
    }

    /// The entry for `id`, without marking it used.
    pub fn peek(&self, id: &K) -> Option<&V> {
        let i = self.find(id)?;
        self.slots.get(i).map(|s| &s.value)
    }

    /// The entry for `id`, mutable, without marking it used.
    pub fn peek_mut(&mut self, id: &K) -> Option<&mut V> {
        let i = self.find(id)?;
        self.slots.get_mut(i).map(|s| &mut s.value)
    }

    /// Starts loading into the CPU's caches the index line where a lookup of `id` begins, for
    /// a caller that knows which ids it will look up next. Changes nothing.
    pub fn prefetch(&self, id: &K) {
        self.index.prefetch(self.hasher.hash_one(id));
    }

    /// The slot holding `id`.
    fn find(&self, id: &K) -> Option<usize> {
        self.index
            .find(self.hasher.hash_one(id), holds(&self.slots, id))
            .map(|i| i as usize)
    }

    /// Adds the index entry of slot `i`, whose id the index does not hold yet.
    fn index_insert(&mut self, i: usize) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        let Some(id) = slots.get(i).map(|s| s.id) else {
            return;
        };
        // A slot number is below `cap`, itself at most u32::MAX. Growing the index places
        // the slots before `i` again, read in order.
        self.index.insert(hasher.hash_one(id), i as u32, || {
            slots
                .iter()
                .take(i)
                .enumerate()
                .map(|(j, s)| (hasher.hash_one(s.id), j as u32))
        });
    }

    /// Removes the index entry of `id` (its slot must still hold it); returns its slot.
    fn index_remove(&mut self, id: &K) -> Option<usize> {
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .remove(
                hasher.hash_one(id),
                holds(slots, id),
                hash_of(slots, hasher),
            )
            .map(|i| i as usize)
    }

    /// The bytes the table itself holds: its slot array and its index at their capacities
    /// (what the entries own on the heap is the caller's to add).
    pub fn table_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Slot<K, V>>() + self.index.bytes()
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
        if let Some(i) = self.index_remove(id) {
            self.remove_slot(i);
        }
    }

    /// Removes a slot whose index entry is already gone; the last slot moves into its place,
    /// and its index entry follows it.
    fn remove_slot(&mut self, i: usize) {
        let last = self.slots.len().saturating_sub(1);
        if i >= self.slots.len() {
            return;
        }
        if i != last {
            let Some(moved) = self.slots.get(last).map(|s| s.id) else {
                return;
            };
            // Its entry still says `last`; point it at `i` before the move.
            let hash = self.hasher.hash_one(moved);
            self.index
                .move_slot(hash, holds(&self.slots, &moved), i as u32);
        }
        self.slots.swap_remove(i);
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
        if let Some(i) = self.index_remove(&gone) {
            self.remove_slot(i);
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// For the index: whether slot `i` holds `id`.
fn holds<'s, K: Eq, V>(slots: &'s SlotChunks<Slot<K, V>>, id: &'s K) -> impl Fn(u32) -> bool + 's {
    move |i| slots.get(i as usize).is_some_and(|s| s.id == *id)
}

/// For the index: the hash of the id in slot `i` (0 for a slot that does not exist).
fn hash_of<'s, K: Copy + Hash, V>(
    slots: &'s SlotChunks<Slot<K, V>>,
    hasher: &'s FastHash,
) -> impl Fn(u32) -> u64 + 's {
    move |i| slots.get(i as usize).map_or(0, |s| hasher.hash_one(s.id))
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
        assert_consistent(&t);
        for s in t.slots.iter() {
            assert_eq!(s.value, s.id * 2);
        }
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
        assert_consistent(&t);
    }

    /// Growing moves no entry: an entry stays where it was written while the table grows from
    /// one slot to 100,000 (with a `Vec` of slots, every doubling copied them all within one
    /// insertion; at a million keys that insertion took 218 ms).
    #[test]
    fn growing_moves_no_entry() {
        let mut t: KeyTable<u64, u64> = KeyTable::new(100_000);
        t.get_or_insert_with(0, || 0);
        let first = std::ptr::from_ref(t.peek(&0).unwrap());
        for id in 1..100_000u64 {
            t.get_or_insert_with(id, || id);
        }
        assert!(std::ptr::eq(first, t.peek(&0).unwrap()));
        assert_consistent(&t);
        assert_eq!(t.len(), 100_000);
    }

    /// Small capacities, where a slot number plus one reaches the top bit below the index's
    /// tag (3, 7): evictions, removals and moved slots keep the index and the slots agreeing.
    #[test]
    fn small_capacities_stay_consistent_through_churn() {
        for cap in [1usize, 2, 3, 4, 7, 8] {
            let mut t = KeyTable::new(cap);
            for id in 0..200u64 {
                t.get_or_insert_with(id % 13, || id);
                if id % 5 == 0 {
                    t.remove(&(id % 7));
                }
                assert!(t.len() <= cap);
                assert_consistent(&t);
            }
        }
    }

    /// Every slot is found through the index at its own place, and the index holds nothing
    /// else.
    fn assert_consistent<V>(t: &KeyTable<u64, V>) {
        assert_eq!(t.index.len(), t.len());
        for (i, s) in t.slots.iter().enumerate() {
            assert_eq!(t.find(&s.id), Some(i));
        }
    }
}
