//! Unit tests of the capture-file reader: pcap and pcapng containers built byte by byte,
//! frames built with etherparse, every link type, VLAN, IPv4/IPv6, fragments, TCP, snaplen
//! cuts, garbage and corrupt files. Touches temporary files only.

use std::{
    fs,
    io::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, UNIX_EPOCH},
};

use etherparse::{LinuxSllPacketType, PacketBuilder};
use flux_common::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP, IPV6_DEST_OPTS, IPV6_FRAGMENT,
};

use super::{
    capture_formats::{PCAPNG_EPB, PCAPNG_IDB, PCAPNG_SHB, PCAPNG_SPB},
    frame_walk::be16,
    *,
};

// ---- building blocks -------------------------------------------------------------------

/// A DNS response: one question, one A answer.
fn response(id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    m.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    m
}

fn query(id: u16) -> Vec<u8> {
    let mut m = response(id);
    m[2] = 0x01;
    m[3] = 0x00;
    m
}

/// A response padded with a TXT-ish tail to `len` bytes (the parse here only reads headers).
fn big_response(len: usize) -> Vec<u8> {
    let mut m = response(7);
    m.resize(len, 0x61);
    m
}

const SRC4: [u8; 4] = [192, 0, 2, 53];
const DST4: [u8; 4] = [198, 51, 100, 7];
const SRC6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53,
];
const DST6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07,
];

