#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Model-based tests: the tree must behave exactly like a
//! `BTreeMap<Vec<u8>, Vec<u8>>` for every sequence of put / delete / get /
//! rename / txn / range / compact (API.md §5–§8), including the error
//! cases, which must leave the tree unchanged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use std::ops::ControlFlow;

use holt::{Error, RangeBuilder, RangeEntry, RangeEntryRef, Tree, TreeConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngSeed, TestCaseError, TestRunner};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const MAX: usize = 65_535;

fn mem_tree() -> Tree {
    let mut cfg = TreeConfig::memory();
    cfg.memory_flush_on_write = false;
    cfg.buffer_pool_size = 1 << 20;
    Tree::open(cfg).unwrap()
}

/// Deterministic value bytes from a seed and a length.
fn val(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)) ^ ((i >> 8) as u8))
        .collect()
}

// ---------------------------------------------------------------- errors

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ek {
    NotFound,
    DstExists,
    KeyTooLong(usize),
    ValueTooLong(usize),
}

fn ek(e: Error) -> Ek {
    match e {
        Error::NotFound => Ek::NotFound,
        Error::DstExists => Ek::DstExists,
        Error::KeyTooLong { len } => Ek::KeyTooLong(len),
        Error::ValueTooLong { len } => Ek::ValueTooLong(len),
        other => panic!("unexpected engine error: {other:?} ({other})"),
    }
}

// ---------------------------------------------------------------- ranges

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ent {
    Key(Vec<u8>, Vec<u8>),
    Prefix(Vec<u8>),
}

impl std::fmt::Display for Ent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ent::Key(k, v) => write!(f, "Key({:?}, {} B)", String::from_utf8_lossy(k), v.len()),
            Ent::Prefix(p) => write!(f, "Prefix({:?})", String::from_utf8_lossy(p)),
        }
    }
}

fn expected_range(
    m: &Model,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    delim: Option<u8>,
) -> Vec<Ent> {
    let mut out: Vec<Ent> = Vec::new();
    for (k, v) in m.range(prefix.to_vec()..) {
        if !k.starts_with(prefix) {
            break;
        }
        if let Some(sa) = start_after {
            if k.as_slice() <= sa {
                continue;
            }
        }
        if let Some(d) = delim {
            if let Some(i) = k[prefix.len()..].iter().position(|&b| b == d) {
                let cp = k[..prefix.len() + i + 1].to_vec();
                if out.last() != Some(&Ent::Prefix(cp.clone())) {
                    out.push(Ent::Prefix(cp));
                }
                continue;
            }
        }
        out.push(Ent::Key(k.clone(), v.clone()));
    }
    out
}

fn builder(
    t: &Tree,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    delim: Option<u8>,
    limit: Option<usize>,
) -> RangeBuilder {
    let mut b = t.range().prefix(prefix);
    if let Some(sa) = start_after {
        b = b.start_after(sa);
    }
    if let Some(d) = delim {
        b = b.delimiter(d);
    }
    if let Some(n) = limit {
        b = b.limit(n);
    }
    b
}

