#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fault injection through the I/O driver seam (DESIGN.md §8, §11; API.md
//! §8 `Poisoned`).
//!
//! `Injector::wrap` (tests/common/fault.rs, on the shared
//! tests/common/hooked.rs wrapper) wraps a real driver — every scenario
//! runs once on the sync driver and once on io_uring (`<test>::sync`,
//! `<test>::uring`) — and every file it opens, counts
//! each call by `Kind` (read, write, sync, rename, remove, sync_dir,
//! set_len/allocate, open) and fails the N-th call of a chosen kind with
//! an injected `io::Error` (EIO-like `ErrorKind::Other`, or
//! `StorageFull`). A failing write first writes half of its buffer, as a
//! real short write before `EIO`/`ENOSPC` would. Batches reach the inner
//! driver as batches, each entry counting as one call.
//!
//! The sweeps are SQLite style: for N = 1, 2, 3, … a fixed workload runs
//! with the fault armed at the N-th call of one kind, until a run
//! completes without the fault being hit. Each run keeps a log of which
//! operations were acknowledged (returned `Ok`), which were refused with
//! `Poisoned`, and which failed with an I/O error (the op "in flight" when
//! the fault hit). The tree is then dropped and the directory reopened
//! with the clean driver; the recovered state must equal the state
//! after the acknowledged ops, optionally plus the in-flight op applied
//! whole — never a half-applied txn, never a lost acknowledged op.

mod common;

use std::collections::HashMap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use common::fault::{Injector, Kind, Plan};
use common::workload::{apply, diff, dump, get, run, short, Model, Op};
use common::{per_driver, Driver};
use holt::{Error, Tree, TreeBuilder};

// ------------------------------------------------------------ workload

/// A value of `len` bytes that names `tag`, so a wrong version is visible.
fn val(tag: &str, len: usize) -> Vec<u8> {
    let mut v = tag.as_bytes().to_vec();
    let mut x = tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v.truncate(len.max(tag.len()));
    v
}

fn put(k: &str, tag: &str, len: usize) -> Op {
    Op::Put(k.as_bytes().to_vec(), Arc::new(val(tag, len)))
}
fn del(k: &str) -> Op {
    Op::Delete(k.as_bytes().to_vec())
}
fn ren(s: &str, d: &str, force: bool) -> Op {
    Op::Rename(s.as_bytes().to_vec(), d.as_bytes().to_vec(), force)
}

const BIG: usize = 60_000;

/// Written with a clean driver before the fault phase: a checkpointed
/// base plus a few records that live only in the WAL, so the fault phase
/// starts with reads of the manifest, the frames and the WAL.
fn base_ops() -> Vec<Op> {
    let mut ops = vec![
        put("a/1", "a1.0", 40),
        put("a/2", "a2.0", 40),
        put("a/3", "a3.0", 40),
    ];
    // 14 values of 60 kB: more than one frame holds, so the tree spills
    // into several frames and a 2-frame buffer pool reloads them.
    for i in 1..=14 {
        ops.push(put(&format!("big/{i}"), &format!("big{i}.0"), BIG));
    }
    ops.push(Op::Checkpoint);
    ops.extend([
        put("a/4", "a4.0", 40),
        put("a/5", "a5.0", 40),
        put("big/5", "big5.1", BIG),
    ]);
    ops
}

/// The fault phase: puts, deletes, renames, txns, a checkpoint in the
/// middle, more writes, another checkpoint, and writes after it.
fn fault_ops() -> Vec<Op> {
    vec![
        put("a/6", "a6.1", 40),
        put("a/7", "a7.1", 300),
        put("big/15", "big15.1", BIG),
        put("big/2", "big2.1", BIG),
        del("a/2"),
        ren("a/3", "r/3", false),
        Op::Txn(vec![
            put("t/1", "t1.1", 30),
            put("t/2", "t2.1", 2000),
            put("big/12", "big12.1", BIG),
            del("a/4"),
            ren("a/5", "r/5", false),
        ]),
        put("a/1", "a1.1", 50),
        del("big/9"),
        Op::Checkpoint,
        put("big/1", "big1.2", BIG),
        del("big/3"),
        put("a/8", "a8.2", 40),
        ren("r/3", "a/6", true),
        Op::Txn(vec![
            del("t/1"),
            put("big/16", "big16.2", BIG),
            ren("big/4", "big/4x", false),
            put("big/13", "big13.2", 100),
        ]),
        put("a/9", "a9.2", 40),
        del("big/6"),
        ren("big/14", "a/14", false),
        Op::Checkpoint,
        put("z/1", "z1.3", 40),
        put("big/7", "big7.3", BIG),
        put("z/2", "z2.3", 500),
        del("a/8"),
        Op::Txn(vec![
            put("z/3", "z3.3", 40),
            del("z/1"),
            put("big/11", "big11.3", 10),
        ]),
        ren("z/2", "z/2x", false),
        Op::Checkpoint,
        put("big/10", "big10.4", BIG),
        del("a/7"),
    ]
}

