//! DNS message parsing: wire bytes to a [`DnsMessage`] the scorer and the event log use.
//!
//! hickory-proto has the last word on names (compression pointers, loop and length limits):
//! plain names are read by a fast path tested against it, everything else goes through it.
//! Records are walked here rather than with `Message::from_vec` so that one corrupt RDATA of a
//! type we do not use (SVCB, LOC, ...) does not throw away the addresses next to it, and so a
//! truncated capture still yields every record that fits; the header and the records' fixed
//! fields are plain big-endian reads through a bounds-checked cursor (`Wire`).

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use flux_common::{RCODE_NXDOMAIN, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_OPT};
use hickory_proto::{
    rr::{Name, RecordType},
    serialize::binary::{BinDecodable, BinDecoder},
};
use serde::Serialize;

/// The transport a DNS message came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

/// Why a message could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("message shorter than the 12-byte DNS header")]
    ShortHeader,
    #[error("not a response (QR=0)")]
    NotResponse,
    #[error("bad question: {0}")]
    Question(String),
    #[error("bad {section} record {index}: {reason}")]
    Record {
        section: &'static str,
        index: usize,
        reason: String,
    },
}

/// One resource record, as reported in events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// Owner name, lowercase, no trailing dot. Shared, not copied, with the question or an
    /// earlier record's name when the wire gives it as a compression pointer to that name (as
    /// most answers' owners are): a copy per record was most of a parse's allocations.
    pub name: Arc<str>,
    /// Mnemonic (`A`, `CNAME`) or `TYPEnnn` for types without one.
    pub rtype: Cow<'static, str>,
    pub rtype_code: u16,
    pub ttl: u32,
    /// The target name of a CNAME or NS record (shared like `name`).
    pub target: Option<Arc<str>>,
    /// The address of an A or AAAA record.
    pub addr: Option<IpAddr>,
}

impl DnsRecord {
    /// The decoded data as events show it: the address or the target name; `None` for every
    /// other type. Addresses are kept binary and only formatted here, off the scoring path.
    pub fn data(&self) -> Option<Cow<'_, str>> {
        match (&self.addr, &self.target) {
            (Some(ip), _) => Some(Cow::Owned(ip.to_string())),
            (None, Some(t)) => Some(Cow::Borrowed(&**t)),
            (None, None) => None,
        }
    }
}

impl Serialize for DnsRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("DnsRecord", 4)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("type", &self.rtype)?;
        st.serialize_field("ttl", &self.ttl)?;
        st.serialize_field("data", &self.data())?;
        st.end()
    }
}

/// A parsed DNS response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DnsMessage {
    pub id: u16,
    /// Question name, lowercase, no trailing dot; empty when there is no question. Shared with
    /// the records whose names point to it (see [`DnsRecord::name`]).
    pub qname: Arc<str>,
    pub qtype: Cow<'static, str>,
    /// The response code, including the EDNS extended bits; serialized as its mnemonic
    /// (`NOERROR`, `NXDOMAIN`).
    pub rcode: Rcode,
    pub flags: DnsFlags,
    pub answers: Vec<DnsRecord>,
    pub authority: Vec<DnsRecord>,
    pub additional: Vec<DnsRecord>,
    /// The EDNS UDP payload size the responder advertised, if it sent an OPT record.
    pub edns_udp_size: Option<u16>,
    /// The message ended before every record its header announced (a truncated capture).
    pub incomplete: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DnsFlags {
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    pub ad: bool,
    pub cd: bool,
}

/// Lowercase presentation form without the trailing dot; the root is `.`.
pub fn normalize_name(name: &Name) -> String {
    if let Some(s) = plain_lowercase(name) {
        return s;
    }
    let mut s = name.to_lowercase().to_ascii();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s
}

/// The common case without hickory's escaping machinery: every label is letters, digits, `-`
/// (not first), `_`, or a leading `*`, which hickory would print unescaped. `None` otherwise.
fn plain_lowercase(name: &Name) -> Option<String> {
    if name.is_root() {
        return Some(".".into());
    }
    let mut s = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        for (j, &b) in label.iter().enumerate() {
            if !plain_byte(b, j) {
                return None;
            }
            s.push(char::from(b.to_ascii_lowercase()));
        }
    }
    Some(s)
}

/// A byte hickory prints as itself at position `j` of a label: letters, digits, `_`, `-` (not
/// first) and a leading `*`.
const fn plain_byte(b: u8, j: usize) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || (b == b'-' && j > 0) || (b == b'*' && j == 0)
}

/// [`plain_byte`] and the lowercasing together, for the fast path's inner loop: what it writes
/// for byte `b`, `PLAIN_LOWER[0][b]` at a label's start and `PLAIN_LOWER[1][b]` after it; 0 when
/// the byte is not plain there (no plain byte is 0). One load a byte instead of five compares
/// and a lowercasing, which was most of a name's walk.
static PLAIN_LOWER: [[u8; 256]; 2] = {
    let mut t = [[0u8; 256]; 2];
    let mut j = 0;
    while j < 2 {
        let mut b = 0;
        while b < 256 {
            if plain_byte(b as u8, j) {
                t[j][b] = (b as u8).to_ascii_lowercase();
            }
            b += 1;
        }
        j += 1;
    }
    t
};

