//! The rate cap on new automatic blocks (`--max-blocks-per-minute`) and the queue of blocks
//! waiting for budget. Pure bookkeeping: the enforcer (`crate::enforce::policy`) decides what
//! to queue, checks that a popped block's name is still flux and block-gated, and writes it.
//!
//! **Priority: by score, highest first** (then domains before addresses, then the oldest
//! first). The cap exists for the case where something produces many verdicts at once; the
//! budget should then go to the verdicts the scorer is surest of. First come, first served
//! would let whoever produces verdicts first (junk just over the threshold) spend the budget
//! and keep a real, high-score flux domain out: with this order a flood of low-score verdicts
//! only ever waits behind it. A domain goes before its addresses at the same score because the
//! name block (NXDOMAIN) cuts off every address, the ones not yet seen too.
//!
//! **Bound: [`MAX_QUEUED`] blocks.** Past it the lowest-score block (the new one, if it is the
//! lowest) is dropped and counted, and the enforcer raises an alert. A dropped block is not
//! lost for good: a name that keeps fluxing is offered again on its next evidence.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use crate::enforce::maps::{Spec, Target};

/// Blocks that may wait for budget. At the default 60 a minute this is more than an hour of
/// backlog, far beyond any real burst of flux verdicts; each entry holds a target, its key and
/// its reason (about 200 bytes), so the bound also caps memory at about 1 MB.
pub const MAX_QUEUED: usize = 4096;

/// The budget window.
const WINDOW: Duration = Duration::from_secs(60);

/// A block waiting for budget.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The flux key the block is for.
    pub key: String,
    pub target: Target,
    pub spec: Spec,
}

/// Order in the queue: highest score first, domains first, oldest first.
type Rank = (Reverse<u64>, u8, u64);

fn rank(score: f64, t: &Target, seq: u64) -> Rank {
    // Scores are probabilities; a micro-unit is finer than any difference that matters.
    let s = (score.clamp(0.0, 1e6) * 1e6) as u64;
    let kind = u8::from(!matches!(t, Target::Domain(_)));
    (Reverse(s), kind, seq)
}

/// What [`RateQueue::push`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Pushed {
    /// Newly queued.
    Queued,
    /// Already waiting (its score raised if the new one is higher).
    AlreadyQueued,
    /// Queued, and the lowest-score block was dropped to make room (returned).
    DroppedLowest(Target),
    /// The queue is full of higher-score blocks: this one was dropped.
    DroppedNew,
}

pub struct RateQueue {
    per_minute: u32,
    window_start: Instant,
    spent: u32,
    queue: BTreeMap<Rank, Pending>,
    ranks: HashMap<Target, Rank>,
    seq: u64,
    /// Blocks dropped because the queue was full, since start.
    pub dropped: u64,
}

impl RateQueue {
    pub fn new(per_minute: u32, now: Instant) -> Self {
        Self {
            per_minute,
            window_start: now,
            spent: 0,
            queue: BTreeMap::new(),
            ranks: HashMap::new(),
            seq: 0,
            dropped: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        if now.saturating_duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.spent = 0;
        }
    }

    /// Whether a new block may be written now.
    pub fn has_budget(&mut self, now: Instant) -> bool {
        self.roll(now);
        self.spent < self.per_minute
    }

    /// Counts one new block written.
    pub fn spend(&mut self, now: Instant) {
        self.roll(now);
        self.spent = self.spent.saturating_add(1);
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn contains(&self, t: &Target) -> bool {
        self.ranks.contains_key(t)
    }

    /// Queues a block until budget allows, by score (see the module comment).
    pub fn push(&mut self, p: Pending) -> Pushed {
        let score = p.spec.score.unwrap_or(0.0);
        if let Some(old) = self.ranks.get(&p.target).copied() {
            let new = rank(score, &p.target, old.2);
            if new < old {
                self.queue.remove(&old);
                self.ranks.insert(p.target.clone(), new);
                self.queue.insert(new, p);
            }
            return Pushed::AlreadyQueued;
        }
        self.seq += 1;
        let r = rank(score, &p.target, self.seq);
        let mut outcome = Pushed::Queued;
        if self.queue.len() >= MAX_QUEUED {
            self.dropped += 1;
            let lowest = self.queue.last_key_value().map(|(k, _)| *k);
            match lowest {
                Some(low) if r < low => {
                    if let Some(gone) = self.queue.remove(&low) {
                        self.ranks.remove(&gone.target);
                        outcome = Pushed::DroppedLowest(gone.target);
                    }
                }
                _ => return Pushed::DroppedNew,
            }
        }
        self.ranks.insert(p.target.clone(), r);
        self.queue.insert(r, p);
        outcome
    }

    /// The waiting block of highest priority, taken out of the queue.
    pub fn pop_best(&mut self) -> Option<Pending> {
        let (_, p) = self.queue.pop_first()?;
        self.ranks.remove(&p.target);
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flux_common::SOURCE_SCORER;

    fn pending(key: &str, t: Target, score: f64) -> Pending {
        Pending {
            key: key.into(),
            target: t,
            spec: Spec {
                source: SOURCE_SCORER,
                ttl: None,
                reason: "test".into(),
                score: Some(score),
            },
        }
    }

    fn ip(i: u32) -> Target {
        Target::Ip(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            0x0a00_0000 + i,
        )))
    }

