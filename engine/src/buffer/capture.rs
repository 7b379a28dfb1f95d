//! Copy-on-write checkpoint captures (DESIGN.md §8 step 2).
//!
//! A checkpoint round picks its cut P under the commit gate, drains the
//! dirty map and *arms* the [`CaptureSlot`] of every drained frame with an
//! empty image buffer. No frame is copied under the gate. Afterwards
//! exactly one party fills each armed slot with the frame's image as of P:
//!
//! - the first exclusive holder of the frame's latch, before it changes a
//!   byte: [`lock_for_write`] is the one place exclusive access begins
//!   (`FrameWrite::lock` calls it, and every edit, spill, merge, retire and
//!   unlink goes through `FrameWrite`);
//! - otherwise the round itself, under the frame's shared latch
//!   ([`capture_shared`]).
//!
//! The image is P's because arming happens while the gate keeps every
//! writer out (all exclusive latch holders hold the gate, shared or
//! exclusive), and afterwards no byte of the frame changes until an
//! exclusive holder has passed [`lock_for_write`], which fills the slot
//! first. Who fills it is decided under the slot's mutex, and the filler
//! leaves the slot `Captured`, so a second holder finds nothing to do:
//! one capture per armed slot. The round takes the image with
//! [`CaptureSlot::take`] (its own round id only) and, on any failure,
//! [`CaptureSlot::disarm`]s every slot it armed, so an armed slot never
//! outlives its round; at most one round is in flight (`round_lock`).
//!
//! The fast path of [`lock_for_write`] is one atomic load of the arm
//! word (0: nothing pending); the mutex is taken only while a slot is
//! armed.
//!
//! This file is compiled against loom by `holt-loom-tests` (model 7,
//! `cow_vs_capture`), generic over the image type so the model can use a
//! small one.

use super::super::latch::HybridLatch;
use super::super::mutation;
use super::super::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

#[derive(Debug)]
enum State<I> {
    Idle,
    /// Waiting for the image as of the cut; holds the buffer to fill.
    Armed(I),
    /// Filled by a writer or by the round; waiting for the round to take it.
    Captured(I),
}

/// One frame's pending checkpoint capture (see the module docs).
#[derive(Debug)]
pub(crate) struct CaptureSlot<I> {
    /// The round whose capture is pending (0: none). Read without the
    /// mutex by every exclusive entry; changed only under the mutex.
    armed: AtomicU64,
    /// The round id the state belongs to, and the state.
    state: Mutex<(u64, State<I>)>,
}

impl<I> Default for CaptureSlot<I> {
    fn default() -> Self {
        Self {
            armed: AtomicU64::new(0),
            state: Mutex::new((0, State::Idle)),
        }
    }
}

impl<I> CaptureSlot<I> {
    fn lock(&self) -> MutexGuard<'_, (u64, State<I>)> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Arms the slot for `round` (nonzero) with `buf` to fill. Called
    /// under the commit gate, so no exclusive holder is inside the frame.
    /// Returns whatever buffer an earlier round left behind (none unless
    /// that round skipped its `disarm`).
    pub(crate) fn arm(&self, round: u64, buf: I) -> Option<I> {
        debug_assert_ne!(round, 0, "round 0 means unarmed");
        let mut g = self.lock();
        let old = std::mem::replace(&mut *g, (round, State::Armed(buf)));
        self.armed.store(round, Ordering::Release);
        match old.1 {
            State::Idle => None,
            State::Armed(b) | State::Captured(b) => Some(b),
        }
    }

