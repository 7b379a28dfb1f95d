//! Spillover: when a frame cannot take an edit, move one of its subtrees
//! into a new frame and leave a link in its place.
//!
//! The subtree is chosen near half of the frame's used bytes, so both
//! frames end up about half full and the next spill is far away; this is
//! what keeps the mean fill high (DESIGN.md §4).

use crate::buffer::{BufferManager, CachedBlob, FrameWrite};
use crate::frame::copy::{copy_subtree, free_subtree};
use crate::frame::node::{self, Node};
use crate::frame::{header, AtomicFrame, Corrupt, FResult};
use std::sync::Arc;

/// A subtree smaller than this is not worth a frame of its own.
const MIN_SPILL: usize = 256;

struct Candidate {
    slot: usize,
    ptr: u32,
    /// Key bytes from the frame root to where this node starts.
    rel_depth: usize,
    size: usize,
}

/// Picks the subtree to move: the one closest to half the used bytes,
/// never the frame root, a value leaf or a bare link.
fn choose(f: &AtomicFrame) -> FResult<Option<Candidate>> {
    let root = header::root(f)?;
    if root == 0 {
        return Ok(None);
    }
    // Pre-order list of (ptr, slot, parent index, rel_depth, own size).
    struct Item {
        ptr: u32,
        slot: usize,
        parent: usize,
        rel_depth: usize,
        total: usize,
        spillable: bool,
    }
    let mut items: Vec<Item> = Vec::new();
    let mut stack = vec![(root, header::OFF_ROOT, usize::MAX, 0usize, false)];
    while let Some((ptr, slot, parent, rel_depth, spillable)) = stack.pop() {
        if items.len() > crate::store::FRAME_SIZE / 8 {
            return Err(Corrupt("node graph has a cycle"));
        }
        let n = node::decode(f, ptr)?;
        let me = items.len();
        items.push(Item {
            ptr,
            slot,
            parent,
            rel_depth,
            total: node::needed_size(&n),
            spillable: spillable && !matches!(n, Node::Link(_)),
        });
        if let Node::Inner(i) = n {
            if i.value != 0 {
                stack.push((i.value, i.value_slot(), me, rel_depth + i.prefix_len, false));
            }
            let mut from = 0usize;
            while let Some((b, c)) = node::next_child(f, &i, from)? {
                let s = node::find_child(f, &i, b)?.map_or(0, |(s, _)| s);
                stack.push((c, s, me, rel_depth + i.prefix_len + 1, true));
                from = usize::from(b) + 1;
            }
        }
    }
    for k in (1..items.len()).rev() {
        let (t, p) = (items[k].total, items[k].parent);
        if let Some(parent) = items.get_mut(p) {
            parent.total += t;
        }
    }
    let target = header::used(f)? as usize / 2;
    let best = items
        .iter()
        .filter(|c| c.spillable && c.total >= MIN_SPILL)
        .min_by_key(|c| c.total.abs_diff(target));
    Ok(best.map(|c| Candidate {
        slot: c.slot,
        ptr: c.ptr,
        rel_depth: c.rel_depth,
        size: c.total,
    }))
}

/// Moves a subtree of the latched frame `w` into a new frame. Returns
/// false when nothing can move (the frame holds a single node).
pub(crate) fn spill(bm: &BufferManager, w: &FrameWrite, seq: u64) -> FResult<bool> {
    let f = w.frame();
    let Some(c) = choose(f)? else {
        return Ok(false);
    };
    let guid = bm.new_guid();
    let child = AtomicFrame::zeroed();
    let depth = header::depth(f)? as usize + c.rel_depth;
    header::init(&child, guid, u32::try_from(depth).map_err(|_| Corrupt("depth"))?)?;
    let root = copy_subtree(f, c.ptr, &child)?;
    child.set_u32(header::OFF_ROOT, root)?;
    child.set_u64(header::OFF_MAX_SEQ, header::max_seq(f)?)?;
    // Reuse the subtree root's own allocation (>= MIN_SPILL bytes, so
    // >= LINK_SIZE) for the link; free everything below it.
    let top = node::decode(f, c.ptr)?;
    let top_size = node::node_size(&top);
    if let Node::Inner(i) = top {
        if i.value != 0 {
            free_subtree(f, i.value)?;
        }
        for (_, kid) in node::children(f, &i)? {
            free_subtree(f, kid)?;
        }
    }
    node::write_link(f, c.ptr as usize, top_size, &guid)?;
    header::add(f, header::OFF_LINKS, 1)?;
    f.set_u32(c.slot, c.ptr)?;
    let _: Arc<CachedBlob> = bm.insert_new(guid, child, seq);
    #[cfg(feature = "tracing")]
    tracing::debug!(bytes = c.size, depth, "spillover to a new frame");
    let _ = c.size;
    Ok(true)
}
