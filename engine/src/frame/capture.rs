//! Copy-on-write checkpoint captures, page by page (DESIGN.md §8 step 2).
//!
//! A checkpoint round picks its cut P under the commit gate, drains the
//! dirty map and *arms* the [`CaptureSlot`] of every drained frame with an
//! empty image buffer. No frame is copied under the gate. Afterwards each
//! page of an armed frame's image is filled exactly once with the page as
//! of P:
//!
//! - by the first store into that page: every store to frame memory goes
//!   through `AtomicFrame`'s store funnel (`frame/mem.rs`), which calls
//!   [`CaptureSlot::save`] for the pages it is about to change, under the
//!   frame's exclusive latch, before changing a byte;
//! - otherwise by the round, under the frame's shared latch
//!   ([`capture_shared`]): every page no store saved.
//!
//! The image is P's because arming happens while the gate keeps every
//! writer out (all exclusive latch holders hold the gate, shared or
//! exclusive), and afterwards no page changes before a store has saved
//! it. A page's bit in the slot's bitmap records that it is filled; the
//! bitmap is read and set under the slot's mutex, and the latch keeps the
//! round's fill and a writer's save apart, so no page is filled twice and
//! the round never copies a page a writer is changing. A writer therefore
//! pays for the pages it touches (a 1 KiB copy each, typically the header
//! page and one or two more), not for a whole 512 KiB frame.
//!
//! The round takes the image with [`CaptureSlot::take`] (its own round id
//! only) and, on any failure, [`CaptureSlot::disarm`]s every slot it
//! armed, so an armed slot never outlives its round; at most one round is
//! in flight (`round_lock`). The fast path of [`CaptureSlot::save`] is
//! one atomic load of the arm word (0: nothing pending).
//!
//! This file is compiled against loom by `holt-loom-tests` (model 7,
//! `cow_vs_capture`), generic over the image type and the page count so
//! the model can use a small one.

use super::super::latch::HybridLatch;
use super::super::mutation;
use super::super::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

/// Most pages a frame may have (one bit each in the filled bitmap).
pub(crate) const MAX_PAGES: usize = 512;

/// Words of the filled bitmap.
const WORDS: usize = MAX_PAGES / 64;

/// Page `p`'s word and bit in the filled bitmap.
const fn bit(p: usize) -> (usize, u64) {
    (p / 64, 1 << (p % 64))
}

#[derive(Debug)]
enum State<I> {
    Idle,
    /// Waiting for the image as of the cut: the buffer being filled and
    /// the pages already in it (bit `p` = page `p`).
    Armed {
        buf: I,
        filled: [u64; WORDS],
    },
    /// Every page filled; waiting for the round to take it.
    Captured(I),
}

/// One frame's pending checkpoint capture (see the module docs).
#[derive(Debug)]
pub(crate) struct CaptureSlot<I> {
    /// The round whose capture is pending (0: none). Read without the
    /// mutex by every store; changed only under the mutex.
    armed: AtomicU64,
    /// Mirror of the armed state's filled bitmap (64 pages a word),
    /// so a store into pages already saved skips the mutex. Set under the
    /// mutex; read by the exclusive latch holder, which the latch orders
    /// after every earlier holder's sets.
    filled: [AtomicU64; WORDS],
    /// The round id the state belongs to, and the state.
    state: Mutex<(u64, State<I>)>,
}