/// What happened to one op of the fault phase.
#[derive(Debug)]
enum Outcome {
    Acked,
    /// Refused with `Poisoned` before anything was applied.
    Refused,
    /// Failed with an I/O error: may or may not have been applied (whole).
    InFlight(#[allow(dead_code)] String),
    /// Never run: the tree did not open.
    NotRun,
}

/// Every state the tree may be in: the acknowledged ops applied in order,
/// each in-flight op either applied whole or not at all.
fn candidates(base: &Model, ops: &[Op], outcomes: &[Outcome]) -> Vec<Model> {
    // A failed checkpoint changes no state: only failed writes count.
    let inflight: Vec<usize> = (0..ops.len())
        .filter(|&i| {
            matches!(outcomes[i], Outcome::InFlight(_)) && !matches!(ops[i], Op::Checkpoint)
        })
        .collect();
    assert!(
        inflight.len() <= 6,
        "{} write ops failed with I/O errors ({inflight:?}): after a failed WAL write or sync the \
         tree must be poisoned (later writes refused with Poisoned), not keep failing or succeeding",
        inflight.len()
    );
    let mut out: Vec<Model> = Vec::new();
    for mask in 0u32..(1 << inflight.len()) {
        let mut m = base.clone();
        for (i, op) in ops.iter().enumerate() {
            let take = match &outcomes[i] {
                Outcome::Acked => true,
                Outcome::InFlight(_) => inflight
                    .iter()
                    .position(|&j| j == i)
                    .is_some_and(|bit| mask & (1 << bit) != 0),
                Outcome::Refused | Outcome::NotRun => false,
            };
            if take {
                apply(&mut m, op);
            }
        }
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

fn builder(dir: &Path, d: Driver) -> TreeBuilder {
    // A 1-frame buffer pool: frames are evicted and reloaded, so reads
    // (and read faults) happen in the middle of the workload.
    common::builder(dir, d)
        .wal_sync_on_commit(true)
        .buffer_pool_size(1)
}

fn retired_wal_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("journal-"))
        .collect()
}

/// Builds the base state in `dir` with the plain driver.
fn build_base(dir: &Path, d: Driver) -> Model {
    let mut model = Model::new();
    let t = builder(dir, d).open().unwrap();
    for op in base_ops() {
        run(&t, &op).unwrap();
        assert!(apply(&mut model, &op));
    }
    model
}

/// Result of one fault run.
struct RunReport {
    /// Whether the armed fault fired at all.
    hit: bool,
    /// Calls by kind during the fault phase.
    counts: HashMap<Kind, u64>,
}

/// One run of the sweep: base, fault phase under `plan`, drop, reopen
/// clean, check.
fn fault_run(plan: &Plan, d: Driver) -> RunReport {
    let dir = tempfile::tempdir().unwrap();
    let base = build_base(dir.path(), d);
    let ops = fault_ops();
    let (driver, inj) = Injector::wrap(d.io());
    inj.arm(plan.clone());
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(ops.len());
    let repro = |outcomes: &[Outcome], inj: &Injector| -> String {
        let mut s = format!("plan {plan:?}\ninjected: {:?}\nops:\n", inj.hits());
        for (i, op) in ops.iter().enumerate() {
            s.push_str(&format!(
                "  #{i:02} {op:?} -> {:?}\n",
                outcomes.get(i).unwrap_or(&Outcome::NotRun)
            ));
        }
        s
    };
    match builder(dir.path(), d).io_driver(driver).open() {
        Err(e) => {
            assert!(
                matches!(e, Error::BackendIo(_)),
                "open under fault failed with a non-I/O error {e:?}\n{}",
                repro(&outcomes, &inj)
            );
            assert!(
                !inj.hits().is_empty(),
                "open failed without an injected fault: {e:?}"
            );
            outcomes.extend(ops.iter().map(|_| Outcome::NotRun));
        }
        Ok(t) => {
            // `old` values are checked only while the state is certain.
            let mut model = base.clone();
            let mut certain = true;
            for op in &ops {
                let before = model.get(match op {
                    Op::Put(k, _) | Op::Delete(k) => k.as_slice(),
                    _ => b"".as_slice(),
                });
                let before = before.map(|v| v.to_vec());
                let res = match op {
                    Op::Put(k, v) => t.put(k, v).map(|old| {
                        if certain {
                            assert_eq!(
                                old,
                                before,
                                "put returned a wrong old value\n{}",
                                repro(&outcomes, &inj)
                            );
                        }
                    }),
                    Op::Delete(k) => t.delete(k).map(|old| {
                        if certain {
                            assert_eq!(
                                old,
                                before,
                                "delete returned a wrong old value\n{}",
                                repro(&outcomes, &inj)
                            );
                        }
                    }),
                    _ => run(&t, op),
                };
                match res {
                    Ok(()) => {
                        assert!(
                            apply(&mut model, op) || !certain,
                            "model refused acked op {op:?}"
                        );
                        outcomes.push(Outcome::Acked);
                    }
                    Err(Error::Poisoned) => outcomes.push(Outcome::Refused),
                    Err(Error::BackendIo(e)) => {
                        assert!(
                            !inj.hits().is_empty(),
                            "op {op:?} failed with {e} but no fault was injected\n{}",
                            repro(&outcomes, &inj)
                        );
                        if !matches!(op, Op::Checkpoint) {
                            certain = false;
                        }
                        outcomes.push(Outcome::InFlight(e.to_string()));
                    }
                    Err(e) => panic!(
                        "op {op:?} failed with unexpected error {e:?}\n{}",
                        repro(&outcomes, &inj)
                    ),
                }
            }
            // Reads keep working after any fault, and the live tree is in
            // one of the allowed states (a txn is never half-visible).
            inj.disarm();
            let cands = candidates(&base, &ops, &outcomes);
            match dump(&t) {
                Ok(live) => assert!(
                    cands.contains(&live),
                    "live tree after the fault is in no allowed state:\n{}\nvs acked-only:\n{}",
                    repro(&outcomes, &inj),
                    diff(&cands[0], &live)
                ),
                Err(e) => panic!(
                    "reads fail after the fault: {e:?}\n{}",
                    repro(&outcomes, &inj)
                ),
            }
            drop(t);
        }
    }
    let hit = !inj.hits().is_empty();
    // Reopen with a clean driver: every acknowledged op, nothing half done.
    let cands = candidates(&base, &ops, &outcomes);
    let t = builder(dir.path(), d).open().unwrap_or_else(|e| {
        panic!(
            "reopen after the fault failed: {e:?}\n{}",
            repro(&outcomes, &inj)
        )
    });
    let got = dump(&t)
        .unwrap_or_else(|e| panic!("reads after reopen fail: {e:?}\n{}", repro(&outcomes, &inj)));
    assert!(
        cands.contains(&got),
        "recovered state is not the acknowledged ops (+ the in-flight op whole):\n{}\ndiff vs acked-only:\n{}",
        repro(&outcomes, &inj),
        diff(&cands[0], &got)
    );
    // The reopened tree is writable, checkpoints, and releases old WAL.
    t.put(b"after/reopen", b"ok").unwrap();
    t.checkpoint().unwrap();
    assert!(
        retired_wal_files(dir.path()).is_empty(),
        "retired WAL files left after a successful checkpoint: {:?}\n{}",
        retired_wal_files(dir.path()),
        repro(&outcomes, &inj)
    );
    drop(t);
    let t = builder(dir.path(), d).open().unwrap();
    let mut want = got;
    want.insert(b"after/reopen".to_vec(), Arc::new(b"ok".to_vec()));
    assert_eq!(
        dump(&t).unwrap(),
        want,
        "second reopen lost data\n{}",
        repro(&outcomes, &inj)
    );
    let counts = inj.counts();
    RunReport { hit, counts }
}

/// Runs the sweep N = 1, 2, … for one kind until a run is not hit.
/// A failing run does not stop the sweep: every failing N is collected
/// and the sweep panics at the end with all of them. Returns the number of
/// fault points covered.
fn sweep(
    d: Driver,
    kind: Kind,
    err: io::ErrorKind,
    sticky: bool,
    file: Option<&'static str>,
) -> u64 {
    let t0 = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut n = 1;
    loop {
        let plan = Plan {
            sticky,
            file,
            torn: true,
            ..Plan::nth(kind, n, err)
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| fault_run(&plan, d))) {
            Ok(report) if !report.hit => break,
            Ok(_) => {}
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                failures.push(format!("N={n}: {msg}"));
            }
        }
        n += 1;
        assert!(n < 10_000, "sweep does not terminate");
    }
    eprintln!(
        "sweep {} {kind:?} {err:?} sticky={sticky} file={file:?}: {} fault points, {} failing, in {:.1?}",
        d.name(),
        n - 1,
        failures.len(),
        t0.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} fault points failed ({} driver, {kind:?}, {err:?}, sticky={sticky}):\n\n{}",
        failures.len(),
        n - 1,
        d.name(),
        failures.join("\n\n")
    );
    n - 1
}

