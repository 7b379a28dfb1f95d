//! The I/O driver contract: [`IoDriver`] (files and directories by path)
//! and [`IoFile`] (positioned whole-buffer I/O on one open file).
//!
//! Both traits are object safe and used as `Arc<dyn IoDriver>` /
//! `Arc<dyn IoFile>`, so a test can wrap a real driver to fail the N-th
//! call, tear a write, or keep a "durable" image apart from the "live" one
//! and drop everything unsynced at a simulated crash. Keep them small:
//! every method added here is a method every wrapper must forward. The
//! provided methods ([`IoFile::write_batch`], [`IoFile::read_batch`],
//! [`IoDriver::alloc_buffer`], [`IoDriver::reserve_buffers`]) are correct without forwarding — they fall
//! back to the single calls and plain buffers — but a wrapper should
//! forward them, or the inner driver's batching and registered buffers
//! never run under it.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::aligned::AlignedBuf;

/// Alignment, in bytes, of buffer address, length and file offset that
/// `O_DIRECT` I/O requires. 4096 covers every logical block size holt
/// runs on (512 and 4096 byte sectors).
pub const ALIGN: usize = 4096;

/// [`ALIGN`] as a file offset.
const ALIGN_U64: u64 = ALIGN as u64;

/// How [`IoDriver::open`] opens a file. Files are always opened for reading
/// and writing and never truncated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Create the file if it does not exist. Without it a missing file is
    /// an error of kind [`io::ErrorKind::NotFound`].
    pub create: bool,
    /// Try `O_DIRECT`. A filesystem that refuses it (tmpfs answers
    /// `EINVAL`) gets buffered I/O instead; [`IoFile::is_direct`] tells
    /// which one the caller got.
    pub direct: bool,
}

/// A buffer whose bytes stay where they are while the value lives, so an
/// I/O driver may hold it — and the kernel read from it — after the call
/// that handed it over has returned ([`IoFile::write_stream`]).
///
/// # Safety
/// [`StableBuf::bytes`] must return the same memory (address and length)
/// on every call, and that memory must stay allocated and unchanged for
/// as long as the value lives: moving the value must not move it, and no
/// shared access may write it (no interior mutability over those bytes).
/// Memory owned through a heap pointer, written only through `&mut self`,
/// qualifies.
#[allow(unsafe_code)] // declaring the contract; implementing it is `unsafe`
pub unsafe trait StableBuf: Send {
    /// The bytes to write.
    fn bytes(&self) -> &[u8];
    /// The value as `Any`, so the caller can take its own type back from
    /// a [`StreamWrite`] the driver returns.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

/// One write of a [`WriteFeed`]: all of `buf` at `offset`. The driver owns
/// it from [`WriteFeed::next`] until it hands it back through
/// [`WriteFeed::done`], which is only after the write has finished (on
/// io_uring: its completion reaped).
pub struct StreamWrite {
    /// File offset of the first byte.
    pub offset: u64,
    /// The caller's tag (for example which blob this is).
    pub tag: u64,
    /// The bytes, owned by the driver while the write is in flight.
    pub buf: Box<dyn StableBuf>,
}

impl Debug for StreamWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWrite")
            .field("offset", &self.offset)
            .field("tag", &self.tag)
            .field("len", &self.buf.bytes().len())
            .finish()
    }
}

/// What [`WriteFeed::next`] has.
#[derive(Debug)]
pub enum Feed {
    /// A write to start.
    Write(StreamWrite),
    /// Nothing yet (only when asked without `wait`): the driver will ask
    /// again after it has reaped a completion.
    NotYet,
    /// No more writes.
    End,
}

/// The source and sink of an [`IoFile::write_stream`]: hands the driver
/// writes as they become ready and takes each one back when it has
/// finished.
pub trait WriteFeed {
    /// The next write. With `wait` the call may block until one is ready
    /// (the driver asks that way only when it has nothing in flight);
    /// without it, it answers [`Feed::NotYet`] rather than block.
    fn next(&mut self, wait: bool) -> Feed;
    /// `write` has finished: `ok` if all of it was written. Every write
    /// [`next`](Self::next) handed out comes back here exactly once
    /// before [`IoFile::write_stream`] returns, failed or not.
    ///
    /// Neither method may call back into the file the stream runs on
    /// (`write_batch`, `write_stream`, ...): a driver may hold that file's
    /// I/O state for the whole stream (the io_uring driver holds its ring),
    /// so such a call could wait forever.
    fn done(&mut self, write: StreamWrite, ok: bool);
}

/// Files and directories, named by path. See the crate documentation for
/// what an implementation must guarantee.
pub trait IoDriver: Send + Sync + Debug {
    /// Opens (and with `opts.create`, creates) the file at `path` for
    /// reading and writing. A newly created file's directory entry is
    /// durable only after [`IoDriver::sync_dir`] on its parent.
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Arc<dyn IoFile>>;

