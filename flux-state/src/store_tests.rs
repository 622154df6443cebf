//! Tests of the store against the real SQLite: schema versions and migrations, failure modes
//! (a corrupt file, a newer schema, a full disk), entries held by several sources, the feed
//! swap, expiry and the journal's bound. Each test works in its own temporary directory.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use rusqlite::Connection;

use crate::{
    Action, Entry, FeedFetch, FeedRecord, Kind, Level, ReasonRecord, SCHEMA_VERSION, Source,
    StateError, Store, Target, VerdictRecord, enforced, from_unix,
};

fn at(s: i64) -> SystemTime {
    from_unix(1_700_000_000 + s)
}

fn dom(s: &str) -> Target {
    Target::domain(s).unwrap()
}

fn block(t: Target, source: Source, expires: Option<i64>) -> Entry {
    Entry {
        added: at(0),
        expires: expires.map(at),
        ..Entry::block(t, source, "test")
    }
}

fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("state.db")).unwrap();
    (dir, s)
}

/// The first schema exactly as version 1 shipped it: a frozen copy, so that an edit of
/// `migrations::V1` (which databases in the field have already run) fails the test below.
const FROZEN_V1: &str = "
CREATE TABLE entries (
    kind TEXT NOT NULL CHECK (kind IN ('block', 'allow')),
    target_type TEXT NOT NULL CHECK (target_type IN ('ip', 'cidr', 'domain')),
    target TEXT NOT NULL, action TEXT NOT NULL, source TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', score REAL, added INTEGER NOT NULL, expires INTEGER,
    PRIMARY KEY (kind, target_type, target, source)
) WITHOUT ROWID;
CREATE INDEX entries_by_expiry ON entries (expires) WHERE expires IS NOT NULL;
CREATE TABLE feeds (
    name TEXT PRIMARY KEY NOT NULL, location TEXT NOT NULL, format TEXT NOT NULL,
    action TEXT NOT NULL, ttl INTEGER, refresh INTEGER, etag TEXT, last_modified TEXT,
    last_refresh INTEGER, last_result TEXT, entry_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE verdicts (
    domain TEXT NOT NULL, level TEXT NOT NULL, score REAL NOT NULL, reasons TEXT NOT NULL,
    first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, addresses TEXT NOT NULL,
    PRIMARY KEY (domain, level)
);
CREATE INDEX verdicts_by_last_seen ON verdicts (last_seen);
CREATE TABLE scorer_state (
    key TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL, bytes BLOB NOT NULL,
    saved INTEGER NOT NULL
);
PRAGMA user_version = 1;
";

/// Every table's columns (name, type, not null, default, key position) and every index name.
fn shape(path: &Path) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut out = Vec::new();
    let mut names = c
        .prepare(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap();
    let objects: Vec<(String, String)> = names
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (kind, name) in objects {
        out.push(format!("{kind} {name}"));
        if kind == "table" {
            let mut cols = c.prepare(&format!("PRAGMA table_info({name})")).unwrap();
            let rows = cols
                .query_map([], |r| {
                    Ok(format!(
                        "  {} {} nn={} def={:?} pk={}",
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?
                    ))
                })
                .unwrap();
            out.extend(rows.map(Result::unwrap));
        }
    }
    out
}

#[test]
fn a_new_database_is_wal_and_at_the_current_version() {
    let (dir, s) = fresh();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    let mode: String = s
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    s.check().unwrap();
    drop(s);
    // Opening again changes nothing.
    let s = Store::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn a_version_1_database_made_by_hand_migrates_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("v1.db");
    {
        let c = Connection::open(&old).unwrap();
        c.execute_batch(FROZEN_V1).unwrap();
        c.execute_batch(
            "INSERT INTO entries VALUES ('block', 'domain', 'evil.example', 'block', 'manual',
                 'by hand', NULL, 1700000000, NULL);
             INSERT INTO entries VALUES ('block', 'ip', '192.0.2.7', 'block', 'feed:f', '', NULL,
                 1700000000, 1800000000);
             INSERT INTO feeds (name, location, format, action, entry_count)
                 VALUES ('f', '/x', 'plain', 'block', 1);
             INSERT INTO verdicts VALUES ('flux.example', 'flux', 0.9,
                 '[{\"feature\":\"answer_networks\",\"contribution\":1.5}]',
                 1700000000, 1700000100, '[\"192.0.2.7\"]');",
        )
        .unwrap();
    }
    let s = Store::open(&old).unwrap();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    let e = s.entries_for(Kind::Block, &dom("evil.example")).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].reason, "by hand");
    assert!(
        e[0].subdomains,
        "v2's default: every v1 entry covered subdomains"
    );
    let f = s.feed("f").unwrap().unwrap();
    assert_eq!((f.entry_count, f.action), (1, Action::Block));
    let v = s.verdicts_for("flux.example").unwrap();
    assert_eq!(v[0].reasons[0].feature, "answer_networks");
    drop(s);
    // The migrated database has exactly the shape of a new one.
    let new = dir.path().join("new.db");
    drop(Store::open(&new).unwrap());
    assert_eq!(shape(&old), shape(&new));
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state.db");
    drop(Store::open(&p).unwrap());
    Connection::open(&p)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .unwrap();
    let before = std::fs::read(&p).unwrap();
    for r in [Store::open(&p), Store::open_read_only(&p)] {
        match r {
            Err(e @ StateError::TooNew { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("state.db") && msg.contains("newer"), "{msg}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
    }
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

#[test]
fn a_file_that_is_not_a_database_is_reported_and_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state.db");
    let junk: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&p, &junk).unwrap();
    for r in [Store::open(&p), Store::open_read_only(&p)] {
        match r {
            Err(e @ StateError::Corrupt { .. }) => {
                assert!(e.to_string().contains(&p.display().to_string()), "{e}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("junk opened as a database"),
        }
    }
    assert_eq!(std::fs::read(&p).unwrap(), junk, "the file was changed");
}

#[test]
fn another_programs_database_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("other.db");
    Connection::open(&p)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    let err = Store::open(&p).err().expect("opened a foreign database");
    assert!(matches!(err, StateError::Invalid { .. }), "{err}");
    assert!(
        err.to_string().contains("not a flux-agent state database"),
        "{err}"
    );
    let tables: i64 = Connection::open(&p)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "no table of ours was added");
}

#[test]
fn damaged_pages_fail_the_check_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state.db");
    {
        let mut s = Store::open(&p).unwrap();
        let rows: Vec<Entry> = (0..3000)
            .map(|i| block(dom(&format!("n{i}.example")), Source::Manual, None))
            .collect();
        s.add_entries(&rows).unwrap();
        s.checkpoint().unwrap();
    }
    let mut bytes = std::fs::read(&p).unwrap();
    assert!(bytes.len() > 16 * 4096, "{}", bytes.len());
    // Pages 3 to 6 overwritten: the header and the schema page stay readable.
    for (i, b) in bytes[2 * 4096..6 * 4096].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    std::fs::write(&p, &bytes).unwrap();
    let s = Store::open(&p).unwrap();
    match s.check() {
        Err(e @ StateError::Corrupt { .. }) => {
            assert!(e.to_string().contains("state.db"), "{e}");
        }
        other => panic!("the check passed a damaged database: {other:?}"),
    }
}

