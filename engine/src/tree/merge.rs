//! Folding frames back together: `compact()` (repack every frame, then
//! merge children that fit into their parents) and the unlinking of a
//! child frame that a delete left empty.
//!
//! Two frames are latched parent first, child second (the order every
//! two-frame operation uses; see `tree`).

use std::collections::VecDeque;
use std::sync::Arc;

use super::erase::{self, Target};
use super::{corrupt_in, Core};
use crate::api::errors::Result;
use crate::buffer::{CachedBlob, FrameWrite};
use crate::frame::copy::{self, copy_subtree, subtree_bytes};
use crate::frame::node::{self, Node};
use crate::frame::{alloc, header, AtomicFrame, Corrupt, FResult};
use crate::store::{BlobGuid, FRAME_SIZE};

/// `compact()` folds a child into its parent while the result stays at or
/// below this many bytes.
pub(crate) const COMPACT_LIMIT: usize = FRAME_SIZE * 7 / 8;
/// Background rounds only fold sparse children: the result must stay at
/// or below half a frame, so a merge never sets up the next spill.
pub(crate) const AUTO_MERGE_LIMIT: usize = FRAME_SIZE / 2;

/// Link nodes of a frame with the key bytes from the frame root to them.
pub(crate) fn links_with_paths(f: &AtomicFrame) -> FResult<Vec<(Vec<u8>, BlobGuid)>> {
    let mut out = Vec::new();
    let root = header::root(f)?;
    let mut stack: Vec<(u32, Vec<u8>)> = vec![(root, Vec::new())];
    let mut seen = 0usize;
    while let Some((r, path)) = stack.pop() {
        seen += 1;
        if r == 0 || seen > FRAME_SIZE / 8 {
            if r != 0 {
                return Err(Corrupt("node graph has a cycle"));
            }
            continue;
        }
        match node::decode(f, r)? {
            Node::Link(l) => out.push((path, l.guid)),
            Node::Leaf(_) => {}
            Node::Inner(i) => {
                let mut p = path;
                f.read_into(i.prefix_at(), i.prefix_len, &mut p)?;
                for (b, c) in node::children(f, &i)? {
                    let mut q = p.clone();
                    q.push(b);
                    stack.push((c, q));
                }
            }
        }
    }
    Ok(out)
}

impl Core {
    /// Unlinks `child` (reached at `key[..depth]` below `parent`) if it is
    /// empty. Best effort: a concurrent change simply leaves it for later.
    pub(crate) fn unlink_if_empty(
        &self,
        parent: Arc<CachedBlob>,
        parent_depth: usize,
        child: Arc<CachedBlob>,
        path: &[u8],
        seq: u64,
    ) -> Result<()> {
        let Some(pw) = self.lock_live(parent) else {
            return Ok(());
        };
        let Some(cw) = self.lock_live(child) else {
            return Ok(());
        };
        if header::root(cw.frame()).map_err(|c| corrupt_in(cw.blob(), c))? != 0 {
            return Ok(());
        }
        let guid = cw.blob().guid;
        match erase::erase(pw.frame(), path, parent_depth, Target::Link(guid))
            .map_err(|c| corrupt_in(pw.blob(), c))?
        {
            erase::Outcome::Done(_) => {
                cw.blob().mark_obsolete();
                self.bm.retire(&guid, seq);
                self.bm.mark_dirty(pw.blob().guid, seq);
                #[cfg(feature = "tracing")]
                tracing::debug!(guid = ?&guid[..4], "empty frame unlinked");
            }
            erase::Outcome::Absent | erase::Outcome::Link => {}
        }
        Ok(())
    }

