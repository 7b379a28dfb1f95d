//! The raw baselines of the `checkpoint` scenario: N x 512 KiB written
//! sequentially into a fresh `O_DIRECT` file with `pwrite`, or as one
//! io_uring batch, then `fdatasync`; each also into a file `fallocate`d
//! first, as the engine's data file is (its slots are reserved with
//! `fallocate` before a round writes them).

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use holt::io::{AlignedBuf, IoDriver, IoFile, OpenOptions};
use holt_backend_uring::UringDriver;

use super::FRAME;
use crate::error::{BenchError, Result};
use crate::shapes::Rng;

/// Distinct random source buffers the raw writes cycle through.
const RAW_BUFS: usize = 8;

/// `RAW_BUFS` aligned frame-sized buffers of random bytes (not zeros, so
/// no layer can skip or compress them).
pub(super) fn raw_buffers(seed: u64) -> Result<Vec<AlignedBuf>> {
    let mut rng = Rng::for_label(seed, "checkpoint/raw");
    (0..RAW_BUFS)
        .map(|_| {
            let mut b = AlignedBuf::new(FRAME)
                .map_err(|e| BenchError::io("allocate an aligned buffer", e))?;
            for c in b.chunks_exact_mut(8) {
                c.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            Ok(b)
        })
        .collect()
}

/// `frames` sequential `pwrite`s of 512 KiB into a fresh `O_DIRECT` file,
/// then `fdatasync`. Returns (seconds, whether the file was direct).
fn raw_pwrite(path: &Path, frames: usize, bufs: &[AlignedBuf]) -> Result<(f64, bool)> {
    let io = |what: &str, e| BenchError::io(format!("{what} {}", path.display()), e);
    let open = |flags: libc::c_int| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(path)
    };
    let (f, direct): (File, bool) = match open(libc::O_DIRECT) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            (open(0).map_err(|e| io("create", e))?, false)
        }
        Err(e) => return Err(io("create", e)),
    };
    let t = Instant::now();
    for i in 0..frames {
        let buf = &bufs[i % bufs.len()];
        f.write_all_at(buf, (i * FRAME) as u64)
            .map_err(|e| io("pwrite to", e))?;
    }
    f.sync_data().map_err(|e| io("fdatasync", e))?;
    Ok((t.elapsed().as_secs_f64(), direct))
}

/// A raw baseline.
#[derive(Clone, Copy, Debug)]
pub(super) enum RawKind {
    /// `pwrite` into a fresh file (std, `O_DIRECT`).
    Pwrite,
    /// The same through holt's sync driver, into a file `fallocate`d first
    /// (inside the timing, as a round's slot growth is).
    PwriteFallocated,
    /// One `write_batch` on an io_uring file.
    Uring(UringDriver),
    /// The same into a file `fallocate`d first.
    UringFallocated(UringDriver),
}

impl RawKind {
    pub(super) const fn method(self) -> &'static str {
        match self {
            RawKind::Pwrite => "pwrite",
            RawKind::PwriteFallocated => "pwrite fallocated",
            RawKind::Uring(_) => "io_uring batch",
            RawKind::UringFallocated(_) => "io_uring batch fallocated",
        }
    }

    /// Measures `frames` x 512 KiB into a fresh file at `path` (removed
    /// first if it exists; the caller removes it after). Returns (seconds,
    /// whether the file was direct).
    pub(super) fn measure(
        self,
        path: &Path,
        frames: usize,
        bufs: &[AlignedBuf],
    ) -> Result<(f64, bool)> {
        let _ = std::fs::remove_file(path);
        match self {
            RawKind::Pwrite => raw_pwrite(path, frames, bufs),
            RawKind::PwriteFallocated => {
                let f = holt::io::SyncDriver::new()
                    .open(path, DIRECT)
                    .map_err(|e| io(path, "create", e))?;
                on_file(&*f, path, frames, bufs, true, false)
            }
            RawKind::Uring(d) | RawKind::UringFallocated(d) => {
                let f = d
                    .open_file(path, DIRECT)
                    .map_err(|e| io(path, "create", e))?;
                let alloc = matches!(self, RawKind::UringFallocated(_));
                on_file(&f, path, frames, bufs, alloc, true)
            }
        }
    }
}

const DIRECT: OpenOptions = OpenOptions {
    create: true,
    direct: true,
};

fn io(path: &Path, what: &str, e: std::io::Error) -> BenchError {
    BenchError::io(format!("{what} {}", path.display()), e)
}

/// The writes on an open driver file: `fallocate` first if `alloc`, then
/// one `write_batch` (`batch`) or one `write_at` per frame, then
/// `sync_data`; all timed.
fn on_file(
    f: &dyn IoFile,
    path: &Path,
    frames: usize,
    bufs: &[AlignedBuf],
    alloc: bool,
    batch: bool,
) -> Result<(f64, bool)> {
    let len = (frames * FRAME) as u64;
    let t = Instant::now();
    if alloc {
        f.allocate(0, len).map_err(|e| io(path, "fallocate", e))?;
    }
    if batch {
        let writes: Vec<(u64, &[u8])> = (0..frames)
            .map(|i| ((i * FRAME) as u64, &bufs[i % bufs.len()][..]))
            .collect();
        f.write_batch(&writes)
            .map_err(|e| io(path, "write_batch to", e))?;
    } else {
        for i in 0..frames {
            f.write_at(&bufs[i % bufs.len()], (i * FRAME) as u64)
                .map_err(|e| io(path, "pwrite to", e))?;
        }
    }
    f.sync_data().map_err(|e| io(path, "fdatasync", e))?;
    Ok((t.elapsed().as_secs_f64(), f.is_direct()))
}
