//! Developer tasks: `cargo xtask setup | run | package | test | lint | bench | eval [--heldout [N]] |
//! fuzz`.
//!
//! `setup` is idempotent and makes a fresh machine able to build and test flux-agent: the
//! nightly's rust-src, bpf-linker built against the nightly's own LLVM, and the Debian packages
//! the tests use. `run`, `test` and `bench` call it first.

mod bench_report;
mod fuzz;
mod package;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (idempotent).
    Setup,
    /// Build in release mode and run `flux-agent run ARGS` as root.
    Run {
        /// Arguments for `flux-agent run`, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the release binary and a .deb (cargo-deb) with the unit, the default config and
    /// allowlist, the logrotate file, completions and manual pages; print the .deb's path.
    Package,
    /// Lint, then run the unit tests and the privileged integration tests.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments passed to the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// rustfmt check and clippy for the host crates and, separately, the eBPF crate.
    Lint,
    /// Run every bench binary (release) and regenerate docs/benchmarks.md from their `--json`
    /// and docs/benchmarks.in.md: feeds, replay and scorer memory, dnstap, block latency, XDP
    /// cost per packet, veth drops against nftables, `/metrics`, ring-buffer loss under dnsperf
    /// (figures for the docs, not tests).
    Bench {
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Only these benches (comma-separated names); the others are "not run" in the report.
        #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
        only: Vec<String>,
        /// Where the report goes (default docs/benchmarks.md).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Run nothing: render the report from the runs saved in DIR (each run is saved as
        /// target/bench/NAME.json).
        #[arg(long, value_name = "DIR", conflicts_with = "only")]
        render: Option<PathBuf>,
    },
    /// Replay labelled data (scenarios, the 2009 fast-flux data, real captures and resolver
    /// traffic, or PATHs) and print detection, false positives and time to detect, with the Holz
    /// and Zeek baselines.
    Eval {
        /// Evaluate the ten held-out generator draws instead, with PER_CLASS instances per class
        /// (flux-eval's default when omitted).
        #[arg(long, value_name = "PER_CLASS", num_args = 0..=1, conflicts_with = "paths")]
        heldout: Option<Option<usize>>,
        /// Folders with capture files and a labels.tsv, or capture files (all names legitimate).
        paths: Vec<String>,
    },
    /// Run the cargo-fuzz targets of fuzz/ (nightly), seeding their corpora from the shared
    /// datasets first when asked or when a corpus is empty (see fuzz/README.md).
    Fuzz {
        /// One target (default: every one, in turn).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Seconds per target (default 60).
        #[arg(long, value_name = "SECS", conflicts_with = "runs")]
        time: Option<u64>,
        /// Executions per target instead of a time.
        #[arg(long, value_name = "N")]
        runs: Option<u64>,
        /// Seed the corpora from the datasets before running (`--seed-only`: and run nothing).
        #[arg(long)]
        seed: bool,
        #[arg(long, conflicts_with_all = ["time", "runs"])]
        seed_only: bool,
        /// The datasets folder (default ../shared/datasets, or $FLUX_DATASETS).
        #[arg(long, value_name = "DIR")]
        datasets: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Run { args } => run(&args),
        Cmd::Package => package::package(),
        Cmd::Test { no_lint, args } => test(no_lint, &args),
        Cmd::Lint => lint(),
        Cmd::Bench {
            repeat,
            only,
            out,
            render,
        } => match render {
            Some(dir) => render_saved(&dir, out),
            None => bench(repeat, &only, out),
        },
        Cmd::Eval { heldout, paths } => eval(heldout, &paths),
        Cmd::Fuzz {
            target,
            time,
            runs,
            seed,
            seed_only,
            datasets,
        } => fuzz::fuzz(&fuzz_args(target, time, runs, seed, seed_only, datasets)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn fuzz_args(
    target: Option<String>,
    time: Option<u64>,
    runs: Option<u64>,
    seed: bool,
    seed_only: bool,
    datasets: Option<PathBuf>,
) -> fuzz::FuzzArgs {
    let budget = match (runs, time) {
        (Some(n), _) => fuzz::Budget::Runs(n),
        (None, t) => fuzz::Budget::Secs(t.unwrap_or(60)),
    };
    fuzz::FuzzArgs {
        target,
        budget,
        seed,
        seed_only,
        datasets: datasets.unwrap_or_else(fuzz::default_datasets),
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command in the workspace root, failing with the command line if it fails.
pub fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let line = format!("{cmd:?}");
    eprintln!("xtask: $ {line}");
    let status = cmd
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot start {line}"))?;
    if !status.success() {
        bail!("{line} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    setup::setup()?;
    sh(cargo().args(["build", "--release", "-p", "flux-agent"]))?;
    let bin = workspace_root().join("target/release/flux-agent");
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else {
        eprintln!("xtask: not root, running through sudo");
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&bin);
        c
    };
    cmd.arg("run").args(args);
    sh(&mut cmd)
}

fn lint() -> anyhow::Result<()> {
    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "flux-ebpf",
        "--all-targets",
        "--",
        "--deny",
        "warnings",
    ]))?;
    // The eBPF crate separately (see aya-template's test.sh): feature unification with the
    // userspace crates would otherwise pull std into it.
    sh(Command::new("rustup").args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--package",
        "flux-ebpf",
        "--all-targets",
        "--",
        "--deny",
        "warnings",
        "-C",
        "panic=abort",
        "-Zpanic_abort_tests",
    ]))
}

