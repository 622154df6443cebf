//! Whom a receiver believes: the fleet trust list (agent id → ed25519 public key) and the
//! replay window per agent. A message is used only when [`Gate::admit`] says so; every refusal
//! has a [`Reject`] reason, counted (`fleet_stats`).
//!
//! May touch: the trust-list file (read once at start).

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
};

use ed25519_dalek::VerifyingKey;

use super::envelope::{Envelope, EnvelopeError, now_ms, unhex, valid_agent_id};

/// Oldest message a receiver takes, by its sender's clock: the stream's `max_age` (one hour,
/// docs/fleet.md). Anything older cannot be in the stream, so it is a replay from elsewhere.
pub const MAX_AGE_MS: u64 = 3600 * 1000;

/// How far ahead of the receiver's clock a sender's may run (NTP-synchronised hosts are within
/// a second; five minutes tolerates a badly kept one without letting a message live on).
pub const MAX_FUTURE_MS: u64 = 5 * 60 * 1000;

/// Sequence numbers remembered per agent for the replay check. A sender's sequence only grows,
/// and JetStream delivers one sender's messages in order, so a window of 4096 (about a minute
/// of a busy agent's batches) is ample for the few that a redelivery brings back out of order.
pub const SEQ_WINDOW: usize = 4096;

/// Why a message was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Not JSON, not an envelope, wrong version, bad agent id, a body that does not parse.
    Malformed,
    /// The agent id in the message is not the one of the subject it came on.
    SubjectMismatch,
    /// The agent is not on the trust list.
    UnknownAgent,
    BadSignature,
    /// A sequence number this receiver already used, or one older than its window.
    Replay,
    /// Older than the stream keeps anything, or from the future.
    Stale,
}

impl Reject {
    pub const ALL: [Reject; 6] = [
        Reject::Malformed,
        Reject::SubjectMismatch,
        Reject::UnknownAgent,
        Reject::BadSignature,
        Reject::Replay,
        Reject::Stale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::SubjectMismatch => "subject_mismatch",
            Reject::UnknownAgent => "unknown_agent",
            Reject::BadSignature => "bad_signature",
            Reject::Replay => "replay",
            Reject::Stale => "stale",
        }
    }
}

impl From<EnvelopeError> for Reject {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::BadSignature => Reject::BadSignature,
            EnvelopeError::Malformed(_) | EnvelopeError::Version(_) => Reject::Malformed,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustListError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{file}:{line}: {why} (expected `AGENT-ID HEX-PUBLIC-KEY`)")]
    Line {
        file: String,
        line: usize,
        why: &'static str,
    },
}

/// Agent id → public key, and each agent's name as a `'static` reason label
/// ([`TrustList::label`]).
#[derive(Clone, Debug, Default)]
pub struct TrustList {
    keys: HashMap<String, (VerifyingKey, &'static str)>,
}

impl TrustList {
    /// Reads `AGENT-ID HEX-PUBLIC-KEY` lines; `#` starts a comment.
    pub fn read(path: &Path) -> Result<Self, TrustListError> {
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| TrustListError::Io(file.clone(), e))?;
        Self::parse(&text).map_err(|(line, why)| TrustListError::Line { file, line, why })
    }

    pub fn parse(text: &str) -> Result<Self, (usize, &'static str)> {
        let mut t = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err((n + 1, "two fields expected"));
            };
            if !valid_agent_id(id) {
                return Err((n + 1, "bad agent id"));
            }
            let raw: [u8; 32] = unhex(key)
                .and_then(|v| v.try_into().ok())
                .ok_or((n + 1, "the key is not 64 hex digits"))?;
            let key = VerifyingKey::from_bytes(&raw).map_err(|_| (n + 1, "not an ed25519 key"))?;
            // Leaked once per trusted agent, read once at start: the verdict reasons that name
            // an agent need a `'static` label, and the list is bounded by the file.
            let label: &'static str = Box::leak(format!("fleet_agent:{id}").into_boxed_str());
            t.keys.insert(id.to_owned(), (key, label));
        }
        Ok(t)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `fleet_agent:<id>` for a trusted agent.
    pub fn label(&self, agent: &str) -> Option<&'static str> {
        self.keys.get(agent).map(|(_, l)| *l)
    }
}

/// The checks in front of every received message: subject, trust list, signature, replay, age.
pub struct Gate {
    trust: TrustList,
    seen: HashMap<String, BTreeSet<u64>>,
    /// Sequence numbers remembered per agent ([`SEQ_WINDOW`]).
    window: usize,
}

/// What [`Gate::admit`] makes of a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Use(Envelope),
    /// The same message again (a JetStream redelivery): dropped, counted as a duplicate.
    Duplicate,
    Reject(Reject),
}

impl Gate {
    pub fn new(trust: TrustList) -> Self {
        Self {
            trust,
            seen: HashMap::new(),
            window: SEQ_WINDOW,
        }
    }

