//! IP enrichment: address to ASN, AS name and country, from offline databases held in memory.
//!
//! Formats, recognised by content (a gzip stream is unpacked first, whatever the file name):
//! - iptoasn.com TSV: `range_start\trange_end\tAS_number\tcountry_code\tAS_description`
//!   (IPv4, IPv6 or mixed; ASN 0 means "not routed", country `None` means none).
//! - ip-location-db CSV: ASN files `start,end,asn,org` (org may be double-quoted) and country
//!   files `start,end,country_code`; addresses in dotted/colon form or as decimal integers
//!   (the `-num` files).
//! - MaxMind DB (`.mmdb`): ASN (`autonomous_system_number`, `autonomous_system_organization`)
//!   or country (`country.iso_code`, ip-location-db's `country_code`, else
//!   `registered_country.iso_code`).
//!
//! Everything is converted at load time into sorted, non-overlapping range tables (IPv4 as
//! `u32`, IPv6 as `u128`, struct of arrays) searched by binary search; AS names are interned.
//! No file is touched after [`Enricher::load`].
//!
//! Overlapping ranges (real databases nest more specific ranges inside larger ones) are
//! flattened at load time: an address gets the value of the covering range that starts last,
//! and of those the shortest; on an exact tie the file given first (then the earlier line)
//! wins. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are looked up as IPv4.

use ipnet::IpNet;
use std::{
    collections::HashMap,
    fmt,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Arc,
};

/// What the databases say about one address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpInfo {
    pub asn: Option<u32>,
    pub as_name: Option<Arc<str>>,
    /// ISO 3166 alpha-2, uppercase.
    pub country: Option<[u8; 2]>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Format {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: unrecognised database format ({reason})")]
    UnknownFormat { path: PathBuf, reason: String },
    /// A damaged binary database (gzip stream or MaxMind DB), where there is no line to name.
    #[error("{path}: corrupt database ({reason})")]
    Corrupt { path: PathBuf, reason: String },
}

/// The ASN files `cargo xtask setup` installs (ip-location-db `asn`), in [`default_db_dir`].
pub const DEFAULT_ASN_FILES: [&str; 2] = ["asn-ipv4.csv", "asn-ipv6.csv"];
/// The country files `cargo xtask setup` installs (ip-location-db `geo-whois-asn-country`).
pub const DEFAULT_GEO_FILES: [&str; 2] = [
    "geo-whois-asn-country-ipv4.csv",
    "geo-whois-asn-country-ipv6.csv",
];

/// In-memory range tables built from one or more databases.
#[derive(Default)]
pub struct Enricher {
    /// Interned AS names; [`AsnVal::name`] indexes this.
    names: Vec<Arc<str>>,
    asn: Tables<AsnVal>,
    /// Countries from the country databases.
    geo: Tables<Country>,
    /// Countries from iptoasn files given as ASN databases: used where `geo` has no answer.
    asn_geo: Tables<Country>,
    asn_files: usize,
    geo_files: usize,
}

impl Enricher {
    /// No databases: every lookup is empty.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads ASN databases (iptoasn TSV, ip-location-db ASN CSV, ASN .mmdb) and country
    /// databases (ip-location-db country CSV, iptoasn TSV, country .mmdb). Format by content.
    pub fn load(asn: &[PathBuf], geo: &[PathBuf]) -> Result<Self, EnrichError> {
        let mut b = Builder::default();
        for path in asn {
            b.load_file(path, Role::Asn)?;
        }
        for path in geo {
            b.load_file(path, Role::Geo)?;
        }
        let enricher = b.finish();
        release_freed_memory();
        Ok(enricher)
    }

    /// Loads whatever of the default files `cargo xtask setup` installs is present in `dir`
    /// ([`DEFAULT_ASN_FILES`], [`DEFAULT_GEO_FILES`], each also accepted gzipped as `NAME.gz`).
    /// None present (or no `dir`) is an empty Enricher, not an error.
    pub fn load_dir(dir: &Path) -> Result<Self, EnrichError> {
        let present = |names: &[&str]| -> Vec<PathBuf> {
            names
                .iter()
                .filter_map(|name| {
                    let plain = dir.join(name);
                    let gz = dir.join(format!("{name}.gz"));
                    [plain, gz].into_iter().find(|p| p.is_file())
                })
                .collect()
        };
        Self::load(&present(&DEFAULT_ASN_FILES), &present(&DEFAULT_GEO_FILES))
    }

    pub fn has_asn(&self) -> bool {
        !self.asn.is_empty()
    }

    pub fn has_geo(&self) -> bool {
        !self.geo.is_empty() || !self.asn_geo.is_empty()
    }

    pub fn lookup(&self, ip: IpAddr) -> IpInfo {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        let (asn, as_name) = match self.asn.get(ip) {
            Some(v) => (Some(v.asn), self.names.get(v.name as usize).cloned()),
            None => (None, None),
        };
        let country = self.geo.get(ip).or_else(|| self.asn_geo.get(ip));
        IpInfo {
            asn,
            as_name,
            country,
        }
    }

    /// Every (first, last) address range the ASN databases assign to `asn`.
    pub fn ranges_of(&self, asn: u32) -> Vec<(IpAddr, IpAddr)> {
        let mut out: Vec<(IpAddr, IpAddr)> = Vec::new();
        let v4 = self.asn.v4.matching(|v| v.asn == asn);
        let v6 = self.asn.v6.matching(|v| v.asn == asn);
        out.extend(v4.map(|(s, e)| (Ipv4Addr::from(s).into(), Ipv4Addr::from(e).into())));
        out.extend(v6.map(|(s, e)| (Ipv6Addr::from(s).into(), Ipv6Addr::from(e).into())));
        out
    }

    /// A one-line description for the startup log.
    pub fn describe(&self) -> String {
        let asn = self.asn.len();
        let geo = self.geo.len() + self.asn_geo.len();
        if asn == 0 && geo == 0 {
            return "no ASN/geo database: scoring falls back to prefix diversity".to_owned();
        }
        let asn_part = if asn == 0 {
            "no ASN database".to_owned()
        } else {
            format!(
                "ASN: {} ranges from {}",
                thousands(asn),
                plural(self.asn_files, "file")
            )
        };
        let geo_part = if geo == 0 {
            "no country database".to_owned()
        } else if self.geo.is_empty() {
            format!("country: {} ranges from the ASN database", thousands(geo))
        } else {
            format!(
                "country: {} ranges from {}",
                thousands(geo),
                plural(self.geo_files, "file")
            )
        };
        format!("{asn_part}; {geo_part}")
    }

    /// Approximate heap bytes held by the tables and names.
    pub fn memory_bytes(&self) -> usize {
        let names: usize = self
            .names
            .iter()
            .map(|n| n.len() + 2 * size_of::<usize>() + size_of::<Arc<str>>())
            .sum();
        names + self.asn.bytes() + self.geo.bytes() + self.asn_geo.bytes()
    }
}

impl fmt::Debug for Enricher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Enricher({})", self.describe())
    }
}

