#![allow(clippy::unwrap_used, clippy::expect_used)]
//! io_uring driver against real files on the temp filesystem (ext4 here, so
//! `O_DIRECT` is honoured).

use std::io;
use std::path::Path;
use std::sync::Arc;

use holt_backend_sync::{AlignedBuf, IoDriver, IoFile, OpenOptions, SyncDriver, ALIGN};
use holt_backend_uring::{best_driver, Faults, UringDriver, UringFile, MAX_RETRIES};

const FRAME: usize = 512 * 1024;
const DIRECT: OpenOptions = OpenOptions {
    create: true,
    direct: true,
};
const BUFFERED: OpenOptions = OpenOptions {
    create: true,
    direct: false,
};

fn driver() -> UringDriver {
    UringDriver::probe().expect("io_uring is available on this machine")
}

/// `len` bytes whose every 8-byte word names `tag` and its own position,
/// so misplaced or torn pages cannot compare equal.
fn pattern(tag: u32, len: usize) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len).unwrap();
    for (i, word) in buf.chunks_exact_mut(8).enumerate() {
        let v = (u64::from(tag) << 40) | i as u64;
        word.copy_from_slice(&v.to_le_bytes());
    }
    buf
}

/// A batch writing `frames[i]` at slot `slots[i]`.
fn batch<'a>(frames: &'a [AlignedBuf], slots: &[u64]) -> Vec<(u64, &'a [u8])> {
    frames
        .iter()
        .zip(slots)
        .map(|(f, &slot)| (slot * f.len() as u64, &f[..]))
        .collect()
}

fn assert_reads_back(file: &dyn IoFile, frames: &[AlignedBuf], slots: &[u64]) {
    for (i, (frame, &slot)) in frames.iter().zip(slots).enumerate() {
        let mut back = AlignedBuf::new(frame.len()).unwrap();
        file.read_at(&mut back, slot * frame.len() as u64).unwrap();
        assert!(back[..] == frame[..], "frame {i} at slot {slot} differs");
    }
}

fn open(driver: &UringDriver, path: &Path, opts: OpenOptions) -> UringFile {
    driver.open_file(path, opts).unwrap()
}

#[test]
fn batch_of_64_frames_round_trips_in_one_submission() {
    let dir = tempfile::tempdir().unwrap();
    let file = open(&driver(), &dir.path().join("data"), DIRECT);
    assert!(file.is_direct(), "/tmp should accept O_DIRECT");
    assert!(file.registered_file());
    assert!(file.fallback_reason().is_none());

    let frames: Vec<AlignedBuf> = (0..64).map(|i| pattern(i, FRAME)).collect();
    // Scattered, out-of-order slots, as free slots of a data file are.
    let slots: Vec<u64> = (0..64u64).map(|i| (i * 37) % 101).collect();
    file.write_batch(&batch(&frames, &slots)).unwrap();
    file.sync_data().unwrap();

    let stats = file.stats();
    assert_eq!(stats.sqes, 65, "64 writes + 1 fsync: {stats:?}");
    assert_eq!(stats.completions, 65);
    assert_eq!(
        stats.max_submitted_at_once, 64,
        "all writes go in one submission: {stats:?}"
    );
    assert_eq!(stats.short_resubmits + stats.retries + stats.injected, 0);
    assert_reads_back(&file, &frames, &slots);
    assert_eq!(file.len().unwrap(), 101 * FRAME as u64);
}

#[test]
fn batch_larger_than_the_ring_is_submitted_in_refills() {
    let dir = tempfile::tempdir().unwrap();
    let file = open(
        &driver().with_ring_entries(8),
        &dir.path().join("data"),
        DIRECT,
    );
    assert_eq!(file.ring_depth(), 8);
    let frames: Vec<AlignedBuf> = (0..100).map(|i| pattern(i, 16 * ALIGN)).collect();
    let slots: Vec<u64> = (0..100u64).rev().collect();
    file.write_batch(&batch(&frames, &slots)).unwrap();
    let stats = file.stats();
    assert_eq!(stats.sqes, 100);
    assert_eq!(stats.completions, 100);
    assert!(stats.max_submitted_at_once <= 8, "{stats:?}");
    assert!(stats.enters >= 100 / 8, "{stats:?}");
    file.sync_data().unwrap();
    assert_reads_back(&file, &frames, &slots);
}

