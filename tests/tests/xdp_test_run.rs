//! BPF_PROG_TEST_RUN: crafted frames through the real, verified `flux_xdp` program (and, at the
//! end, the `flux_egress` TC program). Each case
//! asserts the verdict, the counters that moved, and the ring-buffer record. Frames nobody
//! blocked always pass; the blocklist cases drop.

use aya::maps::{MapData, lpm_trie::Key};
use flux_agent::{
    enforce::maps::{self, Spec, Target, boot_ns},
    kernel::loader::{self, LoadOptions},
    kernel::ring_records::Capture,
    pipeline::clock::record_clock_ns,
};
use flux_common::{
    BlockEntry, Counter, DNS_CAPTURE_MAX, DnsEventHeader, EVENT_FLAG_BLOCKED,
    EVENT_FLAG_IP_FRAGMENT, MAP_ALLOWED_CIDR_V4, MAP_BLOCKED_CIDR_V4, MAP_BLOCKED_CIDR_V6,
    MAP_BLOCKED_V4, MAP_BLOCKED_V6, MAP_COUNTERS, PROG_XDP, PROG_XDP_BOUNCE, PROG_XDP_FLOOR,
    PROG_XDP_FLOOR_RECORD, RECORD_SIZES, RING_BUF_BYTES, SOURCE_MANUAL,
};
use flux_tests::{
    PinDir,
    frames::*,
    privileged,
    xdp_harness::{Harness, Ran, TC_NEXT, TC_SHOT, XDP_DROP, XDP_PASS},
};

#[test]
fn captures_well_formed_responses() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let msg = dns_response(200);

    let ev = h.check("udp4", &udp4(53, &msg), &[Counter::ResponsesCaptured]);
    let c = &ev[0];
    assert_eq!(&c.data[..], &msg[..]);
    assert_eq!(c.header.dns_len as usize, msg.len());
    assert_eq!(c.header.cap_len as usize, msg.len());
    assert_eq!(c.src().to_string(), "192.0.2.53");
    assert_eq!(c.dst().to_string(), "192.0.2.1");
    assert_eq!((c.header.src_port, c.header.dst_port), (53, 40000));
    assert!(!c.truncated());
    assert!(c.vlans().is_empty());

    let ev = h.check("udp6", &udp6(53, &msg), &[Counter::ResponsesCaptured]);
    assert_eq!(ev[0].src().to_string(), "2001:db8::53");
    assert_eq!(&ev[0].data[..], &msg[..]);

    let ev = h.check(
        "tcp4",
        &tcp4(53, &tcp_dns(&msg, msg.len() as u16)),
        &[Counter::ResponsesCaptured],
    );
    assert_eq!(&ev[0].data[..], &msg[..]);
    assert_eq!(ev[0].transport(), flux_detect::dns::Transport::Tcp);

    let ev = h.check(
        "802.1Q",
        &with_vlans(&udp4(53, &msg), &[(0x8100, 42)]),
        &[Counter::ResponsesCaptured],
    );
    assert_eq!(ev[0].vlans(), vec![42]);
    let ev = h.check(
        "802.1ad + 802.1Q",
        &with_vlans(&udp4(53, &msg), &[(0x88a8, 7), (0x8100, 4095)]),
        &[Counter::ResponsesCaptured],
    );
    assert_eq!(ev[0].vlans(), vec![7, 4095]);
    // A third tag is more than a record holds: passed, counted, not captured.
    h.check(
        "three tags",
        &with_vlans(&udp4(53, &msg), &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)]),
        &[Counter::VlanTooDeep],
    );

    for words in [1, 4, 10] {
        let ev = h.check(
            "ipv4 options",
            &with_ipv4_options(&udp4(53, &msg), words),
            &[Counter::ResponsesCaptured],
        );
        assert_eq!(&ev[0].data[..], &msg[..]);
    }

    let f = with_ipv6_ext(
        &udp6(53, &msg),
        &[
            (0, ipv6_opts_hdr()),
            (60, ipv6_opts_hdr()),
            (44, ipv6_frag_hdr(0, false)),
        ],
    );
    let ev = h.check("ipv6 hbh+dst+frag", &f, &[Counter::ResponsesCaptured]);
    assert_eq!(&ev[0].data[..], &msg[..]);
}

/// The record holds exactly the message, at every length the program copies itself (the
/// smallest record, in blocks of four words, `copy_words` in flux-ebpf's `main.rs`) and a
/// little past it (the helper), whatever the length's remainder by 32 and by 8 and wherever
/// the message starts (42 bytes in; 46 behind a tag, 6 past a multiple of 8 rather than 2;
/// behind IPv4 options, a TCP length prefix, or 400 bytes of IPv6 extension headers); ending
/// at the frame's end, or followed by bytes that are not the message's (a UDP length shorter
/// than the datagram), which must not reach the record.
#[test]
fn records_hold_the_message_at_every_length() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let smallest = flux_common::RECORD_DATA[0];
    // Every byte after the question distinct from its neighbours, so that a word copied to the
    // wrong place, or a byte of the frame past the message, shows.
    let mut full = dns_response(smallest + 64);
    for (i, b) in full.iter_mut().enumerate().skip(24) {
        *b = (i * 7 + 3) as u8;
    }
    for len in flux_common::DNS_HEADER_LEN..=smallest + 9 {
        let msg = &full[..len];
        let deep6 = with_ipv6_ext(
            &udp6(53, msg),
            &[(60, ipv6_opts_hdr_200()), (60, ipv6_opts_hdr_200())],
        );
        let cases: [(&str, Vec<u8>); 6] = [
            ("udp4", udp4(53, msg)),
            ("udp6", udp6(53, msg)),
            ("udp4, one tag", with_vlans(&udp4(53, msg), &[(0x8100, 5)])),
            (
                "udp4, 10 option words",
                with_ipv4_options(&udp4(53, msg), 10),
            ),
            ("tcp4", tcp4(53, &tcp_dns(msg, len as u16))),
            // The message 470 bytes in, near the deepest a DNS header is looked for (512).
            (
                "udp6, two tags, 400 bytes of extension headers",
                with_vlans(&deep6, &[(0x88a8, 1), (0x8100, 2)]),
            ),
        ];
        for (name, frame) in cases {
            // Under 24 bytes the question is cut short; no name is walked (none is blocked),
            // and the message is captured all the same.
            let ev = h.check(
                &format!("{name}, {len} bytes"),
                &frame,
                &[Counter::ResponsesCaptured],
            );
            assert_eq!(&ev[0].data[..], msg, "{name}, {len} bytes");
            assert_eq!(ev[0].header.cap_len as usize, len);
        }
        // The same message with 40 more bytes in the datagram than UDP says: not captured.
        let mut f = udp4(53, &full[..len + 40]);
        f[ETH + IP4 + 4..ETH + IP4 + 6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
        let ev = h.check(
            &format!("udp4, {len} bytes and 40 more"),
            &f,
            &[Counter::ResponsesCaptured],
        );
        assert_eq!(&ev[0].data[..], msg, "{len} bytes and 40 more");
    }
}

