//! Unit tests of the key state (`key_state.rs`): answers, returns, NS hosts and glue, the
//! caps, and when the features can have changed.

use std::net::IpAddr;

use super::*;

/// An address 10.LAST.0.1 in network ASN, country CC.
pub(crate) fn a(last: u8, asn: u32, cc: &[u8; 2]) -> AddrInfo {
    addr(IpAddr::from([10, last, 0, 1]), asn, cc)
}

/// `ip` in network `asn`, country `cc`.
fn addr(ip: IpAddr, asn: u32, cc: &[u8; 2]) -> AddrInfo {
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

/// A parent's child answer not seen again and still within its TTL is pending (see
/// `model::stable_children_only`): its expiry changes the features, so it bounds `changes_at`.
#[test]
fn a_pending_child_answer_expiring_is_a_change() {
    let mut k = KeyState::new(0);
    k.add_answer_from(0, 300, &[a(1, 1, b"US")], 11);
    k.add_answer_from(10, 300, &[a(2, 2, b"DE")], 12);
    // An owner key's answer (no child) is never pending.
    k.add_answer_from(20, 100, &[a(3, 3, b"FR")], 0);
    let n = k.features_nested(30, WINDOWS.len());
    assert_eq!(n.changes_at, 300, "child 11's answer expires at 300");
    assert_eq!(k.features(30, WINDOWS[0]).stable_children_pending, 2);
    assert_eq!(k.features(305, WINDOWS[0]).stable_children_pending, 1);
    // Seen again: kept, no longer pending.
    k.add_answer_from(305, 300, &[a(2, 2, b"DE")], 12);
    let f = k.features(305, WINDOWS[0]);
    assert_eq!(
        (f.stable_children_pending, f.stable_children_seen_again),
        (0, 1)
    );
}

/// A bot counts as another domain's unless that domain is the key's own or, for a key never
/// queried directly, one of its CNAME chain's; the remembered answer is asked again when the
/// chain or the direct mark changes.
#[test]
fn bots_of_a_domain_in_the_keys_chain_are_its_own_until_the_chain_changes() {
    let id = |n: &str| match n {
        "x.steer.example" => 1,
        "dl.vendor.test" => 2,
        _ => 3,
    };
    let mut bots = super::super::shared::FluxIps::default();
    bots.insert(a(1, 1, b"US").ip, 2);
    let mut k = KeyState::new(0);
    k.add_answer(0, 60, &[a(1, 1, b"US"), a(2, 2, b"DE")]);
    assert_eq!(k.shared_bots(0, &bots, "x.steer.example", id)[0], 1);
    k.set_chain(&["dl.vendor.test", "x.steer.example"]);
    assert_eq!(
        k.shared_bots(0, &bots, "x.steer.example", id)[0],
        0,
        "its chain's"
    );
    k.set_chain(&["www.other.test", "x.steer.example"]);
    assert_eq!(
        k.shared_bots(0, &bots, "x.steer.example", id)[0],
        1,
        "asked again"
    );
    // Back through the vendor's chain, then queried directly once: a service of its own, whose
    // chain excuses nothing (one lookup through a CNAME must not hide an operator's bots).
    k.set_chain(&["dl.vendor.test", "x.steer.example"]);
    assert_eq!(k.shared_bots(0, &bots, "x.steer.example", id)[0], 0);
    k.note_customer(None);
    assert_eq!(
        k.shared_bots(0, &bots, "x.steer.example", id)[0],
        1,
        "queried directly"
    );
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
    // A million keys hold these: the answer history entry, the address entry and the key
    // state itself. 24 since the answer notes which name under a domain gave it (`child`,
    // `seen_again`); the first one is inline in the key state.
    assert_eq!(size_of::<Rrset>(), 24);
    assert_eq!(size_of::<IpEntry>(), 20);
    assert!(size_of::<KeyState>() <= 128, "{}", size_of::<KeyState>());
    // A key with one answer of four addresses or fewer allocates only its address entries.
    let mut k = KeyState::new(0);
    k.add_answer(0, 300, &[a(1, 1, b"US"), a(2, 2, b"DE"), a(3, 3, b"FR")]);
    assert!(!k.rrsets.spilled() && !k.ip_fps.spilled() && k.more.is_none());
}

#[test]
fn ipv6_addresses_survive_eviction_from_the_side_table() {
    // Mixed IPv4 and IPv6 through the cap: every entry left must still give back its own
    // address, be found again, and the side table hold exactly the IPv6 ones.
    let addr = |i: u32| {
        let ip = if i.is_multiple_of(3) {
            IpAddr::from([0x2001, 0xdb8, (i >> 16) as u16, i as u16, 0, 0, 0, 1])
        } else {
            IpAddr::from((0x0a00_0000 + i).to_be_bytes())
        };
        AddrInfo {
            ip: AddrInfo::ip_bytes(ip),
            asn: i,
            network: i,
            country: *b"NL",
        }
    };
    let mut k = KeyState::new(0);
    let n = MAX_IPS_PER_KEY as u32 * 3;
    for i in 0..n {
        k.add_answer(i, 60, &[addr(i)]);
    }
    assert_eq!(k.ips.len(), MAX_IPS_PER_KEY);
    let v6 = k.ips.iter().filter(|e| e.addr.v6_slot().is_some()).count();
    assert_eq!(k.more.as_ref().map_or(0, |m| m.v6.len()), v6);
    for e in k.ips.clone() {
        let info = k.info_of(&e.addr);
        // The asn is the address's number in this test.
        assert_eq!(info, addr(info.asn));
        assert!(k.find_ip(&info.ip).is_some_and(|f| f.last == e.last));
    }
    // The oldest went first: what is left is the last MAX_IPS_PER_KEY.
    assert!(k.ips.iter().all(|e| e.last >= n - MAX_IPS_PER_KEY as u32));
}

/// Every address of a key is found, and no other, at every size around the search's blocks of
/// 16, with addresses that share a fingerprint (the same four words in another order fold to the
/// same value) in the same block, in different blocks and in the partial block at the end.
#[test]
fn every_address_is_found_whatever_its_block_and_fingerprint() {
    let words = |i: u32| [0x2001_0db8, i, 0x5555_0000 ^ i, 7];
    let v6 = |w: [u32; 4]| {
        let mut ip = [0u8; 16];
        for (chunk, w) in ip.chunks_mut(4).zip(w) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        AddrInfo {
            ip,
            asn: w[1],
            network: 1,
            country: *b"NL",
        }
    };
    // Address 2i and 2i+1 swap two words: one fingerprint, two addresses.
    let addr = |j: u32| {
        let [a, b, c, d] = words(j / 2);
        v6(if j.is_multiple_of(2) {
            [a, b, c, d]
        } else {
            [a, c, b, d]
        })
    };
    assert_eq!(fingerprint(&addr(6).ip), fingerprint(&addr(7).ip));
    for n in [1u32, 2, 15, 16, 17, 31, 32, 33, 100, 128] {
        let mut k = KeyState::new(0);
        for j in 0..n {
            k.add_answer(j, 60, &[addr(j)]);
        }
        assert_eq!(k.ips.len(), n as usize);
        for j in 0..n {
            let want = addr(j).ip;
            let found = k.find_ip(&want).map(|e| e.last);
            assert_eq!(found, Some(j), "n={n}: address {j}");
        }
        // Not in the key: the next addresses (for an odd `n`, the first of them shares the last
        // address's fingerprint) and one far off.
        for j in [n, n + 1, 10_000] {
            assert!(
                k.find_ip(&addr(j).ip).is_none(),
                "n={n}: {j} is not in the key"
            );
        }
    }
}

/// A key holds an address once however often an answer, or an old snapshot, repeats it.
#[test]
fn an_answer_that_repeats_an_address_holds_it_once() {
    let mut k = KeyState::new(0);
    let (x, z) = (a(1, 1, b"US"), a(2, 2, b"DE"));
    assert!(k.add_answer(0, 60, &[x, z, x]));
    assert_eq!(k.ips.len(), 2);
    assert_eq!(k.ip_fps.len(), 2);
    let f = k.features(0, WINDOWS[0]);
    assert_eq!((f.distinct_ips, f.answer_size_max), (2, 3));
    let mut restored = KeyState::new(0);
    for (addr, last) in [(x, 5), (z, 6), (x, 7)] {
        restored.restore_ip(addr, last, 0);
    }
    assert_eq!(restored.ips.len(), 2);
    assert_eq!(
        restored.find_ip(&x.ip).map(|e| e.last),
        Some(5),
        "the first copy is kept"
    );
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

/// A host's glue tally (`tally::GlueTally`) is sized to the glue a host keeps: a host that
/// rotated through more networks than it keeps reads as the most it keeps, every one counted.
#[test]
fn a_host_full_of_glue_counts_all_its_networks() {
    let mut k = KeyState::new(0);
    let over = u8::try_from(MAX_GLUE + 8).unwrap();
    for i in 0..over {
        k.add_ns(
            u32::from(i),
            "ns1.evil.test",
            &[a(i, 100 + u32::from(i), b"US")],
            1,
        );
    }
    let f = k.features(u32::from(over), WINDOWS[0]);
    assert_eq!(f.glue_ips_max as usize, MAX_GLUE);
    assert_eq!(f.glue_networks_max as usize, MAX_GLUE);
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
fn the_oldest_entry_is_the_first_of_equals_as_min_by_key_has_it() {
    let reference = |v: &[u32]| {
        v.iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .map(|(i, _)| i)
    };
    assert_eq!(first_oldest(&[] as &[u32], |l| *l), None);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for len in 1..=130 {
        for _ in 0..20 {
            // Few distinct values, so ties are common and the first of them must win.
            let v: Vec<u32> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 5) as u32
                })
                .collect();
            assert_eq!(first_oldest(&v, |l| *l), reference(&v), "{v:?}");
        }
    }
}

