//! The fast-flux scorer: DNS responses in, verdicts out. This is where a verdict is made.
//!
//! For every response the scorer updates the keys it touches:
//! - the **owner name** of the address records (`www.example.com`, or the end of a CNAME chain);
//! - the **registered domain** of that owner (public-suffix rules, private section included, so
//!   `host.duckdns.org` is its own domain), which aggregates wildcard and random subdomains;
//! - for delegations in the authority section, the **zone's registered domain** (NS hosts and the
//!   glue of each) and the NS host names themselves (their glue addresses).
//!
//! The registered domain of the query name and of the final CNAME target are both covered: the
//! addresses are attributed to the domain that owns them, so `shop.example` behind a CDN does not
//! inherit the CDN's addresses, and the chain is kept as a feature of the target.
//!
//! Each key's features ([`features`]) go through the model ([`model`]); a verdict is emitted
//! whenever a key's level changes or it passes (or leaves) the block gate. Keys live in a
//! bounded table with approximate-LRU eviction (`table.rs`).

mod addr_cache;
pub mod addr_info;
pub mod features;
pub mod infra;
pub mod key_state;
pub mod model;
mod orgs;
pub mod params;
mod prefetch;
mod rescore;
pub mod shared;
mod slot_chunks;
mod slot_index;
mod snapshot;
mod table;
mod tally;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use compact_str::CompactString;
use flux_common::{TYPE_CNAME, TYPE_NS};
use serde::Serialize;
use smallvec::{SmallVec, smallvec};

use self::{shared::FluxIps, table::KeyTable};
use crate::{dns::DnsMessage, enrich::Enricher, known_good::Allowlist};
use addr_cache::AddrCache;
pub use addr_info::AddrInfo;
pub use features::Features;
use features::Nested;
pub use key_state::KeyState;
use key_state::{MALLOC_OVERHEAD, MARK_WAITS_ON_PENDING};
pub use model::{Level, Reason};
use orgs::org_id;
use params::{ADDR_CACHE, BUSY_RESCORE_SECS, MAX_CHAIN, WATCHED_KEYS};
pub use params::{MAX_FLUX_IPS, WINDOWS};
use rescore::{allowlist_match, evaluate, rescore, shared_bots, verdict};
pub use snapshot::{
    MAX_SNAPSHOT_AGE_SECS, RestoreStats, SNAPSHOT_VERSION, Snapshot, SnapshotError, SnapshotStats,
};

pub const ROLE_OWNER: u8 = 1;
pub const ROLE_DOMAIN: u8 = 2;
pub const ROLE_NS_HOST: u8 = 4;
pub const ROLE_ZONE: u8 = 8;

/// Address records of one response whose cache sets [`Scorer::prefetch`] loads: a reply has
/// one to a few (a CDN's up to 8, glue a few more); a hostile one with hundreds would only
/// spend the prefetches on lines evicted before they are read.
const PREFETCH_RECORDS: usize = 16;

#[derive(Clone, Debug)]
pub struct ScorerConfig {
    /// Keys tracked at most; the least recently used is forgotten beyond it
    /// ([`params::MAX_KEYS`]).
    pub max_keys: usize,
    /// A key whose answers do not change is re-scored at most this often (seconds), so windows
    /// still slide for it ([`params::RESCORE_INTERVAL_SECS`]).
    pub rescore_interval: u32,
    /// Re-score a key even when nothing its score reads has changed since the last time
    /// (slower, same verdicts; tests check the second part with it).
    pub always_rescore: bool,
    /// Minutes a key's own evidence must hold at the block score before it may be blocked
    /// (see [`params::BLOCK_HOLD_MINUTES`], the default; `--block-hold`).
    pub block_hold_minutes: u8,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            max_keys: params::MAX_KEYS,
            rescore_interval: params::RESCORE_INTERVAL_SECS,
            always_rescore: false,
            block_hold_minutes: params::BLOCK_HOLD_MINUTES,
        }
    }
}

/// A change of a key's level, with everything needed to explain it. On the agent's event bus
/// it is the `verdict` event (the `"type"` tag is the event's, not this struct's).
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub ts: SystemTime,
    pub domain: String,
    pub level: Level,
    pub previous: Level,
    pub score: f64,
    /// The score on the key's own evidence, without other domains' bots (see
    /// [`model::own_score`]).
    pub own_score: f64,
    /// The key passes the automatic-block gate (stricter than the report at `flux`, see
    /// [`params::BLOCK_SCORE`]); `block_gate` says why or why not. A verdict is also emitted
    /// when this turns on while the level stays `flux`.
    pub block: bool,
    pub block_gate: &'static str,
    pub double_flux: bool,
    /// Allowlisted keys are reported but never enforced.
    pub allowlisted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowlist_match: Option<String>,
    /// What the key is: `owner`, `domain`, `ns_host`, `zone`.
    pub roles: Vec<&'static str>,
    pub reasons: Vec<Reason>,
    pub features: Features,
    pub baselines: Baselines,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Baselines {
    pub holz: f64,
    pub holz_flux: bool,
    pub zeek: f64,
    pub zeek_flux: bool,
}

