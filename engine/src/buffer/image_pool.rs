//! The pool of frame image buffers that checkpoint rounds capture into and
//! cold loads read into, kept between rounds so a round does not pay for
//! fresh allocations (page faults, zeroing, `munmap` shootdowns) under the
//! commit gate or against a concurrent writer.
//!
//! Two kinds of buffer live here. *Arena* buffers come from the backend
//! ([`Backend::alloc_frame_buf`]): on io_uring they are slots of the
//! driver's registered-buffer arena, which the data file writes with
//! `WRITE_FIXED` (no per-I/O page pinning). *Heap* buffers are plain
//! [`AlignedBlobBuf`]s. The rules:
//!
//! * **Reserved at the first round, not before.** The first
//!   [`ImagePool::for_round`] asks the backend to reserve as many frame
//!   buffers as the pool keeps ([`Backend::reserve_frame_bufs`]) — on
//!   io_uring that creates (and later registers) the arena, sized to that
//!   count. A tree that only loads frames never asks, so opening and cold
//!   loads never build or pin it. The answer is asked for once; when the
//!   backend has no such memory (or the kernel refused it) every fresh
//!   buffer is a heap one.
//! * **Rounds take arena buffers first.** [`ImagePool::for_round`] hands
//!   out pooled arena buffers ahead of heap ones (the round pops from the
//!   end of the list, where they are), then fresh buffers from the
//!   backend while it has arena slots free, then heap buffers.
//! * **Loads take heap buffers first** ([`ImagePool::take_one`]), so
//!   arena buffers stay for the next round; a load that finds only arena
//!   buffers uses one (its read goes out as `READ_FIXED`).
//! * **Bounded.** At most `keep` buffers stay pooled, arena ones first: a
//!   returned arena buffer displaces a pooled heap one when the pool is
//!   full, and heap buffers beyond the bound are freed. The pool never
//!   holds more memory than `keep` frames, as before the arena; arena
//!   buffers it lets go return to the arena (they stay allocated, as the
//!   arena is never freed).

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use crate::store::{AlignedBlobBuf, Backend};

/// Image buffers kept between rounds, by kind.
#[derive(Default)]
struct Pooled {
    /// Buffers from the backend's arena.
    arena: Vec<AlignedBlobBuf>,
    /// Plain heap buffers.
    heap: Vec<AlignedBlobBuf>,
}

impl Pooled {
    fn len(&self) -> usize {
        self.arena.len() + self.heap.len()
    }
}

/// See the module documentation.
pub(crate) struct ImagePool {
    /// The pooled buffers.
    pooled: Mutex<Pooled>,
    /// Most buffers kept (arena and heap together).
    keep: usize,
    /// The backend's answer to the reservation made at the first round:
    /// how many arena buffers it can hand out (0: none).
    reserved: OnceLock<usize>,
}

