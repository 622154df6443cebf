//! Labelled evaluation data for the fast-flux scorer.
//!
//! - [`scenarios`]: a seeded, deterministic generator of DNS responses as a vantage point behind
//!   a caching resolver sees them, for flux networks and for the legitimate services that look
//!   like them (CDNs, cloud load balancers, round robin, dynamic DNS, the NTP pool, ...), with
//!   every address drawn from the real ASN database's prefixes.
//! - [`dig2009`]: the real 2009 fast-flux `dig` output converted to pcap, labelled by evidence.
//! - [`labels`]: the `labels.tsv` format both write and the matching rule for verdicts.
//! - [`lookups`]: time to detect counted in lookups after the first rotation.
//! - [`pcapw`]: the pcap writer both use.
//! - [`rescore_log`]: the baselines' first flags and each key's last score, from the scorer's
//!   re-score tap.
//! - [`seeds`]: the generator seeds the scorer may be tuned on, and the held-out ones it may not.

pub mod dig2009;
pub mod labels;
pub mod lookups;
pub mod pcapw;
pub mod rescore_log;
pub mod scenarios;
pub mod seeds;
