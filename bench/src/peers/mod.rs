//! Peer engines (BENCH.md "Peers"), each behind the cargo feature of its
//! name and off by default: `rocksdb`, `sqlite`, `lmdb`, `redb`, `fjall`.
//!
//! Every peer keeps its files in its own directory and is configured as a
//! competent user would at holt's default durability, "acknowledged to the
//! OS, not fsynced per op"; [`checkpoint`] makes everything durable, and
//! `reopen(true)` switches to the engine's fsync-per-commit setting (the
//! `sync_commit` groups). Per engine:
//!
//! | engine | default tier | sync tier | checkpoint |
//! |---|---|---|---|
//! | rocksdb | WAL on, `sync = false` | `WriteOptions::set_sync(true)` | flush memtables (SST + MANIFEST synced) |
//! | sqlite | WAL mode, `synchronous = NORMAL` | `synchronous = FULL` | `wal_checkpoint(TRUNCATE)` |
//! | lmdb | `MDB_NOSYNC` | default flags (sync per commit) | `mdb_env_sync(force)` |
//! | redb | `Durability::None` | `Durability::Immediate` | an `Immediate` commit |
//! | fjall | journal flushed to the OS per write | batch with `PersistMode::SyncData` | `persist(SyncAll)` (data stays in the journal until a memtable fills) |
//!
//! Semantics match holt's: a put returns the previous value and a delete
//! the removed one, so every update / delete is one committed transaction
//! that reads the old value and writes (engines whose write API cannot
//! return it read first, inside the transaction where there is one). The
//! load is the exception: competent users bulk-load in transactions or
//! write batches, so the peers (and holt, with `Tree::txn`) take
//! [`LOAD_BATCH`] fresh keys per transaction ([`put_batch`]); the B-tree
//! engines still notice a key that existed, the LSM write batches and
//! holt's `txn` are blind writes. Reads are one read
//! transaction or snapshot per get, scan or listing.
//!
//! Every peer here is an ordered store: `scan` is a prefix iteration and
//! `list_dir` seeks past each subdirectory ([`list_dir_seek`]) instead of
//! walking the keys under it.
//!
//! [`checkpoint`]: crate::engines::Engine::checkpoint
//! [`put_batch`]: crate::engines::Engine::put_batch

// The helpers serve whichever peers are compiled in; all of them are used
// only when every peer is.
#![cfg_attr(
    not(all(
        feature = "rocksdb",
        feature = "sqlite",
        feature = "lmdb",
        feature = "redb",
        feature = "fjall"
    )),
    allow(dead_code)
)]

#[cfg(feature = "fjall")]
pub mod fjall;
#[cfg(feature = "lmdb")]
pub mod lmdb;
#[cfg(feature = "redb")]
pub mod redb;
#[cfg(feature = "rocksdb")]
pub mod rocksdb;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::fmt::Display;
use std::path::PathBuf;

use crate::engines::{prefix_successor, DirEntry};
use crate::error::{BenchError, Result};

/// Fresh keys per load transaction / write batch.
pub const LOAD_BATCH: usize = 10_000;

/// How to open a peer.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// The engine's own directory (created if missing).
    pub dir: PathBuf,
    /// Block / page cache budget in bytes.
    pub cache_bytes: usize,
    /// Most threads that read at once (`get_tN`), for engines that need a
    /// connection per reader.
    pub reader_threads: usize,
}

/// An engine error with what was being done.
#[cold]
pub fn err(engine: &'static str, what: impl Into<String>, e: impl Display) -> BenchError {
    BenchError::Engine {
        engine,
        what: what.into(),
        err: e.to_string(),
    }
}

/// An engine error about one key.
#[cold]
pub fn key_err(engine: &'static str, what: &str, key: &[u8], e: impl Display) -> BenchError {
    err(
        engine,
        format!("{what}({})", String::from_utf8_lossy(key)),
        e,
    )
}

/// The error of a call on a closed engine.
#[cold]
pub fn closed(engine: &'static str) -> BenchError {
    err(engine, "use of the engine", "the engine is closed")
}

/// Creates `dir` if needed.
///
/// # Errors
/// The `create_dir_all` error.
pub fn make_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(format!("create {}", dir.display()), e))
}

