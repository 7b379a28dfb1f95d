#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `PersistentBackend`: durability across reopen, shadow paging, slot
//! reuse, manifest validation, directory locking and flush failure handling.

mod common;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::fault::{Injector, Kind, Plan};
use common::{per_driver, Driver};
use holt::{AlignedBlobBuf, Backend, BlobGuid, Error, PersistentBackend};
use tempfile::TempDir;

const FRAME: u64 = 524_288;

fn guid(i: u32) -> BlobGuid {
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&i.to_le_bytes());
    g[15] = 0xa5;
    g
}

/// A frame whose every byte depends on `seed`: the guid-ish seed in the
/// first 8 bytes, then a position-dependent pattern.
fn image(seed: u64) -> AlignedBlobBuf {
    let mut buf = AlignedBlobBuf::zeroed();
    let s = buf.as_mut_slice();
    for (i, b) in s.iter_mut().enumerate() {
        *b = (i as u64)
            .wrapping_mul(31)
            .wrapping_add(seed.wrapping_mul(131)) as u8;
    }
    s[..8].copy_from_slice(&seed.to_le_bytes());
    buf
}

fn read(b: &PersistentBackend, g: BlobGuid) -> AlignedBlobBuf {
    let mut out = AlignedBlobBuf::zeroed();
    b.read_blob(g, &mut out).unwrap();
    out
}

fn assert_image(b: &PersistentBackend, g: BlobGuid, seed: u64) {
    let got = read(b, g);
    assert!(
        got.as_slice() == image(seed).as_slice(),
        "guid {g:02x?}: expected image {seed}, found seed {:?}",
        got.as_slice().get(..8)
    );
}

fn open(dir: &TempDir, d: Driver) -> PersistentBackend {
    PersistentBackend::open_with_driver(dir.path(), d.io()).unwrap()
}

fn manifest_path(dir: &TempDir) -> PathBuf {
    dir.path().join("MANIFEST")
}

#[test]
fn is_send_sync_and_debug() {
    fn check<T: Send + Sync + std::fmt::Debug>() {}
    check::<PersistentBackend>();
    let dir = TempDir::new().unwrap();
    let b = open(&dir, Driver::Sync);
    let dbg = format!("{b:?}");
    assert!(dbg.starts_with("PersistentBackend"), "{dbg}");
    assert!(dbg.contains("slot_count"), "{dbg}");
    assert_eq!(b.data_dir(), dir.path());
    assert_eq!(b.driver().name(), "sync");
    // Either is fine (tmpfs refuses O_DIRECT); it must just be reported.
    let _ = b.is_direct();
}

fn creates_missing_directory(d: Driver) {
    let dir = TempDir::new().unwrap();
    let nested = dir.path().join("a").join("b");
    let b = PersistentBackend::open_with_driver(&nested, d.io()).unwrap();
    assert!(b.is_empty());
    assert!(nested.join("frames.dat").is_file());
    assert!(nested.join("LOCK").is_file());
}

fn write_flush_reopen_round_trip(d: Driver) {
    let dir = TempDir::new().unwrap();
    let n = 40u32;
    {
        let b = open(&dir, d);
        for i in 0..n {
            b.write_blob(guid(i), &image(u64::from(i) + 1000)).unwrap();
        }
        assert_eq!(b.len(), n as usize);
        for i in 0..n {
            assert_image(&b, guid(i), u64::from(i) + 1000);
        }
        b.flush().unwrap();
    }
    let b = open(&dir, d);
    assert_eq!(b.len(), n as usize);
    let mut expected: Vec<BlobGuid> = (0..n).map(guid).collect();
    expected.sort_unstable();
    assert_eq!(b.list_blobs().unwrap(), expected);
    for i in 0..n {
        assert!(b.has_blob(guid(i)).unwrap());
        assert_image(&b, guid(i), u64::from(i) + 1000);
    }
    assert!(!b.has_blob(guid(n)).unwrap());
    assert!(b.slot_count() >= u64::from(n));
    assert!(b.file_bytes() >= u64::from(n) * FRAME);
}