    /// Atomically replaces `to` with `from` (POSIX `rename`). Durable only
    /// after [`IoDriver::sync_dir`] on the parent directory (both parents
    /// when they differ).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file at `path`. Durable only after
    /// [`IoDriver::sync_dir`] on its parent.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable:
    /// opens it `O_RDONLY | O_DIRECTORY` and fsyncs it.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// The entries of `dir` (files and subdirectories, not `.`/`..`) as
    /// full paths (`dir` joined with the entry name), sorted.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;

    /// Creates `dir` and any missing parents; succeeds if it exists.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Short name of the driver for stats and logs, e.g. `"sync"`.
    fn name(&self) -> &'static str;

    /// A zeroed I/O buffer of `len` bytes (a multiple of [`ALIGN`]) at an
    /// [`ALIGN`]-aligned address, fit for direct I/O on this driver's
    /// files. A driver that can move some memory more cheaply hands that
    /// memory out here — `holt-backend-uring` gives slots of a buffer arena
    /// registered with its rings (`IORING_REGISTER_BUFFERS`), which its
    /// files then read and write with `READ_FIXED`/`WRITE_FIXED`. Callers
    /// that keep long-lived I/O buffers (frame images) should take them
    /// from here. The default allocates a plain [`AlignedBuf`]; any buffer
    /// works with any driver, this only decides how cheap its I/O is.
    ///
    /// # Errors
    /// As [`AlignedBuf::new`]: `InvalidInput` for a length that is not a
    /// multiple of [`ALIGN`], `OutOfMemory`.
    fn alloc_buffer(&self, len: usize) -> io::Result<AlignedBuf> {
        AlignedBuf::new(len)
    }

    /// Announces that the caller will keep up to `count` buffers of `len`
    /// bytes from [`IoDriver::alloc_buffer`] in flight at once (a
    /// checkpoint round's frame images), so a driver with memory of its
    /// own can set it up now, sized to that need rather than to a fixed
    /// cap, and only for callers that will use it. Returns how many
    /// buffers of `len` bytes `alloc_buffer` can hand out from such memory
    /// in all (not how many are free now); 0 means every buffer will be a
    /// plain one. `holt-backend-uring` creates its registered-buffer arena
    /// on the first call, with at most `count` slots (less under
    /// `RLIMIT_MEMLOCK`), and answers 0 once the kernel has refused to
    /// register it. Cheap after the first call. The default has no such
    /// memory and returns 0.
    fn reserve_buffers(&self, len: usize, count: usize) -> usize {
        let _ = (len, count);
        0
    }
}

/// One open file: positioned, whole-buffer reads and writes. Every method
/// takes `&self`; concurrent calls on disjoint byte ranges are allowed.
pub trait IoFile: Send + Sync + Debug {
    /// Reads exactly `buf.len()` bytes starting at `offset`. Reaching end
    /// of file first is an error of kind [`io::ErrorKind::UnexpectedEof`];
    /// the contents of `buf` are then unspecified. On a direct file the
    /// buffer address, its length and `offset` must be multiples of
    /// [`ALIGN`] (see [`check_direct_alignment`]).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes all of `buf` at `offset`, growing the file if needed. Not
    /// durable until [`IoFile::sync_data`] or [`IoFile::sync_all`] returns
    /// `Ok`. Same alignment rule as [`IoFile::read_at`].
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Writes each `(offset, bytes)` pair, in order. On a direct file every
    /// entry's alignment is checked before anything is written, so a
    /// misaligned batch writes nothing. After an I/O error some prefix of
    /// the batch may have been written. Drivers that can submit many writes
    /// at once (`io_uring`) override this.
    fn write_batch(&self, writes: &[(u64, &[u8])]) -> io::Result<()> {
        if self.is_direct() {
            for &(offset, buf) in writes {
                if !buf.is_empty() {
                    check_direct_alignment(buf, offset)?;
                }
            }
        }
        for &(offset, buf) in writes {
            self.write_at(buf, offset)?;
        }
        Ok(())
    }

    /// Writes what `feed` hands out until it says [`Feed::End`], each
    /// write whole at its offset, with up to as many in flight as the
    /// driver keeps (the provided method: one, with `write_at`), and gives
    /// every write back through [`WriteFeed::done`] once it has finished.
    /// A write is checked like [`IoFile::write_at`]. The first failed
    /// write stops the stream: nothing more is asked of `feed`, the writes
    /// in flight finish (and come back), and the call returns that error.
    /// So a caller streams a round's images as it produces them, and its
    /// buffers come back as their writes complete, instead of batch by
    /// batch. Drivers that can keep many writes in flight (`io_uring`)
    /// override it.
    fn write_stream(&self, feed: &mut dyn WriteFeed) -> io::Result<()> {
        loop {
            let write = match feed.next(true) {
                Feed::Write(write) => write,
                Feed::NotYet => continue,
                Feed::End => return Ok(()),
            };
            let res = self.write_at(write.buf.bytes(), write.offset);
            feed.done(write, res.is_ok());
            res?;
        }
    }

