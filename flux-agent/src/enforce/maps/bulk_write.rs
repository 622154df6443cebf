//! [`Maps::block_new`] and [`hash_keys`]: the bulk paths of [`Maps`]. `block_new` writes a list of
//! targets the maps should not hold yet (the start-up restore after a reboot, in one call: it
//! reads each map's keys once per call, so it is not for callers that come in many small
//! chunks); `hash_keys` reads a map's keys for a feed's room check. The hash maps' share goes
//! through `map_batch` (a few hundred syscalls for a million entries); CIDR entries, which live
//! in LPM tries without batch calls, and any target already present go through
//! [`Maps::block`] as before.
//!
//! May touch: the blocklist maps of [`Maps`].

use std::collections::HashSet;

use aya::{
    Pod,
    maps::{IterableMap as _, MapData, MapError},
    sys::SyscallError,
};

use super::{
    BlockEntry, BlocklistError, DomainBlock, MAP_BLOCKED_DOMAINS, MAP_BLOCKED_V4, MAP_BLOCKED_V6,
    Maps, Spec, Target, domain_key, domain_value, fresh_entry, map_err, occupancy::List, v4, v6,
};
use crate::enforce::map_batch;

/// Entries bound for one hash map, with the index of each in the caller's list.
struct Staged<K, V> {
    at: Vec<usize>,
    keys: Vec<K>,
    values: Vec<V>,
}

impl<K, V> Default for Staged<K, V> {
    fn default() -> Self {
        Self {
            at: Vec::new(),
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<K, V> Staged<K, V> {
    fn push(&mut self, at: usize, key: K, value: V) {
        self.at.push(at);
        self.keys.push(key);
        self.values.push(value);
    }
}

/// A batch call's error as the one-at-a-time path reports it (a full map is `Full`).
fn batch_err(op: &'static str, map: &'static str) -> impl Fn(std::io::Error) -> BlocklistError {
    move |io_error| {
        map_err(op, map)(MapError::SyscallError(SyscallError {
            call: "bpf_map_batch",
            io_error,
        }))
    }
}

/// Writes the entries of `staged` whose keys `map` does not hold; returns how many were written
/// and the indexes (into the caller's list) of the keys already there, left to the caller.
fn insert<K: Pod + Eq + std::hash::Hash, V: Pod>(
    map: &MapData,
    name: &'static str,
    staged: &Staged<K, V>,
) -> Result<(usize, Vec<usize>), BlocklistError> {
    if staged.keys.is_empty() {
        return Ok((0, Vec::new()));
    }
    let there: HashSet<K> = map_batch::keys::<K, V>(map)
        .map_err(batch_err("read", name))?
        .into_iter()
        .collect();
    let mut present = Vec::new();
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for ((k, v), at) in staged.keys.iter().zip(&staged.values).zip(&staged.at) {
        if there.contains(k) {
            present.push(*at);
        } else {
            keys.push(*k);
            values.push(*v);
        }
    }
    let written = map_batch::update(map, &keys, &values).map_err(batch_err("insert", name))?;
    Ok((written, present))
}

impl Maps {
    /// Blocks each target as [`Maps::block`] would, for lists of targets the maps should not
    /// hold yet: the addresses and names are written in batches, and a target that turns out
    /// to be there already is renewed through [`Maps::block`] (its hit count and first-added
    /// time kept). Returns the entries written. On an error (a full map) the entries before it
    /// are written: the callers check the room first (`room_for`), and the database, written
    /// before, is the record the next start reconciles with.
    pub fn block_new(&mut self, items: &[(Target, Spec)]) -> Result<usize, BlocklistError> {
        let mut s4: Staged<[u8; 4], BlockEntry> = Staged::default();
        let mut s6: Staged<[u8; 16], BlockEntry> = Staged::default();
        let mut sd: Staged<u64, DomainBlock> = Staged::default();
        let mut written = 0;
        for (i, (t, spec)) in items.iter().enumerate() {
            match t {
                Target::Ip(ip) => match (v4(ip), v6(ip)) {
                    (Some(a), _) => s4.push(i, a, fresh_entry(spec)),
                    (_, Some(a)) => s6.push(i, a, fresh_entry(spec)),
                    _ => {}
                },
                Target::Domain(d) => {
                    let k = domain_key(d)
                        .ok_or_else(|| BlocklistError::BadDomain(d.clone(), "not a name".into()))?;
                    sd.push(i, k, domain_value(d, fresh_entry(spec)));
                }
                Target::Cidr(..) => {
                    self.block(t, spec)?;
                    written += 1;
                }
            }
        }
        let mut present = Vec::new();
        let r4 = insert(self.v4.map(), MAP_BLOCKED_V4, &s4);
        // The batch writes over any entry another writer added since the keys were read: the
        // drop cache may hold one of them (`drop_cache.rs`).
        let advanced = if s4.keys.is_empty() {
            Ok(())
        } else {
            self.drop_cache.advance()
        };
        // Every staged address's filter bit, after the writes (also when the batch failed part
        // way: a bit over nothing only costs a lookup). The occupancy slot is settled even when
        // a bit could not be set, before that error is returned: entries in a map whose slot
        // stayed clear would not be looked up at all.
        let covered = s4.keys.iter().try_for_each(|a| self.front.cover_addr(*a));
        written += self.settle_batch(r4, &s4.at, items, &mut present)?;
        covered?;
        advanced?;
        let r6 = insert(self.v6.map(), MAP_BLOCKED_V6, &s6);
        written += self.settle_batch(r6, &s6.at, items, &mut present)?;
        let rd = insert(self.domains.map(), MAP_BLOCKED_DOMAINS, &sd);
        // The same for every staged domain's bit in the domain filter.
        let covered = sd
            .keys
            .iter()
            .try_for_each(|k| self.front_names.cover_name(*k));
        written += self.settle_batch(rd, &sd.at, items, &mut present)?;
        covered?;
        for i in present {
            if let Some((t, spec)) = items.get(i) {
                self.block(t, spec)?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// After one map's batch: its occupancy slot set if anything was meant to go in (after the
    /// writes it covers, as `occupancy.rs` requires; also when the batch failed part way, since
    /// the entries before the failure are in), the keys found there added to `present`, the
    /// count of entries written returned.
    fn settle_batch(
        &mut self,
        r: Result<(usize, Vec<usize>), BlocklistError>,
        staged_at: &[usize],
        items: &[(Target, Spec)],
        present: &mut Vec<usize>,
    ) -> Result<usize, BlocklistError> {
        if let Some((t, _)) = staged_at.first().and_then(|&i| items.get(i)) {
            self.mark(t, List::Blocked)?;
        }
        let (n, p) = r.map_err(|e| self.with_capacity(e))?;
        present.extend(p);
        Ok(n)
    }

    /// A `Full` error names the capacity the map was loaded with.
    fn with_capacity(&self, e: BlocklistError) -> BlocklistError {
        match e {
            BlocklistError::Full { map, .. } => BlocklistError::Full {
                map,
                capacity: self.capacity(map),
            },
            e => e,
        }
    }
}

/// Every key of a hash map, in batches; `None` when the kernel refuses the batch call (then
/// the caller walks the keys one at a time).
pub(super) fn hash_keys<K: Pod, V: Pod>(map: &MapData) -> Option<Vec<K>> {
    match map_batch::keys::<K, V>(map) {
        Ok(k) => Some(k),
        Err(e) => {
            log::debug!("batched key read refused ({e}); reading one key at a time");
            None
        }
    }
}
