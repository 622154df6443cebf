//! What the evaluation needs from every re-score, not only from verdicts: when the Holz and Zeek
//! baselines first flag each key, and each key's last score. Recorded through the scorer's
//! re-score tap (`Scorer::set_rescore_tap`), so that the production key state carries no
//! evaluation-only fields; the scorer decides when it re-scores, this only listens.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use flux_detect::score::Scorer;

/// When a baseline first flagged a key.
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineHit {
    pub ts: SystemTime,
    pub domain: String,
    /// `"holz"` or `"zeek"`.
    pub baseline: &'static str,
}

#[derive(Default)]
struct Log {
    hits: Vec<BaselineHit>,
    flagged: HashSet<(String, &'static str)>,
    last_score: HashMap<String, f32>,
}

/// A scorer's re-scores, as the evaluation reads them.
#[derive(Clone, Default)]
pub struct RescoreLog(Arc<Mutex<Log>>);

impl RescoreLog {
    /// Starts listening to `scorer`'s re-scores.
    pub fn attach(scorer: &mut Scorer) -> Self {
        let log = Self::default();
        let inner = log.0.clone();
        scorer.set_rescore_tap(Box::new(move |r| {
            let mut l = inner.lock().unwrap_or_else(PoisonError::into_inner);
            match l.last_score.get_mut(r.domain) {
                Some(s) => *s = r.score as f32,
                None => {
                    l.last_score.insert(r.domain.to_owned(), r.score as f32);
                }
            }
            for (flag, which) in [
                (r.baselines.holz_flux, "holz"),
                (r.baselines.zeek_flux, "zeek"),
            ] {
                if flag && l.flagged.insert((r.domain.to_owned(), which)) {
                    l.hits.push(BaselineHit {
                        ts: r.ts,
                        domain: r.domain.to_owned(),
                        baseline: which,
                    });
                }
            }
        }));
        log
    }

    /// The baseline hits since the last call, in the order they came.
    pub fn take_baseline_hits(&self) -> Vec<BaselineHit> {
        let mut l = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut l.hits)
    }

    /// A key's score at its last re-score (0 if it was never scored).
    pub fn last_score(&self, key: &str) -> f32 {
        let l = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        l.last_score.get(key).copied().unwrap_or(0.0)
    }
}
