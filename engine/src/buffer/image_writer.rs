//! Write-behind for checkpoint images: a round hands each full capture
//! batch to the tree's image writer thread and captures the next batch
//! while the backend writes this one, so the frame copies (CPU) and the
//! frame writes (disk) overlap instead of taking turns.
//!
//! The rules:
//!
//! * **One batch at the writer.** [`ImageWriter::submit`] first waits for
//!   the batch handed over before (and takes its buffers back), then hands
//!   over the new one. A round therefore holds at most two batches of
//!   image buffers: one being written, one being captured.
//! * **Buffers move, they are not lent.** A batch's buffers are owned by
//!   the writer thread while it calls [`Backend::write_blobs`], and that
//!   call returns only once the backend is done with every one of them
//!   (on io_uring: every SQE reaped, success or error). They come back to
//!   the round only through the completion message sent after it, so no
//!   buffer can be reused or freed while the kernel may still use it —
//!   by ownership, without `unsafe`.
//! * **No error is lost.** A batch's result is returned by the
//!   [`submit`](ImageWriter::submit) or [`wait`](ImageWriter::wait)
//!   that takes the batch back; the round fails at the first error it sees
//!   and hands over nothing more. [`wait`](ImageWriter::wait) also runs
//!   when the round ends, failed or not, so no write of a round outlives
//!   it (a late write would otherwise remap a frame after the next round
//!   wrote it again).
//! * **One thread per tree, started when it pays.** The thread is spawned
//!   at the first hand-over, which a round makes only when frames remain
//!   to capture after a full batch (a round of one batch or less, and
//!   every write-through in memory mode, writes inline as before), and
//!   then serves every later round of the tree (rounds are serialised by
//!   the round lock) until the buffer manager drops, which stops and joins
//!   it. One long-lived thread rather than one per round, so a round
//!   pays no thread start and, on io_uring, the kernel's per-thread
//!   submission state (and io-wq workers) is set up once; a thread per
//!   round measured no different, within noise, in one run. If the
//!   thread cannot be spawned, batches are written inline.
//!
//! Layering is unchanged: the writer calls the round's [`Backend`], never
//! the I/O driver, and nothing below the engine knows about it.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::api::errors::{Error, Result};
use crate::store::{AlignedBlobBuf, Backend, BlobGuid};

/// Captured images of one batch: the frame's guid and its sealed image.
pub(crate) type Batch = Vec<(BlobGuid, AlignedBlobBuf)>;

/// A batch back from the writer, with the result of its write.
struct Done {
    batch: Batch,
    res: Result<()>,
}

/// The writer thread and its two channels.
struct Worker {
    to: Option<SyncSender<Batch>>,
    from: Receiver<Done>,
    handle: Option<JoinHandle<()>>,
}

/// See the module documentation.
pub(crate) struct ImageWriter {
    backend: Arc<dyn Backend>,
    /// `None` until the first hand-over; stays `None` if spawning failed.
    worker: Option<Worker>,
    /// Spawning was tried (and failed, if `worker` is `None`).
    tried: bool,
    /// A batch is at the writer.
    in_flight: bool,
}

impl ImageWriter {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            worker: None,
            tried: false,
            in_flight: false,
        }
    }

    /// Waits for the batch at the writer, if any, and returns its result;
    /// its buffers are appended to `spare`.
    pub(crate) fn wait(&mut self, spare: &mut Vec<AlignedBlobBuf>) -> Result<()> {
        if !self.in_flight {
            return Ok(());
        }
        self.in_flight = false;
        let Some(w) = &self.worker else {
            return Ok(());
        };
        match w.from.recv() {
            Ok(done) => {
                spare.extend(done.batch.into_iter().map(|(_, buf)| buf));
                done.res
            }
            // The thread ended without answering: it panicked inside the
            // backend's write (whose buffers its unwind dropped only after
            // the backend reaped them).
            Err(_) => Err(Error::Internal("checkpoint writer thread ended")),
        }
    }

    /// Hands `batch` to the writer after taking back the batch there
    /// before it (its buffers go to `spare`). Returns the earlier batch's
    /// result: on an error, `batch` is not handed over but returned in
    /// `Err` with it, so its buffers stay the round's. Without a writer
    /// thread the batch is written here and its buffers go to `spare`.
    pub(crate) fn submit(
        &mut self,
        batch: Batch,
        spare: &mut Vec<AlignedBlobBuf>,
    ) -> std::result::Result<(), (Error, Batch)> {
        if let Err(e) = self.wait(spare) {
            return Err((e, batch));
        }
        if !self.tried {
            self.tried = true;
            self.worker = self.spawn();
        }
        let Some(w) = &self.worker else {
            let res = write(&*self.backend, &batch);
            spare.extend(batch.into_iter().map(|(_, buf)| buf));
            return res.map_err(|e| (e, Vec::new()));
        };
        let Some(to) = &w.to else {
            return Err((Error::Internal("checkpoint writer closed"), batch));
        };
        match to.send(batch) {
            Ok(()) => {
                self.in_flight = true;
                Ok(())
            }
            Err(back) => Err((Error::Internal("checkpoint writer thread ended"), back.0)),
        }
    }

    /// Waits for the batch in flight (its buffers are dropped after it
    /// is written), stops and joins the thread.
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
        // Capacity 1: `submit` waits for the previous batch before it
        // sends, so the channel never holds more than the one batch.
        let (to, inbox) = sync_channel::<Batch>(1);
        let (outbox, from) = sync_channel::<Done>(1);
        let backend = Arc::clone(&self.backend);
        let handle = std::thread::Builder::new()
            .name("holt-ckpt-write".into())
            .spawn(move || {
                for batch in inbox {
                    let res = write(&*backend, &batch);
                    if outbox.send(Done { batch, res }).is_err() {
                        return;
                    }
                }
            })
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

/// One backend batch for `batch`'s images.
fn write(backend: &dyn Backend, batch: &Batch) -> Result<()> {
    let refs: Vec<(BlobGuid, &AlignedBlobBuf)> = batch.iter().map(|(g, b)| (*g, b)).collect();
    backend.write_blobs(&refs)
}