/// One re-score of a key, as a [`RescoreTap`] sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Rescore<'a> {
    pub ts: SystemTime,
    pub domain: &'a str,
    /// The key's score (its best window, not rounded).
    pub score: f64,
    /// The Holz and Zeek baselines on the same windows.
    pub baselines: Baselines,
}

/// Called at every re-score of a key (not for `explain`): what tools that study the scorer
/// (the evaluation's baselines, its per-key scores) need from every score, where verdicts
/// only report changes of level. Kept in the scorer instead of the evaluation's own copy of the
/// re-score rules so that it sees exactly the scores the scorer makes; unset, it costs one
/// branch per re-score.
pub type RescoreTap = Box<dyn FnMut(&Rescore<'_>) + Send>;

#[derive(Clone, Debug, Default, Serialize)]
pub struct ScorerStats {
    pub responses: u64,
    /// Responses with addresses or a delegation: the ones that feed keys.
    pub scored: u64,
    pub keys_tracked: u64,
    pub keys_created: u64,
    pub keys_evicted: u64,
    /// Times a key's features were recomputed and scored.
    pub rescores: u64,
    pub verdicts: u64,
    /// Records ignored because they are out of bailiwick: address records of a name off the
    /// answer chain, delegations of a zone the question is not in, glue of a host outside the
    /// zone it serves ([`Scorer::observe`]).
    pub out_of_bailiwick: u64,
}

pub struct Scorer {
    cfg: ScorerConfig,
    /// Keyed by [`Scorer::id`] of the name: a table probe then compares integers, not strings
    /// behind a pointer, which dominated profiles. The name lives in the entry for reports.
    keys: KeyTable<u64, Tracked>,
    /// Seeded per scorer, so nobody can craft names that share an id with someone else's.
    ids: foldhash::quality::RandomState,
    enricher: Arc<Enricher>,
    allowlist: Arc<Allowlist>,
    /// ASN to organisation id, derived from the AS name once per ASN.
    orgs: HashMap<u32, u32, FastHash>,
    stats: ScorerStats,
    /// See [`Scorer::set_rescore_tap`].
    tap: Option<RescoreTap>,
    /// Addresses of keys judged flux (not allowlisted): bots shared between domains.
    flux_ips: FluxIps,
    /// Recent address lookups: answers repeat, and a database lookup is a binary search.
    addr_cache: AddrCache,
    /// Scratch buffer reused across responses: ids of the keys to re-score.
    touched: Vec<u64>,
    /// Scratch space of every re-score: the windows' features (see [`Nested`]).
    nested: Nested,
    /// Keys that would be flux if their addresses turned out to be bots, re-scored when new
    /// bots are known ([`Scorer::sweep_watched`]).
    watched: KeyTable<u64, ()>,
    /// [`FluxIps::added`] at the last sweep of the watched keys, and when that sweep was.
    swept_bots: u64,
    last_sweep: u32,
    /// Keys whose parent rule waits on pending children ([`MARK_WAITS_ON_PENDING`]),
    /// re-scored when those answers expire ([`Scorer::sweep_due`]).
    due: KeyTable<u64, ()>,
    /// The re-score interval of the latest observation time (`latest` / interval): the due keys
    /// are swept at the first NOERROR response of each. A function of `latest` alone, so a
    /// restored scorer sweeps when the one that saved it would have.
    due_interval: u32,
    /// The latest observation time seen: a snapshot's time base (`snapshot.rs`).
    latest: u32,
}

/// NS hosts of one zone in a response.
type Hosts<'a> = SmallVec<[&'a str; 4]>;
/// One answer's addresses.
type Addrs = SmallVec<[AddrInfo; 8]>;

/// Hashing for the scorer's integer and address tables (SipHash showed up in profiles).
type FastHash = foldhash::fast::RandomState;

/// A tracked key: its name and state.
#[derive(Clone, Debug)]
struct Tracked {
    /// Inline up to 24 bytes (most registered domains and many owner names), where a
    /// `Box<str>` is 16 bytes here plus a 32-byte heap chunk for every name.
    name: CompactString,
    st: KeyState,
}

