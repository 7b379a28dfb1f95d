#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Checkpoint images are consistent cuts (DESIGN.md §8) while writers keep
//! writing through the round (copy-on-write capture, docs/design.md
//! "Checkpoint round").
//!
//! Writer threads each own a set of keys spread over many frames and
//! apply a fixed, seeded sequence of puts and deletes to them; a compactor
//! thread merges frames meanwhile (frames retired during rounds). The
//! main thread runs checkpoint rounds back to back and, after each,
//! snapshots what the round left in the backend: over a caller's backend
//! the blob map at the backend's flush, in persistent mode `MANIFEST` and
//! `frames.dat` without any WAL file. Every snapshot, opened as a tree of
//! its own, must hold for each writer exactly the state after some prefix
//! of that writer's sequence (a consistent cut includes every op up to
//! the cut and none after), and the prefixes must not go backwards from
//! one snapshot to the next.
//!
//! What this catches: a round image that mixes states, e.g. pages
//! captured after a writer changed them past the cut (`COW_SKIPPED`: a
//! store that does not save its pages first; `CAPTURE_IGNORES_SAVED`: the
//! round recopying pages a store saved — both fail here within a few
//! rounds), a frame retired after the cut whose image is skipped (its
//! keys vanish or go back to an older generation), or a capture sealed
//! before the copy finished (a torn value fails its checksum or its
//! padding check).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use holt::{AlignedBlobBuf, Backend, BlobGuid, MemoryBackend, RangeEntry, Tree, TreeBuilder};

const WRITERS: usize = 3;
const KEYS: usize = 1500;
const OPS: u64 = 8000;
const BURST: u64 = 16;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key(t: usize, r: usize) -> Vec<u8> {
    format!("w{t}/d{:02}/obj-{r:05}", r % 41).into_bytes()
}

/// Value of writer `t`'s op `j` on key `r` (`j` = 0: the preload): the
/// triple, then padding derived from it (1–2 KiB in all).
fn value(t: usize, r: usize, j: u64) -> Vec<u8> {
    let len = 1024 + (mix(j ^ (r as u64) << 20) % 1024) as usize;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(t as u64).to_le_bytes());
    v.extend_from_slice(&(r as u64).to_le_bytes());
    v.extend_from_slice(&j.to_le_bytes());
    let mut x = mix((t as u64) << 40 ^ (r as u64) << 20 ^ j) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push((x >> 24) as u8);
    }
    v
}

fn decode(t: usize, k: &[u8], v: &[u8]) -> (usize, u64) {
    assert!(
        v.len() >= 24,
        "short value under {}",
        String::from_utf8_lossy(k)
    );
    let word = |i: usize| u64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().unwrap());
    let (vt, r, j) = (word(0) as usize, word(1) as usize, word(2));
    assert_eq!(vt, t, "value of another writer");
    assert_eq!(key(t, r), k, "value of another key");
    assert_eq!(value(t, r, j), v, "torn or foreign value");
    (r, j)
}

/// Writer `t`'s op `j` (1-based): key and whether it is a delete.
fn op(t: usize, j: u64) -> (usize, bool) {
    let h = mix((t as u64) << 32 | j);
    ((h % KEYS as u64) as usize, h >> 60 == 0)
}

fn pair_hash(r: usize, j: u64) -> u64 {
    mix((r as u64) << 40 ^ j ^ 0x5555)
}

/// For writer `t`: the state hash after each prefix of its ops -> the
/// prefix length (the state is a multiset hash of (key, op) pairs).
fn prefix_hashes(t: usize) -> HashMap<u64, u64> {
    let mut state: Vec<Option<u64>> = vec![Some(0); KEYS];
    let mut h = (0..KEYS).fold(0u64, |a, r| a.wrapping_add(pair_hash(r, 0)));
    let mut out = HashMap::new();
    out.insert(h, 0);
    for j in 1..=OPS {
        let (r, del) = op(t, j);
        if let Some(old) = state[r] {
            h = h.wrapping_sub(pair_hash(r, old));
        }
        state[r] = if del { None } else { Some(j) };
        if let Some(new) = state[r] {
            h = h.wrapping_add(pair_hash(r, new));
        }
        // A later prefix with an equal state is as good: keep the first.
        out.entry(h).or_insert(j);
    }
    out
}

