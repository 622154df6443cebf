//! [`UpsertBatch`]: the feed swap's rows written many to a statement. One `INSERT … VALUES
//! (…), (…) … ON CONFLICT` for [`UPSERT_ROWS`] rows instead of one statement each: in the
//! profile of a million-row first load, a fifth of the time went to what SQLite does once per
//! statement (opening and closing the cursors, the statement journal, halting the program),
//! not to the B-tree work of the rows.
//!
//! Only for rows with distinct keys (an upsert cannot touch the same row twice in one
//! statement): the feed swap's list is deduplicated before it is written.
//!
//! What it may touch: the `entries` table, inside the caller's transaction.

use rusqlite::{Transaction, types::ToSql};

use crate::{state_types::Entry, unix_time::to_unix};

/// Rows per statement. 64 rows bind 640 parameters (SQLite allows 32,766); past a few dozen
/// rows the per-statement cost no longer shows, and a larger batch only grows the SQL text.
pub const UPSERT_ROWS: usize = 64;

/// Columns bound per row, in the order of [`sql`].
const COLUMNS: usize = 10;

// A batch's parameters stay under SQLite's limit (32,766 since 3.32).
const _: () = assert!(UPSERT_ROWS * COLUMNS < 32_766);

/// The upsert of `rows` rows; the same conflict rule as `entry_table::UPSERT_ENTRY`.
fn sql(rows: usize) -> String {
    let mut s = String::from(
        "INSERT INTO entries (kind, target_type, target, action, source, reason, score, added, \
         expires, subdomains) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push_str("(?,?,?,?,?,?,?,?,?,?)");
    }
    s.push_str(
        " ON CONFLICT (kind, target_type, target, source) DO UPDATE SET action = \
         excluded.action, reason = excluded.reason, score = excluded.score, expires = \
         excluded.expires, subdomains = excluded.subdomains",
    );
    s
}

/// Rows waiting for their statement: an entry and its target's text (the caller has it
/// already, in the row's key).
pub struct UpsertBatch<'t, 'e> {
    tx: &'t Transaction<'t>,
    source: &'t str,
    rows: Vec<(&'e Entry, String)>,
}

impl<'t, 'e> UpsertBatch<'t, 'e> {
    /// Rows of `source`, written in `tx`.
    pub fn new(tx: &'t Transaction<'t>, source: &'t str) -> Self {
        Self {
            tx,
            source,
            rows: Vec::with_capacity(UPSERT_ROWS),
        }
    }

    /// Queues one row; writes the batch when it is full.
    pub fn push(&mut self, e: &'e Entry, target: String) -> rusqlite::Result<()> {
        self.rows.push((e, target));
        if self.rows.len() == UPSERT_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the queued rows (the last, shorter batch has a statement of its own size).
    pub fn flush(&mut self) -> rusqlite::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut stmt = self.tx.prepare_cached(&sql(self.rows.len()))?;
        let mut i = 1;
        for (e, target) in &self.rows {
            let values: [&dyn ToSql; COLUMNS] = [
                &e.kind.as_str(),
                &e.target.target_type().as_str(),
                target,
                &e.action.as_str(),
                &self.source,
                &e.reason,
                &e.score,
                &to_unix(e.added),
                &e.expires.map(to_unix),
                &e.subdomains,
            ];
            for v in values {
                stmt.raw_bind_parameter(i, v)?;
                i += 1;
            }
        }
        stmt.raw_execute()?;
        self.rows.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_has_a_placeholder_group_per_row() {
        let s = sql(3);
        assert_eq!(s.matches("(?,?,?,?,?,?,?,?,?,?)").count(), 3);
        assert_eq!(s.matches('?').count(), 3 * COLUMNS);
    }
}
