//! Enforcement: from a verdict to an entry in the maps the XDP program reads.
//!
//! - [`policy`]: monitor mode, expiry, renewal;
//! - [`rate_queue`]: the rate cap and the blocks waiting for it, by score;
//! - [`block_expiry`]: the expiry of an entry for a TTL, and what a re-add does to it;
//! - [`guard`]: what must never be blocked (this host's addresses, resolvers, gateways);
//! - [`record`]: **the write path**: every block and allowlist change, the state database first,
//!   then the maps;
//! - [`allow_snapshot`]: the allowlist maps copied into memory, to check a whole feed at once;
//! - [`maps`]: the pinned blocklist and allow maps. **This is where a map is written**, by the
//!   running agent and by the CLI alike, always through `record`;
//! - [`map_batch`]: batched reads and writes of the hash maps, for `maps` (a feed's room check
//!   and the start-up restore: a million keys in a few hundred syscalls).
//!
//! May touch: the state database and the pinned maps (through `record` and `maps` only).
//! Reads verdicts; never scores.

pub mod allow_snapshot;
pub mod block_expiry;
pub mod guard;
pub mod map_batch;
pub mod maps;
pub mod policy;
pub mod rate_queue;
pub mod record;
