#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Pins the public API contract (design/API.md): auto traits, derives,
//! Display texts, configuration defaults and the built-in backends.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use holt::{
    AlignedBlobBuf, Backend, BlobGuid, BlobStats, CheckpointConfig, CheckpointerStats, Error,
    MemoryBackend, PersistentBackend, RangeBuilder, RangeEntry, RangeIter, Storage, Tree,
    TreeBuilder, TreeConfig, TreeStats, TxnBatch,
};

fn assert_send_sync<T: Send + Sync + ?Sized>() {}
fn assert_clone_debug<T: Clone + std::fmt::Debug>() {}
fn assert_copy<T: Copy>() {}
fn assert_default<T: Default>() {}
fn assert_unpin<T: Unpin>() {}
fn assert_backend<T: Backend>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static + From<io::Error>>() {}

#[test]
fn auto_traits_and_derives() {
    assert_send_sync::<Tree>();
    assert_clone_debug::<Tree>();
    assert_unpin::<Tree>();

    assert_send_sync::<TreeBuilder>();
    assert_clone_debug::<TreeBuilder>();

    assert_send_sync::<TreeConfig>();
    assert_clone_debug::<TreeConfig>();
    assert_send_sync::<Storage>();
    assert_clone_debug::<Storage>();
    assert_clone_debug::<CheckpointConfig>();
    assert_default::<CheckpointConfig>();

    assert_error::<Error>();

    assert_send_sync::<RangeBuilder>();
    assert_send_sync::<RangeIter>();
    assert_send_sync::<RangeEntry>();
    assert_clone_debug::<RangeEntry>();

    assert_clone_debug::<BlobStats>();
    assert_copy::<BlobStats>();
    assert_clone_debug::<TreeStats>();
    assert_clone_debug::<CheckpointerStats>();
    assert_copy::<CheckpointerStats>();

    assert_send_sync::<TxnBatch>();
    assert_default::<TxnBatch>();
    let _ = format!("{:?}", TxnBatch::default());

    assert_copy::<BlobGuid>();
    assert_default::<BlobGuid>();

    assert_send_sync::<AlignedBlobBuf>();
    assert_clone_debug::<AlignedBlobBuf>();
    assert_default::<AlignedBlobBuf>();

    assert_send_sync::<dyn Backend>();
    assert_send_sync::<MemoryBackend>();
    assert_backend::<MemoryBackend>();
    assert_default::<MemoryBackend>();
    let _ = format!("{:?}", MemoryBackend::new());
    assert_send_sync::<PersistentBackend>();
    assert_backend::<PersistentBackend>();
}

#[test]
fn module_paths_resolve() {
    let _: holt::api::builder::TreeBuilder = TreeBuilder::new("x");
    let _: holt::api::config::TreeConfig = TreeConfig::memory();
    let _: holt::api::errors::Result<()> = Ok(());
    let _: holt::api::txn::TxnBatch = TxnBatch::default();
    let _: Option<holt::api::stats::CheckpointerStats> = None;
    let _: Option<holt::api::range::RangeEntry> = None;
    let _: Option<holt::api::tree::Tree> = None;
}

