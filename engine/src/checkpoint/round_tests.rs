//! Checkpoint rounds driven step by step (the cut, writers after it, the
//! capture, the WAL rotation), so a test can act between the steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use crate::api::config::TreeConfig;
use crate::api::tree::{write_gate, Tree, TreeInner};
use crate::store::{AlignedBlobBuf, Backend, MemoryBackend};

/// A tree over `backend` that writes back only on `checkpoint()`.
fn tree_over(backend: &Arc<MemoryBackend>) -> Tree {
    let mut cfg = TreeConfig::memory();
    cfg.memory_flush_on_write = false;
    cfg.buffer_pool_size = 1024;
    let b: Arc<dyn Backend> = backend.clone();
    Tree::open_with_backend(cfg, b).unwrap()
}

/// A copy of everything `b` holds now: what a restart would read.
fn snapshot(b: &MemoryBackend) -> Arc<MemoryBackend> {
    let out = Arc::new(MemoryBackend::new());
    let mut buf = AlignedBlobBuf::zeroed();
    for g in b.list_blobs().unwrap() {
        b.read_blob(g, &mut buf).unwrap();
        out.write_blob(g, &buf).unwrap();
    }
    out
}

fn key(i: usize) -> Vec<u8> {
    format!("bucket/{:03}/obj-{i:06}", i % 97).into_bytes()
}

fn val(i: usize, gen: u8) -> Vec<u8> {
    let mut v = vec![gen; 700 + i % 300];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

/// The cut of a round, as `write_back` takes it; returns the round.
fn cut(inner: &TreeInner, max_seq: Option<u64>) -> crate::buffer::round::Round<'_> {
    let bm = &inner.core.bm;
    let images = bm.prepare_images();
    let _g = write_gate(&inner.gate);
    bm.begin_round(max_seq, images)
}

/// A writer that touches a frame whose capture is pending must make the
/// round persist the frame as of the cut, not the writer's edit.
///
/// Catches `COW_SKIPPED` (stores not saving the pages they change: the
/// round would copy edited pages and the snapshot would read generation
/// 2) and `CAPTURE_IGNORES_SAVED` (the round recopying saved pages).
#[test]
fn writer_cow_keeps_the_image_as_of_the_cut() {
    let backend = Arc::new(MemoryBackend::new());
    let tree = tree_over(&backend);
    for i in 0..3000 {
        tree.put(&key(i), &val(i, 0)).unwrap();
    }
    tree.checkpoint().unwrap();
    assert!(tree.stats().unwrap().blob_count > 3, "needs several frames");
    for i in (0..3000).step_by(7) {
        tree.put(&key(i), &val(i, 1)).unwrap();
    }
    let inner = &*tree.inner;
    let bm = &inner.core.bm;
    let serial = bm.round_lock();
    let mut round = cut(inner, None);
    let armed = bm.armed_frames();
    assert!(armed > 1, "the dirty frames are armed at the cut");
    // Writers after the cut: every page they change is saved first.
    for i in (0..3000).step_by(7) {
        tree.put(&key(i), &val(i, 2)).unwrap();
    }
    assert_eq!(bm.armed_frames(), armed, "armed until the round captures");
    bm.capture_round(&mut round).unwrap();
    assert_eq!(round.captured(), armed);
    bm.persist(&mut round).unwrap();
    bm.finish_round(round, true);
    drop(serial);

    let at_cut = tree_over(&snapshot(&backend));
    for i in 0..3000 {
        let want = val(i, if i % 7 == 0 { 1 } else { 0 });
        assert_eq!(at_cut.get(&key(i)).unwrap(), Some(want), "key {i}");
        let live = val(i, if i % 7 == 0 { 2 } else { 0 });
        assert_eq!(tree.get(&key(i)).unwrap(), Some(live), "key {i}");
    }
    // The edits after the cut are dirty for the next round.
    tree.checkpoint().unwrap();
    let later = tree_over(&snapshot(&backend));
    assert_eq!(later.get(&key(0)).unwrap(), Some(val(0, 2)));
}

