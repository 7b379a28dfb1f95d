//! The persistence groups (BENCH.md "Ops": `reopen`, `sync_commit`): they
//! need an engine with files, so they run only in persistent mode and only
//! on engines with a data directory (main skips them elsewhere, with a
//! note).
//!
//! - `reopen`: right after the load's checkpoint, a clean close, an open
//!   and a first get (recovery time after a clean close), then `n` gets on
//!   the cold buffer pool (frames are read with `O_DIRECT`, so cold means
//!   disk reads). Same op sequence as `get`, so its digest must equal
//!   `get`'s: the recovered data is checked against the reference engine.
//! - `reopen_wal`: `n / 10` fresh keys put with the default buffered WAL
//!   and no checkpoint, close, open (replaying the WAL tail) and a first
//!   get of the last key written; every key is then checked and deleted
//!   again and a checkpoint taken (untimed), so later groups see the
//!   loaded key set.
//! - `fdatasync`: the disk's floor for a sync per commit: 4 KiB writes
//!   over a scratch file in the engine's directory whose blocks were
//!   written and synced beforehand (untimed), each followed by
//!   `fdatasync`. An append would also change the file's size and
//!   allocate, and the filesystem would commit that metadata inside the
//!   sync (about 1.5x the time here); a log that preallocates its space
//!   (holt's WAL does, see docs/design.md) pays only the overwrite, so
//!   that is the floor.
//! - `sync_commit_tN`: the engine reopened with a WAL sync per commit (and
//!   its cache warmed by one full scan, untimed), then fresh-key puts on N
//!   threads sharing the handle; group commit lets one sync cover several
//!   threads' commits.
//!
//! Every op here is timed (`sample_every` 1) except the puts before the
//! `reopen_wal` close (1 in 16, like other point ops).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::engines::Engine;
use crate::error::{BenchError, Result};
use crate::ops::{self, point_result, show, Ctx, Digest, GroupResult, Progress, Sampler, Wrong};
use crate::report;
use crate::shapes::Rng;

/// Fresh keys written before the `reopen_wal` close.
#[must_use]
pub fn wal_keys(n: usize) -> usize {
    (n / 10).max(1)
}

/// Puts per `sync_commit_tN` group (split over the threads).
#[must_use]
pub fn sync_ops(n: usize) -> usize {
    (n / 200).clamp(500, 5000)
}

/// 4 KiB overwrites + `fdatasync` in the baseline (after one untimed).
pub const FSYNC_OPS: usize = 200;

/// Value round of the `reopen_wal` and `sync_commit` puts.
const ROUND: u64 = 5 << 32;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn need_dir<E: Engine>(e: &E, op: &str) -> Result<PathBuf> {
    e.data_dir()
        .map(Path::to_path_buf)
        .ok_or_else(|| BenchError::Engine {
            engine: e.name(),
            what: op.to_string(),
            err: "needs a persistent engine (--mode persistent)".into(),
        })
}

/// Bytes of holt's WAL files (`journal*.wal`) in `dir`.
#[must_use]
pub fn wal_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .filter(|ent| {
            let name = ent.file_name();
            let name = name.to_string_lossy();
            name.starts_with("journal") && name.ends_with(".wal")
        })
        .filter_map(|ent| ent.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|md| md.len())
        .sum()
}