fn udp4(sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(SRC4, DST4, 64)
        .udp(sport, 40000)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn udp6(sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(SRC6, DST6, 64)
        .udp(sport, 40000)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn tcp4(sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(SRC4, DST4, 64)
        .tcp(sport, 40000, 1, 65535)
        .ack(1)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// Ethernet around an IP packet, with the given (TPID, VLAN id) tags.
fn eth_tagged(tags: &[(u16, u16)], ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for (tpid, id) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    let et: u16 = if ip[0] >> 4 == 6 {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    };
    f.extend_from_slice(&et.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

fn eth(ip: &[u8]) -> Vec<u8> {
    eth_tagged(&[], ip)
}

fn tcp_dns(msgs: &[&[u8]]) -> Vec<u8> {
    let mut p = Vec::new();
    for m in msgs {
        p.extend_from_slice(&(m.len() as u16).to_be_bytes());
        p.extend_from_slice(m);
    }
    p
}

// ---- files ---------------------------------------------------------------------------

struct Tmp(PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn tmp(name: &str, bytes: &[u8]) -> Tmp {
    static N: AtomicU64 = AtomicU64::new(0);
    let p = std::env::temp_dir().join(format!(
        "flux-capfile-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&p, bytes).unwrap();
    Tmp(p)
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

struct Rec {
    ts: Duration,
    data: Vec<u8>,
    orig: u32,
}

fn rec(secs: u64, data: Vec<u8>) -> Rec {
    let orig = data.len() as u32;
    Rec {
        ts: Duration::from_secs(secs),
        data,
        orig,
    }
}

fn pcap(link: u32, nano: bool, big: bool, recs: &[Rec]) -> Vec<u8> {
    let w32 = |v: &mut Vec<u8>, x: u32| {
        v.extend_from_slice(&if big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let w16 = |v: &mut Vec<u8>, x: u16| {
        v.extend_from_slice(&if big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let mut v = Vec::new();
    w32(&mut v, if nano { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    w16(&mut v, 2);
    w16(&mut v, 4);
    w32(&mut v, 0);
    w32(&mut v, 0);
    w32(&mut v, 65535);
    w32(&mut v, link);
    for r in recs {
        w32(&mut v, r.ts.as_secs() as u32);
        let frac = r.ts.subsec_nanos();
        w32(&mut v, if nano { frac } else { frac / 1000 });
        w32(&mut v, r.data.len() as u32);
        w32(&mut v, r.orig);
        v.extend_from_slice(&r.data);
    }
    v
}

/// pcapng blocks, in either byte order.
struct Ng {
    out: Vec<u8>,
    big: bool,
}

impl Ng {
    fn new(big: bool) -> Self {
        let mut ng = Ng {
            out: Vec::new(),
            big,
        };
        ng.shb();
        ng
    }

    fn u16(&self, x: u16) -> [u8; 2] {
        if self.big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        }
    }

    fn u32(&self, x: u32) -> [u8; 4] {
        if self.big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        }
    }

    fn block(&mut self, ty: u32, body: &[u8]) {
        let pad = (4 - body.len() % 4) % 4;
        let len = (12 + body.len() + pad) as u32;
        let (t, l) = (self.u32(ty), self.u32(len));
        self.out.extend_from_slice(&t);
        self.out.extend_from_slice(&l);
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(&[0, 0, 0][..pad]);
        self.out.extend_from_slice(&l);
    }

    fn shb(&mut self) {
        let mut b = self.u32(0x1a2b_3c4d).to_vec();
        b.extend_from_slice(&self.u16(1));
        b.extend_from_slice(&self.u16(0));
        b.extend_from_slice(&[0xff; 8]);
        self.block(PCAPNG_SHB, &b);
    }

    fn idb(&mut self, link: u16, snaplen: u32, tsresol: Option<u8>) {
        let mut b = self.u16(link).to_vec();
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.u32(snaplen));
        if let Some(r) = tsresol {
            b.extend_from_slice(&self.u16(9));
            b.extend_from_slice(&self.u16(1));
            b.extend_from_slice(&[r, 0, 0, 0]);
            b.extend_from_slice(&[0, 0, 0, 0]);
        }
        self.block(PCAPNG_IDB, &b);
    }

    fn epb(&mut self, iface: u32, ts: u64, data: &[u8]) {
        let mut b = self.u32(iface).to_vec();
        b.extend_from_slice(&self.u32((ts >> 32) as u32));
        b.extend_from_slice(&self.u32(ts as u32));
        b.extend_from_slice(&self.u32(data.len() as u32));
        b.extend_from_slice(&self.u32(data.len() as u32));
        b.extend_from_slice(data);
        b.resize(b.len() + (4 - data.len() % 4) % 4, 0);
        self.block(PCAPNG_EPB, &b);
    }

    fn spb(&mut self, data: &[u8]) {
        let mut b = self.u32(data.len() as u32).to_vec();
        b.extend_from_slice(data);
        self.block(PCAPNG_SPB, &b);
    }
}

fn read(t: &Tmp) -> (Result<(), CapError>, Vec<CapturedDns>, ReadStats) {
    let mut stats = ReadStats::default();
    let mut out = Vec::new();
    let r = read_file(&t.0, &DEFAULT_PORTS, &mut stats, |d| out.push(d));
    (r, out, stats)
}

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

fn decode(link: u32, frame: &[u8]) -> Result<Option<CapturedDns>, FrameError> {
    decode_frame(DataLink::from(link), frame, UNIX_EPOCH, &DEFAULT_PORTS)
}

// ---- tests -----------------------------------------------------------------------------

#[test]
fn pcap_ethernet_udp_response() {
    let msg = response(0x1234);
    let recs = [
        Rec {
            ts: Duration::new(1_700_000_000, 123_456_000),
            data: eth(&udp4(53, &msg)),
            orig: 0,
        },
        rec(1, eth(&udp4(40000, &msg))), // not from a DNS port
        rec(2, eth(&udp4(53, &query(1)))),
    ]
    .map(|mut r| {
        r.orig = r.data.len() as u32;
        r
    });
    let t = tmp("eth.pcap", &pcap(1, false, false, &recs));
    let (r, out, stats) = read(&t);
    r.unwrap();
    assert_eq!(out.len(), 1);
    let d = &out[0];
    assert_eq!(d.ts, at(1_700_000_000, 123_456_000));
    assert_eq!(d.src, IpAddr::from(SRC4));
    assert_eq!(d.dst, IpAddr::from(DST4));
    assert_eq!((d.sport, d.dport), (53, 40000));
    assert_eq!(d.transport, Transport::Udp);
    assert!(d.vlan.is_empty());
    assert_eq!(&d.payload[..], &msg[..]);
    assert!(!d.truncated);
    assert_eq!(
        stats,
        ReadStats {
            files: 1,
            frames: 3,
            dns_responses: 1,
            not_dns: 1,
            ..Default::default()
        }
    );
}

#[test]
fn pcap_nanosecond_big_endian() {
    let mut r = rec(0, eth(&udp6(5353, &response(1))));
    r.ts = Duration::new(1_600_000_000, 987_654_321);
    let t = tmp("ns.pcap", &pcap(1, true, true, &[r]));
    let (res, out, _) = read(&t);
    res.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ts, at(1_600_000_000, 987_654_321));
    assert_eq!(out[0].src, IpAddr::from(SRC6));
    assert_eq!(out[0].sport, 5353);
}

#[test]
fn gzip_is_recognised_by_magic_not_name() {
    let file = pcap(1, false, false, &[rec(5, eth(&udp4(53, &response(9))))]);
    for (name, bytes) in [
        ("a.pcap", gz(&file)),
        ("b.pcap.gz", gz(&file)),
        ("c.gz", file.clone()),
    ] {
        let t = tmp(name, &bytes);
        let (r, out, stats) = read(&t);
        r.unwrap();
        assert_eq!(out.len(), 1, "{name}");
        assert_eq!(stats.frames, 1, "{name}");
    }
    // Concatenated gzip members are one stream.
    let (a, b) = file.split_at(40);
    let t = tmp("multi.gz", &[gz(a), gz(b)].concat());
    assert_eq!(read(&t).1.len(), 1);
}

#[test]
fn every_supported_link_type() {
    let msg = response(3);
    let ip4 = udp4(53, &msg);
    let ip6 = udp6(53, &msg);
    let mut sll = Vec::new();
    PacketBuilder::linux_sll(LinuxSllPacketType::HOST, 6, [2, 0, 0, 0, 0, 1, 0, 0])
        .ipv4(SRC4, DST4, 64)
        .udp(53, 40000)
        .write(&mut sll, &msg)
        .unwrap();
    let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6];
    sll2.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
    sll2.extend_from_slice(&ip4);
    let mut sll2_v6 = sll2[..20].to_vec();
    sll2_v6[..2].copy_from_slice(&[0x86, 0xdd]);
    sll2_v6.extend_from_slice(&ip6);
    let with = |hdr: [u8; 4], ip: &[u8]| [&hdr[..], ip].concat();
    let cases: Vec<(u32, Vec<u8>, bool)> = vec![
        (1, eth(&ip4), false),
        (1, eth(&ip6), true),
        (113, sll, false),
        (276, sll2, false),
        (276, sll2_v6, true),
        (101, ip4.clone(), false),
        (101, ip6.clone(), true),
        (12, ip4.clone(), false),
        (228, ip4.clone(), false),
        (229, ip6.clone(), true),
        (0, with(2u32.to_le_bytes(), &ip4), false),
        (0, with(2u32.to_be_bytes(), &ip4), false),
        (0, with(30u32.to_le_bytes(), &ip6), true),
        (0, with(24u32.to_be_bytes(), &ip6), true),
        (108, with(2u32.to_be_bytes(), &ip4), false),
        (108, with(28u32.to_be_bytes(), &ip6), true),
    ];
    for (link, frame, v6) in &cases {
        let d = decode(*link, frame)
            .unwrap_or_else(|e| panic!("link {link}: {e}"))
            .unwrap_or_else(|| panic!("link {link}: nothing"));
        assert_eq!(&d.payload[..], &msg[..], "link {link}");
        assert_eq!(d.src.is_ipv6(), *v6, "link {link}");
        assert!(!d.truncated);
        // And through a file of that link type.
        let t = tmp(
            "link.pcap",
            &pcap(*link, false, false, &[rec(1, frame.clone())]),
        );
        let (r, out, _) = read(&t);
        r.unwrap();
        assert_eq!(out.len(), 1, "link {link} from a file");
    }
    // Wrong IP version for the link type, unknown family, unsupported link.
    assert!(matches!(decode(228, &ip6), Err(FrameError::Malformed(_))));
    assert!(matches!(decode(229, &ip4), Err(FrameError::Malformed(_))));
    assert_eq!(decode(0, &with(7u32.to_le_bytes(), &ip4)), Ok(None));
    assert_eq!(decode(105, &ip4), Err(FrameError::UnsupportedLink(105)));
    let t = tmp(
        "wifi.pcap",
        &pcap(105, false, false, &[rec(1, ip4.clone()), rec(2, ip4)]),
    );
    let (r, out, stats) = read(&t);
    r.unwrap();
    assert!(out.is_empty());
    assert_eq!((stats.frames, stats.unsupported_link), (2, 2));
}

#[test]
fn vlan_tags() {
    let msg = response(4);
    let ip = udp4(53, &msg);
    // etherparse's own encoding of one 802.1Q tag.
    let mut one = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .single_vlan(etherparse::VlanId::try_new(11).unwrap())
        .ipv4(SRC4, DST4, 64)
        .udp(53, 40000)
        .write(&mut one, &msg)
        .unwrap();
    assert_eq!(decode(1, &one).unwrap().unwrap().vlan, vec![11]);
    let qinq = eth_tagged(&[(ETH_P_8021AD, 0x2064), (ETH_P_8021Q, 0x00c8)], &ip);
    let d = decode(1, &qinq).unwrap().unwrap();
    assert_eq!(d.vlan, vec![100, 200]); // priority bits dropped
    assert_eq!(&d.payload[..], &msg[..]);
    // A third tag is more than the kernel captures: counted, as the kernel counts it.
    let three = eth_tagged(
        &[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)],
        &ip,
    );
    assert_eq!(decode(1, &three), Err(FrameError::VlanTooDeep));
}

#[test]
fn ipv4_options_and_ipv6_extension_headers() {
    let msg = response(5);
    // IPv4 with 4 bytes of options (NOP NOP NOP EOL).
    let mut ip = udp4(53, &msg);
    ip[0] = 0x46;
    let tot = be16(&ip, 2) + 4;
    ip[2..4].copy_from_slice(&tot.to_be_bytes());
    ip.splice(20..20, [1, 1, 1, 0]);
    assert_eq!(&decode(101, &ip).unwrap().unwrap().payload[..], &msg[..]);

    // IPv6 with n Destination Options headers before UDP.
    let v6_ext = |n: usize, last: &[u8; 8]| {
        let mut ip = udp6(53, &msg);
        let mut exts = Vec::new();
        for i in 0..n {
            let next = if i + 1 == n { last[0] } else { IPV6_DEST_OPTS };
            let mut h = *last;
            h[0] = next;
            exts.extend_from_slice(&h);
        }
        if n > 0 {
            ip[6] = IPV6_DEST_OPTS;
        }
        let pl = be16(&ip, 4) + exts.len() as u16;
        ip[4..6].copy_from_slice(&pl.to_be_bytes());
        ip.splice(40..40, exts);
        ip
    };
    let padn = [IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0];
    // Up to the limit inclusive: walked; one more: too deep.
    for n in 0..=MAX_IPV6_EXT_HEADERS {
        let d = decode(101, &v6_ext(n, &padn)).unwrap().unwrap();
        assert_eq!(&d.payload[..], &msg[..], "{n} extension headers");
    }
    assert_eq!(
        decode(101, &v6_ext(MAX_IPV6_EXT_HEADERS + 1, &padn)),
        Err(FrameError::Ipv6ExtTooDeep)
    );
    // A Fragment header: first fragment (M=1, offset 0) and a later one.
    let mut first = v6_ext(1, &padn);
    first[6] = IPV6_FRAGMENT;
    first[40..48].copy_from_slice(&[IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 9]);
    let d = decode(101, &first).unwrap().unwrap();
    assert!(d.truncated);
    first[42..44].copy_from_slice(&(185u16 << 3).to_be_bytes());
    assert_eq!(decode(101, &first), Err(FrameError::NonFirstFragment));
}

#[test]
fn tcp_segments() {
    let (a, b) = (response(1), response(2));
    let two = tcp4(53, &tcp_dns(&[&a, &b]));
    let mut three = tcp_dns(&[&a, &b]);
    three.extend_from_slice(&[0x01, 0x00]); // a 256-byte message...
    three.extend_from_slice(&response(3)[..20]); // ...of which 20 bytes are here
    let partial = tcp4(53, &three[..30]); // the first message is not whole
    let mut query_in_stream = tcp_dns(&[&a]);
    query_in_stream.extend_from_slice(&tcp_dns(&[&query(9)]));
    let recs = [
        rec(1, eth(&two)),
        rec(2, eth(&tcp4(53, &three))),
        rec(3, eth(&partial)),
        rec(4, eth(&tcp4(53, &[]))), // a bare ACK
        rec(5, eth(&tcp4(53, &query_in_stream))),
        rec(6, eth(&tcp4(53, &tcp_dns(&[&a[..8], &a[..8]])))), // shorter than a header
    ];
    let t = tmp("tcp.pcap", &pcap(1, false, false, &recs));
    let (r, out, stats) = read(&t);
    r.unwrap();
    let ids: Vec<u16> = out.iter().map(|d| be16(&d.payload, 0)).collect();
    assert_eq!(ids, [1, 2, 1, 2, 1]);
    assert!(
        out.iter()
            .all(|d| d.transport == Transport::Tcp && !d.truncated)
    );
    assert_eq!(&out[0].payload[..], &a[..]);
    assert_eq!(stats.tcp_partial, 2); // the tail of frame 2, all of frame 3
    assert_eq!(stats.not_dns, 2); // the query after a response, the 8-byte "message"
    assert_eq!(stats.dns_responses, 5);
    // decode_frame yields the first message of a segment.
    assert_eq!(decode(1, &eth(&two)).unwrap().unwrap().payload, a);
    assert_eq!(decode(1, &eth(&partial)), Err(FrameError::TcpPartial));
}

#[test]
fn ipv4_fragments() {
    let msg = big_response(3000);
    let whole = udp4(53, &msg);
    // First fragment: MF set, 1480 bytes of the UDP datagram.
    let mut first = whole[..20 + 1480].to_vec();
    first[2..4].copy_from_slice(&1500u16.to_be_bytes());
    first[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
    // A later one: offset 1480/8, no UDP header.
    let mut later = whole[..20].to_vec();
    later.extend_from_slice(&whole[20 + 1480..20 + 2960]);
    later[2..4].copy_from_slice(&1500u16.to_be_bytes());
    later[6..8].copy_from_slice(&(0x2000u16 | 185).to_be_bytes());
    let t = tmp(
        "frag.pcap",
        &pcap(1, false, false, &[rec(1, eth(&first)), rec(2, eth(&later))]),
    );
    let (r, out, stats) = read(&t);
    r.unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].truncated);
    assert_eq!(&out[0].payload[..], &msg[..1472]);
    assert_eq!(stats.non_first_fragments, 1);
    assert_eq!(stats.truncated_responses, 1);
}

#[test]
fn snaplen_cut_frames() {
    let msg = big_response(400);
    let frame = eth(&udp4(53, &msg));
    let cut_at = |n: usize| Rec {
        ts: Duration::from_secs(1),
        data: frame[..n].to_vec(),
        orig: frame.len() as u32,
    };
    // Frames the file says are whole, but whose IP header claims more than they hold: taken
    // as cut all the same (a tool that did not record the wire length).
    let mut lying = frame.clone();
    let tot = be16(&lying, 16) + 100;
    lying[16..18].copy_from_slice(&tot.to_be_bytes());
    let short_whole = frame[..14 + 20 + 8 + 50].to_vec();
    let recs = [
        cut_at(14 + 20 + 8 + 30),          // 30 bytes of the message
        cut_at(14 + 20 + 8 + 5),           // not even a DNS header
        cut_at(14 + 10),                   // not even an IP header
        rec(2, lying.clone()),             // the UDP datagram is all there
        rec(3, short_whole),               // 50 bytes of it
        rec(4, frame[..14 + 10].to_vec()), // whole, and no IP header: malformed
    ];
    let t = tmp("snap.pcap", &pcap(1, false, false, &recs));
    let (r, out, stats) = read(&t);
    r.unwrap();
    let got: Vec<(usize, bool)> = out.iter().map(|d| (d.payload.len(), d.truncated)).collect();
    assert_eq!(got, [(30, true), (400, false), (50, true)]);
    assert_eq!(&out[0].payload[..], &msg[..30]);
    assert_eq!(stats.snaplen_cut, 2);
    assert_eq!(stats.malformed_frames, 1);
    // Without a wire length, decode_frame takes a short frame as cut.
    let d = decode(1, &frame[..14 + 20 + 8 + 30]).unwrap().unwrap();
    assert!(d.truncated);
    let d = decode(1, &lying).unwrap().unwrap();
    assert!(!d.truncated && d.payload == msg);
    // cap_to: what the ring buffer would carry.
    let mut d = decode(1, &frame).unwrap().unwrap();
    assert!(!d.truncated);
    d.cap_to(100);
    assert!(d.truncated && d.payload.len() == 100);
}

/// Deterministic pseudo-random bytes.
fn lcg(seed: &mut u64) -> u8 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 33) as u8
}

#[test]
fn garbage_never_panics() {
    let mut seed = 42;
    let links = [1u32, 113, 276, 101, 228, 229, 0, 108];
    for link in links {
        let mut recs = Vec::new();
        for i in 0..500 {
            let len = i % 120;
            let mut f: Vec<u8> = (0..len).map(|_| lcg(&mut seed)).collect();
            // Steer some of them into the IP/UDP paths.
            if i % 3 == 0 && f.len() > 40 {
                f[..14].copy_from_slice(&eth(&[0x45])[..14]);
            }
            let _ = decode(link, &f);
            recs.push(rec(1, f));
        }
        let t = tmp("garbage.pcap", &pcap(link, false, false, &recs));
        let (r, _, stats) = read(&t);
        r.unwrap();
        assert_eq!(stats.frames, 500);
        assert!(stats.malformed_frames > 0, "link {link}");
    }
    // Every truncation and every byte clobbered, of valid frames.
    let msg = response(6);
    let frames = [
        eth(&udp4(53, &msg)),
        eth(&udp6(53, &msg)),
        eth_tagged(&[(ETH_P_8021Q, 5)], &tcp4(53, &tcp_dns(&[&msg, &msg]))),
    ];
    for f in &frames {
        for n in 0..=f.len() {
            let _ = decode(1, &f[..n]);
            let _ = decode_frame_each(
                DataLink::ETHERNET,
                &f[..n],
                Some(f.len() as u32),
                UNIX_EPOCH,
                &DEFAULT_PORTS,
                |_| {},
            );
        }
        for i in 0..f.len() {
            for v in [0x00, 0xff, 0x80, 0x0f] {
                let mut g = f.clone();
                g[i] = v;
                let _ = decode(1, &g);
            }
        }
    }
}

#[test]
fn corrupt_and_truncated_files() {
    let good = pcap(1, false, false, &[rec(1, eth(&udp4(53, &response(1))))]);
    // A record header claiming 2 GB after one good record: keep what was read.
    let mut bad_rec = good.clone();
    bad_rec.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0x80]);
    bad_rec.extend_from_slice(&[0u8; 64]);
    let t = tmp("badrec.pcap", &bad_rec);
    let (r, out, stats) = read(&t);
    r.unwrap();
    assert_eq!((out.len(), stats.truncated_files), (1, 1));
    // The file ends mid-record.
    let mut cut = good.clone();
    cut.extend_from_slice(&good[24..good.len() - 10]);
    let t = tmp("cut.pcap.gz", &gz(&cut));
    let (r, out, stats) = read(&t);
    r.unwrap();
    assert_eq!((out.len(), stats.truncated_files), (1, 1));
    // Nothing readable at all.
    let t = tmp("nothing.pcap", &bad_rec[..24 + 16 + 4]);
    assert!(matches!(read(&t).0, Err(CapError::Corrupt { .. })));
    let t = tmp("header.pcap", &good[..10]);
    assert!(matches!(read(&t).0, Err(CapError::Corrupt { .. })));
    // pcapng: a block whose trailing length disagrees, after one good packet.
    let mut ng = Ng::new(false);
    ng.idb(1, 0, None);
    ng.epb(0, 1, &eth(&udp4(53, &response(2))));
    let mut bytes = ng.out.clone();
    let mut bad = Ng {
        out: Vec::new(),
        big: false,
    };
    bad.epb(0, 2, &eth(&udp4(53, &response(3))));
    let n = bad.out.len();
    bad.out[n - 4] ^= 0x40;
    bytes.extend_from_slice(&bad.out);
    let t = tmp("bad.pcapng", &bytes);
    let (r, out, stats) = read(&t);
    r.unwrap();
    assert_eq!((out.len(), stats.truncated_files), (1, 1));
    // A corrupt gzip stream.
    let mut z = gz(&good);
    let n = z.len();
    for b in &mut z[10..n - 8] {
        *b = !*b;
    }
    let t = tmp("bad.gz", &z);
    assert!(matches!(read(&t).0, Err(CapError::Corrupt { .. })));
}

#[test]
fn not_a_capture() {
    for (name, bytes) in [
        ("text.pcap", b"hello, this is not a capture\n".to_vec()),
        ("empty.pcap", Vec::new()),
        ("ab.pcap", b"ab".to_vec()),
        ("text.gz", gz(b"not a capture either")),
    ] {
        let t = tmp(name, &bytes);
        assert!(
            matches!(read(&t).0, Err(CapError::NotACapture { .. })),
            "{name}"
        );
    }
    let mut stats = ReadStats::default();
    let missing = std::env::temp_dir().join("flux-capfile-does-not-exist.pcap");
    let e = read_file(&missing, &DEFAULT_PORTS, &mut stats, |_| {}).unwrap_err();
    assert!(matches!(e, CapError::Io { .. }));
    assert!(e.to_string().contains("flux-capfile-does-not-exist"));
}

#[test]
fn pcapng_interfaces_blocks_and_timestamps() {
    let msg = response(8);
    let mut ng = Ng::new(false);
    ng.idb(1, 0, None); // 0: Ethernet, microseconds
    ng.idb(228, 0, Some(9)); // 1: raw IPv4, nanoseconds
    ng.idb(105, 0, None); // 2: 802.11, unsupported
    ng.idb(101, 0, Some(0x80 | 10)); // 3: raw IP, 1/1024 s
    ng.epb(0, 1_700_000_000_123_456, &eth(&udp4(53, &msg)));
    ng.block(4, &[0, 0, 0, 0]); // a Name Resolution Block: skipped
    ng.block(0x4000_0bad, &[1, 2, 3, 4, 5, 6, 7, 8]); // unknown: skipped
    ng.epb(1, 1_700_000_001_000_000_001, &udp4(53, &msg));
    ng.epb(2, 1, &[0u8; 40]);
    ng.epb(3, 1024 * 1_700_000_002 + 512, &udp6(53, &msg));
    ng.spb(&eth(&udp4(5355, &msg))); // interface 0, no timestamp
    ng.epb(7, 1, &eth(&udp4(53, &msg))); // no such interface
    // A second section, big-endian, with its own interfaces.
    let mut second = Ng::new(true);
    second.idb(113, 0, Some(3));
    let mut sll = Vec::new();
    PacketBuilder::linux_sll(LinuxSllPacketType::HOST, 6, [0; 8])
        .ipv4(SRC4, DST4, 64)
        .udp(53, 40000)
        .write(&mut sll, &msg)
        .unwrap();
    second.epb(0, 1_700_000_003_250, &sll);
    let bytes = [ng.out, second.out].concat();
    let t = tmp("multi.pcapng", &bytes);
    let (r, out, stats) = read(&t);
    r.unwrap();
    let ts: Vec<SystemTime> = out.iter().map(|d| d.ts).collect();
    assert_eq!(
        ts,
        [
            at(1_700_000_000, 123_456_000),
            at(1_700_000_001, 1),
            at(1_700_000_002, 500_000_000),
            at(1_700_000_002, 500_000_000), // the SPB: the last timestamp
            at(1_700_000_003, 250_000_000),
        ]
    );
    assert_eq!(out[3].sport, 5355);
    assert!(out.iter().all(|d| d.payload == msg));
    assert_eq!(stats.frames, 7);
    assert_eq!(stats.unsupported_link, 1);
    assert_eq!(stats.malformed_frames, 1);
    assert_eq!(stats.files, 1);
    // gzip-compressed pcapng too.
    let t = tmp("multi.pcapng.gz", &gz(&bytes));
    assert_eq!(read(&t).1, out);
}

#[test]
fn custom_ports() {
    let f = eth(&udp4(8053, &response(1)));
    let t = tmp("ports.pcap", &pcap(1, false, false, &[rec(1, f.clone())]));
    let mut stats = ReadStats::default();
    let mut n = 0;
    read_file(&t.0, &[8053], &mut stats, |_| n += 1).unwrap();
    assert_eq!(n, 1);
    assert_eq!(decode(1, &f), Ok(None));
}

/// Throughput of `read_file` on a large synthetic file: run with
/// `cargo test -p flux-agent --release --lib capfile -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run in release mode"]
fn throughput() {
    const N: usize = 1_000_000;
    let frames = [
        eth(&udp4(53, &response(1))),
        eth_tagged(&[(ETH_P_8021Q, 10)], &udp6(53, &big_response(300))),
        eth(&tcp4(53, &tcp_dns(&[&response(2)]))),
        eth(&udp4(53, &big_response(120))),
    ];
    let mut v = pcap(1, false, false, &[]);
    for i in 0..N {
        let f = &frames[i % frames.len()];
        v.extend_from_slice(&(i as u32 / 1000).to_le_bytes());
        v.extend_from_slice(&(i as u32 % 1000).to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(f);
    }
    for (name, bytes) in [("bench.pcap", v.clone()), ("bench.pcap.gz", gz(&v))] {
        let t = tmp(name, &bytes);
        let mut stats = ReadStats::default();
        let mut total = 0usize;
        let start = std::time::Instant::now();
        read_file(&t.0, &DEFAULT_PORTS, &mut stats, |d| {
            total += d.payload.len()
        })
        .unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(stats.dns_responses, N as u64);
        eprintln!(
            "{name}: {} MB, {N} frames in {secs:.3} s: {:.0} frames/s ({total} DNS bytes)",
            bytes.len() / 1_000_000,
            N as f64 / secs
        );
    }
}
