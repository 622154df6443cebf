//! The window tallies of a key with many addresses, kept between its scores and moved by what
//! changed instead of refilled from every address (`features.rs` reads them; `key_state.rs`
//! keeps them beside the addresses they count). Touches only its own state.
//!
//! A key of 128 addresses is re-scored on every new answer (at most every 30 s once busy), and
//! refilling five tallies per window from every address was over a third of the churn stream's
//! replay. Between two scores
//! a few addresses arrive or leave and a few move between windows (seen again, or aged); only
//! those change a count here.

use super::{
    addr_info::AddrInfo,
    key_state::IpEntry,
    params::{MAX_IPS_PER_KEY, WINDOWS},
    tally::{normalised_entropy, x_ln_x},
};

/// The values a key's addresses are tallied by, in this order: ASN, network, country, block
/// (`AddrInfo::subnet`) and prefix. Shared with the tallies filled by a walk (`features.rs`),
/// so both count the same things.
pub(super) const ATTRS: usize = 5;
pub(super) const ASN: usize = 0;
pub(super) const NETWORK: usize = 1;
pub(super) const COUNTRY: usize = 2;
pub(super) const SUBNET: usize = 3;
pub(super) const PREFIX: usize = 4;

/// What an address is tallied by ([`ATTRS`]); `None` where it is unknown (ASN, network or
/// country 0), which no tally counts.
#[inline(always)]
pub(super) fn tallied(e: &IpEntry) -> [Option<u32>; ATTRS] {
    let a = &e.addr;
    let subnet = a.subnet();
    [
        (a.asn != 0).then_some(a.asn),
        (a.network != 0).then_some(a.network),
        (a.country != [0, 0]).then(|| u32::from(u16::from_be_bytes(a.country))),
        Some(subnet),
        Some(AddrInfo::prefix_of_subnet(subnet)),
    ]
}

const W: usize = WINDOWS.len();
/// The band of an entry counted in no window (see [`Counted::band`]).
const OUT: u8 = W as u8;
/// The band of an entry appended since the last update: not coded yet (its codes are
/// [`NO_CODE`]). An address is coded at the first score that finds it, not when it arrives: a
/// busy key is re-scored at most every `params::BUSY_RESCORE_SECS`, and coding every address
/// on arrival cost the resolver stream's replay 5%, for addresses most of which were evicted
/// before that score.
const UNCODED: u8 = OUT + 1;
/// The code of a value not tallied (`None` in [`tallied`]).
const NO_CODE: u8 = u8::MAX;
// Codes are below MAX_IPS_PER_KEY (one per distinct value held, and `Interned::free` has a bit
// for each), so never NO_CODE; bands fit.
const _: () = assert!(MAX_IPS_PER_KEY <= 128 && W < 8);

/// The tallies of one key across its windows (nested: window `w` holds every entry seen since
/// its cutoff, so an entry counted in window `w` is counted in every longer one).
#[derive(Clone, Debug, Default)]
pub(super) struct Live {
    /// Per entry of the key's addresses, in their order.
    entries: Vec<Counted>,
    attrs: [Interned; ATTRS],
}

#[derive(Clone, Copy, Debug)]
struct Counted {
    /// The code of each value the address is tallied by ([`NO_CODE`] where none).
    codes: [u8; ATTRS],
    /// The shortest window the address was in at the last update ([`OUT`] for none), or
    /// [`UNCODED`].
    band: u8,
}

/// The distinct values of one attribute among the key's addresses, each under a small code.
#[derive(Clone, Debug, Default)]
struct Interned {
    /// The value under each code; a code is held once per entry with that value (`refs`), and
    /// a code no entry holds keeps its old value until a new one reuses it: a value is under
    /// one code at most.
    vals: Vec<u32>,
    refs: Vec<u8>,
    /// A bit per code no entry holds (`refs` 0): a new value takes the lowest.
    free: u128,
    /// The code held last.
    last: u8,
    /// Per code, the entries counted in each window holding it.
    counts: Vec<[u8; W]>,
    /// Per window, the codes counted in it at least once, the entries counted (the sum of
    /// the counts), and the sum of [`x_ln_x`] of the counts: the entropy's sums, kept exactly
    /// (integers) as the counts move, so reading the entropy walks nothing. A window counts
    /// at most `MAX_IPS_PER_KEY` entries, so the sum is below 128 ln 128 (622) times the
    /// fixed point's 2^52, under 2^62.
    distinct: [u32; W],
    total: [u32; W],
    xlnx: [u64; W],
}

