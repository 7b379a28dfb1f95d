//! Insert or overwrite one key inside one frame (exclusive latch held).
//!
//! The edit is planned first (a read-only walk that names the case and the
//! exact bytes it will allocate), then the caller makes room if needed
//! (repack or spill) and the plan is carried out. Planning first means an
//! edit never runs out of room halfway.

use crate::frame::alloc::{self, alloc_reserved};
use crate::frame::node::{self, Inner, Leaf, Node, N4};
use crate::frame::{header, AtomicFrame, Corrupt, FResult};
use crate::store::FRAME_SIZE;

/// Least room beyond the edit itself that makes a repack worth its cost
/// (a copy of every node in the frame) when the edit adds a key and
/// could spill instead. A frame that fills during a load gets repacked right after
/// each spill (reclaiming the half that moved), then again for the gaps
/// node growth left since (a few KiB), then for the few hundred bytes
/// freed meanwhile, often enough for one more key: objstore n = 2e5, 322
/// repacks, two thirds of them for less than this, a quarter of the
/// load's instructions. Spilling a little earlier instead leaves the
/// frame count as it was (562 after the 1e6 objstore load either way).
const MIN_REPACK_GAIN: usize = FRAME_SIZE / 64;

/// How far an insert goes to make room before reporting
/// [`Outcome::NoRoom`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effort {
    /// For an edit that adds a key, repack only if that frees
    /// [`MIN_REPACK_GAIN`] beyond the edit; otherwise the caller spills.
    /// A replacement repacks whenever that makes room.
    Spill,
    /// Repack whenever that makes room (when a spill found nothing to
    /// move).
    Repack,
}

enum Plan {
    /// The walk met a link: the key lives in a child frame.
    Link,
    /// Empty slot (only the root can be): a new leaf for `key[from..]`.
    NewLeaf { slot: usize, from: usize },
    /// The key exists: replace the value of `leaf` (pointed to by `slot`).
    Replace { slot: usize, leaf: Leaf },
    /// A leaf for another key: split it under a new Node4.
    SplitLeaf {
        slot: usize,
        leaf: Leaf,
        at: usize,
        common: usize,
    },
    /// An inner node whose prefix diverges from the key at `common`.
    SplitPrefix {
        slot: usize,
        node: Inner,
        at: usize,
        common: usize,
    },
    /// The key ends at `node`, which has no value yet.
    SetValue { node: Inner },
    /// `node` lacks the child for `key[at]`: add a leaf (grow if full).
    AddChild { slot: usize, node: Inner, at: usize },
    /// An empty fan frame: a new fan node with one leaf under `key[at]`.
    NewFan { at: usize },
}

pub(crate) enum Outcome {
    Done(Option<Vec<u8>>),
    /// The key lives in a child frame (a spill moved it): start over.
    Link,
    /// The frame cannot hold the edit even after repacking.
    NoRoom,
    /// A fan frame whose fan node lacks the key's branch byte: the edit
    /// would add it, which is right only while the parent frame routes
    /// that byte here (a sideways spill may have relinked it to a sibling
    /// frame since the caller's descent). The caller checks the parent
    /// and retries with `routed`, or starts over.
    Unrouted,
}

fn plan(f: &AtomicFrame, key: &[u8], mut depth: usize) -> FResult<Plan> {
    let mut slot = header::OFF_ROOT;
    if header::is_fan(f)? {
        // The link stood for branch byte key[depth - 1]; continue at the
        // fan node's child for it (DESIGN: fan frames, `header::FLAG_FAN`).
        let at = depth
            .checked_sub(1)
            .ok_or(Corrupt("fan frame at depth 0"))?;
        let r = f.u32(slot)?;
        if r == 0 {
            return Ok(Plan::NewFan { at });
        }
        let Node::Inner(fan) = node::decode(f, r)? else {
            return Err(Corrupt("fan frame root is not a fan node"));
        };
        match node::find_child(f, &fan, key[at])? {
            Some((s, _)) => slot = s,
            None => {
                return Ok(Plan::AddChild {
                    slot,
                    node: fan,
                    at,
                })
            }
        }
    }
    loop {
        let r = f.u32(slot)?;
        if r == 0 {
            return Ok(Plan::NewLeaf { slot, from: depth });
        }
        let rest = key.get(depth..).ok_or(Corrupt("walk past key end"))?;
        match node::decode(f, r)? {
            Node::Link(_) => return Ok(Plan::Link),
            Node::Leaf(leaf) => {
                let common = f.common_prefix(leaf.suffix_at(), leaf.suffix_len, rest)?;
                if common == leaf.suffix_len && common == rest.len() {
                    return Ok(Plan::Replace { slot, leaf });
                }
                return Ok(Plan::SplitLeaf {
                    slot,
                    leaf,
                    at: depth,
                    common,
                });
            }
            Node::Inner(n) => {
                let common = f.common_prefix(n.prefix_at(), n.prefix_len, rest)?;
                if common < n.prefix_len {
                    return Ok(Plan::SplitPrefix {
                        slot,
                        node: n,
                        at: depth,
                        common,
                    });
                }
                depth += n.prefix_len;
                let Some(&b) = key.get(depth) else {
                    if n.value == 0 {
                        return Ok(Plan::SetValue { node: n });
                    }
                    let leaf = node::decode_leaf(f, n.value)?;
                    return Ok(Plan::Replace {
                        slot: n.value_slot(),
                        leaf,
                    });
                };
                match node::find_child(f, &n, b)? {
                    Some((s, _)) => {
                        slot = s;
                        depth += 1;
                    }
                    None => {
                        return Ok(Plan::AddChild {
                            slot,
                            node: n,
                            at: depth,
                        })
                    }
                }
            }
        }
    }
}