    /// Walks every reachable frame; repacks it if `repack`, then folds
    /// children into it while the result stays at or below `limit` bytes
    /// (retired frames wait in pending deletes). Returns the number of
    /// merges. Safe while other threads read and write.
    pub(crate) fn merge_pass(&self, seq: u64, repack: bool, limit: usize) -> Result<u64> {
        let mut merges = 0u64;
        let mut queue: VecDeque<(Arc<CachedBlob>, Vec<u8>)> = VecDeque::new();
        queue.push_back((Arc::clone(&self.root), Vec::new()));
        while let Some((blob, path)) = queue.pop_front() {
            let Some(w) = self.lock_live(blob) else {
                continue;
            };
            let c = |e| corrupt_in(w.blob(), e);
            if repack {
                copy::repack(w.frame()).map_err(c)?;
                self.bm.mark_dirty(w.blob().guid, seq);
            }
            let depth = header::depth(w.frame()).map_err(c)? as usize;
            // Merge children until none fits; a merged child's own links
            // become this frame's links and are considered in turn.
            loop {
                let mut merged_any = false;
                for (rel, guid) in links_with_paths(w.frame()).map_err(c)? {
                    let mut key = path.clone();
                    key.extend_from_slice(&rel);
                    if self.try_merge(&w, depth, &key, &guid, seq, limit)? {
                        merges += 1;
                        merged_any = true;
                        break;
                    }
                }
                if !merged_any {
                    break;
                }
            }
            for (rel, guid) in links_with_paths(w.frame()).map_err(c)? {
                let child = self.bm.pin_silent(&guid)?;
                let mut key = path.clone();
                key.extend_from_slice(&rel);
                queue.push_back((child, key));
            }
        }
        Ok(merges)
    }

    /// Folds child frame `guid` (linked at `key`) into the latched parent
    /// `pw` when the result fits under `limit` bytes.
    fn try_merge(
        &self,
        pw: &FrameWrite,
        depth: usize,
        key: &[u8],
        guid: &BlobGuid,
        seq: u64,
        limit: usize,
    ) -> Result<bool> {
        let pf = pw.frame();
        let cp = |e| corrupt_in(pw.blob(), e);
        let child = self.bm.pin_silent(guid)?;
        let Some(cw) = self.lock_live(child) else {
            return Ok(false);
        };
        let cc = |e| corrupt_in(cw.blob(), e);
        let croot = header::root(cw.frame()).map_err(cc)?;
        let bytes = subtree_bytes(cw.frame(), croot).map_err(cc)?;
        let used = header::used(pf).map_err(cp)? as usize;
        if croot != 0 && used + bytes > limit {
            return Ok(false);
        }
        if bytes + node::LINK_SIZE > alloc::tail_room(pf).map_err(cp)? {
            copy::repack(pf).map_err(cp)?;
            if bytes > alloc::tail_room(pf).map_err(cp)? {
                return Ok(false);
            }
        }
        // Find the link's slot: walk the key inside the parent.
        let slot = link_slot(pf, key, depth, guid).map_err(cp)?;
        let Some((slot, link_off, link_size)) = slot else {
            return Ok(false);
        };
        if croot == 0 {
            erase::erase(pf, key, depth, Target::Link(*guid)).map_err(cp)?;
        } else {
            let new_root = copy_subtree(cw.frame(), croot, pf).map_err(cp)?;
            pf.set_u32(slot, new_root).map_err(cp)?;
            alloc::free(pf, link_off, link_size).map_err(cp)?;
            header::add(pf, header::OFF_LINKS, -1).map_err(cp)?;
        }
        cw.blob().mark_obsolete();
        self.bm.retire(guid, seq);
        self.bm.mark_dirty(pw.blob().guid, seq);
        #[cfg(feature = "tracing")]
        tracing::debug!(guid = ?&guid[..4], bytes, "child frame merged into parent");
        Ok(true)
    }
}

/// The slot holding the link to `guid` at the end of `key`'s path, with
/// the link node's offset and size.
fn link_slot(f: &AtomicFrame, key: &[u8], mut depth: usize, guid: &BlobGuid) -> FResult<Option<(usize, usize, usize)>> {
    let mut slot = header::OFF_ROOT;
    loop {
        let r = f.u32(slot)?;
        if r == 0 {
            return Ok(None);
        }
        match node::decode(f, r)? {
            Node::Link(l) => {
                return Ok((l.guid == *guid && depth == key.len()).then_some((slot, l.off, l.size)));
            }
            Node::Leaf(_) => return Ok(None),
            Node::Inner(n) => {
                let rest = key.get(depth..).ok_or(Corrupt("walk past key end"))?;
                if n.prefix_len > rest.len() || f.common_prefix(n.prefix_at(), n.prefix_len, rest)? != n.prefix_len {
                    return Ok(None);
                }
                depth += n.prefix_len;
                let Some(&b) = key.get(depth) else {
                    return Ok(None);
                };
                match node::find_child(f, &n, b)? {
                    Some((s, _)) => {
                        slot = s;
                        depth += 1;
                    }
                    None => return Ok(None),
                }
            }
        }
    }
}
