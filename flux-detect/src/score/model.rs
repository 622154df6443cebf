//! The scoring model: the terms, the rules and the levels. Every number they use (weights,
//! breakpoints, thresholds) is in [`params`], with the reason for its value.
//!
//! The flux score is a logistic model over bounded evidence terms:
//!
//! ```text
//! z     = BIAS + Σ weight_i · term_i        (each term_i in [0, 1])
//! score = 1 / (1 + e^-z)                    (in [0, 1])
//! ```
//!
//! Each term is a saturating transform of one window feature (see [`terms`]), so a verdict's
//! reasons are simply the terms with `weight_i · term_i`, and the largest contributions explain
//! it. The terms encode what separates a fast-flux service network from the legitimate
//! infrastructure that also rotates:
//!
//! - **networks**: the addresses belong to many unrelated organisations (CDNs, cloud load
//!   balancers and round robin stay inside one or two);
//! - **rotation_across_networks**: *new* addresses keep arriving *and* they span organisations
//!   (many of them, or scattered machines each alone in its /24 across a few, or nearly one
//!   organisation per address). This is the single strongest term: a CDN rotates inside its
//!   own network, a multi-CDN site alternates between a fixed few PoPs and stops producing new
//!   addresses, a server farm sits in a few blocks;
//! - **new_networks**: answer after answer brings an organisation the key never used, with a
//!   low TTL (slow rotation: one new bot per TTL);
//! - **mixed_answers**: one answer mixes organisations (flux bots are picked from the whole pool;
//!   a CDN answers from one PoP);
//! - **countries**, **prefix_diversity**, **fluxiness**, **low_ttl**: supporting evidence;
//! - **rotating_glue**: the name servers' own addresses rotate (double flux);
//! - **shared_flux_addresses**: the key resolves to addresses that keys already judged flux
//!   (on their own evidence) resolved to: one botnet serves many domains, so its bots are the
//!   network's fingerprint (weighed by their share of the key's addresses, so one coincidence
//!   in a big pool is not). It counts only for a key that rotates on its own with addresses
//!   spread like bots ([`rotates_on_its_own`]): it never carries a name to `flux` alone. For
//!   a key users reach only through a CNAME chain, a domain of that chain is not another
//!   domain: its verdict was built from the same answers (`KeyState::shared_bots`).
//!
//! Beside the terms, rules keep legitimate shapes from `flux`: provider zones
//! ([`provider_zone`]), forged or fronted single-address answers ([`forged_or_fronted`]); and
//! reporting (`flux`) is separate from blocking ([`params::BLOCK_SCORE`]).
//!
//! Levels have hysteresis: a key enters `suspicious` at [`SUSPICIOUS_ENTER`] and `flux` at
//! [`FLUX_ENTER`], and leaves them only below [`SUSPICIOUS_EXIT`] / [`FLUX_EXIT`]. A key needs
//! [`MIN_RRSETS_FOR_FLUX`] distinct answers (proof that it rotates at all) before it can be flux,
//! unless one answer spans [`ONE_ANSWER_FLUX_NETWORKS`] organisations or its name servers' glue
//! rotated.
//!
//! How the values were set and checked: see [`params`].

use serde::Serialize;

use super::{
    features::Features,
    params::{
        self, BIAS, FLUX_ENTER, FLUX_EXIT, FORGED_ANSWER_SIZE, MIN_RRSETS_FOR_FLUX,
        NATIONAL_LINES_COUNTRIES, NATIONAL_LINES_IPS_PER_NETWORK, NATIONAL_LINES_NETWORKS,
        NATIONAL_LINES_WEIGHT, ONE_ANSWER_FLUX_NETWORKS, PROVIDER_ZONE_CUSTOMERS,
        PROVIDER_ZONE_WEIGHT, RETURNS, ROTATING_CHILDREN_MAX, SERVED_FOR_OTHERS_WEIGHT,
        STABLE_CHILDREN_JUDGED_MIN, STABLE_CHILDREN_MIN, STABLE_CHILDREN_SEEN_DIVISOR,
        SUSPICIOUS_ENTER, SUSPICIOUS_EXIT, TERMS, countries, fluxiness, low_ttl, networks,
        new_networks, prefix_diversity, rotating_glue, rotation_across_networks as rotation_p,
        shared_flux_addresses as shared_p,
    },
};

/// The Holz et al. (NDSS 2008) linear classifier: flux when `1.32·nA + 18.54·nASN > 142.38`
/// ([`params::holz`]).
pub fn holz(n_a: u32, n_asn: u32) -> f64 {
    params::holz::A_COEF * f64::from(n_a) + params::holz::ASN_COEF * f64::from(n_asn)
}

