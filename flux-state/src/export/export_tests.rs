//! Tests of the export: the query's filters, the merge into indicators, and each format read
//! back by a real consumer: the OASIS STIX validator (`stix2-validator`) and PyMISP, from the
//! Python environment `cargo xtask setup` installs; CSV by the csv crate.
//!
//! Without that environment the two validator tests skip, except under CI (`CI=true`), where
//! they fail.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use super::*;
use crate::{Entry, FeedFetch, FeedRecord, Kind, ReasonRecord, from_unix};

fn at(s: i64) -> SystemTime {
    from_unix(1_750_000_000 + s)
}

/// The store every export test reads: each kind of target, each kind of source, and the
/// cases the query must leave out (an expired block, an allow entry).
fn sample() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    let t = |s: &str| Target::domain(s).unwrap();
    let ip = |s: &str| Target::Ip(s.parse().unwrap());
    let scorer = |target: Target, score: f64| Entry {
        score: Some(score),
        added: at(10),
        expires: Some(at(86_400)),
        ..Entry::block(target, Source::Scorer, "answer_networks")
    };
    s.add_entries(&[
        scorer(t("flux.example"), 0.934),
        scorer(ip("192.0.2.10"), 0.934),
        scorer(ip("2001:db8::10"), 0.934),
        Entry {
            added: at(20),
            ..Entry::block(t("manual.example"), Source::Manual, "seen in phishing mail")
        },
        Entry {
            added: at(0),
            expires: Some(at(5)),
            ..Entry::block(t("old.example"), Source::Manual, "expired")
        },
        Entry {
            kind: Kind::Allow,
            added: at(0),
            ..Entry::block(t("allowed.example"), Source::Manual, "ours")
        },
    ])
    .unwrap();
    s.upsert_feed(&FeedRecord::new("f", "/f", "netset", Action::Block))
        .unwrap();
    let cidr = Entry {
        added: at(30),
        expires: Some(at(7 * 86_400)),
        ..Entry::block(Target::cidr("203.0.113.0/24").unwrap(), Source::Manual, "")
    };
    let report = Entry {
        action: Action::Report,
        added: at(30),
        ..Entry::block(t("report.example"), Source::Manual, "")
    };
    s.apply_feed("f", &[cidr, report], &FeedFetch::default())
        .unwrap();
    let reasons = vec![
        ReasonRecord {
            feature: "answer_networks".into(),
            contribution: 2.1,
        },
        ReasonRecord {
            feature: "short_ttl".into(),
            contribution: 0.7,
        },
    ];
    let flux = VerdictRecord {
        reasons: reasons.clone(),
        first_seen: at(5),
        addresses: ["192.0.2.10", "2001:db8::10", "198.51.100.5"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect(),
        ..VerdictRecord::new("flux.example", Level::Flux, 0.95, at(100))
    };
    let sus = VerdictRecord {
        reasons,
        ..VerdictRecord::new("sus.example", Level::Suspicious, 0.55, at(50))
    };
    s.journal_verdicts(&[flux, sus]).unwrap();
    (dir, s)
}

fn producer() -> Producer {
    Producer {
        name: "sensor-1".into(),
        now: at(1000),
    }
}

fn all(s: &Store) -> Vec<Indicator> {
    indicators(
        &s.export_query(None, SourceFilter::All, Level::Suspicious, at(100))
            .unwrap(),
    )
}

