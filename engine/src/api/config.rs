//! Tree configuration: [`TreeConfig`], [`Storage`] and [`CheckpointConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::api::errors::{Error, Result};

/// Where a tree keeps its data.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Storage {
    /// Frames, manifest and write-ahead log live in `dir`, which is created
    /// if missing.
    Persistent {
        /// The data directory.
        dir: PathBuf,
    },
    /// Everything lives in RAM, without a write-ahead log; lost on drop.
    Memory,
}

/// Options for opening a [`Tree`](crate::Tree).
///
/// Build one with [`TreeConfig::new`] or [`TreeConfig::memory`], then adjust
/// fields directly; or use [`TreeBuilder`](crate::TreeBuilder).
#[derive(Debug, Clone)]
pub struct TreeConfig {
    /// Where the data lives.
    pub storage: Storage,
    /// Buffer-pool capacity, counted in 512 KiB frames (default 64, i.e.
    /// 32 MiB).
    pub buffer_pool_size: usize,
    /// When true, every put/delete/rename/txn writes and `sync_data`s the
    /// WAL before returning. When false (default), records are buffered in
    /// user space and handed to the OS at 64 KiB or at a checkpoint; a clean
    /// drop still drains and syncs them.
    pub wal_sync_on_commit: bool,
    /// Trees without a WAL only (memory trees and `open_with_backend`):
    /// when true (default), each mutation writes its dirty frames and pending
    /// deletes through to the backend before returning, without calling
    /// [`Backend::flush`](crate::Backend::flush). Ignored by WAL trees.
    pub memory_flush_on_write: bool,
    /// Background checkpointer policy (disabled by default).
    pub checkpoint: CheckpointConfig,
}

impl TreeConfig {
    /// A persistent configuration rooted at `dir`, with default settings.
    #[must_use]
    pub fn new<P: Into<PathBuf>>(dir: P) -> Self {
        Self::with_storage(Storage::Persistent { dir: dir.into() })
    }

    /// An in-memory configuration with default settings.
    #[must_use]
    pub fn memory() -> Self {
        Self::with_storage(Storage::Memory)
    }

    /// Whether [`storage`](Self::storage) is [`Storage::Memory`].
    #[must_use]
    pub fn is_memory(&self) -> bool {
        matches!(self.storage, Storage::Memory)
    }

    /// Path of the active write-ahead log (`<dir>/journal.wal`), or `None`
    /// for a memory tree.
    #[must_use]
    pub fn wal_path(&self) -> Option<PathBuf> {
        match &self.storage {
            Storage::Persistent { dir } => Some(dir.join("journal.wal")),
            Storage::Memory => None,
        }
    }

    /// Checks the settings an engine cannot run with.
    #[allow(dead_code)] // called by `Tree::open` once the engine lands
    pub(crate) fn validate(&self) -> Result<()> {
        if self.buffer_pool_size == 0 {
            return Err(Error::Internal("buffer_pool_size must be at least 1"));
        }
        if self.checkpoint.io_queue_capacity == 0 {
            return Err(Error::Internal(
                "checkpoint.io_queue_capacity must be at least 1",
            ));
        }
        Ok(())
    }

    fn with_storage(storage: Storage) -> Self {
        Self {
            storage,
            buffer_pool_size: 64,
            wal_sync_on_commit: false,
            memory_flush_on_write: true,
            checkpoint: CheckpointConfig::default(),
        }
    }
}

/// Policy of the background checkpointer.
///
/// Build it with a struct literal and `..CheckpointConfig::default()`, or
/// start from [`CheckpointConfig::enabled`].
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Start the planner, I/O and eviction threads on open (default false).
    /// They stop when the last [`Tree`](crate::Tree) clone is dropped.
    pub enabled: bool,
    /// Longest wait between planner rounds (default 100 ms).
    pub idle_interval: Duration,
    /// A dirty-frame count at or above this starts a round early
    /// (default 16).
    pub dirty_blob_threshold: usize,
    /// Begin each round with the tree-wide merge pass (default true).
    pub auto_merge: bool,
    /// Period of the eviction thread (default 1 s).
    pub eviction_interval: Duration,
    /// A clean cached frame untouched for more than this many buffer-manager
    /// clock ticks is cold and may be evicted (default 1024).
    pub eviction_idle_ticks: u64,
    /// Capacity of the bounded queue between planner and I/O thread
    /// (default 16).
    pub io_queue_capacity: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            idle_interval: Duration::from_millis(100),
            dirty_blob_threshold: 16,
            auto_merge: true,
            eviction_interval: Duration::from_secs(1),
            eviction_idle_ticks: 1024,
            io_queue_capacity: 16,
        }
    }
}

impl CheckpointConfig {
    /// The default policy with the checkpointer switched on.
    #[must_use]
    pub fn enabled() -> Self {
        Self {
            enabled: true,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_zero_sizes() {
        assert!(TreeConfig::memory().validate().is_ok());
        let mut cfg = TreeConfig::memory();
        cfg.buffer_pool_size = 0;
        assert!(matches!(cfg.validate(), Err(Error::Internal(_))));
        let mut cfg = TreeConfig::new("/tmp/x");
        cfg.checkpoint.io_queue_capacity = 0;
        assert!(matches!(cfg.validate(), Err(Error::Internal(_))));
    }
}
