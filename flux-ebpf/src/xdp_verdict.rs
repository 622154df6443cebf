//! Enforcement: the blocklist maps, the address verdict and the question-name verdict. This is
//! where a packet is judged; `main.rs` acts on the verdict and `sinkhole.rs` rewrites the answer.
//!
//! Addresses: a blocked match (exact address first, then CIDR) is looked for; only then the
//! allowed CIDRs, which win over any block. Names: the question name and every parent domain are
//! looked up by the shared `flux_common::domain_hash`; a hit is counted on the deepest live
//! block that covers the name (the entry that matched most precisely). Expired entries do not
//! block, nor hide a live one behind them; userspace sweeps them.
//!
//! Every lookup is guarded by the map's slot in `OCCUPANCY` (`flux_common::MAP_OCCUPANCY`): a map
//! userspace keeps empty is not looked up at all, so a packet that can match nothing pays for a
//! few array reads instead of hash and trie walks. An IPv4 address is first checked against the
//! front filter (`FRONT_V4`, one bit per /24): a /24 no entry can lie in skips both lookups. A
//! question's domains are checked against the domain front filter (`FRONT_NAMES`, one bit per
//! hash bucket) before the domain blocklist is looked up.
//!
//! An IPv4 address an exact entry blocked is remembered in this CPU's drop cache
//! (`DROP_CACHE_V4`, `flux_common::MAP_DROP_CACHE_V4`), stamped with the verdict generation
//! (`VERDICT_GEN`) read before the lookup: its next packets are dropped on the slot alone until
//! userspace advances the generation (a removal or change of an exact entry, an allowlist
//! change), the entry's expiry passes, or [`DROP_CACHE_RECHECK`] drops send it through the
//! lookup again. The drops made on a slot are added to the entry's hits at that lookup.

use core::{ffi::c_void, intrinsics::AtomicOrdering};

use crate::{
    packet::{MAX_NAME_BASE, Packet},
    scratch::{Scratch, opaque, scratch},
};
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    helpers::{bpf_ktime_get_boot_ns, generated::bpf_map_lookup_elem},
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use flux_common::{
    BlockEntry, Counter, DROP_CACHE_RECHECK, DROP_CACHE_SLOTS, DomainBlock, DropCacheSlot,
    FRONT_NAMES_READY, FRONT_NAMES_SLOTS, FRONT_V4_READY, FRONT_V4_SLOTS, MAX_ALLOWED_CIDRS,
    MAX_ALLOWED_DOMAINS, MAX_BLOCKED_CIDRS, MAX_BLOCKED_DOMAINS, MAX_BLOCKED_IPS, MAX_NAME_WIRE,
    NAME_HASH_INIT, OCCUPANCY_SLOTS, Occupied, VERDICT_GEN_OFF, drop_cache_slot, front_name_bit,
    front_v4_bit, front_word, name_hash_step,
};

#[map]
static BLOCKED_V4: HashMap<[u8; 4], BlockEntry> =
    HashMap::pinned(MAX_BLOCKED_IPS, BPF_F_NO_PREALLOC);
#[map]
static BLOCKED_V6: HashMap<[u8; 16], BlockEntry> =
    HashMap::pinned(MAX_BLOCKED_IPS, BPF_F_NO_PREALLOC);
#[map]
static BLOCKED_CIDR_V4: LpmTrie<[u8; 4], BlockEntry> = LpmTrie::pinned(MAX_BLOCKED_CIDRS, 0);
#[map]
static BLOCKED_CIDR_V6: LpmTrie<[u8; 16], BlockEntry> = LpmTrie::pinned(MAX_BLOCKED_CIDRS, 0);
#[map]
static ALLOWED_CIDR_V4: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(MAX_ALLOWED_CIDRS, 0);
#[map]
static ALLOWED_CIDR_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(MAX_ALLOWED_CIDRS, 0);
#[map]
static BLOCKED_DOMAINS: HashMap<u64, DomainBlock> =
    HashMap::pinned(MAX_BLOCKED_DOMAINS, BPF_F_NO_PREALLOC);
#[map]
static ALLOWED_DOMAINS: HashMap<u64, DomainBlock> =
    HashMap::pinned(MAX_ALLOWED_DOMAINS, BPF_F_NO_PREALLOC);

/// Which of the maps above may hold entries, one slot per map ([`Occupied`]); kept by userspace.
#[map]
static OCCUPANCY: Array<u32> = Array::pinned(OCCUPANCY_SLOTS, 0);

/// The IPv4 front filter (`flux_common::MAP_FRONT_V4`): one bit per /24 that may hold a blocked
/// address, and the ready word, all in the map's one value; kept by userspace through an mmap.
#[map]
static FRONT_V4: Array<[u64; FRONT_V4_SLOTS as usize]> = Array::pinned(1, BPF_F_MMAPABLE);

