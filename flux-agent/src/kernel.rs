//! The kernel boundary: loading the eBPF object, the pin folder, attaching XDP and who owns the
//! hook, the ring-buffer records, the per-CPU counters, interfaces and routes (`netlink_route`),
//! interfaces that come and go (`link_watch`, `iface_states`) and whether pins are the attached
//! program's maps (`map_identity`).
//!
//! May touch: bpffs, netlink, the BPF syscalls (through aya). Holds no policy: what to block is
//! decided in `flux_detect::score` and `crate::enforce`.

pub mod counters;
pub mod iface_states;
pub mod interfaces;
pub mod link_watch;
pub mod loader;
pub mod map_identity;
pub mod netlink_route;
pub mod pins;
pub mod ring_records;
pub mod xdp_owner;
