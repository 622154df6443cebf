//! `flux-agent unload`: detaching every pinned program link in a pin folder and removing the
//! pins flux-agent made; pins that are not ours are left. Touches bpffs and netlink.

use std::{
    io,
    path::{Path, PathBuf},
};

use log::warn;

use super::{TC_LINK_PREFIX, XDP_LINK_PREFIX, lock_pin_dir};
use crate::kernel::xdp_owner;

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
    #[error(transparent)]
    Pin(crate::kernel::pins::PinError),
    #[error("cannot unload {}: {reason}", .path.display())]
    Io { path: PathBuf, reason: String },
}

/// `flux-agent unload`: detaches every pinned program link and removes the pins.
pub fn unload(pin_dir: &Path) -> Result<Unloaded, UnloadError> {
    match crate::kernel::pins::pin_exists(pin_dir) {
        Ok(true) => {}
        Ok(false) => return Err(UnloadError::NotLoaded(pin_dir.to_owned())),
        Err(e) => return Err(UnloadError::Pin(e)),
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
    // Nobody holds the lock, so nobody serves these: a crashed run's control socket and
    // interface states would otherwise stay in /run/flux-agent for good.
    let _ = std::fs::remove_file(crate::control::socket_path(pin_dir));
    let _ = std::fs::remove_file(crate::kernel::iface_states::state_path(pin_dir));
    drop(_lock);
    let _ = std::fs::remove_dir(pin_dir);
    Ok(out)
}
