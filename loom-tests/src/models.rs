//! The latch models, written once against [`Latch`] and run for every
//! variant in [`crate::tests`].
//!
//! Shared data follows the engine's frame-memory discipline
//! (`engine/src/frame/mem.rs`): every word is an atomic, readers load it
//! `Relaxed`, and only the exclusive holder stores to it, also `Relaxed`,
//! inside its critical section. All ordering therefore has to come from the
//! latch, which is exactly what the models check.

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use loom::model::Builder;
use loom::sync::atomic::{AtomicU64, Ordering::Relaxed};
use loom::sync::Arc;
use loom::thread;

/// What the models need from a latch: the real `HybridLatch` API of one
/// variant, with guards turned into closures so the models can be generic.
/// Every method forwards to the variant's `latch::HybridLatch` (see the
/// `variant!` macro in `lib.rs`); the guards' `Drop` impls run for real.
pub(crate) trait Latch: Send + Sync + Sized + 'static {
    fn new() -> Self;
    /// `HybridLatch::optimistic`.
    fn optimistic(&self) -> u64;
    /// `HybridLatch::validate`, `true` on `Ok`.
    fn validate(&self, version: u64) -> bool;
    /// Runs `f` under `HybridLatch::lock_exclusive`'s guard.
    fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R;
    /// Runs `f` under `HybridLatch::lock_shared`'s guard.
    fn shared<R>(&self, f: impl FnOnce() -> R) -> R;
    /// Runs `f` under the guard of `HybridLatch::try_upgrade(version)`;
    /// `None` if the upgrade restarted.
    fn upgrade<R>(&self, version: u64, f: impl FnOnce() -> R) -> Option<R>;
}

// ===== running =====

/// A loom builder with `default_preemptions` unless `LOOM_MAX_PREEMPTIONS`
/// is set (loom's `Builder::new` reads that and `LOOM_MAX_BRANCHES`,
/// `LOOM_MAX_DURATION`, `LOOM_LOG`, `LOOM_LOCATION`, `LOOM_CHECKPOINT_FILE`).
pub(crate) fn builder(default_preemptions: usize) -> Builder {
    let mut b = Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(default_preemptions);
    }
    b
}

fn report(name: &str, b: &Builder, outcome: &str, elapsed: Duration) {
    // Visible with `--nocapture`; the numbers quoted in the crate docs.
    eprintln!(
        "loom model {name}: preemption bound {}, {outcome} in {:.2?}",
        b.preemption_bound.map_or_else(|| "none".to_owned(), |n| n.to_string()),
        elapsed
    );
}

/// Checks `model` exhaustively (up to the preemption bound); panics with
/// loom's report if any interleaving fails.
pub(crate) fn check(name: &str, default_preemptions: usize, model: fn()) {
    let b = builder(default_preemptions);
    let start = Instant::now();
    b.check(model);
    report(name, &b, "passed", start.elapsed());
}

/// Checks `model` and requires loom to find a failing interleaving whose
/// panic message contains `expected` (so the bug is caught by the
/// invariant it is meant to break, not by some unrelated failure).
pub(crate) fn check_finds_bug(name: &str, default_preemptions: usize, model: fn(), expected: &str) {
    let b = builder(default_preemptions);
    let start = Instant::now();
    let result = panic::catch_unwind(AssertUnwindSafe(|| b.check(model)));
    let elapsed = start.elapsed();
    let payload = match result {
        Ok(()) => panic!(
            "loom explored every interleaving of {name} (preemption bound {:?}) \
             without finding the deliberate bug",
            b.preemption_bound
        ),
        Err(payload) => payload,
    };
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("<non-string panic>");
    assert!(
        message.contains(expected),
        "{name}: loom failed the model, but not on the expected invariant \
         {expected:?}; panic was: {message}"
    );
    report(name, &b, "found the bug", elapsed);
}

// ===== model 1: optimistic reader vs exclusive writer =====

/// A latch guarding a two-word "frame" that the writer changes from
/// `(0, 0)` to `(1, 1)`.
struct Frame<L> {
    latch: L,
    x: AtomicU64,
    y: AtomicU64,
}

