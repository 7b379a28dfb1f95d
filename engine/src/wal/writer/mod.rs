//! The WAL writer, [`Wal`]: appends records to a shared buffer and writes
//! them out with group commit.
//!
//! Appending takes a short mutex (assign the seq, encode into the buffer);
//! it is called while the writer still holds its frame's exclusive latch,
//! so per-key WAL order equals apply order (DESIGN.md §7). Writing out is
//! done by one *leader* at a time, outside the mutex: it takes the whole
//! buffer, writes it at the end of the file and, when asked, fdatasyncs;
//! writers who arrive meanwhile append to the fresh buffer and wait, and
//! the next leader takes all of them in one write and one sync.
//!
//! After a failed write or sync the WAL is *poisoned*: an fsync that
//! failed may have dropped dirty pages for good, so nothing more is
//! appended until the tree is reopened.
//!
//! `Wal` is the one type callers see. This module holds it, its state
//! and its opening; its methods are spread over the children by job:
//! - `append`: the append buffer (a record encoded under the mutex, the
//!   buffer a leader takes and the spare that appends go into meanwhile);
//! - `group_commit`: writing out and syncing (the leader's round,
//!   gathering the crowd, spinning waiters, epochs, zero-filling ahead,
//!   early writeback);
//! - `rotation`: retiring the active file at a checkpoint cut, and
//!   releasing retired files once a durable checkpoint covers them.

mod append;
pub(crate) mod group_commit;
pub(crate) mod rotation;
#[cfg(test)]
mod test_files;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use holt_backend_sync::{IoDriver, IoFile, OpenOptions};

use crate::api::errors::{Error, Result};
use append::fresh_buf;
use group_commit::spin_slots;

pub(crate) const ACTIVE: &str = "journal.wal";

struct State {
    file: Arc<dyn IoFile>,
    /// The logical end of the log in the active file: bytes of records
    /// written so far, where the next write goes.
    file_len: u64,
    /// The file's size as written: `file_len` plus the zero-filled space
    /// past it (`group_commit`, "Preallocation"). Never below `file_len`.
    alloc_end: u64,
    /// Encoded records not yet handed to the OS.
    buf: Vec<u8>,
    /// An empty buffer for appends while a leader writes `buf` out (the
    /// one the last leader wrote), so appends and drains do not allocate:
    /// a fresh 128 KiB buffer per drain made the appending thread's
    /// malloc arena grow and shrink (`mprotect`, zero-filled pages).
    spare: Vec<u8>,
    next_seq: u64,
    /// All records with seq <= `written` are in the OS.
    written: u64,
    /// All records with seq <= `synced` are durable.
    synced: u64,
    /// Bytes of the active file known durable (covered by a sync).
    synced_len: u64,
    /// Bytes of the active file whose writeback was started
    /// (`group_commit`, "Early writeback"); never above `file_len`.
    writeback_from: u64,
    /// The active file's directory entry is known durable; until then the
    /// first sync of a record syncs the directory too.
    dir_synced: bool,
    /// A leader is writing outside the mutex (or gathering).
    leader: bool,
    /// Threads parked until the current leader's round ends.
    parked: Vec<Thread>,
    /// `Wal::sync_waiters` when the last sync finished: the committers
    /// expected back for the next one.
    crowd: usize,
    /// Duration of the last sync; bounds the gathering wait.
    last_sync: Duration,
    /// A leader is parked waiting for the pending count to reach `crowd`;
    /// the committer that completes it clears this and leads instead.
    gathering: bool,
    /// A rotation waits for the current round to end and leads next:
    /// would-be leaders of a sync wait for it instead (its write and sync
    /// cover their records), so a stream of commits cannot keep it out.
    rotation_waiting: bool,
    poisoned: bool,
    /// Retired files not yet covered by a durable checkpoint: (last seq, path).
    retired: Vec<(u64, PathBuf)>,
    /// Bytes of records encoded since open.
    appended: u64,
    /// `appended` and the time at the last checkpoint cut ([`Wal::cut`]).
    cut_mark: Option<(u64, Instant)>,
    /// How long the last rotation's I/O took, and the bytes appended
    /// meanwhile.
    last_rotation: (Duration, usize),
}