impl ImagePool {
    /// An empty pool keeping at most `keep` buffers.
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            pooled: Mutex::new(Pooled::default()),
            keep,
            reserved: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pooled> {
        self.pooled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Buffers for a round that will capture `n` frames, plus up to
    /// `slack` pooled ones for frames marked before the cut (fresh ones
    /// only up to `n`): pooled arena buffers, then fresh ones from the
    /// backend while its arena has slots, then pooled heap buffers, then
    /// fresh heap ones. Arena buffers come last in the list (the round
    /// pops from the end). Fresh buffers have every page touched, so
    /// neither the commit gate nor a writer's copy-on-write pays their
    /// page faults. The first call makes the backend reservation.
    pub(crate) fn for_round(
        &self,
        backend: &dyn Backend,
        n: usize,
        slack: usize,
    ) -> Vec<AlignedBlobBuf> {
        let reserved = *self
            .reserved
            .get_or_init(|| backend.reserve_frame_bufs(self.keep));
        let want = n.saturating_add(slack);
        let mut arena = {
            let mut pooled = self.lock();
            let at = pooled.arena.len() - pooled.arena.len().min(want);
            pooled.arena.split_off(at)
        };
        let mut heap = Vec::new();
        // Fresh arena buffers before pooled heap ones: a round's writes
        // should all be fixed while the arena has slots. The backend's
        // first plain buffer means its arena is out of slots.
        while reserved > 0 && arena.len() < n {
            let buf = touched(backend.alloc_frame_buf());
            if buf.is_from_arena() {
                arena.push(buf);
            } else {
                heap.push(buf);
                break;
            }
        }
        {
            let mut pooled = self.lock();
            let have = arena.len() + heap.len();
            let take = pooled.heap.len().min(want.saturating_sub(have));
            let at = pooled.heap.len() - take;
            heap.append(&mut pooled.heap.split_off(at));
        }
        while arena.len() + heap.len() < n {
            heap.push(touched(AlignedBlobBuf::uninit()));
        }
        heap.append(&mut arena);
        heap
    }

    /// One buffer for a load: a pooled heap one, else a pooled arena one,
    /// else a fresh heap one.
    pub(crate) fn take_one(&self) -> AlignedBlobBuf {
        let pooled = {
            let mut pooled = self.lock();
            pooled.heap.pop().or_else(|| pooled.arena.pop())
        };
        pooled.unwrap_or_else(AlignedBlobBuf::uninit)
    }

    /// Takes `bufs` back, keeping at most `keep` in all, arena buffers
    /// first; the rest are dropped (after the lock is released).
    pub(crate) fn put(&self, bufs: Vec<AlignedBlobBuf>) {
        let mut excess = Vec::new();
        {
            let mut pooled = self.lock();
            for buf in bufs {
                if buf.is_from_arena() {
                    if pooled.len() >= self.keep {
                        match pooled.heap.pop() {
                            Some(heap) => excess.push(heap),
                            None => {
                                excess.push(buf);
                                continue;
                            }
                        }
                    }
                    pooled.arena.push(buf);
                } else if pooled.len() < self.keep {
                    pooled.heap.push(buf);
                } else {
                    excess.push(buf);
                }
            }
        }
        drop(excess);
    }

    /// Buffers pooled now (arena and heap).
    pub(crate) fn pooled(&self) -> usize {
        self.lock().len()
    }

    /// `(arena, heap)` buffers pooled now (tests).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let pooled = self.lock();
        (pooled.arena.len(), pooled.heap.len())
    }
}

