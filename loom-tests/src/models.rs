//! The models, written once against [`Latch`] and [`SeqMap`] and run for
//! every variant in [`crate::tests`].
//!
//! Shared frame data follows the engine's frame-memory discipline
//! (`engine/src/frame/mem.rs`): every word is an atomic, readers load it
//! `Relaxed`, and only the exclusive holder stores to it, also `Relaxed`,
//! inside its critical section. All ordering therefore has to come from the
//! latch, which is exactly what the models check.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use loom::model::Builder;
use loom::sync::atomic::{
    self, AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use loom::sync::{Arc, Mutex, RwLock};
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
    /// `HybridLatch::lock_exclusive_raw` (what `FrameWrite::lock` calls).
    fn lock_exclusive_raw(&self) -> u64;
    /// `HybridLatch::unlock_exclusive_raw` (`FrameWrite`'s `Drop`).
    fn unlock_exclusive_raw(&self, version: u64);
    /// `HybridLatch::lock_shared_raw` (what `FrameRead::lock` calls).
    fn lock_shared_raw(&self);
    /// `HybridLatch::unlock_shared_raw` (`FrameRead`'s `Drop`).
    fn unlock_shared_raw(&self);
    /// `buffer::removal::remove_latched` on this latch (E1's removal,
    /// as `BufferManager::evict_one` runs it).
    fn remove_latched(&self, remove: impl FnOnce() -> bool, mark_obsolete: impl FnOnce()) -> bool;
    /// `buffer::removal::lock_live` on this latch (E1's writer step, as
    /// `FrameWrite::lock_live` runs it for `Core::lock_live`).
    fn lock_live(&self, is_obsolete: impl FnOnce() -> bool) -> Option<u64>;
}

/// A frame name, as in `engine/src/buffer/dirty.rs`.
pub(crate) type Guid = [u8; 16];
/// What `SeqMap::drain` hands a checkpoint round.
pub(crate) type Drained = HashMap<Guid, u64>;

/// The real `buffer::dirty::SeqMap` of one variant (see `variant!` in
/// `lib.rs`); every method forwards to the method of the same name, and
/// [`SeqMap::evictable`] to the same variant's eviction rule.
pub(crate) trait SeqMap: Send + Sync + Sized + 'static {
    /// `SeqMap::default`.
    fn new() -> Self;
    fn mark(&self, guid: Guid, seq: u64);
    fn drain(&self) -> Drained;
    fn complete(&self, drained: &Drained);
    fn restore(&self, drained: &Drained);
    fn remove(&self, guid: &Guid) -> Option<u64>;
    fn contains(&self, guid: &Guid) -> bool;
    /// `SeqMap::len`: live entries only, in-flight ones not counted.
    fn live_len(&self) -> usize;
    fn min_seq(&self) -> Option<u64>;
    /// The variant's `buffer::eviction::evictable` (engine/src/buffer/
    /// eviction.rs, the rule `BufferManager::evict_one` applies): here
    /// because it takes that variant's `SeqMap`, and its
    /// `EVICT_IGNORES_DIRTY` switch is that variant's.
    fn evictable(other_refs: usize, guid: &Guid, dirty: &Self, pending_deletes: &Self) -> bool;
}

/// Model 7's frame image: three words, one per page.
pub(crate) type Image = [u64; 3];
/// Pages of model 7's frame (one word each).
pub(crate) const PAGES: usize = 3;

/// A frame's latch and checkpoint capture slot (`engine/src/frame/
/// capture.rs`) of one variant; every method forwards to the real code
/// (see `CowFrame` in the `variant!` macro).
pub(crate) trait Capture: Send + Sync + Sized + 'static {
    /// A fresh latch and an idle slot.
    fn new() -> Self;
    /// `CaptureSlot::arm`; false if the slot was not idle.
    fn arm(&self, round: u64, buf: Image) -> bool;
    /// `HybridLatch::lock_exclusive_raw` (what `FrameWrite::lock` calls).
    fn lock_exclusive(&self) -> u64;
    /// `CaptureSlot::save(page, page, fill)`: what `AtomicFrame`'s store
    /// funnel calls before changing `page`.
    fn save(&self, page: usize, fill: impl FnMut(&mut Image, usize));
    /// `HybridLatch::unlock_exclusive_raw` (`FrameWrite`'s `Drop`).
    fn unlock_exclusive(&self, version: u64);
    /// `capture::capture_shared` over [`PAGES`] pages (what
    /// `BufferManager::capture_round` calls per armed frame).
    fn capture_shared(&self, round: u64, fill: impl FnMut(&mut Image, usize)) -> Option<Image>;
    /// `CaptureSlot::disarm` (`finish_round`).
    fn disarm(&self) -> Option<Image>;
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

fn report(name: &str, b: &Builder, outcome: &str, runs: usize, elapsed: Duration) {
    // Visible with `--nocapture`; the numbers quoted in the crate docs.
    eprintln!(
        "loom model {name}: preemption bound {}, {outcome} after {runs} executions in {:.2?}",
        b.preemption_bound
            .map_or_else(|| "none".to_owned(), |n| n.to_string()),
        elapsed
    );
}

/// Runs `model` under `b`, counting the executions loom explores.
fn run(b: &Builder, model: fn()) -> (std::thread::Result<()>, usize, Duration) {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&runs);
    let start = Instant::now();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        b.check(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            model();
        });
    }));
    let elapsed = start.elapsed();
    (
        result,
        runs.load(std::sync::atomic::Ordering::Relaxed),
        elapsed,
    )
}

