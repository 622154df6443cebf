//! SIGHUP in `flux-agent run`: reopen the events file (logrotate moves it, then signals), read
//! the configuration file again, rebuild the allowlist from its files, and sync the feeds; one
//! log line says what changed (`reload: config unchanged, allowlist +3 -1, feeds 2 unchanged,
//! events reopened`).
//!
//! What a reload can change while running is [`LIVE_KEYS`]; any other key changed in the file
//! is named in a warning saying a restart applies it (the maps, attachments, sockets and
//! scorer limits are set up once).
//!
//! Runs on a blocking thread of its own ([`Reloader::reload`]); the run loop only receives the
//! new allowlist (`pipeline::live::Sinks::allowlists`). May touch: the configuration,
//! allowlist and feed files, the state database and the blocklist maps (feeds, as `feed
//! update` does), the events file (through its [`EventsControl`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    path::PathBuf,
    sync::Arc,
};

use flux_agent::{
    config::ConfigFile,
    enforce::{guard::Guard, maps::Maps, record::Recorder},
    intel::{
        feed_match::{FeedIndex, SharedIndex},
        feed_sync::{self, SyncOptions},
    },
    pipeline::sinks::EventsControl,
};
use flux_detect::known_good::Allowlist;
use log::warn;

use super::config_command::{self, Merged};

/// The `run` options (clap argument ids) a reload applies without a restart.
pub const LIVE_KEYS: &[&str] = &[
    "allowlist",
    "no_default_allowlist",
    "events_max_size",
    "events_keep",
];

/// The options a reload applies, as in force.
struct LiveSettings {
    allowlist_files: Vec<PathBuf>,
    no_default_allowlist: bool,
    events_max_size: u64,
    events_keep: u32,
}

impl LiveSettings {
    fn of(m: &Merged) -> Self {
        Self {
            allowlist_files: m.args.scoring.allowlist.clone(),
            no_default_allowlist: m.args.scoring.no_default_allowlist,
            events_max_size: m.args.events_max_size,
            events_keep: m.args.events_keep,
        }
    }
}

/// The feeds' part of a reload: the database, the maps and where the lookup is published.
pub struct FeedReload {
    pub state: PathBuf,
    pub pin_dir: PathBuf,
    pub resolvers: Vec<std::net::IpAddr>,
    pub index: SharedIndex,
}

/// What a reload starts from: the running agent's settings.
pub struct Reloader {
    argv: Vec<OsString>,
    config_flag: Option<PathBuf>,
    /// Every option's raw value in force (what the file changed is compared with it).
    raw: BTreeMap<String, Vec<String>>,
    live: LiveSettings,
    allowlist: BTreeSet<String>,
    allowlist_tx: tokio::sync::mpsc::UnboundedSender<Arc<Allowlist>>,
    events: Option<EventsControl>,
    feeds: Option<FeedReload>,
}

impl Reloader {
    /// `argv`: the command line; `merged`: the settings it and the file gave at start;
    /// `allowlist`: the allowlist the scorer started with.
    pub fn new(
        argv: Vec<OsString>,
        merged: &Merged,
        allowlist: &Allowlist,
        allowlist_tx: tokio::sync::mpsc::UnboundedSender<Arc<Allowlist>>,
        events: Option<EventsControl>,
        feeds: Option<FeedReload>,
    ) -> Self {
        Self {
            argv,
            config_flag: merged.args.config.clone(),
            raw: merged.raw.clone(),
            live: LiveSettings::of(merged),
            allowlist: allowlist.entries(),
            allowlist_tx,
            events,
            feeds,
        }
    }

    /// Reloads everything and returns the line that says what changed.
    pub fn reload(&mut self) -> String {
        let parts = [
            Some(self.reload_config()),
            Some(self.reload_allowlist()),
            self.reload_feeds(),
            self.reopen_events(),
        ];
        format!(
            "reload: {}",
            parts.into_iter().flatten().collect::<Vec<_>>().join(", ")
        )
    }

