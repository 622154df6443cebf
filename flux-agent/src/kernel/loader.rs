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

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
    },
    util::KernelVersion,
};
use flux_common::{
    Config, DOMAIN_ACTION_DROP, DOMAIN_ACTION_NXDOMAIN, GLOBAL_CONFIG, MAP_COUNTERS, MAP_EVENTS,
    MATCH_DROP, MATCH_MARK, MATCH_OFF, MAX_DNS_PORTS, PROG_EGRESS, PROG_XDP,
};
use log::{info, warn};

use crate::{EBPF_OBJECT, kernel::interfaces::Interface, kernel::xdp_owner};

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
    pub block_action: BlockAction,
    /// Match blocks but drop and rewrite nothing (`--monitor`).
    pub monitor: bool,
    /// Also drop packets leaving for blocked addresses (`--egress`), in the TC egress program.
    pub egress: bool,
    /// Trust only replies to queries that left (the TC egress program records them).
    pub queries: QueryMatch,
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
    /// No map pins existed before this load: a failed start removes them again.
    fresh_pins: bool,
    _lock: File,
}

/// The pin of the XDP link on `iface`.
pub fn xdp_link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{XDP_LINK_PREFIX}{iface}"))
}

/// The pin of the TC egress link on `iface`.
pub fn tc_link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{TC_LINK_PREFIX}{iface}"))
}

/// Pinned XDP links are named this plus the interface name.
pub const XDP_LINK_PREFIX: &str = "xdp_link_";
/// Pinned TC egress links are named this plus the interface name.
pub const TC_LINK_PREFIX: &str = "tc_link_";

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

/// Refuses kernels older than [`MIN_KERNEL`].
pub fn check_kernel_version(v: KernelVersion) -> Result<(), LoadError> {
    let min = KernelVersion::new(MIN_KERNEL.0, MIN_KERNEL.1, 0);
    if v < min {
        return Err(LoadError::KernelTooOld {
            found: v.to_string(),
        });
    }
    Ok(())
}

/// Effective capabilities of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Whether these capabilities can load and attach XDP programs.
pub fn caps_sufficient(caps: u64) -> bool {
    let has = |c: u32| caps & (1u64 << c) != 0;
    has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN))
}

/// Checks privileges and kernel before touching anything.
/// Refuses `--egress` on a kernel without tcx.
pub fn check_egress_kernel(v: KernelVersion) -> Result<(), LoadError> {
    if v < KernelVersion::new(MIN_KERNEL_EGRESS.0, MIN_KERNEL_EGRESS.1, 0) {
        return Err(LoadError::EgressUnsupported {
            found: v.to_string(),
        });
    }
    Ok(())
}

pub fn preflight() -> Result<(), LoadError> {
    if let Some(caps) = effective_caps()
        && !caps_sufficient(caps)
    {
        return Err(LoadError::PermissionDenied);
    }
    let v =
        KernelVersion::current().map_err(|e| LoadError::Ebpf(format!("kernel version: {e}")))?;
    check_kernel_version(v)
}

fn errno_in(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        cur = e.source();
    }
    None
}

