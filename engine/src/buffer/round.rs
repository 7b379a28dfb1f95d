//! A write-back round's steps in the buffer manager (`checkpoint::round`
//! drives them; without a WAL, `TreeInner::write_back` does): image
//! buffers prepared before the cut ([`BufferManager::prepare_images`]);
//! the cut itself, under the commit gate, draining the dirty and
//! pending-delete maps (I3) and arming each drained frame's capture slot
//! ([`BufferManager::begin_round`]); the captures and their writes after
//! the gate ([`BufferManager::capture_round`], streamed through the
//! image writer for rounds above one capture batch); the remaining
//! writes and deletes ([`BufferManager::persist`]); and the end, which
//! disarms, completes or restores the drained entries and pools the
//! buffers ([`Round`]'s finish, also on drop). The capture rules are
//! stated in `buffer` ("Captures").

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::cached_blob::CachedBlob;
use super::image_writer::ImageWriter;
use super::manager::BufferManager;
use crate::api::errors::{Error, Result};
use crate::frame::image::CaptureImage;
use crate::frame::{capture, header, PAGES};
use crate::store::{AlignedBlobBuf, BlobGuid};

/// Most image buffers kept for reuse between rounds: a sixteenth of the
/// cache capacity, at least [`PREPARED_SLACK`] and at most 64 (32 MiB),
/// because idle buffers count against the memory budget like
/// cached frames (`checkpoint::pressure`). A round takes at most two
/// capture batches of buffers ([`capture_batch`]) however many frames it
/// writes, which is never more than this bound (it reuses each one once
/// its image's write has finished, see `image_writer`),
/// so a small pool no longer means allocating per frame (that churn —
/// page zeroing, `munmap` TLB shootdowns — once raised a concurrent
/// writer's p99 during a 2000-frame round to 4-6x its idle value). The
/// same bound is the number of frame buffers the first round asks the
/// backend to reserve (io_uring: registered arena slots).
const MAX_POOLED_IMAGES: usize = 64;

/// Most frames per capture batch: a round of at most one batch writes its
/// images as one backend batch; a larger one streams them to the tree's
/// image writer thread as they are sealed (see `image_writer`), holding
/// at most two batches of buffers and reusing each as its write finishes.
const CAPTURE_BATCH: usize = 32;

/// Frames per capture batch for a cache of `capacity` frames: half the
/// image buffers the pool keeps ([`pooled_images`]), at least 4 and at
/// most [`CAPTURE_BATCH`]. A round takes at most two batches of buffers,
/// so its image memory is at most what the pool keeps between rounds, and a round finds all of
/// them pooled instead of allocating (and faulting in) fresh ones every
/// time (with batches of 32 against a pool of 16, as the checkpoint
/// bench's 64-frame trees have, a round took 27-29 ms of CPU instead of
/// 10-12 ms, single runs).
/// Besides these, a round holds the 1 KiB pages writers save after the
/// cut (`frame::image`), not one image per dirty frame: a tree that fits
/// its pool can be checkpointed without doubling it.
pub(super) fn capture_batch(capacity: usize) -> usize {
    (pooled_images(capacity) / 2).clamp(4, CAPTURE_BATCH)
}

/// Pooled image buffers prepared beyond the dirty count, for frames
/// marked between the preparation and the cut (fresh ones are allocated
/// only up to the dirty count).
const PREPARED_SLACK: usize = 8;

/// Page buffers a round reserves per dirty frame before its cut, for
/// writers' saves (P2): a put saves one page or two of a frame, and a
/// busy frame a few more before the round reaches it.
const SAVED_PAGES_PER_FRAME: usize = 4;

/// Image buffers pooled for a cache of `capacity` frames: a sixteenth of
/// it, within [`PREPARED_SLACK`] ..= [`MAX_POOLED_IMAGES`]. Between
/// rounds, page buffers for saves keep at most half as much memory.
pub(super) fn pooled_images(capacity: usize) -> usize {
    (capacity / 16).clamp(PREPARED_SLACK, MAX_POOLED_IMAGES)
}

