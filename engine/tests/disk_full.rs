#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Disk full: a WAL write refused with `StorageFull` fails the operation
//! cleanly, reads keep working, and writes work again once space returns
//! (the tree is not poisoned: nothing was written, so nothing was lost).
//!
//! Fails if the WAL poisoned the tree on `StorageFull` (writes would stay
//! refused after space returns), or if the refused records were dropped
//! from the buffer instead of retried (the records queued behind them
//! would then follow a seq gap and vanish at the next recovery).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use holt::io::{IoDriver, IoFile, OpenOptions, SyncDriver};
use holt::TreeBuilder;

#[derive(Debug)]
struct FullDisk {
    inner: SyncDriver,
    full: Arc<AtomicBool>,
}

#[derive(Debug)]
struct FullFile {
    inner: Arc<dyn IoFile>,
    full: Arc<AtomicBool>,
}

impl IoDriver for FullDisk {
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Arc<dyn IoFile>> {
        Ok(Arc::new(FullFile {
            inner: self.inner.open(path, opts)?,
            full: Arc::clone(&self.full),
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
        "full-disk"
    }
}

impl FullFile {
    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated ENOSPC",
            ));
        }
        Ok(())
    }
}

impl IoFile for FullFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        self.inner.write_at(buf, offset)
    }
    fn write_batch(&self, writes: &[(u64, &[u8])]) -> io::Result<()> {
        self.check()?;
        self.inner.write_batch(writes)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check()?;
        self.inner.allocate(offset, len)
    }
    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

#[test]
fn wal_disk_full_fails_cleanly_and_writes_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let driver = Arc::new(FullDisk {
        inner: SyncDriver::new(),
        full: Arc::clone(&full),
    });
    {
        let t = TreeBuilder::new(dir.path())
            .wal_sync_on_commit(true)
            .io_driver(driver)
            .open()
            .unwrap();
        t.put(b"before", b"1").unwrap();
        full.store(true, Ordering::SeqCst);
        let err = t.put(b"during", b"2").unwrap_err();
        assert!(
            matches!(&err, holt::Error::BackendIo(e) if e.kind() == io::ErrorKind::StorageFull),
            "{err:?}"
        );
        assert_eq!(
            t.get(b"before").unwrap(),
            Some(b"1".to_vec()),
            "reads keep working"
        );
        assert!(t.checkpoint().is_err(), "a checkpoint cannot write either");
        full.store(false, Ordering::SeqCst);
        t.put(b"after", b"3").unwrap();
        t.checkpoint().unwrap();
        t.put(b"tail", b"4").unwrap();
    }
    let t = TreeBuilder::new(dir.path()).open().unwrap();
    assert_eq!(t.get(b"before").unwrap(), Some(b"1".to_vec()));
    assert_eq!(t.get(b"after").unwrap(), Some(b"3".to_vec()));
    assert_eq!(t.get(b"tail").unwrap(), Some(b"4".to_vec()));
    // The refused put was never acknowledged; it was retried with the
    // next write, so it is whole if present.
    let during = t.get(b"during").unwrap();
    assert!(during.is_none() || during == Some(b"2".to_vec()));
}
