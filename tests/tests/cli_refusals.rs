//! Three CLI defects of issue 14 (item 9 of "Measured"), each checked on a real kernel:
//!
//! - an unprivileged user is told "permission denied" (one line, non-zero exit), never
//!   "nothing is loaded";
//! - a second agent that finds the first agent's `flux_xdp` on its interface says it belongs to
//!   another flux-agent instance and names that one's pin folder, never "another tool";
//! - a `run` that fails removes the pin folders it created (nested ones too), and never one
//!   that existed before it started.

use std::{path::PathBuf, process::Command};

use flux_tests::*;

/// A fresh folder name under bpffs (not created).
fn bpffs_path(tag: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf").join(unique(tag))
}

/// Removes a folder tree on drop, whatever the test did.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_unprivileged_user_is_told_permission_denied() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let pin = PinDir::new();
    let mut agent = Agent::start(&link.client, &pin, &["--iface", "a0", "--no-db"]);
    for args in [
        &["stats"][..],
        &["stats", "--json"],
        &["blocklist", "list"],
        &["allowlist", "list"],
        &["unload"],
    ] {
        let out = run_ignoring_status(
            Command::new("setpriv")
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                .arg(agent_bin())
                .args(args)
                .args(["--pin-dir", &pin.arg()]),
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{args:?} succeeded as nobody: {all}");
        assert!(all.contains("permission denied"), "{args:?}: {all}");
        assert!(!all.contains("nothing is loaded"), "{args:?}: {all}");
        assert!(!all.contains("no flux-agent is loaded"), "{args:?}: {all}");
        assert_eq!(all.trim().lines().count(), 1, "{args:?}: one line: {all}");
    }
    assert!(agent.stop().success(), "{}", agent.log());
}

fn run_ignoring_status(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

#[test]
fn a_second_agent_is_named_as_such() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let first = PinDir::new();
    let mut agent = Agent::start(&link.client, &first, &["--iface", "a0", "--no-db"]);
    let second = PinDir::new();
    let out = agent_cli(
        Some(&link.client),
        &[
            "run",
            "--iface",
            "a0",
            "--no-db",
            "--pin-dir",
            &second.arg(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second agent attached: {err}");
    assert!(err.contains("another flux-agent"), "{err}");
    assert!(
        err.contains(&first.arg()),
        "first agent's folder named: {err}"
    );
    assert!(!err.contains("another tool"), "{err}");
    assert!(agent.stop().success(), "{}", agent.log());
}

/// The attach of a second agent fails (the first one holds the interface): what it created
/// goes, what existed stays.
#[test]
fn a_failed_run_removes_only_the_folders_it_created() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let first = PinDir::new();
    let mut agent = Agent::start(&link.client, &first, &["--iface", "a0", "--no-db"]);

    // In a nested folder that does not exist yet: both levels go.
    let outer = bpffs_path("outer");
    let _outer = Cleanup(outer.clone());
    let nested = outer.join("inner");
    let out = agent_cli(
        Some(&link.client),
        &[
            "run",
            "--iface",
            "a0",
            "--no-db",
            "--pin-dir",
            nested.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success(), "second agent attached");
    assert!(!nested.exists(), "failed run left {}", nested.display());
    assert!(!outer.exists(), "failed run left {}", outer.display());

    // A folder that existed before the failed run stays.
    let before = bpffs_path("before");
    let _before = Cleanup(before.clone());
    std::fs::create_dir(&before).expect("create folder");
    let out = agent_cli(
        Some(&link.client),
        &[
            "run",
            "--iface",
            "a0",
            "--no-db",
            "--pin-dir",
            before.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    assert!(before.is_dir(), "a folder that existed before was removed");
    assert_eq!(
        std::fs::read_dir(&before).expect("read").count(),
        0,
        "the failed run's pins were left in {}",
        before.display()
    );
    assert!(agent.stop().success(), "{}", agent.log());
}