#[test]
fn long_and_fragmented_responses_are_truncated_and_flagged() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let big = dns_response(DNS_CAPTURE_MAX + 100);
    let ev = h.check(
        "over capture size",
        &udp4(53, &big),
        &[Counter::ResponsesCaptured, Counter::TruncatedCaptures],
    );
    assert!(ev[0].truncated());
    assert_eq!(ev[0].header.cap_len as usize, DNS_CAPTURE_MAX);
    assert_eq!(ev[0].header.dns_len as usize, big.len());
    assert_eq!(&ev[0].data[..], &big[..DNS_CAPTURE_MAX]);

    // First IPv4 fragment: MF set, UDP length covers the whole datagram.
    let msg = dns_response(600);
    let mut f = udp4(53, &msg);
    f.truncate(ETH + IP4 + 8 + 400);
    let tot = (IP4 + 8 + 400) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
    f[ETH + 6] = 0x20; // MF
    fix_ipv4_checksum(&mut f, ETH);
    let ev = h.check(
        "first fragment",
        &f,
        &[Counter::ResponsesCaptured, Counter::TruncatedCaptures],
    );
    assert_eq!(ev[0].header.cap_len, 400);
    assert_ne!(ev[0].header.flags & EVENT_FLAG_IP_FRAGMENT, 0);

    // A first fragment that carries fewer bytes than a UDP header, the whole datagram still in
    // the frame behind it: malformed, and nothing past the fragment's IP length is read (the
    // length of what it carries once wrapped round below zero, and the message was captured
    // from the bytes that follow the fragment).
    let mut f = udp4(53, &msg);
    f[ETH + 2..ETH + 4].copy_from_slice(&((IP4 + 4) as u16).to_be_bytes());
    f[ETH + 6] = 0x20; // MF
    fix_ipv4_checksum(&mut f, ETH);
    h.check("ipv4 first fragment of 4 bytes", &f, &[Counter::Malformed]);
    let mut f = with_ipv6_ext(&udp6(53, &msg), &[(44, ipv6_frag_hdr(0, true))]);
    f[ETH + 4..ETH + 6].copy_from_slice(&(8u16 + 4).to_be_bytes());
    h.check("ipv6 first fragment of 4 bytes", &f, &[Counter::Malformed]);

    // Non-first fragments are passed untouched and counted.
    let mut f = udp4(53, &msg);
    f[ETH + 6..ETH + 8].copy_from_slice(&0x0010u16.to_be_bytes());
    fix_ipv4_checksum(&mut f, ETH);
    h.check("ipv4 non-first fragment", &f, &[Counter::NonFirstFragments]);
    let f = with_ipv6_ext(&udp6(53, &msg), &[(44, ipv6_frag_hdr(185, false))]);
    h.check("ipv6 non-first fragment", &f, &[Counter::NonFirstFragments]);
}

#[test]
fn headers_cut_short_at_every_layer() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let msg = dns_response(100);
    let v4 = udp4(53, &msg);
    let v6 = udp6(53, &msg);
    let t4 = tcp4(53, &tcp_dns(&msg, msg.len() as u16));

    // Frames under 14 bytes: BPF_PROG_TEST_RUN refuses them (EINVAL), and no driver delivers
    // them, so the Ethernet layer is exercised by a frame that stops right after it.
    h.check("ethernet only", &v4[..ETH], &[Counter::Malformed]);
    h.check(
        "vlan tag",
        &with_vlans(&v4, &[(0x8100, 1)])[..16],
        &[Counter::Malformed],
    );
    h.check("ipv4 header", &v4[..ETH + 10], &[Counter::Malformed]);
    h.check("ipv6 header", &v6[..ETH + 30], &[Counter::Malformed]);
    // Cut inside L4 or DNS: the IP header now claims more than the frame holds.
    h.check("udp header", &v4[..ETH + IP4 + 4], &[Counter::Malformed]);
    h.check(
        "dns header",
        &v4[..ETH + IP4 + 8 + 6],
        &[Counter::Malformed],
    );
    h.check("tcp header", &t4[..ETH + IP4 + 10], &[Counter::Malformed]);
    h.check("ipv6 udp", &v6[..ETH + IP6 + 4], &[Counter::Malformed]);

    let mut f = v4.clone();
    f[ETH] = 0x44; // IHL 4 < 5
    h.check("ipv4 ihl < 5", &f, &[Counter::Malformed]);
    let mut f = v4.clone();
    f[ETH] = 0x65; // version 6 in an IPv4 ethertype
    h.check("ipv4 wrong version", &f, &[Counter::Malformed]);
    let ext_cut = with_ipv6_ext(&v6, &[(0, ipv6_opts_hdr())]);
    let mut f = ext_cut.clone();
    f[ETH + IP6 + 1] = 200; // hop-by-hop claims 1608 bytes
    h.check(
        "ipv6 ext header length past the end",
        &f,
        &[Counter::Malformed],
    );
    let deep: Vec<(u8, Vec<u8>)> = (0..7).map(|_| (60, ipv6_opts_hdr())).collect();
    h.check(
        "ipv6 seven ext headers",
        &with_ipv6_ext(&v6, &deep),
        &[Counter::Ipv6ExtTooDeep],
    );
    let mut f = t4.clone();
    f[ETH + IP4 + 12] = 0x40; // TCP data offset 16 < 20
    h.check("tcp doff < 5", &f, &[Counter::Malformed]);
}

#[test]
fn dns_lengths_that_lie() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let msg = dns_response(100);

    let mut f = udp4(53, &msg);
    let udp_len = (8 + msg.len() + 50) as u16;
    f[ETH + IP4 + 4..ETH + IP4 + 6].copy_from_slice(&udp_len.to_be_bytes());
    h.check("udp length past ip payload", &f, &[Counter::Malformed]);

    let mut f = udp4(53, &msg);
    f[ETH + IP4 + 4..ETH + IP4 + 6].copy_from_slice(&4u16.to_be_bytes());
    h.check("udp length < 8", &f, &[Counter::Malformed]);

    let mut f = udp4(53, &msg);
    f[ETH + IP4 + 4..ETH + IP4 + 6].copy_from_slice(&(8u16 + 6).to_be_bytes());
    h.check(
        "udp length leaves no dns header",
        &f,
        &[Counter::NotDnsResponse],
    );

    // A shorter UDP length than the packet (trailing bytes): capture what UDP says.
    let mut f = udp4(53, &msg);
    let short = (8 + msg.len() - 16) as u16;
    f[ETH + IP4 + 4..ETH + IP4 + 6].copy_from_slice(&short.to_be_bytes());
    let ev = h.check("udp shorter than ip", &f, &[Counter::ResponsesCaptured]);
    assert_eq!(ev[0].header.cap_len as usize, msg.len() - 16);

    let mut f = udp4(53, &msg);
    let tot = (IP4 + 8 + msg.len() + 100) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
    fix_ipv4_checksum(&mut f, ETH);
    h.check("ipv4 total length past frame", &f, &[Counter::Malformed]);

    let mut f = udp6(53, &msg);
    f[ETH + 4..ETH + 6].copy_from_slice(&((8 + msg.len() + 100) as u16).to_be_bytes());
    h.check("ipv6 payload length past frame", &f, &[Counter::Malformed]);

    h.check(
        "tcp prefix longer than segment",
        &tcp4(53, &tcp_dns(&msg, msg.len() as u16 + 1)),
        &[Counter::TcpNotWholeMessage],
    );
    h.check(
        "tcp prefix too short for a header",
        &tcp4(53, &tcp_dns(&msg, 5)),
        &[Counter::NotDnsResponse],
    );
    h.check(
        "tcp segment of 3 bytes",
        &tcp4(53, &[0, 40, 1]),
        &[Counter::TcpNotWholeMessage],
    );
    // Two messages in one segment: the first is captured whole.
    let mut two = tcp_dns(&msg, msg.len() as u16);
    two.extend(tcp_dns(&msg, msg.len() as u16));
    let ev = h.check(
        "two messages in a segment",
        &tcp4(53, &two),
        &[Counter::ResponsesCaptured],
    );
    assert_eq!(&ev[0].data[..], &msg[..]);
}

