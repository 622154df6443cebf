//! The fleet's wire records (version [`WIRE_VERSION`]) and their signatures.
//!
//! Every message is one JSON [`Envelope`]: who sent it (`agent`), its sequence number (`seq`,
//! strictly increasing per agent, across restarts: see [`Sequencer`]), when (`ts_ms`), what it
//! holds (`kind` and `body`), and an ed25519 signature over the canonical bytes
//! ([`canonical_bytes`]). The body travels as a JSON *string*, so the receiver checks the
//! signature over exactly the bytes the sender signed (no re-serialisation, no canonical-JSON
//! rules to agree on).
//!
//! May touch: nothing outside this process (pure data, keys read from files).

use std::{
    net::IpAddr,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The version of the records below; a receiver rejects any other (counted as `malformed`).
pub const WIRE_VERSION: u8 = 1;

/// Prefix of the signed bytes: a signature made for anything else (another protocol using the
/// same key) never verifies as a fleet message.
const SIGNING_CONTEXT: &str = "flux-fleet-v1";

/// Longest agent id: it is a NATS subject token and a consumer name.
pub const MAX_AGENT_ID: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An [`ObsBatch`].
    Obs,
    /// A [`VerdictMsg`].
    Verdict,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Obs => "obs",
            Kind::Verdict => "verdict",
        }
    }
}

/// One signed message as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u8,
    pub agent: String,
    pub seq: u64,
    pub ts_ms: u64,
    pub kind: Kind,
    /// The JSON of an [`ObsBatch`] or a [`VerdictMsg`].
    pub body: String,
    /// Hex of the 64-byte ed25519 signature over [`canonical_bytes`].
    pub sig: String,
}

/// An address as the sender's enricher saw it. The receiver enriches the address again with its
/// own databases (a sender could lie about `asn`); these are for operators reading the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRec {
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub asn: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A delegation seen in a response: the zone, one NS host, its glue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsRec {
    pub zone: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub glue: Vec<AddrRec>,
    pub ttl: u32,
}

/// One changed answer of one name: what the scorer needs to take it as if seen here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObsRec {
    /// Seconds since the epoch, when the sender saw it.
    pub ts: u64,
    /// The CNAME chain from the question to the owner of the addresses (the question alone
    /// without CNAMEs).
    pub chain: Vec<String>,
    pub ttl: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<AddrRec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ns: Vec<NsRec>,
    /// The answer's fingerprint ([`super::publisher::fingerprint`]): equal fingerprints are the
    /// same answer.
    pub fp: u64,
}

/// Observations, batched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObsBatch {
    pub obs: Vec<ObsRec>,
    /// Whether the sender was sampling when it built this batch (see docs/fleet.md, Sampling).
    #[serde(default)]
    pub sampled: bool,
}

/// A verdict or a block decision of the sender.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictMsg {
    pub domain: String,
    /// `benign`, `suspicious`, `flux`; or `block` for a block the sender wrote.
    pub level: String,
    pub score: f64,
    /// The verdict's time at the sender, ms since the epoch (verdict-to-enforcement latency).
    pub verdict_ts_ms: u64,
    /// The block target (address or domain) of a block decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a fleet message: {0}")]
    Malformed(String),
    #[error("wire version {0} is not {WIRE_VERSION}")]
    Version(u8),
    #[error("bad signature")]
    BadSignature,
}

/// The bytes a signature covers: context, agent, sequence, time, kind and body, newline-joined.
/// An agent id holds no newline ([`valid_agent_id`]), so no two messages share them.
pub fn canonical_bytes(agent: &str, seq: u64, ts_ms: u64, kind: Kind, body: &str) -> Vec<u8> {
    format!(
        "{SIGNING_CONTEXT}\n{agent}\n{seq}\n{ts_ms}\n{}\n{body}",
        kind.as_str()
    )
    .into_bytes()
}

