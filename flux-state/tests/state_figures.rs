//! The figures docs/state.md reports: journal size after a million verdicts (bounded and not),
//! insert rates, a million-entry feed swap, and reading 100,000 live blocks. Ignored by
//! default (a minute of work); run in release with the output shown:
//!
//! `cargo test -p flux-state --release --test state_figures -- --ignored --nocapture`

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use flux_state::{
    Action, Entry, FeedFetch, FeedRecord, Kind, Level, MAX_VERDICT_ROWS, ReasonRecord, Source,
    Store, Target, VerdictRecord,
};

/// Verdicts journaled for the size figure.
const VERDICTS: u32 = 1_000_000;
/// Verdicts per transaction when journaling in batches.
const BATCH: u32 = 1_000;
/// Entries of the feed swap.
const FEED_ENTRIES: u32 = 1_000_000;
/// Live blocks read back.
const LIVE_BLOCKS: u32 = 100_000;

fn verdict(i: u32) -> VerdictRecord {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(i));
    VerdictRecord {
        reasons: ["answer_networks", "short_ttl", "rotating_ns"]
            .iter()
            .map(|f| ReasonRecord {
                feature: (*f).into(),
                contribution: 1.234,
            })
            .collect(),
        addresses: (0..4)
            .map(|k| IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(4).wrapping_add(k))))
            .collect(),
        ..VerdictRecord::new(
            &format!("host-{i}.flux-{}.example", i % 997),
            Level::Flux,
            0.93,
            at,
        )
    }
}

/// This process's CPU time (user + system) from /proc/self/stat: a figure the other builds
/// sharing the machine's cores inflate less than wall time.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the 12th
    // and 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// Wall and CPU time of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, String) {
    let (t, c) = (Instant::now(), cpu());
    let out = f();
    let text = format!("{:.2?} wall, {:.2?} CPU", t.elapsed(), cpu() - c);
    (out, text)
}

fn size_mb(store: &Store, path: &Path) -> f64 {
    store.checkpoint().unwrap();
    std::fs::metadata(path).unwrap().len() as f64 / 1e6
}

/// Journals [`VERDICTS`] under `cap`: (verdicts per wall second, per CPU second, MB, rows).
fn journal(path: &Path, cap: u64) -> (f64, f64, f64, u64) {
    let mut s = Store::open(path).unwrap();
    s.set_journal_cap(cap);
    let (t, c) = (Instant::now(), cpu());
    for start in (0..VERDICTS).step_by(BATCH as usize) {
        let batch: Vec<VerdictRecord> = (start..start + BATCH).map(verdict).collect();
        s.journal_verdicts(&batch).unwrap();
    }
    let rate = f64::from(VERDICTS) / t.elapsed().as_secs_f64();
    let cpu_rate = f64::from(VERDICTS) / (cpu() - c).as_secs_f64().max(0.001);
    (rate, cpu_rate, size_mb(&s, path), s.journal_len().unwrap())
}

#[test]
#[ignore = "figures: a minute of work, run in release with --nocapture"]
fn figures() {
    let dir = tempfile::tempdir().unwrap();

    let bounded = dir.path().join("bounded.db");
    let (rate, cpu_rate, mb, rows) = journal(&bounded, MAX_VERDICT_ROWS);
    println!(
        "journal, bound {MAX_VERDICT_ROWS}: {VERDICTS} verdicts at {rate:.0}/s wall, \
         {cpu_rate:.0}/s CPU, in batches of {BATCH}; {rows} rows, {mb:.1} MB"
    );
    let unbounded = dir.path().join("unbounded.db");
    let (rate, cpu_rate, mb, rows) = journal(&unbounded, u64::MAX);
    println!("journal, no bound: {rate:.0}/s wall, {cpu_rate:.0}/s CPU; {rows} rows, {mb:.1} MB");

    // One verdict per transaction, as the agent journals them one by one.
    let mut s = Store::open(&bounded).unwrap();
    let t = Instant::now();
    let n = 20_000;
    for i in VERDICTS..VERDICTS + n {
        s.journal_verdict(&verdict(i)).unwrap();
    }
    let rate = f64::from(n) / t.elapsed().as_secs_f64();
    println!("journal, one verdict per transaction (at the bound, pruning): {rate:.0}/s");

    let path = dir.path().join("feed.db");
    let mut s = Store::open(&path).unwrap();
    s.upsert_feed(&FeedRecord::new("big", "/big", "plain", Action::Block))
        .unwrap();
    let entries: Vec<Entry> = (0..FEED_ENTRIES)
        .map(|i| Entry {
            expires: Some(SystemTime::now() + Duration::from_secs(86_400)),
            ..Entry::block(
                Target::domain(&format!("d{i}.feed.example")).unwrap(),
                Source::feed("big"),
                "",
            )
        })
        .collect();
    let (r, first) = timed(|| {
        s.apply_feed("big", &entries, &FeedFetch::default())
            .unwrap()
    });
    let (again, second) = timed(|| {
        s.apply_feed("big", &entries, &FeedFetch::default())
            .unwrap()
    });
    println!(
        "feed swap of {FEED_ENTRIES} domains: first {first} ({} added), again {second} \
         ({} added, {} gone); {:.1} MB",
        r.added.len(),
        again.added.len(),
        again.gone.len(),
        size_mb(&s, &path)
    );
    let (removed, took) = timed(|| s.remove_feed("big").unwrap().unwrap());
    println!(
        "feed removal: {took} ({} rows, {} gone)",
        removed.rows,
        removed.gone.len()
    );

    let path = dir.path().join("blocks.db");
    let mut s = Store::open(&path).unwrap();
    let blocks: Vec<Entry> = (0..LIVE_BLOCKS)
        .map(|i| Entry {
            score: Some(0.9),
            expires: Some(SystemTime::now() + Duration::from_secs(86_400)),
            ..Entry::block(
                Target::Ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))),
                Source::Scorer,
                "answer_networks",
            )
        })
        .collect();
    let ((), took) = timed(|| {
        s.add_entries(&blocks).unwrap();
    });
    println!("add_entries: {LIVE_BLOCKS} blocks in one transaction: {took}");
    drop(s);
    let t = Instant::now();
    let s = Store::open(&path).unwrap();
    let opened = t.elapsed();
    let t = Instant::now();
    s.check().unwrap();
    let checked = t.elapsed();
    let (live, took) = timed(|| {
        s.effective_entries(Some(Kind::Block), SystemTime::now())
            .unwrap()
    });
    println!(
        "read {} live blocks: {took} (open {opened:.2?}, quick_check {checked:.2?})",
        live.len(),
    );
    assert_eq!(live.len(), LIVE_BLOCKS as usize);
}
