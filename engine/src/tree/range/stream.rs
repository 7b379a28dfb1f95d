//! The walk's fast path through a subtree whose every key qualifies.
//!
//! Below a node whose path is past the lower bound and inside the prefix,
//! and holds no delimiter past the prefix, every key qualifies: the walk
//! only has to emit the subtree's entries in order. For a subtree of small sorted
//! nodes (`N4`/`N16`) and leaves in one frame, [`Walker::stream`] does
//! that with a stack of open nodes that hold no
//! copied child lists: each child is read from its node when its turn
//! comes (its byte from the keys read when the node was opened, its
//! pointer one read), a leaf goes into the batch
//! straight from the frame, and an inner child is opened in place.
//!
//! A child at or past the frame's key-order mark (added or moved since
//! the frame was last written in key order) lies a cache miss away from
//! its neighbours: the stream reads it all the same, but first starts
//! the next sibling's lines loading.
//!
//! With a delimiter (a listing), each entry still qualifies but may roll
//! up: a leaf's key is searched for the delimiter from its branch byte on
//! as it is copied (one holding it becomes its common prefix, which no
//! other leaf shares: the branch byte or a byte after it differs), and a
//! node whose path holds it (in its compressed prefix, or as its branch
//! byte) is not opened.
//!
//! Everything else is handed back to the general walk exactly where the
//! stream stands ([`Walker::hand_over`]): a link (the subtree goes on in
//! another frame), a wide node (`N48`/`N256`, whose chunked child reads
//! the general walk does), a node that rolls up (the general walk emits
//! its common prefix and skips it) and anything malformed (the general
//! visit reports it). The open nodes become general levels that resume
//! at the child the stream stopped at, so the entries and their order
//! are those of the general walk.
//!
//! The stream follows child pointers; it does not read the frame front
//! to back. A pre-order frame lays a subtree out contiguously, but a
//! freed node keeps its bytes (nothing clears it) and an edit under the
//! mark can leave a stale copy there, so only the pointers say which
//! bytes are live; and a child's branch byte is stored only in its
//! parent, so the parent's body is read either way. In the ordered
//! region the pointers lead forward through the frame in the order the
//! stream reads them.
//!
//! Like every read of the walk, the stream reads optimistically: whatever
//! it collects counts only once every frame of the batch validates
//! (`Core::range_batch`).

use super::{Abort, Ctx, Level, Step, Walker};
use std::sync::Arc;

use crate::frame::node::{self, Quick, SortedKids};
use crate::frame::Corrupt;

/// Counts of this thread's streamed leaves and hand-overs (and of entries
/// handed to a sink mid-walk), so that the tests can tell the stream ran
/// (and gave up) where they expect it to.
#[cfg(test)]
pub(super) mod seen {
    use std::cell::Cell;

    thread_local! {
        pub(crate) static LEAVES: Cell<usize> = const { Cell::new(0) };
        pub(crate) static HANDED: Cell<usize> = const { Cell::new(0) };
        pub(crate) static GIVEN: Cell<usize> = const { Cell::new(0) };
        pub(crate) static CUT: Cell<usize> = const { Cell::new(0) };
    }

    /// `(leaves, hand-overs)` since the last call.
    pub(crate) fn take() -> (usize, usize) {
        (LEAVES.with(|c| c.replace(0)), HANDED.with(|c| c.replace(0)))
    }

    /// `(entries handed to a sink during a walk, batches cut short at
    /// the entries handed over)` since the last call.
    pub(crate) fn take_given() -> (usize, usize) {
        (GIVEN.with(|c| c.replace(0)), CUT.with(|c| c.replace(0)))
    }
}

/// A sorted node the stream is going through.
#[derive(Debug)]
pub(super) struct Open {
    node: node::Inner,
    /// Its keys and child slots, read when it was opened.
    kids: SortedKids,
    /// Path length at which a child's branch byte goes.
    at: usize,
    /// The next child to read.
    next: usize,
    /// The last branch byte read (-1: none yet); bytes must increase.
    last: i32,
}

/// How [`Walker::open`] left a node.
enum Opened {
    /// Opened: its children are next.
    In,
    /// The batch filled up with the node's own key.
    Full,
    /// Its path holds the delimiter: the general walk rolls it up.
    Rolls,
}

/// Whether the stream opens a node of this kind itself.
#[inline]
pub(super) fn sorted(kind: u8) -> bool {
    matches!(kind, node::N4 | node::N16)
}

