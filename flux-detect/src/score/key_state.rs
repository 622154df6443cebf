//! Per-key state: what the scorer remembers about one key and how a response updates it.
//!
//! A key keeps the addresses it resolved to (with when each was last seen), a short history of
//! its distinct answers (RRsets) and, for zones, the glue of its NS hosts. Everything is capped
//! ([`MAX_IPS_PER_KEY`], [`MAX_RRSETS`], [`MAX_NS_HOSTS`], [`MAX_GLUE`], in `params.rs`),
//! evicting the least recently seen entry, so a key's memory is bounded whatever it resolves to.
//! The features over windows are computed from it in `features.rs`; the shared-bot table is
//! only read here.

use smallvec::SmallVec;

use super::{
    addr_info::{AddrInfo, StoredAddr, fnv32, v4_bits},
    params::{
        BUSY_CHANGES, MAX_GLUE, MAX_IPS_PER_KEY, MAX_NS_HOSTS, MAX_RRSETS, STABLE_ANSWER_MAX,
        WINDOWS,
    },
};

/// The allocator's header per heap allocation (glibc malloc), for memory estimates. The agent's
/// allocator (mimalloc) has no header, so under it the estimate is an upper bound (251 MiB
/// estimated against 189 MiB measured for 1,000,000 names, docs/benchmarks.md).
pub const MALLOC_OVERHEAD: usize = 16;

/// [`KeyState::marks`]: the key qualified for the block gate at its last score (see
/// `params::BLOCK_SCORE`). Bit 2 is free (bits 1 and 2 were once the evaluation's baseline
/// flags, which it now keeps itself, `Scorer::set_rescore_tap`; that predates snapshots).
pub const MARK_BLOCK_QUALIFIED: u8 = 4;
/// The key passed the block gate: it qualified at two scores at different times.
pub const MARK_BLOCKABLE: u8 = 8;
/// A name under the key was queried directly, not reached through another registered domain's
/// CNAME (see `model::provider_zone`).
pub const MARK_QUERIED_DIRECTLY: u8 = 16;
/// A loaded threat-intelligence feed matched the key (`Scorer::note_feed_match`).
pub const MARK_FEED_MATCH: u8 = 32;
/// At its last score the key was not flux and the parent rule held only because some stable
/// children were pending (`model::waits_on_pending_children`): their answers expiring unseen
/// changes its reading with no new answer, so the scorer re-scores it then
/// (`Scorer::sweep_due`).
pub const MARK_WAITS_ON_PENDING: u8 = 1;

#[derive(Clone, Copy, Debug)]
pub(super) struct IpEntry {
    /// 16 bytes, not [`AddrInfo`]'s 28: an IPv6 address's bytes are in [`Extras::v6`].
    pub(super) addr: StoredAddr,
    pub(super) last: u32,
}

/// One distinct answer (address set) of a key.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rrset {
    pub(super) hash: u32,
    pub(super) last: u32,
    /// Authoritative TTL estimate: the largest TTL seen for this answer (caches count it down).
    pub(super) ttl: u32,
    /// How long after `last` some cache may still hand this answer out (the latest
    /// `seen + TTL` of any response carrying it, capped at 18 hours). Seen again before that,
    /// it is the same fetch re-shown (a cache, or another name of the key answering in turn);
    /// seen after, the authority gave it again.
    pub(super) valid_for: u16,
    /// Times the answer came back after it had expired (see `valid_for`).
    pub(super) returns: u8,
    pub(super) size: u8,
    /// Addresses the key had not seen before this answer.
    pub(super) new: u8,
    /// Distinct networks inside this one answer.
    pub(super) networks: u8,
    /// Networks of this answer the key had no address in before it.
    pub(super) new_networks: u8,
    /// The first answer the key ever had, or its first of the other address family (a
    /// dual-stack name's AAAA answer after its A answer): all its addresses are "new" by
    /// definition, and none of them is rotation.
    pub(super) first: bool,
    /// Seen again after the response that brought it (a cache re-showing it, or a return):
    /// the name that gave it keeps giving it.
    pub(super) seen_again: bool,
    /// Of a registered-domain key: a 16-bit tag of the name under it that gave this answer
    /// ([`child_tag`]), [`CHILD_MANY`] when several did, 0 when unknown (an owner key, a
    /// restored snapshot). See `model::stable_children_only`.
    pub(super) child: u16,
}

