//! The `verdicts` journal: what the scorer found, for `explain` and `export`. Bounded twice:
//! one row per (domain, level), updated in place when the same verdict comes again, and at most
//! [`MAX_VERDICT_ROWS`] rows, the oldest `last_seen` pruned first.

use std::{net::IpAddr, time::SystemTime};

use rusqlite::{OptionalExtension as _, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::{
    Store,
    state_error::{StateError, on},
    state_types::{BadValue, Level},
    unix_time::{from_unix, to_unix},
};

/// Rows the journal keeps at most. A host's resolver sees a few flux or suspicious names a
/// day (the public traces have a few hundred over months); 100,000 rows is years of that, or
/// a flood of a million fresh names a day kept for the last few hours. At about 300 bytes a
/// row with its indexes this caps the table near 30 MB (the measured figure is in
/// docs/state.md), small beside the disk of any host that runs the agent.
pub const MAX_VERDICT_ROWS: u64 = 100_000;

/// Addresses kept per row, newest first: a flux name rotates through hundreds; the export
/// shares a sample, and 64 keep a row under a few kilobytes.
pub const MAX_ADDRESSES_PER_VERDICT: usize = 64;

/// One term's part in a verdict, as the journal keeps it (flux-detect's `score::Reason`
/// without the value and weight, which the scorer's parameters can always recompute).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReasonRecord {
    pub feature: String,
    pub contribution: f64,
}

/// One journal row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerdictRecord {
    /// Lowercase, no trailing dot.
    pub domain: String,
    pub level: Level,
    /// The latest score at this level.
    pub score: f64,
    /// The latest reasons, largest contribution first.
    pub reasons: Vec<ReasonRecord>,
    #[serde(serialize_with = "crate::ser_time")]
    pub first_seen: SystemTime,
    #[serde(serialize_with = "crate::ser_time")]
    pub last_seen: SystemTime,
    /// Addresses the name resolved to, newest first, at most [`MAX_ADDRESSES_PER_VERDICT`].
    pub addresses: Vec<IpAddr>,
}

impl VerdictRecord {
    /// A verdict seen once, at `at`.
    pub fn new(domain: &str, level: Level, score: f64, at: SystemTime) -> Self {
        Self {
            domain: domain.to_owned(),
            level,
            score,
            reasons: Vec::new(),
            first_seen: at,
            last_seen: at,
            addresses: Vec::new(),
        }
    }

