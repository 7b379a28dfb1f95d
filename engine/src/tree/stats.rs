//! `TreeStats`: a breadth-first walk of every frame reachable from the
//! root, with silent pins (no counter or recency changes).

use std::collections::VecDeque;
use std::sync::Arc;

use super::{corrupt_in, Core};
use crate::api::errors::Result;
use crate::api::stats::{BlobStats, TreeStats};
use crate::buffer::cached_blob::FrameRead;
use crate::frame::copy;

impl Core {
    pub(crate) fn stats(&self) -> Result<TreeStats> {
        let mut blobs = Vec::new();
        let mut queue = VecDeque::new();
        queue.push_back(Arc::clone(&self.root));
        let mut visited = std::collections::HashSet::new();
        while let Some(blob) = queue.pop_front() {
            if !visited.insert(blob.guid) {
                return Err(corrupt_in(
                    &blob,
                    crate::frame::Corrupt("frame links form a cycle"),
                ));
            }
            let guid = blob.guid;
            let (nums, links) = {
                let r = FrameRead::lock(blob);
                let f = &r.blob().frame;
                let c = |e| corrupt_in(r.blob(), e);
                (copy::numbers(f).map_err(c)?, copy::links(f).map_err(c)?)
            };
            let _batch = self.bm.prefetch(&links);
            for g in &links {
                queue.push_back(self.bm.pin_silent(g)?);
            }
            blobs.push(BlobStats {
                guid,
                space_used: nums.used,
                gap_space: nums.gap,
                num_slots: u16::try_from(nums.nodes).unwrap_or(u16::MAX),
                num_ext_blobs: u16::try_from(nums.links).unwrap_or(u16::MAX),
                compact_times: nums.compacts,
                tombstone_leaf_cnt: 0,
            });
        }
        Ok(TreeStats {
            blob_count: u32::try_from(blobs.len()).unwrap_or(u32::MAX),
            total_space_used: blobs.iter().map(|b| u64::from(b.space_used)).sum(),
            total_gap_space: blobs.iter().map(|b| u64::from(b.gap_space)).sum(),
            total_slots: blobs.iter().map(|b| u64::from(b.num_slots)).sum(),
            total_compactions: blobs.iter().map(|b| u64::from(b.compact_times)).sum(),
            total_tombstones: 0,
            blobs,
            bm_dirty_count: self.bm.dirty.len(),
            bm_pending_delete_count: self.bm.pending_deletes.len(),
            bm_cache_hits: self.bm.counters.hits.get(),
            bm_cache_misses: self.bm.counters.misses.get(),
            bm_optimistic_restarts: self.bm.counters.restarts.get(),
            checkpointer: None,
        })
    }
}
