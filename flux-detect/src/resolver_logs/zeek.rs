//! Zeek `dns.log` rows to the [`DnsMessage`] the scorer takes from a parsed response.
//!
//! Both of Zeek's formats: TSV with its `#separator`/`#set_separator`/`#empty_field`/
//! `#unset_field`/`#fields` header (columns found by name, so reordered or extra columns are
//! fine, and a second header block starts over), and JSON, one object per line (`id.orig_h`
//! flat keys or a nested `id` object; `ts` as epoch seconds or RFC 3339).
//!
//! What a row says and what it cannot:
//! - the question, its type, the rcode, the AA/TC/RD/RA flags, and the `answers` vector with
//!   `TTLs` beside it. Zeek writes each answer's data only: an address is an A or AAAA record;
//!   a name answering an address query is a CNAME, whose target owns the answers after it (the
//!   chain is rebuilt in order); a name answering an NS query is an NS record; anything else
//!   keeps the question's type and no data (the scorer does not use it);
//! - no authority and no additional section: delegations (NS) and their glue are never seen, so
//!   the double-flux evidence of a zone's name servers is lost (see the README);
//! - a row without an rcode is a query that got no reply: skipped and counted.
//!
//! Some sensors log every response twice (two taps on one link, or a SPAN of both directions):
//! a row equal to one logged less than [`DUPLICATE_WINDOW_S`] before it (same connection uid,
//! transaction id, question, rcode, answers and TTLs) is counted as a duplicate and dropped,
//! so one response is one observation.
//!
//! Hostile input: lines are capped at [`MAX_LINE`] bytes, every field is checked, a bad row is
//! counted and skipped. May touch: the stream it is given.

use std::{
    borrow::Cow,
    collections::HashMap,
    hash::{Hash, Hasher},
    io::{self, BufRead},
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use flux_common::{TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS};
use serde::{Deserialize, Serialize};

use crate::dns::{DnsFlags, DnsMessage, DnsRecord, Rcode, Transport, type_name};

/// Longest line read (bytes); a longer one is a bad row. Real rows are a few hundred bytes; a
/// response with a hundred answers stays well under this.
pub const MAX_LINE: usize = 64 * 1024;

/// Two identical rows closer than this (seconds) are one response logged twice. On the WRCCDC
/// sample the copies are 1 to 2 microseconds apart; a real retransmitted answer with the same
/// transaction id comes a resolver timeout (a second or more) later and is kept.
pub const DUPLICATE_WINDOW_S: f64 = 1.0;

/// The duplicate filter forgets rows older than the window when it holds this many (memory
/// stays bounded whatever the rate).
const DEDUP_PRUNE_AT: usize = 16 * 1024;

/// The QTYPE of ANY, whose answers may be CNAMEs too.
const TYPE_ANY: u16 = 255;

/// One response from a `dns.log` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZeekDns {
    /// The row's `ts` (Zeek: when the query was seen).
    pub ts: SystemTime,
    /// `id.resp_h`/`id.resp_p`: who answered.
    pub server: IpAddr,
    pub server_port: u16,
    /// `id.orig_h`/`id.orig_p`: who asked.
    pub client: IpAddr,
    pub client_port: u16,
    pub transport: Transport,
    pub msg: DnsMessage,
}

