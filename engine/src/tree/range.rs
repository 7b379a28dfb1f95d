//! Ordered iteration in batches.
//!
//! A batch is one in-order walk from the root frame that seeks to the
//! lower bound, collects up to `limit` entries and stops. Each batch reads
//! frames optimistically and validates every frame it touched at the end;
//! if any changed, the batch is thrown away and walked again. After a few
//! failed attempts the batch takes shared latches instead (top-down, the
//! same order as every multi-frame latcher), so iteration cannot livelock
//! under write churn. Between batches the iterator keeps only its lower
//! bound (the last entry it returned), so a key that exists for the whole
//! iteration is returned exactly once.
//!
//! Delimiter rollup: as soon as the path below the prefix contains the
//! delimiter, the whole subtree rolls up into one common prefix; the walk
//! emits it when it finds the subtree's first qualifying key and skips the
//! rest of that subtree without visiting it.

use std::sync::Arc;

use super::{corrupt_in, Core};
use crate::api::errors::Result;
use crate::buffer::cached_blob::FrameRead;
use crate::buffer::CachedBlob;
use crate::frame::node::{self, Node};
use crate::frame::{header, AtomicFrame, Corrupt};

/// Where iteration resumes.
#[derive(Debug, Clone)]
pub(crate) enum Lower {
    /// Keys `>= b`.
    Inclusive(Vec<u8>),
    /// Keys `> b`.
    Exclusive(Vec<u8>),
    /// Keys `> b` that do not start with `b` (after a common prefix).
    ExcludePrefix(Vec<u8>),
}

impl Lower {
    fn bytes(&self) -> &[u8] {
        match self {
            Lower::Inclusive(b) | Lower::Exclusive(b) | Lower::ExcludePrefix(b) => b,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Key(Vec<u8>, Vec<u8>),
    Common(Vec<u8>),
}

pub(crate) struct Query<'a> {
    pub(crate) prefix: &'a [u8],
    pub(crate) delimiter: Option<u8>,
    pub(crate) lower: &'a Lower,
    pub(crate) limit: usize,
}

/// Position of the path relative to the lower bound.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lo {
    /// The path is a prefix of (or equal to) the bound.
    Tight,
    /// Every key below the path is past the bound.
    Free,
}

/// Position of the path relative to the prefix filter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pre {
    /// The path is a proper prefix of the filter prefix.
    Before,
    /// The path starts with the filter prefix.
    Within,
}

enum Verdict {
    Skip,
    Stop,
    Go(Lo, Pre),
}

#[derive(Clone, Copy)]
struct Ctx {
    lo: Lo,
    pre: Pre,
    /// Length of the common prefix this subtree rolls up into.
    rollup: Option<usize>,
}

enum Work {
    Node {
        frame: usize,
        ptr: u32,
        base: usize,
        byte: Option<u8>,
        ctx: Ctx,
    },
    Kids {
        frame: usize,
        ptr: u32,
        at: usize,
        next: usize,
        ctx: Ctx,
    },
}

impl Work {
    fn rollup(&self) -> bool {
        match self {
            Work::Node { ctx, .. } | Work::Kids { ctx, .. } => ctx.rollup.is_some(),
        }
    }
}

enum Held {
    Optimistic(Arc<CachedBlob>, u64),
    Shared(FrameRead),
}

impl Held {
    fn blob(&self) -> &Arc<CachedBlob> {
        match self {
            Held::Optimistic(b, _) => b,
            Held::Shared(r) => r.blob(),
        }
    }
    fn valid(&self) -> bool {
        match self {
            Held::Optimistic(b, v) => b.latch.validate(*v).is_ok() && !b.is_obsolete(),
            Held::Shared(_) => true,
        }
    }
}

/// Why a batch attempt ended early.
enum Abort {
    Restart,
    Fail(crate::api::errors::Error),
}

/// Attempts before a batch falls back to shared latches.
const OPTIMISTIC_ATTEMPTS: usize = 4;
/// Nodes one batch may visit before it checks itself for a torn loop.
const VISIT_BUDGET: usize = 1 << 22;

