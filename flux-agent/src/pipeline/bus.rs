//! The event bus: the pipeline publishes every [`Event`] once; each subscriber receives the kinds
//! it asked for. Adding a consumer (metrics, a state database, feeds, the fleet, a live view) is
//! one more subscription, nothing else.
//!
//! Two ways to subscribe:
//! - [`Bus::subscribe_queued`]: the sink runs on **its own thread** behind a **bounded queue**.
//!   When the queue is full the event being published is **dropped for that sink alone and
//!   counted** (the newest is dropped, so what the sink already queued stays in order). The
//!   publisher never waits: a sink that cannot keep up (an events file on a slow disk, a FIFO
//!   nobody reads) loses events, never the ring buffer's records, and never delays a block.
//!   Drops are logged (at most every 10 s per sink) and at shutdown.
//! - [`Bus::subscribe_inline`]: called on the publisher's thread, in order, losing nothing. Only
//!   for sources that may wait (replay reads a file; nothing is lost by going slower) and for
//!   in-memory consumers.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use log::{debug, warn};

use crate::pipeline::events::{Event, EventKind, Kinds};

/// Events a queued sink may hold before new ones are dropped for it. A `dns` event is about
/// 1 KiB in memory, so a stuck sink holds at most about 16 MiB.
pub const DEFAULT_QUEUE: usize = 16 * 1024;

/// Where a queued subscriber writes. It runs on its own thread, so it may block.
pub trait Sink: Send + 'static {
    fn write(&mut self, e: &Event) -> io::Result<()>;
    /// Called when the queue is momentarily empty, and at the end.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Queued {
    name: String,
    kinds: Kinds,
    tx: Option<SyncSender<Arc<Event>>>,
    /// Shared with the metrics (`flux_events_dropped_total`), read at each scrape.
    dropped: Arc<AtomicU64>,
    last_warned: Option<Instant>,
    /// Says the thread has written and flushed everything it was given.
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

struct Inline<'a> {
    kinds: Kinds,
    f: Box<dyn FnMut(&Event) + 'a>,
}

/// What the bus dropped, per queued sink, for the exit summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusReport {
    /// `(sink name, events dropped because its queue was full)`.
    pub dropped: Vec<(String, u64)>,
    /// Sinks that had not finished writing when the shutdown deadline passed.
    pub unfinished: Vec<String>,
}

impl BusReport {
    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Default)]
pub struct Bus<'a> {
    queued: Vec<Queued>,
    inline: Vec<Inline<'a>>,
    wanted: Kinds,
}

