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
//! and during a rebuild. Bits are cleared only by a rebuild (`rebuild_words`), which clears first
//! and then reads the maps again and sets the bits of everything there: an entry another writer
//! inserted between the rebuild's two reads has its bit cleared until that second read (tens of ms
//! at hundreds of thousands of entries); every other one is seen by the second read or sets its
//! own bit after the clear. A stale bit only costs the kernel the lookups. A fill that cannot
//! read the maps (after a rebuild's clear, or the agent's refill at open) turns the filter off,
//! fail-closed, and the next sweep fills it again (`Mapped::settle_fill`).
//!
//! A process that cannot map the filter and still writes an IPv4 entry clears the ready word
//! (and sets every bit) with a map update of the whole value (`value_io`: the words are the
//! map's one value): the kernel then looks every address up, the safe side, until the next
//! process that can map it opens the maps and fills it again.
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

use aya::maps::{IterableMap as _, MapData};
use flux_common::{
    BlockEntry, DomainBlock, FRONT_NAMES_SLOTS, FRONT_NAMES_WORDS, FRONT_V4_SLOTS, FRONT_V4_WORDS,
    MAP_BLOCKED_CIDR_V4, MAP_BLOCKED_DOMAINS, MAP_BLOCKED_V4, MAP_FRONT_NAMES, MAP_FRONT_V4,
    front_name_bit, front_v4_bit, front_v4_span, front_word,
};

use super::{BlocklistError, Maps, Target, bulk_write, domain_key, map_err, v4};
use crate::kernel::pins::{self, PinError};

/// The filter's words as mapped into this process, and what this process knows of their upkeep.
pub(super) struct Mapped {
    words: NonNull<AtomicU64>,
    /// Words of the map's one value: the filter words and the ready word.
    slots: u32,
    bytes: usize,
    /// What holds the words: the pinned map's mapping (unmapped on drop), or, in unit tests,
    /// memory of this process.
    backing: Backing,
    /// An entry this filter covers left through this handle since its last rebuild (or a fill
    /// failed): its bits may be stale, and the next sweep rebuilds it.
    stale: bool,
    /// This handle turned the filter off because a fill failed ([`Mapped::settle_fill`]): the
    /// next fill that succeeds turns it on again. A filter another writer turned off is left
    /// off by a rebuild: only an open fills it and turns it on.
    off_by_us: bool,
}

enum Backing {
    /// Keeps the map (and so the mapping's object) alive.
    Mmap { _map: MapData },
    #[cfg(test)]
    Heap { _words: Box<[AtomicU64]> },
}

