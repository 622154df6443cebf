//! The write path. **Every block and allowlist change goes through a [`Recorder`]**: the
//! enforcer's scorer blocks, renewals and expiry sweep, and the CLI's `blocklist add/remove/
//! flush` and `allowlist add/remove`. Each change is written to the state database
//! (`flux-state`, one transaction) **first**, then to the pinned maps
//! ([`crate::enforce::maps`]). A crash between the two is repaired at the next start by
//! [`Recorder::restore`] (`flux_state::reconcile`): the database is the record, the maps are
//! the enforcement.
//!
//! Feed import uses the same rule: `Store::apply_feed` through [`Recorder::store_mut`], then
//! [`Recorder::apply`] with its `added` and `gone`.
//!
//! The writes are synchronous, on the caller's thread (the agent's pipeline): one small
//! transaction per block, and new automatic blocks are rate-capped (`--max-blocks-per-minute`),
//! so the ring-buffer reader waits at most milliseconds; the journal, which writes far more,
//! has its own thread (`pipeline::journal_sink`). `flush` removes target by target (one
//! transaction each): a flush of a very large blocklist takes a while.
//!
//! A database that cannot be written (a full disk, a busy lock) never stops enforcement: the
//! map write still happens, the failure is logged and counted ([`RecordCounts`]). Without a
//! database (`--no-state`, or a corrupt file) the Recorder writes the maps only.
//!
//! The scorer's saved state lives beside this in the same file, written by
//! `crate::pipeline::scorer_memory` (`scorer_state`, key `scorer`).
//!
//! Test hook: `FLUX_TEST_PAUSE_AT=STEP` ([`pause_at`]) makes the write path sleep at STEP so a
//! test can SIGKILL it there. Inert without the variable.
//!
//! May touch: the state database and the pinned maps (through `maps`).

use std::{
    collections::HashSet,
    net::IpAddr,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime},
};

use flux_common::{BlockEntry, SOURCE_FEED, SOURCE_MANUAL, SOURCE_SCORER};
use flux_state::{EffectiveEntry, Entry, Kind, Source, StateError, Store};
use log::{error, info, warn};

use crate::enforce::maps::{Added, BlocklistError, Listed, Maps, Spec, Target};

/// The environment variable of the test hook ([`pause_at`]).
pub const PAUSE_ENV: &str = "FLUX_TEST_PAUSE_AT";
/// How long the test hook sleeps: long enough for a test to SIGKILL the process.
const PAUSE_FOR: Duration = Duration::from_secs(60);
/// How many disagreements the start-up reconcile names in the log (the rest are counted).
const LOG_FIRST: usize = 5;

/// Steps of the write path a test can stop at.
pub mod step {
    pub const BEFORE_DB_WRITE: &str = "before-db-write";
    pub const AFTER_DB_WRITE: &str = "after-db-write";
    pub const AFTER_MAP_WRITE: &str = "after-map-write";
}

/// **Test hook.** When `FLUX_TEST_PAUSE_AT` equals `step`, says so on stderr and sleeps
/// [`PAUSE_FOR`], so a test can SIGKILL the process exactly there. Without the variable it
/// does nothing.
pub fn pause_at(step: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var(PAUSE_ENV).ok()).as_deref() == Some(step) {
        eprintln!("{PAUSE_ENV}: paused at {step}");
        std::thread::sleep(PAUSE_FOR);
    }
}

/// Failed state-database writes of this process since start (enforcement went on): the write
/// path's and the verdict journal's. The running agent reports them to `stats` (control
/// request `{"state": true}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordCounts {
    /// The disk (or `max_page_count`) was full: `StateError::Full`.
    pub db_full: u64,
    /// Any other failure (busy, I/O).
    pub db_errors: u64,
}

static DB_FULL: AtomicU64 = AtomicU64::new(0);
static DB_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts a failed database write ([`counts`]); returns the count of its kind so far.
pub fn note_failure(e: &StateError) -> u64 {
    let c = if e.is_full() { &DB_FULL } else { &DB_ERRORS };
    c.fetch_add(1, Ordering::Relaxed) + 1
}

/// The failed database writes of this process so far.
pub fn counts() -> RecordCounts {
    RecordCounts {
        db_full: DB_FULL.load(Ordering::Relaxed),
        db_errors: DB_ERRORS.load(Ordering::Relaxed),
    }
}

/// What the start-up reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub added: usize,
    pub removed: usize,
    pub expired: usize,
    /// Map entries adopted into a new, empty database.
    pub adopted: usize,
    pub elapsed: Duration,
}

