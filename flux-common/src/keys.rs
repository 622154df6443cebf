//! Map names, capacities and keys: the names userspace finds the pinned maps by, how many entries
//! each holds, and the domain-name hash that keys the domain maps (the same hash, computed
//! in one backward pass, in the kernel).

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

/// Which of the blocklist maps may hold entries: `Array<u32>` with one slot per map, indexed by
/// [`Occupied`]. The packet path reads it before the lookups and skips every map whose slot is 0:
/// with no CIDR blocked there is no LPM lookup, with no domain blocked no name walk, and so on.
///
/// The invariant userspace keeps (`flux-agent/src/enforce/occupancy.rs`): a map that holds an
/// entry has a non-zero slot. A non-zero slot over an empty map is allowed (it only costs the
/// lookup). Writers set a slot *after* an insert, and after a removal that leaves the map empty
/// they clear it and then look again, setting it back if an entry arrived meanwhile: so two
/// writers (the agent and the CLI) can never leave a map with entries behind a 0 slot. One slot
/// per map rather than bits of one word, because userspace cannot update a map value atomically:
/// two writers' read-modify-write of one word could lose a bit.
pub const MAP_OCCUPANCY: &str = "OCCUPANCY";

/// The slots of [`MAP_OCCUPANCY`]: one per map the packet path looks up.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occupied {
    BlockedV4 = 0,
    BlockedV6 = 1,
    BlockedCidrV4 = 2,
    BlockedCidrV6 = 3,
    AllowedCidrV4 = 4,
    AllowedCidrV6 = 5,
    BlockedDomains = 6,
    AllowedDomains = 7,
}

impl Occupied {
    /// Every slot, in index order.
    pub const ALL: [Occupied; 8] = [
        Occupied::BlockedV4,
        Occupied::BlockedV6,
        Occupied::BlockedCidrV4,
        Occupied::BlockedCidrV6,
        Occupied::AllowedCidrV4,
        Occupied::AllowedCidrV6,
        Occupied::BlockedDomains,
        Occupied::AllowedDomains,
    ];

    /// The map this slot speaks for.
    pub const fn map_name(self) -> &'static str {
        match self {
            Occupied::BlockedV4 => MAP_BLOCKED_V4,
            Occupied::BlockedV6 => MAP_BLOCKED_V6,
            Occupied::BlockedCidrV4 => MAP_BLOCKED_CIDR_V4,
            Occupied::BlockedCidrV6 => MAP_BLOCKED_CIDR_V6,
            Occupied::AllowedCidrV4 => MAP_ALLOWED_CIDR_V4,
            Occupied::AllowedCidrV6 => MAP_ALLOWED_CIDR_V6,
            Occupied::BlockedDomains => MAP_BLOCKED_DOMAINS,
            Occupied::AllowedDomains => MAP_ALLOWED_DOMAINS,
        }
    }

    /// The slot of the map named `name`, if the packet path skips it when empty.
    pub fn of_map(name: &str) -> Option<Occupied> {
        Occupied::ALL.into_iter().find(|o| o.map_name() == name)
    }
}

/// Slots in [`MAP_OCCUPANCY`].
pub const OCCUPANCY_SLOTS: u32 = Occupied::ALL.len() as u32;

/// The IPv4 front filter: an `Array` of one value, [`FRONT_V4_SLOTS`] words, mmap-able
/// (`BPF_F_MMAPABLE`). One value, not one entry a word: the XDP program reads the ready word and
/// the bits of both addresses after a single lookup, where each entry was a lookup of its own.
/// Bit `n` of the filter (word `n / 64`, bit `n % 64`) stands for the /24 network `n` (an
/// address's top 24 bits): it is set when a blocked IPv4 address or CIDR may lie in that /24, so
/// an address whose bit is clear cannot be blocked and the XDP program skips the exact and CIDR
/// lookups for it (one array read instead of a hash and a trie walk).
///
/// The invariant userspace keeps (`flux-agent/src/enforce/maps/front_filter.rs`): while the
/// ready word ([`FRONT_V4_READY`]) is non-zero, every entry of `BLOCKED_V4` and `BLOCKED_CIDR_V4`
/// has its bits set. Writers set bits with an atomic OR through the mmap *after* the insert (two
/// writers, the agent and the CLI, never lose each other's bits). A set bit over nothing is
/// allowed (it only costs the lookups); bits are cleared only by a rebuild that clears first and
/// then sets again the bits of everything the maps hold. While the ready word is 0 (a map just
/// created, or written by something that bypasses the filter) the kernel ignores the filter and
/// looks every address up.
pub const MAP_FRONT_V4: &str = "FRONT_V4";
/// Words of filter bits: one bit per IPv4 /24 (2^24 bits, 2 MiB).
pub const FRONT_V4_WORDS: u32 = 1 << 18;
/// Index of the ready word, right after the filter bits.
pub const FRONT_V4_READY: u32 = FRONT_V4_WORDS;
/// Entries of [`MAP_FRONT_V4`]: the filter words and the ready word.
pub const FRONT_V4_SLOTS: u32 = FRONT_V4_WORDS + 1;

