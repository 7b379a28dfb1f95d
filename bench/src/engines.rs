//! The engines under test, behind one small trait.
//!
//! `holt` is the engine; `reference` is a plain `HashMap` (point ops) plus
//! a `BTreeMap` (ordered ops) that shows what the harness itself costs.
//! The peers (RocksDB, SQLite, LMDB, redb, fjall) live in `crate::peers`,
//! each behind its own cargo feature; each must give answers identical to
//! these two for the same op sequence (digests are compared).

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};

use crate::error::{BenchError, Result};

/// Outcome of a rename (`force = false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renamed {
    Done,
    NotFound,
    DstExists,
}

impl Renamed {
    #[must_use]
    pub const fn code(self) -> u64 {
        match self {
            Renamed::Done => 0,
            Renamed::NotFound => 1,
            Renamed::DstExists => 2,
        }
    }
}

/// One entry of a delimited listing.
#[derive(Clone, Copy, Debug)]
pub enum DirEntry<'a> {
    Key(&'a [u8], &'a [u8]),
    Prefix(&'a [u8]),
}

/// Engine-internal numbers; `None` where an engine has no such thing.
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineStats {
    pub frames: Option<u64>,
    pub space_used: Option<u64>,
    pub cache_hits: Option<u64>,
    pub cache_misses: Option<u64>,
    pub restarts: Option<u64>,
    /// Estimated heap bytes of the engine's data structures (engines
    /// without their own space accounting).
    pub heap_bytes: Option<u64>,
}

/// What the bench needs from a key-value engine. Reads take `&self` and
/// must be callable from several threads at once (`Sync`); writes take
/// `&mut self`.
pub trait Engine: Sync {
    fn name(&self) -> &'static str;

    /// Copies (or moves) the value of `key` into `out`; false if absent.
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool>;

    /// Inserts or overwrites; the previous value goes to `old`. True if the
    /// key existed.
    fn put(&mut self, key: &[u8], value: &[u8], old: &mut Vec<u8>) -> Result<bool>;

    /// Removes `key`; its value goes to `old`. True if it existed.
    fn delete(&mut self, key: &[u8], old: &mut Vec<u8>) -> Result<bool>;

    /// Moves `src` to `dst` without overwriting.
    fn rename(&mut self, src: &[u8], dst: &[u8]) -> Result<Renamed>;

    /// Visits the first `limit` keys starting with `prefix`, in order.
    /// Returns how many were visited.
    fn scan<F: FnMut(&[u8], &[u8])>(&self, prefix: &[u8], limit: usize, f: F) -> Result<usize>;

    /// Visits the first `limit` entries of one level under `prefix`: keys
    /// whose rest has no `delim`, and each distinct common prefix (up to and
    /// including the first `delim` after `prefix`) once, in order.
    fn list_dir<F: FnMut(DirEntry<'_>)>(
        &self,
        prefix: &[u8],
        delim: u8,
        limit: usize,
        f: F,
    ) -> Result<usize>;

    /// How many keys one [`put_batch`](Self::put_batch) call of the load
    /// takes: 1 (the default) means the load calls `put` once per key.
    fn load_batch(&self) -> usize {
        1
    }

