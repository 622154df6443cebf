//! The kernel's per-CPU counters: one table, from which the enum, its count, the list of all
//! counters and their stable names are derived. Add a counter here and nothing else: the kernel
//! indexes `COUNTERS` by it, `flux-agent stats` and the docs read its name, `/metrics` its name
//! and doc comment (rows carry only `///` comments, which the macro turns into [`Counter::help`]).

/// Declares [`Counter`] from one table of `Variant = "snake_case_name"` rows.
macro_rules! counter_table {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// Indices into the per-CPU `COUNTERS` array. Every drop and error path has one.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Counter {
            /// How many counters there are (the `COUNTERS` array's length).
            pub const COUNT: usize = [$($name),*].len();
            /// Every counter, in index order.
            pub const ALL: [Counter; Counter::COUNT] = [$(Counter::$variant),*];

            /// Stable snake_case name, used in `stats --json` and the docs.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)*
                }
            }

            /// The row's doc comment, one line per source line with a leading space each (the
            /// `HELP` text of `/metrics`; trim and join the lines to print it).
            pub const fn help(self) -> &'static str {
                match self {
                    $(Counter::$variant => concat!($($doc),*),)*
                }
            }
        }
    };
}

counter_table! {
    /// Every packet the XDP program ran on.
    PacketsSeen = "packets_seen",
    /// DNS responses written to the ring buffer.
    ResponsesCaptured = "responses_captured",
    /// Responses captured, but longer than the capture buffer or cut by IP fragmentation.
    TruncatedCaptures = "truncated_captures",
    /// Responses lost because the ring buffer was full.
    RingBufFull = "ringbuf_full",
    /// Headers that claimed more than the packet holds, or impossible header fields.
    Malformed = "malformed",
    /// Non-first IP fragments, passed untouched.
    NonFirstFragments = "non_first_fragments",
    /// DNS-over-TCP segments that do not hold one whole message (not captured).
    TcpNotWholeMessage = "tcp_not_whole_message",
    /// Packets from a DNS port whose payload is not a plausible DNS response.
    NotDnsResponse = "not_dns_response",
    /// IPv6 packets whose extension-header chain was longer than the walk allows.
    Ipv6ExtTooDeep = "ipv6_ext_too_deep",
    /// The packet copy into a reserved record failed; the record was discarded.
    CopyFailed = "copy_failed",
    /// Dropped: the source address is blocked (exact entry or CIDR) and not allowed.
    DropBlockedSrc = "drop_blocked_src",
    /// Dropped: the destination address is blocked and not allowed.
    DropBlockedDst = "drop_blocked_dst",
    /// A blocked address or name matched, but an allowed CIDR or domain covers it: passed.
    AllowedOverBlock = "allowed_over_block",
    /// A blocked address whose entry had expired: passed (userspace sweeps the entry).
    ExpiredBlock = "expired_block",
    /// A DNS response for a blocked name, rewritten in place to NXDOMAIN and passed.
    SinkholedNxdomain = "sinkholed_nxdomain",
    /// A DNS response for a blocked name, dropped (drop action, TCP, or a fragmented datagram
    /// that cannot be cut).
    DropBlockedName = "drop_blocked_name",
    /// A response whose question name could not be walked (compression pointer, bad label,
    /// cut short): not checked against the domain blocklist, passed. Only counted while the
    /// name is needed (a domain is blocked, or replies are matched to queries): otherwise the
    /// kernel does not walk names at all.
    QnameUnchecked = "qname_unchecked",
    /// Monitor mode: a packet that would have been dropped or answered NXDOMAIN, passed.
    MonitorWouldDrop = "monitor_would_drop",
    /// TC egress (`--egress`): a packet leaving the host for a blocked address, dropped.
    DropEgressBlocked = "drop_egress_blocked",
    /// TC egress: a DNS query leaving the host, recorded for its reply to be matched.
    QueriesRecorded = "queries_recorded",
    /// A DNS reply no recorded query matches: marked unsolicited (never scored).
    UnsolicitedReplies = "unsolicited_replies",
    /// An unsolicited reply dropped (`--drop-unsolicited`).
    DropUnsolicited = "drop_unsolicited",
    /// Frames with more VLAN tags than the walk captures (`MAX_VLAN_TAGS`): passed, not
    /// captured (their addresses still go through the blocklists, which may drop them).
    VlanTooDeep = "vlan_too_deep",
    /// A DNS reply in a frame not addressed to this host: a broadcast or multicast destination
    /// MAC, or a unicast MAC other than the interface's own. Marked unsolicited (never scored)
    /// whatever query it may match; dropped with `--drop-unsolicited`.
    NotForHost = "not_for_host",
}
