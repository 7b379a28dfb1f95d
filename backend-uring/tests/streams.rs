#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `write_stream` on real files: writes taken from a feed as they come,
//! many in flight at once, each buffer handed back once its completion is
//! reaped, and the first error ending the stream with every buffer back.
//! Every test is skipped (with a note) where io_uring is unavailable.

mod common;

use common::{uring, CHUNK, OPTS};

use std::collections::VecDeque;

use holt_backend_sync::IoDriver;
use holt_backend_sync::{AlignedBuf, Feed, IoFile, StreamWrite, SyncDriver, WriteFeed};
use holt_backend_uring::Faults;

/// A chunk whose bytes name `i` and their position.
fn pattern(i: usize) -> AlignedBuf {
    let mut b = AlignedBuf::new(CHUNK).unwrap();
    for (j, x) in b.iter_mut().enumerate() {
        *x = (i * 131 + j / 7) as u8;
    }
    b
}

/// Hands out chunk `i` at offset `i * CHUNK` for every `i` it holds, all
/// ready at once, and records what comes back.
#[derive(Default)]
struct Chunks {
    ready: VecDeque<usize>,
    /// Handed out and not back yet.
    out: usize,
    /// Most handed out and not back at once.
    max_out: usize,
    /// Chunks back, with whether their write succeeded.
    back: Vec<(usize, bool)>,
    /// `next` calls after a write came back failed.
    asked_after_failure: usize,
}

impl Chunks {
    fn new(n: usize) -> Self {
        Self {
            ready: (0..n).collect(),
            ..Self::default()
        }
    }
}

impl WriteFeed for Chunks {
    fn next(&mut self, _wait: bool) -> Feed {
        if self.back.iter().any(|&(_, ok)| !ok) {
            self.asked_after_failure += 1;
        }
        let Some(i) = self.ready.pop_front() else {
            return Feed::End;
        };
        self.out += 1;
        self.max_out = self.max_out.max(self.out);
        Feed::Write(StreamWrite {
            offset: (i * CHUNK) as u64,
            tag: i as u64,
            buf: Box::new(pattern(i)),
        })
    }

    fn done(&mut self, write: StreamWrite, ok: bool) {
        self.out -= 1;
        let i = write.tag as usize;
        let mut buf = write.buf.into_any().downcast::<AlignedBuf>().unwrap();
        assert!(buf[..] == pattern(i)[..], "chunk {i} came back changed");
        // A buffer back is the feed's to reuse: scribble over it, so a
        // write the driver still makes from it (a remainder handed back
        // too early) puts these bytes on disk, where `read_back` sees them.
        buf.fill(0xEE);
        self.back.push((i, ok));
    }
}

fn read_back(f: &dyn IoFile, n: usize) {
    for i in 0..n {
        let mut b = AlignedBuf::new(CHUNK).unwrap();
        f.read_at(&mut b, (i * CHUNK) as u64).unwrap();
        assert!(b[..] == pattern(i)[..], "chunk {i} on disk");
    }
}

/// A feed with 40 writes ready: io_uring keeps many of them in flight at
/// once (the ring is 128 deep), hands each one back exactly once, and
/// every chunk is on disk afterwards. The sync driver's provided stream
/// has one in flight. Deliberate bug tried: `run_stream` taking a new
/// write only when none is held (`held == 0` instead of `held < depth`)
/// keeps one in flight and fails the first assertion.
#[test]
fn a_stream_keeps_many_writes_in_flight() {
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let f = d.open_file(&dir.path().join("f"), OPTS).unwrap();
    let mut feed = Chunks::new(40);
    f.write_stream(&mut feed).unwrap();
    assert!(feed.max_out > 8, "only {} in flight", feed.max_out);
    assert_eq!(feed.out, 0);
    let mut back: Vec<usize> = feed
        .back
        .iter()
        .map(|&(i, ok)| {
            assert!(ok);
            i
        })
        .collect();
    back.sort_unstable();
    assert_eq!(back, (0..40).collect::<Vec<_>>());
    let st = f.stats();
    assert_eq!(st.sqes, st.completions, "{st:?}");
    f.sync_data().unwrap();
    read_back(&f, 40);

    let g = SyncDriver.open(&dir.path().join("g"), OPTS).unwrap();
    let mut feed = Chunks::new(5);
    g.write_stream(&mut feed).unwrap();
    assert_eq!((feed.max_out, feed.back.len()), (1, 5));
    read_back(&*g, 5);
}

