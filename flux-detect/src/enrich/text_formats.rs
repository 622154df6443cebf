//! The text databases: iptoasn TSV and ip-location-db CSV (read by the csv crate), their
//! address, AS number and country fields. Feeds [`Builder`]; touches no file itself.

use super::*;

/// The text formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TextKind {
    /// iptoasn.com: start, end, ASN, country, description (tab-separated).
    Iptoasn,
    /// ip-location-db ASN: start, end, ASN, organisation.
    AsnCsv,
    /// ip-location-db country: start, end, country.
    CountryCsv,
}

/// One address field before its family is known (decimal integers in the `-num` files).
#[derive(Clone, Copy, Debug)]
pub(super) enum Addr1 {
    V4(u32),
    V6(u128),
    Num(u128),
}

/// A decimal-integer row whose family is decided for the whole file at the end.
pub(super) struct NumRow {
    pub(super) start: u128,
    pub(super) end: u128,
    pub(super) asn: Option<AsnVal>,
    pub(super) country: Option<Country>,
}

impl Builder {
    pub(super) fn load_text(
        &mut self,
        path: &Path,
        bytes: &[u8],
        role: Role,
    ) -> Result<(), EnrichError> {
        let format_err = |line: usize, reason: String| EnrichError::Format {
            path: path.to_owned(),
            line,
            reason,
        };
        let (tsv, mut reader) = text_reader(bytes);
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
                None => *kind.insert(first_kind(path, bytes, at, tsv, &fields, role)?),
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
                parse_range(fields[0], fields[1]).map_err(|e| format_err(lineno(), e))?;
            let (asn, country) = self
                .row_values(kind, &fields, role)
                .map_err(|e| format_err(lineno(), e))?;
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
        self.add_num_rows(path, role, num_rows);
        Ok(())
    }

    /// Adds the decimal-integer rows of a file: IPv6 if the file says so by name or by a value
    /// beyond 32 bits, else IPv4.
    fn add_num_rows(&mut self, path: &Path, role: Role, num_rows: Vec<NumRow>) {
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
    }

    /// The ASN and country of one row whose field count matches `kind`.
    fn row_values(
        &mut self,
        kind: TextKind,
        fields: &[&str],
        role: Role,
    ) -> Result<(Option<AsnVal>, Option<Country>), String> {
        Ok(match kind {
            TextKind::Iptoasn => {
                let asn = parse_asn(fields[2])?;
                let country = parse_country(fields[3])?;
                let asn = (asn != 0 && role == Role::Asn).then(|| AsnVal {
                    asn,
                    name: self.intern(fields[4].trim()),
                });
                (asn, country)
            }
            TextKind::AsnCsv => {
                let asn = parse_asn(fields[2])?;
                let asn = (asn != 0).then(|| AsnVal {
                    asn,
                    name: self.intern(fields[3].trim()),
                });
                (asn, None)
            }
            TextKind::CountryCsv => (None, parse_country(fields[2])?),
        })
    }
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
/// Whether the file is tab-separated, and a csv reader over it. The first data line decides:
/// tab-separated (iptoasn, no quoting) or RFC 4180 CSV.
fn text_reader(bytes: &[u8]) -> (bool, csv::Reader<&[u8]>) {
    let tsv = bytes
        .split(|&b| b == b'\n')
        .find(|l| !matches!(l.first(), None | Some(b'\r' | b'#')))
        .is_some_and(|l| l.contains(&b'\t'));
    let reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .delimiter(if tsv { b'\t' } else { b',' })
        .quoting(!tsv)
        .from_reader(bytes);
    (tsv, reader)
}

/// The format of a text file, from its first record (starting at byte `at`), checked against
/// the role the file was given in.
fn first_kind(
    path: &Path,
    bytes: &[u8],
    at: usize,
    tsv: bool,
    fields: &[&str],
    role: Role,
) -> Result<TextKind, EnrichError> {
    let unknown = |reason: String| EnrichError::UnknownFormat {
        path: path.to_owned(),
        reason,
    };
    let rest = bytes.get(record_start(bytes, at)..).unwrap_or_default();
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let k = detect_text(&line, tsv, fields).map_err(unknown)?;
    check_role(k, role).map_err(|reason| unknown(reason.into()))?;
    Ok(k)
}

fn line_of(bytes: &[u8], at: usize) -> usize {
    let start = record_start(bytes, at);
    bytes[..start].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The first byte of the record the csv crate read from `at` on: after the blank lines and
/// comment lines it skipped.
pub(super) fn record_start(bytes: &[u8], mut at: usize) -> usize {
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

/// The format, from the first data line.
pub(super) fn detect_text(line: &str, tsv: bool, fields: &[&str]) -> Result<TextKind, String> {
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

pub(super) fn check_role(kind: TextKind, role: Role) -> Result<(), &'static str> {
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

pub(super) fn parse_addr(s: &str) -> Option<Addr1> {
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

pub(super) fn parse_range(start: &str, end: &str) -> Result<(Addr1, Addr1), String> {
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
pub(super) fn to_range(start: Addr1, end: Addr1) -> Result<Range, String> {
    pub(super) const MAPPED: u128 = 0xffff_0000_0000;
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

pub(super) fn parse_asn(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("AS")
        .or_else(|| t.strip_prefix("as"))
        .unwrap_or(t);
    t.parse().map_err(|_| format!("bad AS number `{s}`"))
}

/// `None`, empty, `-` and `ZZ` (unknown) mean no country.
pub(super) fn parse_country(s: &str) -> Result<Option<Country>, String> {
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
