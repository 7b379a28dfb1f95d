//! Node layouts inside a frame, their bounds-checked decoding, and the
//! in-place edits the walker makes under an exclusive latch.
//!
//! A node pointer is a `u32` byte offset into the frame (8-aligned, inside
//! the data area); 0 means "none". Every node starts with:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 1 | kind ([`LEAF`], [`N4`], [`N16`], [`N48`], [`N256`], [`LINK`]) |
//! | 1 | 1 | flags (0) |
//! | 2 | 2 | child count (inner nodes) |
//! | 4 | 4 | allocated size in bytes (multiple of 8) |
//!
//! Inner nodes (`N4`..`N256`): 8 `value` (u32 pointer to a leaf holding
//! the value of the key that ends at this node, 0 if none), 12 `prefix_len`
//! (u16), 16 the compressed path bytes, padded to 8, then the body:
//! `N4` keys\[4\] + pad\[4\] + children\[4\] (u32); `N16` keys\[16\] +
//! children\[16\]; `N48` index\[256\] (slot + 1, 0 = none) + children\[48\];
//! `N256` children\[256\]. `N4`/`N16` keys are sorted.
//!
//! Leaves: 8 `value_len` (u32), 12 `suffix_len` (u16), 16 the key bytes
//! left after the parent's branch byte, then the value bytes.
//!
//! Links: 8 the child frame's GUID (16 bytes). The child frame's root node
//! continues the subtree at the same key position.

use super::mem::{AtomicFrame, Corrupt, FResult};
use super::HEADER_SIZE;
use crate::store::{BlobGuid, FRAME_SIZE};

pub(crate) const LEAF: u8 = 1;
pub(crate) const N4: u8 = 2;
pub(crate) const N16: u8 = 3;
pub(crate) const N48: u8 = 4;
pub(crate) const N256: u8 = 5;
pub(crate) const LINK: u8 = 6;

pub(crate) const OFF_COUNT: usize = 2;
pub(crate) const OFF_SIZE: usize = 4;
/// Inner: pointer to the value leaf. This is a node-pointer slot.
pub(crate) const OFF_VALUE: usize = 8;
pub(crate) const OFF_PLEN: usize = 12;
pub(crate) const OFF_VLEN: usize = 8;
pub(crate) const OFF_SLEN: usize = 12;
pub(crate) const BYTES_AT: usize = 16;
pub(crate) const OFF_GUID: usize = 8;
pub(crate) const LINK_SIZE: usize = 24;

/// Rounds up to a multiple of 8.
pub(crate) const fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

pub(crate) const fn capacity(kind: u8) -> usize {
    match kind {
        N4 => 4,
        N16 => 16,
        N48 => 48,
        _ => 256,
    }
}

const fn body_size(kind: u8) -> usize {
    match kind {
        N4 => 24,
        N16 => 80,
        N48 => 448,
        _ => 1024,
    }
}

/// Offset of the children array within the body.
const fn children_at(kind: u8) -> usize {
    match kind {
        N4 => 8,
        N16 => 16,
        N48 => 256,
        _ => 0,
    }
}

pub(crate) const fn inner_size(kind: u8, prefix_len: usize) -> usize {
    BYTES_AT + pad8(prefix_len) + body_size(kind)
}

pub(crate) const fn leaf_size(suffix_len: usize, value_len: usize) -> usize {
    pad8(BYTES_AT + suffix_len + value_len)
}

/// The smallest inner kind that holds `n` children.
pub(crate) const fn kind_for(n: usize) -> u8 {
    if n <= 4 {
        N4
    } else if n <= 16 {
        N16
    } else if n <= 48 {
        N48
    } else {
        N256
    }
}

