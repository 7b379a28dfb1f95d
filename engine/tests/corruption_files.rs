#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Damaged files in a persistent data directory (DESIGN.md §4, §7, §11:
//! "bit flip in a frame, manifest or mid-WAL: clear error naming the file
//! and offset; no panic"; a torn WAL tail is cut, not an error).
//!
//! Each test builds a directory through the public API, closes the tree,
//! flips bytes in `frames.dat`, `MANIFEST`, `journal.wal` or a retired
//! `journal-<seq>.wal` with plain `std::fs`, and reopens — each scenario
//! once per I/O driver (`<test>::sync`, `<test>::uring`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::workload::dump_plain as dump;
use common::{builder, per_driver, Driver};
use holt::{BlobGuid, Error, Tree};

const FRAME: u64 = 524_288;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn open(dir: &Path, d: Driver) -> holt::Result<Tree> {
    builder(dir, d).wal_sync_on_commit(true).open()
}

fn val(i: u32, round: u32) -> Vec<u8> {
    let len = if i % 2 == 0 {
        50_000
    } else {
        64 + (i as usize * 37) % 900
    };
    let mut v = format!("r{round}-v{i}:").into_bytes();
    v.resize(len, b'a' + (i % 26) as u8);
    v
}

/// A tree of several frames (large values spill), checkpointed, closed.
fn build_checkpointed(dir: &Path, d: Driver) -> Model {
    let t = open(dir, d).unwrap();
    let mut m = Model::new();
    for i in 0..64u32 {
        let k = format!("dir{}/obj{i:03}", i % 3).into_bytes();
        t.put(&k, &val(i, 0)).unwrap();
        m.insert(k, val(i, 0));
    }
    t.checkpoint().unwrap();
    let st = t.stats().unwrap();
    assert!(
        st.blob_count >= 3,
        "want a multi-frame tree: {} frames",
        st.blob_count
    );
    m
}

/// `(guid, slot)` entries of `<dir>/MANIFEST` (layout in docs/design.md).
fn manifest_entries(dir: &Path) -> Vec<(BlobGuid, u64)> {
    let b = std::fs::read(dir.join("MANIFEST")).unwrap();
    assert_eq!(&b[..8], b"HOLTMAN1");
    let n = u64::from_le_bytes(b[40..48].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| {
            let at = 48 + 24 * i;
            let guid: BlobGuid = b[at..at + 16].try_into().unwrap();
            (
                guid,
                u64::from_le_bytes(b[at + 16..at + 24].try_into().unwrap()),
            )
        })
        .collect()
}

fn flip(path: &Path, offset: u64, mask: u8) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= mask;
    std::fs::write(path, &b).unwrap();
}

/// Byte offsets of the records of a WAL file (record layout in
/// docs/design.md: total length u32 first, multiple of 8).
fn wal_records(path: &Path) -> Vec<u64> {
    let b = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if len < 24 || at + len > b.len() {
            break;
        }
        // Seq 0 marks a group-commit batch marker, not an operation.
        let seq = u64::from_le_bytes(b[at + 8..at + 16].try_into().unwrap());
        if seq != 0 {
            out.push(at as u64);
        }
        at += len;
    }
    out
}

fn is_corrupt_for(e: &Error, guid: BlobGuid) -> bool {
    matches!(e, Error::NodeCorrupt { blob_guid: Some(g), .. } if *g == guid)
}

