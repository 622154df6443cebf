//! The front filters: `flux_common::MAP_FRONT_V4`, one bit per /24 that may hold a blocked IPv4
//! address or CIDR, so that the kernel skips the exact and CIDR lookups of every other address;
//! and `flux_common::MAP_FRONT_NAMES`, one bit per domain-hash bucket that may hold a blocked
//! domain, so that it skips the domain blocklist lookup of every other domain of a question.
//! [`Maps`] keeps both right here, on every insert, at open and when their maps empty; what is
//! said below of the IPv4 filter holds for the domain filter over `BLOCKED_DOMAINS`.
//!
//! The bits are written through an mmap of the array, each with an atomic OR, because two
//! processes (the agent and `flux-agent blocklist`) write them: a map update of a whole word
//! through the syscall would be a read-modify-write that can lose the other writer's bit. The
//! invariant (see `MAP_FRONT_V4`): while the ready word is non-zero, every IPv4 entry's bits are
//! set, but for two short windows: between an insert and the bit its writer sets right after it,
//! and during a rebuild. Bits are cleared only by [`Maps::rebuild_front`], which clears first and
//! then reads the maps again and sets the bits of everything there: an entry another writer
//! inserted between the rebuild's two reads has its bit cleared until that second read (tens of ms
//! at hundreds of thousands of entries); every other one is seen by the second read or sets its
//! own bit after the clear. A stale bit only costs the kernel the lookups.
//!
//! A process that cannot map the filter (no write access) and still writes an IPv4 entry clears
//! the ready word with a plain map update: the kernel then looks every address up, the safe side,
//! until the next process that can map it opens the maps and fills it again.
//!
//! May touch: the pinned FRONT_V4 and FRONT_NAMES maps (mapped and written), and the IPv4 and
//! domain blocklist maps of [`Maps`] (read).

use std::{
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Array, IterableMap as _, Map, MapData};
use flux_common::{
    BlockEntry, DomainBlock, FRONT_NAMES_SLOTS, FRONT_NAMES_WORDS, FRONT_V4_SLOTS, FRONT_V4_WORDS,
    MAP_BLOCKED_CIDR_V4, MAP_BLOCKED_DOMAINS, MAP_BLOCKED_V4, MAP_FRONT_NAMES, MAP_FRONT_V4,
    front_name_bit, front_v4_bit, front_v4_span, front_word,
};

use super::{BlocklistError, Maps, Target, bulk_write, domain_key, map_err, v4};
use crate::kernel::pins::{self, PinError};

/// The filter's words as mapped into this process.
pub(super) struct Mapped {
    words: NonNull<AtomicU64>,
    /// Entries of the array: the filter words and the ready word.
    slots: u32,
    bytes: usize,
    /// Keeps the map (and so the mapping's object) alive.
    _map: MapData,
}

// SAFETY: the mapping is shared memory that every access reaches through an atomic; it lives as
// long as this value and is unmapped once, on drop.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    fn new(map: MapData, slots: u32) -> std::io::Result<Self> {
        // The pinned array must be the size this build expects: every word read below is in it.
        let loaded = map
            .info()
            .map(|i| i.max_entries())
            .map_err(std::io::Error::other)?;
        if loaded != slots {
            return Err(std::io::Error::other(format!(
                "{loaded} entries where {slots} are expected"
            )));
        }
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let bytes = (slots as usize * size_of::<u64>()).div_ceil(page) * page;
        // SAFETY: a shared mapping of the array's value area, which the kernel sizes exactly so
        // (rounded up to a page); nothing else in this process maps it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let words =
            NonNull::new(p.cast::<AtomicU64>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Self {
            words,
            slots,
            bytes,
            _map: map,
        })
    }

    fn word(&self, i: u32) -> &AtomicU64 {
        assert!(i < self.slots, "front filter word {i} out of range");
        // SAFETY: in range (checked), 8-byte aligned (page-aligned base), mapped while `self` is.
        unsafe { &*self.words.as_ptr().add(i as usize) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.words.as_ptr().cast(), self.bytes) };
    }
}