#[test]
fn a_full_disk_is_a_typed_error_and_keeps_the_previous_feed_whole() {
    let (_dir, mut s) = fresh();
    s.upsert_feed(&FeedRecord::new("big", "/f", "plain", Action::Block))
        .unwrap();
    let first: Vec<Entry> = (0..50)
        .map(|i| block(dom(&format!("old{i}.example")), Source::feed("big"), None))
        .collect();
    s.apply_feed("big", &first, &FeedFetch::default()).unwrap();
    let pages: i64 = s
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    s.set_max_pages(u32::try_from(pages).unwrap() + 2).unwrap();
    let huge: Vec<Entry> = (0..20_000)
        .map(|i| block(dom(&format!("new{i}.example")), Source::feed("big"), None))
        .collect();
    let err = s
        .apply_feed("big", &huge, &FeedFetch::default())
        .unwrap_err();
    assert!(err.is_full(), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    // Rolled back whole: the old 50 are there, none of the new.
    let live = s.effective_entries(Some(Kind::Block), at(0)).unwrap();
    assert_eq!(live.len(), 50);
    assert!(live.iter().all(|e| e.target.to_string().starts_with("old")));
    assert_eq!(s.feed("big").unwrap().unwrap().entry_count, 50);
    // And the store goes on: a small write fits again once there is room.
    s.set_max_pages(1 << 30).unwrap();
    s.add_entries(&[block(dom("later.example"), Source::Manual, None)])
        .unwrap();
}

#[test]
fn a_target_stays_while_any_source_holds_it() {
    let (_dir, mut s) = fresh();
    s.upsert_feed(&FeedRecord::new("f", "/f", "plain", Action::Block))
        .unwrap();
    let t = dom("evil.example");
    s.add_entries(&[block(t.clone(), Source::Manual, Some(100))])
        .unwrap();
    let fed = s
        .apply_feed(
            "f",
            &[Entry {
                action: Action::Report,
                ..block(t.clone(), Source::Manual, None)
            }],
            &FeedFetch::default(),
        )
        .unwrap();
    assert!(fed.added.is_empty(), "already held by the manual block");
    let eff = s.effective_entries(None, at(0)).unwrap();
    assert_eq!(eff.len(), 1);
    assert_eq!(eff[0].sources, vec![Source::Manual, Source::feed("f")]);
    assert_eq!(eff[0].expires, None, "the feed's entry is permanent");
    assert_eq!(eff[0].action, Action::Block, "the strongest action");
    // Removing the feed keeps the manual block.
    let r = s.remove_feed("f").unwrap().unwrap();
    assert_eq!((r.rows, r.gone.len()), (1, 0));
    assert!(s.feed("f").unwrap().is_none());
    let eff = s.effective_entries(None, at(0)).unwrap();
    assert_eq!(eff[0].sources, vec![Source::Manual]);
    assert_eq!(eff[0].expires, Some(at(100)));
    // Its last source gone, the target is gone.
    let r = s.remove(Kind::Block, &t, Some(&Source::Manual)).unwrap();
    assert_eq!(r.gone, vec![(Kind::Block, t)]);
    assert!(s.remove_feed("f").unwrap().is_none());
}

#[test]
fn applying_a_feed_swaps_its_entries_and_reports_the_difference() {
    let (_dir, mut s) = fresh();
    assert!(matches!(
        s.apply_feed("nope", &[], &FeedFetch::default()),
        Err(StateError::Invalid { .. })
    ));
    s.upsert_feed(&FeedRecord::new("f", "http://x/f", "hosts", Action::Block))
        .unwrap();
    s.add_entries(&[block(dom("shared.example"), Source::Scorer, None)])
        .unwrap();
    let feed = |names: &[&str]| -> Vec<Entry> {
        names
            .iter()
            .map(|n| block(dom(n), Source::Manual, None))
            .collect()
    };
    let fetch = FeedFetch {
        etag: Some("\"v1\"".into()),
        last_modified: None,
        at: Some(at(5)),
    };
    let r = s
        .apply_feed(
            "f",
            &feed(&["a.example", "b.example", "shared.example", "a.example"]),
            &fetch,
        )
        .unwrap();
    assert_eq!(r.count, 3, "a duplicate is one row");
    assert_eq!(
        r.added,
        vec![
            (Kind::Block, dom("a.example")),
            (Kind::Block, dom("b.example"))
        ]
    );
    let f = s.feed("f").unwrap().unwrap();
    assert_eq!(f.etag.as_deref(), Some("\"v1\""));
    assert_eq!(f.last_refresh, Some(at(5)));
    assert_eq!(f.last_result.as_deref(), Some("ok: 3 entries"));
    // The next list drops b and shared, adds c: b is gone, shared stays (the scorer's).
    let r = s
        .apply_feed(
            "f",
            &feed(&["a.example", "c.example"]),
            &FeedFetch::default(),
        )
        .unwrap();
    assert_eq!(r.added, vec![(Kind::Block, dom("c.example"))]);
    assert_eq!(r.gone, vec![(Kind::Block, dom("b.example"))]);
    let sources = s.entries_for(Kind::Block, &dom("a.example")).unwrap();
    assert_eq!(
        sources[0].source,
        Source::feed("f"),
        "source set by the swap"
    );
    s.record_feed_result("f", at(9), "unreachable: keeping 2 entries")
        .unwrap();
    assert_eq!(s.feed("f").unwrap().unwrap().entry_count, 2);
}

/// The swap writes only the difference: an unchanged list changes no row, and a feed with a
/// ttl rewrites an expiry only once less than half the ttl is left (`RENEW_BELOW`).
#[test]
fn an_unchanged_feed_writes_nothing_and_expiry_is_renewed_at_half_the_ttl() {
    let (_dir, mut s) = fresh();
    let day: i64 = 86_400;
    s.upsert_feed(&FeedRecord {
        ttl: Some(Duration::from_secs(day.unsigned_abs())),
        ..FeedRecord::new("f", "/f", "plain", Action::Block)
    })
    .unwrap();
    let list = |expires: i64| -> Vec<Entry> {
        ["a.example", "b.example"]
            .iter()
            .map(|n| block(dom(n), Source::feed("f"), Some(expires)))
            .collect()
    };
    let changes = |s: &Store| -> i64 {
        s.conn
            .query_row("SELECT total_changes()", [], |r| r.get(0))
            .unwrap()
    };
    let first = s
        .apply_feed("f", &list(day), &FeedFetch::default())
        .unwrap();
    assert_eq!((first.added.len(), first.renewed.len()), (2, 0));
    // An hour later: the wanted expiry moved an hour; nothing is rewritten.
    let before = changes(&s);
    let r = s
        .apply_feed("f", &list(day + 3_600), &FeedFetch::default())
        .unwrap();
    assert!(
        r.added.is_empty() && r.gone.is_empty() && r.renewed.is_empty(),
        "{r:?}"
    );
    assert_eq!(
        changes(&s) - before,
        1,
        "only the feed's own row (its fetch state)"
    );
    let stored = s.entries_for(Kind::Block, &dom("a.example")).unwrap();
    assert_eq!(stored[0].expires, Some(at(day)), "not rewritten");
    // More than half a day later: both renewed, and said so.
    let r = s
        .apply_feed("f", &list(day + day / 2 + 1), &FeedFetch::default())
        .unwrap();
    assert_eq!(r.renewed.len(), 2, "{r:?}");
    let stored = s.entries_for(Kind::Block, &dom("a.example")).unwrap();
    assert_eq!(stored[0].expires, Some(at(day + day / 2 + 1)));
}

#[test]
fn expiry_removes_rows_and_reports_targets_left_with_none() {
    let (_dir, mut s) = fresh();
    s.add_entries(&[
        block(dom("short.example"), Source::Scorer, Some(10)),
        block(dom("both.example"), Source::Scorer, Some(10)),
        block(dom("both.example"), Source::Manual, Some(50)),
        block(dom("never.example"), Source::Manual, None),
    ])
    .unwrap();
    assert_eq!(s.effective_entries(None, at(5)).unwrap().len(), 3);
    let both = s.effective_entries(None, at(5)).unwrap();
    assert_eq!(both[0].expires, Some(at(50)), "the latest expiry");
    let x = s.expire(at(10)).unwrap();
    assert_eq!(x.rows.len(), 2);
    assert_eq!(x.gone, vec![(Kind::Block, dom("short.example"))]);
    assert_eq!(s.effective_entries(None, at(10)).unwrap().len(), 2);
    assert!(s.expire(at(10)).unwrap().rows.is_empty());
}

#[test]
fn readers_open_read_only_beside_a_writer() {
    let (dir, mut s) = fresh();
    s.add_entries(&[block(dom("r.example"), Source::Manual, None)])
        .unwrap();
    let r = Store::open_read_only(&dir.path().join("state.db")).unwrap();
    assert_eq!(r.entry_count().unwrap(), 1);
    let mut r = r;
    let err = r
        .add_entries(&[block(dom("w.example"), Source::Manual, None)])
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
    let missing = Store::open_read_only(&dir.path().join("missing.db"));
    assert!(matches!(missing, Err(StateError::Unreadable { .. })));
}

fn verdict(domain: &str, level: Level, score: f64, seen: i64, addrs: &[&str]) -> VerdictRecord {
    VerdictRecord {
        reasons: vec![ReasonRecord {
            feature: "answer_networks".into(),
            contribution: score,
        }],
        addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        ..VerdictRecord::new(domain, level, score, at(seen))
    }
}

#[test]
fn the_journal_upserts_per_domain_and_level() {
    let (_dir, mut s) = fresh();
    s.journal_verdict(&verdict(
        "Flux.Example.",
        Level::Suspicious,
        0.5,
        0,
        &["192.0.2.1"],
    ))
    .unwrap();
    s.journal_verdict(&verdict(
        "flux.example",
        Level::Flux,
        0.8,
        10,
        &["192.0.2.2"],
    ))
    .unwrap();
    s.journal_verdict(&verdict(
        "flux.example",
        Level::Flux,
        0.9,
        20,
        &["192.0.2.3"],
    ))
    .unwrap();
    assert_eq!(s.journal_len().unwrap(), 2);
    let v = s.verdicts_for("flux.example").unwrap();
    let flux = v.iter().find(|v| v.level == Level::Flux).unwrap();
    assert_eq!(
        (flux.first_seen, flux.last_seen, flux.score),
        (at(10), at(20), 0.9)
    );
    let addrs: Vec<String> = flux.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(addrs, ["192.0.2.3", "192.0.2.2"], "newest first");
    assert_eq!(s.verdicts(None, Level::Flux).unwrap().len(), 1);
    assert_eq!(s.verdicts(Some(at(15)), Level::Benign).unwrap().len(), 1);
}

#[test]
fn the_journal_is_bounded_oldest_last_seen_first() {
    let (dir, mut s) = fresh();
    s.set_journal_cap(100);
    let batch: Vec<VerdictRecord> = (0..150)
        .map(|i| verdict(&format!("n{i}.example"), Level::Flux, 0.9, i, &[]))
        .collect();
    s.journal_verdicts(&batch).unwrap();
    assert_eq!(s.journal_len().unwrap(), 100);
    // The 50 oldest went; renewing an old one keeps it, and the next insert prunes another.
    assert!(s.verdicts_for("n49.example").unwrap().is_empty());
    s.journal_verdict(&verdict("n50.example", Level::Flux, 0.9, 500, &[]))
        .unwrap();
    s.journal_verdict(&verdict("fresh.example", Level::Flux, 0.9, 501, &[]))
        .unwrap();
    assert_eq!(s.journal_len().unwrap(), 100);
    assert_eq!(s.verdicts_for("n50.example").unwrap().len(), 1);
    assert!(s.verdicts_for("n51.example").unwrap().is_empty());
    // A new connection counts the rows again and keeps the bound.
    drop(s);
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    s.set_journal_cap(100);
    s.journal_verdict(&verdict("later.example", Level::Flux, 0.9, 600, &[]))
        .unwrap();
    assert_eq!(s.journal_len().unwrap(), 100);
}

#[test]
fn an_unknown_stored_value_is_a_bad_row_not_a_panic() {
    let (_dir, s) = fresh();
    s.conn
        .execute_batch(
            "INSERT INTO entries (kind, target_type, target, action, source, added)
             VALUES ('block', 'ip', '192.0.2.1', 'explode', 'manual', 0)",
        )
        .unwrap();
    let err = s.effective_entries(None, at(0)).unwrap_err();
    assert!(matches!(err, StateError::BadRow { .. }), "{err}");
    assert!(err.to_string().contains("explode"), "{err}");
}

/// A tmpfs mounted for one test, unmounted on drop (also when the test fails).
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A real full disk: a 1 MiB tmpfs filled by a feed. Needs root (mount); skips without it,
/// except under CI, where it fails.
#[test]
fn a_real_full_tmpfs_is_a_typed_error_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "flux-state-test"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs (root needed) under CI"
        );
        eprintln!("skipped: cannot mount a tmpfs (not root?)");
        return;
    }
    let _guard = Tmpfs(dir.path().to_owned());
    let path = dir.path().join("state.db");
    let mut s = Store::open(&path).unwrap();
    s.upsert_feed(&FeedRecord::new("f", "/f", "plain", Action::Block))
        .unwrap();
    let small: Vec<Entry> = (0..100)
        .map(|i| block(dom(&format!("small{i}.example")), Source::feed("f"), None))
        .collect();
    s.apply_feed("f", &small, &FeedFetch::default()).unwrap();
    let big: Vec<Entry> = (0..50_000)
        .map(|i| block(dom(&format!("big{i}.example")), Source::feed("f"), None))
        .collect();
    let err = s.apply_feed("f", &big, &FeedFetch::default()).unwrap_err();
    assert!(err.is_full(), "{err}");
    assert!(err.to_string().contains("state.db"), "{err}");
    // The old feed is whole, and the store answers.
    assert_eq!(s.effective_entries(None, at(0)).unwrap().len(), 100);
    assert_eq!(s.feed("f").unwrap().unwrap().entry_count, 100);
    drop(s);
    // Reopened after the failure: intact.
    let s = Store::open(&path).unwrap();
    s.check().unwrap();
    assert_eq!(s.entry_count().unwrap(), 100);
}

