//! The running agent: load, attach, drain the ring buffer into the pipeline, detach.
//!
//! Packet path: NIC -> `flux_xdp` (flux-ebpf) -> `EVENTS` ring buffer -> [`Capture`] ->
//! [`Observation`] -> [`Pipeline`] (scorer, enforcer -> the blocklist maps the XDP program
//! reads) -> the bus -> the events file and the log, each on its own thread.
//!
//! A resolver's dnstap (`RunOptions::dnstap_socket`) is a second source into the same
//! pipeline ([`dnstap_input`]); with `attach: false` it is the only one, and the programs are
//! loaded (their maps pinned, where blocks are written) but attached to no interface.
//!
//! Interfaces come and go while it runs: link events ([`LinkWatch`]) and a periodic look keep
//! [`IfaceStates`] in line, re-attaching to an interface that returns.

use std::{collections::HashMap, future::Future, io::Write, path::PathBuf};

pub use crate::pipeline::sinks::EventFormat;

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use flux_common::MAP_EVENTS;
use log::{debug, info, warn};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    control,
    enforce::maps::Maps,
    enforce::policy::{EnforceOptions, Enforcer},
    enforce::record::Recorder,
    kernel::iface_states::IfaceStates,
    kernel::interfaces::{Interface, default_route_interface},
    kernel::link_watch::LinkWatch,
    kernel::loader::{self, AttachMode, Hook, LoadError, LoadOptions, Loaded},
    kernel::ring_records::Capture,
    ops::{
        blocklist_census::{self, Census},
        metrics::{CaptureMetrics, ScorerMetrics},
        metrics_http::{self, MetricsEndpoint, MetricsServer},
    },
    pipeline::scorer_memory::ScorerMemory,
    pipeline::{
        bus::{self, Bus, BusReport},
        clock::MonoClock,
        dnstap_input::{self, DnstapServer},
        events::{EventKind, Observation},
        flow::{Pipeline, ReadAhead},
        journal_sink::{self, JournalSink},
        recent::Recent,
        sinks::{EventsWriter, LogSink},
    },
};
use flux_detect::score::ScorerSetup;

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Interfaces to attach to; empty means the default-route interface.
    pub ifaces: Vec<String>,
    pub mode: AttachMode,
    pub force: bool,
    pub load: LoadOptions,
    /// Score observations and emit verdicts; `None` only captures.
    pub scoring: Option<ScorerSetup>,
    /// The enforcer (needs `scoring`): it keeps the maps, and turns flux verdicts into blocks
    /// unless [`EnforceOptions::auto_block`] is off. `None`: neither.
    pub enforce: Option<EnforceOptions>,
    /// The state database (`--state`): restored into the maps at start, written before every
    /// block, and the verdict journal. `None`: no database (`--no-state`).
    pub state: Option<PathBuf>,
    /// Also take DNS responses from a resolver's dnstap on this unix socket.
    pub dnstap_socket: Option<PathBuf>,
    /// Attach to the interfaces (`ifaces`); `false` loads and pins the programs and maps but
    /// attaches nothing: dnstap is then the only source.
    pub attach: bool,
    /// The loaded feeds, published by the feed refresher (`intel::feed_sync`), matched against
    /// every response. `None`: no feed matching.
    pub feeds: Option<crate::intel::feed_match::SharedIndex>,
    /// Share observations and verdicts with the fleet (`--fleet-url`, `crate::fleet`); needs
    /// `scoring`.
    pub fleet: Option<crate::fleet::FleetOptions>,
}

/// What a run saw, for the exit summary and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub records: u64,
    pub observations: u64,
    /// Of those, replies no query that left this host matches (never scored).
    pub unsolicited: u64,
    pub parse_errors: u64,
    pub bad_records: u64,
    pub verdicts: u64,
    pub actions: u64,
    /// Events the sinks could not take (their queues were full), all sinks together.
    pub events_dropped: u64,
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

/// Where `run` sends its events: the `--events` output, and whether the readable log of the
/// decisions is wanted (the binary always wants it; tests may not).
pub struct Sinks<W> {
    pub events: Option<(W, EventFormat)>,
    pub log: bool,
    /// Queue length of each sink ([`bus::DEFAULT_QUEUE`]).
    pub queue: usize,
    /// `--metrics`: served from its own thread while the run lasts.
    pub metrics: Option<MetricsEndpoint>,
    /// Allowlists a reload built (`run` on SIGHUP), put in the scorer as they come. Not a
    /// sink: the other input of a run that is not `Clone` like [`RunOptions`].
    pub allowlists: Option<AllowlistUpdates>,
}

