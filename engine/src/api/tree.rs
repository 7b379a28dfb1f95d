//! [`Tree`]: the handle applications use.

// Also what its clones share (`TreeInner`: the commit gate, the poison
// flag, logging and durability after a write, close with the last
// handle). The batch commit is in `api::txn`, the checkpoint round in
// `checkpoint::round`. (Plain comments: this module's docs are public.)

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::api::builder::OpenExtras;
use crate::api::config::{Storage, TreeConfig};
use crate::api::errors::{Error, Result};
use crate::api::range::RangeBuilder;
use crate::api::stats::{CacheStats, TreeStats, WalStats};
use crate::api::txn::TxnBatch;
use crate::buffer::BufferManager;
use crate::checkpoint::pressure::Pressure;
use crate::checkpoint::{Checkpointer, Counters as CkptCounters};
use crate::io::IoDriver;
use crate::store::{Backend, MemoryBackend, PersistentBackend, FRAME_SIZE};
use crate::tree::{Core, MAX_KEY, MAX_VALUE};
use crate::wal::{self, Op, OpRef, Wal};

/// State shared by every clone of a [`Tree`].
pub(crate) struct TreeInner {
    pub(crate) cfg: TreeConfig,
    pub(crate) core: Core,
    /// Commit gate: single-key writes (and merge passes) hold it shared;
    /// multi-key batches (`txn`, `rename`) hold it exclusively so their
    /// validation and their application see the same state; a checkpoint
    /// cut holds it exclusively for the drain and the arming of captures
    /// only (`checkpoint::round`).
    ///
    /// **Gate rule** (stated here once): every exclusive latch holder that
    /// stores into a frame (writers, `txn`/`rename`, `compact()`, merge
    /// and order passes) holds this gate, shared or exclusive. Eviction
    /// and loads latch exclusively without it but store no frame bytes
    /// under the latch. A round's cut arms copy-on-write captures relying
    /// on it.
    pub(crate) gate: RwLock<()>,
    /// No WAL and `memory_flush_on_write`: write dirty frames through after
    /// every mutation.
    write_through: bool,
    /// Write dirty frames back when the last handle drops (caller-supplied
    /// backends, which outlive the tree).
    write_back_on_drop: bool,
    /// Persistent mode: the WAL and the frame store.
    pub(crate) durable: Option<Durable>,
    /// Set after a failed checkpoint write or sync: writes are refused
    /// until the tree is reopened (reads keep working).
    pub(crate) poisoned: AtomicBool,
    /// Background checkpointer counters (`stats().checkpointer`).
    pub(crate) ckpt_counters: CkptCounters,
    ckpt_running: AtomicBool,
    /// Write-back under cache pressure (P1, persistent mode).
    pub(crate) pressure: Pressure,
}

/// Owned by every clone of a [`Tree`]; its drop (with the last handle)
/// stops the background threads and closes the tree in the dropping
/// thread, so a clean drop never leaves work behind on another thread.
struct Lifecycle {
    inner: Arc<TreeInner>,
    bg: Option<Checkpointer>,
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if let Some(bg) = self.bg.take() {
            bg.stop();
            self.inner.ckpt_running.store(false, Ordering::Release);
        }
        self.inner.pressure.stop();
        self.inner.close();
    }
}

/// Persistent mode's WAL and frame store.
pub(crate) struct Durable {
    pub(crate) wal: Wal,
    pub(crate) store: Arc<PersistentBackend>,
    pub(crate) io: IoStats,
}

/// Which I/O path a persistent tree runs on ([`Tree::io_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStats {
    /// The I/O driver's name: `"io_uring"` or `"sync"` (or a caller's
    /// driver given to [`TreeBuilder::io_driver`](crate::TreeBuilder::io_driver)).
    pub driver: &'static str,
    /// Why io_uring is not in use, when the default choice fell back to
    /// the sync driver (`ENOSYS`, `EPERM` under seccomp,
    /// `kernel.io_uring_disabled`, or the `io-uring` feature being off).
    pub fallback_reason: Option<String>,
    /// True when the frame file is opened with `O_DIRECT`; false where the
    /// filesystem refused it and buffered I/O plus fdatasync is used.
    pub direct_io: bool,
}

