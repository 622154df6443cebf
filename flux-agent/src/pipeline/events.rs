//! The one typed event of the bus, and the JSON contract (`docs/events.md`,
//! `docs/events.schema.json`). Every event is one JSON object with a `"type"` tag:
//!
//! - `dns`: a parsed DNS response, an [`Observation`];
//! - `verdict`: a change of a key's level, `flux_detect::score::Verdict`;
//! - `block`, `guard`, `alert`: what the enforcer did, refused, or wants looked at, an
//!   [`Action`];
//! - `intel`: a response matched a loaded threat-intelligence feed,
//!   [`crate::intel::feed_match::IntelMatch`].
//!
//! Timestamps are RFC 3339, UTC, microseconds everywhere (`flux_detect::timestamp`).

use std::{fmt, net::IpAddr, sync::Arc, time::SystemTime};

use serde::Serialize;

use crate::enforce::policy::{Action, ActionKind, Outcome};
use flux_detect::{
    dns::{DnsMessage, Transport},
    score::Verdict,
    timestamp::rfc3339,
};

/// One event on the bus. The serde tag is the `"type"` field of the JSON contract.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Dns(Observation),
    Verdict(Verdict),
    Block(Action),
    Guard(Action),
    Alert(Action),
    Intel(crate::intel::feed_match::IntelMatch),
}

/// The event types, for subscriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Dns,
    Verdict,
    Block,
    Guard,
    Alert,
    Intel,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Dns,
        EventKind::Verdict,
        EventKind::Block,
        EventKind::Guard,
        EventKind::Alert,
        EventKind::Intel,
    ];

    /// Everything the enforcer and the scorer say, without the per-response `dns` events.
    pub const DECISIONS: [EventKind; 5] = [
        EventKind::Verdict,
        EventKind::Block,
        EventKind::Guard,
        EventKind::Alert,
        EventKind::Intel,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`EventKind`]s: what one subscriber wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub fn of(kinds: &[EventKind]) -> Self {
        Self(kinds.iter().fold(0, |acc, k| acc | k.bit()))
    }

    pub fn contains(self, k: EventKind) -> bool {
        self.0 & k.bit() != 0
    }

    pub fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Dns(_) => EventKind::Dns,
            Event::Verdict(_) => EventKind::Verdict,
            Event::Block(_) => EventKind::Block,
            Event::Guard(_) => EventKind::Guard,
            Event::Alert(_) => EventKind::Alert,
            Event::Intel(_) => EventKind::Intel,
        }
    }

    /// How loud the readable log line is: a level going up, an alert or a failure warns.
    pub fn log_level(&self) -> log::Level {
        match self {
            Event::Dns(_) => log::Level::Debug,
            Event::Verdict(v) if v.level > v.previous => log::Level::Warn,
            Event::Alert(_) | Event::Intel(_) => log::Level::Warn,
            Event::Block(a) if a.action == Outcome::Failed => log::Level::Warn,
            Event::Verdict(_) | Event::Block(_) | Event::Guard(_) => log::Level::Info,
        }
    }
}

impl From<Action> for Event {
    fn from(a: Action) -> Self {
        match a.kind {
            ActionKind::Block => Event::Block(a),
            ActionKind::Guard => Event::Guard(a),
            ActionKind::Alert => Event::Alert(a),
        }
    }
}

impl fmt::Display for Event {
    /// One readable line per event (the `--events` human format and the log).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Dns(o) => o.fmt(f),
            Event::Verdict(v) => v.fmt(f),
            Event::Alert(a) => write!(f, "ALERT: {a}"),
            Event::Intel(m) => write!(f, "INTEL: {m}"),
            Event::Block(a) | Event::Guard(a) => a.fmt(f),
        }
    }
}

/// A DNS response seen on the wire (or read from a capture file), parsed: what the scorer
/// consumes, and the `dns` event. Live capture builds it in `kernel::ring_records`, replay in
/// `pipeline::replay_source`.
#[derive(Clone, Debug, Serialize)]
pub struct Observation {
    #[serde(serialize_with = "flux_detect::timestamp::serialize")]
    pub ts: SystemTime,
    /// Shared: the live source hands every record of an interface the same name (a copy of it
    /// was 1.9% of the capture thread at 150,000 responses a second).
    pub iface: Arc<str>,
    pub ifindex: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
    pub vlan: Vec<u16>,
    /// Message length on the wire, and how much of it was captured.
    pub dns_len: u16,
    pub cap_len: u16,
    /// The capture holds only a prefix of the message.
    pub truncated: bool,
    /// The kernel matched the name on the domain blocklist and enforced it: this is what the
    /// server answered, and the client got NXDOMAIN (UDP) or nothing (TCP, or a reply that
    /// could not be rewritten).
    pub blocked: bool,
    /// `--monitor`: the name is on the domain blocklist, so the reply would have been blocked,
    /// but it was let through unchanged (`blocked` is then false: the client got this answer).
    pub would_block: bool,
    /// The first fragment of a fragmented IP datagram (the rest of the message never reaches
    /// the program).
    pub fragmented: bool,
    /// No query that left this host matches it: never scored, never a reason to block.
    pub unsolicited: bool,
    #[serde(flatten)]
    pub msg: DnsMessage,
}

