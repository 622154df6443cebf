//! `flux-agent replay` end to end on a capture written here: verdict lines, the summary, a
//! malformed packet counted and not fatal, the human table, and a clear error for a missing
//! file. Needs no privileges.

use std::{net::Ipv4Addr, process::Command, time::Duration};

use flux_tests::{
    TempDir, agent_bin,
    eval::pcapw::{RESOLVER, Response, write_pcap},
};
use serde_json::Value;

fn answer(name: &str, ips: &[Ipv4Addr]) -> Vec<u8> {
    flux_tests::a_reply(name, ips, 180, 1)
}

#[test]
fn replay_prints_verdicts_and_a_summary() {
    let dir = TempDir::new();
    let pcap = dir.0.join("flux.pcap");
    let mut rs = Vec::new();
    // Every TTL, five fresh addresses each in its own /16 (no database: /16 = network).
    for round in 0..6u32 {
        let ips: Vec<Ipv4Addr> = (0..5)
            .map(|i| Ipv4Addr::new((20 + round * 5 + i) as u8, (30 + i) as u8, 7, 9))
            .collect();
        rs.push(Response {
            ts: Duration::from_secs(1_767_225_600 + u64::from(round) * 180),
            resolver: RESOLVER.into(),
            port: 40_000,
            payload: answer("www.flux-replay.test", &ips),
        });
    }
    // A DNS "response" that is garbage after the header: counted as malformed, not fatal.
    let mut junk = answer("junk.test", &[Ipv4Addr::new(192, 0, 2, 1)]);
    junk.truncate(20);
    rs.push(Response {
        ts: Duration::from_secs(1_767_225_600 + 10),
        resolver: RESOLVER.into(),
        port: 40_001,
        payload: junk,
    });
    write_pcap(&pcap, &mut rs).unwrap();

    let out = Command::new(agent_bin())
        .args(["replay", "--json", "--no-db"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // serde_json keeps the last of two equal keys; other parsers reject the line.
    let raw_summary = stdout.lines().last().unwrap();
    assert_eq!(
        raw_summary.matches("\"files\":").count(),
        1,
        "{raw_summary}"
    );
    let flux = lines
        .iter()
        .find(|v| {
            v["type"] == "verdict" && v["domain"] == "flux-replay.test" && v["level"] == "flux"
        })
        .unwrap_or_else(|| panic!("no flux verdict: {lines:#?}"));
    assert!(
        flux["ts"].as_str().unwrap().starts_with("2026-01-01T00:"),
        "packet time is the clock"
    );
    for k in ["score", "double_flux", "reasons", "features", "previous"] {
        assert!(flux.get(k).is_some(), "missing {k}");
    }
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["parsed"], 6);
    assert_eq!(summary["malformed"], 1);
    assert!(summary["flux"].as_u64().unwrap() >= 1);
    assert!(summary.get("responses_per_s").is_some());
    assert_eq!(summary["files"], 1);
    assert_eq!(summary["files_opened"], 1);

    let human = Command::new(agent_bin())
        .args(["replay", "--no-db"])
        .arg(&pcap)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("flux-replay.test") && text.contains("flux"),
        "{text}"
    );

    let missing = Command::new(agent_bin())
        .args(["replay", "/nonexistent/x.pcap"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot open /nonexistent/x.pcap"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// A capture with `www.flux-replay.test` answering `per_round` fresh addresses (each in its
/// own /16) per TTL, `rounds` times.
fn flux_capture(path: &std::path::Path, rounds: u32, per_round: u32) {
    let mut rs = Vec::new();
    for round in 0..rounds {
        let ips: Vec<Ipv4Addr> = (0..per_round)
            .map(|i| Ipv4Addr::new((20 + round * 5 + i) as u8, (30 + i) as u8, 7, 9))
            .collect();
        rs.push(Response {
            ts: Duration::from_secs(1_767_225_600 + u64::from(round) * 180),
            resolver: RESOLVER.into(),
            port: 40_000,
            payload: answer("www.flux-replay.test", &ips),
        });
    }
    write_pcap(path, &mut rs).unwrap();
}

fn replay(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(agent_bin())
        .args(["replay", "--no-db"])
        .args(args)
        .output()
        .unwrap()
}

/// Issue 14, item 9: an unreadable input (junk or missing) beside a good one is named in the
/// summary, the good one is still replayed, and the exit status is 1 whatever the other files
/// were. Before: junk plus a good file exited 0, and a missing file stopped the run before
/// anything was read, though the README said it was reported in the summary.
#[test]
fn an_unreadable_input_is_reported_and_fails_the_run_but_the_rest_is_replayed() {
    let dir = TempDir::new();
    let good = dir.0.join("good.pcap");
    flux_capture(&good, 6, 5);
    let junk = dir.0.join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    let missing = dir.0.join("missing.pcap");
    for (bad, says) in [(&junk, "is not a pcap"), (&missing, "cannot open")] {
        for order in [[bad, &good], [&good, bad]] {
            let mut args: Vec<&std::ffi::OsStr> = vec!["--json".as_ref()];
            args.extend(order.iter().map(|p| p.as_os_str()));
            let out = replay(&args);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{order:?}: {stderr}");
            let lines: Vec<Value> = stdout
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(
                lines
                    .iter()
                    .any(|v| v["type"] == "verdict" && v["level"] == "flux"),
                "{order:?}: the good file was replayed: {stdout}"
            );
            let summary = lines.last().unwrap();
            assert_eq!(summary["type"], "summary");
            assert_eq!(summary["files"], 2);
            assert_eq!(summary["parsed"], 6, "{summary}");
            let failed = summary["failed_files"].as_array().unwrap();
            assert_eq!(failed.len(), 1, "{summary}");
            assert_eq!(failed[0]["path"], bad.display().to_string());
            assert!(
                failed[0]["error"].as_str().unwrap().contains(says),
                "{summary}"
            );
            assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
        }
        // The table names it too.
        let out = replay(&[bad.as_os_str(), good.as_os_str()]);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("flux-replay.test"), "{text}");
        assert!(
            text.contains(&format!("could not read {}", bad.display())),
            "{text}"
        );
    }
}

/// The replay reads one response ahead of the one it scores (to prefetch what scoring the next
/// will read): the last response of a file, and the last one before a record cut short, are
/// still scored, each once.
#[test]
fn the_response_read_ahead_is_scored_at_the_end_of_a_file_and_before_a_cut() {
    let dir = TempDir::new();
    let whole = dir.0.join("whole.pcap");
    flux_capture(&whole, 6, 5);
    let cut = dir.0.join("cut.pcap");
    let mut bytes = std::fs::read(&whole).unwrap();
    // A seventh record header promising 100 bytes, and 10 of them.
    let last_ts = 1_767_225_600u32 + 6 * 180;
    bytes.extend(last_ts.to_le_bytes());
    bytes.extend(0u32.to_le_bytes());
    bytes.extend(100u32.to_le_bytes());
    bytes.extend(100u32.to_le_bytes());
    bytes.extend([0u8; 10]);
    std::fs::write(&cut, bytes).unwrap();
    for (file, files) in [
        (&whole, vec![&whole]),
        (&cut, vec![&cut]),
        (&cut, vec![&cut, &whole]),
    ] {
        let mut args: Vec<&std::ffi::OsStr> = vec!["--json".as_ref()];
        args.extend(files.iter().map(|p| p.as_os_str()));
        let out = replay(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(
            summary["parsed"],
            6 * files.len(),
            "{}: {summary}",
            file.display()
        );
        assert_eq!(summary["scorer"]["responses"], 6 * files.len(), "{summary}");
    }
}

/// Issue 14, item 9: the table shows how many addresses the name had by the end (15 here: one
/// new address per TTL), not the count when its level changed (it showed 5).
#[test]
fn the_table_shows_the_true_address_count() {
    let dir = TempDir::new();
    let pcap = dir.0.join("flux.pcap");
    flux_capture(&pcap, 15, 1);
    let out = replay(&["--json".as_ref(), pcap.as_os_str()]);
    let human = replay(&[pcap.as_os_str()]);
    let text = String::from_utf8_lossy(&human.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("flux-replay.test") || l.starts_with("www.flux-replay.test"))
        .unwrap_or_else(|| panic!("no row: {text}\n{}", String::from_utf8_lossy(&out.stdout)));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[3], "15", "IPS column: {row}\n{text}");
}

/// Issue 16, item 7: on a terminal, a replay shows its progress (indicatif, on stderr: the
/// responses read, their rate and the file); with `--json` nothing but the JSON document's
/// lines is written, on a terminal too. The terminal is a real pty (`script` from util-linux).
#[test]
fn replay_shows_progress_on_a_terminal_and_never_in_json() {
    let dir = TempDir::new();
    let pcap = dir.0.join("many.pcap");
    // Enough responses for a debug build to take well over the spinner's 200 ms tick.
    let mut rs: Vec<Response> = (0..150_000u32)
        .map(|i| Response {
            ts: Duration::from_secs(1_767_225_600 + u64::from(i / 100)),
            resolver: RESOLVER.into(),
            port: 40_000,
            payload: answer(
                &format!("host{}.progress.test", i % 500),
                &[Ipv4Addr::new(192, 0, 2, (i % 200) as u8)],
            ),
        })
        .collect();
    write_pcap(&pcap, &mut rs).unwrap();
    // stderr on the pty (where progress goes), stdout to a file.
    let out = dir.0.join("out");
    let on_tty = |extra: &str| -> (String, String) {
        let cmd = format!(
            "{} replay --no-db {extra} {} > {}",
            agent_bin().display(),
            pcap.display(),
            out.display()
        );
        let o = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let tty = String::from_utf8_lossy(&o.stdout).into_owned();
        (tty, std::fs::read_to_string(&out).unwrap())
    };
    let (tty, stdout) = on_tty("");
    assert!(
        tty.contains("responses (") && tty.contains("file 1/1"),
        "no progress on a terminal:\n{tty}"
    );
    assert!(stdout.contains("150000 DNS responses"), "{stdout}");
    let (tty, json) = on_tty("--json");
    assert!(!tty.contains("responses ("), "progress with --json:\n{tty}");
    for line in json.lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON with --json: {line:?}"
        );
    }
    assert!(json.contains("\"summary\""), "{json}");
}
