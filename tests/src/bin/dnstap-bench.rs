//! `cargo xtask bench` (dnstap): how many dnstap messages one core takes in.
//!
//! Real responses (the shared `real-benign/home-resolver.pcap.gz` by default, or `--pcap
//! FILE`) are written as N dnstap CLIENT_RESPONSE frames (`--frames N`, default 1,000,000,
//! cycling through the capture with its clock moved on each cycle) to a dnstap file, then read
//! back twice on one thread:
//! 1. decode only: Frame Streams, the dnstap protobuf, the DNS wire parser;
//! 2. the whole ingest: the same through `flux-agent replay`'s pipeline, scorer included;
//! 3. for comparison, the same N responses as a pcap through the same replay.
//!
//! The live socket adds one unix-socket read per frame and a channel hop to the same work.
//! Figures, not assertions: they go in docs/benchmarks.md.

use std::{
    io::{BufWriter, Write as _},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use flux_agent::pipeline::replay_source;
use flux_detect::{
    capture_file::{self, DEFAULT_PORTS, ReadStats},
    dns::parse_response,
    enrich::{Enricher, default_db_dir},
    known_good::Allowlist,
    resolver_logs::{
        self,
        dnstap::{self, DnstapResponse, DnstapStats, ResponseKind},
        frame_streams::{self, ControlKind},
    },
    score::{Scorer, ScorerConfig},
};
use flux_tests::eval::pcapw::{Response, write_pcap};

fn main() -> anyhow::Result<()> {
    let args = flux_tests::bench_args(
        "dnstap-bench",
        "usage: dnstap-bench [--pcap FILE] [--frames N] [--json]",
        &["--pcap", "--frames"],
        &["--json"],
        0,
    );
    let pcap = flux_tests::flag_value(&args, "--pcap").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/datasets/real-benign/home-resolver.pcap.gz")
        },
        PathBuf::from,
    );
    let frames: u64 = flux_tests::flag_value(&args, "--frames")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut responses: Vec<(SystemTime, DnstapResponse)> = Vec::new();
    let mut read = ReadStats::default();
    capture_file::read_file(&pcap, &DEFAULT_PORTS, &mut read, |c| {
        if parse_response(&c.payload, c.truncated).is_ok() {
            responses.push((
                c.ts,
                DnstapResponse {
                    kind: ResponseKind::Client,
                    ts: Some(c.ts),
                    responder: Some(c.src),
                    responder_port: c.sport,
                    querier: Some(c.dst),
                    querier_port: c.dport,
                    transport: c.transport,
                    message: c.payload.to_vec(),
                },
            ));
        }
    })
    .with_context(|| format!("read {}", pcap.display()))?;
    anyhow::ensure!(
        !responses.is_empty(),
        "no DNS responses in {}",
        pcap.display()
    );
    // In time order, as the pcap writer of the comparison (3.) puts them.
    responses.sort_by_key(|r| r.0);
    let first = responses
        .first()
        .map(|r| r.0)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let last = responses.last().map(|r| r.0).unwrap_or(first);
    let span = last.duration_since(first).unwrap_or_default() + Duration::from_secs(1);
    println!(
        "{} real responses from {}, written as {frames} dnstap frames",
        responses.len(),
        pcap.display()
    );

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("ingest-{frames}.dnstap"));
    let mut w = BufWriter::new(std::fs::File::create(&path)?);
    w.write_all(&frame_streams::control_frame(
        ControlKind::Start,
        &[dnstap::CONTENT_TYPE],
    ))?;
    let mut bytes = 0u64;
    for i in 0..frames {
        let n = responses.len() as u64;
        let (ts, r) = &responses[(i % n) as usize];
        let cycle = u32::try_from(i / n).unwrap_or(u32::MAX);
        let mut r = r.clone();
        r.ts = Some(*ts + span * cycle);
        let f = frame_streams::data_frame(&dnstap::encode_response(&r));
        bytes += f.len() as u64;
        w.write_all(&f)?;
    }
    w.write_all(&frame_streams::control_frame(ControlKind::Stop, &[]))?;
    w.flush()?;
    drop(w);
    println!(
        "{} ({:.1} MiB)",
        path.display(),
        bytes as f64 / (1 << 20) as f64
    );

    // 1. Decode only.
    let started = Instant::now();
    let mut stats = DnstapStats::default();
    let mut parsed = 0u64;
    dnstap::read_file(resolver_logs::open(&path)?, &mut stats, |r| {
        parsed += u64::from(parse_response(&r.message, false).is_ok());
    })?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "dnstap decode + DNS parse: {parsed} responses in {secs:.2} s = {:.0} responses/s (one thread)",
        parsed as f64 / secs
    );

    // 2. The whole ingest, scorer included; 3. the same responses from a pcap.
    let db = default_db_dir();
    let enricher = Arc::new(Enricher::load_dir(&db).unwrap_or_else(|_| Enricher::empty()));
    println!("{}", enricher.describe());
    let pcap_path = dir.join(format!("ingest-{frames}.pcap"));
    let mut as_pcap: Vec<Response> = (0..frames)
        .filter_map(|i| {
            let n = responses.len() as u64;
            let (ts, r) = responses.get((i % n) as usize)?;
            let cycle = u32::try_from(i / n).unwrap_or(u32::MAX);
            Some(Response {
                ts: (*ts + span * cycle)
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()?,
                resolver: r.responder?,
                port: r.querier_port,
                payload: r.message.clone(),
            })
        })
        .collect();
    write_pcap(&pcap_path, &mut as_pcap)?;
    drop(as_pcap);
    for (what, file) in [("dnstap", &path), ("pcap (same responses)", &pcap_path)] {
        let mut scorer = Scorer::new(
            ScorerConfig::default(),
            Arc::clone(&enricher),
            Arc::new(Allowlist::builtin()),
        );
        let s = replay_source::replay(
            std::slice::from_ref(file),
            &DEFAULT_PORTS,
            &mut scorer,
            |_| {},
        );
        println!(
            "{what} ingest (decode + parse + score): {} responses in {:.2} s = {:.0} responses/s \
             (one thread); {} keys, {} verdicts",
            s.parsed + s.malformed,
            s.elapsed_s,
            s.responses_per_s,
            s.scorer.keys_tracked,
            s.verdicts
        );
    }
    Ok(())
}
