//! Per-key state and the sliding-window features computed from it.
//!
//! A key keeps the addresses it resolved to (with when each was first and last seen), a short
//! history of its distinct answers (RRsets) and, for zones, the glue of its NS hosts. Windows are
//! in observation time: a feature over "1h" looks at what was seen in the hour before `now`.
//! Everything is capped ([`MAX_IPS_PER_KEY`], [`MAX_RRSETS`], [`MAX_NS_HOSTS`], [`MAX_GLUE`]),
//! evicting the least recently seen entry, so a key's memory is bounded whatever it resolves to.

use std::net::IpAddr;

use serde::Serialize;
use smallvec::SmallVec;

/// The allocator's header per heap allocation (glibc malloc), for memory estimates.
pub const MALLOC_OVERHEAD: usize = 16;

use super::params::{BUSY_CHANGES, FORGED_ANSWER_SIZE, PROVIDER_ZONE_CUSTOMERS, mixed_answers};
pub use super::params::{
    MAX_GLUE, MAX_IPS_PER_KEY, MAX_NS_HOSTS, MAX_RRSETS, STABLE_ANSWER_MAX, WINDOWS,
};

/// What the scorer knows about one address at the time it saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrInfo {
    /// IPv4 as IPv4-mapped IPv6.
    pub ip: [u8; 16],
    /// 0 when unknown.
    pub asn: u32,
    /// The organisation (AS-name family) or, without an ASN database, the /16 or /48;
    /// 0 when a database is loaded but does not know the address.
    pub network: u32,
    /// ISO country code, `[0, 0]` when unknown.
    pub country: [u8; 2],
}

/// [`KeyState::marks`]: the Holz baseline flagged the key (evaluation only).
pub const MARK_HOLZ: u8 = 1;
/// The Zeek baseline flagged the key (evaluation only).
pub const MARK_ZEEK: u8 = 2;
/// The key qualified for the block gate at its last score (see `model::BLOCK_SCORE`).
pub const MARK_BLOCK_QUALIFIED: u8 = 4;
/// The key passed the block gate: it qualified at two scores at different times.
pub const MARK_BLOCKABLE: u8 = 8;
/// A name under the key was queried directly, not reached through another registered domain's
/// CNAME (see `model::provider_zone`).
pub const MARK_QUERIED_DIRECTLY: u8 = 16;