/// Checks `model` exhaustively (up to the preemption bound); panics with
/// loom's report if any interleaving fails.
pub(crate) fn check(name: &str, default_preemptions: usize, model: fn()) {
    let b = builder(default_preemptions);
    let (result, runs, elapsed) = run(&b, model);
    if let Err(payload) = result {
        eprintln!("loom model {name}: failed after {runs} executions");
        panic::resume_unwind(payload);
    }
    report(name, &b, "passed", runs, elapsed);
}

/// [`check`] at preemption bound `max` or below: `LOOM_MAX_PREEMPTIONS`
/// may lower the bound, not raise it. For a model with two threads that
/// can wait on a latch a third holds (see the crate docs).
pub(crate) fn check_capped(name: &str, max: usize, model: fn()) {
    let mut b = builder(max);
    b.preemption_bound = b.preemption_bound.map(|n| n.min(max));
    let (result, runs, elapsed) = run(&b, model);
    if let Err(payload) = result {
        eprintln!("loom model {name}: failed after {runs} executions");
        panic::resume_unwind(payload);
    }
    report(name, &b, "passed", runs, elapsed);
}

/// Checks `model` and requires loom to find a failing interleaving whose
/// panic message contains `expected` (so the bug is caught by the
/// invariant it is meant to break, not by some unrelated failure).
pub(crate) fn check_finds_bug(name: &str, default_preemptions: usize, model: fn(), expected: &str) {
    let b = builder(default_preemptions);
    let (result, runs, elapsed) = run(&b, model);
    let payload = match result {
        Ok(()) => panic!(
            "loom explored all {runs} executions of {name} (preemption bound {:?}) \
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
    report(name, &b, "found the bug", runs, elapsed);
}

// ===== model 1: optimistic reader vs exclusive writer =====

/// A latch guarding a two-word "frame" `(x, y)`; every write stores the
/// same value to both words.
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
/// The writer (spawned) runs two exclusive sections, storing `(1, 1)` and
/// then `(2, 2)` (relaxed, like frame memory). The reader (main thread)
/// takes an optimistic version, copies `x` then `y`, and validates,
/// restarting on failure. Checks:
/// * a read that validates is never torn (`x == y`);
/// * a read that validates at version `v` saw exactly the state written
///   under `v` (`(v/2, v/2)`): validation never succeeds across a write
///   that overlapped the read;
/// * validation does not fail spuriously: at most one restart per write.
///
/// Fails with `LATCH_SKIP_VERSION_BUMP` (release restores the old version,
/// so a read that overlapped a write validates) and with
/// `LATCH_WEAK_VALIDATE` (without the acquire fence the relaxed version
/// re-check may return a stale even version although the data loads
/// already saw the writer's stores, so a torn read validates).
pub(crate) fn optimistic_vs_exclusive<L: Latch>() {
    let f = Arc::new(Frame::<L>::new());
    let writer = {
        let f = Arc::clone(&f);
        thread::spawn(move || {
            for n in 1..=2 {
                f.latch.exclusive(|| {
                    f.x.store(n, Relaxed);
                    f.y.store(n, Relaxed);
                });
            }
        })
    };

    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            attempts <= 3,
            "optimistic read restarted more often than writes overlapped it"
        );
        let v = f.latch.optimistic();
        // Copy first, validate after.
        let x = f.x.load(Relaxed);
        let y = f.y.load(Relaxed);
        if f.latch.validate(v) {
            assert_eq!(x, y, "validated optimistic read returned torn data");
            assert_eq!(
                x,
                v / 2,
                "validated optimistic read at version {v} saw another version's data"
            );
            break;
        }
    }
    writer.join().unwrap();
}

// ===== model 2: shared vs exclusive =====

/// Occupancy bits: writers add `WRITER`, shared holders add 1.
const WRITER: u64 = 1 << 32;

/// A latch, a two-word frame, a counter bumped with a split load/store,
/// and an occupancy word updated by read-modify-writes (an RMW always
/// reads the latest value, so overlap is detected per interleaving,
/// independently of the memory model).
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

    /// Body of an exclusive section: check nobody else is inside, bump
    /// the counter with a split load/store (only mutual exclusion plus
    /// happens-before keeps it exact), and write the frame as `(n, n)`.
    fn write_locked(&self) {
        let before = self.occupancy.fetch_add(WRITER, Relaxed);
        assert_eq!(
            before, 0,
            "exclusive holder entered while the latch was held"
        );
        let n = self.count.load(Relaxed) + 1;
        self.x.store(n, Relaxed);
        self.y.store(n, Relaxed);
        self.count.store(n, Relaxed);
        self.occupancy.fetch_sub(WRITER, Relaxed);
    }

    /// Body of a shared section: check no writer is inside and the frame
    /// is not half-written; returns the frame value.
    fn read_locked(&self) -> u64 {
        let before = self.occupancy.fetch_add(1, Relaxed);
        assert!(
            before < WRITER,
            "shared holder entered while an exclusive holder was inside"
        );
        let x = self.x.load(Relaxed);
        let y = self.y.load(Relaxed);
        assert_eq!(x, y, "shared holder observed a writer's partial state");
        self.occupancy.fetch_sub(1, Relaxed);
        x
    }

    fn write(&self) {
        self.latch.exclusive(|| self.write_locked());
    }

    fn read(&self) -> u64 {
        self.latch.shared(|| self.read_locked())
    }
}

/// Spins (yielding to loom) until `flag` is set; `Acquire`, so the waiter
/// happens-after everything the setter did before its `Release` store.
fn wait_for(flag: &AtomicU64) {
    while flag.load(Acquire) == 0 {
        thread::yield_now();
    }
}

