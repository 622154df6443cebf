//! Drop cost on a veth pair (`cargo xtask bench`): flux_xdp's blocked-address drop against
//! nftables sets holding the same blocklist, with the same trafgen flood, in the same run.
//!
//! 60-byte UDP frames flood the veth pair toward a0 in the `client` namespace, from sources that
//! are all in a 100,000-address blocklist, with one of three generators (`--generator`):
//! - **`xdp`** (the default): the object's `flux_xdp_tx` program run by BPF_PROG_TEST_RUN in
//!   live-frames mode on b0 (the kernel's own in-kernel generator, what xdp-trafficgen does;
//!   Debian's xdp-trafficgen 1.3.1 fails to load on this kernel). Every frame leaves b0 through
//!   veth's `ndo_xdp_xmit` as an `xdp_frame`, so on a0 an XDP program runs on it before any
//!   socket buffer exists, as it does on a NIC with a native XDP driver, while the stack (and
//!   nftables) gets a socket buffer built around the same page, as from a NIC's buffer. a0 has
//!   GRO on, which is what gives a veth without an XDP program the NAPI that such frames need.
//!   One source address (10.200.0.1): the frame is the same page every time.
//! - **`bounce`** (where the kernel refuses live frames): trafgen's TX ring in the `client`
//!   namespace, out of a0, from random sources in 10.200.0.0/16; `flux_xdp_bounce` on b0
//!   (native XDP) sends every frame straight back with `bpf_redirect`, through veth's
//!   `ndo_xdp_xmit`, so it reaches a0 as an `xdp_frame`, as with `xdp`. a0's NAPI runs in its
//!   own kernel thread (`threaded`), pinned to CPU 1 at real-time priority, with interrupt
//!   coalescing ([`BOUNCE_COALESCE`]); trafgen's worker, and b0's receive and relay in softirq
//!   in it, stay on CPU 0. The thread's run time is then the receiving side's CPU alone: the
//!   filter and whatever the frame costs before it, as a NIC's NAPI poll, and none of the
//!   generator's.
//! - **`trafgen`**: trafgen's TX ring out of b0, from random sources in 10.200.0.0/16. The
//!   frames are socket buffers the sending stack made, and veth copies each into a page with
//!   XDP headroom before any XDP program runs (`veth_convert_skb_to_xdp_buff`): that copy is a
//!   veth artefact no NIC has, and it costs native XDP more than the whole nftables drop (see
//!   docs/benchmarks.md).
//!
//! On the `client` side one filter drops them per case:
//! - flux_xdp in native XDP on the veth (veth supports it), and in generic XDP (`xdpgeneric`,
//!   what a NIC without a native XDP driver gets);
//! - an nftables hash set of the same addresses at `netdev` ingress of the veth (the earliest
//!   nftables hook), and in `ip` prerouting at raw priority (-300), where a CrowdSec bouncer
//!   puts it;
//! - the no-op XDP program in front of the netdev-ingress drop, which prices what veth charges
//!   for running any XDP program on frames the stack sent;
//! - the floor: `flux_xdp_floor` in native XDP (the front filter's bit of each address and
//!   nothing else) dropping every frame, counted by veth, which prices what the link's receive
//!   path costs any XDP drop.
//!
//! Cases alternate within each round so that drift on a noisy machine hits all alike.
//!
//! Three figures per case (a fourth with `bounce`, below): the drop rate; the whole machine's CPU time per dropped packet from
//! `/proc/stat` (user + nice + system + irq + softirq, over every CPU) across the measured
//! interval, with the background rate sampled for one second before the case removed ("net");
//! and the flood's own CPU time per dropped packet: trafgen's user + system time (its child
//! rusage) plus every `ksoftirqd`'s. On a veth pair the sender sets the rate, so CPU per packet
//! is the comparison that carries to a gateway. The veth receive path, XDP or nftables
//! included, runs in softirq in the sending task's context (or in ksoftirqd when it overflows),
//! and this kernel has no separate IRQ time accounting, so the flood's figure holds the whole
//! send-and-drop path while leaving out whatever else the machine runs: on a machine loaded by
//! other work it is the one to compare; on a quiet one the two agree.
//!
//! With `--generator xdp` the flood's CPU is the generating thread's own CPU time (the veth
//! receive, XDP or nftables, runs in softirq on its way out of the kernel, in that thread) plus
//! every `ksoftirqd`'s. With `--generator bounce` it is trafgen's, every `ksoftirqd`'s and a0's
//! NAPI thread's, and a fourth figure is the NAPI thread's alone (the receiving side).
//!
//! Without `--generator`, the run first asks the kernel for one live frame
//! ([`live_frames_refused`]). A kernel that refuses the mode (6.18.44-fc-v1300 answers EPERM
//! for every live-frames run, on any interface, in any namespace) gets the bounce generator,
//! with one line saying so and `generator_fallback` in the JSON; `--generator xdp` on such a
//! kernel ends the run with the kernel's answer.
//!
//! Every flood is accounted for: each frame sent must be dropped by the filter under test, or
//! counted by veth as dropped on its way to a0 before any filter saw it (b0's `tx_dropped`:
//! a0's receive ring or queue full when the drops fall behind the sender, which a loaded
//! machine does now and then; with `bounce`, a0's `tx_dropped` and `rx_dropped`, within
//! [`BOUNCE_LOSS_TOLERANCE`]). A flood that loses more than [`LOSS_TOLERANCE`] that way is retried, as is a transient
//! trafgen failure (`Flushing TX_RING failed: Resource temporarily unavailable`); frames no
//! counter explains, or a filter dropping what it was not under test for, end the run. The run
//! ends with the figures or one line saying why not. Output: a table, or one JSON document with
//! `--json` (an error too).

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use flux_agent::{
    enforce::maps::{Maps, Spec, Target},
    kernel::loader::{LoadOptions, Loaded, load},
};
use flux_common::{Counter, PROG_XDP, PROG_XDP_BOUNCE, PROG_XDP_FLOOR, PROG_XDP_NOOP, PROG_XDP_TX};
use flux_tests::{CLIENT_V4, Link, Netns, PinDir, TempDir};

/// Entries in every blocklist.
const BLOCKED: u32 = 100_000;
/// The first blocked address; trafgen's sources are the first 65,536 of them.
const FIRST: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);
/// Frames per case, and rounds: `--packets N`, `--rounds N` change them (a loaded machine sends
/// slowly; fewer frames keep a run short, while /proc/stat's 10 ms ticks stay far below the
/// interval).
const PACKETS: u64 = 2_000_000;
const ROUNDS: usize = 3;

/// The run's frames per case and rounds, from the command line (set once in `main`).
static RUN: std::sync::OnceLock<(u64, usize)> = std::sync::OnceLock::new();

fn packets() -> u64 {
    RUN.get().map_or(PACKETS, |r| r.0)
}

fn rounds() -> usize {
    RUN.get().map_or(ROUNDS, |r| r.1)
}

/// What sends the flood (`--generator xdp|bounce|trafgen`, see the module comment).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Generator {
    /// `flux_xdp_tx` in BPF_PROG_TEST_RUN live-frames mode: frames reach a0 as `xdp_frame`s.
    XdpLive,
    /// trafgen's TX ring: frames reach a0 as socket buffers, copied by veth before XDP.
    Trafgen,
    /// trafgen on a0, every frame sent back by `flux_xdp_bounce` on b0: frames reach a0 as
    /// `xdp_frame`s, received by a0's own NAPI thread (see [`BOUNCE_NAPI_CPU`]).
    Bounce,
}

impl Generator {
    fn parse(v: &str) -> anyhow::Result<Self> {
        match v {
            "xdp" => Ok(Generator::XdpLive),
            "trafgen" => Ok(Generator::Trafgen),
            "bounce" => Ok(Generator::Bounce),
            other => bail!("--generator: `{other}` is not `xdp`, `bounce` or `trafgen`"),
        }
    }

