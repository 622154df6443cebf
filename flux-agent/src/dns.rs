//! DNS message parsing: wire bytes to a [`DnsMessage`] the scorer and the event log use.
//!
//! hickory-proto does the dangerous part (names, compression pointers, loop and length limits).
//! Records are walked here rather than with `Message::from_vec` so that one corrupt RDATA of a
//! type we do not use (SVCB, LOC, ...) does not throw away the addresses next to it, and so a
//! truncated capture still yields every record that fits.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use hickory_proto::{
    op::Header,
    rr::{Name, RecordType},
    serialize::binary::{BinDecodable, BinDecoder},
};
use serde::Serialize;

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
    /// Owner name, lowercase, no trailing dot.
    pub name: String,
    /// Mnemonic (`A`, `CNAME`) or `TYPEnnn` for types without one.
    pub rtype: Cow<'static, str>,
    pub rtype_code: u16,
    pub ttl: u32,
    /// The target name of a CNAME or NS record.
    pub target: Option<String>,
    /// The address of an A or AAAA record.
    pub addr: Option<IpAddr>,
}

impl DnsRecord {
    /// The decoded data as events show it: the address or the target name; `None` for every
    /// other type. Addresses are kept binary and only formatted here, off the scoring path.
    pub fn data(&self) -> Option<Cow<'_, str>> {
        match (&self.addr, &self.target) {
            (Some(ip), _) => Some(Cow::Owned(ip.to_string())),
            (None, Some(t)) => Some(Cow::Borrowed(t)),
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
    /// Question name, lowercase, no trailing dot; empty when there is no question.
    pub qname: String,
    pub qtype: Cow<'static, str>,
    /// Mnemonic (`NOERROR`, `NXDOMAIN`), including the EDNS extended bits.
    pub rcode: Cow<'static, str>,
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
            let ok = b.is_ascii_alphanumeric()
                || b == b'_'
                || (b == b'-' && j > 0)
                || (b == b'*' && j == 0);
            if !ok {
                return None;
            }
            s.push(char::from(b.to_ascii_lowercase()));
        }
    }
    Some(s)
}

/// Mnemonic for a record type, or the RFC 3597 `TYPEnnn` form.
pub fn type_name(code: u16) -> Cow<'static, str> {
    match RecordType::from(code) {
        RecordType::Unknown(n) => Cow::Owned(format!("TYPE{n}")),
        t => Cow::Borrowed(<&'static str>::from(t)),
    }
}

