//! The scorer fed with whatever parses: arbitrary bytes split into DNS messages, each parsed by
//! `parse_response` and, when it parses, given to `flux_detect::score::Scorer::observe` at a
//! fixed, advancing clock (the same input always takes the same path). Verdicts are written as
//! the agent's `verdict` events; `explain` and `block_targets` are asked about every name seen.
//!
//! Input: records of `[clock step][length, 2 bytes big-endian][message]`; a clock step below 128
//! is seconds, above it minutes, so one input can span the scorer's longest window.
//!
//! Checks: no panic; the key table never holds more than its bound and the scorer's memory
//! estimate stays bounded; every event is one line. The scorer runs with a small key table so
//! eviction is exercised, and a small synthetic address database so addresses get networks,
//! organisations and countries.
#![no_main]

use std::{
    cell::RefCell,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use flux_agent::pipeline::{
    events::Event,
    sinks::{EventFormat, write_event},
};
use flux_detect::{
    dns::parse_response,
    enrich::Enricher,
    known_good::Allowlist,
    score::{Scorer, ScorerConfig, Verdict},
};
use libfuzzer_sys::fuzz_target;

const MAX_KEYS: usize = 64;
/// Far above what 64 keys hold; a scorer past it is not bounded.
const MAX_MEMORY: usize = 64 << 20;

thread_local! {
    static ENRICHER: Arc<Enricher> = Arc::new(synthetic_enricher());
    static ALLOWLIST: Arc<Allowlist> = Arc::new(Allowlist::builtin());
    static VERDICTS: RefCell<Vec<Verdict>> = const { RefCell::new(Vec::new()) };
}

fuzz_target!(|data: &[u8]| {
    let cfg = ScorerConfig {
        max_keys: MAX_KEYS,
        ..ScorerConfig::default()
    };
    let mut scorer = Scorer::new(cfg, ENRICHER.with(Arc::clone), ALLOWLIST.with(Arc::clone));
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut rest = data;
    while let [step, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (msg, next) = tail.split_at(len);
        rest = next;
        now += if step & 0x80 != 0 {
            Duration::from_secs(u64::from(step & 0x7f) * 60)
        } else {
            Duration::from_secs(u64::from(*step))
        };
        let Ok(msg) = parse_response(msg, false) else {
            continue;
        };
        VERDICTS.with_borrow_mut(|out| {
            out.clear();
            scorer.observe(now, &msg, out);
            for v in out.drain(..) {
                one_event(Event::Verdict(v));
            }
        });
        let stats = scorer.stats();
        assert!(stats.keys_tracked as usize <= MAX_KEYS, "{stats:?}");
        let memory = scorer.memory_estimate();
        assert!(memory <= MAX_MEMORY, "scorer holds {memory} bytes");
        for name in std::iter::once(&msg.qname).chain(msg.answers.iter().map(|r| &r.name)) {
            if let Some(v) = scorer.explain(name, now) {
                one_event(Event::Verdict(v));
            }
            let _ = scorer.block_targets(name, now);
        }
    }
});

fn one_event(e: Event) {
    for format in [EventFormat::Json, EventFormat::Human] {
        let mut line = Vec::new();
        write_event(&mut line, format, &e).expect("event written");
        assert_eq!(
            line.iter().filter(|&&b| b == b'\n' || b == b'\r').count(),
            1,
            "an event split over lines: {:?}",
            String::from_utf8_lossy(&line)
        );
    }
}

/// An ASN and a country database in the ip-location-db CSV formats: each /8 of IPv4 belongs to
/// one of 24 networks of 12 organisations in 8 countries, and IPv6 to a few more.
fn synthetic_enricher() -> Enricher {
    let dir = std::env::temp_dir().join(format!("flux-fuzz-enrich-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let countries = ["US", "RU", "CN", "DE", "BR", "IN", "NL", "UA"];
    let mut asn = String::new();
    let mut geo = String::new();
    for a in 0..=255u32 {
        let n = a % 24;
        asn += &format!("{a}.0.0.0,{a}.255.255.255,{},Org {}\n", 64500 + n, n % 12);
        geo += &format!(
            "{a}.0.0.0,{a}.255.255.255,{}\n",
            countries[(a % 8) as usize]
        );
    }
    for (i, (lo, hi)) in [
        ("::", "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2000::", "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("4000::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ]
    .iter()
    .enumerate()
    {
        asn += &format!("{lo},{hi},{},Org v6 {i}\n", 65000 + i);
        geo += &format!("{lo},{hi},{}\n", countries[i]);
    }
    let asn_path: PathBuf = dir.join("asn-ipv4.csv");
    let geo_path: PathBuf = dir.join("geo-whois-asn-country-ipv4.csv");
    let loaded = std::fs::write(&asn_path, asn)
        .and_then(|()| std::fs::write(&geo_path, geo))
        .ok()
        .and_then(|()| Enricher::load(&[asn_path], &[geo_path]).ok());
    let _ = std::fs::remove_dir_all(&dir);
    loaded.expect("the synthetic address database loads")
}
