//! [`Tree`]: the handle applications use.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::api::config::{Storage, TreeConfig};
use crate::api::errors::{Error, Result};
use crate::api::range::RangeBuilder;
use crate::api::stats::TreeStats;
use crate::api::txn::{BatchOp, TxnBatch};
use crate::buffer::BufferManager;
use crate::store::{Backend, MemoryBackend, FRAME_SIZE};
use crate::tree::{Core, MAX_KEY, MAX_VALUE};

/// State shared by every clone of a [`Tree`].
pub(crate) struct TreeInner {
    pub(crate) cfg: TreeConfig,
    pub(crate) core: Core,
    /// Commit gate: single-key writes hold it shared; multi-key batches
    /// (`txn`, `rename`) hold it exclusively so their validation and their
    /// application see the same state.
    gate: RwLock<()>,
    /// No WAL and `memory_flush_on_write`: write dirty frames through after
    /// every mutation.
    write_through: bool,
    /// Write dirty frames back when the last handle drops (caller-supplied
    /// backends, which outlive the tree).
    write_back_on_drop: bool,
}

impl Drop for TreeInner {
    fn drop(&mut self) {
        if self.write_back_on_drop {
            // Best effort: there is no caller left to report an error to.
            if self.core.bm.write_back().is_ok() {
                let _ = self.core.bm.backend().flush();
            }
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
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("storage", &self.inner.cfg.storage)
            .field("root_guid", &format_args!("[0; 16 bytes]"))
            .finish_non_exhaustive()
    }
}

fn read_gate(g: &RwLock<()>) -> RwLockReadGuard<'_, ()> {
    g.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_gate(g: &RwLock<()>) -> RwLockWriteGuard<'_, ()> {
    g.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY {
        return Err(Error::KeyTooLong { len: key.len() });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE {
        return Err(Error::ValueTooLong { len: value.len() });
    }
    Ok(())
}

impl Tree {
    /// Opens a tree as `cfg` says.
    ///
    /// Memory mode (`TreeConfig::memory()`) keeps the frames in a private
    /// [`MemoryBackend`](crate::MemoryBackend) and has no WAL.
    ///
    /// # Errors
    /// Invalid configuration, or I/O and corruption errors from loading
    /// the tree. Persistent mode is not available in this build yet and
    /// returns [`Error::NotYetImplemented`].
    pub fn open(cfg: TreeConfig) -> Result<Self> {
        cfg.validate()?;
        match &cfg.storage {
            Storage::Memory => {
                let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
                Self::with_backend(cfg, backend, false)
            }
            Storage::Persistent { .. } => Err(Error::NotYetImplemented(
                "persistent mode (WAL, checkpoints, recovery) lands with the persistence issue",
            )),
        }
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
        let tree = Self {
            inner: Arc::new(TreeInner {
                cfg,
                core,
                gate: RwLock::new(()),
                write_through,
                write_back_on_drop: external,
            }),
        };
        tree.after_write()?;
        Ok(tree)
    }

    fn after_write(&self) -> Result<()> {
        if self.inner.write_through {
            self.inner.core.bm.write_back()?;
        }
        Ok(())
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

    /// Inserts or overwrites `key`, returning the previous value.
    ///
    /// # Errors
    /// [`Error::KeyTooLong`] / [`Error::ValueTooLong`] over 65 535 bytes
    /// (the tree is unchanged), or backend errors.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        check_value(value)?;
        let old = {
            let _g = read_gate(&self.inner.gate);
            self.inner.core.put(key, value, 0)?
        };
        self.after_write()?;
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
        let old = {
            let _g = read_gate(&self.inner.gate);
            self.inner.core.delete(key, 0)?
        };
        if old.is_some() {
            self.after_write()?;
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
        self.commit(vec![BatchOp::Rename {
            src: src.to_vec(),
            dst: dst.to_vec(),
            force,
        }])
    }

    /// Applies a batch of puts, deletes and renames all-or-nothing.
    ///
    /// Each op is validated against the state the batch itself produces
    /// (a rename may move a key put earlier in the batch); the first
    /// failing op's error is returned and nothing is applied. An empty
    /// batch is `Ok(())`.
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
        self.commit(batch.pending)
    }

    fn commit(&self, ops: Vec<BatchOp>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let changed = {
            let _g = write_gate(&self.inner.gate);
            let core = &self.inner.core;
            // The batch's own view: key -> Some(value) / None (deleted).
            let mut view: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            let lookup = |view: &BTreeMap<Vec<u8>, Option<Vec<u8>>>, k: &[u8]| -> Result<Option<Vec<u8>>> {
                match view.get(k) {
                    Some(v) => Ok(v.clone()),
                    None if k.len() > MAX_KEY => Ok(None),
                    None => core.get(k),
                }
            };
            for op in ops {
                match op {
                    BatchOp::Put { key, value } => {
                        check_key(&key)?;
                        check_value(&value)?;
                        view.insert(key, Some(value));
                    }
                    BatchOp::Delete { key } => {
                        if key.len() <= MAX_KEY {
                            view.insert(key, None);
                        }
                    }
                    BatchOp::Rename { src, dst, force } => {
                        let Some(v) = lookup(&view, &src)? else {
                            return Err(Error::NotFound);
                        };
                        if src == dst {
                            continue;
                        }
                        if !force && lookup(&view, &dst)?.is_some() {
                            return Err(Error::DstExists);
                        }
                        check_key(&dst)?;
                        view.insert(src, None);
                        view.insert(dst, Some(v));
                    }
                }
            }
            let mut changed = false;
            for (k, v) in &view {
                changed |= match v {
                    Some(v) => {
                        core.put(k, v, 0)?;
                        true
                    }
                    None => core.delete(k, 0)?.is_some(),
                };
            }
            changed
        };
        if changed {
            self.after_write()?;
        }
        Ok(())
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
        self.inner.core.bm.write_back()?;
        self.inner.core.bm.backend().flush()
    }

    /// Frame counts, fill and cache counters, gathered without disturbing
    /// the cache.
    ///
    /// # Errors
    /// Backend or corruption errors loading an uncached frame.
    pub fn stats(&self) -> Result<TreeStats> {
        self.inner.core.stats()
    }

    /// Repacks every frame and folds child frames that fit back into their
    /// parents. Safe while other threads read and write; the result is
    /// staged as dirty for the next checkpoint.
    ///
    /// # Errors
    /// Backend or corruption errors.
    pub fn compact(&self) -> Result<()> {
        {
            let _g = read_gate(&self.inner.gate);
            self.inner.core.compact(0)?;
        }
        self.after_write()
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