fn classify_load_error(err: &(dyn std::error::Error + 'static)) -> LoadError {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    // A verifier rejection is EACCES too, but comes with a log: that is a program problem.
    let verifier_said_something = text
        .split_once("Verifier output:")
        .is_some_and(|(_, log)| !log.trim().is_empty());
    match errno_in(err) {
        Some(libc::EPERM) | Some(libc::EACCES) if !verifier_said_something => {
            LoadError::PermissionDenied
        }
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
            if text.contains("unknown func") || text.contains("invalid func") =>
        {
            LoadError::MissingKernelFeature(text)
        }
        _ => LoadError::Ebpf(text),
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn fs_type(path: &Path) -> io::Result<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// The standard bpffs mount point.
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Mounts bpffs on /sys/fs/bpf when the pin folder lives there and nothing is mounted yet, as
/// xdp-tools and bpftool do: many systems only mount it on first use.
fn ensure_bpffs_mounted(pin_dir: &Path) -> Result<(), LoadError> {
    let root = Path::new(BPFFS_ROOT);
    if !pin_dir.starts_with(root) || fs_type(root).ok() == Some(BPF_FS_MAGIC) {
        return Ok(());
    }
    let src = c"bpf";
    let target = c"/sys/fs/bpf";
    // SAFETY: all arguments are valid C strings; data may be null.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => LoadError::PermissionDenied,
            _ => LoadError::PinDir {
                path: pin_dir.to_owned(),
                reason: format!("/sys/fs/bpf is not a bpf filesystem and mounting one failed: {e}"),
            },
        });
    }
    info!("mounted bpffs on {BPFFS_ROOT}");
    Ok(())
}

/// Makes sure `pin_dir` is on a bpffs, creating the folder if needed.
fn prepare_pin_dir(pin_dir: &Path) -> Result<(), LoadError> {
    let err = |reason: String| LoadError::PinDir {
        path: pin_dir.to_owned(),
        reason,
    };
    ensure_bpffs_mounted(pin_dir)?;
    std::fs::create_dir_all(pin_dir).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => LoadError::PermissionDenied,
        _ => err(format!("{e}; is bpffs mounted on /sys/fs/bpf?")),
    })?;
    if fs_type(pin_dir).map_err(|e| err(e.to_string()))? != BPF_FS_MAGIC {
        return Err(err(
            "not on a bpf filesystem (mount one with `mount -t bpf bpf /sys/fs/bpf`)".into(),
        ));
    }
    Ok(())
}

/// Takes an exclusive, non-blocking lock on the pin folder so two agents never share maps.
pub fn lock_pin_dir(pin_dir: &Path) -> Result<Option<File>, io::Error> {
    let f = File::open(pin_dir)?;
    // SAFETY: valid fd owned by `f`.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(f))
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
    prepare_pin_dir(&opts.pin_dir)?;
    let lock = lock_pin_dir(&opts.pin_dir)
        .map_err(|e| LoadError::PinDir {
            path: opts.pin_dir.clone(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| LoadError::AlreadyRunning(opts.pin_dir.clone()))?;
    crate::kernel::pins::check_folder(&opts.pin_dir)?;
    let fresh_pins = !opts.pin_dir.join(MAP_COUNTERS).exists();

    let mut loader = EbpfLoader::new();
    loader
        .default_map_pin_directory(&opts.pin_dir)
        .override_global(GLOBAL_CONFIG, &config, true);
    if let Some(bytes) = opts.ring_buf_bytes {
        loader.map_max_entries(MAP_EVENTS, bytes);
    }
    let mut ebpf = loader
        .load(EBPF_OBJECT)
        .map_err(|e| classify_load_error(&e))?;
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
        fresh_pins,
        _lock: lock,
    })
}

impl Loaded {
    /// Attaches the XDP program to `iface`, and with `--egress` the TC egress program too.
    /// Without `--egress`, an egress link an earlier run left on `iface` is removed: what runs
    /// is what this run was asked for. With `force`, an XDP program someone else attached is
    /// detached first; without it, its presence is an error.
    pub fn attach(
        &mut self,
        iface: &Interface,
        mode: AttachMode,
        force: bool,
    ) -> Result<(), LoadError> {
        self.attach_xdp(iface, mode, force)?;
        let tc_pin = tc_link_pin(&self.pin_dir, &iface.name);
        if self.egress {
            self.attach_egress(iface, tc_pin)
        } else {
            if tc_pin.exists() {
                if let Err(e) = xdp_owner::detach_pinned_link(&tc_pin) {
                    warn!("detach {}: {e}", tc_pin.display());
                }
                std::fs::remove_file(&tc_pin).map_err(|e| LoadError::PinDir {
                    path: tc_pin.clone(),
                    reason: format!("cannot remove the egress link pin: {e}"),
                })?;
                info!(
                    "removed the TC egress program an earlier run attached to {} (this run \
                     neither matches queries nor has --egress)",
                    iface.name
                );
            }
            Ok(())
        }
    }

