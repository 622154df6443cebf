//! Re-scoring one key: its windows through the model, its level, the block gate, and the
//! verdict when something changed. Called by the scorer (`score.rs`) for the keys a response
//! touched, for watched keys and for `explain`; touches only the key's own state.

use super::{
    Baselines, KeyState, Level, ROLE_DOMAIN, ROLE_NS_HOST, ROLE_OWNER, ROLE_ZONE, Rescore,
    RescoreTap, Verdict, WINDOWS, domain_id,
    features::{Features, Nested},
    from_secs,
    key_state::{MARK_BLOCK_QUALIFIED, MARK_BLOCKABLE, MARK_WAITS_ON_PENDING},
    model, params,
    shared::FluxIps,
};
use crate::known_good::Allowlist;

/// Scores a key and moves its level. Returns a verdict if the level or the block gate changed
/// (the verdict's allocations, reasons, chain and roles, are only made then), and the key's own
/// score. `nested` is scratch space (see [`Nested`]).
pub(super) fn evaluate(
    name: &str,
    st: &mut KeyState,
    now: u32,
    shared_hold: ([u32; WINDOWS.len()], u8),
    (allowlist, tap): (&Allowlist, Option<&mut RescoreTap>),
    nested: &mut Nested,
) -> (Option<Verdict>, f64) {
    let (previous, scored) = rescore(name, st, now, shared_hold, tap, nested);
    let own = scored.own;
    let news = st.level != previous || st.marked(MARK_BLOCKABLE) != scored.was_blockable;
    (
        news.then(|| verdict(name, st, now, previous, (scored, nested), allowlist)),
        own,
    )
}

/// Per window, the addresses of the key that other flux domains resolved to. Only other
/// domains' bots count: a key's own flagged addresses prove nothing new.
pub(super) fn shared_bots(
    name: &str,
    st: &mut KeyState,
    now: u32,
    flux_ips: &FluxIps,
) -> [u32; WINDOWS.len()] {
    if flux_ips.is_empty() {
        [0; WINDOWS.len()]
    } else {
        st.shared_bots(now, flux_ips, name, domain_id)
    }
}

/// Where a key stands at the automatic-block gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gate {
    NotFlux,
    /// Flux, but not on its own evidence (other domains' bots carry part of it).
    OwnTooLow,
    /// Qualified at one re-score; a second, later one blocks.
    Waiting,
    Held,
}

impl Gate {
    fn explain(self) -> &'static str {
        match self {
            Gate::NotFlux => "not flux",
            Gate::OwnTooLow => {
                "reported only: its own evidence, without shared bots, is below the block score"
            }
            Gate::Waiting => {
                "reported; blocks if its own evidence holds on new answers for --block-hold"
            }
            Gate::Held => "own evidence at the block score, held on new answers",
        }
    }
}

/// A key's best window: its score, which window it is (its features stay in the [`Nested`]
/// the score was made in) and the baselines on the same data.
pub(super) struct Scored {
    score: f64,
    /// The score without other domains' bots.
    own: f64,
    gate: Gate,
    /// Whether the key passed the block gate before this score.
    was_blockable: bool,
    best: usize,
    baselines: Baselines,
}