/// [`Rrset::child`] of an answer that several names under the domain gave.
pub const CHILD_MANY: u16 = 1;

/// The tag of a name under a registered domain and the family of its answer (never 0 or
/// [`CHILD_MANY`]): two children share one with odds of 1 in 65,534, which only makes the rule
/// that reads it (`model::stable_children_only`) hold less often.
///
/// A name's IPv6 answer (`v6`, every address of it IPv6) is a child of its own: a dual-stack
/// host's A and AAAA answers are two halves of one fixed answer, not one name rotating. On the
/// real Zeek log (WRCCDC 2018, A and AAAA looked up side by side) every Debian host name gave
/// both, so each counted as a name with two answers, the parent rule never held, and
/// `debian.org` reached `flux` on its hosts at six donors' networks. The IPv4 tag is the same as
/// before the family counted, so a restored snapshot's tags keep their meaning.
pub fn child_tag(name: &str, v6: bool) -> u16 {
    let h = fnv32(name.as_bytes());
    // At least 2, and 2 and 3 swap with each other: the IPv6 tag is never 0 or CHILD_MANY.
    ((h ^ (h >> 16)) as u16).max(CHILD_MANY + 1) ^ u16::from(v6)
}

/// Whether an answer is an IPv6 one: every address in it IPv6 (a AAAA answer). A mixed answer
/// (an ANY query's) counts as IPv4.
pub fn answer_is_v6(addrs: &[AddrInfo]) -> bool {
    !addrs.is_empty() && addrs.iter().all(AddrInfo::is_v6)
}

impl Rrset {
    /// Addresses handed out after the key's first answer: this answer's on its first
    /// appearance (unless it was the first), and again on every return.
    pub(super) fn handed_out(&self) -> u32 {
        u32::from(self.size) * (u32::from(self.returns) + u32::from(!self.first))
    }
}

#[derive(Clone, Debug)]
pub(super) struct NsHost {
    pub(super) name: Box<str>,
    pub(super) last: u32,
    pub(super) glue: Vec<(AddrInfo, u32)>,
    /// The most glue addresses one response carried for this host: more in a window means
    /// the glue changed between responses (it rotates).
    pub(super) glue_set_max: u8,
}

#[derive(Clone, Debug, Default)]
pub(super) struct NsTable {
    pub(super) hosts: Vec<NsHost>,
    /// The largest NS set one response carried: names beyond it are churn.
    pub(super) max_set: u8,
}

/// What few keys have, behind one pointer instead of inline in every key (a million keys
/// hold the pointer, most of them nothing behind it).
#[derive(Clone, Debug, Default)]
pub(super) struct Extras {
    /// The last CNAME chain that led to this key's addresses (query name first).
    chain: Option<Box<[Box<str>]>>,
    /// The allowlisted suffix of a name that fed this key (a seed host feeding its domain).
    allowed_by: Option<Box<str>>,
    /// The bytes of the key's IPv6 addresses, in no particular order; an entry of
    /// [`KeyState::ips`] points to its own ([`StoredAddr::v6_slot`]). At most one per entry.
    v6: Vec<[u8; 16]>,
}