/// The Zeek community variant: `(nASN/nA)·(1.32·nA + 18.54·nASN) > 142.38`.
pub fn zeek(n_a: u32, n_asn: u32) -> f64 {
    if n_a == 0 {
        return 0.0;
    }
    f64::from(n_asn) / f64::from(n_a) * holz(n_a, n_asn)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Term {
    RotationAcrossNetworks,
    Networks,
    MixedAnswers,
    Countries,
    PrefixDiversity,
    Fluxiness,
    LowTtl,
    RotatingGlue,
    SharedFluxAddresses,
    NewNetworks,
    /// A loaded feed lists the key, its chain or its addresses ([`params::feed_match`]).
    FeedMatch,
    /// Servers handed out in turn deep inside rented ranges ([`rented_pool`]).
    RentedPool,
}

/// How many terms the model has ([`TERMS`]).
pub const TERM_COUNT: usize = TERMS.len();

impl Term {
    /// The term's name in verdicts ([`params::TERMS`]).
    pub fn name(self) -> &'static str {
        spec(self).map_or("", |t| t.name)
    }
}

/// The term's row of [`params::TERMS`].
fn spec(term: Term) -> Option<&'static params::TermSpec> {
    TERMS.iter().find(|t| t.term == term)
}

/// Each term's value in [0, 1] for a window's features.
pub fn terms(f: &Features) -> [(Term, f64); TERM_COUNT] {
    let mut t = own_terms(f);
    if rotates_on_its_own(f) {
        add_shared_bots(f, &mut t);
    }
    t
}

/// Puts the shared-bot term into a key's own terms (for a key that rotates on its own).
fn add_shared_bots(f: &Features, t: &mut [(Term, f64); TERM_COUNT]) {
    for (term, value) in t.iter_mut() {
        if *term == Term::SharedFluxAddresses {
            // A set that keeps coming back is a fixed set (a vendor's caches), not a
            // botnet's rotation: addresses it shares with a flux domain are that set's,
            // whatever judged them bots. On the tuning draws every steering name flagged
            // through shared bots (an ISP cache's content name reached `flux` first, its
            // CDN steering name followed on the same caches) had nine later answers in ten
            // or more returns, and no flux class above a half at its verdict. Only over
            // enough answers ([`shared_p::FIXED_SET_ANSWERS`]) does a share say that.
            let fixed_set = f.later_answers >= shared_p::FIXED_SET_ANSWERS;
            *value = shared_bots(f) * if fixed_set { fresh(f) } else { 1.0 };
        }
    }
}

/// How much of the key's rotation is fresh: 1 less the returns discount ([`RETURNS`] on
/// [`returning_share`]), lifted in a rented pool (its returns are one of many servers of the
/// range handed out again, where a cache's are one of its handful).
fn fresh(f: &Features) -> f64 {
    (1.0 - RETURNS.at(returning_share(f))).max(rented_pool(f))
}