/// Where a reload sends the allowlist it built.
pub type AllowlistUpdates =
    tokio::sync::mpsc::UnboundedReceiver<std::sync::Arc<flux_detect::known_good::Allowlist>>;

/// Runs until `shutdown` resolves, publishing every DNS response, verdict and enforcer action on
/// the bus that `sinks` subscribe to.
pub async fn run<W: Write + Send + 'static>(
    opts: RunOptions,
    mut sinks: Sinks<W>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunSummary> {
    let mut allowlists = sinks.allowlists.take();
    let mut loaded = load_and_attach(&opts)?;
    // A start that fails after attaching leaves nothing of its own behind either.
    let (mut ring, enforcer, mut bus, metrics) = match setup(&mut loaded, &opts, sinks) {
        Ok(s) => s,
        Err(e) => {
            loaded.rollback();
            return Err(e);
        }
    };
    if opts.enforce.as_ref().is_some_and(|e| e.monitor) {
        info!("monitor mode: verdicts and would-be blocks are reported, nothing is enforced");
    }
    if opts.enforce.as_ref().is_some_and(|e| !e.auto_block) {
        info!(
            "automatic blocks off (--no-auto-block): verdicts are reported; the blocklists are \
             still kept (expired entries swept, filters refilled)"
        );
    }
    let mut ifaces = IfaceStates::new(&loaded, opts.mode, opts.force);
    let mut links = LinkWatch::open()
        .inspect_err(|e| {
            warn!(
                "cannot watch link events ({e}): a removed or returning interface is noticed \
                 within {}s only",
                TICK.as_secs()
            )
        })
        .ok();

    let mut scorer = opts.scoring.as_ref().map(ScorerSetup::build);
    let mut memory = match (&scorer, opts.state.as_deref()) {
        (Some(_), Some(path)) => ScorerMemory::open(path),
        _ => None,
    };
    if let (Some(m), Some(s)) = (memory.as_mut(), scorer.as_mut()) {
        m.restore_into(s);
    }
    let mut src = RingSource {
        monitor: opts.load.monitor,
        clock: MonoClock::new(),
        last_resync: std::time::Instant::now(),
        if_names: HashMap::new(),
        summary: RunSummary::default(),
        metrics: metrics.as_ref().map(|m| m.capture.clone()),
        ahead: ReadAhead::default(),
    };
    let mut dnstap = start_dnstap(&opts).inspect_err(|_| loaded.rollback())?;
    let recent = Recent::subscribe(&mut bus);
    let mut fleet = match (&opts.fleet, &opts.scoring) {
        (Some(f), Some(setup)) => Some(
            crate::fleet::start(f, setup, &mut bus, &loaded.pin_dir)
                .await
                .inspect_err(|_| loaded.rollback())?,
        ),
        _ => None,
    };
    if let (Some(m), Some(f)) = (&metrics, &fleet) {
        m.registry.add_fleet(f.stats());
    }
    let mut p = Pipeline::new(scorer.as_mut(), enforcer, bus);
    if let Some(m) = &metrics {
        p = p.time_scoring(m.scorer.clone());
    }
    if let Some(shared) = opts.feeds.clone() {
        p = p.with_feeds(shared);
    }
    // The control socket is served on its own tasks; complete requests arrive here.
    let (query_tx, mut queries) = tokio::sync::mpsc::channel::<control::Query>(16);
    let server =
        control::listen(&loaded.pin_dir).map(|l| tokio::spawn(control::serve(l, query_tx)));
    let mut ticker = tokio::time::interval(TICK);
    // When the next drain is due (`next_drain`), and the timer of a lingering one: one `Sleep`,
    // reset after each drain, rather than a new timer each time another branch wins.
    let mut next = NextDrain::OnWakeup;
    let linger_timer = tokio::time::sleep(RING_LINGER);
    tokio::pin!(linger_timer);
    tokio::pin!(shutdown);

    // The ready line ("Ctrl-C to stop") only once `shutdown` has been polled: the binary's
    // SIGINT and SIGTERM handlers are registered by that first poll, so a Ctrl-C after the
    // line always detaches cleanly. (Logged before, a Ctrl-C in the setup between the line and
    // the loop took the signal's default action, and a test sending SIGINT at the line met an
    // agent killed by it.)
    let mut stopped = announce_when_armed(shutdown.as_mut(), || {
        log_attachments(&loaded, opts.dnstap_socket.as_deref())
    })
    .await;

    while !stopped {
        tokio::select! {
            _ = &mut shutdown => stopped = true,
            Some(q) = queries.recv() => {
                let mut reply = recent.answer(&mut p, &q.request);
                // `explain` also asks the fleet scorer (`fleet::fleet_explain`).
                if let (Some(f), control::Ask::Explain(req), control::Reply::Explanation(e)) =
                    (fleet.as_mut(), &q.request, &mut reply)
                {
                    e.fleet = f.explain(&req.explain, &|t| p.in_force(t)).map(Box::new);
                }
                let _ = q.reply.send(reply);
            }
            Some(obs) = dnstap_input::next(&mut dnstap.1) => p.observe(obs),
            Some(a) = next_allowlist(&mut allowlists) => p.set_allowlist(a),
            Some(inb) = crate::fleet::Fleet::next(&mut fleet) => {
                if let Some(f) = fleet.as_mut() {
                    let (verdicts, scorer) = f.handle(inb);
                    let done = p.external_verdicts(verdicts, scorer);
                    f.enforced(&done);
                }
            }
            changed = link_changed(&mut links) => {
                if let Err(e) = changed {
                    warn!("link events: {e}; watching every {}s instead", TICK.as_secs());
                    links = None;
                }
                ifaces.reconcile(&mut loaded);
            }
            _ = ticker.tick() => {
                let done = p.tick();
                if let Some(f) = fleet.as_mut() {
                    f.later(&done);
                }
                if let (Some(m), Some(s)) = (memory.as_mut(), p.scorer()) {
                    m.save_if_due(s);
                }
                if let (Some(m), Some(s)) = (&metrics, p.scorer()) {
                    m.scorer.set_state(s);
                }
                // Also catches what a lost link event would have told.
                ifaces.reconcile(&mut loaded);
            }
            // A full batch left records behind: drain again after the other branches had
            // their turn. `yield_now` defers to the runtime (its driver, the signal); a plain
            // ready future would not, and the kernel would not wake us for these records.
            _ = tokio::task::yield_now(), if next == NextDrain::Now => {
                let taken = drain(ring.get_mut(), &mut src, &mut p);
                next = next_drain(taken, linger_timer.as_mut());
            }
            // Busy: the last drain found records, so drain again at the timer's turn, without
            // waiting for a wakeup (see `RING_LINGER`).
            _ = &mut linger_timer, if next == NextDrain::Linger => {
                let taken = drain(ring.get_mut(), &mut src, &mut p);
                next = next_drain(taken, linger_timer.as_mut());
            }
            guard = ring.readable_mut(), if next == NextDrain::OnWakeup => {
                let mut guard = guard.context("wait on ring buffer")?;
                let taken = drain(guard.get_inner_mut(), &mut src, &mut p);
                // Drained to the end (`taken == 0`, or records that stop here and linger):
                // clearing is safe against a submit in between, as tokio clears only the
                // readiness this guard saw; a record left for a lingering turn is taken then.
                if taken < DRAIN_BATCH {
                    guard.clear_ready();
                }
                next = next_drain(taken, linger_timer.as_mut());
            }
        }
    }

    // Whatever arrived before the signal still gets reported.
    let rb = ring.get_mut();
    while let Some(item) = rb.next() {
        src.handle_record(&item, &mut p);
    }
    src.ahead.flush(&mut p);
    if let Some(server) = &server {
        server.abort();
    }
    stop_dnstap(dnstap, &mut p);
    if let Some(f) = fleet {
        f.stop();
    }
    if let (Some(m), Some(s)) = (memory.as_mut(), p.scorer()) {
        m.save(s);
    }
    let (bus, counts, _) = p.finish();
    // Sinks get a moment to write what they hold; one that is stuck (a FIFO nobody reads) does
    // not hold up the exit.
    let report = bus.close(SINK_DEADLINE);
    log_report(&report);
    drop(metrics);
    let mut summary = src.summary;
    summary.observations = counts.observations;
    summary.unsolicited = counts.unsolicited;
    summary.verdicts = counts.verdicts;
    summary.actions = counts.actions;
    summary.events_dropped = report.total_dropped();
    drop(ring);
    let pin_dir: PathBuf = loaded.pin_dir.clone();
    if server.is_some() {
        let _ = std::fs::remove_file(control::socket_path(&pin_dir));
    }
    ifaces.remove_file();
    drop(loaded);
    info!(
        "stopped; {} responses captured ({} unsolicited, not scored), {} parse errors. The \
         programs stay attached and enforcing from {}; `flux-agent unload` removes them",
        summary.observations,
        summary.unsolicited,
        summary.parse_errors,
        pin_dir.display()
    );
    Ok(summary)
}

