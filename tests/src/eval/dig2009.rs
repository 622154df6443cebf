//! The real 2009 fast-flux `dig` output (`../shared/datasets/fastflux-2009`), converted to pcap
//! and labelled by evidence.
//!
//! Input: `dig` output, one lookup after another (lines end in CR, or CRLF), each with the
//! `->>HEADER<<-` line, the flags line, the QUESTION/ANSWER/AUTHORITY/ADDITIONAL sections,
//! `;; SERVER:` and `;; WHEN:`. Each answered lookup is rebuilt as a DNS response with
//! hickory-proto (A, AAAA, CNAME, NS, SOA, MX, TXT, PTR; other types are skipped and counted) and
//! written to a time-sorted pcap from the resolver named by `;; SERVER:` to 192.0.2.10. Lookups
//! that timed out have no response (counted); anything else unusable is counted as garbage.
//!
//! `;; WHEN:` has a one-second resolution and no zone: it is read as UTC, and the k-th lookup
//! within one second is placed k milliseconds into it, so file order is kept.
//!
//! See [`label`] for the labelling rule.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt, fs,
    io::Read as _,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    str::FromStr,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, TXT},
    },
};

use super::{
    labels::{Label, Truth, write_labels},
    pcapw::{self, Response},
};

/// One resource record line as `dig` printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigRecord {
    /// Owner name, lowercase, no trailing dot.
    pub name: String,
    pub ttl: u32,
    pub class: String,
    pub rtype: String,
    /// The RDATA fields.
    pub data: Vec<String>,
}

/// One answered lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigLookup {
    /// Position of the lookup in the file (0-based, counting every lookup).
    pub index: usize,
    pub id: u16,
    pub status: String,
    /// Header flags (`qr`, `aa`, `rd`, ...).
    pub flags: Vec<String>,
    /// Question name (lowercase, no trailing dot) and type.
    pub question: Option<(String, String)>,
    pub answer: Vec<DigRecord>,
    pub authority: Vec<DigRecord>,
    pub additional: Vec<DigRecord>,
    /// `;; WHEN:` as time since the Unix epoch (read as UTC), whole seconds.
    pub when: Duration,
    pub server: Option<IpAddr>,
}

/// What became of the lookups of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Every `; <<>> DiG` block.
    pub lookups: usize,
    /// Blocks that say the connection timed out (no response to convert).
    pub timed_out: usize,
    /// Blocks with neither a usable answer nor a time-out (or whose message could not be built).
    pub garbage: usize,
    /// Responses written to the pcap.
    pub converted: usize,
    /// Records written.
    pub records: usize,
    /// Records of types not rebuilt, by type.
    pub skipped_types: BTreeMap<String, usize>,
    /// Record lines that could not be parsed (bad TTL, name or address, too few fields).
    pub bad_records: usize,
    /// First and last response time.
    pub first: Option<Duration>,
    pub last: Option<Duration>,
}

impl fmt::Display for ConvertStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lookups: {} converted ({} records), {} timed out, {} garbage, {} bad record lines",
            self.lookups,
            self.converted,
            self.records,
            self.timed_out,
            self.garbage,
            self.bad_records
        )?;
        if !self.skipped_types.is_empty() {
            write!(f, ", skipped types {:?}", self.skipped_types)?;
        }
        if let (Some(a), Some(b)) = (self.first, self.last) {
            write!(f, ", {}s to {}s after the epoch", a.as_secs(), b.as_secs())?;
        }
        Ok(())
    }
}

