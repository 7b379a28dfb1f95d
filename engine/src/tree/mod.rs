//! The walker: the ART operations over a tree of frames.
//!
//! `read` (optimistic point lookups and locating the frame that owns a
//! key), `insert` and `erase` (edits inside one frame under its exclusive
//! latch), `spill` (moving a subtree to a new frame when one fills),
//! `merge` (folding child frames back, repacking, unlinking empty frames),
//! `range` (ordered iteration in batches), `stats`.
//!
//! Protocol (DESIGN.md §10): readers descend optimistically, validating
//! each frame's latch version before following a link out of it and
//! restarting from the root on failure. A writer locates the frame that
//! owns its key optimistically, takes that one frame's exclusive latch and
//! re-walks inside it; if the walk meets a link (a spill happened
//! meanwhile) or the frame turned obsolete (merged away), it starts over.
//! Operations that latch two frames (merge, unlink) take parent before
//! child, so they cannot deadlock with each other or with writers, which
//! hold one frame at a time.

pub(crate) mod erase;
pub(crate) mod insert;
pub(crate) mod merge;
pub(crate) mod range;
pub(crate) mod read;
pub(crate) mod spill;
pub(crate) mod stats;
pub(crate) mod write;

use std::sync::Arc;

use crate::api::errors::{Error, Result};
use crate::buffer::manager::ROOT_GUID;
use crate::buffer::{BufferManager, CachedBlob, FrameWrite};
use crate::frame::{header, AtomicFrame, Corrupt};

/// Longest key or value.
pub(crate) const MAX_KEY: usize = 65_535;
pub(crate) const MAX_VALUE: usize = 65_535;

pub(crate) fn corrupt_in(blob: &CachedBlob, c: Corrupt) -> Error {
    Error::node_corrupt(c.0).with_blob_guid(blob.guid)
}

/// The tree of frames: buffer manager plus the always-pinned root frame.
pub(crate) struct Core {
    pub(crate) bm: BufferManager,
    pub(crate) root: Arc<CachedBlob>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("bm", &self.bm)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Opens the tree in `bm`'s backend: loads the root frame, or creates
    /// an empty one (dirty) when the backend has none.
    pub(crate) fn open(bm: BufferManager) -> Result<Self> {
        let root = if bm.backend().has_blob(ROOT_GUID)? {
            bm.pin(&ROOT_GUID)?
        } else {
            let f = AtomicFrame::zeroed();
            header::init(&f, ROOT_GUID, 0).map_err(|c| Error::node_corrupt(c.0))?;
            bm.insert_new(ROOT_GUID, f, 0)
        };
        Ok(Self { bm, root })
    }

    /// Latches `blob` exclusively unless it has been merged away or
    /// evicted (E1).
    pub(crate) fn lock_live(&self, blob: Arc<CachedBlob>) -> Option<FrameWrite> {
        FrameWrite::lock_live(blob)
    }
}
