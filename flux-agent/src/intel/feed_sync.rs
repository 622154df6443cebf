//! One feed brought in line with its source: fetch (conditional, with the validators the state
//! database kept) → parse → filter (the guard, the allowlist, URL hosts) → check the maps have
//! room → `Store::apply_feed` (one transaction: the old set or the new one, never a mix) → the
//! maps through `Recorder::apply`. Any fatal problem (unreachable, unknown format, truncated,
//! nothing parses, larger than a map) happens **before** the database swap, keeps the previous
//! entries whole, and is recorded as the feed's `last_result`.
//!
//! Also the running agent's refresher ([`spawn_refresher`]): a thread of its own that updates the
//! URL feeds whose `--refresh` interval has passed. The CLI's `feed update` calls [`sync`] the
//! same way; both write the same database and maps.
//!
//! May touch: the feed's file or URL, the state database and the pinned maps (through
//! `enforce::record::Recorder` and `enforce::maps::Maps`).

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use flux_intel::{
    CsvColumn, FeedError, FeedSet, FormatChoice, ParseOptions, Warning,
    feed_fetch::{self, FetchError, FetchOptions, Fetched, Source as FeedSource},
    parse_feed,
};
use flux_state::{Action, EffectiveEntry, Entry, FeedFetch, FeedRecord, Kind, Source, StateError};
use log::{info, warn};
use serde::Serialize;

use crate::{
    enforce::{
        guard::Guard,
        maps::{BlocklistError, Maps, Room, Target},
        record::{Recorder, to_state},
    },
    intel::feed_match::{FeedIndex, SharedIndex},
};

/// How many skipped or warned items a report names (the rest are counted): enough to see what
/// kind of problem it is without a screenful per feed.
pub const SHOW_FIRST: usize = 5;

/// How often the refresher looks for a feed due: the finest `--refresh` that makes sense is
/// seconds (tests use 2 s); a look is one small SELECT.
const REFRESH_TICK: Duration = Duration::from_secs(1);

/// Why a URL indicator's host is reported rather than blocked by default.
pub const URL_HOST_NOTE: &str = "a URL indicator names a path on a host that is often shared \
                                 (t.me, steamcommunity.com); blocking the whole host would \
                                 block everyone on it (--block-url-hosts blocks them)";

/// How many new map entries are prepared at once: enough that the per-chunk cost vanishes,
/// small enough that a million-entry feed does not hold a million prepared entries.
const APPLY_CHUNK: usize = 10_000;

/// Longest feed name: it is part of the 24-byte reason in the maps (`feed:NAME`).
const MAX_NAME_LEN: usize = 32;

/// How to treat a feed's entries.
#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// Block the hosts of URL indicators too.
    pub block_url_hosts: bool,
    /// Fetch without the stored validators (a new feed, or changed settings).
    pub fresh: bool,
}

/// One target left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub target: String,
    pub why: String,
}

/// What was left out of a feed's set, and what remains to write.
#[derive(Clone, Debug, Default)]
pub struct Filtered {
    pub targets: Vec<Target>,
    /// Refused by the guard (resolvers, gateways, this host, special ranges, 0.0.0.0/0).
    pub guarded: Vec<Skipped>,
    /// On the allowlist.
    pub allowlisted: Vec<String>,
    /// Hosts of URL indicators, reported not blocked.
    pub url_hosts: Vec<String>,
    /// Names the maps refuse (a public suffix).
    pub invalid: Vec<Skipped>,
}