fn unflushed_write_is_invisible_after_reopen(d: Driver) {
    let dir = TempDir::new().unwrap();
    {
        let b = open(&dir, d);
        b.write_blob(guid(1), &image(1)).unwrap();
        b.write_blob(guid(2), &image(2)).unwrap();
        b.flush().unwrap();
        // Rewrite without flushing: visible now, gone after reopen, and the
        // durable image must not have been overwritten in place.
        b.write_blob(guid(1), &image(11)).unwrap();
        b.write_blob(guid(3), &image(3)).unwrap();
        assert_image(&b, guid(1), 11);
        assert_image(&b, guid(3), 3);
    }
    let b = open(&dir, d);
    assert_eq!(b.len(), 2);
    assert_image(&b, guid(1), 1);
    assert_image(&b, guid(2), 2);
    assert!(!b.has_blob(guid(3)).unwrap());
}

fn deletes_take_effect_only_at_flush(d: Driver) {
    let dir = TempDir::new().unwrap();
    {
        let b = open(&dir, d);
        b.write_blob(guid(1), &image(1)).unwrap();
        b.write_blob(guid(2), &image(2)).unwrap();
        b.flush().unwrap();
        b.delete_blob(guid(1)).unwrap();
        b.delete_blob(guid(99)).unwrap(); // missing: no-op
        assert!(!b.has_blob(guid(1)).unwrap());
        assert_eq!(b.len(), 1);
        // A write into the freed capacity must not clobber the durable copy.
        for i in 10..20 {
            b.write_blob(guid(i), &image(u64::from(i))).unwrap();
        }
    }
    {
        let b = open(&dir, d);
        assert_eq!(b.len(), 2);
        assert_image(&b, guid(1), 1);
        b.delete_blob(guid(1)).unwrap();
        b.flush().unwrap();
    }
    let b = open(&dir, d);
    assert_eq!(b.list_blobs().unwrap(), vec![guid(2)]);
    assert!(!b.has_blob(guid(1)).unwrap());
    assert_image(&b, guid(2), 2);
}

fn rewrites_reuse_slots(d: Driver) {
    let dir = TempDir::new().unwrap();
    let b = open(&dir, d);
    for round in 0..100u64 {
        for i in 0..6u32 {
            b.write_blob(guid(i), &image(round * 10 + u64::from(i)))
                .unwrap();
        }
        b.flush().unwrap();
    }
    // 6 durable + 6 shadow copies fit in 16 slots.
    assert!(b.slot_count() <= 16, "slot_count {}", b.slot_count());
    assert!(b.file_bytes() <= 16 * FRAME + 4096, "{}", b.file_bytes());
    drop(b);
    let b = open(&dir, d);
    for i in 0..6u32 {
        assert_image(&b, guid(i), 990 + u64::from(i));
    }
    assert!(b.slot_count() <= 16);
}

fn write_blobs_batch_round_trip(d: Driver) {
    let dir = TempDir::new().unwrap();
    let images: Vec<AlignedBlobBuf> = (0..20).map(|i| image(500 + i)).collect();
    {
        let b = open(&dir, d);
        let batch: Vec<(BlobGuid, &AlignedBlobBuf)> = images
            .iter()
            .enumerate()
            .map(|(i, img)| (guid(i as u32), img))
            .collect();
        b.write_blobs(&batch).unwrap();
        b.write_blobs(&[]).unwrap();
        // Same guid twice in one batch: the later image wins.
        let (x, y) = (image(7), image(8));
        b.write_blobs(&[(guid(100), &x), (guid(100), &y)]).unwrap();
        assert_image(&b, guid(100), 8);
        assert_eq!(b.len(), 21);
        b.flush().unwrap();
        // 21 live slots; the dropped duplicate was freed again.
        assert!(b.slot_count() <= 24, "{}", b.slot_count());
    }
    let b = open(&dir, d);
    assert_eq!(b.len(), 21);
    for i in 0..20u32 {
        assert_image(&b, guid(i), 500 + u64::from(i));
    }
    assert_image(&b, guid(100), 8);
}