/// What the features read of a window's tallies.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Readings {
    pub distinct: [u32; ATTRS],
    pub lone_subnets: u32,
    pub subnet_ips_max: u32,
    pub prefix_entropy: f64,
}

/// What an update found of each window's entries: how many, and the oldest sighting.
pub(super) struct Span {
    pub entries: [u32; W],
    pub oldest: [u32; W],
}

impl Interned {
    /// The code of `v`, held once more; `None` past 128 codes (more distinct values than a key
    /// holds addresses: cannot happen).
    fn hold(&mut self, v: u32) -> Option<u8> {
        // The code held last first: an answer's addresses often share their network, country
        // and prefix.
        let last = usize::from(self.last);
        let found = match self.vals.get(last) {
            Some(x) if *x == v => Some(last),
            _ => find(&self.vals, v),
        };
        let i = match found {
            Some(i) => i,
            None if self.free != 0 => {
                let i = self.free.trailing_zeros() as usize;
                *self.vals.get_mut(i)? = v;
                i
            }
            None => {
                self.vals.push(v);
                self.refs.push(0);
                self.counts.push([0; W]);
                self.vals.len() - 1
            }
        };
        let code = u8::try_from(i).ok().filter(|c| *c < 128)?;
        let r = self.refs.get_mut(i)?;
        if *r == 0 {
            self.free &= !(1u128 << code);
        }
        *r = r.checked_add(1)?;
        self.last = code;
        Some(code)
    }

    /// Gives back one hold of `code` (its entry is counted in no window).
    fn release(&mut self, code: u8) {
        if let Some(r) = self.refs.get_mut(usize::from(code)) {
            *r = r.saturating_sub(1);
            if *r == 0 {
                self.free |= 1u128 << (code & 127);
            }
        }
    }

    /// Moves one entry holding `code` from band `from` to band `to`; `entropy`: keeps the
    /// entropy's sum (read of the prefixes only).
    #[inline(always)]
    fn shift(&mut self, code: u8, from: u8, to: u8, entropy: bool) {
        let Some(counts) = self.counts.get_mut(usize::from(code)) else {
            return;
        };
        let windows = counts
            .iter_mut()
            .zip(&mut self.distinct)
            .zip(&mut self.total)
            .zip(&mut self.xlnx);
        for (w, (((c, distinct), total), xlnx)) in windows.enumerate() {
            let (was, is) = (usize::from(from) <= w, usize::from(to) <= w);
            if was == is {
                continue;
            }
            // Out of the sum at the old count, in at the new one; exact, and the old term is
            // in the sum, so it never goes below 0.
            if entropy {
                *xlnx = xlnx.saturating_sub(x_ln_x(*c));
            }
            if was {
                *c = c.saturating_sub(1);
                *distinct = distinct.saturating_sub(u32::from(*c == 0));
                *total = total.saturating_sub(1);
            } else {
                *distinct += u32::from(*c == 0);
                *c = c.saturating_add(1);
                *total += 1;
            }
            if entropy {
                *xlnx = xlnx.saturating_add(x_ln_x(*c));
            }
        }
    }
}

/// Moves an entry whose band changed to `band`, coding it first if it is new (the rare
/// path of [`Live::update`], apart so its walk stays small).
#[inline]
fn move_entry(attrs: &mut [Interned; ATTRS], e: &IpEntry, c: &mut Counted, band: u8) -> Option<()> {
    if c.band == UNCODED {
        for ((code, v), attr) in c.codes.iter_mut().zip(tallied(e)).zip(attrs.iter_mut()) {
            if let Some(v) = v {
                *code = attr.hold(v)?;
            }
        }
        c.band = OUT;
    }
    for (a, (code, attr)) in c.codes.iter().zip(attrs.iter_mut()).enumerate() {
        if *code != NO_CODE {
            attr.shift(*code, c.band, band, a == PREFIX);
        }
    }
    c.band = band;
    Some(())
}

/// Where `v` first is in `hay`: blocks of a fixed size compared without early exit, which the
/// compiler turns into a few vector instructions (a new address looks its five values up
/// among up to 128 each).
fn find<T: Copy + PartialEq>(hay: &[T], v: T) -> Option<usize> {
    const LANES: usize = 16;
    let mut blocks = hay.chunks_exact(LANES);
    for (b, block) in blocks.by_ref().enumerate() {
        // Any match first (see `KeyState::find_ip`), then where.
        let Ok(block) = <&[T; LANES]>::try_from(block) else {
            continue;
        };
        if !block.iter().fold(false, |hit, x| hit | (*x == v)) {
            continue;
        }
        let mut mask = 0u32;
        for (i, x) in block.iter().enumerate() {
            mask |= u32::from(*x == v) << i;
        }
        if mask != 0 {
            return Some(b * LANES + mask.trailing_zeros() as usize);
        }
    }
    let done = hay.len() - blocks.remainder().len();
    blocks
        .remainder()
        .iter()
        .position(|x| *x == v)
        .map(|i| done + i)
}

