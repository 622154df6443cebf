//! `cargo xtask eval [--heldout [PER_CLASS] | PATH...]`: replays labelled data through the scorer
//! and reports, per class, detection rate, false-positive rate and median time to detect (in
//! minutes and in lookups), with the Holz and Zeek baselines computed on the same stream beside
//! it.
//!
//! With no argument it evaluates: the scenario generator (seeded), the 2009 fast-flux
//! resolutions (converted and labelled by evidence), the real captures and the real resolver
//! traffic of `real-benign/` (every name legitimate), the last three only when
//! `../shared/datasets` holds them. A PATH is a folder with capture files and a `labels.tsv`, or
//! a capture file whose names are all taken as legitimate. For every set whose names are all
//! legitimate it also lists the registered domains each detector flagged outside the allowlist.
//!
//! `--heldout [PER_CLASS]` evaluates the ten held-out generator draws
//! ([`flux_tests::eval::seeds::HELDOUT_SEEDS`]) per seed and in aggregate, and writes
//! `target/eval/heldout.md`. `--tuning [PER_CLASS]` does the same on the tuning seeds
//! ([`flux_tests::eval::seeds::TUNING_SEEDS`], 12 h each) and writes `target/eval/tuning.md`: the
//! figure to tune on. `--scenarios-only [PER_CLASS [SEED]]` evaluates one generator draw.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use flux_detect::{
    capture_file::{self, DEFAULT_PORTS, ReadStats},
    dns::parse_response,
    enrich::{Enricher, default_db_dir},
    known_good::Allowlist,
    score::{self, Level, Scorer, ScorerConfig, Verdict},
};
use flux_tests::eval::{
    dig2009,
    labels::{Label, LabelIndex, Truth, read_labels},
    lookups::{LookupClock, answer_set},
    rescore_log::RescoreLog,
    scenarios::{self, GenConfig},
    seeds::{HELDOUT_SEEDS, TUNING_SEEDS},
};

/// Instances per class of each held-out draw unless `--heldout N` says otherwise: enough for
/// per-class medians, small enough that the ten draws take a few minutes on one core.
const HELDOUT_PER_CLASS: usize = 20;
/// Observation time of each held-out draw: the slow flux classes rotate over hours, and half a
/// day lets them show it.
const HELDOUT_DURATION: Duration = Duration::from_secs(12 * 3600);
/// Reasons listed per flagged key: the ones that carried most of its score.
const TOP_REASONS: usize = 3;

const USAGE: &str = "usage: flux-eval [--heldout [PER_CLASS] | --tuning [PER_CLASS] | \
     --scenarios-only [PER_CLASS [SEED]] | PATH...]";

/// Which fixed seeds a multi-draw evaluation runs: the held-out ones (reported, never tuned on)
/// or the tuning ones drawn exactly the same way (12 h, the same count per class), so that a
/// change is tuned on the same kind of draw it is judged on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Draws {
    Heldout,
    Tuning,
}

impl Draws {
    fn seeds(self) -> &'static [u64] {
        match self {
            Draws::Heldout => &HELDOUT_SEEDS,
            Draws::Tuning => &TUNING_SEEDS,
        }
    }

    /// Prefix of progress lines, name of the report file and of the `EVAL-JSON` line.
    fn key(self) -> &'static str {
        match self {
            Draws::Heldout => "heldout",
            Draws::Tuning => "tuning",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Draws::Heldout => "held-out",
            Draws::Tuning => "tuning",
        }
    }

    /// What the seeds are, for the report.
    fn provenance(self) -> &'static str {
        match self {
            Draws::Heldout => {
                "`flux_tests::eval::seeds::HELDOUT_SEEDS`: the scorer is never tuned on them"
            }
            Draws::Tuning => {
                "`flux_tests::eval::seeds::TUNING_SEEDS`: the seeds the scorer is tuned on"
            }
        }
    }
}

struct Dataset {
    name: String,
    files: Vec<PathBuf>,
    labels: LabelIndex,
    /// Class for names no label covers (real captures: every name is legitimate).
    default: Option<Label>,
}

/// When a detector first flagged an entity, and whether it ever did outside the allowlist.
#[derive(Default, Clone, Copy)]
struct Flag {
    /// Observation time and [`LookupClock::ttd`] of the first flag.
    first: Option<(SystemTime, u32)>,
    /// Some flagged key of the entity was not covered by the allowlist: it would be enforced.
    outside_allowlist: bool,
}

impl Flag {
    fn record(&mut self, at: SystemTime, lookups: u32, allowlisted: bool) {
        if self.first.is_none() {
            self.first = Some((at, lookups));
        }
        self.outside_allowlist |= !allowlisted;
    }

    fn at(&self) -> Option<SystemTime> {
        self.first.map(|f| f.0)
    }
}

/// What happened to one labelled entity.
#[derive(Default, Clone)]
struct Outcome {
    first_seen: Option<SystemTime>,
    /// Its lookups since its first rotation (time to detect in lookups).
    clock: LookupClock,
    ours: Flag,
    ours_suspicious: bool,
    holz: Flag,
    zeek: Flag,
    /// Final score of the entity's best key (calibration).
    score: f32,
}

