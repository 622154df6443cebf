//! The fleet's counters: messages sent, acknowledged, received, rejected (by reason),
//! duplicates, and the connection's state. Lock-free atomics shared by the fleet's tasks and
//! the run loop; written every tick to `/run/flux-agent/<pin folder>.fleet.json`, which
//! `flux-agent stats` reads (and the metrics endpoint reads the atomics at each scrape).
//!
//! May touch: that one file.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use super::trust_list::Reject;

#[derive(Debug, Default)]
pub struct FleetStats {
    /// Messages (batches of observations, verdicts) signed and queued for the server.
    pub published: AtomicU64,
    /// Messages signed and not yet acknowledged by the server (a gauge: the publish task sets
    /// it). Grows while the broker is away, up to the outbox's bound.
    pub backlog: AtomicU64,
    /// Messages (batches of observations, verdicts) stored by the server for the first time.
    pub sent: AtomicU64,
    /// Publishes the server acknowledged as a duplicate of a stored one (a retry after a lost
    /// acknowledgement, dropped by `Nats-Msg-Id`).
    pub sent_duplicates: AtomicU64,
    /// Publishes that failed (broker down, timeout) and are retried.
    pub publish_retries: AtomicU64,
    /// Observation records dropped by sampling (docs/fleet.md, Sampling) or a full outbox.
    pub obs_dropped: AtomicU64,
    /// Other agents' messages that passed every check.
    pub received: AtomicU64,
    pub received_obs: AtomicU64,
    pub received_verdicts: AtomicU64,
    /// Redeliveries of a message already used (dropped).
    pub duplicates: AtomicU64,
    rejected: [AtomicU64; Reject::ALL.len()],
    /// Verdicts the fleet scorer made (any level; each names its contributors).
    pub fleet_verdicts: AtomicU64,
    /// Fleet verdicts that passed the block gate but were kept to a report (quorum or
    /// `--fleet-action report`).
    pub reports_only: AtomicU64,
    /// Fleet verdicts handed to the enforcer to block.
    pub enforced: AtomicU64,
    pub connected: AtomicBool,
}

/// What `flux-agent stats` shows (key `fleet` of `--json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSnapshot {
    pub agent: String,
    pub connected: bool,
    #[serde(default)]
    pub published: u64,
    #[serde(default)]
    pub backlog: u64,
    pub sent: u64,
    pub sent_duplicates: u64,
    pub publish_retries: u64,
    pub obs_dropped: u64,
    pub received: u64,
    pub received_obs: u64,
    pub received_verdicts: u64,
    pub duplicates: u64,
    /// `(reason, count)` for every [`Reject`] reason.
    pub rejected: Vec<(String, u64)>,
    #[serde(default)]
    pub fleet_verdicts: u64,
    pub reports_only: u64,
    pub enforced: u64,
}

impl FleetStats {
    pub fn reject(&self, why: Reject) {
        if let Some(c) = Reject::ALL
            .iter()
            .position(|r| *r == why)
            .and_then(|i| self.rejected.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(reason, count)` for every [`Reject`] reason, in [`Reject::ALL`]'s order.
    pub fn rejected(&self) -> impl Iterator<Item = (Reject, u64)> + '_ {
        Reject::ALL
            .iter()
            .zip(&self.rejected)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
    }

    pub fn snapshot(&self, agent: &str) -> FleetSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FleetSnapshot {
            agent: agent.to_owned(),
            connected: self.connected.load(Ordering::Relaxed),
            published: g(&self.published),
            backlog: g(&self.backlog),
            sent: g(&self.sent),
            sent_duplicates: g(&self.sent_duplicates),
            publish_retries: g(&self.publish_retries),
            obs_dropped: g(&self.obs_dropped),
            received: g(&self.received),
            received_obs: g(&self.received_obs),
            received_verdicts: g(&self.received_verdicts),
            duplicates: g(&self.duplicates),
            rejected: self
                .rejected()
                .map(|(r, n)| (r.as_str().to_owned(), n))
                .collect(),
            fleet_verdicts: g(&self.fleet_verdicts),
            reports_only: g(&self.reports_only),
            enforced: g(&self.enforced),
        }
    }
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Where a run with pins in `pin_dir` writes its fleet counters.
pub fn stats_path(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .map_or_else(|| "flux-agent".into(), |n| n.to_string_lossy().into_owned());
    Path::new(crate::control::CONTROL_DIR).join(format!("{name}.fleet.json"))
}

/// Writes the snapshot (whole file replaced: readers never see half of it).
pub fn write_snapshot(path: &Path, s: &FleetSnapshot) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap_or_default())?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_counted_by_reason() {
        let s = FleetStats::default();
        s.reject(Reject::Replay);
        s.reject(Reject::Replay);
        s.reject(Reject::BadSignature);
        inc(&s.sent);
        let snap = s.snapshot("a1");
        assert_eq!(snap.sent, 1);
        let get = |n: &str| snap.rejected.iter().find(|(r, _)| r == n).unwrap().1;
        assert_eq!(get("replay"), 2);
        assert_eq!(get("bad_signature"), 1);
        assert_eq!(get("stale"), 0);
    }
}
