//! Deliberate-bug switches for the loom model checks.
//!
//! Every switch is `false` here, so the compiler removes the broken branch
//! from the engine. The `holt-loom-tests` crate compiles the real latch and
//! buffer-manager files a second time next to its own copy of this module
//! with one switch set, and asserts that loom finds the bug. A model that
//! passes with its switch on is a defect in the model.

/// Exclusive release restores the old version instead of bumping it, so an
/// optimistic reader that overlapped a write still validates.
pub(crate) const LATCH_SKIP_VERSION_BUMP: bool = false;
/// Optimistic validation drops its acquire fence, so the version re-check
/// may be ordered before the data reads it is meant to follow.
pub(crate) const LATCH_WEAK_VALIDATE: bool = false;
/// A shared acquire ignores an exclusive holder.
pub(crate) const LATCH_SHARED_IGNORES_WRITER: bool = false;
/// Restoring a failed checkpoint's drained dirty entries overwrites the
/// fresh marks instead of keeping the minimum seq (breaks I3).
pub(crate) const DIRTY_RESTORE_OVERWRITES: bool = false;
/// Eviction ignores the dirty map (breaks I1).
pub(crate) const EVICT_IGNORES_DIRTY: bool = false;
/// A store into an armed frame does not save the pages it changes first
/// (`CaptureSlot::save` returns at once), so the round later copies the
/// edited pages instead of the frame as of the cut.
pub(crate) const COW_SKIPPED: bool = false;
/// The round's capture fills every page, also those a store already
/// saved, overwriting their image as of the cut with the edited bytes.
pub(crate) const CAPTURE_IGNORES_SAVED: bool = false;
/// Eviction marks the removed frame obsolete only after releasing its
/// latch, so a writer that pinned it meanwhile latches it, finds no mark
/// and stores into a frame no longer in the table (breaks E1).
pub(crate) const EVICT_MARKS_AFTER_UNLOCK: bool = false;
/// A writer stores into the frame it latched without checking the
/// obsolete mark, so a store can land in an evicted frame (breaks E1).
pub(crate) const WRITER_SKIPS_LIVE_CHECK: bool = false;
