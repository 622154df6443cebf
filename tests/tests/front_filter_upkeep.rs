//! The front filters on the real kernel (BPF_PROG_TEST_RUN): the XDP program skips the exact
//! and CIDR lookups of an IPv4 address whose /24 bit is clear (`flux_common::MAP_FRONT_V4`), and
//! the domain blocklist lookup of a name whose bit is clear (`flux_common::MAP_FRONT_NAMES`), so
//! the userspace writer (`enforce::maps`, the path of the CLI and the agent) must set the bit
//! of every entry it writes, and may clear bits only when nothing needs them. Each case blocks
//! through `Maps`, checks the frame is dropped and the bit set, removes the block and checks the
//! frame passes again.

use std::net::{IpAddr, Ipv4Addr};

use flux_agent::enforce::{
    maps::{Maps, Spec, Target},
    policy::{EnforceOptions, Enforcer},
};
use flux_common::{BlockEntry, Counter, MAP_BLOCKED_V4};
use flux_tests::{
    frames::*,
    privileged,
    xdp_harness::{Harness, XDP_DROP, XDP_PASS},
};

/// (bit set, filter ready) for `ip`, as the kernel reads them.
fn covers(maps: &Maps, ip: [u8; 4]) -> (bool, bool) {
    maps.front_covers(&IpAddr::from(Ipv4Addr::from(ip)))
        .expect("read the front filter")
        .expect("the loaded program has a front filter, mapped here")
}

fn verdict(h: &mut Harness, frame: &[u8]) -> u32 {
    h.run(frame).0
}

/// The exact IPv4 blocklist as the harness loaded it, for writes behind `Maps`' back (no
/// filter bit, no occupancy slot).
fn raw_v4(h: &mut Harness) -> aya::maps::HashMap<&mut aya::maps::MapData, [u8; 4], BlockEntry> {
    aya::maps::HashMap::try_from(h.loaded.ebpf.map_mut(MAP_BLOCKED_V4).expect(MAP_BLOCKED_V4))
        .expect("hash map")
}

/// A block of `name` written straight into the domain blocklist, behind `Maps`' back.
fn raw_block_name(h: &mut Harness, name: &str) {
    let key = flux_agent::enforce::maps::domain_key(name).expect("key");
    let mut m: aya::maps::HashMap<_, u64, flux_common::DomainBlock> = aya::maps::HashMap::try_from(
        h.loaded
            .ebpf
            .map_mut(flux_common::MAP_BLOCKED_DOMAINS)
            .expect("BLOCKED_DOMAINS"),
    )
    .expect("hash map");
    let block = flux_common::DomainBlock {
        entry: BlockEntry::new(flux_common::SOURCE_MANUAL, 0),
        name: [0; flux_common::DOMAIN_TEXT_LEN],
    };
    m.insert(key, block, 0).expect("insert");
}

#[test]
fn a_block_sets_its_bit_and_is_dropped_and_a_removal_passes_again() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let frame = udp4(443, &[0u8; 64]);
    assert_eq!(
        covers(&maps, SRC4),
        (false, true),
        "opening the maps makes the filter ready"
    );
    assert_eq!(verdict(&mut h, &frame), XDP_PASS);

    // Exact address, then CIDRs shorter and longer than a /24: each sets the frame's /24.
    for t in ["192.0.2.53", "192.0.0.0/16", "192.0.2.48/28", "0.0.0.0/0"] {
        let target = if t.contains('/') {
            Target::cidr(t).expect("cidr")
        } else {
            Target::ip(t).expect("ip")
        };
        maps.block(&target, &Spec::manual(None, "test"))
            .expect("block");
        assert_eq!(covers(&maps, SRC4), (true, true), "{t}: bit set");
        assert_eq!(verdict(&mut h, &frame), XDP_DROP, "{t} blocked");
        assert!(maps.unblock(&target).expect("unblock"));
        assert_eq!(
            covers(&maps, SRC4),
            (false, true),
            "{t}: the last IPv4 entry gone, the filter is cleared"
        );
        assert_eq!(verdict(&mut h, &frame), XDP_PASS, "{t} after the unblock");
    }

    // Two entries in different /24s: removing one leaves its bit stale (the maps still decide),
    // and a rebuild clears exactly that bit.
    let other = [198, 51, 100, 7];
    let src = Target::Ip(Ipv4Addr::from(SRC4).into());
    maps.block(&src, &Spec::manual(None, "test"))
        .expect("block");
    maps.block(
        &Target::Ip(Ipv4Addr::from(other).into()),
        &Spec::manual(None, "test"),
    )
    .expect("block");
    assert!(maps.unblock(&src).expect("unblock"));
    assert_eq!(covers(&maps, SRC4), (true, true), "stale until a rebuild");
    assert_eq!(verdict(&mut h, &frame), XDP_PASS, "the maps still decide");
    assert_eq!(maps.rebuild_front().expect("rebuild"), 1);
    assert_eq!(covers(&maps, SRC4), (false, true));
    assert_eq!(
        covers(&maps, other),
        (true, true),
        "the other entry's bit stays"
    );
    let from_other = udp4_between(other, 443, DST4, 40000, &[0u8; 64]);
    assert_eq!(verdict(&mut h, &from_other), XDP_DROP);
}

