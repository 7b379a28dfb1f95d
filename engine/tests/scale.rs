#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Scale tests in memory mode: millions of keys, one huge directory, very
//! long shared prefixes and one large value rewritten many times
//! (DESIGN.md §4: spillover and merge must work for every distribution).
//! Timings are printed, never asserted.

use std::collections::BTreeMap;
use std::time::Instant;

use holt::{RangeEntry, Tree, TreeConfig, TreeStats};

const FRAME: u64 = 524_288;

fn mem_tree() -> Tree {
    let mut cfg = TreeConfig::memory();
    cfg.memory_flush_on_write = false;
    cfg.buffer_pool_size = 1 << 20;
    Tree::open(cfg).unwrap()
}

fn report(what: &str, st: &TreeStats) {
    let fill = if st.blob_count == 0 {
        0.0
    } else {
        st.total_space_used as f64 / (f64::from(st.blob_count) * FRAME as f64) * 100.0
    };
    eprintln!(
        "{what}: {} frames, {:.1} MiB used, gap {:.1} MiB, mean fill {fill:.1}%",
        st.blob_count,
        st.total_space_used as f64 / (1 << 20) as f64,
        st.total_gap_space as f64 / (1 << 20) as f64,
    );
}

fn check_stats_consistent(st: &TreeStats) {
    assert_eq!(st.blob_count as usize, st.blobs.len());
    assert_eq!(
        st.total_space_used,
        st.blobs
            .iter()
            .map(|b| u64::from(b.space_used))
            .sum::<u64>()
    );
    assert!(st.blobs.iter().all(|b| u64::from(b.space_used) <= FRAME));
    assert_eq!(st.total_tombstones, 0);
}

/// Visits every entry of a listing, asserting strictly increasing order,
/// and returns how many there were.
fn count_ordered(it: holt::RangeBuilder) -> usize {
    let mut prev: Option<Vec<u8>> = None;
    let mut n = 0;
    for e in it {
        let k = match e.unwrap() {
            RangeEntry::Key { key, .. } => key,
            RangeEntry::CommonPrefix(p) => p,
            other => panic!("unknown entry {other:?}"),
        };
        if let Some(p) = &prev {
            assert!(
                p < &k,
                "listing out of order: {:?} then {:?}",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(&k)
            );
        }
        prev = Some(k);
        n += 1;
    }
    n
}

fn entries(it: holt::RangeBuilder) -> Vec<(bool, Vec<u8>)> {
    it.into_iter()
        .map(|e| match e.unwrap() {
            RangeEntry::Key { key, .. } => (true, key),
            RangeEntry::CommonPrefix(p) => (false, p),
            other => panic!("unknown entry {other:?}"),
        })
        .collect()
}

// ---------------------------------------------------------------- (a)

const N_OBJ: u64 = 2_000_000;

/// Object-store-like key number `i` (unique for `i < N_OBJ`).
fn obj_key(i: u64) -> Vec<u8> {
    format!(
        "bkt{:02}/tenant-{:03}/2025/{:02}/{:02}/obj-{:08}.parquet",
        i % 7,
        (i / 7) % 113,
        1 + (i / 791) % 12,
        1 + (i / 9_492) % 28,
        i
    )
    .into_bytes()
}

fn obj_val(i: u64) -> Vec<u8> {
    let n = 8 + (i % 17) as usize;
    let mut v = i.to_le_bytes().to_vec();
    v.resize(n, (i % 251) as u8);
    v
}

/// A permutation of `0..N_OBJ` (stride coprime to N_OBJ).
fn perm(j: u64, stride: u64) -> u64 {
    (j.wrapping_mul(stride).wrapping_add(12_345)) % N_OBJ
}

