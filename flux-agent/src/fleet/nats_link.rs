//! The agent's link to the fleet: one NATS connection (nkey user), one JetStream stream
//! ([`STREAM`]), two tasks.
//!
//! - **publish**: takes what [`super::publisher`] hands over, batches observations
//!   ([`BATCH_MAX`], [`BATCH_WAIT`]), signs every message, and publishes it with its
//!   `Nats-Msg-Id` until the server acknowledges it. A retry after a lost acknowledgement keeps
//!   the id, so the server stores it once (it answers `duplicate`, counted).
//! - **consume**: a durable pull consumer named after the agent reads every agent's subjects
//!   from where it stopped (a partition or a restart loses nothing the stream still holds),
//!   checks each message ([`super::trust_list::Gate`]), hands what passes to the run loop and
//!   acknowledges it then (at least once; a redelivery is dropped by sequence).
//!
//! The connection is made in the background and re-made forever: a broker that is down at start
//! or goes away later never blocks the agent (local protection does not need the fleet).
//!
//! May touch: the network (the NATS server), the credentials file.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use async_nats::jetstream::{self, consumer::pull, message::PublishMessage, stream};
use ed25519_dalek::SigningKey;
use futures_util::StreamExt as _;
use log::{debug, info, warn};
use tokio::sync::mpsc;

use super::{
    envelope::{Envelope, Kind, ObsBatch, ObsRec, Sequencer, VerdictMsg},
    fleet_stats::{FleetStats, inc},
    trust_list::{Admit, Gate, Reject},
};

/// The one stream of the fleet (docs/fleet.md).
pub const STREAM: &str = "FLUX";
/// Observations of agent `<id>`: `flux.obs.<id>`.
pub const OBS_PREFIX: &str = "flux.obs.";
/// Verdicts and block decisions of agent `<id>`: `flux.verdict.<id>`.
pub const VERDICT_PREFIX: &str = "flux.verdict.";

/// The stream keeps an hour: the longest partition an agent catches up from, and the longest
/// scoring window the fleet shares ([`super::trust_list::MAX_AGE_MS`] agrees).
const STREAM_MAX_AGE: Duration = Duration::from_secs(3600);
/// Bound on the stream's disk, per stream (docs/fleet.md: a site's stream holds an hour of its
/// few hundred agents in far less); past it the oldest messages go first. The server must allow
/// at least this much file storage (`jetstream { max_file_store }`).
const STREAM_MAX_BYTES: i64 = 1024 * 1024 * 1024;
/// How long the server remembers a `Nats-Msg-Id`: longer than any retry of one message (the
/// publisher retries every [`RETRY_WAIT`] while the broker is away; a restart takes seconds).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// Observations per message: about 200 bytes each, so a batch stays near 12 KiB, well under
/// NATS's 1 MiB default payload limit.
pub const BATCH_MAX: usize = 64;
/// Longest an observation waits for its batch to fill: the fleet's added detection delay.
pub const BATCH_WAIT: Duration = Duration::from_millis(200);
/// Messages waiting for the server at most (about 12 MiB of batches); past it the oldest
/// observation batch is dropped (counted as `obs_dropped`). Verdicts are never dropped here.
const MAX_PENDING: usize = 1024;
/// Pause between two attempts to publish while the server does not answer.
const RETRY_WAIT: Duration = Duration::from_millis(500);
/// How long one publish waits for the server's acknowledgement.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// Pause before setting the consumer up again after it failed (broker away, restarting).
const CONSUMER_RETRY: Duration = Duration::from_secs(1);

/// What the rest of the agent hands to the link.
#[derive(Debug)]
pub enum Outgoing {
    Obs(ObsRec, bool),
    Verdict(VerdictMsg),
}

/// What the link hands to the run loop: a checked message of another agent.
#[derive(Debug)]
pub enum Inbound {
    Obs {
        agent: String,
        recs: Vec<ObsRec>,
    },
    Verdict {
        agent: String,
        msg: VerdictMsg,
        /// When it arrived here, ms since the epoch.
        received_ms: u64,
    },
}

pub struct LinkConfig {
    pub url: String,
    /// The nkey seed of this agent's NATS user (`SU...`), from `--fleet-creds`.
    pub nkey_seed: Option<String>,
    pub agent: String,
    pub key: SigningKey,
    pub gate: Gate,
    pub stats: Arc<FleetStats>,
}

