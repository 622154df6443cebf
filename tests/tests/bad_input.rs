//! What a user gets wrong: each case must end in one clear line and leave nothing attached.

use flux_tests::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The error line (the last non-empty one on stderr).
/// Asserts the command failed and its error line contains `needle`; returns that line.
#[track_caller]
fn refused(o: &std::process::Output, needle: &str) -> String {
    assert!(!o.status.success(), "expected a failure: {o:?}");
    let line = error_line(o);
    assert!(line.contains(needle), "{}", stderr(o));
    line
}

fn error_line(o: &std::process::Output) -> String {
    stderr(o)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn unknown_interface() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let pin = PinDir::new();
    let o = agent_cli(
        Some(&link.client),
        &[
            "run",
            "--pin-dir",
            &pin.arg(),
            "--iface",
            "a0",
            "--iface",
            "nosuch0",
        ],
    );
    refused(&o, "no such interface 'nosuch0'");
    assert_eq!(
        xdp_prog_on(&link.client, "a0"),
        None,
        "nothing half-attached"
    );
}

#[test]
fn missing_privileges() {
    if !privileged() {
        return;
    }
    let pin = PinDir::new();
    // Drop every capability and become nobody.
    let as_nobody = |extra: &[&std::ffi::OsStr]| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ])
            .arg(agent_bin())
            .args(["run", "--iface", "lo", "--pin-dir", &pin.arg()])
            .args(extra)
            // A named config file, even this empty one, gets an info line ("configuration
            // ...: 0 keys set"), which is not what this test reads: warnings and errors only.
            .envs(BUILTIN_CONFIG)
            .env("RUST_LOG", "warn")
            .output()
            .expect("setpriv")
    };
    let o = as_nobody(&[]);
    let line = refused(&o, "permission denied");
    assert!(line.contains("CAP_BPF"), "{line}");
    assert_eq!(
        stderr(&o).trim().lines().count(),
        1,
        "one line: {}",
        stderr(&o)
    );

    // With an events file in a folder only root may write (the packaged
    // /var/log/flux-agent): still the missing privilege, not the folder.
    let logs = TempDir::new();
    std::fs::set_permissions(&logs.0, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let events = logs.0.join("events.jsonl");
    let o = as_nobody(&["--events".as_ref(), events.as_os_str()]);
    let line = refused(&o, "permission denied");
    assert!(line.contains("CAP_BPF"), "{line}");
    assert!(!events.exists(), "nothing written before the refusal");
}

#[test]
fn xdp_program_already_attached_needs_force_and_nothing_is_half_attached() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    link.add_pair(1);
    let _dns = start_dnsmasq(&link.server, &[]);

    // "Someone else": another agent instance (its own pin folder) owns a0 through a BPF link.
    let pin_other = PinDir::new();
    let mut other = Agent::start(&link.client, &pin_other, &["--iface", "a0"]);
    let theirs = xdp_prog_on(&link.client, "a0").expect("other agent attached");

    // a1 first, then a0: a0 fails, and a1 must not stay attached.
    let pin = PinDir::new();
    let o = agent_cli(
        Some(&link.client),
        &[
            "run",
            "--pin-dir",
            &pin.arg(),
            "--iface",
            "a1",
            "--iface",
            "a0",
        ],
    );
    let line = refused(&o, "already has an XDP program");
    assert!(line.contains("--force"), "{line}");
    assert_eq!(xdp_prog_on(&link.client, "a1"), None, "a1 left attached");
    assert_eq!(xdp_prog_on(&link.client, "a0"), Some(theirs));
    assert!(!pin.0.join("COUNTERS").exists(), "pins left behind");

    // With --force it takes over, and captures.
    let mut mine = Agent::start(&link.client, &pin, &["--iface", "a0", "--force"]);
    let ours = xdp_prog_on(&link.client, "a0").expect("attached");
    assert_ne!(ours, theirs);
    dig(&link.client, &[&format!("@{SERVER_V4}"), "a.flux.test"]);
    mine.wait_event("after --force", |e| e["qname"] == "a.flux.test");
    assert!(mine.stop().success());
    let _ = other.stop();
}

#[test]
fn legacy_netlink_attachment_is_detected_and_forced_out() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    // A program attached the old way (rtnetlink, as `ip link set xdp` does), from another loader.
    let pin_other = PinDir::new();
    let mut other = flux_agent::kernel::loader::load(&flux_agent::kernel::loader::LoadOptions {
        pin_dir: pin_other.0.clone(),
        ..Default::default()
    })
    .expect("load");
    let ifindex = link.client.run_in(|| {
        flux_agent::kernel::interfaces::Interface::by_name("a0")
            .expect("a0")
            .index
    });
    let prog: &mut aya::programs::Xdp = other
        .ebpf
        .program_mut(flux_common::PROG_XDP_NOOP)
        .unwrap()
        .try_into()
        .unwrap();
    prog.load().unwrap();
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = prog.fd().unwrap().as_fd().as_raw_fd();
    link.client.run_in(move || {
        flux_agent::kernel::xdp_owner::netlink_set_xdp_fd(ifindex, fd, 1 << 1)
            .expect("netlink attach")
    });
    let theirs = xdp_prog_on(&link.client, "a0").expect("netlink-attached");

    let pin = PinDir::new();
    let o = agent_cli(
        Some(&link.client),
        &["run", "--pin-dir", &pin.arg(), "--iface", "a0"],
    );
    assert!(
        error_line(&o).contains(&format!("(id {theirs})")),
        "{}",
        stderr(&o)
    );
    let mut mine = Agent::start(&link.client, &pin, &["--iface", "a0", "--force"]);
    assert_ne!(xdp_prog_on(&link.client, "a0"), Some(theirs));
    assert!(mine.stop().success());
    assert_ne!(xdp_prog_on(&link.client, "a0"), None, "stays enforcing");
    let o = agent_cli(None, &["unload", "--pin-dir", &pin.arg()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(xdp_prog_on(&link.client, "a0"), None);
    other.unpin_maps();
}

#[test]
fn second_agent_on_the_same_pin_folder_is_refused() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    link.add_pair(1);
    let pin = PinDir::new();
    let mut first = Agent::start(&link.client, &pin, &["--iface", "a0"]);
    let o = agent_cli(
        Some(&link.client),
        &["run", "--pin-dir", &pin.arg(), "--iface", "a1"],
    );
    refused(&o, "already running");
    assert_eq!(xdp_prog_on(&link.client, "a1"), None);
    assert!(first.stop().success());
}

#[test]
fn stats_without_an_agent_says_so() {
    if !privileged() {
        return;
    }
    let pin = PinDir::new();
    let o = agent_cli(None, &["stats", "--pin-dir", &pin.arg()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        error_line(&o).contains("no flux-agent is loaded"),
        "{}",
        stderr(&o)
    );
    let o = agent_cli(None, &["stats", "--json", "--pin-dir", &pin.arg()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["loaded"], false);
}
