//! The `entries` table: every block and allowlist entry, one row per (kind, target, source).
//! Adding, removing one source's rows, expiring, and the effective view (a target held by at
//! least one live source, with the latest expiry), which is what belongs in the pinned maps.
//!
//! Every change that can make a target disappear returns the targets no source holds any more
//! (`gone`): the agent removes exactly those from the maps.

use std::time::SystemTime;

use rusqlite::{Row, Transaction, TransactionBehavior, params};
use serde::Serialize;

use crate::{
    Store,
    state_error::{StateError, on},
    state_types::{Action, BadValue, EffectiveEntry, Entry, Kind, Source, Target},
    unix_time::{from_unix, to_unix},
};

/// The columns of an [`Entry`], in the order [`RawEntry::read`] reads them.
pub(crate) const ENTRY_COLUMNS: &str =
    "kind, target_type, target, action, source, reason, score, added, expires, subdomains";

/// A stored (kind, target_type, target) before parsing.
pub(crate) type RawTarget = (String, String, String);

/// Upsert of one row: a source re-adding its target renews action, reason, score and expiry;
/// `added` stays the first time that source added it.
pub(crate) const UPSERT_ENTRY: &str = "
INSERT INTO entries (kind, target_type, target, action, source, reason, score, added, expires,
                     subdomains)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (kind, target_type, target, source) DO UPDATE SET
    action = excluded.action, reason = excluded.reason, score = excluded.score,
    expires = excluded.expires, subdomains = excluded.subdomains";

/// A row as stored, before its text is parsed.
pub(crate) struct RawEntry {
    kind: String,
    target_type: String,
    target: String,
    action: String,
    source: String,
    reason: String,
    score: Option<f64>,
    added: i64,
    expires: Option<i64>,
    subdomains: bool,
}

impl RawEntry {
    pub(crate) fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            kind: r.get(0)?,
            target_type: r.get(1)?,
            target: r.get(2)?,
            action: r.get(3)?,
            source: r.get(4)?,
            reason: r.get(5)?,
            score: r.get(6)?,
            added: r.get(7)?,
            expires: r.get(8)?,
            subdomains: r.get(9)?,
        })
    }

    pub(crate) fn entry(self) -> Result<Entry, BadValue> {
        Ok(Entry {
            kind: self.kind.parse()?,
            target: Target::parse(self.target_type.parse()?, &self.target)?,
            action: self.action.parse()?,
            source: self.source.parse()?,
            reason: self.reason,
            score: self.score,
            added: from_unix(self.added),
            expires: self.expires.map(from_unix),
            subdomains: self.subdomains,
        })
    }
}

/// What a removal did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Removed {
    /// Rows deleted.
    pub rows: usize,
    /// Targets no source holds any more: to remove from the maps.
    pub gone: Vec<(Kind, Target)>,
}

/// What [`Store::expire`] did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Expired {
    /// The rows that expired (each source's own).
    pub rows: Vec<Entry>,
    /// Targets no source holds any more: to remove from the maps.
    pub gone: Vec<(Kind, Target)>,
}

/// Binds an entry to [`UPSERT_ENTRY`].
pub(crate) fn upsert(
    stmt: &mut rusqlite::Statement<'_>,
    e: &Entry,
    source: &str,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        e.kind.as_str(),
        e.target.target_type().as_str(),
        e.target.to_string(),
        e.action.as_str(),
        source,
        e.reason,
        e.score,
        to_unix(e.added),
        e.expires.map(to_unix),
        e.subdomains,
    ])
}

/// Fills the temporary table `cand` with the (kind, type, target) of the rows `select` returns,
/// before they are deleted, so [`gone`] can tell which targets lost their last row.
pub(crate) fn stage(
    tx: &Transaction<'_>,
    select: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS cand (
             kind TEXT NOT NULL, target_type TEXT NOT NULL, target TEXT NOT NULL,
             PRIMARY KEY (kind, target_type, target)) WITHOUT ROWID;
         DELETE FROM temp.cand;",
    )?;
    tx.execute(&format!("INSERT OR IGNORE INTO temp.cand {select}"), p)?;
    Ok(())
}

/// The staged targets no row holds any more.
pub(crate) fn gone(tx: &Transaction<'_>) -> rusqlite::Result<Vec<RawTarget>> {
    let mut stmt = tx.prepare(
        "SELECT kind, target_type, target FROM temp.cand c WHERE NOT EXISTS (
             SELECT 1 FROM entries e
             WHERE e.kind = c.kind AND e.target_type = c.target_type AND e.target = c.target)",
    )?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

