//! Background checkpointing (API.md §3 `CheckpointConfig`): a planner
//! thread decides when a round is due (every `idle_interval`, or early once
//! `dirty_blob_threshold` frames are dirty) and queues it; an I/O thread
//! runs the rounds (`round`, preceded by a merge pass
//! of sparse frames when `auto_merge` is on); an eviction thread sweeps
//! idle clean frames every `eviction_interval`.
//!
//! `pressure` holds the write-back under cache pressure (P1), which runs
//! whether or not this checkpointer is enabled.
//!
//! The threads hold the tree until they are stopped and joined, which
//! happens when the last `Tree` handle drops (see `api::tree::Lifecycle`),
//! in the dropping thread, before the final round.

pub(crate) mod pressure;
pub(crate) mod round;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::api::config::CheckpointConfig;
use crate::api::stats::CheckpointerStats;
use crate::api::tree::TreeInner;
use crate::tree::merge::AUTO_MERGE_LIMIT;

/// How often the threads look at the stop flag.
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rounds_attempted: AtomicU64,
    pub(crate) rounds_succeeded: AtomicU64,
    pub(crate) blobs_flushed: AtomicU64,
    pub(crate) merges_total: AtomicU64,
    pub(crate) truncates: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) failures: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CheckpointerStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CheckpointerStats {
            rounds_attempted: g(&self.rounds_attempted),
            rounds_succeeded: g(&self.rounds_succeeded),
            blobs_flushed: g(&self.blobs_flushed),
            merges_total: g(&self.merges_total),
            truncates: g(&self.truncates),
            evictions: g(&self.evictions),
        }
    }
}

pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Checkpointer {
    pub(crate) fn start(tree: &Arc<TreeInner>, cfg: &CheckpointConfig) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel::<()>(cfg.io_queue_capacity.max(1));
        let mut threads = Vec::with_capacity(3);
        {
            let (tree, stop, cfg) = (Arc::clone(tree), Arc::clone(&stop), cfg.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("holt-ckpt-planner".into())
                    .spawn(move || planner(&tree, &stop, &cfg, &tx))?,
            );
        }
        {
            let (tree, stop, cfg) = (Arc::clone(tree), Arc::clone(&stop), cfg.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("holt-ckpt-io".into())
                    .spawn(move || io_loop(&tree, &stop, &cfg, &rx))?,
            );
        }
        {
            let (tree, stop, cfg) = (Arc::clone(tree), Arc::clone(&stop), cfg.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("holt-evict".into())
                    .spawn(move || eviction(&tree, &stop, &cfg))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stops the threads and waits for them (a round in progress finishes).
    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn planner(tree: &TreeInner, stop: &AtomicBool, cfg: &CheckpointConfig, tx: &SyncSender<()>) {
    let mut last = Instant::now();
    // The first round runs right after open.
    let mut due = true;
    while !stop.load(Ordering::Acquire) {
        if !due {
            std::thread::sleep(POLL);
            due = last.elapsed() >= cfg.idle_interval
                || tree.core.bm.dirty.len() >= cfg.dirty_blob_threshold.max(1);
        }
        if due {
            match tx.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => return,
            }
            last = Instant::now();
            due = false;
        }
    }
}

fn io_loop(tree: &TreeInner, stop: &AtomicBool, cfg: &CheckpointConfig, rx: &Receiver<()>) {
    let c = &tree.ckpt_counters;
    let mut erases_seen = 0u64;
    while !stop.load(Ordering::Acquire) {
        match rx.recv_timeout(POLL) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if tree.is_poisoned() {
            continue;
        }
        c.rounds_attempted.fetch_add(1, Ordering::Relaxed);
        let erases = tree.core.bm.counters.erases.get();
        if cfg.auto_merge && erases != erases_seen {
            erases_seen = erases;
            match tree.merge_pass(AUTO_MERGE_LIMIT) {
                Ok(n) => {
                    c.merges_total.fetch_add(n, Ordering::Relaxed);
                }
                Err(_) => {
                    c.failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        match tree.checkpoint_round() {
            Ok(outcome) => {
                c.rounds_succeeded.fetch_add(1, Ordering::Relaxed);
                c.blobs_flushed
                    .fetch_add(outcome.frames as u64, Ordering::Relaxed);
                if outcome.released_wal {
                    c.truncates.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                c.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn eviction(tree: &TreeInner, stop: &AtomicBool, cfg: &CheckpointConfig) {
    let mut last = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(POLL);
        if last.elapsed() < cfg.eviction_interval {
            continue;
        }
        last = Instant::now();
        let n = tree.core.bm.evict_idle(cfg.eviction_idle_ticks);
        tree.ckpt_counters
            .evictions
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}
