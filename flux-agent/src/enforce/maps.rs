//! The blocklists and allowlists in the pinned maps. This is where a map is written: the CLI
//! (`blocklist`, `allowlist`) and the running agent's enforcer both come through here, and the
//! kernel reads the same maps (`flux-ebpf/src/xdp_verdict.rs`).
//!
//! Every value is checked before any map is touched, so bad input leaves the maps as they were.

mod bulk_write;
mod drop_cache;
mod front_filter;
mod occupancy;

use aya::maps::IterableMap as _;
use drop_cache::DropCache;
use front_filter::FrontFilter;
use occupancy::{List, Occupancy};
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use aya::maps::{
    HashMap, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use flux_common::{
    BlockEntry, DOMAIN_TEXT_LEN, DomainBlock, MAP_ALLOWED_CIDR_V4, MAP_ALLOWED_CIDR_V6,
    MAP_ALLOWED_DOMAINS, MAP_BLOCKED_CIDR_V4, MAP_BLOCKED_CIDR_V6, MAP_BLOCKED_DOMAINS,
    MAP_BLOCKED_V4, MAP_BLOCKED_V6, MAX_NAME_WIRE, REASON_LEN, RESIZABLE_MAPS, SOURCE_FEED,
    SOURCE_MANUAL, SOURCE_SCORER, domain_hash, to_wire,
};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    enforce::block_expiry::expiry_ns,
    kernel::pins::{self, PinError},
};

/// One thing that can be blocked or allowed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Ip(IpAddr),
    /// A network address with no host bits set, and its prefix length.
    Cidr(IpAddr, u8),
    /// Lowercase, no trailing dot, validated.
    Domain(String),
}

#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    #[error("invalid IP address '{0}'")]
    BadIp(String),
    #[error("invalid CIDR '{0}': {1}")]
    BadCidr(String, String),
    #[error("invalid domain '{0}': {1}")]
    BadDomain(String, String),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(
        "the {map} map is full ({capacity} entries): this entry was not added, the entries \
         already there are kept; remove some with `flux-agent blocklist remove` or let them \
         expire"
    )]
    Full { map: &'static str, capacity: u32 },
    #[error("{op} in {map}: {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        #[source]
        source: MapError,
    },
}

impl Target {
    pub fn ip(s: &str) -> Result<Self, BlocklistError> {
        s.trim()
            .parse::<IpAddr>()
            .map(Target::Ip)
            .map_err(|_| BlocklistError::BadIp(s.into()))
    }

    /// `ADDR/LEN`. A bare address is a host route. Host bits must be zero, so that a typo in the
    /// prefix length cannot block a much larger network than meant.
    pub fn cidr(s: &str) -> Result<Self, BlocklistError> {
        let bad = |why: &str| BlocklistError::BadCidr(s.into(), why.into());
        let (addr, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let net = match len {
            None => IpNet::from(addr),
            Some(l) => l
                .parse()
                .ok()
                .and_then(|l| IpNet::new(addr, l).ok())
                .ok_or_else(|| {
                    let max = IpNet::from(addr).max_prefix_len();
                    bad(&format!("prefix length must be 0 to {max}"))
                })?,
        };
        let (masked, len) = (net.network(), net.prefix_len());
        if masked != addr {
            return Err(bad(&format!(
                "host bits are set; did you mean {masked}/{len}?"
            )));
        }
        Ok(Target::Cidr(addr, len))
    }

    pub fn domain(s: &str) -> Result<Self, BlocklistError> {
        normalize_domain(s)
            .map(Target::Domain)
            .map_err(|why| BlocklistError::BadDomain(s.into(), why))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Ip(_) => "ip",
            Target::Cidr(..) => "cidr",
            Target::Domain(_) => "domain",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ip(ip) => write!(f, "{ip}"),
            Target::Cidr(ip, len) => write!(f, "{ip}/{len}"),
            Target::Domain(d) => f.write_str(d),
        }
    }
}

/// Lowercase, without the trailing dot; refuses what is not a host name, an address, and a bare
/// public suffix (blocking `com` would block every name under it).
pub fn normalize_domain(s: &str) -> Result<String, String> {
    let name = s.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err("this is an IP address; use --ip".into());
    }
    if !name.is_ascii() {
        return Err("not ASCII; give the punycode (xn--) form".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1 to 63 characters".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "label '{label}' may only hold letters, digits, '-' and '_'"
            ));
        }
    }
    let mut wire = [0u8; MAX_NAME_WIRE];
    if to_wire(&name, &mut wire).is_none() {
        return Err("longer than 253 characters".into());
    }
    if psl::suffix_str(&name) == Some(name.as_str()) {
        return Err("a public suffix; blocking it would block every domain under it".into());
    }
    Ok(name)
}

/// The map key of a normalized domain: `flux_common::domain_hash` of its wire form.
pub fn domain_key(name: &str) -> Option<u64> {
    let mut wire = [0u8; MAX_NAME_WIRE];
    to_wire(name, &mut wire).map(|n| domain_hash(&wire[..n]))
}

