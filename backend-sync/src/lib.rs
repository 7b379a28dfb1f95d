//! Positioned file I/O for holt: the I/O driver contract and its
//! pread/pwrite implementation.
//!
//! Every byte holt persists — data file, manifest, WAL — and every
//! directory change it depends on (create, rename, remove, directory
//! fsync) goes through an [`IoDriver`] and the [`IoFile`]s it opens. That
//! one seam is what lets a test wrap the real driver to inject faults or
//! simulate power loss and see *all* of the engine's I/O. This crate
//! defines the contract and [`SyncDriver`], which meets it with blocking
//! `pread`/`pwrite`; `holt-backend-uring` meets it on `io_uring`.
//!
//! # What a driver guarantees
//!
//! * **Whole buffers.** [`IoFile::read_at`] fills the entire buffer or
//!   fails; reaching end of file first is
//!   [`io::ErrorKind::UnexpectedEof`](std::io::ErrorKind::UnexpectedEof).
//!   [`IoFile::write_at`] writes the entire buffer or fails. Short
//!   transfers and `EINTR` are retried inside the driver (`EINTR` a bounded
//!   number of times), never surfaced as partial success.
//!   [`IoFile::write_batch`] writes its entries in order, all or up to the
//!   first error; [`IoFile::read_batch`] fills every buffer of a batch in
//!   full or fails (after an error the buffers' contents are unspecified).
//!   [`IoFile::write_stream`] writes what a [`WriteFeed`] hands out, each
//!   write owning its buffer until it is handed back, and stops at the
//!   first error with every write handed back.
//!   All three are provided methods that loop over the single calls; a
//!   driver that can keep many transfers in flight overrides them.
//! * **Durability only after a sync.** A write is durable — survives power
//!   loss — only once a later [`IoFile::sync_data`] (`fdatasync`) or
//!   [`IoFile::sync_all`] (`fsync`) on that file has returned `Ok`. Until
//!   then a crash may keep any subset of the unsynced writes, or tear one.
//!   A failed sync leaves the unsynced writes in an unknown state; callers
//!   must not assume a retry makes them durable.
//! * **Directory entries only after `sync_dir`.** Creating, renaming or
//!   removing a file changes its directory, which is durable only after
//!   [`IoDriver::sync_dir`] on that directory returns `Ok`. The atomic
//!   replace pattern is: write the new file, `sync_all` it, `rename` it
//!   over the old one, `sync_dir` the parent.
//! * **Alignment on direct files.** When a file is open with `O_DIRECT`
//!   ([`IoFile::is_direct`]), the buffer address, the buffer length and the
//!   file offset of every read and write must be multiples of [`ALIGN`]
//!   (4096). A driver checks this before issuing the I/O and fails with
//!   [`io::ErrorKind::InvalidInput`](std::io::ErrorKind::InvalidInput)
//!   (see [`check_direct_alignment`]), writing nothing. [`AlignedBuf`]
//!   gives buffers that qualify. Buffered files take any alignment. Empty
//!   reads and writes are no-ops that always succeed.
//! * **Direct I/O is a request.** [`OpenOptions::direct`] asks for
//!   `O_DIRECT`; a filesystem that refuses it (tmpfs answers `EINVAL`) gets
//!   buffered I/O, and [`IoFile::is_direct`] reports which one happened.
//!   The durability rules are the same either way.
//! * **Errors pass through.** OS errors are returned unchanged, so callers
//!   can match on [`kind`](std::io::Error::kind) (`StorageFull` for disk
//!   full, `NotFound`, ...) and add their own context.
//! * **Buffers from the driver are an optimisation, not a requirement.**
//!   [`IoDriver::alloc_buffer`] hands out aligned, zeroed buffers that the
//!   driver can move more cheaply (io_uring: registered with the ring); any
//!   buffer that meets the alignment rule works with any driver.
//!
//! Files and directories are named by [`Path`](std::path::Path); the
//! traits are object safe and used as `Arc<dyn IoDriver>` and
//! `Arc<dyn IoFile>`. [`DirLock`] keeps a second process (or handle) from
//! opening the same database directory.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use holt_backend_sync::{AlignedBuf, IoDriver, OpenOptions, SyncDriver, ALIGN};
//!
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let driver: Arc<dyn IoDriver> = Arc::new(SyncDriver);
//!
//! let path = dir.path().join("data");
//! let file = driver.open(&path, OpenOptions { create: true, direct: true })?;
//! driver.sync_dir(dir.path())?; // the new directory entry is now durable
//!
//! let mut page = AlignedBuf::new(ALIGN)?;
//! page[..5].copy_from_slice(b"holt!");
//! file.write_at(&page, 0)?;
//! file.sync_data()?; // the page is now durable
//!
//! let mut back = AlignedBuf::new(ALIGN)?;
//! file.read_at(&mut back, 0)?;
//! assert_eq!(&back[..5], b"holt!");
//! assert_eq!(file.len()?, ALIGN as u64);
//! # Ok(())
//! # }
//! ```

mod aligned;
pub mod driver;
pub mod lock;
mod sync_driver;
mod sync_file;
mod sys;

pub use aligned::{AlignedBuf, BufferArena};
pub use driver::{
    check_direct_alignment, Feed, IoDriver, IoFile, OpenOptions, StableBuf, StreamWrite, WriteFeed,
    ALIGN,
};
pub use lock::DirLock;
pub use sync_driver::SyncDriver;
pub use sync_file::SyncFile;