/// The pinned front filter as this process can reach it.
pub(super) enum FrontFilter {
    /// The folder's program predates the filter: nothing to keep.
    Absent,
    Mapped(Mapped),
    /// Pinned but not mappable here (no write access): writes to the maps it covers turn the
    /// filter off (the ready word to 0). A pin of another size never gets this far:
    /// `pins::open` refuses it.
    Unmapped(Array<MapData, u64>, u32),
}

impl FrontFilter {
    /// The IPv4 filter pinned in `pin_dir`.
    pub(super) fn open_v4(pin_dir: &Path) -> Result<Self, BlocklistError> {
        Self::open(pin_dir, MAP_FRONT_V4, FRONT_V4_SLOTS)
    }

    /// The domain filter pinned in `pin_dir`.
    pub(super) fn open_names(pin_dir: &Path) -> Result<Self, BlocklistError> {
        Self::open(pin_dir, MAP_FRONT_NAMES, FRONT_NAMES_SLOTS)
    }

    fn open(pin_dir: &Path, name: &'static str, slots: u32) -> Result<Self, BlocklistError> {
        let data = match pins::open(pin_dir, name) {
            Ok(d) => d,
            Err(PinError::NotLoaded(_)) => return Ok(Self::Absent),
            Err(e) => return Err(e.into()),
        };
        match Mapped::new(data, slots) {
            Ok(m) => Ok(Self::Mapped(m)),
            Err(e) => {
                log::debug!("cannot map {name} ({e}); writes it covers will turn it off");
                let data = pins::open(pin_dir, name)?;
                let ready = data
                    .info()
                    .map(|i| i.max_entries().saturating_sub(1))
                    .map_err(map_err("read", name))?;
                Array::try_from(Map::Array(data))
                    .map(|a| Self::Unmapped(a, ready))
                    .map_err(map_err("open", name))
            }
        }
    }

    /// Index of the ready word: the last entry.
    fn ready_at(m: &Mapped) -> u32 {
        m.slots - 1
    }

    /// Sets filter bits `first..=last` (whole words at a time where the span covers them).
    fn set_span(&mut self, first: u32, last: u32) -> Result<(), BlocklistError> {
        match self {
            Self::Absent => Ok(()),
            Self::Mapped(m) => {
                let mut bit = first;
                while bit <= last {
                    let (w, mask) = front_word(bit);
                    let word_last = (w << 6) | 63;
                    let mask = if bit & 63 == 0 && word_last <= last {
                        u64::MAX
                    } else {
                        mask
                    };
                    m.word(w).fetch_or(mask, Ordering::SeqCst);
                    bit = if mask == u64::MAX { word_last } else { bit };
                    match bit.checked_add(1) {
                        Some(b) => bit = b,
                        None => break,
                    }
                }
                Ok(())
            }
            Self::Unmapped(a, ready) => a
                .set(*ready, 0, 0)
                .map_err(map_err("update", "front filter")),
        }
    }

    /// After an insert of `t` into the blocklist: its /24s' bits set (IPv4 only).
    pub(super) fn cover(&mut self, t: &Target) -> Result<(), BlocklistError> {
        match t {
            Target::Ip(ip) => match v4(ip) {
                Some(a) => self.cover_addr(a),
                None => Ok(()),
            },
            Target::Cidr(ip, len) => match v4(ip) {
                Some(a) => {
                    let (first, last) = front_v4_span(a, *len);
                    self.set_span(first, last)
                }
                None => Ok(()),
            },
            Target::Domain(_) => Ok(()),
        }
    }

    /// After an insert of the domain of hash `key` into the domain blocklist: its bit set.
    pub(super) fn cover_name(&mut self, key: u64) -> Result<(), BlocklistError> {
        let bit = front_name_bit(key);
        self.set_span(bit, bit)
    }

    pub(super) fn cover_addr(&mut self, a: [u8; 4]) -> Result<(), BlocklistError> {
        let bit = front_v4_bit(a);
        self.set_span(bit, bit)
    }

