//! `flux-agent explain DOMAIN`: the running agent's current features, scores and reasons for a
//! name, and whether it is blocked; for a name the scorer no longer tracks, its history from the
//! state database's verdict journal. With a fleet (`run --fleet-url`), also the fleet scorer's
//! level and score, the agents whose evidence made it, and whether its verdict was enforced
//! here or only reported, and why.

use std::process::ExitCode;

use flux_agent::{
    control::{self, ControlError, Request},
    enforce::maps::{Maps, Target},
    fleet::fleet_explain::FleetView,
};
use serde_json::Value;

use super::{PinArgs, StateArgs};

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The name to explain (its registered domain is tried when the name itself is not
    /// tracked).
    pub domain: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pin: PinArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

/// The journal's verdicts for `names` (the first that has any), read-only; empty without a
/// readable database.
fn history(state: &StateArgs, names: &[&str]) -> Vec<flux_state::VerdictRecord> {
    let Some(path) = state.path() else {
        return Vec::new();
    };
    let Ok(store) = flux_state::Store::open_read_only(&path) else {
        return Vec::new();
    };
    names
        .iter()
        .find_map(|n| store.verdicts_for(n).ok().filter(|v| !v.is_empty()))
        .unwrap_or_default()
}

/// One line per journalled verdict.
fn print_history(name: &str, h: &[flux_state::VerdictRecord]) -> std::io::Result<()> {
    if h.is_empty() {
        return Ok(());
    }
    out!("  history of {name} (verdict journal):");
    for v in h {
        out!(
            "    {:<10} score {:.3}  first {}  last {}  {}",
            v.level.as_str(),
            v.score,
            humantime::format_rfc3339_seconds(v.first_seen),
            humantime::format_rfc3339_seconds(v.last_seen),
            v.reasons_text()
        );
    }
    Ok(())
}

pub fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let answer = match control::ask(
        &args.pin.pin_dir,
        &Request {
            explain: args.domain.clone(),
        },
    ) {
        Ok(a) => a,
        Err(e @ ControlError::NotRunning { .. }) => {
            if args.json {
                // The same keys as the other commands' "nothing here" document.
                let v = serde_json::json!({
                    "loaded": Maps::open(&args.pin.pin_dir).is_ok(),
                    "agent_running": false,
                    "pin_dir": args.pin.pin_dir.display().to_string(),
                    "error": e.to_string(),
                });
                out!("{v}");
            } else {
                eprintln!("flux-agent: {e}");
            }
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e.into()),
    };
    // The block, if any, on the key or the name, straight from the pinned maps.
    let blocked = Maps::open(&args.pin.pin_dir).ok().and_then(|m| {
        let names = [answer.key.clone(), Some(answer.name.clone())];
        names
            .into_iter()
            .flatten()
            .find_map(|n| m.describe(&Target::Domain(n)).ok().flatten())
    });
    let mut names = vec![answer.name.as_str()];
    names.extend(answer.key.as_deref());
    let history = history(&args.state, &names);
    if args.json {
        let v = serde_json::json!({
            "name": answer.name,
            "key": answer.key,
            "tracked": answer.verdict.is_some(),
            "verdict": answer.verdict,
            "fleet": answer.fleet,
            "blocked": blocked,
            "history": history,
        });
        out!("{v}");
        return Ok(if answer.verdict.is_some() || answer.fleet.is_some() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let Some(v) = answer.verdict else {
        out!(
            "{}: not tracked by the scorer (never seen, or evicted)",
            answer.name
        );
        print_history(&answer.name, &history)?;
        if let Some(f) = &answer.fleet {
            print_fleet(f)?;
            return Ok(ExitCode::SUCCESS);
        }
        return Ok(ExitCode::from(1));
    };
    let key = answer.key.unwrap_or_default();
    let f = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    out!(
        "{key}: {} (score {:.3})",
        f("level"),
        f("score").as_f64().unwrap_or(0.0)
    );
    out!(
        "  own evidence (without other domains' bots): {:.3}",
        f("own_score").as_f64().unwrap_or(0.0)
    );
    out!(
        "  block gate: {}",
        f("block_gate").as_str().unwrap_or("unknown")
    );
    if f("double_flux") == Value::Bool(true) {
        out!("  double flux: the name servers rotate too");
    }
    if let Some(m) = v.get("allowlist_match").and_then(Value::as_str) {
        out!("  allowlisted by {m}: reported, never enforced");
    }
    match &blocked {
        Some(b) => out!(
            "  blocked: {} (source {}, {} hits, expires {})",
            b.reason,
            b.source,
            b.hits,
            b.expires
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_else(|| "never".into())
        ),
        None => out!("  not blocked"),
    }
    out!("  reasons (contribution to the log-odds):");
    for r in v["reasons"].as_array().into_iter().flatten() {
        out!(
            "    {:<24} {:>+7.3}  (value {:.3} x weight {:.2})",
            r["feature"].as_str().unwrap_or("?"),
            r["contribution"].as_f64().unwrap_or(0.0),
            r["value"].as_f64().unwrap_or(0.0),
            r["weight"].as_f64().unwrap_or(0.0)
        );
    }
    out!("  features:");
    if let Some(obj) = v["features"].as_object() {
        for (k, val) in obj {
            out!("    {k:<24} {val}");
        }
    }
    let b = &v["baselines"];
    out!(
        "  baselines: holz {:.1} ({}), zeek {:.1} ({})",
        b["holz"].as_f64().unwrap_or(0.0),
        if b["holz_flux"] == Value::Bool(true) {
            "flux"
        } else {
            "not flux"
        },
        b["zeek"].as_f64().unwrap_or(0.0),
        if b["zeek_flux"] == Value::Bool(true) {
            "flux"
        } else {
            "not flux"
        },
    );
    if let Some(f) = &answer.fleet {
        print_fleet(f)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The fleet scorer's view: level, contributors, and what became of its verdict here.
fn print_fleet(f: &FleetView) -> std::io::Result<()> {
    out!(
        "  fleet ({} here): {} (score {:.3}) on {}",
        f.agent,
        f.level,
        f.score,
        f.key
    );
    out!(
        "    evidence from {} agent(s): {} ({} other, the fleet quorum needs {})",
        f.agents.len(),
        f.agents.join(", "),
        f.other_agents,
        f.quorum
    );
    out!("    fleet block gate: {}", f.block_gate);
    out!(
        "    {} (--fleet-action {}): {}",
        f.decision,
        f.action,
        f.why
    );
    Ok(())
}