/// The domain front filter (`flux_common::MAP_FRONT_NAMES`): one bit per domain-hash bucket
/// that may hold a blocked domain, and the ready word, in the map's one value; kept by
/// userspace through an mmap.
#[map]
static FRONT_NAMES: Array<[u64; FRONT_NAMES_SLOTS as usize]> = Array::pinned(1, BPF_F_MMAPABLE);

/// The IPv4 drop cache (`flux_common::MAP_DROP_CACHE_V4`): per CPU, written only here.
#[map]
static DROP_CACHE_V4: PerCpuArray<DropCacheSlot> = PerCpuArray::pinned(DROP_CACHE_SLOTS, 0);

/// The verdict generation the drop cache is valid for (`flux_common::MAP_VERDICT_GEN`);
/// advanced by userspace through an mmap.
#[map]
static VERDICT_GEN: Array<u64> = Array::pinned(1, BPF_F_MMAPABLE);

/// A front filter (`FRONT_V4`, `FRONT_NAMES`) as one packet reads it: its words, when the map
/// could be read and its ready word is set. Null: no bit of it is trusted (the lookups are
/// paid). A nullable pointer, not an `Option`: an `Option` of a raw pointer is a tag beside the
/// pointer, and the pair's closure (a subprogram) could load a pointer half its caller never
/// wrote, which verifiers before about 6.3 refuse. Opened once a packet ([`front_open`]): one
/// map lookup, after which every bit is a plain load. The words are one map value, not one
/// entry each, for that: each entry was a lookup of its own (the ready word, then each bit's
/// word), three a packet that matches nothing.
#[derive(Clone, Copy)]
pub struct Front<const N: usize>(*const [u64; N]);

/// [`Front`] of the IPv4 filter.
pub type FrontV4 = Front<{ FRONT_V4_SLOTS as usize }>;

/// The words of `filter`, if its ready word (at `ready_at`) is set.
#[inline(always)]
fn front_open<const N: usize>(filter: &Array<[u64; N]>, ready_at: u32) -> Front<N> {
    match filter.get_ptr(0) {
        // SAFETY: the map's one value, valid for this program run; only read here.
        Some(words) if unsafe { (*words).get(ready_at as usize) }.is_some_and(|r| *r != 0) => {
            Front(words)
        }
        _ => Front(core::ptr::null()),
    }
}

impl<const N: usize> Front<N> {
    /// Whether the filter is trusted at all.
    #[inline(always)]
    pub fn ready(self) -> bool {
        !self.0.is_null()
    }

    /// Whether the filter says no blocklist entry can lie behind filter bit `bit`: it is ready
    /// and the bit is clear. Anything unreadable says no.
    #[inline(always)]
    fn clear(self, bit: u32) -> bool {
        let (word, mask) = front_word(bit);
        if self.0.is_null() {
            return false;
        }
        // SAFETY: not null, so the map value `front_open` found, valid for this program run.
        unsafe { (*self.0).get(word as usize) }.is_some_and(|w| *w & mask == 0)
    }
}

/// The IPv4 filter, opened ([`front_open`]).
#[inline(always)]
pub fn front_v4() -> FrontV4 {
    front_open(&FRONT_V4, FRONT_V4_READY)
}

/// [`Front::clear`] of `addr`'s /24 in the IPv4 filter.
#[inline(always)]
fn front_v4_clear(front: FrontV4, addr: [u8; 4]) -> bool {
    front.clear(front_v4_bit(addr))
}

/// Whether the map behind `slot` may hold entries. A slot that cannot be read says yes: the
/// lookup it guards is then paid, never skipped.
#[inline(always)]
fn occupied(slot: Occupied) -> bool {
    OCCUPANCY.get(slot as u32).is_none_or(|v| *v != 0)
}

/// What the blocklists say about one address.
enum Match {
    None,
    Blocked,
    Expired,
    Allowed,
}

/// Whether the entry blocks now ([`BlockEntry::active`]). The clock is read only here, on a
/// hit, and only for an entry that expires: the common miss, and a hit on a permanent entry
/// (manual and most feed blocks), pay for no helper call.
#[inline(always)]
fn active(entry: *const BlockEntry) -> bool {
    // SAFETY: a map value pointer from a successful lookup, valid for this program run.
    let expires_ns = unsafe { (*entry).expires_ns };
    expires_ns == 0 || unsafe { bpf_ktime_get_boot_ns() } < expires_ns
}

/// Counts `n` hits on an entry that blocked packets (not one an allowlist overrode).
///
/// `entry` must come from a lookup that handed out a writable pointer (`get_ptr_mut`, or
/// [`lpm_get_ptr_mut`]): the hit counter is written through it, and writing through a pointer
/// derived from a shared reference (`HashMap::get`, `LpmTrie::get`) is undefined behaviour.
#[inline(always)]
fn add_hits(entry: *mut BlockEntry, n: u64) {
    // Hits are shared by every CPU: an atomic add (BPF_ATOMIC_ADD) on the map value.
    // SAFETY: a writable map value pointer from a successful lookup.
    let hits = unsafe { core::ptr::addr_of_mut!((*entry).hits) };
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(hits, n) };
}