    /// The ready word as the kernel reads it; `None` when there is no filter.
    pub(super) fn ready(&self) -> Result<Option<bool>, BlocklistError> {
        match self {
            Self::Absent => Ok(None),
            Self::Mapped(m) => Ok(Some(m.word(Self::ready_at(m)).load(Ordering::SeqCst) != 0)),
            Self::Unmapped(a, ready) => a
                .get(ready, 0)
                .map(|v| Some(v != 0))
                .map_err(map_err("read", "front filter")),
        }
    }

    /// Whether filter bit `bit` is set; `None` when it cannot be read here.
    pub(super) fn bit(&self, bit: u32) -> Option<bool> {
        match self {
            Self::Mapped(m) => {
                let (w, mask) = front_word(bit);
                Some(m.word(w).load(Ordering::SeqCst) & mask != 0)
            }
            _ => None,
        }
    }
}

/// The keys of the two IPv4 blocklists: exact addresses, and `(network, length)` CIDRs.
type V4Keys = (Vec<[u8; 4]>, Vec<([u8; 4], u8)>);

/// Filter bits covering `addrs` and `cidrs`, as words.
fn needed(addrs: &[[u8; 4]], cidrs: &[([u8; 4], u8)]) -> Vec<u64> {
    let mut words = vec![0u64; FRONT_V4_WORDS as usize];
    for a in addrs {
        set_bit(&mut words, front_v4_bit(*a));
    }
    for (a, len) in cidrs {
        let (first, last) = front_v4_span(*a, *len);
        for bit in first..=last {
            set_bit(&mut words, bit);
        }
    }
    words
}

/// Filter bits covering the domains of hashes `keys`, as words.
fn needed_names(keys: &[u64]) -> Vec<u64> {
    let mut words = vec![0u64; FRONT_NAMES_WORDS as usize];
    for k in keys {
        set_bit(&mut words, front_name_bit(*k));
    }
    words
}

/// Sets filter bit `bit` in `words` (a bit past them is ignored: every caller sizes `words`
/// for its filter's bits).
fn set_bit(words: &mut [u64], bit: u32) {
    let (w, mask) = front_word(bit);
    if let Some(x) = words.get_mut(w as usize) {
        *x |= mask;
    }
}

/// Sets `words`' bits in `filter`: one atomic OR per non-zero word. A filter not mapped here
/// is turned off instead, if anything is to be set (its writes would be lost otherwise).
fn or_words(filter: &mut FrontFilter, words: &[u64]) -> Result<(), BlocklistError> {
    match filter {
        FrontFilter::Mapped(m) => {
            for (i, w) in words.iter().enumerate() {
                if *w != 0 {
                    m.word(i as u32).fetch_or(*w, Ordering::SeqCst);
                }
            }
            Ok(())
        }
        FrontFilter::Unmapped(..) if words.iter().any(|w| *w != 0) => filter.set_span(0, 0),
        _ => Ok(()),
    }
}

/// Clears the bits of `filter` that `keep` does not have; returns how many.
fn clear_unneeded(filter: &FrontFilter, keep: &[u64]) -> u64 {
    let mut cleared = 0u64;
    if let FrontFilter::Mapped(m) = filter {
        for (i, k) in keep.iter().enumerate() {
            let w = m.word(i as u32);
            let stale = w.load(Ordering::SeqCst) & !*k;
            if stale != 0 {
                cleared += u64::from(stale.count_ones());
                w.fetch_and(!stale, Ordering::SeqCst);
            }
        }
    }
    cleared
}

/// Declares a mapped filter ready (the kernel then trusts its clear bits).
fn set_ready(filter: &FrontFilter) {
    if let FrontFilter::Mapped(m) = filter {
        m.word(FrontFilter::ready_at(m)).store(1, Ordering::SeqCst);
    }
}

