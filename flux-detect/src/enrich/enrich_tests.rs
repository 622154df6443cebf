//! Unit tests of enrichment: formats, table flattening, lookups.

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

/// The scorer's lookup without the name answers what the full lookup answers, in and out of
/// the ranges, for both families and an IPv4-mapped IPv6 address.
#[test]
fn asn_and_country_lookup_matches_the_full_one() {
    let d = Scratch::new("lookup-lite");
    let tsv = d.write("ip2asn-v4.tsv", IPTOASN);
    let geo = d.write("geo.csv", "1.0.0.0,1.0.0.127,AU\n");
    let e = Enricher::load(&[tsv], &[geo]).unwrap();
    for a in [
        "1.0.0.1",
        "1.0.0.200",
        "1.0.2.1",
        "9.9.9.9",
        "::ffff:1.0.0.1",
        "2001:db8::1",
        "2001:200::1",
    ] {
        let full = e.lookup(ip(a));
        assert_eq!(e.lookup_asn_country(ip(a)), (full.asn, full.country), "{a}");
    }
    assert_eq!(
        e.lookup_asn_country(ip("1.0.0.1")),
        (Some(13335), Some(*b"AU"))
    );
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