impl Scorer {
    pub fn new(cfg: ScorerConfig, enricher: Arc<Enricher>, allowlist: Arc<Allowlist>) -> Self {
        Self {
            keys: KeyTable::new(cfg.max_keys),
            cfg,
            ids: foldhash::quality::RandomState::default(),
            enricher,
            allowlist,
            orgs: HashMap::default(),
            stats: ScorerStats::default(),
            tap: None,
            flux_ips: FluxIps::default(),
            addr_cache: AddrCache::new(ADDR_CACHE),
            touched: Vec::new(),
            nested: Nested::default(),
            watched: KeyTable::new(WATCHED_KEYS),
            swept_bots: 0,
            last_sweep: 0,
            due: KeyTable::new(WATCHED_KEYS),
            due_interval: 0,
            latest: 0,
        }
    }

    /// Replaces the allowlist (`run` on SIGHUP). Verdicts from now on, and every rescore, use
    /// the new one; the tracked keys and their evidence are kept.
    pub fn set_allowlist(&mut self, allowlist: Arc<Allowlist>) {
        self.allowlist = allowlist;
    }

    pub fn stats(&self) -> ScorerStats {
        let mut s = self.stats.clone();
        s.keys_tracked = self.keys.len() as u64;
        s
    }

    /// Calls `tap` at every re-score from now on (see [`RescoreTap`]).
    pub fn set_rescore_tap(&mut self, tap: RescoreTap) {
        self.tap = Some(tap);
    }

    /// The current verdict for a key, whether or not its level changed (for `explain`).
    pub fn explain(&mut self, domain: &str, now: SystemTime) -> Option<Verdict> {
        let name = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut st = self.keys.peek(&self.id(&name))?.st.clone();
        let now = secs(now);
        let shared = shared_bots(&name, &mut st, now, &self.flux_ips);
        let hold = self.cfg.block_hold_minutes;
        // The scorer's scratch, as every re-score: a new one would allocate its tallies.
        let nested = &mut self.nested;
        let (previous, scored) = rescore(&name, &mut st, now, (shared, hold), None, nested);
        Some(verdict(
            &name,
            &st,
            now,
            previous,
            (scored, nested),
            &self.allowlist,
        ))
    }

    /// A tracked key's state (for tools that inspect the windows, such as evaluation traces).
    pub fn state_of(&self, name: &str) -> Option<&KeyState> {
        self.keys.peek(&self.id(name)).map(|t| &t.st)
    }

    /// The current level of a tracked key (no re-score; what the last verdict said).
    pub fn level_of(&self, name: &str) -> Option<Level> {
        self.keys.peek(&self.id(name)).map(|t| t.st.level)
    }

    /// What the enforcer blocks beside a flux name: the addresses the key was seen resolving to
    /// in the longest window before `now`, without those in first-party networks, those in the
    /// allowlist's CIDRs, and those the bot table found to be shared serving infrastructure (the enforcer's own guard refuses
    /// loopback, link-local and the like). A flux operator who lists a victim's address among
    /// his bots can still get it blocked if it is none of those (residual risk, see
    /// docs/scoring.md).
    pub fn block_targets(&self, name: &str, now: SystemTime) -> Vec<std::net::IpAddr> {
        let Some(t) = self.keys.peek(&self.id(name)) else {
            return Vec::new();
        };
        let window = WINDOWS[WINDOWS.len() - 1].0;
        t.st.addresses(secs(now), window)
            .filter(|a| !infra::first_party_network(a.asn))
            .filter(|a| !self.flux_ips.is_infrastructure(&a.ip))
            // The operator's allowlisted CIDRs (`--allowlist`): never blocked.
            .filter(|a| !self.allowlist.match_ip(a.to_ip()))
            .map(|a| a.to_ip())
            .collect()
    }

