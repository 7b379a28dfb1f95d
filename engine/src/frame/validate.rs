//! The structural check run on every frame image loaded from a backend
//! ([`validate`]): header, every reachable node decodes inside the
//! allocated area, no overlaps or cycles, value pointers name leaves,
//! child arrays match their counts, `N4`/`N16` keys sorted. Like the walks
//! in `copy`, it is iterative with an explicit stack and bounded by the
//! number of 8-byte granules in a frame, so corrupt pointers cannot loop
//! forever.

use std::cell::RefCell;

use super::copy::MAX_NODES;
use super::header;
use super::mem::{AtomicFrame, Corrupt, FResult};
use super::node::{self, Inner, Node, N16, N4, N48};
use super::HEADER_SIZE;
use crate::store::{BlobGuid, FRAME_SIZE};

/// Words of a bitmap with one bit per 8-byte granule of a frame.
const GRANULE_WORDS: usize = FRAME_SIZE / 8 / 64;

/// Working memory of [`validate`], kept per thread so that checking a
/// loaded frame allocates nothing: which granules belong to a node
/// already claimed, at which granules a link node already seen starts,
/// and the walk's stack of node pointers still to visit.
struct Scratch {
    used: Box<[u64; GRANULE_WORDS]>,
    links: Box<[u64; GRANULE_WORDS]>,
    stack: Vec<u32>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            used: Box::new([0; GRANULE_WORDS]),
            links: Box::new([0; GRANULE_WORDS]),
            stack: Vec::new(),
        }
    }

    /// Marks `off..off + size` as one node's bytes: it must lie in the
    /// allocated area and overlap no node claimed before.
    fn claim(&mut self, bump: usize, off: usize, size: usize) -> FResult<()> {
        if off < HEADER_SIZE || off + size > bump {
            return Err(Corrupt("node outside the allocated area"));
        }
        let (mut g, end) = (off / 8, (off + size).div_ceil(8));
        while g < end {
            let (w, b) = (g / 64, g % 64);
            let n = (end - g).min(64 - b);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << b
            };
            let word = &mut self.used[w];
            if *word & mask != 0 {
                return Err(Corrupt("nodes overlap"));
            }
            *word |= mask;
            g += n;
        }
        Ok(())
    }

    /// Records a link node at `off`; false if it was recorded before (a
    /// fan link shared by several slots, checked once).
    fn first_link(&mut self, off: usize) -> bool {
        let (w, b) = (off / 8 / 64, off / 8 % 64);
        let fresh = self.links[w] & (1 << b) == 0;
        self.links[w] |= 1 << b;
        fresh
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// Full structural check of a stable frame: header, every node decodes
/// and lies inside the allocated area, no two nodes overlap, no cycles,
/// value pointers point at leaves, child counts match, `N4`/`N16` keys
/// are sorted.
///
/// Runs on every frame loaded from a backend, so it allocates nothing
/// (see [`Scratch`]) and decodes each node once, reading child arrays a
/// word at a time. A link node several slots share (a fan link) is
/// checked once; any other node reached twice overlaps itself.
pub(crate) fn validate(f: &AtomicFrame, guid: &BlobGuid) -> FResult<()> {
    header::check(f, guid)?;
    let bump = header::bump(f)? as usize;
    let root = header::root(f)?;
    if header::is_fan(f)? && root != 0 {
        match node::decode(f, root)? {
            Node::Inner(i) if i.prefix_len == 0 && i.value == 0 => {}
            _ => return Err(Corrupt("fan frame root is not a fan node")),
        }
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => validate_nodes(f, bump, root, &mut s),
        // Not reached (validate does not nest); stay correct regardless.
        Err(_) => validate_nodes(f, bump, root, &mut Scratch::new()),
    })
}

fn validate_nodes(f: &AtomicFrame, bump: usize, root: u32, s: &mut Scratch) -> FResult<()> {
    s.used.fill(0);
    s.links.fill(0);
    s.stack.clear();
    if root != 0 {
        s.stack.push(root);
    }
    let mut seen = 0usize;
    let mut links = 0usize;
    let visit = |seen: &mut usize| -> FResult<()> {
        *seen += 1;
        if *seen > MAX_NODES {
            return Err(Corrupt("node graph has a cycle"));
        }
        Ok(())
    };
    while let Some(r) = s.stack.pop() {
        visit(&mut seen)?;
        let n = node::decode(f, r)?;
        if matches!(n, Node::Link(_)) {
            if !s.first_link(r as usize) {
                continue;
            }
            links += 1;
        }
        s.claim(bump, node::node_off(&n), node::needed_size(&n))?;
        let Node::Inner(i) = n else {
            continue;
        };
        if i.value != 0 {
            // The value leaf has no children: check it here rather than
            // pushing it and decoding it a second time.
            let leaf = node::decode_leaf(f, i.value)?;
            visit(&mut seen)?;
            s.claim(
                bump,
                leaf.off,
                node::leaf_size(leaf.suffix_len, leaf.value_len),
            )?;
        }
        check_children(f, &i, &mut s.stack)?;
    }
    // A range walk takes a frame that counts no links for one whose
    // subtrees all hold keys (`header::links`).
    if links > 0 && header::links(f)? == 0 {
        return Err(Corrupt("frame has links but counts none"));
    }
    Ok(())
}