/// The default driver: io_uring where the kernel allows (feature
/// `io-uring`), else the sync driver, with the reason.
///
/// `HOLT_IO_DRIVER=sync` in the environment forces the sync driver;
/// `TreeBuilder::io_driver` overrides both.
fn default_driver() -> (Arc<dyn IoDriver>, IoStats) {
    if std::env::var("HOLT_IO_DRIVER").is_ok_and(|v| v == "sync") {
        let stats = IoStats {
            driver: "sync",
            fallback_reason: Some("forced by HOLT_IO_DRIVER=sync".to_string()),
            direct_io: false,
        };
        return (Arc::new(crate::io::SyncDriver::new()), stats);
    }
    #[cfg(feature = "io-uring")]
    {
        // The probe sets up and tears down a ring and reads a sysctl
        // (~0.1-1 ms): once per process is enough, and the driver it
        // returns holds no per-tree state.
        static BEST: std::sync::OnceLock<(Arc<dyn IoDriver>, holt_backend_uring::DriverInfo)> =
            std::sync::OnceLock::new();
        let (driver, info) = BEST.get_or_init(holt_backend_uring::best_driver).clone();
        let stats = IoStats {
            driver: info.name,
            fallback_reason: info.fallback_reason,
            direct_io: false,
        };
        (driver, stats)
    }
    #[cfg(not(feature = "io-uring"))]
    {
        let stats = IoStats {
            driver: "sync",
            fallback_reason: Some("built without the io-uring feature".to_string()),
            direct_io: false,
        };
        (Arc::new(crate::io::SyncDriver::new()), stats)
    }
}

impl TreeInner {
    /// Last-handle close: a final round if the checkpointer was enabled,
    /// then the WAL drained and synced (or, without a WAL, a write-back to
    /// a caller's backend). Best effort: there is no caller left to report
    /// an error to.
    fn close(&self) {
        if let Some(d) = &self.durable {
            if self.cfg.checkpoint.enabled && !self.poisoned.load(Ordering::Acquire) {
                let _ = self.checkpoint_round();
            }
            let _ = d.wal.sync_all();
        } else if self.write_back_on_drop && self.write_back().is_ok() {
            let _ = self.core.bm.backend().flush();
        }
    }

    /// A merge pass of the background checkpointer. Holds the commit gate
    /// shared like every other writer: a round's cut relies on no
    /// exclusive latch being held while it arms its captures.
    pub(crate) fn merge_pass(&self, limit: usize) -> Result<u64> {
        let _g = read_gate(&self.gate);
        self.core.merge_pass(0, false, limit)
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.check_writable().is_err()
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        if let Some(d) = &self.durable {
            if d.wal.is_poisoned() {
                return Err(Error::Poisoned);
            }
        }
        Ok(())
    }

    /// Appends the WAL record for `ops` (persistent mode) and returns its
    /// seq; 0 without a WAL.
    pub(crate) fn log(&self, ops: &[OpRef<'_>]) -> Result<u64> {
        match &self.durable {
            Some(d) => d.wal.append(ops, !self.cfg.wal_sync_on_commit),
            None => Ok(0),
        }
    }

    /// After a mutation: wait for durability (sync mode) or write frames
    /// through (no WAL, `memory_flush_on_write`).
    fn after_write(&self, seq: u64) -> Result<()> {
        match &self.durable {
            Some(d) if self.cfg.wal_sync_on_commit => d.wal.drain(seq, true),
            Some(_) => Ok(()),
            None if self.write_through => self.write_back().map(|_| ()),
            None => Ok(()),
        }
    }
}

/// An ordered map from byte-string keys to byte-string values, stored as
/// an adaptive radix tree in 512 KiB frames.
///
/// `Tree` is a cheap handle: clones share one tree, every method takes
/// `&self`, and it is `Send + Sync`, so threads can share it freely.
/// Readers never block writers; writers in different subtrees run in
/// parallel.
///
/// ```
/// use holt::{Tree, TreeConfig};
///
/// let tree = Tree::open(TreeConfig::memory())?;
/// assert_eq!(tree.put(b"/etc/hosts", b"127.0.0.1 localhost")?, None);
/// assert_eq!(tree.get(b"/etc/hosts")?.as_deref(), Some(&b"127.0.0.1 localhost"[..]));
///
/// tree.rename(b"/etc/hosts", b"/etc/hosts.bak", false)?;
/// assert_eq!(tree.get(b"/etc/hosts")?, None);
///
/// tree.txn(|b| {
///     b.put(b"/etc/a", b"1");
///     b.put(b"/etc/b", b"2");
///     b.delete(b"/etc/hosts.bak");
/// })?;
/// let keys: Vec<Vec<u8>> = tree
///     .scan_prefix(b"/etc/")
///     .into_iter()
///     .map(|e| match e? {
///         holt::RangeEntry::Key { key, .. } => Ok(key),
///         other => panic!("unexpected {other:?}"),
///     })
///     .collect::<holt::Result<_>>()?;
/// assert_eq!(keys, vec![b"/etc/a".to_vec(), b"/etc/b".to_vec()]);
/// # Ok::<(), holt::Error>(())
/// ```
#[derive(Clone)]
pub struct Tree {
    pub(crate) inner: Arc<TreeInner>,
    _life: Arc<Lifecycle>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("storage", &self.inner.cfg.storage)
            .field("root_guid", &format_args!("[0; 16 bytes]"))
            .finish_non_exhaustive()
    }
}