/// Model 2a — shared holder racing an exclusive writer.
///
/// A writer (spawned) and a shared reader (main thread) race for the latch
/// from the start, so every interleaving of `lock_shared`'s register-then-
/// recheck against `lock_exclusive`'s CAS-then-drain is explored. Checks
/// that the two are never inside together (occupancy word), that the
/// reader never sees the writer's partial state (`x == y`; relaxed data,
/// so this also needs the latch's happens-before edges), and that both
/// finish (a spin that never ends fails at loom's branch limit).
///
/// Fails with `LATCH_SHARED_IGNORES_WRITER` (a reader that saw the version
/// even registers and enters although the writer took the latch and found
/// no shared holder in between). It passes on the correct latch only
/// because the handshake is fenced with `fence(SeqCst)` on both sides:
/// see the crate docs ("loom and `SeqCst`").
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

/// Model 2b — two exclusive writers.
///
/// Checks that two writers are never inside together (occupancy word),
/// that the second sees the first's stores (the split increment of `count`
/// ends at exactly 2), and that both terminate.
///
/// No current mutation switch breaks writer-writer exclusion (the version
/// CAS); a `lock_exclusive` that entered without winning the CAS, or
/// released without the `Release` store, would fail here.
pub(crate) fn two_writers<L: Latch>() {
    let g = Arc::new(Guarded::<L>::new());
    let other = {
        let g = Arc::clone(&g);
        thread::spawn(move || g.write())
    };
    g.write();
    other.join().unwrap();
    assert_eq!(g.count.load(Relaxed), 2, "an exclusive update was lost");
}

/// Model 2c — shared holders coexist.
///
/// Two threads take the latch shared and each waits, inside, until both
/// are inside. If shared excluded shared this could never finish and loom
/// would fail the model at its branch limit. No mutation switch breaks it.
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

/// Model 2d — a waiting writer gets in after a shared holder leaves.
///
/// The reader takes the latch shared and then signals; the writer waits
/// for the signal (so it arrives while the reader is, or was, inside) and
/// takes the latch exclusively. Checks that the writer waits out the
/// shared holder (occupancy word), that the reader's copy is the old frame
/// `(0, 0)` and the writer's update is visible afterwards, and that the
/// writer always gets in (loom's branch limit catches a drain wait that
/// never ends).
///
/// No current mutation switch breaks it (the writer arrives after the
/// reader registered, outside the window `LATCH_SHARED_IGNORES_WRITER`
/// opens); a drain that skipped the shared count, or a shared release
/// that left it raised, would fail here.
pub(crate) fn writer_waits_for_shared_holder<L: Latch>() {
    let g = Arc::new(Guarded::<L>::new());
    let reader_in = Arc::new(AtomicU64::new(0));
    let writer = {
        let (g, reader_in) = (Arc::clone(&g), Arc::clone(&reader_in));
        thread::spawn(move || {
            wait_for(&reader_in);
            g.write();
        })
    };
    let seen = g.latch.shared(|| {
        reader_in.store(1, Release);
        g.read_locked()
    });
    assert_eq!(seen, 0, "shared holder saw a write that had to wait for it");
    writer.join().unwrap();
    assert_eq!(g.read(), 1, "the waiting writer's update is missing");
}

/// Model 2e — a reader waits for an exclusive holder.
///
/// The writer takes the latch exclusively and then signals; the reader
/// waits for the signal and takes the latch shared. Checks that the reader
/// waits for the writer to leave (occupancy word), then sees its complete
/// update `(1, 1)`, and that the reader always gets in.
///
/// No current mutation switch breaks it (the reader arrives after the
/// writer's CAS, so it never passes the first version check); a
/// `lock_shared` that ignored the odd version outright would fail here.
pub(crate) fn reader_waits_for_writer<L: Latch>() {
    let g = Arc::new(Guarded::<L>::new());
    let writer_in = Arc::new(AtomicU64::new(0));
    let writer = {
        let (g, writer_in) = (Arc::clone(&g), Arc::clone(&writer_in));
        thread::spawn(move || {
            g.latch.exclusive(|| {
                writer_in.store(1, Release);
                g.write_locked();
            });
        })
    };
    wait_for(&writer_in);
    assert_eq!(g.read(), 1, "shared holder did not wait for the writer");
    writer.join().unwrap();
}

// ===== model 3: optimistic upgrade =====

/// Model 3 — optimistic read upgraded to exclusive.
///
/// Two threads each increment `x`: read it optimistically, then write
/// `x + 1` under `try_upgrade` of the version they read, restarting when
/// the upgrade fails. Checks that no increment is lost (`x` ends at 2),
/// i.e. an upgrade succeeds only if no writer intervened since the version
/// was read.
///
/// Fails with `LATCH_SKIP_VERSION_BUMP` (the first upgrader's release
/// restores the version, so the second upgrades a stale read and
/// overwrites the first increment).
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
    // `join` orders the other thread's release before this read.
    let v = f.latch.optimistic();
    let x = f.x.load(Relaxed);
    assert!(f.latch.validate(v));
    assert_eq!(x, 2, "an upgraded update was lost");
}

// ===== model 4: dirty map, marks vs a checkpoint round =====

const A: Guid = [1; 16];
const B: Guid = [2; 16];
const C: Guid = [3; 16];

/// The marks of model 4's two marker threads, each in program order. Both
/// threads mark `A`; seqs arrive out of order within each thread and
/// across them. Whenever the drain falls between `A@7` and `A@2`, the
/// fresh mark after the drain has the lower seq: a restore that
/// overwrites instead of keeping the minimum leaves `A@7` behind.
const MARKS: [&[(Guid, u64)]; 2] = [&[(A, 7), (B, 3)], &[(C, 5), (A, 2)]];

