//! RocksDB (`rocksdb` feature) through the `rocksdb` crate, linked against
//! the system `librocksdb` when `ROCKSDB_LIB_DIR` is set (see `--help`).
//!
//! Options a competent user sets for a read-mostly metadata store on two
//! cores: a shared LRU block cache of `--cache-mib` holding index and
//! filter blocks too (L0's pinned), a 10-bit bloom filter, LZ4, dynamic
//! level sizes, two background jobs. Writes go through the WAL, not synced
//! (`sync = true` in the sync tier); `checkpoint` flushes the memtables.
//! The load uses write batches of `LOAD_BATCH` blind puts; a single put
//! reads the old value first (`get_pinned`), as the harness asks for it.

use std::path::{Path, PathBuf};

use ::rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use super::{closed, err, key_err, make_dir, PeerOptions, LOAD_BATCH};
use crate::engines::{prefix_successor, DirEntry, Engine, Renamed};
use crate::error::Result;

const NAME: &str = "rocksdb";

pub struct RocksEngine {
    db: Option<DB>,
    dir: PathBuf,
    cache_bytes: usize,
    sync: bool,
    wo: WriteOptions,
}

fn options(cache_bytes: usize) -> Result<Options> {
    let cache = Cache::new_lru_cache(cache_bytes).map_err(|e| err(NAME, "block cache", e))?;
    let mut bb = BlockBasedOptions::default();
    bb.set_block_cache(&cache);
    bb.set_bloom_filter(10.0, false);
    bb.set_cache_index_and_filter_blocks(true);
    bb.set_pin_l0_filter_and_index_blocks_in_cache(true);
    bb.set_format_version(5);
    let mut o = Options::default();
    o.create_if_missing(true);
    o.increase_parallelism(2);
    o.set_max_background_jobs(2);
    o.set_level_compaction_dynamic_level_bytes(true);
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_bytes_per_sync(1 << 20);
    o.set_block_based_table_factory(&bb);
    Ok(o)
}

impl RocksEngine {
    /// # Errors
    /// Creating the directory or opening the database.
    pub fn open(opts: &PeerOptions) -> Result<Self> {
        make_dir(&opts.dir)?;
        let mut e = Self {
            db: None,
            dir: opts.dir.clone(),
            cache_bytes: opts.cache_bytes,
            sync: false,
            wo: WriteOptions::default(),
        };
        e.reopen(false)?;
        Ok(e)
    }

    #[inline]
    fn db(&self) -> Result<&DB> {
        self.db.as_ref().ok_or_else(|| closed(NAME))
    }

    /// Reads the old value into `old`, then writes.
    fn put_inner(&self, key: &[u8], value: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        let db = self.db()?;
        let existed = get_into(db, key, old)?;
        db.put_opt(key, value, &self.wo)
            .map_err(|e| key_err(NAME, "put", key, e))?;
        Ok(existed)
    }
}

#[inline]
fn get_into(db: &DB, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
    match db.get_pinned(key) {
        Ok(Some(v)) => {
            out.clear();
            out.extend_from_slice(&v);
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(e) => Err(key_err(NAME, "get", key, e)),
    }
}

impl Engine for RocksEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    #[inline]
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        get_into(self.db()?, key, out)
    }

    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        self.put_inner(key, value, old)
    }

    fn load_batch(&self) -> usize {
        LOAD_BATCH
    }

    fn put_batch(
        &mut self,
        items: &[(&[u8], &[u8])],
        _existed: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<()> {
        let mut b = WriteBatch::default();
        for (k, v) in items {
            b.put(k, v);
        }
        self.db()?
            .write_opt(b, &self.wo)
            .map_err(|e| err(NAME, "write batch", e))
    }

    #[inline]
    fn delete(&mut self, key: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        let db = self.db()?;
        if !get_into(db, key, old)? {
            return Ok(false);
        }
        db.delete_opt(key, &self.wo)
            .map_err(|e| key_err(NAME, "delete", key, e))?;
        Ok(true)
    }

    fn rename(&mut self, src: &[u8], dst: &[u8]) -> Result<Renamed> {
        let db = self.db()?;
        let mut v = Vec::new();
        if !get_into(db, src, &mut v)? {
            return Ok(Renamed::NotFound);
        }
        if src == dst {
            return Ok(Renamed::Done);
        }
        let mut probe = Vec::new();
        if get_into(db, dst, &mut probe)? {
            return Ok(Renamed::DstExists);
        }
        let mut b = WriteBatch::default();
        b.put(dst, &v);
        b.delete(src);
        db.write_opt(b, &self.wo)
            .map_err(|e| key_err(NAME, "rename", src, e))?;
        Ok(Renamed::Done)
    }

    fn scan<F: FnMut(&[u8], &[u8])>(&self, prefix: &[u8], limit: usize, mut f: F) -> Result<usize> {
        let mut ro = ReadOptions::default();
        let mut upper = Vec::new();
        if prefix_successor(prefix, &mut upper) {
            ro.set_iterate_upper_bound(upper);
        }
        let mut it = self.db()?.raw_iterator_opt(ro);
        it.seek(prefix);
        let mut seen = 0;
        while seen < limit && it.valid() {
            match (it.key(), it.value()) {
                (Some(k), Some(v)) if k.starts_with(prefix) => f(k, v),
                _ => break,
            }
            seen += 1;
            it.next();
        }
        it.status().map_err(|e| key_err(NAME, "scan", prefix, e))?;
        Ok(seen)
    }

    fn list_dir<F: FnMut(DirEntry<'_>)>(
        &self,
        prefix: &[u8],
        delim: u8,
        limit: usize,
        f: F,
    ) -> Result<usize> {
        let mut ro = ReadOptions::default();
        let mut upper = Vec::new();
        if prefix_successor(prefix, &mut upper) {
            ro.set_iterate_upper_bound(upper);
        }
        let mut it = self.db()?.raw_iterator_opt(ro);
        super::list_dir_seek(prefix, delim, limit, f, |from, visit| {
            it.seek(from);
            while it.valid() {
                match (it.key(), it.value()) {
                    (Some(k), Some(v)) => {
                        if !visit(k, v) {
                            break;
                        }
                    }
                    _ => break,
                }
                it.next();
            }
            it.status()
                .map_err(|e| key_err(NAME, "list_dir", prefix, e))
        })
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.db()?.flush().map_err(|e| err(NAME, "flush", e))
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn wal_bytes(&self) -> u64 {
        super::files_bytes(&self.dir, |name| name.ends_with(".log"))
    }

    fn close(&mut self) -> Result<()> {
        drop(self.db.take());
        Ok(())
    }

    fn reopen(&mut self, sync_on_commit: bool) -> Result<()> {
        drop(self.db.take());
        let opts = options(self.cache_bytes)?;
        let db = DB::open(&opts, &self.dir)
            .map_err(|e| err(NAME, format!("open {}", self.dir.display()), e))?;
        self.wo = WriteOptions::default();
        self.wo.set_sync(sync_on_commit);
        self.sync = sync_on_commit;
        self.db = Some(db);
        Ok(())
    }

    fn sync_on_commit(&self) -> Option<bool> {
        self.db.as_ref().map(|_| self.sync)
    }

    fn put_shared(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        let mut old = Vec::new();
        self.put_inner(key, value, &mut old)
    }
}
