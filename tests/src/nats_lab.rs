//! The fleet lab: a real `nats-server` with JetStream in a network namespace of its own, one
//! nkey user per agent (each may publish only on its own subjects, as docs/fleet.md asks of a
//! deployment), agents' signing keys and the trust list, a veth from each agent's namespace to
//! the broker's (cut it for a partition), stop and restart with the same store, the broker's
//! CPU and memory from /proc. Everything is removed on drop, failing tests included.
//!
//! May touch: its namespaces and veths, its temporary folder, the nats-server it starts.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use flux_agent::fleet::envelope::{Envelope, Kind, hex};

use crate::{Netns, Proc, TempDir};

/// The client port inside the broker's namespace.
pub const NATS_PORT: u16 = 4222;

/// One agent of the lab: its NATS user and its signing key.
pub struct LabAgent {
    pub id: String,
    /// The nkey seed file (`run --fleet-creds`).
    pub creds: PathBuf,
    /// The ed25519 key file (`run --fleet-key`).
    pub key: PathBuf,
    nkey_public: String,
}

pub struct NatsLab {
    pub ns: Netns,
    pub dir: TempDir,
    proc: Option<Proc>,
    pub agents: Vec<LabAgent>,
    /// The trust list of every lab agent (`run --fleet-trust`).
    pub trust: PathBuf,
    /// A user that may publish anywhere: the tests' stand-in for someone with broker access.
    admin_seed: String,
    conf: PathBuf,
    links: AtomicU32,
}

static LINK_SEQ: AtomicU32 = AtomicU32::new(0);

impl NatsLab {
    /// Makes users and keys for `ids` and starts the broker. The broker listens on every
    /// address of its namespace; [`NatsLab::attach`] connects an agent's namespace.
    pub fn start(ids: &[&str]) -> Self {
        let ns = Netns::new("nats");
        let dir = TempDir::new();
        let mut agents = Vec::new();
        let mut trust = String::new();
        for id in ids {
            let user = nkeys::KeyPair::new_user();
            let creds = dir.0.join(format!("{id}.nk"));
            fs::write(&creds, user.seed().expect("seed")).expect("write creds");
            let key_file = dir.0.join(format!("{id}.key"));
            let key = flux_agent::fleet::envelope::generate_signing_key().expect("key");
            fs::write(&key_file, hex(key.as_bytes())).expect("write key");
            trust.push_str(&format!("{id} {}\n", hex(key.verifying_key().as_bytes())));
            agents.push(LabAgent {
                id: (*id).to_owned(),
                creds,
                key: key_file,
                nkey_public: user.public_key(),
            });
        }
        let trust_path = dir.0.join("fleet.trust");
        fs::write(&trust_path, trust).expect("write trust");
        let admin = nkeys::KeyPair::new_user();
        let conf = dir.0.join("nats.conf");
        fs::write(&conf, config(&dir.0, &agents, &admin.public_key())).expect("write conf");
        let mut lab = Self {
            ns,
            dir,
            proc: None,
            agents,
            trust: trust_path,
            admin_seed: admin.seed().expect("seed"),
            conf,
            links: AtomicU32::new(0),
        };
        lab.start_server();
        lab.create_stream();
        lab
    }