/// Loading frees tens of MB of file buffers and unsorted rows that glibc would otherwise keep
/// in the heap (resident) for good.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `$FLUX_AGENT_DB_DIR`, else `/var/lib/flux-agent/db`.
// xtask/src/setup.rs duplicates this rule (xtask does not depend on flux-agent).
pub fn default_db_dir() -> PathBuf {
    std::env::var_os("FLUX_AGENT_DB_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/flux-agent/db"), PathBuf::from)
}

// ---------------------------------------------------------------------------------------------
// Range tables

type Country = [u8; 2];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AsnVal {
    asn: u32,
    /// Index into [`Enricher::names`]; [`NO_NAME`] for none.
    name: u32,
}

const NO_NAME: u32 = u32::MAX;

trait Addr: Copy + Ord + fmt::Debug {
    const ZERO: Self;
    const MAX: Self;
    fn next(self) -> Self;
    fn prev(self) -> Self;
    /// The top 16 bits: which [`Table::buckets`] slot the address falls in.
    fn bucket(self) -> usize;
}

impl Addr for u32 {
    const ZERO: Self = 0;
    const MAX: Self = u32::MAX;
    fn next(self) -> Self {
        self + 1
    }
    fn prev(self) -> Self {
        self - 1
    }
    fn bucket(self) -> usize {
        (self >> 16) as usize
    }
}

impl Addr for u128 {
    const ZERO: Self = 0;
    const MAX: Self = u128::MAX;
    fn next(self) -> Self {
        self + 1
    }
    fn prev(self) -> Self {
        self - 1
    }
    fn bucket(self) -> usize {
        (self >> 112) as usize
    }
}

/// Buckets of the lookup index: one per value of the top 16 address bits, plus an end marker.
const BUCKETS: usize = (1 << 16) + 1;

/// Sorted, non-overlapping, inclusive ranges (struct of arrays: the binary search only reads
/// `starts`).
///
/// `buckets[b]` is the index of the first range starting at or after `b << (bits - 16)`, so a
/// lookup binary-searches only the ranges that start in the address's own /16 (for IPv4): one
/// or two cache misses instead of the twenty steps over the whole table, which showed in
/// replay profiles of streams with many new addresses.
struct Table<A, V> {
    starts: Vec<A>,
    ends: Vec<A>,
    vals: Vec<V>,
    /// Empty until [`Table::index`]; then [`BUCKETS`] entries.
    buckets: Vec<u32>,
}

impl<A, V> Default for Table<A, V> {
    fn default() -> Self {
        Self {
            starts: Vec::new(),
            ends: Vec::new(),
            vals: Vec::new(),
            buckets: Vec::new(),
        }
    }
}

impl<A: Addr, V: Copy + Eq> Table<A, V> {
    fn get(&self, a: A) -> Option<V> {
        // Every range before `lo` starts in an earlier bucket (so at or below `a`), every range
        // from `hi` on in a later one (above `a`): the search only needs `lo..hi`.
        let b = a.bucket();
        let (lo, hi) = match (self.buckets.get(b), self.buckets.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.starts.len()),
        };
        let i = lo + self.starts.get(lo..hi)?.partition_point(|&s| s <= a);
        (i > 0 && a <= *self.ends.get(i - 1)?).then(|| self.vals.get(i - 1).copied())?
    }

    /// Builds the bucket index (after the last [`Table::push`]).
    fn index(&mut self) {
        let mut buckets = Vec::with_capacity(BUCKETS);
        let mut i = 0usize;
        for b in 0..BUCKETS {
            while self.starts.get(i).is_some_and(|s| s.bucket() < b) {
                i += 1;
            }
            buckets.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        self.buckets = buckets;
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    fn bytes(&self) -> usize {
        self.starts.capacity() * size_of::<A>()
            + self.ends.capacity() * size_of::<A>()
            + self.vals.capacity() * size_of::<V>()
            + self.buckets.capacity() * size_of::<u32>()
    }

    /// Ranges whose value matches, adjacent ones joined.
    fn matching(&self, mut pred: impl FnMut(&V) -> bool) -> impl Iterator<Item = (A, A)> {
        let mut out: Vec<(A, A)> = Vec::new();
        for i in 0..self.len() {
            if !pred(&self.vals[i]) {
                continue;
            }
            let (s, e) = (self.starts[i], self.ends[i]);
            match out.last_mut() {
                Some(last) if last.1 != A::MAX && last.1.next() == s => last.1 = e,
                _ => out.push((s, e)),
            }
        }
        out.into_iter()
    }

    fn push(&mut self, s: A, e: A, v: V) {
        if let (Some(last_end), Some(last_val)) = (self.ends.last_mut(), self.vals.last()) {
            // `*last_end < s` always holds here, so `next` cannot overflow.
            if *last_val == v && last_end.next() == s {
                *last_end = e;
                return;
            }
        }
        self.starts.push(s);
        self.ends.push(e);
        self.vals.push(v);
    }

    /// Flattens possibly overlapping ranges: each address gets the value of the covering range
    /// that starts last (then the shortest, then the lowest `seq`). Adjacent equal values merge.
    fn build(mut raw: Vec<Raw<A, V>>) -> Self {
        raw.sort_unstable_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(b.end.cmp(&a.end))
                .then(b.seq.cmp(&a.seq))
        });
        let mut t = Table::default();
        // Open ranges as (end, value), in start order: the top is the innermost.
        let mut open: Vec<(A, V)> = Vec::new();
        // First address not yet emitted (only meaningful while something is open).
        let mut cursor = A::ZERO;
        for r in raw {
            while let Some(&(end, v)) = open.last() {
                if end >= r.start {
                    break;
                }
                open.pop();
                // `end < r.start <= MAX`: `next` cannot overflow.
                if end >= cursor {
                    t.push(cursor, end, v);
                    cursor = end.next();
                }
            }
            if let Some(&(_, v)) = open.last()
                && cursor < r.start
            {
                t.push(cursor, r.start.prev(), v);
            }
            cursor = r.start;
            open.push((r.end, r.val));
        }
        while let Some((end, v)) = open.pop() {
            if end >= cursor {
                t.push(cursor, end, v);
                if end == A::MAX {
                    break;
                }
                cursor = end.next();
            }
        }
        t.starts.shrink_to_fit();
        t.ends.shrink_to_fit();
        t.vals.shrink_to_fit();
        if !t.starts.is_empty() {
            t.index();
        }
        t
    }
}

struct Raw<A, V> {
    start: A,
    end: A,
    /// Load order, to break exact ties deterministically.
    seq: u32,
    val: V,
}

struct Tables<V> {
    v4: Table<u32, V>,
    v6: Table<u128, V>,
}

impl<V> Default for Tables<V> {
    fn default() -> Self {
        Self {
            v4: Table::default(),
            v6: Table::default(),
        }
    }
}

