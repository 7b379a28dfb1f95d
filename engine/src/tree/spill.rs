//! Spillover: when a frame cannot take an edit, move part of it into a new
//! frame.
//!
//! What moves is a contiguous run of siblings — children of one inner node
//! `Y` whose branch bytes are adjacent in order — chosen so its size is as
//! close as possible to half of the frame's used bytes. The new frame is a
//! *fan* frame (`header::FLAG_FAN`): its root is a fan node holding those
//! children under their branch bytes, and in `Y` every moved child's slot
//! now points to one shared link node. A reader that takes branch `b` at
//! `Y`, meets the link and looks `b` up again in the fan node.
//!
//! Moving a run rather than a single subtree is what keeps frames full:
//! with path-shaped keys a node often has many children of similar, small
//! size (months under a year, files under a directory), and moving one of
//! them at a time would leave a trail of small frames that never fill
//! (DESIGN.md §4).

use crate::buffer::{BufferManager, FrameWrite};
use crate::frame::copy::{copy_subtree, free_below, free_subtree, repack};
use crate::frame::node::{self, Node, LINK_SIZE};
use crate::frame::{alloc, header, AtomicFrame, Corrupt, FResult};
use crate::store::{BlobGuid, FRAME_SIZE};

/// A run smaller than this is not worth a frame of its own.
const MIN_SPILL: usize = 256;

struct Choice {
    /// The parent node of the run.
    y: u32,
    /// Branch bytes of the moved children, ascending.
    bytes: Vec<u8>,
    /// Key bytes from the frame root to the moved children (branch byte
    /// included).
    rel_depth: usize,
    /// Bytes moved (reported by the `tracing` event).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    size: usize,
}

/// Sizes of every subtree, then the best run of siblings.
fn choose(f: &AtomicFrame, prefer_root: bool) -> FResult<Option<Choice>> {
    let root = header::root(f)?;
    if root == 0 {
        return Ok(None);
    }
    struct Item {
        parent: usize,
        total: usize,
        /// Children: (branch byte, item index, is a link).
        kids: Vec<(u8, usize, bool)>,
        ptr: u32,
        /// Key bytes from the frame root to where this node's children
        /// start (its prefix included, branch byte not).
        child_depth: usize,
    }
    let mut items: Vec<Item> = Vec::new();
    // (ptr, parent index, branch byte, depth where the node starts)
    let mut stack: Vec<(u32, usize, u8, usize)> = vec![(root, usize::MAX, 0, 0)];
    while let Some((ptr, parent, byte, depth)) = stack.pop() {
        if items.len() > FRAME_SIZE / 8 {
            return Err(Corrupt("node graph has a cycle"));
        }
        let n = node::decode(f, ptr)?;
        let me = items.len();
        let mut item = Item {
            parent,
            total: node::needed_size(&n),
            kids: Vec::new(),
            ptr,
            child_depth: depth,
        };
        if let Some(p) = items.get_mut(parent) {
            p.kids.push((byte, me, matches!(n, Node::Link(_))));
        }
        if let Node::Inner(i) = n {
            item.child_depth = depth + i.prefix_len;
            if i.value != 0 {
                item.total += node::needed_size(&node::decode(f, i.value)?);
            }
            for (b, c) in node::children(f, &i)? {
                stack.push((c, me, b, depth + i.prefix_len + 1));
            }
        }
        items.push(item);
    }
    for k in (1..items.len()).rev() {
        let (t, p) = (items[k].total, items[k].parent);
        if let Some(parent) = items.get_mut(p) {
            parent.total += t;
        }
    }
    let target = header::used(f)? as usize / 2;
    let mut best: Option<(usize, Choice)> = None;
    // The best run of the root's own children, when it is preferred.
    let mut best_root: Option<(usize, Choice)> = None;
    for (idx, it) in items.iter().enumerate() {
        if it.kids.is_empty() {
            continue;
        }
        let mut kids = it.kids.clone();
        kids.sort_unstable_by_key(|k| k.0);
        // Runs never include a link (a link may stand in several slots; a
        // run splitting its group would leave it shared across frames).
        let mut start = 0;
        while start < kids.len() {
            if kids[start].2 {
                start += 1;
                continue;
            }
            let mut end = start;
            let mut sum = 0usize;
            // Grow the run while that brings it closer to the target.
            while end < kids.len() && !kids[end].2 {
                let s = items[kids[end].1].total;
                if sum > 0 && sum.abs_diff(target) < (sum + s).abs_diff(target) {
                    break;
                }
                sum += s;
                end += 1;
            }
            let whole_root = idx == 0 && start == 0 && end == kids.len();
            if sum >= MIN_SPILL && !whole_root {
                let score = sum.abs_diff(target);
                let slot = if idx == 0 && prefer_root && sum >= target / 2 {
                    &mut best_root
                } else {
                    &mut best
                };
                if slot.as_ref().is_none_or(|(s, _)| score < *s) {
                    let bytes = kids[start..end].iter().map(|k| k.0).collect();
                    *slot = Some((
                        score,
                        Choice {
                            y: it.ptr,
                            bytes,
                            rel_depth: it.child_depth + 1,
                            size: sum,
                        },
                    ));
                }
            }
            start += 1;
        }
    }
    Ok(best_root.or(best).map(|(_, c)| c))
}

