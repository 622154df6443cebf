//! `cargo xtask package`: the release binary, its shell completions and manual pages, and a .deb
//! built from them with cargo-deb (`[package.metadata.deb]` in flux-agent/Cargo.toml says what
//! goes where; dist/ holds the unit, the logrotate file and the maintainer scripts).
//!
//! Prints the .deb's path as the only line on stdout (the package test reads it), and its
//! Installed-Size on stderr. May touch: target/ (the release build, `release/deb-assets/`,
//! `debian/`), nothing outside the workspace.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{setup, sh, workspace_root};

/// Where the generated assets go, under the release target folder: cargo-deb's asset paths
/// start with `target/release/`, which it maps to the real target folder.
const ASSETS: &str = "deb-assets";

/// The shells whose completion scripts are packaged, with the file name each one's standard
/// completion folder expects (see the asset list in flux-agent/Cargo.toml).
const SHELLS: &[(&str, &str)] = &[
    ("bash", "flux-agent.bash"),
    ("zsh", "_flux-agent"),
    ("fish", "flux-agent.fish"),
];

/// Files the .deb takes from dist/ (a missing one fails before the long build, by name).
const DIST_FILES: &[&str] = &[
    "flux-agent.service",
    "flux-agent.logrotate",
    "flux-agent.toml",
    "deb/postinst",
    "deb/prerm",
    "deb/postrm",
];

pub fn package() -> anyhow::Result<()> {
    let root = workspace_root();
    for f in DIST_FILES {
        let p = root.join("dist").join(f);
        if !p.exists() {
            bail!("{} is missing; the .deb installs it", p.display());
        }
    }
    setup::setup()?;
    sh(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "flux-agent",
        "--bin",
        "flux-agent",
    ]))?;
    let release = target_dir(&root).join("release");
    generate_assets(&release.join("flux-agent"), &release.join(ASSETS))?;
    let deb = cargo_deb()?;
    let size = installed_size(&deb)?;
    eprintln!(
        "xtask: package: {} (Installed-Size: {size} KiB)",
        deb.display()
    );
    println!("{}", deb.display());
    Ok(())
}

/// `$CARGO_TARGET_DIR`, else the workspace's `target/`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |d| root.join(d))
}

/// The completion scripts and gzipped manual pages, written by the release binary itself.
fn generate_assets(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    let raw = dir.join("man-raw");
    let man = dir.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("create {}", man.display()))?;
    for (shell, file) in SHELLS {
        let script = output(Command::new(bin).args(["completions", shell]))?;
        if script.is_empty() {
            bail!("`flux-agent completions {shell}` printed nothing");
        }
        write(&dir.join(file), &script)?;
    }
    sh(Command::new(bin).arg("manpages").arg(&raw))?;
    let mut pages = 0;
    for entry in std::fs::read_dir(&raw).with_context(|| format!("read {}", raw.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let page = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        write(&man.join(format!("{name}.gz")), &gzip(&page)?)?;
        pages += 1;
    }
    if pages == 0 {
        bail!("`flux-agent manpages` wrote no page into {}", raw.display());
    }
    eprintln!(
        "xtask: package: {} completion scripts, {pages} manual pages",
        SHELLS.len()
    );
    Ok(())
}

/// gzip as Debian wants manual pages: best compression, no name and no time stamp in the
/// header (`gzip -9n`), so the same page always gives the same bytes.
fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

fn write(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))
}

/// Stdout of a command that must succeed (its stderr goes to ours).
fn output(cmd: &mut Command) -> anyhow::Result<Vec<u8>> {
    let line = format!("{cmd:?}");
    let out = cmd
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {line}"))?;
    if !out.status.success() {
        bail!("{line} failed ({})", out.status);
    }
    Ok(out.stdout)
}

/// `cargo deb --no-build`: the path of the .deb it wrote (the last line it prints).
fn cargo_deb() -> anyhow::Result<PathBuf> {
    let mut cmd = crate::cargo();
    cmd.args(["deb", "-p", "flux-agent", "--no-build"]);
    eprintln!("xtask: $ {cmd:?}");
    let out = String::from_utf8_lossy(&output(&mut cmd)?).into_owned();
    let deb = out
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".deb"))
        .map(|l| workspace_root().join(l))
        .with_context(|| format!("cargo deb printed no .deb path:\n{out}"))?;
    if !deb.exists() {
        bail!("cargo deb named {}, which does not exist", deb.display());
    }
    Ok(deb)
}

