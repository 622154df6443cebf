//! Tests of the parent rule (issue 12, item 2; `model::stable_children_only`): a registered
//! domain whose names each keep their own answer is not flux because together they look
//! diverse, while wildcard flux (a new name per lookup, each answered with a new bot) still is.
//! Hand-built responses, no ASN database (the /16 stands in for the network).

use super::scorer_tests::{a_records, at, rec, response, scorer};
use super::*;

/// One lookup of `name` answered with `ip`, TTL 60 s.
fn lookup(s: &mut Scorer, t: u32, name: &str, ip: &str, out: &mut Vec<Verdict>) {
    answer(s, t, name, 60, &[ip.to_owned()], out);
}

/// One lookup of `name` at `t` answered with the A records `ips`, TTL `ttl`.
fn answer(s: &mut Scorer, t: u32, name: &str, ttl: u32, ips: &[String], out: &mut Vec<Verdict>) {
    s.observe(at(t), &response(name, a_records(name, ttl, ips)), out);
}

/// Host `i` of a project: a round robin of two machines at two donors' networks.
fn donor_pair(i: u32) -> [String; 2] {
    [
        format!("{}.{}.0.1", 20 + i * 13, i),
        format!("{}.{}.0.2", 90 + i * 7, i),
    ]
}

fn flux(out: &[Verdict], key: &str) -> bool {
    out.iter()
        .any(|v| v.domain == key && v.level == Level::Flux)
}

#[test]
fn a_parent_of_stable_children_is_not_flux() {
    let mut s = scorer();
    let mut out = Vec::new();
    // Six cache nodes of a vendor, each one fixed address in its own network, each looked up
    // twice a round (a cache re-shows it), a round every ten minutes: the answer of each comes
    // back after it expired.
    for round in 0..6u32 {
        for i in 0..6u32 {
            let name = format!("node{i}.cachevendor.net");
            let ip = format!("{}.{}.1.1", 20 + i * 9, i);
            lookup(&mut s, round * 600 + i * 8, &name, &ip, &mut out);
            lookup(&mut s, round * 600 + i * 8 + 3, &name, &ip, &mut out);
        }
        if round == 0 {
            // What the rule removes: after the first round the parent has six answers in six
            // networks, all new; with three children rotating that is flux.
            let f = s
                .explain("cachevendor.net", at(60))
                .expect("tracked")
                .features;
            assert!(model::stable_children_only(&f), "{f:?}");
            let rotated = features::Features {
                children_rotated: true,
                rotating_children: params::ROTATING_CHILDREN_MAX + 1,
                ..f.clone()
            };
            assert!(!model::stable_children_only(&rotated), "{rotated:?}");
            assert!(model::score(&rotated) >= params::FLUX_ENTER, "{rotated:?}");
            assert!(model::score(&f) < params::SUSPICIOUS_ENTER, "{f:?}");
        }
    }
    assert!(!flux(&out, "cachevendor.net"), "{out:#?}");
    let f = s
        .explain("cachevendor.net", at(6 * 600))
        .expect("tracked")
        .features;
    assert_eq!(f.children, 6, "{f:?}");
    assert!(
        !f.children_rotated && model::stable_children_only(&f),
        "{f:?}"
    );
}

#[test]
fn wildcard_flux_over_names_seen_once_is_still_flux() {
    let mut s = scorer();
    let mut out = Vec::new();
    // A new random subdomain per lookup, each answered with a new bot and never looked up again.
    for i in 0..10u32 {
        let name = format!("r{i}x.wildflux.net");
        let ip = format!("{}.{}.7.7", 30 + i * 13, i * 3);
        lookup(&mut s, i * 40, &name, &ip, &mut out);
    }
    assert!(flux(&out, "wildflux.net"), "{out:#?}");
    let f = s
        .explain("wildflux.net", at(400))
        .expect("tracked")
        .features;
    assert!(f.children >= 3 && !model::stable_children_only(&f), "{f:?}");
}