/// Everything the scorer remembers about one key.
///
/// Sized for a million keys most of which are seen with one answer of a few addresses: the
/// first answer and the fingerprints of up to four addresses sit inline (no allocation), the
/// rarely used parts are in [`Extras`].
#[derive(Clone, Debug, Default)]
pub struct KeyState {
    pub(super) ips: Vec<IpEntry>,
    /// A 32-bit fingerprint of each address in `ips`, same order: finding an address scans
    /// this dense array (vectorised) instead of the entries.
    pub(super) ip_fps: SmallVec<[u32; INLINE_ADDRS]>,
    pub(super) rrsets: SmallVec<[Rrset; INLINE_ANSWERS]>,
    pub(super) ns: Option<Box<NsTable>>,
    pub(super) more: Option<Box<Extras>>,
    pub first_seen: u32,
    pub responses: u32,
    /// New answers and returns of expired ones, saturating (what makes a key busy).
    pub(super) changes: u8,
    pub level: super::model::Level,
    pub last_eval: u32,
    /// Bit per role, see `super::ROLE_*`.
    pub roles: u8,
    /// The `MARK_*` flags ([`MARK_BLOCKABLE`], ...): one byte for all of them,
    /// since a million keys hold it (see `per_key_records_stay_small`).
    pub marks: u8,
    /// The key is flux and not allowlisted: the addresses it resolves to are bots other
    /// domains are compared with, including those it shows after it was judged.
    pub shares_bots: bool,
    /// At its last score the key was not flux but could become flux on shared bots alone
    /// (see `model::could_flux_on_shared_bots`).
    pub watch: bool,
    /// Unrelated registered domains whose names lead here through CNAME chains: a 14-bit tag
    /// of the last one, and in the low 2 bits how many times it changed (saturating at 3; 2
    /// or more means two customers or more). See `model::provider_zone`.
    pub(super) customers: u16,
    /// The minute (observation time / 60, wrapping at 256) the key first qualified for the
    /// block gate without falling out since: one byte, so the hold costs no memory.
    pub block_minute: u8,
    /// Something the features read changed since the last score: a new answer, a larger TTL,
    /// or an entry seen again that had left a window. See [`KeyState::unchanged_since_eval`].
    pub(super) dirty: bool,
    /// When the oldest entry of a window at the last score leaves it (see [`Nested`]).
    pub(super) changes_at: u32,
    /// Other domains' bots per window at the last score.
    pub(super) last_shared: [u8; WINDOWS.len()],
    /// Where the registered domain starts in the key's name, once looked up
    /// ([`KeyState::own_domain`]): [`RD_UNKNOWN`], [`RD_NONE`], or [`RD_FIRST`] plus the offset.
    /// In what was padding: the state stays 128 bytes.
    pub(super) rd_at: u8,
}

/// [`KeyState::rd_at`] before the first lookup (and for a name whose registered domain starts
/// further in than a byte counts, which is then looked up every time).
const RD_UNKNOWN: u8 = 0;
/// [`KeyState::rd_at`] for a name with no registered domain (a public suffix itself).
const RD_NONE: u8 = 1;
/// [`KeyState::rd_at`] for a registered domain starting at offset 0; offset k is `RD_FIRST + k`.
const RD_FIRST: u8 = 2;

