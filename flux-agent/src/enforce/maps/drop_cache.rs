//! The IPv4 drop cache's upkeep (`flux_common::MAP_DROP_CACHE_V4`, written by the kernel only):
//! the verdict generation (`flux_common::MAP_VERDICT_GEN`) that [`Maps`] advances after every
//! change that could make a cached drop wrong, and the drops the cache's slots made that their
//! entries' hit counts do not show yet.
//!
//! When to advance (see `MAP_VERDICT_GEN`): after every write or removal of an exact IPv4 block
//! and every change of an allowed IPv4 CIDR, *after* the map write, through an atomic
//! compare-and-swap on an mmap of the word (two processes advance it: the agent and
//! `flux-agent blocklist`). A slot
//! the kernel filled from a lookup before the change carries the older generation and no
//! longer drops. Writes that bypass [`Maps`] (bpftool) are caught up by the slot's re-check
//! after `DROP_CACHE_RECHECK` drops, and by the agent's sweep, which advances the word once a
//! minute ([`Maps::advance_verdict_generation`]).
//!
//! Every writer sets the word to a value it never held before: the larger of the word plus one
//! step and twice the boot-time clock in ns ([`next_generation`]; no writer advances twice in a
//! nanosecond). A process that cannot map the word advances it with a read and a write through
//! the syscall, and a writer in between can have its value overwritten by a smaller one; that
//! value is still new (the clock moved on since every earlier value was taken), so no slot
//! stamped before is trusted again, and a slot stamped with it was filled after both writers'
//! changes. This rests on every writer reading one boot-time clock: a writer in another time
//! namespace that also cannot map the word could bring back a value, and a slot stamped with
//! it would drop until its re-check (64 drops per CPU). Every writer here is root, and maps it.
//!
//! On a weakly ordered CPU (arm64) the kernel's read of the word is a plain load, not an
//! acquire: the lookup after it could be served first, and a slot filled from a lookup that
//! raced a change could carry the new stamp. The re-check after `DROP_CACHE_RECHECK` drops
//! bounds that, as for a raw write; on x86 loads are not reordered with later loads.
//!
//! May touch: the pinned VERDICT_GEN map (mapped and written) and DROP_CACHE_V4 (read).

use std::{collections::HashMap, path::Path, sync::atomic::Ordering};

