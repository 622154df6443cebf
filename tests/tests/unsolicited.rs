//! Replies nobody asked for never cause a block (issue 14, item 1), on a real kernel: a veth
//! between two namespaces, the real agent on the client side, and an attacker on the server
//! side that sends flux-looking DNS replies from port 53 of another address (no spoofing, no
//! query from the client: the "plain UDP datagrams" and "replies to a closed port" attacks).
//!
//! The same attack runs twice: with `--accept-unsolicited` (the agent as it was: every reply
//! trusted) the victim name and addresses are blocked, which proves the attack is real; with
//! the default query matching nothing is blocked, the replies are marked unsolicited and
//! counted. A real lookup through dig, whose query left the host, is still scored.

use std::{
    net::{Ipv4Addr, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use flux_tests::*;
use serde_json::Value;

/// The attacker's own address on the server side.
const ATTACKER: &str = "10.77.0.30";

/// A reply for `name` with `ips`, TTL 5.
fn reply(name: &str, ips: &[Ipv4Addr], id: u16) -> Vec<u8> {
    a_reply(name, ips, 5, id)
}

/// Three rounds of flux-looking replies about `www.victim.lab`, each naming five addresses in
/// five /16s plus the address of a real LAN server, a second apart.
fn attack(link: &Link) {
    for round in 0..4u8 {
        let mut ips: Vec<Ipv4Addr> = (0..5u8)
            .map(|i| Ipv4Addr::new(20 + i * 10 + round, 1 + round, 2, 3))
            .collect();
        ips.push(Ipv4Addr::new(10, 77, 0, 2));
        let msg = reply("www.victim.lab", &ips, 0x4000 + u16::from(round));
        link.server.run_in(move || {
            let s = UdpSocket::bind((ATTACKER, 53)).expect("bind :53");
            // A closed port on the client: nobody there asked.
            s.send_to(&msg, (CLIENT_V4, 40_000)).expect("send");
        });
        thread::sleep(Duration::from_millis(1200));
    }
}

fn blocks(pin: &PinDir) -> Vec<Value> {
    let out = agent_cli(
        None,
        &["blocklist", "list", "--json", "--pin-dir", &pin.arg()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("blocklist list --json: one array")
}

fn counter(pin: &PinDir, name: &str) -> u64 {
    let out = agent_cli(None, &["stats", "--json", "--pin-dir", &pin.arg()]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("stats json");
    v["counters"][name].as_u64().unwrap_or(0)
}

fn blocked_victim(pin: &PinDir) -> bool {
    blocks(pin).iter().any(|b| {
        let s = b.to_string();
        s.contains("victim.lab") || s.contains("10.77.0.2\"")
    })
}

fn lab() -> Link {
    let link = Link::new();
    link.server
        .exec(&["ip", "addr", "add", &format!("{ATTACKER}/24"), "dev", "b0"]);
    link
}

const ARGS: [&str; 5] = ["--iface", "a0", "--no-db", "--block-hold", "0s"];

#[test]
fn without_query_matching_the_attack_blocks_a_lan_server() {
    if !privileged() {
        return;
    }
    let link = lab();
    let pin = PinDir::new();
    let mut args = ARGS.to_vec();
    args.push("--accept-unsolicited");
    let mut agent = Agent::start(&link.client, &pin, &args);
    attack(&link);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !blocked_victim(&pin) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        blocked_victim(&pin),
        "the control run should show the attack working: {:?}\n{}",
        blocks(&pin),
        agent.log()
    );
    assert!(agent.stop().success());
}

#[test]
fn replies_nobody_asked_for_never_cause_a_block() {
    if !privileged() {
        return;
    }
    let link = lab();
    let _dnsmasq = start_dnsmasq(&link.server, &["--address=/ok.lab/10.77.0.2".to_owned()]);
    let pin = PinDir::new();
    let mut agent = Agent::start(&link.client, &pin, &ARGS);
    attack(&link);
    thread::sleep(Duration::from_secs(2));
    assert!(
        blocks(&pin).is_empty(),
        "an unsolicited reply caused a block: {:?}",
        blocks(&pin)
    );
    assert!(counter(&pin, "unsolicited_replies") >= 4);
    let events = agent.events();
    let victim: Vec<&Value> = events
        .iter()
        .filter(|e| e["qname"] == "www.victim.lab")
        .collect();
    assert!(!victim.is_empty(), "the replies were captured");
    assert!(
        victim.iter().all(|e| e["unsolicited"] == true),
        "{victim:?}"
    );
    assert!(
        !events.iter().any(
            |e| e["type"] == "verdict" && e["domain"].as_str().unwrap_or("").contains("victim")
        ),
        "an unsolicited reply was scored"
    );

    // A real lookup, whose query left this host, is trusted and scored.
    let out = dig(&link.client, &[&format!("@{SERVER_V4}"), "ok.lab", "A"]);
    assert!(out.contains("10.77.0.2"), "{out}");
    let ok = agent.wait_event("the dig reply", |e| e["qname"] == "ok.lab");
    assert_eq!(ok["unsolicited"], false, "{ok}");
    assert!(counter(&pin, "queries_recorded") >= 1);
    assert!(agent.stop().success());
}
