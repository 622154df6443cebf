//! Pins are checked by identity (issue 14, item 7): a map pinned under one of our names must be
//! the map the attached program uses. Here one pin of a running agent is replaced by a map of
//! exactly the same layout (bpftool), as an attacker or a careless script could: `blocklist add`
//! must refuse with a line naming the pin and both map ids, `stats` must report it, and a new
//! `run` over that folder must refuse too. Before, `add` reported success while the kernel kept
//! enforcing the old map. And on an upgrade, the one pin whose contents may be lost (pending
//! queries) is replaced when its layout is an older version's; the others are still refused.

use std::process::{Command, Output};

use flux_tests::*;
use serde_json::Value;

fn cli(pin: &PinDir, args: &[&str]) -> Output {
    pin_cli(None, pin, args)
}

fn bpftool_json(args: &[&str]) -> Value {
    let out = run(Command::new("bpftool").arg("-j").args(args));
    serde_json::from_slice(&out.stdout).expect("bpftool -j output")
}

/// Pins a new map at the pin `name` in `pin` (removing what is there) with bpftool: `kind`,
/// key and value sizes, capacity and flags as bpftool reads them.
fn pin_new_map(
    pin: &PinDir,
    name: &str,
    kind: &str,
    key: &str,
    value: &str,
    entries: &str,
    flags: &str,
) {
    let path = pin.0.join(name);
    let path = path.to_str().expect("utf-8");
    std::fs::remove_file(path).expect("remove the pin");
    run(Command::new("bpftool").args([
        "map", "create", path, "type", kind, "key", key, "value", value, "entries", entries,
        "name", name, "flags", flags,
    ]));
}

/// A lab link and a pin folder an agent ran on once and stopped, its pins left in place.
fn folder_an_agent_ran_on() -> (Link, PinDir) {
    let link = Link::new();
    let pin = PinDir::new();
    let mut agent = Agent::start(&link.client, &pin, &["--iface", "a0", "--no-db"]);
    assert!(agent.stop().success(), "{}", agent.log());
    (link, pin)
}

/// Replaces the pin `name` with a new map of the same type, sizes and flags; returns the
/// (old, new) map ids.
fn replace_pin(pin: &PinDir, name: &str) -> (u64, u64) {
    let path = pin.0.join(name);
    let path = path.to_str().expect("utf-8");
    let old = bpftool_json(&["map", "show", "pinned", path]);
    let s = |k: &str| old[k].to_string();
    pin_new_map(
        pin,
        name,
        old["type"].as_str().expect("type"),
        &s("bytes_key"),
        &s("bytes_value"),
        &s("max_entries"),
        &s("flags"),
    );
    let new = bpftool_json(&["map", "show", "pinned", path]);
    (
        old["id"].as_u64().expect("id"),
        new["id"].as_u64().expect("id"),
    )
}

