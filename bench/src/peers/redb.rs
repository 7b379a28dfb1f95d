//! redb (`redb` feature).
//!
//! One table of `&[u8]` to `&[u8]` in `kv.redb`, a cache of `--cache-mib`.
//! The default tier commits with `Durability::None` (the commit is visible
//! but not written durably until a later `Immediate` one); `checkpoint`
//! and `close` commit with `Durability::Immediate`, and the sync tier
//! commits every transaction that way. Each get / scan / listing is a read
//! transaction; each put / delete a write transaction (redb's `insert` and
//! `remove` return the old value, so no extra read); the load takes
//! `LOAD_BATCH` keys per transaction.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{closed, err, key_err, make_dir, PeerOptions, LOAD_BATCH};
use crate::engines::{DirEntry, Engine, Renamed};
use crate::error::Result;

const NAME: &str = "redb";
const FILE: &str = "kv.redb";
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

pub struct RedbEngine {
    db: Option<Database>,
    dir: PathBuf,
    cache_bytes: usize,
    sync: bool,
}

/// A redb error of any of its kinds.
type DynErr = Box<dyn std::error::Error + Send + Sync>;
type Table<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;
type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

impl RedbEngine {
    /// # Errors
    /// Creating the directory or the database.
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
    fn db(&self) -> Result<&Database> {
        self.db.as_ref().ok_or_else(|| closed(NAME))
    }

    /// Runs `f` on the table in one write transaction of this tier's
    /// durability (or `force`'s), and commits.
    fn write<T>(
        &self,
        force: Option<Durability>,
        f: impl FnOnce(&mut Table<'_>) -> Result<T, DynErr>,
    ) -> Result<T, DynErr> {
        let db = self.db.as_ref().ok_or("the engine is closed")?;
        let mut w = db.begin_write()?;
        let d = force.unwrap_or(if self.sync {
            Durability::Immediate
        } else {
            Durability::None
        });
        w.set_durability(d)?;
        let out = {
            let mut t = w.open_table(TABLE)?;
            f(&mut t)?
        };
        w.commit()?;
        Ok(out)
    }

    fn put_inner(&self, key: &[u8], value: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        self.write(None, |t| {
            Ok(match t.insert(key, value)? {
                Some(v) => {
                    old.clear();
                    old.extend_from_slice(v.value());
                    true
                }
                None => false,
            })
        })
        .map_err(|e| key_err(NAME, "put", key, e))
    }

    /// Runs `f` on the table in one read transaction.
    fn read<T>(&self, f: impl FnOnce(&ReadTable) -> Result<T, DynErr>) -> Result<T, DynErr> {
        let db = self.db.as_ref().ok_or("the engine is closed")?;
        let r = db.begin_read()?;
        let t = r.open_table(TABLE)?;
        f(&t)
    }
}

impl Engine for RedbEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    #[inline]
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        self.read(|t| {
            Ok(match t.get(key)? {
                Some(v) => {
                    out.clear();
                    out.extend_from_slice(v.value());
                    true
                }
                None => false,
            })
        })
        .map_err(|e| key_err(NAME, "get", key, e))
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
        // The load ends with a checkpoint (an `Immediate` commit).
        self.write(Some(Durability::None), |t| {
            for (j, (k, v)) in items.iter().enumerate() {
                if let Some(old) = t.insert(*k, *v)? {
                    existed(j, old.value());
                }
            }
            Ok(())
        })
        .map_err(|e| err(NAME, "load transaction", e))
    }

    #[inline]
    fn delete(&mut self, key: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        self.write(None, |t| {
            Ok(match t.remove(key)? {
                Some(v) => {
                    old.clear();
                    old.extend_from_slice(v.value());
                    true
                }
                None => false,
            })
        })
        .map_err(|e| key_err(NAME, "delete", key, e))
    }

    fn rename(&mut self, src: &[u8], dst: &[u8]) -> Result<Renamed> {
        self.write(None, |t| {
            let Some(v) = t.get(src)?.map(|g| g.value().to_vec()) else {
                return Ok(Renamed::NotFound);
            };
            if src == dst {
                return Ok(Renamed::Done);
            }
            if t.get(dst)?.is_some() {
                return Ok(Renamed::DstExists);
            }
            t.insert(dst, &v[..])?;
            t.remove(src)?;
            Ok(Renamed::Done)
        })
        .map_err(|e| key_err(NAME, "rename", src, e))
    }

    fn scan<F: FnMut(&[u8], &[u8])>(&self, prefix: &[u8], limit: usize, mut f: F) -> Result<usize> {
        self.read(|t| {
            let mut seen = 0;
            for kv in t.range::<&[u8]>(prefix..)? {
                if seen == limit {
                    break;
                }
                let (k, v) = kv?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                f(k.value(), v.value());
                seen += 1;
            }
            Ok(seen)
        })
        .map_err(|e| key_err(NAME, "scan", prefix, e))
    }

    fn list_dir<F: FnMut(DirEntry<'_>)>(
        &self,
        prefix: &[u8],
        delim: u8,
        limit: usize,
        f: F,
    ) -> Result<usize> {
        self.read(|t| {
            super::list_dir_seek(prefix, delim, limit, f, |from, visit| {
                let mut walk = || -> Result<(), DynErr> {
                    for kv in t.range::<&[u8]>(from..)? {
                        let (k, v) = kv?;
                        if !visit(k.value(), v.value()) {
                            break;
                        }
                    }
                    Ok(())
                };
                walk().map_err(|e| key_err(NAME, "list_dir", prefix, e))
            })
            .map_err(|e| -> DynErr { e.to_string().into() })
        })
        .map_err(|e| key_err(NAME, "list_dir", prefix, e))
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.write(Some(Durability::Immediate), |_| Ok(()))
            .map_err(|e| err(NAME, "durable commit", e))
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn close(&mut self) -> Result<()> {
        if self.db.is_some() {
            // Non-durable commits survive a close only behind a durable
            // one, which a competent user takes before closing.
            self.checkpoint()?;
        }
        if let Some(db) = self.db.take() {
            db.close().map_err(|e| err(NAME, "close", e))?;
        }
        Ok(())
    }

    fn reopen(&mut self, sync_on_commit: bool) -> Result<()> {
        self.close()?;
        let path = self.dir.join(FILE);
        let db = Database::builder()
            .set_cache_size(self.cache_bytes)
            .create(&path)
            .map_err(|e| err(NAME, format!("open {}", path.display()), e))?;
        self.db = Some(db);
        self.sync = sync_on_commit;
        // Create the table (an `Immediate` commit).
        self.checkpoint()?;
        Ok(())
    }

    fn sync_on_commit(&self) -> Option<bool> {
        self.db.as_ref().map(|_| self.sync)
    }

    fn put_shared(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        let _ = self.db()?;
        let mut old = Vec::new();
        self.put_inner(key, value, &mut old)
    }
}