impl AddrInfo {
    pub fn ip_bytes(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    /// The address as a std address (IPv4-mapped ones as IPv4).
    pub fn to_ip(&self) -> IpAddr {
        let v6 = std::net::Ipv6Addr::from(self.ip);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }

    /// The /16 of an IPv4 address or the /48 of an IPv6 one, as a hash.
    pub fn prefix(&self) -> u32 {
        let is_v4 =
            self.ip[..10].iter().all(|b| *b == 0) && self.ip[10] == 0xff && self.ip[11] == 0xff;
        if is_v4 {
            u32::from(self.ip[12]) << 8 | u32::from(self.ip[13])
        } else {
            fnv32(&self.ip[..6]) | 0x8000_0000
        }
    }

    /// The /24 of an IPv4 address (the /48 of an IPv6 one, as [`Self::prefix`]): the block a
    /// server farm or a CDN PoP sits in. Ordered as the prefixes are.
    pub fn subnet(&self) -> u32 {
        let p = self.prefix();
        if p & 0x8000_0000 != 0 {
            p
        } else {
            0x0100_0000 | p << 8 | u32::from(self.ip[14])
        }
    }

    /// The [`Self::prefix`] of a [`Self::subnet`]; monotonic, so sorted blocks give sorted
    /// prefixes.
    pub fn prefix_of_subnet(block: u32) -> u32 {
        if block & 0x8000_0000 != 0 {
            block
        } else {
            (block >> 8) & 0xffff
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct IpEntry {
    addr: AddrInfo,
    last: u32,
}

/// One distinct answer (address set) of a key.
#[derive(Clone, Copy, Debug)]
struct Rrset {
    hash: u32,
    last: u32,
    /// Authoritative TTL estimate: the largest TTL seen for this answer (caches count it down).
    ttl: u32,
    /// How long after `last` some cache may still hand this answer out (the latest
    /// `seen + TTL` of any response carrying it, capped at 18 hours). Seen again before that,
    /// it is the same fetch re-shown (a cache, or another name of the key answering in turn);
    /// seen after, the authority gave it again.
    valid_for: u16,
    /// Times the answer came back after it had expired (see `valid_for`).
    returns: u8,
    size: u8,
    /// Addresses the key had not seen before this answer.
    new: u8,
    /// Distinct networks inside this one answer.
    networks: u8,
    /// Networks of this answer the key had no address in before it.
    new_networks: u8,
    /// The first answer the key ever had: all its addresses are "new" by definition.
    first: bool,
}

impl Rrset {
    /// Addresses handed out after the key's first answer: this answer's on its first
    /// appearance (unless it was the first), and again on every return.
    fn handed_out(&self) -> u32 {
        u32::from(self.size) * (u32::from(self.returns) + u32::from(!self.first))
    }
}

#[derive(Clone, Debug)]
struct NsHost {
    name: Box<str>,
    last: u32,
    glue: Vec<(AddrInfo, u32)>,
    /// The most glue addresses one response carried for this host: more in a window means
    /// the glue changed between responses (it rotates).
    glue_set_max: u8,
}

#[derive(Clone, Debug, Default)]
struct NsTable {
    hosts: Vec<NsHost>,
    /// The largest NS set one response carried: names beyond it are churn.
    max_set: u8,
}

/// Everything the scorer remembers about one key.
#[derive(Clone, Debug, Default)]
pub struct KeyState {
    ips: Vec<IpEntry>,
    /// A 32-bit fingerprint of each address in `ips`, same order: finding an address scans
    /// this dense array (vectorised) instead of 32-byte entries.
    ip_fps: Vec<u32>,
    rrsets: Vec<Rrset>,
    ns: Option<Box<NsTable>>,
    /// The last CNAME chain that led to this key's addresses (query name first).
    chain: Option<Box<[Box<str>]>>,
    pub first_seen: u32,
    pub responses: u32,
    /// New answers and returns of expired ones, saturating (what makes a key busy).
    changes: u8,
    pub level: super::model::Level,
    pub last_eval: u32,
    pub last_score: f32,
    /// Bit per role, see `super::ROLE_*`.
    pub roles: u8,
    /// The `MARK_*` flags ([`MARK_HOLZ`], [`MARK_BLOCKABLE`], ...): one byte for all of them,
    /// since a million keys hold it (see `per_key_records_stay_small`).
    pub marks: u8,
    /// The key is flux and not allowlisted: the addresses it resolves to are bots other
    /// domains are compared with, including those it shows after it was judged.
    pub shares_bots: bool,
    /// At its last score the key was not flux but could become flux on shared bots alone
    /// (see `model::could_flux_on_shared_bots`).
    pub watch: bool,
    /// The allowlisted suffix of a name that fed this key (a seed host feeding its domain).
    pub allowed_by: Option<Box<str>>,
    /// Unrelated registered domains whose names lead here through CNAME chains: a 14-bit tag
    /// of the last one, and in the low 2 bits how many times it changed (saturating at 3; 2
    /// or more means two customers or more). See `model::provider_zone`.
    customers: u16,
    /// The minute (observation time / 60, wrapping at 256) the key first qualified for the
    /// block gate without falling out since: one byte, so the hold costs no memory.
    pub block_minute: u8,
    /// Something the features read changed since the last score: a new answer, a larger TTL,
    /// or an entry seen again that had left a window. See [`KeyState::unchanged_since_eval`].
    dirty: bool,
    /// When the oldest entry of a window at the last score leaves it (see [`Nested`]).
    changes_at: u32,
    /// Other domains' bots per window at the last score.
    last_shared: [u8; WINDOWS.len()],
}

/// The features over nested windows, and when they would next change by age alone.
pub struct Nested {
    pub windows: [Option<Features>; WINDOWS.len()],
    /// The first second at which an entry (address, answer, NS host or glue) counted in one
    /// of the windows falls out of it. Until then, with no new data, the features stay the same.
    pub changes_at: u32,
}

/// Features of one key over one window. Serialised into verdicts.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Features {
    pub window: &'static str,
    pub responses: u32,
    /// Distinct answers in the window.
    pub rrsets: u32,
    pub distinct_ips: u32,
    pub distinct_asns: u32,
    /// Distinct organisations (AS-name families), or /16s without an ASN database.
    pub distinct_networks: u32,
    pub asn_ip_ratio: f64,
    /// Distinct /16 (IPv4) and /48 (IPv6) prefixes.
    pub distinct_prefixes: u32,
    /// Distinct /24 (IPv4) and /48 (IPv6) blocks.
    pub distinct_subnets: u32,
    /// Blocks (as `distinct_subnets`) holding exactly one of the addresses: scattered
    /// machines rather than a farm or a PoP, which number their servers inside one block.
    pub lone_subnets: u32,
    /// Answers after the first whose addresses were all new to the key.
    pub fresh_answers: u32,
    /// Answers after the first that brought a network the key had no address in.
    pub network_arrivals: u32,
    /// Answers after the first (the ones growth, freshness and arrivals are over), counting
    /// each return of an expired answer.
    pub later_answers: u32,
    /// Returns of expired answers: the authority gave an answer it had given before.
    pub returning_answers: u32,
    /// Shannon entropy of the addresses over prefixes, divided by its maximum (log of the count).
    pub prefix_entropy: f64,
    pub distinct_countries: u32,
    /// Largest TTL of any answer: the authoritative estimate.
    pub ttl_max: u32,
    /// Distinct addresses divided by the largest single answer.
    pub fluxiness: f64,
    /// New addresses per address handed out after the first answer: each distinct answer on
    /// its first appearance, and again whenever it comes back after it expired. Cache re-shows
    /// of an answer still valid do not count (see [`KeyState::add_answer`]).
    pub ip_growth: f64,
    pub answer_size_max: u32,
    pub answer_size_mean: f64,
    /// Share of multi-address answers that mix networks.
    pub mixed_answers: f64,
    /// The most networks one answer spanned.
    pub answer_networks_max: u32,
    /// Answers with two or more addresses (the ones `mixed_answers` is over).
    pub multi_address_answers: u32,
    /// Addresses in the window that keys already judged flux resolved to (shared bots).
    pub shared_flux_ips: u32,
    /// Addresses in first-party content networks or not routable (see `super::infra`).
    pub first_party_ips: u32,
    /// Unrelated registered domains that CNAME into the key (2 stands for two or more; ever,
    /// not per window; 0 for a key that is also an owner name).
    pub customers: u32,
    /// Some name under the key was queried directly (not only reached through other domains'
    /// CNAMEs); ever.
    pub queried_directly: bool,
    /// Single-address answers forged or fronted, judged over the longest window (see
    /// `model::forged_or_fronted`).
    pub forged_answers: bool,
    pub ns_hosts: u32,
    /// NS names seen beyond the largest single NS set.
    pub ns_churn: u32,
    /// The most glue addresses, and glue networks, of one NS host.
    pub glue_ips_max: u32,
    pub glue_networks_max: u32,
    /// NS hosts whose glue in the window is more than one response carried (it rotated).
    pub rotating_ns_hosts: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cname_chain: Vec<String>,
}

impl KeyState {
    pub fn new(now: u32) -> Self {
        Self {
            first_seen: now,
            ..Self::default()
        }
    }

    /// Records one answer (the addresses owned by this key in one response). Returns whether it
    /// is news: an answer the key has not had, or one it had that comes back after it expired.
    /// That is when features are worth recomputing. An answer still valid since it was last
    /// seen (a cache re-showing it, or two names of a domain answering in turn) is not news.
    pub fn add_answer(&mut self, now: u32, ttl: u32, addrs: &[AddrInfo]) -> bool {
        self.responses = self.responses.saturating_add(1);
        // Start the loads of the two arrays searched below, so their cache misses overlap
        // with the answer search instead of following it (a key's state is usually cold).
        std::hint::black_box(self.ip_fps.first().copied());
        std::hint::black_box(self.ips.first().map(|e| e.last));
        let hash = rrset_hash(addrs);
        let expires = now.saturating_add(ttl);
        let outside = self.outside_since_eval();
        if let Some(r) = self.rrsets.iter_mut().rev().find(|r| r.hash == hash) {
            let until = r.last.saturating_add(u32::from(r.valid_for));
            let returned = now >= until;
            // Its addresses were seen at least as recently as it was (they are touched with
            // it), so if none of them can move between windows, the answer's age says so.
            self.dirty |= returned || ttl > r.ttl || r.last < outside;
            r.last = now;
            r.ttl = r.ttl.max(ttl);
            r.valid_for = valid_for(until.max(expires) - now);
            if returned {
                r.returns = r.returns.saturating_add(1);
                self.changes = self.changes.saturating_add(1);
            }
            self.touch_ips(now, addrs);
            return returned;
        }
        self.dirty = true;
        let nets = known_networks(addrs);
        let mut fresh: SmallVec<[AddrInfo; 8]> = SmallVec::new();
        for a in addrs {
            if let Some(e) = self.find_ip(&a.ip) {
                e.last = now;
            } else {
                fresh.push(*a);
            }
        }
        // Only a new address can bring a network the key has no address in.
        let mut new_networks = 0usize;
        if !fresh.is_empty() {
            new_networks = known_networks(&fresh)
                .iter()
                .filter(|n| !self.ips.iter().any(|e| e.addr.network == **n))
                .count();
        }
        let new = u8::try_from(fresh.len()).unwrap_or(u8::MAX);
        // Most keys are seen with one answer and never again: sized to it, not to the four
        // entries a first push reserves (about 100 bytes a key over a million keys).
        if self.ips.is_empty() {
            self.ips.reserve_exact(fresh.len());
            self.ip_fps.reserve_exact(fresh.len());
        }
        if self.rrsets.is_empty() {
            self.rrsets.reserve_exact(1);
        }
        for a in fresh {
            self.insert_ip(IpEntry { addr: a, last: now });
        }
        let first = self.rrsets.is_empty() && self.ips.len() == usize::from(new);
        if self.rrsets.len() >= MAX_RRSETS
            && let Some((i, _)) = self.rrsets.iter().enumerate().min_by_key(|(_, r)| r.last)
        {
            self.rrsets.swap_remove(i);
        }
        self.changes = self.changes.saturating_add(1);
        self.rrsets.push(Rrset {
            hash,
            last: now,
            ttl,
            valid_for: valid_for(ttl),
            returns: 0,
            size: u8::try_from(addrs.len()).unwrap_or(u8::MAX),
            new,
            networks: u8::try_from(nets.len()).unwrap_or(u8::MAX),
            new_networks: u8::try_from(new_networks).unwrap_or(u8::MAX),
            first,
        });
        true
    }

    fn touch_ips(&mut self, now: u32, addrs: &[AddrInfo]) {
        for a in addrs {
            if let Some(e) = self.find_ip(&a.ip) {
                e.last = now;
            }
        }
    }

    /// Entries last seen before this were outside the shortest window at the last score. One
    /// seen before that and again since may count in windows it did not; one seen after it
    /// was in every window then and is in every window now.
    fn outside_since_eval(&self) -> u32 {
        self.last_eval.saturating_sub(WINDOWS[0].0)
    }

    /// Whether scoring now would read exactly what the last score read: no new data and no
    /// entry aged out of a window since (`shared` is the current [`Self::shared_bots`]).
    /// Observation time running backwards (capture files out of order) counts as a change.
    pub fn unchanged_since_eval(&self, now: u32, shared: &[u32; WINDOWS.len()]) -> bool {
        !self.dirty
            && now >= self.last_eval
            && now < self.changes_at
            && shared
                .iter()
                .zip(self.last_shared)
                .all(|(s, l)| *s == u32::from(l))
    }

    /// Whether something the features read changed since the last score.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Records that the key was just scored at `now`, from `nested` and `shared`.
    pub fn mark_evaluated(&mut self, now: u32, changes_at: u32, shared: &[u32; WINDOWS.len()]) {
        self.last_eval = now;
        self.dirty = false;
        self.changes_at = changes_at;
        for (l, s) in self.last_shared.iter_mut().zip(shared) {
            // At most MAX_IPS_PER_KEY, so exact.
            *l = u8::try_from(*s).unwrap_or(u8::MAX);
        }
    }

    fn insert_ip(&mut self, e: IpEntry) {
        if self.ips.len() >= MAX_IPS_PER_KEY
            && let Some((i, _)) = self.ips.iter().enumerate().min_by_key(|(_, e)| e.last)
        {
            self.ips.swap_remove(i);
            self.ip_fps.swap_remove(i);
        }
        self.ip_fps.push(fingerprint(&e.addr.ip));
        self.ips.push(e);
    }

    fn find_ip(&mut self, ip: &[u8; 16]) -> Option<&mut IpEntry> {
        const LANES: usize = 16;
        let fp = fingerprint(ip);
        // A bit mask of matching fingerprints per block, without early exit inside it, so the
        // compiler compares a whole block in a few vector instructions.
        for (block, fps) in self.ip_fps.chunks(LANES).enumerate() {
            let mut mask = 0u32;
            for (i, f) in fps.iter().enumerate() {
                mask |= u32::from(*f & FP_MASK == fp) << i;
            }
            while mask != 0 {
                let i = block * LANES + mask.trailing_zeros() as usize;
                if self.ips.get(i).is_some_and(|e| e.addr.ip == *ip) {
                    return self.ips.get_mut(i);
                }
                mask &= mask - 1;
            }
        }
        None
    }

    /// Records a zone's NS host and the glue that came with it (possibly none).
    pub fn add_ns(&mut self, now: u32, host: &str, glue: &[AddrInfo], set_size: usize) -> bool {
        let outside = self.outside_since_eval();
        let t = self.ns.get_or_insert_with(Box::default);
        let set_size = u8::try_from(set_size).unwrap_or(u8::MAX);
        let mut dirty = set_size > t.max_set;
        t.max_set = t.max_set.max(set_size);
        let i = match t.hosts.iter().position(|h| &*h.name == host) {
            Some(i) => i,
            None => {
                dirty = true;
                if t.hosts.len() >= MAX_NS_HOSTS
                    && let Some((i, _)) = t.hosts.iter().enumerate().min_by_key(|(_, h)| h.last)
                {
                    t.hosts.swap_remove(i);
                }
                t.hosts.push(NsHost {
                    name: host.into(),
                    last: now,
                    glue: Vec::new(),
                    glue_set_max: 0,
                });
                t.hosts.len() - 1
            }
        };
        let Some(h) = t.hosts.get_mut(i) else {
            return false;
        };
        let glue_set = u8::try_from(glue.len()).unwrap_or(u8::MAX);
        dirty |= h.last < outside || glue_set > h.glue_set_max;
        h.last = now;
        h.glue_set_max = h.glue_set_max.max(glue_set);
        let mut changed = false;
        for a in glue {
            if let Some(g) = h.glue.iter_mut().find(|g| g.0.ip == a.ip) {
                dirty |= g.1 < outside;
                g.1 = now;
            } else {
                changed = true;
                if h.glue.len() >= MAX_GLUE
                    && let Some((i, _)) = h.glue.iter().enumerate().min_by_key(|(_, g)| g.1)
                {
                    h.glue.swap_remove(i);
                }
                h.glue.push((*a, now));
            }
        }
        self.dirty |= dirty || changed;
        changed
    }

    /// Notes who reached this registered-domain key (`own`) through the response's CNAME chain
    /// (empty when its addresses were not at the end of the chain): a customer, when the chain
    /// starts in another registered domain; otherwise one of its own names was queried
    /// directly.
    pub fn note_customer(&mut self, chain: &[&str], own: &str) {
        let customer = chain
            .first()
            .and_then(|q| super::registered_domain(q))
            .filter(|rd| *rd != own);
        let Some(rd) = customer else {
            self.set_mark(MARK_QUERIED_DIRECTLY, true);
            return;
        };
        let h = fnv32(rd.as_bytes());
        let tag = (h ^ (h >> 16)) as u16 & !3;
        if tag != self.customers & !3 {
            let count = (self.customers & 3).saturating_add(1).min(3);
            self.customers = tag | count;
        }
    }

    pub fn marked(&self, mark: u8) -> bool {
        self.marks & mark != 0
    }

    pub fn set_mark(&mut self, mark: u8, on: bool) {
        if on {
            self.marks |= mark;
        } else {
            self.marks &= !mark;
        }
    }

    pub fn set_chain(&mut self, chain: &[&str]) {
        if chain.len() < 2 {
            return;
        }
        let same = self.chain.as_ref().is_some_and(|c| {
            c.len() == chain.len() && c.iter().zip(chain).all(|(a, b)| &**a == *b)
        });
        if !same {
            self.chain = Some(chain.iter().map(|s| Box::<str>::from(*s)).collect());
        }
    }

    pub fn chain(&self) -> impl Iterator<Item = &str> {
        self.chain.iter().flat_map(|c| c.iter().map(|s| &**s))
    }

    /// ASNs of the addresses seen in the window.
    pub fn asns(&self, now: u32, window: u32) -> impl Iterator<Item = u32> + '_ {
        let cutoff = now.saturating_sub(window);
        self.ips
            .iter()
            .filter(move |e| e.last >= cutoff)
            .map(|e| e.addr.asn)
    }

    /// The key has changed answers often (a busy key).
    pub fn busy(&self) -> bool {
        self.changes >= BUSY_CHANGES
    }

    /// Per window, the addresses that are other flux domains' bots (`own` is this key's domain
    /// id in the table). An address the table has placed is remembered with it: a bot keeps
    /// its first owner, so the answer does not change, and a flux key's own bots (all of its
    /// addresses, once it shares them) are not looked up again at every rescore.
    pub fn shared_bots(
        &mut self,
        now: u32,
        flux_ips: &super::shared::FluxIps,
        own: u32,
    ) -> [u32; WINDOWS.len()] {
        let mut shared = [0u32; WINDOWS.len()];
        if flux_ips.is_empty() {
            return shared;
        }
        for (e, fp) in self.ips.iter().zip(self.ip_fps.iter_mut()) {
            if *fp & FP_OWN_BOT != 0 {
                continue;
            }
            // A bot can turn out to be shared infrastructure later (see
            // `FluxIps::note_stable_user`), so another domain's bot is asked again, unless no
            // bot ever did (the table lookup is what the mark saves).
            let trusted = *fp & FP_OTHER_BOT != 0 && flux_ips.infrastructure_found() == 0;
            if !trusted {
                match flux_ips.owner(&e.addr.ip) {
                    Some(d) if d != own => *fp |= FP_OTHER_BOT,
                    Some(_) => {
                        *fp |= FP_OWN_BOT;
                        continue;
                    }
                    None => {
                        *fp &= !FP_OTHER_BOT;
                        continue;
                    }
                }
            }
            for (i, w) in WINDOWS.iter().enumerate() {
                if e.last >= now.saturating_sub(w.0) {
                    shared[i] += 1;
                }
            }
        }
        shared
    }

    /// Whether the key has had one answer only in the shortest window and that answer came
    /// back after it expired: the mark of a site on stable serving addresses (shared hosting,
    /// an anycast front end), where flux hands out new bots as its answers expire.
    /// The answer holds at most [`STABLE_ANSWER_MAX`] addresses: a shared-hosting or anycast
    /// front end is one to four addresses, and a stable answer listing a whole botnet must not
    /// clear it.
    pub fn stable_single_answer(&self, now: u32) -> bool {
        let cutoff = now.saturating_sub(WINDOWS[0].0);
        let mut live = self.rrsets.iter().filter(|r| r.last >= cutoff);
        matches!(
            (live.next(), live.next()),
            (Some(r), None) if r.returns > 0 && usize::from(r.size) <= STABLE_ANSWER_MAX
        )
    }

    /// Addresses seen in the window.
    pub fn addresses(&self, now: u32, window: u32) -> impl Iterator<Item = &AddrInfo> + '_ {
        let cutoff = now.saturating_sub(window);
        self.ips
            .iter()
            .filter(move |e| e.last >= cutoff)
            .map(|e| &e.addr)
    }

    /// The features over the `window` seconds before `now`.
    pub fn features(&self, now: u32, window: (u32, &'static str)) -> Features {
        let cutoff = now.saturating_sub(window.0);
        let mut acc = Acc::new();
        acc.add(self, |last| last >= cutoff);
        acc.features(self, window.1, cutoff)
    }

    /// The features over each of [`WINDOWS`] (only the first `n`), in one pass: the windows are
    /// nested, so the longer one continues the shorter one's tallies with the older entries
    /// instead of starting again.
    pub fn features_nested(&self, now: u32, n: usize) -> Nested {
        let mut out = Nested {
            windows: Default::default(),
            changes_at: u32::MAX,
        };
        let mut acc = Acc::new();
        let mut newer_than = u32::MAX;
        for (slot, w) in out.windows.iter_mut().zip(WINDOWS).take(n) {
            let cutoff = now.saturating_sub(w.0);
            // Each entry is added by exactly one window: the first whose cutoff it passes.
            acc.add(self, |last| {
                last >= cutoff && (newer_than == u32::MAX || last < newer_than)
            });
            *slot = Some(acc.features(self, w.1, cutoff));
            newer_than = cutoff;
            // An entry seen at `last` is in the window while now - w <= last.
            let oldest = acc.oldest.min(self.ns_oldest(cutoff));
            if oldest != u32::MAX {
                out.changes_at = out.changes_at.min(oldest.saturating_add(w.0 + 1));
            }
        }
        out
    }

    /// The oldest sighting of an NS host or glue address in the window from `cutoff`.
    fn ns_oldest(&self, cutoff: u32) -> u32 {
        let Some(t) = &self.ns else { return u32::MAX };
        t.hosts
            .iter()
            .filter(|h| h.last >= cutoff)
            .flat_map(|h| {
                std::iter::once(h.last).chain(h.glue.iter().map(|g| g.1).filter(|l| *l >= cutoff))
            })
            .min()
            .unwrap_or(u32::MAX)
    }

    /// A rough count of the heap bytes this state holds (for the memory figure).
    pub fn heap_bytes(&self) -> usize {
        // The allocator's own header per allocation, for the three arrays.
        let arrays = [
            self.ips.capacity(),
            self.ip_fps.capacity(),
            self.rrsets.capacity(),
        ];
        MALLOC_OVERHEAD * arrays.iter().filter(|c| **c > 0).count()
            + self.ips.capacity() * size_of::<IpEntry>()
            + self.ip_fps.capacity() * size_of::<u32>()
            + self.rrsets.capacity() * size_of::<Rrset>()
            + self.ns.as_ref().map_or(0, |t| {
                size_of::<NsTable>()
                    + t.hosts.capacity() * size_of::<NsHost>()
                    + t.hosts
                        .iter()
                        .map(|h| h.name.len() + h.glue.capacity() * size_of::<(AddrInfo, u32)>())
                        .sum::<usize>()
            })
            + self
                .chain
                .as_ref()
                .map_or(0, |c| c.iter().map(|s| s.len() + 16).sum())
    }
}

/// Running totals of a key's addresses and answers, for one window or nested ones.
struct Acc {
    distinct_ips: u32,
    asns: Tally,
    nets: Tally,
    ccs: Tally,
    subnets: Tally,
    prefixes: Tally,
    rrsets: u32,
    ttl_max: u32,
    answer_size_max: u32,
    answer_networks_max: u32,
    size_sum: u32,
    /// Addresses handed out after the first answer, and how many of them were new.
    returned: u32,
    new: u32,
    later_answers: u32,
    returning_answers: u32,
    fresh_answers: u32,
    network_arrivals: u32,
    multi: u32,
    mixed: u32,
    /// The oldest sighting among the entries added.
    oldest: u32,
}

impl Acc {
    fn new() -> Self {
        Self {
            distinct_ips: 0,
            asns: Tally::new(),
            nets: Tally::new(),
            ccs: Tally::new(),
            subnets: Tally::new(),
            prefixes: Tally::new(),
            rrsets: 0,
            ttl_max: 0,
            answer_size_max: 0,
            answer_networks_max: 0,
            size_sum: 0,
            returned: 0,
            new: 0,
            later_answers: 0,
            returning_answers: 0,
            fresh_answers: 0,
            network_arrivals: 0,
            multi: 0,
            mixed: 0,
            oldest: u32::MAX,
        }
    }

    /// Adds the addresses and answers whose last sighting `take` accepts.
    fn add(&mut self, k: &KeyState, take: impl Fn(u32) -> bool) {
        for e in k.ips.iter().filter(|e| take(e.last)) {
            self.oldest = self.oldest.min(e.last);
            self.distinct_ips += 1;
            if e.addr.asn != 0 {
                self.asns.add(e.addr.asn);
            }
            if e.addr.network != 0 {
                self.nets.add(e.addr.network);
            }
            if e.addr.country != [0, 0] {
                self.ccs.add(u32::from(u16::from_be_bytes(e.addr.country)));
            }
            let subnet = e.addr.subnet();
            self.subnets.add(subnet);
            self.prefixes.add(AddrInfo::prefix_of_subnet(subnet));
        }
        for r in k.rrsets.iter().filter(|r| take(r.last)) {
            self.oldest = self.oldest.min(r.last);
            self.rrsets += 1;
            self.ttl_max = self.ttl_max.max(r.ttl);
            self.answer_size_max = self.answer_size_max.max(u32::from(r.size));
            self.size_sum += u32::from(r.size);
            self.returned += r.handed_out();
            self.later_answers += u32::from(r.returns);
            self.returning_answers += u32::from(r.returns);
            if !r.first {
                self.new += u32::from(r.new);
                self.later_answers += 1;
                if r.new >= r.size {
                    self.fresh_answers += 1;
                }
                if r.new_networks > 0 {
                    self.network_arrivals += 1;
                }
            }
            self.answer_networks_max = self.answer_networks_max.max(u32::from(r.networks));
            if r.size >= mixed_answers::MULTI_ADDRESS {
                self.multi += 1;
                if r.networks >= mixed_answers::MIXED_NETWORKS {
                    self.mixed += 1;
                }
            }
        }
    }

    /// The features of what has been added so far; the name servers are read for `cutoff`.
    fn features(&self, k: &KeyState, window: &'static str, cutoff: u32) -> Features {
        use super::model::round3;
        let mut f = Features {
            window,
            responses: k.responses,
            rrsets: self.rrsets,
            distinct_ips: self.distinct_ips,
            distinct_asns: self.asns.distinct(),
            distinct_networks: self.nets.distinct(),
            distinct_countries: self.ccs.distinct(),
            distinct_prefixes: self.prefixes.distinct(),
            prefix_entropy: round3(self.prefixes.normalised_entropy()),
            distinct_subnets: self.subnets.distinct(),
            lone_subnets: self.subnets.lone(),
            ttl_max: self.ttl_max,
            answer_size_max: self.answer_size_max,
            answer_networks_max: self.answer_networks_max,
            later_answers: self.later_answers,
            returning_answers: self.returning_answers,
            fresh_answers: self.fresh_answers,
            network_arrivals: self.network_arrivals,
            multi_address_answers: self.multi,

            // An owner name answers for itself: customers never excuse it.
            customers: if k.roles & super::ROLE_OWNER != 0 {
                0
            } else {
                u32::from(k.customers & 3).min(PROVIDER_ZONE_CUSTOMERS)
            },
            queried_directly: k.marked(MARK_QUERIED_DIRECTLY),
            ..Features::default()
        };
        if f.distinct_ips > 0 {
            f.asn_ip_ratio = round3(f64::from(f.distinct_asns) / f64::from(f.distinct_ips));
        }
        if f.rrsets > 0 {
            f.answer_size_mean = round3(f64::from(self.size_sum) / f64::from(f.rrsets));
        }
        if self.returned > 0 {
            f.ip_growth = round3(f64::from(self.new) / f64::from(self.returned));
        }
        if self.multi > 0 {
            f.mixed_answers = round3(f64::from(self.mixed) / f64::from(self.multi));
        }
        if f.answer_size_max > 0 {
            f.fluxiness = round3(f64::from(f.distinct_ips) / f64::from(f.answer_size_max));
        }
        // Only read by `model::forged_or_fronted`, which needs one address per answer: the
        // addresses are looked at again only then (most keys never pay for it).
        if f.answer_size_max == FORGED_ANSWER_SIZE {
            f.first_party_ips = k
                .ips
                .iter()
                .filter(|e| {
                    e.last >= cutoff && super::infra::first_party(e.addr.asn, e.addr.to_ip())
                })
                .count() as u32;
        }
        if let Some(t) = &k.ns {
            for h in t.hosts.iter().filter(|h| h.last >= cutoff) {
                f.ns_hosts += 1;
                let mut gnets = Tally::new();
                let mut n = 0;
                for (g, _) in h.glue.iter().filter(|g| g.1 >= cutoff) {
                    n += 1;
                    if g.network != 0 {
                        gnets.add(g.network);
                    }
                }
                f.glue_ips_max = f.glue_ips_max.max(n);
                if n > u32::from(h.glue_set_max) {
                    f.rotating_ns_hosts += 1;
                }
                f.glue_networks_max = f.glue_networks_max.max(gnets.distinct());
            }
            f.ns_churn = f.ns_hosts.saturating_sub(u32::from(t.max_set));
        }
        f
    }
}

/// Slots of a [`Tally`]: twice its most values, so probes stay short.
const TALLY_SLOTS: usize = 2 * MAX_IPS_PER_KEY;
const _: () = assert!(TALLY_SLOTS.is_power_of_two() && TALLY_SLOTS <= 256);

/// The distinct values among at most [`MAX_IPS_PER_KEY`] (further ones are ignored, which the
/// callers never reach), and how often each occurred: an open-addressing table on the stack.
/// It replaced sorting a buffer per feature, which was the largest single cost of a re-score.
struct Tally {
    keys: [u32; TALLY_SLOTS],
    /// 0 marks a free slot.
    counts: [u8; TALLY_SLOTS],
    /// Occupied slots in first-seen order, so reading the counts skips the free ones.
    used: [u8; MAX_IPS_PER_KEY],
    distinct: usize,
    values: usize,
}

impl Tally {
    fn new() -> Self {
        Self {
            keys: [0; TALLY_SLOTS],
            counts: [0; TALLY_SLOTS],
            used: [0; MAX_IPS_PER_KEY],
            distinct: 0,
            values: 0,
        }
    }

    fn add(&mut self, v: u32) {
        if self.values >= MAX_IPS_PER_KEY {
            return;
        }
        self.values += 1;
        // Fibonacci hashing: the top bits of the product index the table.
        let mut i = (v.wrapping_mul(0x9e37_79b9) >> (32 - TALLY_SLOTS.trailing_zeros())) as usize;
        // At most MAX_IPS_PER_KEY of the slots are ever taken, so a free one is always found.
        for _ in 0..TALLY_SLOTS {
            match (self.counts.get_mut(i), self.keys.get_mut(i)) {
                (Some(c), Some(k)) if *c == 0 => {
                    *c = 1;
                    *k = v;
                    if let Some(u) = self.used.get_mut(self.distinct) {
                        *u = i as u8;
                    }
                    self.distinct += 1;
                    return;
                }
                (Some(c), Some(k)) if *k == v => {
                    *c = c.saturating_add(1);
                    return;
                }
                _ => i = (i + 1) & (TALLY_SLOTS - 1),
            }
        }
    }

    fn counts(&self) -> impl Iterator<Item = u8> + '_ {
        self.used
            .iter()
            .take(self.distinct)
            .filter_map(|&i| self.counts.get(usize::from(i)).copied())
    }

    fn distinct(&self) -> u32 {
        u32::try_from(self.distinct).unwrap_or(u32::MAX)
    }

    /// Values that occurred exactly once.
    fn lone(&self) -> u32 {
        u32::try_from(self.counts().filter(|c| *c == 1).count()).unwrap_or(u32::MAX)
    }

    /// Shannon entropy of the values over the distinct ones, divided by its maximum (the log
    /// of the number of values); 0 for fewer than two values.
    fn normalised_entropy(&self) -> f64 {
        let n = self.values as f64;
        if self.values < 2 {
            return 0.0;
        }
        let h: f64 = self
            .counts()
            .map(|c| {
                let p = f64::from(c) / n;
                -p * p.ln()
            })
            .sum();
        h / n.ln()
    }
}

/// The distinct known networks (0 is unknown) of some addresses.
fn known_networks(addrs: &[AddrInfo]) -> SmallVec<[u32; 8]> {
    let mut nets: SmallVec<[u32; 8]> = addrs
        .iter()
        .map(|a| a.network)
        .filter(|n| *n != 0)
        .collect();
    nets.sort_unstable();
    nets.dedup();
    nets
}

/// Seconds an answer stays valid, as stored (18 hours at most: beyond that it is long-lived
/// either way).
fn valid_for(secs: u32) -> u16 {
    u16::try_from(secs).unwrap_or(u16::MAX)
}

/// Order-independent hash of an answer's address set. Answers are matched against the whole
/// history by it, so each address is mixed thoroughly (FNV alone let sets of similar addresses
/// collide).
fn rrset_hash(addrs: &[AddrInfo]) -> u32 {
    let mut h = 0u64;
    for a in addrs {
        // Sum of per-address hashes: the same set in any order hashes the same.
        let v = u128::from_le_bytes(a.ip);
        h = h.wrapping_add(mix64((v as u64) ^ mix64((v >> 64) as u64)));
    }
    let h = mix64(h ^ addrs.len() as u64);
    (h ^ (h >> 32)) as u32
}

/// The splitmix64 finaliser.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The address's four 32-bit words folded: cheap, and exact for IPv4 (the mapped prefix is
/// constant), which is most of what keys hold.
fn fingerprint(ip: &[u8; 16]) -> u32 {
    let v = u128::from_le_bytes(*ip);
    ((v as u32) ^ ((v >> 32) as u32) ^ ((v >> 64) as u32) ^ ((v >> 96) as u32)) & FP_MASK
}

/// The fingerprint bits of an `ip_fps` word; the top two remember what the shared-bot table
/// said about the address (see [`KeyState::shared_bots`]).
const FP_MASK: u32 = 0x3fff_ffff;
/// Another flux domain's bot.
const FP_OTHER_BOT: u32 = 1 << 31;
/// A bot this key's own domain showed.
const FP_OWN_BOT: u32 = 1 << 30;

pub fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(last: u8, asn: u32, cc: &[u8; 2]) -> AddrInfo {
        let ip = IpAddr::from([10, last, 0, 1]);
        AddrInfo {
            ip: AddrInfo::ip_bytes(ip),
            asn,
            network: asn,
            country: *cc,
        }
    }