use aya::{
    maps::{Array, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    sys::SyscallError,
};
use flux_common::{
    DropCacheSlot, MAP_DROP_CACHE_V4, MAP_VERDICT_GEN, VERDICT_GEN_OFF, VERDICT_GEN_STEP,
    drop_cache_slot,
};

use super::{BlocklistError, Maps, boot_ns, front_filter::Mapped, map_err};
use crate::kernel::pins::{self, PinError};

/// The generation word as this process can reach it.
enum Generation {
    /// The folder's program predates the cache: nothing to keep.
    Absent,
    Mapped(Mapped),
    /// Pinned but not mappable here: advanced by a read and a write.
    Unmapped(Array<MapData, u64>),
}

/// The pinned drop cache and its generation word.
pub(super) struct DropCache {
    generation: Generation,
    slots: Option<PerCpuArray<MapData, DropCacheSlot>>,
}

impl DropCache {
    pub(super) fn open(pin_dir: &Path) -> Result<Self, BlocklistError> {
        let generation = match pins::open(pin_dir, MAP_VERDICT_GEN) {
            Err(PinError::NotLoaded(_)) => Generation::Absent,
            Err(e) => return Err(e.into()),
            Ok(data) => match Mapped::new(data, 1) {
                Ok(m) => Generation::Mapped(m),
                Err(e) => {
                    log::debug!("cannot map {MAP_VERDICT_GEN} ({e}); advanced by syscall");
                    let data = pins::open(pin_dir, MAP_VERDICT_GEN)?;
                    Generation::Unmapped(
                        Array::try_from(Map::Array(data))
                            .map_err(map_err("open", MAP_VERDICT_GEN))?,
                    )
                }
            },
        };
        let slots = match pins::open(pin_dir, MAP_DROP_CACHE_V4) {
            Err(PinError::NotLoaded(_)) => None,
            Err(e) => return Err(e.into()),
            Ok(data) => Some(
                PerCpuArray::try_from(Map::PerCpuArray(data))
                    .map_err(map_err("open", MAP_DROP_CACHE_V4))?,
            ),
        };
        Ok(Self { generation, slots })
    }

    /// Applies `f` to the word: atomically through the mmap, or by a read and a write.
    fn update(&mut self, f: impl Fn(u64) -> u64) -> Result<(), BlocklistError> {
        match &mut self.generation {
            Generation::Absent => Ok(()),
            Generation::Mapped(m) => {
                let word = m.word(0);
                // A compare-exchange loop: `f` is not always an add (the off bit).
                let mut cur = word.load(Ordering::SeqCst);
                while let Err(now) =
                    word.compare_exchange(cur, f(cur), Ordering::SeqCst, Ordering::SeqCst)
                {
                    cur = now;
                }
                Ok(())
            }
            Generation::Unmapped(a) => {
                let cur = a.get(&0, 0).map_err(map_err("read", MAP_VERDICT_GEN))?;
                a.set(0, f(cur), 0)
                    .map_err(map_err("update", MAP_VERDICT_GEN))
            }
        }
    }

    /// After a change that could make a cached drop wrong: no slot filled before it drops again
    /// without a lookup.
    pub(super) fn advance(&mut self) -> Result<(), BlocklistError> {
        let now = boot_ns();
        self.update(|g| next_generation(g, now, g & VERDICT_GEN_OFF == 0))
    }

    /// Turns the cache on or off (the off bit); either way no slot filled before drops again.
    pub(super) fn set_enabled(&mut self, on: bool) -> Result<(), BlocklistError> {
        let now = boot_ns();
        self.update(|g| next_generation(g, now, on))
    }

    /// The generation word as the kernel reads it; `None` without a cache.
    pub(super) fn generation(&self) -> Result<Option<u64>, BlocklistError> {
        match &self.generation {
            Generation::Absent => Ok(None),
            Generation::Mapped(m) => Ok(Some(m.word(0).load(Ordering::SeqCst))),
            Generation::Unmapped(a) => a
                .get(&0, 0)
                .map(Some)
                .map_err(map_err("read", MAP_VERDICT_GEN)),
        }
    }

    /// After `addr`'s exact block was removed and the generation advanced: its slot emptied on
    /// every CPU, so that the drops it made for the removed block are not counted on the next
    /// block of the same address. (The kernel empties it too when it next looks the address
    /// up, but with its /24 gone from the front filter it may never look again.)
    ///
    /// Written only when no CPU's slot at that index holds another address's drop or count
    /// (an idle slot, stamp and count zero, as the kernel leaves one it settles, holds
    /// neither), and then as zeros on every CPU. Why: the write copies each CPU's slot word by
    /// word while that CPU's program may be filling the same slot for another blocked address,
    /// stamp last. A slot of another address written back as it was read could end up torn
    /// into that address under the fill's current stamp, and an address unblocked or
    /// allowlisted since would be dropped until the re-check (`DROP_CACHE_RECHECK` drops).
    /// Zeros torn with a fill leave the filled address (blocked when it was filled; its copied
    /// expiry possibly zero, so dropped past it until the re-check or the next generation) or
    /// the zero address, which the kernel never serves from the cache. When another address
    /// holds a live slot, nothing is written: the removed block's drops stay in the slot until
    /// the kernel next looks the address up, and go to its next block if it is blocked again
    /// first (a count, never a drop).
    ///
    /// A read and a write of the slot's per-CPU values: a kernel write in between is undone.
    /// What that can do, in the microseconds between the two calls: lose drops the slot counted
    /// meanwhile, count again drops the kernel had just added to their entry, or undo the
    /// kernel's emptying of the slot after a raw removal (whose cost stays bounded by the
    /// re-check).
    pub(super) fn forget(&mut self, addr: [u8; 4]) -> Result<(), BlocklistError> {
        let Some(slots) = &mut self.slots else {
            return Ok(());
        };
        let i = drop_cache_slot(addr);
        let values = slots
            .get(&i, 0)
            .map_err(map_err("read", MAP_DROP_CACHE_V4))?;
        // Neither drops (no stamp) nor counts: zeroing it loses nothing.
        let idle = |s: &DropCacheSlot| s.stamp == 0 && s.pending == 0;
        let held = values.iter().any(|s| s.addr == addr && !idle(s));
        let other = values.iter().any(|s| s.addr != addr && !idle(s));
        if !held || other {
            return Ok(());
        }
        let emptied = vec![DropCacheSlot::default(); values.len()];
        // As many values as the read returned, one per possible CPU: only a kernel that
        // changed its CPU count could refuse them.
        let emptied = PerCpuValues::try_from(emptied).map_err(|io_error| {
            map_err("update", MAP_DROP_CACHE_V4)(MapError::SyscallError(SyscallError {
                call: "per-cpu values",
                io_error,
            }))
        })?;
        slots
            .set(i, emptied, 0)
            .map_err(map_err("update", MAP_DROP_CACHE_V4))
    }

    /// The drops the slots made that their entries' hits do not count yet, per address, summed
    /// over every slot of every CPU. Whatever the slot's stamp: the kernel adds a slot's drops
    /// to its address's entry when it next looks that address up ([`DropCache::forget`] empties
    /// the slots of a removed block when no other address's live slot shares their index).
    pub(super) fn pending(&self) -> Result<HashMap<[u8; 4], u64>, BlocklistError> {
        let mut out = HashMap::new();
        let Some(slots) = &self.slots else {
            return Ok(out);
        };
        for i in 0..slots.len() {
            let per_cpu = slots
                .get(&i, 0)
                .map_err(map_err("read", MAP_DROP_CACHE_V4))?;
            for s in per_cpu.iter().filter(|s| s.pending != 0) {
                *out.entry(s.addr).or_default() += u64::from(s.pending);
            }
        }
        Ok(out)
    }
}

/// The word after `word`, at boot-time `now_ns`: a value it never held (the larger of one step
/// on and twice the clock), the cache on or off as `on` says.
fn next_generation(word: u64, now_ns: u64, on: bool) -> u64 {
    let next = (word & !VERDICT_GEN_OFF)
        .wrapping_add(VERDICT_GEN_STEP)
        .max(now_ns.saturating_mul(2));
    if on { next } else { next | VERDICT_GEN_OFF }
}

impl Maps {
    /// Advances the verdict generation: every drop-cache slot is looked up again before it
    /// drops. [`Maps`] does this after each change it makes; the agent's sweep calls it too, so
    /// that a change written past [`Maps`] (bpftool) reaches the cache within a minute.
    pub fn advance_verdict_generation(&mut self) -> Result<(), BlocklistError> {
        self.drop_cache.advance()
    }

    /// Turns the kernel's drop cache on or off (on after every load). Off, every IPv4 drop
    /// pays the full lookup: for measuring that path, or ruling the cache out.
    pub fn set_drop_cache(&mut self, on: bool) -> Result<(), BlocklistError> {
        self.drop_cache.set_enabled(on)
    }

    /// The verdict generation word (`flux_common::MAP_VERDICT_GEN`), for tests and diagnostics;
    /// `None` when the loaded program has no drop cache.
    pub fn verdict_generation(&self) -> Result<Option<u64>, BlocklistError> {
        self.drop_cache.generation()
    }

    /// [`DropCache::pending`].
    pub(super) fn pending_drops(&self) -> Result<HashMap<[u8; 4], u64>, BlocklistError> {
        self.drop_cache.pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_heap() -> DropCache {
        DropCache {
            generation: Generation::Mapped(Mapped::on_heap(1)),
            slots: None,
        }
    }

    fn word(c: &DropCache) -> u64 {
        c.generation().unwrap().unwrap()
    }

    #[test]
    fn a_generation_is_never_held_twice_even_when_a_write_is_lost() {
        // Two writers read 10; one writes 12, then 14; the other's read-and-write lands last.
        // Its value must be new, not 12 again: the clock moved on since 12 was taken.
        let first = next_generation(10, 5, true);
        let second = next_generation(first, 6, true);
        let late = next_generation(10, 8, true);
        assert!(late > second && second > first, "{first} {second} {late}");
        assert_eq!(late & VERDICT_GEN_OFF, 0);
        // Within one nanosecond a step still moves it on.
        assert_eq!(next_generation(100, 1, true), 102);
        assert_eq!(next_generation(101, 1, true), 102, "turned on");
        assert_eq!(next_generation(100, 1, false), 103, "turned off");
    }

    #[test]
    fn every_advance_changes_the_word_and_keeps_the_off_bit() {
        let mut c = on_heap();
        c.advance().unwrap();
        assert_eq!(word(&c) & VERDICT_GEN_OFF, 0);
        let first = word(&c);
        c.set_enabled(false).unwrap();
        let off = word(&c);
        assert_eq!(off & VERDICT_GEN_OFF, VERDICT_GEN_OFF);
        c.advance().unwrap();
        assert_eq!(word(&c) & VERDICT_GEN_OFF, VERDICT_GEN_OFF, "still off");
        assert_ne!(word(&c), off);
        c.set_enabled(true).unwrap();
        let on = word(&c);
        assert_eq!(on & VERDICT_GEN_OFF, 0);
        // Turning it on again never returns to a value slots were stamped with before.
        assert!(on > first);
    }

    #[test]
    fn an_absent_cache_has_nothing_to_keep() {
        let mut c = DropCache {
            generation: Generation::Absent,
            slots: None,
        };
        c.advance().unwrap();
        assert_eq!(c.generation().unwrap(), None);
        assert!(c.pending().unwrap().is_empty());
    }
}