#[test]
fn two_million_keys_insert_get_delete_compact_back_to_one_frame() {
    let t = mem_tree();
    let t0 = Instant::now();
    for j in 0..N_OBJ {
        let i = perm(j, 1_000_003);
        assert_eq!(
            t.put(&obj_key(i), &obj_val(i)).unwrap(),
            None,
            "fresh put of key {i}"
        );
    }
    eprintln!("(a) insert 2M: {:?}", t0.elapsed());
    let st = t.stats().unwrap();
    check_stats_consistent(&st);
    report("(a) after load", &st);
    assert!(st.blob_count > 1);

    let t0 = Instant::now();
    for j in 0..N_OBJ {
        let i = perm(j, 999_983);
        assert_eq!(
            t.get(&obj_key(i)).unwrap(),
            Some(obj_val(i)),
            "get of key {i}"
        );
    }
    eprintln!("(a) get 2M: {:?}", t0.elapsed());

    let t0 = Instant::now();
    assert_eq!(count_ordered(t.range()), N_OBJ as usize);
    assert_eq!(
        count_ordered(t.scan_prefix(b"bkt03/")),
        (0..N_OBJ).filter(|i| i % 7 == 3).count()
    );
    let top = entries(t.range().delimiter(b'/'));
    assert_eq!(
        top,
        (0..7)
            .map(|b| (false, format!("bkt{b:02}/").into_bytes()))
            .collect::<Vec<_>>()
    );
    eprintln!("(a) scans: {:?}", t0.elapsed());

    let t0 = Instant::now();
    for j in 0..N_OBJ {
        let i = perm(j, 1_299_709);
        assert_eq!(
            t.delete(&obj_key(i)).unwrap(),
            Some(obj_val(i)),
            "delete of key {i}"
        );
    }
    eprintln!("(a) delete 2M: {:?}", t0.elapsed());
    assert_eq!(t.get(&obj_key(0)).unwrap(), None);
    report("(a) after deletes, before compact", &t.stats().unwrap());

    let t0 = Instant::now();
    t.compact().unwrap();
    eprintln!("(a) compact: {:?}", t0.elapsed());
    let st = t.stats().unwrap();
    check_stats_consistent(&st);
    report("(a) after compact", &st);
    assert_eq!(
        st.blob_count, 1,
        "an empty tree compacts back to its root frame"
    );
    assert_eq!(count_ordered(t.range()), 0);
    assert_eq!(count_ordered(t.range().delimiter(b'/')), 0);

    // The tree is still usable.
    t.put(&obj_key(42), b"again").unwrap();
    assert_eq!(t.get(&obj_key(42)).unwrap(), Some(b"again".to_vec()));
    assert_eq!(count_ordered(t.range()), 1);
}

// ---------------------------------------------------------------- (b)

const N_DIR: u64 = 1_000_000;

fn dir_key(i: u64) -> Vec<u8> {
    format!("dir/file_{i:07}").into_bytes()
}

