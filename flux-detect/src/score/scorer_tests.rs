//! Scorer tests on hand-built responses. Without an ASN database the /16 stands in for the
//! network, which is the documented fallback; `cargo xtask eval` covers the real databases.

use std::{net::IpAddr, sync::Arc, time::SystemTime};

use super::*;
use crate::dns::{DnsFlags, DnsMessage, DnsRecord, Rcode};

pub(super) fn rec(name: &str, rtype: u16, ttl: u32, data: &str) -> DnsRecord {
    let addr = data.parse::<IpAddr>().ok();
    DnsRecord {
        name: name.into(),
        rtype: crate::dns::type_name(rtype),
        rtype_code: rtype,
        ttl,
        target: addr.is_none().then(|| data.into()),
        addr,
    }
}

pub(super) fn response(qname: &str, answers: Vec<DnsRecord>) -> DnsMessage {
    DnsMessage {
        id: 1,
        qname: qname.into(),
        qtype: "A".into(),
        rcode: Rcode::NOERROR,
        flags: DnsFlags::default(),
        answers,
        authority: Vec::new(),
        additional: Vec::new(),
        edns_udp_size: None,
        incomplete: false,
    }
}

pub(super) fn a_records(name: &str, ttl: u32, ips: &[String]) -> Vec<DnsRecord> {
    ips.iter().map(|ip| rec(name, 1, ttl, ip)).collect()
}

pub(super) fn at(s: u32) -> SystemTime {
    from_secs(1_700_000_000 + s)
}

pub(super) fn scorer() -> Scorer {
    Scorer::new(
        ScorerConfig::default(),
        Arc::new(Enricher::empty()),
        Arc::new(Allowlist::builtin()),
    )
}

/// Every re-score the scorer makes from now on: (key, score, baselines).
type RescoreLog = Arc<std::sync::Mutex<Vec<(String, f64, Baselines)>>>;

fn log_rescores(s: &mut Scorer) -> RescoreLog {
    let log = RescoreLog::default();
    let sink = log.clone();
    s.set_rescore_tap(Box::new(move |r| {
        if let Ok(mut l) = sink.lock() {
            l.push((r.domain.to_owned(), r.score, r.baselines));
        }
    }));
    log
}

/// The (key, baseline) pairs a re-score flagged.
fn baseline_flags(log: &RescoreLog) -> std::collections::BTreeSet<(String, &'static str)> {
    let l = log.lock().unwrap();
    let mut flags = std::collections::BTreeSet::new();
    for (k, _, b) in l.iter() {
        if b.holz_flux {
            flags.insert((k.clone(), "holz"));
        }
        if b.zeek_flux {
            flags.insert((k.clone(), "zeek"));
        }
    }
    flags
}

/// Every TTL the flux network hands out five fresh bots, each in its own /16.
pub(super) fn flux_answer(round: u32) -> Vec<String> {
    (0..5)
        .map(|i| format!("{}.{}.7.9", 20 + round * 5 + i, 30 + i))
        .collect()
}

/// Feeds `name` the flux network's answer of each round in `rounds`, one per `ttl` from time 0.
pub(super) fn rotate_flux(
    s: &mut Scorer,
    name: &str,
    rounds: std::ops::Range<u32>,
    ttl: u32,
    out: &mut Vec<Verdict>,
) {
    for round in rounds {
        let msg = response(name, a_records(name, ttl, &flux_answer(round)));
        s.observe(at(round * ttl), &msg, out);
    }
}

