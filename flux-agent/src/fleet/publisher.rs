//! The fleet's bus subscriber ([`crate::pipeline::bus`], queued, its own thread): turns this
//! agent's `dns` events into compact observations ([`ObsRec`]) and its verdicts and blocks into
//! [`VerdictMsg`]s for the link ([`super::nats_link`]); and hands the same observations to the
//! run loop, so the fleet scorer ([`super::aggregate`]) sees this agent's evidence beside the
//! others'.
//!
//! **Only what changed**: an answer is sent when its fingerprint (addresses, NS hosts and glue;
//! not the TTL, which a cache counts down) differs from the last one sent for its question, or
//! [`REPUBLISH_SECS`] after that one (so the others' windows keep seeing a name that stays
//! put).
//!
//! **Sampling under load** (docs/fleet.md, Sampling): past [`FULL_RATE`] changed answers in one
//! second, only names whose registered domain hashes to 0 mod [`SAMPLE_MOD`] are sent until
//! the second ends. The hash is the same on every agent, so all sample the same domains and
//! the union of their evidence for those stays whole.
//!
//! May touch: nothing but its two channels.

use std::{collections::HashMap, io, net::IpAddr, sync::Arc};

use flux_common::TYPE_NS;
use flux_detect::{
    dns::DnsMessage,
    enrich::Enricher,
    score::{Level, Verdict, cname_chain, registered_domain, secs},
};
use tokio::sync::mpsc;

use super::{
    aggregate::FLEET_REASON,
    envelope::{AddrRec, NsRec, ObsRec, VerdictMsg},
    fleet_stats::{FleetStats, inc},
    nats_link::{Inbound, Outgoing},
};
use crate::{
    enforce::policy::{Action, Outcome},
    pipeline::{
        bus::Sink,
        events::{Event, EventKind, Observation},
    },
};

/// What the publisher subscribes to.
pub const KINDS: [EventKind; 3] = [EventKind::Dns, EventKind::Verdict, EventKind::Block];

/// An unchanged answer is sent again after ten minutes: well inside the shortest scoring window
/// (one hour), so a remote key's window never runs dry while the name still resolves.
pub const REPUBLISH_SECS: u32 = 600;
/// Changed answers per second sent in full. A busy resolver sees a few hundred new answers a
/// second; 500 a second at ~200 bytes is 100 KB/s per agent, which 10,000 agents' broker
/// cluster can carry (docs/fleet.md).
pub const FULL_RATE: u32 = 500;
/// Past [`FULL_RATE`], one registered domain in four is sent.
pub const SAMPLE_MOD: u32 = 4;
/// Questions whose last sent fingerprint is remembered; past it the memory is cleared (and
/// each answer is sent once more).
const MAX_REMEMBERED: usize = 65_536;

pub struct Publisher {
    enricher: Arc<Enricher>,
    out: mpsc::Sender<Outgoing>,
    local: mpsc::Sender<Inbound>,
    agent: String,
    stats: Arc<FleetStats>,
    /// Question → (fingerprint, when sent).
    last: HashMap<String, (u64, u32)>,
    /// The current second, and changed answers seen in it.
    second: u32,
    in_second: u32,
}

impl Publisher {
    pub fn new(
        enricher: Arc<Enricher>,
        out: mpsc::Sender<Outgoing>,
        local: mpsc::Sender<Inbound>,
        agent: String,
        stats: Arc<FleetStats>,
    ) -> Self {
        Self {
            enricher,
            out,
            local,
            agent,
            stats,
            last: HashMap::new(),
            second: 0,
            in_second: 0,
        }
    }

