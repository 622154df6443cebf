//! Saving and restoring what the scorer learned, so that a restart or a reboot keeps it: the
//! shared-bot table and the keys that matter across a restart (flux and suspicious keys, keys
//! whose addresses are bots, keys watched for shared bots), each with its full state. Bytes out,
//! bytes in: the agent stores them (its database's `scorer_state` table); nothing here touches a
//! file. Reads and writes only the scorer's own tables (`score.rs`, `key_state.rs`, `shared.rs`).
//!
//! **Format.** [`MAGIC`] (4 bytes), [`SNAPSHOT_VERSION`] (1 byte), the body's length (4 bytes,
//! little-endian), the body, a CRC-32 of everything before it (4 bytes, little-endian). The
//! body is the `Wire*` structs below in postcard. Postcard rather than bincode: its wire format
//! is written down (the postcard specification) and frozen for all of 1.x, so the bytes are the
//! struct definitions below and nothing else (no configuration to get wrong); integers are
//! varints, and most of what a snapshot holds is small (ages of a few minutes, counts, flags),
//! so a key costs about half its fixed-width size. The length and the checksum make a cut or
//! damaged blob a typed error instead of a plausible wrong state (postcard alone decodes many
//! damaged inputs without complaint). Any change to a `Wire*` struct, to what a field means, to
//! `WINDOWS.len()` or to how domain ids are computed (`score::domain_id`, fnv32 of the
//! registered domain) needs a new [`SNAPSHOT_VERSION`]; an older snapshot is then refused and
//! the scorer starts empty, as it did before snapshots existed.
//!
//! **Names and ids.** Keys are saved by name and re-interned on restore (key ids are hashes
//! seeded per scorer). The shared-bot table's owners and stable users are domain ids that are
//! not seeded (fnv32 of the registered domain, the same in every process), so they are saved as
//! they are: the table does not keep names, and keeping one per bot would cost ~20 bytes on
//! each of its 262,144 entries for nothing a restart needs.
//!
//! **Time.** The scorer's clock is observation time in Unix seconds (u32). A snapshot records its
//! time base, `taken_at` (the latest observation the scorer had seen, Unix seconds), and every
//! time as an age before it (signed: `changes_at` lies ahead). Restore maps each back to
//! `taken_at - age` on the same clock, so a restart an hour later finds every entry an hour
//! older and windows age by that hour; nothing is re-stamped with the restart time.

use std::{net::Ipv4Addr, time::SystemTime};

use serde::{Deserialize, Serialize};

use super::{
    AddrInfo, KeyState, Level, Scorer, Tracked, WINDOWS, from_secs, is_infrastructure,
    key_state::{NsHost, NsTable, Rrset},
    params::{
        INFRA_STABLE_DOMAINS, MAX_CHAIN, MAX_FLUX_IPS, MAX_GLUE, MAX_IPS_PER_KEY, MAX_NS_HOSTS,
        MAX_RRSETS, MIN_RRSETS_FOR_FLUX,
    },
    secs,
};

/// The format of [`Snapshot::to_bytes`]; see the module comment for when it changes.
/// 2: answers keep which name under a registered domain gave them (`Rrset::child`,
/// `Rrset::seen_again`, issue 12's parent rule).
pub const SNAPSHOT_VERSION: u8 = 2;
/// First bytes of every snapshot: bytes without them are not a snapshot at all (an empty or
/// foreign blob), which says more than a checksum error.
const MAGIC: [u8; 4] = *b"FXSS";
/// Magic, version and body length.
const HEADER_LEN: usize = 9;
/// The CRC-32 at the end.
const CRC_LEN: usize = 4;

