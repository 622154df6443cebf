//! Tests of the scorer's snapshots (`snapshot.rs`): a restart in the middle of a stream changes
//! no verdict after it, times keep their age across a restart, and damaged bytes are typed
//! errors. The streams are built with the scorer tests' response helpers.

use std::time::{Instant, SystemTime};

use super::*;
use crate::{
    dns::DnsMessage,
    score::{
        Scorer, Verdict, WINDOWS,
        scorer_tests::{a_records, at, flux_answer, response, scorer},
    },
};

type Stream = Vec<(SystemTime, DnsMessage)>;

fn answer(t: u32, name: &str, ttl: u32, ips: &[String]) -> (SystemTime, DnsMessage) {
    (at(t), response(name, a_records(name, ttl, ips)))
}

/// The scorer tests' quiet domain and its loud neighbour, around a few bystanders:
/// - `quiet.test`, looked up twice (one address each, TTL 0): benign but watched, because its
///   first address turns out to be a bot of `www.loud.test` only later;
/// - `www.loud.test`, a flux network rotating five fresh bots per TTL, the quiet domain's bot
///   among them in its sixth round;
/// - `www.second.test`, another flux network, 30 s behind the first;
/// - `other.test`, a name on two of the loud network's bots (flux through shared bots);
/// - `www.steady.test` (one address, always the same) and `www.cdn.test` (a CDN rotating
///   inside one /16): benign bystanders.
fn stream() -> Stream {
    let bot = flux_answer(0)[0].clone();
    let mut s = vec![
        answer(0, "a.quiet.test", 0, std::slice::from_ref(&bot)),
        answer(100, "www.steady.test", 300, &["93.184.216.34".into()]),
        answer(600, "b.quiet.test", 0, &["9.9.9.9".into()]),
    ];
    for round in 0..8u32 {
        let mut ips = flux_answer(round + 1);
        if round == 5 {
            ips.push(bot.clone());
        }
        s.push(answer(1_000 + round * 180, "www.loud.test", 180, &ips));
        // A second network 30 s behind the first: its new bots arrive before the sweep of
        // watched keys may run again, so some snapshots hold bots not swept yet.
        let second: Vec<String> = (0..5)
            .map(|i| format!("{}.{}.8.9", 120 + round * 5 + i, 60 + i))
            .collect();
        s.push(answer(1_030 + round * 180, "www.second.test", 180, &second));
        let cdn: Vec<String> = (0..4).map(|i| format!("151.101.{round}.{i}")).collect();
        s.push(answer(1_050 + round * 180, "www.cdn.test", 60, &cdn));
        if round % 3 == 0 {
            s.push(answer(
                1_100 + round * 180,
                "www.steady.test",
                300,
                &["93.184.216.34".into()],
            ));
        }
    }
    // Six names of one domain looked up once each, then never again: the parent waits on
    // them as pending children and is judged by the sweep after their TTL
    // (`Scorer::sweep_due`), with no answer of its own.
    for i in 0..6u32 {
        let name = format!("node{i}.newvendor.test");
        s.push(answer(
            200 + i * 8,
            &name,
            600,
            &[format!("{}.{}.1.1", 20 + i * 9, i)],
        ));
    }
    let late = flux_answer(7);
    s.push(answer(2_600, "other.test", 180, &late[..3]));
    s.push(answer(2_700, "other.test", 180, &late[2..]));
    s.push(answer(2_800, "a.quiet.test", 0, std::slice::from_ref(&bot)));
    s.sort_by_key(|(t, _)| *t);
    s
}

/// Feeds `msgs`; every verdict, as the JSON the agent writes (every field compared).
fn feed(s: &mut Scorer, msgs: &[(SystemTime, DnsMessage)]) -> Vec<serde_json::Value> {
    let mut out: Vec<Verdict> = Vec::new();
    for (t, m) in msgs {
        s.observe(*t, m, &mut out);
    }
    out.iter()
        .map(|v| serde_json::to_value(v).expect("a verdict serializes"))
        .collect()
}

