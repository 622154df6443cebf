//! `run --metrics` on a real kernel, scraped by a real Prometheus (issue 16, item 1).
//!
//! A veth lab: dnsmasq on the server side answers names that flux; the agent runs on the client
//! side with `--metrics 127.0.0.1:PORT` inside the client namespace, and Debian's `prometheus`
//! runs there too, scraping it every second. The test makes real lookups with dig, then reads
//! the values back through Prometheus's HTTP API (`/api/v1/query`) and compares them with what
//! the agent wrote to its events file. It also checks a scraped body with `promtool check
//! metrics`, the endpoint's refusals, and that every metric `dist/grafana-dashboard.json` uses
//! is in a scrape.

use std::{
    collections::BTreeSet,
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use flux_tests::*;
use serde_json::Value;

/// Where the agent serves its metrics, inside the client namespace (a fresh namespace has
/// nothing listening, so fixed ports are free).
const METRICS: &str = "127.0.0.1:9580";
/// Where Prometheus listens, inside the same namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";

/// How long Prometheus gets to start and to scrape a value that should be there.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

/// One HTTP/1.0 request from inside `ns`; returns the status code and the body.
fn http(ns: &Netns, addr: &'static str, request: String) -> (u16, String) {
    ns.run_in(move || {
        let Ok(mut c) = TcpStream::connect(addr) else {
            return (0, String::new());
        };
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_owned());
        (status, body)
    })
}

fn get(ns: &Netns, addr: &'static str, path: &str) -> (u16, String) {
    http(
        ns,
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: lab\r\n\r\n"),
    )
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant query that returns one sample, if it returns one.
fn query(ns: &Netns, q: &str) -> Option<f64> {
    let (status, body) = get(
        ns,
        PROMETHEUS,
        &format!("/api/v1/query?query={}", encode(q)),
    );
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    assert_eq!(v["status"], "success", "{body}");
    let r = v["data"]["result"].as_array()?;
    r.first()?["value"][1].as_str()?.parse().ok()
}

/// Waits until `q` answers `want(value)`; panics with the last answer otherwise.
fn eventually(ns: &Netns, q: &str, want: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    loop {
        let got = query(ns, q);
        if let Some(v) = got.filter(|v| want(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered {q} as expected (last: {got:?})"
        );
        thread::sleep(Duration::from_millis(500));
    }
}

/// Debian's Prometheus in `ns`, scraping the agent every second.
fn start_prometheus(ns: &Netns, dir: &Path) -> Proc {
    let config = dir.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: flux\n    static_configs:\n      - targets: ['{METRICS}']\n"
        ),
    )
    .unwrap();
    let mut cmd = ns.cmd("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("prometheus.log")).unwrap());
    let p = Proc::spawn("prometheus", &mut cmd);
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    while get(ns, PROMETHEUS, "/-/ready").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "prometheus did not start:\n{}",
            slurp(&dir.join("prometheus.log"))
        );
        thread::sleep(Duration::from_millis(200));
    }
    p
}

/// Names the dnsmasq of this lab answers: six names under `rot.test`, five addresses each,
/// every address in its own /16, so the domain scores flux without an ASN database (the recipe
/// of live_capture.rs).
fn flux_records() -> Vec<String> {
    let mut records = vec!["--local=/rot.test/".to_owned()];
    for n in 1..=6u32 {
        for i in 0..5u32 {
            records.push(format!(
                "--host-record=v{n}.rot.test,10.{}.{}.7,60",
                n * 10 + i,
                i + 1
            ));
        }
    }
    records
}

/// `promtool check metrics` on `body`: its exit status and what it said.
fn promtool(body: &str) -> (bool, String) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs it)");
    c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Every series name a scrape holds (histograms with their `_bucket`, `_sum`, `_count`), and
/// every family it declares even when it has no sample yet.
fn names_in(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in body.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let mut parts = t.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
        } else if !l.starts_with('#') && !l.is_empty() {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            names.insert(l[..end].to_owned());
        }
    }
    names
}

