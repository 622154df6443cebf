//! Load-time configuration and the object's symbol names: what userspace writes into the
//! program before loading it, and the names it looks programs and globals up by.

/// Maximum number of DNS source ports that can be configured at load time.
pub const MAX_DNS_PORTS: usize = 8;

/// Name of the map/global symbols in the eBPF object; userspace looks them up by these names.
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const GLOBAL_CONFIG: &str = "FLUX_CONFIG";
/// The XDP program that captures DNS responses.
pub const PROG_XDP: &str = "flux_xdp";
/// An XDP program that only returns XDP_PASS: the baseline for benchmarks.
pub const PROG_XDP_NOOP: &str = "flux_xdp_noop";
/// An XDP program that checks an IPv4 packet's addresses against the front filter and nothing
/// else: the benchmarks' floor for a blocklist check (`xdp-bench`), attached only by
/// `veth-bench` (its floor case).
pub const PROG_XDP_FLOOR: &str = "flux_xdp_floor";
/// An XDP program that writes one timestamped ring-buffer record of no message and nothing
/// else: the benchmarks' floor for a captured response (`xdp-bench`), never attached.
pub const PROG_XDP_FLOOR_RECORD: &str = "flux_xdp_floor_record";
/// An XDP program that only returns XDP_TX: the benchmarks' in-kernel traffic generator
/// (BPF_PROG_TEST_RUN with live frames), never attached.
pub const PROG_XDP_TX: &str = "flux_xdp_tx";
/// An XDP program that sends every frame back out of the interface it came in by
/// (`bpf_redirect`): the benchmarks' relay that turns a generator's socket buffers into
/// `xdp_frame`s for the other end of a veth pair (`veth-bench --generator bounce`), attached
/// only there.
pub const PROG_XDP_BOUNCE: &str = "flux_xdp_bounce";
/// The TC egress program (`--egress`) that drops packets leaving for blocked addresses.
pub const PROG_EGRESS: &str = "flux_egress";

/// [`Config::domain_action`]: answer a blocked name with NXDOMAIN (the default).
pub const DOMAIN_ACTION_NXDOMAIN: u32 = 0;
/// [`Config::domain_action`]: drop the response for a blocked name.
pub const DOMAIN_ACTION_DROP: u32 = 1;

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
    /// What to do with replies: `MATCH_*`. With matching on, the TC egress program records
    /// every DNS query that leaves and XDP looks each reply up ([`crate::QueryKey`]).
    pub match_queries: u32,
    /// Non-zero: the TC egress program also drops packets leaving for blocked addresses
    /// (`--egress`). Without it the program only records queries.
    pub egress_block: u32,
}

/// [`Config::match_queries`]: every reply is taken as it comes (no egress program attached).
pub const MATCH_OFF: u32 = 0;
/// [`Config::match_queries`]: a reply no recorded query matches is marked unsolicited.
pub const MATCH_MARK: u32 = 1;
/// [`Config::match_queries`]: ...and dropped (`--drop-unsolicited`).
pub const MATCH_DROP: u32 = 2;

impl Config {
    /// Port 53 only.
    pub const DEFAULT: Config = Config {
        dns_ports: [53, 0, 0, 0, 0, 0, 0, 0],
        dns_port_count: 1,
        domain_action: DOMAIN_ACTION_NXDOMAIN,
        monitor: 0,
        match_queries: MATCH_OFF,
        egress_block: 0,
    };

    /// Whether `port` is one of the configured DNS ports. The loop has a constant bound.
    #[inline(always)]
    pub fn is_dns_port(&self, port: u16) -> bool {
        dns_port_listed(self.dns_port_count, port, |i| {
            self.dns_ports.get(i).copied()
        })
    }
}

/// Whether `port` is among the first `count` configured ports, `port_at(i)` reading the `i`th
/// ([`Config::dns_ports`] and [`Config::dns_port_count`]): [`Config::is_dns_port`] on fields
/// read one by one, as the XDP program reads them (a copy of the whole `Config` costs a load and
/// a stack spill per field on every packet). The loop has a constant bound and stops at `count`:
/// in the XDP program `count` and each port are constants to the verifier (the config map is
/// frozen), so it keeps one compare per configured port and removes the rest. A branch-free
/// form (every slot compared and masked) cannot be pruned, and cost a third of a non-DNS
/// packet's time in the program.
#[inline(always)]
pub fn dns_port_listed(count: u32, port: u16, port_at: impl Fn(usize) -> Option<u16>) -> bool {
    let mut i = 0;
    while i < MAX_DNS_PORTS && (i as u32) < count {
        if port_at(i) == Some(port) {
            return true;
        }
        i += 1;
    }
    false
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], integers and an integer array, no padding (tested in lib.rs).
unsafe impl aya::Pod for Config {}