/// What reading `dns.log` files found; the replay summary's `zeek_*` fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ZeekStats {
    /// Data rows read (header lines excluded).
    #[serde(rename = "zeek_rows")]
    pub rows: u64,
    /// Rows yielded as responses (an rcode was logged), duplicates excluded.
    #[serde(rename = "zeek_responses")]
    pub responses: u64,
    /// Of those, rows with at least one answer.
    #[serde(rename = "zeek_with_answers")]
    pub with_answers: u64,
    /// Rows equal to one logged just before ([`DUPLICATE_WINDOW_S`]): dropped.
    #[serde(rename = "zeek_duplicates")]
    pub duplicates: u64,
    /// Queries without a reply (no rcode): skipped.
    #[serde(rename = "zeek_no_response")]
    pub no_response: u64,
    /// Rows that could not be read: too long, a missing or impossible field, bad JSON.
    #[serde(rename = "zeek_bad_rows")]
    pub bad_rows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ZeekError {
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    #[error("not a Zeek dns.log: {0}")]
    NotZeek(&'static str),
}

/// Reads a `dns.log` stream (TSV or JSON, uncompressed), calling `f` for every response.
/// Bad rows are counted in `stats` and skipped; only a read error or a file that is not a
/// dns.log at all (TSV rows before any `#fields`, no `query` column, or rows of which not one
/// could be read, such as another JSON log) is an error.
pub fn read_zeek<R: BufRead>(
    mut r: R,
    stats: &mut ZeekStats,
    mut f: impl FnMut(ZeekDns),
) -> Result<(), ZeekError> {
    let mut line = Vec::new();
    let mut header = TsvHeader::default();
    let mut dedup = Dedup::default();
    let (rows_before, bad_before) = (stats.rows, stats.bad_rows);
    while let Some(too_long) = next_line(&mut r, &mut line)? {
        let text = trim_eol(&line);
        if text.is_empty() {
            continue;
        }
        if text.first() == Some(&b'#') {
            header.directive(text)?;
            continue;
        }
        stats.rows += 1;
        if too_long {
            stats.bad_rows += 1;
            continue;
        }
        let row = if text.first() == Some(&b'{') {
            json_row(text)
        } else {
            header.row(text)?
        };
        let Some(row) = row else {
            stats.bad_rows += 1;
            continue;
        };
        let Some(rcode) = row.rcode else {
            stats.no_response += 1;
            continue;
        };
        if dedup.seen(&row) {
            stats.duplicates += 1;
            continue;
        }
        stats.responses += 1;
        if !row.answers.is_empty() {
            stats.with_answers += 1;
        }
        f(row.into_dns(rcode));
    }
    let rows = stats.rows - rows_before;
    if rows > 0 && stats.bad_rows - bad_before == rows {
        return Err(ZeekError::NotZeek("not one row could be read"));
    }
    Ok(())
}

/// Reads one line into `line` (without the cap's excess). `None` at the end of the stream;
/// `Some(true)` when the line was longer than [`MAX_LINE`].
fn next_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Option<bool>> {
    line.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any.then_some(too_long));
        }
        any = true;
        let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (buf.get(..i).unwrap_or_default(), i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        if chunk.len() > room {
            too_long = true;
        }
        line.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        r.consume(used);
        if done {
            return Ok(Some(too_long));
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A row, whichever format it came in.
#[derive(Debug, Default)]
struct Row {
    ts: Option<SystemTime>,
    uid: String,
    orig_h: Option<IpAddr>,
    orig_p: u16,
    resp_h: Option<IpAddr>,
    resp_p: u16,
    tcp: bool,
    trans_id: u16,
    query: String,
    qtype: u16,
    rcode: Option<u16>,
    flags: DnsFlags,
    answers: Vec<String>,
    ttls: Vec<u32>,
}

impl Row {
    fn into_dns(self, rcode: u16) -> ZeekDns {
        let qname: Arc<str> = Arc::from(normalize(&self.query));
        let answers = answer_records(&qname, self.qtype, &self.answers, &self.ttls);
        ZeekDns {
            ts: self.ts.unwrap_or(SystemTime::UNIX_EPOCH),
            server: self.resp_h.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            server_port: self.resp_p,
            client: self.orig_h.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            client_port: self.orig_p,
            transport: if self.tcp {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            msg: DnsMessage {
                id: self.trans_id,
                qtype: type_name(self.qtype),
                qname,
                rcode: Rcode(rcode),
                flags: self.flags,
                answers,
                authority: Vec::new(),
                additional: Vec::new(),
                edns_udp_size: None,
                incomplete: false,
            },
        }
    }

    /// Whether the row has what every response needs: a time, both ends, a question.
    fn complete(&self) -> bool {
        self.ts.is_some() && self.orig_h.is_some() && self.resp_h.is_some()
    }
}

/// The records of a row's `answers` vector (see the module comment for the types).
fn answer_records(
    qname: &Arc<str>,
    qtype: u16,
    answers: &[String],
    ttls: &[u32],
) -> Vec<DnsRecord> {
    let mut owner = Arc::clone(qname);
    let mut out = Vec::with_capacity(answers.len());
    for (i, a) in answers.iter().enumerate() {
        let ttl = ttls.get(i).copied().unwrap_or(0);
        let (code, addr, target) = if let Ok(ip) = a.parse::<IpAddr>() {
            let code = if ip.is_ipv4() { TYPE_A } else { TYPE_AAAA };
            (code, Some(ip), None)
        } else if !is_name(a) {
            (qtype, None, None)
        } else if qtype == TYPE_NS {
            (TYPE_NS, None, Some(Arc::from(normalize(a))))
        } else if matches!(qtype, TYPE_A | TYPE_AAAA | TYPE_CNAME | TYPE_ANY) {
            (TYPE_CNAME, None, Some(Arc::from(normalize(a))))
        } else {
            (qtype, None, None)
        };
        let next_owner = (code == TYPE_CNAME).then(|| target.clone()).flatten();
        out.push(DnsRecord {
            name: owner.clone(),
            rtype: type_name(code),
            rtype_code: code,
            ttl,
            target,
            addr,
        });
        if let Some(n) = next_owner {
            owner = n;
        }
    }
    out
}

/// Longest presentation-form name (RFC 1035: 255 octets on the wire).
const MAX_NAME: usize = 253;

/// A plausible domain name: labels of letters, digits, `-`, `_`, `*`, no spaces.
fn is_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'))
        })
}

