#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `read_batch` and registered buffers on real files, driven through the
//! [`Faults`] seam: short reads, `EINTR`, errors in the middle of a batch,
//! end of file, a refused buffer registration. Every test is skipped (with
//! a note) where io_uring is unavailable.

mod common;

use common::{uring, CHUNK, OPTS};

use std::io;
use std::path::Path;

use holt_backend_sync::{AlignedBuf, IoDriver, IoFile, SyncDriver, ALIGN};
use holt_backend_uring::{
    BufferRegistration, Faults, UringDriver, UringFile, MAX_RETRIES, SLOT_BYTES,
};

/// A chunk whose bytes name `i` and their position.
fn pattern(i: usize, len: usize) -> AlignedBuf {
    let mut b = AlignedBuf::new(len).unwrap();
    for (j, x) in b.iter_mut().enumerate() {
        *x = (i * 131 + j / 7) as u8;
    }
    b
}

/// Writes `n` pattern chunks of `CHUNK` bytes to `path` with the sync
/// driver, so the reads under test are the only uring I/O.
fn prepare(path: &Path, n: usize) {
    let f = SyncDriver.open(path, OPTS).unwrap();
    for i in 0..n {
        f.write_at(&pattern(i, CHUNK), (i * CHUNK) as u64).unwrap();
    }
    f.sync_data().unwrap();
}

/// `read_batch` of chunks `order` into fresh buffers; returns them.
fn read_chunks(f: &dyn IoFile, order: &[usize]) -> io::Result<Vec<AlignedBuf>> {
    let mut bufs: Vec<AlignedBuf> = order
        .iter()
        .map(|_| AlignedBuf::new(CHUNK).unwrap())
        .collect();
    let mut reads: Vec<(u64, &mut [u8])> = bufs
        .iter_mut()
        .zip(order)
        .map(|(b, &i)| ((i * CHUNK) as u64, &mut b[..]))
        .collect();
    f.read_batch(&mut reads)?;
    Ok(bufs)
}

fn check_chunks(bufs: &[AlignedBuf], order: &[usize]) {
    for (b, &i) in bufs.iter().zip(order) {
        assert!(b[..] == pattern(i, CHUNK)[..], "chunk {i} read back wrong");
    }
}

/// 40 reads through a 16-entry ring: all correct, in refills of the ring
/// size, one SQE each. Fails if the batch were read one SQE per enter.
#[test]
fn read_batch_reads_every_entry_in_ring_sized_submissions() {
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    prepare(&path, 40);
    let f = d.with_ring_entries(16).open_file(&path, OPTS).unwrap();
    let order: Vec<usize> = (0..40).map(|i| (i * 17) % 40).collect();
    let bufs = read_chunks(&f, &order).unwrap();
    check_chunks(&bufs, &order);
    let st = f.stats();
    assert_eq!(st.sqes, 40, "{st:?}");
    assert_eq!(st.completions, 40, "{st:?}");
    assert_eq!(st.max_submitted_at_once, 16, "{st:?}");
    assert!(st.enters < 40, "{st:?}");
}

/// The same file read by the sync driver's default `read_batch` and the
/// uring one gives identical bytes, for mixed offsets and lengths.
#[test]
fn read_batch_agrees_with_the_sync_driver() {
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    prepare(&path, 8);
    let uf = d.open_file(&path, OPTS).unwrap();
    let sf = SyncDriver.open(&path, OPTS).unwrap();
    let spans = [
        (0usize, ALIGN),
        (3, 5 * ALIGN),
        (17, 40 * ALIGN),
        (100, ALIGN),
    ];
    let read = |f: &dyn IoFile| {
        let mut bufs: Vec<AlignedBuf> = spans
            .iter()
            .map(|&(_, len)| AlignedBuf::new(len).unwrap())
            .collect();
        let mut reads: Vec<(u64, &mut [u8])> = bufs
            .iter_mut()
            .zip(spans)
            .map(|(b, (page, _))| ((page * ALIGN) as u64, &mut b[..]))
            .collect();
        f.read_batch(&mut reads).unwrap();
        bufs
    };
    let (a, b) = (read(&uf), read(&*sf));
    for (x, y) in a.iter().zip(&b) {
        assert!(x[..] == y[..]);
    }
}

/// Every read completion reported short: the driver resubmits the rest of
/// each read until it is whole. Fails if a short read were taken as done
/// (the tail of the buffer would stay zero).
#[test]
fn short_reads_are_resubmitted_until_whole() {
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    prepare(&path, 12);
    let faults = Faults {
        short_read_every: Some(1),
        ..Faults::default()
    };
    let f = d.with_faults(faults).open_file(&path, OPTS).unwrap();
    let order: Vec<usize> = (0..12).rev().collect();
    let bufs = read_chunks(&f, &order).unwrap();
    check_chunks(&bufs, &order);
    let st = f.stats();
    // 16 pages halve to 8, 4, 2, 1 and then one page cannot be shortened:
    // four resubmissions per read.
    assert_eq!(st.short_resubmits, 12 * 4, "{st:?}");
    assert_eq!(st.sqes, 12 * 5, "{st:?}");
}