// ------------------------------------------------------------ sweeps

/// Every write (WAL appends, frame writes, manifest writes) failing once
/// with EIO after a short write. Fails if, e.g., a WAL write error did not
/// poison the WAL and a later append landed after a torn record (reopen
/// would cut the later, acknowledged records as a torn tail), or if a
/// failed frame batch remapped guids to half-written slots.
fn sweep_write_eio(d: Driver) {
    let n = sweep(d, Kind::Write, io::ErrorKind::Other, false, None);
    assert!(n >= 20, "only {n} write fault points");
}

/// Every write failing with EIO from the N-th on (the device is gone).
/// Fails if any acknowledged op depended on a write that never happened,
/// e.g. if `put` acknowledged before its WAL write returned.
fn sweep_write_eio_sticky(d: Driver) {
    let n = sweep(d, Kind::Write, io::ErrorKind::Other, true, None);
    assert!(n >= 20, "only {n} write fault points");
}

/// Every write failing once with `StorageFull`. A full disk during a
/// checkpoint must not poison the tree, and the next checkpoint must
/// succeed; fails if a failed round dropped its drained dirty entries
/// instead of merging them back (I3): the later checkpoint would then
/// release WAL records whose frames were never written.
fn sweep_write_storage_full(d: Driver) {
    let n = sweep(d, Kind::Write, io::ErrorKind::StorageFull, false, None);
    assert!(n >= 20, "only {n} write fault points");
}

