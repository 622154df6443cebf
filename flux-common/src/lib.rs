//! Everything the kernel programs and userspace both need to agree on: record layouts, counter
//! indices, load-time configuration and the small pure functions that classify DNS headers.
//!
//! One definition only: `flux-ebpf` and `flux-agent` both use these, never a copy.
#![no_std]

/// Bytes of DNS message copied into each ring-buffer record. A longer message is captured
/// truncated and flagged with [`EVENT_FLAG_TRUNCATED`].
///
/// 2048 - header keeps a record at exactly 2 KiB and covers a full 1500-byte MTU payload.
pub const DNS_CAPTURE_MAX: usize = 2048 - core::mem::size_of::<DnsEventHeader>();

// The floor for a captured message: a full 1500-byte MTU payload.
const _: () = assert!(DNS_CAPTURE_MAX >= 1500);

/// Default ring-buffer size in bytes (must be a power of two and a multiple of the page size).
pub const RING_BUF_BYTES: u32 = 8 << 20;

/// Maximum number of DNS source ports that can be configured at load time.
pub const MAX_DNS_PORTS: usize = 8;

/// Maximum VLAN tags walked (802.1ad outer + 802.1Q inner).
pub const MAX_VLAN_TAGS: usize = 2;

/// Maximum IPv6 extension headers walked before giving up (and passing the packet).
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Name of the map/global symbols in the eBPF object; userspace looks them up by these names.
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const GLOBAL_CONFIG: &str = "FLUX_CONFIG";
/// The XDP program that captures DNS responses.
pub const PROG_XDP: &str = "flux_xdp";
/// An XDP program that only returns XDP_PASS: the baseline for benchmarks.
pub const PROG_XDP_NOOP: &str = "flux_xdp_noop";
/// The TC egress program (`--egress`) that drops packets leaving for blocked addresses.
pub const PROG_EGRESS: &str = "flux_egress";

/// `DnsEventHeader::flags`: the DNS message was longer than what was captured.
pub const EVENT_FLAG_TRUNCATED: u8 = 1 << 0;
/// `DnsEventHeader::flags`: the packet was the first fragment of a fragmented IP datagram.
pub const EVENT_FLAG_IP_FRAGMENT: u8 = 1 << 1;
/// `DnsEventHeader::flags`: the question name (or a parent domain) is blocked; the record holds
/// the response as it arrived, before the kernel answered NXDOMAIN or dropped it.
pub const EVENT_FLAG_BLOCKED: u8 = 1 << 2;

/// [`Config::domain_action`]: answer a blocked name with NXDOMAIN (the default).
pub const DOMAIN_ACTION_NXDOMAIN: u32 = 0;
/// [`Config::domain_action`]: drop the response for a blocked name.
pub const DOMAIN_ACTION_DROP: u32 = 1;

pub const AF_INET: u8 = 4;
pub const AF_INET6: u8 = 6;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Load-time configuration, written into the `FLUX_CONFIG` global before the program is loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Source ports counted as DNS, network byte order is *not* used: host order.
    pub dns_ports: [u16; MAX_DNS_PORTS],
    /// How many entries of `dns_ports` are in use (at least one).
    pub dns_port_count: u32,
    /// What a response for a blocked name gets: `DOMAIN_ACTION_*`.
    pub domain_action: u32,
    /// Non-zero: monitor mode. Blocks are matched and counted (`monitor_would_drop`) but every
    /// packet passes unchanged.
    pub monitor: u32,
}

impl Config {
    /// Port 53 only.
    pub const DEFAULT: Config = Config {
        dns_ports: [53, 0, 0, 0, 0, 0, 0, 0],
        dns_port_count: 1,
        domain_action: DOMAIN_ACTION_NXDOMAIN,
        monitor: 0,
    };