    /// Fills each `(offset, buffer)` pair from the file, like
    /// [`IoFile::read_at`] per entry: every buffer in full, end of file
    /// first is [`io::ErrorKind::UnexpectedEof`]. On a direct file every
    /// entry's alignment is checked before anything is read, so a
    /// misaligned batch reads nothing; empty entries are no-ops. After an
    /// error the contents of every buffer of the batch are unspecified.
    /// The provided method reads the entries one by one; drivers that can
    /// have many reads in flight at once (`io_uring`: cold frame loads of
    /// a scan or prefetch) override it.
    fn read_batch(&self, reads: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        if self.is_direct() {
            for (offset, buf) in reads.iter() {
                if !buf.is_empty() {
                    check_direct_alignment(buf, *offset)?;
                }
            }
        }
        for (offset, buf) in reads.iter_mut() {
            self.read_at(buf, *offset)?;
        }
        Ok(())
    }

    /// Makes the file's data (and the metadata needed to read it back, such
    /// as a grown length) durable: `fdatasync`. After an error the state of
    /// unsynced writes is unknown; do not assume a retry recovers them.
    fn sync_data(&self) -> io::Result<()>;

    /// Starts writing `len` bytes from `offset` (already written with
    /// [`IoFile::write_at`]) to the device without waiting for them, so a
    /// later [`IoFile::sync_data`] finds less to write and wait for. Makes
    /// nothing durable by itself. Provided: does nothing (a file that
    /// keeps no dirty pages of its own, or a platform without the call).
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// Like [`IoFile::sync_data`] but also flushes all metadata: `fsync`.
    fn sync_all(&self) -> io::Result<()>;

    /// Current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty. Provided: `len() == 0`.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Reserves disk blocks for `offset..offset + len`, extending the file
    /// if that range ends past its end, so later writes there do not fail
    /// for lack of space. Where the filesystem cannot preallocate, only the
    /// length is extended.
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Whether the file was opened with `O_DIRECT` (and the alignment rule
    /// applies).
    fn is_direct(&self) -> bool;

    /// The path the file was opened by (not updated by a rename).
    fn path(&self) -> &Path;
}

/// Checks the `O_DIRECT` rule for one I/O: buffer address, buffer length
/// and file offset must all be multiples of [`ALIGN`]. Returns an error of
/// kind [`io::ErrorKind::InvalidInput`] naming all three otherwise, so a
/// bad call fails before reaching the kernel (which would answer a bare
/// `EINVAL`). Drivers call it for every I/O on a direct file.
pub fn check_direct_alignment(buf: &[u8], offset: u64) -> io::Result<()> {
    let addr = buf.as_ptr() as usize;
    if addr % ALIGN == 0 && buf.len() % ALIGN == 0 && offset % ALIGN_U64 == 0 {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "O_DIRECT I/O must be {ALIGN}-aligned: offset {offset} len {} addr {addr:#x}",
            buf.len()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_io_passes() {
        let buf = AlignedBuf::new(2 * ALIGN).unwrap();
        check_direct_alignment(&buf, 0).unwrap();
        check_direct_alignment(&buf, 7 * ALIGN_U64).unwrap();
        check_direct_alignment(&buf[ALIGN..], ALIGN_U64).unwrap();
    }

    #[test]
    fn each_misalignment_is_rejected_with_all_three_numbers() {
        let buf = AlignedBuf::new(2 * ALIGN).unwrap();
        let cases: [(&[u8], u64); 3] = [
            (&buf[..], 512),        // offset
            (&buf[..ALIGN - 1], 0), // length
            (&buf[1..=ALIGN], 0),   // address
        ];
        for (slice, offset) in cases {
            let err = check_direct_alignment(slice, offset).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let msg = err.to_string();
            assert!(
                msg.starts_with("O_DIRECT I/O must be 4096-aligned"),
                "{msg}"
            );
            assert!(msg.contains(&format!("offset {offset} ")), "{msg}");
            assert!(msg.contains(&format!("len {} ", slice.len())), "{msg}");
            assert!(
                msg.contains(&format!("addr {:#x}", slice.as_ptr() as usize)),
                "{msg}"
            );
        }
    }

    #[test]
    fn traits_are_object_safe() {
        fn takes(_: Option<Arc<dyn IoDriver>>, _: Option<Arc<dyn IoFile>>) {}
        takes(None, None);
    }
}