/// The /24 network number of an IPv4 address (network byte order octets): its filter bit.
#[inline(always)]
pub const fn front_v4_bit(addr: [u8; 4]) -> u32 {
    u32::from_be_bytes(addr) >> 8
}

/// The word of a front filter ([`MAP_FRONT_V4`], [`MAP_FRONT_NAMES`]) that holds filter bit
/// `bit`, and the bit's mask in it.
#[inline(always)]
pub const fn front_word(bit: u32) -> (u32, u64) {
    (bit >> 6, 1u64 << (bit & 63))
}

/// The first and last filter bit a blocked IPv4 CIDR `addr/len` covers: every /24 that holds
/// any of its addresses (a /24 or longer covers one; a /16, 256; a /0, all of them).
pub const fn front_v4_span(addr: [u8; 4], len: u8) -> (u32, u32) {
    let first = front_v4_bit(addr);
    if len >= 24 {
        return (first, first);
    }
    let width = 1u32 << (24 - len as u32);
    let first = first & !(width - 1);
    (first, first + (width - 1))
}

/// The IPv4 drop cache: `PerCpuArray<DropCacheSlot>` of [`DROP_CACHE_SLOTS`] slots, written by
/// the kernel only. A slot remembers, for one CPU, that an address was found in `BLOCKED_V4`
/// with a live entry and no allowed CIDR over it, at verdict generation [`MAP_VERDICT_GEN`]: a
/// later packet of that address is dropped on the slot alone, one inlined array read instead of
/// the hash lookup (35-40 ns of an 80 ns drop on the bench VM) and the allowlist walk. Only
/// exact IPv4 blocks are cached: a flood from one blocked host is the drop that comes in
/// millions, and a CIDR's hit could not be counted without its trie lookup.
///
/// A slot drops only while all of these hold: its stamp is the generation word plus one (so a
/// zeroed slot never matches), its address is the packet's, its entry's expiry (copied) has not
/// passed, and it has dropped fewer than [`DROP_CACHE_RECHECK`] packets since the lookup that
/// filled it. Hits dropped on the slot are kept in it (`pending`) and added to the entry's
/// count at that re-check, when the slot is taken by another address, or when the lookup finds
/// the entry changed; userspace adds the pending hits of every slot to what it shows.
pub const MAP_DROP_CACHE_V4: &str = "DROP_CACHE_V4";
/// Slots of [`MAP_DROP_CACHE_V4`] per CPU (24 KiB each): blocked hosts sending at once to one
/// CPU. Direct-mapped ([`drop_cache_slot`]); two addresses in one slot take turns through the
/// full lookup, the cost without the cache.
pub const DROP_CACHE_SLOTS: u32 = 1024;
/// Drops a slot makes before the next packet of its address is looked up again (and the hits
/// kept in the slot are added to the entry). It bounds what a change that bypasses the
/// generation word (a raw map write by bpftool) can cost: at most this many more drops per
/// CPU, and the agent's once-a-minute sweep advances the generation anyway. 64 makes the
/// re-check about 1 ns a drop.
pub const DROP_CACHE_RECHECK: u32 = 64;

/// The slot of [`MAP_DROP_CACHE_V4`] that caches `addr`: Fibonacci hashing of the address, top
/// 10 bits. Not keyed: an outsider who makes addresses collide only sends them through the
/// full lookup, and only blocked addresses are ever cached.
#[inline(always)]
pub const fn drop_cache_slot(addr: [u8; 4]) -> u32 {
    u32::from_be_bytes(addr).wrapping_mul(0x9e37_79b1) >> (32 - DROP_CACHE_SLOTS.trailing_zeros())
}