/// Minimum seq per guid over `marks` (the dirty map's merge rule).
fn min_per_guid<'a>(marks: impl IntoIterator<Item = &'a (Guid, u64)>) -> Drained {
    let mut out = Drained::new();
    for &(g, s) in marks {
        out.entry(g).and_modify(|x| *x = (*x).min(s)).or_insert(s);
    }
    out
}

/// Every way the drain can be linearized among [`MARKS`]: a prefix of each
/// thread's marks lands before it. Returns, per split, the entries the
/// drain must return and the live entries the marks after it leave.
fn drain_splits() -> Vec<(Drained, Drained)> {
    let [t1, t2] = MARKS;
    let mut out = Vec::new();
    for p1 in 0..=t1.len() {
        for p2 in 0..=t2.len() {
            let before = min_per_guid(t1[..p1].iter().chain(&t2[..p2]));
            let after = min_per_guid(t1[p1..].iter().chain(&t2[p2..]));
            out.push((before, after));
        }
    }
    out
}

/// Model 4 — concurrent marks vs a checkpoint round (I3).
///
/// Two marker threads mark [`MARKS`] (the same guid `A` from both, `B`
/// and `C` from one each, seqs out of order) while the checkpoint thread
/// (main) drains the map and ends the round: `complete` if `round_ok`,
/// else `restore` (a failed round). Checks, through the public API only:
/// * the drain is atomic: what it returns is the minimum per guid over a
///   prefix of each thread's marks;
/// * drained entries still count while in flight (`contains`, I1) and
///   still hold the WAL floor (`min_seq` at most their minimum, I2);
/// * afterwards (via `live_len`, `remove`) nothing is left in flight, and
///   the live entries are exactly the per-guid minima of the marks after
///   the drain (completed round) or of all marks (failed round): no mark
///   is lost and every recorded seq is the minimum of the marks that
///   belong to the live set.
///
/// Fails with `DIRTY_RESTORE_OVERWRITES` when `round_ok` is false: once
/// `A@7` is drained and `A@2` marked, `restore` writes 7 over 2.
pub(crate) fn dirty_marks_vs_round<M: SeqMap>(round_ok: bool) {
    let map = Arc::new(M::new());
    let markers: Vec<_> = MARKS
        .iter()
        .map(|&marks| {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                for &(g, s) in marks {
                    map.mark(g, s);
                }
            })
        })
        .collect();

    let drained = map.drain();
    // Sorted, so every execution issues the same calls in the same order
    // (`HashMap` iteration order is random).
    let mut in_flight: Vec<(Guid, u64)> = drained.iter().map(|(&g, &s)| (g, s)).collect();
    in_flight.sort_unstable();
    for (g, _) in &in_flight {
        assert!(map.contains(g), "drained entry not counted while in flight");
    }
    if let Some(low) = in_flight.iter().map(|&(_, s)| s).min() {
        assert!(
            map.min_seq().is_some_and(|m| m <= low),
            "min_seq above a drained entry's seq while in flight"
        );
    }
    if round_ok {
        map.complete(&drained);
    } else {
        map.restore(&drained);
    }
    for t in markers {
        t.join().unwrap();
    }

    let live = map.live_len();
    let mut seen = Drained::new();
    for g in [A, B, C] {
        if let Some(s) = map.remove(&g) {
            seen.insert(g, s);
        }
    }
    assert_eq!(live, seen.len(), "entries left in flight after the round");

    let all = min_per_guid(MARKS.iter().flat_map(|m| m.iter()));
    let expected: Vec<Drained> = drain_splits()
        .into_iter()
        .filter(|(before, _)| *before == drained)
        .map(|(_, after)| if round_ok { after } else { all.clone() })
        .collect();
    assert!(
        !expected.is_empty(),
        "drain returned {drained:?}: no prefix of each thread's marks (drain not atomic)"
    );
    if expected.contains(&seen) {
        return;
    }
    let same_guids = |e: &Drained| e.len() == seen.len() && e.keys().all(|g| seen.contains_key(g));
    if expected.iter().any(same_guids) {
        panic!(
            "dirty map kept the wrong minimum seq: drained {drained:?}, round_ok {round_ok}, \
             left {seen:?}, expected one of {expected:?}"
        );
    }
    panic!(
        "dirty map lost a mark: drained {drained:?}, round_ok {round_ok}, left {seen:?}, \
         expected one of {expected:?}"
    );
}

// ===== model 5: checkpoint capture vs writer =====

/// The frame words before and after model 5's write (distinct per word,
/// so any mix of the two states is visible).
const BEFORE: [u64; 3] = [10, 20, 30];
const AFTER: [u64; 3] = [11, 21, 31];

/// A latch and three frame words, accessed like `frame::mem`.
struct Words<L> {
    latch: L,
    words: [AtomicU64; 3],
}

impl<L: Latch> Words<L> {
    fn new(init: [u64; 3]) -> Self {
        Self {
            latch: L::new(),
            words: init.map(AtomicU64::new),
        }
    }

    /// A capture under the shared latch (`capture::capture_shared`, which
    /// `BufferManager::capture_round` calls): shared raw lock, copy every
    /// word relaxed, release.
    fn capture(&self) -> [u64; 3] {
        self.latch.lock_shared_raw();
        let image = [0, 1, 2].map(|i| self.words[i].load(Relaxed));
        self.latch.unlock_shared_raw();
        image
    }

