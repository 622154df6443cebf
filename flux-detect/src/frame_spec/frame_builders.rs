//! Frame builders: crafted Ethernet frames for the frame-walk spec, the BPF_PROG_TEST_RUN
//! tests and the benchmarks (built with etherparse; the malformed ones are edited by hand).

use etherparse::PacketBuilder;

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
pub const SRC4: [u8; 4] = [192, 0, 2, 53];
pub const DST4: [u8; 4] = [192, 0, 2, 1];
pub const SRC6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53,
];
pub const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// A valid DNS response for `x.test` A, padded with A records to at least `min_len` bytes.
pub fn dns_response(min_len: usize) -> Vec<u8> {
    dns_response_for("x.test", min_len)
}

/// A valid DNS response for `name` A (the case is kept), padded with A records to at least
/// `min_len` bytes.
pub fn dns_response_for(name: &str, min_len: usize) -> Vec<u8> {
    let mut m = vec![0xbe, 0xef, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut wire = [0u8; flux_common::MAX_NAME_WIRE];
    let n = flux_common::to_wire(name, &mut wire).expect("valid name");
    m.extend_from_slice(&wire[..n]);
    m.extend_from_slice(&[0, 1, 0, 1]);
    let mut n: u16 = 0;
    while m.len() < min_len {
        m.extend_from_slice(&[
            0xc0,
            12,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            60,
            0,
            4,
            198,
            51,
            (n >> 8) as u8,
            n as u8,
        ]);
        n += 1;
    }
    m[6..8].copy_from_slice(&n.to_be_bytes());
    m
}

/// One's-complement sum of `data` as big-endian 16-bit words (odd length zero-padded).
fn ones_sum(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Whether the IPv4 header at `off` has a valid checksum.
pub fn ipv4_checksum_ok(f: &[u8], off: usize) -> bool {
    let ihl = ((f[off] & 0x0f) as usize) * 4;
    fold(ones_sum(&f[off..off + ihl], 0)) == 0xffff
}

/// Whether the UDP datagram at `l4` (inside the IP header at `l3`) has a valid checksum over
/// the pseudo-header; a zero IPv4 checksum ("none") counts as valid.
pub fn udp_checksum_ok(f: &[u8], l3: usize, l4: usize) -> bool {
    let udp_len = usize::from(u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]));
    let seg = &f[l4..l4 + udp_len];
    let mut sum = ones_sum(seg, 0);
    if f[l3] >> 4 == 4 {
        if seg[6] == 0 && seg[7] == 0 {
            return true;
        }
        sum = ones_sum(&f[l3 + 12..l3 + 20], sum);
    } else {
        sum = ones_sum(&f[l3 + 8..l3 + 40], sum);
    }
    sum += 17 + udp_len as u32;
    fold(sum) == 0xffff
}

/// A DNS query (QR=0) for `x.test`.
pub fn dns_query() -> Vec<u8> {
    let mut m = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(b"\x01x\x04test\x00\x00\x01\x00\x01");
    m
}

fn build(b: etherparse::PacketBuilderStep<etherparse::UdpHeader>, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut f, payload).expect("build frame");
    f
}

/// UDP over IPv4 from `src:sport` to `dst:dport`.
pub fn udp4_between(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv4(src, dst, 64)
            .udp(sport, dport),
        payload,
    )
}

/// UDP over IPv6 from `src:sport` to `dst:dport`.
pub fn udp6_between(
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv6(src, dst, 64)
            .udp(sport, dport),
        payload,
    )
}

/// TCP over IPv4 from `src:sport` to `dst:dport`, PSH+ACK.
pub fn tcp4_between(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 65535)
        .psh()
        .ack(1);
    let mut f = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut f, payload).expect("build frame");
    f
}

pub fn udp4(sport: u16, payload: &[u8]) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv4(SRC4, DST4, 64)
            .udp(sport, 40000),
        payload,
    )
}

pub fn udp6(sport: u16, payload: &[u8]) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv6(SRC6, DST6, 64)
            .udp(sport, 40000),
        payload,
    )
}

