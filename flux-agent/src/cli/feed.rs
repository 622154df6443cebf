//! `flux-agent feed add|list|update|remove`: threat-intelligence feeds, kept in the state
//! database and written to the pinned maps (`flux_agent::intel::feed_sync` does the work; this
//! file is arguments and output).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use flux_agent::{
    control::{self, ControlError},
    enforce::{guard::Guard, maps::Maps, record::Recorder},
    intel::feed_sync::{self, Skipped, SyncOptions, SyncReport, URL_HOST_NOTE},
};
use flux_intel::FormatChoice;
use flux_state::{Action, FeedRecord};

use super::{
    PinArgs, StateArgs,
    blocklist::{JsonArgs, open, parse_ttl},
};

#[derive(Debug, clap::Args)]
pub struct FeedArgs {
    #[command(subcommand)]
    pub command: FeedCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FeedCommand {
    /// Add a feed (a file or an http(s) URL) and load it now; again with the same NAME changes
    /// its settings and reloads it.
    Add(AddArgs),
    /// The feeds, their settings and the result of their last refresh.
    List(ListArgs),
    /// Fetch and reload one feed, or every feed (a URL is asked whether it changed).
    Update(UpdateArgs),
    /// Remove a feed and its entries (a target also blocked by another source stays blocked).
    Remove(RemoveArgs),
}

/// What `add` and `update` share.
#[derive(Debug, clap::Args)]
pub struct WriteArgs {
    /// A resolver never to block (repeatable), beside /etc/resolv.conf and the resolvers the
    /// running agent guards.
    #[arg(long = "resolver", value_name = "IP")]
    pub resolvers: Vec<std::net::IpAddr>,
    /// Block the hosts of URL indicators too. By default they are reported, not blocked:
    /// a URL indicator names a path on a host that is often shared (t.me, steamcommunity.com).
    #[arg(long)]
    pub block_url_hosts: bool,
    #[command(flatten)]
    pub common: JsonArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The feed's name; its entries carry the source `feed:NAME`.
    pub name: String,
    /// A file, or an http:// or https:// URL.
    #[arg(value_name = "PATH|URL")]
    pub location: String,
    /// auto, hosts, plain, abp, dnsmasq, csv, netset, misp or stix.
    #[arg(long, value_name = "FORMAT", default_value = "auto", value_parser = parse_format)]
    pub format: String,
    /// The CSV column to read: a 1-based number or a header name.
    #[arg(long, value_name = "N|NAME")]
    pub column: Option<String>,
    /// How often the running agent fetches a URL feed again (e.g. 1h). Default: only by
    /// `feed update`.
    #[arg(long, value_name = "DUR", value_parser = parse_ttl)]
    pub refresh: Option<Duration>,
    /// block (enforce the entries) or report (only report matches).
    #[arg(long, value_name = "ACTION", default_value = "block", value_parser = feed_sync::parse_action)]
    pub action: Action,
    /// How long each entry lasts after a refresh. Default: until the feed drops it.
    #[arg(long, value_name = "DUR", value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub write: WriteArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The feed to update. Default: every feed.
    pub name: Option<String>,
    #[command(flatten)]
    pub write: WriteArgs,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    pub name: String,
    #[command(flatten)]
    pub common: JsonArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

impl FeedCommand {
    pub fn json(&self) -> bool {
        match self {
            FeedCommand::Add(a) => a.write.common.json,
            FeedCommand::List(a) => a.json,
            FeedCommand::Update(a) => a.write.common.json,
            FeedCommand::Remove(a) => a.common.json,
        }
    }
}

fn parse_format(s: &str) -> Result<String, String> {
    s.parse::<FormatChoice>().map_err(|e| e.to_string())?;
    Ok(s.to_ascii_lowercase())
}

pub fn feed(args: FeedArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        FeedCommand::Add(a) => add(a),
        FeedCommand::List(a) => list(a),
        FeedCommand::Update(a) => update(a),
        FeedCommand::Remove(a) => remove(a),
    }
}

/// The maps and the database, or the exit code when nothing is loaded.
fn open_both(
    common: &JsonArgs,
    state: &StateArgs,
) -> anyhow::Result<Result<(Maps, Recorder), ExitCode>> {
    let Some(maps) = open(common)? else {
        return Ok(Err(ExitCode::from(3)));
    };
    let path = state.path().ok_or(feed_sync::SyncError::NoDatabase)?;
    let rec = Recorder::open(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Ok((maps, rec)))
}

/// The guard feed entries go through: as `blocklist add`'s, with the running agent's resolvers.
fn guard(w: &WriteArgs, pin: &PinArgs) -> anyhow::Result<Guard> {
    let mut resolvers = w.resolvers.clone();
    match control::ask_resolvers(&pin.pin_dir) {
        Ok(learnt) => resolvers.extend(learnt),
        Err(ControlError::NotRunning { .. }) => {}
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("cannot ask the running agent which resolvers it guards"));
        }
    }
    Ok(Guard::new(resolvers))
}

