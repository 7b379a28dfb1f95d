//! [`TxnBatch`]: the operations of one atomic [`Tree::txn`](crate::Tree::txn).

// Also their commit (`Tree::commit`, behind `Tree::txn` and
// `Tree::rename`): the batch's net effect in key order, validated against
// the state the batch itself produces, applied under the commit gate held
// exclusively. (Plain comments: this module's docs are public.)

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::api::errors::{Error, Result};
use crate::api::tree::{check_key, check_value, write_gate, Tree};
use crate::buffer::CachedBlob;
use crate::tree::{Core, MAX_KEY};
use crate::wal::OpRef;

/// Where one key or value of a batch lies in [`TxnBatch`]'s byte buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: usize,
    len: usize,
}

/// One queued operation of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchOp {
    /// Insert or overwrite `key`.
    Put { key: Span, value: Span },
    /// Remove `key` (absent keys are fine).
    Delete { key: Span },
    /// Move the value of `src` to `dst`.
    Rename { src: Span, dst: Span, force: bool },
}

/// The operations of one transaction, filled in by the closure passed to
/// [`Tree::txn`](crate::Tree::txn).
///
/// The methods only record their arguments; validation happens when the
/// batch commits, and a batch is applied wholly or not at all. Keys and
/// values are copied into one growing buffer (not one allocation per
/// key), so a bulk load of thousands of keys per batch stays cheap.
#[derive(Debug, Default)]
pub struct TxnBatch {
    bytes: Vec<u8>,
    pub(crate) pending: Vec<BatchOp>,
}

impl TxnBatch {
    fn keep(&mut self, b: &[u8]) -> Span {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        Span {
            start,
            len: b.len(),
        }
    }

    /// The bytes of a key or value queued in this batch.
    pub(crate) fn at(&self, s: Span) -> &[u8] {
        &self.bytes[s.start..s.start + s.len]
    }

    /// Queues an insert or overwrite of `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        let key = self.keep(key);
        let value = self.keep(value);
        self.pending.push(BatchOp::Put { key, value });
    }

    /// Queues a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) {
        let key = self.keep(key);
        self.pending.push(BatchOp::Delete { key });
    }

    /// Queues a rename of `src` to `dst`, with the rules of
    /// [`Tree::rename`](crate::Tree::rename).
    pub fn rename(&mut self, src: &[u8], dst: &[u8], force: bool) {
        let src = self.keep(src);
        let dst = self.keep(dst);
        self.pending.push(BatchOp::Rename { src, dst, force });
    }

    /// Number of queued operations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no operation is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl Tree {
    /// Commits `batch` all-or-nothing (`Tree::txn`, `Tree::rename`):
    /// under the commit gate held exclusively, the batch's net effect is
    /// validated against its own view, every frame it touches loaded and
    /// pinned, one WAL record logged, then puts applied before deletes.
    pub(crate) fn commit(&self, batch: &TxnBatch) -> Result<()> {
        let ops = &batch.pending;
        if ops.is_empty() {
            return Ok(());
        }
        let inner = &*self.inner;
        inner.check_writable()?;
        let seq = {
            let _g = write_gate(&inner.gate);
            let core = &inner.core;
            // The batch's net effect in key order: key -> Some(value) /
            // None (deleted), the last op on a key winning.
            let view = if ops.iter().any(|op| matches!(op, BatchOp::Rename { .. })) {
                batch_view_renaming(core, batch)?
            } else {
                batch_view(batch)?
            };
            if view.is_empty() {
                return Ok(());
            }
            // Every frame the batch will touch must load and decode before
            // anything is applied, so a corrupt or unreadable frame fails
            // the batch while it is still untouched; the frames stay pinned
            // (unevictable) until the batch is applied. Each put starts at
            // the frame its pin pass found (`Core::put_from`) instead of
            // descending from the root a second time. The view is in key
            // order, so a key often shares the route of the key before it:
            // then only its walk inside that frame is checked
            // (`Core::ends_in`), not the descent from the root.
            let mut pins: Vec<(Arc<CachedBlob>, usize)> = Vec::with_capacity(view.len());
            let mut prev: &[u8] = &[];
            for (k, _) in &view {
                let again = pins.last().filter(|(blob, depth)| {
                    same_route(prev, k, *depth) && core.ends_in(blob, k, *depth)
                });
                let at = match again {
                    Some((blob, depth)) => (Arc::clone(blob), *depth),
                    None => {
                        let loc = core.locate(k)?;
                        (loc.blob, loc.depth)
                    }
                };
                pins.push(at);
                prev = k;
            }
            // One record for the whole batch: its after-images.
            let ops: Vec<OpRef<'_>> = view
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => OpRef::Put(k, v),
                    None => OpRef::Delete(k),
                })
                .collect();
            let seq = inner.log(&ops)?;
            let mut log = || Ok(seq);
            // Puts before deletes: should the apply fail midway anyway, a
            // moved value is never lost (at worst present twice).
            let applied = (|| -> Result<()> {
                for ((k, v), (blob, depth)) in view.iter().zip(&pins) {
                    if let Some(v) = v {
                        let at = (Arc::clone(blob), *depth);
                        core.put_from(Some(at), k, v, &mut log)?;
                    }
                }
                for (k, v) in &view {
                    if v.is_none() {
                        core.delete(k, &mut log)?;
                    }
                }
                Ok(())
            })();
            drop(pins);
            if let Err(e) = applied {
                // Half a batch is in the cache: no checkpoint may persist
                // it. The WAL (if any) holds the whole batch, so a reopen
                // recovers it whole.
                inner.poisoned.store(true, Ordering::Release);
                return Err(e);
            }
            seq
        };
        self.after_mutation(seq)
    }
}

