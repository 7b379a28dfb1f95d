#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The pressure rule P1 (`engine/src/checkpoint/pressure.rs`): a
//! persistent tree with the periodic checkpointer off (the default) and a
//! pool far smaller than the tree writes dirty frames back in the
//! background and keeps its cache near the pool, and the pressure thread
//! stops with the last handle.
//!
//! Functional, not timed: the assertions are on frame counts from
//! `Tree::cache_stats`, never on durations.

use std::sync::Mutex;

use holt::{Tree, TreeConfig};

/// The tests count the process's `holt-pressure` threads, so they run
/// one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const POOL: usize = 8;
/// `hard` of `checkpoint::pressure::Marks` for [`POOL`]:
/// `C + C/16 + 32`.
const HARD: usize = POOL + POOL / 16 + 32;
/// Keys of 4 KiB values: about 9 MiB of data per 2 000 keys, so 16 000
/// keys span well over 100 frames (about 14 times the pool).
const KEYS: usize = 16_000;

fn key(i: usize) -> Vec<u8> {
    // In key order, so a put rarely reloads an evicted frame and the test
    // stays quick (random order makes nearly every put a 512 KiB read).
    format!("bucket-{:03}/obj-{i:06}", i / 160).into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("{i}:").into_bytes();
    v.resize(4096, (i % 251) as u8);
    v
}

fn small(dir: &std::path::Path) -> TreeConfig {
    let mut cfg = TreeConfig::new(dir);
    cfg.buffer_pool_size = POOL;
    assert!(!cfg.checkpoint.enabled, "the default has no checkpointer");
    cfg
}

fn pressure_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim() == "holt-pressure")
                .count()
        })
        .unwrap_or(0)
}

/// A load of about 14 pools' worth of frames ends with the cache within
/// the hard mark, its peak only a few frames above it, and every key
/// readable after a reopen (which also reads the frames the pressure
/// rounds wrote, and replays only the WAL tail after their last cut).
///
/// Deliberate bug caught: `Pressure::relieve` returning at once (no
/// pressure round): the dirty frames cannot be evicted (I1), so the cache
/// holds the whole tree and `resident_frames` ends far above `HARD`.
#[test]
fn small_pool_load_stays_near_the_pool_and_reopens_whole() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    {
        let tree = Tree::open(small(dir.path())).unwrap();
        for i in 0..KEYS {
            tree.put(&key(i), &value(i)).unwrap();
        }
        let c = tree.cache_stats();
        let frames = tree.stats().unwrap().blob_count as usize;
        assert!(
            frames > 8 * POOL,
            "the tree must dwarf the pool: {frames} frames"
        );
        assert!(c.pressure_rounds > 0, "{c:?}");
        assert!(c.resident_frames <= HARD, "{c:?} (hard mark {HARD})");
        // One put adds at most a few frames (its path's loads and a
        // spill's new frame) before its writer checks the marks.
        assert!(
            c.peak_resident_frames <= HARD + 16,
            "{c:?} (hard mark {HARD})"
        );
        assert!(c.pooled_images <= 8, "{c:?}");
    }
    let tree = Tree::open(small(dir.path())).unwrap();
    for i in 0..KEYS {
        assert_eq!(tree.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    assert!(tree.cache_stats().resident_frames <= HARD);
}

/// The pressure thread is the tree's: dropping the last handle stops and
/// joins it, so no thread is left and the directory lock is free for an
/// immediate reopen.
///
/// Deliberate bug caught: leaving out `pressure.stop()` in the tree's
/// last-handle drop: the thread keeps the tree (and its `LOCK`) alive, so
/// the reopen fails with `Error::Locked` and the thread count stays 1.
#[test]
fn pressure_thread_stops_with_the_last_handle() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert_eq!(pressure_threads(), 0);
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::open(small(dir.path())).unwrap();
    let clone = tree.clone();
    let mut i = 0;
    while tree.cache_stats().pressure_rounds == 0 {
        assert!(i < KEYS, "no pressure round after {i} puts");
        clone.put(&key(i), &value(i)).unwrap();
        i += 1;
    }
    assert_eq!(pressure_threads(), 1, "spawned once, on demand");
    drop(clone);
    assert_eq!(pressure_threads(), 1, "a clone's drop leaves it running");
    drop(tree);
    assert_eq!(pressure_threads(), 0, "joined by the last drop");
    let again = Tree::open(small(dir.path())).expect("the lock is free at once");
    for j in 0..i {
        assert_eq!(again.get(&key(j)).unwrap(), Some(value(j)), "key {j}");
    }
}
