//! The TC egress program: records the DNS queries that leave (so that XDP trusts only replies
//! to them, `queries.rs`), and with `--egress` drops packets leaving the host for a blocked
//! address.
//!
//! Queries: UDP or TCP to a configured DNS port, QR=0, opcode QUERY, one question. The IPv4
//! header must not be a fragment and an IPv6 header must carry UDP or TCP directly: a query
//! with extension headers is not recorded, so its reply is unsolicited (the safe side). The
//! question name is copied into scratch slot 1 (a socket buffer's bytes are read by helper) and
//! hashed by the same walk as XDP's, which reads its name in place.
//!
//! XDP only sees what arrives, so without this a local process can still send to a blocked
//! host (the first SYN, a UDP beacon, data); only the replies die. Here the destination goes
//! through the same maps and the same check as XDP's (`xdp_verdict::destination_blocked_v4`).
//!
//! The addresses are read relative to the network header (`bpf_skb_load_bytes_relative`), so
//! no Ethernet header is assumed (L3 devices such as WireGuard or tun carry none). Anything
//! that is not IPv4 or IPv6 by `skb->protocol` (an in-band VLAN tag, say), or cannot be read,
//! goes on.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, bpf_hdr_start_off::BPF_HDR_START_NET},
    helpers::generated::bpf_skb_load_bytes_relative,
    macros::classifier,
    programs::TcContext,
};
use core::mem::{MaybeUninit, size_of};

use flux_common::{
    AF_INET, AF_INET6, Config, Counter, DNS_HEADER_LEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP,
    IPPROTO_UDP, MATCH_OFF, MAX_NAME_WIRE, addr_words, query_addrs_v4, query_addrs_v6,
};

use crate::{
    FLUX_CONFIG, count, monitor,
    packet::{DnsHdr, IP_MF, IP_OFFSET_MASK, Ipv4Hdr, Ipv6Hdr, TcpHdr, UdpHdr},
    queries,
    scratch::{egress_scratch, opaque},
    xdp_verdict,
};

/// Offset of the destination address in each IP header.
const IPV4_DST: usize = 16;
const IPV6_DST: usize = 24;

/// Let the packet go on. `TC_ACT_UNSPEC` is tcx's `TCX_NEXT`: programs attached after ours
/// still run, so this one never decides for traffic it does not drop.
const NEXT: i32 = TC_ACT_UNSPEC;
/// `TC_ACT_SHOT` (tcx's `TCX_DROP`); the bindings type it differently per target.
const SHOT: i32 = 2;

#[classifier]
pub fn flux_egress(ctx: TcContext) -> i32 {
    // skb->protocol holds the EtherType in network byte order.
    let (family, offset) = match u16::from_be(ctx.skb.protocol() as u16) {
        ETH_P_IP => (AF_INET, IPV4_DST),
        ETH_P_IPV6 => (AF_INET6, IPV6_DST),
        _ => return NEXT,
    };
    let config = unsafe { core::ptr::read_volatile(&FLUX_CONFIG) };
    if config.match_queries != MATCH_OFF && record_query(&ctx, family, &config).is_some() {
        count(Counter::QueriesRecorded);
    }
    if config.egress_block == 0 {
        return NEXT;
    }
    if !destination_blocked(&ctx, family, offset) {
        return NEXT;
    }
    if monitor() {
        count(Counter::MonitorWouldDrop);
        return NEXT;
    }
    count(Counter::DropEgressBlocked);
    SHOT
}

/// Whether the packet's destination (at `offset` past the network header, of `family`) is
/// blocked; one that cannot be read is not. An IPv4 destination is read as its four bytes (see
/// `xdp_verdict::check_v4` for why never as sixteen).
#[inline(always)]
fn destination_blocked(ctx: &TcContext, family: u8, offset: usize) -> bool {
    if family == AF_INET {
        load::<[u8; 4]>(ctx, offset).is_some_and(xdp_verdict::destination_blocked_v4)
    } else {
        load::<[u8; 16]>(ctx, offset).is_some_and(|d| xdp_verdict::destination_blocked_v6(&d))
    }
}

/// A `T` read from `off` bytes past the network header, or `None` past the end.
#[inline(always)]
fn load<T>(ctx: &TcContext, off: usize) -> Option<T> {
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes exactly size_of::<T>() bytes into `v` or fails.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const c_void,
            off as u32,
            v.as_mut_ptr() as *mut c_void,
            size_of::<T>() as u32,
            BPF_HDR_START_NET,
        )
    };
    // SAFETY: rc == 0: every byte was written.
    (rc == 0).then(|| unsafe { v.assume_init() })
}