impl Outcome {
    /// Minutes of observation from the entity's first response to `at`. A key can be judged on a
    /// delegation before a response names the entity: 0 then.
    fn minutes(&self, at: SystemTime) -> Option<f64> {
        Some(
            at.duration_since(self.first_seen?)
                .map_or(0.0, |d| d.as_secs_f64() / 60.0),
        )
    }
}

/// The three detectors compared, in table order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Detector {
    Ours,
    Holz,
    Zeek,
}

const DETECTORS: [Detector; 3] = [Detector::Ours, Detector::Holz, Detector::Zeek];

impl Detector {
    fn flag(self, o: &Outcome) -> &Flag {
        match self {
            Detector::Ours => &o.ours,
            Detector::Holz => &o.holz,
            Detector::Zeek => &o.zeek,
        }
    }

    /// Key of the EVAL-JSON lines.
    fn key(self) -> &'static str {
        match self {
            Detector::Ours => "ours",
            Detector::Holz => "holz",
            Detector::Zeek => "zeek",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Detector::Ours => "flux-agent",
            Detector::Holz => "Holz",
            Detector::Zeek => "Zeek",
        }
    }
}

/// One dataset replayed.
struct Replayed {
    outcomes: HashMap<Label, Outcome>,
    /// Every verdict that moved a key to `flux`, in order.
    flux_verdicts: Vec<Verdict>,
    /// Every key a baseline flagged: (baseline, key, whether the allowlist covered the key then).
    baseline_keys: Vec<(Detector, String, bool)>,
    /// Per entity: its best key's (final score, name, time of its last evaluation).
    best_key: HashMap<Label, (f32, String, u32)>,
    scorer: Scorer,
    files: usize,
    failed_files: Vec<String>,
    responses: u64,
    malformed: u64,
    /// Wall time spent parsing and scoring (not the evaluation's own bookkeeping).
    busy: Duration,
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

enum Mode {
    Default,
    ScenariosOnly(GenConfig),
    Draws { draws: Draws, per_class: usize },
    Paths(Vec<String>),
}

fn parse_count(arg: Option<&String>, what: &str, default: usize) -> anyhow::Result<usize> {
    let Some(a) = arg else { return Ok(default) };
    match a.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{what} must be a positive integer, not {a:?}\n{USAGE}"),
    }
}

fn parse_args(args: &[String]) -> anyhow::Result<Mode> {
    let Some(first) = args.first() else {
        return Ok(Mode::Default);
    };
    match first.as_str() {
        "--scenarios-only" => {
            // `--scenarios-only [PER_CLASS [SEED]]`: one other draw of the generator.
            if args.len() > 3 {
                bail!("too many arguments\n{USAGE}");
            }
            let d = GenConfig::default();
            let seed = match args.get(2) {
                None => d.seed,
                Some(s) => s
                    .parse()
                    .map_err(|_| anyhow::anyhow!("SEED must be an integer, not {s:?}\n{USAGE}"))?,
            };
            Ok(Mode::ScenariosOnly(GenConfig {
                per_class: parse_count(args.get(1), "PER_CLASS", d.per_class)?,
                seed,
                ..d
            }))
        }
        "--heldout" | "--tuning" => {
            if args.len() > 2 {
                bail!("too many arguments\n{USAGE}");
            }
            Ok(Mode::Draws {
                draws: if first == "--heldout" {
                    Draws::Heldout
                } else {
                    Draws::Tuning
                },
                per_class: parse_count(args.get(1), "PER_CLASS", HELDOUT_PER_CLASS)?,
            })
        }
        "-h" | "--help" => bail!("{USAGE}"),
        a if a.starts_with("--") => bail!("unknown option {a}\n{USAGE}"),
        _ => Ok(Mode::Paths(args.to_vec())),
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = parse_args(&args)?;
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
    // FLUX_EVAL_OUT: another directory for the pcaps and tables, so that two runs (two
    // candidates of a tuning round) can go side by side without overwriting each other's draws.
    let out = std::env::var_os("FLUX_EVAL_OUT")
        .map_or_else(|| workspace().join("target/eval"), PathBuf::from);
    fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let sets = match mode {
        Mode::Draws { draws, per_class } => return heldout(draws, per_class, &enricher, &out),
        Mode::ScenariosOnly(cfg) => vec![scenario_dataset(
            &cfg,
            &enricher,
            &out.join("scenarios-test"),
        )?],
        Mode::Default => default_datasets(&enricher, &out)?,
        Mode::Paths(paths) => paths
            .iter()
            .map(|a| path_dataset(Path::new(a)))
            .collect::<anyhow::Result<_>>()?,
    };

    let mut report = String::new();
    writeln!(report, "# flux-agent evaluation\n")?;
    writeln!(
        report,
        "ASN/geo: {}. {}\n",
        enricher.describe(),
        DEFINITIONS
    )?;
    for set in &sets {
        let mut r = replay_set(set, &enricher)?;
        debug_report(set, &mut r);
        let (table, summary_line) = evaluate(set, &r)?;
        writeln!(report, "## {}\n\n{summary_line}\n\n{table}", set.name)?;
        if set.default.is_some() {
            writeln!(report, "{}", flagged_section(set, &r)?)?;
        }
    }
    println!("{report}");
    let path = out.join("results.md");
    fs::write(&path, &report).with_context(|| format!("write {}", path.display()))?;
    eprintln!("written to {}", path.display());
    Ok(())
}

/// What the tables' columns mean (printed above them).
const DEFINITIONS: &str = "Detection = a key of the entity reached `flux`; FP = a legitimate \
    entity reached `flux` (ours) or crossed 142.38 (Holz, Zeek). TTD = observation time from the \
    entity's first response to detection (median, minutes). Lookups = TTD in lookups (median): \
    the entity's responses from its first rotation (the first response whose answer-section \
    address set differs from its first one; that response counts as 1) up to and including the \
    response at which the detector flagged it; 0 = flagged before any rotation.";

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
    let resolver = shared.join("real-benign/home-resolver.pcap.gz");
    if resolver.is_file() {
        sets.push(Dataset {
            name: "Real resolver traffic (home resolver, 2023-08-05, 6.8 h; every name legitimate)"
                .into(),
            files: vec![resolver],
            labels: LabelIndex::new(Vec::new()),
            default: Some(Label::new("", "real-benign", Truth::Benign)),
        });
    } else {
        eprintln!("SKIPPED: {} not present", resolver.display());
    }
    Ok(sets)
}

