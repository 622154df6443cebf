//! A STIX 2.1 bundle of indicators. Hand-written JSON (serde_json's `json!`) rather than a STIX
//! crate: the few object types needed are small, and the output is checked by the OASIS
//! validator in the tests (`stix2-validator`).
//!
//! Per target: an `indicator` (pattern, validity, confidence, reasons) and the observable it
//! is about (`domain-name`, `ipv4-addr`, `ipv6-addr`). Per name the scorer found: an
//! `observed-data` (when and what it resolved to) the indicator is `based-on`, the addresses'
//! observables the name `resolves-to`, and for a flux name an `infrastructure` (the fast-flux
//! network) that its indicator and those of its blocked addresses `indicate`, and which
//! `consists-of` the observables. Every id is derived from what the object is about (see
//! [`id`] and [`sco_id`]), so exporting the same database twice gives the same ids.

use std::{collections::BTreeMap, io::Write, net::IpAddr, time::SystemTime};

use serde_json::{Value, json};
use uuid::Uuid;

use super::{Indicator, Producer};
use crate::state_types::{Level, Target};

/// The namespace STIX 2.1 (section 2.9) fixes for the deterministic ids of cyber-observables.
const SCO_NAMESPACE: Uuid = Uuid::from_u128(0x00ab_edb4_aa42_552c_aa4c_a8a3_ac8a_2a4f);

/// The identity's `created`/`modified`: fixed, as the identity object never changes (its id
/// comes from the producer's name), so that re-exports are identical.
const IDENTITY_CREATED: &str = "2026-01-01T00:00:00.000Z";

/// flux-agent's own namespace for the ids of the objects it makes (indicators, relationships).
fn flux_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://github.com/flux-agent/stix")
}

/// The id of an object flux-agent makes, stable across exports: the UUIDv5 computation (SHA-1
/// of `name` in [`flux_namespace`]) with the version set to 4, because STIX 2.1 requires UUIDv4
/// for everything but observables (and the validator refuses a v5 there). Its 122 bits are as
/// unpredictable to a reader as random ones; what matters to us is that they repeat.
fn id(kind: &str, name: &str) -> String {
    let mut b = *Uuid::new_v5(&flux_namespace(), name.as_bytes()).as_bytes();
    // The version nibble (RFC 9562 section 4.2); the variant bits are already RFC 4122's.
    b[6] = (b[6] & 0x0f) | 0x40;
    format!("{kind}--{}", Uuid::from_bytes(b))
}

/// STIX timestamps: UTC, millisecond precision.
fn ts(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The observable type and value of a target (a CIDR is an address block of its family).
fn observable(t: &Target) -> (&'static str, String) {
    let family = |ip: &IpAddr| match ip {
        IpAddr::V4(_) => "ipv4-addr",
        IpAddr::V6(_) => "ipv6-addr",
    };
    match t {
        Target::Domain(d) => ("domain-name", d.clone()),
        Target::Ip(ip) => (family(ip), ip.to_string()),
        Target::Cidr(ip, _) => (family(ip), t.to_string()),
    }
}

/// The deterministic id STIX defines for an observable: UUIDv5 in [`SCO_NAMESPACE`] of the
/// canonical JSON of its id-contributing properties (`value` for these three types).
fn sco_id(kind: &str, value: &str) -> String {
    let canonical = json!({ "value": value }).to_string();
    format!(
        "{kind}--{}",
        Uuid::new_v5(&SCO_NAMESPACE, canonical.as_bytes())
    )
}

fn sco(kind: &str, value: &str) -> Value {
    json!({ "type": kind, "spec_version": "2.1", "id": sco_id(kind, value), "value": value })
}

/// A pattern string literal: backslash and quote escaped.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn pattern(t: &Target) -> String {
    let (kind, value) = observable(t);
    let op = if matches!(t, Target::Cidr(..)) {
        "ISSUBSET"
    } else {
        "="
    };
    format!("[{kind}:value {op} {}]", quoted(&value))
}

/// `confidence` (0-100) from the score in [0, 1]: `round(100 × score)`. No score (a manual or
/// feed block): no confidence, which STIX reads as "not specified".
pub fn confidence(score: Option<f64>) -> Option<u8> {
    score
        .filter(|s| s.is_finite())
        .map(|s| (s.clamp(0.0, 1.0) * 100.0).round() as u8)
}