    /// The load phase of engines whose users bulk-load in transactions or
    /// write batches: inserts `items` (fresh keys) as one unit. Calls
    /// `existed(j, old)`, in increasing `j`, for each item that was already
    /// present, where the engine can tell without an extra read (blind
    /// write batches cannot, and report nothing).
    fn put_batch(
        &mut self,
        items: &[(&[u8], &[u8])],
        existed: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<()> {
        let mut old = Vec::new();
        for (j, (k, v)) in items.iter().enumerate() {
            if self.put(k, v, &mut old)? {
                existed(j, &old);
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable (or written through).
    fn checkpoint(&mut self) -> Result<()>;

    /// Frames a point get of each stored key visits (holt only).
    fn frame_hops(&self) -> Option<holt::FrameHops> {
        None
    }

    /// Engine-specific figures (frames, fill, cache hits, restarts);
    /// engines that report none keep the default.
    fn stats(&self) -> Result<EngineStats> {
        Ok(EngineStats::default())
    }

    /// Directory holding the engine's files, if it has any. The
    /// persistence groups (`reopen`, `sync_commit`, ...) run only on
    /// engines that have one.
    fn data_dir(&self) -> Option<&Path> {
        None
    }

    /// Bytes of the engine's write-ahead log files right now (0 if it has
    /// none).
    fn wal_bytes(&self) -> u64 {
        0
    }

    /// Persistent engines: a clean close (drop every handle). Until
    /// [`reopen`](Self::reopen), every other call fails.
    fn close(&mut self) -> Result<()> {
        Err(unsupported(self.name(), "close"))
    }

    /// Persistent engines: closes (if open) and opens the same directory
    /// again, with a WAL sync on every commit or not.
    fn reopen(&mut self, _sync_on_commit: bool) -> Result<()> {
        Err(unsupported(self.name(), "reopen"))
    }

    /// Whether the open engine syncs its WAL on every commit; `None` if
    /// the engine has no such setting or is closed.
    fn sync_on_commit(&self) -> Option<bool> {
        None
    }

    /// A put callable from several threads at once (engines whose writers
    /// can share the handle). True if the key existed.
    fn put_shared(&self, _key: &[u8], _value: &[u8]) -> Result<bool> {
        Err(unsupported(self.name(), "put from several threads"))
    }
}

pub(crate) fn unsupported(engine: &'static str, what: &str) -> BenchError {
    BenchError::Engine {
        engine,
        what: what.to_string(),
        err: "not supported by this engine".into(),
    }
}

// ---------------------------------------------------------------- holt --

/// How to open holt.
#[derive(Clone, Debug)]
pub struct HoltOptions {
    /// `None`: memory mode; `Some(dir)`: persistent mode in `dir`.
    pub dir: Option<PathBuf>,
    pub pool_frames: usize,
    pub flush_on_write: bool,
}

pub struct HoltEngine {
    /// `None` between [`Engine::close`] and [`Engine::reopen`].
    tree: Option<holt::Tree>,
    opts: HoltOptions,
    sync_on_commit: bool,
}

impl HoltEngine {
    /// # Errors
    /// Whatever `Tree::open` returns.
    pub fn open(opts: &HoltOptions) -> Result<Self> {
        let mut cfg = match &opts.dir {
            None => holt::TreeConfig::memory(),
            Some(d) => holt::TreeConfig::new(d.clone()),
        };
        cfg.buffer_pool_size = opts.pool_frames;
        cfg.memory_flush_on_write = opts.flush_on_write;
        let what = match &opts.dir {
            None => "open memory tree".to_string(),
            Some(d) => format!("open persistent tree at {}", d.display()),
        };
        let tree = holt::Tree::open(cfg).map_err(|e| BenchError::Engine {
            engine: "holt",
            what,
            err: e.to_string(),
        })?;
        Ok(Self {
            tree: Some(tree),
            opts: opts.clone(),
            sync_on_commit: false,
        })
    }

    #[inline]
    fn tree(&self) -> Result<&holt::Tree> {
        self.tree.as_ref().ok_or_else(closed)
    }
}

#[cold]
fn closed() -> BenchError {
    BenchError::Engine {
        engine: "holt",
        what: "use of the tree".into(),
        err: "the tree is closed".into(),
    }
}

fn holt_err(what: &'static str, key: &[u8], e: &holt::Error) -> BenchError {
    BenchError::Engine {
        engine: "holt",
        what: format!("{what}({})", String::from_utf8_lossy(key)),
        err: e.to_string(),
    }
}

impl Engine for HoltEngine {
    fn name(&self) -> &'static str {
        "holt"
    }

    #[inline]
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        self.tree()?
            .get_into(key, out)
            .map_err(|e| holt_err("get", key, &e))
    }

    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        match self.tree()?.put(key, value) {
            Ok(Some(v)) => {
                *old = v;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(holt_err("put", key, &e)),
        }
    }

    #[inline]
    fn delete(&mut self, key: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        match self.tree()?.delete(key) {
            Ok(Some(v)) => {
                *old = v;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(holt_err("delete", key, &e)),
        }
    }

    fn load_batch(&self) -> usize {
        crate::peers::LOAD_BATCH
    }

    /// One atomic [`holt::Tree::txn`] per unit, as the peers' transactions
    /// and write batches: one WAL record, the keys applied in key order.
    /// Blind, like the LSM batches: a key that existed is not reported.
    fn put_batch(
        &mut self,
        items: &[(&[u8], &[u8])],
        _existed: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<()> {
        self.tree()?
            .txn(|b| {
                for (k, v) in items {
                    b.put(k, v);
                }
            })
            .map_err(|e| holt_err("txn", items.first().map_or(&b""[..], |i| i.0), &e))
    }

    fn rename(&mut self, src: &[u8], dst: &[u8]) -> Result<Renamed> {
        match self.tree()?.rename(src, dst, false) {
            Ok(()) => Ok(Renamed::Done),
            Err(holt::Error::NotFound) => Ok(Renamed::NotFound),
            Err(holt::Error::DstExists) => Ok(Renamed::DstExists),
            Err(e) => Err(holt_err("rename", src, &e)),
        }
    }

    fn scan<F: FnMut(&[u8], &[u8])>(&self, prefix: &[u8], limit: usize, mut f: F) -> Result<usize> {
        let mut seen = 0;
        let mut odd = None;
        self.tree()?
            .scan_prefix(prefix)
            .limit(limit)
            .for_each(|e| match e {
                holt::RangeEntryRef::Key { key, value } => {
                    f(key, value);
                    seen += 1;
                    ControlFlow::Continue(())
                }
                other => {
                    odd = Some(format!("{other:?}"));
                    ControlFlow::Break(())
                }
            })
            .map_err(|e| holt_err("scan_prefix", prefix, &e))?;
        if let Some(other) = odd {
            return Err(BenchError::Engine {
                engine: "holt",
                what: format!("scan_prefix({})", String::from_utf8_lossy(prefix)),
                err: format!("unexpected entry without delimiter: {other}"),
            });
        }
        Ok(seen)
    }

    fn list_dir<F: FnMut(DirEntry<'_>)>(
        &self,
        prefix: &[u8],
        delim: u8,
        limit: usize,
        mut f: F,
    ) -> Result<usize> {
        let mut seen = 0;
        let mut odd = None;
        self.tree()?
            .range()
            .prefix(prefix)
            .delimiter(delim)
            .limit(limit)
            .for_each(|e| {
                match e {
                    holt::RangeEntryRef::Key { key, value } => f(DirEntry::Key(key, value)),
                    holt::RangeEntryRef::CommonPrefix(p) => f(DirEntry::Prefix(p)),
                    other => {
                        odd = Some(format!("{other:?}"));
                        return ControlFlow::Break(());
                    }
                }
                seen += 1;
                ControlFlow::Continue(())
            })
            .map_err(|e| holt_err("range", prefix, &e))?;
        if let Some(other) = odd {
            return Err(BenchError::Engine {
                engine: "holt",
                what: format!("range({})", String::from_utf8_lossy(prefix)),
                err: format!("unknown range entry: {other}"),
            });
        }
        Ok(seen)
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.tree()?
            .checkpoint()
            .map_err(|e| holt_err("checkpoint", b"", &e))
    }

    fn frame_hops(&self) -> Option<holt::FrameHops> {
        self.tree().ok()?.frame_hops().ok()
    }

    fn stats(&self) -> Result<EngineStats> {
        let s = self
            .tree()?
            .stats()
            .map_err(|e| holt_err("stats", b"", &e))?;
        Ok(EngineStats {
            frames: Some(u64::from(s.blob_count)),
            space_used: Some(s.total_space_used),
            cache_hits: Some(s.bm_cache_hits),
            cache_misses: Some(s.bm_cache_misses),
            restarts: Some(s.bm_optimistic_restarts),
            heap_bytes: None,
        })
    }

    fn data_dir(&self) -> Option<&Path> {
        self.opts.dir.as_deref()
    }

    fn wal_bytes(&self) -> u64 {
        self.opts
            .dir
            .as_deref()
            .map_or(0, crate::persist::wal_bytes)
    }

    fn close(&mut self) -> Result<()> {
        if self.opts.dir.is_none() {
            return Err(unsupported("holt", "close of a memory tree"));
        }
        // Dropping the last handle drains and syncs the WAL.
        drop(self.tree.take());
        Ok(())
    }

    fn reopen(&mut self, sync_on_commit: bool) -> Result<()> {
        let Some(dir) = &self.opts.dir else {
            return Err(unsupported("holt", "reopen of a memory tree"));
        };
        // The directory is locked while a handle lives: drop first.
        drop(self.tree.take());
        let tree = holt::TreeBuilder::new(dir.clone())
            .buffer_pool_size(self.opts.pool_frames)
            .wal_sync_on_commit(sync_on_commit)
            .open()
            .map_err(|e| BenchError::Engine {
                engine: "holt",
                what: format!(
                    "reopen persistent tree at {} (wal_sync_on_commit {sync_on_commit})",
                    dir.display()
                ),
                err: e.to_string(),
            })?;
        self.tree = Some(tree);
        self.sync_on_commit = sync_on_commit;
        Ok(())
    }

    fn sync_on_commit(&self) -> Option<bool> {
        match (&self.opts.dir, &self.tree) {
            (Some(_), Some(_)) => Some(self.sync_on_commit),
            _ => None,
        }
    }

    #[inline]
    fn put_shared(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        match self.tree()?.put(key, value) {
            Ok(v) => Ok(v.is_some()),
            Err(e) => Err(holt_err("put", key, &e)),
        }
    }
}

// ----------------------------------------------------------- reference --

/// `HashMap` for point ops, `BTreeMap` for ordered ops; both always hold
/// the same contents.
#[derive(Default)]
pub struct ReferenceEngine {
    hash: HashMap<Vec<u8>, Vec<u8>>,
    tree: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl ReferenceEngine {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

fn replace_into(slot: &mut Vec<u8>, value: &[u8], old: &mut Vec<u8>) {
    old.clear();
    old.extend_from_slice(slot);
    slot.clear();
    slot.extend_from_slice(value);
}

/// The smallest byte string greater than every string starting with `p`,
/// or `None` if there is none (all `0xFF`).
pub(crate) fn prefix_successor(p: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    out.extend_from_slice(p);
    while let Some(&last) = out.last() {
        if last == 0xFF {
            out.pop();
        } else {
            if let Some(l) = out.last_mut() {
                *l += 1;
            }
            return true;
        }
    }
    false
}

impl Engine for ReferenceEngine {
    fn name(&self) -> &'static str {
        "reference"
    }

    #[inline]
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        match self.hash.get(key) {
            Some(v) => {
                out.clear();
                out.extend_from_slice(v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        if let Some(slot) = self.hash.get_mut(key) {
            replace_into(slot, value, old);
            if let Some(slot) = self.tree.get_mut(key) {
                slot.clear();
                slot.extend_from_slice(value);
            }
            Ok(true)
        } else {
            self.hash.insert(key.to_vec(), value.to_vec());
            self.tree.insert(key.to_vec(), value.to_vec());
            Ok(false)
        }
    }

    #[inline]
    fn delete(&mut self, key: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        match self.hash.remove(key) {
            Some(v) => {
                *old = v;
                self.tree.remove(key);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn rename(&mut self, src: &[u8], dst: &[u8]) -> Result<Renamed> {
        if !self.hash.contains_key(src) {
            return Ok(Renamed::NotFound);
        }
        if src == dst {
            return Ok(Renamed::Done);
        }
        if self.hash.contains_key(dst) {
            return Ok(Renamed::DstExists);
        }
        if let Some(v) = self.hash.remove(src) {
            self.hash.insert(dst.to_vec(), v);
        }
        if let Some(v) = self.tree.remove(src) {
            self.tree.insert(dst.to_vec(), v);
        }
        Ok(Renamed::Done)
    }

    fn scan<F: FnMut(&[u8], &[u8])>(&self, prefix: &[u8], limit: usize, mut f: F) -> Result<usize> {
        let mut seen = 0;
        let range = self
            .tree
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded));
        for (k, v) in range.take(limit) {
            if !k.starts_with(prefix) {
                break;
            }
            f(k, v);
            seen += 1;
        }
        Ok(seen)
    }

    fn list_dir<F: FnMut(DirEntry<'_>)>(
        &self,
        prefix: &[u8],
        delim: u8,
        limit: usize,
        mut f: F,
    ) -> Result<usize> {
        // Seek past each common prefix instead of walking the keys under it.
        let mut seen = 0;
        let mut from = prefix.to_vec();
        let mut next = Vec::new();
        'seek: while seen < limit {
            let range = self
                .tree
                .range::<[u8], _>((Bound::Included(&from[..]), Bound::Unbounded));
            for (k, v) in range {
                if !k.starts_with(prefix) {
                    break 'seek;
                }
                match k[prefix.len()..].iter().position(|&b| b == delim) {
                    None => {
                        f(DirEntry::Key(k, v));
                        seen += 1;
                        if seen == limit {
                            break 'seek;
                        }
                    }
                    Some(at) => {
                        let cp = &k[..=prefix.len() + at];
                        f(DirEntry::Prefix(cp));
                        seen += 1;
                        if !prefix_successor(cp, &mut next) {
                            break 'seek;
                        }
                        std::mem::swap(&mut from, &mut next);
                        continue 'seek;
                    }
                }
            }
            break;
        }
        Ok(seen)
    }

    fn checkpoint(&mut self) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> Result<EngineStats> {
        // Each allocation: capacity + 8 B malloc header, 16-byte granules,
        // 32 B minimum. Each map holds its own copy of key and value.
        fn chunk(cap: usize) -> u64 {
            if cap == 0 {
                0
            } else {
                (((cap + 8).div_ceil(16)) * 16).max(32) as u64
            }
        }
        let entry = std::mem::size_of::<(Vec<u8>, Vec<u8>)>() as u64;
        let mut bytes = 0;
        for (k, v) in &self.hash {
            bytes += chunk(k.capacity()) + chunk(v.capacity());
        }
        for (k, v) in &self.tree {
            bytes += chunk(k.capacity()) + chunk(v.capacity());
        }
        // HashMap: one entry + one control byte per bucket; BTreeMap: leaf
        // nodes of 11 entries, about 2/3 full under random inserts.
        bytes += self.hash.capacity() as u64 * (entry + 1);
        bytes += self.tree.len() as u64 * entry * 3 / 2;
        Ok(EngineStats {
            heap_bytes: Some(bytes),
            ..EngineStats::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor() {
        let mut o = Vec::new();
        assert!(prefix_successor(b"a/", &mut o));
        assert_eq!(o, b"a0");
        assert!(prefix_successor(b"a\xff", &mut o));
        assert_eq!(o, b"b");
        assert!(!prefix_successor(b"\xff\xff", &mut o));
    }

    fn listing<E: Engine>(e: &E, p: &[u8], limit: usize) -> Vec<String> {
        let mut v = Vec::new();
        e.list_dir(p, b'/', limit, |d| {
            v.push(match d {
                DirEntry::Key(k, _) => format!("K:{}", String::from_utf8_lossy(k)),
                DirEntry::Prefix(k) => format!("P:{}", String::from_utf8_lossy(k)),
            });
        })
        .unwrap();
        v
    }

    #[test]
    fn reference_list_dir_matches_holt() {
        let mut r = ReferenceEngine::new();
        let mut h = HoltEngine::open(&HoltOptions {
            dir: None,
            pool_frames: 64,
            flush_on_write: false,
        })
        .unwrap();
        let mut old = Vec::new();
        for k in [
            "a/1", "a/2/x", "a/2/y", "a/3", "a/30/z", "a/4/q/r", "b/1", "/lead", "a/",
        ] {
            r.put(k.as_bytes(), b"v", &mut old).unwrap();
            h.put(k.as_bytes(), b"v", &mut old).unwrap();
        }
        for p in ["", "a/", "a/2/", "a", "/", "zz"] {
            for limit in [1, 2, 3, 1000] {
                assert_eq!(
                    listing(&r, p.as_bytes(), limit),
                    listing(&h, p.as_bytes(), limit),
                    "prefix {p:?} limit {limit}"
                );
            }
        }
        assert_eq!(r.rename(b"a/1", b"a/3").unwrap(), Renamed::DstExists);
        assert_eq!(h.rename(b"a/1", b"a/3").unwrap(), Renamed::DstExists);
        assert_eq!(r.rename(b"nope", b"a/3").unwrap(), Renamed::NotFound);
        assert_eq!(h.rename(b"nope", b"a/3").unwrap(), Renamed::NotFound);
    }
}