fn scenario_dataset(cfg: &GenConfig, enricher: &Enricher, scen: &Path) -> anyhow::Result<Dataset> {
    let summary = scenarios::generate(cfg, enricher, scen).context("generate scenarios")?;
    eprintln!("scenarios: {summary:?}");
    scenario_files(cfg, scen)
}

/// The dataset of a draw [`scenarios::generate`] wrote to `scen`.
fn scenario_files(cfg: &GenConfig, scen: &Path) -> anyhow::Result<Dataset> {
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
    if !p.is_file() {
        bail!("{}: no such file or folder", p.display());
    }
    Ok(Dataset {
        name: p.display().to_string(),
        files: vec![p.to_owned()],
        labels: LabelIndex::new(Vec::new()),
        default: Some(Label::new("", "unlabelled", Truth::Benign)),
    })
}

impl Dataset {
    /// The entity a key or name belongs to. Entity = (label domain, class, truth); unlabelled
    /// names of a default-labelled set are grouped by registered domain.
    fn entity(&self, key: &str) -> Option<Label> {
        match self.labels.label_for(key) {
            Some(l) => Some(l.clone()),
            None => self.default.as_ref().map(|d| Label {
                domain: score::registered_domain(key).unwrap_or(key).to_owned(),
                class: d.class.clone(),
                truth: d.truth,
            }),
        }
    }
}

/// Replays one dataset through a fresh scorer, recording per entity when each detector first
/// flagged it, in minutes and in lookups.
///
/// The same reader and parser as `flux_agent::pipeline::replay_source::replay_with` (which `flux-agent replay`
/// uses), but a loop of its own: the baseline hits are taken from the re-score log after each response
/// so that the lookup at which each came is known, and `replay_with` holds the scorer for the
/// whole replay.
fn replay_set(set: &Dataset, enricher: &Arc<Enricher>) -> anyhow::Result<Replayed> {
    let mut scorer = Scorer::new(
        ScorerConfig::default(),
        enricher.clone(),
        Arc::new(Allowlist::builtin()),
    );
    let rescores = RescoreLog::attach(&mut scorer);
    let mut outcomes: HashMap<Label, Outcome> = HashMap::new();
    let mut flux_verdicts = Vec::new();
    let mut baseline_keys = Vec::new();
    let mut read = ReadStats::default();
    let (mut responses, mut malformed) = (0u64, 0u64);
    let mut busy = Duration::ZERO;
    let mut failed_files = Vec::new();
    let mut verdicts = Vec::new();
    let mut entities: Vec<Label> = Vec::new();
    for path in &set.files {
        let r = capture_file::read_file_each(path, &DEFAULT_PORTS, &mut read, |c| {
            let started = Instant::now();
            let parsed = parse_response(c.payload, c.truncated);
            busy += started.elapsed();
            let Ok(msg) = parsed else {
                malformed += 1;
                return;
            };
            responses += 1;
            // The entities this response is a lookup of, each once.
            entities.clear();
            let names = std::iter::once(&*msg.qname).chain(msg.answers.iter().map(|r| &*r.name));
            for n in names {
                if let Some(l) = set.entity(n)
                    && !entities.contains(&l)
                {
                    entities.push(l);
                }
            }
            if !entities.is_empty() {
                let answer = answer_set(msg.answers.iter().filter_map(|r| r.addr));
                for l in entities.drain(..) {
                    let o = outcomes.entry(l).or_default();
                    o.first_seen = Some(o.first_seen.map_or(c.ts, |t| t.min(c.ts)));
                    o.clock.lookup(&answer);
                }
            }

            let started = Instant::now();
            verdicts.clear();
            scorer.observe(c.ts, &msg, &mut verdicts);
            busy += started.elapsed();
            for v in &verdicts {
                let Some(l) = set.entity(&v.domain) else {
                    continue;
                };
                let o = outcomes.entry(l).or_default();
                match v.level {
                    Level::Flux => {
                        o.ours.record(v.ts, o.clock.ttd(), v.allowlisted);
                        flux_verdicts.push(v.clone());
                    }
                    Level::Suspicious => o.ours_suspicious = true,
                    Level::Benign => {}
                }
            }
            for h in rescores.take_baseline_hits() {
                // Whether the allowlist covers the key: asked of the scorer, at the moment of the
                // hit, so the rule is exactly the one behind our verdicts' `allowlisted` (the
                // name, the names that fed the key, its CNAME chain, and all-allowlisted ASNs
                // over the last day). `Allowlist::match_name` on the key alone would miss keys
                // covered through their chain or their ASNs, and a copy of the rule here could
                // drift from the scorer's. A key no longer tracked counts as not covered.
                let allowlisted = scorer
                    .explain(&h.domain, h.ts)
                    .is_some_and(|v| v.allowlisted);
                let which = if h.baseline == "holz" {
                    Detector::Holz
                } else {
                    Detector::Zeek
                };
                if let Some(l) = set.entity(&h.domain) {
                    let o = outcomes.entry(l).or_default();
                    let ttd = o.clock.ttd();
                    let slot = if which == Detector::Holz {
                        &mut o.holz
                    } else {
                        &mut o.zeek
                    };
                    slot.record(h.ts, ttd, allowlisted);
                }
                baseline_keys.push((which, h.domain, allowlisted));
            }
        });
        if let Err(e) = r {
            // As `flux-agent replay` does: an unreadable file is reported, not fatal.
            eprintln!("flux-eval: {e}");
            failed_files.push(path.display().to_string());
        }
    }
    let mut best_key: HashMap<Label, (f32, String, u32)> = HashMap::new();
    for (k, st) in scorer.keys() {
        if let Some(l) = set.entity(k) {
            let o = outcomes.entry(l.clone()).or_default();
            let last_score = rescores.last_score(k);
            o.score = o.score.max(last_score);
            let b = best_key.entry(l).or_insert((-1.0, String::new(), 0));
            if last_score > b.0 {
                *b = (last_score, k.to_owned(), st.last_eval);
            }
        }
    }
    Ok(Replayed {
        outcomes,
        flux_verdicts,
        baseline_keys,
        best_key,
        scorer,
        files: set.files.len(),
        failed_files,
        responses,
        malformed,
        busy,
    })
}

