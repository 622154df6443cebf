//! The known-good list file (`--allowlist FILE`, `flux_detect::known_good::Allowlist::add_text`):
//! the one operator-supplied configuration parser that exists so far.
//!
//! Checks: no panic; a rejected text changes nothing; lookups on an accepted list do not panic.
#![no_main]

use flux_detect::known_good::Allowlist;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut list = Allowlist::empty();
    match list.add_text(text, "fuzz") {
        Ok(()) => {
            for line in text.lines() {
                let entry = line.split('#').next().unwrap_or("").trim();
                let _ = list.match_name(entry);
                if let Ok(ip) = entry.parse() {
                    assert!(list.match_ip(ip), "a listed address {ip} does not match");
                }
            }
        }
        Err(e) => {
            assert!(list.is_empty(), "a rejected text left entries");
            assert!(!e.to_string().is_empty());
        }
    }
});
