//! Threat-intelligence feeds on a real kernel (issue 15 item 2): a feed-listed name is answered
//! NXDOMAIN and a feed-listed address dropped; a feed listing the resolver, this host, loopback
//! and 0.0.0.0/0 does not cut the host off; removing a feed keeps a manual block on the same
//! target; a URL feed served by a real HTTP server (python3 http.server in the lab) is refreshed
//! by the running agent, answered 304 when unchanged, and a truncated download, an unreachable
//! server, a file where nothing parses or a feed larger than the map keeps the old entries; and
//! agent A's export (plain, STIX, MISP) imported by agent B as a feed gives B the same blocks.
//! Each lab has its own pin folder and state database.

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    process::{Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use flux_tests::*;
use serde_json::Value;

fn cli(ns: &Netns, pin: &PinDir, args: &[&str]) -> Output {
    pin_cli(Some(ns), pin, args)
}

#[track_caller]
fn cli_ok(ns: &Netns, pin: &PinDir, args: &[&str]) -> String {
    pin_cli_ok(Some(ns), pin, args)
}

/// A command expected to fail: its `--json` error document.
#[track_caller]
fn cli_err(ns: &Netns, pin: &PinDir, args: &[&str]) -> String {
    let o = cli(ns, pin, args);
    assert!(
        !o.status.success(),
        "flux-agent {args:?} should have failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "one JSON document: {e}: {}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    v["error"].as_str().expect("an error").to_owned()
}

/// The blocked values in the maps.
fn blocked(ns: &Netns, pin: &PinDir) -> BTreeSet<String> {
    let out = cli_ok(ns, pin, &["blocklist", "list", "--json"]);
    let v: Vec<Value> = serde_json::from_str(&out).expect("one array");
    v.iter()
        .filter_map(|e| e["value"].as_str().map(str::to_owned))
        .collect()
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("?")
}

fn lookup(link: &Link, name: &str) -> String {
    status(&dig(&link.client, &[&format!("@{SERVER_V4}"), name])).to_owned()
}

fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// `feed list --json` of the lab's database.
fn feeds(pin: &PinDir) -> Vec<Value> {
    let state = state_path_for(&pin.0);
    let o = agent_cli(
        None,
        &["feed", "list", "--json", "--state", state.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one array")
}

fn feed_record(pin: &PinDir, name: &str) -> Value {
    feeds(pin)
        .into_iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no feed {name}"))
}

const AGENT_ARGS: &[&str] = &["--iface", "a0", "--no-db"];

#[test]
fn a_feed_blocks_names_and_addresses_never_the_host_and_leaves_manual_blocks() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    link.server
        .exec(&["ip", "addr", "add", "10.77.0.20/24", "dev", "b0"]);
    let _dns = start_dnsmasq(
        &link.server,
        &[
            "--local=/ok.test/".into(),
            "--host-record=ok.test,192.0.2.99".into(),
            "--local=/gone.test/".into(),
            "--host-record=gone.test,192.0.2.98".into(),
        ],
    );
    let _echo = Echo::start(&link.server, &[SERVER_V4, "10.77.0.20"]);
    let pin = PinDir::new();
    let _agent = Agent::start(&link.client, &pin, AGENT_ARGS);
    let c = &link.client;
    assert_eq!(lookup(&link, "a.flux.test"), "NOERROR");
    assert_eq!(reach(c, "10.77.0.20"), Reach::ALL, "before");
    // A manual block the feed also lists.
    cli_ok(c, &pin, &["blocklist", "add", "--domain", "gone.test"]);
    // Allowed by the operator: the feed's entries under them are skipped and reported.
    cli_ok(c, &pin, &["allowlist", "add", "--domain", "allowed.test"]);
    cli_ok(c, &pin, &["allowlist", "add", "--cidr", "198.51.100.0/24"]);

    let dir = TempDir::new();
    let file = dir.0.join("intel.txt");
    let feed = format!(
        "# a plain list\na.flux.test\ngone.test\n10.77.0.20\n\
         {SERVER_V4}\n{CLIENT_V4}\n127.0.0.1\n0.0.0.0/0\n10.77.0.0/24\n\
         not a domain at all!\nsteam community\nx.allowed.test\n198.51.100.7\n"
    );
    fs::write(&file, feed).unwrap();
    let out = cli_ok(
        c,
        &pin,
        &[
            "feed",
            "add",
            "intel",
            file.to_str().unwrap(),
            "--resolver",
            SERVER_V4,
            "--json",
        ],
    );
    let r: Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(r["format"], "plain", "{r}");
    // The guard: the resolver, this host, loopback, everything and a net covering the resolver.
    assert_eq!(r["guarded_count"], 5, "{r}");
    let guarded: Vec<&str> = r["guarded"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["target"].as_str())
        .collect();
    for g in [
        SERVER_V4,
        CLIENT_V4,
        "127.0.0.1",
        "0.0.0.0/0",
        "10.77.0.0/24",
    ] {
        assert!(guarded.contains(&g), "{g} not guarded: {r}");
    }
    // Bad lines are warnings with their line numbers.
    assert_eq!(r["warning_count"], 2, "{r}");
    assert_eq!(r["warnings"][0]["line"], 10, "{r}");
    assert_eq!(r["entries"], 3, "{r}");
    // The allowlist (read from its maps) wins over the feed.
    assert_eq!(r["allowlisted_count"], 2, "{r}");
    // The human output names them too.
    let human = cli_ok(
        c,
        &pin,
        &["feed", "update", "intel", "--resolver", SERVER_V4],
    );
    assert!(
        human.contains("never to be blocked") && human.contains("line 10"),
        "{human}"
    );

    // (a) the name is answered NXDOMAIN by the kernel, (b) the address is dropped.
    assert_eq!(lookup(&link, "a.flux.test"), "NXDOMAIN");
    assert_eq!(reach(c, "10.77.0.20"), Reach::NONE);
    // (d) the host is not cut off: its resolver answers, and is reachable.
    assert_eq!(lookup(&link, "ok.test"), "NOERROR");
    assert_eq!(reach(c, SERVER_V4), Reach::ALL);
    let b = blocked(c, &pin);
    for v in ["a.flux.test", "gone.test", "10.77.0.20"] {
        assert!(b.contains(v), "{v}: {b:?}");
    }
    for v in [SERVER_V4, CLIENT_V4, "0.0.0.0/0", "127.0.0.1"] {
        assert!(!b.contains(v), "{v} blocked: {b:?}");
    }
    let f = feed_record(&pin, "intel");
    assert_eq!(f["entry_count"], 3, "{f}");
    assert_eq!(f["last_result"], "ok: 3 entries", "{f}");

    ttl_renews_the_maps_expiry(c, &pin, &file);

    // (e) removing the feed removes its entries, not the manual block on the same target.
    let out = cli_ok(c, &pin, &["feed", "remove", "intel", "--json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["map_entries_removed"], 2, "{r}");
    assert_eq!(lookup(&link, "a.flux.test"), "NOERROR");
    assert_eq!(reach(c, "10.77.0.20"), Reach::ALL);
    assert_eq!(
        lookup(&link, "gone.test"),
        "NXDOMAIN",
        "the manual block stays"
    );
    assert_eq!(blocked(c, &pin), BTreeSet::from(["gone.test".to_owned()]));
    let e = cli_err(c, &pin, &["feed", "remove", "intel", "--json"]);
    assert!(e.contains("no feed named"), "{e}");
}

/// `--ttl`: a load renews the expiry, in the database and in the maps, once less than half the
/// ttl is left (`flux_state::RENEW_BELOW`; an earlier load rewrites nothing), and a target the
/// operator blocked for good stays blocked for good (`gone.test`).
fn ttl_renews_the_maps_expiry(c: &Netns, pin: &PinDir, file: &Path) {
    let expiry = |v: &str| -> Value {
        let out = cli_ok(c, pin, &["blocklist", "list", "--json"]);
        let l: Vec<Value> = serde_json::from_str(&out).unwrap();
        l.into_iter().find(|e| e["value"] == v).unwrap()["expires"].clone()
    };
    let add_ttl = [
        "feed",
        "add",
        "intel",
        file.to_str().unwrap(),
        "--ttl",
        "10s",
        "--resolver",
        SERVER_V4,
    ];
    cli_ok(c, pin, &add_ttl);
    let first = expiry("a.flux.test");
    assert!(first.is_string(), "expires with --ttl: {first}");
    assert!(
        expiry("gone.test").is_null(),
        "the manual block stays permanent"
    );
    // At once: more than half the ttl is left, nothing is rewritten.
    cli_ok(
        c,
        pin,
        &["feed", "update", "intel", "--resolver", SERVER_V4],
    );
    assert_eq!(expiry("a.flux.test"), first, "renewed too early");
    // Past half the ttl (whole seconds are stored: 5 s of 10 and a bit).
    thread::sleep(Duration::from_millis(6100));
    cli_ok(
        c,
        pin,
        &["feed", "update", "intel", "--resolver", SERVER_V4],
    );
    let second = expiry("a.flux.test");
    assert!(
        second.as_str() > first.as_str(),
        "renewed: {first} -> {second}"
    );
    assert!(expiry("gone.test").is_null());
}

/// A feed server in the lab: python3's http.server (Last-Modified, 304 on If-Modified-Since)
/// over the directory, except that while `NAME.truncate` exists a GET of NAME promises more
/// bytes than it sends (a download cut short).
const SERVER_PY: &str = r#"
import http.server, os, sys
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        p = self.translate_path(self.path)
        if os.path.exists(p + ".truncate"):
            body = open(p, "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        return super().do_GET()
os.chdir(sys.argv[1])
http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), H).serve_forever()
"#;

const HTTP_PORT: &str = "8088";

fn start_http(ns: &Netns, dir: &Path) -> Proc {
    let script = dir.join("serve.py");
    fs::write(&script, SERVER_PY).unwrap();
    let root = dir.join("www");
    fs::create_dir_all(&root).unwrap();
    let mut cmd = ns.cmd("python3");
    cmd.arg(&script)
        .arg(&root)
        .args([SERVER_V4, HTTP_PORT])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let p = Proc::spawn("http.server", &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ns_reachable(ns) {
        assert!(Instant::now() < deadline, "http.server did not come up");
        thread::sleep(Duration::from_millis(100));
    }
    p
}

fn ns_reachable(ns: &Netns) -> bool {
    ns.run_in(|| {
        std::net::TcpStream::connect_timeout(
            &format!("{SERVER_V4}:{HTTP_PORT}").parse().unwrap(),
            Duration::from_millis(200),
        )
        .is_ok()
    })
}

/// Writes the served feed with a modification time a second later than the last one, so
/// `Last-Modified` (whole seconds) changes.
fn publish(dir: &Path, text: &str) {
    thread::sleep(Duration::from_millis(1100));
    fs::write(dir.join("www").join("feed.txt"), text).unwrap();
}

#[test]
fn a_url_feed_is_refreshed_and_a_failed_fetch_keeps_the_old_entries() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let _dns = start_dnsmasq(&link.server, &[]);
    let pin = PinDir::new();
    let _agent = Agent::start(&link.client, &pin, AGENT_ARGS);
    let c = &link.client;
    let dir = TempDir::new();
    let mut http = Some(start_http(&link.server, &dir.0));
    publish(&dir.0, "a.flux.test\nold.flux.test\n");
    let url = format!("http://{SERVER_V4}:{HTTP_PORT}/feed.txt");
    cli_ok(
        c,
        &pin,
        &["feed", "add", "u1", &url, "--refresh", "2s", "--json"],
    );
    assert_eq!(lookup(&link, "a.flux.test"), "NXDOMAIN");
    assert!(blocked(c, &pin).contains("old.flux.test"));

    // Unchanged: the server answers 304 to the stored validator.
    let r: Value =
        serde_json::from_str(&cli_ok(c, &pin, &["feed", "update", "u1", "--json"])).unwrap();
    assert_eq!(r["result"], "not modified", "{r}");
    assert_eq!(feed_record(&pin, "u1")["last_result"], "not modified");

    // Changed: the running agent's refresher (every 2 s) brings the blocks in line.
    publish(&dir.0, "a.flux.test\nnew.flux.test\n");
    eventually("the agent's refresh", || {
        let b = blocked(c, &pin);
        b.contains("new.flux.test") && !b.contains("old.flux.test")
    });
    let want = BTreeSet::from(["a.flux.test".to_owned(), "new.flux.test".to_owned()]);
    assert_eq!(blocked(c, &pin), want);

    // A truncated download: a clear error, the entries kept.
    fs::write(dir.0.join("www").join("feed.txt.truncate"), "").unwrap();
    publish(&dir.0, "other.flux.test\n");
    let e = cli_err(c, &pin, &["feed", "update", "u1", "--json"]);
    assert!(
        e.contains("cut short") && e.contains("previous entries are kept"),
        "{e}"
    );
    assert_eq!(blocked(c, &pin), want);
    let f = feed_record(&pin, "u1");
    assert!(
        f["last_result"].as_str().unwrap().starts_with("failed"),
        "{f}"
    );

    // Nothing parses: the entries kept. Written before the truncation marker goes: the
    // running agent's refresher (every 2 s) must never find `other.flux.test` whole, or it
    // would rightly swap it in (CI saw that race when the marker went first).
    publish(&dir.0, "not a feed !!\nnor this ??\n");
    fs::remove_file(dir.0.join("www").join("feed.txt.truncate")).unwrap();
    let e = cli_err(c, &pin, &["feed", "update", "u1", "--json"]);
    assert!(e.contains("no entry"), "{e}");
    assert_eq!(blocked(c, &pin), want);

    // Unreachable: the entries kept.
    drop(http.take());
    let e = cli_err(c, &pin, &["feed", "update", "u1", "--json"]);
    assert!(e.contains("unreachable"), "{e}");
    assert_eq!(blocked(c, &pin), want);
    assert_eq!(feed_record(&pin, "u1")["entry_count"], 2);

    // Larger than the domain map (2^18 entries): refused before the swap, the entries kept.
    let big = dir.0.join("big.txt");
    let mut text = String::with_capacity(7_000_000);
    for i in 0..(flux_common::MAX_BLOCKED_DOMAINS + 10) {
        text.push_str(&format!("n{i}.big.test\n"));
    }
    fs::write(&big, text).unwrap();
    let e = cli_err(
        c,
        &pin,
        &["feed", "add", "u1", big.to_str().unwrap(), "--json"],
    );
    assert!(e.contains("does not fit") && e.contains("kept"), "{e}");
    assert_eq!(blocked(c, &pin), want);
    assert_eq!(
        feed_record(&pin, "u1")["location"],
        url,
        "the old settings are kept"
    );
    // A new feed that cannot load is not kept.
    let e = cli_err(
        c,
        &pin,
        &["feed", "add", "big", big.to_str().unwrap(), "--json"],
    );
    assert!(e.contains("does not fit"), "{e}");
    let v = feeds(&pin);
    assert_eq!(v.len(), 1, "{v:?}");
}

/// A report-only feed is never enforced but matched: a name whose CNAME chain passes a feed
/// domain, and one that resolves into a feed network, are `intel` events naming the feed, and
/// the scorer counts the match (`feed_match` in `explain`).
#[test]
fn a_feed_match_is_an_intel_event_and_scorer_evidence() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let _dns = start_dnsmasq(&link.server, &[]);
    let pin = PinDir::new();
    let agent = Agent::start(&link.client, &pin, AGENT_ARGS);
    let c = &link.client;
    let dir = TempDir::new();
    let file = dir.0.join("watch.txt");
    // a.flux.test is 192.0.2.10; www.flux.test is a CNAME to cdn.flux.test, then a.flux.test.
    fs::write(
        &file,
        "192.0.2.0/24
cdn.flux.test
",
    )
    .unwrap();
    cli_ok(
        c,
        &pin,
        &[
            "feed",
            "add",
            "watch",
            file.to_str().unwrap(),
            "--action",
            "report",
        ],
    );
    assert!(blocked(c, &pin).is_empty(), "report only: nothing enforced");
    // The lookup is rebuilt by the agent's refresher within a second or two.
    let intel = |name: &'static str| move |e: &Value| e["type"] == "intel" && e["domain"] == name;
    eventually("an intel event for a.flux.test", || {
        assert_eq!(lookup(&link, "a.flux.test"), "NOERROR", "report only");
        agent.events().iter().any(intel("a.flux.test"))
    });
    let e = agent.wait_event("a.flux.test", intel("a.flux.test"));
    assert_eq!(e["feed"], "watch", "{e}");
    assert_eq!(e["matched"], "address", "{e}");
    assert_eq!(e["indicator"], "192.0.2.0/24", "{e}");
    assert_eq!(lookup(&link, "www.flux.test"), "NOERROR");
    let e = agent.wait_event("www.flux.test", intel("www.flux.test"));
    assert_eq!(e["matched"], "cname", "{e}");
    assert_eq!(e["indicator"], "cdn.flux.test", "{e}");
    // Once per name and feed.
    assert_eq!(lookup(&link, "a.flux.test"), "NOERROR");
    thread::sleep(Duration::from_millis(300));
    let n = agent
        .events()
        .iter()
        .filter(|e| intel("a.flux.test")(e))
        .count();
    assert_eq!(n, 1, "one event per name and feed");
    events_schema::assert_events_match_schema(&agent.events());
    // The scorer's evidence.
    let out = cli_ok(c, &pin, &["explain", "a.flux.test", "--json"]);
    assert!(out.contains("\"feed_match\""), "{out}");
}

/// Agent A's export, imported by agent B as a feed, gives B the same blocks: plain, STIX and
/// MISP in turn.
#[test]
fn an_export_imported_as_a_feed_gives_the_same_blocks() {
    if !privileged() {
        return;
    }
    let (la, lb) = (Link::new(), Link::new());
    let (pa, pb) = (PinDir::new(), PinDir::new());
    let _a = Agent::start(&la.client, &pa, AGENT_ARGS);
    let _b = Agent::start(&lb.client, &pb, AGENT_ARGS);
    cli_ok(
        &la.client,
        &pa,
        &[
            "blocklist",
            "add",
            "--domain",
            "flux.example.net",
            "--domain",
            "bad.example.org",
            "--ip",
            "192.0.2.44",
            "--ip",
            "2001:db8::44",
            "--cidr",
            "198.51.100.0/24",
        ],
    );
    let want = blocked(&la.client, &pa);
    assert_eq!(want.len(), 5, "{want:?}");
    let dir = TempDir::new();
    let state_a = state_path_for(&pa.0);
    for fmt in ["plain", "stix", "misp"] {
        let file = dir.0.join(format!("a.{fmt}"));
        let o = agent_cli(
            None,
            &[
                "export",
                "--format",
                fmt,
                "--output",
                file.to_str().unwrap(),
                "--state",
                state_a.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let name = format!("from-a-{fmt}");
        cli_ok(
            &lb.client,
            &pb,
            &[
                "feed",
                "add",
                &name,
                file.to_str().unwrap(),
                "--format",
                fmt,
                "--json",
            ],
        );
        assert_eq!(blocked(&lb.client, &pb), want, "{fmt}");
        cli_ok(&lb.client, &pb, &["feed", "remove", &name]);
        assert!(blocked(&lb.client, &pb).is_empty(), "{fmt}: removed");
    }
}

/// A feed of thousands of addresses (more than one batch of the bulk path, `map_batch::BATCH`)
/// is written whole, and an address the maps already held (here written there with another
/// database, so the agent's record does not know it) keeps its entry's first-added time instead
/// of being overwritten.
#[test]
fn a_feed_larger_than_a_batch_is_written_whole_and_keeps_an_entry_already_there() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let pin = PinDir::new();
    let _agent = Agent::start(&link.client, &pin, AGENT_ARGS);
    let dir = TempDir::new();
    let other_db = dir.0.join("other.db");
    cli_ok(
        &link.client,
        &pin,
        &[
            "blocklist",
            "add",
            "--ip",
            "10.99.0.1",
            "--state",
            other_db.to_str().unwrap(),
        ],
    );
    // Read while it runs (`agent_cli` reads the pipe after the exit, and 4,500 entries are
    // more than a pipe holds).
    let list = || -> Vec<Value> {
        let o = std::process::Command::new(agent_bin())
            .args(["blocklist", "list", "--json", "--pin-dir", &pin.arg()])
            .env("FLUX_AGENT_STATE", state_path_for(&pin.0))
            .output()
            .expect("run flux-agent");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("one array")
    };
    let added_at = |list: &[Value], value: &str| -> Value {
        list.iter()
            .find(|e| e["value"] == value)
            .map(|e| e["added"].clone())
            .unwrap_or(Value::Null)
    };
    let before = added_at(&list(), "10.99.0.1");
    assert!(before.is_string(), "{before}");
    // The feed's load comes at least a second later: a rewritten entry would show it.
    thread::sleep(Duration::from_millis(1_100));
    // One batch and a part: 4,096 a batch.
    const N: u32 = 4_500;
    let text: String = (0..N)
        .map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x0a63_0000u32 + i)))
        .collect();
    let file = dir.0.join("many.txt");
    fs::write(&file, text).unwrap();
    cli_ok(
        &link.client,
        &pin,
        &[
            "feed",
            "add",
            "many",
            file.to_str().unwrap(),
            "--format",
            "plain",
        ],
    );
    let after = list();
    let values: BTreeSet<&str> = after.iter().filter_map(|e| e["value"].as_str()).collect();
    assert_eq!(values.len(), N as usize, "every address, once");
    assert_eq!(after.len(), N as usize);
    assert!(values.contains("10.99.17.147"), "the last one");
    assert_eq!(
        added_at(&after, "10.99.0.1"),
        before,
        "the entry already there is kept"
    );
    assert_ne!(
        added_at(&after, "10.99.0.2"),
        before,
        "new entries are added now"
    );
}

/// Load time and memory of a 1,000,000-entry feed through `feed add` (database and maps):
/// 1,000,000 IPv4 addresses (the domain map holds 2^18; the address map 2^20).
/// `cargo test -p flux-tests --release --test feeds -- --ignored --nocapture`
#[test]
#[ignore]
fn figures_a_million_entry_feed() {
    let mut text = String::with_capacity(16_000_000);
    for i in 0..1_000_000u32 {
        let a = std::net::Ipv4Addr::from(0x2c00_0000u32 + i);
        text.push_str(&format!("{a}\n"));
    }
    million_entry_figures(&text, &[]);
}

/// The same for a million names, into a domain map started larger than the default
/// (`--max-blocked-domains`).
#[test]
#[ignore]
fn figures_a_million_name_feed() {
    let mut text = String::with_capacity(24_000_000);
    for i in 0..1_000_000u32 {
        text.push_str(&format!("n{i}.million.test\n"));
    }
    million_entry_figures(&text, &["--max-blocked-domains", "1100000"]);
}

/// Loads `text` (a million entries, one a line) as feed `million` into a running agent, twice,
/// and prints wall time, CPU time and peak memory of each `feed add`.
fn million_entry_figures(text: &str, agent_args: &[&str]) {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let pin = PinDir::new();
    let args: Vec<&str> = AGENT_ARGS.iter().chain(agent_args).copied().collect();
    let _agent = Agent::start(&link.client, &pin, &args);
    let dir = TempDir::new();
    let file = dir.0.join("million.txt");
    fs::write(&file, text).unwrap();
    let args = [
        "feed",
        "add",
        "million",
        file.to_str().unwrap(),
        "--format",
        "plain",
        "--json",
        "--pin-dir",
        &pin.arg(),
    ];
    for round in ["first load", "reload, unchanged"] {
        let started = Instant::now();
        let o = Proc::spawn(
            "time",
            std::process::Command::new("/usr/bin/time")
                .arg("-v")
                .arg(agent_bin())
                .args(args)
                .env("FLUX_AGENT_STATE", state_path_for(&pin.0))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let mut child = o;
        let status = child.child.wait().unwrap();
        let mut err = String::new();
        use std::io::Read as _;
        child
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let mut out = String::new();
        child
            .child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(status.success(), "{out}\n{err}");
        let hwm = err
            .lines()
            .find(|l| l.contains("Maximum resident set size"))
            .unwrap_or("?");
        let cpu: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("time (seconds)"))
            .collect();
        eprintln!(
            "{round}: {:.1} s wall; {}; {cpu:?}; report {}",
            started.elapsed().as_secs_f64(),
            hwm.trim(),
            out.trim()
        );
    }
    assert_eq!(feed_record(&pin, "million")["entry_count"], 1_000_000);
}
