//! What `flux-agent explain NAME` shows of the fleet (docs/fleet.md, Explain): the fleet
//! scorer's level and score for the name, the agents whose evidence made it, and whether its
//! verdict was enforced here or only reported, and why (the scorer's block gate, the fleet
//! quorum, `--fleet-action`, the allowlist, the guard, `--monitor`, the rate cap).
//!
//! The enforcer's last answer to each fleet verdict it was handed is remembered here
//! ([`Enforcements`]), so the answer says what happened, not what would.
//!
//! May touch: nothing outside the process.

use std::{collections::HashMap, time::SystemTime};

use flux_detect::score::{Level, Verdict, registered_domain};
use serde::{Deserialize, Serialize};

use super::aggregate::{Aggregator, FLEET_QUORUM, FleetAction, fleet_gate};
use crate::{
    enforce::policy::{Action, ActionKind, Outcome},
    pipeline::events::Event,
};

/// Keys whose enforcement is remembered; past it the memory is cleared (an older key's
/// `explain` then says the enforcer's answer is unknown, never a wrong one). Fleet verdicts
/// that reach the enforcer are few (a few an hour on a real agent).
const MAX_REMEMBERED: usize = 10_000;
/// Enforcer answers kept per key: a block is the name and its addresses (a few tens at most
/// for a flux name; the scorer bounds the addresses it gives to block).
const MAX_NOTES: usize = 64;

/// `decision` of a [`FleetView`].
pub const ENFORCED: &str = "enforced";
pub const REPORTED: &str = "reported";
/// The fleet scorer does not say `flux`: nothing to enforce or report.
pub const NONE: &str = "none";
/// The enforcer blocked it here, and none of those blocks is in the maps any more (expired,
/// or removed with `blocklist remove`).
pub const LAPSED: &str = "lapsed";

/// The fleet's part of an `explain` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    /// This agent's id in the fleet.
    pub agent: String,
    /// The key the fleet scorer holds: the name, or its registered domain.
    pub key: String,
    /// The fleet scorer's level and score for it now.
    pub level: String,
    pub score: f64,
    /// The fleet scorer's block gate (before the fleet quorum and the policy).
    pub block_gate: String,
    /// Ids of the agents whose evidence on the key is inside the scoring window (this one's
    /// included when it saw the name).
    pub agents: Vec<String>,
    /// How many of them are other agents, and how many the fleet quorum needs to block here.
    pub other_agents: usize,
    pub quorum: usize,
    /// `--fleet-action`: `block` or `report`.
    pub action: String,
    /// `enforced` (the enforcer blocked it and a block is in force), `lapsed` (it was blocked
    /// and every block has expired or was removed since), `reported` (kept to a report) or
    /// `none` (the fleet does not say `flux`).
    pub decision: String,
    /// Why, in words: which gate kept it to a report, or what the enforcer did.
    pub why: String,
    /// What the enforcer answered to the last fleet verdict on the key it was handed:
    /// `(event type, outcome, target, reason)`.
    pub enforcer: Vec<EnforcerNote>,
    /// The fleet verdict as it stands now, as its `verdict` event (reasons, features).
    pub verdict: serde_json::Value,
}

/// One of the enforcer's answers to a fleet verdict (a `block` or `guard` event, shortened).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcerNote {
    /// `block` or `guard`.
    pub kind: String,
    /// `blocked`, `refreshed`, `would_block`, `refused`, `rate_capped`, `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why a guard refused (empty for a block: its reason is the verdict's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The enforcer's last answers, per key, to the fleet verdicts it was handed.
#[derive(Debug, Default)]
pub struct Enforcements(HashMap<String, Vec<EnforcerNote>>);

impl Enforcements {
    /// `handed`: the keys whose fleet verdict went to the enforcer in this round (their old
    /// answers are forgotten, even when the enforcer said nothing this time); `actions`: what
    /// it answered.
    pub fn note(&mut self, handed: &[String], actions: &[Action]) {
        if self.0.len() >= MAX_REMEMBERED {
            self.0.clear();
        }
        for k in handed {
            self.0.insert(k.clone(), Vec::new());
        }
        self.add(actions);
    }

    /// What the enforcer did later (a block that waited for the rate cap) for keys whose fleet
    /// verdict it was handed; actions on other keys are not the fleet's.
    pub fn later(&mut self, actions: &[Action]) {
        self.add(actions);
    }

    fn add(&mut self, actions: &[Action]) {
        for a in actions {
            if a.kind == ActionKind::Alert {
                continue;
            }
            let Some(notes) = self.0.get_mut(&a.domain) else {
                continue;
            };
            if notes.len() < MAX_NOTES {
                notes.push(EnforcerNote {
                    kind: a.kind.as_str().to_owned(),
                    outcome: a.action.as_str().to_owned(),
                    target: a.target.clone(),
                    reason: if a.kind == ActionKind::Guard {
                        a.reason.clone()
                    } else {
                        String::new()
                    },
                });
            }
        }
    }

    fn get(&self, key: &str) -> Option<&[EnforcerNote]> {
        self.0.get(key).map(Vec::as_slice)
    }
}

