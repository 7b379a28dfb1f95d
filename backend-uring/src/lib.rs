//! io_uring I/O driver for holt.
//!
//! [`UringDriver`] implements the [`IoDriver`] contract of
//! `holt-backend-sync` on Linux io_uring. It exists for checkpoint rounds:
//! a round streams its captured frame images (512 KiB, 4096-aligned,
//! `O_DIRECT`) through **one** [`IoFile::write_stream`] call, which
//! [`UringFile`] serves from one submission queue of `IORING_OP_WRITE`s,
//! topped up from the stream as completions are reaped (each image's
//! buffer goes back as soon as its own write completed), or writes a small
//! round's images with one [`IoFile::write_batch`] (one submission, in
//! ring-sized refills when the batch is larger than the ring); then
//! [`IoFile::sync_data`] as one `IORING_OP_FSYNC` with `DATASYNC`. Batched
//! reads ([`IoFile::read_batch`]), single reads, writes and syncs go
//! through the ring too; metadata calls (`len`,
//! `set_len`, `allocate`) and directory operations are the blocking ones
//! of [`SyncDriver`]. Every guarantee of the contract holds unchanged —
//! whole buffers, `EINTR` retried, alignment checked before anything is
//! submitted, OS errors passed through — except that a failed batch may
//! have written any subset of its entries, not only a prefix (the writes
//! run concurrently), and so may a failed stream.
//!
//! Each file owns a ring (128 SQEs by default, [`UringConfig`]) with its
//! descriptor registered as a fixed file, behind a mutex: a batch owns the
//! ring until it is done; a single read/write/sync that finds the ring busy
//! uses the blocking syscall instead of queueing behind the batch.
//!
//! # Batched reads
//!
//! [`IoFile::read_batch`] (cold frame loads of a scan or prefetch) puts
//! one `IORING_OP_READ` per entry in the ring — all at once when they fit,
//! unlinked — and reaps every completion: a short read resubmits the rest,
//! end of file is `UnexpectedEof`, `EINTR`/`EAGAIN` are retried at most
//! [`MAX_RETRIES`] times, any other error fails the call once everything
//! in flight has completed. It mirrors `write_batch`, except that a read
//! batch finding the ring busy (a checkpoint's writes) is served by
//! `pread`s instead of waiting.
//!
//! # Registered buffers
//!
//! The process has one buffer arena, never freed, created by the first
//! [`IoDriver::reserve_buffers`] (sized to the slots it asks for) or
//! [`IoDriver::alloc_buffer`] (sized to [`ARENA_CAP`], 64 MiB): at most
//! that many [`SLOT_BYTES`] (512 KiB, one frame image) slots, within
//! `RLIMIT_MEMLOCK` — the whole request with `CAP_IPC_LOCK` or an
//! unlimited rlimit (the kernel then does not charge registered memory),
//! else at most half of the soft limit. The engine reserves at its first
//! checkpoint round, for as many slots as it keeps frame images between
//! rounds, so a process that never checkpoints never builds or pins it.
//! `alloc_buffer` hands out its slots as
//! [`AlignedBuf`](holt_backend_sync::AlignedBuf)s (falling back to the
//! allocator for other sizes or when every slot is out). A ring registers
//! the arena (`IORING_REGISTER_BUFFERS`, one `iovec`) the first time a
//! call hands it a buffer inside it, and from then on moves such buffers
//! with `READ_FIXED`/`WRITE_FIXED`, sparing the kernel the page pinning
//! and mapping of each transfer. Every ring's registration is charged
//! against the same budget; when it is spent the ring keeps using plain
//! `READ`/`WRITE` and [`UringFile::buffer_registration`] says why. When
//! the kernel refuses (`ENOMEM`/`EPERM`), the arena remembers it and
//! hands out no more slots ([`ArenaInfo::refused`]), so buffers become
//! plain ones and no ring retries. [`UringDriver::arena_info`] reports the
//! arena. Registered buffers lower the CPU time per batch; the throughput
//! of a disk-bound batch does not measurably change (see
//! `examples/fixed_buffers.rs`).
//!
//! # Fallback rules
//!
//! [`best_driver`] returns the io_uring driver when [`UringDriver::probe`]
//! succeeds, else [`SyncDriver`], with the reason in
//! [`DriverInfo::fallback_reason`]. The probe fails ([`FallbackReason`])
//! when
//!
//! * `/proc/sys/kernel/io_uring_disabled` is 2, or is 1 and
//!   `io_uring_setup` answers `EPERM` (process not in
//!   `kernel.io_uring_group`);
//! * `io_uring_setup` answers `ENOSYS` (no io_uring) or `EPERM` (seccomp,
//!   container policy);
//! * the kernel lacks `IORING_OP_READ`/`WRITE`/`FSYNC` (before 5.6);
//! * a ring cannot be set up for another reason (`ENOMEM`, ...).
//!
//! After a successful probe, a file whose own ring cannot be created, or
//! whose ring breaks (`io_uring_enter` failing hard), keeps working on
//! blocking syscalls; [`UringFile::fallback_reason`] says why.
//!
//! # The buffer-lifetime invariant
//!
//! An SQE holds a raw pointer into the caller's buffer, which the kernel
//! may read or fill until the completion is posted. The driver never
//! returns — on success, error, or unwinding — while any SQE it submitted
//! is unanswered: each call borrows its buffers for its whole duration,
//! waits for (and checks) every completion, and on the first hard error
//! stops submitting but still reaps everything in flight before returning
//! the error. If the ring itself stops working, the call returns only once
//! the kernel owns none of its SQEs (unconsumed ones stay in a ring that is
//! never entered again); if the kernel still owns some and waiting keeps
//! failing for about a minute, the process aborts instead of freeing
//! memory the kernel may still write into or read from. The `unsafe` that
//! relies on this lives in one module, `ring`.
//!
//! # Fault injection
//!
//! [`Faults`] (via [`UringDriver::with_faults`] or
//! [`UringFile::set_faults`]) rewrites completion results in the reaping
//! loop — short writes or reads every n-th completion, an errno on the
//! n-th — and can refuse the buffer registration, so tests can drive the
//! resubmit, retry, error and fallback paths deterministically. [`UringFile::stats`] counts what happened.
//!
//! # Example
//!
//! ```
//! use holt_backend_sync::{AlignedBuf, OpenOptions, ALIGN};
//! use holt_backend_uring::best_driver;
//!
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let (driver, info) = best_driver();
//! println!("driver {} (fallback: {:?})", info.name, info.fallback_reason);
//!
//! let file = driver.open(&dir.path().join("data"), OpenOptions { create: true, direct: true })?;
//! let frames: Vec<AlignedBuf> = (0..4)
//!     .map(|_| AlignedBuf::new(16 * ALIGN))
//!     .collect::<Result<_, _>>()?;
//! let batch: Vec<(u64, &[u8])> = frames
//!     .iter()
//!     .zip(0u64..)
//!     .map(|(frame, slot)| (slot * (16 * ALIGN) as u64, &frame[..]))
//!     .collect();
//! file.write_batch(&batch)?; // one submission
//! file.sync_data()?; // durable
//! assert_eq!(file.len()?, 4 * 16 * ALIGN as u64);
//! # Ok(())
//! # }
//! ```

mod arena;
mod driver;
mod faults;
mod file;
mod ring;

pub use arena::{ArenaInfo, ARENA_CAP, SLOT_BYTES};
pub use driver::{best_driver, DriverInfo, FallbackReason, UringDriver};
pub use faults::Faults;
pub use file::{UringConfig, UringFile, DEFAULT_RING_ENTRIES};
pub use ring::{BufferRegistration, UringStats, MAX_RETRIES};

#[doc(no_inline)]
pub use holt_backend_sync::{IoDriver, IoFile, OpenOptions, SyncDriver};
