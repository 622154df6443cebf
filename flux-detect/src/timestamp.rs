//! The one timestamp format of every event and readable line: RFC 3339, UTC, microseconds
//! (`2023-08-05T07:12:12.000000Z`). Kept here, beside the scorer whose verdicts carry it, so the
//! agent's events and the scorer's verdicts cannot drift apart.

use std::time::SystemTime;

use serde::Serializer;

/// `t` as the event timestamp text, for `Display` lines.
pub fn rfc3339(t: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_micros(t)
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
    fn microseconds_utc() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_691_219_532_123_456_789);
        assert_eq!(rfc3339(t).to_string(), "2023-08-05T07:12:12.123456Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