pub(crate) fn read_gate(g: &RwLock<()>) -> RwLockReadGuard<'_, ()> {
    g.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write_gate(g: &RwLock<()>) -> RwLockWriteGuard<'_, ()> {
    g.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY {
        return Err(Error::KeyTooLong { len: key.len() });
    }
    Ok(())
}

pub(crate) fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE {
        return Err(Error::ValueTooLong { len: value.len() });
    }
    Ok(())
}

impl Tree {
    /// Opens a tree as `cfg` says.
    ///
    /// Memory mode (`TreeConfig::memory()`) keeps the frames in a private
    /// [`MemoryBackend`] and has no WAL.
    ///
    /// # Errors
    /// Invalid configuration; for a persistent tree, I/O and corruption
    /// errors from loading it, [`Error::Locked`] if another process has it
    /// open.
    pub fn open(cfg: TreeConfig) -> Result<Self> {
        Self::open_with_extras(cfg, OpenExtras::default())
    }

    /// [`Tree::open`] with what a [`TreeBuilder`](crate::TreeBuilder) sets
    /// beyond the configuration.
    pub(crate) fn open_with_extras(cfg: TreeConfig, extras: OpenExtras) -> Result<Self> {
        cfg.validate()?;
        match &cfg.storage {
            Storage::Memory => {
                let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
                Self::with_backend(cfg, backend, false)
            }
            Storage::Persistent { dir } => {
                let dir = dir.clone();
                let (driver, info) = match extras.driver {
                    Some(driver) => {
                        let info = IoStats {
                            driver: driver.name(),
                            fallback_reason: None,
                            direct_io: false,
                        };
                        (driver, info)
                    }
                    None => default_driver(),
                };
                Self::open_persistent(cfg, &dir, driver, info, extras.spin_waiters)
            }
        }
    }

    /// Persistent open (DESIGN.md §9): lock and load the manifest, read
    /// every WAL file (refusing mid-file corruption before changing
    /// anything), cut a torn tail, replay the records above the
    /// checkpoint cut in seq order, stopping at the first gap.
    fn open_persistent(
        cfg: TreeConfig,
        dir: &Path,
        driver: Arc<dyn IoDriver>,
        mut io: IoStats,
        spin_waiters: Option<usize>,
    ) -> Result<Self> {
        let store = Arc::new(PersistentBackend::open_with_driver(dir, driver)?);
        io.direct_io = store.is_direct();
        let driver = Arc::clone(store.driver());
        let (cut, floor) = store.checkpoint_meta();
        let scanned = wal::replay::scan(dir, &driver)?;
        wal::replay::cut_tail(dir, &driver, &scanned)?;
        let backend: Arc<dyn Backend> = store.clone();
        let core = Core::open(BufferManager::new(backend, cfg.buffer_pool_size))?;
        let mut last = cut.max(floor);
        let mut max_seen = last;
        let mut gap = false;
        for rec in &scanned.records {
            max_seen = max_seen.max(rec.seq);
            if rec.seq <= cut || gap {
                continue;
            }
            if rec.seq != last + 1 {
                gap = true;
                continue;
            }
            let mut log = || Ok(rec.seq);
            for op in &rec.ops {
                match op {
                    Op::Put(k, v) => {
                        core.put(k, v, &mut log)?;
                    }
                    Op::Delete(k) => {
                        core.delete(k, &mut log)?;
                    }
                }
            }
            last = rec.seq;
        }
        let retired = scanned.retired.clone();
        let mut wal = Wal::open(
            dir,
            driver,
            scanned.active_file.clone(),
            scanned.active_len,
            if scanned.zero_tail {
                scanned.active_file_len
            } else {
                scanned.active_len
            },
            max_seen + 1,
            retired,
        )?;
        if let Some(n) = spin_waiters {
            wal.limit_spinners(n);
        }
        let tree = Self::assemble(cfg, core, false, false, Some(Durable { wal, store, io }))?;
        if gap {
            // Records past a gap are not part of any prefix: a checkpoint
            // at the highest seq seen makes the replayed prefix durable and
            // retires every file, so new records never follow the gap.
            tree.inner.checkpoint_round()?;
        }
        Ok(tree)
    }

