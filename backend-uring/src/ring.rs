//! The submission / reaping engine: one [`IoUring`] per file, the
//! operations of one call ([`Op`]), and [`Ring::run`], which drives them to
//! completion. All of the crate's `unsafe` lives here.
//!
//! # The buffer-lifetime invariant
//!
//! An SQE carries a raw pointer into a buffer the *caller* owns. The kernel
//! may read (write SQE) or fill (read SQE) that memory at any moment until
//! the matching CQE is posted. So:
//!
//! * every [`Op`] borrows its buffer (`&'a [u8]` / `&'a mut [u8]`) for the
//!   whole [`Ring::run`] call, which takes `&mut [Op<'a>]` — the borrow
//!   checker keeps the buffer alive and un-moved (a slice's memory cannot
//!   move while borrowed) and, for reads, un-aliased;
//! * [`Ring::run`] does not return — not on success, not on error — until
//!   every SQE it pushed has been reaped ([`Run`]'s `drain`, also run from
//!   `Drop` so even an unwind cannot skip it);
//! * if the ring itself breaks (`io_uring_enter` failing with a
//!   non-transient error) the driver stops only when the kernel owns none
//!   of our SQEs (the ones it never consumed are abandoned in a ring that is
//!   never entered again); while the kernel still owns some it keeps
//!   waiting and, after [`ABORT_AFTER_FAILED_WAITS`] consecutive failed
//!   waits, aborts the process rather than free a buffer the kernel may
//!   still be using.
//!
//! # Registered buffers
//!
//! A ring registers the process's buffer arena (`crate::arena`) the first
//! time a call hands it a buffer that lies inside the arena, and from then
//! on issues `READ_FIXED`/`WRITE_FIXED` (buffer index 0: the arena is one
//! `iovec`) for every transfer whose remaining bytes lie inside it, plain
//! `READ`/`WRITE` for the rest. The arena is never freed, so registered
//! memory cannot go away under the kernel; the bytes one SQE names are
//! still the caller's borrowed buffer, under the invariant above. A
//! refused registration (budget spent, `ENOMEM`, `EPERM`) is recorded
//! ([`BufferRegistration::Unavailable`]) and not retried; a refusal by the
//! kernel is also recorded in the arena, which then hands out no more
//! slots, so no other ring tries either.

#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

use crate::arena::{registration_refused, Arena};
use holt_backend_sync::{Feed, StreamWrite, WriteFeed};

use crate::faults::{CompletionKind, FaultCounters, Faults};

/// Most `EINTR` / `EAGAIN` completions one operation retries before the
/// call fails with that error.
pub const MAX_RETRIES: u32 = 100;

/// Largest transfer put in one SQE (the SQE length is a `u32`, and Linux
/// caps a single transfer near 2 GiB anyway); longer buffers continue
/// through the short-transfer path.
const MAX_SQE_LEN: usize = 1 << 30;

/// Consecutive transient `io_uring_enter` failures (`EINTR`, `EAGAIN`,
/// `EBUSY`) tolerated while driving a call before the ring is treated as
/// broken.
const MAX_ENTER_RETRIES: u32 = 10_000;

/// Consecutive failed waits, while the kernel still owns some of our SQEs,
/// after which the process aborts (about a minute with the 1 ms pause):
/// returning would free buffers the kernel may still read or write.
const ABORT_AFTER_FAILED_WAITS: u32 = 60_000;

/// Counters of one file's ring, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringStats {
    /// SQEs pushed, resubmissions included.
    pub sqes: u64,
    /// `io_uring_enter` calls (submit and/or wait).
    pub enters: u64,
    /// CQEs reaped.
    pub completions: u64,
    /// Resubmissions of the remainder after a short read or write.
    pub short_resubmits: u64,
    /// Resubmissions after an `EINTR` / `EAGAIN` completion.
    pub retries: u64,
    /// Completions whose result [`Faults`] rewrote.
    pub injected: u64,
    /// Most SQEs handed to the kernel by one `io_uring_enter`.
    pub max_submitted_at_once: u64,
    /// Calls served by the blocking fallback (`pread`/`pwrite`/`fdatasync`)
    /// because another thread held the ring or the ring was broken.
    pub sync_fallbacks: u64,
    /// SQEs issued as `READ_FIXED` / `WRITE_FIXED` on registered buffers
    /// (included in `sqes`).
    pub fixed_sqes: u64,
}

