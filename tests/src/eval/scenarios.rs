//! A labelled, seeded, deterministic generator of DNS responses for evaluating the scorer.
//!
//! The vantage point sits behind a caching resolver (192.0.2.53 → 192.0.2.10). Every generated
//! name is looked up on its own schedule: for the first eleven classes a Poisson process with a
//! mean interval log-uniform from 20 s to 10 min; for the later ones a per-name draw of a
//! Poisson process, a periodic poll or bursts of lookups, from every 10 s to every few hours
//! ([`Schedule`]). The resolver caches each RRset (per owner name; NS per zone) for its TTL and
//! answers from the cache with the remaining TTL while it is fresh; otherwise it asks the
//! authoritative behaviour of that name for its current answer, with the full TTL. CNAME
//! chains are followed through the cache link by link, as a real resolver does.
//!
//! Every address comes from the real ASN database's prefixes ([`Enricher::ranges_of`]) of the
//! ASN the scenario intends (eyeball ISPs for bots, hosting providers for VPSes, the CDN's own
//! ASN for its PoPs, ...), never from uniformly random numbers. ASNs without ranges in the
//! database are dropped (listed in [`Summary::dropped_asns`]).
//!
//! Classes (the first word of a label's class): `flux-residential`, `flux-hosting`,
//! `flux-slow`, `double-flux` (Flux); `cdn`, `cloud-lb`, `multi-cdn`, `round-robin`, `dyndns`
//! (Benign); `ntp-pool`, `dns-seed` (Hard: legitimate but flux-like, covered by the allowlist).
//! Added later (module `extra`, drawn from a random stream of their own so that the classes
//! above come out the same for a seed): `isp-cache` (vendor content names answered from caches
//! inside access ISPs), `anycast-hosting` (hundreds of unrelated domains on a few anycast
//! addresses), `redirect-cdn` (Chinese CDN CNAME chains ending in several Chinese ISPs),
//! `parking` (parked domains on a parking provider's few addresses) (Benign); `flux-shared`
//! (residential flux whose answers include an anycast hosting address), `flux-modern`
//! (residential proxies, TTL 300-1800 s, 1-3 addresses), `flux-bulletproof` (rotating over 2-4
//! rented hosting networks) (Flux).
//!
//! Labels are the registered domains (public suffix list, private section included, so a host
//! under `duckdns.org` or `cloudfront.net` is its own registered domain) of every name a
//! scenario uses: queried names, CNAME targets and NS hosts.

mod extra;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt, fs,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    rc::Rc,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, anyhow, bail};
use flux_detect::enrich::Enricher;
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, CNAME, NS},
    },
};
use rand::{Rng, SeedableRng, seq::IndexedRandom as _, seq::SliceRandom as _};
use rand_chacha::ChaCha8Rng;

use super::{
    labels::{Label, Truth, write_labels},
    pcapw::{self, Response},
};

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenConfig {
    pub seed: u64,
    /// Instances (a flux domain, a CDN customer, an NTP zone name, ...) per class.
    pub per_class: usize,
    pub duration: Duration,
    pub start: SystemTime,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            seed: 2026,
            per_class: 40,
            duration: Duration::from_secs(6 * 3600),
            start: SystemTime::UNIX_EPOCH
                + Duration::from_secs(super::dig2009::days_from_civil(2026, 1, 1) as u64 * 86_400),
        }
    }
}

/// Counts for one class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassSummary {
    pub truth: Truth,
    pub instances: usize,
    /// Names the client queries.
    pub names: usize,
    /// Labels written for this class.
    pub labels: usize,
    pub responses: usize,
}

/// What [`generate`] wrote. `Display` is a table; `Debug` shows the size of the address
/// sample rather than the sample.
#[derive(Clone, PartialEq, Eq)]
pub struct Summary {
    /// Per class (see [`CLASSES`]).
    pub classes: BTreeMap<String, ClassSummary>,
    pub responses: usize,
    pub labels: usize,
    pub first: Option<SystemTime>,
    pub last: Option<SystemTime>,
    /// Requested ASNs the database has no IPv4 ranges for (left out).
    pub dropped_asns: Vec<u32>,
    /// A sample of drawn addresses with the ASN they were drawn from.
    pub asn_sample: Vec<(Ipv4Addr, u32)>,
}

impl fmt::Debug for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Summary")
            .field("classes", &self.classes)
            .field("responses", &self.responses)
            .field("labels", &self.labels)
            .field("first", &self.first)
            .field("last", &self.last)
            .field("dropped_asns", &self.dropped_asns)
            .field(
                "asn_sample",
                &format_args!("[{} addresses]", self.asn_sample.len()),
            )
            .finish()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<17} {:<7} {:>9} {:>6} {:>6} {:>9}",
            "class", "truth", "instances", "names", "labels", "responses"
        )?;
        for (c, s) in &self.classes {
            writeln!(
                f,
                "{:<17} {:<7} {:>9} {:>6} {:>6} {:>9}",
                c, s.truth, s.instances, s.names, s.labels, s.responses
            )?;
        }
        let secs = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64())
        };
        write!(
            f,
            "total: {} responses, {} labels, {:.0} s span ({:.0} to {:.0} s after the epoch)",
            self.responses,
            self.labels,
            secs(self.last) - secs(self.first),
            secs(self.first),
            secs(self.last)
        )?;
        if !self.dropped_asns.is_empty() {
            write!(f, "; ASNs without ranges: {:?}", self.dropped_asns)?;
        }
        Ok(())
    }
}

/// Every class, with its truth.
pub const CLASSES: [(&str, Truth); 18] = [
    ("flux-residential", Truth::Flux),
    ("flux-hosting", Truth::Flux),
    ("flux-slow", Truth::Flux),
    ("double-flux", Truth::Flux),
    ("cdn", Truth::Benign),
    ("cloud-lb", Truth::Benign),
    ("multi-cdn", Truth::Benign),
    ("round-robin", Truth::Benign),
    ("dyndns", Truth::Benign),
    ("ntp-pool", Truth::Hard),
    ("dns-seed", Truth::Hard),
    ("isp-cache", Truth::Benign),
    ("anycast-hosting", Truth::Benign),
    ("flux-shared", Truth::Flux),
    ("redirect-cdn", Truth::Benign),
    ("parking", Truth::Benign),
    ("flux-modern", Truth::Flux),
    ("flux-bulletproof", Truth::Flux),
];
const C_RESIDENTIAL: usize = 0;
const C_HOSTING: usize = 1;
const C_SLOW: usize = 2;
const C_DOUBLE: usize = 3;
const C_CDN: usize = 4;
const C_CLOUD: usize = 5;
const C_MULTI: usize = 6;
const C_RR: usize = 7;
const C_DYN: usize = 8;
const C_NTP: usize = 9;
const C_SEED: usize = 10;
const C_ISP_CACHE: usize = 11;
const C_ANYCAST: usize = 12;
const C_FLUX_SHARED: usize = 13;
const C_REDIRECT: usize = 14;
const C_PARKING: usize = 15;
const C_MODERN: usize = 16;
const C_BULLETPROOF: usize = 17;
/// Classes from this one on draw from [`Gen::alt`], so adding them left the random stream of
/// the ones before unchanged.
const FIRST_ALT_CLASS: usize = C_ISP_CACHE;

// --- ASNs -----------------------------------------------------------------------------------

/// Eyeball/broadband ISPs across many countries: where bots live.
pub const RESIDENTIAL_ASNS: [u32; 30] = [
    7922, 3320, 4134, 4837, 9829, 8151, 28573, 3215, 12389, 9121, 6830, 4766, 17974, 45899, 7018,
    701, 5089, 3352, 3269, 9808, 4788, 9299, 7552, 24560, 8452, 6147, 27699, 7738, 5384, 12880,
];
/// VPS/hosting providers.
pub const HOSTING_ASNS: [u32; 10] = [
    16276, 24940, 14061, 20473, 9009, 51167, 63949, 202425, 49505, 60781,
];
/// Chinese national and provincial ISP ASNs (Telecom, Unicom, Mobile, ...): where Chinese CDNs
/// place nodes.
pub const CN_ISP_ASNS: [u32; 10] = [
    4134, 4837, 4812, 4808, 17816, 17621, 58563, 56040, 24400, 9394,
];
const AKAMAI: [u32; 2] = [20940, 16625];
const AMAZON: [u32; 1] = [16509];
const AWS_ELB: [u32; 2] = [16509, 14618];
const FASTLY: [u32; 1] = [54113];
const CLOUDFLARE: [u32; 1] = [13335];
const ALIBABA: [u32; 2] = [37963, 45102];
const TENCENT: [u32; 2] = [45090, 132203];
const QINIU: [u32; 3] = [4134, 4837, 4812];
const GOOGLE: [u32; 1] = [15169];
const GCP: [u32; 2] = [15169, 396982];
const FACEBOOK: [u32; 1] = [32934];
const AZURE: [u32; 1] = [8075];

const EU: &[u32] = &[
    3320, 3215, 12389, 5089, 3352, 3269, 6830, 24940, 16276, 51167, 60781, 9009, 49505, 202425,
];
const NA: &[u32] = &[7922, 7018, 701, 14061, 20473, 63949, 8151];
const ASIA: &[u32] = &[
    4134, 4837, 4766, 9808, 4788, 9299, 7552, 24560, 45899, 9829, 4538,
];
const SA: &[u32] = &[28573, 27699, 7738, 6147, 8151];
const MEA: &[u32] = &[5384, 12880, 8452, 9121, 24940];

// --- address spaces -------------------------------------------------------------------------

/// The IPv4 ranges of one ASN.
struct Space {
    ranges: Vec<(u32, u32)>,
    /// Cumulative sizes, for size-weighted draws.
    cum: Vec<u64>,
}

/// A block of addresses (a /24, or a smaller range) inside one ASN.
#[derive(Clone, Copy, Debug)]
struct Block {
    asn: u32,
    lo: u32,
    hi: u32,
}

struct Spaces {
    map: BTreeMap<u32, Space>,
    dropped: Vec<u32>,
    draws: u64,
    sample: Vec<(Ipv4Addr, u32)>,
}

/// The ChaCha stream of [`Gen::alt`] (the classes added later); stream 0 is the original one.
const ALT_STREAM: u64 = 1;

const SAMPLE_EVERY: u64 = 37;
const SAMPLE_MAX: usize = 4000;

fn host_ok(a: u32, lo: u32, hi: u32) -> bool {
    // Avoid network/broadcast-looking addresses where the range leaves a choice.
    hi - lo < 4 || !matches!(a & 0xff, 0 | 255)
}