/// The control file's Installed-Size (KiB), as dpkg reads it.
fn installed_size(deb: &Path) -> anyhow::Result<u64> {
    let out = output(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .arg("Installed-Size"),
    )?;
    let text = String::from_utf8_lossy(&out);
    text.trim()
        .parse()
        .with_context(|| format!("Installed-Size of {}: {text:?}", deb.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(name: &str) -> String {
        let p = workspace_root().join("dist").join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The values of `key=` in the unit (every occurrence, in order).
    fn directive(unit: &str, key: &str) -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().to_owned())
            .collect()
    }

    #[test]
    fn the_unit_is_hardened_as_the_issue_asks() {
        let unit = dist("flux-agent.service");
        let one = |key: &str| {
            let v = directive(&unit, key);
            assert_eq!(v.len(), 1, "{key}: {v:?}");
            v.into_iter().next().unwrap_or_default()
        };
        assert_eq!(
            one("ExecStart"),
            "/usr/bin/flux-agent run --config /etc/flux-agent/flux-agent.toml"
        );
        assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
        assert_eq!(one("Restart"), "on-failure");
        assert_eq!(one("ProtectSystem"), "strict");
        // The capabilities `run` was seen to need, and no other.
        let mut caps: Vec<&str> = Vec::new();
        let bounding = one("CapabilityBoundingSet");
        caps.extend(bounding.split_whitespace());
        caps.sort_unstable();
        assert_eq!(
            caps,
            ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_ADMIN"]
        );
        assert_eq!(one("AmbientCapabilities"), "");
        // Writable: the state, runtime and logs folders and bpffs; nothing else.
        assert_eq!(one("ReadWritePaths"), "/sys/fs/bpf");
        assert_eq!(one("StateDirectory"), "flux-agent");
        assert_eq!(one("RuntimeDirectory"), "flux-agent");
        assert_eq!(one("LogsDirectory"), "flux-agent");
        for key in [
            "CacheDirectory",
            "ConfigurationDirectory",
            "ReadWriteDirectories",
        ] {
            assert!(directive(&unit, key).is_empty(), "{key}");
        }
        for key in [
            "NoNewPrivileges",
            "ProtectHome",
            "PrivateTmp",
            "PrivateDevices",
            "ProtectKernelTunables",
            "ProtectKernelModules",
            "ProtectControlGroups",
            "RestrictNamespaces",
            "MemoryDenyWriteExecute",
        ] {
            assert_eq!(one(key), "yes", "{key}");
        }
        assert_eq!(one("SystemCallFilter"), "@system-service bpf");
        assert_eq!(one("WantedBy"), "multi-user.target");
    }

    #[test]
    fn logrotate_rotates_the_logs_folder_and_signals_the_agent() {
        let conf = dist("flux-agent.logrotate");
        let unit = dist("flux-agent.service");
        assert_eq!(directive(&unit, "LogsDirectory"), ["flux-agent"]);
        assert!(
            conf.contains("/var/log/flux-agent/events.jsonl {"),
            "{conf}"
        );
        // Dated names, never `.1`: the agent's own size bound renames to events.jsonl.1.
        assert!(conf.lines().any(|l| l.trim() == "dateext"));
        assert!(conf.contains("--signal=HUP flux-agent.service"));
    }

    #[test]
    fn the_deb_metadata_installs_every_file_the_issue_names() {
        let manifest = std::fs::read_to_string(workspace_root().join("flux-agent/Cargo.toml"))
            .unwrap_or_default();
        let deb = manifest
            .split_once("[package.metadata.deb]")
            .map(|(_, d)| d)
            .unwrap_or_default();
        for dest in [
            "\"usr/bin/\"",
            "\"lib/systemd/system/flux-agent.service\"",
            "\"etc/flux-agent/flux-agent.toml\"",
            "\"etc/flux-agent/allowlist\"",
            "\"etc/logrotate.d/flux-agent\"",
            "\"usr/share/bash-completion/completions/flux-agent\"",
            "\"usr/share/zsh/vendor-completions/_flux-agent\"",
            "\"usr/share/fish/vendor_completions.d/flux-agent.fish\"",
            "\"usr/share/man/man1/\"",
        ] {
            assert!(deb.contains(dest), "no asset installs {dest}");
        }
        for (_, file) in SHELLS {
            assert!(deb.contains(&format!("deb-assets/{file}\"")), "{file}");
        }
        assert!(deb.contains("maintainer-scripts = \"../dist/deb/\""));
    }

    #[test]
    fn maintainer_scripts_make_the_state_folder_private_and_start_nothing() {
        let postinst = dist("deb/postinst");
        assert!(postinst.contains("install -d -m 0700 -o root -g root \"$STATE_DIR\""));
        for script in ["deb/postinst", "deb/prerm", "deb/postrm"] {
            let text = dist(script);
            // Operators enable it; an upgrade's try-restart only restarts a running agent.
            for forbidden in [
                "systemctl start",
                "systemctl enable",
                "systemctl restart",
                "invoke start",
                "invoke restart",
                "helper enable",
            ] {
                assert!(!text.contains(forbidden), "{script}: {forbidden}");
            }
        }
    }

    #[test]
    fn maintainer_scripts_parse() {
        for script in ["deb/postinst", "deb/prerm", "deb/postrm"] {
            let path = workspace_root().join("dist").join(script);
            let st = Command::new("sh").arg("-n").arg(&path).status().unwrap();
            assert!(st.success(), "{}", path.display());
            let mode = std::fs::metadata(&path).unwrap().permissions();
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(mode.mode() & 0o111, 0o111, "{script} is not executable");
        }
    }

    #[test]
    fn gzip_is_reproducible_and_round_trips() {
        use std::io::Read as _;
        let page = b".TH flux-agent 1\n".repeat(50);
        let a = gzip(&page).unwrap();
        assert_eq!(a, gzip(&page).unwrap());
        // No MTIME (bytes 4..8) and no FNAME flag.
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
        assert_eq!(a[3] & 0x08, 0);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, page);
    }
}
