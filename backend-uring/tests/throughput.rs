#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Checkpoint-shaped throughput, printed (never asserted: the machine is
//! shared and noisy). One run of each:
//!
//! * `write_batch` of 512 × 512 KiB (256 MiB) + `sync_data`, io_uring and
//!   sync drivers, into a preallocated file (as the engine's data file is)
//!   and into a fresh one;
//! * raw sequential `O_DIRECT` `pwrite` of the same 256 MiB (512 KiB and
//!   4 MiB calls) + `fdatasync`, as the device's baseline.
//!
//! In its own test binary so no other test competes for the disk.

use std::fs;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use holt_backend_sync::{AlignedBuf, IoDriver, OpenOptions, SyncDriver};
use holt_backend_uring::UringDriver;

const FRAME: usize = 512 * 1024;
const FRAMES: usize = 512;
const TOTAL: u64 = (FRAME * FRAMES) as u64;

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn frames() -> Vec<AlignedBuf> {
    (0..FRAMES)
        .map(|i| {
            let mut f = AlignedBuf::new(FRAME).unwrap();
            for (j, w) in f.chunks_exact_mut(8).enumerate() {
                w.copy_from_slice(&(((i as u64) << 32) | j as u64).to_le_bytes());
            }
            f
        })
        .collect()
}

/// `write_batch` of all frames (reverse slot order, like scattered free
/// slots) + `sync_data`; returns the time of those two calls.
fn driver_round(
    driver: &dyn IoDriver,
    path: &Path,
    frames: &[AlignedBuf],
    prealloc: bool,
) -> Duration {
    let file = driver
        .open(
            path,
            OpenOptions {
                create: true,
                direct: true,
            },
        )
        .unwrap();
    assert!(file.is_direct());
    if prealloc {
        file.allocate(0, TOTAL).unwrap();
        file.sync_data().unwrap();
    }
    let batch: Vec<(u64, &[u8])> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (((FRAMES - 1 - i) * FRAME) as u64, &f[..]))
        .collect();
    let start = Instant::now();
    file.write_batch(&batch).unwrap();
    file.sync_data().unwrap();
    let took = start.elapsed();
    // Spot-check the result.
    for i in [0, FRAMES / 2, FRAMES - 1] {
        let mut back = AlignedBuf::new(FRAME).unwrap();
        file.read_at(&mut back, ((FRAMES - 1 - i) * FRAME) as u64)
            .unwrap();
        assert!(back[..] == frames[i][..]);
    }
    took
}

/// Sequential `O_DIRECT` `pwrite`s of `chunk` bytes covering 256 MiB of a
/// preallocated file, + `fdatasync`.
fn raw_pwrite(path: &Path, frames: &[AlignedBuf], chunk: usize) -> Duration {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    // Preallocate through the sync driver's file API.
    let pre = SyncDriver
        .open(
            path,
            OpenOptions {
                create: false,
                direct: true,
            },
        )
        .unwrap();
    pre.allocate(0, TOTAL).unwrap();
    pre.sync_data().unwrap();
    let mut big = AlignedBuf::new(chunk).unwrap();
    for (dst, src) in big.chunks_exact_mut(FRAME).zip(frames) {
        dst.copy_from_slice(src);
    }
    let start = Instant::now();
    let mut at = 0u64;
    while at < TOTAL {
        file.write_all_at(&big, at).unwrap();
        at += chunk as u64;
    }
    file.sync_data().unwrap();
    start.elapsed()
}

#[test]
fn throughput_report() {
    let dir = tempfile::tempdir().unwrap();
    let frames = frames();
    let uring = UringDriver::probe().unwrap();
    let mib = TOTAL >> 20;
    let mut rows = Vec::new();

    for (name, driver, prealloc) in [
        (
            "io_uring write_batch+sync_data (preallocated)",
            &uring as &dyn IoDriver,
            true,
        ),
        (
            "sync     write_batch+sync_data (preallocated)",
            &SyncDriver,
            true,
        ),
        (
            "io_uring write_batch+sync_data (fresh file)  ",
            &uring,
            false,
        ),
        (
            "sync     write_batch+sync_data (fresh file)  ",
            &SyncDriver,
            false,
        ),
    ] {
        let path = dir.path().join(format!("f{}", rows.len()));
        let took = driver_round(driver, &path, &frames, prealloc);
        fs::remove_file(&path).unwrap();
        rows.push((name.to_string(), took));
    }
    for chunk in [FRAME, 8 * FRAME] {
        let path = dir.path().join(format!("raw{chunk}"));
        let took = raw_pwrite(&path, &frames, chunk);
        fs::remove_file(&path).unwrap();
        rows.push((
            format!(
                "raw O_DIRECT pwrite seq {:>4} KiB + fdatasync   ",
                chunk >> 10
            ),
            took,
        ));
    }
    eprintln!("throughput, {mib} MiB per row, one run each:");
    for (name, took) in rows {
        eprintln!(
            "  {name}  {:>8.1} MB/s  ({:.3} s)",
            mb_per_s(TOTAL, took),
            took.as_secs_f64()
        );
    }
}
