//! `flux-agent stats`: the kernel counters, every interface's state (attached, absent, failed)
//! and any pin that is not the attached program's map. Exit 1 when a pin was replaced.

use std::process::ExitCode;

use flux_agent::{
    control,
    fleet::fleet_stats,
    kernel::{
        counters::{self, Stats, StatsError},
        iface_states::State,
    },
};

use super::PinArgs;

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub pin: PinArgs,
}

pub fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let s = match counters::read(&args.pin.pin_dir) {
        Ok(s) => s,
        Err(e @ StatsError::NotLoaded(_)) => {
            if args.json {
                let v = serde_json::json!({
                    "loaded": false,
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
    // The state database's failed writes, from the running agent (user space, not the kernel).
    let state = if s.agent_running {
        control::ask_state(&args.pin.pin_dir).ok()
    } else {
        None
    };
    // The fleet's counters, from the running agent's file (`flux_agent::fleet`), if it has one.
    let fleet = s
        .agent_running
        .then(|| std::fs::read(fleet_stats::stats_path(&args.pin.pin_dir)).ok())
        .flatten()
        .and_then(|b| serde_json::from_slice::<fleet_stats::FleetSnapshot>(&b).ok());
    if args.json {
        let counters: serde_json::Map<String, serde_json::Value> = s
            .counters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        let v = serde_json::json!({
            "loaded": true,
            "agent_running": s.agent_running,
            "pin_dir": s.pin_dir,
            "interfaces": s.interfaces,
            "replaced_pins": s.replaced,
            "counters": counters,
            "state_db": state,
            "fleet": fleet,
        });
        out!("{v}");
    } else {
        human(&s)?;
        if let Some(c) = state {
            out!("  {:<24} {:>14}", "state_db_full", c.db_full);
            out!("  {:<24} {:>14}", "state_db_errors", c.db_errors);
        }
        if let Some(f) = fleet {
            out!("  {:<24} {:>14}", "fleet_connected", u8::from(f.connected));
            out!("  {:<24} {:>14}", "fleet_sent", f.sent);
            out!("  {:<24} {:>14}", "fleet_backlog", f.backlog);
            out!("  {:<24} {:>14}", "fleet_received", f.received);
            out!("  {:<24} {:>14}", "fleet_duplicates", f.duplicates);
            for (why, n) in &f.rejected {
                out!("  {:<24} {:>14}", format!("fleet_rejected_{why}"), n);
            }
            out!("  {:<24} {:>14}", "fleet_verdicts", f.fleet_verdicts);
            out!("  {:<24} {:>14}", "fleet_enforced", f.enforced);
            out!("  {:<24} {:>14}", "fleet_reports_only", f.reports_only);
        }
    }
    Ok(if s.replaced.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn human(s: &Stats) -> anyhow::Result<()> {
    let absent = s
        .interfaces
        .iter()
        .filter(|i| i.state != State::Attached)
        .count();
    out!(
        "flux-agent counters ({}, agent {}{})",
        s.pin_dir,
        if s.agent_running {
            "running"
        } else {
            "not running: pins left behind"
        },
        if absent > 0 {
            format!(", {absent} interface(s) not enforced")
        } else {
            String::new()
        }
    );
    for i in &s.interfaces {
        out!(
            "  interface {:<16} {:<9} ifindex {:<6} since {}{}",
            i.name,
            i.state.as_str(),
            i.ifindex.map_or_else(|| "-".to_owned(), |x| x.to_string()),
            i.since.as_deref().unwrap_or("-"),
            i.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    for r in &s.replaced {
        out!("  PIN REPLACED: {r}");
    }
    for (name, value) in &s.counters {
        out!("  {name:<24} {value:>14}");
    }
    Ok(())
}