    /// Every tracked key with its state, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &KeyState)> {
        self.keys.values().map(|t| (&*t.name, &t.st))
    }

    /// Heap and table bytes the scorer holds, estimated from its contents.
    pub fn memory_estimate(&self) -> usize {
        // The key table and its index, then each key's name (with the allocator's header) and
        // state.
        self.keys.table_bytes()
            + self.watched.table_bytes()
            + self.due.table_bytes()
            + self.flux_ips.heap_bytes()
            + self
                .keys
                .values()
                // malloc hands out 16-byte multiples; a short name is inline.
                .map(|t| name_heap_bytes(&t.name) + t.st.heap_bytes())
                .sum::<usize>()
    }

    /// The table id of a key name: a seeded 64-bit hash. Two names sharing one would share
    /// state; at a million keys the chance of that is about 3 in 100 million.
    fn id(&self, name: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.ids, name)
    }

    /// Starts loading into the CPU's caches what [`Self::observe`] of `msg` will read first: the
    /// address cache's sets of its addresses, and where the key table's index holds their
    /// owners. A reader that has the next response before it
    /// observes the current one calls this for the next, so the loads overlap the current
    /// one's work. Changes nothing.
    pub fn prefetch(&self, msg: &DnsMessage) {
        let mut owner: Option<&str> = None;
        for r in msg
            .answers
            .iter()
            .chain(&msg.additional)
            .take(PREFETCH_RECORDS)
        {
            let Some(ip) = r.addr else { continue };
            self.addr_cache.prefetch(&AddrInfo::ip_bytes(ip));
            // The key of the records' owner (an answer's records share one, mostly).
            if owner != Some(&*r.name) {
                owner = Some(&*r.name);
                self.keys.prefetch(&self.id(&r.name));
            }
        }
    }

    /// Feeds one response; verdicts for keys whose level changed, or that passed or left the
    /// block gate, are pushed to `out`.
    pub fn observe(&mut self, ts: SystemTime, msg: &DnsMessage, out: &mut Vec<Verdict>) {
        self.stats.responses += 1;
        if !msg.rcode.is_noerror() {
            return;
        }
        let now = secs(ts);
        self.latest = self.latest.max(now);
        // The due keys, at the first response of each re-score interval (`latest` only moves
        // forward, so responses out of order do not sweep again).
        let interval = self.latest / self.cfg.rescore_interval.max(1);
        if interval > self.due_interval {
            self.due_interval = interval;
            if !self.due.is_empty() {
                self.sweep_due(now, out);
            }
        }

        let chain = cname_chain(msg);
        // The registered domain the chain starts in, when there is a chain (one public-suffix
        // lookup per CNAME response; without a CNAME every key was queried directly).
        let query_rd = match chain.as_slice() {
            [q, _, ..] => registered_domain(q),
            _ => None,
        };

        // Address records grouped by owner. Bailiwick: only the answer chain from the question
        // counts (its CNAMEs, then their address records). A record for any other name is
        // ignored: whoever answers a question about one name must not be able to make another
        // name (or its addresses) look like flux.
        let mut groups: SmallVec<[(&str, u32, Addrs); 2]> = SmallVec::new();
        for r in &msg.answers {
            let Some(ip) = r.addr else { continue };
            if !chain.iter().any(|c| same_name(c, &r.name)) {
                self.stats.out_of_bailiwick += 1;
                continue;
            }
            let info = self.addr_info(ip);
            match groups.iter_mut().find(|g| same_name(g.0, &r.name)) {
                Some(g) => {
                    g.1 = g.1.max(r.ttl);
                    if !g.2.iter().any(|a| a.ip == info.ip) {
                        g.2.push(info);
                    }
                }
                None => groups.push((&*r.name, r.ttl, smallvec![info])),
            }
        }

        let zones = delegations(msg, &chain, &mut self.stats.out_of_bailiwick);
        if groups.is_empty() && zones.is_empty() {
            return;
        }
        self.stats.scored += 1;

        let mut touched = std::mem::take(&mut self.touched);
        touched.clear();
        let final_name = chain.last().copied().unwrap_or("");
        // A registered domain gets one answer per response: the union of what its names (and
        // name servers) resolved to in it. Names answering side by side are not rotation.
        let mut domains: SmallVec<[DomainAnswer; 2]> = SmallVec::new();
        for (owner, ttl, addrs) in &groups {
            let chain_here: &[&str] = if *owner == final_name { &chain } else { &[] };
            let owner_rd = self.feed(
                (owner, 0),
                ROLE_OWNER,
                now,
                *ttl,
                addrs,
                (chain_here, query_rd, OwnDomain::OfKey),
                &mut touched,
            );
            if let Some(rd) = owner_rd
                && rd != *owner
            {
                merge_domain(&mut domains, rd, (*ttl, addrs), *owner == final_name, owner);
            }
        }
        for (zone, hosts) in &zones {
            let zone_key = registered_domain(zone).unwrap_or(zone);
            for host in hosts {
                let mut glue = Addrs::new();
                let mut ttl = 0;
                // Glue of a name server outside the zone it serves is kept: double flux often
                // runs its name servers under another domain of the operator, and the reply is
                // already one this host asked for (query matching). Only the delegation itself
                // must be in bailiwick (`delegations`).
                for r in msg.additional.iter().filter(|r| &*r.name == *host) {
                    if let Some(ip) = r.addr {
                        glue.push(self.addr_info(ip));
                        ttl = ttl.max(r.ttl);
                    }
                }
                let id = self.id(zone_key);
                let changed = {
                    let (st, _) = key_mut(&mut self.keys, &mut self.stats, id, zone_key, now);
                    st.roles |= ROLE_ZONE;
                    st.add_ns(now, host, &glue, hosts.len())
                };
                if changed {
                    push_unique(&mut touched, id);
                }
                if !glue.is_empty() {
                    self.feed(
                        (host, 0),
                        ROLE_NS_HOST,
                        now,
                        ttl,
                        &glue,
                        (&[], None, OwnDomain::Given(None)),
                        &mut touched,
                    );
                    if let Some(rd) = registered_domain(host)
                        && rd != *host
                        && rd != zone_key
                    {
                        merge_domain(&mut domains, rd, (ttl, &glue), false, host);
                    }
                }
            }
        }
        for (rd, ttl, addrs, chained, child) in &domains {
            let chain_here: &[&str] = if *chained { &chain } else { &[] };
            self.feed(
                (rd, *child),
                ROLE_DOMAIN,
                now,
                *ttl,
                addrs,
                (chain_here, query_rd, OwnDomain::Given(Some(*rd))),
                &mut touched,
            );
        }
        for id in &touched {
            self.judge(*id, now, out);
        }
        self.touched = touched;
        if self.flux_ips.added() != self.swept_bots
            && now >= self.last_sweep.saturating_add(self.cfg.rescore_interval)
        {
            self.sweep_watched(now, out);
        }
    }

    /// A loaded threat-intelligence feed matched `names` (a response's CNAME chain, from the
    /// question on): each tracked key among them, and their registered domains, is marked
    /// ([`params::feed_match`]) and re-scored now; a change of level is pushed to `out`. Keys
    /// not tracked are left alone (the agent calls this after [`Scorer::observe`], which
    /// creates the keys of a response with addresses). Returns how many keys were newly marked.
    pub fn note_feed_match(
        &mut self,
        ts: SystemTime,
        names: &[&str],
        out: &mut Vec<Verdict>,
    ) -> usize {
        let now = secs(ts);
        let mut marked = SmallVec::<[u64; 4]>::new();
        for name in names {
            let rd = registered_domain(name).filter(|rd| rd != name);
            for key in std::iter::once(*name).chain(rd) {
                let id = self.id(key);
                if let Some(t) = self.keys.peek_mut(&id)
                    && t.st.note_feed_match()
                {
                    marked.push(id);
                }
            }
        }
        for id in &marked {
            self.judge(*id, now, out);
        }
        marked.len()
    }

    /// Re-scores a key (unless nothing it reads changed) and records a change of level or of
    /// the block gate.
    /// This is where verdicts are made.
    fn judge(&mut self, id: u64, now: u32, out: &mut Vec<Verdict>) {
        let tap = self.tap.as_mut();
        let Some(Tracked { name, st }) = self.keys.peek_mut(&id) else {
            self.watched.remove(&id);
            self.due.remove(&id);
            return;
        };
        // Nothing it reads changed: the score would come out the same (and the block gate only
        // opens on new data).
        let shared = shared_bots(name, st, now, &self.flux_ips);
        if !self.cfg.always_rescore && st.unchanged_since_eval(now, &shared) {
            st.last_eval = now;
            return;
        }
        self.stats.rescores += 1;
        let hold = self.cfg.block_hold_minutes;
        let (verdict, own) = evaluate(
            name,
            st,
            now,
            (shared, hold),
            (&self.allowlist, tap),
            &mut self.nested,
        );
        if verdict.is_some() {
            self.stats.verdicts += 1;
        }
        // Only a key flux on its own evidence makes bots (DONOR_NEEDS_OWN): one reached through
        // shared bots would pass its addresses on, and a mistake would spread. Decided at every
        // score, so a donor whose own evidence fades stops donating.
        let was_donor = st.shares_bots;
        st.shares_bots = st.level == Level::Flux
            && own >= params::DONOR_NEEDS_OWN
            && allowlist_match(name, st, now, &self.allowlist).is_none();
        if st.shares_bots && !was_donor {
            let owner = domain_id(name);
            for a in st.addresses(now, WINDOWS[0].0) {
                if !is_infrastructure(&self.allowlist, &a) {
                    self.flux_ips.insert(a.ip, owner);
                }
            }
        }
        if shared.iter().any(|n| *n > 0) && st.stable_single_answer(now) {
            // A domain whose one answer came back after it expired is served by stable
            // infrastructure: the bots it shares are shared serving addresses, not bots.
            let user = domain_id(name);
            for a in st.addresses(now, WINDOWS[0].0) {
                self.flux_ips.note_stable_user(&a.ip, user);
            }
        }
        if st.watch {
            self.watched.get_or_insert_with(id, || ());
        } else {
            self.watched.remove(&id);
        }
        if st.marked(MARK_WAITS_ON_PENDING) {
            self.due.get_or_insert_with(id, || ());
        } else {
            self.due.remove(&id);
        }
        if let Some(v) = verdict {
            out.push(v);
        }
    }

    /// Re-scores the keys whose parent rule waits on pending children
    /// ([`MARK_WAITS_ON_PENDING`]) once those answers have expired (the key's `changes_at`,
    /// which [`Self::judge`] reads: a key not due yet costs its unchanged check). Without it a
    /// wildcard-flux parent whose children were each looked up once, then never again, stayed
    /// as its first minute left it. Once per re-score interval, driven by the NOERROR responses
    /// of any key (a gateway always has some): at the first of each interval. The verdicts
    /// carry the time of the sweep. The table holds [`WATCHED_KEYS`] and drops the least
    /// recently judged key beyond that; residual, stated: whoever makes a victim resolve
    /// thousands of parents with one-shot children can push a parent out, which then waits
    /// for an answer of its own as it did before this sweep existed.
    fn sweep_due(&mut self, now: u32, out: &mut Vec<Verdict>) {
        let ids: Vec<u64> = self.due.keys().copied().collect();
        self.judge_all(ids, now, out);
    }

    /// Judges each of `ids` (a copy of a table's keys: [`Self::judge`] updates the tables).
    fn judge_all(&mut self, ids: Vec<u64>, now: u32, out: &mut Vec<Verdict>) {
        for id in ids {
            self.judge(id, now, out);
        }
    }

    /// Re-scores the watched keys after new bots became known: a domain looked up twice, whose
    /// addresses another domain shows to be bots only later, is otherwise never looked at
    /// again. At most once per re-score interval; the verdicts carry the time of the sweep.
    fn sweep_watched(&mut self, now: u32, out: &mut Vec<Verdict>) {
        self.swept_bots = self.flux_ips.added();
        self.last_sweep = now;
        let ids: Vec<u64> = self.watched.keys().copied().collect();
        self.judge_all(ids, now, out);
    }

    #[allow(clippy::too_many_arguments)]
    /// `name` with the [`key_state::child_tag`] of the name under it that gave the answer (0
    /// for an owner or NS-host key); `chain` with the registered domains of its start (when it
    /// has a CNAME) and of the key's name. Returns that registered domain of the key's name.
    fn feed<'n>(
        &mut self,
        (name, child): (&'n str, u16),
        role: u8,
        now: u32,
        ttl: u32,
        addrs: &[AddrInfo],
        (chain, query_rd, own): (&[&str], Option<&str>, OwnDomain<'n>),
        touched: &mut Vec<u64>,
    ) -> Option<&'n str> {
        let id = self.id(name);
        let (st, is_new) = key_mut(&mut self.keys, &mut self.stats, id, name, now);
        st.prefetch();
        let own_rd = match own {
            OwnDomain::OfKey => st.own_domain(name),
            OwnDomain::Given(rd) => rd,
        };
        if is_new {
            // A key fed by an allowlisted name (a seed host, a CDN target) inherits it. Checked
            // once, when the key appears: chains into a key rarely change.
            // The chain ends in the key's own name when it has one: asked once.
            st.set_allowed_by(
                std::iter::once(name)
                    .chain(chain.iter().copied().filter(|c| *c != name))
                    .find_map(|n| self.allowlist.match_name(n)),
            );
        }
        st.roles |= role;
        if role == ROLE_DOMAIN || role == ROLE_OWNER {
            // Who reaches the key: its own domain (queried directly, or through a CNAME of a
            // sibling) or another domain's CNAME chain, as users reach a CDN's zone and its
            // scheduling names (see `model::provider_zone`, `model::served_for_others`).
            let own = own_rd.unwrap_or(name);
            let customer = if chain.is_empty() {
                None
            } else {
                query_rd.filter(|q| *q != own)
            };
            st.note_customer(customer);
        }
        st.set_chain(chain);
        let since = now.saturating_sub(st.last_eval);
        let changed = st.add_answer_from(now, ttl, addrs, child);
        if changed && st.shares_bots {
            // A flux key's new bots join the shared-bot table as they appear, not only those
            // it had when it was judged.
            let owner = domain_id(name);
            for a in addrs {
                if !is_infrastructure(&self.allowlist, a) {
                    self.flux_ips.insert(a.ip, owner);
                }
            }
        }
        // Re-score on a new answer (for busy keys at most every BUSY_RESCORE_SECS), and now and then
        // regardless so windows slide for keys whose answer never changes.
        if is_new
            || (changed && (!st.busy() || since >= BUSY_RESCORE_SECS))
            || since >= self.cfg.rescore_interval
        {
            push_unique(touched, id);
        }
        own_rd
    }

    fn addr_info(&mut self, ip: std::net::IpAddr) -> AddrInfo {
        let key = AddrInfo::ip_bytes(ip);
        if let Some(a) = self.addr_cache.get(&key) {
            return a;
        }
        let a = self.lookup_addr(ip);
        self.addr_cache.insert(a);
        a
    }

    fn lookup_addr(&mut self, ip: std::net::IpAddr) -> AddrInfo {
        let mut a = AddrInfo {
            ip: AddrInfo::ip_bytes(ip),
            ..AddrInfo::default()
        };
        if self.enricher.has_asn() || self.enricher.has_geo() {
            let (asn, country) = self.enricher.lookup_asn_country(ip);
            a.asn = asn.unwrap_or(0);
            if let Some(cc) = country {
                a.country = cc;
            }
            if let Some(asn) = asn {
                // The AS name only for an ASN not met before (the name of its first address).
                let enricher = &self.enricher;
                a.network = *self
                    .orgs
                    .entry(asn)
                    .or_insert_with(|| org_id(asn, enricher.lookup(ip).as_name.as_deref()));
            }
        }
        if a.network == 0 && !self.enricher.has_asn() {
            // No ASN database: the /16 (or /48) stands in for the network. With a database, an
            // address it does not know stays 0 ("unknown") and counts as no network at all.
            a.network = a.prefix() | 0x4000_0000;
        }
        a
    }
}