    #[test]
    fn repeated_answers_are_one_rrset_and_growth_counts_new_addresses() {
        let mut k = KeyState::new(0);
        assert!(k.add_answer(0, 300, &[a(1, 1, b"US"), a(2, 2, b"DE")]));
        assert!(
            !k.add_answer(10, 250, &[a(2, 2, b"DE"), a(1, 1, b"US")]),
            "same set, other order"
        );
        assert!(k.add_answer(400, 300, &[a(3, 3, b"FR"), a(2, 2, b"DE")]));
        let f = k.features(400, WINDOWS[0]);
        assert_eq!(f.responses, 3);
        assert_eq!(f.rrsets, 2);
        assert_eq!(f.distinct_ips, 3);
        assert_eq!(f.distinct_asns, 3);
        assert_eq!(f.distinct_countries, 3);
        assert_eq!(f.ttl_max, 300);
        assert_eq!(
            f.ip_growth, 0.5,
            "one new of two returned, the first answer excluded"
        );
        assert_eq!(f.mixed_answers, 1.0);
        assert_eq!(f.fluxiness, 1.5);
        assert_eq!(f.prefix_entropy, 1.0);
    }

    #[test]
    fn cache_re_shows_are_not_rotation_but_returns_after_expiry_are() {
        let mut k = KeyState::new(0);
        let (x, y) = ([a(1, 1, b"US")], [a(2, 2, b"DE")]);
        assert!(k.add_answer(0, 300, &x));
        // Two names of one domain answering in turn from their caches: one new answer.
        assert!(k.add_answer(10, 300, &y));
        assert!(!k.add_answer(20, 290, &x), "x is still cached");
        assert!(!k.add_answer(30, 280, &y));
        let f = k.features(30, WINDOWS[0]);
        assert_eq!((f.rrsets, f.later_answers, f.returning_answers), (2, 1, 0));
        assert_eq!(f.ip_growth, 1.0, "alternation does not dilute growth");
        assert_eq!(f.fresh_answers, 1);
        assert_eq!(f.network_arrivals, 1);
        // x expired at 300 and the authority hands it out again: a return, no new address.
        assert!(k.add_answer(320, 300, &x));
        let f = k.features(320, WINDOWS[0]);
        assert_eq!((f.rrsets, f.later_answers, f.returning_answers), (2, 2, 1));
        assert_eq!(f.ip_growth, 0.5);
        assert!(!k.busy());
    }

