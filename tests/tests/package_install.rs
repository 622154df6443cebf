//! The .deb on the real system (issue 16, item 3): `cargo xtask package` builds it (or
//! `$FLUX_AGENT_DEB` names one already built), `dpkg -i` installs it on this machine (a
//! throwaway test machine), and the installed files are checked where an operator finds them:
//! `--version` and `config check` from /usr/bin, the unit through `systemd-analyze verify`, the
//! conffiles, the completions and the manual pages, the private state folder, the service left
//! disabled. The installed agent runs in a namespace and stops, leaving its programs attached;
//! `dpkg --purge` removes the package and them, also when an assertion fails. The figures for the
//! closing note (Installed-Size and `du` of the installed files) are printed.
//!
//! A second test forces a rotation with Debian's logrotate through the packaged
//! dist/flux-agent.logrotate, pointed at a temporary folder.
//!
//! Privileged (root, dpkg, systemd-analyze, logrotate): skipped when they are missing, except
//! in CI (CI set), where that is a failure.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use flux_agent::kernel::loader::DEFAULT_PIN_DIR;
use flux_tests::{AGENT_START_WAIT, Netns, Proc, TempDir, privileged};

const PACKAGE: &str = "flux-agent";
const BIN: &str = "/usr/bin/flux-agent";
const UNIT: &str = "/lib/systemd/system/flux-agent.service";
const CONFIG: &str = "/etc/flux-agent/flux-agent.toml";
const ALLOWLIST: &str = "/etc/flux-agent/allowlist";
const LOGROTATE: &str = "/etc/logrotate.d/flux-agent";
const STATE_DIR: &str = "/var/lib/flux-agent";
/// The packaged config's events file, and its folder (made by postinst and the unit).
const EVENTS: &str = "/var/log/flux-agent/events.jsonl";
const LOG_DIR: &str = "/var/log/flux-agent";
/// Completion scripts, where each shell looks for them.
const COMPLETIONS: &[&str] = &[
    "/usr/share/bash-completion/completions/flux-agent",
    "/usr/share/zsh/vendor-completions/_flux-agent",
    "/usr/share/fish/vendor_completions.d/flux-agent.fish",
];
/// Two of the manual pages: the command's and `run`'s (every subcommand has one).
const MAN_PAGES: &[&str] = &[
    "/usr/share/man/man1/flux-agent.1.gz",
    "/usr/share/man/man1/flux-agent-run.1.gz",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Whether `cmd` runs on this machine.
fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Root and the named tools, or a skip (a failure in CI).
fn can_run(tools: &[&str]) -> bool {
    if !privileged() {
        return false;
    }
    let ci = std::env::var_os("CI").is_some_and(|v| v != "false" && v != "0");
    match tools.iter().find(|t| !have(t)) {
        None => true,
        Some(t) if ci => panic!("{t} is missing in CI: `cargo xtask setup` installs it"),
        Some(t) => {
            eprintln!("SKIPPED: {t} is missing (run `cargo xtask setup`)");
            false
        }
    }
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, failing the test with its output unless it succeeds; its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The .deb: `$FLUX_AGENT_DEB`, else what `cargo xtask package` builds (the last line it
/// prints; setup may print before it).
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("FLUX_AGENT_DEB") {
        return PathBuf::from(p);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = ok(Command::new(cargo)
        .args(["xtask", "package"])
        .current_dir(workspace())
        .stderr(Stdio::inherit()));
    let line = out.lines().map(str::trim).rfind(|l| l.ends_with(".deb"));
    PathBuf::from(line.unwrap_or_else(|| panic!("cargo xtask package printed no .deb:\n{out}")))
}

fn installed() -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]))
        .stdout
        .starts_with(b"install ok installed")
}

/// The package installed for as long as it lives: purged on drop (a failing test too), and the
/// state folder's mode put back (it may predate the package: `cargo xtask setup` keeps the IP
/// databases in it).
struct Installed {
    state_mode: Option<u32>,
}

impl Installed {
    fn install(deb: &Path) -> Self {
        if installed() {
            // A run that was killed before its cleanup: start from a clean machine.
            ok(Command::new("dpkg").args(["--purge", PACKAGE]));
        }
        let state_mode = fs::metadata(STATE_DIR)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777);
        let guard = Self { state_mode };
        ok(Command::new("dpkg").arg("-i").arg(deb));
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let out = output(Command::new("dpkg").args(["--purge", PACKAGE]));
        if !out.status.success() {
            eprintln!(
                "dpkg --purge {PACKAGE} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(mode) = self.state_mode {
            let _ = fs::set_permissions(STATE_DIR, fs::Permissions::from_mode(mode));
        }
    }
}