impl Spaces {
    fn load(enr: &Enricher, asns: &[u32]) -> Self {
        let mut map = BTreeMap::new();
        let mut dropped = Vec::new();
        let mut want: Vec<u32> = asns.to_vec();
        want.sort_unstable();
        want.dedup();
        for asn in want {
            let mut ranges: Vec<(u32, u32)> = enr
                .ranges_of(asn)
                .into_iter()
                .filter_map(|r| match r {
                    (IpAddr::V4(a), IpAddr::V4(b)) if u32::from(a) <= u32::from(b) => {
                        Some((u32::from(a), u32::from(b)))
                    }
                    _ => None,
                })
                .collect();
            ranges.sort_unstable();
            if ranges.is_empty() {
                dropped.push(asn);
                continue;
            }
            let mut cum = Vec::with_capacity(ranges.len());
            let mut total = 0u64;
            for &(a, b) in &ranges {
                total += u64::from(b - a) + 1;
                cum.push(total);
            }
            map.insert(asn, Space { ranges, cum });
        }
        Self {
            map,
            dropped,
            draws: 0,
            sample: Vec::new(),
        }
    }

    fn has(&self, asn: u32) -> bool {
        self.map.contains_key(&asn)
    }

    /// The ASNs of `list` that have ranges; an error if none does.
    fn usable(&self, list: &[u32], what: &str) -> anyhow::Result<Vec<u32>> {
        let v: Vec<u32> = list.iter().copied().filter(|&a| self.has(a)).collect();
        if v.is_empty() {
            bail!("the ASN database has no IPv4 ranges for any {what} ASN {list:?}");
        }
        Ok(v)
    }

    fn record(&mut self, a: u32, asn: u32) -> Ipv4Addr {
        self.draws += 1;
        let ip = Ipv4Addr::from(a);
        if self.draws.is_multiple_of(SAMPLE_EVERY) && self.sample.len() < SAMPLE_MAX {
            self.sample.push((ip, asn));
        }
        ip
    }

    /// One range of `asn`: size-weighted, or (`spread`) uniform over the ranges, which spreads
    /// draws over many prefixes.
    fn range(&self, rng: &mut ChaCha8Rng, asn: u32, spread: bool) -> (u32, u32) {
        let s = &self.map[&asn];
        if spread {
            *s.ranges.choose(rng).expect("non-empty")
        } else {
            let total = *s.cum.last().expect("non-empty");
            let r = rng.random_range(0..total);
            s.ranges[s.cum.partition_point(|&c| c <= r)]
        }
    }

    /// A random host address of `asn`.
    fn addr(&mut self, rng: &mut ChaCha8Rng, asn: u32, spread: bool) -> Ipv4Addr {
        let (lo, hi) = self.range(rng, asn, spread);
        let mut a = rng.random_range(lo..=hi);
        for _ in 0..16 {
            if host_ok(a, lo, hi) {
                break;
            }
            a = rng.random_range(lo..=hi);
        }
        self.record(a, asn)
    }

    /// A /24 (or the whole range if smaller) inside `asn`.
    fn block(&mut self, rng: &mut ChaCha8Rng, asn: u32, spread: bool) -> Block {
        let (lo, hi) = self.range(rng, asn, spread);
        let base = rng.random_range(lo..=hi) & !0xff;
        Block {
            asn,
            lo: base.max(lo),
            hi: (base | 0xff).min(hi),
        }
    }

    /// `n` distinct host addresses of a block (fewer if it is smaller).
    fn hosts(&mut self, rng: &mut ChaCha8Rng, b: Block, n: usize) -> Vec<Ipv4Addr> {
        let mut cand: Vec<u32> = (b.lo..=b.hi).filter(|&a| host_ok(a, b.lo, b.hi)).collect();
        cand.shuffle(rng);
        cand.truncate(n.max(1));
        cand.into_iter().map(|a| self.record(a, b.asn)).collect()
    }
}

// --- authoritative behaviours ---------------------------------------------------------------

/// An RRset an authoritative server hands out for a name.
#[derive(Clone, Debug)]
struct RRset {
    ttl: u32,
    data: Data,
}

#[derive(Clone, Debug)]
enum Data {
    A(Vec<Ipv4Addr>),
    /// CNAME to another owner (index).
    Cname(usize),
}

/// A pool of addresses; bots come and go (online in half-hour slots with their availability).
struct Pool {
    addrs: Vec<Ipv4Addr>,
    /// Per address probability of being online in a slot; empty: always online.
    avail: Vec<f32>,
    salt: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const SLOT: f64 = 1800.0;

impl Pool {
    fn online(&self, i: usize, now: f64) -> bool {
        if self.avail.is_empty() {
            return true;
        }
        let slot = (now / SLOT) as u64;
        let h = mix(self.salt ^ mix(i as u64) ^ mix(slot.wrapping_mul(0x1000_0001)));
        ((h >> 11) as f64 / (1u64 << 53) as f64) < f64::from(self.avail[i])
    }

    /// `k` distinct online addresses (at least one address even if none is online).
    fn pick(&self, rng: &mut ChaCha8Rng, now: f64, k: usize) -> Vec<Ipv4Addr> {
        let n = self.addrs.len();
        let mut chosen: Vec<usize> = Vec::with_capacity(k);
        for _ in 0..k * 40 {
            if chosen.len() >= k.min(n) {
                break;
            }
            let i = rng.random_range(0..n);
            if !chosen.contains(&i) && self.online(i, now) {
                chosen.push(i);
            }
        }
        if chosen.is_empty() {
            chosen.push(rng.random_range(0..n));
        }
        chosen.into_iter().map(|i| self.addrs[i]).collect()
    }
}

/// How a CDN (or a load balancer) maps the vantage point to a PoP.
#[derive(Clone, Copy, Debug)]
struct PopSpec {
    asns: &'static [u32],
    /// Sometimes the PoP is in one of these instead (a provincial ISP for Chinese CDNs).
    alt: &'static [u32],
    alt_prob: f64,
    /// Addresses at the PoP.
    nodes: (usize, usize),
    /// Addresses per answer (at most the PoP's).
    answer: (usize, usize),
    ttl: (u32, u32),
    /// How many PoPs serve the vantage point, switched between; `(0, 0)`: a new PoP at every
    /// switch.
    pops: (usize, usize),
    /// Seconds between PoP switches (`f64::INFINITY`: never).
    switch: (f64, f64),
    /// PoPs uniformly over the ASN's ranges (many /16s) rather than size-weighted.
    spread: bool,
}

const AKAMAI_POP: PopSpec = PopSpec {
    asns: &AKAMAI,
    alt: &[],
    alt_prob: 0.0,
    nodes: (2, 4),
    answer: (2, 2),
    ttl: (20, 20),
    pops: (2, 4),
    switch: (1200.0, 3600.0),
    spread: false,
};
const CLOUDFRONT_POP: PopSpec = PopSpec {
    asns: &AMAZON,
    nodes: (4, 8),
    answer: (4, 8),
    ttl: (60, 60),
    pops: (2, 3),
    ..AKAMAI_POP
};
const FASTLY_POP: PopSpec = PopSpec {
    asns: &FASTLY,
    nodes: (2, 4),
    answer: (2, 4),
    ttl: (30, 30),
    pops: (2, 3),
    ..AKAMAI_POP
};
const CLOUDFLARE_POP: PopSpec = PopSpec {
    asns: &CLOUDFLARE,
    nodes: (2, 2),
    answer: (2, 2),
    ttl: (300, 300),
    pops: (1, 1),
    switch: (12.0 * 3600.0, 48.0 * 3600.0),
    ..AKAMAI_POP
};
const ALIBABA_POP: PopSpec = PopSpec {
    asns: &ALIBABA,
    alt: &CN_ISP_ASNS,
    alt_prob: 0.35,
    nodes: (2, 6),
    answer: (1, 4),
    ttl: (30, 60),
    ..AKAMAI_POP
};
const TENCENT_POP: PopSpec = PopSpec {
    asns: &TENCENT,
    ..ALIBABA_POP
};
const QINIU_POP: PopSpec = PopSpec {
    asns: &QINIU,
    nodes: (2, 8),
    answer: (2, 6),
    ttl: (20, 60),
    ..ALIBABA_POP
};
const GOOGLE_POP: PopSpec = PopSpec {
    asns: &GOOGLE,
    nodes: (1, 1),
    answer: (1, 1),
    ttl: (300, 300),
    pops: (0, 0),
    switch: (3600.0, 4.0 * 3600.0),
    spread: true,
    ..AKAMAI_POP
};
const FACEBOOK_POP: PopSpec = PopSpec {
    asns: &FACEBOOK,
    nodes: (1, 1),
    answer: (1, 1),
    ttl: (60, 60),
    pops: (2, 3),
    ..AKAMAI_POP
};
const AZURE_POP: PopSpec = PopSpec {
    asns: &AZURE,
    nodes: (1, 1),
    answer: (1, 1),
    ttl: (60, 60),
    pops: (1, 1),
    switch: (f64::INFINITY, f64::INFINITY),
    ..AKAMAI_POP
};
const GCP_POP: PopSpec = PopSpec {
    asns: &GCP,
    ttl: (300, 300),
    ..AZURE_POP
};

struct Pop {
    spec: PopSpec,
    ttl: u32,
    /// The PoPs this name is served from (their addresses), and the current one.
    pops: Vec<Vec<Ipv4Addr>>,
    cur: usize,
    next_switch: f64,
}

impl Pop {
    fn new(spec: PopSpec, rng: &mut ChaCha8Rng) -> Self {
        Self {
            spec,
            ttl: rng.random_range(spec.ttl.0..=spec.ttl.1),
            pops: Vec::new(),
            cur: 0,
            next_switch: 0.0,
        }
    }

    /// The addresses of a new PoP: a /24 in the CDN's ASN (or, sometimes, in an alternative
    /// ASN).
    fn new_pop(&self, cx: &mut Cx) -> Vec<Ipv4Addr> {
        let s = self.spec;
        let alt: Vec<u32> = s
            .alt
            .iter()
            .copied()
            .filter(|&a| cx.spaces.has(a))
            .collect();
        let main: Vec<u32> = s
            .asns
            .iter()
            .copied()
            .filter(|&a| cx.spaces.has(a))
            .collect();
        let from = if !alt.is_empty() && (main.is_empty() || cx.rng.random_bool(s.alt_prob)) {
            alt
        } else {
            main
        };
        let asn = *from.choose(cx.rng).expect("usable ASNs checked at start");
        let b = cx.spaces.block(cx.rng, asn, s.spread);
        let n = cx.rng.random_range(s.nodes.0..=s.nodes.1);
        cx.spaces.hosts(cx.rng, b, n)
    }