/// This CPU's drop-cache slot for one IPv4 address, and the stamp a slot filled now gets.
struct Cached {
    slot: *mut DropCacheSlot,
    stamp: u64,
    addr: u32,
}

/// The drop-cache slot of `addr`; `None` when the cache is off ([`VERDICT_GEN_OFF`]) or a map
/// cannot be read (the full lookup is then made, and nothing cached), and for 0.0.0.0: a slot
/// userspace empties (`DropCache::forget`) while this CPU fills it can be left torn with the
/// fill's stamp and the zero address, which must not drop 0.0.0.0 (a DHCP client's source).
///
/// The generation is read here, before any lookup of `addr`: userspace advances it after a
/// change, so a slot filled from a lookup that saw the map before the change carries an older
/// stamp. Volatile, so that the read stays where it is written.
#[inline(always)]
fn drop_cache(addr: [u8; 4]) -> Option<Cached> {
    if u32::from_ne_bytes(addr) == 0 {
        return None;
    }
    let generation = VERDICT_GEN.get_ptr(0)?;
    // SAFETY: a value pointer of a successful array lookup.
    let generation = unsafe { core::ptr::read_volatile(generation) };
    if generation & VERDICT_GEN_OFF != 0 {
        return None;
    }
    let slot = DROP_CACHE_V4.get_ptr_mut(drop_cache_slot(addr))?;
    Some(Cached {
        slot,
        stamp: generation.wrapping_add(1),
        addr: u32::from_ne_bytes(addr),
    })
}

/// Whether the slot drops its address now, without a lookup: the stamp is this generation's,
/// the address the packet's, the copied expiry not past, and the slot has dropped fewer than
/// [`DROP_CACHE_RECHECK`] packets since its lookup. The drop is counted in the slot.
#[inline(always)]
fn cache_drops(c: &Cached) -> bool {
    let s = c.slot;
    // SAFETY: this CPU's slot (per-CPU value pointer, valid for this run); an XDP or TC run is
    // not interrupted on its CPU by another that writes it.
    unsafe {
        if (*s).stamp != c.stamp
            || u32::from_ne_bytes((*s).addr) != c.addr
            || (*s).pending >= DROP_CACHE_RECHECK
        {
            return false;
        }
        let expires_ns = (*s).expires_ns;
        if expires_ns != 0 && bpf_ktime_get_boot_ns() >= expires_ns {
            return false;
        }
        (*s).pending += 1;
    }
    true
}

/// After a lookup of the slot's address that did not end in an exact block (expired, allowed,
/// unblocked, or blocked by a CIDR): the drops the slot made go to the exact entry if there
/// still is one, and the slot is emptied. A slot that holds another address is left alone.
#[inline(always)]
fn cache_settle(c: Option<&Cached>, exact: Option<*mut BlockEntry>) {
    let Some(c) = c else {
        return;
    };
    let s = c.slot;
    // SAFETY: as in `cache_drops`.
    unsafe {
        if u32::from_ne_bytes((*s).addr) != c.addr {
            return;
        }
        let pending = (*s).pending;
        if pending != 0
            && let Some(e) = exact
        {
            add_hits(e, u64::from(pending));
        }
        (*s).stamp = 0;
        (*s).pending = 0;
    }
}

/// After a lookup that found `entry`, an exact block on the slot's address, live and not
/// allowed: the slot is filled with it, and the hit counted with the drops the slot made for
/// the same address. The drops it made for another address go to that address's entry first
/// (one more lookup, only when it made any).
#[inline(always)]
fn cache_fill(c: &Cached, entry: *mut BlockEntry) {
    let s = c.slot;
    // SAFETY: as in `cache_drops`; `entry` a writable value from a successful lookup.
    unsafe {
        let pending = u64::from((*s).pending);
        let held = (*s).addr;
        let mut hits = 1;
        if u32::from_ne_bytes(held) == c.addr {
            hits += pending;
        } else if pending != 0
            && let Some(other) = BLOCKED_V4.get_ptr_mut(held)
        {
            add_hits(other, pending);
        }
        add_hits(entry, hits);
        // Emptied first and stamped last, so that a run nested on this CPU (PREEMPT_RT, a test
        // run) never sees the new address under the old stamp: every store volatile, so that
        // LLVM keeps them in this order.
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*s).stamp), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*s).addr), c.addr.to_ne_bytes());
        core::ptr::write_volatile(
            core::ptr::addr_of_mut!((*s).expires_ns),
            (*entry).expires_ns,
        );
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*s).pending), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*s).stamp), c.stamp);
    }
}