/// The parent frame of a spilling fan frame, latched exclusively by the
/// caller (after the fan frame: see [`spill`] for why that cannot
/// deadlock), for a sideways spill.
pub(crate) struct Parent<'a> {
    pub(crate) frame: &'a AtomicFrame,
    /// Key bytes from the tree root to the node `Y` whose link leads to
    /// the spilling frame (the link's branch byte excluded).
    pub(crate) path: &'a [u8],
    /// Key bytes consumed above the parent frame's root.
    pub(crate) depth: usize,
}

/// What [`spill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spilled {
    /// Nothing could move.
    Nothing,
    /// The new frame hangs below the spilling one.
    Below,
    /// The new frame hangs beside the spilling one, linked from the
    /// parent frame (which changed and must be marked dirty).
    Beside,
}

/// In the latched parent, the node `Y` whose slots for every byte of
/// `bytes` point to the link to `child`, with room for one more link
/// (repacking the parent if that makes room; the caller marks it dirty
/// whenever this returns `Some`); `None` if the parent does not look like
/// that (a sideways spill is then not possible).
fn beside_in(p: &Parent<'_>, child: &BlobGuid, bytes: &[u8]) -> FResult<Option<node::Inner>> {
    let Some(y) = crate::tree::merge::node_at(p.frame, p.path, p.depth)? else {
        return Ok(None);
    };
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    let Some((_, link)) = node::find_child(p.frame, &y, first)? else {
        return Ok(None);
    };
    match node::decode(p.frame, link)? {
        Node::Link(l) if l.guid == *child => {}
        _ => return Ok(None),
    }
    for &b in bytes {
        if node::find_child(p.frame, &y, b)?.map(|(_, c)| c) != Some(link) {
            return Ok(None);
        }
    }
    if alloc::tail_room(p.frame)? >= LINK_SIZE {
        return Ok(Some(y));
    }
    if alloc::reclaimable(p.frame)? < LINK_SIZE {
        return Ok(None);
    }
    // The parent qualifies but its tail is short: repack it (nodes move,
    // so find `Y` again) and use it.
    repack(p.frame)?;
    if alloc::tail_room(p.frame)? < LINK_SIZE {
        return Err(Corrupt("repack made no room"));
    }
    crate::tree::merge::node_at(p.frame, p.path, p.depth)?
        .map(Some)
        .ok_or(Corrupt("spill parent node vanished in repack"))
}