/// How a block is made.
#[derive(Clone, Debug)]
pub struct Spec {
    /// `SOURCE_*`.
    pub source: u8,
    /// `None` blocks until removed.
    pub ttl: Option<Duration>,
    pub reason: String,
    /// The scorer's score, for scorer blocks.
    pub score: Option<f64>,
}

impl Spec {
    pub fn manual(ttl: Option<Duration>, reason: &str) -> Self {
        Self {
            source: SOURCE_MANUAL,
            ttl,
            reason: reason.into(),
            score: None,
        }
    }
}

/// Whether a block was new or refreshed an entry already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    New,
    Refreshed,
}

/// One entry, as `blocklist list` and `allowlist list` show it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Listed {
    pub kind: &'static str,
    pub value: String,
    pub reason: String,
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(serialize_with = "opt_rfc3339")]
    pub added: Option<SystemTime>,
    /// `None`: never.
    #[serde(serialize_with = "opt_rfc3339")]
    pub expires: Option<SystemTime>,
    pub expired: bool,
    pub hits: u64,
}

fn opt_rfc3339<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
        None => s.serialize_none(),
    }
}

pub fn source_name(source: u8) -> &'static str {
    match source {
        SOURCE_SCORER => "scorer",
        SOURCE_MANUAL => "manual",
        SOURCE_FEED => "feed",
        _ => "unknown",
    }
}

/// `CLOCK_BOOTTIME` in nanoseconds: the clock `bpf_ktime_get_boot_ns` reads, which keeps
/// counting through suspend, so a 24 h block lasts 24 h of wall time.
pub fn boot_ns() -> u64 {
    crate::pipeline::clock::clock_ns(libc::CLOCK_BOOTTIME)
}

/// Wall-clock seconds, as `BlockEntry::added_unix` keeps them.
fn now_unix() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// `ADDR/LEN` of an LPM key.
fn cidr_text<K: aya::Pod>(k: &Key<K>) -> String
where
    IpAddr: From<K>,
{
    format!("{}/{}", IpAddr::from(k.data()), k.prefix_len())
}

fn reason_bytes(reason: &str) -> [u8; REASON_LEN] {
    let mut out = [0u8; REASON_LEN];
    let mut end = reason.len().min(REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&reason.as_bytes()[..end]);
    out
}

/// The reason kept in an entry, as text.
pub fn reason_text(e: &BlockEntry) -> String {
    text(&e.reason)
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The map entry of a new block as `spec` says: expiry from now, no hits yet, added now.
fn fresh_entry(spec: &Spec) -> BlockEntry {
    let mut e = BlockEntry::new(spec.source, expiry_ns(boot_ns(), spec.ttl));
    e.reason = reason_bytes(&spec.reason);
    e.score_milli = spec
        .score
        .map(|s| (s * 1000.0).clamp(0.0, f64::from(u16::MAX)) as u16)
        .unwrap_or(0);
    e.added_unix = now_unix();
    e
}

fn domain_value(name: &str, entry: BlockEntry) -> DomainBlock {
    let mut text = [0u8; DOMAIN_TEXT_LEN];
    let n = name.len().min(DOMAIN_TEXT_LEN - 1);
    text[..n].copy_from_slice(&name.as_bytes()[..n]);
    DomainBlock { entry, name: text }
}

fn listed(kind: &'static str, value: String, e: &BlockEntry, now_boot: u64) -> Listed {
    let now = SystemTime::now();
    let expires = (e.expires_ns != 0).then(|| {
        if e.expires_ns >= now_boot {
            now + Duration::from_nanos(e.expires_ns - now_boot)
        } else {
            now - Duration::from_nanos(now_boot - e.expires_ns)
        }
    });
    Listed {
        kind,
        value,
        reason: text(&e.reason),
        source: source_name(e.source),
        score: (e.source == SOURCE_SCORER).then(|| f64::from(e.score_milli) / 1000.0),
        added: (e.added_unix != 0)
            .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(e.added_unix))),
        expires,
        expired: !e.active(now_boot),
        hits: e.hits,
    }
}

/// The target a listed entry is for. Domain names in the maps were normalized when written.
fn target_of(l: Listed) -> Result<Target, BlocklistError> {
    match l.kind {
        "domain" => Ok(Target::Domain(l.value)),
        "ip" => Target::ip(&l.value),
        _ => Target::cidr(&l.value),
    }
}

pub(super) fn map_err(op: &'static str, map: &'static str) -> impl Fn(MapError) -> BlocklistError {
    move |source| {
        let full = matches!(
            &source,
            MapError::SyscallError(s)
                if matches!(s.io_error.raw_os_error(), Some(libc::E2BIG) | Some(libc::ENOSPC))
        );
        if full {
            let capacity = pins::expected_map(map).map(|e| e.max_entries).unwrap_or(0);
            BlocklistError::Full { map, capacity }
        } else {
            BlocklistError::Map { op, map, source }
        }
    }
}