// SAFETY: the mapping is shared memory that every access reaches through an atomic; it lives as
// long as this value and is unmapped once, on drop.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps the array `map` of one value of `slots` words (also the verdict generation,
    /// `drop_cache.rs`, a value of one word).
    pub(super) fn new(map: MapData, slots: u32) -> std::io::Result<Self> {
        // The pinned array must be the size this build expects: every word read below is in it.
        let (entries, value) = map
            .info()
            .map(|i| (i.max_entries(), i.value_size()))
            .map_err(std::io::Error::other)?;
        if (entries, value) != (1, slots * 8) {
            return Err(std::io::Error::other(format!(
                "{entries} entries of {value} bytes where one of {} is expected",
                slots * 8
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
            backing: Backing::Mmap { _map: map },
            stale: false,
            off_by_us: false,
        })
    }

    /// A filter of `slots` words (the last the ready word) in this process's memory, all clear.
    #[cfg(test)]
    pub(super) fn on_heap(slots: u32) -> Self {
        let mut heap: Box<[AtomicU64]> = (0..slots).map(|_| AtomicU64::new(0)).collect();
        let words = NonNull::new(heap.as_mut_ptr()).expect("a box is never null");
        Self {
            words,
            slots,
            bytes: 0,
            backing: Backing::Heap { _words: heap },
            stale: false,
            off_by_us: false,
        }
    }

    pub(super) fn word(&self, i: u32) -> &AtomicU64 {
        assert!(i < self.slots, "front filter word {i} out of range");
        // SAFETY: in range (checked), 8-byte aligned (page-aligned base), mapped while `self` is.
        unsafe { &*self.words.as_ptr().add(i as usize) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        match self.backing {
            // SAFETY: the mapping made in `new`, unmapped once.
            Backing::Mmap { .. } => unsafe {
                libc::munmap(self.words.as_ptr().cast(), self.bytes);
            },
            #[cfg(test)]
            Backing::Heap { .. } => {}
        }
    }
}

/// The pinned front filter as this process can reach it.
pub(super) enum FrontFilter {
    /// The folder's program predates the filter: nothing to keep.
    Absent,
    Mapped(Mapped),
    /// Pinned but not mappable here: writes to the maps it covers turn the filter off (the ready
    /// word to 0, every bit set: [`value_io::turn_off`]). A pin of another size never gets this
    /// far: `pins::open` refuses it.
    Unmapped(MapData, u32),
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
                Ok(Self::Unmapped(pins::open(pin_dir, name)?, slots))
            }
        }
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
            Self::Unmapped(map, slots) => {
                value_io::turn_off(map, *slots).map_err(map_err("update", "front filter"))
            }
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
            Self::Mapped(m) => Ok(Some(m.is_ready())),
            Self::Unmapped(map, slots) => value_io::read(map, *slots)
                .map(|words| words.last().map(|ready| *ready != 0))
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

/// The filter's value read and written whole through bpf(2), for a process that cannot map it.
///
/// Hand-written: aya's `Array::get` returns the value on the stack, and this one is 2 MiB (more
/// than a tokio worker's stack); these calls take it in a buffer on the heap.
mod value_io {
    use std::{
        io,
        os::fd::{AsFd as _, AsRawFd as _},
    };

    use aya::{
        maps::{MapData, MapError},
        sys::SyscallError,
    };

    // bpf(2) commands (include/uapi/linux/bpf.h).
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

    /// The element members of `union bpf_attr`.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }

    fn elem(
        cmd: libc::c_long,
        call: &'static str,
        map: &MapData,
        value: *mut u64,
    ) -> Result<(), MapError> {
        let key = 0u32;
        let mut attr = ElemAttr {
            map_fd: map.fd().as_fd().as_raw_fd().unsigned_abs(),
            _pad: 0,
            key: std::ptr::from_ref(&key) as u64,
            value: value as u64,
            flags: 0,
        };
        // SAFETY: a complete element attribute; `key` is the array's 4-byte index and `value`
        // points to a buffer of the map's value size (`read` and `turn_off` size it from
        // `slots`, which `pins::open` checked against the pin's layout). The kernel reads at
        // most `size` bytes of the attribute.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                std::ptr::from_mut(&mut attr),
                size_of::<ElemAttr>(),
            )
        };
        if r < 0 {
            return Err(MapError::SyscallError(SyscallError {
                call,
                io_error: io::Error::last_os_error(),
            }));
        }
        Ok(())
    }

    /// The filter's `slots` words, the ready word last.
    pub(super) fn read(map: &MapData, slots: u32) -> Result<Vec<u64>, MapError> {
        let mut words = vec![0u64; slots as usize];
        elem(
            BPF_MAP_LOOKUP_ELEM,
            "bpf_map_lookup_elem",
            map,
            words.as_mut_ptr(),
        )?;
        Ok(words)
    }

    /// Writes every filter bit set and the ready word 0. All bits set, not the bits read back:
    /// the value is copied word by word with the ready word last, so while the copy runs the
    /// kernel may still trust the filter, and bits read earlier would clear any another writer
    /// set meanwhile. Set bits only cost lookups. The cost: once a fill at open turns the
    /// filter on again, every bit stays set (every address looked up) until a rebuild clears
    /// them (after a removal through the agent, or a failed fill).
    pub(super) fn turn_off(map: &MapData, slots: u32) -> Result<(), MapError> {
        let mut words = vec![u64::MAX; slots as usize];
        if let Some(ready) = words.last_mut() {
            *ready = 0;
        }
        elem(
            BPF_MAP_UPDATE_ELEM,
            "bpf_map_update_elem",
            map,
            words.as_mut_ptr(),
        )
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

impl Mapped {
    /// The ready word: the last word.
    fn ready_word(&self) -> &AtomicU64 {
        self.word(self.slots - 1)
    }

    /// Whether the kernel trusts this filter's clear bits.
    fn is_ready(&self) -> bool {
        self.ready_word().load(Ordering::SeqCst) != 0
    }

    /// Sets `words`' bits: one atomic OR per non-zero word.
    fn or_words(&self, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            if *w != 0 {
                self.word(i as u32).fetch_or(*w, Ordering::SeqCst);
            }
        }
    }

    /// Clears the bits that `keep` does not have; returns how many.
    fn clear_unneeded(&self, keep: &[u64]) -> u64 {
        let mut cleared = 0u64;
        for (i, k) in keep.iter().enumerate() {
            let w = self.word(i as u32);
            let stale = w.load(Ordering::SeqCst) & !*k;
            if stale != 0 {
                cleared += u64::from(stale.count_ones());
                w.fetch_and(!stale, Ordering::SeqCst);
            }
        }
        cleared
    }

    /// The end of a fill: `read` is the bits of every entry, read from the maps (after the
    /// clear, in a rebuild), or the error that read met.
    ///
    /// - Read: the bits are set and the filter is no longer stale. It is turned on (the kernel
    ///   trusts its clear bits) when `turn_on` (a fill at open) or when this handle turned it
    ///   off; a filter another writer turned off stays off, since that writer's entries may have
    ///   no bits yet.
    /// - Not read: the filter is turned off, fail-closed, and left stale so that the next sweep
    ///   fills it again. After a rebuild's clear, entries another writer inserted between the
    ///   two reads have lost their bits; at open, entries an older version wrote may never have
    ///   had any. Either way a filter left on would hide their blocks from the kernel, where an
    ///   off one only costs it the lookups.
    fn settle_fill<E>(&mut self, read: Result<Vec<u64>, E>, turn_on: bool) -> Result<(), E> {
        match read {
            Ok(words) => {
                self.or_words(&words);
                if turn_on || self.off_by_us {
                    self.ready_word().store(1, Ordering::SeqCst);
                    self.off_by_us = false;
                }
                self.stale = false;
                Ok(())
            }
            Err(e) => {
                self.ready_word().store(0, Ordering::SeqCst);
                self.off_by_us = true;
                self.stale = true;
                Err(e)
            }
        }
    }
}