/// Whether a ring uses the registered-buffer arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BufferRegistration {
    /// Switched off ([`UringConfig::registered_buffers`](crate::UringConfig)
    /// is false): every transfer is a plain `READ`/`WRITE`.
    Off,
    /// Not registered yet: no call has handed the ring a buffer from the
    /// arena (or there is no arena).
    NotYet,
    /// The arena is registered; transfers on it use `READ_FIXED` /
    /// `WRITE_FIXED`.
    Registered,
    /// Registration was refused and is not retried; transfers use plain
    /// `READ`/`WRITE`. Says why (memlock budget spent, `ENOMEM`, `EPERM`).
    Unavailable(String),
}

/// How SQEs name the file: a registered (fixed) file slot, or the raw fd
/// when registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Index in the ring's registered file table.
    Fixed(u32),
    /// Plain descriptor.
    Fd(RawFd),
}

/// What an [`Op`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `IORING_OP_READ` into the buffer.
    Read,
    /// `IORING_OP_WRITE` from the buffer.
    Write,
    /// `IORING_OP_FSYNC`, with `DATASYNC` when `datasync`.
    Fsync {
        /// `fdatasync` rather than `fsync`.
        datasync: bool,
    },
}

impl Kind {
    /// The fault-injection class of this operation.
    fn completion_kind(self) -> CompletionKind {
        match self {
            Self::Read => CompletionKind::Read,
            Self::Write => CompletionKind::Write,
            Self::Fsync { .. } => CompletionKind::Sync,
        }
    }
}

/// One operation of a [`Ring::run`] call, with its progress. Holds the
/// caller's buffer borrowed for `'a`, so the buffer outlives the call.
pub(crate) struct Op<'a> {
    /// What to do.
    kind: Kind,
    /// Start of the caller's buffer (dangling-but-unused for fsync). For
    /// writes it is only ever read through.
    ptr: *mut u8,
    /// Buffer length in bytes.
    len: usize,
    /// File offset of the buffer's first byte.
    offset: u64,
    /// Bytes transferred so far.
    done: usize,
    /// `EINTR` / `EAGAIN` retries spent.
    retries: u32,
    /// Whether an SQE for this op is pushed and its CQE not yet reaped.
    in_flight: bool,
    /// Ties the op to the caller's borrow of the buffer.
    _buf: PhantomData<&'a mut [u8]>,
}

impl<'a> Op<'a> {
    /// Reads into all of `buf` from `offset`.
    pub(crate) fn read(buf: &'a mut [u8], offset: u64) -> Self {
        Self::new(Kind::Read, buf.as_mut_ptr(), buf.len(), offset)
    }

    /// Writes all of `buf` at `offset`.
    pub(crate) fn write(buf: &'a [u8], offset: u64) -> Self {
        Self::new(Kind::Write, buf.as_ptr().cast_mut(), buf.len(), offset)
    }

    /// Common constructor.
    fn new(kind: Kind, ptr: *mut u8, len: usize, offset: u64) -> Self {
        Self {
            kind,
            ptr,
            len,
            offset,
            done: 0,
            retries: 0,
            in_flight: false,
            _buf: PhantomData,
        }
    }
}

impl Op<'static> {
    /// `fdatasync` (`datasync`) or `fsync` of the whole file.
    pub(crate) fn fsync(datasync: bool) -> Self {
        Self::new(
            Kind::Fsync { datasync },
            std::ptr::NonNull::<u8>::dangling().as_ptr(),
            0,
            0,
        )
    }
}

/// Checks that `offset..offset + len` is a valid file range (fits `off_t`),
/// so that no partial progress can overflow later.
pub(crate) fn check_range(offset: u64, len: usize) -> io::Result<()> {
    let end = u64::try_from(len)
        .ok()
        .and_then(|len| offset.checked_add(len))
        .filter(|&end| i64::try_from(end).is_ok());
    match end {
        Some(_) => Ok(()),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("file range {offset} + {len} overflows off_t"),
        )),
    }
}