/// Bytes of a leaf for `key[from..]` (a value leaf when `from == len`).
fn tail_leaf(key: &[u8], from: usize, vlen: usize) -> usize {
    node::leaf_size(key.len().saturating_sub(from), vlen)
}

fn need(p: &Plan, key: &[u8], vlen: usize) -> usize {
    match p {
        Plan::Link => 0,
        Plan::NewLeaf { from, .. } => tail_leaf(key, *from, vlen),
        Plan::Replace { leaf, .. } => {
            let s = node::leaf_size(leaf.suffix_len, vlen);
            if s <= leaf.size {
                0
            } else {
                s
            }
        }
        Plan::SplitLeaf { at, common, .. } | Plan::SplitPrefix { at, common, .. } => {
            let branch = at + common;
            let new_leaf = if branch == key.len() {
                node::leaf_size(0, vlen)
            } else {
                tail_leaf(key, branch + 1, vlen)
            };
            node::inner_size(N4, *common) + new_leaf
        }
        Plan::SetValue { .. } => node::leaf_size(0, vlen),
        Plan::NewFan { at } => node::inner_size(N4, 0) + tail_leaf(key, at + 1, vlen),
        Plan::AddChild { node: n, at, .. } => {
            let grow = if n.count >= node::capacity(n.kind) {
                node::inner_size(node::kind_for(n.count + 1), n.prefix_len)
            } else {
                0
            };
            tail_leaf(key, at + 1, vlen) + grow
        }
    }
}

fn new_leaf(f: &AtomicFrame, suffix: &[u8], value: &[u8]) -> FResult<u32> {
    let size = node::leaf_size(suffix.len(), value.len());
    let at = alloc_reserved(f, size)?;
    node::write_leaf(f, at, size, suffix, value)?;
    Ok(at as u32)
}

/// The Node4 a split puts in place of a leaf or an inner node: `prefix`
/// (the bytes the old entry and the key share), no value, no children
/// yet. Returns its offset and the node.
fn new_node4(f: &AtomicFrame, prefix: &[u8]) -> FResult<(usize, Inner)> {
    let size = node::inner_size(N4, prefix.len());
    let n4 = alloc_reserved(f, size)?;
    node::write_inner(f, n4, size, N4, prefix, 0)?;
    let Node::Inner(n) = node::decode(f, n4 as u32)? else {
        return Err(Corrupt("new node4"));
    };
    Ok((n4, n))
}

/// A split's new leaf: the rest of `key` past its branch byte at `branch`
/// (the leaf hangs under that byte in `n`), or, when the key ends at
/// `branch`, a value leaf set as `n`'s value.
fn attach_key_leaf(
    f: &AtomicFrame,
    n: &mut Inner,
    key: &[u8],
    branch: usize,
    value: &[u8],
) -> FResult<()> {
    let new_byte = key.get(branch).copied();
    let from = if new_byte.is_some() {
        branch + 1
    } else {
        branch
    };
    let l = new_leaf(f, &key[from..], value)?;
    attach(f, n, new_byte, l)
}

fn read(f: &AtomicFrame, off: usize, len: usize) -> FResult<Vec<u8>> {
    let mut v = Vec::with_capacity(len);
    f.read_into(off, len, &mut v)?;
    Ok(v)
}

