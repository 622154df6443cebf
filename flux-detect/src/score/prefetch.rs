//! Hints to the CPU that memory will be read soon (x86_64's `prefetcht0`; nothing on other
//! targets). The scorer's tables use them to start the loads of the next response's lookups
//! while it scores the current one (`Scorer::prefetch`). Reads nothing into the program and
//! changes nothing.

/// The line holding the start of `value`.
#[inline(always)]
pub fn line<T>(value: &T) {
    hint(std::ptr::from_ref(value).cast());
}

#[inline(always)]
fn hint(p: *const u8) {
    // SAFETY: SSE, which the intrinsic requires, is part of every x86_64 CPU; a prefetch reads
    // nothing into the program and never faults, whatever the address.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