/// `a == b` for names of one message, first by address: the parser shares one text between
/// the question and the records whose names point to it (`DnsRecord::name`), so the common
/// case is the same bytes and needs no compare (string compares were 1% of a replay).
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && (std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
}

/// The CNAME chain from the question to the address records (the question alone without one).
/// Small vectors on the stack: a response rarely has more than a handful of each, and heap
/// allocation per response showed in profiles. Public for the agent's feed matching, which
/// checks every name of it.
pub fn cname_chain(msg: &DnsMessage) -> SmallVec<[&str; 4]> {
    let mut chain: SmallVec<[&str; 4]> = smallvec![&*msg.qname];
    for _ in 0..MAX_CHAIN {
        let Some(cur) = chain.last().copied() else {
            break;
        };
        let next = msg
            .answers
            .iter()
            .find(|r| r.rtype_code == TYPE_CNAME && &*r.name == cur)
            .and_then(|r| r.target.as_deref());
        match next {
            Some(n) if !chain.contains(&n) => chain.push(n),
            _ => break,
        }
    }
    chain
}

/// Delegations in a response: NS hosts per zone (their glue is read by the caller). Bailiwick:
/// only zones that hold a name of the answer chain (the question or a CNAME target) count; an NS
/// record for any other zone is ignored and counted in `ignored`.
fn delegations<'m>(
    msg: &'m DnsMessage,
    chain: &[&str],
    ignored: &mut u64,
) -> SmallVec<[(&'m str, Hosts<'m>); 1]> {
    let mut zones: SmallVec<[(&str, Hosts); 1]> = SmallVec::new();
    for r in msg.authority.iter().chain(&msg.answers) {
        if r.rtype_code != TYPE_NS {
            continue;
        }
        let Some(host) = r.target.as_deref() else {
            continue;
        };
        if !chain.iter().any(|n| in_zone(n, &r.name)) {
            *ignored += 1;
            continue;
        }
        match zones.iter_mut().find(|z| z.0 == &*r.name) {
            Some(z) => z.1.push(host),
            None => zones.push((&*r.name, smallvec![host])),
        }
    }
    zones
}