/// Reads the name at the decoder's position, as [`normalize_name`] prints it.
///
/// Plain, well-formed names (the vast majority) are decoded straight from the wire by
/// [`plain_wire_name_run`]; anything else (escapes, odd bytes, every kind of error) goes through
/// hickory, which has the last word. Decoding through hickory's `Name` and printing it was
/// most of the parse time.
///
/// It first tries the names this message already gave (`known`, read through `text`): a name
/// that is only a compression pointer to one of them is copied instead of walked again (most
/// answer names point to the question, and a CNAME chain's next owner to the previous target).
/// Also returns how the fast path read it, for the caller to add the name to `known`
/// ([`Known::add`]); `None` when it was copied or hickory read it.
///
/// A name that follows more than [`MAX_NAME_POINTERS`] compression pointers is refused before
/// hickory sees it: hickory follows each pointer with a recursive call, so a sender who chains
/// thousands of pointers (each to the one before) chose how deep the parser's stack went; a
/// debug build overflowed its 2 MiB thread stack on 8,000 of them.
fn read_name<'t>(
    cur: &mut Wire<'_>,
    known: &Known,
    text: &dyn Fn(NameAt) -> Option<&'t Arc<str>>,
) -> Result<(Arc<str>, Option<Walk>), hickory_proto::ProtoError> {
    let (msg, start) = (cur.msg, cur.pos);
    if let Some((name, end)) = known.pointer_at(msg, start, text)
        && cur.skip(end - start)
    {
        return Ok((name, None));
    }
    if let Some((name, walk)) = plain_wire_name_run(msg, start)
        && cur.skip(walk.end - start)
    {
        return Ok((name, Some(walk)));
    }
    if too_many_pointers(msg, start) {
        return Err("name follows too many compression pointers".into());
    }
    // hickory reads from the same place in the same whole message, so its compression pointers
    // resolve as they would have in one decoder over the message. The position is where it
    // stopped, even on an error: the callers tell a message cut short inside the name from a
    // bad name by whether the position reached the end.
    let mut dec = BinDecoder::new(msg);
    dec.read_slice(start)?;
    let read = Name::read(&mut dec);
    cur.pos = dec.index();
    Ok((Arc::from(normalize_name(&read?)), None))
}

/// A read position in a whole DNS message: the header's and records' fixed fields are read
/// here, and only names go through hickory (`read_name`). hickory's `BinDecoder` wraps every
/// value it reads in its `Restrict` type and its `Header` decodes fields we never read; the two
/// were about 3% of a replay, for reads that are only bounds-checked big-endian loads.
struct Wire<'m> {
    msg: &'m [u8],
    pos: usize,
}

impl<'m> Wire<'m> {
    fn new(msg: &'m [u8], pos: usize) -> Self {
        Self { msg, pos }
    }

    /// The next `n` bytes, or `None` (the position unchanged) when the message ends first.
    fn take(&mut self, n: usize) -> Option<&'m [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.msg.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    /// Moves `n` bytes on; `false` (not moved) when the message ends first.
    fn skip(&mut self, n: usize) -> bool {
        self.take(n).is_some()
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.msg.len()
    }
}

/// The 12-byte header, as RFC 1035 4.1.1 lays it out.
struct WireHeader {
    id: u16,
    /// QR, opcode, AA, TC, RD.
    flags_hi: u8,
    /// RA, Z, AD, CD, RCODE.
    flags_lo: u8,
    counts: [u16; 4],
}

impl WireHeader {
    fn read(cur: &mut Wire<'_>) -> Option<Self> {
        let id = cur.u16()?;
        let &[flags_hi, flags_lo] = cur.take(2)? else {
            return None;
        };
        let mut counts = [0u16; 4];
        for c in &mut counts {
            *c = cur.u16()?;
        }
        Some(Self {
            id,
            flags_hi,
            flags_lo,
            counts,
        })
    }

    fn bit_hi(&self, mask: u8) -> bool {
        self.flags_hi & mask != 0
    }

    fn bit_lo(&self, mask: u8) -> bool {
        self.flags_lo & mask != 0
    }
}

/// Compression pointers one name may follow. A name has at most 127 labels (255 octets, each
/// label with its length byte at least 2), so a chain in which every pointer brings at least
/// one label is never longer; only pointers to pointers, which no encoder needs, go past it.
const MAX_NAME_POINTERS: usize = 127;

/// Whether the name at `start` follows more than [`MAX_NAME_POINTERS`] pointers, read without
/// checking anything else (hickory does that): labels skipped by their length, pointers
/// followed wherever they point. Bounded: past the most pointers and labels a name can hold,
/// the walk stops and says so (hickory would refuse such a name as too long anyway).
fn too_many_pointers(msg: &[u8], start: usize) -> bool {
    let mut pos = start;
    let mut pointers = 0;
    for _ in 0..MAX_NAME_POINTERS + 128 + 1 {
        match msg.get(pos) {
            None | Some(0) => return false,
            Some(&b) if b & 0xc0 == 0xc0 => {
                pointers += 1;
                if pointers > MAX_NAME_POINTERS {
                    return true;
                }
                let Some(&lo) = msg.get(pos + 1) else {
                    return false;
                };
                pos = pointer_target(b, lo);
            }
            Some(&b) if b & 0xc0 == 0 => pos += 1 + usize::from(b),
            // A reserved label type: hickory refuses it.
            Some(_) => return false,
        }
    }
    true
}

/// The offset a compression pointer points to, from its two bytes (the first with its top two
/// bits set, which the callers checked).
fn pointer_target(hi: u8, lo: u8) -> usize {
    usize::from(u16::from_be_bytes([hi & 0x3f, lo]))
}

/// How [`plain_wire_name_run`] read a name: where it ended, the position of the last label
/// length or pointer it read before following any pointer (`first_run_end`), and how many
/// pointers it followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Walk {
    end: usize,
    first_run_end: usize,
    pointers: usize,
}

/// Where a name the fast path decoded sits in the message being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameAt {
    Question,
    /// The owner name of a record of the section (0 answer, 1 authority, 2 additional).
    Owner(u8, usize),
    /// The target name of a CNAME or NS record of the section.
    Target(u8, usize),
}

