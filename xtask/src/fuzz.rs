//! `cargo xtask fuzz`: the cargo-fuzz targets of `fuzz/` (libFuzzer, nightly), their corpora
//! seeded from the shared datasets, and the short run `cargo xtask test` makes of each so that a
//! target that no longer builds or crashes at once fails CI. See `fuzz/README.md`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{sh, workspace_root};

/// Every target with the longest input it is given (`-max_len`): what it reads is bounded there
/// in the agent too (a TCP DNS message, a ring-buffer record, the control socket's line).
pub const TARGETS: &[(&str, usize)] = &[
    ("dns_parse", 65_535),
    ("capture_reader", 65_536),
    ("frame_decode", 65_536),
    ("event_json", 2048),
    ("control_request", 8192),
    ("scorer_feed", 65_536),
    ("allowlist_text", 4096),
    // A feed file: big enough for many lines of every format and a small MISP/STIX document.
    ("feed_parse", 65_536),
    ("scorer_snapshot", 65_536),
    ("zeek_log", 65_536),
    // A configuration file: the packaged one is about 6 KiB; room for longer ones.
    ("config_parse", 16_384),
];

/// Executions per target in `cargo xtask test`: enough to run every seed-free path libFuzzer
/// finds in its first seconds, cheap enough for CI.
pub const SMOKE_RUNS: u64 = 2000;

/// How long each target runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    Secs(u64),
    Runs(u64),
}

impl Budget {
    fn libfuzzer_arg(self) -> String {
        match self {
            Budget::Secs(s) => format!("-max_total_time={s}"),
            Budget::Runs(n) => format!("-runs={n}"),
        }
    }
}

/// What `cargo xtask fuzz` was asked.
#[derive(Debug, PartialEq, Eq)]
pub struct FuzzArgs {
    pub target: Option<String>,
    pub budget: Budget,
    /// Seed the corpora from the datasets first (also done when a corpus is empty).
    pub seed: bool,
    /// Only seed, run nothing.
    pub seed_only: bool,
    pub datasets: PathBuf,
}

/// `../shared/datasets` from the workspace root, or `$FLUX_DATASETS`.
pub fn default_datasets() -> PathBuf {
    std::env::var_os("FLUX_DATASETS").map_or_else(
        || workspace_root().join("../shared/datasets"),
        PathBuf::from,
    )
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

fn corpus_root() -> PathBuf {
    fuzz_dir().join("corpus")
}

/// The targets `name` selects (all of them for `None`).
pub fn select(name: Option<&str>) -> anyhow::Result<Vec<(&'static str, usize)>> {
    match name {
        None => Ok(TARGETS.to_vec()),
        Some(n) => match TARGETS.iter().find(|(t, _)| *t == n) {
            Some(t) => Ok(vec![*t]),
            None => bail!(
                "no fuzz target {n}; the targets are: {}",
                TARGETS
                    .iter()
                    .map(|(t, _)| *t)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

pub fn fuzz(args: &FuzzArgs) -> anyhow::Result<()> {
    let targets = select(args.target.as_deref())?;
    crate::setup::ensure_cargo_fuzz()?;
    let empty = targets
        .iter()
        .any(|(t, _)| is_empty_dir(&corpus_root().join(t)));
    if args.seed || args.seed_only || empty {
        seed(&args.datasets)?;
    }
    if args.seed_only {
        return Ok(());
    }
    for (target, max_len) in targets {
        let corpus = corpus_root().join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("create {}", corpus.display()))?;
        run_target(target, max_len, &corpus, args.budget)?;
    }
    Ok(())
}

/// Writes the corpora from the datasets (the seeder reads them now; nothing is copied into the
/// repository). Without the datasets the targets start from an empty corpus.
pub fn seed(datasets: &Path) -> anyhow::Result<()> {
    if !datasets.join("pcaps").is_dir() {
        eprintln!(
            "xtask fuzz: no datasets at {} (set FLUX_DATASETS): the corpora start empty",
            datasets.display()
        );
        return Ok(());
    }
    let manifest = fuzz_dir().join("Cargo.toml");
    sh(cargo()
        .args(["run", "--quiet", "--release", "--manifest-path"])
        .arg(&manifest)
        .args(["-p", "flux-fuzz-seed", "--"])
        .arg(datasets)
        .arg(corpus_root()))
}

/// `cargo xtask test`'s companion: every target, built as `cargo xtask fuzz` builds it (one build
/// serves both), run for [`SMOKE_RUNS`] executions from an empty scratch corpus, so a target
/// that no longer builds, or that crashes at once, fails CI.
pub fn smoke() -> anyhow::Result<()> {
    crate::setup::ensure_cargo_fuzz()?;
    let scratch = std::env::temp_dir().join(format!("flux-fuzz-smoke-{}", std::process::id()));
    let result = (|| {
        for &(target, max_len) in TARGETS {
            let corpus = scratch.join(target);
            std::fs::create_dir_all(&corpus)
                .with_context(|| format!("create {}", corpus.display()))?;
            run_target(target, max_len, &corpus, Budget::Runs(SMOKE_RUNS))?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn run_target(target: &str, max_len: usize, corpus: &Path, budget: Budget) -> anyhow::Result<()> {
    // Release with debug assertions: overflow checks and `debug_assert!`s are findings too.
    sh(Command::new("cargo")
        .args(["+nightly", "fuzz", "run", "--release", "--debug-assertions"])
        .arg(target)
        .arg(corpus)
        .arg("--")
        .arg(budget.libfuzzer_arg())
        .arg(format!("-max_len={max_len}"))
        // A slow input is a finding too, but a gzip bomb in capture_reader may take seconds.
        .arg("-timeout=30")
        .arg("-print_final_stats=1"))
    .with_context(|| {
        format!(
            "fuzz target {target} failed; a crashing input is in fuzz/artifacts/{target}/ \
             (replay it with `cargo +nightly fuzz run {target} FILE`)"
        )
    })
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_is_a_bin_of_the_fuzz_crate() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for (t, _) in TARGETS {
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t}");
            assert!(
                fuzz_dir().join(format!("fuzz_targets/{t}.rs")).is_file(),
                "{t}"
            );
        }
        let bins = manifest.matches("[[bin]]").count();
        assert_eq!(bins, TARGETS.len(), "a fuzz target missing from TARGETS");
    }

    #[test]
    fn selects_targets() {
        assert_eq!(select(None).unwrap().len(), TARGETS.len());
        assert_eq!(
            select(Some("dns_parse")).unwrap(),
            vec![("dns_parse", 65_535)]
        );
        let err = select(Some("nope")).unwrap_err().to_string();
        assert!(err.contains("scorer_feed"), "{err}");
    }

    #[test]
    fn budgets() {
        assert_eq!(Budget::Secs(5).libfuzzer_arg(), "-max_total_time=5");
        assert_eq!(Budget::Runs(7).libfuzzer_arg(), "-runs=7");
    }
}