#[test]
fn a_writer_waits_for_another_connections_lock_instead_of_failing() {
    let (dir, mut s) = fresh();
    let path = dir.path().join("state.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut c = Connection::open(&path).unwrap();
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        tx.commit().unwrap();
    });
    locked_rx.recv().unwrap();
    let t = std::time::Instant::now();
    // Without the busy timeout this fails at once with "database is locked".
    s.add_entries(&[block(dom("w.example"), Source::Manual, None)])
        .unwrap();
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(200),
        "did not wait"
    );
    holder.join().unwrap();
    let missing = Store::open(&dir.path().join("no/such/dir/state.db"));
    assert!(matches!(missing, Err(StateError::Unreadable { .. })));
}

/// A feed longer than one statement's batch (`upsert_batch::UPSERT_ROWS`) reads back row for
/// row as it was listed: every field bound in its place, the short last batch included.
#[test]
fn a_feed_of_several_batches_reads_back_field_for_field() {
    let (_dir, mut s) = fresh();
    s.upsert_feed(&FeedRecord::new("f", "/f", "plain", Action::Block))
        .unwrap();
    let n = 3 * crate::upsert_batch::UPSERT_ROWS + 7;
    let list: Vec<Entry> = (0..n)
        .map(|i| {
            let target = if i % 3 == 0 {
                Target::Ip(std::net::IpAddr::from([192, 0, 2, (i % 250) as u8 + 1]))
            } else {
                dom(&format!("n{i}.example"))
            };
            Entry {
                kind: if i % 5 == 0 { Kind::Allow } else { Kind::Block },
                action: if i % 2 == 0 {
                    Action::Block
                } else {
                    Action::Report
                },
                reason: format!("reason {i}"),
                score: (i % 4 == 0).then_some(i as f64 / 1000.0),
                expires: (i % 3 != 1).then(|| at(86_400 + i as i64)),
                subdomains: i % 7 != 0,
                ..block(target, Source::feed("f"), None)
            }
        })
        .collect();
    let r = s.apply_feed("f", &list, &FeedFetch::default()).unwrap();
    assert_eq!(r.count, n);
    for want in &list {
        let got = s.entries_for(want.kind, &want.target).unwrap();
        assert_eq!(got, vec![want.clone()], "{}", want.target);
    }
}