/// How long the capture loop waits, after a drain that found records, before it drains again,
/// instead of sleeping until the kernel wakes it. tokio's timer counts in whole milliseconds
/// and rounds a deadline up to the next one, so a turn (drain to drain) lasts about 2 ms.
///
/// Why: the kernel wakes a consumer that has caught up at every submit, so at a steady rate a
/// loop that always drains to the end is woken for every record or two. At 30,000 responses/s
/// that was 17,300 wakeups a second, and context switches were the largest part of the capture
/// thread's time (`finish_task_switch`, 28% of the agent's samples; docs/benchmarks.md,
/// "Wakeup batching"). Lingering, the loop wakes about twice per turn whatever the rate (the
/// timer, and the kernel's wakeup for the first record after a drain, which the loop leaves to
/// the turn): 980 a second at the same rate, and the agent's CPU per response fell from 10-11
/// to 4.5 µs.
///
/// The price is latency: a record that arrives while the loop lingers waits for the turn, up
/// to about 2 ms, a fifth of the 10 ms block-latency budget (issue 18). A record after a quiet
/// spell finds the loop waiting on the kernel and is taken at once (it then costs a second,
/// empty, drain at the next turn). The ring (8 MiB, about 32,000 records of a typical
/// response) holds 160 ms at 200,000 responses/s, far more than a turn.
const RING_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// What the capture loop waits for before its next drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NextDrain {
    /// The ring is empty: the kernel's wakeup (it notifies a consumer that has caught up).
    OnWakeup,
    /// The timer of a lingering turn ([`RING_LINGER`]).
    Linger,
    /// Records are left behind a full batch: at once, after the loop's other branches.
    Now,
}

