//! Frame memory comes from 2 MiB chunks, four frames each, that the kernel
//! may back with transparent huge pages.
//!
//! Point lookups hop through a few nodes in each of a few frames spread
//! over hundreds of MiB; with 4 KiB pages nearly every hop is also a TLB
//! miss (a two-level walk under virtualisation). One 2 MiB page covers
//! four frames. A 512 KiB frame cannot be huge-page backed on its own (it
//! is smaller than a huge page), hence the chunks.
//!
//! Slots are recycled within the process: a freed slot goes back to its
//! chunk, and a chunk whose four slots are all free is returned to the
//! kernel once more than [`KEEP_EMPTY`] such chunks are idle (a few are
//! kept because a fresh chunk costs 2 MiB of page zeroing). Frame memory
//! therefore follows the number of cached frames, which the buffer pool
//! bounds, and is given back when trees are dropped.
//!
//! Chunks are anonymous mappings, which the kernel zero-fills as they are
//! first touched, so a chunk is never cleared by hand: a slot handed out
//! for the first time is already zero, and only a slot used before is
//! cleared when a zeroed frame is asked for. (Clearing by hand would touch
//! every page twice: the kernel clears it on the first write anyway.)
//!
//! That first touch is expensive (a 2 MiB page cleared by the kernel, and
//! under virtualisation the host backing it too): a bulk load's spills
//! spent a tenth of its time in it. Once the process has needed a second
//! chunk, a background thread keeps [`READY`] chunks mapped and touched
//! ahead (`Arena::ready`), so a growing tree finds its next chunk already
//! faulted in while the thread pays for the one after on another core.
//! The ready chunks are still all zero (touched by writing zeros).

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex, Once};

use crate::store::FRAME_SIZE;

const CHUNK: usize = 2 << 20;
const PER_CHUNK: usize = CHUNK / FRAME_SIZE;
/// Words per frame.
pub(crate) const WORDS: usize = FRAME_SIZE / 8;

/// Fully free chunks kept for reuse.
const KEEP_EMPTY: usize = 4;
/// Chunks the prefault thread keeps mapped and touched ahead.
const READY: usize = 2;
const ALL_FREE: u8 = (1 << PER_CHUNK) - 1;

struct Arena {
    /// Chunk base address → bitmask of its free slots.
    chunks: HashMap<usize, u8>,
    /// Chunk base address → bitmask of its slots never handed out (still
    /// as the kernel zero-filled them).
    fresh: HashMap<usize, u8>,
    /// Chunks that may have a free slot (checked on use; may hold stale
    /// or repeated bases).
    partial: Vec<usize>,
    /// Chunks with every slot free.
    empty: usize,
    /// Chunks mapped and touched ahead by the prefault thread, not yet
    /// in `chunks` (all zero).
    ready: Vec<usize>,
}

static ARENA: Mutex<Option<Arena>> = Mutex::new(None);
/// Wakes the prefault thread when `Arena::ready` ran short.
static WANT_READY: Condvar = Condvar::new();
/// The prefault thread is started once, when the process first needs a
/// second chunk.
static PREFAULT: Once = Once::new();

/// One frame's words, owned; returned to the free list on drop.
pub(crate) struct FrameWords {
    ptr: NonNull<AtomicU64>,
}

// SAFETY: `FrameWords` owns its slot exclusively (a slot is handed out by
// `take_slot` to one owner until that owner's drop returns it), and the
// memory is only accessed through `AtomicU64`, which is Sync.
unsafe impl Send for FrameWords {}
// SAFETY: as above: shared access goes through `&[AtomicU64]` only.
unsafe impl Sync for FrameWords {}

impl FrameWords {
    /// A slot whose words are all zero.
    pub(crate) fn zeroed() -> Self {
        let (ptr, fresh) = take_slot();
        let w = Self { ptr };
        if !fresh {
            for x in w.words() {
                x.store(0, std::sync::atomic::Ordering::Relaxed);
            }
        }
        w
    }

    /// A slot with unspecified (but initialised) contents, to be
    /// overwritten by the caller.
    pub(crate) fn recycled() -> Self {
        Self { ptr: take_slot().0 }
    }