#[test]
fn the_kept_registered_domain_is_the_looked_up_one() {
    let long = format!("{}.example.com", "a".repeat(300));
    for name in [
        "www.example.com",
        "example.com",
        "com",
        "a.b.c.example.co.uk",
        "localhost",
        "",
        long.as_str(),
        // The lookup drops a trailing dot, so its answer is not the end of these names: they
        // must get the lookup's answer every time, not a slice of the name kept from it.
        "www.example.com.",
        "a.b.example.co.uk.",
        "x.example.com..",
        "www.example.com\\.",
    ] {
        let mut st = KeyState::new(0);
        // The first call looks it up and keeps it; the later ones read what was kept.
        for _ in 0..3 {
            assert_eq!(
                st.own_domain(name),
                crate::score::registered_domain(name),
                "{name}"
            );
        }
    }
}

/// A full key evicts, for each new address, what a scan for the first of its oldest entries
/// before each insertion would: the same entries in the same order, through answers of several
/// addresses as old, addresses seen again, and observation time standing still or running
/// backwards.
#[test]
fn evictions_match_one_scan_per_new_address() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let addr = |i: u32| AddrInfo {
        ip: AddrInfo::ip_bytes(IpAddr::from((0x0a00_0000 + i * 7_919).to_be_bytes())),
        asn: 64_500,
        network: 1 + i % 3,
        country: *b"NL",
    };
    let mut k = KeyState::new(0);
    // The reference: (address, last seen), evicting by a scan per new address.
    let mut model: Vec<([u8; 16], u32)> = Vec::new();
    let mut now = 100u32;
    let mut evicted = 0;
    for step in 0..3_000 {
        // Time mostly stands still, so many entries are as old (more than the scan keeps).
        now = match next(20) {
            0 => now.saturating_sub(next(5) as u32),
            1..=4 => now + 1 + next(3) as u32,
            _ => now,
        };
        // Mostly new addresses, some seen again.
        let base = if next(4) == 0 { next(300) } else { next(5_000) } as u32;
        let addrs: Vec<AddrInfo> = (0..1 + next(7) as u32).map(|j| addr(base + j)).collect();
        k.add_answer(now, 60, &addrs);
        let mut fresh: Vec<[u8; 16]> = Vec::new();
        for a in &addrs {
            if let Some(e) = model.iter_mut().find(|e| e.0 == a.ip) {
                e.1 = now;
            } else if !fresh.contains(&a.ip) {
                fresh.push(a.ip);
            }
        }
        for ip in fresh {
            if model.len() >= MAX_IPS_PER_KEY {
                let oldest = model.iter().map(|e| e.1).min().unwrap();
                let i = model.iter().position(|e| e.1 == oldest).unwrap();
                model.swap_remove(i);
                evicted += 1;
            }
            model.push((ip, now));
        }
        let held: Vec<([u8; 16], u32)> = k
            .ips
            .iter()
            .map(|e| (k.info_of(&e.addr).ip, e.last))
            .collect();
        assert_eq!(held, model, "step {step}");
    }
    assert!(
        evicted > 2_000,
        "the key was full most of the time: {evicted}"
    );
}