/// Every term but the shared bots (0 here): the key's own evidence.
fn own_terms(f: &Features) -> [(Term, f64); TERM_COUNT] {
    let orgs = f64::from(f.distinct_networks);
    // What network diversity counts for. Several carriers of one country, each with several of
    // the key's addresses, is how a national CDN answers ("multi-line": one address per carrier
    // so each client finds its own ISP; see `national_lines`), and a provider's zone unites
    // unrelated customers (see `provider_zone`): both count for less.
    let mut diversity = 1.0;
    // The network arrivals of such a key are the traffic manager moving clients between the
    // country's carriers (an ISP-embedded cache's content name steered between the caches in
    // several access ISPs of the client's country): they count as its diversity does.
    let national = if national_lines(f) {
        NATIONAL_LINES_WEIGHT
    } else {
        1.0
    };
    diversity *= national;
    // A name only other domains send users to: its new networks are the traffic manager
    // moving clients to other lines, so they count as its network diversity does. So do its
    // country and /16 spread (not a provider zone's, whose countries must keep counting
    // against decoy customers, see `provider_zone`): a CDN or an anti-blocking front end puts
    // its edges in many countries and /16s as surely as in many networks. On the real
    // resolver traffic the edge name `cdshfyrv.ky168800.top`, reached only through three
    // unrelated sites' CNAME chains, reached `flux` on its 10 countries and 29 /16s of cloud
    // servers at its third answer, with its networks already discounted.
    let served = if !provider_zone(f) && served_for_others(f) {
        SERVED_FOR_OTHERS_WEIGHT
    } else {
        1.0
    };
    if provider_zone(f) {
        diversity *= PROVIDER_ZONE_WEIGHT;
    }
    diversity *= served;
    // A rented pool (see `rented_pool`): servers deep in a range of two organisations or more
    // spread like a pool of strangers.
    let pool = rented_pool(f);
    // Organisations: 1 is normal, 2 common (multi-CDN, ISP caches), 4+ is a pool of strangers.
    let networks = networks::ORGS.at(orgs).max(pool) * diversity;
    // Two or three organisations spread like four when their addresses are scattered machines,
    // each alone in its /24 (a flux operator renting servers all over a few hosting
    // providers): a farm or a CDN PoP numbers its servers inside one or two blocks.
    let scattered = rotation_p::SCATTERED_ORGS.at(orgs)
        * rotation_p::LONE_SUBNETS.at(f64::from(f.lone_subnets));
    // Or nearly every address is in another organisation: three organisations in three or four
    // addresses (one address per answer, a slow rotation) are as foreign as four.
    let strangers = if f.distinct_ips > 0 {
        rotation_p::STRANGER_ORGS.at(orgs)
            * rotation_p::ORGS_PER_ADDRESS.at(orgs / f64::from(f.distinct_ips))
    } else {
        0.0
    };
    let spread = networks
        .max(scattered * diversity)
        .max(strangers * diversity);
    // The set keeps changing: new addresses arrive, or far more addresses than one answer holds.
    // Growth is steady only over several answers: one new answer can be a one-off change.
    let steady = rotation_p::STEADY_ANSWERS.at(f64::from(f.later_answers) + 1.0);
    // A set that keeps coming back is a fixed set (ISP caches, a round robin, a CDN's PoPs in
    // turn), not a pool of bots: the share of later answers that were returns of expired ones
    // discounts the evidence that does not already count returns (fluxiness, new networks).
    // Not in a rented pool: its returns are one of many servers of the range handed out again,
    // where a cache's are one of its handful.
    let fresh = fresh(f);
    // A parent whose answers are its children's, each child keeping its own answer, has no
    // rotation of its own: its growth, new networks and fluxiness are children being added.
    let own_rotation = if stable_children_only(f) { 0.0 } else { 1.0 };
    let rotation = (f.ip_growth.clamp(0.0, 1.0) * steady)
        .max(fluxiness::FLUXINESS.at(f.fluxiness) * fresh)
        * own_rotation;
    let low_ttl = 1.0 - low_ttl::TTL.at(f64::from(f.ttl_max));
    // Do the networks meet inside one answer? A CDN answers from one PoP and alternates between
    // networks over time; bots come from the whole pool at once. Single-address answers cannot
    // tell, so they count fully and rotation has to carry them.
    let mixing = if f.multi_address_answers > 0 {
        f.mixed_answers
    } else {
        1.0
    };
    [
        (Term::RotationAcrossNetworks, rotation * spread * mixing),
        (Term::Networks, networks),
        (Term::MixedAnswers, f.mixed_answers * diversity),
        (
            Term::Countries,
            countries::COUNTRIES.at(f64::from(f.distinct_countries)) * served,
        ),
        (
            Term::PrefixDiversity,
            f.prefix_entropy
                * prefix_diversity::PREFIXES.at(f64::from(f.distinct_prefixes))
                * served,
        ),
        (
            Term::Fluxiness,
            fluxiness::FLUXINESS.at(f.fluxiness) * own_rotation,
        ),
        (Term::LowTtl, low_ttl),
        (Term::RotatingGlue, glue_term(f)),
        // Filled in below, once the key's own evidence is known.
        (Term::SharedFluxAddresses, 0.0),
        // Answer after answer brings an organisation the key never used, with a TTL short
        // enough to rotate. PoP switches of a CDN bring new organisations too, but from one
        // PoP at a time (unmixed answers), so mixing weighs it as it weighs rotation.
        (
            Term::NewNetworks,
            new_networks::ARRIVALS.at(f64::from(f.network_arrivals))
                * low_ttl
                * mixing
                * fresh
                * own_rotation
                * served
                * national,
        ),
        // Another team's listing: the key's own evidence (z gains exactly 0.0 without it).
        (Term::FeedMatch, f.feed_match),
        // The rented pool turning over: the range's servers handed out in turn.
        (
            Term::RentedPool,
            pool * fluxiness::FLUXINESS.at(f.fluxiness),
        ),
    ]
}

/// Issue 12, `flux-bulletproof`: the key's addresses reach deep into one /24
/// ([`params::rented_pool::DEPTH`], on `Features::subnet_ips_max`) and span two organisations or
/// more ([`params::rented_pool::MIN_NETWORKS`]): a bulletproof operator rents ranges in a few
/// hosting networks and hands their servers out in turn, dozens to a block, moving between the
/// networks as blocklists catch up. A cache cluster or a CDN node inside an access ISP is a
/// handful of servers, and a CDN's dense PoP blocks are its own organisation's. Value in
/// [0, 1]: it counts as network spread (`networks`, `spread`), lifts the returns discount (a
/// return is one of many servers handed out again, not a cache coming back), and, weighed by
/// fluxiness, is a term of its own ([`Term::RentedPool`]). Multi-address answers must still
/// mix the organisations for the spread to count in rotation (mixing is unchanged): a
/// multi-CDN site alternating between two dense PoPs never mixes them.
pub fn rented_pool(f: &Features) -> f64 {
    // Blocks holding two of the key's addresses or more: a stray address of the same domain
    // in a third /24 (its apex or mail host elsewhere) does not make a farm a pool.
    let dense_blocks = f.distinct_subnets.saturating_sub(f.lone_subnets);
    if f.distinct_networks >= params::rented_pool::MIN_NETWORKS
        && dense_blocks >= params::rented_pool::MIN_BLOCKS
    {
        params::rented_pool::DEPTH.at(f64::from(f.subnet_ips_max))
    } else {
        0.0
    }
}

