//! `cargo xtask setup`: idempotent installation of the build and test prerequisites.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};

use crate::{is_root, sh};

/// Pinned so every machine links the same linker.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the privileged tests use, keyed by the command that proves each is present.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("dnsmasq", "dnsmasq-base"),
    ("dig", "bind9-dnsutils"),
    ("kdig", "knot-dnsutils"),
    ("bpftool", "bpftool"),
];

pub fn setup() -> anyhow::Result<()> {
    let nightly = nightly_info()?;
    ensure_rust_src()?;
    ensure_bpf_linker(&nightly)?;
    ensure_packages()?;
    Ok(())
}

/// What the setup needs to know about the nightly toolchain.
#[derive(Debug, PartialEq, Eq)]
pub struct Nightly {
    pub sysroot: PathBuf,
    /// LLVM major version, e.g. 22.
    pub llvm_major: u32,
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn nightly_info() -> anyhow::Result<Nightly> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"])).map_err(|_| {
        anyhow!("no nightly Rust toolchain: install one with `rustup toolchain install nightly`")
    })?;
    let llvm_major = parse_llvm_major(&vv)
        .ok_or_else(|| anyhow!("`rustc +nightly -vV` reports no LLVM version:\n{vv}"))?;
    let sysroot = PathBuf::from(output(
        Command::new("rustc").args(["+nightly", "--print", "sysroot"]),
    )?);
    Ok(Nightly {
        sysroot,
        llvm_major,
    })
}

/// `LLVM version: 22.1.4` -> 22.
pub fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|m| m.parse().ok())
}

/// The versioned libLLVM the nightly ships, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
pub fn find_llvm_soname(names: &[String], llvm_major: u32) -> Option<String> {
    let prefix = format!("libLLVM.so.{llvm_major}");
    let mut found: Vec<&String> = names.iter().filter(|n| n.starts_with(&prefix)).collect();
    found.sort();
    found.last().map(|s| (*s).clone())
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing rust-src for the nightly toolchain (needed for -Z build-std)"
    );
    sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context(
            "could not install rust-src; run `rustup component add rust-src --toolchain nightly`",
        )
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn bpf_linker_works() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_bpf_linker(nightly: &Nightly) -> anyhow::Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let libdir = nightly.sysroot.join("lib");
    let names: Vec<String> = std::fs::read_dir(&libdir)
        .with_context(|| format!("read {}", libdir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let soname = find_llvm_soname(&names, nightly.llvm_major).ok_or_else(|| {
        anyhow!(
            "the nightly in {} ships no libLLVM.so.{}*; reinstall it with `rustup toolchain install nightly`",
            nightly.sysroot.display(),
            nightly.llvm_major
        )
    })?;
    // bpf-linker records this folder as its RUNPATH, so it must outlive the build: keep it in
    // CARGO_HOME, named after the exact LLVM it points to.
    let prefix = cargo_home().join("flux-agent-llvm").join(&soname);
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("create {}", lib.display()))?;
    for link in ["libLLVM.so", soname.as_str()] {
        let path = lib.join(link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(libdir.join(&soname), &path)
            .with_context(|| format!("symlink {}", path.display()))?;
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {} ({soname}); this takes a few minutes",
        nightly.llvm_major
    );
    sh(Command::new("cargo")
        .env("LLVM_PREFIX", &prefix)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{}", nightly.llvm_major)))
    .context("could not build bpf-linker; see the cargo output above")?;
    if !bpf_linker_works() {
        bail!(
            "bpf-linker was installed but does not run; make sure {} is on PATH",
            cargo_home().join("bin").display()
        );
    }
    Ok(())
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() || !have("apt-get") {
        bail!("missing test tools; install them with `sudo apt-get install -y {list}`");
    }
    eprintln!("xtask setup: installing Debian packages: {list}");
    sh(Command::new("apt-get").args(["update", "-q"])).with_context(|| {
        format!("apt-get update failed; install by hand: apt-get install -y {list}")
    })?;
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
    .with_context(|| format!("could not install {list}; try `apt-get install -y {list}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.0\n"), None);
    }

    #[test]
    fn soname_from_sysroot_listing() {
        let names: Vec<String> = [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a965480ee51f9a.so",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            find_llvm_soname(&names, 22).as_deref(),
            Some("libLLVM.so.22.1-rust-1.97.0-nightly")
        );
        assert_eq!(find_llvm_soname(&names, 21), None);
    }
}