    /// A tree write: `FrameWrite::lock` (exclusive, raw), relaxed word
    /// stores, release.
    fn write(&self, image: [u64; 3]) {
        let v = self.latch.lock_exclusive_raw();
        for (w, n) in self.words.iter().zip(image) {
            w.store(n, Relaxed);
        }
        self.latch.unlock_exclusive_raw(v);
    }
}

/// Model 5 — a checkpoint captures a frame while a writer updates it.
///
/// The writer (spawned) changes all three words of the frame from
/// [`BEFORE`] to [`AFTER`] under the exclusive latch (raw API, relaxed
/// stores, as `FrameWrite` and `frame::mem` do); the checkpoint thread
/// (main) copies the words under the shared latch (raw API, as
/// `capture::capture_shared`). Checks that the captured
/// image is entirely the before-state or entirely the after-state, never
/// a mix, and that a capture after the writer left sees its update.
///
/// Fails with `LATCH_SHARED_IGNORES_WRITER`: the capture passes the first
/// version check, the writer takes the latch and finds no shared holder,
/// and the capture registers and copies while the words change.
pub(crate) fn capture_vs_writer<L: Latch>() {
    let f = Arc::new(Words::<L>::new(BEFORE));
    let writer = {
        let f = Arc::clone(&f);
        thread::spawn(move || f.write(AFTER))
    };
    let image = f.capture();
    assert!(
        image == BEFORE || image == AFTER,
        "captured image mixes the before- and after-state: {image:?}"
    );
    writer.join().unwrap();
    assert_eq!(f.capture(), AFTER, "capture after the write misses it");
}

// ===== model 6: eviction vs dirty marks and a checkpoint =====

/// The one frame of model 6.
const G: Guid = [7; 16];

/// A cached frame: its latch and one word standing for its image (the
/// write count it reflects).
struct Cached<L> {
    latch: L,
    image: AtomicU64,
}

impl<L: Latch> Cached<L> {
    fn capture(&self) -> u64 {
        self.latch.lock_shared_raw();
        let image = self.image.load(Relaxed);
        self.latch.unlock_shared_raw();
        image
    }
}

/// Which rule model 6's evictor applies.
#[derive(Clone, Copy)]
pub(crate) enum EvictRule {
    /// The engine's rule, `buffer::eviction::evictable` of the variant
    /// the seq map comes from (via [`SeqMap::evictable`]): not pinned,
    /// not dirty or in flight, not pending delete — unless that variant
    /// turns `EVICT_IGNORES_DIRTY` on.
    Engine,
    /// Control, written here (not an engine switch): consults the dirty
    /// map's live entries only (`SeqMap::len`; `G` is the model's only
    /// guid, so "live map non-empty" is "`G` live"), ignoring in-flight
    /// ones.
    LiveOnly,
}

/// A frame-table slot holding `G`, the two seq maps, and the backend's
/// copy of `G`.
struct Cache<L, M> {
    /// Stands in for the frame table: pins clone the `Arc` under its read
    /// lock, eviction decides and removes under its write lock. That makes
    /// "look up and pin" atomic against eviction, which the `papaya` table
    /// does not (a pin is an `Arc::clone` after the lookup): this model
    /// checks the eviction *rule* against dirty marks and a round only;
    /// the removal protocol that covers the gap, E1, is model 8's.
    shard: RwLock<Option<Arc<Cached<L>>>>,
    dirty: M,
    pending_deletes: M,
    /// The image the backend holds (the checkpoint's last write).
    durable: AtomicU64,
}

impl<L: Latch, M: SeqMap> Cache<L, M> {
    /// `BufferManager::cached`: pins `G` if it is cached.
    fn cached(&self) -> Option<Arc<Cached<L>>> {
        self.shard.read().unwrap().as_ref().map(Arc::clone)
    }

    /// The evictor's decision on `b` under `rule`.
    fn evictable(&self, b: &Arc<Cached<L>>, rule: EvictRule) -> bool {
        // As `BufferManager::evictable`: the shard holds one reference,
        // any other is a pin.
        let other_refs = Arc::strong_count(b).saturating_sub(1);
        match rule {
            EvictRule::Engine => M::evictable(other_refs, &G, &self.dirty, &self.pending_deletes),
            EvictRule::LiveOnly => {
                other_refs == 0 && self.dirty.live_len() == 0 && !self.pending_deletes.contains(&G)
            }
        }
    }

    /// `BufferManager::evict_one`'s `remove_if` for `G`; `true` if it
    /// evicted. Before dropping the frame it checks that the image it
    /// drops is the durable one (otherwise a write is lost).
    fn try_evict(&self, rule: EvictRule) -> bool {
        let mut shard = self.shard.write().unwrap();
        let Some(b) = shard.as_ref() else {
            return false;
        };
        if !self.evictable(b, rule) {
            return false;
        }
        assert_eq!(
            b.capture(),
            self.durable.load(Relaxed),
            "evicted a frame whose cached image is newer than the durable one (I1)"
        );
        *shard = None;
        true
    }
}