    /// Whether `port` is one of the configured DNS ports. The loop has a constant bound.
    #[inline(always)]
    pub fn is_dns_port(&self, port: u16) -> bool {
        let mut found = false;
        for (i, p) in self.dns_ports.iter().enumerate() {
            found |= (i as u32) < self.dns_port_count && *p == port;
        }
        found
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Metadata in front of every captured DNS message.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEventHeader {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the packet was seen.
    pub ts_ns: u64,
    /// Interface the packet arrived on.
    pub ifindex: u32,
    /// The DNS message length the packet claims (UDP length - 8, or the TCP length prefix).
    pub dns_len: u16,
    /// How many bytes of the message follow in `DnsEvent::data`.
    pub cap_len: u16,
    /// Source address: IPv4 in the first 4 bytes, or IPv6; network byte order.
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    /// Host byte order.
    pub src_port: u16,
    pub dst_port: u16,
    /// VLAN ids (12 bits) outermost first; `vlan_count` say how many are valid.
    pub vlan_ids: [u16; MAX_VLAN_TAGS],
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// [`IPPROTO_UDP`] or [`IPPROTO_TCP`].
    pub transport: u8,
    /// `EVENT_FLAG_*` bits.
    pub flags: u8,
    pub vlan_count: u8,
    /// Explicit tail padding (always zero) so the record has no implicit padding bytes.
    pub reserved: u32,
}

/// One ring-buffer record: the header, then up to [`DNS_CAPTURE_MAX`] bytes of DNS message.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsEvent {
    pub header: DnsEventHeader,
    pub data: [u8; DNS_CAPTURE_MAX],
}

/// Indices into the per-CPU `COUNTERS` array. Every drop and error path has one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the XDP program ran on.
    PacketsSeen = 0,
    /// DNS responses written to the ring buffer.
    ResponsesCaptured,
    /// Responses captured, but longer than the capture buffer or cut by IP fragmentation.
    TruncatedCaptures,
    /// Responses lost because the ring buffer was full.
    RingBufFull,
    /// Headers that claimed more than the packet holds, or impossible header fields.
    Malformed,
    /// Non-first IP fragments, passed untouched.
    NonFirstFragments,
    /// DNS-over-TCP segments that do not hold one whole message (not captured).
    TcpNotWholeMessage,
    /// Packets from a DNS port whose payload is not a plausible DNS response.
    NotDnsResponse,
    /// IPv6 packets whose extension-header chain was longer than the walk allows.
    Ipv6ExtTooDeep,
    /// The packet copy into a reserved record failed; the record was discarded.
    CopyFailed,
    /// Dropped: the source address is blocked (exact entry or CIDR) and not allowed.
    DropBlockedSrc,
    /// Dropped: the destination address is blocked and not allowed.
    DropBlockedDst,
    /// A blocked address or name matched, but an allowed CIDR or domain covers it: passed.
    AllowedOverBlock,
    /// A blocked address whose entry had expired: passed (userspace sweeps the entry).
    ExpiredBlock,
    /// A DNS response for a blocked name, rewritten in place to NXDOMAIN and passed.
    SinkholedNxdomain,
    /// A DNS response for a blocked name, dropped (drop action, TCP, or a fragmented datagram
    /// that cannot be cut).
    DropBlockedName,
    /// A response whose question name could not be walked (compression pointer, bad label,
    /// cut short): not checked against the domain blocklist, passed.
    QnameUnchecked,
    /// Monitor mode: a packet that would have been dropped or answered NXDOMAIN, passed.
    MonitorWouldDrop,
    /// TC egress (`--egress`): a packet leaving the host for a blocked address, dropped.
    DropEgressBlocked,
}

impl Counter {
    pub const COUNT: usize = 19;
    pub const ALL: [Counter; Counter::COUNT] = [
        Counter::PacketsSeen,
        Counter::ResponsesCaptured,
        Counter::TruncatedCaptures,
        Counter::RingBufFull,
        Counter::Malformed,
        Counter::NonFirstFragments,
        Counter::TcpNotWholeMessage,
        Counter::NotDnsResponse,
        Counter::Ipv6ExtTooDeep,
        Counter::CopyFailed,
        Counter::DropBlockedSrc,
        Counter::DropBlockedDst,
        Counter::AllowedOverBlock,
        Counter::ExpiredBlock,
        Counter::SinkholedNxdomain,
        Counter::DropBlockedName,
        Counter::QnameUnchecked,
        Counter::MonitorWouldDrop,
        Counter::DropEgressBlocked,
    ];

