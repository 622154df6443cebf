//! Live traffic on a real kernel: veth between two namespaces, dnsmasq on one side, dig on the
//! other, and the real `flux-agent` binary attached to the client's veth.

use std::{net::UdpSocket, time::Duration};

use etherparse::PacketBuilder;
use flux_tests::*;
use serde_json::Value;

fn answers(e: &Value) -> Vec<(String, String, String)> {
    e["answers"]
        .as_array()
        .expect("answers array")
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default().to_owned(),
                a["type"].as_str().unwrap_or_default().to_owned(),
                a["data"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn udp_tcp_ipv4_ipv6_cname_chain_and_nxdomain() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let _dns = start_dnsmasq(&link.server, &[]);
    let pin = PinDir::new();
    let mut agent = Agent::start(
        &link.client,
        &pin,
        &["--iface", "a0", "--xdp-mode", "native"],
    );
    assert!(agent.log().contains("a0 (native mode)"), "{}", agent.log());

    // UDP over IPv4, a two-step CNAME chain.
    let out = dig(
        &link.client,
        &[&format!("@{SERVER_V4}"), "www.flux.test", "A"],
    );
    assert!(out.contains("192.0.2.10"), "{out}");
    let e = agent.wait_event("udp/v4 www.flux.test", |e| {
        e["qname"] == "www.flux.test" && e["transport"] == "udp" && e["src"] == SERVER_V4
    });
    // Matched to the query that left for it: the egress program's key and XDP's agree, in
    // each family and transport below too.
    assert_eq!(e["unsolicited"], false, "{e}");
    assert_eq!(e["type"], "dns");
    assert_eq!(e["iface"], "a0");
    assert_eq!(e["sport"], 53);
    assert_eq!(e["dst"], CLIENT_V4);
    assert_eq!(e["qtype"], "A");
    assert_eq!(e["rcode"], "NOERROR");
    assert_eq!(e["truncated"], false);
    assert!(
        e["ts"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T'))
    );
    assert_eq!(
        answers(&e),
        vec![
            (
                "www.flux.test".into(),
                "CNAME".into(),
                "cdn.flux.test".into()
            ),
            ("cdn.flux.test".into(), "CNAME".into(), "a.flux.test".into()),
            ("a.flux.test".into(), "A".into(), "192.0.2.10".into()),
        ]
    );

    // TCP over IPv4.
    dig(
        &link.client,
        &[&format!("@{SERVER_V4}"), "+tcp", "a.flux.test", "AAAA"],
    );
    let e = agent.wait_event("tcp/v4", |e| {
        e["qname"] == "a.flux.test" && e["transport"] == "tcp" && e["src"] == SERVER_V4
    });
    assert_eq!(e["unsolicited"], false, "{e}");
    assert_eq!(answers(&e)[0].2, "2001:db8::10");
    assert_eq!(e["qtype"], "AAAA");

    // UDP over IPv6.
    dig(
        &link.client,
        &[&format!("@{SERVER_V6}"), "a.flux.test", "A"],
    );
    let e = agent.wait_event("udp/v6", |e| {
        e["qname"] == "a.flux.test" && e["transport"] == "udp" && e["src"] == SERVER_V6
    });
    assert_eq!(e["unsolicited"], false, "{e}");
    assert_eq!(e["dst"], CLIENT_V6);

    // TCP over IPv6, NXDOMAIN.
    let out = dig(
        &link.client,
        &[&format!("@{SERVER_V6}"), "+tcp", "nope.flux.test"],
    );
    assert!(out.contains("NXDOMAIN"), "{out}");
    let e = agent.wait_event("tcp/v6 nxdomain", |e| {
        e["qname"] == "nope.flux.test" && e["transport"] == "tcp" && e["src"] == SERVER_V6
    });
    assert_eq!(e["unsolicited"], false, "{e}");
    assert_eq!(e["rcode"], "NXDOMAIN");
    assert!(answers(&e).is_empty());

    // Stats from the pinned counters while running.
    let out = agent_cli(None, &["stats", "--json", "--pin-dir", &pin.arg()]);
    assert!(out.status.success(), "{out:?}");
    let s: Value = serde_json::from_slice(&out.stdout).expect("stats json");
    assert_eq!(s["loaded"], true);
    assert_eq!(s["agent_running"], true);
    assert!(
        s["counters"]["responses_captured"].as_u64().unwrap() >= 4,
        "{s}"
    );
    assert!(s["counters"]["packets_seen"].as_u64().unwrap() >= 4, "{s}");

    // SIGINT: exit 0, and the program stays attached (enforcement outlives the agent) with its
    // pins, until `unload` detaches it and removes them; then stats says nothing is loaded.
    let ours = xdp_prog_on(&link.client, "a0");
    assert!(agent.stop().success(), "{}", agent.log());
    assert_eq!(xdp_prog_on(&link.client, "a0"), ours, "still attached");
    let out = agent_cli(None, &["stats", "--json", "--pin-dir", &pin.arg()]);
    let s: Value = serde_json::from_slice(&out.stdout).expect("stats json");
    assert_eq!(s["agent_running"], false, "{s}");
    let out = agent_cli(None, &["unload", "--pin-dir", &pin.arg()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(xdp_prog_on(&link.client, "a0"), None);
    assert!(!pin.0.exists(), "pins removed");
    let out = agent_cli(None, &["stats", "--pin-dir", &pin.arg()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no flux-agent is loaded"),
        "{out:?}"
    );
}

#[test]
fn edns_response_larger_than_512_bytes_in_skb_mode() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let _dns = start_dnsmasq(&link.server, &[]);
    let pin = PinDir::new();
    let mut agent = Agent::start(&link.client, &pin, &["--iface", "a0", "--xdp-mode", "skb"]);
    assert!(agent.log().contains("a0 (skb mode)"), "{}", agent.log());

    let out = dig(
        &link.client,
        &[
            &format!("@{SERVER_V4}"),
            "+bufsize=4096",
            "+ignore",
            "big.flux.test",
            "TXT",
        ],
    );
    assert!(out.contains("aaaa"), "{out}");
    let e = agent.wait_event("EDNS big TXT", |e| e["qname"] == "big.flux.test");
    let len = e["dns_len"].as_u64().unwrap();
    assert!(len > 512, "response is only {len} bytes");
    assert_eq!(e["cap_len"], e["dns_len"]);
    assert_eq!(e["truncated"], false);
    assert_eq!(e["flags"]["tc"], false);
    assert!(e["edns_udp_size"].as_u64().is_some());
    assert_eq!(answers(&e)[0].1, "TXT");
    assert!(agent.stop().success());
}

/// Sends a real dnsmasq answer, re-framed with VLAN tags, from the server's veth with an
/// AF_PACKET socket: this kernel has no 802.1Q devices, but XDP on the receiving veth sees the tag.
#[test]
fn vlan_tagged_responses_single_and_double() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let _dns = start_dnsmasq(&link.server, &[]);
    let pin = PinDir::new();
    let mut agent = Agent::start(&link.client, &pin, &["--iface", "a0"]);

    // A real response from dnsmasq, fetched inside the server namespace.
    let response: Vec<u8> = link.server.run_in(|| {
        let s = UdpSocket::bind("10.77.0.2:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut q = vec![0x4a, 0x11, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x01a\x04flux\x04test\x00\x00\x01\x00\x01");
        s.send_to(&q, "10.77.0.2:53").expect("send");
        let mut buf = [0u8; 1500];
        let (n, _) = s.recv_from(&mut buf).expect("dnsmasq answer");
        buf[..n].to_vec()
    });
    assert_eq!(&response[..2], &[0x4a, 0x11]);

    let dst_mac = link.client_mac("a0");
    let src_mac = link.server_mac("b0");
    let mut frames = Vec::new();
    for tags in [&[100u16][..], &[200, 300][..]] {
        let b = PacketBuilder::ethernet2(src_mac, dst_mac);
        let b = match tags {
            [one] => b.single_vlan((*one).try_into().unwrap()),
            [outer, inner] => {
                b.double_vlan((*outer).try_into().unwrap(), (*inner).try_into().unwrap())
            }
            _ => unreachable!(),
        };
        let b = b
            .ipv4([10, 77, 0, 2], [10, 77, 0, 1], 64)
            .udp(53, 40000 + tags[0]);
        let mut f = Vec::with_capacity(b.size(response.len()));
        b.write(&mut f, &response).unwrap();
        frames.push(f);
    }
    link.server.run_in(move || send_raw("b0", &frames));

    let e = agent.wait_event("single tag", |e| e["vlan"] == serde_json::json!([100]));
    assert_eq!(e["qname"], "a.flux.test");
    assert_eq!(e["dport"], 40100);
    let e = agent.wait_event("double tag", |e| e["vlan"] == serde_json::json!([200, 300]));
    assert_eq!(e["qname"], "a.flux.test");
    assert_eq!(answers(&e)[0].2, "192.0.2.10");
    assert!(agent.stop().success());
}

fn send_raw(dev: &str, frames: &[Vec<u8>]) {
    // SAFETY: plain socket(2)/ioctl-free bind via if_nametoindex; buffers are valid.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let name = std::ffi::CString::new(dev).unwrap();
        let ifindex = libc::if_nametoindex(name.as_ptr());
        assert!(ifindex != 0);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        for f in frames {
            let n = libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(
                n as usize,
                f.len(),
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
        libc::close(fd);
    }
}

/// `run --events` puts verdicts beside the `dns` events: names under one domain that keep
/// resolving to fresh addresses in unrelated networks make the domain flux.
#[test]
fn run_events_carry_verdicts() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    // Six names, five addresses each, every address in its own /16 (no database: the /16 is the
    // network).
    let mut records = Vec::new();
    for n in 1..=6u32 {
        for i in 0..5u32 {
            records.push(format!(
                "--host-record=v{n}.rot.test,10.{}.{}.7,60",
                n * 10 + i,
                i + 1
            ));
        }
    }
    records.push("--local=/rot.test/".into());
    let _dns = start_dnsmasq(&link.server, &records);
    let pin = PinDir::new();
    // Scoring only: blocking is tested in enforcement.rs, and here every name must resolve.
    let mut agent = Agent::start(
        &link.client,
        &pin,
        &["--iface", "a0", "--no-db", "--no-auto-block"],
    );
    assert!(agent.log().contains("no ASN database"), "{}", agent.log());
    for n in 1..=6 {
        let out = dig(
            &link.client,
            &[&format!("@{SERVER_V4}"), &format!("v{n}.rot.test"), "A"],
        );
        assert!(out.contains("status: NOERROR"), "{out}");
    }
    let v = agent.wait_event("flux verdict for rot.test", |e| {
        e["type"] == "verdict" && e["domain"] == "rot.test" && e["level"] == "flux"
    });
    assert!(v["score"].as_f64().unwrap() >= 0.9, "{v}");
    assert!(v["features"]["distinct_ips"].as_u64().unwrap() >= 10, "{v}");
    assert!(!v["reasons"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["allowlisted"], false);
    // The dns events are still there, one per response.
    let dns = agent
        .events()
        .into_iter()
        .filter(|e| {
            e["type"] == "dns" && e["qname"].as_str().is_some_and(|q| q.ends_with("rot.test"))
        })
        .count();
    assert_eq!(dns, 6);
    flux_tests::events_schema::assert_events_match_schema(&agent.events());
    assert!(agent.stop().success());
}