/// Every `sync_data`/`sync_all` (WAL commit syncs, data-file sync,
/// manifest sync) failing once. Fails if a failed WAL sync were retried
/// and reported as success (fsyncgate: the dirty pages may be gone), or if
/// the manifest were renamed in place after its own sync failed.
fn sweep_sync_eio(d: Driver) {
    let n = sweep(d, Kind::Sync, io::ErrorKind::Other, false, None);
    assert!(n >= 20, "only {n} sync fault points");
}

/// Every sync failing from the N-th on.
fn sweep_sync_eio_sticky(d: Driver) {
    let n = sweep(d, Kind::Sync, io::ErrorKind::Other, true, None);
    assert!(n >= 20, "only {n} sync fault points");
}

/// Renames (WAL rotation, manifest replace) failing once. Fails if a
/// failed WAL rotation let new records go to a file the recovery scan
/// does not read, or if a failed manifest rename still released the WAL.
fn sweep_rename_eio(d: Driver) {
    let n = sweep(d, Kind::Rename, io::ErrorKind::Other, false, None);
    assert!(n >= 2, "only {n} rename fault points");
}

/// Directory fsyncs failing once (after rotation, after the manifest
/// rename, at open). Fails if the WAL files covered by a checkpoint were
/// deleted although the manifest's directory entry was not known durable.
fn sweep_sync_dir_eio(d: Driver) {
    let n = sweep(d, Kind::SyncDir, io::ErrorKind::Other, false, None);
    assert!(n >= 3, "only {n} sync_dir fault points");
}

/// Directory fsync failing with `StorageFull` (not poisoning): the
/// manifest may or may not be in place; the tree keeps writing and the
/// next checkpoint must make everything durable.
fn sweep_sync_dir_storage_full(d: Driver) {
    let n = sweep(d, Kind::SyncDir, io::ErrorKind::StorageFull, false, None);
    assert!(n >= 3, "only {n} sync_dir fault points");
}

/// Removes (stale `MANIFEST.tmp` at open, retired WAL files after a
/// checkpoint) failing once. A failed WAL release must be retried by a
/// later round (the check after reopen asserts no retired file is left).
fn sweep_remove_eio(d: Driver) {
    let n = sweep(d, Kind::Remove, io::ErrorKind::Other, false, None);
    assert!(n >= 2, "only {n} remove fault points");
}

