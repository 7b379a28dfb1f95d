//! Ordered iteration: [`RangeBuilder`], its iterator [`RangeIter`] and
//! its borrowing visitor [`RangeBuilder::for_each`]. Both fetch the tree
//! in batches through one `Cursor`, so they return the same entries with
//! the same guarantees.

use std::ops::ControlFlow;

use crate::api::errors::Result;
use crate::api::tree::Tree;
use crate::tree::range::{Batch, ItemRef, Lower, Query, Sink};

/// One item of a range listing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RangeEntry {
    /// A key and its value.
    Key {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// With a delimiter: every key under this prefix rolled up into one
    /// entry. The prefix ends with the delimiter.
    CommonPrefix(Vec<u8>),
}

/// One item of a range listing, borrowed: what
/// [`RangeBuilder::for_each`] hands its closure. The slices are valid for
/// the call only; [`RangeEntryRef::to_entry`] makes an owned copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeEntryRef<'a> {
    /// A key and its value.
    Key {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// With a delimiter: every key under this prefix rolled up into one
    /// entry. The prefix ends with the delimiter.
    CommonPrefix(&'a [u8]),
}

impl RangeEntryRef<'_> {
    /// An owned copy of the entry.
    #[must_use]
    pub fn to_entry(&self) -> RangeEntry {
        match *self {
            RangeEntryRef::Key { key, value } => RangeEntry::Key {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            RangeEntryRef::CommonPrefix(p) => RangeEntry::CommonPrefix(p.to_vec()),
        }
    }
}

impl<'a> From<ItemRef<'a>> for RangeEntryRef<'a> {
    fn from(item: ItemRef<'a>) -> Self {
        match item {
            ItemRef::Key(key, value) => RangeEntryRef::Key { key, value },
            ItemRef::Common(p) => RangeEntryRef::CommonPrefix(p),
        }
    }
}

/// Configures an ordered iteration over a [`Tree`]; iterate it with
/// `for` or [`IntoIterator::into_iter`].
///
/// ```
/// use holt::{RangeEntry, Tree, TreeConfig};
///
/// let tree = Tree::open(TreeConfig::memory())?;
/// for k in ["logs/2025/a", "logs/2025/b", "logs/2026/c", "logs/readme", "other"] {
///     tree.put(k.as_bytes(), b"")?;
/// }
/// // One directory level, like S3's ListObjectsV2 with delimiter "/".
/// let level: Vec<RangeEntry> = tree
///     .range()
///     .prefix(b"logs/")
///     .delimiter(b'/')
///     .into_iter()
///     .collect::<holt::Result<_>>()?;
/// let names: Vec<String> = level
///     .iter()
///     .map(|e| match e {
///         RangeEntry::Key { key, .. } => String::from_utf8_lossy(key).into_owned(),
///         RangeEntry::CommonPrefix(p) => String::from_utf8_lossy(p).into_owned(),
///         _ => unreachable!(),
///     })
///     .collect();
/// assert_eq!(names, ["logs/2025/", "logs/2026/", "logs/readme"]);
///
/// // Paging: continue after the last key of the previous page.
/// let page2: Vec<RangeEntry> = tree
///     .scan_prefix(b"logs/")
///     .start_after(b"logs/2025/b")
///     .into_iter()
///     .collect::<holt::Result<_>>()?;
/// assert_eq!(page2.len(), 2);
/// # Ok::<(), holt::Error>(())
/// ```
#[must_use = "a RangeBuilder does nothing until it is iterated"]
pub struct RangeBuilder {
    tree: Tree,
    prefix: Vec<u8>,
    start_after: Option<Vec<u8>>,
    delimiter: Option<u8>,
    limit: Option<usize>,
}

impl RangeBuilder {
    pub(crate) fn new(tree: Tree) -> Self {
        Self {
            tree,
            prefix: Vec::new(),
            start_after: None,
            delimiter: None,
            limit: None,
        }
    }

    /// Only keys that start with `prefix` (default: all keys).
    pub fn prefix(mut self, prefix: &[u8]) -> Self {
        self.prefix = prefix.to_vec();
        self
    }

    /// Only keys strictly greater than `key` (full-key byte comparison,
    /// before any delimiter rollup).
    pub fn start_after(mut self, key: &[u8]) -> Self {
        self.start_after = Some(key.to_vec());
        self
    }