#[test]
fn a_replaced_pin_is_refused_and_reported() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let pin = PinDir::new();
    let mut agent = Agent::start(&link.client, &pin, &["--iface", "a0", "--no-db"]);
    let ok = cli(&pin, &["blocklist", "add", "--ip", "10.77.0.20"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let (old_id, new_id) = replace_pin(&pin, "BLOCKED_V4");
    let pin_path = pin.0.join("BLOCKED_V4").display().to_string();

    let add = cli(&pin, &["blocklist", "add", "--ip", "10.77.0.21"]);
    let err = String::from_utf8_lossy(&add.stderr);
    assert!(!add.status.success(), "add accepted a replaced pin: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    for needle in [
        pin_path.as_str(),
        &format!("map id {new_id}"),
        &format!("map id {old_id}"),
        "not the map the attached program uses",
    ] {
        assert!(err.contains(needle), "{needle:?} missing: {err}");
    }
    let list = cli(&pin, &["blocklist", "list"]);
    assert!(!list.status.success(), "list read the replaced pin");

    let stats = cli(&pin, &["stats", "--json"]);
    assert!(
        !stats.status.success(),
        "stats exits non-zero on a replaced pin"
    );
    let v: Value = serde_json::from_slice(&stats.stdout).expect("stats --json");
    let replaced = v["replaced_pins"].as_array().expect("replaced_pins");
    assert_eq!(replaced.len(), 1, "{v}");
    assert_eq!(replaced[0]["pin"], pin_path.as_str());
    assert_eq!(replaced[0]["pinned_id"].as_u64(), Some(new_id));
    assert_eq!(replaced[0]["used_id"].as_u64(), Some(old_id));
    let human = cli(&pin, &["stats"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("PIN REPLACED"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );

    // A restart over that folder refuses to reuse it.
    assert!(agent.stop().success(), "{}", agent.log());
    let again = agent_cli(
        Some(&link.client),
        &["run", "--iface", "a0", "--no-db", "--pin-dir", &pin.arg()],
    );
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "run reused a replaced pin: {err}");
    assert!(
        err.contains(&pin_path) && err.contains(&format!("map id {old_id}")),
        "{err}"
    );
    let _ = cli(&pin, &["unload"]);
}

/// An upgrade over a folder whose pending-query map has an older layout (its key was 40 bytes
/// before it became 16): `run` replaces that one pin, says so, and starts; the new pin has this
/// version's layout. A blocklist pin of another layout is still refused: those hold state
/// nobody may lose.
#[test]
fn an_older_pending_query_map_is_replaced_on_upgrade() {
    if !privileged() {
        return;
    }
    let (link, pin) = folder_an_agent_ran_on();

    // The layout flux-agent pinned before: 40-byte key, 16-byte value.
    pin_new_map(&pin, "QUERIES", "lru_hash", "40", "16", "65536", "0");
    let mut agent = Agent::start(&link.client, &pin, &["--iface", "a0", "--no-db"]);
    let log = agent.log();
    assert!(
        log.contains("QUERIES") && log.contains("key size 40, expected 16"),
        "{log}"
    );
    let path = pin.0.join("QUERIES");
    let now = bpftool_json(&["map", "show", "pinned", path.to_str().expect("utf-8")]);
    assert_eq!(now["bytes_key"].as_u64(), Some(16), "{now}");
    assert!(agent.stop().success(), "{}", agent.log());

    // A blocklist of another layout (4-byte key, 8-byte value) is refused, not replaced.
    pin_new_map(&pin, "BLOCKED_V4", "hash", "4", "8", "1024", "1");
    let again = agent_cli(
        Some(&link.client),
        &["run", "--iface", "a0", "--no-db", "--pin-dir", &pin.arg()],
    );
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "run replaced a blocklist: {err}");
    assert!(
        err.contains("BLOCKED_V4") && err.contains("value size 8"),
        "{err}"
    );
    let _ = cli(&pin, &["unload"]);
}

/// An upgrade over a folder whose front filters have the older layout (one entry a word, before
/// the words became one value): `run` replaces both pins, says so, and starts; the new pins
/// have this version's layout, and the IPv4 filter covers an address blocked before the
/// upgrade (the agent and the CLI fill a filter that is not ready when they open the maps).
#[test]
fn older_front_filters_are_replaced_on_upgrade_and_filled() {
    use flux_agent::enforce::maps::Maps;
    use flux_common::{FRONT_NAMES_SLOTS, FRONT_V4_SLOTS};
    use std::net::{IpAddr, Ipv4Addr};
    if !privileged() {
        return;
    }
    let (link, pin) = folder_an_agent_ran_on();
    let blocked = Ipv4Addr::new(203, 0, 113, 77);
    let add = cli(&pin, &["blocklist", "add", "--ip", &blocked.to_string()]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );

    // The layout flux-agent pinned before: an array of 8-byte words, mmap-able (1024), here
    // ready (its last word set), as an older agent leaves it. This test keeps each open.
    let mut old = Vec::new();
    for (name, words) in [
        ("FRONT_V4", FRONT_V4_SLOTS),
        ("FRONT_NAMES", FRONT_NAMES_SLOTS),
    ] {
        pin_new_map(&pin, name, "array", "4", "8", &words.to_string(), "1024");
        let data = aya::maps::MapData::from_pin(pin.0.join(name)).expect("open the old pin");
        let mut array: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("an array of words");
        array.set(words - 1, 1, 0).expect("set the ready word");
        old.push((name, words, array));
    }
    let mut agent = Agent::start(&link.client, &pin, &["--iface", "a0", "--no-db"]);
    // Turned off before it was unpinned: a program still attached to it (were this start to
    // fail) would look every address up rather than trust bits nobody keeps any more.
    for (name, words, array) in &old {
        assert_eq!(
            array.get(&(words - 1), 0).expect("read"),
            0,
            "{name}: turned off"
        );
    }
    let log = agent.log();
    for (name, words) in [
        ("FRONT_V4", FRONT_V4_SLOTS),
        ("FRONT_NAMES", FRONT_NAMES_SLOTS),
    ] {
        assert!(
            log.contains(name) && log.contains("filled from the blocklists"),
            "{name}: {log}"
        );
        let path = pin.0.join(name);
        let now = bpftool_json(&["map", "show", "pinned", path.to_str().expect("utf-8")]);
        assert_eq!(now["max_entries"].as_u64(), Some(1), "{now}");
        assert_eq!(
            now["bytes_value"].as_u64(),
            Some(u64::from(words) * 8),
            "{now}"
        );
    }
    let maps = Maps::open(&pin.0).expect("open the maps");
    assert_eq!(
        maps.front_covers(&IpAddr::V4(blocked))
            .expect("read the filter"),
        Some((true, true)),
        "the blocked address's /24 set, the filter ready"
    );
    assert!(agent.stop().success(), "{}", agent.log());
    let _ = cli(&pin, &["unload"]);
}
