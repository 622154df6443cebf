//! `cargo xtask bench`'s report: runs each bench binary (release) with `--json`, keeps the
//! document it printed (or its text, for a binary without `--json`), and renders
//! docs/benchmarks.md from the template docs/benchmarks.in.md: the machine, the issue-18
//! targets with met/missed, and every figure of the run. Touches nothing but the processes it
//! starts and the output file `xtask::bench` names.
//!
//! The renderer never fails on what a bench printed: a bench that failed, printed no JSON, or
//! lacks a field is one line in the report ("not measured"), since the binaries' field names
//! move while they are being worked on. Targets are found by tokens in the flattened field
//! paths (see [`flatten`]), not by one exact name.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The machine a run happened on, as the report describes it.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    /// /proc/loadavg's three averages when the benches started (after the build).
    pub load: String,
    pub date: String,
}

impl Machine {
    pub fn describe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|r| r.split_once(':'))
            .map_or_else(|| "unknown CPU".into(), |(_, m)| m.trim().to_owned());
        let load = read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load,
            date,
        }
    }
}

impl Machine {
    pub fn to_json(&self) -> Value {
        serde_json::json!({"cpu": self.cpu, "cores": self.cores, "kernel": self.kernel,
            "load": self.load, "date": self.date})
    }

    pub fn from_json(v: &Value) -> Self {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
        Self {
            cpu: s("cpu"),
            cores: v.get("cores").and_then(Value::as_u64).unwrap_or(0) as usize,
            kernel: s("kernel"),
            load: s("load"),
            date: s("date"),
        }
    }
}

/// What one bench binary gave.
#[derive(Clone, Debug, Default)]
pub struct BenchRun {
    pub name: String,
    /// The command line, as the report shows it.
    pub command: String,
    /// The JSON document it printed, if any.
    pub json: Option<Value>,
    /// Its standard output when that was not JSON.
    pub text: String,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    pub seconds: f64,
}

impl BenchRun {
    /// The run as saved next to the report (`target/bench/NAME.json`), to render again later.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "command": self.command,
            "json": self.json,
            "text": self.text,
            "failure": self.failure,
            "seconds": self.seconds,
        })
    }

    /// A saved run; `None` for a file that is not one.
    pub fn from_json(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            name: s("name")?,
            command: s("command").unwrap_or_default(),
            json: v.get("json").filter(|j| j.is_object()).cloned(),
            text: s("text").unwrap_or_default(),
            failure: s("failure"),
            seconds: v.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
        })
    }
}

/// A run that failed this fast is taken to have refused `--json` (an argument error), and is
/// run once more without it.
const ARG_ERROR_SECS: f64 = 10.0;

/// Runs `program args.. --json`, teeing its standard error to ours.
pub fn run_bench(name: &str, program: &std::path::Path, args: &[String]) -> BenchRun {
    let first = run_once(name, program, args, true);
    if first.json.is_none() && first.failure.is_some() && first.seconds < ARG_ERROR_SECS {
        eprintln!("xtask: {name} failed fast with --json; running it without");
        return run_once(name, program, args, false);
    }
    first
}