    fn on_dns(&mut self, obs: &Observation) {
        if obs.unsolicited {
            return;
        }
        let Some(rec) = compact(&obs.msg, secs(obs.ts), &self.enricher) else {
            return;
        };
        let Some(q) = rec.chain.first().cloned() else {
            return;
        };
        let now = secs(obs.ts);
        if let Some((fp, at)) = self.last.get(&q)
            && *fp == rec.fp
            && now < at.saturating_add(REPUBLISH_SECS)
        {
            return;
        }
        if now != self.second {
            self.second = now;
            self.in_second = 0;
        }
        self.in_second += 1;
        let sampling = self.in_second > FULL_RATE;
        if sampling && !sampled_in(&q) {
            inc(&self.stats.obs_dropped);
            return;
        }
        if self.last.len() >= MAX_REMEMBERED {
            self.last.clear();
        }
        self.last.insert(q, (rec.fp, now));
        // The fleet scorer takes this agent's evidence too; a full queue there drops it (counted).
        let local = Inbound::Obs {
            agent: self.agent.clone(),
            recs: vec![rec.clone()],
        };
        if self.local.try_send(local).is_err() {
            inc(&self.stats.obs_dropped);
        }
        if self.out.try_send(Outgoing::Obs(rec, sampling)).is_err() {
            inc(&self.stats.obs_dropped);
        }
    }

    /// Verdicts and blocks are never dropped here: this thread waits for room (the bus's queue
    /// in front of it holds the events meanwhile).
    fn send_verdict(&self, msg: VerdictMsg) {
        let _ = self.out.blocking_send(Outgoing::Verdict(msg));
    }
}

/// Whether `name`'s registered domain is among those sent while sampling. FNV-1a: the same on
/// every agent (the scorer's hashes are seeded per process).
pub fn sampled_in(name: &str) -> bool {
    let rd = registered_domain(name).unwrap_or(name);
    flux_detect::score::addr_info::fnv32(rd.as_bytes()).is_multiple_of(SAMPLE_MOD)
}

/// The compact observation of a response: its CNAME chain, the addresses of the chain's names,
/// the delegations of zones holding a name of the chain, their glue. `None` when it holds
/// nothing the scorer uses.
pub fn compact(msg: &DnsMessage, ts: u32, enricher: &Enricher) -> Option<ObsRec> {
    if !msg.rcode.is_noerror() || msg.qname.is_empty() {
        return None;
    }
    let chain = cname_chain(msg);
    let owner = chain.last().copied().unwrap_or("");
    let mut ttl = 0;
    let mut addrs: Vec<AddrRec> = Vec::new();
    for r in msg.answers.iter().filter(|r| &*r.name == owner) {
        if let Some(ip) = r.addr
            && !addrs.iter().any(|a| a.ip == ip)
        {
            ttl = ttl.max(r.ttl);
            addrs.push(addr_rec(ip, enricher));
        }
    }
    let mut ns = Vec::new();
    for r in msg.authority.iter().chain(&msg.answers) {
        if r.rtype_code != TYPE_NS {
            continue;
        }
        let Some(host) = r.target.as_deref() else {
            continue;
        };
        let glue = msg
            .additional
            .iter()
            .filter(|g| &*g.name == host)
            .filter_map(|g| g.addr)
            .map(|ip| addr_rec(ip, enricher))
            .collect();
        ns.push(NsRec {
            zone: r.name.to_string(),
            host: host.to_owned(),
            glue,
            ttl: r.ttl,
        });
    }
    if addrs.is_empty() && ns.is_empty() {
        return None;
    }
    let chain: Vec<String> = chain.iter().map(|s| (*s).to_owned()).collect();
    let fp = fingerprint(&chain, &addrs, &ns);
    Some(ObsRec {
        ts: u64::from(ts),
        chain,
        ttl,
        addrs,
        ns,
        fp,
    })
}

fn addr_rec(ip: IpAddr, enricher: &Enricher) -> AddrRec {
    AddrRec {
        ip,
        asn: enricher.lookup(ip).asn.unwrap_or(0),
    }
}

