//! Physical erase inside one frame (exclusive latch held): the leaf goes,
//! and the nodes above it shrink, collapse or disappear at once, so no
//! tombstone is left for a later pass.
//!
//! The same walk removes a link node (mode [`Target::Link`]) when a child
//! frame has become empty and is unlinked.

use super::insert::rebuild_inner;
use crate::frame::alloc;
use crate::frame::node::{self, Inner, Node};
use crate::frame::{header, AtomicFrame, Corrupt, FResult};
use crate::store::BlobGuid;

#[derive(Clone, Copy)]
pub(crate) enum Target {
    /// Remove the key's leaf.
    Key,
    /// Remove the link to this frame, found at the end of the key's path.
    Link(BlobGuid),
}

pub(crate) enum Outcome {
    /// Removed; the old value (empty for a link).
    Done(Vec<u8>),
    Absent,
    /// The key continues in a child frame.
    Link,
    /// A fan frame without the key's branch byte (or an empty one): the
    /// key is not here, but a sideways spill may have moved that byte to
    /// a sibling frame since the caller's descent, so absence is only
    /// known after a fresh one.
    Unrouted,
}

/// How the removed node hangs from its parent.
#[derive(Clone, Copy)]
enum Edge {
    Root,
    Child(u8),
    Value,
}

struct Hop {
    slot: usize,
    node: Inner,
    /// How `node` hangs from the hop above (Root for the first).
    edge: Edge,
}

pub(crate) fn erase(
    f: &AtomicFrame,
    key: &[u8],
    mut depth: usize,
    target: Target,
) -> FResult<Outcome> {
    let mut path: Vec<Hop> = Vec::new();
    let mut slot = header::OFF_ROOT;
    let mut edge = Edge::Root;
    let fan = header::is_fan(f)?;
    if fan {
        // Start at the fan node's child for the link's branch byte.
        let r = f.u32(slot)?;
        if r == 0 {
            return Ok(Outcome::Unrouted);
        }
        let Node::Inner(n) = node::decode(f, r)? else {
            return Err(Corrupt("fan frame root is not a fan node"));
        };
        let b = *depth
            .checked_sub(1)
            .and_then(|i| key.get(i))
            .ok_or(Corrupt("fan frame at depth 0"))?;
        let Some((s, _)) = node::find_child(f, &n, b)? else {
            return Ok(Outcome::Unrouted);
        };
        path.push(Hop {
            slot,
            node: n,
            edge: Edge::Root,
        });
        slot = s;
        edge = Edge::Child(b);
    }
    loop {
        let r = f.u32(slot)?;
        if r == 0 {
            return Ok(Outcome::Absent);
        }
        let rest = key.get(depth..).ok_or(Corrupt("walk past key end"))?;
        match node::decode(f, r)? {
            Node::Link(l) => {
                return match target {
                    Target::Link(g) if g == l.guid && rest.is_empty() => {
                        // A fan link stands in several slots of its parent:
                        // clear the others first, then unhook this one.
                        if let (Some(hop), Edge::Child(b)) = (path.last_mut(), edge) {
                            let others: Vec<u8> = node::children(f, &hop.node)?
                                .into_iter()
                                .filter(|&(c, p)| p == r && c != b)
                                .map(|(c, _)| c)
                                .collect();
                            for c in others {
                                node::remove_child(f, &mut hop.node, c)?;
                            }
                        }
                        alloc::free(f, l.off, l.size)?;
                        header::add(f, header::OFF_LINKS, -1)?;
                        unhook(f, &mut path, slot, edge, fan)?;
                        Ok(Outcome::Done(Vec::new()))
                    }
                    Target::Link(_) => Ok(Outcome::Absent),
                    Target::Key => Ok(Outcome::Link),
                };
            }
            Node::Leaf(l) => {
                if matches!(target, Target::Link(_))
                    || l.suffix_len != rest.len()
                    || f.common_prefix(l.suffix_at(), l.suffix_len, rest)? != rest.len()
                {
                    return Ok(Outcome::Absent);
                }
                let mut old = Vec::with_capacity(l.value_len);
                f.read_into(l.value_at(), l.value_len, &mut old)?;
                alloc::free(f, l.off, l.size)?;
                unhook(f, &mut path, slot, edge, fan)?;
                return Ok(Outcome::Done(old));
            }
            Node::Inner(n) => {
                if n.prefix_len > rest.len()
                    || f.common_prefix(n.prefix_at(), n.prefix_len, rest)? != n.prefix_len
                {
                    return Ok(Outcome::Absent);
                }
                depth += n.prefix_len;
                path.push(Hop {
                    slot,
                    node: n,
                    edge,
                });
                match key.get(depth) {
                    None => {
                        if n.value == 0 {
                            return Ok(Outcome::Absent);
                        }
                        slot = n.value_slot();
                        edge = Edge::Value;
                    }
                    Some(&b) => match node::find_child(f, &n, b)? {
                        None => return Ok(Outcome::Absent),
                        Some((s, _)) => {
                            slot = s;
                            edge = Edge::Child(b);
                            depth += 1;
                        }
                    },
                }
            }
        }
    }
}