    fn answer(&mut self, now: f64, cx: &mut Cx) -> Vec<Ipv4Addr> {
        let s = self.spec;
        if self.pops.is_empty() {
            let n = if s.pops.0 == 0 {
                1
            } else {
                cx.rng.random_range(s.pops.0..=s.pops.1)
            };
            for _ in 0..n {
                let p = self.new_pop(cx);
                self.pops.push(p);
            }
            self.cur = cx.rng.random_range(0..n);
            self.next_switch = now;
        } else if now >= self.next_switch {
            if s.pops.0 == 0 {
                // A fresh PoP every time (Google frontends over many /16s).
                self.pops[0] = self.new_pop(cx);
            } else {
                self.cur = other_than(cx.rng, self.pops.len(), self.cur);
            }
        }
        if now >= self.next_switch {
            self.next_switch = if s.switch.0.is_finite() {
                now + cx.rng.random_range(s.switch.0..=s.switch.1)
            } else {
                f64::INFINITY
            };
        }
        let cur = &self.pops[self.cur];
        let k = cx.rng.random_range(s.answer.0..=s.answer.1).min(cur.len());
        let mut v = cur.clone();
        v.shuffle(cx.rng);
        v.truncate(k.max(1));
        v
    }
}

/// An AWS ELB: a slowly changing node set spread over several /16s.
struct Elb {
    asns: Vec<u32>,
    size: usize,
    nodes: Vec<Ipv4Addr>,
    next_change: f64,
}

impl Elb {
    fn answer(&mut self, now: f64, cx: &mut Cx) -> Vec<Ipv4Addr> {
        if self.nodes.is_empty() {
            for _ in 0..self.size {
                let asn = *self.asns.choose(cx.rng).expect("non-empty");
                let a = cx.spaces.addr(cx.rng, asn, true);
                self.nodes.push(a);
            }
            self.next_change = now + cx.rng.random_range(1800.0..7200.0);
        }
        while now >= self.next_change {
            let i = cx.rng.random_range(0..self.nodes.len());
            let asn = *self.asns.choose(cx.rng).expect("non-empty");
            self.nodes[i] = cx.spaces.addr(cx.rng, asn, true);
            self.next_change += cx.rng.random_range(1800.0..7200.0);
        }
        let k = cx.rng.random_range(2..=8usize).min(self.nodes.len());
        let mut v = self.nodes.clone();
        v.shuffle(cx.rng);
        v.truncate(k);
        v
    }
}

enum Behaviour {
    /// A fixed CNAME.
    Cname {
        target: usize,
        ttl: u32,
    },
    /// `k` random (online) addresses of a pool on every fetch: flux, NTP pool, DNS seeds, glue.
    Pick {
        pool: Rc<Pool>,
        k: (usize, usize),
        ttl: u32,
    },
    /// One address per TTL period from a pool (slow flux).
    Slow {
        pool: Rc<Pool>,
        ttl: u32,
        salt: u64,
    },
    Pop(Pop),
    Elb(Elb),
    /// A CNAME to one of several targets, a different one per resolution.
    MultiCname {
        targets: Vec<usize>,
        ttl: u32,
        last: usize,
    },
    /// A records of the site's own name from a different CDN per resolution.
    MultiA {
        pops: Vec<Pop>,
        ttl: u32,
        last: usize,
    },
    /// A static address set: all of it rotated, or a rotating window of `subset` addresses.
    RoundRobin {
        addrs: Vec<Ipv4Addr>,
        subset: Option<usize>,
        ttl: u32,
        next: usize,
    },
    /// Answers from rotating address groups (caches, CDN nodes, rented networks).
    Rotate(extra::Rotate),
    /// Like `Pick`, and with probability `prob` one of the answer's addresses is `extra`
    /// (an address shared with legitimate names).
    PickWith {
        pool: Rc<Pool>,
        k: (usize, usize),
        ttl: u32,
        extra: Ipv4Addr,
        prob: f64,
    },
    /// One address in one ISP's space, changing every 2-24 h.
    DynDns {
        asn: u32,
        addr: Option<Ipv4Addr>,
        next_change: f64,
        ttl: u32,
    },
}

struct Cx<'a> {
    rng: &'a mut ChaCha8Rng,
    spaces: &'a mut Spaces,
}

fn other_than(rng: &mut ChaCha8Rng, n: usize, last: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let i = rng.random_range(0..n - 1);
    if i >= last { i + 1 } else { i }
}

impl Behaviour {
    fn fetch(&mut self, now: f64, cx: &mut Cx) -> RRset {
        match self {
            Behaviour::Cname { target, ttl } => RRset {
                ttl: *ttl,
                data: Data::Cname(*target),
            },
            Behaviour::Pick { pool, k, ttl } => {
                let n = cx.rng.random_range(k.0..=k.1);
                RRset {
                    ttl: *ttl,
                    data: Data::A(pool.pick(cx.rng, now, n)),
                }
            }
            Behaviour::Slow { pool, ttl, salt } => {
                let period = (now / f64::from(*ttl)) as u64;
                let n = pool.addrs.len();
                let start = (mix(*salt ^ mix(period)) % n as u64) as usize;
                let i = (0..n)
                    .map(|j| (start + j) % n)
                    .find(|&i| pool.online(i, now))
                    .unwrap_or(start);
                RRset {
                    ttl: *ttl,
                    data: Data::A(vec![pool.addrs[i]]),
                }
            }
            Behaviour::Pop(p) => RRset {
                ttl: p.ttl,
                data: Data::A(p.answer(now, cx)),
            },
            Behaviour::Elb(e) => RRset {
                ttl: 60,
                data: Data::A(e.answer(now, cx)),
            },
            Behaviour::MultiCname { targets, ttl, last } => {
                *last = other_than(cx.rng, targets.len(), *last);
                RRset {
                    ttl: *ttl,
                    data: Data::Cname(targets[*last]),
                }
            }
            Behaviour::MultiA { pops, ttl, last } => {
                *last = other_than(cx.rng, pops.len(), *last);
                RRset {
                    ttl: *ttl,
                    data: Data::A(pops[*last].answer(now, cx)),
                }
            }
            Behaviour::RoundRobin {
                addrs,
                subset,
                ttl,
                next,
            } => {
                let n = addrs.len();
                let k = subset.unwrap_or(n);
                let v = (0..k).map(|j| addrs[(*next + j) % n]).collect();
                *next = (*next + subset.unwrap_or(1)) % n;
                RRset {
                    ttl: *ttl,
                    data: Data::A(v),
                }
            }
            Behaviour::Rotate(r) => RRset {
                ttl: r.ttl(),
                data: Data::A(r.answer(now, cx.rng)),
            },
            Behaviour::PickWith {
                pool,
                k,
                ttl,
                extra,
                prob,
            } => {
                let n = cx.rng.random_range(k.0..=k.1);
                let mut v = pool.pick(cx.rng, now, n);
                if cx.rng.random_bool(*prob) {
                    if v.len() > 1 {
                        v.pop();
                    }
                    v.push(*extra);
                }
                RRset {
                    ttl: *ttl,
                    data: Data::A(v),
                }
            }
            Behaviour::DynDns {
                asn,
                addr,
                next_change,
                ttl,
            } => {
                if addr.is_none() {
                    *addr = Some(cx.spaces.addr(cx.rng, *asn, false));
                    *next_change = now + cx.rng.random_range(0.0..24.0 * 3600.0);
                }
                while now >= *next_change {
                    *addr = Some(cx.spaces.addr(cx.rng, *asn, false));
                    *next_change += cx.rng.random_range(2.0 * 3600.0..24.0 * 3600.0);
                }
                RRset {
                    ttl: *ttl,
                    data: Data::A(vec![addr.expect("set above")]),
                }
            }
        }
    }

    /// Owners this one can point to (for labelling).
    fn targets(&self) -> Vec<usize> {
        match self {
            Behaviour::Cname { target, .. } => vec![*target],
            Behaviour::MultiCname { targets, .. } => targets.clone(),
            _ => Vec::new(),
        }
    }
}

// --- the world: names, zones, resolver ------------------------------------------------------

struct Owner {
    name: String,
    fqdn: Name,
    beh: Option<Behaviour>,
    /// Answers for this name carry the NS RRset of this zone (authority) and its glue.
    zone: Option<usize>,
}

struct Zone {
    apex: Name,
    hosts: Vec<usize>,
    ttl: u32,
}

struct QName {
    owner: usize,
    class: usize,
    sched: extra::Schedule,
}

struct Gen {
    rng: ChaCha8Rng,
    /// The random stream of the classes from [`FIRST_ALT_CLASS`] on: swapped with `rng` while
    /// they are built and while their lookups are answered.
    alt: ChaCha8Rng,
    spaces: Spaces,
    owners: Vec<Owner>,
    by_name: HashMap<String, usize>,
    zones: Vec<Zone>,
    queries: Vec<QName>,
    labels: BTreeMap<String, Label>,
    used: HashSet<String>,
    stats: Vec<ClassSummary>,
    /// Usable ASN lists.
    residential: Vec<u32>,
    hosting: Vec<u32>,
}

fn fqdn(name: &str) -> anyhow::Result<Name> {
    Name::from_ascii(format!("{name}.")).map_err(|e| anyhow!("bad name {name:?}: {e}"))
}

fn registered(name: &str) -> anyhow::Result<&str> {
    psl::domain_str(name).ok_or_else(|| anyhow!("{name} has no registered domain"))
}

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const WORDS: &[&str] = &[
    "north", "river", "media", "shop", "cloud", "tech", "green", "blue", "data", "news", "travel",
    "home", "star", "pixel", "forest", "ocean", "urban", "smart", "bright", "nova", "alpine",
    "metro", "craft", "daily", "global", "harbor", "island", "jade", "kite", "lumen", "maple",
    "nimble", "orbit", "prime", "quest", "rapid", "solar", "terra", "unity", "vivid", "wave",
    "zen", "atlas", "beacon", "cedar", "delta", "ember", "fable", "garden", "haven", "iron",
    "journal", "kitchen", "lab", "market", "nest", "office", "press", "radio", "studio", "store",
    "games", "books", "sport", "health", "bank", "energy", "motors", "foods", "music", "photo",
];

fn rand_str(rng: &mut ChaCha8Rng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| *alphabet.choose(rng).expect("non-empty") as char)
        .collect()
}

impl Gen {
    fn owner(&mut self, name: &str) -> anyhow::Result<usize> {
        if let Some(&i) = self.by_name.get(name) {
            return Ok(i);
        }
        registered(name)?;
        let i = self.owners.len();
        self.owners.push(Owner {
            name: name.to_owned(),
            fqdn: fqdn(name)?,
            beh: None,
            zone: None,
        });
        self.by_name.insert(name.to_owned(), i);
        Ok(i)
    }

    /// Defines `name`'s behaviour; an error if it already has one.
    fn define(&mut self, name: &str, beh: Behaviour) -> anyhow::Result<usize> {
        let i = self.owner(name)?;
        if self.owners[i].beh.is_some() {
            bail!("{name} defined twice");
        }
        self.owners[i].beh = Some(beh);
        Ok(i)
    }