/// Connects in the background and starts both tasks on the current runtime. Never fails and
/// never waits for the server.
pub async fn start(
    cfg: LinkConfig,
    out_rx: mpsc::Receiver<Outgoing>,
    in_tx: mpsc::Sender<Inbound>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let stats = Arc::clone(&cfg.stats);
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("flux-agent {}", cfg.agent))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |e| {
            let stats = Arc::clone(&stats);
            async move {
                use std::sync::atomic::Ordering;
                match e {
                    async_nats::Event::Connected => {
                        info!("fleet: connected");
                        stats.connected.store(true, Ordering::Relaxed);
                    }
                    async_nats::Event::Disconnected => {
                        warn!("fleet: disconnected; reconnecting in the background");
                        stats.connected.store(false, Ordering::Relaxed);
                    }
                    other => debug!("fleet: {other}"),
                }
            }
        });
    if let Some(seed) = &cfg.nkey_seed {
        opts = opts.nkey(seed.clone());
    }
    let client = opts.connect(cfg.url.as_str()).await?;
    let js = jetstream::new(client);
    let publish = tokio::spawn(publish_loop(
        js.clone(),
        cfg.agent.clone(),
        cfg.key,
        Arc::clone(&cfg.stats),
        out_rx,
    ));
    let consume = tokio::spawn(consume_loop(js, cfg.agent, cfg.gate, cfg.stats, in_tx));
    Ok(vec![publish, consume])
}

/// The stream's configuration (docs/fleet.md, Streams).
pub fn stream_config() -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![format!("{OBS_PREFIX}*"), format!("{VERDICT_PREFIX}*")],
        retention: stream::RetentionPolicy::Limits,
        max_age: STREAM_MAX_AGE,
        max_bytes: STREAM_MAX_BYTES,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// A message signed and waiting for the server.
struct Pending {
    subject: String,
    env: Envelope,
}

/// What the publish task holds: the batch being filled, and signed messages waiting for the
/// server.
struct Outbox {
    agent: String,
    key: SigningKey,
    seq: Sequencer,
    batch: ObsBatch,
    /// When the batch must go even if not full.
    flush_at: Option<tokio::time::Instant>,
    pending: VecDeque<Pending>,
    stats: Arc<FleetStats>,
}

impl Outbox {
    fn take(&mut self, o: Outgoing) {
        match o {
            Outgoing::Obs(rec, sampled) => {
                self.batch.obs.push(rec);
                self.batch.sampled |= sampled;
                self.flush_at
                    .get_or_insert_with(|| tokio::time::Instant::now() + BATCH_WAIT);
                if self.batch.obs.len() >= BATCH_MAX {
                    self.seal_batch();
                }
            }
            Outgoing::Verdict(v) => self.seal(Kind::Verdict, body(&v)),
        }
    }

    /// Seals the batch when it is due (or `now` regardless).
    fn seal_batch_if(&mut self, now: bool) {
        let due = self
            .flush_at
            .is_some_and(|t| t <= tokio::time::Instant::now());
        if !self.batch.obs.is_empty() && (due || now) {
            self.seal_batch();
        }
    }

    fn seal_batch(&mut self) {
        let b = std::mem::take(&mut self.batch);
        self.flush_at = None;
        self.seal(Kind::Obs, body(&b));
    }

    fn seal(&mut self, kind: Kind, body: String) {
        let prefix = match kind {
            Kind::Obs => OBS_PREFIX,
            Kind::Verdict => VERDICT_PREFIX,
        };
        let env = Envelope::sign(&self.key, &self.agent, self.seq.next_seq(), kind, body);
        self.pending.push_back(Pending {
            subject: format!("{prefix}{}", self.agent),
            env,
        });
        inc(&self.stats.published);
        if self.pending.len() > MAX_PENDING
            && let Some(i) = self.pending.iter().position(|p| p.env.kind == Kind::Obs)
        {
            self.pending.remove(i);
            inc(&self.stats.obs_dropped);
        }
        set_backlog(&self.stats, &self.pending);
    }
}