/// The filter is really consulted: an entry written behind `Maps`' back while the filter is
/// ready (no bit set) is not seen. This is why every writer must go through `Maps`, and why the
/// harness turns the filter off for its raw writes.
#[test]
fn the_kernel_skips_the_lookups_of_a_clear_bit() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let maps = h.maps();
    let frame = udp4(443, &[0u8; 64]);
    assert_eq!(covers(&maps, SRC4), (false, true));
    // A raw insert that sets neither the bit nor turns the filter off; its occupancy slot set
    // (through a Maps entry in another /24) so only the filter can hide it.
    raw_v4(&mut h)
        .insert(SRC4, BlockEntry::new(flux_common::SOURCE_MANUAL, 0), 0)
        .expect("insert");
    let mut maps = maps;
    maps.block(
        &Target::ip("198.51.100.7").expect("ip"),
        &Spec::manual(None, "test"),
    )
    .expect("block");
    assert_eq!(
        verdict(&mut h, &frame),
        XDP_PASS,
        "hidden behind a clear bit"
    );
    // Opening the maps again with the filter off (as after a raw write through the harness)
    // fills it from what the maps hold.
    drop(maps);
    h.mark_occupied(MAP_BLOCKED_V4);
    assert_eq!(
        verdict(&mut h, &frame),
        XDP_DROP,
        "filter off: every address looked up"
    );
    let maps = h.maps();
    assert_eq!(covers(&maps, SRC4), (true, true), "filled at open");
    assert_eq!(verdict(&mut h, &frame), XDP_DROP);
}

/// The bulk path (`Maps::block_new`: a feed's new entries, the start-up restore) sets the bit
/// of every address it writes.
#[test]
fn a_bulk_write_sets_every_bit() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let items: Vec<(Target, Spec)> = (0..5_000u32)
        .map(|i| Ipv4Addr::from(0x0a63_0000 + (i << 8)))
        .chain([Ipv4Addr::from(SRC4)])
        .map(|ip| (Target::Ip(ip.into()), Spec::manual(None, "bulk")))
        .collect();
    assert_eq!(maps.block_new(&items).expect("bulk write"), items.len());
    for (t, _) in &items {
        let Target::Ip(IpAddr::V4(a)) = t else {
            unreachable!()
        };
        assert_eq!(covers(&maps, a.octets()), (true, true), "{a}");
    }
    assert_eq!(verdict(&mut h, &udp4(443, &[0u8; 64])), XDP_DROP);
}