/// A key and what the batch leaves there (`None`: deleted).
type ViewEntry<'a> = (&'a [u8], Option<Cow<'a, [u8]>>);

/// A batch's net effect, sorted by key, the last op on a key winning.
type BatchView<'a> = Vec<ViewEntry<'a>>;

/// Whether the descents of `prev` and `key` take the same route down to
/// a frame at key depth `depth`: links are followed by the key bytes
/// consumed above them, so keys that share their first `depth` bytes
/// reach the same frame at that depth (while the tree does not change).
fn same_route(prev: &[u8], key: &[u8], depth: usize) -> bool {
    matches!((prev.get(..depth), key.get(..depth)), (Some(a), Some(b)) if a == b)
}

/// [`BatchView`] of a batch of puts and deletes only: validated in op
/// order (the first bad op's error), then a stable sort by key keeps the
/// ops on one key in batch order, so the last of each run is the one
/// that counts. No lookups, no map: this is the bulk-load path.
fn batch_view(batch: &TxnBatch) -> Result<BatchView<'_>> {
    let mut all: BatchView<'_> = Vec::with_capacity(batch.pending.len());
    for op in &batch.pending {
        if matches!(op, BatchOp::Rename { .. }) {
            return Err(Error::Internal("a rename in a batch without renames"));
        }
        all.extend(plain_entry(batch, op)?);
    }
    all.sort_by(|a, b| a.0.cmp(b.0));
    let mut view: BatchView<'_> = Vec::with_capacity(all.len());
    for e in all {
        match view.last_mut() {
            Some(last) if last.0 == e.0 => *last = e,
            _ => view.push(e),
        }
    }
    Ok(view)
}

/// The view entry of a put or a delete, validated (a put's key and
/// value); `None` for a delete of an oversize key, which no tree holds,
/// and for a rename (the caller's business).
fn plain_entry<'a>(batch: &'a TxnBatch, op: &BatchOp) -> Result<Option<ViewEntry<'a>>> {
    Ok(match *op {
        BatchOp::Put { key, value } => {
            let (k, v) = (batch.at(key), batch.at(value));
            check_key(k)?;
            check_value(v)?;
            Some((k, Some(Cow::Borrowed(v))))
        }
        BatchOp::Delete { key } => {
            let k = batch.at(key);
            (k.len() <= MAX_KEY).then_some((k, None))
        }
        BatchOp::Rename { .. } => None,
    })
}

/// [`BatchView`] of a batch with renames: each op is validated against
/// the state the batch itself has produced so far (a rename may move a
/// key put earlier in the batch), looking keys the batch has not touched
/// up in the tree.
fn batch_view_renaming<'a>(core: &Core, batch: &'a TxnBatch) -> Result<BatchView<'a>> {
    let mut view: BTreeMap<&'a [u8], Option<Cow<'a, [u8]>>> = BTreeMap::new();
    let lookup = |view: &BTreeMap<&'a [u8], Option<Cow<'a, [u8]>>>,
                  k: &[u8]|
     -> Result<Option<Cow<'a, [u8]>>> {
        match view.get(k) {
            Some(v) => Ok(v.clone()),
            None if k.len() > MAX_KEY => Ok(None),
            None => Ok(core.get(k)?.map(Cow::Owned)),
        }
    };
    for op in &batch.pending {
        match *op {
            BatchOp::Put { .. } | BatchOp::Delete { .. } => {
                if let Some((k, v)) = plain_entry(batch, op)? {
                    view.insert(k, v);
                }
            }
            BatchOp::Rename { src, dst, force } => {
                let (src, dst) = (batch.at(src), batch.at(dst));
                let Some(v) = lookup(&view, src)? else {
                    return Err(Error::NotFound);
                };
                if src == dst {
                    continue;
                }
                if !force && lookup(&view, dst)?.is_some() {
                    return Err(Error::DstExists);
                }
                check_key(dst)?;
                view.insert(src, None);
                view.insert(dst, Some(v));
            }
        }
    }
    Ok(view.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned view of a queued op, for comparisons.
    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Put(Vec<u8>, Vec<u8>),
        Delete(Vec<u8>),
        Rename(Vec<u8>, Vec<u8>, bool),
    }

    fn owned(b: &TxnBatch) -> Vec<Owned> {
        b.pending
            .iter()
            .map(|op| match *op {
                BatchOp::Put { key, value } => Owned::Put(b.at(key).to_vec(), b.at(value).to_vec()),
                BatchOp::Delete { key } => Owned::Delete(b.at(key).to_vec()),
                BatchOp::Rename { src, dst, force } => {
                    Owned::Rename(b.at(src).to_vec(), b.at(dst).to_vec(), force)
                }
            })
            .collect()
    }

    #[test]
    fn queues_in_order() {
        let mut b = TxnBatch::default();
        assert!(b.is_empty());
        b.put(b"a", b"1");
        b.delete(b"b");
        b.rename(b"a", b"c", true);
        b.put(b"", b"");
        assert_eq!(b.len(), 4);
        assert_eq!(
            owned(&b),
            vec![
                Owned::Put(b"a".to_vec(), b"1".to_vec()),
                Owned::Delete(b"b".to_vec()),
                Owned::Rename(b"a".to_vec(), b"c".to_vec(), true),
                Owned::Put(Vec::new(), Vec::new()),
            ]
        );
    }
}
