//! `flux-agent blocklist list|add|remove|flush`: the pinned blocklist maps, as xdp-filter
//! manages its own.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use flux_agent::{
    control::{self, ControlError},
    enforce::block_expiry::renewal_note,
    enforce::guard::Guard,
    enforce::maps::{BlocklistError, Listed, Maps, Spec, Target},
    kernel::pins::PinError,
};

use flux_state::Source;

use super::{PinArgs, StateArgs};

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
    Flush(FlushArgs),
}

#[derive(Debug, clap::Args)]
pub struct FlushArgs {
    #[command(flatten)]
    pub common: JsonArgs,
    #[command(flatten)]
    pub state: StateArgs,
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
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// How long the block lasts (e.g. 30m, 24h, 7d; more than 0). Default: until removed,
    /// also when re-adding a block that had an expiry.
    #[arg(long, value_name = "DUR", value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
    /// Why, kept with the entry (24 bytes).
    #[arg(long, value_name = "TEXT", default_value = "manual")]
    pub reason: String,
    /// Write even what the guard refuses: `0.0.0.0/0`, `::/0`, loopback, link-local,
    /// multicast, broadcast and unspecified addresses, this host's addresses, its resolvers and
    /// gateways, and any CIDR covering one.
    #[arg(long)]
    pub force: bool,
    /// A resolver never to block (repeatable), beside /etc/resolv.conf and the resolvers the
    /// running agent guards (its `--resolver`s and the servers it saw answering this host's
    /// queries), which it is asked for.
    #[arg(long = "resolver", value_name = "IP")]
    pub resolvers: Vec<std::net::IpAddr>,
    #[command(flatten)]
    pub common: JsonArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

pub fn blocklist(args: BlocklistArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BlocklistCommand::List(a) => {
            let Some(maps) = open(&a.common)? else {
                return Ok(ExitCode::from(3));
            };
            print_entries(&maps.list()?, a.common.json, "blocked")?;
        }
        BlocklistCommand::Add(a) => {
            let targets = a.targets.parse()?;
            // The maps first: "nothing is loaded" or "permission denied" is the answer then,
            // whatever the guard would say.
            let Some(mut maps) = open(&a.common)? else {
                return Ok(ExitCode::from(3));
            };
            // The scorer's guard, before anything is written (feeds will call the same check).
            if !a.force {
                let guard = cli_guard(&a)?;
                for t in &targets {
                    guard.check(t)?;
                }
            }
            let spec = Spec::manual(a.ttl, &a.reason);
            let mut rec = a.state.recorder();
            let mut rep = Reporter::new(&a.common);
            for (done, t) in targets.iter().enumerate() {
                let previous = maps.get(t)?;
                rec.block(&mut maps, t, &spec, Source::Manual, previous)
                    .with_context(|| {
                        format!("cannot block {t} ({})", partial(done, targets.len()))
                    })?;
                let note = previous.map(|p| renewal_note(p.expires_ns, a.ttl));
                rep.report("blocked", t, previous.is_none(), note)?;
            }
            rep.finish()?;
        }
        BlocklistCommand::Remove(a) => {
            let targets = a.targets.parse()?;
            let Some(mut maps) = open(&a.common)? else {
                return Ok(ExitCode::from(3));
            };
            let mut missing = false;
            let mut rec = a.state.recorder();
            let mut rep = Reporter::new(&a.common);
            for t in &targets {
                let removed = rec.unblock(&mut maps, t)?;
                missing |= !removed;
                rep.report("unblocked", t, removed, None)?;
            }
            rep.finish()?;
            if missing {
                return Ok(ExitCode::from(1));
            }
        }
        BlocklistCommand::Flush(a) => {
            let Some(mut maps) = open(&a.common)? else {
                return Ok(ExitCode::from(3));
            };
            let n = a.state.recorder().flush(&mut maps)?;
            if a.common.json {
                out!("{}", serde_json::json!({ "flushed": n }));
            } else {
                out!("removed {n} blocks");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The guard `add` runs: this host's addresses, resolvers and gateways, the `--resolver`s
/// given, and the resolvers the running agent guards. Without a running agent there is nothing
/// learnt to add; an agent that is running but cannot be asked fails the command (the guard
/// would be incomplete), and `--force` is the way past it.
fn cli_guard(a: &AddArgs) -> anyhow::Result<Guard> {
    let mut resolvers = a.resolvers.clone();
    match control::ask_resolvers(&a.common.pin.pin_dir) {
        Ok(learnt) => resolvers.extend(learnt),
        Err(ControlError::NotRunning { .. }) => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(
                "cannot ask the running agent which resolvers it guards (--force skips the guard)",
            ));
        }
    }
    Ok(Guard::new(resolvers))
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
                out!("{v}");
            } else {
                eprintln!("flux-agent: {e}");
            }
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// A `--ttl`: a duration longer than 0 (a 0 TTL would write an entry already expired and
/// report it blocked).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be longer than 0 (omit --ttl to block until removed)".into());
    }
    Ok(d)
}