fn test(no_lint: bool, args: &[String]) -> anyhow::Result<()> {
    setup::setup()?;
    if !no_lint {
        lint()?;
    }
    // Unit tests of every host crate (flux-intel and flux-state were missing until 2026-12-02,
    // so their tests never ran in CI), then the privileged integration tests (which need root:
    // CI runs as root).
    let mut unit = cargo();
    unit.args([
        "test",
        "-p",
        "flux-common",
        "-p",
        "flux-detect",
        "-p",
        "flux-agent",
        "-p",
        "flux-intel",
        "-p",
        "flux-state",
        "-p",
        "xtask",
        "--",
    ])
    .args(args);
    sh(&mut unit)?;
    // Each fuzz target briefly, so one that no longer builds fails CI.
    fuzz::smoke()?;
    if !is_root() && std::env::var_os("CI").is_none() {
        eprintln!("xtask: not root: the privileged tests will report themselves skipped");
    }
    // The integration tests drive the real binary.
    sh(cargo().args(["build", "-p", "flux-agent", "--bins"]))?;
    let mut it = cargo();
    it.args(["test", "-p", "flux-tests", "--"]).args(args);
    sh(&mut it)
}

/// The bench binaries, in the order they run: the package that builds each, its name, and its
/// arguments (`--json` is added).
const BENCHES: &[(&str, &str)] = &[
    // Feed import: parse time and peak memory for 1,000,000-entry feeds.
    ("flux-intel", "feed-bench"),
    // Replay throughput and the scorer's memory for 1,000,000 names.
    ("flux-tests", "scorer-bench"),
    // dnstap ingest on one core: decode, parse, score.
    ("flux-tests", "dnstap-bench"),
    // Deciding response to block in the map, through the real program, scorer and enforcer.
    ("flux-tests", "block-latency"),
    // XDP cost per packet with BPF_PROG_TEST_RUN, against the no-op program.
    ("flux-tests", "xdp-bench"),
    // Drops on a veth pair against nftables sets, with trafgen.
    ("flux-tests", "veth-bench"),
    // `/metrics` latency, a scrape a second, while the real agent takes 50,000 responses/s.
    ("flux-tests", "metrics-bench"),
    // Ring-buffer loss under dnsperf against unbound, the live block latency, and the agent
    // alone under replayed answers (the generator out of the way).
    ("flux-tests", "ringbuf-load"),
];

fn bench(repeat: u32, only: &[String], out: Option<PathBuf>) -> anyhow::Result<()> {
    setup::setup()?;
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    for name in only {
        if !BENCHES.iter().any(|(_, b)| b == name) {
            bail!("--only: no bench named {name}");
        }
    }
    // One release build of every binary first (the agent too: metrics-bench and ringbuf-load
    // run it), so no bench's time includes a build.
    let mut build = cargo();
    build.args(["build", "--release", "-p", "flux-agent", "--bins"]);
    for (pkg, name) in BENCHES.iter().filter(|(_, n)| wanted(n)) {
        build.args(["-p", pkg, "--bin", name]);
    }
    sh(&mut build)?;
    let machine = bench_report::Machine::describe();
    let release = workspace_root().join("target/release");
    let runs: Vec<bench_report::BenchRun> = BENCHES
        .iter()
        .filter(|(_, n)| wanted(n))
        .map(|(_, name)| {
            let args = if *name == "xdp-bench" {
                vec!["--repeat".to_owned(), repeat.to_string()]
            } else {
                Vec::new()
            };
            bench_report::run_bench(name, &release.join(name), &args)
        })
        .collect();
    let saved = workspace_root().join(SAVED_RUNS);
    std::fs::create_dir_all(&saved).with_context(|| format!("create {}", saved.display()))?;
    let _ = std::fs::write(saved.join(MACHINE_FILE), machine.to_json().to_string());
    for r in &runs {
        let path = saved.join(format!("{}.json", r.name));
        std::fs::write(&path, r.to_json().to_string())
            .with_context(|| format!("write {}", path.display()))?;
    }
    write_report(&machine, &runs, out)
}

