//! The fleet (issue 17, docs/fleet.md): agents share signed observations and verdicts over NATS
//! JetStream, and each judges every key on the union of what the fleet saw.
//!
//! - [`envelope`]: the wire records, their version, sequence numbers and ed25519 signatures;
//! - [`trust_list`]: the fleet's trust list and the checks on every received message
//!   (subject, key, signature, replay window, age);
//! - [`publisher`]: the bus subscriber that turns this agent's responses, verdicts and blocks
//!   into messages (only what changed, sampled under load);
//! - [`nats_link`]: the connection, the stream, publishing with `Nats-Msg-Id`, the durable
//!   consumer;
//! - [`aggregate`]: the fleet scorer, who contributed to each key, the fleet quorum;
//! - [`fleet_stats`]: the counters (`flux-agent stats`, the metrics endpoint);
//! - [`fleet_explain`]: the fleet's part of `explain` (level, contributors, enforced or
//!   reported and why).
//!
//! The fleet subscribes to the bus and feeds the run loop through a channel; it never touches
//! the capture path, and a broker that is away never delays or prevents local protection.
//!
//! May touch: the network (the NATS server), its key, credentials and trust-list files, and
//! `/run/flux-agent/<pin folder>.fleet.json`.

pub mod aggregate;
pub mod envelope;
pub mod fleet_explain;
pub mod fleet_stats;
pub mod nats_link;
pub mod publisher;
pub mod trust_list;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use flux_detect::score::{ScorerSetup, Verdict};
use log::{debug, info};
use tokio::sync::mpsc;

use aggregate::Aggregator;
pub use aggregate::FleetAction;
use envelope::{hex, read_signing_key};
use fleet_stats::FleetStats;
use nats_link::{Inbound, LinkConfig, Outgoing};
use trust_list::{Gate, TrustList};

use crate::pipeline::bus::{self, Bus};

/// Messages waiting for the link task: a few seconds of a busy agent's changed answers. The
/// link drains it continuously (into its own bounded outbox while the broker is away).
const OUTBOX: usize = 4096;
/// Checked messages waiting for the run loop (it takes them between two ring-buffer reads).
const INBOX: usize = 4096;

/// `run --fleet-*`.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// `nats://host:port` (`--fleet-url`).
    pub url: String,
    /// A file holding this agent's NATS nkey seed (`--fleet-creds`); `None`: no credentials.
    pub creds: Option<PathBuf>,
    /// This agent's ed25519 signing key (`--fleet-key`, `flux-agent fleet keygen`).
    pub key: PathBuf,
    /// The fleet trust list (`--fleet-trust`): `AGENT-ID HEX-PUBLIC-KEY` lines. This agent's
    /// id is the one its own key is listed under.
    pub trust: PathBuf,
    pub action: FleetAction,
}

/// The running fleet: what the run loop holds.
pub struct Fleet {
    inbound: mpsc::Receiver<Inbound>,
    aggregator: Aggregator,
    stats: Arc<FleetStats>,
    agent: String,
    stats_path: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    scratch: Vec<Verdict>,
    /// Keys whose fleet verdict the last [`Fleet::handle`] handed to the enforcer.
    handed: Vec<String>,
    enforcements: fleet_explain::Enforcements,
}

/// Reads the key and the trust list (a mistake there fails the start: it is the operator's),
/// subscribes the publisher to `bus` and starts the link in the background (a broker that is
/// away does not: the agent joins when it comes).
pub async fn start(
    opts: &FleetOptions,
    scoring: &ScorerSetup,
    bus: &mut Bus<'static>,
    pin_dir: &Path,
) -> anyhow::Result<Fleet> {
    let key = read_signing_key(&opts.key).context("--fleet-key")?;
    let trust = TrustList::read(&opts.trust).context("--fleet-trust")?;
    let public = hex(key.verifying_key().as_bytes());
    let agent = own_id(&opts.trust, &public)?;
    let nkey_seed = opts
        .creds
        .as_deref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .with_context(|| format!("--fleet-creds {}", p.display()))
        })
        .transpose()?;
    let stats = Arc::new(FleetStats::default());
    let (out_tx, out_rx) = mpsc::channel::<Outgoing>(OUTBOX);
    let (in_tx, inbound) = mpsc::channel::<Inbound>(INBOX);
    let publisher = publisher::Publisher::new(
        Arc::clone(&scoring.enricher),
        out_tx,
        in_tx.clone(),
        agent.clone(),
        Arc::clone(&stats),
    );
    bus.subscribe_queued("fleet", &publisher::KINDS, bus::DEFAULT_QUEUE, publisher)
        .context("start the fleet publisher")?;
    let aggregator = Aggregator::new(scoring.build(), &agent, trust.clone(), opts.action);
    let tasks = nats_link::start(
        LinkConfig {
            url: opts.url.clone(),
            nkey_seed,
            agent: agent.clone(),
            key,
            gate: Gate::new(trust),
            stats: Arc::clone(&stats),
        },
        out_rx,
        in_tx,
    )
    .await
    .with_context(|| format!("--fleet-url {}", opts.url))?;
    let mut tasks = tasks;
    tasks.push(tokio::spawn(write_stats(
        Arc::clone(&stats),
        agent.clone(),
        fleet_stats::stats_path(pin_dir),
    )));
    info!(
        "fleet: agent {agent}, broker {} (joining in the background), fleet verdicts {}",
        opts.url,
        match opts.action {
            FleetAction::Block => "block (fleet quorum: 2 other agents)",
            FleetAction::Report => "are only reported",
        }
    );
    Ok(Fleet {
        inbound,
        aggregator,
        stats,
        agent,
        stats_path: fleet_stats::stats_path(pin_dir),
        tasks,
        scratch: Vec::new(),
        handed: Vec::new(),
        enforcements: fleet_explain::Enforcements::default(),
    })
}

