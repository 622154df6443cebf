//! The readable form of `flux-agent status`: one screen, the summary line first.
//!
//! May touch: stdout.

use std::time::Duration;

use super::{KEY_COUNTERS, Status};

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

pub fn human(s: &Status) -> anyhow::Result<()> {
    out!("flux-agent: {}", s.summary);
    let a = &s.agent;
    out!("  pin folder      {}", s.pin_dir);
    out!(
        "  control socket  {} ({})",
        a.control_socket,
        match (a.running, a.answering) {
            (_, true) => "answers",
            (true, false) => "no answer",
            (false, _) => "no agent",
        }
    );
    if let Some(e) = a.error.as_ref().filter(|_| a.running) {
        out!("  agent error     {e}");
    }
    if let (Some(n), Some(k)) = (a.responses, a.keys_tracked) {
        out!("  pipeline        {n} responses, {k} keys tracked");
    }
    out!("interfaces:");
    if s.interfaces.is_empty() {
        out!("  (none)");
    }
    for i in &s.interfaces {
        out!(
            "  {:<16} {:<9} ifindex {:<5} mode {:<8} prog {:<6} link {:<6} egress link {}{}",
            i.name,
            i.state,
            opt(i.ifindex),
            opt(i.mode),
            opt(i.prog_id),
            opt(i.link_id),
            opt(i.egress_link_id),
            i.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    if !s.pins.is_empty() && s.pins.iter().all(|p| p.ours) {
        let names: Vec<&str> = s.pins.iter().map(|p| p.name.as_str()).collect();
        out!("pins ({}, all ours): {}", s.pins.len(), names.join(" "));
    } else {
        out!("pins ({}):", s.pins.len());
    }
    for p in s.pins.iter().filter(|p| !p.ours) {
        out!(
            "  {:<24} {:<9} NOT OURS{}",
            p.name,
            p.kind,
            p.note
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        );
    }
    let d = &s.database;
    out!(
        "database: {} ({}{})",
        d.path.as_deref().unwrap_or("none (--no-state)"),
        if d.exists {
            format!("{} bytes", opt(d.size_bytes))
        } else {
            "missing".into()
        },
        d.error
            .as_deref()
            .map(|e| format!("; {e}"))
            .unwrap_or_default()
    );
    out!("feeds ({}):", s.feeds.len());
    for f in &s.feeds {
        out!(
            "  {:<16} {:>8} entries  refreshed {} ago{}  {}",
            f.name,
            f.entries,
            f.age_secs
                .map(|a| humantime::format_duration(Duration::from_secs(a)).to_string())
                .unwrap_or_else(|| "never".into()),
            if f.stale { " STALE" } else { "" },
            f.last_result.as_deref().unwrap_or("-")
        );
    }
    out!("counters:");
    for c in KEY_COUNTERS {
        if let Some(v) = s.counters.get(c.name()) {
            out!("  {:<24} {v:>14}", c.name());
        }
    }
    if let Some(e) = s.counters.get("error") {
        out!("  {e}");
    }
    out!("recent verdicts ({}):", s.recent.source);
    for v in &s.recent.verdicts {
        let why: Vec<String> = v.reasons.iter().map(|r| r.feature.clone()).collect();
        out!(
            "  {} {:<10} {:.2} {} [{}]",
            v.ts,
            v.level,
            v.score,
            v.domain,
            why.join(", ")
        );
    }
    out!("recent blocks ({}):", s.recent.source);
    for b in &s.recent.actions {
        out!(
            "  {} {:<5} {:<11} {} {}",
            b.ts,
            b.kind,
            b.action,
            b.target.as_deref().unwrap_or(&b.domain),
            b.reason
        );
    }
    Ok(())
}
