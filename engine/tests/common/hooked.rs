//! [`HookedDriver`]: the one wrapper the suites put around a real
//! [`IoDriver`] to watch or disturb its calls. It forwards every call (and
//! every call on the files it opens) to the inner driver, and shows each
//! call that can matter to a test to a [`Hook`] first and, once it has
//! succeeded, again. The hook decides whether the call goes through, fails
//! with an error of its choice, or (for a write) tears: writes half of its
//! bytes, then fails. Recording a call or delaying it is the hook's own
//! code in [`Hook::before`] / [`Hook::after`].
//!
//! Batches are forwarded as batches, so the inner driver's batch paths
//! run; the hook sees each entry as one call. Buffers (`alloc_buffer`,
//! `reserve_buffers`) and the plain queries (`len`, `list_dir`, ...) are
//! forwarded without the hook.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holt::io::{AlignedBuf, Feed, IoDriver, IoFile, OpenOptions, StreamWrite, WriteFeed, ALIGN};

/// What a call does: the coarse kind a hook counts or picks calls by.
/// [`Call::method`] names the exact method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `read_at`, and each entry of `read_batch`.
    Read,
    /// `write_at`, and each entry of `write_batch` and `write_stream`.
    Write,
    /// `sync_data` and `sync_all`.
    Sync,
    Rename,
    Remove,
    SyncDir,
    /// `set_len` and `allocate`.
    Alloc,
    Open,
}

/// One call, as a [`Hook`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    pub kind: Kind,
    /// The trait method called: `"sync_data"`, `"write_batch"`, ...
    pub method: &'static str,
    /// The file's path (the path it was opened by); for `rename` the
    /// target, for `sync_dir` the directory.
    pub path: &'a Path,
    /// The bytes of a write; empty for every other call.
    pub data: &'a [u8],
    /// The inner (real) file, for calls on a file; `None` for driver calls.
    pub file: Option<&'a dyn IoFile>,
}

/// What [`Hook::before`] makes of a call.
#[derive(Debug)]
pub enum Verdict {
    /// Forward the call to the inner driver.
    Forward,
    /// Fail the call with this error; nothing is forwarded.
    Fail(io::Error),
    /// A write writes the first half of its bytes (whole [`ALIGN`] pages
    /// on a direct file), as a real short write before `EIO`/`ENOSPC`
    /// may, then fails with this error. Any other call fails as with
    /// [`Verdict::Fail`].
    Tear(io::Error),
}

impl Verdict {
    /// `Ok` to forward, the error otherwise (a tear cannot tear here).
    fn into_result(self) -> io::Result<()> {
        match self {
            Verdict::Forward => Ok(()),
            Verdict::Fail(e) | Verdict::Tear(e) => Err(e),
        }
    }
}

/// What a test adds to a [`HookedDriver`]. Every method has a default
/// that changes nothing, so a hook writes only what it is for.
pub trait Hook: Debug + Send + Sync {
    /// Before each hooked call (each entry of a batch); records, delays,
    /// or decides the call's fate.
    fn before(&self, call: &Call<'_>) -> Verdict {
        let _ = call;
        Verdict::Forward
    }

    /// After a hooked call succeeded (after the whole batch, for each of
    /// its entries).
    fn after(&self, call: &Call<'_>) {
        let _ = call;
    }

    /// Opens a file on `inner` once [`Hook::before`] let the open through;
    /// a hook that needs the concrete file type opens it here itself.
    fn open(
        &self,
        inner: &dyn IoDriver,
        path: &Path,
        opts: OpenOptions,
    ) -> io::Result<Arc<dyn IoFile>> {
        inner.open(path, opts)
    }

    /// The driver's name as `IoDriver::name` reports it; `None` keeps the
    /// inner driver's.
    fn name(&self) -> Option<&'static str> {
        None
    }
}

/// A driver that forwards to `inner` and shows its calls to a [`Hook`].
#[derive(Debug)]
pub struct HookedDriver {
    inner: Arc<dyn IoDriver>,
    hook: Arc<dyn Hook>,
}

impl HookedDriver {
    pub fn new(inner: Arc<dyn IoDriver>, hook: Arc<dyn Hook>) -> Arc<Self> {
        Arc::new(Self { inner, hook })
    }

    /// A driver call on `path`, through [`hooked`].
    fn hooked<T>(
        &self,
        kind: Kind,
        method: &'static str,
        path: &Path,
        f: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        let call = Call {
            kind,
            method,
            path,
            data: &[],
            file: None,
        };
        hooked(&*self.hook, call, f)
    }
}

/// `hook.before`, then the call `f` unless the hook stopped it, then
/// `hook.after` if `f` succeeded.
fn hooked<T>(hook: &dyn Hook, call: Call<'_>, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    hook.before(&call).into_result()?;
    let out = f()?;
    hook.after(&call);
    Ok(out)
}