/// A flipped byte inside a child frame that the tree reads: open works
/// (the root is intact), every key in the damaged frame reads as
/// `NodeCorrupt` naming that frame's GUID, every other key still reads its
/// value, and no read returns a wrong value. Fails if frame images were
/// not CRC-checked on load (garbage values or a panic in the decoder), or
/// if the error lost the GUID.
fn flipped_byte_in_a_child_frame_is_node_corrupt_naming_the_blob(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let model = build_checkpointed(dir.path(), d);
    let entries = manifest_entries(dir.path());
    let children: Vec<_> = entries
        .iter()
        .filter(|(g, _)| *g != [0u8; 16])
        .copied()
        .collect();
    assert!(!children.is_empty());
    for (n, &(guid, slot)) in children.iter().enumerate() {
        let scratch = tempfile::tempdir().unwrap();
        for f in ["frames.dat", "MANIFEST", "journal.wal"] {
            std::fs::copy(dir.path().join(f), scratch.path().join(f)).unwrap();
        }
        // Somewhere past the header, different in each frame.
        let off = slot * FRAME + 4096 + (n as u64 * 77_777) % (FRAME - 8192);
        flip(&scratch.path().join("frames.dat"), off, 0x20);
        let t = open(scratch.path(), d).unwrap();
        let mut corrupt = 0;
        for (k, v) in &model {
            match t.get(k) {
                Ok(Some(got)) => {
                    assert_eq!(&got, v, "wrong value for {}", String::from_utf8_lossy(k))
                }
                Ok(None) => panic!(
                    "key {} vanished instead of an error",
                    String::from_utf8_lossy(k)
                ),
                Err(e) => {
                    assert!(
                        is_corrupt_for(&e, guid),
                        "expected NodeCorrupt for {guid:02x?}, got {e:?}"
                    );
                    assert!(
                        e.to_string().contains(&format!("blob={:02x?}", &guid[..4])),
                        "{e}"
                    );
                    corrupt += 1;
                }
            }
        }
        assert!(
            corrupt > 0,
            "no key read the damaged frame {guid:02x?} (slot {slot})"
        );
        // A scan reaches the frame and ends with the error.
        let scan: Vec<_> = t.range().into_iter().collect();
        let last = scan.last().unwrap();
        assert!(
            matches!(last, Err(e) if is_corrupt_for(e, guid)),
            "scan did not end in NodeCorrupt: {last:?}"
        );
    }
}

/// A flipped byte in the root frame: open itself fails with
/// `NodeCorrupt` naming the root GUID (all zeros), never a panic, and the
/// files are left as they were.
fn flipped_byte_in_the_root_frame_fails_open_with_node_corrupt(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    build_checkpointed(dir.path(), d);
    let root_slot = manifest_entries(dir.path())
        .iter()
        .find(|(g, _)| *g == [0u8; 16])
        .unwrap()
        .1;
    for off in [20u64, 100, 300, 100_000, FRAME - 1] {
        let path = dir.path().join("frames.dat");
        flip(&path, root_slot * FRAME + off, 0x01);
        let before = std::fs::read(&path).unwrap();
        match open(dir.path(), d) {
            Err(e) => assert!(is_corrupt_for(&e, [0u8; 16]), "offset {off}: {e:?}"),
            Ok(_) => panic!("offset {off}: open over a damaged root frame succeeded"),
        }
        assert!(
            std::fs::read(&path).unwrap() == before,
            "failed open changed frames.dat"
        );
        flip(&path, root_slot * FRAME + off, 0x01);
    }
    open(dir.path(), d).unwrap();
}

/// Damaged slots the manifest does not reference (free slots, old shadow
/// copies) are never read: everything opens and reads normally. Fails if
/// recovery scanned the data file instead of following the manifest.
fn damage_in_unreferenced_slots_is_harmless(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let model = build_checkpointed(dir.path(), d);
    let used: BTreeSet<u64> = manifest_entries(dir.path()).iter().map(|e| e.1).collect();
    let path = dir.path().join("frames.dat");
    let mut b = std::fs::read(&path).unwrap();
    let slots = b.len() as u64 / FRAME;
    let mut damaged = 0;
    for s in (0..slots).filter(|s| !used.contains(s)) {
        for i in 0..64u64 {
            b[(s * FRAME + i * 8191) as usize] ^= 0xFF;
        }
        damaged += 1;
    }
    assert!(damaged > 0, "no free slot to damage");
    std::fs::write(&path, &b).unwrap();
    let t = open(dir.path(), d).unwrap();
    assert_eq!(dump(&t).unwrap(), model);
}

/// Replay that must load a damaged frame (WAL records above the cut touch
/// keys in it) fails the open with `NodeCorrupt` naming the frame — a
/// clear error, no panic, no partially replayed tree handed out.
fn replay_into_a_damaged_frame_fails_open_with_node_corrupt(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let model = build_checkpointed(dir.path(), d);
    {
        let t = open(dir.path(), d).unwrap();
        for k in model.keys() {
            t.put(k, b"after the checkpoint").unwrap();
        }
    }
    let entries = manifest_entries(dir.path());
    let (guid, slot) = *entries.iter().find(|(g, _)| *g != [0u8; 16]).unwrap();
    flip(&dir.path().join("frames.dat"), slot * FRAME + 5000, 0x80);
    match open(dir.path(), d) {
        Err(e) => assert!(is_corrupt_for(&e, guid), "{e:?}"),
        Ok(_) => panic!("replay over a damaged frame succeeded"),
    }
}

