//! The kernel's clocks as userspace reads them, and converting a record's `ts_ns`
//! (`flux_common::RECORD_CLOCK_ID`, CLOCK_MONOTONIC as of the last tick) to wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `clock` (a `libc::CLOCK_*`) in nanoseconds.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// [`flux_common::RECORD_CLOCK_ID`] in nanoseconds: the clock a record's `ts_ns` and a query's
/// `sent_ns` are in. It never reads ahead of [`monotonic_ns`], and lags it by less than a tick.
pub fn record_clock_ns() -> u64 {
    clock_ns(flux_common::RECORD_CLOCK_ID)
}

/// Realtime minus monotonic, sampled once; refresh with [`MonoClock::resync`] to follow NTP steps.
#[derive(Clone, Copy, Debug)]
pub struct MonoClock {
    offset_ns: i128,
}

impl MonoClock {
    pub fn new() -> Self {
        let mono = monotonic_ns();
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real as i128 - mono as i128,
        }
    }

    pub fn resync(&mut self) {
        *self = Self::new();
    }

    /// Wall-clock time of a CLOCK_MONOTONIC reading, or of a record's `ts_ns` (the same clock
    /// at a tick's resolution).
    pub fn to_system_time(&self, ktime_ns: u64) -> SystemTime {
        let ns = (ktime_ns as i128 + self.offset_ns).max(0) as u64;
        UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

impl Default for MonoClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_clock_is_the_coarse_monotonic_clock() {
        assert_eq!(flux_common::RECORD_CLOCK_ID, libc::CLOCK_MONOTONIC_COARSE);
        let coarse = record_clock_ns();
        let fine = monotonic_ns();
        assert!(coarse <= fine, "{coarse} read ahead of {fine}");
        assert!(
            fine - coarse < 100_000_000,
            "a tick, not {} ns",
            fine - coarse
        );
    }

    #[test]
    fn now_maps_to_now() {
        let c = MonoClock::new();
        let t = c.to_system_time(monotonic_ns());
        let d = SystemTime::now()
            .duration_since(t)
            .unwrap_or_else(|e| e.duration());
        assert!(d < Duration::from_secs(5));
    }
}
