//! `flux_blocklist_entries{source, target_kind}`: the blocks in the pinned maps now, by who
//! wrote them (the scorer, an operator with `blocklist add`, a feed) and what they block.
//! Counted on a thread of its own every [`CENSUS_EVERY`], not at scrape time: walking a map
//! costs two syscalls per entry, and the address map holds up to 2^20 entries (a second or
//! more), which must not hold up a scrape, let alone the capture.
//!
//! May touch: the pinned `BLOCKED_*` maps, read only.

use std::{
    path::Path,
    sync::mpsc::{self, RecvTimeoutError, Sender},
    thread::JoinHandle,
    time::Duration,
};

use aya::{
    Pod,
    maps::{HashMap, LpmTrie, Map, MapData},
};
use flux_common::{
    BlockEntry, DomainBlock, MAP_BLOCKED_CIDR_V4, MAP_BLOCKED_CIDR_V6, MAP_BLOCKED_DOMAINS,
    MAP_BLOCKED_V4, MAP_BLOCKED_V6,
};
use log::debug;

use crate::{
    enforce::maps::{boot_ns, source_name},
    kernel::pins,
    ops::metrics::BlocklistGauges,
};

/// How often the maps are counted. Blocks change at most `--max-blocks-per-minute` a minute
/// from the scorer; 15 s keeps the gauge fresh for a dashboard at a cost of one map walk.
pub const CENSUS_EVERY: Duration = Duration::from_secs(15);

/// The counting thread; stopped (and waited for) on drop.
pub struct Census {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Census {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counts the blocks in `pin_dir`'s maps now and every [`CENSUS_EVERY`] into `gauges`.
pub fn spawn(pin_dir: &Path, gauges: BlocklistGauges) -> std::io::Result<Census> {
    let (stop, stopped) = mpsc::channel::<()>();
    let dir = pin_dir.to_owned();
    let thread = std::thread::Builder::new()
        .name("blocklist census".into())
        .spawn(move || {
            loop {
                match count(&dir) {
                    Ok(rows) => gauges.set(&rows),
                    Err(e) => debug!("metrics: cannot count the blocklists: {e}"),
                }
                match stopped.recv_timeout(CENSUS_EVERY) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
    Ok(Census {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// `(source, target_kind, active entries)`; an expired entry no longer blocks and is not
/// counted.
pub type Rows = Vec<(&'static str, &'static str, i64)>;

fn count(dir: &Path) -> Result<Rows, pins::PinError> {
    let now = boot_ns();
    let mut rows = Rows::new();
    let mut add = |source: u8, kind: &'static str| {
        let source = source_name(source);
        match rows.iter_mut().find(|(s, k, _)| *s == source && *k == kind) {
            Some(r) => r.2 += 1,
            None => rows.push((source, kind, 1)),
        }
    };
    for_each_hash::<[u8; 4], BlockEntry>(dir, MAP_BLOCKED_V4, |e| {
        if e.active(now) {
            add(e.source, "ip");
        }
    })?;
    for_each_hash::<[u8; 16], BlockEntry>(dir, MAP_BLOCKED_V6, |e| {
        if e.active(now) {
            add(e.source, "ip");
        }
    })?;
    for_each_hash::<u64, DomainBlock>(dir, MAP_BLOCKED_DOMAINS, |d| {
        if d.entry.active(now) {
            add(d.entry.source, "domain");
        }
    })?;
    for_each_trie::<[u8; 4]>(dir, MAP_BLOCKED_CIDR_V4, |e| {
        if e.active(now) {
            add(e.source, "cidr");
        }
    })?;
    for_each_trie::<[u8; 16]>(dir, MAP_BLOCKED_CIDR_V6, |e| {
        if e.active(now) {
            add(e.source, "cidr");
        }
    })?;
    Ok(rows)
}

fn open_err(dir: &Path, name: &str) -> impl FnOnce(aya::maps::MapError) -> pins::PinError {
    let path = dir.join(name);
    move |e| pins::PinError::Open {
        path,
        reason: e.to_string(),
    }
}

fn for_each_hash<K: Pod, V: Pod>(
    dir: &Path,
    name: &str,
    mut f: impl FnMut(&V),
) -> Result<(), pins::PinError> {
    let data: MapData = pins::open(dir, name)?;
    let map: HashMap<MapData, K, V> =
        HashMap::try_from(Map::HashMap(data)).map_err(open_err(dir, name))?;
    // An entry removed while we walk ends the walk early: counted next time.
    for (_, v) in map.iter().map_while(Result::ok) {
        f(&v);
    }
    Ok(())
}

fn for_each_trie<K: Pod>(
    dir: &Path,
    name: &str,
    mut f: impl FnMut(&BlockEntry),
) -> Result<(), pins::PinError> {
    let data: MapData = pins::open(dir, name)?;
    let map: LpmTrie<MapData, K, BlockEntry> =
        LpmTrie::try_from(Map::LpmTrie(data)).map_err(open_err(dir, name))?;
    for (_, v) in map.iter().map_while(Result::ok) {
        f(&v);
    }
    Ok(())
}