pub(crate) struct Wal {
    dir: PathBuf,
    driver: Arc<dyn IoDriver>,
    state: Mutex<State>,
    /// Rounds ended so far; changed only under `state`, read by parked
    /// threads without it.
    epoch: AtomicU64,
    /// Mirror of `State::synced`, stored before `epoch` moves: a parked
    /// committer whose record is covered returns without the mutex, so
    /// the end of a round wakes no convoy on it.
    synced: AtomicU64,
    /// Callers inside `drain` with `sync` (waiting or leading).
    sync_waiters: AtomicUsize,
    /// Free spin slots: waiters that may start spinning now
    /// (`group_commit`, "Spinning").
    spin_slots: AtomicUsize,
    /// How many waiters may spin at once ([`spin_slots`] by default).
    spin_limit: usize,
    /// Mirror of `State::poisoned` for the writers' lock-free check.
    poisoned: AtomicBool,
    counters: Counters,
}

/// Cumulative WAL counters ([`crate::Tree::wal_stats`]).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) records: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) sync_commits: AtomicU64,
    /// Waits that spun before parking (`group_commit`, "Spinning").
    pub(crate) spins: AtomicU64,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(e: std::io::Error) -> Error {
    Error::BackendIo(e)
}

impl Wal {
    /// Opens the active file for appending at `len` (after recovery cut
    /// any torn tail), continuing at `next_seq`. `existing` is the active
    /// file as recovery opened it, if there was one; `file_size` is its
    /// size, more than `len` when a zero-filled tail was kept (appends
    /// still go to `len`, the logical end).
    ///
    /// Records an earlier process left may sit in the page cache only:
    /// they are synced now, so the batch markers written from now on can
    /// vouch for them. An empty (or new) file has nothing to vouch for,
    /// and the open does no I/O for it: the sync of its directory entry
    /// waits for the first sync of a record (a creator that crashed before
    /// syncing the directory left the file empty, so a non-empty file's
    /// entry is durable already). A read-only session after a clean close
    /// thus pays no sync at open.
    pub(crate) fn open(
        dir: &Path,
        driver: Arc<dyn IoDriver>,
        existing: Option<Arc<dyn IoFile>>,
        len: u64,
        file_size: u64,
        next_seq: u64,
        retired: Vec<(u64, PathBuf)>,
    ) -> Result<Self> {
        let file = match existing {
            Some(f) => f,
            None => driver
                .open(
                    &dir.join(ACTIVE),
                    OpenOptions {
                        create: true,
                        direct: false,
                    },
                )
                .map_err(io)?,
        };
        let dir_synced = len > 0;
        if len > 0 {
            file.sync_data().map_err(io)?;
            driver.sync_dir(dir).map_err(io)?;
        }
        let last = next_seq.saturating_sub(1);
        Ok(Self {
            dir: dir.to_path_buf(),
            driver,
            state: Mutex::new(State {
                file,
                file_len: len,
                alloc_end: file_size.max(len),
                buf: fresh_buf(),
                spare: Vec::new(),
                next_seq,
                written: last,
                synced: last,
                synced_len: len,
                writeback_from: len,
                dir_synced,
                leader: false,
                parked: Vec::new(),
                crowd: 0,
                last_sync: Duration::ZERO,
                gathering: false,
                rotation_waiting: false,
                poisoned: false,
                retired,
                appended: 0,
                cut_mark: None,
                last_rotation: (Duration::ZERO, 0),
            }),
            epoch: AtomicU64::new(0),
            synced: AtomicU64::new(last),
            sync_waiters: AtomicUsize::new(0),
            spin_slots: AtomicUsize::new(spin_slots()),
            spin_limit: spin_slots(),
            poisoned: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The highest seq assigned so far.
    pub(crate) fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// A checkpoint's cut: the highest seq assigned so far, noting how
    /// much was appended by now and when, for [`Wal::rotate`]'s estimate
    /// of what writers append while it runs.
    pub(crate) fn cut(&self) -> u64 {
        let mut st = self.lock();
        st.cut_mark = Some((st.appended, Instant::now()));
        st.next_seq - 1
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Refuses every later append (see the module docs).
    fn poison(&self, st: &mut State) {
        st.poisoned = true;
        self.poisoned.store(true, Ordering::Release);
    }

    /// The cumulative counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }
}