/// Reads a dig output file, gunzipping `*.gz`.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    let raw = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("gunzip {}", path.display()))?;
        out
    } else {
        raw
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Parses dig output (CR, CRLF or LF line ends). Returns the answered lookups; `stats` gets the
/// lookup, time-out, garbage and bad-record counts.
pub fn parse_dig(text: &str, stats: &mut ConvertStats) -> Vec<DigLookup> {
    let mut out = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut index = 0usize;
    let mut flush = |block: &mut Vec<&str>, index: &mut usize, stats: &mut ConvertStats| {
        if block.is_empty() {
            return;
        }
        stats.lookups += 1;
        match parse_block(block, *index, stats) {
            Block::Answer(l) => out.push(*l),
            Block::TimedOut => stats.timed_out += 1,
            Block::Garbage => stats.garbage += 1,
        }
        *index += 1;
        block.clear();
    };
    for line in text.split(['\r', '\n']) {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("; <<>> DiG") {
            flush(&mut block, &mut index, stats);
        } else if block.is_empty() {
            // Text before the first lookup: nothing to attach it to.
            continue;
        }
        block.push(line);
    }
    flush(&mut block, &mut index, stats);
    out
}

enum Block {
    Answer(Box<DigLookup>),
    TimedOut,
    Garbage,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Question,
    Answer,
    Authority,
    Additional,
}

fn parse_block(lines: &[&str], index: usize, stats: &mut ConvertStats) -> Block {
    let mut header: Option<(u16, String)> = None;
    let mut flags = Vec::new();
    let mut question = None;
    let (mut answer, mut authority, mut additional) = (Vec::new(), Vec::new(), Vec::new());
    let mut when = None;
    let mut server = None;
    let mut timed_out = false;
    let mut section = Section::None;
    for line in lines {
        if let Some(rest) = line.strip_prefix(";;") {
            let rest = rest.trim();
            section = Section::None;
            if let Some(h) = rest.strip_prefix("->>HEADER<<-") {
                header = parse_header(h);
            } else if let Some(f) = rest.strip_prefix("flags:") {
                flags = f
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
            } else if rest.starts_with("QUESTION SECTION") {
                section = Section::Question;
            } else if rest.starts_with("ANSWER SECTION") {
                section = Section::Answer;
            } else if rest.starts_with("AUTHORITY SECTION") {
                section = Section::Authority;
            } else if rest.starts_with("ADDITIONAL SECTION") {
                section = Section::Additional;
            } else if let Some(s) = rest.strip_prefix("SERVER:") {
                server = s
                    .trim()
                    .split(['#', '('])
                    .next()
                    .and_then(|a| a.trim().parse::<IpAddr>().ok());
            } else if let Some(w) = rest.strip_prefix("WHEN:") {
                when = parse_when(w);
            } else if rest.starts_with("connection timed out") {
                timed_out = true;
            }
            continue;
        }
        if let Some(q) = line.strip_prefix(';') {
            if section == Section::Question && question.is_none() {
                // ";name.  IN  A"
                let f: Vec<&str> = q.split_whitespace().collect();
                if f.len() >= 3 {
                    question = Some((norm(f[0]), f[f.len() - 1].to_ascii_uppercase()));
                }
            }
            continue;
        }
        let target = match section {
            Section::Answer => &mut answer,
            Section::Authority => &mut authority,
            Section::Additional => &mut additional,
            Section::None | Section::Question => continue,
        };
        match parse_record(line) {
            Some(r) => target.push(r),
            None => stats.bad_records += 1,
        }
    }
    match (header, when) {
        (Some((id, status)), Some(when)) => Block::Answer(Box::new(DigLookup {
            index,
            id,
            status,
            flags,
            question,
            answer,
            authority,
            additional,
            when,
            server,
        })),
        (None, _) if timed_out => Block::TimedOut,
        _ => Block::Garbage,
    }
}

/// `opcode: QUERY, status: NOERROR, id: 671`
fn parse_header(h: &str) -> Option<(u16, String)> {
    let mut id = None;
    let mut status = None;
    for part in h.split(',') {
        let (k, v) = part.split_once(':')?;
        match k.trim() {
            "status" => status = Some(v.trim().to_owned()),
            "id" => id = v.trim().parse().ok(),
            _ => {}
        }
    }
    Some((id?, status?))
}

/// `Thu Mar 12 22:00:54 2009` (read as UTC).
fn parse_when(w: &str) -> Option<Duration> {
    let f: Vec<&str> = w.split_whitespace().collect();
    if f.len() < 5 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(f[1]))? as u32 + 1;
    let day: u32 = f[2].parse().ok()?;
    let hms: Vec<u64> = f[3]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let year: i64 = f[4].parse().ok()?;
    if hms.len() != 3 || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + (hms[0] * 3600 + hms[1] * 60 + hms[2]) as i64;
    u64::try_from(secs).ok().map(Duration::from_secs)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `name ttl class type rdata...`
fn parse_record(line: &str) -> Option<DigRecord> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 5 {
        return None;
    }
    Some(DigRecord {
        name: norm(f[0]),
        ttl: f[1].parse().ok()?,
        class: f[2].to_ascii_uppercase(),
        rtype: f[3].to_ascii_uppercase(),
        data: f[4..].iter().map(|s| (*s).to_owned()).collect(),
    })
}

fn norm(name: &str) -> String {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    if n.is_empty() { ".".to_owned() } else { n }
}

/// A name from dig's presentation form. Names that are not host names (dig prints `\@`,
/// `\DDD` escapes, `?`, ...) are kept octet for octet: DNS labels may hold any octets.
fn fqdn(name: &str) -> anyhow::Result<Name> {
    let s = if name == "." {
        ".".to_owned()
    } else {
        format!("{}.", name.trim_end_matches('.'))
    };
    if let Ok(n) = Name::from_ascii(&s) {
        return Ok(n);
    }
    let mut labels: Vec<Vec<u8>> = vec![Vec::new()];
    let mut bytes = name.trim_end_matches('.').bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'.' => labels.push(Vec::new()),
            b'\\' => {
                let rest: Vec<u8> = bytes.clone().take(3).collect();
                let decimal = rest.len() == 3 && rest.iter().all(u8::is_ascii_digit);
                let value = if decimal {
                    let v = rest.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
                    bytes.nth(2);
                    u8::try_from(v).map_err(|_| anyhow!("bad escape in {name:?}"))?
                } else {
                    bytes
                        .next()
                        .ok_or_else(|| anyhow!("dangling escape in {name:?}"))?
                };
                labels.last_mut().expect("non-empty").push(value);
            }
            b => labels.last_mut().expect("non-empty").push(b),
        }
    }
    if labels.iter().any(Vec::is_empty) {
        bail!("empty label in {name:?}");
    }
    Name::from_labels(labels).map_err(|e| anyhow!("bad name {name:?}: {e}"))
}

