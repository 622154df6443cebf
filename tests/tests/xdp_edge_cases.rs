//! BPF_PROG_TEST_RUN at the edges of the frame walk and of the blocklist verdicts, through the
//! real, verified `flux_xdp` (and `flux_egress`) programs: frames with one, two, three and
//! more VLAN tags (built raw: this machine has no 802.1Q devices), IPv6 chains of 5, 6 and 7
//! extension headers, an expired exact-address entry over a live CIDR, the entry a domain hit
//! is counted on, and `allowed_over_block` for names. The walk's ordinary cases are in
//! `xdp_test_run.rs`.

use std::time::Duration;

use aya::maps::lpm_trie::Key;
use flux_agent::{
    enforce::maps::{self, boot_ns},
    kernel::loader::LoadOptions,
};
use flux_common::{
    BlockEntry, Counter, EVENT_FLAG_BLOCKED, EVENT_FLAG_IP_FRAGMENT, MAP_ALLOWED_CIDR_V4,
    MAP_BLOCKED_CIDR_V4, MAP_BLOCKED_CIDR_V6, MAP_BLOCKED_V4, MAP_BLOCKED_V6, MAX_IPV6_EXT_HEADERS,
    MAX_VLAN_TAGS_STEPPED, SOURCE_MANUAL,
};
use flux_tests::{
    frames::*,
    privileged,
    xdp_harness::{Harness, Ran, TC_SHOT, XDP_DROP, XDP_PASS},
};

const HOUR_NS: u64 = 3_600_000_000_000;

fn entry(expires_ns: u64) -> BlockEntry {
    BlockEntry::new(SOURCE_MANUAL, expires_ns)
}

/// An already expired entry.
fn expired() -> BlockEntry {
    entry(boot_ns() - 1)
}

/// Tag stacks of one, two and three tags (802.1ad outer, 802.1Q inner), outermost first.
const ONE: &[(u16, u16)] = &[(0x8100, 10)];
const TWO: &[(u16, u16)] = &[(0x88a8, 10), (0x8100, 20)];
const THREE: &[(u16, u16)] = &[(0x88a8, 10), (0x8100, 20), (0x8100, 30)];

#[test]
fn frames_past_two_vlan_tags_are_counted_and_still_judged() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let msg = dns_response(100);
    let most = vec![(0x8100u16, 1u16); MAX_VLAN_TAGS_STEPPED];
    let past = vec![(0x8100u16, 1u16); MAX_VLAN_TAGS_STEPPED + 1];

    // Nobody blocked: one and two tags are captured with their ids; three or more tags are
    // passed and counted, never captured (a record holds two ids).
    for (name, frame) in [("udp4", udp4(53, &msg)), ("udp6", udp6(53, &msg))] {
        let ev = h.check(
            name,
            &with_vlans(&frame, ONE),
            &[Counter::ResponsesCaptured],
        );
        assert_eq!(ev[0].vlans(), vec![10], "{name}");
        let ev = h.check(
            name,
            &with_vlans(&frame, TWO),
            &[Counter::ResponsesCaptured],
        );
        assert_eq!(ev[0].vlans(), vec![10, 20], "{name}");
        h.check(name, &with_vlans(&frame, THREE), &[Counter::VlanTooDeep]);
        h.check(name, &with_vlans(&frame, &most), &[Counter::VlanTooDeep]);
        h.check(name, &with_vlans(&frame, &past), &[Counter::VlanTooDeep]);
    }
    // Counted whatever the frame carries, as the file reader counts it.
    h.check(
        "three tags, not DNS",
        &with_vlans(&udp4(8080, &msg), THREE),
        &[Counter::VlanTooDeep],
    );
    h.check(
        "three tags, then a cut tag",
        &with_vlans(&udp4(53, &msg), THREE)[..ETH + 3 * 4 + 2],
        &[Counter::VlanTooDeep],
    );

    // A blocked source is dropped behind one, two, three and up to MAX_VLAN_TAGS_STEPPED tags,
    // over IPv4 and IPv6, each drop counted on its entry.
    h.blocked::<[u8; 4]>(MAP_BLOCKED_V4)
        .insert(SRC4, entry(0), 0)
        .unwrap();
    h.blocked::<[u8; 16]>(MAP_BLOCKED_V6)
        .insert(SRC6, entry(0), 0)
        .unwrap();
    for (name, frame) in [("udp4", udp4(53, &msg)), ("udp6", udp6(53, &msg))] {
        for tags in [ONE, TWO, THREE, &most[..]] {
            let Ran {
                verdict,
                delta,
                events,
                ..
            } = h.run_out(&with_vlans(&frame, tags));
            let n = tags.len();
            assert_eq!(verdict, XDP_DROP, "{name}, {n} tags from a blocked source");
            assert!(delta.contains(&(Counter::DropBlockedSrc, 1)), "{delta:?}");
            assert!(
                !delta.iter().any(|d| d.0 == Counter::VlanTooDeep),
                "{delta:?}"
            );
            assert!(events.is_empty(), "{name}, {n} tags: not captured");
        }
    }
    let per_family = 4;
    // The first drop looked the address up; the next three were the drop cache's.
    assert_eq!(h.v4_hits(SRC4), per_family);
    assert_eq!(
        h.blocked::<[u8; 16]>(MAP_BLOCKED_V6)
            .get(&SRC6, 0)
            .unwrap()
            .hits,
        per_family
    );
    // Past the tags the walk steps over, the addresses are out of reach: passed, counted.
    h.check(
        "more tags than stepped over, blocked source",
        &with_vlans(&udp4(53, &msg), &past),
        &[Counter::VlanTooDeep],
    );
}

