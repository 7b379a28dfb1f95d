//! The HybridLatch: one per cached frame (DESIGN.md §6).
//!
//! Three modes share one 16-byte latch (its owner decides its cache line:
//! `buffer::CachedBlob` keeps it beside the fields a reader reads with it):
//!
//! * **optimistic** — [`HybridLatch::optimistic`] returns the current
//!   version (waiting while a writer holds the latch); the reader then reads
//!   frame bytes without any lock and calls [`HybridLatch::validate`]. A
//!   changed version means a writer overlapped the read: the reader discards
//!   everything it read and restarts ([`Restart`]). Nothing read under an
//!   optimistic version may be trusted, returned or acted upon before it
//!   validates (*copy, then validate*).
//! * **shared** — a reader count; excludes writers, admits other readers.
//! * **exclusive** — the version word is odd while held; release bumps it
//!   by two, which fails every optimistic read that overlapped the write.
//!
//! # Why racy reads are not undefined behaviour
//! Optimistic readers and an exclusive writer touch the same frame bytes at
//! the same time. Plain loads and stores would be a data race, which Rust
//! (like C++) makes undefined even if the result is discarded. So frame
//! memory is an array of `AtomicU64` words (see `frame::mem`) and every
//! access is a relaxed atomic load or store: racy, but defined. Ordering is
//! the seqlock discipline: the writer makes the version odd and then issues
//! a release fence before its data stores; the reader issues an acquire
//! fence after its data loads and before re-reading the version. If the
//! reader saw any store of the writer, fence-to-fence synchronisation makes
//! it see the odd (or later) version and fail validation.
//!
//! # Starvation
//! A writer makes the version odd *before* it waits for shared holders to
//! leave, so new readers queue behind it and a stream of readers cannot
//! starve it. Every wait uses [`Backoff`]: spin, yield, then short sleeps.
//!
//! This file is compiled twice: by the engine, and by `holt-loom-tests`
//! against loom (through `super::sync`). Deliberate bugs for the models are
//! switched by `super::mutation`.

use super::mutation;
use super::sync::{fence, AtomicU64, Backoff, Ordering};

/// A failed optimistic validation: the caller must discard what it read
/// and start again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restart;

/// Version word plus shared-holder count; see the module docs. Not
/// padded to a cache line of its own: an optimistic reader reads the
/// version together with fields of the latch's owner, so the owner lays
/// them out in one line (`buffer::CachedBlob`).
#[derive(Debug)]
pub(crate) struct HybridLatch {
    /// Even: unlocked. Odd: exclusively held. Bumped by 2 per exclusive
    /// critical section.
    version: AtomicU64,
    /// Number of shared holders.
    shared: AtomicU64,
}

impl Default for HybridLatch {
    fn default() -> Self {
        Self::new()
    }
}

impl HybridLatch {
    pub(crate) fn new() -> Self {
        Self {
            version: AtomicU64::new(0),
            shared: AtomicU64::new(0),
        }
    }

    /// Starts an optimistic read: waits while a writer holds the latch and
    /// returns the (even) version to validate against later.
    pub(crate) fn optimistic(&self) -> u64 {
        let mut backoff = Backoff::default();
        loop {
            let v = self.version.load(Ordering::Acquire);
            if v & 1 == 0 {
                return v;
            }
            backoff.snooze();
        }
    }

    /// Starts an optimistic read without waiting: `Err(Restart)` while a
    /// writer holds the latch.
    #[allow(dead_code)] // used by the loom models and writers that upgrade
    pub(crate) fn try_optimistic(&self) -> Result<u64, Restart> {
        let v = self.version.load(Ordering::Acquire);
        if v & 1 == 0 {
            Ok(v)
        } else {
            Err(Restart)
        }
    }

    /// Ends an optimistic read: `Ok` iff no writer entered since
    /// `version` was taken.
    pub(crate) fn validate(&self, version: u64) -> Result<(), Restart> {
        if !mutation::LATCH_WEAK_VALIDATE {
            fence(Ordering::Acquire);
        }
        if self.version.load(Ordering::Relaxed) == version {
            Ok(())
        } else {
            Err(Restart)
        }
    }

