//! `TreeStats`: a breadth-first walk of every frame reachable from the
//! root, with silent pins (no counter or recency changes).

use std::collections::VecDeque;
use std::sync::Arc;

use super::{corrupt_in, Core};
use crate::api::errors::Result;
use crate::api::stats::{BlobStats, FrameHops, TreeStats};
use crate::buffer::cached_blob::FrameRead;
use crate::frame::copy;
use crate::frame::header;
use crate::frame::node::Node;

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

    /// The frames a lookup of each stored key visits: a breadth-first
    /// walk like [`Core::stats`], tracking per frame how many frames lie
    /// on the path to it and how many of the links on that path consume
    /// no key byte (child frame at its parent's depth), and counting each
    /// frame's leaves.
    pub(crate) fn frame_hops(&self) -> Result<FrameHops> {
        let mut out = FrameHops::default();
        let mut queue = VecDeque::new();
        // (frame, frames on the path including it, same-depth links)
        queue.push_back((Arc::clone(&self.root), 1usize, 0usize));
        let mut visited = std::collections::HashSet::new();
        while let Some((blob, frames, same)) = queue.pop_front() {
            if !visited.insert(blob.guid) {
                return Err(corrupt_in(
                    &blob,
                    crate::frame::Corrupt("frame links form a cycle"),
                ));
            }
            let (depth, leaves, links) = {
                let r = FrameRead::lock(Arc::clone(&blob));
                let f = &r.blob().frame;
                let c = |e| corrupt_in(r.blob(), e);
                let mut leaves = 0u64;
                copy::for_each_node(f, header::root(f).map_err(c)?, |n| {
                    leaves += u64::from(matches!(n, Node::Leaf(_)));
                    Ok(())
                })
                .map_err(c)?;
                (
                    header::depth(f).map_err(c)?,
                    leaves,
                    copy::links(f).map_err(c)?,
                )
            };
            let _batch = self.bm.prefetch(&links);
            for g in &links {
                let child = self.bm.pin_silent(g)?;
                let d = {
                    let r = FrameRead::lock(Arc::clone(&child));
                    header::depth(&r.blob().frame).map_err(|e| corrupt_in(r.blob(), e))?
                };
                queue.push_back((child, frames + 1, same + usize::from(d == depth)));
            }
            for (hist, i) in [(&mut out.by_frames, frames), (&mut out.by_same_depth, same)] {
                if hist.len() <= i {
                    hist.resize(i + 1, 0);
                }
                hist[i] += leaves;
            }
            out.keys += leaves;
        }
        Ok(out)
    }
}
