//! Every model against the correct latch, and each model against the
//! variants whose deliberate bug it must catch. Default preemption bounds
//! are per model; `LOOM_MAX_PREEMPTIONS` overrides them all.

use crate::models::{self, check, check_finds_bug};
use crate::{correct, shared_ignores_writer, skip_version_bump, weak_validate};

type Correct = correct::latch::HybridLatch;
type SkipVersionBump = skip_version_bump::latch::HybridLatch;
type WeakValidate = weak_validate::latch::HybridLatch;
type SharedIgnoresWriter = shared_ignores_writer::latch::HybridLatch;

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
/// restores the version the reader took, so a read that overlapped the
/// write validates and returns `(1, 0)`.
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
/// torn or too-new read validates.
#[test]
fn optimistic_vs_exclusive_catches_weak_validate() {
    check_finds_bug(
        "optimistic_vs_exclusive/weak_validate",
        3,
        models::optimistic_vs_exclusive::<WeakValidate>,
        "validated optimistic read",
    );
}

// ===== model 2: shared vs exclusive =====

/// Model 2a on the real latch: a shared holder and a writer never overlap,
/// the shared holder never sees a half-written frame, and both terminate.
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
/// the version (even), the writer CASes it odd and sees no shared holder,
/// then the reader registers and enters without re-checking: both inside.
#[test]
fn shared_vs_exclusive_catches_shared_ignores_writer() {
    check_finds_bug(
        "shared_vs_exclusive/shared_ignores_writer",
        3,
        models::shared_vs_exclusive::<SharedIgnoresWriter>,
        "shared holder",
    );
}

/// Model 2b on the real latch: two writers never overlap and never lose an
/// update, a reader never overlaps either, all terminate. Broken by
/// `LATCH_SHARED_IGNORES_WRITER` (test below).
#[test]
fn two_writers_and_reader() {
    check(
        "two_writers_and_reader",
        2,
        models::two_writers_and_reader::<Correct>,
    );
}

/// `LATCH_SHARED_IGNORES_WRITER` must make model 2b fail, as for 2a.
#[test]
fn two_writers_and_reader_catches_shared_ignores_writer() {
    check_finds_bug(
        "two_writers_and_reader/shared_ignores_writer",
        2,
        models::two_writers_and_reader::<SharedIgnoresWriter>,
        "shared holder",
    );
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

#[test]
fn zz_debug_trace() {
    loom::model(models::two_writers_and_reader::<crate::xfix::latch::HybridLatch>);
}
#[test]
fn zz_fix_2a() { check("fix/2a", 3, models::shared_vs_exclusive::<crate::xfix::latch::HybridLatch>); }
#[test]
fn zz_fix_2b() { check("fix/2b", 2, models::two_writers_and_reader::<crate::xfix::latch::HybridLatch>); }
#[test]
fn zz_fix_2b3() { check("fix/2b@3", 3, models::two_writers_and_reader::<crate::xfix::latch::HybridLatch>); }
#[test]
fn zz_fix_siw_2a() { check_finds_bug("fixsiw/2a", 3, models::shared_vs_exclusive::<crate::xfix_siw::latch::HybridLatch>, "shared holder"); }
#[test]
fn zz_fix_siw_2b() { check_finds_bug("fixsiw/2b", 2, models::two_writers_and_reader::<crate::xfix_siw::latch::HybridLatch>, "shared holder"); }