#[test]
fn one_directory_with_a_million_entries_lists_as_one_common_prefix() {
    let t = mem_tree();
    let t0 = Instant::now();
    for j in 0..N_DIR {
        let i = 1 + (j * 7_919 + 17) % N_DIR; // 1..=N_DIR, permuted
        assert_eq!(t.put(&dir_key(i), &i.to_le_bytes()).unwrap(), None);
    }
    for k in ["aaa", "dir0/x", "dir", "zzz", "dir.txt"] {
        t.put(k.as_bytes(), b"x").unwrap();
    }
    eprintln!("(b) insert 1M in one dir: {:?}", t0.elapsed());
    let st = t.stats().unwrap();
    check_stats_consistent(&st);
    report("(b) after load", &st);

    let t0 = Instant::now();
    let root = entries(t.range().delimiter(b'/'));
    eprintln!("(b) root listing with delimiter: {:?}", t0.elapsed());
    assert_eq!(
        root,
        vec![
            (true, b"aaa".to_vec()),
            (true, b"dir".to_vec()),
            (true, b"dir.txt".to_vec()),
            (false, b"dir/".to_vec()),
            (false, b"dir0/".to_vec()),
            (true, b"zzz".to_vec()),
        ]
    );
    // start_after inside the directory still yields its rollup.
    let after = entries(t.range().delimiter(b'/').start_after(b"dir/file_0500000"));
    assert_eq!(after[0], (false, b"dir/".to_vec()));
    assert_eq!(after.len(), 3);

    let t0 = Instant::now();
    assert_eq!(count_ordered(t.scan_prefix(b"dir/")), N_DIR as usize);
    assert_eq!(
        count_ordered(t.scan_prefix(b"dir/").delimiter(b'/')),
        N_DIR as usize
    );
    eprintln!("(b) two listings of the directory: {:?}", t0.elapsed());

    // Paging with start_after.
    let page = entries(t.scan_prefix(b"dir/").start_after(b"dir/file_0999990"));
    assert_eq!(page.len(), 10);
    assert_eq!(page[0], (true, dir_key(999_991)));
    assert_eq!(page[9], (true, dir_key(1_000_000)));
    assert_eq!(count_ordered(t.scan_prefix(b"dir/file_00012")), 100);

    let t0 = Instant::now();
    for i in (1..=N_DIR).step_by(97) {
        assert_eq!(t.get(&dir_key(i)).unwrap(), Some(i.to_le_bytes().to_vec()));
    }
    // Delete every other file; the listing shrinks accordingly.
    for i in (1..=N_DIR).step_by(2) {
        assert_eq!(
            t.delete(&dir_key(i)).unwrap(),
            Some(i.to_le_bytes().to_vec())
        );
    }
    assert_eq!(count_ordered(t.scan_prefix(b"dir/")), (N_DIR / 2) as usize);
    t.compact().unwrap();
    assert_eq!(count_ordered(t.scan_prefix(b"dir/")), (N_DIR / 2) as usize);
    assert_eq!(entries(t.range().delimiter(b'/')).len(), 6);
    eprintln!("(b) get/delete half/compact: {:?}", t0.elapsed());
    report("(b) after deleting half and compact", &t.stats().unwrap());
}

// ---------------------------------------------------------------- (c)