/// What the loop waits for after a drain that took `taken` records ([`NextDrain`]); `timer` is
/// set for a lingering turn.
fn next_drain(taken: usize, timer: std::pin::Pin<&mut tokio::time::Sleep>) -> NextDrain {
    match taken {
        0 => NextDrain::OnWakeup,
        DRAIN_BATCH.. => NextDrain::Now,
        _ => {
            timer.reset(tokio::time::Instant::now() + RING_LINGER);
            NextDrain::Linger
        }
    }
}

/// Takes up to [`DRAIN_BATCH`] records from the ring into the pipeline; returns how many.
fn drain(rb: &mut RingBuf<MapData>, src: &mut RingSource, p: &mut Pipeline<'_>) -> usize {
    let mut taken = 0;
    while taken < DRAIN_BATCH {
        let Some(item) = rb.next() else { break };
        src.handle_record(&item, p);
        taken += 1;
    }
    src.ahead.flush(p);
    if let Some(m) = &src.metrics {
        m.drains.inc();
    }
    if src.last_resync.elapsed().as_secs() >= 60 {
        src.clock.resync();
        src.last_resync = std::time::Instant::now();
    }
    taken
}

/// Records taken from the ring buffer before the run loop looks at its other inputs (the
/// shutdown signal, the control socket, the tick). Without a bound, a producer as fast as the
/// consumer kept the drain going forever under overload: no tick (block expiry), no answer
/// on the control socket, no exit on SIGTERM. 4,096 is the ring's whole capacity in its largest
/// records (8 MiB of 2 KiB; a typical response takes a 256-byte one) and a few ms of work, so a batch costs nothing when the ring is
/// keeping up and bounds the other inputs' wait to one batch when it is not.
const DRAIN_BATCH: usize = 4096;

/// How often the pipeline ticks (block expiry, queued blocks) and the interfaces are looked at
/// even without a link event.
const TICK: std::time::Duration = std::time::Duration::from_secs(10);

