//! `fleet-bench`: one nats-server (JetStream, nkey users, the lab's configuration) and N
//! simulated agents (default 50) in its namespace, each with the agent's own link
//! (`flux_agent::fleet::nats_link`: signing, batching, `Nats-Msg-Id`, a durable consumer,
//! every received message's signature and replay checks). Each agent publishes changed
//! answers and verdicts at a steady rate for the run's duration; every agent reads everything.
//!
//! Prints the p50/p99/max of verdict-to-receipt latency across the fleet (a verdict's time at
//! its sender to its admission, signature checked, at each other agent: the fleet's part of
//! verdict-to-enforcement; the enforcer's map write after it is `block-latency`'s figure), and
//! the broker's CPU and memory from /proc, the simulated agents' own CPU (this process), and
//! what they were handed, published (signed and queued) and got stored: on a shared machine
//! these say whether the clients, not the broker, were the limit. Root only (namespaces).
//!
//! Usage: fleet-bench [AGENTS] [SECONDS] [OBS_PER_SEC] [VERDICTS_PER_SEC]

use std::time::{Duration, Instant};

use flux_agent::fleet::{
    envelope::{AddrRec, ObsRec, now_ms},
    nats_link::Inbound,
};
use flux_tests::{
    fleet_sim::SimAgent,
    nats_lab::{NATS_PORT, NatsLab, proc_usage},
};

/// Changed answers per second per agent: a gateway for about a hundred users sends some 50
/// queries a second to its resolver, of which (after caching) about 20 bring an answer that
/// differs from the last one for its name.
const OBS_PER_SEC: u32 = 20;
/// Verdicts per second per agent: far above a real agent's few an hour, so the latency figure
/// has tens of thousands of samples.
const VERDICTS_PER_SEC: u32 = 1;

/// Positional argument `n`, or `default` when it is not given; one that does not parse is an
/// error, not the default.
fn arg<T: std::str::FromStr>(args: &[String], n: usize, default: T) -> anyhow::Result<T> {
    match args.get(n) {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| anyhow::anyhow!("argument {n}: not a number: {s:?}")),
    }
}