/// An agent id is a NATS subject token and a durable consumer name: letters, digits, `-`, `_`.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_AGENT_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Envelope {
    /// Signs `body` as message `seq` of `agent`.
    pub fn sign(key: &SigningKey, agent: &str, seq: u64, kind: Kind, body: String) -> Self {
        let ts_ms = now_ms();
        let sig = key.sign(&canonical_bytes(agent, seq, ts_ms, kind, &body));
        Self {
            v: WIRE_VERSION,
            agent: agent.to_owned(),
            seq,
            ts_ms,
            kind,
            body,
            sig: hex(&sig.to_bytes()),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let e: Envelope =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if e.v != WIRE_VERSION {
            return Err(EnvelopeError::Version(e.v));
        }
        if !valid_agent_id(&e.agent) {
            return Err(EnvelopeError::Malformed("bad agent id".into()));
        }
        Ok(e)
    }

    /// Checks the signature with the sender's public key.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), EnvelopeError> {
        let raw = unhex(&self.sig).ok_or(EnvelopeError::BadSignature)?;
        let raw: [u8; 64] = raw.try_into().map_err(|_| EnvelopeError::BadSignature)?;
        let sig = Signature::from_bytes(&raw);
        let bytes = canonical_bytes(&self.agent, self.seq, self.ts_ms, self.kind, &self.body);
        key.verify(&bytes, &sig)
            .map_err(|_| EnvelopeError::BadSignature)
    }

    /// The JetStream message id: the server drops a second message with the same id within the
    /// stream's duplicate window (a publish retried after a lost acknowledgement).
    pub fn msg_id(&self) -> String {
        format!("{}-{}", self.agent, self.seq)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings and integers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Hands out sequence numbers: microseconds since the epoch, bumped to stay strictly
/// increasing. A restarted agent goes on above where it stopped without storing anything (as
/// long as its clock does not go back by more than the time it was down).
#[derive(Debug, Default)]
pub struct Sequencer {
    last: u64,
}

impl Sequencer {
    pub fn next_seq(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.last = now.max(self.last.saturating_add(1));
        self.last
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Lowercase hex. Hand-written (eight lines) rather than one more crate for keys and signatures.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: not a fleet key (64 hex digits of an ed25519 seed)")]
    Format(String),
}

/// Reads an agent's signing key: the 32-byte ed25519 seed in hex (`flux-agent fleet keygen`).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| KeyFileError::Io(name.clone(), e))?;
    let seed: [u8; 32] = unhex(&text)
        .and_then(|v| v.try_into().ok())
        .ok_or(KeyFileError::Format(name))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A new signing key from the kernel's random source. `getrandom(2)` through std's file API on
/// /dev/urandom: no RNG crate for one 32-byte read.
pub fn generate_signing_key() -> std::io::Result<SigningKey> {
    use std::io::Read as _;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    #[test]
    fn a_signed_envelope_verifies_and_any_change_breaks_it() {
        let k = key(1);
        let e = Envelope::sign(&k, "a1", 7, Kind::Obs, r#"{"obs":[]}"#.into());
        let back = Envelope::parse(&e.to_bytes()).unwrap();
        assert_eq!(back, e);
        back.verify(&k.verifying_key()).unwrap();
        for tamper in [
            |e: &mut Envelope| e.seq += 1,
            |e: &mut Envelope| e.ts_ms += 1,
            |e: &mut Envelope| e.agent = "a2".into(),
            |e: &mut Envelope| e.kind = Kind::Verdict,
            |e: &mut Envelope| e.body.push(' '),
        ] {
            let mut t = e.clone();
            tamper(&mut t);
            assert_eq!(
                t.verify(&k.verifying_key()),
                Err(EnvelopeError::BadSignature)
            );
        }
        assert_eq!(
            e.verify(&key(2).verifying_key()),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn garbage_and_other_versions_are_refused() {
        assert!(matches!(
            Envelope::parse(b"nope"),
            Err(EnvelopeError::Malformed(_))
        ));
        let mut e = Envelope::sign(&key(1), "a1", 1, Kind::Obs, "{}".into());
        e.v = 9;
        assert_eq!(
            Envelope::parse(&e.to_bytes()),
            Err(EnvelopeError::Version(9))
        );
        e.v = WIRE_VERSION;
        e.agent = "a.b".into();
        assert!(Envelope::parse(&e.to_bytes()).is_err());
        e.sig = "zz".into();
        assert!(e.verify(&key(1).verifying_key()).is_err());
    }

    #[test]
    fn sequences_only_go_up_and_hex_round_trips() {
        let mut s = Sequencer::default();
        let a = s.next_seq();
        let b = s.next_seq();
        assert!(b > a);
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
