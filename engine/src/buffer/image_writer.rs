//! Write-behind for checkpoint images: a round hands each image to the
//! tree's image writer thread as soon as it is sealed and captures the
//! next frame while the backend writes it, so the frame copies (CPU) and
//! the frame writes (disk) overlap instead of taking turns, and the
//! backend can keep as many writes in flight as the round has buffers for
//! ([`Backend::write_stream`]; on io_uring one submission queue topped up
//! as completions are reaped), not one capture batch.
//!
//! The rules:
//!
//! * **One stream per round.** The first [`ImageWriter::send`] of a round
//!   opens a [`Backend::write_stream`] on the writer thread, which takes
//!   every image the round sends until [`ImageWriter::wait`] ends it.
//!   Writes in flight are bounded by the round's image buffers (the
//!   image pool's bound): the round waits for a buffer to come back
//!   ([`ImageWriter::reclaim`]) when it has none left.
//! * **Buffers move, they are not lent.** An image's buffer is owned by
//!   the backend (on io_uring: by the driver) from the moment the stream
//!   takes it until its write has finished (its completion reaped,
//!   success or error); only then is it sent back to the round, so no
//!   buffer can be reused or freed while the kernel may still use it —
//!   by ownership, on the engine's side without `unsafe`.
//! * **No error is lost.** A failed write comes back marked failed; the
//!   round stops at the first one it sees ([`ImageWriter::reclaim`]) and
//!   [`ImageWriter::wait`] returns the stream's error. After an error the
//!   thread writes nothing more: images still arriving go back unwritten.
//!   [`wait`](ImageWriter::wait) also runs when the round ends, failed or
//!   not, and returns only once every image sent has come back, so no
//!   write of a round outlives it (a late write would otherwise remap a
//!   frame after the next round wrote it again).
//! * **One thread per tree, started when it pays.** The thread is spawned
//!   at the first send, which a round makes only when it has more frames
//!   than one capture batch (a smaller round, and every write-through in
//!   memory mode, writes its images inline as one batch), and then serves
//!   every later round of the tree (rounds are serialised by the round
//!   lock) until the buffer manager drops, which stops and joins it. One
//!   long-lived thread rather than one per round, so a round pays no
//!   thread start and, on io_uring, the kernel's per-thread submission
//!   state (and io-wq workers) is set up once. If the thread cannot be
//!   spawned, images are written inline.
//!
//! Layering is unchanged: the writer calls the round's [`Backend`], never
//! the I/O driver, and nothing below the engine knows about it.

use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::api::errors::{Error, Result};
use crate::store::{AlignedBlobBuf, Backend, BlobGuid, ImageFeed, ImageNext};

/// From the round to the writer thread.
enum ToWriter {
    /// An image to write.
    Image(BlobGuid, AlignedBlobBuf),
    /// The round sends no more images.
    End,
}

/// From the writer thread to the round.
enum FromWriter {
    /// An image's buffer, after its write finished (`ok`) or failed or
    /// was not attempted (`!ok`).
    Buf(AlignedBlobBuf, bool),
    /// The stream ended with this result; every buffer came back before.
    Ended(Result<()>),
}

/// The writer thread and its two channels.
struct Worker {
    to: Option<Sender<ToWriter>>,
    from: Receiver<FromWriter>,
    handle: Option<JoinHandle<()>>,
}

/// See the module documentation.
pub(crate) struct ImageWriter {
    backend: Arc<dyn Backend>,
    /// `None` until the first send; stays `None` if spawning failed.
    worker: Option<Worker>,
    /// Spawning was tried (and failed, if `worker` is `None`).
    tried: bool,
    /// A stream is open at the writer (this round sent an image).
    open: bool,
    /// Images sent whose buffers have not come back.
    out: usize,
    /// A buffer came back marked failed.
    failed: bool,
}

