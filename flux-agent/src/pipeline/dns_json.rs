//! The `dns` event's JSON line, written by hand: byte for byte what serde_json writes for
//! [`Event::Dns`](crate::pipeline::events::Event) (the contract of `docs/events.md`), for a
//! fraction of the CPU. Every other event goes through serde_json (`sinks::write_event`).
//! Touches nothing but the buffer it is given.
//!
//! Why not serde_json for this one: the events file gets one `dns` line per DNS response, and
//! with serde_json the events sink was half of the agent's CPU (`ringbuf-load`, the agent alone
//! at 250,000 responses a second, with the packaged JSON events file: `perf record` of the
//! agent, 50.7% of its samples in the `sink events` thread against 43.4% for capture, parse,
//! score and enforce together). The cost was serde's generality, not the bytes:
//! - every key of the roughly 30 went through the string escaper (`format_escaped_str_contents`
//!   alone was 7.7% of the agent);
//! - the flattened message made the object a map of dynamic entries;
//! - every address was formatted into a new `String` (`DnsRecord::data`) and freed.
//!
//! Here the keys are constants, numbers go through `itoa` (serde_json's own digits), IPv4
//! addresses are written octet by octet, and a string that needs no escaping is copied as is.
//! The few strings that do need escaping (a name with a quote or a control byte, which only the
//! hickory fallback of the parser can produce) go through serde_json's escaper itself, so the
//! escaping cannot differ. The unit tests compare this writer with serde_json on thousands of
//! generated events, every field varied; a field added to the event without being added here
//! fails them.

use std::{io::Write as _, net::IpAddr};

use flux_detect::{
    dns::{DnsRecord, Transport},
    timestamp::{Rfc3339Cache, rfc3339},
};

use crate::pipeline::events::Observation;

