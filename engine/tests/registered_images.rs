#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Checkpoint frame images in io_uring registered buffers (design.md,
//! "Registered image buffers"): a round's images come from the driver's
//! registered arena and go out as `WRITE_FIXED`; the arena is built at the
//! first round, not at open or on cold loads, sized from the image pool's
//! bound; a refused registration falls back to plain writes, once. Also
//! driver faults inside a streamed round (errors, short writes, retries
//! with many writes in flight), which need this file's watch on the ring.
//!
//! The arena is process-wide and never freed, so every scenario runs in a
//! child process of its own: the test binary re-executes itself with
//! `HOLT_IMAGES_CHILD=<test name>` (see [`in_child`]).

mod common;

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::hooked::{Hook, HookedDriver};
use holt::io::{IoDriver, IoFile, OpenOptions, SyncDriver};
use holt::{Tree, TreeBuilder};
use holt_backend_uring::{BufferRegistration, Faults, UringDriver, UringFile, UringStats};

const CHILD_ENV: &str = "HOLT_IMAGES_CHILD";
const FRAME: usize = 512 << 10;
/// Buffer pool of the trees here.
const POOL: usize = 256;
/// Image buffers the pool keeps, and so the arena slots the first round
/// reserves, for a pool of `POOL` frames: `POOL / 16` (at least 8, at
/// most 64; `buffer/round.rs`).
const KEPT_IMAGES: usize = POOL / 16;
const KEYS: usize = 240;

/// Runs the test `name` again in a child process and checks it passed;
/// returns true inside that child (run the body), false in the parent.
fn in_child(name: &str) -> bool {
    if std::env::var(CHILD_ENV).is_ok_and(|v| v == name) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {name} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child {name} ran no test:\n{text}"
    );
    if let Some(line) = text.lines().find(|l| l.starts_with("skipped")) {
        eprintln!("{line}");
    }
    false
}

/// The io_uring driver, or `None` (printed) where the kernel refuses it.
fn uring() -> Option<UringDriver> {
    match UringDriver::probe() {
        Ok(d) => Some(d),
        Err(why) => {
            eprintln!("skipped: io_uring unavailable ({why})");
            None
        }
    }
}

/// Opens files with its io_uring driver and keeps the data file
/// (`frames.dat`), so a test can read that file's ring counters.
#[derive(Debug)]
struct Watch {
    uring: UringDriver,
    data: Mutex<Option<Arc<UringFile>>>,
}

impl Watch {
    /// `uring` wrapped so that the returned watch sees its data file.
    fn new(uring: UringDriver) -> (Arc<HookedDriver>, Arc<Self>) {
        let w = Arc::new(Self {
            uring,
            data: Mutex::new(None),
        });
        (HookedDriver::new(Arc::new(uring), w.clone()), w)
    }

    fn data(&self) -> Arc<UringFile> {
        self.data
            .lock()
            .unwrap()
            .clone()
            .expect("frames.dat opened")
    }

    fn stats(&self) -> UringStats {
        self.data().stats()
    }
}

impl Hook for Watch {
    fn open(
        &self,
        _: &dyn IoDriver,
        path: &Path,
        opts: OpenOptions,
    ) -> io::Result<Arc<dyn IoFile>> {
        let file = Arc::new(self.uring.open_file(path, opts)?);
        if path.file_name().is_some_and(|n| n == "frames.dat") {
            *self.data.lock().unwrap() = Some(Arc::clone(&file));
        }
        Ok(file)
    }
}

fn builder(dir: &Path, driver: Arc<dyn IoDriver>) -> TreeBuilder {
    TreeBuilder::new(dir)
        .buffer_pool_size(POOL)
        .io_driver(driver)
}

fn value(i: usize, gen: u8) -> Vec<u8> {
    let mut v = format!("{i}:{gen}:").into_bytes();
    v.resize(16 << 10, (b'a' + (i % 26) as u8) ^ gen);
    v
}

