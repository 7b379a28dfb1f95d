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
use crate::frame::copy::{self, copy_subtree_sharing, subtree_bytes};
use crate::frame::node::{self, Node};
use crate::frame::{alloc, header, AtomicFrame, Corrupt, FResult};
use crate::store::{BlobGuid, FRAME_SIZE};

/// `compact()` folds a child into its parent while the result stays at or
/// below this many bytes.
pub(crate) const COMPACT_LIMIT: usize = FRAME_SIZE * 7 / 8;
/// Background rounds only fold sparse children: the result must stay at
/// or below half a frame, so a merge never sets up the next spill.
pub(crate) const AUTO_MERGE_LIMIT: usize = FRAME_SIZE / 2;

/// Link nodes of a frame, each once, with the key bytes from the frame's
/// base through one of the branch bytes it stands for. A frame's *base* is
/// the key prefix above its root: for the root frame, empty; for a fan
/// frame, the key bytes before the branch byte its link stood for (the
/// fan's own branch bytes are part of the paths returned).
pub(crate) fn links_with_paths(f: &AtomicFrame) -> FResult<Vec<(Vec<u8>, BlobGuid)>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let root = header::root(f)?;
    let mut stack: Vec<(u32, Vec<u8>)> = vec![(root, Vec::new())];
    let mut visits = 0usize;
    while let Some((r, path)) = stack.pop() {
        visits += 1;
        if visits > FRAME_SIZE / 8 {
            return Err(Corrupt("node graph has a cycle"));
        }
        if r == 0 {
            continue;
        }
        match node::decode(f, r)? {
            Node::Link(l) => {
                if seen.insert(r) {
                    out.push((path, l.guid));
                }
            }
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
        if parent.guid == child.guid {
            return Err(corrupt_in(&child, Corrupt("frame links form a cycle")));
        }
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
                self.bm.retire(cw.blob(), seq);
                self.bm.mark_dirty(pw.blob().guid, seq);
                #[cfg(feature = "tracing")]
                tracing::debug!(guid = ?&guid[..4], "empty frame unlinked");
            }
            erase::Outcome::Absent | erase::Outcome::Link | erase::Outcome::Unrouted => {}
        }
        Ok(())
    }

    /// Repacks, in key order, every dirty frame that [`copy::disordered`]
    /// flags, so that scans read it front to back. Call with the commit
    /// gate held shared (like any writer) and the round lock held, before
    /// a round's cut: a frame dirty now then stays dirty until that
    /// round, which writes the repacked image anyway, so the frame needs
    /// no new dirty mark (a repack moves nodes, it changes no key or
    /// value, and needs no WAL record). Returns the number of frames
    /// repacked.
    pub(crate) fn order_pass(&self) -> Result<usize> {
        let mut repacked = 0;
        for guid in self.bm.dirty_guids() {
            let Some(blob) = self.bm.cached(&guid) else {
                continue;
            };
            // Cheap unlatched look first: most dirty frames are ordered.
            if !copy::disordered(&blob.frame).unwrap_or(true) {
                continue;
            }
            let Some(w) = self.lock_live(blob) else {
                continue;
            };
            let c = |e| corrupt_in(w.blob(), e);
            if copy::disordered(w.frame()).map_err(c)? {
                copy::repack(w.frame()).map_err(c)?;
                repacked += 1;
            }
        }
        Ok(repacked)
    }

    /// Walks every reachable frame; repacks it if `repack`, then folds
    /// children into it while the result stays at or below `limit` bytes
    /// (retired frames wait in pending deletes). Returns the number of
    /// merges. Safe while other threads read and write.
    pub(crate) fn merge_pass(&self, seq: u64, repack: bool, limit: usize) -> Result<u64> {
        let mut merges = 0u64;
        let mut queue: VecDeque<(Arc<CachedBlob>, Vec<u8>)> = VecDeque::new();
        queue.push_back((Arc::clone(&self.root), Vec::new()));
        let mut visited = std::collections::HashSet::new();
        while let Some((blob, path)) = queue.pop_front() {
            if !visited.insert(blob.guid) {
                return Err(corrupt_in(&blob, Corrupt("frame links form a cycle")));
            }
            let is_root = blob.guid == self.root.guid;
            let Some(w) = self.lock_live(blob) else {
                continue;
            };
            let c = |e| corrupt_in(w.blob(), e);
            let expect = if is_root { 0 } else { path.len() + 1 };
            super::read::check_link_target(
                w.blob(),
                header::depth(w.frame()),
                header::is_fan(w.frame()),
                expect,
                is_root,
            )?;
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
            let children = links_with_paths(w.frame()).map_err(c)?;
            let guids: Vec<BlobGuid> = children.iter().map(|(_, g)| *g).collect();
            let _batch = self.bm.prefetch(&guids);
            for (rel, guid) in children {
                let child = self.bm.pin_silent(&guid)?;
                let mut key = path.clone();
                key.extend_from_slice(&rel);
                // The child is a fan frame: its base excludes the branch
                // byte the link stands for.
                key.pop();
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
        if *guid == pw.blob().guid || *guid == self.root.guid {
            return Err(cp(Corrupt("frame links form a cycle")));
        }
        let child = self.bm.pin_silent(guid)?;
        let Some(cw) = self.lock_live(child) else {
            return Ok(false);
        };
        let cc = |e| corrupt_in(cw.blob(), e);
        super::read::check_link_target(
            cw.blob(),
            header::depth(cw.frame()),
            header::is_fan(cw.frame()),
            key.len(),
            false,
        )?;
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
        if croot == 0 {
            match erase::erase(pf, key, depth, Target::Link(*guid)).map_err(cp)? {
                erase::Outcome::Done(_) => {}
                erase::Outcome::Absent | erase::Outcome::Link | erase::Outcome::Unrouted => {
                    return Ok(false)
                }
            }
        } else {
            let Node::Inner(fan) = node::decode(cw.frame(), croot).map_err(cc)? else {
                return Err(cc(Corrupt("fan frame root is not a fan node")));
            };
            let Some((&last, _)) = key.split_last() else {
                return Ok(false);
            };
            let Some(mut y) = node_at(pf, &key[..key.len() - 1], depth).map_err(cp)? else {
                return Ok(false);
            };
            let Some((_, link_ptr)) = node::find_child(pf, &y, last).map_err(cp)? else {
                return Ok(false);
            };
            let Node::Link(link) = node::decode(pf, link_ptr).map_err(cp)? else {
                return Ok(false);
            };
            if link.guid != *guid {
                return Ok(false);
            }
            // Every slot of `y` that stands for the link gets the child
            // frame's subtree for that branch byte back.
            let slots: Vec<u8> = node::children(pf, &y)
                .map_err(cp)?
                .into_iter()
                .filter(|&(_, p)| p == link_ptr)
                .map(|(b, _)| b)
                .collect();
            let mut shared_links = std::collections::HashMap::new();
            for b in slots {
                match node::find_child(cw.frame(), &fan, b).map_err(cc)? {
                    Some((_, sub)) => {
                        let copied = copy_subtree_sharing(cw.frame(), sub, pf, &mut shared_links)
                            .map_err(cp)?;
                        let (slot, _) = node::find_child(pf, &y, b)
                            .map_err(cp)?
                            .ok_or_else(|| cp(Corrupt("merge slot vanished")))?;
                        pf.set_u32(slot, copied).map_err(cp)?;
                    }
                    None => node::remove_child(pf, &mut y, b).map_err(cp)?,
                }
            }
            alloc::free(pf, link.off, link.size).map_err(cp)?;
            header::add(pf, header::OFF_LINKS, -1).map_err(cp)?;
        }
        cw.blob().mark_obsolete();
        self.bm.retire(cw.blob(), seq);
        self.bm.mark_dirty(pw.blob().guid, seq);
        #[cfg(feature = "tracing")]
        tracing::debug!(guid = ?&guid[..4], bytes, "child frame merged into parent");
        Ok(true)
    }
}

/// The inner node where `path` ends exactly (after its prefix), walking
/// from the frame's start; in a fan frame, a path one byte shorter than
/// the frame's depth names the fan node itself.
pub(crate) fn node_at(f: &AtomicFrame, path: &[u8], depth: usize) -> FResult<Option<node::Inner>> {
    let root = header::root(f)?;
    if root == 0 {
        return Ok(None);
    }
    let mut r = root;
    if header::is_fan(f)? {
        if path.len() + 1 == depth {
            return match node::decode(f, root)? {
                Node::Inner(n) => Ok(Some(n)),
                _ => Err(Corrupt("fan frame root is not a fan node")),
            };
        }
        match super::read::fan_entry(f, path, depth)? {
            Some(c) if c != 0 => r = c,
            _ => return Ok(None),
        }
    }
    let mut d = depth;
    for _ in 0..=path.len() + 1 {
        if r == 0 {
            return Ok(None);
        }
        let Node::Inner(n) = node::decode(f, r)? else {
            return Ok(None);
        };
        let rest = path.get(d..).ok_or(Corrupt("walk past key end"))?;
        if n.prefix_len > rest.len()
            || f.common_prefix(n.prefix_at(), n.prefix_len, rest)? != n.prefix_len
        {
            return Ok(None);
        }
        d += n.prefix_len;
        let Some(&b) = path.get(d) else {
            return Ok(Some(n));
        };
        match node::find_child(f, &n, b)? {
            Some((_, c)) => {
                r = c;
                d += 1;
            }
            None => return Ok(None),
        }
    }
    Err(Corrupt("walk longer than the key"))
}