/// Whether `name` is `zone` or below it (case-blind, labels whole: `xexample.com` is not in
/// `example.com`). Every name is in the root zone (`""` or `"."`).
fn in_zone(name: &str, zone: &str) -> bool {
    let name = name.trim_end_matches('.');
    let zone = zone.trim_end_matches('.');
    if zone.is_empty() {
        return true;
    }
    if name.len() == zone.len() {
        return name.eq_ignore_ascii_case(zone);
    }
    let (n, z) = (name.as_bytes(), zone.as_bytes());
    n.len() > z.len()
        && n[n.len() - z.len() - 1] == b'.'
        && n[n.len() - z.len()..].eq_ignore_ascii_case(z)
}

/// The key's state, created if needed; and whether it was. One hash lookup on a hit. A free
/// function over the two fields it needs, so callers can still read the allowlist meanwhile.
fn key_mut<'a>(
    keys: &'a mut KeyTable<u64, Tracked>,
    stats: &mut ScorerStats,
    id: u64,
    name: &str,
    now: u32,
) -> (&'a mut KeyState, bool) {
    let (t, created, evicted) = keys.get_or_insert_with(id, || Tracked {
        name: CompactString::new(name),
        st: KeyState::new(now),
    });
    if created {
        stats.keys_created += 1;
    }
    if evicted {
        stats.keys_evicted += 1;
    }
    (&mut t.st, created)
}

