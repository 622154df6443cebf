//! [`Store::apply_feed`]: the swap of a feed's entries, written as the difference between the
//! rows the feed holds and the list it brought, in one transaction (a reader sees the old set or
//! the new one, never a mix; a failure such as a full disk keeps the old set whole).
//!
//! Why a difference and not "delete the feed's rows, insert the list": a feed refresh usually
//! changes a handful of a million lines. Rewriting them all cost about 7 s of CPU for a million
//! names (B-tree work in SQLite, twice: the rows and the expiry index), and the agent then
//! rewrote a million map entries. Written as a difference, an unchanged refresh writes nothing
//! and a first load writes each row once.
//!
//! Touches only the `entries` and `feeds` tables.

use std::{collections::HashSet, time::Duration};

use rusqlite::{OptionalExtension as _, Transaction, TransactionBehavior, params};

use crate::{
    Store,
    entry_table::{RawTarget, parse_targets},
    feed_table::{FeedApplied, FeedFetch},
    state_error::StateError,
    state_types::{Entry, Source},
    unix_time::to_unix,
    upsert_batch::UpsertBatch,
};

/// A feed entry's expiry is renewed only once less than this fraction of its ttl remains. Each
/// refresh of a feed with `--ttl` would otherwise rewrite every row and every map entry (an
/// hourly refresh of a million names with a day's ttl: a million writes an hour, for an expiry
/// that only matters if the feed stops being refreshed). With a half, an entry the feed keeps
/// listing never comes closer than ttl/2 to expiring, and one a dead feed no longer renews
/// expires between ttl/2 and ttl after the last load that listed it.
pub const RENEW_BELOW: f64 = 0.5;

/// The values of a stored feed row a load may change (`added` stays the first load's), read
/// in place from the row: nothing is allocated for each of a million unchanged entries.
#[derive(Clone, Copy, Debug, PartialEq)]
struct RowView<'r> {
    action: &'r str,
    reason: &'r str,
    score: Option<f64>,
    expires: Option<i64>,
    subdomains: bool,
}

impl RowView<'_> {
    /// Whether the stored row already says what the list's entry says, an expiry still more
    /// than [`RENEW_BELOW`] of `ttl` away counting as the same.
    fn holds(&self, new: &Entry, ttl: Option<Duration>) -> bool {
        let expiry_holds = match (self.expires, new.expires.map(to_unix), ttl) {
            (Some(stored), Some(wanted), Some(ttl)) => {
                // Whole seconds, as stored; a ttl under two seconds renews at every load.
                let slack = (ttl.as_secs_f64() * RENEW_BELOW) as i64;
                stored <= wanted && stored > wanted.saturating_sub(slack)
            }
            (stored, wanted, _) => stored == wanted,
        };
        expiry_holds
            && self.action == new.action.as_str()
            && self.reason == new.reason
            && self.score == new.score
            && self.subdomains == new.subdomains
    }
}

/// Writes the key of a row within one source, (kind, target type, target) tab-joined, into
/// `k`. Keys compare as the primary key's columns do: no kind or target type is a prefix of
/// another, and a tab sorts before any character of a target, so the order of the joined
/// text is the order of (kind, target_type, target), SQLite's and Rust's both bytewise.
fn key_into(k: &mut String, kind: &str, target_type: &str, target: &str) {
    k.clear();
    k.reserve(kind.len() + target_type.len() + target.len() + 2);
    k.push_str(kind);
    k.push('\t');
    k.push_str(target_type);
    k.push('\t');
    k.push_str(target);
}

/// The key of a row, in a new string.
fn key(kind: &str, target_type: &str, target: &str) -> String {
    let mut k = String::new();
    key_into(&mut k, kind, target_type, target);
    k
}

fn split(key: &str) -> Option<RawTarget> {
    let mut parts = key.splitn(3, '\t');
    Some((
        parts.next()?.to_owned(),
        parts.next()?.to_owned(),
        parts.next()?.to_owned(),
    ))
}

