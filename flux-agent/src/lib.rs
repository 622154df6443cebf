//! flux-agent: an eBPF/XDP agent that detects and blocks DNS fast flux.
//!
//! Where things happen:
//! - [`loader`]: loading `flux-ebpf`, pinning maps, attaching XDP (and `--force`).
//! - [`agent`]: the run loop; ring buffer to [`capture::Observation`] to the event sink.
//! - [`dns`]: parsing DNS responses with hickory-proto.
//! - [`stats`]: the kernel's per-CPU counters, read back from the pins.
//!
//! The kernel side is `flux-ebpf/src/main.rs`; shared layouts are in `flux-common`.

pub mod agent;
pub mod allowlist;
pub mod blocklist;
pub mod capfile;
pub mod capture;
pub mod clock;
pub mod control;
pub mod dns;
pub mod enforce;
pub mod enrich;
pub mod iface;
pub mod loader;
pub mod pins;
pub mod replay;
pub mod score;
pub mod stats;
pub mod xdp_owner;

/// The compiled flux-ebpf object, built by aya-build from `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flux-ebpf"));
