//! `flux-agent run`.

use std::{
    io::{self, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use flux_agent::config::ConfigFile;
use flux_agent::{
    enforce::policy::EnforceOptions,
    kernel::loader::{self, AttachMode, BlockAction, LoadOptions, QueryMatch},
    ops::{metrics::Metrics, metrics_http::MetricsEndpoint},
    pipeline::{
        bus,
        live::{self, EventFormat, RunOptions, Sinks},
        sinks::{DEFAULT_EVENTS_KEEP, EventsFile, MAX_EVENTS_KEEP, parse_size},
    },
};
use log::info;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{
    PinArgs, StateArgs, config_command,
    run_reload::{FeedReload, Reloader},
    scoring::ScoringArgs,
};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Interface to attach to (repeatable). Default: the interface of the default route.
    #[arg(long = "iface", short = 'i', value_name = "IF")]
    pub ifaces: Vec<String>,

    /// Write every event (DNS responses, verdicts, blocks) as one JSON object a line to PATH
    /// (appending), or to stdout with `-`. Without it, one readable line per response goes to
    /// stdout. Verdicts and blocks are logged either way. A reader that falls behind loses
    /// events (counted), never the capture (docs/events.md).
    /// The file is opened without following a symbolic link and created mode 0600.
    #[arg(long, value_name = "PATH|-")]
    pub events: Option<PathBuf>,

    /// Bound of the `--events` file (e.g. 100MiB, 512K; 0: none). Past it the file is renamed
    /// to PATH.1 (older ones shifted to PATH.2 .. PATH.N, --events-keep) and a new one
    /// started: at most N+1 times SIZE on disk, the newest events kept.
    #[arg(long, value_name = "SIZE", default_value = "100MiB", value_parser = parse_size)]
    pub events_max_size: u64,

    /// Rotated events files kept (PATH.1 .. PATH.N; 0: none, a full file is started again).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_EVENTS_KEEP,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_EVENTS_KEEP)))]
    pub events_keep: u32,

    /// XDP attach mode: native (driver), skb (generic), or auto (native, else skb with a warning).
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = choices::<AttachMode>(
        &[("native", &["drv"]), ("skb", &["generic"]), ("auto", &[])]))]
    pub xdp_mode: AttachMode,

    /// Replace an XDP program another tool attached to the interface.
    #[arg(long)]
    pub force: bool,

    /// Source port counted as DNS (repeatable, at most 8). Default: 53.
    #[arg(long = "dns-port", value_name = "PORT")]
    pub dns_ports: Vec<u16>,

    /// Report verdicts and would-be blocks, and enforce nothing: the kernel matches the
    /// blocklists but passes every packet, and the agent writes no blocks.
    #[arg(long)]
    pub monitor: bool,

    /// Score only: write no automatic blocks (manual ones in the maps are still enforced).
    #[arg(long, conflicts_with = "monitor")]
    pub no_auto_block: bool,

    /// How long an automatic block lasts; renewed while the name keeps fluxing.
    #[arg(long, value_name = "DUR", default_value = "24h", value_parser = humantime::parse_duration)]
    pub block_ttl: std::time::Duration,

    /// New automatic blocks allowed per minute; past it they wait and an alert is raised.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub max_blocks_per_minute: u32,

    /// A resolver never to block (repeatable), beside /etc/resolv.conf and the servers seen
    /// answering.
    #[arg(long = "resolver", value_name = "IP")]
    pub resolvers: Vec<std::net::IpAddr>,

    /// Also drop packets leaving this host for a blocked address (a TC egress program, over
    /// tcx; Linux 6.6 or newer). Without it, a run removes the egress program an earlier run
    /// left attached.
    #[arg(long)]
    pub egress: bool,

    /// Drop DNS replies that answer no query this host sent (by default they are only marked,
    /// counted and never scored). Replies are matched to the queries a TC egress program saw
    /// leave: client and server address and port, transport, transaction id, question name.
    #[arg(long, conflicts_with = "accept_unsolicited")]
    pub drop_unsolicited: bool,

    /// Trust every DNS reply, asked for or not (no TC egress program records queries). Only for
    /// a host that cannot see the queries leave, such as a sensor on a mirror port: anyone who
    /// can send this host a datagram from port 53 can then make it block.
    #[arg(long)]
    pub accept_unsolicited: bool,

    /// What a DNS response for a blocked domain gets: nxdomain (answered in the kernel) or drop.
    #[arg(long, value_name = "ACTION", default_value = "nxdomain",
          value_parser = choices::<BlockAction>(&[("nxdomain", &[]), ("drop", &[])]))]
    pub block_action: BlockAction,

    /// Also take DNS responses from a resolver's dnstap: listen on this unix socket (Frame
    /// Streams, bidirectional; the resolver connects, e.g. unbound's `dnstap-socket-path`).
    /// Client, resolver and forwarder responses are scored like captured ones; the resolver
    /// logged them, so they are never unsolicited. The socket is created mode 0660.
    #[arg(long, value_name = "PATH")]
    pub dnstap_socket: Option<PathBuf>,

    /// Attach no XDP program: load the programs and pin their maps (where blocks are written,
    /// and `blocklist list` reads) but take DNS responses from --dnstap-socket only. For a
    /// resolver host whose answers reach it encrypted (DoH/DoT) or through another tool.
    #[arg(long, requires = "dnstap_socket", conflicts_with_all = ["ifaces", "egress"])]
    pub no_xdp: bool,

    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9580). Off by default:
    /// the counters, verdicts and blocks it shows are the host's DNS activity, so bind it to
    /// loopback or a management network.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Capacity of each exact-address blocklist, IPv4 and IPv6 (default 1,048,576). Set when
    /// the maps are created: after `unload`, or on a host's first start.
    #[arg(long, value_name = "N", value_parser = parse_capacity)]
    pub max_blocked_ips: Option<u32>,

    /// Capacity of each blocked-CIDR map, IPv4 and IPv6 (default 65,536).
    #[arg(long, value_name = "N", value_parser = parse_capacity)]
    pub max_blocked_cidrs: Option<u32>,

    /// Capacity of the blocked-domain map (default 262,144): raise it for a feed of more names.
    #[arg(long, value_name = "N", value_parser = parse_capacity)]
    pub max_blocked_domains: Option<u32>,

    /// Join a fleet (docs/fleet.md): share signed observations, verdicts and blocks with other
    /// agents over this NATS JetStream server (e.g. nats://10.0.0.5:4222), and judge names on
    /// what all of them saw. The agent starts and protects without the server and joins when
    /// it answers.
    #[arg(long, value_name = "URL")]
    pub fleet_url: Option<String>,

    /// A file holding this agent's NATS nkey seed (`SU...`): its user on the server, which may
    /// publish only on this agent's own subjects.
    #[arg(long, value_name = "PATH")]
    pub fleet_creds: Option<PathBuf>,

    /// This agent's ed25519 signing key (`flux-agent fleet keygen`): every message it sends is
    /// signed with it.
    #[arg(long, value_name = "PATH")]
    pub fleet_key: Option<PathBuf>,

    /// The fleet trust list: `AGENT-ID HEX-PUBLIC-KEY` lines. Messages signed by any other key
    /// are rejected (counted); this agent's id is the one its own key is listed under.
    #[arg(long, value_name = "PATH")]
    pub fleet_trust: Option<PathBuf>,

    /// What fleet verdicts do here: block (through the same guards, allowlist and block gate as
    /// local ones, and only with evidence from at least two other agents) or report.
    #[arg(long, value_name = "ACTION", default_value = "block", value_enum)]
    pub fleet_action: flux_agent::fleet::FleetAction,

    /// The configuration file: every option above as a TOML key (`flux-agent config show`);
    /// a flag given here wins. Default: $FLUX_AGENT_CONFIG, else
    /// /etc/flux-agent/flux-agent.toml if it exists. SIGHUP reads it again.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub pin: PinArgs,

    #[command(flatten)]
    pub scoring: ScoringArgs,

    #[command(flatten)]
    pub state: StateArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    // Before anything slow: a SIGHUP during the start is then a reload once running, never
    // the end of the agent (its default action).
    let signals = {
        let _in_runtime = rt.enter();
        Signals::register()?
    };
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let file = config_command::config_path(args.config.as_deref())
        .map(|p| ConfigFile::load(&p))
        .transpose()?;
    let merged = config_command::merge(&argv, file.as_ref())?;
    log_config(file.as_ref(), &merged);
    let args = &merged.args;

    // Refuse a missing privilege or an unknown interface first: before the events file is
    // opened (an unprivileged user would otherwise be told the packaged log folder is not
    // writable, not what is missing) and before the IP databases spend a noticeable fraction
    // of a second loading (and logging) for a run that cannot start.
    loader::preflight()?;
    if !args.no_xdp {
        live::resolve_interfaces(&args.ifaces)?;
    }
    let stdout = || -> Box<dyn Write + Send> { Box::new(BufWriter::new(io::stdout())) };
    let mut events_control = None;
    let events: (Box<dyn Write + Send>, EventFormat) = match &args.events {
        None => (stdout(), EventFormat::Human),
        Some(p) if p.as_os_str() == "-" => (stdout(), EventFormat::Json),
        Some(p) => {
            let f = EventsFile::open(p, args.events_max_size, args.events_keep)?;
            events_control = Some(f.control());
            (Box::new(f), EventFormat::Json)
        }
    };
    // Bound now, so a busy port fails the start before anything is attached.
    let registry = args.metrics.map(|_| Metrics::new());
    let metrics = args
        .metrics
        .zip(registry.clone())
        .map(|(addr, registry)| {
            MetricsEndpoint::bind(addr, registry)
                .with_context(|| format!("--metrics {addr}: cannot listen"))
        })
        .transpose()?;
    // Checked here, not by clap's `requires`: the configuration file's keys are checked one
    // by one against the same parser, and a fleet needs three of them together.
    fleet_options(args)?;
    let scoring = args.scoring.setup()?;
    // URL feeds are refreshed on their interval by a thread of their own (never the capture
    // path); it writes the database and the maps as `feed update` does.
    // It also builds the feed lookup the pipeline matches responses against.
    let stop_refresh = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeds = flux_agent::intel::feed_match::SharedIndex::default();
    let mut refresher = None;
    if let Some(state) = args.state.path() {
        refresher = Some(
            flux_agent::intel::feed_sync::spawn_refresher(
                flux_agent::intel::feed_sync::Refresher {
                    state,
                    pin_dir: args.pin.pin_dir.clone(),
                    resolvers: args.resolvers.clone(),
                    index: feeds.clone(),
                    metrics: registry,
                },
                stop_refresh.clone(),
            )
            .context("start the feed refresh thread")?,
        );
    }
    let (allowlist_tx, allowlists) = tokio::sync::mpsc::unbounded_channel();
    let reloader = Reloader::new(
        argv,
        &merged,
        &scoring.allowlist,
        allowlist_tx,
        events_control,
        args.state.path().map(|state| FeedReload {
            state,
            pin_dir: args.pin.pin_dir.clone(),
            resolvers: args.resolvers.clone(),
            index: feeds.clone(),
        }),
    );
    let opts = run_options(merged.args, scoring, feeds);

    let summary = rt.block_on(async move {
        let sinks = Sinks {
            events: Some(events),
            log: true,
            queue: bus::DEFAULT_QUEUE,
            metrics,
            allowlists: Some(allowlists),
        };
        live::run(opts, sinks, signals.serve(reloader)).await
    })?;
    stop_refresh.store(true, std::sync::atomic::Ordering::Relaxed);
    // The refresher closes its database connection as it ends, the last of the agent's: SQLite
    // then checkpoints the WAL into the file and removes it. A refresh still fetching a slow
    // feed URL does not hold up the exit (the WAL is then folded in at the next open).
    if let Some(t) = refresher {
        t.thread().unpark();
        let until = std::time::Instant::now() + RELOAD_EXIT_WAIT;
        while !t.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::debug!("the feed refresher is still busy; exiting without it");
        }
    }
    // A reload still syncing a slow feed URL does not hold up the exit.
    rt.shutdown_timeout(RELOAD_EXIT_WAIT);
    log::debug!("{summary:?}");
    Ok(ExitCode::SUCCESS)
}

