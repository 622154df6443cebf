//! `flux-agent status` and `flux-agent top` against a real agent in a netns lab (issue 16,
//! items 4 and 5): veth between two namespaces, dnsmasq serving a rotating flux zone, dig on
//! the client side, the real binary attached to the client's veth.
//!
//! - `status --json` before the agent starts (not loaded, exit 3), while it runs (pid,
//!   interfaces with attach mode and program and link ids, our pins, the database; exit 0),
//!   as an unprivileged user (cannot tell; exit 4), and after a SIGKILL (not running, the
//!   pins still enforcing; exit 3).
//! - `top` in a detached tmux session (160x50): the flux name dig resolved shows up; Enter
//!   shows its explanation; `b` then `y` blocks it (as `blocklist list --json` shows, and dig
//!   gets NXDOMAIN); `q` exits and the pane closes.

use std::{
    path::Path,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use flux_tests::*;
use serde_json::Value;

/// `flux-agent ARGS --pin-dir PIN` in the client namespace (netlink sees its interfaces).
fn cli(ns: &Netns, pin: &PinDir, args: &[&str]) -> Output {
    pin_cli(Some(ns), pin, args)
}

/// `status --json`: its exit status and its one JSON document.
fn status(ns: &Netns, pin: &PinDir) -> (i32, Value) {
    let o = cli(ns, pin, &["status", "--json"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "status --json is one document: {e}: {text:?}\n{}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

/// The control socket and interface file of the agent on `pin`, in /run/flux-agent.
fn run_files(pin: &PinDir) -> [std::path::PathBuf; 2] {
    [
        flux_agent::control::socket_path(&pin.0),
        flux_agent::kernel::iface_states::state_path(&pin.0),
    ]
}

#[test]
fn status_before_while_and_after_a_sigkill() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let _dns = start_dnsmasq(&link.server, &[]);
    let pin = PinDir::new();

    let (code, s) = status(&link.client, &pin);
    assert_eq!(code, 3, "nothing loaded is 'not running': {s}");
    assert_eq!(s["state"], "not-loaded", "{s}");
    assert_eq!(s["agent"]["running"], false);
    assert_eq!(s["enforcing"], false);

    let mut agent = Agent::start(
        &link.client,
        &pin,
        &["--iface", "a0", "--xdp-mode", "native", "--no-db"],
    );
    let out = dig(&link.client, &[&format!("@{SERVER_V4}"), "a.flux.test"]);
    assert!(out.contains("192.0.2.10"), "{out}");
    agent.wait_event("the response", |e| e["qname"] == "a.flux.test");

    let (code, s) = status(&link.client, &pin);
    assert_eq!(code, 0, "running: {s}");
    assert_eq!(s["state"], "running");
    let pid = agent.proc.as_ref().unwrap().child.id();
    assert_eq!(s["agent"]["pid"], pid, "{s}");
    assert_eq!(s["agent"]["answering"], true);
    assert!(s["agent"]["uptime_secs"].as_u64().is_some(), "{s}");
    assert!(s["agent"]["responses"].as_u64().unwrap() >= 1, "{s}");
    let prog = xdp_prog_on(&link.client, "a0").expect("an XDP program on a0");
    let a0 = s["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "a0")
        .unwrap_or_else(|| panic!("a0 listed: {s}"))
        .clone();
    assert_eq!(a0["state"], "attached", "{a0}");
    assert_eq!(a0["mode"], "native", "{a0}");
    assert_eq!(a0["prog_id"], prog, "the kernel's program: {a0}");
    assert_eq!(a0["link_prog_id"], prog, "the pinned link holds it: {a0}");
    assert!(a0["link_id"].as_u64().is_some_and(|id| id > 0), "{a0}");
    let pins = s["pins"].as_array().unwrap();
    for name in ["COUNTERS", "BLOCKED_DOMAINS", "xdp_link_a0"] {
        let p = pins
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} pinned: {s}"));
        assert_eq!(p["ours"], true, "{p}");
    }
    assert_eq!(s["database"]["exists"], true, "{s}");
    assert!(s["database"]["size_bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(
        s["database"]["path"],
        state_path_for(&pin.0).display().to_string()
    );
    assert!(
        s["counters"]["responses_captured"].as_u64().unwrap() >= 1,
        "{s}"
    );
    assert_eq!(s["recent"]["source"], "agent");
    // The readable form says it in its first line.
    let text = String::from_utf8_lossy(&cli(&link.client, &pin, &["status"]).stdout).into_owned();
    assert!(
        text.starts_with(&format!("flux-agent: running (pid {pid}")),
        "{text}"
    );

    // Without the privilege to look: "cannot tell" (4), never "not running".
    let o = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(agent_bin())
        .args(["status", "--json", "--pin-dir", &pin.arg(), "--no-state"])
        .output()
        .expect("setpriv");
    let v: Value = serde_json::from_slice(&o.stdout).expect("one document as nobody");
    assert_eq!(o.status.code(), Some(4), "{v}");
    assert_eq!(v["state"], "unknown", "{v}");
    assert!(
        v["summary"].as_str().unwrap().contains("permission denied"),
        "{v}"
    );

    // SIGKILL: no clean stop; the pins keep enforcing without a scorer.
    let mut p = agent.proc.take().unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGKILL) };
    p.child.wait().unwrap();
    // A SIGKILLed agent cannot remove its control socket: status must not be fooled by it.
    assert!(
        run_files(&pin)[0].exists(),
        "the stale socket this test needs"
    );
    let (code, s) = status(&link.client, &pin);
    assert_eq!(code, 3, "not running: {s}");
    assert_eq!(s["state"], "stopped-enforcing", "{s}");
    assert_eq!(s["enforcing"], true);
    assert_eq!(s["agent"]["running"], false);
    assert!(s["agent"]["pid"].is_null(), "{s}");
    assert_eq!(s["interfaces"][0]["name"], "a0", "{s}");
    assert_eq!(s["interfaces"][0]["prog_id"], prog, "{s}");
    assert_eq!(s["recent"]["source"], "database", "{s}");
    let text = String::from_utf8_lossy(&cli(&link.client, &pin, &["status"]).stdout).into_owned();
    assert!(text.contains("still attached and enforcing"), "{text}");

    let o = cli(&link.client, &pin, &["unload"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // unload removes what the killed run left in /run/flux-agent: no stale socket.
    for f in run_files(&pin) {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    let (code, s) = status(&link.client, &pin);
    assert_eq!((code, &s["state"]), (3, &Value::from("not-loaded")), "{s}");
}

/// Writes the flux zone's addresses for the round (five fresh ones, each in its own /16: a
/// botnet of home routers) and has dnsmasq reload them.
fn rotate(hosts: &Path, dns: &Proc, round: u32) {
    reload_hosts(hosts, dns, &fluxy_hosts(round));
}

/// A tmux server of its own (`-L`) running one session, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    const SESSION: &str = "top";

    fn start(command: &str) -> Self {
        let t = Self {
            socket: unique("tmux"),
        };
        let o = t.run(&[
            "new-session",
            "-d",
            "-s",
            Self::SESSION,
            "-x",
            "160",
            "-y",
            "50",
            command,
        ]);
        assert!(
            o.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux (installed by `cargo xtask setup`)")
    }

    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", Self::SESSION];
        a.extend_from_slice(keys);
        assert!(self.run(&a).status.success());
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .run(&["capture-pane", "-p", "-t", Self::SESSION])
                .stdout,
        )
        .into_owned()
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", Self::SESSION])
            .status
            .success()
    }

    /// Waits (bounded) until the screen shows `what`; returns it.
    #[track_caller]
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "never on screen: {what}\n{s}");
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The domain on the selected row (`> `) of top's table.
fn selected_domain(screen: &str) -> Option<String> {
    let row = screen.lines().find(|l| l.contains("> "))?;
    row.split_whitespace()
        .find(|w| w.ends_with("fluxy.test"))
        .map(str::to_owned)
}

#[test]
fn top_shows_explains_and_blocks_a_flux_name() {
    if !privileged() {
        return;
    }
    let link = Link::new();
    let dir = TempDir::new();
    let hosts = dir.0.join("hosts");
    std::fs::write(&hosts, "").unwrap();
    let dns = start_dnsmasq(
        &link.server,
        &[
            format!("--addn-hosts={}", hosts.display()),
            "--local=/fluxy.test/".into(),
            "--local-ttl=30".into(),
        ],
    );
    let pin = PinDir::new();
    // Scored but never blocked automatically: the block must come from `top`.
    let agent = Agent::start(
        &link.client,
        &pin,
        &["--iface", "a0", "--no-db", "--no-auto-block"],
    );
    let flagged = |a: &Agent| {
        a.events().iter().any(|e| {
            e["type"] == "verdict"
                && e["level"] == "flux"
                && e["domain"]
                    .as_str()
                    .is_some_and(|d| d.ends_with("fluxy.test"))
        })
    };
    for round in 0..12u32 {
        rotate(&hosts, &dns, round);
        thread::sleep(Duration::from_millis(300));
        let out = dig(&link.client, &[&format!("@{SERVER_V4}"), "www.fluxy.test"]);
        assert!(out.contains("status: NOERROR"), "round {round}: {out}");
        if flagged(&agent) {
            break;
        }
    }
    assert!(
        flagged(&agent),
        "the flux zone was never scored flux: {:#?}\n{}",
        agent.events(),
        agent.log()
    );

    let command = format!(
        "nsenter --net={} -- {} top --pin-dir {} --state {}",
        link.client.path().display(),
        agent_bin().display(),
        pin.arg(),
        state_path_for(&pin.0).display()
    );
    let tmux = Tmux::start(&command);
    let screen = tmux.wait_for("the flux name, selected", |s| {
        selected_domain(s).is_some() && s.contains("most suspicious domains")
    });
    let domain = selected_domain(&screen).unwrap();
    assert!(screen.contains("DNS responses/s"), "{screen}");
    assert!(screen.contains("flux"), "{screen}");

    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("the explanation", |s| {
        s.contains(&format!("explain {domain}")) && s.contains("block gate")
    });
    assert!(s.contains("reasons:"), "{s}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("the list again", |s| {
        !s.contains(&format!("explain {domain}"))
    });

    tmux.keys(&["b"]);
    tmux.wait_for("the confirmation", |s| {
        s.contains(&format!("Block {domain}"))
    });
    tmux.keys(&["y"]);
    tmux.wait_for("the block done", |s| {
        s.contains(&format!("blocked {domain}"))
    });
    let o = cli(&link.client, &pin, &["blocklist", "list", "--json"]);
    let list: Value = serde_json::from_slice(&o.stdout).expect("blocklist list --json");
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "domain" && e["value"] == domain.as_str())
        .unwrap_or_else(|| panic!("{domain} blocked: {list}"));
    assert_eq!(entry["source"], "manual", "{entry}");
    assert_eq!(entry["reason"], "top", "{entry}");
    let out = dig(&link.client, &[&format!("@{SERVER_V4}"), "www.fluxy.test"]);
    assert!(out.contains("status: NXDOMAIN"), "enforced: {out}");

    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.alive() {
        assert!(
            Instant::now() < deadline,
            "top did not exit:\n{}",
            tmux.screen()
        );
        thread::sleep(Duration::from_millis(100));
    }
    drop(agent);
    let o = cli(&link.client, &pin, &["unload"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in run_files(&pin) {
        assert!(!f.exists(), "{} left behind", f.display());
    }
}
