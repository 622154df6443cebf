//! Known-good infrastructure: domain suffixes, ASNs and CIDRs that are never enforced.
//!
//! The built-in list is `data/known-good.txt` (documented there); users extend it with files of
//! the same format. Allowlisting changes what is *enforced*, not what is scored: verdicts for
//! allowlisted keys are still emitted, marked with the rule that matched.

use ipnet::IpNet;
use std::{
    collections::HashSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

/// The default list, compiled in.
pub const BUILTIN: &str = include_str!("../data/known-good.txt");

/// Deepest name we walk up from (DNS names have at most 127 labels).
const MAX_LABELS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}:{line}: {reason}")]
    Entry {
        origin: String,
        line: usize,
        reason: String,
    },
}

/// Hashing for the allowlist's sets: every new key asks for its name and each name of its
/// chain, a lookup per label, and SipHash showed in replay profiles. Seeded per process: the
/// names asked about come from the wire.
type SetHash = foldhash::quality::RandomState;

#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    suffixes: HashSet<Box<str>, SetHash>,
    asns: HashSet<u32, SetHash>,
    cidrs: Vec<IpNet>,
    /// The most labels of a listed suffix: a longer part of a name cannot be listed, so
    /// [`Allowlist::match_name`] starts at the longest part that can.
    suffix_labels: usize,
}

/// Why something is allowlisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    Suffix(String),
    Asn(u32),
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Match::Suffix(s) => write!(f, "suffix {s}"),
            Match::Asn(a) => write!(f, "AS{a}"),
        }
    }
}

impl Allowlist {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn builtin() -> Self {
        let mut a = Self::default();
        // The built-in list is tested to parse; an error here would be a build defect.
        if let Err(e) = a.add_text(BUILTIN, "builtin") {
            log::error!("built-in allowlist: {e}");
        }
        a
    }

    pub fn add_file(&mut self, path: &Path) -> Result<(), AllowlistError> {
        let text = std::fs::read_to_string(path).map_err(|source| AllowlistError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.add_text(&text, &path.display().to_string())
    }

    /// Adds every entry of `text`; on error nothing of `text` is added.
    pub fn add_text(&mut self, text: &str, origin: &str) -> Result<(), AllowlistError> {
        let mut next = self.clone();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            next.add_entry(entry)
                .map_err(|reason| AllowlistError::Entry {
                    origin: origin.to_owned(),
                    line: i + 1,
                    reason,
                })?;
        }
        *self = next;
        Ok(())
    }

