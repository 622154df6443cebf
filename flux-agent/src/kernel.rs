//! The kernel boundary: loading the eBPF object, the pin folder, attaching XDP and who owns the
//! hook, the ring-buffer records, the per-CPU counters, interfaces and routes (`netlink_route`).
//!
//! May touch: bpffs, netlink, the BPF syscalls (through aya). Holds no policy: what to block is
//! decided in `flux_detect::score` and `crate::enforce`.

pub mod counters;
pub mod interfaces;
pub mod loader;
pub mod netlink_route;
pub mod pins;
pub mod ring_records;
pub mod xdp_owner;