    /// `name`'s owner, defining it with `beh()` if it has no behaviour yet (shared targets).
    fn define_shared(
        &mut self,
        name: &str,
        beh: impl FnOnce(&mut Self) -> Behaviour,
    ) -> anyhow::Result<usize> {
        let i = self.owner(name)?;
        if self.owners[i].beh.is_none() {
            let b = beh(self);
            self.owners[i].beh = Some(b);
        }
        Ok(i)
    }

    fn cname(&mut self, name: &str, target: usize, ttl: u32) -> anyhow::Result<usize> {
        self.define(name, Behaviour::Cname { target, ttl })
    }

    fn query(&mut self, owner: usize, class: usize) {
        // Log-uniform mean interval, 20 s to 10 min.
        let mean = (20f64.ln() + self.rng.random::<f64>() * (600f64 / 20.0).ln()).exp();
        self.queries.push(QName {
            owner,
            class,
            sched: extra::Schedule::Poisson(mean),
        });
        self.stats[class].names += 1;
    }

    /// A registered domain not used before, from `make`.
    fn fresh(&mut self, mut make: impl FnMut(&mut ChaCha8Rng) -> String) -> anyhow::Result<String> {
        for _ in 0..1000 {
            let d = make(&mut self.rng);
            let reg = registered(&d)?.to_owned();
            if !self.used.contains(&reg) && !self.labels.contains_key(&reg) {
                self.used.insert(reg);
                return Ok(d);
            }
        }
        bail!("cannot find an unused domain name")
    }

    /// Random-looking flux domain: `diexgwdi.cn`.
    fn flux_domain(&mut self) -> anyhow::Result<String> {
        self.fresh(|rng| {
            let len = rng.random_range(6..=10);
            let tld = ["com", "ru", "cn", "info", "biz", "com", "cn"]
                .choose(rng)
                .expect("non-empty");
            format!("{}.{tld}", rand_str(rng, LETTERS, len))
        })
    }

    /// Word-like customer domain: `northmedia.co.uk`.
    fn site_domain(&mut self, tlds: &[&str]) -> anyhow::Result<String> {
        let tlds: Vec<String> = tlds.iter().map(|s| (*s).to_owned()).collect();
        self.fresh(move |rng| {
            let a = WORDS.choose(rng).expect("non-empty");
            let b = WORDS.choose(rng).expect("non-empty");
            let tld = tlds.choose(rng).expect("non-empty");
            if rng.random_bool(0.2) {
                format!("{a}{b}{}.{tld}", rng.random_range(1..100))
            } else {
                format!("{a}{b}.{tld}")
            }
        })
    }