#[test]
fn uring_and_sync_files_read_each_others_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let uring = driver();
    let frames: Vec<AlignedBuf> = (0..8).map(|i| pattern(100 + i, FRAME)).collect();
    let slots: Vec<u64> = (0..8).collect();

    // Written through io_uring, read with pread.
    let a = dir.path().join("a");
    let w = uring.open(&a, DIRECT).unwrap();
    w.write_batch(&batch(&frames, &slots)).unwrap();
    w.sync_data().unwrap();
    drop(w);
    let r = SyncDriver.open(&a, DIRECT).unwrap();
    assert_reads_back(r.as_ref(), &frames, &slots);

    // Written with pwrite, read through io_uring (direct and buffered).
    let b = dir.path().join("b");
    let w = SyncDriver.open(&b, DIRECT).unwrap();
    w.write_batch(&batch(&frames, &slots)).unwrap();
    w.sync_data().unwrap();
    drop(w);
    for opts in [DIRECT, BUFFERED] {
        let r = uring.open(&b, opts).unwrap();
        assert_reads_back(r.as_ref(), &frames, &slots);
    }
}

#[test]
fn injected_short_writes_still_write_everything() {
    for every in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults {
            short_write_every: Some(every),
            ..Faults::default()
        };
        let file = open(&driver().with_faults(faults), &dir.path().join("d"), DIRECT);
        let frames: Vec<AlignedBuf> = (0..12).map(|i| pattern(i, FRAME)).collect();
        let slots: Vec<u64> = (0..12).map(|i| 11 - i).collect();
        file.write_batch(&batch(&frames, &slots)).unwrap();
        let one = pattern(99, 3 * ALIGN);
        file.write_at(&one, 12 * FRAME as u64).unwrap();
        let stats = file.stats();
        assert!(stats.short_resubmits > 0, "every {every}: {stats:?}");
        assert_eq!(stats.injected, stats.short_resubmits);
        assert_eq!(stats.sqes, stats.completions);
        file.set_faults(Faults::none());
        assert_reads_back(&file, &frames, &slots);
        let mut back = AlignedBuf::new(3 * ALIGN).unwrap();
        file.read_at(&mut back, 12 * FRAME as u64).unwrap();
        assert!(back[..] == one[..]);
    }
}

#[test]
fn injected_short_transfers_on_a_buffered_file_with_odd_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        short_write_every: Some(1),
        short_read_every: Some(2),
        ..Faults::default()
    };
    let file = open(
        &driver().with_faults(faults),
        &dir.path().join("b"),
        BUFFERED,
    );
    let a: Vec<u8> = (0..10_001u32).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..777u32).map(|i| (i % 13) as u8).collect();
    file.write_batch(&[(5, &a), (20_000, &b)]).unwrap();
    let writes = file.stats().short_resubmits;
    assert!(writes >= 2);
    let mut back_a = vec![0u8; a.len()];
    let mut back_b = vec![0u8; b.len()];
    file.read_batch(&mut [(5, &mut back_a[..]), (20_000, &mut back_b[..])])
        .unwrap();
    assert_eq!(back_a, a);
    assert_eq!(back_b, b);
    assert!(
        file.stats().short_resubmits > writes,
        "short reads resubmitted"
    );
}

#[test]
fn injected_short_reads_fill_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let frame = pattern(7, FRAME);
    let w = SyncDriver.open(&path, DIRECT).unwrap();
    w.write_at(&frame, FRAME as u64).unwrap();
    let faults = Faults {
        short_read_every: Some(1),
        ..Faults::default()
    };
    let file = open(&driver().with_faults(faults), &path, DIRECT);
    let mut back = AlignedBuf::new(FRAME).unwrap();
    file.read_at(&mut back, FRAME as u64).unwrap();
    assert!(back[..] == frame[..]);
    // 512 KiB halved (rounded to pages) until one page: 7 short reads.
    let stats = file.stats();
    assert_eq!(stats.short_resubmits, 7, "{stats:?}");
}