/// Keys a snapshot holds at most, the most useful first (see [`Scorer::snapshot`]): four
/// times `WATCHED_KEYS` (16,384), so every watched key fits with room for three times as many
/// flux, suspicious and rotating keys (real traffic has hundreds of flux and suspicious keys).
/// Measured (`snapshot_figures`, 100,000 tracked keys): 140 bytes a key when one name in 100
/// is flux (9 MB at this bound, 0.1 s to take, 0.1 s to restore), 470 bytes a key when every
/// key holds 20 addresses of a flux network (31 MB with a full bot table, under a second each
/// way). A busy resolver's table (1,000,000 keys) does not fit whole: its benign keys seen
/// with one answer are what is left out.
pub const MAX_SNAPSHOT_KEYS: usize = 65_536;
/// Keys stop being added once their encoded size passes this: the worst case of
/// [`MAX_SNAPSHOT_KEYS`] keys each full of addresses (`MAX_IPS_PER_KEY`, ~3 KB a key) would be
/// about 200 MB, too much for a blob the agent writes every few minutes and reads at start.
/// The bot table is bounded apart (`MAX_FLUX_IPS` entries, ~11 bytes each, 3 MB).
pub const MAX_SNAPSHOT_BYTES: usize = 32 << 20;
/// A snapshot older than this (seconds between its `taken_at` and the restoring clock) is
/// refused, and a key whose last activity is older is left out: the longest window. Past it
/// every window of the key is empty, so its level and watch flag rest on evidence it no longer
/// has, and the bots of a snapshot that old were shown by keys whose evidence is all gone.
pub const MAX_SNAPSHOT_AGE_SECS: u32 = WINDOWS[WINDOWS.len() - 1].0;
/// A snapshot taken at most this far (seconds) after the restoring clock's time is still
/// restored: NTP corrections and the agent's monotonic-to-wall-clock conversion move the clock
/// by seconds. Beyond it the clock went back (an unset RTC at boot), and every restored time
/// would sit in the future, counting in every window until the clock caught up.
pub const MAX_CLOCK_SKEW_SECS: u32 = 300;
/// Longest key or NS host name accepted: a DNS name is at most 255 octets, rendered with
/// `\ddd` escapes at most four times that.
const MAX_NAME_BYTES: usize = 1024;

/// What the scorer learned, ready to save ([`Snapshot::to_bytes`]) or to restore
/// ([`Scorer::restore`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    body: Body,
}

/// What a snapshot holds, for logs and the agent's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotStats {
    pub keys: u64,
    /// Keys that did not fit ([`MAX_SNAPSHOT_KEYS`], [`MAX_SNAPSHOT_BYTES`]).
    pub keys_left_out: u64,
    pub watched: u64,
    pub bots: u64,
}

/// What [`Scorer::restore`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreStats {
    /// Seconds between the snapshot's time base and the restoring clock.
    pub age_secs: u64,
    pub keys_restored: u64,
    /// Keys whose last activity was older than [`MAX_SNAPSHOT_AGE_SECS`]: not restored.
    pub keys_expired: u64,
    /// Keys the scorer already tracked: its own, newer state is kept.
    pub keys_already_tracked: u64,
    /// Keys pushed out again because the scorer's key table is smaller than the snapshot.
    pub keys_evicted: u64,
    pub watched: u64,
    pub bots_restored: u64,
    /// Bots no longer taken as bots: the current allowlist or first-party list covers them.
    pub bots_allowlisted: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("scorer snapshot is truncated: {len} bytes where {needed} are needed")]
    Truncated { len: usize, needed: usize },
    #[error("not a scorer snapshot (it does not start with the snapshot magic)")]
    NotASnapshot,
    #[error("scorer snapshot format version {found}; this build reads version {supported}")]
    Version { found: u8, supported: u8 },
    #[error("scorer snapshot is corrupt: its checksum does not match")]
    Checksum,
    #[error("scorer snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("scorer snapshot holds an impossible value: {0}")]
    Invalid(String),
    #[error(
        "scorer snapshot is {age_secs} s old, older than the {max_secs} s of the longest window"
    )]
    TooOld { age_secs: u64, max_secs: u32 },
    #[error(
        "scorer snapshot was taken {ahead_secs} s after the restoring clock's time (the clock went back)"
    )]
    FromTheFuture { ahead_secs: u64 },
    #[error("encoding the scorer snapshot failed: {0}")]
    Encode(String),
}

