//! Time to detect counted in lookups rather than minutes.
//!
//! Minutes measure the client's lookup schedule as much as the detector: a name looked up twice a
//! day is detected hours after its first response however good the model. Counting lookups
//! instead says how much evidence a detector needed once there was any.
//!
//! Definition (the one `flux-eval` reports):
//! - a **lookup** of an entity is a DNS response whose question name or an answer owner name
//!   belongs to the entity (one response counts once, however many of its names do);
//! - its **answer** is the set of A/AAAA addresses in the response's answer section (order and
//!   duplicates ignored: a round robin reordering its records is not a rotation); a response
//!   without any address has no answer and neither sets nor changes the entity's first answer;
//! - the entity's **first rotation** is its first lookup whose answer differs from the first
//!   answer it had;
//! - **TTD in lookups** is the number of the entity's lookups from the first rotation (counted
//!   as 1) up to and including the one at whose response the verdict came. 1 = detected on the
//!   first lookup that showed a different answer; 0 = detected before any rotation (one answer
//!   spanning many networks, or addresses other flux domains were shown to use).
//!
//! A verdict made while scoring a response that is not a lookup of the entity (a sweep of
//! watched keys, or a delegation naming it) counts the entity's lookups so far.

use std::net::IpAddr;

/// One entity's lookup count since its first rotation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LookupClock {
    /// Sorted, deduplicated addresses of the entity's first answer.
    first: Option<Vec<IpAddr>>,
    /// Lookups from the first rotation on, that one included; `None` before it.
    since_rotation: Option<u32>,
}

impl LookupClock {
    /// Records one lookup of the entity; `answer` as [`answer_set`] returns it.
    pub fn lookup(&mut self, answer: &[IpAddr]) {
        if let Some(n) = &mut self.since_rotation {
            *n = n.saturating_add(1);
            return;
        }
        if answer.is_empty() {
            return;
        }
        match &self.first {
            None => self.first = Some(answer.to_vec()),
            Some(first) if first.as_slice() != answer => self.since_rotation = Some(1),
            Some(_) => {}
        }
    }

    /// TTD in lookups for a verdict made now (see the module documentation).
    pub fn ttd(&self) -> u32 {
        self.since_rotation.unwrap_or(0)
    }

    /// Whether the entity's answer has changed at all yet.
    pub fn rotated(&self) -> bool {
        self.since_rotation.is_some()
    }
}

/// The answer of a response: its answer-section addresses, sorted and deduplicated.
pub fn answer_set(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = addrs.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(last: &[u8]) -> Vec<IpAddr> {
        answer_set(last.iter().map(|&b| IpAddr::from([192, 0, 2, b])))
    }

    #[test]
    fn eval_lookups_count_from_the_first_rotation() {
        let mut c = LookupClock::default();
        // No address yet: no first answer.
        c.lookup(&[]);
        assert_eq!((c.ttd(), c.rotated()), (0, false));
        c.lookup(&ips(&[1, 2]));
        // The same set in another order is not a rotation.
        c.lookup(&ips(&[2, 1, 2]));
        assert_eq!((c.ttd(), c.rotated()), (0, false));
        c.lookup(&[]);
        assert!(!c.rotated());
        c.lookup(&ips(&[3]));
        assert_eq!((c.ttd(), c.rotated()), (1, true));
        // Every later lookup counts, even one repeating the first answer or with no address.
        c.lookup(&ips(&[1, 2]));
        c.lookup(&[]);
        assert_eq!(c.ttd(), 3);
    }
}