/// How long the exit waits for a reload still running (a feed URL being fetched): SIGTERM is
/// honoured within a second (issue 14), and the detach before it takes a few milliseconds.
const RELOAD_EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Says which configuration file is in use and which of its keys the command line overrode.
fn log_config(file: Option<&ConfigFile>, merged: &config_command::Merged) {
    let Some(f) = file else { return };
    info!(
        "configuration {}: {} keys set",
        f.origin,
        f.config.entries().len()
    );
    for (key, why) in &merged.overridden {
        info!("configuration key {key} not used: {why}");
    }
}

/// The options of the run loop.
fn run_options(
    args: RunArgs,
    scoring: flux_detect::score::ScorerSetup,
    feeds: flux_agent::intel::feed_match::SharedIndex,
) -> RunOptions {
    // Always an enforcer: with --no-auto-block it writes no block of its own but still keeps
    // the maps for the blocks operators and feeds write (see `EnforceOptions::auto_block`).
    let enforce = Some(EnforceOptions {
        monitor: args.monitor,
        auto_block: !args.no_auto_block,
        ttl: args.block_ttl,
        max_per_minute: args.max_blocks_per_minute,
        resolvers: args.resolvers.clone(),
    });
    // Checked before the start (`fleet_options` in `run`).
    let fleet = fleet_options(&args).ok().flatten();
    RunOptions {
        fleet,
        scoring: Some(scoring),
        enforce,
        state: args.state.path(),
        feeds: args.state.path().map(|_| feeds),
        ifaces: args.ifaces,
        dnstap_socket: args.dnstap_socket,
        attach: !args.no_xdp,
        mode: args.xdp_mode,
        force: args.force,
        load: LoadOptions {
            pin_dir: args.pin.pin_dir,
            dns_ports: if args.dns_ports.is_empty() {
                vec![53]
            } else {
                args.dns_ports
            },
            ring_buf_bytes: None,
            map_sizes: loader::MapSizes {
                blocked_ips: args.max_blocked_ips,
                blocked_cidrs: args.max_blocked_cidrs,
                blocked_domains: args.max_blocked_domains,
            },
            block_action: args.block_action,
            monitor: args.monitor,
            egress: args.egress,
            queries: if args.accept_unsolicited {
                QueryMatch::Off
            } else if args.drop_unsolicited {
                QueryMatch::Drop
            } else {
                QueryMatch::Mark
            },
        },
    }
}

