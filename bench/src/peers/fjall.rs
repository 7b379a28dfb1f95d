//! fjall (`fjall` feature), the Rust LSM tree.
//!
//! One keyspace, a block cache of `--cache-mib`, default compression
//! (LZ4) and worker threads. The default tier is fjall's default: every
//! write flushes the journal to the OS (`PersistMode::Buffer`), no fsync;
//! `checkpoint` is `persist(SyncAll)`. The sync tier writes each op as a
//! batch with `PersistMode::SyncData`. The load uses write batches of
//! `LOAD_BATCH` blind inserts; a single put reads the old value first.

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{closed, err, key_err, make_dir, PeerOptions, LOAD_BATCH};
use crate::engines::{DirEntry, Engine, Renamed};
use crate::error::Result;

const NAME: &str = "fjall";

pub struct FjallEngine {
    /// `None` while closed.
    db: Option<(Database, Keyspace)>,
    dir: PathBuf,
    cache_bytes: usize,
    sync: bool,
}

#[inline]
fn get_into(ks: &Keyspace, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
    match ks.get(key) {
        Ok(Some(v)) => {
            out.clear();
            out.extend_from_slice(&v);
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(e) => Err(key_err(NAME, "get", key, e)),
    }
}

impl FjallEngine {
    /// # Errors
    /// Creating the directory or opening the database.
    pub fn open(opts: &PeerOptions) -> Result<Self> {
        make_dir(&opts.dir)?;
        let mut e = Self {
            db: None,
            dir: opts.dir.clone(),
            cache_bytes: opts.cache_bytes,
            sync: false,
        };
        e.reopen(false)?;
        Ok(e)
    }

    #[inline]
    fn db(&self) -> Result<&(Database, Keyspace)> {
        self.db.as_ref().ok_or_else(|| closed(NAME))
    }

    /// One write of this tier: a plain insert / remove, or a one-op batch
    /// synced with `SyncData`.
    fn write(&self, key: &[u8], value: Option<&[u8]>, what: &str) -> Result<()> {
        let (db, ks) = self.db()?;
        let r = if self.sync {
            let mut b = db.batch().durability(Some(PersistMode::SyncData));
            match value {
                Some(v) => b.insert(ks, key, v),
                None => b.remove(ks, key),
            }
            b.commit()
        } else {
            match value {
                Some(v) => ks.insert(key, v),
                None => ks.remove(key),
            }
        };
        r.map_err(|e| key_err(NAME, what, key, e))
    }

    fn put_inner(&self, key: &[u8], value: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        let existed = get_into(&self.db()?.1, key, old)?;
        self.write(key, Some(value), "put")?;
        Ok(existed)
    }
}

impl Engine for FjallEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    #[inline]
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        get_into(&self.db()?.1, key, out)
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
        let (db, ks) = self.db()?;
        let mut b = db.batch();
        for (k, v) in items {
            b.insert(ks, *k, *v);
        }
        b.commit().map_err(|e| err(NAME, "write batch", e))
    }

    #[inline]
    fn delete(&mut self, key: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        if !get_into(&self.db()?.1, key, old)? {
            return Ok(false);
        }
        self.write(key, None, "delete")?;
        Ok(true)
    }

    fn rename(&mut self, src: &[u8], dst: &[u8]) -> Result<Renamed> {
        let (db, ks) = self.db()?;
        let mut v = Vec::new();
        if !get_into(ks, src, &mut v)? {
            return Ok(Renamed::NotFound);
        }
        if src == dst {
            return Ok(Renamed::Done);
        }
        let mut probe = Vec::new();
        if get_into(ks, dst, &mut probe)? {
            return Ok(Renamed::DstExists);
        }
        let mut b = db.batch();
        if self.sync {
            b = b.durability(Some(PersistMode::SyncData));
        }
        b.insert(ks, dst, v);
        b.remove(ks, src);
        b.commit().map_err(|e| key_err(NAME, "rename", src, e))?;
        Ok(Renamed::Done)
    }

    fn scan<F: FnMut(&[u8], &[u8])>(&self, prefix: &[u8], limit: usize, mut f: F) -> Result<usize> {
        let ks = &self.db()?.1;
        let mut seen = 0;
        for g in ks.prefix(prefix).take(limit) {
            let (k, v) = g
                .into_inner()
                .map_err(|e| key_err(NAME, "scan", prefix, e))?;
            f(&k, &v);
            seen += 1;
        }
        Ok(seen)
    }

    fn list_dir<F: FnMut(DirEntry<'_>)>(
        &self,
        prefix: &[u8],
        delim: u8,
        limit: usize,
        f: F,
    ) -> Result<usize> {
        let ks = &self.db()?.1;
        super::list_dir_seek(prefix, delim, limit, f, |from, visit| {
            for g in ks.range::<&[u8], _>(from..) {
                let (k, v) = g
                    .into_inner()
                    .map_err(|e| key_err(NAME, "list_dir", prefix, e))?;
                if !visit(&k, &v) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.db()?
            .0
            .persist(PersistMode::SyncAll)
            .map_err(|e| err(NAME, "persist", e))
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn wal_bytes(&self) -> u64 {
        // The journals (`*.jnl`, preallocated), also while closed.
        super::files_bytes(&self.dir, |name| name.ends_with(".jnl"))
    }

    fn close(&mut self) -> Result<()> {
        // Dropping the last handle persists the journal and stops the
        // workers.
        drop(self.db.take());
        Ok(())
    }

    fn reopen(&mut self, sync_on_commit: bool) -> Result<()> {
        self.close()?;
        let what = || format!("open {}", self.dir.display());
        let db = Database::builder(&self.dir)
            .cache_size(self.cache_bytes as u64)
            .open()
            .map_err(|e| err(NAME, what(), e))?;
        let ks = db
            .keyspace("kv", KeyspaceCreateOptions::default)
            .map_err(|e| err(NAME, what(), e))?;
        self.db = Some((db, ks));
        self.sync = sync_on_commit;
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
