#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Checkpoint rounds write one capture batch while they capture the next
//! (docs/design.md "Checkpoint round", `buffer/image_writer.rs`). These
//! scenarios slow every data-file write down (the hook sleeps before each
//! entry) so that the round really captures while a batch is at the
//! writer thread, and check the two things that overlap could break:
//!
//! - an image buffer stays untouched from the moment its write is issued
//!   until the write has completed, and the manifest is published only
//!   after every data write of the round completed;
//! - an error in an early batch fails the round even though later batches
//!   were captured (and handed over) meanwhile.
//!
//! The trees use a pool of [`POOL`] frames, which makes the capture batch
//! 4 frames (half of the 8 image buffers the pool keeps), so the workload's
//! rounds have several batches.

mod common;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::hooked::{Call, Hook, HookedDriver, Kind, Verdict};
use common::{per_driver, Driver};
use holt::{Error, Tree, TreeBuilder};

/// Buffer pool of the trees here (capture batches of 4 frames).
const POOL: usize = 128;
/// Keys written; at 16 KiB each they fill a few dozen frames.
const KEYS: usize = 600;
/// Capture batch for [`POOL`] (`buffer/round.rs`, `capture_batch`).
const BATCH: usize = 4;
/// Pause before each data-file write entry: long against a 4-frame
/// capture, so the round captures while the batch is at the writer.
const DELAY: Duration = Duration::from_millis(3);
/// The tree's image writer thread (`buffer/image_writer.rs`).
const WRITER_THREAD: &str = "holt-ckpt-write";

fn value(i: usize, gen: u8) -> Vec<u8> {
    let mut v = format!("{i}:{gen}:").into_bytes();
    v.resize(16 << 10, (b'a' + (i % 26) as u8) ^ gen);
    v
}

fn key(i: usize) -> Vec<u8> {
    format!("d{}/k{i:04}", i % 7).into_bytes()
}

fn write_all(t: &Tree, gen: u8) {
    for i in 0..KEYS {
        t.put(&key(i), &value(i, gen)).unwrap();
    }
}

fn check_all(t: &Tree, gen: u8) {
    for i in 0..KEYS {
        let got = t.get(&key(i)).unwrap();
        assert_eq!(got.as_deref(), Some(&value(i, gen)[..]), "key {i}");
    }
}

fn hash(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(data);
    h.finish()
}

fn is_data_write(call: &Call<'_>) -> bool {
    call.kind == Kind::Write
        && (call.method == "write_batch" || call.method == "write_stream")
        && call.path.file_name().is_some_and(|n| n == "frames.dat")
}

#[derive(Debug, Default)]
struct State {
    /// Data-file write entries issued (passed `before`).
    issued: usize,
    /// Data-file write entries completed (reached `after`).
    completed: usize,
    /// Entries issued on the image writer thread.
    on_writer: usize,
    /// Hash of each issued entry's bytes, by buffer address.
    pending: HashMap<usize, u64>,
    /// What went wrong, to be asserted empty.
    violations: Vec<String>,
    /// Fail the data-file write entry with this (1-based) number.
    fail_nth: Option<usize>,
    /// Manifest publications seen.
    manifests: usize,
    /// Pause after each write has completed instead of before it is
    /// issued, so completed images come back slowly and the round's
    /// writes pile up in flight.
    delay_after: bool,
    /// Most data-file writes issued and not completed at once.
    max_in_flight: usize,
}

/// Delays data-file writes, checks their buffers, and may fail one.
#[derive(Debug, Default)]
struct Watch {
    state: Mutex<State>,
}

impl Watch {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

impl Hook for Watch {
    fn before(&self, call: &Call<'_>) -> Verdict {
        if call.kind == Kind::Rename && call.path.file_name().is_some_and(|n| n == "MANIFEST") {
            let mut st = self.state();
            st.manifests += 1;
            if st.issued != st.completed {
                let msg = format!(
                    "manifest published with {} of {} data writes completed",
                    st.completed, st.issued
                );
                st.violations.push(msg);
            }
            return Verdict::Forward;
        }
        if !is_data_write(call) {
            return Verdict::Forward;
        }
        let fail = {
            let mut st = self.state();
            st.issued += 1;
            if std::thread::current().name() == Some(WRITER_THREAD) {
                st.on_writer += 1;
            }
            st.pending
                .insert(call.data.as_ptr() as usize, hash(call.data));
            st.max_in_flight = st.max_in_flight.max(st.issued - st.completed);
            (st.fail_nth == Some(st.issued), st.delay_after)
        };
        let (fail, delay_after) = fail;
        if !delay_after {
            std::thread::sleep(DELAY);
        }
        if fail {
            let mut st = self.state();
            st.pending.remove(&(call.data.as_ptr() as usize));
            return Verdict::Fail(io::Error::other("injected EIO on a frame write"));
        }
        Verdict::Forward
    }

