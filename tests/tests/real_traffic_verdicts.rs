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

use flux_tests::{dataset, have_asn_db, replay_json};

/// Replays `rel` (under `../shared/datasets`) with the default databases and fails on any
/// `flux` verdict the allowlist did not cover, naming each as `domain score (3 largest
/// reasons)`. `parsed` is how many responses the file holds, so that a cut or changed file is
/// not a pass. Skips when the file is absent.
fn no_flux_outside_the_allowlist(rel: &str, parsed: u64) {
    let Some(file) = dataset(rel) else {
        return;
    };
    if !have_asn_db() {
        return;
    }
    let (lines, summary) = replay_json(&file, &[]);
    assert_eq!(summary["parsed"], parsed, "{summary}");
    let flagged: Vec<String> = lines
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
    assert!(
        flagged.is_empty(),
        "{rel}: {} flux verdicts on legitimate sites outside the allowlist:\n{}",
        flagged.len(),
        flagged.join("\n")
    );
}

/// The three random `.top` sites on one two-/24 server farm (the farm is not a rented pool,
/// `params::rented_pool::MIN_BLOCKS`) and the anti-blocking front end reached only through
/// other sites' CNAMEs (its country and block spread counts as its networks do,
/// `model::own_terms`) reached `flux` here before 2026-12-06.
#[test]
fn real_resolver_traffic_flags_no_site_outside_the_allowlist() {
    no_flux_outside_the_allowlist("real-benign/home-resolver.pcap.gz", 299_978);
}

/// The real Zeek `dns.log` (WRCCDC 2018; clients that ask for A and AAAA side by side): no
/// `flux` outside the allowlist. `debian.org` reached it before 2026-12-06: every Debian host
/// name gave an A and a AAAA answer, each name counted as one name with two answers (rotating),
/// so the parent rule never held over its hosts at six donors' networks
/// (`key_state::child_tag` now tells the families apart, and an answer of a few machines in a
/// few networks is pending, `params::PENDING_CHILD_NETWORKS_MAX`).
#[test]
fn real_zeek_log_flags_no_site_outside_the_allowlist() {
    no_flux_outside_the_allowlist("zeek-logs/dns.log.gz", 22_069);
}
