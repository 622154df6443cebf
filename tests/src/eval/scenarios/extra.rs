//! The classes added after the first eleven: legitimate services that a flux scorer keyed on
//! registered domains flags on real resolver traffic (ISP-embedded caches, anycast shared
//! hosting, Chinese redirect CDNs, parking), and three more flux styles (a flux domain whose
//! answers include an anycast hosting address, residential proxies with long TTLs, bulletproof
//! hosting rotating over rented networks).
//!
//! They draw from [`Gen::alt`], a random stream of their own, so that a seed gives the same
//! responses for the earlier classes as before they were added. Their lookup schedules, pool
//! sizes, TTLs and rates are drawn per instance or per name from wide ranges.

use std::{net::Ipv4Addr, rc::Rc};

use anyhow::bail;
use rand::{Rng, seq::IndexedRandom as _, seq::SliceRandom as _};
use rand_chacha::ChaCha8Rng;

use super::{
    AKAMAI, ALIBABA, ALNUM, AMAZON, AWS_ELB, Behaviour, C_ANYCAST, C_BULLETPROOF, C_FLUX_SHARED,
    C_ISP_CACHE, C_MODERN, C_PARKING, C_REDIRECT, CLOUDFLARE, FASTLY, GCP, Gen, LETTERS, Pool,
    QName, RESIDENTIAL_ASNS, TENCENT, WORDS, rand_str,
};

// --- ASNs -----------------------------------------------------------------------------------

/// Eyeball (access) ISPs per country: where ISP-embedded caches sit. A vantage point sees the
/// caches of its own country's ISPs, plus a few fallbacks abroad.
pub(super) const EYEBALL_COUNTRIES: &[(&str, &[u32])] = &[
    ("de", &[3320, 3209, 6805, 8881, 8422]),
    ("us", &[7922, 7018, 701, 20115, 22773, 20001, 209]),
    ("gb", &[5089, 2856, 5607, 13285]),
    ("fr", &[3215, 12322, 5410, 15557]),
    ("br", &[28573, 27699, 26599, 8167, 18881]),
    ("jp", &[4713, 2516, 17676, 2527]),
    ("in", &[9829, 45609, 24560, 55836]),
];
pub(super) const APPLE: [u32; 2] = [714, 6185];
pub(super) const VALVE: [u32; 1] = [32590];
pub(super) const MICROSOFT: [u32; 1] = [8075];
pub(super) const NETFLIX: [u32; 2] = [2906, 40027];
/// Google's own ASNs, where Google Global Cache falls back to outside the ISPs.
pub(super) const GOOGLE_GGC: [u32; 2] = [15169, 36040];
/// Microsoft's content comes from its own network and from Akamai.
const MICROSOFT_AKAMAI: [u32; 3] = [8075, 20940, 16625];

/// Chinese ISPs (China Telecom 4134/4812/23724/58563, Unicom 4837/17621/17816/4808, Mobile
/// 9808/56040/56041/56046/24400, CERNET 4538): where Chinese CDNs and anti-DDoS services put
/// their nodes.
pub(super) const CN_REDIRECT_ASNS: [u32; 14] = [
    4134, 4812, 23724, 58563, 4837, 17621, 17816, 4808, 9808, 56040, 56041, 56046, 24400, 4538,
];

/// Hosting ASNs of the kind bulletproof services rent networks from (small offshore hosters
/// and large VPS/dedicated providers).
pub(super) const BULLETPROOF_ASNS: [u32; 14] = [
    210644, 57043, 200019, 56630, 399629, 9009, 49505, 202425, 206728, 48693, 44477, 9123, 48282,
    197695,
];

/// Anycast shared-hosting providers: the ASN, the shared name customers CNAME `www` to (`#` is
/// the instance group's number), when there is one.
pub(super) const ANYCAST_PROVIDERS: &[(&[u32], Option<&str>)] = &[
    (&[58182], Some("balancer#.wixdns.net")),
    (&[53831], Some("ext-sq#.squarespace.com")),
    (&[2635], Some("lb#.wordpress.com")),
    (&CLOUDFLARE, Some("shops#.myshopify.com")),
    (&AMAZON, Some("apex-loadbalancer#.netlify.com")),
    (&[26496], None),
    (&FASTLY, None),
];

/// Parking providers: one or two ASNs; `true` when their few addresses are spread over the
/// ASN's ranges (elastic cloud addresses) rather than in one /24.
pub(super) const PARKING_PROVIDERS: &[(&[u32], bool)] = &[
    (&[47846], false),        // Sedo
    (&[61969], false),        // Team Internet (ParkingCrew)
    (&[133618], false),       // Trellian (Above)
    (&AWS_ELB, true),         // parking on AWS
    (&[26496, 396982], true), // GoDaddy, its parking on Google Cloud
];

/// Every ASN the classes here may draw from (loaded up front).
pub(super) fn asns() -> Vec<u32> {
    let mut v: Vec<u32> = EYEBALL_COUNTRIES
        .iter()
        .flat_map(|(_, l)| l.iter().copied())
        .collect();
    for l in [
        &APPLE[..],
        &VALVE,
        &MICROSOFT,
        &NETFLIX,
        &GOOGLE_GGC,
        &MICROSOFT_AKAMAI,
        &AKAMAI,
        &CN_REDIRECT_ASNS,
        &BULLETPROOF_ASNS,
        &TENCENT,
        &ALIBABA,
        &GCP,
    ] {
        v.extend_from_slice(l);
    }
    for (l, _) in ANYCAST_PROVIDERS {
        v.extend_from_slice(l);
    }
    for (l, _) in PARKING_PROVIDERS {
        v.extend_from_slice(l);
    }
    v
}

// --- lookup schedules -----------------------------------------------------------------------

/// When a client looks a name up.
#[derive(Clone, Copy, Debug)]
pub(super) enum Schedule {
    /// Poisson arrivals with this mean interval (s).
    Poisson(f64),
    /// Every `period` s, each interval off by up to the fraction `jitter` of it: a polling
    /// client (an updater, a widget, a health check).
    Periodic { period: f64, jitter: f64 },
    /// Sessions arriving as a Poisson process (mean gap `gap` s), each of `size` lookups with
    /// exponential gaps of mean `spacing` s: a page load, a video, a game download.
    Bursts {
        gap: f64,
        size: (usize, usize),
        spacing: f64,
    },
}

/// An exponential draw with mean `mean`.
fn exp(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

/// A log-uniform draw from `lo..hi`.
fn log_uniform(rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi / lo).ln()).exp()
}

