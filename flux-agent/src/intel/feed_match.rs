//! The loaded feeds as a lookup: which feed lists an address (exactly, or in one of its
//! networks) or a domain (the name or a parent). Built from the state database's feed entries
//! (`report` ones too: a report-only feed exists to be matched). Addresses are one hash set;
//! networks one hash set per prefix length present (a lookup masks the address once per length,
//! at most 33 or 129, in practice a handful); domains a hash set walked from the name to its
//! parents, so a feed's `evil.example` matches `a.b.evil.example`.
//!
//! Touches nothing: pure data, filled by the caller.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::SystemTime,
};

use flux_state::{Kind, Source, StateError, Store, Target};
use ipnet::IpNet;

/// A hit: which feed, and on what it listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedHit {
    pub feed: String,
    /// The listed indicator (`evil.example`, `192.0.2.0/24`, `192.0.2.7`).
    pub indicator: String,
}

/// The feeds' indicators, each naming its feed (the first by name when several list it).
#[derive(Clone, Debug, Default)]
pub struct FeedIndex {
    addrs: HashMap<IpAddr, String>,
    /// Prefix length → networks of that length.
    nets: HashMap<u8, HashMap<IpNet, String>>,
    /// Prefix lengths present, longest first (the most specific network wins).
    lens: BTreeSet<std::cmp::Reverse<u8>>,
    domains: HashMap<String, String>,
}

impl FeedIndex {
    /// Every live feed entry of the database.
    pub fn load(store: &Store, now: SystemTime) -> Result<Self, StateError> {
        let mut ix = Self::default();
        for e in store.effective_entries(Some(Kind::Block), now)? {
            if let Some(Source::Feed(name)) = e.sources.iter().find(|s| matches!(s, Source::Feed(_))) {
                ix.insert(&e.target, name);
            }
        }
        Ok(ix)
    }

    pub fn insert(&mut self, t: &Target, feed: &str) {
        match t {
            Target::Ip(ip) => {
                self.addrs.entry(*ip).or_insert_with(|| feed.to_owned());
            }
            Target::Cidr(ip, len) => {
                if let Ok(net) = IpNet::new(*ip, *len) {
                    self.lens.insert(std::cmp::Reverse(*len));
                    self.nets
                        .entry(*len)
                        .or_default()
                        .entry(net)
                        .or_insert_with(|| feed.to_owned());
                }
            }
            Target::Domain(d) => {
                self.domains.entry(d.clone()).or_insert_with(|| feed.to_owned());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.nets.is_empty() && self.domains.is_empty()
    }

    pub fn len(&self) -> usize {
        self.addrs.len() + self.nets.values().map(HashMap::len).sum::<usize>() + self.domains.len()
    }

    /// The feed listing `ip`, exactly or in a network (the longest prefix first).
    pub fn address(&self, ip: IpAddr) -> Option<FeedHit> {
        if let Some(f) = self.addrs.get(&ip) {
            return Some(FeedHit {
                feed: f.clone(),
                indicator: ip.to_string(),
            });
        }
        for std::cmp::Reverse(len) in &self.lens {
            let Ok(net) = IpNet::new(ip, *len).map(|n| n.trunc()) else {
                continue; // a v6 length over 32 asked for a v4 address
            };
            if let Some(f) = self.nets.get(len).and_then(|m| m.get(&net)) {
                return Some(FeedHit {
                    feed: f.clone(),
                    indicator: net.to_string(),
                });
            }
        }
        None
    }

    /// The feed listing `name` or one of its parents.
    pub fn domain(&self, name: &str) -> Option<FeedHit> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = name.as_str();
        loop {
            if let Some(f) = self.domains.get(rest) {
                return Some(FeedHit {
                    feed: f.clone(),
                    indicator: rest.to_owned(),
                });
            }
            rest = rest.split_once('.')?.1;
        }
    }

    /// The first hit for a resolved name: its CNAME chain (the name first), then its addresses.
    pub fn resolved<'a>(
        &self,
        chain: impl IntoIterator<Item = &'a str>,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Option<FeedHit> {
        chain
            .into_iter()
            .find_map(|n| self.domain(n))
            .or_else(|| addrs.into_iter().find_map(|a| self.address(a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ix() -> FeedIndex {
        let mut ix = FeedIndex::default();
        ix.insert(&Target::domain("evil.example").unwrap(), "f1");
        ix.insert(&Target::Ip("192.0.2.7".parse().unwrap()), "f2");
        ix.insert(&Target::cidr("203.0.113.0/24").unwrap(), "f3");
        ix.insert(&Target::cidr("203.0.113.128/25").unwrap(), "f4");
        ix.insert(&Target::cidr("2001:db8::/32").unwrap(), "f5");
        ix
    }

    #[test]
    fn addresses_networks_and_parent_domains_match() {
        let ix = ix();
        assert_eq!(ix.len(), 5);
        let hit = |a: &str| ix.address(a.parse().unwrap()).map(|h| (h.feed, h.indicator));
        assert_eq!(hit("192.0.2.7"), Some(("f2".into(), "192.0.2.7".into())));
        assert_eq!(hit("203.0.113.5"), Some(("f3".into(), "203.0.113.0/24".into())));
        assert_eq!(hit("203.0.113.200").unwrap().0, "f4", "the longest prefix wins");
        assert_eq!(hit("2001:db8::99").unwrap().0, "f5");
        assert_eq!(hit("192.0.2.8"), None);
        assert_eq!(ix.domain("A.B.Evil.Example.").unwrap().indicator, "evil.example");
        assert_eq!(ix.domain("notevil.example"), None);
        assert_eq!(ix.domain("example"), None);
    }

    #[test]
    fn a_cname_chain_through_a_feed_domain_is_a_hit() {
        let ix = ix();
        let chain = ["www.innocent.test", "cdn.evil.example"];
        let hit = ix.resolved(chain, ["198.51.100.1".parse().unwrap()]);
        assert_eq!(hit.unwrap().feed, "f1");
        let hit = ix.resolved(["x.test"], ["203.0.113.9".parse().unwrap()]);
        assert_eq!(hit.unwrap().feed, "f3");
        assert!(ix.resolved(["x.test"], []).is_none());
    }
}
