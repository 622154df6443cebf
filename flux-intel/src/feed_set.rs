//! What a parsed feed is: the deduplicated set of names, addresses and networks
//! ([`FeedSet`]), the warnings for the lines that did not load ([`Warning`]), and the fatal,
//! typed errors ([`FeedError`]); plus the collector every format parser fills. Touches nothing
//! outside this crate.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use serde::Serialize;

use crate::{
    feed_formats::FeedFormat,
    indicator::{Indicator, Reject, normalize_domain, parse_indicator, refang},
};

/// Warnings kept per parse: a feed of a million bad lines must not keep a million messages.
/// The rest are counted in [`Parsed::warnings_dropped`].
pub const MAX_WARNINGS: usize = 1000;

/// A feed's indicators, deduplicated and sorted (so two loads of one feed compare equal and
/// export in a stable order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedSet {
    pub domains: BTreeSet<String>,
    pub ipv4: BTreeSet<Ipv4Addr>,
    pub ipv6: BTreeSet<Ipv6Addr>,
    /// Networks shorter than a single address (a /32 or /128 is in `ipv4`/`ipv6`).
    pub cidrs: BTreeSet<IpNet>,
    /// The names in `domains` that came from a URL indicator. A URL's host is often a shared
    /// service the malware abuses (`t.me`, `steamcommunity.com` in the Lumma feed), so the caller
    /// may report these rather than block them; the guards and the allowlist apply either way.
    pub url_hosts: BTreeSet<String>,
}

impl FeedSet {
    /// Distinct entries (names, addresses and networks).
    pub fn len(&self) -> usize {
        self.domains.len() + self.ipv4.len() + self.ipv6.len() + self.cidrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains_addr(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.ipv4.contains(&v4),
            IpAddr::V6(v6) => self.ipv6.contains(&v6),
        }
    }
}

/// A line (or record) that did not load; the rest of the feed did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// 1-based line number for the text formats (hosts, plain, abp, dnsmasq, csv, netset);
    /// 0 for the JSON formats (MISP, STIX), whose message names the attribute or indicator.
    pub line: usize,
    pub message: String,
}

/// A parsed feed.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The format it was read as (the detected one for `auto`).
    pub format: FeedFormat,
    pub set: FeedSet,
    /// Indicators read, before deduplication (a feed's "entries" count).
    pub entries: usize,
    /// The first [`MAX_WARNINGS`] warnings.
    pub warnings: Vec<Warning>,
    pub warnings_dropped: usize,
}

/// What makes a whole feed unusable. The caller keeps the feed's previous entries.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("unknown feed format {0:?} (known: auto, {list})", list = FeedFormat::names())]
    UnknownFormat(String),
    #[error("cannot tell the feed's format from its content; name one with --format")]
    Undetected,
    #[error("no entry of the {format} feed parses ({warnings} warnings{first})",
        first = first.as_ref().map(|w| format!("; line {}: {}", w.line, w.message)).unwrap_or_default())]
    NothingParsed {
        format: FeedFormat,
        warnings: usize,
        first: Option<Warning>,
    },
    #[error("the {format} feed ends in the middle of its JSON (truncated download?): {source}")]
    Truncated {
        format: FeedFormat,
        source: serde_json::Error,
    },
    #[error("the {format} feed is not valid JSON: {source}")]
    Json {
        format: FeedFormat,
        source: serde_json::Error,
    },
    #[error("the {format} feed has none of the structure it should ({detail})")]
    Shape { format: FeedFormat, detail: String },
    #[error("the CSV feed has no column {0:?} (its header: {1})")]
    NoColumn(String, String),
}

impl FeedError {
    /// `Json` or `Truncated`, by whether the parser ran out of input.
    pub(crate) fn json(format: FeedFormat, source: serde_json::Error) -> Self {
        if source.is_eof() {
            FeedError::Truncated { format, source }
        } else {
            FeedError::Json { format, source }
        }
    }
}

/// Filled by a format parser, then turned into a [`Parsed`].
#[derive(Default)]
pub(crate) struct Collector {
    domains: Vec<String>,
    ipv4: Vec<Ipv4Addr>,
    ipv6: Vec<Ipv6Addr>,
    cidrs: Vec<IpNet>,
    url_hosts: Vec<String>,
    entries: usize,
    warnings: Vec<Warning>,
    warnings_total: usize,
}