    fn key(self) -> &'static str {
        match self {
            Generator::XdpLive => "xdp",
            Generator::Trafgen => "trafgen",
            Generator::Bounce => "bounce",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Generator::XdpLive => {
                "in-kernel XDP generator (BPF_PROG_TEST_RUN live frames, xdp_frames into veth)"
            }
            Generator::Trafgen => "trafgen TX ring (socket buffers, copied by veth before XDP)",
            Generator::Bounce => {
                "trafgen on a0, sent back by flux_xdp_bounce on b0 (xdp_frames into a0's NAPI \
                 thread)"
            }
        }
    }
}

/// The run's generator (set once, in `main` from `--generator`, else in `run`).
static GENERATOR: std::sync::OnceLock<Generator> = std::sync::OnceLock::new();

/// a0's NAPI thread with the bounce generator ([`threaded_napi`]).
static BOUNCE_NAPI: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// Why the run fell back from the default XDP generator to the bounce generator, if it did.
static FALLBACK: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn generator() -> Generator {
    GENERATOR.get().copied().unwrap_or(Generator::XdpLive)
}

/// The one source address of the XDP generator's frames (in the blocklist).
const XDP_GEN_SOURCE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// Frames per BPF_PROG_TEST_RUN batch in live-frames mode: 0 is the kernel's default (64, a
/// NAPI budget), which keeps every batch within veth's 256-frame receive ring.
const XDP_GEN_BATCH: u32 = 0;

/// The CPU a0's NAPI thread is pinned to with the bounce generator. trafgen pins its one worker
/// to CPU 0 itself (whatever `taskset` says), and b0's receive and relay run in softirq in that
/// worker, so the generator's whole work stays on CPU 0 and the filter's on CPU 1: the thread's
/// CPU time is the receiving side's, as a NIC's NAPI poll would be.
const BOUNCE_NAPI_CPU: usize = 1;
/// How long a0's NAPI thread may go on polling after the last frame: `napi_defer_hard_irqs`
/// polls of `gro_flush_timeout` each ([`BOUNCE_COALESCE`]), and some to spare.
const BOUNCE_TAIL: Duration = Duration::from_millis(150);
/// The real-time priority of a0's NAPI thread with the bounce generator (SCHED_FIFO, the default
/// priority `chrt` and the kernel's own threaded NAPI examples use). A NIC's NAPI poll runs in
/// softirq, ahead of every task; at normal priority the thread waited behind whatever else ran
/// on its CPU, and more of a burst overflowed a0's ring.
const NAPI_PRIORITY: i32 = 50;
/// a0's interrupt coalescing with the bounce generator, as sysfs takes them: NAPI is polled
/// again 100 µs after a poll (`gro_flush_timeout`, ns) instead of waiting to be woken, up to
/// 1,000 times in a row (`napi_defer_hard_irqs`), while frames keep coming. Without it the
/// thread was woken for nearly every frame (trafgen sends one about every 3 µs), and the wakeup
/// cost more than either filter: an XDP_DROP of two instructions 950-1,038 ns a frame against
/// 1,354-1,503 ns for the nftables ingress drop; with it 657-868 against 1,317-1,459 ns
/// (2026-12-07, 1,000,000 frames a run). NICs coalesce the same way (`ethtool -C`); 100 µs is
/// about 35 frames at trafgen's rate here, well inside veth's 256-frame ring.
const BOUNCE_COALESCE: [(&str, &str); 2] = [
    ("gro_flush_timeout", "100000"),
    ("napi_defer_hard_irqs", "1000"),
];

/// The value after `flag`, if given.
fn arg<T: std::str::FromStr>(args: &[String], flag: &str) -> anyhow::Result<Option<T>> {
    flux_tests::flag_value(args, flag)
        .map(|v| {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{flag}: not a number: {v}"))
        })
        .transpose()
}
/// Floods per case before giving up: a loaded machine makes trafgen's TX ring flush fail, or
/// veth's receive ring overflow, now and then.
const FLOOD_TRIES: u32 = 4;
/// The share of a flood's frames that may be lost on a0's receive path, or go uncounted, and
/// the flood still count: the figures are per frame dropped, and a sliver of frames the filter
/// never saw shifts them by less than the rounds' spread. Past it the flood did not measure
/// the filter at the rate asked and is retried (lost) or ends the run (uncounted).
const LOSS_TOLERANCE: (u64, u64) = (1, 100);
/// [`LOSS_TOLERANCE`] for frames lost on the link with the bounce generator. trafgen sends in
/// bursts of its TX ring, about 1.5 µs a frame, and a0's thread takes up to 2 µs a frame on the
/// nftables prerouting drop of a 100,000-address set, so a long burst overflows a0's 256-frame
/// ring: 1-10% of a flood in trial runs (2026-12-07), the other cases about 1%. A frame lost
/// there never reaches a0's thread, so its figures (per frame dropped) are the same with or
/// without it; the whole machine's include the sender's work on it, as much more as the share
/// lost (up to 13.7% of a flood in a slow hour of the whole run of 19:34 UTC).
/// Pacing trafgen (`--gap`) sent one frame in 30 µs and woke a0's thread for each.
const BOUNCE_LOSS_TOLERANCE: (u64, u64) = (15, 100);
/// How long the machine's background CPU use is sampled before each case.
const BACKGROUND: Duration = Duration::from_secs(1);
/// `USER_HZ`: the unit of `/proc/stat` (100 on every Linux architecture we build for).
const NS_PER_TICK: f64 = 1e9 / 100.0;

/// The cases, in the order each round runs them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    XdpNative,
    XdpGeneric,
    NftIngress,
    NftPrerouting,
    NoopThenNft,
    /// The least an XDP address filter can do here: `flux_xdp_floor` (the front filter's bit
    /// of each address, nothing else) dropping what it cannot clear, counted by veth. What the
    /// receive path costs any XDP drop on this link, so that flux_xdp's own share shows.
    FloorNative,
}

impl Case {
    /// In the order each round runs them; the nftables cases' places (2 and 3) are what the
    /// ratios divide by.
    const ALL: [Case; 6] = [
        Case::XdpNative,
        Case::XdpGeneric,
        Case::NftIngress,
        Case::NftPrerouting,
        Case::NoopThenNft,
        Case::FloorNative,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::XdpNative => "flux_xdp, native XDP",
            Case::XdpGeneric => "flux_xdp, generic XDP",
            Case::NftIngress => "nftables set, netdev ingress",
            Case::NftPrerouting => "nftables set, prerouting raw (-300)",
            Case::NoopThenNft => "no-op XDP (native) + nftables ingress",
            Case::FloorNative => "floor: front filter only, native XDP",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Case::XdpNative => "flux_xdp_native",
            Case::XdpGeneric => "flux_xdp_generic",
            Case::NftIngress => "nft_netdev_ingress",
            Case::NftPrerouting => "nft_prerouting_raw",
            Case::NoopThenNft => "noop_xdp_then_nft_ingress",
            Case::FloorNative => "floor_xdp_native",
        }
    }

    /// The XDP program attached for the case, and how.
    fn xdp(self) -> Option<(&'static str, XdpMode)> {
        match self {
            Case::XdpNative => Some((PROG_XDP, XdpMode::Driver)),
            Case::XdpGeneric => Some((PROG_XDP, XdpMode::Skb)),
            Case::NoopThenNft => Some((PROG_XDP_NOOP, XdpMode::Driver)),
            Case::FloorNative => Some((PROG_XDP_FLOOR, XdpMode::Driver)),
            Case::NftIngress | Case::NftPrerouting => None,
        }
    }

    /// The nftables chain that drops for the case.
    fn nft(self) -> Option<Nft> {
        match self {
            Case::NftIngress | Case::NoopThenNft => Some(Nft::Ingress),
            Case::NftPrerouting => Some(Nft::Prerouting),
            Case::XdpNative | Case::XdpGeneric | Case::FloorNative => None,
        }
    }
}

