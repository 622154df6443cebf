//! A ring-buffer record as the kernel hands it over (`flux_agent::kernel::ring_records`), with
//! arbitrary header and message bytes, to the `dns` event (`Observation`) and both of its lines
//! (`pipeline::sinks::write_event`: the JSON contract and the readable line).
//!
//! Checks: no panic; each event is exactly one line (a reply must not be able to forge a line in
//! the events file or the log); the JSON line parses back as one object with `"type":"dns"`.
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
    let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let Ok(obs) = Observation::from_capture(&capture, ts, "eth0".into()) else {
        return;
    };
    let event = Event::Dns(obs);
    let mut json = Vec::new();
    write_event(&mut json, EventFormat::Json, &event).expect("JSON event written");
    one_line(&json);
    let v: serde_json::Value = serde_json::from_slice(&json).expect("the JSON line parses");
    assert_eq!(v["type"], "dns");
    let mut human = Vec::new();
    write_event(&mut human, EventFormat::Human, &event).expect("readable event written");
    one_line(&human);
});

fn one_line(line: &[u8]) {
    assert!(line.ends_with(b"\n"), "an event line without its newline");
    assert_eq!(
        line.iter().filter(|&&b| b == b'\n' || b == b'\r').count(),
        1,
        "an event split over lines: {:?}",
        String::from_utf8_lossy(line)
    );
}