impl Collector {
    pub fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.warnings_total += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(Warning {
                line,
                message: message.into(),
            });
        }
    }

    pub fn add(&mut self, indicator: Indicator, from_url: bool) {
        self.entries += 1;
        match indicator {
            Indicator::Domain(d) => {
                if from_url {
                    self.url_hosts.push(d.clone());
                }
                self.domains.push(d);
            }
            Indicator::Addr(IpAddr::V4(a)) => self.ipv4.push(a),
            Indicator::Addr(IpAddr::V6(a)) => self.ipv6.push(a),
            Indicator::Net(n) => self.cidrs.push(n),
        }
    }

    /// Parses `raw` and adds it, or warns (boilerplate is skipped silently). True if added.
    pub fn add_value(&mut self, line: usize, raw: &str) -> bool {
        self.add_labelled(line, raw, &String::new)
    }

    /// [`Self::add_value`], with `label()` (e.g. which JSON record) before a warning.
    pub fn add_labelled(&mut self, line: usize, raw: &str, label: &dyn Fn() -> String) -> bool {
        match parse_indicator(raw) {
            Ok((i, from_url)) => {
                self.add(i, from_url);
                true
            }
            Err(Reject::Boilerplate) => false,
            Err(Reject::Invalid(msg)) => {
                let label = label();
                if label.is_empty() {
                    self.warn(line, msg);
                } else {
                    self.warn(line, format!("{label}: {msg}"));
                }
                false
            }
        }
    }

    /// Parses `raw` as a name only (not an address or URL) and adds it, or warns.
    pub fn add_name(&mut self, line: usize, raw: &str) -> bool {
        match normalize_domain(&refang(raw)) {
            Ok(d) => {
                self.add(Indicator::Domain(d), false);
                true
            }
            Err(Reject::Boilerplate) => false,
            Err(Reject::Invalid(msg)) => {
                self.warn(line, msg);
                false
            }
        }
    }

    /// The parsed feed, or [`FeedError::NothingParsed`] when no entry loaded.
    pub fn finish(self, format: FeedFormat) -> Result<Parsed, FeedError> {
        if self.entries == 0 {
            return Err(FeedError::NothingParsed {
                format,
                warnings: self.warnings_total,
                first: self.warnings.into_iter().next(),
            });
        }
        // Collected into vectors and built once: `BTreeSet::from_iter` sorts and bulk-loads,
        // much faster for a million entries than inserting one by one.
        let set = FeedSet {
            domains: self.domains.into_iter().collect(),
            ipv4: self.ipv4.into_iter().collect(),
            ipv6: self.ipv6.into_iter().collect(),
            cidrs: self.cidrs.into_iter().collect(),
            url_hosts: self.url_hosts.into_iter().collect(),
        };
        Ok(Parsed {
            format,
            set,
            entries: self.entries,
            warnings_dropped: self.warnings_total - self.warnings.len(),
            warnings: self.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deduplicates_and_caps_warnings() {
        let mut c = Collector::default();
        for v in [
            "a.example",
            "A.example.",
            "10.0.0.1",
            "10.0.0.1/32",
            "10.0.0.0/8",
        ] {
            assert!(c.add_value(1, v));
        }
        assert!(!c.add_value(2, "localhost"));
        for line in 0..MAX_WARNINGS + 5 {
            assert!(!c.add_value(line, "not a name"));
        }
        let p = c.finish(FeedFormat::Plain).unwrap();
        assert_eq!(p.entries, 5);
        assert_eq!(p.set.len(), 3);
        assert_eq!(p.warnings.len(), MAX_WARNINGS);
        assert_eq!(p.warnings_dropped, 5);
        assert!(p.set.contains_addr("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn nothing_parsed_is_fatal() {
        let mut c = Collector::default();
        c.add_value(3, "bad value");
        match c.finish(FeedFormat::Hosts) {
            Err(FeedError::NothingParsed {
                warnings: 1,
                first: Some(w),
                ..
            }) => assert_eq!(w.line, 3),
            other => panic!("{other:?}"),
        }
    }
}