/// One response's answer for a registered-domain key: (domain, TTL, addresses, whether the CNAME
/// chain of the response led to it).
/// A registered domain's answer in one response: the domain, TTL, the union of its names'
/// addresses, whether the chain ends in it, and which name under it gave them
/// ([`key_state::child_tag`], or [`key_state::CHILD_MANY`] when several did).
type DomainAnswer<'a> = (&'a str, u32, Addrs, bool, u16);

/// The registered domain [`Scorer::feed`] reads for a key's own name: looked up through the key
/// ([`KeyState::own_domain`], which remembers it), or given by the caller.
enum OwnDomain<'a> {
    OfKey,
    Given(Option<&'a str>),
}

fn merge_domain<'a>(
    domains: &mut SmallVec<[DomainAnswer<'a>; 2]>,
    rd: &'a str,
    (ttl, addrs): (u32, &[AddrInfo]),
    chained: bool,
    child: &str,
) {
    let tag = key_state::child_tag(child, key_state::answer_is_v6(addrs));
    match domains.iter_mut().find(|d| d.0 == rd) {
        Some(d) => {
            d.1 = d.1.max(ttl);
            d.3 |= chained;
            if d.4 != tag {
                d.4 = key_state::CHILD_MANY;
            }
            for a in addrs {
                if !d.2.iter().any(|b| b.ip == a.ip) {
                    d.2.push(*a);
                }
            }
        }
        None => domains.push((rd, ttl, addrs.iter().copied().collect(), chained, tag)),
    }
}