/// The database side of the write path, or none.
pub struct Recorder {
    store: Option<Store>,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}: cannot create the state directory: {1}")]
    Dir(std::path::PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Creates `path`'s directory, mode 0700, when it is missing.
fn make_dir(path: &Path) -> Result<(), OpenError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| OpenError::Dir(dir.to_owned(), e))
}

impl Recorder {
    /// No database: the maps only (`--no-state`, replay, or a file that cannot be used).
    pub fn without_db() -> Self {
        Self { store: None }
    }

    /// Opens (creating it and its directory, 0700, if missing) and checks the database.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        make_dir(path)?;
        let store = Store::open(path)?;
        store.check()?;
        // The journal is this host's DNS history: owner-only, like the events file. SQLite
        // gives its -wal and -shm files the database's mode.
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            let mut p = m.permissions();
            p.set_mode(p.mode() & 0o700);
            let _ = std::fs::set_permissions(path, p);
        }
        Ok(Self { store: Some(store) })
    }

    /// [`Recorder::open`], or, when the file cannot be used, one clear error line naming it and
    /// a Recorder without a database (the pins keep enforcing; the file is left as it is).
    pub fn open_or_warn(path: &Path) -> Self {
        match Self::open(path) {
            Ok(r) => r,
            Err(e) => {
                error!(
                    "{e}. Running WITHOUT the state database: the pinned blocks are still \
                     enforced, but nothing is recorded and nothing is restored"
                );
                Self::without_db()
            }
        }
    }

    pub fn has_db(&self) -> bool {
        self.store.is_some()
    }

    /// The database, for what writes it in bulk first (feeds: `apply_feed`, then [`apply`]).
    ///
    /// [`apply`]: Recorder::apply
    pub fn store_mut(&mut self) -> Option<&mut Store> {
        self.store.as_mut()
    }

    /// Runs `f` on the database, if any. A failure is logged and counted and gives `None`:
    /// the caller goes on to the maps.
    fn db<T>(&mut self, f: impl FnOnce(&mut Store) -> Result<T, StateError>) -> Option<T> {
        let store = self.store.as_mut()?;
        match f(store) {
            Ok(v) => Some(v),
            Err(e) => {
                let n = note_failure(&e);
                warn!("{e} (enforcing anyway; {n} such failed writes so far)");
                None
            }
        }
    }

    /// **The** block write: the database row of `source`, then the map entry. `previous` is
    /// the map's entry as `Maps::get` read it.
    pub fn block(
        &mut self,
        maps: &mut Maps,
        t: &Target,
        spec: &Spec,
        source: Source,
        previous: Option<BlockEntry>,
    ) -> Result<Added, BlocklistError> {
        let now = SystemTime::now();
        let entry = Entry {
            score: spec.score,
            expires: spec.ttl.map(|d| now.checked_add(d).unwrap_or(far_future())),
            ..Entry::block(to_state(Kind::Block, t), source, &spec.reason)
        };
        pause_at(step::BEFORE_DB_WRITE);
        self.db(|s| s.add_entries(std::slice::from_ref(&entry)));
        pause_at(step::AFTER_DB_WRITE);
        let r = maps.write(t, spec, previous);
        pause_at(step::AFTER_MAP_WRITE);
        r
    }

    /// Removes the block on `t` of every source: the database, then the map. `false` when
    /// the map had none.
    pub fn unblock(&mut self, maps: &mut Maps, t: &Target) -> Result<bool, BlocklistError> {
        let st = to_state(Kind::Block, t);
        pause_at(step::BEFORE_DB_WRITE);
        self.db(|s| s.remove(Kind::Block, &st, None));
        pause_at(step::AFTER_DB_WRITE);
        let r = maps.unblock(t);
        pause_at(step::AFTER_MAP_WRITE);
        r
    }

    /// Removes every block: the database's (every source), then the maps'. Returns how many
    /// map entries went.
    pub fn flush(&mut self, maps: &mut Maps) -> Result<usize, BlocklistError> {
        self.db(|s| {
            for e in s.effective_entries(Some(Kind::Block), SystemTime::UNIX_EPOCH)? {
                s.remove(Kind::Block, &e.target, None)?;
            }
            Ok(())
        });
        maps.flush()
    }

    /// Allows `t` (source manual): the database, then the map.
    pub fn allow(
        &mut self,
        maps: &mut Maps,
        t: &Target,
        reason: &str,
    ) -> Result<(), BlocklistError> {
        let entry = Entry {
            kind: Kind::Allow,
            ..Entry::block(to_state(Kind::Allow, t), Source::Manual, reason)
        };
        pause_at(step::BEFORE_DB_WRITE);
        self.db(|s| s.add_entries(std::slice::from_ref(&entry)));
        pause_at(step::AFTER_DB_WRITE);
        maps.allow(t, reason)
    }

    /// Removes the allowlist entry on `t`: the database, then the map.
    pub fn unallow(&mut self, maps: &mut Maps, t: &Target) -> Result<bool, BlocklistError> {
        let st = to_state(Kind::Allow, t);
        self.db(|s| s.remove(Kind::Allow, &st, None));
        maps.unallow(t)
    }

    /// The periodic sweep: the rows the database expires, and the targets no source holds any
    /// more leave the maps; then whatever expired entry the maps still hold (one the database
    /// never had). Returns how many map entries went.
    pub fn expire(&mut self, maps: &mut Maps) -> Result<usize, BlocklistError> {
        // First, so that no error below skips it: every drop-cache slot is looked up again, and
        // a change written past `Maps` (bpftool) reaches the kernel's cached drops within a
        // sweep.
        if let Err(e) = maps.advance_verdict_generation() {
            warn!("cannot advance the verdict generation: {e}");
        }
        let gone = self
            .db(|s| s.expire(SystemTime::now()))
            .map(|x| x.gone)
            .unwrap_or_default();
        let mut n = self.apply(maps, &[], &gone)?;
        n += maps.sweep_expired()?.len();
        // The front filters' bits of what left since the last sweep (feeds, the CLI through
        // this agent, expiry): a stale bit only costs the kernel lookups, so a failure is logged.
        if let Err(e) = maps.rebuild_front_if_stale() {
            warn!("cannot rebuild the front filters: {e}");
        }
        Ok(n)
    }

    /// Brings the maps in line with what the database already holds: `added` are written,
    /// `gone` removed (feeds, the sweep, the start-up reconcile). Returns the entries changed.
    pub fn apply(
        &mut self,
        maps: &mut Maps,
        added: &[EffectiveEntry],
        gone: &[(Kind, flux_state::Target)],
    ) -> Result<usize, BlocklistError> {
        let now = SystemTime::now();
        let mut n = 0;
        for e in added.iter().filter(|e| flux_state::enforced(e)) {
            match e.kind {
                Kind::Block => {
                    let Some((t, spec)) = block_spec(e, now) else {
                        continue;
                    };
                    maps.block(&t, &spec)?;
                }
                Kind::Allow => maps.allow(&from_state(&e.target), &e.reason)?,
            }
            n += 1;
        }
        self.remove_from_maps(maps, gone).map(|r| n + r)
    }

    /// [`Recorder::apply`] for entries the maps should not hold yet, in one call (the start-up
    /// restore after a reboot): the blocks go in batches ([`Maps::block_new`]; one
    /// found there after all is renewed as `apply` would). Returns the entries written.
    pub fn apply_new(
        &mut self,
        maps: &mut Maps,
        added: &[EffectiveEntry],
    ) -> Result<usize, BlocklistError> {
        let now = SystemTime::now();
        let mut blocks = Vec::new();
        let mut n = 0;
        for e in added.iter().filter(|e| flux_state::enforced(e)) {
            match e.kind {
                Kind::Block => blocks.extend(block_spec(e, now)),
                Kind::Allow => {
                    maps.allow(&from_state(&e.target), &e.reason)?;
                    n += 1;
                }
            }
        }
        Ok(n + maps.block_new(&blocks)?)
    }

    /// Removes `gone` from the maps; returns how many were there. A target the database holds
    /// again by then is left in the maps ([`Recorder::held_again`]).
    fn remove_from_maps(
        &mut self,
        maps: &mut Maps,
        gone: &[(Kind, flux_state::Target)],
    ) -> Result<usize, BlocklistError> {
        let mut n = 0;
        for (kind, st) in gone {
            if self.held_again(*kind, st) {
                continue;
            }
            let t = from_state(st);
            let removed = match kind {
                Kind::Block => maps.unblock(&t)?,
                Kind::Allow => maps.unallow(&t)?,
            };
            n += usize::from(removed);
        }
        Ok(n)
    }

    /// Whether the database holds a live, enforced `kind` entry on `target` now, read again just
    /// before the map entry is removed. Why: `gone` comes from a transaction that is over (the
    /// sweep's expiry, a feed's swap), and another writer with its own connection and its own
    /// `Maps` (the feed refresher, the CLI through the agent, the enforcer) may since have added
    /// the target back and written it into the map; removing it then would lift a block the
    /// database holds, which nothing writes back until a restart. No database, or a failed
    /// read: `false`, the removal goes ahead as before.
    fn held_again(&self, kind: Kind, target: &flux_state::Target) -> bool {
        let Some(store) = self.store.as_ref() else {
            return false;
        };
        store
            .holds_enforced(kind, target, SystemTime::now())
            .unwrap_or(false)
    }

    /// The start-up reconcile: expired rows dropped, what the database holds and the maps lack
    /// written (a reboot emptied them), what the maps hold and the database does not removed;
    /// each disagreement logged (a count and the first few). A new, empty database adopts the
    /// maps' entries instead (the first start with a database must not unblock everything).
    pub fn restore(&mut self, maps: &mut Maps) -> Result<Restored, BlocklistError> {
        let started = Instant::now();
        let mut out = Restored::default();
        let in_maps = map_targets(maps)?;
        let Some(store) = self.store.as_mut() else {
            return Ok(out);
        };
        let read = (|| -> Result<_, StateError> {
            let expired = store.expire(SystemTime::now())?;
            let count = store.entry_count()?;
            let db = store.effective_entries(None, SystemTime::UNIX_EPOCH)?;
            Ok((expired, count, db))
        })();
        let (expired, count, db) = match read {
            Ok(x) => x,
            Err(e) => {
                error!("{e}: the blocks were not restored from the database");
                return Ok(out);
            }
        };
        if count == 0 && expired.rows.is_empty() && !in_maps.is_empty() {
            out.adopted = self.adopt(maps, &in_maps)?;
            out.elapsed = started.elapsed();
            return Ok(out);
        }
        let r = flux_state::reconcile(&db, &in_maps, SystemTime::now());
        log_some(
            "restoring from the database (missing in the maps)",
            &r.to_add,
            |e| format!("{} {}", e.kind.as_str(), e.target),
        );
        log_some(
            "removing from the maps (not in the database)",
            &r.to_remove,
            |(k, t)| format!("{} {t}", k.as_str()),
        );
        out.added = self.apply_new(maps, &r.to_add)?;
        out.removed = self.apply(maps, &[], &r.to_remove)?;
        out.expired = expired.rows.len() + r.expired.len();
        out.elapsed = started.elapsed();
        Ok(out)
    }

    /// Records the maps' live entries in a new database (source manual, or scorer for the
    /// scorer's), so a database created on an agent that already had blocks loses none.
    fn adopt(
        &mut self,
        maps: &Maps,
        in_maps: &[(Kind, flux_state::Target)],
    ) -> Result<usize, BlocklistError> {
        let now = SystemTime::now();
        let mut rows = Vec::new();
        for l in maps.list()?.into_iter().filter(|l| !l.expired) {
            let Some(t) = listed_target(&l) else { continue };
            let source = if l.source == "scorer" {
                Source::Scorer
            } else {
                Source::Manual
            };
            rows.push(Entry {
                score: l.score,
                added: l.added.unwrap_or(now),
                expires: l.expires,
                ..Entry::block(to_state(Kind::Block, &t), source, &l.reason)
            });
        }
        for (kind, t) in in_maps.iter().filter(|(k, _)| *k == Kind::Allow) {
            rows.push(Entry {
                kind: *kind,
                ..Entry::block(t.clone(), Source::Manual, "manual")
            });
        }
        let n = rows.len();
        self.db(|s| s.add_entries(&rows));
        info!("new state database: recorded the {n} entries already in the maps");
        Ok(n)
    }
}