/// What was written before a failure, for its message.
fn partial(done: usize, total: usize) -> String {
    if done == 0 {
        format!("nothing was added of the {total} targets")
    } else {
        format!("{done} of the {total} targets were added before it and are kept")
    }
}

/// What `add` and `remove` did: one line per target, or with `--json` one array of objects
/// printed at the end (one document).
pub struct Reporter {
    json: bool,
    items: Vec<serde_json::Value>,
}

impl Reporter {
    pub fn new(a: &JsonArgs) -> Self {
        Self {
            json: a.json,
            items: Vec::new(),
        }
    }

    /// `changed` says whether it did anything; `note` what happened to an entry already there.
    pub fn report(
        &mut self,
        verb: &str,
        t: &Target,
        changed: bool,
        note: Option<&str>,
    ) -> std::io::Result<()> {
        if self.json {
            let mut v = serde_json::json!({
                "action": verb,
                "kind": t.kind(),
                "value": t.to_string(),
                "changed": changed,
            });
            if let Some(n) = note {
                v["note"] = n.into();
            }
            self.items.push(v);
        } else if changed {
            out!("{verb} {} {t}", t.kind());
        } else if let Some(n) = note {
            out!("{verb} {} {t} ({n})", t.kind());
        } else {
            out!("{} {t} was not there", t.kind());
        }
        Ok(())
    }

    pub fn finish(self) -> std::io::Result<()> {
        if self.json {
            out!("{}", serde_json::Value::Array(self.items));
        }
        Ok(())
    }
}

fn when(t: Option<std::time::SystemTime>, none: &str) -> String {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| none.to_owned())
}

/// A table, or with `--json` one JSON array (`[]` when empty).
pub fn print_entries(entries: &[Listed], json: bool, what: &str) -> std::io::Result<()> {
    if json {
        out!("{}", serde_json::to_string(entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        out!("nothing {what}");
        return Ok(());
    }
    out!(
        "{:<6} {:<40} {:<7} {:>6} {:>8} {:<20} {:<20} REASON",
        "KIND",
        "VALUE",
        "SOURCE",
        "SCORE",
        "HITS",
        "ADDED",
        "EXPIRES"
    );
    for e in entries {
        let expires = if e.expired {
            format!("{} (expired)", when(e.expires, "never"))
        } else {
            when(e.expires, "never")
        };
        out!(
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_zero_is_refused_and_others_parse() {
        let e = parse_ttl("0s").unwrap_err();
        assert!(e.contains("longer than 0"), "{e}");
        assert!(parse_ttl("0").is_err());
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn a_partial_write_says_how_much_was_added() {
        assert_eq!(
            partial(6, 10),
            "6 of the 10 targets were added before it and are kept"
        );
        assert!(partial(0, 10).starts_with("nothing was added"));
    }
}