impl Schedule {
    /// Calls `push` with every lookup time in `0..horizon`.
    pub(super) fn times(&self, rng: &mut ChaCha8Rng, horizon: f64, mut push: impl FnMut(f64)) {
        match *self {
            Schedule::Poisson(mean) => {
                // The draws of the original generator, unchanged.
                let mut t = 0.0;
                loop {
                    t += -mean * (1.0 - rng.random::<f64>()).ln();
                    if t >= horizon {
                        break;
                    }
                    push(t);
                }
            }
            Schedule::Periodic { period, jitter } => {
                let mut t = rng.random::<f64>() * period;
                while t < horizon {
                    push(t);
                    t += period * (1.0 + jitter * (2.0 * rng.random::<f64>() - 1.0));
                }
            }
            Schedule::Bursts { gap, size, spacing } => {
                let mut t = exp(rng, gap);
                while t < horizon {
                    let mut u = t;
                    for _ in 0..rng.random_range(size.0..=size.1) {
                        if u >= horizon {
                            break;
                        }
                        push(u);
                        u += exp(rng, spacing);
                    }
                    t += exp(rng, gap);
                }
            }
        }
    }
}

/// Mean intervals of frequently looked-up names' Poisson lookups (s): every 10 s (a busy
/// household's favourite) to every half hour.
const POISSON_MEAN: (f64, f64) = (10.0, 1800.0);
/// Polling periods (s): every 30 s to every 20 min.
const POLL_PERIOD: (f64, f64) = (30.0, 1200.0);
/// At most this fraction of a polling period of jitter (timers are not exact).
const POLL_JITTER_MAX: f64 = 0.2;
/// Mean gaps between bursts (s): 5 min to 2 h.
const BURST_GAP: (f64, f64) = (300.0, 7200.0);
/// Lookups per burst: a page with a few assets to a download or a video of dozens of chunks.
const BURST_SIZE_MAX: (usize, usize) = (2, 30);
/// Mean spacing of lookups inside a burst (s): sub-second page loads to a 20 s video segment.
const BURST_SPACING: (f64, f64) = (0.5, 20.0);
/// Mean intervals of rarely looked-up names (s): the long tail, from every half hour to every
/// 4 h (many such names are seen once or twice in a 6 h run, some never).
const RARE_MEAN: (f64, f64) = (1800.0, 4.0 * 3600.0);

// --- behaviours -----------------------------------------------------------------------------

/// Address groups, shared by the names answering from them.
type Groups = Rc<Vec<Vec<Ipv4Addr>>>;

/// Answers from address groups (an ISP's cache, a CDN's nodes inside one ISP, a rented hosting
/// network, a parking provider's servers): the current groups (`span` of the name's `prefs`)
/// change every `switch` seconds, and every answer takes `answer` addresses from them, at least
/// one from each current group.
pub(super) struct Rotate {
    groups: Groups,
    prefs: Vec<usize>,
    span: (usize, usize),
    answer: (usize, usize),
    /// Seconds between switches of the current groups; `f64::INFINITY`: never.
    switch: (f64, f64),
    ttl: u32,
    cur: Vec<usize>,
    next_switch: f64,
}

impl Rotate {
    /// An error when a preferred group is missing or empty, or a range is empty.
    fn new(
        groups: Groups,
        prefs: Vec<usize>,
        span: (usize, usize),
        answer: (usize, usize),
        switch: (f64, f64),
        ttl: u32,
    ) -> anyhow::Result<Self> {
        if prefs.is_empty()
            || prefs
                .iter()
                .any(|&p| groups.get(p).is_none_or(|g| g.is_empty()))
        {
            bail!(
                "address groups {prefs:?} of {} missing or empty",
                groups.len()
            );
        }
        if span.0 == 0 || span.0 > span.1 || answer.0 == 0 || answer.0 > answer.1 {
            bail!("bad ranges: span {span:?}, answer {answer:?}");
        }
        if switch.0.is_nan() || switch.1.is_nan() || switch.0 > switch.1 {
            bail!("bad switch interval {switch:?}");
        }
        Ok(Self {
            groups,
            prefs,
            span,
            answer,
            switch,
            ttl,
            cur: Vec::new(),
            next_switch: 0.0,
        })
    }

    /// The same answering rule, for another name (with its own current groups).
    fn same_rule(&self) -> Self {
        Self {
            groups: self.groups.clone(),
            prefs: self.prefs.clone(),
            cur: Vec::new(),
            next_switch: 0.0,
            ..*self
        }
    }

    pub(super) fn ttl(&self) -> u32 {
        self.ttl
    }