#[test]
fn rotating_bots_across_networks_become_flux_with_reasons() {
    let mut s = scorer();
    let mut out = Vec::new();
    rotate_flux(&mut s, "www.evil-flux.test", 0..6, 180, &mut out);
    let flux: Vec<_> = out.iter().filter(|v| v.level == Level::Flux).collect();
    let owner = flux
        .iter()
        .find(|v| v.domain == "www.evil-flux.test")
        .expect("owner key flagged");
    assert!(
        flux.iter().any(|v| v.domain == "evil-flux.test"),
        "registered domain flagged too"
    );
    assert!(owner.score >= params::FLUX_ENTER);
    assert!(!owner.allowlisted);
    assert_eq!(owner.reasons[0].feature, "rotation_across_networks");
    assert!(owner.features.rrsets >= 2);
    // Detected within the first few TTLs.
    assert!(owner.ts <= at(3 * 180), "{:?}", owner.ts);

    let v = serde_json::to_value(owner).unwrap();
    assert_eq!(v["level"], "flux");
    for k in [
        "ts",
        "domain",
        "score",
        "double_flux",
        "reasons",
        "features",
        "baselines",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert!(v["features"]["distinct_ips"].as_u64().unwrap() >= 10);
}

#[test]
fn cdn_rotating_inside_one_network_stays_benign() {
    let mut s = scorer();
    let mut out = Vec::new();
    // Two addresses per answer, drawn from one /24, changing every 20 s for two hours.
    for i in 0..360u32 {
        let ips = vec![
            format!("23.45.67.{}", i % 200),
            format!("23.45.67.{}", (i + 1) % 200),
        ];
        let mut answers = vec![
            rec("www.shop.test", 5, 300, "shop.edgekey.test"),
            rec("shop.edgekey.test", 5, 300, "e1.a.cdnedge.test"),
        ];
        answers.extend(a_records("e1.a.cdnedge.test", 20, &ips));
        s.observe(at(i * 20), &response("www.shop.test", answers), &mut out);
    }
    assert!(out.is_empty(), "unexpected verdicts: {out:#?}");
    let v = s.explain("e1.a.cdnedge.test", at(7200)).unwrap();
    assert_eq!(
        v.features.cname_chain,
        ["www.shop.test", "shop.edgekey.test", "e1.a.cdnedge.test"]
    );
    assert_eq!(v.level, Level::Benign);
}

#[test]
fn round_robin_without_rotation_stays_benign() {
    let mut s = scorer();
    let mut out = Vec::new();
    let ips: Vec<String> = (0..4)
        .map(|i| format!("198.51.{}.{}", 100 + i, 10 + i))
        .collect();
    for i in 0..200u32 {
        let mut rotated = ips.clone();
        rotated.rotate_left(i as usize % 4);
        s.observe(
            at(i * 300),
            &response("rr.test", a_records("rr.test", 3600, &rotated)),
            &mut out,
        );
    }
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn levels_do_not_flap_around_a_threshold() {
    let mut s = scorer();
    let mut out = Vec::new();
    for round in 0..40u32 {
        // Alternate fresh flux answers with a repeat of an old one.
        let ips = if round % 2 == 0 {
            flux_answer(round)
        } else {
            flux_answer(0)
        };
        s.observe(
            at(round * 180),
            &response("x.flap.test", a_records("x.flap.test", 180, &ips)),
            &mut out,
        );
    }
    // Verdicts also come when the block gate opens; count level changes.
    let changes = out
        .iter()
        .filter(|v| v.domain == "x.flap.test" && v.level != v.previous)
        .count();
    assert!(changes <= 2, "level changed {changes} times: {out:#?}");
}

/// Glue that a reply repeats is one address: the NS host and its zone count it once.
#[test]
fn repeated_glue_counts_once() {
    let mut s = scorer();
    let mut out = Vec::new();
    let mut msg = response("rep.test", a_records("rep.test", 180, &flux_answer(0)));
    msg.authority = vec![rec("rep.test", 2, 180, "ns1.rep.test")];
    let ip = flux_answer(1)[0].clone();
    msg.additional = (0..5).map(|_| rec("ns1.rep.test", 1, 180, &ip)).collect();
    s.observe(at(0), &msg, &mut out);
    let host = s.explain("ns1.rep.test", at(1)).unwrap();
    assert_eq!(host.features.distinct_ips, 1, "{host:#?}");
    let zone = s.explain("rep.test", at(1)).unwrap();
    assert_eq!(zone.features.glue_ips_max, 1, "{zone:#?}");
}

#[test]
fn rotating_glue_is_double_flux() {
    let mut s = scorer();
    let mut out = Vec::new();
    for round in 0..6u32 {
        let mut msg = response("dbl.test", a_records("dbl.test", 180, &flux_answer(round)));
        msg.authority = vec![
            rec("dbl.test", 2, 180, "ns1.dbl.test"),
            rec("dbl.test", 2, 180, "ns2.dbl.test"),
        ];
        msg.additional = flux_answer(round + 10)
            .iter()
            .take(2)
            .map(|ip| rec("ns1.dbl.test", 1, 180, ip))
            .chain(
                flux_answer(round + 20)
                    .iter()
                    .take(2)
                    .map(|ip| rec("ns2.dbl.test", 1, 180, ip)),
            )
            .collect();
        s.observe(at(round * 180), &msg, &mut out);
    }
    let zone = s.explain("dbl.test", at(6 * 180)).unwrap();
    assert!(zone.double_flux, "{zone:#?}");
    assert!(zone.features.glue_ips_max >= 6);
    assert!(zone.roles.contains(&"zone"));
    assert!(
        out.iter()
            .any(|v| v.domain == "ns1.dbl.test" && v.level == Level::Flux)
    );
}

#[test]
fn bots_a_flux_key_shows_after_it_was_judged_are_shared() {
    let mut s = scorer();
    let mut out = Vec::new();
    rotate_flux(&mut s, "www.first.test", 0..8, 180, &mut out);
    let flagged = out
        .iter()
        .find(|v| v.domain == "www.first.test" && v.level == Level::Flux)
        .expect("first domain flagged");
    // The last round's bots appeared well after the verdict.
    assert!(flagged.ts < at(7 * 180));
    let late = flux_answer(7);
    for i in 0..2u32 {
        s.observe(
            at(8 * 180 + i * 60),
            &response(
                "other.test",
                a_records("other.test", 180, &late[i as usize..]),
            ),
            &mut out,
        );
    }
    let v = s.explain("other.test", at(8 * 180 + 60)).unwrap();
    assert_eq!(v.features.shared_flux_ips, 5, "{:?}", v.features);
    // Judged flux on those bots, it stays flux: taking them over would erase its evidence.
    assert_eq!(v.level, Level::Flux);
    assert_eq!(
        out.iter().filter(|v| v.domain == "other.test").count(),
        1,
        "{out:#?}"
    );
}

#[test]
fn a_zone_whose_answer_never_changes_is_flux_when_its_glue_rotates() {
    let mut s = scorer();
    let mut out = Vec::new();
    // A flux network is known first: its bots are in the shared table.
    rotate_flux(&mut s, "known.test", 0..4, 180, &mut out);
    // The zone answers the same three bots every time; only its name servers' glue rotates.
    let fixed: Vec<String> = flux_answer(0).into_iter().take(3).collect();
    for round in 0..6u32 {
        let mut msg = response("stuck.test", a_records("stuck.test", 180, &fixed));
        // In-bailiwick glue: the host is inside the zone it serves.
        msg.authority = vec![rec("stuck.test", 2, 86_400, "ns1.stuck.test")];
        msg.additional = vec![rec("ns1.stuck.test", 1, 180, &flux_answer(round + 30)[0])];
        s.observe(at(1000 + round * 180), &msg, &mut out);
    }
    let v = s.explain("stuck.test", at(1000 + 5 * 180)).unwrap();
    assert_eq!(v.features.rrsets, 1, "one answer: {:?}", v.features);
    assert_eq!(v.features.rotating_ns_hosts, 1);
    assert!(
        out.iter()
            .any(|v| v.domain == "stuck.test" && v.level == Level::Flux),
        "{out:#?}"
    );
}

#[test]
fn allowlisted_flux_is_reported_and_marked() {
    let mut s = scorer();
    let mut out = Vec::new();
    rotate_flux(&mut s, "0.pool.ntp.org", 0..6, 130, &mut out);
    let v = out
        .iter()
        .find(|v| v.domain == "0.pool.ntp.org" && v.level == Level::Flux)
        .unwrap();
    assert!(v.allowlisted);
    assert_eq!(v.allowlist_match.as_deref(), Some("suffix pool.ntp.org"));
}

#[test]
fn key_count_is_bounded() {
    let mut s = Scorer::new(
        ScorerConfig {
            max_keys: 100,
            ..ScorerConfig::default()
        },
        Arc::new(Enricher::empty()),
        Arc::new(Allowlist::empty()),
    );
    let mut out = Vec::new();
    for i in 0..1000u32 {
        let name = format!("h{i}.example{i}.test");
        s.observe(
            at(i),
            &response(&name, a_records(&name, 60, &["192.0.2.1".into()])),
            &mut out,
        );
    }
    let st = s.stats();
    assert_eq!(st.keys_tracked, 100);
    assert_eq!(st.keys_created, 2000);
    assert_eq!(st.keys_evicted, 1900);
}

#[test]
fn baselines_are_tracked_on_the_same_stream() {
    let mut s = scorer();
    let log = log_rescores(&mut s);
    let mut out = Vec::new();
    rotate_flux(&mut s, "b.test", 0..30, 180, &mut out);
    let flags = baseline_flags(&log);
    assert!(flags.contains(&("b.test".to_owned(), "holz")));
    assert!(flags.contains(&("b.test".to_owned(), "zeek")));
}

#[test]
fn nxdomain_and_empty_answers_are_ignored() {
    let mut s = scorer();
    let mut out = Vec::new();
    let mut m = response("gone.test", vec![]);
    m.rcode = Rcode::NXDOMAIN;
    s.observe(at(0), &m, &mut out);
    s.observe(at(0), &response("empty.test", vec![]), &mut out);
    assert_eq!(s.stats().scored, 0);
    assert_eq!(s.stats().keys_tracked, 0);
}

#[test]
fn org_ids_merge_one_companys_asns() {
    assert_eq!(
        org_id(16509, Some("Amazon.com, Inc.")),
        org_id(14618, Some("Amazon.com, Inc."))
    );
    assert_eq!(
        org_id(20940, Some("Akamai International B.V.")),
        org_id(16625, Some("Akamai Technologies, Inc."))
    );
    assert_eq!(
        org_id(4134, Some("Chinanet")),
        org_id(4812, Some("China Telecom (Group)"))
    );
    assert_ne!(
        org_id(4837, Some("CHINA UNICOM China169 Backbone")),
        org_id(4134, Some("Chinanet"))
    );
    assert_eq!(
        registered_domain("myhost.duckdns.org"),
        Some("myhost.duckdns.org")
    );
    assert_eq!(
        registered_domain("a.b.example.co.uk"),
        Some("example.co.uk")
    );
}

/// A scorer with a small ASN database: 20/8, 30/8, ... 90/8 are eight organisations.
fn scorer_with_orgs(tag: &str) -> Scorer {
    let dir = std::env::temp_dir().join(format!("flux-score-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("asn.csv");
    let csv: String = (0..8u32)
        .map(|i| {
            let o = 20 + i * 10;
            format!("{o}.0.0.0,{o}.255.255.255,{},Org{i} Networks\n", 64_500 + i)
        })
        .collect();
    std::fs::write(&path, csv).unwrap();
    let enricher = Enricher::load(&[path], &[]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(enricher.has_asn());
    Scorer::new(
        ScorerConfig::default(),
        Arc::new(enricher),
        Arc::new(Allowlist::builtin()),
    )
}

/// Replays a name that the authority answers with `answer(period)` for each `ttl` period, as a
/// caching resolver shows it to a client asking every minute (the TTL counting down). Returns
/// when the name's key first reached `flux`, if it did.
fn replay_periods(
    s: &mut Scorer,
    name: &str,
    ttl: u32,
    periods: u32,
    answer: impl Fn(u32) -> Vec<String>,
) -> Option<SystemTime> {
    let mut out = Vec::new();
    let mut first_flux = None;
    for t in (0..periods * ttl).step_by(60) {
        let left = ttl - t % ttl;
        s.observe(
            at(t),
            &response(name, a_records(name, left, &answer(t / ttl))),
            &mut out,
        );
        if first_flux.is_none()
            && let Some(v) = out
                .iter()
                .find(|v| v.domain == name && v.level == Level::Flux)
        {
            first_flux = Some(v.ts);
        }
    }
    first_flux
}

#[test]
fn slow_rotation_one_address_per_ttl_is_flux_by_the_fourth_address() {
    // One address per five-minute TTL, each from the next organisation, never coming back.
    let slow = |p: u32| vec![format!("{}.{p}.{p}.7", 20 + (p % 8) * 10)];
    let mut s = scorer_with_orgs("slow");
    let at_flux = replay_periods(&mut s, "slow.test", 300, 12, slow).expect("flux");
    // Three addresses in three organisations are not enough (a site on three providers can show
    // that); the fourth, still new and in a fourth organisation, is.
    assert!(at_flux >= at(3 * 300), "{at_flux:?}");
    assert!(at_flux < at(4 * 300), "{at_flux:?}");
}

#[test]
fn the_same_rotation_inside_one_organisation_stays_benign() {
    // A CDN or cloud frontend: one new address per TTL, over many /16s, but one organisation.
    let cdn = |p: u32| vec![format!("20.{p}.{p}.7")];
    let mut s = scorer_with_orgs("cdn-shape");
    assert_eq!(replay_periods(&mut s, "front.test", 300, 72, cdn), None);
}

#[test]
fn three_providers_in_turn_stay_benign() {
    // A site served from three providers, one address each, alternating: the addresses come
    // back, so the rotation stops counting.
    let providers = |p: u32| vec![format!("{}.1.1.7", 20 + (p % 3) * 10)];
    let mut s = scorer_with_orgs("providers");
    assert_eq!(
        replay_periods(&mut s, "multi.test", 60, 240, providers),
        None
    );
}

#[test]
fn hosting_flux_over_two_providers_is_flux_within_four_ttls() {
    // Two hosting providers; every answer two servers, one from each, each alone in its /24.
    let hosting = |p: u32| vec![format!("20.{p}.{p}.9"), format!("30.{p}.{p}.9")];
    let mut s = scorer_with_orgs("hosting");
    let at_flux = replay_periods(&mut s, "rented.test", 180, 20, hosting).expect("flux");
    assert!(at_flux < at(4 * 180), "{at_flux:?}");
}

#[test]
fn a_server_farm_of_the_same_shape_stays_benign() {
    // The same two providers, answers and TTL, but the servers sit three to a /24 (four blocks
    // per provider) and the rotation cycles through them.
    let farm = |p: u32| {
        let i = p % 12;
        let host = |o: u32| format!("{o}.1.{}.{}", i / 3, i % 3 + 1);
        vec![host(20), host(30)]
    };
    let mut s = scorer_with_orgs("farm");
    assert_eq!(replay_periods(&mut s, "farm.test", 180, 60, farm), None);
}

#[test]
fn one_known_bot_in_a_large_pool_is_not_enough() {
    let mut s = scorer();
    let mut out = Vec::new();
    rotate_flux(&mut s, "known.test", 0..4, 180, &mut out);
    // A server farm of twelve addresses in two /16s, one of which a flux domain also used (a
    // shared or reassigned address), answering two halves in turn.
    let bot = flux_answer(0)[0].clone();
    let mut farm: Vec<String> = (0..11).map(|i| format!("198.51.{}.{i}", i % 2)).collect();
    farm.push(bot);
    for i in 0..20u32 {
        let half = if i % 2 == 0 { &farm[..6] } else { &farm[6..] };
        s.observe(
            at(1000 + i * 300),
            &response("farm.test", a_records("farm.test", 300, half)),
            &mut out,
        );
    }
    let v = s.explain("farm.test", at(1000 + 19 * 300)).unwrap();
    assert_eq!(v.features.shared_flux_ips, 1);
    assert!(
        !out.iter()
            .any(|v| v.domain == "farm.test" && v.level == Level::Flux),
        "{v}"
    );
}

/// Skipping the re-score of a key whose inputs did not change gives the same verdicts, at the
/// same times, as re-scoring it: over a stream where flux, CDN-like, steady, returning and
/// double-flux keys interleave, with answers re-shown by caches, gaps of hours (windows empty
/// out) and observation time once running backwards.
#[test]
fn skipping_unchanged_keys_changes_no_verdict() {
    let run = |always_rescore: bool| {
        let mut s = Scorer::new(
            ScorerConfig {
                always_rescore,
                ..ScorerConfig::default()
            },
            Arc::new(Enricher::empty()),
            Arc::new(Allowlist::builtin()),
        );
        let mut out = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut t = 0u32;
        let mut scores = Vec::new();
        let log = log_rescores(&mut s);
        // Each key's last score, as the re-scores reported it (as f32, which is what the key
        // state kept before the evaluation moved out).
        let mut last: std::collections::HashMap<String, u32> = Default::default();
        let mut seen = 0;
        for i in 0..6_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly seconds apart, sometimes an hour or a day; once, back in time.
            t = match x % 500 {
                0 => t + 3_700,
                1 => t + 90_000,
                2 if i > 3_000 && i < 3_100 => t.saturating_sub(4_000),
                _ => t + (x >> 8) as u32 % 40,
            };
            let pick = (x >> 16) % 7;
            let name = format!("k{pick}.skip{}.test", (x >> 20) % 3);
            let msg = match pick {
                // Flux: fresh bots over many /16s.
                0 | 1 => response(
                    &name,
                    a_records(&name, 120, &flux_answer((x >> 24) as u32 % 60)),
                ),
                // A CDN: a few addresses of one /16 in turn.
                2 => {
                    let ips: Vec<String> = (0..2)
                        .map(|j| format!("198.51.{}.{}", (x >> 30) % 3, j + 1))
                        .collect();
                    response(&name, a_records(&name, 30, &ips))
                }
                // Steady: always the same answer, sometimes a larger TTL.
                3 => response(
                    &name,
                    a_records(
                        &name,
                        60 + (x >> 40) as u32 % 2 * 300,
                        &["192.0.2.1".into()],
                    ),
                ),
                // Long-lived answers re-shown for hours while others age out of the windows.
                4 if x & (1 << 50) != 0 => {
                    let n = (x >> 33) % 12;
                    response(
                        &name,
                        a_records(&name, 20_000, &[format!("{}.{n}.113.{n}", 100 + n)]),
                    )
                }
                // Three answers that keep coming back.
                4 => {
                    let n = (x >> 33) % 3;
                    response(&name, a_records(&name, 300, &[format!("203.{n}.113.{n}")]))
                }
                // Double flux: rotating glue for the zone's name servers.
                _ => {
                    let mut m = response(&name, a_records(&name, 300, &["192.0.2.9".into()]));
                    for h in 0..2 {
                        let host = format!("ns{h}.glue{}.test", (x >> 36) % 2);
                        m.authority.push(rec(&name, 2, 300, &host));
                        m.additional.push(rec(
                            &host,
                            1,
                            300,
                            &format!("{}.{}.0.{h}", 40 + (x >> 44) % 40, 10 + h),
                        ));
                    }
                    m
                }
            };
            s.observe(at(t), &msg, &mut out);
            // What each key of this response scored now, skipped or not.
            for (k, score, _) in log.lock().unwrap().iter().skip(seen) {
                last.insert(k.clone(), (*score as f32).to_bits());
                seen += 1;
            }
            for n in [name.as_str(), name.split_once('.').map_or("", |x| x.1)] {
                if let Some(st) = s.state_of(n) {
                    scores.push((i, st.level, last.get(n).copied().unwrap_or(0)));
                }
            }
        }
        let v: Vec<String> = out
            .iter()
            .map(|v| serde_json::to_string(v).unwrap())
            .collect();
        (v, baseline_flags(&log).len(), s.stats().rescores, scores)
    };
    let (exact, exact_hits, exact_rescores, exact_scores) = run(true);
    let (fast, fast_hits, fast_rescores, fast_scores) = run(false);
    assert_eq!(exact_scores.len(), fast_scores.len());
    for (a, b) in exact_scores.iter().zip(&fast_scores) {
        assert_eq!(a, b, "score after response {}", a.0);
    }
    assert!(
        exact.len() > 20,
        "the stream must move levels: {}",
        exact.len()
    );
    assert_eq!(exact.len(), fast.len());
    for (a, b) in exact.iter().zip(&fast) {
        assert_eq!(a, b);
    }
    assert_eq!(exact_hits, fast_hits);
    assert!(
        fast_rescores < exact_rescores,
        "skipping saved little: {fast_rescores} of {exact_rescores}"
    );
}

/// A domain looked up twice, one address each in a different network, TTL 0: alone it is what
/// a dynamic-DNS host that moved looks like. When another domain judged flux later shows one of
/// those addresses, the first is re-scored without being looked up again.
#[test]
fn a_quiet_domain_is_judged_when_its_address_turns_out_to_be_a_bot() {
    let mut s = scorer();
    let mut out = Vec::new();
    let bot = flux_answer(0)[0].clone();
    s.observe(
        at(0),
        &response(
            "a.quiet.test",
            a_records("a.quiet.test", 0, std::slice::from_ref(&bot)),
        ),
        &mut out,
    );
    s.observe(
        at(600),
        &response(
            "b.quiet.test",
            a_records("b.quiet.test", 0, &["9.9.9.9".into()]),
        ),
        &mut out,
    );
    assert_eq!(s.level_of("quiet.test"), Some(Level::Benign), "{out:#?}");
    // Another domain rotates through bots, the quiet domain's among them.
    for round in 0..6u32 {
        let mut ips = flux_answer(round + 1);
        if round == 5 {
            ips.push(bot.clone());
        }
        s.observe(
            at(1_000 + round * 180),
            &response("www.loud.test", a_records("www.loud.test", 180, &ips)),
            &mut out,
        );
    }
    // One more response of anything lets the sweep run a re-score interval later.
    s.observe(
        at(2_200),
        &response(
            "www.loud.test",
            a_records("www.loud.test", 180, &flux_answer(6)),
        ),
        &mut out,
    );
    let v = out
        .iter()
        .find(|v| v.domain == "quiet.test" && v.level == Level::Flux)
        .unwrap_or_else(|| panic!("quiet.test not judged: {out:#?}"));
    assert!(v.ts >= at(1_900));
    assert_eq!(v.features.shared_flux_ips, 1);
    assert!(
        v.reasons
            .iter()
            .any(|r| r.feature == "shared_flux_addresses")
    );
}

/// Two lookups of a name, one address each in another network, TTL 0, both addresses bots of a
/// domain judged flux on its own: through `via`'s CNAME chain when given, else queried directly.
fn two_lookups_on_known_bots(
    s: &mut Scorer,
    name: &str,
    via: Option<&str>,
    out: &mut Vec<Verdict>,
) {
    let bots = flux_answer(0);
    for (i, bot) in bots.iter().take(2).enumerate() {
        let mut answers = Vec::new();
        if let Some(q) = via {
            answers.push(rec(q, 5, 0, name));
        }
        answers.push(rec(name, 1, 0, bot));
        let msg = response(via.unwrap_or(name), answers);
        s.observe(at(2_000 + i as u32 * 600), &msg, out);
    }
}

/// Shared bots are other domains' bots: a domain of the key's CNAME chain shows the key's very
/// answers, so its verdict is not a second domain on the same bots. An ISP cache's content
/// name judged flux made its CDN steering name (the next link of the chain, two lookups of its
/// own) flux on shared bots alone; the same two lookups by an unrelated domain still are.
#[test]
fn a_domain_of_the_keys_own_cname_chain_gives_it_no_shared_bots() {
    let mut s = scorer();
    let mut out = Vec::new();
    rotate_flux(&mut s, "dl.vendor.test", 0..8, 180, &mut out);
    assert_eq!(s.level_of("dl.vendor.test"), Some(Level::Flux), "{out:#?}");
    let steering = "dl.vendor.test.steer.example";
    two_lookups_on_known_bots(&mut s, steering, Some("dl.vendor.test"), &mut out);
    two_lookups_on_known_bots(&mut s, "www.other.example", None, &mut out);
    let now = at(3_000);
    let other = s.explain("www.other.example", now).expect("scored");
    assert_eq!(other.level, Level::Flux, "{other:#?}");
    assert!(
        other.own_score < params::FLUX_ENTER,
        "carried by shared bots: {other:#?}"
    );
    let v = s.explain(steering, now).expect("scored");
    assert_eq!(v.features.cname_chain, ["dl.vendor.test", steering]);
    assert_eq!(v.features.shared_flux_ips, 0, "{v:#?}");
    assert_ne!(v.level, Level::Flux, "{v:#?}");
}

/// The case: a thousand unrelated sites on one CDN's anycast addresses, and one flux
/// domain whose answers include one of them. Only the flux domain is flagged, and the anycast
/// address stops counting as a bot once sites with stable answers are seen on it.
#[test]
fn a_thousand_sites_on_a_cdn_address_a_flux_domain_also_used_stay_benign() {
    let mut s = scorer();
    let mut out = Vec::new();
    let cdn = ["151.101.1.1".to_owned(), "151.101.65.1".to_owned()];
    for round in 0..8u32 {
        let mut ips = flux_answer(round);
        ips.push(cdn[0].clone());
        let msg = response("evil-cdn.test", a_records("evil-cdn.test", 180, &ips));
        s.observe(at(round * 180), &msg, &mut out);
    }
    assert!(
        out.iter()
            .any(|v| v.domain == "evil-cdn.test" && v.level == Level::Flux),
        "{out:#?}"
    );
    let cdn_ip = AddrInfo::ip_bytes(cdn[0].parse().unwrap());
    assert!(
        s.flux_ips.owner(&cdn_ip).is_some(),
        "the flux domain shared the anycast address"
    );
    // Each site is looked up twice, the second time after its answer expired: the same
    // answer came back (stable serving addresses).
    let start = 8 * 180;
    for pass in 0..2u32 {
        for i in 0..1000u32 {
            let name = format!("www.site{i}.test");
            let msg = response(&name, a_records(&name, 300, &cdn));
            s.observe(at(start + pass * 400 + i / 10), &msg, &mut out);
        }
    }
    let flagged: Vec<&str> = out
        .iter()
        .filter(|v| v.level == Level::Flux)
        .map(|v| v.domain.as_str())
        .collect();
    assert!(
        flagged.iter().all(|d| d.ends_with("evil-cdn.test")),
        "{flagged:?}"
    );
    assert_eq!(
        s.flux_ips.owner(&cdn_ip),
        None,
        "an address three stable sites use is shared infrastructure, not a bot"
    );
    // And the enforcer does not block it with the flux domain.
    let targets = s.block_targets("evil-cdn.test", at(start + 800));
    assert!(!targets.is_empty());
    assert!(!targets.contains(&cdn[0].parse().unwrap()), "{targets:?}");
}

/// One address per answer, each in a new network: slow flux, unless one of the answers is an
/// address no bot can sit on (forged answers, sinkholes).
#[test]
fn single_address_answers_into_unroutable_space_are_not_flux() {
    let rotate = |name: &str, first: &str| {
        let addrs = [
            first, "31.4.1.1", "41.4.1.1", "51.4.1.1", "61.4.1.1", "71.4.1.1",
        ];
        let answers = (0u32..).map(|i| i * 120).zip(addrs);
        single_address_answers_reach_flux(&mut scorer(), name, answers)
    };
    assert!(rotate("slow.test", "21.4.1.1"), "control");
    assert!(!rotate("forged.test", "10.4.1.1"));
    assert!(!rotate("sinkholed.test", "127.0.0.1"));
}

/// Feeds `name` one answer of one address (TTL 60) at each (second, address); whether the
/// name's key reached `flux`.
fn single_address_answers_reach_flux<'a>(
    s: &mut Scorer,
    name: &str,
    answers: impl IntoIterator<Item = (u32, &'a str)>,
) -> bool {
    let mut out = Vec::new();
    for (t, a) in answers {
        let msg = response(name, a_records(name, 60, &[a.to_owned()]));
        s.observe(at(t), &msg, &mut out);
    }
    out.iter()
        .any(|v| v.domain == name && v.level == Level::Flux)
}

/// A CDN zone whose names users reach only through unrelated customers' CNAMEs is not judged
/// on their union; wildcard flux (random subdomains queried directly) still is, even with two
/// decoy domains CNAMEd into the zone, and so is flux on a zone's own apex.
#[test]
fn a_provider_zone_is_not_flux_but_wildcard_flux_is() {
    let mut s = scorer();
    let mut out = Vec::new();
    for i in 0..12u32 {
        let q = format!("www.cust{i}.com");
        let target = format!("{q}.w.cdnzone.net");
        let ips = vec![
            format!("{}.1.1.1", 40 + i * 7),
            format!("{}.2.1.1", 41 + i * 7),
        ];
        let mut answers = vec![rec(&q, 5, 600, &target)];
        answers.extend(a_records(&target, 60, &ips));
        s.observe(at(i * 90), &response(&q, answers), &mut out);
        let w = format!("r{i}.wild.net");
        s.observe(at(i * 90), &response(&w, a_records(&w, 60, &ips)), &mut out);
        if i < 2 {
            // Two decoys CNAME into the wildcard zone.
            let d = format!("www.decoy{i}.org");
            let t = format!("x{i}.wild.net");
            let mut answers = vec![rec(&d, 5, 600, &t)];
            answers.extend(a_records(&t, 60, &ips));
            s.observe(at(i * 90 + 1), &response(&d, answers), &mut out);
        }
    }
    let flux = |d: &str| out.iter().any(|v| v.domain == d && v.level == Level::Flux);
    assert!(flux("wild.net"), "{out:#?}");
    assert!(!flux("cdnzone.net"), "{out:#?}");
    let f = s.explain("cdnzone.net", at(12 * 90)).unwrap().features;
    assert_eq!(f.customers, 2, "{f:?}");
    assert!(!f.queried_directly);
    let w = s.explain("wild.net", at(12 * 90)).unwrap().features;
    assert!(w.customers == 2 && w.queried_directly, "{w:?}");

    // The apex answering for itself is never excused by customers.
    let mut s = scorer();
    let mut out = Vec::new();
    for i in 0..2u32 {
        let d = format!("www.decoy{i}.org");
        let mut answers = vec![rec(&d, 5, 600, "x.apex.net")];
        answers.extend(a_records("x.apex.net", 60, &["9.9.9.9".to_owned()]));
        s.observe(at(i), &response(&d, answers), &mut out);
    }
    rotate_flux(&mut s, "apex.net", 0..8, 180, &mut out);
    assert!(
        out.iter()
            .any(|v| v.domain == "apex.net" && v.level == Level::Flux)
    );
}

/// Forged single-address answers need a share of decoys: one `AAAA ::1` or one loopback
/// answer among many bots does not excuse slow flux.
#[test]
fn one_decoy_does_not_excuse_slow_flux() {
    let bots: Vec<String> = (0..12u32)
        .map(|i| format!("{}.4.1.1", 21 + i * 10))
        .collect();
    let answers = std::iter::once((0, "127.0.0.1")).chain(
        (0u32..)
            .map(|i| 600 + i * 120)
            .zip(bots.iter().map(String::as_str)),
    );
    assert!(single_address_answers_reach_flux(
        &mut scorer(),
        "decoy.test",
        answers
    ));
    assert!(!infra::first_party(0, "::1".parse().unwrap()));
}

/// A report comes at `flux`; the block only when the key's own evidence has held at the block
/// score at a second, later re-score; never on shared bots alone.
#[test]
fn the_block_gate_is_stricter_than_the_report() {
    let mut s = scorer();
    let mut out = Vec::new();
    rotate_flux(&mut s, "gate.test", 0..10, 180, &mut out);
    let mine: Vec<&Verdict> = out.iter().filter(|v| v.domain == "gate.test").collect();
    let first = mine
        .iter()
        .position(|v| v.level == Level::Flux)
        .expect("reported");
    assert!(!mine[first].block, "{:#?}", mine[first]);
    let blocked = mine.iter().position(|v| v.block).expect("blocked later");
    assert!(blocked > first);
    assert_eq!(
        mine[blocked].previous,
        Level::Flux,
        "no level change needed"
    );
    assert!(mine[blocked].ts > mine[first].ts);
    assert!(mine[blocked].own_score >= params::BLOCK_SCORE);

    // A key flux only with the help of shared bots is reported, never blocked.
    let mut f = Features {
        rrsets: 2,
        distinct_ips: 2,
        distinct_networks: 2,
        later_answers: 1,
        ip_growth: 1.0,
        ttl_max: 0,
        shared_flux_ips: 2,
        ..Features::default()
    };
    assert!(
        model::score(&f) >= params::FLUX_ENTER,
        "{}",
        model::score(&f)
    );
    assert!(model::own_score(&f) < params::BLOCK_SCORE);
    // And shared bots count nothing for a key that does not rotate on its own.
    f.rrsets = 1;
    assert!(model::score(&f) < params::SUSPICIOUS_ENTER);
}

/// A set that keeps coming back (caches, a round robin) is not a pool of bots: returns of
/// expired answers discount the rotation that fluxiness and new networks show.
#[test]
fn answers_that_keep_returning_weigh_less_than_fresh_ones() {
    let f = |returning_answers| Features {
        rrsets: 10,
        distinct_ips: 10,
        distinct_networks: 4,
        answer_size_max: 1,
        fluxiness: 10.0,
        later_answers: 20,
        returning_answers,
        network_arrivals: 3,
        ip_growth: 0.1,
        ttl_max: 60,
        ..Features::default()
    };
    assert!(
        model::score(&f(0)) >= params::FLUX_ENTER,
        "{}",
        model::score(&f(0))
    );
    assert!(
        model::score(&f(16)) < params::FLUX_ENTER,
        "{}",
        model::score(&f(16))
    );
}

/// One forged answer into unroutable space outside the last hour still marks a key whose
/// answers hold one address each (the longest window is read).
#[test]
fn a_forged_answer_earlier_in_the_day_still_counts() {
    let bots = ["21.4.1.1", "31.4.1.1", "41.4.1.1", "51.4.1.1", "61.4.1.1"];
    let answers =
        std::iter::once((0, "243.1.2.3")).chain((0u32..).map(|i| 7200 + i * 120).zip(bots));
    assert!(!single_address_answers_reach_flux(
        &mut scorer(),
        "late.test",
        answers
    ));
}

/// Shared bots need addresses spread like bots; the carriers of one country mixed in every
/// answer, several addresses each, count for less.
#[test]
fn cdn_edges_get_no_help_from_shared_bots_and_national_lines_count_less() {
    let cdn = Features {
        rrsets: 6,
        distinct_ips: 20,
        distinct_networks: 4,
        distinct_countries: 1,
        lone_subnets: 1,
        answer_size_max: 4,
        multi_address_answers: 6,
        mixed_answers: 1.0,
        answer_networks_max: 3,
        later_answers: 5,
        ip_growth: 0.5,
        fluxiness: 5.0,
        ttl_max: 60,
        ..Features::default()
    };
    assert!(!model::spread_like_bots(&cdn));
    let shared = Features {
        shared_flux_ips: 10,
        ..cdn.clone()
    };
    assert_eq!(model::score(&shared), model::score(&cdn), "no help");
    assert!(model::national_lines(&cdn));
    let abroad = Features {
        distinct_countries: 5,
        ..cdn.clone()
    };
    assert!(model::score(&cdn) < model::score(&abroad));
    // Bots one to a network are spread like bots.
    let bots = Features {
        distinct_ips: 8,
        distinct_networks: 6,
        ..cdn
    };
    assert!(model::spread_like_bots(&bots));
    assert!(!model::national_lines(&bots));
}

#[test]
fn records_out_of_bailiwick_are_ignored_and_counted() {
    // A reply to a question about an unrelated name, whose answers claim the victim's name:
    // the victim is never fed, however often it comes.
    let mut s = scorer();
    let mut out = Vec::new();
    for round in 0..8u32 {
        let msg = response(
            "unrelated.test",
            a_records("www.victim.test", 5, &flux_answer(round)),
        );
        s.observe(at(round * 3), &msg, &mut out);
    }
    assert!(s.explain("www.victim.test", at(30)).is_none(), "{out:#?}");
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(s.stats().out_of_bailiwick, 8 * 5);

    // A delegation of a zone the question is not in, with rotating glue: ignored too.
    let mut s = scorer();
    for round in 0..6u32 {
        let mut msg = response(
            "www.asked.test",
            a_records("www.asked.test", 300, &["10.1.2.3".into()]),
        );
        msg.authority = vec![rec("victim.test", 2, 180, "ns1.victim.test")];
        msg.additional = flux_answer(round)
            .iter()
            .map(|ip| rec("ns1.victim.test", 1, 180, ip))
            .collect();
        s.observe(at(round * 180), &msg, &mut out);
    }
    assert!(s.explain("victim.test", at(6 * 180)).is_none());
    assert!(s.explain("ns1.victim.test", at(6 * 180)).is_none());
}

#[test]
fn the_answer_chain_is_in_bailiwick() {
    // CNAME to another domain, then its addresses: all on the chain, all counted.
    let mut s = scorer();
    let mut out = Vec::new();
    for round in 0..6u32 {
        let mut answers = vec![rec("www.shop.test", 5, 180, "edge.flux.test")];
        answers.extend(a_records("edge.flux.test", 180, &flux_answer(round)));
        s.observe(
            at(round * 180),
            &response("www.shop.test", answers),
            &mut out,
        );
    }
    assert!(
        out.iter()
            .any(|v| v.domain == "edge.flux.test" && v.level == Level::Flux),
        "{out:#?}"
    );
    assert_eq!(s.stats().out_of_bailiwick, 0);
}

#[test]
fn zones_contain_whole_labels() {
    assert!(in_zone("www.example.com", "example.com"));
    assert!(in_zone("example.com", "example.com"));
    assert!(in_zone("WWW.Example.COM.", "example.com"));
    assert!(!in_zone("wwwexample.com", "example.com"));
    assert!(!in_zone("example.com", "www.example.com"));
    assert!(in_zone("anything", ""));
    assert!(in_zone("anything", "."));
    assert!(!in_zone("é.com", "xample.com"));
}

/// An allowlisted CIDR (`--allowlist`) holds addresses the enforcer must never block, even
/// when a flux domain lists them among its bots.
#[test]
fn allowlisted_cidrs_are_never_block_targets() {
    let mut allow = Allowlist::builtin();
    // Two of round 0's bots: one exact, one inside a /16.
    allow
        .add_text("21.31.7.9/32\n22.32.0.0/16\n", "test")
        .unwrap();
    let mut s = Scorer::new(
        ScorerConfig::default(),
        Arc::new(Enricher::empty()),
        Arc::new(allow),
    );
    let mut out = Vec::new();
    rotate_flux(&mut s, "www.evil-flux.test", 0..6, 180, &mut out);
    let v = out
        .iter()
        .find(|v| v.level == Level::Flux)
        .unwrap_or_else(|| panic!("not flux: {out:#?}"));
    let targets = s.block_targets(&v.domain, at(6 * 180));
    assert!(targets.len() > 10, "{targets:?}");
    for allowed in ["21.31.7.9", "22.32.7.9"] {
        let ip: std::net::IpAddr = allowed.parse().unwrap();
        assert!(!targets.contains(&ip), "{allowed} in {targets:?}");
    }
}

/// Issue 12: a CDN's scheduling name that users reach only through a customer's CNAME
/// (`www.shop.test` → `k3x9.sched.cdnx.test`) counts its network diversity for half
/// (`model::served_for_others`); the same answers for a name queried directly count in full.
#[test]
fn a_scheduling_name_reached_only_through_customers_counts_its_networks_for_half() {
    const NAME: &str = "k3x9.sched.cdnx.test";
    const TTL: u32 = 120;
    const PERIODS: u32 = 12;
    // Two lines per answer, from four carriers in turn, a few nodes per /24 in each.
    let answer = |p: u32| -> Vec<String> {
        let o = |k: u32| 20 + ((p + k) % 4) * 10;
        vec![
            format!("{}.1.1.{}", o(0), p % 3 + 1),
            format!("{}.1.1.{}", o(1), p % 3 + 4),
        ]
    };
    let run = |via_customer: bool| {
        let mut s = scorer_with_orgs(if via_customer {
            "sched-cust"
        } else {
            "sched-direct"
        });
        let mut out = Vec::new();
        for t in (0..PERIODS * TTL).step_by(60) {
            let mut answers = Vec::new();
            let q = if via_customer {
                answers.push(rec("www.shop.test", 5, 600, NAME));
                "www.shop.test"
            } else {
                NAME
            };
            answers.extend(a_records(NAME, TTL - t % TTL, &answer(t / TTL)));
            s.observe(at(t), &response(q, answers), &mut out);
        }
        let flux = out
            .iter()
            .any(|v| v.domain == NAME && v.level == Level::Flux);
        let f = s.explain(NAME, at(PERIODS * TTL)).unwrap().features;
        (flux, f)
    };
    let (direct, f) = run(false);
    assert!(direct, "queried directly, the rotation is flux: {f:?}");
    assert!(f.queried_directly && !f.reached_via_others, "{f:?}");
    let (served, f) = run(true);
    assert!(!served, "reached only through a customer: {f:?}");
    assert!(!f.queried_directly && f.reached_via_others, "{f:?}");
}

#[test]
fn names_compare_by_text_whether_or_not_they_share_it() {
    let shared: Arc<str> = Arc::from("www.example.com");
    let copy = String::from("www.example.com");
    assert!(same_name(&shared, &Arc::clone(&shared)));
    assert!(same_name(&shared, &copy));
    assert!(!same_name(&shared, "www.example.net"));
    // The same address but not the same length is another name (a prefix of it).
    assert!(!same_name(&shared, &shared[..3]));
    assert!(!same_name("", "a"));
    assert!(same_name("", ""));
}