impl<L: Latch> Frame<L> {
    fn new() -> Self {
        Self {
            latch: L::new(),
            x: AtomicU64::new(0),
            y: AtomicU64::new(0),
        }
    }
}

/// Model 1 — optimistic reader vs exclusive writer.
///
/// One writer takes the latch exclusively and stores `x = 1`, `y = 1`
/// (relaxed, like frame memory). The reader (main thread) takes an
/// optimistic version, copies `x` then `y`, and validates, restarting on
/// failure. Checks:
/// * a read that validates is never torn (`x == y`);
/// * a read that validates at version `v` saw exactly the state of `v`
///   (`(0,0)` at 0, `(1,1)` at 2): a validation never succeeds across a
///   write that overlapped the read;
/// * validation does not fail spuriously: at most one restart for the one
///   write.
///
/// Fails with `LATCH_SKIP_VERSION_BUMP` (release restores the old version,
/// so a read that overlapped the write validates and returns a torn pair)
/// and with `LATCH_WEAK_VALIDATE` (without the acquire fence the version
/// re-check may read a stale even version although the data loads already
/// saw the writer's stores).
pub(crate) fn optimistic_vs_exclusive<L: Latch>() {
    let f = Arc::new(Frame::<L>::new());
    let writer = {
        let f = Arc::clone(&f);
        thread::spawn(move || {
            f.latch.exclusive(|| {
                f.x.store(1, Relaxed);
                f.y.store(1, Relaxed);
            });
        })
    };

    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            attempts <= 2,
            "optimistic read restarted although no write overlapped it"
        );
        let v = f.latch.optimistic();
        // Copy first, validate after.
        let x = f.x.load(Relaxed);
        let y = f.y.load(Relaxed);
        if f.latch.validate(v) {
            assert_eq!(x, y, "validated optimistic read returned torn data");
            let expect = if v == 0 { 0 } else { 1 };
            assert_eq!(
                (x, y),
                (expect, expect),
                "validated optimistic read at version {v} does not match that version"
            );
            break;
        }
    }
    writer.join().unwrap();
}

// ===== model 2: shared vs exclusive =====

/// Occupancy bits: writers add `WRITER`, shared holders add 1.
const WRITER: u64 = 1 << 32;

/// A latch, a two-word frame, a non-atomic-style counter and an occupancy
/// word updated by read-modify-writes (which always see the latest value,
/// so overlap is detected per interleaving, independent of the memory
/// model).
struct Guarded<L> {
    latch: L,
    x: AtomicU64,
    y: AtomicU64,
    count: AtomicU64,
    occupancy: AtomicU64,
}

impl<L: Latch> Guarded<L> {
    fn new() -> Self {
        Self {
            latch: L::new(),
            x: AtomicU64::new(0),
            y: AtomicU64::new(0),
            count: AtomicU64::new(0),
            occupancy: AtomicU64::new(0),
        }
    }

    /// One exclusive critical section: check nobody else is inside, bump
    /// the counter with a split load/store (only mutual exclusion plus
    /// happens-before keeps it exact), and write the frame as `(n, n)`.
    fn write(&self) {
        self.latch.exclusive(|| {
            let before = self.occupancy.fetch_add(WRITER, Relaxed);
            assert_eq!(before, 0, "exclusive holder entered while the latch was held");
            let n = self.count.load(Relaxed) + 1;
            self.x.store(n, Relaxed);
            self.y.store(n, Relaxed);
            self.count.store(n, Relaxed);
            self.occupancy.fetch_sub(WRITER, Relaxed);
        });
    }

    /// One shared critical section: check no writer is inside and the
    /// frame is not half-written.
    fn read(&self) {
        self.latch.shared(|| {
            let before = self.occupancy.fetch_add(1, Relaxed);
            assert!(
                before < WRITER,
                "shared holder entered while an exclusive holder was inside"
            );
            let x = self.x.load(Relaxed);
            let y = self.y.load(Relaxed);
            assert_eq!(x, y, "shared holder observed a writer's partial state");
            self.occupancy.fetch_sub(1, Relaxed);
        });
    }
}

