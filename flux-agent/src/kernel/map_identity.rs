//! Pins checked by identity: a map pinned under one of our names must be the very map the
//! program attached from that pin folder uses, not merely a map of the same layout.
//!
//! Someone who removes a pin and pins another map of the same type and sizes under its name
//! would otherwise make `blocklist add` write where the kernel never looks (and `list` stop
//! showing the entries still enforced). The attached programs are found through the link pins
//! of the folder (`xdp_link_*`, `tc_link_*`): link -> program id -> the program's map ids
//! (`bpf_prog_info.map_ids`, through aya's `ProgramInfo::map_ids`) -> each map's name and id.
//! A pin whose map id differs from the id of the program's map of the same name is an error
//! naming both ids. With no link pinned there is no program to compare against, and nothing is
//! reported.
//!
//! May touch: bpffs (reads pins) and the BPF syscalls (through aya); changes nothing.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapData, MapInfo},
    programs::{
        ProgramInfo,
        links::{FdLink, PinnedLink},
        loaded_programs,
    },
};
use serde::Serialize;

use crate::kernel::{
    loader::{TC_LINK_PREFIX, XDP_LINK_PREFIX},
    pins::{self, PinError},
};

/// The kernel keeps a map's name in `BPF_OBJ_NAME_LEN` (16) bytes with a NUL: longer names
/// are cut to this many characters.
const BPF_NAME_CHARS: usize = 15;

/// A pinned map that is not the map the attached program uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error(
    "{pin} is not the map the attached program uses: the pin is map id {pinned_id}, program \
     {prog_id} uses map id {used_id} for {name}. The pin was replaced; refusing to use it \
     (`flux-agent unload --pin-dir {dir}` and a new `flux-agent run` start clean)",
    pin = .pin.display(),
    dir = .pin.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
)]
pub struct Replaced {
    pub pin: PathBuf,
    pub name: String,
    /// The id of the map pinned at `pin`.
    pub pinned_id: u32,
    /// The attached program.
    pub prog_id: u32,
    /// The id of the program's own map of that name.
    pub used_id: u32,
}

/// The maps the programs attached from one pin folder use, by (kernel-truncated) name.
#[derive(Debug, Default)]
pub struct InUse {
    /// Map name -> (map id, program id).
    by_name: HashMap<String, (u32, u32)>,
}

impl InUse {
    /// Reads the link pins of `pin_dir` and the maps of the programs behind them.
    pub fn of(pin_dir: &Path) -> Result<Self, PinError> {
        let prog_ids = linked_programs(pin_dir)?;
        let mut out = Self::default();
        if prog_ids.is_empty() {
            return Ok(out);
        }
        let ident = |e: &dyn std::fmt::Display| PinError::Identity(e.to_string());
        for info in loaded_programs() {
            let info = match info {
                Ok(info) => info,
                // Unloaded between the kernel's list of program ids and the read of its info
                // (another tool's program, or another agent's going away): not one of ours,
                // which the link pins in `pin_dir` hold loaded. Seen in CI as a CLI command
                // failing while a parallel test unloaded its program.
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(ident(&e)),
            };
            if !prog_ids.contains(&info.id()) {
                continue;
            }
            for map_id in program_maps(&info)? {
                // A map freed meanwhile has no name to compare.
                let Ok(map) = MapInfo::from_id(map_id) else {
                    continue;
                };
                if let Some(name) = map.name_as_str() {
                    out.by_name
                        .entry(name.to_owned())
                        .or_insert((map_id, info.id()));
                }
            }
        }
        Ok(out)
    }

    /// Checks that `data`, pinned at `pin` under our name `name`, is the attached program's map.
    pub fn check(&self, pin: &Path, name: &str, data: &MapData) -> Result<(), PinError> {
        let short: String = name.chars().take(BPF_NAME_CHARS).collect();
        let Some(&(used_id, prog_id)) = self.by_name.get(&short) else {
            return Ok(());
        };
        let pinned_id = data
            .info()
            .map_err(|e| PinError::Identity(e.to_string()))?
            .id();
        if pinned_id == used_id {
            return Ok(());
        }
        Err(Replaced {
            pin: pin.to_owned(),
            name: name.to_owned(),
            pinned_id,
            prog_id,
            used_id,
        }
        .into())
    }
}