    pub(super) fn answer(&mut self, now: f64, rng: &mut ChaCha8Rng) -> Vec<Ipv4Addr> {
        if self.cur.is_empty() || now >= self.next_switch {
            let s = rng
                .random_range(self.span.0..=self.span.1)
                .min(self.prefs.len());
            let mut p = self.prefs.clone();
            p.shuffle(rng);
            p.truncate(s.max(1));
            self.cur = p;
            self.next_switch = if self.switch.0.is_finite() {
                now + rng.random_range(self.switch.0..=self.switch.1)
            } else {
                f64::INFINITY
            };
        }
        let k = rng.random_range(self.answer.0..=self.answer.1);
        let mut out: Vec<Ipv4Addr> = Vec::with_capacity(k);
        let mut rest: Vec<Ipv4Addr> = Vec::new();
        for &g in &self.cur {
            let mut v = self.groups[g].clone();
            v.shuffle(rng);
            if let Some((&first, more)) = v.split_first() {
                if !out.contains(&first) {
                    out.push(first);
                }
                rest.extend_from_slice(more);
            }
        }
        rest.shuffle(rng);
        for a in rest {
            if out.len() >= k {
                break;
            }
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

// --- class parameters -----------------------------------------------------------------------

/// Probability that a name of each class is in the rarely looked-up long tail.
const RARE_ISP_CACHE: f64 = 0.2;
/// Most hosted domains are small sites, looked up now and then; parked domains mostly by typos
/// and crawlers. (Also what keeps these classes, hundreds of domains each, from dominating the
/// run time.)
const RARE_HOSTED: f64 = 0.9;
const RARE_PARKED: f64 = 0.95;
const RARE_REDIRECT: f64 = 0.3;
/// Flux names are looked up by victims following spam and by infected hosts; some rarely.
const RARE_FLUX: f64 = 0.15;

/// ISP caches: `#` a digit, `@` a city code, `$` an 8-character node token; `true`: the name is
/// one cache node (answered with one fixed address), else a content name steered between caches.
struct CacheVendor {
    /// Registered domain of the content names.
    zone: &'static str,
    names: &'static [(&'static str, bool)],
    /// Content names sometimes CNAME to `NAME.via` (a traffic-steering service), which answers.
    via: Option<&'static str>,
    /// The vendor's own ASNs (its caches outside the ISPs).
    own: &'static [u32],
}

const CACHE_VENDORS: &[CacheVendor] = &[
    CacheVendor {
        zone: "apple.com",
        names: &[
            ("appldnld.apple.com", false),
            ("swcdn.apple.com", false),
            ("swdist.apple.com", false),
            ("oscdn.apple.com", false),
            ("osxapps.itunes.apple.com", false),
            ("iosapps.itunes.apple.com", false),
            ("audiocontentdownload.apple.com", false),
            ("updates-http.apple.com", false),
            ("#.dl.apple.com", false),
        ],
        via: Some("akadns.net"),
        own: &APPLE,
    },
    CacheVendor {
        zone: "windowsupdate.com",
        names: &[
            ("download.windowsupdate.com", false),
            ("au.download.windowsupdate.com", false),
            ("#.au.download.windowsupdate.com", false),
            ("ctldl.windowsupdate.com", false),
            ("fg.download.windowsupdate.com", false),
            ("#.tlu.dl.windowsupdate.com", false),
        ],
        via: Some("edgesuite.net"),
        own: &MICROSOFT_AKAMAI,
    },
    CacheVendor {
        zone: "steamcontent.com",
        names: &[
            ("cache#-@#.steamcontent.com", true),
            ("#.dl.steamcontent.com", false),
            ("lancache.steamcontent.com", false),
        ],
        via: None,
        own: &VALVE,
    },
    CacheVendor {
        zone: "nflxvideo.net",
        names: &[
            ("ipv4-c0##-@00#-ix.1.oca.nflxvideo.net", true),
            ("ipv4-c0##-@00#-isp.1.oca.nflxvideo.net", true),
        ],
        via: None,
        own: &NETFLIX,
    },
    CacheVendor {
        zone: "gvt1.com",
        names: &[
            ("r#---sn-$.gvt1.com", true),
            ("redirector.gvt1.com", false),
            ("dl.gvt1.com", false),
        ],
        via: None,
        own: &GOOGLE_GGC,
    },
    CacheVendor {
        zone: "googlevideo.com",
        names: &[
            ("rr#---sn-$.googlevideo.com", true),
            ("redirector.googlevideo.com", false),
        ],
        via: None,
        own: &GOOGLE_GGC,
    },
    CacheVendor {
        zone: "playstation.net",
        names: &[
            ("gs2.ww.prod.dl.playstation.net", false),
            ("gst.prod.dl.playstation.net", false),
            ("gs-sec.ww.np.dl.playstation.net", false),
            ("#.dl.playstation.net", false),
        ],
        via: Some("edgesuite.net"),
        own: &AKAMAI,
    },
    CacheVendor {
        zone: "xboxlive.com",
        names: &[
            ("assets1.xboxlive.com", false),
            ("assets2.xboxlive.com", false),
            ("dlassets.xboxlive.com", false),
            ("xvcf#.xboxlive.com", false),
        ],
        via: Some("edgesuite.net"),
        own: &MICROSOFT_AKAMAI,
    },
];
const CITY_CODES: &[&str] = &[
    "fra", "ams", "lhr", "par", "muc", "ber", "ham", "nyc", "iad", "sjc", "dfw", "gru", "nrt",
    "bom",
];

/// Caches per vendor inside the home country's ISPs, in fallback countries' ISPs, in the
/// vendor's own network.
const HOME_CACHES: (usize, usize) = (2, 6);
const FALLBACK_CACHES: (usize, usize) = (0, 3);
const OWN_CACHES: (usize, usize) = (1, 3);
/// Fallback countries besides the vantage point's own.
const FALLBACK_COUNTRIES: (usize, usize) = (1, 2);
/// Addresses of one cache (a cluster of appliances in one /24).
const CACHE_NODES: (usize, usize) = (1, 8);
/// Home caches a content name is steered between.
const NAME_HOME_CACHES: (usize, usize) = (1, 3);
/// Probability that a content name also falls back to a cache abroad, or to the vendor's own.
const NAME_FALLBACK_PROB: f64 = 0.5;
const NAME_OWN_PROB: f64 = 0.3;
/// Where a one-node name's node is: abroad, in the vendor's own network (else at home).
const NODE_FALLBACK_PROB: f64 = 0.15;
const NODE_OWN_PROB: f64 = 0.15;
/// Seconds before the steering moves a content name to another cache: a log-uniform base
/// from 5 min to 2 h, the interval drawn up to twice the base.
const CACHE_SWITCH: (f64, f64) = (300.0, 7200.0);
/// TTLs of ISP-cache answers (s).
const CACHE_TTL: (u32, u32) = (20, 300);
/// Addresses per content-name answer, at most.
const CACHE_ANSWER_MAX: usize = 4;
/// Probability that a content name CNAMEs through the vendor's steering service.
const VIA_PROB: f64 = 0.5;
/// TTL of a content name's CNAME to the steering service (s).
const VIA_TTL: u32 = 3600;
/// Content names per instance; one-node names per instance (a session touches several).
const CONTENT_NAMES: (usize, usize) = (2, 5);
const NODE_NAMES: (usize, usize) = (3, 10);

/// Anycast hosting: one instance group per this many requested instances.
const ANYCAST_PER_GROUP: usize = 10;
/// Hosted domains per group: several hundred unrelated domains share the group's addresses.
const HOSTED_DOMAINS: (usize, usize) = (300, 700);
/// Anycast addresses per group.
const ANYCAST_ADDRS: (usize, usize) = (1, 4);
/// Hosted domains' TTLs (s): the range shared hosting sets.
const HOSTED_TTLS: [u32; 6] = [300, 600, 900, 1800, 3600, 3600];
/// Probabilities that a hosted domain's apex, its `www`, is looked up; that `www` is a CNAME
/// to the provider's shared name (when it has one).
const HOSTED_APEX_PROB: f64 = 0.6;
const HOSTED_WWW_PROB: f64 = 0.8;
const HOSTED_CNAME_PROB: f64 = 0.5;
/// TTL of the provider's shared name and of the CNAMEs to it (s).
const HOSTED_TARGET_TTL: u32 = 300;
const HOSTED_CNAME_TTL: u32 = 3600;

/// Flux with an anycast address: bots per answer; how often the anycast address is in it.
const SHARED_K: (usize, usize) = (2, 6);
const SHARED_PROB: (f64, f64) = (0.3, 1.0);
/// Flux domains per bot pool (several campaigns rent the same botnet).
const DOMAINS_PER_BOTNET: usize = 8;

/// Redirect CDNs: node groups (one /24 inside one Chinese ISP each) per CDN; nodes per group.
const CN_GROUPS: (usize, usize) = (4, 10);
const CN_NODES: (usize, usize) = (2, 8);
/// Probability that a node group is in the CDN's own cloud rather than an ISP.
const CN_OWN_PROB: f64 = 0.15;
/// Node groups a scheduling name is spread over; combined per answer (several ISP lines at
/// once); addresses per answer.
const CN_PREFS: (usize, usize) = (3, 8);
const CN_SPAN: (usize, usize) = (2, 4);
const CN_ANSWER: (usize, usize) = (2, 8);
/// Seconds between re-schedulings of a scheduling name: log-uniform base 1-30 min.
const CN_SWITCH: (f64, f64) = (60.0, 1800.0);
/// TTLs of scheduling answers and of the CDN's own CNAMEs (s).
const CN_TTL: (u32, u32) = (30, 600);
/// TTLs of the customer's CNAME into the CDN (s).
const CN_CUSTOMER_TTLS: [u32; 4] = [600, 600, 3600, 86400];
/// Scheduling names per CDN and chain level, shared by its customers.
const CN_SCHED_NAMES: (usize, usize) = (3, 8);
/// Customer names per instance (`www`, the apex, `static`, ...).
const CN_CUSTOMER_NAMES: (usize, usize) = (1, 4);

/// Redirect CDNs: the zone customer names are appended to (or a token under it), the zones of
/// the further scheduling levels (a chain has 2 to 1 + `hops.len()` CDN names), the CDN's
/// own ASNs.
struct RedirectCdn {
    first: &'static str,
    /// The first CDN name is `TOKEN.first` rather than `CUSTOMER-NAME.first`.
    token_first: bool,
    hops: &'static [&'static str],
    own: &'static [u32],
}