impl BufferManager {
    /// Serialises write-back rounds; hold it across `begin_round` ..
    /// `finish_round`. At most one round is therefore in flight, so at
    /// most one round's captures are armed at a time.
    pub(crate) fn round_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.flush_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_captures(&self) -> std::sync::MutexGuard<'_, Vec<CaptureImage>> {
        self.captures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Image buffers for the next round's captures, taken *before* the
    /// commit gate: one per frame dirty now, up to two capture batches, plus
    /// a few pooled ones for marks that arrive before the cut — the
    /// backend's arena buffers first (the first round reserves them).
    /// Fresh buffers are touched here, so the round's copies do not pay
    /// their page faults.
    ///
    /// The page pool for writers' saves is topped up here too (P2), and
    /// one capture per dirty frame (plus slack) is made with room for all
    /// its pages, so no writer's save grows a page list.
    pub(crate) fn prepare_images(&self) -> Vec<AlignedBlobBuf> {
        let dirty = self.dirty.len();
        self.page_pool.reserve(
            dirty.saturating_mul(SAVED_PAGES_PER_FRAME),
            dirty.saturating_mul(PAGES),
        );
        let fresh: Vec<CaptureImage> = (0..dirty + PREPARED_SLACK)
            .map(|_| CaptureImage::with_room(&self.page_pool, PAGES))
            .collect();
        *self.lock_captures() = fresh;
        self.image_pool.for_round(
            &*self.backend,
            self.dirty.len().min(2 * self.capture_batch),
            PREPARED_SLACK,
        )
    }

