//! Scorer snapshots (`flux_detect::score::Snapshot`): the bytes the agent reads back from its
//! database at start, into `Snapshot::from_bytes` and `Scorer::restore`. Each input is tried
//! twice: as it is (header, length, checksum), and as a body framed with a valid header and
//! checksum (`Snapshot::frame_body`), so that the decoder and the restore see arbitrary bodies
//! instead of stopping at the checksum.
//!
//! Checks: no panic; a decoded snapshot encodes and decodes back to itself; a refused restore
//! leaves the scorer empty; a restored scorer stays within its key table, snapshots again (and
//! that snapshot round-trips), and answers `explain` and `block_targets` for every key. The
//! scorer has a 64-key table, so a restore larger than it evicts.
#![no_main]

use std::sync::Arc;

use flux_detect::{
    enrich::Enricher,
    known_good::Allowlist,
    score::{Scorer, ScorerConfig, Snapshot},
};
use libfuzzer_sys::fuzz_target;

const MAX_KEYS: usize = 64;

thread_local! {
    static ENRICHER: Arc<Enricher> = Arc::new(Enricher::empty());
    static ALLOWLIST: Arc<Allowlist> = Arc::new(Allowlist::builtin());
}

fuzz_target!(|data: &[u8]| {
    let _ = Snapshot::from_bytes(data);
    let Ok(snap) = Snapshot::from_bytes(&Snapshot::frame_body(data)) else {
        return;
    };
    let bytes = snap.to_bytes().expect("a decoded snapshot encodes");
    let again = Snapshot::from_bytes(&bytes).expect("an encoded snapshot decodes");
    assert_eq!(again, snap, "the round trip changed the snapshot");
    let cfg = ScorerConfig {
        max_keys: MAX_KEYS,
        ..ScorerConfig::default()
    };
    let mut scorer = Scorer::new(cfg, ENRICHER.with(Arc::clone), ALLOWLIST.with(Arc::clone));
    let now = snap.taken_at();
    let names: Vec<String> = snap.key_names().map(str::to_owned).collect();
    match scorer.restore(snap, now) {
        Err(e) => {
            assert_eq!(scorer.stats().keys_tracked, 0, "a refused restore left keys: {e}");
            assert!(!e.to_string().is_empty());
        }
        Ok(stats) => {
            assert!(scorer.stats().keys_tracked as usize <= MAX_KEYS, "{stats:?}");
            let resaved = scorer.snapshot();
            let bytes = resaved.to_bytes().expect("a restored scorer's snapshot encodes");
            assert_eq!(Snapshot::from_bytes(&bytes).ok(), Some(resaved));
            for name in &names {
                let _ = scorer.explain(name, now);
                let _ = scorer.block_targets(name, now);
            }
        }
    }
});