fn expect_corrupt_file(dir: &Path, d: Driver, file: &str) -> (u64, &'static str) {
    match open(dir, d) {
        Err(Error::Corrupt {
            file: f,
            offset,
            context,
        }) => {
            assert_eq!(
                f.file_name().unwrap(),
                file,
                "Corrupt names the wrong file: {f:?}"
            );
            let e = Error::Corrupt {
                file: f,
                offset,
                context,
            };
            let msg = e.to_string();
            assert!(
                msg.contains(file) && msg.contains(&offset.to_string()),
                "{msg}"
            );
            (offset, context)
        }
        Err(e) => panic!("expected Corrupt naming {file}, got {e:?}"),
        Ok(_) => panic!("open over a damaged {file} succeeded"),
    }
}

/// Every byte flip in MANIFEST (header, entries, CRC) and a truncated
/// manifest give `Error::Corrupt` naming MANIFEST and an offset inside
/// it; the damaged manifest is left in place (never replaced by a fresh,
/// empty one). Fails if a manifest that does not verify were treated as
/// missing: the tree would open empty and the next checkpoint would
/// overwrite the only map of the data.
fn damaged_manifest_is_corrupt_naming_it(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let model = build_checkpointed(dir.path(), d);
    let path = dir.path().join("MANIFEST");
    let good = std::fs::read(&path).unwrap();
    let len = good.len() as u64;
    let mut offsets: Vec<u64> = vec![
        0,
        7,
        8,
        16,
        24,
        32,
        40,
        48,
        50,
        64,
        len - 5,
        len - 4,
        len - 1,
    ];
    offsets.extend((0..len).step_by(13));
    for off in offsets {
        flip(&path, off, 0x04);
        let (at, _) = expect_corrupt_file(dir.path(), d, "MANIFEST");
        assert!(at <= len, "offset {at} past the manifest's end");
        assert_eq!(
            std::fs::read(&path).unwrap().len() as u64,
            len,
            "damaged manifest was rewritten"
        );
        flip(&path, off, 0x04);
    }
    for cut in [0u64, 10, 47, len - 1] {
        std::fs::write(&path, &good[..cut as usize]).unwrap();
        expect_corrupt_file(dir.path(), d, "MANIFEST");
    }
    std::fs::write(&path, &good).unwrap();
    assert_eq!(dump(&open(dir.path(), d).unwrap()).unwrap(), model);
}

/// A data file shorter than a slot the manifest references is
/// `Error::Corrupt` naming frames.dat.
fn truncated_frames_file_is_corrupt_naming_it(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    build_checkpointed(dir.path(), d);
    let max_slot = manifest_entries(dir.path())
        .iter()
        .map(|e| e.1)
        .max()
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("frames.dat"))
        .unwrap();
    f.set_len(max_slot * FRAME + 100).unwrap();
    drop(f);
    expect_corrupt_file(dir.path(), d, "frames.dat");
}

/// WAL-only tree (no checkpoint): `n` puts with sync on commit, closed.
fn build_wal_only(dir: &Path, d: Driver, n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    let t = open(dir, d).unwrap();
    let mut kv = Vec::new();
    for i in 0..n {
        let k = format!("w/{i:03}").into_bytes();
        let v = val(i + 1, 1); // no 50 kB values: small records
        let v = v[..v.len().min(300)].to_vec();
        t.put(&k, &v).unwrap();
        kv.push((k, v));
    }
    kv
}

