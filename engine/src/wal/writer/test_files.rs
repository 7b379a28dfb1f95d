//! Wrapped files and drivers for the writer's tests: a watched active
//! file, and a disk that is full.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use holt_backend_sync::{IoDriver, IoFile, OpenOptions};

use super::{Wal, ACTIVE};

/// The active file, watched: records the writeback ranges started on
/// it and runs a hook (once) at its first sync.
pub(super) struct Watched {
    inner: Arc<dyn IoFile>,
    pub(super) writebacks: Mutex<Vec<(u64, u64)>>,
    pub(super) on_sync: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    fired: AtomicBool,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").finish_non_exhaustive()
    }
}

impl IoFile for Watched {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn start_writeback(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.writebacks.lock().unwrap().push((offset, len));
        self.inner.start_writeback(offset, len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        if !self.fired.swap(true, Ordering::Relaxed) {
            if let Some(hook) = self.on_sync.get() {
                hook();
            }
        }
        self.inner.sync_data()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.allocate(offset, len)
    }
    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// A WAL in `dir` whose active file is watched.
pub(super) fn watched_wal(dir: &Path) -> (Wal, Arc<Watched>) {
    watched_wal_on(dir, Arc::new(crate::io::SyncDriver::new()))
}

/// [`watched_wal`] with files after the first opened by `driver`.
pub(super) fn watched_wal_on(dir: &Path, driver: Arc<dyn IoDriver>) -> (Wal, Arc<Watched>) {
    let inner = crate::io::SyncDriver::new()
        .open(
            &dir.join(ACTIVE),
            OpenOptions {
                create: true,
                direct: false,
            },
        )
        .unwrap();
    let file = Arc::new(Watched {
        inner,
        writebacks: Mutex::new(Vec::new()),
        on_sync: std::sync::OnceLock::new(),
        fired: AtomicBool::new(false),
    });
    let active: Arc<dyn IoFile> = file.clone();
    let wal = Wal::open(dir, driver, Some(active), 0, 0, 1, Vec::new()).unwrap();
    (wal, file)
}

/// Opens files whose writes all fail for lack of space (the disk
/// filled up after the active file was made).
#[derive(Debug)]
pub(super) struct FullDisk(pub(super) crate::io::SyncDriver);

#[derive(Debug)]
pub(super) struct FullFile(Arc<dyn IoFile>);

impl IoFile for FullFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::StorageFull.into())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.0.sync_all()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn allocate(&self, _: u64, _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::StorageFull.into())
    }
    fn is_direct(&self) -> bool {
        self.0.is_direct()
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl IoDriver for FullDisk {
    fn open(&self, path: &Path, opts: OpenOptions) -> std::io::Result<Arc<dyn IoFile>> {
        Ok(Arc::new(FullFile(self.0.open(path, opts)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.0.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        self.0.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn name(&self) -> &'static str {
        "full-disk"
    }
}