/// FLUX_EVAL_DEBUG=1: why each miss and each false positive came out as it did, and what finally
/// decided each detection that took longer than 10 minutes.
fn debug_report(set: &Dataset, r: &mut Replayed) {
    /// Detections slower than this (minutes) are listed with what decided them.
    const SLOW_MIN: f64 = 10.0;
    if std::env::var_os("FLUX_EVAL_DEBUG").is_none() {
        return;
    }
    for v in &r.flux_verdicts {
        let Some(l) = set.entity(&v.domain) else {
            continue;
        };
        let Some(o) = r.outcomes.get(&l) else {
            continue;
        };
        let Some(at) = o.ours.at() else { continue };
        let Some(ttd) = o.minutes(at) else { continue };
        // Every entity's first `flux` verdict: how much of it was the key's own evidence and
        // how much shared bots gave (what a rule on shared bots would change).
        if at == v.ts {
            let shared = v
                .reasons
                .iter()
                .find(|r| r.feature == score::model::Term::SharedFluxAddresses.name())
                .map_or(0.0, |r| r.contribution);
            eprintln!(
                "FIRST {} {:?} {} ttd={ttd:.1} key={} score={:.3} own={:.3} shared={shared:.3}",
                l.class, l.truth, l.domain, v.domain, v.score, v.own_score
            );
        }
        // What first carried a legitimate entity to `flux`.
        if at == v.ts && l.truth != Truth::Flux {
            eprintln!(
                "FPV {} {} ttd={ttd:.1} key={} score={:.2} reasons={} f={}",
                l.class,
                l.domain,
                v.domain,
                v.score,
                serde_json::to_string(&v.reasons).unwrap_or_default(),
                serde_json::to_string(&v.features).unwrap_or_default()
            );
        }
        if at == v.ts && ttd > SLOW_MIN {
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
    // Time to detect of the entities a baseline also detects, side by side: the medians in the
    // table are over different sets when the detection rates differ.
    let mins = |o: &Outcome, f: &Flag| f.at().and_then(|t| o.minutes(t)).unwrap_or(f64::NAN);
    for (l, o) in &r.outcomes {
        if o.first_seen.is_some()
            && o.ours.first.is_some()
            && (o.holz.first.is_some() || o.zeek.first.is_some())
        {
            eprintln!(
                "BOTH {} {} ours={:.1} holz={:.1} zeek={:.1}",
                l.class,
                l.domain,
                mins(o, &o.ours),
                mins(o, &o.holz),
                mins(o, &o.zeek)
            );
        }
    }
    for (l, o) in &r.outcomes {
        let miss = l.truth == Truth::Flux && o.ours.first.is_none();
        let fp = l.truth == Truth::Benign && o.ours.first.is_some();
        // FLUX_EVAL_DEBUG=all: every entity's best key, to compare classes' features.
        let all = std::env::var_os("FLUX_EVAL_DEBUG").is_some_and(|v| v == "all");
        if !(miss || fp || all) {
            continue;
        }
        let Some((score, key, at)) = r.best_key.get(l) else {
            continue;
        };
        if let Some(v) = r.scorer.explain(key, score::from_secs(*at)) {
            eprintln!(
                "{} {} {} key={key} score={:.2} f={}",
                if miss {
                    "MISS"
                } else if fp {
                    "FP"
                } else {
                    "BEST"
                },
                l.class,
                l.domain,
                score,
                serde_json::to_string(&v.features).unwrap_or_default()
            );
        }
    }
}

/// Renders one dataset's table; returns it and the dataset's summary line.
fn evaluate(set: &Dataset, r: &Replayed) -> anyhow::Result<(String, String)> {
    // Only entities the stream actually showed count.
    let seen: Vec<(&Label, &Outcome)> = r
        .outcomes
        .iter()
        .filter(|(_, o)| o.first_seen.is_some())
        .collect();
    let mut t = class_table(seen.iter().copied())?;
    // One machine-readable line per dataset, for tests/tests/detection_quality.rs (format unchanged).
    let mut js = serde_json::Map::new();
    for d in DETECTORS {
        let flux: Vec<&Outcome> = seen
            .iter()
            .filter(|(l, _)| l.truth == Truth::Flux)
            .map(|(_, o)| *o)
            .collect();
        let benign: Vec<&Outcome> = seen
            .iter()
            .filter(|(l, _)| l.truth == Truth::Benign)
            .map(|(_, o)| *o)
            .collect();
        let s = Stats::of(&flux, d);
        let fp = Stats::of(&benign, d);
        js.insert(
            d.key().into(),
            serde_json::json!({"detection": s.rate(), "fp_rate": fp.rate(), "median_ttd_min": s.median_min()}),
        );
    }
    eprintln!(
        "EVAL-JSON {} {}",
        set.name.split_whitespace().next().unwrap_or(""),
        serde_json::Value::Object(js)
    );
    let hard_enforced = seen
        .iter()
        .filter(|(l, o)| l.truth == Truth::Hard && o.ours.outside_allowlist)
        .count();
    let mut fps: Vec<&str> = seen
        .iter()
        .filter(|(l, o)| l.truth == Truth::Benign && o.ours.first.is_some())
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
    let secs = r.busy.as_secs_f64();
    let total = r.responses + r.malformed;
    let mut line = format!(
        "{} files, {} DNS responses ({} malformed), {} keys tracked, {:.0} responses/s replayed \
         (parse + score, one core, release), scorer memory ≈ {:.1} MiB",
        r.files,
        total,
        r.malformed,
        r.scorer.stats().keys_tracked,
        if secs > 0.0 { total as f64 / secs } else { 0.0 },
        r.scorer.memory_estimate() as f64 / (1 << 20) as f64
    );
    if !r.failed_files.is_empty() {
        write!(
            line,
            "; {} file(s) unreadable: {}",
            r.failed_files.len(),
            r.failed_files.join(", ")
        )?;
    }
    Ok((t, line))
}

/// A detector's figures over a group of entities.
struct Stats {
    entities: usize,
    /// Minutes and lookups to detection of each flagged entity.
    minutes: Vec<f64>,
    lookups: Vec<f64>,
}

impl Stats {
    fn of(os: &[&Outcome], d: Detector) -> Self {
        let mut s = Stats {
            entities: os.len(),
            minutes: Vec::new(),
            lookups: Vec::new(),
        };
        for o in os {
            if let Some((at, n)) = d.flag(o).first
                && let Some(m) = o.minutes(at)
            {
                s.minutes.push(m);
                s.lookups.push(f64::from(n));
            }
        }
        s
    }

    fn flagged(&self) -> usize {
        self.minutes.len()
    }

    fn rate(&self) -> f64 {
        if self.entities == 0 {
            0.0
        } else {
            self.flagged() as f64 / self.entities as f64
        }
    }

    fn median_min(&self) -> Option<f64> {
        median(self.minutes.clone())
    }

    fn median_lookups(&self) -> Option<f64> {
        median(self.lookups.clone())
    }
}

/// The per-class table: one row per (truth, class), then one per truth.
fn class_table<'a>(
    entities: impl Iterator<Item = (&'a Label, &'a Outcome)>,
) -> Result<String, std::fmt::Error> {
    let mut by_class: BTreeMap<(Truth, &str), Vec<&Outcome>> = BTreeMap::new();
    let mut totals: BTreeMap<Truth, Vec<&Outcome>> = BTreeMap::new();
    for (l, o) in entities {
        by_class.entry((l.truth, &l.class)).or_default().push(o);
        totals.entry(l.truth).or_default().push(o);
    }
    let mut t = String::new();
    writeln!(
        t,
        "| class | truth | entities | flux-agent | TTD | lookups | Holz | TTD | lookups | Zeek | TTD | lookups |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for ((truth, class), os) in &by_class {
        row(&mut t, class, *truth, os)?;
    }
    for (truth, os) in &totals {
        row(&mut t, "**all**", *truth, os)?;
    }
    Ok(t)
}

fn row(t: &mut String, class: &str, truth: Truth, os: &[&Outcome]) -> std::fmt::Result {
    write!(t, "| {class} | {truth} | {} |", os.len())?;
    for d in DETECTORS {
        let s = Stats::of(os, d);
        let rate = 100.0 * s.rate();
        let label = match truth {
            Truth::Flux => format!("{rate:.1}% detected"),
            _ => format!("{rate:.1}% FP ({})", s.flagged()),
        };
        let (ttd, lookups) = match (truth, s.median_min(), s.median_lookups()) {
            (Truth::Flux, Some(m), Some(l)) => (format!("{m:.1} min"), format!("{l:.1}")),
            _ => ("–".into(), "–".into()),
        };
        write!(t, " {label} | {ttd} | {lookups} |")?;
    }
    writeln!(t)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// For a set whose names are all legitimate: the registered domains each detector flagged, and
/// which of them the allowlist does not cover, with flux-agent's evidence for each of those.
fn flagged_section(set: &Dataset, r: &Replayed) -> Result<String, std::fmt::Error> {
    let rd = |key: &str| score::registered_domain(key).unwrap_or(key).to_owned();
    // Registered domain -> whether some flagged key under it was outside the allowlist.
    let mut flagged: [BTreeMap<String, bool>; 3] = Default::default();
    for v in &r.flux_verdicts {
        *flagged[0].entry(rd(&v.domain)).or_default() |= !v.allowlisted;
    }
    for (d, key, allowlisted) in &r.baseline_keys {
        let i = if *d == Detector::Holz { 1 } else { 2 };
        *flagged[i].entry(rd(key)).or_default() |= !allowlisted;
    }
    let mut s = String::new();
    writeln!(
        s,
        "### {}: registered domains flagged outside the allowlist\n\n\
         Every name here is taken as legitimate. A registered domain is flagged when one of its \
         keys (the registered domain of the key) reached `flux` (flux-agent) or crossed 142.38 \
         (Holz, Zeek); it is outside the allowlist when some flagged key under it was not \
         covered by the allowlist at that moment, by the scorer's own rule (the verdict's \
         `allowlisted`; for the baselines, `Scorer::explain` at the hit).\n",
        set.name
    )?;
    writeln!(
        s,
        "| detector | registered domains flagged | outside the allowlist |\n|---|---:|---:|"
    )?;
    for (d, f) in DETECTORS.iter().zip(&flagged) {
        writeln!(
            s,
            "| {} | {} | {} |",
            d.title(),
            f.len(),
            f.values().filter(|o| **o).count()
        )?;
    }
    writeln!(s)?;
    for (d, f) in DETECTORS.iter().zip(&flagged) {
        let outside: Vec<&str> = f
            .iter()
            .filter(|(_, o)| **o)
            .map(|(k, _)| k.as_str())
            .collect();
        writeln!(
            s,
            "- {} ({}): {}",
            d.title(),
            outside.len(),
            if outside.is_empty() {
                "none".to_owned()
            } else {
                outside.join(", ")
            }
        )?;
    }
    // flux-agent's evidence: each key outside the allowlist at its first `flux` verdict.
    writeln!(
        s,
        "\nflux-agent's flagged keys outside the allowlist, at their first `flux` verdict (score, \
         the window's features, the {TOP_REASONS} largest reasons):\n"
    )?;
    let mut listed = HashSet::new();
    let mut lines = BTreeSet::new();
    for v in r.flux_verdicts.iter().filter(|v| !v.allowlisted) {
        if !listed.insert(v.domain.as_str()) {
            continue;
        }
        let f = &v.features;
        let reasons: Vec<String> = v
            .reasons
            .iter()
            .take(TOP_REASONS)
            .map(|x| format!("{} +{:.2}", x.feature, x.contribution))
            .collect();
        lines.insert(format!(
            "- {} — key `{}` score {:.3} at {}{}: window {}, {} responses, {} answers, {} IPs, \
             {} ASNs, {} networks, {} /24s, {} countries, TTL ≤ {} s; {}",
            rd(&v.domain),
            v.domain,
            v.score,
            humantime::format_rfc3339_seconds(v.ts),
            if v.double_flux { " (double flux)" } else { "" },
            f.window,
            f.responses,
            f.rrsets,
            f.distinct_ips,
            f.distinct_asns,
            f.distinct_networks,
            f.distinct_subnets,
            f.distinct_countries,
            f.ttl_max,
            reasons.join(", ")
        ));
    }
    if lines.is_empty() {
        writeln!(s, "none")?;
    }
    for l in &lines {
        writeln!(s, "{l}")?;
    }
    // The allowlisted ones, briefly: what covered them.
    let mut covered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for v in r.flux_verdicts.iter().filter(|v| v.allowlisted) {
        covered
            .entry(rd(&v.domain))
            .or_default()
            .insert(v.allowlist_match.clone().unwrap_or_default());
    }
    if !covered.is_empty() {
        let list: Vec<String> = covered
            .iter()
            .map(|(d, m)| format!("{d} ({})", m.iter().cloned().collect::<Vec<_>>().join(", ")))
            .collect();
        writeln!(
            s,
            "\nflux-agent's flagged registered domains with keys the allowlist covered (match): {}",
            list.join(", ")
        )?;
    }
    Ok(s)
}

/// Observed flux share per final-score bin, and the Brier score, over labelled entities.
fn calibration(seen: &[(&Label, &Outcome)]) -> String {
    /// Bins of width 0.2 over [0, 1].
    const BINS: usize = 5;
    let mut bins = [(0u32, 0u32); BINS];
    let mut brier = (0.0, 0u32);
    for (l, o) in seen {
        let y = match l.truth {
            Truth::Flux => 1.0,
            Truth::Benign => 0.0,
            _ => continue,
        };
        let p = f64::from(o.score);
        let b = ((p * BINS as f64) as usize).min(BINS - 1);
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
                i as f64 / BINS as f64,
                (i + 1) as f64 / BINS as f64,
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

/// One held-out draw's entities.
struct Draw {
    seed: u64,
    entities: Vec<(Label, Outcome)>,
    secs: f64,
}

/// `--heldout` (`--tuning`): every held-out (tuning) seed's draw, per seed and pooled.
fn heldout(
    which: Draws,
    per_class: usize,
    enricher: &Arc<Enricher>,
    out: &Path,
) -> anyhow::Result<()> {
    let dir = out.join(which.key());
    let started = Instant::now();
    let mut draws = Vec::new();
    let seeds = which.seeds();
    for (i, &seed) in seeds.iter().enumerate() {
        let t0 = Instant::now();
        let cfg = GenConfig {
            seed,
            per_class,
            duration: HELDOUT_DURATION,
            ..GenConfig::default()
        };
        let summary = scenarios::generate(&cfg, enricher, &dir)
            .with_context(|| format!("generate the draw of {} seed {seed}", which.title()))?;
        let set = scenario_files(&cfg, &dir)?;
        let mut r = replay_set(&set, enricher)?;
        debug_report(&set, &mut r);
        let entities: Vec<(Label, Outcome)> = r
            .outcomes
            .into_iter()
            .filter(|(_, o)| o.first_seen.is_some())
            .collect();
        let draw = Draw {
            seed,
            entities,
            secs: t0.elapsed().as_secs_f64(),
        };
        let g = Group::of(&draw.entities);
        let mut line = format!(
            "{} {}/{}: seed {seed}: {} responses;",
            which.key(),
            i + 1,
            seeds.len(),
            summary.responses
        );
        for d in DETECTORS {
            let f = g.figures(d);
            write!(
                line,
                " {} {:.1}% detected, {} benign and {} hard flagged ({} hard outside the allowlist), TTD {} / {} lookups;",
                d.key(),
                100.0 * f.detection.rate(),
                f.benign,
                f.legit.len() - f.benign,
                f.hard_outside.len(),
                fmt_opt(f.detection.median_min(), " min"),
                fmt_opt(f.detection.median_lookups(), ""),
            )?;
        }
        write!(line, " {:.0} s", draw.secs)?;
        eprintln!("{line}");
        draws.push(draw);
    }
    let report = heldout_report(which, &draws, per_class)?;
    println!("{report}");
    let path = out.join(format!("{}.md", which.key()));
    fs::write(&path, &report).with_context(|| format!("write {}", path.display()))?;
    eprintln!("{}", heldout_json(which, &draws, per_class));
    eprintln!(
        "written to {} ({:.0} s for {} draws)",
        path.display(),
        started.elapsed().as_secs_f64(),
        draws.len()
    );
    Ok(())
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.1}{unit}"))
}

/// Entities of one or more draws, each with the seed it came from.
struct Group<'a> {
    entities: Vec<(u64, &'a Label, &'a Outcome)>,
}

/// A detector's figures over a [`Group`].
struct Figures<'a> {
    /// Over the flux entities.
    detection: Stats,
    /// Legitimate (benign or hard) entities flagged.
    legit: Vec<(u64, &'a Label)>,
    /// Hard entities flagged outside the allowlist (they would be enforced).
    hard_outside: Vec<(u64, &'a Label)>,
    /// Benign entities flagged.
    benign: usize,
}

impl<'a> Group<'a> {
    fn of(entities: &'a [(Label, Outcome)]) -> Self {
        Self {
            entities: entities.iter().map(|(l, o)| (0, l, o)).collect(),
        }
    }

    fn pooled(draws: &'a [Draw]) -> Self {
        Self {
            entities: draws
                .iter()
                .flat_map(|d| d.entities.iter().map(move |(l, o)| (d.seed, l, o)))
                .collect(),
        }
    }

    fn figures(&self, d: Detector) -> Figures<'a> {
        let flux: Vec<&Outcome> = self
            .entities
            .iter()
            .filter(|(_, l, _)| l.truth == Truth::Flux)
            .map(|(_, _, o)| *o)
            .collect();
        let mut legit = Vec::new();
        let mut hard_outside = Vec::new();
        let mut benign = 0;
        for (seed, l, o) in &self.entities {
            let f = d.flag(o);
            if f.first.is_none() {
                continue;
            }
            match l.truth {
                Truth::Benign => benign += 1,
                Truth::Hard if f.outside_allowlist => hard_outside.push((*seed, *l)),
                Truth::Hard => {}
                Truth::Flux | Truth::Unknown => continue,
            }
            legit.push((*seed, *l));
        }
        legit.sort();
        hard_outside.sort();
        Figures {
            detection: Stats::of(&flux, d),
            legit,
            hard_outside,
            benign,
        }
    }

    /// Per flux class, a detector's figures.
    fn per_class(&self, d: Detector) -> BTreeMap<&'a str, Stats> {
        let mut by: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
        for (_, l, o) in &self.entities {
            if l.truth == Truth::Flux {
                by.entry(l.class.as_str()).or_default().push(o);
            }
        }
        by.into_iter()
            .map(|(c, os)| (c, Stats::of(&os, d)))
            .collect()
    }
}

fn names(v: &[(u64, &Label)]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|(seed, l)| format!("{} ({}, seed {seed})", l.domain, l.class))
        .collect::<Vec<_>>()
        .join(", ")
}

