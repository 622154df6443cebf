//! flux-agent: an eBPF/XDP agent that detects and blocks DNS fast flux. Everything here touches
//! the kernel or the operator; the decisions themselves are made in `flux-detect`.
//!
//! Where things happen (each folder opens with what lives there and what it may touch):
//! - [`kernel`]: loading `flux-ebpf`, pins, attaching XDP, the ring-buffer records, counters,
//!   interfaces. **A packet enters** in `flux-ebpf/src/main.rs` and reaches userspace as a
//!   [`kernel::ring_records::Capture`].
//! - [`pipeline`]: the run loop that turns captures into observations, feeds the scorer
//!   (`flux_detect::score`, **where a verdict is made**) and hands events to their sinks; the
//!   replay source and the clock.
//! - [`enforce`]: the policy from verdict to block, and the pinned maps (**where a map is
//!   written**, [`enforce::maps`]).
//! - [`control`]: the running agent's control socket (`explain`).
//! - [`ops`]: what operators' tools read from a running agent: Prometheus metrics
//!   (`run --metrics`).
//! - [`config`]: the configuration file of `run` (`flux-agent.toml`): keys, errors with their
//!   line and column, and how the file merges under the command line.
//! - [`intel`]: threat-intelligence feeds: fetched, parsed, filtered by the guard and written
//!   through `enforce::record`; and the feed lookup for matches.
//!
//! - [`fleet`]: agents sharing signed observations and verdicts over NATS JetStream, and the
//!   fleet scorer that judges keys on the union (docs/fleet.md).
//!
//! The kernel side is `flux-ebpf`; records, keys and constants shared with it are in
//! `flux-common`.

/// The allocator of every binary that links the agent (the agent itself, its benches and
/// integration tests, so that what is measured is what ships): mimalloc instead of glibc's
/// malloc. Why, measured (docs/benchmarks.md, "Allocator"):
/// - **Memory.** A tracked name is a handful of small allocations (its state, its address
///   entries, its name when longer than 24 bytes); glibc adds an 8-byte header to each and
///   rounds to 16, mimalloc keeps size classes without headers: 1,000,000 names take 198 bytes
///   each instead of 250 (`scorer-bench`), the same keys and verdicts.
/// - **The live agent's threads.** A response's event is allocated on the capture thread and
///   often freed last by a sink thread. glibc's per-thread cache then fills on the sink side and
///   the capture thread falls through to the arena for every name it parses (`_int_malloc` was
///   15% of the agent's samples under `ringbuf-load`); mimalloc hands a block freed elsewhere
///   back to the page of the thread that owns it. Agent CPU per response at 30,000 responses/s,
///   two alternated runs each: 9.8 and 11.7 µs against 12.3 and 12.7 µs.
///
/// Called through its plain entry points for ordinary alignments ([`allocator`] says why).
///
/// Not under `cargo fuzz` (`cfg(fuzzing)`): the fuzz targets keep the system allocator so that
/// AddressSanitizer sees every allocation.
#[cfg(not(fuzzing))]
#[global_allocator]
static GLOBAL: allocator::FluxAlloc = allocator::FluxAlloc;

pub mod allocator;
pub mod config;
pub mod control;
pub mod enforce;
pub mod fleet;
pub mod intel;
pub mod kernel;
pub mod ops;
pub mod pipeline;

/// The compiled flux-ebpf object, built by aya-build from `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flux-ebpf"));