    /// Roll keys whose part after the prefix contains `byte` up into one
    /// [`RangeEntry::CommonPrefix`] per distinct prefix (up to and
    /// including the first `byte`). The rolled-up subtree is skipped, not
    /// visited.
    pub fn delimiter(mut self, byte: u8) -> Self {
        self.delimiter = Some(byte);
        self
    }
}

impl RangeBuilder {
    /// At most `n` entries (keys and common prefixes together; default:
    /// no limit). Besides ending the iteration, the limit sizes the
    /// batches: without it the first batch collects 128 entries (then
    /// 256, up to 1024), which a caller taking fewer pays for; with it no
    /// batch collects more than are still wanted, and a listing of up to
    /// 1024 entries is one walk of the tree.
    ///
    /// ```
    /// use holt::{Tree, TreeConfig};
    ///
    /// let tree = Tree::open(TreeConfig::memory())?;
    /// for i in 0..1000u32 {
    ///     tree.put(format!("k/{i:04}").as_bytes(), b"v")?;
    /// }
    /// // A page of 100 keys: one batch of exactly 100.
    /// let page = tree.scan_prefix(b"k/").limit(100).into_iter().count();
    /// assert_eq!(page, 100);
    /// # Ok::<(), holt::Error>(())
    /// ```
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Calls `f` on each entry in order, with the key and value borrowed
    /// from the batch they were collected in, until `f` returns
    /// [`ControlFlow::Break`] or the entries run out. The same entries as
    /// iterating the builder, with the same guarantees (a key that exists
    /// for the whole call is passed exactly once), without the two
    /// allocations per entry that an owned [`RangeEntry`] costs.
    ///
    /// `f` runs outside the tree's latches (between batches' walks, or
    /// during an optimistic walk, which holds none: an entry is passed as
    /// soon as everything read for it validates), so it may read or write
    /// the tree; entries it writes may or may not be passed to it later.
    /// While it runs mid-walk, the few frames the walk has entered stay
    /// pinned (not evictable), as they are for the walk itself. The first
    /// error fetching a batch is returned (entries before it were passed
    /// already).
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use holt::{RangeEntryRef, Tree, TreeConfig};
    ///
    /// let tree = Tree::open(TreeConfig::memory())?;
    /// for k in ["a/1", "a/2", "a/x/3", "b"] {
    ///     tree.put(k.as_bytes(), k.as_bytes())?;
    /// }
    /// let mut bytes = 0;
    /// let mut dirs = Vec::new();
    /// tree.range()
    ///     .prefix(b"a/")
    ///     .delimiter(b'/')
    ///     .for_each(|e| {
    ///         match e {
    ///             RangeEntryRef::Key { value, .. } => bytes += value.len(),
    ///             RangeEntryRef::CommonPrefix(p) => dirs.push(p.to_vec()),
    ///             _ => {}
    ///         }
    ///         ControlFlow::Continue(())
    ///     })?;
    /// assert_eq!((bytes, dirs), (6, vec![b"a/x/".to_vec()]));
    ///
    /// // Stop early: the first key only.
    /// let mut first = None;
    /// tree.range().for_each(|e| {
    ///     first = Some(e.to_entry());
    ///     ControlFlow::Break(())
    /// })?;
    /// assert!(matches!(first, Some(holt::RangeEntry::Key { key, .. }) if key == b"a/1"));
    /// # Ok::<(), holt::Error>(())
    /// ```
    pub fn for_each<F>(self, mut f: F) -> Result<()>
    where
        F: FnMut(RangeEntryRef<'_>) -> ControlFlow<()>,
    {
        let mut cursor = Cursor::new(self);
        let mut batch = SPARE.with(|s| s.take()).unwrap_or_default();
        let res = visit(&mut cursor, &mut batch, &mut f);
        if batch.footprint() <= SPARE_MAX_BYTES {
            SPARE.with(|s| s.set(Some(batch)));
        }
        res
    }
}

impl IntoIterator for RangeBuilder {
    type Item = Result<RangeEntry>;
    type IntoIter = RangeIter;

