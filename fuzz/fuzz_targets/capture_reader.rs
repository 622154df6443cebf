//! `flux_detect::capture_file::read_reader` on arbitrary file bytes (pcap, pcapng, or either
//! gzip-compressed, recognised by magic as `read_file` does), then every DNS message it yields
//! through `parse_response`, as `flux-agent replay` does.
//!
//! Checks: no panic, every yielded message holds at least a DNS header, and the counts agree.
#![no_main]

use std::{io::Read as _, path::Path};

use flux_detect::{
    capture_file::{DEFAULT_PORTS, ReadStats, read_reader},
    dns::parse_response,
};
use libfuzzer_sys::fuzz_target;

/// Bound on decompressed bytes, so a gzip bomb costs time, not the whole run.
const MAX_INFLATED: u64 = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.pcap");
    let mut stats = ReadStats::default();
    let mut yielded = 0u64;
    let mut truncated = 0u64;
    let each = |d: flux_detect::capture_file::CapturedDns| {
        yielded += 1;
        truncated += u64::from(d.truncated);
        assert!(d.payload.len() >= 12, "a message shorter than a DNS header");
        let _ = parse_response(&d.payload, d.truncated);
    };
    let gzip = data.starts_with(&[0x1f, 0x8b]);
    let res = if gzip {
        let gz = flate2::read::MultiGzDecoder::new(data).take(MAX_INFLATED);
        read_reader(gz, name, &DEFAULT_PORTS, &mut stats, each)
    } else {
        read_reader(data, name, &DEFAULT_PORTS, &mut stats, each)
    };
    let _ = res.map_err(|e| e.to_string());
    assert_eq!(stats.dns_responses, yielded);
    assert_eq!(stats.truncated_responses, truncated);
    if !gzip {
        // Every pcap record or pcapng packet block takes at least 16 bytes of the file.
        assert!(stats.frames * 16 <= data.len() as u64);
    }
});
