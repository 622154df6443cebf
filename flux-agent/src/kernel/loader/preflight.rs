//! Preflight: privileges and kernel version checked before anything is touched, and the
//! errors a load can fail with turned into a [`LoadError`] that says what to do. Reads
//! /proc/self/status and the kernel version; changes nothing.

use std::io;

use aya::util::KernelVersion;

use super::{LoadError, MIN_KERNEL, MIN_KERNEL_EGRESS};

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

/// Refuses `--egress` on a kernel without tcx.
pub fn check_egress_kernel(v: KernelVersion) -> Result<(), LoadError> {
    if v < KernelVersion::new(MIN_KERNEL_EGRESS.0, MIN_KERNEL_EGRESS.1, 0) {
        return Err(LoadError::EgressUnsupported {
            found: v.to_string(),
        });
    }
    Ok(())
}

/// Checks privileges and kernel before touching anything.
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

pub(super) fn errno_in(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
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

pub(super) fn classify_load_error(err: &(dyn std::error::Error + 'static)) -> LoadError {
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
}