/// Splits a parsed feed into what may be blocked and what is skipped. `allowed` says whether
/// the allowlist covers a target.
pub fn filter(
    set: &FeedSet,
    guard: &Guard,
    allowed: &dyn Fn(&Target) -> bool,
    opts: &SyncOptions,
) -> Filtered {
    let mut f = Filtered::default();
    let keep = |f: &mut Filtered, t: Target| {
        if let Err(r) = guard.check(&t) {
            f.guarded.push(Skipped {
                target: t.to_string(),
                why: r.rule,
            });
        } else if allowed(&t) {
            f.allowlisted.push(t.to_string());
        } else {
            f.targets.push(t);
        }
    };
    for d in &set.domains {
        if !opts.block_url_hosts && set.url_hosts.contains(d) {
            f.url_hosts.push(d.clone());
            continue;
        }
        match Target::domain(d) {
            Ok(t) => keep(&mut f, t),
            Err(e) => f.invalid.push(Skipped {
                target: d.clone(),
                why: match e {
                    BlocklistError::BadDomain(_, why) => why,
                    other => other.to_string(),
                },
            }),
        }
    }
    let ips = set.ipv4.iter().map(|a| IpAddr::V4(*a));
    for ip in ips.chain(set.ipv6.iter().map(|a| IpAddr::V6(*a))) {
        keep(&mut f, Target::Ip(ip));
    }
    for net in &set.cidrs {
        keep(&mut f, Target::Cidr(net.network(), net.prefix_len()));
    }
    f
}

/// A fatal problem: the feed's previous entries are kept whole.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("feeds need the state database (run without --no-state, or fix the file named above)")]
    NoDatabase,
    #[error("no feed named '{0}' (see `flux-agent feed list`)")]
    NoFeed(String),
    #[error("invalid feed name '{0}': 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error("feed {feed}: {source}; its previous entries are kept")]
    Fetch {
        feed: String,
        #[source]
        source: Box<FetchError>,
    },
    #[error("feed {feed}: {source}; its previous entries are kept")]
    Parse {
        feed: String,
        #[source]
        source: Box<FeedError>,
    },
    #[error(
        "feed {feed} does not fit the {} map: it holds {} entries, the feed adds {} more, \
         and its size is {} (a larger map: a future --max-blocked-* option); its previous \
         entries are kept", room.map, room.present, room.missing, room.capacity
    )]
    TooLarge { feed: String, room: Box<Room> },
    #[error("feed {feed}: {source}")]
    State {
        feed: String,
        #[source]
        source: Box<StateError>,
    },
    #[error(
        "feed {feed}: the database holds the new set but a map write failed ({source}); the \
         next agent start brings the maps in line"
    )]
    Maps {
        feed: String,
        #[source]
        source: Box<BlocklistError>,
    },
}

/// What one sync did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncReport {
    pub feed: String,
    /// `updated` or `not modified`.
    pub result: String,
    /// The format it was read as.
    pub format: Option<String>,
    /// The feed's entries in the database now.
    pub entries: usize,
    /// Map entries written / removed.
    pub added: usize,
    pub removed: usize,
    /// The first [`SHOW_FIRST`] warnings (bad lines) and their count.
    pub warnings: Vec<Warning>,
    pub warning_count: usize,
    pub guarded: Vec<Skipped>,
    pub guarded_count: usize,
    pub allowlisted: Vec<String>,
    pub allowlisted_count: usize,
    pub url_hosts: Vec<String>,
    pub url_hosts_count: usize,
    pub invalid: Vec<Skipped>,
    pub invalid_count: usize,
    pub elapsed_ms: u128,
}

/// A feed name: part of the source `feed:NAME` and the map's reason.
pub fn check_name(name: &str) -> Result<(), SyncError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SyncError::BadName(name.to_owned()))
    }
}

/// The stored format: `auto`, a format name, or `csv:COLUMN` with a chosen column.
pub fn format_text(format: &str, column: Option<&str>) -> String {
    match column {
        Some(c) => format!("{format}:{c}"),
        None => format.to_owned(),
    }
}

