//! The IPv4 drop cache (`flux_common::MAP_DROP_CACHE_V4`) through the real, verified `flux_xdp`
//! program (BPF_PROG_TEST_RUN), with the blocklists written as the agent and the CLI write
//! them (`Maps`): cached drops are counted on their entry, every change through `Maps` takes
//! effect on the next packet (an unblock, a shorter expiry, an allowed CIDR), a change written
//! past `Maps` costs at most `DROP_CACHE_RECHECK` drops, and the off switch sends every drop
//! through the lookup, and an unblock never writes another address's slot back. Each test pins
//! its thread to one CPU at a time: the cache is per CPU, and the figures below are those of
//! one CPU's slot.

use std::{net::Ipv4Addr, time::Duration};

use aya::maps::{HashMap as AyaHashMap, MapData, PerCpuArray, PerCpuValues};
use flux_agent::enforce::maps::{Maps, Spec, Target};
use flux_common::{
    BlockEntry, Counter, DROP_CACHE_RECHECK, DropCacheSlot, MAP_BLOCKED_V4, MAP_DROP_CACHE_V4,
    drop_cache_slot,
};
use flux_tests::{
    frames::{DST4, udp4_between},
    privileged,
    xdp_harness::{Harness, XDP_DROP, XDP_PASS},
};

/// The blocked host of these tests, and the /24 an allowlist entry covers it with.
const HOST: [u8; 4] = [198, 51, 100, 7];
/// A host blocked beside it, which keeps their /24's front-filter bit set: without it an
/// unblock of HOST clears the bit, and the kernel passes HOST's packets before it reads the
/// cache at all.
const NEIGHBOUR: [u8; 4] = [198, 51, 100, 8];
/// A host alone in its /24.
const LONER: [u8; 4] = [203, 0, 113, 9];

/// Runs this thread on CPU 0 only, so that every run sees the same CPU's slots.
fn pin_to_one_cpu() {
    pin_to_cpu(0);
}

/// Runs this thread on CPU `cpu` only (a test run runs on its caller's CPU).
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity get valid
    // pointers to it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin the test to CPU {cpu}"
        );
    }
}

/// Two CPUs this thread may run on (before `setup` pins it). Fails, never skips, when there
/// are fewer: the machine and CI have two.
fn two_cpus() -> [usize; 2] {
    // SAFETY: a zeroed cpu_set_t is the empty set; sched_getaffinity fills it; CPU_ISSET reads
    // it.
    let allowed: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set),
            0,
            "read this thread's CPUs"
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &set))
            .collect()
    };
    match allowed[..] {
        [a, b, ..] => [a, b],
        _ => panic!("this test needs two CPUs, this thread may use {allowed:?}"),
    }
}

/// The drop-cache slots at `addr`'s index on `cpus`, as the kernel holds them.
fn slots(h: &Harness, addr: [u8; 4], cpus: [usize; 2]) -> [DropCacheSlot; 2] {
    let m: PerCpuArray<&MapData, DropCacheSlot> =
        PerCpuArray::try_from(h.loaded.ebpf.map(MAP_DROP_CACHE_V4).unwrap()).unwrap();
    let v = m.get(&drop_cache_slot(addr), 0).unwrap();
    cpus.map(|cpu| v[cpu])
}

/// The addresses of [`slots`] (`None`: an empty slot).
fn slot_addrs(h: &Harness, addr: [u8; 4], cpus: [usize; 2]) -> [Option<[u8; 4]>; 2] {
    slots(h, addr, cpus).map(|s| (s != DropCacheSlot::default()).then_some(s.addr))
}

/// A non-DNS UDP packet from `addr` to this host.
fn from(addr: [u8; 4]) -> Vec<u8> {
    udp4_between(addr, 443, DST4, 40000, &[0u8; 64])
}

fn ip(addr: [u8; 4]) -> Target {
    Target::Ip(Ipv4Addr::from(addr).into())
}