fn run_once(name: &str, program: &std::path::Path, args: &[String], json: bool) -> BenchRun {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if json {
        cmd.arg("--json");
    }
    let shown = format!(
        "{} {}",
        program
            .file_name()
            .map_or_else(|| name.into(), |f| f.to_string_lossy().into_owned()),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("xtask: $ {shown}");
    let t = Instant::now();
    let out = cmd.stderr(Stdio::inherit()).stdout(Stdio::piped()).output();
    let seconds = t.elapsed().as_secs_f64();
    let mut run = BenchRun {
        name: name.into(),
        command: shown.trim().to_owned(),
        seconds,
        ..BenchRun::default()
    };
    match out {
        Err(e) => run.failure = Some(format!("cannot start: {e}")),
        Ok(o) => {
            let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
            run.json = json_document(&stdout);
            if run.json.is_none() {
                run.text = stdout;
            }
            let said = run
                .json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if !o.status.success() || said.is_some() {
                run.failure = Some(said.unwrap_or_else(|| format!("exited with {}", o.status)));
            }
        }
    }
    run
}

/// The JSON document in a bench's output: the whole output, else its last line that is an
/// object (a binary may print progress before it).
fn json_document(stdout: &str) -> Option<Value> {
    let whole: Option<Value> = serde_json::from_str(stdout.trim()).ok();
    whole.filter(Value::is_object).or_else(|| {
        stdout
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .find(Value::is_object)
    })
}

/// The numbers of a document, each under its lower-case dotted path. An array element is named
/// by its `name`, `case`, `filter`, `stream` or `label` field when it has one (so a case can be
/// found by what it is, not its position), else by its index.
pub fn flatten(v: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    walk(v, String::new(), &mut out, 0);
    out
}

/// Deeper than this, a document is not walked (no bench nests that far; a cycle cannot occur
/// in JSON, but a pathological document should not cost the report).
const MAX_DEPTH: usize = 8;

fn walk(v: &Value, path: String, out: &mut Vec<(String, f64)>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_lowercase()
        } else {
            format!("{path}.{}", k.to_lowercase())
        }
    };
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((path, x));
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                walk(x, join(k), out, depth + 1);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(
                    x,
                    join(&element_label(x).unwrap_or_else(|| i.to_string())),
                    out,
                    depth + 1,
                );
            }
        }
        _ => {}
    }
}

/// The fields that name an element of an array (a case, a stream, a filter).
const LABEL_KEYS: [&str; 5] = ["name", "case", "filter", "stream", "label"];

fn element_label(v: &Value) -> Option<String> {
    let name = LABEL_KEYS
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))?;
    // A frame size tells cases of one name apart ("DNS response" of 210 and 1,410 bytes).
    Some(match v.get("bytes").and_then(Value::as_u64) {
        Some(b) => format!("{name} {b}"),
        None => name.to_owned(),
    })
}

/// Which way a target goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    AtMost,
    AtLeast,
}