    /// One-line reasons for a description or a comment: `feature +0.123, ...`.
    pub fn reasons_text(&self) -> String {
        self.reasons
            .iter()
            .map(|r| format!("{} +{:.3}", r.feature, r.contribution))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Newest first, without repeats, at most [`MAX_ADDRESSES_PER_VERDICT`].
fn merge_addresses(new: &[IpAddr], old: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(MAX_ADDRESSES_PER_VERDICT);
    for a in new.iter().chain(old) {
        if out.len() >= MAX_ADDRESSES_PER_VERDICT {
            break;
        }
        if !out.contains(a) {
            out.push(*a);
        }
    }
    out
}

fn json<T: Serialize>(v: &T) -> rusqlite::Result<String> {
    serde_json::to_string(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Upserts one verdict in `tx`; true when it made a new row.
fn journal_in(tx: &Transaction<'_>, v: &VerdictRecord) -> rusqlite::Result<bool> {
    let domain = v.domain.trim_end_matches('.').to_ascii_lowercase();
    let old: Option<(String, i64)> = tx
        .prepare_cached(
            "SELECT addresses, first_seen FROM verdicts WHERE domain = ?1 AND level = ?2",
        )?
        .query_row(params![domain, v.level.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let (old_addrs, first) = match &old {
        // A row whose addresses do not parse (hand-edited) loses them, not the verdict.
        Some((a, f)) => (serde_json::from_str(a).unwrap_or_default(), *f),
        None => (Vec::new(), to_unix(v.first_seen)),
    };
    let addrs = merge_addresses(&v.addresses, &old_addrs);
    tx.prepare_cached(
        "INSERT INTO verdicts (domain, level, score, reasons, first_seen, last_seen, addresses)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (domain, level) DO UPDATE SET
           score = excluded.score, reasons = excluded.reasons,
           first_seen = min(first_seen, excluded.first_seen),
           last_seen = max(last_seen, excluded.last_seen), addresses = excluded.addresses",
    )?
    .execute(params![
        domain,
        v.level.as_str(),
        v.score,
        json(&v.reasons)?,
        first.min(to_unix(v.first_seen)),
        to_unix(v.last_seen),
        json(&addrs)?,
    ])?;
    Ok(old.is_none())
}

/// The journal's columns, in the order [`read_verdict`] reads them.
const VERDICT_COLUMNS: &str = "domain, level, score, reasons, first_seen, last_seen, addresses";

type RawVerdict = (String, String, f64, String, i64, i64, String);

fn read_verdict(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawVerdict> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn parse_verdict(raw: RawVerdict) -> Result<VerdictRecord, BadValue> {
    let (domain, level, score, reasons, first, last, addrs) = raw;
    let bad = |what: &'static str, v: &str, e: serde_json::Error| BadValue {
        what,
        value: v.to_owned(),
        why: e.to_string(),
    };
    Ok(VerdictRecord {
        level: level.parse()?,
        reasons: serde_json::from_str(&reasons).map_err(|e| bad("reasons", &reasons, e))?,
        addresses: serde_json::from_str(&addrs).map_err(|e| bad("addresses", &addrs, e))?,
        domain,
        score,
        first_seen: from_unix(first),
        last_seen: from_unix(last),
    })
}

impl Store {
    /// Journals one verdict (one transaction).
    pub fn journal_verdict(&mut self, v: &VerdictRecord) -> Result<(), StateError> {
        self.journal_verdicts(std::slice::from_ref(v))
    }

    /// Journals verdicts in one transaction, then prunes the oldest rows past
    /// [`MAX_VERDICT_ROWS`] (or [`Store::set_journal_cap`]) in the same transaction.
    pub fn journal_verdicts(&mut self, vs: &[VerdictRecord]) -> Result<(), StateError> {
        let err = on(&self.path);
        let mut rows = match self.journal_rows {
            Some(n) => n,
            None => self.journal_len()?,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        for v in vs {
            if journal_in(&tx, v).map_err(&err)? {
                rows += 1;
            }
        }
        let cap = self.journal_cap;
        if rows > cap {
            let pruned = tx
                .prepare_cached(
                    "DELETE FROM verdicts WHERE rowid IN (
                         SELECT rowid FROM verdicts ORDER BY last_seen, rowid LIMIT ?1)",
                )
                .and_then(|mut s| s.execute([i64::try_from(rows - cap).unwrap_or(i64::MAX)]))
                .map_err(&err)?;
            rows = rows.saturating_sub(pruned as u64);
        }
        tx.commit().map_err(&err)?;
        self.journal_rows = Some(rows);
        Ok(())
    }

    /// Journal rows last seen at or after `since` (all: `None`) at `min_level` or above, most
    /// recent first.
    pub fn verdicts(
        &self,
        since: Option<SystemTime>,
        min_level: Level,
    ) -> Result<Vec<VerdictRecord>, StateError> {
        let levels: Vec<&str> = [Level::Benign, Level::Suspicious, Level::Flux]
            .into_iter()
            .filter(|l| *l >= min_level)
            .map(Level::as_str)
            .collect();
        self.read_verdicts(
            &format!(
                "SELECT {VERDICT_COLUMNS} FROM verdicts
                 WHERE last_seen >= ?1 AND level IN (SELECT value FROM json_each(?2))
                 ORDER BY last_seen DESC, domain"
            ),
            params![
                since.map_or(i64::MIN, to_unix),
                serde_json::Value::from(levels).to_string()
            ],
        )
    }

    /// Every journal row of one domain (`explain`).
    pub fn verdicts_for(&self, domain: &str) -> Result<Vec<VerdictRecord>, StateError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.read_verdicts(
            &format!("SELECT {VERDICT_COLUMNS} FROM verdicts WHERE domain = ?1 ORDER BY level"),
            [domain],
        )
    }

    fn read_verdicts(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<VerdictRecord>, StateError> {
        let err = on(&self.path);
        let mut stmt = self.conn.prepare_cached(sql).map_err(&err)?;
        let raw: Vec<RawVerdict> = stmt
            .query_map(p, read_verdict)
            .and_then(|r| r.collect())
            .map_err(&err)?;
        raw.into_iter()
            .map(|r| parse_verdict(r).map_err(self.bad_row()))
            .collect()
    }

    /// Rows in the journal.
    pub fn journal_len(&self) -> Result<u64, StateError> {
        self.conn
            .query_row("SELECT count(*) FROM verdicts", [], |r| r.get::<_, i64>(0))
            .map(|n| n.unsigned_abs())
            .map_err(on(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_merge_newest_first_without_repeats_and_bounded() {
        let a = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(i));
        assert_eq!(
            merge_addresses(&[a(2), a(1)], &[a(1), a(3)]),
            vec![a(2), a(1), a(3)]
        );
        let many: Vec<IpAddr> = (0..200).map(a).collect();
        let merged = merge_addresses(&many[100..], &many[..100]);
        assert_eq!(merged.len(), MAX_ADDRESSES_PER_VERDICT);
        assert_eq!(merged.first(), Some(&a(100)));
    }
}