/// Names [`plain_wire_name_run`] decoded at an offset of one message, with how it read them,
/// at most `cap` of them ([`KNOWN_NAMES`] when parsing: a response rarely has more distinct
/// names).
struct Known {
    names: smallvec::SmallVec<[(usize, Walk, NameAt); KNOWN_NAMES]>,
    cap: usize,
}

/// Names a [`Known`] keeps; later ones are decoded every time, as before.
const KNOWN_NAMES: usize = 8;

#[cfg(test)]
thread_local! {
    /// Names [`Known::pointer_at`] copied on this thread (so a test can show it took them).
    static KNOWN_COPIES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Known {
    /// At most `cap` names (0: none, every name is walked).
    fn new(cap: usize) -> Self {
        Self {
            names: smallvec::SmallVec::new(),
            cap,
        }
    }

    fn add(&mut self, start: usize, walk: Option<Walk>, at: NameAt) {
        if let Some(walk) = walk
            && self.names.len() < self.cap
        {
            self.names.push((start, walk, at));
        }
    }

    /// What `plain_wire_name(msg, start)` gives when the name at `start` is one compression
    /// pointer to a known name, without walking it; `None` for anything else.
    ///
    /// Why it is the same: the fast path, on a pointer at `start`, requires it to point before
    /// `start`, then reads the target exactly as it would read it on its own, except that no
    /// label of the target's first run may sit at or after `start` (hickory's `max_idx`);
    /// after the target's own first pointer both walks are the same. So the target's name is
    /// the answer when its first run ended before `start`, and the walk ends 2 bytes on. (A
    /// decodable target's first run cannot reach a pointer to itself, so that check never
    /// refuses today; it is kept so the equivalence does not rest on that argument.) The walk
    /// through `start` follows one pointer more than the target's, so a target at
    /// [`MAX_NAME_POINTERS`] is walked, and refused, as the fast path would.
    fn pointer_at<'t>(
        &self,
        msg: &[u8],
        start: usize,
        text: &dyn Fn(NameAt) -> Option<&'t Arc<str>>,
    ) -> Option<(Arc<str>, usize)> {
        let b = *msg.get(start)?;
        if b & 0xc0 != 0xc0 {
            return None;
        }
        let ptr = pointer_target(b, *msg.get(start + 1)?);
        if ptr >= start {
            return None;
        }
        let &(_, walk, at) = self.names.iter().find(|k| k.0 == ptr)?;
        if walk.first_run_end >= start || walk.pointers >= MAX_NAME_POINTERS {
            return None;
        }
        #[cfg(test)]
        KNOWN_COPIES.with(|c| c.set(c.get() + 1));
        Some((Arc::clone(text(at)?), start + 2))
    }
}

/// Longest name (presentation form with the root dot) the fast path accepts; longer ones are
/// left to hickory, whose limits are then the ones that apply.
const PLAIN_NAME_MAX: usize = 250;

/// The name at `start` in `msg`, lowercase and without the trailing dot, and the offset just
/// after it; `None` unless hickory would read the same name and print it the same way.
///
/// Follows hickory's rules, tighter where it is simpler: every label is plain (see
/// [`plain_lowercase`]); a compression pointer must point before the start of the labels
/// that led to it (so pointers only go backwards and the walk ends); no label may start at or
/// past the start of the segment that pointed to it; the name stays under [`PLAIN_NAME_MAX`]
/// and follows at most [`MAX_NAME_POINTERS`] pointers.
#[cfg(test)]
fn plain_wire_name(msg: &[u8], start: usize) -> Option<(Arc<str>, usize)> {
    plain_wire_name_run(msg, start).map(|(name, walk)| (name, walk.end))
}

/// The fast path itself (`plain_wire_name` in tests), and how it read the name ([`Walk`], what
/// [`Known::pointer_at`] needs).
fn plain_wire_name_run(msg: &[u8], start: usize) -> Option<(Arc<str>, Walk)> {
    // Built on the stack, then allocated once at its final size.
    let mut buf = [0u8; PLAIN_NAME_MAX];
    let mut n = 0;
    let mut pos = start;
    // Start of the labels being read, and of those that pointed to them (hickory's
    // `name_start` and `max_idx`).
    let mut seg_start = start;
    let mut max_idx = usize::MAX;
    let mut end = None;
    let mut first_run_end = start;
    let mut pointers = 0;
    // Each step reads a label of at least one byte (at most PLAIN_NAME_MAX / 2 of them) or
    // follows a pointer (at most MAX_NAME_POINTERS), so this bound is never the one that stops
    // a valid name.
    const _: () = assert!(PLAIN_NAME_MAX / 2 + MAX_NAME_POINTERS + 1 < 2 * PLAIN_NAME_MAX);
    for _ in 0..2 * PLAIN_NAME_MAX {
        if pos >= max_idx {
            return None;
        }
        if end.is_none() {
            first_run_end = pos;
        }
        let b = *msg.get(pos)?;
        match b & 0xc0 {
            0x00 if b == 0 => {
                let name = match buf.get(..n)? {
                    [] => Arc::from("."),
                    s => Arc::from(std::str::from_utf8(s).ok()?),
                };
                let walk = Walk {
                    end: end.unwrap_or(pos + 1),
                    first_run_end,
                    pointers,
                };
                return Some((name, walk));
            }
            0x00 => {
                let len = usize::from(b);
                let label = msg.get(pos + 1..pos + 1 + len)?;
                if n + len + 2 > PLAIN_NAME_MAX {
                    return None;
                }
                if n > 0 {
                    *buf.get_mut(n)? = b'.';
                    n += 1;
                }
                let dst = buf.get_mut(n..n + len)?;
                let [first, rest] = &PLAIN_LOWER;
                for (j, (&c, d)) in label.iter().zip(dst).enumerate() {
                    let lower = if j == 0 { first } else { rest }[usize::from(c)];
                    if lower == 0 {
                        return None;
                    }
                    *d = lower;
                }
                n += len;
                pos += 1 + len;
            }
            0xc0 => {
                let lo = *msg.get(pos + 1)?;
                let ptr = pointer_target(b, lo);
                pointers += 1;
                if ptr >= seg_start || pointers > MAX_NAME_POINTERS {
                    return None;
                }
                end.get_or_insert(pos + 2);
                max_idx = seg_start;
                seg_start = ptr;
                pos = ptr;
            }
            _ => return None,
        }
    }
    None
}

