//! The global allocator of every binary that links the agent: mimalloc (why mimalloc: the
//! comment on `GLOBAL` in lib.rs). Lives here and touches nothing but the allocator.
//!
//! Why not `mimalloc::MiMalloc` as it comes: it passes every request to mimalloc's *aligned*
//! entry points (`mi_malloc_aligned`), whatever the alignment. Those serve a request from the
//! thread's free list only while the page has a block; when the page runs out they allocate
//! normally only for a power-of-two block size, and otherwise over-allocate by the alignment
//! and hand out an interior pointer. Most of our allocations are 8-aligned and of other sizes
//! (an `Arc<str>` of a name is 16 bytes plus the name), so every page refill of theirs took
//! the slow over-allocation path: in the replay profile the aligned slow paths were 3.9% of
//! the instructions (`mi_theap_malloc_zero_aligned_at_generic` and `_overalloc`).
//!
//! Every mimalloc block is aligned to at least the machine word (its size classes are
//! multiples of it and a page's first block is 16-aligned), so a request aligned to a word or
//! less goes to the plain entry points (`mi_malloc`, `mi_zalloc`, `mi_realloc`), which need no
//! alignment work; anything aligned more strictly goes through `MiMalloc` as before. `mi_free`
//! frees blocks from either.
//!
//! The word alignment holds for the build we use (libmimalloc-sys without default features).
//! Its `debug` features turn on mimalloc's guarded mode, in which `MIMALLOC_GUARDED_PRECISE`
//! may place a block right before a guard page without rounding it: do not enable them
//! without revisiting this (the test below would catch a misaligned block).

use std::{
    alloc::{GlobalAlloc, Layout},
    ffi::c_void,
};

use libmimalloc_sys::{mi_free, mi_malloc, mi_realloc, mi_zalloc};
use mimalloc::MiMalloc;

/// The alignment every block mimalloc returns has, whatever its size.
const BLOCK_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc, through its plain entry points when the alignment allows (see the module comment).
pub struct FluxAlloc;

// SAFETY: every method returns what mimalloc returns for a request at least as strict as the
// layout's (a word-aligned block for a layout aligned to a word or less, which every mimalloc
// block is; `MiMalloc`'s aligned call otherwise) or null on failure, and frees or resizes only
// blocks mimalloc gave.
unsafe impl GlobalAlloc for FluxAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= BLOCK_ALIGN {
            // SAFETY: plain allocation; the block's word alignment covers the layout's.
            unsafe { mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's contract for `layout` is passed on unchanged.
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= BLOCK_ALIGN {
            // SAFETY: as in `alloc`, zeroed.
            unsafe { mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's contract for `layout` is passed on unchanged.
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc, whose `mi_free` frees blocks
        // of its plain and aligned entry points alike.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= BLOCK_ALIGN {
            // SAFETY: `ptr` is a mimalloc block; the new block is word-aligned like every one.
            unsafe { mi_realloc(ptr.cast::<c_void>(), new_size).cast() }
        } else {
            // SAFETY: the caller's contract is passed on unchanged.
            unsafe { MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

/// Hands the memory of freed blocks back to the system now (`mi_collect(true)`), instead of
/// after mimalloc's purge delay: resident memory then counts live blocks and the pages they
/// sit in, not what was freed a moment ago. For measurements (`scorer-bench`'s memory figure,
/// which read anywhere from 171 to 336 bytes a name depending on when the freed memory of the
/// database load and of the key table's last doubling was purged); the agent never calls it.
pub fn return_freed_memory() {
    // SAFETY: no arguments to uphold; mimalloc may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to a few pages, at every alignment up to a page, from both paths: aligned
    /// as asked, writable, and resized with its contents kept.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_contents() {
        let a = FluxAlloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..300).chain([1000, 4095, 4096, 70_000]) {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                // SAFETY: a non-zero size; every block is freed with the layout it has.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    std::ptr::write_bytes(p, 0xa5, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc, size {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xa5));
                    a.dealloc(q, Layout::from_size_align(size * 3, align).expect("valid"));
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
