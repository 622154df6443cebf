//! The Prometheus registry of a running agent and every metric family in it (`run --metrics`).
//!
//! Where the numbers come from:
//! - **events** (`dns`, `verdict`, `block`, `guard`, `alert`): a [`MetricsSink`] subscribed to
//!   the bus like the events file and the log, on its own thread behind a bounded queue; if it
//!   falls behind, its events are dropped and counted (`flux_events_dropped_total{sink="metrics"}`)
//!   and the capture never waits;
//! - **the kernel counters**: read from the pinned per-CPU `COUNTERS` map at scrape time and
//!   summed over CPUs. The kernel keeps them per CPU for the whole program, not per interface,
//!   so they carry no `iface` label. Each counter is its own metric (`flux_kernel_<name>_total`):
//!   they count different things, so a label would invite summing them;
//! - **the capture loop** ([`CaptureMetrics`]): ring-buffer records read and those that did not
//!   parse, which never become events;
//! - **the scorer** ([`ScorerMetrics`]): the time of each `Scorer::observe` call (a lock-free
//!   histogram, [`LatencyHistogram`]), and the keys tracked and the memory estimate, set on the
//!   pipeline's 10 s tick (the estimate walks every key);
//! - **the bus**: events dropped per queued sink, read at scrape time;
//! - **the pinned blocklists**: active entries by source and kind, counted every 15 s on a
//!   thread of their own (`ops::blocklist_census`);
//! - **feeds and the state database**: [`Metrics::feed`] and [`Metrics::db_error`], for the
//!   subsystems that own them to call;
//! - **the fleet** (`run --fleet-url`): its counters (`fleet::fleet_stats`), read at scrape time
//!   once the fleet has started ([`Metrics::add_fleet`]); absent from an agent without a fleet.
//!
//! Labels are bounded: enums (transport, level, target kind, outcome), sink names, interface-free
//! kernel counters, and operator-chosen feed names. Never a domain or an address.
//!
//! May touch: nothing but its own atomics and the pinned counter map (read only).

use std::{
    fmt,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{Map, MapData, PerCpuArray};
use flux_common::Counter as KernelCounter;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{
        MetricType, TypedMetric,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
    },
    registry::Registry,
};

use crate::{
    enforce::policy::{Action, Outcome, TargetKind},
    fleet::fleet_stats::FleetStats,
    kernel::pins,
    pipeline::{bus::Sink, events::Event},
};
use flux_common::MAP_COUNTERS;
use flux_detect::{
    dns::Transport,
    score::{Level, Scorer},
};

/// Every metric name starts with it.
pub const PREFIX: &str = "flux";

