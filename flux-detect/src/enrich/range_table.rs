//! The range tables enrichment looks addresses up in: sorted, non-overlapping ranges (IPv4 as
//! `u32`, IPv6 as `u128`, struct of arrays) with a bucket index, built once from the loaded
//! databases by flattening overlaps. Pure data structures: no files, no formats.

use super::*;

pub(super) type Country = [u8; 2];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AsnVal {
    pub(super) asn: u32,
    /// Index into [`Enricher::names`]; [`NO_NAME`] for none.
    pub(super) name: u32,
}

pub(super) const NO_NAME: u32 = u32::MAX;

pub(super) trait Addr: Copy + Ord + fmt::Debug {
    const ZERO: Self;
    const MAX: Self;
    fn next(self) -> Self;
    fn prev(self) -> Self;
    /// The top 16 bits: which [`Table::buckets`] slot the address falls in.
    fn bucket(self) -> usize;
}

impl Addr for u32 {
    const ZERO: Self = 0;
    const MAX: Self = u32::MAX;
    fn next(self) -> Self {
        self + 1
    }
    fn prev(self) -> Self {
        self - 1
    }
    fn bucket(self) -> usize {
        (self >> 16) as usize
    }
}

impl Addr for u128 {
    const ZERO: Self = 0;
    const MAX: Self = u128::MAX;
    fn next(self) -> Self {
        self + 1
    }
    fn prev(self) -> Self {
        self - 1
    }
    fn bucket(self) -> usize {
        (self >> 112) as usize
    }
}

/// Buckets of the lookup index: one per value of the top 16 address bits, plus an end marker.
pub(super) const BUCKETS: usize = (1 << 16) + 1;

/// Sorted, non-overlapping, inclusive ranges (struct of arrays: the binary search only reads
/// `starts`).
///
/// `buckets[b]` is the index of the first range starting at or after `b << (bits - 16)`, so a
/// lookup binary-searches only the ranges that start in the address's own /16 (for IPv4): one
/// or two cache misses instead of the twenty steps over the whole table, which showed in
/// replay profiles of streams with many new addresses.
pub(super) struct Table<A, V> {
    pub(super) starts: Vec<A>,
    pub(super) ends: Vec<A>,
    pub(super) vals: Vec<V>,
    /// Empty until [`Table::index`]; then [`BUCKETS`] entries.
    pub(super) buckets: Vec<u32>,
}

impl<A, V> Default for Table<A, V> {
    fn default() -> Self {
        Self {
            starts: Vec::new(),
            ends: Vec::new(),
            vals: Vec::new(),
            buckets: Vec::new(),
        }
    }
}