/// The parse options of a stored format (see [`format_text`]).
pub fn parse_options(stored: &str, file_name: Option<String>) -> Result<ParseOptions, FeedError> {
    let (format, column) = match stored.split_once(':') {
        Some((f, c)) => (f, Some(c)),
        None => (stored, None),
    };
    Ok(ParseOptions {
        format: format.parse::<FormatChoice>()?,
        csv_column: column.map(|c| match c.parse::<CsvColumn>() {
            Ok(col) => col,
            Err(never) => match never {},
        }),
        file_name,
    })
}

fn first<T: Clone>(items: &[T]) -> Vec<T> {
    items.iter().take(SHOW_FIRST).cloned().collect()
}

/// Brings feed `name` in line with its source. A fatal problem is recorded as the feed's
/// `last_result` and returned; the previous entries stay.
pub fn sync(
    rec: &mut Recorder,
    maps: &mut Maps,
    guard: &Guard,
    name: &str,
    opts: &SyncOptions,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let now = SystemTime::now();
    let state = |source| SyncError::State {
        feed: name.to_owned(),
        source: Box::new(source),
    };
    let store = rec.store_mut().ok_or(SyncError::NoDatabase)?;
    let feed = store
        .feed(name)
        .map_err(state)?
        .ok_or_else(|| SyncError::NoFeed(name.to_owned()))?;
    let result = prepare(maps, guard, &feed, opts);
    let (parsed_report, entries, fetch) = match result {
        Ok(Prepared::NotModified) => {
            store
                .record_feed_result(name, now, "not modified")
                .map_err(state)?;
            return Ok(SyncReport {
                feed: name.to_owned(),
                result: "not modified".into(),
                entries: usize::try_from(feed.entry_count).unwrap_or(usize::MAX),
                elapsed_ms: started.elapsed().as_millis(),
                ..SyncReport::default()
            });
        }
        Ok(Prepared::Entries(b)) => *b,
        Err(e) => {
            let _ = store.record_feed_result(name, now, &format!("failed: {e}"));
            return Err(e);
        }
    };
    let applied = store.apply_feed(name, &entries, &fetch).map_err(state)?;
    let mut added: Vec<EffectiveEntry> = Vec::new();
    // Rows the feed already held that changed (an expiry renewed once less than half the ttl
    // was left, see `flux_state::RENEW_BELOW`; another action or reason): their map entries
    // are rewritten from all their sources, so a permanent manual block on the same target
    // stays permanent. An unchanged refresh writes no map entry.
    if feed.action.enforced() {
        for (kind, target) in &applied.renewed {
            let rows = store.entries_for(*kind, target).map_err(state)?;
            added.extend(flux_state::fold_effective(rows));
        }
    }
    let mut report = parsed_report;
    report.entries = applied.count;
    let map_err = |source| SyncError::Maps {
        feed: name.to_owned(),
        source: Box::new(source),
    };
    report.added = rec.apply(maps, &added, &[]).map_err(map_err)?;
    drop(added);
    // The new targets, a chunk at a time: a million map entries are not a million
    // `EffectiveEntry`s in memory at once.
    for chunk in applied.added.chunks(APPLY_CHUNK) {
        let batch: Vec<EffectiveEntry> = chunk
            .iter()
            .map(|(kind, target)| effective(*kind, target.clone(), &feed, now))
            .collect();
        // One entry at a time (`apply`), not `apply_new`: the batched path reads the whole map's
        // keys once per call to find the ones already there, and a hundred chunks of a million
        // entries made that quadratic (17 s of system time for a million addresses).
        report.added += rec.apply(maps, &batch, &[]).map_err(map_err)?;
    }
    report.removed = rec
        .apply(maps, &[], &applied.gone)
        .map_err(|source| SyncError::Maps {
            feed: name.to_owned(),
            source: Box::new(source),
        })?;
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}

enum Prepared {
    NotModified,
    Entries(Box<(SyncReport, Vec<Entry>, FeedFetch)>),
}

