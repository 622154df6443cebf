//! A simulated fleet agent: the agent's own link ([`flux_agent::fleet::nats_link`]: signing,
//! `Nats-Msg-Id`, retries, the durable consumer, the trust checks) on a thread of its own in a
//! namespace, without the capture or the scorer. The delivery tests drive verdicts through it
//! while the broker restarts; the fleet bench runs fifty of them.
//!
//! May touch: the network of the namespace it runs in.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc,
    },
    thread,
    time::Duration,
};

use flux_agent::fleet::{
    envelope::{VerdictMsg, now_ms, read_signing_key},
    fleet_stats::FleetStats,
    nats_link::{self, Inbound, LinkConfig, Outgoing},
    trust_list::{Gate, TrustList},
};

use crate::Netns;

pub struct SimAgent {
    pub id: String,
    pub stats: Arc<FleetStats>,
    tx: Option<tokio::sync::mpsc::Sender<Outgoing>>,
    /// What the link admitted from the other agents.
    pub inbound: std_mpsc::Receiver<Inbound>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SimAgent {
    /// Starts agent `id` in `ns`, connecting to `url` with its nkey seed file `creds`, signing
    /// with `key`, checking with `trust`.
    pub fn start(ns: &Netns, url: &str, id: &str, creds: &Path, key: &Path, trust: &Path) -> Self {
        let cfg = LinkConfig {
            url: url.to_owned(),
            nkey_seed: Some(
                std::fs::read_to_string(creds)
                    .expect("creds")
                    .trim()
                    .to_owned(),
            ),
            agent: id.to_owned(),
            key: read_signing_key(key).expect("key"),
            gate: Gate::new(TrustList::read(trust).expect("trust")),
            stats: Arc::default(),
        };
        let stats = Arc::clone(&cfg.stats);
        let (tx, out_rx) = tokio::sync::mpsc::channel(4096);
        let (in_tx_std, inbound) = std_mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = ns.spawn_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let (in_tx, mut in_rx) = tokio::sync::mpsc::channel(4096);
                let tasks = nats_link::start(cfg, out_rx, in_tx).await.expect("link");
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                while !stop2.load(Ordering::Relaxed) {
                    tokio::select! {
                        Some(inb) = in_rx.recv() => { let _ = in_tx_std.send(inb); }
                        _ = tick.tick() => {}
                    }
                }
                for t in tasks {
                    t.abort();
                }
            });
        });
        Self {
            id: id.to_owned(),
            stats,
            tx: Some(tx),
            inbound,
            stop,
            thread: Some(thread),
        }
    }

    /// Hands one verdict to the link (it publishes it until the server takes it).
    pub fn send_verdict(&self, domain: &str) {
        let msg = VerdictMsg {
            domain: domain.to_owned(),
            level: "flux".into(),
            score: 1.0,
            verdict_ts_ms: now_ms(),
            target: None,
        };
        if let Some(tx) = &self.tx {
            tx.blocking_send(Outgoing::Verdict(msg))
                .expect("link running");
        }
    }

    /// Hands one observation to the link.
    pub fn send_obs(&self, rec: flux_agent::fleet::envelope::ObsRec) {
        if let Some(tx) = &self.tx {
            let _ = tx.blocking_send(Outgoing::Obs(rec, false));
        }
    }

    /// Everything admitted so far, without waiting.
    pub fn drain(&self) -> Vec<Inbound> {
        self.inbound.try_iter().collect()
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.tx = None;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