/// Lowercase, no trailing dot: the parser's form of a name.
fn normalize(s: &str) -> String {
    let s = s.strip_suffix('.').filter(|t| !t.is_empty()).unwrap_or(s);
    s.to_ascii_lowercase()
}

/// Zeek's `time` text (`1521911720.865716`) to a time, digit for digit (through an f64 the
/// microseconds would not survive).
fn epoch_text(s: &str) -> Option<SystemTime> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = whole.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Seconds since the epoch (JSON's number) to a time, rounded to Zeek's microseconds.
fn epoch(secs: f64) -> Option<SystemTime> {
    let micros = (secs * 1e6).round();
    if !(0.0..=u64::MAX as f64).contains(&micros) {
        return None;
    }
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_micros(micros as u64))
}

/// An `interval` in seconds as a TTL (rounded, clamped to u32).
fn ttl_of(secs: f64) -> u32 {
    if secs.is_finite() && secs > 0.0 {
        secs.round().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// Forgets nothing within [`DUPLICATE_WINDOW_S`]; see the module comment.
#[derive(Default)]
struct Dedup {
    last: HashMap<u64, f64>,
}

impl Dedup {
    fn seen(&mut self, row: &Row) -> bool {
        let mut h = std::hash::DefaultHasher::new();
        (
            &row.uid,
            row.trans_id,
            &row.query,
            row.qtype,
            row.rcode,
            &row.answers,
            &row.ttls,
        )
            .hash(&mut h);
        let key = h.finish();
        let now = row
            .ts
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        if self.last.len() >= DEDUP_PRUNE_AT {
            self.last
                .retain(|_, t| (now - *t).abs() < DUPLICATE_WINDOW_S);
            if self.last.len() >= DEDUP_PRUNE_AT {
                self.last.clear();
            }
        }
        match self.last.insert(key, now) {
            Some(prev) => (now - prev).abs() < DUPLICATE_WINDOW_S,
            None => false,
        }
    }
}

/// The TSV header: separators, the empty and unset markers, and where each column is.
#[derive(Debug)]
struct TsvHeader {
    sep: u8,
    set_sep: u8,
    empty: Vec<u8>,
    unset: Vec<u8>,
    cols: Option<Columns>,
}

impl Default for TsvHeader {
    fn default() -> Self {
        Self {
            sep: b'\t',
            set_sep: b',',
            empty: b"(empty)".to_vec(),
            unset: b"-".to_vec(),
            cols: None,
        }
    }
}

/// Column indexes of the fields used; `query` is required.
#[derive(Debug, Default)]
struct Columns {
    ts: Option<usize>,
    uid: Option<usize>,
    orig_h: Option<usize>,
    orig_p: Option<usize>,
    resp_h: Option<usize>,
    resp_p: Option<usize>,
    proto: Option<usize>,
    trans_id: Option<usize>,
    query: usize,
    qtype: Option<usize>,
    rcode: Option<usize>,
    aa: Option<usize>,
    tc: Option<usize>,
    rd: Option<usize>,
    ra: Option<usize>,
    answers: Option<usize>,
    ttls: Option<usize>,
}

impl TsvHeader {
    fn directive(&mut self, line: &[u8]) -> Result<(), ZeekError> {
        // `#separator` is followed by a space and the escaped separator; the others by it.
        if let Some(v) = line.strip_prefix(b"#separator ") {
            let v = unescape(v);
            self.sep = *v
                .as_bytes()
                .first()
                .ok_or(ZeekError::NotZeek("empty #separator"))?;
            return Ok(());
        }
        let mut parts = line.split(|&b| b == self.sep);
        let key = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default();
        match key {
            b"#set_separator" => {
                self.set_sep = unescape(value).as_bytes().first().copied().unwrap_or(b',');
            }
            b"#empty_field" => self.empty = value.to_vec(),
            b"#unset_field" => self.unset = value.to_vec(),
            b"#fields" => {
                let names: Vec<&[u8]> = line.split(|&b| b == self.sep).skip(1).collect();
                self.cols = Some(Columns::from_names(&names)?);
            }
            _ => {}
        }
        Ok(())
    }

    /// A data row; `Ok(None)` is a bad row, `Err` a TSV row before any `#fields`.
    fn row(&self, line: &[u8]) -> Result<Option<Row>, ZeekError> {
        let Some(c) = &self.cols else {
            return Err(ZeekError::NotZeek("TSV rows before a #fields header"));
        };
        let fields: Vec<&[u8]> = line.split(|&b| b == self.sep).collect();
        let get = |i: Option<usize>| -> Option<&[u8]> {
            let v = *fields.get(i?)?;
            (v != self.unset.as_slice()).then_some(v)
        };
        let text = |i: Option<usize>| get(i).map(unescape);
        let num = |i: Option<usize>| text(i).and_then(|s| s.parse::<u64>().ok());
        let port = |i: Option<usize>| num(i).and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
        let flag = |i: Option<usize>| get(i) == Some(b"T".as_slice());
        let vector = |i: Option<usize>| -> Vec<String> {
            match get(i) {
                None => Vec::new(),
                Some(v) if v == self.empty.as_slice() => Vec::new(),
                Some(v) => v.split(|&b| b == self.set_sep).map(unescape).collect(),
            }
        };
        // A reply without a question (Zeek logs `-`) is still a reply, with an empty name, as
        // the wire parser reads it.
        let query = text(Some(c.query)).unwrap_or_default();
        let row = Row {
            ts: text(c.ts).as_deref().and_then(epoch_text),
            uid: text(c.uid).unwrap_or_default(),
            orig_h: text(c.orig_h).and_then(|s| s.parse().ok()),
            orig_p: port(c.orig_p),
            resp_h: text(c.resp_h).and_then(|s| s.parse().ok()),
            resp_p: port(c.resp_p),
            tcp: get(c.proto) == Some(b"tcp".as_slice()),
            trans_id: num(c.trans_id)
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(0),
            qtype: num(c.qtype)
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(0),
            rcode: num(c.rcode).and_then(|v| u16::try_from(v).ok()),
            flags: DnsFlags {
                aa: flag(c.aa),
                tc: flag(c.tc),
                rd: flag(c.rd),
                ra: flag(c.ra),
                ..DnsFlags::default()
            },
            answers: vector(c.answers),
            ttls: vector(c.ttls)
                .iter()
                .map(|s| ttl_of(s.parse().unwrap_or(0.0)))
                .collect(),
            query,
        };
        Ok(row.complete().then_some(row))
    }
}

impl Columns {
    fn from_names(names: &[&[u8]]) -> Result<Self, ZeekError> {
        let at = |n: &str| names.iter().position(|&x| x == n.as_bytes());
        Ok(Self {
            ts: at("ts"),
            uid: at("uid"),
            orig_h: at("id.orig_h"),
            orig_p: at("id.orig_p"),
            resp_h: at("id.resp_h"),
            resp_p: at("id.resp_p"),
            proto: at("proto"),
            trans_id: at("trans_id"),
            query: at("query").ok_or(ZeekError::NotZeek("no `query` column in #fields"))?,
            qtype: at("qtype"),
            rcode: at("rcode"),
            aa: at("AA"),
            tc: at("TC"),
            rd: at("RD"),
            ra: at("RA"),
            answers: at("answers"),
            ttls: at("TTLs"),
        })
    }
}

/// Zeek's escapes (`\xNN`, used for separators and non-printable bytes) undone; invalid UTF-8
/// is replaced.
fn unescape(v: &[u8]) -> String {
    if !v.contains(&b'\\') {
        return String::from_utf8_lossy(v).into_owned();
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while let Some(&b) = v.get(i) {
        if b == b'\\'
            && v.get(i + 1) == Some(&b'x')
            && let Some(hex) = v.get(i + 2..i + 4)
            && let Ok(s) = std::str::from_utf8(hex)
            && let Ok(n) = u8::from_str_radix(s, 16)
        {
            out.push(n);
            i += 4;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON row (Zeek's `LogAscii::use_json`): the same fields, typed.
#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonRow<'a> {
    #[serde(borrow)]
    ts: Option<JsonTime<'a>>,
    uid: Option<Cow<'a, str>>,
    #[serde(rename = "id.orig_h")]
    orig_h: Option<Cow<'a, str>>,
    #[serde(rename = "id.orig_p")]
    orig_p: Option<u16>,
    #[serde(rename = "id.resp_h")]
    resp_h: Option<Cow<'a, str>>,
    #[serde(rename = "id.resp_p")]
    resp_p: Option<u16>,
    id: Option<JsonId<'a>>,
    proto: Option<Cow<'a, str>>,
    trans_id: Option<u16>,
    query: Option<String>,
    qtype: Option<u16>,
    rcode: Option<u16>,
    #[serde(rename = "AA")]
    aa: Option<bool>,
    #[serde(rename = "TC")]
    tc: Option<bool>,
    #[serde(rename = "RD")]
    rd: Option<bool>,
    #[serde(rename = "RA")]
    ra: Option<bool>,
    answers: Option<Vec<String>>,
    #[serde(rename = "TTLs")]
    ttls: Option<Vec<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonId<'a> {
    #[serde(borrow)]
    orig_h: Option<Cow<'a, str>>,
    orig_p: Option<u16>,
    resp_h: Option<Cow<'a, str>>,
    resp_p: Option<u16>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonTime<'a> {
    Epoch(f64),
    #[serde(borrow)]
    Text(Cow<'a, str>),
}

fn json_row(line: &[u8]) -> Option<Row> {
    let j: JsonRow<'_> = serde_json::from_slice(line).ok()?;
    let id = j.id.unwrap_or_default();
    let ip = |a: Option<Cow<'_, str>>, b: Option<Cow<'_, str>>| a.or(b)?.parse().ok();
    let ts = match j.ts? {
        JsonTime::Epoch(s) => epoch(s),
        JsonTime::Text(t) => humantime::parse_rfc3339_weak(&t).ok(),
    };
    let row = Row {
        ts,
        uid: j.uid.map(Cow::into_owned).unwrap_or_default(),
        orig_h: ip(j.orig_h, id.orig_h),
        orig_p: j.orig_p.or(id.orig_p).unwrap_or(0),
        resp_h: ip(j.resp_h, id.resp_h),
        resp_p: j.resp_p.or(id.resp_p).unwrap_or(0),
        tcp: j.proto.as_deref() == Some("tcp"),
        trans_id: j.trans_id.unwrap_or(0),
        query: j.query.unwrap_or_default(),
        qtype: j.qtype.unwrap_or(0),
        rcode: j.rcode,
        flags: DnsFlags {
            aa: j.aa.unwrap_or(false),
            tc: j.tc.unwrap_or(false),
            rd: j.rd.unwrap_or(false),
            ra: j.ra.unwrap_or(false),
            ..DnsFlags::default()
        },
        answers: j.answers.unwrap_or_default(),
        ttls: j.ttls.unwrap_or_default().into_iter().map(ttl_of).collect(),
    };
    row.complete().then_some(row)
}

#[cfg(test)]
#[path = "zeek_tests.rs"]
mod zeek_tests;