/// FNV-1a over the chain, the sorted addresses and the sorted NS hosts with their glue: equal
/// for the same answer in any order.
pub fn fingerprint(chain: &[String], addrs: &[AddrRec], ns: &[NsRec]) -> u64 {
    let mut parts: Vec<String> = addrs.iter().map(|a| a.ip.to_string()).collect();
    parts.sort();
    let mut hosts: Vec<String> = ns
        .iter()
        .map(|n| {
            let mut g: Vec<String> = n.glue.iter().map(|a| a.ip.to_string()).collect();
            g.sort();
            format!("{} {} {}", n.zone, n.host, g.join(","))
        })
        .collect();
    hosts.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in chain.iter().chain(&parts).chain(&hosts) {
        for b in part.bytes().chain(std::iter::once(0)) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn verdict_msg(v: &Verdict) -> VerdictMsg {
    VerdictMsg {
        domain: v.domain.clone(),
        level: v.level.to_string(),
        score: v.score,
        verdict_ts_ms: ms(v.ts),
        target: None,
    }
}

fn block_msg(a: &Action) -> VerdictMsg {
    VerdictMsg {
        domain: a.domain.clone(),
        level: "block".into(),
        score: 0.0,
        verdict_ts_ms: ms(a.ts),
        target: a.target.clone(),
    }
}

fn ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether a verdict is the fleet scorer's (not re-published: the others judge the same
/// evidence themselves).
pub fn is_fleet_verdict(v: &Verdict) -> bool {
    v.reasons.iter().any(|r| r.feature == FLEET_REASON)
}

impl Sink for Publisher {
    fn write(&mut self, e: &Event) -> io::Result<()> {
        match e {
            Event::Dns(obs) => self.on_dns(obs),
            Event::Verdict(v) if !is_fleet_verdict(v) && v.level != Level::Benign => {
                self.send_verdict(verdict_msg(v));
            }
            Event::Block(a) if a.action == Outcome::Blocked => self.send_verdict(block_msg(a)),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use flux_detect::dns::{DnsRecord, Rcode};

    use super::*;

    fn a(name: &str, ip: &str) -> DnsRecord {
        DnsRecord {
            name: name.into(),
            rtype: "A".into(),
            rtype_code: 1,
            ttl: 60,
            target: None,
            addr: Some(ip.parse().unwrap()),
        }
    }

    pub(crate) fn msg(q: &str, ips: &[&str]) -> DnsMessage {
        DnsMessage {
            id: 1,
            qname: q.into(),
            qtype: "A".into(),
            rcode: Rcode::NOERROR,
            flags: Default::default(),
            answers: ips.iter().map(|ip| a(q, ip)).collect(),
            authority: Vec::new(),
            additional: Vec::new(),
            edns_udp_size: None,
            incomplete: false,
        }
    }

    #[test]
    fn the_fingerprint_ignores_order_and_ttl_and_sees_new_addresses() {
        let e = Enricher::empty();
        let one = compact(&msg("www.x.test", &["10.0.0.1", "10.1.0.1"]), 5, &e).unwrap();
        let two = compact(&msg("www.x.test", &["10.1.0.1", "10.0.0.1"]), 9, &e).unwrap();
        assert_eq!(one.fp, two.fp);
        let three = compact(&msg("www.x.test", &["10.1.0.1", "10.2.0.1"]), 9, &e).unwrap();
        assert_ne!(one.fp, three.fp);
        assert_eq!(one.chain, vec!["www.x.test".to_owned()]);
        assert_eq!(one.ttl, 60);
        assert!(compact(&msg("www.x.test", &[]), 5, &e).is_none());
    }

    #[test]
    fn only_changed_answers_are_sent_and_sampling_is_the_same_everywhere() {
        let (out_tx, mut out_rx) = mpsc::channel(64);
        let (loc_tx, mut loc_rx) = mpsc::channel(64);
        let stats = Arc::new(FleetStats::default());
        let mut p = Publisher::new(
            Arc::new(Enricher::empty()),
            out_tx,
            loc_tx,
            "a1".into(),
            stats,
        );
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let obs = |ts, ips: &[&str]| {
            crate::fleet::aggregate::tests::observation(ts, msg("www.x.test", ips))
        };
        p.on_dns(&obs(t0, &["10.0.0.1"]));
        p.on_dns(&obs(t0, &["10.0.0.1"]));
        p.on_dns(&obs(t0, &["10.0.0.2"]));
        let later = t0 + std::time::Duration::from_secs(u64::from(REPUBLISH_SECS));
        p.on_dns(&obs(later, &["10.0.0.2"]));
        let mut sent = 0;
        while out_rx.try_recv().is_ok() {
            sent += 1;
        }
        assert_eq!(sent, 3, "one unchanged answer skipped");
        assert!(loc_rx.try_recv().is_ok());
        // The sampling rule depends on the registered domain only.
        assert_eq!(sampled_in("a.example.com"), sampled_in("b.example.com"));
    }
}