/// Allocates a copy of inner node `n` as `kind` with `prefix`, carrying
/// its value and children over.
pub(crate) fn rebuild_inner(f: &AtomicFrame, n: &Inner, kind: u8, prefix: &[u8]) -> FResult<u32> {
    let kids = node::children(f, n)?;
    let size = node::inner_size(kind, prefix.len());
    let at = alloc_reserved(f, size)?;
    node::write_inner(f, at, size, kind, prefix, n.value)?;
    let Node::Inner(mut fresh) = node::decode(f, at as u32)? else {
        return Err(Corrupt("rebuilt node"));
    };
    for (b, c) in kids {
        node::add_child(f, &mut fresh, b, c)?;
    }
    Ok(at as u32)
}

fn execute(f: &AtomicFrame, p: Plan, key: &[u8], value: &[u8]) -> FResult<Option<Vec<u8>>> {
    match p {
        Plan::Link => Err(Corrupt("execute on a link")),
        Plan::NewLeaf { slot, from } => {
            let l = new_leaf(f, &key[from..], value)?;
            f.set_u32(slot, l)?;
            Ok(None)
        }
        Plan::Replace { slot, leaf } => {
            let old = read(f, leaf.value_at(), leaf.value_len)?;
            if node::leaf_size(leaf.suffix_len, value.len()) <= leaf.size {
                f.set_u32(leaf.off + node::OFF_VLEN, value.len() as u32)?;
                f.write(leaf.value_at(), value)?;
            } else {
                let suffix = read(f, leaf.suffix_at(), leaf.suffix_len)?;
                let l = new_leaf(f, &suffix, value)?;
                f.set_u32(slot, l)?;
                alloc::free(f, leaf.off, leaf.size)?;
            }
            Ok(Some(old))
        }
        Plan::SplitLeaf {
            slot,
            leaf,
            at,
            common,
        } => {
            let suffix = read(f, leaf.suffix_at(), leaf.suffix_len)?;
            let old_value = read(f, leaf.value_at(), leaf.value_len)?;
            let (n4, mut n) = new_node4(f, &suffix[..common])?;
            // The old leaf is rewritten in place with its shorter suffix.
            let old_rest = &suffix[common..];
            let (old_suffix, old_byte) = match old_rest.split_first() {
                Some((&b, s)) => (s, Some(b)),
                None => (old_rest, None),
            };
            f.set_u32(leaf.off + node::OFF_VLEN, old_value.len() as u32)?;
            f.set_u16(leaf.off + node::OFF_SLEN, old_suffix.len() as u16)?;
            f.write(leaf.suffix_at(), old_suffix)?;
            f.write(leaf.suffix_at() + old_suffix.len(), &old_value)?;
            attach(f, &mut n, old_byte, leaf.off as u32)?;
            attach_key_leaf(f, &mut n, key, at + common, value)?;
            f.set_u32(slot, n4 as u32)?;
            Ok(None)
        }
        Plan::SplitPrefix {
            slot,
            node: old,
            at,
            common,
        } => {
            let prefix = read(f, old.prefix_at(), old.prefix_len)?;
            let (n4, mut n) = new_node4(f, &prefix[..common])?;
            // Shorten the old node's prefix in place: the body moves left.
            let keep = &prefix[common + 1..];
            let body_len =
                old.size.min(node::inner_size(old.kind, old.prefix_len)) - (old.body() - old.off);
            let body = read(f, old.body(), body_len)?;
            f.write(old.prefix_at(), keep)?;
            f.set_u16(old.off + node::OFF_PLEN, keep.len() as u16)?;
            f.write(old.off + node::BYTES_AT + node::pad8(keep.len()), &body)?;
            attach(f, &mut n, Some(prefix[common]), old.off as u32)?;
            attach_key_leaf(f, &mut n, key, at + common, value)?;
            f.set_u32(slot, n4 as u32)?;
            Ok(None)
        }
        Plan::SetValue { node: n } => {
            let l = new_leaf(f, &[], value)?;
            f.set_u32(n.value_slot(), l)?;
            Ok(None)
        }
        Plan::NewFan { at } => {
            let size = node::inner_size(N4, 0);
            let fan = alloc_reserved(f, size)?;
            node::write_inner(f, fan, size, N4, &[], 0)?;
            let Node::Inner(mut n) = node::decode(f, fan as u32)? else {
                return Err(Corrupt("new fan node"));
            };
            let l = new_leaf(f, &key[at + 1..], value)?;
            node::add_child(f, &mut n, key[at], l)?;
            f.set_u32(header::OFF_ROOT, fan as u32)?;
            Ok(None)
        }
        Plan::AddChild { slot, node: n, at } => {
            let l = new_leaf(f, &key[at + 1..], value)?;
            let mut target = n;
            if n.count >= node::capacity(n.kind) {
                let prefix = read(f, n.prefix_at(), n.prefix_len)?;
                let grown = rebuild_inner(f, &n, node::kind_for(n.count + 1), &prefix)?;
                let Node::Inner(g) = node::decode(f, grown)? else {
                    return Err(Corrupt("grown node"));
                };
                f.set_u32(slot, grown)?;
                alloc::free(f, n.off, n.size)?;
                target = g;
            }
            node::add_child(f, &mut target, key[at], l)?;
            Ok(None)
        }
    }
}