/// One measured case of one round.
#[derive(Clone, Copy, Default)]
struct Sample {
    pps: f64,
    /// Whole-machine busy CPU ns per dropped packet (with `bounce`: the receiving side's per
    /// frame dropped, the rest, the sender's, per frame sent; see [`sample`]).
    cpu_ns: f64,
    /// The same, less the background rate sampled before the case.
    net_cpu_ns: f64,
    /// trafgen's and the ksoftirqd threads' CPU ns per dropped packet (with `bounce`, a0's NAPI
    /// thread's too, charged as in `cpu_ns`).
    flood_cpu_ns: f64,
    /// a0's NAPI thread's CPU ns per dropped packet: the receiving side alone (the bounce
    /// generator; 0 with the others, where the receive runs in the sender's softirq).
    rx_cpu_ns: f64,
    /// Frames veth dropped on their way to a0, before any filter (within the flood's tolerance:
    /// [`LOSS_TOLERANCE`], or [`BOUNCE_LOSS_TOLERANCE`]).
    link_lost: u64,
    /// Floods of this case retried before this one counted.
    retried: u32,
}

fn main() -> ExitCode {
    let args = flux_tests::bench_args(
        "veth-bench",
        "usage: veth-bench [--packets N] [--rounds N] [--generator xdp|bounce|trafgen] [--json]",
        &["--packets", "--rounds", "--generator"],
        &["--json"],
        0,
    );
    let json = args.iter().any(|a| a == "--json");
    // A panic in a helper (namespace setup) ends the run with one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("veth-bench: {info}")));
    let result = (|| {
        let packets = arg(&args, "--packets")?.unwrap_or(PACKETS);
        let rounds = arg(&args, "--rounds")?.unwrap_or(ROUNDS).max(1);
        let _ = RUN.set((packets, rounds));
        if let Some(v) = flux_tests::flag_value(&args, "--generator") {
            let _ = GENERATOR.set(Generator::parse(v)?);
        }
        run()
    })();
    match result {
        Ok(samples) if json => {
            println!("{:#}", to_json(&samples));
            ExitCode::SUCCESS
        }
        Ok(samples) => {
            print_table(&samples);
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            } else {
                eprintln!("veth-bench: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Every case's samples, by [`Case::ALL`] order, one per round.
type Samples = [Vec<Sample>; Case::ALL.len()];

fn run() -> anyhow::Result<Samples> {
    ensure!(
        flux_tests::privileged(),
        "the veth benchmark needs root (BPF, namespaces)"
    );
    if GENERATOR.get().is_none() {
        let chosen = match live_frames_refused()? {
            None => Generator::XdpLive,
            Some(why) => {
                eprintln!(
                    "veth-bench: this kernel refuses BPF_PROG_TEST_RUN live frames ({why}); \
                     the flood comes from trafgen, sent back to a0 by flux_xdp_bounce on b0"
                );
                let _ = FALLBACK.set(why);
                Generator::Bounce
            }
        };
        let _ = GENERATOR.set(chosen);
    }
    let tools: &[&str] = match generator() {
        Generator::XdpLive => &["nft", "ethtool"],
        Generator::Trafgen | Generator::Bounce => &["trafgen", "nft", "ethtool"],
    };
    for &tool in tools {
        ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()?
                .status
                .success(),
            "{tool} is missing; `cargo xtask setup` installs it"
        );
    }
    let link = Link::new();
    let dir = TempDir::new();
    let conf = dir.0.join("udp.trafgen");
    std::fs::write(&conf, trafgen_config(&link))?;
    nft_sets(&link.client, &dir)?;
    if generator() != Generator::Trafgen {
        // GRO gives a0 the NAPI that frames sent with ndo_xdp_xmit need when no XDP program is
        // attached (the nftables cases); without it veth refuses them.
        let out = link.client.exec(&["ethtool", "-K", "a0", "gro", "on"]);
        ensure!(
            out.status.success(),
            "ethtool -K a0 gro on: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if generator() == Generator::XdpLive {
        std::fs::write(dir.0.join("frame.bin"), xdp_gen_frame(&link))?;
    }
    if generator() == Generator::Bounce {
        let _ = BOUNCE_NAPI.set(threaded_napi(&link.client)?);
    }

    let pin = PinDir::new();
    let pin_dir = pin.0.clone();
    let client = link.client.path();
    let server = link.server.path();
    // XDP is attached from a thread inside the client namespace (the ifindex is looked up there).
    let samples = std::thread::scope(|_| {
        link.client
            .run_in(move || measure_all(&pin_dir, &client, &server, &conf))
    })?;
    Ok(samples)
}

/// The kernel's answer when asked to run `flux_xdp_tx` on one frame in live-frames mode, or
/// `None` if it ran. The frame goes to the loopback interface of this namespace, which has no
/// `ndo_xdp_xmit`: the kernel drops it. Loading the object is not part of the question: a
/// failure there ends the run as it would later.
fn live_frames_refused() -> anyhow::Result<Option<String>> {
    let pin = PinDir::new();
    let mut loaded = load(&LoadOptions {
        pin_dir: pin.0.clone(),
        ..Default::default()
    })?;
    let tx = load_generator(&mut loaded)?;
    let lo = flux_agent::kernel::interfaces::Interface::by_name("lo")
        .context("no loopback interface")?
        .index;
    let answer = run_live(tx, &[0u8; 60], lo, 1);
    loaded.unpin_maps();
    Ok(answer.err().map(|e| format!("{e:#}")))
}

/// Runs `prog` on `frame` `repeat` times in live-frames mode, as if the frame had arrived on
/// `ifindex` (which it leaves by, on `XDP_TX`).
fn run_live(prog: &Xdp, frame: &[u8], ifindex: u32, repeat: u32) -> anyhow::Result<()> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex.
    let len = u32::try_from(frame.len())?;
    let md: Vec<u8> = [0, len, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v: &u32| v.to_ne_bytes())
        .collect();
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&md),
        repeat,
        attrs: TestRunAttrs::new().xdp_live_frames(XDP_GEN_BATCH),
        ..TestRunOptions::default()
    })?;
    Ok(())
}

/// The object's generator program (`flux_xdp_tx`), loaded into the kernel.
fn load_generator(loaded: &mut Loaded) -> anyhow::Result<&mut Xdp> {
    let tx: &mut Xdp = loaded
        .ebpf
        .program_mut(PROG_XDP_TX)
        .context("no generator program (flux_xdp_tx)")?
        .try_into()?;
    tx.load()?;
    Ok(tx)
}

fn measure_all(
    pin_dir: &Path,
    client: &Path,
    server: &Path,
    conf: &Path,
) -> anyhow::Result<Samples> {
    let mut loaded = load(&LoadOptions {
        pin_dir: pin_dir.to_owned(),
        ..Default::default()
    })?;
    let mut maps = Maps::open(pin_dir)?;
    let start = Instant::now();
    for i in 0..BLOCKED {
        let ip = Ipv4Addr::from(u32::from(FIRST) + i);
        maps.write(&Target::Ip(ip.into()), &Spec::manual(None, "bench"), None)?;
    }
    eprintln!(
        "  ({BLOCKED} map entries written in {:.1?})",
        start.elapsed()
    );
    let ifindex = flux_agent::kernel::interfaces::Interface::by_name("a0")
        .context("a0 in the client namespace")?
        .index;
    for name in [PROG_XDP_NOOP, PROG_XDP_FLOOR] {
        let prog: &mut Xdp = loaded
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no {name}"))?
            .try_into()?;
        prog.load()?;
    }
    if generator() == Generator::XdpLive {
        load_generator(&mut loaded)?;
    }
    if generator() == Generator::Bounce {
        attach_bounce(&mut loaded, server)?;
    }
    let mut samples: Samples = Default::default();
    for round in 0..rounds() {
        for (i, case) in Case::ALL.into_iter().enumerate() {
            let s = measure_case(&mut loaded, ifindex, case, client, server, conf)
                .with_context(|| format!("round {}, {}", round + 1, case.label()))?;
            samples[i].push(s);
        }
        let line: Vec<String> = Case::ALL
            .iter()
            .zip(&samples)
            .map(|(c, s)| {
                let s = s.last().copied().unwrap_or_default();
                format!(
                    "{} {:.2} Mpps {:.2} µs",
                    c.key(),
                    s.pps / 1e6,
                    s.cpu_ns / 1e3
                )
            })
            .collect();
        eprintln!("  round {}: {}", round + 1, line.join(", "));
    }
    drop(maps);
    loaded.unpin_maps();
    Ok(samples)
}

