//! Enforcement: the blocklist maps and the address verdict. This is where a packet is dropped.
//!
//! Order: a blocked match (exact address first, then CIDR) is looked for; only then the allowed
//! CIDRs, which win over any block. Expired entries do not block; userspace sweeps them.

use core::intrinsics::AtomicOrdering;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_ktime_get_boot_ns,
    macros::map,
    maps::{HashMap, LpmTrie, lpm_trie::Key},
};
use flux_common::{
    AF_INET, AF_INET6, BlockEntry, Counter, MAX_ALLOWED_CIDRS, MAX_BLOCKED_CIDRS, MAX_BLOCKED_IPS,
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

/// What the blocklists say about one address.
enum Match {
    None,
    Blocked,
    Expired,
    Allowed,
}

/// Counts a hit on an entry that blocks now, or says it expired.
#[inline(always)]
fn judge(entry: *const BlockEntry, now: u64) -> Match {
    // SAFETY: a map value pointer from a successful lookup, valid for this program run.
    let e = unsafe { &*entry };
    if !e.active(now) {
        return Match::Expired;
    }
    // Hits are shared by every CPU: an atomic add (BPF_ATOMIC_ADD) on the map value.
    let hits = unsafe { core::ptr::addr_of!((*entry).hits) } as *mut u64;
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(hits, 1) };
    Match::Blocked
}

/// One address family's lookup: exact entry, then CIDR, then (only for a live block) the
/// allowed CIDRs. `N` is the address length in bytes; a host route is `N * 8` bits.
#[inline(always)]
fn check_family<const N: usize>(
    exact: &HashMap<[u8; N], BlockEntry>,
    cidrs: &LpmTrie<[u8; N], BlockEntry>,
    allowed: &LpmTrie<[u8; N], u32>,
    addr: [u8; N],
    now: u64,
) -> Match {
    let host = Key::new((N * 8) as u32, addr);
    let found = if let Some(e) = exact.get_ptr(addr) {
        judge(e, now)
    } else if let Some(e) = cidrs.get(&host) {
        judge(e, now)
    } else {
        return Match::None;
    };
    if matches!(found, Match::Blocked) && allowed.get(&host).is_some() {
        return Match::Allowed;
    }
    found
}

#[inline(always)]
fn check(family: u8, addr: &[u8; 16], now: u64) -> Match {
    match family {
        AF_INET => {
            let [a, b, c, d, ..] = *addr;
            check_family(
                &BLOCKED_V4,
                &BLOCKED_CIDR_V4,
                &ALLOWED_CIDR_V4,
                [a, b, c, d],
                now,
            )
        }
        AF_INET6 => check_family(&BLOCKED_V6, &BLOCKED_CIDR_V6, &ALLOWED_CIDR_V6, *addr, now),
        _ => Match::None,
    }
}

/// The counter of a drop, or `None` to let the packet on. Source first: inbound traffic from a
/// blocked host is the common case on an endpoint.
#[inline(always)]
pub fn address_verdict(family: u8, src: &[u8; 16], dst: &[u8; 16]) -> Option<Counter> {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    for (addr, drop) in [
        (src, Counter::DropBlockedSrc),
        (dst, Counter::DropBlockedDst),
    ] {
        match check(family, addr, now) {
            Match::Blocked => return Some(drop),
            Match::Allowed => super::count(Counter::AllowedOverBlock),
            Match::Expired => super::count(Counter::ExpiredBlock),
            Match::None => {}
        }
    }
    None
}