/// Why a record was not rebuilt.
enum Skip {
    /// A type (or class) this converter does not rebuild.
    Type(String),
    /// Unparseable RDATA.
    Bad,
}

fn rebuild(r: &DigRecord) -> Result<Record, Skip> {
    if r.class != "IN" {
        return Err(Skip::Type(format!("{} {}", r.class, r.rtype)));
    }
    let bad = |_| Skip::Bad;
    let name = fqdn(&r.name).map_err(bad)?;
    let d = &r.data;
    let rdata = match r.rtype.as_str() {
        "A" => RData::A(A(d[0].parse::<Ipv4Addr>().map_err(|_| Skip::Bad)?)),
        "AAAA" => RData::AAAA(AAAA(d[0].parse().map_err(|_| Skip::Bad)?)),
        "CNAME" => RData::CNAME(CNAME(fqdn(&d[0]).map_err(bad)?)),
        "NS" => RData::NS(NS(fqdn(&d[0]).map_err(bad)?)),
        "PTR" => RData::PTR(PTR(fqdn(&d[0]).map_err(bad)?)),
        "MX" if d.len() >= 2 => RData::MX(MX::new(
            d[0].parse().map_err(|_| Skip::Bad)?,
            fqdn(&d[1]).map_err(bad)?,
        )),
        "SOA" if d.len() >= 7 => {
            let n = |i: usize| d[i].parse::<u32>().map_err(|_| Skip::Bad);
            RData::SOA(SOA::new(
                fqdn(&d[0]).map_err(bad)?,
                fqdn(&d[1]).map_err(bad)?,
                n(2)?,
                n(3)? as i32,
                n(4)? as i32,
                n(5)? as i32,
                n(6)?,
            ))
        }
        "TXT" => RData::TXT(TXT::new(txt_strings(&d.join(" ")))),
        "MX" | "SOA" => return Err(Skip::Bad),
        other => return Err(Skip::Type(other.to_owned())),
    };
    Ok(Record::from_rdata(name, r.ttl, rdata))
}

/// The character-strings of a TXT presentation: `"a b" "c"` -> `["a b", "c"]`.
fn txt_strings(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                if quoted {
                    out.push(std::mem::take(&mut cur));
                }
                quoted = !quoted;
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn rcode(status: &str) -> Option<ResponseCode> {
    Some(match status {
        "NOERROR" => ResponseCode::NoError,
        "FORMERR" => ResponseCode::FormErr,
        "SERVFAIL" => ResponseCode::ServFail,
        "NXDOMAIN" => ResponseCode::NXDomain,
        "NOTIMP" => ResponseCode::NotImp,
        "REFUSED" => ResponseCode::Refused,
        _ => return None,
    })
}

/// Rebuilds one lookup as DNS response bytes. Records that cannot be rebuilt are left out and
/// counted in `stats`.
pub fn to_message(l: &DigLookup, stats: &mut ConvertStats) -> anyhow::Result<Vec<u8>> {
    let mut m = Message::new();
    let has = |f: &str| l.flags.iter().any(|x| x == f);
    m.set_id(l.id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(has("aa"))
        .set_truncated(has("tc"))
        .set_recursion_desired(has("rd"))
        .set_recursion_available(has("ra"))
        .set_authentic_data(has("ad"))
        .set_checking_disabled(has("cd"))
        .set_response_code(rcode(&l.status).ok_or_else(|| anyhow!("status {}", l.status))?);
    if let Some((name, qtype)) = &l.question {
        let qt = RecordType::from_str(qtype).map_err(|_| anyhow!("question type {qtype}"))?;
        m.add_query(Query::query(fqdn(name)?, qt));
    }
    let mut records = 0;
    for (section, recs) in [(0, &l.answer), (1, &l.authority), (2, &l.additional)] {
        for r in recs {
            match rebuild(r) {
                Ok(rec) => {
                    records += 1;
                    match section {
                        0 => m.add_answer(rec),
                        1 => m.add_name_server(rec),
                        _ => m.add_additional(rec),
                    };
                }
                Err(Skip::Type(t)) => *stats.skipped_types.entry(t).or_default() += 1,
                Err(Skip::Bad) => stats.bad_records += 1,
            }
        }
    }
    let bytes = m.to_vec().context("encode")?;
    stats.records += records;
    Ok(bytes)
}

/// The responses of parsed lookups: timestamps from `;; WHEN:` (+1 ms per earlier lookup in the
/// same second), resolver from `;; SERVER:` (192.0.2.53 when absent).
pub fn responses(lookups: &[DigLookup], stats: &mut ConvertStats) -> Vec<Response> {
    let mut per_second: HashMap<Duration, u32> = HashMap::new();
    let mut out = Vec::with_capacity(lookups.len());
    for l in lookups {
        let payload = match to_message(l, stats) {
            Ok(p) => p,
            Err(_) => {
                stats.garbage += 1;
                continue;
            }
        };
        let k = per_second.entry(l.when).or_default();
        let ts = l.when + Duration::from_millis(u64::from(*k).min(999));
        *k += 1;
        out.push(Response {
            ts,
            resolver: l.server.unwrap_or(IpAddr::V4(pcapw::RESOLVER)),
            port: 1024 + (l.index % 60_000) as u16,
            payload,
        });
    }
    stats.converted += out.len();
    stats.first = out.iter().map(|r| r.ts).min();
    stats.last = out.iter().map(|r| r.ts).max();
    out
}

/// Parses one dig file; returns the answered lookups and the stats so far.
pub fn load(input: &Path) -> anyhow::Result<(Vec<DigLookup>, ConvertStats)> {
    let text = read_text(input)?;
    let mut stats = ConvertStats::default();
    let lookups = parse_dig(&text, &mut stats);
    Ok((lookups, stats))
}

/// Converts one dig file to a time-sorted pcap.
pub fn convert(input: &Path, out_pcap: &Path) -> anyhow::Result<ConvertStats> {
    let (lookups, mut stats) = load(input)?;
    let mut rs = responses(&lookups, &mut stats);
    pcapw::write_pcap(out_pcap, &mut rs)?;
    Ok(stats)
}

/// Which file a set of lookups came from: what names get when they show no flux.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// `fluxor-attack-dig`: names from the FluXOR list; those that show no flux are
    /// [`Truth::Unknown`] (`fluxor-nonflux`: mostly spam domains that do not flux).
    Fluxor,
    /// `benign-dig`: ordinary names; those that show no flux are [`Truth::Benign`] (`benign-2009`).
    Benign,
}

/// A flux network found by [`label`]: registered domains linked by shared A addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluxNetwork {
    pub domains: usize,
    pub addresses: usize,
    pub slash16: usize,
    pub max_ttl: u32,
    /// A few member domains, sorted.
    pub examples: Vec<String>,
}

