//! Offline replay: capture files through the same parser and scorer as live traffic.
//!
//! Packet timestamps are the clock, so windows and time-to-detect are in observation time.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Instant, SystemTime},
};

use serde::Serialize;

use flux_detect::{
    capture_file::{self, ReadStats},
    dns::{DnsMessage, parse_response},
    score::{Level, Scorer, ScorerStats, Verdict},
};

/// What a replay saw. Printed as the final `{"type":"summary"}` line.
#[derive(Clone, Debug, Serialize)]
pub struct ReplaySummary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub files: u64,
    /// Files that could not be read at all, with the reason.
    pub failed_files: Vec<FileError>,
    #[serde(flatten)]
    pub read: ReadStats,
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

/// The last verdict of every key that was ever flagged.
#[derive(Default)]
pub struct Flagged {
    pub last: HashMap<String, Verdict>,
}

impl Flagged {
    pub fn record(&mut self, v: &Verdict) {
        self.last.insert(v.domain.clone(), v.clone());
    }

    /// Keys still suspicious or flux, highest score first.
    pub fn current(&self) -> Vec<&Verdict> {
        let mut v: Vec<&Verdict> = self
            .last
            .values()
            .filter(|v| v.level != Level::Benign)
            .collect();
        v.sort_by(|a, b| {
            b.level
                .cmp(&a.level)
                .then(b.score.total_cmp(&a.score))
                .then(a.domain.cmp(&b.domain))
        });
        v
    }
}

/// Replays `paths` in order through `scorer`, calling `on_verdict` for every level change.
/// Unreadable files are reported in the summary; bad packets are counted, never fatal.
pub fn replay(
    paths: &[PathBuf],
    ports: &[u16],
    scorer: &mut Scorer,
    on_verdict: impl FnMut(&Verdict),
) -> ReplaySummary {
    replay_with(paths, ports, scorer, |_, _| {}, on_verdict)
}

/// [`replay`], also calling `on_message` with every parsed response before it is scored.
pub fn replay_with(
    paths: &[PathBuf],
    ports: &[u16],
    scorer: &mut Scorer,
    mut on_message: impl FnMut(SystemTime, &DnsMessage),
    mut on_verdict: impl FnMut(&Verdict),
) -> ReplaySummary {
    let started = Instant::now();
    let mut read = ReadStats::default();
    let mut failed_files = Vec::new();
    let (mut parsed, mut malformed) = (0u64, 0u64);
    let mut flagged = Flagged::default();
    let mut verdicts = Vec::new();
    let mut n_verdicts = 0u64;
    for path in paths {
        let r = capture_file::read_file(path, ports, &mut read, |c| {
            match parse_response(&c.payload, c.truncated) {
                Ok(msg) => {
                    parsed += 1;
                    on_message(c.ts, &msg);
                    verdicts.clear();
                    scorer.observe(c.ts, &msg, &mut verdicts);
                    for v in &verdicts {
                        n_verdicts += 1;
                        flagged.record(v);
                        on_verdict(v);
                    }
                }
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
        if let Err(e) = r {
            log::warn!("{e}");
            failed_files.push(FileError {
                path: path.clone(),
                error: e.to_string(),
            });
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let current = flagged.current();
    ReplaySummary {
        kind: "summary",
        files: paths.len() as u64,
        failed_files,
        read,
        parsed,
        malformed,
        verdicts: n_verdicts,
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
    }
}

/// Checks up front that every input can be opened, so a typo fails before minutes of work.
pub fn check_inputs(paths: &[PathBuf]) -> Result<(), String> {
    for p in paths {
        if let Err(e) = std::fs::File::open(p) {
            return Err(format!("cannot open {}: {e}", p.display()));
        }
        if Path::new(p).is_dir() {
            return Err(format!(
                "{} is a directory; give capture files",
                p.display()
            ));
        }
    }
    Ok(())
}
