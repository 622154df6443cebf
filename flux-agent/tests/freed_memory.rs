//! `allocator::return_freed_memory`, in a process of its own: resident memory is per process,
//! and the library's unit tests allocate and free on other threads meanwhile.

/// Resident memory of this process, from `/proc/self/statm` (pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages in statm");
    pages * 4096
}

/// Freed blocks stay resident for mimalloc's purge delay (a second by default), which is what
/// made `scorer-bench`'s memory figure depend on timing; after `return_freed_memory` they are
/// gone at once.
#[test]
fn freed_blocks_leave_resident_memory_at_once() {
    const BLOCKS: usize = 64 * 1024;
    const BLOCK: usize = 1024;
    let blocks: Vec<Box<[u8]>> = (0..BLOCKS)
        .map(|i| vec![i as u8 | 1; BLOCK].into_boxed_slice())
        .collect();
    assert!(blocks.iter().all(|b| b[0] != 0));
    let held = rss_bytes();
    drop(blocks);
    let freed = rss_bytes();
    flux_agent::allocator::return_freed_memory();
    let returned = rss_bytes();
    let total = (BLOCKS * BLOCK) as u64;
    assert!(
        freed + total / 2 > held,
        "freeing alone returned most of it already ({held} -> {freed}): the test shows nothing"
    );
    assert!(
        returned + total / 2 <= held,
        "{total} bytes freed, resident {held} -> {freed} -> {returned} after the collect"
    );
}