/// A writable pointer to the value of the longest prefix matching `key`. aya-ebpf 0.2.1's
/// `LpmTrie` only has `get`, which hands out `&V`; the kernel's lookup itself returns a
/// pointer into map memory that may be written (as `HashMap::get_ptr_mut` passes on).
#[inline(always)]
fn lpm_get_ptr_mut<K, V>(trie: &LpmTrie<K, V>, key: &Key<K>) -> Option<*mut V> {
    // SAFETY: `LpmTrie` is `#[repr(transparent)]` over its map definition, so its address is
    // the map pointer aya's own `get` passes to the same helper; the key is a valid `Key<K>`.
    let p = unsafe {
        bpf_map_lookup_elem(
            core::ptr::from_ref(trie).cast_mut().cast::<c_void>(),
            core::ptr::from_ref(key).cast::<c_void>(),
        )
    };
    (!p.is_null()).then_some(p.cast::<V>())
}

/// One address family's lookup: exact entry, then CIDR, then (only for a live block) the
/// allowed CIDRs, each only when its `slots` entry ([`occupied`]) says the map may hold
/// entries. `N` is the address length in bytes; a host route is `N * 8` bits. The hit is
/// counted on the live entry only when it blocks (not when an allowed CIDR wins).
///
/// An expired exact entry does not end the lookup: a live CIDR over the same address still
/// blocks it (the sweep may be up to a minute away). `Expired` only when nothing live matched.
///
/// `cache`: the address's drop-cache slot (IPv4), which a live exact block not allowed fills
/// ([`cache_fill`]) and any other outcome settles ([`cache_settle`]).
#[inline(always)]
fn check_family<const N: usize>(
    exact: &HashMap<[u8; N], BlockEntry>,
    cidrs: &LpmTrie<[u8; N], BlockEntry>,
    allowed: &LpmTrie<[u8; N], u32>,
    slots: [Occupied; 3],
    addr: [u8; N],
    cache: Option<Cached>,
) -> Match {
    let [exact_slot, cidr_slot, allowed_slot] = slots;
    let host = Key::new((N * 8) as u32, addr);
    let exact_entry = if occupied(exact_slot) {
        exact.get_ptr_mut(addr)
    } else {
        None
    };
    let cidr_entry = |host: &Key<[u8; N]>| {
        if occupied(cidr_slot) {
            lpm_get_ptr_mut(cidrs, host)
        } else {
            None
        }
    };
    let settle = || cache_settle(cache.as_ref(), exact_entry);
    let (live, by_exact) = match exact_entry {
        Some(e) if active(e) => (e, true),
        _ => match cidr_entry(&host) {
            Some(e) if active(e) => (e, false),
            found => {
                settle();
                return if found.is_some() || exact_entry.is_some() {
                    Match::Expired
                } else {
                    Match::None
                };
            }
        },
    };
    if occupied(allowed_slot) && allowed.get(&host).is_some() {
        settle();
        return Match::Allowed;
    }
    match &cache {
        Some(c) if by_exact => cache_fill(c, live),
        _ => {
            settle();
            add_hits(live, 1);
        }
    }
    Match::Blocked
}

/// The occupancy slots of each family's exact, CIDR and allowed-CIDR maps.
const V4_SLOTS: [Occupied; 3] = [
    Occupied::BlockedV4,
    Occupied::BlockedCidrV4,
    Occupied::AllowedCidrV4,
];
const V6_SLOTS: [Occupied; 3] = [
    Occupied::BlockedV6,
    Occupied::BlockedCidrV6,
    Occupied::AllowedCidrV6,
];

/// Whether any blocklist of a family (its occupancy `slots`) may hold an entry: if none does,
/// no address of it can be blocked and the per-address checks are skipped whole.
#[inline(always)]
fn family_blocks_any(slots: [Occupied; 3]) -> bool {
    let [exact, cidr, _] = slots;
    occupied(exact) || occupied(cidr)
}

/// One IPv4 address's verdict. `front`: the IPv4 filter ([`front_v4`]), opened by the caller
/// once per packet.
///
/// IPv4 addresses travel as their four bytes, never widened to the 16 bytes of an IPv6 one:
/// LLVM zero-filled the other 12 bytes of each with a call to `memset`, a byte loop of its own,
/// two calls and about 100 instructions on every IPv4 packet.
#[inline(always)]
fn check_v4(a: [u8; 4], front: FrontV4) -> Match {
    if front_v4_clear(front, a) {
        return Match::None;
    }
    look_up_v4(a, true)
}

