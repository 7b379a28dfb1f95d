//! [`SyncFile`]: an [`IoFile`] on blocking `pread`/`pwrite`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::driver::{check_direct_alignment, IoFile};
use crate::sys;

/// An open file driven with blocking positioned syscalls: `pread`,
/// `pwrite`, `fdatasync`, `fsync`, `fallocate`. Created by
/// [`SyncDriver::open`](crate::SyncDriver).
#[derive(Debug)]
pub struct SyncFile {
    /// The open descriptor (read + write).
    file: File,
    /// The path it was opened by.
    path: PathBuf,
    /// Whether `O_DIRECT` is in effect.
    direct: bool,
}

impl SyncFile {
    /// Wraps an already opened file. `direct` must say whether `file` was
    /// opened with `O_DIRECT`; it decides whether alignment is checked.
    #[must_use]
    pub fn from_file(file: File, path: PathBuf, direct: bool) -> Self {
        Self { file, path, direct }
    }

    /// Fails with `InvalidInput` if the file is direct and the I/O is not
    /// aligned.
    fn check(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.direct {
            check_direct_alignment(buf, offset)
        } else {
            Ok(())
        }
    }
}

/// `offset + done` as a file offset, or `InvalidInput` if it overflows.
fn advance(offset: u64, done: usize) -> io::Result<u64> {
    u64::try_from(done)
        .ok()
        .and_then(|done| offset.checked_add(done))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("file offset {offset} + {done} overflows"),
            )
        })
}

/// Counts an `EINTR`; returns the error once the per-call bound is spent.
fn note_interrupt(err: io::Error, interrupts: &mut u32) -> io::Result<()> {
    if *interrupts >= sys::MAX_EINTR_RETRIES {
        return Err(err);
    }
    *interrupts += 1;
    Ok(())
}

impl IoFile for SyncFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.check(buf, offset)?;
        let wanted = buf.len();
        let mut done = 0;
        let mut interrupts = 0;
        while done < wanted {
            let at = advance(offset, done)?;
            match self.file.read_at(&mut buf[done..], at) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: end of file at offset {at} reading {wanted} bytes \
                             at offset {offset} ({done} read)",
                            self.path.display()
                        ),
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    note_interrupt(e, &mut interrupts)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.check(buf, offset)?;
        let wanted = buf.len();
        let mut done = 0;
        let mut interrupts = 0;
        while done < wanted {
            let at = advance(offset, done)?;
            match self.file.write_at(&buf[done..], at) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!(
                            "{}: write of {wanted} bytes at offset {offset} stalled \
                             after {done} bytes",
                            self.path.display()
                        ),
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    note_interrupt(e, &mut interrupts)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.direct || len == 0 {
            // A direct file keeps no dirty pages; an empty range would
            // mean "to the end of the file" to sync_file_range.
            return Ok(());
        }
        sys::start_writeback(&self.file, offset, len)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset.checked_add(len).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("allocate range {offset} + {len} overflows"),
            )
        })?;
        if len == 0 {
            // fallocate rejects an empty range with EINVAL; nothing to do.
            return Ok(());
        }
        match sys::fallocate(&self.file, offset, len) {
            Err(e) if sys::is_unsupported(&e) => {
                if end > self.len()? {
                    self.set_len(end)
                } else {
                    Ok(())
                }
            }
            res => res,
        }
    }

    fn is_direct(&self) -> bool {
        self.direct
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_do_not_overflow_silently() {
        assert_eq!(advance(10, 5).unwrap(), 15);
        let err = advance(u64::MAX, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn interrupts_are_bounded() {
        let mut n = 0;
        for _ in 0..sys::MAX_EINTR_RETRIES {
            note_interrupt(io::Error::from(io::ErrorKind::Interrupted), &mut n).unwrap();
        }
        let err = note_interrupt(io::Error::from(io::ErrorKind::Interrupted), &mut n);
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::Interrupted);
    }

    fn direct_file(dir: &tempfile::TempDir) -> std::sync::Arc<dyn IoFile> {
        use crate::{IoDriver, OpenOptions, SyncDriver};
        let opts = OpenOptions {
            create: true,
            direct: true,
        };
        SyncDriver.open(&dir.path().join("d"), opts).unwrap()
    }

    #[test]
    fn read_batch_round_trips_and_fails_whole_on_eof() {
        use crate::{AlignedBuf, ALIGN};
        let dir = tempfile::tempdir().unwrap();
        let f = direct_file(&dir);
        let pages: Vec<AlignedBuf> = (0..4u8)
            .map(|i| {
                let mut b = AlignedBuf::new(ALIGN).unwrap();
                b.fill(i + 1);
                b
            })
            .collect();
        let writes: Vec<(u64, &[u8])> = pages
            .iter()
            .zip(0u64..)
            .map(|(p, i)| (i * ALIGN as u64, &p[..]))
            .collect();
        f.write_batch(&writes).unwrap();
        let mut back: Vec<AlignedBuf> = (0..4).map(|_| AlignedBuf::new(ALIGN).unwrap()).collect();
        // Out of order, and an empty entry at an odd address is a no-op.
        let mut empty = [0u8; 1];
        let mut reads: Vec<(u64, &mut [u8])> = back
            .iter_mut()
            .zip([3u64, 1, 0, 2])
            .map(|(b, i)| (i * ALIGN as u64, &mut b[..]))
            .collect();
        reads.push((7, &mut empty[..0]));
        f.read_batch(&mut reads).unwrap();
        for (b, i) in back.iter().zip([3u8, 1, 0, 2]) {
            assert!(b.iter().all(|&x| x == i + 1));
        }
        // Misaligned entry: nothing is read, InvalidInput.
        let mut a = AlignedBuf::new(ALIGN).unwrap();
        let mut b = AlignedBuf::new(ALIGN).unwrap();
        let err = f
            .read_batch(&mut [(0, &mut a[..]), (512, &mut b[..])])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            a.iter().all(|&x| x == 0),
            "a misaligned batch read something"
        );
        // Past the end: UnexpectedEof.
        let err = f
            .read_batch(&mut [(0, &mut a[..]), (4 * ALIGN as u64, &mut b[..])])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn default_alloc_buffer_is_a_plain_aligned_buffer() {
        use crate::{IoDriver, SyncDriver, ALIGN};
        let b = SyncDriver.alloc_buffer(2 * ALIGN).unwrap();
        assert_eq!(b.len(), 2 * ALIGN);
        assert!(!b.is_from_arena());
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        let err = SyncDriver.alloc_buffer(100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            SyncDriver.reserve_buffers(2 * ALIGN, 64),
            0,
            "no memory of its own"
        );
    }

    #[test]
    fn buffered_file_accepts_any_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let f = SyncFile::from_file(file, path.clone(), false);
        assert!(!f.is_direct());
        assert_eq!(f.path(), path);
        f.write_at(b"abc", 3).unwrap();
        let mut out = [0xffu8; 6];
        f.read_at(&mut out, 0).unwrap();
        assert_eq!(&out, b"\0\0\0abc");
        assert_eq!(f.len().unwrap(), 6);
        // Empty I/O is a no-op, even past the end.
        f.read_at(&mut [], 1 << 40).unwrap();
        f.write_at(&[], 1 << 40).unwrap();
        assert_eq!(f.len().unwrap(), 6);
        // allocate with len 0 is a no-op too.
        f.allocate(100, 0).unwrap();
        assert_eq!(f.len().unwrap(), 6);
        let err = f.allocate(u64::MAX, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