impl<I> Default for CaptureSlot<I> {
    fn default() -> Self {
        Self {
            armed: AtomicU64::new(0),
            filled: std::array::from_fn(|_| AtomicU64::new(0)),
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
        let old = std::mem::replace(
            &mut *g,
            (
                round,
                State::Armed {
                    buf,
                    filled: [0; WORDS],
                },
            ),
        );
        for word in &self.filled {
            word.store(0, Ordering::Relaxed);
        }
        self.armed.store(round, Ordering::Release);
        match old.1 {
            State::Idle => None,
            State::Armed { buf, .. } | State::Captured(buf) => Some(buf),
        }
    }

    /// `f` of the buffer an armed slot is filling (tests: what the round
    /// armed it with).
    #[cfg(test)]
    pub(crate) fn with_armed_buf<R>(&self, f: impl FnOnce(&I) -> R) -> Option<R> {
        match &self.lock().1 {
            State::Armed { buf, .. } => Some(f(buf)),
            State::Idle | State::Captured(_) => None,
        }
    }

    /// True while a capture is pending.
    #[cfg(test)]
    pub(crate) fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire) != 0
    }

    /// A store is about to change pages `first..=last`: if a capture is
    /// pending, each of them not yet filled is filled now by `fill(buf,
    /// page)`, which copies the page as it still is. The caller holds the
    /// frame's exclusive latch.
    #[inline]
    pub(crate) fn save(&self, first: usize, last: usize, fill: impl FnMut(&mut I, usize)) {
        if mutation::COW_SKIPPED || self.armed.load(Ordering::Acquire) == 0 {
            return;
        }
        if self.all_filled(first, last) {
            return;
        }
        self.save_slow(first, last, fill);
    }

    /// True if the mirror says pages `first..=last` are all saved.
    fn all_filled(&self, first: usize, last: usize) -> bool {
        (first..=last.min(MAX_PAGES - 1)).all(|p| {
            let (w, b) = bit(p);
            self.filled[w].load(Ordering::Relaxed) & b != 0
        })
    }

    #[cold]
    fn save_slow(&self, first: usize, last: usize, mut fill: impl FnMut(&mut I, usize)) {
        let mut g = self.lock();
        if let State::Armed { buf, filled } = &mut g.1 {
            for p in first..=last.min(MAX_PAGES - 1) {
                let (w, b) = bit(p);
                if filled[w] & b == 0 {
                    fill(buf, p);
                    filled[w] |= b;
                    self.filled[w].store(filled[w], Ordering::Relaxed);
                }
            }
        }
    }

    /// Fills every page of the armed buffer that no store saved (`pages`
    /// in all) and marks the capture complete; returns the number of
    /// pages filled here, or `None` if the slot was not armed. The caller
    /// holds the frame's latch (shared), so no page changes meanwhile.
    pub(crate) fn capture(
        &self,
        pages: usize,
        mut fill: impl FnMut(&mut I, usize),
    ) -> Option<usize> {
        if self.armed.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut g = self.lock();
        let (round, state) = std::mem::replace(&mut *g, (0, State::Idle));
        match state {
            State::Armed { mut buf, filled } => {
                let mut n = 0;
                for p in 0..pages.min(MAX_PAGES) {
                    let (w, b) = bit(p);
                    if mutation::CAPTURE_IGNORES_SAVED || filled[w] & b == 0 {
                        fill(&mut buf, p);
                        n += 1;
                    }
                }
                *g = (round, State::Captured(buf));
                self.armed.store(0, Ordering::Release);
                Some(n)
            }
            other => {
                *g = (round, other);
                None
            }
        }
    }

    /// The image captured for `round`, leaving the slot idle; `None` if
    /// the slot holds no completed image of that round.
    pub(crate) fn take(&self, round: u64) -> Option<I> {
        let mut g = self.lock();
        if g.0 != round || !matches!(g.1, State::Captured(_)) {
            return None;
        }
        match std::mem::replace(&mut *g, (0, State::Idle)).1 {
            State::Captured(buf) => Some(buf),
            State::Idle | State::Armed { .. } => None,
        }
    }

    /// Ends whatever capture is pending or uncollected: the slot goes
    /// idle and its buffer, if any, is returned (for reuse).
    pub(crate) fn disarm(&self) -> Option<I> {
        let mut g = self.lock();
        self.armed.store(0, Ordering::Release);
        match std::mem::replace(&mut *g, (0, State::Idle)).1 {
            State::Idle => None,
            State::Armed { buf, .. } | State::Captured(buf) => Some(buf),
        }
    }
}