/// The fleet options: `--fleet-url` needs `--fleet-key` and `--fleet-trust`, and those (and
/// `--fleet-creds`) mean nothing without it.
fn fleet_options(args: &RunArgs) -> anyhow::Result<Option<flux_agent::fleet::FleetOptions>> {
    match (&args.fleet_url, &args.fleet_key, &args.fleet_trust) {
        (Some(url), Some(key), Some(trust)) => Ok(Some(flux_agent::fleet::FleetOptions {
            url: url.clone(),
            creds: args.fleet_creds.clone(),
            key: key.clone(),
            trust: trust.clone(),
            action: args.fleet_action,
        })),
        (Some(_), _, _) => anyhow::bail!("--fleet-url needs --fleet-key and --fleet-trust"),
        (None, None, None) if args.fleet_creds.is_none() => Ok(None),
        (None, _, _) => anyhow::bail!(
            "--fleet-creds, --fleet-key and --fleet-trust need --fleet-url (docs/fleet.md)"
        ),
    }
}

/// The signals `run` handles: SIGINT and SIGTERM detach and stop (registered when the run loop
/// first waits, as before SIGHUP was handled: until then they end the process at once; the
/// ready line, "Ctrl-C to stop", is logged after that first poll); SIGHUP reloads, registered
/// before anything slow.
struct Signals {
    hup: Signal,
}

