//! SQLite (`sqlite` feature) through `rusqlite` with the bundled library.
//!
//! One `WITHOUT ROWID` table `kv(k BLOB PRIMARY KEY, v BLOB)`, WAL journal
//! mode, `synchronous = NORMAL` (no fsync per commit; `FULL` in the sync
//! tier), a page cache of `--cache-mib` per connection, and cached prepared
//! statements. Connection 0 is the writer (every write takes it, so the
//! `sync_commit` threads queue on it as they would on SQLite's write lock)
//! and serves the reads of the first thread that reads; each further
//! reading thread (`get_tN`) gets a connection of its own, as WAL readers
//! do not block each other. A put is `BEGIN IMMEDIATE; SELECT old; UPDATE
//! or INSERT; COMMIT`; the load inserts `LOAD_BATCH` keys per transaction.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::types::Type;
use rusqlite::{Connection, Row};

use super::{closed, err, key_err, make_dir, PeerOptions, LOAD_BATCH};
use crate::engines::{prefix_successor, DirEntry, Engine, Renamed};
use crate::error::Result;

const NAME: &str = "sqlite";
const FILE: &str = "kv.sqlite";

const SELECT: &str = "SELECT v FROM kv WHERE k = ?1";
const EXISTS: &str = "SELECT 1 FROM kv WHERE k = ?1";
const INSERT: &str = "INSERT INTO kv (k, v) VALUES (?1, ?2)";
const INSERT_NEW: &str = "INSERT INTO kv (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO NOTHING";
const UPDATE: &str = "UPDATE kv SET v = ?2 WHERE k = ?1";
const DELETE: &str = "DELETE FROM kv WHERE k = ?1";
const RENAME: &str = "UPDATE kv SET k = ?2 WHERE k = ?1";
const RANGE: &str = "SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k";
const FROM: &str = "SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k";

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's reader connection (modulo the pool size).
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

fn slot() -> usize {
    SLOT.with(|s| {
        s.get().unwrap_or_else(|| {
            let v = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
            s.set(Some(v));
            v
        })
    })
}

pub struct SqliteEngine {
    /// `[0]`: the writer; all: readers. Empty while closed.
    conns: Vec<Mutex<Connection>>,
    dir: PathBuf,
    path: PathBuf,
    cache_kib: usize,
    readers: usize,
    sync: bool,
}

fn blob<'r>(row: &'r Row<'_>, i: usize) -> rusqlite::Result<&'r [u8]> {
    row.get_ref(i)?
        .as_blob()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Blob, Box::new(e)))
}

/// Copies the value of `key` into `out`; false if absent.
fn select_into(c: &Connection, key: &[u8], out: &mut Vec<u8>) -> rusqlite::Result<bool> {
    let mut st = c.prepare_cached(SELECT)?;
    let mut rows = st.query([key])?;
    match rows.next()? {
        Some(row) => {
            out.clear();
            out.extend_from_slice(blob(row, 0)?);
            Ok(true)
        }
        None => Ok(false),
    }
}

fn exists(c: &Connection, key: &[u8]) -> rusqlite::Result<bool> {
    c.prepare_cached(EXISTS)?.exists([key])
}

/// Runs `f` in one `BEGIN IMMEDIATE` ... `COMMIT` transaction (rolled back
/// on error).
fn in_txn<T>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    match f(c) {
        Ok(v) => {
            c.prepare_cached("COMMIT")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Reads the old value into `old`, then updates or inserts.
fn put_on(c: &Connection, key: &[u8], value: &[u8], old: &mut Vec<u8>) -> rusqlite::Result<bool> {
    in_txn(c, |c| {
        let existed = select_into(c, key, old)?;
        let sql = if existed { UPDATE } else { INSERT };
        c.prepare_cached(sql)?.execute((key, value))?;
        Ok(existed)
    })
}

fn connect(path: &Path, cache_kib: usize, sync: bool) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, not wal"
        )));
    }
    c.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA cache_size = -{cache_kib}; PRAGMA temp_store = MEMORY;",
        if sync { "FULL" } else { "NORMAL" }
    ))?;
    c.busy_timeout(std::time::Duration::from_secs(60))?;
    c.set_prepared_statement_cache_capacity(32);
    Ok(c)
}

impl SqliteEngine {
    /// # Errors
    /// Creating the directory, opening the database or the table.
    pub fn open(opts: &PeerOptions) -> Result<Self> {
        make_dir(&opts.dir)?;
        let mut e = Self {
            conns: Vec::new(),
            dir: opts.dir.clone(),
            path: opts.dir.join(FILE),
            cache_kib: (opts.cache_bytes / 1024).max(1),
            readers: opts.reader_threads.max(1),
            sync: false,
        };
        e.reopen(false)?;
        Ok(e)
    }

    /// The connection of the calling thread.
    fn conn(&self) -> Result<MutexGuard<'_, Connection>> {
        if self.conns.is_empty() {
            return Err(closed(NAME));
        }
        let m = &self.conns[slot() % self.conns.len()];
        Ok(m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn writer(&mut self) -> Result<&mut Connection> {
        match self.conns.first_mut() {
            Some(m) => Ok(m.get_mut().unwrap_or_else(PoisonError::into_inner)),
            None => Err(closed(NAME)),
        }
    }

    fn writer_shared(&self) -> Result<MutexGuard<'_, Connection>> {
        match self.conns.first() {
            Some(m) => Ok(m.lock().unwrap_or_else(PoisonError::into_inner)),
            None => Err(closed(NAME)),
        }
    }

