//! Whole-subtree operations inside and between frames: measuring, moving
//! (spillover and merge), freeing and repacking (in-frame compaction). The
//! structural check of a loaded frame image is in `validate`.
//!
//! Every walk here is iterative with an explicit stack (a chain of nodes
//! can be as deep as the longest key) and bounded by the number of 8-byte
//! granules in a frame, so corrupt pointers cannot loop forever.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use super::alloc;
use super::header::{self, OFF_COMPACTS, OFF_LINKS};
use super::mem::{AtomicFrame, Corrupt, FResult};
use super::node::{self, Inner, Node, N16, N4, N48};
use super::HEADER_SIZE;
use crate::store::{BlobGuid, FRAME_SIZE};

/// Most nodes a frame can hold; a walk that visits more is looping.
pub(super) const MAX_NODES: usize = FRAME_SIZE / 8;

/// Where an inner node's child-pointer slots start, and how many there
/// are (used or not).
fn slot_range(n: &Inner) -> (usize, usize) {
    let body = n.body();
    match n.kind {
        N4 => (body + 8, n.count.min(4)),
        N16 => (body + 16, n.count.min(16)),
        N48 => (body + 256, 48),
        _ => (body, 256),
    }
}

/// Child-pointer slots of an inner node, in slot order (not byte order).
pub(super) fn child_slots(f: &AtomicFrame, n: &Inner) -> FResult<Vec<(usize, u32)>> {
    let (at, cap) = slot_range(n);
    let mut out = Vec::with_capacity(n.count);
    for i in 0..cap {
        let slot = at + 4 * i;
        let c = f.u32(slot)?;
        if c != 0 {
            out.push((slot, c));
        }
    }
    Ok(out)
}

/// Calls `visit(slot address, pointer)` for each child of an inner node
/// in descending key (branch byte) order, without collecting them: a
/// copy pushes them on its stack this way to pop them in key order. Only
/// a `N48` keeps its slots in another order (insertion); its index is
/// walked byte by byte instead.
fn child_slots_descending(
    f: &AtomicFrame,
    n: &Inner,
    mut visit: impl FnMut(usize, u32),
) -> FResult<()> {
    if n.kind == N48 {
        let body = n.body();
        for b in (0..256).rev() {
            let idx = usize::from(f.u8(body + b)?);
            if idx == 0 {
                continue;
            }
            if idx > 48 {
                return Err(Corrupt("node48 index"));
            }
            let slot = body + 256 + 4 * (idx - 1);
            let c = f.u32(slot)?;
            if c != 0 {
                visit(slot, c);
            }
        }
        return Ok(());
    }
    let (at, cap) = slot_range(n);
    for i in (0..cap).rev() {
        let slot = at + 4 * i;
        let c = f.u32(slot)?;
        if c != 0 {
            visit(slot, c);
        }
    }
    Ok(())
}

/// Calls `visit` once on every node of the subtree at `root` (pre-order,
/// no particular sibling order). A link node that several child slots of
/// one node share (a fan link, see `header::FLAG_FAN`) is visited once.
pub(crate) fn for_each_node(
    f: &AtomicFrame,
    root: u32,
    mut visit: impl FnMut(&Node) -> FResult<()>,
) -> FResult<()> {
    if root == 0 {
        return Ok(());
    }
    let mut stack = vec![root];
    let mut seen = 0usize;
    let mut links: HashSet<u32> = HashSet::new();
    while let Some(r) = stack.pop() {
        seen += 1;
        if seen > MAX_NODES {
            return Err(Corrupt("node graph has a cycle"));
        }
        let n = node::decode(f, r)?;
        if matches!(n, Node::Link(_)) && !links.insert(r) {
            continue;
        }
        visit(&n)?;
        if let Node::Inner(i) = n {
            if i.value != 0 {
                stack.push(i.value);
            }
            for (_, c) in child_slots(f, &i)? {
                stack.push(c);
            }
        }
    }
    Ok(())
}