fn obs(agent: usize, n: u64) -> ObsRec {
    let ts = now_ms() / 1000;
    ObsRec {
        ts,
        chain: vec![format!("h{n}.d{agent}.bench.test")],
        ttl: 300,
        addrs: (0..4u8)
            .map(|i| AddrRec {
                ip: std::net::IpAddr::from([10, (agent % 250) as u8, (n % 250) as u8, i]),
                asn: 64_512,
            })
            .collect(),
        ns: Vec::new(),
        fp: n,
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = flux_tests::bench_args(
        "fleet-bench",
        "usage: fleet-bench [AGENTS [SECONDS [OBSERVATIONS/S [VERDICTS/S]]]]",
        &[],
        &[],
        4,
    );
    let agents: usize = arg(&args, 1, 50)?;
    let secs: u64 = arg(&args, 2, 30)?;
    let obs_rate: u32 = arg(&args, 3, OBS_PER_SEC)?;
    let verdict_rate: u32 = arg(&args, 4, VERDICTS_PER_SEC)?;
    let ids: Vec<String> = (0..agents).map(|i| format!("b{i:03}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let lab = NatsLab::start(&id_refs);
    let url = format!("nats://127.0.0.1:{NATS_PORT}");
    let sims: Vec<SimAgent> = ids
        .iter()
        .map(|id| {
            let a = lab.agent(id);
            SimAgent::start(&lab.ns, &url, id, &a.creds, &a.key, &lab.trust)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sims
        .iter()
        .all(|s| s.stats.connected.load(std::sync::atomic::Ordering::Relaxed))
    {
        anyhow::ensure!(Instant::now() < deadline, "agents did not connect");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let every durable consumer be created before the clock starts.
    std::thread::sleep(Duration::from_secs(3));
    for s in &sims {
        s.drain();
    }

    let (cpu0, _) = lab.usage().unwrap_or((0.0, 0));
    // The simulated agents' own CPU (this process): on a shared machine it says whether they,
    // not the broker, were the limit.
    let (own0, _) = proc_usage(std::process::id()).unwrap_or((0.0, 0));
    let mut verdicts_handed = 0u64;
    let t0 = Instant::now();
    let mut max_rss = 0u64;
    let mut latencies: Vec<u64> = Vec::new();
    let mut n = 0u64;
    let tick = Duration::from_millis(50);
    let ticks_per_sec = 20;
    let mut tick_no: u64 = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        tick_no += 1;
        for (i, s) in sims.iter().enumerate() {
            // Spread each agent's per-second sends over the ticks of the second.
            for _ in 0..per_tick(obs_rate, tick_no, ticks_per_sec) {
                n += 1;
                s.send_obs(obs(i, n));
            }
            for _ in 0..per_tick(verdict_rate, tick_no + i as u64, ticks_per_sec) {
                s.send_verdict(&format!("v{n}.{}.bench.test", s.id));
                verdicts_handed += 1;
            }
        }
        collect(&sims, &mut latencies);
        if tick_no.is_multiple_of(ticks_per_sec)
            && let Some((_, rss)) = lab.usage()
        {
            max_rss = max_rss.max(rss);
        }
        std::thread::sleep(tick);
    }
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, rss) = lab.usage().unwrap_or((0.0, 0));
    let (own1, _) = proc_usage(std::process::id()).unwrap_or((0.0, 0));
    // What is still in flight arrives within a few seconds.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) {
        collect(&sims, &mut latencies);
        std::thread::sleep(tick);
    }
    latencies.sort_unstable();
    let total = |f: fn(&flux_agent::fleet::fleet_stats::FleetSnapshot) -> u64| -> u64 {
        sims.iter().map(|s| f(&s.stats.snapshot(&s.id))).sum()
    };
    let sent = total(|s| s.sent);
    let published = total(|s| s.published);
    let backlog = total(|s| s.backlog);
    let duplicate_acks = total(|s| s.sent_duplicates);
    let retries = total(|s| s.publish_retries);
    let rejected: u64 = sims
        .iter()
        .map(|s| {
            s.stats
                .snapshot(&s.id)
                .rejected
                .iter()
                .map(|r| r.1)
                .sum::<u64>()
        })
        .sum();
    let doc = serde_json::json!({
        "agents": agents,
        "seconds": secs,
        "obs_per_sec_per_agent": obs_rate,
        "verdicts_per_sec_per_agent": verdict_rate,
        "observations_handed": n,
        "verdicts_handed": verdicts_handed,
        "messages_published": published,
        "messages_stored": sent,
        "backlog_at_end": backlog,
        // Retries after a late acknowledgement, which the server dropped by `Nats-Msg-Id`.
        "publish_retries": retries,
        "acknowledged_as_duplicate": duplicate_acks,
        "verdict_receipts": latencies.len(),
        // Every verdict at every other agent; fewer means some were still in flight when the
        // run's settling time ended.
        "verdict_receipts_expected": verdicts_handed * (agents as u64).saturating_sub(1),
        "rejected": rejected,
        "latency_ms": {
            "p50": percentile(&latencies, 0.50),
            "p99": percentile(&latencies, 0.99),
            "max": latencies.last().copied().unwrap_or(0),
        },
        "agents_cpu_percent_of_one_core": ((own1 - own0) / wall * 100.0 * 10.0).round() / 10.0,
        "broker": {
            "cpu_percent_of_one_core": ((cpu1 - cpu0) / wall * 100.0 * 10.0).round() / 10.0,
            "rss_mib_end": rss / 1024,
            "rss_mib_max": max_rss.max(rss) / 1024,
        },
    });
    println!("{doc:#}");
    Ok(())
}

/// How many sends of a `rate`-per-second stream fall in tick `t` of `per_sec` ticks a second.
fn per_tick(rate: u32, t: u64, per_sec: u64) -> u64 {
    let rate = u64::from(rate);
    (t * rate / per_sec) - ((t - 1) * rate / per_sec)
}

fn collect(sims: &[SimAgent], latencies: &mut Vec<u64>) {
    for s in sims {
        for i in s.drain() {
            if let Inbound::Verdict {
                msg, received_ms, ..
            } = i
            {
                latencies.push(received_ms.saturating_sub(msg.verdict_ts_ms));
            }
        }
    }
}