/// The fleet's view of `name` (or of its registered domain when the fleet scorer does not hold
/// the name itself), or `None` when the fleet scorer holds neither. `in_force` says whether a
/// block the enforcer made (its target) is still in the maps.
pub fn explain(
    agg: &mut Aggregator,
    enforcements: &Enforcements,
    name: &str,
    now: SystemTime,
    in_force: &dyn Fn(&str) -> bool,
) -> Option<FleetView> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let mut candidates = vec![name.clone()];
    if let Some(d) = registered_domain(&name)
        && d != name
    {
        candidates.push(d.to_owned());
    }
    let (key, v, agents) = candidates
        .into_iter()
        .find_map(|k| agg.view(&k, now).map(|(v, a)| (k, v, a)))?;
    let notes = enforcements.get(&v.domain).unwrap_or_default().to_vec();
    let (decision, why) = decide(agg, &v, &agents, &notes, in_force);
    let self_label = agg.self_label();
    Some(FleetView {
        agent: agg.agent().to_owned(),
        key,
        level: v.level.as_str().to_owned(),
        score: v.score,
        block_gate: v.block_gate.to_owned(),
        agents: agents
            .iter()
            .map(|l| l.strip_prefix("fleet_agent:").unwrap_or(l).to_owned())
            .collect(),
        other_agents: agents.iter().filter(|a| **a != self_label).count(),
        quorum: FLEET_QUORUM,
        action: match agg.action() {
            FleetAction::Block => "block",
            FleetAction::Report => "report",
        }
        .to_owned(),
        decision: decision.to_owned(),
        why,
        enforcer: notes,
        verdict: serde_json::to_value(Event::Verdict(v)).unwrap_or_default(),
    })
}

