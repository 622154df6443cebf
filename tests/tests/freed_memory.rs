//! `flux_agent::allocator::return_freed_memory`, in a process of its own: resident memory is
//! per process, and other tests allocate and free on other threads meanwhile. Unprivileged.

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
    let held = flux_tests::rss_bytes();
    drop(blocks);
    let freed = flux_tests::rss_bytes();
    flux_agent::allocator::return_freed_memory();
    let returned = flux_tests::rss_bytes();
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
