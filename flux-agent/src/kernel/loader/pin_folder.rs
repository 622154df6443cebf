//! The pin folder on bpffs: mounting bpffs when needed, creating and locking the folder, the
//! names of link pins, and removing the map pins. Touches bpffs and nothing else.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use log::{info, warn};

use super::LoadError;

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
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

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

/// Makes sure `pin_dir` is on a bpffs, creating the folder if needed. Returns the folders it
/// created (the pin folder and any missing parents), deepest first, so that a start that fails
/// can remove them again ([`remove_created_dirs`]).
pub(super) fn prepare_pin_dir(pin_dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let err = |reason: String| LoadError::PinDir {
        path: pin_dir.to_owned(),
        reason,
    };
    ensure_bpffs_mounted(pin_dir)?;
    let created: Vec<PathBuf> = pin_dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_owned)
        .collect();
    std::fs::create_dir_all(pin_dir).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => LoadError::PermissionDenied,
        _ => err(format!("{e}; is bpffs mounted on /sys/fs/bpf?")),
    })?;
    let on_bpffs = fs_type(pin_dir).map_err(|e| err(e.to_string()))? == BPF_FS_MAGIC;
    if !on_bpffs {
        remove_created_dirs(&created);
        return Err(err(
            "not on a bpf filesystem (mount one with `mount -t bpf bpf /sys/fs/bpf`)".into(),
        ));
    }
    Ok(created)
}

/// Removes the folders a start created (deepest first), each only if it is empty: whatever
/// someone else put there meanwhile stays, and so does every folder that existed before.
pub(super) fn remove_created_dirs(created: &[PathBuf]) {
    for dir in created {
        if let Err(e) = std::fs::remove_dir(dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!("could not remove {} this run created: {e}", dir.display());
            return;
        }
    }
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

/// Removes every map pin the object defines (nothing else).
pub(super) fn remove_map_pins(pin_dir: &Path) {
    remove_map_pins_but(pin_dir, &[]);
}

/// The names of the map pins that exist in `pin_dir` now.
pub(super) fn existing_map_pins(pin_dir: &Path) -> Vec<String> {
    crate::kernel::pins::names()
        .into_iter()
        .filter(|n| pin_dir.join(n).exists())
        .collect()
}

/// Removes the map pins the object defines except those in `keep` (the ones that existed
/// before a start: another run's, or a foreign pin that made this start fail).
pub(super) fn remove_map_pins_but(pin_dir: &Path, keep: &[String]) {
    for name in crate::kernel::pins::names() {
        if keep.contains(&name) {
            continue;
        }
        let path = pin_dir.join(name);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!("could not remove pin {}: {e}", path.display());
        }
    }
}