impl Walker<'_, '_, '_> {
    /// Emits the subtree of inner node `n` in `frame`, the child for
    /// byte `b` of a node whose path is `path[..at]`, every key below
    /// which qualifies (the caller checked that the path is past the
    /// lower bound and inside the prefix, and holds no delimiter past
    /// the prefix). Returns [`Step::Go`] when the subtree is done or
    /// handed back to the general walk (its levels then sit on top of
    /// the stack), [`Step::Full`] when the batch filled up.
    ///
    /// The loop holds the frame itself (a clone of its handle, so that
    /// opening a node can borrow the walker) and a leaf goes into the
    /// batch inline ([`super::Batch::push_under`]): per leaf, a key byte
    /// from a register, one pointer read, the leaf's two head words and
    /// the copy. A listing's leaves go through [`super::Batch::push_leaf`]
    /// instead, which looks for the delimiter.
    pub(super) fn stream(
        &mut self,
        frame: usize,
        n: node::Inner,
        at: usize,
        b: u8,
    ) -> std::result::Result<Step, Abort> {
        self.opens.clear();
        match self.open(frame, n, at, b)? {
            Opened::In => {}
            Opened::Full => return Ok(Step::Full),
            Opened::Rolls => {
                // The general visit of this node rolls it up.
                self.path.truncate(at);
                self.path.push(b);
                return self.inner(frame, n, at, Ctx::QUALIFIES);
            }
        }
        let blob = Arc::clone(self.frames.blob(frame));
        let f = &blob.frame;
        let ordered = f.ordered_to();
        let limit = self.q.limit;
        let delim = self.q.delimiter;
        loop {
            let Some(top) = self.opens.last_mut() else {
                return Ok(Step::Go);
            };
            let i = top.next;
            if i >= top.kids.count {
                self.opens.pop();
                continue;
            }
            let k = top.kids.key(i);
            if i32::from(k) <= top.last {
                return Err(self.frames.fail(frame, Corrupt("node keys out of order")));
            }
            top.last = i32::from(k);
            top.next = i + 1;
            let at = top.at;
            let c = top
                .kids
                .child(f, i)
                .map_err(|c| self.frames.fail(frame, c))?;
            if c >= ordered && i + 1 < top.kids.count {
                // Out of key order: start the next sibling's lines on
                // their way while this child is read.
                if let Ok(nc) = top.kids.child(f, i + 1) {
                    super::prefetch_node(f, nc);
                }
            }
            match node::leaf_or_inner_at(f, c) {
                Some(Quick::Leaf(l)) => {
                    self.frames.tick(&mut self.visits)?;
                    let head = self.path.get(..at).unwrap_or_default();
                    match delim {
                        None => self.out.push_under(head, k, f, l),
                        // The path holds no delimiter past the prefix:
                        // look for one from the branch byte on.
                        Some(_) => self.out.push_leaf(head, Some(k), at, f, l, delim),
                    }
                    .map_err(|c| self.frames.fail(frame, c))?;
                    #[cfg(test)]
                    seen::LEAVES.with(|n| n.set(n.get() + 1));
                    if self.out.len() >= limit || !self.give()? {
                        return Ok(Step::Full);
                    }
                }
                Some(Quick::Inner(m)) if sorted(m.kind) => match self.open(frame, m, at, k)? {
                    Opened::In => {}
                    Opened::Full => return Ok(Step::Full),
                    Opened::Rolls => return Ok(self.hand_over(frame, k)),
                },
                _ => return Ok(self.hand_over(frame, k)),
            }
        }
    }

    /// Enters inner node `n` (the child for byte `b` below `path[..at]`):
    /// its path, its own key if it holds a value, and an open node for
    /// its children. A node whose path holds the delimiter from `at` on
    /// rolls up: it is left unopened for the general walk.
    fn open(
        &mut self,
        frame: usize,
        n: node::Inner,
        at: usize,
        b: u8,
    ) -> std::result::Result<Opened, Abort> {
        self.tick()?;
        let f = self.frames.frame(frame);
        let Some(kids) = node::sorted_kids(f, &n).map_err(|c| self.frames.fail(frame, c))? else {
            return Err(self.frames.fail(frame, Corrupt("sorted node kind")));
        };
        self.path.truncate(at);
        self.path.push(b);
        if n.prefix_len > 0 {
            f.read_into(n.prefix_at(), n.prefix_len, &mut self.path)
                .map_err(|c| self.frames.fail(frame, c))?;
        }
        self.check_path(frame)?;
        if let Some(d) = self.q.delimiter {
            if self.path.get(at..).unwrap_or_default().contains(&d) {
                return Ok(Opened::Rolls);
            }
        }
        if n.value != 0 {
            let l = node::decode_leaf(f, n.value).map_err(|c| self.frames.fail(frame, c))?;
            self.out
                .push_key(&self.path, f, l.value_at(), l.value_len)
                .map_err(|c| self.frames.fail(frame, c))?;
            if self.out.len() >= self.q.limit {
                return Ok(Opened::Full);
            }
        }
        self.opens.push(Open {
            node: n,
            kids,
            at: self.path.len(),
            next: 0,
            last: -1,
        });
        Ok(Opened::In)
    }

    /// Hands the rest of the stream to the general walk: each open node
    /// becomes a level whose children are read again from where the
    /// stream stands, the top one from `k` (the child just read, which
    /// the general walk visits itself), each one below it from the byte
    /// after the child it went down into.
    fn hand_over(&mut self, frame: usize, k: u8) -> Step {
        #[cfg(test)]
        seen::HANDED.with(|n| n.set(n.get() + 1));
        let depth = self.opens.len();
        let ctx = Ctx::QUALIFIES;
        let first = self.kids.len();
        for (j, o) in self.opens.drain(..).enumerate() {
            let resume = if j + 1 == depth {
                usize::from(k)
            } else {
                // `last` is a byte here: the node went down into a child.
                usize::try_from(o.last + 1).unwrap_or(0)
            };
            self.stack.push(Level {
                frame,
                node: o.node,
                resume,
                hint: false,
                at: o.at,
                first,
                next: first,
                end: first,
                ctx,
            });
        }
        Step::Go
    }
}