fn preload(tree: &Tree) {
    for t in 0..WRITERS {
        for r in 0..KEYS {
            tree.put(&key(t, r), &value(t, r, 0)).unwrap();
        }
    }
}

/// Writer `t`'s whole sequence, in bursts of [`BURST`] ops with a short
/// sleep between, so the writers overlap many rounds.
fn write_all(tree: &Tree, t: usize, pause: Duration) {
    for j in 1..=OPS {
        if j % BURST == 0 {
            thread::sleep(pause);
        }
        let (r, del) = op(t, j);
        if del {
            tree.delete(&key(t, r)).unwrap();
        } else {
            tree.put(&key(t, r), &value(t, r, j)).unwrap();
        }
    }
}

/// Per writer, the prefix length the tree's state equals (panics if none).
fn prefixes(tree: &Tree, hashes: &[HashMap<u64, u64>], what: &str) -> Vec<u64> {
    let mut h = [0u64; WRITERS];
    for e in tree.range() {
        let RangeEntry::Key { key: k, value: v } = e.unwrap() else {
            panic!("unexpected entry");
        };
        let t = usize::from(k[1] - b'0');
        let (r, j) = decode(t, &k, &v);
        h[t] = h[t].wrapping_add(pair_hash(r, j));
    }
    (0..WRITERS)
        .map(|t| {
            *hashes[t]
                .get(&h[t])
                .unwrap_or_else(|| panic!("{what}: writer {t}'s keys match no prefix of its ops"))
        })
        .collect()
}

/// Sets the flag when dropped: a failing check (a panic in the round
/// closure) still stops the compactor, so the scope can end.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs the writers and a compactor while `round` is called back to
/// back; returns how many rounds ran.
fn hammer(tree: &Tree, pause: Duration, mut round: impl FnMut()) -> usize {
    let done = AtomicBool::new(false);
    let mut rounds = 0;
    thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| s.spawn(move || write_all(tree, t, pause)))
            .collect();
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                tree.compact().unwrap();
                thread::sleep(Duration::from_millis(5));
            }
        });
        let _stop = StopOnDrop(&done);
        while !writers.iter().all(|w| w.is_finished()) || rounds < 3 {
            round();
            rounds += 1;
        }
    });
    rounds
}

/// Checks snapshot `i` against the writers' prefixes and against the
/// previous snapshot's (`last`, updated).
fn check_snapshot(snap: &Tree, hashes: &[HashMap<u64, u64>], last: &mut [u64], i: usize) {
    let p = prefixes(snap, hashes, &format!("snapshot {i}"));
    for t in 0..WRITERS {
        assert!(p[t] >= last[t], "snapshot {i}: writer {t} went back");
    }
    last.copy_from_slice(&p);
}

/// A caller's backend that copies its whole blob map at every flush (the
/// end of a write-back round).
struct SnapBackend {
    inner: MemoryBackend,
    snaps: Mutex<Vec<HashMap<BlobGuid, AlignedBlobBuf>>>,
}

impl Backend for SnapBackend {
    fn read_blob(&self, guid: BlobGuid, dst: &mut AlignedBlobBuf) -> holt::Result<()> {
        self.inner.read_blob(guid, dst)
    }
    fn write_blob(&self, guid: BlobGuid, src: &AlignedBlobBuf) -> holt::Result<()> {
        self.inner.write_blob(guid, src)
    }
    fn delete_blob(&self, guid: BlobGuid) -> holt::Result<()> {
        self.inner.delete_blob(guid)
    }
    fn list_blobs(&self) -> holt::Result<Vec<BlobGuid>> {
        self.inner.list_blobs()
    }
    fn flush(&self) -> holt::Result<()> {
        let mut snap = HashMap::new();
        for g in self.inner.list_blobs()? {
            let mut buf = AlignedBlobBuf::zeroed();
            self.inner.read_blob(g, &mut buf)?;
            snap.insert(g, buf);
        }
        self.snaps.lock().unwrap().push(snap);
        Ok(())
    }
}