/// Fetch, parse, filter and the capacity check: everything that may fail before the swap.
fn prepare(
    maps: &Maps,
    guard: &Guard,
    feed: &FeedRecord,
    opts: &SyncOptions,
) -> Result<Prepared, SyncError> {
    let src = FeedSource::parse(&feed.location);
    // A feed with --ttl is fetched in full every time: its entries' expiry is renewed by a
    // load, and a 304 would let them run out while the feed still lists them.
    let conditional = !opts.fresh && feed.ttl.is_none();
    let fetch_opts = FetchOptions {
        etag: feed.etag.clone().filter(|_| conditional),
        last_modified: feed.last_modified.clone().filter(|_| conditional),
        ..FetchOptions::default()
    };
    let fetch_err = |source| SyncError::Fetch {
        feed: feed.name.clone(),
        source: Box::new(source),
    };
    let (bytes, etag, last_modified) = match feed_fetch::fetch(&src, &fetch_opts) {
        Ok(Fetched::NotModified) => return Ok(Prepared::NotModified),
        Ok(Fetched::Body {
            bytes,
            etag,
            last_modified,
        }) => (bytes, etag, last_modified),
        Err(e) => return Err(fetch_err(e)),
    };
    let parse_err = |source| SyncError::Parse {
        feed: feed.name.clone(),
        source: Box::new(source),
    };
    let popts = parse_options(&feed.format, src.file_name()).map_err(parse_err)?;
    let parsed = parse_feed(&bytes, &popts).map_err(parse_err)?;
    drop(bytes);
    // One read of the allowlist maps, not a lookup for each of a million entries.
    let allow = maps.allow_snapshot().map_err(|source| SyncError::Maps {
        feed: feed.name.clone(),
        source: Box::new(source),
    })?;
    let allowed = |t: &Target| match t {
        Target::Domain(d) => allow.domain_allowed(d),
        Target::Ip(ip) | Target::Cidr(ip, _) => allow.address_allowed(ip),
    };
    let f = filter(&parsed.set, guard, &allowed, opts);
    if feed.action.enforced() {
        let rooms = maps
            .room_for(&f.targets)
            .map_err(|source| SyncError::Maps {
                feed: feed.name.clone(),
                source: Box::new(source),
            })?;
        if let Some(room) = rooms.into_iter().find(|r| !r.fits()) {
            return Err(SyncError::TooLarge {
                feed: feed.name.clone(),
                room: Box::new(room),
            });
        }
    }
    let now = SystemTime::now();
    let reason = Source::feed(&feed.name).to_string();
    let expires = feed.ttl.and_then(|d| now.checked_add(d));
    let entries: Vec<Entry> = f
        .targets
        .iter()
        .map(|t| Entry {
            action: feed.action,
            expires,
            added: now,
            ..Entry::block(to_state(Kind::Block, t), Source::feed(&feed.name), &reason)
        })
        .collect();
    let report = SyncReport {
        feed: feed.name.clone(),
        result: "updated".into(),
        format: Some(parsed.format.name().to_owned()),
        warnings: first(&parsed.warnings),
        warning_count: parsed.warnings.len() + parsed.warnings_dropped,
        guarded: first(&f.guarded),
        guarded_count: f.guarded.len(),
        allowlisted: first(&f.allowlisted),
        allowlisted_count: f.allowlisted.len(),
        url_hosts: first(&f.url_hosts),
        url_hosts_count: f.url_hosts.len(),
        invalid: first(&f.invalid),
        invalid_count: f.invalid.len(),
        ..SyncReport::default()
    };
    let fetch = FeedFetch {
        etag,
        last_modified,
        at: Some(now),
    };
    Ok(Prepared::Entries(Box::new((report, entries, fetch))))
}

/// The map entry of a target only this feed holds (what `apply_feed` calls `added`).
fn effective(
    kind: Kind,
    target: flux_state::Target,
    feed: &FeedRecord,
    now: SystemTime,
) -> EffectiveEntry {
    EffectiveEntry {
        kind,
        target,
        action: feed.action,
        sources: vec![Source::feed(&feed.name)],
        score: None,
        added: now,
        expires: feed.ttl.and_then(|d| now.checked_add(d)),
        reason: Source::feed(&feed.name).to_string(),
        subdomains: true,
    }
}

