//! [`TxnBatch`]: the operations of one atomic [`Tree::txn`](crate::Tree::txn).

/// One queued operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BatchOp {
    /// Insert or overwrite `key`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Remove `key` (absent keys are fine).
    Delete { key: Vec<u8> },
    /// Move the value of `src` to `dst`.
    Rename {
        src: Vec<u8>,
        dst: Vec<u8>,
        force: bool,
    },
}

/// The operations of one transaction, filled in by the closure passed to
/// [`Tree::txn`](crate::Tree::txn).
///
/// The methods only record their arguments; validation happens when the
/// batch commits, and a batch is applied wholly or not at all.
#[derive(Debug, Default)]
pub struct TxnBatch {
    pub(crate) pending: Vec<BatchOp>,
}

impl TxnBatch {
    /// Queues an insert or overwrite of `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.pending.push(BatchOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        });
    }

    /// Queues a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) {
        self.pending.push(BatchOp::Delete { key: key.to_vec() });
    }

    /// Queues a rename of `src` to `dst`, with the rules of
    /// [`Tree::rename`](crate::Tree::rename).
    pub fn rename(&mut self, src: &[u8], dst: &[u8], force: bool) {
        self.pending.push(BatchOp::Rename {
            src: src.to_vec(),
            dst: dst.to_vec(),
            force,
        });
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

    #[test]
    fn queues_in_order() {
        let mut b = TxnBatch::default();
        assert!(b.is_empty());
        b.put(b"a", b"1");
        b.delete(b"b");
        b.rename(b"a", b"c", true);
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.pending,
            vec![
                BatchOp::Put {
                    key: b"a".to_vec(),
                    value: b"1".to_vec()
                },
                BatchOp::Delete { key: b"b".to_vec() },
                BatchOp::Rename {
                    src: b"a".to_vec(),
                    dst: b"c".to_vec(),
                    force: true
                },
            ]
        );
    }
}
