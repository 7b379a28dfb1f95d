//! Filesystem metadata: directory entries keyed by full path, a rename of
//! a file, and listing a directory.
//!
//! Run with `cargo run --release -p holt --example fs_metadata`.

use holt::{RangeEntry, Tree, TreeConfig};

/// A tiny inode record: inode number, mode, size.
fn inode(ino: u64, mode: u32, size: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&ino.to_le_bytes());
    v.extend_from_slice(&mode.to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
    v
}

fn list_dir(tree: &Tree, dir: &str) -> holt::Result<Vec<String>> {
    tree.range()
        .prefix(dir.as_bytes())
        .delimiter(b'/')
        .into_iter()
        .map(|e| {
            Ok(match e? {
                RangeEntry::Key { key, .. } => {
                    String::from_utf8_lossy(&key[dir.len()..]).into_owned()
                }
                RangeEntry::CommonPrefix(p) => {
                    String::from_utf8_lossy(&p[dir.len()..]).into_owned()
                }
                _ => String::new(),
            })
        })
        .collect()
}

fn main() -> holt::Result<()> {
    let tree = Tree::open(TreeConfig::memory())?;
    let mut ino = 100;
    for path in [
        "/home/u1/src/main.rs",
        "/home/u1/src/lib.rs",
        "/home/u1/src/util/fmt.rs",
        "/home/u1/notes.md",
        "/home/u2/todo.txt",
    ] {
        ino += 1;
        tree.put(path.as_bytes(), &inode(ino, 0o100_644, 42))?;
    }

    println!(
        "ls /home/u1/src/ -> {:?}",
        list_dir(&tree, "/home/u1/src/")?
    );

    // mv /home/u1/notes.md /home/u1/src/NOTES.md (atomic; refuses to
    // overwrite unless forced).
    tree.rename(b"/home/u1/notes.md", b"/home/u1/src/NOTES.md", false)?;
    let err = tree.rename(b"/home/u1/src/lib.rs", b"/home/u1/src/main.rs", false);
    assert!(matches!(err, Err(holt::Error::DstExists)));

    let listing = list_dir(&tree, "/home/u1/src/")?;
    println!("after mv:       {listing:?}");
    assert_eq!(listing, ["NOTES.md", "lib.rs", "main.rs", "util/"]);
    assert_eq!(list_dir(&tree, "/home/u1/")?, ["src/"]);

    // rm -r /home/u1/src/util/ as one atomic batch.
    let doomed: Vec<Vec<u8>> = tree
        .scan_prefix(b"/home/u1/src/util/")
        .into_iter()
        .filter_map(|e| match e {
            Ok(RangeEntry::Key { key, .. }) => Some(Ok(key)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<holt::Result<_>>()?;
    tree.txn(|b| {
        for k in &doomed {
            b.delete(k);
        }
    })?;
    println!("after rm -r:    {:?}", list_dir(&tree, "/home/u1/src/")?);
    Ok(())
}