/// Mnemonic for a (possibly extended) response code.
pub fn rcode_name(rcode: u16) -> Cow<'static, str> {
    Cow::Borrowed(match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
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

const TYPE_A: u16 = 1;
const TYPE_NS: u16 = 2;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;

/// Parses a DNS response.
///
/// `truncated` says the bytes are a prefix of a longer message (the capture was cut): then running
/// out of bytes mid-record ends the parse with `incomplete = true` instead of an error.
pub fn parse_response(msg: &[u8], truncated: bool) -> Result<DnsMessage, ParseError> {
    if msg.len() < 12 {
        return Err(ParseError::ShortHeader);
    }
    let mut dec = BinDecoder::new(msg);
    let header = Header::read(&mut dec).map_err(|_| ParseError::ShortHeader)?;
    if header.message_type() != hickory_proto::op::MessageType::Response {
        return Err(ParseError::NotResponse);
    }

    let mut out = DnsMessage {
        id: header.id(),
        qname: String::new(),
        qtype: Cow::Borrowed(""),
        rcode: Cow::Borrowed(""),
        flags: DnsFlags {
            aa: header.authoritative(),
            tc: header.truncated(),
            rd: header.recursion_desired(),
            ra: header.recursion_available(),
            ad: header.authentic_data(),
            cd: header.checking_disabled(),
        },
        answers: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        edns_udp_size: None,
        incomplete: false,
    };
    let low_rcode = u16::from(header.response_code().low());
    let mut ext_rcode_high = 0u16;

    // Only the first question is kept; a response with more is unusual and the rest are skipped.
    for i in 0..header.query_count() {
        let name = match Name::read(&mut dec) {
            Ok(n) => n,
            Err(e) if truncated && dec.is_empty() => {
                let _ = e;
                out.incomplete = true;
                out.rcode = rcode_name(low_rcode);
                return Ok(out);
            }
            Err(e) => return Err(ParseError::Question(e.to_string())),
        };
        let qtype = read_u16(&mut dec);
        let qclass = read_u16(&mut dec);
        let (Some(qtype), Some(_)) = (qtype, qclass) else {
            if truncated {
                out.incomplete = true;
                out.rcode = rcode_name(low_rcode);
                return Ok(out);
            }
            return Err(ParseError::Question("question cut short".into()));
        };
        if i == 0 {
            out.qname = normalize_name(&name);
            out.qtype = type_name(qtype);
        }
    }

    let sections: [(&'static str, u16); 3] = [
        ("answer", header.answer_count()),
        ("authority", header.name_server_count()),
        ("additional", header.additional_count()),
    ];
    'sections: for (section, count) in sections {
        for index in 0..count as usize {
            match read_record(&mut dec, msg) {
                Ok(Raw::Opt { udp_size, ttl }) => {
                    out.edns_udp_size = Some(udp_size);
                    ext_rcode_high = (ttl >> 24) as u16;
                }
                Ok(Raw::Record(r)) => match section {
                    "answer" => out.answers.push(r),
                    "authority" => out.authority.push(r),
                    _ => out.additional.push(r),
                },
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
    out.rcode = rcode_name(ext_rcode_high << 4 | low_rcode);
    Ok(out)
}

enum Raw {
    Record(DnsRecord),
    Opt { udp_size: u16, ttl: u32 },
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

fn read_u16(dec: &mut BinDecoder<'_>) -> Option<u16> {
    dec.read_u16().ok().map(|v| v.unverified())
}

fn read_record(dec: &mut BinDecoder<'_>, msg: &[u8]) -> Result<Raw, RecordError> {
    let name = Name::read(dec).map_err(|e| {
        if dec.is_empty() {
            RecordError::Short
        } else {
            RecordError::Owner(e.to_string())
        }
    })?;
    let rtype = read_u16(dec).ok_or(RecordError::Short)?;
    let class = read_u16(dec).ok_or(RecordError::Short)?;
    let ttl = dec
        .read_u32()
        .map(|v| v.unverified())
        .map_err(|_| RecordError::Short)?;
    let rdlen = read_u16(dec).ok_or(RecordError::Short)? as usize;
    let rdata_start = dec.index();
    let rdata = dec
        .read_slice(rdlen)
        .map(|v| v.unverified())
        .map_err(|_| RecordError::Short)?;

    let mut addr = None;
    let target = match rtype {
        TYPE_OPT => {
            return Ok(Raw::Opt {
                udp_size: class,
                ttl,
            });
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
            let mut sub = BinDecoder::new(msg);
            sub.read_slice(rdata_start)
                .map_err(|_| RecordError::Short)?;
            let target = Name::read(&mut sub).map_err(|e| RecordError::Data {
                rtype,
                reason: e.to_string(),
            })?;
            if sub.index() != rdata_start + rdlen {
                return Err(RecordError::Data {
                    rtype,
                    reason: "name does not fill RDATA".into(),
                });
            }
            Some(normalize_name(&target))
        }
        _ => None,
    };
    Ok(Raw::Record(DnsRecord {
        name: normalize_name(&name),
        rtype: type_name(rtype),
        rtype_code: rtype,
        ttl,
        target,
        addr,
    }))
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
    fn parses_cname_chain_and_edns() {
        let m = parse_response(&sample(), false).unwrap();
        assert_eq!(m.qname, "www.example.com");
        assert_eq!(m.qtype, "A");
        assert_eq!(m.rcode, "NOERROR");
        assert_eq!(m.answers.len(), 2);
        assert_eq!(m.answers[0].rtype, "CNAME");
        assert_eq!(m.answers[0].target.as_deref(), Some("cdn.example.net"));
        assert_eq!(m.answers[1].name, "cdn.example.net");
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
        assert_eq!(m.qname, "www.example.com");
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
                Some(p) => m.extend_from_slice(&[0xc0 | (p >> 8) as u8, p as u8]),
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
        assert_eq!(r.rcode, "NXDOMAIN");
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
}