/// Bytes the subtree needs when packed.
pub(crate) fn subtree_bytes(f: &AtomicFrame, root: u32) -> FResult<usize> {
    let mut total = 0;
    for_each_node(f, root, |n| {
        total += node::needed_size(n);
        Ok(())
    })?;
    Ok(total)
}

/// Frees every node of the subtree at `root`.
pub(crate) fn free_subtree(f: &AtomicFrame, root: u32) -> FResult<()> {
    free_nodes(f, root, false)
}

/// Frees every node below `root`, keeping `root` itself (its bytes are
/// about to be reused).
pub(crate) fn free_below(f: &AtomicFrame, root: u32) -> FResult<()> {
    free_nodes(f, root, true)
}

fn free_nodes(f: &AtomicFrame, root: u32, keep_root: bool) -> FResult<()> {
    let mut nodes = Vec::new();
    for_each_node(f, root, |n| {
        if keep_root && node::node_off(n) == root as usize {
            return Ok(());
        }
        nodes.push((
            node::node_off(n),
            node::node_size(n),
            matches!(n, Node::Link(_)),
        ));
        Ok(())
    })?;
    // Free from the highest offset down so tail frees fold into bump.
    nodes.sort_unstable_by_key(|n| std::cmp::Reverse(n.0));
    for (off, size, link) in nodes {
        alloc::free(f, off, size)?;
        if link {
            header::add(f, OFF_LINKS, -1)?;
        }
    }
    Ok(())
}

/// Copies the subtree at `root` of `src` into `dst` (which must have
/// `subtree_bytes` of tail room) and returns its new root pointer. The
/// copy is laid out in key order: each inner node, then its value leaf,
/// then its children's subtrees by branch byte (pre-order), so an
/// in-order walk reads it front to back.
pub(crate) fn copy_subtree(src: &AtomicFrame, root: u32, dst: &AtomicFrame) -> FResult<u32> {
    copy_subtree_sharing(src, root, dst, &mut HashMap::new())
}

/// [`copy_subtree`] for several subtrees that may share link nodes (the
/// children of one fan node): `copied_links` maps source link offsets to
/// their copies across calls, so a shared link is copied once and every
/// slot gets that one copy.
pub(crate) fn copy_subtree_sharing(
    src: &AtomicFrame,
    root: u32,
    dst: &AtomicFrame,
    copied_links: &mut HashMap<u32, u32>,
) -> FResult<u32> {
    if root == 0 {
        return Ok(0);
    }
    let mut copy_one = |r: u32, stack: &mut Vec<(usize, u32)>| -> FResult<u32> {
        if let Some(&done) = copied_links.get(&r) {
            return Ok(done);
        }
        let n = node::decode(src, r)?;
        // Whole words: node sizes are multiples of 8 (`node::head_size`).
        let need = node::needed_size(&n);
        if need % 8 != 0 {
            return Err(Corrupt("node size"));
        }
        let at = alloc::alloc_reserved(dst, need)?;
        dst.store_words_from(at, src, node::node_off(&n), need / 8)?;
        dst.set_u32(at + node::OFF_SIZE, need as u32)?;
        match n {
            Node::Inner(i) => {
                let moved = Inner {
                    off: at,
                    size: need,
                    ..i
                };
                // Pushed in reverse so they pop in key order: the node's
                // own value leaf right after it, then each child's whole
                // subtree by branch byte (pre-order). An in-order scan
                // then reads the copy front to back.
                let delta = at as isize - i.off as isize;
                child_slots_descending(src, &i, |slot, c| {
                    stack.push(((slot as isize + delta) as usize, c));
                })?;
                if i.value != 0 {
                    stack.push((moved.value_slot(), i.value));
                }
            }
            Node::Link(_) => {
                header::add(dst, OFF_LINKS, 1)?;
                copied_links.insert(r, u32::try_from(at).map_err(|_| Corrupt("offset"))?);
            }
            Node::Leaf(_) => {}
        }
        u32::try_from(at).map_err(|_| Corrupt("offset"))
    };
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let new_root = copy_one(root, &mut stack)?;
    let mut seen = 1usize;
    while let Some((slot, r)) = stack.pop() {
        seen += 1;
        if seen > MAX_NODES {
            return Err(Corrupt("node graph has a cycle"));
        }
        let nr = copy_one(r, &mut stack)?;
        dst.set_u32(slot, nr)?;
    }
    Ok(new_root)
}

