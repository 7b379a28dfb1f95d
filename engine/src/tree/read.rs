//! Optimistic point lookups, and locating the frame that owns a key.

use std::sync::Arc;

use super::{corrupt_in, Core};
use crate::api::errors::Result;
use crate::buffer::frame_table::Guard;
use crate::buffer::CachedBlob;
use crate::frame::node::{self, Node, Quick};
use crate::frame::{header, AtomicFrame, Corrupt, FResult};
use crate::store::BlobGuid;

/// Where a descent ended: the frame, the key bytes consumed above it,
/// its parent frame (and that frame's depth) if it has one, and the walk
/// inside it.
type Descent<'g> = (
    &'g Arc<CachedBlob>,
    usize,
    Option<(&'g Arc<CachedBlob>, usize)>,
    Step,
);

/// Where a walk inside one frame ended.
pub(crate) enum Step {
    /// The key is present (its value was copied out if asked for).
    Found,
    Absent,
    /// The key continues in a child frame; `depth` key bytes are consumed.
    Link(BlobGuid, usize),
}

/// Walks `key` (from `depth`) inside one frame. A found key's value
/// replaces the contents of `out` if given (`None`: locating only).
/// Untrusted under an optimistic latch: validate before acting on the
/// result (or on `out`).
pub(crate) fn walk(
    f: &AtomicFrame,
    key: &[u8],
    mut depth: usize,
    mut out: Option<&mut Vec<u8>>,
) -> FResult<Step> {
    let mut r = match fan_entry(f, key, depth)? {
        Some(r) => r,
        None => return Ok(Step::Absent),
    };
    let mut hops = 0usize;
    loop {
        hops += 1;
        if hops > key.len() + 3 {
            return Err(Corrupt("walk longer than the key"));
        }
        if r == 0 {
            return Ok(Step::Absent);
        }
        let rest = key.get(depth..).ok_or(Corrupt("walk past key end"))?;
        // Leaves and inner nodes, nearly every node a get meets, are read
        // inline (`leaf_or_inner_at`: the head and the second word, no
        // call, no `Node` built in memory); a link, or anything that check
        // turns down, goes through `decode`, which returns the link or the
        // same corruption error.
        let q = match node::leaf_or_inner_at(f, r) {
            Some(q) => q,
            None => match node::decode(f, r)? {
                Node::Link(l) => return Ok(Step::Link(l.guid, depth)),
                Node::Leaf(l) => Quick::Leaf(l),
                Node::Inner(n) => Quick::Inner(n),
            },
        };
        match q {
            Quick::Leaf(l) => {
                if l.suffix_len != rest.len()
                    || f.common_prefix(l.suffix_at(), l.suffix_len, rest)? != rest.len()
                {
                    return Ok(Step::Absent);
                }
                if let Some(out) = out.as_deref_mut() {
                    f.read_value(l.value_at(), l.value_len, out)?;
                }
                return Ok(Step::Found);
            }
            Quick::Inner(n) => {
                if n.prefix_len > rest.len()
                    || (n.prefix_len > 0
                        && f.common_prefix(n.prefix_at(), n.prefix_len, rest)? != n.prefix_len)
                {
                    return Ok(Step::Absent);
                }
                depth += n.prefix_len;
                let Some(&b) = key.get(depth) else {
                    if n.value == 0 {
                        return Ok(Step::Absent);
                    }
                    let l = node::decode_leaf(f, n.value)?;
                    if let Some(out) = out.as_deref_mut() {
                        f.read_value(l.value_at(), l.value_len, out)?;
                    }
                    return Ok(Step::Found);
                };
                match node::child_ptr(f, &n, b)? {
                    None => return Ok(Step::Absent),
                    Some(c) => {
                        // Most nodes a get meets span several cache lines
                        // (nodes are 8-aligned; after a random-order load
                        // of 10^6 objstore keys the child slot lay outside
                        // the head's line for 53% of Node4 and 69% of
                        // Node16 visits, and a leaf spans 3.8 lines), and
                        // which ones it needs is only known once the head
                        // arrives. Asking for the next two lines now
                        // overlaps their misses with the head's instead of
                        // queuing them behind it. Hints only: outside the
                        // frame they are ignored, and nothing is read.
                        f.prefetch((c as usize).saturating_add(64));
                        f.prefetch((c as usize).saturating_add(128));
                        r = c;
                        depth += 1;
                    }
                }
            }
        }
    }
}

