//! Offline replay: capture files as the source of the same pipeline as live traffic
//! ([`crate::pipeline::flow`]), with the same parser.
//!
//! Beside pcap and pcapng, a file may be a resolver's log, told by its content
//! (`flux_detect::resolver_logs::sniff`): a Zeek `dns.log` (TSV or JSON; each row with a reply
//! becomes the observation its response would have parsed to) or a dnstap file
//! ([`crate::pipeline::dnstap_input`]).
//!
//! Packet (or row, or message) timestamps are the clock, so windows and time-to-detect are in
//! observation time.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use serde::Serialize;

pub use crate::pipeline::flow::Flagged;
use crate::pipeline::{
    bus::Bus,
    dnstap_input,
    events::{Event, EventKind, Observation},
    flow::{Pipeline, ReadAhead},
};
use flux_detect::{
    capture_file::{self, CapturedRef, ReadStats},
    dns::{DnsMessage, parse_response},
    resolver_logs::{
        self, InputKind,
        dnstap::DnstapStats,
        zeek::{self, ZeekDns, ZeekStats},
    },
    score::{Features, Level, Scorer, ScorerStats, Verdict},
};

/// The `"type"` of the replay's summary line. It is not a bus event: it closes the stream.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SummaryTag {
    Summary,
}

/// What a replay saw. Printed as the final `{"type":"summary"}` line.
#[derive(Clone, Debug, Serialize)]
pub struct ReplaySummary {
    #[serde(rename = "type")]
    pub kind: SummaryTag,
    pub files: u64,
    /// Files that could not be opened or read (with the reason): the others are still
    /// replayed, and `flux-agent replay` exits 1.
    pub failed_files: Vec<FileError>,
    #[serde(flatten)]
    pub read: ReadStats,
    /// Zeek `dns.log` rows (`zeek_*`), zero without such files.
    #[serde(flatten)]
    pub zeek: ZeekStats,
    /// dnstap frames (`dnstap_*`), zero without such files.
    #[serde(flatten)]
    pub dnstap: DnstapStats,
    /// DNS responses the parser accepted, and the ones it rejected (malformed messages).
    pub parsed: u64,
    pub malformed: u64,
    pub verdicts: u64,
    /// Keys whose last level was suspicious / flux when the replay ended.
    pub suspicious: u64,
    pub flux: u64,
    pub scorer: ScorerStats,
    pub elapsed_s: f64,
    /// Parsed-and-scored DNS responses per second of wall time.
    pub responses_per_s: f64,
    /// Estimate of the scorer's memory at the end.
    pub scorer_memory_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FileError {
    pub path: PathBuf,
    pub error: String,
}

/// What [`replay_with`] returns.
pub struct Replayed {
    pub summary: ReplaySummary,
    /// The last verdict of every key that was flagged.
    pub flagged: Flagged,
    /// The features of every flagged key at the end of the replay (re-scored at the last
    /// observation's time): a verdict holds the evidence of the moment its level changed, which
    /// can be a fraction of what the name showed by the end.
    pub at_end: HashMap<String, Features>,
}

/// Replays `paths` in order through `scorer`, calling `on_verdict` for every level change.
/// Unreadable files are reported in the summary; bad packets are counted, never fatal.
pub fn replay(
    paths: &[PathBuf],
    ports: &[u16],
    scorer: &mut Scorer,
    on_verdict: impl FnMut(&Verdict),
) -> ReplaySummary {
    let mut on_verdict = on_verdict;
    let mut bus = Bus::new();
    bus.subscribe_inline(&[EventKind::Verdict], |e| {
        if let Event::Verdict(v) = e {
            on_verdict(v);
        }
    });
    replay_with(paths, ports, scorer, bus).summary
}

/// [`replay`] through the pipeline, publishing on `bus` (subscribe inline: a replay loses
/// nothing, it waits). Also returns the last verdict of every key that was flagged, and its
/// features at the end. A file that cannot be opened is reported at once (a typo shows before
/// minutes of work) and in the summary; the other files are still replayed.
pub fn replay_with(
    paths: &[PathBuf],
    ports: &[u16],
    scorer: &mut Scorer,
    bus: Bus<'_>,
) -> Replayed {
    replay_with_progress(paths, ports, scorer, bus, &mut |_| {})
}

/// Where a replay stands, for a progress display: the file being read and the DNS responses
/// read so far (all files).
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub file: &'a Path,
    pub file_index: usize,
    pub files: usize,
    pub responses: u64,
    /// The call at the start of `file` (the others come every [`PROGRESS_EVERY`] responses).
    pub file_start: bool,
}

/// Responses between two progress calls: often enough for a display refreshed several times a
/// second at a few hundred thousand responses a second, rare enough to cost nothing.
pub const PROGRESS_EVERY: u64 = 16_384;

