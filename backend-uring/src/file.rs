//! [`UringFile`]: an [`IoFile`] whose reads, writes and syncs go through a
//! private io_uring instance.

use std::fs::File;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};

use holt_backend_sync::{check_direct_alignment, IoFile, SyncFile, WriteFeed};

use crate::faults::Faults;
use crate::ring::{check_range, BufferRegistration, Op, Ring, UringStats};

/// Default number of SQEs per ring: a 512-frame checkpoint batch goes
/// through in four refills, and the rings stay small (a few pages).
pub const DEFAULT_RING_ENTRIES: u32 = 128;

/// How [`UringFile`]s are set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringConfig {
    /// SQ size of each file's ring (the kernel clamps it; the CQ is twice
    /// as large). Larger batches are submitted in ring-sized refills.
    pub ring_entries: u32,
    /// Faults to inject into every completion (tests only; the default
    /// injects nothing).
    pub faults: Faults,
    /// Use the process's registered-buffer arena: the driver's
    /// `alloc_buffer` hands out arena slots, and rings register the arena
    /// and transfer on it with `READ_FIXED`/`WRITE_FIXED` (default on).
    /// Off: plain buffers and plain `READ`/`WRITE` only.
    pub registered_buffers: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        Self {
            ring_entries: DEFAULT_RING_ENTRIES,
            faults: Faults::none(),
            registered_buffers: true,
        }
    }
}

/// How a caller waits for the ring.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Block until the ring is free (batches).
    Block,
    /// Use the blocking syscall instead if another thread holds the ring.
    OrFallBack,
}

/// An open file driven through io_uring. Created by
/// [`UringDriver`](crate::UringDriver) (or [`UringFile::from_file`]).
///
/// * [`IoFile::write_batch`] pushes one `IORING_OP_WRITE` per entry —
///   all of them when they fit the ring, else ring-sized refills — and
///   submits them with one `io_uring_enter`, then reaps and checks every
///   completion: short writes resubmit the remainder, `EINTR`/`EAGAIN`
///   are retried (at most 100 times per write), any other error fails the
///   call *after* everything in flight has completed. The writes run
///   concurrently, so after an error an arbitrary subset of the batch —
///   not necessarily a prefix — may have been written.
/// * [`IoFile::write_stream`] keeps the ring topped up from the feed
///   (up to its depth in flight), with the same checking, and hands each
///   write back as soon as its completion is reaped; after an error it
///   takes no more writes, reaps everything in flight and hands every
///   write back before it returns. It holds the ring for the whole
///   stream, waits for the feed included: meanwhile cold reads fall back
///   to `pread`, and `stats`, `set_faults` and `fallback_reason` wait for
///   the stream to end.
/// * [`IoFile::read_batch`] does as `write_batch` with one `IORING_OP_READ` per
///   entry (cold frame loads of a scan or prefetch): all submitted at once,
///   unlinked; a short read resubmits the remainder, end of file is
///   `UnexpectedEof`, and an error fails the call after every read in
///   flight has completed. A batch that finds the ring busy (a checkpoint's
///   write batch) is served by `pread`s rather than waiting behind it.
/// * Transfers whose buffer lies in the registered-buffer arena (buffers
///   from [`UringDriver`](crate::UringDriver)'s `alloc_buffer`) use
///   `READ_FIXED` / `WRITE_FIXED`; see
///   [`UringFile::buffer_registration`].
/// * [`IoFile::read_at`], [`IoFile::write_at`], [`IoFile::sync_data`]
///   (`IORING_OP_FSYNC` + `DATASYNC`) and [`IoFile::sync_all`] are one SQE
///   each, with the same checking — except on a file opened *without*
///   `O_DIRECT` (the WAL, the manifest), where they are a plain
///   `pread` / `pwrite` / `fdatasync` / `fsync`. A buffered write or
///   sync cannot run asynchronously here (ext4 hands it to an io-wq
///   worker), so through the ring it cost the caller a sleep and a
///   wake-up for a copy into the page cache; a writer that drained the
///   WAL that way was put to sleep on every drain, and during a
///   checkpoint round, with both cores busy, it woke late. A single
///   buffered read is a copy out of the page cache, or one blocking read
///   either way.
/// * The ring of an `O_DIRECT` file is set up at open. A buffered file
///   gets its ring at its first batch, so a file that never batches (the
///   WAL, the manifest) never sets one up: that cost about 60 µs per file
///   (measured: open, one 12 KiB read and close, 200 times, io_uring
///   against the sync driver), paid twice per tree open and once inside
///   each WAL rotation, which committers wait for.
/// * `len`, `set_len`, `allocate` are plain syscalls (as in
///   [`SyncFile`]).
///
/// The ring sits behind a mutex: a batch owns it until it is done. A
/// single read, write or sync that finds it busy does not wait behind the
/// batch; it is served by the equivalent blocking syscall
/// (`pread`/`pwrite`/`fdatasync`) instead, which the contract allows for
/// concurrent calls on disjoint ranges. If the ring cannot be created at
/// open, or breaks later, the file keeps working on those syscalls
/// ([`UringFile::fallback_reason`]).
#[derive(Debug)]
pub struct UringFile {
    /// The ring (declared first: dropped before the file it names), or
    /// why it could not be set up. Empty until set up (see the type's
    /// docs: at open if `O_DIRECT`, else at the first batch).
    ring: OnceLock<Result<Mutex<Ring>, String>>,
    /// How the ring is (or will be) set up; `set_faults` changes it.
    config: Mutex<UringConfig>,
    /// `sync`'s descriptor, for the ring to register.
    fd: RawFd,
    /// Calls served by the blocking path because the ring was busy.
    contended: AtomicU64,
    /// The descriptor, and the blocking implementation used for metadata
    /// and as fallback.
    sync: SyncFile,
}

