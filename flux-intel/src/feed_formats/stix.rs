//! STIX 2.1 bundles (`{"type":"bundle","objects":[…]}`, or a bare list of objects): the
//! `indicator` objects whose `pattern` (type `stix`) compares `domain-name:value`,
//! `ipv4-addr:value`, `ipv6-addr:value` or `url:value` (its host) with `=`, `IN`, or, for
//! addresses, `ISSUBSET` (a CIDR). Comparisons joined by `OR` each give an entry; a pattern
//! with `AND` or `FOLLOWEDBY` is skipped with a warning (no single value of it is an indicator
//! alone). Revoked indicators are skipped; patterns of other types, and patterns with no
//! supported comparison, are summed up in one warning per kind.

use std::collections::BTreeMap;

use super::{FeedFormat, json_feed::StixObject, stix_pattern};
use crate::feed_set::{Collector, FeedError};

/// Object paths read, and whether a CIDR (`ISSUBSET`) makes sense on them.
const PATHS: &[(&str, bool)] = &[
    ("domain-name:value", false),
    ("ipv4-addr:value", true),
    ("ipv6-addr:value", true),
    ("url:value", false),
];

/// `objects`: what [`super::json_feed`] found (`None`: no bundle or object list).
pub(super) fn parse(objects: Option<&[StixObject]>, c: &mut Collector) -> Result<(), FeedError> {
    let objects = objects.ok_or_else(|| FeedError::Shape {
        format: FeedFormat::Stix,
        detail: "no objects list".into(),
    })?;
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for object in objects {
        if object.kind.as_deref() != Some("indicator") || object.revoked {
            continue;
        }
        indicator(object, c, &mut skipped);
    }
    for (kind, count) in skipped {
        c.warn(0, format!("{count} indicators skipped: {kind}"));
    }
    Ok(())
}

fn indicator(object: &StixObject, c: &mut Collector, skipped: &mut BTreeMap<String, usize>) {
    let id = object.id.as_deref().unwrap_or("(no id)");
    let pattern_type = object.pattern_type.as_deref().unwrap_or("stix");
    if pattern_type != "stix" {
        *skipped
            .entry(format!("pattern type {pattern_type:?}"))
            .or_default() += 1;
        return;
    }
    let Some(pattern) = object.pattern.as_deref() else {
        c.warn(0, format!("{id}: no pattern"));
        return;
    };
    let pattern = match stix_pattern::parse(pattern) {
        Ok(p) => p,
        Err(e) => {
            c.warn(0, format!("{id}: {e}"));
            return;
        }
    };
    if pattern.conjunctive {
        c.warn(
            0,
            format!(
                "{id}: pattern joined by AND or FOLLOWEDBY skipped (no value is an indicator alone)"
            ),
        );
        return;
    }
    let mut taken = 0;
    for cmp in &pattern.comparisons {
        let Some(&(_, cidr_ok)) = PATHS.iter().find(|(p, _)| *p == cmp.path) else {
            continue;
        };
        let op_ok = matches!(cmp.op.as_str(), "=" | "IN") || (cidr_ok && cmp.op == "ISSUBSET");
        if cmp.negated || !op_ok {
            continue;
        }
        for v in &cmp.values {
            taken += 1;
            c.add_labelled(0, v, &|| id.to_owned());
        }
    }
    if taken == 0 {
        let paths: Vec<&str> = pattern
            .comparisons
            .iter()
            .map(|c| c.path.as_str())
            .collect();
        *skipped
            .entry(format!(
                "no = on a domain, address or URL (paths: {})",
                paths.join(", ")
            ))
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<crate::Parsed, FeedError> {
        let mut c = Collector::default();
        let feed: super::super::json_feed::JsonFeed = serde_json::from_str(json).unwrap();
        parse(feed.stix.as_deref(), &mut c)?;
        c.finish(FeedFormat::Stix)
    }

    #[test]
    fn bundle() {
        let p = read(
            r#"{"type":"bundle","id":"bundle--1","objects":[
              {"type":"identity","id":"identity--1","name":"x"},
              {"type":"indicator","id":"indicator--1","pattern_type":"stix","pattern":"[domain-name:value = 'A.example']"},
              {"type":"indicator","id":"indicator--2","pattern":"[url:value = 'https://t.me/x']"},
              {"type":"indicator","id":"indicator--3","pattern":"[ipv4-addr:value = '192.0.2.1' OR ipv6-addr:value = '2001:db8::1' OR ipv4-addr:value ISSUBSET '198.51.100.0/24']"},
              {"type":"indicator","id":"indicator--4","pattern":"[domain-name:value = 'b.example' AND network-traffic:dst_port = 443]"},
              {"type":"indicator","id":"indicator--5","pattern":"[file:hashes.MD5 = 'd41d']"},
              {"type":"indicator","id":"indicator--6","pattern_type":"sigma","pattern":"x"},
              {"type":"indicator","id":"indicator--7","revoked":true,"pattern":"[domain-name:value = 'r.example']"},
              {"type":"indicator","id":"indicator--8","pattern":"[domain-name:value = 'bad..example']"},
              {"type":"indicator","id":"indicator--9","pattern":"[domain-name:value = 'c.example' OR file:name = 'x.exe']"}
            ]}"#,
        )
        .unwrap();
        let got: Vec<&str> = p.set.domains.iter().map(String::as_str).collect();
        assert_eq!(got, ["a.example", "c.example", "t.me"]);
        assert_eq!(
            (p.set.ipv4.len(), p.set.ipv6.len(), p.set.cidrs.len()),
            (1, 1, 1)
        );
        let msgs: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(msgs.iter().any(|m| m.starts_with("indicator--4")));
        assert!(msgs.iter().any(|m| m.starts_with("indicator--8")));
        assert!(msgs.iter().any(|m| m.contains("sigma")));
        assert!(msgs.iter().any(|m| m.contains("file:hashes.MD5")));
    }

    #[test]
    fn shapes() {
        assert!(matches!(
            read(r#"{"type":"bundle"}"#),
            Err(FeedError::NothingParsed { .. })
        ));
        assert!(matches!(
            read(r#"{"Event":{}}"#),
            Err(FeedError::Shape { .. })
        ));
        assert!(matches!(
            read(r#"{"type":"bundle","objects":[]}"#),
            Err(FeedError::NothingParsed { .. })
        ));
        let list = r#"[{"type":"indicator","id":"indicator--1","pattern":"[domain-name:value = 'a.example']"}]"#;
        assert_eq!(read(list).unwrap().entries, 1);
    }
}