/// Address fingerprints a key holds without an allocation: a third of keys have four
/// addresses or fewer in their lifetime (round robin of four is common), and a `SmallVec` of
/// four `u32` is no larger than a `Vec`.
const INLINE_ADDRS: usize = 4;
/// Answers a key holds without an allocation: most keys are seen with one answer only (the
/// cold keys of a churning stream), and a second one moves the history to the heap.
const INLINE_ANSWERS: usize = 1;

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
        self.add_answer_from(now, ttl, addrs, 0)
    }

    /// [`super::registered_domain`] of `name`, the key's own name: the public-suffix walk is
    /// done once and where the domain starts is kept, since the name never changes (the walk
    /// for every answer's owner was 3% of a replay). The key table finds a key by a keyed
    /// 64-bit hash of its name, so another name never reaches this state (short of a 64-bit
    /// collision, which would already merge the two keys).
    ///
    /// Kept only when the domain is the end of the name: the public-suffix lookup drops a
    /// trailing dot (`www.example.com.` gives `example.com`), and such a name, which the wire
    /// can carry as an escaped dot in the last label, is then looked up every time.
    pub fn own_domain<'n>(&mut self, name: &'n str) -> Option<&'n str> {
        match self.rd_at {
            RD_UNKNOWN => {
                let rd = super::registered_domain(name);
                self.rd_at = match rd {
                    None => RD_NONE,
                    Some(d) if name.ends_with(d) => name
                        .len()
                        .checked_sub(d.len())
                        .and_then(|k| u8::try_from(k).ok())
                        .and_then(|k| k.checked_add(RD_FIRST))
                        .unwrap_or(RD_UNKNOWN),
                    Some(_) => RD_UNKNOWN,
                };
                rd
            }
            RD_NONE => None,
            k => name.get(usize::from(k - RD_FIRST)..),
        }
    }

    /// Starts loading into the CPU's caches the ends of the arrays a new answer searches first
    /// (answers, then address fingerprints and addresses, newest last), so that their misses
    /// (a key's state is usually cold) overlap the work before [`Self::add_answer_from`]
    /// instead of stalling it. Changes nothing.
    pub fn prefetch(&self) {
        if let Some(r) = self.rrsets.last() {
            super::prefetch::line(r);
        }
        if let Some(f) = self.ip_fps.last() {
            super::prefetch::line(f);
        }
        if let Some(e) = self.ips.last() {
            super::prefetch::line(e);
        }
    }

    /// [`KeyState::add_answer`], noting which name under a registered-domain key gave the
    /// answer (`child`, a [`child_tag`]; 0 for an owner key).
    pub fn add_answer_from(&mut self, now: u32, ttl: u32, addrs: &[AddrInfo], child: u16) -> bool {
        self.responses = self.responses.saturating_add(1);
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
            r.seen_again = true;
            // The same tag with the family bit flipped is the same name's IPv6 answer stored
            // before tags told the families apart (a snapshot taken before 2026-12-06): the
            // same address set cannot be another family's. Another name's tag one bit away
            // is a collision of 1 in 65,534, which only keeps one child stable.
            if r.child ^ 1 == child && answer_is_v6(addrs) {
                r.child = child;
            } else if r.child != child {
                r.child = CHILD_MANY;
            }
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
            } else if !fresh.iter().any(|f| f.ip == a.ip) {
                // An answer that repeats an address adds it once: a key holds each address at
                // most once (`find_ip` relies on it).
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
        // A dual-stack name's first answer of its other family (its AAAA answer after its A
        // answer) is as much its first as the first one was: its addresses are not rotation.
        let first_of_family = !self.ips.is_empty() && fresh.len() == addrs.len() && {
            let v6 = answer_is_v6(addrs);
            self.ips.iter().all(|e| e.addr.is_v6() != v6)
        };
        let new = u8::try_from(fresh.len()).unwrap_or(u8::MAX);
        // Most keys are seen with one answer and never again: sized to it, not to the four
        // entries a first push reserves (about 100 bytes a key over a million keys).
        if self.ips.is_empty() {
            self.ips.reserve_exact(fresh.len());
            self.ip_fps.reserve_exact(fresh.len());
        }
        self.insert_ips(&fresh, now);
        let first =
            (self.rrsets.is_empty() && self.ips.len() == usize::from(new)) || first_of_family;
        if self.rrsets.len() >= MAX_RRSETS
            && let Some(i) = first_oldest(&self.rrsets, |r| r.last)
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
            seen_again: false,
            child,
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

    /// Marks the key as matched by a feed; `true` when it was not yet (it is then re-scored at
    /// its next look, as after new data).
    pub fn note_feed_match(&mut self) -> bool {
        if self.marked(MARK_FEED_MATCH) {
            return false;
        }
        self.set_mark(MARK_FEED_MATCH, true);
        self.dirty = true;
        true
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

    /// Appends `fresh`, seen at `now`, one by one; a full key gives up its oldest address for
    /// each (the first of several as old, [`first_oldest`]). The evictions are the ones
    /// [`first_oldest`] before each insertion would pick, without its scan of every entry for
    /// each: one scan finds the oldest sighting and where it is, and the entries as old are
    /// taken in order, following the moves of `swap_remove`; a new scan only when they run out.
    /// An answer's addresses are touched together, so its new addresses usually replace the
    /// addresses of one older answer, found by one scan instead of one per address (the scans
    /// were a twentieth of the churn stream's replay).
    fn insert_ips(&mut self, fresh: &[AddrInfo], now: u32) {
        // Indices of the entries last seen at `oldest`, the lowest last (taken first); only
        // the lowest few are kept (a scan again if they run out).
        let mut oldest = 0;
        let mut ties: SmallVec<[usize; 8]> = SmallVec::new();
        for a in fresh {
            if self.ips.len() >= MAX_IPS_PER_KEY {
                if ties.is_empty()
                    && let Some(m) = self.ips.iter().map(|e| e.last).min()
                {
                    oldest = m;
                    ties.extend(
                        self.ips
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| e.last == m)
                            .map(|(i, _)| i)
                            .take(ties.inline_size()),
                    );
                    ties.reverse();
                }
                if let Some(i) = ties.pop() {
                    let moved = self.ips.len() - 1;
                    let gone = self.ips.swap_remove(i);
                    self.ip_fps.swap_remove(i);
                    self.forget_v6(gone.addr);
                    // The last entry now sits at `i`, the lowest index of all: if it is as old,
                    // it is taken next (and no longer where it was).
                    ties.retain(|t| *t != moved);
                    if self.ips.get(i).is_some_and(|e| e.last == oldest) {
                        ties.push(i);
                    }
                }
            }
            self.ip_fps.push(fingerprint(&a.ip));
            self.push_ip(a, now);
            // An entry older than the ones found, if observation time ran backwards: scan
            // again. One as old is last of them, and a scan finds it once they run out.
            if now < oldest {
                ties.clear();
            }
        }
    }

    /// Appends the entry of `a`, keeping an IPv6 address's bytes in the side table.
    fn push_ip(&mut self, a: &AddrInfo, last: u32) {
        let mut addr = StoredAddr::new(a, 0);
        if addr.v6_slot().is_some() {
            let more = self.more.get_or_insert_with(Box::default);
            // At most one per entry, so below MAX_IPS_PER_KEY (128).
            addr.set_v6_slot(u8::try_from(more.v6.len()).unwrap_or(u8::MAX));
            more.v6.push(a.ip);
        }
        self.ips.push(IpEntry { addr, last });
    }

    /// Drops the side-table bytes of a removed entry; the last bytes move into their place,
    /// and the entry that pointed to them follows.
    fn forget_v6(&mut self, gone: StoredAddr) {
        let (Some(slot), Some(more)) = (gone.v6_slot(), self.more.as_mut()) else {
            return;
        };
        let last = more.v6.len().saturating_sub(1);
        if slot >= more.v6.len() {
            return;
        }
        more.v6.swap_remove(slot);
        if slot != last
            && let Some(e) = self.ips.iter_mut().find(|e| e.addr.v6_slot() == Some(last))
        {
            e.addr.set_v6_slot(u8::try_from(slot).unwrap_or(u8::MAX));
        }
    }

    /// The whole [`AddrInfo`] of an address entry.
    pub(super) fn info_of(&self, a: &StoredAddr) -> AddrInfo {
        a.info(v6_bytes(&self.more, a))
    }

    fn find_ip(&mut self, ip: &[u8; 16]) -> Option<&mut IpEntry> {
        const LANES: usize = 16;
        let fp = fingerprint(ip);
        // Newest entries first: an address is in the key at most once (`add_answer_from` and
        // `restore_ip` keep it so), so the order changes no answer, and the answers that come
        // again (a cache re-showing them, a name asked again within its TTL) are the recent
        // ones, appended last.
        let n = self.ip_fps.len();
        let full = n / LANES * LANES;
        let v4 = v4_bits(ip);
        // The partial block at the end, entry by entry.
        for i in (full..n).rev() {
            if self.ip_fps.get(i).is_some_and(|f| f & FP_MASK == fp) && self.holds_at(i, ip, v4) {
                return self.ips.get_mut(i);
            }
        }
        // Then the whole blocks: a bit mask of matching fingerprints per block of a fixed size,
        // without early exit inside it, so the compiler compares a block in a few vector
        // instructions with constant shifts (over a slice of any length it emulated a shift per
        // lane, and find_ip was 16% of the resolver stream's replay).
        let blocks = self.ip_fps.get(..full).unwrap_or_default();
        for (block, fps) in blocks.chunks_exact(LANES).enumerate().rev() {
            let Ok(fps) = <&[u32; LANES]>::try_from(fps) else {
                continue;
            };
            // Whether any matches first, an OR over the block, which vectorises to a few
            // compares; the mask of which ones (a shift per lane) only for a block that has
            // one. Most blocks have none.
            if !fps.iter().fold(false, |hit, f| hit | (*f & FP_MASK == fp)) {
                continue;
            }
            let mut mask = 0u32;
            for (i, f) in fps.iter().enumerate() {
                mask |= u32::from(*f & FP_MASK == fp) << i;
            }
            while mask != 0 {
                let i = block * LANES + mask.trailing_zeros() as usize;
                if self.holds_at(i, ip, v4) {
                    return self.ips.get_mut(i);
                }
                mask &= mask - 1;
            }
        }
        None
    }

    /// Whether address entry `i` is `ip`, whose [`v4_bits`] are `v4`: an IPv4 entry compares
    /// four bytes instead of building the address's sixteen (a fingerprint match is confirmed
    /// here for every address of a re-shown answer, and building them was most of the cost).
    fn holds_at(&self, i: usize, ip: &[u8; 16], v4: Option<u32>) -> bool {
        self.ips
            .get(i)
            .is_some_and(|e| e.addr.is(ip, v4, v6_bytes(&self.more, &e.addr)))
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
                    && let Some(i) = first_oldest(&t.hosts, |h| h.last)
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
                    && let Some(i) = first_oldest(&h.glue, |g| g.1)
                {
                    h.glue.swap_remove(i);
                }
                h.glue.push((*a, now));
            }
        }
        self.dirty |= dirty || changed;
        changed
    }

    /// Notes who reached this key (a registered domain, or an owner name) through the
    /// response's CNAME chain: `customer`, the registered domain the chain started in when that
    /// is another one than the key's own; `None` when one of its own names was queried
    /// directly (or the answer came with no chain to follow).
    pub fn note_customer(&mut self, customer: Option<&str>) {
        let Some(rd) = customer else {
            if !self.marked(MARK_QUERIED_DIRECTLY) {
                self.set_mark(MARK_QUERIED_DIRECTLY, true);
                // Bots of its chain's domains count as others' from now on (`shared_bots`).
                self.forget_bot_marks();
            }
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
        let same = self
            .more
            .as_ref()
            .and_then(|m| m.chain.as_ref())
            .is_some_and(|c| {
                c.len() == chain.len() && c.iter().zip(chain).all(|(a, b)| &**a == *b)
            });
        if !same {
            self.more.get_or_insert_with(Box::default).chain =
                Some(chain.iter().map(|s| Box::<str>::from(*s)).collect());
            // Which bots are the key's own depends on its chain ([`Self::shared_bots`]): the
            // remembered answers are asked again.
            self.forget_bot_marks();
        }
    }

    /// Clears what the shared-bot table said about each address ([`Self::shared_bots`] asks
    /// again).
    fn forget_bot_marks(&mut self) {
        for fp in &mut self.ip_fps {
            *fp &= FP_MASK;
        }
    }

    /// Puts back a chain as a snapshot held it.
    pub(super) fn restore_chain(&mut self, chain: Vec<String>) {
        self.more.get_or_insert_with(Box::default).chain =
            Some(chain.into_iter().map(Box::from).collect());
    }

    pub fn chain(&self) -> impl Iterator<Item = &str> {
        self.more
            .iter()
            .flat_map(|m| m.chain.iter())
            .flat_map(|c| c.iter().map(|s| &**s))
    }

    /// The allowlisted suffix of a name that fed this key (a seed host feeding its domain).
    pub fn allowed_by(&self) -> Option<&str> {
        self.more.as_ref()?.allowed_by.as_deref()
    }

    pub fn set_allowed_by(&mut self, suffix: Option<&str>) {
        match suffix {
            Some(s) => self.more.get_or_insert_with(Box::default).allowed_by = Some(s.into()),
            None => {
                if let Some(m) = self.more.as_mut() {
                    m.allowed_by = None;
                }
            }
        }
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

    /// Per window, the addresses that are other flux domains' bots. `name` is the key's name
    /// and `domain_id` gives a name's registered-domain id in the table. A bot shown by the
    /// key's own domain is the key's own; so is one shown by a domain of the key's CNAME chain
    /// while no name of the key was ever queried directly ([`MARK_QUERIED_DIRECTLY`]): a key
    /// users reach only through that chain shows the very answers of the names before it, so
    /// their verdict is this key's rotation seen under another name, not a second domain on
    /// the same bots (an ISP cache's content name judged flux made its CDN steering name, the
    /// next link of the same chain, flux on shared bots alone; see
    /// [`super::params::shared_flux_addresses`]). A key also queried directly is a service of
    /// its own, and a flux operator cannot excuse his second domain from his first one's bots
    /// by sending one lookup through a CNAME. An address the table has placed is remembered
    /// with it: a bot keeps its first owner, so the answer does not change (until the chain or
    /// the direct mark does, [`Self::set_chain`], [`Self::note_customer`]), and a flux key's own
    /// bots (all of its addresses, once it shares them) are not looked up again at every
    /// rescore. The domain ids are worked
    /// out only when an address turns out to be a bot (each costs a public-suffix lookup, and
    /// most keys have none).
    pub fn shared_bots(
        &mut self,
        now: u32,
        flux_ips: &super::shared::FluxIps,
        name: &str,
        domain_id: impl Fn(&str) -> u32,
    ) -> [u32; WINDOWS.len()] {
        let mut shared = [0u32; WINDOWS.len()];
        if flux_ips.is_empty() {
            return shared;
        }
        let chain = if self.marked(MARK_QUERIED_DIRECTLY) {
            None
        } else {
            self.more.as_ref().and_then(|m| m.chain.as_deref())
        };
        let mut own_ids: Option<SmallVec<[u32; 4]>> = None;
        let mut is_own = |d: u32| {
            own_ids
                .get_or_insert_with(|| {
                    std::iter::once(name)
                        .chain(chain.into_iter().flatten().map(|c| &**c))
                        .map(&domain_id)
                        .collect()
                })
                .contains(&d)
        };
        for (e, fp) in self.ips.iter().zip(self.ip_fps.iter_mut()) {
            if *fp & FP_OWN_BOT != 0 {
                continue;
            }
            // A bot can turn out to be shared infrastructure later (see
            // `FluxIps::note_stable_user`), so another domain's bot is asked again, unless no
            // bot ever did (the table lookup is what the mark saves).
            let trusted = *fp & FP_OTHER_BOT != 0 && flux_ips.infrastructure_found() == 0;
            if !trusted {
                // Nearly every address is no bot, which the filter tells from the fingerprint
                // alone; putting the address's bytes together first stalled this loop.
                if !flux_ips.may_hold_fingerprint(*fp & FP_MASK) {
                    *fp &= !FP_OTHER_BOT;
                    continue;
                }
                let ip = e.addr.ip_bytes(v6_bytes(&self.more, &e.addr));
                match flux_ips.owner(&ip) {
                    Some(d) if !is_own(d) => *fp |= FP_OTHER_BOT,
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
    pub fn addresses(&self, now: u32, window: u32) -> impl Iterator<Item = AddrInfo> + '_ {
        let cutoff = now.saturating_sub(window);
        self.ips
            .iter()
            .filter(move |e| e.last >= cutoff)
            .map(|e| self.info_of(&e.addr))
    }

    /// A rough count of the heap bytes this state holds (for the memory figure).
    pub fn heap_bytes(&self) -> usize {
        // The allocator's own header per allocation, for the arrays on the heap (the small
        // vectors only once they spilled).
        let arrays = [
            self.ips.capacity(),
            usize::from(self.ip_fps.spilled()),
            usize::from(self.rrsets.spilled()),
        ];
        let spilled = |spilled: bool, cap: usize, size: usize| if spilled { cap * size } else { 0 };
        MALLOC_OVERHEAD * arrays.iter().filter(|c| **c > 0).count()
            + self.ips.capacity() * size_of::<IpEntry>()
            + spilled(
                self.ip_fps.spilled(),
                self.ip_fps.capacity(),
                size_of::<u32>(),
            )
            + spilled(
                self.rrsets.spilled(),
                self.rrsets.capacity(),
                size_of::<Rrset>(),
            )
            + self.more.as_ref().map_or(0, |m| {
                MALLOC_OVERHEAD
                    + size_of::<Extras>()
                    + m.v6.capacity() * 16
                    + m.allowed_by
                        .as_ref()
                        .map_or(0, |s| s.len() + MALLOC_OVERHEAD)
                    + m.chain.as_ref().map_or(0, |c| {
                        c.iter().map(|s| s.len() + 16 + MALLOC_OVERHEAD).sum()
                    })
            })
            + self.ns.as_ref().map_or(0, |t| {
                size_of::<NsTable>()
                    + t.hosts.capacity() * size_of::<NsHost>()
                    + t.hosts
                        .iter()
                        .map(|h| h.name.len() + h.glue.capacity() * size_of::<(AddrInfo, u32)>())
                        .sum::<usize>()
            })
    }

    /// The shared-bot marks of each address in `ips` (the top two bits of its `ip_fps` word,
    /// [`FP_OTHER_BOT`] and [`FP_OWN_BOT`]), same order: a snapshot keeps them, so a restored
    /// key trusts exactly what it trusted before.
    pub(super) fn bot_marks(&self) -> impl Iterator<Item = u8> + '_ {
        self.ip_fps.iter().map(|f| (f >> 30) as u8)
    }

    /// Appends an address as a snapshot held it, with its [`Self::bot_marks`] value (only the
    /// low two bits are read). The caller keeps the caps of `params.rs`.
    pub(super) fn restore_ip(&mut self, addr: AddrInfo, last: u32, marks: u8) {
        // A snapshot of an agent from before answers were deduplicated may hold an address
        // twice (a reply that repeated glue): the first copy is kept.
        if self.find_ip(&addr.ip).is_some() {
            return;
        }
        self.ip_fps
            .push(fingerprint(&addr.ip) | (u32::from(marks & 3) << 30));
        self.push_ip(&addr, last);
    }
}

/// The IPv6 bytes an entry points to in the key's side table (`None` for IPv4).
fn v6_bytes<'a>(more: &'a Option<Box<Extras>>, a: &StoredAddr) -> Option<&'a [u8; 16]> {
    more.as_ref()?.v6.get(a.v6_slot()?)
}

/// The index of the first of `items` with the smallest `last` (`None` when empty): what
/// `iter().enumerate().min_by_key` gives, ties to the first, in two passes the compiler keeps
/// tight (the smallest value, then where it first occurs) instead of one carrying the index
/// along. The answers, name servers and glue of a full key are evicted by it, and a full key's
/// addresses by the same rule ([`KeyState::insert_ips`], which follows it without a scan per
/// address), so all four keep one tie rule.
fn first_oldest<T>(items: &[T], last: impl Fn(&T) -> u32) -> Option<usize> {
    let oldest = items.iter().map(&last).min()?;
    items.iter().position(|e| last(e) == oldest)
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
/// constant), which is most of what keys hold. The shared-bot filter hashes it too
/// (`shared.rs`), so a key can ask the filter without the address's bytes.
pub(super) fn fingerprint(ip: &[u8; 16]) -> u32 {
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

#[cfg(test)]
#[path = "key_state_tests.rs"]
pub(super) mod tests;