fn description(i: &Indicator) -> String {
    let mut parts = Vec::new();
    match (i.level, i.action) {
        (Some(l), _) => parts.push(format!("flux-agent verdict: {l}")),
        (None, Some(a)) => parts.push(format!("flux-agent {}", a.as_str())),
        (None, None) => {}
    }
    if let Some(s) = i.score {
        parts.push(format!("score {s:.3}"));
    }
    if !i.reasons.is_empty() {
        parts.push(format!("reasons: {}", i.reasons));
    }
    let sources: Vec<String> = i.sources.iter().map(ToString::to_string).collect();
    parts.push(format!("sources: {}", sources.join(", ")));
    parts.join("; ")
}

struct Bundle {
    objects: BTreeMap<String, Value>,
    identity: String,
}

impl Bundle {
    fn add(&mut self, v: Value) -> String {
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        self.objects.entry(id.clone()).or_insert(v);
        id
    }

    fn relate(&mut self, from: &str, kind: &str, to: &str, i: &Indicator) {
        let name = format!("relationship:{from}:{kind}:{to}");
        self.add(json!({
            "type": "relationship", "spec_version": "2.1", "id": id("relationship", &name),
            "created": ts(i.first_seen), "modified": ts(i.last_seen.max(i.first_seen)),
            "created_by_ref": self.identity,
            "relationship_type": kind, "source_ref": from, "target_ref": to,
        }));
    }
}

fn indicator(i: &Indicator, identity: &str) -> Value {
    let key = format!("indicator:{}:{}", i.target.target_type().as_str(), i.target);
    let mut v = json!({
        "type": "indicator", "spec_version": "2.1", "id": id("indicator", &key),
        "created": ts(i.first_seen), "modified": ts(i.last_seen.max(i.first_seen)),
        "created_by_ref": identity,
        "name": i.target.to_string(),
        "description": description(i),
        "indicator_types": ["malicious-activity"],
        "pattern": pattern(&i.target), "pattern_type": "stix", "pattern_version": "2.1",
        "valid_from": ts(i.first_seen),
    });
    // `valid_until` must be later than `valid_from`.
    if let Some(u) = i.valid_until.filter(|u| ts(*u) > ts(i.first_seen)) {
        v["valid_until"] = json!(ts(u));
    }
    if let Some(c) = confidence(i.score) {
        v["confidence"] = json!(c);
    }
    v
}

/// A name the scorer found: the observation, its addresses, and for flux the infrastructure.
/// Returns the infrastructure id, if one was made.
fn found(b: &mut Bundle, i: &Indicator, ind: &str, name_sco: &str) -> Option<String> {
    let level = i.level?;
    let mut refs = vec![name_sco.to_owned()];
    for a in &i.addresses {
        let (kind, value) = observable(&Target::Ip(*a));
        let a_id = b.add(sco(kind, &value));
        b.relate(name_sco, "resolves-to", &a_id, i);
        refs.push(a_id);
    }
    let seen = json!({
        "type": "observed-data", "spec_version": "2.1",
        "id": id("observed-data", &format!("observed-data:{}", i.target)),
        "created": ts(i.first_seen), "modified": ts(i.last_seen.max(i.first_seen)),
        "created_by_ref": b.identity,
        "first_observed": ts(i.first_seen), "last_observed": ts(i.last_seen.max(i.first_seen)),
        "number_observed": 1, "object_refs": refs,
    });
    let seen_id = b.add(seen);
    b.relate(ind, "based-on", &seen_id, i);
    if level != Level::Flux {
        return None;
    }
    let infra = json!({
        "type": "infrastructure", "spec_version": "2.1",
        "id": id("infrastructure", &format!("infrastructure:{}", i.target)),
        "created": ts(i.first_seen), "modified": ts(i.last_seen.max(i.first_seen)),
        "created_by_ref": b.identity,
        "name": format!("fast-flux network behind {}", i.target),
        "infrastructure_types": ["botnet"],
        "first_seen": ts(i.first_seen), "last_seen": ts(i.last_seen.max(i.first_seen)),
    });
    let infra_id = b.add(infra);
    b.relate(ind, "indicates", &infra_id, i);
    for r in refs {
        b.relate(&infra_id, "consists-of", &r, i);
    }
    Some(infra_id)
}

