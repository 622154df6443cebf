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
use flux_state::Source;
use log::{info, warn};
use serde::Serialize;

use crate::enforce::{
    guard::Guard,
    maps::{Added, BlocklistError, Maps, Spec, Target, normalize_domain},
    rate_queue::{Pending, Pushed, RateQueue},
    record::Recorder,
};
use flux_detect::score::{Level, Scorer, Verdict, key_state::MARK_BLOCKABLE};

#[derive(Clone, Debug)]
pub struct EnforceOptions {
    /// Report would-be blocks; write nothing.
    pub monitor: bool,
    /// Turn flux verdicts into blocks. `false` (`run --no-auto-block`): the scorer's verdicts
    /// block nothing, and the enforcer only keeps the maps (the front filters refilled at
    /// start, the verdict generation advanced and expired entries swept once a minute) for the
    /// blocks operators and feeds write.
    pub auto_block: bool,
    /// How long an automatic block lasts; renewed while the name keeps fluxing.
    pub ttl: Duration,
    /// New automatic blocks allowed per minute; past it, blocks wait in a bounded queue,
    /// highest score first, and an alert is raised (`crate::enforce::rate_queue`).
    pub max_per_minute: u32,
    /// Resolvers never to block, beside those in /etc/resolv.conf and those seen answering.
    pub resolvers: Vec<IpAddr>,
}

