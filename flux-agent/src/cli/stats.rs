//! `flux-agent stats`.

use std::process::ExitCode;

use flux_agent::kernel::counters::{self, StatsError};

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
            "counters": counters,
        });
        out!("{v}");
    } else {
        out!(
            "flux-agent counters ({}, agent {})",
            s.pin_dir,
            if s.agent_running {
                "running"
            } else {
                "not running: pins left behind"
            }
        );
        for (name, value) in &s.counters {
            out!("  {name:<24} {value:>14}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