    /// Drains what the budget allows now, as the enforcer does.
    fn drain(q: &mut RateQueue, now: Instant) -> Vec<Pending> {
        let mut out = Vec::new();
        while q.has_budget(now) {
            let Some(p) = q.pop_best() else { break };
            q.spend(now);
            out.push(p);
        }
        out
    }

    #[test]
    fn capped_blocks_wait_and_are_applied_as_the_budget_allows() {
        let t0 = Instant::now();
        let mut q = RateQueue::new(2, t0);
        for i in 0..5 {
            assert_eq!(q.push(pending("a.test", ip(i), 0.9)), Pushed::Queued);
        }
        assert_eq!(q.push(pending("a.test", ip(1), 0.9)), Pushed::AlreadyQueued);
        let first = drain(&mut q, t0);
        assert_eq!(first.len(), 2, "the budget of this minute");
        assert_eq!(q.len(), 3, "the rest wait");
        assert!(drain(&mut q, t0 + Duration::from_secs(30)).is_empty());
        // Equal scores: oldest first.
        let next = drain(&mut q, t0 + Duration::from_secs(61));
        let got: Vec<_> = first
            .iter()
            .chain(&next)
            .map(|p| p.target.clone())
            .collect();
        assert_eq!(got, vec![ip(0), ip(1), ip(2), ip(3)]);
        let last = drain(&mut q, t0 + Duration::from_secs(122));
        assert_eq!(last.len(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn a_flood_of_low_score_verdicts_cannot_keep_a_high_score_one_out() {
        let t0 = Instant::now();
        let mut q = RateQueue::new(60, t0);
        // The flood: junk verdicts just over the threshold, many times the queue bound, arriving
        // before and after the real one.
        for i in 0..MAX_QUEUED as u32 {
            q.push(pending(&format!("junk{i}.test"), ip(i), 0.51));
        }
        let real = Target::Domain("real-flux.test".into());
        let pushed = q.push(pending("real-flux.test", real.clone(), 0.97));
        assert!(matches!(pushed, Pushed::DroppedLowest(_)), "{pushed:?}");
        for i in 0..(3 * MAX_QUEUED as u32) {
            let p = q.push(pending("junk", ip(100_000 + i), 0.51));
            assert_eq!(
                p,
                Pushed::DroppedNew,
                "a full queue of equal junk keeps its order"
            );
        }
        assert_eq!(q.len(), MAX_QUEUED, "bounded");
        assert_eq!(q.dropped, 1 + 3 * MAX_QUEUED as u64);
        // The very next budget goes to the real verdict.
        let first = drain(&mut q, t0);
        assert_eq!(first[0].target, real);
        assert_eq!(first.len(), 60);
    }

    #[test]
    fn past_the_bound_the_lowest_score_is_dropped() {
        let t0 = Instant::now();
        let mut q = RateQueue::new(1, t0);
        for i in 0..MAX_QUEUED as u32 {
            q.push(pending("k", ip(i), 0.6 + f64::from(i % 10) / 100.0));
        }
        // Lower than everything: dropped itself.
        assert_eq!(q.push(pending("k", ip(900_000), 0.55)), Pushed::DroppedNew);
        // Higher: the newest of the lowest (0.60) goes.
        let p = q.push(pending("k", ip(900_001), 0.99));
        let lowest_newest = (0..MAX_QUEUED as u32).rev().find(|i| i % 10 == 0).unwrap();
        assert_eq!(p, Pushed::DroppedLowest(ip(lowest_newest)));
        assert_eq!(q.pop_best().unwrap().target, ip(900_001));
        // A domain before an address of the same score.
        let mut q = RateQueue::new(10, t0);
        q.push(pending("k", ip(1), 0.8));
        q.push(pending("k", Target::Domain("k.test".into()), 0.8));
        assert_eq!(
            q.pop_best().unwrap().target,
            Target::Domain("k.test".into())
        );
        // A queued block seen again with a higher score moves up.
        let mut q = RateQueue::new(10, t0);
        q.push(pending("k", ip(1), 0.6));
        q.push(pending("k", ip(2), 0.7));
        q.push(pending("k", ip(1), 0.9));
        assert_eq!(q.pop_best().unwrap().target, ip(1));
        assert_eq!(q.pop_best().unwrap().target, ip(2));
        assert!(q.pop_best().is_none());
    }
}
