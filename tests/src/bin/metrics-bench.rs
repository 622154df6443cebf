//! Latency of `/metrics` while the agent takes DNS responses (`cargo xtask bench`; issue 16's
//! figure): a scrape every second, as Prometheus would, against the real agent binary
//! (`flux-agent run --metrics`) capturing on one side of a veth pair.
//!
//! The load: a sender thread in the `server` namespace sends pre-built DNS responses (A records
//! of 20,000 names under 2,000 domains, a few addresses each) from port 53 to the client, paced
//! per millisecond to `--rate` (default 50,000/s). The agent runs with `--accept-unsolicited`,
//! so every response is scored, not only marked. The scraper, in the `client` namespace, times
//! each `GET /metrics` from connect to the last byte. First `--idle` scrapes with no load (the
//! baseline), then `--seconds` scrapes under load.
//!
//! Reported: the rate offered, the rates the kernel captured and the agent parsed (read from the
//! scrapes themselves), the ring-buffer loss, and the scrape latency p50/p99/max, idle and
//! loaded. On a machine that cannot send the asked rate the rate reached is what is reported.
//! `--json`: the same as one JSON document.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream, UdpSocket},
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use flux_tests::{CLIENT_V4, Link, PinDir, Proc, SERVER_V4, TempDir, a_reply};

/// Where the agent serves its metrics inside the client namespace.
const METRICS: &str = "127.0.0.1:9580";
/// Distinct names in the load (so the scorer tracks many keys, as on a busy resolver).
const NAMES: u32 = 20_000;
/// Names per registered domain.
const NAMES_PER_DOMAIN: u32 = 10;
/// How long the agent may take to start.
const START_WAIT: Duration = Duration::from_secs(120);

struct Args {
    rate: u64,
    seconds: u32,
    idle: u32,
    json: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        rate: 50_000,
        seconds: 60,
        idle: 10,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--json" {
            a.json = true;
            continue;
        }
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--rate" => a.rate = v.parse()?,
            "--seconds" => a.seconds = v.parse()?,
            "--idle" => a.idle = v.parse()?,
            _ => bail!("unknown argument {k} (--rate N, --seconds N, --idle N, --json)"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    ensure!(
        flux_tests::privileged(),
        "the metrics benchmark needs root (BPF, namespaces)"
    );
    let bin = agent_bin()?;
    let link = Link::new();
    let pin = PinDir::new();
    let dir = TempDir::new();
    let _agent = start_agent(&link, &pin, &dir, &bin)?;

    let idle = scrapes(&link, args.idle)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent, rate) = (stop.clone(), sent.clone(), args.rate);
        link.server.spawn_in(move || send_load(rate, &stop, &sent))
    };
    // Let the load settle (the scorer's tables fill) before timing.
    thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    let sent0 = sent.load(Ordering::Relaxed);
    let loaded = scrapes(&link, args.seconds)?;
    let secs = t0.elapsed().as_secs_f64();
    let offered = (sent.load(Ordering::Relaxed) - sent0) as f64 / secs;
    stop.store(true, Ordering::Relaxed);
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;

    report(&args, &idle, &loaded, offered);
    Ok(())
}

/// The release agent next to this binary (`target/release/flux-agent`).
fn agent_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("flux-agent");
    ensure!(
        bin.exists(),
        "{} is missing: `cargo build --release -p flux-agent --bins` (cargo xtask bench does)",
        bin.display()
    );
    Ok(bin)
}