    /// Stable snake_case name, used in `stats --json` and the docs.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PacketsSeen => "packets_seen",
            Counter::ResponsesCaptured => "responses_captured",
            Counter::TruncatedCaptures => "truncated_captures",
            Counter::RingBufFull => "ringbuf_full",
            Counter::Malformed => "malformed",
            Counter::NonFirstFragments => "non_first_fragments",
            Counter::TcpNotWholeMessage => "tcp_not_whole_message",
            Counter::NotDnsResponse => "not_dns_response",
            Counter::Ipv6ExtTooDeep => "ipv6_ext_too_deep",
            Counter::CopyFailed => "copy_failed",
            Counter::DropBlockedSrc => "drop_blocked_src",
            Counter::DropBlockedDst => "drop_blocked_dst",
            Counter::AllowedOverBlock => "allowed_over_block",
            Counter::ExpiredBlock => "expired_block",
            Counter::SinkholedNxdomain => "sinkholed_nxdomain",
            Counter::DropBlockedName => "drop_blocked_name",
            Counter::QnameUnchecked => "qname_unchecked",
            Counter::MonitorWouldDrop => "monitor_would_drop",
            Counter::DropEgressBlocked => "drop_egress_blocked",
        }
    }
}

/// Blocked IPv4 addresses: `HashMap<[u8; 4], BlockEntry>` (network byte order keys).
pub const MAP_BLOCKED_V4: &str = "BLOCKED_V4";
/// Blocked IPv6 addresses: `HashMap<[u8; 16], BlockEntry>`.
pub const MAP_BLOCKED_V6: &str = "BLOCKED_V6";
/// Blocked IPv4 CIDRs: `LpmTrie<[u8; 4], BlockEntry>`.
pub const MAP_BLOCKED_CIDR_V4: &str = "BLOCKED_CIDR_V4";
/// Blocked IPv6 CIDRs: `LpmTrie<[u8; 16], BlockEntry>`.
pub const MAP_BLOCKED_CIDR_V6: &str = "BLOCKED_CIDR_V6";
/// Allowed IPv4 CIDRs, checked before any block: `LpmTrie<[u8; 4], u32>`.
pub const MAP_ALLOWED_CIDR_V4: &str = "ALLOWED_CIDR_V4";
/// Allowed IPv6 CIDRs: `LpmTrie<[u8; 16], u32>`.
pub const MAP_ALLOWED_CIDR_V6: &str = "ALLOWED_CIDR_V6";

/// Blocked domains: `HashMap<u64, DomainBlock>`, keyed by [`domain_hash`] of the wire name.
pub const MAP_BLOCKED_DOMAINS: &str = "BLOCKED_DOMAINS";
/// Allowed domains, which win over any blocked name or parent: `HashMap<u64, DomainBlock>`.
pub const MAP_ALLOWED_DOMAINS: &str = "ALLOWED_DOMAINS";

/// Capacity of each exact-address blocklist (IPv4 and IPv6 separately).
pub const MAX_BLOCKED_IPS: u32 = 1 << 20;
/// Capacity of each blocked-CIDR trie.
pub const MAX_BLOCKED_CIDRS: u32 = 1 << 16;
/// Capacity of each allowed-CIDR trie.
pub const MAX_ALLOWED_CIDRS: u32 = 1 << 14;
/// Capacity of the domain blocklist.
pub const MAX_BLOCKED_DOMAINS: u32 = 1 << 18;
/// Capacity of the domain allowlist.
pub const MAX_ALLOWED_DOMAINS: u32 = 1 << 14;

/// [`BlockEntry::source`]: the scorer judged the domain flux.
pub const SOURCE_SCORER: u8 = 1;
/// [`BlockEntry::source`]: added by hand (`flux-agent blocklist add`).
pub const SOURCE_MANUAL: u8 = 2;
/// [`BlockEntry::source`]: from a threat-intelligence feed.
pub const SOURCE_FEED: u8 = 3;

/// Bytes of reason text kept in a block entry (NUL-padded, cut at a UTF-8 boundary).
pub const REASON_LEN: usize = 24;