#[test]
fn ipv6_chains_of_up_to_six_extension_headers_are_walked() {
    if !privileged() {
        return;
    }
    assert_eq!(MAX_IPV6_EXT_HEADERS, 6, "the README documents 6");
    let mut h = Harness::new(&[53]);
    let msg = dns_response(100);
    let v6 = udp6(53, &msg);
    let dest_opts = |n: usize| -> Vec<(u8, Vec<u8>)> { vec![(60, ipv6_opts_hdr()); n] };
    for n in [5, 6] {
        let ev = h.check(
            "walked",
            &with_ipv6_ext(&v6, &dest_opts(n)),
            &[Counter::ResponsesCaptured],
        );
        assert_eq!(&ev[0].data[..], &msg[..], "{n} extension headers");
    }
    h.check(
        "seven",
        &with_ipv6_ext(&v6, &dest_opts(7)),
        &[Counter::Ipv6ExtTooDeep],
    );
    // Six of every kind the walk knows: hop-by-hop, routing, AH, mobility, fragment (a first
    // fragment, holding the whole message here: captured, flagged a fragment), destination
    // options.
    let mixed = [
        (0, ipv6_opts_hdr()),
        (43, ipv6_opts_hdr()),
        (51, ipv6_opts_hdr()),
        (135, ipv6_opts_hdr()),
        (44, ipv6_frag_hdr(0, true)),
        (60, ipv6_opts_hdr()),
    ];
    let ev = h.check(
        "six of every kind",
        &with_ipv6_ext(&v6, &mixed),
        &[Counter::ResponsesCaptured],
    );
    assert_eq!(&ev[0].data[..], &msg[..]);
    assert_ne!(ev[0].header.flags & EVENT_FLAG_IP_FRAGMENT, 0);
    // The file reader walks the same chains the same way.
    for (n, want_ok) in [(5, true), (6, true), (7, false)] {
        let got = flux_detect::capture_file::decode_frame(
            pcap_file::DataLink::ETHERNET,
            &with_ipv6_ext(&v6, &dest_opts(n)),
            std::time::UNIX_EPOCH,
            &[53],
        );
        assert_eq!(matches!(got, Ok(Some(_))), want_ok, "reader, {n}: {got:?}");
    }
}

