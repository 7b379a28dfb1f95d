//! The append buffer: [`Wal::append`] encodes a record into the shared
//! buffer under the mutex; a leader takes the buffer whole to write it
//! out ([`swap_out`]), leaving the spare for appends meanwhile, and hands
//! it back emptied ([`recycle`]), so appends and drains do not allocate.

use std::sync::atomic::Ordering;

use super::{State, Wal};
use crate::api::errors::{Error, Result};
use crate::wal::record::{self, OpRef};

/// Buffered mode writes the buffer out once it reaches this size.
pub(crate) const DRAIN_AT: usize = 64 * 1024;

/// A write buffer with room reserved for the batch marker at its front.
pub(super) fn fresh_buf() -> Vec<u8> {
    let mut b = Vec::with_capacity(DRAIN_AT * 2);
    b.resize(record::MARKER_LEN, 0);
    b
}

/// Takes the records to write out, leaving the spare buffer (or a fresh
/// one) for appends meanwhile.
pub(super) fn swap_out(st: &mut State) -> Vec<u8> {
    let next = if st.spare.capacity() > 0 {
        std::mem::take(&mut st.spare)
    } else {
        fresh_buf()
    };
    std::mem::replace(&mut st.buf, next)
}

/// After `buf` was written: emptied, it becomes the spare — or the live
/// buffer again if nothing was appended meanwhile and it is the larger.
pub(super) fn recycle(st: &mut State, mut buf: Vec<u8>) {
    buf.truncate(record::MARKER_LEN);
    if st.buf.len() == record::MARKER_LEN && buf.capacity() > st.buf.capacity() {
        std::mem::swap(&mut st.buf, &mut buf);
    }
    if buf.capacity() > st.spare.capacity() {
        st.spare = buf;
    }
}

impl Wal {
    /// Appends one record and returns its seq. In buffered mode the
    /// buffer is written out (without sync) once it passes [`DRAIN_AT`].
    pub(crate) fn append(&self, ops: &[OpRef<'_>], buffered: bool) -> Result<u64> {
        let (seq, drain) = {
            let mut st = self.lock();
            if st.poisoned {
                return Err(Error::Poisoned);
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            let len = st.buf.len();
            record::encode(seq, ops, &mut st.buf);
            st.appended += (st.buf.len() - len) as u64;
            (seq, buffered && st.buf.len() >= DRAIN_AT && !st.leader)
        };
        self.counters.records.fetch_add(1, Ordering::Relaxed);
        if drain {
            self.drain(seq, false)?;
        }
        Ok(seq)
    }
}
