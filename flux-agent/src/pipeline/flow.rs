//! The one pipeline both sources feed: an [`Observation`] in, then the scorer, then the enforcer,
//! and every result published on the [`Bus`]. Live capture (`pipeline::live`) and replay
//! (`pipeline::replay_source`) differ only in where observations come from and which clock
//! stamps them (the kernel's, converted; or the capture file's).

use std::collections::HashMap;

use crate::{
    control,
    enforce::policy::{Action, Enforcer},
    intel::feed_match::{Matcher, SharedIndex},
    ops::metrics::ScorerMetrics,
    pipeline::{
        bus::Bus,
        events::{Event, EventKind, Observation},
    },
};
use flux_detect::{
    dns::DnsMessage,
    score::{Level, Scorer, Verdict},
};

/// What went through the pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub observations: u64,
    /// Replies no query that left this host matches: published, never scored.
    pub unsolicited: u64,
    pub verdicts: u64,
    pub actions: u64,
}

/// The last verdict of every key that was ever flagged (replay's table and summary).
#[derive(Default)]
pub struct Flagged {
    pub last: HashMap<String, Verdict>,
}

impl Flagged {
    pub fn record(&mut self, v: &Verdict) {
        self.last.insert(v.domain.clone(), v.clone());
    }

    /// Keys still suspicious or flux, highest score first.
    pub fn current(&self) -> Vec<&Verdict> {
        let mut v: Vec<&Verdict> = self
            .last
            .values()
            .filter(|v| v.level != Level::Benign)
            .collect();
        v.sort_by(|a, b| {
            b.level
                .cmp(&a.level)
                .then(b.score.total_cmp(&a.score))
                .then(a.domain.cmp(&b.domain))
        });
        v
    }
}

pub struct Pipeline<'a> {
    scorer: Option<&'a mut Scorer>,
    enforcer: Option<Enforcer>,
    bus: Bus<'a>,
    counts: Counts,
    /// The latest observation time seen (replay re-scores the flagged keys at it).
    latest: Option<std::time::SystemTime>,
    flagged: Option<Flagged>,
    /// Times each scorer call for `/metrics` (`run --metrics`).
    timer: Option<ScorerMetrics>,
    /// Scratch, reused per observation.
    verdicts: Vec<Verdict>,
    actions: Vec<Action>,
    /// The loaded feeds, matched against every solicited response (`intel` events and scorer
    /// evidence); `None` without a state database.
    feeds: Option<Matcher>,
}

/// One observation held back: the replay and the live source read one response ahead, so
/// that the next one's scorer lookups are prefetched ([`Pipeline::prefetch`]) while the one
/// before it is observed. The pipeline still sees the readers' order. Whoever holds one
/// flushes it before the pipeline is read or finished (the end of a file, of a ring drain).
#[derive(Default)]
pub struct ReadAhead(Option<Observation>);

impl ReadAhead {
    /// Prefetches `obs`'s lookups and holds it; observes the one it held before.
    pub fn push(&mut self, p: &mut Pipeline<'_>, obs: Observation) {
        p.prefetch(&obs.msg);
        if let Some(before) = self.0.replace(obs) {
            p.observe(before);
        }
    }

    /// Observes the held observation, if there is one.
    pub fn flush(&mut self, p: &mut Pipeline<'_>) {
        if let Some(obs) = self.0.take() {
            p.observe(obs);
        }
    }
}

impl<'a> Pipeline<'a> {
    /// Without a scorer it only publishes `dns` events; without an enforcer it only reports.
    pub fn new(scorer: Option<&'a mut Scorer>, enforcer: Option<Enforcer>, bus: Bus<'a>) -> Self {
        Self {
            scorer,
            enforcer,
            bus,
            counts: Counts::default(),
            latest: None,
            flagged: None,
            timer: None,
            verdicts: Vec::new(),
            actions: Vec::new(),
            feeds: None,
        }
    }

    /// Matches responses against the feeds `shared` publishes (`intel::feed_match`).
    pub fn with_feeds(mut self, shared: SharedIndex) -> Self {
        self.feeds = Some(Matcher::new(shared));
        self
    }

    /// Keeps the last verdict of every flagged key (memory grows with the keys ever flagged:
    /// for replay, not for a long-running agent).
    pub fn track_flagged(mut self) -> Self {
        self.flagged = Some(Flagged::default());
        self
    }

    /// Times every `Scorer::observe` call into `m` (two clock reads per response, ~50 ns).
    pub fn time_scoring(mut self, m: ScorerMetrics) -> Self {
        self.timer = Some(m);
        self
    }