/// One case: its filter in place, the flood sent ([`flood_retried`]: the background sampled,
/// every frame accounted for), then the filter taken out, whatever failed.
fn measure_case(
    loaded: &mut Loaded,
    ifindex: u32,
    case: Case,
    client: &Path,
    server: &Path,
    conf: &Path,
) -> anyhow::Result<Sample> {
    let attached = match case.xdp() {
        Some((name, mode)) => {
            let prog: &mut Xdp = loaded
                .ebpf
                .program_mut(name)
                .with_context(|| format!("no {name}"))?
                .try_into()?;
            Some((name, prog.attach_to_if_index(ifindex, mode)?))
        }
        None => None,
    };
    // Whatever fails from here, the nftables chain (if it went in) and the program come out.
    let result = match case.nft() {
        Some(chain) => nft_chain(client, chain, true).and_then(|()| {
            let flooded = flood_retried(loaded, case, client, server, conf);
            let off = nft_chain(client, chain, false);
            flooded.and_then(|s| off.map(|()| s))
        }),
        None => flood_retried(loaded, case, client, server, conf),
    };
    let detached = match attached {
        Some((name, id)) => (|| {
            let prog: &mut Xdp = loaded
                .ebpf
                .program_mut(name)
                .with_context(|| format!("no {name}"))?
                .try_into()?;
            prog.detach(id)?;
            anyhow::Ok(())
        })(),
        None => Ok(()),
    };
    let sample = result?;
    detached?;
    Ok(sample)
}

/// The case's flood, sent again after a transient failure ([`Flood::Transient`]), up to
/// [`FLOOD_TRIES`] floods.
fn flood_retried(
    loaded: &Loaded,
    case: Case,
    client: &Path,
    server: &Path,
    conf: &Path,
) -> anyhow::Result<Sample> {
    let mut last_err = None;
    for retried in 0..FLOOD_TRIES {
        let flooded = match generator() {
            Generator::XdpLive => xdp_flood(loaded, case, client, server, conf),
            Generator::Trafgen => flood(loaded, case, (client, server), conf, Sender::B0),
            Generator::Bounce => {
                let napi = *BOUNCE_NAPI.get().context("no NAPI thread for a0")?;
                flood(
                    loaded,
                    case,
                    (client, server),
                    conf,
                    Sender::Bounce { napi },
                )
            }
        };
        match flooded {
            Ok(s) => return Ok(Sample { retried, ..s }),
            Err(Flood::Transient(e)) => {
                eprintln!("  {}: {e:#}; flooding again", case.label());
                last_err = Some(e);
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(Flood::Other(e)) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no flood ran")))
        .context(format!("{FLOOD_TRIES} floods failed"))
}

enum Flood {
    /// trafgen itself failed, or the link lost frames before the filter: worth another try.
    Transient(anyhow::Error),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Flood {
    fn from(e: E) -> Self {
        Flood::Other(e.into())
    }
}

/// [`flood`] with the XDP generator: `flux_xdp_tx` run in live-frames mode from a thread in the
/// server namespace, [`packets`] frames out of b0. The flood's CPU is that thread's CPU time
/// (the veth receive and the filter run in softirq in it) plus every ksoftirqd's.
fn xdp_flood(
    loaded: &Loaded,
    case: Case,
    client: &Path,
    server: &Path,
    conf: &Path,
) -> Result<Sample, Flood> {
    let frame = std::fs::read(conf.with_file_name("frame.bin")).context("read frame.bin")?;
    let generator_prog: &Xdp = loaded
        .ebpf
        .program(PROG_XDP_TX)
        .context("no flux_xdp_tx")?
        .try_into()?;
    let bg_rate = background_rate()?;

    let (xdp_before, nft_before) = filter_drops(loaded, client, case)?;
    let lost_before = link_dropped(server)?;
    let cpu_before = cpu_ticks()?;
    let softirqd_before = ksoftirqd_ticks();
    let sent = u32::try_from(packets()).context("--packets: at most 4,294,967,295 with xdp")?;
    let start = Instant::now();
    let thread_ns = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<f64> {
            enter_netns(server)?;
            let ifindex = flux_agent::kernel::interfaces::Interface::by_name("b0")
                .context("b0 in the server namespace")?
                .index;
            let t0 = flux_tests::paced_sender::thread_cpu_ns();
            run_live(generator_prog, &frame, ifindex, sent)
                .context("BPF_PROG_TEST_RUN (live frames) of flux_xdp_tx on b0")?;
            Ok(flux_tests::paced_sender::thread_cpu_ns() - t0)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
    })?;
    let secs = start.elapsed().as_secs_f64();
    let busy = (cpu_ticks()? - cpu_before) as f64 * NS_PER_TICK;
    let flood = thread_ns + ksoftirqd_ticks().saturating_sub(softirqd_before) as f64 * NS_PER_TICK;
    let sent = u64::from(sent);
    let (xdp_after, nft_after) = filter_drops(loaded, client, case)?;
    let (by_xdp, by_nft) = (xdp_after - xdp_before, nft_after - nft_before);
    let link_lost = link_dropped(server)?.saturating_sub(lost_before);
    sample(
        case,
        Measured {
            secs,
            busy,
            flood,
            bg_rate,
            sent,
            by_xdp,
            by_nft,
            link_lost,
            rx: 0.0,
            link_tolerance: LOSS_TOLERANCE,
        },
    )
}

/// Where a trafgen flood leaves from (see the module comment).
#[derive(Clone, Copy)]
enum Sender {
    /// Out of b0 in the server namespace (the trafgen generator).
    B0,
    /// Out of a0 in the client namespace, sent back by `flux_xdp_bounce` on b0 (the bounce
    /// generator); `napi` is a0's NAPI thread ([`threaded_napi`]).
    Bounce { napi: i32 },
}

impl Sender {
    /// The namespace and interface trafgen sends out of.
    fn dev<'p>(self, (client, server): (&'p Path, &'p Path)) -> (&'p Path, &'static str) {
        match self {
            Sender::B0 => (server, "b0"),
            Sender::Bounce { .. } => (client, "a0"),
        }
    }

    fn napi(self) -> Option<i32> {
        match self {
            Sender::B0 => None,
            Sender::Bounce { napi } => Some(napi),
        }
    }
}

/// The sending interface's counters a flood is accounted with: frames it passed on, frames it
/// could not (veth counts those as `tx_dropped`, not as sent), and, with the bounce generator,
/// frames lost after it on the way back into a0's ring (a0's `rx_dropped`, where veth counts
/// its peer's failed `ndo_xdp_xmit`). b0's `tx_dropped` already counts the XDP and trafgen
/// generators' frames a0 could not take (see [`link_dropped`]), so a0's side is not read
/// for them. One `ip` call for all three.
fn link_counts(sender: Sender, ns: (&Path, &Path)) -> anyhow::Result<[u64; 3]> {
    let (at, dev) = sender.dev(ns);
    let stats = link_stats(at, dev)?;
    let field = |dir: &str, name: &str| {
        stats[dir][name]
            .as_u64()
            .with_context(|| format!("{dir} {name} of {dev}"))
    };
    let lost_after = match sender {
        Sender::B0 => 0,
        Sender::Bounce { .. } => field("rx", "dropped")?,
    };
    Ok([field("tx", "packets")?, field("tx", "dropped")?, lost_after])
}

/// A trafgen flood of [`packets`] frames from `sender`. Sent is what the sending interface
/// passed on plus what it could not; lost on the link is that, and (bounce) what a0's ring
/// could not take. The flood's CPU is trafgen's user + system time and every ksoftirqd's; with
/// the bounce generator a0's NAPI thread, pinned to [`BOUNCE_NAPI_CPU`], runs the receive, and
/// its run time (`/proc/PID/schedstat`) is the receiving side's CPU, part of the flood's too.
fn flood(
    loaded: &Loaded,
    case: Case,
    ns: (&Path, &Path),
    conf: &Path,
    sender: Sender,
) -> Result<Sample, Flood> {
    let client = ns.0;
    if let Some(napi) = sender.napi() {
        pin_to_cpu(napi, BOUNCE_NAPI_CPU)?;
    }
    let bg_rate = background_rate()?;

    let (xdp_before, nft_before) = filter_drops(loaded, client, case)?;
    let link_before = link_counts(sender, ns)?;
    let cpu_before = cpu_ticks()?;
    let (children_before, softirqd_before) = (children_cpu_ns(), ksoftirqd_ticks());
    let napi_before = sender.napi().map(run_ns).transpose()?;
    let start = Instant::now();
    let (at, dev) = sender.dev(ns);
    trafgen_on(at, dev, conf).map_err(Flood::Transient)?;
    let secs = start.elapsed().as_secs_f64();
    let rx = match (sender.napi(), napi_before) {
        (Some(napi), Some(before)) => {
            // The last frames may still be in a0's ring, and with `napi_defer_hard_irqs` the
            // thread polls the empty ring every 100 µs up to 1,000 times (about 100 ms) before
            // it sleeps: wait that out, so the tail is in this case's figures and not in the
            // next one's background.
            std::thread::sleep(BOUNCE_TAIL);
            run_ns(napi)? - before
        }
        _ => 0.0,
    };
    let busy = (cpu_ticks()? - cpu_before) as f64 * NS_PER_TICK;
    let flood = (children_cpu_ns() - children_before)
        + (ksoftirqd_ticks().saturating_sub(softirqd_before)) as f64 * NS_PER_TICK
        + rx;
    let link_after = link_counts(sender, ns)?;
    let [passed, not_taken, lost_after] =
        [0, 1, 2].map(|i| link_after[i].saturating_sub(link_before[i]));
    let (xdp_after, nft_after) = filter_drops(loaded, client, case)?;
    let (by_xdp, by_nft) = (xdp_after - xdp_before, nft_after - nft_before);
    sample(
        case,
        Measured {
            secs,
            busy,
            flood,
            bg_rate,
            sent: passed + not_taken,
            by_xdp,
            by_nft,
            link_lost: not_taken + lost_after,
            rx,
            link_tolerance: match sender {
                Sender::B0 => LOSS_TOLERANCE,
                Sender::Bounce { .. } => BOUNCE_LOSS_TOLERANCE,
            },
        },
    )
}

/// a0's NAPI thread, made for the bounce generator: a0's NAPI switched to its own kernel thread
/// (`threaded`) with [`BOUNCE_COALESCE`], its thread found as the one `napi/a0-*` thread that
/// did not exist before. Written in sysfs through `ip netns exec`, whose /sys is the
/// namespace's (nsenter keeps the host's, where a0 is not).
fn threaded_napi(client: &Netns) -> anyhow::Result<i32> {
    let before = napi_threads("a0");
    let mut script = String::from("set -e; cd /sys/class/net/a0; echo 1 > threaded");
    for (file, value) in BOUNCE_COALESCE {
        script.push_str(&format!("; echo {value} > {file}"));
    }
    let out = Command::new("ip")
        .args(["netns", "exec", &client.name, "sh", "-c", &script])
        .output()
        .context("run ip netns exec")?;
    ensure!(
        out.status.success(),
        "a0's threaded NAPI and coalescing: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let new: Vec<i32> = napi_threads("a0")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    match new.as_slice() {
        [one] => Ok(*one),
        other => bail!("expected one new NAPI thread for a0, found {}", other.len()),
    }
}

/// The kernel threads polling a NAPI instance of an interface named `dev` (`napi/DEV-ID`), in
/// any namespace: [`threaded_napi`] takes the one that appears when it switches a0, so another
/// a0 made threaded in that instant (by nothing this project runs) would make it refuse.
fn napi_threads(dev: &str) -> Vec<i32> {
    let prefix = format!("napi/{dev}-");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
        })
        .collect()
}