fn key(i: usize) -> Vec<u8> {
    format!("d{}/k{i:04}", i % 7).into_bytes()
}

/// Overwrites the first `n` keys with generation `gen`.
fn write_keys(t: &Tree, n: usize, gen: u8) {
    for i in 0..n {
        t.put(&key(i), &value(i, gen)).unwrap();
    }
}

fn check_keys(t: &Tree, n: usize, gen: u8) {
    for i in 0..n {
        let got = t.get(&key(i)).unwrap();
        assert_eq!(got.as_deref(), Some(&value(i, gen)[..]), "key {i}");
    }
}

/// Overwrites every key with generation `gen` (dirtying every frame).
fn write_all(t: &Tree, gen: u8) {
    write_keys(t, KEYS, gen);
}

fn check_all(t: &Tree, gen: u8) {
    check_keys(t, KEYS, gen);
}

/// Whether the process's arena exists yet.
fn arena_created() -> bool {
    UringDriver::arena_info().arena_bytes > 0
}

/// Writes one checkpoint round's worth of dirty frames and checkpoints;
/// returns the frames that were dirty and the data file's counter deltas.
fn round(t: &Tree, w: &Watch, gen: u8) -> (u64, UringStats) {
    write_all(t, gen);
    let dirty = t.stats().unwrap().bm_dirty_count as u64;
    assert!(dirty >= 4, "the workload dirties several frames: {dirty}");
    let before = w.stats();
    t.checkpoint().unwrap();
    let after = w.stats();
    let delta = UringStats {
        sqes: after.sqes - before.sqes,
        fixed_sqes: after.fixed_sqes - before.fixed_sqes,
        ..after
    };
    (dirty, delta)
}

/// A checkpoint round on io_uring writes its images with `WRITE_FIXED`
/// from the registered arena; the arena is created by the first round —
/// not by opening the tree, nor by the cold loads of reads — with as many
/// slots as the image pool keeps (`KEPT_IMAGES`), and later rounds reuse it.
/// Fails if the images are plain heap buffers (`fixed_sqes` stays 0, as
/// before this change), or if open or loads create the arena (the
/// reverted attempt built it at the first frame load).
#[test]
fn checkpoint_images_go_out_as_fixed_writes() {
    if !in_child("checkpoint_images_go_out_as_fixed_writes") {
        return;
    }
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    {
        // Data on disk, written by the sync driver (no arena).
        let t = builder(dir.path(), Arc::new(SyncDriver::new()))
            .open()
            .unwrap();
        write_all(&t, 1);
        t.checkpoint().unwrap();
    }
    assert!(!arena_created());
    let (io, w) = Watch::new(d);
    let t = builder(dir.path(), io).open().unwrap();
    check_all(&t, 1); // cold loads
    assert!(
        !arena_created(),
        "open and cold loads must not build the arena: {:?}",
        UringDriver::arena_info()
    );
    assert!(w.stats().sqes > 0, "the loads went through the ring");
    assert_eq!(w.stats().fixed_sqes, 0);

    let (dirty, delta) = round(&t, &w, 2);
    let info = UringDriver::arena_info();
    if info.arena_bytes == 0 {
        // Only a memlock limit too small for one slot (and no
        // CAP_IPC_LOCK) may leave the process without an arena.
        assert!(info.unavailable.unwrap().contains("less than one"));
        eprintln!("skipped: RLIMIT_MEMLOCK leaves no registered buffers");
        return;
    }
    assert!(
        info.arena_bytes <= KEPT_IMAGES * FRAME,
        "the arena is sized from the image pool's bound: {info:?}"
    );
    assert_eq!(
        w.data().buffer_registration(),
        BufferRegistration::Registered
    );
    let slots = (info.arena_bytes / FRAME) as u64;
    assert!(dirty <= slots, "{dirty} images, {slots} slots");
    // Every write of the round is fixed; only the fdatasync is not.
    assert!(
        delta.fixed_sqes >= 4 && delta.sqes - delta.fixed_sqes == 1,
        "{dirty} images, {slots} slots, {} fixed of {} SQEs: {delta:?}",
        delta.fixed_sqes,
        delta.sqes
    );
    // The next round reuses the pooled arena buffers; the arena stays.
    let (_, delta) = round(&t, &w, 3);
    assert!(
        delta.fixed_sqes >= 4 && delta.sqes - delta.fixed_sqes == 1,
        "{delta:?}"
    );
    assert_eq!(UringDriver::arena_info().arena_bytes, info.arena_bytes);
    check_all(&t, 3);
    drop(t);
    let t = builder(dir.path(), Arc::new(SyncDriver::new()))
        .open()
        .unwrap();
    check_all(&t, 3);
}

