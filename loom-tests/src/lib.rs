//! loom model checks of holt's HybridLatch (DESIGN.md §6) and of the
//! buffer manager's dirty map, eviction rule and frame-table removal
//! protocol (DESIGN.md §5, I1/I3, E1 in `buffer/frame_table.rs`),
//! compiled from the engine's real source, with deliberately broken
//! variants that loom must catch.
//!
//! # Running
//! ```text
//! cargo test -p holt-loom-tests --release                    # every model, default bounds
//! cargo test -p holt-loom-tests --release -- --nocapture     # ... printing bound, executions, time
//! LOOM_MAX_PREEMPTIONS=4 cargo test -p holt-loom-tests --release   # deeper
//! ```
//! Always build in release: loom re-runs each model once per explored
//! execution. Every model defaults to preemption bound 3 (`tests.rs`),
//! except model 8's racing get, capped at 2 (below); on
//! two cores the whole suite takes about 2 s at 3, 4 s at 4 and 12 s at 5
//! with `--test-threads=1` (model 1 is half of it). The mutation tests of
//! model 4 and model 6's live-only control need bound 2 to find their
//! bug, model 6's `EVICT_IGNORES_DIRTY` test and the mutation tests of
//! models 7 and 8 bound 1. loom's own
//! environment variables override the defaults:
//! * `LOOM_MAX_PREEMPTIONS=N` — explore executions with up to `N` forced
//!   thread switches. Cost grows steeply with `N`; add `--test-threads=1`
//!   and a test name to look at one model.
//! * `LOOM_MAX_BRANCHES=N` — per-execution limit on scheduling points
//!   (default 1000). A model that exceeds it fails with "Model exceeded
//!   maximum number of branches": that is how a wait that never ends shows
//!   up, because every latch wait yields to loom (`sync::Backoff`). Raise
//!   it only if a deeper bound legitimately needs longer executions.
//! * `LOOM_MAX_DURATION=secs`, `LOOM_MAX_PERMUTATIONS=N` stop early
//!   (checked every 20 000 executions); `LOOM_LOG=1` and `LOOM_LOCATION=1`
//!   explain a failure (slow: narrow it down first).
//!
//! The latch models and model 7 have two threads, the dirty-map and
//! eviction models (4, 6, 8) three. Never let two threads spin on a latch a third holds:
//! loom's scheduler may alternate the two spinners forever without
//! spending a preemption (tokio-rs/loom#53), and such a model fails at the
//! branch limit from bound 3 on even though the latch is fine. In models 4
//! and 6 the seq map's mutex blocks (loom parks the waiter) and at most
//! one thread spins on the latch at a time. Model 8's evictor never waits
//! (`try_lock_exclusive`), but while it holds the latch the writer and a
//! get racing it may both wait: that run (`get_races_put`) is capped at
//! bound 2 (`models::check_capped`; it fails at the branch limit at 3),
//! and the run at bound 3 starts the get after joining the writer.
//!
//! # How the real code gets here
//! `build.rs` sets `cfg(loom)` for this crate only. Each variant below is
//! an inline module stamped out by the `variant!` macro. The module carries
//! `#[path = "../../engine/src"]`, so the `#[path = "sync.rs"] mod sync;`
//! and `#[path = "latch.rs"] mod latch;` inside it are the engine's files
//! (a `#[path]` inside an inline module is resolved against the directory
//! the module's own `#[path]` names), `mod buffer { #[path = "dirty.rs"]
//! mod dirty; #[path = "eviction.rs"] mod eviction; #[path =
//! "removal.rs"] mod removal; }` are `engine/src/buffer/dirty.rs`,
//! `eviction.rs` and `removal.rs` (a nested inline module adds its name
//! to that directory), and `mod frame
//! { #[path = "capture.rs"] mod capture; }` is
//! `engine/src/frame/capture.rs`, which refers only to
//! `super::super::{latch, sync, mutation}`. Next to them
//! sits a `mutation` module written here. `latch.rs` refers only to
//! `super::sync` and `super::mutation`, `buffer/dirty.rs` only to
//! `super::super::{sync, mutation}`, `buffer/eviction.rs` only to
//! `super::super::mutation` and `super::dirty::SeqMap`, `buffer/removal.rs`
//! only to `super::super::{latch, mutation}`, so in each variant
//! they bind to the included `sync.rs` — which under `cfg(loom)`
//! re-exports loom's atomics, fences, `Mutex` and a `yield_now`, so every
//! lock, spin and backoff step is a loom scheduling point — to the
//! included `SeqMap`, and to this crate's switches. Nothing is copied: an
//! edit to `engine/src/latch.rs`, `engine/src/frame/capture.rs`,
//! `engine/src/buffer/dirty.rs`, `engine/src/buffer/eviction.rs` or
//! `engine/src/buffer/removal.rs` is what these models check on the next
//! run.
//!
//! `engine/src/mutation.rs` defines deliberate-bug switches, all `false`
//! there so the broken branches compile away. Each variant's `mutation`
//! module defines every one of those constants (the list in `variant!`
//! must match the engine's file; a name missing here fails to compile
//! because the included code refers to it, a typo in a `variant!` line
//! fails a `const` assertion) and turns on only the switches named in its
//! `variant!` line:
//! * [`correct`] — no switch; every model must pass;
//! * [`skip_version_bump`] — `LATCH_SKIP_VERSION_BUMP`;
//! * [`weak_validate`] — `LATCH_WEAK_VALIDATE`;
//! * [`shared_ignores_writer`] — `LATCH_SHARED_IGNORES_WRITER`;
//! * [`dirty_restore_overwrites`] — `DIRTY_RESTORE_OVERWRITES`;
//! * [`evict_ignores_dirty`] — `EVICT_IGNORES_DIRTY`;
//! * [`cow_skipped`] — `COW_SKIPPED`;
//! * [`capture_ignores_saved`] — `CAPTURE_IGNORES_SAVED`;
//! * [`evict_marks_after_unlock`] — `EVICT_MARKS_AFTER_UNLOCK`;
//! * [`writer_skips_live_check`] — `WRITER_SKIPS_LIVE_CHECK`.
//!
//! `buffer/manager.rs` and `buffer/frame_table.rs` are not included (the
//! `papaya` table is not loom-aware). The manager calls
//! `buffer::eviction::evictable` for every eviction decision, inside
//! `buffer::removal::remove_latched` (E1's latch-check-remove-mark), and
//! a writer's `Core::lock_live` runs `buffer::removal::lock_live`; models
//! 6 and 8 call the same functions around a modelled table: model 6's is
//! a loom `RwLock` slot (pins only, no removal protocol), model 8's a
//! one-entry table with papaya's semantics (see `models::E1Cache`).
//!
//! The models (`models.rs`) are generic over small traits that each
//! variant implements by forwarding to its own code: `Latch` to
//! `latch::HybridLatch` (the real guards and their `Drop`s, the raw
//! lock/unlock calls `FrameRead`/`FrameWrite` use, and
//! `buffer::removal`'s two steps on that latch), `SeqMap` to
//! `buffer::dirty::SeqMap` (and its `evictable` to
//! `buffer::eviction::evictable`, which takes that `SeqMap`). `tests.rs` runs every model against `correct`,
//! and each model against the variants whose bug it documents, requiring
//! loom to panic *on the invariant that bug breaks* (the panic message is
//! checked). A passing mutation test means loom found the bug; a failing
//! one means a model has lost its teeth.
//!
//! | model | checks | caught mutation |
//! |---|---|---|
//! | 1 `optimistic_vs_exclusive` | validated reads are never torn, never span a write | `LATCH_SKIP_VERSION_BUMP`, `LATCH_WEAK_VALIDATE` |
//! | 2a `shared_vs_exclusive` | racing shared/exclusive never overlap, both finish | `LATCH_SHARED_IGNORES_WRITER` |
//! | 2b `two_writers` | writers never overlap or lose an update | none yet |
//! | 2c `shared_holders_coexist` | two shared holders are inside at once | none yet |
//! | 2d `writer_waits_for_shared_holder` | a writer waits out a shared holder, then gets in | none yet |
//! | 2e `reader_waits_for_writer` | a reader waits for a writer, then sees all of it | none yet |
//! | 3 `upgrade_increments` | `try_upgrade` only on an unchanged version | `LATCH_SKIP_VERSION_BUMP` |
//! | 4 `dirty_marks_vs_round` (complete / restore) | marks racing a drain are neither lost nor lose their minimum; in-flight entries count (I1, I3) | `DIRTY_RESTORE_OVERWRITES` (restore) |
//! | 5 `capture_vs_writer` | a checkpoint capture under the shared latch is all-before or all-after a write | `LATCH_SHARED_IGNORES_WRITER` |
//! | 6 `evict_vs_dirty` (complete / restore) | the real eviction rule (`buffer::eviction::evictable`) never drops a frame marked dirty, live or in flight (I1) | `EVICT_IGNORES_DIRTY` (complete); a live-only evictor (control, written here) |
//! | 7 `cow_vs_capture` | a writer's page-wise copy-on-write (`CaptureSlot::save`, as `AtomicFrame`'s stores call it) vs the round's capture (`capture::capture_shared`) of an armed frame: every page filled exactly once, and the image is the pre-write frame | `COW_SKIPPED`, `CAPTURE_IGNORES_SAVED` |
//! | 8 `evict_vs_readers_writers` (get after put / get races put) | E1: eviction (`removal::remove_latched` around `eviction::evictable`) vs an unpinned optimistic reader and a pinning writer (`removal::lock_live`), both restarting and reloading: a get after the put sees it, no store lands in an evicted frame, no newer frame is evicted | `EVICT_MARKS_AFTER_UNLOCK`, `WRITER_SKIPS_LIVE_CHECK` (get after put) |
//!
//! # loom and `SeqCst`
//! loom 0.7 treats `SeqCst` loads, stores and read-modify-writes as
//! `AcqRel` (loom README, tokio-rs/loom#180); only `fence(SeqCst)` is
//! modelled as sequentially consistent. The latch's shared/exclusive
//! handshake is Dekker-style (the writer CASes `version` odd, then loads
//! `shared`; a reader `fetch_add`s `shared`, then loads `version`), so
//! each side separates its RMW from its load with `fence(SeqCst)`. C11
//! already forbids both loads reading the stale value through the total
//! order of the `SeqCst` accesses alone, but loom does not, and without
//! the fences it fails models 2a and 5 on the correct latch. The pair of
//! tests `loom_seqcst_gap_is_still_there` / `loom_models_seqcst_fences`
//! pins this on a four-line litmus test: the first fails the day a loom
//! upgrade models `SeqCst` accesses (the fences are then redundant for
//! the models, though still correct).