    /// Opens a tree over a caller-supplied [`Backend`], without a WAL
    /// (whatever `cfg.storage` says). Loads the root frame if the backend
    /// has one, otherwise starts empty. With `memory_flush_on_write` every
    /// mutation writes its frames through to the backend before returning;
    /// dropping the last handle writes back whatever is still dirty.
    ///
    /// # Errors
    /// Invalid configuration, or the backend's errors loading the root.
    pub fn open_with_backend(cfg: TreeConfig, backend: Arc<dyn Backend>) -> Result<Self> {
        cfg.validate()?;
        Self::with_backend(cfg, backend, true)
    }

    fn with_backend(cfg: TreeConfig, backend: Arc<dyn Backend>, external: bool) -> Result<Self> {
        let bm = BufferManager::new(backend, cfg.buffer_pool_size);
        let core = Core::open(bm)?;
        let write_through = cfg.memory_flush_on_write;
        let tree = Self::assemble(cfg, core, write_through, external, None)?;
        tree.inner.after_write(0)?;
        Ok(tree)
    }

    fn assemble(
        cfg: TreeConfig,
        core: Core,
        write_through: bool,
        write_back_on_drop: bool,
        durable: Option<Durable>,
    ) -> Result<Self> {
        let enabled = cfg.checkpoint.enabled;
        let ckpt_cfg = cfg.checkpoint.clone();
        let inner = Arc::new(TreeInner {
            cfg,
            core,
            gate: RwLock::new(()),
            write_through,
            write_back_on_drop,
            durable,
            poisoned: AtomicBool::new(false),
            ckpt_counters: CkptCounters::default(),
            ckpt_running: AtomicBool::new(enabled),
            pressure: Pressure::default(),
        });
        let bg = if enabled {
            Some(Checkpointer::start(&inner, &ckpt_cfg).map_err(Error::BackendIo)?)
        } else {
            None
        };
        let life = Arc::new(Lifecycle {
            inner: Arc::clone(&inner),
            bg,
        });
        Ok(Self { inner, _life: life })
    }