thread_local! {
    /// Each thread's scratch frame for [`repack`] and how many of its
    /// leading bytes may be non-zero (the rest is zero). Reused because a
    /// fresh frame per repack cost a page-faulted (kernel-zeroed) 512 KiB
    /// slot plus a 512 KiB image buffer: a fifth of a bulk load's time.
    static REPACK_SCRATCH: RefCell<Option<(AtomicFrame, usize)>> = const { RefCell::new(None) };
}

/// Rewrites the frame with every node packed from the data area's start
/// (no gaps) in key order (see [`copy_subtree_sharing`]) and bumps its
/// compaction counter. Exclusive latch required.
pub(crate) fn repack(f: &AtomicFrame) -> FResult<()> {
    REPACK_SCRATCH.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            // Not reentrant, but should it ever be: a fresh frame.
            return repack_via(f, &AtomicFrame::zeroed()).map(|_| ());
        };
        let (scratch, dirty) = slot.get_or_insert_with(|| (AtomicFrame::zeroed(), 0));
        scratch.zero_prefix(*dirty);
        // Until this repack succeeds, assume it wrote anywhere.
        *dirty = FRAME_SIZE;
        let bump = repack_via(f, scratch)?;
        *dirty = bump;
        Ok(())
    })
}

/// [`repack`] through `scratch`, an all-zero frame: builds the packed
/// frame there, then stores it over `f` (untouched if the copy fails).
/// Returns the packed frame's bump; `scratch` is zero from there on.
fn repack_via(f: &AtomicFrame, scratch: &AtomicFrame) -> FResult<usize> {
    let guid = header::guid(f)?;
    header::init(scratch, guid, header::depth(f)?)?;
    scratch.set_u16(header::OFF_FLAGS, f.u16(header::OFF_FLAGS)?)?;
    scratch.set_u64(header::OFF_MAX_SEQ, header::max_seq(f)?)?;
    scratch.set_u32(OFF_COMPACTS, f.u32(OFF_COMPACTS)?.wrapping_add(1))?;
    let root = copy_subtree(f, header::root(f)?, scratch)?;
    scratch.set_u32(header::OFF_ROOT, root)?;
    let bump = header::bump(scratch)? as usize;
    f.store_from(scratch, bump);
    f.mark_ordered()?;
    Ok(bump)
}

/// Whether a checkpoint should repack the frame to restore key order:
/// nodes allocated since it was last written in key order (they lie in
/// allocation order at the tail, so an in-order scan jumps around them)
/// make up at least an eighth of the allocated area, and the frame has
/// at least 32 KiB of them. Below that a scan mostly reads the frame
/// front to back already, and the repack (a copy of the frame) is not
/// worth it. An eighth, not a quarter: 600,000 updates over a
/// 10^6-key objstore tree leave 481 of its 562 frames between an eighth
/// and a quarter out of order (value leaves that grew moved to the tail),
/// and repacking them made scan100 8% faster (docs/design.md, "Space
/// inside a frame").
pub(crate) fn disordered(f: &AtomicFrame) -> FResult<bool> {
    let bump = header::bump(f)? as usize;
    let since = bump.saturating_sub((f.ordered_to() as usize).max(HEADER_SIZE));
    Ok(since >= DISORDER_MIN && DISORDER_SHARE * since >= bump.saturating_sub(HEADER_SIZE))
}

/// Fewest out-of-order bytes that make [`disordered`] true.
const DISORDER_MIN: usize = 32 << 10;

/// [`disordered`] needs at least 1/`DISORDER_SHARE` of the allocated area
/// out of order.
const DISORDER_SHARE: usize = 8;

