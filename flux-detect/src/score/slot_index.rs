//! The index of the scorer's bounded tables (`table.rs`): each slot's number in an
//! open-addressed array, found from a hash of the id the slot holds. Holds slot numbers and
//! hash tags only; the slots, their ids and the hashing are the table's.
//!
//! Why not hashbrown's `HashTable`, which this replaces: its buckets lie apart from its control
//! bytes, and it shows neither, so a lookup cannot be started ahead of time. The scorer loads
//! the next response's keys into the CPU's caches while it scores the current one
//! (`Scorer::prefetch`); that needs the line where an id's probe starts. Here a bucket is 4
//! bytes, the slot number and a tag of the hash beside it, and a probe reads consecutive
//! buckets from the hash's home: one line, nearly always. At most half the buckets are used
//! (linear probing's probes stay short below that); at a million keys that is 8 MB, where
//! hashbrown's 4-byte buckets and control bytes at 7/8 were 10 MB.

/// Buckets of the first allocation.
const MIN_BUCKETS: usize = 16;

pub struct SlotIndex {
    /// 0 for an empty bucket; else the tag in the bits above `slot_bits`, and the slot number
    /// plus one below.
    buckets: Vec<u32>,
    len: usize,
    /// Bits a slot number plus one needs, for the table's capacity; the tag has the rest.
    slot_bits: u32,
}