    /// Creates the fleet's stream as an operator would (the agents also create it if missing).
    pub fn create_stream(&self) {
        let seed = self.admin_seed.clone();
        let url = format!("nats://127.0.0.1:{NATS_PORT}");
        self.ns.run_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = async_nats::ConnectOptions::new()
                    .nkey(seed)
                    .connect(url)
                    .await
                    .expect("admin connects");
                async_nats::jetstream::new(client)
                    .get_or_create_stream(flux_agent::fleet::nats_link::stream_config())
                    .await
                    .expect("create the stream");
            })
        })
    }

    pub fn agent(&self, id: &str) -> &LabAgent {
        self.agents
            .iter()
            .find(|a| a.id == id)
            .unwrap_or_else(|| panic!("no lab agent {id}"))
    }

    /// Starts (or starts again, with the same JetStream store) the server, and waits until it
    /// answers.
    pub fn start_server(&mut self) {
        let log = self.dir.0.join("nats.log");
        let mut cmd = self.ns.cmd("nats-server");
        cmd.arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"));
        self.proc = Some(Proc::spawn("nats-server", &mut cmd));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Server is ready") {
                return;
            }
            if let Some(p) = self.proc.as_mut()
                && let Ok(Some(st)) = p.child.try_wait()
            {
                panic!("nats-server exited ({st}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start:\n{text}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGKILL: a crash, not a clean shutdown).
    pub fn kill_server(&mut self) {
        self.proc = None;
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.0.join("nats.log")).unwrap_or_default()
    }

    /// Joins `ns` to the broker's namespace with a veth pair of its own subnet; returns the URL
    /// an agent there connects to.
    pub fn attach(&self, ns: &Netns) -> String {
        let n = self.links.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(n < 250, "too many lab links");
        let tag = LINK_SEQ.fetch_add(1, Ordering::Relaxed) % 10_000;
        let (near, far) = (
            format!("nb{}x{tag}", std::process::id() % 10_000),
            format!("na{}x{tag}", std::process::id() % 10_000),
        );
        crate::ip(&[
            "link",
            "add",
            &near,
            "netns",
            &self.ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &far,
            "netns",
            &ns.name,
        ]);
        self.ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.99.{n}.1/24"),
            "dev",
            &near,
        ]);
        self.ns.exec(&["ip", "link", "set", &near, "up"]);
        ns.exec(&["ip", "addr", "add", &format!("10.99.{n}.2/24"), "dev", &far]);
        ns.exec(&["ip", "link", "set", &far, "up"]);
        format!("nats://10.99.{n}.1:{NATS_PORT}")
    }

    /// Cuts (`true`) or restores `ns`'s link to the broker: every interface of `ns` whose name
    /// starts with `na` (the lab's side of [`NatsLab::attach`]).
    pub fn partition(&self, ns: &Netns, cut: bool) {
        let out = ns.exec(&["ip", "-o", "link", "show"]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line
                .split(':')
                .nth(1)
                .map(|s| s.trim().split('@').next().unwrap_or(""))
            else {
                continue;
            };
            if name.starts_with("na") {
                ns.exec(&["ip", "link", "set", name, if cut { "down" } else { "up" }]);
            }
        }
    }

    /// The broker's CPU time (user + system, seconds) and resident memory (KiB), from /proc.
    pub fn usage(&self) -> Option<(f64, u64)> {
        proc_usage(self.pid()?)
    }

    /// Publishes `payload` on `subject` as `creds`' user (`None`: the lab's admin, who may
    /// publish anywhere; `Some("")`: no credentials at all), through JetStream. `Err` says what
    /// the server answered (refused, no acknowledgement).
    pub fn publish_as(
        &self,
        creds: Option<&Path>,
        subject: &str,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        let seed = match creds {
            None => Some(self.admin_seed.clone()),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(fs::read_to_string(p).map_err(|e| e.to_string())?),
        };
        let url = format!("nats://127.0.0.1:{NATS_PORT}");
        let subject = subject.to_owned();
        self.ns.run_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut opts = async_nats::ConnectOptions::new();
                if let Some(s) = seed {
                    opts = opts.nkey(s);
                }
                let client = tokio::time::timeout(Duration::from_secs(5), opts.connect(url))
                    .await
                    .map_err(|_| "connect: timeout".to_owned())?
                    .map_err(|e| format!("connect: {e}"))?;
                let js = async_nats::jetstream::new(client);
                let ack = js
                    .publish(subject, payload.into())
                    .await
                    .map_err(|e| format!("publish: {e}"))?;
                tokio::time::timeout(Duration::from_secs(3), ack)
                    .await
                    .map_err(|_| "no acknowledgement".to_owned())?
                    .map_err(|e| format!("acknowledgement: {e}"))?;
                Ok(())
            })
        })
    }

    /// Messages the stream holds on `subject` (the admin asks the server).
    pub fn stream_count(&self, subject: &str) -> u64 {
        let seed = self.admin_seed.clone();
        let subject = subject.to_owned();
        let url = format!("nats://127.0.0.1:{NATS_PORT}");
        self.ns.run_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = async_nats::ConnectOptions::new()
                    .nkey(seed)
                    .connect(url)
                    .await
                    .expect("admin connects");
                let js = async_nats::jetstream::new(client);
                let Ok(stream) = js.get_stream("FLUX").await else {
                    return 0;
                };
                let info = stream
                    .info_with_subjects(subject)
                    .await
                    .expect("stream info");
                use futures_util::TryStreamExt as _;
                let all: Vec<(String, usize)> = info.try_collect().await.unwrap_or_default();
                all.iter().map(|(_, n)| *n as u64).sum()
            })
        })
    }

    /// A message as `id` would sign it, with `key`'s signature (a forgery when `key` is not
    /// `id`'s).
    pub fn envelope(key: &ed25519_dalek::SigningKey, id: &str, seq: u64, body: &str) -> Vec<u8> {
        Envelope::sign(key, id, seq, Kind::Obs, body.to_owned()).to_bytes()
    }
}

