#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Group commit: with `wal_sync_on_commit(true)`, concurrent committers
//! share fdatasyncs.
//!
//! The WAL's `sync_data` is slowed to a few milliseconds by a wrapping
//! driver, so every commit arrives while a sync is in flight and the test
//! does not depend on the disk's speed. Deliberate bugs that make it fail:
//! a leader that syncs only its own record (each commit syncs alone:
//! syncs/commit = 1), and a leader that syncs the buffer without gathering
//! the committers the last sync released (two halves of the crowd
//! alternate: syncs/commit = 1/2).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::hooked::{Call, Hook, HookedDriver, Kind, Verdict};
use holt::io::{IoDriver, SyncDriver};
use holt::TreeBuilder;

const SYNC_DELAY: Duration = Duration::from_millis(4);

/// Slows every `sync_data` by [`SYNC_DELAY`]; with `writes`, also records
/// every write to a WAL file made by a worker thread.
#[derive(Debug, Default)]
struct SlowSync {
    writes: Option<Writes>,
}

impl Hook for SlowSync {
    fn before(&self, call: &Call<'_>) -> Verdict {
        if call.method == "sync_data" {
            std::thread::sleep(SYNC_DELAY);
        }
        if let Some(writes) = &self.writes {
            let worker = WORKER.with(std::cell::Cell::get);
            let wal = call.path.extension().is_some_and(|e| e == "wal");
            if call.kind == Kind::Write && wal && worker > 0 {
                writes.lock().unwrap().push((worker, call.data.to_vec()));
            }
        }
        Verdict::Forward
    }
}

/// The sync driver under `hook`.
fn slow(hook: SlowSync) -> Arc<dyn IoDriver> {
    HookedDriver::new(Arc::new(SyncDriver::new()), Arc::new(hook))
}

