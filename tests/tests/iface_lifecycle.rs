//! Interfaces come and go (issue 14, item 6), on a real kernel: real dnsmasq on the server side
//! of a veth, the real agent on the client side. A domain is blocked (dig gets NXDOMAIN), then
//! the veth pair is deleted and created again with the same names and addresses.
//!
//! While it is gone, `stats --json` shows the interface absent (and the agent logs it); once it
//! is back, the agent attaches again by itself and the blocked domain is NXDOMAIN again within
//! a few seconds, with the same pinned maps, while other names still resolve. Before this, the
//! agent noticed nothing, `stats` had no interface states and the blocked name resolved.

use std::{
    process::Output,
    thread,
    time::{Duration, Instant},
};

use flux_tests::*;
use serde_json::Value;

/// How long the agent may take to notice a removed or returning interface. A link event is
/// handled at once; this leaves room for a busy CI machine.
const NOTICE_WITHIN: Duration = Duration::from_secs(5);

fn cli(pin: &PinDir, args: &[&str]) -> Output {
    pin_cli(None, pin, args)
}

/// The state of `name` in `stats --json`.
fn iface(pin: &PinDir, name: &str) -> Value {
    let out = cli(pin, &["stats", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stats --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    v["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no interface {name} in stats: {v}"))
}

/// Polls `f` until it holds, for at most [`NOTICE_WITHIN`].
fn within(what: &str, agent: &Agent, f: impl Fn() -> bool) {
    let deadline = Instant::now() + NOTICE_WITHIN;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {NOTICE_WITHIN:?}; agent log:\n{}",
            agent.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn status(dig_out: &str) -> &str {
    dig_out
        .split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("")
}

/// Deletes the veth pair (deleting one end removes the other).
fn delete_pair(link: &Link) {
    link.client.exec(&["ip", "link", "del", "a0"]);
}

/// Creates the pair again as `Link::new` does: same names, same addresses.
fn create_pair(link: &Link) {
    ip(&[
        "link",
        "add",
        "a0",
        "netns",
        &link.client.name,
        "type",
        "veth",
        "peer",
        "name",
        "b0",
        "netns",
        &link.server.name,
    ]);
    for (ns, dev, v4, v6) in [
        (&link.client, "a0", CLIENT_V4, CLIENT_V6),
        (&link.server, "b0", SERVER_V4, SERVER_V6),
    ] {
        ns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", dev]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            dev,
            "nodad",
        ]);
        ns.exec(&["ip", "link", "set", dev, "up"]);
    }
}

fn dnsmasq(link: &Link) -> Proc {
    start_dnsmasq(
        &link.server,
        &[
            "--local=/ok.test/".into(),
            "--host-record=ok.test,192.0.2.99".into(),
        ],
    )
}

#[test]
fn a_recreated_interface_is_attached_again_and_blocks_resume() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let dns = dnsmasq(&link);
    let pin = PinDir::new();
    let mut agent = Agent::start(&link.client, &pin, &["--iface", "a0", "--no-db"]);
    let server = format!("@{SERVER_V4}");

    let added = cli(&pin, &["blocklist", "add", "--domain", "flux.test"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let out = dig(&link.client, &[&server, "a.flux.test", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "blocked before: {out}");
    let first = iface(&pin, "a0");
    assert_eq!(first["state"], "attached", "{first}");
    let old_index = first["ifindex"].as_u64().expect("ifindex while attached");
    assert!(first["since"].is_string(), "{first}");

    // Removed: logged, and shown absent.
    delete_pair(&link);
    drop(dns);
    within("a0 shown absent", &agent, || {
        iface(&pin, "a0")["state"] == "absent"
    });
    let gone = iface(&pin, "a0");
    assert!(gone["ifindex"].is_null(), "{gone}");
    assert!(gone["since"].is_string(), "{gone}");
    let human = cli(&pin, &["stats"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("a0") && human.contains("absent"),
        "human stats: {human}"
    );
    assert!(
        agent.log().contains("a0") && agent.log().contains("was removed"),
        "removal not logged:\n{}",
        agent.log()
    );

    // Back with the same name (a new ifindex): attached again by itself, blocks still there.
    create_pair(&link);
    let _dns = dnsmasq(&link);
    within("a0 attached again", &agent, || {
        iface(&pin, "a0")["state"] == "attached"
    });
    let back = iface(&pin, "a0");
    assert_ne!(back["ifindex"].as_u64(), Some(old_index), "{back}");
    let deadline = Instant::now() + NOTICE_WITHIN;
    loop {
        let out = try_dig(&link.client, &[&server, "a.flux.test", "A"]);
        if status(&out) == "NXDOMAIN" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "blocked name resolves after the interface returned: {out}\nagent log:\n{}",
            agent.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let ok = dig(&link.client, &[&server, "ok.test", "A", "+short"]);
    assert!(ok.contains("192.0.2.99"), "a name not blocked: {ok}");
    assert!(
        agent.log().contains("attached again"),
        "re-attach not logged:\n{}",
        agent.log()
    );
    assert!(agent.stop().success(), "{}", agent.log());
}
