//! Time from the deciding DNS response to the block being in the map (`cargo xtask bench`).
//!
//! Each flux domain's responses go through the real XDP program (BPF_PROG_TEST_RUN), the ring
//! buffer, the parser, the scorer and the enforcer, which writes the pinned map. The latency of
//! one block is CLOCK_MONOTONIC right after the map write minus CLOCK_MONOTONIC read just before
//! the test run of the response that tipped the verdict (not the record's own stamp, which is
//! the coarse clock's: a tick, 4 ms at HZ=250, is more than the whole path). Not included: the
//! wait for the ring buffer's wakeup in a running agent, which depends on how busy it is
//! (ringbuf-load measures that, live under dnsperf load).
//!
//! `--json` prints one JSON document (what `cargo xtask bench` reads); errors too.

use std::{sync::Arc, time::SystemTime};

use aya::{
    TestRunOptions,
    programs::{TestRun as _, Xdp},
};
use flux_agent::{
    enforce::policy::{EnforceOptions, Enforcer, Outcome, TargetKind},
    kernel::loader::LoadOptions,
    kernel::ring_records::Capture,
    pipeline::{clock::monotonic_ns, events::Observation},
};
use flux_common::PROG_XDP;
use flux_detect::{
    enrich::Enricher,
    known_good::Allowlist,
    score::{Scorer, ScorerConfig},
};
use flux_tests::frames::{dns_answer, udp4};

fn main() -> std::process::ExitCode {
    let args = flux_tests::bench_args(
        "block-latency",
        "usage: block-latency [--domains N] [--json]",
        &["--domains"],
        &["--json"],
        0,
    );
    let json = args.iter().any(|a| a == "--json");
    match measure(&args) {
        Ok(doc) => {
            if json {
                println!("{doc}");
            } else {
                println!(
                    "deciding response -> domain block in the map: {} of {} domains blocked; \
                     p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (kernel capture, ring buffer, \
                     parse, score, guards, map writes for the name and its addresses)",
                    doc["blocks"],
                    doc["domains"],
                    f(&doc, "p50_us"),
                    f(&doc, "p99_us"),
                    f(&doc, "max_us")
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"bench": "block-latency", "error": format!("{e:#}")})
                );
            } else {
                eprintln!("block-latency: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn f(doc: &serde_json::Value, k: &str) -> f64 {
    doc.get(k)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn measure(args: &[String]) -> anyhow::Result<serde_json::Value> {
    let domains: u32 = flux_tests::flag_value(args, "--domains")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(1000);
    let pin = flux_tests::PinDir::new();
    let (mut loaded, mut ring) = flux_tests::load_with_ring(LoadOptions {
        pin_dir: pin.0.clone(),
        ..Default::default()
    })?;
    let mut scorer = Scorer::new(
        // Block on the first confirmed flux score: the default hold (minutes of evidence)
        // would never pass in a run this short, and is not part of the path measured here.
        ScorerConfig {
            block_hold_minutes: 0,
            ..ScorerConfig::default()
        },
        Arc::new(Enricher::empty()),
        Arc::new(Allowlist::builtin()),
    );
    let mut enforcer = Enforcer::new(
        &pin.0,
        EnforceOptions {
            max_per_minute: u32::MAX,
            ..EnforceOptions::default()
        },
    )?;
    let mut lat_us: Vec<f64> = Vec::new();
    let mut verdicts = Vec::new();
    let mut actions = Vec::new();
    for d in 0..domains {
        // Six names under one domain, five addresses each, every address in its own /16: the
        // shape the live test flags within six responses.
        'names: for n in 0..6u32 {
            let addrs: Vec<[u8; 4]> = (0..5u32)
                .map(|i| [10, (n * 5 + i) as u8, (d % 250) as u8, (d / 250 + 1) as u8])
                .collect();
            let frame = udp4(53, &dns_answer(&format!("v{n}.d{d}.bench"), &addrs, 60));
            let prog: &mut Xdp = loaded
                .ebpf
                .program_mut(PROG_XDP)
                .ok_or_else(|| anyhow::anyhow!("no {PROG_XDP}"))?
                .try_into()?;
            let mut out = vec![0u8; frame.len() + 64];
            let arrived = monotonic_ns();
            prog.test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })?;
            while let Some(rec) = ring.next() {
                let c = Capture::from_record(&rec)?;
                let obs = Observation::from_capture(&c, SystemTime::now(), "bench".into())?;
                scorer.observe(obs.ts, &obs.msg, &mut verdicts);
                for v in verdicts.drain(..) {
                    enforcer.on_verdict(&v, &scorer, &mut actions);
                }
                let blocked = actions.drain(..).any(|a| {
                    a.action == Outcome::Blocked && a.target_kind == Some(TargetKind::Domain)
                });
                if blocked {
                    lat_us.push((monotonic_ns() - arrived) as f64 / 1000.0);
                    break 'names;
                }
            }
        }
    }
    anyhow::ensure!(!lat_us.is_empty(), "no domain was blocked");
    lat_us.sort_by(f64::total_cmp);
    let pct = |p: f64| lat_us[((lat_us.len() - 1) as f64 * p).round() as usize];
    let doc = serde_json::json!({
        "bench": "block-latency",
        "domains": domains,
        "blocks": lat_us.len(),
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "max_us": lat_us[lat_us.len() - 1],
    });
    drop(enforcer);
    loaded.unpin_maps();
    Ok(doc)
}