/// Removes the default pin folder on drop, should the package's removal have left it (the test
/// fails then): removing the link pins detaches the programs.
struct PinCleanup;

impl Drop for PinCleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(DEFAULT_PIN_DIR);
    }
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files the package installed (directories left out), from dpkg's own list.
fn package_files() -> Vec<PathBuf> {
    ok(Command::new("dpkg").args(["-L", PACKAGE]))
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect()
}

/// Starts /usr/bin/flux-agent on `dev` in `ns` with the default pin folder, waits until its
/// XDP link is pinned, and stops it with SIGINT; its exit status.
fn run_installed_agent(ns: &Netns, dev: &str) -> std::process::ExitStatus {
    // Its log in a file: SIGINT is sent once it says it is capturing (its signal handlers are
    // in place from then on; a signal during the start ends the process at once, as the pin
    // alone does not tell).
    let dir = TempDir::new();
    let log_path = dir.0.join("agent.stderr");
    let mut cmd = ns.cmd(BIN);
    cmd.args(["run", "--iface", dev, "--no-db", "--no-state"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"));
    let mut agent = Proc::spawn("flux-agent", &mut cmd);
    let pin = Path::new(DEFAULT_PIN_DIR).join(format!("xdp_link_{dev}"));
    let deadline = Instant::now() + AGENT_START_WAIT;
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if pin.exists() && log.contains("capturing DNS responses") {
            break;
        }
        if let Some(st) = agent.child.try_wait().expect("wait") {
            panic!("the installed agent exited early ({st}):\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "{} or the capturing line never appeared:\n{log}",
            pin.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.interrupt()
}

/// The configuration files (dpkg keeps them as conffiles), the completions, the manual pages
/// and the private state folder, as installed.
fn check_files_in_place() {
    // The configuration files, and dpkg keeps them as conffiles.
    let known_good = workspace().join("flux-detect/data/known-good.txt");
    assert_eq!(read(ALLOWLIST), read(known_good));
    assert_eq!(
        read(LOGROTATE),
        read(workspace().join("dist/flux-agent.logrotate"))
    );
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    for f in [CONFIG, ALLOWLIST, LOGROTATE] {
        assert!(conffiles.contains(f), "{f} is not a conffile:\n{conffiles}");
    }

    // Completions and manual pages.
    for f in COMPLETIONS {
        let text = read(f);
        assert!(
            text.contains("flux-agent") && text.contains("blocklist"),
            "{f}"
        );
    }
    let bash = ok(Command::new(BIN).args(["completions", "bash"]));
    assert!(!bash.trim().is_empty());
    assert_eq!(bash, read(COMPLETIONS[0]));
    for page in MAN_PAGES {
        assert!(fs::metadata(page).is_ok_and(|m| m.len() > 0), "{page}");
    }
    let found = ok(Command::new("man").args(["-w", "flux-agent"]));
    assert_eq!(found.trim(), MAN_PAGES[0]);

    // The state and log folders are root's only.
    for dir in [STATE_DIR, LOG_DIR] {
        let mode = fs::metadata(dir).map(|m| m.permissions().mode() & 0o7777);
        assert_eq!(mode.ok(), Some(0o700), "{dir}");
    }
}

/// The figure for the closing note: the control file's Installed-Size and what the installed
/// files take on disk.
fn print_size_figure(installed_size: &str) {
    let files = package_files();
    assert!(files.iter().any(|f| f == Path::new(BIN)));
    let du = ok(Command::new("du")
        .args(["-ck", "--apparent-size"])
        .args(&files));
    let du_disk = ok(Command::new("du").arg("-ck").args(&files));
    let total = |s: &str| s.lines().last().unwrap_or_default().to_owned();
    eprintln!(
        "FIGURE installed package: Installed-Size {} KiB; {} files, du --apparent-size {}; du {}",
        installed_size.trim(),
        files.len(),
        total(&du),
        total(&du_disk)
    );
}

#[test]
fn the_deb_installs_runs_and_purges() {
    if !can_run(&["dpkg", "dpkg-deb", "systemd-analyze", "man"]) {
        return;
    }
    // Removing the package unloads the default pin folder (dist/deb/prerm): never do that to
    // an agent someone runs on this machine.
    assert!(
        !Path::new(DEFAULT_PIN_DIR).exists(),
        "an agent is enforcing from {DEFAULT_PIN_DIR}: `dpkg --purge` would unload it; \
         stop it and run `flux-agent unload` first"
    );
    let _pins = PinCleanup;
    let deb = deb();
    assert!(deb.exists(), "{}", deb.display());
    let size_field = ok(Command::new("dpkg-deb")
        .arg("-f")
        .arg(&deb)
        .arg("Installed-Size"));
    let guard = Installed::install(&deb);
    assert!(installed());

    // The binary, from its installed path.
    let version = ok(Command::new(BIN).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("flux-agent {}", env!("CARGO_PKG_VERSION"))
    );

    // The unit, as systemd would read it (its ExecStart and man: references resolve now).
    let unit = read(UNIT);
    assert_eq!(unit, read(workspace().join("dist/flux-agent.service")));
    ok(Command::new("systemd-analyze").args(["verify", UNIT]));
    // Installed, not enabled and not started: operators do that.
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/flux-agent.service").exists());

    check_files_in_place();

    // The packaged config is valid, checked by the installed binary (the config package adds
    // `config check` and the file).
    ok(Command::new(BIN).args(["config", "check", CONFIG]));

    print_size_figure(&size_field);

    // The installed agent leaves its programs attached when it stops (as it does under the
    // service); removing the package unloads them (dist/deb/prerm).
    let ns = Netns::new("pk");
    ns.exec(&[
        "ip", "link", "add", "pk0", "type", "veth", "peer", "name", "pk1",
    ]);
    ns.exec(&["ip", "link", "set", "pk0", "up"]);
    ns.exec(&["ip", "link", "set", "pk1", "up"]);
    let stopped = run_installed_agent(&ns, "pk0");
    assert!(stopped.success(), "the installed agent: {stopped}");
    // It read the packaged config (the default path): its events went to the file logrotate
    // rotates, not one line per response to stdout (the journal, under the unit).
    let events = fs::metadata(EVENTS).map(|m| m.permissions().mode() & 0o7777);
    assert_eq!(events.ok(), Some(0o600), "{EVENTS}");
    let link_pin = Path::new(DEFAULT_PIN_DIR).join("xdp_link_pk0");
    assert!(link_pin.exists(), "no enforcement left after a stop");

    // Purge removes the files, the conffiles included, and what the agent left attached.
    drop(guard);
    assert!(
        !Path::new(DEFAULT_PIN_DIR).exists(),
        "purge left {DEFAULT_PIN_DIR}"
    );
    assert!(!installed());
    for f in [
        BIN,
        UNIT,
        CONFIG,
        ALLOWLIST,
        LOGROTATE,
        MAN_PAGES[0],
        LOG_DIR,
    ] {
        assert!(!Path::new(f).exists(), "{f} left after purge");
    }
}

#[test]
fn logrotate_rotates_the_events_file() {
    if !can_run(&["logrotate"]) {
        return;
    }
    let dir = TempDir::new();
    let logs = dir.0.join("log");
    fs::create_dir_all(&logs).unwrap();
    fs::set_permissions(&logs, fs::Permissions::from_mode(0o700)).unwrap();
    let events = logs.join("events.jsonl");
    fs::write(&events, "{\"type\":\"response\"}\n").unwrap();
    // The packaged file, pointed at the temporary folder.
    let packaged = fs::read_to_string(workspace().join("dist/flux-agent.logrotate")).unwrap();
    assert!(packaged.contains("/var/log/flux-agent/events.jsonl {"));
    let conf = dir.0.join("flux-agent.logrotate");
    fs::write(
        &conf,
        packaged.replace("/var/log/flux-agent/", &format!("{}/", logs.display())),
    )
    .unwrap();
    let state = dir.0.join("logrotate.state");
    // A dry run parses it without complaint.
    let dry = output(
        Command::new("logrotate")
            .arg("--debug")
            .arg("-s")
            .arg(&state)
            .arg(&conf),
    );
    let said = String::from_utf8_lossy(&dry.stderr).into_owned();
    assert!(dry.status.success(), "{said}");
    assert!(!said.contains("error"), "{said}");
    // A forced rotation renames it to a dated name and creates nothing (the agent does, on
    // SIGHUP); the agent's own size bound uses events.jsonl.1, which stays free.
    ok(Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(&state)
        .arg(&conf));
    assert!(!events.exists(), "the live file was not rotated");
    let rotated: Vec<PathBuf> = fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    let name = rotated[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let date = name.strip_prefix("events.jsonl-").unwrap_or_default();
    assert!(
        date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    // delaycompress: the newest rotation stays plain, the agent may still be appending to it.
    assert_eq!(
        fs::read_to_string(&rotated[0]).unwrap(),
        "{\"type\":\"response\"}\n"
    );
}