/// A map removal's outcome: whether there was an entry to remove.
fn removed(r: Result<(), BlocklistError>) -> Result<bool, BlocklistError> {
    match r {
        Ok(()) => Ok(true),
        Err(BlocklistError::Map { source, .. }) if is_not_found(&source) => Ok(false),
        Err(e) => Err(e),
    }
}

fn is_not_found(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound | MapError::ElementNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

fn v4(ip: &IpAddr) -> Option<[u8; 4]> {
    match ip {
        IpAddr::V4(a) => Some(a.octets()),
        IpAddr::V6(_) => None,
    }
}

fn v6(ip: &IpAddr) -> Option<[u8; 16]> {
    match ip {
        IpAddr::V6(a) => Some(a.octets()),
        IpAddr::V4(_) => None,
    }
}

/// One blocklist map's room for a bulk write ([`Maps::room_for`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Room {
    pub map: &'static str,
    /// The map's size (`max_entries`).
    pub capacity: u32,
    /// Entries in it now.
    pub present: usize,
    /// Targets of the write it does not hold yet.
    pub missing: usize,
}

impl Room {
    fn new(map: &'static str, capacity: u32, present: usize) -> Self {
        Self {
            map,
            capacity,
            present,
            missing: 0,
        }
    }

    /// Whether the write fits (entries another source is about to drop are counted as
    /// staying: the check errs on the side of refusing).
    pub fn fits(&self) -> bool {
        self.present.saturating_add(self.missing) <= self.capacity as usize
    }
}

/// The pinned enforcement maps, opened and checked.
pub struct Maps {
    pub pin_dir: PathBuf,
    v4: HashMap<MapData, [u8; 4], BlockEntry>,
    v6: HashMap<MapData, [u8; 16], BlockEntry>,
    cidr4: LpmTrie<MapData, [u8; 4], BlockEntry>,
    cidr6: LpmTrie<MapData, [u8; 16], BlockEntry>,
    domains: HashMap<MapData, u64, DomainBlock>,
    allow4: LpmTrie<MapData, [u8; 4], u32>,
    allow6: LpmTrie<MapData, [u8; 16], u32>,
    allow_domains: HashMap<MapData, u64, DomainBlock>,
    /// Which of the maps above may hold entries, for the kernel (`occupancy.rs`).
    occupancy: Occupancy,
    /// Which IPv4 /24s may hold a blocked address, for the kernel (`front_filter.rs`).
    front: FrontFilter,
    /// Which domain-hash buckets may hold a blocked domain, for the kernel (`front_filter.rs`).
    front_names: FrontFilter,
    /// The kernel's IPv4 drop cache: its generation, advanced here, and its pending hits
    /// (`drop_cache.rs`).
    drop_cache: DropCache,
    /// The capacity of each of `flux_common::RESIZABLE_MAPS`, as loaded (`run --max-blocked-*`).
    capacities: [u32; RESIZABLE_MAPS.len()],
}

/// The capacity of the map pinned as `name` in `dir`, as the kernel has it.
fn loaded_capacity(dir: &Path, name: &'static str) -> Result<u32, BlocklistError> {
    let data = pins::open(dir, name)?;
    let info = data.info().map_err(map_err("read", name))?;
    Ok(info.max_entries())
}

