//! The frame-walk rules, written once as data: which frames are DNS responses to capture, and
//! why each other frame is passed. The XDP program (`flux-ebpf/src/main.rs`, checked by
//! BPF_PROG_TEST_RUN in `tests/tests/xdp_test_run.rs`) and the capture-file reader
//! ([`crate::capture_file`], checked by the unit test below) are both tested against
//! [`cases`], so the two walks cannot drift apart unnoticed.
//!
//! Built only for tests and for crates that enable the `frame-spec` feature (the tests crate):
//! it is test data, not part of the detector.

pub mod frame_builders;

use flux_common::{Counter, ETH_P_8021AD, ETH_P_8021Q, IPV6_DEST_OPTS, IPV6_FRAGMENT};

use crate::{capture_file::FrameError, dns::Transport};
use frame_builders::*;

/// What the walk does with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A DNS response: captured (kernel) or yielded (reader).
    Captured {
        transport: Transport,
        /// Only a prefix of the message is held (a first IP fragment).
        truncated: bool,
        /// VLAN tags walked, outermost first.
        vlans: usize,
    },
    /// Not DNS from a configured port (or not IP at all): passed, counted nowhere.
    NotOurs,
    /// Impossible or cut-short headers.
    Malformed,
    /// A non-first IP fragment: no L4 header to read.
    NonFirstFragment,
    /// A DNS-over-TCP segment that does not hold one whole message.
    TcpNotWholeMessage,
    /// From a DNS port, but not a plausible DNS response.
    NotDnsResponse,
    /// More IPv6 extension headers than the walk allows.
    Ipv6ExtTooDeep,
    /// More VLAN tags than the walk captures (a blocklist may still drop it: not in this spec,
    /// which loads no blocklist).
    VlanTooDeep,
}

impl Outcome {
    /// The kernel counters the frame moves, beside `packets_seen`.
    pub fn kernel_counters(self) -> Vec<Counter> {
        match self {
            Outcome::Captured { truncated, .. } => {
                let mut c = vec![Counter::ResponsesCaptured];
                if truncated {
                    c.push(Counter::TruncatedCaptures);
                }
                c
            }
            Outcome::NotOurs => vec![],
            Outcome::Malformed => vec![Counter::Malformed],
            Outcome::NonFirstFragment => vec![Counter::NonFirstFragments],
            Outcome::TcpNotWholeMessage => vec![Counter::TcpNotWholeMessage],
            Outcome::NotDnsResponse => vec![Counter::NotDnsResponse],
            Outcome::Ipv6ExtTooDeep => vec![Counter::Ipv6ExtTooDeep],
            Outcome::VlanTooDeep => vec![Counter::VlanTooDeep],
        }
    }

    /// The reader's view of a frame it skipped, in the same terms.
    pub fn of_reader_error(e: FrameError) -> Option<Self> {
        Some(match e {
            FrameError::Malformed(_) => Outcome::Malformed,
            FrameError::NonFirstFragment => Outcome::NonFirstFragment,
            FrameError::TcpPartial => Outcome::TcpNotWholeMessage,
            FrameError::NotDns => Outcome::NotDnsResponse,
            FrameError::Ipv6ExtTooDeep => Outcome::Ipv6ExtTooDeep,
            FrameError::VlanTooDeep => Outcome::VlanTooDeep,
            FrameError::UnsupportedLink(_) | FrameError::SnaplenCut => return None,
        })
    }
}