impl Drop for NatsLab {
    fn drop(&mut self) {
        self.proc = None;
        // The veths go with the broker's namespace (`Netns`'s drop).
    }
}

/// CPU seconds and RSS KiB of `pid`.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); here 0-based after the name: 11, 12.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some((ticks as f64 / hz, rss))
}

/// The server's configuration: JetStream on disk in the lab folder, one user per agent that
/// may publish only on its own subjects and use only its own durable consumer, and the admin.
fn config(dir: &Path, agents: &[LabAgent], admin: &str) -> String {
    let mut users = String::new();
    for a in agents {
        let id = &a.id;
        let allow = [
            format!("flux.obs.{id}"),
            format!("flux.verdict.{id}"),
            "$JS.API.INFO".into(),
            "$JS.API.STREAM.CREATE.FLUX".into(),
            "$JS.API.STREAM.INFO.FLUX".into(),
            format!("$JS.API.CONSUMER.CREATE.FLUX.{id}"),
            format!("$JS.API.CONSUMER.CREATE.FLUX.{id}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.FLUX.{id}"),
            format!("$JS.API.CONSUMER.INFO.FLUX.{id}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.FLUX.{id}"),
            format!("$JS.ACK.FLUX.{id}.>"),
        ]
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
        users.push_str(&format!(
            "    {{ nkey: {}, permissions: {{ publish: {{ allow: [{allow}] }}, subscribe: {{ allow: [\"_INBOX.>\"] }} }} }}\n",
            a.nkey_public
        ));
    }
    users.push_str(&format!("    {{ nkey: {admin} }}\n"));
    format!(
        "listen: \"0.0.0.0:{NATS_PORT}\"\nserver_name: fluxlab\njetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 2GB\n}}\nauthorization {{\n  users = [\n{users}  ]\n}}\n",
        dir.join("js").display()
    )
}