/// Hangs `child` under `n` at `byte`, or as its value when `byte` is None.
fn attach(f: &AtomicFrame, n: &mut Inner, byte: Option<u8>, child: u32) -> FResult<()> {
    match byte {
        Some(b) => node::add_child(f, n, b, child),
        None => {
            n.value = child;
            f.set_u32(n.value_slot(), child)
        }
    }
}

/// Whether `p` adds a branch byte to a fan frame's fan node (or creates
/// the fan node of an empty fan frame).
fn adds_fan_byte(f: &AtomicFrame, p: &Plan) -> FResult<bool> {
    Ok(match p {
        Plan::NewFan { .. } => true,
        Plan::AddChild { slot, .. } => *slot == header::OFF_ROOT && header::is_fan(f)?,
        _ => false,
    })
}

/// Inserts `key -> value` into frame `f`, whose root sits at key `depth`.
/// An edit that would add a branch byte to a fan frame's fan node returns
/// [`Outcome::Unrouted`]; see [`insert_routed`]. (Writers call
/// `insert_routed` with their [`Effort`]; this is the tests' shorthand.)
#[cfg(test)]
pub(crate) fn insert(f: &AtomicFrame, key: &[u8], depth: usize, value: &[u8]) -> FResult<Outcome> {
    insert_routed(f, key, depth, value, false, Effort::Spill)
}