    #[inline]
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` addresses WORDS initialised `AtomicU64`s (chunks
        // are anonymous mappings, zero-filled by the kernel, and zero is a
        // valid `AtomicU64`), aligned
        // to the chunk (2 MiB) plus a multiple of FRAME_SIZE, and owned by
        // `self` until drop: a chunk is freed only when all its slots are
        // back in the arena.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), WORDS) }
    }
}

impl Drop for FrameWords {
    fn drop(&mut self) {
        put_slot(self.ptr.as_ptr() as usize);
    }
}

fn with_arena<R>(f: impl FnOnce(&mut Arena) -> R) -> R {
    let mut g = ARENA
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(g.get_or_insert_with(Arena::new))
}

/// A slot, and whether it was never handed out before (so still zero).
fn take_slot() -> (NonNull<AtomicU64>, bool) {
    let (addr, fresh, grew) = with_arena(|a| {
        let before = a.chunks.len();
        let (addr, fresh) = a.take();
        (addr, fresh, before > 0 && a.chunks.len() > before)
    });
    if grew {
        PREFAULT.call_once(|| {
            // Without the thread every chunk is faulted in on first use,
            // as before; nothing else depends on it.
            let _ = std::thread::Builder::new()
                .name("holt-prefault".into())
                .spawn(prefault);
        });
        WANT_READY.notify_one();
    }
    // Slot addresses come from `new_chunk`, which never returns null.
    let ptr = NonNull::new(addr as *mut AtomicU64)
        .unwrap_or_else(|| std::alloc::handle_alloc_error(layout()));
    (ptr, fresh)
}

/// The prefault thread: keeps `READY` chunks mapped and touched ahead.
fn prefault() {
    loop {
        {
            let mut g = ARENA
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while g.get_or_insert_with(Arena::new).ready.len() >= READY {
                g = WANT_READY
                    .wait(g)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        // A refused mapping ends the thread: chunks are then mapped and
        // faulted in on first use, as without it.
        let Some(base) = try_new_chunk() else {
            return;
        };
        touch(base);
        with_arena(|a| a.ready.push(base));
    }
}

/// Faults in every page of the chunk at `base` (fresh from `new_chunk`,
/// not yet handed out) by writing a zero byte to it, leaving it all zero.
fn touch(base: usize) {
    for page in (0..CHUNK).step_by(4096) {
        // SAFETY: `base + page` lies in the CHUNK-byte mapping `new_chunk`
        // made, which nothing else refers to until it is pushed to
        // `Arena::ready`; writing a zero byte keeps the memory as the
        // kernel provided it (zero). Volatile, so the write (the fault it
        // causes is its purpose) is not optimised away.
        unsafe { std::ptr::write_volatile((base + page) as *mut u8, 0) };
    }
}

fn put_slot(addr: usize) {
    if let Some(base) = with_arena(|a| a.put(addr)) {
        free_chunk(base);
    }
}

impl Arena {
    fn new() -> Self {
        Self {
            chunks: HashMap::new(),
            fresh: HashMap::new(),
            partial: Vec::new(),
            empty: 0,
            ready: Vec::new(),
        }
    }

    /// A free slot's address, from a new chunk if none is free, and
    /// whether the slot is handed out for the first time (still zero).
    fn take(&mut self) -> (usize, bool) {
        while let Some(base) = self.partial.pop() {
            let Some(mask) = self.chunks.get_mut(&base) else {
                continue; // stale: the chunk was freed
            };
            if *mask == 0 {
                continue; // stale: filled since it was listed
            }
            if *mask == ALL_FREE {
                self.empty -= 1;
            }
            let i = mask.trailing_zeros() as usize;
            *mask &= !(1 << i);
            if *mask != 0 {
                self.partial.push(base);
            }
            let fresh = self.fresh.get_mut(&base).is_some_and(|m| {
                let was = *m & (1 << i) != 0;
                *m &= !(1 << i);
                was
            });
            return (base + i * FRAME_SIZE, fresh);
        }
        let base = self.ready.pop().unwrap_or_else(new_chunk);
        self.chunks.insert(base, ALL_FREE & !1);
        self.fresh.insert(base, ALL_FREE & !1);
        self.partial.push(base);
        (base, true)
    }

    /// Returns a slot; `Some(base)`: that chunk left the arena and must be
    /// freed by the caller.
    fn put(&mut self, addr: usize) -> Option<usize> {
        let base = addr & !(CHUNK - 1);
        let i = (addr - base) / FRAME_SIZE;
        let mask = self.chunks.get_mut(&base)?;
        if *mask == 0 {
            self.partial.push(base);
        }
        *mask |= 1 << i;
        if *mask != ALL_FREE {
            return None;
        }
        // Chunks touched ahead count as idle too: what the process keeps
        // mapped for reuse stays within KEEP_EMPTY chunks.
        if self.empty + self.ready.len() < KEEP_EMPTY {
            self.empty += 1;
            return None;
        }
        self.chunks.remove(&base);
        self.fresh.remove(&base);
        Some(base)
    }
}

fn free_chunk(base: usize) {
    // SAFETY: `base..base + CHUNK` is a mapping made by `new_chunk` that
    // has left its arena's chunk table with all its slots free, so no
    // `FrameWords` points into it any more. munmap fails only for bad
    // arguments, which these are not; a failure would merely leak it.
    unsafe {
        libc::munmap(base as *mut libc::c_void, CHUNK);
    }
}

/// Reported to `handle_alloc_error` when the kernel refuses a chunk.
fn layout() -> std::alloc::Layout {
    // CHUNK is a non-zero power of two.
    std::alloc::Layout::from_size_align(CHUNK, CHUNK).unwrap_or_else(|_| unreachable!())
}

/// Maps a new chunk, aligned to CHUNK so that it can be one huge page;
/// a refused mapping is an allocation failure.
fn new_chunk() -> usize {
    try_new_chunk().unwrap_or_else(|| std::alloc::handle_alloc_error(layout()))
}

/// [`new_chunk`], or `None` if the kernel refuses the mapping (the
/// prefault thread maps ahead of need and must not abort the process
/// for memory nothing asked for yet).
fn try_new_chunk() -> Option<usize> {
    // Map twice the size and trim to an aligned CHUNK: mmap only promises
    // page alignment.
    let len = 2 * CHUNK;
    // SAFETY: a fresh private anonymous mapping aliases nothing.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    let start = raw as usize;
    let base = (start + CHUNK - 1) & !(CHUNK - 1);
    let (head, tail) = (base - start, start + len - (base + CHUNK));
    // SAFETY: both ranges lie in the mapping just made, outside
    // `base..base + CHUNK`, and nothing refers to them. madvise must come
    // before the first touch to get a huge page (a failure is harmless:
    // 4 KiB pages). The kernel zero-fills the pages on first touch, so
    // every word is an initialised (zero) `AtomicU64`.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((base + CHUNK) as *mut libc::c_void, tail);
        }
        libc::madvise(base as *mut libc::c_void, CHUNK, libc::MADV_HUGEPAGE);
    }
    Some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_and_idle_chunks_beyond_the_reserve_are_returned() {
        let mut a = Arena::new();
        let n = (KEEP_EMPTY + 3) * PER_CHUNK;
        let mut addrs: Vec<usize> = (0..n).map(|_| a.take().0).collect();
        assert_eq!(
            a.chunks.len(),
            KEEP_EMPTY + 3,
            "chunks are filled before new ones"
        );
        let mut sorted = addrs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), n, "no slot handed out twice");
        assert!(addrs.iter().all(|x| x % FRAME_SIZE == 0));
        // Free every slot: all but KEEP_EMPTY chunks go back.
        let mut freed = 0;
        for x in addrs.drain(..) {
            if let Some(base) = a.put(x) {
                free_chunk(base);
                freed += 1;
            }
        }
        assert_eq!(freed, 3);
        assert_eq!((a.chunks.len(), a.empty), (KEEP_EMPTY, KEEP_EMPTY));
        // Kept chunks are reused before any new one is made.
        let before: Vec<usize> = a.chunks.keys().copied().collect();
        let again: Vec<usize> = (0..KEEP_EMPTY * PER_CHUNK).map(|_| a.take().0).collect();
        assert!(again.iter().all(|x| before.contains(&(x & !(CHUNK - 1)))));
        assert_eq!(a.empty, 0);
        for x in again {
            if let Some(base) = a.put(x) {
                free_chunk(base);
            }
        }
        for base in a.chunks.keys().copied().collect::<Vec<_>>() {
            free_chunk(base);
        }
    }

    /// Chunks touched ahead count toward the idle reserve: with `READY`
    /// of them waiting, freeing every slot keeps only `KEEP_EMPTY -
    /// READY` empty chunks, so the process never holds more than
    /// `KEEP_EMPTY` idle chunks in all. Deliberate bug tried: the old
    /// test `self.empty < KEEP_EMPTY`, which kept `KEEP_EMPTY` empty
    /// chunks on top of the ready ones.
    #[test]
    fn ready_chunks_count_toward_the_idle_reserve() {
        let mut a = Arena::new();
        let n = (KEEP_EMPTY + 1) * PER_CHUNK;
        let addrs: Vec<usize> = (0..n).map(|_| a.take().0).collect();
        for _ in 0..READY {
            let base = try_new_chunk().expect("a 2 MiB mapping");
            a.ready.push(base);
        }
        let mut freed = 0;
        for x in addrs {
            if let Some(base) = a.put(x) {
                free_chunk(base);
                freed += 1;
            }
        }
        assert_eq!(freed, READY + 1);
        assert_eq!(a.empty + a.ready.len(), KEEP_EMPTY);
        for base in a.chunks.keys().chain(&a.ready).copied().collect::<Vec<_>>() {
            free_chunk(base);
        }
    }