#[test]
fn non_dns_traffic_is_passed_and_not_captured() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let msg = dns_response(100);
    h.check("udp from another port", &udp4(5353, &msg), &[]);
    h.check(
        "udp to port 53 (a query direction)",
        &udp4(40000, &msg),
        &[],
    );
    h.check(
        "dns query from port 53",
        &udp4(53, &dns_query()),
        &[Counter::NotDnsResponse],
    );
    h.check("tcp ack without payload", &tcp4(53, &[]), &[]);
    let mut arp = udp4(53, &msg);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    h.check("arp", &arp, &[]);
    let mut icmp = udp4(53, &msg);
    icmp[ETH + 9] = 1;
    fix_ipv4_checksum(&mut icmp, ETH);
    h.check("icmp", &icmp, &[]);
    let mut garbage = msg.clone();
    garbage[2] = 0x80 | (2 << 3); // opcode STATUS
    h.check(
        "unknown opcode",
        &udp4(53, &garbage),
        &[Counter::NotDnsResponse],
    );
}

#[test]
fn dns_ports_are_set_at_load_time() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[5300, 853]);
    let msg = dns_response(100);
    h.check("port 53 not configured", &udp4(53, &msg), &[]);
    h.check(
        "port 5300",
        &udp4(5300, &msg),
        &[Counter::ResponsesCaptured],
    );
    h.check(
        "port 853 tcp",
        &tcp4(853, &tcp_dns(&msg, msg.len() as u16)),
        &[Counter::ResponsesCaptured],
    );
}

/// All eight port slots in use: the program keeps one compare per configured port (the verifier
/// prunes the rest), so the last slot must still be reached, and a port in none still passes.
#[test]
fn every_configured_dns_port_is_captured() {
    if !privileged() {
        return;
    }
    let ports = [5300, 853, 1053, 2053, 3053, 4053, 5053, 8053];
    let mut h = Harness::new(&ports);
    let msg = dns_response(100);
    for port in ports {
        h.check(
            &format!("port {port}"),
            &udp4(port, &msg),
            &[Counter::ResponsesCaptured],
        );
    }
    h.check("port 53, not among them", &udp4(53, &msg), &[]);
    h.check("port 9053, not among them", &udp4(9053, &msg), &[]);
}

fn block_entry(expires_ns: u64) -> BlockEntry {
    BlockEntry::new(SOURCE_MANUAL, expires_ns)
}

#[test]
fn blocklists_drop_and_the_allowlist_wins() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let msg = dns_response(200);
    // udp4: 192.0.2.53 -> 192.0.2.1; udp6: 2001:db8::53 -> 2001:db8::1.
    let v4 = udp4(53, &msg);
    let v6 = udp6(53, &msg);
    let other = udp4(53, &msg);

    // An exact IPv4 source.
    {
        let mut m = h.blocked::<[u8; 4]>(MAP_BLOCKED_V4);
        m.insert([192, 0, 2, 53], block_entry(0), 0).unwrap();
    }
    let (verdict, delta, events) = h.run(&v4);
    assert_eq!(verdict, XDP_DROP, "blocked source");
    assert!(delta.contains(&(Counter::DropBlockedSrc, 1)), "{delta:?}");
    assert!(events.is_empty(), "a dropped packet is not captured");
    assert_eq!(h.v4_hits([192, 0, 2, 53]), 1, "hit counted");

    // Allowed CIDR covering it: passes, counted.
    {
        let mut a = h.trie::<[u8; 4], u32>(MAP_ALLOWED_CIDR_V4);
        a.insert(&Key::new(24, [192, 0, 2, 0]), 1, 0).unwrap();
    }
    let (verdict, delta, _) = h.run(&v4);
    assert_eq!(verdict, XDP_PASS, "allowlist wins");
    assert!(delta.contains(&(Counter::AllowedOverBlock, 1)), "{delta:?}");
    {
        let mut a = h.trie::<[u8; 4], u32>(MAP_ALLOWED_CIDR_V4);
        a.remove(&Key::new(24, [192, 0, 2, 0])).unwrap();
        let mut m = h.blocked::<[u8; 4]>(MAP_BLOCKED_V4);
        m.remove(&[192, 0, 2, 53]).unwrap();
    }
    h.check("unblocked", &other, &[Counter::ResponsesCaptured]);

    // An expired entry does not block.
    {
        let mut m = h.blocked::<[u8; 4]>(MAP_BLOCKED_V4);
        m.insert([192, 0, 2, 1], block_entry(boot_ns() - 1), 0)
            .unwrap();
    }
    let (verdict, delta, _) = h.run(&v4);
    assert_eq!(verdict, XDP_PASS, "expired");
    assert!(delta.contains(&(Counter::ExpiredBlock, 1)), "{delta:?}");
    // Refreshed, the same entry blocks the destination.
    {
        let mut m = h.blocked::<[u8; 4]>(MAP_BLOCKED_V4);
        m.insert(
            [192, 0, 2, 1],
            block_entry(boot_ns() + 3_600_000_000_000),
            0,
        )
        .unwrap();
    }
    let (verdict, delta, _) = h.run(&v4);
    assert_eq!(verdict, XDP_DROP, "blocked destination");
    assert!(delta.contains(&(Counter::DropBlockedDst, 1)), "{delta:?}");
    {
        let mut m = h.blocked::<[u8; 4]>(MAP_BLOCKED_V4);
        m.remove(&[192, 0, 2, 1]).unwrap();
    }

    // A blocked IPv4 CIDR, and an IPv4 fragment from inside it (no L4 header to hide behind).
    {
        let mut c = h.trie::<[u8; 4], BlockEntry>(MAP_BLOCKED_CIDR_V4);
        c.insert(&Key::new(16, [192, 0, 0, 0]), block_entry(0), 0)
            .unwrap();
    }
    let (verdict, _, _) = h.run(&v4);
    assert_eq!(verdict, XDP_DROP, "blocked CIDR");
    let mut frag = udp4(53, &msg);
    frag[ETH + 6..ETH + 8].copy_from_slice(&0x0010u16.to_be_bytes());
    fix_ipv4_checksum(&mut frag, ETH);
    let (verdict, delta, _) = h.run(&frag);
    assert_eq!(verdict, XDP_DROP, "non-first fragment from a blocked CIDR");
    assert!(delta.contains(&(Counter::DropBlockedSrc, 1)), "{delta:?}");
    {
        // Both drops counted on the CIDR entry: the kernel writes hits through the writable
        // pointer of the trie lookup.
        let c = h.trie::<[u8; 4], BlockEntry>(MAP_BLOCKED_CIDR_V4);
        let e = c.get(&Key::new(32, [192, 0, 2, 53]), 0).unwrap();
        assert_eq!(e.hits, 2, "CIDR hits counted");
    }
    h.check("IPv6 is not affected", &v6, &[Counter::ResponsesCaptured]);

    // IPv6: exact address, then a /32.
    {
        let mut m = h.blocked::<[u8; 16]>(MAP_BLOCKED_V6);
        let ip: std::net::Ipv6Addr = "2001:db8::53".parse().unwrap();
        m.insert(ip.octets(), block_entry(0), 0).unwrap();
    }
    let (verdict, delta, _) = h.run(&v6);
    assert_eq!(verdict, XDP_DROP, "blocked IPv6 source");
    assert!(delta.contains(&(Counter::DropBlockedSrc, 1)), "{delta:?}");
    {
        let mut m = h.blocked::<[u8; 16]>(MAP_BLOCKED_V6);
        let ip: std::net::Ipv6Addr = "2001:db8::53".parse().unwrap();
        m.remove(&ip.octets()).unwrap();
        let mut c = h.trie::<[u8; 16], BlockEntry>(MAP_BLOCKED_CIDR_V6);
        let net: std::net::Ipv6Addr = "2001:db8::".parse().unwrap();
        c.insert(&Key::new(32, net.octets()), block_entry(0), 0)
            .unwrap();
    }
    let (verdict, _, _) = h.run(&v6);
    assert_eq!(verdict, XDP_DROP, "blocked IPv6 CIDR");
}

