//! Running the agent in production, beside the capture: what an operator's tools read from it.
//! Today the Prometheus metrics (`run --metrics ADDR`): [`metrics`] holds the registry and the
//! metric families (fed by a bus subscription, the kernel counters read at scrape time), and
//! [`metrics_http`] serves them on `/metrics` from a thread of its own (`metrics_tests.rs`:
//! the unit tests of `metrics.rs`).
//!
//! [`blocklist_census`] counts the pinned blocklists for them on its own thread.
//!
//! May touch: the event bus (as a subscriber), the pinned `COUNTERS` and `BLOCKED_*` maps (read
//! only), one TCP listener. Decides nothing and writes no map.

pub mod blocklist_census;
pub mod metrics;
pub mod metrics_http;