/// An address no bot can be: a first-party content network or unroutable (`infra`), or an
/// allowlisted CIDR. Not the allowlist's ASNs: they include whole clouds (AWS, Azure, GCP's
/// customer space), where bots are rented.
fn is_infrastructure(allowlist: &Allowlist, a: &AddrInfo) -> bool {
    infra::first_party(a.asn, a.to_ip()) || allowlist.match_ip(a.to_ip())
}

fn push_unique(v: &mut Vec<u64>, id: u64) {
    if !v.contains(&id) {
        v.push(id);
    }
}

/// The registered domain (public suffix plus one label) of a lowercase name without a trailing
/// dot, using the public-suffix list's ICANN and private sections.
pub fn registered_domain(name: &str) -> Option<&str> {
    psl::domain_str(name)
}

/// The heap bytes of a key's name: none when it is inline.
fn name_heap_bytes(name: &CompactString) -> usize {
    if name.is_heap_allocated() {
        name.capacity().next_multiple_of(16) + MALLOC_OVERHEAD
    } else {
        0
    }
}

/// Identifies a key's registered domain in the shared-bot table.
fn domain_id(name: &str) -> u32 {
    addr_info::fnv32(registered_domain(name).unwrap_or(name).as_bytes())
}

pub fn secs(t: SystemTime) -> u32 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

pub fn from_secs(s: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(s))
}

#[cfg(test)]
mod children_tests;
#[cfg(test)]
mod scorer_tests;

impl std::fmt::Display for Verdict {
    /// One readable line: when, what, how sure, and the three largest reasons.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} VERDICT {} {} -> {} score={:.2}",
            crate::timestamp::rfc3339(self.ts),
            self.domain,
            self.previous,
            self.level,
            self.score
        )?;
        if self.block {
            f.write_str(" block-gate-passed")?;
        }
        if self.double_flux {
            f.write_str(" double-flux")?;
        }
        if let Some(m) = &self.allowlist_match {
            write!(f, " [allowlisted: {m}]")?;
        }
        let ff = &self.features;
        write!(
            f,
            " ips={} asns={} countries={} ttl={}",
            ff.distinct_ips, ff.distinct_asns, ff.distinct_countries, ff.ttl_max
        )?;
        for (i, r) in self.reasons.iter().take(3).enumerate() {
            let sep = if i == 0 { ":" } else { "," };
            write!(f, "{sep} {} +{:.2}", r.feature, r.contribution)?;
        }
        Ok(())
    }
}

/// What a [`Scorer`] is built from; cheap to clone, so a run can hold it in its options.
#[derive(Clone)]
pub struct ScorerSetup {
    pub config: ScorerConfig,
    pub enricher: Arc<Enricher>,
    pub allowlist: Arc<Allowlist>,
}

impl ScorerSetup {
    pub fn build(&self) -> Scorer {
        Scorer::new(
            self.config.clone(),
            self.enricher.clone(),
            self.allowlist.clone(),
        )
    }
}

impl std::fmt::Debug for ScorerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScorerSetup")
            .field("config", &self.config)
            .field("enricher", &self.enricher.describe())
            .field("allowlist_entries", &self.allowlist.len())
            .finish()
    }
}