impl Maps {
    /// Every key of the two IPv4 blocklists: exact addresses and `(network, length)` CIDRs.
    fn v4_keys(&self) -> Result<V4Keys, BlocklistError> {
        let addrs = match bulk_write::hash_keys::<[u8; 4], BlockEntry>(self.v4.map()) {
            Some(k) => k,
            None => self
                .v4
                .keys()
                .collect::<Result<_, _>>()
                .map_err(map_err("read", MAP_BLOCKED_V4))?,
        };
        let cidrs = self
            .cidr4
            .keys()
            .map(|r| r.map(|k| (k.data(), u8::try_from(k.prefix_len()).unwrap_or(32))))
            .collect::<Result<_, _>>()
            .map_err(map_err("read", MAP_BLOCKED_CIDR_V4))?;
        Ok((addrs, cidrs))
    }

    /// Sets the bits of everything the IPv4 maps hold.
    fn cover_all_v4(&mut self) -> Result<(), BlocklistError> {
        let (addrs, cidrs) = self.v4_keys()?;
        // One OR per distinct word rather than per entry: a million addresses share few words.
        or_words(&mut self.front, &needed(&addrs, &cidrs))
    }

    /// Every key of the domain blocklist (domain hashes).
    fn domain_keys(&self) -> Result<Vec<u64>, BlocklistError> {
        match bulk_write::hash_keys::<u64, DomainBlock>(self.domains.map()) {
            Some(k) => Ok(k),
            None => self
                .domains
                .keys()
                .collect::<Result<_, _>>()
                .map_err(map_err("read", MAP_BLOCKED_DOMAINS)),
        }
    }

    /// Sets the bits of everything the domain blocklist holds.
    fn cover_all_names(&mut self) -> Result<(), BlocklistError> {
        let words = needed_names(&self.domain_keys()?);
        or_words(&mut self.front_names, &words)
    }

    /// At open: a filter that is not ready (just created, or turned off by a writer that could
    /// not map it) is filled from the maps and then declared ready; with `refill`, a ready one
    /// has the bits of every entry set again too (bits are only added, so this is safe beside
    /// every other writer). The agent opens with `refill` ([`Maps::open_refilled`]): a pin an
    /// older version left in place (its `unload` keeps pins it does not know) can be ready while
    /// entries that version wrote have no bits, which would hide their blocks from the kernel
    /// until some removal rebuilt the filter. The CLI, which opens the maps for each command,
    /// does not: a refill reads every key. A failure is logged, not returned: a filter that was
    /// not ready stays off, which only costs the kernel its lookups; a ready one being refilled
    /// stays ready, so entries without bits stay hidden until the next rebuild (as before the
    /// refill existed).
    pub(super) fn ready_front(&mut self, refill: bool) {
        let due = |f: &FrontFilter| {
            matches!(f, FrontFilter::Mapped(_)) && (refill || !matches!(f.ready(), Ok(Some(true))))
        };
        if due(&self.front) {
            match self.cover_all_v4() {
                Ok(()) => set_ready(&self.front),
                Err(e) => log::warn!("cannot fill the IPv4 front filter: {e}"),
            }
        }
        if due(&self.front_names) {
            match self.cover_all_names() {
                Ok(()) => set_ready(&self.front_names),
                Err(e) => log::warn!("cannot fill the domain front filter: {e}"),
            }
        }
    }

    /// Clears the filter bits no IPv4 entry needs any more (after removals), then sets again
    /// the bits of everything the maps hold, so that an entry another writer added meanwhile is
    /// covered. Returns how many bits were cleared. Reads every IPv4 key twice.
    pub fn rebuild_front(&mut self) -> Result<u64, BlocklistError> {
        let FrontFilter::Mapped(_) = &self.front else {
            return Ok(0);
        };
        let (addrs, cidrs) = self.v4_keys()?;
        let cleared = clear_unneeded(&self.front, &needed(&addrs, &cidrs));
        self.cover_all_v4()?;
        self.front_stale = false;
        Ok(cleared)
    }

    /// [`Maps::rebuild_front`] for the domain filter over the domain blocklist.
    pub fn rebuild_front_names(&mut self) -> Result<u64, BlocklistError> {
        let FrontFilter::Mapped(_) = &self.front_names else {
            return Ok(0);
        };
        let cleared = clear_unneeded(&self.front_names, &needed_names(&self.domain_keys()?));
        self.cover_all_names()?;
        self.front_names_stale = false;
        Ok(cleared)
    }