/// Per-frame numbers for `TreeStats`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameNumbers {
    pub(crate) used: u32,
    pub(crate) gap: u32,
    pub(crate) nodes: u32,
    pub(crate) links: u32,
    pub(crate) compacts: u32,
}

pub(crate) fn numbers(f: &AtomicFrame) -> FResult<FrameNumbers> {
    Ok(FrameNumbers {
        used: header::used(f)?,
        gap: header::gap(f)?,
        nodes: f.u32(header::OFF_NODES)?,
        links: f.u32(OFF_LINKS)?,
        compacts: f.u32(OFF_COMPACTS)?,
    })
}

/// The child frames this frame links to (each once).
pub(crate) fn links(f: &AtomicFrame) -> FResult<Vec<BlobGuid>> {
    let mut out = Vec::new();
    for_each_node(f, header::root(f)?, |n| {
        if let Node::Link(l) = n {
            out.push(l.guid);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Test oracle: how many times the frame's nodes, visited in key order
/// (pre-order: node, value leaf, children by branch byte), step back to
/// a lower offset. 0 for a frame laid out in key order.
#[cfg(test)]
pub(crate) fn key_order_steps_back(f: &AtomicFrame) -> FResult<usize> {
    let mut offs = Vec::new();
    let mut stack = vec![header::root(f)?];
    while let Some(r) = stack.pop() {
        if r == 0 {
            continue;
        }
        let n = node::decode(f, r)?;
        offs.push(node::node_off(&n));
        if let Node::Inner(i) = n {
            for (_, c) in node::children(f, &i)?.into_iter().rev() {
                stack.push(c);
            }
            stack.push(i.value);
        }
        if offs.len() > MAX_NODES {
            return Err(Corrupt("node graph has a cycle"));
        }
    }
    Ok(offs.windows(2).filter(|w| w[1] < w[0]).count())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::validate::validate;

    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// A valid frame with a few hundred nodes, built through the walker.
    pub(crate) fn sample() -> AtomicFrame {
        let f = AtomicFrame::zeroed();
        header::init(&f, [3; 16], 0).unwrap();
        for i in 0..300u32 {
            let key = format!("dir{}/sub{}/file{}", i % 5, i % 17, i);
            match crate::tree::insert::insert(&f, key.as_bytes(), 0, &i.to_le_bytes()).unwrap() {
                crate::tree::insert::Outcome::Done(_) => {}
                _ => panic!("sample frame full"),
            }
        }
        f
    }

    pub(crate) fn exercise(f: &AtomicFrame) {
        // Whatever the bytes, these return Ok or Err and never panic.
        let _ = validate(f, &[3; 16]);
        let _ = subtree_bytes(f, header::root(f).unwrap_or(0));
        let _ = links(f);
        for k in ["dir1/sub1/file1", "dir4/", "", "zzz"] {
            let _ = crate::tree::read::walk(f, k.as_bytes(), 0, Some(&mut Vec::new()));
        }
    }

    /// `n` keys inserted through the walker, then every third erased
    /// (gaps), in a frame whose guid is 3s.
    fn frame_with(n: u32, tag: u32) -> AtomicFrame {
        let f = AtomicFrame::zeroed();
        header::init(&f, [3; 16], 0).unwrap();
        // Wide nodes too (node48 / node256: one byte of 0..=255 after a
        // shared prefix), whose empty slots are zero bytes.
        let key = |i: u32| {
            let mut k = format!("d{}/s{}/", i % 7, i % 13).into_bytes();
            k.push((i.wrapping_mul(97).wrapping_add(tag)) as u8);
            k.extend_from_slice(format!("f{tag}-{i}").as_bytes());
            k
        };
        for i in 0..n {
            let v = vec![i as u8; (i % 23) as usize];
            match crate::tree::insert::insert(&f, &key(i), 0, &v).unwrap() {
                crate::tree::insert::Outcome::Done(_) => {}
                _ => panic!("test frame full"),
            }
        }
        for i in (0..n).step_by(3) {
            let t = crate::tree::erase::Target::Key;
            crate::tree::erase::erase(&f, &key(i), 0, t).unwrap();
        }
        assert!(header::gap(&f).unwrap() > 0, "erases left gaps");
        f
    }

    fn image(f: &AtomicFrame) -> Vec<u8> {
        let mut v = vec![0u8; FRAME_SIZE];
        f.copy_to(&mut v);
        v
    }

    /// The repack before the per-thread scratch: a fresh zeroed frame,
    /// then its whole image stored over `f`.
    fn repack_reference(f: &AtomicFrame) {
        let fresh = AtomicFrame::zeroed();
        header::init(&fresh, header::guid(f).unwrap(), header::depth(f).unwrap()).unwrap();
        fresh
            .set_u16(header::OFF_FLAGS, f.u16(header::OFF_FLAGS).unwrap())
            .unwrap();
        fresh
            .set_u64(header::OFF_MAX_SEQ, header::max_seq(f).unwrap())
            .unwrap();
        fresh
            .set_u32(OFF_COMPACTS, f.u32(OFF_COMPACTS).unwrap().wrapping_add(1))
            .unwrap();
        let root = copy_subtree(f, header::root(f).unwrap(), &fresh).unwrap();
        fresh.set_u32(header::OFF_ROOT, root).unwrap();
        f.store_image(&image(&fresh));
    }

    /// Repacking through the reused per-thread scratch frame gives, byte
    /// for byte, the image a fresh zeroed frame gives, also right after a
    /// repack of a bigger frame on the same thread, and leaves the
    /// scratch zero past its recorded extent. Deliberate bugs this
    /// catches: `store_from` leaving the old frame's bytes past the new
    /// bump (the frames shrink, so those bytes are non-zero), and a
    /// scratch not cleared up to the previous repack's extent (the bigger
    /// frame's bytes left past the smaller one's bump).
    #[test]
    fn repack_through_the_reused_scratch_matches_a_fresh_frame() {
        for (n, tag) in [(1500, 1), (200, 2), (900, 3), (40, 4), (1500, 5)] {
            let f = frame_with(n, tag);
            let g = AtomicFrame::from_image(&image(&f)).unwrap();
            repack(&f).unwrap();
            repack_reference(&g);
            assert!(image(&f) == image(&g), "repack of {n} keys differs");
            validate(&f, &[3; 16]).unwrap();
            REPACK_SCRATCH.with(|c| {
                let b = c.borrow();
                let (scratch, dirty) = b.as_ref().unwrap();
                assert!(
                    image(scratch)[*dirty..].iter().all(|&x| x == 0),
                    "the scratch is zero past its extent after {n} keys"
                );
            });
        }
    }

    #[test]
    fn sample_frame_validates_and_repacks() {
        let f = sample();
        validate(&f, &[3; 16]).unwrap();
        assert!(validate(&f, &[4; 16]).is_err(), "guid is checked");
        let before = subtree_bytes(&f, header::root(&f).unwrap()).unwrap();
        repack(&f).unwrap();
        validate(&f, &[3; 16]).unwrap();
        assert_eq!(
            subtree_bytes(&f, header::root(&f).unwrap()).unwrap(),
            before
        );
        assert_eq!(header::gap(&f).unwrap(), 0);
        assert_eq!(f.u32(OFF_COMPACTS).unwrap(), 1);
    }

    /// A repack lays the frame out in key order, whatever order the keys
    /// were inserted in, through every inner kind (the root here is a
    /// `N48`, whose slots are in insertion order, with `N4`/`N16` and
    /// value leaves below).
    ///
    /// Catches a copy that pushes children in slot order (the layout
    /// comes out reversed) or takes a `N48`'s slots for key order.
    #[test]
    fn repack_lays_nodes_out_in_key_order() {
        let f = AtomicFrame::zeroed();
        header::init(&f, [5; 16], 0).unwrap();
        let mut r = Rng(0x0BAD_5EED_1234_5678);
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for b in 0..40u8 {
            for j in 0..(b % 7) {
                keys.push(vec![b'a' + b, b'/', b'0' + j]);
            }
            keys.push(vec![b'a' + b]);
        }
        for i in (1..keys.len()).rev() {
            keys.swap(i, (r.next() % (i as u64 + 1)) as usize);
        }
        for k in &keys {
            match crate::tree::insert::insert(&f, k, 0, k).unwrap() {
                crate::tree::insert::Outcome::Done(_) => {}
                _ => panic!("frame full"),
            }
        }
        assert!(key_order_steps_back(&f).unwrap() > 0, "scrambled inserts");
        assert!(matches!(
            node::decode(&f, header::root(&f).unwrap()).unwrap(),
            Node::Inner(i) if i.kind == N48
        ));
        let before = subtree_bytes(&f, header::root(&f).unwrap()).unwrap();
        repack(&f).unwrap();
        validate(&f, &[5; 16]).unwrap();
        assert_eq!(key_order_steps_back(&f).unwrap(), 0);
        assert_eq!(f.ordered_to(), header::bump(&f).unwrap());
        assert_eq!(
            subtree_bytes(&f, header::root(&f).unwrap()).unwrap(),
            before
        );
        let mut v = Vec::new();
        for k in &keys {
            match crate::tree::read::walk(&f, k, 0, Some(&mut v)).unwrap() {
                crate::tree::read::Step::Found => assert_eq!(&v, k),
                _ => panic!("{k:?} lost"),
            }
        }
    }

    /// `disordered` flags a frame once an eighth of its allocated area
    /// (and at least 32 KiB) came after its last key-order write.
    ///
    /// Catches a threshold that repacks on every change (a checkpoint
    /// would copy every dirty frame twice) or never, and the old quarter
    /// and 64 KiB (the 40 KiB of 296 below would stay out of order; that
    /// is where an update phase leaves most frames).
    #[test]
    fn disorder_threshold() {
        let f = AtomicFrame::zeroed();
        header::init(&f, [6; 16], 0).unwrap();
        assert!(!disordered(&f).unwrap(), "empty");
        let fill = |to: usize| {
            let bump = header::bump(&f).unwrap() as usize;
            alloc::alloc(&f, to - bump).unwrap().unwrap();
        };
        fill(HEADER_SIZE + (32 << 10) - 8);
        assert!(!disordered(&f).unwrap(), "under 32 KiB");
        fill(HEADER_SIZE + (32 << 10));
        assert!(disordered(&f).unwrap(), "32 KiB, all of it unordered");
        fill(HEADER_SIZE + (256 << 10));
        assert!(disordered(&f).unwrap(), "all of it unordered");
        f.mark_ordered().unwrap();
        assert!(!disordered(&f).unwrap(), "just ordered");
        fill(HEADER_SIZE + (256 << 10) + (32 << 10));
        assert!(!disordered(&f).unwrap(), "32 KiB of 288");
        fill(HEADER_SIZE + (256 << 10) + (40 << 10));
        assert!(disordered(&f).unwrap(), "40 KiB of 296");
    }

    #[test]
    fn random_bytes_never_panic_the_decoder() {
        let mut r = Rng(0x1234_5678_9ABC_DEF1);
        for _ in 0..20 {
            let mut img = vec![0u8; FRAME_SIZE];
            for b in img.iter_mut() {
                *b = r.next() as u8;
            }
            // Plausible header so decoding goes past the first check.
            img[..8].copy_from_slice(&header::MAGIC.to_le_bytes());
            img[8..10].copy_from_slice(&header::FORMAT_VERSION.to_le_bytes());
            img[16..32].copy_from_slice(&[3; 16]);
            img[40..44].copy_from_slice(
                &(HEADER_SIZE as u32 + 8 * (r.next() % 1000) as u32).to_le_bytes(),
            );
            img[44..48].copy_from_slice(&(FRAME_SIZE as u32).to_le_bytes());
            let f = AtomicFrame::from_image(&img).unwrap();
            exercise(&f);
        }
    }
}