/// Where `bench` keeps each run's output, for `--render`.
const SAVED_RUNS: &str = "target/bench";

/// The machine of the saved runs, beside them.
const MACHINE_FILE: &str = "machine.json";

/// The report from saved runs (`cargo xtask bench --render DIR`), on the machine saved with
/// them (else the machine as it is now).
fn render_saved(dir: &Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for (_, name) in BENCHES {
        let path = dir.join(format!("{name}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("read {}", path.display()))?;
        runs.extend(bench_report::BenchRun::from_json(&v));
    }
    let machine = std::fs::read_to_string(dir.join(MACHINE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map_or_else(bench_report::Machine::describe, |v| {
            bench_report::Machine::from_json(&v)
        });
    write_report(&machine, &runs, out)
}

fn write_report(
    machine: &bench_report::Machine,
    runs: &[bench_report::BenchRun],
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let root = workspace_root();
    let template_path = root.join("docs/benchmarks.in.md");
    let template = std::fs::read_to_string(&template_path)
        .with_context(|| format!("read {}", template_path.display()))?;
    let out = out.unwrap_or_else(|| root.join("docs/benchmarks.md"));
    std::fs::write(&out, bench_report::render(&template, machine, runs))
        .with_context(|| format!("write {}", out.display()))?;
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| r.failure.is_some())
        .map(|r| r.name.as_str())
        .collect();
    eprintln!(
        "xtask: wrote {} ({} benches in {:.0?}{})",
        out.display(),
        runs.len(),
        bench_report::total(runs),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", failed.join(", "))
        }
    );
    Ok(())
}

fn eval(heldout: Option<Option<usize>>, paths: &[String]) -> anyhow::Result<()> {
    setup::setup()?;
    let mut cmd = release_bin("flux-eval");
    match heldout {
        Some(per_class) => {
            cmd.arg("--heldout");
            cmd.args(per_class.map(|n| n.to_string()));
        }
        None => {
            cmd.args(paths);
        }
    }
    sh(&mut cmd)
}

/// `cargo run --release -p flux-tests --bin NAME --`, ready for the binary's arguments.
fn release_bin(name: &str) -> Command {
    let mut c = cargo();
    c.args(["run", "--release", "-p", "flux-tests", "--bin", name, "--"]);
    c
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Cmd};

    fn eval_args(args: &[&str]) -> Option<(Option<Option<usize>>, Vec<String>)> {
        let cli = Cli::try_parse_from(["xtask", "eval"].iter().chain(args)).ok()?;
        match cli.command {
            Cmd::Eval { heldout, paths } => Some((heldout, paths)),
            _ => None,
        }
    }

    fn fuzz_args(args: &[&str]) -> Option<super::fuzz::FuzzArgs> {
        let cli = Cli::try_parse_from(["xtask", "fuzz"].iter().chain(args)).ok()?;
        match cli.command {
            Cmd::Fuzz {
                target,
                time,
                runs,
                seed,
                seed_only,
                datasets,
            } => Some(super::fuzz_args(
                target, time, runs, seed, seed_only, datasets,
            )),
            _ => None,
        }
    }

    #[test]
    fn fuzz_takes_a_time_or_a_run_count() {
        use super::fuzz::Budget;
        let a = fuzz_args(&[]).unwrap();
        assert_eq!(
            (a.target, a.budget, a.seed),
            (None, Budget::Secs(60), false)
        );
        let a = fuzz_args(&["--target", "dns_parse", "--runs", "9", "--seed"]).unwrap();
        assert_eq!(
            (a.target.as_deref(), a.budget, a.seed),
            (Some("dns_parse"), Budget::Runs(9), true)
        );
        assert_eq!(fuzz_args(&["--time", "5"]).unwrap().budget, Budget::Secs(5));
        assert!(fuzz_args(&["--time", "5", "--runs", "9"]).is_none());
        assert!(fuzz_args(&["--seed-only", "--time", "5"]).is_none());
    }

    #[test]
    fn eval_takes_heldout_with_or_without_a_count() {
        assert_eq!(eval_args(&[]), Some((None, vec![])));
        assert_eq!(eval_args(&["--heldout"]), Some((Some(None), vec![])));
        assert_eq!(
            eval_args(&["--heldout", "20"]),
            Some((Some(Some(20)), vec![]))
        );
        assert_eq!(eval_args(&["a.pcap"]), Some((None, vec!["a.pcap".into()])));
        assert_eq!(eval_args(&["--heldout", "x"]), None);
    }
}
