//! The loaded feeds as a lookup: which feed lists an address (exactly, or in one of its
//! networks) or a domain (the name or a parent). Built from the state database's feed entries
//! (`report` ones too: a report-only feed exists to be matched). Addresses are one hash set;
//! networks one hash set per prefix length present (a lookup masks the address once per length,
//! at most 33 or 129, in practice a handful); domains a hash set walked from the name to its
//! parents, so a feed's `evil.example` matches `a.b.evil.example`.
//!
//! [`SharedIndex`] hands a new index from the thread that builds it (the feed refresher, off
//! the capture path) to the pipeline, which swaps it in between two responses
//! ([`Matcher::refresh`]: one atomic load when nothing changed). [`Matcher::check`] is what the
//! pipeline asks per solicited response; a hit is an `intel` event and scorer evidence
//! (`Scorer::note_feed_match`).
//!
//! Touches nothing: data, filled by the caller.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use flux_detect::dns::DnsMessage;
use serde::Serialize;

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
/// Feed names are shared (`Arc<str>`): a million entries of one feed hold one copy of its name.
#[derive(Clone, Debug, Default)]
pub struct FeedIndex {
    addrs: HashMap<IpAddr, Arc<str>>,
    /// Prefix length → networks of that length.
    nets: HashMap<u8, HashMap<IpNet, Arc<str>>>,
    /// Prefix lengths present, longest first (the most specific network wins).
    lens: BTreeSet<std::cmp::Reverse<u8>>,
    domains: HashMap<String, Arc<str>>,
    names: HashMap<String, Arc<str>>,
}

impl FeedIndex {
    /// Every live feed entry of the database.
    pub fn load(store: &Store, now: SystemTime) -> Result<Self, StateError> {
        let mut ix = Self::default();
        for e in store.effective_entries(Some(Kind::Block), now)? {
            if let Some(Source::Feed(name)) =
                e.sources.iter().find(|s| matches!(s, Source::Feed(_)))
            {
                ix.insert(&e.target, name);
            }
        }
        Ok(ix)
    }

    pub fn insert(&mut self, t: &Target, feed: &str) {
        let feed = match self.names.get(feed) {
            Some(n) => n.clone(),
            None => {
                let n: Arc<str> = Arc::from(feed);
                self.names.insert(feed.to_owned(), n.clone());
                n
            }
        };
        match t {
            Target::Ip(ip) => {
                self.addrs.entry(*ip).or_insert(feed);
            }
            Target::Cidr(ip, len) => {
                if let Ok(net) = IpNet::new(*ip, *len) {
                    self.lens.insert(std::cmp::Reverse(*len));
                    self.nets
                        .entry(*len)
                        .or_default()
                        .entry(net)
                        .or_insert(feed);
                }
            }
            Target::Domain(d) => {
                self.domains.entry(d.clone()).or_insert(feed);
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
                feed: f.to_string(),
                indicator: ip.to_string(),
            });
        }
        for std::cmp::Reverse(len) in &self.lens {
            let Ok(net) = IpNet::new(ip, *len).map(|n| n.trunc()) else {
                continue; // a v6 length over 32 asked for a v4 address
            };
            if let Some(f) = self.nets.get(len).and_then(|m| m.get(&net)) {
                return Some(FeedHit {
                    feed: f.to_string(),
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
                    feed: f.to_string(),
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

/// How many (name, feed) pairs the pipeline remembers having reported: a name resolved every
/// few seconds is one `intel` event, not one per response. Past it the memory is cleared (and a
/// name still resolving is reported once more): bounded whatever the traffic.
pub const REPORTED_MEMORY: usize = 4096;

/// A new index from the builder to the pipeline.
#[derive(Clone, Debug, Default)]
pub struct SharedIndex {
    generation: Arc<AtomicU64>,
    index: Arc<Mutex<Arc<FeedIndex>>>,
}

impl SharedIndex {
    /// Hands `ix` to the pipeline (it takes it at its next response).
    pub fn publish(&self, ix: FeedIndex) {
        if let Ok(mut g) = self.index.lock() {
            *g = Arc::new(ix);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// The `intel` event: a response matched a loaded feed.
#[derive(Clone, Debug, Serialize)]
pub struct IntelMatch {
    #[serde(serialize_with = "flux_detect::timestamp::serialize")]
    pub ts: SystemTime,
    /// The question name of the response.
    pub domain: String,
    pub feed: String,
    /// What the feed lists: a name of the chain (or its parent), an address or a network.
    pub indicator: String,
    /// `name` (the question or a parent of it), `cname` (a name further down the CNAME
    /// chain) or `address` (an address the name resolved to).
    pub matched: &'static str,
}

impl std::fmt::Display for IntelMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} matches feed {} ({} {})",
            self.domain, self.feed, self.matched, self.indicator
        )
    }
}

/// The pipeline's side: the current index and what was already reported.
#[derive(Default)]
pub struct Matcher {
    shared: SharedIndex,
    seen_generation: u64,
    current: Arc<FeedIndex>,
    reported: HashSet<(String, String)>,
}

impl Matcher {
    pub fn new(shared: SharedIndex) -> Self {
        Self {
            shared,
            ..Self::default()
        }
    }

    /// Takes a newly published index, if any (one atomic load otherwise).
    pub fn refresh(&mut self) {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g == self.seen_generation {
            return;
        }
        if let Ok(ix) = self.shared.index.lock() {
            self.current = ix.clone();
            self.seen_generation = g;
        }
    }

    /// The first feed hit of a response (its CNAME chain, then its addresses), when it was not
    /// reported yet for this name and feed. `chain` is the answer chain from the question.
    pub fn check(
        &mut self,
        ts: SystemTime,
        msg: &DnsMessage,
        chain: &[&str],
    ) -> Option<IntelMatch> {
        self.refresh();
        if self.current.is_empty() {
            return None;
        }
        // Only the answer chain's addresses (bailiwick, as the scorer reads them).
        let addrs = msg
            .answers
            .iter()
            .filter(|r| chain.contains(&&*r.name))
            .filter_map(|r| r.addr);
        let hit = self.current.resolved(chain.iter().copied(), addrs)?;
        let matched = if chain
            .iter()
            .position(|n| self.current.domain(n).is_some())
            .is_some_and(|i| i > 0)
        {
            "cname"
        } else if self.current.domain(&msg.qname).is_some() {
            "name"
        } else {
            "address"
        };
        let key = (msg.qname.to_string(), hit.feed.clone());
        if self.reported.contains(&key) {
            return None;
        }
        if self.reported.len() >= REPORTED_MEMORY {
            self.reported.clear();
        }
        self.reported.insert(key);
        Some(IntelMatch {
            ts,
            domain: msg.qname.to_string(),
            feed: hit.feed,
            indicator: hit.indicator,
            matched,
        })
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
        let hit = |a: &str| {
            ix.address(a.parse().unwrap())
                .map(|h| (h.feed, h.indicator))
        };
        assert_eq!(hit("192.0.2.7"), Some(("f2".into(), "192.0.2.7".into())));
        assert_eq!(
            hit("203.0.113.5"),
            Some(("f3".into(), "203.0.113.0/24".into()))
        );
        assert_eq!(
            hit("203.0.113.200").unwrap().0,
            "f4",
            "the longest prefix wins"
        );
        assert_eq!(hit("2001:db8::99").unwrap().0, "f5");
        assert_eq!(hit("192.0.2.8"), None);
        assert_eq!(
            ix.domain("A.B.Evil.Example.").unwrap().indicator,
            "evil.example"
        );
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