/// Reads (manifest, WAL scan, frame loads with a 1-frame buffer pool)
/// failing once. A read error must fail the one operation cleanly: fails
/// if a txn whose frame load failed midway stayed half applied.
fn sweep_read_eio(d: Driver) {
    let n = sweep(d, Kind::Read, io::ErrorKind::Other, false, None);
    assert!(n >= 3, "only {n} read fault points");
}

/// `set_len`/`allocate` (data-file growth, manifest truncation, torn-tail
/// cut) failing once, with EIO and with `StorageFull`.
fn sweep_alloc_eio_and_storage_full(d: Driver) {
    let a = sweep(d, Kind::Alloc, io::ErrorKind::Other, false, None);
    let b = sweep(d, Kind::Alloc, io::ErrorKind::StorageFull, false, None);
    assert!(a >= 1 && b >= 1, "only {a}/{b} alloc fault points");
}

/// Opens (data file, manifest, WAL files, `MANIFEST.tmp`, the fresh
/// `journal.wal` after rotation) failing once.
fn sweep_open_eio(d: Driver) {
    let n = sweep(d, Kind::Open, io::ErrorKind::Other, false, None);
    assert!(n >= 3, "only {n} open fault points");
}

// ------------------------------------------------------------ targeted

fn injector_tree(dir: &Path, d: Driver) -> (Tree, Arc<Injector>) {
    let (driver, inj) = Injector::wrap(d.io());
    (builder(dir, d).io_driver(driver).open().unwrap(), inj)
}

/// Disk full while a checkpoint writes its frames: the checkpoint fails
/// with `StorageFull`, reads and writes keep working (the tree is not
/// poisoned), and once space returns the next checkpoint succeeds and
/// releases the WAL; after reopen everything is there. Fails if a
/// disk-full checkpoint poisoned the tree, or if the failed round lost its
/// drained dirty frames (the later checkpoint would not rewrite them and
/// reopen would miss the writes made before the failure).
fn storage_full_on_checkpoint_frame_write_does_not_poison(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let (t, inj) = injector_tree(dir.path(), d);
    let mut model = Model::new();
    for i in 0..12u32 {
        let k = format!("k/{i:02}").into_bytes();
        let v = val(&format!("v{i}"), if i % 3 == 0 { BIG } else { 100 });
        t.put(&k, &v).unwrap();
        model.insert(k, Arc::new(v));
    }
    inj.arm(Plan {
        kinds: &[Kind::Write],
        torn: true,
        nth: 1,
        err: io::ErrorKind::StorageFull,
        sticky: true,
        file: Some("frames.dat"),
    });
    for attempt in 0..2 {
        match t.checkpoint() {
            Err(Error::BackendIo(e)) if e.kind() == io::ErrorKind::StorageFull => {}
            other => {
                panic!("attempt {attempt}: expected StorageFull from checkpoint, got {other:?}")
            }
        }
    }
    assert!(!inj.hits().is_empty());
    // Reads work.
    for (k, v) in &model {
        assert_eq!(get(&t, k).unwrap().as_ref(), Some(v));
    }
    assert_eq!(dump(&t).unwrap(), model);
    // Writes work: not poisoned.
    for i in 0..6u32 {
        let k = format!("k/{i:02}").into_bytes();
        let v = val(&format!("w{i}"), 200);
        t.put(&k, &v).unwrap();
        model.insert(k, Arc::new(v));
    }
    t.delete(b"k/07").unwrap();
    model.remove(b"k/07".as_slice());
    t.rename(b"k/08", b"k/88", false).unwrap();
    let v = model.remove(b"k/08".as_slice()).unwrap();
    model.insert(b"k/88".to_vec(), v);
    // Space returns: the next checkpoint succeeds and covers everything.
    inj.disarm();
    t.checkpoint().unwrap();
    assert_eq!(t.stats().unwrap().bm_dirty_count, 0);
    assert!(
        retired_wal_files(dir.path()).is_empty(),
        "{:?}",
        retired_wal_files(dir.path())
    );
    t.put(b"k/after", b"x").unwrap();
    model.insert(b"k/after".to_vec(), Arc::new(b"x".to_vec()));
    drop(t);
    let t = builder(dir.path(), d).open().unwrap();
    assert_eq!(dump(&t).unwrap(), model);
    // The checkpoint alone (no WAL) holds the pre-failure writes too.
    drop(t);
    std::fs::write(dir.path().join("journal.wal"), b"").unwrap();
    let t = builder(dir.path(), d).open().unwrap();
    model.remove(b"k/after".as_slice());
    assert_eq!(
        dump(&t).unwrap(),
        model,
        "checkpoint after the disk-full round is incomplete"
    );
}