/// Records the packet in `QUERIES` if it is a DNS query (see the module comment).
#[inline(always)]
fn record_query(ctx: &TcContext, family: u8, config: &Config) -> Option<()> {
    let scratch = egress_scratch()?;
    // SAFETY: this CPU's egress scratch slot; nothing else uses it during the run.
    let key = unsafe { core::ptr::addr_of_mut!((*scratch).key) };
    let (protocol, l4, l4_len) = if family == AF_INET {
        let ip: Ipv4Hdr = load(ctx, 0)?;
        let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
        let tot = usize::from(u16::from_be(ip.tot_len));
        if ip.version_ihl >> 4 != 4
            || ihl < size_of::<Ipv4Hdr>()
            || tot < ihl
            || u16::from_be(ip.frag_off) & (IP_MF | IP_OFFSET_MASK) != 0
        {
            return None;
        }
        // The query leaves from the client to the server.
        unsafe { (*key).addrs = query_addrs_v4(ip.dst, ip.src) };
        (ip.protocol, ihl, tot - ihl)
    } else {
        let ip: Ipv6Hdr = load(ctx, 0)?;
        unsafe { (*key).addrs = query_addrs_v6(addr_words(&ip.dst), addr_words(&ip.src)) };
        let len = usize::from(u16::from_be(ip.payload_len));
        (ip.next_header, size_of::<Ipv6Hdr>(), len)
    };
    // Where the DNS message starts and how long it is.
    let (client_port, server_port, dns_off, msg_len) = match protocol {
        IPPROTO_UDP => {
            let udp: UdpHdr = load(ctx, l4)?;
            let len = usize::from(u16::from_be(udp.len));
            if len > l4_len || len < size_of::<UdpHdr>() {
                return None;
            }
            let dns_off = l4 + size_of::<UdpHdr>();
            (udp.source, udp.dest, dns_off, len - size_of::<UdpHdr>())
        }
        IPPROTO_TCP => {
            let tcp: TcpHdr = load(ctx, l4)?;
            let doff = usize::from(tcp.doff_res >> 4) * 4;
            if doff < size_of::<TcpHdr>() || doff + 2 > l4_len {
                return None;
            }
            // A TCP payload usually sits in page fragments, and bpf_skb_load_bytes_relative
            // reads only the linear part: pull the whole segment in (a length of 0 would pull
            // only what is already linear), for segments to a DNS port only (a query is small;
            // bulk traffic is left alone). Without this no TCP query was ever recorded and
            // every TCP reply was unsolicited.
            if !config.is_dns_port(u16::from_be(tcp.dest)) || ctx.pull_data(ctx.len()).is_err() {
                return None;
            }
            // After the 2-byte length prefix.
            (tcp.source, tcp.dest, l4 + doff + 2, l4_len - doff - 2)
        }
        _ => return None,
    };
    let server_port = u16::from_be(server_port);
    if !config.is_dns_port(server_port) || msg_len < DNS_HEADER_LEN {
        return None;
    }
    let hdr: DnsHdr = load(ctx, dns_off)?;
    let flags = u16::from_be(hdr.flags);
    // A query (QR=0), opcode QUERY, one question.
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || u16::from_be(hdr.qdcount) != 1 {
        return None;
    }
    let avail = msg_len - DNS_HEADER_LEN;
    let copy = opaque(if avail < MAX_NAME_WIRE {
        avail
    } else {
        MAX_NAME_WIRE
    });
    if copy == 0 || copy > MAX_NAME_WIRE {
        return None;
    }
    let dst = unsafe { core::ptr::addr_of_mut!((*scratch).bytes) } as *mut c_void;
    // SAFETY: scratch holds SCRATCH_LEN >= MAX_NAME_WIRE bytes; `copy` is at most that.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const c_void,
            (dns_off + DNS_HEADER_LEN) as u32,
            dst,
            copy as u32,
            BPF_HDR_START_NET,
        )
    };
    if rc != 0 {
        return None;
    }
    let name = xdp_verdict::InScratch(scratch);
    if !xdp_verdict::forward(&name, scratch, copy) {
        return None;
    }
    let qname_hash = xdp_verdict::full_hash(&name, scratch);
    if qname_hash == 0 {
        return None;
    }
    unsafe {
        (*key).client_port = u16::from_be(client_port);
        (*key).server_port = server_port;
        (*key).txid = u16::from_be(hdr.id);
        (*key).family = family;
        (*key).transport = protocol;
    }
    queries::record(unsafe { &*key }, qname_hash).then_some(())
}
