//! The two latched steps of protocol E1 (stated in `frame_table`): how a
//! frame leaves the table, and how a writer that pinned a frame learns
//! whether it has left.
//!
//! * [`remove_latched`] — the remover takes the frame's exclusive latch
//!   without waiting, decides and removes the table entry, and marks the
//!   frame obsolete *before* releasing the latch.
//! * [`lock_live`] — a writer that pinned a frame takes its exclusive
//!   latch and checks the mark before it stores; an obsolete frame is
//!   released again and the writer starts over.
//!
//! The latch orders the two: a writer's latch either comes after a
//! removal's release (and then sees the mark) or before its acquire (and
//! then the remover sees the writer's pin or dirty mark and keeps the
//! frame). This file is compiled against loom by `holt-loom-tests`
//! (model 8), so it refers only to `super::super::{latch, mutation}`.

use super::super::latch::HybridLatch;
use super::super::mutation;

/// Runs `remove` (decide and remove the table entry; `true` if it did)
/// under `latch` taken exclusively without waiting, and `mark_obsolete`
/// before releasing the latch if it removed. `false` if the latch was
/// held in any mode or `remove` kept the entry.
#[inline]
pub(crate) fn remove_latched(
    latch: &HybridLatch,
    remove: impl FnOnce() -> bool,
    mark_obsolete: impl FnOnce(),
) -> bool {
    let Some(v) = latch.try_lock_exclusive() else {
        return false;
    };
    let gone = remove();
    if mutation::EVICT_MARKS_AFTER_UNLOCK {
        latch.unlock_exclusive_raw(v);
        if gone {
            mark_obsolete();
        }
        return gone;
    }
    if gone {
        mark_obsolete();
    }
    latch.unlock_exclusive_raw(v);
    gone
}

/// Takes `latch` exclusively for a writer and checks the frame's mark:
/// the even version to release with `unlock_exclusive_raw` if the frame
/// is live, `None` (latch released) if it is obsolete.
#[inline]
pub(crate) fn lock_live(latch: &HybridLatch, is_obsolete: impl FnOnce() -> bool) -> Option<u64> {
    let v = latch.lock_exclusive_raw();
    if mutation::WRITER_SKIPS_LIVE_CHECK || !is_obsolete() {
        return Some(v);
    }
    latch.unlock_exclusive_raw(v);
    None
}