thread_local! {
    /// Which worker thread this is (1-based; 0 for every other thread).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// (worker, bytes) of every WAL write made by a worker thread.
type Writes = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

/// `threads` threads put `per` keys each (`t<t>/k<j>`, in a scrambled
/// order), all at once.
fn commit_concurrently(tree: &holt::Tree, threads: usize, per: usize) {
    std::thread::scope(|s| {
        for t in 0..threads {
            let tree = tree.clone();
            s.spawn(move || {
                for j in 0..per {
                    let key = format!("t{t}/k{:04}", (j * 37) % per);
                    tree.put(key.as_bytes(), b"v").unwrap();
                }
            });
        }
    });
}

/// Four threads committing at once share each fdatasync: well under one
/// sync per three commits (ideal: one per four; without gathering about
/// one per two), and every commit is there
/// after a reopen.
#[test]
fn concurrent_committers_share_fsyncs() {
    const THREADS: usize = 4;
    const PER: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let tree = TreeBuilder::new(dir.path())
        .wal_sync_on_commit(true)
        .io_driver(slow(SlowSync::default()))
        .open()
        .unwrap();
    let before = tree.wal_stats().unwrap();
    commit_concurrently(&tree, THREADS, PER);
    let after = tree.wal_stats().unwrap();
    let commits = after.sync_commits - before.sync_commits;
    let syncs = after.syncs - before.syncs;
    assert_eq!(commits, (THREADS * PER) as u64);
    assert_eq!(after.records - before.records, (THREADS * PER) as u64);
    let ratio = syncs as f64 / commits as f64;
    assert!(
        ratio < 0.35,
        "{syncs} syncs for {commits} commits ({ratio:.2} per commit): committers do not share syncs"
    );
    drop(tree);
    let tree = TreeBuilder::new(dir.path()).open().unwrap();
    for t in 0..THREADS {
        for j in 0..PER {
            let key = format!("t{t}/k{j:04}");
            assert_eq!(
                tree.get(key.as_bytes()).unwrap().as_deref(),
                Some(&b"v"[..])
            );
        }
    }
}

/// A lone committer pays one sync per commit: nothing is skipped when
/// nobody else is around (a leader that returned before its sync would
/// count fewer).
#[test]
fn a_lone_committer_syncs_each_commit() {
    const N: u64 = 30;
    let dir = tempfile::tempdir().unwrap();
    let tree = TreeBuilder::new(dir.path())
        .wal_sync_on_commit(true)
        .io_driver(slow(SlowSync::default()))
        .open()
        .unwrap();
    let before = tree.wal_stats().unwrap();
    for j in 0..N {
        tree.put(format!("k{j}").as_bytes(), b"v").unwrap();
    }
    let after = tree.wal_stats().unwrap();
    assert_eq!(after.syncs - before.syncs, N);
    assert_eq!(after.sync_commits - before.sync_commits, N);
}

/// Where the last record of worker `w` starts in `buf`, if it has one
/// (each worker's keys carry the tag `<w{w}>`).
fn last_record_of(buf: &[u8], w: usize) -> Option<usize> {
    let tag = format!("<w{w}>");
    buf.windows(tag.len()).rposition(|x| x == tag.as_bytes())
}

/// Taking over from the gatherer: when a sync covers several committers,
/// it is issued by the one whose record completed the crowd, i.e. the
/// thread that writes a batch holding other threads' records owns the
/// batch's *last* record (the gatherer, whose record comes first, stays
/// parked). Checked on the bytes each worker thread writes to the WAL:
/// in most multi-thread batches the writer's own record is the last one
/// (a gatherer timing out on a busy machine may issue a few itself).
/// Deliberate bug that makes it fail: the gatherer leads every round, the
/// completing committer parking instead of taking over (the writer's
/// record then comes first in nearly every such batch).
#[test]
fn the_committer_completing_the_crowd_issues_the_sync() {
    const THREADS: usize = 4;
    const PER: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let writes = Writes::default();
    let tree = TreeBuilder::new(dir.path())
        .wal_sync_on_commit(true)
        .io_driver(slow(SlowSync {
            writes: Some(Arc::clone(&writes)),
        }))
        .open()
        .unwrap();
    std::thread::scope(|s| {
        for t in 1..=THREADS {
            let tree = tree.clone();
            s.spawn(move || {
                WORKER.with(|w| w.set(t));
                for j in 0..PER {
                    let key = format!("<w{t}>/k{j:04}");
                    tree.put(key.as_bytes(), b"v").unwrap();
                }
            });
        }
    });
    drop(tree);
    let writes = writes.lock().unwrap();
    let (mut shared, mut by_last) = (0, 0);
    for (writer, buf) in writes.iter() {
        let starts: Vec<(usize, usize)> = (1..=THREADS)
            .filter_map(|w| last_record_of(buf, w).map(|at| (at, w)))
            .collect();
        if starts.len() < 2 {
            continue;
        }
        shared += 1;
        if starts.iter().max().map(|&(_, w)| w) == Some(*writer) {
            by_last += 1;
        }
    }
    assert!(
        shared >= 10,
        "only {shared} WAL writes held several threads' records"
    );
    assert!(
        by_last * 2 > shared,
        "of {shared} writes holding several threads' records, only {by_last} were issued by \
         the thread owning the last record: the gatherer leads instead of the committer \
         completing the crowd"
    );
}

/// `wal_spin_waiters` bounds the committers that spin while another
/// thread's sync is in flight: by default four committers spin (while
/// a slowed sync runs, most commits wait for one), with 0 none does, and
/// every commit is durable either way. Fails if the builder's setting is
/// not handed to the WAL (the second tree then spins too).
#[test]
fn spinning_waiters_follow_the_builder_setting() {
    for limit in [None, Some(0)] {
        let dir = tempfile::tempdir().unwrap();
        let mut b = TreeBuilder::new(dir.path())
            .wal_sync_on_commit(true)
            .io_driver(slow(SlowSync::default()));
        if let Some(n) = limit {
            b = b.wal_spin_waiters(n);
        }
        let tree = b.open().unwrap();
        commit_concurrently(&tree, 4, 20);
        let w = tree.wal_stats().unwrap();
        assert_eq!(w.sync_commits, 80);
        match limit {
            None => assert!(w.spins > 0, "no waiter spun with the default limit"),
            Some(_) => assert_eq!(w.spins, 0, "a waiter spun with spinning off"),
        }
    }
}
