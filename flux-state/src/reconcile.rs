//! The start-up repair between the database (the record) and the pinned maps (the
//! enforcement). Pure: the agent reads both sides, calls [`reconcile`], applies the result to
//! the maps, and logs it.
//!
//! The rule, per (kind, target):
//! - in the database, live and enforced, not in the maps: add it (a reboot emptied the maps,
//!   or the agent died after the database write and before the map write);
//! - in the maps, not in the database, or only as a `report` entry: remove it (the agent died
//!   after a database removal and before the map removal);
//! - in the database but expired at `now`: expired, and removed from the maps if there.
//!
//! A block written to the maps by hand with the agent stopped (`blocklist add` without a
//! database) is the second case only if the CLI skipped the database: the CLI writes the
//! database first too, so the database is the record of what must be enforced.

use std::{collections::HashSet, time::SystemTime};

use serde::Serialize;

use crate::state_types::{EffectiveEntry, Kind, Target};

/// What to do to the maps.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reconciled {
    /// Live, enforced database entries the maps lack.
    pub to_add: Vec<EffectiveEntry>,
    /// Map entries the database does not hold live and enforced (including expired ones).
    pub to_remove: Vec<(Kind, Target)>,
    /// Database entries expired at `now` (the agent deletes them with `Store::expire`).
    pub expired: Vec<(Kind, Target)>,
}

impl Reconciled {
    /// Whether the two sides agreed.
    pub fn is_empty(&self) -> bool {
        self.to_add.is_empty() && self.to_remove.is_empty() && self.expired.is_empty()
    }
}

/// Compares the database's entries with what the maps hold. `db` is one entry per (kind,
/// target), as `Store::effective_entries` gives them; to see the expired ones too, read them
/// at a time before any expiry (`SystemTime::UNIX_EPOCH`). `maps` lists the targets present
/// in the maps, both kinds. The output is sorted.
pub fn reconcile(db: &[EffectiveEntry], maps: &[(Kind, Target)], now: SystemTime) -> Reconciled {
    let in_maps: HashSet<(Kind, &Target)> = maps.iter().map(|(k, t)| (*k, t)).collect();
    let mut keep: HashSet<(Kind, &Target)> = HashSet::with_capacity(db.len());
    let mut out = Reconciled::default();
    for e in db {
        let key = (e.kind, &e.target);
        if e.expires.is_some_and(|x| x <= now) {
            out.expired.push((e.kind, e.target.clone()));
        } else if e.action.enforced() {
            keep.insert(key);
            if !in_maps.contains(&key) {
                out.to_add.push(e.clone());
            }
        }
    }
    out.to_remove = maps
        .iter()
        .filter(|(k, t)| !keep.contains(&(*k, t)))
        .cloned()
        .collect();
    out.to_add
        .sort_by(|a, b| (a.kind, &a.target).cmp(&(b.kind, &b.target)));
    out.to_remove.sort();
    out.expired.sort();
    out.to_remove.dedup();
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::state_types::{Action, Source};

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn entry(kind: Kind, t: &str, action: Action, expires: Option<u64>) -> EffectiveEntry {
        EffectiveEntry {
            kind,
            target: Target::domain(t).unwrap(),
            action,
            sources: vec![Source::Manual],
            score: None,
            added: at(0),
            expires: expires.map(at),
            reason: String::new(),
            subdomains: true,
        }
    }

    fn d(t: &str) -> Target {
        Target::domain(t).unwrap()
    }

    #[test]
    fn each_disagreement_is_repaired_one_way() {
        let now = at(1000);
        let db = vec![
            entry(Kind::Block, "in-both.example", Action::Block, None),
            entry(Kind::Block, "db-only.example", Action::Block, Some(2000)),
            entry(
                Kind::Block,
                "expired-in-maps.example",
                Action::Block,
                Some(1000),
            ),
            entry(
                Kind::Block,
                "expired-db-only.example",
                Action::Block,
                Some(10),
            ),
            entry(Kind::Block, "report-in-maps.example", Action::Report, None),
            entry(Kind::Block, "report-only.example", Action::Report, None),
            entry(Kind::Allow, "allowed.example", Action::Block, None),
        ];
        let maps = vec![
            (Kind::Block, d("in-both.example")),
            (Kind::Block, d("expired-in-maps.example")),
            (Kind::Block, d("report-in-maps.example")),
            (Kind::Block, d("maps-only.example")),
            // Same target, the other kind: not the allowlist entry.
            (Kind::Block, d("allowed.example")),
        ];
        let r = reconcile(&db, &maps, now);
        let added: Vec<(Kind, &Target)> = r.to_add.iter().map(|e| (e.kind, &e.target)).collect();
        assert_eq!(
            added,
            vec![
                (Kind::Block, &d("db-only.example")),
                (Kind::Allow, &d("allowed.example"))
            ]
        );
        assert_eq!(
            r.to_remove,
            vec![
                (Kind::Block, d("allowed.example")),
                (Kind::Block, d("expired-in-maps.example")),
                (Kind::Block, d("maps-only.example")),
                (Kind::Block, d("report-in-maps.example")),
            ]
        );
        assert_eq!(
            r.expired,
            vec![
                (Kind::Block, d("expired-db-only.example")),
                (Kind::Block, d("expired-in-maps.example")),
            ]
        );
    }

    #[test]
    fn agreement_is_empty_and_a_reboot_restores_everything() {
        let db = vec![
            entry(Kind::Block, "a.example", Action::Block, None),
            entry(Kind::Block, "b.example", Action::Sinkhole, Some(50)),
        ];
        let maps = vec![(Kind::Block, d("a.example")), (Kind::Block, d("b.example"))];
        assert!(reconcile(&db, &maps, at(10)).is_empty());
        // A reboot: the maps are empty; every live enforced entry comes back.
        let r = reconcile(&db, &[], at(10));
        assert_eq!(r.to_add.len(), 2);
        assert!(r.to_remove.is_empty() && r.expired.is_empty());
    }
}