/// The round's capture of one armed frame: under the shared latch, fills
/// the pages no store saved, then takes the image of `round`. `None` only
/// if the slot was not armed for `round` (a bug).
pub(crate) fn capture_shared<I>(
    latch: &HybridLatch,
    slot: &CaptureSlot<I>,
    round: u64,
    pages: usize,
    fill: impl FnMut(&mut I, usize),
) -> Option<I> {
    latch.lock_shared_raw();
    slot.capture(pages, fill);
    latch.unlock_shared_raw();
    slot.take(round)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A 4-page "frame" of one byte per page.
    fn fill_from(frame: &[u8; 4]) -> impl FnMut(&mut [u8; 4], usize) + '_ {
        move |buf, p| buf[p] = frame[p]
    }

    #[test]
    fn each_page_is_filled_once_as_of_the_cut() {
        let s = CaptureSlot::<[u8; 4]>::default();
        let mut frame = [1u8, 2, 3, 4];
        s.save(0, 3, fill_from(&frame));
        assert_eq!(s.capture(4, fill_from(&frame)), None, "idle slot");
        assert_eq!(s.arm(7, [0; 4]), None);
        assert!(s.is_armed());
        // A store to pages 1..=2 saves them first, then changes them.
        s.save(1, 2, fill_from(&frame));
        frame[1] = 20;
        frame[2] = 30;
        s.save(2, 2, fill_from(&frame)); // already saved: not refilled
        frame[2] = 31;
        assert_eq!(s.capture(4, fill_from(&frame)), Some(2), "pages 0 and 3");
        assert!(!s.is_armed());
        s.save(0, 0, fill_from(&frame)); // after the capture: no effect
        assert_eq!(s.take(6), None, "another round's take gets nothing");
        assert_eq!(s.take(7), Some([1, 2, 3, 4]));
        assert_eq!(s.take(7), None);
    }

    /// Every page up to [`MAX_PAGES`] has its own bit: pages past the
    /// first 128 (a frame has 512 of 1 KiB) are saved once, not refilled
    /// by a later save or by the capture, and do not stand in for
    /// another page. Deliberate bug caught: a bitmap of 128 bits (`bit`
    /// taking `p % 128`, as the `u128` had), under which page 128 reads
    /// as saved once page 0 is, so a store into it would go unsaved.
    #[test]
    fn every_page_has_its_own_bit() {
        const N: usize = MAX_PAGES;
        let s = CaptureSlot::<Vec<u8>>::default();
        let mut frame: Vec<u8> = (0..N).map(|p| (p % 251) as u8).collect();
        let fill = |frame: &Vec<u8>| {
            let frame = frame.clone();
            move |buf: &mut Vec<u8>, p: usize| {
                assert_eq!(buf[p], 0, "page {p} filled twice");
                buf[p] = frame[p].wrapping_add(1);
            }
        };
        s.arm(1, vec![0; N]);
        let stored = [0, 63, 64, 127, 128, 129, 300, N - 1];
        for &p in &stored {
            s.save(p, p, fill(&frame));
            frame[p] = 0xEE;
            s.save(p, p, fill(&frame)); // saved already: not refilled
        }
        assert_eq!(s.capture(N, fill(&frame)), Some(N - stored.len()));
        let img = s.take(1).unwrap();
        let want: Vec<u8> = (0..N).map(|p| (p % 251) as u8 + 1).collect();
        assert_eq!(img, want, "every page as of the arming");
    }

    #[test]
    fn disarm_returns_the_buffer_and_stops_saves() {
        let s = CaptureSlot::<[u8; 4]>::default();
        let frame = [9u8; 4];
        s.arm(1, [0; 4]);
        s.save(0, 0, fill_from(&frame));
        assert_eq!(s.disarm(), Some([9, 0, 0, 0]));
        assert!(!s.is_armed());
        s.save(1, 1, fill_from(&frame));
        assert_eq!(s.capture(4, fill_from(&frame)), None);
        s.arm(2, [0; 4]);
        s.capture(4, fill_from(&frame));
        assert_eq!(s.disarm(), Some([9; 4]), "an uncollected image too");
        assert_eq!(s.disarm(), None);
    }

    #[test]
    fn capture_shared_takes_the_round_image() {
        let latch = HybridLatch::new();
        let s = CaptureSlot::<[u8; 4]>::default();
        let frame = [5u8; 4];
        s.arm(3, [0; 4]);
        assert_eq!(capture_shared(&latch, &s, 2, 4, fill_from(&frame)), None);
        assert_eq!(s.disarm(), Some([5; 4]), "captured, but for round 3");
        s.arm(3, [0; 4]);
        assert_eq!(
            capture_shared(&latch, &s, 3, 4, fill_from(&frame)),
            Some([5; 4])
        );
    }
}