/// The value of every blocklist entry. Self-describing, so the pinned maps alone say what is
/// blocked and why: a restarted agent or the CLI needs nothing else.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    /// `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`) after which the entry no longer
    /// blocks; 0 = never.
    pub expires_ns: u64,
    /// Packets this entry dropped; the kernel adds to it atomically.
    pub hits: u64,
    /// Wall-clock seconds when it was added (for display).
    pub added_unix: u32,
    /// The scorer's score × 1000 (0 for manual and feed entries).
    pub score_milli: u16,
    /// `SOURCE_*`.
    pub source: u8,
    pub reserved: u8,
    pub reason: [u8; REASON_LEN],
}

impl BlockEntry {
    /// An entry from `source` that blocks until `expires_ns` (0 = never), with no hits, score
    /// or reason yet.
    pub const fn new(source: u8, expires_ns: u64) -> Self {
        Self {
            expires_ns,
            hits: 0,
            added_unix: 0,
            score_milli: 0,
            source,
            reserved: 0,
            reason: [0; REASON_LEN],
        }
    }

    /// Whether the entry still blocks at `now_ns` (`CLOCK_BOOTTIME`).
    #[inline(always)]
    pub fn active(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || now_ns < self.expires_ns
    }
}

/// Bytes kept for a blocked domain's dotted name (NUL-padded; a name is at most 253).
pub const DOMAIN_TEXT_LEN: usize = 256;

/// The value of the domain blocklist: the block itself, and the name it was made for, so the
/// pinned map alone can be listed (the key is only a hash). The kernel reads `entry` only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainBlock {
    pub entry: BlockEntry,
    /// Lowercase dotted name without the trailing dot, NUL-padded.
    pub name: [u8; DOMAIN_TEXT_LEN],
}

/// Longest wire-format domain name (RFC 1035).
pub const MAX_NAME_WIRE: usize = 255;