/// One rule of the walk, as a frame and what both sides must do with it.
#[derive(Clone, Debug)]
pub struct FrameCase {
    pub name: &'static str,
    /// An Ethernet frame; the configured DNS ports are [`SPEC_PORTS`].
    pub frame: Vec<u8>,
    /// What the kernel does.
    pub kernel: Outcome,
    /// What the file reader does, when it must differ from the kernel, and why.
    pub reader: Option<(Outcome, &'static str)>,
}

impl FrameCase {
    /// The reader's expected outcome.
    pub fn reader_outcome(&self) -> Outcome {
        self.reader.map_or(self.kernel, |(o, _)| o)
    }
}

/// The DNS source ports every case assumes.
pub const SPEC_PORTS: [u16; 1] = [53];

fn captured(transport: Transport, truncated: bool, vlans: usize) -> Outcome {
    Outcome::Captured {
        transport,
        truncated,
        vlans,
    }
}

/// Every rule of the walk, one frame each.
///
/// Longer than the ~120-line rule on purpose: it is one flat table (the frames it mutates, then
/// one row per rule), and the spec reads best as a single list next to its outcomes.
pub fn cases() -> Vec<FrameCase> {
    use Outcome::*;
    use Transport::{Tcp, Udp};
    let msg = dns_response(100);
    let v4 = udp4(53, &msg);
    let v6 = udp6(53, &msg);
    let t4 = tcp4(53, &tcp_dns(&msg, msg.len() as u16));
    let case = |name, frame, kernel| FrameCase {
        name,
        frame,
        kernel,
        reader: None,
    };
    // A first fragment: MF set, offset 0, the UDP length covering the whole datagram but the
    // fragment holding only its first 400 bytes of message.
    let mut first_frag = udp4(53, &dns_response(600));
    first_frag.truncate(ETH + IP4 + 8 + 400);
    let tot = (IP4 + 8 + 400) as u16;
    first_frag[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
    first_frag[ETH + 6] = 0x20;
    fix_ipv4_checksum(&mut first_frag, ETH);
    let mut later_frag = v4.clone();
    later_frag[ETH + 6..ETH + 8].copy_from_slice(&0x0010u16.to_be_bytes());
    fix_ipv4_checksum(&mut later_frag, ETH);
    let mut ihl4 = v4.clone();
    ihl4[ETH] = 0x44;
    let mut wrong_version = v4.clone();
    wrong_version[ETH] = 0x65;
    let mut ext_past_end = with_ipv6_ext(&v6, &[(0, ipv6_opts_hdr())]);
    ext_past_end[ETH + IP6 + 1] = 200;
    let mut doff4 = t4.clone();
    doff4[ETH + IP4 + 12] = 0x40;
    let mut arp = v4[..ETH].to_vec();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    arp.extend_from_slice(&[0u8; 28]);
    let deep: Vec<(u8, Vec<u8>)> = (0..flux_common::MAX_IPV6_EXT_HEADERS + 1)
        .map(|_| (IPV6_DEST_OPTS, ipv6_opts_hdr()))
        .collect();
    let within: Vec<(u8, Vec<u8>)> = (0..flux_common::MAX_IPV6_EXT_HEADERS - 1)
        .map(|_| (IPV6_DEST_OPTS, ipv6_opts_hdr()))
        .collect();
    let at_limit: Vec<(u8, Vec<u8>)> = (0..flux_common::MAX_IPV6_EXT_HEADERS)
        .map(|_| (IPV6_DEST_OPTS, ipv6_opts_hdr()))
        .collect();
    vec![
        case("udp over ipv4", v4.clone(), captured(Udp, false, 0)),
        case("udp over ipv6", v6.clone(), captured(Udp, false, 0)),
        case(
            "one whole message over tcp",
            t4.clone(),
            captured(Tcp, false, 0),
        ),
        case(
            "one 802.1Q tag",
            with_vlans(&v4, &[(ETH_P_8021Q, 7)]),
            captured(Udp, false, 1),
        ),
        case(
            "802.1ad outer and 802.1Q inner tag",
            with_vlans(&v4, &[(ETH_P_8021AD, 7), (ETH_P_8021Q, 8)]),
            captured(Udp, false, 2),
        ),
        case(
            "three tags: past the walk",
            with_vlans(
                &v4,
                &[(ETH_P_8021AD, 7), (ETH_P_8021Q, 8), (ETH_P_8021Q, 9)],
            ),
            VlanTooDeep,
        ),
        case(
            "more tags than the walk steps over",
            with_vlans(
                &v4,
                &[(ETH_P_8021Q, 1); flux_common::MAX_VLAN_TAGS_STEPPED + 1],
            ),
            VlanTooDeep,
        ),
        case(
            "ipv4 options",
            with_ipv4_options(&v4, 2),
            captured(Udp, false, 0),
        ),
        case(
            "ipv6 extension headers, one fewer than the limit",
            with_ipv6_ext(&v6, &within),
            captured(Udp, false, 0),
        ),
        // A chain of exactly MAX_IPV6_EXT_HEADERS is walked to its transport header; only
        // an extension header after the last one walked is too deep.
        case(
            "ipv6 extension headers, as many as the limit",
            with_ipv6_ext(&v6, &at_limit),
            captured(Udp, false, 0),
        ),
        case(
            "ipv6 extension headers past the limit",
            with_ipv6_ext(&v6, &deep),
            Ipv6ExtTooDeep,
        ),
        case(
            "first ipv4 fragment: captured, truncated",
            first_frag,
            captured(Udp, true, 0),
        ),
        case("non-first ipv4 fragment", later_frag, NonFirstFragment),
        case(
            "non-first ipv6 fragment",
            with_ipv6_ext(&v6, &[(IPV6_FRAGMENT, ipv6_frag_hdr(8, false))]),
            NonFirstFragment,
        ),
        case("not from a dns port", udp4(1234, &msg), NotOurs),
        case("not ip (arp)", arp, NotOurs),
        case(
            "a query from port 53",
            udp4(53, &dns_query()),
            NotDnsResponse,
        ),
        case(
            "tcp segment shorter than its length prefix",
            tcp4(53, &tcp_dns(&msg, msg.len() as u16 + 10)),
            TcpNotWholeMessage,
        ),
        case("ipv4 ihl < 5", ihl4, Malformed),
        case("ipv4 header with version 6", wrong_version, Malformed),
        case(
            "ipv6 extension header past the end",
            ext_past_end,
            Malformed,
        ),
        case("tcp data offset < 5", doff4, Malformed),
        case("ipv4 header cut short", v4[..ETH + 10].to_vec(), Malformed),
        FrameCase {
            name: "ip header claims more than the frame holds",
            frame: v4[..ETH + IP4 + 8 + 20].to_vec(),
            kernel: Malformed,
            reader: Some((
                captured(Udp, true, 0),
                "a capture file's snaplen cuts frames, a NIC never does: the reader keeps \
                 what the frame holds, flagged truncated",
            )),
        },
    ]
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use pcap_file::DataLink;

    use super::*;
    use crate::capture_file::decode_frame;

    /// The file reader's half of the spec (the kernel's half is in
    /// `tests/tests/xdp_test_run.rs`).
    #[test]
    fn the_file_reader_walks_frames_by_the_spec() {
        let mut wrong = Vec::new();
        for c in cases() {
            let got = match decode_frame(DataLink::ETHERNET, &c.frame, UNIX_EPOCH, &SPEC_PORTS) {
                Ok(Some(d)) => captured(d.transport, d.truncated, d.vlan.len()),
                Ok(None) => Outcome::NotOurs,
                Err(e) => Outcome::of_reader_error(e).unwrap_or(Outcome::NotOurs),
            };
            if got != c.reader_outcome() {
                wrong.push(format!(
                    "{}: got {got:?}, spec {:?}",
                    c.name,
                    c.reader_outcome()
                ));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
