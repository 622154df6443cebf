//! The NXDOMAIN answer for a blocked name: the response is cut right after its question, the
//! header says NXDOMAIN with no records, and the IP and UDP lengths and checksums are made right
//! again so the client accepts it.
//!
//! Every step that cannot be done safely returns `Err`, and the caller drops the response
//! instead: a blocked name never gets its real answer through.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    helpers::generated::{bpf_csum_diff, bpf_xdp_adjust_tail, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use flux_common::{AF_INET, AF_INET6, DNS_HEADER_LEN, IPPROTO_UDP, MAX_NAME_WIRE, RCODE_NXDOMAIN};

use crate::{
    packet::{DnsHdr, Ipv4Hdr, Ipv6Hdr, Packet, UdpHdr},
    scratch::{Located, SCRATCH_LEN, opaque, scratch},
};

/// DNS flags: TC (0x0200) and RCODE (0x000f) are cleared, RCODE set to NXDOMAIN.
const FLAGS_CLEAR: u16 = 0x020f;
/// QTYPE and QCLASS after the question name.
const QUESTION_TAIL: usize = 4;

#[inline(always)]
pub fn nxdomain(ctx: &XdpContext, at: &Located) -> Result<(), ()> {
    // SAFETY: this CPU's scratch, where the name walk left the question name's length.
    let name_len = unsafe { (*scratch().ok_or(())?).name_len } as usize;
    if name_len == 0 || name_len > MAX_NAME_WIRE {
        return Err(());
    }
    let kept = DNS_HEADER_LEN + name_len + QUESTION_TAIL;
    // Full-width and opaque, so the bound `ptr_at` checks is on the register that becomes the
    // pointer (LLVM would otherwise widen each u16 twice, and the verifier sees two values).
    let (l3_off, l4_off, dns_off) = (
        opaque(usize::from(at.l3_off)),
        opaque(usize::from(at.l4_off)),
        opaque(usize::from(at.dns_off)),
    );
    if kept > usize::from(at.present_len) || kept > usize::from(at.claimed_len) {
        return Err(());
    }
    let old_len = Packet::new(ctx).len();
    let new_len = dns_off + kept;
    if new_len > old_len {
        return Err(());
    }
    let shrink = old_len - new_len;
    if shrink > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(shrink as i32)) } != 0 {
        return Err(());
    }
    // Every packet pointer is stale after adjust_tail: start over from the context.
    let pkt = Packet::new(ctx);

    let hdr: *mut DnsHdr = pkt.ptr_at_mut(dns_off).ok_or(())?;
    unsafe {
        let flags = u16::from_be((*hdr).flags);
        (*hdr).flags = ((flags & !FLAGS_CLEAR) | RCODE_NXDOMAIN).to_be();
        (*hdr).ancount = 0;
        (*hdr).nscount = 0;
        (*hdr).arcount = 0;
    }

    let udp_len = size_of::<UdpHdr>() + kept;
    let udp: *mut UdpHdr = pkt.ptr_at_mut(l4_off).ok_or(())?;
    let old_check = unsafe { (*udp).check };
    unsafe {
        (*udp).len = (udp_len as u16).to_be();
        (*udp).check = 0;
    }

    // Bytes between the IP header and UDP: IPv4 options are inside the header, IPv6 extension
    // headers are payload.
    let l3_hdr = l4_off.wrapping_sub(l3_off);
    match at.family {
        AF_INET => {
            let ip: *mut Ipv4Hdr = pkt.ptr_at_mut(l3_off).ok_or(())?;
            let old = unsafe { (*ip).tot_len };
            let new = ((l3_hdr + udp_len) as u16).to_be();
            unsafe {
                (*ip).tot_len = new;
                (*ip).check = csum_replace((*ip).check, old, new);
            }
            if old_check == 0 {
                // IPv4 allows no UDP checksum; the sender chose that, keep it.
                return Ok(());
            }
        }
        AF_INET6 => {
            let ip: *mut Ipv6Hdr = pkt.ptr_at_mut(l3_off).ok_or(())?;
            let payload = l3_hdr - size_of::<Ipv6Hdr>() + udp_len;
            unsafe { (*ip).payload_len = (payload as u16).to_be() };
        }
        _ => return Err(()),
    }
    let check = udp_checksum(ctx, at.family, (l3_off, l4_off, dns_off), udp_len)?;
    unsafe { (*udp).check = check };
    Ok(())
}

/// RFC 1624 incremental update of a checksum when one 16-bit word goes from `old` to `new`. All
/// three are as stored in the packet; one's-complement sums do not care about byte order as long
/// as it is the same throughout.
#[inline(always)]
fn csum_replace(check: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(u64::from(sum))
}

#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The UDP checksum of the cut datagram, as stored in the packet: pseudo-header, UDP header with
/// a zero checksum, and the kept DNS bytes, laid out in scratch and summed by `bpf_csum_diff`.
#[inline(always)]
fn udp_checksum(
    ctx: &XdpContext,
    family: u8,
    (l3_off, l4_off, dns_off): (usize, usize, usize),
    udp_len: usize,
) -> Result<u16, ()> {
    let s = scratch().ok_or(())?;
    // SAFETY: this CPU's scratch; its bytes are free in XDP (the name is walked in the packet).
    let buf = unsafe { &mut (*s).bytes };
    let base = buf.as_mut_ptr();
    let [lh, ll] = (udp_len as u16).to_be_bytes();
    // Source and destination sit next to each other in both IP headers: one copy each.
    let (addrs_off, addrs_len, pseudo) = match family {
        AF_INET => (12, 8, 12),
        _ => (8, 32, 40),
    };
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (l3_off + addrs_off) as u32,
            base as *mut c_void,
            addrs_len,
        )
    };
    if rc != 0 {
        return Err(());
    }
    let tail: [u8; 8] = if family == AF_INET {
        [0, IPPROTO_UDP, lh, ll, 0, 0, 0, 0]
    } else {
        [0, 0, lh, ll, 0, 0, 0, IPPROTO_UDP]
    };
    let tail_len = pseudo - addrs_len as usize;
    buf.get_mut(addrs_len as usize..pseudo)
        .ok_or(())?
        .copy_from_slice(tail.get(..tail_len).ok_or(())?);
    // The UDP header as it now is in the packet (ports, new length, zero checksum).
    let udp_off = pseudo;
    let dns_at = udp_off + size_of::<UdpHdr>();
    let kept = udp_len - size_of::<UdpHdr>();
    if kept == 0 || dns_at + kept + 3 > SCRATCH_LEN {
        return Err(());
    }
    // SAFETY: both ranges were bounds-checked against SCRATCH_LEN just above.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            l4_off as u32,
            base.add(udp_off) as *mut c_void,
            size_of::<UdpHdr>() as u32,
        )
    };
    if rc != 0 {
        return Err(());
    }
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            dns_off as u32,
            base.add(dns_at) as *mut c_void,
            kept as u32,
        )
    };
    if rc != 0 {
        return Err(());
    }
    // Zero-pad to a 4-byte multiple, as bpf_csum_diff wants; zeros add nothing to the sum.
    let end = dns_at + kept;
    for k in 0..3 {
        if let Some(b) = buf.get_mut(opaque(end + k)) {
            *b = 0;
        }
    }
    let total = (end + 3) & !3;
    if total == 0 || total > SCRATCH_LEN {
        return Err(());
    }
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, base as *mut u32, total as u32, 0) };
    if sum < 0 {
        return Err(());
    }
    let check = !fold(sum as u64);
    // 0 means "no checksum" in UDP; a computed zero is sent as all ones.
    Ok(if check == 0 { 0xffff } else { check })
}
