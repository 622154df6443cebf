//! The untagged IPv4 way through `flux_xdp`'s stage one (`front_door` in flux-ebpf/src/main.rs)
//! against the general walk (`walk_to_l3`), through the real, verified program
//! (BPF_PROG_TEST_RUN): every frame below is run as it is and again behind one VLAN tag, which
//! only the general walk takes (each way first on every other frame), and the two runs must
//! agree on the verdict, every counter that moved, the hits of each exact block and the record
//! written (all but its tag fields). The frames are the door's edges: cut at every length, IP
//! lengths, fragments, header lengths, protocols and ports, each with nobody blocked, the
//! source or the destination blocked through `Maps` (the front filter ready, with the bit set),
//! a neighbour of the source blocked (the bit set, the address not blocked), an allowlisted
//! blocked source, a source in another /24 blocked, and blocks written past `Maps` (the filter
//! not ready); and each from a second source, in another /24 than the destination.

use std::net::{IpAddr, Ipv4Addr};

use flux_agent::{
    enforce::maps::{Spec, Target},
    kernel::ring_records::Capture,
};
use flux_common::{MAP_BLOCKED_V4, SOURCE_MANUAL};
use flux_tests::{
    frames::*,
    privileged,
    xdp_harness::{Harness, Ran},
};

/// A /24 neighbour of `SRC4`: blocked, it sets the source's front-filter bit without blocking
/// the source.
const NEIGHBOUR: [u8; 4] = [SRC4[0], SRC4[1], SRC4[2], SRC4[3] ^ 1];
/// A source in another /24 than `DST4` (`SRC4` and `DST4` share one, and so one filter bit):
/// every edge frame is also run from it, so that a door that read one address's bit for both,
/// or cleared a pair when either bit is clear, lets a blocked address through and differs.
const FAR: [u8; 4] = [198, 51, 100, 7];

/// Byte offsets in an untagged IPv4 frame.
const TOT_LEN: usize = ETH + 2;
const FRAG: usize = ETH + 6;
const PROTO: usize = ETH + 9;
const SADDR: usize = ETH + 12;

/// What must be equal between the two ways' records: everything but the tag fields (and the
/// timestamp, the kernel's clock at each run).
#[derive(Debug, PartialEq)]
struct Comparable {
    data: Vec<u8>,
    ifindex: u32,
    lens: (u16, u16),
    addrs: ([u8; 16], [u8; 16]),
    ports: (u16, u16),
    family: u8,
    transport: u8,
    flags: u8,
}

fn comparable(c: &Capture) -> Comparable {
    let h = &c.header;
    Comparable {
        data: c.data.to_vec(),
        ifindex: h.ifindex,
        lens: (h.dns_len, h.cap_len),
        addrs: (h.src_addr, h.dst_addr),
        ports: (h.src_port, h.dst_port),
        family: h.family,
        transport: h.transport,
        flags: h.flags,
    }
}

/// The frames at the door's edges, by name.
fn edge_frames() -> Vec<(String, Vec<u8>)> {
    let msg = dns_response(60);
    let bases = [
        ("udp from 53", udp4(53, &msg)),
        ("udp from 5353", udp4(5353, &msg)),
        ("udp from 8080", udp4(8080, &msg)),
        ("tcp from 53", tcp4(53, &tcp_dns(&msg, msg.len() as u16))),
        ("tcp from 443", tcp4(443, &msg)),
        ("tcp from 443, no payload", tcp4(443, &[])),
    ];
    let mut out = Vec::new();
    for (name, f) in bases {
        out.push((name.to_string(), f.clone()));
        // Cut at every length from the Ethernet header on, with the IP total length as built
        // (past the frame's end) and set to what is left (the headers behind it cut short):
        // the door's one bounds check and every check behind it.
        for len in ETH..f.len() {
            out.push((format!("{name}, cut to {len}"), f[..len].to_vec()));
            if len >= TOT_LEN + 2 {
                let mut g = f[..len].to_vec();
                g[TOT_LEN..TOT_LEN + 2].copy_from_slice(&((len - ETH) as u16).to_be_bytes());
                out.push((
                    format!("{name}, cut to {len}, total length {}", len - ETH),
                    g,
                ));
            }
        }
        let tot = usize::from(u16::from_be_bytes([f[TOT_LEN], f[TOT_LEN + 1]]));
        for claimed in [0, 19, 20, 27, 28, tot - 1, tot + 1, 0xffff] {
            let mut g = f.clone();
            g[TOT_LEN..TOT_LEN + 2].copy_from_slice(&(claimed as u16).to_be_bytes());
            out.push((format!("{name}, total length {claimed}"), g));
        }
        for (what, frag) in [
            ("more fragments", 0x2000u16),
            ("offset 1", 0x0001),
            ("offset 1 and more", 0x2001),
            ("don't fragment", 0x4000),
            ("offset 8191", 0x1fff),
        ] {
            let mut g = f.clone();
            g[FRAG..FRAG + 2].copy_from_slice(&frag.to_be_bytes());
            out.push((format!("{name}, {what}"), g));
        }
        for version_ihl in [0x44u8, 0x46, 0x4f, 0x55, 0x65, 0x05] {
            let mut g = f.clone();
            g[ETH] = version_ihl;
            out.push((format!("{name}, version/ihl {version_ihl:#04x}"), g));
        }
        out.push((format!("{name}, one option word"), with_ipv4_options(&f, 1)));
        for proto in [0u8, 1, 6, 17, 47, 255] {
            let mut g = f.clone();
            g[PROTO] = proto;
            out.push((format!("{name}, protocol {proto}"), g.clone()));
            // Neither UDP nor TCP, and yet counted when the IP header is wrong.
            let mut h = g.clone();
            h[FRAG..FRAG + 2].copy_from_slice(&1u16.to_be_bytes());
            out.push((format!("{name}, protocol {proto}, offset 1"), h));
            let mut h = g;
            h[TOT_LEN..TOT_LEN + 2].copy_from_slice(&0xffffu16.to_be_bytes());
            out.push((format!("{name}, protocol {proto}, total length 65535"), h));
        }
    }
    // Each IPv4 frame again from `FAR`.
    let from_far: Vec<(String, Vec<u8>)> = out
        .iter()
        .filter(|(_, f)| f.len() >= SADDR + 4)
        .map(|(name, f)| {
            let mut g = f.clone();
            g[SADDR..SADDR + 4].copy_from_slice(&FAR);
            (format!("{name}, from {}", Ipv4Addr::from(FAR)), g)
        })
        .collect();
    out.extend(from_far);
    // Ethernet types the door leaves alone.
    let mut arp = udp4(8080, &msg);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    out.push(("arp type".into(), arp));
    out.push(("ipv6 udp from 53".into(), udp6(53, &msg)));
    out.push(("ipv6 udp from 8080".into(), udp6(8080, &msg)));
    out
}

