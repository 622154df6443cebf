//! A minimal pcap writer: DNS responses as Ethernet/IPv4 (or IPv6)/UDP frames from a resolver
//! (port 53) to a client, time-sorted, microsecond timestamps, little-endian file.

use std::{
    fs,
    io::BufWriter,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use etherparse::PacketBuilder;
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};

/// The resolver the generated responses come from.
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// The client (vantage point) they go to.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

const RESOLVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x53];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

/// One DNS response on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Time since the Unix epoch.
    pub ts: Duration,
    /// Source address (the resolver); the destination is [`CLIENT`] (or 2001:db8::10 for IPv6).
    pub resolver: IpAddr,
    /// Client UDP port.
    pub port: u16,
    /// The DNS message.
    pub payload: Vec<u8>,
}

/// The Ethernet frame of one response.
pub fn frame(r: &Response) -> anyhow::Result<Vec<u8>> {
    let eth = PacketBuilder::ethernet2(RESOLVER_MAC, CLIENT_MAC);
    let b = match r.resolver {
        IpAddr::V4(src) => eth.ipv4(src.octets(), CLIENT.octets(), 64).udp(53, r.port),
        IpAddr::V6(src) => eth
            .ipv6(src.octets(), CLIENT_V6.octets(), 64)
            .udp(53, r.port),
    };
    let mut f = Vec::with_capacity(b.size(r.payload.len()));
    b.write(&mut f, &r.payload)
        .map_err(|e| anyhow::anyhow!("build frame: {e}"))?;
    Ok(f)
}

/// Writes `responses` to `path`, sorted by time (stable: equal times keep their order).
/// Returns the number of frames written.
pub fn write_pcap(path: &Path, responses: &mut [Response]) -> anyhow::Result<usize> {
    responses.sort_by_key(|r| r.ts);
    let file = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
        snaplen: 65535,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(BufWriter::new(file), header)?;
    for r in responses.iter() {
        if r.payload.len() > 65_000 {
            bail!(
                "DNS message of {} bytes does not fit a UDP datagram",
                r.payload.len()
            );
        }
        let f = frame(r)?;
        // Microsecond resolution: drop the nanoseconds so the file is exact.
        let ts = Duration::new(r.ts.as_secs(), r.ts.subsec_micros() * 1000);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, &f))?;
    }
    let mut inner = w.into_writer();
    std::io::Write::flush(&mut inner)?;
    Ok(responses.len())
}

/// Reads back `(timestamp, UDP payload)` of every UDP frame in an Ethernet pcap (for tests and
/// tools that check what was written).
pub fn read_udp_payloads(path: &Path) -> anyhow::Result<Vec<(Duration, Vec<u8>)>> {
    let data = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let mut r = pcap_file::pcap::PcapReader::new(&data[..])?;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p?;
        let sliced = etherparse::SlicedPacket::from_ethernet(&p.data)
            .map_err(|e| anyhow::anyhow!("bad frame: {e}"))?;
        if let Some(etherparse::TransportSlice::Udp(u)) = sliced.transport {
            out.push((p.timestamp, u.payload().to_vec()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_pcapw_sorted_roundtrip() {
        let dir = std::env::temp_dir().join(format!("flux-eval-pcapw-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.pcap");
        let mut rs = vec![
            Response {
                ts: Duration::from_secs(20),
                resolver: RESOLVER.into(),
                port: 4000,
                payload: vec![2; 20],
            },
            Response {
                ts: Duration::from_millis(10_500),
                resolver: "2001:db8::53".parse().unwrap(),
                port: 4001,
                payload: vec![1; 20],
            },
        ];
        assert_eq!(write_pcap(&p, &mut rs).unwrap(), 2);
        let back = read_udp_payloads(&p).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], (Duration::from_millis(10_500), vec![1; 20]));
        assert_eq!(back[1], (Duration::from_secs(20), vec![2; 20]));
    }
}
