//! The scorer's cache of addresses it has looked up in the IP databases (`Scorer::addr_info`):
//! what an address's ASN, organisation and country are, so that an address seen again is not
//! looked up again. Holds copies of `AddrInfo`; touches nothing else.
//!
//! Two-way set-associative, each set one cache line, the more recently used entry first; a new
//! address takes the older entry's place. It was a `HashMap` emptied when full, whose miss cost
//! more than the lookup it saved: with a working set larger than the cache (a gateway's, or
//! `ringbuf-load`'s zone of 250,000 addresses) every response missed, and each miss's insert (a
//! probe and a write into a table of about 6 MB, cold in the CPU's caches) was 8.2% of the live
//! agent's capture thread against 2.8% for the database lookup itself (`perf record` of the
//! agent alone at 150,000 responses a second). Here a miss writes the line its probe has just
//! read. What is cached is a pure function of the address, so the cache changes no verdict,
//! only how often the databases are read.

use std::hash::BuildHasher as _;

use super::addr_info::AddrInfo;

/// One set: two entries in one 64-byte line, the more recently used first.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Set([Option<AddrInfo>; 2]);

const _: () = assert!(size_of::<Set>() == 64, "a set is one cache line");

pub struct AddrCache {
    /// Empty until the first insert (a scorer that never looks up an address, as most tests'
    /// do not, allocates nothing); then `sets` of them, a power of two.
    sets: Box<[Set]>,
    /// How many sets to allocate at the first insert.
    capacity_sets: usize,
    hasher: foldhash::fast::RandomState,
}

impl AddrCache {
    /// A cache of `entries` addresses (rounded up to a whole number of two-entry sets, a power
    /// of two).
    pub fn new(entries: usize) -> Self {
        Self {
            sets: Box::default(),
            capacity_sets: entries.div_ceil(2).next_power_of_two(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn set_of(&self, ip: &[u8; 16]) -> usize {
        (self.hasher.hash_one(ip) as usize) & (self.sets.len().wrapping_sub(1))
    }

    /// What is cached for `ip`, made the set's more recent entry.
    pub fn get(&mut self, ip: &[u8; 16]) -> Option<AddrInfo> {
        if self.sets.is_empty() {
            return None;
        }
        let i = self.set_of(ip);
        let set = self.sets.get_mut(i)?;
        match set.0 {
            [Some(a), _] if a.ip == *ip => Some(a),
            [first, Some(b)] if b.ip == *ip => {
                set.0 = [Some(b), first];
                Some(b)
            }
            _ => None,
        }
    }

    /// Starts loading `ip`'s set into the CPU's caches, so that a [`Self::get`] of it a little
    /// later does not wait on memory. Changes nothing.
    pub fn prefetch(&self, ip: &[u8; 16]) {
        if let Some(set) = self.sets.get(self.set_of(ip)) {
            super::prefetch::line(set);
        }
    }

    /// Caches `a` (under `a.ip`) as its set's more recent entry; the set's older entry goes.
    /// Meant for an address [`Self::get`] just missed.
    pub fn insert(&mut self, a: AddrInfo) {
        if self.sets.is_empty() {
            self.sets = vec![Set::default(); self.capacity_sets].into_boxed_slice();
        }
        let i = self.set_of(&a.ip);
        if let Some(set) = self.sets.get_mut(i) {
            set.0 = [Some(a), set.0[0]];
        }
    }

    /// Bytes the cache holds.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.sets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u32) -> AddrInfo {
        let mut ip = [0u8; 16];
        ip[..4].copy_from_slice(&n.to_be_bytes());
        AddrInfo {
            ip,
            asn: n,
            network: n ^ 0x5555,
            country: [b'a', b'b'],
        }
    }

    #[test]
    fn what_was_inserted_is_found_until_two_newer_addresses_share_its_set() {
        let mut c = AddrCache::new(8);
        assert_eq!(c.bytes(), 0, "nothing allocated before the first insert");
        assert_eq!(c.get(&addr(1).ip), None);
        c.insert(addr(1));
        assert_eq!(c.bytes(), 4 * 64);
        assert_eq!(c.get(&addr(1).ip), Some(addr(1)));
        // Addresses of addr(1)'s set: one more keeps it (two ways), a second pushes it out.
        let set = c.set_of(&addr(1).ip);
        let mates: Vec<u32> = (2..10_000)
            .filter(|n| c.set_of(&addr(*n).ip) == set)
            .take(3)
            .collect();
        c.insert(addr(mates[0]));
        assert_eq!(c.get(&addr(1).ip), Some(addr(1)), "two ways");
        assert_eq!(c.get(&addr(mates[0]).ip), Some(addr(mates[0])));
        // addr(1) was used before mates[0]'s last get: it is the older one, and goes.
        c.insert(addr(mates[1]));
        assert_eq!(
            c.get(&addr(1).ip),
            None,
            "the least recently used entry went"
        );
        assert_eq!(c.get(&addr(mates[0]).ip), Some(addr(mates[0])));
        assert_eq!(c.get(&addr(mates[1]).ip), Some(addr(mates[1])));
    }

    #[test]
    fn a_hit_in_the_older_way_makes_it_the_newer() {
        let mut c = AddrCache::new(2);
        // One set: every address shares it.
        c.insert(addr(1));
        c.insert(addr(2));
        assert_eq!(c.get(&addr(1).ip), Some(addr(1)));
        c.insert(addr(3));
        assert_eq!(c.get(&addr(2).ip), None, "2 was the older after 1's hit");
        assert_eq!(c.get(&addr(1).ip), Some(addr(1)));
        assert_eq!(c.get(&addr(3).ip), Some(addr(3)));
    }
}