    /// Whether anyone subscribed to `kind` (a source may skip building what nobody reads).
    pub fn wants(&self, kind: EventKind) -> bool {
        self.bus.wants(kind)
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The latest observation time seen so far.
    pub fn latest_ts(&self) -> Option<std::time::SystemTime> {
        self.latest
    }

    /// Replaces the scorer's allowlist (a reload); without a scorer there is nothing to do.
    pub fn set_allowlist(&mut self, allowlist: std::sync::Arc<flux_detect::known_good::Allowlist>) {
        if let Some(s) = self.scorer.as_deref_mut() {
            s.set_allowlist(allowlist);
        }
    }

    pub fn scorer(&self) -> Option<&Scorer> {
        self.scorer.as_deref()
    }

    /// The scorer, to re-score keys for a control answer (`status`).
    pub fn scorer_mut(&mut self) -> Option<&mut Scorer> {
        self.scorer.as_deref_mut()
    }

    /// Starts loading into the CPU's caches what [`Self::observe`] of a response with `msg`
    /// will read first ([`Scorer::prefetch`]), for a reader that has the next response in hand
    /// before it observes the current one ([`ReadAhead`]). Changes nothing.
    fn prefetch(&self, msg: &DnsMessage) {
        if let Some(scorer) = self.scorer.as_deref() {
            scorer.prefetch(msg);
        }
    }

    /// One parsed response: score it, let the enforcer act on the verdicts, publish it all in
    /// order (the `dns` event, its verdicts, then the enforcer's actions).
    pub fn observe(&mut self, obs: Observation) {
        self.counts.observations += 1;
        self.latest = self.latest.max(Some(obs.ts));
        // A reply nobody here asked for is never evidence: not scored, not a resolver, not a
        // reason to refresh a block (anyone who can send a datagram from port 53 wrote it).
        if obs.unsolicited {
            self.counts.unsolicited += 1;
        } else if let Some(scorer) = self.scorer.as_deref_mut() {
            let started = self.timer.as_ref().map(|_| std::time::Instant::now());
            scorer.observe(obs.ts, &obs.msg, &mut self.verdicts);
            if let (Some(t), Some(started)) = (&self.timer, started) {
                t.observe(started.elapsed());
            }
            if let Some(e) = self.enforcer.as_mut() {
                // A server that answered a query this host sent is one of its resolvers: never
                // block it (a bounded set of the most recently seen).
                e.guard.note_resolver(obs.src);
                for v in &self.verdicts {
                    e.on_verdict(v, scorer, &mut self.actions);
                }
                // Renews a blocked name's block, blocks it again if it was removed while the
                // name is still flux, and writes blocks waiting for the rate cap.
                e.on_response(&obs.msg.qname, scorer, &mut self.actions);
            }
        }
        // A feed hit: an `intel` event after the response, and evidence for the scorer (its
        // verdict, if the level changes, follows the others).
        let mut intel = None;
        if !obs.unsolicited
            && let Some(m) = self.feeds.as_mut()
        {
            let chain = flux_detect::score::cname_chain(&obs.msg);
            intel = m.check(obs.ts, &obs.msg, &chain);
            if intel.is_some()
                && let Some(scorer) = self.scorer.as_deref_mut()
            {
                scorer.note_feed_match(obs.ts, &chain, &mut self.verdicts);
            }
        }
        self.bus.publish(Event::Dns(obs));
        if let Some(m) = intel {
            self.bus.publish(Event::Intel(m));
        }
        for v in self.verdicts.drain(..) {
            self.counts.verdicts += 1;
            if let Some(f) = self.flagged.as_mut() {
                f.record(&v);
            }
            self.bus.publish(Event::Verdict(v));
        }
        for a in self.actions.drain(..) {
            self.counts.actions += 1;
            self.bus.publish(a.into());
        }
    }

    /// Verdicts another scorer made (the fleet's, `crate::fleet`): the enforcer acts on them
    /// with that scorer's addresses (its guards, allowlist, block gate and rate cap apply as to
    /// local verdicts), and all of it is published. Returns what the enforcer did (the fleet
    /// remembers it for `explain`).
    pub fn external_verdicts(&mut self, verdicts: Vec<Verdict>, scorer: &Scorer) -> Vec<Action> {
        if let Some(e) = self.enforcer.as_mut() {
            for v in &verdicts {
                e.on_verdict(v, scorer, &mut self.actions);
            }
        }
        for v in verdicts {
            self.counts.verdicts += 1;
            if let Some(f) = self.flagged.as_mut() {
                f.record(&v);
            }
            self.bus.publish(Event::Verdict(v));
        }
        let done = self.actions.clone();
        for a in self.actions.drain(..) {
            self.counts.actions += 1;
            self.bus.publish(a.into());
        }
        done
    }

    /// Periodic work of the enforcer (blocks waiting for the rate cap, expiry sweep, guard
    /// refresh); what it writes is published, and returned (the fleet notes the blocks that
    /// waited for the rate cap, for `explain`).
    pub fn tick(&mut self) -> Vec<Action> {
        if let (Some(e), Some(scorer)) = (self.enforcer.as_mut(), self.scorer.as_deref()) {
            e.tick(scorer, &mut self.actions);
        }
        let done = self.actions.clone();
        for a in self.actions.drain(..) {
            self.counts.actions += 1;
            self.bus.publish(a.into());
        }
        done
    }

    /// Whether the enforcer's block on `target` is still in force (`Enforcer::in_force`);
    /// false without an enforcer.
    pub fn in_force(&self, target: &str) -> bool {
        self.enforcer.as_ref().is_some_and(|e| e.in_force(target))
    }

    /// Answers a control request from the live scorer, or the enforcer's guard.
    pub fn answer(&mut self, req: &control::Ask) -> control::Reply {
        match req {
            control::Ask::Explain(req) => match self.scorer.as_deref_mut() {
                Some(s) => control::Reply::Explanation(control::answer(s, req)),
                None => control::Reply::error("this agent does not score"),
            },
            // Without an enforcer nothing is learnt: the CLI's own guard is all there is.
            control::Ask::Resolvers => control::Reply::Resolvers(control::ResolverList {
                resolvers: self
                    .enforcer
                    .as_ref()
                    .map(|e| e.guard.resolvers())
                    .unwrap_or_default(),
            }),
            control::Ask::State => control::Reply::State(crate::enforce::record::counts()),
            // The run loop answers it from `pipeline::recent`, which the pipeline does not hold.
            control::Ask::Status => control::Reply::error("status is answered by the run loop"),
        }
    }

    /// Ends the pipeline: the bus (to close it) and what was flagged.
    pub fn finish(self) -> (Bus<'a>, Counts, Option<Flagged>) {
        (self.bus, self.counts, self.flagged)
    }
}