/// A frame merged away after the cut existed at the cut: its image as of
/// the cut must still be written, since the parent's image as of the cut
/// links to it.
///
/// Catches a round that looks its frames up in the cache after the gate
/// (instead of pinning them at the cut): the retired child is no longer
/// cached, its image is skipped, and the snapshot reads the child's older
/// image (generation 0, not 1).
#[test]
fn frame_retired_after_the_cut_is_still_captured() {
    let backend = Arc::new(MemoryBackend::new());
    let tree = tree_over(&backend);
    let n = 4000;
    for i in 0..n {
        tree.put(&key(i), &val(i, 0)).unwrap();
    }
    tree.checkpoint().unwrap();
    let frames = tree.stats().unwrap().blob_count;
    assert!(frames > 3, "needs child frames");
    // Sparse frames that a compaction folds together; survivors dirty.
    for i in 0..n {
        if i % 20 != 0 {
            tree.delete(&key(i)).unwrap();
        }
    }
    tree.checkpoint().unwrap();
    for i in (0..n).step_by(20) {
        tree.put(&key(i), &val(i, 1)).unwrap();
    }
    let inner = &*tree.inner;
    let bm = &inner.core.bm;
    let serial = bm.round_lock();
    let mut round = cut(inner, None);
    // After the cut: merge children into parents (retiring them).
    tree.compact().unwrap();
    let after = tree.stats().unwrap().blob_count;
    assert!(
        after < frames,
        "compact merged frames ({frames} -> {after})"
    );
    assert!(bm.pending_deletes.len() > 0, "merged frames await deletion");
    bm.capture_round(&mut round).unwrap();
    bm.persist(&mut round).unwrap();
    bm.finish_round(round, true);
    drop(serial);

    let at_cut = tree_over(&snapshot(&backend));
    for i in 0..n {
        let want = (i % 20 == 0).then(|| val(i, 1));
        assert_eq!(at_cut.get(&key(i)).unwrap(), want, "key {i}");
    }
    // The next round deletes the retired frames; the tree still reads.
    tree.checkpoint().unwrap();
    let later = tree_over(&snapshot(&backend));
    for i in (0..n).step_by(20) {
        assert_eq!(later.get(&key(i)).unwrap(), Some(val(i, 1)), "key {i}");
    }
}

/// A round that fails (or is dropped) between its cut and its capture
/// must leave no armed slot behind, and its entries must be back in the
/// dirty map so the next round writes them.
///
/// Catches `finish_round` (or `Round`'s `Drop`) not disarming: the
/// slots would stay armed, and every later writer would copy its frame
/// into a round that no longer exists; and a dropped round that leaves
/// its entries in flight (never written, never evictable).
#[test]
fn failed_or_dropped_round_disarms_every_slot() {
    let backend = Arc::new(MemoryBackend::new());
    let tree = tree_over(&backend);
    for i in 0..2000 {
        tree.put(&key(i), &val(i, 0)).unwrap();
    }
    let inner = &*tree.inner;
    let bm = &inner.core.bm;
    {
        let _serial = bm.round_lock();
        let round = cut(inner, None);
        assert!(bm.armed_frames() > 0);
        assert_eq!(bm.dirty.len(), 0, "drained");
        bm.finish_round(round, false);
        assert_eq!(bm.armed_frames(), 0, "a failed round disarms");
        assert!(bm.dirty.len() > 0, "and restores its entries (I3)");
    }
    {
        let _serial = bm.round_lock();
        let round = cut(inner, None);
        assert!(bm.armed_frames() > 0);
        drop(round);
        assert_eq!(bm.armed_frames(), 0, "a dropped round disarms");
        assert!(bm.dirty.len() > 0, "and restores its entries");
    }
    for i in 0..2000 {
        tree.put(&key(i), &val(i, 3)).unwrap();
    }
    tree.checkpoint().unwrap();
    let later = tree_over(&snapshot(&backend));
    for i in (0..2000).step_by(13) {
        assert_eq!(later.get(&key(i)).unwrap(), Some(val(i, 3)), "key {i}");
    }
}

