//! One cached frame: its bytes, its latch, its checkpoint capture slot,
//! and bookkeeping.
//!
//! [`FrameWrite::lock`] is the only way to take a frame's exclusive latch
//! in the engine; it fills a pending checkpoint capture before handing
//! out the frame (copy-on-write, see `buffer::capture`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::capture::{self, CaptureSlot};
use crate::frame::AtomicFrame;
use crate::latch::HybridLatch;
use crate::store::{AlignedBlobBuf, BlobGuid};

#[derive(Debug)]
pub(crate) struct CachedBlob {
    pub(crate) guid: BlobGuid,
    pub(crate) latch: HybridLatch,
    pub(crate) frame: AtomicFrame,
    /// The checkpoint capture pending for this frame, if any: armed at a
    /// round's cut, filled by the first exclusive holder or by the round.
    pub(crate) capture: CaptureSlot<AlignedBlobBuf>,
    /// Set (under the exclusive latch) when a merge folds this frame into
    /// its parent or it is unlinked; anyone who reaches it afterwards must
    /// restart from the root.
    obsolete: AtomicBool,
    /// Buffer-manager clock tick of the last pin (recency for eviction).
    last_touched: AtomicU64,
}

impl CachedBlob {
    pub(crate) fn new(guid: BlobGuid, frame: AtomicFrame, tick: u64) -> Self {
        Self {
            guid,
            latch: HybridLatch::new(),
            frame,
            capture: CaptureSlot::default(),
            obsolete: AtomicBool::new(false),
            last_touched: AtomicU64::new(tick),
        }
    }

    pub(crate) fn is_obsolete(&self) -> bool {
        self.obsolete.load(Ordering::Acquire)
    }

    /// Caller holds the exclusive latch.
    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    pub(crate) fn last_touched(&self) -> u64 {
        self.last_touched.load(Ordering::Relaxed)
    }

    /// Records a use at `tick`. Skips the store while the recorded tick is
    /// recent, so hot frames are not written on every hop.
    #[inline]
    pub(crate) fn touch(&self, tick: u64) {
        if self.last_touched.load(Ordering::Relaxed) + 64 < tick {
            self.last_touched.store(tick, Ordering::Relaxed);
        }
    }
}

/// An exclusive hold on a cached frame that owns its `Arc`, so it can be
/// kept in collections and moved across calls. Dropping releases the
/// latch (bumping the version).
#[derive(Debug)]
pub(crate) struct FrameWrite {
    blob: Arc<CachedBlob>,
    version: u64,
}

impl FrameWrite {
    /// Takes the exclusive latch. If a checkpoint round armed this frame
    /// and has not captured it yet, its image (as of the round's cut) is
    /// copied into the round's buffer first, before the caller can change
    /// a byte.
    pub(crate) fn lock(blob: Arc<CachedBlob>) -> Self {
        let version = capture::lock_for_write(&blob.latch, &blob.capture, |buf| {
            blob.frame.copy_to(buf.as_mut_slice());
        });
        Self { blob, version }
    }

    pub(crate) fn blob(&self) -> &Arc<CachedBlob> {
        &self.blob
    }

    pub(crate) fn frame(&self) -> &AtomicFrame {
        &self.blob.frame
    }
}

impl Drop for FrameWrite {
    fn drop(&mut self) {
        self.blob.latch.unlock_exclusive_raw(self.version);
    }
}

/// A shared hold on a cached frame that owns its `Arc`.
#[derive(Debug)]
pub(crate) struct FrameRead {
    blob: Arc<CachedBlob>,
}

impl FrameRead {
    pub(crate) fn lock(blob: Arc<CachedBlob>) -> Self {
        blob.latch.lock_shared_raw();
        Self { blob }
    }

    pub(crate) fn blob(&self) -> &Arc<CachedBlob> {
        &self.blob
    }
}

impl Drop for FrameRead {
    fn drop(&mut self) {
        self.blob.latch.unlock_shared_raw();
    }
}