    /// What makes a key's features change without a new answer: an answer (and its addresses)
    /// or a name server seen again after it left the shortest window, a larger TTL, glue that
    /// grew, and entries ageing out of a window. Anything else leaves them as they were.
    #[test]
    fn unchanged_since_eval_sees_every_change_the_features_read() {
        let eval = |k: &mut KeyState, now: u32| {
            let n = k.features_nested(now, WINDOWS.len());
            k.mark_evaluated(now, n.changes_at, &[0, 0]);
            n.changes_at
        };
        let x = [a(1, 1, b"US")];
        let y = [a(2, 2, b"DE")];
        let mut k = KeyState::new(0);
        k.add_answer(0, 20_000, &x);
        k.add_answer(3_000, 20_000, &y);
        // x leaves the 1h window at 3601, y at 6601; x leaves the 24h one at 86,401.
        assert_eq!(eval(&mut k, 3_500), 3_601);
        assert!(k.unchanged_since_eval(3_600, &[0, 0]));
        assert!(!k.unchanged_since_eval(3_601, &[0, 0]), "x aged out of 1h");
        assert!(
            !k.unchanged_since_eval(3_500, &[1, 0]),
            "a shared bot appeared"
        );
        assert!(
            !k.unchanged_since_eval(3_499, &[0, 0]),
            "time ran backwards"
        );
        assert_eq!(eval(&mut k, 4_000), 6_601);
        // y re-shown inside the 1h window: nothing moves.
        assert!(!k.add_answer(4_100, 20_000, &y));
        assert!(k.unchanged_since_eval(4_100, &[0, 0]));
        // y again with a larger TTL: the authoritative estimate grew.
        assert!(!k.add_answer(4_200, 30_000, &y));
        assert!(!k.unchanged_since_eval(4_200, &[0, 0]));
        assert_eq!(eval(&mut k, 4_200), 7_801);
        // x, still valid but outside the 1h window since 3601, is re-shown: it moves into it.
        assert!(!k.add_answer(4_300, 20_000, &x));
        assert!(!k.unchanged_since_eval(4_300, &[0, 0]));
        eval(&mut k, 4_300);
        // A new answer.
        assert!(k.add_answer(4_400, 60, &[a(3, 3, b"FR")]));
        assert!(!k.unchanged_since_eval(4_400, &[0, 0]));

        let mut z = KeyState::new(0);
        let g1 = [a(10, 1, b"US")];
        let g2 = [a(10, 1, b"US"), a(11, 2, b"US")];
        z.add_ns(0, "ns1.z.test", &g1, 1);
        eval(&mut z, 10);
        z.add_ns(20, "ns1.z.test", &g1, 1);
        assert!(
            z.unchanged_since_eval(20, &[0, 0]),
            "the same host and glue again"
        );
        z.add_ns(25, "ns1.z.test", &g2[1..], 1);
        assert!(!z.unchanged_since_eval(25, &[0, 0]), "new glue");
        eval(&mut z, 25);
        z.add_ns(30, "ns1.z.test", &g2, 1);
        assert!(
            !z.unchanged_since_eval(30, &[0, 0]),
            "known glue, more at once"
        );
        eval(&mut z, 30);
        z.add_ns(40, "ns1.z.test", &g1, 2);
        assert!(!z.unchanged_since_eval(40, &[0, 0]), "a larger NS set");
        eval(&mut z, 40);
        z.add_ns(50, "ns2.z.test", &[], 2);
        assert!(!z.unchanged_since_eval(50, &[0, 0]), "a new host");
        eval(&mut z, 5_000);
        z.add_ns(5_010, "ns2.z.test", &[], 2);
        assert!(
            !z.unchanged_since_eval(5_010, &[0, 0]),
            "a host back in the 1h window"
        );
        // ns1 seen without glue, then with glue last seen long ago.
        z.add_ns(5_010, "ns1.z.test", &[], 2);
        eval(&mut z, 5_010);
        z.add_ns(5_020, "ns1.z.test", &g1, 2);
        assert!(
            !z.unchanged_since_eval(5_020, &[0, 0]),
            "glue back in the 1h window"
        );
    }