/// Appends `o` as serde_json writes `Event::Dns(o)` (no newline).
pub fn write_dns(out: &mut Vec<u8>, o: &Observation) {
    out.extend_from_slice(br#"{"type":"dns","ts":""#);
    // The text of `flux_detect::timestamp::serialize`; its digits, dashes, colons and letters
    // need no escaping. One cache per thread: the events sink writes every line from one.
    thread_local! {
        static TS: std::cell::RefCell<Rfc3339Cache> = std::cell::RefCell::default();
    }
    // A thread whose locals are being torn down formats without the cache.
    if TS.try_with(|c| c.borrow_mut().write(o.ts, out)).is_err() {
        let _ = write!(out, "{}", rfc3339(o.ts));
    }
    out.extend_from_slice(br#"","iface":"#);
    string(out, &o.iface);
    out.extend_from_slice(br#","ifindex":"#);
    number(out, o.ifindex);
    out.extend_from_slice(br#","src":"#);
    address(out, o.src);
    out.extend_from_slice(br#","dst":"#);
    address(out, o.dst);
    out.extend_from_slice(br#","sport":"#);
    number(out, o.sport);
    out.extend_from_slice(br#","dport":"#);
    number(out, o.dport);
    out.extend_from_slice(match o.transport {
        Transport::Udp => br#","transport":"udp","vlan":["#,
        Transport::Tcp => br#","transport":"tcp","vlan":["#,
    });
    for (i, v) in o.vlan.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        number(out, *v);
    }
    out.extend_from_slice(br#"],"dns_len":"#);
    number(out, o.dns_len);
    out.extend_from_slice(br#","cap_len":"#);
    number(out, o.cap_len);
    booleans(
        out,
        [
            (br#","truncated":"#, o.truncated),
            (br#","blocked":"#, o.blocked),
            (br#","would_block":"#, o.would_block),
            (br#","fragmented":"#, o.fragmented),
            (br#","unsolicited":"#, o.unsolicited),
        ],
    );

    let m = &o.msg;
    out.extend_from_slice(br#","id":"#);
    number(out, m.id);
    out.extend_from_slice(br#","qname":"#);
    string(out, &m.qname);
    out.extend_from_slice(br#","qtype":"#);
    string(out, &m.qtype);
    out.extend_from_slice(br#","rcode":"#);
    string(out, &m.rcode.name());
    let f = &m.flags;
    booleans(
        out,
        [
            (br#","flags":{"aa":"#, f.aa),
            (br#","tc":"#, f.tc),
            (br#","rd":"#, f.rd),
            (br#","ra":"#, f.ra),
            (br#","ad":"#, f.ad),
            (br#","cd":"#, f.cd),
        ],
    );
    out.extend_from_slice(br#"},"answers":"#);
    records(out, &m.answers);
    out.extend_from_slice(br#","authority":"#);
    records(out, &m.authority);
    out.extend_from_slice(br#","additional":"#);
    records(out, &m.additional);
    out.extend_from_slice(br#","edns_udp_size":"#);
    match m.edns_udp_size {
        Some(n) => number(out, n),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","incomplete":"#);
    boolean(out, m.incomplete);
    out.push(b'}');
}

/// A section's records, as `DnsRecord`'s `Serialize` writes them.
fn records(out: &mut Vec<u8>, rs: &[DnsRecord]) {
    out.push(b'[');
    for (i, r) in rs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"name":"#);
        string(out, &r.name);
        out.extend_from_slice(br#","type":"#);
        string(out, &r.rtype);
        out.extend_from_slice(br#","ttl":"#);
        number(out, r.ttl);
        out.extend_from_slice(br#","data":"#);
        // `DnsRecord::data`: the address, else the target name, else null.
        match (&r.addr, &r.target) {
            (Some(ip), _) => address(out, *ip),
            (None, Some(t)) => string(out, t),
            (None, None) => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
    out.push(b']');
}

/// A JSON string: copied between quotes when nothing in it needs escaping (JSON escapes the
/// quote, the backslash and the control bytes below 0x20, nothing else), else serde_json's.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// An address as its `Display` (what serde writes for `IpAddr` in JSON), quoted.
fn address(out: &mut Vec<u8>, ip: IpAddr) {
    out.push(b'"');
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, o);
            }
        }
        // Rarer, and its compression rules are std's: `Display` itself (digits, colons, dots).
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
    out.push(b'"');
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Each key (with the comma before it) and its boolean, in order.
fn booleans<const N: usize>(out: &mut Vec<u8>, fields: [(&[u8], bool); N]) {
    for (key, b) in fields {
        out.extend_from_slice(key);
        boolean(out, b);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        borrow::Cow,
        net::{Ipv4Addr, Ipv6Addr},
        sync::Arc,
        time::{Duration, UNIX_EPOCH},
    };

    use flux_detect::dns::{DnsFlags, DnsMessage, Rcode, parse_response};

    use super::*;
    use crate::pipeline::events::Event;

    /// What serde_json writes for the event: the contract this writer must match.
    fn serde_line(o: &Observation) -> String {
        serde_json::to_string(&Event::Dns(o.clone())).unwrap()
    }

    fn ours(o: &Observation) -> String {
        let mut out = Vec::new();
        write_dns(&mut out, o);
        String::from_utf8(out).unwrap()
    }

    /// xorshift64*: a fixed sequence, so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn bit(&mut self) -> bool {
            self.next() & 1 == 1
        }
        /// A string mostly of name bytes, now and then every kind JSON escapes, a DEL (not
        /// escaped) and multi-byte characters.
        fn text(&mut self) -> String {
            const PIECES: [&str; 14] = [
                "a",
                "z",
                "0",
                "-",
                ".",
                "_",
                "\"",
                "\\",
                "\n",
                "\t",
                "\u{1}",
                "\u{7f}",
                "é",
                "\u{1f600}",
            ];
            let plain = self.bit();
            (0..self.below(24))
                .map(|_| {
                    let n = if plain { 6 } else { PIECES.len() as u64 };
                    PIECES[self.below(n) as usize]
                })
                .collect()
        }
        fn ip(&mut self) -> IpAddr {
            match self.below(4) {
                0 => IpAddr::V6(Ipv6Addr::from(u128::from(self.next()) << 64)),
                1 => IpAddr::V6(Ipv6Addr::from(
                    (u128::from(self.next()) << 64) | u128::from(self.next()),
                )),
                2 => IpAddr::V6(Ipv4Addr::from(self.next() as u32).to_ipv6_mapped()),
                _ => IpAddr::V4(Ipv4Addr::from(self.next() as u32)),
            }
        }
        fn record(&mut self) -> DnsRecord {
            let (addr, target) = match self.below(3) {
                0 => (Some(self.ip()), None),
                1 => (None, Some(Arc::from(self.text()))),
                _ => (None, None),
            };
            DnsRecord {
                name: Arc::from(self.text()),
                rtype: if self.bit() {
                    Cow::Borrowed("A")
                } else {
                    Cow::Owned(self.text())
                },
                rtype_code: self.next() as u16,
                ttl: self.next() as u32,
                target,
                addr,
            }
        }
        fn records(&mut self) -> Vec<DnsRecord> {
            (0..self.below(5)).map(|_| self.record()).collect()
        }
    }

    fn generated(r: &mut Rng) -> Observation {
        Observation {
            ts: UNIX_EPOCH + Duration::from_nanos(r.next() >> 4),
            iface: r.text().into(),
            ifindex: r.next() as u32,
            src: r.ip(),
            dst: r.ip(),
            sport: r.next() as u16,
            dport: r.next() as u16,
            transport: if r.bit() {
                Transport::Udp
            } else {
                Transport::Tcp
            },
            vlan: (0..r.below(3)).map(|_| r.next() as u16).collect(),
            dns_len: r.next() as u16,
            cap_len: r.next() as u16,
            truncated: r.bit(),
            blocked: r.bit(),
            would_block: r.bit(),
            fragmented: r.bit(),
            unsolicited: r.bit(),
            msg: DnsMessage {
                id: r.next() as u16,
                qname: Arc::from(r.text()),
                qtype: Cow::Owned(r.text()),
                rcode: Rcode(r.below(4096) as u16),
                flags: DnsFlags {
                    aa: r.bit(),
                    tc: r.bit(),
                    rd: r.bit(),
                    ra: r.bit(),
                    ad: r.bit(),
                    cd: r.bit(),
                },
                answers: r.records(),
                authority: r.records(),
                additional: r.records(),
                edns_udp_size: r.bit().then(|| r.next() as u16),
                incomplete: r.bit(),
            },
        }
    }

    #[test]
    fn matches_serde_json_on_generated_events() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..5000 {
            let o = generated(&mut r);
            assert_eq!(ours(&o), serde_line(&o), "event {i}: {o:?}");
        }
    }

    /// A real response through the real parser (compressed names shared between records, a
    /// CNAME chain, an OPT record), and the default observation's zeros and empties.
    #[test]
    fn matches_serde_json_on_a_parsed_response() {
        use hickory_proto::{
            op::{Message, MessageType, Query},
            rr::{Name, RData, Record, RecordType, rdata},
        };
        let q = Name::from_ascii("www.Example.COM.").unwrap();
        let target = Name::from_ascii("edge.cdn.example.net.").unwrap();
        let mut m = Message::new();
        m.set_id(7)
            .set_message_type(MessageType::Response)
            .set_recursion_desired(true)
            .add_query(Query::query(q.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            q,
            300,
            RData::CNAME(rdata::CNAME(target.clone())),
        ));
        for last in [7, 8] {
            m.add_answer(Record::from_rdata(
                target.clone(),
                20,
                RData::A(rdata::A(Ipv4Addr::new(192, 0, 2, last))),
            ));
        }
        let wire = m.to_vec().unwrap();
        let msg = parse_response(&wire, false).unwrap();
        let ts = UNIX_EPOCH + Duration::from_micros(1_691_219_532_123_456);
        let mut o = crate::fleet::aggregate::tests::observation(ts, msg);
        assert_eq!(ours(&o), serde_line(&o));
        assert!(ours(&o).contains(r#""data":"192.0.2.8"}"#), "{}", ours(&o));
        o.msg = DnsMessage {
            id: 0,
            qname: Arc::from(""),
            qtype: Cow::Borrowed(""),
            rcode: Rcode::NOERROR,
            flags: DnsFlags::default(),
            answers: vec![],
            authority: vec![],
            additional: vec![],
            edns_udp_size: None,
            incomplete: false,
        };
        assert_eq!(ours(&o), serde_line(&o));
    }
}