/// Checks a frame the program answered NXDOMAIN for `qname_wire_len`: lengths, both checksums,
/// the header, and the question kept byte for byte.
#[track_caller]
fn assert_nxdomain(out: &[u8], original: &[u8], l3: usize, l4: usize, name_wire_len: usize) {
    let dns = l4 + 8;
    let kept = 12 + name_wire_len + 4;
    assert_eq!(out.len(), dns + kept, "cut right after the question");
    if out[l3] >> 4 == 4 {
        let tot = usize::from(u16::from_be_bytes([out[l3 + 2], out[l3 + 3]]));
        assert_eq!(tot, out.len() - l3, "IPv4 total length");
        assert!(ipv4_checksum_ok(out, l3), "IPv4 header checksum");
    } else {
        let pl = usize::from(u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]));
        assert_eq!(pl, out.len() - l3 - 40, "IPv6 payload length");
    }
    let udp_len = usize::from(u16::from_be_bytes([out[l4 + 4], out[l4 + 5]]));
    assert_eq!(udp_len, 8 + kept, "UDP length");
    assert!(udp_checksum_ok(out, l3, l4), "UDP checksum");
    let flags = u16::from_be_bytes([out[dns + 2], out[dns + 3]]);
    assert_eq!(flags & 0x8000, 0x8000, "still a response");
    assert_eq!(flags & 0x000f, 3, "RCODE NXDOMAIN");
    assert_eq!(flags & 0x0200, 0, "TC cleared");
    assert_eq!(
        &out[dns + 4..dns + 12],
        &[0, 1, 0, 0, 0, 0, 0, 0],
        "one question, no records"
    );
    assert_eq!(out[dns..dns + 2], original[dns..dns + 2], "same id");
    assert_eq!(
        out[dns + 12..],
        original[dns + 12..dns + kept],
        "question unchanged"
    );
}

/// A question name is walked only while something needs it: with no domain blocked (and query
/// matching off) a name that cannot be walked passes without `qname_unchecked`, since nothing
/// was to be checked; once a domain is blocked the same frame counts it again.
#[test]
fn names_are_walked_only_while_a_domain_is_blocked() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    // The question `x.test` turned into a compression pointer, which no question may hold.
    let mut msg = dns_response(200);
    msg[12..14].copy_from_slice(&[0xc0, 12]);
    let frame = udp4(53, &msg);
    h.check("nothing blocked", &frame, &[Counter::ResponsesCaptured]);

    let mut maps = h.maps();
    let parked = maps::Target::domain("parked.test").unwrap();
    maps.block(&parked, &maps::Spec::manual(None, "test"))
        .unwrap();
    h.check(
        "a domain blocked",
        &frame,
        &[Counter::ResponsesCaptured, Counter::QnameUnchecked],
    );
    // A walkable name with a domain blocked (not this one): checked, passed, not unchecked.
    h.check(
        "walkable",
        &udp4(53, &dns_response(200)),
        &[Counter::ResponsesCaptured],
    );
    maps.unblock(&parked).unwrap();
    h.check("unblocked again", &frame, &[Counter::ResponsesCaptured]);
}

#[test]
fn blocked_names_are_answered_nxdomain_in_the_kernel() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let day = Some(std::time::Duration::from_secs(86_400));
    maps.block(
        &maps::Target::domain("flux.test").unwrap(),
        &maps::Spec::manual(day, "test"),
    )
    .unwrap();

    // A subdomain, in another case, over IPv4: rewritten, passed, and recorded as it arrived.
    let msg = dns_response_for("www.FLUX.Test", 400);
    let frame = udp4(53, &msg);
    let Ran {
        verdict,
        delta,
        events,
        out,
    } = h.run_out(&frame);
    assert_eq!(verdict, XDP_PASS, "answered, not dropped");
    assert!(
        delta.contains(&(Counter::SinkholedNxdomain, 1)),
        "{delta:?}"
    );
    assert_eq!(events.len(), 1, "the original response is still recorded");
    assert_ne!(
        events[0].header.flags & EVENT_FLAG_BLOCKED,
        0,
        "flagged blocked"
    );
    assert_eq!(events[0].data, &msg[..], "the record holds the real answer");
    let wire_len = "www.FLUX.Test".len() + 2;
    assert_nxdomain(&out, &frame, ETH, ETH + IP4, wire_len);
    assert_eq!(
        maps.get(&maps::Target::domain("flux.test").unwrap())
            .unwrap()
            .unwrap()
            .hits,
        1,
        "hit counted on the blocked parent"
    );

    // The blocked name itself, over IPv6.
    let msg6 = dns_response_for("flux.test", 300);
    let frame6 = udp6(53, &msg6);
    let Ran {
        verdict,
        delta,
        out,
        ..
    } = h.run_out(&frame6);
    assert_eq!(verdict, XDP_PASS);
    assert!(
        delta.contains(&(Counter::SinkholedNxdomain, 1)),
        "{delta:?}"
    );
    assert_nxdomain(&out, &frame6, ETH, ETH + IP6, "flux.test".len() + 2);

    // IPv4 options and two VLAN tags in front: offsets move, the rewrite still holds.
    let tagged = with_vlans(
        &with_ipv4_options(&udp4(53, &msg), 2),
        &[(0x88a8, 10), (0x8100, 20)],
    );
    let Ran { verdict, out, .. } = h.run_out(&tagged);
    assert_eq!(verdict, XDP_PASS);
    let l3 = ETH + 8;
    assert_nxdomain(&out, &tagged, l3, l3 + IP4 + 8, wire_len);

    // No UDP checksum over IPv4 stays none; the IP header is still fixed.
    let mut nocsum = udp4(53, &msg);
    nocsum[ETH + IP4 + 6] = 0;
    nocsum[ETH + IP4 + 7] = 0;
    let Ran { out, .. } = h.run_out(&nocsum);
    assert_eq!(out[ETH + IP4 + 6..ETH + IP4 + 8], [0, 0]);
    assert_nxdomain(&out, &nocsum, ETH, ETH + IP4, wire_len);

    // Names that only look alike pass untouched and are captured as before.
    for name in ["notflux.test", "flux.test.example", "flux.tes"] {
        let f = udp4(53, &dns_response_for(name, 100));
        let Ran {
            verdict,
            delta,
            events,
            out,
        } = h.run_out(&f);
        assert_eq!(verdict, XDP_PASS, "{name}");
        assert_eq!(out, f, "{name}: unchanged");
        assert!(delta.contains(&(Counter::ResponsesCaptured, 1)), "{name}");
        assert_eq!(events[0].header.flags & EVENT_FLAG_BLOCKED, 0, "{name}");
    }

    // DNS over TCP cannot be cut: dropped.
    let tcp = tcp4(53, &tcp_dns(&msg, msg.len() as u16));
    let Ran { verdict, delta, .. } = h.run_out(&tcp);
    assert_eq!(verdict, XDP_DROP, "TCP response for a blocked name");
    assert!(delta.contains(&(Counter::DropBlockedName, 1)), "{delta:?}");

    // The allowlist wins over a blocked parent.
    maps.allow(&maps::Target::domain("www.flux.test").unwrap(), "ok")
        .unwrap();
    let Ran {
        verdict,
        delta,
        out,
        ..
    } = h.run_out(&frame);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, frame, "allowed: untouched");
    assert!(delta.contains(&(Counter::AllowedOverBlock, 1)), "{delta:?}");
    assert!(
        maps.unallow(&maps::Target::domain("www.flux.test").unwrap())
            .unwrap()
    );

    // An expired block passes, counted.
    maps.block(
        &maps::Target::domain("flux.test").unwrap(),
        &maps::Spec::manual(Some(std::time::Duration::from_nanos(1)), "test"),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1));
    let Ran {
        verdict,
        delta,
        out,
        ..
    } = h.run_out(&frame);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, frame);
    assert!(delta.contains(&(Counter::ExpiredBlock, 1)), "{delta:?}");
    let swept = maps.sweep_expired().unwrap();
    assert_eq!(swept.len(), 1);
    assert!(maps.list().unwrap().is_empty(), "expired entry swept");
}

