//! Loading the eBPF object, pinning its maps, and attaching the XDP program.
//!
//! Everything that can go wrong for a user (privileges, old kernel, unknown interface, another
//! XDP program in the way, a second agent on the same pin folder, a foreign pin) becomes a
//! [`LoadError`] with a message that says what to do.
//!
//! Enforcement outlives the agent: each XDP link is pinned next to the maps
//! (`xdp_link_<iface>`), so the program keeps running when the agent exits or crashes. A
//! restarted agent swaps its freshly loaded program into the pinned link (`bpf_link_update`), so
//! there is no moment without a program. With `--egress`, a TC egress program is attached over
//! tcx beside it and pinned the same way (`tc_link_<iface>`). `flux-agent unload` ([`unload`])
//! detaches and unpins.
//! A start that fails half-way removes what it attached.
//!
//! Layout: this file holds the options, the errors and [`load`]; `loader/preflight.rs` the
//! privilege and kernel checks, `loader/pin_folder.rs` bpffs and the pin folder,
//! `loader/attach.rs` attaching and rollback, `loader/unloading.rs` `flux-agent unload`.
//! May touch: bpffs, netlink and the BPF syscalls (through aya); no policy.

mod attach;
mod pin_folder;
mod preflight;
mod unloading;

use std::{fs::File, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, Xdp},
    util::KernelVersion,
};
use flux_common::{
    Config, DOMAIN_ACTION_DROP, DOMAIN_ACTION_NXDOMAIN, GLOBAL_CONFIG, MAP_EVENTS, MATCH_DROP,
    MATCH_MARK, MATCH_OFF, MAX_DNS_PORTS, PROG_EGRESS, PROG_XDP,
};
use log::info;

use crate::{EBPF_OBJECT, kernel::interfaces::Interface};
pub use attach::record_host_mac;
pub use pin_folder::BPFFS_ROOT;
pub use pin_folder::{TC_LINK_PREFIX, XDP_LINK_PREFIX, lock_pin_dir, tc_link_pin, xdp_link_pin};
use pin_folder::{
    existing_map_pins, prepare_pin_dir, remove_created_dirs, remove_map_pins, remove_map_pins_but,
};
pub use preflight::{caps_sufficient, check_egress_kernel, check_kernel_version, preflight};
use preflight::{classify_load_error, errno_in};
pub use unloading::{UnloadError, Unloaded, unload};

/// Where maps are pinned unless told otherwise (the xdp-tools convention: one folder per tool).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/flux-agent";

/// The oldest kernel with every helper the program uses: `bpf_xdp_load_bytes` (5.18); ring
/// buffers (5.8) and BPF links for XDP (5.9) come earlier.
pub const MIN_KERNEL: (u8, u8) = (5, 18);

/// `--egress` attaches over tcx, which came in Linux 6.6.
pub const MIN_KERNEL_EGRESS: (u8, u8) = (6, 6);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "permission denied: loading XDP programs needs root, or CAP_BPF plus CAP_NET_ADMIN \
         (try `sudo flux-agent ...` or `cargo xtask run`)"
    )]
    PermissionDenied,
    #[error(
        "kernel {found} is too old: flux-agent needs Linux {}.{} or newer (BPF ring buffer and \
         bpf_xdp_load_bytes)",
        MIN_KERNEL.0,
        MIN_KERNEL.1
    )]
    KernelTooOld { found: String },
    #[error(
        "the kernel rejected a BPF feature flux-agent needs ({0}); use Linux 5.18 or newer with BPF enabled"
    )]
    MissingKernelFeature(String),
    #[error("no such interface '{0}' (list them with `ip link`)")]
    UnknownInterface(String),
    #[error(
        "interface {iface} already has an XDP program (id {prog_id}) attached by another tool; \
         rerun with --force to replace it"
    )]
    XdpBusy { iface: String, prog_id: u32 },
    #[error(
        "interface {iface} already has an XDP program ({PROG_XDP}, id {prog_id}) attached by \
         another flux-agent instance{}; stop that one (and `flux-agent unload` its pin folder), \
         run this one with its --pin-dir, or rerun with --force to replace it",
        .pin_dir.as_ref().map(|d| format!(" with pin folder {}", d.display())).unwrap_or_default()
    )]
    OtherAgent {
        iface: String,
        prog_id: u32,
        pin_dir: Option<PathBuf>,
    },
    #[error(
        "another flux-agent is already running with pin folder {0}; stop it first, or give this \
         one its own --pin-dir"
    )]
    AlreadyRunning(PathBuf),
    #[error("cannot use pin folder {path}: {reason}")]
    PinDir { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Pin(#[from] crate::kernel::pins::PinError),
    #[error(
        "the TC egress program (query matching, --egress) needs Linux {}.{} or newer (tcx links); this is {found}; --accept-unsolicited runs without it",
        MIN_KERNEL_EGRESS.0,
        MIN_KERNEL_EGRESS.1
    )]
    EgressUnsupported { found: String },
    #[error("failed to attach XDP to {iface} in {mode} mode: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("failed to load the eBPF object: {0}")]
    Ebpf(String),
    #[error("cannot write map {map}: {reason}")]
    MapWrite { map: &'static str, reason: String },
}