/// Parses `gone`'s rows.
pub(crate) fn parse_targets(rows: Vec<RawTarget>) -> Result<Vec<(Kind, Target)>, BadValue> {
    rows.into_iter()
        .map(|(k, t, v)| Ok((k.parse()?, Target::parse(t.parse()?, &v)?)))
        .collect()
}

/// Deletes every row of source `src` in `tx`: the rows deleted and the targets left with none.
pub(crate) fn remove_source_in(
    tx: &Transaction<'_>,
    src: &str,
) -> rusqlite::Result<(usize, Vec<RawTarget>)> {
    stage(
        tx,
        "SELECT kind, target_type, target FROM entries WHERE source = ?1",
        [src],
    )?;
    let rows = tx.execute("DELETE FROM entries WHERE source = ?1", [src])?;
    Ok((rows, gone(tx)?))
}

/// Groups rows of the same (kind, target), which must be adjacent, into effective entries.
pub fn fold_effective(rows: impl IntoIterator<Item = Entry>) -> Vec<EffectiveEntry> {
    let mut out: Vec<EffectiveEntry> = Vec::new();
    for e in rows {
        match out.last_mut() {
            Some(last) if last.kind == e.kind && last.target == e.target => merge(last, e),
            _ => out.push(EffectiveEntry {
                kind: e.kind,
                target: e.target,
                action: e.action,
                sources: vec![e.source],
                score: e.score,
                added: e.added,
                expires: e.expires,
                reason: e.reason,
                subdomains: e.subdomains,
            }),
        }
    }
    for e in &mut out {
        e.sources.sort();
    }
    out
}

/// Adds one more source's row to an effective entry.
fn merge(into: &mut EffectiveEntry, e: Entry) {
    into.action = into.action.max(e.action);
    into.sources.push(e.source);
    into.score = match (into.score, e.score) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    into.added = into.added.min(e.added);
    into.subdomains |= e.subdomains;
    // Later expiry wins, and "never" (None) is the latest; the reason follows it.
    let longer = match (into.expires, e.expires) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(a), Some(b)) => b > a,
    };
    if longer {
        into.expires = e.expires;
        into.reason = e.reason;
    }
}