    /// Streams the rows `>= from` (and `< upper`, if given) until `visit`
    /// returns false.
    fn walk(
        c: &Connection,
        from: &[u8],
        upper: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> rusqlite::Result<()> {
        let mut st;
        let mut rows = match upper {
            Some(u) => {
                st = c.prepare_cached(RANGE)?;
                st.query((from, u))?
            }
            None => {
                st = c.prepare_cached(FROM)?;
                st.query([from])?
            }
        };
        while let Some(row) = rows.next()? {
            if !visit(blob(row, 0)?, blob(row, 1)?) {
                break;
            }
        }
        Ok(())
    }
}

impl Engine for SqliteEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    #[inline]
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let c = self.conn()?;
        select_into(&c, key, out).map_err(|e| key_err(NAME, "get", key, e))
    }

    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        put_on(self.writer()?, key, value, old).map_err(|e| key_err(NAME, "put", key, e))
    }

    fn load_batch(&self) -> usize {
        LOAD_BATCH
    }

    fn put_batch(
        &mut self,
        items: &[(&[u8], &[u8])],
        existed: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<()> {
        let c = self.writer()?;
        let mut old = Vec::new();
        in_txn(c, |c| {
            let mut ins = c.prepare_cached(INSERT_NEW)?;
            for (j, (k, v)) in items.iter().enumerate() {
                if ins.execute((k, v))? == 0 {
                    select_into(c, k, &mut old)?;
                    existed(j, &old);
                    c.prepare_cached(UPDATE)?.execute((k, v))?;
                }
            }
            Ok(())
        })
        .map_err(|e| err(NAME, "load transaction", e))
    }

    #[inline]
    fn delete(&mut self, key: &[u8], old: &mut Vec<u8>) -> Result<bool> {
        in_txn(self.writer()?, |c| {
            if !select_into(c, key, old)? {
                return Ok(false);
            }
            c.prepare_cached(DELETE)?.execute([key])?;
            Ok(true)
        })
        .map_err(|e| key_err(NAME, "delete", key, e))
    }

    fn rename(&mut self, src: &[u8], dst: &[u8]) -> Result<Renamed> {
        in_txn(self.writer()?, |c| {
            if !exists(c, src)? {
                return Ok(Renamed::NotFound);
            }
            if src == dst {
                return Ok(Renamed::Done);
            }
            if exists(c, dst)? {
                return Ok(Renamed::DstExists);
            }
            c.prepare_cached(RENAME)?.execute((src, dst))?;
            Ok(Renamed::Done)
        })
        .map_err(|e| key_err(NAME, "rename", src, e))
    }

    fn scan<F: FnMut(&[u8], &[u8])>(&self, prefix: &[u8], limit: usize, mut f: F) -> Result<usize> {
        let mut upper = Vec::new();
        let bounded = prefix_successor(prefix, &mut upper);
        let c = self.conn()?;
        let mut seen = 0;
        if limit > 0 {
            Self::walk(&c, prefix, bounded.then_some(&upper[..]), &mut |k, v| {
                f(k, v);
                seen += 1;
                seen < limit
            })
            .map_err(|e| key_err(NAME, "scan", prefix, e))?;
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
        let mut upper = Vec::new();
        let bounded = prefix_successor(prefix, &mut upper);
        let c = self.conn()?;
        super::list_dir_seek(prefix, delim, limit, f, |from, visit| {
            Self::walk(&c, from, bounded.then_some(&upper[..]), visit)
                .map_err(|e| key_err(NAME, "list_dir", prefix, e))
        })
    }

    fn checkpoint(&mut self) -> Result<()> {
        let c = self.writer()?;
        let busy: i64 = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|e| err(NAME, "wal_checkpoint", e))?;
        if busy != 0 {
            return Err(err(NAME, "wal_checkpoint", "a reader blocked it (busy)"));
        }
        Ok(())
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn wal_bytes(&self) -> u64 {
        super::files_bytes(&self.dir, |name| name.ends_with("-wal"))
    }

    fn close(&mut self) -> Result<()> {
        // Readers first, the writer last: the last connection to close
        // checkpoints the WAL into the database file and removes it.
        while let Some(m) = self.conns.pop() {
            let c = m.into_inner().unwrap_or_else(PoisonError::into_inner);
            c.close()
                .map_err(|(_, e)| err(NAME, format!("close {}", self.path.display()), e))?;
        }
        Ok(())
    }

    fn reopen(&mut self, sync_on_commit: bool) -> Result<()> {
        self.close()?;
        let what = || format!("open {}", self.path.display());
        let w = connect(&self.path, self.cache_kib, sync_on_commit)
            .map_err(|e| err(NAME, what(), e))?;
        w.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID",
        )
        .map_err(|e| err(NAME, "create table", e))?;
        self.conns.push(Mutex::new(w));
        for _ in 0..self.readers {
            let r = connect(&self.path, self.cache_kib, sync_on_commit)
                .map_err(|e| err(NAME, what(), e))?;
            self.conns.push(Mutex::new(r));
        }
        self.sync = sync_on_commit;
        Ok(())
    }

    fn sync_on_commit(&self) -> Option<bool> {
        (!self.conns.is_empty()).then_some(self.sync)
    }

    fn put_shared(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        let mut old = Vec::new();
        let c = self.writer_shared()?;
        put_on(&c, key, value, &mut old).map_err(|e| key_err(NAME, "put", key, e))
    }
}
