//! The guard: addresses that must never be blocked (special ranges, this host's own addresses,
//! its DNS resolvers and default gateways), whatever the scorer says. The enforcer
//! (`crate::enforce::policy`) asks it before every address block.
//!
//! Reads the host's interfaces (if-addrs), routes (`crate::kernel::netlink_route`) and
//! `/etc/resolv.conf`; writes nothing.

use std::{collections::HashSet, net::IpAddr, path::Path};

use crate::kernel::netlink_route;

/// Addresses that must never be blocked, and why.
#[derive(Default)]
pub struct Guard {
    own: HashSet<IpAddr>,
    resolvers: HashSet<IpAddr>,
    configured_resolvers: Vec<IpAddr>,
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
        self.resolvers
            .extend(resolv_conf_servers("/etc/resolv.conf"));
        self.resolvers
            .extend(self.configured_resolvers.iter().copied());
    }

    /// A server seen answering DNS: a resolver of this host.
    pub fn note_resolver(&mut self, ip: IpAddr) {
        self.resolvers.insert(ip);
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
            } else if self.resolvers.contains(ip) {
                Some("a DNS resolver of this host")
            } else if self.gateways.contains(ip) {
                Some("a default gateway")
            } else {
                None
            }
        })
    }
}

/// Addresses of every local interface.
fn own_addresses() -> HashSet<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.iter().map(|i| i.ip()).collect(),
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
}
