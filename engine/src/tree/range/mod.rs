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

mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use super::{corrupt_in, Core, MAX_KEY};
use crate::api::errors::Result;
use crate::buffer::cached_blob::FrameRead;
use crate::buffer::CachedBlob;
use crate::frame::node::{self, Node, Quick};
use crate::frame::{header, AtomicFrame, Corrupt, FResult};

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

/// One collected entry, borrowed from a [`Batch`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum ItemRef<'a> {
    Key(&'a [u8], &'a [u8]),
    Common(&'a [u8]),
}

/// Where one entry's bytes sit in [`Batch::bytes`].
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: usize,
    key_len: usize,
    /// `None`: a common prefix (key bytes only).
    value_len: Option<usize>,
}

impl Slot {
    /// The entry in `bytes` (a batch's buffer): the key and value lie
    /// back to back, cut from one slice. A slot past the buffer (which
    /// the batch never makes) reads as an empty key.
    #[inline]
    fn item<'a>(&self, bytes: &'a [u8]) -> ItemRef<'a> {
        let len = self.key_len + self.value_len.unwrap_or(0);
        let entry = bytes.get(self.start..self.start + len).unwrap_or_default();
        let (key, value) = entry.split_at(self.key_len.min(entry.len()));
        match self.value_len {
            None => ItemRef::Common(key),
            Some(_) => ItemRef::Key(key, value),
        }
    }
}

/// The entries of one batch. Keys and values lie back to back in one
/// buffer, so collecting an entry allocates nothing once the buffers have
/// grown, and a caller that reuses the batch reuses them.
///
/// The byte buffer is zero-filled once when it grows and then written in
/// place: `used` says how much of it the batch holds, and clearing the
/// batch only resets that. An entry is copied in whole words, a little
/// past its end, into room that is already there: no fill and no length
/// update per entry.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// `bytes[..used]` are the entries' bytes; the rest is room.
    bytes: Vec<u8>,
    used: usize,
    slots: Vec<Slot>,
    /// The walk's buffers, kept between walks.
    scratch: Scratch,
}

/// The buffers of a walk (see [`Walker`]).
#[derive(Debug, Default)]
struct Scratch {
    path: Vec<u8>,
    kids: Vec<(u8, u32)>,
    stack: Vec<Level>,
    opens: Vec<stream::Open>,
    /// `Frames::held`, empty between walks.
    held: Vec<Held>,
}