    #[test]
    fn per_key_records_stay_small() {
        // A million keys hold these: the answer history entry and the key state itself.
        assert_eq!(size_of::<Rrset>(), 20);
        assert!(size_of::<KeyState>() <= 144, "{}", size_of::<KeyState>());
    }

    #[test]
    fn windows_forget_old_addresses() {
        let mut k = KeyState::new(0);
        k.add_answer(0, 60, &[a(1, 1, b"US")]);
        k.add_answer(7200, 60, &[a(2, 1, b"US")]);
        assert_eq!(k.features(7200, WINDOWS[0]).distinct_ips, 1);
        assert_eq!(k.features(7200, WINDOWS[1]).distinct_ips, 2);
    }

    #[test]
    fn address_cap_holds() {
        let mut k = KeyState::new(0);
        for i in 0..(MAX_IPS_PER_KEY as u32 + 50) {
            let ip = IpAddr::from([10, (i >> 8) as u8, i as u8, 1]);
            k.add_answer(
                i,
                60,
                &[AddrInfo {
                    ip: AddrInfo::ip_bytes(ip),
                    asn: i,
                    network: i,
                    country: [0, 0],
                }],
            );
        }
        assert_eq!(
            k.features(1000, WINDOWS[1]).distinct_ips,
            MAX_IPS_PER_KEY as u32
        );
        assert!(k.rrsets.len() <= MAX_RRSETS);
    }