/// [`replay_with`], calling `progress` at the start of each file and every
/// [`PROGRESS_EVERY`] responses of a capture file.
pub fn replay_with_progress(
    paths: &[PathBuf],
    ports: &[u16],
    scorer: &mut Scorer,
    bus: Bus<'_>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Replayed {
    let started = Instant::now();
    let mut read = ReadStats::default();
    let mut failed_files = unopenable(paths);
    for f in &failed_files {
        log::warn!("{}; the other files are still replayed", f.error);
    }
    let mut malformed = 0u64;
    let (mut zeek_stats, mut dnstap_stats) = (ZeekStats::default(), DnstapStats::default());
    let mut p = Pipeline::new(Some(&mut *scorer), None, bus).track_flagged();
    let mut responses = 0u64;
    for (file_index, path) in paths.iter().enumerate() {
        if failed_files.iter().any(|f| f.path == *path) {
            continue;
        }
        let at = |responses, file_start| Progress {
            file: path,
            file_index,
            files: paths.len(),
            responses,
            file_start,
        };
        progress(at(responses, true));
        let kind =
            resolver_logs::sniff(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        let r = match kind {
            Ok(InputKind::Capture) => {
                // One response read ahead ([`ReadAhead`]). Each message is parsed where the
                // reader lent it: nothing but the parse keeps it.
                let mut ahead = ReadAhead::default();
                let r = capture_file::read_file_each(path, ports, &mut read, |c| {
                    responses += 1;
                    if responses.is_multiple_of(PROGRESS_EVERY) {
                        progress(at(responses, false));
                    }
                    match parse_response(c.payload, c.truncated) {
                        Ok(msg) => ahead.push(&mut p, observation(&c, msg)),
                        Err(e) => {
                            malformed += 1;
                            log::debug!(
                                "{}: malformed DNS response from {}: {e}",
                                path.display(),
                                c.src
                            );
                        }
                    }
                });
                // The last response, and the one before a read error.
                ahead.flush(&mut p);
                r.map_err(|e| e.to_string())
            }
            Ok(InputKind::Zeek) => replay_zeek(path, &mut zeek_stats, &mut p),
            Ok(InputKind::Dnstap) => {
                dnstap_input::replay_file(path, &mut dnstap_stats, &mut malformed, &mut p)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            log::warn!("{e}");
            failed_files.push(FileError {
                path: path.clone(),
                error: e,
            });
        }
    }
    let last_ts = p.latest_ts();
    let (bus, counts, flagged) = p.finish();
    // Inline subscribers only: nothing queued to wait for.
    drop(bus);
    let flagged = flagged.unwrap_or_default();
    let elapsed = started.elapsed().as_secs_f64();
    let current = flagged.current();
    let parsed = counts.observations;
    let summary = ReplaySummary {
        kind: SummaryTag::Summary,
        files: paths.len() as u64,
        failed_files,
        read,
        zeek: zeek_stats,
        dnstap: dnstap_stats,
        parsed,
        malformed,
        verdicts: counts.verdicts,
        suspicious: current
            .iter()
            .filter(|v| v.level == Level::Suspicious)
            .count() as u64,
        flux: current.iter().filter(|v| v.level == Level::Flux).count() as u64,
        scorer: scorer.stats(),
        elapsed_s: (elapsed * 1000.0).round() / 1000.0,
        responses_per_s: if elapsed > 0.0 {
            ((parsed + malformed) as f64 / elapsed).round()
        } else {
            0.0
        },
        scorer_memory_bytes: scorer.memory_estimate() as u64,
    };
    let at_end = match last_ts {
        Some(now) => current
            .iter()
            .filter_map(|v| Some((v.domain.clone(), scorer.explain(&v.domain, now)?.features)))
            .collect(),
        None => HashMap::new(),
    };
    Replayed {
        summary,
        flagged,
        at_end,
    }
}

/// A response read from a file as the pipeline's observation: the file's clock, no interface.
fn observation(c: &CapturedRef<'_>, msg: DnsMessage) -> Observation {
    let len = u16::try_from(c.payload.len()).unwrap_or(u16::MAX);
    Observation {
        ts: c.ts,
        iface: Arc::default(),
        ifindex: 0,
        src: c.src,
        dst: c.dst,
        sport: c.sport,
        dport: c.dport,
        transport: c.transport,
        vlan: c.vlan.to_vec(),
        dns_len: len,
        cap_len: len,
        truncated: c.truncated,
        blocked: false,
        would_block: false,
        // A file holds what was captured, not whether this host asked: replay trusts it, as
        // the operator chose the file.
        fragmented: false,
        unsolicited: false,
        msg,
    }
}

/// Replays a Zeek `dns.log` (gzip-compressed or not) into `p`.
fn replay_zeek(path: &Path, stats: &mut ZeekStats, p: &mut Pipeline<'_>) -> Result<(), String> {
    let r =
        resolver_logs::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    zeek::read_zeek(r, stats, |z| p.observe(zeek_observation(z)))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A `dns.log` row as the pipeline's observation: the row's clock, who answered as the source.
/// The message's length on the wire is unknown (0).
fn zeek_observation(z: ZeekDns) -> Observation {
    Observation {
        ts: z.ts,
        iface: Arc::default(),
        ifindex: 0,
        src: z.server,
        dst: z.client,
        sport: z.server_port,
        dport: z.client_port,
        transport: z.transport,
        vlan: Vec::new(),
        dns_len: 0,
        cap_len: 0,
        truncated: false,
        blocked: false,
        would_block: false,
        fragmented: false,
        // As for capture files: the operator chose the log.
        unsolicited: false,
        msg: z.msg,
    }
}

/// The inputs that cannot be opened as files (missing, unreadable, a directory), with why.
fn unopenable(paths: &[PathBuf]) -> Vec<FileError> {
    paths
        .iter()
        .filter_map(|p| {
            let error = match std::fs::File::open(p) {
                Err(e) => format!("cannot open {}: {e}", p.display()),
                Ok(_) if Path::new(p).is_dir() => {
                    format!("{} is a directory; give capture files", p.display())
                }
                Ok(_) => return None,
            };
            Some(FileError {
                path: p.clone(),
                error,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_and_directories_are_unopenable() {
        let dir = std::env::temp_dir();
        let missing = dir.join("flux-agent-no-such-file.pcap");
        let bad = unopenable(&[missing.clone(), dir.clone()]);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].path, missing);
        assert!(bad[0].error.starts_with("cannot open "), "{}", bad[0].error);
        assert!(bad[1].error.contains("is a directory"), "{}", bad[1].error);
    }
}