/// A block renewed between the sweep's listing and its removals (by another writer: the feed
/// refresher's own `Maps`, `blocklist add`) is not removed with the expired entry it replaced:
/// the renewed address still drops in the kernel and the renewed name is still answered
/// NXDOMAIN. An entry still expired at its removal goes, as before.
#[test]
fn a_block_renewed_during_the_sweep_stays() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let nanosecond = Some(std::time::Duration::from_nanos(1));
    let renewed_ip = Target::Ip(std::net::Ipv4Addr::from(SRC4).into());
    let renewed_name = Target::domain("flux.test").unwrap();
    let left = Target::domain("gone.test").unwrap();
    for t in [&renewed_ip, &renewed_name, &left] {
        maps.block(t, &Spec::manual(nanosecond, "test")).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1));
    let listed = maps.list().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|l| l.expired), "{listed:?}");

    // Another writer renews two of them after the listing.
    for t in [&renewed_ip, &renewed_name] {
        maps.block(t, &Spec::manual(None, "renewed")).unwrap();
    }
    let gone = maps.remove_expired(listed).unwrap();
    assert_eq!(gone, vec![left.clone()], "only the entry still expired");
    assert!(maps.get(&left).unwrap().is_none());
    for t in [&renewed_ip, &renewed_name] {
        assert!(
            maps.get(t).unwrap().is_some_and(|e| e.expires_ns == 0),
            "{t:?}"
        );
    }

    // The kernel still enforces both: the address's packets drop, the name is rewritten.
    let Ran { verdict, delta, .. } = h.run_out(&udp4(443, &[0u8; 64]));
    assert_eq!(verdict, XDP_DROP);
    assert!(delta.contains(&(Counter::DropBlockedSrc, 1)), "{delta:?}");
    maps.unblock(&renewed_ip).unwrap();
    let frame = udp4(53, &dns_response_for("a.flux.test", 200));
    let Ran { delta, out, .. } = h.run_out(&frame);
    assert_ne!(out, frame, "rewritten");
    assert!(
        delta.contains(&(Counter::SinkholedNxdomain, 1)),
        "{delta:?}"
    );
}

/// The same race through the state database: the targets a transaction found gone (the
/// sweep's expiry here; a feed's swap alike) are removed from the maps after it committed, and
/// another writer with its own connection (the feed refresher, the CLI through the agent) has
/// added one back meanwhile, its row and its map entry. That one stays in the map and still
/// drops; the one nobody holds goes.
#[test]
fn a_block_the_database_holds_again_is_not_removed_with_what_left_it() {
    use flux_agent::enforce::record::Recorder;
    use flux_state::{Kind, Source, Store};

    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let dir = flux_tests::TempDir::new();
    let db = dir.0.join("state.db");
    let mut sweep = Recorder::open(&db).unwrap();
    let mut other = Recorder::open(&db).unwrap();
    let renewed = Target::Ip(std::net::Ipv4Addr::from(SRC4).into());
    let left = Target::domain("gone.test").unwrap();
    let nanosecond = Some(std::time::Duration::from_nanos(1));
    for t in [&renewed, &left] {
        sweep
            .block(
                &mut maps,
                t,
                &Spec::manual(nanosecond, "test"),
                Source::Manual,
                None,
            )
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1));
    // The sweep's transaction: both rows expired, both targets gone.
    let gone = Store::open(&db)
        .unwrap()
        .expire(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
        .unwrap()
        .gone;
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert!(gone.iter().all(|(k, _)| *k == Kind::Block));
    // Before its map removals, another writer blocks one of them again, for good.
    let previous = maps.get(&renewed).unwrap();
    other
        .block(
            &mut maps,
            &renewed,
            &Spec::manual(None, "again"),
            Source::feed("f"),
            previous,
        )
        .unwrap();

    assert_eq!(
        sweep.apply(&mut maps, &[], &gone).unwrap(),
        1,
        "only the one left"
    );
    assert!(maps.get(&left).unwrap().is_none());
    assert!(
        maps.get(&renewed)
            .unwrap()
            .is_some_and(|e| e.expires_ns == 0)
    );
    let Ran { verdict, delta, .. } = h.run_out(&udp4(443, &[0u8; 64]));
    assert_eq!(
        verdict, XDP_DROP,
        "the block the database holds still drops"
    );
    assert!(delta.contains(&(Counter::DropBlockedSrc, 1)), "{delta:?}");
}

/// The program loaded with the drop action, `flux.test` blocked.
fn dropping_flux_test() -> Harness {
    let h = Harness::load(LoadOptions {
        block_action: loader::BlockAction::Drop,
        ..Default::default()
    });
    h.maps()
        .block(
            &maps::Target::domain("flux.test").unwrap(),
            &maps::Spec::manual(None, "test"),
        )
        .unwrap();
    h
}

#[test]
fn block_action_drop_drops_blocked_names() {
    if !privileged() {
        return;
    }
    let mut h = dropping_flux_test();
    let frame = udp4(53, &dns_response_for("a.flux.test", 200));
    let Ran {
        verdict,
        delta,
        events,
        ..
    } = h.run_out(&frame);
    assert_eq!(verdict, XDP_DROP);
    assert!(delta.contains(&(Counter::DropBlockedName, 1)), "{delta:?}");
    assert_eq!(events.len(), 1, "recorded before the drop");
}

/// Inserts `words` 4-byte words of TCP options (NOPs) after the TCP header at `l4` of an IPv4
/// frame whose IP header starts at `l3`, and fixes the lengths.
fn with_tcp_options(frame: &[u8], l3: usize, l4: usize, words: usize) -> Vec<u8> {
    let mut f = frame[..l4 + 20].to_vec();
    f.extend(std::iter::repeat_n(1u8, words * 4));
    f.extend_from_slice(&frame[l4 + 20..]);
    f[l4 + 12] = ((5 + words as u8) << 4) | (f[l4 + 12] & 0x0f);
    let tot = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]) + (words * 4) as u16;
    f[l3 + 2..l3 + 4].copy_from_slice(&tot.to_be_bytes());
    fix_ipv4_checksum(&mut f, l3);
    f
}

/// An IPv6 Destination Options header of 200 bytes (one PadN), next-header filled in later.
fn ipv6_opts_hdr_200() -> Vec<u8> {
    let mut h = vec![0, 24, 1, 196];
    h.resize(200, 0);
    h
}