/// The verdict generation: `Array<u64>` of one word, mmap-able, which the drop cache
/// ([`MAP_DROP_CACHE_V4`]) is valid for. Every writer that changes or removes an entry of
/// `BLOCKED_V4`, or changes `ALLOWED_CIDR_V4`, through `Maps` advances it *after* the change, to
/// a value it never held (at least [`VERDICT_GEN_STEP`] on; `enforce/maps/drop_cache.rs` says
/// how): a slot filled by a lookup before the change carries an older generation and no
/// longer drops. (An insert of
/// an address not yet there needs no step: no slot can hold it. A CIDR block needs none either:
/// only exact blocks are cached, and a CIDR never unblocks what an exact entry blocks.)
///
/// The kernel reads the word *before* its lookup, and stamps the slot with what it read.
/// Bit 0 ([`VERDICT_GEN_OFF`]) set turns the cache off: no slot is written or trusted (for
/// the bench's cold-path row, and a way out if the cache is ever suspected).
pub const MAP_VERDICT_GEN: &str = "VERDICT_GEN";
/// [`MAP_VERDICT_GEN`]'s off bit.
pub const VERDICT_GEN_OFF: u64 = 1;
/// The least one change adds to [`MAP_VERDICT_GEN`]: the off bit is left alone.
pub const VERDICT_GEN_STEP: u64 = 2;

/// The domain front filter: an `Array` of one value, [`FRONT_NAMES_SLOTS`] words, mmap-able,
/// kept like [`MAP_FRONT_V4`] (same invariant, same writers, same ready word semantics) over the
/// keys of `BLOCKED_DOMAINS`. Bit [`front_name_bit`] of a domain's hash is set when a block on
/// that domain may exist, so the XDP program skips the blocklist lookup of every domain of a
/// question whose bit is clear: one array read instead of a hash-map lookup per label (a helper
/// call each), which is most of what a DNS response pays for the domain verdict.
///
/// A one-hash bitmap (not a Bloom filter of several hashes): one read per label is the point.
/// With [`FRONT_NAMES_WORDS`] words (2^21 bits, 256 KiB) a name no entry covers finds its bit
/// set with probability about `entries / 2^21` per label: 0.5% at 10,000 blocked domains, 12% at
/// the default capacity full (262,144); a set bit only costs the lookup it would have paid.
pub const MAP_FRONT_NAMES: &str = "FRONT_NAMES";
/// Words of domain filter bits (2^21 bits).
pub const FRONT_NAMES_WORDS: u32 = 1 << 15;
/// Index of the domain filter's ready word, right after its bits.
pub const FRONT_NAMES_READY: u32 = FRONT_NAMES_WORDS;
/// Entries of [`MAP_FRONT_NAMES`]: the filter words and the ready word.
pub const FRONT_NAMES_SLOTS: u32 = FRONT_NAMES_WORDS + 1;

/// The filter bit of a domain-name hash ([`domain_hash`]): its top 21 bits. FNV-1a's
/// multiplication carries every byte's influence upward, so the top bits are its best mixed.
#[inline(always)]
pub const fn front_name_bit(hash: u64) -> u32 {
    (hash >> (64 - 21)) as u32
}

const _: () = assert!(
    FRONT_NAMES_WORDS << 6 == 1 << 21,
    "front_name_bit takes 21 bits"
);

/// Default ring-buffer size in bytes (must be a power of two and a multiple of the page size).
pub const RING_BUF_BYTES: u32 = 8 << 20;

/// Queries that left and wait for their reply: `LruHashMap<QueryKey, QuerySeen>`, written by
/// the TC egress program, read (and, for UDP, emptied) by XDP.
pub const MAP_QUERIES: &str = "QUERIES";
/// Pinned maps whose contents may be thrown away: a pin under one of these names with another
/// layout (an older flux-agent's, after an upgrade) is replaced by `run` instead of refused.
/// - `QUERIES` holds at most [`QUERY_WAIT_NS`](crate::QUERY_WAIT_NS) of queries in flight,
///   whose replies then arrive unsolicited (marked, never scored); its key changed layout once
///   already (40 bytes to 16).
/// - The front filters ([`MAP_FRONT_V4`], [`MAP_FRONT_NAMES`]) are derived from the blocklists:
///   a new one starts not ready (every lookup paid) and the agent fills it at open. They went
///   from one entry a word to one value once.
///
/// Blocklists, counters and the rest are never replaced.
pub const REPLACEABLE_MAPS: [&str; 3] = [MAP_QUERIES, MAP_FRONT_V4, MAP_FRONT_NAMES];
/// Queries waiting at most. Least recently used first out: a flood of queries can only push
/// out the oldest, whose replies are then unsolicited (never scored, never blocked: the safe
/// side). 65,536 covers 2,000 queries a second for the whole wait.
pub const MAX_QUERIES: u32 = 1 << 16;