/// The ns thread `pid` has run on a CPU so far (`/proc/PID/schedstat`'s first field), once it
/// is seen to still be a0's NAPI thread (a thread gone and its number reused would read as
/// another's time).
fn run_ns(pid: i32) -> anyhow::Result<f64> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    ensure!(
        comm.starts_with("napi/a0-"),
        "a0's NAPI thread {pid} is gone (now `{}`)",
        comm.trim_end()
    );
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .with_context(|| format!("read /proc/{pid}/schedstat (a0's NAPI thread)"))?;
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no run time in /proc/{pid}/schedstat: {text}"))?;
    Ok(ns as f64)
}

/// Keeps thread `pid` on `cpu` alone, at real-time priority ([`NAPI_PRIORITY`]).
fn pin_to_cpu(pid: i32, cpu: usize) -> anyhow::Result<()> {
    let param = libc::sched_param {
        sched_priority: NAPI_PRIORITY,
    };
    // SAFETY: sched_setscheduler reads the parameter it is given.
    let rc = unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) };
    ensure!(
        rc == 0,
        "real-time priority for thread {pid}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it for cpu < 1024;
    // sched_setaffinity reads the set it is given.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set)
    };
    ensure!(
        rc == 0,
        "pin thread {pid} to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Loads `flux_xdp_bounce` and attaches it to b0 in native mode, from a thread in the server
/// namespace (an attachment names its interface by index, in the caller's namespace).
fn attach_bounce(loaded: &mut Loaded, server: &Path) -> anyhow::Result<()> {
    let bounce: &mut Xdp = loaded
        .ebpf
        .program_mut(PROG_XDP_BOUNCE)
        .context("no relay program (flux_xdp_bounce)")?
        .try_into()?;
    bounce.load()?;
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            enter_netns(server)?;
            let b0 = flux_agent::kernel::interfaces::Interface::by_name("b0")
                .context("b0 in the server namespace")?
                .index;
            bounce
                .attach_to_if_index(b0, XdpMode::Driver)
                .context("attach flux_xdp_bounce to b0")?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread attaching flux_xdp_bounce panicked"))?
    })
}

/// What one flood measured: its wall time, the machine's busy ns, the flood's own CPU ns, the
/// background rate (busy ns per ns) before it, the frames sent, each filter's drops, the
/// frames veth dropped on their way to a0 and the receiving side's CPU ns.
struct Measured {
    secs: f64,
    busy: f64,
    flood: f64,
    bg_rate: f64,
    sent: u64,
    by_xdp: u64,
    by_nft: u64,
    link_lost: u64,
    /// The receiving side's CPU ns (a0's NAPI thread; 0 when not measured).
    rx: f64,
    /// The share of the frames that may be lost on the link and the flood still count
    /// ([`LOSS_TOLERANCE`], or [`BOUNCE_LOSS_TOLERANCE`]).
    link_tolerance: (u64, u64),
}

