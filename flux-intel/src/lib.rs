//! Threat-intelligence feeds for flux-agent: the formats people publish them in, read into one
//! deduplicated set of names, addresses and networks, and fetching them from a file or a URL.
//!
//! - [`feed_formats`]: hosts, plain, abp, dnsmasq, csv, netset, misp, stix, and `auto`
//!   detection (its rule is in that module's documentation and in the README).
//! - [`indicator`]: one value made canonical (defanged forms, URLs, IDN, validation).
//! - [`feed_set`]: the result ([`FeedSet`], [`Warning`]) and the fatal errors ([`FeedError`]).
//! - [`feed_fetch`]: a path, or a URL over HTTP(S) with `If-Modified-Since`/`ETag`.
//!
//! A library only: the agent's `feed` commands and the state database use it.

pub mod feed_fetch;
pub mod feed_formats;
pub mod feed_set;
pub mod indicator;

pub use feed_formats::{CsvColumn, FeedFormat, FormatChoice, ParseOptions, parse_feed};
pub use feed_set::{FeedError, FeedSet, Parsed, Warning};
