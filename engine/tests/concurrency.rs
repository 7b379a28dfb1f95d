#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Concurrency stress in memory mode (API.md §5/§6, DESIGN.md §10):
//! writers and readers on overlapping and disjoint keys, with and without
//! a concurrent `compact()` loop and with a tiny write-through cache.
//!
//! Every value encodes (writer, key it was written for, counter) plus
//! padding derived from them, so a reader can tell a value some writer
//! really wrote from garbage or a torn copy. Keys:
//! - `dNN/sKKKK` — stable: written once by the setup, never changed;
//! - `dNN/oW_KKK` — owned by writer W (only W writes them, renames stay
//!   inside W's keys), so W's own model predicts every return value;
//! - `dNN/x_KKK` — shared by all writers.
//!
//! Readers list with the iterator and with the borrowing visitor
//! (`RangeBuilder::for_each`, paged with `limit` and `Break`): every stable
//! key in range exactly once, in strictly increasing order. Deliberate bug
//! that fails them: resuming the next batch at the last collected key
//! inclusively (`Lower::Inclusive` in `api::range::Cursor::fill`) passes
//! that key twice ("not strictly increasing").

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use holt::{
    AlignedBlobBuf, Backend, BlobGuid, Error, MemoryBackend, RangeEntry, RangeEntryRef, Tree,
    TreeConfig,
};

const DIRS: usize = 16;
const STABLE_PER_DIR: usize = 300;
const OWN_PER_DIR: usize = 64;
const SHARED_PER_DIR: usize = 16;
const MAGIC: u8 = 0xA5;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn stable_key(d: usize, k: usize) -> Vec<u8> {
    format!("d{d:02}/s{k:04}").into_bytes()
}
fn stable_val(d: usize, k: usize) -> Vec<u8> {
    let n = 50 + (d * 31 + k * 7) % 100;
    (0..n).map(|i| (d * 13 + k * 3 + i) as u8).collect()
}
fn own_key(w: usize, d: usize, k: usize) -> Vec<u8> {
    format!("d{d:02}/o{w}_{k:03}").into_bytes()
}
fn shared_key(d: usize, k: usize) -> Vec<u8> {
    format!("d{d:02}/x_{k:03}").into_bytes()
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Stable(usize, usize),
    Own(usize),
    Shared,
}

fn parse_num(b: &[u8]) -> Option<usize> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn classify(key: &[u8]) -> Option<Kind> {
    // "dNN/" then the rest
    if key.len() < 6 || key[0] != b'd' || key[3] != b'/' {
        return None;
    }
    let d = parse_num(&key[1..3])?;
    if d >= DIRS {
        return None;
    }
    let rest = &key[4..];
    match rest.first()? {
        b's' if rest.len() == 5 => {
            let k = parse_num(&rest[1..])?;
            (k < STABLE_PER_DIR).then_some(Kind::Stable(d, k))
        }
        b'o' if rest.len() == 6 && rest[2] == b'_' => {
            let w = parse_num(&rest[1..2])?;
            let k = parse_num(&rest[3..])?;
            (k < OWN_PER_DIR).then_some(Kind::Own(w))
        }
        b'x' if rest.len() == 5 && rest[1] == b'_' => {
            let k = parse_num(&rest[2..])?;
            (k < SHARED_PER_DIR).then_some(Kind::Shared)
        }
        _ => None,
    }
}

fn pad_byte(w: u8, ctr: u64, i: usize) -> u8 {
    let x = ctr.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ u64::from(w);
    (x >> 29) as u8
}

fn enc(w: usize, key: &[u8], ctr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![MAGIC, w as u8];
    v.extend_from_slice(&ctr.to_le_bytes());
    v.extend_from_slice(&(key.len() as u16).to_le_bytes());
    v.extend_from_slice(key);
    let h = v.len();
    for i in h..len.max(h) {
        v.push(pad_byte(w as u8, ctr, i));
    }
    v
}