impl Signals {
    /// Must be called inside the runtime.
    fn register() -> anyhow::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// Resolves on SIGINT or SIGTERM; on SIGHUP, runs a reload on a blocking thread (the
    /// capture goes on meanwhile, and a SIGTERM is still honoured at once) and logs its line.
    /// A SIGHUP during a reload is answered when that one ends.
    async fn serve(mut self, reloader: Reloader) {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            // Without signal handlers we would never detach cleanly; fail loudly instead.
            std::future::pending::<()>().await;
            return;
        };
        let mut idle = Some(reloader);
        let mut running: Option<tokio::task::JoinHandle<(Reloader, String)>> = None;
        let mut again = false;
        loop {
            tokio::select! {
                _ = int.recv() => { info!("SIGINT: detaching"); return; }
                _ = term.recv() => { info!("SIGTERM: detaching"); return; }
                _ = self.hup.recv() => {
                    match idle.take() {
                        Some(mut r) => running = Some(tokio::task::spawn_blocking(move || {
                            let line = r.reload();
                            (r, line)
                        })),
                        None => again = true,
                    }
                }
                done = finished(&mut running) => {
                    running = None;
                    match done {
                        Ok((r, line)) => { info!("{line}"); idle = Some(r); }
                        Err(e) => log::error!("reload failed: {e}; SIGHUP is ignored from now on"),
                    }
                    if std::mem::take(&mut again) && let Some(mut r) = idle.take() {
                        running = Some(tokio::task::spawn_blocking(move || {
                            let line = r.reload();
                            (r, line)
                        }));
                    }
                }
            }
        }
    }
}

/// The end of the running reload, or never when none runs.
async fn finished<T>(
    running: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match running {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

/// A choice among `names` (each with its hidden aliases), parsed by `T`'s `FromStr`: clap then
/// knows the allowed values, for `--help`, its errors and the configuration file's.
fn choices<T>(
    names: &'static [(&'static str, &'static [&'static str])],
) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    let values = names
        .iter()
        .map(|(name, aliases)| PossibleValue::new(*name).aliases(aliases.iter().copied()));
    PossibleValuesParser::new(values).try_map(|s| s.parse::<T>())
}

/// A map capacity: 1 to `flux_common::MAX_MAP_CAPACITY`.
fn parse_capacity(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .replace('_', "")
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of entries"))?;
    if n == 0 || n > flux_common::MAX_MAP_CAPACITY {
        return Err(format!(
            "{n} entries: a map holds 1 to {} entries",
            flux_common::MAX_MAP_CAPACITY
        ));
    }
    Ok(n)
}
