//! [`AlignedBuf`]: a zeroed heap buffer that meets the `O_DIRECT` rule,
//! and [`BufferArena`], the hook that lets a driver hand out such buffers
//! from memory of its own (registered with the kernel).
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::driver::ALIGN;

/// One [`ALIGN`]-sized, [`ALIGN`]-aligned page; its only use is to get a
/// well-aligned dangling pointer for the empty buffer.
#[repr(C, align(4096))]
struct Page([u8; ALIGN]);

// The `align(4096)` literal above must track `ALIGN` (checked at compile time).
const _: () = assert!(std::mem::align_of::<Page>() == ALIGN);

/// A zero-initialised byte buffer whose address is a multiple of [`ALIGN`]
/// and whose length is a multiple of [`ALIGN`], so it (and any sub-slice
/// starting and ending on an [`ALIGN`] boundary) can be handed to
/// [`IoFile::read_at`](crate::IoFile::read_at) and
/// [`IoFile::write_at`](crate::IoFile::write_at) on a direct file.
///
/// ```
/// use holt_backend_sync::{AlignedBuf, ALIGN};
///
/// let mut buf = AlignedBuf::new(2 * ALIGN)?;
/// assert_eq!(buf.len(), 2 * ALIGN);
/// assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
/// assert!(buf.iter().all(|&b| b == 0));
/// buf[..5].copy_from_slice(b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct AlignedBuf {
    /// Start of the allocation (dangling but aligned when `len == 0`).
    ptr: NonNull<u8>,
    /// Length in bytes; a multiple of [`ALIGN`].
    len: usize,
    /// The arena the memory belongs to and goes back to on drop; `None`
    /// for memory of the global allocator.
    arena: Option<Arc<dyn BufferArena>>,
}

/// Memory that [`AlignedBuf`]s are carved from and given back to, such as
/// an io_uring driver's registered-buffer arena (see
/// [`IoDriver::alloc_buffer`](crate::IoDriver::alloc_buffer)). The arena
/// must keep that memory allocated and in place for as long as it lives;
/// every buffer holds an `Arc` of its arena, so the arena outlives them.
pub trait BufferArena: Send + Sync + fmt::Debug {
    /// Takes back the `len` bytes at `ptr` of a buffer made by
    /// [`AlignedBuf::from_arena`] with this arena. Called exactly once per
    /// such buffer, from its `Drop`; the buffer is not used afterwards.
    fn release(&self, ptr: NonNull<u8>, len: usize);
}

// SAFETY: `AlignedBuf` owns its allocation exclusively, like `Box<[u8]>`;
// moving it to another thread moves that ownership.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`, which is `Sync`; mutation
// needs `&mut self`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes at an [`ALIGN`]-aligned address.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if `len` is not a multiple of
    /// [`ALIGN`] (zero is allowed), [`io::ErrorKind::OutOfMemory`] if the
    /// allocation fails.
    pub fn new(len: usize) -> io::Result<Self> {
        if len % ALIGN != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AlignedBuf length {len} is not a multiple of {ALIGN}"),
            ));
        }
        if len == 0 {
            return Ok(Self {
                ptr: NonNull::<Page>::dangling().cast(),
                len: 0,
                arena: None,
            });
        }
        let layout = Self::layout(len)?;
        // SAFETY: `layout` has a non-zero size (`len > 0` was checked above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate an aligned buffer of {len} bytes"),
            )
        })?;
        Ok(Self {
            ptr,
            len,
            arena: None,
        })
    }

    /// A buffer over `len` bytes at `ptr` that belong to `arena`; dropping
    /// it calls [`BufferArena::release`] instead of freeing the memory.
    ///
    /// # Safety
    /// `ptr` must be [`ALIGN`]-aligned and valid for reads and writes of
    /// `len` initialised bytes, `len` a multiple of [`ALIGN`]; `arena` must
    /// keep that memory allocated and unmoved at least until it is
    /// released, and nothing else may access it until `arena.release(ptr,
    /// len)` is called by this buffer's `Drop`.
    pub unsafe fn from_arena(ptr: NonNull<u8>, len: usize, arena: Arc<dyn BufferArena>) -> Self {
        debug_assert!(ptr.as_ptr() as usize % ALIGN == 0 && len % ALIGN == 0);
        Self {
            ptr,
            len,
            arena: Some(arena),
        }
    }

    /// Whether the memory belongs to a [`BufferArena`] (for example one
    /// registered with an io_uring ring) rather than the global allocator.
    #[must_use]
    pub fn is_from_arena(&self) -> bool {
        self.arena.is_some()
    }

    /// The allocation layout for `len` bytes at [`ALIGN`].
    fn layout(len: usize) -> io::Result<Layout> {
        Layout::from_size_align(len, ALIGN).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AlignedBuf length {len} is too large"),
            )
        })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Some(arena) = self.arena.take() {
            arena.release(self.ptr, self.len);
            return;
        }
        if self.len == 0 {
            return;
        }
        // `new` built this very layout successfully, so it cannot fail now.
        if let Ok(layout) = Self::layout(self.len) {
            // SAFETY: `ptr` came from `alloc_zeroed` with this same layout
            // (same `len`, same `ALIGN`) and is freed only here, once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is non-null, aligned, and valid for reads of `len`
        // initialised (zeroed at allocation) bytes owned by `self`; for
        // `len == 0` a dangling aligned pointer is valid. The borrow of
        // `self` keeps the allocation alive and unaliased by `&mut`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` guarantees no other
        // reference into the buffer exists for the returned lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("addr", &self.ptr)
            .field("len", &self.len)
            .field("from_arena", &self.is_from_arena())
            .finish()
    }
}

