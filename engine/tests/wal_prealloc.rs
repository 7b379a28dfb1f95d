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
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{builder, per_driver, Driver};
use holt::io::{AlignedBuf, IoDriver, IoFile, OpenOptions};

/// The zero-filling granule (`wal::writer::PREALLOC`).
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
#[derive(Debug, Default)]
struct Durable {
    files: Mutex<HashMap<PathBuf, Vec<u8>>>,
}

/// Forwards to a real driver; every `sync_data`/`sync_all` records the
/// file's whole contents as its durable image.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn IoDriver>,
    durable: Arc<Durable>,
}

#[derive(Debug)]
struct RecFile {
    inner: Arc<dyn IoFile>,
    path: PathBuf,
    durable: Arc<Durable>,
}

impl RecFile {
    fn record(&self) -> io::Result<()> {
        let len = usize::try_from(self.inner.len()?).unwrap();
        let mut bytes = vec![0u8; len];
        if len > 0 && !self.inner.is_direct() {
            self.inner.read_at(&mut bytes, 0)?;
        }
        self.durable
            .files
            .lock()
            .unwrap()
            .insert(self.path.clone(), bytes);
        Ok(())
    }
}

impl IoDriver for Recording {
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Arc<dyn IoFile>> {
        Ok(Arc::new(RecFile {
            inner: self.inner.open(path, opts)?,
            path: path.to_path_buf(),
            durable: Arc::clone(&self.durable),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn alloc_buffer(&self, len: usize) -> io::Result<AlignedBuf> {
        self.inner.alloc_buffer(len)
    }
}

impl IoFile for RecFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()?;
        self.record()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()?;
        self.record()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.allocate(offset, len)
    }
    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }
    fn path(&self) -> &Path {
        self.inner.path()
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
    let io = Arc::new(Recording {
        inner: d.io(),
        durable: Arc::clone(&durable),
    });
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