/// A flipped byte inside an early record of journal.wal, with valid
/// records after it: open fails with `ReplaySanityFailed` at that record's
/// offset and changes nothing on disk (the WAL keeps every byte, so the
/// damage can be repaired and nothing is lost). Fails if recovery treated
/// mid-file damage as a torn tail (it would cut off — and lose — every
/// later, acknowledged record).
fn mid_wal_damage_is_replay_sanity_failed_and_changes_nothing(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let kv = build_wal_only(dir.path(), d, 40);
    let wal = dir.path().join("journal.wal");
    let recs = wal_records(&wal);
    assert_eq!(recs.len(), 40);
    for (idx, inside) in [(0usize, 4u64), (3, 30), (17, 9), (38, 24)] {
        flip(&wal, recs[idx] + inside, 0x10);
        let before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap() != "LOCK")
            .map(|p| {
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        match open(dir.path(), d) {
            Err(Error::ReplaySanityFailed { record_offset, .. }) => {
                assert_eq!(record_offset, recs[idx], "record {idx}: wrong offset");
            }
            other => panic!("record {idx}: expected ReplaySanityFailed, got {other:?}"),
        }
        for (p, b) in &before {
            assert!(
                std::fs::read(p).unwrap() == *b,
                "failed open changed {}",
                p.display()
            );
        }
        flip(&wal, recs[idx] + inside, 0x10);
    }
    let t = open(dir.path(), d).unwrap();
    assert_eq!(dump(&t).unwrap(), kv.into_iter().collect::<Model>());
}

/// The same in a retired WAL file (`journal-<seq>.wal`, as left by a
/// crash between a rotation and the checkpoint that covers it): intact,
/// it is replayed before journal.wal; damaged in the middle, open fails
/// with `ReplaySanityFailed`.
fn mid_damage_in_a_retired_wal_file_is_replay_sanity_failed(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let kv = build_wal_only(dir.path(), d, 20);
    let active = dir.path().join("journal.wal");
    let retired = dir.path().join(format!("journal-{:020}.wal", 20));
    std::fs::rename(&active, &retired).unwrap();
    std::fs::write(&active, b"").unwrap();
    let mut model: Model = kv.into_iter().collect();
    {
        let t = open(dir.path(), d).unwrap();
        assert_eq!(dump(&t).unwrap(), model, "retired file not replayed");
        t.put(b"w/new", b"in the active file").unwrap();
        model.insert(b"w/new".to_vec(), b"in the active file".to_vec());
    }
    assert!(retired.exists());
    let recs = wal_records(&retired);
    flip(&retired, recs[5] + 28, 0x02);
    match open(dir.path(), d) {
        Err(Error::ReplaySanityFailed { record_offset, .. }) => assert_eq!(record_offset, recs[5]),
        other => panic!("expected ReplaySanityFailed, got {other:?}"),
    }
    flip(&retired, recs[5] + 28, 0x02);
    assert_eq!(dump(&open(dir.path(), d).unwrap()).unwrap(), model);
}

/// Damage at the tail of journal.wal — a flipped byte in the last
/// record, a record cut short, zeros or garbage after the last record —
/// is a torn tail: open succeeds with every earlier record, the tail is
/// cut off physically (all zeros past the last record are the writer's
/// zero-filled tail instead, and kept), and later writes land after the
/// last whole record and survive the next reopen. Fails if new records were appended after the
/// damaged bytes (the next recovery would see a bad record followed by
/// valid ones and refuse to open, or silently drop the new writes).
fn damaged_wal_tail_is_cut_and_earlier_records_kept(d: Driver) {
    type Damage = fn(&mut Vec<u8>, u64);
    let cases: [(&str, Damage, bool); 5] = [
        (
            "flip in the last record",
            |b, last| b[last as usize + 40] ^= 0x01,
            true,
        ),
        (
            "flip in the last record's length",
            |b, last| b[last as usize] ^= 0x08,
            true,
        ),
        (
            "last record cut short",
            |b, last| b.truncate(last as usize + 30),
            true,
        ),
        (
            "zeros after the last record",
            |b, _| b.extend_from_slice(&[0u8; 4096]),
            false,
        ),
        (
            "garbage after the last record",
            |b, _| b.extend((0..777u32).map(|i| (i * 31 % 251) as u8)),
            false,
        ),
    ];
    for (name, damage, loses_last) in cases {
        let dir = tempfile::tempdir().unwrap();
        let kv = build_wal_only(dir.path(), d, 30);
        let wal = dir.path().join("journal.wal");
        let recs = wal_records(&wal);
        let last = *recs.last().unwrap();
        let mut b = std::fs::read(&wal).unwrap();
        let at = last as usize;
        let last_end = last + u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()));
        let zero_tail = b[last_end as usize..].iter().all(|&x| x == 0);
        damage(&mut b, last);
        std::fs::write(&wal, &b).unwrap();
        let mut want: Model = kv.iter().cloned().collect();
        if loses_last {
            want.remove(&kv.last().unwrap().0);
        }
        let t = open(dir.path(), d).unwrap_or_else(|e| panic!("{name}: open failed: {e:?}"));
        assert_eq!(dump(&t).unwrap(), want, "{name}");
        let cut = std::fs::metadata(&wal).unwrap().len();
        let expect = if loses_last {
            last
        } else if zero_tail && b[last_end as usize..].iter().all(|&x| x == 0) {
            b.len() as u64
        } else {
            last_end
        };
        assert_eq!(cut, expect, "{name}: tail not cut to the last whole record");
        t.put(b"w/after", b"cut").unwrap();
        t.put(b"w/after2", b"cut2").unwrap();
        drop(t);
        want.insert(b"w/after".to_vec(), b"cut".to_vec());
        want.insert(b"w/after2".to_vec(), b"cut2".to_vec());
        let t = open(dir.path(), d).unwrap_or_else(|e| panic!("{name}: second open failed: {e:?}"));
        assert_eq!(dump(&t).unwrap(), want, "{name}: writes after the cut");
    }
}