/// Model 6 — eviction vs a writer marking dirty and a checkpoint draining.
///
/// One cached frame `G`, clean. The writer (spawned) holds a pin (taken
/// before it starts), changes the image under the exclusive latch, marks
/// `G` dirty while still latched (as `tree::write` does), releases and
/// unpins. The checkpoint (spawned) drains the real `SeqMap`; if it got
/// `G` it pins it, captures the image under the shared latch and writes
/// it to the "backend" (`durable`), then completes the round — or, with
/// `round_ok` false, skips the write and restores. The evictor (main)
/// makes one eviction attempt at any point. Checks:
/// * an evicted frame's image is the durable one: the evictor never drops
///   a frame marked dirty before its decision, whether the mark is live or
///   in flight in the checkpoint (I1: in-flight entries still count);
/// * a drained frame is still cached when the checkpoint pins it;
/// * at the end, a cached frame that is not dirty is durable.
///
/// With [`EvictRule::Engine`] the evictor runs the engine's real rule,
/// `buffer::eviction::evictable` (engine/src/buffer/eviction.rs, which
/// `BufferManager::evictable` calls with the map's reference subtracted
/// from the `Arc` count, as [`Cache::evictable`] does here; the `papaya`
/// table around it is not loom-aware, so the slot is a loom `RwLock`).
///
/// Fails with `EVICT_IGNORES_DIRTY`: once the writer has unpinned, the
/// evictor drops `G` although it is marked dirty (live, or in flight
/// before the checkpoint wrote it), and the dropped image is newer than
/// the durable one. With [`EvictRule::LiveOnly`] (a control written here,
/// not an engine switch) it fails too: the evictor drops `G` while it is
/// in flight, before the checkpoint wrote it.
pub(crate) fn evict_vs_dirty<L: Latch, M: SeqMap>(round_ok: bool, rule: EvictRule) {
    let frame = Arc::new(Cached {
        latch: L::new(),
        image: AtomicU64::new(0),
    });
    let cache = Arc::new(Cache {
        shard: RwLock::new(Some(Arc::clone(&frame))),
        dirty: M::new(),
        pending_deletes: M::new(),
        durable: AtomicU64::new(0),
    });
    let writer = {
        let cache = Arc::clone(&cache);
        // The writer's pin; the test's own `frame` handle goes away.
        let pin = frame;
        thread::spawn(move || {
            let v = pin.latch.lock_exclusive_raw();
            pin.image.store(1, Relaxed);
            cache.dirty.mark(G, 1);
            pin.latch.unlock_exclusive_raw(v);
            drop(pin);
        })
    };
    let checkpoint = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            let drained = cache.dirty.drain();
            if drained.contains_key(&G) {
                let b = cache
                    .cached()
                    .expect("a drained frame was evicted before the checkpoint captured it");
                let image = b.capture();
                drop(b);
                if round_ok {
                    cache.durable.store(image, Relaxed);
                }
            }
            if round_ok {
                cache.dirty.complete(&drained);
            } else {
                cache.dirty.restore(&drained);
            }
        })
    };
    cache.try_evict(rule);
    writer.join().unwrap();
    checkpoint.join().unwrap();

    if let Some(b) = cache.cached() {
        if !cache.dirty.contains(&G) {
            assert_eq!(
                b.capture(),
                cache.durable.load(Relaxed),
                "a clean cached frame is newer than its durable image (I1)"
            );
        }
    }
}

// ===== loom's SeqCst gap =====

/// Store buffering with `SeqCst` read-modify-writes and `SeqCst` loads:
/// the shape of the latch's shared/exclusive handshake (writer: CAS
/// `version`, load `shared`; reader: `fetch_add` `shared`, load
/// `version`). C11 forbids both loads reading 0; loom 0.7 treats `SeqCst`
/// accesses as `AcqRel` and reports that outcome as reachable. With
/// `fence` set, a `fence(SeqCst)` separates each RMW from its load, which
/// loom does model, and the outcome disappears: that is the form the
/// latch's handshake takes.
fn store_buffering(fence: bool) {
    let a = Arc::new(AtomicU64::new(0));
    let b = Arc::new(AtomicU64::new(0));
    let other = {
        let (a, b) = (Arc::clone(&a), Arc::clone(&b));
        thread::spawn(move || {
            a.fetch_add(1, SeqCst);
            if fence {
                atomic::fence(SeqCst);
            }
            b.load(SeqCst)
        })
    };
    b.fetch_add(1, SeqCst);
    if fence {
        atomic::fence(SeqCst);
    }
    let r2 = a.load(SeqCst);
    let r1 = other.join().unwrap();
    assert!(
        r1 == 1 || r2 == 1,
        "store buffering: both SeqCst loads read 0"
    );
}

/// [`store_buffering`] without fences (loom wrongly fails it).
pub(crate) fn store_buffering_seqcst_accesses() {
    store_buffering(false);
}

/// [`store_buffering`] with `fence(SeqCst)` (loom passes it).
pub(crate) fn store_buffering_seqcst_fences() {
    store_buffering(true);
}

// ===== model 7: a writer's copy-on-write vs the round's capture =====

/// Model 7's frame: the variant's latch and capture slot, three frame
/// words (one per page), and how often each page was filled.
struct CowWords<C> {
    c: C,
    words: [AtomicU64; 3],
    fills: [AtomicU64; 3],
}

impl<C: Capture> CowWords<C> {
    /// The page fill both sides pass: copy the page's word relaxed (as
    /// `AtomicFrame::copy_page`), counting the fill.
    fn fill(&self, buf: &mut Image, page: usize) {
        self.fills[page].fetch_add(1, Relaxed);
        buf[page] = self.words[page].load(Relaxed);
    }

    /// A store through `AtomicFrame`'s funnel: save the page, then
    /// change it.
    fn store(&self, page: usize, value: u64) {
        self.c.save(page, |buf, p| self.fill(buf, p));
        self.words[page].store(value, Relaxed);
    }
}