// SAFETY: an `AlignedBuf` owns its memory through a pointer it never
// changes (an allocation of its own or an arena slot it holds until it
// drops); moving the value does not move the memory, and the bytes are
// written only through `&mut self` (`DerefMut`).
unsafe impl crate::driver::StableBuf for AlignedBuf {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_and_aligned() {
        for pages in [1, 2, 128] {
            let buf = AlignedBuf::new(pages * ALIGN).unwrap();
            assert_eq!(buf.len(), pages * ALIGN);
            assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
            assert!(buf.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn empty_buffer_is_aligned() {
        let mut buf = AlignedBuf::new(0).unwrap();
        assert!(buf.is_empty());
        assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
        assert!(buf.as_mut().is_empty());
    }

    #[test]
    fn writes_stick() {
        let mut buf = AlignedBuf::new(ALIGN).unwrap();
        buf[ALIGN - 3..].copy_from_slice(b"end");
        buf[0] = 7;
        assert_eq!(&buf[ALIGN - 3..], b"end");
        assert_eq!(buf.as_ref()[0], 7);
    }

    #[test]
    fn unaligned_length_is_rejected() {
        for len in [1, ALIGN - 1, ALIGN + 512] {
            let err = AlignedBuf::new(len).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn absurd_length_is_an_error_not_a_panic() {
        let len = usize::MAX - (ALIGN - 1); // a multiple of ALIGN
        let err = AlignedBuf::new(len).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// An arena of one page that counts releases.
    #[derive(Debug)]
    struct OnePage {
        page: NonNull<u8>,
        released: std::sync::atomic::AtomicUsize,
    }

    // SAFETY: the page is plain memory owned by the arena; the arena only
    // compares its address and counts releases.
    unsafe impl Send for OnePage {}
    // SAFETY: as above; the counter is atomic.
    unsafe impl Sync for OnePage {}

    impl BufferArena for OnePage {
        fn release(&self, ptr: NonNull<u8>, len: usize) {
            assert_eq!(ptr, self.page);
            assert_eq!(len, ALIGN);
            self.released
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Drop for OnePage {
        fn drop(&mut self) {
            // SAFETY: `page` came from `Box::into_raw` of a `Page` in the
            // test and is freed only here.
            drop(unsafe { Box::from_raw(self.page.as_ptr().cast::<Page>()) });
        }
    }

    #[test]
    fn arena_buffers_go_back_to_their_arena() {
        let raw = Box::into_raw(Box::new(Page([0; ALIGN]))).cast::<u8>();
        let page = NonNull::new(raw).unwrap();
        let arena = Arc::new(OnePage {
            page,
            released: std::sync::atomic::AtomicUsize::new(0),
        });
        let dyn_arena: Arc<dyn BufferArena> = arena.clone();
        // SAFETY: the page is aligned, initialised, owned by the arena (kept
        // alive by the Arc the buffer holds) and touched by nothing else
        // until the buffer is dropped.
        let mut buf = unsafe { AlignedBuf::from_arena(page, ALIGN, dyn_arena) };
        assert!(buf.is_from_arena());
        assert!(!AlignedBuf::new(ALIGN).unwrap().is_from_arena());
        buf[..3].copy_from_slice(b"abc");
        assert!(format!("{buf:?}").contains("from_arena: true"));
        drop(buf);
        assert_eq!(arena.released.load(std::sync::atomic::Ordering::SeqCst), 1);
        // SAFETY: the buffer is gone; the page is the arena's again, alive
        // until `arena` drops.
        let head = unsafe { std::slice::from_raw_parts(page.as_ptr(), 3) };
        assert_eq!(head, b"abc");
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<AlignedBuf>();
    }
}