/// Where the domain-name hash starts (the FNV-1a offset basis).
pub const NAME_HASH_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// One step of the domain-name hash: FNV-1a over the ASCII-lowercased byte.
///
/// The hash runs over a wire-format name (length-prefixed labels, then the root's 0) **from
/// the last byte to the first**. Each suffix that starts at a label is then a whole domain
/// (`example.com`, `com`), and its hash is an intermediate value of the same backward pass: the
/// XDP program gets the hash of the name and of every parent domain in one walk. Label lengths
/// are at most 63, below `'A'`, so lowercasing never touches them.
#[inline(always)]
pub fn name_hash_step(h: u64, byte: u8) -> u64 {
    (h ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(0x0000_0100_0000_01b3)
}

/// The blocklist key of a wire-format name: [`name_hash_step`] over its bytes, last to first.
pub fn domain_hash(wire: &[u8]) -> u64 {
    let mut h = NAME_HASH_INIT;
    for b in wire.iter().rev() {
        h = name_hash_step(h, *b);
    }
    h
}

/// Writes `name` (dotted, an optional trailing dot) in wire format into `out` and returns the
/// length, or `None` for an empty label, a label over 63 bytes or a name over 255 bytes. The
/// root is `"."` or `""`.
pub fn to_wire(name: &str, out: &mut [u8; MAX_NAME_WIRE]) -> Option<usize> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut len = 0usize;
    if !name.is_empty() {
        for label in name.split('.') {
            let l = label.len();
            if l == 0 || l > 63 {
                return None;
            }
            *out.get_mut(len)? = l as u8;
            out.get_mut(len + 1..len + 1 + l)?
                .copy_from_slice(label.as_bytes());
            len += 1 + l;
        }
    }
    *out.get_mut(len)? = 0;
    Some(len + 1)
}

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

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are #[repr(C)], made only of integers and integer arrays, and have no padding
    // that could leak (checked by the layout tests below).
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::DnsEventHeader {}
    unsafe impl aya::Pod for super::DnsEvent {}
    unsafe impl aya::Pod for super::BlockEntry {}
    unsafe impl aya::Pod for super::DomainBlock {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_has_no_padding_and_record_is_2k() {
        // Sum of the fields: 8 + 4 + 2 + 2 + 16 + 16 + 2 + 2 + 4 + 4 + 4 = 64.
        assert_eq!(core::mem::size_of::<DnsEventHeader>(), 64);
        assert_eq!(core::mem::size_of::<DnsEvent>(), 2048);
        assert_eq!(
            core::mem::size_of::<Config>(),
            2 * MAX_DNS_PORTS + 4 + 4 + 4
        );
        assert_eq!(
            core::mem::size_of::<DomainBlock>(),
            core::mem::size_of::<BlockEntry>() + DOMAIN_TEXT_LEN
        );
    }

    #[test]
    fn block_entry_has_no_padding() {
        assert_eq!(
            core::mem::size_of::<BlockEntry>(),
            8 + 8 + 4 + 2 + 1 + 1 + REASON_LEN
        );
        let e = BlockEntry::new(SOURCE_MANUAL, 100);
        assert!(e.active(99));
        assert!(!e.active(100));
        assert!(BlockEntry { expires_ns: 0, ..e }.active(u64::MAX));
    }

    fn hash_of(name: &str) -> u64 {
        let mut buf = [0u8; MAX_NAME_WIRE];
        let n = to_wire(name, &mut buf).unwrap();
        domain_hash(&buf[..n])
    }

    #[test]
    fn wire_format() {
        let mut buf = [0u8; MAX_NAME_WIRE];
        let n = to_wire("www.Example.com.", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"\x03www\x07Example\x03com\x00");
        assert_eq!(to_wire(".", &mut buf), Some(1));
        assert_eq!(to_wire("a..b", &mut buf), None);
        let long = [b'a'; 64];
        assert_eq!(
            to_wire(core::str::from_utf8(&long).unwrap(), &mut buf),
            None
        );
        // 4 labels of 63 bytes: 4 * 64 + 1 = 257 bytes, over the limit.
        let label = core::str::from_utf8(&long[..63]).unwrap();
        let mut name = [0u8; 4 * 64];
        for i in 0..4 {
            name[i * 64..i * 64 + 63].copy_from_slice(label.as_bytes());
            if i < 3 {
                name[i * 64 + 63] = b'.';
            }
        }
        assert_eq!(
            to_wire(core::str::from_utf8(&name[..4 * 64 - 1]).unwrap(), &mut buf),
            None
        );
    }

    #[test]
    fn domain_hash_is_case_blind_and_yields_every_parent_in_one_pass() {
        assert_eq!(hash_of("WWW.Example.COM"), hash_of("www.example.com"));
        assert_ne!(hash_of("example.com"), hash_of("example.net"));
        // The backward pass over www.example.com passes through the hashes of example.com
        // and com exactly where their labels start.
        let mut buf = [0u8; MAX_NAME_WIRE];
        let n = to_wire("www.example.com", &mut buf).unwrap();
        let mut h = NAME_HASH_INIT;
        let mut seen = [0u64; 3];
        let mut k = 0;
        for i in (0..n).rev() {
            h = name_hash_step(h, buf[i]);
            if matches!(i, 0 | 4 | 12) {
                seen[k] = h;
                k += 1;
            }
        }
        assert_eq!(
            seen,
            [
                hash_of("com"),
                hash_of("example.com"),
                hash_of("www.example.com")
            ]
        );
    }

    #[test]
    fn counters_are_dense_and_named() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert!(!c.name().is_empty());
        }
    }

    #[test]
    fn dns_port_lookup_respects_count() {
        let mut c = Config::DEFAULT;
        assert!(c.is_dns_port(53));
        assert!(!c.is_dns_port(0));
        c.dns_ports[1] = 5353;
        assert!(!c.is_dns_port(5353));
        c.dns_port_count = 2;
        assert!(c.is_dns_port(5353));
    }

    #[test]
    fn plausible_response() {
        assert!(is_plausible_response(0x8180, 1));
        assert!(!is_plausible_response(0x0100, 1)); // a query
        assert!(!is_plausible_response(0x8180, 2));
        assert!(!is_plausible_response(0x8000 | (2 << 11), 1)); // STATUS opcode
        assert!(is_plausible_response(0x8000 | (5 << 11), 0)); // UPDATE response
    }
}
