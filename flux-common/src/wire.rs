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

/// Maximum VLAN tags walked (802.1ad outer + 802.1Q inner).
pub const MAX_VLAN_TAGS: usize = 2;

/// Maximum IPv6 extension headers walked before giving up (and passing the packet).
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

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