/// Detaches the (already freed) node at `slot` from its parent, then
/// tidies the parent: an empty node goes too (recursively), a node with
/// one child collapses into it, an underfull node shrinks.
///
/// In a fan frame the first hop is the fan node itself: it may shrink but
/// never collapse (its children must stay keyed by the branch byte).
fn unhook(f: &AtomicFrame, path: &mut Vec<Hop>, slot: usize, edge: Edge, fan: bool) -> FResult<()> {
    let mut edge = edge;
    let mut slot = slot;
    loop {
        match edge {
            Edge::Root => return f.set_u32(slot, 0),
            Edge::Value => f.set_u32(slot, 0)?,
            Edge::Child(b) => {
                let hop = path.last_mut().ok_or(Corrupt("erase path"))?;
                node::remove_child(f, &mut hop.node, b)?;
            }
        }
        let hop = path.pop().ok_or(Corrupt("erase path"))?;
        let Node::Inner(n) = node::decode(f, f.u32(hop.slot)?)? else {
            return Err(Corrupt("erase path node"));
        };
        if n.count == 0 && n.value == 0 {
            alloc::free(f, n.off, n.size)?;
            slot = hop.slot;
            edge = hop.edge;
            continue;
        }
        let collapse = !(fan && path.is_empty());
        return tidy(f, hop.slot, &n, collapse);
    }
}

/// Collapse or shrink `n` (at `slot`) when there is room to rebuild it;
/// otherwise leave it valid as it is.
fn tidy(f: &AtomicFrame, slot: usize, n: &Inner, collapse: bool) -> FResult<()> {
    let mut prefix = Vec::with_capacity(n.prefix_len);
    f.read_into(n.prefix_at(), n.prefix_len, &mut prefix)?;
    if collapse && n.count == 1 && n.value == 0 {
        let Some((b, c)) = node::next_child(f, n, 0)? else {
            return Err(Corrupt("child count"));
        };
        prefix.push(b);
        match node::decode(f, c)? {
            Node::Inner(child) => {
                f.read_into(child.prefix_at(), child.prefix_len, &mut prefix)?;
                if prefix.len() > u16::MAX as usize
                    || node::inner_size(child.kind, prefix.len()) > alloc::tail_room(f)?
                {
                    return Ok(());
                }
                let merged = rebuild_inner(f, &child, child.kind, &prefix)?;
                f.set_u32(slot, merged)?;
                alloc::free(f, child.off, child.size)?;
                alloc::free(f, n.off, n.size)?;
            }
            Node::Leaf(l) => {
                f.read_into(l.suffix_at(), l.suffix_len, &mut prefix)?;
                let size = node::leaf_size(prefix.len(), l.value_len);
                if prefix.len() > u16::MAX as usize || size > alloc::tail_room(f)? {
                    return Ok(());
                }
                let mut value = Vec::with_capacity(l.value_len);
                f.read_into(l.value_at(), l.value_len, &mut value)?;
                let at = alloc::alloc_reserved(f, size)?;
                node::write_leaf(f, at, size, &prefix, &value)?;
                f.set_u32(slot, at as u32)?;
                alloc::free(f, l.off, l.size)?;
                alloc::free(f, n.off, n.size)?;
            }
            // A link cannot absorb our prefix without latching the child
            // frame; the one-child node stays.
            Node::Link(_) => {}
        }
        return Ok(());
    }
    if collapse && n.count == 0 {
        // Only a value left: become a leaf holding it.
        let l = node::decode_leaf(f, n.value)?;
        let size = node::leaf_size(prefix.len(), l.value_len);
        if size > alloc::tail_room(f)? {
            return Ok(());
        }
        let mut value = Vec::with_capacity(l.value_len);
        f.read_into(l.value_at(), l.value_len, &mut value)?;
        let at = alloc::alloc_reserved(f, size)?;
        node::write_leaf(f, at, size, &prefix, &value)?;
        f.set_u32(slot, at as u32)?;
        alloc::free(f, l.off, l.size)?;
        alloc::free(f, n.off, n.size)?;
        return Ok(());
    }
    if let Some(kind) = node::shrink_to(n.kind, n.count) {
        if node::inner_size(kind, n.prefix_len) <= alloc::tail_room(f)? {
            let small = rebuild_inner(f, n, kind, &prefix)?;
            f.set_u32(slot, small)?;
            alloc::free(f, n.off, n.size)?;
        }
    }
    Ok(())
}