/// An NS host whose glue rotates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluxNs {
    pub host: String,
    pub addresses: usize,
    pub slash16: usize,
    /// Registered domains delegated to it.
    pub delegated: usize,
}

/// The labels and the evidence behind the flux ones.
#[derive(Clone, Debug, Default)]
pub struct Labelling {
    pub labels: Vec<Label>,
    pub networks: Vec<FluxNetwork>,
    pub flux_ns: Vec<FluxNs>,
}

/// Flux networks: at least this many distinct A addresses...
pub const NET_MIN_ADDRS: usize = 10;
/// ...in at least this many distinct /16 prefixes...
pub const NET_MIN_SLASH16: usize = 5;
/// ...with at most this many addresses per /16 on average (nearly one address per /16)...
pub const NET_MAX_ADDRS_PER_SLASH16: f64 = 2.0;
/// ...and no A TTL above this.
pub const MAX_FLUX_TTL: u32 = 1800;
/// A member of a flux network is flux when its own answers show at least this many distinct A
/// addresses; with fewer it showed no rotation itself (see [`label`]).
pub const MEMBER_MIN_ADDRS: usize = 2;
/// Double flux: an NS host whose glue shows at least this many distinct addresses in as many
/// distinct /16 prefixes.
pub const NS_MIN_ADDRS: usize = 5;

fn registered(name: &str) -> String {
    psl::domain_str(name).unwrap_or(name).to_owned()
}

fn slash16(a: Ipv4Addr) -> u16 {
    let o = a.octets();
    u16::from_be_bytes([o[0], o[1]])
}