/// EIO on a WAL commit sync: that put fails with the I/O error, every
/// later write is refused with `Poisoned` (put, delete, rename, txn,
/// checkpoint), while `get` and range scans keep answering; after reopen
/// the tree is writable again and every acknowledged write is there.
/// Fails if the engine retried the failed fsync and carried on (a later
/// acknowledged write could then sit behind records the kernel dropped).
fn eio_on_wal_sync_poisons_writes_until_reopen(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let (t, inj) = injector_tree(dir.path(), d);
    for i in 0..10u32 {
        t.put(format!("k/{i}").as_bytes(), b"v1").unwrap();
    }
    inj.arm(Plan {
        kinds: &[Kind::Sync],
        torn: true,
        nth: 1,
        err: io::ErrorKind::Other,
        sticky: false,
        file: Some("journal.wal"),
    });
    match t.put(b"k/inflight", b"v") {
        Err(Error::BackendIo(e)) => assert_eq!(e.kind(), io::ErrorKind::Other),
        other => panic!("expected the injected EIO, got {other:?}"),
    }
    assert_eq!(inj.hits().len(), 1);
    let syncs = inj.count(Kind::Sync);
    assert!(matches!(t.put(b"k/x", b"v"), Err(Error::Poisoned)));
    assert!(matches!(t.delete(b"k/1"), Err(Error::Poisoned)));
    assert!(matches!(
        t.rename(b"k/1", b"k/y", false),
        Err(Error::Poisoned)
    ));
    assert!(matches!(
        t.txn(|b| b.put(b"k/z", b"v")),
        Err(Error::Poisoned)
    ));
    assert!(
        t.checkpoint().is_err(),
        "checkpoint of a poisoned tree succeeded"
    );
    assert!(
        matches!(t.put(b"k/x", b"v"), Err(Error::Poisoned)),
        "still poisoned after checkpoint"
    );
    assert_eq!(
        inj.count(Kind::Sync),
        syncs,
        "a poisoned tree retried a sync"
    );
    for i in 0..10u32 {
        assert_eq!(
            t.get(format!("k/{i}").as_bytes()).unwrap(),
            Some(b"v1".to_vec())
        );
    }
    assert_eq!(t.get(b"k/x").unwrap(), None);
    assert_eq!(
        dump(&t).unwrap().len() as u32,
        10 + u32::from(t.get(b"k/inflight").unwrap().is_some())
    );
    drop(t);
    let t = builder(dir.path(), d).open().unwrap();
    for i in 0..10u32 {
        assert_eq!(
            t.get(format!("k/{i}").as_bytes()).unwrap(),
            Some(b"v1".to_vec())
        );
    }
    t.put(b"k/x", b"v2").unwrap();
    t.delete(b"k/1").unwrap();
    t.checkpoint().unwrap();
    drop(t);
    let t = builder(dir.path(), d).open().unwrap();
    assert_eq!(t.get(b"k/x").unwrap(), Some(b"v2".to_vec()));
    assert_eq!(t.get(b"k/1").unwrap(), None);
}

/// The workload itself is sound: without faults every op is acknowledged
/// and the reopened state equals the model (guards the sweeps against a
/// workload whose ops the model refuses).
fn workload_without_faults_round_trips(d: Driver) {
    let plan = Plan {
        kinds: &[Kind::Write],
        torn: true,
        nth: u64::MAX,
        err: io::ErrorKind::Other,
        sticky: false,
        file: None,
    };
    let report = fault_run(&plan, d);
    assert!(!report.hit);
    eprintln!("calls by kind in the fault phase: {:?}", report.counts);
    let mut m = Model::new();
    for op in base_ops().iter().chain(fault_ops().iter()) {
        assert!(apply(&mut m, op), "model refuses {op:?}");
    }
}

