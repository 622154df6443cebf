//! The scorer's memory across restarts (issue 15): its snapshot
//! ([`flux_detect::score::Snapshot`]: the shared-bot table, the watch list and the state of the
//! keys that matter) kept in the state database's `scorer_state` table under [`BLOB_SCORER`].
//! Restored once at start, saved every [`SAVE_EVERY`] and at a clean stop.
//!
//! Touches only the state database (its own connection; WAL lets it write beside the write path
//! and the journal) and reads the scorer. Anything wrong with a saved snapshot (another version,
//! damaged, too old) is one log line and the scorer starts empty: never fatal.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use flux_detect::score::{SNAPSHOT_VERSION, Scorer, Snapshot};
use flux_state::Store;
use log::{info, warn};

/// `scorer_state` key of the scorer's snapshot.
pub const BLOB_SCORER: &str = "scorer";

/// How often the running agent saves the snapshot. Taking one holds the scorer thread for
/// 0.1-0.8 s at 100,000 tracked keys (flux-detect's `snapshot_figures`), so not often; five
/// minutes is what a crash (no clean stop, no final save) may lose, a small part of the
/// 10-minute and longer windows the verdicts rest on.
pub const SAVE_EVERY: Duration = Duration::from_secs(300);

pub struct ScorerMemory {
    store: Store,
    last_save: Instant,
}

impl ScorerMemory {
    /// Its own connection to the database at `path`; `None` (logged) if it cannot be opened,
    /// which the write path has already reported loudly.
    pub fn open(path: &Path) -> Option<Self> {
        match Store::open(path) {
            Ok(store) => Some(Self {
                store,
                last_save: Instant::now(),
            }),
            Err(e) => {
                warn!("{e}: the scorer's memory is neither restored nor saved");
                None
            }
        }
    }

    /// Restores the saved snapshot, if any, into a fresh `scorer`.
    pub fn restore_into(&mut self, scorer: &mut Scorer) {
        let blob = match self.store.load_blob(BLOB_SCORER) {
            Ok(Some(b)) => b,
            Ok(None) => {
                info!("no saved scorer state: the scorer starts empty");
                return;
            }
            Err(e) => {
                warn!("reading the saved scorer state: {e}; the scorer starts empty");
                return;
            }
        };
        if blob.version != i64::from(SNAPSHOT_VERSION) {
            warn!(
                "the saved scorer state is version {} (this build reads {SNAPSHOT_VERSION}): \
                 the scorer starts empty",
                blob.version
            );
            return;
        }
        let restored = Snapshot::from_bytes(&blob.bytes)
            .and_then(|snap| scorer.restore(snap, SystemTime::now()));
        match restored {
            Ok(s) => info!(
                "restored the scorer's memory saved {}s ago: {} keys ({} watched, {} expired), \
                 {} shared bots",
                s.age_secs, s.keys_restored, s.watched, s.keys_expired, s.bots_restored
            ),
            Err(e) => warn!("the saved scorer state is not usable ({e}): the scorer starts empty"),
        }
    }

    /// Saves when [`SAVE_EVERY`] has passed since the last save.
    pub fn save_if_due(&mut self, scorer: &Scorer) {
        if self.last_save.elapsed() >= SAVE_EVERY {
            self.save(scorer);
        }
    }

    /// Saves now. A failure (a full disk) is logged; the previous snapshot stays.
    pub fn save(&mut self, scorer: &Scorer) {
        self.last_save = Instant::now();
        let started = Instant::now();
        let bytes = match scorer.snapshot().to_bytes() {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot encode the scorer's state: {e}");
                return;
            }
        };
        match self.store.save_blob(
            BLOB_SCORER,
            i64::from(SNAPSHOT_VERSION),
            &bytes,
            SystemTime::now(),
        ) {
            Ok(()) => log::debug!(
                "saved the scorer's state: {} bytes in {} ms",
                bytes.len(),
                started.elapsed().as_millis()
            ),
            Err(e) => {
                let n = crate::enforce::record::note_failure(&e);
                warn!("saving the scorer's state: {e} ({n} failed state writes so far)");
            }
        }
    }
}