/// Random byte flips in any file of a checkpointed directory with WAL
/// records above the cut: open and reads either work or fail with a
/// corruption error (`NodeCorrupt`, `Corrupt`, `ReplaySanityFailed`);
/// never a panic, and every value read is one that was written for that
/// key at some point (a cut WAL tail may roll a key back, but never to
/// garbage).
fn random_flips_never_panic_or_return_garbage(d: Driver) {
    let base = tempfile::tempdir().unwrap();
    let mut history: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (k, v) in build_checkpointed(base.path(), d) {
        history.entry(k).or_default().insert(v);
    }
    {
        let t = open(base.path(), d).unwrap();
        for i in 0..64u32 {
            if i % 3 == 0 {
                let k = format!("dir{}/obj{i:03}", i % 3).into_bytes();
                let v = val(i, 2)[..100].to_vec();
                t.put(&k, &v).unwrap();
                history.entry(k).or_default().insert(v);
            }
        }
    }
    let files = ["frames.dat", "MANIFEST", "journal.wal"];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(base.path().join(f)).unwrap())
        .collect();
    let used: Vec<u64> = manifest_entries(base.path()).iter().map(|e| e.1).collect();
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for iter in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let fi = (next() % 3) as usize;
        for (f, b) in files.iter().zip(&originals) {
            std::fs::write(dir.path().join(f), b).unwrap();
        }
        let mut b = originals[fi].clone();
        for _ in 0..1 + next() % 3 {
            let off = if fi == 0 {
                used[(next() % used.len() as u64) as usize] * FRAME + next() % FRAME
            } else {
                next() % b.len() as u64
            };
            b[off as usize] ^= 1 << (next() % 8);
        }
        std::fs::write(dir.path().join(files[fi]), &b).unwrap();
        let label = match open(dir.path(), d) {
            Err(e) => {
                assert!(
                    err_kind(&e) != "other",
                    "iter {iter}: open failed with a non-corruption error {e:?}"
                );
                format!("{} -> open {}", files[fi], err_kind(&e))
            }
            Ok(t) => {
                let mut errs = 0;
                for (k, vals) in &history {
                    match t.get(k) {
                        Ok(Some(v)) => assert!(
                            vals.contains(&v),
                            "iter {iter}: garbage value for {}",
                            String::from_utf8_lossy(k)
                        ),
                        Ok(None) => {}
                        Err(e) => {
                            assert!(
                                err_kind(&e) != "other",
                                "iter {iter}: unexpected error {e:?}"
                            );
                            errs += 1;
                        }
                    }
                }
                format!(
                    "{} -> open ok, {} read errors",
                    files[fi],
                    if errs > 0 { "some" } else { "no" }
                )
            }
        };
        *outcomes.entry(label).or_insert(0) += 1;
    }
    eprintln!("random flips: {outcomes:#?}");
}

fn err_kind(e: &Error) -> &'static str {
    match e {
        Error::NodeCorrupt { .. } => "NodeCorrupt",
        Error::Corrupt { .. } => "Corrupt",
        Error::ReplaySanityFailed { .. } => "ReplaySanityFailed",
        _ => "other",
    }
}

per_driver!(
    flipped_byte_in_a_child_frame_is_node_corrupt_naming_the_blob,
    flipped_byte_in_the_root_frame_fails_open_with_node_corrupt,
    damage_in_unreferenced_slots_is_harmless,
    replay_into_a_damaged_frame_fails_open_with_node_corrupt,
    damaged_manifest_is_corrupt_naming_it,
    truncated_frames_file_is_corrupt_naming_it,
    mid_wal_damage_is_replay_sanity_failed_and_changes_nothing,
    mid_damage_in_a_retired_wal_file_is_replay_sanity_failed,
    damaged_wal_tail_is_cut_and_earlier_records_kept,
    random_flips_never_panic_or_return_garbage,
);