fn far_future() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2)
}

/// Logs a count and the first [`LOG_FIRST`] items.
fn log_some<T>(what: &str, items: &[T], show: impl Fn(&T) -> String) {
    if items.is_empty() {
        return;
    }
    let first: Vec<String> = items.iter().take(LOG_FIRST).map(show).collect();
    let more = items.len().saturating_sub(LOG_FIRST);
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    warn!(
        "{what}: {} entries: {}{tail}",
        items.len(),
        first.join(", ")
    );
}

/// The map's `source` byte for a restored entry: an operator's block wins (the enforcer then
/// leaves it alone), then the scorer's; a feed or fleet entry is a feed entry.
fn map_source(sources: &[Source]) -> u8 {
    if sources.contains(&Source::Manual) {
        SOURCE_MANUAL
    } else if sources.contains(&Source::Scorer) {
        SOURCE_SCORER
    } else {
        SOURCE_FEED
    }
}

/// A map target as the database spells it. An allowed address is a host route in the allow
/// maps (`Maps::allow`), so it is recorded as one: both sides then list the same thing.
pub fn to_state(kind: Kind, t: &Target) -> flux_state::Target {
    match (kind, t) {
        (Kind::Allow, Target::Ip(ip)) => flux_state::Target::Cidr(*ip, host_len(ip)),
        (_, Target::Ip(ip)) => flux_state::Target::Ip(*ip),
        (_, Target::Cidr(ip, len)) => flux_state::Target::Cidr(*ip, *len),
        (_, Target::Domain(d)) => flux_state::Target::Domain(d.clone()),
    }
}

