//! `cargo xtask bench` (feeds): parse time and memory for a feed of 1,000,000 entries, in each
//! of the shapes that matter (names in a plain list, in a hosts file, IPv4 addresses in a
//! netset, a MISP export), each case in a child process of its own so that its peak memory
//! (`VmHWM`) is its own. Input generated in memory (deterministic); figures, not assertions.
//!
//! `feed-bench [--entries N] [--json] [CASE]`; without CASE, runs every case. With `--json`,
//! one JSON document (`{"bench": "feed-bench", "cases": [...]}`) instead of a line per case.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, bail};
use flux_intel::{ParseOptions, parse_feed};

const CASES: &[&str] = &[
    "plain-domains",
    "hosts-domains",
    "netset-ipv4",
    "misp-domains",
];
/// The issue's scale: "a feed of 1,000,000 domains or addresses loads in seconds".
const DEFAULT_ENTRIES: usize = 1_000_000;

/// Kilobytes of a `/proc/self/status` line (`VmRSS:`, `VmHWM:`).
fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

/// Seconds this (single-threaded) process has run on a CPU (`/proc/self/schedstat`, in ns): the
/// wall-clock time on a shared machine includes waiting for a core.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// A deterministic, unsorted stream of distinct names: `<pseudo-random label>-<i>.<one of 1000
/// zones>.<one of 8 TLDs>`.
fn name(i: usize) -> String {
    const TLDS: [&str; 8] = ["com", "net", "org", "top", "xyz", "ru", "info", "shop"];
    let h = (i as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17);
    format!(
        "{:x}-{i}.zone{}.{}",
        h & 0xff_ffff,
        h % 1000,
        TLDS[(h >> 40) as usize % TLDS.len()]
    )
}

/// Distinct IPv4 addresses in a scattered order.
fn ipv4(i: usize) -> std::net::Ipv4Addr {
    // Multiplying by an odd constant is a bijection on u32: distinct for distinct i.
    std::net::Ipv4Addr::from((i as u32).wrapping_mul(2_654_435_761))
}

fn generate(case: &str, n: usize) -> anyhow::Result<String> {
    let mut out = String::with_capacity(n * 40);
    match case {
        "plain-domains" => (0..n).for_each(|i| {
            out.push_str(&name(i));
            out.push('\n');
        }),
        "hosts-domains" => (0..n).for_each(|i| {
            out.push_str("0.0.0.0 ");
            out.push_str(&name(i));
            out.push('\n');
        }),
        "netset-ipv4" => (0..n).for_each(|i| {
            out.push_str(&ipv4(i).to_string());
            out.push('\n');
        }),
        "misp-domains" => {
            out.push_str(r#"{"Event":{"info":"bench","Attribute":["#);
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!(
                    r#"{{"type":"domain","category":"Network activity","to_ids":true,"value":"{}"}}"#,
                    name(i)
                ));
            }
            out.push_str("]}}");
        }
        other => bail!("unknown case {other}; the cases are {}", CASES.join(", ")),
    }
    Ok(out)
}

/// Runs one case in this process and prints its line, or its JSON object with `json`.
fn run_case(case: &str, n: usize, json: bool) -> anyhow::Result<()> {
    let input = generate(case, n)?;
    let rss_before = status_kb("VmRSS:");
    let start = Instant::now();
    let cpu_start = cpu_secs();
    let parsed = parse_feed(input.as_bytes(), &ParseOptions::default())
        .with_context(|| format!("{case}: the generated feed does not parse"))?;
    let elapsed = start.elapsed();
    let cpu = cpu_secs() - cpu_start;
    let rss_after = status_kb("VmRSS:");
    let hwm = status_kb("VmHWM:");
    if parsed.set.len() != n {
        bail!(
            "{case}: {} distinct entries, expected {n}",
            parsed.set.len()
        );
    }
    let mb = |kb: u64| kb as f64 / 1024.0;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "case": case,
                "entries": n,
                "format": parsed.format.to_string(),
                "input_mb": input.len() as f64 / 1e6,
                "seconds": elapsed.as_secs_f64(),
                "cpu_seconds": cpu,
                "set_resident_mb": mb(rss_after.saturating_sub(rss_before)),
                "peak_mb": mb(hwm),
            })
        );
        return Ok(());
    }
    println!(
        "{case:>14}: {n} entries ({:.1} MB of {}), parsed in {:.2} s ({:.2} s on CPU); set resident {:.0} MB \
         (RSS {:.0} -> {:.0} MB, input held); peak (VmHWM) {:.0} MB",
        input.len() as f64 / 1e6,
        parsed.format,
        elapsed.as_secs_f64(),
        cpu,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut entries = DEFAULT_ENTRIES;
    let mut case = None;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--entries" => {
                entries = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--entries takes a number")?;
            }
            other if other.starts_with('-') => {
                bail!("unknown option {other} (--entries N, --json, or a case)")
            }
            other => case = Some(other.to_owned()),
        }
    }
    if let Some(case) = case {
        if !CASES.contains(&case.as_str()) {
            bail!("unknown case {case}; the cases are {}", CASES.join(", "));
        }
        return run_case(&case, entries, json);
    }
    let me = std::env::current_exe().context("own path")?;
    let mut cases = Vec::new();
    for case in CASES {
        let mut child = Command::new(&me);
        child.args(["--entries", &entries.to_string(), case]);
        if !json {
            let status = child
                .status()
                .with_context(|| format!("run {}", me.display()))?;
            if !status.success() {
                bail!("{case} failed ({status})");
            }
            continue;
        }
        // The child's one JSON line, gathered into one document.
        let out = child
            .arg("--json")
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("run {}", me.display()))?;
        if !out.status.success() {
            bail!("{case} failed ({})", out.status);
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{case}: the child's output is not JSON"))?;
        cases.push(v);
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "bench": "feed-bench", "cases": cases })
        );
    }
    Ok(())
}