/// `--xdp-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    Native,
    Skb,
    /// Native, falling back to skb with a warning.
    #[default]
    Auto,
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" | "drv" => Ok(Self::Native),
            "skb" | "generic" => Ok(Self::Skb),
            "auto" => Ok(Self::Auto),
            other => Err(format!("unknown XDP mode '{other}' (native, skb or auto)")),
        }
    }
}

/// `--block-action`: what the kernel does with a DNS response for a blocked name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BlockAction {
    /// Answer NXDOMAIN in place.
    #[default]
    Nxdomain,
    /// Drop the response.
    Drop,
}

impl std::str::FromStr for BlockAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nxdomain" => Ok(Self::Nxdomain),
            "drop" => Ok(Self::Drop),
            other => Err(format!("unknown block action '{other}' (nxdomain or drop)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub pin_dir: PathBuf,
    /// Source ports counted as DNS; at most [`MAX_DNS_PORTS`].
    pub dns_ports: Vec<u16>,
    /// Ring-buffer size override in bytes (power of two, page multiple).
    pub ring_buf_bytes: Option<u32>,
    /// Capacity overrides of the blocklist maps (`run --max-blocked-*`); effective when the
    /// maps are created, not when pins are reused.
    pub map_sizes: MapSizes,
    pub block_action: BlockAction,
    /// Match blocks but drop and rewrite nothing (`--monitor`).
    pub monitor: bool,
    /// Also drop packets leaving for blocked addresses (`--egress`), in the TC egress program.
    pub egress: bool,
    /// Trust only replies to queries that left (the TC egress program records them).
    pub queries: QueryMatch,
}

/// A capacity asked for a map whose pin was reused keeps the pinned map's: say so.
fn warn_reused_sizes(opts: &LoadOptions, pins_before: &[String]) {
    for (name, want) in opts.map_sizes.overrides() {
        if !pins_before.iter().any(|p| p == name) {
            continue;
        }
        let have = aya::maps::MapData::from_pin(opts.pin_dir.join(name))
            .ok()
            .and_then(|d| d.info().ok())
            .map(|i| i.max_entries());
        if let Some(have) = have.filter(|h| *h != want) {
            log::warn!(
                "{name} is pinned with {have} entries and is reused: the capacity asked ({want}) \
                 takes effect after `flux-agent unload` (blocks come back from the state database)"
            );
        }
    }
}

/// Capacity overrides of the blocklist maps; `None` keeps the compiled default
/// (`flux_common::MAX_BLOCKED_*`). Both address families get the same size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapSizes {
    pub blocked_ips: Option<u32>,
    pub blocked_cidrs: Option<u32>,
    pub blocked_domains: Option<u32>,
}