/// The question name is read where it lies in the frame (no copy): only inside the message,
/// wherever the headers put it.
#[test]
fn question_names_are_read_only_inside_the_message() {
    if !privileged() {
        return;
    }
    let mut h = dropping_flux_test();
    let name = "a.flux.test";
    let wire = name.len() + 2;
    let whole = dns_response_for(name, 0);
    let dropped = |h: &mut Harness, what: &str, frame: &[u8]| {
        let Ran { verdict, delta, .. } = h.run_out(frame);
        assert_eq!(verdict, XDP_DROP, "{what}: {delta:?}");
        assert!(
            delta.contains(&(Counter::DropBlockedName, 1)),
            "{what}: {delta:?}"
        );
    };

    // The message ends with the name's root label: its last byte is the frame's.
    let ends_at_root = udp4(53, &whole[..12 + wire]);
    dropped(&mut h, "name ends the frame", &ends_at_root);

    // The message ends inside the name; the rest of it, and more, follow as Ethernet
    // padding: never part of the name, so it cannot be walked.
    let mut cut = udp4(53, &whole[..12 + wire - 6]);
    cut.extend_from_slice(&whole[12 + wire - 6..]);
    h.check(
        "name cut short, the rest in the padding",
        &cut,
        &[Counter::ResponsesCaptured, Counter::QnameUnchecked],
    );

    // Far into the frame: two tags, 40 bytes of IPv4 options, 40 of TCP options and the
    // length prefix ...
    let tcp = tcp4(53, &tcp_dns(&whole, whole.len() as u16));
    let tcp = with_tcp_options(&with_ipv4_options(&tcp, 10), ETH, ETH + IP4 + 40, 10);
    dropped(
        &mut h,
        "tags, IPv4 and TCP options",
        &with_vlans(&tcp, &[(0x88a8, 7), (0x8100, 9)]),
    );
    // ... and two tags with 400 bytes of IPv6 extension headers: the DNS header at 470.
    let v6 = with_ipv6_ext(
        &udp6(53, &whole),
        &[(60, ipv6_opts_hdr_200()), (60, ipv6_opts_hdr_200())],
    );
    dropped(
        &mut h,
        "tags and IPv6 extension headers",
        &with_vlans(&v6, &[(0x88a8, 7), (0x8100, 9)]),
    );
}

#[test]
fn a_full_map_is_an_error_that_keeps_the_entries() {
    if !privileged() {
        return;
    }
    let h = Harness::new(&[53]);
    let mut maps = h.maps();
    let spec = maps::Spec::manual(None, "fill");
    let cap = flux_common::MAX_BLOCKED_CIDRS;
    for i in 0..cap {
        let t = maps::Target::Cidr(std::net::Ipv4Addr::from(i << 8).into(), 24);
        maps.block(&t, &spec).expect("room left");
    }
    let over = maps::Target::cidr("203.0.113.0/24").unwrap();
    let err = maps.block(&over, &spec).unwrap_err();
    assert!(matches!(err, maps::BlocklistError::Full { .. }), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    let first = maps::Target::Cidr(std::net::Ipv4Addr::from(0u32).into(), 24);
    assert!(maps.get(&first).unwrap().is_some(), "existing entries kept");
    // Renewing an entry that is already there still works when the map is full.
    assert_eq!(maps.block(&first, &spec).unwrap(), maps::Added::Refreshed);
}

#[test]
fn a_foreign_pin_is_reported_not_reused() {
    if !privileged() {
        return;
    }
    // Another object's per-CPU array pinned under the name of a blocklist map.
    let h = Harness::new(&[53]);
    let foreign = PinDir::new();
    std::fs::create_dir_all(&foreign.0).unwrap();
    let counters = h.loaded.ebpf.map(MAP_COUNTERS).expect("COUNTERS");
    let data: &MapData = match counters {
        aya::maps::Map::PerCpuArray(d) => d,
        other => panic!("unexpected map {other:?}"),
    };
    data.pin(foreign.0.join(MAP_BLOCKED_V4)).expect("pin");

    let err = match loader::load(&LoadOptions {
        pin_dir: foreign.0.clone(),
        ..Default::default()
    }) {
        Ok(_) => panic!("a foreign pin was reused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("BLOCKED_V4") && err.contains("not a flux-agent map"),
        "{err}"
    );
    assert!(err.contains("map type"), "{err}");
    let err = maps::Maps::open(&foreign.0)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("not a flux-agent map"), "{err}");
    // Nothing of ours was created beside it.
    assert!(!foreign.0.join(MAP_COUNTERS).exists());
}

/// `XDP_REDIRECT`: the frame goes out of the interface `bpf_redirect` names.
const XDP_REDIRECT: u32 = 4;

/// veth-bench's relay (`flux_xdp_bounce`) asks the kernel to send every frame back out of the
/// interface it came in by, a redirect and not `XDP_TX` (after `XDP_TX` veth does not wake a
/// peer without an XDP program, which the nftables cases are), and leaves the frame as it is.
/// The helper answers `XDP_REDIRECT` whatever the index (only flags make it refuse; a bad
/// index fails later, when the kernel sends), so this checks the program's answer and that
/// the frame is untouched, not where it goes: veth-bench's floods check that (every frame
/// sent must come back to a0 and be counted there). The frame is one flux_xdp would drop.
#[test]
fn the_bounce_relay_redirects_every_frame_unchanged() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    let mut maps = h.maps();
    let blocked = std::net::Ipv4Addr::new(192, 0, 2, 53);
    maps.write(
        &Target::Ip(blocked.into()),
        &Spec::manual(None, "test"),
        None,
    )
    .unwrap();
    for frame in [
        udp4(53, &dns_response(200)),
        udp4(443, &[0u8; 64]),
        vec![0u8; 60],
    ] {
        let (verdict, out) = h.test_run_out(PROG_XDP_BOUNCE, &frame);
        assert_eq!(verdict, XDP_REDIRECT, "{} bytes", frame.len());
        assert_eq!(out, frame, "the frame is sent as it came");
    }
    let (verdict, records) = h.run_prog(PROG_XDP_BOUNCE, &udp4(53, &dns_response(200)));
    assert_eq!((verdict, records.len()), (XDP_REDIRECT, 0), "no record");
}