/// `source` of the blocks the pipeline publishes: today only the scorer's verdicts reach the
/// enforcer (manual blocks are written by the CLI, outside the running agent).
const SOURCE_SCORER: &str = "scorer";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsLabels {
    transport: &'static str,
    /// `no` for replies no query of this host matches (never scored).
    solicited: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    level: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BlockLabels {
    source: &'static str,
    target_kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    target_kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabels {
    feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedResultLabels {
    feed: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The families fed from bus events.
#[derive(Clone, Debug, Default)]
struct EventFamilies {
    dns: Family<DnsLabels, Counter>,
    truncated: Counter,
    verdicts: Family<LevelLabels, Counter>,
    blocks: Family<BlockLabels, Counter>,
    guard_refusals: Family<KindLabels, Counter>,
    rate_cap_hits: Counter,
    alerts: Counter,
    /// Responses whose name, CNAME chain or addresses a loaded feed lists (`intel` events).
    feed_matches: Counter,
}

impl EventFamilies {
    /// Creates every series whose labels are all enums, at 0: a series that appears only at its
    /// first event makes `rate()` and `increase()` miss that event, and a dashboard panel empty.
    fn zero_every_series(&self) {
        for transport in ["udp", "tcp"] {
            for solicited in ["yes", "no"] {
                let _ = self.dns.get_or_create(&DnsLabels {
                    transport,
                    solicited,
                });
            }
        }
        for level in [Level::Benign, Level::Suspicious, Level::Flux] {
            let _ = self.verdicts.get_or_create(&LevelLabels {
                level: level.as_str(),
            });
        }
        for target_kind in
            [TargetKind::Domain, TargetKind::Ip, TargetKind::Cidr].map(TargetKind::as_str)
        {
            // A refusal is a `guard` event, never a `block` one.
            for outcome in [
                Outcome::Blocked,
                Outcome::Refreshed,
                Outcome::WouldBlock,
                Outcome::RateCapped,
                Outcome::Failed,
            ] {
                let _ = self.blocks.get_or_create(&BlockLabels {
                    source: SOURCE_SCORER,
                    target_kind,
                    outcome: outcome.as_str(),
                });
            }
            let _ = self
                .guard_refusals
                .get_or_create(&KindLabels { target_kind });
        }
    }
}

/// Families that have no series until their subsystem reports (a feed is configured, the state
/// database fails): absent from a scrape before that, so the dashboard test accepts them from
/// this list, and a unit test proves each appears once reported.
pub const REPORTED_ON_USE: [&str; 4] = [
    "flux_feed_entries",
    "flux_feed_refreshes_total",
    "flux_feed_last_refresh_success",
    "flux_feed_last_refresh_timestamp_seconds",
];

/// The families the feeds and the state database report through (see [`Metrics::feed`]).
#[derive(Clone, Debug, Default)]
struct FeedFamilies {
    entries: Family<FeedLabels, Gauge>,
    refreshes: Family<FeedResultLabels, Counter>,
    last_success: Family<FeedLabels, Gauge>,
    last_refresh: Family<FeedLabels, Gauge<f64, AtomicU64>>,
}

/// The agent's metrics: cheap to clone (every handle shares the same registry and values).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    events: EventFamilies,
    feeds: FeedFamilies,
    capture: CaptureMetrics,
    scorer: ScorerMetrics,
    blocklist: BlocklistGauges,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The registry with every family of the agent (the kernel counters and the sink drops are
    /// added once the run has loaded and subscribed: [`Metrics::add_kernel_counters`],
    /// [`Metrics::add_sink_drops`]).
    pub fn new() -> Self {
        let mut r = Registry::with_prefix(PREFIX);
        let events = EventFamilies::default();
        let feeds = FeedFamilies::default();
        let capture = CaptureMetrics::default();
        let scorer = ScorerMetrics::default();
        let info = Family::<VersionLabels, Gauge>::default();
        info.get_or_create(&VersionLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        r.register(
            "build_info",
            "Always 1; the agent's version in a label",
            info,
        );
        events.zero_every_series();
        register_events(&mut r, &events);
        register_feeds(&mut r, &feeds);
        r.register(
            "ring_records",
            "Records read from the ring buffer (DNS responses the kernel captured)",
            capture.records.clone(),
        );
        r.register(
            "ring_drains",
            "Times the capture loop read the ring buffer (empty reads too); ring_records over this is its batching",
            capture.drains.clone(),
        );
        r.register(
            "ring_bad_records",
            "Ring-buffer records too short or inconsistent to read (dropped)",
            capture.bad_records.clone(),
        );
        r.register(
            "dns_parse_errors",
            "Captured DNS responses that did not parse (not scored, no event)",
            capture.parse_errors.clone(),
        );
        r.register(
            "scorer_observe_seconds",
            "Time of one Scorer::observe call (one DNS response scored)",
            scorer.latency.clone(),
        );
        r.register(
            "scorer_keys_tracked",
            "Keys (names, registered domains, zones, NS hosts) the scorer holds; set every 10 s",
            scorer.keys.clone(),
        );
        r.register(
            "scorer_memory_bytes",
            "The scorer's estimate of the heap and table bytes it holds; set every 10 s",
            scorer.memory.clone(),
        );
        let blocklist = BlocklistGauges::default();
        blocklist.zero_every_series();
        r.register(
            "blocklist_entries",
            "Blocks in the pinned maps now (expired ones excluded), by source and target kind; \
             counted every 15 s",
            blocklist.0.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(r)),
            events,
            feeds,
            capture,
            scorer,
            blocklist,
        }
    }

    /// The bus subscriber that turns events into counts.
    pub fn sink(&self) -> MetricsSink {
        MetricsSink(self.events.clone())
    }

    /// The handle the capture loop counts records with.
    pub fn capture(&self) -> CaptureMetrics {
        self.capture.clone()
    }

    /// The handle the pipeline times the scorer with.
    pub fn scorer(&self) -> ScorerMetrics {
        self.scorer.clone()
    }

    /// The gauges the blocklist census sets.
    pub fn blocklist(&self) -> BlocklistGauges {
        self.blocklist.clone()
    }

    /// Reads the kernel counters from the pinned `COUNTERS` map in `pin_dir` at every scrape.
    pub fn add_kernel_counters(&self, pin_dir: &Path) -> Result<(), pins::PinError> {
        let data = pins::open(pin_dir, MAP_COUNTERS)?;
        let map =
            PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(|e| pins::PinError::Open {
                path: pin_dir.join(MAP_COUNTERS),
                reason: e.to_string(),
            })?;
        self.register_collector(KernelCounters(Mutex::new(map)));
        Ok(())
    }

    /// Reports, at every scrape, the events each queued sink dropped (`Bus::drop_counters`).
    pub fn add_sink_drops(&self, sinks: Vec<(String, Arc<AtomicU64>)>) {
        self.register_collector(SinkDrops(sinks));
    }

    /// Reports the fleet's counters (`run --fleet-url`) at every scrape.
    pub fn add_fleet(&self, stats: Arc<FleetStats>) {
        self.register_collector(FleetCounters(stats));
    }

    fn register_collector(&self, c: impl Collector) {
        if let Ok(mut r) = self.registry.lock() {
            r.register_collector(Box::new(c));
        }
    }

    /// The metrics of the feed named `name` (an operator-chosen, bounded name: never a URL with
    /// a token in it): its entries, and each refresh's result.
    pub fn feed(&self, name: &str) -> FeedMetrics {
        FeedMetrics {
            name: name.to_owned(),
            families: self.feeds.clone(),
        }
    }

    /// Forgets the series of a feed that was removed.
    pub fn forget_feed(&self, name: &str) {
        let f = &self.feeds;
        let labels = FeedLabels {
            feed: name.to_owned(),
        };
        f.entries.remove(&labels);
        f.last_success.remove(&labels);
        f.last_refresh.remove(&labels);
        for result in ["ok", "error"] {
            f.refreshes.remove(&FeedResultLabels {
                feed: name.to_owned(),
                result,
            });
        }
    }

    /// The whole registry in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        let r = self.registry.lock().map_err(|_| fmt::Error)?;
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r)?;
        Ok(out)
    }
}

fn register_events(r: &mut Registry, e: &EventFamilies) {
    r.register(
        "dns_responses",
        "DNS responses parsed (dns events), by transport and whether a query of this host \
         matches them",
        e.dns.clone(),
    );
    r.register(
        "dns_truncated_responses",
        "Parsed DNS responses the capture holds only a prefix of",
        e.truncated.clone(),
    );
    r.register(
        "verdicts",
        "Verdicts (a key's level changed, or it passed or left the block gate), by new level",
        e.verdicts.clone(),
    );
    r.register(
        "blocks",
        "What the enforcer did about a block target, by source, target kind and outcome",
        e.blocks.clone(),
    );
    r.register(
        "guard_refusals",
        "Blocks the guard refused (allowlisted or never-block targets), by target kind",
        e.guard_refusals.clone(),
    );
    r.register(
        "rate_cap_hits",
        "Blocks that had to wait because the per-minute cap on new blocks was reached",
        e.rate_cap_hits.clone(),
    );
    r.register(
        "alerts",
        "Alerts raised for an operator (rate cap reached, waiting blocks dropped)",
        e.alerts.clone(),
    );
    r.register(
        "feed_matches",
        "Names reported because a loaded feed lists them, a CNAME of their chain or an address \
         they resolve to (intel events; once per name and feed)",
        e.feed_matches.clone(),
    );
}

fn register_feeds(r: &mut Registry, f: &FeedFamilies) {
    r.register(
        "feed_entries",
        "Entries the feed holds now",
        f.entries.clone(),
    );
    r.register(
        "feed_refreshes",
        "Refreshes of the feed, by result (ok or error)",
        f.refreshes.clone(),
    );
    r.register(
        "feed_last_refresh_success",
        "1 if the feed's last refresh succeeded, else 0",
        f.last_success.clone(),
    );
    r.register(
        "feed_last_refresh_timestamp_seconds",
        "When the feed was last refreshed (Unix time), whatever the result",
        f.last_refresh.clone(),
    );
    r.register_collector(Box::new(StateDbErrors));
}

/// Counts bus events; runs on the bus's sink thread.
pub struct MetricsSink(EventFamilies);

impl Sink for MetricsSink {
    fn write(&mut self, e: &Event) -> std::io::Result<()> {
        let f = &self.0;
        match e {
            Event::Dns(o) => {
                let labels = DnsLabels {
                    transport: match o.transport {
                        Transport::Udp => "udp",
                        Transport::Tcp => "tcp",
                    },
                    solicited: if o.unsolicited { "no" } else { "yes" },
                };
                f.dns.get_or_create(&labels).inc();
                if o.truncated {
                    f.truncated.inc();
                }
            }
            Event::Verdict(v) => {
                f.verdicts
                    .get_or_create(&LevelLabels {
                        level: v.level.as_str(),
                    })
                    .inc();
            }
            Event::Block(a) => {
                if a.action == Outcome::RateCapped {
                    f.rate_cap_hits.inc();
                }
                f.blocks.get_or_create(&block_labels(a)).inc();
            }
            Event::Guard(a) => {
                f.guard_refusals
                    .get_or_create(&KindLabels {
                        target_kind: target_kind(a),
                    })
                    .inc();
            }
            Event::Alert(_) => {
                f.alerts.inc();
            }
            Event::Intel(_) => {
                f.feed_matches.inc();
            }
        }
        Ok(())
    }
}

fn target_kind(a: &Action) -> &'static str {
    a.target_kind.map_or("none", TargetKind::as_str)
}

fn block_labels(a: &Action) -> BlockLabels {
    BlockLabels {
        source: SOURCE_SCORER,
        target_kind: target_kind(a),
        outcome: a.action.as_str(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BlocklistLabels {
    source: &'static str,
    target_kind: &'static str,
}

/// `flux_blocklist_entries{source, target_kind}`, set by `ops::blocklist_census`.
#[derive(Clone, Debug, Default)]
pub struct BlocklistGauges(Family<BlocklistLabels, Gauge>);

impl BlocklistGauges {
    const SOURCES: [&'static str; 3] = ["scorer", "manual", "feed"];
    const KINDS: [&'static str; 3] = ["domain", "ip", "cidr"];

    fn zero_every_series(&self) {
        self.set(&Vec::new());
    }

    /// Sets every series from one count, `(source, target_kind, entries)`; a known pair absent
    /// from `rows` is 0.
    pub fn set(&self, rows: &crate::ops::blocklist_census::Rows) {
        for source in Self::SOURCES {
            for target_kind in Self::KINDS {
                self.0
                    .get_or_create(&BlocklistLabels {
                        source,
                        target_kind,
                    })
                    .set(0);
            }
        }
        for (source, target_kind, n) in rows {
            self.0
                .get_or_create(&BlocklistLabels {
                    source,
                    target_kind,
                })
                .set(*n);
        }
    }
}

/// What the capture loop counts before a record becomes an event.
#[derive(Clone, Debug, Default)]
pub struct CaptureMetrics {
    pub records: Counter,
    /// Times the capture loop read the ring buffer, empty reads included: under load
    /// `records` over this is how many records a turn takes (`RING_LINGER` in
    /// `pipeline::live`).
    pub drains: Counter,
    pub bad_records: Counter,
    pub parse_errors: Counter,
}

/// The scorer's time per call, its keys and its memory.
#[derive(Clone, Debug, Default)]
pub struct ScorerMetrics {
    latency: LatencyHistogram,
    keys: Gauge,
    memory: Gauge,
}

impl ScorerMetrics {
    /// One `Scorer::observe` call took `d`.
    pub fn observe(&self, d: Duration) {
        self.latency.observe(d);
    }

    /// Sets the keys tracked and the memory estimate (walks every key: call it on the tick, not
    /// per response).
    pub fn set_state(&self, s: &Scorer) {
        let keys = i64::try_from(s.stats().keys_tracked).unwrap_or(i64::MAX);
        self.keys.set(keys);
        self.memory
            .set(i64::try_from(s.memory_estimate()).unwrap_or(i64::MAX));
    }
}

/// Upper bounds of [`LatencyHistogram`]'s buckets, in nanoseconds. One response is scored in a
/// few microseconds on a loaded machine (`cargo xtask bench`), so the buckets are fine from
/// 1 µs to 100 µs, where nearly every call falls, then coarse up to 10 ms to show the stalls
/// (a key with a full window, a sweep of watched keys) rather than resolve them.
const LATENCY_BOUNDS_NS: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// A histogram of durations with fixed buckets ([`LATENCY_BOUNDS_NS`]) in atomics.
///
/// Hand-written instead of prometheus-client's `Histogram`, which takes a mutex per
/// observation that a scrape also takes while it encodes: the pipeline thread would then wait
/// on the metrics thread. Here an observation is three relaxed atomic adds, and a scrape reads
/// them without a lock. The count is the sum of the buckets read, so `+Inf` always equals it; the
/// sum may be a few observations ahead of the buckets in one scrape (harmless).
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<LatencyBuckets>);

#[derive(Debug, Default)]
struct LatencyBuckets {
    /// Observations per bucket, not cumulative; the last slot is above every bound (`+Inf`).
    buckets: [AtomicU64; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let h = &self.0;
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(LATENCY_BOUNDS_NS.len());
        if let Some(b) = h.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        h.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let bounds = LATENCY_BOUNDS_NS
            .iter()
            .map(|ns| *ns as f64 / 1e9)
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.0.buckets)
            .map(|(b, n)| (b, n.load(Ordering::Relaxed)))
            .collect();
        // The +Inf bucket must equal the count: take the count from the buckets read.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One feed's metrics (see [`Metrics::feed`]).
#[derive(Clone, Debug)]
pub struct FeedMetrics {
    name: String,
    families: FeedFamilies,
}

impl FeedMetrics {
    fn labels(&self) -> FeedLabels {
        FeedLabels {
            feed: self.name.clone(),
        }
    }

    /// The feed holds `n` entries now.
    pub fn set_entries(&self, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.families.entries.get_or_create(&self.labels()).set(n);
    }

    /// A refresh ended at `at` (Unix seconds), successfully or not.
    pub fn refreshed(&self, ok: bool, at: std::time::SystemTime) {
        let f = &self.families;
        let result = if ok { "ok" } else { "error" };
        f.refreshes
            .get_or_create(&FeedResultLabels {
                feed: self.name.clone(),
                result,
            })
            .inc();
        self.last_refresh(ok, at);
    }

    /// The last refresh's result and time, without counting a refresh (one made before the
    /// agent started).
    pub fn last_refresh(&self, ok: bool, at: std::time::SystemTime) {
        let f = &self.families;
        f.last_success
            .get_or_create(&self.labels())
            .set(i64::from(ok));
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        f.last_refresh.get_or_create(&self.labels()).set(secs);
    }
}

/// The kernel counters, read from the pinned per-CPU map at each scrape.
struct KernelCounters(Mutex<PerCpuArray<MapData, u64>>);

impl fmt::Debug for KernelCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KernelCounters")
    }
}

impl Collector for KernelCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Ok(map) = self.0.lock() else {
            return Ok(());
        };
        for c in KernelCounter::ALL {
            // A counter that cannot be read is left out of this scrape (Prometheus then shows a
            // gap), rather than reported as 0, which would look like a counter reset.
            let Ok(per_cpu) = map.get(&(c as u32), 0) else {
                log::debug!("metrics: cannot read kernel counter {}", c.name());
                continue;
            };
            let total: u64 = per_cpu.iter().sum();
            let name = format!("kernel_{}", c.name());
            let help = kernel_help(c);
            let m = encoder.encode_descriptor(&name, &help, None, MetricType::Counter)?;
            ConstCounter::new(total).encode(m)?;
        }
        Ok(())
    }
}

/// The counter's doc comment as one line, and that it is summed over CPUs.
fn kernel_help(c: KernelCounter) -> String {
    let text: Vec<&str> = c.help().split_whitespace().collect();
    format!("{} (kernel, all CPUs)", text.join(" "))
}

/// Events each queued bus sink dropped, read at each scrape.
struct SinkDrops(Vec<(String, Arc<AtomicU64>)>);

impl fmt::Debug for SinkDrops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SinkDrops")
    }
}

