//! Ring-buffer records and blocklist values: the layouts the kernel writes and userspace reads
//! (and the other way round). `#[repr(C)]`, integers only, no implicit padding (tested).

use crate::wire::MAX_VLAN_TAGS;

/// Bytes of DNS message copied into each ring-buffer record. A longer message is captured
/// truncated and flagged with [`EVENT_FLAG_TRUNCATED`].
///
/// 2048 - header keeps a record at exactly 2 KiB and covers a full 1500-byte MTU payload.
pub const DNS_CAPTURE_MAX: usize = 2048 - core::mem::size_of::<DnsEventHeader>();

// The floor for a captured message: a full 1500-byte MTU payload.
const _: () = assert!(DNS_CAPTURE_MAX >= 1500);

/// `DnsEventHeader::flags`: the DNS message was longer than what was captured.
pub const EVENT_FLAG_TRUNCATED: u8 = 1 << 0;
/// `DnsEventHeader::flags`: the packet was the first fragment of a fragmented IP datagram.
pub const EVENT_FLAG_IP_FRAGMENT: u8 = 1 << 1;
/// `DnsEventHeader::flags`: the question name (or a parent domain) is blocked; the record holds
/// the response as it arrived, before the kernel answered NXDOMAIN or dropped it.
pub const EVENT_FLAG_BLOCKED: u8 = 1 << 2;
/// `DnsEventHeader::flags`: no query that left this host matches the reply (client and server
/// address and port, transport, transaction id and question name; see [`QueryKey`]). Such a
/// reply is never scored: anyone on the path, or anyone who can send to an open port, could
/// have written it. Set only when query matching is on ([`crate::Config::match_queries`]).
pub const EVENT_FLAG_UNSOLICITED: u8 = 1 << 3;

/// A DNS query that left the host, as the TC egress program records it and the XDP program
/// looks a reply up: the reply's destination is the query's client, its source the server.
/// Ports host order.
///
/// 16 bytes: the kernel hashes a key with jhash2, one round per three words, and the key that
/// held both addresses whole (40 bytes) took four. `perf record` of the matched-reply XDP row
/// put that hash (`htab_map_hash`) at a third of the program's own samples, and every DNS
/// exchange pays it three times (the query's insert, the reply's lookup and delete). The two
/// addresses are folded into [`QueryKey::addrs`] instead: an IPv4 pair exactly
/// ([`query_addrs_v4`]), an IPv6 pair by a 64-bit digest ([`query_addrs_v6`]).
///
/// A digest may make two IPv6 pairs one key. That gives a forger nothing: a forged reply can
/// already carry the real server's address as its source. What it cannot know is the port,
/// the transaction id and the name, and the digest leaves those whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryKey {
    /// The server's and the client's address ([`query_addrs_v4`], [`query_addrs_v6`]).
    pub addrs: u64,
    pub client_port: u16,
    pub server_port: u16,
    /// The DNS transaction id (host order).
    pub txid: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// [`crate::IPPROTO_UDP`] or [`crate::IPPROTO_TCP`].
    pub transport: u8,
}

/// [`QueryKey::addrs`] of an IPv4 pair: the server's four bytes, then the client's, read as one
/// native-endian word. That is what one 8-byte load of a reply's source and destination
/// addresses (adjacent in the IPv4 header, the server first) reads, so XDP makes it with that
/// load alone; the egress program, whose query has the client first, calls this.
#[inline(always)]
pub fn query_addrs_v4(server: [u8; 4], client: [u8; 4]) -> u64 {
    let [s0, s1, s2, s3] = server;
    let [c0, c1, c2, c3] = client;
    u64::from_ne_bytes([s0, s1, s2, s3, c0, c1, c2, c3])
}