/// Checks an inner node's child arrays against its count and pushes its
/// children (non-zero child slots) onto `stack`.
fn check_children(f: &AtomicFrame, i: &Inner, stack: &mut Vec<u32>) -> FResult<()> {
    let body = i.body();
    match i.kind {
        N4 | N16 => {
            // `decode` bounds `count` by the kind's capacity.
            let (cap, at) = if i.kind == N4 {
                (4, body + 8)
            } else {
                (16, body + 16)
            };
            let mut keys = [0u8; 16];
            keys[..8].copy_from_slice(&f.u64(body)?.to_le_bytes());
            if cap == 16 {
                keys[8..].copy_from_slice(&f.u64(body + 8)?.to_le_bytes());
            }
            let mut slots = [0u32; 16];
            read_slots(f, at, &mut slots[..cap])?;
            let n = i.count.min(cap);
            if keys[..n].windows(2).any(|w| w[0] >= w[1]) {
                return Err(Corrupt("inner node keys out of order"));
            }
            if slots[..n].contains(&0) {
                return Err(Corrupt("inner node child count"));
            }
            stack.extend_from_slice(&slots[..n]);
        }
        N48 => {
            let mut slots = [0u32; 48];
            read_slots(f, body + 256, &mut slots)?;
            let mut indexed = 0usize;
            let mut dangling = false;
            for w in 0..32 {
                let word = f.u64(body + 8 * w)?;
                for idx in word.to_le_bytes() {
                    let idx = usize::from(idx);
                    if idx == 0 {
                        continue;
                    }
                    if idx > 48 {
                        return Err(Corrupt("node48 index"));
                    }
                    indexed += 1;
                    dangling |= slots[idx - 1] == 0;
                }
            }
            if indexed != i.count || dangling {
                return Err(Corrupt("inner node child count"));
            }
            push_nonzero(&slots, i.count, "node48 slots", stack)?;
        }
        _ => {
            let mut slots = [0u32; 256];
            read_slots(f, body, &mut slots)?;
            push_nonzero(&slots, i.count, "inner node child count", stack)?;
        }
    }
    Ok(())
}

/// Reads consecutive `u32` child slots at `at` (8-aligned), two per word.
fn read_slots(f: &AtomicFrame, at: usize, out: &mut [u32]) -> FResult<()> {
    for (k, pair) in out.chunks_mut(2).enumerate() {
        let w = f.u64(at + 8 * k)?;
        pair[0] = w as u32;
        if let Some(hi) = pair.get_mut(1) {
            *hi = (w >> 32) as u32;
        }
    }
    Ok(())
}