impl Store {
    /// Replaces every entry of feed `name` with `entries` in one transaction (their `source` is
    /// set to `feed:NAME`; a target given twice keeps the last), and records the fetch. The
    /// feed must have been added ([`Store::upsert_feed`]). On any error nothing changed.
    ///
    /// Only the difference is written: rows the list no longer holds are deleted, new ones
    /// inserted, changed ones updated; an expiry with more than [`RENEW_BELOW`] of the feed's
    /// ttl left is not rewritten.
    pub fn apply_feed(
        &mut self,
        name: &str,
        entries: &[Entry],
        fetch: &FeedFetch,
    ) -> Result<FeedApplied, StateError> {
        let src = Source::feed(name).to_string();
        let err = crate::state_error::on(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let ttl: Option<Option<i64>> = tx
            .query_row("SELECT ttl FROM feeds WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(&err)?;
        let Some(ttl) = ttl else {
            return Err(StateError::Invalid {
                path: self.path.clone(),
                what: format!("no feed named '{name}'"),
            });
        };
        let ttl = ttl.map(|s| Duration::from_secs(s.unsigned_abs()));
        let others = other_keys(&tx, &src).map_err(&err)?;
        let listed = sorted_list(entries);
        let diff = diff(&tx, &src, &listed, ttl).map_err(&err)?;
        let written = write_list(&tx, &src, &listed, &diff, &others).map_err(&err)?;
        let gone = delete_unlisted(&tx, &src, diff.unlisted, &others).map_err(&err)?;
        tx.execute(
            "UPDATE feeds SET entry_count = ?2, last_result = ?3, last_refresh = ?4,
                 etag = ?5, last_modified = ?6 WHERE name = ?1",
            params![
                name,
                i64::try_from(listed.len()).unwrap_or(i64::MAX),
                format!("ok: {} entries", listed.len()),
                fetch.at.map(to_unix),
                fetch.etag,
                fetch.last_modified
            ],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        // Each list in target order (the order rows were written in).
        Ok(FeedApplied {
            count: listed.len(),
            added: written.added,
            gone: parse_targets(gone).map_err(self.bad_row())?,
            renewed: written.renewed,
        })
    }
}

/// The keys every other source holds: one read of their rows instead of a lookup for each of a
/// million targets (the other sources are usually the scorer's and the operator's few thousand
/// blocks; another big feed is read once, sequentially).
fn other_keys(tx: &Transaction<'_>, src: &str) -> rusqlite::Result<HashSet<String>> {
    let mut stmt =
        tx.prepare("SELECT kind, target_type, target FROM entries WHERE source != ?1")?;
    let mut rows = stmt.query([src])?;
    let mut keys = HashSet::new();
    while let Some(r) = rows.next()? {
        keys.insert(key(
            r.get_ref(0)?.as_str()?,
            r.get_ref(1)?.as_str()?,
            r.get_ref(2)?.as_str()?,
        ));
    }
    Ok(keys)
}

/// The list as rows, each with its key, in key order. Walked from the end and sorted stably:
/// of a target given twice, the last comes first in its run, and is the one kept.
fn sorted_list(entries: &[Entry]) -> Vec<(String, &Entry)> {
    let mut listed: Vec<(String, &Entry)> = entries
        .iter()
        .rev()
        .map(|e| {
            let k = key(
                e.kind.as_str(),
                e.target.target_type().as_str(),
                &e.target.to_string(),
            );
            (k, e)
        })
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    listed.dedup_by(|later, first| later.0 == first.0);
    listed
}

/// How the list differs from the rows `src` holds.
struct Diff {
    /// Indexes into the list of rows to write, in key order, each `true` when a stored row is
    /// renewed and `false` when the row is new to this source.
    writes: Vec<(usize, bool)>,
    /// The keys of stored rows the list no longer names, in key order.
    unlisted: Vec<String>,
}

/// Compares the sorted list with the rows `src` holds, read in key order beside it (a merge:
/// no map of a million stored rows in memory, which took a reload's peak to 543–634 MB).
/// Reads only; the writes come after, never under the open cursor.
fn diff(
    tx: &Transaction<'_>,
    src: &str,
    listed: &[(String, &Entry)],
    ttl: Option<Duration>,
) -> rusqlite::Result<Diff> {
    // The primary key's order: the table is walked in it, no sort.
    let mut stmt = tx.prepare(
        "SELECT kind, target_type, target, action, reason, score, expires, subdomains
         FROM entries WHERE source = ?1 ORDER BY kind, target_type, target",
    )?;
    let mut rows = stmt.query([src])?;
    let mut out = Diff {
        writes: Vec::new(),
        unlisted: Vec::new(),
    };
    let (mut next, mut k) = (0, String::new());
    while let Some(r) = rows.next()? {
        key_into(
            &mut k,
            r.get_ref(0)?.as_str()?,
            r.get_ref(1)?.as_str()?,
            r.get_ref(2)?.as_str()?,
        );
        // Listed keys before this stored one are new.
        while listed.get(next).is_some_and(|(lk, _)| *lk < k) {
            out.writes.push((next, false));
            next += 1;
        }
        match listed.get(next) {
            Some((lk, e)) if *lk == k => {
                let stored = RowView {
                    action: r.get_ref(3)?.as_str()?,
                    reason: r.get_ref(4)?.as_str()?,
                    score: r.get(5)?,
                    expires: r.get(6)?,
                    subdomains: r.get(7)?,
                };
                if !stored.holds(e, ttl) {
                    out.writes.push((next, true));
                }
                next += 1;
            }
            _ => out.unlisted.push(k.clone()),
        }
    }
    out.writes.extend((next..listed.len()).map(|i| (i, false)));
    Ok(out)
}

/// What writing the list did.
struct ListWritten {
    added: Vec<(crate::Kind, crate::Target)>,
    renewed: Vec<(crate::Kind, crate::Target)>,
}

/// Inserts the new targets and updates the changed ones, in key order: SQLite fills its pages
/// densely when rows arrive in key order (a list walked backwards left the table half empty,
/// 224 MB instead of 131 MB for a million names, and took longer).
fn write_list(
    tx: &Transaction<'_>,
    src: &str,
    listed: &[(String, &Entry)],
    diff: &Diff,
    others: &HashSet<String>,
) -> rusqlite::Result<ListWritten> {
    // Distinct keys (the list is deduplicated), as a batch needs.
    let mut batch = UpsertBatch::new(tx, src);
    let mut out = ListWritten {
        added: Vec::new(),
        renewed: Vec::new(),
    };
    for &(i, renewed) in &diff.writes {
        let Some((k, e)) = listed.get(i) else {
            continue;
        };
        if renewed {
            out.renewed.push((e.kind, e.target.clone()));
        } else if !others.contains(k) {
            out.added.push((e.kind, e.target.clone()));
        }
        // The target's text is the key's last field.
        let target = k.splitn(3, '\t').nth(2).unwrap_or_default().to_owned();
        batch.push(e, target)?;
    }
    batch.flush()?;
    Ok(out)
}

/// Deletes the rows of `src` the list no longer names, in key order: the targets no source
/// holds any more.
fn delete_unlisted(
    tx: &Transaction<'_>,
    src: &str,
    unlisted: Vec<String>,
    others: &HashSet<String>,
) -> rusqlite::Result<Vec<RawTarget>> {
    let mut delete = tx.prepare_cached(
        "DELETE FROM entries WHERE kind = ?1 AND target_type = ?2 AND target = ?3
             AND source = ?4",
    )?;
    let mut gone = Vec::new();
    for k in unlisted {
        let Some((kind, target_type, target)) = split(&k) else {
            continue;
        };
        delete.execute(params![kind, target_type, target, src])?;
        if !others.contains(&k) {
            gone.push((kind, target_type, target));
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(expires: i64) -> RowView<'static> {
        RowView {
            action: "block",
            reason: "feed f",
            score: None,
            expires: Some(expires),
            subdomains: true,
        }
    }

    /// The list's entry for the stored row above, wanting `expires`.
    fn listed(expires: Option<i64>) -> Entry {
        Entry {
            expires: expires.map(crate::unix_time::from_unix),
            ..Entry::block(
                crate::Target::domain("a.example").unwrap(),
                Source::feed("f"),
                "feed f",
            )
        }
    }

    #[test]
    fn an_expiry_is_renewed_once_less_than_half_the_ttl_remains() {
        let day = Some(Duration::from_secs(86_400));
        let stored = stored(1_000_000);
        // An hour later the wanted expiry moved an hour: more than half is left, no rewrite.
        assert!(stored.holds(&listed(Some(1_003_600)), day));
        // Half a day and a second later: rewrite.
        assert!(!stored.holds(&listed(Some(1_043_201)), day));
        // An earlier wanted expiry (a shorter ttl now) is always written.
        assert!(!stored.holds(&listed(Some(999_999)), day));
        // Permanent now, or no ttl: exact.
        assert!(!stored.holds(&listed(None), day));
        assert!(!stored.holds(&listed(Some(1_000_001)), None));
        // Any other change is written.
        let other = Entry {
            action: crate::Action::Report,
            ..listed(Some(1_000_000))
        };
        assert!(!stored.holds(&other, day));
    }

    #[test]
    fn keys_split_back() {
        let k = key("block", "domain", "a.example");
        assert_eq!(
            split(&k),
            Some(("block".into(), "domain".into(), "a.example".into()))
        );
    }
}
