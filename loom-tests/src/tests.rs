//! Every model against the correct engine code, and each model against the
//! variants whose deliberate bug it must catch. Every model defaults to
//! preemption bound 3; `LOOM_MAX_PREEMPTIONS` overrides them all.

use crate::models::{self, check, check_capped, check_finds_bug, EvictRule};
use crate::{
    capture_ignores_saved, correct, cow_skipped, dirty_restore_overwrites, evict_ignores_dirty,
    evict_marks_after_unlock, shared_ignores_writer, skip_version_bump, weak_validate,
    writer_skips_live_check,
};

type Correct = correct::latch::HybridLatch;
type SkipVersionBump = skip_version_bump::latch::HybridLatch;
type WeakValidate = weak_validate::latch::HybridLatch;
type SharedIgnoresWriter = shared_ignores_writer::latch::HybridLatch;
/// Its `Latch::remove_latched` runs that variant's `buffer::removal`.
type EvictMarksAfterUnlock = evict_marks_after_unlock::latch::HybridLatch;
/// Its `Latch::lock_live` runs that variant's `buffer::removal`.
type WriterSkipsLiveCheck = writer_skips_live_check::latch::HybridLatch;

type CorrectSeqMap = correct::buffer::dirty::SeqMap;
type RestoreOverwrites = dirty_restore_overwrites::buffer::dirty::SeqMap;
/// Its `SeqMap::evictable` runs that variant's `buffer::eviction`.
type EvictIgnoresDirty = evict_ignores_dirty::buffer::dirty::SeqMap;

type CorrectCow = correct::CowFrame;
type CowSkipped = cow_skipped::CowFrame;
type CaptureIgnoresSaved = capture_ignores_saved::CowFrame;

// ===== model 1: optimistic reader vs exclusive writer =====

/// Model 1 on the real latch: validated optimistic reads are never torn
/// and never span a write. Broken by `LATCH_SKIP_VERSION_BUMP` and
/// `LATCH_WEAK_VALIDATE` (tests below).
#[test]
fn optimistic_vs_exclusive() {
    check(
        "optimistic_vs_exclusive",
        3,
        models::optimistic_vs_exclusive::<Correct>,
    );
}

/// `LATCH_SKIP_VERSION_BUMP` must make model 1 fail: the writer's release
/// restores the version the reader took, so a read that overlapped a write
/// validates.
#[test]
fn optimistic_vs_exclusive_catches_skip_version_bump() {
    check_finds_bug(
        "optimistic_vs_exclusive/skip_version_bump",
        3,
        models::optimistic_vs_exclusive::<SkipVersionBump>,
        "validated optimistic read",
    );
}

/// `LATCH_WEAK_VALIDATE` must make model 1 fail: without the acquire fence
/// in `validate`, the relaxed version re-check may return the stale even
/// version although the data loads already saw the writer's stores, so a
/// torn read validates.
#[test]
fn optimistic_vs_exclusive_catches_weak_validate() {
    check_finds_bug(
        "optimistic_vs_exclusive/weak_validate",
        3,
        models::optimistic_vs_exclusive::<WeakValidate>,
        "validated optimistic read returned torn data",
    );
}

// ===== model 2: shared vs exclusive =====

/// Model 2a on the real latch: a shared holder racing a writer never
/// overlaps it, never sees a half-written frame, and both terminate.
/// Broken by `LATCH_SHARED_IGNORES_WRITER` (test below).
#[test]
fn shared_vs_exclusive() {
    check(
        "shared_vs_exclusive",
        3,
        models::shared_vs_exclusive::<Correct>,
    );
}

/// `LATCH_SHARED_IGNORES_WRITER` must make model 2a fail: the reader checks
/// the version (even), the writer CASes it odd and finds no shared holder,
/// then the reader registers and enters without re-checking. loom reports
/// it on whichever shared-holder check the overlap reaches first (the
/// occupancy word or a half-written frame).
#[test]
fn shared_vs_exclusive_catches_shared_ignores_writer() {
    check_finds_bug(
        "shared_vs_exclusive/shared_ignores_writer",
        3,
        models::shared_vs_exclusive::<SharedIgnoresWriter>,
        "shared holder",
    );
}

/// Model 2b on the real latch: two writers never overlap and never lose
/// an update. No mutation switch breaks it.
#[test]
fn two_writers() {
    check("two_writers", 3, models::two_writers::<Correct>);
}

/// Model 2c on the real latch: two shared holders are inside at once. No
/// mutation switch breaks it.
#[test]
fn shared_holders_coexist() {
    check(
        "shared_holders_coexist",
        3,
        models::shared_holders_coexist::<Correct>,
    );
}

/// Model 2d on the real latch: a writer arriving while a shared holder is
/// inside waits for it and then gets in. No mutation switch breaks it.
#[test]
fn writer_waits_for_shared_holder() {
    check(
        "writer_waits_for_shared_holder",
        3,
        models::writer_waits_for_shared_holder::<Correct>,
    );
}