    fn reload_config(&mut self) -> String {
        let path = config_command::config_path(self.config_flag.as_deref());
        let merged = path
            .as_deref()
            .map(ConfigFile::load)
            .transpose()
            .map_err(anyhow::Error::from)
            .and_then(|file| config_command::merge(&self.argv, file.as_ref()));
        let m = match merged {
            Ok(m) => m,
            Err(e) => {
                warn!("reload: the configuration is not applied: {e:#}");
                return "config refused (running settings kept)".into();
            }
        };
        let changed: BTreeSet<String> = m
            .raw
            .keys()
            .chain(self.raw.keys())
            .filter(|k| m.raw.get(*k) != self.raw.get(*k))
            .cloned()
            .collect();
        let (live, restart): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|k| LIVE_KEYS.contains(&k.as_str()));
        if !restart.is_empty() {
            warn!(
                "reload: {} changed in the configuration; restart flux-agent to apply (only {} \
                 change while it runs)",
                restart.join(", "),
                LIVE_KEYS.join(", ")
            );
        }
        let line = match (live.is_empty(), restart.is_empty()) {
            (true, true) => "config unchanged".to_owned(),
            _ => format!(
                "config {}{}",
                if live.is_empty() {
                    String::new()
                } else {
                    format!("{} applied", live.join(" "))
                },
                if restart.is_empty() {
                    String::new()
                } else {
                    format!(
                        "{}{} need a restart",
                        if live.is_empty() { "" } else { "; " },
                        restart.join(" ")
                    )
                }
            ),
        };
        // What cannot change live stays as started, so it is reported again next time.
        for k in live {
            match m.raw.get(&k) {
                Some(v) => self.raw.insert(k, v.clone()),
                None => self.raw.remove(&k),
            };
        }
        self.live = LiveSettings::of(&m);
        line
    }

    fn reload_allowlist(&mut self) -> String {
        let mut a = if self.live.no_default_allowlist {
            Allowlist::empty()
        } else {
            Allowlist::builtin()
        };
        for f in &self.live.allowlist_files {
            if let Err(e) = a.add_file(f) {
                warn!("reload: the allowlist is not changed: {e}");
                return "allowlist refused (kept)".into();
            }
        }
        let now = a.entries();
        let added = now.difference(&self.allowlist).count();
        let removed = self.allowlist.difference(&now).count();
        if added + removed == 0 {
            return format!("allowlist {} unchanged", now.len());
        }
        if self.allowlist_tx.send(Arc::new(a)).is_err() {
            return "allowlist not applied (the run is ending)".into();
        }
        self.allowlist = now;
        format!("allowlist +{added} -{removed}")
    }

    /// Syncs every feed again (a file feed is re-read, a URL fetched) and republishes the
    /// lookup; `None` without a state database.
    fn reload_feeds(&mut self) -> Option<String> {
        let f = self.feeds.as_ref()?;
        Some(match sync_feeds(f) {
            Ok((0, _)) => "no feeds".into(),
            Ok((n, changed)) if changed.is_empty() => format!("feeds {n} unchanged"),
            Ok((n, changed)) => format!(
                "feeds {n} ({} changed: {})",
                changed.len(),
                changed.join(" ")
            ),
            Err(e) => {
                warn!("reload: feeds: {e:#}");
                "feeds not reloaded".into()
            }
        })
    }

    fn reopen_events(&mut self) -> Option<String> {
        let ev = self.events.as_ref()?;
        Some(
            match ev.reopen(self.live.events_max_size, self.live.events_keep) {
                Ok(()) => "events reopened".into(),
                Err(e) => {
                    warn!("reload: {e}; still writing the file open before");
                    "events not reopened".into()
                }
            },
        )
    }
}

/// Syncs every feed of the database; the number of feeds and `NAME +added -removed` of those
/// whose map entries changed.
fn sync_feeds(f: &FeedReload) -> anyhow::Result<(usize, Vec<String>)> {
    let mut rec = Recorder::open(&f.state)?;
    let mut maps = Maps::open(&f.pin_dir)?;
    let names: Vec<String> = match rec.store_mut() {
        Some(s) => s.feeds()?.into_iter().map(|r| r.name).collect(),
        None => return Ok((0, Vec::new())),
    };
    let mut resolvers = f.resolvers.clone();
    if let Ok(learnt) = flux_agent::control::ask_resolvers(&f.pin_dir) {
        resolvers.extend(learnt);
    }
    let guard = Guard::new(resolvers);
    let mut changed = Vec::new();
    for name in &names {
        match feed_sync::sync(&mut rec, &mut maps, &guard, name, &SyncOptions::default()) {
            Ok(r) if r.added + r.removed > 0 => {
                changed.push(format!("{name} +{} -{}", r.added, r.removed))
            }
            Ok(_) => {}
            Err(e) => warn!("reload: feed {name}: {e}"),
        }
    }
    if let Some(store) = rec.store_mut() {
        f.index
            .publish(FeedIndex::load(store, std::time::SystemTime::now())?);
    }
    Ok((names.len(), changed))
}