impl<V: Copy + Eq> Tables<V> {
    fn get(&self, ip: IpAddr) -> Option<V> {
        match ip {
            IpAddr::V4(a) => self.v4.get(a.into()),
            IpAddr::V6(a) => self.v6.get(a.into()),
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bytes(&self) -> usize {
        self.v4.bytes() + self.v6.bytes()
    }
}

struct Pending<V> {
    v4: Vec<Raw<u32, V>>,
    v6: Vec<Raw<u128, V>>,
}

impl<V> Default for Pending<V> {
    fn default() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

impl<V: Copy + Eq> Pending<V> {
    fn push(&mut self, range: Range, seq: u32, val: V) {
        match range {
            Range::V4(start, end) => self.v4.push(Raw {
                start,
                end,
                seq,
                val,
            }),
            Range::V6(start, end) => self.v6.push(Raw {
                start,
                end,
                seq,
                val,
            }),
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn build(self) -> Tables<V> {
        Tables {
            v4: Table::build(self.v4),
            v6: Table::build(self.v6),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Asn,
    Geo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

#[derive(Default)]
struct Builder {
    names: Vec<Arc<str>>,
    name_ids: HashMap<Arc<str>, u32>,
    asn: Pending<AsnVal>,
    geo: Pending<Country>,
    asn_geo: Pending<Country>,
    seq: u32,
    asn_files: usize,
    geo_files: usize,
}

/// The text formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TextKind {
    /// iptoasn.com: start, end, ASN, country, description (tab-separated).
    Iptoasn,
    /// ip-location-db ASN: start, end, ASN, organisation.
    AsnCsv,
    /// ip-location-db country: start, end, country.
    CountryCsv,
}

/// One address field before its family is known (decimal integers in the `-num` files).
#[derive(Clone, Copy, Debug)]
enum Addr1 {
    V4(u32),
    V6(u128),
    Num(u128),
}

/// A decimal-integer row whose family is decided for the whole file at the end.
struct NumRow {
    start: u128,
    end: u128,
    asn: Option<AsnVal>,
    country: Option<Country>,
}

const MMDB_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

impl Builder {
    fn finish(self) -> Enricher {
        Enricher {
            names: self.names,
            asn: self.asn.build(),
            geo: self.geo.build(),
            asn_geo: self.asn_geo.build(),
            asn_files: self.asn_files,
            geo_files: self.geo_files,
        }
    }

    fn intern(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return NO_NAME;
        }
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(NO_NAME);
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.name_ids.insert(name, id);
        id
    }

    fn add(&mut self, role: Role, range: Range, asn: Option<AsnVal>, country: Option<Country>) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        match role {
            Role::Asn => {
                if let Some(v) = asn {
                    self.asn.push(range, seq, v);
                }
                if let Some(c) = country {
                    self.asn_geo.push(range, seq, c);
                }
            }
            Role::Geo => {
                if let Some(c) = country {
                    self.geo.push(range, seq, c);
                }
            }
        }
    }

    fn contributed(&self) -> (usize, usize, usize) {
        (self.asn.len(), self.geo.len(), self.asn_geo.len())
    }

    fn load_file(&mut self, path: &Path, role: Role) -> Result<(), EnrichError> {
        let io = |source| EnrichError::Io {
            path: path.to_owned(),
            source,
        };
        let mut bytes = std::fs::read(path).map_err(io)?;
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::with_capacity(bytes.len() * 4);
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .map_err(|e| EnrichError::Corrupt {
                    path: path.to_owned(),
                    reason: format!("gzip: {e}"),
                })?;
            bytes = out;
        }
        let before = self.contributed();
        if is_mmdb(&bytes) {
            self.load_mmdb(path, bytes, role)?;
        } else {
            self.load_text(path, &bytes, role)?;
        }
        let after = self.contributed();
        match role {
            Role::Asn => {
                self.asn_files += usize::from(after.0 > before.0);
                self.geo_files += usize::from(after.2 > before.2);
            }
            Role::Geo => self.geo_files += usize::from(after.1 > before.1),
        }
        Ok(())
    }

    fn load_text(&mut self, path: &Path, bytes: &[u8], role: Role) -> Result<(), EnrichError> {
        let format_err = |line: usize, reason: String| EnrichError::Format {
            path: path.to_owned(),
            line,
            reason,
        };
        // The first data line decides: tab-separated (iptoasn, no quoting) or RFC 4180 CSV.
        let tsv = bytes
            .split(|&b| b == b'\n')
            .find(|l| !matches!(l.first(), None | Some(b'\r' | b'#')))
            .is_some_and(|l| l.contains(&b'\t'));
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .comment(Some(b'#'))
            .delimiter(if tsv { b'\t' } else { b',' })
            .quoting(!tsv)
            .from_reader(bytes);
        let mut kind = None;
        let mut record = csv::ByteRecord::new();
        let mut num_rows: Vec<NumRow> = Vec::new();
        loop {
            // With `flexible` and byte records, reading cannot fail but on I/O, and a slice
            // does no I/O; the error still names where it happened.
            let more = reader.read_byte_record(&mut record).map_err(|e| {
                let line = e.position().map_or(0, |p| p.line() as usize);
                format_err(line, e.to_string())
            })?;
            if !more {
                break;
            }
            // Where the record starts, for error messages (the line is counted only then).
            let at = record.position().map_or(0, |p| p.byte() as usize);
            let lineno = || line_of(bytes, at);
            let mut fields: Vec<&str> = Vec::with_capacity(5);
            for field in &record {
                match std::str::from_utf8(field) {
                    Ok(f) => fields.push(f),
                    Err(_) if kind.is_none() => {
                        return Err(EnrichError::UnknownFormat {
                            path: path.to_owned(),
                            reason: "neither text, gzip nor a MaxMind DB".into(),
                        });
                    }
                    Err(_) => return Err(format_err(lineno(), "not valid UTF-8".into())),
                }
            }
            // The csv crate lets a quoted field run on over line ends; no database field does.
            if record.as_slice().contains(&b'\n') {
                return Err(format_err(lineno(), "unterminated quoted field".into()));
            }
            let kind = match kind {
                Some(k) => k,
                None => {
                    let rest = bytes.get(record_start(bytes, at)..).unwrap_or_default();
                    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
                    let line = String::from_utf8_lossy(line);
                    let k = detect_text(&line, tsv, &fields).map_err(|reason| {
                        EnrichError::UnknownFormat {
                            path: path.to_owned(),
                            reason,
                        }
                    })?;
                    check_role(k, role).map_err(|reason| EnrichError::UnknownFormat {
                        path: path.to_owned(),
                        reason: reason.into(),
                    })?;
                    *kind.insert(k)
                }
            };
            let expected = match kind {
                TextKind::Iptoasn => 5,
                TextKind::AsnCsv => 4,
                TextKind::CountryCsv => 3,
            };
            if fields.len() != expected {
                return Err(format_err(
                    lineno(),
                    format!(
                        "{} fields where this {} file has {expected}",
                        fields.len(),
                        kind.name()
                    ),
                ));
            }
            let (start, end) =
                parse_range(&fields[0], &fields[1]).map_err(|e| format_err(lineno(), e))?;
            let (asn, country) = match kind {
                TextKind::Iptoasn => {
                    let asn = parse_asn(&fields[2]).map_err(|e| format_err(lineno(), e))?;
                    let country = parse_country(&fields[3]).map_err(|e| format_err(lineno(), e))?;
                    let asn = (asn != 0 && role == Role::Asn).then(|| AsnVal {
                        asn,
                        name: self.intern(fields[4].trim()),
                    });
                    (asn, country)
                }
                TextKind::AsnCsv => {
                    let asn = parse_asn(&fields[2]).map_err(|e| format_err(lineno(), e))?;
                    let asn = (asn != 0).then(|| AsnVal {
                        asn,
                        name: self.intern(fields[3].trim()),
                    });
                    (asn, None)
                }
                TextKind::CountryCsv => {
                    let country = parse_country(&fields[2]).map_err(|e| format_err(lineno(), e))?;
                    (None, country)
                }
            };
            match (start, end) {
                (Addr1::Num(start), Addr1::Num(end)) => num_rows.push(NumRow {
                    start,
                    end,
                    asn,
                    country,
                }),
                (start, end) => {
                    let range = to_range(start, end).map_err(|e| format_err(lineno(), e))?;
                    self.add(role, range, asn, country);
                }
            }
        }
        if kind.is_none() {
            return Err(EnrichError::UnknownFormat {
                path: path.to_owned(),
                reason: "no data".into(),
            });
        }
        // Decimal addresses: IPv6 if the file says so by name or by a value beyond 32 bits.
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase());
        let v6 = name.is_some_and(|n| n.contains("ipv6"))
            || num_rows.iter().any(|r| r.end > u128::from(u32::MAX));
        for r in num_rows {
            let range = if v6 {
                Range::V6(r.start, r.end)
            } else {
                // Every value fits: otherwise `v6` would be set.
                Range::V4(r.start as u32, r.end as u32)
            };
            self.add(role, range, r.asn, r.country);
        }
        Ok(())
    }

    fn load_mmdb(&mut self, path: &Path, bytes: Vec<u8>, role: Role) -> Result<(), EnrichError> {
        let corrupt = |e: maxminddb::MaxMindDbError| EnrichError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let reader = maxminddb::Reader::from_source(bytes).map_err(corrupt)?;
        let db_type = reader.metadata().database_type.clone();
        // Records are shared by many networks: decode each once.
        let mut cache: HashMap<usize, (Option<AsnVal>, Option<Country>)> = HashMap::new();
        let mut networks = 0usize;
        let mut useful = 0usize;
        for item in reader.networks(Default::default()).map_err(corrupt)? {
            let item = item.map_err(corrupt)?;
            let net = item.network().map_err(corrupt)?;
            let range = cidr_range(net.ip(), net.prefix());
            networks += 1;
            let Some(offset) = item.offset() else {
                continue;
            };
            let vals = match cache.get(&offset) {
                Some(v) => *v,
                None => {
                    let rec: MmdbRecord<'_> = item.decode().map_err(corrupt)?.unwrap_or_default();
                    let asn = match (role, rec.autonomous_system_number) {
                        (Role::Asn, Some(asn)) if asn != 0 => Some(AsnVal {
                            asn,
                            name: self.intern(rec.autonomous_system_organization.unwrap_or("")),
                        }),
                        _ => None,
                    };
                    let code = match role {
                        Role::Asn => None,
                        Role::Geo => rec
                            .country
                            .and_then(|c| c.iso_code)
                            .or(rec.country_code)
                            .or(rec.registered_country.and_then(|c| c.iso_code)),
                    };
                    let country = match code {
                        Some(code) => {
                            parse_country(code).map_err(|reason| EnrichError::Corrupt {
                                path: path.to_owned(),
                                reason: format!("{net}: {reason}"),
                            })?
                        }
                        None => None,
                    };
                    cache.insert(offset, (asn, country));
                    (asn, country)
                }
            };
            if vals.0.is_some() || vals.1.is_some() {
                useful += 1;
            }
            self.add(role, range, vals.0, vals.1);
        }
        if networks > 0 && useful == 0 {
            let wanted = match role {
                Role::Asn => "ASN database but no record has autonomous_system_number",
                Role::Geo => "country database but no record has a country ISO code",
            };
            return Err(EnrichError::UnknownFormat {
                path: path.to_owned(),
                reason: format!("MaxMind DB `{db_type}` given as an {wanted}"),
            });
        }
        Ok(())
    }
}

#[derive(Default, serde::Deserialize)]
struct MmdbRecord<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
    #[serde(borrow)]
    country: Option<MmdbCountry<'a>>,
    #[serde(borrow)]
    registered_country: Option<MmdbCountry<'a>>,
    /// ip-location-db's country mmdb files.
    #[serde(borrow)]
    country_code: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct MmdbCountry<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

impl TextKind {
    fn name(self) -> &'static str {
        match self {
            TextKind::Iptoasn => "iptoasn TSV",
            TextKind::AsnCsv => "ASN CSV",
            TextKind::CountryCsv => "country CSV",
        }
    }
}

/// The 1-based line of the record the csv crate read from byte `at` on. Counted here because
/// the csv crate's own count leaves out blank lines, and its record position is where the
/// previous record ended.
fn line_of(bytes: &[u8], at: usize) -> usize {
    let start = record_start(bytes, at);
    bytes[..start].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The first byte of the record the csv crate read from `at` on: after the blank lines and
/// comment lines it skipped.
fn record_start(bytes: &[u8], mut at: usize) -> usize {
    while let Some(&b) = bytes.get(at) {
        match b {
            b'\n' | b'\r' => at += 1,
            b'#' => match bytes[at..].iter().position(|&b| b == b'\n') {
                Some(n) => at += n + 1,
                None => return bytes.len(),
            },
            _ => break,
        }
    }
    at.min(bytes.len())
}

fn is_mmdb(bytes: &[u8]) -> bool {
    // The metadata section sits in the last 128 KiB.
    let tail = &bytes[bytes.len().saturating_sub(128 * 1024)..];
    tail.windows(MMDB_MARKER.len()).any(|w| w == MMDB_MARKER)
}

/// The format, from the first data line.
fn detect_text(line: &str, tsv: bool, fields: &[&str]) -> Result<TextKind, String> {
    let shown: String = line.chars().take(80).collect();
    let kind = match (tsv, fields.len()) {
        (true, 5) => TextKind::Iptoasn,
        (false, 4) => TextKind::AsnCsv,
        (false, 3) => TextKind::CountryCsv,
        _ => {
            return Err(format!(
                "first line `{shown}` is neither iptoasn TSV (5 tab-separated fields) nor ip-location-db CSV (start,end,asn,org or start,end,country)"
            ));
        }
    };
    if parse_addr(fields[0]).is_none() {
        return Err(format!(
            "first line `{shown}` does not start with an address"
        ));
    }
    Ok(kind)
}

fn check_role(kind: TextKind, role: Role) -> Result<(), &'static str> {
    match (kind, role) {
        (TextKind::CountryCsv, Role::Asn) => Err(
            "a country CSV (start,end,country) given as an ASN database; give it as a country database",
        ),
        (TextKind::AsnCsv, Role::Geo) => Err(
            "an ASN CSV (start,end,asn,org) given as a country database; give it as an ASN database",
        ),
        _ => Ok(()),
    }
}

fn parse_addr(s: &str) -> Option<Addr1> {
    let s = s.trim();
    if s.contains(':') {
        s.parse::<Ipv6Addr>().ok().map(|a| Addr1::V6(a.into()))
    } else if s.contains('.') {
        s.parse::<Ipv4Addr>().ok().map(|a| Addr1::V4(a.into()))
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u128>().ok().map(Addr1::Num)
    } else {
        None
    }
}

fn parse_range(start: &str, end: &str) -> Result<(Addr1, Addr1), String> {
    let s = parse_addr(start).ok_or_else(|| format!("bad start address `{start}`"))?;
    let e = parse_addr(end).ok_or_else(|| format!("bad end address `{end}`"))?;
    let (sv, ev) = match (s, e) {
        (Addr1::V4(a), Addr1::V4(b)) => (u128::from(a), u128::from(b)),
        (Addr1::V6(a), Addr1::V6(b)) | (Addr1::Num(a), Addr1::Num(b)) => (a, b),
        _ => return Err(format!("`{start}` and `{end}` are different address forms")),
    };
    if sv > ev {
        return Err(format!("range start `{start}` is after its end `{end}`"));
    }
    Ok((s, e))
}

/// A range from two textual addresses of the same family; IPv4-mapped IPv6 becomes IPv4.
fn to_range(start: Addr1, end: Addr1) -> Result<Range, String> {
    const MAPPED: u128 = 0xffff_0000_0000;
    let mapped = |a: u128| (a >> 32) == 0xffff;
    match (start, end) {
        (Addr1::V4(s), Addr1::V4(e)) => Ok(Range::V4(s, e)),
        (Addr1::V6(s), Addr1::V6(e)) if mapped(s) && mapped(e) => {
            Ok(Range::V4((s - MAPPED) as u32, (e - MAPPED) as u32))
        }
        (Addr1::V6(s), Addr1::V6(e)) => Ok(Range::V6(s, e)),
        _ => Err("mixed address forms".into()),
    }
}

/// The range of a MaxMind DB network; IPv4-mapped IPv6 networks (`::ffff:0:0/96` and inside)
/// become IPv4. A prefix beyond the family's length (a corrupt database) is taken as a host.
fn cidr_range(ip: IpAddr, prefix: u8) -> Range {
    let net = IpNet::new(ip, prefix).unwrap_or_else(|_| IpNet::from(ip));
    match net {
        IpNet::V4(n) => Range::V4(n.network().into(), n.broadcast().into()),
        IpNet::V6(n) => match n.network().to_ipv4_mapped() {
            Some(start) if n.prefix_len() >= 96 => {
                let end = n.broadcast().to_ipv4_mapped().unwrap_or(start);
                Range::V4(start.into(), end.into())
            }
            _ => Range::V6(n.network().into(), n.broadcast().into()),
        },
    }
}

fn parse_asn(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("AS")
        .or_else(|| t.strip_prefix("as"))
        .unwrap_or(t);
    t.parse().map_err(|_| format!("bad AS number `{s}`"))
}

/// `None`, empty, `-` and `ZZ` (unknown) mean no country.
fn parse_country(s: &str) -> Result<Option<Country>, String> {
    let t = s.trim();
    if t.is_empty() || t == "None" || t == "-" || t.eq_ignore_ascii_case("ZZ") {
        return Ok(None);
    }
    match t.as_bytes() {
        &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Ok(Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
        }
        _ => Err(format!("bad country code `{s}` (want ISO 3166 alpha-2)")),
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "flux-enrich-{}-{}-{name}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn info(asn: Option<u32>, name: Option<&str>, country: Option<&str>) -> IpInfo {
        IpInfo {
            asn,
            as_name: name.map(Arc::from),
            country: country.map(|c| c.as_bytes().try_into().unwrap()),
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    const IPTOASN: &str = "\
1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET
1.0.1.0\t1.0.3.255\t0\tNone\tNot routed
1.0.4.0\t1.0.7.255\t38803\tAU\tGTELECOM-AUSTRALIA Gtelecom Pty Ltd
2001:200::\t2001:200:ffff:ffff:ffff:ffff:ffff:ffff\t2500\tJP\tWIDE-BB WIDE Project
";

    /// The bucket index answers exactly what a search over the whole table does, including
    /// ranges that span buckets and addresses in empty buckets.
    #[test]
    fn bucket_index_matches_a_full_search() {
        let mut raw = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seq in 0..5_000u32 {
            let start = next() as u32;
            // Mostly short ranges, some spanning many /16s.
            let len = if seq % 50 == 0 {
                next() as u32 >> 8
            } else {
                next() as u32 >> 20
            };
            raw.push(Raw {
                start,
                end: start.saturating_add(len),
                seq,
                val: seq % 97,
            });
        }
        let t: Table<u32, u32> = Table::build(raw);
        assert_eq!(t.buckets.len(), BUCKETS);
        let full = |a: u32| {
            let i = t.starts.partition_point(|&s| s <= a);
            (i > 0 && a <= t.ends[i - 1]).then(|| t.vals[i - 1])
        };
        for _ in 0..200_000 {
            let a = next() as u32;
            assert_eq!(t.get(a), full(a), "{a:#x}");
        }
        for &a in t.starts.iter().chain(&t.ends) {
            for probe in [a.wrapping_sub(1), a, a.wrapping_add(1)] {
                assert_eq!(t.get(probe), full(probe), "{probe:#x}");
            }
        }
        assert_eq!(t.get(0), full(0));
        assert_eq!(t.get(u32::MAX), full(u32::MAX));
    }

    #[test]
    fn iptoasn_tsv_v4_and_v6() {
        let d = Scratch::new("iptoasn");
        let tsv = d.write("ip2asn-combined.tsv", IPTOASN);
        let e = Enricher::load(std::slice::from_ref(&tsv), &[]).unwrap();
        assert!(e.has_asn() && e.has_geo());
        assert_eq!(
            e.lookup(ip("1.0.0.7")),
            info(Some(13335), Some("CLOUDFLARENET"), Some("US"))
        );
        assert_eq!(
            e.lookup(ip("1.0.2.1")),
            IpInfo::default(),
            "ASN 0 is no info"
        );
        assert_eq!(
            e.lookup(ip("1.0.7.255")),
            info(
                Some(38803),
                Some("GTELECOM-AUSTRALIA Gtelecom Pty Ltd"),
                Some("AU")
            )
        );
        assert_eq!(e.lookup(ip("1.0.8.0")), IpInfo::default());
        assert_eq!(
            e.lookup(ip("2001:200:1::1")),
            info(Some(2500), Some("WIDE-BB WIDE Project"), Some("JP"))
        );
        assert_eq!(e.lookup(ip("2001:201::1")), IpInfo::default());
        assert_eq!(
            e.describe(),
            "ASN: 3 ranges from 1 file; country: 3 ranges from the ASN database"
        );

        // Given as a country database it contributes countries only.
        let g = Enricher::load(&[], &[tsv]).unwrap();
        assert!(!g.has_asn() && g.has_geo());
        assert_eq!(g.lookup(ip("1.0.0.7")), info(None, None, Some("US")));
    }

    #[test]
    fn geo_database_wins_over_iptoasn_country() {
        let d = Scratch::new("precedence");
        let tsv = d.write("ip2asn-v4.tsv", IPTOASN);
        let geo = d.write("geo.csv", "1.0.0.0,1.0.0.127,AU\n");
        let e = Enricher::load(&[tsv], &[geo]).unwrap();
        assert_eq!(e.lookup(ip("1.0.0.1")).country, Some(*b"AU"));
        assert_eq!(e.lookup(ip("1.0.0.200")).country, Some(*b"US"));
        assert_eq!(e.lookup(ip("1.0.0.1")).asn, Some(13335));
    }

    #[test]
    fn ip_location_db_csv_quoted_and_num() {
        let d = Scratch::new("csv");
        let asn4 = d.write(
            "asn-ipv4.csv",
            "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n\
             2.26.200.0,2.26.215.255,201907,\"LLC \"\"SPUTNIK\"\"\"\n\
             1.0.4.0,1.0.7.255,38803,Gtelecom Pty Ltd\r\n\
             \n\
             5.0.0.0,5.0.0.255,64512,\n",
        );
        let asn6 = d.write(
            "asn-ipv6.csv",
            "2001:200::,2001:200:1b9:ffff:ffff:ffff:ffff:ffff,2500,WIDE Project\n",
        );
        let geo4 = d.write(
            "geo-ipv4-num.csv",
            "16777216,16777471,au\n16778240,16779263,AU\n",
        );
        // Decimal IPv6 (2001:200::/32 and ::1, which fits in 32 bits: the name decides).
        let geo6 = d.write(
            "geo-ipv6-num.csv",
            "42540528726795050063891204319802818560,42540528806023212578155541913346768895,JP\n1,1,ZZ\n",
        );
        let e = Enricher::load(&[asn4, asn6], &[geo4, geo6]).unwrap();
        assert_eq!(
            e.lookup(ip("1.0.0.1")),
            info(Some(13335), Some("Cloudflare, Inc."), Some("AU"))
        );
        assert_eq!(
            e.lookup(ip("2.26.201.1")),
            info(Some(201907), Some("LLC \"SPUTNIK\""), None)
        );
        assert_eq!(
            e.lookup(ip("1.0.5.5")),
            info(Some(38803), Some("Gtelecom Pty Ltd"), Some("AU"))
        );
        assert_eq!(e.lookup(ip("5.0.0.9")), info(Some(64512), None, None));
        assert_eq!(
            e.lookup(ip("2001:200::53")),
            info(Some(2500), Some("WIDE Project"), Some("JP"))
        );
        assert_eq!(e.lookup(ip("::1")), IpInfo::default());
        assert_eq!(
            e.describe(),
            "ASN: 5 ranges from 2 files; country: 3 ranges from 2 files"
        );

        // Decimal files whose name says nothing about the family: the values decide.
        let v4 = d.write("a.csv", "16777216,16777471,13335,\"Cloudflare, Inc.\"\n");
        let v6 = d.write(
            "b.csv",
            "42540528726795050063891204319802818560,42540528806023212578155541913346768895,2500,WIDE Project\n",
        );
        let e = Enricher::load(&[v4, v6], &[]).unwrap();
        assert_eq!(e.lookup(ip("1.0.0.1")).asn, Some(13335));
        assert_eq!(e.lookup(ip("2001:200::1")).asn, Some(2500));
    }

    #[test]
    fn num_ipv4_and_ipv6_files() {
        let d = Scratch::new("num");
        let v4 = d.write(
            "asn-ipv4-num.csv",
            "16777216,16777471,13335,\"Cloudflare, Inc.\"\n",
        );
        let v6 = d.write(
            "asn-ipv6-num.csv",
            "42540528726795050063891204319802818560,42540528806023212578155541913346768895,2500,WIDE Project\n",
        );
        let e = Enricher::load(&[v4, v6], &[]).unwrap();
        assert_eq!(e.lookup(ip("1.0.0.255")).asn, Some(13335));
        assert_eq!(e.lookup(ip("2001:200:ffff::1")).asn, Some(2500));
        assert_eq!(e.lookup(ip("0.0.0.1")).asn, None);
    }

    #[test]
    fn gzip_detected_by_content() {
        let d = Scratch::new("gz");
        let plain = "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n";
        // No .gz in the name: the gzip magic decides.
        let path = d.write("asn-ipv4.csv", gzip(plain.as_bytes()));
        let e = Enricher::load(&[path], &[]).unwrap();
        assert_eq!(e.lookup(ip("1.0.0.1")).asn, Some(13335));

        let tsv = d.write("ip2asn-v4.tsv.gz", gzip(IPTOASN.as_bytes()));
        let e = Enricher::load(&[], &[tsv]).unwrap();
        assert_eq!(e.lookup(ip("1.0.4.1")).country, Some(*b"AU"));

        let mut broken = gzip(plain.as_bytes());
        broken.truncate(broken.len() - 12);
        let path = d.write("broken.csv.gz", broken);
        let err = Enricher::load(&[path], &[]).map(|_| ()).unwrap_err();
        assert!(matches!(err, EnrichError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn bad_lines_name_the_line() {
        let d = Scratch::new("bad");
        let cases: &[(&str, usize, &str)] = &[
            (
                "1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.255,AU\n1.0.2.0,1.0.2,AU\n",
                3,
                "bad end address",
            ),
            (
                "1.0.0.0,1.0.0.255,AU\n\n1.0.2.0,1.0.1.0,AU\n",
                3,
                "is after its end",
            ),
            (
                "1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.255,AUS\n",
                2,
                "bad country code",
            ),
            ("1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.255\n", 2, "2 fields"),
            (
                "# comment\n\r\n1.0.0.0,1.0.0.255,AU\n# c,d\n\n1.0.1.0,1.0.1.255,AUS\n",
                6,
                "bad country code",
            ),
            (
                "1.0.0.0,1.0.0.255,AU\n1.0.1.0,2001::,AU\n",
                2,
                "different address forms",
            ),
        ];
        for (i, (text, line, reason)) in cases.iter().enumerate() {
            let path = d.write(&format!("geo{i}.csv"), text);
            match Enricher::load(&[], std::slice::from_ref(&path))
                .map(|_| ())
                .unwrap_err()
            {
                EnrichError::Format {
                    path: p,
                    line: l,
                    reason: r,
                } => {
                    assert_eq!((&p, l), (&path, *line), "{text:?}: {r}");
                    assert!(r.contains(reason), "{text:?}: {r}");
                }
                other => panic!("{text:?}: {other}"),
            }
        }
        let asn = d.write(
            "asn.csv",
            "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n1.0.1.0,1.0.1.255,AS-X,\"Foo\n",
        );
        let err = Enricher::load(&[asn], &[]).map(|_| ()).unwrap_err();
        assert!(
            err.to_string()
                .contains("asn.csv:2: unterminated quoted field"),
            "{err}"
        );
    }

    #[test]
    fn unknown_formats_and_wrong_roles() {
        let d = Scratch::new("unknown");
        let junk = d.write("junk.csv", "hello world\n");
        let empty = d.write("empty.csv", "");
        let header = d.write("header.csv", "start,end,country\n1.0.0.0,1.0.0.255,AU\n");
        let binary = d.write("bin.mmdb", [0xffu8, 0xfe, 0x00, 0x01, b'\n']);
        for p in [&junk, &empty, &header, &binary] {
            let err = Enricher::load(&[], std::slice::from_ref(p))
                .map(|_| ())
                .unwrap_err();
            assert!(matches!(err, EnrichError::UnknownFormat { .. }), "{err}");
        }
        let country = d.write("geo.csv", "1.0.0.0,1.0.0.255,AU\n");
        let asn = d.write("asn.csv", "1.0.0.0,1.0.0.255,13335,Cloudflare\n");
        let err = Enricher::load(&[country], &[]).map(|_| ()).unwrap_err();
        assert!(
            err.to_string().contains("given as an ASN database"),
            "{err}"
        );
        let err = Enricher::load(&[], &[asn]).map(|_| ()).unwrap_err();
        assert!(
            err.to_string().contains("given as a country database"),
            "{err}"
        );
        let missing = d.0.join("missing.csv");
        let err = Enricher::load(&[missing], &[]).map(|_| ()).unwrap_err();
        assert!(matches!(err, EnrichError::Io { .. }), "{err}");
    }

    #[test]
    fn ipv4_mapped_addresses_are_looked_up_as_ipv4() {
        let d = Scratch::new("mapped");
        let asn = d.write("asn.csv", "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n");
        let e = Enricher::load(&[asn], &[]).unwrap();
        assert_eq!(e.lookup(ip("::ffff:1.0.0.1")).asn, Some(13335));
        assert_eq!(e.lookup(ip("::ffff:1.0.1.1")).asn, None);
        // IPv4-mapped ranges in an IPv6 file land in the IPv4 table.
        let asn6 = d.write("asn6.csv", "::ffff:9.9.9.0,::ffff:9.9.9.255,19281,Quad9\n");
        let e = Enricher::load(&[asn6], &[]).unwrap();
        assert_eq!(e.lookup(ip("9.9.9.9")).asn, Some(19281));
        assert_eq!(e.lookup(ip("::ffff:9.9.9.9")).asn, Some(19281));
    }

    #[test]
    fn ranges_of_an_asn() {
        let d = Scratch::new("ranges");
        let v4 = d.write(
            "asn-ipv4.csv",
            "1.0.0.0,1.0.0.255,13335,Cloudflare\n\
             1.0.1.0,1.0.1.255,13335,Cloudflare\n\
             1.1.1.0,1.1.1.255,13335,Cloudflare\n\
             8.8.8.0,8.8.8.255,15169,Google\n",
        );
        let v6 = d.write(
            "asn-ipv6.csv",
            "2606:4700::,2606:4700:ffff:ffff:ffff:ffff:ffff:ffff,13335,Cloudflare\n",
        );
        let e = Enricher::load(&[v4, v6], &[]).unwrap();
        assert_eq!(
            e.ranges_of(13335),
            vec![
                (ip("1.0.0.0"), ip("1.0.1.255")),
                (ip("1.1.1.0"), ip("1.1.1.255")),
                (
                    ip("2606:4700::"),
                    ip("2606:4700:ffff:ffff:ffff:ffff:ffff:ffff")
                ),
            ]
        );
        assert_eq!(e.ranges_of(15169), vec![(ip("8.8.8.0"), ip("8.8.8.255"))]);
        assert!(e.ranges_of(1).is_empty());
    }

    #[test]
    fn nested_ranges_prefer_the_more_specific() {
        let d = Scratch::new("nested");
        // Shapes from the real geo-whois-asn-country file.
        let geo = d.write(
            "geo.csv",
            "3.2.35.0,3.2.35.63,DE\n\
             3.2.35.40,3.2.35.47,TR\n\
             5.61.192.0,5.61.199.255,FR\n\
             5.61.192.0,5.61.193.255,SK\n\
             0.0.0.0,255.255.255.255,US\n\
             255.255.255.255,255.255.255.255,ZW\n",
        );
        let e = Enricher::load(&[], &[geo]).unwrap();
        let c = |s: &str| {
            e.lookup(ip(s))
                .country
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
        };
        assert_eq!(c("3.2.35.39").as_deref(), Some("DE"));
        assert_eq!(c("3.2.35.40").as_deref(), Some("TR"));
        assert_eq!(c("3.2.35.47").as_deref(), Some("TR"));
        assert_eq!(c("3.2.35.48").as_deref(), Some("DE"));
        assert_eq!(c("3.2.35.64").as_deref(), Some("US"));
        assert_eq!(c("5.61.193.255").as_deref(), Some("SK"));
        assert_eq!(c("5.61.194.0").as_deref(), Some("FR"));
        assert_eq!(c("0.0.0.0").as_deref(), Some("US"));
        assert_eq!(c("255.255.255.254").as_deref(), Some("US"));
        assert_eq!(c("255.255.255.255").as_deref(), Some("ZW"));

        // Exact duplicates: the file given first wins.
        let a = d.write("a.csv", "1.0.0.0,1.0.0.255,AU\n");
        let b = d.write("b.csv", "1.0.0.0,1.0.0.255,NZ\n");
        let e = Enricher::load(&[], &[b.clone(), a.clone()]).unwrap();
        assert_eq!(e.lookup(ip("1.0.0.1")).country, Some(*b"NZ"));
        let e = Enricher::load(&[], &[a, b]).unwrap();
        assert_eq!(e.lookup(ip("1.0.0.1")).country, Some(*b"AU"));
    }

    #[test]
    fn table_flattening_matches_brute_force() {
        // Small random-ish overlapping ranges over 0..64, checked address by address against
        // "latest start, then shortest, then lowest seq".
        let mut x: u32 = 0x1234_5678;
        let mut rnd = |n: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % n
        };
        for _ in 0..200 {
            let raw: Vec<(u32, u32, u32)> = (0..rnd(8))
                .map(|seq| {
                    let s = rnd(64);
                    (s, s + rnd(64 - s), seq)
                })
                .collect();
            let t = Table::build(
                raw.iter()
                    .map(|&(start, end, seq)| Raw {
                        start,
                        end,
                        seq,
                        val: seq,
                    })
                    .collect(),
            );
            for a in 0..64 {
                let want = raw
                    .iter()
                    .filter(|r| r.0 <= a && a <= r.1)
                    .min_by_key(|r| (std::cmp::Reverse(r.0), r.1, r.2))
                    .map(|r| r.2);
                assert_eq!(t.get(a), want, "{raw:?} at {a}");
            }
            assert!(t.starts.windows(2).all(|w| w[0] < w[1]));
            assert!((0..t.len()).all(|i| t.starts[i] <= t.ends[i]));
        }
    }

    #[test]
    fn mmdb_asn_and_country() {
        use mmdb_writer::{Value, Writer, ipnet::IpNet};
        let d = Scratch::new("mmdb");
        let net = |s: &str| s.parse::<IpNet>().unwrap();

        let mut w = Writer::new("GeoLite2-ASN");
        let cf = Value::map([
            ("autonomous_system_number", Value::from(13335_u32)),
            (
                "autonomous_system_organization",
                Value::from("Cloudflare, Inc."),
            ),
        ]);
        w.insert_value(net("1.0.0.0/24"), cf.clone()).unwrap();
        w.insert_value(net("1.0.1.0/24"), cf.clone()).unwrap();
        w.insert_value(net("2606:4700::/32"), cf).unwrap();
        w.insert_value(
            net("8.8.8.0/24"),
            Value::map([("autonomous_system_number", Value::from(15169_u32))]),
        )
        .unwrap();
        // Not .mmdb by name: the metadata marker decides.
        let asn = d.write("asn.db", w.to_bytes().unwrap());

        let mut w = Writer::new("GeoLite2-Country");
        w.insert_value(
            net("1.0.0.0/23"),
            Value::map([("country", Value::map([("iso_code", Value::from("AU"))]))]),
        )
        .unwrap();
        w.insert_value(
            net("8.8.8.0/24"),
            Value::map([(
                "registered_country",
                Value::map([("iso_code", Value::from("US"))]),
            )]),
        )
        .unwrap();
        // ip-location-db's own mmdb layout.
        w.insert_value(
            net("2606:4700::/32"),
            Value::map([("country_code", Value::from("us"))]),
        )
        .unwrap();
        let country = d.write("country.mmdb", w.to_bytes().unwrap());

        let e = Enricher::load(std::slice::from_ref(&asn), std::slice::from_ref(&country)).unwrap();
        assert_eq!(
            e.lookup(ip("1.0.1.9")),
            info(Some(13335), Some("Cloudflare, Inc."), Some("AU"))
        );
        assert_eq!(
            e.lookup(ip("::ffff:1.0.0.1")),
            info(Some(13335), Some("Cloudflare, Inc."), Some("AU"))
        );
        assert_eq!(e.lookup(ip("8.8.8.8")), info(Some(15169), None, Some("US")));
        assert_eq!(
            e.lookup(ip("2606:4700:10::6816:1")),
            info(Some(13335), Some("Cloudflare, Inc."), Some("US"))
        );
        assert_eq!(e.lookup(ip("9.9.9.9")), IpInfo::default());
        assert_eq!(
            e.ranges_of(13335),
            vec![
                (ip("1.0.0.0"), ip("1.0.1.255")),
                (
                    ip("2606:4700::"),
                    ip("2606:4700:ffff:ffff:ffff:ffff:ffff:ffff")
                ),
            ]
        );

        // Swapped roles: a clear error rather than an empty table.
        let err = Enricher::load(&[country], &[]).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("GeoLite2-Country"), "{err}");
        let err = Enricher::load(&[], &[asn]).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("GeoLite2-ASN"), "{err}");

        // A damaged file is reported as such.
        let mut bytes = std::fs::read(d.0.join("asn.db")).unwrap();
        bytes.truncate(bytes.len() - 20);
        let cut = d.write("cut.mmdb", bytes);
        let err = Enricher::load(&[cut], &[]).map(|_| ()).unwrap_err();
        assert!(
            matches!(
                err,
                EnrichError::Corrupt { .. } | EnrichError::UnknownFormat { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn load_dir_default_files() {
        let d = Scratch::new("dir");
        let e = Enricher::load_dir(&d.0).unwrap();
        assert!(!e.has_asn() && !e.has_geo());
        assert_eq!(
            e.describe(),
            "no ASN/geo database: scoring falls back to prefix diversity"
        );
        assert_eq!(e.lookup(ip("1.1.1.1")), IpInfo::default());
        assert!(
            Enricher::load_dir(&d.0.join("nope"))
                .unwrap()
                .describe()
                .starts_with("no ASN")
        );

        d.write("asn-ipv4.csv", "1.0.0.0,1.0.0.255,13335,Cloudflare\n");
        d.write(
            "geo-whois-asn-country-ipv6.csv.gz",
            gzip(b"2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,JP\n"),
        );
        d.write("unrelated.csv", "junk\n");
        let e = Enricher::load_dir(&d.0).unwrap();
        assert_eq!(e.lookup(ip("1.0.0.1")).asn, Some(13335));
        assert_eq!(e.lookup(ip("2001:200::1")).country, Some(*b"JP"));
        assert_eq!(
            e.describe(),
            "ASN: 1 ranges from 1 file; country: 1 ranges from 1 file"
        );
        assert_eq!(
            Enricher::empty().describe(),
            "no ASN/geo database: scoring falls back to prefix diversity"
        );
    }

    #[test]
    fn enricher_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Enricher>();
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(515_158), "515,158");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    /// Load time and memory of the full default database; figures for the docs, not a test.
    /// `ENRICH_DB_DIR=/var/lib/flux-agent/db cargo test --release -p flux-agent --lib \
    /// enrich::tests::load_full_default_db -- --ignored --nocapture`
    #[test]
    #[ignore = "needs the real database in $ENRICH_DB_DIR"]
    fn load_full_default_db() {
        let dir = PathBuf::from(std::env::var_os("ENRICH_DB_DIR").expect("set ENRICH_DB_DIR"));
        let rss = || {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_owned()))
                .unwrap()
        };
        let before = rss();
        let t = std::time::Instant::now();
        let e = Enricher::load_dir(&dir).unwrap();
        let took = t.elapsed();
        println!("{}", e.describe());
        println!(
            "load: {took:?}; RSS before {before}, after {}; tables+names ~{:.1} MiB; {} names",
            rss(),
            e.memory_bytes() as f64 / (1 << 20) as f64,
            e.names.len()
        );
        let t = std::time::Instant::now();
        let mut hits = 0u32;
        for i in 0..1_000_000u32 {
            let a = IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)));
            hits += u32::from(e.lookup(a).asn.is_some());
        }
        println!("1M IPv4 lookups: {:?} ({hits} with an ASN)", t.elapsed());
        println!("{:?}", e.lookup("1.1.1.1".parse().unwrap()));
        println!("{:?}", e.lookup("2a00:1450:4001::1".parse().unwrap()));
    }
}
