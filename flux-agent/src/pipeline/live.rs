//! The running agent: load, attach, drain the ring buffer, emit observations, detach.
//!
//! Packet path: NIC -> `flux_xdp` (flux-ebpf) -> `EVENTS` ring buffer -> [`Capture`] ->
//! [`Observation`] -> event sink, and -> [`Scorer`] -> verdicts in the same sink -> [`Enforcer`]
//! -> the blocklist maps the XDP program reads, and block actions in the sink.

use std::{collections::HashMap, future::Future, io::Write, path::PathBuf};

use anyhow::Context as _;
use aya::maps::RingBuf;
use flux_common::MAP_EVENTS;
use log::{debug, info, warn};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    control,
    enforce::policy::{Action, EnforceOptions, Enforcer},
    kernel::interfaces::{Interface, default_route_interface},
    kernel::loader::{self, AttachMode, Hook, LoadError, LoadOptions},
    kernel::ring_records::{Capture, Observation},
    pipeline::clock::MonoClock,
};
use flux_detect::score::{Scorer, ScorerSetup, Verdict};

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Interfaces to attach to; empty means the default-route interface.
    pub ifaces: Vec<String>,
    pub mode: AttachMode,
    pub force: bool,
    pub load: LoadOptions,
    /// Score observations and emit verdicts; `None` only captures.
    pub scoring: Option<ScorerSetup>,
    /// Turn flux verdicts into blocks (needs `scoring`); `None` only reports.
    pub enforce: Option<EnforceOptions>,
}

/// What a run saw, for the exit summary and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub records: u64,
    pub observations: u64,
    pub parse_errors: u64,
    pub bad_records: u64,
    /// Replies no query that left this host matches: logged as events, never scored.
    pub unsolicited: u64,
    pub verdicts: u64,
    pub actions: u64,
}

/// Resolves the interfaces to attach to, failing on the first unknown name.
pub fn resolve_interfaces(names: &[String]) -> Result<Vec<Interface>, LoadError> {
    let names: Vec<String> = if names.is_empty() {
        vec![default_route_interface().ok_or_else(|| {
            LoadError::Config("no default route to pick an interface from; pass --iface".into())
        })?]
    } else {
        names.to_vec()
    };
    let mut out: Vec<Interface> = Vec::new();
    for n in names {
        let i = Interface::by_name(&n).ok_or(LoadError::UnknownInterface(n))?;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

/// How observations are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    /// One JSON object per line.
    Json,
    /// One readable line per response.
    Human,
}

/// Runs until `shutdown` resolves, writing one line per DNS response to `events`.
pub async fn run<W: Write>(
    opts: RunOptions,
    events: Option<(W, EventFormat)>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunSummary> {
    let ifaces = resolve_interfaces(&opts.ifaces)?;
    let mut loaded = loader::load(&opts.load)?;
    for iface in &ifaces {
        if let Err(e) = loaded.attach(iface, opts.mode, opts.force) {
            // Detach what this run attached and leave no pins of its own behind.
            loaded.rollback();
            drop(loaded);
            return Err(e.into());
        }
    }

    let ring = loaded
        .ebpf
        .take_map(MAP_EVENTS)
        .context("EVENTS map missing from the object")?;
    let ring = RingBuf::try_from(ring).context("EVENTS is not a ring buffer")?;
    // SAFETY: RingBuf owns its map fd and keeps it open, unchanged, until it is dropped, which
    // happens only through this AsyncFd.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("register ring buffer with tokio: {e}"))?;

    let enforcer = match (&opts.enforce, &opts.scoring) {
        (Some(e), Some(_)) => {
            Some(Enforcer::new(&loaded.pin_dir, e.clone()).context("open the blocklist maps")?)
        }
        _ => None,
    };
    if opts.enforce.as_ref().is_some_and(|e| e.monitor) {
        info!("monitor mode: verdicts and would-be blocks are reported, nothing is enforced");
    }
    let names: Vec<String> = loaded
        .attachments
        .iter()
        .map(|a| match a.hook {
            Hook::Xdp => format!("{} ({} mode)", a.iface.name, a.mode),
            Hook::Egress => format!("{} egress ({})", a.iface.name, a.mode),
        })
        .collect();
    info!(
        "capturing DNS responses on {}; pinned maps in {}; Ctrl-C to stop",
        names.join(", "),
        loaded.pin_dir.display()
    );

    let mut p = Pipeline {
        clock: MonoClock::new(),
        if_names: HashMap::new(),
        summary: RunSummary::default(),
        scorer: opts.scoring.as_ref().map(ScorerSetup::build),
        enforcer,
        events,
        verdicts: Vec::new(),
        actions: Vec::new(),
    };
    let control = listen_control(&loaded.pin_dir);
    let mut last_resync = std::time::Instant::now();
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(10));
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            conn = accept(control.as_ref()) => {
                if let Ok((stream, _)) = conn {
                    p.serve(stream).await;
                }
            }
            _ = ticker.tick() => {
                if let Some(e) = p.enforcer.as_mut() {
                    e.tick();
                }
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.context("wait on ring buffer")?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    p.handle_record(&item);
                }
                guard.clear_ready();
                p.flush()?;
                if last_resync.elapsed().as_secs() >= 60 {
                    p.clock.resync();
                    last_resync = std::time::Instant::now();
                }
            }
        }
    }

    // Whatever arrived before the signal still gets reported.
    let rb = ring.get_mut();
    while let Some(item) = rb.next() {
        p.handle_record(&item);
    }
    p.flush()?;
    let summary = p.summary.clone();
    drop(ring);
    let pin_dir: PathBuf = loaded.pin_dir.clone();
    drop(p);
    if control.is_some() {
        let _ = std::fs::remove_file(control::socket_path(&pin_dir));
    }
    drop(loaded);
    info!(
        "stopped; {} responses captured, {} parse errors. The programs stay attached and \
         enforcing from {}; `flux-agent unload` removes them",
        summary.observations,
        summary.parse_errors,
        pin_dir.display()
    );
    Ok(summary)
}