/// The WAL rotation runs after the cut, so the retired file can hold
/// records above the cut. It must survive the round that made it (the
/// manifest's cut does not cover its highest seq) and be released by the
/// next one; a reopen without a further round replays those records.
///
/// Catches a release that deletes every file retired by the round (by
/// rotation rather than by the file's highest seq): the writes made
/// between the cut and the rotation would be gone after the reopen.
#[test]
fn retired_wal_with_records_above_the_cut_waits_for_the_next_round() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        crate::api::builder::TreeBuilder::new(dir.path())
            .buffer_pool_size(256)
            .open()
            .unwrap()
    };
    let tree = open();
    for i in 0..500 {
        tree.put(&key(i), &val(i, 0)).unwrap();
    }
    let inner = &*tree.inner;
    let d = inner.durable.as_ref().unwrap();
    let bm = &inner.core.bm;
    {
        let _serial = bm.round_lock();
        let images = bm.prepare_images();
        let (p, mut round) = {
            let _g = write_gate(&inner.gate);
            let p = d.wal.last_seq();
            (p, bm.begin_round(Some(p), images))
        };
        // Writes between the cut and the rotation: seqs above P.
        for i in 500..600 {
            tree.put(&key(i), &val(i, 0)).unwrap();
        }
        bm.capture_round(&mut round).unwrap();
        d.wal.rotate(p).unwrap();
        bm.persist(&mut round).unwrap();
        d.store.set_checkpoint_meta(p, p);
        d.store.flush().unwrap();
        bm.finish_round(round, true);
        let upto = d.wal.last_seq();
        assert!(upto > p);
        assert!(
            !d.wal.release(p),
            "the retired file holds seqs above the cut"
        );
        let name = crate::wal::writer::rotation::retired_name(upto);
        assert!(dir.path().join(&name).exists(), "{name} kept");
    }
    drop(tree); // checkpointer disabled: no final round
    let tree = open();
    for i in 0..600 {
        assert_eq!(tree.get(&key(i)).unwrap(), Some(val(i, 0)), "key {i}");
    }
    tree.checkpoint().unwrap();
    let retired = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            crate::wal::writer::rotation::retired_seq(&name.to_string_lossy()).is_some()
        })
        .count();
    assert_eq!(retired, 0, "a later round's cut covers and releases them");
}

/// A checkpoint repacks a dirty frame whose nodes came in scrambled key
/// order, so the round writes it (and scans read it) in key order; a
/// frame that only changed a little since is left alone.
///
/// Catches a round that skips the order pass (the frame stays in
/// insertion order), and one that repacks every dirty frame (the
/// compaction counter moves on the second checkpoint).
#[test]
fn checkpoint_repacks_disordered_frames_in_key_order() {
    let backend = Arc::new(MemoryBackend::new());
    let tree = tree_over(&backend);
    // ~250 KiB in one frame, inserted in scrambled key order.
    let order: Vec<usize> = (0..300).map(|i| (i * 113) % 300).collect();
    for &i in &order {
        tree.put(&key(i), &val(i, 0)).unwrap();
    }
    let inner = &tree.inner;
    let root = Arc::clone(&inner.core.root);
    let compacts = || root.frame.u32(crate::frame::header::OFF_COMPACTS).unwrap();
    assert_eq!(inner.core.bm.dirty_guids(), vec![root.guid], "one frame");
    assert!(crate::frame::copy::key_order_steps_back(&root.frame).unwrap() > 0);
    let before = compacts();
    tree.checkpoint().unwrap();
    assert_eq!(compacts(), before + 1, "repacked once");
    assert_eq!(
        crate::frame::copy::key_order_steps_back(&root.frame).unwrap(),
        0
    );
    // A few more keys: still mostly ordered, not repacked again.
    for i in 300..310 {
        tree.put(&key(i), &val(i, 1)).unwrap();
    }
    tree.checkpoint().unwrap();
    assert_eq!(compacts(), before + 1, "left alone");
    // Nothing lost or changed, here or after a restart.
    let reopened = tree_over(&snapshot(&backend));
    for t in [&tree, &reopened] {
        for i in 0..310 {
            let gen = u8::from(i >= 300);
            assert_eq!(t.get(&key(i)).unwrap(), Some(val(i, gen)), "key {i}");
        }
        let n = t.range().into_iter().count();
        assert_eq!(n, 310);
    }
}