/// The filter's early answer (`xdp_verdict::address_verdict`: both /24 bits clear, nothing can
/// match) needs *both* addresses clear: a frame from a clear /24 to a blocked destination, or
/// from a blocked source to a clear /24, is still dropped and counted on the right side, and an
/// allowed address inside a blocked CIDR still passes with its bit set.
#[test]
fn one_clear_address_does_not_hide_the_other() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let spec = Spec::manual(None, "test");
    // SRC4 and DST4 share a /24: the source here is from another one.
    let other = [198, 51, 100, 7];
    let frame = udp4_between(other, 443, DST4, 40000, &[0u8; 64]);
    for (blocked, clear, counter) in [
        (DST4, other, Counter::DropBlockedDst),
        (other, DST4, Counter::DropBlockedSrc),
    ] {
        let target = Target::Ip(Ipv4Addr::from(blocked).into());
        maps.block(&target, &spec).expect("block");
        assert_eq!(covers(&maps, blocked), (true, true));
        assert_eq!(
            covers(&maps, clear),
            (false, true),
            "the other /24 stays clear"
        );
        let (v, delta, _) = h.run(&frame);
        assert_eq!(v, XDP_DROP, "{counter:?}");
        assert!(delta.contains(&(counter, 1)), "{counter:?}: {delta:?}");
        assert!(maps.unblock(&target).expect("unblock"));
        assert_eq!(verdict(&mut h, &frame), XDP_PASS, "{counter:?} unblocked");
    }

    // The source's /24 blocked as a CIDR, the source itself allowed: the bit is set, the
    // lookups run, and the allowlist wins.
    let cidr = Target::cidr("198.51.100.0/24").expect("cidr");
    maps.block(&cidr, &spec).expect("block");
    assert_eq!(verdict(&mut h, &frame), XDP_DROP, "inside the blocked CIDR");
    let allowed = Target::Ip(Ipv4Addr::from(other).into());
    maps.allow(&allowed, "test").expect("allow");
    let (v, delta, _) = h.run(&frame);
    assert_eq!(v, XDP_PASS, "allowed inside a blocked CIDR");
    assert!(delta.contains(&(Counter::AllowedOverBlock, 1)), "{delta:?}");
}

/// (bit set, filter ready) for the domain `name` in the domain front filter.
fn covers_name(maps: &Maps, name: &str) -> (bool, bool) {
    maps.front_covers_name(name)
        .expect("read the domain front filter")
        .expect("the loaded program has a domain front filter, mapped here")
}

/// Whether the response was judged blocked by name: answered NXDOMAIN or dropped.
fn name_blocked(h: &mut Harness, frame: &[u8]) -> bool {
    let (_, delta, _) = h.run(frame);
    delta
        .iter()
        .any(|(c, n)| *n > 0 && matches!(c, Counter::SinkholedNxdomain | Counter::DropBlockedName))
}

/// The domain front filter (`flux_common::MAP_FRONT_NAMES`) kept like the IPv4 one: a block
/// sets the bit of its hash, the last removal clears the filter, a removal among others leaves
/// its bit until the sweep's rebuild, and a parent's block covers the question through the
/// parent's own bit.
#[test]
fn a_domain_block_sets_its_bit_and_a_removal_clears_it() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let spec = Spec::manual(None, "test");
    let frame = udp4(53, &dns_response_for("www.flux.test", 200));
    assert_eq!(
        covers_name(&maps, "flux.test"),
        (false, true),
        "opening the maps makes the filter ready"
    );
    assert!(!name_blocked(&mut h, &frame));

    for name in ["www.flux.test", "flux.test"] {
        let t = Target::domain(name).expect("name");
        maps.block(&t, &spec).expect("block");
        assert_eq!(covers_name(&maps, name), (true, true), "{name}: bit set");
        assert!(name_blocked(&mut h, &frame), "{name} blocked");
        assert!(maps.unblock(&t).expect("unblock"));
        assert_eq!(
            covers_name(&maps, name),
            (false, true),
            "{name}: the last domain gone, the filter is cleared"
        );
        assert!(!name_blocked(&mut h, &frame), "{name} after the unblock");
    }

    // Two domains: removing one leaves its bit stale (the map still decides), and the sweep's
    // rebuild clears it and keeps the other's.
    let flux = Target::domain("flux.test").expect("name");
    maps.block(&flux, &spec).expect("block");
    maps.block(&Target::domain("other.test").expect("name"), &spec)
        .expect("block");
    assert!(maps.unblock(&flux).expect("unblock"));
    assert_eq!(covers_name(&maps, "flux.test"), (true, true), "stale");
    assert!(!name_blocked(&mut h, &frame), "the map still decides");
    assert!(maps.rebuild_front_if_stale().expect("rebuild") >= 1);
    assert_eq!(covers_name(&maps, "flux.test"), (false, true));
    assert_eq!(covers_name(&maps, "other.test"), (true, true));
    let other = udp4(53, &dns_response_for("a.other.test", 200));
    assert!(name_blocked(&mut h, &other));
}

