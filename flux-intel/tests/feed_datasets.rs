//! Every real feed sample of `../shared/datasets/feeds/` (skipped when the folder is absent),
//! read with `--format auto`: the detected format, the entries read and the distinct set, against
//! the counts of the datasets' README table. Where this crate's count differs from the README's,
//! the expected figure here says why.

use std::path::PathBuf;

use flux_intel::{FeedFormat, ParseOptions, Parsed, parse_feed};

fn feeds_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FLUX_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"))
        .join("feeds");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: no datasets at {}", dir.display());
        None
    }
}

fn load(dir: &std::path::Path, file: &str) -> Parsed {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let options = ParseOptions {
        file_name: Some(file.to_owned()),
        ..ParseOptions::default()
    };
    let parsed = parse_feed(&bytes, &options).unwrap_or_else(|e| panic!("{file}: {e}"));
    eprintln!(
        "{file}: {} entries, {} domains, {} IPv4, {} IPv6, {} CIDRs, {} from URLs, {} warnings {:?}",
        parsed.entries,
        parsed.set.domains.len(),
        parsed.set.ipv4.len(),
        parsed.set.ipv6.len(),
        parsed.set.cidrs.len(),
        parsed.set.url_hosts.len(),
        parsed.warnings.len(),
        parsed.warnings.iter().take(5).collect::<Vec<_>>(),
    );
    parsed
}

/// One sample: the file, the format auto-detection must find, the entries read (the README's
/// count), distinct names, IPv4 addresses, CIDRs, and the warnings.
struct Sample {
    file: &'static str,
    format: FeedFormat,
    entries: usize,
    domains: usize,
    ipv4: usize,
    cidrs: usize,
    warnings: usize,
}

#[rustfmt::skip]
const SAMPLES: &[Sample] = &[
    // The four Block List Project renderings of one list: 1,904 each, all distinct.
    Sample { file: "blocklistproject/ransomware.txt", format: FeedFormat::Hosts, entries: 1904, domains: 1904, ipv4: 0, cidrs: 0, warnings: 0 },
    Sample { file: "blocklistproject/ransomware-nl.txt", format: FeedFormat::Plain, entries: 1904, domains: 1904, ipv4: 0, cidrs: 0, warnings: 0 },
    Sample { file: "blocklistproject/ransomware-ags.txt", format: FeedFormat::Abp, entries: 1904, domains: 1904, ipv4: 0, cidrs: 0, warnings: 0 },
    Sample { file: "blocklistproject/ransomware-dnsmasq.txt", format: FeedFormat::Dnsmasq, entries: 1904, domains: 1904, ipv4: 0, cidrs: 0, warnings: 0 },
    // 2,892 lines of entries: 402 are /32s, which become addresses.
    Sample { file: "firehol/firehol_level1.netset", format: FeedFormat::Netset, entries: 2892, domains: 0, ipv4: 402, cidrs: 2490, warnings: 0 },
    // 348 rows; 339 distinct addresses (some listed once per port).
    Sample { file: "bitsight/emotet.csv", format: FeedFormat::Csv, entries: 348, domains: 0, ipv4: 339, cidrs: 0, warnings: 0 },
    // 1,248 rows: 1,247 load and one is a bad record of the feed itself (`tier1_c2,h`, line
    // 594: a single-label name). 97 are URLs on t.me and steamcommunity.com (2 hosts), and 14
    // names are listed twice, so 1,138 distinct names.
    Sample { file: "bitsight/lumma_iocs.csv", format: FeedFormat::Csv, entries: 1247, domains: 1138, ipv4: 0, cidrs: 0, warnings: 1 },
    // The same feed without the bad record: 1,233 attributes (1,133 domain, 3 hostname, 97 url).
    Sample { file: "bitsight/lumma_iocs_misp.json", format: FeedFormat::Misp, entries: 1233, domains: 1138, ipv4: 0, cidrs: 0, warnings: 0 },
    // 1,233 indicators (1,136 domain-name, 97 url patterns).
    Sample { file: "bitsight/lumma_iocs_stix2.json", format: FeedFormat::Stix, entries: 1233, domains: 1138, ipv4: 0, cidrs: 0, warnings: 0 },
    // 167 defanged domains; the first row (a TLS fingerprint) is a warning.
    Sample { file: "bitsight/sandiflux_iocs.txt", format: FeedFormat::Csv, entries: 167, domains: 167, ipv4: 0, cidrs: 0, warnings: 1 },
];

#[test]
fn every_feed_sample_loads_with_its_readme_count() {
    let Some(dir) = feeds_dir() else { return };
    for s in SAMPLES {
        let p = load(&dir, s.file);
        let got = (
            p.format,
            p.entries,
            p.set.domains.len(),
            p.set.ipv4.len(),
            p.set.cidrs.len(),
            p.warnings.len(),
        );
        let want = (s.format, s.entries, s.domains, s.ipv4, s.cidrs, s.warnings);
        assert_eq!(got, want, "{}", s.file);
    }
    // Every file of the folder is in the table (a new sample must be added here).
    let mut files = Vec::new();
    for sub in std::fs::read_dir(&dir).unwrap() {
        let sub = sub.unwrap().path();
        if sub.is_dir() {
            for f in std::fs::read_dir(&sub).unwrap() {
                let f = f.unwrap().path();
                files.push(f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    let mut listed: Vec<String> = SAMPLES.iter().map(|s| s.file.to_owned()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn the_same_feed_in_four_formats_is_one_set() {
    let Some(dir) = feeds_dir() else { return };
    let hosts = load(&dir, "blocklistproject/ransomware.txt").set;
    for other in [
        "ransomware-nl.txt",
        "ransomware-ags.txt",
        "ransomware-dnsmasq.txt",
    ] {
        assert_eq!(
            load(&dir, &format!("blocklistproject/{other}")).set,
            hosts,
            "{other}"
        );
    }
    let misp = load(&dir, "bitsight/lumma_iocs_misp.json").set;
    assert_eq!(load(&dir, "bitsight/lumma_iocs_stix2.json").set, misp);
    assert_eq!(load(&dir, "bitsight/lumma_iocs.csv").set, misp);
    assert_eq!(
        misp.url_hosts
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["steamcommunity.com", "t.me"]
    );
}