fn heldout_report(which: Draws, draws: &[Draw], per_class: usize) -> anyhow::Result<String> {
    let mut s = String::new();
    let seeds: Vec<String> = draws.iter().map(|d| d.seed.to_string()).collect();
    writeln!(
        s,
        "# flux-agent on the {} generator draws\n\n\
         Seeds {} ({}), {per_class} per class, {} h each. {DEFINITIONS} Legitimate flagged = \
         benign or hard entities flagged; hard outside the allowlist = hard entities with a \
         flagged key the allowlist did not cover (they would be enforced).\n",
        which.title(),
        seeds.join(", "),
        which.provenance(),
        HELDOUT_DURATION.as_secs() / 3600,
    )?;
    writeln!(s, "## Per seed\n")?;
    write!(s, "| seed |")?;
    for d in DETECTORS {
        write!(
            s,
            " {0} detected | benign flagged | hard flagged (outside allowlist) | TTD | lookups |",
            d.title()
        )?;
    }
    writeln!(
        s,
        " run time |\n|---:|{}---:|",
        "---:|".repeat(5 * DETECTORS.len())
    )?;
    for draw in draws {
        let g = Group::of(&draw.entities);
        write!(s, "| {} |", draw.seed)?;
        for d in DETECTORS {
            let f = g.figures(d);
            write!(
                s,
                " {:.1}% | {} | {} ({}) | {} | {} |",
                100.0 * f.detection.rate(),
                f.benign,
                f.legit.len() - f.benign,
                f.hard_outside.len(),
                fmt_opt(f.detection.median_min(), " min"),
                fmt_opt(f.detection.median_lookups(), ""),
            )?;
        }
        writeln!(s, " {:.0} s |", draw.secs)?;
    }
    let pooled = Group::pooled(draws);
    writeln!(s, "\n## All draws pooled\n")?;
    let t = class_table(pooled.entities.iter().map(|(_, l, o)| (*l, *o)))?;
    writeln!(s, "{t}")?;
    for d in DETECTORS {
        let f = pooled.figures(d);
        writeln!(
            s,
            "- {}: {:.1}% of {} flux entities detected, median TTD {} / {} lookups; {} legitimate \
             entities flagged ({} benign, {} hard), {} hard outside the allowlist.",
            d.title(),
            100.0 * f.detection.rate(),
            f.detection.entities,
            fmt_opt(f.detection.median_min(), " min"),
            fmt_opt(f.detection.median_lookups(), ""),
            f.legit.len(),
            f.benign,
            f.legit.len() - f.benign,
            f.hard_outside.len(),
        )?;
        let benign: Vec<(u64, &Label)> = f
            .legit
            .iter()
            .filter(|(_, l)| l.truth == Truth::Benign)
            .copied()
            .collect();
        writeln!(s, "  - benign flagged: {}", names(&benign))?;
        writeln!(
            s,
            "  - hard flagged outside the allowlist: {}",
            names(&f.hard_outside)
        )?;
    }
    Ok(s)
}

