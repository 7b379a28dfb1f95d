#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `Tree::get_into` answers exactly as `Tree::get` while reusing one
//! buffer, across frame links.
//!
//! Deliberate bugs this catches: the walk appending the value to the
//! caller's buffer instead of replacing it (a short value read after a
//! long one keeps the long one's tail), and a miss leaving the previous
//! value in the buffer.

use holt::{Tree, TreeConfig};

fn value(i: usize) -> Vec<u8> {
    // Lengths cycle from 0 to 299 bytes, so neighbours differ in length.
    let len = (i * 37) % 300;
    (0..len).map(|j| (i + j) as u8).collect()
}

#[test]
fn get_into_matches_get_with_one_reused_buffer() {
    let tree = Tree::open(TreeConfig::memory()).unwrap();
    let n = 20_000;
    for i in 0..n {
        let k = format!("dir{:02}/sub{:03}/file{i:06}", i % 17, i % 251);
        tree.put(k.as_bytes(), &value(i)).unwrap();
    }
    assert!(tree.stats().unwrap().blob_count >= 3, "keys span frames");
    let mut buf = vec![0xEE; 1000];
    for i in (0..n).chain(n..n + 500) {
        let k = format!("dir{:02}/sub{:03}/file{i:06}", i % 17, i % 251);
        let want = tree.get(k.as_bytes()).unwrap();
        let found = tree.get_into(k.as_bytes(), &mut buf).unwrap();
        assert_eq!(found, want.is_some(), "key {k}");
        assert_eq!(buf, want.unwrap_or_default(), "key {k}");
        if i < n {
            assert_eq!(buf, value(i));
        }
    }
    // A key that ends at an inner node's value slot, and an oversize key.
    tree.put(b"dir01", b"inner").unwrap();
    assert!(tree.get_into(b"dir01", &mut buf).unwrap());
    assert_eq!(buf, b"inner");
    assert!(!tree.get_into(&vec![b'a'; 70_000], &mut buf).unwrap());
    assert!(buf.is_empty());
}
