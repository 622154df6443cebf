//! A ring-buffer record as the kernel hands it over (`flux_agent::kernel::ring_records`), with
//! arbitrary header and message bytes, to the `dns` event (`Observation`) and both of its lines
//! (`pipeline::sinks::write_event`: the JSON contract and the readable line).
//!
//! Checks: no panic; each event is exactly one line (a reply must not be able to forge a line in
//! the events file or the log); the JSON line parses back as one object with `"type":"dns"`, and
//! is byte for byte what serde_json writes for the event (the line is written by hand,
//! `pipeline/dns_json.rs`, and serde's is the contract). The event's time is drawn from the
//! input's bytes over the whole range of `SystemTime` the agent can meet, before 1970 and past
//! 9999 included, so that the timestamp's clamp and cache are checked against serde's too.
#![no_main]

use std::time::{Duration, SystemTime};

use flux_agent::{
    kernel::ring_records::Capture,
    pipeline::{
        events::{Event, Observation},
        sinks::{EventFormat, write_event},
    },
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(capture) = Capture::from_record(data) else {
        return;
    };
    let ts = time_of(data);
    let Ok(obs) = Observation::from_capture(&capture, ts, "eth0".into()) else {
        return;
    };
    let event = Event::Dns(obs);
    let mut json = Vec::new();
    write_event(&mut json, EventFormat::Json, &event).expect("JSON event written");
    one_line(&json);
    let v: serde_json::Value = serde_json::from_slice(&json).expect("the JSON line parses");
    assert_eq!(v["type"], "dns");
    let mut serde_line = serde_json::to_vec(&event).expect("serde writes the event");
    serde_line.push(b'\n');
    assert!(
        json == serde_line,
        "the hand-written line differs from serde_json's:\n{}\n{}",
        String::from_utf8_lossy(&json),
        String::from_utf8_lossy(&serde_line)
    );
    let mut human = Vec::new();
    write_event(&mut human, EventFormat::Human, &event).expect("readable event written");
    one_line(&human);
});

/// A time from the input (FNV-1a of its bytes): for half the inputs within four seconds of one
/// instant (the timestamp cache's same-second path), else anywhere from 2^34 s before 1970 to
/// 2^40 s after it (past 9999).
fn time_of(data: &[u8]) -> SystemTime {
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let nanos = (h >> 34) as u32 % 1_000_000_000;
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    match h & 3 {
        0 | 1 => base + Duration::new((h >> 2) & 3, nanos),
        2 => SystemTime::UNIX_EPOCH + Duration::new(h >> 24, nanos),
        _ => SystemTime::UNIX_EPOCH - Duration::new(h >> 30, nanos),
    }
}

fn one_line(line: &[u8]) {
    assert!(line.ends_with(b"\n"), "an event line without its newline");
    assert_eq!(
        line.iter().filter(|&&b| b == b'\n' || b == b'\r').count(),
        1,
        "an event split over lines: {:?}",
        String::from_utf8_lossy(line)
    );
}
