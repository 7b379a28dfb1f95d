//! Storage seam: the [`Backend`] trait that moves whole blob frames to and
//! from storage, the frame-sized [`AlignedBlobBuf`], and the two built-in
//! backends ([`MemoryBackend`], [`PersistentBackend`]).

mod aligned;
mod error;
mod manifest;
mod memory;
mod persistent;

pub use aligned::AlignedBlobBuf;
pub use error::{AllocError, FreeError};
pub use memory::MemoryBackend;
pub use persistent::PersistentBackend;

use crate::api::errors::Result;

/// Size in bytes of one blob frame (512 KiB); every backend read and write
/// moves exactly this many bytes.
pub const FRAME_SIZE: usize = 524_288;

/// 16-byte identifier of a blob frame. The root frame is `[0u8; 16]`.
pub type BlobGuid = [u8; 16];

/// Where blob frames live. The engine reaches storage only through this
/// trait, so wrappers (fault injection, tracing, remote stores) can be
/// slotted in with [`Tree::open_with_backend`](crate::Tree::open_with_backend).
///
/// Contract:
/// - reads and writes always move one whole 512 KiB frame;
/// - a blob write is atomic: a later read sees the old frame or the new one;
/// - deleting a missing guid is a no-op;
/// - [`flush`](Backend::flush) makes every earlier write and delete durable.
///
/// The trait is object-safe and is normally used as `Arc<dyn Backend>`.
pub trait Backend: Send + Sync {
    /// Copies the frame stored under `guid` into `dst`.
    ///
    /// # Errors
    /// [`Error::BackendIo`](crate::Error::BackendIo) with
    /// [`io::ErrorKind::NotFound`](std::io::ErrorKind::NotFound) when no
    /// such blob exists, or any I/O failure of the storage.
    fn read_blob(&self, guid: BlobGuid, dst: &mut AlignedBlobBuf) -> Result<()>;

    /// Stores `src` under `guid`, replacing any earlier frame atomically.
    ///
    /// # Errors
    /// Any I/O failure of the storage.
    fn write_blob(&self, guid: BlobGuid, src: &AlignedBlobBuf) -> Result<()>;

    /// Removes the frame stored under `guid`; a missing guid is not an error.
    ///
    /// # Errors
    /// Any I/O failure of the storage.
    fn delete_blob(&self, guid: BlobGuid) -> Result<()>;

    /// Lists the guids of all stored frames.
    ///
    /// # Errors
    /// Any I/O failure of the storage.
    fn list_blobs(&self) -> Result<Vec<BlobGuid>>;

    /// Makes every earlier write and delete durable.
    ///
    /// # Errors
    /// Any I/O failure of the storage.
    fn flush(&self) -> Result<()>;

    /// Tells whether a frame is stored under `guid`. The default scans
    /// [`list_blobs`](Backend::list_blobs); backends with an index should
    /// override it.
    ///
    /// # Errors
    /// Any I/O failure of the storage.
    fn has_blob(&self, guid: BlobGuid) -> Result<bool> {
        self.list_blobs().map(|v| v.contains(&guid))
    }

    /// Reads several frames at once (a prefetch). The default calls
    /// [`read_blob`](Backend::read_blob) for each; backends that can batch
    /// I/O should override it (the persistent backend submits one io_uring
    /// batch).
    ///
    /// # Errors
    /// As [`read_blob`](Backend::read_blob), for the first frame that
    /// fails; the other buffers' contents are then unspecified.
    fn read_blobs(&self, reads: &mut [(BlobGuid, &mut AlignedBlobBuf)]) -> Result<()> {
        for (guid, buf) in reads.iter_mut() {
            self.read_blob(*guid, buf)?;
        }
        Ok(())
    }

    /// Stores several frames, in order. The default calls
    /// [`write_blob`](Backend::write_blob) for each and stops at the first
    /// error; backends that can batch I/O should override it.
    ///
    /// # Errors
    /// The first error returned by a write; frames before it may be stored.
    fn write_blobs(&self, blobs: &[(BlobGuid, &AlignedBlobBuf)]) -> Result<()> {
        for (guid, buf) in blobs {
            self.write_blob(*guid, buf)?;
        }
        Ok(())
    }

    /// Stores the frames `feed` hands out, each as soon as it is handed
    /// out, until it says [`ImageNext::End`], and gives every buffer back
    /// through [`ImageFeed::done`] once its write has finished (a
    /// checkpoint round streams its images this way while it captures the
    /// next ones, and reuses the buffers that come back). The first failed
    /// write stops the stream: nothing more is asked of `feed`, writes
    /// already started finish and come back, and the call returns the
    /// error. The default writes one frame at a time with
    /// [`write_blob`](Backend::write_blob); [`PersistentBackend`] keeps as
    /// many writes in flight as its I/O driver allows
    /// ([`IoFile::write_stream`](holt_backend_sync::IoFile::write_stream)).
    ///
    /// # Errors
    /// The first error of a write; frames written before it may be stored.
    fn write_stream(&self, feed: &mut dyn ImageFeed) -> Result<()> {
        loop {
            match feed.next(true) {
                ImageNext::Image(guid, buf) => {
                    let res = self.write_blob(guid, &buf);
                    feed.done(guid, buf, res.is_ok());
                    res?;
                }
                ImageNext::NotYet => {}
                ImageNext::End => return Ok(()),
            }
        }
    }