#[test]
fn error_display_texts() {
    let cases: Vec<(Error, &str)> = vec![
        (
            Error::BackendIo(io::Error::other("disk gone")),
            "backend I/O: disk gone",
        ),
        (
            Error::KeyTooLong { len: 70_000 },
            "key too long (70000 bytes; max 65535)",
        ),
        (
            Error::ValueTooLong { len: 65_536 },
            "value too long (65536 bytes; max 65535)",
        ),
        (Error::NotYetImplemented("x"), "not yet implemented: x"),
        (
            Error::Internal("bad state"),
            "internal invariant violated: bad state",
        ),
        (Error::node_corrupt("leaf"), "node corrupt at leaf"),
        (
            Error::ReplaySanityFailed {
                context: "crc",
                record_offset: 4096,
            },
            "WAL replay sanity-check failed at offset 4096: crc",
        ),
        (Error::NotFound, "key not found"),
        (
            Error::DstExists,
            "destination key already exists (use force=true to overwrite)",
        ),
        (
            Error::Locked {
                dir: PathBuf::from("/data/t"),
            },
            "directory \"/data/t\" is locked by another holt handle or process",
        ),
        (
            Error::Poisoned,
            "tree is poisoned after a failed durable write; reopen it to write again",
        ),
        (
            Error::Corrupt {
                file: PathBuf::from("manifest"),
                offset: 12,
                context: "bad magic",
            },
            "corruption in \"manifest\" at offset 12: bad magic",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}

#[test]
fn error_alloc_free_variants_exist() {
    fn is_slot_error(e: &Error) -> bool {
        matches!(e, Error::Alloc(_) | Error::Free(_))
    }
    assert!(!is_slot_error(&Error::NotFound));
}

#[test]
fn error_source_and_from() {
    use std::error::Error as _;
    let e: Error = io::Error::new(io::ErrorKind::PermissionDenied, "nope").into();
    assert!(
        matches!(&e, Error::BackendIo(inner) if inner.kind() == io::ErrorKind::PermissionDenied)
    );
    assert_eq!(e.source().unwrap().to_string(), "nope");
    assert!(Error::DstExists.source().is_none());
    assert!(Error::Poisoned.source().is_none());
}

#[test]
fn node_corrupt_context() {
    let mut guid = [0u8; 16];
    guid[..4].copy_from_slice(&[0xab, 0xcd, 0xef, 0x01]);
    let e = Error::node_corrupt("node48 index")
        .with_blob_guid(guid)
        .with_slot(42);
    assert_eq!(
        e.to_string(),
        "node corrupt at node48 index (blob=[ab, cd, ef, 01]) (slot=42)"
    );
    match e {
        Error::NodeCorrupt {
            context,
            blob_guid,
            slot,
        } => {
            assert_eq!(context, "node48 index");
            assert_eq!(blob_guid, Some(guid));
            assert_eq!(slot, Some(42));
        }
        other => panic!("unexpected {other:?}"),
    }

    // Only fills empty fields.
    let e = Error::node_corrupt("a")
        .with_slot(1)
        .with_slot(2)
        .with_blob_guid([1; 16]);
    let e = e.with_blob_guid([2; 16]);
    assert_eq!(
        e.to_string(),
        "node corrupt at a (blob=[01, 01, 01, 01]) (slot=1)"
    );
    assert_eq!(
        Error::node_corrupt("b")
            .with_blob_guid([0xff; 16])
            .to_string(),
        "node corrupt at b (blob=[ff, ff, ff, ff])"
    );

    // No-op on other variants.
    let e = Error::NotFound.with_blob_guid([7; 16]).with_slot(3);
    assert!(matches!(e, Error::NotFound));
    assert_eq!(e.to_string(), "key not found");
    let e = Error::Internal("x").with_slot(3);
    assert_eq!(e.to_string(), "internal invariant violated: x");
}

#[test]
fn config_defaults() {
    let cfg = TreeConfig::new("/data/tree");
    assert!(matches!(&cfg.storage, Storage::Persistent { dir } if dir == Path::new("/data/tree")));
    assert_eq!(cfg.buffer_pool_size, 64);
    assert!(!cfg.wal_sync_on_commit);
    assert!(cfg.memory_flush_on_write);
    assert!(!cfg.is_memory());
    assert_eq!(
        cfg.wal_path(),
        Some(PathBuf::from("/data/tree/journal.wal"))
    );

    let mem = TreeConfig::memory();
    assert!(matches!(mem.storage, Storage::Memory));
    assert!(mem.is_memory());
    assert_eq!(mem.wal_path(), None);
    assert_eq!(mem.buffer_pool_size, 64);
    assert!(!mem.wal_sync_on_commit);
    assert!(mem.memory_flush_on_write);
    assert!(!mem.checkpoint.enabled);

    let c = CheckpointConfig::default();
    assert!(!c.enabled);
    assert_eq!(c.idle_interval, Duration::from_millis(100));
    assert_eq!(c.dirty_blob_threshold, 16);
    assert!(c.auto_merge);
    assert_eq!(c.eviction_interval, Duration::from_secs(1));
    assert_eq!(c.eviction_idle_ticks, 1024);
    assert_eq!(c.io_queue_capacity, 16);

    let e = CheckpointConfig::enabled();
    assert!(e.enabled);
    assert_eq!(e.idle_interval, c.idle_interval);
    assert_eq!(e.io_queue_capacity, c.io_queue_capacity);

    // Struct literal with functional update must keep compiling.
    let custom = CheckpointConfig {
        enabled: true,
        dirty_blob_threshold: 4,
        ..CheckpointConfig::default()
    };
    assert_eq!(custom.dirty_blob_threshold, 4);
}

#[test]
fn builder_debug_and_setters() {
    let b = TreeBuilder::new("/d")
        .buffer_pool_size(3)
        .wal_sync_on_commit(true)
        .checkpoint(CheckpointConfig::enabled())
        .memory();
    let text = format!("{b:?}");
    assert!(
        text.starts_with("TreeBuilder { cfg: TreeConfig {"),
        "{text}"
    );
    assert!(text.contains("storage: Memory"), "{text}");
    assert!(text.contains("buffer_pool_size: 3"), "{text}");
    assert!(text.contains("wal_sync_on_commit: true"), "{text}");
    let _clone = b.clone();
}

#[test]
fn txn_batch_queues() {
    let mut b = TxnBatch::default();
    assert!(b.is_empty());
    assert_eq!(b.len(), 0);
    b.put(b"k", b"v");
    b.delete(b"missing");
    b.rename(b"k", b"k2", false);
    b.put(b"", b"");
    assert_eq!(b.len(), 4);
    assert!(!b.is_empty());
}

fn frame(fill: u8) -> AlignedBlobBuf {
    let mut buf = AlignedBlobBuf::zeroed();
    buf.as_mut_slice().fill(fill);
    buf
}

fn exercise_backend(backend: &dyn Backend) {
    let g1: BlobGuid = [1; 16];
    let g2: BlobGuid = [2; 16];
    let mut out = AlignedBlobBuf::uninit();

    // Missing read: BackendIo(NotFound).
    match backend.read_blob(g1, &mut out) {
        Err(Error::BackendIo(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!backend.has_blob(g1).unwrap());

    backend.write_blob(g2, &frame(0x22)).unwrap();
    backend.write_blob(g1, &frame(0x11)).unwrap();
    backend.flush().unwrap();
    assert!(backend.has_blob(g1).unwrap());
    assert_eq!(backend.list_blobs().unwrap(), vec![g1, g2]);

    backend.read_blob(g1, &mut out).unwrap();
    assert!(out.as_slice().iter().all(|&b| b == 0x11));

    // Overwrite.
    backend.write_blob(g1, &frame(0x33)).unwrap();
    backend.read_blob(g1, &mut out).unwrap();
    assert!(out.as_slice().iter().all(|&b| b == 0x33));

    // Delete, twice (the second is a no-op).
    backend.delete_blob(g1).unwrap();
    backend.delete_blob(g1).unwrap();
    assert!(!backend.has_blob(g1).unwrap());
    assert_eq!(backend.list_blobs().unwrap(), vec![g2]);

    // Batched write (provided method).
    let a = frame(0xaa);
    let b = frame(0xbb);
    backend.write_blobs(&[(g1, &a), (g2, &b)]).unwrap();
    backend.read_blob(g2, &mut out).unwrap();
    assert!(out.as_slice().iter().all(|&x| x == 0xbb));
}

#[test]
fn memory_backend_behaviour() {
    let backend = MemoryBackend::new();
    assert!(backend.is_empty());
    assert_eq!(backend.len(), 0);
    exercise_backend(&backend);
    assert_eq!(backend.len(), 2);
    assert!(!backend.is_empty());

    let mut out = AlignedBlobBuf::zeroed();
    match backend.read_blob([0xab; 16], &mut out) {
        Err(Error::BackendIo(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
            assert!(e.to_string().contains("not found"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Usable as a shared trait object.
    let shared: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let clone = Arc::clone(&shared);
    std::thread::spawn(move || {
        clone
            .write_blob([9; 16], &AlignedBlobBuf::zeroed())
            .unwrap();
    })
    .join()
    .unwrap();
    assert!(shared.has_blob([9; 16]).unwrap());
}

#[test]
fn persistent_backend_behaviour() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("data");
    let backend = PersistentBackend::open(&dir).unwrap();
    assert!(dir.is_dir());
    assert_eq!(backend.data_dir(), dir.as_path());
    assert!(backend.is_empty());
    exercise_backend(&backend);
    assert_eq!(backend.len(), 2);
    let _ = format!("{backend:?}");
}

#[test]
fn aligned_blob_buf() {
    let mut a = AlignedBlobBuf::zeroed();
    assert_eq!(a.as_ptr() as usize % 4096, 0);
    assert_eq!(a.len(), 524_288);
    assert!(!a.is_empty());
    assert_eq!(a.as_slice().len(), 524_288);
    assert!(a.as_slice().iter().all(|&b| b == 0));
    assert_eq!(a.as_mut_ptr() as usize % 4096, 0);

    a.as_mut_slice()[100] = 7;
    a.as_mut_slice()[524_287] = 9;
    let c = a.clone();
    assert_ne!(c.as_ptr(), a.as_ptr());
    assert_eq!(c.as_ptr() as usize % 4096, 0);
    assert_eq!(c.as_slice(), a.as_slice());

    let u = AlignedBlobBuf::uninit();
    assert_eq!(u.as_ptr() as usize % 4096, 0);
    assert_eq!(u.len(), 524_288);

    let d = AlignedBlobBuf::default();
    assert!(d.as_slice().iter().all(|&b| b == 0));

    let text = format!("{a:?}");
    assert!(text.starts_with("AlignedBlobBuf(0x"), "{text}");
    assert!(text.ends_with(", 524288 B)"), "{text}");
}

#[test]
fn builder_opens_against_backend() {
    // Only checks that the entry points exist with the contract's types.
    let _: fn(TreeBuilder) -> holt::Result<Tree> = TreeBuilder::open;
    let _: fn(TreeBuilder, Arc<dyn Backend>) -> holt::Result<Tree> = TreeBuilder::open_with_backend;
    let _: fn(TreeConfig) -> holt::Result<Tree> = Tree::open;
}
