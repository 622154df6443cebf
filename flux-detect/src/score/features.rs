//! The sliding-window features of a key, computed from its state (`key_state.rs`) for the
//! model (`model.rs`). Windows are in observation time: a feature over "1h" looks at what was
//! seen in the hour before `now`. Reads the key state; touches nothing.

use serde::Serialize;

use super::{
    KeyState,
    addr_info::AddrInfo,
    key_state::{CHILD_MANY, MARK_FEED_MATCH, MARK_QUERIED_DIRECTLY},
    params::{
        FORGED_ANSWER_SIZE, MAX_RRSETS, PENDING_CHILD_NETWORKS_MAX, PROVIDER_ZONE_CUSTOMERS,
        WINDOWS, mixed_answers,
    },
    tally::{Counting, GlueTally, SMALL_TALLY_MAX, SmallTally, Tally},
};

/// The features over nested windows, and when they would next change by age alone. The scorer
/// keeps one and refills it for every score ([`KeyState::features_nested_into`]): each window's
/// features are a few hundred bytes, and building them anew and moving them up through the
/// re-score was 5% of a replay, in memcpy alone. It also keeps the tallies of the last
/// computation, cleared for the next one (see [`Tallies`]).
#[derive(Default)]
pub struct Nested {
    pub windows: [Option<Features>; WINDOWS.len()],
    /// The first second at which an entry (address, answer, NS host or glue) counted in one
    /// of the windows falls out of it. Until then, with no new data, the features stay the same.
    pub changes_at: u32,
    small: Option<Box<Tallies<SmallTally>>>,
    full: Option<Box<Tallies<Tally>>>,
}

impl std::fmt::Debug for Nested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nested")
            .field("windows", &self.windows)
            .field("changes_at", &self.changes_at)
            .finish_non_exhaustive()
    }
}

/// The five tallies of a features computation. Kept in a [`Nested`] and cleared, not made anew,
/// for each computation: a new full tally wrote 1.4 KB then (2.8 KB now), five of them 7 KB,
/// and that memset was 15% of the churn stream's replay; a clear writes one byte per distinct
/// value held.
struct Tallies<T> {
    asns: T,
    nets: T,
    ccs: T,
    subnets: T,
    prefixes: T,
}

impl<T: Counting> Tallies<T> {
    fn new() -> Self {
        Self {
            asns: T::new(),
            nets: T::new(),
            ccs: T::new(),
            subnets: T::new(),
            prefixes: T::new(),
        }
    }