    /// [`Maps::rebuild_front`] and [`Maps::rebuild_front_names`], each if an entry it covers
    /// left through this handle since its last rebuild (the periodic sweep calls this). Returns
    /// the bits cleared.
    pub fn rebuild_front_if_stale(&mut self) -> Result<u64, BlocklistError> {
        let mut cleared = 0;
        if self.front_stale {
            cleared += self.rebuild_front()?;
        }
        if self.front_names_stale {
            cleared += self.rebuild_front_names()?;
        }
        Ok(cleared)
    }

    /// After an IPv4 removal: when both IPv4 maps are empty the whole filter is rebuilt (so
    /// cleared); otherwise its bits are marked stale for the next sweep's rebuild
    /// ([`Maps::rebuild_front_if_stale`]): reading a million keys twice per removal would make a
    /// feed's removals quadratic.
    /// A domain's removal does the same for the domain filter.
    pub(super) fn front_after_removal(&mut self, t: &Target) -> Result<(), BlocklistError> {
        let is_v4 = match t {
            Target::Ip(ip) | Target::Cidr(ip, _) => ip.is_ipv4(),
            Target::Domain(_) => {
                if !self.map_empty(flux_common::Occupied::BlockedDomains) {
                    self.front_names_stale = true;
                    return Ok(());
                }
                return self.rebuild_front_names().map(|_| ());
            }
        };
        if !is_v4 {
            return Ok(());
        }
        if !self.v4_maps_empty() {
            self.front_stale = true;
            return Ok(());
        }
        self.rebuild_front().map(|_| ())
    }

    /// Whether `ip`'s /24 bit is set and the filter ready: for tests and diagnostics. `None`
    /// when the filter is absent or not mapped here.
    pub fn front_covers(&self, ip: &IpAddr) -> Result<Option<(bool, bool)>, BlocklistError> {
        let Some(a) = v4(ip) else {
            return Ok(None);
        };
        let Some(ready) = self.front.ready()? else {
            return Ok(None);
        };
        Ok(self.front.bit(front_v4_bit(a)).map(|b| (b, ready)))
    }
}

impl Maps {
    /// Whether the domain `name`'s filter bit is set and the filter ready: for tests and
    /// diagnostics. `None` when the filter is absent or not mapped here, or `name` is no name.
    pub fn front_covers_name(&self, name: &str) -> Result<Option<(bool, bool)>, BlocklistError> {
        let Some(key) = domain_key(name) else {
            return Ok(None);
        };
        let Some(ready) = self.front_names.ready()? else {
            return Ok(None);
        };
        Ok(self
            .front_names
            .bit(front_name_bit(key))
            .map(|b| (b, ready)))
    }

    /// After an insert of `t` into the blocklist: its bits in the front filter that covers it.
    pub(super) fn cover(&mut self, t: &Target) -> Result<(), BlocklistError> {
        match t {
            Target::Domain(d) => match domain_key(d) {
                Some(k) => self.front_names.cover_name(k),
                None => Ok(()),
            },
            _ => self.front.cover(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ones(words: &[u64]) -> u32 {
        words.iter().map(|w| w.count_ones()).sum()
    }

    #[test]
    fn needed_bits_are_one_per_24_and_every_24_of_a_cidr() {
        let addrs = [[192, 0, 2, 1], [192, 0, 2, 200], [10, 0, 0, 1]];
        assert_eq!(ones(&needed(&addrs, &[])), 2);
        let w = needed(&[], &[([10, 1, 0, 0], 16)]);
        assert_eq!(ones(&w), 256);
        let (word, mask) = front_word(front_v4_bit([10, 1, 7, 9]));
        assert_ne!(w[word as usize] & mask, 0);
        assert_eq!(ones(&needed(&[], &[([0, 0, 0, 0], 0)])), 1 << 24);
        assert_eq!(ones(&needed(&[], &[([192, 0, 2, 128], 25)])), 1);
    }
}
