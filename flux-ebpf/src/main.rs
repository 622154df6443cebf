//! flux-agent's XDP program: find DNS responses and copy them to userspace.
//!
//! Packet path: Ethernet -> up to two VLAN tags (a frame with more is never captured, but its
//! addresses still go through the blocklists) -> IPv4 (options, fragments) or IPv6 (bounded
//! extension-header walk) -> UDP or TCP from a configured DNS port -> DNS header check ->
//! one ring-buffer record. Right after the IP header, the addresses go through the blocklists
//! (`xdp_verdict.rs`); a DNS response's question name goes through the domain blocklist, and a
//! blocked one is answered NXDOMAIN (`sinkhole.rs`) or dropped after its record is written.
//! Those are the only places a packet is dropped or changed, apart from the optional TC egress
//! program (`egress.rs`), which drops what leaves the host for a blocked address. Everything
//! else is passed, and when anything is unclear it passes and counts why.
#![no_std]
// Atomic adds on shared map values (hit counters): core has no RMW atomics for the BPF target.
#![feature(core_intrinsics)]
// One 8-byte load and store per word of a copied message (`packet::load_u64`): inline
// assembly is unstable for the BPF target.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![allow(internal_features)]
#![no_main]

mod egress;
mod packet;
mod queries;
mod scratch;
mod sinkhole;
mod xdp_verdict;

use core::{
    ffi::c_void,
    mem::size_of,
    ptr::{addr_of, addr_of_mut},
};

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_redirect, bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{PerCpuArray, RingBuf},
    programs::XdpContext,
};
use flux_common::{
    AF_INET, AF_INET6, Config, Counter, DNS_CAPTURE_MAX, DNS_HEADER_LEN, DOMAIN_ACTION_NXDOMAIN,
    DnsEventHeader, DnsRecord, ETH_P_IP, ETH_P_IPV6, EVENT_FLAG_BLOCKED, EVENT_FLAG_IP_FRAGMENT,
    EVENT_FLAG_TRUNCATED, EVENT_FLAG_UNSOLICITED, IPPROTO_TCP, IPPROTO_UDP, IPV6_AH,
    IPV6_DEST_OPTS, IPV6_FRAGMENT, IPV6_HOP_BY_HOP, IPV6_MOBILITY, IPV6_ROUTING, MATCH_DROP,
    MATCH_OFF, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS, MAX_VLAN_TAGS_STEPPED, RECORD_DATA,
    RING_BUF_BYTES, dns_port_listed, is_ipv6_ext_header, is_plausible_response, is_vlan_tag,
    query_addrs_v6,
};
use packet::*;
use scratch::Located;
use xdp_verdict::{InPacket, NameVerdict};

/// Load-time configuration; userspace overrides it with `EbpfLoader::override_global`.
#[unsafe(no_mangle)]
static FLUX_CONFIG: Config = Config::DEFAULT;

/// One field of [`FLUX_CONFIG`], read where it is used. Volatile, because a plain read would be
/// folded to `Config::DEFAULT` at compile time (userspace overrides the value at load time); one
/// field at a time, because a volatile read of the whole struct is a load and a stack spill per
/// field on every packet (about 25 instructions in front of the parse). The map is frozen, so
/// the verifier knows each value and prunes the branches it decides.
macro_rules! config {
    ($field:ident) => {
        // SAFETY: a read of a field of an immutable static.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!(crate::FLUX_CONFIG.$field)) }
    };
}

/// [`Config::is_dns_port`] on the configured ports, each read on its own ([`config!`]).
#[inline(always)]
fn is_dns_port(port: u16) -> bool {
    let ports = core::ptr::addr_of!(FLUX_CONFIG.dns_ports).cast::<u16>();
    dns_port_listed(config!(dns_port_count), port, |i| {
        // SAFETY: `i < MAX_DNS_PORTS` (the bound of `dns_port_listed`'s loop), so inside the
        // array; volatile for the reason `config!` gives.
        Some(unsafe { core::ptr::read_volatile(ports.add(i)) })
    })
}

#[map]
static EVENTS: RingBuf = RingBuf::pinned(RING_BUF_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(Counter::COUNT as u32, 0);

/// Why a packet was not captured. Each maps to a counter, except `NotOurs`.
#[derive(Clone, Copy)]
enum Skip {
    /// Dropped by the blocklists; the counter says which way.
    Drop(Counter),
    /// Not DNS from a configured port: nothing to count.
    NotOurs,
    Malformed,
    NonFirstFragment,
    TcpNotWholeMessage,
    NotDnsResponse,
    Ipv6ExtTooDeep,
    VlanTooDeep,
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other CPU writes it, so a plain add is race-free.
        unsafe { *slot += 1 };
    }
}