    /// The cut (call under the commit gate, which keeps every writer out):
    /// drains the dirty and pending-delete maps (I3) and arms the capture
    /// slot of every drained frame, without a buffer; `images` become the
    /// round's spare buffers. No frame is copied here: after the gate, the
    /// first store into an armed frame takes a buffer and saves the pages
    /// it changes, and [`BufferManager::capture_round`] copies the rest.
    /// Images are stamped with `max_seq` if given.
    pub(crate) fn begin_round(
        &self,
        max_seq: Option<u64>,
        images: Vec<AlignedBlobBuf>,
    ) -> Round<'_> {
        let id = self.round_ids.fetch_add(1, Ordering::Relaxed);
        let dirty = self.dirty.drain();
        let deletes = self.pending_deletes.drain();
        let mut armed = Vec::with_capacity(dirty.len());
        let mut spare = images;
        let mut captures = std::mem::take(&mut *self.lock_captures());
        for guid in dirty.keys() {
            // Dirty frames are never evicted (I1); one missing from the
            // cache was retired (and its delete is queued), or is the
            // leftover of a failed round's restore.
            if let Some(b) = self.cached(guid) {
                if let Some(stale) = b.frame.capture.arm(
                    id,
                    captures
                        .pop()
                        .unwrap_or_else(|| CaptureImage::with_room(&self.page_pool, PAGES)),
                ) {
                    spare.extend(stale.into_whole());
                }
                armed.push(b);
            }
        }
        // Unused ones (frames cleaned since) go back, to be dropped by the
        // next prepare rather than freed under the gate.
        *self.lock_captures() = captures;
        Round {
            bm: self,
            finished: false,
            id,
            max_seq,
            dirty,
            deletes,
            armed,
            images: Vec::new(),
            spare,
            written: 0,
            writer: self
                .image_writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    /// After the gate: completes every armed frame's image as of the cut
    /// — the pages no store saved are copied here, under the frame's
    /// shared latch, into the buffer a store took or a spare one — then
    /// stamps and seals it (free slots: nothing durable refers to them
    /// before the round's manifest). A round of more than one capture
    /// batch ([`capture_batch`]) hands each image to the tree's image
    /// writer thread as soon as it is sealed, which streams it to the
    /// backend while the round captures on (see `image_writer`), and takes
    /// buffers back as their writes finish; it waits for one only when it
    /// has no spare left, so the writes in flight are bounded by the
    /// round's buffers (the image pool), not by a batch. A smaller round
    /// keeps its images for [`BufferManager::persist`], which writes them
    /// as one batch.
    pub(crate) fn capture_round(&self, r: &mut Round<'_>) -> Result<()> {
        let n = r.armed.len();
        let stream = n > self.capture_batch;
        for i in 0..n {
            if stream {
                // Buffers whose writes finished, and a wait for one when
                // none is spare (not while a frame latch is held).
                r.writer.reclaim(&mut r.spare, false)?;
                if r.spare.is_empty() && r.writer.out() > 0 {
                    r.writer.reclaim(&mut r.spare, true)?;
                }
            }
            if i % self.capture_batch == 0 && i > 0 {
                // Frames not captured yet stay armed while earlier images
                // are written, and their saves should find pooled pages.
                self.page_pool.top_up();
            }
            let b = Arc::clone(&r.armed[i]);
            let frame = &b.frame;
            let spare = &mut r.spare;
            let mut take = || spare.pop().unwrap_or_else(AlignedBlobBuf::uninit);
            let fill = |img: &mut CaptureImage, page: usize| {
                img.make_whole(&mut take);
                img.fill(page, |dst| frame.read_page(page, dst));
            };
            let Some(mut img) =
                capture::capture_shared(&b.latch, &frame.capture, r.id, PAGES, fill)
            else {
                return Err(Error::Internal("checkpoint capture missing"));
            };
            // Every page may have been saved by stores.
            img.make_whole(|| r.spare.pop().unwrap_or_else(AlignedBlobBuf::uninit));
            let Some(mut buf) = img.into_whole() else {
                return Err(Error::Internal("checkpoint capture incomplete"));
            };
            if let Some(seq) = r.max_seq {
                let at = header::OFF_MAX_SEQ;
                buf.as_mut_slice()[at..at + 8].copy_from_slice(&seq.to_le_bytes());
            }
            header::seal_image(buf.as_mut_slice());
            if stream {
                r.writer.send(b.guid, buf, &mut r.spare)?;
                r.written += 1;
            } else {
                r.images.push((b.guid, buf));
            }
        }
        Ok(())
    }

    /// Writes the round's captured images (one batch) and keeps their
    /// buffers as spares, up to a batch.
    fn write_images(&self, r: &mut Round<'_>) -> Result<()> {
        let refs: Vec<(BlobGuid, &AlignedBlobBuf)> =
            r.images.iter().map(|(g, b)| (*g, b)).collect();
        self.backend.write_blobs(&refs)?;
        r.written += r.images.len();
        for (_, buf) in r.images.drain(..) {
            if r.spare.len() < self.capture_batch {
                r.spare.push(buf);
            }
        }
        Ok(())
    }

    /// Waits for the round's writer thread (every image it was sent),
    /// then writes the round's remaining images (one batch; none if the
    /// writer ran) and its deletes to the backend.
    pub(crate) fn persist(&self, r: &mut Round<'_>) -> Result<()> {
        let res = r.writer.wait(&mut r.spare);
        let res = res.and_then(|()| self.write_images(r)).and_then(|()| {
            for g in r.deletes.keys() {
                self.backend.delete_blob(*g)?;
            }
            Ok(())
        });
        // Even a failed round may have replaced some images; loads in
        // flight must not trust what they read before this point.
        let _bump = self
            .bump_lock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.writebacks.fetch_add(1, Ordering::AcqRel);
        res
    }

    /// Ends a round: disarms every capture it still has pending (a failed
    /// round may stop before capturing), then forgets its entries, or
    /// merges them back (I3). Its image buffers go back to the pool.
    /// Returns the frames it captured.
    pub(crate) fn finish_round(&self, mut r: Round<'_>, ok: bool) -> usize {
        r.finish(ok)
    }

    /// Cached frames whose capture slot is armed (tests: no armed slot
    /// may outlive its round).
    #[cfg(test)]
    pub(crate) fn armed_frames(&self) -> usize {
        let mut n = 0;
        self.map.for_each_upto(usize::MAX, |b| {
            n += usize::from(b.frame.capture.is_armed());
        });
        n
    }
}

/// What one write-back round drained, armed and captured. Dropping a
/// round that was not finished (a panic between the cut and the finish)
/// finishes it as failed, so neither an armed slot nor an in-flight entry
/// outlives it.
pub(crate) struct Round<'a> {
    bm: &'a BufferManager,
    finished: bool,
    /// Nonzero; names the round in its frames' capture slots.
    id: u64,
    max_seq: Option<u64>,
    pub(crate) dirty: HashMap<BlobGuid, u64>,
    pub(crate) deletes: HashMap<BlobGuid, u64>,
    /// Frames armed at the cut (pinned: a frame retired after the cut is
    /// still captured, since it existed at the cut).
    armed: Vec<Arc<CachedBlob>>,
    /// Captured images not yet written.
    pub(crate) images: Vec<(BlobGuid, AlignedBlobBuf)>,
    /// Buffers for the next captures.
    spare: Vec<AlignedBlobBuf>,
    /// Images handed to the backend (written, or at the writer thread).
    written: usize,
    /// The tree's image writer, held for the round (no other round can
    /// run anyway); it owns the buffers of the images it is writing.
    writer: std::sync::MutexGuard<'a, ImageWriter>,
}

