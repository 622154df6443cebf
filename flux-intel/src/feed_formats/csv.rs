//! CSV feeds (kept crate `csv`): the delimiter (`,`, `;` or tab) is the one the first data line
//! holds most of; `#` lines are comments. The first row is a header when none of its fields is
//! a name, address or URL and each is a short word (so bitsight's `type,ioc` and
//! `ip;port;botnet` are headers, and a first data row of a hash and a type is not).
//!
//! The column: the one asked for (a 1-based number or a header name), else the first header name
//! of [`HEADER_NAMES`], else the first column of the first data row that holds an indicator.

use std::str::FromStr;

use ::csv::{ReaderBuilder, StringRecord, Trim};

use crate::{
    feed_set::{Collector, FeedError},
    indicator::parse_indicator,
};

/// Header names of the indicator column, in order of preference.
pub const HEADER_NAMES: &[&str] = &[
    "ioc",
    "indicator",
    "value",
    "domain",
    "hostname",
    "host",
    "fqdn",
    "url",
    "ip",
    "ip_address",
    "ipaddress",
    "address",
    "dst_ip",
    "ip-dst",
    "cidr",
    "network",
];

/// A header field is at most this long (a header is short words; a 40-character hash is data).
const MAX_HEADER_FIELD: usize = 32;

/// `--column`: which CSV column holds the indicators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CsvColumn {
    /// 0-based (written 1-based, like `cut -f`: `"2"` is `Index(1)`).
    Index(usize),
    /// A header name, case-insensitive.
    Name(String),
}

impl FromStr for CsvColumn {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<usize>() {
            Ok(n) if n >= 1 => CsvColumn::Index(n - 1),
            _ => CsvColumn::Name(s.to_owned()),
        })
    }
}

pub(super) fn parse(
    bytes: &[u8],
    column: Option<&CsvColumn>,
    c: &mut Collector,
) -> Result<(), FeedError> {
    let mut reader = ReaderBuilder::new()
        .delimiter(delimiter(bytes))
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(Trim::All)
        .from_reader(bytes);
    let mut col = match column {
        Some(CsvColumn::Index(i)) => Some(*i),
        _ => None,
    };
    let mut first = true;
    for result in reader.records() {
        let record = match result {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                c.warn(usize::try_from(line).unwrap_or(0), e.to_string());
                continue;
            }
        };
        let n = record
            .position()
            .and_then(|p| usize::try_from(p.line()).ok())
            .unwrap_or(0);
        if std::mem::take(&mut first) {
            if is_header(&record) {
                col = header_column(&record, column)?;
                continue;
            }
            if let Some(CsvColumn::Name(name)) = column {
                return Err(FeedError::NoColumn(name.clone(), "none".into()));
            }
        }
        row(n, &record, &mut col, c);
    }
    Ok(())
}

fn row(n: usize, record: &StringRecord, col: &mut Option<usize>, c: &mut Collector) {
    let idx = match *col {
        Some(i) => i,
        None => match record.iter().position(|f| parse_indicator(f).is_ok()) {
            Some(i) => {
                *col = Some(i);
                i
            }
            None => {
                c.warn(n, "no field holds a name, address or URL");
                return;
            }
        },
    };
    match record.get(idx) {
        Some(v) if !v.is_empty() => {
            c.add_value(n, v);
        }
        _ => c.warn(n, format!("no value in column {}", idx + 1)),
    }
}

fn is_header(record: &StringRecord) -> bool {
    record.iter().all(|f| {
        f.len() <= MAX_HEADER_FIELD
            && f.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" _-.|".contains(&b))
            && parse_indicator(f).is_err()
    })
}

fn header_column(
    header: &StringRecord,
    column: Option<&CsvColumn>,
) -> Result<Option<usize>, FeedError> {
    let find = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    match column {
        Some(CsvColumn::Index(i)) => Ok(Some(*i)),
        Some(CsvColumn::Name(name)) => find(name).map(Some).ok_or_else(|| {
            FeedError::NoColumn(name.clone(), header.iter().collect::<Vec<_>>().join(","))
        }),
        None => Ok(HEADER_NAMES.iter().find_map(|n| find(n))),
    }
}

/// The delimiter the first data line holds most of (`,` on a tie or when it has none).
fn delimiter(bytes: &[u8]) -> u8 {
    let line = super::lines(bytes)
        .map(|(_, l)| l)
        .find(|l| !l.trim_ascii().is_empty() && !l.starts_with(b"#"))
        .unwrap_or_default();
    let count = |d: u8| line.iter().filter(|b| **b == d).count();
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| (count(*d), *d == b','))
        .unwrap_or(b',')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed_formats::FeedFormat;

    fn read(text: &str, column: Option<&str>) -> Result<crate::Parsed, FeedError> {
        let mut c = Collector::default();
        let column = column.map(|s| s.parse().unwrap());
        parse(text.as_bytes(), column.as_ref(), &mut c)?;
        c.finish(FeedFormat::Csv)
    }

    #[test]
    fn bitsight_type_ioc() {
        let p = read(
            "type,ioc\ntier1_c2,a.example\ntelegram_deaddrop,https://t.me/x \nprimary_c2,\"b.example\"\n",
            None,
        )
        .unwrap();
        let got: Vec<&str> = p.set.domains.iter().map(String::as_str).collect();
        assert_eq!(got, ["a.example", "b.example", "t.me"]);
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn semicolons_and_named_columns() {
        let text = "ip;port;botnet\n192.0.2.1;8080;Epoch4\n192.0.2.2;443;Epoch5\nbad;1;x\n";
        let p = read(text, None).unwrap();
        assert_eq!(p.set.ipv4.len(), 2);
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].line, 4);
        assert_eq!(read(text, Some("IP")).unwrap().set.ipv4.len(), 2);
        assert_eq!(read(text, Some("1")).unwrap().set.ipv4.len(), 2);
        assert!(matches!(
            read(text, Some("botnet")),
            Err(FeedError::NothingParsed { .. })
        ));
        assert!(matches!(
            read(text, Some("nope")),
            Err(FeedError::NoColumn(..))
        ));
    }

    #[test]
    fn headerless_defanged_with_a_hash_row() {
        let text = "tls_fingerprint,d34ad02fa23233b6493e363d6337e8358d9747d7\n\
                    domain,wirtshauspost[.]at\ndomain,liverds[.]at\n";
        let p = read(text, None).unwrap();
        assert_eq!(p.set.domains.len(), 2);
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].line, 1);
    }

    #[test]
    fn delimiters() {
        assert_eq!(delimiter(b"# a;b;c\nx,y\n"), b',');
        assert_eq!(delimiter(b"x;y,z;w\n"), b';');
        assert_eq!(delimiter(b"x\ty\n"), b'\t');
        assert_eq!(delimiter(b"x\n"), b',');
    }
}