/// Scores a key over every window and moves its level; returns the level it had before.
/// `shared` is its [`shared_bots`] now; `tap` (see [`super::Scorer::set_rescore_tap`]) is told the
/// result. The windows' features are left in `nested`, whatever it held before.
pub(super) fn rescore(
    name: &str,
    st: &mut KeyState,
    now: u32,
    (shared, hold): ([u32; WINDOWS.len()], u8),
    tap: Option<&mut RescoreTap>,
    nested: &mut Nested,
) -> (Level, Scored) {
    let young = now.saturating_sub(st.first_seen) < WINDOWS[0].0;
    // A young key's windows all hold the same observations: the first one says it all.
    st.features_nested_into(now, if young { 1 } else { WINDOWS.len() }, nested);
    let changes_at = if young {
        nested
            .changes_at
            .min(st.first_seen.saturating_add(WINDOWS[0].0))
    } else {
        nested.changes_at
    };
    // Read before `mark_evaluated` resets it: whether an answer came (or came back) since the
    // last score.
    let new_data = st.is_dirty();
    st.mark_evaluated(now, changes_at, &shared);
    let best = best_window(nested, &shared);
    if let Some(tap) = tap {
        tap(&Rescore {
            ts: from_secs(now),
            domain: name,
            score: best.score,
            baselines: best.baselines,
        });
    }
    let own = best.own;
    let previous = st.level;
    let was_blockable = st.marked(MARK_BLOCKABLE);
    st.level = match nested.windows.get(best.index).and_then(Option::as_ref) {
        Some(f) => model::next_level(previous, best.score, f),
        None => model::next_level(previous, best.score, &Features::default()),
    };
    st.watch = st.level != Level::Flux && best.watch;
    st.set_mark(
        MARK_WAITS_ON_PENDING,
        st.level != Level::Flux && best.pending,
    );
    let gate = block_gate(st, now, own, new_data, hold);
    (
        previous,
        Scored {
            score: best.score,
            own,
            gate,
            was_blockable,
            best: best.index,
            baselines: best.baselines,
        },
    )
}

/// The best of a key's windows (which, and its score), the baselines over all of them, and
/// whether any window makes the key worth watching for shared bots.
struct BestWindow {
    score: f64,
    /// The best window's [`model::own_score`].
    own: f64,
    /// Its index in the [`Nested`] scored; that window is there.
    index: usize,
    baselines: Baselines,
    watch: bool,
    /// Some window's parent rule waits on pending children ([`model::waits_on_pending_children`]).
    pending: bool,
}

/// Scores each window computed; the highest score wins. Sets each window's shared bots and
/// forged answers; when no window was computed, the first becomes the default features.
fn best_window(nested: &mut Nested, shared: &[u32; WINDOWS.len()]) -> BestWindow {
    // The best window by index: its features stay where they are (each window's features are
    // a few hundred bytes, and moving them showed as memcpy in replay profiles).
    let mut best: Option<(f64, f64, usize)> = None;
    let mut baselines = Baselines::default();
    let mut watch = false;
    let mut pending = false;
    // Forged answers are judged over the longest window computed: a censor's decoys do not all
    // fall into the last hour, and an operator must keep paying for the excuse all day.
    let forged = nested.windows.iter().flatten().last().is_some_and(|l| {
        l.answer_size_max == params::FORGED_ANSWER_SIZE
            && l.first_party_ips > 0
            && l.first_party_ips * params::FORGED_SHARE_DIVISOR >= l.distinct_ips
    });
    for (i, slot) in nested.windows.iter_mut().enumerate() {
        let Some(f) = slot else { break };
        f.shared_flux_ips = shared[i];
        f.forged_answers = forged;
        // Any window will do: two lookups hours apart only meet in the longer one.
        watch |= model::could_flux_on_shared_bots(f);
        pending |= model::waits_on_pending_children(f);
        // Holz counted ASNs; without a database the networks (/16s) stand in.
        let n_asn = if f.distinct_asns > 0 {
            f.distinct_asns
        } else {
            f.distinct_networks
        };
        baselines.holz = baselines.holz.max(model::holz(f.distinct_ips, n_asn));
        baselines.zeek = baselines.zeek.max(model::zeek(f.distinct_ips, n_asn));
        let (s, own) = model::scores(f);
        if best.as_ref().is_none_or(|b| s > b.0) {
            best = Some((s, own, i));
        }
    }
    let (score, own, index) = match best {
        Some(b) => b,
        // No window: the default features' scores, as `own_score` gave them.
        None => {
            let f = Features::default();
            let own = model::own_score(&f);
            if let Some(slot) = nested.windows.first_mut() {
                *slot = Some(f);
            }
            (0.0, own, 0)
        }
    };
    baselines.holz = model::round3(baselines.holz);
    baselines.zeek = model::round3(baselines.zeek);
    baselines.holz_flux = baselines.holz > params::holz::THRESHOLD;
    baselines.zeek_flux = baselines.zeek > params::holz::THRESHOLD;
    BestWindow {
        score,
        own,
        index,
        baselines,
        watch,
        pending,
    }
}

