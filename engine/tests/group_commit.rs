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

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use holt::io::{AlignedBuf, IoDriver, IoFile, OpenOptions, SyncDriver};
use holt::TreeBuilder;

/// Forwards to the sync driver; `sync_data` sleeps first.
#[derive(Debug)]
struct SlowSync(SyncDriver);

#[derive(Debug)]
struct SlowFile(Arc<dyn IoFile>);

const SYNC_DELAY: Duration = Duration::from_millis(4);

impl IoDriver for SlowSync {
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Arc<dyn IoFile>> {
        Ok(Arc::new(SlowFile(self.0.open(path, opts)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.0.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn name(&self) -> &'static str {
        "slow-sync"
    }
    fn alloc_buffer(&self, len: usize) -> io::Result<AlignedBuf> {
        self.0.alloc_buffer(len)
    }
}

impl IoFile for SlowFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(SYNC_DELAY);
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.allocate(offset, len)
    }
    fn is_direct(&self) -> bool {
        self.0.is_direct()
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
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
        .io_driver(Arc::new(SlowSync(SyncDriver::new())))
        .open()
        .unwrap();
    let before = tree.wal_stats().unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let tree = tree.clone();
            s.spawn(move || {
                for j in 0..PER {
                    let key = format!("t{t}/k{:04}", (j * 37) % PER);
                    tree.put(key.as_bytes(), b"v").unwrap();
                }
            });
        }
    });
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
        .io_driver(Arc::new(SlowSync(SyncDriver::new())))
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