    /// The current version word (odd while exclusively held).
    #[allow(dead_code)] // used by the loom models and writers that upgrade
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Takes the latch exclusively, waiting for other writers and for
    /// shared holders to leave.
    pub(crate) fn lock_exclusive(&self) -> ExclusiveGuard<'_> {
        let mut backoff = Backoff::default();
        loop {
            let v = self.version.load(Ordering::Relaxed);
            if v & 1 == 0
                && self
                    .version
                    .compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                self.enter_exclusive();
                return ExclusiveGuard {
                    latch: self,
                    version: v,
                };
            }
            backoff.snooze();
        }
    }

    /// Turns an optimistic read into an exclusive hold if nothing changed
    /// since `version`; otherwise `Err(Restart)`.
    #[allow(dead_code)] // used by the loom models and writers that upgrade
    pub(crate) fn try_upgrade(&self, version: u64) -> Result<ExclusiveGuard<'_>, Restart> {
        if version & 1 != 0 {
            return Err(Restart);
        }
        match self.version.compare_exchange(
            version,
            version + 1,
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                self.enter_exclusive();
                Ok(ExclusiveGuard {
                    latch: self,
                    version,
                })
            }
            Err(_) => Err(Restart),
        }
    }

    /// Takes the latch exclusively only if nobody holds it in any mode:
    /// never waits. Returns the even version for
    /// [`HybridLatch::unlock_exclusive_raw`]. For eviction, which must not
    /// block behind a reader or a writer and simply picks another victim.
    ///
    /// A refusal after the version went odd still releases with a bump:
    /// optimistic readers that overlapped it restart, which is harmless.
    #[allow(dead_code)] // the loom build includes this file without eviction callers
    pub(crate) fn try_lock_exclusive(&self) -> Option<u64> {
        let v = self.version.load(Ordering::Relaxed);
        if v & 1 != 0
            || self
                .version
                .compare_exchange(v, v + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        // The same handshake as `enter_exclusive`, without the wait.
        fence(Ordering::SeqCst);
        if self.shared.load(Ordering::SeqCst) != 0 {
            self.release_exclusive(v);
            return None;
        }
        fence(Ordering::Release);
        Some(v)
    }

    /// After the version became odd: wait for shared holders to drain, then
    /// fence so no data store is ordered before the odd version.
    fn enter_exclusive(&self) {
        // Dekker handshake with `lock_shared`: the odd version must be
        // ordered before the shared-count load. A full fence states that
        // in a form loom can check (it models SeqCst accesses as AcqRel).
        fence(Ordering::SeqCst);
        let mut backoff = Backoff::default();
        while self.shared.load(Ordering::SeqCst) != 0 {
            backoff.snooze();
        }
        fence(Ordering::Release);
    }

    /// Takes the latch shared, waiting while a writer holds or awaits it.
    pub(crate) fn lock_shared(&self) -> SharedGuard<'_> {
        let mut backoff = Backoff::default();
        loop {
            if self.version.load(Ordering::Relaxed) & 1 == 0 {
                self.shared.fetch_add(1, Ordering::SeqCst);
                // The other half of the handshake in `enter_exclusive`.
                fence(Ordering::SeqCst);
                if mutation::LATCH_SHARED_IGNORES_WRITER
                    || self.version.load(Ordering::SeqCst) & 1 == 0
                {
                    return SharedGuard { latch: self };
                }
                self.shared.fetch_sub(1, Ordering::SeqCst);
            }
            backoff.snooze();
        }
    }

    /// Takes the latch exclusively without a guard and returns the even
    /// version to hand back to [`HybridLatch::unlock_exclusive_raw`]. For
    /// owners that keep the latch alongside an `Arc` of its frame.
    pub(crate) fn lock_exclusive_raw(&self) -> u64 {
        let g = self.lock_exclusive();
        let v = g.version;
        std::mem::forget(g);
        v
    }

    /// Releases a hold taken by [`HybridLatch::lock_exclusive_raw`].
    pub(crate) fn unlock_exclusive_raw(&self, version: u64) {
        self.release_exclusive(version);
    }

    /// Takes the latch shared without a guard; pair with
    /// [`HybridLatch::unlock_shared_raw`].
    pub(crate) fn lock_shared_raw(&self) {
        std::mem::forget(self.lock_shared());
    }

    /// Releases a hold taken by [`HybridLatch::lock_shared_raw`].
    pub(crate) fn unlock_shared_raw(&self) {
        self.shared.fetch_sub(1, Ordering::Release);
    }

    fn release_exclusive(&self, version: u64) {
        let next = if mutation::LATCH_SKIP_VERSION_BUMP {
            version
        } else {
            version + 2
        };
        self.version.store(next, Ordering::Release);
    }
}