/// Model 2e on the real latch: a reader arriving while a writer is inside
/// waits for it and sees its whole update. No mutation switch breaks it.
#[test]
fn reader_waits_for_writer() {
    check(
        "reader_waits_for_writer",
        3,
        models::reader_waits_for_writer::<Correct>,
    );
}

// ===== model 3: optimistic upgrade =====

/// Model 3 on the real latch: `try_upgrade` succeeds only on an unchanged
/// version, so concurrent optimistic read-modify-writes lose nothing.
/// Broken by `LATCH_SKIP_VERSION_BUMP` (test below).
#[test]
fn upgrade_increments() {
    check(
        "upgrade_increments",
        3,
        models::upgrade_increments::<Correct>,
    );
}

/// `LATCH_SKIP_VERSION_BUMP` must make model 3 fail: after the first
/// upgrader releases, the version is back to what the second read, so the
/// second upgrade succeeds on a stale value and an increment is lost.
#[test]
fn upgrade_increments_catches_skip_version_bump() {
    check_finds_bug(
        "upgrade_increments/skip_version_bump",
        3,
        models::upgrade_increments::<SkipVersionBump>,
        "update was lost",
    );
}

// ===== model 4: dirty map, marks vs a checkpoint round =====

/// Model 4 on the real `SeqMap`, round completes: marks racing the drain
/// land in the next round with their minima, drained entries count while
/// in flight. `DIRTY_RESTORE_OVERWRITES` does not touch this path (it is
/// caught by the failed-round test below).
#[test]
fn dirty_marks_vs_completed_round() {
    check("dirty_marks_vs_round/complete", 3, || {
        models::dirty_marks_vs_round::<CorrectSeqMap>(true)
    });
}

/// Model 4 on the real `SeqMap`, round fails: `restore` merges the drained
/// entries back keeping the minimum per guid, so nothing is lost. Broken
/// by `DIRTY_RESTORE_OVERWRITES` (test below).
#[test]
fn dirty_marks_vs_failed_round() {
    check("dirty_marks_vs_round/restore", 3, || {
        models::dirty_marks_vs_round::<CorrectSeqMap>(false)
    });
}

/// `DIRTY_RESTORE_OVERWRITES` must make model 4 (failed round) fail: `A@7`
/// is drained, `A@2` is marked while the round runs, and the restore
/// writes 7 over 2.
#[test]
fn dirty_marks_vs_failed_round_catches_restore_overwrites() {
    check_finds_bug(
        "dirty_marks_vs_round/restore/restore_overwrites",
        3,
        || models::dirty_marks_vs_round::<RestoreOverwrites>(false),
        "dirty map kept the wrong minimum seq",
    );
}

// ===== model 5: checkpoint capture vs writer =====

/// Model 5 on the real latch: a capture under the shared latch (raw API)
/// sees a frame entirely before or entirely after a concurrent write.
/// Broken by `LATCH_SHARED_IGNORES_WRITER` (test below).
#[test]
fn capture_vs_writer() {
    check("capture_vs_writer", 3, models::capture_vs_writer::<Correct>);
}

/// `LATCH_SHARED_IGNORES_WRITER` must make model 5 fail: the capture
/// registers after the writer took the latch and copies a mix of old and
/// new words.
#[test]
fn capture_vs_writer_catches_shared_ignores_writer() {
    check_finds_bug(
        "capture_vs_writer/shared_ignores_writer",
        3,
        models::capture_vs_writer::<SharedIgnoresWriter>,
        "captured image mixes the before- and after-state",
    );
}

// ===== model 6: eviction vs dirty marks and a checkpoint =====

/// Model 6 with the real latch, `SeqMap` and eviction rule
/// (`buffer::eviction::evictable`), round completes: eviction never drops
/// a frame whose mark is live or in flight. Broken by
/// `EVICT_IGNORES_DIRTY` (test below).
#[test]
fn evict_vs_dirty_completed_round() {
    check("evict_vs_dirty/complete", 3, || {
        models::evict_vs_dirty::<Correct, CorrectSeqMap>(true, EvictRule::Engine)
    });
}

/// Model 6 with the real eviction rule, round fails and restores: the
/// frame is pinned, then dirty, throughout and is never evicted.
#[test]
fn evict_vs_dirty_failed_round() {
    check("evict_vs_dirty/restore", 3, || {
        models::evict_vs_dirty::<Correct, CorrectSeqMap>(false, EvictRule::Engine)
    });
}

/// `EVICT_IGNORES_DIRTY` must make model 6 (completed round) fail: the
/// real `eviction::evictable` skips the dirty map, so once the writer has
/// unpinned, the evictor drops `G` while its mark is live or in flight,
/// before the checkpoint wrote it, losing the write (I1).
#[test]
fn evict_vs_dirty_catches_evict_ignores_dirty() {
    check_finds_bug(
        "evict_vs_dirty/complete/evict_ignores_dirty",
        3,
        || models::evict_vs_dirty::<Correct, EvictIgnoresDirty>(true, EvictRule::Engine),
        "evicted a frame whose cached image is newer than the durable one (I1)",
    );
}