impl Batch {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<ItemRef<'_>> {
        self.slots.get(i).map(|s| s.item(&self.bytes))
    }

    /// The entries in order from the `i`-th on: what a visitor hands its
    /// closure, one slot after the next with no index to check against
    /// the slot list.
    #[inline]
    pub(crate) fn items_from(&self, i: usize) -> impl Iterator<Item = ItemRef<'_>> + '_ {
        self.slots
            .get(i..)
            .unwrap_or_default()
            .iter()
            .map(|s| s.item(&self.bytes))
    }

    /// Keeps the first `n` entries.
    fn truncate(&mut self, n: usize) {
        self.slots.truncate(n);
        self.used = self
            .slots
            .last()
            .map_or(0, |s| s.start + s.key_len + s.value_len.unwrap_or(0));
    }

    pub(crate) fn last(&self) -> Option<ItemRef<'_>> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    pub(crate) fn clear(&mut self) {
        self.used = 0;
        self.slots.clear();
    }

    /// Bytes the batch's buffers hold on to.
    pub(crate) fn footprint(&self) -> usize {
        self.bytes.capacity() + self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// Clears the batch and makes room for `n` entries of about
    /// `bytes_each` bytes, so a batch that collects them does not grow
    /// its buffers piecemeal (the room counts from empty: a reused
    /// batch's old entries do not add to it).
    pub(crate) fn reset(&mut self, n: usize, bytes_each: usize) {
        self.clear();
        self.slots.reserve(n);
        self.room(n.saturating_mul(bytes_each));
    }

    /// Makes `bytes` at least `used + n` long, growing it (zero-filled)
    /// to at least twice its length if it must grow at all. Returns the
    /// room from `used` on.
    #[inline]
    fn room(&mut self, n: usize) -> &mut [u8] {
        let need = self.used.saturating_add(n);
        if need > self.bytes.len() {
            self.grow(need);
        }
        self.bytes.get_mut(self.used..).unwrap_or_default()
    }

    #[cold]
    fn grow(&mut self, need: usize) {
        self.bytes.resize(need.max(2 * self.bytes.len()), 0);
    }

    fn push_common(&mut self, prefix: &[u8]) {
        let start = self.used;
        if let Some(d) = self.room(prefix.len()).get_mut(..prefix.len()) {
            d.copy_from_slice(prefix);
        }
        self.used += prefix.len();
        self.slots.push(Slot {
            start,
            key_len: prefix.len(),
            value_len: None,
        });
    }

    /// Appends the key `head` + the suffix of leaf `l` in `f`, and its
    /// value, with one copy from the frame (the suffix and the value lie
    /// back to back). With `delim`, a key that holds it at or after
    /// `from` becomes the common prefix up to it instead.
    fn push_leaf(
        &mut self,
        head: &[u8],
        byte: Option<u8>,
        from: usize,
        f: &AtomicFrame,
        l: node::Leaf,
        delim: Option<u8>,
    ) -> FResult<()> {
        let start = self.used;
        let key_len = self.copy_leaf(head, byte, f, l)?;
        if let Some(d) = delim {
            let key = &self.bytes[start..start + key_len];
            if let Some(i) = key.get(from..).and_then(|k| k.iter().position(|&x| x == d)) {
                let n = from + i + 1;
                self.used = start + n;
                self.slots.push(Slot {
                    start,
                    key_len: n,
                    value_len: None,
                });
                return Ok(());
            }
        }
        self.commit_leaf(start, key_len, l);
        Ok(())
    }

    /// Appends the key `head` + `byte` + the suffix of leaf `l` in `f`,
    /// and its value: [`Batch::push_leaf`] without a delimiter, for the
    /// stream's loop to inline.
    #[inline(always)]
    fn push_under(&mut self, head: &[u8], byte: u8, f: &AtomicFrame, l: node::Leaf) -> FResult<()> {
        let start = self.used;
        let key_len = self.copy_leaf(head, Some(byte), f, l)?;
        self.commit_leaf(start, key_len, l);
        Ok(())
    }

    /// Copies `head`, the branch byte and leaf `l`'s bytes (its key
    /// suffix and value, rounded up to whole words; the bytes past them
    /// are left as room) to the fill mark, without moving the mark.
    /// Returns the key's length.
    #[inline(always)]
    fn copy_leaf(
        &mut self,
        head: &[u8],
        byte: Option<u8>,
        f: &AtomicFrame,
        l: node::Leaf,
    ) -> FResult<usize> {
        let at = head.len() + usize::from(byte.is_some());
        let words = (l.suffix_len + l.value_len).div_ceil(8) * 8;
        let dst = self.room(at + words);
        if let Some(d) = dst.get_mut(..head.len()) {
            d.copy_from_slice(head);
        }
        if let (Some(b), Some(d)) = (byte, dst.get_mut(head.len())) {
            *d = b;
        }
        f.copy_words(
            l.suffix_at(),
            dst.get_mut(at..at + words).unwrap_or_default(),
        )?;
        Ok(at + l.suffix_len)
    }

    /// Records the entry [`Batch::copy_leaf`] copied at `start`: key and
    /// value, and the fill mark moved to its true end.
    #[inline(always)]
    fn commit_leaf(&mut self, start: usize, key_len: usize, l: node::Leaf) {
        self.used = start + key_len + l.value_len;
        self.slots.push(Slot {
            start,
            key_len,
            value_len: Some(l.value_len),
        });
    }

    /// Appends `key` and the `len` value bytes at `at` in `f`.
    fn push_key(&mut self, key: &[u8], f: &AtomicFrame, at: usize, len: usize) -> FResult<()> {
        let start = self.used;
        let dst = self.room(key.len() + len);
        let (k, v) = dst.split_at_mut(key.len().min(dst.len()));
        k.copy_from_slice(key);
        f.read_exact(at, v.get_mut(..len).unwrap_or_default())?;
        self.used = start + key.len() + len;
        self.slots.push(Slot {
            start,
            key_len: key.len(),
            value_len: Some(len),
        });
        Ok(())
    }
}

pub(crate) struct Query<'a> {
    pub(crate) prefix: &'a [u8],
    pub(crate) delimiter: Option<u8>,
    pub(crate) lower: &'a Lower,
    pub(crate) limit: usize,
}

/// Position of the path relative to the lower bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lo {
    /// The path is a prefix of (or equal to) the bound.
    Tight,
    /// Every key below the path is past the bound.
    Free,
}

/// Position of the path relative to the prefix filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy)]
struct Ctx {
    lo: Lo,
    pre: Pre,
    /// Length of the common prefix this subtree rolls up into.
    rollup: Option<usize>,
}

impl Ctx {
    /// A subtree past the lower bound and inside the prefix, not rolled
    /// up: every key below qualifies (in a listing, possibly rolling up
    /// further down).
    const QUALIFIES: Ctx = Ctx {
        lo: Lo::Free,
        pre: Pre::Within,
        rollup: None,
    };

    /// Whether the walk reads this node's children one at a time: in a
    /// rolled-up subtree only its first key is wanted. (Nodes above the
    /// prefix keep no level: `Walker::seek`.)
    fn one_child(&self) -> bool {
        self.rollup.is_some()
    }
}