/// The decision and why, in the order the agent applies its gates: the fleet scorer's level
/// and block gate, the fleet quorum and `--fleet-action`, then the enforcer's answer
/// (allowlist, guard, `--monitor`, rate cap).
fn decide(
    agg: &Aggregator,
    v: &Verdict,
    agents: &[&'static str],
    notes: &[EnforcerNote],
    in_force: &dyn Fn(&str) -> bool,
) -> (&'static str, String) {
    if v.level != Level::Flux {
        return (
            NONE,
            format!(
                "the fleet scorer says {}: nothing to enforce",
                v.level.as_str()
            ),
        );
    }
    if !v.block {
        return (REPORTED, format!("block gate: {}", v.block_gate));
    }
    if let Some(gate) = fleet_gate(agents, agg.self_label(), agg.action()) {
        return (REPORTED, gate.to_owned());
    }
    if v.allowlisted {
        return (
            REPORTED,
            format!(
                "allowlisted ({}): reported, never enforced",
                v.allowlist_match.as_deref().unwrap_or("built-in list")
            ),
        );
    }
    let count = |o: Outcome| {
        notes
            .iter()
            .filter(|n| n.kind == "block" && n.outcome == o.as_str())
            .count()
    };
    let refused: Vec<String> = notes
        .iter()
        .filter(|n| n.kind == "guard")
        .map(|n| match &n.target {
            Some(t) => format!("{t}: {}", n.reason),
            None => n.reason.clone(),
        })
        .collect();
    let refused_text = if refused.is_empty() {
        String::new()
    } else {
        format!("; the guard refused {}", refused.join(", "))
    };
    let blocked = count(Outcome::Blocked) + count(Outcome::Refreshed);
    if blocked > 0 {
        let live = notes
            .iter()
            .filter(|n| {
                n.kind == "block"
                    && (n.outcome == Outcome::Blocked.as_str()
                        || n.outcome == Outcome::Refreshed.as_str())
                    && n.target.as_deref().is_some_and(in_force)
            })
            .count();
        if live == 0 {
            return (
                LAPSED,
                format!(
                    "blocked by the enforcer ({blocked} targets); every one of those blocks \
                     has expired or was removed since{refused_text}"
                ),
            );
        }
        return (
            ENFORCED,
            format!("blocked by the enforcer: {live} of {blocked} targets in force{refused_text}"),
        );
    }
    if count(Outcome::WouldBlock) > 0 {
        return (REPORTED, format!("--monitor: would block{refused_text}"));
    }
    if count(Outcome::RateCapped) > 0 {
        return (
            REPORTED,
            format!("waiting for the rate cap on new blocks{refused_text}"),
        );
    }
    if count(Outcome::Failed) > 0 {
        return (
            REPORTED,
            format!("the enforcer failed to write the block{refused_text}"),
        );
    }
    if !refused.is_empty() {
        return (REPORTED, format!("guard: refused {}", refused.join(", ")));
    }
    if notes.is_empty() {
        return (
            REPORTED,
            "passes every fleet gate; no automatic blocks here (--no-auto-block), \
             or the enforcer has not been handed the verdict yet"
                .to_owned(),
        );
    }
    (REPORTED, "the enforcer did not block it".to_owned())
}

#[cfg(test)]
mod tests {
    use flux_detect::score::Level;

    use super::*;
    use crate::{
        enforce::policy::TargetKind,
        fleet::aggregate::{
            GATE_QUORUM, GATE_REPORT,
            tests::{aggregator, feed},
        },
    };

    const NAME: &str = "www.fluxy.test";

    fn action(kind: ActionKind, outcome: Outcome, target: &str, reason: &str) -> Action {
        Action {
            kind,
            ts: SystemTime::now(),
            domain: NAME.into(),
            action: outcome,
            target_kind: Some(TargetKind::Ip),
            target: Some(target.into()),
            reason: reason.into(),
        }
    }

    #[test]
    fn names_every_contributor_and_what_the_enforcer_did() {
        let mut agg = aggregator("a1", FleetAction::Block);
        let out = feed(&mut agg, &["a1", "a2", "a3"], 12);
        assert!(out.iter().any(|v| v.level == Level::Flux));
        let mut e = Enforcements::default();
        // Not handed yet (no enforcer here, say): it passes every fleet gate, nothing blocked.
        let v = explain(&mut agg, &e, "WWW.Fluxy.Test.", SystemTime::now(), &|_| {
            true
        })
        .unwrap();
        assert_eq!(v.level, "flux");
        assert_eq!(v.agent, "a1");
        let mut agents = v.agents.clone();
        agents.sort();
        assert_eq!(agents, ["a1", "a2", "a3"]);
        assert_eq!((v.other_agents, v.quorum), (2, FLEET_QUORUM));
        assert_eq!(v.decision, REPORTED, "{v:#?}");
        assert_eq!(v.verdict["type"], "verdict");
        let key = v.key.clone();
        // The enforcer blocked the name's addresses; the guard refused one of them.
        e.note(
            std::slice::from_ref(&key),
            &[
                Action {
                    domain: key.clone(),
                    ..action(ActionKind::Block, Outcome::Blocked, "10.100.1.7", "x")
                },
                Action {
                    domain: key.clone(),
                    ..action(ActionKind::Guard, Outcome::Refused, "10.0.0.53", "resolver")
                },
            ],
        );
        let v = explain(&mut agg, &e, NAME, SystemTime::now(), &|_| true).unwrap();
        assert_eq!(v.decision, ENFORCED, "{v:#?}");
        assert!(v.why.contains("1 of 1 targets in force"), "{}", v.why);
        // The block expired (or was removed): the enforcer's answer is history, not enforcement.
        let v = explain(&mut agg, &e, NAME, SystemTime::now(), &|_| false).unwrap();
        assert_eq!(v.decision, LAPSED, "{v:#?}");
        assert!(v.why.contains("expired or was removed"), "{}", v.why);
        assert!(v.why.contains("10.0.0.53: resolver"), "{}", v.why);
        assert_eq!(v.enforcer.len(), 2);
        assert_eq!(
            v.enforcer[0].reason, "",
            "a block's reason is the verdict's"
        );
        // Handed again, and the guard refused everything: reported, saying so.
        e.note(
            std::slice::from_ref(&key),
            &[Action {
                domain: key.clone(),
                ..action(ActionKind::Guard, Outcome::Refused, "10.0.0.1", "gateway")
            }],
        );
        let v = explain(&mut agg, &e, NAME, SystemTime::now(), &|_| true).unwrap();
        assert_eq!(v.decision, REPORTED);
        assert!(
            v.why.starts_with("guard: refused 10.0.0.1: gateway"),
            "{}",
            v.why
        );
        assert!(explain(&mut agg, &e, "other.test", SystemTime::now(), &|_| true).is_none());
    }

    #[test]
    fn says_which_fleet_gate_kept_it_to_a_report() {
        // One other agent (a compromised one, say) and this one: the fleet quorum.
        let mut agg = aggregator("a1", FleetAction::Block);
        feed(&mut agg, &["a2", "a1"], 12);
        let e = Enforcements::default();
        let v = explain(&mut agg, &e, NAME, SystemTime::now(), &|_| true).unwrap();
        assert_eq!(v.level, "flux");
        assert_eq!(
            (v.decision.as_str(), v.why.as_str()),
            (REPORTED, GATE_QUORUM)
        );
        assert_eq!(v.other_agents, 1);
        // --fleet-action report.
        let mut agg = aggregator("a1", FleetAction::Report);
        feed(&mut agg, &["a2", "a3", "a4"], 12);
        let v = explain(&mut agg, &e, NAME, SystemTime::now(), &|_| true).unwrap();
        assert_eq!(
            (v.decision.as_str(), v.why.as_str()),
            (REPORTED, GATE_REPORT)
        );
        assert_eq!(v.action, "report");
        assert!(!v.agents.contains(&"a1".to_owned()), "a1 saw nothing");
        // One answer: not flux, nothing to do.
        let mut agg = aggregator("a1", FleetAction::Block);
        feed(&mut agg, &["a2"], 1);
        if let Some(v) = explain(&mut agg, &e, NAME, SystemTime::now(), &|_| true) {
            assert_eq!(v.decision, NONE, "{v:#?}");
        }
    }
}