    /// A chunk the prefault thread made ready is used before a new one
    /// is mapped, its slots are fresh, and `touch` left it all zero.
    /// Deliberate bugs tried: mapping a new chunk whatever `ready` holds
    /// (`new_chunk()` in `take`), and touching with a non-zero byte.
    #[test]
    fn ready_chunks_are_used_first_and_are_zero() {
        use std::sync::atomic::Ordering;
        let mut a = Arena::new();
        let base = new_chunk();
        touch(base);
        a.ready.push(base);
        let (addr, fresh) = a.take();
        assert_eq!((addr, fresh), (base, true));
        assert!(a.ready.is_empty());
        // SAFETY: the chunk's slots belong to `a` (this test's arena), and
        // its words are initialised (kernel zero-fill, then zero bytes).
        let w = unsafe { std::slice::from_raw_parts(base as *const AtomicU64, CHUNK / 8) };
        assert!(w.iter().all(|x| x.load(Ordering::Relaxed) == 0));
        let rest: Vec<(usize, bool)> = (1..PER_CHUNK).map(|_| a.take()).collect();
        assert!(rest
            .iter()
            .all(|&(x, fresh)| fresh && x & !(CHUNK - 1) == base));
        for x in std::iter::once(addr).chain(rest.into_iter().map(|r| r.0)) {
            if let Some(b) = a.put(x) {
                free_chunk(b);
            }
        }
        for b in a.chunks.keys().copied().collect::<Vec<_>>() {
            free_chunk(b);
        }
    }

