//! The schema, as an ordered list of migrations. Version N of the database is what the first N
//! migrations make; `PRAGMA user_version` holds N. A new schema change is a new entry at the end,
//! never an edit of an old one (a database in the field has run the old ones).
//!
//! What it may touch: the connection it is given, inside the caller's transaction.

use rusqlite::Transaction;

/// Migration `i` (0-based) takes the database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[V1, V2];

/// The version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: the first schema.
///
/// - `entries`: one row per (kind, target, source). The same target may be held by several
///   sources; removing a source removes only its rows. `WITHOUT ROWID` because the key is the
///   row (a million-row feed takes half the space of a rowid table with a unique index).
///   Times are Unix seconds; `expires` NULL is "until removed". No index on `source`: one
///   more B-tree as large as the table made a million-entry feed swap 20% slower and the file
///   40% larger, while the queries by source (a feed swap, `feed remove`) scan the table in
///   file order, about 0.2 s for a million rows.
/// - `feeds`: one row per feed and its fetch state.
/// - `verdicts`: the journal, one row per (domain, level), bounded by
///   `crate::verdict_journal::MAX_VERDICT_ROWS` (oldest `last_seen` pruned).
/// - `scorer_state`: named blobs (the scorer's shared-bot table, its watch list).
pub const V1: &str = "
CREATE TABLE entries (
    kind TEXT NOT NULL CHECK (kind IN ('block', 'allow')),
    target_type TEXT NOT NULL CHECK (target_type IN ('ip', 'cidr', 'domain')),
    target TEXT NOT NULL,
    action TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    score REAL,
    added INTEGER NOT NULL,
    expires INTEGER,
    PRIMARY KEY (kind, target_type, target, source)
) WITHOUT ROWID;
CREATE INDEX entries_by_expiry ON entries (expires) WHERE expires IS NOT NULL;

CREATE TABLE feeds (
    name TEXT PRIMARY KEY NOT NULL,
    location TEXT NOT NULL,
    format TEXT NOT NULL,
    action TEXT NOT NULL,
    ttl INTEGER,
    refresh INTEGER,
    etag TEXT,
    last_modified TEXT,
    last_refresh INTEGER,
    last_result TEXT,
    entry_count INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE verdicts (
    domain TEXT NOT NULL,
    level TEXT NOT NULL,
    score REAL NOT NULL,
    reasons TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    addresses TEXT NOT NULL,
    PRIMARY KEY (domain, level)
);
CREATE INDEX verdicts_by_last_seen ON verdicts (last_seen);

CREATE TABLE scorer_state (
    key TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL,
    bytes BLOB NOT NULL,
    saved INTEGER NOT NULL
);
";

/// Version 2: whether a domain entry covers the names under it. Every entry written before
/// did (the maps block a name and its subdomains), hence the default.
pub const V2: &str = "
ALTER TABLE entries ADD COLUMN subdomains INTEGER NOT NULL DEFAULT 1;
";

/// Runs the migrations from `from` to [`SCHEMA_VERSION`] in the caller's transaction, and sets
/// `user_version`. Nothing is committed here: a failure leaves the old version whole.
pub fn migrate(tx: &Transaction<'_>, from: i64) -> rusqlite::Result<()> {
    let start = usize::try_from(from).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(sql)?;
        log::info!("state database migrated to schema version {}", i + 1);
    }
    // PRAGMA takes no parameters; the value is our own constant.
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
}