/// One file's io_uring instance and its bookkeeping. Used under the
/// file's mutex, so one call at a time drives it.
pub(crate) struct Ring {
    /// The ring.
    ring: IoUring,
    /// How SQEs name the file.
    target: Target,
    /// Most SQEs in flight at once (the SQ size; the CQ is twice that, so
    /// completions can never overflow it).
    depth: usize,
    /// Whether the file is `O_DIRECT` (keeps injected short writes aligned).
    direct: bool,
    /// Path, for error messages.
    path: PathBuf,
    /// Injected faults.
    faults: Faults,
    /// Counters the faults key on.
    fault_counters: FaultCounters,
    /// Counters for callers.
    stats: UringStats,
    /// Why the ring must not be entered again, once it broke.
    broken: Option<String>,
    /// Reused buffer of reaped `(user_data, result)` pairs.
    reaped: Vec<(u64, i32)>,
    /// Whether the arena is registered with this ring.
    buffers: BufferRegistration,
    /// The registered arena's address range `[start, end)`, once it is.
    fixed_range: Option<(usize, usize)>,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("target", &self.target)
            .field("depth", &self.depth)
            .field("direct", &self.direct)
            .field("faults", &self.faults)
            .field("stats", &self.stats)
            .field("broken", &self.broken)
            .field("buffers", &self.buffers)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Sets up a ring of `entries` SQEs (clamped by the kernel) for `fd`
    /// and registers `fd` as fixed file 0 (falling back to the plain fd if
    /// registration is refused). `fd` must stay open as long as the ring.
    /// With `registered_buffers`, the ring registers the buffer arena on
    /// first use.
    pub(crate) fn new(
        fd: RawFd,
        entries: u32,
        direct: bool,
        path: PathBuf,
        faults: Faults,
        registered_buffers: bool,
    ) -> io::Result<Self> {
        let ring = IoUring::builder().setup_clamp().build(entries.max(1))?;
        let target = match ring.submitter().register_files(&[fd]) {
            Ok(()) => Target::Fixed(0),
            Err(_) => Target::Fd(fd),
        };
        let depth = usize::try_from(ring.params().sq_entries())
            .unwrap_or(1)
            .max(1);
        Ok(Self {
            ring,
            target,
            depth,
            direct,
            path,
            faults,
            fault_counters: FaultCounters::default(),
            stats: UringStats::default(),
            broken: None,
            reaped: Vec::with_capacity(depth.saturating_mul(2)),
            buffers: if registered_buffers {
                BufferRegistration::NotYet
            } else {
                BufferRegistration::Off
            },
            fixed_range: None,
        })
    }

    /// Whether this ring uses the registered-buffer arena.
    pub(crate) fn buffer_registration(&self) -> BufferRegistration {
        self.buffers.clone()
    }