/// The hits each of `blocked` holds (entry and drop cache, `Harness::v4_hits`).
fn hits(h: &mut Harness, blocked: &[[u8; 4]]) -> Vec<u64> {
    blocked.iter().map(|a| h.v4_hits(*a)).collect()
}

/// Runs every edge frame as it is and behind one tag, and asserts the two runs agree, on the
/// hits of each exact block in `blocked` too (a way that counted a drop twice, or not at all,
/// differs there).
fn agree(h: &mut Harness, state: &str, blocked: &[[u8; 4]]) -> usize {
    let mut dropped = 0;
    for (n, (name, frame)) in edge_frames().into_iter().enumerate() {
        // Each way goes first on every other frame: the second run of a blocked address is
        // served by the drop cache the first filled, and each way's own lookup must be
        // compared too.
        let tagged_frame = with_vlans(&frame, &[(0x8100, 7)]);
        let plain_first = n % 2 == 0;
        let before = hits(h, blocked);
        let first: Ran = h.run_out(if plain_first { &frame } else { &tagged_frame });
        let between = hits(h, blocked);
        let second: Ran = h.run_out(if plain_first { &tagged_frame } else { &frame });
        let after = hits(h, blocked);
        let (plain, tagged) = if plain_first {
            (first, second)
        } else {
            (second, first)
        };
        for (k, addr) in blocked.iter().enumerate() {
            assert_eq!(
                between[k] - before[k],
                after[k] - between[k],
                "{state}: {name}: hits of {}",
                Ipv4Addr::from(*addr)
            );
        }
        assert_eq!(plain.verdict, tagged.verdict, "{state}: {name}: verdict");
        assert_eq!(plain.delta, tagged.delta, "{state}: {name}: counters");
        assert_eq!(
            plain.events.iter().map(comparable).collect::<Vec<_>>(),
            tagged.events.iter().map(comparable).collect::<Vec<_>>(),
            "{state}: {name}: records"
        );
        for ev in &tagged.events {
            assert_eq!(ev.vlans(), vec![7], "{state}: {name}: the tag is recorded");
        }
        dropped += usize::from(plain.verdict == flux_tests::xdp_harness::XDP_DROP);
    }
    dropped
}

fn ip(a: [u8; 4]) -> Target {
    Target::Ip(IpAddr::V4(Ipv4Addr::from(a)))
}

#[test]
fn the_untagged_way_agrees_with_the_general_walk() {
    if !privileged() {
        return;
    }
    for mut h in [Harness::new(&[53, 5353]), Harness::matching_queries()] {
        let mut maps = h.maps();
        let manual = Spec::manual(None, "untagged way test");

        assert_eq!(agree(&mut h, "nobody blocked", &[]), 0);

        maps.block(&ip(NEIGHBOUR), &manual).unwrap();
        assert_eq!(
            agree(&mut h, "a neighbour of the source blocked", &[NEIGHBOUR]),
            0,
            "the bit is set, the source is not blocked"
        );

        maps.block(&ip(SRC4), &manual).unwrap();
        let dropped = agree(&mut h, "the source blocked", &[NEIGHBOUR, SRC4]);
        assert!(dropped > 0, "the source's frames are dropped");

        let host_route = Target::cidr(&format!("{}/32", Ipv4Addr::from(SRC4))).unwrap();
        maps.allow(&host_route, "untagged way test").unwrap();
        assert_eq!(agree(&mut h, "the blocked source allowlisted", &[SRC4]), 0);
        assert!(maps.unallow(&host_route).unwrap());
        assert!(maps.unblock(&ip(SRC4)).unwrap());

        maps.block(&ip(DST4), &manual).unwrap();
        assert!(agree(&mut h, "the destination blocked", &[DST4]) > 0);
        assert!(maps.unblock(&ip(DST4)).unwrap());

        maps.block(&ip(FAR), &manual).unwrap();
        assert!(agree(&mut h, "a source in another /24 blocked", &[FAR]) > 0);
        assert!(maps.unblock(&ip(FAR)).unwrap());

        // Written past `Maps`: the front filter is turned off, and every address looked up.
        h.blocked::<[u8; 4]>(MAP_BLOCKED_V4)
            .insert(SRC4, flux_common::BlockEntry::new(SOURCE_MANUAL, 0), 0)
            .unwrap();
        assert!(agree(&mut h, "the source blocked, the filter not ready", &[SRC4]) > 0);
    }
}