/// Clean close right after the load's checkpoint, reopen, first get, then
/// `n` gets on the cold cache.
pub fn reopen<E: Engine>(
    e: &mut E,
    cx: &Ctx<'_>,
    rng: &mut Rng,
    label: String,
    name: String,
) -> Result<GroupResult> {
    let dir = need_dir(e, &name)?;
    let keys = cx.keys;
    let n = keys.n;
    let probe = rng.below(n);

    let t = Instant::now();
    e.close()?;
    let close = t.elapsed();
    let wal = e.wal_bytes();
    let disk = report::dir_bytes(&dir);
    // Cold means cold for every engine: the files' pages leave the OS page
    // cache too (holt reads frames with O_DIRECT anyway; the peers read
    // through the page cache or a memory map).
    report::evict_page_cache(&dir);
    let t = Instant::now();
    e.reopen(false)?;
    let open = t.elapsed();
    let mut out = Vec::new();
    let t = Instant::now();
    let found = e.get(keys.key(probe), &mut out)?;
    let first = t.elapsed();

    let mut w0 = Wrong::default();
    // `reopen` runs right after `load`: every key holds its round-0 value.
    if !found || out != cx.vals.value(probe, 0) {
        w0.note(|| {
            format!(
                "first get after reopen of {}: found={found}, value intact={}",
                show(keys.key(probe)),
                out == cx.vals.value(probe, 0)
            )
        });
    }

    // The `get` group's op sequence on the cold cache.
    let seq = Rng::for_label(cx.seed, "get");
    let count = cx.point_ops();
    let (s, d, mut w, secs) = ops::gets(&*e, cx, seq, count, label, true, 1)?;
    w.merge(w0);
    let loads = e.stats()?.cache_misses;
    let mut r = point_result(name, 1, count, secs, s, d, w);
    r.sample_every = 1;
    r.digest_as = Some("get");
    r.extra.extend([
        ("close_ms", ms(close)),
        ("open_ms", ms(open)),
        ("first_get_ms", ms(first)),
        ("recovery_ms", ms(open + first)),
        ("wal_keys", 0.0),
        ("wal_bytes", wal as f64),
        ("disk_bytes", disk as f64),
    ]);
    if let Some(l) = loads {
        r.extra.push(("frame_loads", l as f64));
    }
    Ok(r)
}