/// Bytes of the files directly in `dir` whose name passes `pick`.
#[must_use]
pub fn files_bytes(dir: &std::path::Path, pick: impl Fn(&str) -> bool) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .filter(|ent| pick(&ent.file_name().to_string_lossy()))
        .filter_map(|ent| ent.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|md| md.len())
        .sum()
}

/// `list_dir` on an ordered store that can iterate from any key.
///
/// Walks the keys from `prefix`: a key directly under `prefix` is reported
/// and the walk goes on; the first key under a subdirectory (`prefix`, then
/// anything up to and including `delim`) reports that subdirectory once,
/// and the walk starts again at the subdirectory's successor, so the keys
/// under it are never visited. Stops after `limit` entries or at the first
/// key outside `prefix`.
///
/// `walk(from, visit)` must call `visit(key, value)` for the keys `>=
/// from`, in order, until `visit` returns false or the keys run out.
///
/// # Errors
/// Whatever `walk` returns.
pub fn list_dir_seek<F, W>(
    prefix: &[u8],
    delim: u8,
    limit: usize,
    mut f: F,
    mut walk: W,
) -> Result<usize>
where
    F: FnMut(DirEntry<'_>),
    W: FnMut(&[u8], &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()>,
{
    let mut seen = 0;
    let mut from = prefix.to_vec();
    let mut next = Vec::new();
    while seen < limit {
        let mut reseek = false;
        walk(&from, &mut |k, v| {
            let Some(rest) = k.strip_prefix(prefix) else {
                return false;
            };
            match rest.iter().position(|&b| b == delim) {
                None => {
                    f(DirEntry::Key(k, v));
                    seen += 1;
                    seen < limit
                }
                Some(at) => {
                    let cp = &k[..=prefix.len() + at];
                    f(DirEntry::Prefix(cp));
                    seen += 1;
                    reseek = prefix_successor(cp, &mut next);
                    false
                }
            }
        })?;
        if !reseek {
            break;
        }
        std::mem::swap(&mut from, &mut next);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::{Engine, ReferenceEngine};
    use std::collections::BTreeMap;
    use std::ops::Bound;

    /// A `BTreeMap` walked through `list_dir_seek`, counting the keys the
    /// walks visit.
    fn seek_listing(
        m: &BTreeMap<Vec<u8>, Vec<u8>>,
        prefix: &[u8],
        limit: usize,
    ) -> (Vec<String>, usize) {
        let mut out = Vec::new();
        let mut visited = 0;
        let n = list_dir_seek(
            prefix,
            b'/',
            limit,
            |d| out.push(show(d)),
            |from, visit| {
                for (k, v) in m.range::<[u8], _>((Bound::Included(from), Bound::Unbounded)) {
                    visited += 1;
                    if !visit(k, v) {
                        break;
                    }
                }
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(n, out.len());
        (out, visited)
    }

    fn show(d: DirEntry<'_>) -> String {
        match d {
            DirEntry::Key(k, v) => format!(
                "K:{}={}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            ),
            DirEntry::Prefix(p) => format!("P:{}", String::from_utf8_lossy(p)),
        }
    }

    fn reference_listing(r: &ReferenceEngine, prefix: &[u8], limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        r.list_dir(prefix, b'/', limit, |d| out.push(show(d)))
            .unwrap();
        out
    }

    /// Runs every op group on a peer opened in a fresh directory and on
    /// the reference, and checks that no answer is wrong and every digest
    /// agrees (the persistence groups against the reference's `get`).
    #[allow(dead_code)] // used by the tests of the compiled-in peers
    fn agrees_with_reference<E: Engine>(open: impl Fn(&PeerOptions) -> Result<E>) {
        use crate::ops::{aux_count, miss_count, run, Ctx, Limits, OpKind};
        use crate::shapes::{KeySet, Shape, ValuePool};
        use std::sync::atomic::AtomicUsize;
        for shape in [Shape::Objstore, Shape::Fs, Shape::Kv] {
            let n = 3000;
            let keys = KeySet::generate(shape, 1, n, miss_count(n), aux_count(n));
            let vals = ValuePool::generate(shape, 1);
            let cx = Ctx {
                keys: &keys,
                vals: &vals,
                seed: 1,
                label: String::new(),
                progress: false,
                timer_overhead: 0,
                next_extra: AtomicUsize::new(0),
                limits: Limits::default(),
            };
            let tmp = tempfile::tempdir().unwrap();
            let opts = PeerOptions {
                dir: tmp.path().join("peer"),
                cache_bytes: 8 << 20,
                reader_threads: 2,
            };
            let mut e = open(&opts).unwrap();
            let mut r = ReferenceEngine::new();
            let mut groups = OpKind::ALL_BUT_THREADED.to_vec();
            groups.extend([
                OpKind::GetThreads(2),
                OpKind::Reopen,
                OpKind::ReopenWal,
                OpKind::SyncCommit(1),
                OpKind::SyncCommit(3),
            ]);
            groups.sort_by_key(|g| g.order());
            let mut get_digest = None;
            for g in groups {
                let a = run(&mut e, g, &cx).unwrap();
                assert!(
                    a.wrong.is_none(),
                    "{} {shape} {}: {:?}",
                    e.name(),
                    a.op,
                    a.wrong
                );
                if g.needs_persistence() {
                    if g == OpKind::Reopen {
                        let want = run(&mut r, OpKind::Get, &cx).unwrap().digest;
                        get_digest = Some(want);
                        assert_eq!(a.digest, want, "{} {shape} reopen", e.name());
                    }
                    continue;
                }
                let b = run(&mut r, g, &cx).unwrap();
                assert_eq!(a.digest, b.digest, "{} {shape} {}", e.name(), a.op);
                assert_eq!(a.items, b.items, "{} {shape} {}", e.name(), a.op);
            }
            assert!(get_digest.is_some());
            // Everything the sync groups committed survives a reopen.
            e.reopen(false).unwrap();
            let mut count = 0;
            e.scan(b"", usize::MAX, |_, _| count += 1).unwrap();
            let mut want = 0;
            r.scan(b"", usize::MAX, |_, _| want += 1).unwrap();
            let sync_keys = crate::persist::sync_ops(n) + crate::persist::sync_ops(n) / 3 * 3;
            assert_eq!(count, want + sync_keys, "{} {shape}", e.name());
        }
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_agrees_with_reference() {
        agrees_with_reference(super::rocksdb::RocksEngine::open);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_agrees_with_reference() {
        agrees_with_reference(super::sqlite::SqliteEngine::open);
    }

    #[cfg(feature = "lmdb")]
    #[test]
    fn lmdb_agrees_with_reference() {
        agrees_with_reference(super::lmdb::LmdbEngine::open);
    }

    #[cfg(feature = "redb")]
    #[test]
    fn redb_agrees_with_reference() {
        agrees_with_reference(super::redb::RedbEngine::open);
    }

    #[cfg(feature = "fjall")]
    #[test]
    fn fjall_agrees_with_reference() {
        agrees_with_reference(super::fjall::FjallEngine::open);
    }

    #[test]
    fn seek_listing_matches_the_reference_and_skips_subdirectories() {
        let mut m = BTreeMap::new();
        let mut r = ReferenceEngine::new();
        let mut old = Vec::new();
        let mut keys: Vec<String> = vec![
            "a/1".into(),
            "a/2/x".into(),
            "a/3".into(),
            "a/30/z".into(),
            "a/4/q/r".into(),
            "a/".into(),
            "b/1".into(),
            "/lead".into(),
            "a\u{7f}/tail".into(),
        ];
        // A big subdirectory the seek must jump over.
        keys.extend((0..500).map(|i| format!("a/2/f{i:04}")));
        for k in &keys {
            let v = format!("v{}", k.len());
            m.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
            r.put(k.as_bytes(), v.as_bytes(), &mut old).unwrap();
        }
        for p in ["", "a/", "a/2/", "a", "/", "zz", "a/4/"] {
            for limit in [1, 2, 3, 1000] {
                let (got, _) = seek_listing(&m, p.as_bytes(), limit);
                assert_eq!(
                    got,
                    reference_listing(&r, p.as_bytes(), limit),
                    "prefix {p:?} limit {limit}"
                );
            }
        }
        // `a/` lists a/, a/1, a/2/, a/3, a/30/, a/4/: one visit per entry
        // plus the key that ends each walk, never the 501 keys under a/2/.
        let (got, visited) = seek_listing(&m, b"a/", 1000);
        assert_eq!(got.len(), 6, "{got:?}");
        assert!(visited < 20, "visited {visited} keys");
    }
}
