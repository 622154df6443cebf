//! The occupancy slots on the real kernel (BPF_PROG_TEST_RUN): the XDP program skips the lookups
//! of a blocklist map whose slot is 0, so the userspace writer (`enforce::maps`) must set the slot
//! with every insert and clear it only when the map is empty again. Each case starts from empty
//! maps, blocks through `Maps` (as the CLI and the enforcer do), checks the frame is dropped or
//! answered NXDOMAIN, removes the block and checks it passes again with the slot back to 0.

use flux_agent::enforce::maps::{Maps, Spec, Target};
use flux_common::{Counter, Occupied};
use flux_tests::{
    frames::*,
    privileged,
    xdp_harness::{Harness, XDP_DROP, XDP_PASS},
};

/// The slots as the kernel reads them.
fn slots(maps: &Maps) -> Vec<(Occupied, bool)> {
    maps.occupancy()
        .expect("read occupancy")
        .into_iter()
        .map(|(s, v)| (s, v.expect("the loaded program has occupancy slots")))
        .collect()
}

fn set_slots(maps: &Maps) -> Vec<Occupied> {
    slots(maps)
        .into_iter()
        .filter(|(_, v)| *v)
        .map(|(s, _)| s)
        .collect()
}

fn verdict(h: &mut Harness, frame: &[u8]) -> (u32, Vec<(Counter, u64)>) {
    let (v, delta, _) = h.run(frame);
    (v, delta)
}

#[test]
fn a_block_added_after_an_empty_start_is_enforced_and_one_removed_stops() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    assert_eq!(
        set_slots(&maps),
        vec![],
        "a fresh load starts with every slot 0"
    );

    let non_dns4 = udp4(443, &[0u8; 64]);
    let non_dns6 = udp6(443, &[0u8; 64]);
    let src4 = std::net::Ipv4Addr::from(SRC4);
    let src6 = std::net::Ipv6Addr::from(SRC6);
    let cases: [(Target, Occupied, &[u8]); 4] = [
        (Target::Ip(src4.into()), Occupied::BlockedV4, &non_dns4),
        (Target::Ip(src6.into()), Occupied::BlockedV6, &non_dns6),
        (
            Target::cidr("192.0.2.0/24").expect("cidr"),
            Occupied::BlockedCidrV4,
            &non_dns4,
        ),
        (
            Target::cidr("2001:db8::/32").expect("cidr"),
            Occupied::BlockedCidrV6,
            &non_dns6,
        ),
    ];
    for (target, slot, frame) in cases {
        assert_eq!(
            verdict(&mut h, frame).0,
            XDP_PASS,
            "{target} before the block"
        );
        maps.block(&target, &Spec::manual(None, "test"))
            .expect("block");
        assert_eq!(set_slots(&maps), vec![slot], "{target}: its slot is set");
        let (v, delta) = verdict(&mut h, frame);
        assert_eq!(v, XDP_DROP, "{target} blocked: {delta:?}");
        assert!(
            delta.contains(&(Counter::DropBlockedSrc, 1)),
            "{target}: {delta:?}"
        );
        assert!(maps.unblock(&target).expect("unblock"));
        assert_eq!(
            set_slots(&maps),
            vec![],
            "{target}: the slot is cleared with the last entry"
        );
        assert_eq!(
            verdict(&mut h, frame).0,
            XDP_PASS,
            "{target} after the unblock"
        );
    }

    // Two entries in one map: removing one keeps the slot, and the other still blocks.
    let other = Target::ip("198.51.100.7").expect("ip");
    maps.block(&Target::Ip(src4.into()), &Spec::manual(None, "test"))
        .expect("block");
    maps.block(&other, &Spec::manual(None, "test"))
        .expect("block");
    assert!(maps.unblock(&other).expect("unblock"));
    assert_eq!(set_slots(&maps), vec![Occupied::BlockedV4]);
    assert_eq!(
        verdict(&mut h, &non_dns4).0,
        XDP_DROP,
        "the remaining entry blocks"
    );
    assert!(maps.unblock(&Target::Ip(src4.into())).expect("unblock"));

    // An allowed CIDR over a blocked one (both the frame's addresses are in it): the
    // allowlist's slot makes it looked up.
    let net = Target::cidr("192.0.2.0/24").expect("cidr");
    let allowed = Target::cidr("192.0.2.0/26").expect("cidr");
    maps.block(&net, &Spec::manual(None, "test"))
        .expect("block");
    maps.allow(&allowed, "test").expect("allow");
    assert_eq!(
        set_slots(&maps),
        vec![Occupied::BlockedCidrV4, Occupied::AllowedCidrV4]
    );
    let (v, delta) = verdict(&mut h, &non_dns4);
    assert_eq!(v, XDP_PASS, "allowed over the block");
    assert!(delta.contains(&(Counter::AllowedOverBlock, 2)), "{delta:?}");
    assert!(maps.unallow(&allowed).expect("unallow"));
    assert_eq!(
        verdict(&mut h, &non_dns4).0,
        XDP_DROP,
        "the allowlist is gone"
    );
    assert!(maps.unblock(&net).expect("unblock"));
    assert_eq!(set_slots(&maps), vec![]);

    // A domain: the name walk runs only once a domain is blocked.
    let response = udp4(53, &dns_response_for("www.flux.test", 200));
    let dom = Target::domain("flux.test").expect("domain");
    let (v, delta) = verdict(&mut h, &response);
    assert_eq!(v, XDP_PASS);
    assert!(!delta.iter().any(|(c, _)| *c == Counter::SinkholedNxdomain));
    maps.block(&dom, &Spec::manual(None, "test"))
        .expect("block");
    assert_eq!(set_slots(&maps), vec![Occupied::BlockedDomains]);
    let (v, delta) = verdict(&mut h, &response);
    assert_eq!(v, XDP_PASS, "answered NXDOMAIN in place");
    assert!(
        delta.contains(&(Counter::SinkholedNxdomain, 1)),
        "{delta:?}"
    );
    maps.allow(&Target::domain("www.flux.test").expect("domain"), "test")
        .expect("allow");
    let (_, delta) = verdict(&mut h, &response);
    assert!(delta.contains(&(Counter::AllowedOverBlock, 1)), "{delta:?}");
    assert!(
        maps.unallow(&Target::domain("www.flux.test").expect("domain"))
            .expect("unallow")
    );
    assert!(maps.unblock(&dom).expect("unblock"));
    assert_eq!(set_slots(&maps), vec![]);
    let (_, delta) = verdict(&mut h, &response);
    assert!(!delta.iter().any(|(c, _)| *c == Counter::SinkholedNxdomain));
}

