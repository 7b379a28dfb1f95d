//! CPU-specific helpers: Node16 key search with SSE2 on x86_64 (scalar
//! elsewhere) and a cache-line prefetch hint.
#![allow(unsafe_code)]

#[cfg(not(target_arch = "x86_64"))]
pub(crate) use super::node::search_scalar as search16;

/// Index of `byte` among the first `count` of 16 key bytes held in two
/// little-endian words: one SSE2 compare of all 16 keys at once.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn search16(lo: u64, hi: u64, count: usize, byte: u8) -> Option<usize> {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set1_epi8, _mm_set_epi64x};
    // SAFETY: SSE2 is part of the x86_64 baseline target, so the CPU this
    // code runs on supports these instructions; they only touch registers.
    let mask = unsafe {
        let keys = _mm_set_epi64x(hi as i64, lo as i64);
        let eq = _mm_cmpeq_epi8(keys, _mm_set1_epi8(byte as i8));
        _mm_movemask_epi8(eq) as u32
    };
    let mask = mask & ((1u32 << count.min(16)) - 1);
    (mask != 0).then(|| mask.trailing_zeros() as usize)
}

/// Asks the CPU to start loading the cache line holding `p` into L1. A
/// hint only: it never faults, has no visible effect and is a no-op off
/// x86_64.
#[inline]
pub(crate) fn prefetch_line<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86_64 baseline; a prefetch of any
        // address reads nothing architecturally and cannot fault, and `p`
        // is a live reference anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(p).cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