    /// The tallies of `slot`, empty: made the first time, cleared after that.
    fn cleared(slot: &mut Option<Box<Self>>) -> &mut Self {
        match slot {
            Some(t) => {
                for tally in [
                    &mut t.asns,
                    &mut t.nets,
                    &mut t.ccs,
                    &mut t.subnets,
                    &mut t.prefixes,
                ] {
                    tally.clear();
                }
                t
            }
            None => slot.insert(Box::new(Self::new())),
        }
    }
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
    /// The most of the key's addresses in one block (as `distinct_subnets`): how deep into one
    /// range the key's answers reach (see `model::rented_pool`).
    pub subnet_ips_max: u32,
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
    /// No name of the key was ever queried directly, and some other registered domain's CNAME
    /// chain led to it: only other domains send users here (a CDN's scheduling name, a
    /// steering service's name, a zone that serves customers); owner keys included. See
    /// `model::served_for_others`. Left out of the JSON when false.
    #[serde(skip_serializing_if = "is_false")]
    pub reached_via_others: bool,
    /// Of a registered-domain key: the distinct names under it whose answers are in the window,
    /// a name's IPv6 answers counting apart from its IPv4 ones (`key_state::child_tag`; 0 for
    /// other keys).
    pub children: u32,
    /// Some name under the key gave two different answers in the window, or an answer came
    /// from several names or from a name not known (always, for keys that are not registered
    /// domains): the key's rotation is not only the sum of its children.
    pub children_rotated: bool,
    /// Of a registered-domain key: the names under it with two different answers or more in
    /// the window, plus one if some answer came from several names or from a name not known.
    /// See `model::stable_children_only`.
    pub rotating_children: u32,
    /// Of a registered-domain key: the names under it with exactly one answer in the window.
    pub stable_children: u32,
    /// Of a registered-domain key: the names under it with one answer in the window that was
    /// seen again after the response that brought it (the name kept its answer).
    pub stable_children_seen_again: u32,
    /// Of a registered-domain key: the names under it with one answer in the window, not seen
    /// again yet but still within its TTL (a cache may still re-show it): neither stable nor
    /// looked up once only, yet.
    pub stable_children_pending: u32,
    /// Answers in the window that were seen again after the response that brought them.
    pub answers_seen_again: u32,
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
    /// 1 when a loaded threat-intelligence feed matched the key (`Scorer::note_feed_match`);
    /// left out of the JSON when 0, as it is for every key without feeds.
    #[serde(skip_serializing_if = "is_zero")]
    pub feed_match: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_false(x: &bool) -> bool {
    !*x
}

impl KeyState {
    /// The features over the `window` seconds before `now`.
    pub fn features(&self, now: u32, window: (u32, &'static str)) -> Features {
        if self.ips.len() <= SMALL_TALLY_MAX {
            self.features_with::<SmallTally>(now, window)
        } else {
            self.features_with::<Tally>(now, window)
        }
    }

    fn features_with<T: Counting>(&self, now: u32, window: (u32, &'static str)) -> Features {
        let cutoff = now.saturating_sub(window.0);
        let mut tallies = Tallies::<T>::new();
        let mut acc = Acc::new(now, &mut tallies);
        acc.add(self, |last| last >= cutoff);
        acc.features(self, window.1, cutoff)
    }

    /// The features over each of [`WINDOWS`] (only the first `n`), in one pass: the windows are
    /// nested, so the longer one continues the shorter one's tallies with the older entries
    /// instead of starting again.
    pub fn features_nested(&self, now: u32, n: usize) -> Nested {
        let mut out = Nested::default();
        self.features_nested_into(now, n, &mut out);
        out
    }

    /// [`Self::features_nested`] into `out`, whatever it held: the windows past the first `n`
    /// are emptied.
    pub fn features_nested_into(&self, now: u32, n: usize, out: &mut Nested) {
        // Each window adds each address at most once to each tally, so a key's address count
        // bounds what its tallies hold: a small key's fit the small tally (see `tally.rs`).
        if self.ips.len() <= SMALL_TALLY_MAX {
            let acc = Acc::new(now, Tallies::cleared(&mut out.small));
            self.features_nested_with(acc, n, (&mut out.windows, &mut out.changes_at));
        } else {
            let acc = Acc::new(now, Tallies::cleared(&mut out.full));
            self.features_nested_with(acc, n, (&mut out.windows, &mut out.changes_at));
        }
    }

    fn features_nested_with<T: Counting>(
        &self,
        mut acc: Acc<'_, T>,
        n: usize,
        (windows, changes_at): (&mut [Option<Features>; WINDOWS.len()], &mut u32),
    ) {
        let now = acc.now;
        *changes_at = u32::MAX;
        let mut newer_than = u32::MAX;
        for (i, (slot, w)) in windows.iter_mut().zip(WINDOWS).enumerate() {
            if i >= n {
                *slot = None;
                continue;
            }
            let cutoff = now.saturating_sub(w.0);
            // Each entry is added by exactly one window: the first whose cutoff it passes.
            acc.add(self, |last| {
                last >= cutoff && (newer_than == u32::MAX || last < newer_than)
            });
            acc.features_into(
                self,
                w.1,
                cutoff,
                slot.get_or_insert_with(Features::default),
            );
            newer_than = cutoff;
            // An entry seen at `last` is in the window while now - w <= last.
            let oldest = acc.oldest.min(self.ns_oldest(cutoff));
            if oldest != u32::MAX {
                *changes_at = (*changes_at).min(oldest.saturating_add(w.0 + 1));
            }
            // A pending child answer that expires unseen changes the parent rule's reading.
            if acc.can_wait_on_children() {
                *changes_at = (*changes_at).min(acc.pending_until);
            }
        }
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
}

/// Running totals of a key's addresses and answers, for one window or nested ones; the
/// tallies are borrowed (see [`Tallies`]), everything else is made anew by [`Acc::new`].
struct Acc<'t, T> {
    /// The time the features are computed for.
    now: u32,
    distinct_ips: u32,
    /// Empty when the accumulator is made.
    t: &'t mut Tallies<T>,
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
    /// Child tags of the answers added (`Rrset::child`), distinct, at most one per answer;
    /// beside each, how many answers it gave (saturating) and whether its first one was seen
    /// again.
    child_tags: [u16; MAX_RRSETS],
    child_answers: [u8; MAX_RRSETS],
    child_seen_again: [bool; MAX_RRSETS],
    /// Whether a child's one answer may still be re-shown by a cache (not seen again, not
    /// expired): too early to say the name was looked up once only.
    child_pending: [bool; MAX_RRSETS],
    children: usize,
    /// An answer came from several names or from a name not known.
    children_unattributed: bool,
    seen_again: u32,
    /// The oldest sighting among the entries added.
    oldest: u32,
    /// When the first pending child answer expires (the parent rule reads them; see
    /// `child_pending`).
    pending_until: u32,
}

impl<'t, T: Counting> Acc<'t, T> {
    /// `tallies` must be empty ([`Tallies::new`] or [`Tallies::cleared`]).
    fn new(now: u32, tallies: &'t mut Tallies<T>) -> Self {
        Self {
            now,
            distinct_ips: 0,
            t: tallies,
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
            child_tags: [0; MAX_RRSETS],
            child_answers: [0; MAX_RRSETS],
            child_seen_again: [false; MAX_RRSETS],
            child_pending: [false; MAX_RRSETS],
            children: 0,
            children_unattributed: false,
            seen_again: 0,
            oldest: u32::MAX,
            pending_until: u32::MAX,
        }
    }

    /// Adds the addresses and answers whose last sighting `take` accepts.
    fn add(&mut self, k: &KeyState, take: impl Fn(u32) -> bool) {
        for e in k.ips.iter().filter(|e| take(e.last)) {
            self.oldest = self.oldest.min(e.last);
            self.distinct_ips += 1;
            if e.addr.asn != 0 {
                self.t.asns.add(e.addr.asn);
            }
            if e.addr.network != 0 {
                self.t.nets.add(e.addr.network);
            }
            if e.addr.country != [0, 0] {
                self.t
                    .ccs
                    .add(u32::from(u16::from_be_bytes(e.addr.country)));
            }
            let subnet = e.addr.subnet();
            self.t.subnets.add(subnet);
            self.t.prefixes.add(AddrInfo::prefix_of_subnet(subnet));
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
            self.seen_again += u32::from(r.seen_again);
            // Only a named child's answer can be pending: the rule reads nothing else, and a
            // needless expiry in `changes_at` would re-score owner keys for nothing.
            let expires = r.last.saturating_add(u32::from(r.valid_for));
            let pending = r.child != 0
                && r.child != CHILD_MANY
                && !r.seen_again
                && self.now < expires
                && r.networks <= PENDING_CHILD_NETWORKS_MAX;
            if pending {
                self.pending_until = self.pending_until.min(expires);
            }
            self.add_child(r.child, r.seen_again, pending);
            if r.size >= mixed_answers::MULTI_ADDRESS {
                self.multi += 1;
                if r.networks >= mixed_answers::MIXED_NETWORKS {
                    self.mixed += 1;
                }
            }
        }
    }

    /// Counts the name under a registered domain that gave one of its answers, and whether
    /// that answer was seen again: a second answer of the same name makes that name a rotating
    /// child, an answer of several or unknown names is rotation the children do not explain.
    fn add_child(&mut self, tag: u16, seen_again: bool, pending: bool) {
        let known = self.children.min(MAX_RRSETS);
        if tag == 0 || tag == CHILD_MANY {
            self.children_unattributed = true;
        } else if let Some(i) = self.child_tags[..known].iter().position(|t| *t == tag) {
            if let Some(n) = self.child_answers.get_mut(i) {
                *n = n.saturating_add(1);
            }
        } else if let (Some(slot), Some(n), Some(seen), Some(wait)) = (
            self.child_tags.get_mut(self.children),
            self.child_answers.get_mut(self.children),
            self.child_seen_again.get_mut(self.children),
            self.child_pending.get_mut(self.children),
        ) {
            *slot = tag;
            *n = 1;
            *seen = seen_again;
            *wait = pending;
            self.children += 1;
        } else {
            // More answers than a key keeps cannot happen; if it did, say nothing of children.
            self.children_unattributed = true;
        }
    }

    /// The names counted so far whose (answers, seen again, pending) satisfy `keep`: one walk
    /// over the per-child arrays for every count the parent rule reads.
    fn count_children(&self, keep: impl Fn(u8, bool, bool) -> bool) -> u32 {
        let known = self.children.min(MAX_RRSETS);
        let n = self.child_answers[..known]
            .iter()
            .zip(&self.child_seen_again[..known])
            .zip(&self.child_pending[..known])
            .filter(|((n, seen), wait)| keep(**n, **seen, **wait))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Names that gave two answers or more, plus one for answers the names do not explain.
    fn rotating_children(&self) -> u32 {
        self.count_children(|n, _, _| n >= 2) + u32::from(self.children_unattributed)
    }

    /// Names with exactly one answer (the stable children; unattributed answers are not
    /// names, so they are not subtracted here as `rotating_children` counts them).
    fn stable_children(&self) -> u32 {
        self.count_children(|n, _, _| n == 1)
    }

    /// Names with one answer that a cache may still re-show (none when the key cannot wait).
    fn stable_children_pending(&self) -> u32 {
        if !self.can_wait_on_children() {
            return 0;
        }
        self.count_children(|n, _, wait| n == 1 && wait)
    }

    /// Whether a pending child answer may still be seen again: not when the window fills the
    /// key's whole answer table, whose next answers evict the oldest (a re-shown answer that
    /// was evicted comes back as a new one). Busy wildcard flux (a new name per victim, more
    /// lookups per TTL than the table holds) would otherwise stay pending for ever.
    fn can_wait_on_children(&self) -> bool {
        (self.rrsets as usize) < MAX_RRSETS
    }

    /// Names with one answer, seen again.
    fn stable_children_seen_again(&self) -> u32 {
        self.count_children(|n, seen, _| n == 1 && seen)
    }

    /// The features of what has been added so far; the name servers are read for `cutoff`.
    fn features(&self, k: &KeyState, window: &'static str, cutoff: u32) -> Features {
        let mut f = Features::default();
        self.features_into(k, window, cutoff, &mut f);
        f
    }

    /// [`Self::features`] into `f`, every field of it (what it held before is gone).
    fn features_into(&self, k: &KeyState, window: &'static str, cutoff: u32, f: &mut Features) {
        use super::model::round3;
        let rotating_children = self.rotating_children();
        let (lone_subnets, subnet_ips_max) = self.t.subnets.lone_and_most();
        *f = Features {
            window,
            responses: k.responses,
            rrsets: self.rrsets,
            distinct_ips: self.distinct_ips,
            distinct_asns: self.t.asns.distinct(),
            distinct_networks: self.t.nets.distinct(),
            distinct_countries: self.t.ccs.distinct(),
            distinct_prefixes: self.t.prefixes.distinct(),
            prefix_entropy: round3(self.t.prefixes.normalised_entropy()),
            distinct_subnets: self.t.subnets.distinct(),
            lone_subnets,
            subnet_ips_max,
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
            reached_via_others: !k.marked(MARK_QUERIED_DIRECTLY) && k.customers & 3 != 0,
            children: u32::try_from(self.children).unwrap_or(u32::MAX),
            children_rotated: rotating_children > 0,
            rotating_children,
            stable_children: self.stable_children(),
            stable_children_seen_again: self.stable_children_seen_again(),
            stable_children_pending: self.stable_children_pending(),
            answers_seen_again: self.seen_again,
            feed_match: if k.marked(MARK_FEED_MATCH) { 1.0 } else { 0.0 },
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
                    e.last >= cutoff
                        && super::infra::first_party(e.addr.asn, k.info_of(&e.addr).to_ip())
                })
                .count() as u32;
        }
        if let Some(t) = &k.ns {
            for h in t.hosts.iter().filter(|h| h.last >= cutoff) {
                f.ns_hosts += 1;
                let mut gnets = GlueTally::new();
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
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::score::key_state::tests::a;

    #[test]
    fn windows_forget_old_addresses() {
        let mut k = KeyState::new(0);
        k.add_answer(0, 60, &[a(1, 1, b"US")]);
        k.add_answer(7200, 60, &[a(2, 1, b"US")]);
        assert_eq!(k.features(7200, WINDOWS[0]).distinct_ips, 1);
        assert_eq!(k.features(7200, WINDOWS[1]).distinct_ips, 2);
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

    /// The scorer's one [`Nested`], refilled for key after key (small and full tallies, fewer
    /// windows than before), holds what a new one would.
    #[test]
    fn a_reused_nested_holds_nothing_of_the_key_before() {
        let addr = |i: u32| AddrInfo {
            ip: AddrInfo::ip_bytes(IpAddr::from((0x0b00_0000 + i * 65_537).to_be_bytes())),
            asn: 64_500 + i,
            network: 1 + i,
            country: [b'A' + (i % 20) as u8, b'Z'],
        };
        // A busy old key: both windows, many addresses and networks, name servers with glue.
        let mut busy = KeyState::new(0);
        for t in 0..40u32 {
            let now = t * 3000;
            busy.add_answer(now, 60, &[addr(t), addr(t + 100), addr(t + 200)]);
            busy.add_ns(now, &format!("ns{}.example", t % 5), &[addr(t + 300)], 2);
        }
        let later = 40 * 3000;
        // A young key with one answer, and an old one whose answers left the first window.
        let mut young = KeyState::new(later);
        young.add_answer(later, 300, &[addr(7)]);
        let mut quiet = KeyState::new(0);
        quiet.add_answer(0, 300, &[addr(9)]);
        // Another busy key (the full tallies reused), sharing some of the first one's values.
        let mut other = KeyState::new(0);
        for t in 0..30u32 {
            other.add_answer(t * 4000, 60, &[addr(t * 2), addr(t + 1000)]);
        }
        let cases = [
            (&young, 1),
            (&young, WINDOWS.len()),
            (&quiet, WINDOWS.len()),
            (&other, WINDOWS.len()),
            (&other, 1),
            (&young, 1),
        ];
        // Each case right after the busy key (both windows full, full tallies used)...
        for (k, n) in cases {
            let mut reused = busy.features_nested(later, WINDOWS.len());
            assert!(reused.windows.iter().all(Option::is_some));
            k.features_nested_into(later + 10, n, &mut reused);
            let fresh = k.features_nested(later + 10, n);
            assert_eq!(reused.windows, fresh.windows, "n={n}");
            assert_eq!(reused.changes_at, fresh.changes_at, "n={n}");
        }
        // ...and one Nested through every case, as the scorer keeps it: the small tallies go
        // from one small key to the next, the full ones from `busy` to `other`.
        let mut reused = busy.features_nested(later, WINDOWS.len());
        for (i, (k, n)) in cases.into_iter().enumerate() {
            k.features_nested_into(later + 10, n, &mut reused);
            let fresh = k.features_nested(later + 10, n);
            assert_eq!(reused.windows, fresh.windows, "case {i}");
            assert_eq!(reused.changes_at, fresh.changes_at, "case {i}");
        }
    }

    /// Every window through the tally `T`, in new tallies.
    fn nested_with<T: Counting>(k: &KeyState, now: u32) -> Nested {
        let mut out = Nested::default();
        let mut tallies = Tallies::<T>::new();
        let acc = Acc::new(now, &mut tallies);
        k.features_nested_with(acc, WINDOWS.len(), (&mut out.windows, &mut out.changes_at));
        out
    }

    /// A key of few addresses gets the same features from the small tally as from the full
    /// one, at every step up to the largest the small one takes, and past it (where the full
    /// one must be picked).
    #[test]
    fn small_keys_get_the_same_features_from_either_tally() {
        let addr = |i: u32| AddrInfo {
            ip: AddrInfo::ip_bytes(IpAddr::from((0x0a00_0000 + i * 40_503).to_be_bytes())),
            asn: 64_500 + i % 3,
            network: 1 + i % 5,
            country: [b'A' + (i % 2) as u8, b'Z'],
        };
        let mut k = KeyState::new(0);
        let mut picked_small = 0;
        for t in 0..12u32 {
            let now = t * 900;
            k.add_answer(now, 300, &[addr(t), addr(t / 2)]);
            let small = nested_with::<SmallTally>(&k, now + 10);
            let full = nested_with::<Tally>(&k, now + 10);
            let chosen = k.features_nested(now + 10, WINDOWS.len());
            assert_eq!(chosen.windows, full.windows, "t={t}");
            assert_eq!(chosen.changes_at, full.changes_at, "t={t}");
            if k.ips.len() <= SMALL_TALLY_MAX {
                picked_small += 1;
                assert_eq!(small.windows, full.windows, "t={t}");
                assert!(full.windows[0].as_ref().unwrap().distinct_ips > 0);
            }
            for w in WINDOWS {
                assert_eq!(
                    k.features(now + 10, w),
                    k.features_with::<Tally>(now + 10, w)
                );
            }
        }
        assert!(picked_small >= 4, "the small tally was exercised");
        assert!(k.ips.len() > SMALL_TALLY_MAX, "and so was the full one");
    }
}