    fn into_iter(self) -> RangeIter {
        RangeIter {
            cursor: Cursor::new(self),
            batch: Batch::default(),
            pos: 0,
        }
    }
}

/// Runs `f` on each entry: the walk hands it entries as they validate
/// ([`Sink`]), and the rest of each batch follows once the batch is
/// complete.
fn visit<F>(cursor: &mut Cursor, batch: &mut Batch, f: &mut F) -> Result<()>
where
    F: FnMut(RangeEntryRef<'_>) -> ControlFlow<()>,
{
    loop {
        let mut g = |item: ItemRef<'_>| f(item.into());
        let mut sink = Sink::new(&mut g);
        if !cursor.fill(batch, Some(&mut sink))? || sink.stopped() {
            return Ok(());
        }
        let given = sink.given();
        for item in batch.items_from(given) {
            if f(item.into()).is_break() {
                return Ok(());
            }
        }
    }
}

thread_local! {
    /// A batch `for_each` keeps between calls on this thread, so a caller
    /// making many short listings does not allocate its buffers each
    /// time. A nested call (from inside the closure) finds it taken and
    /// makes its own.
    static SPARE: std::cell::Cell<Option<Batch>> = const { std::cell::Cell::new(None) };
}

/// Largest batch kept as the spare (a 1024-entry batch of big values is
/// dropped rather than held by an idle thread).
const SPARE_MAX_BYTES: usize = 1 << 20;

const FIRST_BATCH: usize = 128;
const MAX_BATCH: usize = 1024;
/// Buffer room reserved per entry of a batch (key and value bytes).
const BYTES_PER_ENTRY: usize = 128;

/// The iteration state between batches: the query and the lower bound
/// (the last entry already collected), nothing else, so a key that exists
/// for the whole iteration is collected exactly once.
struct Cursor {
    tree: Tree,
    prefix: Vec<u8>,
    delimiter: Option<u8>,
    lower: Lower,
    /// Size of the next batch.
    batch: usize,
    /// Entries still wanted (the builder's limit minus those collected).
    left: usize,
    done: bool,
}

impl Cursor {
    fn new(b: RangeBuilder) -> Self {
        // Every key under the prefix is `>= prefix`, so with the prefix
        // filter "from the start" is the same bound as "from the prefix",
        // and needs no copy of it.
        let lower = match b.start_after {
            Some(sa) if sa.as_slice() >= b.prefix.as_slice() => Lower::Exclusive(sa),
            _ => Lower::Inclusive(Vec::new()),
        };
        let left = b.limit.unwrap_or(usize::MAX);
        Self {
            tree: b.tree,
            prefix: b.prefix,
            delimiter: b.delimiter,
            lower,
            batch: if b.limit.is_some() {
                MAX_BATCH
            } else {
                FIRST_BATCH
            },
            left,
            done: left == 0,
        }
    }

    /// Collects the next batch into `out`, handing entries to `sink` as
    /// they validate if there is one. `Ok(false)`: the iteration is over
    /// (`out` is then empty).
    fn fill(&mut self, out: &mut Batch, sink: Option<&mut Sink<'_>>) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        let limit = self.batch.min(self.left);
        let q = Query {
            prefix: &self.prefix,
            delimiter: self.delimiter,
            lower: &self.lower,
            limit,
        };
        out.reset(limit, BYTES_PER_ENTRY);
        let res = self.tree.inner.core.range_batch(&q, out, sink);
        let exhausted = match res {
            Ok(x) => x,
            Err(e) => {
                out.clear();
                self.done = true;
                return Err(e);
            }
        };
        self.left -= out.len();
        self.done = exhausted || out.len() == 0 || self.left == 0;
        // The next batch starts after this one's last entry (a finished
        // iteration needs no bound: no copy).
        if !self.done {
            match out.last() {
                Some(ItemRef::Key(k, _)) => set_bytes(&mut self.lower, k, Lower::Exclusive),
                Some(ItemRef::Common(p)) => set_bytes(&mut self.lower, p, Lower::ExcludePrefix),
                None => {}
            }
        }
        self.batch = (self.batch * 2).min(MAX_BATCH);
        Ok(out.len() > 0)
    }
}

/// Makes `lower` the bound `make(bytes)`, reusing its buffer.
fn set_bytes(lower: &mut Lower, bytes: &[u8], make: fn(Vec<u8>) -> Lower) {
    let mut buf = match std::mem::replace(lower, Lower::Inclusive(Vec::new())) {
        Lower::Inclusive(b) | Lower::Exclusive(b) | Lower::ExcludePrefix(b) => b,
    };
    buf.clear();
    buf.extend_from_slice(bytes);
    *lower = make(buf);
}

/// The iterator of a [`RangeBuilder`]: entries in key order, fetched from
/// the tree in batches. An `Err` item ends the iteration.
pub struct RangeIter {
    cursor: Cursor,
    batch: Batch,
    /// The next entry of `batch` to return.
    pos: usize,
}

impl Iterator for RangeIter {
    type Item = Result<RangeEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.batch.get(self.pos) {
                self.pos += 1;
                return Some(Ok(RangeEntryRef::from(item).to_entry()));
            }
            self.pos = 0;
            match self.cursor.fill(&mut self.batch, None) {
                Err(e) => return Some(Err(e)),
                Ok(false) => return None,
                Ok(true) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;
    use std::ops::ControlFlow;

    use crate::{RangeEntryRef, Tree, TreeConfig};

    /// The listing a model computes: keys under `prefix` after `after`,
    /// each rolled up at its first `delim` past the prefix.
    fn model(m: &BTreeMap<Vec<u8>, Vec<u8>>, prefix: &[u8], after: &[u8]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for k in m
            .keys()
            .filter(|k| k.starts_with(prefix) && k.as_slice() > after)
        {
            let item = match k[prefix.len()..].iter().position(|&b| b == b'/') {
                Some(i) => k[..prefix.len() + i + 1].to_vec(),
                None => k.clone(),
            };
            if out.last() != Some(&item) {
                out.push(item);
            }
        }
        out
    }

    fn list(tree: &Tree, prefix: &[u8], after: &[u8], limit: Option<usize>) -> Vec<Vec<u8>> {
        let mut b = tree.range().prefix(prefix).delimiter(b'/');
        if !after.is_empty() {
            b = b.start_after(after);
        }
        if let Some(n) = limit {
            b = b.limit(n);
        }
        let mut got = Vec::new();
        b.for_each(|e| {
            got.push(match e {
                RangeEntryRef::Key { key, .. } => key.to_vec(),
                RangeEntryRef::CommonPrefix(p) => p.to_vec(),
            });
            ControlFlow::Continue(())
        })
        .unwrap();
        got
    }

    /// Every `(key, value)` of `tree.scan_prefix(prefix)`, through
    /// `for_each` (which reuses the thread's spare batch).
    fn scan(tree: &Tree, prefix: &[u8], limit: Option<usize>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut b = tree.scan_prefix(prefix);
        if let Some(n) = limit {
            b = b.limit(n);
        }
        let mut got = Vec::new();
        b.for_each(|e| {
            if let RangeEntryRef::Key { key, value } = e {
                got.push((key.to_vec(), value.to_vec()));
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        got
    }

    /// A batch is written over in place when it is reused (the thread's
    /// spare batch of `for_each`, and each batch of a long iteration):
    /// entries of every length, keys that end at an inner node (their
    /// value leaf goes through the general visit) and common prefixes
    /// come out exact, though the buffer still holds longer entries of
    /// an earlier listing.
    ///
    /// Catches an entry copied short of its last partial word (tried: the
    /// leaf's bytes rounded down to whole words, `len / 8 * 8`, in
    /// `push_leaf`: values end in the earlier listing's `0xEE` bytes),
    /// and a common prefix that does not advance the buffer (tried:
    /// `push_common` without `used += prefix.len()`: the next entry
    /// overwrites it).
    #[test]
    fn reused_batches_return_exact_entries() {
        let tree = Tree::open(TreeConfig::memory()).unwrap();
        let mut m = BTreeMap::new();
        for i in 0..600u32 {
            let v = vec![0xEE; 300];
            let k = format!("a/{i:04}");
            tree.put(k.as_bytes(), &v).unwrap();
            m.insert(k.into_bytes(), v);
        }
        for i in 0..700u32 {
            let v: Vec<u8> = (0..(i % 29)).map(|j| (i + j) as u8 | 1).collect();
            for k in [
                format!("b/{i:04}"),
                format!("b/{i:04}/x"),
                format!("b/{:02}/{i:04}", i % 40),
            ] {
                tree.put(k.as_bytes(), &v).unwrap();
                m.insert(k.into_bytes(), v.clone());
            }
        }
        let want = |prefix: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
            m.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        for limit in [None, Some(100), Some(1000)] {
            for prefix in [&b"b/"[..], b"b/01", b"b/0123"] {
                assert_eq!(
                    scan(&tree, b"a/", limit).len(),
                    limit.unwrap_or(600).min(600)
                );
                let mut w = want(prefix);
                w.truncate(limit.unwrap_or(usize::MAX));
                assert_eq!(scan(&tree, prefix, limit), w, "{prefix:?} {limit:?}");
                assert_eq!(
                    scan(&tree, b"a/", limit).len(),
                    limit.unwrap_or(600).min(600)
                );
                assert_eq!(list(&tree, prefix, b"", limit), {
                    let mut l = model(&m, prefix, b"");
                    l.truncate(limit.unwrap_or(usize::MAX));
                    l
                });
            }
        }
    }

    /// The thread's spare batch keeps its size over repeated listings:
    /// each batch's room counts from empty, not from the end of the
    /// entries the spare still holds from the last listing.
    ///
    /// Catches room reserved past a reused batch's old entries (tried:
    /// `Batch::reset` without its `clear`: the buffer doubles with every
    /// listing until the spare is dropped and a new one allocated).
    #[test]
    fn the_spare_batch_does_not_grow_over_repeated_listings() {
        let tree = Tree::open(TreeConfig::memory()).unwrap();
        for i in 0..3000u32 {
            tree.put(format!("k/{i:05}").as_bytes(), &[7u8; 40])
                .unwrap();
        }
        let spare = || {
            super::SPARE.with(|s| {
                let b = s.take();
                let fp = b.as_ref().map(super::Batch::footprint);
                s.set(b);
                fp
            })
        };
        assert_eq!(scan(&tree, b"k/", Some(1000)).len(), 1000);
        let first = spare();
        assert!(first.is_some(), "for_each keeps a spare batch");
        for _ in 0..20 {
            assert_eq!(scan(&tree, b"k/", Some(1000)).len(), 1000);
            assert_eq!(spare(), first);
        }
    }

    /// A tree of several frames: groups `gNNN` whose keys `gNNN.aMM` and
    /// `gNNN/sub/kMM` carry 2 KiB values, so runs of subtrees spill into
    /// child frames; the delimiter `/` is then a branch byte next to `.`,
    /// inside compressed prefixes (`/sub/`), and on either side of frame
    /// links. Small groups `hNNN` put a leaf right below a `/` branch in a
    /// frame that has links.
    fn spilled_tree() -> (Tree, BTreeMap<Vec<u8>, Vec<u8>>) {
        let tree = Tree::open(TreeConfig::memory()).unwrap();
        let mut m = BTreeMap::new();
        for g in 0..16u32 {
            for i in 0..(20 + 5 * g) {
                for k in [format!("g{g:03}.a{i:02}"), format!("g{g:03}/sub/k{i:02}")] {
                    let v = vec![g as u8; 2048];
                    tree.put(k.as_bytes(), &v).unwrap();
                    m.insert(k.into_bytes(), v);
                }
            }
            // One-key directories: a leaf right below the `/` branch.
            for k in [format!("h{g:03}.x"), format!("h{g:03}/solo")] {
                tree.put(k.as_bytes(), b"v").unwrap();
                m.insert(k.into_bytes(), b"v".to_vec());
            }
        }
        assert!(
            tree.stats().unwrap().blob_count > 4,
            "the tree spans frames"
        );
        (tree, m)
    }

    /// Listings with a delimiter over a tree of several frames, at every
    /// level, after keys, after common prefixes and after the last key of
    /// a directory, in pages, against the model.
    ///
    /// Catches the walk rolling a directory up before it knows a key past
    /// `start_after` lies in it (tried: `rollup_now` without the
    /// `lo == Lo::Free` test: `g003/` is listed after its last key), and
    /// a leaf whose key is copied straight into the batch not searched for
    /// the delimiter from its branch byte on (tried: searching from
    /// `from + 1`: `hNNN/solo` is listed instead of `hNNN/`).
    #[test]
    fn delimited_listings_across_frames_match_the_model() {
        let (tree, m) = spilled_tree();
        let cases: [(&[u8], &[u8]); 14] = [
            (b"h", b""),
            (b"h00", b"h003.x"),
            (b"", b""),
            (b"g", b""),
            (b"g00", b""),
            (b"g005", b""),
            (b"g005/", b""),
            (b"g005/sub/", b""),
            (b"g005/sub", b""),
            (b"", b"g003/sub/k34"),
            (b"g003", b"g003/sub/k34"),
            (b"g003", b"g003/sub/k10"),
            (b"", b"g007/"),
            (b"g01", b"g012.a"),
        ];
        for (prefix, after) in cases {
            for limit in [None, Some(1), Some(7)] {
                let mut want = model(&m, prefix, after);
                want.truncate(limit.unwrap_or(usize::MAX));
                assert_eq!(
                    list(&tree, prefix, after, limit),
                    want,
                    "prefix {prefix:?} after {after:?} limit {limit:?}"
                );
            }
        }
    }

    /// A directory whose keys were all deleted is not listed, also when
    /// its subtree had spilled into a child frame that keeps its
    /// neighbours' keys (the parent's slot for `/` then still names the
    /// link, and the child frame holds nothing for it).
    ///
    /// Catches a rollup emitted on seeing the delimiter without knowing a
    /// key lies below it (tried: `rollup_now` without the link-count
    /// test: `g000/` .. `g014/` are listed though empty).
    #[test]
    fn emptied_directories_are_not_listed() {
        let (tree, mut m) = spilled_tree();
        let doomed: Vec<Vec<u8>> = m
            .keys()
            .filter(|k| k[4] == b'/' && k[3] % 2 == 0)
            .cloned()
            .collect();
        for k in &doomed {
            tree.delete(k).unwrap();
            m.remove(k);
        }
        for g in 0..16u32 {
            let p = format!("g{g:03}");
            let want = model(&m, p.as_bytes(), b"");
            assert_eq!(list(&tree, p.as_bytes(), b"", None), want, "prefix {p}");
            assert_eq!(
                want.iter().any(|e| e.ends_with(b"/")),
                g % 2 == 1,
                "{p}/ is listed iff it has keys"
            );
        }
        for p in [&b""[..], b"g", b"g00", b"h"] {
            assert_eq!(list(&tree, p, b"", None), model(&m, p, b""), "prefix {p:?}");
        }
    }

    /// Listings with a delimiter where the walk takes one child at a time
    /// (on the way down to the prefix, and inside rolled-up subtrees),
    /// including rolled-up subtrees whose first child holds no qualifying
    /// key (it is at or before `start_after`, or it was rolled up in an
    /// earlier batch), so the walk must read on to the next child.
    ///
    /// Catches a one-at-a-time read that does not resume after its child
    /// (common prefixes go missing) or resumes at the wrong byte.
    #[test]
    fn one_child_at_a_time_walks_list_like_the_model() {
        let tree = Tree::open(TreeConfig::memory()).unwrap();
        let mut m = BTreeMap::new();
        for i in 0..300u32 {
            for k in [
                format!("d{i:03}/a"),
                format!("d{i:03}/b/x"),
                format!("d{i:03}/b/y{}", i % 7),
                format!("f{i:03}"),
            ] {
                tree.put(k.as_bytes(), &i.to_le_bytes()).unwrap();
                m.insert(k.into_bytes(), i.to_le_bytes().to_vec());
            }
        }
        let cases: [(&[u8], &[u8]); 8] = [
            (b"", b""),
            (b"d", b""),
            (b"d1", b""),
            (b"d005/", b""),
            (b"d005/", b"d005/a"),
            (b"", b"d005/a"),
            (b"d", b"d100/b/x"),
            (b"d2", b"d250"),
        ];
        for (prefix, after) in cases {
            for limit in [None, Some(1), Some(129), Some(1000)] {
                let got = list(&tree, prefix, after, limit);
                let mut want = model(&m, prefix, after);
                want.truncate(limit.unwrap_or(usize::MAX));
                assert_eq!(
                    got, want,
                    "prefix {prefix:?} after {after:?} limit {limit:?}"
                );
            }
        }
    }
}
