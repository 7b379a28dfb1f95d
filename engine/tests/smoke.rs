#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;

use holt::{RangeEntry, Tree, TreeConfig};

fn mem() -> Tree {
    let mut cfg = TreeConfig::memory();
    cfg.memory_flush_on_write = false;
    Tree::open(cfg).unwrap()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn same(a: &[Vec<u8>], b: &[Vec<u8>]) {
    if a != b {
        let i = a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "lists differ: len {} vs {}, first at {i}: {:?} vs {:?}",
            a.len(),
            b.len(),
            a.get(i).map(|k| String::from_utf8_lossy(k).into_owned()),
            b.get(i).map(|k| String::from_utf8_lossy(k).into_owned())
        );
    }
}

fn keys(t: &Tree, prefix: &[u8]) -> Vec<Vec<u8>> {
    t.scan_prefix(prefix)
        .into_iter()
        .map(|e| match e.unwrap() {
            RangeEntry::Key { key, .. } => key,
            RangeEntry::CommonPrefix(p) => p,
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn basic_put_get_delete() {
    let t = mem();
    assert_eq!(t.put(b"a", b"1").unwrap(), None);
    assert_eq!(t.put(b"a\0", b"2").unwrap(), None);
    assert_eq!(t.put(b"ab", b"3").unwrap(), None);
    assert_eq!(t.put(b"", b"e").unwrap(), None);
    assert_eq!(t.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(t.get(b"a\0").unwrap(), Some(b"2".to_vec()));
    assert_eq!(t.get(b"ab").unwrap(), Some(b"3".to_vec()));
    assert_eq!(t.get(b"").unwrap(), Some(b"e".to_vec()));
    assert_eq!(
        keys(&t, b""),
        vec![b"".to_vec(), b"a".to_vec(), b"a\0".to_vec(), b"ab".to_vec()]
    );
    assert_eq!(t.delete(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(t.get(b"a").unwrap(), None);
    assert_eq!(t.get(b"ab").unwrap(), Some(b"3".to_vec()));
}

#[test]
fn random_model() {
    let t = mem();
    let mut model = BTreeMap::new();
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..200_000u64 {
        let k = format!("d{}/s{}/f{}", r.next() % 7, r.next() % 50, r.next() % 400).into_bytes();
        match r.next() % 10 {
            0..=5 => {
                let v = vec![(i % 251) as u8; (r.next() % 300) as usize];
                assert_eq!(
                    t.put(&k, &v).unwrap(),
                    model.insert(k.clone(), v),
                    "put {i}"
                );
            }
            6..=8 => {
                assert_eq!(t.delete(&k).unwrap(), model.remove(&k), "delete {i}");
            }
            _ => assert_eq!(t.get(&k).unwrap(), model.get(&k).cloned(), "get {i}"),
        }
    }
    let all: Vec<Vec<u8>> = model.keys().cloned().collect();
    same(&keys(&t, b""), &all);
    let st = t.stats().unwrap();
    eprintln!("frames {} used {}", st.blob_count, st.total_space_used);
    t.compact().unwrap();
    same(&keys(&t, b""), &all);
    for (k, v) in &model {
        assert_eq!(t.get(k).unwrap().as_ref(), Some(v));
    }
    for k in model.keys() {
        t.delete(k).unwrap();
    }
    assert!(keys(&t, b"").is_empty());
    t.compact().unwrap();
    assert_eq!(t.stats().unwrap().blob_count, 1);
}

#[test]
fn delimiter_listing() {
    let t = mem();
    for k in ["a/1", "a/2", "b", "c/x/y", "c/z", "/lead"] {
        t.put(k.as_bytes(), b"v").unwrap();
    }
    let got: Vec<String> = t
        .range()
        .delimiter(b'/')
        .into_iter()
        .map(|e| match e.unwrap() {
            RangeEntry::Key { key, .. } => format!("K:{}", String::from_utf8(key).unwrap()),
            RangeEntry::CommonPrefix(p) => format!("P:{}", String::from_utf8(p).unwrap()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(got, ["P:/", "P:a/", "K:b", "P:c/"]);
    let got: Vec<String> = t
        .range()
        .delimiter(b'/')
        .start_after(b"a/1")
        .into_iter()
        .map(|e| match e.unwrap() {
            RangeEntry::Key { key, .. } => format!("K:{}", String::from_utf8(key).unwrap()),
            RangeEntry::CommonPrefix(p) => format!("P:{}", String::from_utf8(p).unwrap()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(got, ["P:a/", "K:b", "P:c/"]);
}
