//! Every DNS response in the shared real-world captures goes through the userspace parser: no
//! panic, and failures are counted. Skips when `../shared/datasets` is absent (a user's clone).

use std::panic::{AssertUnwindSafe, catch_unwind};

use flux_detect::{
    capture_file::{DEFAULT_PORTS, ReadStats, read_file},
    dns::parse_response,
};

#[test]
fn every_captured_response_parses_or_fails_cleanly() {
    let Some(dir) = flux_tests::dataset("pcaps") else {
        return;
    };
    let files = flux_tests::capture_files(&dir);
    let (mut responses, mut parsed, mut failed) = (0u64, 0u64, 0u64);
    let mut stats = ReadStats::default();
    let mut unreadable = Vec::new();
    for f in &files {
        // The same frame walk and plausibility test as the XDP program (flux_detect::capture_file), so
        // this is what the agent would see.
        let res = read_file(f, &DEFAULT_PORTS, &mut stats, |d| {
            responses += 1;
            match catch_unwind(AssertUnwindSafe(|| parse_response(&d.payload, d.truncated))) {
                Ok(Ok(_)) => parsed += 1,
                Ok(Err(_)) => failed += 1,
                Err(_) => panic!("parser panicked on a message in {}", f.display()),
            }
        });
        if let Err(e) = res {
            unreadable.push(e.to_string());
        }
    }
    eprintln!("datasets: {stats:?}");
    for e in &unreadable {
        eprintln!("datasets: unreadable: {e}");
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