    /// The value stored under `key`, or `None`. A key longer than the
    /// limit is simply absent.
    ///
    /// # Errors
    /// Backend I/O or frame corruption while loading a frame.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if key.len() > MAX_KEY {
            return Ok(None);
        }
        self.inner.core.get(key)
    }

    /// [`Tree::get`] into a caller's buffer: replaces the contents of
    /// `out` with the value stored under `key` and returns `true`, or
    /// returns `false` if the key is absent (then `out` is cleared). A
    /// loop of lookups that reuses one buffer allocates nothing once the
    /// buffer has grown to the largest value. (An addition to holt 0.2.1.)
    ///
    /// ```
    /// # fn main() -> holt::Result<()> {
    /// let tree = holt::Tree::open(holt::TreeConfig::memory())?;
    /// tree.put(b"a", b"1")?;
    /// let mut buf = Vec::new();
    /// assert!(tree.get_into(b"a", &mut buf)?);
    /// assert_eq!(buf, b"1");
    /// assert!(!tree.get_into(b"b", &mut buf)?);
    /// assert!(buf.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Tree::get`] (`out` is then unspecified).
    pub fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let found = key.len() <= MAX_KEY && self.inner.core.get_into(key, out)?;
        if !found {
            out.clear();
        }
        Ok(found)
    }

    /// Inserts or overwrites `key`, returning the previous value.
    ///
    /// # Errors
    /// [`Error::KeyTooLong`] / [`Error::ValueTooLong`] over 65 535 bytes
    /// (the tree is unchanged), or backend errors.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        check_value(value)?;
        let inner = &*self.inner;
        inner.check_writable()?;
        let mut seq = 0;
        let old = {
            let _g = read_gate(&inner.gate);
            let mut log = || {
                seq = inner.log(&[OpRef::Put(key, value)])?;
                Ok(seq)
            };
            inner.core.put(key, value, &mut log)?
        };
        self.after_mutation(seq)?;
        Ok(old)
    }

    /// Removes `key`, returning its value. Deletes are physical: the space
    /// is reusable at once.
    ///
    /// # Errors
    /// Backend errors.
    pub fn delete(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if key.len() > MAX_KEY {
            return Ok(None);
        }
        let inner = &*self.inner;
        inner.check_writable()?;
        let mut seq = 0;
        let old = {
            let _g = read_gate(&inner.gate);
            let mut log = || {
                seq = inner.log(&[OpRef::Delete(key)])?;
                Ok(seq)
            };
            inner.core.delete(key, &mut log)?
        };
        if old.is_some() {
            self.after_mutation(seq)?;
        }
        Ok(old)
    }

    /// Moves the value of `src` to `dst` atomically.
    ///
    /// # Errors
    /// In this order: [`Error::NotFound`] if `src` is missing (even when
    /// `src == dst`); `Ok(())` with no change if `src == dst`;
    /// [`Error::DstExists`] if `dst` exists and `force` is false;
    /// [`Error::KeyTooLong`] for an oversize `dst`. On any error nothing
    /// changes.
    pub fn rename(&self, src: &[u8], dst: &[u8], force: bool) -> Result<()> {
        let mut batch = TxnBatch::default();
        batch.rename(src, dst, force);
        self.commit(&batch)
    }

    /// Applies a batch of puts, deletes and renames all-or-nothing.
    ///
    /// Each op is validated against the state the batch itself produces
    /// (a rename may move a key put earlier in the batch); the first
    /// failing op's error is returned and nothing is applied. An empty
    /// batch is `Ok(())`.
    ///
    /// Memory: every frame the batch touches stays in the cache until
    /// the batch is applied (pinned, then dirty), and no checkpoint round
    /// can run meanwhile. A batch that touches more frames than
    /// `buffer_pool_size` raises the cache past the pool by the difference
    /// while it runs; the pressure rule brings it back afterwards. A batch
    /// of `k` keys in random order touches up to `k` frames (one in key
    /// order, far fewer): to stay inside the budget over a tree larger
    /// than the pool, keep `k` below the pool's frame count.
    ///
    /// # Errors
    /// The first failing op's error ([`Error::KeyTooLong`],
    /// [`Error::ValueTooLong`], [`Error::NotFound`], [`Error::DstExists`]),
    /// or backend errors.
    pub fn txn<F>(&self, build: F) -> Result<()>
    where
        F: FnOnce(&mut TxnBatch),
    {
        let mut batch = TxnBatch::default();
        build(&mut batch);
        self.commit(&batch)
    }

    /// Iterates the whole tree in key order; narrow it with
    /// [`RangeBuilder::prefix`], [`RangeBuilder::start_after`] and
    /// [`RangeBuilder::delimiter`].
    pub fn range(&self) -> RangeBuilder {
        RangeBuilder::new(self.clone())
    }

    /// Iterates the keys that start with `prefix`; the same as
    /// `range().prefix(prefix)`.
    pub fn scan_prefix(&self, prefix: &[u8]) -> RangeBuilder {
        self.range().prefix(prefix)
    }

    /// Durability barrier: on `Ok`, everything acknowledged before the
    /// call is in the backend. In memory mode and over a caller's backend
    /// this writes every dirty frame and pending delete through, then
    /// flushes the backend. Idempotent; on error nothing is lost and the
    /// next call retries.
    ///
    /// # Errors
    /// The backend's write, delete or flush error.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint_round().map(|_| ())
    }

    /// Frame counts, fill and cache counters, gathered without disturbing
    /// the cache.
    ///
    /// # Errors
    /// Backend or corruption errors loading an uncached frame.
    pub fn stats(&self) -> Result<TreeStats> {
        let mut st = self.inner.core.stats()?;
        if self.inner.ckpt_running.load(Ordering::Acquire) {
            st.checkpointer = Some(self.inner.ckpt_counters.snapshot());
        }
        Ok(st)
    }

    /// Frames visited by a point lookup of each stored key, from the
    /// tree's shape (a walk of every frame, like [`Tree::stats`]). A
    /// diagnostic for the bench and tests; not part of the stable API.
    ///
    /// # Errors
    /// Backend or corruption errors loading an uncached frame.
    #[doc(hidden)]
    pub fn frame_hops(&self) -> Result<crate::api::stats::FrameHops> {
        self.inner.core.frame_hops()
    }

    /// Buffer-pool figures (resident, peak and dirty frames, pooled image
    /// buffers, pressure rounds), read without touching any frame.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("holt-doc-cache-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// use holt::{Tree, TreeConfig};
    ///
    /// let mut cfg = TreeConfig::new(&dir);
    /// cfg.buffer_pool_size = 8;
    /// let tree = Tree::open(cfg)?;
    /// tree.put(b"a", b"1")?;
    /// let c = tree.cache_stats();
    /// assert_eq!(c.capacity_frames, 8);
    /// assert_eq!(c.dirty_frames, 1);
    /// # drop(tree);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), holt::Error>(())
    /// ```
    #[must_use]
    pub fn cache_stats(&self) -> CacheStats {
        let bm = &self.inner.core.bm;
        let (resident_frames, peak_resident_frames) = bm.resident();
        let p = &self.inner.pressure;
        CacheStats {
            capacity_frames: bm.capacity(),
            resident_frames,
            peak_resident_frames,
            dirty_frames: bm.dirty.len(),
            pooled_images: bm.pooled_images(),
            pressure_rounds: p.rounds.load(Ordering::Relaxed),
            pressure_waits: p.waits.load(Ordering::Relaxed),
        }
    }

    /// The I/O path of a persistent tree: driver in use, why io_uring is
    /// not (if it is not), and whether frames use `O_DIRECT`. `None` in
    /// memory mode and over a caller's backend.
    #[must_use]
    pub fn io_stats(&self) -> Option<IoStats> {
        self.inner.durable.as_ref().map(|d| d.io.clone())
    }

    /// Cumulative WAL counters since open (records, fdatasyncs, commits
    /// that waited for durability); `None` without a WAL (memory mode and
    /// caller backends). See [`WalStats`] for an example.
    #[must_use]
    pub fn wal_stats(&self) -> Option<WalStats> {
        self.inner.durable.as_ref().map(|d| {
            let c = d.wal.counters();
            WalStats {
                records: c.records.load(Ordering::Relaxed),
                syncs: c.syncs.load(Ordering::Relaxed),
                sync_commits: c.sync_commits.load(Ordering::Relaxed),
                spins: c.spins.load(Ordering::Relaxed),
            }
        })
    }

    /// Repacks every frame and folds child frames that fit back into their
    /// parents. Safe while other threads read and write; the result is
    /// staged as dirty for the next checkpoint.
    ///
    /// # Errors
    /// Backend or corruption errors.
    pub fn compact(&self) -> Result<()> {
        self.inner.check_writable()?;
        {
            let _g = read_gate(&self.inner.gate);
            self.inner
                .core
                .merge_pass(0, true, crate::tree::merge::COMPACT_LIMIT)?;
        }
        self.after_mutation(0)
    }

    /// After a mutation, with no latch and no gate held: durability or
    /// write-through (`TreeInner::after_write`), then the pressure rule
    /// P1 (`checkpoint::pressure`) in persistent mode, which may wait for
    /// a background round.
    pub(crate) fn after_mutation(&self, seq: u64) -> Result<()> {
        self.inner.after_write(seq)?;
        if self.inner.durable.is_some() {
            self.inner.pressure.relieve(&self.inner);
        }
        Ok(())
    }

    /// The configuration this tree was opened with.
    #[must_use]
    pub fn config(&self) -> &TreeConfig {
        &self.inner.cfg
    }

    /// Size of one frame in bytes: 524 288.
    #[must_use]
    pub const fn page_size() -> u32 {
        FRAME_SIZE as u32
    }
}