/// The range through `RangeBuilder::for_each`, stopping (with `Break`)
/// once `stop_at` entries were seen.
fn visited_range(b: RangeBuilder, stop_at: Option<usize>) -> Vec<Ent> {
    let mut out = Vec::new();
    b.for_each(|e| {
        out.push(match e {
            RangeEntryRef::Key { key, value } => Ent::Key(key.to_vec(), value.to_vec()),
            RangeEntryRef::CommonPrefix(p) => Ent::Prefix(p.to_vec()),
            other => panic!("unknown range entry {other:?}"),
        });
        if Some(out.len()) == stop_at {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    out
}

fn actual_range(
    t: &Tree,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    delim: Option<u8>,
) -> Vec<Ent> {
    limited_range(t, prefix, start_after, delim, None)
}

fn limited_range(
    t: &Tree,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    delim: Option<u8>,
    limit: Option<usize>,
) -> Vec<Ent> {
    builder(t, prefix, start_after, delim, limit)
        .into_iter()
        .map(|e| match e.unwrap() {
            RangeEntry::Key { key, value } => Ent::Key(key, value),
            RangeEntry::CommonPrefix(p) => Ent::Prefix(p),
            other => panic!("unknown range entry {other:?}"),
        })
        .collect()
}

fn diff(what: &str, got: &[Ent], want: &[Ent]) -> Option<String> {
    if got == want {
        return None;
    }
    let i = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Some(format!(
        "{what}: got {} entries, want {}; first difference at {i}: got {} / want {}",
        got.len(),
        want.len(),
        got.get(i).map_or("<end>".to_string(), ToString::to_string),
        want.get(i).map_or("<end>".to_string(), ToString::to_string),
    ))
}

fn check_all(t: &Tree, m: &Model, what: &str) -> Result<(), String> {
    let want = expected_range(m, b"", None, None);
    let got = actual_range(t, b"", None, None);
    match diff(what, &got, &want) {
        None => Ok(()),
        Some(s) => Err(s),
    }
}

fn check_stats(t: &Tree) -> holt::TreeStats {
    let st = t.stats().unwrap();
    assert_eq!(
        st.blob_count as usize,
        st.blobs.len(),
        "blob_count == blobs.len()"
    );
    assert_eq!(
        st.total_space_used,
        st.blobs
            .iter()
            .map(|b| u64::from(b.space_used))
            .sum::<u64>()
    );
    assert_eq!(
        st.total_gap_space,
        st.blobs.iter().map(|b| u64::from(b.gap_space)).sum::<u64>()
    );
    assert_eq!(
        st.total_slots,
        st.blobs.iter().map(|b| u64::from(b.num_slots)).sum::<u64>()
    );
    assert_eq!(
        st.total_compactions,
        st.blobs
            .iter()
            .map(|b| u64::from(b.compact_times))
            .sum::<u64>()
    );
    assert_eq!(st.total_tombstones, 0, "deletes are physical");
    assert!(st.blobs.iter().all(|b| b.tombstone_leaf_cnt == 0));
    assert!(st.blob_count >= 1);
    assert_eq!(
        st.blobs[0].guid, [0u8; 16],
        "BFS order starts at the root frame"
    );
    assert!(st.checkpointer.is_none());
    st
}

// ------------------------------------------------------------ operations

/// How an op names a key: literally, or as the n-th key currently in the
/// model (so renames and deletes hit existing keys often).
#[derive(Debug, Clone)]
enum Sel {
    Key(Vec<u8>),
    Existing(usize),
}

fn resolve(m: &Model, s: &Sel) -> Vec<u8> {
    match s {
        Sel::Key(k) => k.clone(),
        Sel::Existing(i) => {
            if m.is_empty() {
                b"no/such/key".to_vec()
            } else {
                m.keys().nth(i % m.len()).unwrap().clone()
            }
        }
    }
}

#[derive(Debug, Clone)]
enum TOp {
    Put(Vec<u8>, (u8, usize)),
    Delete(Sel),
    Rename(Sel, Vec<u8>, bool),
    /// Rename of the n-th key put earlier in the same batch.
    RenameBatchPut(usize, Vec<u8>, bool),
    PutOversizeValue(Vec<u8>),
    PutOversizeKey,
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, (u8, usize)),
    Delete(Sel),
    Get(Sel),
    Rename(Sel, Vec<u8>, bool),
    Txn(Vec<TOp>),
    Range {
        prefix: (Sel, usize),
        start_after: Option<Sel>,
        delim: Option<u8>,
    },
    Compact,
    Stats,
    PutOversizeKey((u8, usize)),
    PutOversizeValue(Vec<u8>),
    RenameOversizeDst(Sel),
    GetDeleteOversize,
}

#[derive(Debug, Clone)]
enum RTOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Rename(Vec<u8>, Vec<u8>, bool),
}

/// Applies a batch to the model with the engine's validation rules
/// (API.md §5 rename and txn). On error the model is untouched.
fn model_txn(m: &mut Model, ops: &[RTOp]) -> Result<(), Ek> {
    let mut n = m.clone();
    for op in ops {
        match op {
            RTOp::Put(k, v) => {
                if k.len() > MAX {
                    return Err(Ek::KeyTooLong(k.len()));
                }
                if v.len() > MAX {
                    return Err(Ek::ValueTooLong(v.len()));
                }
                n.insert(k.clone(), v.clone());
            }
            RTOp::Delete(k) => {
                n.remove(k);
            }
            RTOp::Rename(s, d, force) => {
                let Some(v) = n.get(s).cloned() else {
                    return Err(Ek::NotFound);
                };
                if s == d {
                    continue;
                }
                if !force && n.contains_key(d) {
                    return Err(Ek::DstExists);
                }
                if d.len() > MAX {
                    return Err(Ek::KeyTooLong(d.len()));
                }
                n.remove(s);
                n.insert(d.clone(), v);
            }
        }
    }
    *m = n;
    Ok(())
}

fn engine_txn(t: &Tree, ops: &[RTOp]) -> Result<(), Error> {
    t.txn(|b| {
        for op in ops {
            match op {
                RTOp::Put(k, v) => b.put(k, v),
                RTOp::Delete(k) => b.delete(k),
                RTOp::Rename(s, d, f) => b.rename(s, d, *f),
            }
        }
    })
}

/// Runs one op against both the tree and the model and compares.
fn step(t: &Tree, m: &mut Model, op: &Op, i: usize) -> Result<(), String> {
    macro_rules! ensure_eq {
        ($a:expr, $b:expr, $($fmt:tt)*) => {{
            let (a, b) = ($a, $b);
            if a != b {
                return Err(format!("op {i} {op:?}: {}: got {:?}, want {:?}", format!($($fmt)*), a, b));
            }
        }};
    }
    match op {
        Op::Put(k, (s, l)) => {
            let v = val(*s, *l);
            let got = t
                .put(k, &v)
                .map_err(|e| format!("op {i}: put failed: {e:?}"))?;
            ensure_eq!(got, m.insert(k.clone(), v), "put return");
        }
        Op::Delete(sel) => {
            let k = resolve(m, sel);
            let got = t
                .delete(&k)
                .map_err(|e| format!("op {i}: delete failed: {e:?}"))?;
            ensure_eq!(got, m.remove(&k), "delete return");
        }
        Op::Get(sel) => {
            let k = resolve(m, sel);
            let got = t
                .get(&k)
                .map_err(|e| format!("op {i}: get failed: {e:?}"))?;
            ensure_eq!(got, m.get(&k).cloned(), "get");
        }
        Op::Rename(sel, dst, force) => {
            let src = resolve(m, sel);
            let want = model_txn(m, &[RTOp::Rename(src.clone(), dst.clone(), *force)]);
            let got = t.rename(&src, dst, *force).map_err(ek);
            ensure_eq!(got, want.clone(), "rename result");
            ensure_eq!(
                t.get(&src).unwrap(),
                m.get(&src).cloned(),
                "src after rename"
            );
            ensure_eq!(t.get(dst).unwrap(), m.get(dst).cloned(), "dst after rename");
            if want.is_err() {
                check_all(t, m, "tree after failed rename")?;
            }
        }
        Op::Txn(tops) => {
            let mut put_keys: Vec<Vec<u8>> = Vec::new();
            let mut r = Vec::new();
            for top in tops {
                r.push(match top {
                    TOp::Put(k, (s, l)) => {
                        put_keys.push(k.clone());
                        RTOp::Put(k.clone(), val(*s, *l))
                    }
                    TOp::Delete(sel) => RTOp::Delete(resolve(m, sel)),
                    TOp::Rename(sel, d, f) => RTOp::Rename(resolve(m, sel), d.clone(), *f),
                    TOp::RenameBatchPut(n, d, f) => {
                        let src = if put_keys.is_empty() {
                            resolve(m, &Sel::Existing(*n))
                        } else {
                            put_keys[n % put_keys.len()].clone()
                        };
                        RTOp::Rename(src, d.clone(), *f)
                    }
                    TOp::PutOversizeValue(k) => RTOp::Put(k.clone(), vec![7u8; MAX + 1]),
                    TOp::PutOversizeKey => RTOp::Put(vec![b'k'; MAX + 1], b"v".to_vec()),
                });
            }
            let want = model_txn(m, &r);
            let got = engine_txn(t, &r).map_err(ek);
            ensure_eq!(got, want.clone(), "txn result");
            if want.is_err() {
                check_all(t, m, "tree after failed txn")?;
            } else {
                for op in &r {
                    let ks: Vec<&Vec<u8>> = match op {
                        RTOp::Put(k, _) | RTOp::Delete(k) => vec![k],
                        RTOp::Rename(s, d, _) => vec![s, d],
                    };
                    for k in ks {
                        ensure_eq!(t.get(k).unwrap(), m.get(k).cloned(), "get after txn");
                    }
                }
            }
        }
        Op::Range {
            prefix: (psel, cut),
            start_after,
            delim,
        } => {
            let pk = resolve(m, psel);
            let prefix = &pk[..cut % (pk.len() + 1)];
            let sa = start_after.as_ref().map(|s| resolve(m, s));
            let want = expected_range(m, prefix, sa.as_deref(), *delim);
            let what = format!(
                "op {i} range prefix={:?} start_after={:?} delim={delim:?}",
                String::from_utf8_lossy(prefix),
                sa.as_ref().map(|s| String::from_utf8_lossy(s).into_owned())
            );
            let got = actual_range(t, prefix, sa.as_deref(), *delim);
            if let Some(d) = diff(&what, &got, &want) {
                return Err(d);
            }
            // The visitor, a limit (sometimes past one full batch) and an
            // early stop give the same entries, cut where they should be.
            let sa = sa.as_deref();
            let lim = if cut % 5 == 0 {
                1025 + cut % 600
            } else {
                (cut / 7) % 300
            };
            let cut_at = |n: usize| &want[..n.min(want.len())];
            let checks = [
                (
                    "for_each",
                    visited_range(builder(t, prefix, sa, *delim, None), None),
                    &want[..],
                ),
                (
                    "limit",
                    limited_range(t, prefix, sa, *delim, Some(lim)),
                    cut_at(lim),
                ),
                (
                    "for_each + limit",
                    visited_range(builder(t, prefix, sa, *delim, Some(lim)), None),
                    cut_at(lim),
                ),
                (
                    "for_each + break",
                    visited_range(builder(t, prefix, sa, *delim, None), Some(lim.max(1))),
                    cut_at(lim.max(1)),
                ),
            ];
            for (how, got, want) in checks {
                if let Some(d) = diff(&format!("{what} {how} {lim}"), &got, want) {
                    return Err(d);
                }
            }
        }
        Op::Compact => {
            t.compact()
                .map_err(|e| format!("op {i}: compact failed: {e:?}"))?;
            check_all(t, m, "after compact")?;
        }
        Op::Stats => {
            check_stats(t);
        }
        Op::PutOversizeKey((s, l)) => {
            let k = vec![b'o'; MAX + 1];
            let got = t.put(&k, &val(*s, *l)).map_err(ek);
            ensure_eq!(
                got,
                Err::<Option<Vec<u8>>, Ek>(Ek::KeyTooLong(MAX + 1)),
                "oversize key put"
            );
            check_all(t, m, "after oversize key put")?;
        }
        Op::PutOversizeValue(k) => {
            let got = t.put(k, &vec![1u8; MAX + 1]).map_err(ek);
            ensure_eq!(
                got,
                Err::<Option<Vec<u8>>, Ek>(Ek::ValueTooLong(MAX + 1)),
                "oversize value put"
            );
            ensure_eq!(
                t.get(k).unwrap(),
                m.get(k).cloned(),
                "key after oversize value put"
            );
            check_all(t, m, "after oversize value put")?;
        }
        Op::RenameOversizeDst(sel) => {
            let src = resolve(m, sel);
            let dst = vec![b'd'; MAX + 1];
            let want = model_txn(m, &[RTOp::Rename(src.clone(), dst.clone(), true)]);
            let got = t.rename(&src, &dst, true).map_err(ek);
            ensure_eq!(got, want.clone(), "rename to oversize dst");
            check_all(t, m, "after rename to oversize dst")?;
        }
        Op::GetDeleteOversize => {
            let k = vec![b'g'; MAX + 1];
            ensure_eq!(
                t.get(&k).map_err(ek),
                Ok::<Option<Vec<u8>>, Ek>(None),
                "get oversize"
            );
            ensure_eq!(
                t.delete(&k).map_err(ek),
                Ok::<Option<Vec<u8>>, Ek>(None),
                "delete oversize"
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------ strategies

fn seg() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c", "ab", "abc", "x\0y", "", "dir"])
}

fn path_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(seg(), 1..5).prop_map(|s| s.join("/").into_bytes())
}

fn bin_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![0u8, 0, 1, b'/', b'a', 0xff]),
        0..7,
    )
}