/// Shrink thresholds, below the growth points (hysteresis).
pub(crate) const fn shrink_to(kind: u8, count: usize) -> Option<u8> {
    match kind {
        N16 if count <= 3 => Some(N4),
        N48 if count <= 12 => Some(N16),
        N256 if count <= 37 => Some(N48),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Leaf {
    pub(crate) off: usize,
    pub(crate) size: usize,
    pub(crate) suffix_len: usize,
    pub(crate) value_len: usize,
}

impl Leaf {
    pub(crate) fn suffix_at(&self) -> usize {
        self.off + BYTES_AT
    }
    pub(crate) fn value_at(&self) -> usize {
        self.off + BYTES_AT + self.suffix_len
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Inner {
    pub(crate) off: usize,
    pub(crate) size: usize,
    pub(crate) kind: u8,
    pub(crate) count: usize,
    pub(crate) prefix_len: usize,
    pub(crate) value: u32,
}

impl Inner {
    pub(crate) fn prefix_at(&self) -> usize {
        self.off + BYTES_AT
    }
    pub(crate) fn body(&self) -> usize {
        self.off + BYTES_AT + pad8(self.prefix_len)
    }
    pub(crate) fn value_slot(&self) -> usize {
        self.off + OFF_VALUE
    }
    fn child_slot_at(&self, i: usize) -> usize {
        self.body() + children_at(self.kind) + 4 * i
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    pub(crate) off: usize,
    pub(crate) size: usize,
    pub(crate) guid: BlobGuid,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Node {
    Leaf(Leaf),
    Inner(Inner),
    Link(Link),
}

/// Checks that a pointer can address a node at all.
pub(crate) fn check_ptr(r: u32) -> FResult<usize> {
    let off = r as usize;
    if off < HEADER_SIZE || off % 8 != 0 || off + 8 > FRAME_SIZE {
        return Err(Corrupt("node pointer"));
    }
    Ok(off)
}

/// Decodes the node at `r`, checking that its fields fit its allocation
/// and the frame.
pub(crate) fn decode(f: &AtomicFrame, r: u32) -> FResult<Node> {
    let off = check_ptr(r)?;
    let head = f.u64(off)?;
    let kind = head as u8;
    let count = ((head >> 16) & 0xFFFF) as usize;
    let size = head_size(off, head)?;
    match kind {
        LEAF => leaf_fields(f, off, size).map(Node::Leaf),
        N4 | N16 | N48 | N256 => inner_fields(f, off, kind, count, size).map(Node::Inner),
        LINK => {
            if size < LINK_SIZE {
                return Err(Corrupt("link node size"));
            }
            let mut guid = [0u8; 16];
            f.read_exact(off + OFF_GUID, &mut guid)?;
            Ok(Node::Link(Link { off, size, guid }))
        }
        _ => Err(Corrupt("node kind")),
    }
}

/// The leaf at `r`, when a well-formed leaf is there; `None` for any
/// other node and for anything [`decode`] would reject, so a caller that
/// falls back to [`decode`] reports the same corruption. The fast check
/// of a range walk's leaf runs: two word reads, no [`Node`] to build.
#[inline]
pub(crate) fn leaf_at(f: &AtomicFrame, r: u32) -> Option<Leaf> {
    let off = check_ptr(r).ok()?;
    let head = f.u64(off).ok()?;
    if head as u8 != LEAF {
        return None;
    }
    leaf_fields(f, off, head_size(off, head).ok()?).ok()
}

/// A leaf or an inner node, as [`leaf_or_inner_at`] finds it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Quick {
    Leaf(Leaf),
    Inner(Inner),
}

/// The leaf or inner node at `r`, when a well-formed one is there; `None`
/// for a link and for anything [`decode`] would reject, so a caller that
/// falls back to [`decode`] handles links and reports the same corruption.
/// The range walk's per-child check: one head read, no call, no [`Node`]
/// to build (the caller's hot loop keeps the fields in registers).
#[inline]
pub(crate) fn leaf_or_inner_at(f: &AtomicFrame, r: u32) -> Option<Quick> {
    let off = check_ptr(r).ok()?;
    let head = f.u64(off).ok()?;
    let size = head_size(off, head).ok()?;
    let kind = head as u8;
    match kind {
        LEAF => leaf_fields(f, off, size).ok().map(Quick::Leaf),
        N4 | N16 | N48 | N256 => {
            let count = ((head >> 16) & 0xFFFF) as usize;
            inner_fields(f, off, kind, count, size)
                .ok()
                .map(Quick::Inner)
        }
        _ => None,
    }
}

/// The inner node of `kind` at `off` whose head gives `count` and `size`:
/// its value pointer and prefix length, checked to fit the allocation.
#[inline]
fn inner_fields(
    f: &AtomicFrame,
    off: usize,
    kind: u8,
    count: usize,
    size: usize,
) -> FResult<Inner> {
    let w = f.u64(off + 8)?;
    let value = (w & 0xFFFF_FFFF) as u32;
    let prefix_len = ((w >> 32) & 0xFFFF) as usize;
    if count > capacity(kind) || inner_size(kind, prefix_len) > size {
        return Err(Corrupt("inner node larger than its allocation"));
    }
    Ok(Inner {
        off,
        size,
        kind,
        count,
        prefix_len,
        value,
    })
}

/// The allocated size in the node head `head` at `off`, checked against
/// the frame.
#[inline]
fn head_size(off: usize, head: u64) -> FResult<usize> {
    let size = (head >> 32) as usize;
    if size < 8 || size % 8 != 0 || off + size > FRAME_SIZE {
        return Err(Corrupt("node size"));
    }
    Ok(size)
}

/// The leaf at `off` whose head gives `size`: its lengths, checked to fit
/// the allocation.
#[inline]
fn leaf_fields(f: &AtomicFrame, off: usize, size: usize) -> FResult<Leaf> {
    let w = f.u64(off + 8)?;
    let value_len = (w & 0xFFFF_FFFF) as usize;
    let suffix_len = ((w >> 32) & 0xFFFF) as usize;
    if BYTES_AT + suffix_len + value_len > size {
        return Err(Corrupt("leaf larger than its allocation"));
    }
    Ok(Leaf {
        off,
        size,
        suffix_len,
        value_len,
    })
}

/// Decodes a leaf (value pointers must point at leaves).
pub(crate) fn decode_leaf(f: &AtomicFrame, r: u32) -> FResult<Leaf> {
    match decode(f, r)? {
        Node::Leaf(l) => Ok(l),
        _ => Err(Corrupt("value pointer is not a leaf")),
    }
}

/// The child for `byte`: `(slot address, pointer)`. Always inlined: a
/// point get calls it (through [`child_ptr`]) at every inner node. The
/// keys of a sorted node are read as whole aligned words, a Node4's
/// compared at once like a Node16's.
#[inline(always)]
pub(crate) fn find_child(f: &AtomicFrame, n: &Inner, byte: u8) -> FResult<Option<(usize, u32)>> {
    let body = n.body();
    let i = match n.kind {
        N4 => {
            let mut k = [0u64; 1];
            f.words_into(body, &mut k)?;
            search16(k[0], 0, n.count, byte)
        }
        N16 => {
            let mut k = [0u64; 2];
            f.words_into(body, &mut k)?;
            search16(k[0], k[1], n.count, byte)
        }
        N48 => match f.u8(body + usize::from(byte))? {
            0 => None,
            idx @ 1..=48 => Some(usize::from(idx) - 1),
            _ => return Err(Corrupt("node48 index")),
        },
        _ => {
            // Node256: the slot is the byte's; an empty one holds 0.
            let slot = n.child_slot_at(usize::from(byte));
            let c = f.u32(slot)?;
            return Ok((c != 0).then_some((slot, c)));
        }
    };
    match i {
        Some(i) => {
            let slot = n.child_slot_at(i);
            Ok(Some((slot, f.u32(slot)?)))
        }
        None => Ok(None),
    }
}

/// The child pointer for `byte`: [`find_child`] without the slot address
/// (the point-get walk's lookup).
#[inline(always)]
pub(crate) fn child_ptr(f: &AtomicFrame, n: &Inner, byte: u8) -> FResult<Option<u32>> {
    Ok(find_child(f, n, byte)?.map(|(_, c)| c))
}

/// Scalar search of up to 16 sorted key bytes held in two words: the
/// `search16` of targets without SSE2, and the check of the SSE2 one.
#[cfg(any(test, not(target_arch = "x86_64")))]
pub(crate) fn search_scalar(lo: u64, hi: u64, count: usize, byte: u8) -> Option<usize> {
    (0..count.min(16)).find(|&i| {
        let w = if i < 8 { lo } else { hi };
        (w >> ((i & 7) * 8)) as u8 == byte
    })
}

pub(crate) use super::simd::search16;

/// The first child whose byte is `>= from` (`from` up to 256):
/// `(byte, pointer)`.
pub(crate) fn next_child(f: &AtomicFrame, n: &Inner, from: usize) -> FResult<Option<(u8, u32)>> {
    let body = n.body();
    match n.kind {
        N4 | N16 => {
            for i in 0..n.count {
                let k = f.u8(body + i)?;
                if usize::from(k) >= from {
                    return Ok(Some((k, f.u32(n.child_slot_at(i))?)));
                }
            }
            Ok(None)
        }
        N48 => {
            for b in from..256 {
                let idx = f.u8(body + b)? as usize;
                if idx != 0 {
                    if idx > 48 {
                        return Err(Corrupt("node48 index"));
                    }
                    return Ok(Some((b as u8, f.u32(n.child_slot_at(idx - 1))?)));
                }
            }
            Ok(None)
        }
        _ => {
            for b in from..256 {
                let c = f.u32(n.child_slot_at(b))?;
                if c != 0 {
                    return Ok(Some((b as u8, c)));
                }
            }
            Ok(None)
        }
    }
}

/// Appends up to `max` children whose byte is `>= from` (`from` up to
/// 256) to `out` as `(byte, pointer)`, in byte order, reading each slot
/// once. Returns the byte to continue from (256: none left). The sorted
/// keys of `N4`/`N16` must be strictly increasing.
#[inline]
pub(crate) fn children_from(
    f: &AtomicFrame,
    n: &Inner,
    from: usize,
    max: usize,
    out: &mut Vec<(u8, u32)>,
) -> FResult<usize> {
    let body = n.body();
    let mut taken = 0usize;
    match n.kind {
        N4 | N16 => {
            // The whole body in one read: N4 is keys[4] + pad[4] +
            // children[4] (3 words), N16 keys[16] + children[16] (10).
            let mut w = [0u64; 10];
            let (nw, kw) = if n.kind == N16 { (10, 2) } else { (3, 1) };
            let w = &mut w[..nw];
            f.words_into(body, w)?;
            let (keys, kids) = w.split_at(kw);
            let mut last = None;
            for i in 0..n.count.min(capacity(n.kind)) {
                let k = (keys[i / 8] >> ((i % 8) * 8)) as u8;
                if last.is_some_and(|l| k <= l) {
                    return Err(Corrupt("node keys out of order"));
                }
                last = Some(k);
                if usize::from(k) >= from {
                    if taken == max {
                        return Ok(usize::from(k));
                    }
                    out.push((k, (kids[i / 2] >> (32 * (i & 1))) as u32));
                    taken += 1;
                }
            }
        }
        N48 => {
            // The index, eight bytes per read; bytes below `from` masked.
            let mut w = from / 8;
            while w < 32 {
                let mut word = f.u64(body + 8 * w)?;
                if w == from / 8 {
                    word &= u64::MAX.checked_shl(8 * (from % 8) as u32).unwrap_or(0);
                }
                while word != 0 {
                    let j = (word.trailing_zeros() / 8) as usize;
                    let b = 8 * w + j;
                    let idx = (word >> (8 * j)) as u8 as usize;
                    if idx > 48 {
                        return Err(Corrupt("node48 index"));
                    }
                    if taken == max {
                        return Ok(b);
                    }
                    out.push((b as u8, f.u32(n.child_slot_at(idx - 1))?));
                    taken += 1;
                    word &= !(0xFF << (8 * j));
                }
                w += 1;
            }
        }
        _ => {
            for b in from..256 {
                let c = f.u32(n.child_slot_at(b))?;
                if c != 0 {
                    if taken == max {
                        return Ok(b);
                    }
                    out.push((b as u8, c));
                    taken += 1;
                }
            }
        }
    }
    Ok(256)
}

/// A sorted node's (`N4`/`N16`) key bytes and where its child slots
/// start, read once for a walk through its children: key `i` is byte `i`
/// of `keys` (little-endian), child `i` the `u32` at `kids + 4 * i`
/// ([`SortedKids::child`]). The caller checks that the keys increase, as
/// [`children_from`] does. `None` for a node of another kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SortedKids {
    pub(crate) keys: u128,
    pub(crate) kids: usize,
    /// Children, at most the kind's capacity.
    pub(crate) count: usize,
}

impl SortedKids {
    /// Key byte `i` (0 past the sixteenth).
    #[inline]
    pub(crate) fn key(&self, i: usize) -> u8 {
        u32::try_from(8 * i)
            .ok()
            .and_then(|s| self.keys.checked_shr(s))
            .unwrap_or(0) as u8
    }

    /// Child pointer `i`: one aligned read.
    #[inline]
    pub(crate) fn child(&self, f: &AtomicFrame, i: usize) -> FResult<u32> {
        f.u32(self.kids + 4 * i)
    }
}

/// The keys and child slots of sorted node `n` ([`SortedKids`]): one
/// word read for an `N4`, two for an `N16`.
#[inline]
pub(crate) fn sorted_kids(f: &AtomicFrame, n: &Inner) -> FResult<Option<SortedKids>> {
    let body = n.body();
    let keys = match n.kind {
        // An N4's pad bytes follow its four keys; `count` keeps them out.
        N4 => u128::from(f.u64(body)?),
        N16 => u128::from(f.u64(body)?) | (u128::from(f.u64(body + 8)?) << 64),
        _ => return Ok(None),
    };
    Ok(Some(SortedKids {
        keys,
        kids: body + children_at(n.kind),
        count: n.count.min(capacity(n.kind)),
    }))
}

/// All children in byte order.
pub(crate) fn children(f: &AtomicFrame, n: &Inner) -> FResult<Vec<(u8, u32)>> {
    let mut out = Vec::with_capacity(n.count);
    let mut from = 0usize;
    while let Some((b, c)) = next_child(f, n, from)? {
        out.push((b, c));
        from = usize::from(b) + 1;
        if out.len() > 256 {
            return Err(Corrupt("too many children"));
        }
    }
    Ok(out)
}

// ---- construction (exclusive latch, or a private image) -------------------

/// Writes a leaf at `off` (allocated with `size` bytes).
pub(crate) fn write_leaf(
    f: &AtomicFrame,
    off: usize,
    size: usize,
    suffix: &[u8],
    value: &[u8],
) -> FResult<()> {
    f.set_u64(off, u64::from(LEAF) | ((size as u64) << 32))?;
    f.set_u64(off + 8, value.len() as u64 | ((suffix.len() as u64) << 32))?;
    f.write(off + BYTES_AT, suffix)?;
    f.write(off + BYTES_AT + suffix.len(), value)
}

/// Writes an empty inner node header (no children) at `off`.
pub(crate) fn write_inner(
    f: &AtomicFrame,
    off: usize,
    size: usize,
    kind: u8,
    prefix: &[u8],
    value: u32,
) -> FResult<()> {
    f.set_u64(off, u64::from(kind) | ((size as u64) << 32))?;
    f.set_u64(off + 8, u64::from(value) | ((prefix.len() as u64) << 32))?;
    f.write(off + BYTES_AT, prefix)?;
    let body = off + BYTES_AT + pad8(prefix.len());
    f.write(body, &vec![0u8; body_size(kind)])
}

/// Writes a link node at `off` (allocated with `size >= LINK_SIZE` bytes).
pub(crate) fn write_link(f: &AtomicFrame, off: usize, size: usize, guid: &BlobGuid) -> FResult<()> {
    f.set_u64(off, u64::from(LINK) | ((size as u64) << 32))?;
    f.write(off + OFF_GUID, guid)
}

fn set_count(f: &AtomicFrame, n: &mut Inner, count: usize) -> FResult<()> {
    n.count = count;
    f.set_u16(n.off + OFF_COUNT, count as u16)
}

/// Adds child `byte -> child`; the node must have room and no such child.
pub(crate) fn add_child(f: &AtomicFrame, n: &mut Inner, byte: u8, child: u32) -> FResult<()> {
    if n.count >= capacity(n.kind) {
        return Err(Corrupt("add_child on a full node"));
    }
    let body = n.body();
    match n.kind {
        N4 | N16 => {
            let mut pos = n.count;
            for i in 0..n.count {
                if f.u8(body + i)? > byte {
                    pos = i;
                    break;
                }
            }
            let mut i = n.count;
            while i > pos {
                f.set_u8(body + i, f.u8(body + i - 1)?)?;
                f.set_u32(n.child_slot_at(i), f.u32(n.child_slot_at(i - 1))?)?;
                i -= 1;
            }
            f.set_u8(body + pos, byte)?;
            f.set_u32(n.child_slot_at(pos), child)?;
        }
        N48 => {
            let mut slot = None;
            for s in 0..48 {
                if f.u32(n.child_slot_at(s))? == 0 {
                    slot = Some(s);
                    break;
                }
            }
            let s = slot.ok_or(Corrupt("node48 has no free slot"))?;
            f.set_u32(n.child_slot_at(s), child)?;
            f.set_u8(body + usize::from(byte), (s + 1) as u8)?;
        }
        _ => f.set_u32(n.child_slot_at(usize::from(byte)), child)?,
    }
    set_count(f, n, n.count + 1)
}

/// Removes the child for `byte` (which must exist).
pub(crate) fn remove_child(f: &AtomicFrame, n: &mut Inner, byte: u8) -> FResult<()> {
    let body = n.body();
    match n.kind {
        N4 | N16 => {
            let mut pos = None;
            for i in 0..n.count {
                if f.u8(body + i)? == byte {
                    pos = Some(i);
                    break;
                }
            }
            let pos = pos.ok_or(Corrupt("remove_child: no such child"))?;
            for i in pos..n.count - 1 {
                f.set_u8(body + i, f.u8(body + i + 1)?)?;
                f.set_u32(n.child_slot_at(i), f.u32(n.child_slot_at(i + 1))?)?;
            }
            f.set_u8(body + n.count - 1, 0)?;
            f.set_u32(n.child_slot_at(n.count - 1), 0)?;
        }
        N48 => {
            let idx = f.u8(body + usize::from(byte))? as usize;
            if idx == 0 || idx > 48 {
                return Err(Corrupt("remove_child: no such child"));
            }
            f.set_u32(n.child_slot_at(idx - 1), 0)?;
            f.set_u8(body + usize::from(byte), 0)?;
        }
        _ => f.set_u32(n.child_slot_at(usize::from(byte)), 0)?,
    }
    set_count(f, n, n.count.saturating_sub(1))
}

/// Exact bytes a node needs (its allocation may be larger).
pub(crate) fn needed_size(n: &Node) -> usize {
    match n {
        Node::Leaf(l) => leaf_size(l.suffix_len, l.value_len),
        Node::Inner(i) => inner_size(i.kind, i.prefix_len),
        Node::Link(_) => LINK_SIZE,
    }
}

pub(crate) fn node_off(n: &Node) -> usize {
    match n {
        Node::Leaf(l) => l.off,
        Node::Inner(i) => i.off,
        Node::Link(l) => l.off,
    }
}

pub(crate) fn node_size(n: &Node) -> usize {
    match n {
        Node::Leaf(l) => l.size,
        Node::Inner(i) => i.size,
        Node::Link(l) => l.size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_scalar_node16_search_agree() {
        let keys: Vec<u8> = vec![
            1, 3, 5, 7, 9, 11, 13, 15, 100, 120, 130, 140, 200, 220, 250, 255,
        ];
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&keys[..8]);
        hi.copy_from_slice(&keys[8..]);
        let (lo, hi) = (u64::from_le_bytes(lo), u64::from_le_bytes(hi));
        for count in 0..=16 {
            for b in 0..=255u8 {
                let expect = keys[..count].iter().position(|&k| k == b);
                assert_eq!(
                    search16(lo, hi, count, b),
                    expect,
                    "simd b={b} count={count}"
                );
                assert_eq!(search_scalar(lo, hi, count, b), expect, "scalar b={b}");
            }
        }
    }

    fn inner(f: &AtomicFrame, off: usize, kind: u8) -> Inner {
        write_inner(f, off, inner_size(kind, 3), kind, b"abc", 0).unwrap();
        match decode(f, off as u32).unwrap() {
            Node::Inner(i) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_inner_kind_adds_finds_iterates_and_removes() {
        for kind in [N4, N16, N48, N256] {
            let f = AtomicFrame::zeroed();
            let mut n = inner(&f, 1024, kind);
            let cap = capacity(kind);
            // Insert in a scrambled order.
            let bytes: Vec<u8> = (0..cap).map(|i| ((i * 37 + 11) % 256) as u8).collect();
            for (i, &b) in bytes.iter().enumerate() {
                add_child(&f, &mut n, b, 4096 + 8 * i as u32).unwrap();
            }
            assert!(add_child(&f, &mut n, 0, 8).is_err() || kind == N256);
            for (i, &b) in bytes.iter().enumerate() {
                let (_, c) = find_child(&f, &n, b).unwrap().unwrap();
                assert_eq!(c, 4096 + 8 * i as u32, "kind {kind} byte {b}");
            }
            let mut sorted = bytes.clone();
            sorted.sort_unstable();
            let got: Vec<u8> = children(&f, &n)
                .unwrap()
                .into_iter()
                .map(|(b, _)| b)
                .collect();
            assert_eq!(got, sorted);
            for &b in bytes.iter().step_by(2) {
                remove_child(&f, &mut n, b).unwrap();
                assert!(find_child(&f, &n, b).unwrap().is_none());
            }
            assert_eq!(n.count, cap - cap.div_ceil(2));
            let left: Vec<u8> = children(&f, &n)
                .unwrap()
                .into_iter()
                .map(|(b, _)| b)
                .collect();
            let mut expect: Vec<u8> = bytes.iter().skip(1).step_by(2).copied().collect();
            expect.sort_unstable();
            assert_eq!(left, expect);
        }
    }

    /// `children_from` in chunks, from every start byte, for every inner
    /// kind: the chunks put together are the children at or after the
    /// start byte, in byte order, each with its own pointer, and each
    /// chunk's resume byte is the next child's. Deliberate bugs tried:
    /// the N4/N16 body read a word short (`(9, 2)` words for N16), which
    /// drops the last child's pointer; the neighbour's half of a pointer
    /// word (`>> (32 * (!i & 1))`); a resume byte one past the next
    /// child.
    #[test]
    fn children_from_in_chunks_matches_the_children_of_every_kind() {
        for kind in [N4, N16, N48, N256] {
            let f = AtomicFrame::zeroed();
            let mut n = inner(&f, 1024, kind);
            let bytes: Vec<u8> = (0..capacity(kind))
                .map(|i| ((i * 37 + 11) % 256) as u8)
                .collect();
            for (i, &b) in bytes.iter().enumerate() {
                add_child(&f, &mut n, b, 4096 + 8 * i as u32).unwrap();
            }
            let all = children(&f, &n).unwrap();
            assert_eq!(all.len(), capacity(kind));
            for from in 0..=256usize {
                let want: Vec<(u8, u32)> = all
                    .iter()
                    .copied()
                    .filter(|&(b, _)| usize::from(b) >= from)
                    .collect();
                for max in [1, 2, 3, 16, 256] {
                    let mut got = Vec::new();
                    let mut at = from;
                    while at < 256 {
                        let before = got.len();
                        at = children_from(&f, &n, at, max, &mut got).unwrap();
                        assert!(got.len() - before <= max, "kind {kind} max {max}");
                        if let Some(&(b, _)) = want.get(got.len()) {
                            assert_eq!(at, usize::from(b), "resume, kind {kind} from {from}");
                        }
                    }
                    assert_eq!(got, want, "kind {kind} from {from} max {max}");
                }
            }
        }
    }

    /// `sorted_kids` of an `N4` / `N16` at every fill (with a prefix, so
    /// the body does not start right after the header, and junk in the
    /// N4's pad bytes): key `i` and
    /// child `i` are the node's children in byte order; wide nodes have
    /// none. Deliberate bugs tried: the N16's second key word left out
    /// (keys 8..16 read as 0), child slots from the body start
    /// (`children_at` left out: keys read as pointers).
    #[test]
    fn sorted_kids_are_the_children_of_a_sorted_node() {
        for kind in [N4, N16] {
            for fill in 1..=capacity(kind) {
                let f = AtomicFrame::zeroed();
                let mut n = inner(&f, 1024, kind);
                assert!(n.prefix_len > 0);
                for i in (0..fill).rev() {
                    add_child(&f, &mut n, (i * 13 + 2) as u8, 4096 + 8 * i as u32).unwrap();
                }
                if kind == N4 {
                    f.write(n.body() + 4, &[0xEE; 4]).unwrap();
                }
                let all = children(&f, &n).unwrap();
                let k = sorted_kids(&f, &n).unwrap().unwrap();
                assert_eq!(k.count, fill);
                let got: Vec<(u8, u32)> = (0..k.count)
                    .map(|i| (k.key(i), k.child(&f, i).unwrap()))
                    .collect();
                assert_eq!(got, all, "kind {kind} fill {fill}");
                assert_eq!(k.key(16), 0, "past the keys");
            }
        }
        for kind in [N48, N256] {
            let f = AtomicFrame::zeroed();
            let n = inner(&f, 1024, kind);
            assert!(sorted_kids(&f, &n).unwrap().is_none(), "kind {kind}");
        }
    }

    /// A sorted node whose keys are not strictly increasing is corrupt,
    /// for `children_from` as for every reader. Deliberate bug tried:
    /// dropping the order check from the N4/N16 branch.
    #[test]
    fn children_from_rejects_unsorted_node_keys() {
        for kind in [N4, N16] {
            let f = AtomicFrame::zeroed();
            let mut n = inner(&f, 1024, kind);
            for (i, b) in [10u8, 20, 30].into_iter().enumerate() {
                add_child(&f, &mut n, b, 4096 + 8 * i as u32).unwrap();
            }
            f.set_u8(n.body() + 1, 5).unwrap();
            let mut out = Vec::new();
            assert!(
                children_from(&f, &n, 0, 16, &mut out).is_err(),
                "kind {kind}"
            );
        }
    }

    /// `leaf_or_inner_at` finds what `decode` finds for a leaf and every
    /// inner kind, and `None` where `decode` finds a link or fails, so the
    /// range walk's fallback to the general visit handles those. Deliberate
    /// bugs tried: taking a link for an inner node (kind check `>= N4`),
    /// skipping the count-against-capacity check, and reading the prefix
    /// length from the wrong half of the second word.
    #[test]
    fn leaf_or_inner_at_agrees_with_decode() {
        let f = AtomicFrame::zeroed();
        write_leaf(&f, 512, leaf_size(3, 5), b"key", b"value").unwrap();
        match leaf_or_inner_at(&f, 512) {
            Some(Quick::Leaf(l)) => {
                assert_eq!((l.off, l.size, l.suffix_len, l.value_len), (512, 24, 3, 5));
            }
            other => panic!("{other:?}"),
        }
        let mut off = 1024;
        for kind in [N4, N16, N48, N256] {
            write_inner(&f, off, inner_size(kind, 11), kind, b"prefix-abcd", 512).unwrap();
            let mut n = match decode(&f, off as u32).unwrap() {
                Node::Inner(i) => i,
                other => panic!("{other:?}"),
            };
            add_child(&f, &mut n, 7, 512).unwrap();
            match leaf_or_inner_at(&f, off as u32) {
                Some(Quick::Inner(q)) => assert_eq!(
                    (q.off, q.size, q.kind, q.count, q.prefix_len, q.value),
                    (off, n.size, kind, 1, 11, 512),
                    "kind {kind}"
                ),
                other => panic!("kind {kind}: {other:?}"),
            }
            off += inner_size(kind, 11);
        }
        // A link in a large allocation, with a GUID that would read as an
        // inner node's empty prefix and no value: only its kind tells.
        write_link(&f, 8192, 2048, &[0u8; 16]).unwrap();
        assert!(matches!(decode(&f, 8192), Ok(Node::Link(_))));
        assert!(leaf_or_inner_at(&f, 8192).is_none(), "a link");
        // A Node4 head claiming five children.
        f.set_u64(
            9000,
            u64::from(N4) | (5 << 16) | ((inner_size(N4, 0) as u64) << 32),
        )
        .unwrap();
        assert!(decode(&f, 9000).is_err());
        assert!(leaf_or_inner_at(&f, 9000).is_none(), "count over capacity");
        // A leaf larger than its allocation, a bad kind, a bad pointer.
        f.set_u64(10000, u64::from(LEAF) | (16 << 32)).unwrap();
        f.set_u64(10008, 9).unwrap();
        assert!(decode(&f, 10000).is_err());
        assert!(leaf_or_inner_at(&f, 10000).is_none(), "oversized leaf");
        f.set_u64(11000, 9 | (32 << 32)).unwrap();
        assert!(leaf_or_inner_at(&f, 11000).is_none(), "kind 9");
        for r in [0, 4, 1028, FRAME_SIZE as u32] {
            assert!(leaf_or_inner_at(&f, r).is_none(), "pointer {r}");
        }
    }

    /// `find_child` (and `child_ptr`, the point get's lookup) finds the
    /// children added so far and nothing else, for every inner kind, every
    /// count and every byte, including bytes equal to a Node4's padding or
    /// a Node16's unused keys, and reports a Node48 index past 48 as
    /// corruption. Deliberate bugs tried: searching a Node4 over 8 keys
    /// (`search16(k[0], 0, 8, byte)`, finds the pad); a Node48 slot one
    /// off (`Some(usize::from(idx))`); accepting any Node48 index (`idx @
    /// 1..` without the bound).
    #[test]
    fn find_child_finds_exactly_the_children_added() {
        for kind in [N4, N16, N48, N256] {
            let f = AtomicFrame::zeroed();
            let mut n = inner(&f, 1024, kind);
            // Byte 0 is a child of none: unused key bytes and padding are 0.
            let bytes: Vec<u8> = (0..capacity(kind).min(255))
                .map(|i| ((i * 37 + 11) % 255 + 1) as u8)
                .collect();
            for (i, &b) in bytes.iter().enumerate() {
                for probe in 0..=255u8 {
                    let want = bytes[..i]
                        .iter()
                        .position(|&x| x == probe)
                        .map(|j| 4096 + 8 * j as u32);
                    let found = find_child(&f, &n, probe).unwrap();
                    assert_eq!(
                        found.map(|(_, c)| c),
                        want,
                        "kind {kind} count {i} byte {probe}"
                    );
                    if let Some((slot, c)) = found {
                        assert_eq!(f.u32(slot).unwrap(), c, "the slot holds the pointer");
                    }
                    assert_eq!(child_ptr(&f, &n, probe).unwrap(), want);
                }
                add_child(&f, &mut n, b, 4096 + 8 * i as u32).unwrap();
            }
            for (i, &b) in bytes.iter().enumerate() {
                assert_eq!(child_ptr(&f, &n, b).unwrap(), Some(4096 + 8 * i as u32));
            }
            if kind == N4 {
                // A pad byte that equals the byte asked for.
                f.set_u8(n.body() + 5, 200).unwrap();
                assert_eq!(child_ptr(&f, &n, 200).unwrap(), None, "Node4 pad");
            }
        }
        let f = AtomicFrame::zeroed();
        let n = inner(&f, 1024, N48);
        f.set_u8(n.body() + 9, 49).unwrap();
        assert!(find_child(&f, &n, 9).is_err());
        assert!(child_ptr(&f, &n, 9).is_err(), "Node48 index 49");
    }

    #[test]
    fn leaf_and_link_round_trip() {
        let f = AtomicFrame::zeroed();
        write_leaf(&f, 512, leaf_size(3, 5), b"key", b"value").unwrap();
        let l = decode_leaf(&f, 512).unwrap();
        assert_eq!((l.suffix_len, l.value_len), (3, 5));
        let mut v = Vec::new();
        f.read_into(l.value_at(), l.value_len, &mut v).unwrap();
        assert_eq!(v, b"value");
        write_link(&f, 2048, LINK_SIZE, &[7u8; 16]).unwrap();
        match decode(&f, 2048).unwrap() {
            Node::Link(l) => assert_eq!(l.guid, [7u8; 16]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_decodes_to_errors() {
        let f = AtomicFrame::zeroed();
        assert!(decode(&f, 0).is_err());
        assert!(decode(&f, 4).is_err());
        assert!(decode(&f, 1024).is_err()); // kind 0
        f.set_u64(1024, u64::from(N256) | (16u64 << 32)).unwrap();
        assert!(decode(&f, 1024).is_err()); // too small for a Node256
        f.set_u64(2048, u64::from(LEAF) | (u64::MAX << 32)).unwrap();
        assert!(decode(&f, 2048).is_err());
        assert!(decode(&f, (FRAME_SIZE - 8) as u32).is_err());
    }

    #[test]
    fn shrink_thresholds_sit_below_growth_points() {
        assert_eq!(shrink_to(N16, 3), Some(N4));
        assert_eq!(shrink_to(N16, 4), None);
        assert_eq!(shrink_to(N48, 12), Some(N16));
        assert_eq!(shrink_to(N256, 37), Some(N48));
        assert_eq!(shrink_to(N256, 38), None);
        assert_eq!(kind_for(5), N16);
        assert_eq!(kind_for(49), N256);
    }
}