/// `read_blobs` (one batched driver read) returns what `read_blob` does,
/// frame by frame and in the caller's order; a missing guid fails the
/// batch with NotFound, and rewrites afterwards still reuse slots.
/// Deliberate bug caught: pairing buffers with the wrong slots (images
/// swapped between frames).
fn read_blobs_batch_matches_single_reads(d: Driver) {
    let dir = TempDir::new().unwrap();
    let b = open(&dir, d);
    let images: Vec<AlignedBlobBuf> = (0..12).map(|i| image(700 + i)).collect();
    let batch: Vec<(BlobGuid, &AlignedBlobBuf)> = images
        .iter()
        .enumerate()
        .map(|(i, img)| (guid(i as u32), img))
        .collect();
    b.write_blobs(&batch).unwrap();
    b.flush().unwrap();
    let order = [7u32, 0, 11, 3, 5];
    let mut bufs: Vec<AlignedBlobBuf> = order.iter().map(|_| AlignedBlobBuf::zeroed()).collect();
    {
        let mut reads: Vec<(BlobGuid, &mut AlignedBlobBuf)> = order
            .iter()
            .map(|&i| guid(i))
            .zip(bufs.iter_mut())
            .collect();
        b.read_blobs(&mut reads).unwrap();
    }
    for (&i, buf) in order.iter().zip(&bufs) {
        assert!(buf.as_slice() == read(&b, guid(i)).as_slice(), "frame {i}");
    }
    let mut x = AlignedBlobBuf::zeroed();
    let mut y = AlignedBlobBuf::zeroed();
    match b.read_blobs(&mut [(guid(1), &mut x), ([0xcd; 16], &mut y)]) {
        Err(Error::BackendIo(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        other => panic!("unexpected {other:?}"),
    }
    let slots = b.slot_count();
    for round in 0..3u64 {
        let imgs: Vec<AlignedBlobBuf> = (0..12).map(|i| image(800 + i + 100 * round)).collect();
        let batch: Vec<(BlobGuid, &AlignedBlobBuf)> = imgs
            .iter()
            .enumerate()
            .map(|(i, img)| (guid(i as u32), img))
            .collect();
        b.write_blobs(&batch).unwrap();
        b.flush().unwrap();
    }
    assert!(
        b.slot_count() <= slots + 12,
        "{} > {slots} + 12",
        b.slot_count()
    );
}

fn checkpoint_meta_persists(d: Driver) {
    let dir = TempDir::new().unwrap();
    {
        let b = open(&dir, d);
        assert_eq!(b.checkpoint_meta(), (0, 0));
        b.set_checkpoint_meta(17, 40);
        // Staged only: not durable before a flush.
        assert_eq!(b.checkpoint_meta(), (0, 0));
        b.flush().unwrap();
        assert_eq!(b.checkpoint_meta(), (17, 40));
        b.set_checkpoint_meta(18, 41);
    }
    {
        let b = open(&dir, d);
        assert_eq!(b.checkpoint_meta(), (17, 40));
        b.set_checkpoint_meta(25, 60);
        b.flush().unwrap();
    }
    assert_eq!(open(&dir, d).checkpoint_meta(), (25, 60));
}

fn unknown_guid_read_is_not_found(d: Driver) {
    let dir = TempDir::new().unwrap();
    let b = open(&dir, d);
    let mut out = AlignedBlobBuf::zeroed();
    match b.read_blob([0xab; 16], &mut out) {
        Err(Error::BackendIo(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
            assert!(e.to_string().starts_with("blob [ab, ab,"), "{e}");
            assert!(e.to_string().ends_with("] not found"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn second_open_is_locked_until_drop(d: Driver) {
    let dir = TempDir::new().unwrap();
    let first = open(&dir, d);
    first.write_blob(guid(1), &image(1)).unwrap();
    first.flush().unwrap();
    match PersistentBackend::open_with_driver(dir.path(), d.io()) {
        Err(Error::Locked { dir: locked }) => assert_eq!(locked, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    let second = open(&dir, d);
    assert_image(&second, guid(1), 1);
}

/// Writes two frames durably, replaces the manifest with `damage(bytes)`,
/// and expects reopen to fail with `Corrupt` naming the manifest.
fn expect_corrupt_manifest(
    d: Driver,
    damage: impl FnOnce(Vec<u8>) -> Vec<u8>,
) -> (u64, &'static str) {
    let dir = TempDir::new().unwrap();
    {
        let b = open(&dir, d);
        b.write_blob(guid(1), &image(1)).unwrap();
        b.write_blob(guid(2), &image(2)).unwrap();
        b.set_checkpoint_meta(5, 6);
        b.flush().unwrap();
    }
    let path = manifest_path(&dir);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, damage(bytes)).unwrap();
    match PersistentBackend::open_with_driver(dir.path(), d.io()) {
        Err(
            ref e @ Error::Corrupt {
                ref file,
                offset,
                context,
            },
        ) => {
            assert_eq!(file, &path);
            assert!(e.to_string().contains("MANIFEST"), "{e}");
            (offset, context)
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn manifest_byte_flips_are_corrupt(d: Driver) {
    let len = {
        let mut len = 0;
        expect_corrupt_manifest(d, |b| {
            len = b.len();
            vec![]
        });
        len
    };
    for at in 0..len {
        let _ = expect_corrupt_manifest(d, |mut b| {
            b[at] ^= 0x40;
            b
        });
    }
}

fn manifest_truncation_and_garbage_are_corrupt(d: Driver) {
    for cut in [0usize, 3, 8, 20, 47, 52, 60, 99] {
        let _ = expect_corrupt_manifest(d, |mut b| {
            b.truncate(cut.min(b.len() - 1));
            b
        });
    }
    let (offset, context) = expect_corrupt_manifest(d, |b| vec![0x5a; b.len()]);
    assert_eq!((offset, context), (0, "bad manifest magic"));
    let _ = expect_corrupt_manifest(d, |mut b| {
        b.extend_from_slice(b"trailing garbage");
        b
    });
}

fn truncated_data_file_is_corrupt(d: Driver) {
    let dir = TempDir::new().unwrap();
    {
        let b = open(&dir, d);
        b.write_blob(guid(1), &image(1)).unwrap();
        b.write_blob(guid(2), &image(2)).unwrap();
        b.flush().unwrap();
    }
    let data = dir.path().join("frames.dat");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(FRAME)
        .unwrap();
    match PersistentBackend::open_with_driver(dir.path(), d.io()) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, data);
            assert_eq!(offset, FRAME);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn stale_manifest_tmp_is_ignored(d: Driver) {
    let dir = TempDir::new().unwrap();
    {
        let b = open(&dir, d);
        b.write_blob(guid(1), &image(1)).unwrap();
        b.flush().unwrap();
    }
    let tmp = dir.path().join("MANIFEST.tmp");
    std::fs::write(&tmp, b"half-written manifest").unwrap();
    let b = open(&dir, d);
    assert!(!tmp.exists());
    assert_image(&b, guid(1), 1);
    b.write_blob(guid(2), &image(2)).unwrap();
    b.flush().unwrap();
    drop(b);
    let b = open(&dir, d);
    assert_eq!(b.len(), 2);
}

// ---------------------------------------------------------------------------
// Fault injection through the driver seam.

/// The backend on driver `d` wrapped in a fault injector, disarmed.
fn open_faulty(dir: &TempDir, d: Driver) -> (PersistentBackend, Arc<Injector>) {
    let (driver, faults) = Injector::wrap(d.io());
    let b = PersistentBackend::open_with_driver(dir.path(), driver).unwrap();
    assert_eq!(b.driver().name(), "fault");
    (b, faults)
}

/// Frame writes refused: a full disk under the data file.
fn frame_writes_fail() -> Plan {
    Plan::always(Kind::Write, io::ErrorKind::StorageFull).on("frames.dat")
}

/// Every `sync_data` / `sync_all` fails (EIO).
fn syncs_fail() -> Plan {
    Plan::always(Kind::Sync, io::ErrorKind::Other)
}

/// Every rename fails (EIO).
fn renames_fail() -> Plan {
    Plan::always(Kind::Rename, io::ErrorKind::Other)
}

fn failed_write_leaves_mapping_and_slots_unchanged(d: Driver) {
    let dir = TempDir::new().unwrap();
    let (b, faults) = open_faulty(&dir, d);
    b.write_blob(guid(1), &image(1)).unwrap();
    b.flush().unwrap();
    faults.arm(frame_writes_fail());
    for _ in 0..50 {
        match b.write_blob(guid(1), &image(2)) {
            Err(Error::BackendIo(e)) => assert_eq!(e.kind(), io::ErrorKind::StorageFull),
            other => panic!("expected BackendIo, got {other:?}"),
        }
        let (x, y) = (image(3), image(4));
        assert!(b.write_blobs(&[(guid(2), &x), (guid(3), &y)]).is_err());
    }
    // Reads keep working; nothing was remapped and no slot leaked.
    assert_image(&b, guid(1), 1);
    assert_eq!(b.len(), 1);
    assert_eq!(b.slot_count(), 8);
    faults.disarm();
    b.write_blob(guid(1), &image(2)).unwrap();
    b.flush().unwrap();
    drop(b);
    assert_image(&open(&dir, d), guid(1), 2);
}

fn failed_flush_keeps_previous_manifest_and_retry_works(d: Driver) {
    let dir = TempDir::new().unwrap();
    let (b, faults) = open_faulty(&dir, d);
    b.write_blob(guid(1), &image(1)).unwrap();
    b.set_checkpoint_meta(1, 2);
    b.flush().unwrap();

    b.write_blob(guid(1), &image(11)).unwrap();
    b.write_blob(guid(2), &image(2)).unwrap();
    b.set_checkpoint_meta(3, 4);
    // (A failed `sync_dir` has its own test: its rename already happened.)
    for plan in [syncs_fail(), renames_fail()] {
        faults.arm(plan);
        assert!(matches!(b.flush(), Err(Error::BackendIo(_))));
        faults.disarm();
        assert_eq!(b.checkpoint_meta(), (1, 2));
        assert_eq!(b.len(), 2);
        assert_image(&b, guid(1), 11);
        assert_image(&b, guid(2), 2);
        // Churn between attempts must not reuse a slot either manifest names.
        b.write_blob(guid(9), &image(9)).unwrap();
        b.delete_blob(guid(9)).unwrap();
    }
    // A crash after a failed rename: the old manifest is the one on disk.
    faults.arm(renames_fail());
    assert!(b.flush().is_err());
    drop(b);
    {
        let b = open(&dir, d);
        assert_eq!(b.checkpoint_meta(), (1, 2));
        assert_eq!(b.len(), 1);
        assert_image(&b, guid(1), 1);
    }
    // Retry after the faults clear.
    let (b, _faults) = open_faulty(&dir, d);
    b.write_blob(guid(1), &image(11)).unwrap();
    b.write_blob(guid(2), &image(2)).unwrap();
    b.set_checkpoint_meta(3, 4);
    b.flush().unwrap();
    drop(b);
    let b = open(&dir, d);
    assert_eq!(b.checkpoint_meta(), (3, 4));
    assert_image(&b, guid(1), 11);
    assert_image(&b, guid(2), 2);
}

fn failed_sync_dir_keeps_new_manifest_slots_safe(d: Driver) {
    let dir = TempDir::new().unwrap();
    let (b, faults) = open_faulty(&dir, d);
    b.write_blob(guid(1), &image(1)).unwrap();
    b.flush().unwrap();
    b.write_blob(guid(2), &image(2)).unwrap();
    faults.arm(Plan::always(Kind::SyncDir, io::ErrorKind::Other));
    assert!(b.flush().is_err());
    faults.disarm();
    // The renamed manifest (naming guid 2's slot) may be what a crash
    // leaves on disk, so deleting guid 2 must not let its slot be reused.
    b.delete_blob(guid(2)).unwrap();
    for i in 10..30 {
        b.write_blob(guid(i), &image(u64::from(i))).unwrap();
    }
    drop(b); // "crash": the renamed manifest is on disk
    let b = open(&dir, d);
    assert_eq!(b.len(), 2);
    assert_image(&b, guid(1), 1);
    assert_image(&b, guid(2), 2);
}

// ---------------------------------------------------------------------------
// Concurrency: readers racing rewrites, deletes and flushes never see a frame
// of another guid or a torn frame.

fn stamped(g: BlobGuid, version: u8) -> AlignedBlobBuf {
    let mut buf = AlignedBlobBuf::zeroed();
    buf.as_mut_slice().fill(version);
    buf.as_mut_slice()[..16].copy_from_slice(&g);
    buf
}

fn concurrent_reads_writes_and_flushes(d: Driver) {
    let dir = TempDir::new().unwrap();
    let b = Arc::new(open(&dir, d));
    let guids: Vec<BlobGuid> = (0..16).map(guid).collect();
    for &g in &guids {
        b.write_blob(g, &stamped(g, 0)).unwrap();
    }
    b.flush().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for t in 0..4usize {
        let (b, stop, guids) = (Arc::clone(&b), Arc::clone(&stop), guids.clone());
        readers.push(std::thread::spawn(move || {
            let mut out = AlignedBlobBuf::zeroed();
            let mut reads = 0u64;
            let mut i = t;
            while !stop.load(Ordering::SeqCst) {
                let g = guids[i % guids.len()];
                i = i.wrapping_mul(7).wrapping_add(3);
                match b.read_blob(g, &mut out) {
                    Ok(()) => {
                        let s = out.as_slice();
                        assert_eq!(&s[..16], &g[..], "read another guid's frame");
                        let v = s[16];
                        assert!(s[16..].iter().all(|&x| x == v), "torn frame");
                        reads += 1;
                    }
                    Err(Error::BackendIo(e)) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => panic!("read failed: {e}"),
                }
            }
            reads
        }));
    }
    let mut writers = Vec::new();
    for t in 0..4usize {
        let (b, guids) = (Arc::clone(&b), guids.clone());
        writers.push(std::thread::spawn(move || {
            let mine: Vec<BlobGuid> = guids.iter().copied().skip(t).step_by(4).collect();
            for round in 1..=60u8 {
                for (k, &g) in mine.iter().enumerate() {
                    if (usize::from(round) + k) % 5 == 0 {
                        b.delete_blob(g).unwrap();
                    } else {
                        b.write_blob(g, &stamped(g, round)).unwrap();
                    }
                }
                if round % 4 == 0 {
                    b.flush().unwrap();
                }
            }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    b.flush().unwrap();
    let live = b.list_blobs().unwrap();
    let slots = b.slot_count();
    assert!(slots <= 64, "slot_count {slots}");
    drop(b);
    let b = open(&dir, d);
    assert_eq!(b.list_blobs().unwrap(), live);
    for g in live {
        let out = read(&b, g);
        assert_eq!(&out.as_slice()[..16], &g[..]);
    }
}

per_driver!(
    creates_missing_directory,
    write_flush_reopen_round_trip,
    unflushed_write_is_invisible_after_reopen,
    deletes_take_effect_only_at_flush,
    rewrites_reuse_slots,
    write_blobs_batch_round_trip,
    read_blobs_batch_matches_single_reads,
    checkpoint_meta_persists,
    unknown_guid_read_is_not_found,
    second_open_is_locked_until_drop,
    manifest_byte_flips_are_corrupt,
    manifest_truncation_and_garbage_are_corrupt,
    truncated_data_file_is_corrupt,
    stale_manifest_tmp_is_ignored,
    failed_write_leaves_mapping_and_slots_unchanged,
    failed_flush_keeps_previous_manifest_and_retry_works,
    failed_sync_dir_keeps_new_manifest_slots_safe,
    concurrent_reads_writes_and_flushes,
);
