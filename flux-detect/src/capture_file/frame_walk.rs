//! Frames: the XDP program's walk, link layer to DNS message, as `flux-ebpf/src/main.rs`
//! does it (and [`crate::frame_spec`] writes down). Pure functions over a byte slice:
//! no files, no allocation but the message yielded.

// Hand-written rather than etherparse's lax slicing (`LaxSlicedPacket`), which is already a
// dev-dependency for building test frames. This walk must be the kernel's, counter for counter,
// and etherparse walks differently in each place that matters here:
// - VLAN: it takes more than the two tags the XDP program walks;
// - IPv6: it parses a fixed set of extension headers (at most one of each kind, no Mobility
//   header), not a generic chain bounded by `MAX_IPV6_EXT_HEADERS`, so `ipv6_ext_too_deep` and
//   the hop-by-hop/routing/AH/mobility cases would count differently;
// - fragments: it hands over no transport header for any fragment, where the kernel reads the
//   UDP header of a first fragment (flagged truncated);
// - snaplen-cut frames: its "incomplete" payloads do not say which header the cut fell in, which
//   the `snaplen_cut`/`malformed_frames` split needs;
// - link types: no Linux SLL2 and no BSD loopback (NULL/LOOP).
// What is left is a few bounds-checked reads per header; the frame rules (and the counters they
// feed) are checked against all of ../shared/datasets/pcaps by tests/tests/datasets.rs.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::SystemTime,
};

use flux_common::{
    DNS_HEADER_LEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP, IPV6_AH, IPV6_DEST_OPTS,
    IPV6_FRAGMENT, IPV6_HOP_BY_HOP, IPV6_MOBILITY, IPV6_ROUTING, MAX_IPV6_EXT_HEADERS,
    MAX_VLAN_TAGS, is_ipv6_ext_header, is_plausible_response, is_vlan_tag,
};

use super::{CapturedRef, FrameError};
use crate::dns::Transport;

/// Link types, resolved once per file or interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Link {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    /// IPv4 or IPv6, told apart by the version nibble.
    RawIp,
    RawIpv4,
    RawIpv6,
    /// BSD loopback: 4-byte address family in the capturing host's byte order.
    Null,
    /// OpenBSD loopback: the same in network byte order.
    Loop,
    Unsupported(u32),
}

impl Link {
    pub(super) fn from_linktype(lt: u32) -> Link {
        match lt {
            1 => Link::Ethernet,
            113 => Link::LinuxSll,
            276 => Link::LinuxSll2,
            // LINKTYPE_RAW, and DLT_RAW as some systems write it.
            101 | 12 => Link::RawIp,
            228 => Link::RawIpv4,
            229 => Link::RawIpv6,
            0 => Link::Null,
            108 => Link::Loop,
            other => Link::Unsupported(other),
        }
    }
}

pub(super) enum Skip {
    /// Not DNS from a configured port (or not IP at all): nothing to count.
    NotOurs,
    Frame(FrameError),
}

impl From<FrameError> for Skip {
    fn from(e: FrameError) -> Self {
        Skip::Frame(e)
    }
}

fn malformed(why: &'static str) -> Skip {
    Skip::Frame(FrameError::Malformed(why))
}

/// A header is missing from the frame: the snaplen's doing if the frame was cut, else malformed.
fn short(cut: bool, why: &'static str) -> Skip {
    if cut {
        Skip::Frame(FrameError::SnaplenCut)
    } else {
        malformed(why)
    }
}

#[inline(always)]
pub(super) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The network layer as the transport parse needs it.
struct L3 {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    /// Offset of the L4 header in the frame.
    l4_off: usize,
    /// L4 bytes the IP header claims.
    l4_len: usize,
    first_fragment: bool,
    /// The frame holds less than the IP header claims.
    cut: bool,
}

