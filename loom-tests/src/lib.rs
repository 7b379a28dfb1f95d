//! loom model checks of holt's HybridLatch (DESIGN.md §6), compiled from
//! the engine's real source, with deliberately broken variants that loom
//! must catch.
//!
//! # Running
//! ```text
//! cargo test -p holt-loom-tests --release                 # every model, default bounds
//! cargo test -p holt-loom-tests --release -- --nocapture  # ... and print each model's time
//! LOOM_MAX_PREEMPTIONS=3 cargo test -p holt-loom-tests --release   # deeper
//! ```
//! Always build in release: loom re-runs each model once per explored
//! interleaving. Each model has a default preemption bound (2 or 3; see
//! [`tests`](crate) below) that keeps the whole suite well under a minute
//! on two cores. loom's own environment variables override the defaults:
//! * `LOOM_MAX_PREEMPTIONS=N` — explore interleavings with up to `N` forced
//!   thread switches (cost grows steeply: try 3, then 4, with
//!   `--test-threads=1` and a single test name to keep memory in check);
//! * `LOOM_MAX_BRANCHES=N` — the per-execution limit on scheduling points
//!   (default 1000). A model that exceeds it fails with "Model exceeded
//!   maximum number of branches"; that is how a wait that never ends
//!   (livelock, lost wake-up) shows up, because every latch wait yields
//!   under loom. Raise it only if a deeper bound legitimately needs more;
//! * `LOOM_MAX_DURATION=secs`, `LOOM_MAX_PERMUTATIONS=N` — stop early
//!   (checked every 20 000 iterations), `LOOM_LOG=trace` and
//!   `LOOM_LOCATION=1` — explain a failure (slow; narrow it down first).
//!
//! # How the real code gets here
//! `build.rs` sets `cfg(loom)` for this crate only. Each variant below is a
//! module made by the `variant!` macro that includes the engine's files by
//! path — `#[path = "../../engine/src"]` on the inline module, then
//! `#[path = "sync.rs"] mod sync;` and `#[path = "latch.rs"] mod latch;` —
//! next to a `mutation` module written here. `latch.rs` only refers to
//! `super::sync` and `super::mutation`, so in each variant it binds to the
//! included `sync.rs`, which under `cfg(loom)` re-exports loom's atomics,
//! fences and `yield_now` (every spin/backoff step yields to the loom
//! scheduler), and to this crate's switches. Nothing is copied: edit
//! `engine/src/latch.rs` and these models check the edit.
//!
//! The engine's `mutation.rs` defines deliberate-bug switches, all `false`
//! there so the broken branches compile away. Each variant's `mutation`
//! module defines every one of those constants (the macro's list must match
//! `engine/src/mutation.rs`; a missing name fails to compile because the
//! included code refers to it) and turns on only the switches named in its
//! `variant!` line:
//! * [`correct`] — no switch; every model must pass;
//! * [`skip_version_bump`] — `LATCH_SKIP_VERSION_BUMP`;
//! * [`weak_validate`] — `LATCH_WEAK_VALIDATE`;
//! * [`shared_ignores_writer`] — `LATCH_SHARED_IGNORES_WRITER`.
//!
//! The models (`models.rs`) are generic over a small `Latch` trait that each
//! variant implements by forwarding to its `latch::HybridLatch`; the tests
//! (`tests.rs`) run every model against `correct` and each model whose
//! documented mutation applies against that variant, requiring loom to
//! panic with the invariant the mutation breaks. A mutation test that
//! passes means loom found the bug; one that fails means a model has lost
//! its teeth.
//!
//! # Known limitation of loom that matters here
//! loom treats `SeqCst` loads, stores and read-modify-writes as `AcqRel`
//! (loom README, issue #180); only `fence(SeqCst)` is modelled as
//! sequentially consistent. The latch's shared/exclusive handshake is
//! Dekker-style (writer: CAS `version` odd, then load `shared`; reader:
//! `fetch_add` on `shared`, then load `version`, all `SeqCst`), whose
//! correctness rests on the single total order of `SeqCst` operations. See
//! the crate report in `tests.rs` (`shared_vs_exclusive` on `correct`) for
//! what loom makes of it.
//!
//! Models for the buffer manager (`DIRTY_RESTORE_OVERWRITES`,
//! `EVICT_IGNORES_DIRTY`) will include the buffer files the same way.

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
        variant!(@at "../../engine/src", $(#[$doc])* $name: [$($on),*]);
    };
    (@at $dir:literal, $(#[$doc:meta])* $name:ident: [$($on:ident),* $(,)?]) => {
        $(#[$doc])*
        // The included engine files are compiled in full; the models use
        // only part of them.
        #[allow(dead_code, unused_imports)]
        #[path = $dir]
        pub mod $name {
            #[path = "sync.rs"]
            pub(crate) mod sync;
            #[path = "latch.rs"]
            pub(crate) mod latch;

            /// This variant's copy of `engine/src/mutation.rs`.
            pub(crate) mod mutation {
                const ON: &[&str] = &[$(stringify!($on)),*];
                variant!(@switches ON:
                    LATCH_SKIP_VERSION_BUMP,
                    LATCH_WEAK_VALIDATE,
                    LATCH_SHARED_IGNORES_WRITER,
                    DIRTY_RESTORE_OVERWRITES,
                    EVICT_IGNORES_DIRTY,
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

variant!(@at "/tmp/latchfix", xfix: []);
variant!(@at "/tmp/latchfix", xfix_siw: [LATCH_SHARED_IGNORES_WRITER]);
#[cfg(test)]
mod models;
#[cfg(test)]
mod tests;
