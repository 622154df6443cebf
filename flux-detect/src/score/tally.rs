//! A small counting table for the features: the distinct values among a key's addresses
//! (networks, countries, blocks, prefixes) and how often each occurs. Touches nothing.

use super::params::{MAX_GLUE, MAX_IPS_PER_KEY};

/// The distinct values among at most `MAX`, and how often each occurred: an open-addressing
/// table of `SLOTS` slots, without allocation. Callers add at most `MAX` values between clears
/// (a key's addresses, each once per computation). Past that the counts are wrong, but
/// memory stays sound and a cleared tally is a new one: new distinct values past `MAX` are
/// dropped, a count past 255 wraps (no check on the hot path: a `saturating_add` there cost 3%
/// of the churn stream's replay; debug builds assert), and the entropy stays a number. It
/// replaced sorting a buffer per feature, which was the largest single cost of a re-score.
///
/// Three sizes: [`Tally`] for any key, [`SmallTally`] for a key of a few addresses, and
/// [`GlueTally`] for one name server's glue. Every features computation uses five of them, and
/// the full size is 2.8 KB each, so a key of one or two addresses (most keys of real resolver
/// traffic) would clear 14 KB per window, which showed in replay profiles (at 7 KB, before the
/// tables grew to four slots a value). All count the same values in the same first-seen order,
/// so which one a caller picks changes nothing it reads, as long as it adds at most `MAX`
/// values. The scorer keeps one set of the two key sizes and clears it ([`Counting::clear`],
/// `features::Tallies`); a glue tally is made per host.
pub(super) struct TallyOf<const SLOTS: usize, const MAX: usize> {
    keys: [u32; SLOTS],
    /// 0 marks a free slot.
    counts: [u8; SLOTS],
    /// Occupied slots in first-seen order, so reading the counts skips the free ones.
    used: [u16; MAX],
    distinct: usize,
    /// The slot of the value added last, and that value (meaningful once `distinct > 0`).
    last: usize,
    last_v: u32,
}

/// A tally for any key: [`MAX_IPS_PER_KEY`] values, four times as many slots so probes stay
/// short. The probe's branch (free slot, same value, or next) is the replay's most mispredicted
/// one: at twice as many slots a new value found its first slot taken up to half the time. Four
/// times as many slots cut the churn stream's mispredicted branches in `Acc::add` from 73 to 58
/// million and made its replay 2-4% faster in alternated runs; the tables still fit L1 twice.
pub(super) type Tally = TallyOf<{ 4 * MAX_IPS_PER_KEY }, MAX_IPS_PER_KEY>;

/// Most addresses a key may hold for its features to use [`SmallTally`].
pub(super) const SMALL_TALLY_MAX: usize = 8;

/// A tally for a key of at most [`SMALL_TALLY_MAX`] addresses.
pub(super) type SmallTally = TallyOf<{ 4 * SMALL_TALLY_MAX }, SMALL_TALLY_MAX>;

/// A tally of one name server's glue networks: a host keeps at most [`MAX_GLUE`] addresses
/// (`KeyState::add_ns` evicts past it, a snapshot holding more is refused), and the features
/// make one per host per window, so the full tally's 2.8 KB would be written for each.
pub(super) type GlueTally = TallyOf<{ 4 * MAX_GLUE }, MAX_GLUE>;

/// `c ln c` for every count a tally holds (a `u8`), 0 for 0 and 1.
static X_LN_X: std::sync::LazyLock<[f64; 256]> = std::sync::LazyLock::new(|| {
    let mut t = [0.0; 256];
    for (c, x) in t.iter_mut().enumerate().skip(2) {
        let c = c as f64;
        *x = c * c.ln();
    }
    t
});

