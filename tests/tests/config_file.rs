//! The configuration file of `run` (issue 16, item 2) and SIGHUP (item 3).
//!
//! Unprivileged: `config check` (exit codes, the one-line errors with line, column, field and
//! allowed values, `--json`), `config show` (where each setting came from), and `run` refusing a
//! bad file before it touches anything.
//!
//! Privileged, in a veth lab (dnsmasq on the server side, dig and the agent on the client
//! side): an agent started with `--config` is sent SIGHUP after its events file was moved away
//! (logrotate) and its allowlist file edited; a new events file is written, the reload line
//! names the change, and `explain` shows the new entry in force. And the events file rotates
//! by size, in whole lines.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use flux_tests::*;
use serde_json::Value;

/// The packaged configuration file.
fn packaged() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/flux-agent.toml")
}

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.0.join(name);
    fs::write(&p, text).expect("write config");
    p.display().to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn config_check_accepts_the_packaged_file_and_names_line_column_and_field() {
    let out = agent_cli(None, &["config", "check", packaged().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid"), "{}", text(&out.stdout));

    let dir = TempDir::new();
    let cases = [
        (
            "# a comment\nblock_action = \"blok\"\n",
            ":2:16: field \"block_action\": unknown value \"blok\", expected one of nxdomain, drop",
        ),
        (
            "xdp_mode = \"auto\"\nmax_keys = \"lots\"\n",
            ":2:12: field \"max_keys\": invalid type: string \"lots\", expected u64",
        ),
        (
            "\n\nblock_tll = \"1h\"\n",
            ":3:1: field \"block_tll\": unknown key, did you mean \"block_ttl\"?",
        ),
        (
            "events_max_size = \"12 parsecs\"\n",
            ":1:19: field \"events_max_size\": invalid value \"12 parsecs\"",
        ),
        (
            "monitor = true\nno_auto_block = true\n",
            ":2:17: field \"no_auto_block\": cannot be used with \"monitor\"",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let path = write(&dir, &format!("bad{i}.toml"), body);
        let out = agent_cli(None, &["config", "check", &path]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(&format!("{path}{want}")),
            "{body}\nwant {want}\ngot {err}"
        );

        let out = agent_cli(None, &["config", "check", &path, "--json"]);
        assert_eq!(out.status.code(), Some(1));
        let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        assert_eq!(doc["valid"], false);
        assert_eq!(doc["file"], path.as_str());
        assert!(doc["error"].as_str().unwrap().contains(want), "{doc}");
        assert!(
            doc["line"].as_u64().is_some() && doc["field"].is_string(),
            "{doc}"
        );
    }

    let good = write(
        &dir,
        "good.toml",
        "block_ttl = \"1h\"\ndns_ports = [53, 5353]\n",
    );
    let out = agent_cli(None, &["config", "check", &good, "--json"]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["keys"], 2);

    let missing = dir.0.join("missing.toml");
    let out = agent_cli(None, &["config", "check", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read configuration file"));
}

#[test]
fn config_show_says_where_each_setting_comes_from() {
    let dir = TempDir::new();
    let path = write(&dir, "f.toml", "block_ttl = \"90m\"\nmonitor = true\n");
    let out = agent_cli(None, &["config", "show", "--config", &path, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &doc["settings"];
    assert_eq!(
        s["block_ttl"],
        serde_json::json!({"value": "90m", "source": "file"})
    );
    assert_eq!(s["monitor"]["source"], "file");
    assert_eq!(
        s["block_hold"],
        serde_json::json!({"value": "2m", "source": "default"})
    );
    assert_eq!(s["metrics"]["source"], "unset");

    let out = agent_cli(None, &["config", "show", "--config", &path]);
    let human = text(&out.stdout);
    assert!(human.contains("block_ttl = \"90m\"  # file"), "{human}");
    assert!(
        human.contains("max_blocks_per_minute = 60  # default"),
        "{human}"
    );

    // The packaged file: metrics on loopback, the events to the file the packaged logrotate
    // rotates (not a line per response to stdout, which is the journal under the unit),
    // everything else the built-in defaults.
    let out = agent_cli(
        None,
        &[
            "config",
            "show",
            "--config",
            packaged().to_str().unwrap(),
            "--json",
        ],
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let from_file: Vec<&str> = doc["settings"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["source"] == "file")
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(from_file, ["events", "metrics"]);
    assert_eq!(doc["settings"]["metrics"]["value"], "127.0.0.1:9580");
    let events = doc["settings"]["events"]["value"].as_str().unwrap();
    assert_eq!(events, "/var/log/flux-agent/events.jsonl");
    let logrotate = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/flux-agent.logrotate"),
    )
    .unwrap();
    assert!(
        logrotate.lines().any(|l| l == format!("{events} {{")),
        "dist/flux-agent.logrotate does not rotate {events}"
    );
}

#[test]
fn run_refuses_a_bad_file_before_touching_anything() {
    let dir = TempDir::new();
    let path = write(&dir, "f.toml", "xdp_mode = \"fast\"\n");
    let pin = PinDir::new();
    let out = agent_cli(None, &["run", "--config", &path, "--pin-dir", &pin.arg()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            ":1:12: field \"xdp_mode\": unknown value \"fast\", expected one of native, skb, auto"
        ),
        "{err}"
    );
    assert!(!pin.0.exists(), "nothing pinned");
}

/// Waits (bounded) until the agent's log contains `what`.
fn wait_log(agent: &Agent, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = agent.log();
        if log.contains(what) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {what:?} in the log:\n{log}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn hup(agent: &Agent) {
    let pid = agent.proc.as_ref().expect("running").child.id();
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

fn lines(p: &Path) -> Vec<Value> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a whole line {l:?}: {e}")))
        .collect()
}

/// `explain NAME --json` against the running agent: the allowlist rule it matches, if any.
fn allowlist_match(ns: &Netns, pin: &PinDir, name: &str) -> Value {
    let out = agent_cli(
        Some(ns),
        &["explain", name, "--pin-dir", &pin.arg(), "--json"],
    );
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("explain: {e}: {}", text(&out.stderr)));
    assert_eq!(doc["tracked"], true, "{doc}");
    doc["verdict"]["allowlist_match"].clone()
}

#[test]
fn sighup_reopens_the_moved_events_file_and_reloads_the_allowlist() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let _dns = start_dnsmasq(&link.server, &[]);
    let dir = TempDir::new();
    let allow = write(&dir, "allow.txt", "# nothing yet\n");
    let config = write(
        &dir,
        "flux-agent.toml",
        &format!(
            "ifaces = [\"a0\"]\nno_db = true\nno_default_allowlist = true\nallowlist = [\"{allow}\"]\n"
        ),
    );
    let pin = PinDir::new();
    let mut agent = Agent::start(&link.client, &pin, &["--config", &config]);
    let log = agent.log();
    assert!(log.contains("a0 ("), "the file's ifaces: {log}");
    assert!(
        log.contains(&format!("configuration {config}: 4 keys set")),
        "{log}"
    );

    // A file feed, edited before the SIGHUP: the reload syncs it again.
    let feed = write(&dir, "feed.txt", "bad1.example\n");
    let out = agent_cli(
        Some(&link.client),
        &["feed", "add", "local", &feed, "--pin-dir", &pin.arg()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    dig(
        &link.client,
        &[&format!("@{SERVER_V4}"), "a.flux.test", "A"],
    );
    agent.wait_event("first answer", |e| e["qname"] == "a.flux.test");
    assert_eq!(
        allowlist_match(&link.client, &pin, "a.flux.test"),
        Value::Null
    );

    // logrotate: move the file, then SIGHUP. The allowlist gains an entry meanwhile.
    let rotated = PathBuf::from(format!("{}.1", agent.events.display()));
    fs::rename(&agent.events, &rotated).unwrap();
    fs::write(&allow, "# now\nflux.test\n").unwrap();
    fs::write(&feed, "bad1.example\nbad2.example\n").unwrap();
    hup(&agent);
    let log = wait_log(&agent, "reload: ");
    let line = log.lines().find(|l| l.contains("reload: ")).unwrap();
    eprintln!("{line}");
    assert!(line.contains("config unchanged"), "{line}");
    assert!(line.contains("allowlist +1 -0"), "{line}");
    assert!(line.contains("events reopened"), "{line}");
    assert!(line.contains("feeds 1 (1 changed: local +1 -0)"), "{line}");
    let out = agent_cli(
        Some(&link.client),
        &["blocklist", "list", "--json", "--pin-dir", &pin.arg()],
    );
    assert!(
        text(&out.stdout).contains("bad2.example"),
        "the feed's new entry is blocked"
    );
    assert!(agent.events.exists(), "a new events file at the old path");

    dig(
        &link.client,
        &[&format!("@{SERVER_V4}"), "www.flux.test", "A"],
    );
    agent.wait_event("answer after the reload", |e| e["qname"] == "www.flux.test");
    let old = lines(&rotated);
    assert!(old.iter().any(|e| e["qname"] == "a.flux.test"), "{old:?}");
    assert!(
        !old.iter().any(|e| e["qname"] == "www.flux.test"),
        "{old:?}"
    );
    assert!(
        !lines(&agent.events)
            .iter()
            .any(|e| e["qname"] == "a.flux.test")
    );
    assert_eq!(
        allowlist_match(&link.client, &pin, "a.flux.test"),
        "suffix flux.test",
        "the reloaded allowlist is in force"
    );

    // A key that needs a restart is named, and the agent keeps running on what it has.
    fs::write(
        &config,
        format!(
            "ifaces = [\"a0\"]\nno_db = true\nno_default_allowlist = true\nallowlist = [\"{allow}\"]\nblock_ttl = \"1h\"\n"
        ),
    )
    .unwrap();
    hup(&agent);
    let log = wait_log(&agent, "block_ttl need a restart");
    assert!(log.contains("restart flux-agent to apply"), "{log}");

    assert!(agent.stop().success(), "{}", agent.log());
    let log = agent.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !flux_agent::control::socket_path(&pin.0).exists(),
        "no stale control socket"
    );
}

#[test]
fn the_events_file_rotates_by_size_in_whole_lines() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let _dns = start_dnsmasq(&link.server, &[]);
    let dir = TempDir::new();
    // A dns event is some 400 bytes: a few per file.
    let config = write(
        &dir,
        "flux-agent.toml",
        "ifaces = [\"a0\"]\nno_db = true\nevents_max_size = \"2K\"\nevents_keep = 2\n",
    );
    let pin = PinDir::new();
    let mut agent = Agent::start(&link.client, &pin, &["--config", &config]);
    const QUERIES: usize = 20;
    for i in 0..QUERIES {
        dig(
            &link.client,
            &[&format!("@{SERVER_V4}"), &format!("n{i}.flux.test"), "A"],
        );
    }
    let last = format!("n{}.flux.test", QUERIES - 1);
    agent.wait_event("the last answer", |e| e["qname"] == last.as_str());
    assert!(agent.stop().success());
    let base = agent.events.display().to_string();
    let one = PathBuf::from(format!("{base}.1"));
    let two = PathBuf::from(format!("{base}.2"));
    assert!(one.exists() && two.exists(), "rotated twice at least");
    assert!(
        !PathBuf::from(format!("{base}.3")).exists(),
        "--events-keep 2"
    );
    // Whole JSON lines, each file at most the bound, and in order across the files.
    let mut seen = Vec::new();
    for p in [&two, &one, &agent.events] {
        assert!(fs::metadata(p).unwrap().len() <= 2048, "{p:?}");
        seen.extend(
            lines(p)
                .into_iter()
                .filter(|e| e["type"] == "dns")
                .filter_map(|e| e["qname"].as_str().map(str::to_owned)),
        );
    }
    let n = |q: &str| -> usize { q[1..q.find('.').unwrap()].parse().unwrap() };
    let numbers: Vec<usize> = seen.iter().map(|q| n(q)).collect();
    let first = numbers[0];
    assert_eq!(numbers, (first..QUERIES).collect::<Vec<_>>(), "{seen:?}");
}
