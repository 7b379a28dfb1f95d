//! The frame table: GUID → cached frame, readable without writing shared
//! memory.
//!
//! Readers look frames up under a [`Guard`] and get a plain reference:
//! no shard lock and no reference-count bump per frame hop (DESIGN.md §5,
//! "the read hot path writes no shared cache line"). An entry removed from
//! the table (eviction, retirement) is freed only after every guard that
//! could have seen it is gone, so a reader's reference never dangles.
//!
//! A reference from the table is *not* a pin: the frame may be evicted
//! while the reader is inside it. That is safe by protocol **E1**, owned
//! here: an entry leaves the table only while its frame's latch is held
//! exclusively, and the remover marks the frame obsolete before releasing
//! the latch. An optimistic reader therefore either fails validation (the
//! removal overlapped it) or sees the obsolete mark when it enters the
//! frame, and restarts from the root. Writers check the mark after taking
//! the exclusive latch (`Core::lock_live`). The remover's and the
//! writer's latched steps are `removal`'s (model-checked by loom).

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use super::cached_blob::CachedBlob;
use crate::store::BlobGuid;

/// A read guard: references obtained under it stay valid until it drops.
/// Hold one for one descent, not across user code (it delays reclamation).
pub(crate) type Guard<'a> = papaya::LocalGuard<'a>;

/// Removed entries a thread collects before handing them to reclamation
/// (seize's default is 32, or the CPU count). An evicted frame's 512 KiB
/// stay allocated until its batch is reclaimed, so with the default two
/// evicting threads (a writer and the pressure thread) held about 64
/// evicted frames, 32 MiB beyond the pool; a small batch costs a
/// reclamation pass per few evictions, each of which follows a 512 KiB
/// load anyway.
const RECLAIM_BATCH: usize = 4;

pub(crate) struct FrameTable {
    map: papaya::HashMap<BlobGuid, Arc<CachedBlob>, GuidHash>,
}

impl FrameTable {
    pub(crate) fn new() -> Self {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u64);
        Self {
            map: papaya::HashMap::builder()
                .hasher(GuidHash { seed })
                .collector(seize::Collector::new().batch_size(RECLAIM_BATCH))
                .build(),
        }
    }

    pub(crate) fn guard(&self) -> Guard<'_> {
        self.map.guard()
    }

    #[inline]
    pub(crate) fn get<'g>(
        &self,
        guid: &BlobGuid,
        guard: &'g Guard<'_>,
    ) -> Option<&'g Arc<CachedBlob>> {
        self.map.get(guid, guard)
    }

    /// Adds `blob` unless its GUID is present; `Err` carries the present one.
    pub(crate) fn insert_if_absent(&self, blob: &Arc<CachedBlob>) -> Result<(), Arc<CachedBlob>> {
        let guard = self.guard();
        match self.map.try_insert(blob.guid, Arc::clone(blob), &guard) {
            Ok(_) => Ok(()),
            Err(e) => Err(Arc::clone(e.current)),
        }
    }

    /// Adds or replaces the entry for `blob.guid`.
    pub(crate) fn insert(&self, blob: &Arc<CachedBlob>) {
        let guard = self.guard();
        self.map.insert(blob.guid, Arc::clone(blob), &guard);
    }

    /// Removes the entry for `blob.guid` if it is this very frame. The
    /// caller holds the frame's exclusive latch (E1).
    pub(crate) fn remove_exact(&self, blob: &Arc<CachedBlob>) -> bool {
        let guard = self.guard();
        matches!(
            self.map
                .remove_if(&blob.guid, |_, b| Arc::ptr_eq(b, blob), &guard),
            Ok(Some(_))
        )
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Calls `f` on up to `limit` entries (in table order).
    pub(crate) fn for_each_upto(&self, limit: usize, mut f: impl FnMut(&Arc<CachedBlob>)) {
        let guard = self.guard();
        for (_, b) in self.map.iter(&guard).take(limit) {
            f(b);
        }
    }
}

/// GUIDs are random 16-byte names (the root's is all zeros), so folding
/// the two halves with a per-table seed and one multiply spreads them
/// well; SipHash cost a measurable share of every frame hop.
#[derive(Clone)]
struct GuidHash {
    seed: u64,
}

impl BuildHasher for GuidHash {
    type Hasher = GuidHasher;
    fn build_hasher(&self) -> GuidHasher {
        GuidHasher { h: self.seed }
    }
}

struct GuidHasher {
    h: u64,
}

impl Hasher for GuidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.h = (self.h ^ u64::from_le_bytes(b))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
        }
    }
    fn finish(&self) -> u64 {
        let h = self.h ^ (self.h >> 31);
        h.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (h >> 27)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::AtomicFrame;

    fn blob(n: u8) -> Arc<CachedBlob> {
        let mut g = [0u8; 16];
        g[0] = n;
        Arc::new(CachedBlob::new(g, AtomicFrame::zeroed(), 1))
    }

    #[test]
    fn insert_if_absent_keeps_the_first_and_remove_exact_only_removes_it() {
        let t = FrameTable::new();
        let (a, a2) = (blob(1), blob(1));
        assert!(t.insert_if_absent(&a).is_ok());
        let present = t.insert_if_absent(&a2).expect_err("already present");
        assert!(Arc::ptr_eq(&present, &a));
        assert!(!t.remove_exact(&a2), "a different frame of the same name");
        assert_eq!(t.len(), 1);
        assert!(t.remove_exact(&a));
        assert_eq!(t.len(), 0);
        let g = t.guard();
        assert!(t.get(&a.guid, &g).is_none());
    }

    #[test]
    fn references_outlive_removal_while_the_guard_lives() {
        let t = FrameTable::new();
        let a = blob(7);
        t.insert(&a);
        let g = t.guard();
        let r = t.get(&a.guid, &g).expect("present");
        assert!(t.remove_exact(&a));
        drop(a);
        // The table's own reference is retired, not dropped, while `g`
        // lives: the frame is still readable.
        assert_eq!(r.guid[0], 7);
        assert!(r.frame.u64(0).is_ok());
    }
}
