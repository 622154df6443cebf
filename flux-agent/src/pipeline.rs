//! The pipeline: a source of DNS responses (the live ring buffer, or capture files), the clock
//! that stamps them, the one pipeline both feed (scorer, enforcer), and the event bus whose
//! subscribers (the sinks) receive everything that comes out.
//!
//! - [`flow`]: the pipeline itself, shared by both sources: observation -> scorer -> enforcer ->
//!   bus;
//! - [`events`]: the typed [`events::Event`], the JSON contract of `docs/events.md`;
//! - [`bus`]: publish once, every subscriber gets what it asked for; a slow sink drops its own
//!   events (counted) and never stalls the capture;
//! - [`sinks`]: the events file (`--events`) and the readable log;
//! - [`dns_json`]: the `dns` event's JSON line, written by hand (the events file's hot path);
//! - [`journal_sink`]: the verdict journal in the state database;
//! - [`scorer_memory`]: the scorer's snapshot in the state database, restored at start, saved
//!   every few minutes and at a clean stop;
//! - [`live`]: the running agent's source (ring buffer), its loop and the control queries;
//! - [`replay_source`]: capture files (and Zeek `dns.log`, dnstap files) as the source, their
//!   timestamps as the clock;
//! - [`dnstap_input`]: a resolver's dnstap, live over a unix socket or from a file;
//! - [`clock`]: kernel monotonic time to wall-clock time;
//! - [`recent`]: the last verdicts and actions, and the `status` control answer (`status`,
//!   `top`).
//!
//! May touch: the ring buffer (through `crate::kernel`), the scorer, the enforcer, the files and
//! streams the sinks write. New consumers subscribe to the bus; they do not edit the pipeline.

pub mod bus;
pub mod clock;
pub mod dns_json;
pub mod dnstap_input;
pub mod events;
pub mod flow;
pub mod journal_sink;
pub mod live;
pub mod recent;
pub mod replay_source;
pub mod scorer_memory;
pub mod sinks;