fn start_agent(
    link: &Link,
    pin: &PinDir,
    dir: &TempDir,
    bin: &std::path::Path,
) -> anyhow::Result<Proc> {
    let log = dir.0.join("agent.log");
    let mut cmd = link.client.cmd(bin.to_str().context("utf-8 path")?);
    cmd.args(["run", "--iface", "a0", "--no-db", "--accept-unsolicited"])
        .args(["--pin-dir", &pin.arg(), "--metrics", METRICS])
        // Only the decisions are logged; the per-response lines go to /dev/null.
        .env("RUST_LOG", "warn,flux_agent::pipeline::live=info")
        .envs(flux_tests::BUILTIN_CONFIG)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    let mut agent = Proc::spawn("flux-agent", &mut cmd);
    let deadline = Instant::now() + START_WAIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("capturing DNS responses") {
            return Ok(agent);
        }
        if let Some(st) = agent.child.try_wait()? {
            bail!("flux-agent exited ({st}):\n{text}");
        }
        ensure!(
            Instant::now() < deadline,
            "flux-agent did not start:\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The responses the sender cycles through.
fn responses() -> Vec<Vec<u8>> {
    (0..NAMES)
        .map(|n| {
            let domain = n / NAMES_PER_DOMAIN;
            let name = format!("h{n}.d{domain}.bench.test");
            // Two to four addresses, in a /16 per domain: plenty of keys, few of them flux.
            let ips: Vec<Ipv4Addr> = (0..2 + n % 3)
                .map(|i| {
                    Ipv4Addr::new(
                        20 + (domain % 200) as u8,
                        (domain / 200 % 250) as u8,
                        (n % 250) as u8,
                        1 + i as u8,
                    )
                })
                .collect();
            a_reply(&name, &ips, 300, n as u16)
        })
        .collect()
}

/// Sends `rate` responses a second from SERVER:53 to the client until `stop`, paced per
/// millisecond; counts what it sent.
fn send_load(rate: u64, stop: &AtomicBool, sent: &AtomicU64) -> anyhow::Result<()> {
    let msgs = responses();
    let s = UdpSocket::bind((SERVER_V4, 53)).context("bind :53 in the server namespace")?;
    s.connect((CLIENT_V4, 40_000))?;
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        // How many should have gone by now; send the difference, then yield for a millisecond.
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while n < due {
            // A closed port on the client answers ICMP; a refused send is not a lost response.
            let _ = s.send(&msgs[i]);
            i = (i + 1) % msgs.len();
            n += 1;
            if n.is_multiple_of(1024) {
                sent.store(n, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
        }
        sent.store(n, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// One scrape: latency, body.
fn scrape() -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    let mut c = TcpStream::connect(METRICS)?;
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut body = String::new();
    c.read_to_string(&mut body)?;
    let took = t.elapsed();
    ensure!(body.starts_with("HTTP/1.0 200"), "scrape failed: {body}");
    Ok((took, body))
}

/// What one scrape saw.
struct Sample {
    at: Instant,
    took: Duration,
    bytes: usize,
    captured: f64,
    parsed: f64,
    ring_full: f64,
}

fn value(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `n` scrapes a second apart, from the client namespace.
fn scrapes(link: &Link, n: u32) -> anyhow::Result<Vec<Sample>> {
    link.client.run_in(move || {
        let mut out = Vec::new();
        let start = Instant::now();
        for k in 0..n {
            let next = start + Duration::from_secs(u64::from(k));
            thread::sleep(next.saturating_duration_since(Instant::now()));
            let (took, body) = scrape()?;
            out.push(Sample {
                at: Instant::now(),
                took,
                bytes: body.len(),
                captured: value(&body, "flux_kernel_responses_captured_total"),
                parsed: value(&body, "flux_dns_responses_total"),
                ring_full: value(&body, "flux_kernel_ringbuf_full_total"),
            });
        }
        Ok(out)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Scrape latency p50, p99 and max in milliseconds, and the number of scrapes.
fn latency_ms(s: &[Sample]) -> (f64, f64, f64, usize) {
    let mut t: Vec<Duration> = s.iter().map(|s| s.took).collect();
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(percentile(&t, 0.5)),
        ms(percentile(&t, 0.99)),
        ms(t.last().copied().unwrap_or_default()),
        t.len(),
    )
}

fn latencies(s: &[Sample]) -> String {
    let (p50, p99, max, n) = latency_ms(s);
    format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms over {n} scrapes")
}

/// The rates the loaded scrapes read, per second: captured, parsed, ring buffer full.
fn load_rates(loaded: &[Sample]) -> Option<(f64, f64, f64)> {
    let (Some(a), Some(b)) = (loaded.first(), loaded.last()) else {
        return None;
    };
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    Some((
        (b.captured - a.captured) / secs,
        (b.parsed - a.parsed) / secs,
        (b.ring_full - a.ring_full) / secs,
    ))
}

fn report(args: &Args, idle: &[Sample], loaded: &[Sample], offered: f64) {
    if args.json {
        let lat = |s: &[Sample]| {
            let (p50, p99, max, n) = latency_ms(s);
            serde_json::json!({ "p50_ms": p50, "p99_ms": p99, "max_ms": max, "scrapes": n })
        };
        let rates = load_rates(loaded);
        println!(
            "{}",
            serde_json::json!({
                "bench": "metrics-bench",
                "body_bytes": idle.last().map(|s| s.bytes),
                "idle": lat(idle),
                "loaded": lat(loaded),
                "asked_per_s": args.rate,
                "sent_per_s": offered,
                "captured_per_s": rates.map(|r| r.0),
                "parsed_per_s": rates.map(|r| r.1),
                "ring_full_per_s": rates.map(|r| r.2),
            })
        );
        return;
    }
    println!(
        "metrics-bench: GET /metrics once a second, agent capturing on a veth (release build)"
    );
    if let Some(s) = idle.last() {
        println!("  body: {} bytes", s.bytes);
    }
    println!("  idle:   {}", latencies(idle));
    let Some((captured, parsed, ring_full)) = load_rates(loaded) else {
        return;
    };
    println!(
        "  load:   asked {} responses/s, sent {:.0}/s; kernel captured {:.0}/s, agent parsed \
         {:.0}/s, ring buffer full {:.0}/s",
        args.rate, offered, captured, parsed, ring_full,
    );
    println!("  loaded: {}", latencies(loaded));
}
