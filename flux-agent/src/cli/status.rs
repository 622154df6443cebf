//! `flux-agent status`: "is it working?" on one screen, like `xdp-loader status`. The agent
//! (running? its pid and uptime, whether its control socket answers), every interface with its
//! attach mode and program and link ids, the pins of the folder and whether they are ours, the
//! state database and its size, the feeds and their freshness, the kernel counters that
//! matter, and the last verdicts and blocks (from the running agent, else from the database's
//! journal and blocks).
//!
//! It says plainly which of three cases holds: running; stopped but the programs left attached
//! and enforcing from the pins (blocks hold, nothing new is scored); nothing loaded.
//!
//! Exit status, as LSB `status` actions: 0 running (its control socket answers); 3 not running
//! (whether or not pins were left enforcing: the output says which); 4 unknown (an agent holds
//! the pin folder but does not answer, or the pin folder could not be read).
//!
//! The readable form is `status/status_text.rs`; `--json` prints [`Status`].
//!
//! Run it in the agent's network namespace: interfaces are looked up by index there (the pins
//! and links are global).
//!
//! May touch: nothing. It reads bpffs, the kernel's link and program info, netlink, the
//! control socket and the state database (read only).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use aya::programs::links::{FdLink, PinnedLink};
use flux_agent::{
    control::{self, ControlError},
    kernel::{
        counters,
        iface_states::{self, IfaceState, State},
        loader::{TC_LINK_PREFIX, XDP_LINK_PREFIX, lock_pin_dir, tc_link_pin, xdp_link_pin},
        map_identity, pins, xdp_owner,
    },
    pipeline::recent::{ReasonBrief, RecentAction, RecentVerdict, StatusReport},
};
use flux_common::Counter;
use flux_detect::timestamp::rfc3339;
use serde::Serialize;

use super::{PinArgs, StateArgs};

// The readable form.
mod status_text;

/// Exit status: the agent runs and answers.
pub const EXIT_RUNNING: u8 = 0;
/// Exit status: no agent runs (LSB "program is not running"); pins may still enforce.
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit status: cannot tell (LSB "status is unknown").
pub const EXIT_UNKNOWN: u8 = 4;

/// Verdicts and blocks shown from the database when no agent answers: a screen's worth.
const RECENT_SHOWN: usize = 10;
/// How far back the journal is read for the last verdicts: a day holds the recent ones, and
/// bounds the read of a large journal (100,000 rows at most).
const JOURNAL_LOOKBACK: Duration = Duration::from_secs(24 * 3600);
/// A feed is stale once its last refresh is this many refresh intervals old: one missed
/// refresh can be a slow server, two are a broken feed.
const STALE_INTERVALS: u32 = 2;