const REDIRECT_CDNS: &[RedirectCdn] = &[
    RedirectCdn {
        first: "cdn.dnsv1.com.cn",
        token_first: false,
        hops: &[
            "slt.sched.tdnsv8.com",
            "p23.tc.cdntip.com",
            "sched.tcdnv1.com",
        ],
        own: &TENCENT,
    },
    RedirectCdn {
        first: "w.kunlunle.com",
        token_first: false,
        hops: &["w.alikunlun.com", "gds.alibabadns.com"],
        own: &ALIBABA,
    },
    RedirectCdn {
        first: "wswebcdn.com",
        token_first: false,
        hops: &["wscdns.com", "cdn20.com"],
        own: &[],
    },
    RedirectCdn {
        first: "ccgslb.com.cn",
        token_first: false,
        hops: &["ccgslb.net"],
        own: &[],
    },
    RedirectCdn {
        first: "bsgslb.cn",
        token_first: false,
        hops: &["trpcdn.net", "bsclink.cn"],
        own: &[],
    },
    RedirectCdn {
        first: "cdnhwc1.com",
        token_first: false,
        hops: &["c.cdnhwc2.com", "cdnhwc3.com"],
        own: &[],
    },
    RedirectCdn {
        first: "aliyunddos1001.com",
        token_first: true,
        hops: &["yundunddos.com", "yundunwaf3.com"],
        own: &ALIBABA,
    },
];

/// Parking: one provider per this many requested instances; parked domains per provider.
const PARKING_PER_PROVIDER: usize = 10;
const PARKED_DOMAINS: (usize, usize) = (60, 250);
/// The provider's addresses.
const PARKING_ADDRS: (usize, usize) = (2, 8);
/// Probability that a parked domain rotates over the provider's addresses (else it has a
/// fixed 1-2 of them); addresses per answer.
const PARKED_ROTATE_PROB: f64 = 0.4;
const PARKED_ANSWER: (usize, usize) = (1, 2);
const PARKED_TTLS: [u32; 6] = [60, 300, 600, 1800, 3600, 3600];
const PARKED_APEX_PROB: f64 = 0.7;
const PARKED_WWW_PROB: f64 = 0.6;

/// Modern flux: residential-proxy pools (addresses, ASNs of many countries, per-address
/// probability of being online in a half-hour slot); TTL in steps of 30 s; addresses per answer.
const PROXY_POOL: (f64, f64) = (1000.0, 10000.0);
const PROXY_ASNS: (usize, usize) = (15, 45);
const PROXY_AVAIL: (f32, f32) = (0.05, 0.6);
const MODERN_TTL_STEPS: (u32, u32) = (10, 60);
const MODERN_TTL_STEP: u32 = 30;
const MODERN_K: (usize, usize) = (1, 3);

/// Bulletproof hosting: rented networks (hosting ASNs), /24s per network, live hosts per /24,
/// networks answered from at once, addresses per answer, TTL (s, in steps of 30 s), seconds
/// between moves to other networks (log-uniform base 30 min to 6 h).
const BP_NETWORKS: (usize, usize) = (2, 4);
const BP_BLOCKS: (usize, usize) = (1, 2);
const BP_HOSTS: (usize, usize) = (3, 24);
const BP_SPAN: (usize, usize) = (1, 2);
const BP_ANSWER_MAX: (usize, usize) = (1, 4);
const BP_TTL_STEPS: (u32, u32) = (2, 30);
const BP_TTL_STEP: u32 = 30;
const BP_SWITCH: (f64, f64) = (1800.0, 6.0 * 3600.0);

// --- the classes ----------------------------------------------------------------------------

/// Per-vendor ISP-cache state: the caches and where they are.
struct CacheNet {
    groups: Groups,
    home: Vec<usize>,
    fallback: Vec<usize>,
    own: Vec<usize>,
}

