//! Harness for the privileged integration tests: network namespaces, veth pairs, real DNS servers
//! and clients, and the real `flux-agent` binary. Everything made here is removed on drop, so a
//! failing test cleans up too.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod eval;
pub mod events_schema;
pub mod fleet_sim;
pub mod nats_lab;
pub mod paced_sender;
pub mod xdp_harness;
/// The frame builders of the frame-walk spec (`flux_detect::frame_spec`), under their old path.
pub use flux_detect::frame_spec::frame_builders as frames;

/// Whether privileged tests can run. In CI (CI set) a missing privilege is a failure, never a
/// skip; elsewhere the test prints why and returns early.
pub fn privileged() -> bool {
    let ci = std::env::var_os("CI").is_some_and(|v| v != "false" && v != "0");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let problem = if !root {
        Some("not running as root".to_owned())
    } else if !Path::new("/proc/sys/net/core/bpf_jit_enable").exists()
        && !Path::new("/sys/kernel/btf/vmlinux").exists()
    {
        Some("kernel has no BPF support".to_owned())
    } else {
        None
    };
    match problem {
        None => true,
        Some(p) if ci => panic!("privileged test cannot run in CI: {p}"),
        Some(p) => {
            eprintln!("SKIPPED: {p} (privileged test; run `cargo xtask test` as root)");
            false
        }
    }
}

/// Where `tool` is installed: on PATH, or in the system's bin folders (a test run under sudo
/// may have a PATH without the sbin ones).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|c| c.is_file())
}

/// The argument right after the first `flag` in `args` (the bench binaries' hand-parsed
/// options, `--name value`); `None` when the flag is absent or last. Each binary parses the
/// value and says what a missing one means.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|at| args.get(at + 1))
        .map(String::as_str)
}

/// The bench binaries' arguments (`std::env::args`), checked before anything runs: a bench
/// runs for minutes, so a typo must not start the defaults. `-h`/`--help` prints `usage` and
/// exits 0; an argument that is neither one of `switches`, nor one of `flags` followed by its
/// value, nor one of the first `positionals` bare arguments exits 2 with one line naming it,
/// and so does a flag given last with no value. `name` is the binary's, for the messages.
pub fn bench_args(
    name: &str,
    usage: &str,
    flags: &[&str],
    switches: &[&str],
    positionals: usize,
) -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    match check_bench_args(&args, flags, switches, positionals) {
        ArgsCheck::Run => args,
        ArgsCheck::Help => {
            println!("{usage}");
            std::process::exit(0)
        }
        ArgsCheck::Refused(why) => {
            eprintln!("{name}: {why} ({usage})");
            std::process::exit(2)
        }
    }
}

/// What [`bench_args`] makes of an argument list (the program's name first).
#[derive(Debug, PartialEq, Eq)]
pub enum ArgsCheck {
    Run,
    Help,
    Refused(String),
}

/// [`bench_args`]'s check, without its exits.
pub fn check_bench_args(
    args: &[String],
    flags: &[&str],
    switches: &[&str],
    positionals: usize,
) -> ArgsCheck {
    if args.iter().skip(1).any(|a| a == "-h" || a == "--help") {
        return ArgsCheck::Help;
    }
    let mut bare = 0;
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        if switches.contains(&a.as_str()) {
            continue;
        }
        if flags.contains(&a.as_str()) {
            if rest.next().is_none() {
                return ArgsCheck::Refused(format!("{a} needs a value"));
            }
            continue;
        }
        if !a.starts_with('-') && bare < positionals {
            bare += 1;
            continue;
        }
        return ArgsCheck::Refused(format!("unknown argument {a:?}"));
    }
    ArgsCheck::Run
}

/// Median, lowest and highest of `values` (all 0 for none): the figure a bench gives for
/// repeated rounds, and their spread (`veth-bench`'s rounds, `xdp-bench`'s trials).
pub fn spread(values: impl IntoIterator<Item = f64>) -> (f64, f64, f64) {
    let mut s: Vec<f64> = values.into_iter().collect();
    s.sort_by(f64::total_cmp);
    let at = |i: usize| s.get(i).copied().unwrap_or(0.0);
    (at(s.len() / 2), at(0), at(s.len().saturating_sub(1)))
}