/// The IPv6 address 2001:db8::LAST in network `asn`, country `cc`.
fn a6(last: u16, asn: u32, cc: &[u8; 2]) -> AddrInfo {
    addr(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, last]), asn, cc)
}

/// A dual-stack name: its first AAAA answer after its A answer is the first of its family, not
/// rotation (no later answer, growth or new network); a changed AAAA answer after it is.
#[test]
fn the_first_answer_of_each_address_family_is_a_first() {
    let mut k = KeyState::new(0);
    k.add_answer(0, 300, &[a(1, 1, b"US"), a(2, 1, b"US")]);
    k.add_answer(1, 300, &[a6(1, 2, b"US")]);
    let f = k.features(10, WINDOWS[0]);
    assert_eq!(f.rrsets, 2);
    assert_eq!(
        (
            f.later_answers,
            f.fresh_answers,
            f.network_arrivals,
            f.ip_growth
        ),
        (0, 0, 0, 0.0),
        "{f:?}"
    );
    // The AAAA answer changes: that is the name rotating.
    k.add_answer(400, 300, &[a6(2, 3, b"DE")]);
    let f = k.features(400, WINDOWS[0]);
    assert_eq!(
        (f.later_answers, f.fresh_answers, f.network_arrivals),
        (1, 1, 1),
        "{f:?}"
    );
    // A single-family key is as before: its second answer, all new, is rotation.
    let mut k = KeyState::new(0);
    k.add_answer(0, 300, &[a6(1, 2, b"US")]);
    k.add_answer(1, 300, &[a6(2, 2, b"US")]);
    assert_eq!(k.features(10, WINDOWS[0]).fresh_answers, 1);
}

