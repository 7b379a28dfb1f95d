//! LMDB (`lmdb` feature) through `heed` 0.22 (0.23 ties a `Database`
//! handle to a borrow of its `Env`, which an engine struct holding both
//! cannot express without self-reference).
//!
//! One unnamed database of raw bytes in a 64 GiB map (address space, not
//! disk: the file grows with the data). The default tier opens the
//! environment with `MDB_NOSYNC` (a commit writes its pages to the OS,
//! `checkpoint` calls `mdb_env_sync(force)`); the sync tier opens it with
//! the default flags, which sync on every commit. Each get is a read
//! transaction, each put / delete a write transaction that reads the old
//! value and writes; the load takes `LOAD_BATCH` keys per transaction,
//! inserted with `MDB_NOOVERWRITE` so a key that existed is noticed.

// heed marks opening an environment, and the flags that weaken LMDB's
// guarantees, `unsafe`; each use below says why it holds.
#![allow(unsafe_code)]

use std::ops::Bound;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, MdbError, PutFlags};

use super::{closed, err, key_err, make_dir, PeerOptions, LOAD_BATCH};
use crate::engines::{DirEntry, Engine, Renamed};
use crate::error::Result;

const NAME: &str = "lmdb";
const MAP_SIZE: usize = 64 << 30;

type Db = Database<Bytes, Bytes>;

pub struct LmdbEngine {
    /// `None` while closed.
    env: Option<(Env, Db)>,
    dir: PathBuf,
    sync: bool,
}

fn open_env(dir: &Path, sync: bool) -> heed::Result<(Env, Db)> {
    let mut o = EnvOpenOptions::new();
    o.map_size(MAP_SIZE).max_readers(126).max_dbs(1);
    if !sync {
        // SAFETY: MDB_NOSYNC only drops the fsync at commit: a crash of the
        // OS (not of this process) may lose the last commits, which is the
        // durability this tier asks for; `checkpoint` syncs explicitly.
        // Nothing else about memory safety changes.
        unsafe {
            o.flags(EnvFlags::NO_SYNC);
        }
    }
    // SAFETY: LMDB maps `dir/data.mdb`; the mapping stays valid because
    // only this process opens the directory (a fresh one per engine and
    // shape under the run's root), it never truncates or rewrites the files
    // behind LMDB's back, and every previous `Env` on the directory has
    // been closed (`close` waits for the closing event) before this open.
    let env = unsafe { o.open(dir)? };
    let mut w = env.write_txn()?;
    let db: Db = env.create_database(&mut w, None)?;
    w.commit()?;
    Ok((env, db))
}

impl LmdbEngine {
    /// # Errors
    /// Creating the directory or opening the environment.
    pub fn open(opts: &PeerOptions) -> Result<Self> {
        make_dir(&opts.dir)?;
        let mut e = Self {
            env: None,
            dir: opts.dir.clone(),
            sync: false,
        };
        e.reopen(false)?;
        Ok(e)
    }

    #[inline]
    fn env(&self) -> Result<&(Env, Db)> {
        self.env.as_ref().ok_or_else(|| closed(NAME))
    }

    /// One write transaction: read the old value, write.
    fn put_inner(&self, key: &[u8], value: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        let (env, db) = self.env()?;
        let mut run = || -> heed::Result<bool> {
            let mut w = env.write_txn()?;
            let existed = match db.get(&w, key)? {
                Some(v) => {
                    old.clear();
                    old.extend_from_slice(v);
                    true
                }
                None => false,
            };
            db.put(&mut w, key, value)?;
            w.commit()?;
            Ok(existed)
        };
        run().map_err(|e| key_err(NAME, "put", key, e))
    }
}

/// Calls `f` on the first `limit` pairs of `it`; returns how many.
fn feed<'t>(
    it: impl Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>>,
    limit: usize,
    f: &mut impl FnMut(&[u8], &[u8]),
) -> heed::Result<usize> {
    let mut seen = 0;
    for kv in it.take(limit) {
        let (k, v) = kv?;
        f(k, v);
        seen += 1;
    }
    Ok(seen)
}