/// [`check_v4`] past the front filter, for an address whose filter bit is set or unknown: the
/// drop cache (asked whether it drops unless `ask_cache` is false: the caller already asked),
/// then the guarded lookups.
#[inline(always)]
fn look_up_v4(a: [u8; 4], ask_cache: bool) -> Match {
    let cache = drop_cache(a);
    if ask_cache && cache.as_ref().is_some_and(cache_drops) {
        return Match::Blocked;
    }
    check_family(
        &BLOCKED_V4,
        &BLOCKED_CIDR_V4,
        &ALLOWED_CIDR_V4,
        V4_SLOTS,
        a,
        cache,
    )
}

/// One IPv6 address's verdict (no front filter, no drop cache).
#[inline(always)]
fn check_v6(a: &[u8; 16]) -> Match {
    check_family(
        &BLOCKED_V6,
        &BLOCKED_CIDR_V6,
        &ALLOWED_CIDR_V6,
        V6_SLOTS,
        *a,
        None,
    )
}

/// The counter of a drop, or `None`, from `check(true)` (the source's verdict) and then
/// `check(false)` (the destination's). Source first: inbound traffic from a blocked host is the
/// common case on an endpoint.
///
/// Why a loop over a closure and not two checks written out: LLVM makes the closure one
/// BPF-to-BPF subprogram. Written out, `check_v4` was inlined at each call site (32.8 KB of
/// translated program grew to 39.8 KB) and, in alternated `xdp-bench` runs, the non-DNS pass
/// with entries in every map went from 34 to 42 ns (1.28× to 1.6× the no-op, over its 1.5×
/// target) and the 210-byte DNS response from 141 to 153 ns.
#[inline(always)]
fn pair_verdict(mut check: impl FnMut(bool) -> Match) -> Option<Counter> {
    for (is_src, drop) in [
        (true, Counter::DropBlockedSrc),
        (false, Counter::DropBlockedDst),
    ] {
        if blocks(check(is_src)) {
            return Some(drop);
        }
    }
    None
}

/// Whether the IPv4 front filter, `front` ([`front_v4`]), clears both addresses
/// on its own: a clear bit means no exact or CIDR entry can match, whatever the occupancy slots
/// say. What [`address_verdict_v4`] reads on a packet the filter clears (the ready word and two
/// bits), and the whole of the benchmarks' floor program (`flux_xdp_floor`).
#[inline(always)]
pub fn front_v4_clears(front: FrontV4, src: [u8; 4], dst: [u8; 4]) -> bool {
    front_v4_clear(front, src) && front_v4_clear(front, dst)
}

/// The counter of a drop of an IPv4 packet from `src` to `dst`, or `None` to let it on.
///
/// Each filter bit is read once here. The source's is read first; the destination's only when
/// the source's is clear (both clear: nothing to look up) or when the source did not block.
/// The occupancy slots are asked only when the filter is not ready: a ready filter with a set
/// bit already says an entry may be there, and each lookup is still guarded by its own slot.
/// The first address that can be blocked is then asked of the drop cache inline; only what the
/// cache does not drop goes to the pair's lookups ([`pair_verdict`]).
///
/// The untagged IPv4 way (`main.rs::front_door`) asks the filter for the pair first, and comes
/// here ([`address_verdict_v4_in`]) only when it cannot clear both: the bits it read are read
/// again here (plain loads; the filter is not opened again).
#[inline(always)]
pub fn address_verdict_v4(src: [u8; 4], dst: [u8; 4]) -> Option<Counter> {
    address_verdict_v4_in(front_v4(), src, dst)
}

/// [`address_verdict_v4`] with the IPv4 filter already opened (`front`, [`front_v4`]) by a
/// caller that asked it first (`main.rs::front_door`): the filter is opened once a packet.
#[inline(always)]
pub fn address_verdict_v4_in(front: FrontV4, src: [u8; 4], dst: [u8; 4]) -> Option<Counter> {
    let src_clear = front_v4_clear(front, src);
    if src_clear && front_v4_clear(front, dst) {
        return None;
    }
    if !front.ready() && !family_blocks_any(V4_SLOTS) {
        return None;
    }
    // The first address that can be blocked (the source, else the destination) is dropped
    // here if the drop cache drops it, before the pair's subprogram is called: a flood from or
    // to one blocked host is the drop that comes in millions, and the call and its return
    // (through the return thunk of the kernel's SRSO mitigation) were a third of that drop's
    // cost on the bench host. Same order as the pair's: the source first.
    let (first, first_drop) = if src_clear {
        (dst, Counter::DropBlockedDst)
    } else {
        (src, Counter::DropBlockedSrc)
    };
    if drop_cache(first).is_some_and(|c| cache_drops(&c)) {
        return Some(first_drop);
    }
    // Captured by value, the addresses as words: by reference, or as byte arrays (alignment
    // 1), the closure's subprogram read each address a byte at a time through a pointer.
    let (src, dst) = (u32::from_ne_bytes(src), u32::from_ne_bytes(dst));
    pair_verdict(move |is_src| {
        // Past the return above, a clear source bit means the destination's was read, and set.
        let clear = if is_src {
            src_clear
        } else {
            !src_clear && front_v4_clear(front, dst.to_ne_bytes())
        };
        if clear {
            Match::None
        } else {
            // Asked above: the source's cache slot when its bit is set, else the destination's.
            look_up_v4(
                (if is_src { src } else { dst }).to_ne_bytes(),
                !is_src && !src_clear,
            )
        }
    })
}