/// Clears the bits of `m` that no entry needs any more (after removals), then sets again the bits
/// of everything the maps hold, so that an entry another writer added meanwhile is covered;
/// `read` reads the bits every entry needs (every key). Returns how many bits were cleared. A
/// first read that fails leaves the filter as it was (nothing was cleared); a second that fails
/// turns it off ([`Mapped::settle_fill`]).
fn rebuild_words<E>(m: &mut Mapped, read: impl Fn() -> Result<Vec<u64>, E>) -> Result<u64, E> {
    let keep = read()?;
    let cleared = m.clear_unneeded(&keep);
    m.settle_fill(read(), false)?;
    Ok(cleared)
}

/// One of the two front filters.
#[derive(Clone, Copy)]
enum Which {
    V4,
    Names,
}

impl Which {
    const BOTH: [Which; 2] = [Which::V4, Which::Names];

    fn name(self) -> &'static str {
        match self {
            Which::V4 => "IPv4",
            Which::Names => "domain",
        }
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

    /// The bits `which` needs for everything its maps hold, as words. Reads every key.
    fn needed_words(&self, which: Which) -> Result<Vec<u64>, BlocklistError> {
        match which {
            Which::V4 => {
                let (addrs, cidrs) = self.v4_keys()?;
                // One OR per distinct word rather than per entry: a million addresses share few
                // words.
                Ok(needed(&addrs, &cidrs))
            }
            Which::Names => Ok(needed_names(&self.domain_keys()?)),
        }
    }

    fn filter_slot(&mut self, which: Which) -> &mut FrontFilter {
        match which {
            Which::V4 => &mut self.front,
            Which::Names => &mut self.front_names,
        }
    }

    /// `which`'s filter as mapped here; `None` when it is absent or not mapped.
    fn mapped(&mut self, which: Which) -> Option<&mut Mapped> {
        match self.filter_slot(which) {
            FrontFilter::Mapped(m) => Some(m),
            _ => None,
        }
    }

    /// At open: a filter that is not ready (just created, or turned off by a writer that could
    /// not map it) is filled from the maps and then declared ready; with `refill`, a ready one
    /// has the bits of every entry set again too (bits are only added, so this is safe beside
    /// every other writer). The agent opens with `refill` ([`Maps::open_refilled`]): a pin an
    /// older version left in place (its `unload` keeps pins it does not know) can be ready while
    /// entries that version wrote have no bits, which would hide their blocks from the kernel
    /// until some removal rebuilt the filter. The CLI, which opens the maps for each command,
    /// does not: a refill reads every key. A failure is logged, not returned: the filter is
    /// turned off ([`Mapped::settle_fill`]), which only costs the kernel its lookups, and the
    /// agent's next sweep fills it again.
    pub(super) fn ready_front(&mut self, refill: bool) {
        for which in Which::BOTH {
            if !self.mapped(which).is_some_and(|m| refill || !m.is_ready()) {
                continue;
            }
            let read = self.needed_words(which);
            if let Some(m) = self.mapped(which)
                && let Err(e) = m.settle_fill(read, true)
            {
                log::warn!(
                    "cannot fill the {} front filter ({e}); it stays off until a sweep fills it",
                    which.name()
                );
            }
        }
    }

    /// [`rebuild_words`] of `which`'s filter from its maps. Returns how many bits were cleared.
    fn rebuild(&mut self, which: Which) -> Result<u64, BlocklistError> {
        // The filter is taken out for the rebuild, so that its reads can borrow the maps.
        let mut filter = std::mem::replace(self.filter_slot(which), FrontFilter::Absent);
        let result = match &mut filter {
            FrontFilter::Mapped(m) => rebuild_words(m, || self.needed_words(which)),
            _ => Ok(0),
        };
        *self.filter_slot(which) = filter;
        result
    }