/// `buf` with one byte of every page written, so its page faults are
/// taken now rather than under the commit gate.
fn touched(mut buf: AlignedBlobBuf) -> AlignedBlobBuf {
    for page in buf.as_mut_slice().chunks_exact_mut(4096) {
        page[0] = 0;
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryBackend;

    /// A backend whose `alloc_frame_buf` counts calls and whose
    /// reservation answers `slots`.
    struct Reserving {
        inner: MemoryBackend,
        slots: usize,
        reserves: std::sync::atomic::AtomicUsize,
        allocs: std::sync::atomic::AtomicUsize,
    }

    impl Reserving {
        fn new(slots: usize) -> Self {
            Self {
                inner: MemoryBackend::new(),
                slots,
                reserves: 0.into(),
                allocs: 0.into(),
            }
        }
    }

    impl Backend for Reserving {
        fn read_blob(
            &self,
            g: crate::store::BlobGuid,
            d: &mut AlignedBlobBuf,
        ) -> crate::api::errors::Result<()> {
            self.inner.read_blob(g, d)
        }
        fn write_blob(
            &self,
            g: crate::store::BlobGuid,
            s: &AlignedBlobBuf,
        ) -> crate::api::errors::Result<()> {
            self.inner.write_blob(g, s)
        }
        fn delete_blob(&self, g: crate::store::BlobGuid) -> crate::api::errors::Result<()> {
            self.inner.delete_blob(g)
        }
        fn list_blobs(&self) -> crate::api::errors::Result<Vec<crate::store::BlobGuid>> {
            self.inner.list_blobs()
        }
        fn flush(&self) -> crate::api::errors::Result<()> {
            self.inner.flush()
        }
        fn reserve_frame_bufs(&self, count: usize) -> usize {
            self.reserves
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.slots.min(count)
        }
        fn alloc_frame_buf(&self) -> AlignedBlobBuf {
            self.allocs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            AlignedBlobBuf::zeroed()
        }
    }

    /// The reservation is made once, at the first round, with the pool's
    /// bound; fresh round buffers come from the backend only when it
    /// reserved some; loads never ask it. Fails if loads reserved (the
    /// arena would be built at the first cold load) or if the reservation
    /// were repeated per round.
    #[test]
    fn reservation_happens_once_at_the_first_round() {
        let backend = Reserving::new(16);
        let pool = ImagePool::new(8);
        let b = pool.take_one();
        pool.put(vec![b]);
        assert_eq!(
            backend.reserves.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        let bufs = pool.for_round(&backend, 3, 2);
        assert_eq!(
            bufs.len(),
            3,
            "one pooled + two fresh; slack only from the pool"
        );
        // Its buffers are plain: the first one stops the asking.
        assert_eq!(backend.allocs.load(std::sync::atomic::Ordering::Relaxed), 1);
        pool.put(bufs);
        let _ = pool.for_round(&backend, 5, 0);
        assert_eq!(
            backend.reserves.load(std::sync::atomic::Ordering::Relaxed),
            1
        );

        let none = Reserving::new(0);
        let pool = ImagePool::new(8);
        let _ = pool.for_round(&none, 4, 0);
        assert_eq!(none.allocs.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    /// Over an io_uring persistent backend, a round's fresh buffers are
    /// arena slots, handed out ahead of heap ones and kept ahead of them
    /// when the pool is full. Fails if rounds took plain heap buffers, or
    /// if a full pool dropped arena buffers while keeping heap ones.
    #[test]
    fn arena_buffers_are_preferred_and_kept_first() {
        let Ok(driver) = holt_backend_uring::UringDriver::probe() else {
            return; // no io_uring here
        };
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::store::PersistentBackend::open_with_driver(
            dir.path(),
            std::sync::Arc::new(driver),
        )
        .unwrap();
        let pool = ImagePool::new(4);
        let bufs = pool.for_round(&backend, 2, 0);
        if !bufs.iter().all(AlignedBlobBuf::is_from_arena) {
            // The arena is process-wide: sized by whichever test reserved
            // first, its slots held by the pools of tests running in
            // parallel. `tests/registered_images.rs` checks this strictly,
            // in a process of its own.
            let info = holt_backend_uring::UringDriver::arena_info();
            eprintln!("skipped: no two free arena slots ({info:?})");
            return;
        }
        pool.put((0..4).map(|_| AlignedBlobBuf::zeroed()).collect());
        assert_eq!(pool.counts(), (0, 4));
        pool.put(bufs);
        assert_eq!(pool.counts(), (2, 2), "arena buffers displace heap ones");
        let round = pool.for_round(&backend, 2, 0);
        assert!(round.iter().all(AlignedBlobBuf::is_from_arena));
        assert!(!pool.take_one().is_from_arena(), "loads take heap first");
    }

    /// The pool keeps at most `keep` buffers and frees heap ones beyond.
    #[test]
    fn heap_buffers_beyond_the_bound_are_freed() {
        let pool = ImagePool::new(3);
        pool.put((0..5).map(|_| AlignedBlobBuf::zeroed()).collect());
        assert_eq!(pool.counts(), (0, 3));
        let got = pool.for_round(&MemoryBackend::new(), 1, 8);
        assert_eq!(got.len(), 3, "all pooled ones, slack included");
        assert_eq!(pool.counts(), (0, 0));
    }
}