impl Store {
    pub(crate) fn bad_row(&self) -> impl Fn(BadValue) -> StateError + '_ {
        |source| StateError::BadRow {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn read_entries(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<Entry>, StateError> {
        let err = on(&self.path);
        let mut stmt = self.conn.prepare_cached(sql).map_err(&err)?;
        let raw: Vec<RawEntry> = stmt
            .query_map(p, RawEntry::read)
            .and_then(|rows| rows.collect())
            .map_err(&err)?;
        raw.into_iter()
            .map(|r| r.entry().map_err(self.bad_row()))
            .collect()
    }

    /// Adds (or renews) rows in one transaction: all or none. Returns the rows written.
    pub fn add_entries(&mut self, entries: &[Entry]) -> Result<usize, StateError> {
        let err = on(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        {
            let mut stmt = tx.prepare_cached(UPSERT_ENTRY).map_err(&err)?;
            for e in entries {
                upsert(&mut stmt, e, &e.source.to_string()).map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        Ok(entries.len())
    }

    /// Removes one target's rows: of one source, or (`None`) of every source.
    pub fn remove(
        &mut self,
        kind: Kind,
        target: &Target,
        source: Option<&Source>,
    ) -> Result<Removed, StateError> {
        let (t, v) = (target.target_type().as_str(), target.to_string());
        let src = source.map(ToString::to_string);
        let err = on(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let rows = tx
            .execute(
                "DELETE FROM entries WHERE kind = ?1 AND target_type = ?2 AND target = ?3
                   AND (?4 IS NULL OR source = ?4)",
                params![kind.as_str(), t, v, src],
            )
            .map_err(&err)?;
        let left: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM entries
                   WHERE kind = ?1 AND target_type = ?2 AND target = ?3)",
                params![kind.as_str(), t, v],
                |r| r.get(0),
            )
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        let gone = if rows > 0 && !left {
            vec![(kind, target.clone())]
        } else {
            Vec::new()
        };
        Ok(Removed { rows, gone })
    }

    /// Removes every row of `source` (a feed, a fleet peer) in one transaction. A target
    /// another source also holds stays.
    pub fn remove_source(&mut self, source: &Source) -> Result<Removed, StateError> {
        let err = on(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let (rows, gone) = remove_source_in(&tx, &source.to_string()).map_err(&err)?;
        tx.commit().map_err(&err)?;
        let gone = parse_targets(gone).map_err(self.bad_row())?;
        Ok(Removed { rows, gone })
    }

    /// Deletes the rows expired at `now` and returns them, with the targets no source holds
    /// any more.
    pub fn expire(&mut self, now: SystemTime) -> Result<Expired, StateError> {
        let now = to_unix(now);
        let err = on(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        // Read, staged and deleted under the one write lock: a row another writer adds
        // meanwhile is either in all three or in none.
        let expired = "FROM entries WHERE expires IS NOT NULL AND expires <= ?1";
        let raw: Vec<RawEntry> = tx
            .prepare(&format!("SELECT {ENTRY_COLUMNS} {expired}"))
            .and_then(|mut stmt| stmt.query_map([now], RawEntry::read)?.collect())
            .map_err(&err)?;
        if raw.is_empty() {
            return Ok(Expired::default());
        }
        stage(
            &tx,
            &format!("SELECT kind, target_type, target {expired}"),
            [now],
        )
        .map_err(&err)?;
        tx.execute(&format!("DELETE {expired}"), [now])
            .map_err(&err)?;
        let gone = gone(&tx).map_err(&err)?;
        tx.commit().map_err(&err)?;
        let rows = raw
            .into_iter()
            .map(|r| r.entry().map_err(self.bad_row()))
            .collect::<Result<_, _>>()?;
        let gone = parse_targets(gone).map_err(self.bad_row())?;
        Ok(Expired { rows, gone })
    }

    /// Every target held by at least one source live at `now` (of one kind, or both), with
    /// the strongest action and the latest expiry of its live sources: what the maps hold.
    pub fn effective_entries(
        &self,
        kind: Option<Kind>,
        now: SystemTime,
    ) -> Result<Vec<EffectiveEntry>, StateError> {
        let rows = self.read_entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM entries
                 WHERE (expires IS NULL OR expires > ?1) AND (?2 IS NULL OR kind = ?2)
                 ORDER BY kind, target_type, target"
            ),
            params![to_unix(now), kind.map(Kind::as_str)],
        )?;
        Ok(fold_effective(rows))
    }

    /// Whether a source live at `now` holds `target` as a `kind` entry with an enforced action:
    /// whether [`Self::effective_entries`] at `now` gives it with [`enforced`], i.e. whether it
    /// belongs in the maps. One lookup on the primary key, nothing parsed: the agent asks it
    /// before each map removal of a target a transaction found gone, which a feed's swap makes
    /// by the hundred thousand (the rows read whole by [`Self::entries_for`] took 18 us each).
    pub fn holds_enforced(
        &self,
        kind: Kind,
        target: &Target,
        now: SystemTime,
    ) -> Result<bool, StateError> {
        let err = on(&self.path);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM entries
                 WHERE kind = ?1 AND target_type = ?2 AND target = ?3
                   AND (expires IS NULL OR expires > ?4) AND action != ?5)",
            )
            .map_err(&err)?;
        stmt.query_row(
            params![
                kind.as_str(),
                target.target_type().as_str(),
                target.to_string(),
                to_unix(now),
                Action::Report.as_str()
            ],
            |r| r.get(0),
        )
        .map_err(&err)
    }

    /// Every row (each source's, live or not) for one target.
    pub fn entries_for(&self, kind: Kind, target: &Target) -> Result<Vec<Entry>, StateError> {
        self.read_entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM entries
                 WHERE kind = ?1 AND target_type = ?2 AND target = ?3 ORDER BY source"
            ),
            params![
                kind.as_str(),
                target.target_type().as_str(),
                target.to_string()
            ],
        )
    }

    /// Whether any row at all is stored (the agent's "restore from the database" needs one).
    pub fn entry_count(&self) -> Result<u64, StateError> {
        self.conn
            .query_row("SELECT count(*) FROM entries", [], |r| r.get::<_, i64>(0))
            .map(|n| n.unsigned_abs())
            .map_err(on(&self.path))
    }
}

/// Whether an effective entry belongs in the pinned maps (its action is enforced).
pub fn enforced(e: &EffectiveEntry) -> bool {
    Action::enforced(e.action)
}