/// [`QueryKey::addrs`] of an IPv6 pair, from each address's two native-endian words (its first
/// eight bytes and its last eight, as 8-byte loads read them; [`addr_words`]): each word is
/// xored in, then multiplied by an odd constant and folded (a bijection of the state), so that
/// every bit of every word reaches the digest. Not keyed: see [`QueryKey`] for why a collision
/// is harmless.
#[inline(always)]
pub fn query_addrs_v6(server: [u64; 2], client: [u64; 2]) -> u64 {
    let [s0, s1] = server;
    let [c0, c1] = client;
    let mut h = QUERY_ADDRS_V6_INIT;
    for w in [s0, s1, c0, c1] {
        h = (h ^ w).wrapping_mul(QUERY_ADDRS_V6_MUL);
        h ^= h >> 29;
    }
    h
}

/// The IPv6 digest's starting state (the FNV-1a offset basis: any non-zero constant would do).
const QUERY_ADDRS_V6_INIT: u64 = 0xcbf2_9ce4_8422_2325;
/// Its multiplier: odd, so the multiplication is a bijection (2^64 / golden ratio).
const QUERY_ADDRS_V6_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// An IPv6 address as the two native-endian words [`query_addrs_v6`] takes.
#[inline(always)]
pub fn addr_words(a: &[u8; 16]) -> [u64; 2] {
    let [
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        a8,
        a9,
        a10,
        a11,
        a12,
        a13,
        a14,
        a15,
    ] = *a;
    [
        u64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_ne_bytes([a8, a9, a10, a11, a12, a13, a14, a15]),
    ]
}

/// What the egress program remembers of a query.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuerySeen {
    /// When it left, in [`RECORD_CLOCK_ID`]'s clock.
    pub sent_ns: u64,
    /// [`crate::domain_hash`] of the question name (wire format, case-blind).
    pub qname_hash: u64,
}

/// The clock (a `clock_gettime` id) of a record's `ts_ns` and a query's `sent_ns`:
/// CLOCK_MONOTONIC_COARSE, which the programs read with `bpf_ktime_get_coarse_ns` (the eBPF
/// crate's `queries::clock_ns` says why not the precise clock). It is CLOCK_MONOTONIC as of the
/// kernel's last tick (1-10 ms ago, by the kernel's HZ), so a stamp converts to wall time as a
/// CLOCK_MONOTONIC reading does, at a tick's resolution.
pub const RECORD_CLOCK_ID: i32 = 6;

/// How long a query waits for its reply: a stub resolver gives up after a few seconds per
/// try, a forwarding resolver's upstream answers within about ten; thirty leaves room for a
/// slow recursion without keeping a spoofing window open for long.
pub const QUERY_WAIT_NS: u64 = 30_000_000_000;

/// `DnsEventHeader::family`: IPv4.
pub const AF_INET: u8 = 4;
/// `DnsEventHeader::family`: IPv6.
pub const AF_INET6: u8 = 6;

/// Metadata in front of every captured DNS message.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEventHeader {
    /// When the packet was seen, in [`RECORD_CLOCK_ID`]'s clock (the kernel's last tick).
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
    /// [`crate::IPPROTO_UDP`] or [`crate::IPPROTO_TCP`].
    pub transport: u8,
    /// `EVENT_FLAG_*` bits.
    pub flags: u8,
    pub vlan_count: u8,
    /// Explicit tail padding (always zero) so the record has no implicit padding bytes.
    pub reserved: u32,
}

/// One ring-buffer record: the header, then room for `DATA` bytes of DNS message, of which
/// `header.cap_len` are used. The kernel reserves the smallest of [`RECORD_SIZES`] that holds the
/// captured message, so a record is 256, 512, 1,024 or 2,048 bytes; a reader takes the header's
/// `cap_len`, never the record's length, for the message.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsRecord<const DATA: usize> {
    pub header: DnsEventHeader,
    pub data: [u8; DATA],
}

/// The largest record: room for [`DNS_CAPTURE_MAX`] bytes of message.
pub type DnsEvent = DnsRecord<DNS_CAPTURE_MAX>;

/// The record sizes the kernel reserves, smallest first: header and message rounded up to the
/// next of these. Most responses are under 200 bytes and take 256, so the ring holds eight times
/// as many of them as it would 2 KiB records, and the kernel and the reader touch a page per
/// sixteen records instead of per two; the largest holds a full 1,500-byte MTU payload.
pub const RECORD_SIZES: [usize; 4] = [256, 512, 1024, 2048];