/// Control for model 6 (not an engine switch): an evictor that consults
/// only the live dirty entries evicts the frame while a checkpoint has it
/// in flight, before the write reached the backend. Shows the model
/// catches an evictor that ignores in-flight entries.
#[test]
fn evict_vs_dirty_catches_live_only_evictor() {
    check_finds_bug(
        "evict_vs_dirty/complete/live_only_evictor",
        3,
        || models::evict_vs_dirty::<Correct, CorrectSeqMap>(true, EvictRule::LiveOnly),
        "evicted a frame whose cached image is newer than the durable one",
    );
}

// ===== loom's SeqCst gap =====

/// Not an engine test: pins the loom limitation that is why the latch
/// separates each side of its shared/exclusive handshake with
/// `fence(SeqCst)`. Store buffering through `SeqCst` RMWs and `SeqCst`
/// loads: C11 forbids both loads reading 0, loom 0.7 reports it. This test
/// passes while loom is wrong; if it starts failing (a loom upgrade that
/// models `SeqCst` accesses), the latch's fences are no longer needed for
/// the models (they stay correct, just redundant on the hardware).
#[test]
fn loom_seqcst_gap_is_still_there() {
    check_finds_bug(
        "loom_seqcst_gap/accesses",
        3,
        models::store_buffering_seqcst_accesses,
        "both SeqCst loads read 0",
    );
}

/// The same store buffering with `fence(SeqCst)` between each RMW and its
/// load passes under loom: the form the latch's handshake now takes.
#[test]
fn loom_models_seqcst_fences() {
    check(
        "loom_seqcst_gap/fences",
        3,
        models::store_buffering_seqcst_fences,
    );
}

// ===== model 7: writer copy-on-write vs the round's capture =====

/// Model 7 on the real capture slot and latch: every page of an armed
/// frame filled exactly once, and the image is the frame as of the cut.
#[test]
fn cow_vs_capture() {
    check("cow_vs_capture", 3, models::cow_vs_capture::<CorrectCow>);
}

/// `COW_SKIPPED` must make model 7 fail: the writer edits pages of the
/// armed frame without saving them first, and the round then captures
/// the edited pages.
#[test]
fn cow_vs_capture_catches_cow_skipped() {
    check_finds_bug(
        "cow_vs_capture/cow_skipped",
        3,
        models::cow_vs_capture::<CowSkipped>,
        "the round's image is not the frame as of the cut",
    );
}

/// `CAPTURE_IGNORES_SAVED` must make model 7 fail: the round refills the
/// pages the writer saved, after the writer changed them.
#[test]
fn cow_vs_capture_catches_capture_ignores_saved() {
    check_finds_bug(
        "cow_vs_capture/capture_ignores_saved",
        3,
        models::cow_vs_capture::<CaptureIgnoresSaved>,
        "filled 2 times",
    );
}

// ===== model 8: E1, frame-table removal vs readers and writers =====

/// Model 8 with the real latch, E1 steps (`buffer::removal`), eviction
/// rule and `SeqMap`: a get after a put sees it, eviction drops no newer
/// frame, and the put's store lands in the cached frame. Broken by
/// `EVICT_MARKS_AFTER_UNLOCK` and `WRITER_SKIPS_LIVE_CHECK` (tests below).
#[test]
fn evict_vs_readers_writers() {
    check("evict_vs_readers_writers/get_after_put", 3, || {
        models::evict_vs_readers_writers::<Correct, CorrectSeqMap>(true)
    });
}

/// Model 8 with the get racing the put as well as the eviction, at
/// preemption bound 2 at most (`LOOM_MAX_PREEMPTIONS` can only lower
/// it): while the evictor holds the latch both the reader and the writer
/// may wait on it, and from bound 3 on loom can alternate the two waiters
/// forever (tokio-rs/loom#53) and fails at its branch limit.
#[test]
fn evict_vs_readers_writers_get_races_put() {
    check_capped("evict_vs_readers_writers/get_races_put", 2, || {
        models::evict_vs_readers_writers::<Correct, CorrectSeqMap>(false)
    });
}

/// `EVICT_MARKS_AFTER_UNLOCK` must make model 8 fail: the evictor removes
/// the unpinned frame and releases its latch before marking it; the
/// writer, which looked the frame up before the removal, pins and latches
/// it in that window, finds no mark and stores into the removed frame.
#[test]
fn evict_vs_readers_writers_catches_evict_marks_after_unlock() {
    check_finds_bug(
        "evict_vs_readers_writers/evict_marks_after_unlock",
        1,
        || models::evict_vs_readers_writers::<EvictMarksAfterUnlock, CorrectSeqMap>(true),
        "a get that started after the put returned missed it",
    );
}

/// `WRITER_SKIPS_LIVE_CHECK` must make model 8 fail: the writer pins and
/// latches a frame the evictor has removed and marked, does not check
/// the mark, and stores into the removed frame.
#[test]
fn evict_vs_readers_writers_catches_writer_skips_live_check() {
    check_finds_bug(
        "evict_vs_readers_writers/writer_skips_live_check",
        1,
        || models::evict_vs_readers_writers::<WriterSkipsLiveCheck, CorrectSeqMap>(true),
        "a get that started after the put returned missed it",
    );
}