/// All the key's addresses in one country (or two: the CDN's own nodes abroad beside the
/// country's carriers, [`NATIONAL_LINES_COUNTRIES`]), in three networks or more, with at least
/// one and a half addresses per network on average: the carriers of one country mixed in the answers, which
/// is what a national CDN's multi-line answers look like (the Chinese CDN zones on the real
/// resolver traffic: Tencent's `*.sched.tdnsv8.com` with 16 addresses over 6 carriers; every
/// `redirect-cdn` false positive of the generator). Bots of a botnet sit in many countries and
/// rarely two to a network. A one-country botnet is not excused: only the network diversity
/// counts for less ([`NATIONAL_LINES_WEIGHT`]), so growth, new networks and shared bots must
/// carry more of it (3 of 30 `flux-2009` and 11 of 390 `double-flux-2009` verdicts were in one
/// country, each with about one address per network).
pub fn national_lines(f: &Features) -> bool {
    (1..=NATIONAL_LINES_COUNTRIES).contains(&f.distinct_countries)
        && f.distinct_networks >= NATIONAL_LINES_NETWORKS
        && f.distinct_ips * 2 >= NATIONAL_LINES_IPS_PER_NETWORK * f.distinct_networks
}

/// Issue 12, item 2: a parent must not become flux because its children, taken together, look
/// diverse. A registered-domain key whose answers in the window came from
/// [`STABLE_CHILDREN_MIN`] names or more under it that each gave one answer (stable children),
/// at most [`ROTATING_CHILDREN_MAX`] names with two different answers or more, and at least
/// one stable child in [`STABLE_CHILDREN_SEEN_DIVISOR`] seen again, not counting the pending
/// ones (one answer, not seen again, still within its TTL: whether a cache re-shows it cannot
/// be known before it expires, and a vendor's new cache nodes are flagged in their first
/// minute otherwise; wildcard flux waits at most one TTL for it), and nothing said until
/// [`STABLE_CHILDREN_JUDGED_MIN`] stable children are out of pending (one child whose answer
/// expired unseen is no sample; wildcard flux then waits for a second child's TTL): each stable child keeps its
/// own answer (a vendor's cache nodes, one fixed address each; a zone's hosts on different
/// providers), so the parent's new addresses and networks are children being added, and the
/// rotating children's rotation (a vendor's content names steered between its caches) is
/// their own. Its rotation, fluxiness and new-network evidence count for nothing; its
/// network, mixing and country spread still count, and each child is still judged on its own:
/// flux in one child is reported on that child.
///
/// When aggregation is evidence: when the children are seen once each (wildcard flux, a new
/// random subdomain per victim answered with a new bot: the 2009 Waledac domains), when more
/// children than [`ROTATING_CHILDREN_MAX`] rotate (the domain's rotation is not a name's or
/// two's), or when an answer came
/// from several names or an unknown one. Residual evasion, stated: an operator who gives each
/// of his names one fixed bot and has each looked up twice is not fast flux per name; his
/// names are judged one by one, and their bots still count for other domains through the
/// shared-bot table only once some name is flux.
pub fn stable_children_only(f: &Features) -> bool {
    f.stable_children >= STABLE_CHILDREN_MIN
        && f.rotating_children <= ROTATING_CHILDREN_MAX
        && enough_children_seen_again(f, f.stable_children_pending)
}

/// At least one stable child in [`STABLE_CHILDREN_SEEN_DIVISOR`] seen again, leaving
/// `excused` of them (the pending ones) out of the count; fewer than
/// [`STABLE_CHILDREN_JUDGED_MIN`] left to judge say nothing yet.
fn enough_children_seen_again(f: &Features, excused: u32) -> bool {
    let judged = f.stable_children.saturating_sub(excused);
    judged < STABLE_CHILDREN_JUDGED_MIN
        || f.stable_children_seen_again * STABLE_CHILDREN_SEEN_DIVISOR >= judged
}

/// The parent rule holds only because some stable children are pending: counted as seen
/// once, they would switch it off. When their answers expire unseen the key's reading changes
/// though no answer came, so the scorer re-scores it then (wildcard flux whose victims stopped
/// looking would otherwise wait for a lookup that never comes).
pub fn waits_on_pending_children(f: &Features) -> bool {
    stable_children_only(f) && !enough_children_seen_again(f, 0)
}

/// Later answers that were returns of an answer after it expired: what share of the key's
/// rotation goes round a fixed set.
pub fn returning_share(f: &Features) -> f64 {
    if f.later_answers == 0 {
        0.0
    } else {
        f64::from(f.returning_answers) / f64::from(f.later_answers)
    }
}

/// A key that is not flux yet but would be, on the evidence it has, if some of its addresses
/// turned out to be other flux domains' bots: it rotated over two or more networks with a TTL
/// short enough to rotate. The scorer watches such keys and re-scores them when new bots are
/// known, since a domain looked up a few times may never be looked up again.
pub fn could_flux_on_shared_bots(f: &Features) -> bool {
    rotates_on_its_own(f) && !forged_or_fronted(f) && !reached_only_as_provider(f)
}

/// The key's own answers rotate: two answers or more, over two networks or more, with a TTL
/// short enough to rotate ([`shared_p::NEEDS_ROTATION_TTL`]), or its name servers' glue rotated.
/// What shared bots need to count.
pub fn rotates_on_its_own(f: &Features) -> bool {
    (f.rrsets >= MIN_RRSETS_FOR_FLUX
        && f.distinct_networks >= shared_p::NEEDS_NETWORKS
        && f.ttl_max < shared_p::NEEDS_ROTATION_TTL
        && spread_like_bots(f))
        // Or its name servers' glue rotated (double flux whose own answer has not changed yet).
        || f.rotating_ns_hosts > 0
}

