//! The running agent's recent decisions, for `flux-agent status` and `flux-agent top`: a bus
//! subscriber that keeps the last verdicts and the last enforcer actions (block, guard, alert)
//! in bounded rings, and counts them; and the `{"status": true}` control answer built from it,
//! the pipeline's counts and the scorer's most suspicious keys ([`top_keys`]).
//!
//! It subscribes inline ([`Recent::subscribe`]): it only copies a few fields of a decision
//! under a mutex that nothing else holds for long, and decisions are rare beside responses
//! (it never sees the `dns` events).
//!
//! The run loop hands it every control request ([`Recent::answer`]): it answers `status` and
//! passes the others to the pipeline.
//!
//! May touch: its own memory, and the scorer read-only (re-scoring a key for its reasons, as
//! `explain` does).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::{
    control::{Ask, Reply},
    pipeline::{
        bus::Bus,
        events::{Event, EventKind},
        flow::{Counts, Pipeline},
    },
};
use flux_detect::{
    score::{Level, Scorer, Verdict},
    timestamp::rfc3339,
};

/// Verdicts and actions each ring keeps: a screen's worth for `top` and `status` twice over;
/// a few KiB in all.
pub const RECENT_LEN: usize = 50;
/// Suspicious keys the status answer lists at most (`top` shows a screen of them).
pub const TOP_KEYS: usize = 50;
/// Keys re-scored per status answer at most, chosen by level then responses: each re-score
/// costs about what one response does, so a request a second stays far below the capture's
/// own work even with thousands of suspicious keys.
pub const TOP_CANDIDATES: usize = 200;
/// Reasons kept per key: the leading terms are what an operator reads first.
pub const LEADING_REASONS: usize = 3;

/// One term's share of a score, as the status answer carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReasonBrief {
    pub feature: String,
    pub contribution: f64,
}

/// A verdict as the rings keep it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentVerdict {
    /// RFC 3339.
    pub ts: String,
    pub domain: String,
    pub level: String,
    pub previous: String,
    pub score: f64,
    pub block: bool,
    pub reasons: Vec<ReasonBrief>,
}

/// An enforcer action (`block`, `guard`, `alert` event) as the rings keep it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentAction {
    pub ts: String,
    /// `block`, `guard` or `alert`.
    #[serde(rename = "type")]
    pub kind: String,
    pub domain: String,
    /// `blocked`, `refreshed`, `would_block`, `refused`, `rate_capped`, `failed`.
    pub action: String,
    pub target: Option<String>,
    pub reason: String,
}

/// One of the scorer's most suspicious keys, re-scored when asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopKey {
    pub domain: String,
    pub level: String,
    pub score: f64,
    /// Passes the automatic-block gate.
    pub block: bool,
    pub responses: u32,
    pub reasons: Vec<ReasonBrief>,
}

/// Decisions counted since the start, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionCounts {
    pub verdicts: u64,
    pub flux_verdicts: u64,
    pub blocks: u64,
    pub guards: u64,
    pub alerts: u64,
    pub intel: u64,
}

/// The answer to `{"status": true}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub pid: u32,
    /// RFC 3339.
    pub started_at: String,
    pub uptime_secs: u64,
    /// Responses that went through the pipeline (captured or from dnstap).
    pub responses: u64,
    pub unsolicited: u64,
    pub keys_tracked: u64,
    /// Whether the agent scores (it answers `explain`).
    pub scoring: bool,
    pub decisions: DecisionCounts,
    /// Newest first.
    pub recent_verdicts: Vec<RecentVerdict>,
    /// Newest first.
    pub recent_actions: Vec<RecentAction>,
    /// Highest score first, at most [`TOP_KEYS`].
    pub top_keys: Vec<TopKey>,
}

#[derive(Default)]
struct Rings {
    verdicts: VecDeque<RecentVerdict>,
    actions: VecDeque<RecentAction>,
    counts: DecisionCounts,
}

/// The shared rings: written by the bus subscription, read by the status answer.
#[derive(Clone)]
pub struct Recent {
    rings: Arc<Mutex<Rings>>,
    started: SystemTime,
}

impl Default for Recent {
    fn default() -> Self {
        Self::new()
    }
}

fn push<T>(ring: &mut VecDeque<T>, item: T) {
    if ring.len() >= RECENT_LEN {
        ring.pop_front();
    }
    ring.push_back(item);
}

/// The leading reasons of a verdict, largest contribution first.
fn leading(v: &Verdict) -> Vec<ReasonBrief> {
    let mut r: Vec<ReasonBrief> = v
        .reasons
        .iter()
        .filter(|r| r.contribution > 0.0)
        .map(|r| ReasonBrief {
            feature: r.feature.to_owned(),
            contribution: r.contribution,
        })
        .collect();
    r.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
    r.truncate(LEADING_REASONS);
    r
}

impl Recent {
    pub fn new() -> Self {
        Self {
            rings: Arc::default(),
            started: SystemTime::now(),
        }
    }