/// Pushes the non-zero slots; their number must be `count`.
fn push_nonzero(
    slots: &[u32],
    count: usize,
    what: &'static str,
    stack: &mut Vec<u32>,
) -> FResult<()> {
    let before = stack.len();
    stack.extend(slots.iter().copied().filter(|&c| c != 0));
    if stack.len() - before != count {
        return Err(Corrupt(what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::alloc;
    use crate::frame::copy::tests::{exercise, sample, Rng};
    use crate::frame::copy::{child_slots, for_each_node};
    use crate::frame::header::OFF_LINKS;
    use crate::frame::node::N256;

    /// The allocating check `validate` replaced, kept as its oracle: header, every node decodes
    /// and lies inside the allocated area, no two nodes overlap, no cycles,
    /// value pointers point at leaves, child counts match.
    fn validate_reference(f: &AtomicFrame, guid: &BlobGuid) -> FResult<()> {
        header::check(f, guid)?;
        let bump = header::bump(f)? as usize;
        let mut used = vec![0u64; FRAME_SIZE / 8 / 64];
        let mut claim = |off: usize, size: usize| -> FResult<()> {
            if off < HEADER_SIZE || off + size > bump {
                return Err(Corrupt("node outside the allocated area"));
            }
            for g in off / 8..(off + size).div_ceil(8) {
                let (w, b) = (g / 64, g % 64);
                if used[w] & (1 << b) != 0 {
                    return Err(Corrupt("nodes overlap"));
                }
                used[w] |= 1 << b;
            }
            Ok(())
        };
        let mut bad = None;
        let root = header::root(f)?;
        if header::is_fan(f)? && root != 0 {
            match node::decode(f, root)? {
                Node::Inner(i) if i.prefix_len == 0 && i.value == 0 => {}
                _ => return Err(Corrupt("fan frame root is not a fan node")),
            }
        }
        for_each_node(f, root, |n| {
            claim(node::node_off(n), node::needed_size(n))?;
            if let Node::Inner(i) = n {
                if i.value != 0 {
                    node::decode_leaf(f, i.value)?;
                }
                let kids = node::children(f, i)?;
                if kids.len() != i.count || kids.iter().any(|&(_, c)| c == 0) {
                    bad = Some(Corrupt("inner node child count"));
                }
                if i.kind == N48 {
                    let slots = child_slots(f, i)?;
                    if slots.len() != i.count {
                        bad = Some(Corrupt("node48 slots"));
                    }
                }
                if matches!(i.kind, N4 | N16) {
                    let keys: Vec<u8> = kids.iter().map(|&(b, _)| b).collect();
                    if keys.windows(2).any(|w| w[0] >= w[1]) {
                        bad = Some(Corrupt("inner node keys out of order"));
                    }
                }
                if i.kind == N256 && child_slots(f, i)?.len() != i.count {
                    bad = Some(Corrupt("node256 count"));
                }
            }
            Ok(())
        })?;
        bad.map_or(Ok(()), Err)
    }

    #[test]
    fn mutated_valid_frames_never_panic_the_decoder() {
        let base = sample();
        let mut img = vec![0u8; FRAME_SIZE];
        base.copy_to(&mut img);
        let used = header::bump(&base).unwrap() as usize;
        let mut r = Rng(0xDEAD_BEEF_CAFE_F00D);
        let mut rejected = 0;
        for _ in 0..2000 {
            let mut m = img.clone();
            for _ in 0..1 + r.next() % 8 {
                let at = (r.next() as usize) % used;
                m[at] = r.next() as u8;
            }
            let f = AtomicFrame::from_image(&m).unwrap();
            let verdict = validate(&f, &[3; 16]);
            assert_eq!(
                verdict.is_ok(),
                validate_reference(&f, &[3; 16]).is_ok(),
                "same verdict as the allocating check: {verdict:?}"
            );
            if verdict.is_err() {
                rejected += 1;
            }
            exercise(&f);
        }
        assert!(
            rejected > 100,
            "validation catches most structural damage ({rejected})"
        );
    }

    /// Writes `v` at `off` of a copy of `base` and checks both checks.
    fn poked(base: &AtomicFrame, at: usize, v: &[u8]) -> FResult<()> {
        let mut img = vec![0u8; FRAME_SIZE];
        base.copy_to(&mut img);
        img[at..at + v.len()].copy_from_slice(v);
        let f = AtomicFrame::from_image(&img).unwrap();
        let got = validate(&f, &[3; 16]);
        assert_eq!(got.is_ok(), validate_reference(&f, &[3; 16]).is_ok());
        got
    }

    /// The inner nodes of `f` of one kind.
    fn inners(f: &AtomicFrame, kind: u8) -> Vec<Inner> {
        let mut out = Vec::new();
        for_each_node(f, header::root(f).unwrap(), |n| {
            if let Node::Inner(i) = n {
                if i.kind == kind {
                    out.push(*i);
                }
            }
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn each_structural_fault_is_rejected() {
        let f = sample();
        validate(&f, &[3; 16]).unwrap();
        // N4/N16: swapped keys, a zeroed child, a count too high.
        for kind in [N4, N16] {
            let n = inners(&f, kind).into_iter().find(|i| i.count >= 2).unwrap();
            let body = n.body();
            let (k0, k1) = (f.u8(body).unwrap(), f.u8(body + 1).unwrap());
            assert!(poked(&f, body, &[k1, k0]).is_err(), "unsorted keys");
            assert!(poked(&f, body + 1, &[k0]).is_err(), "repeated key");
            let at = body + if kind == N4 { 8 } else { 16 };
            assert!(poked(&f, at, &[0; 4]).is_err(), "zero child");
            // (A count too low is not a fault: the slots past it are
            // unused bytes.)
            let c = (n.count as u16 + 1).to_le_bytes();
            assert!(poked(&f, n.off + 2, &c).is_err(), "count too high");
        }
        // A child pointing at its own parent: overlap (a cycle).
        let n = inners(&f, N4).into_iter().next().unwrap();
        let at = n.body() + 8;
        assert!(poked(&f, at, &(n.off as u32).to_le_bytes()).is_err());
        // A value pointer at an inner node.
        let v = inners(&f, N16).into_iter().next().unwrap().off as u32;
        assert!(poked(&f, n.off + 8, &v.to_le_bytes()).is_err());
        // The allocated area ending before the last node.
        let bump = header::bump(&f).unwrap() - 8;
        assert!(poked(&f, header::OFF_BUMP, &bump.to_le_bytes()).is_err());
    }

    #[test]
    fn node48_and_node256_faults_are_rejected() {
        let f = AtomicFrame::zeroed();
        header::init(&f, [3; 16], 0).unwrap();
        for i in 0..40u32 {
            let k = [b'a', i as u8, b'z'];
            let _ = crate::tree::insert::insert(&f, &k, 0, &[1]).unwrap();
        }
        for i in 0..200u32 {
            let k = [b'b', i as u8, b'z'];
            let _ = crate::tree::insert::insert(&f, &k, 0, &[1]).unwrap();
        }
        validate(&f, &[3; 16]).unwrap();
        let n48 = inners(&f, N48)[0];
        let body = n48.body();
        let b = (0..256).find(|&b| f.u8(body + b).unwrap() != 0).unwrap();
        let idx = f.u8(body + b).unwrap();
        assert!(poked(&f, body + b, &[49]).is_err(), "index past 48");
        assert!(poked(&f, body + b, &[0]).is_err(), "unindexed child");
        let free = (0..256).find(|&b| f.u8(body + b).unwrap() == 0).unwrap();
        assert!(poked(&f, body + free, &[idx]).is_err(), "index count");
        let slot = body + 256 + 4 * (usize::from(idx) - 1);
        assert!(poked(&f, slot, &[0; 4]).is_err(), "dangling index");
        let n256 = inners(&f, N256)[0];
        let c = (n256.count as u16 + 1).to_le_bytes();
        assert!(poked(&f, n256.off + 2, &c).is_err(), "node256 count");
        let empty = (0..256)
            .find(|&b| f.u32(n256.body() + 4 * b).unwrap() == 0)
            .unwrap();
        let c = f.u32(n256.body() + 4 * 98).unwrap();
        assert!(poked(&f, n256.body() + 4 * empty, &c.to_le_bytes()).is_err());
    }

    #[test]
    fn a_fan_link_shared_by_slots_is_checked_once() {
        let f = AtomicFrame::zeroed();
        header::init(&f, [3; 16], 0).unwrap();
        let size = node::inner_size(N256, 0);
        let root = alloc::alloc(&f, size).unwrap().unwrap();
        node::write_inner(&f, root, size, N256, &[], 0).unwrap();
        let link = alloc::alloc(&f, node::LINK_SIZE).unwrap().unwrap();
        node::write_link(&f, link, node::LINK_SIZE, &[9; 16]).unwrap();
        header::add(&f, OFF_LINKS, 1).unwrap();
        let mut n = match node::decode(&f, root as u32).unwrap() {
            Node::Inner(i) => i,
            _ => unreachable!(),
        };
        for b in 10..20 {
            node::add_child(&f, &mut n, b, link as u32).unwrap();
        }
        f.set_u32(header::OFF_ROOT, root as u32).unwrap();
        validate(&f, &[3; 16]).unwrap();
        validate_reference(&f, &[3; 16]).unwrap();
        // A range walk trusts a frame that counts no links to have none
        // (`header::links`).
        f.set_u32(OFF_LINKS, 0).unwrap();
        assert_eq!(
            validate(&f, &[3; 16]),
            Err(Corrupt("frame has links but counts none"))
        );
        f.set_u32(OFF_LINKS, 1).unwrap();
        // A leaf shared by two slots is an overlap, unlike a link.
        let leaf = alloc::alloc(&f, node::leaf_size(1, 1)).unwrap().unwrap();
        node::write_leaf(&f, leaf, node::leaf_size(1, 1), b"k", b"v").unwrap();
        node::add_child(&f, &mut n, 30, leaf as u32).unwrap();
        node::add_child(&f, &mut n, 31, leaf as u32).unwrap();
        assert_eq!(validate(&f, &[3; 16]), Err(Corrupt("nodes overlap")));
        assert!(validate_reference(&f, &[3; 16]).is_err());
    }
}