/// The case's figures per dropped packet, once every frame is accounted for (see the module
/// comment): dropped by the filter under test and nothing else, or lost on the link before it,
/// within the flood's tolerance (`link_tolerance`; frames nothing counted within
/// [`LOSS_TOLERANCE`]). More drops than frames sent end the run too: the counters then
/// count something else.
fn sample(case: Case, m: Measured) -> Result<Sample, Flood> {
    let (who, dropped, other) = match case.xdp() {
        Some((p, _)) if p != PROG_XDP_NOOP => (p, m.by_xdp, m.by_nft),
        _ => ("nftables", m.by_nft, m.by_xdp),
    };
    let (sent, lost) = (m.sent, m.link_lost);
    let counted = dropped + lost + other;
    let unexplained = sent.saturating_sub(counted);
    let tolerated = sent * LOSS_TOLERANCE.0 / LOSS_TOLERANCE.1;
    let link_tolerated = sent * m.link_tolerance.0 / m.link_tolerance.1;
    let line = || {
        format!(
            "{who}: {sent} frames sent, {dropped} dropped, {other} dropped by the other filter, \
             {lost} lost on the link, {unexplained} unaccounted for"
        )
    };
    if other != 0 || dropped == 0 || unexplained > tolerated || counted > sent {
        return Err(Flood::Other(anyhow::anyhow!(line())));
    }
    if lost + unexplained > link_tolerated {
        return Err(Flood::Transient(anyhow::anyhow!(
            "{}: more than {}% of the flood never reached the filter",
            line(),
            100 * m.link_tolerance.0 / m.link_tolerance.1
        )));
    }
    let n = dropped as f64;
    // With the receiving side measured apart (bounce), the rest of a figure is the sender's,
    // which it spent on every frame sent, those lost on the link too: charged per frame sent,
    // and the receiving side per frame dropped, so a flood that lost more does not look
    // dearer. (Per frame dropped, the 19:34 run's prerouting case, 11% lost in its median
    // round, read 0.68x for flux_xdp on the whole machine, below the receiving side's 0.71x.)
    // Otherwise the receive runs in the sender's softirq and cannot be told apart: all per
    // frame dropped, within the 1% the link may lose.
    let per_frame = |total: f64| {
        if m.rx > 0.0 {
            (total - m.rx).max(0.0) / sent as f64 + m.rx / n
        } else {
            total / n
        }
    };
    Ok(Sample {
        pps: n / m.secs,
        cpu_ns: per_frame(m.busy),
        net_cpu_ns: per_frame((m.busy - m.bg_rate * m.secs * 1e9).max(0.0)),
        flood_cpu_ns: per_frame(m.flood),
        rx_cpu_ns: m.rx / n,
        link_lost: lost,
        retried: 0,
    })
}

/// Moves the calling thread into the network namespace at `path` (a bind mount in /run/netns).
fn enter_netns(path: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: setns on an open namespace file descriptor; it only changes this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The XDP generator's frame: the same 60 bytes as trafgen's (Ethernet to a0, IPv4 from
/// [`XDP_GEN_SOURCE`] to the client, UDP to port 9, 18 bytes of payload), checksum included.
fn xdp_gen_frame(link: &Link) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend(link.client_mac("a0"));
    f.extend(link.server_mac("b0"));
    f.extend([0x08, 0x00]);
    let dst: Ipv4Addr = CLIENT_V4.parse().unwrap_or(Ipv4Addr::new(10, 77, 0, 1));
    let mut ip = [
        0x45, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    ip[12..16].copy_from_slice(&XDP_GEN_SOURCE.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend(ip);
    f.extend([0x9c, 0x40, 0x00, 0x09, 0x00, 0x1a, 0x00, 0x00]);
    f.extend([0x61; 18]);
    f
}

/// The machine's busy CPU ns per ns, sampled over [`BACKGROUND`] before a flood.
fn background_rate() -> anyhow::Result<f64> {
    let before = cpu_ticks()?;
    std::thread::sleep(BACKGROUND);
    let after = cpu_ticks()?;
    Ok((after - before) as f64 * NS_PER_TICK / BACKGROUND.as_nanos() as f64)
}

/// The drops counted so far by the case's XDP program (flux_xdp's counter; veth's count of
/// `XDP_DROP`s on a0 for the floor, which counts nothing itself) and by its nftables chain.
fn filter_drops(loaded: &Loaded, client: &Path, case: Case) -> anyhow::Result<(u64, u64)> {
    let xdp = match case {
        Case::FloorNative => veth_xdp_drops(client)?,
        _ => xdp_drops(&loaded.ebpf)?,
    };
    Ok((xdp, nft_drops(client, case.nft())?))
}

/// The frames XDP programs dropped on a0 so far, as veth counts them (`ethtool -S`: the sum of
/// `rx_queue_N_xdp_drops`).
fn veth_xdp_drops(client: &Path) -> anyhow::Result<u64> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", client.display()))
        .args(["--", "ethtool", "-S", "a0"])
        .output()
        .context("run ethtool -S a0")?;
    ensure!(
        out.status.success(),
        "ethtool -S a0: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(sum_xdp_drops(&String::from_utf8_lossy(&out.stdout)))
}

/// The sum of veth's per-queue `rx_queue_N_xdp_drops` in `ethtool -S` output.
fn sum_xdp_drops(stats: &str) -> u64 {
    stats
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.starts_with("rx_queue_") && k.ends_with("_xdp_drops"))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// User + system ns of this process's waited-for children (trafgen, once it has exited).
fn children_cpu_ns() -> f64 {
    // SAFETY: getrusage fills the struct it is given; all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let ns = |t: libc::timeval| t.tv_sec as f64 * 1e9 + t.tv_usec as f64 * 1e3;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

/// User + system ticks of every `ksoftirqd/N` thread so far (`/proc/PID/stat` fields 14, 15).
fn ksoftirqd_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in dir.flatten() {
        let path = entry.path();
        let is_softirqd =
            std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.starts_with("ksoftirqd/"));
        if !is_softirqd {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // After the parenthesised command come field 3 (state) onwards: utime is field 14.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        total += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    }
    total
}

/// Busy ticks of the whole machine so far: the `cpu` line of `/proc/stat`, user + nice +
/// system + irq + softirq (idle, iowait and steal are not this machine's work).
fn cpu_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok(at(0) + at(1) + at(2) + at(5) + at(6))
}

/// The frame trafgen repeats: Ethernet to a0, IPv4 from a random 10.200.x.y to the client, UDP
/// to port 9 with 18 bytes of payload (60 bytes in all), IPv4 checksum computed per packet.
fn trafgen_config(link: &Link) -> String {
    let hex = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("0x{b:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dst = CLIENT_V4.replace('.', ", ");
    let [a, b, ..] = FIRST.octets();
    format!(
        "{{\n  {}, {},\n  0x08, 0x00,\n  0x45, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x40, 0x00,\n  \
         0x40, 0x11, csumip(14, 33),\n  {a}, {b}, drnd(2),\n  {dst},\n  \
         0x9c, 0x40, 0x00, 0x09, 0x00, 0x1a, 0x00, 0x00,\n  fill(0x61, 18),\n}}\n",
        hex(link.client_mac("a0")),
        hex(link.server_mac("b0")),
    )
}

/// Frames veth dropped on their way from b0 to a0, counted as b0's `tx_dropped`: the socket
/// buffers a0 could not take (trafgen's, counted by `veth_xmit`) and the XDP generator's frames
/// a0's receive ring had no room for (a0's `peer_tq_xdp_xmit_err`, which veth adds to its
/// peer's `tx_dropped`, and to a0's own `rx_dropped`: read on one side only).
fn link_dropped(server: &Path) -> anyhow::Result<u64> {
    link_stat(server, "b0", "tx", "dropped")
}

/// One 64-bit counter of `dev` in the namespace at `ns`.
fn link_stat(ns: &Path, dev: &str, dir: &str, field: &str) -> anyhow::Result<u64> {
    link_stats(ns, dev)?[dir][field]
        .as_u64()
        .with_context(|| format!("{dir} {field} of {dev}"))
}

/// The 64-bit counters of `dev` in the namespace at `ns` (`stats64`: `rx` and `tx`). Asked of
/// rtnetlink through `ip`: nsenter keeps the host's /sys, where the namespace's devices are not
/// visible.
fn link_stats(ns: &Path, dev: &str) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["--", "ip", "-s", "-j", "link", "show", "dev", dev])
        .output()?;
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0]["stats64"].take())
}