    /// Registers the arena with the ring if it is not yet and one of `ops`
    /// transfers into or out of it (see the module docs). A refusal is
    /// recorded, not returned: the call goes on with plain operations.
    fn register_arena_if_used(&mut self, ops: &[Op<'_>]) {
        if self.buffers != BufferRegistration::NotYet {
            return;
        }
        let Some(arena) = Arena::existing() else {
            return;
        };
        let (start, len) = arena.range();
        if !ops.iter().any(|op| within(op.ptr, op.len, start, len)) {
            return;
        }
        if let Some(why) = arena.refused() {
            self.buffers = BufferRegistration::Unavailable(why.to_string());
            return;
        }
        if let Err(why) = arena.reserve_registration() {
            self.buffers = BufferRegistration::Unavailable(why);
            return;
        }
        let res = match self.faults.fail_buffer_registration {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            // SAFETY: the iovec names the arena's block, which is allocated
            // for the rest of the process and never moves; registering only
            // pins its pages. The kernel touches them only for the fixed
            // SQEs this ring submits, each of which points into a buffer
            // the current call borrows (see the buffer-lifetime invariant).
            None => unsafe { self.ring.submitter().register_buffers(&[arena.iovec()]) },
        };
        match res {
            Ok(()) => {
                self.buffers = BufferRegistration::Registered;
                self.fixed_range = Some((start, start.saturating_add(len)));
            }
            Err(e) => {
                arena.release_registration();
                let why = registration_refused(&e);
                arena.note_refused(&why);
                self.buffers = BufferRegistration::Unavailable(why);
            }
        }
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> UringStats {
        self.stats
    }

    /// Counts a call served by the blocking fallback.
    pub(crate) fn note_sync_fallback(&mut self) {
        self.stats.sync_fallbacks += 1;
    }

    /// Replaces the injected faults and restarts their counters.
    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
        self.fault_counters = FaultCounters::default();
    }

    /// Whether the file is registered with the ring (fixed file).
    pub(crate) fn registered_file(&self) -> bool {
        matches!(self.target, Target::Fixed(_))
    }

    /// The SQ size: how many SQEs one submission can carry.
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// Why the ring is unusable, once it is.
    pub(crate) fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Runs every op to completion: pushes as many SQEs as the ring holds
    /// (all of them when they fit), enters the kernel once to submit them
    /// and wait, reaps each completion, resubmits remainders of short
    /// transfers and retries `EINTR`/`EAGAIN` (at most [`MAX_RETRIES`] per
    /// op), refilling the ring as it drains. The first hard error stops
    /// further submissions; the call still waits for everything in flight
    /// and then returns that error.
    ///
    /// Ranges must have been checked with [`check_range`] (and alignment
    /// by the caller) before.
    pub(crate) fn run(&mut self, ops: &mut [Op<'_>]) -> io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(io::Error::other(format!(
                "{}: io_uring ring is unusable: {why}",
                self.path.display()
            )));
        }
        self.register_arena_if_used(ops);
        // Ops with nothing left to transfer (empty buffers) need no SQE.
        let mut pending: VecDeque<usize> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op.kind, Kind::Fsync { .. }) || op.done < op.len)
            .map(|(idx, _)| idx)
            .collect();
        let mut run = Run {
            ring: self,
            in_flight: 0,
        };
        let mut error: Option<io::Error> = None;
        let mut enter_failures = 0u32;
        loop {
            if error.is_none() {
                run.fill(ops, &mut pending, &mut error);
            }
            if error.is_some() {
                pending.clear();
            }
            if run.in_flight == 0 {
                break;
            }
            // With more to submit, wake up once a quarter of the ring is
            // free to refill it; otherwise wait for everything.
            let want = if pending.is_empty() {
                run.in_flight
            } else {
                (run.ring.depth / 4).clamp(1, run.in_flight)
            };
            if let Err(e) = run.enter_retrying(want, &mut enter_failures) {
                // Leave the rest to `drain`, which knows how to stop
                // safely on a broken ring.
                error.get_or_insert(e);
                break;
            }
            run.reap(ops, &mut pending, &mut error);
        }
        run.drain();
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Drives an [`IoFile::write_stream`](holt_backend_sync::IoFile::write_stream):
    /// takes writes from `feed` while fewer than the ring's depth are held
    /// (waiting for one only when none is), checks each with `check`,
    /// submits them as they come, and after every wake-up hands each
    /// finished write back to `feed` (short writes and `EINTR`/`EAGAIN` are
    /// resubmitted as in [`Ring::run`]). So as many writes are in flight as
    /// the feed has ready, up to the depth, and a buffer goes back as soon
    /// as its completion is reaped. The first error stops taking writes;
    /// the call waits for everything in flight, hands every write back
    /// (failed ones with `ok == false`) and returns that error.
    pub(crate) fn run_stream(
        &mut self,
        feed: &mut dyn WriteFeed,
        check: &dyn Fn(&[u8], u64) -> io::Result<()>,
    ) -> io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(io::Error::other(format!(
                "{}: io_uring ring is unusable: {why}",
                self.path.display()
            )));
        }
        // The writes that own the buffers of `ops`, by the same index.
        // Declared before `run`, so dropped after it: `run`'s drop reaps
        // every SQE (see `Run`) before a buffer can go.
        let mut writes: Vec<Option<StreamWrite>> = Vec::new();
        let mut ops: Vec<Op<'static>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut pending: VecDeque<usize> = VecDeque::new();
        let mut held = 0usize;
        let mut ended = false;
        let mut error: Option<io::Error> = None;
        let mut enter_failures = 0u32;
        let mut run = Run {
            ring: self,
            in_flight: 0,
        };
        loop {
            while error.is_none() && !ended && held < run.ring.depth {
                let write = match feed.next(held == 0) {
                    Feed::Write(write) => write,
                    Feed::NotYet => break,
                    Feed::End => {
                        ended = true;
                        break;
                    }
                };
                let (ptr, len) = {
                    let bytes = write.buf.bytes();
                    (bytes.as_ptr().cast_mut(), bytes.len())
                };
                if len == 0 {
                    feed.done(write, true);
                    continue;
                }
                if let Err(e) = check(write.buf.bytes(), write.offset) {
                    feed.done(write, false);
                    error = Some(e);
                    break;
                }
                // The op points into the buffer `write` owns; `write` stays
                // in `writes` until the op's completion is reaped (see the
                // SAFETY comment in `Run::fill`).
                let op = Op::new(Kind::Write, ptr, len, write.offset);
                let idx = match free.pop() {
                    Some(idx) => {
                        ops[idx] = op;
                        writes[idx] = Some(write);
                        idx
                    }
                    None => {
                        ops.push(op);
                        writes.push(Some(write));
                        ops.len() - 1
                    }
                };
                run.ring.register_arena_if_used(&ops[idx..=idx]);
                pending.push_back(idx);
                held += 1;
            }
            if error.is_none() {
                run.fill(&mut ops, &mut pending, &mut error);
            }
            if error.is_some() {
                pending.clear();
            }
            if run.in_flight > 0 {
                // Wake at every completion: a buffer back early lets the
                // round capture (and disarm) its next frame sooner.
                if let Err(e) = run.enter_retrying(1, &mut enter_failures) {
                    error.get_or_insert(e);
                    break;
                }
                run.reap(&mut ops, &mut pending, &mut error);
            }
            // Hand back every write that is neither in flight nor queued
            // for a resubmission.
            for (idx, slot) in writes.iter_mut().enumerate() {
                let finished = slot.is_some() && !ops[idx].in_flight && !pending.contains(&idx);
                if let Some(write) = slot.take_if(|_| finished) {
                    feed.done(write, ops[idx].done >= ops[idx].len);
                    free.push(idx);
                    held -= 1;
                }
            }
            if held == 0 && (ended || error.is_some()) {
                break;
            }
        }
        run.drain();
        // Writes still held here (a broken ring, or an enter error that
        // ended the loop) come back failed; the kernel owns none of them
        // any more (`drain`).
        for write in writes.iter_mut().filter_map(Option::take) {
            feed.done(write, false);
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The SQE for the rest of `op` (from `op.done`), tagged with `idx`.
    fn entry(&self, idx: usize, op: &Op<'_>) -> io::Result<squeue::Entry> {
        let entry = match op.kind {
            Kind::Fsync { datasync } => {
                let flags = if datasync {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                match self.target {
                    Target::Fixed(i) => opcode::Fsync::new(types::Fixed(i)).flags(flags).build(),
                    Target::Fd(fd) => opcode::Fsync::new(types::Fd(fd)).flags(flags).build(),
                }
            }
            Kind::Read | Kind::Write => {
                let rest = op.len.saturating_sub(op.done);
                let len = u32::try_from(rest.min(MAX_SQE_LEN))
                    .map_err(|_| io::Error::other("SQE length does not fit u32"))?;
                let at = u64::try_from(op.done)
                    .ok()
                    .and_then(|done| op.offset.checked_add(done))
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidInput, "file offset overflows")
                    })?;
                let ptr = op.ptr.wrapping_add(op.done);
                let rest = usize::try_from(len).unwrap_or(usize::MAX);
                if let Some((start, end)) = self.fixed_range {
                    if within(ptr, rest, start, end - start) {
                        return Ok(self
                            .fixed_entry(op.kind, ptr, len, at)
                            .user_data(tag_of(idx)?));
                    }
                }
                match (op.kind, self.target) {
                    (Kind::Read, Target::Fixed(i)) => opcode::Read::new(types::Fixed(i), ptr, len)
                        .offset(at)
                        .build(),
                    (Kind::Read, Target::Fd(fd)) => opcode::Read::new(types::Fd(fd), ptr, len)
                        .offset(at)
                        .build(),
                    (_, Target::Fixed(i)) => {
                        opcode::Write::new(types::Fixed(i), ptr.cast_const(), len)
                            .offset(at)
                            .build()
                    }
                    (_, Target::Fd(fd)) => opcode::Write::new(types::Fd(fd), ptr.cast_const(), len)
                        .offset(at)
                        .build(),
                }
            }
        };
        Ok(entry.user_data(tag_of(idx)?))
    }

    /// `READ_FIXED` / `WRITE_FIXED` of `len` bytes at `ptr` (inside the
    /// registered arena, buffer index 0) at file offset `at`.
    fn fixed_entry(&self, kind: Kind, ptr: *mut u8, len: u32, at: u64) -> squeue::Entry {
        match (kind, self.target) {
            (Kind::Read, Target::Fixed(i)) => opcode::ReadFixed::new(types::Fixed(i), ptr, len, 0)
                .offset(at)
                .build(),
            (Kind::Read, Target::Fd(fd)) => opcode::ReadFixed::new(types::Fd(fd), ptr, len, 0)
                .offset(at)
                .build(),
            (_, Target::Fixed(i)) => {
                opcode::WriteFixed::new(types::Fixed(i), ptr.cast_const(), len, 0)
                    .offset(at)
                    .build()
            }
            (_, Target::Fd(fd)) => opcode::WriteFixed::new(types::Fd(fd), ptr.cast_const(), len, 0)
                .offset(at)
                .build(),
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.buffers == BufferRegistration::Registered {
            if let Some(arena) = Arena::existing() {
                arena.release_registration();
            }
        }
    }
}

