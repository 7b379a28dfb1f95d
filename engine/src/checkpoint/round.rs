//! The checkpoint round (DESIGN.md §8; docs/design.md "Checkpoint
//! round"): [`TreeInner::checkpoint_round`] makes a consistent cut of
//! the tree durable and lets the WAL go up to it. The background
//! checkpointer (`checkpoint`), the pressure rule (`checkpoint::pressure`),
//! `Tree::checkpoint`, recovery past a WAL gap and the last handle's close
//! all run it; `BufferManager`'s round steps (`buffer::round`) and
//! `Wal::rotate`/`release` (`wal::writer::rotation`) do the work.
//!
//! A round, one at a time (the buffer manager's round lock):
//! 1. **Prepare**, no gate: dirty frames out of key order are repacked
//!    (`Core::order_pass`, holding the gate shared like a writer) and
//!    image buffers made ready.
//! 2. **Cut**, commit gate exclusive: P = the last assigned WAL seq
//!    (writers log while holding the gate shared, so every record <= P is
//!    applied), the dirty and pending-delete maps drained (I3) and each
//!    drained frame's capture slot armed — no I/O and no frame copy. This
//!    relies on the gate rule (`TreeInner::gate`): no exclusive latch
//!    holder that stores into a frame is inside one while the cut arms it.
//! 3. With writers running again: capture the frames as of P (a store
//!    into an armed frame first saves the pages it changes), sync and
//!    rotate the WAL, write the images to free slots, persist the
//!    manifest (cut P), then release the retired WAL files whose records
//!    are all <= P (I2: their changes are in the manifest's frames now).
//!
//! Invariant owned here:
//! - **W2D**: a manifest that references the state at cut P becomes
//!   durable only after every frame image it names is synced and every
//!   WAL record <= P is synced (`Wal::rotate` returns only then, and the
//!   manifest is written after it); records above P stay on disk until a
//!   later manifest covers them. Recovery from any crash thus yields a
//!   prefix of the acknowledged operations (all of them with
//!   `wal_sync_on_commit(true)`).
//!
//! A failure disarms the slots and merges the drained entries back (I3),
//! leaves the previous manifest and all WAL files in force, and poisons
//! the tree unless the disk was full. Drained frames stay cached until
//! written (I1).
//!
//! Without a WAL (memory mode, caller backends) the same cut feeds
//! [`TreeInner::write_back`], which writes every image and persists
//! nothing else.

use std::sync::atomic::Ordering;

use crate::api::errors::{Error, Result};
use crate::api::tree::{read_gate, write_gate, TreeInner};
use crate::store::Backend;

/// What a checkpoint round did.
pub(crate) struct RoundOutcome {
    pub(crate) frames: usize,
    pub(crate) released_wal: bool,
}

fn is_disk_full(e: &Error) -> bool {
    matches!(e, Error::BackendIo(io) if io.kind() == std::io::ErrorKind::StorageFull)
}

impl TreeInner {
    /// One checkpoint round (see the module docs); without a WAL, a
    /// write-back of every dirty frame and pending delete, then a backend
    /// flush. Refused with [`Error::Poisoned`] once a round or an apply
    /// failed for good.
    pub(crate) fn checkpoint_round(&self) -> Result<RoundOutcome> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        let Some(d) = &self.durable else {
            let frames = self.write_back()?;
            self.core.bm.backend().flush()?;
            return Ok(RoundOutcome {
                frames,
                released_wal: false,
            });
        };
        let bm = &self.core.bm;
        let _serial = bm.round_lock();
        self.order_dirty()?;
        let images = bm.prepare_images();
        let (cut, mut round) = {
            let _g = write_gate(&self.gate);
            let cut = d.wal.cut();
            (cut, bm.begin_round(Some(cut), images))
        };
        let res = bm
            .capture_round(&mut round)
            .and_then(|()| d.wal.rotate(cut))
            .and_then(|()| bm.persist(&mut round))
            .and_then(|()| {
                d.store.set_checkpoint_meta(cut, cut);
                d.store.flush()
            });
        let frames = bm.finish_round(round, res.is_ok());
        match res {
            Ok(()) => {
                let released_wal = d.wal.release(cut);
                Ok(RoundOutcome {
                    frames,
                    released_wal,
                })
            }
            Err(e) => {
                if !is_disk_full(&e) {
                    self.poisoned.store(true, Ordering::Release);
                }
                Err(e)
            }
        }
    }

    /// No-WAL write-back: every dirty frame and pending delete goes to
    /// the backend. The same cut as a checkpoint round: under the commit
    /// gate only the drain and the arming, so the images form one
    /// consistent cut (a spill's parent and child frame are never written
    /// apart) while writers copy-on-write instead of waiting.
    pub(crate) fn write_back(&self) -> Result<usize> {
        let bm = &self.core.bm;
        let _serial = bm.round_lock();
        self.order_dirty()?;
        let images = bm.prepare_images();
        let mut round = {
            let _g = write_gate(&self.gate);
            bm.begin_round(None, images)
        };
        let res = bm
            .capture_round(&mut round)
            .and_then(|()| bm.persist(&mut round));
        let frames = bm.finish_round(round, res.is_ok());
        res.map(|()| frames)
    }

    /// Before a round's cut (round lock held): dirty frames whose nodes
    /// have drifted out of key order are repacked, so the round writes
    /// them ordered and scans read them front to back
    /// (`Core::order_pass`). Holds the commit gate shared, like a writer.
    fn order_dirty(&self) -> Result<()> {
        let _g = read_gate(&self.gate);
        self.core.order_pass().map(|_| ())
    }
}

#[cfg(test)]
#[path = "round_tests.rs"]
mod tests;