impl MapSizes {
    /// `(map name, capacity)` for every override.
    pub fn overrides(&self) -> Vec<(&'static str, u32)> {
        use flux_common::{
            MAP_BLOCKED_CIDR_V4, MAP_BLOCKED_CIDR_V6, MAP_BLOCKED_DOMAINS, MAP_BLOCKED_V4,
            MAP_BLOCKED_V6,
        };
        let mut out = Vec::new();
        if let Some(n) = self.blocked_ips {
            out.extend([(MAP_BLOCKED_V4, n), (MAP_BLOCKED_V6, n)]);
        }
        if let Some(n) = self.blocked_cidrs {
            out.extend([(MAP_BLOCKED_CIDR_V4, n), (MAP_BLOCKED_CIDR_V6, n)]);
        }
        if let Some(n) = self.blocked_domains {
            out.push((MAP_BLOCKED_DOMAINS, n));
        }
        out
    }
}

/// What XDP does with a DNS reply no recorded query matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueryMatch {
    /// No matching: every reply is taken as it comes (`--accept-unsolicited`; a passive
    /// sensor that never sees the queries leave).
    #[default]
    Off,
    /// Marked unsolicited in its record and counted; userspace never scores it.
    Mark,
    /// ...and dropped (`--drop-unsolicited`).
    Drop,
}

impl LoadOptions {
    /// Whether the TC egress program is loaded and attached: to drop (`--egress`) or to record
    /// queries.
    pub fn wants_egress(&self) -> bool {
        self.egress || self.queries != QueryMatch::Off
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            dns_ports: vec![53],
            ring_buf_bytes: None,
            map_sizes: MapSizes::default(),
            block_action: BlockAction::default(),
            monitor: false,
            egress: false,
            queries: QueryMatch::Off,
        }
    }
}

/// Which hook an attachment is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    /// TC egress, over tcx.
    Egress,
}

/// An attachment made by this agent.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub iface: Interface,
    pub hook: Hook,
    /// XDP: native, skb or pinned (taken over); egress: tcx or pinned.
    pub mode: &'static str,
    /// Where its link is pinned.
    pub pin: PathBuf,
    /// The link was already pinned by an earlier run; this run swapped its program in.
    pub took_over: bool,
}

/// The loaded object, holding the pin-folder lock and the links it attached.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub pin_dir: PathBuf,
    pub attachments: Vec<Attachment>,
    /// The TC egress program is loaded and goes on every interface XDP does.
    egress: bool,
    /// The map pins that existed before this load: a failed start removes every other one.
    pins_before: Vec<String>,
    /// The folders this load created (the pin folder, missing parents), deepest first.
    created_dirs: Vec<PathBuf>,
    _lock: File,
}

/// Builds the load-time config from the requested ports and block action.
pub fn config_for(ports: &[u16], action: BlockAction) -> Result<Config, LoadError> {
    if ports.is_empty() || ports.len() > MAX_DNS_PORTS {
        return Err(LoadError::Config(format!(
            "between 1 and {MAX_DNS_PORTS} DNS ports, got {}",
            ports.len()
        )));
    }
    if ports.contains(&0) {
        return Err(LoadError::Config("port 0 is not a DNS port".into()));
    }
    let mut config = Config {
        dns_ports: [0; MAX_DNS_PORTS],
        dns_port_count: ports.len() as u32,
        domain_action: match action {
            BlockAction::Nxdomain => DOMAIN_ACTION_NXDOMAIN,
            BlockAction::Drop => DOMAIN_ACTION_DROP,
        },
        monitor: 0,
        match_queries: MATCH_OFF,
        egress_block: 0,
    };
    for (slot, port) in config.dns_ports.iter_mut().zip(ports) {
        *slot = *port;
    }
    Ok(config)
}

