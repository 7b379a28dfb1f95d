//! The buffer manager: pins frames into the cache, loads misses from the
//! backend (verifying checksum, GUID and structure), creates and retires
//! frames, evicts cold clean frames, and writes dirty frames back.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::cached_blob::CachedBlob;
use super::counters::Counter;
use super::dirty::SeqMap;
use super::eviction;
use crate::api::errors::{Error, Result};
use crate::frame::{capture, copy, header, AtomicFrame, PAGES};
use crate::store::{AlignedBlobBuf, Backend, BlobGuid};

/// Root frame GUID: every tree's root frame has this name.
pub(crate) const ROOT_GUID: BlobGuid = [0u8; 16];

#[derive(Debug, Default)]
pub(crate) struct BmCounters {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) restarts: Counter,
    pub(crate) evictions: Counter,
    /// Keys erased: background merge passes run only after erases (a
    /// tree that only grows has nothing to fold back).
    pub(crate) erases: Counter,
}

pub(crate) struct BufferManager {
    map: DashMap<BlobGuid, Arc<CachedBlob>>,
    backend: Arc<dyn Backend>,
    pub(crate) dirty: SeqMap,
    pub(crate) pending_deletes: SeqMap,
    capacity: usize,
    clock: AtomicU64,
    pub(crate) counters: BmCounters,
    /// Serialises write-back rounds (each drains, writes, completes).
    flush_lock: Mutex<()>,
    guid_seed: std::collections::hash_map::RandomState,
    guid_counter: AtomicU64,
    /// Bumped after every successful write-back, before the frames it
    /// cleaned become evictable (see `load`).
    writebacks: AtomicU64,
    /// Image buffers of finished rounds, reused by the next captures.
    image_pool: Mutex<Vec<AlignedBlobBuf>>,
    /// Next round id (capture slots name their round; 0 is "none").
    round_ids: AtomicU64,
}

/// Most image buffers kept for reuse (also at most half the cache
/// capacity, at least 4). Retention is a memory/latency trade: a round
/// with more dirty frames than the pool holds allocates (and pre-faults)
/// the rest and frees them afterwards, and on two cores that churn —
/// page zeroing, `munmap` TLB shootdowns — raised a concurrent writer's
/// p99 during a 2000-frame round from about 1.1x to 4-6x its idle value.
/// The pool may therefore hold up to half the cache's size in idle
/// buffers after a large round.
const MAX_POOLED_IMAGES: usize = 4096;

/// Pooled image buffers prepared beyond the dirty count, for frames
/// marked between the preparation and the cut (fresh ones are allocated
/// only up to the dirty count).
const PREPARED_SLACK: usize = 8;

/// Optimistic load attempts before a load reads under the shard lock.
const LOAD_RETRIES: usize = 4;

