//! Ordered iteration: [`RangeBuilder`] and [`RangeIter`].

use std::collections::VecDeque;

use crate::api::errors::Result;
use crate::api::tree::Tree;
use crate::tree::range::{Item, Lower, Query};

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
}

impl RangeBuilder {
    pub(crate) fn new(tree: Tree) -> Self {
        Self {
            tree,
            prefix: Vec::new(),
            start_after: None,
            delimiter: None,
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

impl IntoIterator for RangeBuilder {
    type Item = Result<RangeEntry>;
    type IntoIter = RangeIter;

    fn into_iter(self) -> RangeIter {
        let lower = match self.start_after {
            Some(sa) if sa.as_slice() >= self.prefix.as_slice() => Lower::Exclusive(sa),
            _ => Lower::Inclusive(self.prefix.clone()),
        };
        RangeIter {
            tree: self.tree,
            prefix: self.prefix,
            delimiter: self.delimiter,
            lower,
            buf: VecDeque::new(),
            batch: FIRST_BATCH,
            done: false,
        }
    }
}

const FIRST_BATCH: usize = 128;
const MAX_BATCH: usize = 1024;

/// The iterator of a [`RangeBuilder`]: entries in key order, fetched from
/// the tree in batches. An `Err` item ends the iteration.
pub struct RangeIter {
    tree: Tree,
    prefix: Vec<u8>,
    delimiter: Option<u8>,
    lower: Lower,
    buf: VecDeque<Item>,
    batch: usize,
    done: bool,
}

impl Iterator for RangeIter {
    type Item = Result<RangeEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.buf.pop_front() {
                return Some(Ok(match item {
                    Item::Key(key, value) => RangeEntry::Key { key, value },
                    Item::Common(p) => RangeEntry::CommonPrefix(p),
                }));
            }
            if self.done {
                return None;
            }
            let q = Query {
                prefix: &self.prefix,
                delimiter: self.delimiter,
                lower: &self.lower,
                limit: self.batch,
            };
            match self.tree.inner.core.range_batch(&q) {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok((items, exhausted)) => {
                    match items.last() {
                        Some(Item::Key(k, _)) => self.lower = Lower::Exclusive(k.clone()),
                        Some(Item::Common(p)) => self.lower = Lower::ExcludePrefix(p.clone()),
                        None => {}
                    }
                    self.done = exhausted || items.is_empty();
                    self.batch = (self.batch * 2).min(MAX_BATCH);
                    self.buf.extend(items);
                }
            }
        }
    }
}