/// Model 7 — a writer edits a frame whose checkpoint capture is pending
/// while the round captures it.
///
/// The slot is armed for round 1 before the writer exists (the cut, under
/// the commit gate). The writer (spawned) takes the exclusive latch and
/// changes pages 0 and 2 from [`BEFORE`] to [`AFTER`], each through the
/// store funnel (save the page, then store relaxed), and releases; the
/// round (main) runs `capture::capture_shared` for round 1. Checks that
/// every page was filled exactly once, that the round got the image as
/// of the cut ([`BEFORE`]) whoever filled which page, and that the slot
/// is idle afterwards (no armed slot outlives its round).
///
/// Fails with `COW_SKIPPED` (the writer changes pages without saving
/// them, so a round that comes later copies [`AFTER`] words) and with
/// `CAPTURE_IGNORES_SAVED` (the round refills the pages the writer saved,
/// after the writer changed them).
pub(crate) fn cow_vs_capture<C: Capture>() {
    let f = Arc::new(CowWords {
        c: C::new(),
        words: BEFORE.map(AtomicU64::new),
        fills: [0, 0, 0].map(AtomicU64::new),
    });
    assert!(f.c.arm(1, [0; 3]), "a fresh slot is idle");
    let writer = {
        let f = Arc::clone(&f);
        thread::spawn(move || {
            let v = f.c.lock_exclusive();
            f.store(0, AFTER[0]);
            f.store(2, AFTER[2]);
            f.c.unlock_exclusive(v);
        })
    };
    let image = f.c.capture_shared(1, |buf, p| f.fill(buf, p));
    writer.join().unwrap();
    for (p, n) in f.fills.iter().enumerate() {
        let n = n.load(Relaxed);
        assert_eq!(n, 1, "page {p} was filled {n} times, not once");
    }
    assert_eq!(
        image,
        Some(BEFORE),
        "the round's image is not the frame as of the cut"
    );
    assert!(f.c.disarm().is_none(), "the slot outlived its round");
}

// ===== model 8: E1, frame-table removal vs unpinned readers and pinning writers =====

/// Model 8's frame: its latch, one word standing for the key's value, the
/// obsolete mark (`CachedBlob::obsolete`, with its orderings) and the
/// pins.
struct E1Frame<L> {
    latch: L,
    value: AtomicU64,
    obsolete: AtomicBool,
    /// `Arc::strong_count` minus the table's own reference: the pins.
    /// A papaya lookup hands out a plain reference under a guard, which
    /// is no pin, so the loom `Arc`s the model's threads hold (memory
    /// kept valid for them, as papaya's reclamation does) are not
    /// counted here. Updated like `Arc`'s count: `Arc::clone` adds
    /// `Relaxed`, a drop subtracts `Release`, and `strong_count` is read
    /// `Relaxed` here, so no ordering is assumed from it.
    pins: AtomicUsize,
}

impl<L: Latch> E1Frame<L> {
    fn new(value: u64) -> Self {
        Self {
            latch: L::new(),
            value: AtomicU64::new(value),
            obsolete: AtomicBool::new(false),
            pins: AtomicUsize::new(0),
        }
    }

    /// `CachedBlob::is_obsolete`.
    fn is_obsolete(&self) -> bool {
        self.obsolete.load(Acquire)
    }

    /// `CachedBlob::mark_obsolete`.
    fn mark_obsolete(&self) {
        self.obsolete.store(true, Release);
    }
}

/// Model 8's buffer manager for the one frame `G`: a one-entry frame
/// table, the backend's copy of `G`, and the real seq maps the eviction
/// rule reads.
struct E1Cache<L, M> {
    /// The frame table's entry for `G` with papaya's semantics: a lookup
    /// returns the entry current at one instant, removal compares and
    /// removes, insertion adds only if absent. The mutex is only what
    /// makes each of those one atomic step.
    entry: Mutex<Option<Arc<E1Frame<L>>>>,
    /// What a load reads (no checkpoint runs here, so it stays the
    /// initial value: a write only survives in a cached frame).
    backend: AtomicU64,
    dirty: M,
    pending_deletes: M,
    /// Set (`Release`) once the writer's put has returned.
    put_done: AtomicBool,
}

impl<L: Latch, M: SeqMap> E1Cache<L, M> {
    /// `FrameTable::get`: the entry now, as a reference (not a pin).
    fn get(&self) -> Option<Arc<E1Frame<L>>> {
        self.entry.lock().unwrap().as_ref().map(Arc::clone)
    }

    /// `BufferManager::lookup` on a miss (`load`, `install`): reads the
    /// backend and inserts the frame unless another load got there first,
    /// whose frame it then uses. (`install`'s latch and write-back epoch
    /// check are left out: no write-back runs in this model.)
    fn lookup(&self) -> Arc<E1Frame<L>> {
        if let Some(f) = self.get() {
            return f;
        }
        let fresh = Arc::new(E1Frame::new(self.backend.load(Acquire)));
        let mut entry = self.entry.lock().unwrap();
        Arc::clone(entry.get_or_insert(fresh))
    }

    /// `FrameTable::remove_exact`: removes the entry if it is `f`.
    fn remove_exact(&self, f: &Arc<E1Frame<L>>) -> bool {
        let mut entry = self.entry.lock().unwrap();
        if entry.as_ref().is_some_and(|e| Arc::ptr_eq(e, f)) {
            *entry = None;
            true
        } else {
            false
        }
    }

