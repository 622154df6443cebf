//! From verdict to block. When the scorer says flux for a name that is not allowlisted, the
//! enforcer blocks the name and the addresses it was seen resolving to, through
//! [`crate::enforce::maps::Maps`]. Here are the guards (addresses that must never be blocked), the
//! cap on new blocks per minute, monitor mode, the expiry refresh while a name keeps fluxing,
//! and the sweep of expired entries.
//!
//! Every decision becomes an [`Action`], published on the event bus beside the verdicts as a
//! `block`, `guard` or `alert` event; the log sink prints it (the enforcer logs none itself).

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use flux_common::SOURCE_SCORER;
use log::{info, warn};
use serde::Serialize;

use crate::enforce::{
    guard::Guard,
    maps::{Added, BlocklistError, Maps, Spec, Target, normalize_domain},
};
use flux_detect::score::{Level, Scorer, Verdict};

#[derive(Clone, Debug)]
pub struct EnforceOptions {
    /// Report would-be blocks; write nothing.
    pub monitor: bool,
    /// How long an automatic block lasts; renewed while the name keeps fluxing.
    pub ttl: Duration,
    /// New automatic blocks allowed per minute; past it, blocks wait and an alert is raised.
    pub max_per_minute: u32,
    /// Resolvers never to block, beside those in /etc/resolv.conf and those seen answering.
    pub resolvers: Vec<IpAddr>,
}

impl Default for EnforceOptions {
    fn default() -> Self {
        Self {
            monitor: false,
            ttl: Duration::from_secs(24 * 3600),
            max_per_minute: 60,
            resolvers: Vec::new(),
        }
    }
}

/// Which event an [`Action`] is on the bus (`crate::pipeline::events::Event`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionKind {
    /// A block written, renewed, capped, failed, or (monitor mode) only reported.
    Block,
    /// A block refused: the target is allowlisted or must never be blocked.
    Guard,
    /// Something an operator must look at (the rate cap was reached).
    Alert,
}

/// What happened to the target.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Blocked,
    Refreshed,
    WouldBlock,
    Refused,
    RateCapped,
    Failed,
}

/// What is blocked: the kinds of [`Target`].
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Domain,
    Ip,
    Cidr,
}

impl TargetKind {
    pub fn of(t: &Target) -> Self {
        match t {
            Target::Ip(_) => Self::Ip,
            Target::Cidr(..) => Self::Cidr,
            Target::Domain(_) => Self::Domain,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Domain => "domain",
            Self::Ip => "ip",
            Self::Cidr => "cidr",
        }
    }
}

/// What the enforcer did, or would have done, about one target: a `block`, `guard` or `alert`
/// event (the `"type"` tag is the event's, from [`Action::kind`]).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Action {
    #[serde(skip)]
    pub kind: ActionKind,
    #[serde(serialize_with = "flux_detect::timestamp::serialize")]
    pub ts: SystemTime,
    /// The flux key this is about.
    pub domain: String,
    pub action: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_kind: Option<TargetKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub reason: String,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Guard => "guard",
            Self::Alert => "alert",
        }
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Refreshed => "refreshed",
            Self::WouldBlock => "would_block",
            Self::Refused => "refused",
            Self::RateCapped => "rate_capped",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:<6} {:<12} {} {} ({}): {}",
            flux_detect::timestamp::rfc3339(self.ts),
            self.kind.as_str(),
            self.action.as_str(),
            self.target_kind.map(TargetKind::as_str).unwrap_or(""),
            self.target.as_deref().unwrap_or(""),
            self.domain,
            self.reason
        )
    }
}

/// Seconds between refreshes of one name's block, and between sweeps.
const REFRESH_EVERY: Duration = Duration::from_secs(60);

pub struct Enforcer {
    maps: Maps,
    opts: EnforceOptions,
    pub guard: Guard,
    window_start: Instant,
    new_in_window: u32,
    alerted_in_window: bool,
    refreshed: HashMap<String, Instant>,
    last_tick: Instant,
}

impl Enforcer {
    pub fn new(pin_dir: &Path, opts: EnforceOptions) -> Result<Self, BlocklistError> {
        let maps = Maps::open(pin_dir)?;
        let guard = Guard::new(opts.resolvers.clone());
        Ok(Self {
            maps,
            opts,
            guard,
            window_start: Instant::now(),
            new_in_window: 0,
            alerted_in_window: false,
            refreshed: HashMap::new(),
            last_tick: Instant::now(),
        })
    }

    fn action(
        &self,
        kind: ActionKind,
        domain: &str,
        action: Outcome,
        target: Option<&Target>,
        reason: String,
    ) -> Action {
        Action {
            kind,
            ts: SystemTime::now(),
            domain: domain.to_owned(),
            action,
            target_kind: target.map(TargetKind::of),
            target: target.map(ToString::to_string),
            reason,
        }
    }

    /// A verdict from the scorer: blocks its name and addresses when it passes the block gate
    /// (`Verdict::block`: flux on the key's own evidence, held over two re-scores), which is
    /// stricter than the report at `flux`. The scorer emits a verdict when the gate opens, so
    /// a key reported flux earlier is blocked then.
    pub fn on_verdict(&mut self, v: &Verdict, scorer: &Scorer, out: &mut Vec<Action>) {
        if v.level != Level::Flux || !v.block {
            return;
        }
        if v.allowlisted {
            out.push(self.action(
                ActionKind::Guard,
                &v.domain,
                Outcome::Refused,
                None,
                format!(
                    "allowlisted ({})",
                    v.allowlist_match.as_deref().unwrap_or("built-in list")
                ),
            ));
            return;
        }
        let reason = summary(v);
        self.block_key(&v.domain, v.score, &reason, scorer, out);
    }

