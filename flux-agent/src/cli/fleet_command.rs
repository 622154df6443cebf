//! `flux-agent fleet`: the fleet's operator tools (docs/fleet.md). `keygen` writes an agent's
//! ed25519 signing key and prints the line the fleet's trust list needs for it.
//!
//! May touch: the key file it is told to write.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use flux_agent::fleet::envelope::{generate_signing_key, hex, valid_agent_id};

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Write a new signing key (mode 0600, never over an existing file) and print the trust
    /// list line `AGENT-ID PUBLIC-KEY` for it.
    Keygen(KeygenArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// The agent's id in the fleet: letters, digits, `-`, `_` (at most 64).
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// Where to write the key (`run --fleet-key`).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Print JSON instead of the trust-list line.
    #[arg(long)]
    pub json: bool,
}

impl FleetCommand {
    pub fn json(&self) -> bool {
        match self {
            FleetCommand::Keygen(a) => a.json,
        }
    }
}

pub fn fleet(args: FleetArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        FleetCommand::Keygen(a) => keygen(&a),
    }
}

fn keygen(a: &KeygenArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        valid_agent_id(&a.id),
        "--id {:?}: letters, digits, '-' and '_' only, at most 64",
        a.id
    );
    let key = generate_signing_key().context("read /dev/urandom")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&a.out)
        .with_context(|| format!("--out {}", a.out.display()))?;
    writeln!(f, "{}", hex(key.as_bytes())).with_context(|| format!("write {}", a.out.display()))?;
    let public = hex(key.verifying_key().as_bytes());
    if a.json {
        let v = serde_json::json!({ "id": a.id, "public_key": public, "key_file": a.out });
        out!("{v}");
    } else {
        out!("{} {public}", a.id);
    }
    Ok(ExitCode::SUCCESS)
}
