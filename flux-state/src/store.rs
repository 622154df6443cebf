//! [`Store`]: the open database. Opening (WAL, busy timeout, the schema version check and the
//! migrations), the integrity check, and the scorer's named blobs. The tables' own operations
//! live beside their table: `entry_table`, `feed_table`, `verdict_journal`, `export`.
//!
//! What it may touch: the database file it is given and SQLite's `-wal`/`-shm` files beside
//! it. A file that is not a database is reported, never replaced.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior};

use crate::{
    migrations::{SCHEMA_VERSION, migrate},
    state_error::{StateError, on},
    unix_time::{from_unix, to_unix},
};

/// How long a write waits for another connection's write lock (the CLI and the agent share the
/// file) before failing with "database is locked": longer than any one transaction here takes
/// (a million-entry feed swap is a few seconds), short enough that a stuck peer is reported.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the agent keeps its state unless told otherwise.
pub const DEFAULT_STATE_PATH: &str = "/var/lib/flux-agent/state.db";

/// The open state database.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    /// Rows in `verdicts`, counted on the first journal write and kept by this connection (the
    /// agent is the only writer of the journal).
    pub(crate) journal_rows: Option<u64>,
    /// The journal's bound, [`crate::MAX_VERDICT_ROWS`] unless set.
    pub(crate) journal_cap: u64,
}

/// One saved blob of `scorer_state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The format version of `bytes`, the writer's own (a reader refuses one it does not know).
    pub version: i64,
    pub bytes: Vec<u8>,
    pub saved: SystemTime,
}

/// Version 0 is a new, empty file; an SQLite database of something else (tables, version 0)
/// is not ours to add tables to.
fn refuse_foreign(tx: &rusqlite::Transaction<'_>, path: &Path) -> Result<(), StateError> {
    let objects: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(on(path))?;
    if objects == 0 {
        return Ok(());
    }
    Err(StateError::Invalid {
        path: path.to_owned(),
        what: "an SQLite database, but not a flux-agent state database (schema version 0 with \
               tables); it was left as it is"
            .into(),
    })
}

impl Store {
    /// Opens `path` for reading and writing, creating it (and not its directory) if missing,
    /// in WAL mode, and migrates an older schema. A newer schema is refused
    /// ([`StateError::TooNew`]); a file that is not a database is [`StateError::Corrupt`] and is
    /// left untouched.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut store = Self::connect(path, flags)?;
        let err = on(path);
        // WAL: readers (the CLI) never block the agent's writes, and a crash mid-transaction
        // leaves the last commit whole. `synchronous = NORMAL` is durable across a process
        // crash in WAL mode; a power cut may lose the last commits, which the next start's
        // reconcile then repairs from the pinned maps' side.
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(&err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!("{}: journal mode is {mode}, not WAL", path.display());
        }
        store
            .conn
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;")
            .map_err(&err)?;
        let found = store.user_version()?;
        if found > SCHEMA_VERSION {
            return Err(StateError::TooNew {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            let tx = store
                .conn
                .transaction_with_behavior(TransactionBehavior::Exclusive)
                .map_err(&err)?;
            // Read again under the lock: another process may have migrated meanwhile.
            let now: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(&err)?;
            if now == 0 {
                refuse_foreign(&tx, path)?;
            }
            if now < SCHEMA_VERSION {
                migrate(&tx, now).map_err(&err)?;
            }
            tx.commit().map_err(&err)?;
        }
        Ok(store)
    }

    /// Opens an existing database for reading only (`export`, `feed list`, `explain` while the
    /// agent runs). It must already have this build's schema.
    pub fn open_read_only(path: &Path) -> Result<Self, StateError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let store = Self::connect(path, flags)?;
        let found = store.user_version()?;
        if found > SCHEMA_VERSION {
            return Err(StateError::TooNew {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(StateError::NotMigrated {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    fn connect(path: &Path, flags: OpenFlags) -> Result<Self, StateError> {
        let conn = Connection::open_with_flags(path, flags).map_err(on(path))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(on(path))?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            journal_rows: None,
            journal_cap: crate::MAX_VERDICT_ROWS,
        })
    }

    /// `PRAGMA user_version`: reading it reads the header, so a file that is not a database
    /// fails here ([`StateError::Corrupt`]).
    fn user_version(&self) -> Result<i64, StateError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(on(&self.path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database (always [`SCHEMA_VERSION`] once open).
    pub fn schema_version(&self) -> Result<i64, StateError> {
        self.user_version()
    }

    /// `PRAGMA quick_check`: the structure of every page and index (not the index contents
    /// against the table, which `integrity_check` adds at several times the cost). A damaged
    /// database is [`StateError::Corrupt`] with SQLite's first findings.
    pub fn check(&self) -> Result<(), StateError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA quick_check(10)")
            .map_err(on(&self.path))?;
        let found: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(on(&self.path))?;
        if found.len() == 1 && found.first().is_some_and(|s| s == "ok") {
            return Ok(());
        }
        Err(StateError::Corrupt {
            path: self.path.clone(),
            detail: found.join("; "),
        })
    }

    /// Saves a named blob (the scorer's shared-bot table, its watch list), replacing the
    /// previous one of that name.
    pub fn save_blob(
        &mut self,
        key: &str,
        version: i64,
        bytes: &[u8],
        saved: SystemTime,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO scorer_state (key, version, bytes, saved) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET
                   version = excluded.version, bytes = excluded.bytes, saved = excluded.saved",
                rusqlite::params![key, version, bytes, to_unix(saved)],
            )
            .map_err(on(&self.path))?;
        Ok(())
    }

    /// The blob saved under `key`, if any.
    pub fn load_blob(&self, key: &str) -> Result<Option<Blob>, StateError> {
        self.conn
            .query_row(
                "SELECT version, bytes, saved FROM scorer_state WHERE key = ?1",
                [key],
                |r| {
                    Ok(Blob {
                        version: r.get(0)?,
                        bytes: r.get(1)?,
                        saved: from_unix(r.get(2)?),
                    })
                },
            )
            .optional()
            .map_err(on(&self.path))
    }

    /// Caps the database at `pages` pages (`PRAGMA max_page_count`): past it a write fails as
    /// on a full disk. For tests of the full-disk path, and for an operator who wants a hard
    /// bound on the file.
    pub fn set_max_pages(&self, pages: u32) -> Result<i64, StateError> {
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })
            .map_err(on(&self.path))
    }

    /// Bounds the verdict journal at `rows` instead of [`crate::MAX_VERDICT_ROWS`] (at least
    /// one row); the next journal write prunes down to it.
    pub fn set_journal_cap(&mut self, rows: u64) {
        self.journal_cap = rows.max(1);
    }

    /// Writes the WAL back into the database file and truncates it (the agent calls it at a
    /// quiet moment, e.g. on shutdown, so the `-wal` file does not stay large after a big feed).
    pub fn checkpoint(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(on(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(s.load_blob("shared_bots").unwrap(), None);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        s.save_blob("shared_bots", 1, b"abc", t).unwrap();
        s.save_blob("shared_bots", 2, b"xyz", t).unwrap();
        let b = s.load_blob("shared_bots").unwrap().unwrap();
        assert_eq!(
            (b.version, b.bytes.as_slice(), b.saved),
            (2, &b"xyz"[..], t)
        );
    }
}