/// (writer, key the value was written for, counter), if `v` is a
/// well-formed value.
fn dec(v: &[u8]) -> Option<(usize, Vec<u8>, u64)> {
    if v.len() < 12 || v[0] != MAGIC {
        return None;
    }
    let w = v[1];
    let ctr = u64::from_le_bytes(v[2..10].try_into().ok()?);
    let kl = u16::from_le_bytes([v[10], v[11]]) as usize;
    let key = v.get(12..12 + kl)?.to_vec();
    for (i, &b) in v.iter().enumerate().skip(12 + kl) {
        if b != pad_byte(w, ctr, i) {
            return None;
        }
    }
    Some((usize::from(w), key, ctr))
}

struct Shared {
    tree: Tree,
    writers: usize,
    /// Highest counter each writer has started to write.
    published: Vec<AtomicU64>,
}

/// Panics unless `value` is a value some writer wrote that may sit
/// under `key` now.
fn check_value(s: &Shared, key: &[u8], value: &[u8], ctx: &str) {
    let show = || String::from_utf8_lossy(key).into_owned();
    match classify(key) {
        Some(Kind::Stable(d, k)) => {
            assert!(
                value == stable_val(d, k),
                "{ctx}: stable key {} has a wrong value",
                show()
            );
        }
        Some(Kind::Own(o)) => {
            let (w, orig, ctr) = dec(value).unwrap_or_else(|| {
                panic!("{ctx}: garbage value under {} ({} B)", show(), value.len())
            });
            assert_eq!(w, o, "{ctx}: {} holds a value of writer {w}", show());
            assert_eq!(
                classify(&orig),
                Some(Kind::Own(o)),
                "{ctx}: {} holds a value written for a foreign key",
                show()
            );
            assert!(
                ctr <= s.published[w].load(Ordering::Acquire),
                "{ctx}: value from the future under {}",
                show()
            );
        }
        Some(Kind::Shared) => {
            let (w, orig, ctr) = dec(value).unwrap_or_else(|| {
                panic!("{ctx}: garbage value under {} ({} B)", show(), value.len())
            });
            assert!(w < s.writers, "{ctx}: unknown writer {w}");
            assert_eq!(
                orig,
                key,
                "{ctx}: shared key {} holds a value written for {:?}",
                show(),
                String::from_utf8_lossy(&orig)
            );
            assert!(
                ctr <= s.published[w].load(Ordering::Acquire),
                "{ctx}: value from the future under {}",
                show()
            );
        }
        None => panic!("{ctx}: a key nobody wrote: {:?}", key),
    }
}

fn value_len(r: &mut XorShift) -> usize {
    match r.below(100) {
        0..=79 => r.below(64),
        80..=96 => 64 + r.below(2000),
        _ => 8_000 + r.below(32_000),
    }
}

fn ek(e: &Error) -> &'static str {
    match e {
        Error::NotFound => "NotFound",
        Error::DstExists => "DstExists",
        other => panic!("unexpected engine error {other:?}"),
    }
}