/// A name's A and AAAA answers are two children of its registered domain, each one answer
/// (stable), not one child with two answers (rotating); the IPv4 tag is the one snapshots
/// taken before the family counted hold.
#[test]
fn a_dual_stack_name_is_two_stable_children() {
    assert_eq!(
        child_tag("www.example.org", true),
        child_tag("www.example.org", false) ^ 1
    );
    for n in ["a", "b", "www.example.org", "x.y.z"] {
        for v6 in [false, true] {
            assert!(child_tag(n, v6) > CHILD_MANY, "{n} {v6}");
        }
    }
    let mut k = KeyState::new(0);
    for (i, name) in ["www", "bugs", "security"].iter().enumerate() {
        let n = u8::try_from(i).unwrap();
        let name = format!("{name}.example.org");
        k.add_answer_from(
            0,
            300,
            &[a(n, u32::from(n), b"US")],
            child_tag(&name, false),
        );
        let v6 = [a6(u16::from(n), u32::from(n), b"US")];
        k.add_answer_from(0, 300, &v6, child_tag(&name, answer_is_v6(&v6)));
    }
    let f = k.features(10, WINDOWS[0]);
    assert_eq!((f.stable_children, f.rotating_children), (6, 0), "{f:?}");
}

/// A AAAA answer a snapshot taken before tags told the families apart stored under the name's
/// IPv4 tag is the same child when it is re-shown with the IPv6 tag, not an answer of several
/// names (which would make the name a rotating child until the answer aged out).
#[test]
fn an_old_ipv6_answer_re_shown_keeps_its_child() {
    let mut k = KeyState::new(0);
    let v6 = [a6(1, 2, b"US")];
    let old_tag = child_tag("www.example.org", false);
    k.add_answer_from(0, 300, &v6, old_tag);
    k.add_answer_from(10, 300, &v6, child_tag("www.example.org", true));
    let f = k.features(20, WINDOWS[0]);
    assert_eq!((f.stable_children, f.rotating_children), (1, 0), "{f:?}");
}