    pub fn trust(&self) -> &TrustList {
        &self.trust
    }

    /// Checks a message that arrived on `subject_agent`'s subject. `redelivered`: JetStream
    /// says it delivered this one before (its ack was lost), so a repeat of a sequence is a
    /// duplicate; otherwise a repeat is a replay (someone published a copy).
    pub fn admit(&mut self, bytes: &[u8], subject_agent: &str, redelivered: bool) -> Admit {
        self.admit_at(bytes, subject_agent, redelivered, now_ms())
    }

    fn admit_at(
        &mut self,
        bytes: &[u8],
        subject_agent: &str,
        redelivered: bool,
        now: u64,
    ) -> Admit {
        let e = match Envelope::parse(bytes) {
            Ok(e) => e,
            Err(e) => return Admit::Reject(e.into()),
        };
        if e.agent != subject_agent {
            return Admit::Reject(Reject::SubjectMismatch);
        }
        let Some((key, _)) = self.trust.keys.get(&e.agent) else {
            return Admit::Reject(Reject::UnknownAgent);
        };
        if let Err(err) = e.verify(key) {
            return Admit::Reject(err.into());
        }
        if e.ts_ms.saturating_add(MAX_AGE_MS) < now || e.ts_ms > now.saturating_add(MAX_FUTURE_MS) {
            return Admit::Reject(Reject::Stale);
        }
        let seen = self.seen.entry(e.agent.clone()).or_default();
        if seen.contains(&e.seq) {
            return if redelivered {
                Admit::Duplicate
            } else {
                Admit::Reject(Reject::Replay)
            };
        }
        if seen.len() >= self.window && seen.first().is_some_and(|oldest| e.seq < *oldest) {
            return Admit::Reject(Reject::Replay);
        }
        seen.insert(e.seq);
        if seen.len() > self.window {
            seen.pop_first();
        }
        Admit::Use(e)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::fleet::envelope::{Kind, hex};

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn gate() -> Gate {
        let text = format!(
            "# the fleet\na1 {}\n\na2 {} # second\n",
            hex(key(1).verifying_key().as_bytes()),
            hex(key(2).verifying_key().as_bytes())
        );
        Gate::new(TrustList::parse(&text).unwrap())
    }

    fn msg(k: u8, agent: &str, seq: u64) -> Vec<u8> {
        Envelope::sign(&key(k), agent, seq, Kind::Obs, "{}".into()).to_bytes()
    }

    #[test]
    fn trusted_signed_fresh_messages_pass_once() {
        let mut g = gate();
        assert_eq!(g.trust().label("a2"), Some("fleet_agent:a2"));
        let m = msg(1, "a1", 10);
        assert!(matches!(g.admit(&m, "a1", false), Admit::Use(_)));
        assert_eq!(g.admit(&m, "a1", true), Admit::Duplicate);
        assert_eq!(g.admit(&m, "a1", false), Admit::Reject(Reject::Replay));
        // Out of order but inside the window: used.
        assert!(matches!(
            g.admit(&msg(1, "a1", 5), "a1", false),
            Admit::Use(_)
        ));
    }

    #[test]
    fn forged_unknown_misplaced_and_stale_messages_are_rejected() {
        let mut g = gate();
        // a1's id signed with a2's key: a forgery.
        assert_eq!(
            g.admit(&msg(2, "a1", 1), "a1", false),
            Admit::Reject(Reject::BadSignature)
        );
        assert_eq!(
            g.admit(&msg(3, "a3", 1), "a3", false),
            Admit::Reject(Reject::UnknownAgent)
        );
        assert_eq!(
            g.admit(&msg(1, "a1", 1), "a2", false),
            Admit::Reject(Reject::SubjectMismatch)
        );
        assert_eq!(
            g.admit(b"{}", "a1", false),
            Admit::Reject(Reject::Malformed)
        );
        let m = msg(1, "a1", 2);
        let later = now_ms() + MAX_AGE_MS + 60_000;
        assert_eq!(
            g.admit_at(&m, "a1", false, later),
            Admit::Reject(Reject::Stale)
        );
    }

    #[test]
    fn a_sequence_older_than_the_window_is_a_replay() {
        let mut g = gate();
        g.window = 8;
        for s in 0..=8 {
            assert!(matches!(
                g.admit(&msg(1, "a1", 1000 + s), "a1", false),
                Admit::Use(_)
            ));
        }
        assert_eq!(
            g.admit(&msg(1, "a1", 999), "a1", false),
            Admit::Reject(Reject::Replay)
        );
    }

    #[test]
    fn bad_trust_lists_name_the_line() {
        assert_eq!(TrustList::parse("a1").unwrap_err().0, 1);
        assert_eq!(
            TrustList::parse("\na.1 00").unwrap_err(),
            (2, "bad agent id")
        );
        assert_eq!(
            TrustList::parse("a1 0011").unwrap_err(),
            (1, "the key is not 64 hex digits")
        );
    }
}