/// One row of the issue's targets table.
struct Target {
    what: &'static str,
    goal: Goal,
    limit: f64,
    /// How the figure is shown (`×`, `responses/s`, ...).
    unit: &'static str,
    bench: &'static str,
    /// Alternative token sets: a path matching every token of any set is a candidate. When
    /// several match, the worst one counts (the largest for `AtMost`, the smallest for
    /// `AtLeast`): "with and without entries" and "both placements" must all hold.
    any_of: &'static [&'static [&'static str]],
}

const TARGETS: &[Target] = &[
    Target {
        what: "non-DNS pass, × the no-op",
        goal: Goal::AtMost,
        limit: 1.5,
        unit: "×",
        bench: "xdp-bench",
        any_of: &[&["non-dns", "ratio"], &["non_dns", "ratio"]],
    },
    Target {
        what: "blocked-address drop, 1M entries, × the no-op",
        goal: Goal::AtMost,
        limit: 2.0,
        unit: "×",
        bench: "xdp-bench",
        any_of: &[
            &["drop", "1,048,576", "ratio"],
            &["drop", "1048576", "ratio"],
            &["drop", "1m", "ratio"],
        ],
    },
    Target {
        what: "200-byte DNS response, captured and checked, × the no-op",
        goal: Goal::AtMost,
        limit: 8.0,
        unit: "×",
        bench: "xdp-bench",
        any_of: &[
            &["dns response", "210", "ratio"],
            &["dns_response", "ratio"],
        ],
    },
    Target {
        what: "whole-machine CPU per dropped packet, native XDP, × nftables",
        goal: Goal::AtMost,
        limit: 0.65,
        unit: "×",
        bench: "veth-bench",
        // flux_xdp native's own case, against both placements; never the nftables cases'
        // ratios to each other (an earlier table took the worst of every case's).
        any_of: &[&["flux_xdp_native.cpu_ratio_to_nft"]],
    },
    Target {
        // The same target read on the receiving side alone (veth-bench's bounce generator):
        // a0's NAPI thread, which runs the filter, without the generator the same VM runs.
        what: "CPU per dropped packet on the receiving side (NAPI thread), native XDP, × nftables",
        goal: Goal::AtMost,
        limit: 0.65,
        unit: "×",
        bench: "veth-bench",
        any_of: &[&["flux_xdp_native.rx_cpu_ratio_to_nft"]],
    },
    Target {
        what: "replay, one core, resolver stream",
        goal: Goal::AtLeast,
        limit: 1_000_000.0,
        unit: "responses/s",
        bench: "scorer-bench",
        any_of: &[
            &["resolver", "per_s"],
            &["resolver", "rate"],
            &["resolver", "responses_per_sec"],
        ],
    },
    Target {
        what: "replay, one core, churn stream",
        goal: Goal::AtLeast,
        limit: 500_000.0,
        unit: "responses/s",
        bench: "scorer-bench",
        any_of: &[
            &["churn", "per_s"],
            &["churn", "rate"],
            &["churn", "responses_per_sec"],
        ],
    },
    Target {
        what: "scorer memory at 1M names",
        goal: Goal::AtMost,
        limit: 256.0,
        unit: "bytes/name",
        bench: "scorer-bench",
        any_of: &[&["bytes_per_name"], &["bytes per name"]],
    },
    Target {
        what: "dnsperf responses/s with ringbuf_full 0 for the whole step",
        goal: Goal::AtLeast,
        limit: 200_000.0,
        unit: "responses/s",
        bench: "ringbuf-load",
        any_of: &[&["max_lossless_achieved"]],
    },
    // Not a target of its own: the same figure with the generator out of the way (answers
    // replayed into the agent, `agent_alone` in ringbuf-load), which tells whether the agent or
    // this machine's dnsperf and unbound set the row above.
    Target {
        what: "the agent alone, replayed answers/s with ringbuf_full 0 for the whole step",
        goal: Goal::AtLeast,
        limit: 200_000.0,
        unit: "responses/s",
        bench: "ringbuf-load",
        any_of: &[&["agent_alone", "highest_lossless_sent"]],
    },
    Target {
        what: "live block latency p99",
        goal: Goal::AtMost,
        limit: 10.0,
        unit: "ms",
        bench: "ringbuf-load",
        // The probe under dnsperf's load only: not the idle probe (`latency_idle`) nor the one
        // under the replayed load, which has a row of its own.
        any_of: &[&["^latency.p99_ms"]],
    },
    Target {
        what: "the agent alone, live block latency p99 under the replayed load",
        goal: Goal::AtMost,
        limit: 10.0,
        unit: "ms",
        bench: "ringbuf-load",
        any_of: &[&["^agent_alone.latency.p99_ms"]],
    },
];

/// The worst figure matching `t` in its bench's document. A token matches a figure's dotted
/// path (lower case) anywhere in it, or, written `^token`, at its start.
fn measure(t: &Target, runs: &[BenchRun]) -> Option<f64> {
    let doc = runs.iter().find(|r| r.name == t.bench)?.json.as_ref()?;
    let found = flatten(doc).into_iter().filter(|(path, _)| {
        t.any_of.iter().any(|set| {
            set.iter().all(|tok| match tok.strip_prefix('^') {
                Some(head) => path.starts_with(head),
                None => path.contains(tok),
            })
        })
    });
    match t.goal {
        Goal::AtMost => found.map(|(_, x)| x).reduce(f64::max),
        Goal::AtLeast => found.map(|(_, x)| x).reduce(f64::min),
    }
}

/// A figure for the report: thousands separators from 1,000 up, else three significant digits.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    if x.abs() >= 1000.0 {
        let s = format!("{:.0}", x.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        return if x < 0.0 { format!("-{out}") } else { out };
    }
    if x.fract() == 0.0 {
        return format!("{x:.0}");
    }
    let decimals = if x.abs() >= 100.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else if x.abs() >= 1.0 {
        2
    } else {
        3
    };
    format!("{x:.decimals$}")
}