/// The counter of a drop of an IPv6 packet from `src` to `dst`, or `None` to let it on.
#[inline(always)]
pub fn address_verdict_v6(src: &[u8; 16], dst: &[u8; 16]) -> Option<Counter> {
    if !family_blocks_any(V6_SLOTS) {
        return None;
    }
    pair_verdict(|is_src| check_v6(if is_src { src } else { dst }))
}

/// Whether a verdict drops the packet; an allowlist or an expiry that let a blocked address
/// pass is counted. Ingress (each address of the pair, [`pair_verdict`]) and egress (the
/// destination alone; the source is one of the host's own addresses) read it alike.
#[inline(always)]
fn blocks(m: Match) -> bool {
    match m {
        Match::Blocked => true,
        Match::Allowed => {
            super::count(Counter::AllowedOverBlock);
            false
        }
        Match::Expired => {
            super::count(Counter::ExpiredBlock);
            false
        }
        Match::None => false,
    }
}

/// Egress: whether a packet leaving the host to an IPv4 `dst` is dropped ([`blocks`]).
#[inline(always)]
pub fn destination_blocked_v4(dst: [u8; 4]) -> bool {
    blocks(check_v4(dst, front_v4()))
}

/// Egress: [`destination_blocked_v4`] for an IPv6 `dst`.
#[inline(always)]
pub fn destination_blocked_v6(dst: &[u8; 16]) -> bool {
    blocks(check_v6(dst))
}

/// What the domain blocklist says about a response's question.
pub enum NameVerdict {
    /// Not blocked (or only by expired entries).
    Pass,
    /// The name or a parent is blocked. Its wire length is in `Scratch::name_len`.
    Blocked,
    /// The name could not be walked; the response passes unchecked.
    Unchecked,
}

/// Whether the domain blocklist may hold an entry (its occupancy slot): if not, no name can be
/// blocked, and an allowed name only matters against a block.
#[inline(always)]
pub fn domains_blocked() -> bool {
    occupied(Occupied::BlockedDomains)
}

/// Labels in a 255-byte name: at most 127, plus the root.
const MAX_LABELS: usize = 128;

/// Where the bytes of the question name being walked are read. The walk's findings (length,
/// label starts) always go to scratch.
pub trait NameBytes {
    /// The name's byte at `i` (`i < MAX_NAME_WIRE`), or `None` if it cannot be read.
    fn byte(&self, i: usize) -> Option<u8>;
}

/// The name copied into `Scratch::bytes` (the TC egress program's queries: a socket buffer's
/// bytes are read by helper).
pub struct InScratch(pub *mut Scratch);

impl NameBytes for InScratch {
    #[inline(always)]
    fn byte(&self, i: usize) -> Option<u8> {
        // SAFETY: this CPU's scratch; only the name's bytes are borrowed, for the read.
        unsafe { (*core::ptr::addr_of!((*self.0).bytes)).get(i).copied() }
    }
}

/// The name where it lies in an XDP frame, read in place: no copy. A `bpf_xdp_load_bytes`
/// into scratch cost about 50 ns of a 200-byte response's ~340 on the AMD host (retpolines and
/// the return thunk on every helper call), more than reading a typical name's bytes directly.
/// The frame is linear (the program is not loaded with frags), so every byte of the message
/// is within `data_end`.
pub struct InPacket {
    pkt: Packet,
    /// Where the name starts in the frame; `None` past [`MAX_NAME_BASE`] (not walked).
    base: Option<usize>,
}

impl InPacket {
    #[inline(always)]
    pub fn new(ctx: &XdpContext, base: usize) -> Self {
        Self {
            pkt: Packet::new(ctx),
            // Opaque once checked: LLVM would otherwise keep the check on the u16 the offset
            // came from and drop the mask `byte_at` puts on the offset itself.
            base: (base <= MAX_NAME_BASE).then(|| opaque(base)),
        }
    }
}

impl NameBytes for InPacket {
    #[inline(always)]
    fn byte(&self, i: usize) -> Option<u8> {
        self.pkt.byte_at(self.base?, i)
    }
}