/// The frames a batch has entered, with how each is held.
struct Frames {
    held: Vec<Held>,
    shared: bool,
}

impl Frames {
    fn frame(&self, i: usize) -> &AtomicFrame {
        &self.held[i].blob().frame
    }

    fn enter(&mut self, blob: Arc<CachedBlob>) -> std::result::Result<usize, Abort> {
        // A fan frame is entered once per branch byte its link stands
        // for; hold it once (a second shared acquire behind a waiting
        // writer would wait for ourselves).
        if let Some(i) = self.held.iter().position(|h| Arc::ptr_eq(h.blob(), &blob)) {
            return Ok(i);
        }
        let held = if self.shared {
            Held::Shared(FrameRead::lock(blob))
        } else {
            let v = blob.latch.optimistic();
            Held::Optimistic(blob, v)
        };
        if held.blob().is_obsolete() {
            return Err(Abort::Restart);
        }
        self.held.push(held);
        Ok(self.held.len() - 1)
    }

    fn all_valid(&self) -> bool {
        self.held.iter().all(Held::valid)
    }

    /// A decode failure: a torn read if any frame changed, else corruption.
    fn fail(&self, frame: usize, c: Corrupt) -> Abort {
        if self.all_valid() {
            Abort::Fail(corrupt_in(self.held[frame].blob(), c))
        } else {
            Abort::Restart
        }
    }

    fn abort(&self, e: crate::api::errors::Error) -> Abort {
        if self.all_valid() {
            Abort::Fail(e)
        } else {
            Abort::Restart
        }
    }
}

struct Walker<'q> {
    q: &'q Query<'q>,
    frames: Frames,
    path: Vec<u8>,
    out: Vec<Item>,
}