    /// Blocks (or renews) a flux key's name and its addresses.
    fn block_key(
        &mut self,
        name: &str,
        score: f64,
        reason: &str,
        scorer: &Scorer,
        out: &mut Vec<Action>,
    ) {
        let spec = Spec {
            source: SOURCE_SCORER,
            ttl: Some(self.opts.ttl),
            reason: reason.to_owned(),
            score: Some(score),
        };
        match normalize_domain(name) {
            Ok(d) if self.maps.domain_allowed(&d) => out.push(self.action(
                ActionKind::Guard,
                name,
                Outcome::Refused,
                Some(&Target::Domain(d)),
                "allowlisted".into(),
            )),
            Ok(d) => self.apply(name, Target::Domain(d), &spec, out),
            Err(why) => out.push(self.action(
                ActionKind::Guard,
                name,
                Outcome::Refused,
                None,
                format!("name not blockable: {why}"),
            )),
        }
        for ip in scorer.block_targets(name, SystemTime::now()) {
            let t = Target::Ip(ip);
            if let Some(why) = self.guard.refuse(&ip) {
                out.push(self.action(
                    ActionKind::Guard,
                    name,
                    Outcome::Refused,
                    Some(&t),
                    why.into(),
                ));
            } else if self.maps.address_allowed(&ip) {
                out.push(self.action(
                    ActionKind::Guard,
                    name,
                    Outcome::Refused,
                    Some(&t),
                    "allowlisted".into(),
                ));
            } else {
                self.apply(name, t, &spec, out);
            }
        }
        self.refreshed.insert(name.to_owned(), Instant::now());
    }

    /// Writes one block, within the rate cap, or reports what would have been written.
    fn apply(&mut self, key: &str, t: Target, spec: &Spec, out: &mut Vec<Action>) {
        let previous = match self.maps.get(&t) {
            Ok(p) => p,
            Err(e) => {
                let why = e.to_string();
                out.push(self.action(ActionKind::Block, key, Outcome::Failed, Some(&t), why));
                return;
            }
        };
        let existing = previous.is_some();
        if self.opts.monitor {
            out.push(self.action(
                ActionKind::Block,
                key,
                Outcome::WouldBlock,
                Some(&t),
                spec.reason.clone(),
            ));
            return;
        }
        if !existing {
            if self.window_start.elapsed() >= Duration::from_secs(60) {
                self.window_start = Instant::now();
                self.new_in_window = 0;
                self.alerted_in_window = false;
            }
            if self.new_in_window >= self.opts.max_per_minute {
                if !self.alerted_in_window {
                    self.alerted_in_window = true;
                    let msg = format!(
                        "more than {} new automatic blocks this minute; further blocks wait \
                         (raise --max-blocks-per-minute if this is expected)",
                        self.opts.max_per_minute
                    );
                    out.push(self.action(ActionKind::Alert, key, Outcome::RateCapped, None, msg));
                }
                out.push(self.action(
                    ActionKind::Block,
                    key,
                    Outcome::RateCapped,
                    Some(&t),
                    spec.reason.clone(),
                ));
                return;
            }
            self.new_in_window += 1;
        }
        match self.maps.write(&t, spec, previous) {
            Ok(added) => {
                // The log line is the log sink's, from this action (printed once).
                let what = if added == Added::New {
                    Outcome::Blocked
                } else {
                    Outcome::Refreshed
                };
                out.push(self.action(ActionKind::Block, key, what, Some(&t), spec.reason.clone()));
            }
            Err(e) => {
                let why = e.to_string();
                out.push(self.action(ActionKind::Block, key, Outcome::Failed, Some(&t), why));
            }
        }
    }

    /// A response the kernel flagged blocked: renews the block of the name it matched, and adds
    /// new addresses, while the scorer still says flux. At most once a minute per name.
    pub fn on_blocked_response(&mut self, qname: &str, scorer: &Scorer, out: &mut Vec<Action>) {
        let name = qname.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = name.as_str();
        loop {
            if scorer.level_of(rest) == Some(Level::Flux) {
                let due = self
                    .refreshed
                    .get(rest)
                    .is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
                if !due {
                    return;
                }
                let ours = match self.maps.get(&Target::Domain(rest.to_owned())) {
                    Ok(Some(e)) if e.source == SOURCE_SCORER => Some(e),
                    _ => None,
                };
                if let Some(e) = ours {
                    // Renewed with the score and reason it was blocked for.
                    let key = rest.to_owned();
                    let score = f64::from(e.score_milli) / 1000.0;
                    let reason = crate::enforce::maps::reason_text(&e);
                    self.block_key(&key, score, &reason, scorer, out);
                }
                return;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return,
            }
        }
    }

    /// Periodic work: sweep expired entries and re-read the guard's addresses, once a minute.
    pub fn tick(&mut self) {
        if self.last_tick.elapsed() < REFRESH_EVERY {
            return;
        }
        self.last_tick = Instant::now();
        self.guard.refresh();
        self.refreshed.retain(|_, t| t.elapsed() < REFRESH_EVERY);
        if self.opts.monitor {
            return;
        }
        match self.maps.sweep_expired() {
            Ok(gone) if !gone.is_empty() => info!("removed {} expired blocks", gone.len()),
            Ok(_) => {}
            Err(e) => warn!("sweeping expired blocks: {e}"),
        }
    }
}

/// A short reason for the entry: the top contributions.
fn summary(v: &Verdict) -> String {
    let mut parts: Vec<&str> = v.reasons.iter().take(2).map(|r| r.feature).collect();
    if v.double_flux {
        parts.insert(0, "double flux");
    }
    if parts.is_empty() {
        "fast flux".into()
    } else {
        parts.join(", ")
    }
}