/// The bundle as a JSON value.
pub fn bundle(items: &[Indicator], producer: &Producer) -> Value {
    let identity = id("identity", &format!("identity:{}", producer.name));
    let mut b = Bundle {
        objects: BTreeMap::new(),
        identity: identity.clone(),
    };
    let ident = json!({
        "type": "identity", "spec_version": "2.1", "id": identity,
        "created": IDENTITY_CREATED, "modified": IDENTITY_CREATED,
        "name": format!("flux-agent on {}", producer.name), "identity_class": "system",
    });
    b.add(ident);
    // Addresses of flux names: which infrastructure an address's own indicator indicates.
    let mut infra_of: BTreeMap<IpAddr, Vec<(String, usize)>> = BTreeMap::new();
    let mut ind_ids = Vec::with_capacity(items.len());
    for (n, i) in items.iter().enumerate() {
        let ind = b.add(indicator(i, &identity));
        let (kind, value) = observable(&i.target);
        let obs = b.add(sco(kind, &value));
        if let Some(infra) = found(&mut b, i, &ind, &obs) {
            for a in &i.addresses {
                infra_of.entry(*a).or_default().push((infra.clone(), n));
            }
        }
        ind_ids.push(ind);
    }
    for (i, ind) in items.iter().zip(&ind_ids) {
        if let Target::Ip(ip) = &i.target {
            for (infra, _) in infra_of.get(ip).into_iter().flatten() {
                b.relate(ind, "indicates", infra, i);
            }
        }
    }
    let objects: Vec<Value> = b.objects.into_values().collect();
    let ids: Vec<&str> = objects.iter().filter_map(|o| o["id"].as_str()).collect();
    json!({
        "type": "bundle",
        "id": id("bundle", &format!("bundle:{}", ids.join(","))),
        "objects": objects,
    })
}

pub fn write(items: &[Indicator], producer: &Producer, out: &mut dyn Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &bundle(items, producer))?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observable_ids_follow_the_stix_rule() {
        // STIX 2.1 section 2.9 derives `ipv4-addr--` ids from `{"value":"..."}`; the same
        // input always gives the same id, and a different value another.
        let a = sco_id("ipv4-addr", "198.51.100.3");
        assert_eq!(a, sco_id("ipv4-addr", "198.51.100.3"));
        assert_ne!(a, sco_id("ipv4-addr", "198.51.100.4"));
        assert!(a.starts_with("ipv4-addr--"));
        let u = Uuid::parse_str(a.trim_start_matches("ipv4-addr--")).unwrap();
        assert_eq!(u.get_version_num(), 5);
        // Other objects: stable, and version 4 as STIX requires.
        let i = id("indicator", "indicator:domain:a.example");
        assert_eq!(i, id("indicator", "indicator:domain:a.example"));
        assert_ne!(i, id("indicator", "indicator:domain:b.example"));
        let u = Uuid::parse_str(i.trim_start_matches("indicator--")).unwrap();
        assert_eq!(u.get_version_num(), 4);
    }

    #[test]
    fn patterns_and_confidence() {
        assert_eq!(
            pattern(&Target::domain("evil.example").unwrap()),
            "[domain-name:value = 'evil.example']"
        );
        assert_eq!(
            pattern(&Target::Ip("2001:db8::1".parse().unwrap())),
            "[ipv6-addr:value = '2001:db8::1']"
        );
        assert_eq!(
            pattern(&Target::cidr("203.0.113.0/24").unwrap()),
            "[ipv4-addr:value ISSUBSET '203.0.113.0/24']"
        );
        assert_eq!(quoted("a'b\\"), "'a\\'b\\\\'");
        assert_eq!(confidence(Some(0.874)), Some(87));
        assert_eq!(confidence(Some(1.7)), Some(100));
        assert_eq!(confidence(Some(f64::NAN)), None);
        assert_eq!(confidence(None), None);
    }
}
