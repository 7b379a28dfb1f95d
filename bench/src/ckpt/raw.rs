//! The raw baselines of the `checkpoint` scenario: N x 512 KiB written
//! sequentially into a fresh `O_DIRECT` file with `pwrite`, or as one
//! io_uring batch, then `fdatasync`.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use holt::io::{AlignedBuf, IoFile, OpenOptions};
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
pub(super) fn raw_pwrite(path: &Path, frames: usize, bufs: &[AlignedBuf]) -> Result<(f64, bool)> {
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

/// The same writes as one `write_batch` on an io_uring file, then
/// `sync_data`.
pub(super) fn raw_uring(
    path: &Path,
    frames: usize,
    bufs: &[AlignedBuf],
    d: UringDriver,
) -> Result<(f64, bool)> {
    let io = |what: &str, e| BenchError::io(format!("{what} {}", path.display()), e);
    let _ = std::fs::remove_file(path);
    let f = d
        .open_file(
            path,
            OpenOptions {
                create: true,
                direct: true,
            },
        )
        .map_err(|e| io("create", e))?;
    let writes: Vec<(u64, &[u8])> = (0..frames)
        .map(|i| ((i * FRAME) as u64, &bufs[i % bufs.len()][..]))
        .collect();
    let t = Instant::now();
    f.write_batch(&writes)
        .map_err(|e| io("io_uring write_batch to", e))?;
    f.sync_data().map_err(|e| io("io_uring fdatasync", e))?;
    Ok((t.elapsed().as_secs_f64(), f.is_direct()))
}
