//! The `feeds` table and the atomic swap of a feed's entries. A feed's rows in `entries` carry
//! the source `feed:NAME`; [`Store::apply_feed`] replaces all of them in one transaction, so a
//! reader sees the old set or the new one, never a mix, and a failure (a full disk) keeps the
//! old set whole.

use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension as _, Row, TransactionBehavior, params};
use serde::Serialize;

use crate::{
    Store,
    entry_table::{Removed, parse_targets, remove_source_in},
    state_error::{StateError, on},
    state_types::{Action, Kind, Source, Target},
    unix_time::{from_unix, to_unix},
};

/// One feed and its fetch state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeedRecord {
    pub name: String,
    /// A path or a URL.
    pub location: String,
    /// The format name (`auto`, `hosts`, `stix`, ...: the feed parser's; stored as given).
    pub format: String,
    pub action: Action,
    /// How long an entry lasts after each refresh; `None`: until the feed drops it.
    pub ttl: Option<Duration>,
    /// How often it is fetched again; `None`: only by `feed update`.
    pub refresh: Option<Duration>,
    /// HTTP validators of the last good fetch, sent back as `If-None-Match` and
    /// `If-Modified-Since`.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    #[serde(serialize_with = "crate::ser_opt_time")]
    pub last_refresh: Option<SystemTime>,
    /// `ok: N entries`, or what went wrong (the previous entries were kept).
    pub last_result: Option<String>,
    /// Rows of this feed in `entries`.
    pub entry_count: u64,
}

impl FeedRecord {
    /// A feed not fetched yet.
    pub fn new(name: &str, location: &str, format: &str, action: Action) -> Self {
        Self {
            name: name.to_owned(),
            location: location.to_owned(),
            format: format.to_owned(),
            action,
            ttl: None,
            refresh: None,
            etag: None,
            last_modified: None,
            last_refresh: None,
            last_result: None,
            entry_count: 0,
        }
    }
}

/// What a successful fetch brought beside the entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeedFetch {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// When it was fetched (`last_refresh`).
    pub at: Option<SystemTime>,
}

/// What [`Store::apply_feed`] changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FeedApplied {
    /// The feed's rows now.
    pub count: usize,
    /// Targets no source held before: to add to the maps.
    pub added: Vec<(Kind, Target)>,
    /// Targets the feed dropped that no other source holds: to remove from the maps.
    pub gone: Vec<(Kind, Target)>,
    /// Targets the feed already held whose row changed (a renewed expiry, another action or
    /// reason): their map entries are to be rewritten from all their sources.
    pub renewed: Vec<(Kind, Target)>,
}

const FEED_COLUMNS: &str = "name, location, format, action, ttl, refresh, etag, last_modified, \
                            last_refresh, last_result, entry_count";

fn secs(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn read_feed(r: &Row<'_>) -> rusqlite::Result<(FeedRecord, String)> {
    let dur = |v: Option<i64>| v.map(|s| Duration::from_secs(s.unsigned_abs()));
    let rec = FeedRecord {
        name: r.get(0)?,
        location: r.get(1)?,
        format: r.get(2)?,
        action: Action::Block,
        ttl: dur(r.get(4)?),
        refresh: dur(r.get(5)?),
        etag: r.get(6)?,
        last_modified: r.get(7)?,
        last_refresh: r.get::<_, Option<i64>>(8)?.map(from_unix),
        last_result: r.get(9)?,
        entry_count: r.get::<_, i64>(10)?.unsigned_abs(),
    };
    Ok((rec, r.get(3)?))
}

impl Store {
    /// Adds a feed, or changes its settings (location, format, action, ttl, refresh); its fetch
    /// state and entries stay.
    pub fn upsert_feed(&mut self, f: &FeedRecord) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO feeds (name, location, format, action, ttl, refresh)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET
                   location = excluded.location, format = excluded.format,
                   action = excluded.action, ttl = excluded.ttl, refresh = excluded.refresh",
                params![
                    f.name,
                    f.location,
                    f.format,
                    f.action.as_str(),
                    secs(f.ttl),
                    secs(f.refresh)
                ],
            )
            .map_err(on(&self.path))?;
        Ok(())
    }

    pub fn feed(&self, name: &str) -> Result<Option<FeedRecord>, StateError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {FEED_COLUMNS} FROM feeds WHERE name = ?1"),
                [name],
                read_feed,
            )
            .optional()
            .map_err(on(&self.path))?;
        row.map(|(mut f, action)| {
            f.action = action.parse().map_err(self.bad_row())?;
            Ok(f)
        })
        .transpose()
    }

    /// Every feed, by name.
    pub fn feeds(&self) -> Result<Vec<FeedRecord>, StateError> {
        let err = on(&self.path);
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {FEED_COLUMNS} FROM feeds ORDER BY name"))
            .map_err(&err)?;
        let rows: Vec<(FeedRecord, String)> = stmt
            .query_map([], read_feed)
            .and_then(|r| r.collect())
            .map_err(&err)?;
        rows.into_iter()
            .map(|(mut f, action)| {
                f.action = action.parse().map_err(self.bad_row())?;
                Ok(f)
            })
            .collect()
    }

    /// Records a fetch that changed nothing (`304 Not Modified`) or failed (the entries stay as
    /// they were): `last_refresh` and `last_result` only.
    pub fn record_feed_result(
        &mut self,
        name: &str,
        at: SystemTime,
        result: &str,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE feeds SET last_refresh = ?2, last_result = ?3 WHERE name = ?1",
                params![name, to_unix(at), result],
            )
            .map_err(on(&self.path))?;
        Ok(())
    }

    /// Removes a feed and all its entries in one transaction; a target another source holds
    /// stays. `None` when there was no such feed.
    pub fn remove_feed(&mut self, name: &str) -> Result<Option<Removed>, StateError> {
        let err = on(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let had = tx
            .execute("DELETE FROM feeds WHERE name = ?1", [name])
            .map_err(&err)?;
        if had == 0 {
            return Ok(None);
        }
        let (rows, gone) = remove_source_in(&tx, &Source::feed(name).to_string()).map_err(&err)?;
        tx.commit().map_err(&err)?;
        let gone = parse_targets(gone).map_err(self.bad_row())?;
        Ok(Some(Removed { rows, gone }))
    }
}