impl Walker<'_> {
    /// Classifies the path after bytes were appended from `from` on.
    fn advance(&self, ctx: &Ctx, from: usize) -> (Verdict, Option<usize>) {
        let path = &self.path;
        let p = self.q.prefix;
        let mut pre = ctx.pre;
        if pre == Pre::Before {
            let end = path.len().min(p.len());
            for i in from..end {
                if path[i] != p[i] {
                    return (
                        if path[i] < p[i] {
                            Verdict::Skip
                        } else {
                            Verdict::Stop
                        },
                        None,
                    );
                }
            }
            if path.len() >= p.len() {
                pre = Pre::Within;
            }
        }
        let mut lo = ctx.lo;
        if lo == Lo::Tight {
            let b = self.q.lower.bytes();
            let end = path.len().min(b.len());
            let mut decided = false;
            for i in from..end {
                if path[i] != b[i] {
                    if path[i] < b[i] {
                        return (Verdict::Skip, None);
                    }
                    lo = Lo::Free;
                    decided = true;
                    break;
                }
            }
            if !decided && path.len() > b.len() {
                if matches!(self.q.lower, Lower::ExcludePrefix(_)) {
                    return (Verdict::Skip, None);
                }
                lo = Lo::Free;
            }
        }
        let mut rollup = ctx.rollup;
        if rollup.is_none() && pre == Pre::Within {
            if let Some(d) = self.q.delimiter {
                let start = from.max(p.len());
                if let Some(i) = path
                    .get(start..)
                    .and_then(|s| s.iter().position(|&x| x == d))
                {
                    rollup = Some(start + i + 1);
                }
            }
        }
        (Verdict::Go(lo, pre), rollup)
    }

    /// Does the key equal to the current path qualify?
    fn own_key_qualifies(&self, lo: Lo, pre: Pre) -> bool {
        pre == Pre::Within
            && match lo {
                Lo::Free => true,
                Lo::Tight => {
                    matches!(self.q.lower, Lower::Inclusive(_))
                        && self.path.len() == self.q.lower.bytes().len()
                }
            }
    }

    /// Emits the key at the current path (or its rollup). Returns true
    /// when the rolled-up subtree must be skipped.
    fn emit(&mut self, rollup: Option<usize>, value: Vec<u8>) -> bool {
        match rollup {
            Some(n) => {
                self.out.push(Item::Common(self.path[..n].to_vec()));
                true
            }
            None => {
                self.out.push(Item::Key(self.path.clone(), value));
                false
            }
        }
    }

    /// Walks one batch. `Ok(true)`: the tree has no entries past the batch.
    fn run(&mut self, core: &Core) -> std::result::Result<bool, Abort> {
        let root = self.frames.enter(Arc::clone(&core.root))?;
        let r = header::root(self.frames.frame(root)).map_err(|c| self.frames.fail(root, c))?;
        let lo = Lo::Tight;
        let pre = if self.q.prefix.is_empty() {
            Pre::Within
        } else {
            Pre::Before
        };
        let ctx0 = Ctx {
            lo,
            pre,
            rollup: None,
        };
        let mut stack = Vec::new();
        if r != 0 {
            stack.push(Work::Node {
                frame: root,
                ptr: r,
                base: 0,
                byte: None,
                ctx: ctx0,
            });
        }
        let mut visits = 0usize;
        while let Some(w) = stack.pop() {
            visits += 1;
            if visits > VISIT_BUDGET {
                return Err(self.frames.abort(crate::api::errors::Error::node_corrupt(
                    "range walk does not end",
                )));
            }
            match w {
                Work::Kids {
                    frame,
                    ptr,
                    at,
                    next,
                    ctx,
                } => {
                    let f = self.frames.frame(frame);
                    let n = match node::decode(f, ptr) {
                        Ok(Node::Inner(n)) => n,
                        Ok(_) => {
                            return Err(self
                                .frames
                                .fail(frame, Corrupt("children of a non-inner node")))
                        }
                        Err(c) => return Err(self.frames.fail(frame, c)),
                    };
                    match node::next_child(f, &n, next) {
                        Err(c) => return Err(self.frames.fail(frame, c)),
                        Ok(None) => {}
                        Ok(Some((b, c))) => {
                            stack.push(Work::Kids {
                                frame,
                                ptr,
                                at,
                                next: usize::from(b) + 1,
                                ctx,
                            });
                            stack.push(Work::Node {
                                frame,
                                ptr: c,
                                base: at,
                                byte: Some(b),
                                ctx,
                            });
                        }
                    }
                }
                Work::Node {
                    frame,
                    ptr,
                    base,
                    byte,
                    ctx,
                } => {
                    self.path.truncate(base);
                    if let Some(b) = byte {
                        self.path.push(b);
                    }
                    let f = self.frames.frame(frame);
                    let n = node::decode(f, ptr).map_err(|c| self.frames.fail(frame, c))?;
                    match n {
                        Node::Link(l) => {
                            let child = match core.bm.pin(&l.guid) {
                                Ok(c) => c,
                                Err(e) => {
                                    return Err(self.frames.abort(e));
                                }
                            };
                            let ci = self.frames.enter(child)?;
                            {
                                let cf = self.frames.frame(ci);
                                let ok = crate::tree::read::check_link_target(
                                    self.frames.held[ci].blob(),
                                    header::depth(cf),
                                    header::is_fan(cf),
                                    self.path.len(),
                                    false,
                                );
                                if let Err(e) = ok {
                                    return Err(self.frames.abort(e));
                                }
                            }
                            // The child is a fan frame: look the branch
                            // byte up again in its fan node. The subtree
                            // found there sits at this same position (the
                            // byte is classified by `advance` when visited).
                            let cf = self.frames.frame(ci);
                            let found =
                                crate::tree::read::fan_entry(cf, &self.path, self.path.len())
                                    .map_err(|c| self.frames.fail(ci, c))?;
                            if byte.is_none() {
                                return Err(self
                                    .frames
                                    .fail(frame, Corrupt("link outside a child slot")));
                            }
                            if let Some(cr) = found.filter(|&r| r != 0) {
                                stack.push(Work::Node {
                                    frame: ci,
                                    ptr: cr,
                                    base,
                                    byte,
                                    ctx,
                                });
                            }
                        }
                        Node::Leaf(l) => {
                            let from = base;
                            f.read_into(l.suffix_at(), l.suffix_len, &mut self.path)
                                .map_err(|c| self.frames.fail(frame, c))?;
                            let (v, rollup) = self.advance(&ctx, from);
                            match v {
                                Verdict::Skip => {}
                                Verdict::Stop => return Ok(true),
                                Verdict::Go(lo, pre) => {
                                    if self.own_key_qualifies(lo, pre) {
                                        let mut value = Vec::new();
                                        if rollup.is_none() {
                                            let f = self.frames.frame(frame);
                                            f.read_into(l.value_at(), l.value_len, &mut value)
                                                .map_err(|c| self.frames.fail(frame, c))?;
                                        }
                                        if self.emit(rollup, value) {
                                            while stack.last().is_some_and(Work::rollup) {
                                                stack.pop();
                                            }
                                        }
                                        if self.out.len() >= self.q.limit {
                                            return Ok(false);
                                        }
                                    }
                                }
                            }
                        }
                        Node::Inner(n) => {
                            let from = base;
                            f.read_into(n.prefix_at(), n.prefix_len, &mut self.path)
                                .map_err(|c| self.frames.fail(frame, c))?;
                            let (v, rollup) = self.advance(&ctx, from);
                            let (lo, pre) = match v {
                                Verdict::Skip => continue,
                                Verdict::Stop => return Ok(true),
                                Verdict::Go(lo, pre) => (lo, pre),
                            };
                            if n.value != 0 && self.own_key_qualifies(lo, pre) {
                                let mut value = Vec::new();
                                if rollup.is_none() {
                                    let f = self.frames.frame(frame);
                                    let l = node::decode_leaf(f, n.value)
                                        .map_err(|c| self.frames.fail(frame, c))?;
                                    f.read_into(l.value_at(), l.value_len, &mut value)
                                        .map_err(|c| self.frames.fail(frame, c))?;
                                }
                                if self.emit(rollup, value) {
                                    while stack.last().is_some_and(Work::rollup) {
                                        stack.pop();
                                    }
                                    if self.out.len() >= self.q.limit {
                                        return Ok(false);
                                    }
                                    continue;
                                }
                                if self.out.len() >= self.q.limit {
                                    return Ok(false);
                                }
                            }
                            // Where the children start.
                            let len = self.path.len();
                            let mut next = 0usize;
                            if pre == Pre::Before {
                                next = usize::from(self.q.prefix[len]);
                            }
                            if lo == Lo::Tight {
                                let b = self.q.lower.bytes();
                                match b.get(len) {
                                    Some(&x) => next = next.max(usize::from(x)),
                                    None => {
                                        if matches!(self.q.lower, Lower::ExcludePrefix(_)) {
                                            continue;
                                        }
                                    }
                                }
                            }
                            let ctx = Ctx { lo, pre, rollup };
                            stack.push(Work::Kids {
                                frame,
                                ptr,
                                at: len,
                                next,
                                ctx,
                            });
                        }
                    }
                }
            }
        }
        Ok(true)
    }
}

impl Core {
    /// Collects the next batch of entries. Returns the entries and whether
    /// the tree holds nothing past them.
    pub(crate) fn range_batch(&self, q: &Query<'_>) -> Result<(Vec<Item>, bool)> {
        let mut attempt = 0usize;
        loop {
            let shared = attempt >= OPTIMISTIC_ATTEMPTS;
            let mut w = Walker {
                q,
                frames: Frames {
                    held: Vec::new(),
                    shared,
                },
                path: Vec::new(),
                out: Vec::new(),
            };
            let res = w.run(self);
            let valid = w.frames.all_valid();
            match res {
                Ok(done) if valid => return Ok((w.out, done)),
                Err(Abort::Fail(e)) => return Err(e),
                _ => {
                    self.bm.counters.restarts.add(1);
                    attempt += 1;
                }
            }
        }
    }
}