/// `true` iff `name` is in `on`. `const`, so the switches stay constants
/// and the broken branches compile away in the variants that leave them
/// off, exactly as in the engine.
const fn switch_on(name: &str, on: &[&str]) -> bool {
    let mut i = 0;
    while i < on.len() {
        if str_eq(name, on[i]) {
            return true;
        }
        i += 1;
    }
    false
}

/// `true` iff every name in `on` is one of `known` (catches typos in a
/// `variant!` line at compile time).
const fn all_known(on: &[&str], known: &[&str]) -> bool {
    let mut i = 0;
    while i < on.len() {
        if !switch_on(on[i], known) {
            return false;
        }
        i += 1;
    }
    true
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Stamps out one variant: the engine's `sync.rs` and `latch.rs` included
/// by path, plus a `mutation` module with the listed switches on.
macro_rules! variant {
    ($(#[$doc:meta])* $name:ident: [$($on:ident),* $(,)?]) => {
        $(#[$doc])*
        // The included engine files are compiled in full; the models use
        // only part of them.
        #[allow(dead_code, unused_imports)]
        // Compiling the same files once per variant is the point.
        #[allow(clippy::duplicate_mod)]
        #[path = "../../engine/src"]
        pub mod $name {
            #[path = "sync.rs"]
            pub(crate) mod sync;
            #[path = "latch.rs"]
            pub(crate) mod latch;

            /// `engine/src/buffer/dirty.rs` and `eviction.rs` at the same
            /// depth as in the engine, so their `super::super::{sync,
            /// mutation}` are this variant's modules and `eviction.rs`'s
            /// `super::dirty::SeqMap` is this variant's `SeqMap`.
            pub(crate) mod buffer {
                #[path = "dirty.rs"]
                pub(crate) mod dirty;
                #[path = "eviction.rs"]
                pub(crate) mod eviction;
                #[path = "removal.rs"]
                pub(crate) mod removal;
            }

            /// `engine/src/frame/capture.rs` at the same depth as in the
            /// engine (`super::super::{latch, sync, mutation}`).
            pub(crate) mod frame {
                #[path = "capture.rs"]
                pub(crate) mod capture;
            }

            /// This variant's copy of `engine/src/mutation.rs`.
            pub(crate) mod mutation {
                const ON: &[&str] = &[$(stringify!($on)),*];
                variant!(@switches ON:
                    LATCH_SKIP_VERSION_BUMP,
                    LATCH_WEAK_VALIDATE,
                    LATCH_SHARED_IGNORES_WRITER,
                    DIRTY_RESTORE_OVERWRITES,
                    EVICT_IGNORES_DIRTY,
                    COW_SKIPPED,
                    CAPTURE_IGNORES_SAVED,
                    EVICT_MARKS_AFTER_UNLOCK,
                    WRITER_SKIPS_LIVE_CHECK,
                );
            }

            #[cfg(test)]
            impl crate::models::Latch for latch::HybridLatch {
                fn new() -> Self {
                    latch::HybridLatch::new()
                }
                fn optimistic(&self) -> u64 {
                    latch::HybridLatch::optimistic(self)
                }
                fn validate(&self, version: u64) -> bool {
                    latch::HybridLatch::validate(self, version).is_ok()
                }
                fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
                    let _guard = latch::HybridLatch::lock_exclusive(self);
                    f()
                }
                fn shared<R>(&self, f: impl FnOnce() -> R) -> R {
                    let _guard = latch::HybridLatch::lock_shared(self);
                    f()
                }
                fn upgrade<R>(&self, version: u64, f: impl FnOnce() -> R) -> Option<R> {
                    let _guard = latch::HybridLatch::try_upgrade(self, version).ok()?;
                    Some(f())
                }
                fn lock_exclusive_raw(&self) -> u64 {
                    latch::HybridLatch::lock_exclusive_raw(self)
                }
                fn unlock_exclusive_raw(&self, version: u64) {
                    latch::HybridLatch::unlock_exclusive_raw(self, version)
                }
                fn lock_shared_raw(&self) {
                    latch::HybridLatch::lock_shared_raw(self)
                }
                fn unlock_shared_raw(&self) {
                    latch::HybridLatch::unlock_shared_raw(self)
                }
                fn remove_latched(
                    &self,
                    remove: impl FnOnce() -> bool,
                    mark_obsolete: impl FnOnce(),
                ) -> bool {
                    buffer::removal::remove_latched(self, remove, mark_obsolete)
                }
                fn lock_live(&self, is_obsolete: impl FnOnce() -> bool) -> Option<u64> {
                    buffer::removal::lock_live(self, is_obsolete)
                }
            }

            /// Model 7's frame: this variant's latch and capture slot
            /// (`engine/src/frame/capture.rs`), as in `CachedBlob` and
            /// its `AtomicFrame`.
            #[cfg(test)]
            pub(crate) struct CowFrame {
                latch: latch::HybridLatch,
                slot: frame::capture::CaptureSlot<crate::models::Image>,
            }

            #[cfg(test)]
            impl crate::models::Capture for CowFrame {
                fn new() -> Self {
                    Self {
                        latch: latch::HybridLatch::new(),
                        slot: frame::capture::CaptureSlot::default(),
                    }
                }
                fn arm(&self, round: u64, buf: crate::models::Image) -> bool {
                    self.slot.arm(round, buf).is_none()
                }
                fn lock_exclusive(&self) -> u64 {
                    self.latch.lock_exclusive_raw()
                }
                fn save(&self, page: usize, fill: impl FnMut(&mut crate::models::Image, usize)) {
                    self.slot.save(page, page, fill)
                }
                fn unlock_exclusive(&self, version: u64) {
                    self.latch.unlock_exclusive_raw(version)
                }
                fn capture_shared(
                    &self,
                    round: u64,
                    fill: impl FnMut(&mut crate::models::Image, usize),
                ) -> Option<crate::models::Image> {
                    frame::capture::capture_shared(
                        &self.latch,
                        &self.slot,
                        round,
                        crate::models::PAGES,
                        fill,
                    )
                }
                fn disarm(&self) -> Option<crate::models::Image> {
                    self.slot.disarm()
                }
            }

            #[cfg(test)]
            impl crate::models::SeqMap for buffer::dirty::SeqMap {
                fn new() -> Self {
                    buffer::dirty::SeqMap::default()
                }
                fn mark(&self, guid: crate::models::Guid, seq: u64) {
                    buffer::dirty::SeqMap::mark(self, guid, seq)
                }
                fn drain(&self) -> crate::models::Drained {
                    buffer::dirty::SeqMap::drain(self)
                }
                fn complete(&self, drained: &crate::models::Drained) {
                    buffer::dirty::SeqMap::complete(self, drained)
                }
                fn restore(&self, drained: &crate::models::Drained) {
                    buffer::dirty::SeqMap::restore(self, drained)
                }
                fn remove(&self, guid: &crate::models::Guid) -> Option<u64> {
                    buffer::dirty::SeqMap::remove(self, guid)
                }
                fn contains(&self, guid: &crate::models::Guid) -> bool {
                    buffer::dirty::SeqMap::contains(self, guid)
                }
                fn live_len(&self) -> usize {
                    buffer::dirty::SeqMap::len(self)
                }
                fn min_seq(&self) -> Option<u64> {
                    buffer::dirty::SeqMap::min_seq(self)
                }
                fn evictable(
                    other_refs: usize,
                    guid: &crate::models::Guid,
                    dirty: &Self,
                    pending_deletes: &Self,
                ) -> bool {
                    buffer::eviction::evictable(other_refs, guid, dirty, pending_deletes)
                }
            }
        }
    };
    (@switches $on:ident: $($switch:ident),* $(,)?) => {
        const _: () = assert!(
            crate::all_known($on, &[$(stringify!($switch)),*]),
            "unknown mutation switch in a variant! line"
        );
        $(
            pub(crate) const $switch: bool = crate::switch_on(stringify!($switch), $on);
        )*
    };
}

variant!(
    /// The engine's latch as shipped: every switch off.
    correct: []
);
variant!(
    /// `LATCH_SKIP_VERSION_BUMP`: exclusive release restores the old
    /// version instead of bumping it.
    skip_version_bump: [LATCH_SKIP_VERSION_BUMP]
);
variant!(
    /// `LATCH_WEAK_VALIDATE`: optimistic validation drops its acquire fence.
    weak_validate: [LATCH_WEAK_VALIDATE]
);
variant!(
    /// `LATCH_SHARED_IGNORES_WRITER`: a shared acquire ignores an exclusive
    /// holder that arrived after its first version check.
    shared_ignores_writer: [LATCH_SHARED_IGNORES_WRITER]
);
variant!(
    /// `DIRTY_RESTORE_OVERWRITES`: a failed round's restore overwrites a
    /// fresh mark with the drained seq instead of keeping the minimum.
    dirty_restore_overwrites: [DIRTY_RESTORE_OVERWRITES]
);
variant!(
    /// `EVICT_IGNORES_DIRTY`: the eviction rule skips the dirty map, so a
    /// frame whose changes are live or in flight can be dropped.
    evict_ignores_dirty: [EVICT_IGNORES_DIRTY]
);
variant!(
    /// `COW_SKIPPED`: a store into an armed frame does not save the pages
    /// it changes first.
    cow_skipped: [COW_SKIPPED]
);
variant!(
    /// `CAPTURE_IGNORES_SAVED`: the round's capture refills the pages a
    /// store already saved, with their edited bytes.
    capture_ignores_saved: [CAPTURE_IGNORES_SAVED]
);

variant!(
    /// `EVICT_MARKS_AFTER_UNLOCK`: eviction marks the removed frame
    /// obsolete only after releasing its latch.
    evict_marks_after_unlock: [EVICT_MARKS_AFTER_UNLOCK]
);
variant!(
    /// `WRITER_SKIPS_LIVE_CHECK`: a writer stores into the frame it
    /// latched without checking the obsolete mark.
    writer_skips_live_check: [WRITER_SKIPS_LIVE_CHECK]
);

#[cfg(test)]
mod models;
#[cfg(test)]
mod tests;
