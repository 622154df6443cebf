//! MISP JSON: an event export (`{"Event":{…}}`, or a list of them), a search's events
//! (`{"response":[{"Event":…}]}`), or a search's attributes (`{"response":{"Attribute":[…]}}`,
//! or `{"Attribute":[…]}`). Attributes are read from each event's `Attribute` list and from its
//! objects' (`Object[].Attribute`). Types read: `domain`, `hostname`, `ip-src`, `ip-dst`,
//! `ip-src|port`, `ip-dst|port`, `hostname|port`, `domain|ip` (both), `url` (its host). Deleted
//! attributes are skipped; other types are summed up in one warning per type.

use std::collections::BTreeMap;

use super::{FeedFormat, json_feed::Attr};
use crate::feed_set::{Collector, FeedError};

/// `attrs`: what [`super::json_feed`] found (`None`: no MISP structure at all).
pub(super) fn parse(attrs: Option<&[Attr]>, c: &mut Collector) -> Result<(), FeedError> {
    let attrs = attrs.ok_or_else(|| FeedError::Shape {
        format: FeedFormat::Misp,
        detail: "no Event or Attribute list".into(),
    })?;
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for (i, attribute) in attrs.iter().enumerate() {
        attribute_entries(i + 1, attribute, c, &mut skipped);
    }
    for (kind, count) in skipped {
        c.warn(0, format!("{count} attributes of type {kind:?} skipped"));
    }
    Ok(())
}

fn attribute_entries(
    index: usize,
    attribute: &Attr,
    c: &mut Collector,
    skipped: &mut BTreeMap<String, usize>,
) {
    if attribute.deleted {
        return;
    }
    let (Some(kind), Some(value)) = (attribute.kind.as_deref(), attribute.value.as_deref()) else {
        c.warn(0, format!("attribute {index}: no type or value"));
        return;
    };
    let values: Vec<&str> = match kind {
        "domain" | "hostname" | "ip-src" | "ip-dst" | "url" => vec![value],
        "ip-src|port" | "ip-dst|port" | "hostname|port" => {
            value.split('|').next().into_iter().collect()
        }
        "domain|ip" => value.split('|').collect(),
        other => {
            *skipped.entry(other.to_owned()).or_default() += 1;
            return;
        }
    };
    for v in values {
        c.add_labelled(0, v, &|| format!("attribute {index} ({kind})"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<crate::Parsed, FeedError> {
        let mut c = Collector::default();
        let feed: super::super::json_feed::JsonFeed = serde_json::from_str(json).unwrap();
        parse(feed.misp.as_deref(), &mut c)?;
        c.finish(FeedFormat::Misp)
    }

    #[test]
    fn event_export() {
        let p = read(
            r#"{"Event":{"info":"x","Attribute":[
                {"type":"domain","value":"a.example"},
                {"type":"hostname","value":"B.example"},
                {"type":"ip-dst","value":"192.0.2.1"},
                {"type":"ip-src|port","value":"192.0.2.2|8080"},
                {"type":"domain|ip","value":"c.example|2001:db8::1"},
                {"type":"url","value":"hxxps://d[.]example/x"},
                {"type":"md5","value":"d41d8cd98f00b204e9800998ecf8427e"},
                {"type":"sha256","value":"e3b0"},
                {"type":"md5","value":"00"},
                {"type":"domain","value":"gone.example","deleted":true},
                {"type":"domain","value":"bad..example"}],
              "Object":[{"name":"domain-ip","Attribute":[{"type":"ip-dst","value":"198.51.100.0/24"}]}]}}"#,
        )
        .unwrap();
        let got: Vec<&str> = p.set.domains.iter().map(String::as_str).collect();
        assert_eq!(got, ["a.example", "b.example", "c.example", "d.example"]);
        assert_eq!(p.set.ipv4.len(), 2);
        assert_eq!(p.set.ipv6.len(), 1);
        assert_eq!(p.set.cidrs.len(), 1);
        let msgs: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("2 attributes of type \"md5\"")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.contains("sha256")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("bad..example")), "{msgs:?}");
    }

    #[test]
    fn search_responses() {
        let events = r#"{"response":[{"Event":{"Attribute":[{"type":"domain","value":"a.example"}]}},
                                    {"Event":{"Attribute":[{"type":"domain","value":"b.example"}]}}]}"#;
        assert_eq!(read(events).unwrap().set.domains.len(), 2);
        let attrs = r#"{"response":{"Attribute":[{"type":"ip-src","value":"192.0.2.9"}]}}"#;
        assert_eq!(read(attrs).unwrap().set.ipv4.len(), 1);
        let list = r#"[{"Event":{"Attribute":[{"type":"domain","value":"a.example"}]}}]"#;
        assert_eq!(read(list).unwrap().entries, 1);
        assert!(matches!(
            read(r#"{"response":[]}"#),
            Err(FeedError::NothingParsed { .. })
        ));
        assert!(matches!(read(r#"{"x":[]}"#), Err(FeedError::Shape { .. })));
        assert!(matches!(
            read(r#"{"Event":{"Attribute":[{"type":"md5","value":"x"}]}}"#),
            Err(FeedError::NothingParsed { .. })
        ));
    }
}
