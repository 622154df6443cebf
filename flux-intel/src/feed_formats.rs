//! The feed formats: which there are ([`FeedFormat`]), how `auto` tells them apart
//! ([`detect_text`] for text, the document's keys for JSON), and [`parse_feed`], which runs the
//! right parser of `feed_formats/` (one module per format) over a feed's bytes. Pure: reads only
//! the bytes given.
//!
//! # Auto-detection
//!
//! 1. **JSON** (the first byte that is not white space is `{` or `[`): a STIX bundle if the top
//!    object has `"type": "bundle"` or an `objects` array (or the top array holds STIX objects);
//!    MISP if it has `Event`, `response` or `Attribute` (or the top array holds `{"Event":…}`).
//! 2. **Text**: up to [`SNIFF_LINES`] lines that are neither blank nor comments (`#`, `!`) each
//!    vote: `||…`, `@@…`, `…^`, `##` → abp; `server=/`, `address=/`, `local=/` → dnsmasq; an
//!    address followed by a name → hosts; a `,`, `;` or tab between fields → csv; a lone address,
//!    CIDR or range → netset; another lone token → plain. Plain takes the netset votes when there
//!    are both (a plain list reads addresses too). The most votes win.
//! 3. **The file name's extension is a hint**, used only on a tie or when no line votes:
//!    `.csv`, `.tsv` → csv; `.netset`, `.ipset`, `.cidr` → netset; `.hosts` → hosts;
//!    `.json` → (content decides). A feed with no line to vote on is read as plain (and then
//!    fails as "nothing parses").

mod abp;
mod csv;
mod dnsmasq;
mod hosts;
mod json_feed;
mod misp;
mod netset;
mod plain;
mod stix;
pub mod stix_pattern;

use std::{fmt, net::IpAddr, str::FromStr};

use serde::Serialize;

pub use self::csv::CsvColumn;
use crate::feed_set::{Collector, FeedError, Parsed};

/// Lines of a text feed that vote on its format.
pub const SNIFF_LINES: usize = 200;

/// A feed format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    Hosts,
    Plain,
    Abp,
    Dnsmasq,
    Csv,
    Netset,
    Misp,
    Stix,
}

impl FeedFormat {
    pub const ALL: [FeedFormat; 8] = [
        FeedFormat::Hosts,
        FeedFormat::Plain,
        FeedFormat::Abp,
        FeedFormat::Dnsmasq,
        FeedFormat::Csv,
        FeedFormat::Netset,
        FeedFormat::Misp,
        FeedFormat::Stix,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FeedFormat::Hosts => "hosts",
            FeedFormat::Plain => "plain",
            FeedFormat::Abp => "abp",
            FeedFormat::Dnsmasq => "dnsmasq",
            FeedFormat::Csv => "csv",
            FeedFormat::Netset => "netset",
            FeedFormat::Misp => "misp",
            FeedFormat::Stix => "stix",
        }
    }

    /// `hosts, plain, ...` for messages.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    fn is_json(self) -> bool {
        matches!(self, FeedFormat::Misp | FeedFormat::Stix)
    }
}

impl fmt::Display for FeedFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FeedFormat {
    type Err = FeedError;

    fn from_str(s: &str) -> Result<Self, FeedError> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| FeedError::UnknownFormat(s.to_owned()))
    }
}

/// `--format`: `auto` or a format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FormatChoice {
    #[default]
    Auto,
    Fixed(FeedFormat),
}

impl FromStr for FormatChoice {
    type Err = FeedError;

    fn from_str(s: &str) -> Result<Self, FeedError> {
        if s.eq_ignore_ascii_case("auto") {
            Ok(FormatChoice::Auto)
        } else {
            s.parse().map(FormatChoice::Fixed)
        }
    }
}

