//! `flux_detect::capture_file::decode_frame_each` on one arbitrary frame of an arbitrary link
//! type: the kernel's frame walk (VLAN tags, IPv4 options and fragments, the IPv6 extension
//! chain, UDP and TCP with several messages per segment) as the file reader runs it.
//!
//! Input: byte 0 picks the link type (every one the reader unwraps, and one it does not), byte 1
//! whether the wire length is known and longer (a snaplen cut) and which DNS ports, then the frame.
//!
//! Checks: no panic; every message comes from a configured port, holds a DNS header and at most
//! two VLAN ids; `decode_frame` yields the first message `decode_frame_each` does; capping the
//! message as the ring buffer does and parsing it never panics.
#![no_main]

use std::time::{Duration, SystemTime};

use flux_common::DNS_CAPTURE_MAX;
use flux_detect::{
    capture_file::{CapturedDns, DEFAULT_PORTS, decode_frame, decode_frame_each},
    dns::parse_response,
};
use libfuzzer_sys::fuzz_target;
use pcap_file::DataLink;

/// Ethernet, Linux SLL and SLL2, raw IP (both numbers), raw IPv4, raw IPv6, BSD null and loop,
/// and one the reader does not decode (IEEE 802.11).
const LINKS: [u32; 10] = [1, 113, 276, 101, 12, 228, 229, 0, 108, 105];

fuzz_target!(|data: &[u8]| {
    let [pick, flags, frame @ ..] = data else {
        return;
    };
    let link = DataLink::from(LINKS[usize::from(*pick) % LINKS.len()]);
    let orig_len = (flags & 1 != 0).then(|| frame.len() as u32 + u32::from(flags >> 4));
    let ports: &[u16] = if flags & 2 != 0 {
        &[53, 8053]
    } else {
        &DEFAULT_PORTS
    };
    let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut all: Vec<CapturedDns> = Vec::new();
    let res = decode_frame_each(link, frame, orig_len, ts, ports, |d| all.push(d));
    if orig_len.is_none() {
        let first = decode_frame(link, frame, ts, ports);
        match (first, all.first(), res) {
            (Ok(Some(d)), Some(f), _) => {
                assert_eq!(d.payload, f.payload);
                assert_eq!(
                    (d.src, d.sport, d.dst, d.dport),
                    (f.src, f.sport, f.dst, f.dport)
                );
            }
            (Ok(None), None, Ok(())) => {}
            (Err(a), None, Err(b)) => assert_eq!(a, b),
            (first, f, res) => panic!("decode_frame {first:?} vs each {f:?} {res:?}"),
        }
    }
    for d in &mut all {
        assert!(ports.contains(&d.sport), "a message from port {}", d.sport);
        assert!(d.payload.len() >= 12, "a message shorter than a DNS header");
        assert!(d.vlan.len() <= 2, "{} VLAN ids", d.vlan.len());
        d.cap_to(DNS_CAPTURE_MAX);
        assert!(d.payload.len() <= DNS_CAPTURE_MAX);
        let _ = parse_response(&d.payload, d.truncated);
    }
});