/// The benchmarks' floor programs (`xdp-bench`'s floor rows) do what their rows say they
/// measure: `flux_xdp_floor` clears a frame whose addresses the IPv4 front filter has no bit
/// for, and cannot clear one whose source, or whose destination, is blocked (so it reads both,
/// the reads flux_xdp makes first, and a floor row on a clean frame measured them all);
/// `flux_xdp_floor_record` writes one record of the smallest size, stamped with the clock
/// during the run and otherwise zero (over ring memory that earlier records left non-zero),
/// which a reader refuses, and passes.
#[test]
fn the_benchmark_floors_do_what_their_rows_measure() {
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&[53]);
    // Opening the maps makes the front filter ready, as the agent (and xdp-bench) do.
    let mut maps = h.maps();
    // Source and destination in different /24s, so that each is seen to be read.
    let with = |src: [u8; 4], dst: [u8; 4]| {
        let mut f = udp4(443, &[0u8; 64]);
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f
    };
    let (blocked, clean, other) = ([192, 0, 2, 53], [198, 51, 100, 7], [203, 0, 113, 9]);
    assert_eq!(
        h.run_prog(PROG_XDP_FLOOR, &with(blocked, clean)),
        (XDP_PASS, vec![]),
        "nothing blocked: cleared by the filter"
    );
    maps.block(&Target::Ip(blocked.into()), &Spec::manual(None, "test"))
        .unwrap();
    for (frame, want, what) in [
        (with(blocked, clean), XDP_DROP, "the source's /24 bit set"),
        (
            with(clean, blocked),
            XDP_DROP,
            "the destination's /24 bit set",
        ),
        (with(clean, other), XDP_PASS, "two other /24s"),
    ] {
        assert_eq!(h.run_prog(PROG_XDP_FLOOR, &frame), (want, vec![]), "{what}");
    }
    maps.unblock(&Target::Ip(blocked.into())).unwrap();

    // The ring's memory written over once by flux_xdp's records, so that a header byte the
    // record floor left unwritten would read non-zero.
    let response = udp4(53, &dns_response(200));
    let mut written = 0;
    while written < RING_BUF_BYTES as usize {
        let (_, records) = h.run_prog_repeat(PROG_XDP, &response, 1024);
        assert_eq!(records.len(), 1024, "flux_xdp's records");
        written += records.iter().map(|r| r.len() + 8).sum::<usize>();
    }
    let before = record_clock_ns();
    let (verdict, records) = h.run_prog(PROG_XDP_FLOOR_RECORD, &response);
    let after = record_clock_ns();
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(records.len(), 1, "one record a run");
    let rec = &records[0];
    assert_eq!(rec.len(), RECORD_SIZES[0]);
    let ts = u64::from_ne_bytes(rec[..8].try_into().unwrap());
    assert!(
        (before..=after).contains(&ts),
        "stamped during the run: {ts} not in {before}..={after}"
    );
    let header = size_of::<DnsEventHeader>();
    assert!(rec[8..header].iter().all(|b| *b == 0), "the rest zero");
    assert!(Capture::from_record(rec).is_err(), "no capture");
}

#[test]
fn egress_drops_only_what_leaves_for_a_blocked_address() {
    if !privileged() {
        return;
    }
    let mut h = Harness::load(LoadOptions {
        egress: true,
        ..Default::default()
    });
    let query = dns_query();
    // udp4: 192.0.2.53 -> 192.0.2.1, udp6: 2001:db8::53 -> 2001:db8::1; as egress frames the
    // destination is the remote host.
    let v4 = udp4(40000, &query);
    let v6 = udp6(40000, &query);
    assert_eq!(h.run_egress(&v4), (TC_NEXT, vec![]), "nothing blocked");

    // Blocking the source (this host's own address, as egress sees it) drops nothing.
    h.blocked::<[u8; 4]>(MAP_BLOCKED_V4)
        .insert([192, 0, 2, 53], block_entry(0), 0)
        .unwrap();
    assert_eq!(
        h.run_egress(&v4),
        (TC_NEXT, vec![]),
        "source is not checked"
    );

    // The destination, exact: dropped, counted, the entry's hit counted.
    h.blocked::<[u8; 4]>(MAP_BLOCKED_V4)
        .insert([192, 0, 2, 1], block_entry(0), 0)
        .unwrap();
    assert_eq!(
        h.run_egress(&v4),
        (TC_SHOT, vec![(Counter::DropEgressBlocked, 1)]),
        "blocked destination"
    );
    assert_eq!(h.v4_hits([192, 0, 2, 1]), 1);
    // Any protocol: a TCP segment to it too.
    let (verdict, _) = h.run_egress(&tcp4(40000, &query));
    assert_eq!(verdict, TC_SHOT, "TCP to a blocked address");

    // The allowlist wins.
    h.trie::<[u8; 4], u32>(MAP_ALLOWED_CIDR_V4)
        .insert(&Key::new(24, [192, 0, 2, 0]), 1, 0)
        .unwrap();
    assert_eq!(
        h.run_egress(&v4),
        (TC_NEXT, vec![(Counter::AllowedOverBlock, 1)]),
        "allowlist wins"
    );
    h.trie::<[u8; 4], u32>(MAP_ALLOWED_CIDR_V4)
        .remove(&Key::new(24, [192, 0, 2, 0]))
        .unwrap();

    // An expired entry passes.
    h.blocked::<[u8; 4]>(MAP_BLOCKED_V4)
        .insert([192, 0, 2, 1], block_entry(boot_ns() - 1), 0)
        .unwrap();
    assert_eq!(
        h.run_egress(&v4),
        (TC_NEXT, vec![(Counter::ExpiredBlock, 1)]),
        "expired"
    );

    // IPv6, by CIDR.
    assert_eq!(h.run_egress(&v6), (TC_NEXT, vec![]), "IPv6 unblocked");
    let net: std::net::Ipv6Addr = "2001:db8::".parse().unwrap();
    h.trie::<[u8; 16], BlockEntry>(MAP_BLOCKED_CIDR_V6)
        .insert(&Key::new(64, net.octets()), block_entry(0), 0)
        .unwrap();
    assert_eq!(
        h.run_egress(&v6),
        (TC_SHOT, vec![(Counter::DropEgressBlocked, 1)]),
        "blocked IPv6 CIDR"
    );

    // Not IP (ARP here): never ours to judge.
    let mut arp = v4.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(h.run_egress(&arp), (TC_NEXT, vec![]), "ARP");
}

#[test]
fn egress_in_monitor_mode_counts_and_passes() {
    if !privileged() {
        return;
    }
    let mut h = Harness::load(LoadOptions {
        egress: true,
        monitor: true,
        ..Default::default()
    });
    h.blocked::<[u8; 4]>(MAP_BLOCKED_V4)
        .insert([192, 0, 2, 1], block_entry(0), 0)
        .unwrap();
    assert_eq!(
        h.run_egress(&udp4(40000, &dns_query())),
        (TC_NEXT, vec![(Counter::MonitorWouldDrop, 1)])
    );
}

/// The kernel's half of the frame-walk spec (`flux_detect::frame_spec`; the file reader's half
/// is its unit test): every rule, one frame each, through the verified program.
#[test]
fn the_xdp_program_walks_frames_by_the_spec() {
    use flux_detect::frame_spec::{Outcome, SPEC_PORTS, cases};
    if !privileged() {
        return;
    }
    let mut h = Harness::new(&SPEC_PORTS);
    for c in cases() {
        let events = h.check(c.name, &c.frame, &c.kernel.kernel_counters());
        if let Outcome::Captured {
            transport,
            truncated,
            vlans,
        } = c.kernel
        {
            let ev = &events[0];
            assert_eq!(ev.transport(), transport, "{}: transport", c.name);
            assert_eq!(ev.truncated(), truncated, "{}: truncated", c.name);
            assert_eq!(ev.vlans().len(), vlans, "{}: vlan tags", c.name);
        }
    }
}