/// The ring buffer, the enforcer, the bus and the metrics of a run that has loaded and attached.
type Setup = (
    AsyncFd<RingBuf<MapData>>,
    Option<Enforcer>,
    Bus<'static>,
    Option<RunMetrics>,
);

/// `--metrics` while the run lasts: the server (stopped when dropped) and the handles the run
/// loop counts with.
struct RunMetrics {
    _server: MetricsServer,
    _census: Census,
    capture: CaptureMetrics,
    scorer: ScorerMetrics,
    /// The registry, for the parts that start after it (the fleet).
    registry: crate::ops::metrics::Metrics,
}

/// Everything after attaching that can still fail the start.
fn setup<W: Write + Send + 'static>(
    loaded: &mut Loaded,
    opts: &RunOptions,
    mut sinks: Sinks<W>,
) -> anyhow::Result<Setup> {
    let ring = loaded
        .ebpf
        .take_map(MAP_EVENTS)
        .context("EVENTS map missing from the object")?;
    let ring = RingBuf::try_from(ring).context("EVENTS is not a ring buffer")?;
    // SAFETY: RingBuf owns its map fd and keeps it open, unchanged, until it is dropped, which
    // happens only through this AsyncFd.
    let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("register ring buffer with tokio: {e}"))?;
    let recorder = restore_state(&loaded.pin_dir, opts.state.as_deref());
    let journal = opts.state.as_deref().filter(|_| recorder.has_db());
    let enforcer = match (&opts.enforce, &opts.scoring) {
        (Some(e), Some(_)) => Some(
            Enforcer::new(&loaded.pin_dir, e.clone())
                .context("open the blocklist maps")?
                .with_recorder(recorder),
        ),
        _ => None,
    };
    let queue = sinks.queue;
    let endpoint = sinks.metrics.take();
    let mut bus = subscribe(sinks)?;
    if let Some(path) = journal {
        match JournalSink::open(path) {
            Ok(sink) => bus
                .subscribe_queued("journal", &journal_sink::KINDS, bus::DEFAULT_QUEUE, sink)
                .context("start the journal sink")?,
            Err(e) => warn!("{e}: verdicts are not journalled"),
        }
    }
    let metrics = endpoint
        .map(|ep| start_metrics(ep, &loaded.pin_dir, &mut bus, queue))
        .transpose()?;
    Ok((ring, enforcer, bus, metrics))
}

/// Subscribes the metrics to the bus (after the other sinks, so their drops are reported too),
/// opens the pinned counters for the scrapes, and starts the endpoint's thread.
fn start_metrics(
    ep: MetricsEndpoint,
    pin_dir: &std::path::Path,
    bus: &mut Bus<'static>,
    queue: usize,
) -> anyhow::Result<RunMetrics> {
    let m = ep.metrics;
    m.add_kernel_counters(pin_dir)
        .context("metrics: open the pinned counters")?;
    bus.subscribe_queued("metrics", &EventKind::ALL, queue, m.sink())
        .context("start the metrics sink")?;
    m.add_sink_drops(bus.drop_counters());
    let server =
        metrics_http::spawn(ep.listener, m.clone()).context("start the metrics endpoint")?;
    info!("metrics: http://{}{}", server.addr(), metrics_http::PATH);
    let census = blocklist_census::spawn(pin_dir, m.blocklist())
        .context("start the blocklist census for the metrics")?;
    Ok(RunMetrics {
        _server: server,
        _census: census,
        capture: m.capture(),
        scorer: m.scorer(),
        registry: m,
    })
}

/// Opens the state database and brings the pinned maps in line with it (a reboot emptied
/// them; a crash left them behind the database). A database that cannot be used is one error
/// line naming it, and the run goes on from the pins without it.
fn restore_state(pin_dir: &std::path::Path, path: Option<&std::path::Path>) -> Recorder {
    let Some(path) = path else {
        info!("--no-state: no state database; blocks are neither recorded nor restored");
        return Recorder::without_db();
    };
    let mut rec = Recorder::open_or_warn(path);
    if !rec.has_db() {
        return rec;
    }
    let restored = Maps::open(pin_dir)
        .map_err(anyhow::Error::from)
        .and_then(|mut maps| rec.restore(&mut maps).map_err(anyhow::Error::from));
    match restored {
        Ok(r) => info!(
            "restored {} blocks from the database in {} ms ({} removed from the maps, {} \
             expired dropped{}); state in {}",
            r.added,
            r.elapsed.as_millis(),
            r.removed,
            r.expired,
            if r.adopted > 0 {
                format!(", {} map entries recorded in a new database", r.adopted)
            } else {
                String::new()
            },
            path.display()
        ),
        Err(e) => log::error!("restoring the blocks from {}: {e:#}", path.display()),
    }
    rec
}