/// Mnemonic for a record type, or the RFC 3597 `TYPEnnn` form.
pub fn type_name(code: u16) -> Cow<'static, str> {
    match RecordType::from(code) {
        RecordType::Unknown(n) => Cow::Owned(format!("TYPE{n}")),
        t => Cow::Borrowed(<&'static str>::from(t)),
    }
}

/// A DNS response code, including the EDNS extended bits (RFC 6891): the 4 header bits plus
/// the OPT record's 8 upper bits. Displays and serializes as its mnemonic (`NOERROR`,
/// `NXDOMAIN`, ...), or `RCODE{n}` for a code without one: the strings of the event stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rcode(pub u16);

impl Rcode {
    pub const NOERROR: Rcode = Rcode(0);
    pub const NXDOMAIN: Rcode = Rcode(RCODE_NXDOMAIN);

    pub fn is_noerror(self) -> bool {
        self == Self::NOERROR
    }

    /// The mnemonic, or the `RCODE{n}` form.
    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            RCODE_NXDOMAIN => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            16 => "BADVERS",
            n => return Cow::Owned(format!("RCODE{n}")),
        })
    }
}

impl std::fmt::Display for Rcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.name())
    }
}

impl Serialize for Rcode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// Answer records reserved from the header's count before parsing: a typical answer (up to 16
/// addresses) fits without growing, and a forged count of 65,535 costs no more.
const PREALLOC_RECORDS: usize = 16;

/// Parses a DNS response.
///
/// `truncated` says the bytes are a prefix of a longer message (the capture was cut): then running
/// out of bytes mid-record ends the parse with `incomplete = true` instead of an error.
pub fn parse_response(msg: &[u8], truncated: bool) -> Result<DnsMessage, ParseError> {
    parse_response_with(msg, truncated, KNOWN_NAMES)
}

