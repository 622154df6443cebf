//! The TC egress program (`--egress`): drops packets leaving the host for a blocked address.
//!
//! XDP only sees what arrives, so without this a local process can still send to a blocked
//! host (the first SYN, a UDP beacon, data); only the replies die. Here the destination goes
//! through the same maps and the same check as XDP's (`xdp_verdict::destination_blocked`).
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
use flux_common::{AF_INET, AF_INET6, Counter, ETH_P_IP, ETH_P_IPV6};

use crate::{count, monitor, xdp_verdict};

/// Offset of the destination address in each IP header.
const IPV4_DST: u32 = 16;
const IPV6_DST: u32 = 24;

/// Let the packet go on. `TC_ACT_UNSPEC` is tcx's `TCX_NEXT`: programs attached after ours
/// still run, so this one never decides for traffic it does not drop.
const NEXT: i32 = TC_ACT_UNSPEC;
/// `TC_ACT_SHOT` (tcx's `TCX_DROP`); the bindings type it differently per target.
const SHOT: i32 = 2;

#[classifier]
pub fn flux_egress(ctx: TcContext) -> i32 {
    // skb->protocol holds the EtherType in network byte order.
    let (family, offset, len) = match u16::from_be(ctx.skb.protocol() as u16) {
        ETH_P_IP => (AF_INET, IPV4_DST, 4u32),
        ETH_P_IPV6 => (AF_INET6, IPV6_DST, 16u32),
        _ => return NEXT,
    };
    let mut dst = [0u8; 16];
    // SAFETY: `dst` is 16 bytes on our stack and `len` is at most 16.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const c_void,
            offset,
            dst.as_mut_ptr() as *mut c_void,
            len,
            BPF_HDR_START_NET,
        )
    };
    if rc != 0 || !xdp_verdict::destination_blocked(family, &dst) {
        return NEXT;
    }
    if monitor() {
        count(Counter::MonitorWouldDrop);
        return NEXT;
    }
    count(Counter::DropEgressBlocked);
    SHOT
}
