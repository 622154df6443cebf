//! The slots of the scorer's bounded tables (`table.rs`): one array to its callers, numbered
//! from 0, stored in chunks that are never moved once made. Holds the slots only; the index,
//! the hashing and the eviction are the table's.
//!
//! Why not a `Vec`, which this replaces: a `Vec` grows by copying everything it holds into an
//! allocation twice as large, all within the one response that pushed past its capacity. At a
//! million keys the key table's last doubling copied 88 MB and touched 176 MB of new pages:
//! scorer-bench's memory pass measured that response at 218 ms, where a live agent's block
//! latency target is 10 ms, and the doublings were 3.8% of the resolver stream's replay in
//! perf. Here growing adds a chunk as large as everything before it, and nothing moves. The
//! chunk sizes double as a `Vec`'s capacity would, so the memory held is about the same.

/// The first chunk holds `1 << FIRST_BITS` slots and chunk k holds `1 << (FIRST_BITS + k)`:
/// chunk k starts at slot `FIRST * (2^k - 1)`. Small, because most tables stay small (the
/// watched keys, the keys due a re-score).
const FIRST_BITS: u32 = 4;
const FIRST: usize = 1 << FIRST_BITS;

pub struct SlotChunks<T> {
    /// Chunk k was made with room for [`Self::chunk_size`]`(k)` slots and never holds more, so it
    /// never reallocates. Chunks emptied by removals are kept for the next pushes, as a `Vec`
    /// keeps its capacity (a full table alternates an eviction with an insertion).
    chunks: Vec<Vec<T>>,
    len: usize,
    /// Most slots the table holds: the last chunk is cut to it.
    cap: usize,
}

/// Which chunk slot `i` is in, and where in it.
#[inline(always)]
fn locate(i: usize) -> (usize, usize) {
    // Chunk k holds slots FIRST * (2^k - 1) to FIRST * (2^(k+1) - 1): with `FIRST` added, its
    // slots are those whose highest bit is bit FIRST_BITS + k. A table's slots are numbered in
    // a `u32`, so on a 64-bit target the sum never saturates; the saturation only keeps a
    // larger number from wrapping onto a low slot.
    let m = i.saturating_add(FIRST);
    let top = usize::BITS - 1 - m.leading_zeros();
    ((top - FIRST_BITS) as usize, m - (1 << top))
}

impl<T> SlotChunks<T> {
    /// Room for at most `cap` slots, none allocated yet.
    pub fn new(cap: usize) -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
            cap,
        }
    }

    /// The slots chunk `k` is made with room for.
    fn chunk_size(&self, k: usize) -> usize {
        let start = (FIRST << k) - FIRST;
        (FIRST << k).min(self.cap.saturating_sub(start)).max(1)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slots allocated, used or not.
    pub fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        // No test against `len`: each chunk holds exactly its slots in use.
        let (k, at) = locate(i);
        self.chunks.get(k)?.get(at)
    }

    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        // No test against `len`: each chunk holds exactly its slots in use.
        let (k, at) = locate(i);
        self.chunks.get_mut(k)?.get_mut(at)
    }

    /// Adds a slot at number `len()`. Past `cap` it is still added (the last chunk then grows
    /// like a `Vec`); the table never pushes past it.
    pub fn push(&mut self, v: T) {
        let (k, _) = locate(self.len);
        while self.chunks.len() <= k {
            let size = self.chunk_size(self.chunks.len());
            self.chunks.push(Vec::with_capacity(size));
        }
        if let Some(chunk) = self.chunks.get_mut(k) {
            debug_assert!(chunk.len() < chunk.capacity(), "a chunk would reallocate");
            chunk.push(v);
            self.len += 1;
        }
    }

    /// Removes the last slot.
    pub fn pop(&mut self) -> Option<T> {
        let last = self.len.checked_sub(1)?;
        let (k, _) = locate(last);
        let v = self.chunks.get_mut(k)?.pop()?;
        self.len = last;
        Some(v)
    }

    /// Removes slot `i`; the last slot takes its number.
    pub fn swap_remove(&mut self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let last = self.pop()?;
        if i == self.len {
            return Some(last);
        }
        self.get_mut(i).map(|s| std::mem::replace(s, last))
    }

    /// Every slot, by number.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

/// Slot `i`, which must exist (as a `Vec`'s indexing: out of range panics).
impl<T> std::ops::Index<usize> for SlotChunks<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(s) => s,
            None => panic!("slot {i} of {}", self.len),
        }
    }
}

impl<T> std::ops::IndexMut<usize> for SlotChunks<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len;
        match self.get_mut(i) {
            Some(s) => s,
            None => panic!("slot {i} of {len}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_numbered_across_chunks() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(FIRST - 1), (0, FIRST - 1));
        assert_eq!(locate(FIRST), (1, 0));
        assert_eq!(locate(3 * FIRST - 1), (1, 2 * FIRST - 1));
        assert_eq!(locate(3 * FIRST), (2, 0));
        // The last slot number a table may use.
        let (k, at) = locate(u32::MAX as usize);
        assert!(at < FIRST << k);
    }

    /// The same operations on a `Vec` and on the chunks give the same slots in the same order,
    /// across chunk boundaries, with chunks emptied and filled again; and no chunk reallocates.
    #[test]
    fn agrees_with_a_vec() {
        for cap in [1usize, 5, 16, 17, 100, 1_000] {
            let mut v = Vec::new();
            let mut c = SlotChunks::new(cap);
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            for n in 0..20_000u64 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if v.len() < cap && !rng.is_multiple_of(3) {
                    v.push(n);
                    c.push(n);
                } else if !v.is_empty() {
                    let i = (rng >> 8) as usize % v.len();
                    assert_eq!(c.swap_remove(i), Some(v.swap_remove(i)));
                }
                if n.is_multiple_of(97) {
                    assert_eq!(c.pop(), v.pop());
                }
                assert_eq!(c.len(), v.len());
            }
            assert!(c.iter().eq(v.iter()), "cap {cap}");
            for (i, x) in v.iter().enumerate() {
                assert_eq!(c.get(i), Some(x));
            }
            assert_eq!(c.get(v.len()), None, "past the end, though allocated");
            assert_eq!(c.swap_remove(v.len()), None);
            // Cut to the cap, and never grown past a chunk's first allocation.
            assert!(
                c.capacity() <= cap.max(FIRST),
                "cap {cap}: {}",
                c.capacity()
            );
        }
    }

    /// Growing moves nothing: a slot stays at the address it was written to.
    #[test]
    fn growing_moves_no_slot() {
        let mut c = SlotChunks::new(100_000);
        c.push(7u32);
        let first = std::ptr::from_ref(c.get(0).unwrap());
        for n in 0..99_999 {
            c.push(n);
        }
        assert!(std::ptr::eq(first, c.get(0).unwrap()));
        assert_eq!(c.len(), 100_000);
    }
}