/// Moves a run of siblings out of the latched frame `w` into a new fan
/// frame.
///
/// When `w` is a fan frame and the run is children of its own fan node,
/// the new frame would sit at the same key depth as `w`; chained below
/// `w`, a lookup would cross both frames without consuming a key byte.
/// With `parent` given (latched by the caller) the run's bytes are
/// instead relinked from the parent's node `Y` to the new frame, so both
/// halves are one hop from the parent (*sideways*). The caller takes the
/// parent's latch with `try_lock` while holding `w`'s: it never waits
/// against the top-down order, so there is no deadlock.
pub(crate) fn spill(
    bm: &BufferManager,
    w: &FrameWrite,
    parent: Option<&Parent<'_>>,
    seq: u64,
) -> FResult<Spilled> {
    let f = w.frame();
    if alloc::tail_room(f)? < LINK_SIZE {
        repack(f)?;
    }
    // A fan frame that can spill sideways prefers a run of its fan
    // node's children (at least a quarter of its bytes): such a run goes
    // beside it, where a deeper run would add a frame level below it.
    let fan_root = if header::is_fan(f)? {
        header::root(f)?
    } else {
        0
    };
    let mut c = choose(f, parent.is_some() && fan_root != 0)?;
    let mut beside = None;
    if let (Some(p), Some(ch)) = (parent, &c) {
        if ch.y == fan_root {
            beside = beside_in(p, &w.blob().guid, &ch.bytes)?.map(|py| (p, py));
            if beside.is_none() {
                // The preferred run cannot go beside: take the run closest
                // to half the frame, as without a parent.
                c = choose(f, false)?;
            }
        }
    }
    let Some(c) = c else {
        return Ok(Spilled::Nothing);
    };
    let Node::Inner(y) = node::decode(f, c.y)? else {
        return Err(Corrupt("spill parent is not an inner node"));
    };
    let guid = bm.new_guid();
    let child = AtomicFrame::zeroed();
    // `choose` counts a byte for every branch, but a fan root's branch
    // bytes were consumed above this frame (they are in its depth).
    let fan_adjust = usize::from(header::is_fan(f)?);
    let depth = (header::depth(f)? as usize + c.rel_depth)
        .checked_sub(fan_adjust)
        .ok_or(Corrupt("fan frame depth"))?;
    header::init(
        &child,
        guid,
        u32::try_from(depth).map_err(|_| Corrupt("depth"))?,
    )?;
    child.set_u16(header::OFF_FLAGS, header::FLAG_FAN)?;
    child.set_u64(header::OFF_MAX_SEQ, header::max_seq(f)?)?;
    let kind = node::kind_for(c.bytes.len());
    let size = node::inner_size(kind, 0);
    let fan_at = alloc::alloc_reserved(&child, size)?;
    node::write_inner(&child, fan_at, size, kind, &[], 0)?;
    let Node::Inner(mut fan) = node::decode(&child, fan_at as u32)? else {
        return Err(Corrupt("new fan node"));
    };
    let mut moved = Vec::with_capacity(c.bytes.len());
    for &b in &c.bytes {
        let (slot, ptr) = node::find_child(f, &y, b)?.ok_or(Corrupt("spill child vanished"))?;
        let copy = copy_subtree(f, ptr, &child)?;
        node::add_child(&child, &mut fan, b, copy)?;
        moved.push((slot, ptr));
    }
    child.set_u32(header::OFF_ROOT, fan_at as u32)?;
    // The fan node, then each moved subtree in key order.
    child.mark_ordered()?;
    let spilled = match beside {
        Some((p, py)) => {
            link_beside(f, y, p, &py, &c.bytes, &moved, &guid)?;
            Spilled::Beside
        }
        None => {
            link_below(f, &moved, &guid)?;
            Spilled::Below
        }
    };
    bm.insert_new(guid, child, seq);
    #[cfg(feature = "tracing")]
    tracing::debug!(
        bytes = c.size,
        children = c.bytes.len(),
        depth,
        beside = spilled == Spilled::Beside,
        "spillover to a new frame"
    );
    Ok(spilled)
}

/// Sideways: relinks the run's bytes in the parent's node `py` to the new
/// frame `guid`, then drops them from `f`'s fan node `fan_node` (not all
/// of them: `choose` never takes every child of the root, so `f` keeps at
/// least one). `moved` holds each moved child's (slot, node) in `f`.
fn link_beside(
    f: &AtomicFrame,
    mut fan_node: node::Inner,
    p: &Parent<'_>,
    py: &node::Inner,
    bytes: &[u8],
    moved: &[(usize, u32)],
    guid: &BlobGuid,
) -> FResult<()> {
    let link_at = alloc::alloc_reserved(p.frame, LINK_SIZE)?;
    node::write_link(p.frame, link_at, LINK_SIZE, guid)?;
    header::add(p.frame, header::OFF_LINKS, 1)?;
    for &b in bytes {
        let (slot, _) =
            node::find_child(p.frame, py, b)?.ok_or(Corrupt("sideways slot vanished"))?;
        p.frame.set_u32(slot, link_at as u32)?;
    }
    for (&b, &(_, ptr)) in bytes.iter().zip(moved) {
        node::remove_child(f, &mut fan_node, b)?;
        free_subtree(f, ptr)?;
    }
    Ok(())
}

/// Below: one link node in `f` to the new frame `guid`, from the tail,
/// else in place of a moved node big enough, shared by every moved
/// child's slot; the moved subtrees are freed.
fn link_below(f: &AtomicFrame, moved: &[(usize, u32)], guid: &BlobGuid) -> FResult<()> {
    let (link_at, link_size, keep) = match alloc::alloc(f, LINK_SIZE)? {
        Some(at) => (at, LINK_SIZE, None),
        None => {
            let mut spot = None;
            for &(_, ptr) in moved {
                let n = node::decode(f, ptr)?;
                if node::node_size(&n) >= LINK_SIZE {
                    spot = Some((ptr as usize, node::node_size(&n), ptr));
                    break;
                }
            }
            let (at, size, ptr) = spot.ok_or(Corrupt("no room for a link"))?;
            (at, size, Some(ptr))
        }
    };
    for &(_, ptr) in moved {
        if Some(ptr) == keep {
            // Free what hangs below the node whose bytes become the link.
            free_below(f, ptr)?;
        } else {
            free_subtree(f, ptr)?;
        }
    }
    node::write_link(f, link_at, link_size, guid)?;
    header::add(f, header::OFF_LINKS, 1)?;
    for &(slot, _) in moved {
        f.set_u32(slot, link_at as u32)?;
    }
    Ok(())
}
