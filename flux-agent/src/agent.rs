//! The running agent: load, attach, drain the ring buffer, emit observations, detach.
//!
//! Packet path: NIC -> `flux_xdp` (flux-ebpf) -> `EVENTS` ring buffer -> [`Capture`] ->
//! [`Observation`] -> event sink, and -> [`Scorer`] -> verdicts in the same sink.

use std::{collections::HashMap, future::Future, io::Write, path::PathBuf};

use anyhow::Context as _;
use aya::maps::RingBuf;
use flux_common::MAP_EVENTS;
use log::{debug, info, warn};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    capture::{Capture, Observation},
    clock::MonoClock,
    iface::{Interface, default_route_interface},
    loader::{self, AttachMode, LoadError, LoadOptions},
    score::{Scorer, ScorerSetup, Verdict},
};

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Interfaces to attach to; empty means the default-route interface.
    pub ifaces: Vec<String>,
    pub mode: AttachMode,
    pub force: bool,
    pub load: LoadOptions,
    /// Score observations and emit verdicts; `None` only captures.
    pub scoring: Option<ScorerSetup>,
}

/// What a run saw, for the exit summary and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub records: u64,
    pub observations: u64,
    pub parse_errors: u64,
    pub bad_records: u64,
    pub verdicts: u64,
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
    mut events: Option<(W, EventFormat)>,
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

    let names: Vec<String> = loaded
        .attachments
        .iter()
        .map(|a| format!("{} ({} mode)", a.iface.name, a.mode))
        .collect();
    info!(
        "capturing DNS responses on {}; pinned maps in {}; Ctrl-C to stop",
        names.join(", "),
        loaded.pin_dir.display()
    );

    let mut scorer = opts.scoring.as_ref().map(ScorerSetup::build);
    let mut clock = MonoClock::new();
    let mut if_names: HashMap<u32, String> = HashMap::new();
    let mut summary = RunSummary::default();
    let mut last_resync = std::time::Instant::now();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            guard = ring.readable_mut() => {
                let mut guard = guard.context("wait on ring buffer")?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    handle_record(&item, &clock, &mut if_names, &mut summary, scorer.as_mut(), events.as_mut());
                }
                guard.clear_ready();
                if let Some((w, _)) = events.as_mut() {
                    w.flush().context("write events")?;
                }
                if last_resync.elapsed().as_secs() >= 60 {
                    clock.resync();
                    last_resync = std::time::Instant::now();
                }
            }
        }
    }

    // Whatever arrived before the signal still gets reported.
    let rb = ring.get_mut();
    while let Some(item) = rb.next() {
        handle_record(
            &item,
            &clock,
            &mut if_names,
            &mut summary,
            scorer.as_mut(),
            events.as_mut(),
        );
    }
    if let Some((w, _)) = events.as_mut() {
        w.flush().context("write events")?;
    }
    drop(ring);
    let pin_dir: PathBuf = loaded.pin_dir.clone();
    drop(loaded);
    info!(
        "stopped; {} responses captured, {} parse errors. The XDP program stays attached and \
         enforcing from {}; `flux-agent unload` removes it",
        summary.observations,
        summary.parse_errors,
        pin_dir.display()
    );
    Ok(summary)
}

fn handle_record<W: Write>(
    rec: &[u8],
    clock: &MonoClock,
    if_names: &mut HashMap<u32, String>,
    summary: &mut RunSummary,
    scorer: Option<&mut Scorer>,
    mut events: Option<&mut (W, EventFormat)>,
) {
    summary.records += 1;
    let capture = match Capture::from_record(rec) {
        Ok(c) => c,
        Err(e) => {
            summary.bad_records += 1;
            warn!("dropping malformed ring-buffer record: {e}");
            return;
        }
    };
    let ifindex = capture.header.ifindex;
    let iface = if_names
        .entry(ifindex)
        .or_insert_with(|| {
            Interface::by_index(ifindex)
                .map(|i| i.name)
                .unwrap_or_else(|| format!("if{ifindex}"))
        })
        .clone();
    let ts = clock.to_system_time(capture.header.ts_ns);
    match Observation::from_capture(&capture, ts, iface) {
        Ok(obs) => {
            summary.observations += 1;
            if let Some((w, format)) = events.as_mut() {
                write_event(w, *format, &obs);
            }
            if let Some(scorer) = scorer {
                let mut verdicts = Vec::new();
                scorer.observe(obs.ts, &obs.msg, &mut verdicts);
                for v in &verdicts {
                    summary.verdicts += 1;
                    log_verdict(v);
                    if let Some((w, format)) = events.as_mut() {
                        write_event(w, *format, v);
                    }
                }
            }
        }
        Err(e) => {
            summary.parse_errors += 1;
            debug!(
                "unparseable DNS response from {}:{} ({} bytes): {e}",
                capture.src(),
                capture.header.src_port,
                capture.data.len()
            );
        }
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
