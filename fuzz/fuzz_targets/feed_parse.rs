//! The threat-intelligence feed parsers (`flux_intel::parse_feed`): every format (hosts, plain,
//! abp, dnsmasq, csv, netset, misp, stix) and `auto` on the same bytes, and the STIX pattern
//! reader on them as a pattern.
//!
//! Input: `[options byte][feed bytes]`. The options byte's low two bits pick the CSV column (by
//! header / first indicator, or the 1st, 2nd, 3rd), its next two bits a file name for the
//! extension hint (none, `.csv`, `.netset`, `.json`).
//!
//! Checks beyond "no panic": a parse that succeeds holds at least one entry, no more distinct
//! entries than it read, at most `MAX_WARNINGS` warnings; every name is canonical (lowercase
//! A-labels without control characters, the trailing dot or `..`, and normalizing it again gives
//! itself); every network is truncated and shorter than an address; the URL hosts are names of
//! the set; `auto` reads the bytes as one of the formats and gives the same set as that format.
#![no_main]

use flux_intel::{
    CsvColumn, FeedFormat, FormatChoice, ParseOptions, Parsed, feed_formats::stix_pattern,
    feed_set::MAX_WARNINGS, indicator::normalize_domain, parse_feed,
};
use libfuzzer_sys::fuzz_target;

fn check(parsed: &Parsed) {
    let set = &parsed.set;
    assert!(!set.is_empty() && set.len() <= parsed.entries);
    assert!(parsed.warnings.len() <= MAX_WARNINGS);
    for d in &set.domains {
        assert!(
            d.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)),
            "{d:?}"
        );
        assert!(!d.ends_with('.') && !d.contains(".."), "{d:?}");
        assert_eq!(normalize_domain(d).as_deref(), Ok(d.as_str()));
    }
    for n in &set.cidrs {
        assert_eq!(*n, n.trunc());
        assert!(n.prefix_len() < n.max_prefix_len());
    }
    assert!(set.url_hosts.is_subset(&set.domains));
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, feed)) = data.split_first() else {
        return;
    };
    let csv_column = match options & 3 {
        0 => None,
        k => Some(CsvColumn::Index(usize::from(k - 1))),
    };
    let file_name = match (options >> 2) & 3 {
        0 => None,
        1 => Some("feed.csv".to_owned()),
        2 => Some("feed.netset".to_owned()),
        _ => Some("feed.json".to_owned()),
    };
    let mut each = Vec::new();
    for format in FeedFormat::ALL {
        let opts = ParseOptions {
            format: FormatChoice::Fixed(format),
            csv_column: csv_column.clone(),
            file_name: file_name.clone(),
        };
        let result = parse_feed(feed, &opts);
        match &result {
            Ok(p) => {
                assert_eq!(p.format, format);
                check(p);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        each.push(result.ok());
    }
    let auto = ParseOptions {
        format: FormatChoice::Auto,
        csv_column,
        file_name,
    };
    if let Ok(p) = parse_feed(feed, &auto) {
        check(&p);
        let same = FeedFormat::ALL
            .iter()
            .position(|f| *f == p.format)
            .and_then(|i| each.get(i)?.as_ref());
        assert_eq!(
            same.map(|s| &s.set),
            Some(&p.set),
            "auto read as {}",
            p.format
        );
    }
    if let Ok(text) = std::str::from_utf8(feed) {
        let _ = stix_pattern::parse(text);
    }
});