/// One writer: `ops` seeded operations; returns its model of its own keys.
fn writer(s: &Shared, w: usize, ops: usize, seed: u64) -> Model {
    let t = &s.tree;
    let mut r = XorShift(seed);
    let mut m = Model::new();
    let mut ctr = 0u64;
    let mut next_val = |key: &[u8], r: &mut XorShift| {
        ctr += 1;
        s.published[w].store(ctr, Ordering::Release);
        enc(w, key, ctr, value_len(r))
    };
    for i in 0..ops {
        let ok = own_key(w, r.below(DIRS), r.below(OWN_PER_DIR));
        match r.below(100) {
            0..=34 => {
                let v = next_val(&ok, &mut r);
                assert_eq!(
                    t.put(&ok, &v).unwrap(),
                    m.insert(ok.clone(), v),
                    "writer {w} op {i}: put return"
                );
            }
            35..=49 => {
                assert_eq!(
                    t.delete(&ok).unwrap(),
                    m.remove(&ok),
                    "writer {w} op {i}: delete return"
                );
            }
            50..=59 => {
                assert_eq!(
                    t.get(&ok).unwrap(),
                    m.get(&ok).cloned(),
                    "writer {w} op {i}: get of own key"
                );
            }
            60..=69 => {
                let src = if !m.is_empty() && r.below(4) != 0 {
                    m.keys().nth(r.below(m.len())).unwrap().clone()
                } else {
                    own_key(w, r.below(DIRS), r.below(OWN_PER_DIR))
                };
                let force = r.below(2) == 0;
                let want = match m.get(&src).cloned() {
                    None => Err("NotFound"),
                    Some(_) if src == ok => Ok(()),
                    Some(_) if !force && m.contains_key(&ok) => Err("DstExists"),
                    Some(v) => {
                        m.remove(&src);
                        m.insert(ok.clone(), v);
                        Ok(())
                    }
                };
                let got = t.rename(&src, &ok, force);
                assert_eq!(
                    got.map_err(|e| ek(&e)),
                    want,
                    "writer {w} op {i}: rename result"
                );
                assert_eq!(
                    t.get(&src).unwrap(),
                    m.get(&src).cloned(),
                    "writer {w} op {i}: src after rename"
                );
                assert_eq!(
                    t.get(&ok).unwrap(),
                    m.get(&ok).cloned(),
                    "writer {w} op {i}: dst after rename"
                );
            }
            70..=79 => {
                // put A, rename A -> B, maybe delete C, put a shared key.
                let a = ok.clone();
                let b = own_key(w, r.below(DIRS), r.below(OWN_PER_DIR));
                let c = own_key(w, r.below(DIRS), r.below(OWN_PER_DIR));
                let sk = shared_key(r.below(DIRS), r.below(SHARED_PER_DIR));
                let va = next_val(&a, &mut r);
                let vs = next_val(&sk, &mut r);
                let force = r.below(3) != 0;
                let del = r.below(2) == 0;
                let mut n = m.clone();
                n.insert(a.clone(), va.clone());
                let want = if a != b && !force && n.contains_key(&b) {
                    Err("DstExists")
                } else {
                    if a != b {
                        let v = n.remove(&a).unwrap();
                        n.insert(b.clone(), v);
                    }
                    if del {
                        n.remove(&c);
                    }
                    Ok(())
                };
                let got = t.txn(|tb| {
                    tb.put(&a, &va);
                    tb.rename(&a, &b, force);
                    if del {
                        tb.delete(&c);
                    }
                    tb.put(&sk, &vs);
                });
                assert_eq!(
                    got.map_err(|e| ek(&e)),
                    want,
                    "writer {w} op {i}: txn result"
                );
                if want.is_ok() {
                    m = n;
                }
                for k in [&a, &b, &c] {
                    assert_eq!(
                        t.get(k).unwrap(),
                        m.get(k).cloned(),
                        "writer {w} op {i}: own key after txn"
                    );
                }
            }
            80..=91 => {
                let sk = shared_key(r.below(DIRS), r.below(SHARED_PER_DIR));
                let v = next_val(&sk, &mut r);
                if let Some(prev) = t.put(&sk, &v).unwrap() {
                    check_value(s, &sk, &prev, "previous value of a shared put");
                }
            }
            _ => {
                let sk = shared_key(r.below(DIRS), r.below(SHARED_PER_DIR));
                if let Some(prev) = t.delete(&sk).unwrap() {
                    check_value(s, &sk, &prev, "value of a shared delete");
                }
            }
        }
    }
    m
}

fn entry(e: holt::Result<RangeEntry>) -> (Vec<u8>, Option<Vec<u8>>) {
    match e.unwrap() {
        RangeEntry::Key { key, value } => (key, Some(value)),
        RangeEntry::CommonPrefix(p) => (p, None),
        other => panic!("unknown entry {other:?}"),
    }
}