/// Runs `flux-agent fleet keygen` (the operator's path to a key) and returns the trust line.
pub fn keygen(id: &str, out: &Path) -> String {
    let o = Command::new(crate::agent_bin())
        .args(["fleet", "keygen", "--id", id, "--out"])
        .arg(out)
        .output()
        .expect("run keygen");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// The flux zone's TTL in the fleet labs: one lookup per agent per TTL. Short, so the tests
/// take seconds; the scorer reads answers, not wall-clock time, at this scale.
pub const FLUX_TTL_SECS: u64 = 5;

/// One agent of a fleet lab: its own client/server namespaces, its own dnsmasq serving the
/// flux zone `www.fluxy.test` to it alone, a link to the broker, and the agent.
pub struct FleetMember {
    pub id: String,
    pub link: crate::Link,
    pub dns: Proc,
    pub hosts: PathBuf,
    pub pin: crate::PinDir,
    pub agent: crate::Agent,
    pub url: String,
    _dir: TempDir,
}

impl FleetMember {
    /// Starts agent `id` of `lab` with the fleet options (and `extra` arguments).
    pub fn start(lab: &NatsLab, id: &str, extra: &[&str]) -> Self {
        Self::start_with(lab, id, extra, true)
    }

    /// Like [`FleetMember::start`]; `fleet: false` starts the same agent without the fleet (the
    /// lone agent the fleet is compared with).
    pub fn start_with(lab: &NatsLab, id: &str, extra: &[&str], fleet: bool) -> Self {
        let link = crate::Link::new();
        let url = lab.attach(&link.client);
        let dir = TempDir::new();
        let hosts = dir.0.join("hosts");
        fs::write(&hosts, "").expect("hosts");
        let dns = crate::start_dnsmasq(
            &link.server,
            &[
                format!("--addn-hosts={}", hosts.display()),
                "--local=/fluxy.test/".into(),
                format!("--local-ttl={FLUX_TTL_SECS}"),
            ],
        );
        let pin = crate::PinDir::new();
        let a = lab.agent(id);
        let (creds, key, trust) = (
            a.creds.display().to_string(),
            a.key.display().to_string(),
            lab.trust.display().to_string(),
        );
        // The block gate's hold (2 minutes by default) would outlast the test.
        let mut args = vec!["--iface", "a0", "--no-db", "--block-hold", "0s"];
        if fleet {
            args.extend([
                "--fleet-url",
                &url,
                "--fleet-creds",
                &creds,
                "--fleet-key",
                &key,
                "--fleet-trust",
                &trust,
            ]);
        }
        args.extend_from_slice(extra);
        let agent = crate::Agent::start(&link.client, &pin, &args);
        Self {
            id: id.to_owned(),
            link,
            dns,
            hosts,
            pin,
            agent,
            url,
            _dir: dir,
        }
    }

    /// Serves round `round` of the flux zone (five fresh addresses) and looks the name up
    /// once; returns dig's output.
    pub fn lookup(&self, round: u32) -> String {
        crate::reload_hosts(&self.hosts, &self.dns, &crate::fluxy_hosts(round));
        thread::sleep(Duration::from_millis(300));
        crate::dig(
            &self.link.client,
            &[&format!("@{}", crate::SERVER_V4), "www.fluxy.test"],
        )
    }

    /// Whether the flux name is blocked here now (the kernel answers NXDOMAIN).
    pub fn blocked(&self) -> bool {
        let out = crate::dig(
            &self.link.client,
            &[&format!("@{}", crate::SERVER_V4), "www.fluxy.test"],
        );
        out.contains("status: NXDOMAIN")
    }

    /// The agent's fleet counters (`flux-agent stats --json`'s `fleet`), once it wrote them.
    pub fn fleet_stats(&self) -> serde_json::Value {
        let path = flux_agent::fleet::fleet_stats::stats_path(&self.pin.0);
        fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// A counter of [`FleetMember::fleet_stats`] (0 until written).
    pub fn counter(&self, name: &str) -> u64 {
        self.fleet_stats()[name].as_u64().unwrap_or(0)
    }

    /// A rejection count by reason.
    pub fn rejected(&self, why: &str) -> u64 {
        self.fleet_stats()["rejected"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r[0] == why).and_then(|r| r[1].as_u64()))
            .unwrap_or(0)
    }

    /// The agent's metrics page, from inside its namespace (the agent must have been started
    /// with `--metrics` [`METRICS_ADDR`]); empty when nothing answers.
    pub fn scrape(&self) -> String {
        self.link.client.run_in(|| {
            use std::io::{Read as _, Write as _};
            let Ok(mut c) = std::net::TcpStream::connect(METRICS_ADDR) else {
                return String::new();
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = c.write_all(b"GET /metrics HTTP/1.0\r\nHost: lab\r\n\r\n");
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            out.split_once("\r\n\r\n")
                .map_or(String::new(), |(_, b)| b.to_owned())
        })
    }

    /// The value of the sample line `series` (name and labels as written) of a scrape.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_in(&self.scrape(), series)
    }

    /// `flux-agent explain NAME --json` on this agent.
    pub fn explain(&self, name: &str) -> serde_json::Value {
        let o = crate::pin_cli(
            Some(&self.link.client),
            &self.pin,
            &["explain", name, "--json"],
        );
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "explain {name}: {e}\n{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
    }
}

/// Where a lab agent started with `--metrics METRICS_ADDR` serves its metrics, inside its own
/// client namespace (a fresh namespace has nothing listening there).
pub const METRICS_ADDR: &str = "127.0.0.1:9581";

/// The value of the sample line `series` in a Prometheus text page.
pub fn metric_in(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

impl Drop for FleetMember {
    fn drop(&mut self) {
        let _ = fs::remove_file(flux_agent::fleet::fleet_stats::stats_path(&self.pin.0));
    }
}

/// Waits (bounded) until `f` holds; panics naming `what` with `detail()` otherwise.
pub fn wait_until(what: &str, limit: Duration, f: impl Fn() -> bool, detail: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} never happened:\n{}",
            detail()
        );
        thread::sleep(Duration::from_millis(200));
    }
}