#[xdp]
pub fn flux_xdp(ctx: XdpContext) -> u32 {
    count(Counter::PacketsSeen);
    match locate(&ctx) {
        Ok(()) => {}
        Err(Skip::NotOurs) => return xdp_action::XDP_PASS,
        Err(Skip::Drop(why)) => {
            if monitor() {
                return pass(Counter::MonitorWouldDrop);
            }
            count(why);
            return xdp_action::XDP_DROP;
        }
        Err(Skip::Malformed) => return pass(Counter::Malformed),
        Err(Skip::NonFirstFragment) => return pass(Counter::NonFirstFragments),
        Err(Skip::TcpNotWholeMessage) => return pass(Counter::TcpNotWholeMessage),
        Err(Skip::NotDnsResponse) => return pass(Counter::NotDnsResponse),
        Err(Skip::Ipv6ExtTooDeep) => return pass(Counter::Ipv6ExtTooDeep),
        Err(Skip::VlanTooDeep) => return pass(Counter::VlanTooDeep),
    }
    // Stage two reads the parse back from scratch (see scratch.rs for why).
    let Some(scratch) = scratch::scratch() else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: this CPU's scratch; volatile so that LLVM cannot forward the values stage one
    // wrote and bring the per-path ranges back.
    let at = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*scratch).located)) };
    match respond(&ctx, &at) {
        Act::Pass => xdp_action::XDP_PASS,
        Act::Sinkhole | Act::Drop | Act::DropUnsolicited if monitor() => {
            pass(Counter::MonitorWouldDrop)
        }
        Act::Sinkhole => match sinkhole::nxdomain(&ctx, &at) {
            Ok(()) => pass(Counter::SinkholedNxdomain),
            Err(()) => {
                count(Counter::DropBlockedName);
                xdp_action::XDP_DROP
            }
        },
        Act::Drop => {
            count(Counter::DropBlockedName);
            xdp_action::XDP_DROP
        }
        Act::DropUnsolicited => {
            count(Counter::DropUnsolicited);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn monitor() -> bool {
    config!(monitor) != 0
}

#[inline(always)]
fn pass(counter: Counter) -> u32 {
    count(counter);
    xdp_action::XDP_PASS
}

/// The benchmark baseline: the cheapest possible XDP program, loaded from the same object.
#[xdp]
pub fn flux_xdp_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The benchmarks' floor: the least an address filter can do on an IPv4 packet
/// that matches nothing, so that `xdp-bench` can say what part of flux_xdp's pass cost any
/// blocklist check pays on the machine and what part is flux_xdp's own (the counter, the IP and
/// L4 checks, the DNS port test). It reads the Ethernet type and both addresses and asks the
/// front filter, as `flux_xdp` does first ([`xdp_verdict::front_v4_clears`]); nothing else.
/// `veth-bench` also attaches it, as the floor of an XDP drop on its link.
/// Whatever the filter cannot clear is dropped, uncounted, so that its reads are not optimised
/// away.
#[xdp]
pub fn flux_xdp_floor(ctx: XdpContext) -> u32 {
    let pkt = Packet::new(&ctx);
    let Some(eth) = pkt.ptr_at::<EthHdr>(0) else {
        return xdp_action::XDP_PASS;
    };
    if u16::from_be(unsafe { (*eth).ether_type }) != ETH_P_IP {
        return xdp_action::XDP_PASS;
    }
    let Some(ip) = pkt.ptr_at::<Ipv4Hdr>(size_of::<EthHdr>()) else {
        return xdp_action::XDP_PASS;
    };
    let front = xdp_verdict::front_v4();
    if xdp_verdict::front_v4_clears(front, unsafe { (*ip).src }, unsafe { (*ip).dst }) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// The benchmarks' other floor, never attached: what writing one timestamped ring-buffer record
/// costs on the machine, which `flux_xdp` does for every DNS response (`emit_in`). It reserves
/// the smallest record, stamps it with the records' clock (`queries::clock_ns`), fills the rest
/// of its header with zeros (a record of no message, which a reader refuses) and submits it;
/// nothing is parsed or copied. `xdp-bench` drains the ring after each batch.
#[xdp]
pub fn flux_xdp_floor_record(_ctx: XdpContext) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<DnsRecord<{ RECORD_DATA[0] }>>(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: a reserved record, this program's until submitted; the header is 8-aligned and a
    // whole number of words (`ts_ns` first). Volatile word stores: a plain loop of them, like
    // `write_bytes`, became a call to a `memset` subprogram, a byte loop that tripled the floor.
    let header = unsafe { addr_of_mut!((*entry.as_mut_ptr()).header) };
    let words = header.cast::<u64>();
    unsafe {
        words.write(queries::clock_ns());
        for i in 1..size_of::<DnsEventHeader>() / 8 {
            words.add(i).write_volatile(0);
        }
    }
    entry.submit(0);
    xdp_action::XDP_PASS
}

/// The benchmarks' traffic generator, never attached: run with BPF_PROG_TEST_RUN in live-frames
/// mode (`veth-bench`), every frame it returns `XDP_TX` for is transmitted out of the interface
/// the run names, as an `xdp_frame` (no socket buffer), the way a NIC hands frames to XDP.
#[xdp]
pub fn flux_xdp_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// The benchmarks' relay (`veth-bench --generator bounce`), attached to the far end of a veth
/// pair and nothing else: every frame goes back out of the interface it came in by, so it
/// reaches the near end as an `xdp_frame` (no socket buffer), the way a NIC hands frames to
/// XDP. A redirect, not `XDP_TX`: after `XDP_TX` veth wakes the peer's NAPI only when the peer
/// has an XDP program of its own, so for the nftables cases the frames would stay in its ring.
#[xdp]
pub fn flux_xdp_bounce(ctx: XdpContext) -> u32 {
    // An interface index is a positive `int`; a larger value cannot come from the kernel.
    let Ok(ifindex) = u32::try_from(ctx.ingress_ifindex()) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a helper call with plain values; it returns an XDP action (XDP_REDIRECT; with
    // flags it would refuse, XDP_ABORTED). An index that names no interface fails later, when
    // the kernel sends, as a dropped frame.
    let action = unsafe { bpf_redirect(ifindex, 0) };
    u32::try_from(action).unwrap_or(xdp_action::XDP_ABORTED)
}

/// What to do with a DNS response once its record is written.
enum Act {
    Pass,
    /// Blocked name: rewrite to NXDOMAIN (dropped if that cannot be done).
    Sinkhole,
    /// Blocked name: drop.
    Drop,
    /// No query matches the reply, and `--drop-unsolicited`: drop.
    DropUnsolicited,
}

/// What the L3 parse hands to L4.
struct L3 {
    family: u8,
    /// Offset of the IP header.
    l3_off: usize,
    protocol: u8,
    /// Offset of the L4 header.
    l4_off: usize,
    /// L4 bytes the IP header says this packet carries.
    l4_len: usize,
    first_fragment: bool,
}

/// A DNS message located in the packet.
struct Dns {
    src_port: u16,
    dst_port: u16,
    /// Offset of the DNS header.
    off: usize,
    /// Length the transport claims for the message.
    claimed_len: usize,
    /// Bytes of it actually present in this packet.
    present_len: usize,
}

/// Stage one: finds a DNS response and leaves a [`Located`] in scratch, or says why not.
///
/// The common frame (untagged IPv4, no options) goes through [`front_door`], which lets what is
/// not DNS on without the general walk; every other frame through [`walk_to_l3`].
#[inline(always)]
fn locate(ctx: &XdpContext) -> Result<(), Skip> {
    let pkt = Packet::new(ctx);

    let (l3, vlan_count, vlan_ids) = match front_door(&pkt)? {
        Door::Parsed(l3) => (l3, 0, [0; MAX_VLAN_TAGS]),
        Door::Other { addresses_checked } => walk_to_l3(&pkt, addresses_checked)?,
    };

    let dns = match l3.protocol {
        IPPROTO_UDP => locate_udp(&pkt, &l3)?,
        IPPROTO_TCP => locate_tcp(&pkt, &l3)?,
        _ => return Err(Skip::NotOurs),
    };

    let hdr: *const DnsHdr = pkt.ptr_at(dns.off).ok_or(Skip::Malformed)?;
    let flags = u16::from_be(unsafe { (*hdr).flags });
    let qdcount = u16::from_be(unsafe { (*hdr).qdcount });
    let txid = u16::from_be(unsafe { (*hdr).id });
    if !is_plausible_response(flags, qdcount) {
        return Err(Skip::NotDnsResponse);
    }

    let scratch = scratch::scratch().ok_or(Skip::NotOurs)?;
    let match_queries = config!(match_queries);
    // Read here, not with the Ethernet type: read there, it was kept on the stack for every
    // frame, for the few that get this far.
    let eth: *const EthHdr = pkt.ptr_at(0).ok_or(Skip::Malformed)?;
    let eth_dst = unsafe { (*eth).dst };
    // SAFETY: this CPU's scratch.
    unsafe {
        (*scratch).located = Located {
            family: l3.family,
            protocol: l3.protocol,
            first_fragment: u8::from(l3.first_fragment),
            vlan_count,
            vlan_ids,
            src_port: dns.src_port,
            dst_port: dns.dst_port,
            qdcount,
            txid,
            l3_off: l3.l3_off as u16,
            l4_off: l3.l4_off as u16,
            dns_off: dns.off as u16,
            claimed_len: dns.claimed_len as u16,
            present_len: dns.present_len as u16,
            // Read only with query matching on: a hash lookup the default path need not pay.
            not_for_host: u8::from(
                match_queries != MATCH_OFF
                    && !queries::to_host((*ctx.ctx).ingress_ifindex, eth_dst),
            ),
            reserved: 0,
        };
    }
    Ok(())
}

/// Stage two: matches the reply to its query, checks the question name, writes the record,
/// and says what to do.
///
/// The question is walked where it lies in the packet (`xdp_verdict::InPacket`), its length
/// and label starts left in scratch; the match result goes through scratch too, so the
/// name-verdict loop and the record writer are verified once, not once per match outcome.
#[inline(always)]
fn respond(ctx: &XdpContext, at: &Located) -> Act {
    let match_queries = config!(match_queries);
    let Some(scratch) = scratch::scratch() else {
        return Act::Pass;
    };
    let in_packet = min(usize::from(at.claimed_len), usize::from(at.present_len));
    // The name has two readers: the domain verdict, which has nothing to find while no domain is
    // blocked, and query matching. With neither, the walk is skipped, and the name is not
    // "unchecked": nothing was due.
    let name_needed = match_queries != MATCH_OFF || xdp_verdict::domains_blocked();
    let qname = InPacket::new(ctx, usize::from(at.dns_off) + DNS_HEADER_LEN);
    let walked = name_needed
        && at.qdcount == 1
        && xdp_verdict::walk_qname(&qname, in_packet.saturating_sub(DNS_HEADER_LEN));
    // One clock read a response: the record's timestamp and the query's age (`solicited`) both
    // take it. Under KVM the clock is the dearest helper a response calls: a solicited reply
    // read it twice and took 213-225 ns a run on the AMD host, 176-181 ns with one read
    // (BPF_PROG_TEST_RUN of a matched TCP reply, docs/benchmarks.in.md, "One clock read"), and
    // the coarse clock (`queries::clock_ns`) takes most of what is left of it.
    let now_ns = queries::clock_ns();
    let mut unsolicited = 0u64;
    if match_queries != MATCH_OFF {
        let hash = if walked {
            xdp_verdict::full_hash(&qname, scratch)
        } else {
            0
        };
        // A frame addressed to another host (or to everyone) is never trusted, whatever query
        // it matches: an on-path sender could otherwise copy a real query's port and id into
        // a broadcast frame.
        let for_us = at.not_for_host == 0;
        if !for_us {
            count(Counter::NotForHost);
        }
        if !for_us || !solicited(ctx, at, hash, now_ns) {
            count(Counter::UnsolicitedReplies);
            if match_queries == MATCH_DROP {
                return Act::DropUnsolicited;
            }
            unsolicited = 1;
        }
    }
    // SAFETY: this CPU's scratch.
    unsafe { core::ptr::write_volatile(addr_of_mut!((*scratch).unsolicited), unsolicited) };
    let verdict = if walked {
        xdp_verdict::name_verdict(&qname)
    } else if name_needed && at.qdcount == 1 {
        NameVerdict::Unchecked
    } else {
        NameVerdict::Pass
    };
    let act = match verdict {
        NameVerdict::Pass => Act::Pass,
        NameVerdict::Unchecked => {
            count(Counter::QnameUnchecked);
            Act::Pass
        }
        // Only a whole UDP datagram can be cut; a TCP segment or one fragment of many cannot.
        NameVerdict::Blocked
            if config!(domain_action) == DOMAIN_ACTION_NXDOMAIN
                && at.protocol == IPPROTO_UDP
                && at.first_fragment == 0 =>
        {
            Act::Sinkhole
        }
        NameVerdict::Blocked => Act::Drop,
    };
    // The record goes out before any rewrite: userspace sees what the server really answered.
    emit(ctx, at, !matches!(act, Act::Pass), now_ns);
    act
}

/// Writes the located packet's source and destination addresses as 16-byte fields at `src`
/// and `dst` (an IPv4 address as its four bytes, then zeros), read straight from the frame and
/// written as 8-byte words (`load_u64`, `store_u64`): no helper call, and no zero-fill, which
/// LLVM makes a call to `memset`, a byte loop. `false`: the header is not in the frame.
///
/// `src` and `dst` must each be the address of 16 writable bytes (a record's fields).
#[inline(always)]
fn copy_addresses(pkt: &Packet, at: &Located, src: usize, dst: usize) -> bool {
    let l3_off = usize::from(at.l3_off);
    if at.family == AF_INET {
        // Both addresses in one 8-byte load ([`load_u64`]): read as `[[u8; 4]; 2]`, they were
        // eight byte loads and the shifts and ors that put each back together.
        pkt.ptr_at::<[[u8; 4]; 2]>(l3_off + 12).is_some_and(|p| {
            let both = load_u64(p as usize);
            // Each address's four bytes first in its field, the other four zero.
            let (s, d) = if cfg!(target_endian = "little") {
                (both & 0xffff_ffff, both >> 32)
            } else {
                (both & !0xffff_ffff, both << 32)
            };
            store_u64(src, s);
            store_u64(src + 8, 0);
            store_u64(dst, d);
            store_u64(dst + 8, 0);
            true
        })
    } else {
        pkt.ptr_at::<[[u8; 16]; 2]>(l3_off + 8).is_some_and(|p| {
            let from = p as usize;
            for k in 0..2 {
                store_u64(src + 8 * k, load_u64(from + 8 * k));
                store_u64(dst + 8 * k, load_u64(from + 16 + 8 * k));
            }
            true
        })
    }
}

/// Whether the located reply answers a query that left this host (`queries.rs`). The key is
/// built in scratch: the reply's destination is the query's client, its source the server.
#[inline(always)]
fn solicited(ctx: &XdpContext, at: &Located, qname_hash: u64, now_ns: u64) -> bool {
    let Some(scratch) = scratch::scratch() else {
        return false;
    };
    let key = unsafe { addr_of_mut!((*scratch).key) };
    // The addresses read from the frame as 8-byte words ([`load_u64`]), field by field: a
    // `QueryKey` literal was once a call to `memset`.
    let pkt = Packet::new(ctx);
    let l3_off = usize::from(at.l3_off);
    let addrs = if at.family == AF_INET {
        // Source (the server) then destination (the client): `query_addrs_v4` in one load.
        pkt.ptr_at::<[[u8; 4]; 2]>(l3_off + 12)
            .map(|p| load_u64(p as usize))
    } else {
        pkt.ptr_at::<[[u8; 16]; 2]>(l3_off + 8).map(|p| {
            let a = p as usize;
            query_addrs_v6(
                [load_u64(a), load_u64(a + 8)],
                [load_u64(a + 16), load_u64(a + 24)],
            )
        })
    };
    let Some(addrs) = addrs else {
        return false;
    };
    unsafe {
        (*key).addrs = addrs;
        (*key).client_port = at.dst_port;
        (*key).server_port = at.src_port;
        (*key).txid = at.txid;
        (*key).family = at.family;
        (*key).transport = at.protocol;
    }
    queries::solicited(unsafe { &*key }, qname_hash, now_ns)
}

/// Writes one ring-buffer record for the located response, in the smallest of
/// `flux_common::RECORD_SIZES` that holds the captured message. Failures are counted, never
/// fatal.
#[inline(always)]
fn emit(ctx: &XdpContext, at: &Located, blocked: bool, now_ns: u64) {
    let claimed_len = usize::from(at.claimed_len);
    let cap_len = min(
        min(claimed_len, usize::from(at.present_len)),
        DNS_CAPTURE_MAX,
    );
    let truncated = cap_len < claimed_len;
    let mut event_flags = 0u8;
    if blocked {
        event_flags |= EVENT_FLAG_BLOCKED;
    }
    if truncated {
        event_flags |= EVENT_FLAG_TRUNCATED;
    }
    if at.first_fragment != 0 {
        event_flags |= EVENT_FLAG_IP_FRAGMENT;
    }
    if let Some(sc) = scratch::scratch()
        && unsafe { core::ptr::read_volatile(addr_of_mut!((*sc).unsolicited)) } != 0
    {
        event_flags |= EVENT_FLAG_UNSOLICITED;
    }
    // The reserve size must be a constant: one copy of the writer per record size.
    let [d0, d1, d2, _] = RECORD_DATA;
    let written = if cap_len <= d0 {
        emit_in::<{ RECORD_DATA[0] }>(ctx, at, cap_len, event_flags, now_ns)
    } else if cap_len <= d1 {
        emit_in::<{ RECORD_DATA[1] }>(ctx, at, cap_len, event_flags, now_ns)
    } else if cap_len <= d2 {
        emit_in::<{ RECORD_DATA[2] }>(ctx, at, cap_len, event_flags, now_ns)
    } else {
        emit_in::<{ RECORD_DATA[3] }>(ctx, at, cap_len, event_flags, now_ns)
    };
    match written {
        Err(why) => count(why),
        Ok(()) => {
            count(Counter::ResponsesCaptured);
            if truncated {
                count(Counter::TruncatedCaptures);
            }
        }
    }
}

/// [`emit`] into a record with room for `N` message bytes (`cap_len <= N`).
#[inline(always)]
fn emit_in<const N: usize>(
    ctx: &XdpContext,
    at: &Located,
    cap_len: usize,
    event_flags: u8,
    now_ns: u64,
) -> Result<(), Counter> {
    let Some(mut entry) = EVENTS.reserve::<DnsRecord<N>>(0) else {
        return Err(Counter::RingBufFull);
    };
    let event = entry.as_mut_ptr();
    // Field by field, never as one struct value: LLVM zero-fills a struct literal's address
    // bytes, and a 4-byte address's other 12, with calls to `memset`, a byte loop each (three
    // calls, about 250 instructions on every captured response).
    // SAFETY: a reserved record, this program's until submitted or discarded.
    let header = unsafe { addr_of_mut!((*event).header) };
    unsafe {
        (*header).ts_ns = now_ns;
        (*header).ifindex = (*ctx.ctx).ingress_ifindex;
        (*header).dns_len = at.claimed_len;
        (*header).cap_len = cap_len as u16;
        (*header).src_port = at.src_port;
        (*header).dst_port = at.dst_port;
        (*header).vlan_ids = at.vlan_ids;
        (*header).family = at.family;
        (*header).transport = at.protocol;
        (*header).flags = event_flags;
        (*header).vlan_count = at.vlan_count;
        (*header).reserved = 0;
    }

    // The addresses come straight from the packet (carrying 32 address bytes through the parse
    // costs more BPF stack than the program has).
    let pkt = Packet::new(ctx);
    let src = unsafe { addr_of_mut!((*header).src_addr) } as usize;
    let dst = unsafe { addr_of_mut!((*header).dst_addr) } as usize;
    if !copy_addresses(&pkt, at, src, dst) {
        entry.discard(0);
        return Err(Counter::CopyFailed);
    }

    // Re-check the bound where the verifier can see it next to the helper call.
    // A full register: a `u32` came back from `opaque` and was widened into another register
    // for the check, which the verifier does not link to the one passed to the helper.
    // Asked as a signed `len < 1`, not `len == 0`: 6.1's verifier learns no lower bound from
    // `== 0` (6.18's does), and then refuses `bpf_xdp_load_bytes` a length that may be zero
    // (`R3 min value is outside of the allowed memory range`; `tests/tests/verifier_budget.rs`
    // and docs/benchmarks.in.md, "Linux 6.1"). From `s< 1` it learns the lower bound 1, and
    // with `len <= N` the unsigned one.
    let len = scratch::opaque(cap_len);
    if (len as isize) < 1 || len > N {
        entry.discard(0);
        return Err(Counter::CopyFailed);
    }
    let data = unsafe { addr_of_mut!((*event).data) } as *mut c_void;
    // The smallest records (most responses) are copied by the program itself, in blocks of
    // four words (`copy_words`); the larger ones by the helper: the verifier walks the loops
    // once per step.
    let copied = if N == RECORD_DATA[0] && len >= 8 {
        copy_words::<N>(&pkt, usize::from(at.dns_off), data.cast::<u8>(), len)
    } else {
        unsafe { bpf_xdp_load_bytes(ctx.ctx, u32::from(at.dns_off), data, len as u32) == 0 }
    };
    if !copied {
        entry.discard(0);
        return Err(Counter::CopyFailed);
    }
    entry.submit(0);
    Ok(())
}

/// Copies the message's `len` bytes (`8 <= len <= N`) from `base` in the packet into `data`, a
/// record's message of `N` bytes: blocks of four words while they fit ([`Packet::copy_block`],
/// one bounds check a block), then the whole words left (at most three), then, if `len` is not
/// a multiple of 8, the last eight bytes of the message (overlapping the word before), so that
/// nothing past the message is read or written. False if a block or word is out of the packet
/// (the caller's bounds make that impossible; the verifier needs the check).
///
/// Why not `bpf_xdp_load_bytes`: on a 210-byte frame (a 168-byte message) the helper's copy
/// measured about 100 ns of the program's 300 (`xdp-bench`, the copy taken out, on the AMD
/// host); a loop of one 8-byte load and store per word ([`load_u64`], [`store_u64`]) took most
/// of that off (docs/benchmarks.in.md, "The message copied by the program"). On the Intel host
/// that word loop was still a third of the program's samples (`perf record` of the row): per
/// word a bounds check, two address sums and a loop step for one load and one store. Blocks
/// cut that to a quarter. The loops' bounds are constants; the verifier walks them once per
/// step (6 blocks and 3 words for the smallest record), so the program copies that record only.
#[inline(always)]
fn copy_words<const N: usize>(pkt: &Packet, base: usize, data: *mut u8, len: usize) -> bool {
    const { assert!(N.is_multiple_of(BLOCK_BYTES) && N <= COPY_INDEX_MASK + 1) };
    if base > MAX_HEADER_OFFSET || len < 8 || len > N {
        return false;
    }
    let mut off = 0;
    for _ in 0..N / BLOCK_BYTES {
        if off + BLOCK_BYTES > len {
            break;
        }
        // `off + 32 <= len <= N`: inside the record's message.
        if !pkt.copy_block(base, off, data as usize + off) {
            return false;
        }
        off += BLOCK_BYTES;
    }
    for _ in 0..BLOCK_BYTES / 8 - 1 {
        if off + 8 > len {
            break;
        }
        let Some(v) = pkt.word_at(base, off) else {
            return false;
        };
        // `off + 8 <= len <= N`: inside the record's message.
        store_u64(data as usize + off, v);
        off += 8;
    }
    if !len.is_multiple_of(8) {
        // Opaque, and checked again next to the store: the verifier sees `off`'s bound there.
        let off = scratch::opaque(len - 8);
        if off > N - 8 {
            return false;
        }
        let Some(v) = pkt.word_at(base, off) else {
            return false;
        };
        // `off + 8 <= N`, checked just above.
        store_u64(data as usize + off, v);
    }
    true
}

/// The first bytes of the common frame: untagged IPv4 with no options, and the first eight
/// bytes of its transport header (a whole UDP header; a TCP header's ports and sequence number).
#[repr(C)]
struct UntaggedV4 {
    eth: EthHdr,
    ip: Ipv4Hdr,
    l4: UdpHdr,
}

/// What [`front_door`] leaves to the rest of stage one.
enum Door {
    /// The common frame, parsed to L4 exactly as [`walk_to_l3`] would have (the front filter
    /// cleared both addresses, and the IP checks passed): UDP or TCP from a DNS port, or TCP
    /// whose header is cut short (which [`locate_tcp`] counts as malformed).
    Parsed(L3),
    /// [`walk_to_l3`] takes it from the start: not the common frame, or one whose addresses the
    /// front filter could not clear, whose verdict is then already asked (and let it on).
    Other { addresses_checked: bool },
}

/// Stage one's way for the frame most traffic is, untagged IPv4 without options: the checks of
/// [`walk_to_l3`] then [`locate_udp`] or [`locate_tcp`], in the same order and with the same
/// outcomes (the address verdict first, then the IP header, then the source port), at
/// constant offsets. A frame the front filter clears never reaches the verdict's code, and one
/// that is not DNS leaves before the general walk. `tests/tests/untagged_way.rs` runs frames at
/// every edge of this way both untagged and behind a tag (the general walk) and finds them
/// treated alike.
///
/// Why: in the general walk, the tag state and the offsets are live across the address
/// verdict's call, and LLVM kept them on the stack for every frame, DNS or not; a frame that
/// is not DNS paid those stores, the tag tests and the offset sums for nothing. The non-DNS
/// pass measured 1.57-1.69× the no-op before, 1.40-1.55× after (`xdp-bench`, alternated runs
/// on the AMD host, docs/benchmarks.in.md, "The untagged IPv4 way").
#[inline(always)]
fn front_door(pkt: &Packet) -> Result<Door, Skip> {
    let Some(h) = pkt.ptr_at::<UntaggedV4>(0) else {
        return Ok(Door::Other {
            addresses_checked: false,
        });
    };
    let ip = unsafe { addr_of!((*h).ip) };
    // Both compared as they lie in the frame: the type big-endian, version 4 and five words.
    if unsafe { (*h).eth.ether_type } != ETH_P_IP.to_be() || unsafe { (*ip).version_ihl } != 0x45 {
        return Ok(Door::Other {
            addresses_checked: false,
        });
    }
    let (src, dst) = unsafe { ((*ip).src, (*ip).dst) };
    let front = xdp_verdict::front_v4();
    if !xdp_verdict::front_v4_clears(front, src, dst) {
        // An address the filter cannot clear: the verdict's lookups, then the general walk
        // without them. The general walk finds this same header: the type at 12 is IPv4, so
        // no tag, and the IPv4 header at 14.
        if let Some(why) = xdp_verdict::address_verdict_v4_in(front, src, dst) {
            return Err(Skip::Drop(why));
        }
        return Ok(Door::Other {
            addresses_checked: true,
        });
    }
    let l3 = ipv4_l3(pkt, size_of::<EthHdr>(), ip)?;
    // The source port sits first in UDP and TCP alike.
    let src_port = u16::from_be(unsafe { (*h).l4.source });
    match l3.protocol {
        // The whole UDP header is in `UntaggedV4`: `locate_udp` would find it there and ask the
        // same port first.
        IPPROTO_UDP => {
            if !is_dns_port(src_port) {
                return Err(Skip::NotOurs);
            }
        }
        // `locate_tcp` asks the port only of a whole TCP header (a shorter one is malformed,
        // and counted), so the header is checked here first.
        IPPROTO_TCP => {
            if pkt.ptr_at::<TcpHdr>(l3.l4_off).is_some() && !is_dns_port(src_port) {
                return Err(Skip::NotOurs);
            }
        }
        _ => return Err(Skip::NotOurs),
    }
    Ok(Door::Parsed(l3))
}

/// Stage one's general way to L3: the Ethernet header, up to [`MAX_VLAN_TAGS`] tags (a frame
/// with more is judged by [`vlan_too_deep`]), then IPv4 or IPv6. Returns the L3 parse, the tag
/// count and the tags' VLAN ids.
#[inline(always)]
fn walk_to_l3(
    pkt: &Packet,
    addresses_checked: bool,
) -> Result<(L3, u8, [u16; MAX_VLAN_TAGS]), Skip> {
    let eth: *const EthHdr = pkt.ptr_at(0).ok_or(Skip::Malformed)?;
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut off = size_of::<EthHdr>();

    // Up to MAX_VLAN_TAGS (two) tags, unrolled by hand: no arrays indexed by a loop variable.
    const _: () = assert!(
        MAX_VLAN_TAGS == 2,
        "the tag walk below is unrolled for two tags"
    );
    let mut vlan_ids = [0u16; MAX_VLAN_TAGS];
    let mut vlan_count = 0u8;
    if is_vlan_tag(ether_type) {
        let tag: *const VlanHdr = pkt.ptr_at(off).ok_or(Skip::Malformed)?;
        let outer = u16::from_be(unsafe { (*tag).tci }) & 0x0fff;
        vlan_ids = [outer, 0];
        ether_type = u16::from_be(unsafe { (*tag).ether_type });
        vlan_count = 1;
        off += size_of::<VlanHdr>();
        if is_vlan_tag(ether_type) {
            let tag: *const VlanHdr = pkt.ptr_at(off).ok_or(Skip::Malformed)?;
            vlan_ids = [outer, u16::from_be(unsafe { (*tag).tci }) & 0x0fff];
            ether_type = u16::from_be(unsafe { (*tag).ether_type });
            vlan_count = 2;
            off += size_of::<VlanHdr>();
            if is_vlan_tag(ether_type) {
                return Err(vlan_too_deep(pkt, off, ether_type));
            }
        }
    }

    let l3 = match ether_type {
        ETH_P_IP => parse_ipv4(pkt, off, addresses_checked)?,
        ETH_P_IPV6 => parse_ipv6(pkt, off)?,
        _ => return Err(Skip::NotOurs),
    };
    Ok((l3, vlan_count, vlan_ids))
}

/// A frame with more than [`MAX_VLAN_TAGS`] tags: never captured (its record could not hold
/// the tags), but not a way past the blocklists either. The walk steps over the rest of the
/// tags, up to [`MAX_VLAN_TAGS_STEPPED`] in all, and judges the IP addresses behind them; a
/// frame no blocklist drops (or whose IP header is out of reach) is passed as `VlanTooDeep`.
/// `off` is where the third tag starts.
#[inline(always)]
fn vlan_too_deep(pkt: &Packet, mut off: usize, mut ether_type: u16) -> Skip {
    for _ in MAX_VLAN_TAGS..MAX_VLAN_TAGS_STEPPED {
        if !is_vlan_tag(ether_type) {
            break;
        }
        let Some(tag) = pkt.ptr_at::<VlanHdr>(off) else {
            return Skip::VlanTooDeep;
        };
        ether_type = u16::from_be(unsafe { (*tag).ether_type });
        off += size_of::<VlanHdr>();
    }
    let verdict = match ether_type {
        ETH_P_IP => pkt.ptr_at::<Ipv4Hdr>(off).and_then(|ip| {
            if unsafe { (*ip).version_ihl } >> 4 != 4 {
                return None;
            }
            xdp_verdict::address_verdict_v4(unsafe { (*ip).src }, unsafe { (*ip).dst })
        }),
        ETH_P_IPV6 => pkt.ptr_at::<Ipv6Hdr>(off).and_then(|ip| {
            if u32::from_be(unsafe { (*ip).version_tc_flow }) >> 28 != 6 {
                return None;
            }
            xdp_verdict::address_verdict_v6(unsafe { &(*ip).src }, unsafe { &(*ip).dst })
        }),
        _ => None,
    };
    match verdict {
        Some(why) => Skip::Drop(why),
        None => Skip::VlanTooDeep,
    }
}

#[inline(always)]
fn min(a: usize, b: usize) -> usize {
    if a < b { a } else { b }
}

/// The IPv4 header at `off`: the address verdict first (unless `addresses_checked`: asked
/// already, and it let the packet on), then [`ipv4_l3`].
#[inline(always)]
fn parse_ipv4(pkt: &Packet, off: usize, addresses_checked: bool) -> Result<L3, Skip> {
    let ip: *const Ipv4Hdr = pkt.ptr_at(off).ok_or(Skip::Malformed)?;
    if unsafe { (*ip).version_ihl } >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    // Before anything else can pass the packet: fragments and odd headers from a blocked host
    // are dropped too.
    if !addresses_checked
        && let Some(why) =
            xdp_verdict::address_verdict_v4(unsafe { (*ip).src }, unsafe { (*ip).dst })
    {
        return Err(Skip::Drop(why));
    }
    ipv4_l3(pkt, off, ip)
}

/// The checks of an IPv4 header `ip` at `off` (version 4, in the frame) past the address
/// verdict, and the L4 it leads to.
#[inline(always)]
fn ipv4_l3(pkt: &Packet, off: usize, ip: *const Ipv4Hdr) -> Result<L3, Skip> {
    let ihl = ((unsafe { (*ip).version_ihl } & 0x0f) as usize) * 4;
    let tot_len = u16::from_be(unsafe { (*ip).tot_len }) as usize;
    // Trailing Ethernet padding is fine; an IP header that claims more than the frame is not.
    if ihl < size_of::<Ipv4Hdr>() || tot_len < ihl || off + tot_len > pkt.len() {
        return Err(Skip::Malformed);
    }
    let frag = u16::from_be(unsafe { (*ip).frag_off });
    if frag & IP_OFFSET_MASK != 0 {
        return Err(Skip::NonFirstFragment);
    }
    Ok(L3 {
        family: AF_INET,
        l3_off: off,
        protocol: unsafe { (*ip).protocol },
        l4_off: off + ihl,
        l4_len: tot_len - ihl,
        first_fragment: frag & IP_MF != 0,
    })
}

#[inline(always)]
fn parse_ipv6(pkt: &Packet, off: usize) -> Result<L3, Skip> {
    let ip: *const Ipv6Hdr = pkt.ptr_at(off).ok_or(Skip::Malformed)?;
    if u32::from_be(unsafe { (*ip).version_tc_flow }) >> 28 != 6 {
        return Err(Skip::Malformed);
    }
    if let Some(why) = xdp_verdict::address_verdict_v6(unsafe { &(*ip).src }, unsafe { &(*ip).dst })
    {
        return Err(Skip::Drop(why));
    }
    let payload_len = u16::from_be(unsafe { (*ip).payload_len }) as usize;
    let mut next = unsafe { (*ip).next_header };
    let mut l4_off = off + size_of::<Ipv6Hdr>();
    if payload_len == 0 {
        // Jumbogram or nothing at all: not a DNS response we can size.
        return Err(Skip::NotOurs);
    }
    if l4_off + payload_len > pkt.len() {
        return Err(Skip::Malformed);
    }
    let payload_end = l4_off + payload_len;
    let mut first_fragment = false;

    // Up to MAX_IPV6_EXT_HEADERS headers are stepped over; the chain is too deep only when
    // another extension header still follows the last of them.
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        match next {
            IPV6_FRAGMENT => {
                let f: *const Ipv6FragHdr = pkt.ptr_at(l4_off).ok_or(Skip::Malformed)?;
                let fo = u16::from_be(unsafe { (*f).frag_off_m });
                if fo >> 3 != 0 {
                    return Err(Skip::NonFirstFragment);
                }
                first_fragment = fo & 1 != 0;
                next = unsafe { (*f).next_header };
                l4_off += size_of::<Ipv6FragHdr>();
            }
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_MOBILITY | IPV6_AH => {
                let e: *const Ipv6ExtHdr = pkt.ptr_at(l4_off).ok_or(Skip::Malformed)?;
                let len = unsafe { (*e).hdr_ext_len } as usize;
                let bytes = if next == IPV6_AH {
                    (len + 2) * 4
                } else {
                    (len + 1) * 8
                };
                next = unsafe { (*e).next_header };
                l4_off += bytes;
            }
            _ => break,
        }
        if l4_off > payload_end {
            return Err(Skip::Malformed);
        }
        walked += 1;
    }
    if walked == MAX_IPV6_EXT_HEADERS && is_ipv6_ext_header(next) {
        return Err(Skip::Ipv6ExtTooDeep);
    }

    Ok(L3 {
        family: AF_INET6,
        l3_off: off,
        protocol: next,
        l4_off,
        l4_len: payload_end - l4_off,
        first_fragment,
    })
}

#[inline(always)]
fn locate_udp(pkt: &Packet, l3: &L3) -> Result<Dns, Skip> {
    let udp: *const UdpHdr = pkt.ptr_at(l3.l4_off).ok_or(Skip::Malformed)?;
    let src_port = u16::from_be(unsafe { (*udp).source });
    if !is_dns_port(src_port) {
        return Err(Skip::NotOurs);
    }
    let udp_len = u16::from_be(unsafe { (*udp).len }) as usize;
    if udp_len < size_of::<UdpHdr>() {
        return Err(Skip::Malformed);
    }
    // Only the first fragment of a datagram may carry less than its UDP length says.
    if udp_len > l3.l4_len && !l3.first_fragment {
        return Err(Skip::Malformed);
    }
    let claimed_len = udp_len - size_of::<UdpHdr>();
    if claimed_len < size_of::<DnsHdr>() {
        return Err(Skip::NotDnsResponse);
    }
    // A first fragment may claim more than it carries, but never carry less than the UDP
    // header: a datagram of fewer bytes would leave `present_len` wrapped round, and the
    // message read from whatever follows the datagram in the frame.
    let Some(present_len) = l3.l4_len.checked_sub(size_of::<UdpHdr>()) else {
        return Err(Skip::Malformed);
    };
    if present_len < size_of::<DnsHdr>() {
        return Err(Skip::Malformed);
    }
    Ok(Dns {
        src_port,
        dst_port: u16::from_be(unsafe { (*udp).dest }),
        off: l3.l4_off + size_of::<UdpHdr>(),
        claimed_len,
        present_len,
    })
}

#[inline(always)]
fn locate_tcp(pkt: &Packet, l3: &L3) -> Result<Dns, Skip> {
    let tcp: *const TcpHdr = pkt.ptr_at(l3.l4_off).ok_or(Skip::Malformed)?;
    let src_port = u16::from_be(unsafe { (*tcp).source });
    if !is_dns_port(src_port) {
        return Err(Skip::NotOurs);
    }
    let doff = ((unsafe { (*tcp).doff_res } >> 4) as usize) * 4;
    if doff < size_of::<TcpHdr>() || doff > l3.l4_len {
        return Err(Skip::Malformed);
    }
    let payload = l3.l4_len - doff;
    if payload == 0 {
        // Handshake, ACKs, FIN: ordinary TCP, nothing to count.
        return Err(Skip::NotOurs);
    }
    if l3.first_fragment || payload < size_of::<TcpDnsLen>() + size_of::<DnsHdr>() {
        return Err(Skip::TcpNotWholeMessage);
    }
    let prefix_off = l3.l4_off + doff;
    let prefix: *const TcpDnsLen = pkt.ptr_at(prefix_off).ok_or(Skip::Malformed)?;
    let msg_len = u16::from_be(unsafe { (*prefix).len }) as usize;
    if msg_len + size_of::<TcpDnsLen>() > payload {
        // The message continues in later segments; stream reassembly is userspace's job.
        return Err(Skip::TcpNotWholeMessage);
    }
    if msg_len < size_of::<DnsHdr>() {
        return Err(Skip::NotDnsResponse);
    }
    Ok(Dns {
        src_port,
        dst_port: u16::from_be(unsafe { (*tcp).dest }),
        off: prefix_off + size_of::<TcpDnsLen>(),
        claimed_len: msg_len,
        present_len: payload - size_of::<TcpDnsLen>(),
    })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