    fn after(&self, call: &Call<'_>) {
        if !is_data_write(call) {
            return;
        }
        let mut st = self.state();
        st.completed += 1;
        if st.delay_after {
            std::thread::sleep(DELAY);
        }
        let now = hash(call.data);
        match st.pending.remove(&(call.data.as_ptr() as usize)) {
            Some(then) if then == now => {}
            Some(_) => st
                .violations
                .push("an image buffer changed while its write was in flight".into()),
            None => st
                .violations
                .push("a completed write was never issued".into()),
        }
    }
}

fn builder(dir: &Path, d: Driver) -> TreeBuilder {
    common::builder(dir, d).buffer_pool_size(POOL)
}

fn watched_tree(dir: &Path, d: Driver) -> (Tree, Arc<Watch>) {
    let watch = Arc::new(Watch::default());
    let driver = HookedDriver::new(d.io(), watch.clone());
    (builder(dir, d).io_driver(driver).open().unwrap(), watch)
}

/// Rounds of several batches, each batch's write slowed down: every image
/// buffer holds the same bytes when its write completes as when it was
/// issued, the manifest is renamed into place only once every data write
/// of the round completed, batches after the first are written by the
/// image writer thread, and the images on disk alone (WAL emptied) hold
/// every write. Deliberate bugs tried: the writer thread handing a batch's
/// buffers back to the round before writing them (from raw copies of their
/// addresses) fails the buffer check; `persist` not waiting for the batch
/// at the writer fails the manifest check (and the reopen).
fn batches_stay_untouched_until_written(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let (t, watch) = watched_tree(dir.path(), d);
    for gen in 1..=3u8 {
        write_all(&t, gen);
        let dirty = t.stats().unwrap().bm_dirty_count;
        assert!(
            dirty >= 3 * BATCH,
            "the workload dirties several batches: {dirty}"
        );
        t.checkpoint().unwrap();
        let st = watch.state();
        assert!(st.violations.is_empty(), "{:?}", st.violations);
        assert_eq!(st.issued, st.completed);
        assert!(st.manifests >= usize::from(gen));
    }
    {
        let st = watch.state();
        assert!(
            st.on_writer > 0,
            "no batch was written by the image writer thread ({} writes)",
            st.issued
        );
    }
    check_all(&t, 3);
    drop(t);
    // The checkpoint alone: no WAL record to replay.
    std::fs::write(dir.path().join("journal.wal"), b"").unwrap();
    let t = builder(dir.path(), d).open().unwrap();
    check_all(&t, 3);
}

/// The first data write of a round fails while the round captures (and
/// hands over) later images: the checkpoint returns that error, every
/// image buffer of the round comes back to the pool, the tree is poisoned
/// for writes (EIO is not "disk full"), the WAL stays in force, and after
/// reopen on a clean driver every acknowledged write is there.
/// Deliberate bugs tried: `ImageWriter::wait` dropping the stream's error
/// (answering `Ok`) makes the checkpoint succeed, publishing a manifest
/// without the failed frames and releasing the WAL that held them; the
/// writer thread dropping the images the round sends after the error
/// (instead of sending them back) leaves the pool short.
fn an_early_batch_error_fails_the_round(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let (t, watch) = watched_tree(dir.path(), d);
    write_all(&t, 1);
    t.checkpoint().unwrap();
    let pooled = t.cache_stats().pooled_images;
    assert!(
        pooled >= 2 * BATCH,
        "the round's buffers are pooled: {pooled}"
    );
    write_all(&t, 2);
    let dirty = t.stats().unwrap().bm_dirty_count;
    assert!(dirty >= 3 * BATCH, "several batches: {dirty}");
    let manifests = {
        let mut st = watch.state();
        st.fail_nth = Some(st.issued + 1);
        st.manifests
    };
    match t.checkpoint() {
        Err(Error::BackendIo(e)) if e.kind() == io::ErrorKind::Other => {}
        other => panic!("expected the injected EIO from checkpoint, got {other:?}"),
    }
    {
        let st = watch.state();
        assert!(st.violations.is_empty(), "{:?}", st.violations);
        assert_eq!(
            st.manifests, manifests,
            "the failed round published no manifest"
        );
        // Every data write still pending was reaped before the round
        // returned (the failed one was never issued to the inner driver).
        assert_eq!(st.issued, st.completed + 1);
    }
    assert_eq!(
        t.cache_stats().pooled_images,
        pooled,
        "every image buffer of the failed round came back to the pool"
    );
    assert!(matches!(t.put(b"x", b"y"), Err(Error::Poisoned)));
    check_all(&t, 2);
    drop(t);
    let t = builder(dir.path(), d).open().unwrap();
    check_all(&t, 2);
    t.checkpoint().unwrap();
    drop(t);
    std::fs::write(dir.path().join("journal.wal"), b"").unwrap();
    let t = builder(dir.path(), d).open().unwrap();
    check_all(&t, 2);
}

/// The round streams its images: on io_uring more writes than one capture
/// batch are in flight at once (bounded by the round's image buffers,
/// the pool's 2 x [`BATCH`]), while the sync driver writes one at a time.
/// Completions are slowed down here (the hook pauses after each), so the
/// round's writes pile up whenever the driver lets them. Deliberate bug
/// tried: the round waiting for every image at the writer whenever a
/// batch's worth is out (the old batch-at-a-time pipeline's depth) keeps
/// at most [`BATCH`] in flight and fails the io_uring case.
fn more_writes_than_a_batch_are_in_flight(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let (t, watch) = watched_tree(dir.path(), d);
    write_all(&t, 1);
    t.checkpoint().unwrap();
    watch.state().delay_after = true;
    for gen in 2..=3u8 {
        write_all(&t, gen);
        t.checkpoint().unwrap();
    }
    let st = watch.state();
    assert!(st.violations.is_empty(), "{:?}", st.violations);
    assert_eq!(st.issued, st.completed);
    match d {
        Driver::Uring => assert!(
            st.max_in_flight > BATCH && st.max_in_flight <= 2 * BATCH + 8,
            "io_uring kept {} writes in flight (batch {BATCH})",
            st.max_in_flight
        ),
        Driver::Sync => assert_eq!(st.max_in_flight, 1, "the sync driver writes one at a time"),
    }
    drop(st);
    check_all(&t, 3);
}

per_driver!(
    more_writes_than_a_batch_are_in_flight,
    batches_stay_untouched_until_written,
    an_early_batch_error_fails_the_round
);
