//! Write-back under cache pressure, persistent mode (docs/design.md
//! "Memory budget").
//!
//! Dirty frames cannot be evicted before they are written (I1), so
//! without checkpoints a load grows the cache to the whole tree. This
//! module owns the rule that keeps a persistent tree inside its budget
//! whether or not the periodic checkpointer runs:
//!
//! **P1 (pressure rule).** Let `R` be the frames cached and `C` the pool
//! capacity. After every mutation, holding no latch and not the commit
//! gate, the writer compares `R` with two marks ([`Marks`]):
//! - above `soft`, it asks the pressure thread for a round (spawning the
//!   thread on first use); the thread runs an ordinary checkpoint round
//!   (`TreeInner::checkpoint_round`, which also releases WAL files) and
//!   then evicts clean frames down to `C`;
//! - above `hard`, it also waits — never runs the round itself — until a
//!   round that started after its request has finished and `R` is back
//!   under `hard` (or two rounds finished, or [`MAX_WAIT`] passed, or the
//!   tree is poisoned or closing).
//!
//! Only the writer's `Tree` method calls in, after its latches and gate
//! are released, so a waiting writer holds nothing a round needs (the
//! round takes the gate exclusively and frame latches shared). `R` only
//! passes `C` once no clean frame is left to evict (loads and spills
//! evict clean frames first), and a round cleans every cached frame, so
//! the next round is due only after about `C` more frames are dirtied:
//! no round per put.
//!
//! Memory besides the cached frames: a round holds at most two capture
//! batches of image buffers (`buffer::round`, `capture_batch`: together
//! no more than the pool keeps, plus a few pooled spares) plus the 1 KiB
//! pages writers save during it, and the image pool keeps at most
//! `min(C/16, 64)` idle ones; [`Marks`] leave room for both inside the
//! budget `C * 1.1 + 64 MiB`.
//!
//! The thread belongs to the tree: it is stopped and joined when the last
//! handle drops (`api::tree::Lifecycle`), before the tree closes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::api::tree::TreeInner;

/// Longest a writer waits for a pressure round (then it goes on: the
/// bound keeps a stuck round from stopping writers for good).
const MAX_WAIT: Duration = Duration::from_secs(2);

/// Pause after a round that could neither write nor evict anything
/// (every frame pinned, or the round failed), so a stream of requests
/// does not spin the thread.
const IDLE_BACKOFF: Duration = Duration::from_millis(10);

/// The pressure marks for a pool of `capacity` frames (P1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marks {
    /// Above this, a round is requested.
    pub(crate) soft: usize,
    /// Above this, writers wait for the round.
    pub(crate) hard: usize,
}

impl Marks {
    /// `soft = C + C/32 + 16`, `hard = C + C/16 + 32` frames: the gap
    /// lets writers run on while a round is in flight, and `hard` plus a
    /// round's capture batch and the image pool stays inside the budget
    /// (`C * 1.1` plus 128 frames) with about 8 MiB to spare for
    /// everything that is not a frame.
    pub(crate) fn of(capacity: usize) -> Self {
        Self {
            soft: capacity + capacity / 32 + 16,
            hard: capacity + capacity / 16 + 32,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    requested: bool,
    stop: bool,
    /// Rounds finished (successful or not).
    finished: u64,
}

/// The pressure thread's handle and its hand-off with writers.
#[derive(Debug, Default)]
pub(crate) struct Pressure {
    state: Mutex<State>,
    /// The thread waits here for requests.
    wake: Condvar,
    /// Waiting writers wait here for finished rounds.
    done: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Rounds the thread ran (`Tree::cache_stats`).
    pub(crate) rounds: AtomicU64,
    /// Writers that had to wait.
    pub(crate) waits: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pressure {
    /// P1, writer side: called after a mutation of a persistent tree with
    /// no latch and no gate held.
    pub(crate) fn relieve(&self, tree: &Arc<TreeInner>) {
        let bm = &tree.core.bm;
        let marks = Marks::of(bm.capacity());
        let resident = bm.resident().0;
        if resident <= marks.soft {
            return;
        }
        let mut st = lock(&self.state);
        if st.stop || !self.ensure_thread(tree) {
            return;
        }
        st.requested = true;
        self.wake.notify_one();
        if resident <= marks.hard {
            return;
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        let start = st.finished;
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            if st.stop || tree.is_poisoned() || st.finished >= start + 2 {
                return;
            }
            if st.finished > start && bm.resident().0 <= marks.hard {
                return;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            st = self
                .done
                .wait_timeout(st, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Spawns the thread unless it runs; false if it cannot be spawned
    /// (then writers go on without write-back, as before P1).
    fn ensure_thread(&self, tree: &Arc<TreeInner>) -> bool {
        let mut t = lock(&self.thread);
        if t.is_some() {
            return true;
        }
        let tree = Arc::clone(tree);
        match std::thread::Builder::new()
            .name("holt-pressure".into())
            .spawn(move || worker(&tree))
        {
            Ok(h) => {
                *t = Some(h);
                true
            }
            Err(_) => false,
        }
    }

    /// Stops the thread (a round in progress finishes) and joins it.
    /// Waiting writers are released. Idempotent.
    pub(crate) fn stop(&self) {
        {
            let mut st = lock(&self.state);
            st.stop = true;
            self.wake.notify_all();
            self.done.notify_all();
        }
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }
}

fn worker(tree: &TreeInner) {
    let p = &tree.pressure;
    let bm = &tree.core.bm;
    loop {
        {
            let mut st = lock(&p.state);
            while !st.requested && !st.stop {
                st = p
                    .wake
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if st.stop {
                return;
            }
            st.requested = false;
        }
        let mut progress = false;
        if !tree.is_poisoned() {
            p.rounds.fetch_add(1, Ordering::Relaxed);
            if let Ok(outcome) = tree.checkpoint_round() {
                progress = outcome.frames > 0;
            }
            let before = bm.resident().0;
            bm.evict_over_capacity();
            progress |= bm.resident().0 < before;
        }
        {
            let mut st = lock(&p.state);
            st.finished += 1;
            p.done.notify_all();
        }
        if !progress {
            std::thread::sleep(IDLE_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Marks;

    /// The marks leave room between them, and `hard` plus a capture
    /// batch (32) and a full image pool (`min(C/16, 64)`, at least 8)
    /// stays inside the budget of `C * 1.1 + 128` frames with 16 frames
    /// to spare.
    #[test]
    fn marks_are_ordered_and_inside_the_budget() {
        for c in [1usize, 8, 64, 128, 1526, 100_000] {
            let m = Marks::of(c);
            assert!(c < m.soft && m.soft < m.hard, "{c}: {m:?}");
            let pool = (c / 16).clamp(8, 64);
            let budget = c + c / 10 + 128;
            assert!(m.hard + 32 + pool + 16 <= budget, "{c}: {m:?}");
        }
    }
}