impl<'a> Bus<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether any subscriber wants `kind` (so the publisher can skip building the event).
    pub fn wants(&self, kind: EventKind) -> bool {
        self.wanted.contains(kind)
    }

    /// Runs `sink` on its own thread behind a queue of `capacity` events (see the module
    /// comment for what happens when it is full).
    pub fn subscribe_queued(
        &mut self,
        name: &str,
        kinds: &[EventKind],
        capacity: usize,
        mut sink: impl Sink,
    ) -> io::Result<()> {
        let (tx, rx) = mpsc::sync_channel::<Arc<Event>>(capacity.max(1));
        let (done_tx, done) = mpsc::sync_channel(1);
        let sink_name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("sink {name}"))
            .spawn(move || {
                drain(&rx, &mut sink, &sink_name);
                let _ = done_tx.send(());
            })?;
        let kinds = Kinds::of(kinds);
        self.wanted = self.wanted.union(kinds);
        self.queued.push(Queued {
            name: name.to_owned(),
            kinds,
            tx: Some(tx),
            dropped: Arc::default(),
            last_warned: None,
            done,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Calls `f` with every event of `kinds`, on the publisher's thread (see the module comment).
    pub fn subscribe_inline(&mut self, kinds: &[EventKind], f: impl FnMut(&Event) + 'a) {
        let kinds = Kinds::of(kinds);
        self.wanted = self.wanted.union(kinds);
        self.inline.push(Inline {
            kinds,
            f: Box::new(f),
        });
    }

    /// Hands `e` to every subscriber that wants it. Never blocks on a queued sink.
    pub fn publish(&mut self, e: Event) {
        let kind = e.kind();
        if !self.wanted.contains(kind) {
            return;
        }
        for s in self.inline.iter_mut().filter(|s| s.kinds.contains(kind)) {
            (s.f)(&e);
        }
        if !self.queued.iter().any(|q| q.kinds.contains(kind)) {
            return;
        }
        let e = Arc::new(e);
        for q in self.queued.iter_mut().filter(|q| q.kinds.contains(kind)) {
            let Some(tx) = &q.tx else { continue };
            match tx.try_send(Arc::clone(&e)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    let dropped = q.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if q.last_warned
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                    {
                        q.last_warned = Some(Instant::now());
                        warn!(
                            "events sink '{}' cannot keep up; dropping its events ({} so far)",
                            q.name, dropped
                        );
                    }
                }
            }
        }
    }

    /// Events dropped so far, all queued sinks together.
    pub fn dropped(&self) -> u64 {
        self.queued
            .iter()
            .map(|q| q.dropped.load(Ordering::Relaxed))
            .sum()
    }

    /// Each queued sink's name and its count of dropped events, live (for the metrics).
    pub fn drop_counters(&self) -> Vec<(String, Arc<AtomicU64>)> {
        self.queued
            .iter()
            .map(|q| (q.name.clone(), Arc::clone(&q.dropped)))
            .collect()
    }

    /// Closes every queue and waits, at most `deadline` in all, for the sinks to write what
    /// they hold. A sink still blocked then (a FIFO nobody reads) is left behind: its thread
    /// ends with the process, and it is named in the report.
    pub fn close(mut self, deadline: Duration) -> BusReport {
        let until = Instant::now() + deadline;
        let mut report = BusReport::default();
        for q in &mut self.queued {
            q.tx = None;
        }
        for q in &mut self.queued {
            let left = until.saturating_duration_since(Instant::now());
            match q.done.recv_timeout(left) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    if let Some(t) = q.thread.take() {
                        let _ = t.join();
                    }
                }
                Err(RecvTimeoutError::Timeout) => report.unfinished.push(q.name.clone()),
            }
            report
                .dropped
                .push((q.name.clone(), q.dropped.load(Ordering::Relaxed)));
        }
        report
    }
}

/// How long a sink thread waits, after its queue ran empty and it flushed, before it goes back
/// to blocking on the queue. Why: a sink that blocks as soon as it has caught up is woken for
/// every event at a steady rate (each event finds it asleep), and both sides pay for it. Under
/// `ringbuf-load` at 30,000 responses/s the events and metrics sink threads spent more time in
/// the kernel being switched in and out than writing, and the capture thread paid a futex wake
/// per event to each of them: about 40% of the agent's CPU. A sink that sleeps this long first
/// finds the events of the interval waiting and writes them in one turn; while it sleeps it is
/// not registered on the queue, so a publish is a plain push. 2 ms keeps wakeups to at most 500
/// a second per sink and delays a sink's output by at most 2 ms: no sink is on the block path
/// (enforcement runs on the capture thread), and at 200,000 events/s 2 ms is 400 events, a
/// fortieth of [`DEFAULT_QUEUE`].
pub const SINK_LINGER: Duration = Duration::from_millis(2);