    /// Labels the registered domain of every name reachable from `owner` (CNAME targets, NS
    /// hosts of its zone).
    fn label_from(&mut self, owner: usize, class: usize) -> anyhow::Result<()> {
        let mut stack = vec![owner];
        let mut seen = HashSet::new();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            let name = self.owners[i].name.clone();
            self.add_label(registered(&name)?, class)?;
            if let Some(b) = &self.owners[i].beh {
                stack.extend(b.targets());
            }
            if let Some(z) = self.owners[i].zone {
                stack.extend(self.zones[z].hosts.iter().copied());
            }
        }
        Ok(())
    }

    fn add_label(&mut self, domain: &str, class: usize) -> anyhow::Result<()> {
        let (cname, truth) = CLASSES[class];
        match self.labels.get(domain) {
            Some(l) if l.truth != truth => bail!(
                "{domain} labelled both {} ({}) and {cname} ({truth})",
                l.class,
                l.truth
            ),
            Some(_) => {}
            None => {
                self.labels
                    .insert(domain.to_owned(), Label::new(domain, cname, truth));
                self.stats[class].labels += 1;
            }
        }
        Ok(())
    }

    /// Queries `names` (owners) as one instance of `class` and labels what they reach.
    fn instance(&mut self, class: usize, names: &[usize]) -> anyhow::Result<()> {
        for &n in names {
            self.query(n, class);
            self.label_from(n, class)?;
        }
        self.stats[class].instances += 1;
        Ok(())
    }

    // --- pools ---

    /// A bot pool of 200-2000 residential addresses from 10-30 eyeball ASNs.
    fn botnet(&mut self) -> Rc<Pool> {
        let size = self.rng.random_range(200..=2000);
        let mut asns = self.residential.clone();
        asns.shuffle(&mut self.rng);
        asns.truncate(self.rng.random_range(10..=30).min(asns.len()));
        let weights: Vec<f64> = asns
            .iter()
            .map(|_| self.rng.random_range(0.2..1.0f64))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut addrs = Vec::with_capacity(size);
        let mut avail = Vec::with_capacity(size);
        let mut seen = HashSet::new();
        while addrs.len() < size {
            let mut r = self.rng.random::<f64>() * total;
            let mut asn = asns[0];
            for (a, w) in asns.iter().zip(&weights) {
                if r < *w {
                    asn = *a;
                    break;
                }
                r -= w;
            }
            let a = self.spaces.addr(&mut self.rng, asn, false);
            if seen.insert(a) {
                addrs.push(a);
                avail.push(self.rng.random_range(0.2..0.9f32));
            }
        }
        Rc::new(Pool {
            addrs,
            avail,
            salt: self.rng.random(),
        })
    }

    /// `size` addresses from `asns` (mixed), optionally spread over their ranges.
    fn plain_pool(&mut self, asns: &[u32], size: usize, spread: bool) -> Rc<Pool> {
        let mut addrs = Vec::with_capacity(size);
        let mut seen = HashSet::new();
        for _ in 0..size * 4 {
            if addrs.len() >= size {
                break;
            }
            let asn = *asns.choose(&mut self.rng).expect("non-empty");
            let a = self.spaces.addr(&mut self.rng, asn, spread);
            if seen.insert(a) {
                addrs.push(a);
            }
        }
        Rc::new(Pool {
            addrs,
            avail: Vec::new(),
            salt: self.rng.random(),
        })
    }

    fn flux_ttl(&mut self) -> u32 {
        *[180, 300, 180, 300, 180, 300, 60, 120, 150, 240, 600]
            .choose(&mut self.rng)
            .expect("non-empty")
    }

    // --- classes ---

    /// Flux names of `domain`: the domain, `www.`, and sometimes random subdomains CNAMEd to
    /// the domain (`rsqh.diexgwdi.cn CNAME diexgwdi.cn`). `make` builds each A behaviour.
    fn flux_names(
        &mut self,
        domain: &str,
        ttl: u32,
        mut make: impl FnMut(&mut Self) -> Behaviour,
    ) -> anyhow::Result<Vec<usize>> {
        let b = make(self);
        let apex = self.define(domain, b)?;
        let b = make(self);
        let www = self.define(&format!("www.{domain}"), b)?;
        let mut names = vec![apex, www];
        if self.rng.random_bool(0.4) {
            for _ in 0..self.rng.random_range(2..=6) {
                let len = self.rng.random_range(2..=5);
                let sub = format!("{}.{domain}", rand_str(&mut self.rng, LETTERS, len));
                if self.by_name.contains_key(&sub) {
                    continue;
                }
                names.push(self.cname(&sub, apex, ttl)?);
            }
        }
        Ok(names)
    }

    fn gen_residential(&mut self, n: usize) -> anyhow::Result<()> {
        let nets: Vec<Rc<Pool>> = (0..n.div_ceil(8).max(1)).map(|_| self.botnet()).collect();
        for i in 0..n {
            let pool = nets[i % nets.len()].clone();
            let domain = self.flux_domain()?;
            let ttl = self.flux_ttl();
            let k = (3, 8);
            let names = self.flux_names(&domain, ttl, |_| Behaviour::Pick {
                pool: pool.clone(),
                k,
                ttl,
            })?;
            self.instance(C_RESIDENTIAL, &names)?;
        }
        Ok(())
    }

    fn gen_hosting(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let mut asns = self.hosting.clone();
            asns.shuffle(&mut self.rng);
            asns.truncate(self.rng.random_range(2..=4).min(asns.len()));
            let size = self.rng.random_range(20..=80);
            let pool = self.plain_pool(&asns, size, false);
            let domain = self.flux_domain()?;
            let ttl = *[60, 120, 180, 300, 300]
                .choose(&mut self.rng)
                .expect("non-empty");
            let names = self.flux_names(&domain, ttl, |_| Behaviour::Pick {
                pool: pool.clone(),
                k: (1, 4),
                ttl,
            })?;
            self.instance(C_HOSTING, &names)?;
        }
        Ok(())
    }

    fn gen_slow(&mut self, n: usize) -> anyhow::Result<()> {
        let nets: Vec<Rc<Pool>> = (0..n.div_ceil(10).max(1)).map(|_| self.botnet()).collect();
        for i in 0..n {
            let pool = nets[i % nets.len()].clone();
            let domain = self.flux_domain()?;
            let ttl = *[120, 180, 300, 300, 600]
                .choose(&mut self.rng)
                .expect("non-empty");
            let names = self.flux_names(&domain, ttl, |g| Behaviour::Slow {
                pool: pool.clone(),
                ttl,
                salt: g.rng.random(),
            })?;
            self.instance(C_SLOW, &names)?;
        }
        Ok(())
    }

    /// Glue for an NS host: one bot address, low TTL.
    fn glue_host(&mut self, host: &str, pool: &Rc<Pool>) -> anyhow::Result<usize> {
        let ttl = *[180, 300, 600].choose(&mut self.rng).expect("non-empty");
        let pool = pool.clone();
        self.define_shared(host, |_| Behaviour::Pick {
            pool,
            k: (1, 1),
            ttl,
        })
    }

    fn gen_double(&mut self, n: usize) -> anyhow::Result<()> {
        let nets: Vec<Rc<Pool>> = (0..n.div_ceil(8).max(1)).map(|_| self.botnet()).collect();
        // Per network: a separate NS domain with 2-4 hosts, shared by the domains using it.
        let mut ns_domains: Vec<Option<Vec<usize>>> = vec![None; nets.len()];
        for i in 0..n {
            let net = i % nets.len();
            let pool = nets[net].clone();
            let domain = self.flux_domain()?;
            let ttl = self.flux_ttl();
            let names = self.flux_names(&domain, ttl, |_| Behaviour::Pick {
                pool: pool.clone(),
                k: (3, 8),
                ttl,
            })?;
            let hosts = if self.rng.random_bool(0.5) {
                let mut h = Vec::new();
                for k in 1..=2 {
                    h.push(self.glue_host(&format!("ns{k}.{domain}"), &pool)?);
                }
                h
            } else {
                if ns_domains[net].is_none() {
                    let nsd = self.flux_domain()?;
                    let mut h = Vec::new();
                    for k in 1..=self.rng.random_range(2..=4) {
                        h.push(self.glue_host(&format!("ns{k}.{nsd}"), &pool)?);
                    }
                    ns_domains[net] = Some(h);
                }
                ns_domains[net].clone().expect("set above")
            };
            let zone = self.zones.len();
            self.zones.push(Zone {
                apex: fqdn(&domain)?,
                hosts,
                ttl: *[3600, 21600, 86400]
                    .choose(&mut self.rng)
                    .expect("non-empty"),
            });
            for &o in &names {
                self.owners[o].zone = Some(zone);
            }
            self.instance(C_DOUBLE, &names)?;
        }
        Ok(())
    }

    /// The name a customer CNAMEs to for `provider`, building its chain.
    fn cdn_target(&mut self, provider: Provider, site: &str) -> anyhow::Result<usize> {
        let label = site.replace('.', "-");
        match provider {
            Provider::Akamai => {
                let e = format!("e{}.a.akamaiedge.net", self.rng.random_range(1000..99999));
                let pop = Pop::new(AKAMAI_POP, &mut self.rng);
                let t = self.define_shared(&e, |_| Behaviour::Pop(pop))?;
                self.cname(&format!("www.{site}.edgekey.net"), t, 21600)
            }
            Provider::CloudFront => {
                let d = format!("d{}.cloudfront.net", rand_str(&mut self.rng, ALNUM, 13));
                let pop = Pop::new(CLOUDFRONT_POP, &mut self.rng);
                self.define(&d, Behaviour::Pop(pop))
            }
            Provider::Fastly => {
                let host = if self.rng.random_bool(0.5) {
                    format!("{label}.global.ssl.fastly.net")
                } else {
                    format!("{label}.map.fastly.net")
                };
                let pop = Pop::new(FASTLY_POP, &mut self.rng);
                self.define(&host, Behaviour::Pop(pop))
            }
            Provider::Cloudflare => {
                let pop = Pop::new(CLOUDFLARE_POP, &mut self.rng);
                self.define(
                    &format!("www.{site}.cdn.cloudflare.net"),
                    Behaviour::Pop(pop),
                )
            }
            Provider::Alibaba => {
                let pop = Pop::new(ALIBABA_POP, &mut self.rng);
                self.define(&format!("www.{site}.w.kunlunsl.com"), Behaviour::Pop(pop))
            }
            Provider::Tencent => {
                let pop = Pop::new(TENCENT_POP, &mut self.rng);
                self.define(&format!("www.{site}.cdn.dnsv1.com"), Behaviour::Pop(pop))
            }
            Provider::Qiniu => {
                let pop = Pop::new(QINIU_POP, &mut self.rng);
                let host = format!("{label}-{}.qiniudns.com", rand_str(&mut self.rng, ALNUM, 6));
                self.define(&host, Behaviour::Pop(pop))
            }
        }
    }

    /// A customer site on a CDN: `www.` (and sometimes `static.`) CNAMEd to the CDN target,
    /// or A records directly (Cloudflare).
    fn cdn_site(&mut self, provider: Provider) -> anyhow::Result<Vec<usize>> {
        let tlds: &[&str] = match provider {
            Provider::Alibaba | Provider::Tencent | Provider::Qiniu => &["cn", "com.cn", "com"],
            _ => &[
                "com", "com", "net", "org", "io", "de", "co.uk", "com.au", "fr", "nl", "jp",
            ],
        };
        let site = self.site_domain(tlds)?;
        let mut names = Vec::new();
        if provider == Provider::Cloudflare {
            let pop = Pop::new(CLOUDFLARE_POP, &mut self.rng);
            names.push(self.define(&format!("www.{site}"), Behaviour::Pop(pop))?);
            if self.rng.random_bool(0.5) {
                let pop = Pop::new(CLOUDFLARE_POP, &mut self.rng);
                names.push(self.define(&site, Behaviour::Pop(pop))?);
            }
            return Ok(names);
        }
        let target = self.cdn_target(provider, &site)?;
        let ttl = *[300, 600, 3600, 3600, 86400]
            .choose(&mut self.rng)
            .expect("non-empty");
        names.push(self.cname(&format!("www.{site}"), target, ttl)?);
        if self.rng.random_bool(0.3) {
            let sub = ["static", "img", "cdn", "assets"]
                .choose(&mut self.rng)
                .expect("non-empty");
            names.push(self.cname(&format!("{sub}.{site}"), target, ttl)?);
        }
        Ok(names)
    }

    fn gen_cdn(&mut self, n: usize) -> anyhow::Result<()> {
        let mut google = GOOGLE_NAMES.iter();
        let mut facebook = FACEBOOK_NAMES.iter();
        for i in 0..n {
            let names = match i % 10 {
                0 => self.cdn_site(Provider::Akamai)?,
                1 => self.cdn_site(Provider::CloudFront)?,
                2 => self.cdn_site(Provider::Fastly)?,
                3 => self.cdn_site(Provider::Cloudflare)?,
                4 => self.cdn_site(Provider::Alibaba)?,
                5 => self.cdn_site(Provider::Tencent)?,
                6 => self.cdn_site(Provider::Qiniu)?,
                7 => match google.next() {
                    Some(&(name, target, count)) => {
                        self.big_name(name, target, count, GOOGLE_POP)?
                    }
                    None => self.cdn_site(Provider::Akamai)?,
                },
                8 => match facebook.next() {
                    Some(&(name, target)) => self.big_name(name, target, 1, FACEBOOK_POP)?,
                    None => self.cdn_site(Provider::CloudFront)?,
                },
                _ => {
                    // bootstrapcdn-like: one name alternating between two CDNs.
                    let site = self.site_domain(&["com", "net", "io"])?;
                    let t1 = self.cdn_target(Provider::Fastly, &site)?;
                    let t2 = self.cdn_target(Provider::Cloudflare, &site)?;
                    let ttl = self.rng.random_range(30..=300);
                    vec![self.define(
                        &format!("cdn.{site}"),
                        Behaviour::MultiCname {
                            targets: vec![t1, t2],
                            ttl,
                            last: 0,
                        },
                    )?]
                }
            };
            self.instance(C_CDN, &names)?;
        }
        Ok(())
    }

    /// A Google/Facebook-like name: A records from the provider's own ASN, directly or through
    /// a CNAME to a shared target.
    fn big_name(
        &mut self,
        name: &str,
        target: Option<&str>,
        count: usize,
        spec: PopSpec,
    ) -> anyhow::Result<Vec<usize>> {
        let spec = PopSpec {
            nodes: (count, count),
            answer: (count, count),
            ..spec
        };
        let o = match target {
            None => {
                let pop = Pop::new(spec, &mut self.rng);
                self.define(name, Behaviour::Pop(pop))?
            }
            Some(t) => {
                let pop = Pop::new(spec, &mut self.rng);
                let ti = self.define_shared(t, |_| Behaviour::Pop(pop))?;
                let ttl = *[300, 3600, 86400].choose(&mut self.rng).expect("non-empty");
                self.cname(name, ti, ttl)?
            }
        };
        Ok(vec![o])
    }

    fn gen_cloud(&mut self, n: usize) -> anyhow::Result<()> {
        let elb_asns = self.spaces.usable(&AWS_ELB, "AWS")?;
        for i in 0..n {
            let site = self.site_domain(&["com", "com", "net", "io", "co", "de", "co.uk"])?;
            let label = site.replace('.', "-");
            let target = match i % 3 {
                0 => {
                    let region = *[
                        "us-east-1",
                        "us-west-2",
                        "eu-west-1",
                        "eu-central-1",
                        "ap-southeast-1",
                        "ap-northeast-1",
                    ]
                    .choose(&mut self.rng)
                    .expect("non-empty");
                    let prefix = if self.rng.random_bool(0.3) {
                        "internal-"
                    } else {
                        ""
                    };
                    let elb = format!(
                        "{prefix}{label}-{}-{}.{region}.elb.amazonaws.com",
                        ["web", "api", "prod", "lb"]
                            .choose(&mut self.rng)
                            .expect("x"),
                        self.rng.random_range(100_000_000u64..9_999_999_999)
                    );
                    let size = self.rng.random_range(4..=16);
                    self.define(
                        &elb,
                        Behaviour::Elb(Elb {
                            asns: elb_asns.clone(),
                            size,
                            nodes: Vec::new(),
                            next_change: 0.0,
                        }),
                    )?
                }
                1 => {
                    let region = *["westeurope", "eastus", "northeurope", "southeastasia"]
                        .choose(&mut self.rng)
                        .expect("non-empty");
                    let pop = Pop::new(AZURE_POP, &mut self.rng);
                    let app = self.define(
                        &format!("{label}-{region}.{region}.cloudapp.azure.com"),
                        Behaviour::Pop(pop),
                    )?;
                    if self.rng.random_bool(0.6) {
                        self.cname(&format!("{label}.trafficmanager.net"), app, 300)?
                    } else {
                        app
                    }
                }
                _ => {
                    let pop = Pop::new(GCP_POP, &mut self.rng);
                    let names = vec![self.define(&format!("www.{site}"), Behaviour::Pop(pop))?];
                    self.instance(C_CLOUD, &names)?;
                    continue;
                }
            };
            let mut names = vec![self.cname(&format!("www.{site}"), target, 300)?];
            if self.rng.random_bool(0.4) {
                names.push(self.cname(&format!("api.{site}"), target, 300)?);
            }
            self.instance(C_CLOUD, &names)?;
        }
        Ok(())
    }

    fn gen_multi(&mut self, n: usize) -> anyhow::Result<()> {
        let all = [
            Provider::Akamai,
            Provider::CloudFront,
            Provider::Fastly,
            Provider::Cloudflare,
        ];
        for _ in 0..n {
            let site = self.site_domain(&["com", "com", "net", "org", "co.uk", "de"])?;
            let mut providers = all.to_vec();
            providers.shuffle(&mut self.rng);
            providers.truncate(self.rng.random_range(2..=3));
            let ttl = *[30, 60, 120, 300].choose(&mut self.rng).expect("non-empty");
            let beh = if self.rng.random_bool(0.7) {
                let mut targets = Vec::new();
                for p in providers {
                    targets.push(self.cdn_target(p, &site)?);
                }
                Behaviour::MultiCname {
                    targets,
                    ttl,
                    last: 0,
                }
            } else {
                let pops = providers
                    .into_iter()
                    .map(|p| Pop::new(p.pop(), &mut self.rng))
                    .collect();
                Behaviour::MultiA { pops, ttl, last: 0 }
            };
            let names = vec![self.define(&format!("www.{site}"), beh)?];
            self.instance(C_MULTI, &names)?;
        }
        Ok(())
    }

    fn gen_round_robin(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let site = self.site_domain(&["com", "org", "net", "de", "edu", "ac.uk", "io"])?;
            let mut asns = self.hosting.clone();
            asns.shuffle(&mut self.rng);
            asns.truncate(self.rng.random_range(1..=3).min(asns.len()));
            // A server farm: the addresses sit in one or two /24s per provider.
            let size = self.rng.random_range(2..=16);
            let mut blocks = Vec::new();
            for &asn in &asns {
                for _ in 0..self.rng.random_range(1..=2) {
                    blocks.push(self.spaces.block(&mut self.rng, asn, false));
                }
            }
            let mut addrs: Vec<Ipv4Addr> = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let share = size / blocks.len() + usize::from(j < size % blocks.len());
                for a in self.spaces.hosts(&mut self.rng, *b, share) {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
            }
            addrs.shuffle(&mut self.rng);
            let subset = if addrs.len() > 3 && self.rng.random_bool(0.4) {
                Some(self.rng.random_range(2..addrs.len()))
            } else {
                None
            };
            let ttl = *[300, 600, 900, 1800, 3600]
                .choose(&mut self.rng)
                .expect("non-empty");
            let host = ["www", "mirror", "download", "ftp", "mail"]
                .choose(&mut self.rng)
                .expect("non-empty");
            let mut names = vec![self.define(
                &format!("{host}.{site}"),
                Behaviour::RoundRobin {
                    addrs: addrs.clone(),
                    subset,
                    ttl,
                    next: 0,
                },
            )?];
            if self.rng.random_bool(0.4) {
                names.push(self.define(
                    &site,
                    Behaviour::RoundRobin {
                        addrs,
                        subset,
                        ttl,
                        next: 0,
                    },
                )?);
            }
            self.instance(C_RR, &names)?;
        }
        Ok(())
    }

    fn gen_dyndns(&mut self, n: usize) -> anyhow::Result<()> {
        // Dynamic-DNS suffixes in the PSL private section: a host there is its own registered
        // domain.
        let suffixes: Vec<&str> = DYNDNS_SUFFIXES
            .iter()
            .copied()
            .filter(|s| {
                let h = format!("myhost.{s}");
                psl::domain_str(&h) == Some(h.as_str())
            })
            .collect();
        if suffixes.is_empty() {
            bail!("no dynamic-DNS suffix is a public suffix in this psl version");
        }
        for _ in 0..n {
            let suffix = *suffixes.choose(&mut self.rng).expect("non-empty");
            let host = self.fresh(|rng| {
                let w = WORDS.choose(rng).expect("non-empty");
                match rng.random_range(0..3) {
                    0 => format!("{w}{}.{suffix}", rng.random_range(1..1000)),
                    1 => format!("{w}-{}.{suffix}", rand_str(rng, LETTERS, 4)),
                    _ => format!("my{w}.{suffix}"),
                }
            })?;
            let asn = *self.residential.choose(&mut self.rng).expect("non-empty");
            let o = self.define(
                &host,
                Behaviour::DynDns {
                    asn,
                    addr: None,
                    next_change: 0.0,
                    ttl: 60,
                },
            )?;
            self.instance(C_DYN, &[o])?;
        }
        Ok(())
    }

    fn gen_ntp(&mut self, n: usize) -> anyhow::Result<()> {
        let zones = NTP_ZONES.len();
        if n > zones * 5 {
            bail!(
                "per_class {n} is more than the {} NTP pool names",
                zones * 5
            );
        }
        let mut pools: Vec<Option<Rc<Pool>>> = vec![None; zones];
        let everywhere: Vec<u32> = [EU, NA, ASIA, SA, MEA].concat();
        for i in 0..n {
            let z = i % zones;
            let (zone, region) = NTP_ZONES[z];
            if pools[z].is_none() {
                let region = self.spaces.usable(region, "NTP region")?;
                let all = self.spaces.usable(&everywhere, "NTP")?;
                let size = self.rng.random_range(300..=1000);
                let local = self.plain_pool(&region, size * 4 / 5, true);
                let far = self.plain_pool(&all, size / 5, true);
                let mut addrs = local.addrs.clone();
                addrs.extend(far.addrs.iter().copied());
                pools[z] = Some(Rc::new(Pool {
                    addrs,
                    avail: Vec::new(),
                    salt: self.rng.random(),
                }));
            }
            let pool = pools[z].clone().expect("set above");
            // 0.zone, 1.zone, 2.zone, 3.zone, then the zone apex.
            let name = match i / zones {
                v @ 0..=3 => format!("{v}.{zone}"),
                _ => zone.to_owned(),
            };
            let o = self.define(
                &name,
                Behaviour::Pick {
                    pool,
                    k: (4, 4),
                    ttl: 130,
                },
            )?;
            self.add_label("pool.ntp.org", C_NTP)?;
            self.instance(C_NTP, &[o])?;
        }
        Ok(())
    }

    fn gen_seed(&mut self, n: usize) -> anyhow::Result<()> {
        let mut names: Vec<(usize, String)> = DNS_SEEDS
            .iter()
            .enumerate()
            .map(|(i, s)| (i, (*s).to_owned()))
            .collect();
        // Service-bit filtered subdomains of the Bitcoin seeds (x9.seed.bitcoin.sipa.be).
        for flag in ["x9", "x1", "x5", "xd", "x49", "x809", "x849", "x409"] {
            for (i, s) in DNS_SEEDS.iter().enumerate().take(BITCOIN_SEEDS) {
                names.push((i, format!("{flag}.{s}")));
            }
        }
        if n > names.len() {
            bail!(
                "per_class {n} is more than the {} DNS seed names",
                names.len()
            );
        }
        let mut pools: Vec<Option<Rc<Pool>>> = vec![None; DNS_SEEDS.len()];
        let mut mixed = self.hosting.clone();
        mixed.extend(self.residential.iter().copied());
        for (seed, name) in names.into_iter().take(n) {
            if pools[seed].is_none() {
                let size = self.rng.random_range(500..=3000);
                pools[seed] = Some(self.plain_pool(&mixed, size, false));
            }
            let pool = pools[seed].clone().expect("set above");
            let o = self.define(
                &name,
                Behaviour::Pick {
                    pool,
                    k: (20, 25),
                    ttl: 60,
                },
            )?;
            self.instance(C_SEED, &[o])?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    Akamai,
    CloudFront,
    Fastly,
    Cloudflare,
    Alibaba,
    Tencent,
    Qiniu,
}

impl Provider {
    fn pop(self) -> PopSpec {
        match self {
            Provider::Akamai => AKAMAI_POP,
            Provider::CloudFront => CLOUDFRONT_POP,
            Provider::Fastly => FASTLY_POP,
            Provider::Cloudflare => CLOUDFLARE_POP,
            Provider::Alibaba => ALIBABA_POP,
            Provider::Tencent => TENCENT_POP,
            Provider::Qiniu => QINIU_POP,
        }
    }
}

/// Google-like names: (name, CNAME target, addresses per answer).
const GOOGLE_NAMES: &[(&str, Option<&str>, usize)] = &[
    ("www.google.com", None, 1),
    ("www.youtube.com", Some("youtube-ui.l.google.com"), 6),
    ("mail.google.com", Some("googlemail.l.google.com"), 1),
    ("www.gstatic.com", None, 1),
    ("fonts.googleapis.com", Some("googleapis.l.google.com"), 1),
    ("clients1.google.com", Some("clients.l.google.com"), 1),
    ("www.google.de", None, 1),
    ("www.google.co.jp", None, 1),
    ("i.ytimg.com", None, 6),
    (
        "yt3.ggpht.com",
        Some("photos-ugc.l.googleusercontent.com"),
        1,
    ),
    (
        "www.googletagmanager.com",
        Some("www-googletagmanager.l.google.com"),
        1,
    ),
    (
        "ssl.google-analytics.com",
        Some("ssl-google-analytics.l.google.com"),
        1,
    ),
    ("www.blogger.com", Some("blogger.l.google.com"), 1),
    ("drive.google.com", None, 1),
    ("play.google.com", None, 1),
];

/// Facebook-like names: (name, CNAME target).
const FACEBOOK_NAMES: &[(&str, Option<&str>)] = &[
    ("www.facebook.com", Some("star-mini.c10r.facebook.com")),
    ("static.xx.fbcdn.net", None),
    (
        "www.instagram.com",
        Some("z-p42-instagram.c10r.instagram.com"),
    ),
    ("graph.facebook.com", Some("star.c10r.facebook.com")),
    ("www.messenger.com", Some("star-mini.c10r.facebook.com")),
    ("connect.facebook.net", Some("scontent.xx.fbcdn.net")),
    ("edge-chat.facebook.com", Some("star.c10r.facebook.com")),
    ("web.whatsapp.com", Some("mmx-ds.cdn.whatsapp.net")),
];

const DYNDNS_SUFFIXES: &[&str] = &[
    "duckdns.org",
    "ddns.net",
    "hopto.org",
    "dynu.net",
    "no-ip.biz",
    "no-ip.org",
    "freeddns.org",
    "zapto.org",
    "sytes.net",
    "myftp.org",
    "dyndns.org",
    "dynv6.net",
    "ddnsfree.com",
    "homeip.net",
    "gotdns.ch",
];

/// NTP pool zones and the region most of their servers are in.
const NTP_ZONES: &[(&str, &[u32])] = &[
    ("pool.ntp.org", EU),
    ("europe.pool.ntp.org", EU),
    ("north-america.pool.ntp.org", NA),
    ("asia.pool.ntp.org", ASIA),
    ("south-america.pool.ntp.org", SA),
    ("de.pool.ntp.org", EU),
    ("us.pool.ntp.org", NA),
    ("fr.pool.ntp.org", EU),
    ("uk.pool.ntp.org", EU),
    ("nl.pool.ntp.org", EU),
    ("ru.pool.ntp.org", EU),
    ("jp.pool.ntp.org", ASIA),
    ("cn.pool.ntp.org", ASIA),
    ("br.pool.ntp.org", SA),
    ("ca.pool.ntp.org", NA),
    ("au.pool.ntp.org", ASIA),
    ("it.pool.ntp.org", EU),
    ("es.pool.ntp.org", EU),
    ("se.pool.ntp.org", EU),
    ("ch.pool.ntp.org", EU),
    ("pl.pool.ntp.org", EU),
    ("at.pool.ntp.org", EU),
    ("be.pool.ntp.org", EU),
    ("cz.pool.ntp.org", EU),
    ("kr.pool.ntp.org", ASIA),
    ("tw.pool.ntp.org", ASIA),
    ("in.pool.ntp.org", ASIA),
    ("sg.pool.ntp.org", ASIA),
    ("mx.pool.ntp.org", NA),
    ("ar.pool.ntp.org", SA),
    ("za.pool.ntp.org", MEA),
    ("tr.pool.ntp.org", MEA),
    ("ae.pool.ntp.org", MEA),
    ("ir.pool.ntp.org", MEA),
    ("debian.pool.ntp.org", EU),
    ("centos.pool.ntp.org", NA),
    ("fedora.pool.ntp.org", NA),
    ("android.pool.ntp.org", NA),
    ("freebsd.pool.ntp.org", EU),
    ("openwrt.pool.ntp.org", EU),
    ("arch.pool.ntp.org", EU),
    ("opensuse.pool.ntp.org", EU),
];

/// The first [`BITCOIN_SEEDS`] serve service-bit subdomains (`x9.`).
const BITCOIN_SEEDS: usize = 9;
const DNS_SEEDS: &[&str] = &[
    "seed.bitcoin.sipa.be",
    "dnsseed.bluematt.me",
    "dnsseed.bitcoin.dashjr.org",
    "seed.bitcoinstats.com",
    "seed.bitcoin.jonasschnelli.ch",
    "seed.btc.petertodd.net",
    "seed.bitcoin.sprovoost.nl",
    "dnsseed.emzy.de",
    "seed.bitcoin.wiz.biz",
    "testnet-seed.bitcoin.jonasschnelli.ch",
    "seed.tbtc.petertodd.net",
    "seed.testnet.bitcoin.sprovoost.nl",
    "testnet-seed.bluematt.me",
    "seed-a.litecoin.loshan.co.uk",
    "dnsseed.thrasher.io",
    "dnsseed.litecointools.com",
    "dnsseed.litecoinpool.org",
    "dnsseed.koin-project.com",
    "seed.multidoge.org",
    "seed2.multidoge.org",
    "dnsseed.dash.org",
    "dnsseed.dashdot.io",
    "dnsseed.z.cash",
    "dnsseed.str4d.xyz",
    "mainnet.seeder.zfnd.org",
    "seed.bitcoinabc.org",
    "seed-abc.bitcoinforks.org",
    "btccash-seeder.bitcoinunlimited.info",
    "seed.bchd.cash",
];

// --- simulation -----------------------------------------------------------------------------

struct Resolver {
    /// Per owner: the cached RRset and when it was fetched.
    cache: Vec<Option<(RRset, f64)>>,
    /// Per zone: when its NS RRset was fetched.
    ns_cache: Vec<Option<f64>>,
}

fn is_fresh(fetched: f64, ttl: u32, now: f64) -> bool {
    now < fetched + f64::from(ttl)
}

fn remaining(fetched: f64, ttl: u32, now: f64) -> u32 {
    ttl.saturating_sub((now - fetched) as u32).max(1)
}

impl Gen {
    fn lookup(&mut self, res: &mut Resolver, owner: usize, now: f64) -> (RRset, u32) {
        if let Some((rr, at)) = &res.cache[owner]
            && is_fresh(*at, rr.ttl, now)
        {
            return (rr.clone(), remaining(*at, rr.ttl, now));
        }
        let mut cx = Cx {
            rng: &mut self.rng,
            spaces: &mut self.spaces,
        };
        let rr = self.owners[owner]
            .beh
            .as_mut()
            .expect("every owner has a behaviour (checked)")
            .fetch(now, &mut cx);
        let ttl = rr.ttl;
        res.cache[owner] = Some((rr.clone(), now));
        (rr, ttl)
    }

    /// The resolver's response to the client's query of `qowner` at `now`.
    fn respond(&mut self, res: &mut Resolver, qowner: usize, now: f64) -> anyhow::Result<Vec<u8>> {
        let mut m = Message::new();
        m.set_id(self.rng.random())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .set_recursion_available(true)
            .set_response_code(ResponseCode::NoError);
        m.add_query(Query::query(
            self.owners[qowner].fqdn.clone(),
            RecordType::A,
        ));
        let mut cur = qowner;
        for _ in 0..8 {
            let (rr, ttl) = self.lookup(res, cur, now);
            let name = self.owners[cur].fqdn.clone();
            match rr.data {
                Data::Cname(t) => {
                    m.add_answer(Record::from_rdata(
                        name,
                        ttl,
                        RData::CNAME(CNAME(self.owners[t].fqdn.clone())),
                    ));
                    cur = t;
                }
                Data::A(addrs) => {
                    for a in addrs {
                        m.add_answer(Record::from_rdata(name.clone(), ttl, RData::A(A(a))));
                    }
                    break;
                }
            }
        }
        if let Some(z) = self.owners[cur].zone {
            let zttl = self.zones[z].ttl;
            let at = match res.ns_cache[z] {
                Some(at) if is_fresh(at, zttl, now) => at,
                _ => {
                    res.ns_cache[z] = Some(now);
                    now
                }
            };
            let rem = remaining(at, zttl, now);
            let hosts = self.zones[z].hosts.clone();
            for &h in &hosts {
                m.add_name_server(Record::from_rdata(
                    self.zones[z].apex.clone(),
                    rem,
                    RData::NS(NS(self.owners[h].fqdn.clone())),
                ));
            }
            for &h in &hosts {
                let (rr, ttl) = self.lookup(res, h, now);
                if let Data::A(addrs) = rr.data {
                    for a in addrs {
                        m.add_additional(Record::from_rdata(
                            self.owners[h].fqdn.clone(),
                            ttl,
                            RData::A(A(a)),
                        ));
                    }
                }
            }
        }
        m.to_vec().context("encode DNS response")
    }
}

/// Builds every scenario and simulates the queries: the responses (time-sorted), the labels
/// and the summary. [`generate`] writes them out.
pub fn simulate(
    cfg: &GenConfig,
    enr: &Enricher,
) -> anyhow::Result<(Vec<Response>, Vec<Label>, Summary)> {
    if cfg.per_class == 0 {
        bail!("per_class must be at least 1");
    }
    let mut all_asns: Vec<u32> = Vec::new();
    for l in [
        &RESIDENTIAL_ASNS[..],
        &HOSTING_ASNS,
        &CN_ISP_ASNS,
        &AKAMAI,
        &AMAZON,
        &AWS_ELB,
        &FASTLY,
        &CLOUDFLARE,
        &ALIBABA,
        &TENCENT,
        &QINIU,
        &GOOGLE,
        &GCP,
        &FACEBOOK,
        &AZURE,
        EU,
        NA,
        ASIA,
        SA,
        MEA,
    ] {
        all_asns.extend_from_slice(l);
    }
    all_asns.extend(extra::asns());
    let spaces = Spaces::load(enr, &all_asns);
    let residential = spaces.usable(&RESIDENTIAL_ASNS, "residential")?;
    let hosting = spaces.usable(&HOSTING_ASNS, "hosting")?;
    for (list, what) in [
        (&AKAMAI[..], "Akamai"),
        (&AMAZON, "Amazon"),
        (&FASTLY, "Fastly"),
        (&CLOUDFLARE, "Cloudflare"),
        (&GOOGLE, "Google"),
        (&GCP, "GCP"),
        (&FACEBOOK, "Facebook"),
        (&AZURE, "Azure"),
        (&CN_ISP_ASNS, "Chinese ISP"),
    ] {
        spaces.usable(list, what)?;
    }
    let mut alt = ChaCha8Rng::seed_from_u64(cfg.seed);
    alt.set_stream(ALT_STREAM);
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        alt,
        spaces,
        owners: Vec::new(),
        by_name: HashMap::new(),
        zones: Vec::new(),
        queries: Vec::new(),
        labels: BTreeMap::new(),
        used: HashSet::new(),
        stats: CLASSES
            .iter()
            .map(|&(_, truth)| ClassSummary {
                truth,
                instances: 0,
                names: 0,
                labels: 0,
                responses: 0,
            })
            .collect(),
        residential,
        hosting,
    };
    // Well-known names first so random customer names never take them.
    let well_known = GOOGLE_NAMES
        .iter()
        .map(|&(n, t, _)| (n, t))
        .chain(FACEBOOK_NAMES.iter().copied());
    for (name, target) in well_known {
        for n in std::iter::once(name).chain(target) {
            g.used.insert(registered(n)?.to_owned());
        }
    }
    let n = cfg.per_class;
    g.gen_residential(n)?;
    g.gen_hosting(n)?;
    g.gen_slow(n)?;
    g.gen_double(n)?;
    g.gen_cdn(n)?;
    g.gen_cloud(n)?;
    g.gen_multi(n)?;
    g.gen_round_robin(n)?;
    g.gen_dyndns(n)?;
    g.gen_ntp(n)?;
    g.gen_seed(n)?;
    g.gen_extra(n)?;
    if let Some(o) = g.owners.iter().find(|o| o.beh.is_none()) {
        bail!("{} is referenced but has no behaviour", o.name);
    }

    // Lookup times per queried name.
    let horizon = cfg.duration.as_secs_f64();
    let mut events: Vec<(f64, usize)> = Vec::new();
    for (qi, q) in g.queries.iter().enumerate() {
        let rng = if q.class >= FIRST_ALT_CLASS {
            &mut g.alt
        } else {
            &mut g.rng
        };
        q.sched.times(rng, horizon, |t| events.push((t, qi)));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));

    let start = cfg
        .start
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("start before 1970")?;
    let mut res = Resolver {
        cache: (0..g.owners.len()).map(|_| None).collect(),
        ns_cache: vec![None; g.zones.len()],
    };
    let mut out = Vec::with_capacity(events.len());
    for (t, qi) in events {
        let (owner, class) = (g.queries[qi].owner, g.queries[qi].class);
        // A later class's lookups draw from its own stream (its names reach only its own
        // owners), so the earlier classes' responses stay as they were.
        let alt = class >= FIRST_ALT_CLASS;
        if alt {
            g.swap_streams();
        }
        let payload = g.respond(&mut res, owner, t);
        let port = g.rng.random_range(1024..=65535);
        if alt {
            g.swap_streams();
        }
        g.stats[class].responses += 1;
        out.push(Response {
            ts: start + Duration::from_secs_f64(t),
            resolver: IpAddr::V4(pcapw::RESOLVER),
            port,
            payload: payload?,
        });
    }

    let labels: Vec<Label> = g.labels.values().cloned().collect();
    let summary = Summary {
        classes: CLASSES
            .iter()
            .zip(&g.stats)
            .map(|(&(c, _), s)| (c.to_owned(), s.clone()))
            .collect(),
        responses: out.len(),
        labels: labels.len(),
        first: out.first().map(|r| SystemTime::UNIX_EPOCH + r.ts),
        last: out.last().map(|r| SystemTime::UNIX_EPOCH + r.ts),
        dropped_asns: g.spaces.dropped.clone(),
        asn_sample: g.spaces.sample.clone(),
    };
    Ok((out, labels, summary))
}

