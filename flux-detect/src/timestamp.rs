//! The one timestamp format of every event and readable line: RFC 3339, UTC, microseconds
//! (`2023-08-05T07:12:12.000000Z`). Kept here, beside the scorer whose verdicts carry it, so the
//! agent's events and the scorer's verdicts cannot drift apart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serializer;

/// The last second the format can show, 9999-12-31T23:59:59Z: RFC 3339 years have four digits.
const LAST_SECOND: u64 = 253_402_300_799;

/// `t` as the event timestamp text, for `Display` lines. A time the format cannot show is
/// clamped into its range (1970-01-01 to 9999-12-31): humantime panics on a time before 1970
/// and fails after 9999 (and serde_json's `collect_str` panics on that failure), and a capture
/// file's stamps are whoever wrote it's to choose.
pub fn rfc3339(t: SystemTime) -> humantime::Rfc3339Timestamp {
    let last = UNIX_EPOCH + Duration::new(LAST_SECOND, 999_999_999);
    humantime::format_rfc3339_micros(t.clamp(UNIX_EPOCH, last))
}

/// Serde `serialize_with` for a `SystemTime` field of an event.
pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&rfc3339(*t))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn times_out_of_the_format_are_clamped_never_a_panic() {
        let before = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(rfc3339(before).to_string(), "1970-01-01T00:00:00.000000Z");
        let after = UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(rfc3339(after).to_string(), "9999-12-31T23:59:59.999999Z");
        // Through serde too: its `collect_str` panicked on the formatter's error.
        #[derive(serde::Serialize)]
        struct T(#[serde(serialize_with = "serialize")] SystemTime);
        assert_eq!(
            serde_json::to_string(&T(after)).unwrap(),
            "\"9999-12-31T23:59:59.999999Z\""
        );
    }

    #[test]
    fn microseconds_utc() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_691_219_532_123_456_789);
        assert_eq!(rfc3339(t).to_string(), "2023-08-05T07:12:12.123456Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