/// The key's addresses are scattered the way bots are: at most [`shared_p::BOT_SPREAD`] addresses per
/// network on average, or most of them alone in their /24. A CDN's or a farm's addresses come
/// several to a network and to a block (a PoP, a rack); a bot is one machine in its network.
/// Without it, one CDN name judged flux made every other name on the same edges flux through
/// shared bots (the generator's `redirect-cdn` names, scored 0.1-0.5 on their own).
pub fn spread_like_bots(f: &Features) -> bool {
    f.distinct_networks * shared_p::BOT_SPREAD >= f.distinct_ips
        || f.lone_subnets * shared_p::LONE_SHARE_DIVISOR >= f.distinct_ips
}

/// One address per answer, and a share of them ([`params::FORGED_SHARE_DIVISOR`]) in a first-party
/// content network or not routable at all (see `infra::first_party`): no bot can sit there. This is what answers
/// forged on the path look like (censorship injection hands out one address of Facebook,
/// Twitter or Dropbox, or a reserved one, with a random TTL, a new one at every lookup: on the
/// real resolver traffic the largest class of names that looked like slow flux), and a
/// sinkholed name. It costs a flux operator one lookup in eight to imitate: every victim
/// handed such an answer reaches someone else's server, unless the operator has a property on
/// a listed network that fronts others' sites (see `infra`). Multi-address answers are not excused by it,
/// since one decoy address among bots costs the operator little.
pub fn forged_or_fronted(f: &Features) -> bool {
    f.answer_size_max == FORGED_ANSWER_SIZE && f.forged_answers
}

/// Known bots among the key's addresses: full at [`shared_p::SHARE`]. A
/// large legitimate pool that holds one address a flux domain also used (shared hosting, a
/// reassigned address) is not a botnet's domain; a domain whose addresses are bots is.
pub fn shared_bots(f: &Features) -> f64 {
    if f.distinct_ips == 0 {
        return 0.0;
    }
    let share = f64::from(f.shared_flux_ips) / f64::from(f.distinct_ips);
    shared_p::SHARE.at(share)
}

/// A registered-domain key whose names are CNAME targets of two or more unrelated registered
/// domains is a provider's zone (a CDN, an anti-DDoS or redirect CDN, a cloud front end): its
/// names serve different customers from shared edges, so their union says little about any of
/// them. Its network diversity counts for [`PROVIDER_ZONE_WEIGHT`], and when no name under it
/// was ever queried directly (every name was reached through a customer's CNAME, which is how
/// users reach a CDN) it cannot be `flux` at all. Two throwaway domains CNAMEd into an
/// operator's zone would otherwise excuse wildcard flux over it (random subdomains, each seen
/// once, judged only in the aggregate): those subdomains are queried directly, so the zone is
/// only discounted and its countries, growth and new networks still count. Never for a key
/// that is also an owner name (the apex answers for itself), see `Features::customers`.
/// Residual evasion, stated: a flux service whose victims only ever reach it through CNAMEs
/// from other domains looks like a CDN here; its names are still judged one by one.
/// Each name under the zone is still its own key, and flux in one of them is reported on it.
///
/// Tried and left out: "several names of the key that share no address are separate
/// services". It is what a vendor
/// zone whose hosts sit on different CDNs looks like, but also what wildcard flux with a large
/// pool looks like: the 2009 Waledac domains answer each random subdomain with one new bot,
/// never twice the same, and that rule lost 30 of their 34 domains.
pub fn provider_zone(f: &Features) -> bool {
    f.customers >= PROVIDER_ZONE_CUSTOMERS
}

/// Issue 12: a key that users reach only through other registered domains' CNAMEs, never by
/// asking for one of its own names (`Features::reached_via_others`): a CDN's scheduling name
/// (`xxxx.slt.sched.tdnsv8.com`, reached from `www.customer.cn` through the CDN's chain), a
/// vendor's steering name (`swcdn.apple.com.akadns.net`). Such a name is picked per client
/// and per line by someone else's traffic manager, so its network diversity counts for
/// [`SERVED_FOR_OTHERS_WEIGHT`], and so do the new networks its answers bring and (since
/// round 27) its country and /16 spread. Owner keys included, unlike [`provider_zone`]: a scheduling
/// name is an owner name with one customer, often. It is a discount, never an excuse: a flux
/// operator who sends victims through a CNAME of another domain of his still has his growth,
/// fluxiness and shared bots counted in full, his networks, new networks, countries and
/// prefixes for half, and every name he has victims query directly is judged in full.
pub fn served_for_others(f: &Features) -> bool {
    f.reached_via_others
}

/// A provider zone no name of which was ever queried directly: it cannot be `flux` (see
/// [`provider_zone`]).
pub fn reached_only_as_provider(f: &Features) -> bool {
    provider_zone(f) && !f.queried_directly
}

