//! Real DNS traffic through `flux-agent replay`: no legitimate site may reach `flux` outside
//! the allowlist. `real-benign/home-resolver.pcap.gz` (`../shared/datasets`, 299,978 real
//! replies of a crawler resolving popular names) is the false-positive test that counts: every
//! name in it is taken as legitimate (docs/evaluation.md). A flux verdict there is a site the
//! agent's users would lose. The real Zeek `dns.log` of `zeek-logs/` (a competition network's
//! clients, A and AAAA) is the second such set.
//!
//! Skips when the dataset is absent (a user's fresh clone); fails in CI without the ASN
//! database `cargo xtask setup` installs, as `detection_quality.rs` does, since the verdicts
//! depend on it.

use std::path::PathBuf;

use flux_detect::enrich::{DEFAULT_ASN_FILES, default_db_dir};
use flux_tests::agent_bin;
use serde_json::Value;

/// The dataset file, or `None` (and a line saying so) when it is absent.
fn dataset(rel: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets")
        .join(rel);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {} is absent", path.display());
        None
    }
}

/// Whether the ASN database is installed; in CI its absence fails the test.
fn have_db() -> bool {
    let dir = default_db_dir();
    if DEFAULT_ASN_FILES.iter().any(|f| dir.join(f).is_file()) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no ASN database in {}: `cargo xtask setup` installs it",
        dir.display()
    );
    eprintln!("SKIPPED: no ASN database in {}", dir.display());
    false
}

/// Every `flux` verdict of the replay that the allowlist did not cover, as
/// `domain score (reasons)`, and the replay's summary.
fn flux_outside_allowlist(file: &std::path::Path) -> (Vec<String>, Value) {
    let o = std::process::Command::new(agent_bin())
        .args(["replay", "--json"])
        .arg(file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run flux-agent replay");
    assert!(
        o.status.success(),
        "replay {}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let summary = lines.last().expect("a summary line").clone();
    assert_eq!(summary["type"], "summary");
    let flagged = lines
        .iter()
        .filter(|l| l["type"] == "verdict" && l["level"] == "flux" && l["allowlisted"] != true)
        .map(|l| {
            let reasons: Vec<String> = l["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .take(3)
                .map(|r| format!("{} +{}", r["feature"], r["contribution"]))
                .collect();
            format!("{} {} ({})", l["domain"], l["score"], reasons.join(", "))
        })
        .collect();
    (flagged, summary)
}

/// The three random `.top` sites on one two-/24 server farm (the farm is not a rented pool,
/// `params::rented_pool::MIN_BLOCKS`) and the anti-blocking front end reached only through
/// other sites' CNAMEs (its country and block spread counts as its networks do,
/// `model::own_terms`) reached `flux` here before 2026-12-06.
#[test]
fn real_resolver_traffic_flags_no_site_outside_the_allowlist() {
    let Some(file) = dataset("real-benign/home-resolver.pcap.gz") else {
        return;
    };
    if !have_db() {
        return;
    }
    let (flagged, summary) = flux_outside_allowlist(&file);
    assert_eq!(summary["parsed"], 299_978, "{summary}");
    assert!(
        flagged.is_empty(),
        "{} flux verdicts on legitimate sites outside the allowlist:\n{}",
        flagged.len(),
        flagged.join("\n")
    );
}

/// The real Zeek `dns.log` (WRCCDC 2018; clients that ask for A and AAAA side by side): no
/// `flux` outside the allowlist. `debian.org` reached it before 2026-12-06: every Debian host
/// name gave an A and a AAAA answer, each name counted as one name with two answers (rotating),
/// so the parent rule never held over its hosts at six donors' networks
/// (`key_state::child_tag` now tells the families apart).
#[test]
fn real_zeek_log_flags_no_site_outside_the_allowlist() {
    let Some(file) = dataset("zeek-logs/dns.log.gz") else {
        return;
    };
    if !have_db() {
        return;
    }
    let (flagged, summary) = flux_outside_allowlist(&file);
    assert_eq!(summary["parsed"], 22_069, "{summary}");
    assert!(
        flagged.is_empty(),
        "{} flux verdicts on legitimate sites outside the allowlist:\n{}",
        flagged.len(),
        flagged.join("\n")
    );
}