/// Where a walk starts inside a frame: the root, or, in a fan frame
/// (`header::FLAG_FAN`), the fan's child for the branch byte the link
/// stood for (`key[depth - 1]`). `None`: nothing there.
pub(crate) fn fan_entry(f: &AtomicFrame, key: &[u8], depth: usize) -> FResult<Option<u32>> {
    let root = header::root(f)?;
    if !header::is_fan(f)? {
        return Ok(Some(root));
    }
    if root == 0 {
        return Ok(None);
    }
    let b = *depth
        .checked_sub(1)
        .and_then(|i| key.get(i))
        .ok_or(Corrupt("fan frame at depth 0"))?;
    let fan = match node::leaf_or_inner_at(f, root) {
        Some(Quick::Inner(n)) => n,
        _ => match node::decode(f, root)? {
            Node::Inner(n) => n,
            _ => return Err(Corrupt("fan frame root is not a fan node")),
        },
    };
    node::child_ptr(f, &fan, b)
}

/// Frame hops that consume no key byte (a fan frame spilling part of its
/// own fan node) can chain, each narrowing the set of branch bytes, so a
/// chain is shorter than 257; a longer one is a cycle.
pub(crate) const MAX_SAME_DEPTH_HOPS: usize = 257;

/// A frame reached through a link must be a fan frame at exactly the key
/// depth the link stands at; the root frame (reached from the tree) is not
/// a fan frame and sits at depth 0. Anything else is corruption (a link
/// retargeted to the wrong frame, or a cycle).
pub(crate) fn check_link_target(
    blob: &CachedBlob,
    frame_depth: FResult<u32>,
    fan: FResult<bool>,
    depth: usize,
    is_root: bool,
) -> crate::api::errors::Result<()> {
    let c = |e| corrupt_in(blob, e);
    let (frame_depth, fan) = (frame_depth.map_err(c)?, fan.map_err(c)?);
    if frame_depth as usize != depth || fan == is_root {
        return Err(c(Corrupt("frame depth does not match its link")));
    }
    Ok(())
}

/// Outcome of an optimistic frame-to-frame descent.
pub(crate) struct Located {
    /// The frame where the walk for the key ended.
    pub(crate) blob: Arc<CachedBlob>,
    /// Key bytes consumed above that frame's root.
    pub(crate) depth: usize,
    /// The frame above it and its depth (None for the root frame).
    pub(crate) parent: Option<(Arc<CachedBlob>, usize)>,
    pub(crate) step: Step,
}

impl Core {
    /// Descends optimistically from the root frame to the frame that owns
    /// `key`, validating every frame it leaves. Frames are looked up under
    /// one table guard and not pinned (E1 in `buffer::frame_table`): the
    /// hops write no shared memory; only the result is pinned.
    pub(crate) fn locate(&self, key: &[u8]) -> Result<Located> {
        let guard = self.bm.guard();
        let (blob, depth, parent, step) = self.descend(key, None, &guard)?;
        Ok(Located {
            blob: Arc::clone(blob),
            depth,
            parent: parent.map(|(p, d)| (Arc::clone(p), d)),
            step,
        })
    }

