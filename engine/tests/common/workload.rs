//! The op workload the fault and power-loss suites run: ops, the model
//! they are checked against, and helpers to run and compare them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use holt::{RangeEntry, Tree};

/// Expected tree contents. Values are shared, so keeping one model per
/// prefix of a workload is cheap.
pub type Model = BTreeMap<Vec<u8>, Arc<Vec<u8>>>;

#[derive(Clone)]
pub enum Op {
    Put(Vec<u8>, Arc<Vec<u8>>),
    Delete(Vec<u8>),
    Rename(Vec<u8>, Vec<u8>, bool),
    Txn(Vec<Op>),
    Checkpoint,
}

/// A key or value for messages: long ones cut, with their length.
pub fn short(b: &[u8]) -> String {
    if b.len() > 24 {
        format!("{}..({} B)", String::from_utf8_lossy(&b[..16]), b.len())
    } else {
        String::from_utf8_lossy(b).into_owned()
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put(k, v) => write!(f, "put({}, {})", short(k), short(v)),
            Op::Delete(k) => write!(f, "delete({})", short(k)),
            Op::Rename(s, d, force) => write!(f, "rename({}, {}, {force})", short(s), short(d)),
            Op::Txn(ops) => write!(f, "txn{ops:?}"),
            Op::Checkpoint => write!(f, "checkpoint"),
        }
    }
}

/// Applies `op` to `m` as the engine should; `false` (and `m` unchanged)
/// when the engine would refuse it.
pub fn apply(m: &mut Model, op: &Op) -> bool {
    match op {
        Op::Put(k, v) => {
            m.insert(k.clone(), Arc::clone(v));
        }
        Op::Delete(k) => {
            m.remove(k);
        }
        Op::Rename(s, d, force) => {
            let Some(v) = m.get(s).cloned() else {
                return false;
            };
            if s == d {
                return true;
            }
            if !force && m.contains_key(d) {
                return false;
            }
            m.remove(s);
            m.insert(d.clone(), v);
        }
        Op::Txn(ops) => {
            let mut view = m.clone();
            for o in ops {
                if !apply(&mut view, o) {
                    return false;
                }
            }
            *m = view;
        }
        Op::Checkpoint => {}
    }
    true
}

/// Runs `op` on the tree.
pub fn run(t: &Tree, op: &Op) -> holt::Result<()> {
    match op {
        Op::Put(k, v) => t.put(k, v).map(|_| ()),
        Op::Delete(k) => t.delete(k).map(|_| ()),
        Op::Rename(s, d, force) => t.rename(s, d, *force),
        Op::Txn(ops) => t.txn(|b| {
            for o in ops {
                match o {
                    Op::Put(k, v) => b.put(k, v),
                    Op::Delete(k) => b.delete(k),
                    Op::Rename(s, d, f) => b.rename(s, d, *f),
                    other => panic!("not a txn op: {other:?}"),
                }
            }
        }),
        Op::Checkpoint => t.checkpoint(),
    }
}

/// The whole tree as a [`Model`].
pub fn dump(t: &Tree) -> holt::Result<Model> {
    let mut m = Model::new();
    for e in t.range() {
        match e? {
            RangeEntry::Key { key, value } => {
                m.insert(key, Arc::new(value));
            }
            other => panic!("unexpected entry {other:?}"),
        }
    }
    Ok(m)
}

/// A readable diff of two models (at most 12 lines).
pub fn diff(want: &Model, got: &Model) -> String {
    let mut out = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => out.push(format!("  missing {}", short(k))),
            Some(g) if g != v => out.push(format!(
                "  {}: want {} got {}",
                short(k),
                short(v),
                short(g)
            )),
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            out.push(format!("  extra {} = {}", short(k), short(v)));
        }
    }
    let n = out.len();
    if n > 12 {
        out.truncate(12);
        out.push(format!("  ... {} more", n - 12));
    }
    out.join("\n")
}

/// `t.get(k)` with the value shared, to compare with a [`Model`] entry.
pub fn get(t: &Tree, k: &[u8]) -> holt::Result<Option<Arc<Vec<u8>>>> {
    Ok(t.get(k)?.map(Arc::new))
}

/// The whole tree with plain values (suites that keep their own model).
pub fn dump_plain(t: &Tree) -> holt::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut m = BTreeMap::new();
    for e in t.range() {
        match e? {
            RangeEntry::Key { key, value } => {
                m.insert(key, value);
            }
            other => panic!("unexpected entry {other:?}"),
        }
    }
    Ok(m)
}