/// What the features read of a tally, whatever its size (`features.rs` builds a window's
/// tallies with either).
pub(super) trait Counting {
    fn new() -> Self;
    /// Empties the tally, as [`Counting::new`] would make it, in time proportional to the
    /// distinct values it held (the full tally's `new` writes 2.8 KB; see `features::Tallies`).
    fn clear(&mut self);
    fn add(&mut self, v: u32);
    fn distinct(&self) -> u32;
    /// Values that occurred exactly once, and how often the most frequent value occurred (0
    /// when empty): one walk over the counts for both.
    fn lone_and_most(&self) -> (u32, u32);
    /// Shannon entropy of the values over the distinct ones, divided by its maximum (the log
    /// of the number of values); 0 (never -0) for fewer than two values or one distinct value.
    fn normalised_entropy(&self) -> f64;
}

impl<const SLOTS: usize, const MAX: usize> TallyOf<SLOTS, MAX> {
    /// Checked where the type is used: slot numbers fit in the `u16` of `used`, the table is a
    /// power of two (the probe wraps with a mask) and keeps a free slot for every value, and a
    /// count of `MAX` fits its `u8`.
    const SHAPE_OK: () =
        assert!(SLOTS.is_power_of_two() && SLOTS <= 1 << 16 && 2 * MAX <= SLOTS && MAX <= 255);

    fn counts(&self) -> impl Iterator<Item = u8> + '_ {
        self.used
            .iter()
            .take(self.distinct)
            .filter_map(|&i| self.counts.get(usize::from(i)).copied())
    }
}

impl<const SLOTS: usize, const MAX: usize> Counting for TallyOf<SLOTS, MAX> {
    fn new() -> Self {
        let () = Self::SHAPE_OK;
        Self {
            keys: [0; SLOTS],
            counts: [0; SLOTS],
            used: [0; MAX],
            distinct: 0,
            last: 0,
            last_v: 0,
        }
    }

    fn clear(&mut self) {
        // A slot is free when its count is 0: the keys left behind are never read (`add`
        // takes a free slot whatever key it holds, and reads `last` only once a value is in).
        for &i in self.used.iter().take(self.distinct) {
            if let Some(c) = self.counts.get_mut(usize::from(i)) {
                *c = 0;
            }
        }
        self.distinct = 0;
        self.last = 0;
    }

    // Inlined into `Acc::add`'s loop (five calls per address). The compiler did so on its own
    // only while `add` stayed small: a version with a little more work in it was called out of
    // line, and `Acc::add` with its calls went from 7.6 to 9.4 billion instructions on the
    // churn stream.
    #[inline(always)]
    // It counts no values (the entropy sums the counts instead) and checks no bound on them
    // (see the type): that was a fifth of its instructions on the churn stream.
    fn add(&mut self, v: u32) {
        // A key's addresses come in runs sharing a value (one ASN, one country, one block):
        // the slot of the last value answers those without hashing and probing, which was most
        // of `Acc::add`, the largest single cost of a re-score. The value is kept beside its
        // slot, and the slot masked into the table, so this path reads no table but the count
        // and checks no bound.
        if self.distinct > 0
            && v == self.last_v
            && let Some(c) = self.counts.get_mut(self.last & (SLOTS - 1))
        {
            debug_assert!(*c < u8::MAX, "more values than a tally holds");
            *c = c.wrapping_add(1);
            return;
        }
        // Fibonacci hashing: the top bits of the product index the table.
        let mut i = (v.wrapping_mul(0x9e37_79b9) >> (32 - SLOTS.trailing_zeros())) as usize;
        // At most MAX of the slots are ever taken, so a free one is always found.
        for _ in 0..SLOTS {
            match (self.counts.get_mut(i), self.keys.get_mut(i)) {
                (Some(c), Some(k)) if *c == 0 => {
                    // `MAX` distinct values already: a new one is dropped, so every slot in
                    // use stays in `used` and `clear` frees them all.
                    let Some(u) = self.used.get_mut(self.distinct) else {
                        return;
                    };
                    *u = i as u16;
                    *c = 1;
                    *k = v;
                    self.distinct += 1;
                    self.last = i;
                    self.last_v = v;
                    return;
                }
                (Some(c), Some(k)) if *k == v => {
                    debug_assert!(*c < u8::MAX, "more values than a tally holds");
                    *c = c.wrapping_add(1);
                    self.last = i;
                    self.last_v = v;
                    return;
                }
                _ => i = (i + 1) & (SLOTS - 1),
            }
        }
    }