/// Everything one ring-buffer record goes through, in order.
struct Pipeline<W: Write> {
    clock: MonoClock,
    if_names: HashMap<u32, String>,
    summary: RunSummary,
    scorer: Option<Scorer>,
    enforcer: Option<Enforcer>,
    events: Option<(W, EventFormat)>,
    /// Scratch, reused per record.
    verdicts: Vec<Verdict>,
    actions: Vec<Action>,
}

/// Binds the control socket; the agent runs without one (with a warning) if that fails.
fn listen_control(pin_dir: &std::path::Path) -> Option<tokio::net::UnixListener> {
    let path = control::socket_path(pin_dir);
    let bind = || -> std::io::Result<tokio::net::UnixListener> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(control::CONTROL_DIR)?;
        // The pin-folder lock is held, so a socket left here is a crashed run's.
        let _ = std::fs::remove_file(&path);
        tokio::net::UnixListener::bind(&path)
    };
    match bind() {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(
                "no control socket at {} ({e}); `flux-agent explain` will not reach this agent",
                path.display()
            );
            None
        }
    }
}

async fn accept(
    l: Option<&tokio::net::UnixListener>,
) -> std::io::Result<(tokio::net::UnixStream, tokio::net::unix::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl<W: Write> Pipeline<W> {
    /// Answers one control request. Requests are tiny and answered from memory; a client that
    /// does not send a line within a second is dropped.
    async fn serve(&mut self, stream: tokio::net::UnixStream) {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let (r, mut w) = stream.into_split();
        let mut line = String::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::io::BufReader::new(r).read_line(&mut line),
        )
        .await;
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            return;
        }
        let reply = match (
            serde_json::from_str::<control::Request>(&line),
            self.scorer.as_mut(),
        ) {
            (Ok(req), Some(scorer)) => serde_json::to_string(&control::answer(scorer, &req)),
            (Ok(_), None) => Ok(r#"{"error":"this agent does not score"}"#.to_owned()),
            (Err(e), _) => Ok(serde_json::json!({ "error": e.to_string() }).to_string()),
        };
        if let Ok(mut reply) = reply {
            reply.push('\n');
            let _ = w.write_all(reply.as_bytes()).await;
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if let Some((w, _)) = self.events.as_mut() {
            w.flush().context("write events")?;
        }
        Ok(())
    }

    fn emit<E: serde::Serialize + std::fmt::Display>(&mut self, e: &E) {
        if let Some((w, format)) = self.events.as_mut() {
            write_event(w, *format, e);
        }
    }

    fn handle_record(&mut self, rec: &[u8]) {
        self.summary.records += 1;
        let capture = match Capture::from_record(rec) {
            Ok(c) => c,
            Err(e) => {
                self.summary.bad_records += 1;
                warn!("dropping malformed ring-buffer record: {e}");
                return;
            }
        };
        let ifindex = capture.header.ifindex;
        let iface = self
            .if_names
            .entry(ifindex)
            .or_insert_with(|| {
                Interface::by_index(ifindex)
                    .map(|i| i.name)
                    .unwrap_or_else(|| format!("if{ifindex}"))
            })
            .clone();
        let ts = self.clock.to_system_time(capture.header.ts_ns);
        let obs = match Observation::from_capture(&capture, ts, iface) {
            Ok(obs) => obs,
            Err(e) => {
                self.summary.parse_errors += 1;
                debug!(
                    "unparseable DNS response from {}:{} ({} bytes): {e}",
                    capture.src(),
                    capture.header.src_port,
                    capture.data.len()
                );
                return;
            }
        };
        self.summary.observations += 1;
        self.emit(&obs);
        // A reply nobody here asked for is never evidence: not scored, not a resolver, not a
        // reason to refresh a block (anyone who can send a datagram from port 53 wrote it).
        if obs.unsolicited {
            self.summary.unsolicited += 1;
            return;
        }
        let Some(scorer) = self.scorer.as_mut() else {
            return;
        };
        let mut verdicts = std::mem::take(&mut self.verdicts);
        let mut actions = std::mem::take(&mut self.actions);
        scorer.observe(obs.ts, &obs.msg, &mut verdicts);
        if let Some(e) = self.enforcer.as_mut() {
            // Whoever answers DNS here is a resolver of this host: never block it.
            e.guard.note_resolver(obs.src);
            if obs.blocked {
                e.on_blocked_response(&obs.msg.qname, scorer, &mut actions);
            }
            for v in &verdicts {
                e.on_verdict(v, scorer, &mut actions);
            }
        }
        for v in verdicts.drain(..) {
            self.summary.verdicts += 1;
            log_verdict(&v);
            self.emit(&v);
        }
        for a in actions.drain(..) {
            self.summary.actions += 1;
            self.emit(&a);
        }
        self.verdicts = verdicts;
        self.actions = actions;
    }
}

fn write_event<W: Write, E: serde::Serialize + std::fmt::Display>(
    w: &mut W,
    format: EventFormat,
    e: &E,
) {
    let written = match format {
        EventFormat::Json => serde_json::to_writer(&mut *w, e)
            .map_err(std::io::Error::from)
            .and_then(|()| w.write_all(b"\n")),
        EventFormat::Human => writeln!(w, "{e}"),
    };
    if let Err(e) = written {
        warn!("could not write event: {e}");
    }
}

fn log_verdict(v: &Verdict) {
    if v.level > v.previous {
        warn!("{v}");
    } else {
        info!("{v}");
    }
}