    #[test]
    fn zeroed_frames_are_zero_even_in_recycled_slots() {
        use std::sync::atomic::Ordering;
        let f = FrameWords::zeroed();
        f.words()[9].store(77, Ordering::Relaxed);
        drop(f);
        let g = FrameWords::zeroed();
        assert!(g.words().iter().all(|w| w.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn only_never_used_slots_are_reported_fresh_and_they_are_zero() {
        use std::sync::atomic::Ordering;
        let mut a = Arena::new();
        let first: Vec<(usize, bool)> = (0..PER_CHUNK).map(|_| a.take()).collect();
        assert!(first.iter().all(|&(_, fresh)| fresh), "a new chunk's slots");
        for &(addr, _) in &first {
            // SAFETY: the slot was just taken from the arena and is not
            // shared; its words are initialised (kernel zero-fill).
            let w = unsafe { std::slice::from_raw_parts(addr as *const AtomicU64, WORDS) };
            assert!(w.iter().all(|x| x.load(Ordering::Relaxed) == 0));
            w[3].store(5, Ordering::Relaxed);
        }
        assert_eq!(a.put(first[1].0), None);
        assert_eq!(
            a.take(),
            (first[1].0, false),
            "a returned slot is reused, not fresh"
        );
        for (addr, _) in first {
            if let Some(base) = a.put(addr) {
                free_chunk(base);
            }
        }
        for base in a.chunks.keys().copied().collect::<Vec<_>>() {
            free_chunk(base);
        }
    }
}
