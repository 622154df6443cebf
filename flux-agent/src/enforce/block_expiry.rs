//! When a block expires: the expiry written into an entry for a TTL, and what re-adding a
//! block over an existing one does to its expiry (for the CLI's report). Pure arithmetic; the
//! maps are written in `crate::enforce::maps`.

use std::time::Duration;

/// `BlockEntry::expires_ns` of a block made at `now_boot` for `ttl` (`None`: never, 0). A TTL
/// past the clock's range saturates (about 584 years: never, in practice) instead of wrapping
/// to a short one.
pub fn expiry_ns(now_boot: u64, ttl: Option<Duration>) -> u64 {
    match ttl {
        None => 0,
        Some(d) => {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            now_boot.saturating_add(ns).max(1)
        }
    }
}

/// What re-adding a block over an entry already there changed, for the CLI's report: the
/// expiry follows the new request (no `--ttl`: until removed), and the report says so.
pub fn renewal_note(previous_expires_ns: u64, ttl: Option<Duration>) -> &'static str {
    match (previous_expires_ns != 0, ttl.is_some()) {
        (true, true) => "already there: expiry and reason renewed",
        (true, false) => {
            "already there: now permanent (it had an expiry; no --ttl given), reason renewed"
        }
        (false, true) => "already there: now expires (it was permanent), reason renewed",
        (false, false) => "already there: still permanent, reason renewed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_ttl_saturates_instead_of_wrapping() {
        let now = 5_000_000_000u64;
        assert_eq!(expiry_ns(now, None), 0, "never");
        assert_eq!(
            expiry_ns(now, Some(Duration::from_secs(1))),
            now + 1_000_000_000
        );
        // 2^64 ns and more: `as u64` would wrap these to a few seconds or to 0 ("never").
        for huge in [
            Duration::from_nanos(u64::MAX) + Duration::from_secs(3),
            Duration::from_secs(u64::MAX),
            Duration::from_secs(1 << 40),
        ] {
            assert_eq!(expiry_ns(now, Some(huge)), u64::MAX, "{huge:?}");
        }
    }

    #[test]
    fn renewal_says_what_happened_to_the_expiry() {
        let day = Some(Duration::from_secs(86_400));
        assert!(renewal_note(42, None).contains("now permanent"));
        assert!(renewal_note(42, day).contains("expiry and reason renewed"));
        assert!(renewal_note(0, day).contains("now expires"));
        assert!(renewal_note(0, None).contains("still permanent"));
    }
}
