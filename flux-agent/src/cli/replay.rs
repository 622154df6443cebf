//! `flux-agent replay`: score capture files offline.

use std::{
    collections::HashMap,
    io::{self, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;
use flux_agent::pipeline::{
    bus::Bus,
    events::EventKind,
    replay_source::{self, ReplaySummary},
    sinks::{EventFormat, write_event},
};
use flux_detect::{
    capture_file::DEFAULT_PORTS,
    score::{Features, Verdict},
};

use super::scoring::ScoringArgs;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// pcap or pcapng files (Ethernet, Linux SLL/SLL2, raw IP), Zeek dns.log files (TSV or
    /// JSON) or dnstap files, each optionally gzip-compressed; told apart by content.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// One JSON object per line: a verdict per level change, then a summary.
    #[arg(long)]
    pub json: bool,

    /// Source port counted as DNS (repeatable). Default: 53, 5353, 5355.
    #[arg(long = "dns-port", value_name = "PORT")]
    pub dns_ports: Vec<u16>,

    #[command(flatten)]
    pub scoring: ScoringArgs,
}

/// Replays the files. Exit status 1 when any input could not be opened or read (each is named
/// in the summary, on stderr, and under the table), even if the others were replayed: a run
/// that silently skipped an input must not look complete to a script.
pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut scorer = args.scoring.setup()?.build();
    let ports = if args.dns_ports.is_empty() {
        DEFAULT_PORTS.to_vec()
    } else {
        args.dns_ports.clone()
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let mut write_err: Option<io::Error> = None;
    // The verdicts are the bus's `verdict` events, written as they come (inline: a replay
    // waits for its output rather than drop any of it).
    let mut bus = Bus::new();
    if args.json {
        bus.subscribe_inline(&[EventKind::Verdict], |e| {
            if write_err.is_none()
                && let Err(e) = write_event(&mut out, EventFormat::Json, e)
            {
                write_err = Some(e);
            }
        });
    }
    let bar = progress_bar(args.json);
    let replayed =
        replay_source::replay_with_progress(&args.files, &ports, &mut scorer, bus, &mut |p| {
            if let Some(bar) = &bar {
                bar.set_position(p.responses);
                if p.file_start {
                    bar.set_message(format!(
                        "file {}/{}: {}",
                        p.file_index + 1,
                        p.files,
                        p.file.display()
                    ));
                }
            }
        });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = &replayed.summary;
    if let Some(e) = write_err {
        return Err(e).context("write verdicts");
    }
    if args.json {
        serde_json::to_writer(&mut out, summary)?;
        out.write_all(b"\n")?;
    } else {
        let flagged = replayed.flagged.current();
        print_table(&mut out, &flagged, &replayed.at_end, summary)?;
    }
    out.flush().context("write output")?;
    if summary.failed_files.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &summary.failed_files {
        eprintln!(
            "flux-agent: could not read {}: {}",
            f.path.display(),
            f.error
        );
    }
    Ok(ExitCode::FAILURE)
}

/// A spinner on stderr with the responses read, their rate and the file: only on a terminal,
/// and never with `--json` (a script reads that output; indicatif also hides itself when
/// stderr is not a terminal).
fn progress_bar(json: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal as _;
    if json || !io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {elapsed} {human_pos} responses ({per_sec}) {wide_msg}",
    )
    .ok()?;
    bar.set_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(bar)
}

/// The flagged keys: level, score and reasons of the verdict that flagged them; the address,
/// ASN, country and TTL columns as the key stood at the end of the replay (`at_end`), so a
/// name that kept rotating after it was flagged shows all it showed.
fn print_table(
    w: &mut impl Write,
    flagged: &[&Verdict],
    at_end: &HashMap<String, Features>,
    s: &ReplaySummary,
) -> io::Result<()> {
    if flagged.is_empty() {
        writeln!(w, "No domain flagged.")?;
    } else {
        writeln!(
            w,
            "{:<40} {:<10} {:>5} {:>4} {:>4} {:>4} {:>6}  REASONS",
            "DOMAIN", "LEVEL", "SCORE", "IPS", "ASNS", "CC", "TTL"
        )?;
        for v in flagged {
            let mut level = v.level.to_string();
            if v.double_flux {
                level.push('*');
            }
            let reasons: Vec<String> = v
                .reasons
                .iter()
                .take(3)
                .map(|r| format!("{} +{:.1}", r.feature, r.contribution))
                .collect();
            let f = at_end.get(&v.domain).unwrap_or(&v.features);
            writeln!(
                w,
                "{:<40} {:<10} {:>5.2} {:>4} {:>4} {:>4} {:>6}  {}{}",
                v.domain,
                level,
                v.score,
                f.distinct_ips,
                f.distinct_asns,
                f.distinct_countries,
                f.ttl_max,
                reasons.join(", "),
                v.allowlist_match
                    .as_ref()
                    .map(|m| format!(" [allowlisted: {m}]"))
                    .unwrap_or_default()
            )?;
        }
        writeln!(
            w,
            "(* = double flux: the name servers' glue rotates too; IPS, ASNS, CC and TTL: by the \
             end of the replay)"
        )?;
    }
    writeln!(
        w,
        "\n{} files, {} frames, {} DNS responses ({} malformed), {} keys tracked, {} flux, {} suspicious; {:.0} responses/s",
        s.files,
        s.read.frames,
        s.parsed + s.malformed,
        s.malformed,
        s.scorer.keys_tracked,
        s.flux,
        s.suspicious,
        s.responses_per_s
    )?;
    if s.zeek.rows > 0 {
        writeln!(
            w,
            "Zeek dns.log: {} rows, {} responses ({} with answers), {} duplicates dropped, {} without reply, {} bad",
            s.zeek.rows,
            s.zeek.responses,
            s.zeek.with_answers,
            s.zeek.duplicates,
            s.zeek.no_response,
            s.zeek.bad_rows
        )?;
    }
    if s.dnstap.frames > 0 {
        writeln!(
            w,
            "dnstap: {} frames, {} responses, {} other messages, {} bad",
            s.dnstap.frames, s.dnstap.responses, s.dnstap.other, s.dnstap.bad
        )?;
    }
    for f in &s.failed_files {
        writeln!(w, "could not read {}: {}", f.path.display(), f.error)?;
    }
    Ok(())
}