    fn add_entry(&mut self, entry: &str) -> Result<(), String> {
        if let Some(n) = entry
            .strip_prefix("AS")
            .or_else(|| entry.strip_prefix("as"))
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
        {
            let asn = n
                .parse()
                .map_err(|_| format!("ASN out of range: {entry}"))?;
            self.asns.insert(asn);
            return Ok(());
        }
        if entry.contains('/') || entry.parse::<IpAddr>().is_ok() {
            let (ip, len) = entry.split_once('/').unwrap_or((entry, ""));
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("bad address in {entry:?}"))?;
            let net = if len.is_empty() {
                IpNet::from(ip)
            } else {
                len.parse::<u8>()
                    .ok()
                    .and_then(|len| IpNet::new(ip, len).ok())
                    .ok_or_else(|| format!("bad prefix length in {entry:?}"))?
            };
            self.cidrs.push(net);
            return Ok(());
        }
        let name = entry.trim_end_matches('.').to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!("not a domain, ASN (AS123) or CIDR: {entry:?}"));
        }
        self.suffix_labels = self.suffix_labels.max(name.split('.').count());
        self.suffixes.insert(name.into());
        Ok(())
    }

    /// The listed suffix `name` falls under, if any.
    pub fn match_name(&self, name: &str) -> Option<&str> {
        let name = name.trim_end_matches('.');
        // The parts of the name (from each label on) with more labels than any listed suffix
        // are skipped: the same answer, without hashing them. A name deeper than MAX_LABELS
        // (no DNS name is) keeps the plain walk, which stops after MAX_LABELS parts.
        let dots = name.bytes().filter(|b| *b == b'.').count();
        let mut rest = if dots < MAX_LABELS {
            longest_part(name, self.suffix_labels)
        } else {
            name
        };
        for _ in 0..MAX_LABELS {
            if let Some(s) = self.suffixes.get(rest) {
                return Some(s);
            }
            // A byte search: `split_once('.')` compared the encoded char at every hit, which
            // showed in replay profiles.
            let dot = rest.bytes().position(|b| b == b'.')?;
            rest = rest.get(dot + 1..)?;
        }
        None
    }

    pub fn has_asn(&self, asn: u32) -> bool {
        self.asns.contains(&asn)
    }

    pub fn match_ip(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|net| net.contains(&ip))
    }

    pub fn cidrs(&self) -> &[IpNet] {
        &self.cidrs
    }

    pub fn len(&self) -> usize {
        self.suffixes.len() + self.asns.len() + self.cidrs.len()
    }

    /// Every entry as written in a file (`AS123`, a CIDR, a suffix), sorted and without
    /// duplicates: what a reload compares (`run` on SIGHUP: "allowlist +3 -1").
    pub fn entries(&self) -> std::collections::BTreeSet<String> {
        let suffixes = self.suffixes.iter().map(|s| s.to_string());
        let asns = self.asns.iter().map(|a| format!("AS{a}"));
        let cidrs = self.cidrs.iter().map(|c| c.to_string());
        suffixes.chain(asns).chain(cidrs).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The part of `name` from its `labels`-th label from the end on (the whole name when it has
/// no more labels than that; empty when `labels` is 0).
fn longest_part(name: &str, labels: usize) -> &str {
    if labels == 0 {
        return "";
    }
    let mut seen = 0;
    for (i, b) in name.bytes().enumerate().rev() {
        if b == b'.' {
            seen += 1;
            if seen == labels {
                return name.get(i + 1..).unwrap_or("");
            }
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_listed_as_written() {
        let mut a = Allowlist::empty();
        a.add_text("Example.COM.\nAS13335\n192.0.2.0/24\nexample.com\n", "t")
            .unwrap();
        let e: Vec<String> = a.entries().into_iter().collect();
        assert_eq!(e, ["192.0.2.0/24", "AS13335", "example.com"]);
    }

    /// Skipping the parts of a name longer than any listed suffix finds what the walk over
    /// every part finds.
    #[test]
    fn match_name_skips_only_parts_that_cannot_match() {
        let mut a = Allowlist::empty();
        a.add_text("b.example.com\nexample.org\n", "t").unwrap();
        let walk = |name: &str| {
            let mut rest = name.trim_end_matches('.');
            loop {
                if let Some(s) = a.suffixes.get(rest) {
                    return Some(s.to_string());
                }
                rest = rest.split_once('.')?.1;
            }
        };
        for name in [
            "b.example.com",
            "a.b.example.com.",
            "x.y.z.a.b.example.com",
            "a..b.example.com",
            "example.com",
            "c.example.com",
            "deep.er.example.org",
            "example.org",
            "org",
            "",
            ".",
        ] {
            assert_eq!(a.match_name(name).map(str::to_owned), walk(name), "{name}");
        }
        assert_eq!(Allowlist::empty().match_name("a.example.com"), None);
    }

    #[test]
    fn builtin_parses_and_covers_the_hard_cases() {
        let mut a = Allowlist::default();
        a.add_text(BUILTIN, "builtin").unwrap();
        assert_eq!(a.match_name("0.pool.ntp.org"), Some("pool.ntp.org"));
        assert_eq!(
            a.match_name("seed.bitcoin.sipa.be"),
            Some("seed.bitcoin.sipa.be")
        );
        assert_eq!(
            a.match_name("e1234.a.akamaiedge.net"),
            Some("akamaiedge.net")
        );
        assert_eq!(a.match_name("x.w.kunlunsl.com"), Some("kunlunsl.com"));
        assert_eq!(a.match_name("ntp.org"), None);
        assert_eq!(a.match_name("notakamaiedge.net"), None);
        assert!(a.has_asn(13335) && a.has_asn(45090));
    }

    #[test]
    fn entries_and_errors() {
        let mut a = Allowlist::empty();
        a.add_text(
            "Example.COM.  # comment\nAS64500\n10.0.0.0/8\n2001:db8::/32\n192.0.2.1\n",
            "t",
        )
        .unwrap();
        assert_eq!(a.match_name("www.example.com"), Some("example.com"));
        assert!(a.has_asn(64500));
        assert!(a.match_ip("10.1.2.3".parse().unwrap()));
        assert!(a.match_ip("2001:db8::1".parse().unwrap()));
        assert!(a.match_ip("192.0.2.1".parse().unwrap()));
        assert!(!a.match_ip("192.0.2.2".parse().unwrap()));
        assert!(
            !a.match_ip("::ffff:10.1.2.3".parse().unwrap()),
            "families never mix"
        );
        // Host bits in an entry are ignored, as they always were.
        a.add_text("198.51.100.77/24", "t").unwrap();
        assert!(a.match_ip("198.51.100.1".parse().unwrap()));
        let before = a.len();
        let e = a
            .add_text("good.example\nbad name!\n", "f.txt")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.txt:2: not a domain, ASN (AS123) or CIDR: \"bad name!\""
        );
        assert_eq!(a.len(), before, "a bad file adds nothing");
        assert!(a.add_text("10.0.0.0/33", "t").is_err());
    }
}
