//! `flux-detect` builds and passes its tests with the stable toolchain alone: no nightly, no
//! bpf-linker, no rustup, a fresh `CARGO_HOME`. Everything that decides (DNS parsing, capture
//! files, enrichment, the known-good list, the scorer) can be worked on without the kernel
//! toolchain.
//!
//! How: the stable toolchain's own `cargo` and `rustc` are run directly with a `PATH` of only
//! that toolchain and the system folders, a `RUSTUP_HOME` that does not exist and an empty
//! `CARGO_HOME` (its `registry` linked to the machine's, so the crates are read from the cache
//! with `--offline` instead of downloaded again). If flux-detect needed nightly, bpf-linker or
//! the eBPF object (aya-build), the build would fail.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn stable_toolchain() -> Option<PathBuf> {
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".rustup")))?;
    let dir = std::fs::read_dir(rustup_home.join("toolchains")).ok()?;
    let mut stable: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("stable-"))
        })
        .collect();
    stable.sort();
    stable.pop()
}

#[test]
fn flux_detect_builds_and_tests_on_stable_alone() {
    let Some(toolchain) = stable_toolchain() else {
        panic!("no stable toolchain under RUSTUP_HOME/toolchains");
    };
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    // A fresh home for each run, beside the build's own target folder.
    let scratch = root.join("target/stable-only/home");
    let _ = std::fs::remove_dir_all(&scratch);
    let fresh_home = scratch.join("cargo-home");
    std::fs::create_dir_all(&fresh_home).expect("cargo home");
    std::os::unix::fs::symlink(cargo_home.join("registry"), fresh_home.join("registry"))
        .expect("link the registry cache");
    let bin = toolchain.join("bin");
    let out = Command::new(bin.join("cargo"))
        .args(["test", "--offline", "--locked", "-p", "flux-detect"])
        .arg("--target-dir")
        .arg(root.join("target/stable-only"))
        .current_dir(&root)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", &scratch)
        .env("CARGO_HOME", &fresh_home)
        .env("RUSTUP_HOME", scratch.join("no-rustup"))
        .env("RUSTC", bin.join("rustc"))
        .output()
        .expect("run the stable cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cargo test -p flux-detect with stable alone failed:\n{stderr}"
    );
    assert!(
        stderr.contains("test result: ok")
            || String::from_utf8_lossy(&out.stdout).contains("test result: ok"),
        "no test ran:\n{stderr}"
    );
    // Nothing of the kernel toolchain was built.
    assert!(
        !stderr.contains("flux-ebpf") && !stderr.contains("aya"),
        "the stable build touched the kernel crates:\n{stderr}"
    );
}
