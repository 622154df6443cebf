//! Fleet aggregation: a second scorer (the same `flux_detect::score::Scorer`, the same
//! parameters) fed with the observations of every agent, this one's included, so a key is
//! judged on the union of what the fleet saw. The agent's own scorer keeps judging its own
//! evidence alone, so the fleet can add blocks but never take one away, delay one, or change a
//! local verdict.
//!
//! Each key remembers which agents' evidence went into it; a fleet verdict names them in its
//! reasons (`fleet_agent:<id>`, beside one `fleet` reason whose value is their number), and the
//! **fleet quorum** ([`FLEET_QUORUM`], docs/fleet.md) decides whether it may block here: a fleet
//! verdict that passes the block gate is handed to the enforcer only when at least
//! [`FLEET_QUORUM`] agents *other than this one* contributed. One compromised agent's evidence
//! therefore never blocks a name on another agent, whatever it sends and whatever this agent
//! saw itself. `--fleet-action report` keeps every fleet verdict to a report.
//!
//! May touch: nothing outside the process (the enforcer is the caller's).

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::SystemTime};

use flux_common::{TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS};
use flux_detect::{
    dns::{DnsMessage, DnsRecord, Rcode},
    score::{Reason, Scorer, Verdict, WINDOWS, from_secs, registered_domain, secs},
};
use smallvec::SmallVec;

use super::{envelope::ObsRec, fleet_stats::FleetStats, trust_list::TrustList};

/// The reason every fleet verdict carries; its value is the number of agents behind it.
pub const FLEET_REASON: &str = "fleet";

/// Distinct agents other than the receiving one whose evidence a fleet verdict needs before it
/// may block there. Two: one compromised (or mistaken) agent alone can never block a name on
/// another agent; its evidence plus the receiver's own is not enough either, since the
/// receiver's own evidence is judged by its local scorer already.
pub const FLEET_QUORUM: usize = 2;

/// Why a fleet verdict that passed the block gate only reports (the verdict's `block_gate`).
pub const GATE_QUORUM: &str = "fleet: fewer than 2 other agents' evidence (fleet quorum)";
pub const GATE_REPORT: &str = "fleet: --fleet-action report";

/// Bounds on one received observation (a compromised agent must not make the scorer do
/// unbounded work): longer chains, more addresses or delegations are cut.
const MAX_CHAIN: usize = 8;
const MAX_ADDRS: usize = 32;
const MAX_NS: usize = 16;
const MAX_GLUE: usize = 8;
/// Longest DNS name (RFC 1035).
const MAX_NAME: usize = 253;
/// Keys whose contributors are remembered; past it the memory is cleared (a fleet verdict then
/// names only the agents seen since, and the quorum is counted on them: stricter, never looser).
const MAX_ATTRIBUTED: usize = 200_000;

/// What the agent does with fleet verdicts (`--fleet-action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FleetAction {
    /// Fleet verdicts that pass the block gate and the fleet quorum go to the enforcer (guards,
    /// allowlist, rate cap, `--monitor` apply as to local verdicts).
    #[default]
    Block,
    /// Fleet verdicts are reported, never enforced.
    Report,
}