impl std::fmt::Debug for BufferManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferManager")
            .field("cached", &self.map.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn corrupt(guid: BlobGuid, e: crate::frame::Corrupt) -> Error {
    Error::node_corrupt(e.0).with_blob_guid(guid)
}

impl BufferManager {
    pub(crate) fn new(backend: Arc<dyn Backend>, capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            backend,
            dirty: SeqMap::default(),
            pending_deletes: SeqMap::default(),
            capacity: capacity.max(1),
            clock: AtomicU64::new(1),
            counters: BmCounters::default(),
            flush_lock: Mutex::new(()),
            guid_seed: std::collections::hash_map::RandomState::new(),
            guid_counter: AtomicU64::new(1),
            writebacks: AtomicU64::new(0),
            image_pool: Mutex::new(Vec::new()),
            round_ids: AtomicU64::new(1),
        }
    }

    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// A fresh, unique frame name (random, never the root's).
    pub(crate) fn new_guid(&self) -> BlobGuid {
        loop {
            let n = self.guid_counter.fetch_add(1, Ordering::Relaxed);
            let mut out = [0u8; 16];
            for (i, half) in out.chunks_exact_mut(8).enumerate() {
                let mut h = self.guid_seed.build_hasher();
                h.write_u64(n);
                h.write_usize(i);
                half.copy_from_slice(&h.finish().to_le_bytes());
            }
            if out != ROOT_GUID {
                return out;
            }
        }
    }

    fn tick(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Pins `guid` (counted as a hit or a miss).
    #[inline]
    pub(crate) fn pin(&self, guid: &BlobGuid) -> Result<Arc<CachedBlob>> {
        if let Some(b) = self.map.get(guid) {
            self.counters.hits.add(1);
            b.touch(self.tick());
            return Ok(Arc::clone(&b));
        }
        self.counters.misses.add(1);
        self.load(guid)
    }

    /// Pins without touching counters or recency (for stats).
    pub(crate) fn pin_silent(&self, guid: &BlobGuid) -> Result<Arc<CachedBlob>> {
        if let Some(b) = self.map.get(guid) {
            return Ok(Arc::clone(&b));
        }
        self.load(guid)
    }

    /// Pins only if cached.
    pub(crate) fn cached(&self, guid: &BlobGuid) -> Option<Arc<CachedBlob>> {
        self.map.get(guid).map(|b| Arc::clone(&b))
    }

    /// Reads, verifies and caches a frame.
    fn load(&self, guid: &BlobGuid) -> Result<Arc<CachedBlob>> {
        // An image read from the backend may be stale by the time it is
        // inserted: the frame could have been loaded by another thread,
        // changed, written back and evicted meanwhile. Write-backs bump
        // `writebacks` before the frames they cleaned can be evicted, so a
        // loader that sees the counter unchanged when it inserts (under
        // the shard lock that eviction also needs) read a current image.
        // After a few lost races it reads under the shard lock itself.
        for _ in 0..LOAD_RETRIES {
            let epoch = self.writebacks.load(Ordering::Acquire);
            let frame = self.read_frame(guid)?;
            match self.map.entry(*guid) {
                dashmap::Entry::Occupied(e) => return Ok(Arc::clone(e.get())),
                dashmap::Entry::Vacant(v) => {
                    if self.writebacks.load(Ordering::Acquire) != epoch {
                        continue;
                    }
                    let blob = Arc::clone(&v.insert(self.new_blob(*guid, frame)));
                    return Ok(self.after_load(blob));
                }
            }
        }
        let blob = match self.map.entry(*guid) {
            dashmap::Entry::Occupied(e) => Arc::clone(e.get()),
            dashmap::Entry::Vacant(v) => {
                let frame = self.read_frame(guid)?;
                Arc::clone(&v.insert(self.new_blob(*guid, frame)))
            }
        };
        Ok(self.after_load(blob))
    }

    /// Reads and checks one frame image (checksum, name, structure).
    fn read_frame(&self, guid: &BlobGuid) -> Result<AtomicFrame> {
        let mut buf = AlignedBlobBuf::uninit();
        self.backend.read_blob(*guid, &mut buf)?;
        let image = buf.as_slice();
        header::verify_image_crc(image).map_err(|e| corrupt(*guid, e))?;
        let frame = AtomicFrame::from_image(image).map_err(|e| corrupt(*guid, e))?;
        copy::validate(&frame, guid).map_err(|e| corrupt(*guid, e))?;
        Ok(frame)
    }

    fn new_blob(&self, guid: BlobGuid, frame: AtomicFrame) -> Arc<CachedBlob> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        Arc::new(CachedBlob::new(guid, frame, tick))
    }

    fn after_load(&self, blob: Arc<CachedBlob>) -> Arc<CachedBlob> {
        self.evict_over_capacity();
        #[cfg(feature = "tracing")]
        tracing::trace!(guid = ?&blob.guid[..4], "frame loaded");
        blob
    }

    /// Adds a frame the walker just built (spillover or a fresh root). It
    /// enters the cache and the dirty map only (DESIGN.md §5).
    pub(crate) fn insert_new(
        &self,
        guid: BlobGuid,
        frame: AtomicFrame,
        seq: u64,
    ) -> Arc<CachedBlob> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let blob = Arc::new(CachedBlob::new(guid, frame, tick));
        self.map.insert(guid, Arc::clone(&blob));
        self.dirty.mark(guid, seq);
        blob
    }

    /// A frame was folded into its parent or unlinked: it leaves the cache
    /// and the dirty map and waits in pending deletes for the next round.
    /// Caller holds its exclusive latch (and has marked it obsolete).
    pub(crate) fn retire(&self, guid: &BlobGuid, seq: u64) {
        self.map.remove(guid);
        let s = self.dirty.remove(guid).map_or(seq, |d| d.min(seq));
        self.pending_deletes.mark(*guid, s);
    }

    pub(crate) fn mark_dirty(&self, guid: BlobGuid, seq: u64) {
        self.dirty.mark(guid, seq);
    }

    /// Evicts cold frames while the cache is over capacity. Never a
    /// pinned, dirty, in-flight or pending-delete frame (I1); if every
    /// frame is such, the cache stays over capacity for now.
    pub(crate) fn evict_over_capacity(&self) {
        while self.map.len() > self.capacity {
            if !self.evict_one(|_| true) {
                break;
            }
        }
    }

    /// Background sweep: evicts clean, unpinned frames untouched for more
    /// than `idle_ticks` clock ticks (the clock advances per load).
    pub(crate) fn evict_idle(&self, idle_ticks: u64) -> usize {
        let now = self.tick();
        let mut n = 0;
        while self.evict_one(|b| b.last_touched().saturating_add(idle_ticks) < now) {
            n += 1;
        }
        n
    }

    fn evictable(&self, b: &Arc<CachedBlob>) -> bool {
        // The map holds one reference; any other is a pin.
        eviction::evictable(
            Arc::strong_count(b).saturating_sub(1),
            &b.guid,
            &self.dirty,
            &self.pending_deletes,
        )
    }

    fn evict_one(&self, filter: impl Fn(&CachedBlob) -> bool) -> bool {
        let mut victim: Option<(u64, BlobGuid)> = None;
        for e in self.map.iter().take(4096) {
            let b = e.value();
            if b.guid == ROOT_GUID || !filter(b) || !self.evictable(b) {
                continue;
            }
            let t = b.last_touched();
            if victim.is_none_or(|(vt, _)| t < vt) {
                victim = Some((t, b.guid));
            }
        }
        let Some((_, guid)) = victim else {
            return false;
        };
        let gone = self
            .map
            .remove_if(&guid, |_, b| self.evictable(b))
            .is_some();
        if gone {
            self.counters.evictions.add(1);
            #[cfg(feature = "tracing")]
            tracing::debug!(guid = ?&guid[..4], "frame evicted");
        }
        gone
    }

    /// Serialises write-back rounds; hold it across `begin_round` ..
    /// `finish_round`. At most one round is therefore in flight, so at
    /// most one round's captures are armed at a time.
    pub(crate) fn round_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.flush_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Image buffers for the next round's captures, taken *before* the
    /// commit gate: one per frame dirty now, plus a few for marks that
    /// arrive before the cut. Fresh buffers are touched here, so neither
    /// the gate nor a writer's copy-on-write pays their page faults.
    pub(crate) fn prepare_images(&self) -> Vec<AlignedBlobBuf> {
        let n = self.dirty.len();
        let mut out = {
            let mut pool = self
                .image_pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let keep = pool.len().saturating_sub(n + PREPARED_SLACK);
            pool.split_off(keep)
        };
        while out.len() < n {
            let mut buf = AlignedBlobBuf::uninit();
            for page in buf.as_mut_slice().chunks_exact_mut(4096) {
                page[0] = 0;
            }
            out.push(buf);
        }
        out
    }

    /// The cut (call under the commit gate, which keeps every writer out):
    /// drains the dirty and pending-delete maps (I3) and arms the capture
    /// slot of every drained frame with a buffer from `images` (the
    /// leftovers go back to the pool). No frame is copied here: after the
    /// gate, stores into an armed frame save the pages they change first,
    /// and [`BufferManager::capture_round`] copies the rest. Images are
    /// stamped with `max_seq` if given.
    pub(crate) fn begin_round(
        &self,
        max_seq: Option<u64>,
        mut images: Vec<AlignedBlobBuf>,
    ) -> Round<'_> {
        let id = self.round_ids.fetch_add(1, Ordering::Relaxed);
        let dirty = self.dirty.drain();
        let deletes = self.pending_deletes.drain();
        let mut armed = Vec::with_capacity(dirty.len());
        for guid in dirty.keys() {
            // Dirty frames are never evicted (I1); one missing from the
            // cache was retired (and its delete is queued), or is the
            // leftover of a failed round's restore.
            if let Some(b) = self.cached(guid) {
                let buf = images.pop().unwrap_or_else(AlignedBlobBuf::uninit);
                if let Some(stale) = b.frame.capture.arm(id, buf) {
                    images.push(stale);
                }
                armed.push(b);
            }
        }
        self.recycle(images);
        Round {
            bm: self,
            finished: false,
            id,
            max_seq,
            dirty,
            deletes,
            armed,
            images: Vec::new(),
        }
    }

    /// After the gate: completes every armed frame's image as of the cut
    /// — the pages no store saved are copied here, under the frame's
    /// shared latch — then stamps and seals it.
    pub(crate) fn capture_round(&self, r: &mut Round<'_>) -> Result<()> {
        r.images.reserve(r.armed.len());
        for b in &r.armed {
            let frame = &b.frame;
            let fill = |buf: &mut AlignedBlobBuf, page: usize| {
                frame.copy_page(page, buf.as_mut_slice());
            };
            let Some(mut buf) =
                capture::capture_shared(&b.latch, &frame.capture, r.id, PAGES, fill)
            else {
                return Err(Error::Internal("checkpoint capture missing"));
            };
            if let Some(seq) = r.max_seq {
                let at = header::OFF_MAX_SEQ;
                buf.as_mut_slice()[at..at + 8].copy_from_slice(&seq.to_le_bytes());
            }
            header::seal_image(buf.as_mut_slice());
            r.images.push((b.guid, buf));
        }
        Ok(())
    }

    /// Writes a round's images (one batch) and deletes to the backend.
    pub(crate) fn persist(&self, r: &Round<'_>) -> Result<()> {
        let refs: Vec<(BlobGuid, &AlignedBlobBuf)> =
            r.images.iter().map(|(g, b)| (*g, b)).collect();
        let res = self.backend.write_blobs(&refs).and_then(|()| {
            for g in r.deletes.keys() {
                self.backend.delete_blob(*g)?;
            }
            Ok(())
        });
        // Even a failed round may have replaced some images; loads in
        // flight must not trust what they read before this point.
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
        self.map
            .iter()
            .filter(|e| e.value().frame.capture.is_armed())
            .count()
    }

    /// Keeps up to the pool's limit of `bufs` for later rounds.
    fn recycle(&self, bufs: Vec<AlignedBlobBuf>) {
        let mut pool = self
            .image_pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keep = (self.capacity / 2).clamp(4, MAX_POOLED_IMAGES);
        for buf in bufs {
            if pool.len() >= keep {
                break;
            }
            pool.push(buf);
        }
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
    pub(crate) images: Vec<(BlobGuid, AlignedBlobBuf)>,
}

impl Round<'_> {
    fn finish(&mut self, ok: bool) -> usize {
        self.finished = true;
        let bm = self.bm;
        let mut bufs: Vec<AlignedBlobBuf> = self
            .armed
            .drain(..)
            .filter_map(|b| b.frame.capture.disarm())
            .collect();
        if ok {
            bm.dirty.complete(&self.dirty);
            bm.pending_deletes.complete(&self.deletes);
        } else {
            bm.dirty.restore(&self.dirty);
            bm.pending_deletes.restore(&self.deletes);
        }
        let frames = self.images.len();
        bufs.extend(std::mem::take(&mut self.images).into_iter().map(|(_, b)| b));
        bm.recycle(bufs);
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
