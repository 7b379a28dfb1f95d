//! [`AlignedBlobBuf`]: one heap frame of exactly [`FRAME_SIZE`] bytes,
//! aligned to 4096 so it can be handed to `O_DIRECT` and `io_uring` I/O.
#![allow(unsafe_code)]

use std::alloc::{alloc, alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::fmt;
use std::ptr::NonNull;

use super::FRAME_SIZE;

/// Alignment of every frame buffer (one page / logical block).
const ALIGN: usize = 4096;

/// Layout of every frame buffer. Evaluated at compile time, so a bad
/// size/alignment pair fails the build rather than panicking at run time.
const LAYOUT: Layout = match Layout::from_size_align(FRAME_SIZE, ALIGN) {
    Ok(layout) => layout,
    Err(_) => panic!("invalid frame layout"),
};

/// A heap buffer holding exactly one blob frame: 524 288 bytes, 4096-aligned.
///
/// It owns its allocation: clones copy the bytes, drop frees them. The bytes
/// are always initialised, so the slice views are safe to read at any time.
pub struct AlignedBlobBuf {
    /// Start of a live allocation made with [`LAYOUT`], fully initialised,
    /// owned exclusively by this value.
    ptr: NonNull<u8>,
}

// SAFETY: `AlignedBlobBuf` uniquely owns its heap allocation (like a
// `Box<[u8; FRAME_SIZE]>`); nothing else aliases `ptr`, so moving it to
// another thread is sound.
unsafe impl Send for AlignedBlobBuf {}
// SAFETY: shared access only hands out `&[u8]` / `*const u8`; mutation needs
// `&mut self`, so concurrent `&AlignedBlobBuf` use cannot race.
unsafe impl Sync for AlignedBlobBuf {}

impl AlignedBlobBuf {
    /// Allocates a frame whose bytes are all zero.
    #[must_use]
    pub fn zeroed() -> Self {
        // SAFETY: `LAYOUT` has a non-zero size (FRAME_SIZE), as `alloc_zeroed`
        // requires.
        let raw = unsafe { alloc_zeroed(LAYOUT) };
        match NonNull::new(raw) {
            Some(ptr) => Self { ptr },
            None => handle_alloc_error(LAYOUT),
        }
    }

    /// Allocates a frame whose contents the caller will overwrite (for
    /// example before a backend read).
    ///
    /// This currently returns zeroed memory, exactly like
    /// [`zeroed`](Self::zeroed): exposing uninitialised bytes through
    /// [`as_slice`](Self::as_slice) would be unsound, and zeroing a fresh
    /// page-aligned allocation is cheap.
    #[must_use]
    pub fn uninit() -> Self {
        Self::zeroed()
    }

    /// Raw pointer to the first byte (4096-aligned).
    #[must_use]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Mutable raw pointer to the first byte (4096-aligned).
    #[must_use]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The whole frame as a byte slice.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to a live, initialised allocation of
        // FRAME_SIZE bytes owned by `self`; the returned borrow is tied to
        // `&self`, so no `&mut` alias can exist while it lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), FRAME_SIZE) }
    }

    /// The whole frame as a mutable byte slice.
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to a live, initialised allocation of
        // FRAME_SIZE bytes owned by `self`; `&mut self` guarantees the
        // returned borrow is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), FRAME_SIZE) }
    }

    /// Size of the buffer in bytes: always 524 288.
    #[must_use]
    pub const fn len(&self) -> usize {
        FRAME_SIZE
    }

    /// Always `false`: a frame buffer is never empty.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for AlignedBlobBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `alloc`/`alloc_zeroed` with `LAYOUT`
        // and is freed exactly once, here, by its sole owner.
        unsafe { dealloc(self.ptr.as_ptr(), LAYOUT) }
    }
}

impl Default for AlignedBlobBuf {
    /// A zeroed frame.
    fn default() -> Self {
        Self::zeroed()
    }
}

impl Clone for AlignedBlobBuf {
    /// Allocates a new frame and copies all bytes into it.
    fn clone(&self) -> Self {
        // SAFETY: `LAYOUT` has a non-zero size (FRAME_SIZE), as `alloc`
        // requires.
        let raw = unsafe { alloc(LAYOUT) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(LAYOUT)
        };
        // SAFETY: the source is a live, initialised FRAME_SIZE allocation
        // owned by `self`; the destination is a fresh FRAME_SIZE allocation,
        // so both are valid for FRAME_SIZE bytes and cannot overlap. After
        // the copy every byte of the new buffer is initialised.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), ptr.as_ptr(), FRAME_SIZE) }
        Self { ptr }
    }
}

impl fmt::Debug for AlignedBlobBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBlobBuf({:p}, {} B)", self.ptr, FRAME_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_sized() {
        let buf = AlignedBlobBuf::zeroed();
        assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
        assert_eq!(buf.len(), FRAME_SIZE);
        assert_eq!(buf.as_slice().len(), FRAME_SIZE);
        assert!(!buf.is_empty());
        assert!(buf.as_slice().iter().all(|&b| b == 0));
    }

    #[test]
    fn uninit_is_zeroed() {
        let buf = AlignedBlobBuf::uninit();
        assert!(buf.as_slice().iter().all(|&b| b == 0));
    }

    #[test]
    fn clone_copies_and_is_independent() {
        let mut a = AlignedBlobBuf::default();
        a.as_mut_slice()[0] = 0xab;
        a.as_mut_slice()[FRAME_SIZE - 1] = 0xcd;
        let mut b = a.clone();
        assert_ne!(a.as_ptr(), b.as_ptr());
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert_eq!(a.as_slice(), b.as_slice());
        b.as_mut_slice()[0] = 1;
        assert_eq!(a.as_slice()[0], 0xab);
    }

    #[test]
    fn debug_format() {
        let buf = AlignedBlobBuf::zeroed();
        let s = format!("{buf:?}");
        assert!(s.starts_with("AlignedBlobBuf(0x"), "{s}");
        assert!(s.ends_with(", 524288 B)"), "{s}");
    }
}
