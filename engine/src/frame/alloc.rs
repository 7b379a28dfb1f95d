//! Space inside a frame: a bump allocator plus a gap counter.
//!
//! Nodes are allocated at the bump pointer. A freed node at the very end
//! of the allocated area moves the bump pointer back; any other freed node
//! adds to `gap`. When a write needs more room than the tail has but the
//! gaps would cover it, the walker repacks the frame (see
//! `frame::copy::repack`), which turns all gaps back into tail room.

use super::header::{self, OFF_BUMP, OFF_GAP, OFF_NODES};
use super::mem::{AtomicFrame, Corrupt, FResult};
use super::node::pad8;
use crate::store::FRAME_SIZE;

/// Allocates `size` bytes (rounded up to 8) at the tail; `None` if the
/// tail is too short.
pub(crate) fn alloc(f: &AtomicFrame, size: usize) -> FResult<Option<usize>> {
    let size = pad8(size);
    let bump = header::bump(f)? as usize;
    if bump + size > FRAME_SIZE {
        return Ok(None);
    }
    f.set_u32(OFF_BUMP, (bump + size) as u32)?;
    header::add(f, OFF_NODES, 1)?;
    Ok(Some(bump))
}

/// Allocates or reports the shortfall as corruption: for callers that
/// reserved room beforehand.
pub(crate) fn alloc_reserved(f: &AtomicFrame, size: usize) -> FResult<usize> {
    alloc(f, size)?.ok_or(Corrupt("frame ran out of reserved room"))
}

/// Returns a node's allocation to the frame.
pub(crate) fn free(f: &AtomicFrame, off: usize, size: usize) -> FResult<()> {
    let size = pad8(size);
    let bump = header::bump(f)? as usize;
    if off + size == bump {
        f.set_u32(OFF_BUMP, off as u32)?;
    } else {
        header::add(f, OFF_GAP, size as i64)?;
    }
    header::add(f, OFF_NODES, -1)
}

/// Contiguous room at the tail.
pub(crate) fn tail_room(f: &AtomicFrame) -> FResult<usize> {
    Ok(FRAME_SIZE.saturating_sub(header::bump(f)? as usize))
}

/// Room a repack would make available.
pub(crate) fn reclaimable(f: &AtomicFrame) -> FResult<usize> {
    Ok(tail_room(f)? + header::gap(f)? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::HEADER_SIZE;

    #[test]
    fn bump_gap_and_tail_reclaim() {
        let f = AtomicFrame::zeroed();
        header::init(&f, [1; 16], 0).unwrap();
        let a = alloc(&f, 20).unwrap().unwrap();
        let b = alloc(&f, 16).unwrap().unwrap();
        assert_eq!(a, HEADER_SIZE);
        assert_eq!(b, HEADER_SIZE + 24);
        free(&f, a, 20).unwrap();
        assert_eq!(header::gap(&f).unwrap(), 24);
        free(&f, b, 16).unwrap(); // tail: bump moves back
        assert_eq!(header::bump(&f).unwrap() as usize, HEADER_SIZE + 24);
        assert_eq!(reclaimable(&f).unwrap(), FRAME_SIZE - HEADER_SIZE);
        assert!(alloc(&f, FRAME_SIZE).unwrap().is_none());
        assert!(alloc_reserved(&f, FRAME_SIZE).is_err());
    }
}
