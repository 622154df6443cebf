//! Which replies were asked for: the TC egress program records every DNS query that leaves
//! (`egress.rs`), and XDP looks each reply up here before it is trusted (`main.rs::respond`).
//!
//! A reply counts as solicited when a query left from its destination address and port to its
//! source address and port, over the same transport, with the same transaction id and the same
//! question name (by hash), less than [`QUERY_WAIT_NS`] ago. An IPv6 address pair is compared
//! by digest (`flux_common::QueryKey` says why that is enough). A UDP query is answered once: its
//! entry goes with the first reply that matches, so a second (forged) reply to it is
//! unsolicited. A TCP connection may carry several answers to one query id (zone transfers),
//! so its entry stays until it ages out.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, HashMap, LruHashMap},
};
use flux_common::{
    HOST_MAC_SLOT_COUNT, HostMacSlot, IPPROTO_UDP, MAX_HOST_MACS, MAX_QUERIES, QUERY_WAIT_NS,
    QueryKey, QuerySeen, host_mac_slot, is_group_mac, mac_word,
};

#[map]
static QUERIES: LruHashMap<QueryKey, QuerySeen> = LruHashMap::pinned(MAX_QUERIES, 0);

/// Each attached interface's own MAC (`flux_common::MAP_HOST_MACS`), written by userspace at
/// attach. Not pinned: it belongs to the loaded program and is refilled by every attach.
#[map]
static HOST_MACS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_HOST_MACS, 0);

/// The direct-mapped front of `HOST_MACS` (`flux_common::MAP_HOST_MAC_SLOTS`, which says what
/// userspace keeps true of the two), filled the same way.
#[map]
static HOST_MAC_SLOTS: Array<HostMacSlot> = Array::with_max_entries(HOST_MAC_SLOT_COUNT, 0);

/// Whether a frame with destination MAC `dst`, received on `ifindex`, is addressed to this
/// host: not a group address, and the interface's own MAC when userspace recorded one. An
/// interface with no entry (test runs, an attach that could not read the MAC) is checked for
/// group addresses only.
///
/// The interface's slot answers without a helper call when it holds the interface, or nothing
/// (then no MAC is recorded for it); only a slot another interface holds sends it to the hash
/// map.
#[inline(always)]
pub fn to_host(ifindex: u32, dst: [u8; 6]) -> bool {
    if is_group_mac(dst[0]) {
        return false;
    }
    if let Some(slot) = HOST_MAC_SLOTS.get_ptr(host_mac_slot(ifindex)) {
        // SAFETY: a value pointer of a successful array lookup; read, never written, here.
        let (owner, own) = unsafe { ((*slot).ifindex, (*slot).mac) };
        if owner == 0 {
            return true;
        }
        if owner == ifindex {
            return own == mac_word(dst);
        }
    }
    match unsafe { HOST_MACS.get(ifindex) } {
        Some(own) => *own == mac_word(dst),
        None => true,
    }
}

/// The clock of a record's `ts_ns` and a query's `sent_ns` (`flux_common::RECORD_CLOCK_ID`):
/// CLOCK_MONOTONIC_COARSE, the time of the kernel's last tick. Why not `bpf_ktime_get_ns`: under
/// KVM that read is the dearest helper a DNS response calls (about 35-45 ns on the AMD test host,
/// a sixth of a 210-byte response's whole cost), and nothing that reads the stamp needs better
/// than a tick: the scorer works in seconds, the query wait is 30 s, and the events file's
/// order is the ring's. The coarse read is a few loads of the timekeeper, no clock source.
#[inline(always)]
pub fn clock_ns() -> u64 {
    // SAFETY: a helper call with no arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Remembers a query that is leaving. Failing to (a full map evicts, so only on a helper
/// error) leaves its reply unsolicited: the safe side.
#[inline(always)]
pub fn record(key: &QueryKey, qname_hash: u64) -> bool {
    let seen = QuerySeen {
        sent_ns: clock_ns(),
        qname_hash,
    };
    QUERIES.insert(key, seen, 0).is_ok()
}

/// Whether a reply keyed by `key` (already turned around: the reply's destination is the
/// query's client) with question hash `qname_hash` answers a recorded query, at `now_ns`
/// ([`clock_ns`], read once for the response).
#[inline(always)]
pub fn solicited(key: &QueryKey, qname_hash: u64, now_ns: u64) -> bool {
    if qname_hash == 0 {
        return false;
    }
    let Some(seen) = QUERIES.get_ptr(key) else {
        return false;
    };
    // SAFETY: a map value from a successful lookup, read once.
    let seen = unsafe { core::ptr::read(seen) };
    let fresh = now_ns.saturating_sub(seen.sent_ns) < QUERY_WAIT_NS;
    let ok = fresh && seen.qname_hash == qname_hash;
    if ok && key.transport == IPPROTO_UDP {
        let _ = QUERIES.remove(key);
    }
    ok
}