/// Opens the base tree (several frames) through a fault driver whose
/// frame reads all fail, and returns a key that lives in a frame that is
/// not cached (its `get` fails) plus the tree.
fn tree_with_uncached_frame(dir: &Path, d: Driver) -> (Tree, Arc<Injector>, Model, Vec<u8>) {
    let model = build_base(dir, d);
    let (t, inj) = injector_tree(dir, d);
    inj.arm(Plan {
        kinds: &[Kind::Read],
        torn: true,
        nth: 1,
        err: io::ErrorKind::Other,
        sticky: true,
        file: Some("frames.dat"),
    });
    let far = (1..=14)
        .map(|i| format!("big/{i}").into_bytes())
        .find(|k| get(&t, k).is_err())
        .expect("some big key lives in a child frame that is not cached after open");
    assert_eq!(
        get(&t, b"a/1").unwrap().as_ref(),
        model.get(b"a/1".as_slice()),
        "a/1 is in the cached root frame"
    );
    (t, inj, model, far)
}

/// A txn whose apply step needs a frame load that fails (EIO on a read of
/// `frames.dat`) must apply nothing: the txn {delete a/1, put <key in an
/// uncached frame>} returns the I/O error, and `a/1` must still be there —
/// in the live tree, and after a checkpoint and reopen. Fails if the
/// batch's frames were not all loaded before the first op is applied: the
/// delete of `a/1` would stay applied when the put's frame load fails, the
/// checkpoint would persist the half-applied frames at a cut past the
/// txn's WAL record, and the reopened tree would have the txn half applied
/// for good (it did, before the engine loaded every frame up front).
fn txn_failing_on_a_frame_load_applies_nothing(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let (t, inj, model, far) = tree_with_uncached_frame(dir.path(), d);
    let res = t.txn(|b| {
        b.delete(b"a/1");
        b.put(&far, b"new value");
    });
    assert!(
        matches!(res, Err(Error::BackendIo(_))),
        "txn over a failing frame load: {res:?}"
    );
    inj.disarm();
    let live_a1 = get(&t, b"a/1").unwrap();
    let live_far = get(&t, &far).unwrap();
    t.checkpoint().unwrap();
    drop(t);
    let t = builder(dir.path(), d).open().unwrap();
    let (a1, far_v) = (get(&t, b"a/1").unwrap(), get(&t, &far).unwrap());
    let whole =
        a1.is_none() && far_v.as_deref().map(Vec::as_slice) == Some(b"new value".as_slice());
    let none = a1.as_ref() == model.get(b"a/1".as_slice()) && far_v.as_ref() == model.get(&far);
    assert!(
        (whole || none) && live_a1.as_ref() == model.get(b"a/1".as_slice()),
        "failed txn half applied: live a/1={:?} {}={:?}; after reopen a/1={:?} {}={:?}",
        live_a1.map(|v| short(&v)),
        short(&far),
        live_far.map(|v| short(&v)),
        a1.map(|v| short(&v)),
        short(&far),
        far_v.map(|v| short(&v)),
    );
}

/// `rename(src, dst, force = true)` whose destination frame fails to load
/// must change nothing. Fails the same way as the txn above, with worse
/// effect, if the delete of `src` could be applied before the put of
/// `dst` fails: after a checkpoint the value would be gone from the tree
/// and from the WAL.
fn forced_rename_failing_on_a_frame_load_loses_nothing(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let (t, inj, model, far) = tree_with_uncached_frame(dir.path(), d);
    let res = t.rename(b"a/1", &far, true);
    assert!(
        matches!(res, Err(Error::BackendIo(_))),
        "rename over a failing frame load: {res:?}"
    );
    inj.disarm();
    let live_a1 = get(&t, b"a/1").unwrap();
    t.checkpoint().unwrap();
    drop(t);
    let t = builder(dir.path(), d).open().unwrap();
    let a1 = get(&t, b"a/1").unwrap();
    let far_v = get(&t, &far).unwrap();
    let moved = a1.is_none() && far_v.as_ref() == model.get(b"a/1".as_slice());
    let unchanged =
        a1.as_ref() == model.get(b"a/1".as_slice()) && far_v.as_ref() == model.get(&far);
    assert!(
        (moved || unchanged) && live_a1.as_ref() == model.get(b"a/1".as_slice()),
        "failed rename lost the value: live a/1={:?}; after reopen a/1={:?} {}={:?}",
        live_a1.map(|v| short(&v)),
        a1.map(|v| short(&v)),
        short(&far),
        far_v.map(|v| short(&v)),
    );
}

