//! The values the database keeps, as Rust types: what an entry blocks or allows ([`Target`]),
//! how ([`Kind`], [`Action`]), who asked for it ([`Source`]), and the verdict levels of the
//! journal ([`Level`]). Each has the one text form stored in the database and parsed back.
//! Pure: no database here.

use std::{fmt, net::IpAddr, str::FromStr, time::SystemTime};

use ipnet::IpNet;
use serde::Serialize;

/// A value read from the database (or given by a caller) that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{value}'{}", if .why.is_empty() { String::new() } else { format!(": {}", .why) })]
pub struct BadValue {
    pub what: &'static str,
    pub value: String,
    pub why: String,
}

fn bad(what: &'static str, value: &str, why: &str) -> BadValue {
    BadValue {
        what,
        value: value.to_owned(),
        why: why.to_owned(),
    }
}

/// One thing that is blocked or allowed: the same three kinds as the agent's
/// `enforce::maps::Target`, so converting is a match arm each way.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Ip(IpAddr),
    /// A network address (host bits zero, enforced by [`Target::cidr`]) and its prefix length.
    Cidr(IpAddr, u8),
    /// Lowercase, no trailing dot. Validation (labels, public suffixes) is the agent's; this
    /// crate only normalises case and the trailing dot, so the same name is one key.
    Domain(String),
}

/// The `target_type` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    Ip,
    Cidr,
    Domain,
}

impl TargetType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Cidr => "cidr",
            Self::Domain => "domain",
        }
    }
}

impl FromStr for TargetType {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        match s {
            "ip" => Ok(Self::Ip),
            "cidr" => Ok(Self::Cidr),
            "domain" => Ok(Self::Domain),
            _ => Err(bad("target type", s, "ip, cidr or domain")),
        }
    }
}

impl Target {
    /// `ADDR/LEN` with no host bits set (a typo in the length must not widen a block).
    pub fn cidr(s: &str) -> Result<Self, BadValue> {
        let net: IpNet = s.trim().parse().map_err(|_| bad("CIDR", s, ""))?;
        if net.network() != net.addr() {
            return Err(bad("CIDR", s, "host bits are set"));
        }
        Ok(Self::Cidr(net.addr(), net.prefix_len()))
    }

    /// A domain name, lowercased and without the trailing dot; ASCII only (A-labels).
    pub fn domain(s: &str) -> Result<Self, BadValue> {
        let name = s.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || !name.is_ascii() || name.parse::<IpAddr>().is_ok() {
            return Err(bad("domain", s, "not an ASCII host name"));
        }
        Ok(Self::Domain(name))
    }

    pub fn target_type(&self) -> TargetType {
        match self {
            Self::Ip(_) => TargetType::Ip,
            Self::Cidr(..) => TargetType::Cidr,
            Self::Domain(_) => TargetType::Domain,
        }
    }

    /// The stored form back to a target (the inverse of `to_string`).
    pub fn parse(t: TargetType, text: &str) -> Result<Self, BadValue> {
        match t {
            TargetType::Ip => text
                .parse()
                .map(Self::Ip)
                .map_err(|_| bad("IP address", text, "")),
            TargetType::Cidr => Self::cidr(text),
            TargetType::Domain => Self::domain(text),
        }
    }
}

/// The normalised text stored in the `target` column: an address in its canonical form
/// (`Ipv6Addr`'s Display is RFC 5952), `ADDR/LEN`, or the name.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Cidr(ip, len) => write!(f, "{ip}/{len}"),
            Self::Domain(d) => f.write_str(d),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Block or allow: the blocklist and allowlist maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Block,
    Allow,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Allow => "allow",
        }
    }
}

impl FromStr for Kind {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        match s {
            "block" => Ok(Self::Block),
            "allow" => Ok(Self::Allow),
            _ => Err(bad("kind", s, "block or allow")),
        }
    }
}

/// What an entry asks the agent to do. Ordered weakest first: when several sources hold the
/// same target, the effective action is the strongest ([`crate::EffectiveEntry::action`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Not enforced: a match is reported only (`feed add --action report`).
    Report,
    /// A name a list answers with a sinkhole address (`address=/d/0.0.0.0`, a hosts line).
    /// Enforced as a block today (the kernel answers NXDOMAIN or drops); kept apart so a
    /// sinkhole answer can be added without re-importing.
    Sinkhole,
    /// Enforced the way the agent is configured (`--block-action`: NXDOMAIN or drop for
    /// names; addresses are dropped). Allowlist entries carry this action too.
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Sinkhole => "sinkhole",
            Self::Block => "block",
        }
    }

    /// Whether the entry belongs in the pinned maps.
    pub fn enforced(self) -> bool {
        self != Self::Report
    }
}

impl FromStr for Action {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        match s {
            "report" => Ok(Self::Report),
            "sinkhole" => Ok(Self::Sinkhole),
            "block" => Ok(Self::Block),
            _ => Err(bad("action", s, "block, sinkhole or report")),
        }
    }
}

/// Who made an entry. Stored as `scorer`, `manual`, `feed:NAME`, `fleet:PEER`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Scorer,
    Manual,
    Feed(String),
    Fleet(String),
}

impl Source {
    /// `feed:NAME`.
    pub fn feed(name: &str) -> Self {
        Self::Feed(name.to_owned())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scorer => f.write_str("scorer"),
            Self::Manual => f.write_str("manual"),
            Self::Feed(n) => write!(f, "feed:{n}"),
            Self::Fleet(n) => write!(f, "fleet:{n}"),
        }
    }
}