impl UringFile {
    /// Wraps an already opened file (read + write). `direct` must say
    /// whether `file` was opened with `O_DIRECT`. Setting up the ring
    /// cannot fail the call: if it does not work the file uses blocking
    /// syscalls and [`UringFile::fallback_reason`] says why.
    #[must_use]
    pub fn from_file(file: File, path: PathBuf, direct: bool, config: UringConfig) -> Self {
        let f = Self {
            ring: OnceLock::new(),
            config: Mutex::new(config),
            fd: file.as_raw_fd(),
            contended: AtomicU64::new(0),
            sync: SyncFile::from_file(file, path, direct),
        };
        if direct {
            f.set_up();
        }
        f
    }

    /// The ring, set up now if it is not yet.
    fn set_up(&self) -> &Result<Mutex<Ring>, String> {
        self.ring.get_or_init(|| {
            // Held while the ring is built: `set_faults` then either
            // changes the configuration first or finds the ring.
            let config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
            Ring::new(
                self.fd,
                config.ring_entries,
                self.sync.is_direct(),
                self.sync.path().to_path_buf(),
                config.faults,
                config.registered_buffers,
            )
            .map(Mutex::new)
            .map_err(|e| format!("io_uring setup failed: {e}"))
        })
    }

    /// The ring if it has been set up.
    fn ring_if_up(&self) -> Option<MutexGuard<'_, Ring>> {
        match self.ring.get() {
            Some(Ok(ring)) => Some(ring.lock().unwrap_or_else(PoisonError::into_inner)),
            _ => None,
        }
    }

    /// Why this file is not (or no longer) using io_uring, if so. A
    /// buffered file that has not batched yet has no ring and no reason.
    #[must_use]
    pub fn fallback_reason(&self) -> Option<String> {
        match self.ring.get()? {
            Err(why) => Some(why.clone()),
            Ok(ring) => {
                let ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
                ring.broken().map(str::to_owned)
            }
        }
    }

    /// Counters of the ring (all zero without one). Waits for a call in
    /// progress.
    #[must_use]
    pub fn stats(&self) -> UringStats {
        let mut stats = self
            .ring_if_up()
            .map_or_else(UringStats::default, |r| r.stats());
        stats.sync_fallbacks += self.contended.load(Ordering::Relaxed);
        stats
    }

    /// Replaces the injected [`Faults`] and restarts their completion
    /// counters. Waits for a call in progress.
    pub fn set_faults(&self, faults: Faults) {
        let mut config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        config.faults = faults;
        if let Some(mut ring) = self.ring_if_up() {
            ring.set_faults(faults);
        }
    }

    /// Whether the descriptor is registered with the ring (fixed file).
    #[must_use]
    pub fn registered_file(&self) -> bool {
        self.ring_if_up().is_some_and(|r| r.registered_file())
    }

    /// Whether the ring uses the registered-buffer arena
    /// ([`BufferRegistration::Off`] without a ring).
    #[must_use]
    pub fn buffer_registration(&self) -> BufferRegistration {
        self.ring_if_up()
            .map_or(BufferRegistration::Off, |r| r.buffer_registration())
    }

    /// SQ size of the ring (0 without one): how many writes one submission
    /// carries.
    #[must_use]
    pub fn ring_depth(&self) -> usize {
        self.ring_if_up().map_or(0, |r| r.depth())
    }

    /// The ring to use (set up now if it is not yet), or `None` for the
    /// blocking path (no ring, broken ring, or busy with
    /// `Wait::OrFallBack`).
    fn ring(&self, wait: Wait) -> Option<MutexGuard<'_, Ring>> {
        let ring = self.set_up().as_ref().ok()?;
        let mut guard = match wait {
            Wait::Block => ring.lock().unwrap_or_else(PoisonError::into_inner),
            Wait::OrFallBack => match ring.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    self.contended.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            },
        };
        if guard.broken().is_some() {
            guard.note_sync_fallback();
            return None;
        }
        Some(guard)
    }

    /// The `O_DIRECT` rule and the `off_t` range for one transfer.
    fn check(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.sync.is_direct() {
            check_direct_alignment(buf, offset)?;
        }
        check_range(offset, buf.len())
    }
}