/// Every `flux_*` metric name in the dashboard's PromQL expressions.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/grafana-dashboard.json");
    let v: Value = serde_json::from_str(&slurp(&path)).expect("dashboard is JSON");
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&v, &mut exprs);
    assert!(
        exprs.len() >= 8,
        "the dashboard has too few queries: {exprs:?}"
    );
    let mut names = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("flux_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn prometheus_scrapes_the_agent_and_reads_back_what_it_did() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let _dns = start_dnsmasq(&link.server, &flux_records());
    let pin = PinDir::new();
    let mut agent = Agent::start(
        &link.client,
        &pin,
        &[
            "--iface",
            "a0",
            "--no-db",
            "--block-hold",
            "0s",
            "--metrics",
            METRICS,
        ],
    );
    assert!(
        agent
            .log()
            .contains("metrics: http://127.0.0.1:9580/metrics"),
        "{}",
        agent.log()
    );
    let dir = TempDir::new();
    let _prometheus = start_prometheus(&link.client, &dir.0);
    eventually(&link.client, r#"up{job="flux"}"#, |v| v == 1.0);

    for n in 1..=6 {
        let out = dig(
            &link.client,
            &[&format!("@{SERVER_V4}"), &format!("v{n}.rot.test"), "A"],
        );
        // Once rot.test is flux the agent blocks it and the kernel answers NXDOMAIN instead.
        assert!(
            out.contains("status: NOERROR") || out.contains("status: NXDOMAIN"),
            "{out}"
        );
    }
    agent.wait_event("flux verdict for rot.test", |e| {
        e["type"] == "verdict" && e["domain"] == "rot.test" && e["level"] == "flux"
    });
    agent.wait_event("a block", |e| e["type"] == "block");
    // Give the events file a moment to settle, then count what the agent says it did.
    thread::sleep(Duration::from_secs(2));
    let events = agent.events();
    let count = |t: &str, pred: &dyn Fn(&Value) -> bool| {
        events.iter().filter(|e| e["type"] == t && pred(e)).count() as f64
    };
    let dns = count("dns", &|_| true);
    let flux = count("verdict", &|e| e["level"] == "flux");
    let blocked = count("block", &|e| e["action"] == "blocked");
    assert!(dns >= 6.0 && flux >= 1.0 && blocked >= 1.0, "{events:#?}");
    eprintln!("events file: {dns} dns, {flux} flux verdicts, {blocked} blocked");

    // Read back through Prometheus: the same numbers as the events file.
    eventually(&link.client, "sum(flux_dns_responses_total)", |v| v == dns);
    eventually(
        &link.client,
        r#"sum(flux_dns_responses_total{solicited="yes",transport="udp"})"#,
        |v| v == dns,
    );
    eventually(&link.client, r#"flux_verdicts_total{level="flux"}"#, |v| {
        v == flux
    });
    eventually(
        &link.client,
        r#"sum(flux_blocks_total{source="scorer",outcome="blocked"})"#,
        |v| v == blocked,
    );
    // The kernel counters, read from the pinned map at scrape time.
    eventually(&link.client, "flux_kernel_responses_captured_total", |v| {
        v >= dns
    });
    eventually(&link.client, "flux_kernel_packets_seen_total", |v| v >= dns);
    eventually(&link.client, "flux_ring_records_total", |v| v == dns);
    eventually(&link.client, "flux_scorer_observe_seconds_count", |v| {
        v == dns
    });
    eventually(
        &link.client,
        r#"flux_events_dropped_total{sink="metrics"}"#,
        |v| v == 0.0,
    );
    // Counted from the pinned maps every 15 s.
    eventually(
        &link.client,
        r#"flux_blocklist_entries{source="scorer",target_kind="domain"}"#,
        |v| v >= 1.0,
    );
    // Set on the 10 s tick.
    eventually(&link.client, "flux_scorer_keys_tracked", |v| v > 0.0);

    // The exposition itself: promtool's lint, only GET /metrics served, bounded labels.
    let (status, body) = get(&link.client, METRICS, "/metrics");
    assert_eq!(status, 200);
    let (ok, said) = promtool(&body);
    assert!(ok, "promtool check metrics failed:\n{said}\n{body}");
    eprintln!(
        "promtool check metrics: passed on {} bytes, {} series",
        body.len(),
        body.lines().filter(|l| !l.starts_with('#')).count()
    );
    assert!(
        !body.contains("rot.test") && !body.contains("10.77."),
        "{body}"
    );
    assert_eq!(get(&link.client, METRICS, "/").0, 404);
    let post = "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n".to_owned();
    assert_eq!(http(&link.client, METRICS, post).0, 404);

    // The dashboard uses only metrics a scrape has.
    let mut have = names_in(&body);
    // Feeds and the state database report once they exist (a unit test in ops/metrics.rs
    // proves each family appears then).
    have.extend(
        flux_agent::ops::metrics::REPORTED_ON_USE
            .iter()
            .map(|s| s.to_string()),
    );
    let missing: Vec<String> = dashboard_metrics()
        .into_iter()
        .filter(|m| !have.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard uses unknown metrics {missing:?}"
    );

    assert!(agent.stop().success());
}