/// Model 2a — shared holder vs exclusive writer.
///
/// A writer (spawned) and a shared reader (main thread) race for the latch.
/// Checks that the shared holder and the writer are never inside together
/// (occupancy word), that the shared holder never sees the writer's partial
/// state (`x == y`; relaxed data, so this also needs the latch's
/// happens-before edges), and that both finish: the writer waits for the
/// shared holder to leave, the reader waits for the writer, and loom fails
/// the model if either spins forever (branch limit).
///
/// Fails with `LATCH_SHARED_IGNORES_WRITER` (a reader that saw the version
/// even enters although the writer took the latch meanwhile).
pub(crate) fn shared_vs_exclusive<L: Latch>() {
    let g = Arc::new(Guarded::<L>::new());
    let writer = {
        let g = Arc::clone(&g);
        thread::spawn(move || g.write())
    };
    g.read();
    writer.join().unwrap();
    assert_eq!(g.count.load(Relaxed), 1);
}

/// Model 2b — two exclusive writers and a shared reader.
///
/// Checks that two writers never overlap and that the second sees the
/// first's stores (the split increment of `count` ends at exactly 2), that
/// the reader never overlaps a writer or sees a torn frame, and that all
/// three threads terminate.
///
/// Fails with `LATCH_SHARED_IGNORES_WRITER`. No current switch breaks
/// writer-writer exclusion; the model guards the version CAS against
/// future changes.
pub(crate) fn two_writers_and_reader<L: Latch>() {
    let g = Arc::new(Guarded::<L>::new());
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let g = Arc::clone(&g);
            thread::spawn(move || g.write())
        })
        .collect();
    g.read();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(g.count.load(Relaxed), 2, "an exclusive update was lost");
}

/// Model 2c — shared holders coexist.
///
/// Two threads take the latch shared and each waits, inside, until both
/// are inside. If shared excluded shared this could never finish and loom
/// fails the model at its branch limit. No mutation switch breaks this.
pub(crate) fn shared_holders_coexist<L: Latch>() {
    let latch = Arc::new(L::new());
    let inside = Arc::new(AtomicU64::new(0));
    let hold = |latch: &L, inside: &AtomicU64| {
        latch.shared(|| {
            inside.fetch_add(1, Relaxed);
            while inside.load(Relaxed) < 2 {
                thread::yield_now();
            }
        });
    };
    let other = {
        let (latch, inside) = (Arc::clone(&latch), Arc::clone(&inside));
        thread::spawn(move || hold(&latch, &inside))
    };
    hold(&latch, &inside);
    other.join().unwrap();
}

// ===== model 3: optimistic upgrade =====

/// Model 3 — optimistic read upgraded to exclusive.
///
/// Two threads each increment a counter read optimistically and written
/// after `try_upgrade` of the version they read, restarting when the
/// upgrade fails. Checks that no increment is lost (the count ends at 2),
/// i.e. an upgrade succeeds only if no writer intervened since the version
/// was read.
///
/// Fails with `LATCH_SKIP_VERSION_BUMP` (the first upgrader's release
/// restores the version, so the second upgrades a stale read and overwrites
/// the first increment).
pub(crate) fn upgrade_increments<L: Latch>() {
    let f = Arc::new(Frame::<L>::new());
    let increment = |f: &Frame<L>| loop {
        let v = f.latch.optimistic();
        let x = f.x.load(Relaxed);
        if f.latch.upgrade(v, || f.x.store(x + 1, Relaxed)).is_some() {
            break;
        }
    };
    let other = {
        let f = Arc::clone(&f);
        thread::spawn(move || increment(&f))
    };
    increment(&f);
    other.join().unwrap();
    // The main thread's join synchronises with the other thread's release.
    let v = f.latch.optimistic();
    let x = f.x.load(Relaxed);
    assert!(f.latch.validate(v));
    assert_eq!(x, 2, "an upgraded update was lost");
}