#[test]
fn an_expired_exact_entry_does_not_hide_a_live_cidr() {
    if !privileged() {
        return;
    }
    let mut h = Harness::load(LoadOptions {
        egress: true,
        ..Default::default()
    });
    let msg = dns_response(100);
    let (v4, v6) = (udp4(53, &msg), udp6(53, &msg));
    h.blocked::<[u8; 4]>(MAP_BLOCKED_V4)
        .insert(SRC4, expired(), 0)
        .unwrap();
    h.blocked::<[u8; 16]>(MAP_BLOCKED_V6)
        .insert(SRC6, expired(), 0)
        .unwrap();
    // Only the expired entries: passed, counted as expired.
    let (verdict, delta, _) = h.run(&v4);
    assert_eq!(verdict, XDP_PASS);
    assert!(delta.contains(&(Counter::ExpiredBlock, 1)), "{delta:?}");

    // A live CIDR over the same addresses blocks them.
    h.trie::<[u8; 4], BlockEntry>(MAP_BLOCKED_CIDR_V4)
        .insert(&Key::new(24, [192, 0, 2, 0]), entry(boot_ns() + HOUR_NS), 0)
        .unwrap();
    let net6: std::net::Ipv6Addr = "2001:db8::".parse().unwrap();
    h.trie::<[u8; 16], BlockEntry>(MAP_BLOCKED_CIDR_V6)
        .insert(&Key::new(64, net6.octets()), entry(0), 0)
        .unwrap();
    for (name, frame) in [("v4", &v4), ("v6", &v6)] {
        let (verdict, delta, events) = h.run(frame);
        assert_eq!(verdict, XDP_DROP, "{name}: expired exact, live CIDR");
        assert!(delta.contains(&(Counter::DropBlockedSrc, 1)), "{delta:?}");
        assert!(events.is_empty());
    }
    let cidr_hits = h
        .trie::<[u8; 4], BlockEntry>(MAP_BLOCKED_CIDR_V4)
        .get(&Key::new(32, SRC4), 0)
        .unwrap()
        .hits;
    assert_eq!(cidr_hits, 1, "the hit is the CIDR's");

    // Egress: the same lookup for a destination.
    h.blocked::<[u8; 4]>(MAP_BLOCKED_V4)
        .insert(DST4, expired(), 0)
        .unwrap();
    let (verdict, delta) = h.run_egress(&udp4(40000, &dns_query()));
    assert_eq!(verdict, TC_SHOT, "egress: expired exact, live CIDR");
    assert_eq!(delta, vec![(Counter::DropEgressBlocked, 1)]);
}

/// The block on exactly `name`'s hits.
fn hits(maps: &maps::Maps, name: &str) -> u64 {
    maps.get(&maps::Target::domain(name).unwrap())
        .unwrap()
        .unwrap_or_else(|| panic!("{name} is blocked"))
        .hits
}

#[test]
fn a_domain_hit_counts_on_the_deepest_block_that_matched() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let day = maps::Spec::manual(Some(Duration::from_secs(86_400)), "test");
    for name in ["flux.test", "www.flux.test"] {
        maps.block(&maps::Target::domain(name).unwrap(), &day)
            .unwrap();
    }
    let mut sinkholed = |qname: &str| {
        let Ran { verdict, delta, .. } = h.run_out(&udp4(53, &dns_response_for(qname, 100)));
        assert_eq!(verdict, XDP_PASS, "{qname}");
        assert!(
            delta.contains(&(Counter::SinkholedNxdomain, 1)),
            "{qname}: {delta:?}"
        );
        delta
    };

    // The subdomain's own block counts its hits, not the parent's.
    sinkholed("www.flux.test");
    assert_eq!(
        (hits(&maps, "www.flux.test"), hits(&maps, "flux.test")),
        (1, 0)
    );
    // Below it, the deepest block that covers the name.
    sinkholed("a.WWW.flux.test");
    assert_eq!(
        (hits(&maps, "www.flux.test"), hits(&maps, "flux.test")),
        (2, 0)
    );
    // A name with no block of its own counts on the parent.
    sinkholed("mail.flux.test");
    assert_eq!(
        (hits(&maps, "www.flux.test"), hits(&maps, "flux.test")),
        (2, 1)
    );
    // An expired subdomain block leaves the parent to block and count.
    maps.block(
        &maps::Target::domain("www.flux.test").unwrap(),
        &maps::Spec::manual(Some(Duration::from_nanos(1)), "test"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1));
    let delta = sinkholed("www.flux.test");
    assert!(delta.contains(&(Counter::ExpiredBlock, 1)), "{delta:?}");
    assert_eq!(
        (hits(&maps, "www.flux.test"), hits(&maps, "flux.test")),
        (2, 2)
    );
}