#[test]
fn injected_eio_fails_the_batch_with_that_errno() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        fail_nth_completion: Some((5, libc::EIO)),
        ..Faults::default()
    };
    let file = open(&driver().with_faults(faults), &dir.path().join("d"), DIRECT);
    let frames: Vec<AlignedBuf> = (0..16).map(|i| pattern(i, FRAME)).collect();
    let slots: Vec<u64> = (0..16).collect();
    let err = file.write_batch(&batch(&frames, &slots)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let stats = file.stats();
    assert_eq!(stats.sqes, 16);
    assert_eq!(stats.completions, 16, "everything in flight was reaped");
    assert_eq!(stats.injected, 1);

    // The ring is intact: the same batch succeeds now.
    file.write_batch(&batch(&frames, &slots)).unwrap();
    file.sync_data().unwrap();
    assert_reads_back(&file, &frames, &slots);
    assert!(file.fallback_reason().is_none());
}

#[test]
fn injected_errors_on_sync_and_read_are_returned() {
    let dir = tempfile::tempdir().unwrap();
    let file = open(&driver(), &dir.path().join("d"), DIRECT);
    let frame = pattern(1, FRAME);
    file.write_at(&frame, 0).unwrap();

    file.set_faults(Faults {
        fail_nth_completion: Some((1, libc::EIO)),
        ..Faults::default()
    });
    let err = file.sync_data().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    file.sync_data().unwrap(); // only the first completion failed

    file.set_faults(Faults {
        fail_nth_completion: Some((1, libc::ENOSPC)),
        ..Faults::default()
    });
    let err = file.sync_all().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::StorageFull);

    file.set_faults(Faults {
        fail_nth_completion: Some((1, libc::EIO)),
        ..Faults::default()
    });
    let mut back = AlignedBuf::new(FRAME).unwrap();
    let err = file.read_at(&mut back, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    file.read_at(&mut back, 0).unwrap();
    assert!(back[..] == frame[..]);
}

#[test]
fn injected_eintr_and_eagain_are_retried() {
    for errno in [libc::EINTR, libc::EAGAIN] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults {
            fail_nth_completion: Some((3, errno)),
            fail_repeat: 4,
            ..Faults::default()
        };
        let file = open(&driver().with_faults(faults), &dir.path().join("d"), DIRECT);
        let frames: Vec<AlignedBuf> = (0..8).map(|i| pattern(i, FRAME)).collect();
        let slots: Vec<u64> = (0..8).collect();
        file.write_batch(&batch(&frames, &slots)).unwrap();
        let stats = file.stats();
        assert_eq!(stats.retries, 5, "errno {errno}: {stats:?}");
        assert_eq!(stats.sqes, 8 + 5);
        assert_eq!(stats.completions, 8 + 5);
        file.sync_data().unwrap();
        assert_reads_back(&file, &frames, &slots);
    }
}

#[test]
fn retries_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        fail_nth_completion: Some((1, libc::EINTR)),
        fail_repeat: usize::MAX,
        ..Faults::default()
    };
    let file = open(&driver().with_faults(faults), &dir.path().join("d"), DIRECT);
    let frame = pattern(1, FRAME);
    let err = file.write_at(&frame, 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    let stats = file.stats();
    assert_eq!(stats.retries, u64::from(MAX_RETRIES));
    assert_eq!(stats.sqes, u64::from(MAX_RETRIES) + 1);
    assert_eq!(stats.completions, stats.sqes);
}

