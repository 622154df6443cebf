//! `flux-agent allowlist list|add|remove`: addresses, CIDRs and domains the kernel lets through
//! over any block, and the agent never blocks.

use std::process::ExitCode;

use super::blocklist::{JsonArgs, Reporter, TargetArgs, open, print_entries};

#[derive(Debug, clap::Args)]
pub struct AllowlistArgs {
    #[command(subcommand)]
    pub command: AllowlistCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AllowlistCommand {
    /// Show the allowlist.
    List(JsonArgs),
    /// Allow domains (and their subdomains), addresses or CIDRs.
    Add(TargetArgs),
    /// Remove allowlist entries.
    Remove(TargetArgs),
}

pub fn allowlist(args: AllowlistArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AllowlistCommand::List(a) => {
            let Some(maps) = open(&a)? else {
                return Ok(ExitCode::from(3));
            };
            print_entries(&maps.list_allowed()?, a.json, "allowed")?;
        }
        AllowlistCommand::Add(a) => {
            let targets = a.targets.parse()?;
            let Some(mut maps) = open(&a.common)? else {
                return Ok(ExitCode::from(3));
            };
            let mut rec = a.state.recorder();
            let mut rep = Reporter::new(&a.common);
            for t in &targets {
                rec.allow(&mut maps, t, "manual")?;
                rep.report("allowed", t, true, None)?;
            }
            rep.finish()?;
        }
        AllowlistCommand::Remove(a) => {
            let targets = a.targets.parse()?;
            let Some(mut maps) = open(&a.common)? else {
                return Ok(ExitCode::from(3));
            };
            let mut missing = false;
            let mut rec = a.state.recorder();
            let mut rep = Reporter::new(&a.common);
            for t in &targets {
                let removed = rec.unallow(&mut maps, t)?;
                missing |= !removed;
                rep.report("unallowed", t, removed, None)?;
            }
            rep.finish()?;
            if missing {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
