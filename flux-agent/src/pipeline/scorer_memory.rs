//! The scorer's memory across restarts (issue 15): its snapshot
//! ([`flux_detect::score::Snapshot`]: the shared-bot table, the watch list and the state of the
//! keys that matter) kept in the state database's `scorer_state` table under [`BLOB_SCORER`].
//! Restored once at start, saved every [`SAVE_EVERY`] and at a clean stop.
//!
//! A periodic save copies the scorer on the caller's thread (the capture loop's: the copy reads
//! the scorer) and encodes and writes the copy on a thread of its own, so that the capture loop
//! does not wait for the encoding and the database (see [`ScorerMemory::save_if_due`]). The
//! save at a clean stop waits for any save under way, then writes in place.
//!
//! Touches only the state database (its own connection; WAL lets it write beside the write path
//! and the journal) and reads the scorer. Anything wrong with a saved snapshot (another version,
//! damaged, too old) is one log line and the scorer starts empty: never fatal.

use std::{
    path::Path,
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use flux_detect::score::{SNAPSHOT_VERSION, Scorer, Snapshot};
use flux_state::Store;
use log::{info, warn};

/// `scorer_state` key of the scorer's snapshot.
pub const BLOB_SCORER: &str = "scorer";

/// How often the running agent saves the snapshot. Taking the copy holds the scorer thread for
/// 24-173 ms at 100,000 tracked keys (flux-detect's `snapshot_figures` on the AMD test host;
/// the encoding and the write go to a thread of their own), so not often; five minutes is what
/// a crash (no clean stop, no final save) may lose, a small part of the 10-minute and longer
/// windows the verdicts rest on.
pub const SAVE_EVERY: Duration = Duration::from_secs(300);

pub struct ScorerMemory {
    /// Shared with the thread of a save under way, which holds it only while it writes.
    store: Arc<Mutex<Store>>,
    last_save: Instant,
    /// The thread encoding and writing the last periodic save, if one was started.
    writing: Option<JoinHandle<()>>,
}

impl ScorerMemory {
    /// Its own connection to the database at `path`; `None` (logged) if it cannot be opened,
    /// which the write path has already reported loudly.
    pub fn open(path: &Path) -> Option<Self> {
        match Store::open(path) {
            Ok(store) => Some(Self {
                store: Arc::new(Mutex::new(store)),
                last_save: Instant::now(),
                writing: None,
            }),
            Err(e) => {
                warn!("{e}: the scorer's memory is neither restored nor saved");
                None
            }
        }
    }

    /// Restores the saved snapshot, if any, into a fresh `scorer`.
    pub fn restore_into(&mut self, scorer: &mut Scorer) {
        let blob = match lock(&self.store).load_blob(BLOB_SCORER) {
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

    /// Saves when [`SAVE_EVERY`] has passed since the last save: the copy here, the encoding
    /// and the write on a thread of their own. Why: the three together held the capture loop
    /// for 36-227 ms at 100,000 tracked keys on the AMD test host (snapshot 24-173 ms, to_bytes
    /// 12-54 ms, `snapshot_figures`), before the write of a 9-31 MB blob; at 200,000 responses
    /// a second 100 ms is 20,000 ring-buffer records, two thirds of what the ring holds under
    /// load. The copy stays here (it reads the scorer, which the loop owns).
    ///
    /// One save at a time: while the last one is still being written (a slow disk), none is
    /// started, and the next tick asks again. If no thread can be started, this save is
    /// written here, as before.
    pub fn save_if_due(&mut self, scorer: &Scorer) {
        if self.last_save.elapsed() < SAVE_EVERY
            || self.writing.as_ref().is_some_and(|w| !w.is_finished())
        {
            return;
        }
        self.reap();
        let started = Instant::now();
        self.last_save = started;
        let snapshot = scorer.snapshot();
        // The copy goes by channel, so that it is still here if the thread cannot start.
        let (tx, rx) = mpsc::channel::<Snapshot>();
        let store = Arc::clone(&self.store);
        let spawned = std::thread::Builder::new()
            .name("scorer save".into())
            .spawn(move || {
                if let Ok(snapshot) = rx.recv() {
                    write(&store, &snapshot, started);
                }
            });
        match spawned {
            Ok(thread) => {
                let _ = tx.send(snapshot);
                self.writing = Some(thread);
            }
            Err(e) => {
                warn!("cannot start the scorer's save thread ({e}); saving on this one");
                write(&self.store, &snapshot, started);
            }
        }
    }

    /// Saves now, on this thread, after any save under way has been written (so the last word
    /// is this one). A failure (a full disk) is logged; the previous snapshot stays.
    pub fn save(&mut self, scorer: &Scorer) {
        self.reap();
        let started = Instant::now();
        self.last_save = started;
        write(&self.store, &scorer.snapshot(), started);
    }

    /// Waits for the thread of the last periodic save, if any.
    fn reap(&mut self) {
        if let Some(thread) = self.writing.take()
            && thread.join().is_err()
        {
            warn!("the scorer's save thread panicked; its save is lost");
        }
    }
}

/// The store, even if a save thread panicked while holding it (its write is then lost, the
/// connection is still usable).
fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Encodes `snapshot` and writes it under [`BLOB_SCORER`]. A failure is logged; the previous
/// snapshot stays. `started`: when the save began, for the log line.
fn write(store: &Mutex<Store>, snapshot: &Snapshot, started: Instant) {
    let bytes = match snapshot.to_bytes() {
        Ok(b) => b,
        Err(e) => {
            warn!("cannot encode the scorer's state: {e}");
            return;
        }
    };
    let saved = lock(store).save_blob(
        BLOB_SCORER,
        i64::from(SNAPSHOT_VERSION),
        &bytes,
        SystemTime::now(),
    );
    match saved {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory on a database of its own in a fresh folder (removed by the caller).
    fn memory(tag: &str) -> (ScorerMemory, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("flux-scorer-memory-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let m = ScorerMemory::open(&dir.join("state.db")).expect("open the state database");
        (m, dir)
    }

    /// The keys of the snapshot saved in `store`, if one is.
    fn saved_keys(store: &Store) -> Option<u64> {
        let blob = store.load_blob(BLOB_SCORER).expect("read")?;
        Some(
            Snapshot::from_bytes(&blob.bytes)
                .expect("decode")
                .stats()
                .keys,
        )
    }

    fn overdue() -> Instant {
        Instant::now()
            .checked_sub(SAVE_EVERY * 2)
            .expect("the machine has been up for ten minutes")
    }

    /// A periodic save is encoded and written by a thread of its own: with the database held
    /// (a slow disk), `save_if_due` still returns at once, no second save starts while the
    /// first waits, and the first lands once the database is free. The save at a stop waits
    /// for it and writes the last word.
    #[test]
    fn a_periodic_save_does_not_wait_for_the_database() {
        let (scorer, _) = crate::pipeline::recent::tests::scorer();
        let keys = scorer.snapshot().stats().keys;
        assert!(keys > 0, "the scorer has something to save");
        let (mut m, dir) = memory("periodic");
        let store = Arc::clone(&m.store);
        let held = lock(&store);

        // Written on this thread, the save would wait for `held` for ever: the call runs on
        // a thread of its own, and the test fails if it has not returned within 10 s.
        m.last_save = overdue();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            m.save_if_due(&scorer);
            let _ = done_tx.send((m, scorer));
        });
        let (mut m, scorer) = done
            .recv_timeout(Duration::from_secs(10))
            .expect("save_if_due returned while the database was held");
        let first = m.writing.as_ref().expect("a save thread").thread().id();
        assert!(!m.writing.as_ref().is_some_and(|w| w.is_finished()));

        // Due again while the first save waits: none is started.
        m.last_save = overdue();
        m.save_if_due(&scorer);
        assert_eq!(m.writing.as_ref().map(|w| w.thread().id()), Some(first));
        let other = Store::open(&dir.join("state.db")).expect("a second connection");
        assert_eq!(saved_keys(&other), None, "nothing written yet");

        drop(held);
        m.save(&scorer);
        assert!(m.writing.is_none(), "the stop's save waited for the thread");
        assert_eq!(saved_keys(&lock(&store)), Some(keys));
        drop(m);
        let _ = std::fs::remove_dir_all(dir);
    }
}
