//! The buffer manager (DESIGN.md §5): a sharded cache of frames, each
//! behind its own HybridLatch, plus the dirty and pending-delete maps that
//! checkpoints drain.
//!
//! Invariants owned here:
//! - **I1**: a frame is in the dirty map (or in flight in a checkpoint)
//!   iff its cached image is newer than the backend's. Eviction never drops
//!   a dirty, in-flight, pinned or pending-delete frame.
//! - **I3**: draining the dirty and pending-delete maps is atomic; marks
//!   racing with a drain land in the live map for the next round; a failed
//!   round merges its entries back keeping the minimum seq.

pub(crate) mod cached_blob;
pub(crate) mod capture;
pub(crate) mod counters;
pub(crate) mod dirty;
pub(crate) mod eviction;
pub(crate) mod manager;

pub(crate) use cached_blob::{CachedBlob, FrameWrite};
pub(crate) use manager::BufferManager;