/// Sends [`packets`] frames out of `dev` in the namespace at `ns`, from one trafgen worker
/// (which trafgen pins to CPU 0).
fn trafgen_on(ns: &Path, dev: &str, conf: &Path) -> anyhow::Result<()> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["--", "trafgen", "--dev", dev, "--conf"])
        .arg(conf)
        .args([
            "--cpus",
            "1",
            "--num",
            &packets().to_string(),
            "--no-sock-mem",
            "--notouch-irq",
            "--no-cpu-stats",
        ])
        .output()
        .context("run trafgen")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("trafgen: {}", last.trim());
    }
    Ok(())
}

fn xdp_drops(ebpf: &aya::Ebpf) -> anyhow::Result<u64> {
    flux_tests::kernel_counter(ebpf, Counter::DropBlockedSrc)
}

/// The two nftables placements: a table each, with a set of the same addresses.
#[derive(Clone, Copy)]
enum Nft {
    /// `netdev` ingress of a0, the earliest nftables hook.
    Ingress,
    /// `ip` prerouting at raw priority (-300), before conntrack: a CrowdSec bouncer's place.
    Prerouting,
}

impl Nft {
    /// `family table chain`, as `nft` commands take them.
    fn chain(self) -> [&'static str; 3] {
        match self {
            Nft::Ingress => ["netdev", "fluxbench", "in"],
            Nft::Prerouting => ["ip", "fluxbench", "pre"],
        }
    }

    fn hook(self) -> &'static str {
        match self {
            Nft::Ingress => "type filter hook ingress device \"a0\" priority -500;",
            Nft::Prerouting => "type filter hook prerouting priority raw;",
        }
    }
}