pub fn tcp4(sport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(SRC4, DST4, 64)
        .tcp(sport, 40000, 1, 65535)
        .psh()
        .ack(1);
    let mut f = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut f, payload).expect("build frame");
    f
}

/// DNS over TCP: the 2-byte length prefix, then the message.
pub fn tcp_dns(msg: &[u8], claimed_len: u16) -> Vec<u8> {
    let mut p = claimed_len.to_be_bytes().to_vec();
    p.extend_from_slice(msg);
    p
}

/// Offsets in an untagged Ethernet + IPv4 frame.
pub const ETH: usize = 14;
pub const IP4: usize = 20;
pub const IP6: usize = 40;

/// Recomputes the IPv4 header checksum (header starting at `off`).
pub fn fix_ipv4_checksum(f: &mut [u8], off: usize) {
    let ihl = ((f[off] & 0x0f) as usize) * 4;
    f[off + 10] = 0;
    f[off + 11] = 0;
    let c = !fold(ones_sum(&f[off..off + ihl], 0));
    f[off + 10..off + 12].copy_from_slice(&c.to_be_bytes());
}

/// Inserts `words` 4-byte IPv4 option words (NOPs ending in EOL) after the base header.
pub fn with_ipv4_options(frame: &[u8], words: usize) -> Vec<u8> {
    let mut f = frame[..ETH + IP4].to_vec();
    let mut opts = vec![1u8; words * 4];
    if let Some(last) = opts.last_mut() {
        *last = 0;
    }
    f.extend_from_slice(&opts);
    f.extend_from_slice(&frame[ETH + IP4..]);
    f[ETH] = 0x40 | (5 + words as u8);
    let tot = u16::from_be_bytes([f[ETH + 2], f[ETH + 3]]) + (words * 4) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&tot.to_be_bytes());
    fix_ipv4_checksum(&mut f, ETH);
    f
}

/// Inserts IPv6 extension headers (each `(type, bytes)`) between the IPv6 header and UDP.
pub fn with_ipv6_ext(frame: &[u8], exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut f = frame[..ETH + IP6].to_vec();
    let l4 = &frame[ETH + IP6..];
    let first_next = f[ETH + 6];
    let mut chain = Vec::new();
    for (i, (ty, body)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(first_next, |e| e.0);
        let mut h = body.clone();
        h[0] = next;
        chain.push((*ty, h));
    }
    if let Some((ty, _)) = chain.first() {
        f[ETH + 6] = *ty;
    }
    let mut added = 0;
    for (_, h) in &chain {
        f.extend_from_slice(h);
        added += h.len();
    }
    f.extend_from_slice(l4);
    let pl = u16::from_be_bytes([f[ETH + 4], f[ETH + 5]]) + added as u16;
    f[ETH + 4..ETH + 6].copy_from_slice(&pl.to_be_bytes());
    f
}

/// An 8-byte options header (Hop-by-Hop or Destination Options), next-header filled in later.
pub fn ipv6_opts_hdr() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0] // PadN covering the rest
}

/// An IPv6 Fragment header with the given offset (8-octet units) and M flag.
pub fn ipv6_frag_hdr(offset: u16, more: bool) -> Vec<u8> {
    let fo = (offset << 3) | u16::from(more);
    let mut h = vec![0, 0];
    h.extend_from_slice(&fo.to_be_bytes());
    h.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    h
}

/// Adds 802.1Q/802.1ad tags (outermost first) to an untagged frame.
pub fn with_vlans(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// A DNS response for `name` A with one A record per address (TTL `ttl`).
pub fn dns_answer(name: &str, addrs: &[[u8; 4]], ttl: u32) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
    m[6..8].copy_from_slice(&(addrs.len() as u16).to_be_bytes());
    let mut wire = [0u8; flux_common::MAX_NAME_WIRE];
    let n = flux_common::to_wire(name, &mut wire).expect("valid name");
    m.extend_from_slice(&wire[..n]);
    m.extend_from_slice(&[0, 1, 0, 1]);
    for a in addrs {
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&[0, 4]);
        m.extend_from_slice(a);
    }
    m
}