fn add(a: AddArgs) -> anyhow::Result<ExitCode> {
    feed_sync::check_name(&a.name)?;
    let w = &a.write;
    let (mut maps, mut rec) = match open_both(&w.common, &w.state)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let guard = guard(w, &w.common.pin)?;
    let store = rec.store_mut().ok_or(feed_sync::SyncError::NoDatabase)?;
    let previous = store.feed(&a.name)?;
    let rec_row = FeedRecord {
        ttl: a.ttl,
        refresh: a.refresh,
        ..FeedRecord::new(
            &a.name,
            &a.location,
            &feed_sync::format_text(&a.format, a.column.as_deref()),
            a.action,
        )
    };
    store.upsert_feed(&rec_row)?;
    let opts = SyncOptions {
        block_url_hosts: w.block_url_hosts,
        fresh: true,
    };
    match feed_sync::sync(&mut rec, &mut maps, &guard, &a.name, &opts) {
        Ok(r) => print_reports(&[r], w.common.json, true)?,
        Err(e) => {
            // Nothing changed: a new feed that cannot load is not kept, a feed re-added with
            // settings that cannot load keeps its old ones (and its entries, as `sync` did).
            if let Some(s) = rec.store_mut() {
                let undo = match &previous {
                    None => s.remove_feed(&a.name).map(drop),
                    Some(p) => s.upsert_feed(p),
                };
                if let Err(u) = undo {
                    log::warn!("feed {}: {u}", a.name);
                }
            }
            return Err(e.into());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn update(a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let w = &a.write;
    let (mut maps, mut rec) = match open_both(&w.common, &w.state)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let guard = guard(w, &w.common.pin)?;
    let store = rec.store_mut().ok_or(feed_sync::SyncError::NoDatabase)?;
    let names: Vec<String> = match &a.name {
        Some(n) => vec![n.clone()],
        None => store.feeds()?.into_iter().map(|f| f.name).collect(),
    };
    let opts = SyncOptions {
        block_url_hosts: w.block_url_hosts,
        fresh: false,
    };
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for n in &names {
        match feed_sync::sync(&mut rec, &mut maps, &guard, n, &opts) {
            Ok(r) => reports.push(r),
            Err(e) => errors.push(e),
        }
    }
    // One failed feed must not hide the others' results; the command fails with all of them.
    if errors.is_empty() {
        print_reports(&reports, w.common.json, a.name.is_some())?;
        return Ok(ExitCode::SUCCESS);
    }
    if !w.common.json {
        print_reports(&reports, false, a.name.is_some())?;
    }
    let msg: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    Err(anyhow::anyhow!("{}", msg.join("; ")))
}

fn remove(a: RemoveArgs) -> anyhow::Result<ExitCode> {
    let (mut maps, mut rec) = match open_both(&a.common, &a.state)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    match feed_sync::remove(&mut rec, &mut maps, &a.name)? {
        Some(n) => {
            if a.common.json {
                out!(
                    "{}",
                    serde_json::json!({ "removed": a.name, "map_entries_removed": n })
                );
            } else {
                out!(
                    "removed feed {}: {n} map entries removed (targets another source holds stay)",
                    a.name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        None => Err(feed_sync::SyncError::NoFeed(a.name).into()),
    }
}

fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let path = a.state.path().ok_or(feed_sync::SyncError::NoDatabase)?;
    let feeds = if path.exists() {
        flux_state::Store::open_read_only(&path)?.feeds()?
    } else {
        Vec::new()
    };
    if a.json {
        out!("{}", serde_json::to_string(&feeds)?);
        return Ok(ExitCode::SUCCESS);
    }
    if feeds.is_empty() {
        out!("no feeds");
        return Ok(ExitCode::SUCCESS);
    }
    let dur = |d: Option<Duration>| {
        d.map(|d| humantime::format_duration(d).to_string())
            .unwrap_or_else(|| "-".into())
    };
    out!(
        "{:<16} {:<8} {:<7} {:>9} {:<8} {:<8} {:<20} {:<24} LOCATION",
        "NAME",
        "FORMAT",
        "ACTION",
        "ENTRIES",
        "REFRESH",
        "TTL",
        "LAST REFRESH",
        "LAST RESULT"
    );
    for f in feeds {
        out!(
            "{:<16} {:<8} {:<7} {:>9} {:<8} {:<8} {:<20} {:<24} {}",
            f.name,
            f.format,
            f.action.as_str(),
            f.entry_count,
            dur(f.refresh),
            dur(f.ttl),
            f.last_refresh
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_else(|| "never".into()),
            f.last_result.unwrap_or_default(),
            f.location
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// With `--json`: one object for one named feed (`add`, `update NAME`), an array for `update`
/// of every feed (however many there are).
fn print_reports(reports: &[SyncReport], json: bool, named: bool) -> anyhow::Result<()> {
    if json {
        let v = match reports {
            [one] if named => serde_json::to_value(one)?,
            many => serde_json::to_value(many)?,
        };
        out!("{v}");
        return Ok(());
    }
    if reports.is_empty() {
        out!("no feeds");
    }
    for r in reports {
        print_report(r)?;
    }
    Ok(())
}

fn more(shown: usize, total: usize) -> String {
    if total > shown {
        format!(" and {} more", total - shown)
    } else {
        String::new()
    }
}

fn print_report(r: &SyncReport) -> anyhow::Result<()> {
    if r.result == "not modified" {
        out!("feed {}: not modified ({} entries kept)", r.feed, r.entries);
        return Ok(());
    }
    out!(
        "feed {}: {} entries ({}), {} added to the maps, {} removed, in {} ms",
        r.feed,
        r.entries,
        r.format.as_deref().unwrap_or("?"),
        r.added,
        r.removed,
        r.elapsed_ms
    );
    if r.warning_count > 0 {
        out!("  {} lines did not load:", r.warning_count);
        for w in &r.warnings {
            out!("    line {}: {}", w.line, w.message);
        }
        if r.warning_count > r.warnings.len() {
            out!("    ...{}", more(r.warnings.len(), r.warning_count));
        }
    }
    let why = |v: &[_]| -> Vec<String> {
        v.iter()
            .map(|s: &Skipped| format!("{} ({})", s.target, s.why))
            .collect()
    };
    let skipped: [(&str, usize, Vec<String>, &str); 4] = [
        (
            "entries skipped, never to be blocked",
            r.guarded_count,
            why(&r.guarded),
            "",
        ),
        (
            "entries skipped, on the allowlist",
            r.allowlisted_count,
            r.allowlisted.clone(),
            "",
        ),
        ("names refused", r.invalid_count, why(&r.invalid), ""),
        (
            "URL hosts reported, not blocked",
            r.url_hosts_count,
            r.url_hosts.clone(),
            URL_HOST_NOTE,
        ),
    ];
    for (what, count, list, note) in skipped.iter().filter(|s| s.1 > 0) {
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" ({note})")
        };
        out!(
            "  {count} {what}: {}{}{note}",
            list.join(", "),
            more(list.len(), *count)
        );
    }
    Ok(())
}
