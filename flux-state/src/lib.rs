//! flux-state: the agent's durable record, in SQLite (rusqlite, the bundled library).
//!
//! The database is the record and the pinned maps are the enforcement: a change is written
//! here in a transaction, then to the maps; [`reconcile`] repairs a crash between the two at
//! the next start. What lives here:
//! - [`Store`] (`store`): open (WAL, busy timeout, schema check and migrations), integrity
//!   check, the scorer's saved blobs;
//! - `migrations`: the versioned schema ([`SCHEMA_VERSION`]);
//! - `entry_table`: blocks and allowlist entries, one row per source, and the effective view;
//! - `feed_table`: the feeds and the atomic swap of a feed's entries;
//! - `upsert_batch`: the feed swap's rows written many to a statement;
//! - `verdict_journal`: the bounded journal of verdicts;
//! - [`reconcile`]: the pure database-versus-maps comparison;
//! - [`export`]: what the agent found or blocked as STIX 2.1, MISP, CSV, hosts or a plain list.
//!
//! What it may touch: the database file it is given (and SQLite's `-wal`/`-shm` beside it), and
//! the writers it is handed for exports. No maps, no network; the agent converts its own
//! targets and verdicts to this crate's types. docs/state.md describes the schema and bounds.

mod entry_table;
pub mod export;
mod feed_swap;
mod feed_table;
pub mod migrations;
pub mod reconcile;
mod state_error;
mod state_types;
mod store;
mod unix_time;
mod upsert_batch;
mod verdict_journal;

#[cfg(test)]
mod store_tests;

use std::time::SystemTime;

pub use entry_table::{Expired, Removed, enforced, fold_effective};
pub use feed_swap::RENEW_BELOW;
pub use feed_table::{FeedApplied, FeedFetch, FeedRecord};
pub use migrations::SCHEMA_VERSION;
pub use reconcile::{Reconciled, reconcile};
pub use state_error::StateError;
pub use state_types::{
    Action, BadValue, EffectiveEntry, Entry, Kind, Level, Source, SourceFilter, Target, TargetType,
};
pub use store::{BUSY_TIMEOUT, Blob, DEFAULT_STATE_PATH, Store};
pub use unix_time::{from_unix, to_unix};
pub use verdict_journal::{
    MAX_ADDRESSES_PER_VERDICT, MAX_VERDICT_ROWS, ReasonRecord, VerdictRecord,
};

/// RFC 3339, UTC, whole seconds: how this crate's records serialise times.
pub(crate) fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}

pub(crate) fn ser_opt_time<S: serde::Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}