    fn attach_xdp(
        &mut self,
        iface: &Interface,
        mode: AttachMode,
        force: bool,
    ) -> Result<(), LoadError> {
        let pin = xdp_link_pin(&self.pin_dir, &iface.name);
        if pin.exists()
            && let Some(link) = open_pinned_link::<XdpLink>(&pin, "an XDP link")?
        {
            let prog = self.xdp_prog()?;
            match prog.attach_to_link(link) {
                Ok(_) => {
                    self.took_over(iface, Hook::Xdp, pin);
                    return Ok(());
                }
                Err(e) => stale_pin(&pin, &format!("cannot update the pinned link: {e}")),
            }
        }
        if let Some(existing) = xdp_owner::attached_prog_id(iface.index)
            .map_err(|e| LoadError::Ebpf(format!("query XDP state of {}: {e}", iface.name)))?
        {
            if !force {
                return Err(LoadError::XdpBusy {
                    iface: iface.name.clone(),
                    prog_id: existing,
                });
            }
            warn!(
                "--force: detaching XDP program {existing} from {}",
                iface.name
            );
            xdp_owner::detach_all(iface.index).map_err(|e| {
                LoadError::Ebpf(format!(
                    "could not detach program {existing} from {}: {e}",
                    iface.name
                ))
            })?;
        }

        let prog: &mut Xdp = self.xdp_prog()?;

        let attach = |prog: &mut Xdp, mode: XdpMode, label: &'static str| {
            prog.attach_to_if_index(iface.index, mode)
                .map(|id| (id, label))
                .map_err(|source| match errno_in(&source) {
                    Some(libc::EPERM) => LoadError::PermissionDenied,
                    // Someone attached between our check and the attach, or holds the hook in
                    // a way the check missed: that is "busy", never a reason to try skb mode.
                    Some(libc::EBUSY) | Some(libc::EEXIST) => LoadError::XdpBusy {
                        iface: iface.name.clone(),
                        prog_id: xdp_owner::attached_prog_id(iface.index)
                            .ok()
                            .flatten()
                            .unwrap_or(0),
                    },
                    _ => LoadError::Attach {
                        iface: iface.name.clone(),
                        mode: label,
                        source,
                    },
                })
        };
        let (id, label) = match mode {
            AttachMode::Native => attach(prog, XdpMode::Driver, "native")?,
            AttachMode::Skb => attach(prog, XdpMode::Skb, "skb")?,
            AttachMode::Auto => match attach(prog, XdpMode::Driver, "native") {
                Ok(l) => l,
                Err(e @ (LoadError::PermissionDenied | LoadError::XdpBusy { .. })) => {
                    return Err(e);
                }
                Err(e) => {
                    warn!(
                        "{e}; falling back to generic (skb) mode, which is slower but works on \
                         every driver"
                    );
                    attach(prog, XdpMode::Skb, "skb")?
                }
            },
        };
        // Pin the link so the program outlives this process.
        let pin_err = |e: String| LoadError::PinDir {
            path: pin.clone(),
            reason: format!("cannot pin the XDP link: {e}"),
        };
        let link = prog.take_link(id).map_err(|e| pin_err(e.to_string()))?;
        let link = FdLink::try_from(link).map_err(|e| pin_err(e.to_string()))?;
        link.pin(&pin).map_err(|e| pin_err(e.to_string()))?;
        info!("attached to {} ({label} mode)", iface.name);
        self.attachments.push(Attachment {
            iface: iface.clone(),
            hook: Hook::Xdp,
            mode: label,
            pin,
            took_over: false,
        });
        Ok(())
    }

    fn xdp_prog(&mut self) -> Result<&mut Xdp, LoadError> {
        self.ebpf
            .program_mut(PROG_XDP)
            .ok_or_else(|| LoadError::Ebpf(format!("program {PROG_XDP} missing")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| LoadError::Ebpf(e.to_string()))
    }

    /// Attaches the TC egress program to `iface` over tcx, or swaps it into the link an earlier
    /// run pinned there.
    fn attach_egress(&mut self, iface: &Interface, pin: PathBuf) -> Result<(), LoadError> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROG_EGRESS)
            .ok_or_else(|| LoadError::Ebpf(format!("program {PROG_EGRESS} missing")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| LoadError::Ebpf(e.to_string()))?;
        if pin.exists()
            && let Some(link) = open_pinned_link::<SchedClassifierLink>(&pin, "a tcx link")?
        {
            match prog.attach_to_link(link) {
                Ok(_) => {
                    self.took_over(iface, Hook::Egress, pin);
                    return Ok(());
                }
                Err(e) => stale_pin(&pin, &format!("cannot update the pinned link: {e}")),
            }
        }
        let attach_err =
            |e: String| LoadError::Ebpf(format!("attach TC egress to {}: {e}", iface.name));
        // First in the chain, so no other program's verdict can let a blocked packet out; every
        // packet it does not drop goes on to the next program (TCX_NEXT).
        let id = prog
            .attach_with_options(
                &iface.name,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .map_err(|e| match errno_in(&e) {
                Some(libc::EPERM) => LoadError::PermissionDenied,
                _ => attach_err(e.to_string()),
            })?;
        let link = prog.take_link(id).map_err(|e| attach_err(e.to_string()))?;
        let link = FdLink::try_from(link).map_err(|e| attach_err(e.to_string()))?;
        link.pin(&pin).map_err(|e| LoadError::PinDir {
            path: pin.clone(),
            reason: format!("cannot pin the TC egress link: {e}"),
        })?;
        info!("attached TC egress to {} (tcx)", iface.name);
        self.attachments.push(Attachment {
            iface: iface.clone(),
            hook: Hook::Egress,
            mode: "tcx",
            pin,
            took_over: false,
        });
        Ok(())
    }

    /// Records a pinned link whose program this run swapped in.
    fn took_over(&mut self, iface: &Interface, hook: Hook, pin: PathBuf) {
        let what = match hook {
            Hook::Xdp => "XDP",
            Hook::Egress => "TC egress",
        };
        info!(
            "took over the pinned {what} link on {} (no gap in enforcement)",
            iface.name
        );
        self.attachments.push(Attachment {
            iface: iface.clone(),
            hook,
            mode: "pinned",
            pin,
            took_over: true,
        });
    }

    /// Removes the map pins (for tools that load without attaching, like the benchmark).
    pub fn unpin_maps(&self) {
        remove_map_pins(&self.pin_dir);
    }

    /// Undoes a start that failed half-way: the links this run pinned are removed (which
    /// detaches them), and, when this run created the maps, their pins too. Links and maps an
    /// earlier run left enforcing stay.
    pub fn rollback(&mut self) {
        for a in self.attachments.drain(..) {
            if a.took_over {
                continue;
            }
            if let Err(e) = std::fs::remove_file(&a.pin)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!("could not remove pin {}: {e}", a.pin.display());
            }
        }
        if self.fresh_pins {
            remove_map_pins(&self.pin_dir);
        }
    }
}