/// A time as an age before the snapshot's `taken_at` (negative: after it).
type Age = i64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Body {
    /// Unix seconds of the latest observation the scorer had seen: the time base.
    taken_at: u64,
    keys_left_out: u64,
    /// The bot table's counters and the sweep of watched keys (`Scorer::sweep_watched`).
    bots_added: u64,
    bots_swept: u64,
    infrastructure: u64,
    last_sweep: Age,
    /// Least recently added first.
    bots: Vec<WireBot>,
    /// Highest priority first (see [`MAX_SNAPSHOT_KEYS`]).
    keys: Vec<WireKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
enum WireIp {
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct WireBot {
    ip: WireIp,
    owner: u32,
    /// Non-zero domain ids only.
    stable_users: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct WireAddr {
    ip: WireIp,
    asn: u32,
    network: u32,
    country: [u8; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct WireKeyIp {
    addr: WireAddr,
    last: Age,
    /// `KeyState::bot_marks`.
    bot_marks: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct WireRrset {
    hash: u32,
    last: Age,
    ttl: u32,
    valid_for: u16,
    returns: u8,
    size: u8,
    new: u8,
    networks: u8,
    new_networks: u8,
    first: bool,
    seen_again: bool,
    child: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct WireNsHost {
    name: String,
    last: Age,
    glue_set_max: u8,
    glue: Vec<(WireAddr, Age)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct WireNs {
    max_set: u8,
    hosts: Vec<WireNsHost>,
}

/// Every field of [`KeyState`], times as ages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct WireKey {
    name: String,
    first_seen: Age,
    responses: u32,
    changes: u8,
    level: u8,
    last_eval: Age,
    roles: u8,
    marks: u8,
    shares_bots: bool,
    watch: bool,
    allowed_by: Option<String>,
    customers: u16,
    block_minute: u8,
    dirty: bool,
    changes_at: Age,
    last_shared: [u8; WINDOWS.len()],
    chain: Vec<String>,
    ips: Vec<WireKeyIp>,
    rrsets: Vec<WireRrset>,
    ns: Option<WireNs>,
}

impl Snapshot {
    /// The versioned binary form (see the module comment).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4096);
        out.extend_from_slice(&MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&[0; 4]);
        let mut out = postcard::to_extend(&self.body, out)
            .map_err(|e| SnapshotError::Encode(e.to_string()))?;
        let body_len = u32::try_from(out.len() - HEADER_LEN)
            .map_err(|_| SnapshotError::Encode("body longer than 4 GiB".into()))?;
        if let Some(len) = out.get_mut(5..HEADER_LEN) {
            len.copy_from_slice(&body_len.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Reads [`Self::to_bytes`]'s form; any other input is a typed error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let truncated = |needed| SnapshotError::Truncated {
            len: bytes.len(),
            needed,
        };
        let Some((magic, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(truncated(HEADER_LEN + CRC_LEN));
        };
        if *magic != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let Some((&version, rest)) = rest.split_first() else {
            return Err(truncated(HEADER_LEN + CRC_LEN));
        };
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let Some((len, rest)) = rest.split_first_chunk::<4>() else {
            return Err(truncated(HEADER_LEN + CRC_LEN));
        };
        let body_len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
        let needed = HEADER_LEN.saturating_add(body_len).saturating_add(CRC_LEN);
        if rest.len() < body_len.saturating_add(CRC_LEN) {
            return Err(truncated(needed));
        }
        if bytes.len() > needed {
            return Err(SnapshotError::Corrupt(format!(
                "{} bytes after the end",
                bytes.len() - needed
            )));
        }
        let (body, crc) = rest.split_at(body_len);
        let sealed = bytes.get(..HEADER_LEN + body_len).unwrap_or_default();
        if crc != crc32fast::hash(sealed).to_le_bytes() {
            return Err(SnapshotError::Checksum);
        }
        let (body, extra) = postcard::take_from_bytes::<Body>(body)
            .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        if !extra.is_empty() {
            return Err(SnapshotError::Corrupt(format!(
                "{} bytes after the body",
                extra.len()
            )));
        }
        Ok(Self { body })
    }

    /// Frames arbitrary body bytes as a snapshot of this version, with a valid length and
    /// checksum: lets the fuzz target and the tests past the checksum to the decoder.
    #[doc(hidden)]
    pub fn frame_body(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CRC_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The body of [`Self::to_bytes`] without its header and checksum: the seeds of the fuzz
    /// target, which frames inputs with [`Self::frame_body`].
    #[doc(hidden)]
    pub fn body_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        postcard::to_allocvec(&self.body).map_err(|e| SnapshotError::Encode(e.to_string()))
    }

    /// The snapshot's time base: the latest observation the scorer had seen.
    pub fn taken_at(&self) -> SystemTime {
        from_secs(u32::try_from(self.body.taken_at).unwrap_or(u32::MAX))
    }

    pub fn stats(&self) -> SnapshotStats {
        SnapshotStats {
            keys: self.body.keys.len() as u64,
            keys_left_out: self.body.keys_left_out,
            watched: self.body.keys.iter().filter(|k| k.watch).count() as u64,
            bots: self.body.bots.len() as u64,
        }
    }

    /// The names of the keys saved, highest priority first (for tests and logs).
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.body.keys.iter().map(|k| k.name.as_str())
    }
}

impl Scorer {
    /// What the scorer learned that a restart should keep: the shared-bot table and the full
    /// state of its keys, as many as [`MAX_SNAPSHOT_KEYS`] and [`MAX_SNAPSHOT_BYTES`] allow,
    /// in this order: `flux`, then `suspicious`; keys sharing bots; keys watched for shared
    /// bots; benign keys that have begun to rotate ([`ROTATING_ANSWERS`]); the rest; each class
    /// most recently active first. A table that fits comes back whole, so a restart changes no
    /// verdict (the snapshot tests); one that does not loses its least useful keys first:
    /// benign keys seen with one answer, which are most of a busy resolver's table.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_bounded(MAX_SNAPSHOT_KEYS, MAX_SNAPSHOT_BYTES)
    }

    /// [`Self::snapshot`] with other bounds (the tests use small ones).
    fn snapshot_bounded(&self, max_keys: usize, max_bytes: usize) -> Snapshot {
        let base = self.latest;
        let mut chosen: Vec<(Priority, &Tracked)> =
            self.keys.values().map(|t| (priority(&t.st), t)).collect();
        chosen.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
        let mut keys = Vec::new();
        let mut bytes = 0usize;
        for (_, t) in &chosen {
            if keys.len() >= max_keys {
                break;
            }
            let key = save_key(&t.name, &t.st, base);
            let size =
                postcard::serialize_with_flavor(&key, postcard::ser_flavors::Size::default())
                    .unwrap_or(usize::MAX);
            if bytes.saturating_add(size) > max_bytes {
                break;
            }
            bytes += size;
            keys.push(key);
        }
        let left_out = (chosen.len() - keys.len()) as u64;
        let bots = self
            .flux_ips
            .bots_oldest_first()
            .map(|(ip, owner, users)| WireBot {
                ip: wire_ip(ip),
                owner,
                stable_users: users.iter().copied().filter(|u| *u != 0).collect(),
            })
            .collect();
        let (bots_added, infrastructure) = self.flux_ips.counters();
        Snapshot {
            body: Body {
                taken_at: u64::from(base),
                keys_left_out: left_out,
                bots_added,
                bots_swept: self.swept_bots,
                infrastructure,
                last_sweep: age(base, self.last_sweep),
                bots,
                keys,
            },
        }
    }

    /// Puts back what [`Self::snapshot`] saved; `now` is the restoring clock (observation time:
    /// the wall clock live, the capture's time on replay). Meant for a scorer that has seen
    /// nothing yet; into one that has, its own keys win and the bots are merged.
    ///
    /// Refused whole (the scorer untouched) when the snapshot is older than
    /// [`MAX_SNAPSHOT_AGE_SECS`], from more than [`MAX_CLOCK_SKEW_SECS`] in the future, or holds
    /// an impossible value; keys whose last activity is older than the maximum age are left out.
    pub fn restore(
        &mut self,
        snap: Snapshot,
        now: SystemTime,
    ) -> Result<RestoreStats, SnapshotError> {
        let body = snap.body;
        let now = secs(now);
        let taken_at = u32::try_from(body.taken_at)
            .map_err(|_| invalid("a time base past the scorer's clock (2106)"))?;
        if body.keys.is_empty() && body.bots.is_empty() {
            // Nothing to age: an idle scorer's snapshot restores at any time.
            self.latest = self.latest.max(taken_at);
            return Ok(RestoreStats::default());
        }
        if taken_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(SnapshotError::FromTheFuture {
                ahead_secs: u64::from(taken_at - now),
            });
        }
        let age_secs = now.saturating_sub(taken_at);
        if age_secs > MAX_SNAPSHOT_AGE_SECS {
            return Err(SnapshotError::TooOld {
                age_secs: u64::from(age_secs),
                max_secs: MAX_SNAPSHOT_AGE_SECS,
            });
        }
        if body.keys.len() > MAX_SNAPSHOT_KEYS || body.bots.len() > MAX_FLUX_IPS {
            return Err(invalid("more keys or bots than a snapshot holds"));
        }
        let mut stats = RestoreStats {
            age_secs: u64::from(age_secs),
            ..RestoreStats::default()
        };
        // Everything is decoded and checked before the scorer changes.
        let cutoff = now.saturating_sub(MAX_SNAPSHOT_AGE_SECS);
        let mut keys = Vec::with_capacity(body.keys.len());
        for w in body.keys {
            let (name, st) = load_key(w, taken_at)?;
            if last_active(&st) < cutoff {
                stats.keys_expired += 1;
            } else {
                keys.push((name, st));
            }
        }
        let mut bots = Vec::with_capacity(body.bots.len());
        for b in body.bots {
            if b.stable_users.len() > usize::from(INFRA_STABLE_DOMAINS) {
                return Err(invalid("more stable users on a bot than the table keeps"));
            }
            bots.push((from_wire_ip(b.ip), b.owner, b.stable_users));
        }
        let last_sweep = time(taken_at, body.last_sweep)?;

        let fresh = self.keys.is_empty() && self.flux_ips.added() == 0;
        // Least recently active first, so the table's recency order is theirs.
        keys.sort_by_key(|(_, st)| last_active(st));
        for (name, st) in keys {
            let id = self.id(&name);
            if self.keys.peek(&id).is_some() {
                stats.keys_already_tracked += 1;
                continue;
            }
            let watch = st.watch;
            let due = st.marked(super::key_state::MARK_WAITS_ON_PENDING);
            let (_, _, evicted) = self.keys.get_or_insert_with(id, || Tracked { name, st });
            stats.keys_restored += 1;
            stats.keys_evicted += u64::from(evicted);
            self.stats.keys_evicted += u64::from(evicted);
            if watch {
                self.watched.get_or_insert_with(id, || ());
                stats.watched += 1;
            }
            // Re-scored when its pending children's answers expire, as before the restart
            // (`Scorer::sweep_due`).
            if due {
                self.due.get_or_insert_with(id, || ());
            }
        }
        for (ip, owner, users) in bots {
            // Checked as when the bot was added (`Scorer::judge`): the allowlist or the
            // address database may have changed since.
            let a = self.lookup_addr(
                AddrInfo {
                    ip,
                    ..AddrInfo::default()
                }
                .to_ip(),
            );
            if is_infrastructure(&self.allowlist, &a) {
                stats.bots_allowlisted += 1;
            } else if self.flux_ips.restore_bot(ip, owner, &users) {
                stats.bots_restored += 1;
            }
        }
        // A bot dropped above counts as one that turned into infrastructure: keys that marked
        // it as another domain's bot ask the table again (`KeyState::shared_bots`).
        let infrastructure = body.infrastructure + stats.bots_allowlisted;
        if fresh {
            self.flux_ips.set_counters(body.bots_added, infrastructure);
            self.swept_bots = body.bots_swept;
            self.last_sweep = last_sweep;
        } else {
            // New bots for this scorer: its watched keys are swept at the next chance.
            let (added, infra) = self.flux_ips.counters();
            self.flux_ips
                .set_counters(added + stats.bots_restored, infra + infrastructure);
        }
        self.latest = self.latest.max(taken_at);
        // The interval the saving scorer's latest response fell in, swept then if it was due
        // (`Scorer::sweep_due`).
        self.due_interval = self.latest / self.cfg.rescore_interval.max(1);
        Ok(stats)
    }
}

/// A benign key that has had [`ROTATING_ANSWERS`] distinct answers or more.
fn rotating(st: &KeyState) -> bool {
    st.rrsets.len() >= ROTATING_ANSWERS
}

/// Distinct answers from which a benign key is saved before the keys seen with one answer: it
/// has begun the rotation that flux evidence counts (`MIN_RRSETS_FOR_FLUX`), and forgetting it
/// would start that count again after a restart.
const ROTATING_ANSWERS: usize = MIN_RRSETS_FOR_FLUX as usize;

/// Where a key stands in the order keys are saved in (higher first): level, sharing bots,
/// watched, rotating, last active.
type Priority = (Level, bool, bool, bool, u32);

fn priority(st: &KeyState) -> Priority {
    (
        st.level,
        st.shares_bots,
        st.watch,
        rotating(st),
        last_active(st),
    )
}

/// When anything was last seen for the key, or it was last scored.
fn last_active(st: &KeyState) -> u32 {
    let ips = st.ips.iter().map(|e| e.last);
    let rrsets = st.rrsets.iter().map(|r| r.last);
    let ns = st.ns.iter().flat_map(|t| t.hosts.iter().map(|h| h.last));
    ips.chain(rrsets)
        .chain(ns)
        .fold(st.last_eval.max(st.first_seen), u32::max)
}

fn age(base: u32, t: u32) -> Age {
    i64::from(base) - i64::from(t)
}

fn time(base: u32, age: Age) -> Result<u32, SnapshotError> {
    i64::from(base)
        .checked_sub(age)
        .and_then(|t| u32::try_from(t).ok())
        .ok_or_else(|| invalid("a time outside the scorer's clock"))
}

fn invalid(what: &str) -> SnapshotError {
    SnapshotError::Invalid(what.to_owned())
}

fn wire_ip(ip: &[u8; 16]) -> WireIp {
    match std::net::Ipv6Addr::from(*ip).to_ipv4_mapped() {
        Some(v4) => WireIp::V4(v4.octets()),
        None => WireIp::V6(*ip),
    }
}

fn from_wire_ip(ip: WireIp) -> [u8; 16] {
    match ip {
        WireIp::V4(o) => Ipv4Addr::from(o).to_ipv6_mapped().octets(),
        WireIp::V6(b) => b,
    }
}

fn wire_addr(a: &AddrInfo) -> WireAddr {
    WireAddr {
        ip: wire_ip(&a.ip),
        asn: a.asn,
        network: a.network,
        country: a.country,
    }
}

fn from_wire_addr(a: WireAddr) -> AddrInfo {
    AddrInfo {
        ip: from_wire_ip(a.ip),
        asn: a.asn,
        network: a.network,
        country: a.country,
    }
}

fn save_key(name: &str, st: &KeyState, base: u32) -> WireKey {
    let ips = st
        .ips
        .iter()
        .zip(st.bot_marks())
        .map(|(e, bot_marks)| WireKeyIp {
            addr: wire_addr(&st.info_of(&e.addr)),
            last: age(base, e.last),
            bot_marks,
        })
        .collect();
    let rrsets = st
        .rrsets
        .iter()
        .map(|r| WireRrset {
            hash: r.hash,
            last: age(base, r.last),
            ttl: r.ttl,
            valid_for: r.valid_for,
            returns: r.returns,
            size: r.size,
            new: r.new,
            networks: r.networks,
            new_networks: r.new_networks,
            first: r.first,
            seen_again: r.seen_again,
            child: r.child,
        })
        .collect();
    let ns = st.ns.as_ref().map(|t| WireNs {
        max_set: t.max_set,
        hosts: t
            .hosts
            .iter()
            .map(|h| WireNsHost {
                name: h.name.to_string(),
                last: age(base, h.last),
                glue_set_max: h.glue_set_max,
                glue: h
                    .glue
                    .iter()
                    .map(|(a, last)| (wire_addr(a), age(base, *last)))
                    .collect(),
            })
            .collect(),
    });
    WireKey {
        name: name.to_owned(),
        first_seen: age(base, st.first_seen),
        responses: st.responses,
        changes: st.changes,
        level: level_code(st.level),
        last_eval: age(base, st.last_eval),
        roles: st.roles,
        marks: st.marks,
        shares_bots: st.shares_bots,
        watch: st.watch,
        allowed_by: st.allowed_by().map(str::to_owned),
        customers: st.customers,
        block_minute: st.block_minute,
        dirty: st.dirty,
        changes_at: age(base, st.changes_at),
        last_shared: st.last_shared,
        chain: st.chain().map(str::to_owned).collect(),
        ips,
        rrsets,
        ns,
    }
}

/// A level on the wire (explicit, so that reordering the enum cannot change the format).
fn level_code(level: Level) -> u8 {
    match level {
        Level::Benign => 0,
        Level::Suspicious => 1,
        Level::Flux => 2,
    }
}

fn check_name(name: &str) -> Result<(), SnapshotError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(invalid("a name empty or longer than a DNS name"));
    }
    Ok(())
}

/// A saved key back as a name and state, checked against the caps the scorer keeps.
fn load_key(
    w: WireKey,
    base: u32,
) -> Result<(compact_str::CompactString, KeyState), SnapshotError> {
    check_name(&w.name)?;
    if w.ips.len() > MAX_IPS_PER_KEY
        || w.rrsets.len() > MAX_RRSETS
        || w.chain.len() > MAX_CHAIN
        || w.ns.as_ref().is_some_and(|n| n.hosts.len() > MAX_NS_HOSTS)
    {
        return Err(invalid("a key larger than the scorer keeps"));
    }
    let level = match w.level {
        0 => Level::Benign,
        1 => Level::Suspicious,
        2 => Level::Flux,
        _ => return Err(invalid("an unknown level")),
    };
    let mut st = KeyState {
        first_seen: time(base, w.first_seen)?,
        responses: w.responses,
        changes: w.changes,
        level,
        last_eval: time(base, w.last_eval)?,
        roles: w.roles,
        marks: w.marks,
        shares_bots: w.shares_bots,
        watch: w.watch,
        customers: w.customers,
        block_minute: w.block_minute,
        dirty: w.dirty,
        changes_at: time(base, w.changes_at)?,
        last_shared: w.last_shared,
        ..KeyState::default()
    };
    if let Some(a) = w.allowed_by {
        check_name(&a)?;
        st.set_allowed_by(Some(&a));
    }
    for c in &w.chain {
        check_name(c)?;
    }
    if !w.chain.is_empty() {
        st.restore_chain(w.chain);
    }
    st.ips.reserve_exact(w.ips.len());
    st.ip_fps.reserve_exact(w.ips.len());
    for ip in w.ips {
        st.restore_ip(from_wire_addr(ip.addr), time(base, ip.last)?, ip.bot_marks);
    }
    st.rrsets.reserve_exact(w.rrsets.len());
    for r in w.rrsets {
        st.rrsets.push(Rrset {
            hash: r.hash,
            last: time(base, r.last)?,
            ttl: r.ttl,
            valid_for: r.valid_for,
            returns: r.returns,
            size: r.size,
            new: r.new,
            networks: r.networks,
            new_networks: r.new_networks,
            first: r.first,
            seen_again: r.seen_again,
            child: r.child,
        });
    }
    if let Some(ns) = w.ns {
        let mut hosts = Vec::with_capacity(ns.hosts.len());
        for h in ns.hosts {
            check_name(&h.name)?;
            if h.glue.len() > MAX_GLUE {
                return Err(invalid("an NS host with more glue than the scorer keeps"));
            }
            let mut glue = Vec::with_capacity(h.glue.len());
            for (a, last) in h.glue {
                glue.push((from_wire_addr(a), time(base, last)?));
            }
            hosts.push(NsHost {
                name: h.name.into(),
                last: time(base, h.last)?,
                glue,
                glue_set_max: h.glue_set_max,
            });
        }
        st.ns = Some(Box::new(NsTable {
            hosts,
            max_set: ns.max_set,
        }));
    }
    Ok((w.name.into(), st))
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