/// Double flux: some NS host's glue has many addresses in several organisations.
pub fn glue_term(f: &Features) -> f64 {
    rotating_glue::GLUE_IPS.at(f64::from(f.glue_ips_max))
        * rotating_glue::GLUE_NETWORKS.at(f64::from(f.glue_networks_max))
}

/// One term's part in a verdict.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Reason {
    pub feature: &'static str,
    /// The term in [0, 1].
    pub value: f64,
    pub weight: f64,
    /// `weight · value`: its share of the log-odds.
    pub contribution: f64,
}

fn weight(term: Term) -> f64 {
    spec(term).map_or(0.0, |t| t.weight)
}

/// The score: the logistic of the bias plus every term's weighted value. Allocation-free, as it
/// runs for every changed answer; [`reasons`] explains it when a verdict is written.
pub fn score(f: &Features) -> f64 {
    logistic(z_of(&terms(f)))
}

/// The score on the key's own evidence: every term but the shared bots. What the donor rule
/// ([`params::DONOR_NEEDS_OWN`]) and the block gate ([`params::BLOCK_SCORE`]) read.
pub fn own_score(f: &Features) -> f64 {
    logistic(z_of(&own_terms(f)))
}

/// [`score`] and [`own_score`] together, computing the key's own terms once (a re-score wants
/// both, and the terms were a visible share of it). Exactly what the two give: when the key
/// does not rotate on its own, [`terms`] are its own terms and the two scores are one.
pub fn scores(f: &Features) -> (f64, f64) {
    let own_t = own_terms(f);
    let own = logistic(z_of(&own_t));
    if !rotates_on_its_own(f) {
        return (own, own);
    }
    let mut t = own_t;
    add_shared_bots(f, &mut t);
    (logistic(z_of(&t)), own)
}

fn z_of(t: &[(Term, f64); TERM_COUNT]) -> f64 {
    t.iter()
        .fold(BIAS, |z, (term, value)| z + weight(*term) * value)
}