    /// A handle that records every decision published on `bus`.
    pub fn subscribe(bus: &mut Bus<'_>) -> Self {
        let recent = Self::new();
        let handle = recent.clone();
        bus.subscribe_inline(&EventKind::DECISIONS, move |e| handle.record(e));
        recent
    }

    /// Keeps one decision (other events are ignored).
    pub fn record(&self, e: &Event) {
        let mut g = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        match e {
            Event::Verdict(v) => {
                g.counts.verdicts += 1;
                if v.level == Level::Flux {
                    g.counts.flux_verdicts += 1;
                }
                push(
                    &mut g.verdicts,
                    RecentVerdict {
                        ts: rfc3339(v.ts).to_string(),
                        domain: v.domain.clone(),
                        level: v.level.as_str().to_owned(),
                        previous: v.previous.as_str().to_owned(),
                        score: v.score,
                        block: v.block,
                        reasons: leading(v),
                    },
                );
            }
            Event::Block(a) | Event::Guard(a) | Event::Alert(a) => {
                match e.kind() {
                    EventKind::Block => g.counts.blocks += 1,
                    EventKind::Guard => g.counts.guards += 1,
                    _ => g.counts.alerts += 1,
                }
                let action = serde_json::to_value(a.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                push(
                    &mut g.actions,
                    RecentAction {
                        ts: rfc3339(a.ts).to_string(),
                        kind: a.kind.as_str().to_owned(),
                        domain: a.domain.clone(),
                        action,
                        target: a.target.clone(),
                        reason: a.reason.clone(),
                    },
                );
            }
            Event::Intel(_) => g.counts.intel += 1,
            Event::Dns(_) => {}
        }
    }

    /// Answers a control request: `status` here, every other one by the pipeline.
    pub fn answer(&self, p: &mut Pipeline<'_>, request: &Ask) -> Reply {
        match request {
            Ask::Status => {
                let counts = p.counts().clone();
                let report = self.report(p.scorer_mut(), &counts, SystemTime::now());
                Reply::Status(Box::new(report))
            }
            _ => p.answer(request),
        }
    }

    /// The status answer: the rings, `counts` of the pipeline and the scorer's top keys.
    pub fn report(
        &self,
        scorer: Option<&mut Scorer>,
        counts: &Counts,
        now: SystemTime,
    ) -> StatusReport {
        let (recent_verdicts, recent_actions, decisions) = {
            let g = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
            (
                g.verdicts.iter().rev().cloned().collect(),
                g.actions.iter().rev().cloned().collect(),
                g.counts.clone(),
            )
        };
        let scoring = scorer.is_some();
        let (keys_tracked, top_keys) = match scorer {
            Some(s) => (s.stats().keys_tracked, top_keys(s, now, TOP_KEYS)),
            None => (0, Vec::new()),
        };
        StatusReport {
            pid: std::process::id(),
            started_at: rfc3339(self.started).to_string(),
            uptime_secs: now.duration_since(self.started).map_or(0, |d| d.as_secs()),
            responses: counts.observations,
            unsolicited: counts.unsolicited,
            keys_tracked,
            scoring,
            decisions,
            recent_verdicts,
            recent_actions,
            top_keys,
        }
    }
}

/// The scorer's most suspicious keys at `now`: every key not benign is a candidate; the
/// [`TOP_CANDIDATES`] of the highest level and most responses are re-scored (as `explain`
/// does), and the `limit` highest scores are returned with their leading reasons.
pub fn top_keys(scorer: &mut Scorer, now: SystemTime, limit: usize) -> Vec<TopKey> {
    // Borrowed while choosing, so only the chosen names are copied.
    let mut ranked: Vec<(Level, u32, &str)> = scorer
        .keys()
        .filter(|(_, st)| st.level != Level::Benign)
        .map(|(name, st)| (st.level, st.responses, name))
        .collect();
    let by_rank = |a: &(Level, u32, &str), b: &(Level, u32, &str)| {
        b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2))
    };
    if ranked.len() > TOP_CANDIDATES {
        ranked.select_nth_unstable_by(TOP_CANDIDATES, by_rank);
        ranked.truncate(TOP_CANDIDATES);
    }
    let candidates: Vec<(u32, String)> = ranked
        .into_iter()
        .map(|(_, responses, name)| (responses, name.to_owned()))
        .collect();
    let mut out: Vec<TopKey> = candidates
        .into_iter()
        .filter_map(|(responses, name)| {
            let v = scorer.explain(&name, now)?;
            Some(TopKey {
                domain: name,
                level: v.level.as_str().to_owned(),
                score: v.score,
                block: v.block,
                responses,
                reasons: leading(&v),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.domain.cmp(&b.domain))
    });
    out.truncate(limit);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::enforce::policy::{Action, ActionKind, Outcome};

    fn block(n: usize) -> Event {
        Event::from(Action {
            kind: ActionKind::Block,
            ts: SystemTime::UNIX_EPOCH,
            domain: format!("d{n}.test"),
            action: Outcome::Blocked,
            target_kind: None,
            target: Some(format!("d{n}.test")),
            reason: "flux".into(),
        })
    }

    #[test]
    fn rings_are_bounded_and_newest_first() {
        let r = Recent::new();
        for n in 0..(RECENT_LEN + 7) {
            r.record(&block(n));
        }
        let rep = r.report(None, &Counts::default(), SystemTime::now());
        assert_eq!(rep.recent_actions.len(), RECENT_LEN);
        assert_eq!(
            rep.recent_actions[0].domain,
            format!("d{}.test", RECENT_LEN + 6)
        );
        assert_eq!(rep.recent_actions[0].action, "blocked");
        assert_eq!(rep.recent_actions[0].kind, "block");
        assert_eq!(rep.decisions.blocks, (RECENT_LEN + 7) as u64);
        assert!(!rep.scoring && rep.top_keys.is_empty());
        assert_eq!(rep.pid, std::process::id());
    }

    /// A scorer that saw `flux.example` answer five new addresses in new /16s every minute
    /// for twenty minutes, and `stable.example` answer one address.
    pub(crate) fn scorer() -> (Scorer, SystemTime) {
        use flux_detect::{
            dns::{DnsFlags, DnsMessage, DnsRecord, Rcode},
            enrich::Enricher,
            known_good::Allowlist,
            score::ScorerConfig,
        };
        let mut s = Scorer::new(
            ScorerConfig::default(),
            Arc::new(Enricher::empty()),
            Arc::new(Allowlist::builtin()),
        );
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut out = Vec::new();
        for round in 0..20u8 {
            for (name, n) in [("www.flux.example", 5u8), ("www.stable.example", 1)] {
                let answers = (0..n)
                    .map(|k| DnsRecord {
                        name: name.into(),
                        rtype: "A".into(),
                        rtype_code: 1,
                        ttl: 60,
                        target: None,
                        addr: Some(if n == 1 {
                            [192, 0, 2, 1].into()
                        } else {
                            [20 + round, k * 40, 1, 1].into()
                        }),
                    })
                    .collect();
                let msg = DnsMessage {
                    id: 1,
                    qname: name.into(),
                    qtype: "A".into(),
                    rcode: Rcode::NOERROR,
                    flags: DnsFlags::default(),
                    answers,
                    authority: Vec::new(),
                    additional: Vec::new(),
                    edns_udp_size: None,
                    incomplete: false,
                };
                let at = t0 + std::time::Duration::from_secs(u64::from(round) * 60);
                s.observe(at, &msg, &mut out);
            }
        }
        (s, t0 + std::time::Duration::from_secs(20 * 60))
    }

    #[test]
    fn top_keys_are_the_suspicious_ones_with_their_reasons() {
        let (mut s, now) = scorer();
        let top = top_keys(&mut s, now, TOP_KEYS);
        assert!(!top.is_empty(), "the fluxing name is listed");
        assert!(
            top.iter().all(|k| k.domain.contains("flux.example")),
            "{top:?}"
        );
        assert!(top.iter().all(|k| k.level != "benign"));
        assert!(
            top.windows(2).all(|w| w[0].score >= w[1].score),
            "highest first"
        );
        let first = &top[0];
        assert!(!first.reasons.is_empty() && first.reasons.len() <= LEADING_REASONS);
        assert!(
            first
                .reasons
                .windows(2)
                .all(|w| w[0].contribution >= w[1].contribution)
        );
        assert_eq!(top_keys(&mut s, now, 1).len(), 1, "bounded");
        let rep = Recent::new().report(Some(&mut s), &Counts::default(), now);
        assert!(rep.scoring && rep.keys_tracked >= 2 && !rep.top_keys.is_empty());
    }

    #[test]
    fn the_run_loop_answer_is_status_here_and_the_pipeline_s_otherwise() {
        let (mut s, _) = scorer();
        let mut bus = Bus::new();
        let r = Recent::subscribe(&mut bus);
        r.record(&block(1));
        let mut p = Pipeline::new(Some(&mut s), None, bus);
        let Reply::Status(rep) = r.answer(&mut p, &Ask::Status) else {
            panic!("status answered by another");
        };
        assert!(rep.scoring && rep.keys_tracked >= 2, "{rep:?}");
        assert_eq!(rep.recent_actions.len(), 1);
        assert!(matches!(
            r.answer(&mut p, &Ask::Resolvers),
            Reply::Resolvers(_)
        ));
    }

    #[test]
    fn a_subscription_sees_decisions_only() {
        let mut bus = Bus::new();
        let r = Recent::subscribe(&mut bus);
        assert!(bus.wants(EventKind::Verdict) && !bus.wants(EventKind::Dns));
        bus.publish(block(1));
        let rep = r.report(None, &Counts::default(), SystemTime::now());
        assert_eq!(rep.recent_actions.len(), 1);
        // The answer goes over the socket and back.
        let back: StatusReport =
            serde_json::from_str(&serde_json::to_string(&rep).unwrap()).unwrap();
        assert_eq!(back, rep);
    }
}