fn open_hash<K: aya::Pod, V: aya::Pod>(
    dir: &Path,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, BlocklistError> {
    let data = pins::open(dir, name)?;
    HashMap::try_from(aya::maps::Map::HashMap(data)).map_err(map_err("open", name))
}

fn open_trie<K: aya::Pod, V: aya::Pod>(
    dir: &Path,
    name: &'static str,
) -> Result<LpmTrie<MapData, K, V>, BlocklistError> {
    let data = pins::open(dir, name)?;
    LpmTrie::try_from(aya::maps::Map::LpmTrie(data)).map_err(map_err("open", name))
}

impl Maps {
    /// Opens every enforcement map pinned in `pin_dir`. Fails clearly when nothing is loaded
    /// there, or when a pin is not ours.
    pub fn open(pin_dir: &Path) -> Result<Self, BlocklistError> {
        Self::open_with(pin_dir, false)
    }

    /// [`Maps::open`] for the agent's enforcer: the front filters also get the bits of every
    /// entry when they are already ready (`Maps::ready_front` says why; it reads every key, so
    /// it is done once per agent start, not per CLI command).
    pub fn open_refilled(pin_dir: &Path) -> Result<Self, BlocklistError> {
        Self::open_with(pin_dir, true)
    }

    fn open_with(pin_dir: &Path, refill: bool) -> Result<Self, BlocklistError> {
        let mut maps = Self {
            pin_dir: pin_dir.to_owned(),
            v4: open_hash(pin_dir, MAP_BLOCKED_V4)?,
            v6: open_hash(pin_dir, MAP_BLOCKED_V6)?,
            cidr4: open_trie(pin_dir, MAP_BLOCKED_CIDR_V4)?,
            cidr6: open_trie(pin_dir, MAP_BLOCKED_CIDR_V6)?,
            domains: open_hash(pin_dir, MAP_BLOCKED_DOMAINS)?,
            allow4: open_trie(pin_dir, MAP_ALLOWED_CIDR_V4)?,
            allow6: open_trie(pin_dir, MAP_ALLOWED_CIDR_V6)?,
            allow_domains: open_hash(pin_dir, MAP_ALLOWED_DOMAINS)?,
            occupancy: Occupancy::open(pin_dir)?,
            front: FrontFilter::open_v4(pin_dir)?,
            front_names: FrontFilter::open_names(pin_dir)?,
            drop_cache: DropCache::open(pin_dir)?,
            capacities: {
                let mut c = [0u32; RESIZABLE_MAPS.len()];
                for (slot, name) in c.iter_mut().zip(RESIZABLE_MAPS) {
                    *slot = loaded_capacity(pin_dir, name)?;
                }
                c
            },
        };
        maps.mark_occupied();
        maps.ready_front(refill);
        // Opening may have set an occupancy slot (`mark_occupied`): an allowlist the kernel
        // skipped until now is looked up from here on, so no drop cached before is trusted.
        // The agent's start also turns the cache on (a pin kept from an earlier load may hold
        // the off bit), and a blocklist map loaded with another capacity may be new under a
        // cache whose pins stayed.
        if refill {
            maps.drop_cache.set_enabled(true)?;
        } else {
            maps.drop_cache.advance()?;
        }
        Ok(maps)
    }

    /// After `t` was written to or removed from `list`: the verdict generation advanced when
    /// the kernel's drop cache could hold a drop the change makes wrong (`drop_cache.rs`): an
    /// exact IPv4 block written over (its expiry may be shorter) or removed, or an allowed IPv4
    /// CIDR. (A new exact block needs none, but a writer cannot tell an insert from a write
    /// over one another process made meanwhile, so every write advances it.)
    fn verdicts_changed(&mut self, t: &Target, list: List) -> Result<(), BlocklistError> {
        let cached = match (t, list) {
            (Target::Ip(ip), List::Blocked) => ip.is_ipv4(),
            (Target::Ip(ip) | Target::Cidr(ip, _), List::Allowed) => ip.is_ipv4(),
            _ => false,
        };
        if cached {
            self.drop_cache.advance()?;
        }
        Ok(())
    }

    /// After `t`'s block was removed and [`Maps::verdicts_changed`]: an IPv4 address's drops
    /// waiting in the drop cache leave with its block (`DropCache::forget`).
    fn forget_drops(&mut self, t: &Target) -> Result<(), BlocklistError> {
        match t {
            Target::Ip(ip) => v4(ip).map_or(Ok(()), |a| self.drop_cache.forget(a)),
            _ => Ok(()),
        }
    }

    /// How many entries the blocklist map `name` holds at most, as loaded.
    pub fn capacity(&self, name: &'static str) -> u32 {
        RESIZABLE_MAPS
            .iter()
            .position(|n| *n == name)
            .and_then(|i| self.capacities.get(i).copied())
            .unwrap_or_else(|| pins::expected_map(name).map_or(0, |e| e.max_entries))
    }

    /// The entry blocking exactly `t`, if any, as the map holds it: the hits of an IPv4 address
    /// leave out the drops the kernel's drop cache made since it last looked the address up
    /// ([`Maps::describe`] adds them). Writers carry these hits over, so none is counted twice.
    pub fn get(&self, t: &Target) -> Result<Option<BlockEntry>, BlocklistError> {
        let r = match t {
            Target::Ip(ip) => match (v4(ip), v6(ip)) {
                (Some(a), _) => self.v4.get(&a, 0).map_err(map_err("read", MAP_BLOCKED_V4)),
                (_, Some(a)) => self.v6.get(&a, 0).map_err(map_err("read", MAP_BLOCKED_V6)),
                _ => return Ok(None),
            },
            Target::Cidr(ip, len) => match (v4(ip), v6(ip)) {
                (Some(a), _) => self
                    .cidr4
                    .get(&Key::new(u32::from(*len), a), 0)
                    .map_err(map_err("read", MAP_BLOCKED_CIDR_V4)),
                (_, Some(a)) => self
                    .cidr6
                    .get(&Key::new(u32::from(*len), a), 0)
                    .map_err(map_err("read", MAP_BLOCKED_CIDR_V6)),
                _ => return Ok(None),
            },
            Target::Domain(d) => {
                let Some(k) = domain_key(d) else {
                    return Ok(None);
                };
                self.domains
                    .get(&k, 0)
                    .map(|v| v.entry)
                    .map_err(map_err("read", MAP_BLOCKED_DOMAINS))
            }
        };
        match r {
            Ok(e) => Ok(Some(e)),
            Err(BlocklistError::Map { source, .. }) if is_not_found(&source) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Blocks `t`. An entry already there keeps its hit count and the time it was first added;
    /// its expiry, reason and score are renewed.
    pub fn block(&mut self, t: &Target, spec: &Spec) -> Result<Added, BlocklistError> {
        let previous = self.get(t)?;
        self.write(t, spec, previous)
    }

    /// [`Maps::block`] for a caller that has just read the entry with [`Maps::get`].
    pub fn write(
        &mut self,
        t: &Target,
        spec: &Spec,
        previous: Option<BlockEntry>,
    ) -> Result<Added, BlocklistError> {
        // A full map's error names the capacity it was loaded with, not the compiled default.
        self.write_entry(t, spec, previous).map_err(|e| match e {
            BlocklistError::Full { map, .. } => BlocklistError::Full {
                map,
                capacity: self.capacity(map),
            },
            e => e,
        })
    }

    fn write_entry(
        &mut self,
        t: &Target,
        spec: &Spec,
        previous: Option<BlockEntry>,
    ) -> Result<Added, BlocklistError> {
        let mut e = fresh_entry(spec);
        if let Some(p) = previous {
            e.hits = p.hits;
            e.added_unix = p.added_unix;
        }
        match t {
            Target::Ip(ip) => match (v4(ip), v6(ip)) {
                (Some(a), _) => self
                    .v4
                    .insert(a, e, 0)
                    .map_err(map_err("insert", MAP_BLOCKED_V4))?,
                (_, Some(a)) => self
                    .v6
                    .insert(a, e, 0)
                    .map_err(map_err("insert", MAP_BLOCKED_V6))?,
                _ => {}
            },
            Target::Cidr(ip, len) => match (v4(ip), v6(ip)) {
                (Some(a), _) => self
                    .cidr4
                    .insert(&Key::new(u32::from(*len), a), e, 0)
                    .map_err(map_err("insert", MAP_BLOCKED_CIDR_V4))?,
                (_, Some(a)) => self
                    .cidr6
                    .insert(&Key::new(u32::from(*len), a), e, 0)
                    .map_err(map_err("insert", MAP_BLOCKED_CIDR_V6))?,
                _ => {}
            },
            Target::Domain(d) => {
                let k = domain_key(d)
                    .ok_or_else(|| BlocklistError::BadDomain(d.clone(), "not a name".into()))?;
                self.domains
                    .insert(k, domain_value(d, e), 0)
                    .map_err(map_err("insert", MAP_BLOCKED_DOMAINS))?
            }
        }
        // The advance first: a block's occupancy slot and filter bits only let the kernel find
        // it (and cache it), and a failure to set them must not leave the advance undone.
        self.verdicts_changed(t, List::Blocked)?;
        self.mark(t, List::Blocked)?;
        Ok(if previous.is_some() {
            Added::Refreshed
        } else {
            Added::New
        })
    }

    /// Removes the block on exactly `t`; `false` if there was none.
    pub fn unblock(&mut self, t: &Target) -> Result<bool, BlocklistError> {
        let r = match t {
            Target::Ip(ip) => match (v4(ip), v6(ip)) {
                (Some(a), _) => self
                    .v4
                    .remove(&a)
                    .map_err(map_err("remove", MAP_BLOCKED_V4)),
                (_, Some(a)) => self
                    .v6
                    .remove(&a)
                    .map_err(map_err("remove", MAP_BLOCKED_V6)),
                _ => return Ok(false),
            },
            Target::Cidr(ip, len) => match (v4(ip), v6(ip)) {
                (Some(a), _) => self
                    .cidr4
                    .remove(&Key::new(u32::from(*len), a))
                    .map_err(map_err("remove", MAP_BLOCKED_CIDR_V4)),
                (_, Some(a)) => self
                    .cidr6
                    .remove(&Key::new(u32::from(*len), a))
                    .map_err(map_err("remove", MAP_BLOCKED_CIDR_V6)),
                _ => return Ok(false),
            },
            Target::Domain(d) => match domain_key(d) {
                Some(k) => self
                    .domains
                    .remove(&k)
                    .map_err(map_err("remove", MAP_BLOCKED_DOMAINS)),
                None => return Ok(false),
            },
        };
        let gone = removed(r)?;
        if gone {
            let settled = self.settle(t, List::Blocked);
            self.verdicts_changed(t, List::Blocked)?;
            self.forget_drops(t)?;
            settled?;
            self.front_after_removal(t)?;
        }
        Ok(gone)
    }

    /// The block on exactly `t`, as `list` would show it.
    /// Its hits count the drops the kernel's drop cache made for it too.
    pub fn describe(&self, t: &Target) -> Result<Option<Listed>, BlocklistError> {
        let Some(mut e) = self.get(t)? else {
            return Ok(None);
        };
        if let Target::Ip(ip) = t
            && let Some(a) = v4(ip)
        {
            e.hits += self.pending_drops()?.get(&a).copied().unwrap_or(0);
        }
        Ok(Some(listed(t.kind(), t.to_string(), &e, boot_ns())))
    }

    /// Every block, in a stable order: domains, addresses, CIDRs. The hits of an IPv4 address
    /// count the drops the kernel's drop cache made for it too.
    pub fn list(&self) -> Result<Vec<Listed>, BlocklistError> {
        let now = boot_ns();
        let pending = self.pending_drops()?;
        let mut out = Vec::new();
        for r in self.domains.iter() {
            let (_, v) = r.map_err(map_err("read", MAP_BLOCKED_DOMAINS))?;
            out.push(listed("domain", text(&v.name), &v.entry, now));
        }
        for r in self.v4.iter() {
            let (k, mut v) = r.map_err(map_err("read", MAP_BLOCKED_V4))?;
            v.hits += pending.get(&k).copied().unwrap_or(0);
            out.push(listed("ip", IpAddr::from(k).to_string(), &v, now));
        }
        for r in self.v6.iter() {
            let (k, v) = r.map_err(map_err("read", MAP_BLOCKED_V6))?;
            out.push(listed("ip", IpAddr::from(k).to_string(), &v, now));
        }
        for r in self.cidr4.iter() {
            let (k, v) = r.map_err(map_err("read", MAP_BLOCKED_CIDR_V4))?;
            out.push(listed("cidr", cidr_text(&k), &v, now));
        }
        for r in self.cidr6.iter() {
            let (k, v) = r.map_err(map_err("read", MAP_BLOCKED_CIDR_V6))?;
            out.push(listed("cidr", cidr_text(&k), &v, now));
        }
        let order = |k: &str| match k {
            "domain" => 0,
            "ip" => 1,
            _ => 2,
        };
        out.sort_by(|a, b| {
            order(a.kind)
                .cmp(&order(b.kind))
                .then_with(|| a.value.cmp(&b.value))
        });
        Ok(out)
    }

    /// How full each blocklist map would be with `targets` written: per map, its capacity, the
    /// entries there now and how many of `targets` it lacks. A bulk writer (a feed) checks this
    /// before it changes anything, so a set larger than a map is refused whole. Reads every key
    /// once (the hash maps in batches, the tries one syscall a key).
    pub fn room_for(&self, targets: &[Target]) -> Result<Vec<Room>, BlocklistError> {
        use std::collections::HashSet;
        fn keys<K: Eq + std::hash::Hash>(
            it: impl Iterator<Item = Result<K, MapError>>,
            name: &'static str,
        ) -> Result<HashSet<K>, BlocklistError> {
            it.map(|r| r.map_err(map_err("read", name))).collect()
        }
        // The hash maps' keys in batches where the kernel allows it (a million keys one
        // syscall each took about a second), else one at a time.
        let v4s = match bulk_write::hash_keys::<[u8; 4], BlockEntry>(self.v4.map()) {
            Some(k) => k.into_iter().collect(),
            None => keys(self.v4.keys(), MAP_BLOCKED_V4)?,
        };
        let v6s = match bulk_write::hash_keys::<[u8; 16], BlockEntry>(self.v6.map()) {
            Some(k) => k.into_iter().collect(),
            None => keys(self.v6.keys(), MAP_BLOCKED_V6)?,
        };
        let doms = match bulk_write::hash_keys::<u64, DomainBlock>(self.domains.map()) {
            Some(k) => k.into_iter().collect(),
            None => keys(self.domains.keys(), MAP_BLOCKED_DOMAINS)?,
        };
        let c4 = keys(
            self.cidr4
                .keys()
                .map(|r| r.map(|k| (k.prefix_len(), k.data().to_vec()))),
            MAP_BLOCKED_CIDR_V4,
        )?;
        let c6 = keys(
            self.cidr6
                .keys()
                .map(|r| r.map(|k| (k.prefix_len(), k.data().to_vec()))),
            MAP_BLOCKED_CIDR_V6,
        )?;
        let mut rooms = [
            Room::new(MAP_BLOCKED_V4, self.capacity(MAP_BLOCKED_V4), v4s.len()),
            Room::new(MAP_BLOCKED_V6, self.capacity(MAP_BLOCKED_V6), v6s.len()),
            Room::new(
                MAP_BLOCKED_CIDR_V4,
                self.capacity(MAP_BLOCKED_CIDR_V4),
                c4.len(),
            ),
            Room::new(
                MAP_BLOCKED_CIDR_V6,
                self.capacity(MAP_BLOCKED_CIDR_V6),
                c6.len(),
            ),
            Room::new(
                MAP_BLOCKED_DOMAINS,
                self.capacity(MAP_BLOCKED_DOMAINS),
                doms.len(),
            ),
        ];
        for t in targets {
            let (i, present) = match t {
                Target::Ip(IpAddr::V4(a)) => (0, v4s.contains(&a.octets())),
                Target::Ip(IpAddr::V6(a)) => (1, v6s.contains(&a.octets())),
                Target::Cidr(IpAddr::V4(a), l) => {
                    (2, c4.contains(&(u32::from(*l), a.octets().to_vec())))
                }
                Target::Cidr(IpAddr::V6(a), l) => {
                    (3, c6.contains(&(u32::from(*l), a.octets().to_vec())))
                }
                Target::Domain(d) => (4, domain_key(d).is_some_and(|k| doms.contains(&k))),
            };
            if let Some(r) = rooms.get_mut(i)
                && !present
            {
                r.missing += 1;
            }
        }
        Ok(rooms.into_iter().collect())
    }

    /// Removes every block (not the allowlists). Returns how many.
    pub fn flush(&mut self) -> Result<usize, BlocklistError> {
        let mut n = 0;
        for l in self.list()? {
            n += usize::from(self.unblock(&target_of(l)?)?);
        }
        Ok(n)
    }

    /// Removes the entries whose expiry has passed (the kernel already ignores them). Returns the
    /// ones removed.
    pub fn sweep_expired(&mut self) -> Result<Vec<Target>, BlocklistError> {
        let listed = self.list()?;
        self.remove_expired(listed)
    }

    /// The removals of [`Self::sweep_expired`], from a listing taken earlier: each entry `listed`
    /// saw expired is read again and removed only if it is still expired then. Why: listing a
    /// large map takes seconds, and meanwhile another writer (the feed refresher's own `Maps`,
    /// `blocklist add`) may have renewed the entry; removing that would lift a live block that
    /// nothing writes back, as the state database holds it. What is left is the time between
    /// that read and the removal (a map delete cannot be made conditional).
    pub fn remove_expired(&mut self, listed: Vec<Listed>) -> Result<Vec<Target>, BlocklistError> {
        let mut gone = Vec::new();
        for l in listed {
            if !l.expired {
                continue;
            }
            let t = target_of(l)?;
            let still_expired = self.get(&t)?.is_some_and(|e| !e.active(boot_ns()));
            if still_expired && self.unblock(&t)? {
                gone.push(t);
            }
        }
        Ok(gone)
    }

    /// Allows an address, CIDR or domain: the kernel lets it through over any block.
    pub fn allow(&mut self, t: &Target, reason: &str) -> Result<(), BlocklistError> {
        let r = match t {
            Target::Ip(ip) => {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                return self.allow(&Target::Cidr(*ip, len), reason);
            }
            Target::Cidr(ip, len) => match (v4(ip), v6(ip)) {
                (Some(a), _) => self
                    .allow4
                    .insert(&Key::new(u32::from(*len), a), u32::from(SOURCE_MANUAL), 0)
                    .map_err(map_err("insert", MAP_ALLOWED_CIDR_V4)),
                (_, Some(a)) => self
                    .allow6
                    .insert(&Key::new(u32::from(*len), a), u32::from(SOURCE_MANUAL), 0)
                    .map_err(map_err("insert", MAP_ALLOWED_CIDR_V6)),
                _ => Ok(()),
            },
            Target::Domain(d) => {
                let k = domain_key(d)
                    .ok_or_else(|| BlocklistError::BadDomain(d.clone(), "not a name".into()))?;
                let mut e = BlockEntry::new(SOURCE_MANUAL, 0);
                e.reason = reason_bytes(reason);
                e.added_unix = now_unix();
                self.allow_domains
                    .insert(k, domain_value(d, e), 0)
                    .map_err(map_err("insert", MAP_ALLOWED_DOMAINS))
            }
        };
        r?;
        // The occupancy slot first: until it is set the kernel does not look the allowlist up,
        // and a slot it filled meanwhile under the new generation would go on dropping.
        let marked = self.mark(t, List::Allowed);
        self.verdicts_changed(t, List::Allowed)?;
        marked
    }

    /// Removes an allowlist entry; `false` if there was none.
    pub fn unallow(&mut self, t: &Target) -> Result<bool, BlocklistError> {
        let r = match t {
            Target::Ip(ip) => {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                return self.unallow(&Target::Cidr(*ip, len));
            }
            Target::Cidr(ip, len) => match (v4(ip), v6(ip)) {
                (Some(a), _) => self
                    .allow4
                    .remove(&Key::new(u32::from(*len), a))
                    .map_err(map_err("remove", MAP_ALLOWED_CIDR_V4)),
                (_, Some(a)) => self
                    .allow6
                    .remove(&Key::new(u32::from(*len), a))
                    .map_err(map_err("remove", MAP_ALLOWED_CIDR_V6)),
                _ => return Ok(false),
            },
            Target::Domain(d) => match domain_key(d) {
                Some(k) => self
                    .allow_domains
                    .remove(&k)
                    .map_err(map_err("remove", MAP_ALLOWED_DOMAINS)),
                None => return Ok(false),
            },
        };
        let gone = removed(r)?;
        if gone {
            // After the settle, which may clear the slot and set it back (another writer's
            // entry arrived): the kernel skipped the allowlist meanwhile and may have cached a
            // drop it now overrides.
            let settled = self.settle(t, List::Allowed);
            self.verdicts_changed(t, List::Allowed)?;
            settled?;
        }
        Ok(gone)
    }

    /// Every allowlist entry.
    pub fn list_allowed(&self) -> Result<Vec<Listed>, BlocklistError> {
        let now = boot_ns();
        let mut out = Vec::new();
        for r in self.allow_domains.iter() {
            let (_, v) = r.map_err(map_err("read", MAP_ALLOWED_DOMAINS))?;
            out.push(listed("domain", text(&v.name), &v.entry, now));
        }
        let cidr = |value: String, source: u32| {
            let mut e = BlockEntry::new(source as u8, 0);
            e.reason = [0; REASON_LEN];
            listed("cidr", value, &e, now)
        };
        for r in self.allow4.iter() {
            let (k, v) = r.map_err(map_err("read", MAP_ALLOWED_CIDR_V4))?;
            out.push(cidr(cidr_text(&k), v));
        }
        for r in self.allow6.iter() {
            let (k, v) = r.map_err(map_err("read", MAP_ALLOWED_CIDR_V6))?;
            out.push(cidr(cidr_text(&k), v));
        }
        out.sort_by(|a, b| a.kind.cmp(b.kind).then_with(|| a.value.cmp(&b.value)));
        Ok(out)
    }

    /// Whether an allowed CIDR covers `ip` (the same longest-prefix lookup the kernel makes).
    pub fn address_allowed(&self, ip: &IpAddr) -> bool {
        match (v4(ip), v6(ip)) {
            (Some(a), _) => self.allow4.get(&Key::new(32, a), 0).is_ok(),
            (_, Some(a)) => self.allow6.get(&Key::new(128, a), 0).is_ok(),
            _ => false,
        }
    }

    /// The allowlist maps copied into memory ([`AllowSnapshot`]): one read of each, for
    /// checking many targets without a lookup syscall apiece.
    pub fn allow_snapshot(&self) -> Result<super::allow_snapshot::AllowSnapshot, BlocklistError> {
        let mut s = super::allow_snapshot::AllowSnapshot::default();
        for k in self.allow_domains.keys() {
            s.add_domain(k.map_err(map_err("read", MAP_ALLOWED_DOMAINS))?);
        }
        for k in self.allow4.keys() {
            let k = k.map_err(map_err("read", MAP_ALLOWED_CIDR_V4))?;
            s.add_v4(u8::try_from(k.prefix_len()).unwrap_or(32), k.data());
        }
        for k in self.allow6.keys() {
            let k = k.map_err(map_err("read", MAP_ALLOWED_CIDR_V6))?;
            s.add_v6(u8::try_from(k.prefix_len()).unwrap_or(128), k.data());
        }
        Ok(s)
    }

    /// Whether `name` or a parent domain is on the allowlist map.
    pub fn domain_allowed(&self, name: &str) -> bool {
        let mut rest = name;
        loop {
            if let Some(k) = domain_key(rest)
                && self.allow_domains.get(&k, 0).is_ok()
            {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_refuse() {
        assert_eq!(
            Target::ip("192.0.2.1").unwrap(),
            Target::Ip("192.0.2.1".parse().unwrap())
        );
        assert!(Target::ip("192.0.2.256").is_err());
        assert!(Target::ip("example.com").is_err());
        assert_eq!(
            Target::cidr("10.0.0.0/8").unwrap(),
            Target::Cidr("10.0.0.0".parse().unwrap(), 8)
        );
        assert_eq!(
            Target::cidr("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        let e = Target::cidr("10.0.0.1/8").unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        assert!(Target::cidr("10.0.0.0/33").is_err());
        assert!(Target::cidr("10.0.0.0/x").is_err());
        assert_eq!(
            Target::cidr("192.0.2.7").unwrap(),
            Target::Cidr("192.0.2.7".parse().unwrap(), 32)
        );
        assert_eq!(
            Target::domain("WWW.Example.COM.").unwrap(),
            Target::Domain("www.example.com".into())
        );
        for bad in [
            "",
            ".",
            "a..b",
            "exa mple.com",
            "bücher.de",
            "com",
            "co.uk",
            "192.0.2.1",
            &"a".repeat(64),
        ] {
            assert!(Target::domain(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Target::domain("example.co.uk").is_ok());
        assert!(Target::domain("_dmarc.example.com").is_ok());
    }

    #[test]
    fn domain_key_matches_the_kernel_hash_of_the_wire_name() {
        let mut wire = [0u8; MAX_NAME_WIRE];
        let n = to_wire("flux.test", &mut wire).unwrap();
        assert_eq!(domain_key("flux.test"), Some(domain_hash(&wire[..n])));
        assert_eq!(domain_key("FLUX.test"), domain_key("flux.test"));
    }

    #[test]
    fn a_full_map_does_not_claim_nothing_was_added() {
        let e = BlocklistError::Full {
            map: MAP_BLOCKED_CIDR_V4,
            capacity: 6,
        }
        .to_string();
        assert!(!e.contains("nothing was added"), "{e}");
        assert!(e.contains("this entry was not added"), "{e}");
    }

    #[test]
    fn reason_is_cut_at_a_char_boundary() {
        let r = reason_bytes("fast flux: 42 addresses in 7 networks");
        assert_eq!(text(&r), "fast flux: 42 addresses ");
        let r = reason_bytes(&"é".repeat(20));
        assert_eq!(text(&r).chars().count(), 12);
    }
}