pub(super) fn decode(
    link: Link,
    frame: &[u8],
    known_cut: bool,
    ts: SystemTime,
    ports: &[u16],
    f: &mut impl FnMut(CapturedRef<'_>),
) -> Result<(), Skip> {
    let (mut ether_type, mut off, walk_vlans) = link_layer(link, frame, known_cut)?;

    // Up to two tags, as the kernel walks them; a frame with more is never captured (the
    // kernel may still drop it by its addresses, which a file reader has no blocklist for).
    let mut vlan_ids = [0u16; MAX_VLAN_TAGS];
    let mut vlan_count = 0;
    while walk_vlans && is_vlan_tag(ether_type) {
        if vlan_count == MAX_VLAN_TAGS {
            return Err(FrameError::VlanTooDeep.into());
        }
        if frame.len() < off + 4 {
            return Err(short(known_cut, "VLAN tag cut short"));
        }
        vlan_ids[vlan_count] = be16(frame, off) & 0x0fff;
        ether_type = be16(frame, off + 2);
        vlan_count += 1;
        off += 4;
    }

    let l3 = match ether_type {
        ETH_P_IP => ipv4(frame, off, known_cut)?,
        ETH_P_IPV6 => ipv6(frame, off, known_cut)?,
        _ => return Err(Skip::NotOurs),
    };
    // The L4 bytes present: up to what the IP header claims (Ethernet padding is not payload).
    let l4_end = frame.len().min(l3.l4_off + l3.l4_len);
    let l4 = &frame[l3.l4_off.min(l4_end)..l4_end];
    let found = Found {
        ts,
        l3: &l3,
        vlan: &vlan_ids[..vlan_count],
    };
    match l3.protocol {
        IPPROTO_UDP => udp(&found, l4, ports, f),
        IPPROTO_TCP => tcp(&found, l4, ports, f),
        _ => Err(Skip::NotOurs),
    }
}

/// Unwraps the link layer: (ethertype, offset of what follows, whether VLAN tags may follow).
fn link_layer(link: Link, frame: &[u8], known_cut: bool) -> Result<(u16, usize, bool), Skip> {
    match link {
        Link::Ethernet => {
            if frame.len() < 14 {
                return Err(short(known_cut, "shorter than an Ethernet header"));
            }
            Ok((be16(frame, 12), 14, true))
        }
        Link::LinuxSll => {
            if frame.len() < 16 {
                return Err(short(known_cut, "shorter than a Linux SLL header"));
            }
            Ok((be16(frame, 14), 16, true))
        }
        Link::LinuxSll2 => {
            if frame.len() < 20 {
                return Err(short(known_cut, "shorter than a Linux SLL2 header"));
            }
            Ok((be16(frame, 0), 20, true))
        }
        Link::RawIp | Link::RawIpv4 | Link::RawIpv6 => {
            let Some(&first) = frame.first() else {
                return Err(malformed("empty frame"));
            };
            let et = match (first >> 4, link) {
                (4, Link::RawIp | Link::RawIpv4) => ETH_P_IP,
                (6, Link::RawIp | Link::RawIpv6) => ETH_P_IPV6,
                _ => return Err(malformed("raw IP frame of the wrong IP version")),
            };
            Ok((et, 0, false))
        }
        Link::Null | Link::Loop => {
            if frame.len() < 4 {
                return Err(short(known_cut, "shorter than a loopback header"));
            }
            let b = [frame[0], frame[1], frame[2], frame[3]];
            // NULL is in the capturing host's byte order, unknown here: a family fits in 16 bits.
            let family = match u32::from_ne_bytes(b) {
                v if v > 0xffff => v.swap_bytes(),
                v => v,
            };
            let et = match family {
                2 => ETH_P_IP,
                // AF_INET6 on the BSDs, Darwin, and Linux.
                10 | 24 | 28 | 30 => ETH_P_IPV6,
                _ => return Err(Skip::NotOurs),
            };
            Ok((et, 4, false))
        }
        Link::Unsupported(lt) => Err(FrameError::UnsupportedLink(lt).into()),
    }
}

/// What the layers below the transport said about a frame, to build each message found in it.
struct Found<'a> {
    ts: SystemTime,
    l3: &'a L3,
    vlan: &'a [u16],
}

