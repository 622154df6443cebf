//! Every DNS response in the shared real-world captures goes through the userspace parser: no
//! panic, and failures are counted. Skips when `../shared/datasets` is absent (a user's clone).

use std::{
    fs,
    io::Read,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use flux_agent::dns::parse_response;
use pcap_file::{DataLink, pcap::PcapReader, pcapng::Block, pcapng::PcapNgReader};

fn datasets() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/pcaps");
    p.is_dir().then_some(p)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.to_string_lossy().contains(".pcap") {
            out.push(p);
        }
    }
}

/// (link type, frame) pairs of a capture file, gz or not.
fn frames(path: &Path) -> Vec<(DataLink, Vec<u8>)> {
    let mut raw = Vec::new();
    let Ok(mut f) = fs::File::open(path) else {
        return Vec::new();
    };
    if f.read_to_end(&mut raw).is_err() {
        return Vec::new();
    }
    if path.extension().is_some_and(|e| e == "gz") {
        let mut d = Vec::new();
        if flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut d)
            .is_err()
        {
            return Vec::new();
        }
        raw = d;
    }
    let mut out = Vec::new();
    if let Ok(mut r) = PcapReader::new(&raw[..]) {
        let dl = r.header().datalink;
        while let Some(Ok(p)) = r.next_packet() {
            out.push((dl, p.data.into_owned()));
        }
    } else if let Ok(mut r) = PcapNgReader::new(&raw[..]) {
        let mut links = Vec::new();
        while let Some(Ok(block)) = r.next_block() {
            match block {
                Block::InterfaceDescription(i) => links.push(i.linktype),
                Block::EnhancedPacket(p) => {
                    if let Some(dl) = links.get(p.interface_id as usize) {
                        out.push((*dl, p.data.into_owned()));
                    }
                }
                Block::SimplePacket(p) => {
                    if let Some(dl) = links.first() {
                        out.push((*dl, p.data.into_owned()));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The DNS message a frame carries from port 53/5353/5355, if any (TCP: one whole message).
fn dns_payload(dl: DataLink, frame: &[u8]) -> Option<Vec<u8>> {
    let sliced = match dl {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(frame).ok()?,
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(frame).ok()?,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(frame).ok()?,
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(frame.get(4..)?).ok()?,
        DataLink::LINUX_SLL2 => SlicedPacket::from_ip(frame.get(20..)?).ok()?,
        _ => return None,
    };
    if matches!(sliced.net, Some(NetSlice::Ipv4(ref v4)) if v4.header().is_fragmenting_payload() && v4.header().fragments_offset().value() != 0)
    {
        return None;
    }
    let is_dns = |p: u16| matches!(p, 53 | 5353 | 5355);
    match sliced.transport? {
        TransportSlice::Udp(u) if is_dns(u.source_port()) => Some(u.payload().to_vec()),
        TransportSlice::Tcp(t) if is_dns(t.source_port()) => {
            let p = t.payload();
            let len = u16::from_be_bytes([*p.first()?, *p.get(1)?]) as usize;
            p.get(2..2 + len).map(<[u8]>::to_vec)
        }
        _ => None,
    }
}

#[test]
fn every_captured_response_parses_or_fails_cleanly() {
    let Some(dir) = datasets() else {
        eprintln!("SKIPPED: ../shared/datasets/pcaps not present");
        return;
    };
    let mut files = Vec::new();
    walk(&dir, &mut files);
    files.sort();
    let (mut responses, mut parsed, mut failed) = (0u64, 0u64, 0u64);
    for f in &files {
        for (dl, frame) in frames(f) {
            let Some(msg) = dns_payload(dl, &frame) else {
                continue;
            };
            // Same plausibility test as the XDP program, so this is what the agent would see.
            if msg.len() < 12
                || !flux_common::is_plausible_response(
                    u16::from_be_bytes([msg[2], msg[3]]),
                    u16::from_be_bytes([msg[4], msg[5]]),
                )
            {
                continue;
            }
            responses += 1;
            match catch_unwind(AssertUnwindSafe(|| parse_response(&msg, false))) {
                Ok(Ok(_)) => parsed += 1,
                Ok(Err(_)) => failed += 1,
                Err(_) => panic!("parser panicked on a message in {}", f.display()),
            }
        }
    }
    eprintln!(
        "datasets: {} files, {responses} DNS responses, {parsed} parsed, {failed} rejected",
        files.len()
    );
    assert!(
        responses > 1000,
        "expected the suite's ~2,000 responses, found {responses}"
    );
    assert!(parsed * 10 > responses * 9, "fewer than 90% parsed");
}