impl IoDriver for HookedDriver {
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Arc<dyn IoFile>> {
        let inner = self.hooked(Kind::Open, "open", path, || {
            self.hook.open(&*self.inner, path, opts)
        })?;
        Ok(Arc::new(HookedFile {
            inner,
            hook: Arc::clone(&self.hook),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.hooked(Kind::Rename, "rename", to, || self.inner.rename(from, to))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.hooked(Kind::Remove, "remove", path, || self.inner.remove(path))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.hooked(Kind::SyncDir, "sync_dir", dir, || self.inner.sync_dir(dir))
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn name(&self) -> &'static str {
        self.hook.name().unwrap_or_else(|| self.inner.name())
    }
    fn alloc_buffer(&self, len: usize) -> io::Result<AlignedBuf> {
        self.inner.alloc_buffer(len)
    }
    fn reserve_buffers(&self, len: usize, count: usize) -> usize {
        self.inner.reserve_buffers(len, count)
    }
}

/// A file opened by a [`HookedDriver`].
#[derive(Debug)]
struct HookedFile {
    inner: Arc<dyn IoFile>,
    hook: Arc<dyn Hook>,
}

impl HookedFile {
    /// A call on this file; `data` are a write's bytes.
    fn call<'a>(&'a self, kind: Kind, method: &'static str, data: &'a [u8]) -> Call<'a> {
        Call {
            kind,
            method,
            path: self.inner.path(),
            data,
            file: Some(&*self.inner),
        }
    }

    fn hooked<T>(
        &self,
        kind: Kind,
        method: &'static str,
        f: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        hooked(&*self.hook, self.call(kind, method, &[]), f)
    }

    /// A torn write: the first half of `buf` (whole pages on a direct
    /// file) at `offset`, its own error ignored.
    fn tear(&self, buf: &[u8], offset: u64) {
        let mut half = buf.len() / 2;
        if self.inner.is_direct() {
            half &= !(ALIGN - 1);
        }
        if half > 0 {
            let _ = self.inner.write_at(&buf[..half], offset);
        }
    }
}

/// A [`HookedFile::write_stream`] in progress.
struct HookedFeed<'a> {
    file: &'a HookedFile,
    feed: &'a mut dyn WriteFeed,
    /// The hook stopped a write with this.
    error: Option<io::Error>,
}

impl WriteFeed for HookedFeed<'_> {
    fn next(&mut self, wait: bool) -> Feed {
        if self.error.is_some() {
            return Feed::End;
        }
        let write = match self.feed.next(wait) {
            Feed::Write(write) => write,
            other => return other,
        };
        let call = self
            .file
            .call(Kind::Write, "write_stream", write.buf.bytes());
        let e = match self.file.hook.before(&call) {
            Verdict::Forward => return Feed::Write(write),
            Verdict::Fail(e) => e,
            Verdict::Tear(e) => {
                self.file.tear(write.buf.bytes(), write.offset);
                e
            }
        };
        self.feed.done(write, false);
        self.error = Some(e);
        Feed::End
    }

    fn done(&mut self, write: StreamWrite, ok: bool) {
        if ok {
            let call = self
                .file
                .call(Kind::Write, "write_stream", write.buf.bytes());
            self.file.hook.after(&call);
        }
        self.feed.done(write, ok);
    }
}

impl IoFile for HookedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.hooked(Kind::Read, "read_at", || self.inner.read_at(buf, offset))
    }
    fn read_batch(&self, reads: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        // The entries before one the hook stops are read, as one batch.
        let call = self.call(Kind::Read, "read_batch", &[]);
        for i in 0..reads.len() {
            if let Err(e) = self.hook.before(&call).into_result() {
                self.inner.read_batch(&mut reads[..i])?;
                return Err(e);
            }
        }
        self.inner.read_batch(reads)?;
        for _ in 0..reads.len() {
            self.hook.after(&call);
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let call = self.call(Kind::Write, "write_at", buf);
        match self.hook.before(&call) {
            Verdict::Forward => self.inner.write_at(buf, offset)?,
            Verdict::Fail(e) => return Err(e),
            Verdict::Tear(e) => {
                self.tear(buf, offset);
                return Err(e);
            }
        }
        self.hook.after(&call);
        Ok(())
    }
    fn write_batch(&self, writes: &[(u64, &[u8])]) -> io::Result<()> {
        // The entries before one the hook stops are written, as one
        // batch; that one is then refused (or torn).
        for (i, &(offset, buf)) in writes.iter().enumerate() {
            let call = self.call(Kind::Write, "write_batch", buf);
            let (e, torn) = match self.hook.before(&call) {
                Verdict::Forward => continue,
                Verdict::Fail(e) => (e, false),
                Verdict::Tear(e) => (e, true),
            };
            self.inner.write_batch(&writes[..i])?;
            if torn {
                self.tear(buf, offset);
            }
            return Err(e);
        }
        self.inner.write_batch(writes)?;
        for &(_, buf) in writes {
            self.hook.after(&self.call(Kind::Write, "write_batch", buf));
        }
        Ok(())
    }
    fn write_stream(&self, feed: &mut dyn WriteFeed) -> io::Result<()> {
        // Forwarded as a stream; the hook sees each write as it is handed
        // to the inner driver and again once it has completed. One the
        // hook stops goes back failed (torn first, for a tear) and ends
        // the stream; the writes already in flight finish.
        let mut hooked = HookedFeed {
            file: self,
            feed,
            error: None,
        };
        let res = self.inner.write_stream(&mut hooked);
        match hooked.error.take() {
            Some(e) => Err(e),
            None => res,
        }
    }
    fn sync_data(&self) -> io::Result<()> {
        self.hooked(Kind::Sync, "sync_data", || self.inner.sync_data())
    }
    fn sync_all(&self) -> io::Result<()> {
        self.hooked(Kind::Sync, "sync_all", || self.inner.sync_all())
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.hooked(Kind::Alloc, "set_len", || self.inner.set_len(len))
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.hooked(Kind::Alloc, "allocate", || self.inner.allocate(offset, len))
    }
    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}