/// The swap's difference, with new, kept, changed and dropped rows interleaved in key order
/// (the stored rows and the list are walked side by side): each target lands in exactly one
/// of added, renewed and gone, and the table ends holding the second list.
#[test]
fn a_swap_interleaving_every_kind_of_change_writes_exactly_the_difference() {
    let (_dir, mut s) = fresh();
    s.upsert_feed(&FeedRecord::new("f", "/f", "plain", Action::Block))
        .unwrap();
    let entry = |n: &str, reason: &str| Entry {
        reason: reason.into(),
        ..block(dom(n), Source::feed("f"), None)
    };
    let first: Vec<Entry> = ["b", "d", "f", "h"]
        .iter()
        .map(|n| entry(&format!("{n}.example"), "r"))
        .collect();
    s.apply_feed("f", &first, &FeedFetch::default()).unwrap();
    let second = vec![
        entry("i.example", "r"),
        entry("a.example", "r"),
        entry("d.example", "changed"),
        entry("e.example", "r"),
        entry("h.example", "r"),
    ];
    let r = s.apply_feed("f", &second, &FeedFetch::default()).unwrap();
    let names =
        |v: &[(Kind, Target)]| -> Vec<String> { v.iter().map(|(_, t)| t.to_string()).collect() };
    assert_eq!(names(&r.added), ["a.example", "e.example", "i.example"]);
    assert_eq!(names(&r.renewed), ["d.example"]);
    assert_eq!(names(&r.gone), ["b.example", "f.example"]);
    assert_eq!(r.count, 5);
    for want in &second {
        let got = s.entries_for(Kind::Block, &want.target).unwrap();
        assert_eq!(got, vec![want.clone()], "{}", want.target);
    }
    for gone in ["b.example", "f.example"] {
        assert!(s.entries_for(Kind::Block, &dom(gone)).unwrap().is_empty());
    }
}