    #[test]
    fn glue_and_ns_churn() {
        let mut k = KeyState::new(0);
        for i in 0..6u8 {
            k.add_ns(
                u32::from(i),
                "ns1.evil.test",
                &[a(i, u32::from(i) + 1, b"US")],
                2,
            );
            k.add_ns(u32::from(i), "ns2.evil.test", &[], 2);
        }
        k.add_ns(10, "ns3.evil.test", &[], 2);
        let f = k.features(10, WINDOWS[0]);
        assert_eq!(f.ns_hosts, 3);
        assert_eq!(f.ns_churn, 1);
        assert_eq!(f.glue_ips_max, 6);
        assert_eq!(f.glue_networks_max, 6);
    }

    fn tally_of(vals: &[u32]) -> Tally {
        let mut t = Tally::new();
        vals.iter().for_each(|v| t.add(*v));
        t
    }

    #[test]
    fn lone_blocks_are_counted() {
        let tally = |vals: &[u32]| {
            let t = tally_of(vals);
            (t.distinct(), t.lone())
        };
        assert_eq!(tally(&[]), (0, 0));
        assert_eq!(tally(&[1, 1, 2, 3, 3, 3, 4]), (4, 2));
        let farm = |last: u8, c: u8| AddrInfo {
            ip: AddrInfo::ip_bytes(IpAddr::from([192, 0, c, last])),
            ..AddrInfo::default()
        };
        let mut k = KeyState::new(0);
        k.add_answer(0, 60, &[farm(1, 2), farm(2, 2), farm(3, 7)]);
        let f = k.features(0, WINDOWS[0]);
        assert_eq!((f.distinct_subnets, f.lone_subnets), (2, 1));
        assert_eq!(f.distinct_prefixes, 1, "one /16");
        for a in [farm(1, 2), farm(9, 255)] {
            assert_eq!(AddrInfo::prefix_of_subnet(a.subnet()), a.prefix());
        }
        let v6 = AddrInfo {
            ip: AddrInfo::ip_bytes("2001:db8::1".parse().unwrap()),
            ..AddrInfo::default()
        };
        assert_eq!(AddrInfo::prefix_of_subnet(v6.subnet()), v6.prefix());
    }