/// Message bytes each size of [`RECORD_SIZES`] holds.
pub const RECORD_DATA: [usize; 4] = [
    RECORD_SIZES[0] - core::mem::size_of::<DnsEventHeader>(),
    RECORD_SIZES[1] - core::mem::size_of::<DnsEventHeader>(),
    RECORD_SIZES[2] - core::mem::size_of::<DnsEventHeader>(),
    RECORD_SIZES[3] - core::mem::size_of::<DnsEventHeader>(),
];
const _: () = assert!(RECORD_DATA[3] == DNS_CAPTURE_MAX);

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

/// One slot of the IPv4 drop cache (`MAP_DROP_CACHE_V4`, per CPU): an exact block the kernel
/// found and may drop on again without the lookup. Written by the kernel only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCacheSlot {
    /// The verdict generation (`MAP_VERDICT_GEN`) it was filled under, plus one; 0: empty.
    pub stamp: u64,
    /// A copy of the entry's `BlockEntry::expires_ns` (0 = never).
    pub expires_ns: u64,
    /// The blocked address, network byte order.
    pub addr: [u8; 4],
    /// Drops made on this slot not yet added to the entry's `hits`.
    pub pending: u32,
}

/// One slot of the host-MAC front (`MAP_HOST_MAC_SLOTS`): an attached interface and its MAC.
/// Written by userspace at attach; `ifindex` 0 is an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostMacSlot {
    /// The MAC as `mac_word` gives it.
    pub mac: u64,
    pub ifindex: u32,
    pub reserved: u32,
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

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are #[repr(C)], made only of integers and integer arrays, and have no padding
    // that could leak (checked by the layout tests in lib.rs).
    unsafe impl aya::Pod for super::DnsEventHeader {}
    unsafe impl<const DATA: usize> aya::Pod for super::DnsRecord<DATA> {}
    unsafe impl aya::Pod for super::BlockEntry {}
    unsafe impl aya::Pod for super::DomainBlock {}
    unsafe impl aya::Pod for super::DropCacheSlot {}
    unsafe impl aya::Pod for super::HostMacSlot {}
    unsafe impl aya::Pod for super::QueryKey {}
    unsafe impl aya::Pod for super::QuerySeen {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XDP makes an IPv4 reply's `addrs` with one 8-byte load at the source address; the
    /// egress program calls `query_addrs_v4` with the query's destination and source. Both must
    /// give the same word.
    #[test]
    fn an_ipv4_pair_is_one_load_of_the_reply_header() {
        let server = [192, 0, 2, 53];
        let client = [10, 1, 2, 3];
        // The reply's IPv4 header from byte 12: source (the server), then destination.
        let mut header = [0u8; 20];
        header[12..16].copy_from_slice(&server);
        header[16..20].copy_from_slice(&client);
        let load = u64::from_ne_bytes(header[12..20].try_into().expect("8 bytes"));
        assert_eq!(query_addrs_v4(server, client), load);
        assert_ne!(query_addrs_v4(client, server), load);
    }

    /// The IPv6 digest tells the two roles apart and takes every bit of every word in.
    #[test]
    fn the_ipv6_digest_covers_every_bit_and_both_roles() {
        let server: [u8; 16] = core::array::from_fn(|i| 0x20 + i as u8);
        let client: [u8; 16] = core::array::from_fn(|i| 0x90 + i as u8);
        let (s, c) = (addr_words(&server), addr_words(&client));
        let d = query_addrs_v6(s, c);
        assert_ne!(d, query_addrs_v6(c, s));
        for word in 0..4 {
            for bit in 0..64 {
                let mut w = [s[0], s[1], c[0], c[1]];
                w[word] ^= 1 << bit;
                assert_ne!(
                    query_addrs_v6([w[0], w[1]], [w[2], w[3]]),
                    d,
                    "word {word} bit {bit}"
                );
            }
        }
        // The words are the address's bytes as two 8-byte loads read them.
        assert_eq!(
            s[1],
            u64::from_ne_bytes(server[8..].try_into().expect("8 bytes"))
        );
    }
}
