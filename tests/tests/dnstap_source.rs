//! dnstap as the agent's only source: a real unbound (Debian's, built with dnstap) in the client
//! namespace resolves a rotating flux zone that dnsmasq serves from the server namespace, and
//! logs its client and resolver responses over Frame Streams to `flux-agent run --no-xdp
//! --dnstap-socket`. No XDP program is attached anywhere: the agent must score the flux name
//! from dnstap alone and block it (the blocklist shows it).

use std::{
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use flux_tests::*;
use serde_json::Value;

/// Writes the flux zone's addresses for round `round` (five fresh ones, each in its own /16)
/// and a steady CDN-like name, and makes dnsmasq reread them.
fn rotate(hosts: &Path, dns: &Proc, round: u32) {
    let mut text = fluxy_hosts(round);
    text.push_str("198.51.100.10 edge.cdnish.test\n198.51.100.11 edge.cdnish.test\n");
    reload_hosts(hosts, dns, &text);
}

/// unbound in `ns` on 127.0.0.1:53, recursing to dnsmasq for the two zones, caching nothing
/// (every lookup goes upstream, so every rotation is seen), writing dnstap to `socket`.
fn start_unbound(ns: &Netns, dir: &Path, socket: &Path) -> Proc {
    let conf = dir.join("unbound.conf");
    let text = format!(
        r#"server:
    verbosity: 1
    interface: 127.0.0.1
    port: 53
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    cache-max-ttl: 0
    cache-max-negative-ttl: 0
    do-not-query-localhost: no
    local-zone: "test." nodefault
stub-zone:
    name: "fluxy.test"
    stub-addr: {SERVER_V4}
stub-zone:
    name: "cdnish.test"
    stub-addr: {SERVER_V4}
dnstap:
    dnstap-enable: yes
    dnstap-socket-path: "{sock}"
    dnstap-send-identity: yes
    dnstap-log-client-response-messages: yes
    dnstap-log-resolver-response-messages: yes
"#,
        dir = dir.display(),
        sock = socket.display()
    );
    std::fs::write(&conf, text).expect("write unbound.conf");
    let check = run(std::process::Command::new("unbound-checkconf").arg(&conf));
    assert!(
        check.status.success(),
        "unbound-checkconf: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let mut cmd = ns.cmd("unbound");
    cmd.args(["-d", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("unbound.log")).expect("log file"));
    let p = Proc::spawn("unbound", &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = try_dig(ns, &["@127.0.0.1", "edge.cdnish.test", "+short"]);
        if out.contains("198.51.100.1") {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "unbound did not answer:\n{}",
            slurp(&dir.join("unbound.log"))
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn blocklist(pin: &PinDir) -> Vec<Value> {
    let o = agent_cli(
        None,
        &["blocklist", "list", "--json", "--pin-dir", &pin.arg()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON array")
}

#[test]
fn unbound_dnstap_alone_scores_and_blocks() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let dir = TempDir::new();
    let hosts = dir.0.join("hosts");
    std::fs::write(&hosts, "").expect("hosts");
    let dns = start_dnsmasq(
        &link.server,
        &[
            format!("--addn-hosts={}", hosts.display()),
            "--local=/fluxy.test/".into(),
            "--local=/cdnish.test/".into(),
            "--local-ttl=30".into(),
        ],
    );
    rotate(&hosts, &dns, 0);
    let socket = dir.0.join("dnstap.sock");
    let sock = socket.display().to_string();
    let pin = PinDir::new();
    let mut agent = Agent::start(
        &link.client,
        &pin,
        &[
            "--no-xdp",
            "--dnstap-socket",
            &sock,
            "--no-db",
            "--block-hold",
            "0s",
        ],
    );
    assert!(agent.log().contains("dnstap only"), "{}", agent.log());
    let _unbound = start_unbound(&link.client, &dir.0, &socket);
    // No XDP program anywhere in the lab: dnstap is the only source.
    assert_eq!(xdp_prog_on(&link.client, "a0"), None);
    assert_eq!(xdp_prog_on(&link.server, "b0"), None);

    let flux_blocked = |a: &Agent| {
        a.events().iter().any(|e| {
            e["type"] == "block"
                && e["action"] == "blocked"
                && e["target"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("fluxy.test"))
        })
    };
    for round in 1..=14u32 {
        rotate(&hosts, &dns, round);
        thread::sleep(Duration::from_millis(300));
        let out = dig(&link.client, &["@127.0.0.1", "www.fluxy.test", "+short"]);
        assert!(out.contains(".7"), "round {round}: {out}");
        let cdn = dig(&link.client, &["@127.0.0.1", "edge.cdnish.test", "+short"]);
        assert!(cdn.contains("198.51.100.1"), "round {round}: {cdn}");
        if flux_blocked(&agent) {
            break;
        }
    }
    // The responses came in over dnstap, marked as such and never unsolicited; both kinds
    // unbound logs (its answers to the client, the authority's answers to it) arrived.
    let events = agent.events();
    let dns_events: Vec<&Value> = events.iter().filter(|e| e["type"] == "dns").collect();
    assert!(
        dns_events
            .iter()
            .any(|e| e["qname"] == "www.fluxy.test" && e["src"] == SERVER_V4),
        "no resolver response from the authority; agent log:\n{}",
        agent.log()
    );
    assert!(
        dns_events
            .iter()
            .any(|e| e["qname"] == "www.fluxy.test" && e["dst"] == "127.0.0.1"),
        "no client response"
    );
    assert!(
        dns_events
            .iter()
            .all(|e| e["iface"] == "dnstap" && e["unsolicited"] == false)
    );
    let v = agent.wait_event("flux verdict", |e| {
        e["type"] == "verdict" && e["level"] == "flux"
    });
    let key = v["domain"].as_str().expect("domain").to_owned();
    assert!(key.ends_with("fluxy.test"), "{v}");
    agent.wait_event("domain block", |e| {
        e["type"] == "block" && e["action"] == "blocked" && e["target"] == key.as_str()
    });
    flux_tests::events_schema::assert_events_match_schema(&agent.events());

    let list = blocklist(&pin);
    let entry = list
        .iter()
        .find(|e| e["kind"] == "domain" && e["value"] == key.as_str())
        .unwrap_or_else(|| panic!("{key} not in the blocklist: {list:?}"));
    assert_eq!(entry["source"], "scorer");
    assert!(
        !list.iter().any(|e| e["value"]
            .as_str()
            .is_some_and(|v| v.contains("cdnish") || v.starts_with("198.51.100."))),
        "the steady name was blocked: {list:?}"
    );
    assert!(agent.stop().success());
    assert!(!socket.exists(), "the socket file is removed at exit");
    assert!(agent.log().contains("dnstap: "), "{}", agent.log());
}