fn manual(ttl: Option<Duration>) -> Spec {
    Spec::manual(ttl, "drop cache test")
}

/// How many of `n` runs of `frame` were dropped.
fn drops(h: &mut Harness, frame: &[u8], n: u32) -> u32 {
    (0..n).map(|_| u32::from(h.run(frame).0 == XDP_DROP)).sum()
}

/// The entry's own hit count, as the map holds it (without the slot's pending drops).
fn raw_hits(maps: &Maps, addr: [u8; 4]) -> u64 {
    maps.get(&ip(addr)).unwrap().expect("blocked").hits
}

/// The hit count an operator sees (`blocklist list`, `describe`).
fn shown_hits(maps: &Maps, addr: [u8; 4]) -> u64 {
    maps.describe(&ip(addr)).unwrap().expect("blocked").hits
}

/// Removes `addr`'s exact block straight from the map, as bpftool would: past `Maps`, so the
/// verdict generation is not advanced.
fn raw_remove(h: &mut Harness, addr: [u8; 4]) {
    let mut m: AyaHashMap<&mut MapData, [u8; 4], BlockEntry> =
        AyaHashMap::try_from(h.loaded.ebpf.map_mut(MAP_BLOCKED_V4).unwrap()).unwrap();
    m.remove(&addr).unwrap();
}

/// An address of 10.0.0.0/12 whose drop-cache slot is HOST's.
fn sharing_hosts_slot() -> [u8; 4] {
    (1..1u32 << 20)
        .map(|i| (Ipv4Addr::from(0x0a00_0000 + i)).octets())
        .find(|a| drop_cache_slot(*a) == drop_cache_slot(HOST))
        .expect("an address sharing HOST's slot")
}

/// A loaded program and its maps, this thread pinned to one CPU; `None` when privileged tests
/// cannot run here (outside CI).
fn setup() -> Option<(Harness, Maps)> {
    if !privileged() {
        return None;
    }
    pin_to_one_cpu();
    let h = Harness::new(&[53]);
    let maps = h.maps();
    Some((h, maps))
}

