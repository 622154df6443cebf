//! `flux-agent export`: what the agent found (the verdict journal) or blocked (live block
//! entries), from the state database, as a STIX 2.1 bundle, a MISP event, CSV, a hosts file or
//! a plain list (`flux_state::export`; the field mapping is in docs/state.md). Reads the
//! database only; never the maps.

use std::{
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use flux_state::{
    Level, SourceFilter, Store,
    export::{self, ExportFormat, Producer},
};

use super::StateArgs;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// stix (2.1 bundle), misp (event JSON), csv, hosts or plain.
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    pub format: ExportFormat,
    /// Only what was added or last seen within DUR (e.g. 24h, 7d). Default: everything.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Whose blocks: scorer, feed, manual, fleet or all. Verdicts come with the scorer.
    #[arg(long, value_name = "SOURCE", default_value = "all", value_parser = parse_source)]
    pub source: SourceFilter,
    /// The lowest verdict level exported (suspicious or flux); blocks have none and are all
    /// exported.
    #[arg(long, value_name = "LEVEL", default_value = "suspicious", value_parser = parse_level)]
    pub min_level: Level,
    /// Write to FILE (replaced whole, through a temporary file) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
}

fn parse_format(s: &str) -> Result<ExportFormat, String> {
    s.parse().map_err(|e: flux_state::BadValue| e.to_string())
}

fn parse_source(s: &str) -> Result<SourceFilter, String> {
    s.parse().map_err(|e: flux_state::BadValue| e.to_string())
}

fn parse_level(s: &str) -> Result<Level, String> {
    match s.parse() {
        Ok(Level::Benign) => Err("suspicious or flux".into()),
        Ok(l) => Ok(l),
        Err(e) => Err(flux_state::BadValue::to_string(&e)),
    }
}

/// This host's name, for the STIX identity and the MISP event's title.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let Some(path) = args.state.path() else {
        anyhow::bail!(
            "export reads the state database; with --no-state there is nothing to export"
        );
    };
    let store = Store::open_read_only(&path)?;
    let now = SystemTime::now();
    let since = args
        .since
        .map(|d| now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH));
    let set = store.export_query(since, args.source, args.min_level, now)?;
    let items = export::indicators(&set);
    let producer = Producer {
        name: host_name(),
        now,
    };
    match &args.output {
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            export::write(args.format, &items, &producer, &mut out)?;
            out.flush()?;
        }
        Some(file) => write_file(file, |w| export::write(args.format, &items, &producer, w))
            .with_context(|| format!("write {}", file.display()))?,
    }
    log::info!("exported {} indicators", items.len());
    Ok(ExitCode::SUCCESS)
}

/// Writes `file` whole or not at all: a temporary file beside it, renamed over it.
fn write_file(
    file: &Path,
    f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let r = (|| {
        let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
        f(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    match r {
        Ok(()) => std::fs::rename(&tmp, file),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_benign_is_refused() {
        assert_eq!(parse_format("stix"), Ok(ExportFormat::Stix));
        assert!(parse_format("yaml").is_err());
        assert_eq!(parse_source("manual"), Ok(SourceFilter::Manual));
        assert_eq!(parse_level("flux"), Ok(Level::Flux));
        assert!(parse_level("benign").is_err());
    }
}