/// The aggregate as one `EVAL-JSON heldout {...}` line.
fn heldout_json(which: Draws, draws: &[Draw], per_class: usize) -> String {
    let pooled = Group::pooled(draws);
    let mut js = serde_json::Map::new();
    js.insert(
        "seeds".into(),
        serde_json::json!(draws.iter().map(|d| d.seed).collect::<Vec<_>>()),
    );
    js.insert("per_class".into(), serde_json::json!(per_class));
    js.insert(
        "duration_h".into(),
        serde_json::json!(HELDOUT_DURATION.as_secs() / 3600),
    );
    for d in DETECTORS {
        let f = pooled.figures(d);
        let classes: serde_json::Map<String, serde_json::Value> = pooled
            .per_class(d)
            .into_iter()
            .map(|(c, st)| {
                (
                    c.to_owned(),
                    serde_json::json!({
                        "entities": st.entities,
                        "detection": st.rate(),
                        "median_ttd_min": st.median_min(),
                        "median_ttd_lookups": st.median_lookups(),
                    }),
                )
            })
            .collect();
        js.insert(
            d.key().into(),
            serde_json::json!({
                "flux_entities": f.detection.entities,
                "detection": f.detection.rate(),
                "median_ttd_min": f.detection.median_min(),
                "median_ttd_lookups": f.detection.median_lookups(),
                "legit_flagged": f.legit.len(),
                "benign_flagged": f.benign,
                "hard_flagged_outside_allowlist": f.hard_outside.len(),
                "per_class": classes,
            }),
        );
    }
    format!(
        "EVAL-JSON {} {}",
        which.key(),
        serde_json::Value::Object(js)
    )
}