#[test]
fn misaligned_direct_input_is_rejected_before_submission() {
    let dir = tempfile::tempdir().unwrap();
    let file = open(&driver(), &dir.path().join("d"), DIRECT);
    let good = pattern(1, 2 * ALIGN);
    let cases: [(&[u8], u64); 3] = [
        (&good[..ALIGN], 512),   // offset
        (&good[..ALIGN - 1], 0), // length
        (&good[1..=ALIGN], 0),   // address
    ];
    for (bad, offset) in cases {
        // A good entry first: the whole batch must still write nothing.
        let err = file
            .write_batch(&[(0, &good[..]), (offset, bad)])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err
            .to_string()
            .starts_with("O_DIRECT I/O must be 4096-aligned"));
        let err = file.write_at(bad, offset).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut copy = vec![0u8; bad.len() + 1];
        let slice = &mut copy[1..];
        let err = file.read_at(slice, offset).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
    assert_eq!(file.len().unwrap(), 0, "nothing was written");
    assert_eq!(file.stats().sqes, 0, "nothing was submitted");
    // Empty entries are no-ops, whatever their alignment.
    file.write_batch(&[(1, &good[1..1]), (0, &good[..ALIGN])])
        .unwrap();
    assert_eq!(file.len().unwrap(), ALIGN as u64);
    assert_eq!(file.stats().sqes, 1);
}

#[test]
fn probe_and_best_driver_choose_io_uring_here() {
    let uring = UringDriver::probe().unwrap();
    assert_eq!(uring.name(), "io_uring");
    let (driver, info) = best_driver();
    assert_eq!(info.name, "io_uring");
    assert_eq!(info.fallback_reason, None);
    assert_eq!(driver.name(), "io_uring");

    // The chosen driver works end to end through the trait object.
    let dir = tempfile::tempdir().unwrap();
    let file: Arc<dyn IoFile> = driver.open(&dir.path().join("x"), DIRECT).unwrap();
    let frame = pattern(3, FRAME);
    file.write_batch(&[(0, &frame[..])]).unwrap();
    file.sync_data().unwrap();
    assert_reads_back(file.as_ref(), std::slice::from_ref(&frame), &[0]);
}

#[test]
fn sync_data_and_sync_all_go_through_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let file = open(&driver(), &dir.path().join("d"), DIRECT);
    file.write_at(&pattern(1, ALIGN), 0).unwrap();
    let before = file.stats();
    file.sync_data().unwrap();
    file.sync_all().unwrap();
    let after = file.stats();
    assert_eq!(after.sqes, before.sqes + 2);
    assert_eq!(after.completions, before.completions + 2);
    assert_eq!(after.sync_fallbacks, 0);
}