#[test]
fn cached_drops_are_counted_and_every_change_through_maps_takes_effect_at_once() {
    let Some((mut h, mut maps)) = setup() else {
        return;
    };
    let frame = from(HOST);
    let t = ip(HOST);

    maps.block(&ip(NEIGHBOUR), &manual(None)).unwrap();
    maps.block(&t, &manual(None)).unwrap();
    let n = 2 * DROP_CACHE_RECHECK + 5;
    assert_eq!(drops(&mut h, &frame, n), n, "every packet dropped");
    // The first drop looked the address up and filled the slot; each look-up after
    // DROP_CACHE_RECHECK cached drops added them to the entry. The rest wait in the slot, and
    // what an operator sees counts them.
    let looked_up = 1 + (n - 1) / (DROP_CACHE_RECHECK + 1) * (DROP_CACHE_RECHECK + 1);
    assert_eq!(
        raw_hits(&maps, HOST),
        u64::from(looked_up),
        "hits in the entry"
    );
    assert!(looked_up < n, "some drops were the cache's");
    assert_eq!(shown_hits(&maps, HOST), u64::from(n), "every drop shown");
    let listed = maps.list().unwrap();
    let row = listed.iter().find(|l| l.value == "198.51.100.7").unwrap();
    assert_eq!(row.hits, u64::from(n), "list counts the cache's drops");

    // An unblock passes the very next packet, though the slot is filled and the front filter
    // still sends the address to it.
    maps.unblock(&t).unwrap();
    assert_eq!(
        maps.front_covers(&Ipv4Addr::from(HOST).into()).unwrap(),
        Some((true, true))
    );
    let (verdict, delta, _) = h.run(&frame);
    assert_eq!(verdict, XDP_PASS, "unblocked: passed at once ({delta:?})");

    // A permanent block, cached, written over with a short expiry: the expiry holds.
    maps.block(&t, &manual(None)).unwrap();
    assert_eq!(drops(&mut h, &frame, 3), 3);
    maps.block(&t, &manual(Some(Duration::from_millis(300))))
        .unwrap();
    assert_eq!(drops(&mut h, &frame, 2), 2, "live until it expires");
    std::thread::sleep(Duration::from_millis(400));
    let (verdict, delta, _) = h.run(&frame);
    assert_eq!(verdict, XDP_PASS, "expired: passed ({delta:?})");
    assert!(delta.contains(&(Counter::ExpiredBlock, 1)), "{delta:?}");
    // The drops the slot made before the expiry are the entry's.
    assert_eq!(raw_hits(&maps, HOST), 5, "hits carried into the entry");

    // An allowed CIDR over a cached block passes the next packet; taken out, the block is back.
    maps.block(&t, &manual(None)).unwrap();
    assert_eq!(drops(&mut h, &frame, 3), 3);
    let net = Target::Cidr(Ipv4Addr::new(198, 51, 100, 0).into(), 24);
    maps.allow(&net, "drop cache test").unwrap();
    let (verdict, delta, _) = h.run(&frame);
    assert_eq!(verdict, XDP_PASS, "allowed: passed at once");
    assert!(delta.contains(&(Counter::AllowedOverBlock, 1)), "{delta:?}");
    maps.unallow(&net).unwrap();
    assert_eq!(drops(&mut h, &frame, 2), 2, "the allowlist entry gone");
    assert_eq!(shown_hits(&maps, HOST), 5 + 3 + 2);

    // A host alone in its /24: unblocked, and its bit cleared by the next sweep, its packets
    // pass before the cache is read, so the slot keeps the drops it made. They leave with the block: a new
    // block of the same address starts from none.
    maps.block(&ip(LONER), &manual(None)).unwrap();
    assert_eq!(drops(&mut h, &from(LONER), 5), 5);
    maps.unblock(&ip(LONER)).unwrap();
    // The sweep's rebuild clears the bit of the /24 nothing is blocked in any more.
    maps.rebuild_front_if_stale().unwrap();
    assert_eq!(
        maps.front_covers(&Ipv4Addr::from(LONER).into()).unwrap(),
        Some((false, true))
    );
    assert_eq!(h.run(&from(LONER)).0, XDP_PASS);
    maps.block(&ip(LONER), &manual(None)).unwrap();
    assert_eq!(
        shown_hits(&maps, LONER),
        0,
        "the removed block's drops are gone"
    );
    assert_eq!(drops(&mut h, &from(LONER), 1), 1);
    assert_eq!(raw_hits(&maps, LONER), 1);
}

#[test]
fn a_removal_past_maps_costs_at_most_the_recheck_and_an_advance_ends_it() {
    let Some((mut h, mut maps)) = setup() else {
        return;
    };
    let frame = from(HOST);
    let t = ip(HOST);

    // Removed by bpftool, say: the slot drops what its re-check allows, then the lookup finds
    // nothing and the packets pass.
    maps.block(&t, &manual(None)).unwrap();
    assert_eq!(drops(&mut h, &frame, 1), 1, "slot filled");
    raw_remove(&mut h, HOST);
    let n = DROP_CACHE_RECHECK + 10;
    let stale = drops(&mut h, &frame, n);
    assert_eq!(
        stale, DROP_CACHE_RECHECK,
        "at most the re-check's drops after the removal"
    );
    assert_eq!(h.run(&frame).0, XDP_PASS, "and passed after");

    // The same removal followed by an advance (the agent's sweep does one a minute): passed
    // at once.
    maps.block(&t, &manual(None)).unwrap();
    assert_eq!(drops(&mut h, &frame, 2), 2);
    raw_remove(&mut h, HOST);
    maps.advance_verdict_generation().unwrap();
    assert_eq!(h.run(&frame).0, XDP_PASS, "advanced: passed at once");
}

