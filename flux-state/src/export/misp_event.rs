//! One MISP event (the JSON MISP's "Add Event" and PyMISP's `MISPEvent.load` take) holding one
//! attribute per target, plus the addresses flux names resolved to. Hand-written JSON: the
//! format is a flat list of attributes; PyMISP loads it in the tests.
//!
//! Mapping: a name is a `domain` attribute, an address or CIDR an `ip-dst` (MISP takes CIDR
//! there), category `Network activity`; `to_ids` is true for what the agent enforces and false
//! for what it only reports or saw resolved; the comment holds the level, score, reasons and
//! sources; `first_seen`/`last_seen` and `timestamp` come from the database.

use std::{collections::BTreeSet, io::Write, net::IpAddr, time::SystemTime};

use serde_json::{Value, json};
use uuid::Uuid;

use super::{Indicator, Producer};
use crate::{state_types::Target, unix_time::to_unix};

/// `distribution`: 0 is "your organisation only". Sharing wider is the operator's choice in
/// MISP, never a default of an export.
const DISTRIBUTION_ORG_ONLY: &str = "0";
/// Attributes inherit the event's distribution.
const DISTRIBUTION_INHERIT: &str = "5";
/// `threat_level_id` 2 is "medium": an automatic finding, not an analyst's.
const THREAT_LEVEL_MEDIUM: &str = "2";
/// `analysis` 2 is "completed": the export is a finished snapshot.
const ANALYSIS_COMPLETED: &str = "2";

fn uuid(name: &str) -> String {
    let ns = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://github.com/flux-agent/misp");
    Uuid::new_v5(&ns, name.as_bytes()).to_string()
}

fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

fn comment(i: &Indicator) -> String {
    let mut parts = Vec::new();
    if let Some(l) = i.level {
        parts.push(format!("verdict {l}"));
    }
    if let Some(s) = i.score {
        parts.push(format!("score {s:.3}"));
    }
    if !i.reasons.is_empty() {
        parts.push(i.reasons.clone());
    }
    let sources: Vec<String> = i.sources.iter().map(ToString::to_string).collect();
    parts.push(format!("sources: {}", sources.join(", ")));
    parts.join("; ")
}

fn attribute(kind: &str, value: &str, to_ids: bool, comment: String, i: &Indicator) -> Value {
    let last = i.last_seen.max(i.first_seen);
    json!({
        "uuid": uuid(&format!("attribute:{kind}:{value}")),
        "type": kind,
        "category": "Network activity",
        "value": value,
        "to_ids": to_ids,
        "comment": comment,
        "distribution": DISTRIBUTION_INHERIT,
        "timestamp": to_unix(last).to_string(),
        "first_seen": iso(i.first_seen),
        "last_seen": iso(last),
    })
}

fn kind_of(t: &Target) -> &'static str {
    match t {
        Target::Domain(_) => "domain",
        Target::Ip(_) | Target::Cidr(..) => "ip-dst",
    }
}

/// The event as a JSON value (`{"Event": {...}}`).
pub fn event(items: &[Indicator], producer: &Producer) -> Value {
    let mut attrs = Vec::new();
    let listed: BTreeSet<String> = items.iter().map(|i| i.target.to_string()).collect();
    let mut resolved: BTreeSet<IpAddr> = BTreeSet::new();
    for i in items {
        let to_ids = i.action.is_some_and(|a| a.enforced());
        let value = i.target.to_string();
        attrs.push(attribute(kind_of(&i.target), &value, to_ids, comment(i), i));
        // Addresses seen behind a found name, not themselves listed: shared for context.
        for a in &i.addresses {
            if !listed.contains(&a.to_string()) && resolved.insert(*a) {
                let c = format!("resolved from {}", i.target);
                attrs.push(attribute("ip-dst", &a.to_string(), false, c, i));
            }
        }
    }
    let date = humantime::format_rfc3339_seconds(producer.now).to_string();
    json!({
        "Event": {
            "uuid": uuid(&format!("event:{}", producer.name)),
            "info": format!("flux-agent indicators from {}", producer.name),
            "date": date.get(..10).unwrap_or("1970-01-01"),
            "timestamp": to_unix(producer.now).to_string(),
            "threat_level_id": THREAT_LEVEL_MEDIUM,
            "analysis": ANALYSIS_COMPLETED,
            "distribution": DISTRIBUTION_ORG_ONLY,
            "published": false,
            "Attribute": attrs,
        }
    })
}

pub fn write(items: &[Indicator], producer: &Producer, out: &mut dyn Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &event(items, producer))?;
    out.write_all(b"\n")
}
