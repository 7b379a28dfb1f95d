#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The WAL's zero-filled tail (docs/design.md "WAL records", "Recovery"):
//! with `wal_sync_on_commit(true)` a commit's sync that ends past the
//! zero-filled part of `journal.wal` zero-fills it up to the next MiB, so
//! later commits overwrite allocated space inside the file's size. The
//! log's logical end then lies below the file's end; these scenarios check
//! that reopening finds it and appends there, and that commits
//! acknowledged before a power loss survive. Each runs once per I/O driver.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::hooked::{Call, Hook, HookedDriver, Kind};
use common::{builder, per_driver, Driver};

/// The zero-filling granule (`wal::writer::group_commit::PREALLOC`).
const MIB: u64 = 1 << 20;

fn wal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("journal.wal")).unwrap().len()
}

/// A clean close leaves `journal.wal` with its zero-filled tail (the
/// checkpointer is off, so close only syncs the WAL); a reopen appends at
/// the logical end, over the zeros: the file does not grow, and a third
/// open reads every record of both sessions. Fails if the reopened writer
/// appended at the file's end instead (`Wal::open` given the file size as
/// its append point): the file grows to 2 MiB and the third open refuses
/// the zero gap that the second session's markers vouch for.
fn clean_reopen_appends_at_the_logical_end(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let put_range = |t: &holt::Tree, r: std::ops::Range<u32>| {
        for i in r {
            t.put(format!("k{i:04}").as_bytes(), &[i as u8; 100])
                .unwrap();
        }
    };
    {
        let t = builder(dir.path(), d)
            .wal_sync_on_commit(true)
            .open()
            .unwrap();
        put_range(&t, 0..50);
    }
    assert_eq!(wal_len(dir.path()), MIB, "commits zero-filled ahead");
    {
        let t = builder(dir.path(), d)
            .wal_sync_on_commit(true)
            .open()
            .unwrap();
        assert_eq!(t.get(b"k0049").unwrap(), Some(vec![49u8; 100]));
        put_range(&t, 50..100);
    }
    assert_eq!(wal_len(dir.path()), MIB, "appended inside the zero tail");
    let t = builder(dir.path(), d).open().unwrap();
    for i in 0..100u32 {
        let k = format!("k{i:04}");
        assert_eq!(
            t.get(k.as_bytes()).unwrap(),
            Some(vec![i as u8; 100]),
            "{k}"
        );
    }
}

/// What a power loss leaves: per file, the bytes as of its last sync.
/// As a hook, every successful `sync_data`/`sync_all` records the file's
/// whole contents as its durable image.
#[derive(Debug, Default)]
struct Durable {
    files: Mutex<HashMap<PathBuf, Vec<u8>>>,
}

impl Hook for Durable {
    fn after(&self, call: &Call<'_>) {
        let (Kind::Sync, Some(file)) = (call.kind, call.file) else {
            return;
        };
        let len = usize::try_from(file.len().unwrap()).unwrap();
        let mut bytes = vec![0u8; len];
        if len > 0 && !file.is_direct() {
            file.read_at(&mut bytes, 0).unwrap();
        }
        self.files
            .lock()
            .unwrap()
            .insert(call.path.to_path_buf(), bytes);
    }
}

/// Commits acknowledged with `wal_sync_on_commit(true)` survive a power
/// loss that keeps only what each file held at its last sync (the
/// process never closes: no final sync). Each commit is 2 KiB, so the
/// log crosses a MiB boundary and is zero-filled ahead twice. Fails if
/// a commit's sync were skipped when its write fell inside the
/// zero-filled space (the leader syncing only writes that extend: the
/// durable image lacks acknowledged records). (A leader that moved the
/// logical end to the end of the zeros it wrote is caught too, slowly:
/// every commit then extends by a MiB and the length check fails.)
fn acknowledged_commits_survive_power_loss(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let durable = Arc::new(Durable::default());
    let io = HookedDriver::new(d.io(), durable.clone());
    let t = holt::TreeBuilder::new(dir.path())
        .io_driver(io)
        .wal_sync_on_commit(true)
        .open()
        .unwrap();
    let n = 700u32;
    for i in 0..n {
        t.put(format!("k{i:04}").as_bytes(), &[i as u8; 2048])
            .unwrap();
    }
    let wal = dir.path().join("journal.wal");
    assert_eq!(wal_len(dir.path()), 2 * MIB, "zero-filled ahead twice");
    // Power loss: copy out the durable images (the files never synced,
    // e.g. an empty `frames.dat`, as they are) before anything else runs.
    let crashed = tempfile::tempdir().unwrap();
    let images = std::mem::take(&mut *durable.files.lock().unwrap());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = match images.get(&path) {
            Some(b) => b.clone(),
            None => std::fs::read(&path).unwrap(),
        };
        std::fs::write(crashed.path().join(path.file_name().unwrap()), bytes).unwrap();
    }
    assert!(images.contains_key(&wal));
    // The process dies without closing (no final sync).
    std::mem::forget(t);
    let t = builder(crashed.path(), d).open().unwrap();
    for i in 0..n {
        let k = format!("k{i:04}");
        assert_eq!(
            t.get(k.as_bytes()).unwrap(),
            Some(vec![i as u8; 2048]),
            "acknowledged {k} lost"
        );
    }
}

per_driver!(
    clean_reopen_appends_at_the_logical_end,
    acknowledged_commits_survive_power_loss,
);
