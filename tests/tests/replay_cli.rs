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
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot open /nonexistent/x.pcap"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