/// Query matching: a reply is trusted only when the TC egress program saw its query leave
/// (same client and server address and port, transport, transaction id and question).
#[test]
fn only_replies_to_queries_that_left_are_trusted() {
    use flux_common::EVENT_FLAG_UNSOLICITED;
    if !privileged() {
        return;
    }
    let mut h = Harness::matching_queries();
    // This host is 192.0.2.53 asking 192.0.2.1 from port 40000 (txid 0xbeef, x.test A).
    let (me, server) = (SRC4, DST4);
    let query = udp4_between(me, 40000, server, 53, &dns_query());
    let reply = |sport, dport, msg: &[u8]| udp4_between(server, sport, me, dport, msg);
    let answer = dns_response(100);
    let unsolicited = |ev: &Capture| ev.header.flags & EVENT_FLAG_UNSOLICITED != 0;

    // No query: the reply is captured, marked and counted.
    let ev = h.check(
        "reply to nothing",
        &reply(53, 40000, &answer),
        &[Counter::ResponsesCaptured, Counter::UnsolicitedReplies],
    );
    assert!(unsolicited(&ev[0]));

    // The query leaves: recorded; its reply is trusted, once.
    assert_eq!(
        h.run_egress(&query),
        (TC_NEXT, vec![(Counter::QueriesRecorded, 1)]),
        "query recorded"
    );
    let ev = h.check(
        "the reply",
        &reply(53, 40000, &answer),
        &[Counter::ResponsesCaptured],
    );
    assert!(!unsolicited(&ev[0]));
    h.check(
        "a second reply to an answered UDP query",
        &reply(53, 40000, &answer),
        &[Counter::ResponsesCaptured, Counter::UnsolicitedReplies],
    );

    // Each field of the match counts.
    let mut other_id = answer.clone();
    other_id[0] = 0x12;
    let other_name = dns_response_for("y.test", 100);
    let cases: [(&str, Vec<u8>); 4] = [
        ("another port", reply(53, 40001, &answer)),
        ("another transaction id", reply(53, 40000, &other_id)),
        ("another question", reply(53, 40000, &other_name)),
        (
            "another server",
            udp4_between([192, 0, 2, 99], 53, me, 40000, &answer),
        ),
    ];
    for (name, frame) in cases {
        h.run_egress(&query);
        h.check(
            name,
            &frame,
            &[Counter::ResponsesCaptured, Counter::UnsolicitedReplies],
        );
        // The real reply still matches afterwards: a forged one does not use the entry up.
        h.check(
            "the real reply",
            &reply(53, 40000, &answer),
            &[Counter::ResponsesCaptured],
        );
    }

    // The question is compared without regard to case (0x20 randomisation).
    let upper = udp4_between(me, 40000, server, 53, &{
        let mut q = dns_query();
        q[13] = b'X';
        q
    });
    h.run_egress(&upper);
    h.check(
        "case-blind",
        &reply(53, 40000, &answer),
        &[Counter::ResponsesCaptured],
    );

    // A query to a port that is not DNS is not recorded.
    assert_eq!(
        h.run_egress(&udp4_between(me, 40000, server, 54, &dns_query())),
        (TC_NEXT, vec![]),
        "not a DNS port"
    );
    // A reply leaving (this host as a server) is not a query.
    assert_eq!(
        h.run_egress(&udp4_between(me, 53, server, 40000, &answer)),
        (TC_NEXT, vec![]),
        "a response is not a query"
    );

    // IPv6 and TCP.
    let q6 = udp6_between(SRC6, 40000, DST6, 53, &dns_query());
    assert_eq!(h.run_egress(&q6).1, vec![(Counter::QueriesRecorded, 1)]);
    let ev = h.check(
        "IPv6 reply",
        &udp6_between(DST6, 53, SRC6, 40000, &answer),
        &[Counter::ResponsesCaptured],
    );
    assert!(!unsolicited(&ev[0]));
    let tq = tcp4_between(me, 40000, server, 53, &tcp_dns(&dns_query(), 23));
    assert_eq!(h.run_egress(&tq).1, vec![(Counter::QueriesRecorded, 1)]);
    let treply = tcp4_between(
        server,
        53,
        me,
        40000,
        &tcp_dns(&answer, answer.len() as u16),
    );
    for _ in 0..2 {
        // TCP: the entry stays, a connection may carry several answers.
        let ev = h.check("TCP reply", &treply, &[Counter::ResponsesCaptured]);
        assert!(!unsolicited(&ev[0]));
    }
    let foreign_tcp = tcp4_between(
        server,
        53,
        me,
        40002,
        &tcp_dns(&answer, answer.len() as u16),
    );
    h.check(
        "TCP reply on a connection this host did not open",
        &foreign_tcp,
        &[Counter::ResponsesCaptured, Counter::UnsolicitedReplies],
    );
}

/// A reply is trusted only within `QUERY_WAIT_NS` of its query, and its record is stamped with
/// the time it was handled: the program reads the clock once per response for both, so a
/// stale clock value (or none) would fail one of the two.
#[test]
fn a_reply_is_trusted_only_while_its_query_waits() {
    use aya::maps::HashMap as AyaHashMap;
    use flux_common::{EVENT_FLAG_UNSOLICITED, MAP_QUERIES, QUERY_WAIT_NS, QueryKey, QuerySeen};
    if !privileged() {
        return;
    }
    let mut h = Harness::matching_queries();
    let query = udp4_between(SRC4, 40000, DST4, 53, &dns_query());
    let reply = udp4_between(DST4, 53, SRC4, 40000, &dns_response(100));
    // The query's entry, sent `age_ns` before now (written over what the egress program
    // recorded, the question's hash kept).
    let sent_ago = |h: &mut Harness, age_ns: u64| {
        let before = record_clock_ns();
        assert_eq!(h.run_egress(&query).1, vec![(Counter::QueriesRecorded, 1)]);
        let after = record_clock_ns();
        let mut queries: AyaHashMap<&mut MapData, QueryKey, QuerySeen> =
            AyaHashMap::try_from(h.loaded.ebpf.map_mut(MAP_QUERIES).expect("QUERIES"))
                .expect("QUERIES");
        let keys: Vec<QueryKey> = queries.keys().map(|k| k.expect("key")).collect();
        assert_eq!(keys.len(), 1, "one query recorded");
        let seen = queries.get(&keys[0], 0).expect("entry");
        assert!(
            (before..=after).contains(&seen.sent_ns),
            "the query is stamped in the records' clock when it leaves: {} not in \
             {before}..={after}",
            seen.sent_ns
        );
        let aged = QuerySeen {
            sent_ns: record_clock_ns() - age_ns,
            ..seen
        };
        queries.insert(keys[0], aged, 0).expect("age the entry");
    };
    let second = 1_000_000_000;

    sent_ago(&mut h, QUERY_WAIT_NS - 5 * second);
    let before = record_clock_ns();
    let ev = h.check("a reply in time", &reply, &[Counter::ResponsesCaptured]);
    let after = record_clock_ns();
    assert_eq!(ev[0].header.flags & EVENT_FLAG_UNSOLICITED, 0, "trusted");
    let ts = ev[0].header.ts_ns;
    assert!(
        (before..=after).contains(&ts),
        "the record is stamped when the reply is handled: {ts} not in {before}..={after}"
    );

    sent_ago(&mut h, QUERY_WAIT_NS + 5 * second);
    let ev = h.check(
        "a reply after the wait",
        &reply,
        &[Counter::ResponsesCaptured, Counter::UnsolicitedReplies],
    );
    assert_ne!(
        ev[0].header.flags & EVENT_FLAG_UNSOLICITED,
        0,
        "not trusted"
    );
}

#[test]
fn drop_unsolicited_drops_replies_to_nothing() {
    use flux_agent::kernel::loader::QueryMatch;
    if !privileged() {
        return;
    }
    let mut h = Harness::load(LoadOptions {
        queries: QueryMatch::Drop,
        ..Default::default()
    });
    let answer = dns_response(100);
    let (verdict, delta, events) = h.run(&udp4_between(DST4, 53, SRC4, 40000, &answer));
    assert_eq!(verdict, XDP_DROP);
    delta
        .iter()
        .find(|d| **d == (Counter::DropUnsolicited, 1))
        .expect("counted");
    assert!(events.is_empty(), "a dropped reply is not captured");
    h.run_egress(&udp4_between(SRC4, 40000, DST4, 53, &dns_query()));
    let (verdict, _, events) = h.run(&udp4_between(DST4, 53, SRC4, 40000, &answer));
    assert_eq!(verdict, XDP_PASS, "the asked-for reply passes");
    assert_eq!(events.len(), 1);
}