/// Generates the scenarios: writes `out_dir/scenarios.pcap` and `out_dir/labels.tsv`.
pub fn generate(cfg: &GenConfig, enr: &Enricher, out_dir: &Path) -> anyhow::Result<Summary> {
    let (mut responses, labels, summary) = simulate(cfg, enr)?;
    fs::create_dir_all(out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    pcapw::write_pcap(&out_dir.join("scenarios.pcap"), &mut responses)?;
    let start = cfg
        .start
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = format!(
        "flux_tests::eval::scenarios: seed {}, per_class {}, duration {} s, start {} s after the epoch",
        cfg.seed,
        cfg.per_class,
        cfg.duration.as_secs(),
        start
    );
    write_labels(&out_dir.join("labels.tsv"), &[&header], &labels)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::eval::labels::{LabelIndex, read_labels};

    /// The real ASN database from `$FLUX_AGENT_DB_DIR` (or the default dir), if present.
    fn enricher() -> Option<Enricher> {
        let dir = flux_detect::enrich::default_db_dir();
        if !dir.join("asn-ipv4.csv").is_file() && !dir.join("asn-ipv4.csv.gz").is_file() {
            eprintln!(
                "SKIPPED: no asn-ipv4.csv in {} (set FLUX_AGENT_DB_DIR)",
                dir.display()
            );
            return None;
        }
        Some(Enricher::load_dir(&dir).expect("load the ASN database"))
    }

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("flux-eval-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn small() -> GenConfig {
        GenConfig {
            seed: 7,
            per_class: 3,
            duration: Duration::from_secs(1800),
            ..GenConfig::default()
        }
    }

    #[test]
    fn eval_scenarios_deterministic_and_complete() {
        let Some(enr) = enricher() else { return };
        let (a, b) = (tmp("gen-a"), tmp("gen-b"));
        let sa = generate(&small(), &enr, &a).unwrap();
        let sb = generate(&small(), &enr, &b).unwrap();
        assert_eq!(sa, sb);
        for f in ["scenarios.pcap", "labels.tsv"] {
            assert!(
                fs::read(a.join(f)).unwrap() == fs::read(b.join(f)).unwrap(),
                "{f} differs between two runs with the same seed"
            );
        }
        let other = generate(&GenConfig { seed: 8, ..small() }, &enr, &b).unwrap();
        assert_ne!(
            fs::read(a.join("scenarios.pcap")).unwrap(),
            fs::read(b.join("scenarios.pcap")).unwrap()
        );
        assert_eq!(other.classes.len(), CLASSES.len());

        // Every class present, with instances, names, labels and responses.
        eprintln!("{sa}");
        for (c, truth) in CLASSES {
            let s = &sa.classes[c];
            assert_eq!(s.truth, truth);
            assert!(s.instances >= 3, "{c}: {s:?}");
            assert!(
                s.names >= 3 && s.labels >= 1 && s.responses > 0,
                "{c}: {s:?}"
            );
        }
        let labels = read_labels(&a.join("labels.tsv")).unwrap();
        assert_eq!(labels.len(), sa.labels);
        let idx = LabelIndex::new(labels.clone());

        // Every response parses, in time order, and every name in it is labelled with a
        // label psl agrees with.
        let frames = pcapw::read_udp_payloads(&a.join("scenarios.pcap")).unwrap();
        assert_eq!(frames.len(), sa.responses);
        assert!(frames.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut by_class: BTreeMap<String, usize> = BTreeMap::new();
        for (_, p) in &frames {
            let m = flux_detect::dns::parse_response(p, false).expect("generated response parses");
            assert!(!m.incomplete);
            assert!(m.answers.iter().any(|r| r.rtype == "A"), "{m:?}");
            let l = idx
                .label_for(&m.qname)
                .unwrap_or_else(|| panic!("{} unlabelled", m.qname));
            *by_class.entry(l.class.clone()).or_default() += 1;
            for r in m.answers.iter().chain(&m.authority).chain(&m.additional) {
                let reg = psl::domain_str(&r.name).unwrap();
                assert!(
                    labels.iter().any(|l| l.domain == reg),
                    "{} ({reg}) has no label",
                    r.name
                );
            }
        }
        assert!(labels.iter().any(|l| l.domain == "ntp.org"));
        assert!(labels.iter().any(|l| l.domain == "pool.ntp.org"));

        // Sampled addresses map back to the ASN they were drawn from.
        assert!(sa.asn_sample.len() > 50);
        let bad: Vec<_> = sa
            .asn_sample
            .iter()
            .filter(|(ip, asn)| enr.lookup(IpAddr::V4(*ip)).asn != Some(*asn))
            .collect();
        assert!(bad.is_empty(), "addresses outside their ASN: {bad:?}");

        let _ = fs::remove_dir_all(&a);
        let _ = fs::remove_dir_all(&b);
    }

    #[test]
    fn eval_scenarios_class_addresses() {
        let Some(enr) = enricher() else { return };
        let (responses, labels, _) = simulate(&small(), &enr).unwrap();
        let idx = LabelIndex::new(labels);
        let hosting: HashSet<u32> = HOSTING_ASNS.into_iter().collect();
        let residential: HashSet<u32> = RESIDENTIAL_ASNS.into_iter().collect();
        let mut checked = 0;
        for r in &responses {
            let m = flux_detect::dns::parse_response(&r.payload, false).unwrap();
            let class = idx.label_for(&m.qname).unwrap().class.clone();
            let want = match class.as_str() {
                "flux-hosting" => &hosting,
                "flux-residential" | "flux-slow" | "dyndns" => &residential,
                _ => continue,
            };
            for a in m.answers.iter().filter(|a| a.rtype == "A") {
                let ip: IpAddr = a.addr.unwrap();
                let asn = enr.lookup(ip).asn.expect("address has an ASN");
                assert!(want.contains(&asn), "{class} {} in AS{asn}", m.qname);
                checked += 1;
            }
            if class == "flux-slow" {
                assert_eq!(m.answers.iter().filter(|a| a.rtype == "A").count(), 1);
            }
        }
        assert!(checked > 100, "{checked}");
    }

    /// The later classes: answers from the intended ASNs, answer sizes, TTLs and chains as
    /// modelled, and the flux domain sharing an anycast hosting address.
    #[test]
    fn eval_scenarios_extra_class_addresses() {
        use extra::*;
        let Some(enr) = enricher() else { return };
        let (responses, labels, summary) = simulate(&small(), &enr).unwrap();
        let idx = LabelIndex::new(labels);
        let set = |lists: &[&[u32]]| -> HashSet<u32> {
            lists.iter().flat_map(|l| l.iter().copied()).collect()
        };
        let eyeball: Vec<u32> = EYEBALL_COUNTRIES
            .iter()
            .flat_map(|(_, l)| l.iter().copied())
            .collect();
        let anycast_asns: Vec<u32> = ANYCAST_PROVIDERS
            .iter()
            .flat_map(|(l, _)| l.iter().copied())
            .collect();
        let parking_asns: Vec<u32> = PARKING_PROVIDERS
            .iter()
            .flat_map(|(l, _)| l.iter().copied())
            .collect();
        let want: HashMap<&str, HashSet<u32>> = HashMap::from([
            (
                "isp-cache",
                set(&[
                    &eyeball,
                    &APPLE,
                    &VALVE,
                    &MICROSOFT,
                    &NETFLIX,
                    &GOOGLE_GGC,
                    &AKAMAI,
                ]),
            ),
            ("anycast-hosting", set(&[&anycast_asns])),
            ("flux-shared", set(&[&RESIDENTIAL_ASNS, &anycast_asns])),
            (
                "redirect-cdn",
                set(&[&CN_REDIRECT_ASNS, &TENCENT, &ALIBABA]),
            ),
            ("parking", set(&[&parking_asns])),
            ("flux-modern", set(&[&RESIDENTIAL_ASNS, &eyeball])),
            ("flux-bulletproof", set(&[&BULLETPROOF_ASNS])),
        ]);
        // Per class: responses checked, distinct addresses.
        let mut seen: HashMap<String, (usize, HashSet<IpAddr>)> = HashMap::new();
        let mut shared_answers: Vec<Vec<IpAddr>> = Vec::new();
        for r in &responses {
            let m = flux_detect::dns::parse_response(&r.payload, false).unwrap();
            let class = idx.label_for(&m.qname).unwrap().class.clone();
            let Some(asns) = want.get(class.as_str()) else {
                continue;
            };
            let a: Vec<_> = m.answers.iter().filter(|a| a.rtype == "A").collect();
            let cnames = m.answers.iter().filter(|a| a.rtype == "CNAME").count();
            for rec in &a {
                let ip = rec.addr.unwrap();
                let asn = enr.lookup(ip).asn.expect("address has an ASN");
                assert!(asns.contains(&asn), "{class} {} {ip} in AS{asn}", m.qname);
            }
            let ttl = a[0].ttl;
            let (n, ttl_max) = (a.len(), |max: u32| assert!(ttl <= max, "{class} ttl {ttl}"));
            match class.as_str() {
                "isp-cache" => {
                    assert!((1..=4).contains(&n), "{m:?}");
                    ttl_max(300);
                }
                "anycast-hosting" => {
                    assert!((1..=4).contains(&n), "{m:?}");
                    ttl_max(3600);
                }
                "redirect-cdn" => {
                    assert!((2..=4).contains(&cnames), "CDN names {m:?}");
                    assert!((2..=8).contains(&n), "{m:?}");
                    ttl_max(600);
                }
                "parking" => {
                    assert!((1..=2).contains(&n), "{m:?}");
                    ttl_max(3600);
                }
                "flux-modern" => {
                    assert!((1..=3).contains(&n), "{m:?}");
                    ttl_max(1800);
                }
                "flux-bulletproof" => {
                    assert!((1..=4).contains(&n), "{m:?}");
                    ttl_max(900);
                }
                "flux-shared" => {
                    shared_answers.push(a.iter().map(|r| r.addr.unwrap()).collect());
                }
                _ => {}
            }
            let e = seen.entry(class).or_default();
            e.0 += 1;
            e.1.extend(a.iter().map(|r| r.addr.unwrap()));
        }
        for c in want.keys() {
            assert!(seen.get(*c).is_some_and(|s| s.0 > 0), "{c}: no responses");
        }
        // One anycast group here: hundreds of domains on at most 4 addresses.
        let hosting = &seen["anycast-hosting"];
        assert!(hosting.1.len() <= 4, "{:?}", hosting.1);
        assert!(summary.classes["anycast-hosting"].labels >= 300);
        // A flux answer carries one of those anycast addresses.
        assert!(
            shared_answers
                .iter()
                .any(|a| a.len() > 1 && a.iter().any(|ip| hosting.1.contains(ip))),
            "no flux-shared answer with an anycast address"
        );
        // ISP caches: several access ISPs answer one vendor's names.
        let isp_asns: HashSet<u32> = seen["isp-cache"]
            .1
            .iter()
            .filter_map(|ip| enr.lookup(*ip).asn)
            .filter(|a| eyeball.contains(a))
            .collect();
        assert!(isp_asns.len() >= 2, "{isp_asns:?}");
        // Vendor names aggregate under the vendor's registered domain.
        assert!(
            idx.label_for("swcdn.apple.com")
                .is_some_and(|l| l.class == "isp-cache")
        );
    }

    #[test]
    fn eval_scenarios_dyndns_suffixes_are_private() {
        for s in DYNDNS_SUFFIXES {
            let h = format!("myhost.{s}");
            assert_eq!(psl::domain_str(&h), Some(h.as_str()), "{s}");
        }
    }
}
