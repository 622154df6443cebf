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
//!
//! Layout: this file holds the [`Enricher`] API and the loader (which file, which role); the
//! folder `enrich/` holds the range tables (`range_table`), the text formats (`text_formats`),
//! the MaxMind DB format (`mmdb_format`) and the unit tests. Only this file opens files; the
//! format modules parse bytes into the loader's `Builder`, and the tables know no format.

#[cfg(test)]
mod enrich_tests;
mod mmdb_format;
mod range_table;
mod text_formats;

use ipnet::IpNet;
use mmdb_format::*;
use range_table::*;
use std::{
    collections::HashMap,
    fmt,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Arc,
};
use text_formats::*;

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
        let ip = unmapped(ip);
        let (asn, as_name) = match self.asn.get(ip) {
            Some(v) => (Some(v.asn), self.names.get(v.name as usize).cloned()),
            None => (None, None),
        };
        IpInfo {
            asn,
            as_name,
            country: self.country(ip),
        }
    }

    /// The country of an address (IPv4-mapped ones already as IPv4): the country databases
    /// first, then the countries of iptoasn files.
    fn country(&self, ip: IpAddr) -> Option<[u8; 2]> {
        self.geo.get(ip).or_else(|| self.asn_geo.get(ip))
    }

    /// [`Enricher::lookup`] without the AS name: the ASN and the country. The scorer asks this
    /// for every new address and the name only for a new ASN; taking the name's reference
    /// count on every lookup showed in replay profiles.
    pub fn lookup_asn_country(&self, ip: IpAddr) -> (Option<u32>, Option<[u8; 2]>) {
        let ip = unmapped(ip);
        (self.asn.get(ip).map(|v| v.asn), self.country(ip))
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

/// An IPv4-mapped IPv6 address as the IPv4 address the tables hold; any other as it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Loading frees tens of MB of file buffers and unsorted rows that glibc would otherwise keep
/// in the heap (resident) for good. Under the agent's allocator (mimalloc, `flux-agent`'s
/// lib.rs) this returns only what glibc's own heap holds; mimalloc returns freed pages to the
/// kernel itself after its purge delay.
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