/// An op index as SQE user data.
fn tag_of(idx: usize) -> io::Result<u64> {
    u64::try_from(idx).map_err(|_| io::Error::other("op index overflows"))
}

/// Whether `[ptr, ptr + len)` is non-empty and lies inside
/// `[start, start + area)`.
fn within(ptr: *mut u8, len: usize, start: usize, area: usize) -> bool {
    let addr = ptr as usize;
    len > 0
        && addr >= start
        && addr
            .checked_add(len)
            .is_some_and(|end| end <= start.saturating_add(area))
}

/// Whether an `io_uring_enter` error is worth retrying.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

/// One [`Ring::run`] in progress: the ring and how many of our SQEs the
/// kernel has not answered yet. Dropping it waits for all of them
/// ([`Run::drain`]), so no path out of `run` — unwinding included — can
/// release the callers' buffers early.
struct Run<'r> {
    /// The ring being driven.
    ring: &'r mut Ring,
    /// SQEs pushed whose CQE has not been reaped.
    in_flight: usize,
}

impl Run<'_> {
    /// Pushes SQEs for pending ops while the ring has room.
    fn fill(
        &mut self,
        ops: &mut [Op<'_>],
        pending: &mut VecDeque<usize>,
        error: &mut Option<io::Error>,
    ) {
        while self.in_flight < self.ring.depth {
            let Some(&idx) = pending.front() else { break };
            let Some(op) = ops.get_mut(idx) else {
                pending.pop_front();
                continue;
            };
            let entry = match self.ring.entry(idx, op) {
                Ok(entry) => entry,
                Err(e) => {
                    error.get_or_insert(e);
                    return;
                }
            };
            // SAFETY: the entry points at `op`'s buffer (from `op.done` to
            // its end; none for fsync). `op` borrows that buffer from the
            // caller for the whole `Ring::run` call (`Op<'a>` holds the
            // `&'a [u8]` / `&'a mut [u8]` lifetime), so it stays allocated
            // and cannot move; `run` does not return, and `Run` is not
            // dropped, before `drain` has reaped this entry's CQE (or
            // established that the kernel never consumed it and never
            // will). For reads, the `&mut` borrow moved into the op keeps
            // the caller from touching the buffer meanwhile. A fixed entry
            // (READ_FIXED/WRITE_FIXED) names the same bytes, inside the
            // registered arena, which is never freed or moved; the slot
            // they lie in goes back to the arena's free list (and so to
            // another owner) only when the `AlignedBuf` owning it drops,
            // which the caller's borrow rules out until `run` returns —
            // also when the engine wraps that buffer in a frame buffer,
            // whose slices borrow the wrapper. An op of `Ring::run_stream`
            // has no borrow: its buffer is owned by the `StreamWrite` the
            // call keeps in `writes` under the op's index until this
            // entry's CQE is reaped (`writes` outlives `Run`, whose drop
            // drains), and `StableBuf` promises that memory stays put and
            // unwritten while that value lives.
            let pushed = unsafe { self.ring.ring.submission().push(&entry) };
            if pushed.is_err() {
                break; // SQ full: submit what we have first
            }
            pending.pop_front();
            op.in_flight = true;
            self.in_flight += 1;
            self.ring.stats.sqes += 1;
            let code = entry.get_opcode();
            if code == u32::from(opcode::ReadFixed::CODE)
                || code == u32::from(opcode::WriteFixed::CODE)
            {
                self.ring.stats.fixed_sqes += 1;
            }
        }
    }

    /// Submits queued SQEs and waits for at least `want` completions.
    fn enter(&mut self, want: usize) -> io::Result<()> {
        let queued = self.ring.ring.submission().len();
        self.ring.stats.enters += 1;
        let submitted = self.ring.ring.submit_and_wait(want)?;
        let at_once = u64::try_from(submitted.max(queued)).unwrap_or(u64::MAX);
        let stats = &mut self.ring.stats;
        stats.max_submitted_at_once = stats.max_submitted_at_once.max(at_once);
        Ok(())
    }

    /// [`Run::enter`], with `failures` counting the calls that failed in
    /// a row: a transient failure (see [`is_transient`]) within the retry
    /// bound answers `Ok` so the caller reaps and enters again (after a
    /// yield, unless it was `EINTR`); any other failure, or one past the
    /// bound, is returned.
    fn enter_retrying(&mut self, want: usize, failures: &mut u32) -> io::Result<()> {
        match self.enter(want) {
            Ok(()) => {
                *failures = 0;
                Ok(())
            }
            Err(e) => {
                *failures += 1;
                if !is_transient(&e) || *failures > MAX_ENTER_RETRIES {
                    return Err(e);
                }
                if e.raw_os_error() != Some(libc::EINTR) {
                    std::thread::yield_now();
                }
                Ok(())
            }
        }
    }

    /// Moves every available CQE into `self.ring.reaped`, returning how
    /// many there were.
    fn take_cqes(&mut self) -> usize {
        let ring = &mut *self.ring;
        ring.reaped.clear();
        ring.reaped.extend(
            ring.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result())),
        );
        ring.reaped.len()
    }

    /// Reaps available completions and acts on each: done, resubmit the
    /// remainder, retry, or record the call's error.
    fn reap(
        &mut self,
        ops: &mut [Op<'_>],
        pending: &mut VecDeque<usize>,
        error: &mut Option<io::Error>,
    ) {
        self.take_cqes();
        let reaped = std::mem::take(&mut self.ring.reaped);
        for &(tag, res) in &reaped {
            self.complete(ops, tag, res, pending, error);
        }
        self.ring.reaped = reaped;
    }

    /// Handles one completion.
    fn complete(
        &mut self,
        ops: &mut [Op<'_>],
        tag: u64,
        res: i32,
        pending: &mut VecDeque<usize>,
        error: &mut Option<io::Error>,
    ) {
        let Some(idx) = usize::try_from(tag).ok() else {
            return;
        };
        let Some(op) = ops.get_mut(idx).filter(|op| op.in_flight) else {
            return; // not ours to count: never happens with a private ring
        };
        op.in_flight = false;
        self.in_flight = self.in_flight.saturating_sub(1);
        let ring = &mut *self.ring;
        ring.stats.completions += 1;
        let (res, injected) = ring.faults.apply(
            &mut ring.fault_counters,
            op.kind.completion_kind(),
            res,
            ring.direct,
        );
        if injected {
            ring.stats.injected += 1;
        }
        if res < 0 {
            let errno = res.saturating_neg();
            let retryable = errno == libc::EINTR || errno == libc::EAGAIN;
            if retryable && op.retries < MAX_RETRIES && error.is_none() {
                op.retries += 1;
                ring.stats.retries += 1;
                pending.push_back(idx);
            } else {
                error.get_or_insert(io::Error::from_raw_os_error(errno));
            }
            return;
        }
        if matches!(op.kind, Kind::Fsync { .. }) {
            return;
        }
        let n = usize::try_from(res).unwrap_or(0);
        if n == 0 {
            error.get_or_insert(stalled(ring, op));
            return;
        }
        op.done = op.done.saturating_add(n).min(op.len);
        if op.done < op.len {
            ring.stats.short_resubmits += 1;
            if error.is_none() {
                pending.push_back(idx);
            }
        }
    }

    /// Waits until the kernel has answered every SQE we pushed, discarding
    /// the results (the call already has its outcome). On a ring that
    /// fails to enter: stops once the kernel owns none of our SQEs (marking
    /// the ring broken so the unconsumed ones are never submitted), else
    /// keeps waiting and finally aborts — see the module docs.
    fn drain(&mut self) {
        let mut failures = 0u32;
        while self.in_flight > 0 {
            let reaped = self.take_cqes();
            self.ring.stats.completions += u64::try_from(reaped).unwrap_or(0);
            self.in_flight = self.in_flight.saturating_sub(reaped);
            if self.in_flight == 0 {
                break;
            }
            let Err(e) = self.enter(self.in_flight) else {
                failures = 0;
                continue;
            };
            failures = failures.saturating_add(1);
            if is_transient(&e) && failures <= MAX_ENTER_RETRIES {
                continue;
            }
            let reaped = self.take_cqes();
            self.ring.stats.completions += u64::try_from(reaped).unwrap_or(0);
            self.in_flight = self.in_flight.saturating_sub(reaped);
            let unconsumed = self.ring.ring.submission().len();
            if self.in_flight <= unconsumed {
                // The kernel holds none of our SQEs; the unconsumed ones
                // die with a ring that is never entered again.
                self.ring.broken = Some(format!("io_uring_enter failed: {e}"));
                self.in_flight = 0;
                break;
            }
            if failures >= ABORT_AFTER_FAILED_WAITS {
                eprintln!(
                    "holt-backend-uring: {}: cannot reap {} in-flight io_uring \
                     operations ({e}); aborting rather than release their buffers",
                    self.ring.path.display(),
                    self.in_flight
                );
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.drain();
    }
}

/// The error for a transfer that made no progress: end of file for a
/// read, a stalled write otherwise (as the sync driver reports them).
fn stalled(ring: &Ring, op: &Op<'_>) -> io::Error {
    let at = u64::try_from(op.done)
        .ok()
        .and_then(|done| op.offset.checked_add(done))
        .unwrap_or(u64::MAX);
    let path = ring.path.display();
    let (wanted, offset, done) = (op.len, op.offset, op.done);
    if op.kind == Kind::Read {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{path}: end of file at offset {at} reading {wanted} bytes \
                 at offset {offset} ({done} read)"
            ),
        )
    } else {
        io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "{path}: write of {wanted} bytes at offset {offset} stalled \
                 after {done} bytes"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;

    fn ring_for(file: &std::fs::File, entries: u32, faults: Faults) -> Ring {
        Ring::new(file.as_raw_fd(), entries, false, "t".into(), faults, true).unwrap()
    }

    #[test]
    fn ranges_are_checked() {
        check_range(0, 4096).unwrap();
        check_range(i64::MAX as u64 - 10, 10).unwrap();
        for (off, len) in [(u64::MAX, 1), (i64::MAX as u64, 1)] {
            let err = check_range(off, len).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn empty_run_is_a_no_op() {
        let file = tempfile::tempfile().unwrap();
        let mut ring = ring_for(&file, 4, Faults::none());
        ring.run(&mut []).unwrap();
        assert_eq!(ring.stats().enters, 0);
        assert!(ring.registered_file());
        assert!(ring.depth() >= 4);
    }

    #[test]
    fn writes_more_than_the_ring_holds_and_reads_back() {
        let file = tempfile::tempfile().unwrap();
        let mut ring = ring_for(&file, 2, Faults::none());
        let bufs: Vec<Vec<u8>> = (0..9u8).map(|i| vec![i; 100]).collect();
        let mut ops: Vec<Op<'_>> = bufs
            .iter()
            .zip(0u64..)
            .map(|(b, i)| Op::write(b, i * 100))
            .collect();
        ring.run(&mut ops).unwrap();
        let stats = ring.stats();
        assert_eq!(stats.sqes, 9);
        assert_eq!(stats.completions, 9);
        assert!(stats.max_submitted_at_once <= 2);
        let mut back = vec![0u8; 900];
        ring.run(&mut [Op::read(&mut back, 0)]).unwrap();
        for (i, chunk) in back.chunks(100).enumerate() {
            assert!(chunk.iter().all(|&b| usize::from(b) == i));
        }
        ring.run(&mut [Op::fsync(true), Op::fsync(false)]).unwrap();
    }

    #[test]
    fn error_stops_submission_but_reaps_everything() {
        let file = tempfile::tempfile().unwrap();
        // Fail the first completion; the ring holds 2, so ops beyond the
        // first two are never submitted.
        let faults = Faults {
            fail_nth_completion: Some((1, libc::ENOSPC)),
            ..Faults::default()
        };
        let mut ring = ring_for(&file, 2, faults);
        let bufs: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 10]).collect();
        let mut ops: Vec<Op<'_>> = bufs
            .iter()
            .zip(0u64..)
            .map(|(b, i)| Op::write(b, i * 10))
            .collect();
        let err = ring.run(&mut ops).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        let stats = ring.stats();
        assert_eq!(stats.sqes, stats.completions);
        assert!(stats.sqes < 6, "{stats:?}");
        assert!(ops.iter().all(|op| !op.in_flight));
        // The ring is still healthy; finished ops are not resubmitted.
        ring.set_faults(Faults::none());
        let sqes = ring.stats().sqes;
        ring.run(&mut ops[..1]).unwrap();
        assert_eq!(ring.stats().sqes, sqes + 1, "only the failed op is redone");
        let mut ops: Vec<Op<'_>> = bufs
            .iter()
            .zip(0u64..)
            .map(|(b, i)| Op::write(b, i * 10))
            .collect();
        ring.run(&mut ops).unwrap();
        ring.run(&mut [Op::write(b"", 0)]).unwrap();
        assert!(ring.broken().is_none());
    }

    #[test]
    fn read_past_end_is_unexpected_eof() {
        let file = tempfile::tempfile().unwrap();
        let mut ring = ring_for(&file, 4, Faults::none());
        ring.run(&mut [Op::write(b"abc", 0)]).unwrap();
        let mut buf = [0u8; 8];
        let err = ring.run(&mut [Op::read(&mut buf, 0)]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("(3 read)"), "{err}");
    }

    #[test]
    fn stalled_write_is_write_zero() {
        let file = tempfile::tempfile().unwrap();
        let ring = ring_for(&file, 4, Faults::none());
        let op = Op::write(b"abc", 7);
        let err = stalled(&ring, &op);
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert!(err.to_string().contains("stalled after 0 bytes"), "{err}");
    }

    #[test]
    fn transient_enter_errors() {
        for errno in [libc::EINTR, libc::EAGAIN, libc::EBUSY] {
            assert!(is_transient(&io::Error::from_raw_os_error(errno)));
        }
        assert!(!is_transient(&io::Error::from_raw_os_error(libc::EBADF)));
    }
}
