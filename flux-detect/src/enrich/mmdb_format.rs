//! MaxMind DB (`.mmdb`) databases, read by the maxminddb crate: ASN and country records and
//! their networks. Feeds [`Builder`]; touches no file itself.

use super::*;

pub(super) const MMDB_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

impl Builder {
    pub(super) fn load_mmdb(
        &mut self,
        path: &Path,
        bytes: Vec<u8>,
        role: Role,
    ) -> Result<(), EnrichError> {
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

pub(super) fn is_mmdb(bytes: &[u8]) -> bool {
    // The metadata section sits in the last 128 KiB.
    let tail = &bytes[bytes.len().saturating_sub(128 * 1024)..];
    tail.windows(MMDB_MARKER.len()).any(|w| w == MMDB_MARKER)
}

/// The range of a MaxMind DB network; IPv4-mapped IPv6 networks (`::ffff:0:0/96` and inside)
/// become IPv4. A prefix beyond the family's length (a corrupt database) is taken as a host.
pub(super) fn cidr_range(ip: IpAddr, prefix: u8) -> Range {
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