    /// True while a capture is pending.
    #[cfg(test)]
    pub(crate) fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire) != 0
    }

    /// Fills the armed buffer with `fill` if the slot is still armed, and
    /// returns true if this call did. The caller holds the frame's latch
    /// (exclusive before an edit, or shared) so the frame does not change
    /// while `fill` copies it.
    pub(crate) fn capture(&self, fill: impl FnOnce(&mut I)) -> bool {
        if self.armed.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut g = self.lock();
        let (round, state) = std::mem::replace(&mut *g, (0, State::Idle));
        match state {
            State::Armed(mut buf) => {
                fill(&mut buf);
                *g = (round, State::Captured(buf));
                if !mutation::CAPTURE_TRUSTS_FLAG {
                    self.armed.store(0, Ordering::Release);
                }
                true
            }
            State::Captured(mut buf) if mutation::CAPTURE_TRUSTS_FLAG => {
                // The deliberate bug: the arm word alone decides, and it
                // is cleared only when the round takes the image.
                fill(&mut buf);
                *g = (round, State::Captured(buf));
                true
            }
            other => {
                *g = (round, other);
                false
            }
        }
    }

    /// The image captured for `round`, leaving the slot idle; `None` if
    /// the slot holds no captured image of that round.
    pub(crate) fn take(&self, round: u64) -> Option<I> {
        let mut g = self.lock();
        if g.0 != round || !matches!(g.1, State::Captured(_)) {
            return None;
        }
        let (_, state) = std::mem::replace(&mut *g, (0, State::Idle));
        if mutation::CAPTURE_TRUSTS_FLAG {
            self.armed.store(0, Ordering::Release);
        }
        match state {
            State::Captured(buf) => Some(buf),
            State::Idle | State::Armed(_) => None,
        }
    }

    /// Ends whatever capture is pending or uncollected: the slot goes
    /// idle and its buffer, if any, is returned (for reuse).
    pub(crate) fn disarm(&self) -> Option<I> {
        let mut g = self.lock();
        self.armed.store(0, Ordering::Release);
        match std::mem::replace(&mut *g, (0, State::Idle)).1 {
            State::Idle => None,
            State::Armed(b) | State::Captured(b) => Some(b),
        }
    }
}

/// The one entry to exclusive access of a frame (`FrameWrite::lock`):
/// takes the exclusive latch, then, if a checkpoint capture is pending,
/// fills it with the frame's current image (`fill`) before the caller can
/// change anything. Returns the latch version for the unlock.
pub(crate) fn lock_for_write<I>(
    latch: &HybridLatch,
    slot: &CaptureSlot<I>,
    fill: impl FnOnce(&mut I),
) -> u64 {
    let version = latch.lock_exclusive_raw();
    if !mutation::COW_SKIPPED {
        slot.capture(fill);
    }
    version
}

/// The round's capture of one armed frame: under the shared latch, fills
/// the slot unless a writer already did, then takes the image of `round`.
/// `None` only if the slot was not armed for `round` (a bug).
pub(crate) fn capture_shared<I>(
    latch: &HybridLatch,
    slot: &CaptureSlot<I>,
    round: u64,
    fill: impl FnOnce(&mut I),
) -> Option<I> {
    latch.lock_shared_raw();
    slot.capture(fill);
    latch.unlock_shared_raw();
    slot.take(round)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn one_capture_per_arm_and_only_for_its_round() {
        let s = CaptureSlot::<Vec<u8>>::default();
        assert!(!s.capture(|b| b.push(1)), "idle slot captures nothing");
        assert_eq!(s.arm(7, Vec::new()), None);
        assert!(s.is_armed());
        assert!(s.capture(|b| b.push(1)));
        assert!(!s.is_armed());
        assert!(!s.capture(|b| b.push(2)), "second capture must not refill");
        assert_eq!(s.take(6), None, "another round's take gets nothing");
        assert_eq!(s.take(7), Some(vec![1]));
        assert_eq!(s.take(7), None);
    }

    #[test]
    fn disarm_returns_the_buffer_and_stops_captures() {
        let s = CaptureSlot::<Vec<u8>>::default();
        s.arm(1, vec![9]);
        assert_eq!(s.disarm(), Some(vec![9]));
        assert!(!s.is_armed());
        assert!(!s.capture(|b| b.push(1)));
        s.arm(2, Vec::new());
        s.capture(|b| b.push(3));
        assert_eq!(s.disarm(), Some(vec![3]), "an uncollected image too");
        assert_eq!(s.disarm(), None);
    }

    #[test]
    fn lock_for_write_copies_before_the_edit_and_round_gets_it() {
        let latch = HybridLatch::new();
        let s = CaptureSlot::<Vec<u8>>::default();
        let frame = std::cell::Cell::new(1u8);
        s.arm(3, Vec::new());
        let v = lock_for_write(&latch, &s, |b| b.push(frame.get()));
        frame.set(2); // the edit
        latch.unlock_exclusive_raw(v);
        let img = capture_shared(&latch, &s, 3, |b| b.push(frame.get()));
        assert_eq!(img, Some(vec![1]), "the round must get the pre-edit image");
    }
}