    #[test]
    fn answer_hashes_tell_similar_sets_apart() {
        let set = |p: u8| {
            [20u8, 30].map(|o| AddrInfo {
                ip: AddrInfo::ip_bytes(IpAddr::from([o, p, p, 9])),
                ..AddrInfo::default()
            })
        };
        let mut seen = std::collections::HashSet::new();
        for p in 0..=255u8 {
            assert!(seen.insert(rrset_hash(&set(p))), "collision at {p}");
        }
        let mut x = set(1);
        let h = rrset_hash(&x);
        x.reverse();
        assert_eq!(rrset_hash(&x), h, "order does not matter");
    }

    #[test]
    fn entropy_is_normalised() {
        let tally = |vals: &[u32]| {
            let t = tally_of(vals);
            (t.distinct(), t.normalised_entropy())
        };
        assert_eq!(tally(&[1, 1, 1, 1]), (1, 0.0));
        let (d, h) = tally(&[1, 2, 3, 4]);
        assert_eq!(d, 4);
        assert!((h - 1.0).abs() < 1e-9);
    }

    /// One pass over nested windows gives what each window computed alone gives.
    #[test]
    fn nested_windows_match_separate_ones() {
        let addr = |i: u32| AddrInfo {
            ip: AddrInfo::ip_bytes(IpAddr::from((0x0a00_0000 + i * 7919).to_be_bytes())),
            asn: 64_500 + i % 5,
            network: 1 + i % 4,
            country: [b'A' + (i % 3) as u8, b'Z'],
        };
        let mut k = KeyState::new(0);
        for t in 0..60u32 {
            let now = t * 1_500;
            k.add_answer(now, 300, &[addr(t), addr(t + 1), addr(t / 3)]);
            if t % 7 == 0 {
                k.add_answer(now + 5, 300, &[addr(1)]);
            }
            let nested = k.features_nested(now + 10, WINDOWS.len()).windows;
            for (i, w) in WINDOWS.into_iter().enumerate() {
                assert_eq!(
                    nested[i].as_ref(),
                    Some(&k.features(now + 10, w)),
                    "t={t} {}",
                    w.1
                );
            }
            assert_eq!(k.features_nested(now + 10, 1).windows[1], None);
        }
    }

    /// The tally counts exactly what sorting did, for values that collide in its table and
    /// past its capacity.
    #[test]
    fn tally_matches_sorting() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for round in 0..2_000 {
            let n = round % 200;
            let range = 1 + (round % 97) as u64;
            let vals: Vec<u32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Multiples of 256 share their low bits; the table must still tell them apart.
                    ((x % range) as u32) << (round % 3 * 8)
                })
                .collect();
            let t = tally_of(&vals);
            let mut kept: Vec<u32> = vals.iter().copied().take(MAX_IPS_PER_KEY).collect();
            kept.sort_unstable();
            let mut runs: Vec<usize> = Vec::new();
            for (i, v) in kept.iter().enumerate() {
                if i == 0 || kept[i - 1] != *v {
                    runs.push(0);
                }
                *runs.last_mut().unwrap() += 1;
            }
            assert_eq!(t.distinct() as usize, runs.len());
            assert_eq!(t.lone() as usize, runs.iter().filter(|r| **r == 1).count());
        }
    }
}