async fn publish_loop(
    js: jetstream::Context,
    agent: String,
    key: SigningKey,
    stats: Arc<FleetStats>,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let mut out = Outbox {
        agent,
        key,
        seq: Sequencer::default(),
        batch: ObsBatch::default(),
        flush_at: None,
        pending: VecDeque::new(),
        stats: Arc::clone(&stats),
    };
    let mut open = true;
    // A publish is never raced against the channel: dropping one between sending and its
    // acknowledgement would only make the server drop the retry as a duplicate, but costs a
    // round trip.
    while open || !out.pending.is_empty() || !out.batch.obs.is_empty() {
        loop {
            match rx.try_recv() {
                Ok(o) => out.take(o),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        out.seal_batch_if(!open);
        if !out.pending.is_empty() {
            if !publish_front(&js, &mut out.pending, &stats).await {
                tokio::time::sleep(RETRY_WAIT).await;
            }
            continue;
        }
        if !open {
            break;
        }
        let flush_at = out.flush_at;
        let wait_batch = async {
            match flush_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = rx.recv() => match got {
                None => open = false,
                Some(o) => out.take(o),
            },
            () = wait_batch => {}
        }
    }
}

/// The backlog gauge: messages signed and waiting for the server's acknowledgement.
fn set_backlog(stats: &FleetStats, pending: &VecDeque<Pending>) {
    stats
        .backlog
        .store(pending.len() as u64, std::sync::atomic::Ordering::Relaxed);
}

fn body<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Publishes the oldest waiting message; `false` when the server did not take it (retried).
async fn publish_front(
    js: &jetstream::Context,
    pending: &mut VecDeque<Pending>,
    stats: &FleetStats,
) -> bool {
    let Some(p) = pending.front() else {
        return true;
    };
    let msg = PublishMessage::build()
        .payload(p.env.to_bytes().into())
        .message_id(p.env.msg_id());
    let acked = async {
        let fut = js.send_publish(p.subject.clone(), msg).await?;
        Ok::<_, anyhow::Error>(fut.await?)
    };
    match tokio::time::timeout(ACK_WAIT, acked).await {
        Ok(Ok(ack)) => {
            inc(if ack.duplicate {
                &stats.sent_duplicates
            } else {
                &stats.sent
            });
            pending.pop_front();
            set_backlog(stats, pending);
            true
        }
        Ok(Err(e)) => {
            debug!("fleet: publish failed ({e}); retrying");
            inc(&stats.publish_retries);
            false
        }
        Err(_) => {
            debug!("fleet: no acknowledgement; retrying");
            inc(&stats.publish_retries);
            false
        }
    }
}

async fn consume_loop(
    js: jetstream::Context,
    agent: String,
    mut gate: Gate,
    stats: Arc<FleetStats>,
    tx: mpsc::Sender<Inbound>,
) {
    // The last error logged: a broker away for long is one line, not one a second.
    let mut last = String::new();
    loop {
        if let Err(e) = consume(&js, &agent, &mut gate, &stats, &tx).await {
            let e = format!("{e:#}");
            if e != last {
                warn!("fleet: consumer: {e}; trying again every {CONSUMER_RETRY:?}");
            }
            last = e;
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(CONSUMER_RETRY).await;
    }
}

/// Runs the durable consumer until it fails.
async fn consume(
    js: &jetstream::Context,
    agent: &str,
    gate: &mut Gate,
    stats: &FleetStats,
    tx: &mpsc::Sender<Inbound>,
) -> anyhow::Result<()> {
    let stream = js.get_or_create_stream(stream_config()).await?;
    let consumer = stream
        .get_or_create_consumer(
            agent,
            pull::Config {
                durable_name: Some(agent.to_owned()),
                filter_subject: "flux.>".to_owned(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(m) = messages.next().await {
        let m = m?;
        let subject = m.subject.as_str();
        let (kind, sender) = match subject
            .strip_prefix(OBS_PREFIX)
            .map(|s| (Kind::Obs, s))
            .or_else(|| {
                subject
                    .strip_prefix(VERDICT_PREFIX)
                    .map(|s| (Kind::Verdict, s))
            }) {
            Some(x) => x,
            None => {
                stats.reject(Reject::Malformed);
                m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                continue;
            }
        };
        if sender != agent {
            let redelivered = m.info().map(|i| i.delivered > 1).unwrap_or(false);
            if let Some(inb) = check(gate, stats, &m.payload, sender, kind, redelivered)
                && tx.send(inb).await.is_err()
            {
                return Ok(());
            }
        }
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// Admits one message and counts what became of it.
fn check(
    gate: &mut Gate,
    stats: &FleetStats,
    payload: &[u8],
    sender: &str,
    kind: Kind,
    redelivered: bool,
) -> Option<Inbound> {
    let env = match gate.admit(payload, sender, redelivered) {
        Admit::Use(e) => e,
        Admit::Duplicate => {
            inc(&stats.duplicates);
            return None;
        }
        Admit::Reject(why) => {
            warn!(
                "fleet: rejected a message on {sender}'s subject: {}",
                why.as_str()
            );
            stats.reject(why);
            return None;
        }
    };
    if env.kind != kind {
        stats.reject(Reject::SubjectMismatch);
        return None;
    }
    let batch = match kind {
        Kind::Obs => serde_json::from_str::<ObsBatch>(&env.body)
            .ok()
            .map(|b| (b.obs.len(), b)),
        Kind::Verdict => None,
    };
    match (kind, batch) {
        (Kind::Obs, Some((n, b))) => {
            inc(&stats.received);
            stats
                .received_obs
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            Some(Inbound::Obs {
                agent: env.agent,
                recs: b.obs,
            })
        }
        (Kind::Verdict, _) => match serde_json::from_str::<VerdictMsg>(&env.body) {
            Ok(msg) => {
                inc(&stats.received);
                inc(&stats.received_verdicts);
                Some(Inbound::Verdict {
                    agent: env.agent,
                    msg,
                    received_ms: super::envelope::now_ms(),
                })
            }
            Err(_) => {
                stats.reject(Reject::Malformed);
                None
            }
        },
        (Kind::Obs, None) => {
            stats.reject(Reject::Malformed);
            None
        }
    }
}