/// The dnstap server of `--dnstap-socket`, and the receiving end of its observations.
type DnstapSource = (
    Option<DnstapServer>,
    Option<tokio::sync::mpsc::Receiver<Observation>>,
);

fn start_dnstap(opts: &RunOptions) -> anyhow::Result<DnstapSource> {
    Ok(match &opts.dnstap_socket {
        Some(path) => {
            let (tx, rx) = tokio::sync::mpsc::channel(dnstap_input::CHANNEL_DEPTH);
            (Some(DnstapServer::start(path, tx)?), Some(rx))
        }
        None => (None, None),
    })
}

/// Stops the dnstap server; what its connections had already handed over still goes through
/// the pipeline.
fn stop_dnstap((server, rx): DnstapSource, p: &mut Pipeline<'_>) {
    if let Some(d) = server {
        d.stop();
    }
    if let Some(mut rx) = rx {
        while let Ok(obs) = rx.try_recv() {
            p.observe(obs);
        }
    }
}

/// The next allowlist a reload sent, or never without a reloader.
async fn next_allowlist(
    rx: &mut Option<AllowlistUpdates>,
) -> Option<std::sync::Arc<flux_detect::known_good::Allowlist>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next link event, or never without a watch.
async fn link_changed(links: &mut Option<LinkWatch>) -> std::io::Result<()> {
    match links {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Loads the programs and attaches them to every interface asked for; a failed attach detaches
/// what this run attached and leaves no pins of its own behind.
fn load_and_attach(opts: &RunOptions) -> anyhow::Result<Loaded> {
    let ifaces = if opts.attach {
        resolve_interfaces(&opts.ifaces)?
    } else {
        Vec::new()
    };
    let mut loaded = loader::load(&opts.load)?;
    for iface in &ifaces {
        if let Err(e) = loaded.attach(iface, opts.mode, opts.force) {
            loaded.rollback();
            drop(loaded);
            return Err(e.into());
        }
    }
    Ok(loaded)
}

/// Polls `shutdown` once, and calls `ready` only if it is still pending: whatever the first
/// poll sets up (the binary's signal handlers) is then in place before `ready` says so. True
/// when `shutdown` had already resolved, and must not be polled again.
async fn announce_when_armed<F: Future<Output = ()>>(
    mut shutdown: std::pin::Pin<&mut F>,
    ready: impl FnOnce(),
) -> bool {
    let resolved =
        std::future::poll_fn(|cx| std::task::Poll::Ready(shutdown.as_mut().poll(cx).is_ready()))
            .await;
    if !resolved {
        ready();
    }
    resolved
}

fn log_attachments(loaded: &Loaded, dnstap: Option<&std::path::Path>) {
    if loaded.attachments.is_empty() {
        info!(
            "capturing DNS responses from dnstap only ({}), no XDP program attached; pinned \
             maps in {}; Ctrl-C to stop",
            dnstap.map_or_else(|| "-".into(), |p| p.display().to_string()),
            loaded.pin_dir.display()
        );
        return;
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
}

/// The bus with the sinks of this run subscribed, each on its own thread.
fn subscribe<W: Write + Send + 'static>(sinks: Sinks<W>) -> anyhow::Result<Bus<'static>> {
    let mut bus = Bus::new();
    if let Some((w, format)) = sinks.events {
        let sink = EventsWriter::new(w, format);
        bus.subscribe_queued("events", format.kinds(), sinks.queue, sink)
            .context("start the events sink")?;
    }
    if sinks.log {
        bus.subscribe_queued("log", &LogSink::KINDS, sinks.queue, LogSink)
            .context("start the log sink")?;
    }
    Ok(bus)
}

fn log_report(report: &BusReport) {
    for (name, n) in report.dropped.iter().filter(|(_, n)| *n > 0) {
        warn!("events sink '{name}' dropped {n} events: its queue was full");
    }
    for name in &report.unfinished {
        warn!("events sink '{name}' was still writing at exit; what it held is lost");
    }
}

/// How long the sinks get at exit to write what they hold. Half a second: SIGTERM must be
/// honoured within a second whatever a sink is doing (issue 14), and the detach and unpin
/// steps after it take a few milliseconds; a healthy sink writes its queue in far less.
const SINK_DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);

/// The live source: ring-buffer records to observations, stamped by the kernel clock.
struct RingSource {
    /// `--monitor`: the kernel flags a blocked reply but lets it through, so the event says
    /// `would_block`, not `blocked`.
    monitor: bool,
    clock: MonoClock,
    /// When `clock` was last resynchronised (every 60 s, from the drain).
    last_resync: std::time::Instant,
    if_names: HashMap<u32, std::sync::Arc<str>>,
    summary: RunSummary,
    metrics: Option<CaptureMetrics>,
    /// The record read ahead: the drain that read it flushes it before it ends, so no record
    /// waits for the next.
    ahead: ReadAhead,
}

impl RingSource {
    fn handle_record(&mut self, rec: &[u8], p: &mut Pipeline<'_>) {
        self.summary.records += 1;
        let m = self.metrics.as_ref();
        if let Some(m) = m {
            m.records.inc();
        }
        let capture = match Capture::in_record(rec) {
            Ok(c) => c,
            Err(e) => {
                self.summary.bad_records += 1;
                if let Some(m) = m {
                    m.bad_records.inc();
                }
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
                    .into()
            })
            .clone();
        let ts = self.clock.to_system_time(capture.header.ts_ns);
        match Observation::from_capture(&capture, ts, iface) {
            Ok(mut obs) => {
                if self.monitor {
                    obs.would_block = obs.blocked;
                    obs.blocked = false;
                }
                self.ahead.push(p, obs);
            }
            Err(e) => {
                self.summary.parse_errors += 1;
                if let Some(m) = &self.metrics {
                    m.parse_errors.inc();
                }
                debug!(
                    "unparseable DNS response from {}:{} ({} bytes): {e}",
                    capture.src(),
                    capture.header.src_port,
                    capture.data.len()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty drain goes back to the kernel's wakeup (an idle agent does not turn every
    /// millisecond); a partial one lingers, with the timer set one `RING_LINGER` ahead; a full
    /// batch comes straight back. The live loop is tested in `tests/tests/metrics_scrape.rs`
    /// (`the_capture_loop_batches_...`).
    #[tokio::test]
    async fn the_next_drain_lingers_only_after_records() {
        let hour = std::time::Duration::from_secs(3600);
        let start = tokio::time::Instant::now();
        let timer = tokio::time::sleep(hour);
        tokio::pin!(timer);
        let set = timer.deadline();
        assert_eq!(next_drain(0, timer.as_mut()), NextDrain::OnWakeup);
        assert_eq!(next_drain(DRAIN_BATCH, timer.as_mut()), NextDrain::Now);
        assert_eq!(
            timer.deadline(),
            set,
            "only a lingering turn sets the timer"
        );
        assert_eq!(next_drain(1, timer.as_mut()), NextDrain::Linger);
        let at = timer.deadline();
        assert!(at >= start + RING_LINGER && at <= tokio::time::Instant::now() + RING_LINGER);
        assert_eq!(
            next_drain(DRAIN_BATCH - 1, timer.as_mut()),
            NextDrain::Linger
        );
    }

    /// The ready line comes after the first poll of `shutdown`, the poll that registers the
    /// binary's SIGINT and SIGTERM handlers (`Signals::serve`): a Ctrl-C at the line must find
    /// them in place. A shutdown already resolved by that poll stops the run without the line.
    #[tokio::test]
    async fn the_ready_line_waits_for_the_signal_handlers() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let armed = AtomicBool::new(false);
        let shutdown = async {
            // Stands for `signal(SignalKind::interrupt())` in `serve`'s first poll.
            armed.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        };
        tokio::pin!(shutdown);
        let mut announced_armed = None;
        let stopped = announce_when_armed(shutdown.as_mut(), || {
            announced_armed = Some(armed.load(Ordering::SeqCst))
        })
        .await;
        assert!(!stopped);
        assert_eq!(
            announced_armed,
            Some(true),
            "announced before the handlers existed"
        );

        let done = std::future::ready(());
        tokio::pin!(done);
        let mut announced = false;
        assert!(announce_when_armed(done.as_mut(), || announced = true).await);
        assert!(!announced, "a run stopped before its loop is not ready");
    }
}