#[test]
fn a_block_an_allowlist_overrides_is_counted_not_hit() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let forever = maps::Spec::manual(None, "test");
    let domain = |n: &str| maps::Target::domain(n).unwrap();
    let frame = udp4(53, &dns_response_for("www.x.test", 100));
    let mut allowed_over = |what: &str| {
        let Ran {
            verdict,
            delta,
            out,
            events,
        } = h.run_out(&frame);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(out, frame, "{what}: untouched");
        assert_eq!(events[0].header.flags & EVENT_FLAG_BLOCKED, 0, "{what}");
        delta.contains(&(Counter::AllowedOverBlock, 1))
    };

    // An allowlist entry with nothing blocked counts nothing.
    maps.allow(&domain("www.x.test"), "ok").unwrap();
    assert!(!allowed_over("allowed, nothing blocked"));
    // The same name blocked and allowed.
    maps.block(&domain("www.x.test"), &forever).unwrap();
    assert!(allowed_over("the name blocked and allowed"));
    // The name blocked, its parent allowed.
    maps.unallow(&domain("www.x.test")).unwrap();
    maps.allow(&domain("x.test"), "ok").unwrap();
    assert!(allowed_over("the name blocked, its parent allowed"));
    // The parent blocked, the name allowed.
    maps.unblock(&domain("www.x.test")).unwrap();
    maps.unallow(&domain("x.test")).unwrap();
    maps.block(&domain("x.test"), &forever).unwrap();
    maps.allow(&domain("www.x.test"), "ok").unwrap();
    assert!(allowed_over("the parent blocked, the name allowed"));
    assert_eq!(
        hits(&maps, "x.test"),
        0,
        "a block that did not act has no hit"
    );
    // An expired block is nothing to win over.
    maps.block(
        &domain("x.test"),
        &maps::Spec::manual(Some(Duration::from_nanos(1)), "test"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1));
    assert!(!allowed_over("allowed over an expired block"));

    // An address: counted, and no hit on the block the allowlist overrode.
    let from = [192, 0, 2, 99];
    h.blocked::<[u8; 4]>(MAP_BLOCKED_V4)
        .insert(from, entry(0), 0)
        .unwrap();
    h.trie::<[u8; 4], u32>(MAP_ALLOWED_CIDR_V4)
        .insert(&Key::new(24, [192, 0, 2, 0]), 1, 0)
        .unwrap();
    let (verdict, delta, _) = h.run(&udp4_between(from, 53, DST4, 40000, &dns_query()));
    assert_eq!(verdict, XDP_PASS);
    assert!(delta.contains(&(Counter::AllowedOverBlock, 1)), "{delta:?}");
    let hits = h
        .blocked::<[u8; 4]>(MAP_BLOCKED_V4)
        .get(&from, 0)
        .unwrap()
        .hits;
    assert_eq!(hits, 0, "the allowlist won: no hit on the block");
}

/// Frames not addressed to this host (issue 14, item 1): a reply in a broadcast, multicast or
/// foreign-unicast frame is marked unsolicited and counted `not_for_host` even when it matches
/// a query that left, so an on-path sender cannot get a copied query's port and id scored by
/// sending to everyone. Test runs arrive on the loopback device (ifindex 1), whose own MAC the
/// test records as the attach would.
#[test]
fn replies_in_frames_for_another_host_are_not_trusted() {
    use flux_agent::kernel::loader::record_host_mac;
    use flux_common::{
        EVENT_FLAG_UNSOLICITED, HOST_MAC_SLOT_COUNT, HostMacSlot, MAP_HOST_MAC_SLOTS, host_mac_slot,
    };
    /// The interface test runs arrive on.
    const LOOPBACK: u32 = 1;
    if !privileged() {
        return;
    }
    let mut h = Harness::matching_queries();
    let query = udp4_between(SRC4, 40000, DST4, 53, &dns_query());
    let reply_to = |mac: [u8; 6]| {
        let mut f = udp4_between(DST4, 53, SRC4, 40000, &dns_response(100));
        f[..6].copy_from_slice(&mac);
        f
    };
    let unsolicited = |r: &Ran| r.events[0].header.flags & EVENT_FLAG_UNSOLICITED != 0;
    let untrusted = [Counter::NotForHost, Counter::UnsolicitedReplies];

    // No MAC recorded for the interface: group addresses are still refused.
    for (what, mac) in [
        ("broadcast", [0xff; 6]),
        ("IPv4 multicast", [0x01, 0x00, 0x5e, 0, 0, 0xfb]),
        ("IPv6 multicast", [0x33, 0x33, 0, 0, 0, 1]),
    ] {
        h.run_egress(&query);
        let r = h.run_out(&reply_to(mac));
        assert_eq!(r.verdict, XDP_PASS, "{what}");
        for c in untrusted {
            assert!(r.delta.contains(&(c, 1)), "{what}: {c:?} in {:?}", r.delta);
        }
        assert!(unsolicited(&r), "{what}");
    }
    // The query above was not used up by those frames: the real reply still matches.
    let r = h.run_out(&reply_to(DST_MAC));
    assert!(!unsolicited(&r), "the reply to this host's own MAC");

    // With the interface's own MAC recorded, a unicast frame for another MAC is refused too:
    // recorded in the interface's own slot of HOST_MAC_SLOTS, and recorded while another
    // interface holds that slot (then the kernel finds it in HOST_MACS).
    let holder = host_mac_slot(LOOPBACK) + HOST_MAC_SLOT_COUNT;
    for (what, first) in [
        ("in its own slot", None),
        ("behind another interface's slot", Some(holder)),
    ] {
        let mut h = Harness::matching_queries();
        if let Some(other) = first {
            record_host_mac(&mut h.loaded.ebpf, other, [0x02, 0, 0, 0, 0, 0x01]).unwrap();
        }
        record_host_mac(&mut h.loaded.ebpf, LOOPBACK, DST_MAC).expect("record the MAC");
        let slot = {
            let map = h
                .loaded
                .ebpf
                .map(MAP_HOST_MAC_SLOTS)
                .expect("HOST_MAC_SLOTS map");
            let slots: aya::maps::Array<_, HostMacSlot> = aya::maps::Array::try_from(map).unwrap();
            slots.get(&host_mac_slot(LOOPBACK), 0).unwrap()
        };
        assert_eq!(
            slot.ifindex,
            first.unwrap_or(LOOPBACK),
            "{what}: the slot's holder"
        );
        h.run_egress(&query);
        let r = h.run_out(&reply_to([0x02, 0, 0, 0, 0, 0x99]));
        for c in untrusted {
            assert!(r.delta.contains(&(c, 1)), "{what}: foreign unicast: {c:?}");
        }
        assert!(unsolicited(&r), "{what}: foreign unicast");
        let r = h.run_out(&reply_to(DST_MAC));
        assert!(!unsolicited(&r), "{what}: own MAC, recorded");
        assert!(!r.delta.iter().any(|(c, _)| *c == Counter::NotForHost));
        // The other interface's MAC is not this one's.
        h.run_egress(&query);
        let r = h.run_out(&reply_to([0x02, 0, 0, 0, 0, 0x01]));
        assert!(unsolicited(&r), "{what}: the slot holder's MAC");
    }
}