/// The block gate: flux, and the key's own evidence at BLOCK_SCORE since at least
/// `hold` minutes ago (BLOCK_HOLD_MINUTES by default), confirmed by a score on new data; once
/// passed, kept down to BLOCK_EXIT. Moves the key's gate marks; `st.level` is the new level.
fn block_gate(st: &mut KeyState, now: u32, own: f64, new_data: bool, hold: u8) -> Gate {
    // Wraps every 256 minutes; a key that qualified longer ago than that waits at most the
    // hold again.
    let minute = (now / 60) as u8;
    let was_blockable = st.marked(MARK_BLOCKABLE);
    let gate = if st.level != Level::Flux {
        Gate::NotFlux
    } else if was_blockable && own >= params::BLOCK_EXIT {
        Gate::Held
    } else if own < params::BLOCK_SCORE {
        Gate::OwnTooLow
    } else if st.marked(MARK_BLOCK_QUALIFIED)
        && new_data
        && minute.wrapping_sub(st.block_minute) >= hold
    {
        Gate::Held
    } else {
        Gate::Waiting
    };
    if gate == Gate::Waiting && !st.marked(MARK_BLOCK_QUALIFIED) {
        st.block_minute = minute;
    }
    st.set_mark(
        MARK_BLOCK_QUALIFIED,
        matches!(gate, Gate::Waiting | Gate::Held),
    );
    st.set_mark(MARK_BLOCKABLE, gate == Gate::Held);
    gate
}

/// The verdict for a key just rescored, with its reasons and allowlist status. Takes the best
/// window's features out of `nested`.
pub(super) fn verdict(
    name: &str,
    st: &KeyState,
    now: u32,
    previous: Level,
    (scored, nested): (Scored, &mut Nested),
    allowlist: &Allowlist,
) -> Verdict {
    let Scored {
        score,
        own,
        gate,
        was_blockable: _,
        best,
        baselines,
    } = scored;
    let mut features = nested
        .windows
        .get_mut(best)
        .and_then(Option::take)
        .unwrap_or_default();
    features.cname_chain = st.chain().map(str::to_owned).collect();
    let allow = allowlist_match(name, st, now, allowlist);
    Verdict {
        ts: from_secs(now),
        domain: name.to_owned(),
        level: st.level,
        previous,
        score: model::round3(score),
        own_score: model::round3(own),
        block: gate == Gate::Held,
        block_gate: gate.explain(),
        double_flux: model::glue_term(&features) >= params::rotating_glue::DOUBLE_FLUX,
        allowlisted: allow.is_some(),
        allowlist_match: allow.map(|m| m.to_string()),
        roles: roles(st.roles),
        reasons: model::reasons(&features),
        features,
        baselines,
    }
}

pub(super) fn allowlist_match(
    name: &str,
    st: &KeyState,
    now: u32,
    allowlist: &Allowlist,
) -> Option<crate::known_good::Match> {
    use crate::known_good::Match;
    if let Some(s) = allowlist.match_name(name) {
        return Some(Match::Suffix(s.to_owned()));
    }
    if let Some(s) = st.allowed_by() {
        return Some(Match::Suffix(s.to_string()));
    }
    for c in st.chain() {
        if let Some(s) = allowlist.match_name(c) {
            return Some(Match::Suffix(s.to_owned()));
        }
    }
    let day = WINDOWS[1].0;
    let mut asns = st.asns(now, day).peekable();
    let first = *asns.peek()?;
    if first != 0 && asns.all(|a| allowlist.has_asn(a)) {
        return Some(Match::Asn(first));
    }
    None
}

fn roles(bits: u8) -> Vec<&'static str> {
    [
        (ROLE_OWNER, "owner"),
        (ROLE_DOMAIN, "domain"),
        (ROLE_NS_HOST, "ns_host"),
        (ROLE_ZONE, "zone"),
    ]
    .into_iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| n)
    .collect()
}
