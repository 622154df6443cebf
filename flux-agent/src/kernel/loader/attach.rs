//! Attaching: the XDP program (native, skb or auto) and the TC egress program over tcx on an
//! interface, pinning each link, taking over a link an earlier run pinned, and rolling back a
//! start that failed half-way. Touches netlink (through aya and `xdp_owner`) and bpffs.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
    xdp::XdpLink,
};
use flux_common::{
    HostMacSlot, MAP_HOST_MAC_SLOTS, MAP_HOST_MACS, PROG_EGRESS, PROG_XDP, host_mac_slot, mac_word,
};
use log::{info, warn};

use super::{
    AttachMode, Attachment, BPFFS_ROOT, Hook, LoadError, Loaded, errno_in, remove_created_dirs,
    remove_map_pins, remove_map_pins_but, tc_link_pin, xdp_link_pin,
};
use crate::kernel::{interfaces::Interface, xdp_owner};

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
        self.record_host_mac(iface);
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

    /// Tells the XDP program `iface`'s own MAC, so that a reply in a frame addressed to
    /// another host is never trusted (`flux-ebpf/src/queries.rs::to_host`). An interface
    /// whose MAC cannot be read is checked for group addresses only; that is logged, not
    /// fatal (enforcement does not depend on it).
    fn record_host_mac(&mut self, iface: &Interface) {
        let result = read_mac(&iface.name).and_then(|mac| {
            record_host_mac(&mut self.ebpf, iface.index, mac).map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            warn!(
                "cannot record the MAC of {} ({e}): replies to it are checked for broadcast \
                 and multicast destinations only",
                iface.name
            );
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
                return Err(busy(iface, existing));
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
                    Some(libc::EBUSY) | Some(libc::EEXIST) => busy(
                        iface,
                        xdp_owner::attached_prog_id(iface.index)
                            .ok()
                            .flatten()
                            .unwrap_or(0),
                    ),
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
                Err(
                    e @ (LoadError::PermissionDenied
                    | LoadError::XdpBusy { .. }
                    | LoadError::OtherAgent { .. }),
                ) => {
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

    /// Forgets every attachment on the interface named `name` and removes its link pins: for an
    /// interface that went away (its links are detached and useless) or whose attach failed
    /// half-way. A later [`attach`](Self::attach) starts afresh.
    pub fn detach_iface(&mut self, name: &str) {
        let (gone, kept) = self
            .attachments
            .drain(..)
            .partition(|a| a.iface.name == name);
        self.attachments = kept;
        let gone: Vec<Attachment> = gone;
        for a in gone {
            if let Err(e) = std::fs::remove_file(&a.pin)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!("could not remove pin {}: {e}", a.pin.display());
            }
        }
    }

    /// Removes the map pins (for tools that load without attaching, like the benchmark).
    pub fn unpin_maps(&self) {
        remove_map_pins(&self.pin_dir);
        // Only succeeds when empty; other tools' pins are never touched.
        let _ = std::fs::remove_dir(&self.pin_dir);
    }

    /// Undoes a start that failed half-way: the links this run pinned are removed (which
    /// detaches them), the map pins this run created, and the folders it created. Links and maps an earlier run left enforcing stay, and so does a folder that
    /// existed before.
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
        remove_map_pins_but(&self.pin_dir, &self.pins_before);
        remove_created_dirs(&self.created_dirs);
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

/// The error for an XDP program already on `iface`: another flux-agent's (named by its pin
/// folder when one holds its link), or another tool's.
fn busy(iface: &Interface, prog_id: u32) -> LoadError {
    match xdp_owner::other_flux_agent(prog_id, Path::new(BPFFS_ROOT)) {
        Some(pin_dir) => LoadError::OtherAgent {
            iface: iface.name.clone(),
            prog_id,
            pin_dir,
        },
        None => LoadError::XdpBusy {
            iface: iface.name.clone(),
            prog_id,
        },
    }
}

fn stale_pin(pin: &Path, why: &str) {
    warn!("{}: {why}; attaching afresh", pin.display());
    let _ = std::fs::remove_file(pin);
}

/// Records interface `ifindex`'s MAC for the XDP program: in `HOST_MACS`, then in its slot of
/// `HOST_MAC_SLOTS` unless another interface holds that slot (the invariant and what the kernel
/// reads are in `flux_common::MAP_HOST_MAC_SLOTS`). Public for the tests, which record the test
/// runs' interface as an attach would.
pub fn record_host_mac(ebpf: &mut aya::Ebpf, ifindex: u32, mac: [u8; 6]) -> Result<(), LoadError> {
    let err = |map: &'static str, e: &dyn std::fmt::Display| LoadError::MapWrite {
        map,
        reason: e.to_string(),
    };
    let map = ebpf
        .map_mut(MAP_HOST_MACS)
        .ok_or_else(|| err(MAP_HOST_MACS, &"missing from the object"))?;
    let mut macs: aya::maps::HashMap<_, u32, u64> =
        aya::maps::HashMap::try_from(map).map_err(|e| err(MAP_HOST_MACS, &e))?;
    macs.insert(ifindex, mac_word(mac), 0)
        .map_err(|e| err(MAP_HOST_MACS, &e))?;
    let map = ebpf
        .map_mut(MAP_HOST_MAC_SLOTS)
        .ok_or_else(|| err(MAP_HOST_MAC_SLOTS, &"missing from the object"))?;
    let mut slots: aya::maps::Array<_, HostMacSlot> =
        aya::maps::Array::try_from(map).map_err(|e| err(MAP_HOST_MAC_SLOTS, &e))?;
    let index = host_mac_slot(ifindex);
    let held = slots
        .get(&index, 0)
        .map_err(|e| err(MAP_HOST_MAC_SLOTS, &e))?;
    if held.ifindex == 0 || held.ifindex == ifindex {
        let slot = HostMacSlot {
            mac: mac_word(mac),
            ifindex,
            reserved: 0,
        };
        slots
            .set(index, slot, 0)
            .map_err(|e| err(MAP_HOST_MAC_SLOTS, &e))?;
    }
    Ok(())
}

/// The interface's MAC, from sysfs (`/sys/class/net/NAME/address`, `aa:bb:cc:dd:ee:ff`).
/// Hand-parsed: six hex octets need no crate.
fn read_mac(name: &str) -> Result<[u8; 6], String> {
    let path = Path::new("/sys/class/net").join(name).join("address");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_mac(text.trim()).ok_or_else(|| format!("{}: not a MAC: {text:?}", path.display()))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for octet in &mut mac {
        *octet = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod mac_tests {
    use super::parse_mac;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:ff"),
            Some([2, 0, 0x5e, 0x10, 0, 0xff])
        );
        assert_eq!(parse_mac("02:00:5e:10:00"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:ff:01"), None);
        assert_eq!(parse_mac("zz:00:5e:10:00:ff"), None);
        assert_eq!(parse_mac(""), None);
    }
}