/// The domain filter is really consulted: a domain written behind `Maps`' back while the filter
/// is ready is not seen, until the filter is turned off (as the harness does for raw writes) or
/// filled again at the next open.
#[test]
fn the_kernel_skips_the_domain_lookup_of_a_clear_bit() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    // Another domain through Maps: the occupancy slot is set, so only the filter can hide the
    // raw entry below.
    maps.block(
        &Target::domain("other.test").expect("name"),
        &Spec::manual(None, "test"),
    )
    .expect("block");
    raw_block_name(&mut h, "flux.test");
    let frame = udp4(53, &dns_response_for("www.flux.test", 200));
    assert_eq!(covers_name(&maps, "flux.test"), (false, true));
    assert!(!name_blocked(&mut h, &frame), "hidden behind a clear bit");
    drop(maps);
    h.mark_occupied(flux_common::MAP_BLOCKED_DOMAINS);
    assert!(
        name_blocked(&mut h, &frame),
        "filter off: every domain looked up"
    );
    let maps = h.maps();
    assert_eq!(
        covers_name(&maps, "flux.test"),
        (true, true),
        "filled at open"
    );
    assert!(name_blocked(&mut h, &frame));
}

/// The bulk path (a feed's new domains, the start-up restore) sets every domain's bit.
#[test]
fn a_bulk_domain_write_sets_every_bit() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let items: Vec<(Target, Spec)> = (0..5_000u32)
        .map(|i| format!("feed{i}.example"))
        .chain(["flux.test".to_owned()])
        .map(|n| {
            (
                Target::domain(&n).expect("name"),
                Spec::manual(None, "bulk"),
            )
        })
        .collect();
    assert_eq!(maps.block_new(&items).expect("bulk write"), items.len());
    for (t, _) in &items {
        let Target::Domain(d) = t else { unreachable!() };
        assert_eq!(covers_name(&maps, d), (true, true), "{d}");
    }
    let frame = udp4(53, &dns_response_for("www.flux.test", 200));
    assert!(name_blocked(&mut h, &frame));
}

/// A ready filter whose pin outlived the program that kept it (an older version, which leaves
/// pins it does not know in place, wrote entries without bits): the agent's start sets the bits
/// of every entry, so those blocks reach the kernel again.
#[test]
fn an_agent_start_covers_entries_a_ready_filter_lacks() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    // Entries through Maps in each blocklist, so the occupancy slots are set and the filters
    // ready: only a clear bit can hide the raw entries below.
    maps.block(
        &Target::domain("other.test").expect("name"),
        &Spec::manual(None, "test"),
    )
    .expect("block");
    maps.block(
        &Target::ip("198.51.100.7").expect("ip"),
        &Spec::manual(None, "test"),
    )
    .expect("block");
    raw_block_name(&mut h, "flux.test");
    raw_v4(&mut h)
        .insert(SRC4, BlockEntry::new(flux_common::SOURCE_MANUAL, 0), 0)
        .expect("insert");
    let dns = udp4(53, &dns_response_for("www.flux.test", 200));
    let other = udp4(443, &[0u8; 64]);
    assert_eq!(covers_name(&maps, "flux.test"), (false, true));
    assert_eq!(covers(&maps, SRC4), (false, true));
    assert!(
        !name_blocked(&mut h, &dns),
        "name hidden behind a clear bit"
    );
    assert_eq!(verdict(&mut h, &other), XDP_PASS, "address hidden too");
    drop(maps);
    let _agent = Enforcer::new(&h.loaded.pin_dir, EnforceOptions::default()).expect("enforcer");
    let maps = h.maps();
    assert_eq!(covers_name(&maps, "flux.test"), (true, true));
    assert_eq!(covers(&maps, SRC4), (true, true));
    assert_eq!(
        verdict(&mut h, &other),
        XDP_DROP,
        "the address's block reaches the kernel"
    );
    // The frames come from SRC4, whose drop comes first: take it out to see the name's. Behind
    // `Maps`' back, so the generation is advanced by hand, as `Maps` would: the drop cache holds
    // SRC4's drop.
    raw_v4(&mut h).remove(&SRC4).expect("remove");
    h.advance_generation();
    assert!(name_blocked(&mut h, &dns), "and the name's");
}