impl Live {
    /// The tallies of `entries`, none coded or counted yet ([`Self::update`] does both).
    pub(super) fn new(entries: &[IpEntry]) -> Self {
        let mut live = Self::default();
        live.entries.reserve_exact(entries.len());
        entries.iter().for_each(|_| live.push());
        live
    }

    /// Follows an entry appended to the key's addresses (coded and counted at the next update).
    pub(super) fn push(&mut self) {
        self.entries.push(Counted {
            codes: [NO_CODE; ATTRS],
            band: UNCODED,
        });
    }

    /// Follows `swap_remove(i)` on the key's addresses.
    pub(super) fn swap_remove(&mut self, i: usize) {
        if i >= self.entries.len() {
            return;
        }
        let gone = self.entries.swap_remove(i);
        if gone.band == UNCODED {
            return;
        }
        for (a, (code, attr)) in gone.codes.iter().zip(&mut self.attrs).enumerate() {
            if *code != NO_CODE {
                attr.shift(*code, gone.band, OUT, a == PREFIX);
                attr.release(*code);
            }
        }
    }

    /// Whether these tallies follow `entries` (the same number; the key keeps them in step).
    pub(super) fn follows(&self, entries: &[IpEntry]) -> bool {
        self.entries.len() == entries.len()
    }

    /// Codes the entries appended since the last update, and moves every entry to its band for
    /// `cutoffs` (window `w` holds the entries last seen at or after `cutoffs[w]`, which do not
    /// increase with `w`), so the counts are the windows'. `None` if a value could not be coded
    /// (cannot happen); the tallies are then wrong and must be dropped.
    pub(super) fn update(&mut self, ips: &[IpEntry], cutoffs: [u32; W]) -> Option<Span> {
        // Entries and the oldest sighting per band, summed into the windows after the walk.
        let mut count = [0u32; W + 1];
        let mut oldest = [u32::MAX; W + 1];
        for (e, c) in ips.iter().zip(&mut self.entries) {
            let band: u8 = cutoffs.iter().map(|cut| u8::from(e.last < *cut)).sum();
            let b = usize::from(band).min(W);
            if let (Some(n), Some(o)) = (count.get_mut(b), oldest.get_mut(b)) {
                *n += 1;
                *o = (*o).min(e.last);
            }
            // A new entry's band is `UNCODED`, never one of these.
            if band != c.band {
                move_entry(&mut self.attrs, e, c, band)?;
            }
        }
        let mut span = Span {
            entries: [0; W],
            oldest: [u32::MAX; W],
        };
        let (mut n, mut o) = (0, u32::MAX);
        for (w, (sn, so)) in span.entries.iter_mut().zip(&mut span.oldest).enumerate() {
            n += count.get(w).copied().unwrap_or(0);
            o = o.min(oldest.get(w).copied().unwrap_or(u32::MAX));
            (*sn, *so) = (n, o);
        }
        Some(span)
    }

    /// What the features read of window `w` (as of the last [`Self::update`]).
    pub(super) fn readings(&self, w: usize) -> Readings {
        let mut r = Readings::default();
        for (d, attr) in r.distinct.iter_mut().zip(&self.attrs) {
            *d = attr.distinct.get(w).copied().unwrap_or(0);
        }
        if let Some(subnets) = self.attrs.get(SUBNET) {
            let counts = subnets
                .counts
                .iter()
                .map(|c| c.get(w).copied().unwrap_or(0));
            r.lone_subnets = counts.clone().filter(|c| *c == 1).count() as u32;
            r.subnet_ips_max = u32::from(counts.max().unwrap_or(0));
        }
        if let Some(p) = self.attrs.get(PREFIX) {
            let at = |v: &[u32; W]| v.get(w).copied().unwrap_or(0);
            let xlnx = u128::from(p.xlnx.get(w).copied().unwrap_or(0));
            r.prefix_entropy = normalised_entropy(at(&p.distinct), at(&p.total), xlnx);
        }
        r
    }