/// Loads and verifies the program and creates (or reuses) the pinned maps. Attaches nothing.
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    preflight()?;
    let egress = opts.wants_egress();
    if egress {
        check_egress_kernel(
            KernelVersion::current()
                .map_err(|e| LoadError::Ebpf(format!("kernel version: {e}")))?,
        )?;
    }
    let mut config = config_for(&opts.dns_ports, opts.block_action)?;
    config.monitor = u32::from(opts.monitor);
    config.egress_block = u32::from(opts.egress);
    config.match_queries = match opts.queries {
        QueryMatch::Off => MATCH_OFF,
        QueryMatch::Mark => MATCH_MARK,
        QueryMatch::Drop => MATCH_DROP,
    };
    let created_dirs = prepare_pin_dir(&opts.pin_dir)?;
    let pins_before = existing_map_pins(&opts.pin_dir);
    load_into(
        opts,
        &config,
        egress,
        pins_before.clone(),
        created_dirs.clone(),
    )
    .inspect_err(|_| {
        // Nothing of this run survives a failed load: maps it pinned, folders it created.
        remove_map_pins_but(&opts.pin_dir, &pins_before);
        remove_created_dirs(&created_dirs);
    })
}

/// [`load`] once the pin folder exists: lock it, check its pins, load the programs.
fn load_into(
    opts: &LoadOptions,
    config: &Config,
    egress: bool,
    pins_before: Vec<String>,
    created_dirs: Vec<PathBuf>,
) -> Result<Loaded, LoadError> {
    let lock = lock_pin_dir(&opts.pin_dir)
        .map_err(|e| LoadError::PinDir {
            path: opts.pin_dir.clone(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| LoadError::AlreadyRunning(opts.pin_dir.clone()))?;
    crate::kernel::pins::check_folder(&opts.pin_dir)?;

    let mut loader = EbpfLoader::new();
    loader
        .default_map_pin_directory(&opts.pin_dir)
        .override_global(GLOBAL_CONFIG, config, true);
    if let Some(bytes) = opts.ring_buf_bytes {
        loader.map_max_entries(MAP_EVENTS, bytes);
    }
    for (name, size) in opts.map_sizes.overrides() {
        loader.map_max_entries(name, size);
    }
    let mut ebpf = loader
        .load(EBPF_OBJECT)
        .map_err(|e| classify_load_error(&e))?;
    warn_reused_sizes(opts, &pins_before);
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_XDP)
        .ok_or_else(|| LoadError::Ebpf(format!("program {PROG_XDP} missing from the object")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| LoadError::Ebpf(e.to_string()))?;
    prog.load().map_err(|e| classify_load_error(&e))?;
    if egress {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(PROG_EGRESS)
            .ok_or_else(|| {
                LoadError::Ebpf(format!("program {PROG_EGRESS} missing from the object"))
            })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| LoadError::Ebpf(e.to_string()))?;
        prog.load().map_err(|e| classify_load_error(&e))?;
    }
    info!(
        "loaded {PROG_XDP}{}; maps pinned under {}",
        if egress {
            format!(" and {PROG_EGRESS}")
        } else {
            String::new()
        },
        opts.pin_dir.display()
    );
    Ok(Loaded {
        ebpf,
        pin_dir: opts.pin_dir.clone(),
        attachments: Vec::new(),
        egress,
        pins_before,
        created_dirs,
        _lock: lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_config() {
        let c = config_for(&[53, 5353], BlockAction::Nxdomain).unwrap();
        assert_eq!(c.dns_port_count, 2);
        assert!(c.is_dns_port(5353));
        assert!(config_for(&[], BlockAction::Nxdomain).is_err());
        assert!(config_for(&[0], BlockAction::Nxdomain).is_err());
        assert!(config_for(&[1; 9], BlockAction::Nxdomain).is_err());
        let c = config_for(&[53], BlockAction::Drop).unwrap();
        assert_eq!(c.domain_action, DOMAIN_ACTION_DROP);
        assert_eq!("drop".parse::<BlockAction>(), Ok(BlockAction::Drop));
        assert!("sinkhole".parse::<BlockAction>().is_err());
    }

    #[test]
    fn attach_mode_parse() {
        assert_eq!("native".parse::<AttachMode>(), Ok(AttachMode::Native));
        assert_eq!("skb".parse::<AttachMode>(), Ok(AttachMode::Skb));
        assert_eq!("auto".parse::<AttachMode>(), Ok(AttachMode::Auto));
        assert!("hw".parse::<AttachMode>().is_err());
    }
}
