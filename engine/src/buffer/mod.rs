//! The buffer manager (DESIGN.md §5): a cache of frames (the frame table,
//! read without locks), each behind its own HybridLatch, plus the dirty and
//! pending-delete maps that checkpoints drain.
//!
//! Invariants owned here:
//! - **I1**: a frame is in the dirty map (or in flight in a checkpoint)
//!   iff its cached image is newer than the backend's. Eviction never drops
//!   a dirty, in-flight, pinned or pending-delete frame.
//! - **I3**: draining the dirty and pending-delete maps is atomic; marks
//!   racing with a drain land in the live map for the next round; a failed
//!   round merges its entries back keeping the minimum seq.
//! - **Captures** (DESIGN.md §8 step 2, `frame::capture`): a round's cut
//!   arms the capture slot of every drained frame; afterwards each page of
//!   an armed frame's image is filled exactly once with the page as of the
//!   cut — by the first store into it (the store funnel of
//!   `frame::mem` saves a page before changing it, under the exclusive
//!   latch), otherwise by the round under the shared latch. This needs
//!   the gate rule (`TreeInner::gate`): no exclusive latch holder that
//!   stores into a frame is inside one while the cut arms it. Eviction
//!   only marks a frame obsolete; a load latches a frame nobody can reach
//!   before it is installed, and fresh frames are not armed. No armed
//!   slot outlives its round: a failed or dropped round disarms them all
//!   (`round`).

pub(crate) mod cached_blob;
pub(crate) mod counters;
pub(crate) mod dirty;
pub(crate) mod eviction;
pub(crate) mod frame_table;
pub(crate) mod image_pool;
pub(crate) mod image_writer;
pub(crate) mod manager;
pub(crate) mod removal;
pub(crate) mod round;

pub(crate) use cached_blob::{CachedBlob, FrameWrite};
pub(crate) use manager::BufferManager;
