//! Analysis aid (not part of the evaluation): replays the scenario and 2009 pcaps written by
//! `flux-eval` and prints, for every labelled key whose answers changed, the score and both
//! windows' features as JSON lines.
use std::{collections::HashMap, path::PathBuf, sync::Arc};

use flux_detect::{
    capture_file::{self, DEFAULT_PORTS},
    dns::parse_response,
    enrich::{Enricher, default_db_dir},
    known_good::Allowlist,
    score::{Scorer, ScorerConfig, WINDOWS, registered_domain, secs},
};
use flux_tests::eval::labels::{Label, LabelIndex, Truth, read_labels};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(&args[0]);
    let mut files: Vec<PathBuf> = args[1..].iter().map(|f| dir.join(f)).collect();
    if files.is_empty() {
        files = flux_tests::capture_files(&dir);
    }
    // Without labels every name is a legitimate entity of its own (real captures).
    let labels = LabelIndex::new(read_labels(&dir.join("labels.tsv")).unwrap_or_default());
    let default = |k: &str| Label {
        domain: registered_domain(k).unwrap_or(k).to_owned(),
        class: "captures".into(),
        truth: Truth::Benign,
    };
    let enricher = Arc::new(Enricher::load_dir(&default_db_dir()).unwrap());
    let mut scorer = Scorer::new(
        ScorerConfig::default(),
        enricher,
        Arc::new(Allowlist::builtin()),
    );
    let mut first: HashMap<String, u32> = HashMap::new();
    let mut last: HashMap<String, (u32, u32, u32, u32)> = HashMap::new();
    let mut read = Default::default();
    let mut out = Vec::new();
    for path in &files {
        capture_file::read_file_each(path, &DEFAULT_PORTS, &mut read, |c| {
            let Ok(msg) = parse_response(c.payload, c.truncated) else {
                return;
            };
            let now = secs(c.ts);
            let mut names: Vec<std::sync::Arc<str>> = vec![msg.qname.clone()];
            for r in msg
                .answers
                .iter()
                .chain(&msg.authority)
                .chain(&msg.additional)
            {
                names.push(r.name.clone());
                if let Some(t) = &r.target {
                    names.push(t.clone());
                }
            }
            let mut keys: Vec<String> = Vec::new();
            for n in &names {
                for k in [Some(&**n), registered_domain(n)].into_iter().flatten() {
                    if !keys.iter().any(|x| x == k) {
                        keys.push(k.to_owned());
                    }
                }
            }
            for k in &keys {
                let l = labels.label_for(k).cloned().unwrap_or_else(|| default(k));
                first.entry(l.domain.clone()).or_insert(now);
            }
            out.clear();
            scorer.observe(c.ts, &msg, &mut out);
            for k in &keys {
                let l = labels.label_for(k).cloned().unwrap_or_else(|| default(k));
                let Some(st) = scorer.state_of(k) else {
                    continue;
                };
                let f1 = st.features(now, WINDOWS[0]);
                let f2 = st.features(now, WINDOWS[1]);
                let sig = (f1.rrsets, f2.rrsets, f2.distinct_ips, f2.glue_ips_max);
                if last.get(k) == Some(&sig) {
                    continue;
                }
                last.insert(k.clone(), sig);
                let Some(v) = scorer.explain(k, c.ts) else {
                    continue;
                };
                let level = scorer.level_of(k).map(|l| l.as_str()).unwrap_or("");
                println!(
                    "{}",
                    serde_json::json!({
                        "class": l.class, "truth": l.truth.as_str(), "entity": l.domain, "key": k,
                        "t": now - first[&l.domain], "score": v.score, "level": level,
                        "shared": v.features.shared_flux_ips, "f1": f1, "f2": f2,
                    })
                );
            }
        })
        .unwrap();
    }
}
