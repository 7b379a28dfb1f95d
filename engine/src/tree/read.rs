//! Optimistic point lookups, and locating the frame that owns a key.

use std::sync::Arc;

use super::{corrupt_in, Core};
use crate::api::errors::Result;
use crate::buffer::CachedBlob;
use crate::frame::node::{self, Node};
use crate::frame::{header, AtomicFrame, Corrupt, FResult};
use crate::store::BlobGuid;

/// Where a walk inside one frame ended.
pub(crate) enum Step {
    Found(Vec<u8>),
    Absent,
    /// The key continues in a child frame; `depth` key bytes are consumed.
    Link(BlobGuid, usize),
}

/// Walks `key` (from `depth`) inside one frame. With `copy_value` false a
/// found key yields an empty `Found` (for locating only). Untrusted under
/// an optimistic latch: validate before acting on the result.
pub(crate) fn walk(f: &AtomicFrame, key: &[u8], mut depth: usize, copy_value: bool) -> FResult<Step> {
    let mut r = header::root(f)?;
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
        match node::decode(f, r)? {
            Node::Leaf(l) => {
                if l.suffix_len != rest.len() || f.common_prefix(l.suffix_at(), l.suffix_len, rest)? != rest.len() {
                    return Ok(Step::Absent);
                }
                let mut v = Vec::new();
                if copy_value {
                    f.read_into(l.value_at(), l.value_len, &mut v)?;
                }
                return Ok(Step::Found(v));
            }
            Node::Inner(n) => {
                if n.prefix_len > rest.len() || f.common_prefix(n.prefix_at(), n.prefix_len, rest)? != n.prefix_len {
                    return Ok(Step::Absent);
                }
                depth += n.prefix_len;
                let Some(&b) = key.get(depth) else {
                    if n.value == 0 {
                        return Ok(Step::Absent);
                    }
                    let l = node::decode_leaf(f, n.value)?;
                    let mut v = Vec::new();
                    if copy_value {
                        f.read_into(l.value_at(), l.value_len, &mut v)?;
                    }
                    return Ok(Step::Found(v));
                };
                match node::find_child(f, &n, b)? {
                    None => return Ok(Step::Absent),
                    Some((_, c)) => {
                        r = c;
                        depth += 1;
                    }
                }
            }
            Node::Link(l) => return Ok(Step::Link(l.guid, depth)),
        }
    }
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
    /// `key`, validating every frame it leaves.
    pub(crate) fn locate(&self, key: &[u8], copy_value: bool) -> Result<Located> {
        'restart: loop {
            let mut blob = Arc::clone(&self.root);
            let mut depth = 0usize;
            let mut parent: Option<(Arc<CachedBlob>, usize)> = None;
            loop {
                let v = blob.latch.optimistic();
                if blob.is_obsolete() {
                    continue 'restart;
                }
                let step = walk(&blob.frame, key, depth, copy_value);
                let frame_depth = header::depth(&blob.frame);
                if blob.latch.validate(v).is_err() {
                    self.bm.counters.restarts.add(1);
                    continue 'restart;
                }
                if frame_depth != Ok(depth as u32) {
                    return Err(corrupt_in(&blob, Corrupt("frame depth does not match its link")));
                }
                match step.map_err(|c| corrupt_in(&blob, c))? {
                    Step::Link(g, d) => {
                        let child = match self.bm.pin(&g) {
                            Ok(c) => c,
                            Err(e) => {
                                // A merge may have retired the child after
                                // we validated: only a stable link is an error.
                                if blob.latch.validate(v).is_err() || blob.is_obsolete() {
                                    self.bm.counters.restarts.add(1);
                                    continue 'restart;
                                }
                                return Err(e);
                            }
                        };
                        parent = Some((blob, depth));
                        blob = child;
                        depth = d;
                    }
                    step => {
                        return Ok(Located { blob, depth, parent, step });
                    }
                }
            }
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(match self.locate(key, true)?.step {
            Step::Found(v) => Some(v),
            _ => None,
        })
    }
}