/// One line per verdict: time, domain, levels, score.
fn summary(v: &[serde_json::Value]) -> String {
    v.iter()
        .map(|v| {
            format!(
                "{} {} {} -> {} {}",
                v["ts"], v["domain"], v["previous"], v["level"], v["score"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A snapshot through its bytes into a new scorer, restored at `now`.
fn restart(s: &Scorer, now: SystemTime) -> (Scorer, RestoreStats) {
    let bytes = s.snapshot().to_bytes().expect("encodes");
    let snap = Snapshot::from_bytes(&bytes).expect("decodes");
    let mut fresh = scorer();
    let stats = fresh.restore(snap, now).expect("restores");
    (fresh, stats)
}

/// The key property: for every point T of the stream, a scorer restarted at T (snapshot, bytes,
/// a new scorer, restore) emits exactly the verdicts after T that a scorer without the restart
/// emits, every field of every verdict compared (time, domain, levels before and after, scores,
/// block gate, reasons, features, baselines), and ends with the same level for every key
/// either tracks. Among them the quiet domain's flip to `flux` on shared bots, which for a
/// restart before the loud network's sixth round happens after the restart only because the
/// watch list and the bot table came through it.
#[test]
fn a_restart_anywhere_changes_no_verdict_after_it() {
    let msgs = stream();
    let mut whole = scorer();
    let all = feed(&mut whole, &msgs);
    let quiet_flux = |v: &[serde_json::Value]| {
        v.iter()
            .any(|v| v["domain"] == "quiet.test" && v["level"] == "flux")
    };
    assert!(
        quiet_flux(&all),
        "the stream must flip quiet.test: {all:#?}"
    );
    assert!(
        all.iter()
            .any(|v| v["domain"] == "newvendor.test" && v["level"] == "flux"),
        "the due sweep must flip newvendor.test: {all:#?}"
    );
    assert_eq!(whole.level_of("www.loud.test"), Some(Level::Flux));
    assert_eq!(whole.level_of("other.test"), Some(Level::Flux));
    let mut flips_after_restart = 0;
    for split in 1..msgs.len() {
        let (before, after) = msgs.split_at(split);
        let mut a = scorer();
        feed(&mut a, before);
        let expected = feed(&mut a, after);
        let mut b = scorer();
        feed(&mut b, before);
        let (mut b, _) = restart(&b, after[0].0);
        let got = feed(&mut b, after);
        assert!(
            got == expected,
            "verdicts after a restart at message {split}:\n{}\nwithout the restart:\n{}",
            summary(&got),
            summary(&expected)
        );
        flips_after_restart += usize::from(quiet_flux(&got));
        assert_eq!(a.stats().keys_tracked, b.stats().keys_tracked);
        for (name, st) in a.keys() {
            assert_eq!(b.level_of(name), Some(st.level), "{name} at {split}");
        }
    }
    assert!(
        flips_after_restart > 5,
        "the flip came after the restart at {flips_after_restart} split points only"
    );
}

/// At every point of the stream a restored scorer holds the same due keys and is in the same
/// re-score interval as the one that saved it, so it sweeps them when that one would have
/// (`Scorer::sweep_due`): a restart inside an interval does not sweep again at once, and one
/// at its start does not skip the sweep.
#[test]
fn a_restore_resumes_the_due_sweep_where_the_saving_scorer_was() {
    let msgs = stream();
    let mut held_due = 0;
    for split in 1..msgs.len() {
        let mut a = scorer();
        feed(&mut a, &msgs[..split]);
        let (b, _) = restart(&a, msgs[split].0);
        assert_eq!(a.due_interval, b.due_interval, "at message {split}");
        assert_eq!(a.due.len(), b.due.len(), "at message {split}");
        held_due += usize::from(!a.due.is_empty());
    }
    assert!(held_due > 0, "the stream must hold a due key at some point");
}

/// The same property fails when the watched key is not saved: the test above can tell.
#[test]
fn without_the_watch_list_the_quiet_domain_is_never_judged() {
    let msgs = stream();
    let split = msgs
        .iter()
        .position(|(t, _)| *t >= at(1_000))
        .expect("the loud network starts");
    let mut b = scorer();
    feed(&mut b, &msgs[..split]);
    let mut snap = b.snapshot();
    assert!(snap.key_names().any(|n| n == "quiet.test"), "{snap:?}");
    assert!(b.state_of("quiet.test").is_some_and(|st| st.watch));
    snap.body.keys.retain(|k| !k.name.ends_with("quiet.test"));
    let mut b = scorer();
    b.restore(snap, msgs[split].0).expect("restores");
    let got = feed(&mut b, &msgs[split..]);
    assert!(
        !got.iter()
            .any(|v| v["domain"] == "quiet.test" && v["level"] == "flux"),
        "{got:#?}"
    );
}

/// Snapshot, restore, snapshot again, at every point of the stream: the same bytes
/// (everything saved comes back as it was, in the same order, counters included).
#[test]
fn a_restored_scorer_snapshots_to_the_same_bytes() {
    let msgs = stream();
    let mut s = scorer();
    for (i, m) in msgs.iter().enumerate() {
        feed(&mut s, std::slice::from_ref(m));
        let first = s.snapshot();
        let stats = first.stats();
        let (restored, rs) = restart(&s, first.taken_at());
        assert_eq!(rs.keys_restored, stats.keys);
        assert_eq!(rs.bots_restored, stats.bots);
        let again = restored.snapshot();
        assert_eq!(again, first, "after message {i}");
        assert_eq!(again.to_bytes().unwrap(), first.to_bytes().unwrap());
    }
    let stats = s.snapshot().stats();
    assert!(stats.keys >= 8 && stats.bots >= 30, "{stats:?}");
}

/// When the table does not fit, the keys that matter most are kept: flux, then suspicious,
/// watched, rotating, and benign keys seen once last.
#[test]
fn a_bounded_snapshot_keeps_what_matters_first() {
    let msgs = stream();
    let split = msgs
        .iter()
        .position(|(t, _)| *t >= at(1_800))
        .expect("mid-stream");
    let mut s = scorer();
    feed(&mut s, &msgs[..split]);
    let tracked = s.stats().keys_tracked as usize;
    let level = |n: &str| s.level_of(n).expect("tracked");
    let order: Vec<(Level, bool, bool)> = s
        .snapshot()
        .key_names()
        .map(|n| {
            let st = s.state_of(n).expect("tracked");
            (level(n), st.watch, rotating(st))
        })
        .collect();
    assert_eq!(order.len(), tracked, "everything fits");
    assert!(order.is_sorted_by(|a, b| a >= b), "{order:?}");
    assert!(
        order.first().is_some_and(|k| k.0 == Level::Flux),
        "{order:?}"
    );
    assert!(order.iter().any(|k| k.1), "a watched key: {order:?}");
    let small = s.snapshot_bounded(3, MAX_SNAPSHOT_BYTES);
    assert_eq!(small.stats().keys, 3);
    assert_eq!(small.stats().keys_left_out, tracked as u64 - 3);
    assert!(
        small
            .key_names()
            .all(|n| level(n) == Level::Flux || s.state_of(n).is_some_and(|st| st.watch))
    );
    let tiny = s.snapshot_bounded(tracked, 1);
    assert_eq!(tiny.stats().keys, 0, "the byte budget bounds it too");
    assert_eq!(tiny.stats().bots, s.snapshot().stats().bots);
}

#[test]
fn an_empty_scorer_round_trips() {
    let s = scorer();
    let snap = s.snapshot();
    assert_eq!(snap.stats(), SnapshotStats::default());
    let bytes = snap.to_bytes().unwrap();
    assert!(bytes.len() < 32, "{} bytes", bytes.len());
    let back = Snapshot::from_bytes(&bytes).unwrap();
    assert_eq!(back, snap);
    let mut fresh = scorer();
    assert_eq!(
        fresh.restore(back, at(0)).unwrap(),
        RestoreStats::default(),
        "nothing to age: restores at any time"
    );
    assert_eq!(fresh.stats().keys_tracked, 0);
}

/// A flux network seen for 35 minutes, a snapshot, and the stream resuming 40 minutes or two
/// hours later: the restored key's addresses are as old as in a scorer that ran on (out of the
/// one-hour window as they pass an hour, still in the day), never re-stamped with the time of
/// the snapshot or of the restart, and every verdict after it is the same.
#[test]
fn a_restart_later_ages_the_windows_by_the_time_between() {
    let mut before = Stream::new();
    for round in 0..8u32 {
        before.push(answer(
            round * 300,
            "www.loud.test",
            300,
            &flux_answer(round),
        ));
    }
    let taken = 7 * 300;
    // (gap, addresses in the one-hour window at the resume time)
    for (gap, in_hour) in [(40 * 60, 25), (2 * 3600, 0)] {
        let resume = taken + gap;
        let after: Stream = (0..3u32)
            .map(|r| answer(resume + r * 300, "www.loud.test", 300, &flux_answer(20 + r)))
            .collect();
        let mut a = scorer();
        feed(&mut a, &before);
        let mut b = scorer();
        feed(&mut b, &before);
        assert_eq!(b.snapshot().taken_at(), at(taken));
        let (mut b, stats) = restart(&b, at(resume));
        assert_eq!(stats.age_secs, u64::from(gap));
        assert_eq!(stats.keys_expired, 0);
        let now = secs(at(resume));
        for s in [&a, &b] {
            let st = s.state_of("www.loud.test").expect("tracked");
            assert_eq!(
                st.features(now, WINDOWS[0]).distinct_ips,
                in_hour,
                "1h window"
            );
            assert_eq!(st.features(now, WINDOWS[1]).distinct_ips, 40, "24h window");
        }
        assert_eq!(feed(&mut b, &after), feed(&mut a, &after), "gap {gap}");
        let end = secs(at(resume + 600));
        for w in WINDOWS {
            let [fa, fb] =
                [&a, &b].map(|s| s.state_of("www.loud.test").map(|st| st.features(end, w)));
            assert_eq!(
                serde_json::to_value(fa).unwrap(),
                serde_json::to_value(fb).unwrap()
            );
        }
    }
}

/// Past the longest window a snapshot is refused; inside it, keys idle for longer are left out
/// and counted; a snapshot from the future (the clock went back) is refused.
#[test]
fn old_snapshots_and_old_keys_are_refused() {
    let day = MAX_SNAPSHOT_AGE_SECS;
    let mut s = scorer();
    // old.test rotates at the start; www.loud.test is seen 23 hours later.
    feed(
        &mut s,
        &[
            answer(0, "old.test", 300, &flux_answer(0)),
            answer(300, "old.test", 300, &flux_answer(1)),
            answer(23 * 3600, "www.loud.test", 300, &flux_answer(2)),
            answer(23 * 3600 + 300, "www.loud.test", 300, &flux_answer(3)),
        ],
    );
    let snap = s.snapshot();
    assert!(snap.key_names().any(|n| n == "old.test"));
    let taken = 23 * 3600 + 300;
    let mut late = scorer();
    let stats = late.restore(snap.clone(), at(day + 400)).unwrap();
    assert_eq!(stats.keys_expired, 1, "{stats:?}");
    assert_eq!(late.level_of("old.test"), None);
    assert!(late.level_of("www.loud.test").is_some());
    match scorer().restore(snap.clone(), at(taken + day + 1)) {
        Err(SnapshotError::TooOld { age_secs, max_secs }) => {
            assert_eq!((age_secs, max_secs), (u64::from(day) + 1, day));
        }
        other => panic!("{other:?}"),
    }
    let mut untouched = scorer();
    let behind = taken - MAX_CLOCK_SKEW_SECS - 1;
    assert!(matches!(
        untouched.restore(snap.clone(), at(behind)),
        Err(SnapshotError::FromTheFuture { ahead_secs }) if ahead_secs == u64::from(MAX_CLOCK_SKEW_SECS) + 1
    ));
    assert_eq!(
        untouched.stats().keys_tracked,
        0,
        "a refused snapshot changes nothing"
    );
    assert!(scorer().restore(snap, at(taken - 10)).is_ok(), "small skew");
}

#[test]
fn damaged_bytes_are_typed_errors() {
    let mut s = scorer();
    feed(&mut s, &stream());
    let bytes = s.snapshot().to_bytes().unwrap();
    for cut in 0..bytes.len() {
        assert!(
            matches!(
                Snapshot::from_bytes(&bytes[..cut]),
                Err(SnapshotError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    for i in HEADER_LEN..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x20;
        assert!(
            matches!(Snapshot::from_bytes(&b), Err(SnapshotError::Checksum)),
            "byte {i} flipped"
        );
    }
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(matches!(
        Snapshot::from_bytes(&b),
        Err(SnapshotError::NotASnapshot)
    ));
    let mut b = bytes.clone();
    b[4] = SNAPSHOT_VERSION + 1;
    assert!(matches!(
        Snapshot::from_bytes(&b),
        Err(SnapshotError::Version { found, supported: SNAPSHOT_VERSION }) if found == SNAPSHOT_VERSION + 1
    ));
    let mut b = bytes.clone();
    b.push(0);
    assert!(matches!(
        Snapshot::from_bytes(&b),
        Err(SnapshotError::Corrupt(_))
    ));
    assert!(
        SnapshotError::Checksum.to_string().contains("corrupt"),
        "errors say what is wrong"
    );
}

/// Past the checksum (bodies framed with a valid one): garbage is `Corrupt`, impossible values
/// are `Invalid`, and nothing panics, in decoding or in restoring what decodes.
#[test]
fn bodies_past_the_checksum_are_checked() {
    let mut s = scorer();
    feed(&mut s, &stream());
    let good = s.snapshot();
    let base = good.taken_at();
    let body = postcard::to_allocvec(&good.body).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3_000 {
        let mut b = body.clone();
        for _ in 0..1 + rand() % 4 {
            let i = (rand() as usize) % b.len();
            b[i] = rand() as u8;
        }
        b.truncate(b.len() - (rand() as usize % 3));
        if let Ok(snap) = Snapshot::from_bytes(&Snapshot::frame_body(&b)) {
            let names: Vec<String> = snap.key_names().map(str::to_owned).collect();
            let mut s = scorer();
            if s.restore(snap, base).is_ok() {
                // What the fuzz target does with a restored scorer, with overflow checks on.
                let again = s.snapshot().to_bytes().unwrap();
                assert!(Snapshot::from_bytes(&again).is_ok());
                for n in &names {
                    let _ = s.explain(n, base);
                    let _ = s.block_targets(n, base);
                }
                feed(&mut s, &stream());
            }
        }
    }
    let mut bad = good.clone();
    bad.body.keys[0].level = 7;
    assert!(matches!(
        scorer().restore(bad, base),
        Err(SnapshotError::Invalid(_))
    ));
    let mut bad = good.clone();
    let ip = bad.body.keys[0].ips[0];
    bad.body.keys[0].ips = vec![ip; MAX_IPS_PER_KEY + 1];
    assert!(matches!(
        scorer().restore(bad, base),
        Err(SnapshotError::Invalid(_))
    ));
    let mut bad = good;
    bad.body.keys[0].last_eval = i64::MIN;
    assert!(matches!(
        scorer().restore(bad, base),
        Err(SnapshotError::Invalid(_))
    ));
    assert!(matches!(
        Snapshot::from_bytes(&Snapshot::frame_body(&[0xff; 40])),
        Err(SnapshotError::Corrupt(_))
    ));
}

/// The figures for the report: snapshot size and time with 100,000 tracked keys. Run with
/// `cargo test -p flux-detect --release -- --ignored snapshot_figures --nocapture`.
#[test]
#[ignore = "a measurement, not a check; run in release"]
fn snapshot_figures() {
    for (label, flux_every) in [("every name flux", 1u32), ("1 name in 100 flux", 100)] {
        let mut s = scorer();
        let mut out = Vec::new();
        // Each name makes two keys (the owner and its registered domain).
        let names = 50_000u32;
        for k in 0..names {
            let name = format!("www.k{k}.test");
            let rounds = if k % flux_every == 0 { 4 } else { 1 };
            for r in 0..rounds {
                // Five addresses per answer, each in its own /16, different for every key.
                let ips: Vec<String> = (0..5u32)
                    .map(|i| {
                        let n = k * 20 + r * 5 + i;
                        format!("{}.{}.{}.9", 1 + n % 200, (n / 200) % 256, n / 51_200)
                    })
                    .collect();
                s.observe(
                    at(r * 300 + k / 100),
                    &response(&name, a_records(&name, 300, &ips)),
                    &mut out,
                );
            }
        }
        let t = Instant::now();
        let snap = s.snapshot();
        let t_snap = t.elapsed();
        let t = Instant::now();
        let bytes = snap.to_bytes().unwrap();
        let t_enc = t.elapsed();
        let t = Instant::now();
        let back = Snapshot::from_bytes(&bytes).unwrap();
        let t_dec = t.elapsed();
        let mut fresh = scorer();
        let t = Instant::now();
        let rs = fresh.restore(back, snap.taken_at()).unwrap();
        let t_restore = t.elapsed();
        let st = snap.stats();
        println!(
            "{label}: tracked {} keys, saved {} (left out {}), {} bots: {} bytes ({:.0} per key); \
             snapshot {:?}, to_bytes {:?}, from_bytes {:?}, restore {:?} ({} restored)",
            s.stats().keys_tracked,
            st.keys,
            st.keys_left_out,
            st.bots,
            bytes.len(),
            bytes.len() as f64 / st.keys.max(1) as f64,
            t_snap,
            t_enc,
            t_dec,
            t_restore,
            rs.keys_restored
        );
        assert!(bytes.len() <= MAX_SNAPSHOT_BYTES + MAX_FLUX_IPS * 32);
    }
}
