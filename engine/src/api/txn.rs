//! [`TxnBatch`]: the operations of one atomic [`Tree::txn`](crate::Tree::txn).

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
