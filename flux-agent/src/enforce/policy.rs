//! From verdict to block. When the scorer says flux for a name that is not allowlisted, the
//! enforcer blocks the name and the addresses it was seen resolving to, through
//! [`crate::enforce::maps::Maps`]. Here are the guards (addresses that must never be blocked), the
//! cap on new blocks per minute, monitor mode, the expiry refresh while a name keeps fluxing,
//! and the sweep of expired entries.
//!
//! Every decision becomes an [`Action`], published on the event bus beside the verdicts as a
//! `block`, `guard` or `alert` event; the log sink prints it (the enforcer logs none itself).

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use flux_common::SOURCE_SCORER;
use log::{info, warn};
use serde::Serialize;

use crate::enforce::maps::{Added, BlocklistError, Maps, Spec, Target, normalize_domain};
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

/// Addresses that must never be blocked, and why.
#[derive(Default)]
pub struct Guard {
    own: HashSet<IpAddr>,
    resolvers: HashSet<IpAddr>,
    configured_resolvers: Vec<IpAddr>,
    gateways: HashSet<IpAddr>,
}

impl Guard {
    pub fn new(configured_resolvers: Vec<IpAddr>) -> Self {
        let mut g = Self {
            configured_resolvers,
            ..Self::default()
        };
        g.refresh();
        g
    }

    /// Re-reads the host's addresses, resolvers and gateways (they change with DHCP, VPNs).
    pub fn refresh(&mut self) {
        self.own = own_addresses();
        self.gateways = default_gateways();
        self.resolvers
            .extend(resolv_conf_servers("/etc/resolv.conf"));
        self.resolvers
            .extend(self.configured_resolvers.iter().copied());
    }

    /// A server seen answering DNS: a resolver of this host.
    pub fn note_resolver(&mut self, ip: IpAddr) {
        self.resolvers.insert(ip);
    }

    /// Why `ip` must not be blocked, or `None`.
    pub fn refuse(&self, ip: &IpAddr) -> Option<&'static str> {
        let special = match ip {
            IpAddr::V4(a) => {
                if a.is_loopback() {
                    Some("loopback")
                } else if a.is_link_local() {
                    Some("link-local")
                } else if a.is_multicast() || a.is_broadcast() {
                    Some("multicast or broadcast")
                } else if a.is_unspecified() {
                    Some("unspecified")
                } else {
                    None
                }
            }
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    return self.refuse(&IpAddr::V4(v4));
                }
                if a.is_loopback() {
                    Some("loopback")
                } else if a.is_unicast_link_local() {
                    Some("link-local")
                } else if a.is_multicast() {
                    Some("multicast")
                } else if a.is_unspecified() {
                    Some("unspecified")
                } else {
                    None
                }
            }
        };
        special.or_else(|| {
            if self.own.contains(ip) {
                Some("one of this host's addresses")
            } else if self.resolvers.contains(ip) {
                Some("a DNS resolver of this host")
            } else if self.gateways.contains(ip) {
                Some("a default gateway")
            } else {
                None
            }
        })
    }
}

/// Addresses of every local interface (getifaddrs).
fn own_addresses() -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of the family it says.
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    out.insert(IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes()));
                }
                libc::AF_INET6 => {
                    let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    out.insert(IpAddr::from(sa.sin6_addr.s6_addr));
                }
                _ => {}
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs above.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// `nameserver` lines of a resolv.conf.
pub fn resolv_conf_servers(path: impl AsRef<Path>) -> Vec<IpAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| {
            let addr = rest.split_whitespace().next()?;
            addr.split('%').next()?.parse().ok()
        })
        .collect()
}

/// Next hops of the default routes, from /proc/net/route and /proc/net/ipv6_route.
fn default_gateways() -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/route") {
        out.extend(parse_route_v4(&t));
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/ipv6_route") {
        out.extend(parse_route_v6(&t));
    }
    out
}

fn parse_route_v4(text: &str) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dest, gw, mask) = (f.get(1)?, f.get(2)?, f.get(7)?);
            if *dest != "00000000" || *mask != "00000000" {
                return None;
            }
            // Host-order hex of a network-order address.
            let g = u32::from_str_radix(gw, 16).ok()?;
            (g != 0).then(|| IpAddr::from(g.to_le_bytes()))
        })
        .collect()
}

fn parse_route_v6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dest, plen, hop) = (f.first()?, f.get(1)?, f.get(4)?);
            if dest.chars().any(|c| c != '0') || *plen != "00" {
                return None;
            }
            let v = u128::from_str_radix(hop, 16).ok()?;
            (v != 0).then(|| IpAddr::from(v.to_be_bytes()))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_refuses_special_and_local_addresses() {
        let mut g = Guard::new(vec!["192.0.2.53".parse().unwrap()]);
        g.note_resolver("198.51.100.53".parse().unwrap());
        for (ip, want) in [
            ("127.0.0.1", Some("loopback")),
            ("::1", Some("loopback")),
            ("169.254.1.1", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("224.0.0.251", Some("multicast or broadcast")),
            ("255.255.255.255", Some("multicast or broadcast")),
            ("ff02::1", Some("multicast")),
            ("0.0.0.0", Some("unspecified")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("192.0.2.53", Some("a DNS resolver of this host")),
            ("198.51.100.53", Some("a DNS resolver of this host")),
            ("203.0.113.7", None),
        ] {
            assert_eq!(g.refuse(&ip.parse().unwrap()), want, "{ip}");
        }
        g.own.insert("203.0.113.9".parse().unwrap());
        assert_eq!(
            g.refuse(&"203.0.113.9".parse().unwrap()),
            Some("one of this host's addresses")
        );
    }

    #[test]
    fn routes_and_resolv_conf_parse() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_route_v4(v4),
            vec!["10.0.2.1".parse::<IpAddr>().unwrap()]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000000000000000001 00000400 00000000 00000000 00000003 eth0\n\
                  fd770000000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000000 00000000 00000001 eth0\n";
        assert_eq!(
            parse_route_v6(v6),
            vec!["fe80::1".parse::<IpAddr>().unwrap()]
        );
        let dir = std::env::temp_dir().join(format!("flux-resolv-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# x\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nsearch example\n",
        )
        .unwrap();
        assert_eq!(
            resolv_conf_servers(&dir),
            vec![
                "10.0.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        let _ = std::fs::remove_file(dir);
    }
}