/// Stable siblings beside `rotating` names that each hand out a new bot at every lookup.
fn mixed_parent(rotating: u32) -> (features::Features, Vec<Verdict>) {
    let mut s = scorer();
    let mut out = Vec::new();
    for round in 0..8u32 {
        for i in 0..3u32 {
            let name = format!("www{i}.mixflux.net");
            let ip = format!("{}.{}.1.1", 20 + i * 9, i);
            lookup(&mut s, round * 300 + i, &name, &ip, &mut out);
            lookup(&mut s, round * 300 + i + 2, &name, &ip, &mut out);
        }
        for c in 0..rotating {
            let ip = format!("{}.{}.9.{}", 100 + round * 11, round, c + 1);
            let name = format!("cdn{c}.mixflux.net");
            lookup(&mut s, round * 300 + 10 + c, &name, &ip, &mut out);
        }
    }
    let f = s
        .explain("mixflux.net", at(8 * 300))
        .expect("tracked")
        .features;
    (f, out)
}

/// One name rotating beside stable siblings (a vendor's content name steered between the
/// caches its node names each point at) is judged on its own: its flux is reported on it, and
/// the parent's aggregate is not that name's rotation again.
#[test]
fn one_rotating_child_is_judged_on_its_own() {
    let (f, out) = mixed_parent(1);
    assert_eq!((f.children, f.rotating_children), (4, 1), "{f:?}");
    assert!(
        f.children_rotated && model::stable_children_only(&f),
        "{f:?}"
    );
    assert!(flux(&out, "cdn0.mixflux.net"), "{out:#?}");
}

/// Rotation in more names than [`params::ROTATING_CHILDREN_MAX`] is the domain's own.
#[test]
fn children_that_rotate_make_the_parents_growth_its_own() {
    let (f, out) = mixed_parent(params::ROTATING_CHILDREN_MAX + 1);
    assert_eq!(
        f.rotating_children,
        params::ROTATING_CHILDREN_MAX + 1,
        "{f:?}"
    );
    assert!(!model::stable_children_only(&f), "{f:?}");
    assert!(flux(&out, "cdn0.mixflux.net"), "{out:#?}");
}

/// `node0`-`node5.newvendor.net`, one address each in its own network, TTL 600, looked up
/// once each in the first 40 seconds.
fn six_nodes_looked_up_once(s: &mut Scorer, out: &mut Vec<Verdict>) {
    six_nodes_of(s, out, "newvendor.net", |_| 600);
}

/// `node0`-`node5.DOMAIN`, one address each in its own network, node `i` with TTL `ttl(i)`,
/// looked up once each in the first 40 seconds.
fn six_nodes_of(s: &mut Scorer, out: &mut Vec<Verdict>, domain: &str, ttl: impl Fn(u32) -> u32) {
    for i in 0..6u32 {
        let name = format!("node{i}.{domain}");
        let ips = [format!("{}.{}.1.1", 20 + i * 9, i)];
        answer(s, i * 8, &name, ttl(i), &ips, out);
    }
}

/// A vendor's cache nodes in their first minute: each node name looked up once so far, each
/// answer still within its TTL. Nothing says yet whether they come back (cache nodes) or not
/// (wildcard flux), so they are pending, not evidence: the parent waits one TTL. Once the
/// answers expire unseen, the names were looked up once only and the parent is judged on them.
#[test]
fn children_within_their_ttl_are_pending_not_seen_once() {
    let mut s = scorer();
    let mut out = Vec::new();
    six_nodes_looked_up_once(&mut s, &mut out);
    let f = s
        .explain("newvendor.net", at(60))
        .expect("tracked")
        .features;
    assert_eq!(
        (
            f.stable_children,
            f.stable_children_seen_again,
            f.stable_children_pending
        ),
        (6, 0, 6),
        "{f:?}"
    );
    assert!(model::stable_children_only(&f), "{f:?}");
    // Without the wait, the same reading is six names seen once: the rule is off.
    let unseen = features::Features {
        stable_children_pending: 0,
        ..f.clone()
    };
    assert!(!model::stable_children_only(&unseen), "{unseen:?}");
    assert!(!flux(&out, "newvendor.net"), "{out:#?}");
    // Every answer expired without being seen again: looked up once only.
    let f = s
        .explain("newvendor.net", at(700))
        .expect("tracked")
        .features;
    assert_eq!(f.stable_children_pending, 0, "{f:?}");
    assert!(!model::stable_children_only(&f), "{f:?}");
}