    /// Heap bytes held, for the memory figure, with `overhead` bytes per allocation.
    pub(super) fn heap_bytes(&self, overhead: usize) -> usize {
        let array = |cap: usize, size: usize| if cap > 0 { cap * size + overhead } else { 0 };
        array(self.entries.capacity(), size_of::<Counted>())
            + self
                .attrs
                .iter()
                .map(|a| {
                    array(a.vals.capacity(), 4)
                        + array(a.refs.capacity(), 1)
                        + array(a.counts.capacity(), W)
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::score::{
        KeyState, features::Nested, params::MAX_IPS_PER_KEY, tally::normalised_entropy_of,
    };

    /// A pool of addresses with clustered and unknown values: blocks and prefixes shared by
    /// several addresses, ASN, network and country 0 for some, IPv6 among them.
    fn pool(i: u32) -> AddrInfo {
        let ip = if i.is_multiple_of(11) {
            IpAddr::from([0x2001, 0xdb8, (i % 5) as u16, 0, 0, 0, 0, i as u16])
        } else {
            IpAddr::from([10 + (i % 3) as u8, (i % 7) as u8, (i % 13) as u8, i as u8])
        };
        AddrInfo {
            ip: AddrInfo::ip_bytes(ip),
            asn: if i.is_multiple_of(9) {
                0
            } else {
                64_500 + i % 6
            },
            network: if i.is_multiple_of(10) { 0 } else { 1 + i % 4 },
            country: if i.is_multiple_of(8) {
                [0, 0]
            } else {
                [b'A' + (i % 3) as u8, b'Z']
            },
        }
    }

    /// A key's kept tallies give, score after score, exactly what tallying every address anew
    /// gives: through new answers, answers seen again, evictions from a full key, addresses
    /// aging out of one window and then the other, time running backwards, and one window or
    /// both.
    #[test]
    fn kept_tallies_match_a_walk_at_every_score() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut kept_used = 0;
        for round in 0..6u32 {
            let mut k = KeyState::new(0);
            let mut nested = Nested::default();
            let mut now = 1_000u32;
            let span = [60, 400, 1_500, 3_000, 9_000][round as usize % 5];
            for step in 0..400 {
                now = match next(40) {
                    // Backwards (capture files out of order).
                    0 => now.saturating_sub(next(5_000) as u32),
                    // Long gaps: everything leaves the shorter window, or both.
                    1 => now + 3_600 + next(2) as u32 * 86_400,
                    _ => now + next(span) as u32,
                };
                let size = 1 + next(6) as u32;
                let base = next(300) as u32;
                let addrs: Vec<AddrInfo> = (0..size).map(|j| pool(base + j * 17)).collect();
                k.add_answer(now, 60 + next(600) as u32, &addrs);
                if next(4) == 0 {
                    continue;
                }
                let n = 1 + (step % 3).min(1) as usize;
                let at = now + next(100) as u32;
                k.features_nested_into(at, n, &mut nested);
                let walked = k.features_nested(at, n);
                assert_eq!(nested.windows, walked.windows, "round {round} step {step}");
                assert_eq!(
                    nested.changes_at, walked.changes_at,
                    "round {round} step {step}"
                );
                kept_used += usize::from(k.ips.len() > crate::score::tally::SMALL_TALLY_MAX);
            }
            assert_eq!(k.ips.len(), MAX_IPS_PER_KEY, "the key filled and evicted");
            // Codes are given back as addresses leave: each attribute's are as many as the
            // distinct values held at most, and every entry's value holds its code once.
            let live = k
                .more
                .as_ref()
                .and_then(|m| m.live.as_deref())
                .expect("kept");
            for (i, attr) in live.attrs.iter().enumerate() {
                assert!(attr.vals.len() <= MAX_IPS_PER_KEY, "round {round} attr {i}");
                let held = live
                    .entries
                    .iter()
                    .filter(|e| e.codes[i] != NO_CODE)
                    .count();
                let refs: usize = attr.refs.iter().map(|r| usize::from(*r)).sum();
                assert_eq!(held, refs, "round {round} attr {i}");
            }
        }
        assert!(
            kept_used > 1_000,
            "the kept tallies were exercised: {kept_used}"
        );
    }

    /// The entropy is the same to the bit whatever order the counts come in.
    #[test]
    fn entropy_does_not_depend_on_order() {
        let counts: Vec<u8> = (0..100u32).map(|i| (1 + (i * 37) % 9) as u8).collect();
        let forward = normalised_entropy_of(counts.iter().copied());
        let backward = normalised_entropy_of(counts.iter().rev().copied());
        let mut shuffled = counts.clone();
        shuffled.sort_unstable_by_key(|c| (c * 7) % 5);
        let mixed = normalised_entropy_of(shuffled.iter().copied());
        assert_eq!(forward.to_bits(), backward.to_bits());
        assert_eq!(forward.to_bits(), mixed.to_bits());
        assert!(forward > 0.5 && forward < 1.0);
    }
}