/// Removes feed `name` and its entries; a target another source holds keeps its block.
/// Returns the map entries removed, or `None` when there was no such feed.
pub fn remove(rec: &mut Recorder, maps: &mut Maps, name: &str) -> Result<Option<usize>, SyncError> {
    let store = rec.store_mut().ok_or(SyncError::NoDatabase)?;
    let Some(removed) = store.remove_feed(name).map_err(|source| SyncError::State {
        feed: name.to_owned(),
        source: Box::new(source),
    })?
    else {
        return Ok(None);
    };
    rec.apply(maps, &[], &removed.gone)
        .map(Some)
        .map_err(|source| SyncError::Maps {
            feed: name.to_owned(),
            source: Box::new(source),
        })
}

/// Whether a feed is due for the refresher: a URL with a `--refresh` interval that has passed.
pub fn due(feed: &FeedRecord, now: SystemTime) -> bool {
    let Some(every) = feed.refresh else {
        return false;
    };
    if !matches!(FeedSource::parse(&feed.location), FeedSource::Url(_)) {
        return false;
    }
    feed.last_refresh
        .and_then(|t| t.checked_add(every))
        .is_none_or(|next| next <= now)
}

/// What the refresher needs.
pub struct Refresher {
    pub state: PathBuf,
    pub pin_dir: PathBuf,
    /// `--resolver`s (the running agent's learnt ones are asked for at each refresh).
    pub resolvers: Vec<IpAddr>,
    /// Where the feed lookup the pipeline matches against is published.
    pub index: SharedIndex,
    /// `--metrics`: each feed's entries and refresh results, read from the database, so the
    /// CLI's `feed add`/`update` count as well as this thread's refreshes.
    pub metrics: Option<crate::ops::metrics::Metrics>,
}

/// The running agent's feed refresher: its own thread, never the capture path. Every
/// [`REFRESH_TICK`] it reads the feed list and syncs the URL feeds that are due ([`due`]), each
/// with the same [`sync`] as `feed update`; and when the feeds changed (here or by the CLI) it
/// rebuilds the lookup ([`FeedIndex`]) and publishes it. Stops when `stop` is set and the
/// thread is unparked (its wait between ticks is a park, so the stop is seen at once); its
/// database connection closes then, which lets SQLite fold the WAL back into the file.
pub fn spawn_refresher(
    r: Refresher,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("feed-refresh".into())
        .spawn(move || {
            let mut ctx: Option<(Recorder, Maps)> = None;
            let mut published: Option<u64> = None;
            let mut reported = ReportedFeeds::default();
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(REFRESH_TICK);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if ctx.is_none() {
                    ctx = open_for_refresh(&r.state, &r.pin_dir);
                }
                let Some((rec, maps)) = ctx.as_mut() else {
                    continue;
                };
                refresh_due(rec, maps, &r.pin_dir, &r.resolvers);
                // The feed list as the refresh left it, read once for the lookup and the metrics.
                let Some(Ok(feeds)) = rec.store_mut().map(|s| s.feeds()) else {
                    continue;
                };
                republish(rec, &feeds, &r.index, &mut published);
                if let Some(m) = &r.metrics {
                    reported.report(&feeds, m);
                }
            }
        })
}

/// What the metrics were last told of each feed: its last refresh time.
#[derive(Default)]
struct ReportedFeeds(std::collections::HashMap<String, Option<SystemTime>>);

