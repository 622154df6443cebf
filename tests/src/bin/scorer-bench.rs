//! `cargo xtask bench` (userspace half): replay throughput and the scorer's memory bound.
//!
//! 1. Throughput: pcaps of N DNS responses replayed through the same reader, parser and scorer
//!    as `flux-agent replay`, on one thread, for two streams:
//!    - **resolver**: what a recursive resolver's clients see. 200,000 names with Zipf
//!      popularity; each answer is cached for its TTL, so it only changes when the TTL runs out
//!      (flux names every 180 s with fresh addresses, CDN names every 20-60 s within a pool).
//!    - **churn** (worst case): 20,000 names queried so rarely that nearly every response is a
//!      changed answer, so nearly every response re-scores one or two keys.
//! 2. Memory: 1,000,000 distinct names fed to one scorer; resident memory before and after
//!    (`/proc/self/status`), and the scorer's own estimate. Also the slowest single response
//!    of those, when the tables grow: a live agent's scorer stops reading the ring buffer
//!    that long.
//!
//! `--pcap FILE [--repeat N]` measures one capture instead, N times: the reader and parser
//! alone, then the whole replay (`--replay-only`: the replay alone, once, for the count below).
//!
//! 3. Instructions: each stream's replay pass again, under valgrind's callgrind, which counts
//!    the instructions it executes ([`instructions`]). Unlike the rates, the count does not
//!    depend on how loaded the host is: on this VM the same binary's resolver replay read
//!    398,759 to 672,169 responses/s in ten runs of one hour, so a change of a few percent
//!    shows only in the count. Without valgrind the rates are still measured and the count is
//!    reported as missing.
//!
//! `--json`: the readable lines go to stderr and stdout is one JSON document (`memory`, and
//! `streams`, one element per stream), which `cargo xtask bench` reads for its targets table.
//!
//! Figures, not assertions: they go in docs/benchmarks.md.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use flux_agent::pipeline::replay_source;
use flux_detect::{
    capture_file::DEFAULT_PORTS,
    dns::{DnsFlags, DnsMessage, DnsRecord},
    enrich::{Enricher, default_db_dir},
    known_good::Allowlist,
    score::{Scorer, ScorerConfig},
};
use flux_tests::eval::pcapw::{RESOLVER, Response, write_pcap};
use hickory_proto::{
    op::{Message, MessageType, Query},
    rr::{Name, RData, Record, rdata::A},
};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    flux_tests::flag_value(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A tiny deterministic generator (xorshift), so the bench needs no seed plumbing.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn message(name: &str, ttl: u32, ips: &[Ipv4Addr]) -> anyhow::Result<Vec<u8>> {
    let n = Name::from_ascii(name)?;
    let mut m = Message::new();
    m.set_id(7)
        .set_message_type(MessageType::Response)
        .set_recursion_desired(true)
        .set_recursion_available(true)
        .add_query(Query::query(n.clone(), hickory_proto::rr::RecordType::A));
    for ip in ips {
        m.add_answer(Record::from_rdata(n.clone(), ttl, RData::A(A(*ip))));
    }
    Ok(m.to_vec()?)
}

fn bench_dir() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The resolver stream: Zipf-popular names whose answers hold for their TTL.
fn resolver_stream(n: u64) -> anyhow::Result<PathBuf> {
    const NAMES: usize = 200_000;
    let path = bench_dir()?.join(format!("resolver-{n}.pcap"));
    // Zipf (s = 1) by inverse CDF over precomputed cumulative weights.
    let mut cdf = Vec::with_capacity(NAMES);
    let mut total = 0.0f64;
    for rank in 1..=NAMES {
        total += 1.0 / rank as f64;
        cdf.push(total);
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut responses = Vec::with_capacity(n as usize);
    for i in 0..n {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let id = cdf.partition_point(|c| *c < u) as u32;
        // 500 responses per second of observation time: 1,000,000 span about 33 minutes.
        let ms = i * 2;
        let t = (ms / 1000) as u32;
        let (name, ttl, ips): (String, u32, Vec<Ipv4Addr>) = match id % 50 {
            // 2%: flux, five fresh addresses from all over every TTL.
            0 => {
                let epoch = t / 180;
                let ips = (0..5)
                    .map(|k| Ipv4Addr::from((epoch * 7 + k).wrapping_mul(0x0101_0F0B) ^ (id * 977)))
                    .collect();
                (format!("www.f{id}.example"), 180, ips)
            }
            // 40%: CDN, two of eight addresses in one /24, rotating every TTL.
            1..=20 => {
                let ttl = 20 + (id % 3) * 20;
                let k = (t / ttl) % 7;
                let base = 0x1720_0000u32 + id * 256;
                (
                    format!("e{id}.a.cdn.example"),
                    ttl,
                    vec![Ipv4Addr::from(base + k), Ipv4Addr::from(base + k + 1)],
                )
            }
            // 30%: round robin, four fixed addresses.
            21..=35 => (
                format!("rr{id}.example"),
                3600,
                (0..4)
                    .map(|k| Ipv4Addr::from(0x3300_0000u32 + id * 16 + k))
                    .collect(),
            ),
            // 28%: one fixed address.
            _ => (
                format!("host{id}.example"),
                300,
                vec![Ipv4Addr::from(0x5000_0000u32 + id)],
            ),
        };
        responses.push(Response {
            ts: Duration::from_secs(1_767_225_600) + Duration::from_millis(ms),
            resolver: RESOLVER.into(),
            port: 40_000 + (i % 20_000) as u16,
            payload: message(&name, ttl, &ips)?,
        });
    }
    write_pcap(&path, &mut responses)?;
    Ok(path)
}

/// The churn stream: rarely repeated names, nearly every response a changed answer.
fn churn_stream(n: u64) -> anyhow::Result<PathBuf> {
    let path = bench_dir()?.join(format!("replay-{n}.pcap"));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut responses = Vec::with_capacity(n as usize);
    for i in 0..n {
        let r = rng.next();
        let name_id = r % 20_000;
        let kind = name_id % 10;
        let (name, ttl, ips): (String, u32, Vec<Ipv4Addr>) = match kind {
            // Flux: every TTL period, five fresh addresses.
            0 => {
                let epoch = (i / 2000) as u32;
                let ips = (0..5)
                    .map(|k| {
                        Ipv4Addr::from(((epoch * 7 + k) * 0x0101_0F0B) ^ (name_id as u32 * 977))
                    })
                    .collect();
                (format!("www.f{name_id}.example"), 180, ips)
            }
            // CDN: two addresses from one /24 that drift.
            1..=5 => {
                let base = 0x1720_0000u32 + (name_id as u32) * 256;
                let k = ((i / 500) % 200) as u32;
                (
                    format!("e{name_id}.a.cdn.example"),
                    20,
                    vec![Ipv4Addr::from(base + k), Ipv4Addr::from(base + k + 1)],
                )
            }
            // Round robin and single-address names.
            6..=7 => (
                format!("rr{name_id}.example"),
                3600,
                (0..4)
                    .map(|k| Ipv4Addr::from(0x3300_0000u32 + name_id as u32 * 16 + k))
                    .collect(),
            ),
            _ => (
                format!("host{name_id}.example"),
                300,
                vec![Ipv4Addr::from(0x5000_0000u32 + name_id as u32)],
            ),
        };
        responses.push(Response {
            ts: Duration::from_secs(1_767_225_600) + Duration::from_millis(i * 20),
            resolver: RESOLVER.into(),
            port: 40_000 + (i % 20_000) as u16,
            payload: message(&name, ttl, &ips)?,
        });
    }
    write_pcap(&path, &mut responses)?;
    Ok(path)
}

/// Whether `--json` was given: readable lines then go to stderr.
fn json_mode() -> bool {
    std::env::args().any(|a| a == "--json")
}

/// One readable line: stdout, or stderr under `--json` (stdout is the document then).
macro_rules! say {
    ($($t:tt)*) => {
        if json_mode() { eprintln!($($t)*) } else { println!($($t)*) }
    };
}

/// The reader and parser alone over `path`, so the scorer's share of a replay is the
/// difference: responses parsed a second.
fn parse_pass(stream: &str, path: &Path) -> f64 {
    let started = std::time::Instant::now();
    let mut read = flux_detect::capture_file::ReadStats::default();
    let mut parsed = 0u64;
    let _ = flux_detect::capture_file::read_file_each(path, &DEFAULT_PORTS, &mut read, |c| {
        if flux_detect::dns::parse_response(c.payload, c.truncated).is_ok() {
            parsed += 1;
        }
    });
    let secs = started.elapsed().as_secs_f64();
    say!(
        "replay ({stream}): {parsed} responses read and parsed in {secs:.2} s = {:.0} responses/s (no scoring)",
        parsed as f64 / secs
    );
    parsed as f64 / secs
}

fn throughput(stream: &str, path: &Path, enricher: &Arc<Enricher>) -> serde_json::Value {
    let parse_rate = parse_pass(stream, path);
    let mut v = replay_pass(stream, path, enricher);
    v["read_parse_only_rps"] = parse_rate.into();
    v
}

/// The whole replay of `path` (read, parse, score) through a fresh scorer.
fn replay_pass(stream: &str, path: &Path, enricher: &Arc<Enricher>) -> serde_json::Value {
    let mut scorer = Scorer::new(
        ScorerConfig::default(),
        enricher.clone(),
        Arc::new(Allowlist::builtin()),
    );
    let s = replay_source::replay(&[path.to_path_buf()], &DEFAULT_PORTS, &mut scorer, |_| {});
    say!(
        "replay ({stream}): {} responses in {:.2} s = {:.0} responses/s (read + parse + score, one thread); \
         {} keys, {} verdicts, scorer ≈ {:.1} MiB",
        s.parsed + s.malformed,
        s.elapsed_s,
        s.responses_per_s,
        s.scorer.keys_tracked,
        s.verdicts,
        s.scorer_memory_bytes as f64 / (1 << 20) as f64
    );
    // `per_s` is the target's figure (read + parse + score); the parse-only rate is named so
    // that no target's tokens match it.
    serde_json::json!({
        "stream": stream,
        "responses": s.parsed + s.malformed,
        "seconds": s.elapsed_s,
        "per_s": s.responses_per_s,
        "keys": s.scorer.keys_tracked,
        "verdicts": s.verdicts,
        "scorer_bytes": s.scorer_memory_bytes,
    })
}

/// The function whose instructions callgrind counts ([`instructions`]): the whole replay pass
/// (read, parse, score), not the databases' load before it. Not generic and called across
/// crates, so it stays a function of its own; a count of 0 says it was renamed or inlined.
const COUNTED: &str = "flux_agent::pipeline::replay_source::replay_with_progress";

/// Instructions a response of the replay of `path` (`responses` of them), counted by
/// callgrind in this binary run again with `--replay-only`: valgrind's count of what the CPU
/// executes, the same however busy the host is, which the rates are not. It says nothing of
/// cache misses and branch mispredictions, so it cannot replace the rate; it tells a change of
/// the code from a change of the host's hour. About 50 times slower than the replay itself.
fn instructions(path: &Path, responses: u64) -> Result<f64, String> {
    let valgrind = flux_tests::which("valgrind")
        .ok_or("valgrind is not installed (`cargo xtask setup` installs it)")?;
    let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    let out = std::process::Command::new(valgrind)
        .arg("--tool=callgrind")
        .arg(format!("--toggle-collect={COUNTED}"))
        .arg("--callgrind-out-file=/dev/null")
        .arg(exe)
        .arg("--pcap")
        .arg(path)
        .arg("--replay-only")
        .output()
        .map_err(|e| format!("run valgrind: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let last = stderr.lines().last().unwrap_or("");
        return Err(format!("valgrind failed ({}): {last}", out.status));
    }
    match collected(&stderr) {
        Some(0) => Err(format!(
            "callgrind counted nothing in {COUNTED}: renamed or inlined?"
        )),
        Some(n) => Ok(n as f64 / responses.max(1) as f64),
        None => Err("callgrind printed no count".to_owned()),
    }
}

/// The count in callgrind's closing line `==PID== Collected : N`.
fn collected(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.split_once("Collected :"))
        .and_then(|(_, n)| n.trim().parse().ok())
}

/// [`instructions`] into a stream's figures: `instructions_per_response`, or why there is none
/// (`instructions_missing`).
fn count_instructions(stream: &str, path: &Path, v: &mut serde_json::Value) {
    let responses = v["responses"].as_u64().unwrap_or(0);
    match instructions(path, responses) {
        Ok(per) => {
            say!(
                "replay ({stream}): {per:.0} instructions a response in the replay pass \
                 (callgrind; independent of the host's load)"
            );
            v["instructions_per_response"] = per.round().into();
        }
        Err(why) => {
            say!("replay ({stream}): instructions not counted: {why}");
            v["instructions_missing"] = why.into();
        }
    }
}

fn memory(names: u64, enricher: &Arc<Enricher>) -> serde_json::Value {
    flux_agent::allocator::return_freed_memory();
    let before = flux_tests::rss_bytes();
    let mut scorer = Scorer::new(
        ScorerConfig {
            max_keys: names as usize,
            ..ScorerConfig::default()
        },
        enricher.clone(),
        Arc::new(Allowlist::builtin()),
    );
    let mut rng = Rng(42);
    let mut out = Vec::new();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    // The slowest single response while the tables grow: what a live agent's block latency
    // meets when the key table has to make room.
    let mut slowest = Duration::ZERO;
    for i in 0..names {
        // Registered domains, so one name is one key; 1-4 addresses each, like real answers.
        let name: Arc<str> = format!("n{i}-{:x}.example", rng.next() & 0xffff).into();
        let k = 1 + (rng.next() % 4) as u32;
        let answers = (0..k)
            .map(|j| {
                let ip = Ipv4Addr::from((rng.next() as u32) | j);
                DnsRecord {
                    name: name.clone(),
                    rtype: "A".into(),
                    rtype_code: 1,
                    ttl: 300,
                    target: None,
                    addr: Some(ip.into()),
                }
            })
            .collect();
        let msg = DnsMessage {
            id: 1,
            qname: name.clone(),
            qtype: "A".into(),
            rcode: flux_detect::dns::Rcode::NOERROR,
            flags: DnsFlags::default(),
            answers,
            authority: Vec::new(),
            additional: Vec::new(),
            edns_udp_size: None,
            incomplete: false,
        };
        out.clear();
        let started = std::time::Instant::now();
        scorer.observe(t0 + Duration::from_millis(i), &msg, &mut out);
        slowest = slowest.max(started.elapsed());
    }
    flux_agent::allocator::return_freed_memory();
    let after = flux_tests::rss_bytes();
    let st = scorer.stats();
    let grown = after.saturating_sub(before);
    let per_name = grown as f64 / st.keys_tracked.max(1) as f64;
    say!(
        "memory: {} names tracked: RSS +{:.1} MiB ({:.0} bytes/name); scorer estimate {:.1} MiB; \
         slowest response {:.2} ms",
        st.keys_tracked,
        grown as f64 / (1 << 20) as f64,
        per_name,
        scorer.memory_estimate() as f64 / (1 << 20) as f64,
        slowest.as_secs_f64() * 1e3
    );
    serde_json::json!({
        "names": st.keys_tracked,
        "rss_growth_bytes": grown,
        "bytes_per_name": per_name,
        "scorer_estimate_bytes": scorer.memory_estimate(),
        "slowest_response_ms": slowest.as_secs_f64() * 1e3,
    })
}

const USAGE: &str = "usage: scorer-bench [--names N] [--responses N] [--json] | \
                     scorer-bench --pcap FILE [--repeat N | --replay-only] [--json]";

fn main() -> anyhow::Result<()> {
    let args = flux_tests::bench_args(
        "scorer-bench",
        USAGE,
        &["--pcap", "--repeat", "--names", "--responses"],
        &["--json", "--replay-only"],
        0,
    );
    let dir = default_db_dir();
    let enricher = Arc::new(
        Enricher::load_dir(&dir)
            .with_context(|| format!("load databases from {}", dir.display()))?,
    );
    say!("{}", enricher.describe());
    if let Some(pcap) = flux_tests::flag_value(&args, "--pcap") {
        if args.iter().any(|a| a == "--replay-only") {
            // What `instructions` counts: the replay alone, once.
            replay_pass("given", Path::new(pcap), &enricher);
            return Ok(());
        }
        // Repeated, so the best run (least disturbed by the host) can be compared.
        let runs: Vec<_> = (0..arg(&args, "--repeat", 1))
            .map(|_| throughput("given", Path::new(&pcap), &enricher))
            .collect();
        if json_mode() {
            println!(
                "{}",
                serde_json::json!({ "bench": "scorer-bench", "runs": runs })
            );
        }
        return Ok(());
    }
    // Memory first: memory the throughput runs freed would otherwise be reused and hide part
    // of the growth.
    let memory = memory(arg(&args, "--names", 1_000_000), &enricher);
    let n = arg(&args, "--responses", 1_000_000);
    let mut streams = Vec::new();
    for (stream, path) in [
        ("resolver", resolver_stream(n)?),
        ("churn", churn_stream(n)?),
    ] {
        let mut v = throughput(stream, &path, &enricher);
        count_instructions(stream, &path, &mut v);
        streams.push(v);
    }
    if json_mode() {
        println!(
            "{}",
            serde_json::json!({ "bench": "scorer-bench", "memory": memory, "streams": streams })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callgrinds_count_is_read_from_its_closing_lines() {
        let stderr = "==22208== \n==22208== Events    : Ir\n==22208== Collected : 8107223310\n\
                      ==22208== \n==22208== I   refs:      8,107,223,310\n";
        assert_eq!(collected(stderr), Some(8_107_223_310));
        assert_eq!(collected("==1== Collected : 0\n"), Some(0));
        assert_eq!(collected("valgrind: no such tool\n"), None);
    }

    /// The counted function is the replay pass's: renaming it must rename the count's target.
    #[test]
    fn the_counted_function_is_the_replay_pass() {
        // Fails to build if the function moves or is renamed.
        let _ = replay_source::replay_with_progress;
        assert!(COUNTED.ends_with("replay_source::replay_with_progress"));
    }
}