    /// Announces that the engine keeps up to `count` frame buffers from
    /// [`alloc_frame_buf`](Backend::alloc_frame_buf) for checkpoint
    /// images (called once, at the first checkpoint round), so a backend
    /// whose I/O is cheaper from memory of its own can set that memory up,
    /// sized to the need. Returns how many buffers `alloc_frame_buf` can
    /// hand out from such memory (0: all plain). The default returns 0;
    /// [`PersistentBackend`] asks its I/O driver
    /// ([`IoDriver::reserve_buffers`](holt_backend_sync::IoDriver::reserve_buffers)).
    fn reserve_frame_bufs(&self, count: usize) -> usize {
        let _ = count;
        0
    }

    /// A zeroed frame buffer for a checkpoint image, which the engine
    /// fills and passes to [`write_blobs`](Backend::write_blobs). The
    /// default is a plain [`AlignedBlobBuf::zeroed`]; [`PersistentBackend`]
    /// takes it from its I/O driver, whose io_uring variant hands out slots
    /// of a registered arena that it writes with `WRITE_FIXED`. Any
    /// [`AlignedBlobBuf`] works with any backend; this only decides how
    /// cheap the write is.
    fn alloc_frame_buf(&self) -> AlignedBlobBuf {
        AlignedBlobBuf::zeroed()
    }
}

/// What [`ImageFeed::next`] has.
#[derive(Debug)]
pub enum ImageNext {
    /// A frame image to store under the guid.
    Image(BlobGuid, AlignedBlobBuf),
    /// Nothing yet (only when asked without `wait`).
    NotYet,
    /// No more images.
    End,
}

/// The source and sink of a [`Backend::write_stream`].
pub trait ImageFeed {
    /// The next image. With `wait` the call may block until one is ready
    /// (a backend asks that way only when it has no write in flight);
    /// without it, it answers [`ImageNext::NotYet`] rather than block.
    fn next(&mut self, wait: bool) -> ImageNext;
    /// The write of `guid`'s image has finished (`ok`: stored); its buffer
    /// comes back. Called exactly once for every image
    /// [`next`](Self::next) handed out, before
    /// [`Backend::write_stream`] returns.
    fn done(&mut self, guid: BlobGuid, buf: AlignedBlobBuf, ok: bool);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn backend_is_object_safe_and_default_methods_work() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let mut a = AlignedBlobBuf::zeroed();
        a.as_mut_slice()[0] = 1;
        let mut b = AlignedBlobBuf::zeroed();
        b.as_mut_slice()[0] = 2;
        let ga = [1u8; 16];
        let gb = [2u8; 16];
        assert!(backend.write_blobs(&[(ga, &a), (gb, &b)]).is_ok());
        assert_eq!(backend.list_blobs().ok(), Some(vec![ga, gb]));
        let mut out = AlignedBlobBuf::zeroed();
        assert!(backend.read_blob(gb, &mut out).is_ok());
        assert_eq!(out.as_slice()[0], 2);
        let (mut x, mut y) = (AlignedBlobBuf::zeroed(), AlignedBlobBuf::zeroed());
        assert!(backend
            .read_blobs(&mut [(gb, &mut x), (ga, &mut y)])
            .is_ok());
        assert_eq!((x.as_slice()[0], y.as_slice()[0]), (2, 1));
        let mut z = AlignedBlobBuf::zeroed();
        let missing = backend.read_blobs(&mut [(ga, &mut x), ([9; 16], &mut z)]);
        assert!(missing.is_err(), "a missing frame fails the batch");
        assert_eq!(backend.reserve_frame_bufs(64), 0);
        assert!(!backend.alloc_frame_buf().is_from_arena());
    }

    #[test]
    fn default_has_blob_uses_list() {
        struct ListOnly;
        impl Backend for ListOnly {
            fn read_blob(&self, _: BlobGuid, _: &mut AlignedBlobBuf) -> Result<()> {
                Ok(())
            }
            fn write_blob(&self, _: BlobGuid, _: &AlignedBlobBuf) -> Result<()> {
                Ok(())
            }
            fn delete_blob(&self, _: BlobGuid) -> Result<()> {
                Ok(())
            }
            fn list_blobs(&self) -> Result<Vec<BlobGuid>> {
                Ok(vec![[5; 16]])
            }
            fn flush(&self) -> Result<()> {
                Ok(())
            }
        }
        assert_eq!(ListOnly.has_blob([5; 16]).ok(), Some(true));
        assert_eq!(ListOnly.has_blob([6; 16]).ok(), Some(false));
    }
}