/// How to read a feed.
#[derive(Clone, Debug, Default)]
pub struct ParseOptions {
    pub format: FormatChoice,
    /// The CSV column to take (default: by header name, else the first that holds an indicator).
    pub csv_column: Option<CsvColumn>,
    /// The feed's file name or URL path, whose extension is a hint for `auto`.
    pub file_name: Option<String>,
}

/// Parses a feed. Bad lines are warnings in the result; what makes the whole feed unusable is an
/// error (the caller keeps the feed's previous entries).
pub fn parse_feed(bytes: &[u8], options: &ParseOptions) -> Result<Parsed, FeedError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let hint = options.file_name.as_deref().and_then(extension_hint);
    let fixed = match options.format {
        FormatChoice::Fixed(f) => Some(f),
        FormatChoice::Auto => None,
    };
    let looks_json = matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    );
    if fixed.is_some_and(FeedFormat::is_json) || (fixed.is_none() && looks_json) {
        return parse_json(bytes, fixed);
    }
    let format = fixed.unwrap_or_else(|| detect_text(bytes, hint));
    let mut c = Collector::default();
    match format {
        FeedFormat::Hosts => hosts::parse(bytes, &mut c),
        FeedFormat::Plain => plain::parse(bytes, &mut c),
        FeedFormat::Abp => abp::parse(bytes, &mut c),
        FeedFormat::Dnsmasq => dnsmasq::parse(bytes, &mut c),
        FeedFormat::Netset => netset::parse(bytes, &mut c),
        FeedFormat::Csv => csv::parse(bytes, options.csv_column.as_ref(), &mut c)?,
        FeedFormat::Misp | FeedFormat::Stix => return parse_json(bytes, Some(format)),
    }
    c.finish(format)
}

fn parse_json(bytes: &[u8], fixed: Option<FeedFormat>) -> Result<Parsed, FeedError> {
    let feed: json_feed::JsonFeed = serde_json::from_slice(bytes)
        .map_err(|e| FeedError::json(fixed.unwrap_or_else(|| sniff_json(bytes)), e))?;
    let format = match fixed {
        Some(f) => f,
        None => json_format(&feed).ok_or(FeedError::Undetected)?,
    };
    let mut c = Collector::default();
    match format {
        FeedFormat::Misp => misp::parse(feed.misp.as_deref(), &mut c)?,
        _ => stix::parse(feed.stix.as_deref(), &mut c)?,
    }
    c.finish(format)
}

/// The format a JSON document that did not parse was probably meant to be (for the error).
fn sniff_json(bytes: &[u8]) -> FeedFormat {
    let head = bytes.get(..4096).unwrap_or(bytes);
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if has(b"\"Event\"") || has(b"\"Attribute\"") || has(b"\"response\"") {
        FeedFormat::Misp
    } else {
        FeedFormat::Stix
    }
}

/// STIX or MISP by what the document holds (module doc, rule 1).
fn json_format(feed: &json_feed::JsonFeed) -> Option<FeedFormat> {
    if feed.stix.is_some() {
        Some(FeedFormat::Stix)
    } else if feed.misp.is_some() {
        Some(FeedFormat::Misp)
    } else {
        None
    }
}

/// The format a file name's extension suggests (module doc, rule 3).
pub fn extension_hint(name: &str) -> Option<FeedFormat> {
    let path = name.split(['?', '#']).next().unwrap_or(name);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "csv" | "tsv" => Some(FeedFormat::Csv),
        "netset" | "ipset" | "cidr" => Some(FeedFormat::Netset),
        "hosts" => Some(FeedFormat::Hosts),
        _ => None,
    }
}