/// Walks the question name at `name` (at most `avail` bytes of it are in the message) and
/// leaves its length and label starts in scratch ([`forward`]). `false`: it cannot be walked.
#[inline(always)]
pub fn walk_qname<S: NameBytes>(name: &S, avail: usize) -> bool {
    let Some(scratch) = scratch() else {
        return false;
    };
    let limit = if avail < MAX_NAME_WIRE {
        avail
    } else {
        MAX_NAME_WIRE
    };
    forward(name, scratch, limit)
}

/// The forward pass over the wire-format name of which the first `limit` bytes may be read
/// from `name`: one bit per byte offset that starts a label (`Scratch::label_starts`) and the
/// name's length (`Scratch::name_len`). Compression pointers cannot occur in a question, so a
/// name with one cannot be walked, nor can a name cut short.
///
/// Both results leave through map memory, which the verifier does not track: otherwise every
/// exit of this loop would carry its own range for them, and everything after would be verified
/// once per range.
#[inline(always)]
pub fn forward<S: NameBytes>(name: &S, scratch: *mut Scratch, limit: usize) -> bool {
    // SAFETY: this CPU's scratch; only the walk's findings are written (`name` may read the
    // name's bytes from scratch meanwhile).
    let (name_len, starts) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!((*scratch).name_len),
            &mut *core::ptr::addr_of_mut!((*scratch).label_starts),
        )
    };
    // Reset first: a walk that fails, however early, leaves no earlier name's findings. One
    // volatile store a word: `[0; 4]` became a call to `memset`, a loop of 32 byte stores.
    *name_len = 0;
    for w in starts.iter_mut() {
        // SAFETY: a word of this CPU's scratch, borrowed mutably here.
        unsafe { core::ptr::write_volatile(w, 0) };
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*scratch).name_unreadable), 0) };
    let limit = opaque(limit);
    if limit == 0 || limit > MAX_NAME_WIRE {
        return false;
    }
    let mut pos = 0usize;
    for _ in 0..MAX_LABELS {
        if pos >= limit {
            return false;
        }
        let Some(len) = name.byte(opaque(pos)) else {
            return false;
        };
        // `opaque`: LLVM knows `pos < limit <= 255` and dropped this bounds check; a verifier
        // that cannot carry that compare of two registers (6.1's) then sees `pos` only as
        // large as the loop could make it, and refused the store past the scratch value.
        if let Some(word) = starts.get_mut(opaque(pos) >> 6) {
            *word |= 1 << (pos & 63);
        }
        if len == 0 {
            *name_len = (pos + 1) as u64;
            break;
        }
        if len > 63 {
            return false;
        }
        pos += len as usize + 1;
    }
    let walked = *name_len as usize;
    walked != 0 && walked <= MAX_NAME_WIRE
}

/// The whole walked name's hash ([`flux_common::domain_hash`]), for matching a reply to its
/// query: a plain backward pass over `Scratch::name_len` bytes of `name`. 0: a byte could not
/// be read.
#[inline(always)]
pub fn full_hash<S: NameBytes>(name: &S, scratch: *mut Scratch) -> u64 {
    let name_len = opaque(unsafe { (*scratch).name_len } as usize);
    if name_len == 0 || name_len > MAX_NAME_WIRE {
        return 0;
    }
    let mut h = NAME_HASH_INIT;
    for k in 0..MAX_NAME_WIRE {
        if k >= name_len {
            break;
        }
        let i = opaque(name_len - 1 - k) & 0xff;
        h = name_hash_step(h, byte_or_mark(name, i, scratch));
    }
    if unreadable(scratch) { 0 } else { h }
}

/// The byte at `i` of `name`; one that cannot be read marks the walk unreadable in scratch
/// (`Scratch::name_unreadable`) and reads as 0. The backward passes use it instead of leaving
/// the loop: an exit per step would be a path per step for the verifier, each carrying its own
/// state to everything after the walk. Every byte they read was in reach of the forward pass,
/// which read the name's last byte, so the mark is a safety net.
#[inline(always)]
fn byte_or_mark<S: NameBytes>(name: &S, i: usize, scratch: *mut Scratch) -> u8 {
    match name.byte(i) {
        Some(b) => b,
        None => {
            // SAFETY: this CPU's scratch.
            unsafe {
                core::ptr::write_volatile(core::ptr::addr_of_mut!((*scratch).name_unreadable), 1)
            };
            0
        }
    }
}

/// Whether a backward pass met a byte it could not read ([`byte_or_mark`]).
#[inline(always)]
fn unreadable(scratch: *mut Scratch) -> bool {
    // SAFETY: this CPU's scratch.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*scratch).name_unreadable)) != 0 }
}