impl Collector for SinkDrops {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut m = encoder.encode_descriptor(
            "events_dropped",
            "Events a bus sink dropped because its queue was full (the capture never waits)",
            None,
            MetricType::Counter,
        )?;
        for (sink, n) in &self.0 {
            let labels = [("sink", sink.as_str())];
            let fm = m.encode_family(&labels)?;
            ConstCounter::new(n.load(Ordering::Relaxed)).encode(fm)?;
        }
        Ok(())
    }
}

/// The fleet's counters (`fleet::fleet_stats`), read at each scrape. Labels are enums: the
/// reject reasons, the message kinds, the acknowledgement's result, the decision. Never an
/// agent id (operator-chosen, but a fleet may have thousands).
#[derive(Debug)]
struct FleetCounters(Arc<FleetStats>);

/// `(name, help, value)` of a fleet counter without labels.
type Plain = (&'static str, &'static str, u64);
/// `(name, help, label name, [(label value, value); 2])` of a fleet counter with one label.
type Labelled = (
    &'static str,
    &'static str,
    &'static str,
    [(&'static str, u64); 2],
);

impl Collector for FleetCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = &self.0;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let gauges: [Plain; 2] = [
            (
                "fleet_connected",
                "1 while the agent is connected to its NATS server, else 0.",
                u64::from(s.connected.load(Ordering::Relaxed)),
            ),
            (
                "fleet_publish_backlog",
                "Messages signed and waiting for the server's acknowledgement (grows while the \
                 broker is away, up to the outbox's bound).",
                g(&s.backlog),
            ),
        ];
        for (name, help, v) in gauges {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)?;
        }
        let counters: [Plain; 6] = [
            (
                "fleet_messages_published",
                "Messages (observation batches, verdicts) this agent signed and queued for the \
                 server.",
                g(&s.published),
            ),
            (
                "fleet_publish_retries",
                "Publishes that failed or were not acknowledged in time, and were retried.",
                g(&s.publish_retries),
            ),
            (
                "fleet_observations_dropped",
                "Observation records not sent: sampled out under load, or dropped from a full \
                 outbox.",
                g(&s.obs_dropped),
            ),
            (
                "fleet_observations_received",
                "Observation records of other agents that passed every check.",
                g(&s.received_obs),
            ),
            (
                "fleet_duplicates_dropped",
                "Redeliveries of another agent's message already used here (dropped).",
                g(&s.duplicates),
            ),
            (
                "fleet_verdicts",
                "Verdicts the fleet scorer made (each names the agents whose evidence made it).",
                g(&s.fleet_verdicts),
            ),
        ];
        for (name, help, v) in counters {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(m)?;
        }
        let received = g(&s.received);
        let verdicts = g(&s.received_verdicts);
        let families: [Labelled; 3] = [
            (
                "fleet_messages_acknowledged",
                "This agent's messages the server acknowledged, by result: stored, or a \
                 duplicate of one stored (a retry dropped by Nats-Msg-Id).",
                "result",
                [("stored", g(&s.sent)), ("duplicate", g(&s.sent_duplicates))],
            ),
            (
                "fleet_messages_received",
                "Other agents' messages that passed every check, by kind.",
                "kind",
                [
                    ("obs", received.saturating_sub(verdicts)),
                    ("verdict", verdicts),
                ],
            ),
            (
                "fleet_verdict_decisions",
                "Fleet verdicts that passed the block gate, by decision: handed to the enforcer \
                 (its guards and allowlist still apply), or kept to a report (fleet quorum, \
                 --fleet-action report).",
                "decision",
                [
                    ("enforced", g(&s.enforced)),
                    ("reported", g(&s.reports_only)),
                ],
            ),
        ];
        for (name, help, label, rows) in families {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (value, n) in rows {
                let labels = [(label, value)];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "fleet_messages_rejected",
            "Messages on the fleet's subjects refused before use, by reason (malformed, \
             subject_mismatch, unknown_agent, bad_signature, replay, stale).",
            None,
            MetricType::Counter,
        )?;
        for (why, n) in s.rejected() {
            let labels = [("reason", why.as_str())];
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The state database's failed writes of this process (`enforce::record::counts`, which every
/// writer counts into: the block path, the verdict journal, the scorer's saved memory), read at
/// every scrape: `kind` is `full` (the disk or the size cap) or `other` (busy, I/O).
#[derive(Debug)]
struct StateDbErrors;

impl Collector for StateDbErrors {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let c = crate::enforce::record::counts();
        let mut m = encoder.encode_descriptor(
            "db_errors",
            "Failed writes of the state database (enforcement goes on without them), by kind: \
             full (the disk or the size cap) or other (busy, I/O)",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in [("full", c.db_full), ("other", c.db_errors)] {
            let labels = [("kind", kind)];
            let fm = m.encode_family(&labels)?;
            ConstCounter::new(n).encode(fm)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
