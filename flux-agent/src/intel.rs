//! Threat intelligence in the agent: feeds (`flux-intel` parses and fetches them) turned into
//! blocks and matches.
//!
//! - [`feed_sync`]: one feed's fetch → parse → guard and allowlist filter → capacity check →
//!   `Store::apply_feed` (one transaction) → the maps (`enforce::record::Recorder::apply`); the
//!   background refresher of the running agent. Used by `flux-agent feed` and by `run`.
//! - [`feed_match`]: the loaded feeds as a lookup (addresses, networks, domains with a suffix
//!   walk) that names the feed a resolved name or its CNAME chain hits.
//!
//! May touch: the network and files named by a feed (fetch), the state database and the pinned
//! maps, only through `enforce::record` and `enforce::maps`. Never on the capture path: the
//! refresher has its own thread.

pub mod feed_match;
pub mod feed_sync;