/// The kernel refusing the arena's registration (`ENOMEM`, as for an
/// exhausted `RLIMIT_MEMLOCK`) costs nothing but the fixed writes: rounds
/// succeed with plain writes, the refusal is remembered (no slots handed
/// out afterwards, no registration retried), and the data is intact.
/// Fails if the refusal failed the checkpoint, or if a later round or
/// file tried to register again.
#[test]
fn refused_registration_falls_back_to_plain_writes() {
    if !in_child("refused_registration_falls_back_to_plain_writes") {
        return;
    }
    let Some(d) = uring() else { return };
    let refuse = d.with_faults(Faults {
        fail_buffer_registration: Some(libc::ENOMEM),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (io, w) = Watch::new(refuse);
    let t = builder(dir.path(), io.clone()).open().unwrap();
    let (_, delta) = round(&t, &w, 1);
    assert_eq!(delta.fixed_sqes, 0, "{delta:?}");
    let info = UringDriver::arena_info();
    if info.arena_bytes == 0 {
        eprintln!("skipped: RLIMIT_MEMLOCK leaves no registered buffers");
        return;
    }
    match w.data().buffer_registration() {
        BufferRegistration::Unavailable(why) => assert!(why.contains("RLIMIT_MEMLOCK"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(info.refused.is_some(), "{info:?}");
    assert_eq!(io.reserve_buffers(FRAME, 8), 0, "the refusal is remembered");
    assert!(!io.alloc_buffer(FRAME).unwrap().is_from_arena());
    let (_, delta) = round(&t, &w, 2);
    assert_eq!(delta.fixed_sqes, 0, "{delta:?}");
    drop(t);
    // A new tree (new ring, no injected faults) does not try again.
    let (io2, w2) = Watch::new(d);
    let t = builder(dir.path(), io2).open().unwrap();
    check_all(&t, 2);
    let (_, delta) = round(&t, &w2, 3);
    assert_eq!(delta.fixed_sqes, 0, "{delta:?}");
    assert!(matches!(
        w2.data().buffer_registration(),
        BufferRegistration::Unavailable(_) | BufferRegistration::NotYet
    ));
    check_all(&t, 3);
}

/// With `RLIMIT_MEMLOCK` lowered to 64 KiB (less than one 512 KiB slot's
/// budget) the arena is not built — unless the process has
/// `CAP_IPC_LOCK`, whose registrations the kernel does not charge — and
/// checkpoints run on plain buffers. Fails if a round errors for lack of
/// registered memory, or if the arena ignored the limit without the
/// capability.
#[test]
fn tiny_memlock_limit_gives_plain_images() {
    if !in_child("tiny_memlock_limit_gives_plain_images") {
        return;
    }
    let Some(d) = uring() else { return };
    let lim = libc::rlimit {
        rlim_cur: 64 << 10,
        rlim_max: 64 << 10,
    };
    // SAFETY: `lim` is a valid rlimit; lowering a limit of this (child)
    // process affects nothing else.
    #[allow(unsafe_code)]
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    assert_eq!(ret, 0, "{}", io::Error::last_os_error());
    let dir = tempfile::tempdir().unwrap();
    let (io, w) = Watch::new(d);
    let t = builder(dir.path(), io).open().unwrap();
    let (_, delta) = round(&t, &w, 1);
    let info = UringDriver::arena_info();
    if info.budget.contains("CAP_IPC_LOCK") {
        assert!(info.arena_bytes > 0, "{info:?}");
        eprintln!("skipped: CAP_IPC_LOCK makes the memlock limit moot here");
    } else {
        assert_eq!(info.arena_bytes, 0, "{info:?}");
        assert!(info.unavailable.unwrap().contains("less than one"));
        assert_eq!(delta.fixed_sqes, 0);
    }
    check_all(&t, 1);
}

/// Keys of the streamed-round scenarios: enough 16 KiB values to dirty
/// several capture batches' worth of frames, so a round streams.
const STREAM_KEYS: usize = 1500;

/// A watched tree in `dir` whose next round streams: every key written
/// and checkpointed (generation 1), then overwritten (generation 2).
/// Returns the tree, its watch, and the image buffers pooled after the
/// first round.
fn streaming_tree(dir: &Path, d: UringDriver) -> (Tree, Arc<Watch>, usize) {
    let (io, w) = Watch::new(d);
    let t = builder(dir, io).open().unwrap();
    write_keys(&t, STREAM_KEYS, 1);
    t.checkpoint().unwrap();
    let pooled = t.cache_stats().pooled_images;
    write_keys(&t, STREAM_KEYS, 2);
    (t, w, pooled)
}

/// An `EIO` completion inside the io_uring driver while a round's images
/// stream with many writes in flight: the round fails, every image buffer
/// comes back to the pool, the tree refuses writes, and a reopen recovers
/// every acknowledged put (from the WAL). Deliberate bug tried:
/// `Ring::run_stream` dropping a failed write instead of handing it back
/// to the feed fails the pool count.
#[test]
fn a_driver_error_mid_stream_fails_the_round_and_loses_nothing() {
    if !in_child("a_driver_error_mid_stream_fails_the_round_and_loses_nothing") {
        return;
    }
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (t, w, pooled) = streaming_tree(dir.path(), d);
    w.data().set_faults(Faults {
        fail_nth_completion: Some((10, libc::EIO)),
        ..Faults::default()
    });
    assert!(t.checkpoint().is_err(), "the injected EIO failed the round");
    assert_eq!(
        t.cache_stats().pooled_images,
        pooled,
        "every buffer came back"
    );
    assert!(t.put(b"x", b"y").is_err(), "the tree refuses writes");
    check_keys(&t, STREAM_KEYS, 2);
    drop(t);
    let t = builder(dir.path(), Arc::new(d)).open().unwrap();
    check_keys(&t, STREAM_KEYS, 2);
}

/// Short writes and a burst of `EAGAIN` completions during a streamed
/// round: the round succeeds, and the images alone (WAL emptied) hold
/// every put. Deliberate bug tried: handing a write back while its
/// remainder is still queued for resubmission (see `streams.rs`) leaves
/// the round waiting or the images torn.
#[test]
fn short_writes_and_retries_mid_stream_keep_every_image_whole() {
    if !in_child("short_writes_and_retries_mid_stream_keep_every_image_whole") {
        return;
    }
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (t, w, _) = streaming_tree(dir.path(), d);
    w.data().set_faults(Faults {
        short_write_every: Some(3),
        fail_nth_completion: Some((7, libc::EAGAIN)),
        fail_repeat: 5,
        ..Faults::default()
    });
    t.checkpoint().unwrap();
    let st = w.stats();
    assert!(st.short_resubmits > 0 && st.retries > 0, "{st:?}");
    drop(t);
    std::fs::write(dir.path().join("journal.wal"), b"").unwrap();
    let t = builder(dir.path(), Arc::new(d)).open().unwrap();
    check_keys(&t, STREAM_KEYS, 2);
}