fn long_key() -> impl Strategy<Value = Vec<u8>> {
    (0usize..3, path_key()).prop_map(|(i, s)| {
        let mut k = vec![b'L'; [300, 1500, 4000][i]];
        k.extend(s);
        k
    })
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => path_key(),
        4 => bin_key(),
        1 => Just(Vec::new()),
        1 => long_key(),
    ]
}

fn value() -> impl Strategy<Value = (u8, usize)> {
    (
        any::<u8>(),
        prop_oneof![
            12 => 0usize..40,
            3 => 40usize..3000,
            4 => 3000usize..=MAX,
            2 => Just(MAX),
        ],
    )
}

fn sel() -> impl Strategy<Value = Sel> {
    prop_oneof![
        2 => key().prop_map(Sel::Key),
        3 => any::<usize>().prop_map(Sel::Existing),
    ]
}

fn delim() -> impl Strategy<Value = Option<u8>> {
    prop::sample::select(vec![None, Some(b'/'), Some(b'/'), Some(0u8), Some(b'a')])
}

fn top() -> impl Strategy<Value = TOp> {
    prop_oneof![
        6 => (key(), value()).prop_map(|(k, v)| TOp::Put(k, v)),
        2 => sel().prop_map(TOp::Delete),
        2 => (sel(), key(), any::<bool>()).prop_map(|(s, d, f)| TOp::Rename(s, d, f)),
        3 => (any::<usize>(), key(), any::<bool>()).prop_map(|(n, d, f)| TOp::RenameBatchPut(n, d, f)),
        1 => key().prop_map(TOp::PutOversizeValue),
        1 => Just(TOp::PutOversizeKey),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (key(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        10 => sel().prop_map(Op::Delete),
        10 => sel().prop_map(Op::Get),
        8 => (sel(), key(), any::<bool>()).prop_map(|(s, d, f)| Op::Rename(s, d, f)),
        6 => prop::collection::vec(top(), 0..6).prop_map(Op::Txn),
        8 => ((sel(), any::<usize>()), prop::option::of(sel()), delim())
            .prop_map(|(prefix, start_after, delim)| Op::Range { prefix, start_after, delim }),
        1 => Just(Op::Compact),
        1 => Just(Op::Stats),
        1 => value().prop_map(Op::PutOversizeKey),
        1 => key().prop_map(Op::PutOversizeValue),
        1 => sel().prop_map(Op::RenameOversizeDst),
        1 => Just(Op::GetDeleteOversize),
    ]
}

/// Runs a sequence and returns the most frames the tree had at its end.
fn run_ops(ops: &[Op]) -> Result<u32, String> {
    let t = mem_tree();
    let mut m = Model::new();
    for (i, op) in ops.iter().enumerate() {
        step(&t, &mut m, op, i)?;
    }
    check_all(&t, &m, "final state")?;
    let frames = check_stats(&t).blob_count;
    t.compact().map_err(|e| format!("final compact: {e:?}"))?;
    check_all(&t, &m, "final state after compact")?;
    for (k, v) in &m {
        if t.get(k).unwrap().as_ref() != Some(v) {
            return Err(format!(
                "final get of {:?} differs",
                String::from_utf8_lossy(k)
            ));
        }
    }
    Ok(frames)
}

fn pt_config(cases: u32, seed: u64) -> PtConfig {
    PtConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_time: 120_000,
        ..PtConfig::default()
    }
}

#[test]
fn proptest_tree_matches_btreemap_model() {
    let mut runner = TestRunner::new(pt_config(48, 0x0401_d5ee_d001));
    let multi = AtomicU32::new(0);
    runner
        .run(&prop::collection::vec(op(), 1..300), |ops| {
            let frames = run_ops(&ops).map_err(TestCaseError::fail)?;
            if frames > 1 {
                multi.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    let multi = multi.into_inner();
    eprintln!("proptest: {multi} of 48 cases ended with more than one frame");
    assert!(multi > 0, "the generator must produce multi-frame trees");
}

/// Many small ops on a tiny key space: maximal collisions, prefix
/// relations and rename chains.
#[test]
fn proptest_small_keyspace_small_values() {
    fn small_key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![0u8, b'a', b'/']), 0..4)
    }
    fn small_sel() -> impl Strategy<Value = Sel> {
        prop_oneof![
            small_key().prop_map(Sel::Key),
            any::<usize>().prop_map(Sel::Existing)
        ]
    }
    let small_val = (any::<u8>(), 0usize..8);
    let op = prop_oneof![
        6 => (small_key(), small_val.clone()).prop_map(|(k, v)| Op::Put(k, v)),
        3 => small_sel().prop_map(Op::Delete),
        3 => small_sel().prop_map(Op::Get),
        4 => (small_sel(), small_key(), any::<bool>()).prop_map(|(s, d, f)| Op::Rename(s, d, f)),
        3 => prop::collection::vec(
            prop_oneof![
                (small_key(), small_val.clone()).prop_map(|(k, v)| TOp::Put(k, v)),
                small_sel().prop_map(TOp::Delete),
                (small_sel(), small_key(), any::<bool>()).prop_map(|(s, d, f)| TOp::Rename(s, d, f)),
                (any::<usize>(), small_key(), any::<bool>()).prop_map(|(n, d, f)| TOp::RenameBatchPut(n, d, f)),
            ],
            0..6
        )
        .prop_map(Op::Txn),
        4 => ((small_sel(), any::<usize>()), prop::option::of(small_sel()), prop::sample::select(vec![None, Some(b'/'), Some(0u8), Some(b'a')]))
            .prop_map(|(prefix, start_after, delim)| Op::Range { prefix, start_after, delim }),
        1 => Just(Op::Compact),
    ];
    let mut runner = TestRunner::new(pt_config(64, 0x5eed_0002));
    runner
        .run(&prop::collection::vec(op, 1..200), |ops| {
            run_ops(&ops).map(|_| ()).map_err(TestCaseError::fail)
        })
        .unwrap();
}

// ------------------------------------------------------ dedicated checks

#[test]
fn large_values_force_multiple_frames_and_survive_merge() {
    let t = mem_tree();
    let mut m = Model::new();
    for i in 0..120u32 {
        let k = format!("big/{:02}/obj{i:04}", i % 7).into_bytes();
        let v = val(i as u8, 30_000 + (i as usize * 997) % 35_000);
        t.put(&k, &v).unwrap();
        m.insert(k, v);
    }
    for i in 0..2000u32 {
        let k = format!("small/{:02}/f{i:05}", i % 13).into_bytes();
        let v = val(i as u8, (i as usize * 7) % 60);
        t.put(&k, &v).unwrap();
        m.insert(k, v);
    }
    let st = check_stats(&t);
    assert!(
        st.blob_count > 1,
        "3.6 MB of data must span several frames, got {}",
        st.blob_count
    );
    check_all(&t, &m, "after load").unwrap();
    let before = st.blob_count;

    // Delete most of it, compact: frames must fold back.
    let keys: Vec<Vec<u8>> = m.keys().cloned().collect();
    for (n, k) in keys.iter().enumerate() {
        if n % 10 != 0 {
            assert_eq!(t.delete(k).unwrap(), m.remove(k));
        }
    }
    check_all(&t, &m, "after deletes").unwrap();
    t.compact().unwrap();
    check_all(&t, &m, "after compact").unwrap();
    let st = check_stats(&t);
    assert!(
        st.blob_count < before,
        "compact after deleting 90% must free frames: {} -> {}",
        before,
        st.blob_count
    );
    for (k, v) in &m {
        assert_eq!(t.get(k).unwrap().as_ref(), Some(v));
    }
    // Delete the rest: back to one frame.
    for k in m.keys() {
        t.delete(k).unwrap();
    }
    t.compact().unwrap();
    let st = check_stats(&t);
    assert_eq!(st.blob_count, 1);
    assert!(actual_range(&t, b"", None, None).is_empty());
}

#[test]
fn rename_missing_src_is_not_found_and_changes_nothing() {
    let t = mem_tree();
    t.put(b"a", b"1").unwrap();
    t.put(b"b", b"2").unwrap();
    assert!(matches!(t.rename(b"zz", b"a", true), Err(Error::NotFound)));
    assert!(matches!(
        t.rename(b"zz", b"zz", false),
        Err(Error::NotFound)
    ));
    assert!(matches!(t.rename(b"zz", b"c", false), Err(Error::NotFound)));
    assert_eq!(t.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(t.get(b"zz").unwrap(), None);
    assert_eq!(t.get(b"c").unwrap(), None);
    let mut m = Model::new();
    m.insert(b"a".to_vec(), b"1".to_vec());
    m.insert(b"b".to_vec(), b"2".to_vec());
    check_all(&t, &m, "after failed renames").unwrap();
}

#[test]
fn rename_onto_existing_dst_without_force_is_dst_exists() {
    let t = mem_tree();
    t.put(b"a", b"1").unwrap();
    t.put(b"b", b"2").unwrap();
    assert!(matches!(t.rename(b"a", b"b", false), Err(Error::DstExists)));
    assert_eq!(t.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(t.get(b"b").unwrap(), Some(b"2".to_vec()));
    // src == dst is a no-op even without force.
    t.rename(b"a", b"a", false).unwrap();
    assert_eq!(t.get(b"a").unwrap(), Some(b"1".to_vec()));
    // force overwrites.
    t.rename(b"a", b"b", true).unwrap();
    assert_eq!(t.get(b"a").unwrap(), None);
    assert_eq!(t.get(b"b").unwrap(), Some(b"1".to_vec()));
    // Rename to a key that is a prefix / an extension of the source.
    t.rename(b"b", b"", false).unwrap();
    t.rename(b"", b"\0", false).unwrap();
    t.rename(b"\0", b"\0\0", false).unwrap();
    let all = actual_range(&t, b"", None, None);
    assert_eq!(all, vec![Ent::Key(b"\0\0".to_vec(), b"1".to_vec())]);
}

#[test]
fn oversize_key_is_key_too_long_and_tree_unchanged() {
    let t = mem_tree();
    t.put(b"k", b"v").unwrap();
    let long = vec![b'x'; 65_536];
    match t.put(&long, b"v") {
        Err(Error::KeyTooLong { len }) => assert_eq!(len, 65_536),
        other => panic!("want KeyTooLong, got {other:?}"),
    }
    let e = t.put(&long, b"v").unwrap_err();
    assert_eq!(e.to_string(), "key too long (65536 bytes; max 65535)");
    match t.rename(b"k", &long, true) {
        Err(Error::KeyTooLong { len }) => assert_eq!(len, 65_536),
        other => panic!("want KeyTooLong, got {other:?}"),
    }
    assert_eq!(t.get(&long).unwrap(), None);
    assert_eq!(t.delete(&long).unwrap(), None);
    assert_eq!(t.get(&long[..65_535]).unwrap(), None);
    assert_eq!(
        actual_range(&t, b"", None, None),
        vec![Ent::Key(b"k".to_vec(), b"v".to_vec())]
    );
    // The maximum sizes themselves work.
    let max_key = vec![b'x'; 65_535];
    let max_val = val(3, 65_535);
    assert_eq!(t.put(&max_key, &max_val).unwrap(), None);
    assert_eq!(t.get(&max_key).unwrap(), Some(max_val.clone()));
    assert_eq!(
        t.get(&long).unwrap(),
        None,
        "oversize key never matches its 65535-byte prefix"
    );
    assert_eq!(t.delete(&long).unwrap(), None);
    assert_eq!(t.get(&max_key).unwrap(), Some(max_val));
}

#[test]
fn oversize_value_is_value_too_long_and_tree_unchanged() {
    let t = mem_tree();
    t.put(b"k", b"v").unwrap();
    match t.put(b"k", &vec![0u8; 65_536]) {
        Err(Error::ValueTooLong { len }) => assert_eq!(len, 65_536),
        other => panic!("want ValueTooLong, got {other:?}"),
    }
    match t.put(b"new", &vec![0u8; 100_000]) {
        Err(Error::ValueTooLong { len }) => assert_eq!(len, 100_000),
        other => panic!("want ValueTooLong, got {other:?}"),
    }
    let e = t.put(b"k", &vec![0u8; 65_536]).unwrap_err();
    assert_eq!(e.to_string(), "value too long (65536 bytes; max 65535)");
    assert_eq!(t.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(t.get(b"new").unwrap(), None);
    assert_eq!(
        actual_range(&t, b"", None, None),
        vec![Ent::Key(b"k".to_vec(), b"v".to_vec())]
    );
}

#[test]
fn failing_txn_changes_nothing() {
    let t = mem_tree();
    t.put(b"a", b"1").unwrap();
    t.put(b"b", b"2").unwrap();
    let mut m = Model::new();
    m.insert(b"a".to_vec(), b"1".to_vec());
    m.insert(b"b".to_vec(), b"2".to_vec());

    // Each batch has valid ops before the failing one.
    let r = t.txn(|b| {
        b.put(b"c", b"3");
        b.delete(b"a");
        b.rename(b"b", b"d", false);
        b.rename(b"missing", b"e", false);
    });
    assert!(matches!(r, Err(Error::NotFound)), "{r:?}");
    check_all(&t, &m, "after NotFound txn").unwrap();

    let r = t.txn(|b| {
        b.put(b"c", b"3");
        b.rename(b"c", b"a", false);
    });
    assert!(matches!(r, Err(Error::DstExists)), "{r:?}");
    check_all(&t, &m, "after DstExists txn").unwrap();

    let r = t.txn(|b| {
        b.delete(b"b");
        b.put(b"c", &vec![0u8; 65_536]);
    });
    assert!(
        matches!(r, Err(Error::ValueTooLong { len: 65_536 })),
        "{r:?}"
    );
    check_all(&t, &m, "after ValueTooLong txn").unwrap();

    let r = t.txn(|b| {
        b.put(b"c", b"3");
        b.put(&vec![b'k'; 70_000], b"3");
    });
    assert!(matches!(r, Err(Error::KeyTooLong { len: 70_000 })), "{r:?}");
    check_all(&t, &m, "after KeyTooLong txn").unwrap();

    let r = t.txn(|b| {
        b.put(b"c", b"3");
        b.rename(b"c", &vec![b'k'; 65_536], false);
    });
    assert!(matches!(r, Err(Error::KeyTooLong { len: 65_536 })), "{r:?}");
    check_all(&t, &m, "after oversize-dst txn").unwrap();

    // Renaming a key deleted earlier in the same batch fails too.
    let r = t.txn(|b| {
        b.delete(b"a");
        b.rename(b"a", b"z", false);
    });
    assert!(matches!(r, Err(Error::NotFound)), "{r:?}");
    check_all(&t, &m, "after rename-of-deleted txn").unwrap();

    // An empty batch is fine.
    t.txn(|_| {}).unwrap();
    check_all(&t, &m, "after empty txn").unwrap();

    // A valid batch: put, rename the put key, rename again, delete.
    t.txn(|b| {
        b.put(b"c", b"3");
        b.rename(b"c", b"d", false);
        b.rename(b"d", b"b", true);
        b.delete(b"a");
        b.put(b"a/x", b"4");
    })
    .unwrap();
    m.remove(b"a".as_slice());
    m.insert(b"b".to_vec(), b"3".to_vec());
    m.insert(b"a/x".to_vec(), b"4".to_vec());
    check_all(&t, &m, "after good txn").unwrap();
}

#[test]
fn get_and_delete_of_oversize_key_are_none() {
    let t = mem_tree();
    for len in [65_536usize, 65_537, 200_000] {
        let k = vec![0u8; len];
        assert_eq!(t.get(&k).unwrap(), None);
        assert_eq!(t.delete(&k).unwrap(), None);
    }
    assert!(actual_range(&t, b"", None, None).is_empty());
}

#[test]
fn delimiter_rollup_rules_on_fixed_keys() {
    let t = mem_tree();
    let mut m = Model::new();
    for k in [
        &b""[..],
        b"/",
        b"/lead",
        b"a",
        b"a/",
        b"a/1",
        b"a/2",
        b"a/2/x",
        b"a\0",
        b"ab",
        b"b",
        b"c/x/y",
        b"c/z",
        b"\0",
        b"\0/",
    ] {
        t.put(k, k).unwrap();
        m.insert(k.to_vec(), k.to_vec());
    }
    let prefixes: [&[u8]; 8] = [b"", b"a", b"a/", b"a/2", b"c/", b"zz", b"/", b"\0"];
    let starts: [Option<&[u8]>; 7] = [
        None,
        Some(b""),
        Some(b"a/1"),
        Some(b"a"),
        Some(b"a/2/x"),
        Some(b"b"),
        Some(b"\xff"),
    ];
    for p in prefixes {
        for sa in starts {
            for d in [None, Some(b'/'), Some(0u8), Some(b'a')] {
                let want = expected_range(&m, p, sa, d);
                let got = actual_range(&t, p, sa, d);
                if let Some(s) = diff(
                    &format!("prefix={p:?} start_after={sa:?} delim={d:?}"),
                    &got,
                    &want,
                ) {
                    panic!("{s}");
                }
            }
        }
    }
}

/// Runs of leaf children, which the range walk emits in one loop straight
/// from the frame: directory `d/` holds 40 one-byte names (leaves of one
/// wide node), broken by a subdirectory (`d/m/..`, an inner child), a key
/// that is a prefix of another (`d/k`, `d/kk`), leaves whose own suffix
/// holds the delimiter (`d/q/1`, `d/r/2/3`) and a leaf whose branch byte
/// is the delimiter (`d//x`). Every prefix, lower bound, delimiter and
/// limit (cutting each run at every point, through the iterator and
/// `for_each`) must list what the model lists.
///
/// Deliberate bugs tried, each failing here: the run's keys pushed
/// without the branch byte; the run's cursor not advanced past an emitted
/// leaf (keys listed twice); the limit not checked inside the run.
#[test]
fn leaf_runs_match_model_at_every_cut() {
    let t = mem_tree();
    let mut m = Model::new();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for c in (b'0'..=b'9').chain(b'A'..=b'Z').chain(b'a'..=b'd') {
        keys.push(vec![b'd', b'/', c]);
    }
    for k in [
        &b"d/m/x"[..],
        b"d/m/y",
        b"d/k",
        b"d/kk",
        b"d/q/1",
        b"d/r/2/3",
        b"d//x",
        b"d",
        b"e/1",
    ] {
        keys.push(k.to_vec());
    }
    for k in &keys {
        let v = val(k[k.len() - 1], 3 + k.len() * 5);
        t.put(k, &v).unwrap();
        m.insert(k.clone(), v);
    }
    let prefixes: [&[u8]; 4] = [b"", b"d", b"d/", b"d/k"];
    let starts: [Option<&[u8]>; 4] = [None, Some(b"d/5"), Some(b"d/k"), Some(b"d/m/")];
    for p in prefixes {
        for sa in starts {
            for d in [None, Some(b'/')] {
                let want = expected_range(&m, p, sa, d);
                let what = format!("prefix={p:?} start_after={sa:?} delim={d:?}");
                if let Some(s) = diff(&what, &actual_range(&t, p, sa, d), &want) {
                    panic!("{s}");
                }
                for n in 1..=want.len() {
                    let cut = &want[..n];
                    let got = limited_range(&t, p, sa, d, Some(n));
                    if let Some(s) = diff(&format!("{what} limit={n}"), &got, cut) {
                        panic!("{s}");
                    }
                    let got = visited_range(builder(&t, p, sa, d, Some(n)), None);
                    if let Some(s) = diff(&format!("{what} for_each limit={n}"), &got, cut) {
                        panic!("{s}");
                    }
                }
            }
        }
    }
}

// ------------------------------------------- large deterministic seeded run

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

fn rnd_key(r: &mut XorShift) -> Vec<u8> {
    const SEGS: [&str; 8] = ["a", "b", "c", "ab", "abc", "x\0y", "", "dir"];
    match r.below(20) {
        0..=13 => {
            let n = 1 + r.below(4);
            (0..n)
                .map(|_| SEGS[r.below(SEGS.len())])
                .collect::<Vec<_>>()
                .join("/")
                .into_bytes()
        }
        14..=17 => {
            const B: [u8; 6] = [0, 0, 1, b'/', b'a', 0xff];
            (0..r.below(7)).map(|_| B[r.below(B.len())]).collect()
        }
        18 => Vec::new(),
        _ => {
            let mut k = vec![b'L'; [300, 1500, 4000][r.below(3)]];
            k.extend(format!("{}/{}", r.below(10), r.below(10)).into_bytes());
            k
        }
    }
}

fn rnd_val(r: &mut XorShift) -> (u8, usize) {
    let len = match r.below(100) {
        0..=84 => r.below(40),
        85..=97 => 40 + r.below(3000),
        _ => 3000 + r.below(MAX - 3000 + 1),
    };
    (r.next() as u8, len)
}

fn rnd_sel(r: &mut XorShift) -> Sel {
    if r.below(5) < 3 {
        Sel::Existing(r.next() as usize)
    } else {
        Sel::Key(rnd_key(r))
    }
}

fn rnd_op(r: &mut XorShift) -> Op {
    match r.below(100) {
        0..=39 => Op::Put(rnd_key(r), rnd_val(r)),
        40..=54 => Op::Delete(rnd_sel(r)),
        55..=69 => Op::Get(rnd_sel(r)),
        70..=79 => Op::Rename(rnd_sel(r), rnd_key(r), r.below(2) == 0),
        80..=89 => {
            let n = r.below(6);
            let tops = (0..n)
                .map(|_| match r.below(20) {
                    0..=7 => TOp::Put(rnd_key(r), rnd_val(r)),
                    8..=10 => TOp::Delete(rnd_sel(r)),
                    11..=13 => TOp::Rename(rnd_sel(r), rnd_key(r), r.below(2) == 0),
                    14..=18 => TOp::RenameBatchPut(r.next() as usize, rnd_key(r), r.below(2) == 0),
                    _ => TOp::PutOversizeValue(rnd_key(r)),
                })
                .collect();
            Op::Txn(tops)
        }
        90..=98 => {
            const D: [Option<u8>; 5] = [None, Some(b'/'), Some(b'/'), Some(0), Some(b'a')];
            let start_after = if r.below(2) == 0 {
                Some(rnd_sel(r))
            } else {
                None
            };
            Op::Range {
                prefix: (rnd_sel(r), r.next() as usize),
                start_after,
                delim: D[r.below(D.len())],
            }
        }
        _ => Op::GetDeleteOversize,
    }
}

#[test]
fn seeded_100k_ops_match_model() {
    let t = mem_tree();
    let mut m = Model::new();
    let mut r = XorShift(0xA076_1D64_78BD_642F);
    let mut max_blobs = 0;
    for i in 0..100_000usize {
        let op = rnd_op(&mut r);
        if let Err(e) = step(&t, &mut m, &op, i) {
            panic!("{e}");
        }
        if i % 10_000 == 9_999 {
            check_all(&t, &m, &format!("full check at op {i}")).unwrap();
            let st = check_stats(&t);
            max_blobs = max_blobs.max(st.blob_count);
            t.compact().unwrap();
            check_all(&t, &m, &format!("after compact at op {i}")).unwrap();
        }
    }
    eprintln!(
        "seeded run: {} keys at the end, at most {max_blobs} frames",
        m.len()
    );
    for (k, v) in &m {
        assert_eq!(t.get(k).unwrap().as_ref(), Some(v));
    }
}

/// `for_each`'s closure runs outside the tree's latches: it may list the
/// tree again (a nested `for_each`, which must not share the outer call's
/// reused batch) and write to it, without deadlock and without disturbing
/// the outer listing of the keys that exist throughout.
///
/// Deliberate bug caught: keeping the per-thread batch in a `RefCell`
/// borrowed for the whole call (instead of taking it out): the nested call
/// then panics with "already borrowed".
#[test]
fn for_each_closure_may_list_and_write_the_tree() {
    let t = mem_tree();
    let mut m = Model::new();
    for i in 0..300u32 {
        let k = format!("a/{i:04}").into_bytes();
        t.put(&k, &val(i as u8, 40)).unwrap();
        m.insert(k, val(i as u8, 40));
    }
    let mut outer = Vec::new();
    t.range()
        .prefix(b"a/")
        .for_each(|e| {
            let RangeEntryRef::Key { key, value } = e else {
                panic!("no delimiter: {e:?}");
            };
            outer.push(Ent::Key(key.to_vec(), value.to_vec()));
            if outer.len() % 50 == 1 {
                let inner = visited_range(builder(&t, b"a/", Some(key), None, Some(7)), None);
                let want: Vec<Ent> = expected_range(&m, b"a/", Some(key), None)
                    .into_iter()
                    .take(7)
                    .collect();
                assert_eq!(inner, want, "nested listing after {key:?}");
                t.put(format!("b/{}", outer.len()).as_bytes(), b"x")
                    .unwrap();
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(outer, expected_range(&m, b"a/", None, None));
    assert_eq!(t.scan_prefix(b"b/").into_iter().count(), 6);
}