fn logistic(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The terms that raised the score, largest contribution first (zero contributions left out).
pub fn reasons(f: &Features) -> Vec<Reason> {
    let mut reasons: Vec<Reason> = terms(f)
        .into_iter()
        .filter_map(|(term, value)| {
            let weight = weight(term);
            let contribution = weight * value;
            (contribution > 0.0).then(|| Reason {
                feature: term.name(),
                value: round3(value),
                weight,
                contribution: round3(contribution),
            })
        })
        .collect();
    reasons.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
    reasons
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Benign,
    Suspicious,
    Flux,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Benign => "benign",
            Level::Suspicious => "suspicious",
            Level::Flux => "flux",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The next level from the current one, with hysteresis.
pub fn next_level(current: Level, score: f64, f: &Features) -> Level {
    let can_flux = (f.rrsets >= MIN_RRSETS_FOR_FLUX
        || f.answer_networks_max >= ONE_ANSWER_FLUX_NETWORKS
        || f.rotating_ns_hosts > 0)
        && !forged_or_fronted(f)
        && !reached_only_as_provider(f);
    match current {
        Level::Flux if score >= FLUX_EXIT => Level::Flux,
        Level::Flux | Level::Suspicious if score >= SUSPICIOUS_EXIT => {
            if can_flux && score >= FLUX_ENTER {
                Level::Flux
            } else {
                Level::Suspicious
            }
        }
        _ if can_flux && score >= FLUX_ENTER => Level::Flux,
        _ if score >= SUSPICIOUS_ENTER => Level::Suspicious,
        _ => Level::Benign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_match_the_papers() {
        // Holz: 1.32·100 + 18.54·1 = 150.54 > 142.38 (a big single-AS CDN trips it).
        assert!(holz(100, 1) > params::holz::THRESHOLD);
        assert!(holz(5, 3) < params::holz::THRESHOLD);
        // Zeek scales by nASN/nA: the same CDN is quiet, a 1:1 pool is not.
        assert!(zeek(100, 1) < params::holz::THRESHOLD);
        assert!(zeek(8, 8) > params::holz::THRESHOLD);
        assert_eq!(zeek(0, 0), 0.0);
    }

    #[test]
    fn hysteresis_does_not_flap() {
        use Level::*;
        let f = |rrsets, answer_networks_max| Features {
            rrsets,
            answer_networks_max,
            ..Features::default()
        };
        assert_eq!(
            next_level(Benign, 0.95, &f(1, 2)),
            Suspicious,
            "one answer is not flux"
        );
        assert_eq!(
            next_level(Benign, 0.95, &f(1, 5)),
            Flux,
            "unless it is a pool of strangers"
        );
        assert_eq!(next_level(Benign, 0.95, &f(2, 1)), Flux);
        let glue = Features {
            rrsets: 1,
            rotating_ns_hosts: 1,
            ..Features::default()
        };
        assert_eq!(
            next_level(Benign, 0.95, &glue),
            Flux,
            "or its name servers' glue rotates"
        );
        assert_eq!(
            next_level(Flux, 0.75, &f(5, 1)),
            Flux,
            "stays above the exit"
        );
        assert_eq!(next_level(Flux, 0.6, &f(5, 1)), Suspicious);
        assert_eq!(next_level(Suspicious, 0.4, &f(5, 1)), Suspicious);
        assert_eq!(next_level(Suspicious, 0.2, &f(5, 1)), Benign);
        assert_eq!(
            next_level(Benign, 0.45, &f(5, 1)),
            Benign,
            "below the entry"
        );
    }

    #[test]
    fn a_feed_match_adds_its_weight_and_a_reason_of_its_own() {
        let plain = Features::default();
        let listed = Features {
            feed_match: 1.0,
            ..Features::default()
        };
        let z = |f: &Features| z_of(&terms(f));
        assert_eq!(z(&listed) - z(&plain), params::feed_match::SPEC.weight);
        let named = |f: &Features| reasons(f).iter().any(|r| r.feature == "feed_match");
        assert!(!named(&plain) && named(&listed));
        let alone = logistic(BIAS + params::feed_match::SPEC.weight);
        assert!(
            alone < SUSPICIOUS_ENTER,
            "a listing alone is not even suspicious"
        );
        let j = serde_json::to_value(&plain).unwrap();
        assert!(j.get("feed_match").is_none(), "left out of the JSON when 0");
    }

    fn term(f: &Features, t: Term) -> f64 {
        terms(f)
            .iter()
            .find(|(x, _)| *x == t)
            .map_or(0.0, |(_, v)| *v)
    }

    /// Issue 12, isp-cache: new networks among one country's carriers count for half.
    #[test]
    fn national_lines_discount_new_networks() {
        let steered = Features {
            rrsets: 8,
            later_answers: 8,
            distinct_ips: 8,
            distinct_networks: 4,
            distinct_countries: 1,
            network_arrivals: 3,
            ttl_max: 60,
            ..Features::default()
        };
        let abroad = Features {
            distinct_countries: 5,
            ..steered.clone()
        };
        assert!(national_lines(&steered) && !national_lines(&abroad));
        assert_eq!(term(&abroad, Term::NewNetworks), 1.0);
        assert_eq!(term(&steered, Term::NewNetworks), NATIONAL_LINES_WEIGHT);
    }

    /// Issue 12, `flux-bulletproof`: one server per answer, handed out in turn from 14 of a
    /// rented /24 in one hosting network and a few in two blocks of another (most answers
    /// returns of one handed out before, as a pool of 17 servers does), is flux; the same
    /// answers from a cache cluster of 6 servers to a block are not, and neither are they from
    /// a farm in two blocks.
    #[test]
    fn a_rented_pool_is_flux_and_a_cache_cluster_is_not() {
        let pool = Features {
            rrsets: 17,
            later_answers: 80,
            returning_answers: 64,
            distinct_ips: 17,
            distinct_networks: 2,
            distinct_asns: 2,
            distinct_subnets: 3,
            distinct_prefixes: 2,
            subnet_ips_max: 14,
            distinct_countries: 2,
            ttl_max: 540,
            answer_size_max: 1,
            ip_growth: 0.2,
            fluxiness: 17.0,
            network_arrivals: 1,
            ..Features::default()
        };
        let cluster = Features {
            subnet_ips_max: 6,
            ..pool.clone()
        };
        let one_network = Features {
            distinct_networks: 1,
            ..pool.clone()
        };
        // Two /24s, one in each network: a farm with two upstreams, which two prefix blocks stop.
        let two_blocks = Features {
            distinct_subnets: 2,
            ..pool.clone()
        };
        assert_eq!(rented_pool(&pool), 1.0);
        assert_eq!(rented_pool(&cluster), 0.0);
        assert_eq!(rented_pool(&one_network), 0.0, "a CDN's own dense PoP");
        assert_eq!(rented_pool(&two_blocks), 0.0, "a farm in two blocks");
        assert!(score(&pool) >= FLUX_ENTER, "{}", score(&pool));
        assert!(score(&cluster) < SUSPICIOUS_ENTER, "{}", score(&cluster));
        assert!(score(&two_blocks) < FLUX_ENTER, "{}", score(&two_blocks));
        assert!(
            reasons(&pool).iter().any(|r| r.feature == "rented_pool"),
            "named in the verdict"
        );
    }

    /// The real resolver traffic's three random `.top` sites: five servers a minute, TTL 60,
    /// every answer mixing two /24s of two networks, dozens deep in each. A farm with two
    /// upstreams, not flux, however fast it turns over.
    #[test]
    fn a_farm_in_two_blocks_is_not_flux() {
        let farm = Features {
            rrsets: 7,
            later_answers: 6,
            fresh_answers: 5,
            distinct_ips: 34,
            distinct_networks: 2,
            distinct_asns: 2,
            distinct_subnets: 2,
            distinct_prefixes: 2,
            prefix_entropy: 0.196,
            subnet_ips_max: 18,
            distinct_countries: 2,
            ttl_max: 60,
            answer_size_max: 5,
            multi_address_answers: 7,
            mixed_answers: 0.857,
            answer_networks_max: 2,
            ip_growth: 0.967,
            fluxiness: 6.8,
            queried_directly: true,
            ..Features::default()
        };
        assert!(score(&farm) < FLUX_ENTER, "{}", score(&farm));
        // The same site with its apex or mail host alone in a third block: still the farm.
        let stray = Features {
            distinct_subnets: 3,
            lone_subnets: 1,
            ..farm.clone()
        };
        assert_eq!(rented_pool(&stray), 0.0);
        assert!(score(&stray) < FLUX_ENTER, "{}", score(&stray));
        // The same turnover over a third block it uses as it uses the others is a rented pool
        // moving on.
        let moved = Features {
            distinct_subnets: 3,
            ..farm.clone()
        };
        assert!(score(&moved) >= FLUX_ENTER, "{}", score(&moved));
    }

    /// The real resolver traffic's `cdshfyrv.ky168800.top`: an anti-blocking front end's edge
    /// name, reached only through other sites' CNAME chains, three answers of 24-26 cloud
    /// servers in 10 countries and 43 /24s. The spread someone else's traffic manager chose
    /// counts for half in countries and blocks as in networks; asked for directly, the same
    /// answers are flux.
    #[test]
    fn spread_chosen_for_others_counts_for_half() {
        let edge = Features {
            rrsets: 3,
            later_answers: 2,
            network_arrivals: 2,
            distinct_ips: 47,
            distinct_asns: 9,
            distinct_networks: 5,
            distinct_subnets: 43,
            lone_subnets: 39,
            subnet_ips_max: 2,
            distinct_prefixes: 29,
            prefix_entropy: 0.831,
            distinct_countries: 10,
            ttl_max: 60,
            answer_size_max: 26,
            multi_address_answers: 3,
            mixed_answers: 1.0,
            answer_networks_max: 5,
            ip_growth: 0.42,
            fluxiness: 1.808,
            reached_via_others: true,
            ..Features::default()
        };
        let asked = Features {
            reached_via_others: false,
            queried_directly: true,
            ..edge.clone()
        };
        assert!(score(&edge) < FLUX_ENTER, "{}", score(&edge));
        assert!(score(&asked) >= FLUX_ENTER, "{}", score(&asked));
        // A provider zone's countries and prefixes count in full: two decoy customers CNAMEd
        // into a flux zone must not halve them (`provider_zone`).
        let zone = Features {
            customers: PROVIDER_ZONE_CUSTOMERS,
            queried_directly: true,
            ..asked.clone()
        };
        for t in [Term::Countries, Term::PrefixDiversity] {
            assert_eq!(term(&edge, t) * 2.0, term(&asked, t), "{t:?}");
            assert_eq!(term(&zone, t), term(&asked, t), "{t:?}");
        }
    }

    /// Eight addresses, each alone in its /24, in four networks, one per answer: a key that
    /// rotates on its own (with a TTL under 30 minutes), `shared` of them other domains' bots.
    fn eight_bots_in_four_networks(later: u32, returning: u32, shared: u32, ttl: u32) -> Features {
        Features {
            rrsets: 8,
            later_answers: later,
            returning_answers: returning,
            distinct_ips: 8,
            distinct_networks: 4,
            distinct_asns: 4,
            lone_subnets: 4,
            distinct_subnets: 4,
            shared_flux_ips: shared,
            ttl_max: ttl,
            answer_size_max: 1,
            ..Features::default()
        }
    }

    /// Shared bots do not count for a fixed set that keeps coming back (a vendor's caches
    /// that a flux verdict elsewhere marked as bots), over enough answers; over a few answers
    /// (a 2009 Waledac domain looked up three times, TTL 0) a return says nothing.
    #[test]
    fn shared_bots_do_not_count_for_a_set_that_keeps_coming_back() {
        let shared = |later: u32, returning: u32| {
            let f = eight_bots_in_four_networks(later, returning, 8, 146);
            assert!(rotates_on_its_own(&f), "{f:?}");
            terms(&f)
                .iter()
                .find(|(t, _)| *t == Term::SharedFluxAddresses)
                .map_or(-1.0, |(_, v)| *v)
        };
        assert_eq!(shared(87, 80), 0.0, "a cache's steering name");
        assert_eq!(shared(87, 0), 1.0, "bots, none coming back");
        assert_eq!(shared(2, 1), 1.0, "too few answers to say");
    }

    /// `scores` is `score` and `own_score`, bit for bit, with and without shared bots.
    #[test]
    fn scores_are_score_and_own_score() {
        for (later, returning, shared, ttl) in [
            (87, 80, 8, 146),
            (87, 0, 8, 146),
            (2, 1, 3, 30),
            (5, 0, 0, 3600),
        ] {
            let f = eight_bots_in_four_networks(later, returning, shared, ttl);
            let (s, own) = scores(&f);
            assert_eq!(s.to_bits(), score(&f).to_bits(), "{f:?}");
            assert_eq!(own.to_bits(), own_score(&f).to_bits(), "{f:?}");
        }
    }

    #[test]
    fn weights_cover_every_term_once() {
        let f = Features::default();
        for (t, _) in terms(&f) {
            assert_eq!(TERMS.iter().filter(|s| s.term == t).count(), 1, "{t:?}");
        }
    }
}