/// `EINTR` completions are retried, at most [`MAX_RETRIES`] times per
/// read; past that the batch fails with `Interrupted`.
#[test]
fn eintr_is_retried_a_bounded_number_of_times() {
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    prepare(&path, 4);
    let f = d.open_file(&path, OPTS).unwrap();
    f.set_faults(Faults {
        fail_nth_completion: Some((2, libc::EINTR)),
        fail_repeat: 5,
        ..Faults::default()
    });
    let order = [0, 1, 2, 3];
    check_chunks(&read_chunks(&f, &order).unwrap(), &order);
    assert_eq!(f.stats().retries, 6);
    f.set_faults(Faults {
        fail_nth_completion: Some((1, libc::EINTR)),
        fail_repeat: MAX_RETRIES as usize + 10,
        ..Faults::default()
    });
    let err = read_chunks(&f, &[0]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Interrupted);
}

/// An `EIO` on one read of a batch fails the call, but only after every
/// read in flight has completed (SQEs pushed = CQEs reaped), and the ring
/// stays usable. Fails if the driver returned on the first error while the
/// kernel could still write into the other buffers.
#[test]
fn an_error_fails_the_batch_after_reaping_everything() {
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    prepare(&path, 20);
    let f = d.open_file(&path, OPTS).unwrap();
    f.set_faults(Faults {
        fail_nth_completion: Some((3, libc::EIO)),
        ..Faults::default()
    });
    let order: Vec<usize> = (0..20).collect();
    let err = read_chunks(&f, &order).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let st = f.stats();
    assert_eq!(st.sqes, st.completions, "{st:?}");
    assert!(f.fallback_reason().is_none());
    f.set_faults(Faults::none());
    check_chunks(&read_chunks(&f, &order).unwrap(), &order);
}

