//! The eviction rule (I1 in `buffer`): a cached frame may be dropped only
//! when nobody has it pinned, it is not dirty or in flight in a
//! write-back, and it is not waiting to be deleted.
//!
//! This file is compiled against loom by `holt-loom-tests`.

use super::super::mutation;
use super::dirty::SeqMap;

/// `other_refs`: references to the frame besides the cache map's own.
pub(crate) fn evictable(
    other_refs: usize,
    guid: &[u8; 16],
    dirty: &SeqMap,
    pending_deletes: &SeqMap,
) -> bool {
    other_refs == 0
        && (mutation::EVICT_IGNORES_DIRTY || !dirty.contains(guid))
        && !pending_deletes.contains(guid)
}