    /// [`Core::locate`] without pinning the result: the frames are valid
    /// while `guard` lives (and only as of the validated walk). A found
    /// key's value is copied into `out` if given.
    fn descend<'g>(
        &'g self,
        key: &[u8],
        out: Option<&mut Vec<u8>>,
        guard: &'g Guard<'g>,
    ) -> Result<Descent<'g>> {
        let mut hits = 0u64;
        let r = self.descend_counting(key, out, guard, &mut hits);
        if hits > 0 {
            self.bm.counters.hits.add(hits);
        }
        r
    }

    /// [`Core::descend`], adding its frame-table hits to `hits` instead
    /// of to the shared counter: one atomic add per descent, not per hop.
    fn descend_counting<'g>(
        &'g self,
        key: &[u8],
        mut out: Option<&mut Vec<u8>>,
        guard: &'g Guard<'g>,
        hits: &mut u64,
    ) -> Result<Descent<'g>> {
        'restart: loop {
            let mut blob: &Arc<CachedBlob> = &self.root;
            let mut depth = 0usize;
            let mut parent: Option<(&Arc<CachedBlob>, usize)> = None;
            // The parent's latch version as validated when its link was
            // followed.
            let mut parent_v = 0u64;
            let mut hops = 0usize;
            loop {
                let v = blob.latch.optimistic();
                if blob.is_obsolete() {
                    self.bm.counters.restarts.add(1);
                    continue 'restart;
                }
                let step = walk(&blob.frame, key, depth, out.as_deref_mut());
                let frame_depth = header::depth(&blob.frame);
                let fan = header::is_fan(&blob.frame);
                if blob.latch.validate(v).is_err() {
                    self.bm.counters.restarts.add(1);
                    continue 'restart;
                }
                check_link_target(blob, frame_depth, fan, depth, parent.is_none())?;
                hops += 1;
                if hops > key.len() + MAX_SAME_DEPTH_HOPS {
                    return Err(corrupt_in(blob, Corrupt("frame links form a cycle")));
                }
                match step.map_err(|c| corrupt_in(blob, c))? {
                    Step::Link(g, d) => {
                        let child = self.bm.lookup(&g, guard, blob);
                        *hits += u64::from(child.is_ok());
                        // The link must still stand once the child is in
                        // hand: a merge that retired the child (or a load
                        // of its stale image) changed this frame first.
                        if blob.latch.validate(v).is_err() || blob.is_obsolete() {
                            self.bm.counters.restarts.add(1);
                            continue 'restart;
                        }
                        parent = Some((blob, depth));
                        parent_v = v;
                        blob = child?;
                        depth = d;
                    }
                    Step::Absent
                        if parent.is_some_and(|(p, _)| p.latch.validate(parent_v).is_err()) =>
                    {
                        // A sideways spill (`spill`) moves branch bytes out
                        // of a fan frame and relinks them from the parent:
                        // a reader that followed the parent's old link finds
                        // them missing here. The parent changed meanwhile,
                        // so an absence is only trusted while it has not.
                        self.bm.counters.restarts.add(1);
                        continue 'restart;
                    }
                    step => return Ok((blob, depth, parent, step)),
                }
            }
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut v = Vec::new();
        Ok(self.get_into(key, &mut v)?.then_some(v))
    }

    /// Replaces the contents of `out` with the value of `key`; false (and
    /// `out` unspecified) if absent.
    pub(crate) fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let guard = self.bm.guard();
        Ok(matches!(
            self.descend(key, Some(out), &guard)?.3,
            Step::Found
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::node::{
        add_child, inner_size, leaf_size, write_inner, write_leaf, write_link,
    };
    use crate::frame::node::{LINK_SIZE, N4};

    /// A frame whose root Node4 (prefix `ab`) holds `c` -> leaf `d` = `v`,
    /// `x` -> a link to GUID `[9; 16]`, and `z` -> a node of unknown kind.
    fn frame() -> AtomicFrame {
        let f = AtomicFrame::zeroed();
        header::init(&f, [1; 16], 0).unwrap();
        write_inner(&f, 1024, inner_size(N4, 2), N4, b"ab", 0).unwrap();
        let Node::Inner(mut root) = node::decode(&f, 1024).unwrap() else {
            panic!("root is not an inner node");
        };
        write_leaf(&f, 2048, leaf_size(1, 1), b"d", b"v").unwrap();
        write_link(&f, 3072, LINK_SIZE, &[9; 16]).unwrap();
        f.set_u64(4096, 9 | (32 << 32)).unwrap();
        add_child(&f, &mut root, b'c', 2048).unwrap();
        add_child(&f, &mut root, b'x', 3072).unwrap();
        add_child(&f, &mut root, b'z', 4096).unwrap();
        f.set_u32(header::OFF_ROOT, 1024).unwrap();
        f
    }

    /// The point walk reads leaves and inner nodes inline and hands every
    /// other node to `decode`: a link still ends the walk with the child
    /// frame's GUID and the depth after its branch byte, and a node of
    /// unknown kind is an error, not an absence (nor a panic). Deliberate
    /// bug tried: treating whatever the inline check turns down as absent
    /// (`None => return Ok(Step::Absent)`), which loses links and hides
    /// corruption.
    #[test]
    fn walk_finds_values_follows_links_and_reports_corrupt_nodes() {
        let f = frame();
        let mut out = b"stale".to_vec();
        assert!(matches!(
            walk(&f, b"abcd", 0, Some(&mut out)),
            Ok(Step::Found)
        ));
        assert_eq!(out, b"v");
        assert!(matches!(walk(&f, b"abxq", 0, None), Ok(Step::Link(g, 3)) if g == [9; 16]));
        assert!(walk(&f, b"abzq", 0, None).is_err(), "unknown node kind");
        for absent in [&b"abq"[..], b"abce", b"ac", b"ab", b""] {
            assert!(
                matches!(walk(&f, absent, 0, None), Ok(Step::Absent)),
                "{absent:?}"
            );
        }
    }
}