/// Whether a program could not be read because it no longer exists (`ENOENT`).
fn vanished(e: &aya::programs::ProgramError) -> bool {
    matches!(
        e,
        aya::programs::ProgramError::SyscallError(s)
            if s.io_error.raw_os_error() == Some(libc::ENOENT)
    )
}

/// The ids of the maps a program uses.
fn program_maps(info: &ProgramInfo) -> Result<Vec<u32>, PinError> {
    info.map_ids()
        .map_err(|e| PinError::Identity(format!("map ids of program {}: {e}", info.id())))
        .map(Option::unwrap_or_default)
}

/// The program ids behind the link pins in `pin_dir`.
fn linked_programs(pin_dir: &Path) -> Result<Vec<u32>, PinError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(PinError::PermissionDenied(pin_dir.to_owned()));
        }
        Err(e) => return Err(PinError::Identity(e.to_string())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(XDP_LINK_PREFIX) || name.starts_with(TC_LINK_PREFIX)) {
            continue;
        }
        // A pin that is not a link is reported by the loader; here it just has no program.
        let Ok(link) = PinnedLink::from_pin(entry.path()) else {
            continue;
        };
        if let Ok(info) = FdLink::from(link).info()
            && !out.contains(&info.program_id())
        {
            out.push(info.program_id());
        }
    }
    Ok(out)
}

/// Checks `data` (pinned in `pin_dir` as `name`) against the attached programs' maps.
pub fn check(pin_dir: &Path, name: &str, data: &MapData) -> Result<(), PinError> {
    InUse::of(pin_dir)?.check(&pin_dir.join(name), name, data)
}

/// Every pinned map of ours in `pin_dir` that is not the attached program's (for `stats`).
pub fn replaced(pin_dir: &Path) -> Result<Vec<Replaced>, PinError> {
    let in_use = InUse::of(pin_dir)?;
    let mut out = Vec::new();
    for exp in pins::expected()? {
        let path = pin_dir.join(&exp.name);
        if !pins::pin_exists(&path)? {
            continue;
        }
        let data = pins::open_unchecked_identity(pin_dir, &exp.name)?;
        match in_use.check(&path, &exp.name, &data) {
            Ok(()) => {}
            Err(PinError::Replaced(r)) => out.push(r),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_program_that_no_longer_exists_is_skipped() {
        let err = |errno| {
            aya::programs::ProgramError::SyscallError(aya::sys::SyscallError {
                call: "bpf_prog_get_fd_by_id",
                io_error: std::io::Error::from_raw_os_error(errno),
            })
        };
        assert!(vanished(&err(libc::ENOENT)));
        assert!(!vanished(&err(libc::EPERM)));
        assert!(!vanished(&err(libc::EINVAL)));
    }

    #[test]
    fn names_are_compared_as_the_kernel_keeps_them() {
        let mut in_use = InUse::default();
        in_use.by_name.insert(
            "BLOCKED_CIDR_V4".chars().take(BPF_NAME_CHARS).collect(),
            (7, 1),
        );
        assert!(in_use.by_name.contains_key("BLOCKED_CIDR_V4"));
        let r = Replaced {
            pin: PathBuf::from("/sys/fs/bpf/x/BLOCKED_V4"),
            name: "BLOCKED_V4".into(),
            pinned_id: 12,
            prog_id: 3,
            used_id: 9,
        };
        let msg = r.to_string();
        for needle in [
            "/sys/fs/bpf/x/BLOCKED_V4",
            "map id 12",
            "program 3",
            "map id 9",
        ] {
            assert!(msg.contains(needle), "{msg}");
        }
    }

    /// A folder with no link pins has no program to compare against.
    #[test]
    fn no_links_no_programs() {
        let dir = std::env::temp_dir().join(format!("flux-ident-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(InUse::of(&dir).unwrap().by_name.is_empty());
        let _ = std::fs::remove_dir(&dir);
    }
}
