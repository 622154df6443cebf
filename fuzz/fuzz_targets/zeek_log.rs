//! `flux_detect::resolver_logs::zeek::read_zeek` on arbitrary bytes: Zeek `dns.log` TSV (with
//! any header) or JSON lines, as `flux-agent replay` reads them.
//!
//! Checks: no panic, every data row is counted exactly once (a response, a duplicate, a query
//! without reply, or a bad row), and every yielded answer chain starts at the question.
#![no_main]

use flux_detect::resolver_logs::zeek::{ZeekStats, read_zeek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut stats = ZeekStats::default();
    let mut yielded = 0u64;
    let res = read_zeek(data, &mut stats, |z| {
        yielded += 1;
        if let Some(first) = z.msg.answers.first() {
            assert_eq!(first.name, z.msg.qname, "the first answer is owned by the question");
        }
    });
    let counted = stats.responses + stats.duplicates + stats.no_response + stats.bad_rows;
    assert_eq!(stats.responses, yielded);
    // A stream that is not a dns.log stops at the row that shows it, counted in `rows` only.
    match res {
        Ok(()) => assert_eq!(stats.rows, counted),
        Err(_) => assert!(stats.rows <= counted + 1),
    }
});
