//! The text exports: CSV with a header (the kept `csv` crate does the quoting), a hosts file
//! (`0.0.0.0 NAME`, names only: a hosts file cannot hold an address), and a plain list (one
//! name, address or CIDR a line), the last two with `#` comment headers that Pi-hole, dnsmasq
//! and the feed parsers skip.

use std::io::Write;

use super::{Indicator, Producer};
use crate::state_types::Target;

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 10] = [
    "type",
    "value",
    "action",
    "sources",
    "level",
    "score",
    "first_seen",
    "last_seen",
    "valid_until",
    "reasons",
];

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn write_csv(items: &[Indicator], out: &mut dyn Write) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_HEADER)?;
    for i in items {
        let sources: Vec<String> = i.sources.iter().map(ToString::to_string).collect();
        w.write_record([
            i.target.target_type().as_str().to_owned(),
            i.target.to_string(),
            i.action.map_or("none", |a| a.as_str()).to_owned(),
            sources.join(" "),
            i.level.map_or("", |l| l.as_str()).to_owned(),
            i.score.map_or(String::new(), |s| format!("{s:.3}")),
            rfc3339(i.first_seen),
            rfc3339(i.last_seen),
            i.valid_until.map_or(String::new(), rfc3339),
            i.reasons.clone(),
        ])?;
    }
    w.flush()
}

fn header(what: &str, n: usize, p: &Producer, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "# flux-agent export from {}, {}: {n} {what}",
        p.name,
        rfc3339(p.now)
    )
}

pub fn write_hosts(items: &[Indicator], p: &Producer, out: &mut dyn Write) -> std::io::Result<()> {
    let names: Vec<&str> = items
        .iter()
        .filter_map(|i| match &i.target {
            Target::Domain(d) => Some(d.as_str()),
            _ => None,
        })
        .collect();
    header("names", names.len(), p, out)?;
    for n in names {
        writeln!(out, "0.0.0.0 {n}")?;
    }
    Ok(())
}

pub fn write_plain(items: &[Indicator], p: &Producer, out: &mut dyn Write) -> std::io::Result<()> {
    header("entries", items.len(), p, out)?;
    for i in items {
        writeln!(out, "{}", i.target)?;
    }
    Ok(())
}
