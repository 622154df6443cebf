//! Command-line interface: one module per subcommand.

mod allowlist;
mod blocklist;
mod explain;
mod replay;
mod run;
mod scoring;
mod stats;
mod unload;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use flux_agent::kernel::loader::DEFAULT_PIN_DIR;

#[derive(Debug, Parser)]
#[command(
    name = "flux-agent",
    version,
    about = "Detect and block DNS fast flux with eBPF/XDP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to interfaces and capture DNS responses.
    Run(run::RunArgs),
    /// Show the kernel counters of the loaded agent.
    Stats(stats::StatsArgs),
    /// Score capture files offline with the same parser and scorer.
    Replay(replay::ReplayArgs),
    /// List, add, remove or flush blocked domains, addresses and CIDRs.
    Blocklist(blocklist::BlocklistArgs),
    /// List, add or remove allowed domains, addresses and CIDRs (they win over any block).
    Allowlist(allowlist::AllowlistArgs),
    /// The running agent's features, scores and reasons for a domain, and its block.
    Explain(explain::ExplainArgs),
    /// Detach the programs a stopped agent left enforcing, and remove its pins.
    Unload(blocklist::JsonArgs),
}

/// Options every command that touches the pinned maps shares.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// bpffs folder holding the agent's pinned maps.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Stats(args) => stats::stats(args),
        Command::Replay(args) => replay::replay(args),
        Command::Blocklist(args) => blocklist::blocklist(args),
        Command::Allowlist(args) => allowlist::allowlist(args),
        Command::Unload(args) => unload::unload(args),
        Command::Explain(args) => explain::explain(args),
    }
}
