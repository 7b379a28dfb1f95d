//! The buffer manager: pins frames into the cache, loads misses from the
//! backend (verifying checksum, GUID and structure), creates and retires
//! frames, evicts cold clean frames, and writes dirty frames back.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::cached_blob::{CachedBlob, FrameRead};
use super::counters::Counter;
use super::dirty::SeqMap;
use crate::api::errors::{Error, Result};
use crate::frame::{copy, header, AtomicFrame};
use crate::mutation;
use crate::store::{AlignedBlobBuf, Backend, BlobGuid};

/// Root frame GUID: every tree's root frame has this name.
pub(crate) const ROOT_GUID: BlobGuid = [0u8; 16];

#[derive(Debug, Default)]
pub(crate) struct BmCounters {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) restarts: Counter,
    pub(crate) evictions: Counter,
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
}

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
        let mut buf = AlignedBlobBuf::uninit();
        self.backend.read_blob(*guid, &mut buf)?;
        let image = buf.as_slice();
        header::verify_image_crc(image).map_err(|e| corrupt(*guid, e))?;
        let frame = AtomicFrame::from_image(image).map_err(|e| corrupt(*guid, e))?;
        copy::validate(&frame, guid).map_err(|e| corrupt(*guid, e))?;
        let tick = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let blob = Arc::clone(
            &*self
                .map
                .entry(*guid)
                .or_insert_with(|| Arc::new(CachedBlob::new(*guid, frame, tick))),
        );
        self.evict_over_capacity();
        #[cfg(feature = "tracing")]
        tracing::trace!(guid = ?&guid[..4], "frame loaded");
        Ok(blob)
    }

    /// Adds a frame the walker just built (spillover or a fresh root). It
    /// enters the cache and the dirty map only (DESIGN.md §5).
    pub(crate) fn insert_new(&self, guid: BlobGuid, frame: AtomicFrame, seq: u64) -> Arc<CachedBlob> {
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

    fn evictable(&self, b: &Arc<CachedBlob>) -> bool {
        // The map's own reference is the only one: nobody has it pinned.
        Arc::strong_count(b) == 1
            && (mutation::EVICT_IGNORES_DIRTY || !self.dirty.contains(&b.guid))
            && !self.pending_deletes.contains(&b.guid)
    }

    fn evict_one(&self, filter: impl Fn(&CachedBlob) -> bool) -> bool {
        let mut victim: Option<(u64, BlobGuid)> = None;
        for e in self.map.iter().take(4096) {
            let b = e.value();
            if b.guid == super::manager::ROOT_GUID || !filter(b) || !self.evictable(b) {
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

    /// A sealed image of the frame as of now (shared latch: no writer
    /// inside, readers undisturbed).
    pub(crate) fn capture(&self, blob: &Arc<CachedBlob>) -> AlignedBlobBuf {
        let mut buf = AlignedBlobBuf::uninit();
        {
            let _g = FrameRead::lock(Arc::clone(blob));
            blob.frame.copy_to(buf.as_mut_slice());
        }
        header::seal_image(buf.as_mut_slice());
        buf
    }

    /// Writes every dirty frame and pending delete to the backend (the
    /// no-WAL checkpoint, and `memory_flush_on_write`). On failure the
    /// drained entries go back (I3) and the error is returned.
    pub(crate) fn write_back(&self) -> Result<usize> {
        let _serial = match self.flush_lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let drained = self.dirty.drain();
        let deletes = self.pending_deletes.drain();
        let mut images = Vec::with_capacity(drained.len());
        for guid in drained.keys() {
            if let Some(b) = self.cached(guid) {
                images.push((*guid, self.capture(&b)));
            }
        }
        let refs: Vec<(BlobGuid, &AlignedBlobBuf)> = images.iter().map(|(g, b)| (*g, b)).collect();
        if let Err(e) = self.backend.write_blobs(&refs) {
            self.dirty.restore(&drained);
            self.pending_deletes.restore(&deletes);
            return Err(e);
        }
        self.dirty.complete(&drained);
        let mut failed: HashMap<BlobGuid, u64> = HashMap::new();
        let mut first_err = None;
        for (g, s) in &deletes {
            if let Err(e) = self.backend.delete_blob(*g) {
                failed.insert(*g, *s);
                first_err.get_or_insert(e);
            }
        }
        self.pending_deletes.complete(&deletes);
        if let Some(e) = first_err {
            self.pending_deletes.restore(&failed);
            return Err(e);
        }
        Ok(images.len())
    }
}