#[test]
fn the_drops_of_an_evicted_slot_go_to_their_entry_and_the_cache_can_be_turned_off() {
    let Some((mut h, mut maps)) = setup() else {
        return;
    };
    // A second blocked host in the same slot as HOST.
    let other = sharing_hosts_slot();
    for a in [HOST, other] {
        maps.block(&ip(a), &manual(None)).unwrap();
    }
    assert_eq!(drops(&mut h, &from(HOST), 10), 10);
    assert_eq!(raw_hits(&maps, HOST), 1, "nine drops wait in the slot");
    // The other host takes the slot: HOST's waiting drops are added to its entry first.
    assert_eq!(drops(&mut h, &from(other), 1), 1);
    assert_eq!(raw_hits(&maps, HOST), 10, "flushed on eviction");
    assert_eq!(shown_hits(&maps, HOST), 10, "and not counted twice");
    assert_eq!(shown_hits(&maps, other), 1);

    // Off: every drop is looked up, and counted in the entry at once.
    maps.set_drop_cache(false).unwrap();
    assert_eq!(drops(&mut h, &from(other), 20), 20);
    assert_eq!(raw_hits(&maps, other), 21, "every drop looked up");
    assert_eq!(shown_hits(&maps, other), 21);
    // On again: the cache drops, and the count stays whole.
    maps.set_drop_cache(true).unwrap();
    assert_eq!(drops(&mut h, &from(other), 5), 5);
    assert_eq!(raw_hits(&maps, other), 22, "one lookup, four cached");
    assert_eq!(shown_hits(&maps, other), 26);
}

/// An unblock empties its address's slots only when no CPU's slot at that index holds another
/// address's drop or count, and never writes one back: the write copies each CPU's slot while
/// that CPU's program may be filling it, and another address's slot written back could be
/// torn into that address under the fill's current stamp (a drop of an address unblocked
/// since). A slot the kernel settled (no stamp, no count) is not in the way.
#[test]
fn an_unblock_never_writes_back_another_addresss_slot() {
    if !privileged() {
        return;
    }
    let [a, b] = two_cpus();
    let Some((mut h, mut maps)) = setup() else {
        return;
    };
    let other = sharing_hosts_slot();
    for x in [HOST, other] {
        maps.block(&ip(x), &manual(None)).unwrap();
    }
    // HOST's drops fill CPU a's slot, the other host's CPU b's, at the same index.
    pin_to_cpu(a);
    assert_eq!(drops(&mut h, &from(HOST), 3), 3);
    pin_to_cpu(b);
    assert_eq!(drops(&mut h, &from(other), 3), 3);
    assert_eq!(slot_addrs(&h, HOST, [a, b]), [Some(HOST), Some(other)]);

    let before = slots(&h, HOST, [a, b]);
    maps.unblock(&ip(HOST)).unwrap();
    assert_eq!(
        slots(&h, HOST, [a, b]),
        before,
        "another address's live slot: nothing written"
    );
    assert_eq!(h.run(&from(HOST)).0, XDP_PASS, "unblocked: passed at once");
    assert_eq!(
        shown_hits(&maps, other),
        3,
        "the other host's drops all shown"
    );

    // HOST's next packet on CPU a finds its block gone and settles the slot (no stamp, no
    // count, its address left). That no longer stands in the way of the other host's unblock,
    // which empties the index on every CPU.
    pin_to_cpu(a);
    assert_eq!(h.run(&from(HOST)).0, XDP_PASS);
    let [settled, _] = slots(&h, HOST, [a, b]);
    assert_eq!((settled.addr, settled.stamp, settled.pending), (HOST, 0, 0));
    maps.unblock(&ip(other)).unwrap();
    assert_eq!(slot_addrs(&h, HOST, [a, b]), [None, None]);
}