/// Opens the link an earlier run pinned at `pin` as an `L`. `None` when that link is gone (the
/// interface was recreated, say): its stale pin is removed and the caller attaches afresh. A
/// pin that is not `what` is someone else's and is reported.
fn open_pinned_link<L: TryFrom<FdLink>>(pin: &Path, what: &str) -> Result<Option<L>, LoadError>
where
    L::Error: std::fmt::Display,
{
    let link = match PinnedLink::from_pin(pin) {
        Ok(l) => FdLink::from(l),
        Err(e) => {
            stale_pin(pin, &format!("cannot open the pinned link: {e}"));
            return Ok(None);
        }
    };
    L::try_from(link).map(Some).map_err(|e| {
        LoadError::Pin(crate::kernel::pins::PinError::Foreign {
            path: pin.to_owned(),
            what: format!("not {what}: {e}"),
        })
    })
}

fn stale_pin(pin: &Path, why: &str) {
    warn!("{}: {why}; attaching afresh", pin.display());
    let _ = std::fs::remove_file(pin);
}

/// Removes every map pin the object defines (nothing else), then the folder if it is empty.
fn remove_map_pins(pin_dir: &Path) {
    for name in crate::kernel::pins::names() {
        let path = pin_dir.join(name);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!("could not remove pin {}: {e}", path.display());
        }
    }
    // Only succeeds when empty; other tools' pins are never touched.
    let _ = std::fs::remove_dir(pin_dir);
}

