//! The one error type of this crate. Every variant names the database file, so a caller can
//! report it as it is. What the agent does on each (keep enforcing from the pins, go on after a
//! full disk) is the agent's; this only sorts SQLite's result codes into what a caller can act
//! on.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use crate::state_types::BadValue;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not a database, or a damaged one. Never replaced or repaired by this crate: move it
    /// aside by hand (and keep it for a look) to start a new one.
    #[error(
        "{path}: the state database is corrupt ({detail}); it was left as it is: move it aside \
         to start a new one"
    )]
    Corrupt { path: PathBuf, detail: String },
    /// Cannot be opened or read: missing, permissions, a directory, I/O error.
    #[error("{path}: cannot open the state database: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The disk (or the database's page limit) is full: the write was rolled back whole; what
    /// was there before is intact.
    #[error("{path}: disk full, the write was not made (the database is unchanged)")]
    Full { path: PathBuf },
    /// Another process held the write lock longer than [`crate::BUSY_TIMEOUT`]; nothing was
    /// written. Worth a retry later.
    #[error(
        "{path}: another process kept the state database locked for more than {secs} s; \
         nothing was written"
    )]
    Busy { path: PathBuf, secs: u64 },
    /// Written by a newer flux-agent: this one does not know its schema and does not touch it.
    #[error(
        "{path}: the state database has schema version {found}, newer than this flux-agent \
         knows ({supported}); upgrade flux-agent, or move the file aside"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// Opened read-only before any read-write open migrated it.
    #[error(
        "{path}: the state database has schema version {found}, this flux-agent needs \
         {supported}; it is migrated when the agent opens it for writing"
    )]
    NotMigrated {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A stored value that is not one of ours (a hand-edited row).
    #[error("{path}: bad stored value: {source}")]
    BadRow {
        path: PathBuf,
        #[source]
        source: BadValue,
    },
    /// A caller's mistake (an unknown feed, a source of the wrong kind).
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl StateError {
    /// Sorts a SQLite error from an operation on `path`.
    pub(crate) fn from_sqlite(path: &Path, e: rusqlite::Error) -> Self {
        let path = path.to_owned();
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Self::Full { path },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Busy {
                path,
                secs: crate::BUSY_TIMEOUT.as_secs(),
            },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Self::Corrupt {
                path,
                detail: e.to_string(),
            },
            Some(
                ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::SystemIoFailure,
            ) => Self::Unreadable { path, source: e },
            _ => Self::Sqlite { path, source: e },
        }
    }

    /// Whether a caller may go on (report it and keep enforcing): the disk is full.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full { .. })
    }

    /// Whether the same write may succeed later without anyone's help: a full disk (space may
    /// be freed) or a lock held too long.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Full { .. } | Self::Busy { .. })
    }
}

/// `.map_err(on(path))` for any rusqlite result.
pub(crate) fn on(path: &Path) -> impl Fn(rusqlite::Error) -> StateError + '_ {
    move |e| StateError::from_sqlite(path, e)
}
