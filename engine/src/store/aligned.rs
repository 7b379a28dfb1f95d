//! [`AlignedBlobBuf`]: one frame of exactly [`FRAME_SIZE`] bytes, aligned
//! to 4096 so it can be handed to `O_DIRECT` and `io_uring` I/O — heap
//! memory of its own, or a buffer an I/O driver handed out (a slot of a
//! registered-buffer arena, see [`Backend::alloc_frame_buf`](super::Backend::alloc_frame_buf)).
#![allow(unsafe_code)]

use std::alloc::{alloc, alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::fmt;
use std::ptr::NonNull;

use holt_backend_sync::AlignedBuf;

use super::FRAME_SIZE;

/// Alignment of every frame buffer (one page / logical block).
const ALIGN: usize = 4096;

/// Layout of every frame buffer. Evaluated at compile time, so a bad
/// size/alignment pair fails the build rather than panicking at run time.
const LAYOUT: Layout = match Layout::from_size_align(FRAME_SIZE, ALIGN) {
    Ok(layout) => layout,
    Err(_) => panic!("invalid frame layout"),
};

/// A buffer holding exactly one blob frame: 524 288 bytes, 4096-aligned.
///
/// It owns its memory: clones copy the bytes (into heap memory), drop frees
/// it — or, for a buffer made by [`from_driver_buffer`](Self::from_driver_buffer),
/// gives it back to the I/O driver it came from. The bytes are always
/// initialised, so the slice views are safe to read at any time.
pub struct AlignedBlobBuf {
    /// Start of the frame's memory: fully initialised, FRAME_SIZE bytes,
    /// owned exclusively by this value. Either a live allocation made with
    /// [`LAYOUT`] (`driver` is `None`) or the memory of `driver`.
    ptr: NonNull<u8>,
    /// The driver's buffer that owns the memory at `ptr`, when it is one;
    /// kept (never read or written through) until drop hands it back.
    /// Moving an `AlignedBuf` does not move the memory it owns.
    driver: Option<AlignedBuf>,
}

// SAFETY: `AlignedBlobBuf` uniquely owns its memory (like a
// `Box<[u8; FRAME_SIZE]>`, or through an `AlignedBuf`, which is `Send`);
// nothing else aliases `ptr`, so moving it to another thread is sound.
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
            Some(ptr) => Self { ptr, driver: None },
            None => handle_alloc_error(LAYOUT),
        }
    }

    /// Wraps a buffer an I/O driver handed out
    /// ([`IoDriver::alloc_buffer`](holt_backend_sync::IoDriver::alloc_buffer)),
    /// so a backend can give the engine frame buffers its driver moves more
    /// cheaply (io_uring: slots of a registered arena, written with
    /// `WRITE_FIXED`). Dropping the frame buffer gives the memory back to
    /// the driver. Returns `buf` unchanged if it is not exactly
    /// one frame (524 288 bytes).
    ///
    /// ```
    /// use holt::io::{IoDriver, SyncDriver};
    /// use holt::{AlignedBlobBuf, Tree};
    ///
    /// let raw = SyncDriver::new().alloc_buffer(Tree::page_size() as usize)?;
    /// let frame = AlignedBlobBuf::from_driver_buffer(raw).expect("one frame");
    /// assert_eq!(frame.len(), 524_288);
    /// assert!(!frame.is_from_arena(), "the sync driver has no arena");
    /// let small = SyncDriver::new().alloc_buffer(4096)?;
    /// assert!(AlignedBlobBuf::from_driver_buffer(small).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// `buf` itself when its length is not one frame (524 288 bytes).
    pub fn from_driver_buffer(mut buf: AlignedBuf) -> std::result::Result<Self, AlignedBuf> {
        if buf.len() != FRAME_SIZE {
            return Err(buf);
        }
        let Some(ptr) = NonNull::new(buf.as_mut_ptr()) else {
            return Err(buf);
        };
        // `AlignedBuf` guarantees an ALIGN (4096) aligned, initialised
        // allocation of `len` bytes that stays put while the value lives.
        Ok(Self {
            ptr,
            driver: Some(buf),
        })
    }

    /// Whether the memory is a slot of an I/O driver's buffer arena (for
    /// example one registered with io_uring), rather than plain heap
    /// memory. See [`from_driver_buffer`](Self::from_driver_buffer).
    #[must_use]
    pub fn is_from_arena(&self) -> bool {
        self.driver.as_ref().is_some_and(AlignedBuf::is_from_arena)
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
        // SAFETY: `ptr` points to FRAME_SIZE live, initialised bytes owned
        // by `self` (its own allocation, or the memory of `self.driver`,
        // which is not released before `self` drops); the returned borrow
        // is tied to `&self`, so no `&mut` alias can exist while it lives,
        // and neither `self` nor its memory can be dropped meanwhile (an
        // I/O driver holding this slice in a submitted SQE relies on that).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), FRAME_SIZE) }
    }

    /// The whole frame as a mutable byte slice.
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to FRAME_SIZE live, initialised bytes owned
        // by `self` (as in `as_slice`); `&mut self` guarantees the returned
        // borrow is the only access.
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

// SAFETY: `ptr` never changes and names memory this value owns (its own
// allocation, or its driver buffer's, held until drop); moving the value
// does not move it, and the bytes are written only through `&mut self`
// (`as_mut_slice`, `as_mut_ptr`). So an I/O driver holding the value may
// keep writing from `bytes()` until it gives the value back.
unsafe impl holt_backend_sync::StableBuf for AlignedBlobBuf {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

impl Drop for AlignedBlobBuf {
    fn drop(&mut self) {
        if self.driver.is_some() {
            return; // the driver's buffer frees or recycles its memory
        }
        // SAFETY: without a driver buffer, `ptr` was returned by
        // `alloc`/`alloc_zeroed` with `LAYOUT` and is freed exactly once,
        // here, by its sole owner.
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
        Self { ptr, driver: None }
    }
}

impl fmt::Debug for AlignedBlobBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arena = if self.is_from_arena() { ", arena" } else { "" };
        write!(f, "AlignedBlobBuf({:p}, {} B{arena})", self.ptr, FRAME_SIZE)
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
    fn driver_buffers_are_wrapped_in_place() {
        let mut raw = AlignedBuf::new(FRAME_SIZE).unwrap();
        raw[7] = 9;
        let at = raw.as_ptr();
        let mut buf = AlignedBlobBuf::from_driver_buffer(raw).unwrap();
        assert_eq!(buf.as_ptr(), at, "no copy");
        assert_eq!(buf.as_slice()[7], 9);
        buf.as_mut_slice()[FRAME_SIZE - 1] = 3;
        assert!(!buf.is_from_arena(), "plain heap memory of the driver");
        let copy = buf.clone();
        assert_ne!(copy.as_ptr(), buf.as_ptr());
        assert_eq!(copy.as_slice(), buf.as_slice());
        assert!(!format!("{buf:?}").contains("arena"));
        let short = AlignedBuf::new(4096).unwrap();
        assert_eq!(
            AlignedBlobBuf::from_driver_buffer(short).unwrap_err().len(),
            4096
        );
    }

    #[test]
    fn debug_format() {
        let buf = AlignedBlobBuf::zeroed();
        let s = format!("{buf:?}");
        assert!(s.starts_with("AlignedBlobBuf(0x"), "{s}");
        assert!(s.ends_with(", 524288 B)"), "{s}");
    }
}
