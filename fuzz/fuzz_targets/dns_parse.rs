//! `flux_detect::dns::parse_response` on arbitrary bytes, as a whole message and as a cut one.
//!
//! Checks, beyond "no panic": a message that parses whole parses the same when flagged cut; a
//! cut parse never fails where the whole one succeeded; every name is printable (names reach
//! readable event lines and logs, so a control character would let a reply forge a line); and
//! the message serializes to JSON (the `dns` event).
#![no_main]

use flux_detect::dns::{DnsMessage, parse_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse_response(data, false);
    let cut = parse_response(data, true);
    if let Ok(m) = &whole {
        assert!(!m.incomplete, "a whole parse is never incomplete");
        assert_eq!(
            cut.as_ref(),
            Ok(m),
            "the cut flag changed a message that parsed whole"
        );
    }
    if let Ok(m) = &cut {
        check(m);
    }
});

fn check(m: &DnsMessage) {
    printable(&m.qname);
    for r in m.answers.iter().chain(&m.authority).chain(&m.additional) {
        printable(&r.name);
        if let Some(t) = &r.target {
            printable(t);
        }
        let _ = r.data();
    }
    let json = serde_json::to_string(m).expect("a parsed message serializes");
    assert!(!json.contains('\n'));
}

fn printable(name: &str) {
    assert!(
        !name.chars().any(|c| c.is_control()),
        "name with a control character: {name:?}"
    );
}
