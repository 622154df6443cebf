//! `cargo xtask eval [PATH...]`: replays labelled data through the scorer and reports, per
//! class, detection rate, false-positive rate and median time to detect, with the Holz and Zeek
//! baselines computed on the same stream beside it.
//!
//! With no PATH it evaluates: the scenario generator (seeded), the 2009 fast-flux resolutions
//! (converted and labelled by evidence) and the real captures (every name legitimate), the last
//! two only when `../shared/datasets` is present. A PATH is a folder with capture files and a
//! `labels.tsv`, or a capture file whose names are all taken as legitimate.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::SystemTime,
};

use anyhow::{Context as _, bail};
use flux_agent::{
    allowlist::Allowlist,
    capfile::DEFAULT_PORTS,
    enrich::{Enricher, default_db_dir},
    replay,
    score::{Level, Scorer, ScorerConfig},
};
use flux_tests::eval::{
    dig2009,
    labels::{Label, LabelIndex, Truth, read_labels},
    scenarios::{self, GenConfig},
};

struct Dataset {
    name: String,
    files: Vec<PathBuf>,
    labels: LabelIndex,
    /// Class for names no label covers (real captures: every name is legitimate).
    default: Option<Label>,
}

/// What happened to one labelled entity.
#[derive(Default, Clone)]
struct Outcome {
    first_seen: Option<SystemTime>,
    ours: Option<SystemTime>,
    ours_suspicious: bool,
    allowlisted: bool,
    holz: Option<SystemTime>,
    zeek: Option<SystemTime>,
    /// Final score of the entity's best key (calibration).
    score: f32,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flux-eval: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = default_db_dir();
    let enricher = Arc::new(
        Enricher::load_dir(&dir)
            .with_context(|| format!("load databases from {}", dir.display()))?,
    );
    if !enricher.has_asn() {
        bail!(
            "no ASN database in {}: run `cargo xtask setup` (the scenarios draw addresses from it)",
            dir.display()
        );
    }
    eprintln!("{}", enricher.describe());
    let out = workspace().join("target/eval");
    fs::create_dir_all(&out)?;
    let sets = if args.first().is_some_and(|a| a == "--scenarios-only") {
        // `--scenarios-only [PER_CLASS [SEED]]`: other seeds check that the model is not tuned
        // to one draw of the generator.
        let cfg = GenConfig {
            per_class: args
                .get(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(GenConfig::default().per_class),
            seed: args
                .get(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(GenConfig::default().seed),
            ..GenConfig::default()
        };
        vec![scenario_dataset(
            &cfg,
            &enricher,
            &out.join("scenarios-test"),
        )?]
    } else if args.is_empty() {
        default_datasets(&enricher, &out)?
    } else {
        args.iter()
            .map(|a| path_dataset(Path::new(a)))
            .collect::<anyhow::Result<_>>()?
    };

    let mut report = String::new();
    writeln!(report, "# flux-agent evaluation\n")?;
    writeln!(
        report,
        "ASN/geo: {}. Detection = a key of the entity reached `flux`; FP = a legitimate entity \
         reached `flux` (ours) or crossed 142.38 (Holz, Zeek). TTD = observation time from the \
         entity's first response to detection (median, minutes).\n",
        enricher.describe()
    )?;
    for set in &sets {
        let (table, summary_line) = evaluate(set, &enricher)?;
        writeln!(report, "## {}\n\n{summary_line}\n\n{table}", set.name)?;
    }
    println!("{report}");
    let path = out.join("results.md");
    fs::write(&path, &report)?;
    eprintln!("written to {}", path.display());
    Ok(())
}

fn default_datasets(enricher: &Enricher, out: &Path) -> anyhow::Result<Vec<Dataset>> {
    let mut sets = Vec::new();
    sets.push(scenario_dataset(
        &GenConfig::default(),
        enricher,
        &out.join("scenarios"),
    )?);
    let shared = workspace().join("../shared/datasets");
    let ff = shared.join("fastflux-2009");
    if ff.is_dir() {
        let o = out.join("fastflux-2009");
        let report = dig2009::convert_dir(&ff, &o).context("convert the 2009 data")?;
        eprintln!("{report}");
        sets.push(Dataset {
            name: "Real 2009 fast-flux resolutions (FluXOR list + benign lookups)".into(),
            files: vec![o.join("fluxor.pcap"), o.join("benign.pcap")],
            labels: LabelIndex::new(read_labels(&o.join("labels.tsv"))?),
            default: None,
        });
    } else {
        eprintln!("SKIPPED: {} not present", ff.display());
    }
    let pcaps = shared.join("pcaps");
    if pcaps.is_dir() {
        let files = flux_tests::capture_files(&pcaps);
        sets.push(Dataset {
            name: format!(
                "Real captures from public test suites ({} files)",
                files.len()
            ),
            files,
            labels: LabelIndex::new(Vec::new()),
            default: Some(Label::new("", "captures", Truth::Benign)),
        });
    } else {
        eprintln!("SKIPPED: {} not present", pcaps.display());
    }
    Ok(sets)
}

fn scenario_dataset(cfg: &GenConfig, enricher: &Enricher, scen: &Path) -> anyhow::Result<Dataset> {
    let summary = scenarios::generate(cfg, enricher, scen).context("generate scenarios")?;
    eprintln!("scenarios: {summary:?}");
    Ok(Dataset {
        name: format!(
            "Scenario generator (seed {}, {} per class)",
            cfg.seed, cfg.per_class
        ),
        files: vec![scen.join("scenarios.pcap")],
        labels: LabelIndex::new(read_labels(&scen.join("labels.tsv"))?),
        default: None,
    })
}

fn path_dataset(p: &Path) -> anyhow::Result<Dataset> {
    if p.is_dir() {
        let files = flux_tests::capture_files(p);
        let labels = p.join("labels.tsv");
        if !labels.is_file() {
            bail!("{} has no labels.tsv", p.display());
        }
        return Ok(Dataset {
            name: p.display().to_string(),
            files,
            labels: LabelIndex::new(read_labels(&labels)?),
            default: None,
        });
    }
    Ok(Dataset {
        name: p.display().to_string(),
        files: vec![p.to_owned()],
        labels: LabelIndex::new(Vec::new()),
        default: Some(Label::new("", "unlabelled", Truth::Benign)),
    })
}

/// Replays one dataset and renders its table.
fn evaluate(set: &Dataset, enricher: &Arc<Enricher>) -> anyhow::Result<(String, String)> {
    let mut scorer = Scorer::new(
        ScorerConfig {
            track_baselines: true,
            ..ScorerConfig::default()
        },
        enricher.clone(),
        Arc::new(Allowlist::builtin()),
    );
    // Entity = (label domain, class, truth); unlabelled keys of a default-labelled set are
    // entities of their own.
    let mut outcomes: HashMap<Label, Outcome> = HashMap::new();
    let entity = |key: &str| -> Option<Label> {
        match set.labels.label_for(key) {
            Some(l) => Some(l.clone()),
            None => set.default.as_ref().map(|d| Label {
                domain: flux_agent::score::registered_domain(key)
                    .unwrap_or(key)
                    .to_owned(),
                class: d.class.clone(),
                truth: d.truth,
            }),
        }
    };
    let mut verdicts = Vec::new();
    let summary = replay::replay_with(
        &set.files,
        &DEFAULT_PORTS,
        &mut scorer,
        |ts, msg| {
            let names = std::iter::once(msg.qname.as_str())
                .chain(msg.answers.iter().map(|r| r.name.as_str()));
            for n in names {
                if let Some(l) = entity(n) {
                    let o = outcomes.entry(l).or_default();
                    o.first_seen = Some(o.first_seen.map_or(ts, |t| t.min(ts)));
                }
            }
        },
        |v| verdicts.push(v.clone()),
    );
    for v in &verdicts {
        let Some(l) = entity(&v.domain) else { continue };
        let o = outcomes.entry(l).or_default();
        match v.level {
            Level::Flux => {
                o.ours = Some(o.ours.map_or(v.ts, |t| t.min(v.ts)));
                o.allowlisted |= v.allowlisted;
            }
            Level::Suspicious => o.ours_suspicious = true,
            Level::Benign => {}
        }
    }
    for h in scorer.take_baseline_hits() {
        let Some(l) = entity(&h.domain) else { continue };
        let o = outcomes.entry(l).or_default();
        let slot = if h.baseline == "holz" {
            &mut o.holz
        } else {
            &mut o.zeek
        };
        *slot = Some(slot.map_or(h.ts, |t| t.min(h.ts)));
    }
    let mut best_key: HashMap<Label, (f32, String, u32)> = HashMap::new();
    for (k, st) in scorer.keys() {
        if let Some(l) = entity(k) {
            let o = outcomes.entry(l.clone()).or_default();
            o.score = o.score.max(st.last_score);
            let b = best_key.entry(l).or_insert((-1.0, String::new(), 0));
            if st.last_score > b.0 {
                *b = (st.last_score, k.to_owned(), st.last_eval);
            }
        }
    }
    // FLUX_EVAL_DEBUG=1: why each miss and each false positive came out as it did, and what
    // finally decided each detection that took longer than 10 minutes.
    if std::env::var_os("FLUX_EVAL_DEBUG").is_some() {
        for v in verdicts.iter().filter(|v| v.level == Level::Flux) {
            let Some(l) = entity(&v.domain) else { continue };
            let Some(o) = outcomes.get(&l) else { continue };
            let (Some(first), Some(at)) = (o.first_seen, o.ours) else {
                continue;
            };
            let ttd = at
                .duration_since(first)
                .map_or(0.0, |d| d.as_secs_f64() / 60.0);
            if at == v.ts && ttd > 10.0 {
                eprintln!(
                    "SLOW {} {} ttd={ttd:.1} key={} score={:.2} reasons={} f={}",
                    l.class,
                    l.domain,
                    v.domain,
                    v.score,
                    serde_json::to_string(&v.reasons).unwrap_or_default(),
                    serde_json::to_string(&v.features).unwrap_or_default()
                );
            }
        }
        // Time to detect of the entities a baseline also detects, side by side: the medians in
        // the table are over different sets when the detection rates differ.
        // A key can be judged on a delegation before a response names the entity: 0 then.
        let mins = |t: Option<SystemTime>, first: SystemTime| {
            t.map_or(f64::NAN, |t| {
                t.duration_since(first)
                    .map_or(0.0, |d| d.as_secs_f64() / 60.0)
            })
        };
        for (l, o) in &outcomes {
            if let (Some(first), Some(_)) = (o.first_seen, o.ours)
                && (o.holz.is_some() || o.zeek.is_some())
            {
                eprintln!(
                    "BOTH {} {} ours={:.1} holz={:.1} zeek={:.1}",
                    l.class,
                    l.domain,
                    mins(o.ours, first),
                    mins(o.holz, first),
                    mins(o.zeek, first)
                );
            }
        }
        for (l, o) in &outcomes {
            let miss = l.truth == Truth::Flux && o.ours.is_none();
            let fp = l.truth == Truth::Benign && o.ours.is_some();
            if !(miss || fp) {
                continue;
            }
            let Some((score, key, at)) = best_key.get(l) else {
                continue;
            };
            if let Some(v) = scorer.explain(key, flux_agent::score::from_secs(*at)) {
                eprintln!(
                    "{} {} {} key={key} score={:.2} f={}",
                    if miss { "MISS" } else { "FP" },
                    l.class,
                    l.domain,
                    score,
                    serde_json::to_string(&v.features).unwrap_or_default()
                );
            }
        }
    }

    // Only entities the stream actually showed count.
    let seen: Vec<(&Label, &Outcome)> = outcomes
        .iter()
        .filter(|(_, o)| o.first_seen.is_some())
        .collect();
    let mut by_class: BTreeMap<(Truth, String), Vec<&Outcome>> = BTreeMap::new();
    for (l, o) in &seen {
        by_class
            .entry((l.truth, l.class.clone()))
            .or_default()
            .push(o);
    }
    let mut t = String::new();
    writeln!(
        t,
        "| class | truth | entities | flux-agent | TTD | Holz | TTD | Zeek | TTD |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let mut totals: BTreeMap<Truth, Vec<&Outcome>> = BTreeMap::new();
    for ((truth, class), os) in &by_class {
        row(&mut t, class, *truth, os)?;
        totals.entry(*truth).or_default().extend(os.iter().copied());
    }
    for (truth, os) in &totals {
        row(&mut t, "**all**", *truth, os)?;
    }
    // One machine-readable line per dataset, for tests/tests/scoring.rs.
    let stat = |truth: Truth, f: &dyn Fn(&Outcome) -> Option<SystemTime>| -> (f64, f64) {
        let os = totals.get(&truth).map_or(&[][..], |v| &v[..]);
        let mins: Vec<f64> = os
            .iter()
            .filter_map(|o| {
                Some(
                    f(o)?
                        .duration_since(o.first_seen?)
                        .map_or(0.0, |d| d.as_secs_f64() / 60.0),
                )
            })
            .collect();
        let rate = if os.is_empty() {
            0.0
        } else {
            mins.len() as f64 / os.len() as f64
        };
        (
            rate,
            if mins.is_empty() {
                f64::NAN
            } else {
                median(mins)
            },
        )
    };
    let mut js = serde_json::Map::new();
    for (name, f) in [
        (
            "ours",
            &(|o: &Outcome| o.ours) as &dyn Fn(&Outcome) -> Option<SystemTime>,
        ),
        ("holz", &|o: &Outcome| o.holz),
        ("zeek", &|o: &Outcome| o.zeek),
    ] {
        let (det, ttd) = stat(Truth::Flux, f);
        let (fp, _) = stat(Truth::Benign, f);
        js.insert(name.into(), serde_json::json!({"detection": det, "fp_rate": fp, "median_ttd_min": if ttd.is_nan() { None } else { Some(ttd) }}));
    }
    eprintln!(
        "EVAL-JSON {} {}",
        set.name.split_whitespace().next().unwrap_or(""),
        serde_json::Value::Object(js)
    );
    let hard_enforced = seen
        .iter()
        .filter(|(l, o)| l.truth == Truth::Hard && o.ours.is_some() && !o.allowlisted)
        .count();
    let mut fps: Vec<&str> = seen
        .iter()
        .filter(|(l, o)| l.truth == Truth::Benign && o.ours.is_some())
        .map(|(l, _)| l.domain.as_str())
        .collect();
    fps.sort_unstable();
    writeln!(
        t,
        "\nHard cases flagged and not covered by the allowlist: {hard_enforced}. \
         Legitimate entities flagged by flux-agent: {}{}.",
        fps.len(),
        if fps.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                fps.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
            )
        }
    )?;
    writeln!(t, "\n{}", calibration(&seen))?;
    let line = format!(
        "{} files, {} DNS responses ({} malformed), {} keys tracked, {:.0} responses/s replayed \
         (parse + score, one core, release), scorer memory ≈ {:.1} MiB",
        summary.files,
        summary.parsed + summary.malformed,
        summary.malformed,
        summary.scorer.keys_tracked,
        summary.responses_per_s,
        summary.scorer_memory_bytes as f64 / (1 << 20) as f64
    );
    Ok((t, line))
}

fn row(t: &mut String, class: &str, truth: Truth, os: &[&Outcome]) -> std::fmt::Result {
    let n = os.len();
    let cell = |f: &dyn Fn(&Outcome) -> Option<SystemTime>| -> (String, String) {
        let hits: Vec<f64> = os
            .iter()
            .filter_map(|o| {
                let at = f(o)?;
                let first = o.first_seen?;
                Some(
                    at.duration_since(first)
                        .map_or(0.0, |d| d.as_secs_f64() / 60.0),
                )
            })
            .collect();
        let rate = if n == 0 {
            0.0
        } else {
            100.0 * hits.len() as f64 / n as f64
        };
        let label = match truth {
            Truth::Flux => format!("{rate:.1}% detected"),
            _ => format!("{rate:.1}% FP ({})", hits.len()),
        };
        let ttd = if truth == Truth::Flux && !hits.is_empty() {
            format!("{:.1} min", median(hits))
        } else {
            "–".into()
        };
        (label, ttd)
    };
    let (a, at) = cell(&|o| o.ours);
    let (h, ht) = cell(&|o| o.holz);
    let (z, zt) = cell(&|o| o.zeek);
    writeln!(
        t,
        "| {class} | {truth} | {n} | {a} | {at} | {h} | {ht} | {z} | {zt} |"
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Observed flux share per final-score bin, and the Brier score, over labelled entities.
fn calibration(seen: &[(&Label, &Outcome)]) -> String {
    let mut bins = [(0u32, 0u32); 5];
    let mut brier = (0.0, 0u32);
    for (l, o) in seen {
        let y = match l.truth {
            Truth::Flux => 1.0,
            Truth::Benign => 0.0,
            _ => continue,
        };
        let p = f64::from(o.score);
        let b = ((p * 5.0) as usize).min(4);
        bins[b].0 += 1;
        if y > 0.5 {
            bins[b].1 += 1;
        }
        brier.0 += (p - y) * (p - y);
        brier.1 += 1;
    }
    let mut s = String::from("Calibration (final score of each labelled entity): ");
    for (i, (n, f)) in bins.iter().enumerate() {
        if *n > 0 {
            let _ = write!(
                s,
                "[{:.1},{:.1}): {}/{} flux; ",
                i as f64 / 5.0,
                (i + 1) as f64 / 5.0,
                f,
                n
            );
        }
    }
    if brier.1 > 0 {
        let _ = write!(s, "Brier score {:.3}.", brier.0 / f64::from(brier.1));
    }
    s
}
