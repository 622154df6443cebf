//! Export: what the agent found (the verdict journal) or blocked (live block entries), for the
//! next team. [`Store::export_query`] reads the database; [`indicators`] merges its rows into
//! one [`Indicator`] per target; the writers in the submodules format them:
//! - `stix_bundle`: a STIX 2.1 bundle (identity, indicators, observables, relationships);
//! - `misp_event`: one MISP event with its attributes;
//! - `text_lists`: CSV with a header, a hosts file, a plain list.
//!
//! The mapping of each field is in docs/state.md. What it may touch: the database (read only)
//! and the writer it is handed.

pub mod misp_event;
pub mod stix_bundle;
pub mod text_lists;

#[cfg(test)]
mod export_tests;

use std::{collections::BTreeMap, io::Write, net::IpAddr, str::FromStr, time::SystemTime};

use rusqlite::params;

use crate::{
    Store,
    entry_table::{ENTRY_COLUMNS, fold_effective},
    state_error::StateError,
    state_types::{Action, BadValue, EffectiveEntry, Level, Source, SourceFilter, Target},
    unix_time::to_unix,
    verdict_journal::VerdictRecord,
};

/// What [`Store::export_query`] read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportSet {
    /// Live block entries (only the sources the filter takes).
    pub entries: Vec<EffectiveEntry>,
    /// Journal rows (only when the filter takes the scorer).
    pub verdicts: Vec<VerdictRecord>,
}

/// One target to share, from its block entry, its verdicts, or both.
#[derive(Clone, Debug, PartialEq)]
pub struct Indicator {
    pub target: Target,
    /// How it is blocked; `None` when it was only found (a verdict, no block).
    pub action: Option<Action>,
    pub sources: Vec<Source>,
    /// The highest level the journal has for it.
    pub level: Option<Level>,
    /// The highest score of its block and its verdicts, in [0, 1].
    pub score: Option<f64>,
    /// The verdict's reasons (`feature +contribution, ...`), else the block's reason.
    pub reasons: String,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// When its block ends; `None`: no end (or no block).
    pub valid_until: Option<SystemTime>,
    /// For a name: the addresses it resolved to (the journal's), newest first.
    pub addresses: Vec<IpAddr>,
}

/// Which writer [`write`] uses (`export --format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Stix,
    Misp,
    Csv,
    Hosts,
    Plain,
}

impl FromStr for ExportFormat {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<Self, BadValue> {
        match s {
            "stix" => Ok(Self::Stix),
            "misp" => Ok(Self::Misp),
            "csv" => Ok(Self::Csv),
            "hosts" => Ok(Self::Hosts),
            "plain" => Ok(Self::Plain),
            _ => Err(BadValue {
                what: "export format",
                value: s.to_owned(),
                why: "stix, misp, csv, hosts or plain".into(),
            }),
        }
    }
}

/// Who made an export: the STIX identity and the MISP event's title name it.
#[derive(Clone, Debug, PartialEq)]
pub struct Producer {
    /// Usually the host name.
    pub name: String,
    /// When the export is made (the MISP event's date and timestamp).
    pub now: SystemTime,
}

/// Writes `items` in `format`.
pub fn write(
    format: ExportFormat,
    items: &[Indicator],
    producer: &Producer,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match format {
        ExportFormat::Stix => stix_bundle::write(items, producer, out),
        ExportFormat::Misp => misp_event::write(items, producer, out),
        ExportFormat::Csv => text_lists::write_csv(items, out),
        ExportFormat::Hosts => text_lists::write_hosts(items, producer, out),
        ExportFormat::Plain => text_lists::write_plain(items, producer, out),
    }
}

/// The SQL `LIKE` pattern of a source filter.
fn source_pattern(f: SourceFilter) -> &'static str {
    match f {
        SourceFilter::All => "%",
        SourceFilter::Scorer => "scorer",
        SourceFilter::Manual => "manual",
        SourceFilter::Feed => "feed:%",
        SourceFilter::Fleet => "fleet:%",
    }
}

impl Store {
    /// What `export` shares: block entries live at `now`, added at or after `since`, from the
    /// sources `source` takes; and, when it takes the scorer, the journal's verdicts last seen
    /// at or after `since` at `min_level` or above (`min_level` filters verdicts only: a
    /// manual or feed block has no level).
    pub fn export_query(
        &self,
        since: Option<SystemTime>,
        source: SourceFilter,
        min_level: Level,
        now: SystemTime,
    ) -> Result<ExportSet, StateError> {
        let rows = self.read_entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM entries
                 WHERE kind = 'block' AND (expires IS NULL OR expires > ?1)
                   AND added >= ?2 AND source LIKE ?3
                 ORDER BY kind, target_type, target"
            ),
            params![
                to_unix(now),
                since.map_or(i64::MIN, to_unix),
                source_pattern(source)
            ],
        )?;
        let verdicts = if source.matches(&Source::Scorer) {
            self.verdicts(since, min_level)?
        } else {
            Vec::new()
        };
        Ok(ExportSet {
            entries: fold_effective(rows),
            verdicts,
        })
    }
}

/// One indicator per target, sorted by target. A journal row whose domain is not a valid name
/// (hand-edited) is skipped with a warning.
pub fn indicators(set: &ExportSet) -> Vec<Indicator> {
    let mut by: BTreeMap<Target, Indicator> = BTreeMap::new();
    for e in &set.entries {
        by.insert(
            e.target.clone(),
            Indicator {
                target: e.target.clone(),
                action: Some(e.action),
                sources: e.sources.clone(),
                level: None,
                score: e.score,
                reasons: e.reason.clone(),
                first_seen: e.added,
                last_seen: e.added,
                valid_until: e.expires,
                addresses: Vec::new(),
            },
        );
    }
    // Highest level first, so its score and reasons are the ones kept.
    let mut verdicts: Vec<&VerdictRecord> = set.verdicts.iter().collect();
    verdicts.sort_by_key(|v| std::cmp::Reverse(v.level));
    for v in verdicts {
        let Ok(target) = Target::domain(&v.domain) else {
            log::warn!(
                "export: journal domain '{}' is not a name; skipped",
                v.domain
            );
            continue;
        };
        let i = by.entry(target.clone()).or_insert_with(|| Indicator {
            target,
            action: None,
            sources: Vec::new(),
            level: None,
            score: None,
            reasons: String::new(),
            first_seen: v.first_seen,
            last_seen: v.last_seen,
            valid_until: None,
            addresses: Vec::new(),
        });
        if i.level.is_none() {
            i.level = Some(v.level);
            i.reasons = v.reasons_text();
        }
        i.score = Some(i.score.map_or(v.score, |s| s.max(v.score)));
        if !i.sources.contains(&Source::Scorer) {
            i.sources.push(Source::Scorer);
            i.sources.sort();
        }
        i.first_seen = i.first_seen.min(v.first_seen);
        i.last_seen = i.last_seen.max(v.last_seen);
        for a in &v.addresses {
            if !i.addresses.contains(a) {
                i.addresses.push(*a);
            }
        }
    }
    by.into_values().collect()
}