/// The blocklist maps' capacities are load-time options (`run --max-blocked-*`, issue 15): a
/// smaller CIDR map is full at its own size and says so, a larger domain map takes more than
/// the compiled 262,144 names, and the CLI accepts the resized pins (they are ours: only their
/// capacity differs from the object's).
#[test]
fn blocklist_capacities_are_load_time_options() {
    use flux_agent::{
        enforce::maps::{BlocklistError, Maps, Spec, Target},
        kernel::loader::MapSizes,
    };
    use flux_common::{MAP_BLOCKED_DOMAINS, MAX_BLOCKED_DOMAINS};
    use std::net::{IpAddr, Ipv4Addr};
    if !privileged() {
        return;
    }
    let bigger = MAX_BLOCKED_DOMAINS + 1000;
    let h = Harness::load(LoadOptions {
        map_sizes: MapSizes {
            blocked_cidrs: Some(8),
            blocked_domains: Some(bigger),
            ..MapSizes::default()
        },
        ..Default::default()
    });
    let pin = h.loaded.pin_dir.clone();
    let mut maps = Maps::open(&pin).expect("open the resized maps");
    assert_eq!(maps.capacity(MAP_BLOCKED_CIDR_V4), 8);
    assert_eq!(maps.capacity(MAP_BLOCKED_DOMAINS), bigger);
    let cidr = |i: u8| Target::Cidr(IpAddr::V4(Ipv4Addr::new(198, 18, i, 0)), 24);
    let spec = Spec::manual(None, "test");
    for i in 0..8 {
        maps.block(&cidr(i), &spec).expect("within capacity");
    }
    match maps.block(&cidr(8), &spec) {
        Err(BlocklistError::Full { map, capacity }) => {
            assert_eq!((map, capacity), (MAP_BLOCKED_CIDR_V4, 8));
        }
        other => panic!("the 9th CIDR: {other:?}"),
    }
    // A feed of more names than the compiled size fits the larger map.
    let names: Vec<Target> = (0..MAX_BLOCKED_DOMAINS + 10)
        .map(|i| Target::Domain(format!("n{i}.feed.test")))
        .collect();
    let rooms = maps.room_for(&names).expect("room_for");
    assert!(rooms.iter().all(|r| r.fits()), "{rooms:?}");
    // The CLI opens the resized pins as ours.
    let out = flux_tests::agent_cli(
        None,
        &[
            "blocklist",
            "list",
            "--json",
            "--pin-dir",
            pin.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "the CLI refused the resized pins: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