impl<A: Addr, V: Copy + Eq> Table<A, V> {
    pub(super) fn get(&self, a: A) -> Option<V> {
        // Every range before `lo` starts in an earlier bucket (so at or below `a`), every range
        // from `hi` on in a later one (above `a`): the search only needs `lo..hi`.
        let b = a.bucket();
        let (lo, hi) = match (self.buckets.get(b), self.buckets.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.starts.len()),
        };
        let i = lo + self.starts.get(lo..hi)?.partition_point(|&s| s <= a);
        (i > 0 && a <= *self.ends.get(i - 1)?).then(|| self.vals.get(i - 1).copied())?
    }

    /// Builds the bucket index (after the last [`Table::push`]).
    pub(super) fn index(&mut self) {
        let mut buckets = Vec::with_capacity(BUCKETS);
        let mut i = 0usize;
        for b in 0..BUCKETS {
            while self.starts.get(i).is_some_and(|s| s.bucket() < b) {
                i += 1;
            }
            buckets.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        self.buckets = buckets;
    }

    pub(super) fn len(&self) -> usize {
        self.starts.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.starts.capacity() * size_of::<A>()
            + self.ends.capacity() * size_of::<A>()
            + self.vals.capacity() * size_of::<V>()
            + self.buckets.capacity() * size_of::<u32>()
    }

    /// Ranges whose value matches, adjacent ones joined.
    pub(super) fn matching(
        &self,
        mut pred: impl FnMut(&V) -> bool,
    ) -> impl Iterator<Item = (A, A)> {
        let mut out: Vec<(A, A)> = Vec::new();
        for i in 0..self.len() {
            if !pred(&self.vals[i]) {
                continue;
            }
            let (s, e) = (self.starts[i], self.ends[i]);
            match out.last_mut() {
                Some(last) if last.1 != A::MAX && last.1.next() == s => last.1 = e,
                _ => out.push((s, e)),
            }
        }
        out.into_iter()
    }

    pub(super) fn push(&mut self, s: A, e: A, v: V) {
        if let (Some(last_end), Some(last_val)) = (self.ends.last_mut(), self.vals.last()) {
            // `*last_end < s` always holds here, so `next` cannot overflow.
            if *last_val == v && last_end.next() == s {
                *last_end = e;
                return;
            }
        }
        self.starts.push(s);
        self.ends.push(e);
        self.vals.push(v);
    }

    /// Flattens possibly overlapping ranges: each address gets the value of the covering range
    /// that starts last (then the shortest, then the lowest `seq`). Adjacent equal values merge.
    pub(super) fn build(mut raw: Vec<Raw<A, V>>) -> Self {
        raw.sort_unstable_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(b.end.cmp(&a.end))
                .then(b.seq.cmp(&a.seq))
        });
        let mut t = Table::default();
        // Open ranges as (end, value), in start order: the top is the innermost.
        let mut open: Vec<(A, V)> = Vec::new();
        // First address not yet emitted (only meaningful while something is open).
        let mut cursor = A::ZERO;
        for r in raw {
            while let Some(&(end, v)) = open.last() {
                if end >= r.start {
                    break;
                }
                open.pop();
                // `end < r.start <= MAX`: `next` cannot overflow.
                if end >= cursor {
                    t.push(cursor, end, v);
                    cursor = end.next();
                }
            }
            if let Some(&(_, v)) = open.last()
                && cursor < r.start
            {
                t.push(cursor, r.start.prev(), v);
            }
            cursor = r.start;
            open.push((r.end, r.val));
        }
        while let Some((end, v)) = open.pop() {
            if end >= cursor {
                t.push(cursor, end, v);
                if end == A::MAX {
                    break;
                }
                cursor = end.next();
            }
        }
        t.starts.shrink_to_fit();
        t.ends.shrink_to_fit();
        t.vals.shrink_to_fit();
        if !t.starts.is_empty() {
            t.index();
        }
        t
    }
}

pub(super) struct Raw<A, V> {
    pub(super) start: A,
    pub(super) end: A,
    /// Load order, to break exact ties deterministically.
    pub(super) seq: u32,
    pub(super) val: V,
}

pub(super) struct Tables<V> {
    pub(super) v4: Table<u32, V>,
    pub(super) v6: Table<u128, V>,
}

impl<V> Default for Tables<V> {
    fn default() -> Self {
        Self {
            v4: Table::default(),
            v6: Table::default(),
        }
    }
}

impl<V: Copy + Eq> Tables<V> {
    pub(super) fn get(&self, ip: IpAddr) -> Option<V> {
        match ip {
            IpAddr::V4(a) => self.v4.get(a.into()),
            IpAddr::V6(a) => self.v6.get(a.into()),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn bytes(&self) -> usize {
        self.v4.bytes() + self.v6.bytes()
    }
}

pub(super) struct Pending<V> {
    pub(super) v4: Vec<Raw<u32, V>>,
    pub(super) v6: Vec<Raw<u128, V>>,
}

impl<V> Default for Pending<V> {
    fn default() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

impl<V: Copy + Eq> Pending<V> {
    pub(super) fn push(&mut self, range: Range, seq: u32, val: V) {
        match range {
            Range::V4(start, end) => self.v4.push(Raw {
                start,
                end,
                seq,
                val,
            }),
            Range::V6(start, end) => self.v6.push(Raw {
                start,
                end,
                seq,
                val,
            }),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub(super) fn build(self) -> Tables<V> {
        Tables {
            v4: Table::build(self.v4),
            v6: Table::build(self.v6),
        }
    }
}