    fn distinct(&self) -> u32 {
        u32::try_from(self.distinct).unwrap_or(u32::MAX)
    }

    fn lone_and_most(&self) -> (u32, u32) {
        let (mut lone, mut most) = (0u32, 0u8);
        for c in self.counts() {
            lone += u32::from(c == 1);
            most = most.max(c);
        }
        (lone, u32::from(most))
    }

    fn normalised_entropy(&self) -> f64 {
        // One value (however often): exactly 0. The sum below could land a rounding error
        // below it, and the sum this replaced gave -0.0 (written "-0.0" in verdicts).
        if self.distinct < 2 {
            return 0.0;
        }
        // H = -sum (c/n) ln(c/n) = ln n - (sum c ln c) / n, with c ln c read from a table: the
        // counts are bytes, and a logarithm per distinct value was 5% of the churn stream's
        // replay (a key of 128 addresses has about as many prefixes, in two windows).
        let table = &*X_LN_X;
        // The values added: the sum of the counts, exact (`add` does not count them). At
        // least two with two distinct values, unless a caller overfilled the tally and a count
        // wrapped: then 0, not NaN.
        let n = self.counts().map(usize::from).sum::<usize>();
        if n < 2 {
            return 0.0;
        }
        let n = n as f64;
        let s: f64 = self
            .counts()
            .map(|c| table.get(usize::from(c)).copied().unwrap_or(0.0))
            .sum();
        let ln_n = n.ln();
        (ln_n - s / n) / ln_n
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::score::{AddrInfo, KeyState, WINDOWS};

    fn tally_of(vals: &[u32]) -> Tally {
        let mut t = Tally::new();
        vals.iter().for_each(|v| t.add(*v));
        t
    }

    #[test]
    fn lone_blocks_are_counted() {
        let tally = |vals: &[u32]| {
            let t = tally_of(vals);
            (t.distinct(), t.lone_and_most().0)
        };
        assert_eq!(tally(&[]), (0, 0));
        assert_eq!(tally(&[1, 1, 2, 3, 3, 3, 4]), (4, 2));
        let farm = |last: u8, c: u8| AddrInfo {
            ip: AddrInfo::ip_bytes(IpAddr::from([192, 0, c, last])),
            ..AddrInfo::default()
        };
        let mut k = KeyState::new(0);
        k.add_answer(0, 60, &[farm(1, 2), farm(2, 2), farm(3, 7)]);
        let f = k.features(0, WINDOWS[0]);
        assert_eq!((f.distinct_subnets, f.lone_subnets), (2, 1));
        assert_eq!(f.distinct_prefixes, 1, "one /16");
        for a in [farm(1, 2), farm(9, 255)] {
            assert_eq!(AddrInfo::prefix_of_subnet(a.subnet()), a.prefix());
        }
        let v6 = AddrInfo {
            ip: AddrInfo::ip_bytes("2001:db8::1".parse().unwrap()),
            ..AddrInfo::default()
        };
        assert_eq!(AddrInfo::prefix_of_subnet(v6.subnet()), v6.prefix());
    }

    #[test]
    fn entropy_is_normalised() {
        let tally = |vals: &[u32]| {
            let t = tally_of(vals);
            (t.distinct(), t.normalised_entropy())
        };
        assert_eq!(tally(&[1, 1, 1, 1]), (1, 0.0));
        let (d, h) = tally(&[1, 2, 3, 4]);
        assert_eq!(d, 4);
        assert!((h - 1.0).abs() < 1e-9);
    }

    /// The entropy from the `c ln c` table is the textbook sum over `p ln p`, to rounding, for
    /// counts up to the most a tally holds.
    #[test]
    fn entropy_from_the_table_is_the_direct_sum() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..3_000 {
            let n = 2 + round % (MAX_IPS_PER_KEY - 1);
            let vals: Vec<u32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % (1 + round as u64 % 40)) as u32
                })
                .collect();
            let t = tally_of(&vals);
            let total = vals.len() as f64;
            let direct: f64 = t
                .counts()
                .map(|c| {
                    let p = f64::from(c) / total;
                    -p * p.ln()
                })
                .sum::<f64>()
                / total.ln();
            let got = t.normalised_entropy();
            assert!(
                (got - direct).abs() < 1e-12,
                "round {round}: {got} {direct}"
            );
        }
        // One value (any number of times): 0, not -0.0; and 128 values once each.
        for n in 1..=MAX_IPS_PER_KEY {
            let h = tally_of(&vec![7; n]).normalised_entropy();
            assert!(h == 0.0 && h.is_sign_positive(), "{n}: {h}");
        }
        let all: Vec<u32> = (0..MAX_IPS_PER_KEY as u32).collect();
        assert!((tally_of(&all).normalised_entropy() - 1.0).abs() < 1e-15);
    }

    /// A cleared tally counts what a new one counts, whatever it held (values that collide,
    /// a full one, runs that take the last-slot shortcut).
    #[test]
    fn a_cleared_tally_is_a_new_one() {
        let mut x = 0x0fed_cba9_8765_4321u64;
        let mut reused = Tally::new();
        for round in 0..500 {
            // Every fifth round adds more values than callers do, from more distinct ones than
            // the tally holds (few repeats, so no count passes 255); the others up to its size.
            let (n, range) = if round % 5 == 4 {
                (round % 300, 1000)
            } else {
                (round % (MAX_IPS_PER_KEY + 1), 1 + round as u64 % 61)
            };
            let vals: Vec<u32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ((x % range) as u32) << (round % 3 * 8)
                })
                .collect();
            reused.clear();
            vals.iter().for_each(|v| reused.add(*v));
            if n > MAX_IPS_PER_KEY {
                // Past what callers add: nothing to compare, but nothing may break, and the
                // next round's clear must still free every slot.
                assert!(
                    reused.distinct() as usize <= MAX_IPS_PER_KEY,
                    "round {round}"
                );
                let _ = (reused.lone_and_most(), reused.normalised_entropy());
                continue;
            }
            let fresh = tally_of(&vals);
            assert_eq!(reused.distinct(), fresh.distinct(), "round {round}");
            assert_eq!(
                reused.lone_and_most(),
                fresh.lone_and_most(),
                "round {round}"
            );
            assert_eq!(
                reused.normalised_entropy().to_bits(),
                fresh.normalised_entropy().to_bits(),
                "round {round}"
            );
        }
    }

    /// The tally counts exactly what sorting did, for values that collide in its table, up to
    /// its capacity (callers add no more: see [`TallyOf`]).
    #[test]
    fn tally_matches_sorting() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for round in 0..2_000 {
            let n = round % (MAX_IPS_PER_KEY + 1);
            let range = 1 + (round % 97) as u64;
            let vals: Vec<u32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Multiples of 256 share their low bits; the table must still tell them apart.
                    ((x % range) as u32) << (round % 3 * 8)
                })
                .collect();
            let mut kept = vals.clone();
            // Sorted input too: runs of one value take the last-slot shortcut of `add`.
            let t = if round % 2 == 0 {
                tally_of(&vals)
            } else {
                let mut sorted = vals.clone();
                sorted.sort_unstable();
                tally_of(&sorted)
            };
            kept.sort_unstable();
            let mut runs: Vec<usize> = Vec::new();
            for (i, v) in kept.iter().enumerate() {
                if i == 0 || kept[i - 1] != *v {
                    runs.push(0);
                }
                *runs.last_mut().unwrap() += 1;
            }
            assert_eq!(t.distinct() as usize, runs.len());
            let (lone, most) = t.lone_and_most();
            assert_eq!(lone as usize, runs.iter().filter(|r| **r == 1).count());
            assert_eq!(most as usize, runs.iter().copied().max().unwrap_or(0));
        }
    }
}