/// One-shot read faults at every frame load of one large txn (a put into
/// every big key, spread over several frames, plus a delete) with a
/// 1-frame buffer pool, so frames located during validation are evicted
/// again before the apply step reloads them. For every N the txn must be
/// all-or-nothing: in the live tree right after the error, and after a
/// checkpoint and a reopen. Fails if a frame load failing midway through
/// the apply left the earlier puts applied (the checkpoint would then
/// persist the half-applied frames at a cut past the txn's WAL record).
fn txn_read_fault_sweep_is_all_or_nothing(d: Driver) {
    let base_dir = tempfile::tempdir().unwrap();
    // 40 values of 50 kB under 5 prefixes: several frames.
    let mut base = Model::new();
    {
        let t = builder(base_dir.path(), d).open().unwrap();
        for i in 0..40 {
            let op = put(&format!("p{}/big{i:02}", i % 5), &format!("b{i}.0"), 50_000);
            run(&t, &op).unwrap();
            apply(&mut base, &op);
        }
        run(&t, &put("a/1", "a1.0", 40)).unwrap();
        apply(&mut base, &put("a/1", "a1.0", 40));
        t.checkpoint().unwrap();
        assert!(t.stats().unwrap().blob_count >= 4);
    }
    let files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(base_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "LOCK")
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let txn: Vec<Op> = (0..40)
        .step_by(3)
        .map(|i| {
            put(
                &format!("p{}/big{i:02}", i % 5),
                &format!("b{i}.txn"),
                1000 + i * 1000,
            )
        })
        .chain([del("a/1")])
        .collect();
    let mut after = base.clone();
    assert!(apply(&mut after, &Op::Txn(txn.clone())));
    let txn_keys: Vec<Vec<u8>> = txn
        .iter()
        .map(|o| match o {
            Op::Put(k, _) | Op::Delete(k) => k.clone(),
            _ => unreachable!(),
        })
        .collect();
    let mut failures = Vec::new();
    let mut n = 1;
    loop {
        let dir = tempfile::tempdir().unwrap();
        for (p, b) in &files {
            std::fs::write(dir.path().join(p.file_name().unwrap()), b).unwrap();
        }
        let (t, inj) = injector_tree(dir.path(), d);
        inj.arm(Plan {
            kinds: &[Kind::Read],
            torn: true,
            nth: n,
            err: io::ErrorKind::Other,
            sticky: false,
            file: Some("frames.dat"),
        });
        let res = run(&t, &Op::Txn(txn.clone()));
        inj.disarm();
        let hit = !inj.hits().is_empty();
        let live = dump(&t).unwrap();
        let verdict = |m: &Model| -> &'static str {
            if *m == base {
                "none"
            } else if *m == after {
                "whole"
            } else {
                "HALF"
            }
        };
        let live_v = verdict(&live);
        t.checkpoint().unwrap();
        drop(t);
        let reopened = dump(&builder(dir.path(), d).open().unwrap()).unwrap();
        let re_v = verdict(&reopened);
        if live_v == "HALF" || re_v == "HALF" || (res.is_ok() && re_v != "whole") {
            let applied: Vec<String> = txn_keys
                .iter()
                .filter(|k| reopened.get(*k) == after.get(*k))
                .map(|k| short(k))
                .collect();
            failures.push(format!(
                "N={n} ({:?}): txn -> {:?}; live {live_v}, after checkpoint + reopen {re_v}; keys at their txn value after reopen: {applied:?}",
                inj.hits(),
                res.as_ref().map_err(|e| e.to_string())
            ));
        }
        if !hit {
            break;
        }
        n += 1;
    }
    eprintln!(
        "txn read-fault sweep: {} fault points, {} failing",
        n - 1,
        failures.len()
    );
    assert!(n > 3, "the txn loaded too few frames: {n}");
    assert!(
        failures.is_empty(),
        "txn not all-or-nothing under read faults:\n{}",
        failures.join("\n")
    );
}

per_driver!(
    sweep_write_eio,
    sweep_write_eio_sticky,
    sweep_write_storage_full,
    sweep_sync_eio,
    sweep_sync_eio_sticky,
    sweep_rename_eio,
    sweep_sync_dir_eio,
    sweep_sync_dir_storage_full,
    sweep_remove_eio,
    sweep_read_eio,
    sweep_alloc_eio_and_storage_full,
    sweep_open_eio,
    storage_full_on_checkpoint_frame_write_does_not_poison,
    eio_on_wal_sync_poisons_writes_until_reopen,
    workload_without_faults_round_trips,
    txn_failing_on_a_frame_load_applies_nothing,
    forced_rename_failing_on_a_frame_load_loses_nothing,
    txn_read_fault_sweep_is_all_or_nothing,
);