impl Default for EnforceOptions {
    fn default() -> Self {
        Self {
            monitor: false,
            auto_block: true,
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

/// How soon a flux name whose block is gone (`blocklist flush`, `remove`, expiry) is blocked
/// again on new evidence. Short, but not every response: a refused block (an allowlisted
/// name) is not retried on each packet.
const REBLOCK_AFTER: Duration = Duration::from_secs(2);

/// What a response of a name the enforcer blocked asks for, from the state of its map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing now.
    Nothing,
    /// Our entry is there: renew its expiry and add new addresses.
    Renew,
    /// The entry is gone (flushed, removed, swept) while the name is still flux: block again.
    Reblock,
}

/// The decision of [`Enforcer::on_response`]. `entry_source` is the source of the name's entry
/// in the map (`None`: no entry); `since` the time since the enforcer last acted on the name.
pub fn due(entry_source: Option<u8>, since: Duration) -> Due {
    match entry_source {
        Some(SOURCE_SCORER) if since >= REFRESH_EVERY => Due::Renew,
        // A manual or feed block on the name: the operator's; leave it.
        Some(_) => Due::Nothing,
        None if since >= REBLOCK_AFTER => Due::Reblock,
        None => Due::Nothing,
    }
}

/// Whether a key is still flux and past the block gate: what a waiting block and a re-block
/// need.
fn still_gated(scorer: &Scorer, key: &str) -> bool {
    scorer.level_of(key) == Some(Level::Flux)
        && scorer
            .state_of(key)
            .is_some_and(|st| st.marked(MARK_BLOCKABLE))
}

/// A key the enforcer blocked: when it last acted on it, and the score and reason it blocked
/// it for (a re-block after a flush writes them again).
#[derive(Clone, Debug)]
struct BlockedKey {
    last: Instant,
    score: f64,
    reason: String,
}

pub struct Enforcer {
    maps: Maps,
    opts: EnforceOptions,
    pub guard: Guard,
    queue: RateQueue,
    /// The window in which the cap alert was last raised (once a window).
    alerted_at: Option<Instant>,
    /// The queue-full drops already alerted about.
    drops_alerted: u64,
    /// The keys the enforcer blocked, and when it last acted on each (block, renewal or
    /// re-block). Kept while the key is flux, so a block removed under it is made again.
    blocked_keys: HashMap<String, BlockedKey>,
    last_tick: Instant,
    /// The write path: the state database first, then `maps`.
    recorder: Recorder,
}

impl Enforcer {
    pub fn new(pin_dir: &Path, opts: EnforceOptions) -> Result<Self, BlocklistError> {
        let maps = Maps::open_refilled(pin_dir)?;
        let guard = Guard::new(opts.resolvers.clone());
        Ok(Self {
            maps,
            queue: RateQueue::new(opts.max_per_minute, Instant::now()),
            opts,
            guard,
            alerted_at: None,
            drops_alerted: 0,
            blocked_keys: HashMap::new(),
            last_tick: Instant::now(),
            recorder: Recorder::without_db(),
        })
    }

    /// Whether the block on `target` (as an [`Action`] names it: an address, a network or a
    /// name) is in the maps and not expired now. `explain` asks it, so a block that expired or
    /// was removed since the enforcer made it is not reported as enforced.
    pub fn in_force(&self, target: &str) -> bool {
        let t = if target.contains('/') {
            Target::cidr(target)
        } else {
            Target::ip(target).or_else(|_| Target::domain(target))
        };
        matches!(t.map(|t| self.maps.get(&t)), Ok(Ok(Some(e))) if e.active(crate::enforce::maps::boot_ns()))
    }

    /// Records every block in `recorder`'s database before writing the maps.
    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = recorder;
        self
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
        if !self.opts.auto_block || v.level != Level::Flux || !v.block {
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
        let mut name_blockable = false;
        match normalize_domain(name) {
            Ok(d) if self.maps.domain_allowed(&d) => out.push(self.action(
                ActionKind::Guard,
                name,
                Outcome::Refused,
                Some(&Target::Domain(d)),
                "allowlisted".into(),
            )),
            Ok(d) => {
                name_blockable = true;
                self.apply(name, Target::Domain(d), &spec, out);
            }
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
        if name_blockable {
            let k = BlockedKey {
                last: Instant::now(),
                score,
                reason: reason.to_owned(),
            };
            self.blocked_keys.insert(name.to_owned(), k);
        }
        self.drain(scorer, out);
    }

    /// Writes one block, or queues it for the rate cap, or reports what would have been
    /// written. A renewal of an entry already there costs no budget.
    fn apply(&mut self, key: &str, t: Target, spec: &Spec, out: &mut Vec<Action>) {
        let previous = match self.maps.get(&t) {
            Ok(p) => p,
            Err(e) => {
                let why = e.to_string();
                out.push(self.action(ActionKind::Block, key, Outcome::Failed, Some(&t), why));
                return;
            }
        };
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
        if previous.is_some() {
            self.write(key, &t, spec, previous, out);
            return;
        }
        // Every new block goes through the queue, so that a higher-score one waiting there is
        // written first; `drain` writes what the budget allows.
        let pending = Pending {
            key: key.to_owned(),
            target: t.clone(),
            spec: spec.clone(),
        };
        let now = Instant::now();
        if self.queue.is_empty() && self.queue.has_budget(now) {
            self.queue.spend(now);
            self.write(key, &t, spec, None, out);
            return;
        }
        match self.queue.push(pending) {
            Pushed::AlreadyQueued => return,
            Pushed::DroppedNew | Pushed::DroppedLowest(_) => self.alert_drops(key, out),
            Pushed::Queued => {}
        }
        if self.queue.contains(&t) {
            self.alert_cap(key, now, out);
            out.push(self.action(
                ActionKind::Block,
                key,
                Outcome::RateCapped,
                Some(&t),
                spec.reason.clone(),
            ));
        }
    }

    /// The once-a-window alert that the cap is reached.
    fn alert_cap(&mut self, key: &str, now: Instant, out: &mut Vec<Action>) {
        if self
            .alerted_at
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.alerted_at = Some(now);
        let msg = format!(
            "more than {} new automatic blocks this minute; further blocks wait, highest score \
             first (raise --max-blocks-per-minute if this is expected)",
            self.opts.max_per_minute
        );
        out.push(self.action(ActionKind::Alert, key, Outcome::RateCapped, None, msg));
    }

    /// An alert for each queue-full drop.
    fn alert_drops(&mut self, key: &str, out: &mut Vec<Action>) {
        if self.queue.dropped == self.drops_alerted {
            return;
        }
        self.drops_alerted = self.queue.dropped;
        let msg = format!(
            "the queue of blocks waiting for the rate cap is full ({} waiting): the lowest-score \
             block was dropped ({} dropped since start)",
            self.queue.len(),
            self.queue.dropped
        );
        out.push(self.action(ActionKind::Alert, key, Outcome::RateCapped, None, msg));
    }

    /// Writes the waiting blocks the budget allows, highest score first, whose name is still
    /// flux and past the block gate (the others are dropped: the evidence went away).
    pub fn drain(&mut self, scorer: &Scorer, out: &mut Vec<Action>) {
        let now = Instant::now();
        while !self.queue.is_empty() && self.queue.has_budget(now) {
            let Some(p) = self.queue.pop_best() else {
                break;
            };
            if !still_gated(scorer, &p.key) {
                log::debug!(
                    "{} no longer flux: its waiting block of {} dropped",
                    p.key,
                    p.target
                );
                continue;
            }
            let previous = match self.maps.get(&p.target) {
                Ok(prev) => prev,
                Err(e) => {
                    let why = e.to_string();
                    let a = self.action(
                        ActionKind::Block,
                        &p.key,
                        Outcome::Failed,
                        Some(&p.target),
                        why,
                    );
                    out.push(a);
                    continue;
                }
            };
            if previous.is_none() {
                self.queue.spend(now);
            }
            self.write(&p.key, &p.target, &p.spec, previous, out);
        }
    }

    fn write(
        &mut self,
        key: &str,
        t: &Target,
        spec: &Spec,
        previous: Option<flux_common::BlockEntry>,
        out: &mut Vec<Action>,
    ) {
        let r = self
            .recorder
            .block(&mut self.maps, t, spec, Source::Scorer, previous);
        match r {
            Ok(added) => {
                // The log line is the log sink's, from this action (printed once).
                let what = if added == Added::New {
                    Outcome::Blocked
                } else {
                    Outcome::Refreshed
                };
                out.push(self.action(ActionKind::Block, key, what, Some(t), spec.reason.clone()));
            }
            Err(e) => {
                let why = e.to_string();
                out.push(self.action(ActionKind::Block, key, Outcome::Failed, Some(t), why));
            }
        }
    }

    /// A solicited response: for a name (or parent) the enforcer blocked and the scorer still
    /// rates flux past the block gate, renews the block and adds new addresses (at most once a
    /// minute), or, when the block is gone (`blocklist flush`, `remove`, expiry), blocks it
    /// again. Then writes what the rate cap lets through.
    pub fn on_response(&mut self, qname: &str, scorer: &Scorer, out: &mut Vec<Action>) {
        if !self.blocked_keys.is_empty() {
            self.renew_blocked_key(qname, scorer, out);
        }
        self.drain(scorer, out);
    }

    /// [`Self::on_response`]'s walk: the blocked key that covers `qname` (the name or a parent),
    /// renewed or blocked again when due. The parser's names are lowercase already, without the
    /// trailing dot, so the name is copied only when it is not (its copy, every response, was
    /// 2.0% of the capture thread at 150,000 responses a second).
    fn renew_blocked_key(&mut self, qname: &str, scorer: &Scorer, out: &mut Vec<Action>) {
        let name = key_form(qname);
        let mut rest = name.as_ref();
        loop {
            if let Some(k) = self.blocked_keys.get(rest).cloned() {
                if still_gated(scorer, rest) {
                    self.renew_or_reblock(rest, k, scorer, out);
                }
                break;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => break,
            }
        }
    }

    fn renew_or_reblock(
        &mut self,
        key: &str,
        k: BlockedKey,
        scorer: &Scorer,
        out: &mut Vec<Action>,
    ) {
        let entry = match self.maps.get(&Target::Domain(key.to_owned())) {
            Ok(e) => e,
            Err(_) => return,
        };
        let key = key.to_owned();
        match due(entry.map(|e| e.source), k.last.elapsed()) {
            Due::Nothing => {}
            Due::Renew => {
                // Renewed with the score and reason it was blocked for.
                let Some(e) = entry else { return };
                let score = f64::from(e.score_milli) / 1000.0;
                let reason = crate::enforce::maps::reason_text(&e);
                self.block_key(&key, score, &reason, scorer, out);
            }
            Due::Reblock => self.block_key(&key, k.score, &k.reason, scorer, out),
        }
    }

    /// Periodic work: writes waiting blocks the budget allows; once a minute, sweeps expired
    /// entries, re-reads the guard's addresses and forgets keys no longer flux.
    pub fn tick(&mut self, scorer: &Scorer, out: &mut Vec<Action>) {
        self.drain(scorer, out);
        if self.last_tick.elapsed() < REFRESH_EVERY {
            return;
        }
        self.last_tick = Instant::now();
        self.guard.refresh();
        self.blocked_keys
            .retain(|k, _| scorer.level_of(k) == Some(Level::Flux));
        if self.opts.monitor {
            return;
        }
        match self.recorder.expire(&mut self.maps) {
            Ok(gone) if gone > 0 => info!("removed {gone} expired blocks"),
            Ok(_) => {}
            Err(e) => warn!("sweeping expired blocks: {e}"),
        }
    }
}

/// `qname` as the blocked keys are written: lowercase, without the trailing dot; borrowed when
/// it is so already (the parser's names are).
fn key_form(qname: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = qname.trim_end_matches('.');
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        trimmed.to_ascii_lowercase().into()
    } else {
        trimmed.into()
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

#[cfg(test)]
mod tests {
    use super::*;
    use flux_common::SOURCE_MANUAL;

    #[test]
    fn a_name_is_looked_up_in_the_blocked_keys_form() {
        use std::borrow::Cow;
        assert!(matches!(
            key_form("www.example.com"),
            Cow::Borrowed("www.example.com")
        ));
        assert_eq!(key_form("WWW.Example.COM."), "www.example.com");
        assert_eq!(key_form("www.example.com."), "www.example.com");
        assert_eq!(key_form(""), "");
    }

    #[test]
    fn a_flux_name_whose_block_is_gone_is_blocked_again() {
        let s = Duration::from_secs;
        // After `blocklist flush` (no entry), new evidence blocks the name again, soon.
        assert_eq!(due(None, s(3)), Due::Reblock);
        assert_eq!(due(None, s(0)), Due::Nothing, "not on every packet");
        // Our entry: renewed once a minute.
        assert_eq!(due(Some(SOURCE_SCORER), s(10)), Due::Nothing);
        assert_eq!(due(Some(SOURCE_SCORER), s(61)), Due::Renew);
        // An operator's block on the name is left alone.
        assert_eq!(due(Some(SOURCE_MANUAL), s(600)), Due::Nothing);
    }
}
