//! The pipeline: a source of DNS responses (live ring buffer or capture files), the clock that
//! stamps them, the scorer, and the sinks that receive what comes out.
//!
//! - [`live`]: the running agent's loop (ring buffer -> observation -> scorer -> enforcer);
//! - [`replay_source`]: capture files through the same parser and scorer;
//! - [`clock`]: kernel monotonic time to wall-clock time.
//!
//! May touch: the ring buffer (through `crate::kernel`), the scorer, the enforcer, output files.

pub mod clock;
pub mod live;
pub mod replay_source;