/// `a / b`, or 0 when `b` is not positive (a baseline that measured nothing).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// This process's resident memory (`VmRSS` of `/proc/self/status`) in bytes; 0 when it
/// cannot be read.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call, for namespaces and pin folders.
pub fn unique(tag: &str) -> String {
    format!(
        "fx{}{}{}",
        tag,
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and returns its output, panicking with stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// A command that runs inside this namespace (net namespace only, so bpffs stays shared).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program)
            // An agent started here never writes the machine's state database (`Agent` and
            // `agent_cli` give it the one of its pin folder instead).
            .env("FLUX_AGENT_STATE", self.state_dir().join("state.db"));
        c
    }

    /// The folder of the state database of agents run here without a known pin folder.
    fn state_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("flux-state-{}", self.name))
    }

    pub fn exec(&self, argv: &[&str]) -> Output {
        run(self.cmd(argv[0]).args(&argv[1..]))
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it opens live there).
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in(f).join().expect("thread in netns panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(self.state_dir());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Two namespaces joined by a veth pair: `client` (where the agent runs, iface `a0`) and
/// `server` (iface `b0`), with IPv4 10.77.0.1/.2 and IPv6 fd77::1/::2.
pub struct Link {
    pub client: Netns,
    pub server: Netns,
}

pub const CLIENT_V4: &str = "10.77.0.1";
pub const SERVER_V4: &str = "10.77.0.2";
pub const CLIENT_V6: &str = "fd77::1";
pub const SERVER_V6: &str = "fd77::2";

impl Link {
    pub fn new() -> Self {
        let client = Netns::new("c");
        let server = Netns::new("s");
        ip(&[
            "link",
            "add",
            "a0",
            "netns",
            &client.name,
            "type",
            "veth",
            "peer",
            "name",
            "b0",
            "netns",
            &server.name,
        ]);
        for (ns, dev, v4, v6) in [
            (&client, "a0", CLIENT_V4, CLIENT_V6),
            (&server, "b0", SERVER_V4, SERVER_V6),
        ] {
            ns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ns.exec(&["ip", "link", "set", dev, "up"]);
        }
        Self { client, server }
    }

    /// Adds one more veth pair (`a{n}`/`b{n}`) between the namespaces.
    pub fn add_pair(&self, n: u32) {
        ip(&[
            "link",
            "add",
            &format!("a{n}"),
            "netns",
            &self.client.name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("b{n}"),
            "netns",
            &self.server.name,
        ]);
        self.client
            .exec(&["ip", "link", "set", &format!("a{n}"), "up"]);
        self.server
            .exec(&["ip", "link", "set", &format!("b{n}"), "up"]);
    }

    /// MAC address of an interface in the client namespace.
    pub fn client_mac(&self, dev: &str) -> [u8; 6] {
        mac_of(&self.client, dev)
    }
    pub fn server_mac(&self, dev: &str) -> [u8; 6] {
        mac_of(&self.server, dev)
    }
}

/// `frame` with its Ethernet destination and source replaced (read the link's MACs once, with
/// [`Link::client_mac`] and [`Link::server_mac`], for many frames: each read runs `ip`).
pub fn with_macs(mut frame: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
    // nsenter keeps the host's /sys, so ask rtnetlink through `ip` instead.
    let out = ns.exec(&["ip", "-o", "link", "show", "dev", dev]);
    let s = String::from_utf8_lossy(&out.stdout);
    let text = s
        .split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("link/ether in ip output");
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).expect("mac");
    }
    mac
}

/// The flux zone `www.fluxy.test` of the dnsmasq labs for round `round`, as hosts-file lines:
/// five fresh addresses, each in its own /16 (a botnet of home routers).
pub fn fluxy_hosts(round: u32) -> String {
    (0..5u32)
        .map(|i| format!("10.{}.{}.7 www.fluxy.test\n", 100 + round * 5 + i, i + 1))
        .collect()
}

