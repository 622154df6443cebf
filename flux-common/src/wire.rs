//! Wire constants: ethertypes, IP protocol and IPv6 extension-header numbers, DNS header
//! fields, record types and response codes, and the bounds of the frame walk. The kernel's
//! frame walk (`flux-ebpf`), the capture-file reader and the DNS parser (`flux-detect`) all
//! take them from here, never a copy.

/// Ethertypes (IEEE 802).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad (QinQ) outer tag.
pub const ETH_P_8021AD: u16 = 0x88a8;

/// IP protocol numbers (IANA).
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// IPv6 extension headers the walk steps over (IANA protocol numbers).
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AH: u8 = 51;
pub const IPV6_DEST_OPTS: u8 = 60;
pub const IPV6_MOBILITY: u8 = 135;

/// VLAN tags a captured frame may carry, and the ids a record holds. Two because 802.1ad
/// (an outer S-tag) over 802.1Q (an inner C-tag) is the deepest stacking any standard defines;
/// a frame with more is counted `vlan_too_deep` and never captured (see
/// [`MAX_VLAN_TAGS_STEPPED`] for its addresses).
pub const MAX_VLAN_TAGS: usize = 2;

/// Tags the walk steps over, in all, to reach the IP header of a frame with more than
/// [`MAX_VLAN_TAGS`], so that its addresses still go through the blocklists: a third tag must
/// not carry a blocked host's packets past the drop. Eight (32 bytes of tags) is far past any
/// real network and keeps the loop the verifier unrolls small; a frame with more is passed and
/// counted `vlan_too_deep`, as is any frame past two tags that no blocklist drops.
pub const MAX_VLAN_TAGS_STEPPED: usize = 8;

/// IPv6 extension headers walked: a chain of up to this many is followed to its transport
/// header, a longer one is passed and counted `ipv6_ext_too_deep`. Six covers one of each kind
/// RFC 8200 (4.1) puts before an upper-layer header (hop-by-hop, destination options, routing,
/// fragment, AH, destination options), which is the longest order it recommends.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Whether `next_header` is an IPv6 extension header the walk steps over.
#[inline(always)]
pub fn is_ipv6_ext_header(next_header: u8) -> bool {
    matches!(
        next_header,
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_AH | IPV6_DEST_OPTS | IPV6_MOBILITY
    )
}

/// Whether `ether_type` is a VLAN tag the walk steps over (802.1Q or 802.1ad).
#[inline(always)]
pub fn is_vlan_tag(ether_type: u16) -> bool {
    ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD
}

/// Source ports counted as DNS when none are configured: DNS, mDNS and LLMNR.
pub const DEFAULT_DNS_PORTS: [u16; 3] = [53, 5353, 5355];

/// DNS record types (RFC 1035, 3596, 6891).
pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;

/// DNS response code NXDOMAIN (RFC 1035).
pub const RCODE_NXDOMAIN: u16 = 3;

/// Fixed DNS header length.
pub const DNS_HEADER_LEN: usize = 12;

/// Whether the DNS header flags and counts look like a response worth capturing: QR=1, a
/// standard-ish opcode (QUERY, NOTIFY or UPDATE), and at most one question.
///
/// `flags` and `qdcount` are host byte order. Shared so that the XDP program and offline replay
/// decide the same way.
#[inline(always)]
pub fn is_plausible_response(flags: u16, qdcount: u16) -> bool {
    let qr = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    qr && matches!(opcode, 0 | 4 | 5) && qdcount <= 1
}