fn targets_table(runs: &[BenchRun]) -> String {
    let mut s = String::from("| what | target | measured | |\n|---|---:|---:|---|\n");
    for t in TARGETS {
        let sign = if t.goal == Goal::AtMost { "≤" } else { "≥" };
        let (shown, verdict) = match measure(t, runs) {
            Some(x) => {
                let met = match t.goal {
                    Goal::AtMost => x <= t.limit,
                    Goal::AtLeast => x >= t.limit,
                };
                (
                    format!("{} {}", num(x), t.unit),
                    if met { "met" } else { "**missed**" },
                )
            }
            None => ("-".into(), "not measured"),
        };
        let _ = writeln!(
            s,
            "| {} | {sign} {} {} | {shown} | {verdict} ({}) |",
            t.what,
            num(t.limit),
            t.unit,
            t.bench
        );
    }
    s
}

fn machine_text(m: &Machine) -> String {
    format!(
        "Run of {}: {} ({} cores), Linux {}, load average {} when the benches started (1, 5 \
         and 15 minutes). Release builds.\n",
        m.date, m.cpu, m.cores, m.kernel, m.load
    )
}

/// A cell: numbers formatted, strings as they are, anything else as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), num),
        Value::String(s) => s.replace('|', "\\|"),
        Value::Null => "-".into(),
        other => other.to_string().replace('|', "\\|"),
    }
}

/// An array of objects as one table, columns in the order they first appear.
fn array_table(items: &[Value]) -> String {
    let mut cols: Vec<&str> = Vec::new();
    for it in items {
        for k in it.as_object().into_iter().flat_map(|m| m.keys()) {
            if !cols.contains(&k.as_str()) {
                cols.push(k);
            }
        }
    }
    // serde_json's maps are sorted by key: the column that names a row goes first.
    cols.sort_by_key(|c| !LABEL_KEYS.contains(c));
    let mut s = format!("| {} |\n|{}\n", cols.join(" | "), "---|".repeat(cols.len()));
    for it in items {
        let row: Vec<String> = cols
            .iter()
            .map(|c| it.get(*c).map_or_else(|| "-".into(), cell))
            .collect();
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s
}

/// A document as tables: its scalar fields in one, each array of objects in its own, nested
/// objects under their own line, recursively.
fn doc_tables(v: &Value, title: &str, depth: usize) -> String {
    let Some(m) = v.as_object() else {
        return format!("{title}: {}\n", cell(v));
    };
    let mut s = String::new();
    let scalars: Vec<(&String, &Value)> = m
        .iter()
        .filter(|(_, x)| !x.is_object() && !is_object_array(x))
        .collect();
    if !scalars.is_empty() {
        s.push_str("| figure | value |\n|---|---:|\n");
        for (k, x) in scalars {
            let _ = writeln!(s, "| {k} | {} |", cell(x));
        }
    }
    for (k, x) in m {
        let name = if title.is_empty() {
            k.clone()
        } else {
            format!("{title}.{k}")
        };
        if is_object_array(x) {
            let _ = write!(
                s,
                "\n`{name}`:\n\n{}",
                array_table(x.as_array().map_or(&[], |a| a))
            );
        } else if x.is_object() && depth < MAX_DEPTH {
            let _ = write!(s, "\n`{name}`:\n\n{}", doc_tables(x, &name, depth + 1));
        }
    }
    s
}

fn is_object_array(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_object))
}

/// Lines of a text-only output kept in the report (its summary is at the end).
const TEXT_TAIL: usize = 60;

fn bench_section(r: &BenchRun) -> String {
    let took = if r.seconds > 0.0 {
        format!(" ({:.0} s)", r.seconds)
    } else {
        String::new()
    };
    let mut s = format!("Command: `{}`{took}.\n\n", r.command.replace('`', "'"));
    if let Some(why) = &r.failure {
        let first = why.lines().next().unwrap_or("");
        let _ = writeln!(s, "**{} failed**: {first}\n", r.name);
    }
    if let Some(j) = &r.json {
        s.push_str(&doc_tables(j, "", 0));
    } else if !r.text.trim().is_empty() {
        let lines: Vec<&str> = r.text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(TEXT_TAIL)..];
        let _ = write!(s, "```text\n{}\n```\n", tail.join("\n"));
    } else if r.failure.is_none() {
        s.push_str("(no output)\n");
    }
    s
}

