//! `flux-agent blocklist list|add|remove|flush`: the pinned blocklist maps, as xdp-filter
//! manages its own.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use flux_agent::{
    enforce::guard::Guard,
    enforce::maps::{Added, BlocklistError, Listed, Maps, Spec, Target},
    kernel::pins::PinError,
};

use super::PinArgs;

#[derive(Debug, clap::Args)]
pub struct BlocklistArgs {
    #[command(subcommand)]
    pub command: BlocklistCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BlocklistCommand {
    /// Show every block: kind, value, source, score, hits, added, expires, reason.
    List(ListArgs),
    /// Block domains, addresses or CIDRs. Everything is checked before anything is written.
    Add(AddArgs),
    /// Remove blocks.
    Remove(TargetArgs),
    /// Remove every block (the allowlist stays).
    Flush(JsonArgs),
}

#[derive(Debug, clap::Args)]
pub struct JsonArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pin: PinArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: JsonArgs,
}

/// The things to act on; at least one.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = true)]
pub struct Targets {
    /// A domain; its subdomains are covered too (repeatable).
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// An IPv4 or IPv6 address (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    pub ips: Vec<String>,
    /// A network, ADDR/LEN (repeatable).
    #[arg(long = "cidr", value_name = "CIDR")]
    pub cidrs: Vec<String>,
}

impl Targets {
    /// Parses every target, failing on the first bad one before anything is written.
    pub fn parse(&self) -> Result<Vec<Target>, BlocklistError> {
        let mut out = Vec::new();
        for d in &self.domains {
            out.push(Target::domain(d)?);
        }
        for ip in &self.ips {
            out.push(Target::ip(ip)?);
        }
        for c in &self.cidrs {
            out.push(Target::cidr(c)?);
        }
        Ok(out)
    }
}

#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub targets: Targets,
    #[command(flatten)]
    pub common: JsonArgs,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// How long the block lasts (e.g. 30m, 24h, 7d). Default: until removed.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Why, kept with the entry (24 bytes).
    #[arg(long, value_name = "TEXT", default_value = "manual")]
    pub reason: String,
    /// Write even what the guard refuses: `0.0.0.0/0`, `::/0`, loopback, link-local,
    /// multicast, broadcast and unspecified addresses, this host's addresses, its resolvers and
    /// gateways, and any CIDR covering one.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub common: JsonArgs,
}

pub fn blocklist(args: BlocklistArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BlocklistCommand::List(a) => {
            let Some(maps) = open(&a.common)? else {
                return Ok(ExitCode::from(3));
            };
            print_entries(&maps.list()?, a.common.json, "blocked");
        }
        BlocklistCommand::Add(a) => {
            let targets = a.targets.parse()?;
            // The scorer's guard, before anything is written (feeds will call the same check).
            if !a.force {
                let guard = Guard::new(Vec::new());
                for t in &targets {
                    guard.check(t)?;
                }
            }
            let Some(mut maps) = open(&a.common)? else {
                return Ok(ExitCode::from(3));
            };
            let spec = Spec::manual(a.ttl, &a.reason);
            for t in &targets {
                let added = maps
                    .block(t, &spec)
                    .with_context(|| format!("cannot block {t}"))?;
                report(&a.common, "blocked", t, added == Added::New);
            }
        }
        BlocklistCommand::Remove(a) => {
            let targets = a.targets.parse()?;
            let Some(mut maps) = open(&a.common)? else {
                return Ok(ExitCode::from(3));
            };
            let mut missing = false;
            for t in &targets {
                let removed = maps.unblock(t)?;
                missing |= !removed;
                report(&a.common, "unblocked", t, removed);
            }
            if missing {
                return Ok(ExitCode::from(1));
            }
        }
        BlocklistCommand::Flush(a) => {
            let Some(mut maps) = open(&a)? else {
                return Ok(ExitCode::from(3));
            };
            let n = maps.flush()?;
            if a.json {
                println!("{}", serde_json::json!({ "flushed": n }));
            } else {
                println!("removed {n} blocks");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the pinned maps, or prints that nothing is loaded and returns `None`.
pub fn open(a: &JsonArgs) -> anyhow::Result<Option<Maps>> {
    match Maps::open(&a.pin.pin_dir) {
        Ok(m) => Ok(Some(m)),
        Err(BlocklistError::Pin(e @ PinError::NotLoaded(_))) => {
            if a.json {
                let v = serde_json::json!({
                    "loaded": false,
                    "pin_dir": a.pin.pin_dir.display().to_string(),
                    "error": e.to_string(),
                });
                println!("{v}");
            } else {
                eprintln!("flux-agent: {e}");
            }
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// One line per change: `changed` says whether it did anything.
pub fn report(a: &JsonArgs, verb: &str, t: &Target, changed: bool) {
    if a.json {
        let v = serde_json::json!({
            "action": verb,
            "kind": t.kind(),
            "value": t.to_string(),
            "changed": changed,
        });
        println!("{v}");
    } else if changed {
        println!("{verb} {} {t}", t.kind());
    } else if verb == "blocked" {
        println!(
            "{verb} {} {t} (already there: expiry and reason renewed)",
            t.kind()
        );
    } else {
        println!("{} {t} was not there", t.kind());
    }
}

fn when(t: Option<std::time::SystemTime>, none: &str) -> String {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| none.to_owned())
}

/// A table, or one JSON object per line.
pub fn print_entries(entries: &[Listed], json: bool, what: &str) {
    if json {
        for e in entries {
            match serde_json::to_string(e) {
                Ok(s) => println!("{s}"),
                Err(e) => log::warn!("cannot serialize entry: {e}"),
            }
        }
        return;
    }
    if entries.is_empty() {
        println!("nothing {what}");
        return;
    }
    println!(
        "{:<6} {:<40} {:<7} {:>6} {:>8} {:<20} {:<20} REASON",
        "KIND", "VALUE", "SOURCE", "SCORE", "HITS", "ADDED", "EXPIRES"
    );
    for e in entries {
        let expires = if e.expired {
            format!("{} (expired)", when(e.expires, "never"))
        } else {
            when(e.expires, "never")
        };
        println!(
            "{:<6} {:<40} {:<7} {:>6} {:>8} {:<20} {:<20} {}",
            e.kind,
            e.value,
            e.source,
            e.score.map(|s| format!("{s:.2}")).unwrap_or_default(),
            e.hits,
            when(e.added, "-"),
            expires,
            e.reason
        );
    }
}