impl Round<'_> {
    /// Frames captured so far (written or not).
    pub(crate) fn captured(&self) -> usize {
        self.written + self.images.len()
    }
}

impl Round<'_> {
    fn finish(&mut self, ok: bool) -> usize {
        self.finished = true;
        let bm = self.bm;
        // First of all: no write of this round may outlive it (a late one
        // would remap a frame after the next round rewrote it), and the
        // images at the writer own their buffers until written. A
        // successful round's `persist` already did this; a failed round's
        // error is already known, so a second one is dropped here.
        let _ = self.writer.wait(&mut self.spare);
        let mut bufs: Vec<AlignedBlobBuf> = self
            .armed
            .drain(..)
            .filter_map(|b| b.frame.capture.disarm().and_then(CaptureImage::into_whole))
            .collect();
        bufs.append(&mut self.spare);
        if ok {
            bm.dirty.complete(&self.dirty);
            bm.pending_deletes.complete(&self.deletes);
        } else {
            bm.dirty.restore(&self.dirty);
            bm.pending_deletes.restore(&self.deletes);
        }
        let frames = self.captured();
        bufs.extend(std::mem::take(&mut self.images).into_iter().map(|(_, b)| b));
        bm.recycle(bufs);
        bm.page_pool.trim();
        frames
    }
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::manager::tests::with_clean_frames;
    use crate::frame::mem::PAGE;
    use crate::frame::HEADER_SIZE;

    /// A round arms every dirty frame with a capture made before the
    /// gate, room for all of the frame's pages already allocated, so no
    /// writer's save grows its page list. Deliberate bug caught: arming
    /// with `CaptureImage::empty` (room 0), as before.
    #[test]
    fn a_round_arms_captures_with_room_for_every_page() {
        let (bm, guids) = with_clean_frames(3, 8);
        for g in &guids {
            bm.mark_dirty(*g, 7);
        }
        let _serial = bm.round_lock();
        let images = bm.prepare_images();
        let round = bm.begin_round(None, images);
        for g in &guids {
            let room = bm
                .cached(g)
                .unwrap()
                .frame
                .capture
                .with_armed_buf(CaptureImage::page_room);
            assert_eq!(room, Some(Some(PAGES)), "frame {g:?}");
        }
        bm.finish_round(round, false);
    }

    /// A writer's small store into an armed frame copies one 1 KiB unit
    /// of it, not a 4 KiB page, and the round's image still holds the
    /// frame as of the cut (the store's bytes before it, every other
    /// unit as it was). The saves are most of what a concurrent writer
    /// pays during a round (a quarter to a third of its puts at 512
    /// frames). Deliberate bug caught: `PAGE` back at 4096 (the store
    /// saves 4 KiB).
    #[test]
    fn a_small_store_into_an_armed_frame_saves_one_kib() {
        let (bm, guids) = with_clean_frames(1, 8);
        let g = guids[0];
        let b = bm.cached(&g).unwrap();
        let at = 100 * 1024 + 1000; // inside unit 100
        let mut before = Vec::new();
        b.frame
            .read_into(0, crate::store::FRAME_SIZE, &mut before)
            .unwrap();
        bm.mark_dirty(g, 7);
        let _serial = bm.round_lock();
        let images = bm.prepare_images();
        let mut round = bm.begin_round(None, images);
        let v = b.latch.lock_exclusive_raw();
        b.frame.write(at, &[0xAB; 16]).unwrap();
        b.latch.unlock_exclusive_raw(v);
        let room = b.frame.capture.with_armed_buf(CaptureImage::page_room);
        let saved = PAGES - room.flatten().unwrap();
        assert_eq!(saved * PAGE, 1024, "16 bytes inside one 1 KiB unit");
        bm.capture_round(&mut round).unwrap();
        bm.persist(&mut round).unwrap();
        bm.finish_round(round, true);
        let mut image = AlignedBlobBuf::zeroed();
        bm.backend().read_blob(g, &mut image).unwrap();
        let (image, before) = (image.as_slice(), &before[..]);
        assert_eq!(image[at..at + 16], before[at..at + 16], "the cut's bytes");
        assert_eq!(image[HEADER_SIZE..], before[HEADER_SIZE..]);
    }
}