impl<'a> Found<'a> {
    fn dns<'p>(
        &self,
        sport: u16,
        dport: u16,
        transport: Transport,
        payload: &'p [u8],
        truncated: bool,
    ) -> CapturedRef<'p>
    where
        'a: 'p,
    {
        CapturedRef {
            ts: self.ts,
            src: self.l3.src,
            dst: self.l3.dst,
            sport,
            dport,
            transport,
            vlan: self.vlan,
            payload,
            truncated,
        }
    }
}

/// The source port of a UDP or TCP header of `header_len` bytes, if the frame holds the header
/// and the port is one of `ports`.
fn source_port(
    l4: &[u8],
    header_len: usize,
    cut: bool,
    why: &'static str,
    ports: &[u16],
) -> Result<u16, Skip> {
    if l4.len() < header_len {
        return Err(short(cut, why));
    }
    let sport = be16(l4, 0);
    if !ports.contains(&sport) {
        return Err(Skip::NotOurs);
    }
    Ok(sport)
}

/// A UDP datagram (or the first fragment of one): one message.
fn udp(
    found: &Found<'_>,
    l4: &[u8],
    ports: &[u16],
    f: &mut impl FnMut(CapturedRef<'_>),
) -> Result<(), Skip> {
    let l3 = found.l3;
    let sport = source_port(l4, 8, l3.cut, "UDP header cut short", ports)?;
    let udp_len = be16(l4, 4) as usize;
    if udp_len < 8 {
        return Err(malformed("UDP length below 8"));
    }
    // Only the first fragment of a datagram may carry less than its UDP length says.
    if udp_len > l3.l4_len && !l3.first_fragment {
        return Err(malformed("UDP length exceeds the IP payload"));
    }
    let claimed = udp_len - 8;
    if claimed < DNS_HEADER_LEN {
        return Err(FrameError::NotDns.into());
    }
    let msg = &l4[8..l4.len().min(udp_len)];
    if msg.len() < DNS_HEADER_LEN {
        return Err(short(l3.cut, "DNS header cut short"));
    }
    if !is_plausible_response(be16(msg, 2), be16(msg, 4)) {
        return Err(FrameError::NotDns.into());
    }
    let truncated = msg.len() < claimed || l3.first_fragment;
    f(found.dns(sport, be16(l4, 2), Transport::Udp, msg, truncated));
    Ok(())
}

/// A TCP segment: each whole DNS message in it (a 2-byte length, then the message).
fn tcp(
    found: &Found<'_>,
    l4: &[u8],
    ports: &[u16],
    f: &mut impl FnMut(CapturedRef<'_>),
) -> Result<(), Skip> {
    let l3 = found.l3;
    let sport = source_port(l4, 20, l3.cut, "TCP header cut short", ports)?;
    let dport = be16(l4, 2);
    let doff = ((l4[12] >> 4) as usize) * 4;
    if doff < 20 || doff > l3.l4_len {
        return Err(malformed("TCP data offset out of range"));
    }
    let claimed = l3.l4_len - doff;
    if claimed == 0 {
        // Handshake, ACKs, FIN: ordinary TCP, nothing to count.
        return Err(Skip::NotOurs);
    }
    if l3.first_fragment {
        return Err(FrameError::TcpPartial.into());
    }
    let Some(seg) = l4.get(doff..) else {
        return Err(short(l3.cut, "TCP options cut short"));
    };
    let mut pos = 0;
    while pos < claimed {
        if claimed - pos < 2 + DNS_HEADER_LEN {
            return Err(FrameError::TcpPartial.into());
        }
        if seg.len() < pos + 2 {
            return Err(FrameError::SnaplenCut.into());
        }
        let len = be16(seg, pos) as usize;
        let start = pos + 2;
        let end = start + len;
        if end > claimed {
            // Continues in later segments: stream reassembly is not done here either.
            return Err(FrameError::TcpPartial.into());
        }
        if len < DNS_HEADER_LEN {
            return Err(FrameError::NotDns.into());
        }
        if seg.len() < start + DNS_HEADER_LEN {
            return Err(FrameError::SnaplenCut.into());
        }
        if !is_plausible_response(be16(seg, start + 2), be16(seg, start + 4)) {
            return Err(FrameError::NotDns.into());
        }
        let present = end.min(seg.len());
        f(found.dns(
            sport,
            dport,
            Transport::Tcp,
            &seg[start..present],
            present < end,
        ));
        pos = end;
    }
    Ok(())
}

fn ipv4(frame: &[u8], off: usize, known_cut: bool) -> Result<L3, Skip> {
    let Some(h) = frame.get(off..off + 20) else {
        return Err(short(known_cut, "IPv4 header cut short"));
    };
    if h[0] >> 4 != 4 {
        return Err(malformed("IPv4 version is not 4"));
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let tot_len = be16(h, 2) as usize;
    if ihl < 20 || tot_len < ihl {
        return Err(malformed("IPv4 header length out of range"));
    }
    let frame_cut = off + tot_len > frame.len();
    let frag = be16(h, 6);
    if frag & 0x1fff != 0 {
        return Err(FrameError::NonFirstFragment.into());
    }
    if frame.len() < off + ihl {
        return Err(short(true, "IPv4 options cut short"));
    }
    Ok(L3 {
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        protocol: h[9],
        l4_off: off + ihl,
        l4_len: tot_len - ihl,
        first_fragment: frag & 0x2000 != 0,
        cut: frame_cut,
    })
}

fn ipv6(frame: &[u8], off: usize, known_cut: bool) -> Result<L3, Skip> {
    let Some(h) = frame.get(off..off + 40) else {
        return Err(short(known_cut, "IPv6 header cut short"));
    };
    if h[0] >> 4 != 6 {
        return Err(malformed("IPv6 version is not 6"));
    }
    let payload_len = be16(h, 4) as usize;
    if payload_len == 0 {
        // Jumbogram or nothing at all: not a DNS response that can be sized.
        return Err(Skip::NotOurs);
    }
    let mut l4_off = off + 40;
    let payload_end = l4_off + payload_len;
    let frame_cut = payload_end > frame.len();
    let mut next = h[6];
    let mut first_fragment = false;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        match next {
            IPV6_FRAGMENT => {
                let Some(e) = frame.get(l4_off..l4_off + 8) else {
                    return Err(short(frame_cut, "IPv6 fragment header cut short"));
                };
                let fo = be16(e, 2);
                if fo >> 3 != 0 {
                    return Err(FrameError::NonFirstFragment.into());
                }
                first_fragment = fo & 1 != 0;
                next = e[0];
                l4_off += 8;
            }
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_MOBILITY | IPV6_AH => {
                let Some(e) = frame.get(l4_off..l4_off + 2) else {
                    return Err(short(frame_cut, "IPv6 extension header cut short"));
                };
                let len = e[1] as usize;
                let bytes = if next == IPV6_AH {
                    (len + 2) * 4
                } else {
                    (len + 1) * 8
                };
                next = e[0];
                l4_off += bytes;
            }
            _ => break,
        }
        if l4_off > payload_end {
            return Err(malformed("IPv6 extension headers exceed the payload"));
        }
        walked += 1;
    }
    // Too deep only when another extension header follows the last one walked.
    if walked == MAX_IPV6_EXT_HEADERS && is_ipv6_ext_header(next) {
        return Err(FrameError::Ipv6ExtTooDeep.into());
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    Ok(L3 {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: next,
        l4_off,
        l4_len: payload_end - l4_off,
        first_fragment,
        cut: frame_cut,
    })
}