#[test]
fn long_keys_sharing_a_one_kib_prefix() {
    let t = mem_tree();
    let mut m: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let prefix: Vec<u8> = (0..1024u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut s = 0x1234_5678_9abc_def1u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let t0 = Instant::now();
    for i in 0..300u64 {
        let len = 2_048 + (rnd() % (60 * 1024 - 2_048)) as usize;
        let mut k = prefix.clone();
        k.extend(format!("/{:03}/", i % 37).into_bytes());
        while k.len() < len {
            k.push(b'0' + (rnd() % 4) as u8);
        }
        let v = format!("v{i}").into_bytes();
        t.put(&k, &v).unwrap();
        // Keys that are prefixes and extensions of the long key.
        let half = k[..k.len() / 2].to_vec();
        t.put(&half, b"half").unwrap();
        let mut ext = k.clone();
        ext.extend_from_slice(b"\0tail");
        if ext.len() <= 65_535 {
            t.put(&ext, b"ext").unwrap();
            m.insert(ext, b"ext".to_vec());
        }
        m.insert(k, v);
        m.insert(half, b"half".to_vec());
    }
    eprintln!("(c) insert {} long keys: {:?}", m.len(), t0.elapsed());
    let st = t.stats().unwrap();
    check_stats_consistent(&st);
    report("(c) after load", &st);
    assert!(st.blob_count > 1, "~15 MB of keys must span frames");

    let check = |t: &Tree, m: &BTreeMap<Vec<u8>, Vec<u8>>, what: &str| {
        for (k, v) in m {
            assert_eq!(
                t.get(k).unwrap().as_ref(),
                Some(v),
                "{what}: get of a {}-byte key",
                k.len()
            );
        }
        let got: Vec<(Vec<u8>, Vec<u8>)> = t
            .scan_prefix(&prefix)
            .into_iter()
            .map(|e| match e.unwrap() {
                RangeEntry::Key { key, value } => (key, value),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(got.len(), want.len(), "{what}: listing length");
        assert!(got == want, "{what}: listing differs from the model");
        // One level below the shared prefix: 37 directories.
        let mut p = prefix.clone();
        p.push(b'/');
        let lvl = entries(t.range().prefix(&p).delimiter(b'/'));
        let want_lvl: std::collections::BTreeSet<Vec<u8>> = m
            .keys()
            .filter(|k| k.starts_with(&p))
            .map(|k| match k[p.len()..].iter().position(|&b| b == b'/') {
                Some(i) => k[..p.len() + i + 1].to_vec(),
                None => k.clone(),
            })
            .collect();
        assert_eq!(
            lvl.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>(),
            want_lvl.into_iter().collect::<Vec<_>>(),
            "{what}: one-level listing"
        );
    };
    check(&t, &m, "after load");

    let keys: Vec<Vec<u8>> = m.keys().cloned().collect();
    for (n, k) in keys.iter().enumerate() {
        if n % 3 != 0 {
            assert_eq!(t.delete(k).unwrap(), m.remove(k));
        }
    }
    check(&t, &m, "after deleting two thirds");
    t.compact().unwrap();
    check(&t, &m, "after compact");
    report("(c) after deletes and compact", &t.stats().unwrap());
}

// ---------------------------------------------------------------- (d)

#[test]
fn large_value_overwritten_ten_thousand_times_stays_bounded() {
    let t = mem_tree();
    let key = b"hot/the-big-one".to_vec();
    for i in 0..50u32 {
        t.put(format!("hot/neighbour-{i:02}").as_bytes(), &[i as u8; 100])
            .unwrap();
    }
    let mk = |n: u32, len: usize| -> Vec<u8> {
        (0..len)
            .map(|j| (j as u32).wrapping_mul(7).wrapping_add(n) as u8)
            .collect()
    };
    let mut cur = mk(0, 40 * 1024);
    assert_eq!(t.put(&key, &cur).unwrap(), None);
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut max_frames = 0;
    let mut max_used = 0;
    let t0 = Instant::now();
    for n in 1..=10_000u32 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let len = match s % 4 {
            0 => 40 * 1024,
            1 => (s >> 8) as usize % 65_536,
            2 => 30_000 + (s >> 8) as usize % 35_536,
            _ => (s >> 8) as usize % 100,
        };
        let next = mk(n, len);
        let prev = t.put(&key, &next).unwrap();
        assert!(
            prev.as_ref() == Some(&cur),
            "overwrite {n}: put must return the previous value"
        );
        cur = next;
        if n % 500 == 0 {
            let st = t.stats().unwrap();
            check_stats_consistent(&st);
            max_frames = max_frames.max(st.blob_count);
            max_used = max_used.max(st.total_space_used);
        }
    }
    eprintln!(
        "(d) 10k overwrites: {:?}; at most {max_frames} frames, {max_used} B used",
        t0.elapsed()
    );
    assert_eq!(t.get(&key).unwrap(), Some(cur.clone()));
    for i in 0..50u32 {
        assert_eq!(
            t.get(format!("hot/neighbour-{i:02}").as_bytes()).unwrap(),
            Some(vec![i as u8; 100])
        );
    }
    let st = t.stats().unwrap();
    report("(d) after overwrites", &st);
    // Live data is under 70 KB: rewriting must reuse space, not pile up.
    assert!(max_frames <= 4, "frames grew to {max_frames}");
    assert!(max_used <= 2 * FRAME, "space used grew to {max_used} B");
    t.compact().unwrap();
    let st = t.stats().unwrap();
    report("(d) after compact", &st);
    assert_eq!(
        st.blob_count, 1,
        "70 KB of live data compacts into the root frame"
    );
    assert!(
        st.total_space_used < 200 * 1024,
        "{} B used after compact",
        st.total_space_used
    );
    assert_eq!(t.get(&key).unwrap(), Some(cur));
}