/// The template's placeholder lines: `<!-- bench:machine -->`, `<!-- bench:targets -->` and
/// `<!-- bench:run NAME -->`. Runs the template does not place go at the end.
pub fn render(template: &str, m: &Machine, runs: &[BenchRun]) -> String {
    let mut placed: Vec<&str> = Vec::new();
    let mut out = String::new();
    for line in template.lines() {
        let t = line.trim();
        if t == "<!-- bench:machine -->" {
            out.push_str(&machine_text(m));
        } else if t == "<!-- bench:targets -->" {
            out.push_str(&targets_table(runs));
        } else if let Some(name) = t
            .strip_prefix("<!-- bench:run ")
            .and_then(|r| r.strip_suffix("-->"))
            .map(str::trim)
        {
            placed.push(name);
            match runs.iter().find(|r| r.name == name) {
                Some(r) => out.push_str(&bench_section(r)),
                None => {
                    let _ = writeln!(out, "`{name}` was not run.");
                }
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let rest: Vec<&BenchRun> = runs
        .iter()
        .filter(|r| !placed.contains(&r.name.as_str()))
        .collect();
    if !rest.is_empty() {
        out.push_str("\n## Other benches of this run\n");
        for r in rest {
            let _ = write!(out, "\n### {}\n\n{}", r.name, bench_section(r));
        }
    }
    out
}

/// How long the whole run took, for the closing line of `cargo xtask bench`.
pub fn total(runs: &[BenchRun]) -> Duration {
    Duration::from_secs_f64(runs.iter().map(|r| r.seconds).sum())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(name: &str, json: Option<Value>, failure: Option<&str>) -> BenchRun {
        BenchRun {
            name: name.into(),
            command: format!("{name} --json"),
            json,
            failure: failure.map(str::to_owned),
            seconds: 1.0,
            ..BenchRun::default()
        }
    }

    fn machine() -> Machine {
        Machine {
            cpu: "Test CPU @ 2.0GHz".into(),
            cores: 2,
            kernel: "6.18.0".into(),
            load: "4.55 3.81 2.60".into(),
            date: "2026-12-02 06:00 UTC".into(),
        }
    }

    fn row<'a>(doc: &'a str, what: &str) -> &'a str {
        doc.lines()
            .find(|l| l.starts_with(&format!("| {what}")))
            .unwrap_or_else(|| panic!("no row {what} in:\n{doc}"))
    }

    const TEMPLATE: &str = "# Benchmarks\n\n<!-- bench:machine -->\n\n## Targets\n\n\
        <!-- bench:targets -->\n\n## XDP\n\nProse kept.\n\n<!-- bench:run xdp-bench -->\n\n\
        ## Ring buffer\n\n<!-- bench:run ringbuf-load -->\n\n## Veth\n\n\
        <!-- bench:run veth-bench -->\n\n## Feeds\n\n<!-- bench:run feed-bench -->\n";

    #[test]
    fn report_from_canned_json() {
        let runs = vec![
            run(
                "xdp-bench",
                Some(json!({"cases": [
                    {"case": "pass: non-DNS UDP", "bytes": 106, "flux_ns": 40.0, "noop_ns": 30.0,
                     "ratio": 1.33},
                    {"case": "pass: non-DNS UDP, 100,000 entries", "flux_ns": 60.0,
                     "noop_ns": 30.0, "ratio": 2.0},
                    {"case": "blocked-IP drop, 1,048,576 entries", "ratio": 1.9},
                    {"case": "pass: DNS response", "bytes": 210, "ratio": 7.5,
                     "trials_low": 7.1, "trials_high": 8.3},
                    {"case": "pass: DNS response", "bytes": 1410, "ratio": 9.0},
                ]})),
                None,
            ),
            run(
                "ringbuf-load",
                Some(json!({
                    "max_lossless_achieved": 61234.6,
                    "steps": [{"asked": 10000, "achieved": 9999.9, "ring_full": 0}],
                    "latency": {"p50_ms": 1.2, "p99_ms": 4.5, "blocks": 40},
                    "latency_idle": {"p99_ms": 0.3},
                    "agent_alone": {
                        "latency": {"p99_ms": 7.5},
                        "highest_lossless_sent": 300_001.5,
                        "steps": [{"asked": 300000, "achieved": 300_001.5, "ring_full": 0}],
                        "overload": {"asked": 0, "achieved": 592_842.8, "ring_full": 12},
                    },
                })),
                None,
            ),
            // A bench that printed its error as its document.
            run(
                "veth-bench",
                Some(json!({"error": "trafgen failed: Flushing TX_RING failed"})),
                Some("trafgen failed: Flushing TX_RING failed"),
            ),
            // A bench without --json: its text is kept.
            BenchRun {
                text: "parsed 1,000,000 entries in 0.8 s\n".into(),
                ..run("feed-bench", None, None)
            },
            // Not placed by the template.
            run("metrics-bench", None, Some("exited with exit status: 1")),
        ];
        let doc = render(TEMPLATE, &machine(), &runs);

        assert!(doc.contains("Test CPU @ 2.0GHz (2 cores), Linux 6.18.0, load average 4.55"));
        assert!(doc.contains("Prose kept."));
        // The worst of the matching cases counts: with entries the pass is 2.0×.
        assert!(row(&doc, "non-DNS pass").contains("| 2 × | **missed**"));
        assert!(row(&doc, "blocked-address drop").contains("| 1.90 × | met"));
        // The 200-byte case is told from the 1,410-byte one by its size, and its figure is
        // the trials' median ratio, not the highest trial (xdp-bench's `trials_high`).
        assert!(row(&doc, "200-byte DNS response").contains("| 7.50 × | met"));
        // dnsperf's figure, and the agent alone's in a row of its own: neither is read as
        // the other, though both are the highest loss-free rate.
        assert!(row(&doc, "dnsperf responses/s").contains("61,235 responses/s | **missed**"));
        assert!(row(&doc, "the agent alone, replayed").contains("| 300,002 responses/s | met"));
        assert!(doc.contains("`agent_alone.steps`:"), "{doc}");
        // Each latency row reads its own probe: not the idle one, not the other load's.
        assert!(row(&doc, "live block latency p99").contains("| 4.50 ms | met"));
        assert!(row(&doc, "the agent alone, live block latency").contains("| 7.50 ms | met"));
        // Absent figures are one line each, never a panic.
        assert!(row(&doc, "replay, one core, churn").contains("not measured"));
        assert!(row(&doc, "whole-machine CPU").contains("not measured"));
        assert!(doc.contains("**veth-bench failed**: trafgen failed"));
        assert!(doc.contains("parsed 1,000,000 entries in 0.8 s"));
        assert!(doc.contains("### metrics-bench"));
        assert!(doc.contains("**metrics-bench failed**: exited with exit status: 1"));
        // The per-case table keeps every column.
        assert!(
            doc.contains("| case | bytes | flux_ns | noop_ns | ratio |"),
            "{doc}"
        );
        assert!(doc.contains("| pass: non-DNS UDP | 106 | 40 | 30 | 1.33 |"));
        assert!(doc.contains("| p99_ms | 4.50 |"));
    }

    /// The veth target is flux_xdp native's own ratio to each nftables placement (the worst of
    /// the two), never the nftables cases' ratios to each other; the scorer's targets come from
    /// its `--json` document. Both were read wrong by the first full run of `xtask bench`.
    #[test]
    fn veth_and_scorer_targets_read_their_own_figures() {
        let case = |name: &str, ingress: f64, prerouting: f64| {
            json!({"case": name, "cpu_ratio_to_nft_ingress": ingress,
                   "cpu_ratio_to_nft_prerouting": prerouting,
                   "flood_cpu_ratio_to_nft_ingress": ingress + 0.3,
                   "rx_cpu_ratio_to_nft_ingress": ingress + 0.14,
                   "rx_cpu_ratio_to_nft_prerouting": prerouting + 0.17,
                   "median_pps": 3e6})
        };
        let runs = vec![
            run(
                "veth-bench",
                Some(json!({"generator": "xdp", "cases": [
                    case("flux_xdp_native", 0.36, 0.45),
                    case("flux_xdp_generic", 0.70, 0.88),
                    case("nft_netdev_ingress", 1.0, 1.25),
                    case("nft_prerouting_raw", 0.8, 1.0),
                ]})),
                None,
            ),
            run(
                "scorer-bench",
                Some(json!({
                    "bench": "scorer-bench",
                    "memory": {"names": 1_000_000, "bytes_per_name": 249.7},
                    "streams": [
                        {"stream": "resolver", "per_s": 478_913.0,
                         "read_parse_only_rps": 2_041_807.0},
                        {"stream": "churn", "per_s": 184_917.0,
                         "read_parse_only_rps": 2_112_563.0},
                    ],
                })),
                None,
            ),
        ];
        let doc = render(TEMPLATE, &machine(), &runs);
        assert!(
            row(&doc, "whole-machine CPU").contains("| 0.450 × | met"),
            "{}",
            row(&doc, "whole-machine CPU")
        );
        // The receiving side's row reads its own ratios (the worst placement), and the
        // whole-machine row above none of them.
        assert!(
            row(&doc, "CPU per dropped packet on the receiving side").contains("| 0.620 × | met"),
            "{}",
            row(&doc, "CPU per dropped packet on the receiving side")
        );
        assert!(
            row(&doc, "replay, one core, resolver").contains("| 478,913 responses/s | **missed**")
        );
        assert!(
            row(&doc, "replay, one core, churn").contains("| 184,917 responses/s | **missed**")
        );
        assert!(row(&doc, "scorer memory").contains("| 250 bytes/name | met"));
    }

    #[test]
    fn a_run_that_never_happened_is_one_line() {
        let doc = render(TEMPLATE, &machine(), &[]);
        assert!(doc.contains("`xdp-bench` was not run."));
        assert_eq!(
            TARGETS.len(),
            doc.lines().filter(|l| l.contains("not measured (")).count()
        );
    }

    #[test]
    fn a_saved_run_reads_back() {
        let r = BenchRun {
            text: "t".into(),
            ..run("ringbuf-load", Some(json!({"a": 1})), Some("boom"))
        };
        let back = BenchRun::from_json(&r.to_json()).unwrap();
        assert_eq!(
            (back.name, back.json, back.text, back.failure),
            (r.name, r.json, r.text, r.failure)
        );
        assert!(BenchRun::from_json(&json!({"no": "name"})).is_none());
    }

    /// `sh -c SCRIPT` with `--json` (when passed) as `$0`.
    fn sh_bench(script: &str) -> BenchRun {
        run_bench(
            "fake",
            std::path::Path::new("/bin/sh"),
            &["-c".into(), script.into()],
        )
    }

    #[test]
    fn a_bench_is_run_with_json_and_without_it_when_it_refuses() {
        let r = sh_bench(r#"echo progress; echo '{"x": 2}'"#);
        assert_eq!(r.json.as_ref().map(|j| j["x"].clone()), Some(json!(2)));
        assert!(r.failure.is_none());
        // Refuses --json at once: run again without, and its text is kept.
        let r = sh_bench(r#"[ "$0" = --json ] && exit 2; echo plain figures"#);
        assert!(r.json.is_none() && r.failure.is_none(), "{r:?}");
        assert_eq!(r.text.trim(), "plain figures");
        // An error document is a failure with its message.
        let r = sh_bench(r#"echo '{"error": "no BPF"}'; exit 1"#);
        assert_eq!(r.failure.as_deref(), Some("no BPF"));
    }

    #[test]
    fn json_is_found_after_progress_lines() {
        let v = json_document("warming up\n{\"a\": 1}\n").unwrap();
        assert_eq!(v["a"], 1);
        assert!(json_document("no json here\n").is_none());
        assert!(json_document("[1, 2]").is_none());
    }

    #[test]
    fn numbers_read_as_in_the_docs() {
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(num(999.0), "999");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.7512), "0.751");
        assert_eq!(num(-2500.0), "-2,500");
        assert_eq!(num(f64::NAN), "-");
    }
}