/// How often the counters are written for `flux-agent stats`.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

async fn write_stats(stats: Arc<FleetStats>, agent: String, path: PathBuf) {
    let mut every = tokio::time::interval(STATS_EVERY);
    loop {
        every.tick().await;
        if let Err(e) = fleet_stats::write_snapshot(&path, &stats.snapshot(&agent)) {
            debug!("fleet: cannot write {}: {e}", path.display());
        }
    }
}

/// The id `public` is listed under in the trust list at `path`.
fn own_id(path: &Path, public: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").split_whitespace())
        .find_map(|mut f| match (f.next(), f.next()) {
            (Some(id), Some(k)) if k.eq_ignore_ascii_case(public) => Some(id.to_owned()),
            _ => None,
        })
        .with_context(|| {
            format!(
                "--fleet-trust {}: this agent's key ({public}) is not listed; add \
                 `AGENT-ID {public}`",
                path.display()
            )
        })
}

impl Fleet {
    /// The next checked message (or this agent's own observation), for the run loop.
    pub async fn next(fleet: &mut Option<Fleet>) -> Option<Inbound> {
        match fleet {
            Some(f) => f.inbound.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Takes one message: observations go through the fleet scorer; the fleet verdicts they
    /// cause are returned with the scorer that made them (its addresses are what a block
    /// covers).
    pub fn handle(&mut self, inb: Inbound) -> (Vec<Verdict>, &flux_detect::score::Scorer) {
        self.scratch.clear();
        match inb {
            Inbound::Obs { agent, recs } => {
                self.aggregator
                    .observe(&agent, &recs, &self.stats, &mut self.scratch);
            }
            Inbound::Verdict {
                agent,
                msg,
                received_ms,
            } => debug!(
                "fleet: {agent} says {} is {} ({} ms ago)",
                msg.domain,
                msg.level,
                received_ms.saturating_sub(msg.verdict_ts_ms)
            ),
        }
        self.handed.clear();
        self.handed.extend(
            self.scratch
                .iter()
                .filter(|v| v.block && v.level == flux_detect::score::Level::Flux)
                .map(|v| v.domain.clone()),
        );
        (std::mem::take(&mut self.scratch), self.aggregator.scorer())
    }

    /// What the enforcer did with the verdicts of the last [`Fleet::handle`] (for `explain`).
    pub fn enforced(&mut self, actions: &[crate::enforce::policy::Action]) {
        self.enforcements.note(&self.handed, actions);
        self.handed.clear();
    }

    /// What the enforcer did later (blocks that waited for the rate cap), for the keys whose
    /// fleet verdict it was handed.
    pub fn later(&mut self, actions: &[crate::enforce::policy::Action]) {
        if !actions.is_empty() {
            self.enforcements.later(actions);
        }
    }

    /// The fleet's view of `name` for `explain`: the fleet scorer's verdict, the agents whose
    /// evidence made it, and whether it was enforced here or only reported, and why.
    /// `in_force` says whether a block the enforcer made is still in the maps.
    pub fn explain(
        &mut self,
        name: &str,
        in_force: &dyn Fn(&str) -> bool,
    ) -> Option<fleet_explain::FleetView> {
        fleet_explain::explain(
            &mut self.aggregator,
            &self.enforcements,
            name,
            std::time::SystemTime::now(),
            in_force,
        )
    }

    /// The counters, for the metrics endpoint.
    pub fn stats(&self) -> Arc<FleetStats> {
        Arc::clone(&self.stats)
    }

    /// Stops the link's tasks, writes the counters a last time, and removes nothing else (the
    /// durable consumer stays on the server for the next start).
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let snap = self.stats.snapshot(&self.agent);
        if let Err(e) = fleet_stats::write_snapshot(&self.stats_path, &snap) {
            debug!("fleet: cannot write {}: {e}", self.stats_path.display());
        }
        info!(
            "fleet: sent {}, received {}, duplicates {}, rejected {}",
            snap.sent,
            snap.received,
            snap.duplicates,
            snap.rejected.iter().map(|(_, n)| n).sum::<u64>()
        );
    }
}
