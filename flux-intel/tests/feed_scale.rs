//! Scale: large generated feeds load, whole and deduplicated, in seconds. The default run uses
//! 100,000 entries of each kind (the debug build is about ten times slower than release); a
//! quadratic step anywhere would take hours at this size, far past the bound. The issue's
//! 1,000,000 entries, in release: `cargo test --release -p flux-intel --test feed_scale --
//! --ignored` (and `cargo xtask bench` prints the figures).

use std::time::{Duration, Instant};

use flux_intel::{FeedFormat, ParseOptions, parse_feed};

/// Far above what a linear parse takes even in a debug build on a loaded machine; far below
/// what a quadratic one would.
const DEBUG_BOUND: Duration = Duration::from_secs(120);
/// The "loads in seconds", in release, with room for a shared machine.
const RELEASE_BOUND: Duration = Duration::from_secs(15);

fn name(i: usize) -> String {
    let h = (i as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17);
    format!("{:x}-{i}.zone{}.example", h & 0xff_ffff, h % 1000)
}

fn check(n: usize, bound: Duration) {
    let mut domains = String::new();
    let mut addresses = String::new();
    for i in 0..n {
        domains.push_str(&name(i));
        domains.push('\n');
        // Every entry twice: the set must come out deduplicated.
        if i % 2 == 0 {
            domains.push_str(&name(i).to_uppercase());
            domains.push('\n');
        }
        let ip = std::net::Ipv4Addr::from((i as u32).wrapping_mul(2_654_435_761));
        addresses.push_str(&format!("{ip}\n"));
    }
    for (text, format) in [
        (domains, FeedFormat::Plain),
        (addresses, FeedFormat::Netset),
    ] {
        let start = Instant::now();
        let parsed = parse_feed(text.as_bytes(), &ParseOptions::default()).unwrap();
        let took = start.elapsed();
        eprintln!("{n} {format} entries in {took:?}");
        assert_eq!(parsed.format, format);
        assert_eq!(parsed.set.len(), n);
        assert!(parsed.warnings.is_empty());
        assert!(took < bound, "{n} {format} entries took {took:?}");
    }
}

#[test]
fn large_feeds_load_in_seconds() {
    check(100_000, DEBUG_BOUND);
}

#[test]
#[ignore = "1,000,000 entries: run in release (see the module doc)"]
fn a_million_entries_in_release() {
    check(1_000_000, RELEASE_BOUND);
}