impl IoFile for UringFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.check(buf, offset)?;
        // A buffered read is a copy out of the page cache or one blocking
        // read either way (see the type's docs).
        if !self.sync.is_direct() {
            return self.sync.read_at(buf, offset);
        }
        match self.ring(Wait::OrFallBack) {
            Some(mut ring) => ring.run(&mut [Op::read(buf, offset)]),
            None => self.sync.read_at(buf, offset),
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.check(buf, offset)?;
        // A buffered write is a copy into the page cache: `pwrite` does it
        // without a worker thread (see the type's docs).
        if !self.sync.is_direct() {
            return self.sync.write_at(buf, offset);
        }
        match self.ring(Wait::OrFallBack) {
            Some(mut ring) => ring.run(&mut [Op::write(buf, offset)]),
            None => self.sync.write_at(buf, offset),
        }
    }

    fn write_batch(&self, writes: &[(u64, &[u8])]) -> io::Result<()> {
        // Check the whole batch first: a bad entry writes nothing. Empty
        // entries are no-ops, whatever their address.
        for &(offset, buf) in writes {
            if !buf.is_empty() {
                self.check(buf, offset)?;
            }
        }
        let mut ops: Vec<Op<'_>> = writes
            .iter()
            .filter(|(_, buf)| !buf.is_empty())
            .map(|&(offset, buf)| Op::write(buf, offset))
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        match self.ring(Wait::Block) {
            Some(mut ring) => ring.run(&mut ops),
            None => self.sync.write_batch(writes),
        }
    }

    fn write_stream(&self, feed: &mut dyn WriteFeed) -> io::Result<()> {
        match self.ring(Wait::Block) {
            Some(mut ring) => ring.run_stream(feed, &|buf, offset| self.check(buf, offset)),
            None => self.sync.write_stream(feed),
        }
    }

    fn read_batch(&self, reads: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        // Check the whole batch first: a bad entry reads nothing.
        for (offset, buf) in reads.iter() {
            if !buf.is_empty() {
                self.check(buf, *offset)?;
            }
        }
        if reads.iter().all(|(_, buf)| buf.is_empty()) {
            return Ok(());
        }
        match self.ring(Wait::OrFallBack) {
            Some(mut ring) => {
                let mut ops: Vec<Op<'_>> = reads
                    .iter_mut()
                    .filter(|(_, buf)| !buf.is_empty())
                    .map(|(offset, buf)| Op::read(buf, *offset))
                    .collect();
                ring.run(&mut ops)
            }
            None => self.sync.read_batch(reads),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        // A buffered file's sync (the WAL's commits) is a plain
        // `fdatasync`: through the ring it would run on an io-wq worker
        // and the committer would sleep until that worker ran, like a
        // buffered write (see `write_at`).
        if !self.sync.is_direct() {
            return self.sync.sync_data();
        }
        match self.ring(Wait::OrFallBack) {
            Some(mut ring) => ring.run(&mut [Op::fsync(true)]),
            None => self.sync.sync_data(),
        }
    }

    fn sync_all(&self) -> io::Result<()> {
        // As in `sync_data`.
        if !self.sync.is_direct() {
            return self.sync.sync_all();
        }
        match self.ring(Wait::OrFallBack) {
            Some(mut ring) => ring.run(&mut [Op::fsync(false)]),
            None => self.sync.sync_all(),
        }
    }

    fn len(&self) -> io::Result<u64> {
        self.sync.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.sync.set_len(len)
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.sync.allocate(offset, len)
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        // Like a buffered sync (see `sync_data`): a plain syscall on the
        // caller's thread, which only queues the writeback.
        self.sync.start_writeback(offset, len)
    }

    fn is_direct(&self) -> bool {
        self.sync.is_direct()
    }

    fn path(&self) -> &Path {
        self.sync.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh read-write file in a temporary directory, opened plainly.
    fn plain_file() -> (tempfile::TempDir, PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        (dir, path, file)
    }

    fn buffered(config: UringConfig) -> (tempfile::TempDir, UringFile) {
        let (dir, path, file) = plain_file();
        (dir, UringFile::from_file(file, path, false, config))
    }

    #[test]
    fn buffered_file_takes_any_alignment() {
        let (_dir, f) = buffered(UringConfig::default());
        assert!(!f.is_direct());
        assert!(f.fallback_reason().is_none());
        f.write_at(b"abc", 3).unwrap();
        f.write_batch(&[(0, b"xy"), (6, b""), (8, b"z")]).unwrap();
        assert!(f.registered_file());
        assert!(f.ring_depth() >= 128);
        let mut out = [0xffu8; 9];
        f.read_at(&mut out, 0).unwrap();
        assert_eq!(&out, b"xy\0abc\0\0z");
        assert_eq!(f.len().unwrap(), 9);
        // Empty I/O is a no-op, even past the end.
        f.read_at(&mut [], 1 << 40).unwrap();
        f.write_at(&[], 1 << 40).unwrap();
        f.write_batch(&[]).unwrap();
        assert_eq!(f.len().unwrap(), 9);
        // A buffered file's syncs are plain syscalls (see `sync_data`).
        let before = f.stats();
        f.sync_data().unwrap();
        f.sync_all().unwrap();
        assert_eq!(f.stats().completions, before.completions);
    }

    /// A buffered file sets up its ring at its first batch, not at open
    /// or for single calls (see the type's docs); a direct file at open.
    /// Fails if `from_file` sets every file's ring up, or if a single
    /// buffered read goes to the ring.
    #[test]
    fn a_buffered_file_sets_its_ring_up_at_the_first_batch() {
        let (_dir, f) = buffered(UringConfig::default());
        f.write_at(b"abcdef", 0).unwrap();
        let mut out = [0u8; 6];
        f.read_at(&mut out, 0).unwrap();
        f.sync_data().unwrap();
        assert_eq!(&out, b"abcdef");
        assert!(f.ring.get().is_none(), "no ring before a batch");
        assert_eq!(f.ring_depth(), 0);
        let mut back = [0u8; 2];
        f.read_batch(&mut [(2, &mut back[..])]).unwrap();
        assert_eq!(&back, b"cd");
        assert!(f.ring_depth() >= 128);
        assert_eq!(f.stats().sqes, 1);

        let (_dir, path, file) = plain_file();
        // `direct: true` only tells the file how it was opened; the ring
        // does not care whether O_DIRECT is really in effect.
        let d = UringFile::from_file(file, path, true, UringConfig::default());
        assert!(
            d.ring_depth() >= 128,
            "a direct file's ring is set up at open"
        );
    }

    #[test]
    fn ranges_past_off_t_are_rejected_up_front() {
        let (_dir, f) = buffered(UringConfig::default());
        let err = f.write_at(b"a", i64::MAX as u64).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = f.write_batch(&[(0, b"ok"), (u64::MAX, b"a")]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(f.len().unwrap(), 0, "a rejected batch writes nothing");
        assert_eq!(f.stats().sqes, 0);
    }

    #[test]
    fn ring_setup_failure_falls_back_to_syscalls() {
        // Building a file whose ring could not be set up (the kernel refusing
        // io_uring_setup is hard to provoke here) must leave a working file.
        let (_dir, path, file) = plain_file();
        let f = UringFile {
            ring: OnceLock::from(Err("io_uring setup failed: test".to_owned())),
            config: Mutex::new(UringConfig::default()),
            fd: file.as_raw_fd(),
            contended: AtomicU64::new(0),
            sync: SyncFile::from_file(file, path, false),
        };
        assert_eq!(
            f.fallback_reason().as_deref(),
            Some("io_uring setup failed: test")
        );
        f.write_batch(&[(0, b"ab"), (2, b"cd")]).unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.len().unwrap(), 4);
        assert_eq!(f.stats(), UringStats::default());
        assert!(!f.registered_file());
        assert_eq!(f.ring_depth(), 0);
    }
}