/// An inner node whose children the walk is going through.
#[derive(Debug)]
struct Level {
    frame: usize,
    node: node::Inner,
    /// The byte to read more children from once `kids[first..end]` are
    /// done (256: none left).
    resume: usize,
    /// Whether the walk prefetches children of this chunk ahead of
    /// visiting them (see [`Walker::read_kids`]).
    hint: bool,
    /// Path length at which a child's branch byte goes.
    at: usize,
    /// This node's children are `kids[first..end]`; `next` is the next one
    /// to visit.
    first: usize,
    next: usize,
    end: usize,
    ctx: Ctx,
}

/// Where [`Walker::seek`] left the walk.
enum Seek {
    /// Go on down to the child at this pointer, whose branch byte is on
    /// the path after `at` bytes, in this context.
    Down(u32, usize, Ctx),
    /// The visit ended here.
    Here(Step),
}

/// How a visit left the walk.
enum Step {
    /// Carry on with the next child.
    Go,
    /// Nothing past this point qualifies: the walk is complete.
    Done,
    /// The batch holds `limit` entries.
    Full,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Held::Optimistic(..) => "Optimistic",
            Held::Shared(_) => "Shared",
        })
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

    fn blob(&self, i: usize) -> &Arc<CachedBlob> {
        self.held[i].blob()
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

    /// Counts one more node visited (`visits`) against [`VISIT_BUDGET`].
    /// On `Frames` rather than the walker, so a caller still reading a
    /// frame it borrowed from here can count.
    #[inline]
    fn tick(&self, visits: &mut usize) -> std::result::Result<(), Abort> {
        *visits += 1;
        if *visits > VISIT_BUDGET {
            return Err(self.abort(crate::api::errors::Error::node_corrupt(
                "range walk does not end",
            )));
        }
        Ok(())
    }

    fn abort(&self, e: crate::api::errors::Error) -> Abort {
        if self.all_valid() {
            Abort::Fail(e)
        } else {
            Abort::Restart
        }
    }
}

/// Children a walk asks the CPU to fetch ahead of visiting them: leaves
/// lie in allocation order inside a frame, so consecutive keys are cache
/// misses apart, and overlapping a few of them hides most of the latency.
const PREFETCH_AHEAD: usize = 4;
/// Children read from a node at a time: a seek through a wide node reads
/// the few it visits, not all 256 slots.
const KIDS_CHUNK: usize = 16;

/// Prefetches the first three lines of the node at `ptr`: a leaf's header,
/// key suffix and a typical value, or an inner node's header and a small
/// body.
fn prefetch_node(f: &AtomicFrame, ptr: u32) {
    let off = ptr as usize;
    f.prefetch(off);
    f.prefetch(off + 64);
    f.prefetch(off + 128);
}

/// A visitor the walk hands entries to as it goes (the borrowing
/// `for_each`), instead of all of them after the batch's walk: a
/// streamed leaf is handed over as soon as every frame the walk has read
/// still validates, so the visitor's work on one entry overlaps the
/// walk's on the next (the CPU runs the two independent streams of
/// instructions side by side), as a cursor-based store's does. Entries
/// handed over stay in the batch; the caller hands over the rest
/// (`batch[given..]`) once the batch is complete. One sink serves one
/// batch: entries are handed over only while none were torn (a torn read
/// ends the batch there), so the count never has to go back.
///
/// Only an optimistic walk hands entries over: one under shared latches
/// must not run the visitor, which may write the tree.
pub(crate) struct Sink<'f> {
    f: &'f mut dyn FnMut(ItemRef<'_>) -> std::ops::ControlFlow<()>,
    /// Entries of the batch handed over.
    given: usize,
    /// The visitor asked to stop.
    stopped: bool,
}

impl<'f> Sink<'f> {
    pub(crate) fn new(f: &'f mut dyn FnMut(ItemRef<'_>) -> std::ops::ControlFlow<()>) -> Self {
        Self {
            f,
            given: 0,
            stopped: false,
        }
    }

    /// Entries of the last batch handed over already.
    pub(crate) fn given(&self) -> usize {
        self.given
    }

    /// Whether the visitor asked to stop.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }
}

struct Walker<'q, 'o, 's> {
    q: &'q Query<'q>,
    frames: Frames,
    /// The key bytes from the root down to the node being visited.
    path: Vec<u8>,
    /// The child lists of the nodes on `stack`, back to back.
    kids: Vec<(u8, u32)>,
    stack: Vec<Level>,
    /// The open nodes of [`Walker::stream`], empty outside it.
    opens: Vec<stream::Open>,
    out: &'o mut Batch,
    visits: usize,
    /// Frames loaded ahead of the walk (`load_siblings`), pinned for the
    /// batch.
    prefetched: Vec<Arc<CachedBlob>>,
    /// Where entries go as they are validated ([`Sink`]).
    sink: Option<&'o mut Sink<'s>>,
}