/// Writes `text` as dnsmasq's `--addn-hosts` file and has it reread (SIGHUP).
pub fn reload_hosts(hosts: &Path, dns: &Proc, text: &str) {
    fs::write(hosts, text).expect("write hosts");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(dns.child.id() as i32, libc::SIGHUP) };
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self {
            child,
            name: name.into(),
        }
    }

    /// Sends SIGINT and waits for the exit status.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "{} ignored SIGINT", self.name);
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dnsmasq authoritative for `flux.test` in the server namespace, on port 53 over UDP and TCP.
pub fn start_dnsmasq(server: &Netns, extra: &[String]) -> Proc {
    let long_a = "a".repeat(250);
    let long_b = "b".repeat(250);
    let long_c = "c".repeat(250);
    let mut args: Vec<String> = vec![
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--bind-interfaces".into(),
        format!("--listen-address={SERVER_V4}"),
        format!("--listen-address={SERVER_V6}"),
        "--except-interface=lo".into(),
        "--port=53".into(),
        "--user=root".into(),
        "--local=/flux.test/".into(),
        "--host-record=a.flux.test,192.0.2.10,2001:db8::10".into(),
        "--cname=www.flux.test,cdn.flux.test".into(),
        "--cname=cdn.flux.test,a.flux.test".into(),
        format!("--txt-record=big.flux.test,\"{long_a}\",\"{long_b}\",\"{long_c}\""),
        "--log-facility=-".into(),
    ];
    args.extend(extra.iter().cloned());
    let spawn = || {
        let mut cmd = server.cmd("dnsmasq");
        cmd.args(&args).stdout(Stdio::null()).stderr(Stdio::null());
        Proc::spawn("dnsmasq", &mut cmd)
    };
    let mut p = spawn();
    // Ready when it answers. It exits at once if an address is not usable yet (IPv6 still
    // settling on a fresh veth): start it again then.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if p.child.try_wait().ok().flatten().is_some() {
            thread::sleep(Duration::from_millis(200));
            p = spawn();
        }
        let out = server
            .cmd("dig")
            .args([
                &format!("@{SERVER_V4}"),
                "a.flux.test",
                "+short",
                "+tries=1",
                "+time=1",
            ])
            .output()
            .expect("dig");
        if String::from_utf8_lossy(&out.stdout).contains("192.0.2.10") {
            return p;
        }
        assert!(Instant::now() < deadline, "dnsmasq did not come up");
        thread::sleep(Duration::from_millis(100));
    }
}

/// `rel` under the shared datasets (`../shared/datasets` beside the project: a file or a
/// folder), or `None` and a line saying it is skipped when it is absent (a user's clone does
/// not have them).
pub fn dataset(rel: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets")
        .join(rel);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {} is absent", path.display());
        None
    }
}

/// Whether the ASN database `cargo xtask setup` installs is there; a test whose verdicts
/// depend on it skips without it, with a line saying so, and fails in CI.
pub fn have_asn_db() -> bool {
    let dir = flux_detect::enrich::default_db_dir();
    if flux_detect::enrich::DEFAULT_ASN_FILES
        .iter()
        .any(|f| dir.join(f).is_file())
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no ASN database in {}: `cargo xtask setup` installs it",
        dir.display()
    );
    eprintln!("SKIPPED: no ASN database in {}", dir.display());
    false
}