fn render(format: ExportFormat, items: &[Indicator]) -> String {
    let mut out = Vec::new();
    write(format, items, &producer(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn the_query_takes_live_blocks_and_verdicts_by_filter() {
    let (_d, s) = sample();
    let q = |since, src, lvl| s.export_query(since, src, lvl, at(100)).unwrap();
    let set = q(None, SourceFilter::All, Level::Suspicious);
    let names: Vec<String> = set.entries.iter().map(|e| e.target.to_string()).collect();
    assert_eq!(
        names,
        [
            "203.0.113.0/24",
            "flux.example",
            "manual.example",
            "report.example",
            "192.0.2.10",
            "2001:db8::10"
        ]
    );
    assert_eq!(set.verdicts.len(), 2);
    assert_eq!(q(None, SourceFilter::All, Level::Flux).verdicts.len(), 1);
    let feed = q(None, SourceFilter::Feed, Level::Suspicious);
    assert_eq!((feed.entries.len(), feed.verdicts.len()), (2, 0));
    let manual = q(None, SourceFilter::Manual, Level::Suspicious);
    assert_eq!(manual.entries.len(), 1);
    // Since: the feed's entries (added at 30) and the verdicts last seen at 50 and 100.
    let recent = q(Some(at(25)), SourceFilter::All, Level::Suspicious);
    assert_eq!((recent.entries.len(), recent.verdicts.len()), (2, 2));
}

#[test]
fn a_block_and_its_verdict_are_one_indicator() {
    let (_d, s) = sample();
    let items = all(&s);
    assert_eq!(items.len(), 7, "6 blocks and sus.example, found only");
    let flux = items
        .iter()
        .find(|i| i.target.to_string() == "flux.example")
        .unwrap();
    assert_eq!(flux.action, Some(Action::Block));
    assert_eq!(flux.level, Some(Level::Flux));
    assert_eq!(flux.score, Some(0.95), "the higher of block and verdict");
    assert_eq!(flux.first_seen, at(5));
    assert_eq!(flux.last_seen, at(100));
    assert_eq!(flux.valid_until, Some(at(86_400)));
    assert_eq!(flux.addresses.len(), 3);
    assert!(
        flux.reasons.starts_with("answer_networks +2.100"),
        "{}",
        flux.reasons
    );
    let sus = items
        .iter()
        .find(|i| i.target.to_string() == "sus.example")
        .unwrap();
    assert_eq!((sus.action, sus.level), (None, Some(Level::Suspicious)));
}

/// The Python of the environment `cargo xtask setup` makes (the same rule as
/// `xtask::setup::python_venv`), or `None` (a skip) outside CI.
fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("FLUX_AGENT_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_HOME").map(|h| Path::new(&h).join("flux-agent-venv")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/flux-agent-venv"))
        })?;
    let py = venv.join("bin/python");
    if py.is_file() {
        return Some(py);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing: run `cargo xtask setup` (it installs stix2-validator and pymisp)",
        py.display()
    );
    eprintln!(
        "skipped: {} is missing (run `cargo xtask setup`)",
        py.display()
    );
    None
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn stix_passes_the_oasis_validator() {
    let (dir, s) = sample();
    let items = all(&s);
    let json = render(ExportFormat::Stix, &items);
    // Re-exporting the same database gives the same bundle: ids are UUIDv5 of their content.
    assert_eq!(json, render(ExportFormat::Stix, &items));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let objects = v["objects"].as_array().unwrap();
    let of = |t: &str| objects.iter().filter(|o| o["type"] == t).count();
    assert_eq!(of("indicator"), items.len());
    assert_eq!(of("identity"), 1);
    assert_eq!(of("infrastructure"), 1, "one flux name");
    assert_eq!(of("observed-data"), 2, "two names found");
    let flux = objects
        .iter()
        .find(|o| o["type"] == "indicator" && o["name"] == "flux.example")
        .unwrap();
    assert_eq!(flux["pattern"], "[domain-name:value = 'flux.example']");
    assert_eq!(flux["confidence"], 95);
    assert!(flux["valid_until"].is_string());
    assert!(
        flux["description"]
            .as_str()
            .unwrap()
            .contains("answer_networks")
    );
    let rel = |kind: &str| {
        objects
            .iter()
            .filter(|o| o["type"] == "relationship" && o["relationship_type"] == kind)
            .count()
    };
    assert_eq!(rel("based-on"), 2);
    // flux.example and its two blocked addresses indicate the fast-flux network.
    assert_eq!(rel("indicates"), 3);
    assert_eq!(rel("resolves-to"), 3);
    let Some(py) = venv_python() else { return };
    let file = dir.path().join("bundle.json");
    std::fs::write(&file, &json).unwrap();
    let validator = py.with_file_name("stix2_validator");
    let (ok, text) = run(Command::new(&validator)
        .args(["--strict", "--version", "2.1"])
        .arg(&file));
    assert!(ok, "stix2-validator refused the bundle:\n{text}");
    assert!(text.contains("[+] STIX JSON: Valid"), "{text}");
    // And it does fail on a broken one (the check is real): an indicator without a pattern.
    let mut broken = v.clone();
    if let Some(o) = broken["objects"]
        .as_array_mut()
        .and_then(|a| a.iter_mut().find(|o| o["type"] == "indicator"))
    {
        o.as_object_mut().unwrap().remove("pattern");
    }
    std::fs::write(&file, broken.to_string()).unwrap();
    let (ok, text) = run(Command::new(&validator)
        .args(["--strict", "--version", "2.1"])
        .arg(&file));
    assert!(!ok, "the validator passed a broken bundle:\n{text}");
}

#[test]
fn misp_loads_in_pymisp() {
    let (dir, s) = sample();
    let items = all(&s);
    let json = render(ExportFormat::Misp, &items);
    let Some(py) = venv_python() else { return };
    let file = dir.path().join("event.json");
    std::fs::write(&file, &json).unwrap();
    let script = r#"
import sys
from pymisp import MISPEvent
e = MISPEvent()
e.load_file(sys.argv[1])
ids = sorted(a.value for a in e.attributes if a.to_ids)
print(len(e.attributes))
print(" ".join(ids))
print(" ".join(sorted({a.type for a in e.attributes})))
for a in e.attributes:
    assert a.first_seen <= a.last_seen, a.value
"#;
    let (ok, text) = run(Command::new(py).args(["-c", script]).arg(&file));
    assert!(ok, "PyMISP refused the event:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    // 7 indicators, and 198.51.100.5 seen behind flux.example (not itself listed).
    assert_eq!(lines.first(), Some(&"8"), "{text}");
    // Enforced only: not report.example, sus.example (found only), 198.51.100.5.
    assert_eq!(
        lines.get(1),
        Some(&"192.0.2.10 2001:db8::10 203.0.113.0/24 flux.example manual.example"),
        "{text}"
    );
    assert_eq!(lines.get(2), Some(&"domain ip-dst"), "{text}");
}

#[test]
fn csv_hosts_and_plain_lists() {
    let (_d, s) = sample();
    let items = all(&s);
    let csv_text = render(ExportFormat::Csv, &items);
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(r.headers().unwrap(), text_lists::CSV_HEADER.as_slice());
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), items.len());
    let flux = rows.iter().find(|r| &r[1] == "flux.example").unwrap();
    assert_eq!(
        (&flux[0], &flux[2], &flux[4], &flux[5]),
        ("domain", "block", "flux", "0.950")
    );
    assert!(
        flux[9].contains("short_ttl"),
        "reasons with a comma stay one field"
    );
    let hosts = render(ExportFormat::Hosts, &items);
    let lines: Vec<&str> = hosts.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "0.0.0.0 flux.example",
            "0.0.0.0 manual.example",
            "0.0.0.0 report.example",
            "0.0.0.0 sus.example"
        ]
    );
    let plain = render(ExportFormat::Plain, &items);
    assert_eq!(plain.lines().filter(|l| !l.starts_with('#')).count(), 7);
    assert!(plain.contains("\n203.0.113.0/24\n"));
    assert_eq!("stix".parse(), Ok(ExportFormat::Stix));
    assert!("xml".parse::<ExportFormat>().is_err());
}