impl Gen {
    fn swap_streams_for<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.swap_streams();
        let r = f(self);
        self.swap_streams();
        r
    }

    /// Exchanges the original random stream and [`Gen::alt`].
    pub(super) fn swap_streams(&mut self) {
        std::mem::swap(&mut self.rng, &mut self.alt);
    }

    /// Builds the later classes, from their own random stream.
    pub(super) fn gen_extra(&mut self, n: usize) -> anyhow::Result<()> {
        self.swap_streams_for(|g| {
            // The fixed vendor zones are never random customer names.
            for v in CACHE_VENDORS {
                g.used.insert(v.zone.to_owned());
            }
            g.gen_isp_cache(n)?;
            let anycast = g.gen_anycast(n)?;
            g.gen_flux_shared(n, &anycast)?;
            g.gen_redirect(n)?;
            g.gen_parking(n)?;
            g.gen_modern(n)?;
            g.gen_bulletproof(n)
        })
    }

    /// A lookup schedule: rare (the long tail) with probability `rare`, else a frequent
    /// Poisson process, a periodic poll or bursts, equally likely.
    fn schedule(&mut self, rare: f64) -> Schedule {
        let rng = &mut self.rng;
        if rng.random_bool(rare) {
            return Schedule::Poisson(log_uniform(rng, RARE_MEAN));
        }
        match rng.random_range(0..3) {
            0 => Schedule::Poisson(log_uniform(rng, POISSON_MEAN)),
            1 => Schedule::Periodic {
                period: log_uniform(rng, POLL_PERIOD),
                jitter: rng.random_range(0.0..=POLL_JITTER_MAX),
            },
            _ => {
                let hi = rng.random_range(BURST_SIZE_MAX.0..=BURST_SIZE_MAX.1);
                Schedule::Bursts {
                    gap: log_uniform(rng, BURST_GAP),
                    size: (rng.random_range(1..=hi), hi),
                    spacing: log_uniform(rng, BURST_SPACING),
                }
            }
        }
    }

    /// Queries `names` as one instance of `class` (each on its own schedule) and labels what
    /// they reach.
    fn instance_with(&mut self, class: usize, names: &[usize], rare: f64) -> anyhow::Result<()> {
        for &owner in names {
            let sched = self.schedule(rare);
            self.queries.push(QName {
                owner,
                class,
                sched,
            });
            self.stats[class].names += 1;
            self.label_from(owner, class)?;
        }
        self.stats[class].instances += 1;
        Ok(())
    }

    /// `k` groups of hosts, each in a /24 of an ASN from `asns` (cycled through in a random
    /// order, so the groups cover as many ASNs as they can).
    fn groups_in(&mut self, asns: &[u32], k: usize, nodes: (usize, usize)) -> Vec<Vec<Ipv4Addr>> {
        let mut order = asns.to_vec();
        order.shuffle(&mut self.rng);
        if order.is_empty() {
            return Vec::new();
        }
        (0..k)
            .map(|i| {
                let asn = order[i % order.len()];
                let b = self.spaces.block(&mut self.rng, asn, false);
                let n = self.rng.random_range(nodes.0..=nodes.1);
                self.spaces.hosts(&mut self.rng, b, n)
            })
            .collect()
    }

    /// A name from a vendor pattern (see [`CacheVendor`]).
    fn expand(&mut self, pattern: &str) -> String {
        let mut s = String::with_capacity(pattern.len() + 8);
        for c in pattern.chars() {
            match c {
                '#' => s.push(char::from(b'0' + self.rng.random_range(1..=9u8))),
                '@' => s.push_str(CITY_CODES.choose(&mut self.rng).expect("non-empty")),
                '$' => s.push_str(&rand_str(&mut self.rng, ALNUM, 8)),
                c => s.push(c),
            }
        }
        s
    }

    fn cache_net(
        &mut self,
        v: &CacheVendor,
        home: &[u32],
        fallback: &[u32],
    ) -> anyhow::Result<CacheNet> {
        let own = self.spaces.usable(v.own, v.zone)?;
        let counts = [HOME_CACHES, FALLBACK_CACHES, OWN_CACHES]
            .map(|(lo, hi)| self.rng.random_range(lo..=hi));
        let mut groups = Vec::new();
        let mut idx: [Vec<usize>; 3] = Default::default();
        for (i, (asns, k)) in [home, fallback, &own].into_iter().zip(counts).enumerate() {
            if asns.is_empty() {
                continue;
            }
            for g in self.groups_in(asns, k, CACHE_NODES) {
                idx[i].push(groups.len());
                groups.push(g);
            }
        }
        let [home, fallback, own] = idx;
        Ok(CacheNet {
            groups: Rc::new(groups),
            home,
            fallback,
            own,
        })
    }

    /// A content name: steered between caches, sometimes through the vendor's steering CNAME.
    fn cache_content(
        &mut self,
        v: &CacheVendor,
        net: &CacheNet,
        name: &str,
    ) -> anyhow::Result<usize> {
        let mut prefs = net.home.clone();
        prefs.shuffle(&mut self.rng);
        prefs.truncate(
            self.rng
                .random_range(NAME_HOME_CACHES.0..=NAME_HOME_CACHES.1),
        );
        for (list, p) in [
            (&net.fallback, NAME_FALLBACK_PROB),
            (&net.own, NAME_OWN_PROB),
        ] {
            if let Some(&g) = list.choose(&mut self.rng)
                && (prefs.is_empty() || self.rng.random_bool(p))
            {
                prefs.push(g);
            }
        }
        let base = log_uniform(&mut self.rng, CACHE_SWITCH);
        let beh = Behaviour::Rotate(Rotate::new(
            net.groups.clone(),
            prefs,
            (1, 1),
            (1, self.rng.random_range(1..=CACHE_ANSWER_MAX)),
            (base, 2.0 * base),
            self.rng.random_range(CACHE_TTL.0..=CACHE_TTL.1),
        )?);
        match v.via {
            Some(via) if self.rng.random_bool(VIA_PROB) => {
                let t = self.define(&format!("{name}.{via}"), beh)?;
                self.cname(name, t, VIA_TTL)
            }
            _ => self.define(name, beh),
        }
    }

    /// A one-node name: one fixed address of one cache.
    fn cache_node(&mut self, net: &CacheNet, name: &str) -> anyhow::Result<usize> {
        let r: f64 = self.rng.random();
        let list = if r < NODE_FALLBACK_PROB && !net.fallback.is_empty() {
            &net.fallback
        } else if r < NODE_FALLBACK_PROB + NODE_OWN_PROB && !net.own.is_empty() {
            &net.own
        } else {
            &net.home
        };
        let Some(&g) = list.choose(&mut self.rng).or(net.own.first()) else {
            bail!("no cache for {name}");
        };
        let Some(&addr) = net.groups[g].choose(&mut self.rng) else {
            bail!("empty cache for {name}");
        };
        let beh = Behaviour::Rotate(Rotate::new(
            Rc::new(vec![vec![addr]]),
            vec![0],
            (1, 1),
            (1, 1),
            (f64::INFINITY, f64::INFINITY),
            self.rng.random_range(CACHE_TTL.0..=CACHE_TTL.1),
        )?);
        self.define(name, beh)
    }

    fn gen_isp_cache(&mut self, n: usize) -> anyhow::Result<()> {
        // The vantage point's country and a few fallback countries, for every vendor.
        let mut countries: Vec<usize> = (0..EYEBALL_COUNTRIES.len()).collect();
        countries.shuffle(&mut self.rng);
        let nf = self
            .rng
            .random_range(FALLBACK_COUNTRIES.0..=FALLBACK_COUNTRIES.1);
        let home = self
            .spaces
            .usable(EYEBALL_COUNTRIES[countries[0]].1, "home eyeball")?;
        let fallback: Vec<u32> = countries[1..]
            .iter()
            .take(nf)
            .flat_map(|&c| EYEBALL_COUNTRIES[c].1.iter().copied())
            .filter(|&a| self.spaces.has(a))
            .collect();
        let mut nets: Vec<Option<CacheNet>> = (0..CACHE_VENDORS.len()).map(|_| None).collect();
        for i in 0..n {
            // This instance's vendor; a vendor out of fixed content names passes to the next.
            let mut names = Vec::new();
            for j in 0..CACHE_VENDORS.len() {
                let vi = (i + j) % CACHE_VENDORS.len();
                let v = &CACHE_VENDORS[vi];
                if nets[vi].is_none() {
                    nets[vi] = Some(self.cache_net(v, &home, &fallback)?);
                }
                let Some(net) = nets[vi].take() else {
                    bail!("cache net of {} not built", v.zone);
                };
                let r = self.cache_instance(v, &net);
                nets[vi] = Some(net);
                names = r?;
                if !names.is_empty() {
                    break;
                }
            }
            if names.is_empty() {
                bail!("no ISP-cache names left for instance {i}");
            }
            self.instance_with(C_ISP_CACHE, &names, RARE_ISP_CACHE)?;
        }
        Ok(())
    }

    /// New names of one vendor for one instance (none when its fixed names are used up).
    fn cache_instance(&mut self, v: &CacheVendor, net: &CacheNet) -> anyhow::Result<Vec<usize>> {
        let nodes = v.names.iter().any(|&(_, node)| node);
        let want = if nodes {
            self.rng.random_range(NODE_NAMES.0..=NODE_NAMES.1)
        } else {
            self.rng.random_range(CONTENT_NAMES.0..=CONTENT_NAMES.1)
        };
        let mut names = Vec::new();
        // Fixed names run out; a few tries more than wanted finds the unused ones.
        for _ in 0..want * 4 {
            if names.len() >= want {
                break;
            }
            let &(pattern, node) = v.names.choose(&mut self.rng).expect("non-empty");
            let name = self.expand(pattern);
            if self.by_name.contains_key(&name) {
                continue;
            }
            names.push(if node {
                self.cache_node(net, &name)?
            } else {
                self.cache_content(v, net, &name)?
            });
        }
        Ok(names)
    }

    /// A word-like domain of a small site, from `tlds`.
    fn small_site(&mut self, tlds: &'static [&'static str]) -> anyhow::Result<String> {
        self.fresh(|rng| {
            let a = WORDS.choose(rng).expect("non-empty");
            let b = WORDS.choose(rng).expect("non-empty");
            let tld = tlds.choose(rng).expect("non-empty");
            match rng.random_range(0..5) {
                0 => format!("{a}-{b}.{tld}"),
                1 => format!("{a}{b}{}.{tld}", rng.random_range(1..1000)),
                2 => format!("{a}{}.{tld}", rand_str(rng, LETTERS, 3)),
                _ => format!("{a}{b}.{tld}"),
            }
        })
    }

    /// Anycast shared hosting; returns each group's anycast addresses.
    fn gen_anycast(&mut self, n: usize) -> anyhow::Result<Vec<Vec<Ipv4Addr>>> {
        const TLDS: &[&str] = &[
            "com", "com", "com", "net", "org", "io", "co", "de", "co.uk", "fr", "nl", "com.au",
            "ca", "shop", "store", "blog",
        ];
        let mut out = Vec::new();
        for gi in 0..n.div_ceil(ANYCAST_PER_GROUP).max(1) {
            let (asns, target) = ANYCAST_PROVIDERS[gi % ANYCAST_PROVIDERS.len()];
            let asns = self.spaces.usable(asns, "anycast hosting")?;
            let asn = *asns.choose(&mut self.rng).expect("usable is non-empty");
            let b = self.spaces.block(&mut self.rng, asn, false);
            let k = self.rng.random_range(ANYCAST_ADDRS.0..=ANYCAST_ADDRS.1);
            let addrs = self.spaces.hosts(&mut self.rng, b, k);
            let target = match target {
                Some(t) => {
                    let name = t.replace('#', &gi.to_string());
                    Some(self.define(
                        &name,
                        Behaviour::RoundRobin {
                            addrs: addrs.clone(),
                            subset: None,
                            ttl: HOSTED_TARGET_TTL,
                            next: 0,
                        },
                    )?)
                }
                None => None,
            };
            for _ in 0..self.rng.random_range(HOSTED_DOMAINS.0..=HOSTED_DOMAINS.1) {
                let site = self.small_site(TLDS)?;
                let ttl = *HOSTED_TTLS.choose(&mut self.rng).expect("non-empty");
                let apex = self.rng.random_bool(HOSTED_APEX_PROB);
                let www = !apex || self.rng.random_bool(HOSTED_WWW_PROB);
                let stable = |addrs: &Vec<Ipv4Addr>| Behaviour::RoundRobin {
                    addrs: addrs.clone(),
                    subset: None,
                    ttl,
                    next: 0,
                };
                let mut names = Vec::new();
                if apex {
                    names.push(self.define(&site, stable(&addrs))?);
                }
                if www {
                    let w = format!("www.{site}");
                    names.push(match target {
                        Some(t) if self.rng.random_bool(HOSTED_CNAME_PROB) => {
                            self.cname(&w, t, HOSTED_CNAME_TTL)?
                        }
                        _ => self.define(&w, stable(&addrs))?,
                    });
                }
                self.instance_with(C_ANYCAST, &names, RARE_HOSTED)?;
            }
            out.push(addrs);
        }
        Ok(out)
    }

    /// Residential flux whose answers include one anycast hosting address now and then.
    fn gen_flux_shared(&mut self, n: usize, anycast: &[Vec<Ipv4Addr>]) -> anyhow::Result<()> {
        let nets: Vec<Rc<Pool>> = (0..n.div_ceil(DOMAINS_PER_BOTNET).max(1))
            .map(|_| self.botnet())
            .collect();
        for i in 0..n {
            let pool = nets[i % nets.len()].clone();
            let Some(&extra) = anycast
                .get(i % anycast.len().max(1))
                .and_then(|g| g.choose(&mut self.rng))
            else {
                bail!("no anycast address for flux-shared");
            };
            let prob = self.rng.random_range(SHARED_PROB.0..=SHARED_PROB.1);
            let domain = self.flux_domain()?;
            let ttl = self.flux_ttl();
            let names = self.flux_names(&domain, ttl, |_| Behaviour::PickWith {
                pool: pool.clone(),
                k: SHARED_K,
                ttl,
                extra,
                prob,
            })?;
            self.instance_with(C_FLUX_SHARED, &names, RARE_FLUX)?;
        }
        Ok(())
    }

    /// Chinese redirect/anti-DDoS CDNs: customer names CNAMEd through 2-4 CDN names to
    /// scheduling names answering from several Chinese ISPs at once.
    fn gen_redirect(&mut self, n: usize) -> anyhow::Result<()> {
        let isps = self.spaces.usable(&CN_REDIRECT_ASNS, "Chinese ISP")?;
        // Per CDN: node groups, and the shared scheduling names per chain level.
        let mut cdns: Vec<Option<(Groups, Vec<Vec<usize>>)>> =
            (0..REDIRECT_CDNS.len()).map(|_| None).collect();
        for i in 0..n {
            let ci = i % REDIRECT_CDNS.len();
            let cdn = &REDIRECT_CDNS[ci];
            if cdns[ci].is_none() {
                let own: Vec<u32> = cdn
                    .own
                    .iter()
                    .copied()
                    .filter(|&a| self.spaces.has(a))
                    .collect();
                let k = self.rng.random_range(CN_GROUPS.0..=CN_GROUPS.1);
                let mut groups = self.groups_in(&isps, k, CN_NODES);
                for g in groups.iter_mut() {
                    if !own.is_empty() && self.rng.random_bool(CN_OWN_PROB) {
                        let asn = *own.choose(&mut self.rng).expect("non-empty");
                        let b = self.spaces.block(&mut self.rng, asn, false);
                        let n = self.rng.random_range(CN_NODES.0..=CN_NODES.1);
                        *g = self.spaces.hosts(&mut self.rng, b, n);
                    }
                }
                cdns[ci] = Some((Rc::new(groups), vec![Vec::new(); cdn.hops.len()]));
            }
            let Some((groups, mut scheds)) = cdns[ci].take() else {
                bail!("redirect CDN {} not built", cdn.first);
            };
            let r = self.redirect_customer(cdn, &groups, &mut scheds);
            cdns[ci] = Some((groups, scheds));
            let names = r?;
            self.instance_with(C_REDIRECT, &names, RARE_REDIRECT)?;
        }
        Ok(())
    }

    fn redirect_customer(
        &mut self,
        cdn: &RedirectCdn,
        groups: &Groups,
        scheds: &mut [Vec<usize>],
    ) -> anyhow::Result<Vec<usize>> {
        const TLDS: &[&str] = &["cn", "com.cn", "com", "com", "net", "net.cn", "org.cn"];
        let site = self.small_site(TLDS)?;
        let mut hosts = vec!["www", "", "static", "m", "img", "api", "v"];
        hosts[1..].shuffle(&mut self.rng);
        hosts.truncate(
            self.rng
                .random_range(CN_CUSTOMER_NAMES.0..=CN_CUSTOMER_NAMES.1),
        );
        let mut names = Vec::new();
        for h in hosts {
            let cust = if h.is_empty() {
                site.clone()
            } else {
                format!("{h}.{site}")
            };
            // CDN names in the chain: the first, then `levels` scheduling levels.
            let levels = self.rng.random_range(1..=cdn.hops.len());
            let last = levels - 1;
            // The final scheduling name: shared by customers of this CDN.
            let want = self.rng.random_range(CN_SCHED_NAMES.0..=CN_SCHED_NAMES.1);
            let mut next = if scheds[last].len() < want {
                let name = format!("{}.{}", rand_str(&mut self.rng, ALNUM, 10), cdn.hops[last]);
                let mut prefs: Vec<usize> = (0..groups.len()).collect();
                prefs.shuffle(&mut self.rng);
                prefs.truncate(self.rng.random_range(CN_PREFS.0..=CN_PREFS.1));
                let base = log_uniform(&mut self.rng, CN_SWITCH);
                let hi = self.rng.random_range(CN_ANSWER.0..=CN_ANSWER.1);
                let beh = Behaviour::Rotate(Rotate::new(
                    groups.clone(),
                    prefs,
                    (CN_SPAN.0.min(hi), CN_SPAN.1.min(hi)),
                    (CN_SPAN.0.min(hi), hi),
                    (base, 2.0 * base),
                    self.rng.random_range(CN_TTL.0..=CN_TTL.1),
                )?);
                let o = self.define(&name, beh)?;
                scheds[last].push(o);
                o
            } else {
                *scheds[last].choose(&mut self.rng).expect("non-empty")
            };
            // Intermediate scheduling levels, per customer name, down to the first CDN name.
            for level in (0..last).rev() {
                let name = format!("{}.{}", rand_str(&mut self.rng, ALNUM, 8), cdn.hops[level]);
                let ttl = self.rng.random_range(CN_TTL.0..=CN_TTL.1);
                next = self.cname(&name, next, ttl)?;
            }
            let first = if cdn.token_first {
                format!("{}.{}", rand_str(&mut self.rng, ALNUM, 16), cdn.first)
            } else {
                format!("{cust}.{}", cdn.first)
            };
            let ttl = self.rng.random_range(CN_TTL.0..=CN_TTL.1);
            let first = self.cname(&first, next, ttl)?;
            let ttl = *CN_CUSTOMER_TTLS.choose(&mut self.rng).expect("non-empty");
            names.push(self.cname(&cust, first, ttl)?);
        }
        Ok(names)
    }

    /// Parking: many parked domains on a parking provider's few addresses.
    fn gen_parking(&mut self, n: usize) -> anyhow::Result<()> {
        const TLDS: &[&str] = &[
            "com", "com", "com", "net", "org", "info", "xyz", "top", "online", "site", "club",
            "biz", "us", "co", "de",
        ];
        for pi in 0..n.div_ceil(PARKING_PER_PROVIDER).max(1) {
            let (asns, spread) = PARKING_PROVIDERS[pi % PARKING_PROVIDERS.len()];
            let asns = self.spaces.usable(asns, "parking")?;
            let k = self.rng.random_range(PARKING_ADDRS.0..=PARKING_ADDRS.1);
            let addrs: Vec<Ipv4Addr> = if spread {
                let pool = self.plain_pool(&asns, k, true);
                pool.addrs.clone()
            } else {
                let asn = *asns.choose(&mut self.rng).expect("usable is non-empty");
                let b = self.spaces.block(&mut self.rng, asn, false);
                self.spaces.hosts(&mut self.rng, b, k)
            };
            let set = Rc::new(vec![addrs.clone()]);
            for _ in 0..self.rng.random_range(PARKED_DOMAINS.0..=PARKED_DOMAINS.1) {
                let site = self.parked_domain(TLDS)?;
                let ttl = *PARKED_TTLS.choose(&mut self.rng).expect("non-empty");
                let rotate = self.rng.random_bool(PARKED_ROTATE_PROB);
                let mut fixed = addrs.clone();
                fixed.shuffle(&mut self.rng);
                fixed.truncate(self.rng.random_range(PARKED_ANSWER.0..=PARKED_ANSWER.1));
                let apex = self.rng.random_bool(PARKED_APEX_PROB);
                let www = !apex || self.rng.random_bool(PARKED_WWW_PROB);
                let mut names = Vec::new();
                for (on, name) in [(apex, site.clone()), (www, format!("www.{site}"))] {
                    if !on {
                        continue;
                    }
                    let beh = if rotate {
                        Behaviour::Rotate(Rotate::new(
                            set.clone(),
                            vec![0],
                            (1, 1),
                            PARKED_ANSWER,
                            (f64::INFINITY, f64::INFINITY),
                            ttl,
                        )?)
                    } else {
                        Behaviour::RoundRobin {
                            addrs: fixed.clone(),
                            subset: None,
                            ttl,
                            next: 0,
                        }
                    };
                    names.push(self.define(&name, beh)?);
                }
                self.instance_with(C_PARKING, &names, RARE_PARKED)?;
            }
        }
        Ok(())
    }

    /// A parked domain: an expired site's name, a typo, a keyword, random letters.
    fn parked_domain(&mut self, tlds: &'static [&'static str]) -> anyhow::Result<String> {
        self.fresh(|rng| {
            let a = WORDS.choose(rng).expect("non-empty");
            let b = WORDS.choose(rng).expect("non-empty");
            let tld = tlds.choose(rng).expect("non-empty");
            match rng.random_range(0..5) {
                0 => {
                    // A typo: one letter doubled.
                    let w = format!("{a}{b}");
                    let i = rng.random_range(0..w.len());
                    format!("{}{}.{tld}", &w[..=i], &w[i..])
                }
                1 => {
                    let len = rng.random_range(5..=12);
                    format!("{}.{tld}", rand_str(rng, LETTERS, len))
                }
                2 => format!("{a}{b}{}.{tld}", rng.random_range(1..10000)),
                3 => format!("best{a}{b}.{tld}"),
                _ => format!("{a}{b}.{tld}"),
            }
        })
    }

    /// A residential-proxy pool: many addresses in eyeball ASNs of many countries, each
    /// online now and then.
    fn proxy_pool(&mut self, asns: &[u32]) -> Rc<Pool> {
        let size = log_uniform(&mut self.rng, PROXY_POOL) as usize;
        let mut pick = asns.to_vec();
        pick.shuffle(&mut self.rng);
        pick.truncate(self.rng.random_range(PROXY_ASNS.0..=PROXY_ASNS.1));
        let mut addrs = Vec::with_capacity(size);
        let mut avail = Vec::with_capacity(size);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..size * 2 {
            if addrs.len() >= size {
                break;
            }
            let asn = *pick.choose(&mut self.rng).expect("non-empty");
            let a = self.spaces.addr(&mut self.rng, asn, true);
            if seen.insert(a) {
                addrs.push(a);
                avail.push(self.rng.random_range(PROXY_AVAIL.0..PROXY_AVAIL.1));
            }
        }
        Rc::new(Pool {
            addrs,
            avail,
            salt: self.rng.random(),
        })
    }

    /// A flux domain, random-looking or word-like on a cheap TLD.
    fn modern_domain(&mut self) -> anyhow::Result<String> {
        const TLDS: &[&str] = &[
            "top", "xyz", "shop", "online", "live", "click", "site", "icu",
        ];
        if self.rng.random_bool(0.5) {
            self.flux_domain()
        } else {
            self.small_site(TLDS)
        }
    }

    fn gen_modern(&mut self, n: usize) -> anyhow::Result<()> {
        let mut asns: Vec<u32> = RESIDENTIAL_ASNS.to_vec();
        asns.extend(
            EYEBALL_COUNTRIES
                .iter()
                .flat_map(|(_, l)| l.iter().copied()),
        );
        asns.sort_unstable();
        asns.dedup();
        let asns = self.spaces.usable(&asns, "residential proxy")?;
        let nets: Vec<Rc<Pool>> = (0..n.div_ceil(DOMAINS_PER_BOTNET).max(1))
            .map(|_| self.proxy_pool(&asns))
            .collect();
        for i in 0..n {
            let pool = nets[i % nets.len()].clone();
            let domain = self.modern_domain()?;
            let ttl = MODERN_TTL_STEP
                * self
                    .rng
                    .random_range(MODERN_TTL_STEPS.0..=MODERN_TTL_STEPS.1);
            let names = self.flux_names(&domain, ttl, |_| Behaviour::Pick {
                pool: pool.clone(),
                k: MODERN_K,
                ttl,
            })?;
            self.instance_with(C_MODERN, &names, RARE_FLUX)?;
        }
        Ok(())
    }

    fn gen_bulletproof(&mut self, n: usize) -> anyhow::Result<()> {
        let all = self
            .spaces
            .usable(&BULLETPROOF_ASNS, "bulletproof hosting")?;
        for _ in 0..n {
            let mut asns = all.clone();
            asns.shuffle(&mut self.rng);
            asns.truncate(self.rng.random_range(BP_NETWORKS.0..=BP_NETWORKS.1));
            // One group per rented network: its hosts in 1-2 /24s of one hosting ASN.
            let mut groups = Vec::new();
            for &asn in &asns {
                let mut hosts = Vec::new();
                for _ in 0..self.rng.random_range(BP_BLOCKS.0..=BP_BLOCKS.1) {
                    let b = self.spaces.block(&mut self.rng, asn, false);
                    let k = self.rng.random_range(BP_HOSTS.0..=BP_HOSTS.1);
                    hosts.extend(self.spaces.hosts(&mut self.rng, b, k));
                }
                hosts.sort_unstable();
                hosts.dedup();
                groups.push(hosts);
            }
            let groups = Rc::new(groups);
            let prefs: Vec<usize> = (0..groups.len()).collect();
            let hi = self.rng.random_range(BP_ANSWER_MAX.0..=BP_ANSWER_MAX.1);
            let ttl = BP_TTL_STEP * self.rng.random_range(BP_TTL_STEPS.0..=BP_TTL_STEPS.1);
            let base = log_uniform(&mut self.rng, BP_SWITCH);
            let rule = Rotate::new(
                groups,
                prefs,
                (BP_SPAN.0.min(hi), BP_SPAN.1.min(hi)),
                (1, hi),
                (base, 2.0 * base),
                ttl,
            )?;
            let domain = self.flux_domain()?;
            let names = self.flux_names(&domain, ttl, |_| Behaviour::Rotate(rule.same_rule()))?;
            self.instance_with(C_BULLETPROOF, &names, RARE_FLUX)?;
        }
        Ok(())
    }
}