/// A clean close leaves the database whole in its one file: SQLite checkpoints the WAL and
/// deletes it when the last connection closes. The agent keeps three connections (write path,
/// journal, scorer memory); once all three are closed, no `-wal` is left beside the file.
#[test]
fn closing_every_connection_leaves_no_wal_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut a = Store::open(&path).unwrap();
    let b = Store::open(&path).unwrap();
    let c = Store::open(&path).unwrap();
    a.add_entries(&[block(dom("a.example"), Source::Manual, None)])
        .unwrap();
    assert!(path.with_extension("db-wal").exists());
    drop(b);
    drop(c);
    drop(a);
    assert!(
        !path.with_extension("db-wal").exists(),
        "-wal left after the last connection closed"
    );
}

#[test]
fn a_target_is_held_enforced_exactly_when_the_effective_entries_enforce_it() {
    let (_d, mut s) = fresh();
    let (x, y, z, w) = (dom("x.test"), dom("y.test"), dom("z.test"), dom("w.test"));
    let report = |t: Target| Entry {
        action: Action::Report,
        ..block(t, Source::feed("watch"), None)
    };
    s.add_entries(&[
        // x: one source expired at 10, another live until 20.
        block(x.clone(), Source::Manual, Some(10)),
        block(x.clone(), Source::feed("f"), Some(20)),
        // y: reported only.
        report(y.clone()),
        // z: reported, and blocked for good by another source.
        report(z.clone()),
        block(z.clone(), Source::Scorer, None),
        // w: allowed, not blocked.
        Entry {
            kind: Kind::Allow,
            ..block(w.clone(), Source::Manual, None)
        },
    ])
    .unwrap();
    let unknown = dom("unknown.test");
    for now in [0, 10, 15, 20, 30] {
        let eff = s.effective_entries(None, at(now)).unwrap();
        for kind in [Kind::Block, Kind::Allow] {
            for t in [&x, &y, &z, &w, &unknown] {
                let want = eff
                    .iter()
                    .any(|e| e.kind == kind && e.target == *t && enforced(e));
                let held = s.holds_enforced(kind, t, at(now)).unwrap();
                assert_eq!(held, want, "{kind:?} {t} at {now}");
            }
        }
    }
    // The cases the loop went through, spelled out.
    assert!(s.holds_enforced(Kind::Block, &x, at(15)).unwrap());
    assert!(
        !s.holds_enforced(Kind::Block, &x, at(20)).unwrap(),
        "expired"
    );
    assert!(
        !s.holds_enforced(Kind::Block, &y, at(0)).unwrap(),
        "reported"
    );
    assert!(s.holds_enforced(Kind::Block, &z, at(30)).unwrap());
    assert!(s.holds_enforced(Kind::Allow, &w, at(0)).unwrap());
    assert!(
        !s.holds_enforced(Kind::Block, &w, at(0)).unwrap(),
        "another kind"
    );
}