fn backend_tree(b: Arc<dyn Backend>) -> Tree {
    TreeBuilder::new("unused")
        .memory()
        .buffer_pool_size(4096)
        .open_with_backend(b)
        .unwrap()
}

/// Write-back rounds over a caller's backend (no WAL): every round's
/// image is a prefix state per writer.
#[test]
fn write_back_rounds_under_writers_are_consistent_cuts() {
    let hashes: Vec<_> = (0..WRITERS).map(prefix_hashes).collect();
    let backend = Arc::new(SnapBackend {
        inner: MemoryBackend::new(),
        snaps: Mutex::new(Vec::new()),
    });
    let mut cfg = holt::TreeConfig::memory();
    cfg.memory_flush_on_write = false;
    cfg.buffer_pool_size = 4096;
    let tree = Tree::open_with_backend(cfg.clone(), backend.clone()).unwrap();
    preload(&tree);
    tree.checkpoint().unwrap();
    assert!(tree.stats().unwrap().blob_count >= 4, "keys span frames");
    let mut last = vec![0u64; WRITERS];
    let mut checked = 0;
    let mut check_new = |last: &mut [u64]| {
        let snaps = std::mem::take(&mut *backend.snaps.lock().unwrap());
        for snap in snaps {
            let m = MemoryBackend::new();
            for (g, buf) in &snap {
                m.write_blob(*g, buf).unwrap();
            }
            check_snapshot(&backend_tree(Arc::new(m)), &hashes, last, checked);
            checked += 1;
        }
    };
    let rounds = hammer(&tree, Duration::from_millis(3), || {
        tree.checkpoint().unwrap();
        check_new(&mut last);
    });
    tree.checkpoint().unwrap();
    check_new(&mut last);
    assert_eq!(last, vec![OPS; WRITERS], "the last round saw every op");
    assert_eq!(prefixes(&tree, &hashes, "live tree"), vec![OPS; WRITERS]);
    let n = checked;
    assert!(n > rounds, "one snapshot per round");
    eprintln!("write-back: {n} snapshots checked, {rounds} rounds under writers");
}

fn copy_checkpoint(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["MANIFEST", "frames.dat"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

/// Persistent rounds (WAL rotated after the cut): `MANIFEST` + `frames.dat`
/// right after each round, opened without any WAL file, hold a prefix
/// state per writer; the live directory reopens with everything.
#[test]
fn persistent_rounds_under_writers_are_consistent_cuts() {
    let hashes: Vec<_> = (0..WRITERS).map(prefix_hashes).collect();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let open = |p: &Path| {
        TreeBuilder::new(p.to_path_buf())
            .buffer_pool_size(4096)
            .open()
            .unwrap()
    };
    let tree = open(&live);
    preload(&tree);
    tree.checkpoint().unwrap();
    assert!(tree.stats().unwrap().blob_count >= 4, "keys span frames");
    let mut last = vec![0u64; WRITERS];
    let mut n = 0;
    // Persistent rounds (fdatasyncs, a manifest) and the snapshot copies
    // are slower: slower writers overlap as many rounds.
    let rounds = hammer(&tree, Duration::from_millis(12), || {
        tree.checkpoint().unwrap();
        let snap = dir.path().join(format!("snap{n:04}"));
        copy_checkpoint(&live, &snap);
        check_snapshot(&open(&snap), &hashes, &mut last, n);
        std::fs::remove_dir_all(&snap).unwrap();
        n += 1;
    });
    assert_eq!(n, rounds);
    drop(tree);
    let reopened = open(&live);
    assert_eq!(prefixes(&reopened, &hashes, "reopened"), vec![OPS; WRITERS]);
    eprintln!("persistent: {n} snapshots checked");
}
