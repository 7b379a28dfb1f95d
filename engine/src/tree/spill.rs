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
//! A fan frame whose fan node has a single child is *raised* instead (its
//! top node moves into the parent, the rest into a new fan frame one
//! level deeper), and a full fan frame first *shifts* edge children to a
//! sibling with room: both keep the routing levels in the upper frames
//! and the frames full (docs/design.md, "Spillover").
//!
//! Moving a run rather than a single subtree is what keeps frames full:
//! with path-shaped keys a node often has many children of similar, small
//! size (months under a year, files under a directory), and moving one of
//! them at a time would leave a trail of small frames that never fill
//! (DESIGN.md §4).

use crate::buffer::{BufferManager, FrameWrite};
use crate::frame::copy::{copy_subtree, copy_subtree_sharing, free_below, free_subtree, repack};
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
        ptr: u32,
        /// Key bytes from the frame root to where this node's children
        /// start (its prefix included, branch byte not).
        child_depth: usize,
        /// The subtree holds a link.
        links: bool,
    }
    // Every parent-child edge as (parent index, branch byte, child index,
    // child is a link), in one flat list: a node's edges are reserved
    // together, in byte order, when it is visited, and filled in as its
    // children are, so the list is grouped by parent in visiting order
    // with no sort and no list per node (a frame has thousands of nodes,
    // and a spill measures the whole frame).
    let mut items: Vec<Item> = Vec::new();
    let mut edges: Vec<(usize, u8, usize, bool)> = Vec::new();
    let mut kids: Vec<(u8, u32)> = Vec::new();
    // (ptr, parent index, depth where the node starts, its edge)
    let mut stack: Vec<(u32, usize, usize, usize)> = vec![(root, usize::MAX, 0, usize::MAX)];
    while let Some((ptr, parent, depth, edge)) = stack.pop() {
        if items.len() > FRAME_SIZE / 8 {
            return Err(Corrupt("node graph has a cycle"));
        }
        let n = node::decode(f, ptr)?;
        let me = items.len();
        let link = matches!(n, Node::Link(_));
        let mut item = Item {
            parent,
            total: node::needed_size(&n),
            ptr,
            child_depth: depth,
            links: link,
        };
        if let Some(e) = edges.get_mut(edge) {
            e.2 = me;
            e.3 = link;
        }
        if let Node::Inner(i) = n {
            item.child_depth = depth + i.prefix_len;
            if i.value != 0 {
                item.total += node::needed_size(&node::decode(f, i.value)?);
            }
            kids.clear();
            node::children_from(f, &i, 0, 256, &mut kids)?;
            for &(b, c) in &kids {
                stack.push((c, me, depth + i.prefix_len + 1, edges.len()));
                edges.push((me, b, usize::MAX, false));
            }
        }
        items.push(item);
    }
    for k in (1..items.len()).rev() {
        let (t, l, p) = (items[k].total, items[k].links, items[k].parent);
        if let Some(parent) = items.get_mut(p) {
            parent.total += t;
            parent.links |= l;
        }
    }
    let target = header::used(f)? as usize / 2;
    let mut best: Option<(usize, Choice)> = None;
    // The best run of the root's own children, when it is preferred.
    let mut best_root: Option<(usize, Choice)> = None;
    // The best run of at least a quarter of the frame without a link in
    // it: moving such a run keeps the routing to child frames here, in
    // the upper frame, instead of pushing it a level down.
    let mut best_free: Option<(usize, Choice)> = None;
    for group in edges.chunk_by(|a, b| a.0 == b.0) {
        let Some(&(idx, ..)) = group.first() else {
            continue;
        };
        let Some(it) = items.get(idx) else {
            return Err(Corrupt("spill: edge of no node"));
        };
        // `group`: (idx, branch byte, child index, is a link), by byte.
        let kids = group;
        // Runs never include a link (a link may stand in several slots; a
        // run splitting its group would leave it shared across frames).
        let mut start = 0;
        while start < kids.len() {
            if kids[start].3 {
                start += 1;
                continue;
            }
            let mut end = start;
            let mut sum = 0usize;
            let mut links = false;
            // Grow the run while that brings it closer to the target.
            while end < kids.len() && !kids[end].3 {
                let Some(kid) = items.get(kids[end].2) else {
                    return Err(Corrupt("spill: edge to no node"));
                };
                let s = kid.total;
                if sum > 0 && sum.abs_diff(target) < (sum + s).abs_diff(target) {
                    break;
                }
                sum += s;
                links |= kid.links;
                end += 1;
            }
            let whole_root = idx == 0 && start == 0 && end == kids.len();
            if sum >= MIN_SPILL && !whole_root {
                let score = sum.abs_diff(target);
                let slot = if idx == 0
                    && prefer_root
                    && sum >= target / 2
                    && sum + target / 4 <= 2 * target
                {
                    &mut best_root
                } else if !links && sum >= target / 2 {
                    &mut best_free
                } else {
                    &mut best
                };
                if slot.as_ref().is_none_or(|(s, _)| score < *s) {
                    let bytes = kids[start..end].iter().map(|k| k.1).collect();
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
    Ok(best_root.or(best_free).or(best).map(|(_, c)| c))
}

/// The parent frame of a spilling fan frame, latched exclusively by the
/// caller (after the fan frame: see [`spill`] for why that cannot
/// deadlock), for a sideways spill.
pub(crate) struct Parent<'a> {
    pub(crate) w: &'a FrameWrite,
    pub(crate) frame: &'a AtomicFrame,
    /// Key bytes from the tree root to the node `Y` whose link leads to
    /// the spilling frame (the link's branch byte excluded).
    pub(crate) path: &'a [u8],
    /// Key bytes consumed above the parent frame's root.
    pub(crate) depth: usize,
    /// Set when [`spill`] changed the parent, whatever it returns (the
    /// caller marks it dirty).
    pub(crate) changed: std::cell::Cell<bool>,
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
    /// Children of the spilling frame's fan node moved to a sibling
    /// frame with room, relinked from the parent frame (which changed and
    /// must be marked dirty; the sibling was marked dirty by [`spill`]).
    Shifted,
    /// The spilling frame's top node moved up into the parent frame
    /// (which changed and must be marked dirty), the rest into a new frame
    /// below it; the spilling frame is obsolete and retired (it must not
    /// be marked dirty).
    Raised,
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
    if let Some(p) = parent {
        if raise(bm, w, p, seq)? {
            return Ok(Spilled::Raised);
        }
        if shift(bm, w, p, seq)? {
            return Ok(Spilled::Shifted);
        }
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
            if beside.is_some() {
                p.changed.set(true);
            } else {
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
    // `choose` counts a byte for every branch, but a fan root's branch
    // bytes were consumed above this frame (they are in its depth).
    let fan_adjust = usize::from(header::is_fan(f)?);
    let depth = (header::depth(f)? as usize + c.rel_depth)
        .checked_sub(fan_adjust)
        .ok_or(Corrupt("fan frame depth"))?;
    let (guid, child, fan_at, mut fan) = new_fan_frame(bm, f, depth, c.bytes.len())?;
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

/// Raises the top node of a full fan frame `F` whose fan node has a
/// single child: a frame like that cannot spill sideways (no run of its
/// fan node's children leaves it one), and a spill below it would add a
/// frame level for every key under it. Instead the child, an inner node
/// `N` with at least two children, is copied (prefix, value leaf and all)
/// into the parent `P` in place of the link to `F`; `N`'s children that
/// are links are copied as links, the others move to a new fan frame `G`
/// keyed by `N`'s branch bytes (one level deeper), linked from `N`'s copy.
/// `G` holds all of `F`'s bytes but the two nodes, and its fan node has
/// several children, so it can spill sideways into `P` from then on: the
/// routing levels gather in `P` instead of each becoming a frame level.
/// `F` is marked obsolete and retired. `false` (nothing changed but
/// perhaps a repack of `P`) when `F` or `P` does not look like that or
/// `P` has no room.
fn raise(bm: &BufferManager, w: &FrameWrite, p: &Parent<'_>, seq: u64) -> FResult<bool> {
    let f = w.frame();
    if !header::is_fan(f)? {
        return Ok(false);
    }
    let Node::Inner(fan) = node::decode(f, header::root(f)?)? else {
        return Err(Corrupt("fan frame root is not a fan node"));
    };
    let [(b, top)] = node::children(f, &fan)?[..] else {
        return Ok(false);
    };
    let Node::Inner(n) = node::decode(f, top)? else {
        return Ok(false);
    };
    if n.count < 2 {
        return Ok(false);
    }
    let kids = node::children(f, &n)?;
    // Children that stay together in `G`, and link children (each source
    // link once: a link may stand in several slots).
    let mut stays = Vec::new();
    let mut links = std::collections::HashSet::new();
    for &(c, ptr) in &kids {
        if matches!(node::decode(f, ptr)?, Node::Link(_)) {
            links.insert(ptr);
        } else {
            stays.push((c, ptr));
        }
    }
    let mut prefix = Vec::new();
    f.read_into(n.prefix_at(), n.prefix_len, &mut prefix)?;
    let kind = node::kind_for(n.count);
    let value_size = if n.value == 0 {
        0
    } else {
        node::needed_size(&node::decode(f, n.value)?)
    };
    let need = node::inner_size(kind, prefix.len())
        + value_size
        + LINK_SIZE * (links.len() + usize::from(!stays.is_empty()));
    let guid = w.blob().guid;
    // `P`'s node `Y` must route `b`, and only `b`, to `F`'s link.
    let find = |pf: &AtomicFrame| -> FResult<Option<(usize, node::Link)>> {
        let Some(y) = crate::tree::merge::node_at(pf, p.path, p.depth)? else {
            return Ok(None);
        };
        let Some((slot, link)) = node::find_child(pf, &y, b)? else {
            return Ok(None);
        };
        let Node::Link(l) = node::decode(pf, link)? else {
            return Ok(None);
        };
        if l.guid != guid {
            return Ok(None);
        }
        let uses = node::children(pf, &y)?
            .iter()
            .filter(|&&(_, c)| c == link)
            .count();
        Ok((uses == 1).then_some((slot, l)))
    };
    if find(p.frame)?.is_none() {
        return Ok(false);
    }
    if alloc::reclaimable(p.frame)? < need {
        // `P` is full: spill part of it first (below it; no frame but
        // `P` changes, and `F`'s link may move away with the run, which
        // `find` then notices).
        if spill(bm, p.w, None, seq)? == Spilled::Nothing {
            return Ok(false);
        }
        p.changed.set(true);
        if find(p.frame)?.is_none() || alloc::reclaimable(p.frame)? < need {
            return Ok(false);
        }
    }
    p.changed.set(true);
    if alloc::tail_room(p.frame)? < need {
        repack(p.frame)?;
        if alloc::tail_room(p.frame)? < need {
            return Err(Corrupt("repack made no room"));
        }
    }
    let (slot, old_link) = find(p.frame)?.ok_or(Corrupt("raise parent node vanished"))?;
    // `G`, unless every child of `N` is a link.
    let g_link = if stays.is_empty() {
        0
    } else {
        let depth = header::depth(f)? as usize + n.prefix_len + 1;
        let (g_guid, g, fan_at, mut gfan) = new_fan_frame(bm, f, depth, stays.len())?;
        let mut shared = std::collections::HashMap::new();
        for &(c, ptr) in &stays {
            let copy = copy_subtree_sharing(f, ptr, &g, &mut shared)?;
            node::add_child(&g, &mut gfan, c, copy)?;
        }
        g.set_u32(header::OFF_ROOT, fan_at as u32)?;
        g.mark_ordered()?;
        let at = alloc::alloc_reserved(p.frame, LINK_SIZE)?;
        node::write_link(p.frame, at, LINK_SIZE, &g_guid)?;
        header::add(p.frame, header::OFF_LINKS, 1)?;
        bm.insert_new(g_guid, g, seq);
        at as u32
    };
    // `N`'s copy in `P`: its value leaf, then its children.
    let size = node::inner_size(kind, prefix.len());
    let at = alloc::alloc_reserved(p.frame, size)?;
    let value = if n.value == 0 {
        0
    } else {
        copy_subtree(f, n.value, p.frame)?
    };
    node::write_inner(p.frame, at, size, kind, &prefix, value)?;
    let Node::Inner(mut up) = node::decode(p.frame, at as u32)? else {
        return Err(Corrupt("raised node"));
    };
    let mut shared = std::collections::HashMap::new();
    for &(c, ptr) in &kids {
        let child = if links.contains(&ptr) {
            copy_subtree_sharing(f, ptr, p.frame, &mut shared)?
        } else {
            g_link
        };
        node::add_child(p.frame, &mut up, c, child)?;
    }
    p.frame.set_u32(slot, at as u32)?;
    alloc::free(p.frame, old_link.off, old_link.size)?;
    header::add(p.frame, header::OFF_LINKS, -1)?;
    w.blob().mark_obsolete();
    bm.retire(w.blob(), seq);
    #[cfg(feature = "tracing")]
    tracing::debug!(
        children = kids.len(),
        links = links.len(),
        "fan frame's top node raised into its parent"
    );
    Ok(true)
}

/// A sibling may take children from a full fan frame while it stays at
/// or below this many bytes.
const SHIFT_LIMIT: usize = FRAME_SIZE * 7 / 8;
/// Moving fewer bytes than this is not worth it: the frame would be full
/// again soon.
const MIN_SHIFT: usize = FRAME_SIZE / 16;

/// Moves children of the full fan frame `F`'s fan node from the edge next
/// to a sibling `S` (the frame linked from the neighbouring slot of the
/// parent's node `Y`) into `S`'s fan node, and points `Y`'s slots for
/// them to `S`'s link, when `S` has room: about half the difference of
/// their used bytes, so both end near the same fill. Splitting a full
/// frame in two leaves two half-full frames; with path-shaped keys
/// siblings grow at the same rate, so they fill and split in step and
/// the tree ends half full at unlucky sizes. Sharing with a sibling
/// first (as a B*-tree does) keeps frames fuller. `S` is taken with
/// `try_lock` (never waiting: the caller holds `F` and `P`), must be
/// cached, and is marked dirty here before its latch is released.
fn shift(bm: &BufferManager, w: &FrameWrite, p: &Parent<'_>, seq: u64) -> FResult<bool> {
    let f = w.frame();
    if !header::is_fan(f)? {
        return Ok(false);
    }
    let Node::Inner(mut fan) = node::decode(f, header::root(f)?)? else {
        return Err(Corrupt("fan frame root is not a fan node"));
    };
    let fan_kids = node::children(f, &fan)?;
    let Some(&(first, _)) = fan_kids.first() else {
        return Ok(false);
    };
    if fan_kids.len() < 2 {
        return Ok(false);
    }
    let Some(y) = crate::tree::merge::node_at(p.frame, p.path, p.depth)? else {
        return Ok(false);
    };
    let Some((_, link)) = node::find_child(p.frame, &y, first)? else {
        return Ok(false);
    };
    match node::decode(p.frame, link)? {
        Node::Link(l) if l.guid == w.blob().guid => {}
        _ => return Ok(false),
    }
    let ykids = node::children(p.frame, &y)?;
    let (Some(lo), Some(hi)) = (
        ykids.iter().position(|&(_, c)| c == link),
        ykids.iter().rposition(|&(_, c)| c == link),
    ) else {
        return Ok(false);
    };
    let depth = header::depth(f)?;
    let used_f = header::used(f)? as usize;
    for (pos, right) in [(hi.checked_add(1), true), (lo.checked_sub(1), false)] {
        let Some(&(_, sptr)) = pos.and_then(|i| ykids.get(i)) else {
            continue;
        };
        let Node::Link(sl) = node::decode(p.frame, sptr)? else {
            continue;
        };
        if sl.guid == w.blob().guid {
            continue;
        }
        let Some(sw) = bm.cached(&sl.guid).and_then(FrameWrite::try_lock) else {
            continue;
        };
        let sf = sw.frame();
        // An emptied fan frame (root 0) may stay linked until its unlink
        // or a merge pass: it has no fan node to take children.
        if sw.blob().is_obsolete()
            || !header::is_fan(sf)?
            || header::depth(sf)? != depth
            || header::root(sf)? == 0
        {
            continue;
        }
        let used_s = header::used(sf)? as usize;
        let goal = used_f.saturating_sub(used_s) / 2;
        // F's fan children from the edge next to S (never a link, never
        // all of them, never a byte `S` already has).
        let mut run = Vec::new();
        let mut moved = 0usize;
        let edge: Box<dyn Iterator<Item = &(u8, u32)>> = if right {
            Box::new(fan_kids.iter().rev())
        } else {
            Box::new(fan_kids.iter())
        };
        for &(b, c) in edge {
            if run.len() + 1 == fan_kids.len() || matches!(node::decode(f, c)?, Node::Link(_)) {
                break;
            }
            let size = crate::frame::copy::subtree_bytes(f, c)?;
            // Take the child while that brings the two closer.
            if moved + size / 2 >= goal || used_s + moved + size > SHIFT_LIMIT {
                break;
            }
            run.push((b, c));
            moved += size;
        }
        if moved < MIN_SHIFT {
            continue;
        }
        let Node::Inner(sfan) = node::decode(sf, header::root(sf)?)? else {
            return Err(Corrupt("fan frame root is not a fan node"));
        };
        let mut clash = false;
        for &(b, _) in &run {
            clash |= node::find_child(sf, &sfan, b)?.is_some();
        }
        if clash {
            continue;
        }
        let total = sfan.count + run.len();
        let kind = node::kind_for(total);
        let need = moved + node::inner_size(kind, 0);
        if alloc::reclaimable(sf)? < need {
            continue;
        }
        if alloc::tail_room(sf)? < need {
            repack(sf)?;
        }
        let Node::Inner(mut sfan) = node::decode(sf, header::root(sf)?)? else {
            return Err(Corrupt("fan frame root is not a fan node"));
        };
        if total > node::capacity(sfan.kind) {
            // Grow `S`'s fan node.
            let size = node::inner_size(kind, 0);
            let at = alloc::alloc_reserved(sf, size)?;
            node::write_inner(sf, at, size, kind, &[], 0)?;
            let Node::Inner(mut grown) = node::decode(sf, at as u32)? else {
                return Err(Corrupt("grown fan node"));
            };
            for (b, c) in node::children(sf, &sfan)? {
                node::add_child(sf, &mut grown, b, c)?;
            }
            sf.set_u32(header::OFF_ROOT, at as u32)?;
            alloc::free(sf, sfan.off, sfan.size)?;
            sfan = grown;
        }
        for &(b, c) in &run {
            let copy = copy_subtree(f, c, sf)?;
            node::add_child(sf, &mut sfan, b, copy)?;
        }
        for &(b, _) in &run {
            let (slot, _) =
                node::find_child(p.frame, &y, b)?.ok_or(Corrupt("shifted slot vanished"))?;
            p.frame.set_u32(slot, sptr)?;
        }
        for &(b, c) in &run {
            node::remove_child(f, &mut fan, b)?;
            free_subtree(f, c)?;
        }
        bm.mark_dirty(sw.blob().guid, seq);
        p.changed.set(true);
        #[cfg(feature = "tracing")]
        tracing::debug!(
            bytes = moved,
            children = run.len(),
            "fan children shifted to a sibling frame"
        );
        return Ok(true);
    }
    Ok(false)
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
/// A fresh fan frame at `depth` for subtrees taken from `f` (whose max
/// seq it carries), with an empty fan node sized for `children`: its
/// name, the frame, where the fan node lies, and the node.
fn new_fan_frame(
    bm: &BufferManager,
    f: &AtomicFrame,
    depth: usize,
    children: usize,
) -> FResult<(BlobGuid, AtomicFrame, usize, node::Inner)> {
    let guid = bm.new_guid();
    let frame = AtomicFrame::zeroed();
    header::init(
        &frame,
        guid,
        u32::try_from(depth).map_err(|_| Corrupt("depth"))?,
    )?;
    frame.set_u16(header::OFF_FLAGS, header::FLAG_FAN)?;
    frame.set_u64(header::OFF_MAX_SEQ, header::max_seq(f)?)?;
    let kind = node::kind_for(children);
    let size = node::inner_size(kind, 0);
    let fan_at = alloc::alloc_reserved(&frame, size)?;
    node::write_inner(&frame, fan_at, size, kind, &[], 0)?;
    let Node::Inner(fan) = node::decode(&frame, fan_at as u32)? else {
        return Err(Corrupt("new fan node"));
    };
    Ok((guid, frame, fan_at, fan))
}

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
