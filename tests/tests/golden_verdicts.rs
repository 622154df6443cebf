//! Golden verdicts: the scorer's verdict stream on a small fixed draw of the scenario generator
//! must not change unless someone means it to.
//!
//! Every threshold, weight and window of the model (`flux-detect/src/score/params.rs`) moves
//! some verdict of this draw: its level changes, scores, block gate and reasons are compared
//! line by line with `tests/golden/verdicts-seed<SEED>.jsonl`. A deliberate change of the model
//! regenerates the file and shows the difference in review:
//!
//! ```text
//! FLUX_GOLDEN_UPDATE=1 cargo test -p flux-tests --test golden_verdicts
//! ```
//!
//! Timestamps are written as Unix seconds (`ts_unix`), not in the verdict's own text format,
//! so that the JSON contract of events can change without touching the model's golden file.
//!
//! Needs the ASN database `cargo xtask setup` installs (the generator draws addresses from
//! it, and the file pins its version on the first line); without it the test fails in CI and
//! skips elsewhere, as `scoring.rs` does.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use flux_detect::{
    dns::parse_response,
    enrich::{Enricher, default_db_dir},
    known_good::Allowlist,
    score::{Scorer, ScorerConfig, Verdict},
};
use flux_tests::eval::scenarios::{self, GenConfig};
use serde_json::Value;

/// The draw: the default seed of `cargo xtask eval` (a tuning seed, see `eval::seeds`: this
/// test pins behaviour, it measures nothing), one instance per class (every class of the
/// generator, flux and legitimate alike), six hours of lookups.
const SEED: u64 = 2026;
const PER_CLASS: usize = 2;
const HOURS: u64 = 6;

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("golden/verdicts-seed{SEED}.jsonl"))
}

/// One verdict as a golden line: the verdict's JSON with its timestamp as Unix seconds.
fn line(v: &Verdict) -> String {
    let mut j = serde_json::to_value(v).expect("a verdict serialises");
    let secs =
        v.ts.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
    if let Value::Object(m) = &mut j {
        m.remove("ts");
        m.insert("ts_unix".into(), secs.into());
    }
    j.to_string()
}

/// The header line: what was drawn, and the database it was drawn from.
fn header(db_version: &str, verdicts: usize) -> String {
    serde_json::json!({
        "golden": "flux-agent verdicts of one scenario draw",
        "seed": SEED,
        "per_class": PER_CLASS,
        "hours": HOURS,
        "verdicts": verdicts,
        "then": "one line per tracked key: its level and scores at the end of the draw",
        "asn_db": db_version,
        "regenerate": "FLUX_GOLDEN_UPDATE=1 cargo test -p flux-tests --test golden_verdicts",
    })
    .to_string()
}

/// Draws the scenarios and replays them through a scorer configured as `flux-agent replay`
/// configures it by default. Returns the verdict lines, then one line per tracked key with the
/// score it would get at the end of the draw (`explain`): a weight or breakpoint that moves
/// no level in this draw still moves some key's score.
fn verdict_lines(enricher: Arc<Enricher>) -> (Vec<String>, Vec<String>) {
    let cfg = GenConfig {
        seed: SEED,
        per_class: PER_CLASS,
        duration: Duration::from_secs(HOURS * 3600),
        ..GenConfig::default()
    };
    let (mut responses, _labels, _summary) =
        scenarios::simulate(&cfg, &enricher).expect("draw the scenarios");
    // As the capture file is written (`pcapw::write_pcap`): sorted by time, stable.
    responses.sort_by_key(|r| r.ts);
    let mut scorer = Scorer::new(
        ScorerConfig::default(),
        enricher,
        Arc::new(Allowlist::builtin()),
    );
    let mut out = Vec::new();
    let mut lines = Vec::new();
    let mut end = SystemTime::UNIX_EPOCH;
    for r in &responses {
        let msg = parse_response(&r.payload, false).expect("the generator writes valid DNS");
        out.clear();
        end = SystemTime::UNIX_EPOCH + r.ts;
        scorer.observe(end, &msg, &mut out);
        lines.extend(out.iter().map(line));
    }
    let mut names: Vec<String> = scorer.keys().map(|(k, _)| k.to_owned()).collect();
    names.sort();
    let finals = names
        .iter()
        .filter_map(|k| {
            let v = scorer.explain(k, end)?;
            Some(
                serde_json::json!({
                    "final": k,
                    "level": v.level,
                    "score": v.score,
                    "own_score": v.own_score,
                    "block": v.block,
                })
                .to_string(),
            )
        })
        .collect();
    (lines, finals)
}

#[test]
fn scenario_draw_gives_the_golden_verdicts() {
    if !flux_tests::have_asn_db() {
        return;
    }
    let dir = default_db_dir();
    let db_version = fs::read_to_string(dir.join("VERSION"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("asn "))
        .unwrap_or("unknown")
        .to_owned();
    let enricher = Arc::new(Enricher::load_dir(&dir).expect("load the ASN database"));
    let (lines, finals) = verdict_lines(enricher);
    assert!(!lines.is_empty(), "the draw gave no verdict at all");
    let mut actual = header(&db_version, lines.len());
    for l in lines.iter().chain(&finals) {
        actual.push('\n');
        actual.push_str(l);
    }
    actual.push('\n');

    let path = golden_path();
    if std::env::var_os("FLUX_GOLDEN_UPDATE").is_some() {
        fs::create_dir_all(path.parent().expect("golden/ has a parent")).expect("mkdir golden");
        fs::write(&path, &actual).expect("write the golden file");
        eprintln!("wrote {} ({} verdicts)", path.display(), lines.len());
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nCreate it with FLUX_GOLDEN_UPDATE=1 cargo test -p flux-tests \
             --test golden_verdicts",
            path.display()
        )
    });
    if expected == actual {
        return;
    }
    let (mut exp, mut act) = (expected.lines(), actual.lines());
    let mut n = 0;
    let (e, a) = loop {
        n += 1;
        match (exp.next(), act.next()) {
            (Some(e), Some(a)) if e == a => continue,
            (e, a) => break (e, a),
        }
    };
    panic!(
        "the verdict stream differs from {} at line {n} (line 1 is the header).\n\
         expected: {}\n\
         actual:   {}\n\
         Golden: {} lines; now: {} lines.\n\
         If the model changed on purpose (a weight, a threshold, a window), regenerate the \
         file and commit it with the reason:\n  \
         FLUX_GOLDEN_UPDATE=1 cargo test -p flux-tests --test golden_verdicts\n\
         If the first line differs in `asn_db`, the ASN database is another version than the \
         one the file was made with (`cargo xtask setup` installs the pinned one).",
        path.display(),
        e.unwrap_or("(end of file)"),
        a.unwrap_or("(end of stream)"),
        expected.lines().count(),
        actual.lines().count(),
    );
}
