//! The guard: addresses that must never be blocked (special ranges, this host's own addresses,
//! its DNS resolvers and default gateways), whatever the scorer, an operator or a feed says. The
//! enforcer (`crate::enforce::policy`) asks it before every address block; the CLI's `blocklist
//! add` (and the feed importer, when it exists) calls [`Guard::check`] before every write, and
//! only `--force` skips it.
//!
//! "Resolvers" are the configured ones (`/etc/resolv.conf`, `--resolver`), re-read with the
//! rest, and the servers that answered a query this host really sent (the pipeline only calls
//! [`Guard::note_resolver`] for solicited replies), of which the [`MAX_LEARNT_RESOLVERS`] most
//! recently seen are kept: an attacker cannot grow the set, and one who could answer a real
//! query only moves the oldest learnt entry out. The running agent hands its set
//! ([`Guard::resolvers`]) to `blocklist add` over the control socket, so the operator's blocks
//! are guarded by the same resolvers as the scorer's.
//!
//! Reads the host's interfaces (if-addrs), routes (`crate::kernel::netlink_route`) and
//! `/etc/resolv.conf`; writes nothing.

use std::{
    collections::{HashSet, VecDeque},
    net::IpAddr,
    path::Path,
};

use ipnet::IpNet;

use crate::{enforce::maps::Target, kernel::netlink_route};

/// How many servers seen answering matched queries are remembered as resolvers (least recently
/// seen evicted first). A host talks to a handful of resolvers; 64 leaves room for a gateway's
/// forwarders while a linear scan stays cheap.
pub const MAX_LEARNT_RESOLVERS: usize = 64;

/// Ranges no block may touch, as CIDRs (a CIDR block overlapping one is refused).
const SPECIAL_RANGES: &[(&str, &str)] = &[
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("::ffff:127.0.0.0/104", "loopback"),
    ("0.0.0.0/32", "unspecified"),
    ("::/128", "unspecified"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
    ("224.0.0.0/4", "multicast or broadcast"),
    ("255.255.255.255/32", "multicast or broadcast"),
    ("ff00::/8", "multicast"),
];

/// Why a target must not be blocked: one line that names the rule and says `--force` overrides.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refusing to block {target}: {rule} (--force overrides)")]
pub struct Refusal {
    pub target: String,
    pub rule: String,
}

/// The servers seen answering matched queries, most recent first, at most
/// [`MAX_LEARNT_RESOLVERS`]. Hand-written rather than an LRU crate: 64 addresses in a
/// `VecDeque` scanned linearly is all that is needed.
#[derive(Default)]
struct Learnt(VecDeque<IpAddr>);

impl Learnt {
    fn note(&mut self, ip: IpAddr) {
        if let Some(i) = self.0.iter().position(|a| *a == ip) {
            if i == 0 {
                return;
            }
            self.0.remove(i);
        }
        self.0.push_front(ip);
        self.0.truncate(MAX_LEARNT_RESOLVERS);
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

/// Addresses that must never be blocked, and why.
#[derive(Default)]
pub struct Guard {
    own: HashSet<IpAddr>,
    /// `/etc/resolv.conf` and `--resolver`.
    resolvers: HashSet<IpAddr>,
    configured_resolvers: Vec<IpAddr>,
    learnt: Learnt,
    gateways: HashSet<IpAddr>,
}

impl Guard {
    pub fn new(configured_resolvers: Vec<IpAddr>) -> Self {
        let mut g = Self {
            configured_resolvers,
            ..Self::default()
        };
        g.refresh();
        g
    }

    /// Re-reads the host's addresses, resolvers and gateways (they change with DHCP, VPNs).
    pub fn refresh(&mut self) {
        self.own = own_addresses();
        self.gateways = default_gateways();
        self.resolvers = resolv_conf_servers("/etc/resolv.conf")
            .into_iter()
            .collect();
        self.resolvers
            .extend(self.configured_resolvers.iter().copied());
    }

    /// A server that answered a query this host sent: a resolver of this host, remembered among
    /// the [`MAX_LEARNT_RESOLVERS`] most recently seen. Never call it for an unsolicited reply.
    pub fn note_resolver(&mut self, ip: IpAddr) {
        self.learnt.note(ip);
    }

    /// Every resolver this guard protects: configured, from `/etc/resolv.conf`, and learnt
    /// (most recently seen first), without duplicates.
    pub fn resolvers(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self.configured_resolvers.clone();
        let mut from_conf: Vec<IpAddr> = self.resolvers.iter().copied().collect();
        from_conf.sort();
        out.extend(from_conf);
        out.extend(self.learnt.0.iter().copied());
        let mut seen = HashSet::new();
        out.retain(|a| seen.insert(*a));
        out
    }

    fn is_resolver(&self, ip: &IpAddr) -> bool {
        self.resolvers.contains(ip) || self.learnt.contains(ip)
    }

    /// Whether a block on `t` is allowed: the scorer's, the CLI's and a feed's blocks all ask
    /// here. A domain is always allowed (the public-suffix rule is `maps::normalize_domain`'s).
    pub fn check(&self, t: &Target) -> Result<(), Refusal> {
        let rule = match t {
            Target::Domain(_) => None,
            Target::Ip(ip) => self.refuse(ip).map(str::to_owned),
            Target::Cidr(ip, len) => match IpNet::new(*ip, *len) {
                Ok(net) => self.refuse_net(&net),
                Err(_) => Some("not a valid network".to_owned()),
            },
        };
        match rule {
            None => Ok(()),
            Some(rule) => Err(Refusal {
                target: t.to_string(),
                rule,
            }),
        }
    }

    /// Why a network must not be blocked: it is everything, overlaps a special range, or holds
    /// an address of this host, a resolver or a gateway.
    fn refuse_net(&self, net: &IpNet) -> Option<String> {
        if net.prefix_len() == 0 {
            return Some("it covers every address".into());
        }
        for (range, what) in SPECIAL_RANGES {
            let Ok(range) = range.parse::<IpNet>() else {
                continue;
            };
            if range.contains(&net.network()) || net.contains(&range.network()) {
                return Some(format!("it overlaps {range} ({what})"));
            }
        }
        let covered = |what: &str, mut set: Box<dyn Iterator<Item = &IpAddr> + '_>| {
            set.find(|a| net.contains(*a))
                .map(|a| format!("it covers {a}, {what}"))
        };
        covered("one of this host's addresses", Box::new(self.own.iter()))
            .or_else(|| {
                let all = self.resolvers.iter().chain(self.learnt.0.iter());
                covered("a DNS resolver of this host", Box::new(all))
            })
            .or_else(|| covered("a default gateway", Box::new(self.gateways.iter())))
    }

    /// Why `ip` must not be blocked, or `None`.
    pub fn refuse(&self, ip: &IpAddr) -> Option<&'static str> {
        let special = match ip {
            IpAddr::V4(a) => {
                if a.is_loopback() {
                    Some("loopback")
                } else if a.is_link_local() {
                    Some("link-local")
                } else if a.is_multicast() || a.is_broadcast() {
                    Some("multicast or broadcast")
                } else if a.is_unspecified() {
                    Some("unspecified")
                } else {
                    None
                }
            }
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    return self.refuse(&IpAddr::V4(v4));
                }
                if a.is_loopback() {
                    Some("loopback")
                } else if a.is_unicast_link_local() {
                    Some("link-local")
                } else if a.is_multicast() {
                    Some("multicast")
                } else if a.is_unspecified() {
                    Some("unspecified")
                } else {
                    None
                }
            }
        };
        special.or_else(|| {
            if self.own.contains(ip) {
                Some("one of this host's addresses")
            } else if self.is_resolver(ip) {
                Some("a DNS resolver of this host")
            } else if self.gateways.contains(ip) {
                Some("a default gateway")
            } else {
                None
            }
        })
    }
}

