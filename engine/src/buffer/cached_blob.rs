//! One cached frame: its bytes (with their checkpoint capture slot, see
//! `frame::capture`), its latch, and bookkeeping.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::frame::AtomicFrame;
use crate::latch::HybridLatch;
use crate::store::BlobGuid;

#[derive(Debug)]
pub(crate) struct CachedBlob {
    pub(crate) guid: BlobGuid,
    pub(crate) latch: HybridLatch,
    pub(crate) frame: AtomicFrame,
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
    pub(crate) fn lock(blob: Arc<CachedBlob>) -> Self {
        let version = blob.latch.lock_exclusive_raw();
        Self { blob, version }
    }

    /// [`FrameWrite::lock`] without waiting: `None` while anyone holds
    /// the latch in any mode. For a writer that already holds a frame
    /// below this one and must not wait against the top-down order.
    pub(crate) fn try_lock(blob: Arc<CachedBlob>) -> Option<Self> {
        let version = blob.latch.try_lock_exclusive()?;
        Some(Self { blob, version })
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
