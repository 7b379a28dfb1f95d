#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Frame hops per point get when fan frames overflow again and again:
//! one directory with many children, loaded in key-ordered batches (the
//! bench's bulk-load shape), spills fan frames that then spill children of
//! their own fan node. Those spills must land beside the full frame
//! (linked from its parent), not below it, so no lookup crosses a link
//! that consumes no key byte (docs/design.md, "Spillover").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use holt::{RangeEntry, Tree, TreeConfig};

/// Keys of one directory: `dir/` + a byte spread over all 256 values +
/// a counter, so the directory node has 256 children of ~40 KiB each and
/// a full fan frame's best spill run is always a run of its fan node's
/// children.
fn key(i: u32) -> Vec<u8> {
    let spread = (i.wrapping_mul(2_654_435_761) >> 24) as u8;
    let mut k = b"dir/".to_vec();
    k.push(spread);
    k.extend_from_slice(format!("f{i:07}.dat").as_bytes());
    k
}

fn value(i: u32, gen: u32) -> Vec<u8> {
    format!("v{gen}-{i:09}-0123456789").into_bytes()
}

const N: u32 = 240_000;

fn open(dir: &std::path::Path) -> Tree {
    let mut cfg = TreeConfig::new(dir);
    cfg.buffer_pool_size = 4096;
    Tree::open(cfg).unwrap()
}

/// Bulk load as the bench does: batches of 10 000 keys, each applied in
/// key order.
fn load(t: &Tree, model: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    let mut i = 0;
    while i < N {
        let end = (i + 10_000).min(N);
        t.txn(|b| {
            for j in i..end {
                b.put(&key(j), &value(j, 0));
            }
        })
        .unwrap();
        for j in i..end {
            model.insert(key(j), value(j, 0));
        }
        i = end;
    }
}

fn check(t: &Tree, model: &BTreeMap<Vec<u8>, Vec<u8>>, what: &str) {
    for i in 0..N {
        let k = key(i);
        assert_eq!(
            t.get(&k).unwrap().as_ref(),
            model.get(&k),
            "{what}: get of key {i}"
        );
    }
    let got: Vec<(Vec<u8>, Vec<u8>)> = t
        .scan_prefix(b"")
        .into_iter()
        .map(|e| match e.unwrap() {
            RangeEntry::Key { key, value } => (key, value),
            other => panic!("unexpected entry {other:?}"),
        })
        .collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert!(
        got == want,
        "{what}: scan differs from the model ({} vs {} entries)",
        got.len(),
        want.len()
    );
}

fn assert_flat(t: &Tree, what: &str) -> holt::FrameHops {
    let h = t.frame_hops().unwrap();
    let frames = t.stats().unwrap().blob_count;
    eprintln!(
        "{what}: {frames} frames, frames per get mean {:.3} max {}, same-depth hops max {} ({:?})",
        h.mean_frames(),
        h.max_frames(),
        h.max_same_depth(),
        h.by_same_depth
    );
    assert!(
        frames > 8,
        "{what}: the load must spill many times ({frames} frames)"
    );
    assert_eq!(
        h.max_same_depth(),
        0,
        "{what}: a lookup crosses a same-depth link: {h:?}"
    );
    // Root frame, then the fan frame that holds the key's directory child.
    assert!(h.max_frames() <= 2, "{what}: {h:?}");
    h
}

/// A directory of 240 000 keys loaded in key-ordered batches, then
/// overwritten in part, deleted in part (whole fan bytes included, so
/// frames empty and are unlinked), reopened and compacted: every get and
/// a full scan match a BTreeMap model at each stage, and no lookup ever
/// visits more than two frames or crosses a same-depth link.
///
/// Deliberate bugs tried (each fails this test): chaining below as
/// before (no parent passed to `spill::spill`: same-depth hops max 4);
/// relinking only the run's first byte in the parent (gets of the other
/// bytes' keys return None); inserting without the routing check
/// (`insert_routed(.., true)` always: a batch's later put, starting at
/// its stale pinned frame, adds a byte that the parent now routes to the
/// sibling, and its gets return None).
#[test]
fn repeated_fan_spills_stay_one_hop_from_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let t = open(dir.path());
    load(&t, &mut model);
    check(&t, &model, "after load");
    let before = assert_flat(&t, "after load");

    // Overwrite every 5th key with a longer value (in-place growth).
    t.txn(|b| {
        for i in (0..N).step_by(5) {
            b.put(&key(i), &value(i, 1));
        }
    })
    .unwrap();
    for i in (0..N).step_by(5) {
        model.insert(key(i), value(i, 1));
    }
    // Delete every 3rd key, and every key under 40 of the directory's
    // branch bytes (their fan frames shrink or empty).
    for i in 0..N {
        let k = key(i);
        if i % 3 == 0 || k[4] % 7 == 0 {
            assert_eq!(t.delete(&k).unwrap(), model.remove(&k), "delete of key {i}");
        }
    }
    check(&t, &model, "after deletes");
    t.checkpoint().unwrap();
    drop(t);

    let t = open(dir.path());
    check(&t, &model, "after reopen");
    let reopened = assert_flat(&t, "after reopen");
    assert!(reopened.keys == model.len() as u64, "{reopened:?}");
    assert!(before.keys == u64::from(N));
    t.compact().unwrap();
    check(&t, &model, "after compact");
    assert_flat(&t, "after compact");
    drop(t);

    let t = open(dir.path());
    check(&t, &model, "after compact and reopen");
}

/// Readers look up keys known present while a writer loads more keys into
/// the same directory, so fan frames spill sideways under them: no get of
/// a present key may return None (a reader that followed the parent's old
/// link into the frame that lost the byte must not trust the absence).
///
/// Deliberate bug tried: dropping the parent revalidation on an absent
/// result in `Core::descend` (readers then report present keys missing).
#[test]
fn gets_during_sideways_spills_never_miss_present_keys() {
    let mut cfg = TreeConfig::memory();
    cfg.memory_flush_on_write = false;
    cfg.buffer_pool_size = 1 << 16;
    let t = Arc::new(Tree::open(cfg).unwrap());
    // Present from the start: every 4th key.
    t.txn(|b| {
        for i in (0..N).step_by(4) {
            b.put(&key(i), &value(i, 0));
        }
    })
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (t, done) = (Arc::clone(&t), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut i = r * 4;
                while !done.load(Ordering::Relaxed) {
                    let k = key(i);
                    assert!(t.get(&k).unwrap().is_some(), "present key {i} not found");
                    i = (i + 4 * 7919) % N;
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..N {
        if i % 4 != 0 {
            t.put(&key(i), &value(i, 0)).unwrap();
        }
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let h = t.frame_hops().unwrap();
    assert_eq!(h.max_same_depth(), 0, "{h:?}");
    for i in 0..N {
        assert_eq!(t.get(&key(i)).unwrap(), Some(value(i, 0)), "key {i}");
    }
}
