#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The driver contract, exercised through `Arc<dyn IoDriver>` on a real
//! filesystem (the temp dir; on this machine `/tmp` is ext4, so `O_DIRECT`
//! is honoured).

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use holt_backend_sync::{AlignedBuf, DirLock, IoDriver, IoFile, OpenOptions, SyncDriver, ALIGN};
use tempfile::TempDir;

const ALIGN_U64: u64 = ALIGN as u64;
const DIRECT: OpenOptions = OpenOptions {
    create: true,
    direct: true,
};
const BUFFERED: OpenOptions = OpenOptions {
    create: true,
    direct: false,
};

fn driver() -> Arc<dyn IoDriver> {
    Arc::new(SyncDriver)
}

fn tmp() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// A page-multiple buffer whose byte `i` is `seed + i` (mod 256).
fn pattern(len: usize, seed: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len).unwrap();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    buf
}

fn open_direct(d: &dyn IoDriver, path: &Path) -> Arc<dyn IoFile> {
    let f = d.open(path, DIRECT).unwrap();
    assert!(
        f.is_direct(),
        "expected O_DIRECT to be honoured on {} (is the temp dir on tmpfs?)",
        path.display()
    );
    f
}

fn read_all_buffered(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn direct_round_trip_survives_reopen() {
    let dir = tmp();
    let d = driver();
    let path = dir.path().join("data");
    let f = open_direct(&*d, &path);
    assert_eq!(f.path(), path);
    assert!(f.is_empty().unwrap());

    let a = pattern(4 * ALIGN, 1);
    let b = pattern(ALIGN, 200);
    f.write_at(&a, 0).unwrap();
    f.write_at(&b, 8 * ALIGN_U64).unwrap();
    f.sync_data().unwrap();
    d.sync_dir(dir.path()).unwrap();
    assert_eq!(f.len().unwrap(), 9 * ALIGN_U64);

    let mut back = AlignedBuf::new(4 * ALIGN).unwrap();
    f.read_at(&mut back, 0).unwrap();
    assert_eq!(&back[..], &a[..]);
    // A hole between the writes reads as zeros.
    let mut hole = pattern(ALIGN, 9);
    f.read_at(&mut hole, 5 * ALIGN_U64).unwrap();
    assert!(hole.iter().all(|&x| x == 0));
    drop(f);

    let opts = OpenOptions {
        create: false,
        direct: true,
    };
    let f = d.open(&path, opts).unwrap();
    assert!(f.is_direct());
    assert_eq!(f.len().unwrap(), 9 * ALIGN_U64, "reopen must not truncate");
    let mut back = AlignedBuf::new(ALIGN).unwrap();
    f.read_at(&mut back, 8 * ALIGN_U64).unwrap();
    assert_eq!(&back[..], &b[..]);
    // Sub-slices on page boundaries qualify too.
    let mut two = AlignedBuf::new(3 * ALIGN).unwrap();
    f.read_at(&mut two[ALIGN..], ALIGN_U64).unwrap();
    assert_eq!(&two[ALIGN..], &a[ALIGN..3 * ALIGN]);
    assert!(two[..ALIGN].iter().all(|&x| x == 0));
}

#[test]
fn misaligned_direct_io_is_rejected_and_writes_nothing() {
    let dir = tmp();
    let d = driver();
    let path = dir.path().join("data");
    let f = open_direct(&*d, &path);
    let good = pattern(2 * ALIGN, 3);
    f.write_at(&good, 0).unwrap();
    f.sync_data().unwrap();
    let before = read_all_buffered(&path);

    let bad = pattern(3 * ALIGN, 77);
    let writes: [(&[u8], u64, &str); 3] = [
        (&bad[..ALIGN], 512, "offset"),
        (&bad[..ALIGN + 100], 0, "length"),
        (&bad[1..=ALIGN], 0, "address"),
    ];
    for (buf, offset, what) in writes {
        let err = f.write_at(buf, offset).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "misaligned {what}");
        let msg = err.to_string();
        assert!(
            msg.contains("O_DIRECT I/O must be 4096-aligned")
                && msg.contains(&format!("offset {offset}"))
                && msg.contains(&format!("len {}", buf.len()))
                && msg.contains("addr 0x"),
            "{msg}"
        );
    }
    assert_eq!(read_all_buffered(&path), before, "nothing may be written");
    assert_eq!(f.len().unwrap(), 2 * ALIGN_U64);

    // Reads are checked the same way and leave the buffer alone.
    let mut out = pattern(2 * ALIGN, 5);
    let err = f.read_at(&mut out[..ALIGN], 100).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = f.read_at(&mut out[..100], 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = f.read_at(&mut out[8..8 + ALIGN], 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(&out[..], &pattern(2 * ALIGN, 5)[..]);

    // One bad entry spoils the whole batch before anything is written.
    let batch: [(u64, &[u8]); 3] = [
        (0, &bad[..ALIGN]),
        (4 * ALIGN_U64, &bad[ALIGN..2 * ALIGN]),
        (6 * ALIGN_U64 + 1, &bad[2 * ALIGN..]),
    ];
    let err = f.write_batch(&batch).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(read_all_buffered(&path), before, "nothing may be written");
}

#[test]
fn buffered_open_takes_any_alignment() {
    let dir = tmp();
    let d = driver();
    let path = dir.path().join("plain");
    let f = d.open(&path, BUFFERED).unwrap();
    assert!(!f.is_direct());

    f.write_at(b"hello, ", 3).unwrap();
    f.write_at(b"world", 10).unwrap();
    f.sync_all().unwrap();
    assert_eq!(f.len().unwrap(), 15);
    let mut out = [0u8; 12];
    f.read_at(&mut out, 3).unwrap();
    assert_eq!(&out, b"hello, world");
    let mut odd = vec![0u8; 5];
    f.read_at(&mut odd[..], 10).unwrap();
    assert_eq!(&odd, b"world");
    assert_eq!(read_all_buffered(&path), b"\0\0\0hello, world");

    // A large unaligned write, in one call, lands whole.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    f.write_at(&big, 12_345).unwrap();
    let mut back = vec![0u8; big.len()];
    f.read_at(&mut back, 12_345).unwrap();
    assert_eq!(back, big);
}

#[test]
fn read_past_end_is_unexpected_eof() {
    let dir = tmp();
    let d = driver();

    let f = d.open(&dir.path().join("short"), BUFFERED).unwrap();
    f.write_at(b"0123456789", 0).unwrap();
    let mut out = [0u8; 8];
    let err = f.read_at(&mut out, 5).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert!(err.to_string().contains("short"), "{err}");
    let err = f.read_at(&mut out, 100).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    f.read_at(&mut out, 2).unwrap();
    assert_eq!(&out, b"23456789");

    let f = open_direct(&*d, &dir.path().join("short-direct"));
    f.write_at(&pattern(2 * ALIGN, 0), 0).unwrap();
    let mut out = AlignedBuf::new(2 * ALIGN).unwrap();
    let err = f.read_at(&mut out, ALIGN_U64).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    let err = f.read_at(&mut out, 10 * ALIGN_U64).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn write_batch_writes_every_entry_in_order() {
    let dir = tmp();
    let d = driver();
    let f = open_direct(&*d, &dir.path().join("batch"));
    let bufs: Vec<AlignedBuf> = (0..4).map(|i| pattern(ALIGN, i * 10)).collect();
    // The last entry overwrites the first: order matters.
    let batch: Vec<(u64, &[u8])> = vec![
        (0, &bufs[0]),
        (3 * ALIGN_U64, &bufs[1]),
        (ALIGN_U64, &bufs[2]),
        (0, &bufs[3]),
    ];
    f.write_batch(&batch).unwrap();
    f.write_batch(&[]).unwrap();
    f.sync_data().unwrap();
    assert_eq!(f.len().unwrap(), 4 * ALIGN_U64);

    let mut back = AlignedBuf::new(4 * ALIGN).unwrap();
    f.read_at(&mut back, 0).unwrap();
    assert_eq!(&back[..ALIGN], &bufs[3][..]);
    assert_eq!(&back[ALIGN..2 * ALIGN], &bufs[2][..]);
    assert!(back[2 * ALIGN..3 * ALIGN].iter().all(|&x| x == 0));
    assert_eq!(&back[3 * ALIGN..], &bufs[1][..]);

    // Buffered files batch unaligned entries.
    let g = d
        .open(&dir.path().join("batch-buffered"), BUFFERED)
        .unwrap();
    g.write_batch(&[(1, b"bc"), (0, b"a"), (3, b"d")]).unwrap();
    let mut out = [0u8; 4];
    g.read_at(&mut out, 0).unwrap();
    assert_eq!(&out, b"abcd");
}

#[test]
fn set_len_allocate_and_len() {
    let dir = tmp();
    let d = driver();
    let path = dir.path().join("sized");
    let f = open_direct(&*d, &path);
    assert_eq!(f.len().unwrap(), 0);

    f.allocate(0, 16 * ALIGN_U64).unwrap();
    assert_eq!(f.len().unwrap(), 16 * ALIGN_U64);
    // Preallocated space reads back as zeros.
    let mut out = pattern(ALIGN, 1);
    f.read_at(&mut out, 15 * ALIGN_U64).unwrap();
    assert!(out.iter().all(|&x| x == 0));

    // Allocating inside the file never shrinks it; past it grows it.
    f.allocate(ALIGN_U64, ALIGN_U64).unwrap();
    assert_eq!(f.len().unwrap(), 16 * ALIGN_U64);
    f.allocate(20 * ALIGN_U64, 2 * ALIGN_U64).unwrap();
    assert_eq!(f.len().unwrap(), 22 * ALIGN_U64);

    f.write_at(&pattern(ALIGN, 42), 2 * ALIGN_U64).unwrap();
    f.set_len(3 * ALIGN_U64).unwrap();
    assert_eq!(f.len().unwrap(), 3 * ALIGN_U64);
    let mut back = AlignedBuf::new(ALIGN).unwrap();
    f.read_at(&mut back, 2 * ALIGN_U64).unwrap();
    assert_eq!(&back[..], &pattern(ALIGN, 42)[..]);
    let err = f.read_at(&mut back, 3 * ALIGN_U64).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);

    f.set_len(5 * ALIGN_U64).unwrap();
    f.read_at(&mut back, 4 * ALIGN_U64).unwrap();
    assert!(back.iter().all(|&x| x == 0));
    f.set_len(0).unwrap();
    assert!(f.is_empty().unwrap());
    f.sync_all().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn rename_sync_dir_remove_list_dir() {
    let dir = tmp();
    let d = driver();
    let sub = dir.path().join("db").join("wal");
    d.create_dir_all(&sub).unwrap();
    d.create_dir_all(&sub).unwrap(); // already there: fine
    let db = dir.path().join("db");

    // The atomic-replace pattern: write new, sync, rename over, sync dir.
    let old = db.join("MANIFEST");
    let f = d.open(&old, BUFFERED).unwrap();
    f.write_at(b"v1", 0).unwrap();
    f.sync_all().unwrap();
    let tmp_path = db.join("MANIFEST.tmp");
    let g = d.open(&tmp_path, BUFFERED).unwrap();
    g.write_at(b"v2", 0).unwrap();
    g.sync_all().unwrap();
    d.sync_dir(&db).unwrap();
    assert_eq!(
        d.list_dir(&db).unwrap(),
        vec![old.clone(), tmp_path.clone(), sub.clone()]
    );

    d.rename(&tmp_path, &old).unwrap();
    d.sync_dir(&db).unwrap();
    assert_eq!(d.list_dir(&db).unwrap(), vec![old.clone(), sub.clone()]);
    assert_eq!(read_all_buffered(&old), b"v2");
    // The handle keeps the name it was opened by.
    assert_eq!(g.path(), tmp_path);

    d.remove(&old).unwrap();
    d.sync_dir(&db).unwrap();
    assert_eq!(d.list_dir(&db).unwrap(), vec![sub.clone()]);
    assert!(d.list_dir(&sub).unwrap().is_empty());

    // Errors come back with the OS's kind.
    assert_eq!(d.remove(&old).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        d.rename(&tmp_path, &old).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        d.list_dir(&db.join("absent")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(d.sync_dir(&db.join("absent")).is_err());
    let file = db.join("plain");
    d.open(&file, BUFFERED).unwrap();
    assert!(d.sync_dir(&file).is_err(), "sync_dir needs a directory");
    assert_eq!(d.name(), "sync");
}

#[test]
fn dir_lock_is_exclusive_until_dropped() {
    let dir = tmp();
    let first = DirLock::acquire(dir.path()).unwrap();
    assert_eq!(first.path(), dir.path().join("LOCK"));
    for _ in 0..2 {
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
        let raw = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        assert_eq!(raw, Some(libc::EWOULDBLOCK));
    }
    // Another directory is independent.
    let other = tmp();
    let _other_lock = DirLock::acquire(other.path()).unwrap();

    drop(first);
    let second = DirLock::acquire(dir.path()).unwrap();
    assert_eq!(
        DirLock::acquire(dir.path()).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    drop(second);
    DirLock::acquire(dir.path()).unwrap();
}

#[test]
fn concurrent_disjoint_writes_through_one_handle() {
    let dir = tmp();
    let d = driver();
    let f = open_direct(&*d, &dir.path().join("shared"));
    const THREADS: u8 = 4;
    const PAGES: u64 = 16;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let f = Arc::clone(&f);
            s.spawn(move || {
                let page = pattern(ALIGN, t);
                for p in 0..PAGES {
                    f.write_at(&page, (p * u64::from(THREADS) + u64::from(t)) * ALIGN_U64)
                        .unwrap();
                }
            });
        }
    });
    f.sync_data().unwrap();
    let mut back = AlignedBuf::new(ALIGN).unwrap();
    for i in 0..PAGES * u64::from(THREADS) {
        f.read_at(&mut back, i * ALIGN_U64).unwrap();
        let t = (i % u64::from(THREADS)) as u8;
        assert_eq!(&back[..], &pattern(ALIGN, t)[..], "page {i}");
    }
}

/// A wrapper of the kind fault-injection tests build: fails every write
/// after the first `allowed`.
#[derive(Debug)]
struct FailingFile {
    inner: Arc<dyn IoFile>,
    allowed: usize,
    writes: AtomicUsize,
}

impl IoFile for FailingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.writes.fetch_add(1, Ordering::SeqCst) >= self.allowed {
            return Err(io::Error::other("injected write failure"));
        }
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.allocate(offset, len)
    }
    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

#[test]
fn write_batch_stops_at_the_first_failure_through_a_wrapper() {
    let dir = tmp();
    let d = driver();
    let path: PathBuf = dir.path().join("faulty");
    let f: Arc<dyn IoFile> = Arc::new(FailingFile {
        inner: open_direct(&*d, &path),
        allowed: 2,
        writes: AtomicUsize::new(0),
    });
    let pages: Vec<AlignedBuf> = (0..4).map(|i| pattern(ALIGN, i + 1)).collect();
    let batch: Vec<(u64, &[u8])> = pages
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 * ALIGN_U64, &p[..]))
        .collect();
    let err = f.write_batch(&batch).unwrap_err();
    assert_eq!(err.to_string(), "injected write failure");
    // A prefix (the first two entries) landed, nothing after.
    assert_eq!(f.len().unwrap(), 2 * ALIGN_U64);
    let on_disk = read_all_buffered(&path);
    assert_eq!(&on_disk[..ALIGN], &pages[0][..]);
    assert_eq!(&on_disk[ALIGN..], &pages[1][..]);
}