/// [`parse_response`] remembering at most `known_cap` names for the pointers to them (0: every
/// name walked; the tests compare the two).
fn parse_response_with(
    msg: &[u8],
    truncated: bool,
    known_cap: usize,
) -> Result<DnsMessage, ParseError> {
    if msg.len() < 12 {
        return Err(ParseError::ShortHeader);
    }
    let mut dec = Wire::new(msg, 0);
    let header = WireHeader::read(&mut dec).ok_or(ParseError::ShortHeader)?;
    if !header.bit_hi(0x80) {
        return Err(ParseError::NotResponse);
    }
    let [
        query_count,
        answer_count,
        name_server_count,
        additional_count,
    ] = header.counts;

    let mut out = DnsMessage {
        id: header.id,
        qname: Arc::from(""),
        qtype: Cow::Borrowed(""),
        // Set on every way out below.
        rcode: Rcode::NOERROR,
        flags: DnsFlags {
            aa: header.bit_hi(0x04),
            tc: header.bit_hi(0x02),
            rd: header.bit_hi(0x01),
            ra: header.bit_lo(0x80),
            ad: header.bit_lo(0x20),
            cd: header.bit_lo(0x10),
        },
        // Sized from the header at once (a response of five addresses otherwise reallocates
        // twice), but never beyond what a real response holds: the count is the sender's.
        // Not the other sections: the additional one usually holds only the OPT record,
        // which is not kept.
        answers: Vec::with_capacity(usize::from(answer_count).min(PREALLOC_RECORDS)),
        authority: Vec::new(),
        additional: Vec::new(),
        edns_udp_size: None,
        incomplete: false,
    };
    let low_rcode = u16::from(header.flags_lo & 0x0f);
    let mut ext_rcode_high = 0u16;

    // Names already decoded, for the pointers to them (`read_name`).
    let mut known = Known::new(known_cap);
    // Only the first question is kept; a response with more is unusual and the rest are skipped.
    for i in 0..query_count {
        let start = dec.pos;
        let read = read_name(&mut dec, &known, &|at| name_text(&out, at));
        let name = match read {
            Ok((n, run)) => {
                if i == 0 {
                    known.add(start, run, NameAt::Question);
                }
                n
            }
            Err(e) if truncated && dec.is_empty() => {
                let _ = e;
                out.incomplete = true;
                out.rcode = Rcode(low_rcode);
                return Ok(out);
            }
            Err(e) => return Err(ParseError::Question(e.to_string())),
        };
        let qtype = dec.u16();
        let qclass = dec.u16();
        let (Some(qtype), Some(_)) = (qtype, qclass) else {
            if truncated {
                out.incomplete = true;
                out.rcode = Rcode(low_rcode);
                return Ok(out);
            }
            return Err(ParseError::Question("question cut short".into()));
        };
        if i == 0 {
            out.qname = name;
            out.qtype = type_name(qtype);
        }
    }

    let sections: [(&'static str, u16); 3] = [
        ("answer", answer_count),
        ("authority", name_server_count),
        ("additional", additional_count),
    ];
    'sections: for (sec, (section, count)) in (0u8..).zip(sections) {
        for index in 0..count as usize {
            let read = read_record(&mut dec, &known, &|at| name_text(&out, at));
            match read {
                Ok((Raw::Opt { udp_size, ttl }, _)) => {
                    out.edns_udp_size = Some(udp_size);
                    ext_rcode_high = (ttl >> 24) as u16;
                }
                Ok((Raw::Record(r), runs)) => {
                    let records = match sec {
                        0 => &mut out.answers,
                        1 => &mut out.authority,
                        _ => &mut out.additional,
                    };
                    let i = records.len();
                    records.push(r);
                    known.add(runs.owner.0, runs.owner.1, NameAt::Owner(sec, i));
                    if let Some((start, run)) = runs.target {
                        known.add(start, run, NameAt::Target(sec, i));
                    }
                }
                Err(RecordError::Short) if truncated => {
                    out.incomplete = true;
                    break 'sections;
                }
                Err(e) => {
                    return Err(ParseError::Record {
                        section,
                        index,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
    out.rcode = Rcode(ext_rcode_high << 4 | low_rcode);
    Ok(out)
}

enum Raw {
    Record(DnsRecord),
    Opt { udp_size: u16, ttl: u32 },
}

/// Where a record's names started and how the fast path read them (`None`: it did not), for
/// [`Known::add`].
struct Runs {
    owner: (usize, Option<Walk>),
    target: Option<(usize, Option<Walk>)>,
}

/// The text of a name [`Known`] points to, in the message being built.
fn name_text(out: &DnsMessage, at: NameAt) -> Option<&Arc<str>> {
    let section = |s: u8| match s {
        0 => &out.answers,
        1 => &out.authority,
        _ => &out.additional,
    };
    match at {
        NameAt::Question => Some(&out.qname),
        NameAt::Owner(s, i) => section(s).get(i).map(|r| &r.name),
        NameAt::Target(s, i) => section(s).get(i)?.target.as_ref(),
    }
}

#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error("message ends inside the record")]
    Short,
    #[error("bad owner name: {0}")]
    Owner(String),
    #[error("bad {rtype} data: {reason}")]
    Data { rtype: &'static str, reason: String },
}

fn read_record<'t>(
    dec: &mut Wire<'_>,
    known: &Known,
    text: &dyn Fn(NameAt) -> Option<&'t Arc<str>>,
) -> Result<(Raw, Runs), RecordError> {
    let msg = dec.msg;
    let owner_start = dec.pos;
    let (name, owner_run) = read_name(dec, known, text).map_err(|e| {
        if dec.is_empty() {
            RecordError::Short
        } else {
            RecordError::Owner(e.to_string())
        }
    })?;
    let rtype = dec.u16().ok_or(RecordError::Short)?;
    let class = dec.u16().ok_or(RecordError::Short)?;
    let ttl = dec.u32().ok_or(RecordError::Short)?;
    let rdlen = dec.u16().ok_or(RecordError::Short)? as usize;
    let rdata_start = dec.pos;
    let rdata = dec.take(rdlen).ok_or(RecordError::Short)?;

    let mut addr = None;
    let mut target_run = None;
    let target = match rtype {
        TYPE_OPT => {
            let runs = Runs {
                owner: (owner_start, None),
                target: None,
            };
            return Ok((
                Raw::Opt {
                    udp_size: class,
                    ttl,
                },
                runs,
            ));
        }
        TYPE_A => {
            let b: [u8; 4] = rdata.try_into().map_err(|_| RecordError::Data {
                rtype: "A",
                reason: format!("length {rdlen}, expected 4"),
            })?;
            addr = Some(IpAddr::V4(Ipv4Addr::from(b)));
            None
        }
        TYPE_AAAA => {
            let b: [u8; 16] = rdata.try_into().map_err(|_| RecordError::Data {
                rtype: "AAAA",
                reason: format!("length {rdlen}, expected 16"),
            })?;
            addr = Some(IpAddr::V6(Ipv6Addr::from(b)));
            None
        }
        TYPE_CNAME | TYPE_NS => {
            let rtype = if rtype == TYPE_NS { "NS" } else { "CNAME" };
            // Decode in the context of the whole message so compression pointers resolve, but
            // the name itself must end inside the RDATA.
            let mut sub = Wire::new(msg, rdata_start);
            let (target, run) =
                read_name(&mut sub, known, text).map_err(|e| RecordError::Data {
                    rtype,
                    reason: e.to_string(),
                })?;
            target_run = Some((rdata_start, run));
            if sub.pos != rdata_start + rdlen {
                return Err(RecordError::Data {
                    rtype,
                    reason: "name does not fill RDATA".into(),
                });
            }
            Some(target)
        }
        _ => None,
    };
    let runs = Runs {
        owner: (owner_start, owner_run),
        target: target_run,
    };
    Ok((
        Raw::Record(DnsRecord {
            name,
            rtype: type_name(rtype),
            rtype_code: rtype,
            ttl,
            target,
            addr,
        }),
        runs,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response for `www.Example.COM` A with a CNAME chain, built by hand so the test does not
    /// depend on an encoder.
    fn sample() -> Vec<u8> {
        let mut m = vec![
            0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 1, // header: 1 q, 2 an, 1 ar
        ];
        m.extend_from_slice(b"\x03www\x07Example\x03COM\x00\x00\x01\x00\x01");
        // www.example.com CNAME cdn.example.net (pointer to offset 12 for the owner)
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 17]);
        m.extend_from_slice(b"\x03cdn\x07example\x03net\x00");
        // cdn.example.net A 192.0.2.7 (pointer to the CNAME target at offset 45)
        m.extend_from_slice(&[0xc0, 45, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 7]);
        // OPT, udp size 1232
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        m
    }

    #[test]
    fn rcode_strings_are_the_event_strings() {
        for (code, name) in [
            (0, "NOERROR"),
            (3, "NXDOMAIN"),
            (5, "REFUSED"),
            (16, "BADVERS"),
            (11, "RCODE11"),
            (4095, "RCODE4095"),
        ] {
            let r = Rcode(code);
            assert_eq!(r.to_string(), name);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{name}\""));
            assert_eq!(r.is_noerror(), code == 0);
        }
        assert_eq!(Rcode::NXDOMAIN, Rcode(3));
    }

    #[test]
    fn parses_cname_chain_and_edns() {
        let m = parse_response(&sample(), false).unwrap();
        assert_eq!(&*m.qname, "www.example.com");
        assert_eq!(m.qtype, "A");
        assert_eq!(m.rcode, Rcode::NOERROR);
        assert_eq!(m.answers.len(), 2);
        assert_eq!(m.answers[0].rtype, "CNAME");
        assert_eq!(m.answers[0].target.as_deref(), Some("cdn.example.net"));
        assert_eq!(&*m.answers[1].name, "cdn.example.net");
        assert_eq!(m.answers[1].data().as_deref(), Some("192.0.2.7"));
        assert_eq!(m.answers[1].target, None);
        // Events show the address as text, like the target name.
        let j = serde_json::to_value(&m.answers[1]).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"name": "cdn.example.net", "type": "A", "ttl": 30, "data": "192.0.2.7"})
        );
        assert_eq!(m.answers[1].ttl, 30);
        assert_eq!(m.edns_udp_size, Some(1232));
        assert!(m.additional.is_empty(), "OPT is not reported as a record");
        assert!(!m.incomplete);
    }

    #[test]
    fn truncated_capture_keeps_what_fits() {
        let full = sample();
        let cut = &full[..full.len() - 14];
        assert!(parse_response(cut, false).is_err());
        let m = parse_response(cut, true).unwrap();
        assert!(m.incomplete);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(&*m.qname, "www.example.com");
    }

    #[test]
    fn compression_loop_is_an_error() {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // name points at itself
        assert!(matches!(
            parse_response(&m, false),
            Err(ParseError::Question(_))
        ));
        // Two pointers pointing at each other, in an answer.
        let mut m = vec![0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(
            parse_response(&m, false),
            Err(ParseError::Record { .. })
        ));
    }

    #[test]
    fn forward_pointer_past_end_is_an_error() {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 0xff, 0, 1, 0, 1]);
        assert!(parse_response(&m, false).is_err());
    }

    #[test]
    fn rdlength_past_end_is_an_error() {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 1, 0x04, 0x00, 1, 2, 3, 4]);
        assert!(matches!(
            parse_response(&m, false),
            Err(ParseError::Record { .. })
        ));
    }

    #[test]
    fn a_with_wrong_length_is_an_error() {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 3, 1, 2, 3]);
        assert!(parse_response(&m, false).is_err());
    }

    #[test]
    fn name_over_255_octets_is_an_error() {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            m.push(63);
            m.extend_from_slice(&[b'a'; 63]);
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(matches!(
            parse_response(&m, false),
            Err(ParseError::Question(_))
        ));
        // The same name built from compression pointers chained backwards.
        let mut m = vec![0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut prev: Option<usize> = None;
        let mut starts = Vec::new();
        for _ in 0..5 {
            starts.push(m.len());
            m.push(63);
            m.extend_from_slice(&[b'b'; 63]);
            match prev {
                Some(p) => m.extend_from_slice(&pointer(p)),
                None => m.push(0),
            }
            prev = starts.last().copied();
        }
        // Those labels sit where a record is expected, so the owner name is already too long.
        assert!(parse_response(&m, false).is_err());
    }

    #[test]
    fn queries_and_short_input_are_rejected() {
        assert_eq!(parse_response(&[0; 5], false), Err(ParseError::ShortHeader));
        let q = [0, 1, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_response(&q, false), Err(ParseError::NotResponse));
    }

    #[test]
    fn unknown_types_keep_their_number_and_bad_rdata_of_them_is_tolerated() {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0];
        // root owner, type 64 (SVCB) with garbage RDATA
        m.extend_from_slice(&[0, 0, 64, 0, 1, 0, 0, 0, 5, 0, 2, 0xff, 0xff]);
        let r = parse_response(&m, false).unwrap();
        assert_eq!(r.answers[0].rtype, "SVCB");
        assert_eq!(r.answers[0].rtype_code, 64);
        assert_eq!(r.answers[0].data(), None);
        let mut m = vec![0, 1, 0x81, 0x83, 0, 0, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[0, 0xff, 0x00, 0, 1, 0, 0, 0, 5, 0, 0]);
        let r = parse_response(&m, false).unwrap();
        assert_eq!(r.answers[0].rtype, "TYPE65280");
        assert_eq!(r.rcode, Rcode::NXDOMAIN);
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic xorshift fuzz over mutated copies of a valid message.
        let base = sample();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut m = base.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % m.len();
                m[i] = (x >> 32) as u8;
            }
            let cut = (x >> 40) as usize % (m.len() + 1);
            let _ = parse_response(&m[..cut], x & 1 == 0);
        }
    }

    /// What hickory reads at `start`: the name as printed, and where it ends.
    fn hickory_name(msg: &[u8], start: usize) -> Option<(String, usize)> {
        let mut dec = BinDecoder::new(msg);
        dec.read_slice(start).ok()?;
        let n = Name::read(&mut dec).ok()?;
        Some((normalize_name(&n), dec.index()))
    }

    /// A deterministic xorshift stream for the randomised tests.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// The two bytes of a compression pointer to `to`.
    fn pointer(to: usize) -> [u8; 2] {
        [0xc0 | (to >> 8) as u8, to as u8]
    }

    /// The fast name path accepts only names hickory accepts, and reads them identically:
    /// checked at every offset of messages built from labels, pointers (backwards, forwards,
    /// into themselves) and odd bytes, mutated at random.
    #[test]
    fn plain_wire_names_read_as_hickory_reads_them() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let alphabet = b"abcXYZ09-_*.\\\x00\xc3\x7f";
        let (mut fast, mut checked) = (0, 0);
        for round in 0..30_000 {
            let mut m: Vec<u8> = if round % 3 == 0 {
                sample()
            } else {
                vec![0; 12]
            };
            for _ in 0..(next() % 8) {
                match next() % 6 {
                    0..=2 => {
                        // A label, sometimes long.
                        let len = if next().is_multiple_of(10) {
                            next() % 64
                        } else {
                            1 + next() % 6
                        };
                        m.push(len as u8);
                        for _ in 0..len {
                            let r = next() as usize;
                            m.push(alphabet[r % alphabet.len()]);
                        }
                    }
                    3 => {
                        // A pointer anywhere, usually backwards.
                        let to = (next() as usize) % (m.len() + 8);
                        m.extend_from_slice(&pointer(to));
                    }
                    4 => m.push(0),
                    _ => m.push(next() as u8),
                }
            }
            m.push(0);
            for _ in 0..(next() % 3) {
                let i = (next() as usize) % m.len();
                m[i] = next() as u8;
            }
            for start in 0..m.len() {
                checked += 1;
                if let Some(got) = plain_wire_name(&m, start) {
                    fast += 1;
                    assert_eq!(
                        Some((&*got.0, got.1)),
                        hickory_name(&m, start)
                            .as_ref()
                            .map(|(n, e)| (n.as_str(), *e)),
                        "at {start} in {m:02x?}"
                    );
                }
            }
        }
        // The test means something only if the fast path took many of them.
        assert!(fast > checked / 20, "{fast} of {checked}");
    }

    /// A pointer to a known name reads what the fast path reads there, at every offset of
    /// messages built as in `plain_wire_names_read_as_hickory_reads_them`, with pointers added
    /// to every offset the fast path decodes.
    #[test]
    fn a_pointer_to_a_known_name_reads_as_the_fast_path_reads_it() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"abcXYZ09-_*\\\x00\xc3";
        let mut hits = 0;
        for round in 0..3_000 {
            let mut m: Vec<u8> = if round % 3 == 0 {
                sample()
            } else {
                vec![0; 12]
            };
            for _ in 0..(1 + next() % 8) {
                match next() % 5 {
                    0..=2 => {
                        let len = 1 + next() % 6;
                        m.push(len as u8);
                        for _ in 0..len {
                            m.push(alphabet[next() as usize % alphabet.len()]);
                        }
                    }
                    3 => {
                        let to = (next() as usize) % (m.len() + 4);
                        m.extend_from_slice(&pointer(to));
                    }
                    _ => m.push(0),
                }
            }
            m.push(0);
            let decoded: Vec<(usize, Arc<str>, Walk)> = (0..m.len())
                .filter_map(|p| plain_wire_name_run(&m, p).map(|(name, walk)| (p, name, walk)))
                .collect();
            // A pointer to each decodable offset.
            for (p, _, _) in &decoded {
                m.extend_from_slice(&pointer(*p));
            }
            for start in 0..m.len() {
                for (p, name, walk) in &decoded {
                    let mut known = Known::new(1);
                    known.add(*p, Some(*walk), NameAt::Question);
                    let text = |_| Some(name);
                    if let Some(got) = known.pointer_at(&m, start, &text) {
                        hits += 1;
                        assert_eq!(
                            Some(got),
                            plain_wire_name(&m, start),
                            "pointer at {start} to {p} in {m:02x?}"
                        );
                    }
                }
            }
        }
        assert!(hits > 1_000, "{hits} pointers taken from known names");
    }

    /// A response whose second answer's owner is a chain of `n` compression pointers, each
    /// to the one before, ending in the one-label name `x` ("a", or a label only hickory
    /// reads); the first answer (type 99) carries the chain in its data.
    fn pointer_chain(n: usize, label: &[u8]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 0, 0, 2, 0, 0, 0, 0];
        let rdlen = 2 + label.len() + 2 * n;
        m.extend_from_slice(&[0, 0, 99, 0, 1, 0, 0, 0, 0]);
        m.extend_from_slice(&(rdlen as u16).to_be_bytes());
        let base = m.len();
        m.push(label.len() as u8);
        m.extend_from_slice(label);
        m.push(0);
        let mut prev = base;
        for _ in 0..n {
            let here = m.len();
            m.extend_from_slice(&pointer(prev));
            prev = here;
        }
        m.extend_from_slice(&pointer(prev));
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        m
    }

    /// A name may follow MAX_NAME_POINTERS pointers, by the fast path or through hickory, and
    /// one more is refused by both; a chain of thousands is refused without recursing (before,
    /// hickory followed it with one call per pointer, and a debug build overflowed a 2 MiB
    /// stack at 8,000). The parse runs on a 256 KiB stack, so a recursion would show.
    #[test]
    fn a_long_pointer_chain_is_refused_without_recursing() {
        let parse = |m: Vec<u8>| {
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || parse_response(&m, false))
                .unwrap()
                .join()
                .unwrap()
        };
        // "a" is read by the fast path, "a\\b" (a backslash) only by hickory.
        for (label, name) in [(&b"a"[..], "a"), (&b"a\\b"[..], "a\\\\b")] {
            // The owner follows the n pointers of the chain and its own.
            let m = parse(pointer_chain(MAX_NAME_POINTERS - 1, label)).unwrap();
            assert_eq!(&*m.answers[1].name, name);
            assert_eq!(m.answers[1].addr, Some(IpAddr::from([192, 0, 2, 1])));
            // A third answer whose owner points to the second's follows one pointer more: it
            // is refused too, though the second's name is known.
            let mut m = pointer_chain(MAX_NAME_POINTERS - 1, label);
            let second = m.len() - 16;
            m[7] = 3;
            m.extend_from_slice(&pointer(second));
            m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2]);
            assert!(
                matches!(parse(m), Err(ParseError::Record { index: 2, .. })),
                "a pointer to a name at the limit, {name}"
            );
            for n in [MAX_NAME_POINTERS, 8_000] {
                assert!(
                    matches!(
                        parse(pointer_chain(n, label)),
                        Err(ParseError::Record { index: 1, .. })
                    ),
                    "{n} pointers of {name}"
                );
            }
        }
    }

    /// The known names change nothing a parse gives: responses built from questions, records
    /// of every kind the parser treats apart (A, CNAME, NS, OPT, other types, wrong lengths)
    /// and names that are new labels, pointers to the question and to earlier owners and
    /// targets, pointers to pointers, and names only hickory reads, parsed whole and cut at
    /// many lengths, with the known names and without them (chains at the pointer limit are
    /// `a_long_pointer_chain_is_refused_without_recursing`'s).
    #[test]
    fn known_names_change_nothing_a_parse_gives() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let (mut copied, mut compared) = (0, 0);
        for _ in 0..1_500 {
            let questions = 1 + next() % 2;
            let records = 1 + next() % 10;
            let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, questions as u8];
            m.extend_from_slice(&[0, records as u8, 0, 0, 0, 0]);
            // Offsets where a name starts (to point to) and where a pointer sits (to chain).
            let mut names: Vec<usize> = Vec::new();
            let mut pointers: Vec<usize> = Vec::new();
            let mut name = |m: &mut Vec<u8>, next: &mut dyn FnMut() -> u64| {
                let here = m.len();
                match next() % 8 {
                    0 | 1 => {
                        for _ in 0..(1 + next() % 3) {
                            let len = 1 + next() % 5;
                            m.push(len as u8);
                            for _ in 0..len {
                                m.push(b"abcde-0"[next() as usize % 7]);
                            }
                        }
                        if next().is_multiple_of(3) && !names.is_empty() {
                            let to = names[next() as usize % names.len()];
                            m.extend_from_slice(&pointer(to));
                        } else {
                            m.push(0);
                        }
                    }
                    2 => m.extend_from_slice(b"\x03a\\b\x00"),
                    3 | 4 if !names.is_empty() => {
                        let to = names[next() as usize % names.len()];
                        m.extend_from_slice(&pointer(to));
                        pointers.push(here);
                    }
                    5 if !pointers.is_empty() => {
                        let to = pointers[next() as usize % pointers.len()];
                        m.extend_from_slice(&pointer(to));
                        pointers.push(here);
                    }
                    _ => m.extend_from_slice(&pointer(12)),
                }
                names.push(here);
            };
            for _ in 0..questions {
                name(&mut m, &mut next);
                m.extend_from_slice(&[0, 1, 0, 1]);
            }
            for _ in 0..records {
                let kind = next() % 6;
                if kind == 3 {
                    m.push(0);
                } else {
                    name(&mut m, &mut next);
                }
                let rtype: u16 = match kind {
                    0 | 1 => 1,
                    2 => 5,
                    3 => 41,
                    4 => 2,
                    _ => 99,
                };
                m.extend_from_slice(&rtype.to_be_bytes());
                m.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
                let at = m.len();
                m.extend_from_slice(&[0, 0]);
                match rtype {
                    1 => m.extend_from_slice(&[192, 0, 2, next() as u8]),
                    5 | 2 => name(&mut m, &mut next),
                    _ => m.extend_from_slice(&[1, 2, 3][..(next() % 4) as usize % 4]),
                }
                let mut len = m.len() - at - 2;
                if next().is_multiple_of(20) {
                    len += 1;
                }
                m[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes());
            }
            let cuts = (12..m.len()).step_by(5).chain([m.len()]);
            for cut in cuts {
                for truncated in [false, true] {
                    let with = parse_response_with(&m[..cut], truncated, KNOWN_NAMES);
                    let without = parse_response_with(&m[..cut], truncated, 0);
                    assert_eq!(with, without, "cut at {cut} of {m:02x?}");
                    compared += 1;
                }
            }
            copied += KNOWN_COPIES.with(|c| c.replace(0));
        }
        assert!(copied > 2_000, "{copied} names copied in {compared} parses");
    }

    /// Names that must fall back to hickory: escapes and odd bytes, overlong names.
    #[test]
    fn unusual_names_are_left_to_hickory() {
        let mut m = vec![0; 12];
        m.extend_from_slice(b"\x03a.b\x03com\x00");
        assert_eq!(plain_wire_name(&m, 12), None);
        assert_eq!(hickory_name(&m, 12).unwrap().0, "a\\.b.com");
        let mut long = vec![0; 12];
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert_eq!(plain_wire_name(&long, 12), None);
        assert!(hickory_name(&long, 12).is_none());
        // Root, and a pointer to a name before it.
        let mut r = vec![0; 12];
        r.extend_from_slice(b"\x00\x03www\xc0\x0c");
        assert_eq!(plain_wire_name(&r, 12), Some((".".into(), 13)));
        assert_eq!(plain_wire_name(&r, 13), Some(("www".into(), 19)));
        assert_eq!(hickory_name(&r, 13), Some(("www".into(), 19)));
        // A pointer chain that turns forwards: each pointer must point before the labels that
        // led to it, not only before the name's start.
        let mut f = vec![0; 12];
        f.extend_from_slice(b"\x01a\xc0\x10\x01b\x00\xc0\x0c");
        assert!(hickory_name(&f, 19).is_none());
        assert_eq!(plain_wire_name(&f, 19), None);
        assert_eq!(plain_wire_name(&f, 12), None);
        assert_eq!(plain_wire_name(&f, 16), Some(("b".into(), 19)));
    }
}