/// Feeds and the state database report through the metrics of a running agent: a `feed add`
/// by the CLI shows up as the feed's entries and a successful refresh, a `feed remove` takes
/// its series away, and the database's failed writes are there (zero).
#[test]
fn feeds_and_the_state_database_are_in_the_metrics() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let pin = PinDir::new();
    let mut agent = Agent::start(&link.client, &pin, &["--iface", "a0", "--metrics", METRICS]);
    let dir = TempDir::new();
    let file = dir.0.join("intel.txt");
    fs::write(&file, "a.flux.test\nb.flux.test\n192.0.2.77\n").unwrap();
    let cli = |args: &[&str]| pin_cli_ok(Some(&link.client), &pin, args);
    cli(&[
        "feed",
        "add",
        "intel",
        file.to_str().unwrap(),
        "--format",
        "plain",
    ]);
    let scrape = |want: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = get(&link.client, METRICS, "/metrics");
            if status == 200 && want(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "never came:\n{body}");
            thread::sleep(Duration::from_millis(300));
        }
    };
    let body = scrape(&|b| b.contains("flux_feed_entries{feed=\"intel\"} 3"));
    assert!(
        body.contains("flux_feed_last_refresh_success{feed=\"intel\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("flux_db_errors_total{kind=\"other\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("flux_db_errors_total{kind=\"full\"} 0"),
        "{body}"
    );
    // A second load counts a refresh: the agent sees the feed's last refresh time move. It is
    // stored in whole seconds, so the update comes a second after the first load was seen.
    thread::sleep(Duration::from_millis(1100));
    cli(&["feed", "update", "intel"]);
    scrape(&|b| b.contains("flux_feed_refreshes_total{feed=\"intel\",result=\"ok\"} 1"));
    cli(&["feed", "remove", "intel"]);
    scrape(&|b| !b.contains("feed=\"intel\""));
    assert!(agent.stop().success());
}

/// The capture loop reads the ring buffer in batches under load and not at all when idle
/// (`RING_LINGER` in `pipeline/live.rs`): real dnsperf asks dnsmasq 10,000 times a second for
/// three seconds, every answer crossing the agent's XDP program. Waking for each record, as the
/// loop did before, takes about one record per drain at this rate (1.1 measured); lingering, a
/// turn of about 2 ms takes about twenty (21 measured), and still more than 2.5 at the 1,700/s
/// that the floor on the records below allows a slow machine. Once the load stops, no further
/// drain may happen: a loop that kept lingering would turn hundreds of times a second on an
/// idle host.
#[test]
fn the_capture_loop_batches_under_load_and_rests_when_idle() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let _dns = start_dnsmasq(&link.server, &[]);
    let pin = PinDir::new();
    let mut agent = Agent::start(
        &link.client,
        &pin,
        &["--iface", "a0", "--no-db", "--metrics", METRICS],
    );
    let dir = TempDir::new();
    let queries = dir.0.join("queries.txt");
    fs::write(&queries, "a.flux.test A\n").unwrap();
    let out = link
        .client
        .cmd("dnsperf")
        .args(["-s", SERVER_V4, "-d"])
        .arg(&queries)
        .args(["-l", "3", "-Q", "10000", "-T", "1"])
        .output()
        .expect("run dnsperf (cargo xtask setup installs it)");
    assert!(out.status.success(), "dnsperf: {out:?}");
    let scrape = || -> (f64, f64, f64, String) {
        let (status, body) = get(&link.client, METRICS, "/metrics");
        assert_eq!(status, 200, "{body}");
        let v = |series: &str| {
            flux_tests::nats_lab::metric_in(&body, series)
                .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        };
        let got = (
            v("flux_ring_records_total"),
            v("flux_kernel_responses_captured_total"),
            v("flux_ring_drains_total"),
        );
        (got.0, got.1, got.2, body)
    };
    // Settled: the agent has read every record the kernel captured, and its last turns (the
    // empty drain that ends a linger, a readiness left from it) are behind it: two scrapes
    // 300 ms apart agree.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = scrape();
    let (records, drains) = loop {
        thread::sleep(Duration::from_millis(300));
        let now = scrape();
        if now.0 == now.1 && now.0 == last.0 && now.2 == last.2 {
            break (now.0, now.2);
        }
        assert!(
            Instant::now() < deadline,
            "the capture never settled:\n{}",
            now.3
        );
        last = now;
    };
    assert!(
        records >= 5_000.0,
        "dnsperf got only {records} answers through in 3 s: {out:?}"
    );
    let per_drain = records / drains;
    eprintln!("{records} records in {drains} drains: {per_drain:.1} a drain");
    assert!(
        per_drain >= 2.5,
        "{records} records in {drains} drains: the capture loop is not batching"
    );
    thread::sleep(Duration::from_secs(1));
    let (_, _, idle_drains, body) = scrape();
    assert_eq!(
        idle_drains, drains,
        "the capture loop kept draining an idle ring:\n{body}"
    );
    assert!(agent.stop().success());
}

/// promtool really rejects a bad exposition (so its pass above means something).
#[test]
fn promtool_rejects_a_bad_exposition() {
    // A counter without the `_total` suffix: a lint error.
    let (ok, said) = promtool("# HELP flux_x An x.\n# TYPE flux_x counter\nflux_x 1\n");
    assert!(!ok, "promtool accepted a counter without _total: {said}");
}