/// The link-layer address of each interface the XDP program is attached to:
/// `HashMap<u32 ifindex, u64>` with the MAC in the low 48 bits ([`mac_word`]). Written by
/// userspace at every attach; XDP reads it to tell a frame addressed to this host from one
/// addressed to another (a reply in a frame not for this host is never trusted).
pub const MAP_HOST_MACS: &str = "HOST_MACS";
/// Interfaces one agent attaches to at most (each a map entry of 12 bytes).
pub const MAX_HOST_MACS: u32 = 256;

/// The direct-mapped front of [`MAP_HOST_MACS`]: `Array<HostMacSlot>` of [`HOST_MAC_SLOT_COUNT`]
/// slots, an interface in slot [`host_mac_slot`] of its ifindex. XDP asks for the receiving
/// interface's MAC on every DNS response, and a hash-map lookup is a helper call (the call,
/// the key's hash, and the return through the kernel's return thunk): 35-50 ns of a 210-byte
/// response's ~200 on the bench host, where a slot is one inlined array read. Not pinned, like
/// the hash map: both belong to the loaded program and every attach fills them.
///
/// The invariant userspace keeps (`flux-agent/src/kernel/loader/attach.rs`,
/// `record_host_mac`): every interface in [`MAP_HOST_MACS`] is in its slot, or its slot holds
/// another interface. Entries are only added, for the loaded program's life, and a slot is
/// written before its hash-map entry is needed: so the kernel reads the slot's own interface
/// as the answer, an empty slot (ifindex 0, never an interface's) as "no MAC recorded", and
/// only for a slot another interface holds does it look the hash map up.
pub const MAP_HOST_MAC_SLOTS: &str = "HOST_MAC_SLOTS";
/// Slots of [`MAP_HOST_MAC_SLOTS`]: as many as the interfaces one agent attaches to, so that
/// consecutive ifindexes (the usual case) never share one.
pub const HOST_MAC_SLOT_COUNT: u32 = MAX_HOST_MACS;

/// The slot of [`MAP_HOST_MAC_SLOTS`] that holds interface `ifindex`.
#[inline(always)]
pub const fn host_mac_slot(ifindex: u32) -> u32 {
    ifindex % HOST_MAC_SLOT_COUNT
}

/// A MAC address as the [`MAP_HOST_MACS`] value: the six octets in order, in the low 48 bits
/// of a big-endian word (so `00:11:22:33:44:55` is `0x0011_2233_4455`).
#[inline(always)]
pub const fn mac_word(mac: [u8; 6]) -> u64 {
    ((mac[0] as u64) << 40)
        | ((mac[1] as u64) << 32)
        | ((mac[2] as u64) << 24)
        | ((mac[3] as u64) << 16)
        | ((mac[4] as u64) << 8)
        | (mac[5] as u64)
}

/// Whether a destination MAC is a group address (broadcast or multicast): the I/G bit, the
/// least significant bit of the first octet.
#[inline(always)]
pub const fn is_group_mac(first_octet: u8) -> bool {
    first_octet & 1 != 0
}

/// The blocklist maps whose capacity is a load-time option (`run --max-blocked-ips`,
/// `--max-blocked-cidrs`, `--max-blocked-domains`): a feed may need more than the default. Their
/// pins are checked by type, key and value size and by map id, not by capacity.
pub const RESIZABLE_MAPS: [&str; 5] = [
    MAP_BLOCKED_V4,
    MAP_BLOCKED_V6,
    MAP_BLOCKED_CIDR_V4,
    MAP_BLOCKED_CIDR_V6,
    MAP_BLOCKED_DOMAINS,
];

/// The largest capacity a resizable blocklist map may be given: 64 Mi entries. The maps are not
/// preallocated, so capacity costs nothing until used, but a used entry costs about 100 bytes of
/// kernel memory: this bound keeps one map under ~6.4 GiB, a mistake rather than a choice.
pub const MAX_MAP_CAPACITY: u32 = 1 << 26;

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
