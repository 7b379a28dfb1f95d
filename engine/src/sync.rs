//! Synchronisation primitives used by the latch and the buffer manager.
//!
//! Normally these are `std`'s. Under `cfg(loom)` they are loom's, so the
//! `holt-loom-tests` crate can compile the real latch and buffer-manager
//! code (it includes these files by path and sets `cfg(loom)` for itself)
//! and explore every interleaving. Code that must be model-checked takes
//! its atomics, locks and spin hints from here and nowhere else.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

/// One step of a busy wait. Under loom every wait must yield so the model
/// can schedule the thread that will end it.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Gives the core away: a thread that has spun for a while yields, and a
/// thread that has yielded for a while sleeps briefly (see [`Backoff`]).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Bounded exponential backoff for spin waits: spin, then yield, then
/// park the thread for growing (capped) intervals, so a waiter never burns
/// a core forever while the holder is descheduled.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    const SPIN_LIMIT: u32 = 6;
    const YIELD_LIMIT: u32 = 12;
    const MAX_SLEEP_US: u64 = 500;

    pub(crate) fn snooze(&mut self) {
        if self.step < Self::SPIN_LIMIT {
            for _ in 0..(1u32 << self.step) {
                spin_hint();
            }
        } else if self.step < Self::YIELD_LIMIT {
            yield_now();
        } else {
            #[cfg(not(loom))]
            {
                let us = (1u64 << (self.step - Self::YIELD_LIMIT).min(9)).min(Self::MAX_SLEEP_US);
                std::thread::sleep(std::time::Duration::from_micros(us));
            }
            #[cfg(loom)]
            loom::thread::yield_now();
        }
        self.step = self.step.saturating_add(1);
    }
}