/// `wal_keys(n)` fresh keys with the buffered WAL and no checkpoint, close,
/// reopen (WAL replay), first get; then check, delete and checkpoint.
pub fn reopen_wal<E: Engine>(
    e: &mut E,
    cx: &Ctx<'_>,
    label: String,
    name: String,
) -> Result<GroupResult> {
    let dir = need_dir(e, &name)?;
    let keys = cx.keys;
    let k = wal_keys(keys.n);
    let first = cx.take_extra(k);
    let fresh = keys.extra_keys(first, k);
    let value = |j: usize| cx.vals.value(keys.extra_index(first + j), ROUND);
    if e.sync_on_commit() == Some(true) {
        e.reopen(false)?;
    }

    let mut s = Sampler::new(ops::POINT_SAMPLE, cx.timer_overhead)?;
    let mut w = Wrong::default();
    let mut d = Digest::default();
    let mut buf = Vec::new();
    let mut p = Progress::new(cx.progress, label, k);
    let t0 = Instant::now();
    for j in 0..k {
        let t = s.start(j);
        let existed = e.put(fresh.get(j), value(j), &mut buf)?;
        s.stop(t);
        if existed {
            w.note(|| format!("put of fresh key {} found a value", show(fresh.get(j))));
        }
        if j & 1023 == 0 {
            p.tick(j);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    p.finish();

    let t = Instant::now();
    e.close()?;
    let close = t.elapsed();
    let wal = e.wal_bytes();
    let disk = report::dir_bytes(&dir);
    let t = Instant::now();
    e.reopen(false)?;
    let open = t.elapsed();
    let last = k - 1;
    let t = Instant::now();
    let found = e.get(fresh.get(last), &mut buf)?;
    let first_get = t.elapsed();
    if !found || buf != value(last) {
        w.note(|| {
            format!(
                "first get after WAL replay of {}: found={found}, value intact={}",
                show(fresh.get(last)),
                buf == value(last)
            )
        });
    }

    // Untimed: every replayed key is there, then the key set is restored.
    let t = Instant::now();
    for j in 0..k {
        let found = e.get(fresh.get(j), &mut buf)?;
        d.word(u64::from(found));
        if !found || buf != value(j) {
            w.note(|| {
                format!(
                    "get after WAL replay of {}: found={found}, value intact={}",
                    show(fresh.get(j)),
                    buf == value(j)
                )
            });
        }
    }
    let verify = t.elapsed();
    let t = Instant::now();
    for j in 0..k {
        if !e.delete(fresh.get(j), &mut buf)? {
            w.note(|| format!("delete of replayed key {}: absent", show(fresh.get(j))));
        }
    }
    e.checkpoint()?;
    let cleanup = t.elapsed();

    let mut r = point_result(name, 1, k, secs, s, d, w);
    r.extra.extend([
        ("close_ms", ms(close)),
        ("open_ms", ms(open)),
        ("first_get_ms", ms(first_get)),
        ("recovery_ms", ms(open + first_get)),
        ("wal_keys", k as f64),
        ("wal_bytes", wal as f64),
        ("disk_bytes", disk as f64),
        ("verify_secs", verify.as_secs_f64()),
        ("cleanup_secs", cleanup.as_secs_f64()),
    ]);
    Ok(r)
}

/// One untimed and `FSYNC_OPS` timed 4 KiB overwrites + `fdatasync` of a
/// scratch file in the engine's directory, written in full and synced
/// first (untimed; removed afterwards). The engine
/// stays open but idle (no background threads), so the disk is quiet.
pub fn fsync_baseline<E: Engine>(e: &mut E, cx: &Ctx<'_>, name: String) -> Result<GroupResult> {
    let dir = need_dir(e, &name)?;
    let path = dir.join("holt-bench-fdatasync.tmp");
    let res = fsync_file(&path, cx.timer_overhead);
    let rm = std::fs::remove_file(&path);
    let (s, secs) = res?;
    rm.map_err(|err| BenchError::io(format!("remove {}", path.display()), err))?;
    let mut r = point_result(
        name,
        1,
        FSYNC_OPS,
        secs,
        s,
        Digest::default(),
        Wrong::default(),
    );
    r.sample_every = 1;
    Ok(r)
}

fn fsync_file(path: &Path, overhead: u64) -> Result<(Sampler, f64)> {
    let io = |what: &str, err| BenchError::io(format!("{what} {}", path.display()), err);
    let mut f: File = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(|err| io("create", err))?;
    let block = [0x5Au8; 4096];
    // Allocate and write every block the timed loop will overwrite, so
    // its syncs change no metadata (see the module docs).
    f.write_all(&vec![0u8; block.len() * (FSYNC_OPS + 1)])
        .map_err(|err| io("fill", err))?;
    f.sync_all().map_err(|err| io("fsync", err))?;
    f.seek(SeekFrom::Start(0))
        .map_err(|err| io("seek in", err))?;
    let mut s = Sampler::new(1, overhead)?;
    let mut t0 = Instant::now();
    for j in 0..=FSYNC_OPS {
        if j == 1 {
            t0 = Instant::now();
        }
        let t = (j > 0).then(Instant::now);
        f.write_all(&block).map_err(|err| io("write to", err))?;
        f.sync_data().map_err(|err| io("fdatasync", err))?;
        s.stop(t);
    }
    Ok((s, t0.elapsed().as_secs_f64()))
}

/// Fresh-key puts with a WAL sync per commit on `threads` threads sharing
/// the engine (reopened with sync on, cache warmed, if it is not yet).
pub fn sync_commit<E: Engine>(
    e: &mut E,
    cx: &Ctx<'_>,
    threads: usize,
    label: String,
    name: String,
) -> Result<GroupResult> {
    let _dir = need_dir(e, &name)?;
    let keys = cx.keys;
    let mut extra = Vec::new();
    if e.sync_on_commit() != Some(true) {
        let t = Instant::now();
        e.reopen(true)?;
        extra.push(("reopen_ms", ms(t.elapsed())));
        // Warm the cache so the group measures commits, not frame loads.
        let t = Instant::now();
        e.scan(b"", usize::MAX, |_, _| {})?;
        extra.push(("warm_secs", t.elapsed().as_secs_f64()));
    }
    let per = (cx.limits.sync_ops.unwrap_or_else(|| sync_ops(keys.n)) / threads).max(1);
    let total = per * threads;
    let first = cx.take_extra(total);
    let fresh = keys.extra_keys(first, total);
    let value = |j: usize| cx.vals.value(keys.extra_index(first + j), ROUND);

    let barrier = Barrier::new(threads);
    type Part = (Sampler, Wrong, Instant, Instant);
    let shared = &*e;
    let parts: Vec<Result<Part>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                let fresh = &fresh;
                let value = &value;
                let label = label.clone();
                sc.spawn(move || -> Result<Part> {
                    let mut s = Sampler::new(1, cx.timer_overhead)?;
                    let mut w = Wrong::default();
                    let mut p = Progress::new(cx.progress && t == 0, label, per);
                    barrier.wait();
                    let start = Instant::now();
                    for j in 0..per {
                        let idx = t * per + j;
                        let key = fresh.get(idx);
                        let ts = s.start(j);
                        let existed = shared.put_shared(key, value(idx))?;
                        s.stop(ts);
                        if existed {
                            w.note(|| format!("put of fresh key {} found a value", show(key)));
                        }
                        if j & 63 == 0 {
                            p.tick(j);
                        }
                    }
                    let end = Instant::now();
                    p.finish();
                    Ok((s, w, start, end))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BenchError::Engine {
                        engine: shared.name(),
                        what: name.clone(),
                        err: "worker thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut hist = ops::new_hist()?;
    let mut wrong = Wrong::default();
    let mut span: Option<(Instant, Instant)> = None;
    for part in parts {
        let (s, w, a, b) = part?;
        hist.add(&s.hist).map_err(|err| BenchError::Engine {
            engine: "harness",
            what: "histogram merge".into(),
            err: err.to_string(),
        })?;
        wrong.merge(w);
        span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
    }
    let secs = span.map_or(0.0, |(a, b)| b.duration_since(a).as_secs_f64());
    Ok(GroupResult {
        op: name,
        threads,
        ops: total as u64,
        secs,
        hist,
        sample_every: 1,
        digest: 0,
        items: 0,
        extra,
        wrong: wrong.finish(total as u64),
        digest_as: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::{HoltEngine, HoltOptions, ReferenceEngine};
    use crate::ops::{aux_count, miss_count, run, OpKind};
    use crate::shapes::{KeySet, Shape, ValuePool};
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn persistence_groups_recover_the_data() {
        let n = 3000;
        let shape = Shape::Objstore;
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
            limits: crate::ops::Limits::default(),
        };
        let tmp = tempfile::tempdir().unwrap();
        let mut h = HoltEngine::open(&HoltOptions {
            dir: Some(tmp.path().join("t")),
            pool_frames: 64,
            flush_on_write: false,
        })
        .unwrap();
        let mut r = ReferenceEngine::new();
        run(&mut h, OpKind::Load, &cx).unwrap();
        run(&mut r, OpKind::Load, &cx).unwrap();
        let expect_get = run(&mut r, OpKind::Get, &cx).unwrap().digest;

        let g = run(&mut h, OpKind::Reopen, &cx).unwrap();
        assert!(g.wrong.is_none(), "{:?}", g.wrong);
        assert_eq!(g.digest_as, Some("get"));
        assert_eq!(g.digest, expect_get);
        assert!(g.extra.iter().any(|(k, _)| *k == "open_ms"));

        let g = run(&mut h, OpKind::ReopenWal, &cx).unwrap();
        assert!(g.wrong.is_none(), "{:?}", g.wrong);
        let wal = g.extra.iter().find(|(k, _)| *k == "wal_bytes").unwrap().1;
        assert!(
            wal > 0.0,
            "the WAL tail should be on disk before the reopen"
        );
        // The key set is back to the loaded one.
        assert_eq!(run(&mut h, OpKind::Get, &cx).unwrap().digest, expect_get);
        let a = run(&mut h, OpKind::Scan100, &cx).unwrap();
        let b = run(&mut r, OpKind::Scan100, &cx).unwrap();
        assert_eq!(a.digest, b.digest);

        let g = run(&mut h, OpKind::Fsync, &cx).unwrap();
        assert_eq!(g.ops, FSYNC_OPS as u64);
        assert!(!tmp.path().join("t/holt-bench-fdatasync.tmp").exists());

        for t in [1, 3] {
            let g = run(&mut h, OpKind::SyncCommit(t), &cx).unwrap();
            assert!(g.wrong.is_none(), "{:?}", g.wrong);
            assert_eq!(g.threads, t);
            assert_eq!(h.sync_on_commit(), Some(true));
        }
        // Every committed key survives a reopen.
        h.reopen(false).unwrap();
        let mut out = Vec::new();
        let total = sync_ops(n) + (sync_ops(n) / 3) * 3;
        let first = wal_keys(n);
        let fresh = keys.extra_keys(first, total);
        for j in 0..total {
            assert!(h.get(fresh.get(j), &mut out).unwrap(), "sync key {j}");
        }

        // Not available in memory mode.
        let mut m = HoltEngine::open(&HoltOptions {
            dir: None,
            pool_frames: 64,
            flush_on_write: false,
        })
        .unwrap();
        run(&mut m, OpKind::Load, &cx).unwrap();
        assert!(run(&mut m, OpKind::Reopen, &cx).is_err());
        assert!(run(&mut r, OpKind::SyncCommit(1), &cx).is_err());
    }
}