/// What [`unload`] removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Unloaded {
    pub links: Vec<String>,
    pub maps: usize,
    /// Pins in the folder that are not flux-agent's, left alone.
    pub left: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UnloadError {
    #[error("nothing is loaded: {} does not exist", .0.display())]
    NotLoaded(PathBuf),
    #[error(
        "the agent is running on {}; stop it first (unload removes what it leaves behind)",
        .0.display()
    )]
    Running(PathBuf),
    #[error("cannot unload {}: {reason}", .path.display())]
    Io { path: PathBuf, reason: String },
}

/// `flux-agent unload`: detaches every pinned program link and removes the pins.
pub fn unload(pin_dir: &Path) -> Result<Unloaded, UnloadError> {
    if !pin_dir.exists() {
        return Err(UnloadError::NotLoaded(pin_dir.to_owned()));
    }
    let io_err = |e: io::Error| UnloadError::Io {
        path: pin_dir.to_owned(),
        reason: e.to_string(),
    };
    let _lock = lock_pin_dir(pin_dir)
        .map_err(io_err)?
        .ok_or_else(|| UnloadError::Running(pin_dir.to_owned()))?;
    let mut out = Unloaded::default();
    let known = crate::kernel::pins::names();
    for entry in std::fs::read_dir(pin_dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(XDP_LINK_PREFIX) || name.starts_with(TC_LINK_PREFIX) {
            // Detach explicitly: another process may still hold the link open.
            if let Err(e) = xdp_owner::detach_pinned_link(&entry.path()) {
                warn!("detach {name}: {e}");
            }
            std::fs::remove_file(entry.path()).map_err(io_err)?;
            out.links.push(name);
        } else if known.contains(&name) {
            std::fs::remove_file(entry.path()).map_err(io_err)?;
            out.maps += 1;
        } else {
            out.left.push(name);
        }
    }
    drop(_lock);
    let _ = std::fs::remove_dir(pin_dir);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_version_gate() {
        assert!(check_kernel_version(KernelVersion::new(5, 17, 15)).is_err());
        assert!(check_kernel_version(KernelVersion::new(4, 19, 0)).is_err());
        assert!(check_kernel_version(KernelVersion::new(5, 18, 0)).is_ok());
        assert!(check_kernel_version(KernelVersion::new(6, 18, 44)).is_ok());
        let msg = check_kernel_version(KernelVersion::new(5, 4, 0))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("5.18"), "{msg}");
    }

    #[test]
    fn capability_check() {
        assert!(!caps_sufficient(0));
        assert!(!caps_sufficient(1 << CAP_BPF));
        assert!(caps_sufficient((1 << CAP_BPF) | (1 << CAP_NET_ADMIN)));
        assert!(caps_sufficient((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)));
        assert!(caps_sufficient(u64::MAX >> 23));
    }

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