/// Entries already in the maps when they are opened (pins from a run whose slots were lost, or a
/// writer that bypassed `Maps`) get their slots set by `Maps::open`.
#[test]
fn opening_the_maps_marks_the_ones_that_hold_entries() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    maps.block(
        &Target::ip("192.0.2.53").expect("ip"),
        &Spec::manual(None, "test"),
    )
    .expect("block");
    maps.block(
        &Target::domain("flux.test").expect("d"),
        &Spec::manual(None, "test"),
    )
    .expect("block");
    drop(maps);
    // Lose the slots, as pins from before them would have.
    let mut slots: aya::maps::Array<_, u32> = aya::maps::Array::try_from(
        h.loaded
            .ebpf
            .map_mut(flux_common::MAP_OCCUPANCY)
            .expect("OCCUPANCY"),
    )
    .expect("array");
    for s in Occupied::ALL {
        slots.set(s as u32, 0, 0).expect("clear");
    }
    assert_eq!(
        verdict(&mut h, &udp4(443, &[0u8; 64])).0,
        XDP_PASS,
        "unseen without its slot"
    );
    let maps = h.maps();
    assert_eq!(
        set_slots(&maps),
        vec![Occupied::BlockedV4, Occupied::BlockedDomains]
    );
    assert_eq!(verdict(&mut h, &udp4(443, &[0u8; 64])).0, XDP_DROP);
}

/// The bulk path (`Maps::block_new`, a feed's new entries and the start-up restore) sets the
/// slots of the maps its batches write, and what it writes is enforced from an empty start.
#[test]
fn a_bulk_write_from_an_empty_start_sets_the_slots_and_is_enforced() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    assert_eq!(set_slots(&maps), vec![], "a fresh load starts empty");
    let non_dns4 = udp4(443, &[0u8; 64]);
    let non_dns6 = udp6(443, &[0u8; 64]);
    let spec = || Spec::manual(None, "bulk");
    // More than one batch of IPv4 addresses, the frame's source among them, and one of each
    // other kind.
    let mut items: Vec<(Target, Spec)> = (0..5_000u32)
        .map(|i| {
            (
                Target::Ip(std::net::Ipv4Addr::from(0x0a63_0000 + i).into()),
                spec(),
            )
        })
        .collect();
    items.push((Target::Ip(std::net::Ipv4Addr::from(SRC4).into()), spec()));
    items.push((Target::Ip(std::net::Ipv6Addr::from(SRC6).into()), spec()));
    items.push((Target::domain("bulk.example").expect("name"), spec()));
    assert_eq!(maps.block_new(&items).expect("bulk write"), items.len());
    assert_eq!(
        set_slots(&maps),
        vec![
            Occupied::BlockedV4,
            Occupied::BlockedV6,
            Occupied::BlockedDomains
        ],
        "the slots of the three maps written"
    );
    for frame in [&non_dns4, &non_dns6] {
        let (v, delta) = verdict(&mut h, frame);
        assert_eq!(v, XDP_DROP, "{delta:?}");
    }
    assert_eq!(maps.list().expect("list").len(), items.len());
}