impl Walker<'_, '_, '_> {
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

    /// Whether a rolled-up node in `frame` (every key below it qualifies:
    /// `lo` is [`Lo::Free`]) can be emitted as its common prefix without
    /// looking for a key below it. Erase removes an inner node the moment
    /// it has no child and no value left, so inside one frame every node
    /// has a key below it. Only a link may lead to nothing: a fan frame
    /// keeps no subtree for a byte whose keys were all deleted while its
    /// parent's slot still names the link, and unlinking an emptied frame
    /// is best effort. A frame that counts no links (validation holds that
    /// count to the truth) has none of those.
    fn rollup_now(&self, frame: usize, lo: Lo) -> bool {
        lo == Lo::Free && matches!(header::links(self.frames.frame(frame)), Ok(0))
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

    /// Emits the key at the current path, with the value of leaf `value`
    /// in `frame`, or its rollup; a rollup drops the rest of the rolled-up
    /// subtree from the stack (its levels are the top ones: a rollup is
    /// inherited by every level below the node that started it).
    fn emit(
        &mut self,
        frame: usize,
        rollup: Option<usize>,
        value: Option<node::Leaf>,
    ) -> std::result::Result<Step, Abort> {
        match (rollup, value) {
            (Some(n), _) => {
                self.out.push_common(&self.path[..n]);
                while let Some(l) = self.stack.last() {
                    if l.ctx.rollup.is_none() {
                        break;
                    }
                    self.kids.truncate(l.first);
                    self.stack.pop();
                }
            }
            (None, Some(l)) => {
                let f = self.frames.frame(frame);
                self.out
                    .push_key(&self.path, f, l.value_at(), l.value_len)
                    .map_err(|c| self.frames.fail(frame, c))?;
            }
            (None, None) => return Ok(Step::Go),
        }
        Ok(if self.out.len() >= self.q.limit {
            Step::Full
        } else {
            Step::Go
        })
    }

    /// Emits the leaf `l` of `frame` below the current path when its key
    /// surely qualifies (the path is past the lower bound and within the
    /// prefix): the key's tail and the value lie back to back in the leaf
    /// and go into the batch in one copy, not through the path. With a
    /// delimiter the key is then searched for it from `from` on, the
    /// parent's path length (the path holds none before that past the
    /// prefix, or `rollup` would be set).
    fn emit_leaf(
        &mut self,
        frame: usize,
        l: node::Leaf,
        from: usize,
        rollup: Option<usize>,
    ) -> std::result::Result<Step, Abort> {
        if rollup.is_some() {
            return self.emit(frame, rollup, None);
        }
        let f = self.frames.frame(frame);
        self.out
            .push_leaf(&self.path, None, from, f, l, self.q.delimiter)
            .map_err(|c| self.frames.fail(frame, c))?;
        Ok(if self.out.len() >= self.q.limit {
            Step::Full
        } else {
            Step::Go
        })
    }

    fn tick(&mut self) -> std::result::Result<(), Abort> {
        self.frames.tick(&mut self.visits)
    }

    /// Hands the entries collected since the last call to the sink, if
    /// there is one and the walk is optimistic: first every frame read so
    /// far must validate (else the walk restarts, and `range_batch` ends
    /// the batch at the entries already handed over). `Ok(false)`: the
    /// visitor asked to stop, and so does the walk.
    #[inline]
    fn give(&mut self) -> std::result::Result<bool, Abort> {
        let Some(sink) = self.sink.as_deref_mut() else {
            return Ok(true);
        };
        if self.frames.shared {
            return Ok(true);
        }
        if !self.frames.all_valid() {
            return Err(Abort::Restart);
        }
        for item in self.out.items_from(sink.given) {
            #[cfg(test)]
            stream::seen::GIVEN.with(|n| n.set(n.get() + 1));
            if (sink.f)(item).is_break() {
                sink.stopped = true;
                break;
            }
        }
        sink.given = self.out.len();
        Ok(!sink.stopped)
    }

    /// Visits the node at `ptr` in `frame`, reached with the path cut to
    /// `base` plus the branch `byte`: follows links, emits the node's own
    /// key if it qualifies, and pushes an inner node's children.
    fn visit(
        &mut self,
        core: &Core,
        mut frame: usize,
        mut ptr: u32,
        mut base: usize,
        byte: Option<u8>,
        mut ctx: Ctx,
    ) -> std::result::Result<Step, Abort> {
        self.path.truncate(base);
        if let Some(b) = byte {
            self.path.push(b);
        }
        // Whether `ptr` was read from a child slot (a link may stand
        // there, nowhere else).
        let mut slot = byte.is_some();
        loop {
            self.tick()?;
            let f = self.frames.frame(frame);
            match node::decode(f, ptr).map_err(|c| self.frames.fail(frame, c))? {
                Node::Link(l) => {
                    if !slot {
                        return Err(self
                            .frames
                            .fail(frame, Corrupt("link outside a child slot")));
                    }
                    let child = match core.bm.pin_if_cached(&l.guid) {
                        Some(c) => c,
                        None => {
                            self.load_siblings(core, frame, l.guid);
                            core.bm.pin(&l.guid).map_err(|e| self.frames.abort(e))?
                        }
                    };
                    let ci = self.frames.enter(child)?;
                    let cf = self.frames.frame(ci);
                    crate::tree::read::check_link_target(
                        self.frames.held[ci].blob(),
                        header::depth(cf),
                        header::is_fan(cf),
                        self.path.len(),
                        false,
                    )
                    .map_err(|e| self.frames.abort(e))?;
                    // The child is a fan frame: look the branch byte up
                    // again in its fan node. The subtree found there sits
                    // at this same position (the byte is classified below).
                    let found = crate::tree::read::fan_entry(cf, &self.path, self.path.len())
                        .map_err(|c| self.frames.fail(ci, c))?;
                    match found.filter(|&r| r != 0) {
                        Some(r) => (frame, ptr) = (ci, r),
                        None => return Ok(Step::Go),
                    }
                }
                Node::Leaf(l) if ctx.lo == Lo::Free && ctx.pre == Pre::Within => {
                    return self.emit_leaf(frame, l, base, ctx.rollup);
                }
                Node::Leaf(l) => {
                    f.read_into(l.suffix_at(), l.suffix_len, &mut self.path)
                        .map_err(|c| self.frames.fail(frame, c))?;
                    return match self.advance(&ctx, base) {
                        (Verdict::Skip, _) => Ok(Step::Go),
                        (Verdict::Stop, _) => Ok(Step::Done),
                        (Verdict::Go(lo, pre), rollup) => {
                            if self.own_key_qualifies(lo, pre) {
                                self.emit(frame, rollup, Some(l))
                            } else {
                                Ok(Step::Go)
                            }
                        }
                    };
                }
                Node::Inner(n) if self.seeks(&ctx) => match self.seek(frame, n, base, ctx)? {
                    Seek::Down(c, at, next) => (ptr, base, ctx, slot) = (c, at, next, true),
                    Seek::Here(step) => return Ok(step),
                },
                Node::Inner(n) => return self.inner(frame, n, base, ctx),
            }
        }
    }

    /// No key is longer than [`MAX_KEY`], so neither is a live path: a
    /// longer one comes from a child pointer that leads back up (torn
    /// bytes, or a corrupt frame), and the walk stops there instead of
    /// growing the path until the visit budget runs out (each lap can add
    /// up to 64 KiB).
    fn check_path(&self, frame: usize) -> std::result::Result<(), Abort> {
        if self.path.len() > MAX_KEY {
            return Err(self
                .frames
                .fail(frame, Corrupt("key path longer than the longest key")));
        }
        Ok(())
    }

    /// Whether a node reached in `ctx` is on the way down to the prefix:
    /// its path is a proper prefix of the filter's, so only the child for
    /// the prefix's next byte can hold a qualifying key (every qualifying
    /// key starts with the prefix), whatever the lower bound. The general
    /// walk would read the node's children one at a time from that byte
    /// (or the bound's, if greater) and stop at the first one past the
    /// prefix; [`Walker::seek`] goes straight down instead, and the lower
    /// bound is still applied to the path at every node on the way.
    #[inline]
    fn seeks(&self, ctx: &Ctx) -> bool {
        ctx.pre == Pre::Before
    }

    /// Visits inner node `n` on the way down to the prefix ([`Walker::
    /// seeks`]): appends its compressed path and, if the path is still
    /// above the prefix, looks up the child for the prefix's next byte
    /// the way a point get does and returns it ([`Seek::Down`], the byte
    /// on the path) without keeping a level for `n`. No other child and
    /// not `n`'s own key can qualify, and once the subtree below the
    /// prefix is done nothing past it does either, so the walk never has
    /// to come back to `n`: with no level left it is complete. A path
    /// that reaches the prefix goes on as [`Walker::inner`] does.
    fn seek(
        &mut self,
        frame: usize,
        n: node::Inner,
        base: usize,
        ctx: Ctx,
    ) -> std::result::Result<Seek, Abort> {
        // Skipped or stopped: the prefix is not in the tree.
        let (Verdict::Go(lo, pre), rollup) = self.enter_inner(frame, &n, base, ctx)? else {
            return Ok(Seek::Here(Step::Done));
        };
        if pre == Pre::Before {
            let at = self.path.len();
            let Some(&b) = self.q.prefix.get(at) else {
                return Err(self.frames.fail(frame, Corrupt("path past the prefix")));
            };
            let f = self.frames.frame(frame);
            return match node::child_ptr(f, &n, b).map_err(|c| self.frames.fail(frame, c))? {
                Some(c) => {
                    self.path.push(b);
                    Ok(Seek::Down(c, at, Ctx { lo, pre, rollup }))
                }
                None => Ok(Seek::Here(Step::Done)),
            };
        }
        self.inner_below(frame, n, lo, pre, rollup).map(Seek::Here)
    }

    /// Appends inner node `n`'s compressed path (the path was `base` long
    /// before its branch byte) and classifies the path.
    #[inline]
    fn enter_inner(
        &mut self,
        frame: usize,
        n: &node::Inner,
        base: usize,
        ctx: Ctx,
    ) -> std::result::Result<(Verdict, Option<usize>), Abort> {
        let f = self.frames.frame(frame);
        if n.prefix_len > 0 {
            f.read_into(n.prefix_at(), n.prefix_len, &mut self.path)
                .map_err(|c| self.frames.fail(frame, c))?;
        }
        self.check_path(frame)?;
        // Past the bound and inside the prefix, with no delimiter to look
        // for (or rolled up already), the path classifies as before.
        Ok(
            if ctx.lo == Lo::Free
                && ctx.pre == Pre::Within
                && (ctx.rollup.is_some() || self.q.delimiter.is_none())
            {
                (Verdict::Go(Lo::Free, Pre::Within), ctx.rollup)
            } else {
                self.advance(&ctx, base)
            },
        )
    }

    fn inner(
        &mut self,
        frame: usize,
        n: node::Inner,
        base: usize,
        ctx: Ctx,
    ) -> std::result::Result<Step, Abort> {
        match self.enter_inner(frame, &n, base, ctx)? {
            (Verdict::Skip, _) => Ok(Step::Go),
            (Verdict::Stop, _) => Ok(Step::Done),
            (Verdict::Go(lo, pre), rollup) => self.inner_below(frame, n, lo, pre, rollup),
        }
    }

    /// The rest of a visit to inner node `n` once its path is classified:
    /// its rollup or its own key, then a level for its children.
    fn inner_below(
        &mut self,
        frame: usize,
        n: node::Inner,
        lo: Lo,
        pre: Pre,
        rollup: Option<usize>,
    ) -> std::result::Result<Step, Abort> {
        let f = self.frames.frame(frame);
        if rollup.is_some() && (n.count > 0 || n.value != 0) && self.rollup_now(frame, lo) {
            return self.emit(frame, rollup, None);
        }
        if n.value != 0 && self.own_key_qualifies(lo, pre) {
            let leaf = match rollup {
                Some(_) => None,
                None => {
                    Some(node::decode_leaf(f, n.value).map_err(|c| self.frames.fail(frame, c))?)
                }
            };
            match self.emit(frame, rollup, leaf)? {
                Step::Go if rollup.is_none() => {}
                step => return Ok(step),
            }
        }
        // Where the children start.
        let len = self.path.len();
        let mut next = 0usize;
        // Paths above the prefix go through `Walker::seek`, never here.
        debug_assert!(pre != Pre::Before, "inner_below above the prefix");
        if lo == Lo::Tight {
            match self.q.lower.bytes().get(len) {
                Some(&x) => next = usize::from(x),
                None => {
                    if matches!(self.q.lower, Lower::ExcludePrefix(_)) {
                        return Ok(Step::Go);
                    }
                }
            }
        }
        let first = self.kids.len();
        let ctx = Ctx { lo, pre, rollup };
        let (resume, hint) = self.read_kids(frame, &n, next, ctx.one_child())?;
        self.stack.push(Level {
            frame,
            node: n,
            resume,
            hint,
            at: len,
            first,
            next: first,
            end: self.kids.len(),
            ctx,
        });
        Ok(Step::Go)
    }

    /// The walk is about to load the cold frame `guid`, linked from a child
    /// of the node on top of the stack. The links among the siblings it
    /// visits next (the rest of that node's child chunk, no more than
    /// entries are still wanted) mostly lead to cold frames too: they are
    /// loaded with it in one backend batch (one io_uring submission) and
    /// pinned until the batch ends. Best effort: a sibling read torn by a
    /// writer only costs a wasted or failed prefetch; the walk validates
    /// and loads what it really visits itself.
    fn load_siblings(&mut self, core: &Core, frame: usize, guid: crate::store::BlobGuid) {
        let Some(top) = self.stack.last().filter(|t| t.frame == frame) else {
            return;
        };
        let want = self.q.limit.saturating_sub(self.out.len());
        let f = self.frames.frame(frame);
        let mut guids = vec![guid];
        for &(_, c) in self.kids[top.next..top.end].iter().take(want) {
            if let Ok(Node::Link(l)) = node::decode(f, c) {
                if !guids.contains(&l.guid) {
                    guids.push(l.guid);
                }
            }
        }
        if guids.len() > 1 {
            self.prefetched.extend(core.bm.prefetch(&guids));
        }
    }

    /// Appends the next chunk of `n`'s children from byte `from` to
    /// `kids` and, if any of them was allocated since the frame was last
    /// written in key order, prefetches the first few. Returns where to
    /// resume, and whether to prefetch the rest of the chunk as the walk
    /// goes.
    ///
    /// Nodes below the frame's key-order mark (`AtomicFrame::ordered_to`)
    /// lie in the order the walk visits them, one line after the next,
    /// which the hardware prefetcher follows on its own; hints for them
    /// are only instructions spent. A node past the mark sits at the tail
    /// in allocation order, a cache miss away from its neighbours.
    ///
    /// With `one` the walk wants a single child at a time: in a
    /// rolled-up subtree it only looks for the first key to emit the common prefix and drop the subtree (the next
    /// child is read only if that one held no qualifying key). Reading or
    /// prefetching more would be wasted.
    #[inline]
    fn read_kids(
        &mut self,
        frame: usize,
        n: &node::Inner,
        from: usize,
        one: bool,
    ) -> std::result::Result<(usize, bool), Abort> {
        let first = self.kids.len();
        let f = self.frames.frame(frame);
        let chunk = if one { 1 } else { KIDS_CHUNK };
        let resume = node::children_from(f, n, from, chunk, &mut self.kids)
            .map_err(|c| self.frames.fail(frame, c))?;
        let kids = self.kids.get(first..).unwrap_or_default();
        let ordered = f.ordered_to();
        let hint = kids.iter().any(|&(_, c)| c >= ordered);
        if hint {
            for &(_, c) in kids.iter().take(PREFETCH_AHEAD) {
                prefetch_node(f, c);
            }
        }
        Ok((resume, hint))
    }

    /// Walks one batch. `Ok(true)`: the tree has no entries past the batch.
    fn run(&mut self, core: &Core) -> std::result::Result<bool, Abort> {
        let root = self.frames.enter(Arc::clone(&core.root))?;
        let r = header::root(self.frames.frame(root)).map_err(|c| self.frames.fail(root, c))?;
        if r == 0 {
            return Ok(true);
        }
        let ctx0 = Ctx {
            lo: Lo::Tight,
            pre: if self.q.prefix.is_empty() {
                Pre::Within
            } else {
                Pre::Before
            },
            rollup: None,
        };
        let mut step = self.visit(core, root, r, 0, None, ctx0)?;
        loop {
            match step {
                Step::Done => return Ok(true),
                Step::Full => return Ok(false),
                Step::Go => {}
            }
            let Some(top) = self.stack.last_mut() else {
                return Ok(true);
            };
            if top.next == top.end {
                let (first, frame, node, resume) = (top.first, top.frame, top.node, top.resume);
                let one = top.ctx.one_child();
                self.kids.truncate(first);
                if resume >= 256 {
                    self.stack.pop();
                    continue;
                }
                let (resume, hint) = self.read_kids(frame, &node, resume, one)?;
                let Some(top) = self.stack.last_mut() else {
                    return Ok(true);
                };
                (top.next, top.end, top.resume, top.hint) = (first, self.kids.len(), resume, hint);
                continue;
            }
            let (b, c) = self.kids[top.next];
            top.next += 1;
            let ahead = top.next + PREFETCH_AHEAD - 1;
            let (frame, at, ctx) = (top.frame, top.at, top.ctx);
            if top.hint && ahead < top.end {
                prefetch_node(self.frames.frame(frame), self.kids[ahead].1);
            }
            // The branch byte is the delimiter: the child rolls up whole,
            // without reading it, if it surely holds a key.
            if ctx.rollup.is_none()
                && ctx.pre == Pre::Within
                && self.q.delimiter == Some(b)
                && self.rollup_now(frame, ctx.lo)
            {
                self.tick()?;
                self.path.truncate(at);
                self.path.push(b);
                step = self.emit(frame, Some(at + 1), None)?;
                continue;
            }
            if ctx.lo == Lo::Free && ctx.pre == Pre::Within && ctx.rollup.is_none() {
                match node::leaf_or_inner_at(self.frames.frame(frame), c) {
                    Some(Quick::Leaf(l)) => {
                        step = self.leaf_run(frame, at, b, l)?;
                        continue;
                    }
                    // What `visit` would do with this child, without the
                    // call and the general decode (the child is no link).
                    // The whole subtree qualifies; with a delimiter, the
                    // stream leaves a node that rolls up to `inner`.
                    Some(Quick::Inner(n)) if stream::sorted(n.kind) => {
                        step = self.stream(frame, n, at, b)?;
                        continue;
                    }
                    Some(Quick::Inner(n)) => {
                        self.tick()?;
                        self.path.truncate(at);
                        self.path.push(b);
                        step = self.inner(frame, n, at, ctx)?;
                        continue;
                    }
                    None => {}
                }
            }
            step = self.visit(core, frame, c, at, Some(b), ctx)?;
        }
    }

    /// Emits leaf `l`, the child for byte `b` of the node on top of the
    /// stack, and then each following child of that node's chunk while it
    /// is a leaf too, without leaving this loop: every key below the node
    /// qualifies (the caller checked that the path is past the lower
    /// bound, inside the prefix and not rolled up), so a leaf's key is
    /// the node's path, the branch byte and the leaf's suffix, and goes
    /// into the batch straight from the frame, the path left as it is.
    /// The first child that is not a well-formed leaf, or whose byte is
    /// the delimiter, is left to the general walk.
    fn leaf_run(
        &mut self,
        frame: usize,
        at: usize,
        b: u8,
        l: node::Leaf,
    ) -> std::result::Result<Step, Abort> {
        self.path.truncate(at);
        let f = self.frames.frame(frame);
        let delim = self.q.delimiter;
        let (mut b, mut l) = (b, l);
        loop {
            self.frames.tick(&mut self.visits)?;
            self.out
                .push_leaf(&self.path, Some(b), at, f, l, delim)
                .map_err(|c| self.frames.fail(frame, c))?;
            if self.out.len() >= self.q.limit {
                return Ok(Step::Full);
            }
            let Some(top) = self.stack.last_mut() else {
                return Ok(Step::Go);
            };
            if top.next == top.end {
                return Ok(Step::Go);
            }
            let (nb, c) = self.kids[top.next];
            if delim == Some(nb) {
                return Ok(Step::Go);
            }
            let Some(nl) = node::leaf_at(f, c) else {
                return Ok(Step::Go);
            };
            top.next += 1;
            let ahead = top.next + PREFETCH_AHEAD - 1;
            if top.hint && ahead < top.end {
                prefetch_node(f, self.kids[ahead].1);
            }
            (b, l) = (nb, nl);
        }
    }
}