impl Engine for LmdbEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    #[inline]
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let (env, db) = self.env()?;
        let mut run = || -> heed::Result<bool> {
            let r = env.read_txn()?;
            Ok(match db.get(&r, key)? {
                Some(v) => {
                    out.clear();
                    out.extend_from_slice(v);
                    true
                }
                None => false,
            })
        };
        run().map_err(|e| key_err(NAME, "get", key, e))
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
        existed: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<()> {
        let (env, db) = self.env()?;
        let mut run = || -> heed::Result<()> {
            let mut w = env.write_txn()?;
            for (j, (k, v)) in items.iter().enumerate() {
                match db.put_with_flags(&mut w, PutFlags::NO_OVERWRITE, k, v) {
                    Ok(()) => {}
                    Err(heed::Error::Mdb(MdbError::KeyExist)) => {
                        if let Some(old) = db.get(&w, k)? {
                            existed(j, old);
                        }
                        db.put(&mut w, k, v)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            w.commit()
        };
        run().map_err(|e| err(NAME, "load transaction", e))
    }

    #[inline]
    fn delete(&mut self, key: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        let (env, db) = self.env()?;
        let mut run = || -> heed::Result<bool> {
            let mut w = env.write_txn()?;
            match db.get(&w, key)? {
                Some(v) => {
                    old.clear();
                    old.extend_from_slice(v);
                }
                None => return Ok(false),
            }
            db.delete(&mut w, key)?;
            w.commit()?;
            Ok(true)
        };
        run().map_err(|e| key_err(NAME, "delete", key, e))
    }

    fn rename(&mut self, src: &[u8], dst: &[u8]) -> Result<Renamed> {
        let (env, db) = self.env()?;
        let run = || -> heed::Result<Renamed> {
            let mut w = env.write_txn()?;
            let Some(v) = db.get(&w, src)?.map(<[u8]>::to_vec) else {
                return Ok(Renamed::NotFound);
            };
            if src == dst {
                return Ok(Renamed::Done);
            }
            if db.get(&w, dst)?.is_some() {
                return Ok(Renamed::DstExists);
            }
            db.put(&mut w, dst, &v)?;
            db.delete(&mut w, src)?;
            w.commit()?;
            Ok(Renamed::Done)
        };
        run().map_err(|e| key_err(NAME, "rename", src, e))
    }

    fn scan<F: FnMut(&[u8], &[u8])>(&self, prefix: &[u8], limit: usize, mut f: F) -> Result<usize> {
        let (env, db) = self.env()?;
        let mut run = || -> heed::Result<usize> {
            let r = env.read_txn()?;
            // LMDB refuses an empty key to position a cursor on.
            if prefix.is_empty() {
                feed(db.iter(&r)?, limit, &mut f)
            } else {
                feed(db.prefix_iter(&r, prefix)?, limit, &mut f)
            }
        };
        run().map_err(|e| key_err(NAME, "scan", prefix, e))
    }

    fn list_dir<F: FnMut(DirEntry<'_>)>(
        &self,
        prefix: &[u8],
        delim: u8,
        limit: usize,
        f: F,
    ) -> Result<usize> {
        let (env, db) = self.env()?;
        let r = env
            .read_txn()
            .map_err(|e| key_err(NAME, "list_dir", prefix, e))?;
        super::list_dir_seek(prefix, delim, limit, f, |from, visit| {
            let mut run = || -> heed::Result<()> {
                // LMDB refuses an empty key to position a cursor on.
                let start = if from.is_empty() {
                    Bound::Unbounded
                } else {
                    Bound::Included(from)
                };
                let range = (start, Bound::Unbounded);
                for kv in db.range(&r, &range)? {
                    let (k, v) = kv?;
                    if !visit(k, v) {
                        break;
                    }
                }
                Ok(())
            };
            run().map_err(|e| key_err(NAME, "list_dir", prefix, e))
        })
    }

    fn checkpoint(&mut self) -> Result<()> {
        let (env, _) = self.env()?;
        env.force_sync().map_err(|e| err(NAME, "sync", e))
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn close(&mut self) -> Result<()> {
        if let Some((env, _)) = self.env.take() {
            // The environment closes when its last handle goes; wait for
            // it, so a reopen finds it closed.
            env.prepare_for_closing().wait();
        }
        Ok(())
    }

    fn reopen(&mut self, sync_on_commit: bool) -> Result<()> {
        self.close()?;
        let env = open_env(&self.dir, sync_on_commit)
            .map_err(|e| err(NAME, format!("open {}", self.dir.display()), e))?;
        self.env = Some(env);
        self.sync = sync_on_commit;
        Ok(())
    }

    fn sync_on_commit(&self) -> Option<bool> {
        self.env.as_ref().map(|_| self.sync)
    }

    fn put_shared(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        let mut old = Vec::new();
        self.put_inner(key, value, &mut old)
    }
}
