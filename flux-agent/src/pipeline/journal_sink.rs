//! The verdict journal: a bus subscriber ([`crate::pipeline::bus`]) that writes every
//! `suspicious` or `flux` verdict into the state database's bounded journal
//! (`Store::journal_verdicts`), with the addresses the enforcer blocked for the name. It runs
//! on its own thread behind the bus's bounded queue with its own database connection (WAL:
//! the enforcer's writes never wait for it), and commits one transaction per batch (whatever
//! the queue held when it ran empty). `export` and `explain` read the journal.
//!
//! May touch: the state database's journal, nothing else.

use std::{collections::HashMap, io, net::IpAddr, path::Path};

use flux_state::{Level as StateLevel, ReasonRecord, Store, VerdictRecord};
use log::warn;

use crate::{
    enforce::{
        policy::{Outcome, TargetKind},
        record,
    },
    pipeline::{
        bus::Sink,
        events::{Event, EventKind},
    },
};
use flux_detect::score::{Level, Verdict};

/// The events the journal wants: verdicts, and blocks (for the addresses of a name).
pub const KINDS: [EventKind; 2] = [EventKind::Verdict, EventKind::Block];

/// Names whose last verdict is kept in memory to attach blocked addresses to. Past it the
/// memory is cleared (an address then arrives without its verdict and is not journalled; the
/// verdict itself always is). A few flux names are active at once on a host; 4096 is far more.
const MAX_REMEMBERED: usize = 4096;

pub struct JournalSink {
    store: Store,
    batch: Vec<VerdictRecord>,
    last: HashMap<String, VerdictRecord>,
}

impl JournalSink {
    /// Opens its own connection to the database at `path`.
    pub fn open(path: &Path) -> Result<Self, flux_state::StateError> {
        Ok(Self {
            store: Store::open(path)?,
            batch: Vec::new(),
            last: HashMap::new(),
        })
    }
}

/// The journal's level of a verdict level; `None` for benign (not journalled).
fn level(l: Level) -> Option<StateLevel> {
    match l {
        Level::Benign => None,
        Level::Suspicious => Some(StateLevel::Suspicious),
        Level::Flux => Some(StateLevel::Flux),
    }
}

/// The journal row of a verdict (no addresses: they come with the blocks).
pub fn record_of(v: &Verdict) -> Option<VerdictRecord> {
    let mut r = VerdictRecord::new(&v.domain, level(v.level)?, v.score, v.ts);
    r.reasons = v
        .reasons
        .iter()
        .map(|x| ReasonRecord {
            feature: x.feature.to_owned(),
            contribution: x.contribution,
        })
        .collect();
    Some(r)
}

impl Sink for JournalSink {
    fn write(&mut self, e: &Event) -> io::Result<()> {
        match e {
            Event::Verdict(v) => {
                if let Some(r) = record_of(v) {
                    if self.last.len() >= MAX_REMEMBERED {
                        self.last.clear();
                    }
                    self.last.insert(r.domain.clone(), r.clone());
                    self.batch.push(r);
                }
            }
            Event::Block(a)
                if a.target_kind == Some(TargetKind::Ip)
                    && matches!(a.action, Outcome::Blocked | Outcome::Refreshed) =>
            {
                let ip = a.target.as_deref().and_then(|t| t.parse::<IpAddr>().ok());
                if let (Some(ip), Some(r)) = (ip, self.last.get(&a.domain)) {
                    let mut r = r.clone();
                    r.addresses = vec![ip];
                    r.last_seen = a.ts.max(r.last_seen);
                    self.batch.push(r);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        if let Err(e) = self.store.journal_verdicts(&batch) {
            // Counted with the write path's failures (`stats`).
            let n = record::note_failure(&e);
            warn!(
                "verdict journal: {e} ({} verdicts not journalled; {n} such failed writes so far)",
                batch.len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benign_is_not_journalled_and_levels_map() {
        assert_eq!(level(Level::Benign), None);
        assert_eq!(level(Level::Flux), Some(StateLevel::Flux));
        assert_eq!(level(Level::Suspicious), Some(StateLevel::Suspicious));
    }
}