impl ReportedFeeds {
    /// Sets each feed's entry gauge; counts a refresh whenever a feed's `last_refresh` moved
    /// (a refresh before the agent started only sets the gauges); forgets removed feeds. The
    /// time is stored in whole seconds and read every [`REFRESH_TICK`]: refreshes of one feed
    /// within the same second (a script's `feed update` twice) count once.
    fn report(&mut self, feeds: &[FeedRecord], m: &crate::ops::metrics::Metrics) {
        let mut now: std::collections::HashMap<String, Option<SystemTime>> = Default::default();
        for f in feeds {
            let fm = m.feed(&f.name);
            fm.set_entries(f.entry_count);
            let ok = f
                .last_result
                .as_deref()
                .is_some_and(|r| r.starts_with("ok") || r == "not modified");
            match (self.0.get(&f.name), f.last_refresh) {
                (Some(before), Some(at)) if *before != Some(at) => fm.refreshed(ok, at),
                (None, Some(at)) => fm.last_refresh(ok, at),
                _ => {}
            }
            now.insert(f.name.clone(), f.last_refresh);
        }
        for gone in self.0.keys().filter(|k| !now.contains_key(*k)) {
            m.forget_feed(gone);
        }
        self.0 = now;
    }
}

/// A digest of what the feed lookup is built from: each feed's name, location, action, entry
/// count and validators, and the time of its last good load (a `feed add`/`update` by the CLI
/// changes it too).
fn feeds_digest(feeds: &[FeedRecord]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in feeds {
        (&f.name, &f.location, f.action.as_str(), f.entry_count).hash(&mut h);
        (&f.etag, &f.last_modified).hash(&mut h);
        let ok = f
            .last_result
            .as_deref()
            .is_some_and(|r| r.starts_with("ok"));
        ok.then_some(f.last_refresh).hash(&mut h);
    }
    h.finish()
}

/// Rebuilds and publishes the feed lookup when the feeds changed since the last one.
fn republish(
    rec: &mut Recorder,
    feeds: &[FeedRecord],
    index: &SharedIndex,
    published: &mut Option<u64>,
) {
    let Some(store) = rec.store_mut() else { return };
    let digest = feeds_digest(feeds);
    if *published == Some(digest) {
        return;
    }
    let started = Instant::now();
    match FeedIndex::load(store, SystemTime::now()) {
        Ok(ix) => {
            info!(
                "feed lookup: {} indicators of {} feeds, built in {} ms",
                ix.len(),
                feeds.len(),
                started.elapsed().as_millis()
            );
            index.publish(ix);
            *published = Some(digest);
        }
        Err(e) => warn!("feed lookup not rebuilt: {e}"),
    }
}

fn open_for_refresh(
    state: &std::path::Path,
    pin_dir: &std::path::Path,
) -> Option<(Recorder, Maps)> {
    let rec = Recorder::open(state).ok()?;
    let maps = Maps::open(pin_dir).ok()?;
    Some((rec, maps))
}

fn refresh_due(
    rec: &mut Recorder,
    maps: &mut Maps,
    pin_dir: &std::path::Path,
    resolvers: &[IpAddr],
) {
    let now = SystemTime::now();
    let feeds = match rec.store_mut().map(|s| s.feeds()) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            warn!("feed refresh: {e}");
            return;
        }
        None => return,
    };
    let due: BTreeSet<String> = feeds
        .iter()
        .filter(|f| due(f, now))
        .map(|f| f.name.clone())
        .collect();
    if due.is_empty() {
        return;
    }
    let mut all = resolvers.to_vec();
    if let Ok(learnt) = crate::control::ask_resolvers(pin_dir) {
        all.extend(learnt);
    }
    let guard = Guard::new(all);
    for name in due {
        match sync(rec, maps, &guard, &name, &SyncOptions::default()) {
            Ok(r) => info!(
                "feed {name}: {} ({} entries, {} added, {} removed)",
                r.result, r.entries, r.added, r.removed
            ),
            Err(e) => warn!("{e}"),
        }
    }
}