impl Core {
    /// Collects the next batch of entries into `out` (cleared first).
    /// Returns whether the tree holds nothing past them.
    ///
    /// With a `sink`, entries are handed to it during the walk as they
    /// validate ([`Sink`]); if a later read is torn, the batch ends at the
    /// entries handed over (it is not walked again: they were passed on).
    pub(crate) fn range_batch(
        &self,
        q: &Query<'_>,
        out: &mut Batch,
        mut sink: Option<&mut Sink<'_>>,
    ) -> Result<bool> {
        let mut attempt = 0usize;
        loop {
            out.clear();
            let shared = attempt >= OPTIMISTIC_ATTEMPTS;
            let mut sc = std::mem::take(&mut out.scratch);
            sc.path.clear();
            sc.kids.clear();
            sc.stack.clear();
            sc.opens.clear();
            // Room for a typical walk up front, not grown piecemeal.
            sc.path.reserve(256);
            sc.kids.reserve(4 * KIDS_CHUNK);
            sc.stack.reserve(16);
            let mut held = sc.held;
            held.clear();
            let mut w = Walker {
                q,
                frames: Frames { held, shared },
                path: sc.path,
                kids: sc.kids,
                stack: sc.stack,
                opens: sc.opens,
                out: &mut *out,
                visits: 0,
                prefetched: Vec::new(),
                sink: sink.as_deref_mut(),
            };
            let res = w.run(self);
            let valid = w.frames.all_valid();
            let (path, kids, stack, opens, mut held) =
                (w.path, w.kids, w.stack, w.opens, w.frames.held);
            // Unpin (and unlatch) now; keep the room.
            held.clear();
            out.scratch = Scratch {
                path,
                kids,
                stack,
                opens,
                held,
            };
            let given = sink.as_deref().map_or(0, Sink::given);
            match res {
                Ok(done) if valid => return Ok(done),
                Err(Abort::Fail(e)) => return Err(e),
                _ if given > 0 => {
                    // Torn after entries were handed over: the batch is
                    // those entries, and the next one starts after them.
                    self.bm.counters.restarts.add(1);
                    #[cfg(test)]
                    stream::seen::CUT.with(|n| n.set(n.get() + 1));
                    out.truncate(given);
                    return Ok(false);
                }
                _ => {
                    self.bm.counters.restarts.add(1);
                    attempt += 1;
                }
            }
        }
    }
}
