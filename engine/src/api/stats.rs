//! Statistics returned by [`Tree::stats`](crate::Tree::stats).

use crate::store::BlobGuid;

/// Figures for one blob frame.
#[derive(Debug, Clone, Copy)]
pub struct BlobStats {
    /// The frame's GUID.
    pub guid: BlobGuid,
    /// Bytes of the frame in use, header included.
    pub space_used: u32,
    /// Free bytes inside the used area (fragmentation).
    pub gap_space: u32,
    /// High-water mark of node slots.
    pub num_slots: u16,
    /// Number of links from this frame to child frames.
    pub num_ext_blobs: u16,
    /// How many times this frame has been compacted.
    pub compact_times: u32,
    /// Kept for compatibility; always 0 because deletes are physical.
    pub tombstone_leaf_cnt: u32,
}

/// Tree-wide figures, gathered by a breadth-first walk from the root.
#[derive(Debug, Clone)]
pub struct TreeStats {
    /// Frames reachable from the root; equals `blobs.len()`.
    pub blob_count: u32,
    /// Sum of [`BlobStats::space_used`].
    pub total_space_used: u64,
    /// Sum of [`BlobStats::gap_space`].
    pub total_gap_space: u64,
    /// Sum of [`BlobStats::num_slots`].
    pub total_slots: u64,
    /// Sum of [`BlobStats::compact_times`].
    pub total_compactions: u64,
    /// Sum of [`BlobStats::tombstone_leaf_cnt`] (always 0).
    pub total_tombstones: u64,
    /// Per-frame figures in breadth-first order from the root.
    pub blobs: Vec<BlobStats>,
    /// Cached frames changed and not yet written to the backend.
    pub bm_dirty_count: usize,
    /// Frame deletes queued for the next checkpoint.
    pub bm_pending_delete_count: usize,
    /// Cumulative buffer-manager cache hits.
    pub bm_cache_hits: u64,
    /// Cumulative buffer-manager cache misses.
    pub bm_cache_misses: u64,
    /// Cumulative optimistic-read restarts.
    pub bm_optimistic_restarts: u64,
    /// Background checkpointer counters; `Some` iff it is running.
    pub checkpointer: Option<CheckpointerStats>,
}

/// Cumulative counters of the background checkpointer.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointerStats {
    /// Rounds started.
    pub rounds_attempted: u64,
    /// Rounds that completed without error.
    pub rounds_succeeded: u64,
    /// Frames written to the backend.
    pub blobs_flushed: u64,
    /// Child frames folded back into their parents.
    pub merges_total: u64,
    /// Times the WAL was released after a checkpoint.
    pub truncates: u64,
    /// Cold frames evicted from the cache.
    pub evictions: u64,
}

/// Cumulative write-ahead-log counters of a persistent tree since it was
/// opened ([`Tree::wal_stats`](crate::Tree::wal_stats)).
///
/// With `wal_sync_on_commit(true)`, `syncs / sync_commits` tells how well
/// group commit works: about 1 when every commit pays its own fdatasync,
/// about 1/N when N concurrent committers share each one.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let tree = holt::TreeBuilder::new(dir.path()).wal_sync_on_commit(true).open()?;
/// tree.put(b"k", b"v")?;
/// let w = tree.wal_stats().expect("persistent trees have a WAL");
/// assert_eq!(w.records, 1);
/// assert_eq!(w.sync_commits, 1);
/// assert!(w.syncs >= 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalStats {
    /// Records appended (one per logged write, `txn` or `rename`).
    pub records: u64,
    /// fdatasync calls on the WAL (commits, checkpoint rotations, close).
    pub syncs: u64,
    /// Callers that waited for their records to be durable (each commit
    /// with `wal_sync_on_commit(true)`, and the final drain at close).
    pub sync_commits: u64,
    /// Waits for another thread's sync that spun before sleeping (see
    /// [`TreeBuilder::wal_spin_waiters`](crate::TreeBuilder::wal_spin_waiters)).
    pub spins: u64,
}

/// Buffer-pool figures, read in O(1) without walking the tree
/// ([`Tree::cache_stats`](crate::Tree::cache_stats)). Frames are 512 KiB.
///
/// ```
/// use holt::{Tree, TreeConfig};
///
/// let tree = Tree::open(TreeConfig::memory())?;
/// tree.put(b"k", b"v")?;
/// let c = tree.cache_stats();
/// assert_eq!(c.capacity_frames, 64);
/// assert!(c.resident_frames >= 1 && c.resident_frames <= c.peak_resident_frames);
/// # Ok::<(), holt::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CacheStats {
    /// The configured pool (`buffer_pool_size`).
    pub capacity_frames: usize,
    /// Frames cached now. It may exceed the capacity while frames are
    /// dirty, pinned or being written (they cannot be evicted); in
    /// persistent mode the pressure rule bounds the excess.
    pub resident_frames: usize,
    /// The most frames ever cached at once.
    pub peak_resident_frames: usize,
    /// Cached frames changed and not yet written to the backend.
    pub dirty_frames: usize,
    /// Idle 512 KiB checkpoint image buffers kept for the next round.
    pub pooled_images: usize,
    /// Write-back rounds run because of cache pressure (persistent mode).
    pub pressure_rounds: u64,
    /// Writes that waited for such a round.
    pub pressure_waits: u64,
}

/// How many frames a point lookup of each stored key visits, from the
/// tree's current shape (see [`crate::Tree::frame_hops`]). A diagnostic
/// for tuning spills; not part of the stable API.
#[doc(hidden)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameHops {
    /// Keys stored (leaves, value leaves included).
    pub keys: u64,
    /// `by_frames[i]`: keys whose lookup visits `i` frames (the root
    /// frame counts as one).
    pub by_frames: Vec<u64>,
    /// `by_same_depth[i]`: keys whose lookup crosses `i` links that
    /// consume no key byte (a fan frame linked from another fan frame's
    /// fan node, at the same depth).
    pub by_same_depth: Vec<u64>,
}

impl FrameHops {
    /// Mean frames visited per lookup of a stored key (0 when empty).
    #[must_use]
    pub fn mean_frames(&self) -> f64 {
        Self::mean(&self.by_frames, self.keys)
    }

    /// Mean same-depth hops per lookup of a stored key.
    #[must_use]
    pub fn mean_same_depth(&self) -> f64 {
        Self::mean(&self.by_same_depth, self.keys)
    }

    /// Most frames any stored key's lookup visits.
    #[must_use]
    pub fn max_frames(&self) -> usize {
        self.by_frames.iter().rposition(|&n| n > 0).unwrap_or(0)
    }

    /// Most same-depth hops on any stored key's path.
    #[must_use]
    pub fn max_same_depth(&self) -> usize {
        self.by_same_depth.iter().rposition(|&n| n > 0).unwrap_or(0)
    }

    fn mean(hist: &[u64], keys: u64) -> f64 {
        if keys == 0 {
            return 0.0;
        }
        let sum: u64 = hist.iter().enumerate().map(|(i, &n)| i as u64 * n).sum();
        sum as f64 / keys as f64
    }
}