impl SlotIndex {
    /// An index of slot numbers below `cap` (at least 1).
    pub fn new(cap: u32) -> Self {
        Self {
            buckets: Vec::new(),
            len: 0,
            slot_bits: u32::BITS - cap.max(1).leading_zeros(),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The bytes of the bucket array.
    pub fn bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<u32>()
    }

    fn slot_mask(&self) -> u32 {
        u32::MAX
            .checked_shr(u32::BITS - self.slot_bits)
            .unwrap_or(0)
    }

    /// The tag of `hash`, in place: its high bits, which the home bucket (its low bits) does
    /// not use.
    fn tag(&self, hash: u64) -> u32 {
        ((hash >> 32) as u32) & !self.slot_mask()
    }

    fn slot_of(&self, e: u32) -> u32 {
        (e & self.slot_mask()).wrapping_sub(1)
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The bucket holding the slot that `hash` and `is` pick out.
    // Inlined into its callers, where `is` is inlined into it: called out of line (as it was
    // once `is` read the table's chunked slots) it cost the resolver stream 120 instructions a
    // response.
    #[inline(always)]
    fn position(&self, hash: u64, is: impl Fn(u32) -> bool) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let (mask, tag) = (self.mask(), self.tag(hash));
        let mut at = hash as usize & mask;
        // At most half the buckets are used: an empty one ends every probe.
        for _ in 0..self.buckets.len() {
            let e = *self.buckets.get(at)?;
            if e == 0 {
                return None;
            }
            if e & !self.slot_mask() == tag && is(self.slot_of(e)) {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
        None
    }

    /// The slot with `hash` whose id `is` accepts.
    pub fn find(&self, hash: u64, is: impl Fn(u32) -> bool) -> Option<u32> {
        let at = self.position(hash, is)?;
        self.buckets.get(at).map(|e| self.slot_of(*e))
    }

    /// Points the entry of the slot with `hash` that `is` accepts at slot `to`.
    pub fn move_slot(&mut self, hash: u64, is: impl Fn(u32) -> bool, to: u32) {
        let tag = self.tag(hash);
        if let Some(at) = self.position(hash, is)
            && let Some(e) = self.buckets.get_mut(at)
        {
            *e = tag | to.wrapping_add(1);
        }
    }

    /// Adds slot `slot`, whose id has `hash` and is not in the index yet. `entries` lists
    /// every entry already in it, as its hash and slot, for growing, which places them all
    /// again. The table lists them by slot number: its slots are then read in order, where
    /// following the old buckets read them in the hashes' random order, a cache miss each
    /// (38.8 ms of one response, growing to a million keys, before the table listed them).
    pub fn insert<I: IntoIterator<Item = (u64, u32)>>(
        &mut self,
        hash: u64,
        slot: u32,
        entries: impl FnOnce() -> I,
    ) {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow(entries());
        }
        let e = self.tag(hash) | slot.wrapping_add(1);
        self.place(hash, e);
        self.len += 1;
    }

    /// Writes entry `e` into the first empty bucket from `hash`'s home (there is one: at most
    /// half are used).
    fn place(&mut self, hash: u64, e: u32) {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        for _ in 0..self.buckets.len() {
            match self.buckets.get_mut(at) {
                Some(b) if *b == 0 => {
                    *b = e;
                    return;
                }
                Some(_) => at = (at + 1) & mask,
                None => return,
            }
        }
    }

    /// Twice the buckets (or the first ones), every entry placed again from `entries`.
    fn grow(&mut self, entries: impl IntoIterator<Item = (u64, u32)>) {
        let size = (self.buckets.len() * 2).max(MIN_BUCKETS);
        self.buckets = vec![0; size];
        let mut placed = 0;
        for (hash, slot) in entries {
            self.place(hash, self.tag(hash) | slot.wrapping_add(1));
            placed += 1;
        }
        debug_assert_eq!(placed, self.len, "growing must be given every entry");
    }

    /// Removes the entry of the slot with `hash` that `is` accepts, and returns that slot.
    /// The entries after it in its run move back over the gap (backward-shift deletion, so
    /// that no probe stops early at it); `hash_of` gives their hashes.
    pub fn remove(
        &mut self,
        hash: u64,
        is: impl Fn(u32) -> bool,
        hash_of: impl Fn(u32) -> u64,
    ) -> Option<u32> {
        let mut hole = self.position(hash, is)?;
        let removed = self.slot_of(*self.buckets.get(hole)?);
        let mask = self.mask();
        let mut at = hole;
        for _ in 0..self.buckets.len() {
            at = (at + 1) & mask;
            let e = match self.buckets.get(at) {
                Some(e) if *e != 0 => *e,
                _ => break,
            };
            // The entry may fill the hole if the hole lies on its probe from its home.
            let home = hash_of(self.slot_of(e)) as usize & mask;
            if at.wrapping_sub(home) & mask >= at.wrapping_sub(hole) & mask {
                if let Some(b) = self.buckets.get_mut(hole) {
                    *b = e;
                }
                hole = at;
            }
        }
        if let Some(b) = self.buckets.get_mut(hole) {
            *b = 0;
        }
        self.len -= 1;
        Some(removed)
    }

    /// Asks the CPU for the line where the probe for `hash` starts; changes nothing.
    pub fn prefetch(&self, hash: u64) {
        if let Some(b) = self.buckets.get(hash as usize & self.mask()) {
            super::prefetch::line(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots hold ids; the "hash" of an id is chosen by the test.
    struct Fixture {
        index: SlotIndex,
        ids: Vec<u64>,
        /// Whether the index holds each slot (a removed id stays in `ids`).
        live: Vec<bool>,
        hash: fn(u64) -> u64,
    }

    impl Fixture {
        fn new(cap: u32, hash: fn(u64) -> u64) -> Self {
            Self {
                index: SlotIndex::new(cap),
                ids: Vec::new(),
                live: Vec::new(),
                hash,
            }
        }

        fn add(&mut self, id: u64) {
            let (ids, live, h) = (&self.ids, &self.live, self.hash);
            let slot = ids.len() as u32;
            self.index.insert(h(id), slot, || {
                ids.iter()
                    .zip(live)
                    .enumerate()
                    .filter(|(_, (_, l))| **l)
                    .map(|(s, (id, _))| (h(*id), s as u32))
            });
            self.ids.push(id);
            self.live.push(true);
        }

        fn find(&self, id: u64) -> Option<u32> {
            let ids = &self.ids;
            self.index
                .find((self.hash)(id), |s| ids.get(s as usize) == Some(&id))
        }

        /// Removes `id`'s entry; its slot keeps the id (the test's slots never move).
        fn remove(&mut self, id: u64) -> Option<u32> {
            let (ids, h) = (&self.ids, self.hash);
            let slot = self.index.remove(
                h(id),
                |s| ids.get(s as usize) == Some(&id),
                |s| h(ids[s as usize]),
            )?;
            self.live[slot as usize] = false;
            Some(slot)
        }
    }

    fn spread(id: u64) -> u64 {
        id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// Every id shares a few homes and the same tag: runs of many entries, found by id alone.
    fn clustered(id: u64) -> u64 {
        id % 3
    }

    #[test]
    fn finds_every_entry_through_growth_and_collisions() {
        for hash in [spread as fn(u64) -> u64, clustered] {
            let mut f = Fixture::new(1_000, hash);
            for id in 0..1_000 {
                f.add(id * 7);
            }
            assert_eq!(f.index.len(), 1_000);
            assert!(
                f.index.bytes() >= 2_000 * 4,
                "at most half the buckets used"
            );
            for id in 0..1_000u64 {
                assert_eq!(f.find(id * 7), Some(id as u32));
                assert_eq!(f.find(id * 7 + 1), None);
            }
        }
    }

    #[test]
    fn removal_keeps_every_other_entry_reachable() {
        for hash in [spread as fn(u64) -> u64, clustered] {
            let mut f = Fixture::new(500, hash);
            for id in 0..500 {
                f.add(id);
            }
            // Every third one goes, from runs' middles, ends and starts.
            for id in (0..500).step_by(3) {
                assert_eq!(f.remove(id), Some(id as u32));
                assert_eq!(f.remove(id), None, "gone already");
            }
            for id in 0..500u64 {
                let want = (id % 3 != 0).then_some(id as u32);
                assert_eq!(f.find(id), want, "id {id}");
            }
            assert_eq!(f.index.len(), 500 - 167);
        }
    }

    /// Runs that wrap past the array's end: ids homed at its last two buckets, removed from a
    /// run's middle, its start and its wrapped tail.
    #[test]
    fn removal_in_a_run_that_wraps_past_the_end() {
        // 16 buckets (the first allocation, up to 8 entries): homes 14 and 15.
        fn near_end(id: u64) -> u64 {
            14 + id % 2
        }
        for gone in [[0u64, 3], [1, 4], [5, 2], [6, 0]] {
            let mut f = Fixture::new(8, near_end);
            for id in 0..7 {
                f.add(id);
            }
            assert_eq!(f.index.bytes(), 16 * 4, "one allocation: the run wraps");
            for id in gone {
                assert_eq!(f.remove(id), Some(id as u32));
            }
            for id in 0..7u64 {
                let want = (!gone.contains(&id)).then_some(id as u32);
                assert_eq!(f.find(id), want, "removed {gone:?}, id {id}");
            }
        }
    }

    /// Random inserts and removals against a `HashMap`, with a hash that puts many ids on few
    /// homes, across growth.
    #[test]
    fn agrees_with_a_hash_map_under_random_churn() {
        fn few_homes(id: u64) -> u64 {
            (id % 61).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        }
        let mut f = Fixture::new(4_096, few_homes);
        let mut live = std::collections::HashMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let id = rng % 3_000;
            if let Some(slot) = live.remove(&id) {
                assert_eq!(f.remove(id), Some(slot), "id {id}");
            } else if f.ids.len() < 4_096 {
                live.insert(id, f.ids.len() as u32);
                f.add(id);
            }
        }
        assert_eq!(f.index.len(), live.len());
        for id in 0..3_000u64 {
            // A removed id's slot keeps it in the fixture, so the index alone must say it is gone.
            assert_eq!(f.find(id), live.get(&id).copied(), "id {id}");
        }
    }

    #[test]
    fn a_moved_slot_is_found_at_its_new_place() {
        let mut f = Fixture::new(10, spread);
        f.add(40);
        f.add(41);
        let ids = f.ids.clone();
        f.index
            .move_slot(spread(41), |s| ids.get(s as usize) == Some(&41), 7);
        f.ids.resize(8, 0);
        f.ids[7] = 41;
        f.live.resize(8, false);
        (f.live[1], f.live[7]) = (false, true);
        assert_eq!(f.find(41), Some(7));
        assert_eq!(f.find(40), Some(0));
    }

    #[test]
    fn the_largest_capacity_leaves_no_tag_and_still_works() {
        let mut f = Fixture::new(u32::MAX, spread);
        assert_eq!(f.index.slot_mask(), u32::MAX);
        for id in 0..100 {
            f.add(id);
        }
        for id in 0..100u64 {
            assert_eq!(f.find(id), Some(id as u32));
        }
        assert_eq!(f.remove(5), Some(5));
        assert_eq!(f.find(5), None);
        assert_eq!(f.find(6), Some(6));
    }
}