/// Labels every registered domain (public suffix list, private section included) seen as a
/// question name, as the owner of an answer record or as a CNAME target, from the evidence over
/// all the given lookups together.
///
/// The rule, from what the data shows (two flux networks: a `.cn` one with TTL 180 and up to 8
/// A records per answer, and one with TTL 0 and one address per random subdomain; every other
/// domain shows at most a handful of addresses in at most a few /16 prefixes):
///
/// - **`flux-2009`** (Flux): link registered domains that share an A address (answer section,
///   by the owner's registered domain). A connected group is a flux network when together it
///   shows at least [`NET_MIN_ADDRS`] distinct A addresses in at least [`NET_MIN_SLASH16`]
///   distinct /16 prefixes, at most [`NET_MAX_ADDRS_PER_SLASH16`] addresses per /16 on average
///   (bots are scattered, a CDN or a hosting farm is not), and no A TTL above
///   [`MAX_FLUX_TTL`] s. Each member whose own A TTLs are all at most [`MAX_FLUX_TTL`] and
///   whose own answers show at least [`MEMBER_MIN_ADDRS`] distinct addresses is flux. A
///   single domain with that evidence on its own is a group of one. Linking matters: most
///   flux domains were looked up a few times within one TTL and show only one answer of 8
///   bots, but they share those bots with the rest of the network.
/// - **`flux-2009-single`** (Unknown): a member of a flux network that showed one address in
///   all its lookups (two Waledac-style domains, TTL 0, each looked up once). It shares that
///   address with the network, but its own data shows no rotation: nothing about the name
///   itself says flux, and no detector that needs two answers can see it.
/// - **`double-flux-2009`** (Flux): an NS host whose glue (additional-section A records) shows
///   at least [`NS_MIN_ADDRS`] distinct addresses in at least as many /16 prefixes over the
///   file is a flux name server (`ns1-4.frubjnfew.com`, `ns3/ns4.cisunday.com`, ... show 11-39
///   each; the next best shows 6 addresses in one /24). The registered domain of such a host,
///   and every registered domain delegated to one (an NS record naming it), is double flux.
///   Double flux takes precedence over `flux-2009`.
/// - Otherwise: names seen in the benign file are `benign-2009` (Benign); names seen only in the
///   FluXOR file are `fluxor-nonflux` (Unknown: on the list, but no flux shows).
pub fn label(sets: &[(Origin, &[DigLookup])]) -> Labelling {
    // Evidence per registered domain.
    #[derive(Default)]
    struct Ev {
        addrs: BTreeSet<Ipv4Addr>,
        max_ttl: u32,
        origins: BTreeSet<Origin>,
    }
    let mut ev: BTreeMap<String, Ev> = BTreeMap::new();
    let mut glue: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    // NS host -> registered domains delegated to it.
    let mut delegations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (origin, lookups) in sets {
        for l in lookups.iter() {
            let seen = |name: &str, ev: &mut BTreeMap<String, Ev>| {
                ev.entry(registered(name))
                    .or_default()
                    .origins
                    .insert(*origin);
            };
            if let Some((q, _)) = &l.question {
                seen(q, &mut ev);
            }
            for r in &l.answer {
                seen(&r.name, &mut ev);
                match (r.rtype.as_str(), r.data.first()) {
                    ("A", Some(a)) => {
                        if let Ok(a) = a.parse::<Ipv4Addr>() {
                            let e = ev.entry(registered(&r.name)).or_default();
                            e.addrs.insert(a);
                            e.max_ttl = e.max_ttl.max(r.ttl);
                        }
                    }
                    ("CNAME", Some(t)) => seen(&norm(t), &mut ev),
                    _ => {}
                }
            }
            for r in l.answer.iter().chain(&l.authority) {
                if let ("NS", Some(host)) = (r.rtype.as_str(), r.data.first()) {
                    delegations
                        .entry(norm(host))
                        .or_default()
                        .insert(registered(&r.name));
                }
            }
            for r in &l.additional {
                if let ("A", Some(a)) = (r.rtype.as_str(), r.data.first())
                    && let Ok(a) = a.parse::<Ipv4Addr>()
                {
                    glue.entry(r.name.clone()).or_default().insert(a);
                }
            }
        }
    }

    // Groups of domains sharing A addresses (union-find over domain indices).
    let names: Vec<&String> = ev.keys().collect();
    let mut parent: Vec<usize> = (0..names.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let mut owner_of: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, e) in ev.values().enumerate() {
        for a in &e.addrs {
            if let Some(&j) = owner_of.get(a) {
                let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                parent[ri] = rj;
            } else {
                owner_of.insert(*a, i);
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..names.len() {
        if !ev[names[i]].addrs.is_empty() {
            let r = find(&mut parent, i);
            groups.entry(r).or_default().push(i);
        }
    }
    let mut flux: HashSet<String> = HashSet::new();
    let mut single: HashSet<String> = HashSet::new();
    let mut networks = Vec::new();
    for members in groups.values() {
        let addrs: BTreeSet<Ipv4Addr> = members
            .iter()
            .flat_map(|&i| ev[names[i]].addrs.iter().copied())
            .collect();
        let s16: BTreeSet<u16> = addrs.iter().map(|&a| slash16(a)).collect();
        let max_ttl = members
            .iter()
            .map(|&i| ev[names[i]].max_ttl)
            .max()
            .unwrap_or(0);
        if addrs.len() >= NET_MIN_ADDRS
            && s16.len() >= NET_MIN_SLASH16
            && addrs.len() as f64 <= NET_MAX_ADDRS_PER_SLASH16 * s16.len() as f64
            && max_ttl <= MAX_FLUX_TTL
        {
            let low_ttl: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| ev[names[i]].max_ttl <= MAX_FLUX_TTL)
                .collect();
            single.extend(
                low_ttl
                    .iter()
                    .filter(|&&i| ev[names[i]].addrs.len() < MEMBER_MIN_ADDRS)
                    .map(|&i| names[i].clone()),
            );
            let mut doms: Vec<String> = low_ttl
                .iter()
                .filter(|&&i| ev[names[i]].addrs.len() >= MEMBER_MIN_ADDRS)
                .map(|&i| names[i].clone())
                .collect();
            doms.sort();
            networks.push(FluxNetwork {
                domains: doms.len(),
                addresses: addrs.len(),
                slash16: s16.len(),
                max_ttl,
                examples: doms.iter().take(5).cloned().collect(),
            });
            flux.extend(doms);
        }
    }
    networks.sort_by(|a, b| b.domains.cmp(&a.domains).then(a.examples.cmp(&b.examples)));

    let mut double: BTreeSet<String> = BTreeSet::new();
    let mut flux_ns = Vec::new();
    for (host, addrs) in &glue {
        let s16: BTreeSet<u16> = addrs.iter().map(|&a| slash16(a)).collect();
        if addrs.len() >= NS_MIN_ADDRS && s16.len() >= NS_MIN_ADDRS {
            let delegated = delegations.get(host).cloned().unwrap_or_default();
            flux_ns.push(FluxNs {
                host: host.clone(),
                addresses: addrs.len(),
                slash16: s16.len(),
                delegated: delegated.len(),
            });
            double.insert(registered(host));
            double.extend(delegated);
        }
    }

    let mut labels = Vec::new();
    let mut all: BTreeSet<&String> = ev.keys().collect();
    all.extend(double.iter());
    for d in all {
        let (class, truth) = if double.contains(d) {
            ("double-flux-2009", Truth::Flux)
        } else if flux.contains(d) {
            ("flux-2009", Truth::Flux)
        } else if single.contains(d) {
            ("flux-2009-single", Truth::Unknown)
        } else if ev
            .get(d)
            .is_some_and(|e| e.origins.contains(&Origin::Benign))
        {
            ("benign-2009", Truth::Benign)
        } else {
            ("fluxor-nonflux", Truth::Unknown)
        };
        labels.push(Label::new(d, class, truth));
    }
    Labelling {
        labels,
        networks,
        flux_ns,
    }
}

/// What [`convert_dir`] did.
#[derive(Clone, Debug)]
pub struct DirReport {
    pub fluxor: ConvertStats,
    pub benign: ConvertStats,
    /// Label count per (class, truth).
    pub labels: BTreeMap<(String, Truth), usize>,
    pub networks: Vec<FluxNetwork>,
    pub flux_ns: Vec<FluxNs>,
}

impl fmt::Display for DirReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fluxor: {}", self.fluxor)?;
        writeln!(f, "benign: {}", self.benign)?;
        for ((class, truth), n) in &self.labels {
            writeln!(f, "labels {class} ({truth}): {n}")?;
        }
        for n in &self.networks {
            writeln!(
                f,
                "flux network: {} domains, {} addresses in {} /16, max TTL {} (e.g. {})",
                n.domains,
                n.addresses,
                n.slash16,
                n.max_ttl,
                n.examples.join(", ")
            )?;
        }
        for n in &self.flux_ns {
            writeln!(
                f,
                "flux NS {}: {} glue addresses in {} /16, {} domains delegated",
                n.host, n.addresses, n.slash16, n.delegated
            )?;
        }
        Ok(())
    }
}

