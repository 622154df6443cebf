//! Enforcement: from a verdict to an entry in the maps the XDP program reads.
//!
//! - [`policy`]: guards (what must never be blocked), the rate cap, monitor mode, expiry;
//! - [`maps`]: the pinned blocklist and allow maps. **This is where a map is written**, by the
//!   running agent and by the CLI alike.
//!
//! May touch: the pinned maps (through `maps` only). Reads verdicts; never scores.

pub mod maps;
pub mod policy;