/// The sink thread: writes what arrives, flushing whenever the queue runs empty, then lingers
/// ([`SINK_LINGER`]) before it waits for more.
fn drain(rx: &Receiver<Arc<Event>>, sink: &mut impl Sink, name: &str) {
    let mut failed = false;
    let mut note = |r: io::Result<()>| {
        if let Err(e) = r
            && !std::mem::replace(&mut failed, true)
        {
            warn!("events sink '{name}': {e} (further errors not shown)");
        }
    };
    while let Ok(e) = rx.recv() {
        note(sink.write(&e));
        while let Ok(e) = rx.try_recv() {
            note(sink.write(&e));
        }
        note(sink.flush());
        std::thread::sleep(SINK_LINGER);
    }
    note(sink.flush());
    debug!("events sink '{name}' closed");
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Mutex, atomic::AtomicBool, atomic::Ordering},
        time::SystemTime,
    };

    use super::*;
    use crate::enforce::policy::{Action, ActionKind, Outcome};

    fn alert(n: usize) -> Event {
        Event::from(Action {
            kind: ActionKind::Alert,
            ts: SystemTime::UNIX_EPOCH,
            domain: format!("d{n}"),
            action: Outcome::RateCapped,
            target_kind: None,
            target: None,
            reason: String::new(),
        })
    }

    /// A sink that blocks until released, like a FIFO nobody reads.
    struct Stuck(Arc<AtomicBool>, Arc<Mutex<Vec<String>>>);
    impl Sink for Stuck {
        fn write(&mut self, e: &Event) -> io::Result<()> {
            while !self.0.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Event::Alert(a) = e {
                self.1.lock().unwrap().push(a.domain.clone());
            }
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_drops_and_never_blocks_the_publisher() {
        let release = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut inline_seen = 0;
        {
            let mut bus = Bus::new();
            bus.subscribe_queued(
                "stuck",
                &[EventKind::Alert],
                4,
                Stuck(release.clone(), seen.clone()),
            )
            .unwrap();
            bus.subscribe_inline(&[EventKind::Alert], |_| inline_seen += 1);
            assert!(!bus.wants(EventKind::Dns));
            let t = Instant::now();
            for n in 0..1000 {
                bus.publish(alert(n));
            }
            assert!(t.elapsed() < Duration::from_secs(2), "publisher waited");
            // At most the queue (4) and the one event the thread holds got through.
            assert!(bus.dropped() >= 1000 - 5, "{}", bus.dropped());
            // Still stuck at the deadline: reported, not waited for.
            let t = Instant::now();
            let r = bus.close(Duration::from_millis(100));
            assert!(t.elapsed() < Duration::from_secs(1));
            assert_eq!(r.unfinished, vec!["stuck".to_owned()]);
            assert_eq!(r.total_dropped(), r.dropped[0].1);
        }
        assert_eq!(inline_seen, 1000, "inline subscribers lose nothing");
        release.store(true, Ordering::Relaxed);
    }

    #[test]
    fn a_sink_that_keeps_up_gets_everything_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut bus = Bus::new();
        bus.subscribe_queued(
            "fast",
            &[EventKind::Alert],
            2048,
            Stuck(Arc::new(AtomicBool::new(true)), seen.clone()),
        )
        .unwrap();
        for n in 0..1000 {
            bus.publish(alert(n));
        }
        let r = bus.close(Duration::from_secs(10));
        assert!(r.unfinished.is_empty());
        assert_eq!(r.total_dropped(), 0);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1000);
        assert_eq!(seen[999], "d999");
    }

    /// Counts what it wrote and the turns it took (one flush a turn).
    struct Turns(Arc<AtomicU64>, Arc<AtomicU64>);
    impl Sink for Turns {
        fn write(&mut self, _: &Event) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    /// Events published at a steady pace are written in turns at least [`SINK_LINGER`] apart,
    /// not one wakeup per event: a turn starts only after the linger that followed the one
    /// before, so a run of `elapsed` holds at most `elapsed / SINK_LINGER + 1` turns, whatever
    /// the machine's load (a slow machine only batches more). Without the linger each event,
    /// 100 µs after the one before, finds the sink asleep and takes a turn of its own.
    #[test]
    fn a_sink_is_woken_once_per_linger_not_once_per_event() {
        let (written, turns) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut bus = Bus::new();
        bus.subscribe_queued(
            "paced",
            &[EventKind::Alert],
            DEFAULT_QUEUE,
            Turns(written.clone(), turns.clone()),
        )
        .unwrap();
        const EVENTS: u64 = 200;
        let started = Instant::now();
        for n in 0..EVENTS {
            bus.publish(alert(n as usize));
            std::thread::sleep(Duration::from_micros(100));
        }
        while written.load(Ordering::Relaxed) < EVENTS {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "sink never caught up"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let elapsed = started.elapsed();
        let turns = turns.load(Ordering::Relaxed);
        let bound = (elapsed.as_micros() / SINK_LINGER.as_micros()) as u64 + 1;
        assert!(
            turns <= bound,
            "{turns} turns for {EVENTS} events in {elapsed:?} (at most {bound})"
        );
        let r = bus.close(Duration::from_secs(10));
        assert_eq!(r.total_dropped(), 0);
    }
}