/// Exclusive hold of a [`HybridLatch`]; releasing bumps the version.
#[derive(Debug)]
pub(crate) struct ExclusiveGuard<'a> {
    latch: &'a HybridLatch,
    /// The even version the latch had when this guard took it.
    version: u64,
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        self.latch.release_exclusive(self.version);
    }
}

/// Shared hold of a [`HybridLatch`].
#[derive(Debug)]
pub(crate) struct SharedGuard<'a> {
    latch: &'a HybridLatch,
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.latch.shared.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn optimistic_validates_without_writer() {
        let l = HybridLatch::new();
        let v = l.optimistic();
        assert_eq!(l.validate(v), Ok(()));
    }

    #[test]
    fn exclusive_release_fails_overlapping_optimistic_read() {
        let l = HybridLatch::new();
        let v = l.optimistic();
        drop(l.lock_exclusive());
        assert_eq!(l.validate(v), Err(Restart));
        let v2 = l.optimistic();
        assert_eq!(v2, v + 2);
    }

    #[test]
    fn try_optimistic_refuses_while_locked() {
        let l = HybridLatch::new();
        let g = l.lock_exclusive();
        assert_eq!(l.try_optimistic(), Err(Restart));
        assert_eq!(l.version() & 1, 1);
        drop(g);
        assert!(l.try_optimistic().is_ok());
    }

    #[test]
    fn try_lock_exclusive_refuses_any_holder_and_bumps_on_success() {
        let l = HybridLatch::new();
        let s = l.lock_shared();
        let v = l.optimistic();
        assert_eq!(l.try_lock_exclusive(), None, "a shared holder is inside");
        drop(s);
        assert_eq!(l.version() & 1, 0, "a refusal leaves the latch unlocked");
        let g = l.lock_exclusive();
        assert_eq!(l.try_lock_exclusive(), None, "a writer is inside");
        drop(g);
        let w = l.try_lock_exclusive().expect("free latch");
        assert_eq!(l.version() & 1, 1);
        l.unlock_exclusive_raw(w);
        assert!(l.validate(v).is_err(), "overlapping readers restart");
    }

    #[test]
    fn upgrade_succeeds_only_on_unchanged_version() {
        let l = HybridLatch::new();
        let v = l.optimistic();
        let g = l.try_upgrade(v).expect("unchanged");
        drop(g);
        assert!(l.try_upgrade(v).is_err());
        let v = l.optimistic();
        assert!(l.try_upgrade(v).is_ok());
    }

    #[test]
    fn shared_holders_coexist_and_shared_does_not_bump() {
        let l = HybridLatch::new();
        let v = l.optimistic();
        let a = l.lock_shared();
        let b = l.lock_shared();
        drop(a);
        drop(b);
        assert_eq!(l.validate(v), Ok(()));
    }

    #[test]
    fn writer_waits_for_shared_holder() {
        let l = Arc::new(HybridLatch::new());
        let g = l.lock_shared();
        let entered = Arc::new(AtomicBool::new(false));
        let t = {
            let l = Arc::clone(&l);
            let entered = Arc::clone(&entered);
            std::thread::spawn(move || {
                let _x = l.lock_exclusive();
                entered.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!entered.load(std::sync::atomic::Ordering::SeqCst));
        drop(g);
        t.join().expect("writer thread");
        assert!(entered.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn exclusive_is_mutually_exclusive_under_threads() {
        let l = Arc::new(HybridLatch::new());
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = Arc::clone(&l);
                let c = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _g = l.lock_exclusive();
                        // Non-atomic read-modify-write split in two: only
                        // mutual exclusion keeps the count exact.
                        let x = c.load(std::sync::atomic::Ordering::Relaxed);
                        c.store(x + 1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 40_000);
    }
}