/// `block` or `report`, for `--action`.
pub fn parse_action(s: &str) -> Result<Action, String> {
    match s {
        "block" => Ok(Action::Block),
        "report" => Ok(Action::Report),
        _ => Err("block or report".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(domains: &[&str], ips: &[&str], cidrs: &[&str]) -> FeedSet {
        let mut s = FeedSet {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ..FeedSet::default()
        };
        for ip in ips {
            match ip.parse::<IpAddr>().unwrap() {
                IpAddr::V4(a) => s.ipv4.insert(a),
                IpAddr::V6(a) => s.ipv6.insert(a),
            };
        }
        s.cidrs = cidrs.iter().map(|c| c.parse().unwrap()).collect();
        s
    }

    #[test]
    fn the_guard_keeps_resolvers_loopback_and_everything_out() {
        let resolver: IpAddr = "198.51.100.53".parse().unwrap();
        let guard = Guard::new(vec![resolver]);
        let s = set(
            &["flux.example.com"],
            &["198.51.100.53", "127.0.0.1", "192.0.2.7"],
            &["0.0.0.0/0", "198.51.100.0/24", "203.0.113.0/24"],
        );
        let f = filter(&s, &guard, &|_| false, &SyncOptions::default());
        let kept: Vec<String> = f.targets.iter().map(|t| t.to_string()).collect();
        assert_eq!(kept, ["flux.example.com", "192.0.2.7", "203.0.113.0/24"]);
        let guarded: Vec<&str> = f.guarded.iter().map(|s| s.target.as_str()).collect();
        assert_eq!(
            guarded,
            ["127.0.0.1", "198.51.100.53", "0.0.0.0/0", "198.51.100.0/24"]
        );
        assert!(f.guarded[1].why.contains("resolver"), "{:?}", f.guarded);
    }

    #[test]
    fn url_hosts_are_reported_unless_asked_and_the_allowlist_wins() {
        let mut s = set(&["t.me", "evil.example.net", "good.example.org"], &[], &[]);
        s.url_hosts.insert("t.me".into());
        let allowed = |t: &Target| t.to_string() == "good.example.org";
        let f = filter(&s, &Guard::default(), &allowed, &SyncOptions::default());
        assert_eq!(f.url_hosts, ["t.me"]);
        assert_eq!(f.allowlisted, ["good.example.org"]);
        assert_eq!(f.targets, [Target::Domain("evil.example.net".into())]);
        let opts = SyncOptions {
            block_url_hosts: true,
            ..SyncOptions::default()
        };
        let f = filter(&s, &Guard::default(), &allowed, &opts);
        assert!(f.url_hosts.is_empty());
        assert_eq!(f.targets.len(), 2);
    }

    #[test]
    fn a_public_suffix_is_refused_not_blocked() {
        let s = set(&["co.uk", "bad.co.uk"], &[], &[]);
        let f = filter(&s, &Guard::default(), &|_| false, &SyncOptions::default());
        assert_eq!(f.targets, [Target::Domain("bad.co.uk".into())]);
        assert_eq!(f.invalid.len(), 1);
        assert!(f.invalid[0].why.contains("public suffix"));
    }

    #[test]
    fn names_formats_and_due() {
        assert!(check_name("urlhaus-1.x_y").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(33)).is_err());
        let o = parse_options(&format_text("csv", Some("3")), None).unwrap();
        assert_eq!(o.csv_column, Some(CsvColumn::Index(2)));
        assert!(parse_options("bogus", None).is_err());
        let now = SystemTime::now();
        let mut f = FeedRecord::new("x", "http://127.0.0.1/f", "auto", Action::Block);
        assert!(!due(&f, now), "no interval: by hand only");
        f.refresh = Some(Duration::from_secs(60));
        assert!(due(&f, now), "never fetched");
        f.last_refresh = Some(now - Duration::from_secs(10));
        assert!(!due(&f, now));
        f.last_refresh = Some(now - Duration::from_secs(61));
        assert!(due(&f, now));
        f.location = "/etc/feed.txt".into();
        assert!(!due(&f, now), "a file is updated by hand");
    }
}