/// `flux-agent replay --json ARGS FILE`: every line it printed, parsed, and its summary (the
/// last line), which must be one. Fails the test if the replay fails or a line is not JSON.
/// The output is read while it runs (`agent_cli` reads after the exit: a long verdict stream
/// would fill the pipe); a replay ends by itself.
pub fn replay_json(file: &Path, args: &[&str]) -> (Vec<serde_json::Value>, serde_json::Value) {
    let o = Command::new(agent_bin())
        .args(["replay", "--json"])
        .args(args)
        .arg(file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run flux-agent replay");
    assert!(
        o.status.success(),
        "replay {}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let summary = lines.last().expect("a summary line").clone();
    assert_eq!(summary["type"], "summary");
    (lines, summary)
}

/// Path of the flux-agent binary built next to this test binary.
/// How long an agent may take to start capturing before a test gives up on it.
pub const AGENT_START_WAIT: Duration = Duration::from_secs(120);

pub fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/flux-agent
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("flux-agent"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p flux-agent` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// A pin folder unique to one test, removed on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new() -> Self {
        Self(PathBuf::from("/sys/fs/bpf").join(unique("pin")))
    }
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        // What a killed agent of this lab left in /run/flux-agent.
        let _ = fs::remove_file(flux_agent::control::socket_path(&self.0));
        let _ = fs::remove_file(flux_agent::kernel::iface_states::state_path(&self.0));
        if let Some(d) = state_path_for(&self.0).parent() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// The state database of the agent using pin folder `pin`: one per lab, in the temp folder,
/// so no test writes the machine's `/var/lib/flux-agent/state.db`, and an agent restarted on
/// the same pin folder finds its database again. Removed with the [`PinDir`].
pub fn state_path_for(pin: &Path) -> PathBuf {
    let name = pin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::env::temp_dir()
        .join(format!("flux-state-{name}"))
        .join("state.db")
}

/// `FLUX_AGENT_STATE` for a command: the state database of its `--pin-dir`, or a throwaway one
/// (never the machine's default).
fn state_env(cmd: &mut Command, args: &[&str]) {
    let pin = args
        .windows(2)
        .find(|w| w[0] == "--pin-dir")
        .map(|w| PathBuf::from(w[1]));
    let path = match pin {
        Some(p) => state_path_for(&p),
        None => std::env::temp_dir()
            .join("flux-state-no-pin-dir")
            .join("state.db"),
    };
    cmd.env("FLUX_AGENT_STATE", path);
}

/// A running `flux-agent run` in a namespace, writing events to a file.
pub struct Agent {
    pub proc: Option<Proc>,
    pub events: PathBuf,
    pub stderr: PathBuf,
    _dir: TempDir,
}

pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(unique("tmp"));
        fs::create_dir_all(&p).expect("tempdir");
        Self(p)
    }
}
impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Agent {
    /// Starts the agent and waits until it reports that it is capturing.
    pub fn start(ns: &Netns, pin: &PinDir, args: &[&str]) -> Self {
        let dir = TempDir::new();
        let events = dir.0.join("events.jsonl");
        let stderr = dir.0.join("agent.stderr");
        let mut cmd = ns.cmd(agent_bin().to_str().expect("utf-8 path"));
        cmd.arg("run")
            .args(["--pin-dir", &pin.arg(), "--events"])
            .arg(&events)
            .args(args)
            .env("RUST_LOG", "info")
            .env("FLUX_AGENT_STATE", state_path_for(&pin.0))
            .envs(BUILTIN_CONFIG)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr file"));
        let mut proc = Proc::spawn("flux-agent", &mut cmd);
        // Generous: a debug build loads the IP databases in about 6 s on an idle machine, and
        // CI machines are not idle.
        let deadline = Instant::now() + AGENT_START_WAIT;
        loop {
            let log = fs::read_to_string(&stderr).unwrap_or_default();
            if log.contains("capturing DNS responses") {
                break;
            }
            if let Some(st) = proc.child.try_wait().expect("wait") {
                panic!("flux-agent exited early ({st}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "flux-agent did not start:\n{log}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Self {
            proc: Some(proc),
            events,
            stderr,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Every event written so far.
    pub fn events(&self) -> Vec<Value> {
        let Ok(f) = fs::File::open(&self.events) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
            .collect()
    }

    /// Waits (bounded) for an event matching `pred`; panics with everything seen if none comes.
    pub fn wait_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no event for {what}; events: {:#?}\nagent log:\n{}",
                    self.events(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.proc.take().expect("agent already stopped").interrupt()
    }
}

/// The environment under which `flux-agent run` uses its built-in defaults, whatever
/// /etc/flux-agent/flux-agent.toml says: a host with the package installed has one (with an
/// events file and metrics), and the package test installs it. Every test agent is started
/// with it (`.envs(BUILTIN_CONFIG)`); a test that wants a file passes `--config`, which wins.
pub const BUILTIN_CONFIG: [(&str, &str); 1] = [(flux_agent::config::CONFIG_ENV, "/dev/null")];

/// Runs `flux-agent ARGS` to completion in `ns` (or the current namespace). A command expected
/// to finish that keeps running instead (e.g. an agent that attached when it should have
/// refused) is killed after 30 s and fails the test, rather than hanging it.
pub fn agent_cli(ns: Option<&Netns>, args: &[&str]) -> Output {
    let bin = agent_bin();
    let mut cmd = match ns {
        Some(ns) => ns.cmd(bin.to_str().expect("utf-8 path")),
        None => Command::new(bin),
    };
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .envs(BUILTIN_CONFIG)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    state_env(&mut cmd, args);
    let mut proc = Proc::spawn("flux-agent", &mut cmd);
    let deadline = Instant::now() + AGENT_START_WAIT;
    while proc.child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = proc.child.kill();
            let out = collect_output(&mut proc.child);
            panic!(
                "flux-agent {args:?} did not exit:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    collect_output(&mut proc.child)
}

/// `flux-agent ARGS --pin-dir PIN` through [`agent_cli`]: in `ns` when given (netlink then
/// sees that namespace's interfaces), else in the test's own.
pub fn pin_cli(ns: Option<&Netns>, pin: &PinDir, args: &[&str]) -> Output {
    let mut a: Vec<&str> = args.to_vec();
    let p = pin.arg();
    a.extend(["--pin-dir", &p]);
    agent_cli(ns, &a)
}

/// [`pin_cli`] that must succeed: its stdout.
#[track_caller]
pub fn pin_cli_ok(ns: Option<&Netns>, pin: &PinDir, args: &[&str]) -> String {
    let o = pin_cli(ns, pin, args);
    assert!(
        o.status.success(),
        "flux-agent {args:?}: {}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `wait_with_output` for a borrowed child (the `Proc` guard keeps ownership for cleanup).
/// Only for short outputs: the pipes are read after the child has exited.
fn collect_output(child: &mut Child) -> Output {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_end(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut stderr);
    }
    let status = child.wait().expect("wait");
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The XDP program id attached to `dev` in `ns`, if any (from `ip link`).
pub fn xdp_prog_on(ns: &Netns, dev: &str) -> Option<u32> {
    let out = ns.exec(&["ip", "-d", "link", "show", "dev", dev]);
    let s = String::from_utf8_lossy(&out.stdout);
    let idx = s.find("prog/xdp id ")?;
    s[idx + 12..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
}

/// Reads a file fully (helper for asserting on logs).
pub fn slurp(p: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// `dig` in `ns`, returning stdout.
pub fn dig(ns: &Netns, args: &[&str]) -> String {
    let out = run(ns.cmd("dig").args(["+tries=1", "+time=3"]).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig` in `ns` for readiness and retry loops: stdout whatever the exit status, so a server
/// that is not listening yet (dig's exit 9, "no reply") is one more try, not a panic.
pub fn try_dig(ns: &Netns, args: &[&str]) -> String {
    let out = ns
        .cmd("dig")
        .args(["+tries=1", "+time=3"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run dig: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every capture file (`*.pcap*`) under `dir`, recursively, sorted.
pub fn capture_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.to_string_lossy().contains(".pcap") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

impl Netns {
    /// Runs `f` on a thread in this namespace without waiting for it.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = self.path();
        thread::spawn(move || {
            let f_ns = fs::File::open(&path).expect("open netns");
            // SAFETY: valid fd; CLONE_NEWNET only affects this thread.
            let rc = unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

/// A TCP and UDP echo service on port [`ECHO_PORT`] of every address in a namespace; stops on
/// drop.
pub struct Echo {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

pub const ECHO_PORT: u16 = 7777;

impl Echo {
    /// TCP on every address; UDP on each of `udp_addrs`.
    pub fn start(ns: &Netns, udp_addrs: &[&str]) -> Self {
        use std::sync::{Arc, atomic::AtomicBool};
        let stop = Arc::new(AtomicBool::new(false));
        let s1 = stop.clone();
        let udp_addrs: Vec<String> = udp_addrs.iter().map(|a| (*a).to_owned()).collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ready2 = ready_tx.clone();
        let tcp = ns.spawn_in(move || {
            let l = std::net::TcpListener::bind(("::", ECHO_PORT)).expect("tcp listen");
            l.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).ok();
            while !s1.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = std::io::Write::write_all(&mut c, b"ok");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        // One UDP socket per address: a reply leaves from the address that was asked, as a
        // real service's would (an unbound socket answers from the primary address).
        let mut threads = vec![tcp];
        for addr in udp_addrs {
            let ip: std::net::IpAddr = addr.parse().expect("address");
            let (stop, ready) = (stop.clone(), ready2.clone());
            threads.push(ns.spawn_in(move || {
                let s = std::net::UdpSocket::bind((ip, ECHO_PORT)).expect("udp bind");
                s.set_read_timeout(Some(Duration::from_millis(50)))
                    .expect("timeout");
                ready.send(()).ok();
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&buf[..n], from);
                    }
                }
            }));
        }
        drop(ready2);
        for _ in 0..threads.len() {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("echo ready");
        }
        Self { stop, threads }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What got through to an address from a namespace: ping, a UDP echo, a TCP connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub ping: bool,
    pub udp: bool,
    pub tcp: bool,
}

impl Reach {
    pub const ALL: Reach = Reach {
        ping: true,
        udp: true,
        tcp: true,
    };
    pub const NONE: Reach = Reach {
        ping: false,
        udp: false,
        tcp: false,
    };
}

/// Probes `addr` from `ns` with ping, UDP and TCP (to an [`Echo`]), one second each.
pub fn reach(ns: &Netns, addr: &str) -> Reach {
    let ping = ns
        .cmd("ping")
        .args(["-c1", "-W1", "-n", "-q", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ip: std::net::IpAddr = addr.parse().expect("address");
    let (udp, tcp) = ns.run_in(move || {
        let dst = std::net::SocketAddr::new(ip, ECHO_PORT);
        let any: std::net::SocketAddr = if ip.is_ipv4() {
            "0.0.0.0:0".parse().expect("addr")
        } else {
            "[::]:0".parse().expect("addr")
        };
        let s = std::net::UdpSocket::bind(any).expect("udp bind");
        s.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        // Connected: only a reply from the address asked counts.
        let udp = s.connect(dst).is_ok() && s.send(b"hi").is_ok() && s.recv(&mut buf).is_ok();
        let tcp = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(1)).is_ok();
        (udp, tcp)
    });
    Reach { ping, udp, tcp }
}

/// Loads flux-ebpf with `opts` (without attaching) and takes its ring buffer: what the TestRun
/// tests and the benchmarks start from.
pub fn load_with_ring(
    opts: flux_agent::kernel::loader::LoadOptions,
) -> anyhow::Result<(
    flux_agent::kernel::loader::Loaded,
    aya::maps::RingBuf<aya::maps::MapData>,
)> {
    let mut loaded = flux_agent::kernel::loader::load(&opts)?;
    let ring = aya::maps::RingBuf::try_from(
        loaded
            .ebpf
            .take_map(flux_common::MAP_EVENTS)
            .ok_or_else(|| anyhow::anyhow!("no EVENTS map in the object"))?,
    )?;
    Ok((loaded, ring))
}

/// Counter `c` of a loaded flux-ebpf (the COUNTERS map, before any pin), summed over the CPUs:
/// what the TestRun harness and the benchmarks read around a run.
pub fn kernel_counter(ebpf: &aya::Ebpf, c: flux_common::Counter) -> anyhow::Result<u64> {
    let map: aya::maps::PerCpuArray<_, u64> = aya::maps::PerCpuArray::try_from(
        ebpf.map(flux_common::MAP_COUNTERS)
            .ok_or_else(|| anyhow::anyhow!("no {} map", flux_common::MAP_COUNTERS))?,
    )?;
    Ok(map.get(&(c as u32), 0)?.iter().sum())
}

/// A DNS response (QR=1) with transaction id `id` to the question `name` A, answering one A
/// record per address of `ips` with TTL `ttl`: the reply the tests send or write to captures.
pub fn a_reply(name: &str, ips: &[std::net::Ipv4Addr], ttl: u32, id: u16) -> Vec<u8> {
    use hickory_proto::{
        op::{Message, MessageType, Query},
        rr::{Name, RData, Record, RecordType, rdata::A},
    };
    let n = Name::from_ascii(name).expect("name");
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Response)
        .add_query(Query::query(n.clone(), RecordType::A));
    for ip in ips {
        m.add_answer(Record::from_rdata(n.clone(), ttl, RData::A(A(*ip))));
    }
    m.to_vec().expect("encode")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bench's figure is the middle round, whatever order the rounds came in, with the
    /// lowest and highest beside it; nothing measured reads 0, as a ratio to nothing does.
    #[test]
    fn a_figure_is_the_median_round() {
        assert_eq!(spread([8.2, 7.1, 7.3, 9.9, 7.2]), (7.3, 7.1, 9.9));
        assert_eq!(spread([]), (0.0, 0.0, 0.0));
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert_eq!(ratio(3.0, 0.0), 0.0);
    }

    fn check(args: &[&str]) -> ArgsCheck {
        let args: Vec<String> = std::iter::once("bench")
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        check_bench_args(&args, &["--repeat", "--only"], &["--json"], 1)
    }

    /// A bench runs for minutes: a typo, a flag without its value or a stray argument is
    /// refused before it starts; `--help` anywhere answers with the usage.
    #[test]
    fn bench_arguments_are_checked_before_a_run() {
        assert_eq!(check(&[]), ArgsCheck::Run);
        assert_eq!(
            check(&["--repeat", "5", "--json", "--only", "DNS", "7"]),
            ArgsCheck::Run
        );
        assert_eq!(check(&["--repeat", "5", "--help"]), ArgsCheck::Help);
        assert_eq!(check(&["-h"]), ArgsCheck::Help);
        assert_eq!(
            check(&["--repaet", "5"]),
            ArgsCheck::Refused("unknown argument \"--repaet\"".into())
        );
        assert_eq!(
            check(&["--json", "--repeat"]),
            ArgsCheck::Refused("--repeat needs a value".into())
        );
        // One bare argument is allowed here, not two.
        assert_eq!(
            check(&["7", "8"]),
            ArgsCheck::Refused("unknown argument \"8\"".into())
        );
    }
}