impl FromStr for Source {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        match s.split_once(':') {
            None if s == "scorer" => Ok(Self::Scorer),
            None if s == "manual" => Ok(Self::Manual),
            Some(("feed", n)) if !n.is_empty() => Ok(Self::Feed(n.to_owned())),
            Some(("fleet", n)) if !n.is_empty() => Ok(Self::Fleet(n.to_owned())),
            _ => Err(bad("source", s, "scorer, manual, feed:NAME or fleet:NAME")),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which sources an export takes (`export --source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SourceFilter {
    #[default]
    All,
    Scorer,
    Manual,
    /// Every feed.
    Feed,
    /// Every fleet peer.
    Fleet,
}

impl SourceFilter {
    pub fn matches(self, s: &Source) -> bool {
        matches!(
            (self, s),
            (Self::All, _)
                | (Self::Scorer, Source::Scorer)
                | (Self::Manual, Source::Manual)
                | (Self::Feed, Source::Feed(_))
                | (Self::Fleet, Source::Fleet(_))
        )
    }
}

impl FromStr for SourceFilter {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        match s {
            "all" => Ok(Self::All),
            "scorer" => Ok(Self::Scorer),
            "manual" => Ok(Self::Manual),
            "feed" => Ok(Self::Feed),
            "fleet" => Ok(Self::Fleet),
            _ => Err(bad(
                "source filter",
                s,
                "all, scorer, manual, feed or fleet",
            )),
        }
    }
}

/// A verdict's level, as flux-detect's `score::Level` (same names, same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Benign,
    Suspicious,
    Flux,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Benign => "benign",
            Self::Suspicious => "suspicious",
            Self::Flux => "flux",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        match s {
            "benign" => Ok(Self::Benign),
            "suspicious" => Ok(Self::Suspicious),
            "flux" => Ok(Self::Flux),
            _ => Err(bad("level", s, "benign, suspicious or flux")),
        }
    }
}

/// One row of `entries`: one source's block or allow of one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub kind: Kind,
    pub target: Target,
    pub action: Action,
    pub source: Source,
    pub reason: String,
    /// The scorer's score in [0, 1]; `None` for manual, feed and fleet entries.
    pub score: Option<f64>,
    #[serde(serialize_with = "crate::ser_time")]
    pub added: SystemTime,
    /// `None`: until removed.
    #[serde(serialize_with = "crate::ser_opt_time")]
    pub expires: Option<SystemTime>,
    /// A domain entry also covers the names under it (what the kernel's maps do for every
    /// domain today; `false` is kept for lists that mean one exact name, such as hosts files).
    pub subdomains: bool,
}

impl Entry {
    /// A block from `source`, added now, permanent, subdomains covered: fill in the rest with
    /// struct update syntax.
    pub fn block(target: Target, source: Source, reason: &str) -> Self {
        Self {
            kind: Kind::Block,
            target,
            action: Action::Block,
            source,
            reason: reason.to_owned(),
            score: None,
            added: SystemTime::now(),
            expires: None,
            subdomains: true,
        }
    }

    /// Whether the entry still holds at `now`.
    pub fn live(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// One target as every live source together holds it: what belongs in the maps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EffectiveEntry {
    pub kind: Kind,
    pub target: Target,
    /// The strongest action of its sources.
    pub action: Action,
    /// Every live source, sorted.
    pub sources: Vec<Source>,
    /// The highest score of its sources.
    pub score: Option<f64>,
    /// The earliest `added`.
    #[serde(serialize_with = "crate::ser_time")]
    pub added: SystemTime,
    /// The latest expiry; `None` when any source is permanent.
    #[serde(serialize_with = "crate::ser_opt_time")]
    pub expires: Option<SystemTime>,
    /// The reason of the source that blocks longest (a permanent one first).
    pub reason: String,
    /// Whether any source covers subdomains.
    pub subdomains: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for s in [
            Source::Scorer,
            Source::Manual,
            Source::feed("urlhaus"),
            Source::Fleet("peer-1:eu".into()),
        ] {
            assert_eq!(s.to_string().parse::<Source>(), Ok(s));
        }
        assert!("feed:".parse::<Source>().is_err());
        assert!("bogus".parse::<Source>().is_err());
        for t in [
            Target::Ip("2001:DB8::1".parse().unwrap()),
            Target::cidr("10.0.0.0/8").unwrap(),
            Target::domain("Example.COM.").unwrap(),
        ] {
            assert_eq!(Target::parse(t.target_type(), &t.to_string()), Ok(t));
        }
        assert_eq!(
            Target::domain("Example.COM.").unwrap().to_string(),
            "example.com"
        );
        assert_eq!(
            Target::Ip("2001:DB8:0::1".parse().unwrap()).to_string(),
            "2001:db8::1"
        );
        assert!(Target::cidr("10.0.0.1/8").is_err(), "host bits set");
        assert!(Target::domain("1.2.3.4").is_err());
        assert!(Target::domain("bücher.de").is_err(), "A-labels only");
    }

    #[test]
    fn strongest_action_is_the_largest() {
        assert!(Action::Block > Action::Sinkhole && Action::Sinkhole > Action::Report);
        assert!(!Action::Report.enforced() && Action::Sinkhole.enforced());
        assert!(Level::Flux > Level::Suspicious && Level::Suspicious > Level::Benign);
    }

    #[test]
    fn source_filters() {
        assert!(SourceFilter::Feed.matches(&Source::feed("x")));
        assert!(!SourceFilter::Feed.matches(&Source::Manual));
        assert!(SourceFilter::All.matches(&Source::Fleet("p".into())));
        assert_eq!("feed".parse(), Ok(SourceFilter::Feed));
    }
}