/// Addresses of every local interface, and the broadcast addresses of their IPv4 subnets
/// (blocking one would cut this host off its own LAN's broadcasts).
fn own_addresses() -> HashSet<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs
            .iter()
            .flat_map(|i| {
                let bcast = match &i.addr {
                    if_addrs::IfAddr::V4(a) => a.broadcast.map(IpAddr::V4),
                    if_addrs::IfAddr::V6(_) => None,
                };
                std::iter::once(i.ip()).chain(bcast)
            })
            .collect(),
        Err(e) => {
            log::warn!("cannot list this host's addresses: {e}");
            HashSet::new()
        }
    }
}

/// `nameserver` lines of a resolv.conf.
pub fn resolv_conf_servers(path: impl AsRef<Path>) -> Vec<IpAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| {
            let addr = rest.split_whitespace().next()?;
            addr.split('%').next()?.parse().ok()
        })
        .collect()
}

/// Next hops of the default routes, of every routing table and both families.
fn default_gateways() -> HashSet<IpAddr> {
    match netlink_route::default_routes() {
        Ok(routes) => routes.into_iter().flat_map(|r| r.gateways).collect(),
        Err(e) => {
            log::warn!("cannot read the routing table: {e}");
            HashSet::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_refuses_special_and_local_addresses() {
        let mut g = Guard::new(vec!["192.0.2.53".parse().unwrap()]);
        g.note_resolver("198.51.100.53".parse().unwrap());
        for (ip, want) in [
            ("127.0.0.1", Some("loopback")),
            ("::1", Some("loopback")),
            ("169.254.1.1", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("224.0.0.251", Some("multicast or broadcast")),
            ("255.255.255.255", Some("multicast or broadcast")),
            ("ff02::1", Some("multicast")),
            ("0.0.0.0", Some("unspecified")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("192.0.2.53", Some("a DNS resolver of this host")),
            ("198.51.100.53", Some("a DNS resolver of this host")),
            ("203.0.113.7", None),
        ] {
            assert_eq!(g.refuse(&ip.parse().unwrap()), want, "{ip}");
        }
        g.own.insert("203.0.113.9".parse().unwrap());
        assert_eq!(
            g.refuse(&"203.0.113.9".parse().unwrap()),
            Some("one of this host's addresses")
        );
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000u32 + i))
    }

    #[test]
    fn learnt_resolvers_are_bounded_and_evict_the_least_recently_seen() {
        let mut g = Guard::default();
        let keep: IpAddr = "198.51.100.53".parse().unwrap();
        g.note_resolver(keep);
        // A flood of answering servers: the set never grows past the bound, and a resolver
        // seen again in the meantime stays.
        for i in 0..100_000u32 {
            g.note_resolver(v4(i));
            if i % 32 == 0 {
                g.note_resolver(keep);
            }
            assert!(g.learnt.0.len() <= MAX_LEARNT_RESOLVERS);
        }
        assert_eq!(g.learnt.0.len(), MAX_LEARNT_RESOLVERS);
        assert!(g.refuse(&keep).is_some(), "recently seen resolver evicted");
        let newest = v4(99_999);
        assert_eq!(g.refuse(&newest), Some("a DNS resolver of this host"));
        let oldest = v4(0);
        assert_eq!(g.refuse(&oldest), None, "the oldest learnt one is evicted");
        // Seeing one again does not duplicate it.
        g.note_resolver(newest);
        g.note_resolver(newest);
        assert_eq!(g.learnt.0.iter().filter(|a| **a == newest).count(), 1);
    }

    #[test]
    fn check_refuses_what_the_scorer_refuses_and_wide_cidrs() {
        let mut g = Guard::default();
        g.own.insert("10.77.0.1".parse().unwrap());
        g.resolvers.insert("192.0.2.53".parse().unwrap());
        g.gateways.insert("10.9.0.1".parse().unwrap());
        g.note_resolver("2001:db8::53".parse().unwrap());
        let refused = |s: &str| {
            let t = if s.contains('/') {
                Target::cidr(s).unwrap()
            } else {
                Target::ip(s).unwrap()
            };
            g.check(&t).err().map(|r| r.to_string())
        };
        for (target, rule) in [
            ("0.0.0.0/0", "every address"),
            ("::/0", "every address"),
            ("0.0.0.0/1", "loopback"),
            ("127.0.0.0/8", "loopback"),
            ("127.0.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("128.0.0.0/1", "link-local"),
            ("::ffff:0.0.0.0/96", "loopback"),
            ("10.77.0.1", "this host's addresses"),
            (
                "10.77.0.0/24",
                "covers 10.77.0.1, one of this host's addresses",
            ),
            ("192.0.2.53", "resolver"),
            ("192.0.2.0/24", "covers 192.0.2.53, a DNS resolver"),
            ("2001:db8::/32", "covers 2001:db8::53, a DNS resolver"),
            ("10.9.0.1", "gateway"),
            ("10.8.0.0/15", "covers 10.9.0.1, a default gateway"),
        ] {
            let why = refused(target).unwrap_or_else(|| panic!("{target} accepted"));
            assert!(why.contains(rule), "{target}: {why}");
            assert!(
                why.starts_with(&format!("refusing to block {target}: ")),
                "{why}"
            );
            assert!(why.ends_with("(--force overrides)"), "{why}");
        }
        for ok in [
            "203.0.113.7",
            "203.0.113.0/24",
            "10.78.0.0/16",
            "2001:db9::/32",
        ] {
            assert_eq!(refused(ok), None, "{ok}");
        }
        assert!(g.check(&Target::domain("flux.example").unwrap()).is_ok());
    }

    #[test]
    fn resolv_conf_parses() {
        let dir = std::env::temp_dir().join(format!("flux-resolv-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# x\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nsearch example\n",
        )
        .unwrap();
        assert_eq!(
            resolv_conf_servers(&dir),
            vec![
                "10.0.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn resolvers_lists_configured_and_learnt_once() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut g = Guard::new(vec![ip("192.0.2.53")]);
        g.note_resolver(ip("198.51.100.53"));
        g.note_resolver(ip("192.0.2.53"));
        let all = g.resolvers();
        assert_eq!(all[0], ip("192.0.2.53"));
        assert!(all.contains(&ip("198.51.100.53")));
        assert_eq!(all.iter().filter(|a| **a == ip("192.0.2.53")).count(), 1);
    }
}
