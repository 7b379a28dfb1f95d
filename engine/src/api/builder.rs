//! [`TreeBuilder`]: fluent construction of a [`Tree`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::io::IoDriver;

use crate::api::config::{CheckpointConfig, Storage, TreeConfig};
use crate::api::errors::Result;
use crate::api::tree::Tree;
use crate::store::Backend;

/// Fluent builder for a [`Tree`]; a thin layer over [`TreeConfig`].
///
/// Persistent storage is the default; call [`memory`](Self::memory) for an
/// in-RAM tree.
///
/// ```
/// use holt::TreeBuilder;
///
/// let tree = TreeBuilder::new("ignored").memory().open()?;
/// assert_eq!(tree.put(b"etc/hosts", b"127.0.0.1")?, None);
/// assert_eq!(tree.get(b"etc/hosts")?, Some(b"127.0.0.1".to_vec()));
/// # Ok::<(), holt::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a TreeBuilder does nothing until .open() is called"]
pub struct TreeBuilder {
    cfg: TreeConfig,
    extras: OpenExtras,
}

/// What a builder sets beyond [`TreeConfig`]. `TreeConfig`'s fields are
/// public and exhaustive, as in 0.2.1 (programs build it with struct
/// literals), so a new setting cannot become a field there.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpenExtras {
    /// I/O driver for persistent mode (default: io_uring where it works,
    /// else the sync driver).
    pub(crate) driver: Option<Arc<dyn IoDriver>>,
    /// Bound on spinning group-commit waiters (default: two per CPU).
    pub(crate) spin_waiters: Option<usize>,
}

impl TreeBuilder {
    /// Starts a builder for a persistent tree in `data_dir`.
    pub fn new<P: Into<PathBuf>>(data_dir: P) -> Self {
        Self {
            cfg: TreeConfig::new(data_dir),
            extras: OpenExtras::default(),
        }
    }

    /// Keeps the tree in RAM instead; the directory given to
    /// [`new`](Self::new) is ignored.
    pub fn memory(mut self) -> Self {
        self.cfg.storage = Storage::Memory;
        self
    }

    /// Sets the buffer-pool capacity in 512 KiB frames.
    pub fn buffer_pool_size(mut self, n: usize) -> Self {
        self.cfg.buffer_pool_size = n;
        self
    }

    /// Sets whether each mutation syncs the WAL before returning.
    pub fn wal_sync_on_commit(mut self, on: bool) -> Self {
        self.cfg.wal_sync_on_commit = on;
        self
    }

    /// Sets the background checkpointer policy.
    pub fn checkpoint(mut self, cfg: CheckpointConfig) -> Self {
        self.cfg.checkpoint = cfg;
        self
    }

    /// Opens the tree; same as [`Tree::open`] with the built configuration.
    ///
    /// # Errors
    /// Whatever [`Tree::open`] returns.
    pub fn open(self) -> Result<Tree> {
        Tree::open_with_extras(self.cfg, self.extras)
    }

    /// With [`wal_sync_on_commit`](Self::wal_sync_on_commit), how many
    /// committers waiting for another thread's sync may *spin* (yield in a
    /// loop, for up to about 1.5 times the last sync's duration) before
    /// they sleep. Spinning keeps a waiter's wake-up off the path to the
    /// next sync, which raised durable commits from four threads by about
    /// half on the bench machine, at the cost of CPU time while syncs are
    /// in flight. The default is two per CPU; `0` switches spinning off,
    /// for hosts where CPU time is scarcer than commit latency. A lone
    /// committer never waits, so this does not affect it.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let tree = holt::TreeBuilder::new(dir.path())
    ///     .wal_sync_on_commit(true)
    ///     .wal_spin_waiters(0)
    ///     .open()?;
    /// tree.put(b"k", b"v")?;
    /// assert_eq!(tree.wal_stats().expect("persistent").spins, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wal_spin_waiters(mut self, n: usize) -> Self {
        self.extras.spin_waiters = Some(n);
        self
    }

    /// Routes every byte persistent mode reads or writes (frames,
    /// manifest, WAL, directory changes) through `driver` instead of the
    /// default [`SyncDriver`](crate::io::SyncDriver). This is the seam for
    /// fault injection and power-loss simulation in tests, and for other
    /// I/O engines. Memory mode ignores it.
    pub fn io_driver(mut self, driver: Arc<dyn IoDriver>) -> Self {
        self.extras.driver = Some(driver);
        self
    }

    /// Opens the tree on a caller-supplied backend, without a WAL; same as
    /// [`Tree::open_with_backend`].
    ///
    /// # Errors
    /// Whatever [`Tree::open_with_backend`] returns.
    pub fn open_with_backend(self, backend: Arc<dyn Backend>) -> Result<Tree> {
        Tree::open_with_backend(self.cfg, backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn setters_reach_config() {
        let b = TreeBuilder::new("/data")
            .buffer_pool_size(8)
            .wal_sync_on_commit(true)
            .checkpoint(CheckpointConfig {
                idle_interval: Duration::from_millis(5),
                ..CheckpointConfig::enabled()
            });
        assert!(!b.cfg.is_memory());
        assert_eq!(b.cfg.buffer_pool_size, 8);
        assert!(b.cfg.wal_sync_on_commit);
        assert!(b.cfg.checkpoint.enabled);
        assert_eq!(b.extras.spin_waiters, None);
        let b = b.wal_spin_waiters(3);
        assert_eq!(b.extras.spin_waiters, Some(3));
        assert_eq!(b.cfg.checkpoint.idle_interval, Duration::from_millis(5));
        let b = b.memory();
        assert!(b.cfg.is_memory());
        assert!(format!("{b:?}").starts_with("TreeBuilder { cfg: TreeConfig {"));
    }
}