pub struct Aggregator {
    scorer: Scorer,
    agent: String,
    self_label: &'static str,
    trust: TrustList,
    action: FleetAction,
    /// Key → (agent label, last time its evidence arrived).
    evidence: HashMap<String, SmallVec<[(&'static str, u32); 4]>>,
    /// Keys whose fleet verdict passed the block gate but not the fleet quorum: the scorer
    /// will not say so again (its level and gate did not change), so a new contributor's
    /// evidence re-checks them here ([`Aggregator::recheck_held`]).
    held: std::collections::HashSet<String>,
    scratch: Vec<Verdict>,
}

impl Aggregator {
    pub fn new(scorer: Scorer, agent: &str, trust: TrustList, action: FleetAction) -> Self {
        // Leaked once per run (one agent id): a `'static` reason label like the trust list's.
        let self_label = trust
            .label(agent)
            .unwrap_or_else(|| Box::leak(format!("fleet_agent:{agent}").into_boxed_str()));
        Self {
            scorer,
            agent: agent.to_owned(),
            self_label,
            trust,
            action,
            evidence: HashMap::new(),
            held: std::collections::HashSet::new(),
            scratch: Vec::new(),
        }
    }

    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    pub fn scorer_mut(&mut self) -> &mut Scorer {
        &mut self.scorer
    }

    /// Feeds `recs` of `agent` (already checked, or this agent's own) and pushes the fleet
    /// verdicts they cause to `out`, each decided by the fleet quorum and `--fleet-action`.
    pub fn observe(
        &mut self,
        agent: &str,
        recs: &[ObsRec],
        stats: &FleetStats,
        out: &mut Vec<Verdict>,
    ) {
        let label = if agent == self.agent {
            self.self_label
        } else {
            match self.trust.label(agent) {
                Some(l) => l,
                None => return,
            }
        };
        let now = secs(SystemTime::now());
        for rec in recs {
            let Some(msg) = to_message(rec) else { continue };
            // The sender's clock, but never ahead of ours (the scorer's windows move forward).
            let ts = u32::try_from(rec.ts).unwrap_or(u32::MAX).min(now);
            let touched = self.note(label, &msg, ts);
            self.scratch.clear();
            self.scorer.observe(from_secs(ts), &msg, &mut self.scratch);
            let mut verdicts = std::mem::take(&mut self.scratch);
            for mut v in verdicts.drain(..) {
                let agents = self.contributors(&v.domain, ts);
                decide(&mut v, agents, self.self_label, self.action, stats);
                self.hold_if_quorum_missing(&v);
                out.push(v);
            }
            self.scratch = verdicts;
            self.recheck_held(&touched, ts, stats, out);
        }
    }

    fn hold_if_quorum_missing(&mut self, v: &Verdict) {
        if v.block_gate == GATE_QUORUM {
            if self.held.len() >= MAX_ATTRIBUTED {
                self.held.clear();
            }
            self.held.insert(v.domain.clone());
        } else {
            self.held.remove(&v.domain);
        }
    }

    /// Held keys among `touched` that the fleet quorum now backs: their current verdict, if it
    /// still passes the block gate, goes out again (and may block).
    fn recheck_held(
        &mut self,
        touched: &[String],
        ts: u32,
        stats: &FleetStats,
        out: &mut Vec<Verdict>,
    ) {
        for k in touched {
            if !self.held.contains(k) {
                continue;
            }
            let agents = self.contributors(k, ts);
            if agents.iter().filter(|a| **a != self.self_label).count() < FLEET_QUORUM {
                continue;
            }
            self.held.remove(k);
            if let Some(mut v) = self.scorer.explain(k, from_secs(ts))
                && v.block
            {
                decide(&mut v, agents, self.self_label, self.action, stats);
                out.push(v);
            }
        }
    }

    /// The fleet scorer's verdict on `key` now (re-scored, without changing its state) and the
    /// agents whose evidence on it is inside the scoring window, for `explain`.
    pub fn view(&mut self, key: &str, now: SystemTime) -> Option<(Verdict, Vec<&'static str>)> {
        let v = self.scorer.explain(key, now)?;
        let agents = self.contributors(&v.domain, secs(now)).into_vec();
        Some((v, agents))
    }

    /// This agent's reason label (`fleet_agent:<id>`).
    pub fn self_label(&self) -> &'static str {
        self.self_label
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub fn action(&self) -> FleetAction {
        self.action
    }

    /// Records `label` as a contributor of every key the message can feed; returns those keys.
    fn note(&mut self, label: &'static str, msg: &DnsMessage, ts: u32) -> Vec<String> {
        if self.evidence.len() >= MAX_ATTRIBUTED {
            self.evidence.clear();
        }
        let names = msg
            .answers
            .iter()
            .chain(&msg.authority)
            .flat_map(|r| std::iter::once(&*r.name).chain(r.target.as_deref()))
            .chain(std::iter::once(&*msg.qname));
        let mut keys: SmallVec<[&str; 8]> = SmallVec::new();
        for n in names {
            for k in std::iter::once(n).chain(registered_domain(n)) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        for k in &keys {
            let e = self.evidence.entry((*k).to_owned()).or_default();
            match e.iter_mut().find(|(l, _)| *l == label) {
                Some(x) => x.1 = x.1.max(ts),
                None => e.push((label, ts)),
            }
        }
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    /// The agents whose evidence on `key` is inside the longest scoring window at `now`.
    fn contributors(&self, key: &str, now: u32) -> SmallVec<[&'static str; 4]> {
        let window = WINDOWS[WINDOWS.len() - 1].0;
        self.evidence
            .get(key)
            .map(|e| {
                e.iter()
                    .filter(|(_, t)| t.saturating_add(window) >= now)
                    .map(|(l, _)| *l)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Names the contributors in `v`'s reasons and applies the fleet quorum and `--fleet-action`
/// to its block gate.
fn decide(
    v: &mut Verdict,
    agents: SmallVec<[&'static str; 4]>,
    self_label: &'static str,
    action: FleetAction,
    stats: &FleetStats,
) {
    super::fleet_stats::inc(&stats.fleet_verdicts);
    v.reasons.push(Reason {
        feature: FLEET_REASON,
        value: agents.len() as f64,
        weight: 0.0,
        contribution: 0.0,
    });
    for a in &agents {
        v.reasons.push(Reason {
            feature: a,
            value: 1.0,
            weight: 0.0,
            contribution: 0.0,
        });
    }
    if !v.block {
        return;
    }
    match fleet_gate(&agents, self_label, action) {
        Some(gate) => {
            v.block = false;
            v.block_gate = gate;
            super::fleet_stats::inc(&stats.reports_only);
        }
        None => super::fleet_stats::inc(&stats.enforced),
    }
}

/// Why a fleet verdict that passes the scorer's block gate must only report here (the fleet
/// quorum, then `--fleet-action report`), or `None` when it may go to the enforcer.
pub fn fleet_gate(
    agents: &[&'static str],
    self_label: &'static str,
    action: FleetAction,
) -> Option<&'static str> {
    let others = agents.iter().filter(|a| **a != self_label).count();
    if others < FLEET_QUORUM {
        Some(GATE_QUORUM)
    } else if action == FleetAction::Report {
        Some(GATE_REPORT)
    } else {
        None
    }
}

/// A lowercase name without the trailing dot, or `None` when it cannot be a DNS name.
fn clean(name: &str) -> Option<String> {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    (!n.is_empty() && n.len() <= MAX_NAME && n.bytes().all(|b| b.is_ascii_graphic())).then_some(n)
}

fn record(
    name: &str,
    rtype: u16,
    ttl: u32,
    target: Option<String>,
    addr: Option<IpAddr>,
) -> DnsRecord {
    let mnemonic = match rtype {
        TYPE_A => "A",
        TYPE_AAAA => "AAAA",
        TYPE_CNAME => "CNAME",
        _ => "NS",
    };
    DnsRecord {
        name: name.into(),
        rtype: mnemonic.into(),
        rtype_code: rtype,
        ttl,
        target: target.map(Arc::from),
        addr,
    }
}

fn addr_record(name: &str, ttl: u32, ip: IpAddr) -> DnsRecord {
    let t = if ip.is_ipv4() { TYPE_A } else { TYPE_AAAA };
    record(name, t, ttl, None, Some(ip))
}

/// The response a compact observation stands for: the chain's CNAMEs, the owner's addresses,
/// the delegations and their glue. The scorer applies its own bailiwick rules to it, as to any
/// response, so a sender cannot make it feed a key the response could not.
pub fn to_message(rec: &ObsRec) -> Option<DnsMessage> {
    let chain: Vec<String> = rec
        .chain
        .iter()
        .take(MAX_CHAIN)
        .map(|n| clean(n))
        .collect::<Option<_>>()?;
    let qname = chain.first()?.clone();
    let owner = chain.last()?.clone();
    let mut answers: Vec<DnsRecord> = chain
        .windows(2)
        .filter_map(|w| match w {
            [a, b] => Some(record(a, TYPE_CNAME, rec.ttl, Some(b.clone()), None)),
            _ => None,
        })
        .collect();
    answers.extend(
        rec.addrs
            .iter()
            .take(MAX_ADDRS)
            .map(|a| addr_record(&owner, rec.ttl, a.ip)),
    );
    let mut authority = Vec::new();
    let mut additional = Vec::new();
    for ns in rec.ns.iter().take(MAX_NS) {
        let (Some(zone), Some(host)) = (clean(&ns.zone), clean(&ns.host)) else {
            continue;
        };
        additional.extend(
            ns.glue
                .iter()
                .take(MAX_GLUE)
                .map(|g| addr_record(&host, ns.ttl, g.ip)),
        );
        authority.push(record(&zone, TYPE_NS, ns.ttl, Some(host), None));
    }
    Some(DnsMessage {
        id: 0,
        qname: qname.into(),
        qtype: "A".into(),
        rcode: Rcode::NOERROR,
        flags: Default::default(),
        answers,
        authority,
        additional,
        edns_udp_size: None,
        incomplete: false,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use flux_detect::{
        enrich::Enricher,
        known_good::Allowlist,
        score::{Level, ScorerConfig},
    };

    use super::*;
    use crate::{
        fleet::envelope::{AddrRec, hex},
        pipeline::events::Observation,
    };

    /// A solicited `dns` event around `msg`.
    pub(crate) fn observation(ts: SystemTime, msg: DnsMessage) -> Observation {
        Observation {
            ts,
            iface: "lo".into(),
            ifindex: 1,
            src: "10.0.0.53".parse().unwrap(),
            dst: "10.0.0.1".parse().unwrap(),
            sport: 53,
            dport: 4000,
            transport: flux_detect::dns::Transport::Udp,
            vlan: Vec::new(),
            dns_len: 100,
            cap_len: 100,
            truncated: false,
            blocked: false,
            would_block: false,
            fragmented: false,
            unsolicited: false,
            msg,
        }
    }

    fn trust(ids: &[&str]) -> TrustList {
        let text: String = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let k = ed25519_dalek::SigningKey::from_bytes(&[i as u8 + 1; 32]);
                format!("{id} {}\n", hex(k.verifying_key().as_bytes()))
            })
            .collect();
        TrustList::parse(&text).unwrap()
    }

    pub(crate) fn aggregator(me: &str, action: FleetAction) -> Aggregator {
        let scorer = Scorer::new(
            ScorerConfig {
                block_hold_minutes: 0,
                ..ScorerConfig::default()
            },
            Arc::new(Enricher::empty()),
            Arc::new(Allowlist::default()),
        );
        Aggregator::new(scorer, me, trust(&["a1", "a2", "a3", "a4"]), action)
    }

    /// Round `r` of a flux name: five fresh addresses in five /16s, TTL 60.
    fn flux_rec(ts: u64, r: u32) -> ObsRec {
        ObsRec {
            ts,
            chain: vec!["www.fluxy.test".into()],
            ttl: 60,
            addrs: (0..5)
                .map(|i| AddrRec {
                    ip: format!("10.{}.{}.7", 100 + r * 5 + i, i + 1)
                        .parse()
                        .unwrap(),
                    asn: 0,
                })
                .collect(),
            ns: Vec::new(),
            fp: u64::from(r),
        }
    }

    /// Feeds rounds from the given agents in turn, each agent's rounds a minute apart; returns
    /// every verdict.
    pub(crate) fn feed(agg: &mut Aggregator, agents: &[&str], rounds: u32) -> Vec<Verdict> {
        let stats = FleetStats::default();
        let t0 = secs(SystemTime::now()) as u64 - 3000;
        let mut out = Vec::new();
        for r in 0..rounds {
            let agent = agents[r as usize % agents.len()];
            agg.observe(
                agent,
                &[flux_rec(t0 + u64::from(r) * 60, r)],
                &stats,
                &mut out,
            );
        }
        out
    }

    #[test]
    fn one_answer_from_each_of_three_agents_is_flux_where_one_agent_is_not() {
        // Three agents, one answer each: flux on the union (the scorer needs three answers).
        let mut agg = aggregator("a1", FleetAction::Block);
        let out = feed(&mut agg, &["a1", "a2", "a3"], 3);
        assert!(out.iter().any(|v| v.level == Level::Flux), "{out:#?}");
        // One agent's one answer alone: nothing.
        let mut alone = aggregator("a1", FleetAction::Block);
        assert!(feed(&mut alone, &["a1"], 1).is_empty());
    }

    #[test]
    fn three_agents_union_reaches_flux_and_may_block() {
        let mut agg = aggregator("a1", FleetAction::Block);
        let out = feed(&mut agg, &["a1", "a2", "a3"], 12);
        let flux: Vec<&Verdict> = out.iter().filter(|v| v.level == Level::Flux).collect();
        assert!(!flux.is_empty(), "{out:#?}");
        let blocking: Vec<&&Verdict> = flux.iter().filter(|v| v.block).collect();
        assert!(
            !blocking.is_empty(),
            "no fleet verdict passed the gate: {flux:#?}"
        );
        let v = blocking[0];
        for a in ["fleet_agent:a1", "fleet_agent:a2", "fleet_agent:a3"] {
            assert!(
                v.reasons.iter().any(|r| r.feature == a),
                "{a} not named: {v:#?}"
            );
        }
    }

    #[test]
    fn one_other_agent_alone_never_blocks_here() {
        // a2 sends everything (a compromised agent), a1 (this one) sees the name too.
        let mut agg = aggregator("a1", FleetAction::Block);
        let out = feed(&mut agg, &["a2", "a1"], 12);
        assert!(out.iter().any(|v| v.level == Level::Flux), "{out:#?}");
        assert!(out.iter().all(|v| !v.block), "{out:#?}");
        assert!(out.iter().any(|v| v.block_gate == GATE_QUORUM));
    }

    #[test]
    fn a_held_verdict_blocks_once_a_second_other_agent_backs_it() {
        let mut agg = aggregator("a1", FleetAction::Block);
        let out = feed(&mut agg, &["a2"], 8);
        assert!(out.iter().all(|v| !v.block), "{out:#?}");
        assert!(out.iter().any(|v| v.block_gate == GATE_QUORUM));
        let stats = FleetStats::default();
        let mut more = Vec::new();
        let ts = secs(SystemTime::now()) as u64;
        agg.observe("a3", &[flux_rec(ts, 20)], &stats, &mut more);
        assert!(more.iter().any(|v| v.block), "{more:#?}");
        assert!(
            more.iter()
                .any(|v| v.block && v.reasons.iter().any(|r| r.feature == "fleet_agent:a3"))
        );
    }

    #[test]
    fn report_action_never_blocks() {
        let mut agg = aggregator("a1", FleetAction::Report);
        let out = feed(&mut agg, &["a2", "a3", "a4"], 12);
        assert!(out.iter().any(|v| v.level == Level::Flux));
        assert!(out.iter().all(|v| !v.block));
        assert!(out.iter().any(|v| v.block_gate == GATE_REPORT));
    }

    #[test]
    fn hostile_records_are_cut_or_refused() {
        let mut r = flux_rec(1, 0);
        r.chain = vec!["bad name".into()];
        assert!(to_message(&r).is_none());
        r.chain = (0..50).map(|i| format!("c{i}.x.test")).collect();
        r.addrs = (0..100)
            .map(|i| AddrRec {
                ip: IpAddr::from([10, 0, 0, i as u8]),
                asn: 0,
            })
            .collect();
        let m = to_message(&r).unwrap();
        assert_eq!(m.answers.len(), MAX_CHAIN - 1 + MAX_ADDRS);
        r.chain.clear();
        assert!(to_message(&r).is_none());
        let _ = Duration::ZERO;
    }
}