/// Checks a key listing taken under churn: strictly increasing, valid
/// values, and every stable key in range exactly once. Returns the count.
fn check_listing(
    s: &Shared,
    items: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
    stable_in_range: usize,
    ctx: &str,
) -> usize {
    let mut prev: Option<Vec<u8>> = None;
    let mut stable = 0;
    let mut n = 0;
    for (k, v) in items {
        if let Some(p) = &prev {
            assert!(
                p < &k,
                "{ctx}: not strictly increasing: {:?} then {:?}",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(&k)
            );
        }
        check_value(s, &k, &v, ctx);
        if matches!(classify(&k), Some(Kind::Stable(..))) {
            stable += 1;
        }
        prev = Some(k);
        n += 1;
    }
    assert_eq!(
        stable, stable_in_range,
        "{ctx}: stable keys seen (each must appear exactly once)"
    );
    n
}

fn reader(s: &Shared, id: usize, stop: &AtomicBool, seed: u64) -> (usize, usize) {
    let t = &s.tree;
    let mut r = XorShift(seed);
    let mut gets = 0;
    let mut scans = 0;
    // At least a few rounds even if the writers finish first.
    while !stop.load(Ordering::Acquire) || scans < 6 {
        for _ in 0..2000 {
            let d = r.below(DIRS);
            let k = match r.below(3) {
                0 => stable_key(d, r.below(STABLE_PER_DIR)),
                1 => own_key(r.below(s.writers), d, r.below(OWN_PER_DIR)),
                _ => shared_key(d, r.below(SHARED_PER_DIR)),
            };
            match t.get(&k).unwrap() {
                Some(v) => check_value(s, &k, &v, &format!("reader {id} get")),
                None => assert!(
                    !matches!(classify(&k), Some(Kind::Stable(..))),
                    "reader {id}: stable key {:?} missing",
                    String::from_utf8_lossy(&k)
                ),
            }
            gets += 1;
        }
        scans += 1;
        match scans % 6 {
            0 => {
                // Whole tree.
                let it = t
                    .range()
                    .into_iter()
                    .map(entry)
                    .map(|(k, v)| (k, v.expect("no delimiter: keys only")));
                check_listing(
                    s,
                    it,
                    DIRS * STABLE_PER_DIR,
                    &format!("reader {id} full scan"),
                );
            }
            1 => {
                // One directory, from a random start key.
                let d = r.below(DIRS);
                let from = r.below(STABLE_PER_DIR);
                let p = format!("d{d:02}/").into_bytes();
                let sa = stable_key(d, from);
                let it = t
                    .scan_prefix(&p)
                    .start_after(&sa)
                    .into_iter()
                    .map(entry)
                    .map(|(k, v)| (k, v.unwrap()));
                check_listing(
                    s,
                    it,
                    STABLE_PER_DIR - from - 1,
                    &format!("reader {id} dir scan"),
                );
            }
            2 => {
                // Paged listing of the whole tree, 97 entries per page.
                let mut all = Vec::new();
                let mut last: Option<Vec<u8>> = None;
                loop {
                    let mut b = t.range();
                    if let Some(l) = &last {
                        b = b.start_after(l);
                    }
                    let page: Vec<(Vec<u8>, Vec<u8>)> = b
                        .into_iter()
                        .take(97)
                        .map(entry)
                        .map(|(k, v)| (k, v.unwrap()))
                        .collect();
                    if page.is_empty() {
                        break;
                    }
                    last = Some(page[page.len() - 1].0.clone());
                    all.extend(page);
                }
                check_listing(
                    s,
                    all.into_iter(),
                    DIRS * STABLE_PER_DIR,
                    &format!("reader {id} paged scan"),
                );
            }
            4 => {
                // Whole tree through the borrowing visitor.
                let mut all = Vec::new();
                t.range()
                    .for_each(|e| {
                        match e {
                            RangeEntryRef::Key { key, value } => {
                                all.push((key.to_vec(), value.to_vec()));
                            }
                            other => panic!("reader {id}: no delimiter, got {other:?}"),
                        }
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                check_listing(
                    s,
                    all.into_iter(),
                    DIRS * STABLE_PER_DIR,
                    &format!("reader {id} visitor scan"),
                );
            }
            5 => {
                // Visitor pages: a limit of 150, stopped at 61 entries.
                let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                loop {
                    let mut b = t.range().limit(150);
                    if let Some((l, _)) = all.last() {
                        b = b.start_after(l);
                    }
                    let mut page = Vec::new();
                    b.for_each(|e| {
                        if let RangeEntryRef::Key { key, value } = e {
                            page.push((key.to_vec(), value.to_vec()));
                        }
                        if page.len() == 61 {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                    .unwrap();
                    assert!(page.len() <= 61, "reader {id}: visitor ran past Break");
                    if page.is_empty() {
                        break;
                    }
                    all.extend(page);
                }
                check_listing(
                    s,
                    all.into_iter(),
                    DIRS * STABLE_PER_DIR,
                    &format!("reader {id} visitor paged scan"),
                );
            }
            _ => {
                // Root with delimiter: exactly the directories.
                let got: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                    t.range().delimiter(b'/').into_iter().map(entry).collect();
                let want: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..DIRS)
                    .map(|d| (format!("d{d:02}/").into_bytes(), None))
                    .collect();
                assert_eq!(got, want, "reader {id}: delimiter listing of the root");
            }
        }
    }
    (gets, scans)
}

struct Opts {
    writers: usize,
    readers: usize,
    ops: usize,
    compactor: bool,
    tiny_write_through: bool,
    seed: u64,
}

fn run(o: &Opts) {
    let mut cfg = TreeConfig::memory();
    if o.tiny_write_through {
        cfg.memory_flush_on_write = true;
        cfg.buffer_pool_size = 3;
    } else {
        cfg.memory_flush_on_write = false;
        cfg.buffer_pool_size = 1 << 20;
    }
    let tree = Tree::open(cfg).unwrap();
    for d in 0..DIRS {
        for k in 0..STABLE_PER_DIR {
            tree.put(&stable_key(d, k), &stable_val(d, k)).unwrap();
        }
    }
    let s = Arc::new(Shared {
        tree: tree.clone(),
        writers: o.writers,
        published: (0..o.writers).map(|_| AtomicU64::new(0)).collect(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();

    let mut writers = Vec::new();
    for w in 0..o.writers {
        let s = Arc::clone(&s);
        let ops = o.ops;
        let seed = o.seed ^ (w as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
        writers.push(thread::spawn(move || writer(&s, w, ops, seed)));
    }
    let mut readers = Vec::new();
    for id in 0..o.readers {
        let s = Arc::clone(&s);
        let stop = Arc::clone(&stop);
        let seed = o.seed ^ (id as u64 + 101).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        readers.push(thread::spawn(move || reader(&s, id, &stop, seed)));
    }
    let compactor = o.compactor.then(|| {
        let s = Arc::clone(&s);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) || n < 3 {
                s.tree.compact().unwrap();
                n += 1;
            }
            n
        })
    });

    // Watchdog: a deadlock or livelock fails the test instead of hanging
    // the suite.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut models = Vec::new();
    for h in writers {
        while !h.is_finished() {
            assert!(
                Instant::now() < deadline,
                "writers did not finish within 240 s: deadlock or livelock"
            );
            thread::sleep(Duration::from_millis(20));
        }
        models.push(h.join().unwrap());
    }
    let writers_time = t0.elapsed();
    stop.store(true, Ordering::Release);
    let mut reader_stats = Vec::new();
    for h in readers {
        while !h.is_finished() {
            assert!(
                Instant::now() < deadline,
                "readers did not finish within 240 s: deadlock or livelock"
            );
            thread::sleep(Duration::from_millis(20));
        }
        reader_stats.push(h.join().unwrap());
    }
    let compactions = compactor.map(|h| {
        while !h.is_finished() {
            assert!(
                Instant::now() < deadline,
                "compactor did not finish within 240 s: deadlock or livelock"
            );
            thread::sleep(Duration::from_millis(20));
        }
        h.join().unwrap()
    });
    eprintln!(
        "{} writers x {} ops in {writers_time:?}; readers (gets, scans) {reader_stats:?}; compactions {compactions:?}; total {:?}",
        o.writers,
        o.ops,
        t0.elapsed()
    );
    if o.compactor {
        assert!(compactions.unwrap_or(0) >= 3);
    }

    verify_final(&s, &models);
    tree.compact().unwrap();
    verify_final(&s, &models);
    let st = tree.stats().unwrap();
    assert_eq!(st.blob_count as usize, st.blobs.len());
    eprintln!(
        "final: {} frames, {} B used",
        st.blob_count, st.total_space_used
    );
}

fn verify_final(s: &Shared, models: &[Model]) {
    let mut own: Vec<Model> = vec![Model::new(); s.writers];
    let mut stable = 0;
    let mut prev: Option<Vec<u8>> = None;
    for e in s.tree.range() {
        let (k, v) = entry(e);
        let v = v.unwrap();
        if let Some(p) = &prev {
            assert!(p < &k, "final listing out of order");
        }
        check_value(s, &k, &v, "final listing");
        match classify(&k) {
            Some(Kind::Own(w)) => {
                own[w].insert(k.clone(), v);
            }
            Some(Kind::Stable(..)) => stable += 1,
            _ => {}
        }
        prev = Some(k);
    }
    assert_eq!(stable, DIRS * STABLE_PER_DIR, "every stable key survives");
    for (w, m) in models.iter().enumerate() {
        assert_eq!(own[w].len(), m.len(), "writer {w}: number of own keys");
        assert!(
            own[w] == *m,
            "writer {w}: final own keys differ from its model"
        );
        for (k, v) in m {
            assert_eq!(s.tree.get(k).unwrap().as_ref(), Some(v));
        }
    }
}

#[test]
fn writers_and_readers_on_overlapping_and_disjoint_keys() {
    run(&Opts {
        writers: 3,
        readers: 2,
        ops: 40_000,
        compactor: false,
        tiny_write_through: false,
        seed: 0xC0FF_EE01,
    });
}

#[test]
fn four_writers_two_readers_final_state_matches_per_writer_models() {
    run(&Opts {
        writers: 4,
        readers: 2,
        ops: 25_000,
        compactor: false,
        tiny_write_through: false,
        seed: 0xC0FF_EE02,
    });
}

#[test]
fn compact_loop_concurrent_with_readers_and_writers() {
    run(&Opts {
        writers: 2,
        readers: 2,
        ops: 30_000,
        compactor: true,
        tiny_write_through: false,
        seed: 0xC0FF_EE03,
    });
}

#[test]
fn churn_with_write_through_and_a_three_frame_cache() {
    run(&Opts {
        writers: 2,
        readers: 2,
        ops: 2_000,
        compactor: true,
        tiny_write_through: true,
        seed: 0xC0FF_EE04,
    });
}

// ------------------------------------------- a stale load racing a write

/// Channels a paused `read_blob` uses: "I have copied the image" and "go".
type Gate = (BlobGuid, mpsc::Sender<()>, mpsc::Receiver<()>);

/// A `MemoryBackend` wrapper that logs reads and can pause the next read
/// of one frame *after* it copied the image, until the test says go.
#[derive(Default)]
struct Gated {
    inner: MemoryBackend,
    log: Mutex<Vec<BlobGuid>>,
    gate: Mutex<Option<Gate>>,
}

impl Backend for Gated {
    fn read_blob(&self, guid: BlobGuid, dst: &mut AlignedBlobBuf) -> holt::Result<()> {
        self.log.lock().unwrap().push(guid);
        let r = self.inner.read_blob(guid, dst);
        let armed = {
            let mut g = self.gate.lock().unwrap();
            if g.as_ref().is_some_and(|x| x.0 == guid) {
                g.take()
            } else {
                None
            }
        };
        if let Some((_, copied, go)) = armed {
            copied.send(()).unwrap();
            go.recv().unwrap();
        }
        r
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
        self.inner.flush()
    }
}

/// Reader X misses frame A and reads its image from the backend; before X
/// puts it in the cache, a writer loads A itself, updates a key in it,
/// writes it through, and A is evicted. X's image is now stale and must
/// not become the cached copy (DESIGN.md §5, I1): the update must survive.
#[test]
fn stale_frame_load_racing_a_write_through_loses_no_update() {
    let s = Arc::new(Gated::default());
    {
        let mut cfg = TreeConfig::memory();
        cfg.memory_flush_on_write = false;
        cfg.buffer_pool_size = 1 << 20;
        let t = Tree::open_with_backend(cfg, s.clone()).unwrap();
        for p in ["a", "b"] {
            for i in 0..3000 {
                t.put(format!("{p}/{i:05}").as_bytes(), &[7u8; 300])
                    .unwrap();
            }
        }
        t.checkpoint().unwrap();
        assert!(t.stats().unwrap().blob_count >= 3);
    }
    let mut cfg = TreeConfig::memory();
    cfg.memory_flush_on_write = true;
    cfg.buffer_pool_size = 1;
    let t = Tree::open_with_backend(cfg, s.clone()).unwrap();
    let (ka, kb) = (b"a/01500", b"b/01500");
    // Which frames hold ka and kb (each get misses exactly once).
    s.log.lock().unwrap().clear();
    t.get(ka).unwrap().unwrap();
    let la: Vec<BlobGuid> = s.log.lock().unwrap().drain(..).collect();
    t.get(kb).unwrap().unwrap();
    let lb: Vec<BlobGuid> = s.log.lock().unwrap().drain(..).collect();
    assert_eq!((la.len(), lb.len()), (1, 1), "one frame load per key");
    let (a, b) = (la[0], lb[0]);
    assert!(
        a != [0u8; 16] && a != b,
        "ka and kb live in different child frames"
    );

    let (copied_tx, copied_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    *s.gate.lock().unwrap() = Some((a, copied_tx, go_rx));
    let tx = t.clone();
    let x = thread::spawn(move || tx.get(ka).unwrap());
    copied_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("reader X reads frame A");
    // X holds A's old image. Update ka (loads A again), then load B, which
    // evicts the clean A. An engine that makes concurrent loads of one
    // frame wait for each other blocks this writer until X goes on, so
    // X is released after at most 3 s either way.
    let tw = t.clone();
    let w = thread::spawn(move || {
        let old = tw.put(ka, b"new").unwrap();
        tw.get(kb).unwrap().unwrap();
        old
    });
    let t0 = Instant::now();
    while !w.is_finished() && t0.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(5));
    }
    go_tx.send(()).unwrap();
    assert_eq!(
        w.join().unwrap(),
        Some(vec![7u8; 300]),
        "put returns the old value"
    );
    let seen = x.join().unwrap();
    assert!(seen == Some(vec![7u8; 300]) || seen == Some(b"new".to_vec()));
    let now = t.get(ka).unwrap();
    assert!(
        now.as_deref() == Some(&b"new"[..]),
        "update lost: get(ka) returned a {}-byte old value after a stale frame load",
        now.map_or(0, |v| v.len())
    );
    drop(t);
}