    /// `BufferManager::evict_one` for `G`: the real E1 removal
    /// (`removal::remove_latched`) around the real eviction rule
    /// (`eviction::evictable`, via [`SeqMap::evictable`]) and the
    /// table's compare-and-remove. Before removing it checks that the
    /// frame it drops holds the backend's value (I1).
    fn evict(&self) -> bool {
        // The victim scan's reference (`for_each_upto`).
        let Some(f) = self.get() else {
            return false;
        };
        f.latch.remove_latched(
            || {
                let other_refs = f.pins.load(Relaxed);
                if !M::evictable(other_refs, &G, &self.dirty, &self.pending_deletes) {
                    return false;
                }
                assert_eq!(
                    f.value.load(Relaxed),
                    self.backend.load(Relaxed),
                    "evicted a frame whose value is newer than the backend's (I1)"
                );
                self.remove_exact(&f)
            },
            || f.mark_obsolete(),
        )
    }

    /// A put of `value` (`Core::put`): find the frame (loading it if it
    /// is gone), pin it (`Arc::clone` of the reference, as
    /// `Core::locate` does), latch it and check the mark with the real
    /// `removal::lock_live` (`Core::lock_live`), starting over on an
    /// obsolete frame; store, mark dirty while latched, release, unpin.
    /// Returns the frame it stored into.
    fn put(&self, value: u64) -> Arc<E1Frame<L>> {
        loop {
            let f = self.lookup();
            f.pins.fetch_add(1, Relaxed);
            let Some(v) = f.latch.lock_live(|| f.is_obsolete()) else {
                f.pins.fetch_sub(1, Release);
                continue;
            };
            f.value.store(value, Relaxed);
            self.dirty.mark(G, 1);
            f.latch.unlock_exclusive_raw(v);
            f.pins.fetch_sub(1, Release);
            return f;
        }
    }

    /// A get (`Core::get`, `descend_counting` for a key in `G`): find the
    /// frame without pinning it (loading it if it is gone), take an
    /// optimistic version, restart on the obsolete mark, copy the value,
    /// validate, restart from the table on failure.
    fn get_value(&self) -> u64 {
        loop {
            let f = self.lookup();
            let v = f.latch.optimistic();
            if f.is_obsolete() {
                continue;
            }
            let value = f.value.load(Relaxed);
            if f.latch.validate(v) {
                return value;
            }
        }
    }
}

/// Model 8 — protocol E1: frame-table removal vs unpinned readers and
/// pinning writers.
///
/// One frame `G`, cached and clean, value 0 (the backend's too). The
/// evictor (spawned) makes one eviction attempt: `BufferManager::
/// evict_one`'s latch-check-remove-mark sequence, which is the engine's
/// own `buffer::removal::remove_latched` around the engine's own
/// `buffer::eviction::evictable` (the victim scan's unlatched pre-check
/// is left out: the latched check decides). The writer (spawned) puts 1:
/// look up, pin, `buffer::removal::lock_live` (the engine's), restart
/// (reloading from the backend if `G` is gone) on an obsolete frame,
/// store, mark dirty in the real `SeqMap` while latched, release, unpin.
/// The reader (main) gets (after joining the writer if `get_after_put`,
/// else racing it too; the crate docs say why that run is capped at
/// bound 2): look up without pinning, optimistic version,
/// obsolete check, copy, validate, restarting from the table (reloading
/// if gone) — modelled here, not included: the steps of
/// `Core::descend_counting` and `BufferManager::lookup`, which are the
/// read hot path and stay inline there. The frame table is modelled
/// ([`E1Cache`]), with papaya's semantics. Checks:
/// * a get that starts after the put returned sees its value, and no
///   get reads a value nobody wrote (linearisability);
/// * eviction never drops a frame newer than the backend (I1);
/// * at the end the put's frame is the cached one (no store lands in a
///   frame that left the table) and it holds the value.
///
/// Fails with `EVICT_MARKS_AFTER_UNLOCK` and with
/// `WRITER_SKIPS_LIVE_CHECK`: the writer looks `G` up, the evictor finds
/// it unpinned and clean and removes it, the writer pins and latches it
/// after the evictor's release and, finding no mark (not set yet, or not
/// checked), stores into the removed frame; a later load reads the
/// backend's 0, which the get after the put returns (bound 1).
///
/// Not a switch here: a reader that ignores the mark (tried: the model
/// still passes). An evicted frame is clean and nobody stores into it
/// afterwards, so what a reader reads there is the value at its own
/// lookup, a linearisable get of one key; the reader's mark check guards
/// what a stale frame *links to* (frames that a later change of its
/// reloaded copy retired), which a one-frame model cannot show.
pub(crate) fn evict_vs_readers_writers<L: Latch, M: SeqMap>(get_after_put: bool) {
    let cache = Arc::new(E1Cache {
        entry: Mutex::new(Some(Arc::new(E1Frame::<L>::new(0)))),
        backend: AtomicU64::new(0),
        dirty: M::new(),
        pending_deletes: M::new(),
        put_done: AtomicBool::new(false),
    });
    let evictor = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            cache.evict();
        })
    };
    let writer = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            let f = cache.put(1);
            cache.put_done.store(true, Release);
            f
        })
    };
    let (after_put, seen, stored_into) = if get_after_put {
        let stored_into = writer.join().unwrap();
        (true, cache.get_value(), stored_into)
    } else {
        let after_put = cache.put_done.load(Acquire);
        let seen = cache.get_value();
        (after_put, seen, writer.join().unwrap())
    };
    assert!(seen <= 1, "a get read a value nobody wrote: {seen}");
    if after_put {
        assert_eq!(
            seen, 1,
            "a get that started after the put returned missed it"
        );
    }
    evictor.join().unwrap();

    let cached = cache.get();
    assert!(
        cached
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &stored_into)),
        "the put's store landed in a frame that left the table"
    );
    assert_eq!(
        cache.get_value(),
        1,
        "the put's value is neither cached nor in the backend"
    );
}