    /// [`Maps::rebuild`] of the IPv4 filter.
    pub fn rebuild_front(&mut self) -> Result<u64, BlocklistError> {
        self.rebuild(Which::V4)
    }

    /// [`Maps::rebuild`] of each filter that is stale: an entry it covers left through this
    /// handle since its last rebuild, or a fill failed (the periodic sweep calls this). Both
    /// are tried; the first error is returned. Returns the bits cleared.
    pub fn rebuild_front_if_stale(&mut self) -> Result<u64, BlocklistError> {
        let mut cleared = 0;
        let mut first_err = None;
        for which in Which::BOTH {
            if !self.mapped(which).is_some_and(|m| m.stale) {
                continue;
            }
            match self.rebuild(which) {
                Ok(n) => cleared += n,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(cleared), Err)
    }

    /// After a removal: when the maps the filter covers are empty it is rebuilt at once (so
    /// cleared); otherwise it is marked stale for the next sweep's rebuild
    /// ([`Maps::rebuild_front_if_stale`]): reading a million keys twice per removal would make a
    /// feed's removals quadratic.
    pub(super) fn front_after_removal(&mut self, t: &Target) -> Result<(), BlocklistError> {
        let (which, empty) = match t {
            Target::Ip(ip) | Target::Cidr(ip, _) => {
                if !ip.is_ipv4() {
                    return Ok(());
                }
                (Which::V4, self.v4_maps_empty())
            }
            Target::Domain(_) => (
                Which::Names,
                self.map_empty(flux_common::Occupied::BlockedDomains),
            ),
        };
        if empty {
            return self.rebuild(which).map(|_| ());
        }
        if let Some(m) = self.mapped(which) {
            m.stale = true;
        }
        Ok(())
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

    /// Filter words 0..3 and the ready word, as the kernel would read them.
    fn state(m: &Mapped) -> ([u64; 3], bool) {
        let w = |i| m.word(i).load(Ordering::SeqCst);
        ([w(0), w(1), w(2)], m.is_ready())
    }

    fn ready_filter(words: [u64; 3]) -> Mapped {
        let m = Mapped::on_heap(4);
        m.or_words(&words);
        m.ready_word().store(1, Ordering::SeqCst);
        m
    }

    #[test]
    fn a_fill_that_fails_turns_the_filter_off_until_one_succeeds() {
        // The agent's refill at open, on a ready filter: entries an older version wrote may
        // have no bits, so a failed refill must not leave it on.
        let mut m = ready_filter([0b1, 0, 0]);
        assert_eq!(m.settle_fill(Err("read"), true), Err("read"));
        assert_eq!(state(&m), ([0b1, 0, 0], false));
        assert!(m.stale && m.off_by_us);
        // The sweep's rebuild turns on what this handle turned off.
        assert_eq!(
            rebuild_words(&mut m, || Ok::<_, &str>(vec![0b10, 0, 4])),
            Ok(1)
        );
        assert_eq!(state(&m), ([0b10, 0, 4], true));
        assert!(!m.stale && !m.off_by_us);
    }

    #[test]
    fn a_rebuild_whose_second_read_fails_turns_the_filter_off() {
        // Between the two reads another writer may have inserted an entry whose bit the clear
        // took: the filter left on would hide its block.
        let mut m = ready_filter([0b11, 0, 0]);
        let reads = std::cell::Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            if reads.get() == 1 {
                Ok(vec![0b1, 0, 0])
            } else {
                Err("second read")
            }
        };
        assert_eq!(rebuild_words(&mut m, read), Err("second read"));
        assert_eq!(state(&m), ([0b1, 0, 0], false));
        assert!(m.stale, "the next sweep tries again");
    }

    #[test]
    fn a_rebuild_whose_first_read_fails_changes_nothing() {
        let mut m = ready_filter([0b11, 0, 0]);
        assert_eq!(
            rebuild_words(&mut m, || Err::<Vec<u64>, _>("first")),
            Err("first")
        );
        assert_eq!(state(&m), ([0b11, 0, 0], true));
    }

    #[test]
    fn a_rebuild_leaves_off_a_filter_another_writer_turned_off() {
        // A writer that could not map the filter turned it off after an insert whose bit it
        // could not set; only a fill at open turns it on again.
        let mut m = Mapped::on_heap(4);
        assert_eq!(
            rebuild_words(&mut m, || Ok::<_, &str>(vec![0b1, 0, 0])),
            Ok(0)
        );
        assert_eq!(state(&m), ([0b1, 0, 0], false));
        assert_eq!(m.settle_fill(Ok::<_, &str>(vec![0b1, 0, 0]), true), Ok(()));
        assert_eq!(state(&m), ([0b1, 0, 0], true));
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