/// A text feed's format by majority of its first lines' votes (module doc, rule 2).
pub fn detect_text(bytes: &[u8], hint: Option<FeedFormat>) -> FeedFormat {
    let mut votes = [0usize; FeedFormat::ALL.len()];
    let mut voted = 0;
    for (_, raw) in lines(bytes) {
        let Ok(line) = std::str::from_utf8(raw) else {
            continue;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', '!']) {
            continue;
        }
        if let Some(f) = line_vote(line) {
            votes[f as usize] += 1;
        }
        voted += 1;
        if voted == SNIFF_LINES {
            break;
        }
    }
    let (plain, netset) = (FeedFormat::Plain as usize, FeedFormat::Netset as usize);
    if votes[plain] > 0 {
        votes[plain] += votes[netset];
        votes[netset] = 0;
    }
    let best = votes.iter().copied().max().unwrap_or(0);
    if best == 0 {
        return hint.unwrap_or(FeedFormat::Plain);
    }
    let tied: Vec<FeedFormat> = FeedFormat::ALL
        .into_iter()
        .filter(|f| votes[*f as usize] == best)
        .collect();
    match hint {
        Some(h) if tied.contains(&h) => h,
        _ => tied.first().copied().unwrap_or(FeedFormat::Plain),
    }
}

/// One line's vote.
fn line_vote(line: &str) -> Option<FeedFormat> {
    if line.starts_with("||")
        || line.starts_with("@@")
        || line.starts_with("|http")
        || line.contains("##")
        || line.ends_with('^')
        || line
            .get(..9)
            .is_some_and(|h| h.eq_ignore_ascii_case("[adblock "))
    {
        return Some(FeedFormat::Abp);
    }
    if ["server=/", "address=/", "local=/"]
        .iter()
        .any(|p| line.starts_with(p))
    {
        return Some(FeedFormat::Dnsmasq);
    }
    let mut tokens = line.split_whitespace();
    let first = tokens.next()?;
    let more = tokens.next().is_some_and(|t| !t.starts_with('#'));
    if more && first.parse::<IpAddr>().is_ok() {
        return Some(FeedFormat::Hosts);
    }
    if line.contains([',', ';', '\t']) {
        return Some(FeedFormat::Csv);
    }
    if netset::is_address_entry(first) {
        Some(FeedFormat::Netset)
    } else {
        Some(FeedFormat::Plain)
    }
}

/// A text feed's lines, numbered from 1, without the line ending.
pub(crate) fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes.split(|b| *b == b'\n').enumerate().map(|(i, l)| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        (i + 1, l)
    })
}