pub const FLUXOR_FILE: &str = "fluxor-attack-dig.txt.gz";
pub const BENIGN_FILE: &str = "benign-dig.txt.gz";

/// Converts `dataset_dir/{fluxor-attack-dig,benign-dig}.txt.gz` into `out_dir/fluxor.pcap`,
/// `out_dir/benign.pcap` and `out_dir/labels.tsv` (see [`label`]).
pub fn convert_dir(dataset_dir: &Path, out_dir: &Path) -> anyhow::Result<DirReport> {
    fs::create_dir_all(out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let mut parts = Vec::new();
    for (file, pcap) in [(FLUXOR_FILE, "fluxor.pcap"), (BENIGN_FILE, "benign.pcap")] {
        let input = dataset_dir.join(file);
        if !input.is_file() {
            bail!("{} is missing", input.display());
        }
        let (lookups, mut stats) = load(&input)?;
        let mut rs = responses(&lookups, &mut stats);
        pcapw::write_pcap(&out_dir.join(pcap), &mut rs)?;
        parts.push((lookups, stats));
    }
    let (benign_lookups, benign) = parts.pop().expect("two parts");
    let (fluxor_lookups, fluxor) = parts.pop().expect("two parts");
    let labelling = label(&[
        (Origin::Fluxor, &fluxor_lookups),
        (Origin::Benign, &benign_lookups),
    ]);
    write_labels(
        &out_dir.join("labels.tsv"),
        &[
            "fastflux-2009 (Juddinnn/FYP-1): labelled by evidence, see flux_tests::eval::dig2009::label",
            "fluxor.pcap <- fluxor-attack-dig.txt.gz, benign.pcap <- benign-dig.txt.gz",
        ],
        &labelling.labels,
    )?;
    let mut labels = BTreeMap::new();
    for l in &labelling.labels {
        *labels.entry((l.class.clone(), l.truth)).or_default() += 1;
    }
    Ok(DirReport {
        fluxor,
        benign,
        labels,
        networks: labelling.networks,
        flux_ns: labelling.flux_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNIPPET: &str = "\r; <<>> DiG 9.3.2rc1 <<>> rsqh.diexgwdi.cn\r; (1 server found)\r;; global options:  printcmd\r;; Got answer:\r;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 671\r;; flags: qr aa rd ra; QUERY: 1, ANSWER: 4, AUTHORITY: 2, ADDITIONAL: 2\r\r;; QUESTION SECTION:\r;rsqh.diexgwdi.cn.\t\tIN\tA\r\r;; ANSWER SECTION:\rrsqh.diexgwdi.cn.\t180\tIN\tCNAME\tdiexgwdi.cn.\rdiexgwdi.cn.\t\t180\tIN\tA\t94.189.216.54\rdiexgwdi.cn.\t\t180\tIN\tA\t194.116.169.234\rdiexgwdi.cn.\t\t180\tIN\tHINFO\t\"x\" \"y\"\r\r;; AUTHORITY SECTION:\rdiexgwdi.cn.\t\t21599\tIN\tNS\tns2.frubjnfew.com.\rdiexgwdi.cn.\t\t21599\tIN\tNS\tns1.frubjnfew.com.\r\r;; ADDITIONAL SECTION:\rns2.frubjnfew.com.\t139230\tIN\tA\t94.30.151.74\rns1.frubjnfew.com.\t139230\tIN\tA\t91.200.105.235\r\r;; Query time: 671 msec\r;; SERVER: 168.95.1.1#53(168.95.1.1)\r;; WHEN: Thu Mar 12 22:00:54 2009\r;; MSG SIZE  rcvd: 350\r\r; <<>> DiG 9.3.2rc1 <<>> grpio.com\r;; global options:  printcmd\r;; connection timed out; no servers could be reached\r\r; <<>> DiG 9.3.2rc1 <<>> nx.example.org\r;; Got answer:\r;; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 7\r;; flags: qr rd ra; QUERY: 1, ANSWER: 0, AUTHORITY: 1, ADDITIONAL: 0\r\r;; QUESTION SECTION:\r;nx.example.org.\t\tIN\tA\r\r;; AUTHORITY SECTION:\rexample.org.\t\t3600\tIN\tSOA\tsns.dns.icann.org. noc.dns.icann.org. 2009031201 7200 3600 1209600 3600\r\r;; SERVER: 168.95.1.1#53(168.95.1.1)\r;; WHEN: Thu Mar 12 22:00:54 2009\r\r; <<>> DiG 9.3.2rc1 <<>> junk\rwhat is this\r";

    #[test]
    fn eval_dig2009_parse_and_convert() {
        let mut stats = ConvertStats::default();
        let lookups = parse_dig(SNIPPET, &mut stats);
        assert_eq!(stats.lookups, 4);
        assert_eq!(stats.timed_out, 1);
        assert_eq!(stats.garbage, 1);
        assert_eq!(lookups.len(), 2);
        let l = &lookups[0];
        assert_eq!(l.id, 671);
        assert_eq!(l.status, "NOERROR");
        assert_eq!(l.flags, ["qr", "aa", "rd", "ra"]);
        assert_eq!(
            l.question,
            Some(("rsqh.diexgwdi.cn".to_owned(), "A".to_owned()))
        );
        assert_eq!(
            (l.answer.len(), l.authority.len(), l.additional.len()),
            (4, 2, 2)
        );
        assert_eq!(l.server, Some("168.95.1.1".parse().unwrap()));
        // 2009-03-12T22:00:54Z
        assert_eq!(l.when, Duration::from_secs(1_236_895_254));
        assert_eq!(lookups[1].index, 2);

        let rs = responses(&lookups, &mut stats);
        assert_eq!(stats.converted, 2);
        assert_eq!(stats.skipped_types.get("HINFO"), Some(&1));
        assert_eq!(rs[1].ts, rs[0].ts + Duration::from_millis(1));
        let m = flux_detect::dns::parse_response(&rs[0].payload, false).unwrap();
        assert_eq!(m.id, 671);
        assert!(m.flags.aa && m.flags.rd && m.flags.ra);
        assert_eq!(&*m.qname, "rsqh.diexgwdi.cn");
        let ans: Vec<_> = m
            .answers
            .iter()
            .map(|r| (&*r.name, r.rtype.as_ref(), r.ttl, r.data()))
            .collect();
        assert_eq!(
            ans,
            [
                ("rsqh.diexgwdi.cn", "CNAME", 180, Some("diexgwdi.cn".into())),
                ("diexgwdi.cn", "A", 180, Some("94.189.216.54".into())),
                ("diexgwdi.cn", "A", 180, Some("194.116.169.234".into())),
            ]
        );
        assert_eq!(m.authority.len(), 2);
        assert_eq!(m.additional[1].data().as_deref(), Some("91.200.105.235"));
        let nx = flux_detect::dns::parse_response(&rs[1].payload, false).unwrap();
        assert_eq!(nx.rcode, flux_detect::dns::Rcode::NXDOMAIN);
        assert_eq!(nx.authority[0].rtype, "SOA");

        // Through a pcap file.
        let dir = std::env::temp_dir().join(format!("flux-eval-dig-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.txt");
        fs::write(&input, SNIPPET).unwrap();
        let out = dir.join("out.pcap");
        let st = convert(&input, &out).unwrap();
        let back = pcapw::read_udp_payloads(&out).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(st.converted, 2);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].1, rs[0].payload);
    }

    #[test]
    fn eval_dig2009_odd_names() {
        let n = fqdn("vanoil-02\\@hotmail.com").unwrap();
        assert_eq!(n.num_labels(), 2);
        assert_eq!(n.iter().next(), Some(&b"vanoil-02@hotmail"[..]));
        let n = fqdn("a\\032b.example.org.").unwrap();
        assert_eq!(n.iter().next(), Some(&b"a b"[..]));
        assert!(fqdn("a..b").is_err());
        assert!(fqdn("x\\999.org").is_err());
    }

    #[test]
    fn eval_dig2009_label_rule() {
        let rec = |name: &str, ttl: u32, t: &str, d: &str| DigRecord {
            name: name.into(),
            ttl,
            class: "IN".into(),
            rtype: t.into(),
            data: vec![d.into()],
        };
        let lookup = |i: usize, q: &str, answer: Vec<DigRecord>, auth, add| DigLookup {
            index: i,
            id: 1,
            status: "NOERROR".into(),
            flags: vec![],
            question: Some((q.into(), "A".into())),
            answer,
            authority: auth,
            additional: add,
            when: Duration::from_secs(1),
            server: None,
        };
        let mut ls = Vec::new();
        // Network: two domains sharing bots, 12 addresses in 12 /16s.
        for k in 0..3u8 {
            let a: Vec<DigRecord> = (0..4u8)
                .map(|j| rec("aa.cn", 180, "A", &format!("{}.{}.1.1", 10 + k * 4 + j, j)))
                .collect();
            ls.push(lookup(ls.len(), "aa.cn", a, vec![], vec![]));
        }
        ls.push(lookup(
            ls.len(),
            "x.bb.cn",
            vec![
                rec("x.bb.cn", 180, "CNAME", "bb.cn."),
                rec("bb.cn", 180, "A", "10.0.1.1"),
                rec("bb.cn", 180, "A", "11.1.1.1"),
            ],
            vec![rec("bb.cn", 86400, "NS", "ns1.nsflux.com.")],
            (0..5u8)
                .map(|j| rec("ns1.nsflux.com", 100, "A", &format!("{}.9.9.9", 50 + j)))
                .collect(),
        ));
        // Linked to the network by one shared bot, but one address in all its lookups.
        ls.push(lookup(
            ls.len(),
            "q.cc.cn",
            vec![rec("q.cc.cn", 0, "A", "12.2.1.1")],
            vec![],
            vec![],
        ));
        // CDN-like: many addresses in one /16.
        let a: Vec<DigRecord> = (0..12u8)
            .map(|j| rec("cdn.net", 20, "A", &format!("23.1.1.{j}")))
            .collect();
        ls.push(lookup(ls.len(), "www.cdn.net", a, vec![], vec![]));
        let benign = vec![lookup(0, "blog.example.com", vec![], vec![], vec![])];
        let got = label(&[(Origin::Fluxor, &ls), (Origin::Benign, &benign)]);
        let m: BTreeMap<&str, &str> = got
            .labels
            .iter()
            .map(|l| (l.domain.as_str(), l.class.as_str()))
            .collect();
        assert_eq!(m["aa.cn"], "flux-2009");
        assert_eq!(m["bb.cn"], "double-flux-2009");
        assert_eq!(m["nsflux.com"], "double-flux-2009");
        assert_eq!(m["cc.cn"], "flux-2009-single");
        assert_eq!(m["cdn.net"], "fluxor-nonflux");
        assert_eq!(m["example.com"], "benign-2009");
        assert_eq!(got.networks.len(), 1);
        assert_eq!(got.networks[0].domains, 2);
        assert_eq!(got.flux_ns.len(), 1);
    }
}

#[cfg(test)]
mod dataset_tests {
    use super::*;

    /// The real data, when `../shared/datasets/fastflux-2009` is there (it is not part of the
    /// repository): converts both files and checks the evidence finds the known flux networks.
    #[test]
    fn eval_dig2009_real_dataset() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/fastflux-2009");
        if !dir.join(FLUXOR_FILE).is_file() {
            eprintln!("SKIPPED: {} not present", dir.display());
            return;
        }
        let out = std::env::temp_dir().join(format!("flux-eval-2009-{}", std::process::id()));
        let report = convert_dir(&dir, &out).unwrap();
        eprintln!("{report}");
        let labels = crate::eval::labels::read_labels(&out.join("labels.tsv")).unwrap();
        let _ = fs::remove_dir_all(&out);
        assert_eq!(report.fluxor.lookups, 71_054);
        assert_eq!(report.benign.lookups, 992);
        assert!(report.fluxor.converted > 25_000);
        let class = |d: &str| {
            labels
                .iter()
                .find(|l| l.domain == d)
                .map(|l| l.class.as_str())
        };
        assert_eq!(class("diexgwdi.cn"), Some("double-flux-2009"));
        assert_eq!(class("frubjnfew.com"), Some("double-flux-2009"));
        assert_eq!(class("cisunday.com"), Some("double-flux-2009"));
        assert_eq!(class("greatsalesgroup.com"), Some("flux-2009"));
        // Looked up once, one address shared with the TTL-0 network: no rotation of its own.
        assert_eq!(class("greatsvalentine.com"), Some("flux-2009-single"));
        assert_eq!(class("lovelifeportal.com"), Some("flux-2009-single"));
        assert_eq!(class("yahoo.akadns.net"), Some("fluxor-nonflux"));
        assert!(
            labels
                .iter()
                .filter(|l| l.class == "benign-2009")
                .all(|l| l.truth == Truth::Benign)
        );
    }
}