#[test]
fn metadata_calls_and_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = open(&driver(), &dir.path().join("d"), DIRECT);
    assert!(file.is_empty().unwrap());
    assert_eq!(file.path(), dir.path().join("d"));
    file.allocate(0, 4 * FRAME as u64).unwrap();
    assert_eq!(file.len().unwrap(), 4 * FRAME as u64);
    file.set_len(FRAME as u64).unwrap();
    assert_eq!(file.len().unwrap(), FRAME as u64);
    let mut buf = AlignedBuf::new(2 * ALIGN).unwrap();
    let err = file
        .read_at(&mut buf, FRAME as u64 - ALIGN as u64)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert!(err.to_string().contains("(4096 read)"), "{err}");
    let opts = OpenOptions {
        create: false,
        direct: true,
    };
    let err = driver()
        .open(&dir.path().join("missing"), opts)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn directory_operations_delegate_to_the_sync_driver() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver();
    let sub = dir.path().join("a/b");
    d.create_dir_all(&sub).unwrap();
    d.create_dir_all(&sub).unwrap();
    let f = d.open(&sub.join("new"), BUFFERED).unwrap();
    f.write_at(b"manifest", 0).unwrap();
    f.sync_all().unwrap();
    d.rename(&sub.join("new"), &sub.join("cur")).unwrap();
    d.sync_dir(&sub).unwrap();
    assert_eq!(d.list_dir(&sub).unwrap(), [sub.join("cur")]);
    d.remove(&sub.join("cur")).unwrap();
    d.sync_dir(&sub).unwrap();
    assert!(d.list_dir(&sub).unwrap().is_empty());
    assert_eq!(
        d.remove(&sub.join("cur")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn direct_request_on_tmpfs_matches_the_sync_driver() {
    // tmpfs refused O_DIRECT (EINVAL → buffered) before Linux 6.6 and
    // accepts it since; either way both drivers must agree and work.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm; skipped");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let file = open(&driver(), &dir.path().join("d"), DIRECT);
    let sync = SyncDriver.open(&dir.path().join("d"), DIRECT).unwrap();
    assert_eq!(file.is_direct(), sync.is_direct());
    let frame = pattern(5, 4 * ALIGN);
    file.write_batch(&[(ALIGN as u64, &frame[..])]).unwrap();
    file.sync_data().unwrap();
    let mut back = AlignedBuf::new(4 * ALIGN).unwrap();
    sync.read_at(&mut back, ALIGN as u64).unwrap();
    assert!(back[..] == frame[..]);
}

#[test]
fn concurrent_reads_and_writes_during_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(open(&driver(), &dir.path().join("d"), DIRECT));
    // Slots 0..8 hold known frames; the batch writes slots 8..136.
    let known: Vec<AlignedBuf> = (0..8).map(|i| pattern(1000 + i, FRAME)).collect();
    let known_slots: Vec<u64> = (0..8).collect();
    file.write_batch(&batch(&known, &known_slots)).unwrap();
    let frames: Vec<AlignedBuf> = (0..128).map(|i| pattern(i, FRAME)).collect();
    let slots: Vec<u64> = (8..136).collect();

    std::thread::scope(|s| {
        for t in 0..4u64 {
            let file = Arc::clone(&file);
            let known = &known;
            s.spawn(move || {
                for round in 0..20u64 {
                    let i = ((t + round) % 8) as usize;
                    let mut back = AlignedBuf::new(FRAME).unwrap();
                    file.read_at(&mut back, i as u64 * FRAME as u64).unwrap();
                    assert!(back[..] == known[i][..], "thread {t} round {round}");
                    // A private region per thread for single writes.
                    let own = pattern(2000 + t as u32, ALIGN);
                    let at = (200 + t) * FRAME as u64;
                    file.write_at(&own, at).unwrap();
                    file.sync_data().unwrap();
                }
            });
        }
        file.write_batch(&batch(&frames, &slots)).unwrap();
    });
    file.sync_data().unwrap();
    assert_reads_back(file.as_ref(), &frames, &slots);
    assert_reads_back(file.as_ref(), &known, &known_slots);
    for t in 0..4u32 {
        let mut back = AlignedBuf::new(ALIGN).unwrap();
        file.read_at(&mut back, (200 + u64::from(t)) * FRAME as u64)
            .unwrap();
        assert!(back[..] == pattern(2000 + t, ALIGN)[..]);
    }
    eprintln!("concurrent: {:?}", file.stats());
}

/// A single write to a buffered file (the WAL's appends) is a `pwrite`,
/// its syncs (the WAL's commits) are plain `fdatasync` / `fsync`, and a
/// single read is a `pread`, not SQEs: through the ring, ext4 runs
/// buffered writes and syncs on an io-wq worker and the caller sleeps
/// until that worker is scheduled. A buffered file's batches, and a
/// direct file's single write, still go through the ring. Fails if
/// `UringFile::write_at`, `read_at`, `sync_data` or `sync_all` sends a
/// buffered file's call to the ring (the SQE count moves and the injected
/// completion error is returned).
#[test]
fn a_buffered_single_write_bypasses_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        fail_nth_completion: Some((1, libc::EIO)),
        fail_repeat: usize::MAX,
        ..Faults::default()
    };
    let d = driver().with_faults(faults);
    let log = open(&d, &dir.path().join("log"), BUFFERED);
    log.write_at(b"record", 0).unwrap();
    log.write_at(b"more", 6).unwrap();
    log.sync_data().unwrap();
    log.sync_all().unwrap();
    let mut back = [0u8; 10];
    log.read_at(&mut back, 0).unwrap();
    assert_eq!(&back, b"recordmore");
    assert_eq!(log.stats().sqes, 0, "{:?}", log.stats());
    let err = log.write_batch(&[(10, b"batched")]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "batches use the ring");
    log.set_faults(Faults::none());
    log.write_batch(&[(10, b"batched")]).unwrap();

    let data = open(&d, &dir.path().join("data"), DIRECT);
    let err = data.write_at(&pattern(1, FRAME), 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(data.stats().sqes > 0);
}