/// An `EIO` on the third write completion of a stream: the call fails with
/// it, the feed is not asked for more once the failed write has come back,
/// every write handed out comes back exactly once (the failed one marked
/// so) after its completion was reaped, and the ring stays usable.
/// Deliberate bug tried: `run_stream` leaving its loop at the first error
/// without handing back the writes still held (they are dropped instead)
/// fails the count of writes back.
#[test]
fn an_error_ends_the_stream_with_every_write_back() {
    let Some(d) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let f = d.open_file(&dir.path().join("f"), OPTS).unwrap();
    f.set_faults(Faults {
        fail_nth_completion: Some((3, libc::EIO)),
        ..Faults::default()
    });
    let mut feed = Chunks::new(40);
    let err = f.write_stream(&mut feed).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let handed = 40 - feed.ready.len();
    assert!(handed >= 3, "{handed}");
    assert_eq!(feed.out, 0, "every write came back");
    assert_eq!(feed.back.len(), handed);
    assert_eq!(feed.back.iter().filter(|&&(_, ok)| !ok).count(), 1);
    assert_eq!(feed.asked_after_failure, 0);
    let st = f.stats();
    assert_eq!(st.sqes, st.completions, "{st:?}");
    assert!(f.fallback_reason().is_none());
    f.set_faults(Faults::none());
    let mut feed = Chunks::new(40);
    f.write_stream(&mut feed).unwrap();
    f.sync_data().unwrap();
    read_back(&f, 40);
}

/// Runs `f` on its own thread and fails the test if it takes longer than
/// a minute: under the bugs these tests name, a stream can wait forever
/// for a write that was already handed back.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the stream did not finish within a minute")
}

/// Short writes and `EINTR` retries on a two-entry ring: each remainder is
/// resubmitted from the buffer its write still owns, and the buffer goes
/// back only once the whole write is done. Then an `EIO` while remainders
/// are queued for resubmission: the stream fails, every write comes back,
/// and no SQE is left unreaped. Deliberate bug tried: handing a write back
/// while its remainder is still queued (dropping `!pending.contains(&idx)`
/// in `Ring::run_stream`): the feed scribbles over the buffer it got
/// back, so the remainder puts the scribble on disk, or the stream waits
/// forever for the remainder's write; either fails this test.
#[test]
fn short_writes_and_retries_keep_their_buffers_until_done() {
    let Some(d) = uring() else { return };
    let d = d.with_ring_entries(2).with_faults(Faults {
        short_write_every: Some(2),
        fail_nth_completion: Some((5, libc::EINTR)),
        fail_repeat: 3,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let f = d.open_file(&dir.path().join("f"), OPTS).unwrap();
    let (f, feed) = within_a_minute(move || {
        let mut feed = Chunks::new(40);
        f.write_stream(&mut feed).unwrap();
        (f, feed)
    });
    assert!(
        feed.max_out <= 2,
        "{} held on a two-entry ring",
        feed.max_out
    );
    assert_eq!(feed.out, 0);
    assert_eq!(feed.back.len(), 40);
    assert!(feed.back.iter().all(|&(_, ok)| ok));
    let st = f.stats();
    assert!(st.short_resubmits > 0 && st.retries > 0, "{st:?}");
    assert_eq!(st.sqes, st.completions, "{st:?}");
    f.set_faults(Faults::none());
    f.sync_data().unwrap();
    read_back(&f, 40);

    f.set_faults(Faults {
        short_write_every: Some(1),
        fail_nth_completion: Some((3, libc::EIO)),
        ..Faults::default()
    });
    let (f, feed, res) = within_a_minute(move || {
        let mut feed = Chunks::new(40);
        let res = f.write_stream(&mut feed);
        (f, feed, res)
    });
    assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(feed.out, 0, "every write came back");
    assert_eq!(feed.asked_after_failure, 0);
    let st = f.stats();
    assert_eq!(st.sqes, st.completions, "{st:?}");
}