/// The map target of a database target.
pub fn from_state(t: &flux_state::Target) -> Target {
    match t {
        flux_state::Target::Ip(ip) => Target::Ip(*ip),
        flux_state::Target::Cidr(ip, len) => Target::Cidr(*ip, *len),
        flux_state::Target::Domain(d) => Target::Domain(d.clone()),
    }
}

fn host_len(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// The target of a listed map entry.
fn listed_target(l: &Listed) -> Option<Target> {
    match l.kind {
        "domain" => Some(Target::Domain(l.value.clone())),
        "ip" => Target::ip(&l.value).ok(),
        _ => Target::cidr(&l.value).ok(),
    }
}

/// The map write of a database block: its target and spec, the ttl what is left of its expiry
/// at `now`; `None` when it has already expired.
fn block_spec(e: &EffectiveEntry, now: SystemTime) -> Option<(Target, Spec)> {
    let ttl = match e.expires {
        None => None,
        Some(x) => match x.duration_since(now) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => return None,
        },
    };
    let spec = Spec {
        source: map_source(&e.sources),
        ttl,
        reason: e.reason.clone(),
        score: e.score,
    };
    Some((from_state(&e.target), spec))
}

/// Every (kind, target) the maps hold, expired entries included, as the database spells them.
pub fn map_targets(maps: &Maps) -> Result<Vec<(Kind, flux_state::Target)>, BlocklistError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (kind, list) in [
        (Kind::Block, maps.list()?),
        (Kind::Allow, maps.list_allowed()?),
    ] {
        for l in &list {
            if let Some(t) = listed_target(l) {
                let st = to_state(kind, &t);
                if seen.insert((kind, st.clone())) {
                    out.push((kind, st));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_convert_both_ways_and_an_allowed_address_is_a_host_route() {
        for t in [
            Target::ip("192.0.2.1").unwrap(),
            Target::cidr("10.0.0.0/8").unwrap(),
            Target::domain("flux.example.com").unwrap(),
        ] {
            assert_eq!(from_state(&to_state(Kind::Block, &t)), t);
        }
        let ip = Target::ip("2001:db8::1").unwrap();
        assert_eq!(
            to_state(Kind::Allow, &ip).to_string(),
            "2001:db8::1/128",
            "the allow maps hold a host route"
        );
    }

    #[test]
    fn the_operators_source_wins_in_the_map() {
        assert_eq!(map_source(&[Source::Scorer, Source::Manual]), SOURCE_MANUAL);
        assert_eq!(map_source(&[Source::Scorer]), SOURCE_SCORER);
        assert_eq!(map_source(&[Source::feed("x")]), SOURCE_FEED);
    }

    #[test]
    fn the_pause_hook_is_inert_without_its_variable() {
        let t = Instant::now();
        pause_at(step::AFTER_DB_WRITE);
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn only_a_live_enforced_row_of_the_kind_holds_a_target_again() {
        let base = std::env::temp_dir().join(format!("flux-held-{}", std::process::id()));
        let mut r = Recorder::open(&base.join("state.db")).unwrap();
        let x = flux_state::Target::domain("x.example").unwrap();
        assert!(!r.held_again(Kind::Block, &x), "no row");
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let rows = [
            // Expired, and only reported: neither belongs in the maps.
            Entry {
                expires: Some(now - hour),
                ..Entry::block(x.clone(), Source::Manual, "old")
            },
            Entry {
                action: flux_state::Action::Report,
                ..Entry::block(x.clone(), Source::feed("watch"), "seen")
            },
        ];
        r.store.as_mut().unwrap().add_entries(&rows).unwrap();
        assert!(!r.held_again(Kind::Block, &x));
        let live = Entry {
            expires: Some(now + hour),
            ..Entry::block(x.clone(), Source::feed("f"), "listed")
        };
        r.store.as_mut().unwrap().add_entries(&[live]).unwrap();
        assert!(r.held_again(Kind::Block, &x));
        assert!(!r.held_again(Kind::Allow, &x), "another kind");
        assert!(!Recorder::without_db().held_again(Kind::Block, &x));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_missing_directory_is_made_0700() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = std::env::temp_dir().join(format!("flux-record-{}", std::process::id()));
        let path = base.join("sub").join("state.db");
        let r = Recorder::open(&path).unwrap();
        assert!(r.has_db());
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the database is owner-only");
        let _ = std::fs::remove_dir_all(&base);
    }
}