/// Calls `f` with the hash of every domain in the walked name (the name and each parent, the
/// root left out), shortest first. `false`: the name cannot be walked, or a byte of it could
/// not be read (then some hashes `f` was given are wrong).
///
/// One backward pass of `name_hash_step` yields the hash of every suffix, and the suffixes that
/// start at a label are the domains. Each step's index comes from the opaque length, masked, so
/// the access bound is plain to the verifier; the loop stops after `name_len` steps.
#[inline(always)]
fn each_domain<S: NameBytes>(name: &S, scratch: *mut Scratch, mut f: impl FnMut(u64)) -> bool {
    // Only the walk's findings are read: the callers write theirs to other scratch fields
    // through raw pointers while this runs, so no reference may cover them.
    let (name_len, starts) = unsafe { ((*scratch).name_len, (*scratch).label_starts) };
    let name_len = opaque(name_len as usize);
    if name_len == 0 || name_len > MAX_NAME_WIRE {
        return false;
    }
    let mut h = NAME_HASH_INIT;
    for k in 0..MAX_NAME_WIRE {
        if k >= name_len {
            break;
        }
        let i = opaque(name_len - 1 - k) & 0xff;
        let label_start = starts.get(i >> 6).is_some_and(|w| (w >> (i & 63)) & 1 == 1);
        let b = byte_or_mark(name, i, scratch);
        h = name_hash_step(h, b);
        if !label_start || b == 0 {
            continue;
        }
        f(h);
    }
    !unreadable(scratch)
}

/// The domain blocklist's verdict on the walked name and every parent domain.
///
/// The blocklist is looked up for every domain of the name ([`each_domain`], no early exit), so
/// that the hit goes to the deepest live block (`www.flux.test` over `flux.test` for a question
/// `www.flux.test`): the entry an operator looks at for that name. Only a name with no block of
/// its own counts on the parent that covers it.
///
/// The allowlist is looked up only once a live block was found, in a second pass: an allowed
/// name or parent wins over any block, deeper or shallower, and is counted
/// `allowed_over_block`; a name nothing blocks (the common case) pays for no allowlist lookup.
///
/// What the passes find is written to scratch (`Scratch::name_*`), not kept in registers, so
/// that the loop carries no state the verifier would branch on.
#[inline(always)]
pub fn name_verdict<S: NameBytes>(name: &S) -> NameVerdict {
    // No domain blocked: nothing to find, and an allowed name only matters against a block.
    if !domains_blocked() {
        return NameVerdict::Pass;
    }
    let Some(scratch) = scratch() else {
        return NameVerdict::Unchecked;
    };
    let allowed = unsafe { core::ptr::addr_of_mut!((*scratch).name_allowed) };
    let blocked = unsafe { core::ptr::addr_of_mut!((*scratch).name_blocked) };
    let block_hash = unsafe { core::ptr::addr_of_mut!((*scratch).name_block_hash) };
    // SAFETY: this CPU's scratch; volatile so that LLVM keeps the findings in map memory.
    unsafe {
        core::ptr::write_volatile(allowed, 0);
        core::ptr::write_volatile(blocked, 0);
        core::ptr::write_volatile(block_hash, 0);
    }
    // Read once per response; a domain whose filter bit is clear has no block to look up.
    let front = front_open(&FRONT_NAMES, FRONT_NAMES_READY);
    let walked = each_domain(name, scratch, |h| {
        if front.clear(front_name_bit(h)) {
            return;
        }
        if let Some(e) = BLOCKED_DOMAINS.get_ptr(h) {
            // SAFETY: a map value from a successful lookup.
            if active(unsafe { core::ptr::addr_of!((*e).entry) }) {
                // Suffixes come shortest first: the last one written is the deepest.
                unsafe {
                    core::ptr::write_volatile(blocked, 1);
                    core::ptr::write_volatile(block_hash, h);
                }
            } else {
                super::count(Counter::ExpiredBlock);
            }
        }
    });
    if !walked {
        return NameVerdict::Unchecked;
    }
    if unsafe { core::ptr::read_volatile(blocked) } == 0 {
        return NameVerdict::Pass;
    }
    if occupied(Occupied::AllowedDomains) {
        // Its result is not read: this pass reads the bytes the first one read, and a byte that
        // could not be read made that one `Unchecked` already. (Testing it here too, the
        // program in its NXDOMAIN mode no longer passed the verifier: past 1,000,000
        // instructions.)
        each_domain(name, scratch, |h| {
            if ALLOWED_DOMAINS.get_ptr(h).is_some() {
                unsafe { core::ptr::write_volatile(allowed, 1) };
            }
        });
        if unsafe { core::ptr::read_volatile(allowed) } != 0 {
            super::count(Counter::AllowedOverBlock);
            return NameVerdict::Pass;
        }
    }
    let block_hash = unsafe { core::ptr::read_volatile(block_hash) };
    if let Some(e) = BLOCKED_DOMAINS.get_ptr_mut(block_hash) {
        // SAFETY: a writable map value from a successful lookup (see [`add_hit`]).
        add_hits(unsafe { core::ptr::addr_of_mut!((*e).entry) }, 1);
    }
    NameVerdict::Blocked
}