/// The same six names looked up once, then never again: when their answers expire unseen the
/// parent is re-scored without a new answer of its own (any other response drives the sweep),
/// and judged on them.
#[test]
fn a_parent_waiting_on_pending_children_is_judged_when_they_expire() {
    let mut s = scorer();
    let mut out = Vec::new();
    six_nodes_looked_up_once(&mut s, &mut out);
    let st = s.state_of("newvendor.net").expect("tracked");
    assert!(st.marked(key_state::MARK_WAITS_ON_PENDING));
    // Other traffic only, past the answers' TTL.
    for t in [300u32, 620] {
        let other = "www.other.example";
        let msg = response(other, a_records(other, 60, &["192.0.2.1".into()]));
        s.observe(at(t), &msg, &mut out);
    }
    let v = out
        .iter()
        .find(|v| v.domain == "newvendor.net" && v.level == model::Level::Flux)
        .unwrap_or_else(|| panic!("not judged after the TTL: {out:#?}"));
    // The first answers expired at 600 and 608: from the second on, two children were looked
    // up once, unseen (`STABLE_CHILDREN_JUDGED_MIN`), and the sweep at 620 judges the parent.
    assert_eq!(v.ts, at(620), "{v:#?}");
    assert!(
        !s.state_of("newvendor.net")
            .expect("tracked")
            .marked(key_state::MARK_WAITS_ON_PENDING)
    );
}

/// An answer of several names (or an unknown one) says the children do not explain the
/// rotation, but it is no name: the stable children are counted as they are, not one fewer.
#[test]
fn an_unattributed_answer_does_not_hide_a_stable_child() {
    let mut s = scorer();
    let mut out = Vec::new();
    for round in 0..3u32 {
        for i in 0..3u32 {
            let name = format!("node{i}.sharedans.net");
            let ip = format!("{}.{}.1.1", 20 + i * 9, i);
            lookup(&mut s, round * 600 + i * 8, &name, &ip, &mut out);
            lookup(&mut s, round * 600 + i * 8 + 3, &name, &ip, &mut out);
        }
        // Two names answered with one address: that answer belongs to no one name.
        lookup(
            &mut s,
            round * 600 + 40,
            "a.sharedans.net",
            "90.1.2.3",
            &mut out,
        );
        lookup(
            &mut s,
            round * 600 + 45,
            "b.sharedans.net",
            "90.1.2.3",
            &mut out,
        );
    }
    let f = s
        .explain("sharedans.net", at(3 * 600))
        .expect("tracked")
        .features;
    assert_eq!(
        (f.children, f.rotating_children, f.stable_children),
        (3, 1, 3),
        "{f:?}"
    );
    assert!(model::stable_children_only(&f), "{f:?}");
}

/// Names looked up once whose answers each mix networks (five bots from a pool in each) are not
/// pending cache nodes: the parent is flux at once, without waiting out their TTL
/// (`params::PENDING_CHILD_NETWORKS_MAX`).
#[test]
fn children_answering_from_several_networks_are_not_pending() {
    let mut s = scorer();
    let mut out = Vec::new();
    for n in 1..=6u32 {
        let name = format!("v{n}.rotpool.net");
        let ips: Vec<String> = (0..5u32)
            .map(|i| format!("10.{}.{}.7", n * 10 + i, i + 1))
            .collect();
        answer(&mut s, n, &name, 60, &ips, &mut out);
    }
    let f = s.explain("rotpool.net", at(7)).expect("tracked").features;
    assert_eq!(f.stable_children_pending, 0, "{f:?}");
    assert!(flux(&out, "rotpool.net"), "{out:#?}");
}

/// A vendor's node names in their first minute, one of them with a TTL short enough to expire
/// before any was seen again: one child that had its chance is no sample, so the parent still
/// waits on the pending ones (`params::STABLE_CHILDREN_JUDGED_MIN`). The round 26 tuning draws
/// flagged such an `nflxvideo.net` parent at 0.8 minutes. A second child expiring unseen is
/// a sample: the parent is judged on them, as wildcard flux is.
#[test]
fn one_child_expired_unseen_is_no_sample() {
    let mut s = scorer();
    let mut out = Vec::new();
    six_nodes_of(&mut s, &mut out, "shortttl.net", |i| {
        if i == 0 { 20 } else { 600 }
    });
    let f = s.explain("shortttl.net", at(60)).expect("tracked").features;
    assert_eq!(
        (
            f.stable_children,
            f.stable_children_seen_again,
            f.stable_children_pending
        ),
        (6, 0, 5),
        "{f:?}"
    );
    assert!(model::stable_children_only(&f), "{f:?}");
    assert!(!flux(&out, "shortttl.net"), "{out:#?}");
    // The same reading with two children expired unseen: the rule is off.
    let two = features::Features {
        stable_children_pending: 4,
        ..f.clone()
    };
    assert!(!model::stable_children_only(&two), "{two:?}");
}

