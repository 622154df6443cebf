//! Command-line interface: one module per subcommand.
//!
//! Every command prints through [`out!`], so a closed output pipe (`| head -1`) ends it
//! cleanly (status 0) instead of a panic; with `--json` a command prints one JSON document,
//! its error included (`{"error": ...}` on stdout).

/// `println!` that returns the write error (`?`) instead of panicking on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod allowlist;
mod blocklist;
mod completions;
// Not `config.rs`: the library's config.rs holds the file format (no two files share a name).
mod config_command;
mod explain;
mod feed;
// Not `fleet.rs`: the library's fleet.rs holds the fleet itself (no two files share a name).
mod fleet_command;
// Not `export.rs`: flux-state has one, and no two files in the tree share a name.
mod indicator_export;
mod replay;
mod run;
mod run_reload;
mod scoring;
mod stats;
mod status;
mod top;
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
    Run(Box<run::RunArgs>),
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
    /// Write what the agent found or blocked (from the state database) as STIX 2.1, MISP,
    /// CSV, a hosts file or a plain list.
    Export(indicator_export::ExportArgs),
    /// Threat-intelligence feeds: add (a file or URL, in the formats people publish), list,
    /// update, remove. Their entries are blocked (or reported) like the others.
    Feed(feed::FeedArgs),
    /// Is it working? The agent, interfaces, pins, database, feeds, counters and last
    /// decisions on one screen. Exit 0 running, 3 not running, 4 unknown.
    Status(status::StatusArgs),
    /// A live view of the running agent: rates, most suspicious domains, recent decisions;
    /// explain, block or unblock a domain from it.
    Top(top::TopArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Write the manual pages into a folder (for packaging).
    #[command(hide = true)]
    Manpages(completions::ManpagesArgs),
    /// Check a configuration file (`config check`) or print the settings `run` would use
    /// (`config show`).
    Config(config_command::ConfigArgs),
    /// The fleet's tools (docs/fleet.md): `keygen` makes an agent's signing key.
    Fleet(fleet_command::FleetArgs),
}

/// The environment variable that changes the default `--state` (tests give each lab its own
/// database this way; an operator may too).
pub const STATE_ENV: &str = "FLUX_AGENT_STATE";

/// The state database, for every command that writes or reads blocks.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// The state database (SQLite): blocks and allowlist with their source, reason and
    /// expiry, the verdict journal. Created, with its directory (0700), if missing.
    /// Default: $FLUX_AGENT_STATE, else /var/lib/flux-agent/state.db.
    #[arg(long = "state", value_name = "PATH")]
    pub state_path: Option<PathBuf>,
    /// No state database: blocks are neither recorded nor restored after a reboot.
    #[arg(long, conflicts_with = "state_path")]
    pub no_state: bool,
}

impl StateArgs {
    /// The database to use; `None` with `--no-state`.
    pub fn path(&self) -> Option<PathBuf> {
        if self.no_state {
            return None;
        }
        Some(self.state_path.clone().unwrap_or_else(|| {
            std::env::var_os(STATE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(flux_state::DEFAULT_STATE_PATH))
        }))
    }

    /// The write path of a CLI command: the database (an unusable one is one error line, and
    /// the maps are written alone), or none with `--no-state`.
    pub fn recorder(&self) -> flux_agent::enforce::record::Recorder {
        match self.path() {
            Some(p) => flux_agent::enforce::record::Recorder::open_or_warn(&p),
            None => flux_agent::enforce::record::Recorder::without_db(),
        }
    }
}

/// Options every command that touches the pinned maps shares.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// bpffs folder holding the agent's pinned maps.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

impl Command {
    /// Whether the command prints JSON (`--json`).
    fn json(&self) -> bool {
        match self {
            Command::Run(_) => false,
            Command::Stats(a) => a.json,
            Command::Replay(a) => a.json,
            Command::Blocklist(a) => match &a.command {
                blocklist::BlocklistCommand::List(a) => a.common.json,
                blocklist::BlocklistCommand::Add(a) => a.common.json,
                blocklist::BlocklistCommand::Remove(a) => a.common.json,
                blocklist::BlocklistCommand::Flush(a) => a.common.json,
            },
            Command::Allowlist(a) => match &a.command {
                allowlist::AllowlistCommand::List(a) => a.json,
                allowlist::AllowlistCommand::Add(a) | allowlist::AllowlistCommand::Remove(a) => {
                    a.common.json
                }
            },
            Command::Explain(a) => a.json,
            Command::Unload(a) => a.json,
            Command::Export(_) => false,
            Command::Feed(a) => a.command.json(),
            Command::Status(a) => a.json,
            Command::Top(_) => false,
            Command::Completions(_) | Command::Manpages(_) => false,
            Command::Config(a) => a.command.json(),
            Command::Fleet(a) => a.command.json(),
        }
    }
}

/// Whether `e` is a write to a closed pipe (the reader, such as `head`, is done).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs the command. A closed output pipe is a clean end; with `--json`, an error is printed
/// as `{"error": ...}` on stdout (the one document) and the status is 1.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.command.json();
    match run_command(cli) {
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) if json => {
            let doc = serde_json::json!({ "error": format!("{e:#}") });
            match (|| -> std::io::Result<()> {
                out!("{doc}");
                Ok(())
            })() {
                Err(io) if io.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                _ => Ok(ExitCode::FAILURE),
            }
        }
        r => r,
    }
}

fn run_command(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Stats(args) => stats::stats(args),
        Command::Replay(args) => replay::replay(args),
        Command::Blocklist(args) => blocklist::blocklist(args),
        Command::Allowlist(args) => allowlist::allowlist(args),
        Command::Unload(args) => unload::unload(args),
        Command::Explain(args) => explain::explain(args),
        Command::Export(args) => indicator_export::export(args),
        Command::Feed(args) => feed::feed(args),
        Command::Status(args) => status::status(args),
        Command::Top(args) => top::top(args),
        Command::Completions(args) => completions::completions(args),
        Command::Manpages(args) => completions::manpages(args),
        Command::Config(args) => config_command::config(args),
        Command::Fleet(args) => fleet_command::fleet(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let e = anyhow::Error::from(io).context("printing the list");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }

    #[test]
    fn json_is_known_for_every_listing_command() {
        for argv in [
            &["flux-agent", "stats", "--json"][..],
            &["flux-agent", "blocklist", "list", "--json"],
            &[
                "flux-agent",
                "blocklist",
                "add",
                "--ip",
                "192.0.2.1",
                "--json",
            ],
            &["flux-agent", "allowlist", "list", "--json"],
            &["flux-agent", "explain", "x.test", "--json"],
            &["flux-agent", "unload", "--json"],
            &["flux-agent", "feed", "list", "--json"],
            &["flux-agent", "feed", "add", "x", "/tmp/x", "--json"],
            &["flux-agent", "feed", "update", "--json"],
            &["flux-agent", "feed", "remove", "x", "--json"],
            &["flux-agent", "status", "--json"],
        ] {
            assert!(Cli::parse_from(argv).command.json(), "{argv:?}");
        }
        assert!(
            !Cli::parse_from(["flux-agent", "blocklist", "list"])
                .command
                .json()
        );
    }
}