/// A read past the end of the file fails the batch with `UnexpectedEof`;
/// a misaligned entry fails it with `InvalidInput` before anything is
/// submitted; empty entries are no-ops.
#[test]
fn eof_and_alignment_errors() {
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    prepare(&path, 2);
    let f = d.open_file(&path, OPTS).unwrap();
    let err = read_chunks(&f, &[0, 2]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let sqes = f.stats().sqes;
    let mut a = AlignedBuf::new(ALIGN).unwrap();
    let mut b = AlignedBuf::new(ALIGN).unwrap();
    let err = f
        .read_batch(&mut [(0, &mut a[..]), (100, &mut b[..])])
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(f.stats().sqes, sqes, "a rejected batch submitted reads");
    let mut odd = [0u8; 3];
    f.read_batch(&mut [(7, &mut odd[..0])]).unwrap();
    f.read_batch(&mut []).unwrap();
    assert_eq!(f.stats().sqes, sqes);
}

/// Whether the memlock budget lets every test ring register the arena at
/// once (true with `CAP_IPC_LOCK` or an unlimited rlimit); tests running
/// in parallel may otherwise find it spent.
fn budget_is_uncharged() -> bool {
    let info = UringDriver::arena_info();
    info.budget.contains("CAP_IPC_LOCK") || info.budget.contains("unlimited")
}

/// Buffers from `alloc_buffer` come from the registered arena; writes and
/// reads on them go out as `WRITE_FIXED` / `READ_FIXED` (also the
/// resubmitted remainders of short transfers), plain buffers as plain
/// ops, and the bytes round-trip. Fails if a fixed SQE named the wrong
/// buffer index or address (the data would differ).
#[test]
fn arena_buffers_use_fixed_ops() {
    let Some(d) = uring() else { return };
    let bufs: Vec<AlignedBuf> = (0..4)
        .map(|_| d.alloc_buffer(SLOT_BYTES).unwrap())
        .collect();
    if !bufs[0].is_from_arena() {
        eprintln!("skipped: no arena ({:?})", UringDriver::arena_info());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        short_write_every: Some(3),
        short_read_every: Some(2),
        ..Faults::default()
    };
    let f = d
        .with_faults(faults)
        .open_file(&dir.path().join("f"), OPTS)
        .unwrap();
    assert_eq!(f.buffer_registration(), BufferRegistration::NotYet);
    let mut bufs = bufs;
    for (i, b) in bufs.iter_mut().enumerate() {
        b.copy_from_slice(&pattern(i, SLOT_BYTES));
    }
    let writes: Vec<(u64, &[u8])> = bufs
        .iter()
        .zip(0u64..)
        .map(|(b, i)| (i * SLOT_BYTES as u64, &b[..]))
        .collect();
    f.write_batch(&writes).unwrap();
    let registration = f.buffer_registration();
    if registration != BufferRegistration::Registered {
        assert!(!budget_is_uncharged(), "{registration:?}");
        eprintln!("skipped: memlock budget spent by parallel tests ({registration:?})");
        return;
    }
    let st = f.stats();
    assert!(st.short_resubmits > 0, "{st:?}");
    assert_eq!(st.fixed_sqes, st.sqes, "every write is fixed: {st:?}");
    // A plain buffer in the same file: a plain WRITE.
    f.write_at(&pattern(9, ALIGN), 4 * SLOT_BYTES as u64)
        .unwrap();
    assert_eq!(f.stats().fixed_sqes, st.fixed_sqes);
    // Read back into fresh arena buffers (zeroed), all fixed.
    let mut back: Vec<AlignedBuf> = (0..4)
        .map(|_| d.alloc_buffer(SLOT_BYTES).unwrap())
        .collect();
    assert!(back.iter().all(|b| b.iter().all(|&x| x == 0)));
    let before = f.stats();
    let mut reads: Vec<(u64, &mut [u8])> = back
        .iter_mut()
        .zip(0u64..)
        .map(|(b, i)| (i * SLOT_BYTES as u64, &mut b[..]))
        .collect();
    f.read_batch(&mut reads).unwrap();
    let after = f.stats();
    assert_eq!(
        after.fixed_sqes - before.fixed_sqes,
        after.sqes - before.sqes,
        "{after:?}"
    );
    for (i, b) in back.iter().enumerate() {
        assert!(b[..] == pattern(i, SLOT_BYTES)[..], "slot {i}");
    }
    assert!(UringDriver::arena_info().registered_rings >= 1);
}

/// Runs the test `name` of this binary again in a child process (with
/// `CHILD_ENV` set, so the child runs its body) and checks that it
/// passed. For tests that change process-wide state — the arena
/// remembering a refused registration — which would otherwise leak into
/// the tests running in parallel.
fn in_child(name: &str) -> bool {
    if std::env::var(CHILD_ENV).is_ok_and(|v| v == name) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child {name} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// Set in a child process started by [`in_child`] to the test it runs.
const CHILD_ENV: &str = "HOLT_URING_TEST_CHILD";

/// The kernel refusing the registration (`ENOMEM`, as for an exhausted
/// `RLIMIT_MEMLOCK`) leaves the file working with plain ops and says why,
/// and the arena remembers it: it hands out no more slots, so later
/// buffers are plain and no other ring tries to register. Runs in a child
/// process (the arena is process-wide). Fails if the refusal failed the
/// I/O instead of falling back, or if it was forgotten.
#[test]
fn refused_registration_falls_back_to_plain_ops() {
    if !in_child("refused_registration_falls_back_to_plain_ops") {
        return;
    }
    let Some(d) = uring() else { return };
    assert_eq!(d.reserve_buffers(SLOT_BYTES, 4), 4);
    assert_eq!(UringDriver::arena_info().arena_bytes, 4 * SLOT_BYTES);
    let mut buf = d.alloc_buffer(SLOT_BYTES).unwrap();
    if !buf.is_from_arena() {
        eprintln!("skipped: no arena ({:?})", UringDriver::arena_info());
        return;
    }
    buf.copy_from_slice(&pattern(5, SLOT_BYTES));
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        fail_buffer_registration: Some(libc::ENOMEM),
        ..Faults::default()
    };
    let f: UringFile = d
        .with_faults(faults)
        .open_file(&dir.path().join("f"), OPTS)
        .unwrap();
    f.write_batch(&[(0, &buf[..])]).unwrap();
    match f.buffer_registration() {
        BufferRegistration::Unavailable(why) => {
            assert!(why.contains("RLIMIT_MEMLOCK"), "{why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let mut back = d.alloc_buffer(SLOT_BYTES).unwrap();
    assert!(!back.is_from_arena(), "no slots after a refusal");
    f.read_at(&mut back, 0).unwrap();
    assert!(back[..] == buf[..]);
    assert_eq!(f.stats().fixed_sqes, 0);
    let info = UringDriver::arena_info();
    assert!(
        info.refused
            .as_deref()
            .is_some_and(|w| w.contains("RLIMIT_MEMLOCK")),
        "{info:?}"
    );
    assert_eq!(d.reserve_buffers(SLOT_BYTES, 4), 0);
    // Another file, without injected faults, does not try again: the
    // slot handed out before the refusal is plain memory to it.
    let g = d.open_file(&dir.path().join("g"), OPTS).unwrap();
    g.write_batch(&[(0, &buf[..])]).unwrap();
    match g.buffer_registration() {
        BufferRegistration::Unavailable(why) => assert!(why.contains("RLIMIT_MEMLOCK"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(g.stats().fixed_sqes, 0);
}

/// With registered buffers off, `alloc_buffer` gives plain memory and a
/// file never registers, even when handed arena memory.
#[test]
fn registered_buffers_can_be_switched_off() {
    let Some(d) = uring() else { return };
    let off = d.with_registered_buffers(false);
    assert!(!off.alloc_buffer(SLOT_BYTES).unwrap().is_from_arena());
    let arena_buf = d.alloc_buffer(SLOT_BYTES).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = off.open_file(&dir.path().join("f"), OPTS).unwrap();
    f.write_batch(&[(0, &arena_buf[..])]).unwrap();
    assert_eq!(f.buffer_registration(), BufferRegistration::Off);
    assert_eq!(f.stats().fixed_sqes, 0);
    // Lengths that do not fit a slot come from the allocator.
    assert!(!d.alloc_buffer(SLOT_BYTES + ALIGN).unwrap().is_from_arena());
    assert!(d.alloc_buffer(100).is_err());
}