/// The kernel counters `status` shows: traffic seen, what was enforced, and what was lost.
/// `stats` shows them all.
pub const KEY_COUNTERS: [Counter; 11] = [
    Counter::PacketsSeen,
    Counter::ResponsesCaptured,
    Counter::RingBufFull,
    Counter::TruncatedCaptures,
    Counter::Malformed,
    Counter::DropBlockedSrc,
    Counter::DropBlockedDst,
    Counter::DropBlockedName,
    Counter::SinkholedNxdomain,
    Counter::DropEgressBlocked,
    Counter::MonitorWouldDrop,
];

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 running; 3 not running (programs may still be \
                        enforcing from the pins: the output says so); 4 unknown (an agent \
                        holds the pin folder but does not answer, or it cannot be read)."
)]
pub struct StatusArgs {
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pin: PinArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

/// Everything `status` reports (the `--json` document).
#[derive(Debug, Serialize)]
pub struct Status {
    /// `running`, `stopped-enforcing`, `not-loaded`, or `unknown`.
    pub state: &'static str,
    /// One line saying what that means.
    pub summary: String,
    pub pin_dir: String,
    /// The pinned maps exist.
    pub loaded: bool,
    /// A pinned XDP link of this pin folder is attached to at least one interface.
    pub enforcing: bool,
    pub agent: Agent,
    pub interfaces: Vec<Iface>,
    pub pins: Vec<Pin>,
    pub database: Database,
    pub feeds: Vec<Feed>,
    /// Name to the sum over CPUs (empty when nothing is loaded).
    pub counters: serde_json::Map<String, serde_json::Value>,
    pub recent: Recent,
}

#[derive(Debug, Default, Serialize)]
pub struct Agent {
    /// A process holds the pin folder's lock.
    pub running: bool,
    /// Its control socket answered the status request.
    pub answering: bool,
    pub pid: Option<u32>,
    pub started_at: Option<String>,
    pub uptime_secs: Option<u64>,
    pub control_socket: String,
    pub responses: Option<u64>,
    pub keys_tracked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Iface {
    pub name: String,
    /// `attached`, `absent`, `failed`.
    pub state: &'static str,
    pub ifindex: Option<u32>,
    /// `native`, `skb`, `hw`, `multiple` (from the kernel, netlink).
    pub mode: Option<&'static str>,
    /// The XDP program attached to the interface now.
    pub prog_id: Option<u32>,
    /// The pinned XDP link of this pin folder, and the program it holds.
    pub link_id: Option<u32>,
    pub link_prog_id: Option<u32>,
    /// The pinned TC egress link (`--egress`, or query matching).
    pub egress_link_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Pin {
    pub name: String,
    /// `map`, `xdp_link`, `tc_link` or `other`.
    pub kind: &'static str,
    /// A pin this agent makes, and (for a map) the very map the attached program uses.
    pub ours: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Database {
    pub path: Option<String>,
    pub exists: bool,
    /// The file with its write-ahead log.
    pub size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Feed {
    pub name: String,
    pub location: String,
    pub entries: u64,
    pub refresh_secs: Option<u64>,
    pub last_refresh: Option<String>,
    pub age_secs: Option<u64>,
    pub last_result: Option<String>,
    /// Refreshed on an interval but not for [`STALE_INTERVALS`] of them, or its last fetch
    /// failed.
    pub stale: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Recent {
    /// `agent` (its rings), `database` (journal and blocks), or `none`.
    pub source: &'static str,
    pub verdicts: Vec<RecentVerdict>,
    pub actions: Vec<RecentAction>,
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (s, code) = gather(&args.pin.pin_dir, args.state.path().as_deref());
    if args.json {
        out!("{}", serde_json::to_string(&s)?);
    } else {
        status_text::human(&s)?;
    }
    Ok(ExitCode::from(code))
}

/// Reads everything, never failing as a whole: a part that cannot be read says why.
pub fn gather(pin_dir: &Path, db: Option<&Path>) -> (Status, u8) {
    let mut agent = Agent {
        control_socket: control::socket_path(pin_dir).display().to_string(),
        ..Agent::default()
    };
    // A folder we may not look into (bpffs is 0700) is "cannot tell", never "nothing loaded".
    let loaded = match pins::pin_exists(&pin_dir.join(flux_common::MAP_COUNTERS)) {
        Ok(loaded) => loaded,
        Err(e) => {
            agent.error = Some(e.to_string());
            false
        }
    };
    let lock = match std::fs::metadata(pin_dir) {
        Ok(_) => lock_pin_dir(pin_dir).map(|l| l.is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    let mut report = None;
    match lock {
        Ok(running) => agent.running = running,
        Err(e) => {
            // The first error says it best (the pin check names permission denied).
            agent
                .error
                .get_or_insert_with(|| format!("cannot read {}: {e}", pin_dir.display()));
        }
    }
    if agent.running {
        match control::ask_status(pin_dir) {
            Ok(r) => {
                agent.answering = true;
                agent.pid = Some(r.pid);
                agent.started_at = Some(r.started_at.clone());
                agent.uptime_secs = Some(r.uptime_secs);
                agent.responses = Some(r.responses);
                agent.keys_tracked = Some(r.keys_tracked);
                report = Some(r);
            }
            Err(e @ ControlError::NotRunning { .. }) | Err(e @ ControlError::Io { .. }) => {
                agent.error = Some(e.to_string())
            }
        }
    }
    let interfaces = interfaces(pin_dir, agent.running);
    // The pinned link says it (global, whatever network namespace this runs in).
    let enforcing = loaded
        && interfaces
            .iter()
            .any(|i| i.state == State::Attached.as_str() && i.link_prog_id.is_some());
    let (state, code, summary) = verdict(&agent, loaded, enforcing);
    let counters = key_counters(pin_dir, loaded);
    let (database, store) = database(db);
    let recent = match (&report, &store) {
        (Some(r), _) => from_agent(r),
        (None, Some(st)) => from_database(st),
        (None, None) => Recent {
            source: "none",
            ..Recent::default()
        },
    };
    let feeds = store.as_ref().map(feeds).unwrap_or_default();
    let s = Status {
        state,
        summary,
        pin_dir: pin_dir.display().to_string(),
        loaded,
        enforcing,
        agent,
        interfaces,
        pins: pin_list(pin_dir),
        database,
        feeds,
        counters,
        recent,
    };
    (s, code)
}

/// The state, the exit status and the sentence that says it.
fn verdict(agent: &Agent, loaded: bool, enforcing: bool) -> (&'static str, u8, String) {
    match (agent.running, agent.answering, enforcing, loaded) {
        (true, true, _, _) => (
            "running",
            EXIT_RUNNING,
            format!(
                "running (pid {}, up {}){}",
                agent.pid.unwrap_or(0),
                humantime::format_duration(Duration::from_secs(agent.uptime_secs.unwrap_or(0))),
                if enforcing {
                    ""
                } else {
                    ", attached to no interface"
                }
            ),
        ),
        (true, false, _, _) => (
            "unknown",
            EXIT_UNKNOWN,
            "an agent holds the pin folder but its control socket does not answer (starting, \
             or stuck)"
                .into(),
        ),
        (false, _, true, _) => (
            "stopped-enforcing",
            EXIT_NOT_RUNNING,
            "not running, but its programs are still attached and enforcing from the pins: \
             blocks hold, nothing new is scored or blocked (`flux-agent run` resumes, \
             `flux-agent unload` removes them)"
                .into(),
        ),
        (false, _, false, true) => (
            "stopped-enforcing",
            EXIT_NOT_RUNNING,
            "not running; its maps are pinned but no program of this pin folder is attached".into(),
        ),
        (false, _, false, false) if agent.error.is_some() => (
            "unknown",
            EXIT_UNKNOWN,
            format!(
                "cannot tell: {} (status needs root)",
                agent
                    .error
                    .as_deref()
                    .unwrap_or("the pin folder cannot be read")
            ),
        ),
        (false, _, false, false) => (
            "not-loaded",
            EXIT_NOT_RUNNING,
            "not running, and nothing is loaded: no program attached, no pins".into(),
        ),
    }
}

/// The interfaces: the running agent's view (its state file), else the link pins; with the
/// kernel's attach mode and program id and the pinned links' ids.
fn interfaces(pin_dir: &Path, running: bool) -> Vec<Iface> {
    let states: Vec<IfaceState> = running
        .then(|| iface_states::read_state_file(pin_dir))
        .flatten()
        .unwrap_or_else(|| iface_states::from_link_pins(pin_dir));
    states
        .into_iter()
        .map(|st| {
            let mut i = Iface {
                name: st.name.clone(),
                state: st.state.as_str(),
                ifindex: st.ifindex,
                mode: None,
                prog_id: None,
                link_id: None,
                link_prog_id: None,
                egress_link_id: None,
                error: st.error,
            };
            if let Some(idx) = st.ifindex {
                match xdp_owner::attached_xdp(idx) {
                    Ok(Some((mode, id))) => (i.mode, i.prog_id) = (Some(mode), Some(id)),
                    Ok(None) => {}
                    Err(e) => i.error = Some(format!("netlink: {e}")),
                }
            }
            if let Some((id, prog)) = link_ids(&xdp_link_pin(pin_dir, &st.name)) {
                (i.link_id, i.link_prog_id) = (Some(id), Some(prog));
            }
            i.egress_link_id = link_ids(&tc_link_pin(pin_dir, &st.name)).map(|(id, _)| id);
            if let (Some(on), Some(ours)) = (i.prog_id, i.link_prog_id)
                && on != ours
            {
                i.error = Some(format!(
                    "program {on} is on ifindex {} here, the pinned link holds program {ours} \
                     (run status in the agent's network namespace)",
                    st.ifindex.unwrap_or(0)
                ));
            }
            i
        })
        .collect()
}

/// A pinned link's id and its program's id.
fn link_ids(pin: &Path) -> Option<(u32, u32)> {
    let link = PinnedLink::from_pin(pin).ok()?;
    let info = FdLink::from(link).info().ok()?;
    Some((info.id(), info.program_id()))
}

/// Every entry of the pin folder: ours (a map the object pins, not replaced; a link of ours)
/// or not.
fn pin_list(pin_dir: &Path) -> Vec<Pin> {
    let names = pins::names();
    let replaced = map_identity::replaced(pin_dir).unwrap_or_default();
    let mut out: Vec<Pin> = std::fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let swapped = replaced.iter().find(|r| r.pin == e.path());
            let (kind, ours, note) = if name.starts_with(XDP_LINK_PREFIX) {
                ("xdp_link", true, None)
            } else if name.starts_with(TC_LINK_PREFIX) {
                ("tc_link", true, None)
            } else if names.contains(&name) {
                match swapped {
                    Some(r) => ("map", false, Some(r.to_string())),
                    None => ("map", true, None),
                }
            } else {
                (
                    "other",
                    false,
                    Some("not a pin flux-agent makes".to_owned()),
                )
            };
            Pin {
                name,
                kind,
                ours,
                note,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn key_counters(pin_dir: &Path, loaded: bool) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    if !loaded {
        return m;
    }
    match counters::read(pin_dir) {
        Ok(s) => {
            for c in KEY_COUNTERS {
                m.insert(c.name().to_owned(), s.get(c).into());
            }
        }
        Err(e) => {
            m.insert("error".into(), e.to_string().into());
        }
    }
    m
}

/// The database's path and size, and the store opened read-only when it exists.
fn database(path: Option<&Path>) -> (Database, Option<flux_state::Store>) {
    let Some(path) = path else {
        return (Database::default(), None);
    };
    let size = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len());
    let mut wal = PathBuf::from(path);
    wal.as_mut_os_string().push("-wal");
    let mut d = Database {
        path: Some(path.display().to_string()),
        exists: path.exists(),
        size_bytes: size(path).map(|n| n + size(&wal).unwrap_or(0)),
        error: None,
    };
    if !d.exists {
        return (d, None);
    }
    match flux_state::Store::open_read_only(path) {
        Ok(s) => (d, Some(s)),
        Err(e) => {
            d.error = Some(e.to_string());
            (d, None)
        }
    }
}

fn feeds(store: &flux_state::Store) -> Vec<Feed> {
    let now = SystemTime::now();
    store
        .feeds()
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let age = f
                .last_refresh
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| d.as_secs());
            let failed = f
                .last_result
                .as_deref()
                .is_some_and(|r| !r.starts_with("ok"));
            let overdue = match (f.refresh, age) {
                (Some(every), Some(age)) => age > (every * STALE_INTERVALS).as_secs(),
                (Some(_), None) => true,
                _ => false,
            };
            Feed {
                name: f.name,
                location: f.location,
                entries: f.entry_count,
                refresh_secs: f.refresh.map(|d| d.as_secs()),
                last_refresh: f.last_refresh.map(|t| rfc3339(t).to_string()),
                age_secs: age,
                last_result: f.last_result,
                stale: failed || overdue,
            }
        })
        .collect()
}

fn from_agent(r: &StatusReport) -> Recent {
    Recent {
        source: "agent",
        verdicts: r
            .recent_verdicts
            .iter()
            .take(RECENT_SHOWN)
            .cloned()
            .collect(),
        actions: r
            .recent_actions
            .iter()
            .take(RECENT_SHOWN)
            .cloned()
            .collect(),
    }
}

/// The journal's last verdicts and the newest blocks, when no agent answers.
fn from_database(store: &flux_state::Store) -> Recent {
    let since = SystemTime::now().checked_sub(JOURNAL_LOOKBACK);
    let verdicts = store
        .verdicts(since, flux_state::Level::Suspicious)
        .unwrap_or_default()
        .into_iter()
        .take(RECENT_SHOWN)
        .map(|v| RecentVerdict {
            ts: rfc3339(v.last_seen).to_string(),
            domain: v.domain,
            level: v.level.as_str().to_owned(),
            previous: String::new(),
            score: v.score,
            block: false,
            reasons: v
                .reasons
                .into_iter()
                .take(3)
                .map(|r| ReasonBrief {
                    feature: r.feature,
                    contribution: r.contribution,
                })
                .collect(),
        })
        .collect();
    let mut blocks = store
        .effective_entries(Some(flux_state::Kind::Block), SystemTime::now())
        .unwrap_or_default();
    blocks.sort_by_key(|b| std::cmp::Reverse(b.added));
    let actions = blocks
        .into_iter()
        .take(RECENT_SHOWN)
        .map(|e| RecentAction {
            ts: rfc3339(e.added).to_string(),
            kind: "block".into(),
            domain: e.target.to_string(),
            action: "blocked".into(),
            target: Some(e.target.to_string()),
            reason: format!(
                "{} ({})",
                e.reason,
                e.sources
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect();
    Recent {
        source: "database",
        verdicts,
        actions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_cases_and_their_exit_status() {
        let mut a = Agent::default();
        let (state, code, _) = verdict(&a, false, false);
        assert_eq!((state, code), ("not-loaded", EXIT_NOT_RUNNING));
        let (state, code, why) = verdict(&a, true, true);
        assert_eq!((state, code), ("stopped-enforcing", EXIT_NOT_RUNNING));
        assert!(why.contains("still attached and enforcing"), "{why}");
        a.error = Some("permission denied".into());
        let (state, code, why) = verdict(&a, false, false);
        assert_eq!(
            (state, code),
            ("unknown", EXIT_UNKNOWN),
            "not 'nothing loaded'"
        );
        assert!(why.contains("permission denied"), "{why}");
        a.error = None;
        a.running = true;
        assert_eq!(verdict(&a, true, true).1, EXIT_UNKNOWN, "not answering");
        a.answering = true;
        a.pid = Some(42);
        a.uptime_secs = Some(61);
        let (state, code, why) = verdict(&a, true, true);
        assert_eq!((state, code), ("running", EXIT_RUNNING));
        assert_eq!(why, "running (pid 42, up 1m 1s)");
    }

    /// A database with four feeds (fresh, overdue, failed, never refreshed by itself), a
    /// journalled verdict and a block.
    #[test]
    fn feeds_freshness_and_the_database_when_no_agent_answers() {
        use flux_state::{Action, Entry, FeedRecord, Level, Source, Store, Target, VerdictRecord};
        let dir = std::env::temp_dir().join(format!("flux-status-db-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        {
            let mut st = Store::open(&path).unwrap();
            for (name, refresh, ago, result) in [
                ("fresh", Some(hour), hour / 2, "ok: 3 entries"),
                ("overdue", Some(hour), hour * 3, "ok: 3 entries"),
                ("failed", Some(hour), hour / 2, "HTTP 500: kept 3 entries"),
                ("by-hand", None, hour * 100, "ok: 1 entries"),
            ] {
                let mut f = FeedRecord::new(name, "/tmp/x", "auto", Action::Block);
                f.refresh = refresh;
                st.upsert_feed(&f).unwrap();
                st.record_feed_result(name, now - ago, result).unwrap();
            }
            let mut v = VerdictRecord::new("fluxy.test", Level::Flux, 0.97, now);
            v.reasons.push(flux_state::ReasonRecord {
                feature: "networks".into(),
                contribution: 1.5,
            });
            st.journal_verdict(&v).unwrap();
            let block = Entry::block(
                Target::domain("fluxy.test").unwrap(),
                Source::Scorer,
                "flux",
            );
            st.add_entries(&[block]).unwrap();
        }
        let (db, store) = database(Some(&path));
        assert!(
            db.exists && db.size_bytes.unwrap() > 0 && db.error.is_none(),
            "{db:?}"
        );
        let store = store.expect("opened read-only");
        let stale: Vec<(String, bool)> = feeds(&store)
            .into_iter()
            .map(|f| (f.name, f.stale))
            .collect();
        for (name, want) in [
            ("fresh", false),
            ("overdue", true),
            ("failed", true),
            ("by-hand", false),
        ] {
            assert!(
                stale.contains(&(name.to_owned(), want)),
                "{name}: {stale:?}"
            );
        }
        let r = from_database(&store);
        assert_eq!(r.source, "database");
        assert_eq!(r.verdicts[0].domain, "fluxy.test");
        assert_eq!(r.verdicts[0].reasons[0].feature, "networks");
        assert_eq!(r.actions[0].target.as_deref(), Some("fluxy.test"));
        assert!(r.actions[0].reason.contains("scorer"), "{:?}", r.actions[0]);
        let (missing, none) = database(Some(&dir.join("nope.db")));
        assert!(!missing.exists && none.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_pin_folder_is_not_loaded_and_says_so() {
        let dir = std::env::temp_dir().join(format!("flux-status-none-{}", std::process::id()));
        let (s, code) = gather(&dir, None);
        assert_eq!(code, EXIT_NOT_RUNNING);
        assert_eq!(s.state, "not-loaded");
        assert!(!s.loaded && !s.enforcing && !s.agent.running);
        assert!(s.pins.is_empty() && s.interfaces.is_empty() && s.counters.is_empty());
        assert_eq!(s.recent.source, "none");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["agent"]["running"], false);
    }
}
