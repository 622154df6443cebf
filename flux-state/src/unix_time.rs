//! Times as the database keeps them: whole Unix seconds (`INTEGER`), wall clock. The pinned maps
//! keep `CLOCK_BOOTTIME` nanoseconds instead; the agent converts when it writes a map entry.
//! Pure arithmetic, saturating at the ends of `i64` instead of wrapping.

use std::time::{Duration, SystemTime};

/// Unix seconds of `t` (negative before 1970).
pub fn to_unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The time of Unix second `s`; one past `SystemTime`'s range saturates.
pub fn from_unix(s: i64) -> SystemTime {
    let d = Duration::from_secs(s.unsigned_abs());
    let t = if s >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_whole_seconds() {
        for s in [0, 1, 1_700_000_000, -5] {
            assert_eq!(to_unix(from_unix(s)), s);
        }
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(to_unix(t), 1, "truncated to the second");
    }
}
