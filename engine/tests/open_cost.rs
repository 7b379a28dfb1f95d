#![allow(clippy::unwrap_used, clippy::expect_used)]

//! What an open costs in I/O after a clean close, and the durability the
//! deferred WAL work still gives.
//!
//! After a checkpoint and a clean close the active WAL file is empty: the
//! open syncs nothing (no fdatasync, no directory fsync) and opens the file
//! once. The directory entry's sync then comes with the first synced
//! commit. Deliberate bugs that make these tests fail: syncing the WAL at
//! every open (the no-sync assertion), dropping the deferred directory
//! sync (the first commit's assertion), and skipping the open-time sync of
//! a non-empty WAL left by an earlier process (the last assertion).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::hooked::{Call, Hook, HookedDriver, Kind, Verdict};
use holt::io::{IoDriver, SyncDriver};
use holt::TreeBuilder;

/// Counts calls by kind ("open journal.wal", "sync_data", "sync_dir", ...).
#[derive(Debug, Default)]
struct Calls(Mutex<HashMap<String, u64>>);

impl Calls {
    fn get(&self, what: &str) -> u64 {
        self.0.lock().unwrap().get(what).copied().unwrap_or(0)
    }
    fn syncs(&self) -> u64 {
        self.get("sync_data") + self.get("sync_all") + self.get("sync_dir")
    }
}

impl Hook for Calls {
    fn before(&self, call: &Call<'_>) -> Verdict {
        let what = match call.kind {
            Kind::Open => {
                let name = call.path.file_name().unwrap_or_default();
                format!("open {}", name.to_string_lossy())
            }
            Kind::Sync | Kind::SyncDir => call.method.to_owned(),
            _ => return Verdict::Forward,
        };
        *self.0.lock().unwrap().entry(what).or_default() += 1;
        Verdict::Forward
    }
}

/// The sync driver, counting its calls into the returned [`Calls`].
fn counting() -> (Arc<dyn IoDriver>, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let d = HookedDriver::new(Arc::new(SyncDriver::new()), calls.clone());
    (d, calls)
}

fn key(i: u32) -> Vec<u8> {
    format!("/bucket/dir{:02}/object-{i:05}", i % 7).into_bytes()
}

#[test]
fn open_after_clean_close_syncs_nothing_and_first_commit_syncs_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let t = TreeBuilder::new(dir.path()).open().unwrap();
        for i in 0..2000 {
            t.put(&key(i), &i.to_le_bytes()).unwrap();
        }
        t.checkpoint().unwrap();
    }
    assert_eq!(
        std::fs::metadata(dir.path().join("journal.wal"))
            .unwrap()
            .len(),
        0,
        "a checkpoint right before a clean close leaves the active WAL empty"
    );

    let (driver, calls) = counting();
    let t = TreeBuilder::new(dir.path())
        .wal_sync_on_commit(true)
        .io_driver(driver)
        .open()
        .unwrap();
    assert_eq!(
        calls.syncs(),
        0,
        "open synced: {:?}",
        calls.0.lock().unwrap()
    );
    assert_eq!(
        calls.get("open journal.wal"),
        1,
        "the active WAL is opened once"
    );
    for i in (0..2000).step_by(97) {
        assert_eq!(
            t.get(&key(i)).unwrap().as_deref(),
            Some(&i.to_le_bytes()[..])
        );
    }

    // The first synced commit makes the file's directory entry durable;
    // later ones do not repeat it.
    t.put(b"/after/one", b"1").unwrap();
    assert_eq!(calls.get("sync_dir"), 1);
    assert_eq!(calls.get("sync_data"), 1);
    t.put(b"/after/two", b"2").unwrap();
    assert_eq!(calls.get("sync_dir"), 1);
    assert_eq!(calls.get("sync_data"), 2);
    // A crash: the records stay in the WAL, nothing is checkpointed.
    std::mem::forget(t);

    // A non-empty WAL from an earlier process may sit in the page cache
    // only: the open syncs it before new markers can vouch for it.
    let dir2 = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), dir2.path());
    let (driver, calls) = counting();
    let t = TreeBuilder::new(dir2.path())
        .io_driver(driver)
        .open()
        .unwrap();
    assert_eq!(t.get(b"/after/one").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(t.get(b"/after/two").unwrap().as_deref(), Some(&b"2"[..]));
    assert!(
        calls.get("sync_data") >= 1 && calls.get("sync_dir") >= 1,
        "a non-empty WAL was not synced at open: {:?}",
        calls.0.lock().unwrap()
    );
}

/// Copies the files of `from` (flat) into `to`, skipping the lock file,
/// so the copy can be opened while the leaked tree keeps `from` locked.
fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A fresh tree's WAL is created without a sync at open; a buffered-mode
/// session that never syncs a record still gets its records back after a
/// clean close (the close's sync covers the directory entry too).
#[test]
fn fresh_tree_defers_the_directory_sync_to_the_first_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, calls) = counting();
    {
        let t = TreeBuilder::new(dir.path())
            .io_driver(driver)
            .open()
            .unwrap();
        assert_eq!(
            calls.syncs(),
            0,
            "open synced: {:?}",
            calls.0.lock().unwrap()
        );
        t.put(b"k", b"v").unwrap();
        assert_eq!(calls.syncs(), 0, "a buffered put synced");
    }
    assert_eq!(
        calls.get("sync_dir"),
        1,
        "the close's sync covers the directory"
    );
    let t = TreeBuilder::new(dir.path()).open().unwrap();
    assert_eq!(t.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}