/// The kernel never serves 0.0.0.0 from the drop cache: a slot userspace empties while a CPU
/// fills it can be left torn with the fill's stamp and the zero address, and that must not drop
/// a DHCP client's packets. Such a slot is written here by hand, its /24 sent to the cache by a
/// block beside it.
#[test]
fn the_zero_address_is_never_dropped_from_the_cache() {
    let Some((mut h, mut maps)) = setup() else {
        return;
    };
    let zero = [0, 0, 0, 0];
    maps.block(&ip([0, 0, 0, 1]), &manual(None)).unwrap();
    let generation = maps.verdict_generation().unwrap().expect("a drop cache");
    {
        let mut m: PerCpuArray<&mut MapData, DropCacheSlot> =
            PerCpuArray::try_from(h.loaded.ebpf.map_mut(MAP_DROP_CACHE_V4).unwrap()).unwrap();
        let i = drop_cache_slot(zero);
        let mut values = m.get(&i, 0).unwrap().to_vec();
        // CPU 0's (the thread's), with the stamp the kernel gives a slot filled under this
        // generation.
        values[0] = DropCacheSlot {
            stamp: generation + 1,
            ..DropCacheSlot::default()
        };
        m.set(i, PerCpuValues::try_from(values).unwrap(), 0)
            .unwrap();
    }
    assert_eq!(h.run(&from(zero)).0, XDP_PASS, "0.0.0.0 is not blocked");
    assert_eq!(drops(&mut h, &from([0, 0, 0, 1]), 1), 1, "its neighbour is");
}

/// The first address of a pair that can be blocked is asked of the cache before the pair's
/// lookups (`xdp_verdict::address_verdict_v4`): the source when its front-filter bit is set,
/// else the destination. Each way, a cached drop is counted as the source's or the
/// destination's as the lookup would count it, and its hits go to the entry that blocked.
#[test]
fn a_cached_destination_is_dropped_as_the_destinations_and_the_source_goes_first() {
    let Some((mut h, mut maps)) = setup() else {
        return;
    };
    // Clear /24s: 192.0.2.0/24 holds nothing blocked. Set but unblocked: 198.51.100.9, beside
    // NEIGHBOUR.
    let clear_src = [192, 0, 2, 1];
    let set_src = [198, 51, 100, 9];
    maps.block(&ip(NEIGHBOUR), &manual(None)).unwrap();
    maps.block(&ip(LONER), &manual(None)).unwrap();
    let n = 2 * DROP_CACHE_RECHECK + 5;
    for (src, what) in [
        (clear_src, "from a clear /24"),
        (set_src, "from an unblocked address of a set /24"),
    ] {
        let to_loner = udp4_between(src, 40000, LONER, 443, &[0u8; 64]);
        let before = shown_hits(&maps, LONER);
        for i in 0..n {
            let (verdict, delta, _) = h.run(&to_loner);
            assert_eq!(verdict, XDP_DROP, "{what}: packet {i} dropped");
            assert_eq!(
                delta,
                vec![(Counter::PacketsSeen, 1), (Counter::DropBlockedDst, 1)],
                "{what}: packet {i} counted as the destination's"
            );
        }
        assert_eq!(shown_hits(&maps, LONER), before + u64::from(n), "{what}");
        assert!(
            raw_hits(&maps, LONER) < before + u64::from(n),
            "{what}: some drops were the cache's"
        );
    }

    // Both ends blocked: the source's drop, from the cache too, and the hits are its own.
    let both = udp4_between(NEIGHBOUR, 40000, LONER, 443, &[0u8; 64]);
    let loner_hits = shown_hits(&maps, LONER);
    for i in 0..n {
        let (verdict, delta, _) = h.run(&both);
        assert_eq!(verdict, XDP_DROP);
        assert_eq!(
            delta,
            vec![(Counter::PacketsSeen, 1), (Counter::DropBlockedSrc, 1)],
            "packet {i} counted as the source's"
        );
    }
    assert_eq!(shown_hits(&maps, NEIGHBOUR), u64::from(n));
    assert!(raw_hits(&maps, NEIGHBOUR) < u64::from(n), "cached drops");
    assert_eq!(
        shown_hits(&maps, LONER),
        loner_hits,
        "none the destination's"
    );
}