/// A line as UTF-8 with its comment and surrounding white space removed, or `None` (after a
/// warning if it is not UTF-8). A comment starts with `#` at the start of the line or after
/// white space (a URL's `#fragment` is not one), or with any of `starts` at the start.
pub(crate) fn text_line<'a>(
    n: usize,
    raw: &'a [u8],
    starts: &[char],
    c: &mut Collector,
) -> Option<&'a str> {
    let Ok(line) = std::str::from_utf8(raw) else {
        c.warn(n, "not UTF-8");
        return None;
    };
    let line = line.trim();
    if line.starts_with('#') || line.starts_with(starts) {
        return None;
    }
    let line = line
        .find([' ', '\t'])
        .and_then(|ws| line.get(ws..)?.find('#').map(|h| ws + h))
        .and_then(|cut| line.get(..cut))
        .unwrap_or(line)
        .trim_end();
    (!line.is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(text: &str) -> FeedFormat {
        detect_text(text.as_bytes(), None)
    }

    #[test]
    fn names_round_trip() {
        for f in FeedFormat::ALL {
            assert_eq!(f.name().parse::<FeedFormat>().unwrap(), f);
        }
        assert_eq!("AUTO".parse::<FormatChoice>().unwrap(), FormatChoice::Auto);
        assert!(matches!(
            "yaml".parse::<FormatChoice>(),
            Err(FeedError::UnknownFormat(_))
        ));
    }

    #[test]
    fn detects_text_formats() {
        assert_eq!(
            auto("# c\n0.0.0.0 a.example\n127.0.0.1 localhost\n"),
            FeedFormat::Hosts
        );
        assert_eq!(
            auto("! t\n||a.example^\n||b.example^$important\n"),
            FeedFormat::Abp
        );
        assert_eq!(
            auto("server=/a.example/\naddress=/b.example/0.0.0.0\n"),
            FeedFormat::Dnsmasq
        );
        assert_eq!(auto("type,ioc\ndomain,a.example\n"), FeedFormat::Csv);
        assert_eq!(auto("ip;port;botnet\n1.2.3.4;80;E4\n"), FeedFormat::Csv);
        assert_eq!(auto("# x\n10.0.0.0/8\n1.2.3.4\n"), FeedFormat::Netset);
        assert_eq!(
            auto("a.example\nb.example # c\n1.2.3.4\n"),
            FeedFormat::Plain
        );
        assert_eq!(auto("a.example\n"), FeedFormat::Plain);
        assert_eq!(auto("# only comments\n"), FeedFormat::Plain);
    }

    #[test]
    fn extension_breaks_ties_only() {
        let hint = extension_hint("https://x.example/list.netset?x=1");
        assert_eq!(hint, Some(FeedFormat::Netset));
        assert_eq!(detect_text(b"# nothing\n", hint), FeedFormat::Netset);
        // One column CSV: the content says plain and there is no tie.
        assert_eq!(
            detect_text(b"a.example\n", Some(FeedFormat::Csv)),
            FeedFormat::Plain
        );
        // One hosts line, one CSV line: a tie, the hint decides.
        let mixed = b"0.0.0.0 a.example\nx,b.example\n";
        assert_eq!(detect_text(mixed, Some(FeedFormat::Csv)), FeedFormat::Csv);
        assert_eq!(detect_text(mixed, None), FeedFormat::Hosts);
    }

    #[test]
    fn detects_json_formats() {
        let j = |s: &str| json_format(&serde_json::from_str(s).unwrap());
        assert_eq!(
            j(r#"[{"type":"indicator","id":"x"}]"#),
            Some(FeedFormat::Stix)
        );
        assert_eq!(
            j(r#"{"type":"bundle","objects":[]}"#),
            Some(FeedFormat::Stix)
        );
        assert_eq!(j(r#"{"Event":{}}"#), Some(FeedFormat::Misp));
        assert_eq!(j(r#"{"response":[]}"#), Some(FeedFormat::Misp));
        assert_eq!(j(r#"[{"Event":{}}]"#), Some(FeedFormat::Misp));
        assert_eq!(j(r#"{"x":1}"#), None);
        let opts = ParseOptions::default();
        assert!(matches!(
            parse_feed(br#"{"x":1}"#, &opts),
            Err(FeedError::Undetected)
        ));
        assert!(matches!(
            parse_feed(br#"{"Event":{"Attribute":[{"type":"domain","#, &opts),
            Err(FeedError::Truncated {
                format: FeedFormat::Misp,
                ..
            })
        ));
        assert!(matches!(
            parse_feed(br#"{"type":"bundle" "objects":[]}"#, &opts),
            Err(FeedError::Json {
                format: FeedFormat::Stix,
                ..
            })
        ));
    }

    #[test]
    fn comments_and_bom() {
        let mut c = Collector::default();
        assert_eq!(
            text_line(1, b"  a.example  # c ", &[], &mut c),
            Some("a.example")
        );
        assert_eq!(
            text_line(1, b"http://a.example/#x", &[], &mut c),
            Some("http://a.example/#x")
        );
        assert_eq!(text_line(1, b"# c", &[], &mut c), None);
        assert_eq!(text_line(1, b"! c", &['!'], &mut c), None);
        assert_eq!(text_line(7, b"\xff\xfe", &[], &mut c), None);
        let parsed = parse_feed(b"\xef\xbb\xbfa.example\n", &ParseOptions::default()).unwrap();
        assert!(parsed.set.domains.contains("a.example"));
        let p = c.finish(FeedFormat::Plain);
        assert!(matches!(
            p,
            Err(FeedError::NothingParsed { warnings: 1, .. })
        ));
    }
}