/// [`insert`]; `routed`: the caller has checked that the parent frame
/// routes the key's branch byte to `f`, so a missing fan byte may be
/// added; `effort`: when to repack rather than report
/// [`Outcome::NoRoom`].
pub(crate) fn insert_routed(
    f: &AtomicFrame,
    key: &[u8],
    depth: usize,
    value: &[u8],
    routed: bool,
    effort: Effort,
) -> FResult<Outcome> {
    let mut p = plan(f, key, depth)?;
    if matches!(p, Plan::Link) {
        return Ok(Outcome::Link);
    }
    if !routed && adds_fan_byte(f, &p)? {
        return Ok(Outcome::Unrouted);
    }
    let bytes = need(&p, key, value.len());
    if bytes > alloc::tail_room(f)? {
        // A replacement frees the old leaf as it goes, so the frame's live
        // bytes hardly grow: it repacks as before the rule, where a spill
        // would lower the fill of a frame that updates keep full.
        let slack = match (effort, &p) {
            (Effort::Spill, Plan::Replace { .. }) | (Effort::Repack, _) => 0,
            (Effort::Spill, _) => MIN_REPACK_GAIN,
        };
        if bytes + slack > alloc::reclaimable(f)? {
            return Ok(Outcome::NoRoom);
        }
        crate::frame::copy::repack(f)?;
        p = plan(f, key, depth)?;
        if need(&p, key, value.len()) > alloc::tail_room(f)? {
            return Ok(Outcome::NoRoom);
        }
    }
    execute(f, p, key, value).map(Outcome::Done)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::HEADER_SIZE;

    /// Makes `f` (a fresh frame) hold one key, `k1` -> `v1`, with 16
    /// bytes of tail and a 4 KiB gap: room for a second small key only
    /// through a repack, which would free less than `MIN_REPACK_GAIN`.
    /// (The bytes between the leaf and the tail are allocated but
    /// unreachable, so a repack drops them too.)
    pub(crate) fn nearly_full(f: &AtomicFrame, guid: crate::store::BlobGuid) {
        header::init(f, guid, 0).unwrap();
        let gap = alloc::alloc(f, 4096).unwrap().unwrap();
        assert_eq!(gap, HEADER_SIZE);
        let size = node::leaf_size(2, 2);
        let leaf = alloc_reserved(f, size).unwrap();
        node::write_leaf(f, leaf, size, b"k1", b"v1").unwrap();
        f.set_u32(header::OFF_ROOT, leaf as u32).unwrap();
        let bump = header::bump(f).unwrap() as usize;
        alloc_reserved(f, FRAME_SIZE - 16 - bump).unwrap();
        alloc::free(f, gap, 4096).unwrap();
        assert_eq!(alloc::tail_room(f).unwrap(), 16);
        assert_eq!(alloc::reclaimable(f).unwrap(), 16 + 4096);
    }

    /// Inserts `keys` in order into a fresh frame (key `i` gets value
    /// `[i; 3]`), then checks each reads back with its value.
    fn insert_and_read_back(keys: &[&[u8]]) {
        let f = AtomicFrame::zeroed();
        header::init(&f, [5; 16], 0).unwrap();
        for (i, k) in keys.iter().enumerate() {
            let out = insert(&f, k, 0, &[i as u8; 3]).unwrap();
            assert!(matches!(out, Outcome::Done(None)), "{k:?}");
        }
        for (i, k) in keys.iter().enumerate() {
            let Outcome::Done(Some(old)) = insert(&f, k, 0, b"w").unwrap() else {
                panic!("{k:?} is not in the frame");
            };
            assert_eq!(old, [i as u8; 3], "{k:?}");
        }
    }

    /// Splits of a leaf and of an inner node's prefix, each with a key
    /// that goes on past the branch (a leaf under its byte) and one that
    /// ends there (the Node4's value), keep both sides. Deliberate bug
    /// tried: `attach_key_leaf` keeping the branch byte in the new leaf
    /// (`from = branch` always), which loses every key that goes on past
    /// the branch.
    #[test]
    fn splits_keep_both_sides() {
        // The root leaf "abcd" split by "abxy" at "ab", then that Node4's
        // prefix split by "aq" at "a": keys that go on past the branch.
        insert_and_read_back(&[b"abcd", b"abxy", b"aq"]);
        // Keys that end at the branch: the leaf "abcd" split by "ab", the
        // Node4 "xyz" (of "xyz1" and "xyz2") split by "xy".
        insert_and_read_back(&[b"abcd", b"ab"]);
        insert_and_read_back(&[b"xyz1", b"xyz2", b"xy"]);
    }

    /// A repack that would free less than `MIN_REPACK_GAIN` is left to the
    /// spill (`Effort::Spill` reports `NoRoom` and changes nothing), and
    /// `Effort::Repack` makes that room. Deliberate bug tried: no slack
    /// for `Effort::Spill` (`Effort::Spill => 0`), which repacks the frame
    /// for one key.
    #[test]
    fn small_repacks_are_left_to_the_spill() {
        let f = AtomicFrame::zeroed();
        nearly_full(&f, [3; 16]);
        let compacts = f.u32(header::OFF_COMPACTS).unwrap();
        let out = insert_routed(&f, b"k2", 0, b"v2", false, Effort::Spill).unwrap();
        assert!(matches!(out, Outcome::NoRoom));
        assert_eq!(f.u32(header::OFF_COMPACTS).unwrap(), compacts);
        assert_eq!(alloc::tail_room(&f).unwrap(), 16);
        let out = insert_routed(&f, b"k2", 0, b"v2", false, Effort::Repack).unwrap();
        assert!(matches!(out, Outcome::Done(None)));
        assert_eq!(f.u32(header::OFF_COMPACTS).unwrap(), compacts + 1);
        for (k, v) in [(&b"k1"[..], &b"v1"[..]), (b"k2", b"v2")] {
            let Outcome::Done(Some(old)) = insert(&f, k, 0, b"w").unwrap() else {
                panic!("{k:?} is not in the frame");
            };
            assert_eq!(old, v);
        }
    }

    /// A replacement that needs a new leaf in a full frame repacks for
    /// however little room that makes, under `Effort::Spill` too: it frees
    /// the old leaf, so a spill would only lower the fill of a frame that
    /// updates keep full. Deliberate bug tried: the `MIN_REPACK_GAIN` slack
    /// for replacements as well (the update reports `NoRoom`).
    #[test]
    fn replacements_repack_however_little_that_frees() {
        let f = AtomicFrame::zeroed();
        nearly_full(&f, [4; 16]);
        let compacts = f.u32(header::OFF_COMPACTS).unwrap();
        let bigger = [7u8; 64];
        let out = insert(&f, b"k1", 0, &bigger).unwrap();
        assert!(matches!(out, Outcome::Done(Some(ref old)) if old == b"v1"));
        assert_eq!(f.u32(header::OFF_COMPACTS).unwrap(), compacts + 1);
        let Outcome::Done(Some(old)) = insert(&f, b"k1", 0, b"w").unwrap() else {
            panic!("k1 is not in the frame");
        };
        assert_eq!(old, bigger);
    }
}
