//! An S3-style object catalog: put object metadata, list one level with a
//! delimiter, and page through a prefix with `start_after`.
//!
//! Run with `cargo run --release -p holt --example object_catalog`.

use holt::{RangeEntry, Tree, TreeConfig};

fn show(entry: &RangeEntry) -> String {
    match entry {
        RangeEntry::Key { key, value } => format!(
            "  {}  ({} bytes of metadata)",
            String::from_utf8_lossy(key),
            value.len()
        ),
        RangeEntry::CommonPrefix(p) => format!("  {}  (prefix)", String::from_utf8_lossy(p)),
        _ => "  (unknown entry)".to_string(),
    }
}

fn main() -> holt::Result<()> {
    let tree = Tree::open(TreeConfig::memory())?;

    // Object names are path-shaped: bucket/tenant/year/month/object.
    for tenant in 0..3 {
        for month in 1..=3 {
            for obj in 0..4 {
                let key = format!("photos/tenant-{tenant}/2025/{month:02}/img-{obj:04}.jpg");
                let meta = format!(r#"{{"size":{},"etag":"{obj:08x}"}}"#, 1000 + obj);
                tree.put(key.as_bytes(), meta.as_bytes())?;
            }
        }
        let manifest = format!("photos/tenant-{tenant}/manifest.json");
        tree.put(manifest.as_bytes(), b"{}")?;
    }

    // ListObjectsV2 with delimiter "/": one level below "photos/tenant-1/".
    println!("one level under photos/tenant-1/:");
    let level: Vec<RangeEntry> = tree
        .range()
        .prefix(b"photos/tenant-1/")
        .delimiter(b'/')
        .into_iter()
        .collect::<holt::Result<_>>()?;
    for e in &level {
        println!("{}", show(e));
    }
    assert_eq!(level.len(), 2); // "2025/" and "manifest.json"

    // Page through one month, three keys per page, resuming after the
    // last key of the previous page.
    let prefix = b"photos/tenant-2/2025/02/";
    let mut after: Option<Vec<u8>> = None;
    let mut page_no = 0;
    loop {
        let mut range = tree.scan_prefix(prefix);
        if let Some(a) = &after {
            range = range.start_after(a);
        }
        let page: Vec<RangeEntry> = range.into_iter().take(3).collect::<holt::Result<_>>()?;
        if page.is_empty() {
            break;
        }
        page_no += 1;
        println!("page {page_no}:");
        for e in &page {
            println!("{}", show(e));
            if let RangeEntry::Key { key, .. } = e {
                after = Some(key.clone());
            }
        }
    }
    assert_eq!(page_no, 2); // 4 objects, 3 per page

    let stats = tree.stats()?;
    println!(
        "{} frame(s), {} bytes used",
        stats.blob_count, stats.total_space_used
    );
    Ok(())
}