/// Both tables with their sets of the same [`BLOCKED`] addresses; no chain yet (a chain exists
/// only while its case runs, so one placement never drops in front of the other).
fn nft_sets(client: &Netns, dir: &TempDir) -> anyhow::Result<()> {
    let path = dir.0.join("blocked.nft");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for family in ["netdev", "ip"] {
        writeln!(
            f,
            "table {family} fluxbench {{\n  set blocked {{ type ipv4_addr; size {}; }}\n}}",
            BLOCKED * 2
        )?;
        for chunk in (0..BLOCKED).collect::<Vec<_>>().chunks(10_000) {
            let list: Vec<String> = chunk
                .iter()
                .map(|i| Ipv4Addr::from(u32::from(FIRST) + i).to_string())
                .collect();
            writeln!(
                f,
                "add element {family} fluxbench blocked {{ {} }}",
                list.join(", ")
            )?;
        }
    }
    drop(f);
    let out = client.exec(&["nft", "-f", path.to_str().context("utf-8 path")?]);
    ensure!(
        out.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Adds (`on`) or deletes the drop chain of one placement.
fn nft_chain(client: &Path, nft: Nft, on: bool) -> anyhow::Result<()> {
    let [family, table, chain] = nft.chain();
    let script = if on {
        format!(
            "add chain {family} {table} {chain} {{ {} }}\n\
             add rule {family} {table} {chain} ip saddr @blocked counter drop\n",
            nft.hook()
        )
    } else {
        format!("delete chain {family} {table} {chain}\n")
    };
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", client.display()))
        .args(["--", "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Packets the case's nftables rule dropped so far (0 when the case has none).
fn nft_drops(client: &Path, nft: Option<Nft>) -> anyhow::Result<u64> {
    let Some(nft) = nft else {
        return Ok(0);
    };
    let out = Command::new("nsenter")
        .arg(format!("--net={}", client.display()))
        .args(["--", "nft", "list", "chain"])
        .args(nft.chain())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no counter in: {text}"))
}

/// Median, lowest and highest of one field over the rounds.
fn spread(v: &[Sample], field: fn(&Sample) -> f64) -> (f64, f64, f64) {
    flux_tests::spread(v.iter().map(field))
}

/// The median CPU per packet of each case, for the ratios.
fn medians(samples: &Samples, field: fn(&Sample) -> f64) -> [f64; Case::ALL.len()] {
    let mut out = [0.0; Case::ALL.len()];
    for (o, s) in out.iter_mut().zip(samples) {
        *o = spread(s, field).0;
    }
    out
}

fn print_table(samples: &Samples) {
    println!(
        "veth drop cost, {} 60-byte UDP frames per case from the {}, {BLOCKED} blocked \
         addresses, median of {} rounds (range)",
        packets(),
        generator().describe(),
        rounds()
    );
    if let Some(why) = FALLBACK.get() {
        println!("(bounce because this kernel refuses live frames: {why})");
    }
    println!(
        "| {:<38} | {:>17} | {:>21} | {:>21} | {:>21} | {:>19} | {:>19} |",
        "filter",
        "drop rate (Mpps)",
        "machine CPU/pkt (µs)",
        "net of background",
        "flood CPU/pkt (µs)",
        "/ ingress (mach, flood)",
        "/ prerouting (mach, flood)"
    );
    println!(
        "|{:-<40}|{:->18}:|{:->22}:|{:->22}:|{:->22}:|{:->20}:|{:->20}:|",
        "", "", "", "", "", "", ""
    );
    let cpu = medians(samples, |s| s.cpu_ns);
    let flood = medians(samples, |s| s.flood_cpu_ns);
    for (((case, s), c), f) in Case::ALL.iter().zip(samples).zip(cpu).zip(flood) {
        let (p, p0, p1) = spread(s, |s| s.pps / 1e6);
        let (u, u0, u1) = spread(s, |s| s.cpu_ns / 1e3);
        let (n, n0, n1) = spread(s, |s| s.net_cpu_ns / 1e3);
        let (l, l0, l1) = spread(s, |s| s.flood_cpu_ns / 1e3);
        println!(
            "| {:<38} | {p:>4.2} ({p0:.2}–{p1:.2}) | {u:>5.2} ({u0:.2}–{u1:.2}) | {n:>5.2} \
             ({n0:.2}–{n1:.2}) | {l:>5.2} ({l0:.2}–{l1:.2}) | {:>5.2}×, {:>5.2}× | \
             {:>5.2}×, {:>5.2}× |",
            case.label(),
            flux_tests::ratio(c, cpu[2]),
            flux_tests::ratio(f, flood[2]),
            flux_tests::ratio(c, cpu[3]),
            flux_tests::ratio(f, flood[3]),
        );
    }
    if generator() != Generator::Bounce {
        return;
    }
    println!(
        "\nThe receiving side alone: a0's NAPI thread, which runs the XDP program or builds the \
         socket buffer and runs the stack up to the nftables drop (the generator runs on the \
         other CPU)"
    );
    println!(
        "| {:<38} | {:>21} | {:>11} | {:>14} |",
        "filter", "rx CPU/pkt (µs)", "/ ingress", "/ prerouting"
    );
    println!("|{:-<40}|{:->22}:|{:->12}:|{:->15}:|", "", "", "", "");
    let rx = medians(samples, |s| s.rx_cpu_ns);
    for ((case, s), r) in Case::ALL.iter().zip(samples).zip(rx) {
        let (m, m0, m1) = spread(s, |s| s.rx_cpu_ns / 1e3);
        println!(
            "| {:<38} | {m:>5.3} ({m0:.3}–{m1:.3}) | {:>10.2}× | {:>13.2}× |",
            case.label(),
            flux_tests::ratio(r, rx[2]),
            flux_tests::ratio(r, rx[3]),
        );
    }
}

fn to_json(samples: &Samples) -> serde_json::Value {
    let cpu = medians(samples, |s| s.cpu_ns);
    let flood = medians(samples, |s| s.flood_cpu_ns);
    let rx = medians(samples, |s| s.rx_cpu_ns);
    let bounce = generator() == Generator::Bounce;
    let cases: Vec<_> = Case::ALL
        .iter()
        .zip(samples)
        .zip(cpu)
        .zip(flood)
        .zip(rx)
        .map(|((((case, s), c), f), r)| {
            let rounds: Vec<_> = s
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "pps": s.pps, "cpu_ns_per_packet": s.cpu_ns,
                        "net_cpu_ns_per_packet": s.net_cpu_ns,
                        "flood_cpu_ns_per_packet": s.flood_cpu_ns,
                        "link_lost": s.link_lost, "retried": s.retried,
                        "rx_cpu_ns_per_packet": bounce.then_some(s.rx_cpu_ns),
                    })
                })
                .collect();
            serde_json::json!({
                "case": case.key(),
                "label": case.label(),
                "median_pps": spread(s, |s| s.pps).0,
                "median_cpu_ns_per_packet": c,
                "median_net_cpu_ns_per_packet": spread(s, |s| s.net_cpu_ns).0,
                "cpu_ratio_to_nft_ingress": flux_tests::ratio(c, cpu[2]),
                "cpu_ratio_to_nft_prerouting": flux_tests::ratio(c, cpu[3]),
                "median_flood_cpu_ns_per_packet": f,
                "flood_cpu_ratio_to_nft_ingress": flux_tests::ratio(f, flood[2]),
                "flood_cpu_ratio_to_nft_prerouting": flux_tests::ratio(f, flood[3]),
                // The receiving side alone (a0's NAPI thread), measured with the bounce
                // generator only; null with the others.
                "median_rx_cpu_ns_per_packet": bounce.then_some(r),
                "rx_cpu_ratio_to_nft_ingress": bounce.then(|| flux_tests::ratio(r, rx[2])),
                "rx_cpu_ratio_to_nft_prerouting": bounce.then(|| flux_tests::ratio(r, rx[3])),
                "rounds": rounds,
            })
        })
        .collect();
    serde_json::json!({
        "generator": generator().key(),
        "generator_fallback": FALLBACK.get(),
        "packets_per_case": packets(),
        "blocked_addresses": BLOCKED,
        "rounds": rounds(),
        "cases": cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of 1,000 frames with these counts, through [`sample`] for flux_xdp.
    fn flood(by_xdp: u64, by_nft: u64, link_lost: u64) -> Result<Sample, Flood> {
        sample(
            Case::XdpNative,
            Measured {
                secs: 1.0,
                busy: 1e6,
                flood: 5e5,
                bg_rate: 0.0,
                sent: 1_000,
                by_xdp,
                by_nft,
                link_lost,
                rx: 0.0,
                link_tolerance: LOSS_TOLERANCE,
            },
        )
    }

    /// A bounce flood of 1,000 frames of `case`: 600,000 ns busy on the machine, 170,000 of
    /// them on a0's NAPI thread.
    fn bounced(case: Case, by_xdp: u64, by_nft: u64, link_lost: u64) -> Result<Sample, Flood> {
        sample(
            case,
            Measured {
                secs: 1.0,
                busy: 6e5,
                flood: 6e5,
                bg_rate: 0.0,
                sent: 1_000,
                by_xdp,
                by_nft,
                link_lost,
                rx: 1.7e5,
                link_tolerance: BOUNCE_LOSS_TOLERANCE,
            },
        )
    }

    /// With the bounce generator the link may lose up to its own tolerance; the receiving
    /// side is per frame dropped and the sender's part per frame sent, so the frames lost do
    /// not make a case dearer on the whole machine; each case's drops are its own filter's.
    #[test]
    fn bounce_floods_charge_the_sender_per_frame_sent() {
        let s = bounced(Case::XdpNative, 850, 0, 150).unwrap_or_else(|_| panic!("counted"));
        assert_eq!(s.rx_cpu_ns, 200.0);
        // 430,000 ns of the sender's over 1,000 frames sent, 170,000 over 850 dropped.
        assert_eq!(s.cpu_ns, 630.0);
        assert_eq!(s.flood_cpu_ns, 630.0);
        let whole = bounced(Case::XdpNative, 1_000, 0, 0).unwrap_or_else(|_| panic!("counted"));
        assert_eq!((whole.cpu_ns, whole.rx_cpu_ns), (600.0, 170.0));
        assert_eq!(kind(bounced(Case::XdpNative, 849, 0, 151)), "retried");
        // Frames nothing counted still end the run past 1%.
        assert_eq!(kind(bounced(Case::XdpNative, 889, 0, 100)), "ends the run");
        // The floor's drops are veth's count (given as the XDP side), the no-op case's are
        // nftables'; a drop by the other side ends the run.
        assert_eq!(kind(bounced(Case::FloorNative, 1_000, 0, 0)), "counted");
        assert_eq!(kind(bounced(Case::FloorNative, 999, 1, 0)), "ends the run");
        assert_eq!(kind(bounced(Case::NoopThenNft, 0, 1_000, 0)), "counted");
        assert_eq!(kind(bounced(Case::NoopThenNft, 1, 999, 0)), "ends the run");
        let Err(Flood::Other(e)) = bounced(Case::FloorNative, 999, 1, 0) else {
            unreachable!()
        };
        assert!(
            e.to_string()
                .starts_with("flux_xdp_floor: 1000 frames sent, 999 dropped")
        );
    }

    fn kind(r: Result<Sample, Flood>) -> &'static str {
        match r {
            Ok(_) => "counted",
            Err(Flood::Transient(_)) => "retried",
            Err(Flood::Other(_)) => "ends the run",
        }
    }

    /// veth's XDP drops are summed over its queues, and nothing else is read as one.
    #[test]
    fn veth_xdp_drops_sum_every_queue() {
        let stats = "NIC statistics:\n     peer_ifindex: 2\n     rx_queue_0_xdp_packets: 900\n     \
                     rx_queue_0_xdp_drops: 700\n     rx_queue_0_xdp_tx_errors: 5\n     \
                     rx_queue_1_xdp_drops: 42\n     tx_queue_0_xdp_xmit: 3\n";
        assert_eq!(sum_xdp_drops(stats), 742);
        assert_eq!(sum_xdp_drops("NIC statistics:\n"), 0);
    }

    /// Every frame dropped by the filter counts; a sliver lost on the link before it is
    /// reported beside the figures; more than the tolerance lost there floods again; frames
    /// nothing counted, or dropped by the other filter, end the run with a line naming them.
    #[test]
    fn every_frame_is_accounted_for() {
        let whole = flood(1_000, 0, 0);
        assert!(matches!(&whole, Ok(s) if s.link_lost == 0 && s.cpu_ns == 1_000.0));
        assert!(matches!(flood(990, 0, 10), Ok(s) if s.link_lost == 10));
        assert_eq!(kind(flood(989, 0, 11)), "retried");
        assert_eq!(kind(flood(500, 0, 500)), "retried");
        // Lost on the link and uncounted together past the tolerance: the flood did not
        // measure the filter at the rate asked.
        assert_eq!(kind(flood(985, 0, 6)), "retried");
        assert_eq!(kind(flood(995, 0, 0)), "counted");
        assert_eq!(kind(flood(990, 0, 0)), "counted");
        // More drops than frames: the counters count something else.
        assert_eq!(kind(flood(1_000, 0, 11)), "ends the run");
        assert_eq!(kind(flood(1_001, 0, 0)), "ends the run");
        assert_eq!(kind(flood(985, 0, 0)), "ends the run");
        assert_eq!(kind(flood(999, 1, 0)), "ends the run");
        assert_eq!(kind(flood(0, 0, 1_000)), "ends the run");
        let Err(Flood::Other(e)) = flood(985, 0, 0) else {
            unreachable!()
        };
        assert_eq!(
            e.to_string(),
            "flux_xdp: 1000 frames sent, 985 dropped, 0 dropped by the other filter, 0 lost on \
             the link, 15 unaccounted for"
        );
    }
}