impl std::fmt::Display for Observation {
    /// One human-readable line: time, where, and what was answered.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        write!(
            f,
            "{} {} {proto} {} -> {} {} {}",
            rfc3339(self.ts),
            self.iface,
            std::net::SocketAddr::new(self.src, self.sport),
            std::net::SocketAddr::new(self.dst, self.dport),
            if self.msg.qname.is_empty() {
                "-"
            } else {
                &self.msg.qname
            },
            self.msg.qtype,
        )?;
        // What the client got first: a blocked reply's is the kernel's, not the server's.
        if self.blocked {
            match self.transport {
                Transport::Udp => write!(f, " NXDOMAIN [blocked: sinkholed; the server said ")?,
                Transport::Tcp => write!(f, " - [blocked: dropped; the server said ")?,
            }
            self.server_answer(f)?;
            write!(f, "]")?;
        } else {
            write!(f, " ")?;
            self.server_answer(f)?;
            if self.would_block {
                write!(f, " [monitor: would be blocked, let through]")?;
            }
        }
        if self.truncated {
            write!(f, " [truncated {}/{} bytes]", self.cap_len, self.dns_len)?;
        }
        if self.unsolicited {
            write!(f, " [unsolicited: not scored]")?;
        }
        Ok(())
    }
}

impl Observation {
    /// The server's rcode and answers, as in `NOERROR: A 192.0.2.1 ttl=60, ...`.
    fn server_answer(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg.rcode)?;
        for (i, a) in self.msg.answers.iter().enumerate() {
            let sep = if i == 0 { ":" } else { "," };
            write!(
                f,
                "{sep} {} {} ttl={}",
                a.rtype,
                a.data().as_deref().unwrap_or("?"),
                a.ttl
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(kind: ActionKind, action: Outcome) -> Action {
        Action {
            kind,
            ts: SystemTime::UNIX_EPOCH,
            domain: "flux.example".into(),
            action,
            target_kind: None,
            target: None,
            reason: "why".into(),
        }
    }

    #[test]
    fn tags_and_typed_fields() {
        let e = Event::from(action(ActionKind::Guard, Outcome::Refused));
        assert_eq!(e.kind(), EventKind::Guard);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "guard");
        assert_eq!(v["action"], "refused");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000000Z");
        assert!(v.get("target").is_none() && v.get("target_kind").is_none());
        let mut a = action(ActionKind::Block, Outcome::WouldBlock);
        a.target_kind = Some(crate::enforce::policy::TargetKind::Ip);
        a.target = Some("192.0.2.1".into());
        let v = serde_json::to_value(Event::from(a)).unwrap();
        assert_eq!(v["type"], "block");
        assert_eq!(v["action"], "would_block");
        assert_eq!(v["target_kind"], "ip");
        let e = Event::from(action(ActionKind::Alert, Outcome::RateCapped));
        assert_eq!(e.log_level(), log::Level::Warn);
        assert!(
            e.to_string()
                .starts_with("ALERT: 1970-01-01T00:00:00.000000Z alert")
        );
    }

    #[test]
    fn kinds_set() {
        let k = Kinds::of(&EventKind::DECISIONS);
        assert!(!k.contains(EventKind::Dns));
        assert!(k.contains(EventKind::Alert));
        assert!(Kinds::of(&EventKind::ALL).contains(EventKind::Dns));
        assert!(
            k.union(Kinds::of(&[EventKind::Dns]))
                .contains(EventKind::Dns)
        );
    }

    fn observation(blocked: bool, would_block: bool, transport: Transport) -> Observation {
        // www.flux.test A 192.0.2.7, TTL 60 (the answer's name a pointer to the question's).
        let mut wire = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        for label in ["www", "flux", "test"] {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.extend_from_slice(&[0, 0, 1, 0, 1]);
        wire.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        let msg = flux_detect::dns::parse_response(&wire, false).unwrap();
        Observation {
            ts: SystemTime::UNIX_EPOCH,
            iface: "eth0".into(),
            ifindex: 2,
            src: "192.0.2.53".parse().unwrap(),
            dst: "192.0.2.10".parse().unwrap(),
            sport: 53,
            dport: 40000,
            transport,
            vlan: Vec::new(),
            dns_len: 60,
            cap_len: 60,
            truncated: false,
            blocked,
            would_block,
            fragmented: false,
            unsolicited: false,
            msg,
        }
    }

    #[test]
    fn a_blocked_reply_reads_as_what_the_client_got() {
        let line = observation(true, false, Transport::Udp).to_string();
        assert!(
            line.contains("www.flux.test A NXDOMAIN [blocked: sinkholed; the server said NOERROR: A 192.0.2.7 ttl=60]"),
            "{line}"
        );
        let line = observation(true, false, Transport::Tcp).to_string();
        assert!(
            line.contains(" A - [blocked: dropped; the server said NOERROR"),
            "{line}"
        );
        let line = observation(false, true, Transport::Udp).to_string();
        assert!(
            line.contains(
                " A NOERROR: A 192.0.2.7 ttl=60 [monitor: would be blocked, let through]"
            ),
            "{line}"
        );
        let line = observation(false, false, Transport::Udp).to_string();
        assert!(line.ends_with(" A NOERROR: A 192.0.2.7 ttl=60"), "{line}");
    }

    #[test]
    fn monitor_says_would_block_not_blocked() {
        let v = serde_json::to_value(observation(false, true, Transport::Udp)).unwrap();
        assert_eq!(v["blocked"], false);
        assert_eq!(v["would_block"], true);
    }
}