impl ImageWriter {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            worker: None,
            tried: false,
            open: false,
            out: 0,
            failed: false,
        }
    }

    /// Images sent whose buffers have not come back yet.
    pub(crate) fn out(&self) -> usize {
        self.out
    }

    /// Sends one sealed image to the writer thread. Without a thread the
    /// image is written here and its buffer goes to `spare`. On an error
    /// (no thread to take it, or the inline write failed) the buffer also
    /// goes to `spare`.
    pub(crate) fn send(
        &mut self,
        guid: BlobGuid,
        buf: AlignedBlobBuf,
        spare: &mut Vec<AlignedBlobBuf>,
    ) -> Result<()> {
        if !self.tried {
            self.tried = true;
            self.worker = self.spawn();
        }
        let Some(w) = &self.worker else {
            let res = self.backend.write_blob(guid, &buf);
            spare.push(buf);
            return res;
        };
        let Some(to) = &w.to else {
            spare.push(buf);
            return Err(Error::Internal("checkpoint writer closed"));
        };
        match to.send(ToWriter::Image(guid, buf)) {
            Ok(()) => {
                self.open = true;
                self.out += 1;
                Ok(())
            }
            Err(back) => {
                if let ToWriter::Image(_, buf) = back.0 {
                    spare.push(buf);
                }
                Err(Error::Internal("checkpoint writer thread ended"))
            }
        }
    }

    /// Takes back the buffers whose writes have finished, into `spare`;
    /// with `block`, waits for at least one if none has (and one is out).
    /// Once a write has failed, ends the stream ([`ImageWriter::wait`])
    /// and returns its error.
    pub(crate) fn reclaim(&mut self, spare: &mut Vec<AlignedBlobBuf>, block: bool) -> Result<()> {
        let mut got = 0usize;
        while self.out > 0 {
            let Some(w) = &self.worker else { break };
            let msg = if block && got == 0 {
                w.from.recv().ok()
            } else {
                match w.from.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => None,
                }
            };
            match msg {
                Some(FromWriter::Buf(buf, ok)) => {
                    self.out -= 1;
                    got += 1;
                    spare.push(buf);
                    self.failed |= !ok;
                }
                // `Ended` comes only after `End`, which `wait` sends.
                Some(FromWriter::Ended(_)) => break,
                None => return self.wait(spare),
            }
        }
        if self.failed {
            return self.wait(spare);
        }
        Ok(())
    }

    /// Ends the round's stream, if one is open: waits until every image
    /// sent has come back (buffers appended to `spare`) and returns the
    /// stream's result.
    pub(crate) fn wait(&mut self, spare: &mut Vec<AlignedBlobBuf>) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        let mut failed = std::mem::take(&mut self.failed);
        let Some(w) = &self.worker else {
            return Ok(());
        };
        if let Some(to) = &w.to {
            // A send error means the thread is gone; `recv` below says so.
            let _ = to.send(ToWriter::End);
        }
        loop {
            match w.from.recv() {
                Ok(FromWriter::Buf(buf, ok)) => {
                    // A backend may mark a write failed and still end its
                    // stream with `Ok`: the round fails all the same.
                    failed |= !ok;
                    self.out = self.out.saturating_sub(1);
                    spare.push(buf);
                }
                Ok(FromWriter::Ended(res)) => {
                    self.out = 0;
                    return match res {
                        Ok(()) if failed => Err(Error::Internal("checkpoint image write failed")),
                        res => res,
                    };
                }
                // The thread ended without answering: it panicked inside
                // the backend's stream (whose buffers its unwind dropped
                // only after the backend had reaped them).
                Err(_) => {
                    self.out = 0;
                    return Err(Error::Internal("checkpoint writer thread ended"));
                }
            }
        }
    }

    /// Ends the stream in flight (its buffers are dropped after they are
    /// written), stops and joins the thread.
    fn stop(&mut self) {
        let mut spare = Vec::new();
        let _ = self.wait(&mut spare);
        if let Some(mut w) = self.worker.take() {
            drop(w.to.take());
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }

    fn spawn(&self) -> Option<Worker> {
        let (to, inbox) = channel::<ToWriter>();
        let (outbox, from) = channel::<FromWriter>();
        let backend = Arc::clone(&self.backend);
        let handle = std::thread::Builder::new()
            .name("holt-ckpt-write".into())
            .spawn(move || serve(&*backend, &inbox, &outbox))
            .ok()?;
        Some(Worker {
            to: Some(to),
            from,
            handle: Some(handle),
        })
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer thread: one [`Backend::write_stream`] per round, until the
/// round side hangs up.
fn serve(backend: &dyn Backend, inbox: &Receiver<ToWriter>, outbox: &Sender<FromWriter>) {
    while let Ok(first) = inbox.recv() {
        let mut feed = Feed {
            inbox,
            outbox,
            first: Some(first),
            ended: false,
        };
        let res = backend.write_stream(&mut feed);
        // A failed stream stops asking: what the round still sends goes
        // back unwritten, up to its end.
        if !feed.ended {
            while let Ok(ToWriter::Image(_, buf)) = inbox.recv() {
                if outbox.send(FromWriter::Buf(buf, false)).is_err() {
                    return;
                }
            }
        }
        if outbox.send(FromWriter::Ended(res)).is_err() {
            return;
        }
    }
}

/// The round's images as the writer thread hands them to the backend.
struct Feed<'a> {
    inbox: &'a Receiver<ToWriter>,
    outbox: &'a Sender<FromWriter>,
    /// The message that opened the stream.
    first: Option<ToWriter>,
    /// The round's `End` (or its hang-up) was seen.
    ended: bool,
}

impl ImageFeed for Feed<'_> {
    fn next(&mut self, wait: bool) -> ImageNext {
        if self.ended {
            return ImageNext::End;
        }
        let msg = match self.first.take() {
            Some(msg) => Some(msg),
            None if wait => self.inbox.recv().ok(),
            None => match self.inbox.try_recv() {
                Ok(msg) => Some(msg),
                Err(TryRecvError::Empty) => return ImageNext::NotYet,
                Err(TryRecvError::Disconnected) => None,
            },
        };
        match msg {
            Some(ToWriter::Image(guid, buf)) => ImageNext::Image(guid, buf),
            Some(ToWriter::End) | None => {
                self.ended = true;
                ImageNext::End
            }
        }
    }

    fn done(&mut self, _guid: BlobGuid, buf: AlignedBlobBuf, ok: bool) {
        // The round side may be gone (dropped mid-round); the buffer is
        // then dropped here, its write finished.
        let _ = self.outbox.send(FromWriter::Buf(buf, ok));
    }
}