/// A project's hosts at several donors' networks, each a fixed dual-stack answer (A and AAAA)
/// looked up again and again by a client that asks for both (the real Zeek log's
/// `debian.org`): each name's two answers are two stable children, not one rotating name, so
/// the parent is not flux however many networks its hosts sit in.
#[test]
fn a_parent_of_dual_stack_hosts_is_not_flux() {
    let mut s = scorer();
    let mut out = Vec::new();
    let hosts = ["www", "bugs", "security", "packages", "ftp", "wiki"];
    for round in 0..6u32 {
        for (i, host) in (0u32..).zip(hosts) {
            let name = format!("{host}.project.org");
            let v4 = donor_pair(i);
            let v6 = [format!("2001:{:x}::1", 0x100 + i)];
            // Asked twice a round (the resolver's cache re-shows each answer), both families.
            for again in [0, 5] {
                let t = round * 700 + i * 30 + again;
                answer(&mut s, t, &name, 300, &v4, &mut out);
                let aaaa = v6.iter().map(|ip| rec(&name, 28, 300, ip)).collect();
                s.observe(at(t + 1), &response(&name, aaaa), &mut out);
            }
        }
    }
    let f = s
        .explain("project.org", at(6 * 700))
        .expect("tracked")
        .features;
    assert_eq!((f.children, f.rotating_children), (12, 0), "{f:?}");
    assert!(model::stable_children_only(&f), "{f:?}");
    assert!(!flux(&out, "project.org"), "{out:#?}");
}

/// The same project's hosts in their first minutes: each name looked up once, its round robin
/// of two machines at two donors' networks still within its TTL. Such an answer is pending
/// (it spans fewer networks than a flux answer alone, `params::PENDING_CHILD_NETWORKS_MAX`),
/// so the parent waits to see whether the names keep their answers instead of being judged on
/// six names seen once.
#[test]
fn a_parent_of_round_robin_hosts_waits_in_its_first_minutes() {
    let mut s = scorer();
    let mut out = Vec::new();
    for i in 0..6u32 {
        let name = format!("host{i}.project.org");
        let v4 = donor_pair(i);
        answer(&mut s, i * 20, &name, 300, &v4, &mut out);
    }
    let f = s.explain("project.org", at(120)).expect("tracked").features;
    assert_eq!(
        (f.stable_children, f.stable_children_pending),
        (6, 6),
        "{f:?}"
    );
    assert!(!flux(&out, "project.org"), "{out:#?}");
}

/// How many networks a child's one answer may span and still be pending: up to three (a
/// project's round robin), not four (as many as a flux answer alone).
#[test]
fn a_child_answer_is_pending_up_to_three_networks() {
    for (networks, pending) in [(3u32, 1u32), (4, 0)] {
        let mut s = scorer();
        let mut out = Vec::new();
        let v4: Vec<String> = (0..networks)
            .map(|n| format!("{}.{}.0.1", 20 + n * 13, n))
            .collect();
        let name = "host.project.org";
        answer(&mut s, 0, name, 300, &v4, &mut out);
        let f = s.explain("project.org", at(10)).expect("tracked").features;
        assert_eq!(
            f.stable_children_pending, pending,
            "{networks} networks: {f:?}"
        );
    }
}

/// Busy wildcard flux: a new name per victim every 8 s, each answered with three bots in three
/// networks (pending on their own, see above), TTL 300 s: more answers per TTL than a key
/// keeps. Waiting for the names to be seen again would wait for ever (each re-shown answer
/// would have been evicted first), so the parent is judged on them and is flux.
#[test]
fn busy_wildcard_flux_is_not_pending_for_ever() {
    let mut s = scorer();
    let mut out = Vec::new();
    for i in 0..40u32 {
        let name = format!("v{i}.wildflux.net");
        let bots: Vec<String> = (0..3u32)
            .map(|b| format!("{}.{}.{}.1", 30 + (i * 3 + b) % 200, i, b))
            .collect();
        answer(&mut s, i * 8, &name, 300, &bots, &mut out);
    }
    assert!(flux(&out, "wildflux.net"), "{out:#?}");
}
