//! The image a checkpoint capture fills (`frame::capture`): while the
//! slot is armed, writers save only the 1 KiB pages (`mem::PAGE`) they are about to
//! change, each in its own page buffer; the round then moves them into a
//! whole-frame buffer and copies the other pages there. A writer on an
//! armed frame therefore copies a few pages, never a 512 KiB image, and a
//! round's image memory is its capture batch plus those pages.
//!
//! **P2 (writers do not allocate page buffers).** The page buffers come
//! from the tree's [`PagePool`], which the round fills before its cut
//! ([`PagePool::reserve`]) and refills between its capture batches
//! ([`PagePool::top_up`]), and to which the round returns every page it
//! moved. A writer allocates only when its saves outrun a refill. Allocating in the writer and freeing in the round thread
//! made the writer's malloc arena grow and shrink all round long (heap
//! `mprotect`s, fresh zero-filled pages), which raised a concurrent
//! writer's p99 during a round to 12-23x its idle value; with pooled
//! pages it is about 2x.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::mem::PAGE;
use crate::store::AlignedBlobBuf;

/// One saved page.
pub(crate) type Page = Box<[u8; PAGE]>;

/// Spare page buffers for writers' saves (P2).
///
/// [`PagePool::reserve`], before a round's cut, tops the pool up to what
/// the round may need — the most pages out at once in the last round, at
/// least the caller's estimate — and lets the pool hold all of it while
/// the round runs, so no page is freed mid-round (a free in the round
/// thread of a page a writer allocated is exactly the churn P2 avoids).
/// [`PagePool::trim`], after the round, frees all but `keep` pages, in
/// the round's thread.
///
/// The reserve is a guess: a round that lasts longer, or meets busier
/// writers, than the last one would drain it, and from then on every
/// save would allocate in the writer (a fresh heap page: a page fault in
/// the writer, which is what raised its p99 during 2048-frame rounds).
/// So the round also calls [`PagePool::top_up`] before and after each
/// batch's write, which keeps at least twice the pages taken since the
/// last call in the pool. The reserve is never below `keep` either: a
/// round after quiet rounds has a peak of 0.
#[derive(Debug)]
pub(crate) struct PagePool {
    free: Mutex<Vec<Page>>,
    /// Pages kept between rounds.
    keep: usize,
    /// Most pages held: `keep` between rounds; while a round runs, its
    /// bound on pages held and out (`most`), so nothing is freed mid-round.
    limit: AtomicUsize,
    /// Pages taken and not given back.
    out: AtomicUsize,
    /// The most pages out at once since the last reserve.
    peak: AtomicUsize,
    /// Pages taken since the last [`PagePool::top_up`].
    taken: AtomicUsize,
}

/// Pages [`PagePool::fill_to`] allocates before it hands them over.
const FILL_STEP: usize = 32;

/// Pages [`PagePool::top_up`] keeps pooled at least, while a round runs.
const MIN_SPARE_PAGES: usize = 64;

/// A page buffer with both of its memory pages touched, so that the
/// first write into it does not fault: a zeroed allocation from fresh
/// heap memory is not written by the allocator (`calloc` knows it is
/// zero), and the fault would otherwise be taken by the writer that
/// saves into it.
fn fresh_page() -> Page {
    let mut p = Box::new([0u8; PAGE]);
    p[0] = 1;
    p[PAGE - 1] = 1;
    std::hint::black_box(&mut p);
    p[0] = 0;
    p[PAGE - 1] = 0;
    p
}

impl PagePool {
    /// An empty pool keeping at most `keep` pages between rounds.
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep,
            limit: AtomicUsize::new(keep),
            out: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            taken: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Page>> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Before a round's cut: tops the pool up to `want` pages, or to the
    /// most pages out at once since the last call, or to the pages it
    /// may keep between rounds, whichever is most, at most `most`; the
    /// pool holds that many until [`PagePool::trim`]. The pages are
    /// allocated and touched here, in the caller's thread, outside the
    /// pool's mutex.
    ///
    /// Filling to `keep` matters after quiet rounds: their peak is 0, so
    /// without it the first round that meets a writer reserved only
    /// `want` and the writer faulted in fresh heap pages for the rest of
    /// its saves (at 64 dirty frames: `want` 256 pages, saves 1 000-1 900,
    /// two thirds of the slow puts of that round). `keep` pages are what
    /// trim leaves pooled anyway, so after the first round this costs
    /// nothing.
    pub(crate) fn reserve(&self, want: usize, most: usize) {
        let peak = self
            .peak
            .swap(self.out.load(Ordering::Relaxed), Ordering::Relaxed);
        let target = want.max(peak).max(self.keep).min(most);
        self.limit.store(most.max(self.keep), Ordering::Relaxed);
        self.taken.store(0, Ordering::Relaxed);
        self.fill_to(target);
    }

    /// While a round runs, between its batches (in the round's thread):
    /// tops the pool up to twice the pages taken since the last call, at
    /// least [`MIN_SPARE_PAGES`], within the round's bound on pages held
    /// and out; the pool keeps what it adds until [`PagePool::trim`].
    pub(crate) fn top_up(&self) {
        let taken = self.taken.swap(0, Ordering::Relaxed);
        let out = self.out.load(Ordering::Relaxed);
        let room = self.limit.load(Ordering::Relaxed).saturating_sub(out);
        let target = taken.saturating_mul(2).max(MIN_SPARE_PAGES).min(room);
        self.fill_to(target);
    }

    /// Allocates (outside the pool's mutex) and pools pages until it holds
    /// `target`, within its limit. Pages are handed over [`FILL_STEP`] at
    /// a time: a refill of thousands of pages takes milliseconds, and a
    /// writer saving meanwhile should find the first ones instead of
    /// allocating its own while the pool is empty.
    fn fill_to(&self, target: usize) {
        let mut missing = target.saturating_sub(self.lock().len());
        while missing > 0 {
            let n = missing.min(FILL_STEP);
            let fresh: Vec<Page> = (0..n).map(|_| fresh_page()).collect();
            let mut free = self.lock();
            let room = self
                .limit
                .load(Ordering::Relaxed)
                .saturating_sub(free.len());
            if room < n {
                free.extend(fresh.into_iter().take(room));
                return;
            }
            free.extend(fresh);
            missing = target.saturating_sub(free.len());
        }
    }

    /// After a round: frees all but `keep` pooled pages.
    pub(crate) fn trim(&self) {
        self.limit.store(self.keep, Ordering::Relaxed);
        let extra = {
            let mut free = self.lock();
            let keep = self.keep.min(free.len());
            free.split_off(keep)
        };
        drop(extra);
    }

    /// A page buffer: a pooled one, or a fresh one if the pool is empty.
    fn take(&self) -> Page {
        let out = self.out.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(out, Ordering::Relaxed);
        self.taken.fetch_add(1, Ordering::Relaxed);
        self.lock().pop().unwrap_or_else(|| Box::new([0u8; PAGE]))
    }

    /// Takes `pages` back, up to the pool's current limit.
    fn give(&self, pages: impl ExactSizeIterator<Item = Page>) {
        let n = pages.len();
        let mut free = self.lock();
        let room = self
            .limit
            .load(Ordering::Relaxed)
            .saturating_sub(free.len());
        free.extend(pages.take(room));
        drop(free);
        self.out.fetch_sub(n, Ordering::Relaxed);
    }

    /// Pages pooled now.
    #[cfg(test)]
    pub(crate) fn pooled(&self) -> usize {
        self.lock().len()
    }
}

/// One frame's capture in progress.
pub(crate) enum CaptureImage {
    /// Pages saved by writers (page index, bytes as of the cut), in
    /// buffers from `pool`.
    Pages {
        pool: Arc<PagePool>,
        pages: Vec<(usize, Page)>,
    },
    /// The whole image, once the round has taken a buffer for it.
    Whole(AlignedBlobBuf),
}

impl std::fmt::Debug for CaptureImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pages { pages, .. } => write!(f, "CaptureImage::Pages({})", pages.len()),
            Self::Whole(_) => f.write_str("CaptureImage::Whole"),
        }
    }
}

impl CaptureImage {
    /// An image with nothing saved yet, saving into pages from `pool`.
    #[cfg(test)]
    pub(crate) fn empty(pool: &Arc<PagePool>) -> Self {
        Self::with_room(pool, 0)
    }

    /// Like [`CaptureImage::empty`], its list of saved pages allocated now
    /// with room for `pages` entries, so saving up to that many never
    /// grows it. The round makes these in its own thread: a list grown by
    /// a writer's save (a `realloc` in the writer's malloc arena) and
    /// dropped by the round (`make_whole`) made the round take that
    /// arena's lock, and the writer's next grow then slept on it.
    pub(crate) fn with_room(pool: &Arc<PagePool>, pages: usize) -> Self {
        Self::Pages {
            pool: Arc::clone(pool),
            pages: Vec::with_capacity(pages),
        }
    }

    /// Room left in the saved-page list of an image still in pages.
    #[cfg(test)]
    pub(crate) fn page_room(&self) -> Option<usize> {
        match self {
            Self::Pages { pages, .. } => Some(pages.capacity() - pages.len()),
            Self::Whole(_) => None,
        }
    }

    /// Fills page `page` by `copy`, which writes the page's `PAGE` bytes
    /// into the slice it is given.
    pub(crate) fn fill(&mut self, page: usize, copy: impl FnOnce(&mut [u8])) {
        match self {
            Self::Pages { pool, pages } => {
                let mut b = pool.take();
                copy(&mut b[..]);
                pages.push((page, b));
            }
            Self::Whole(buf) => {
                let at = page * PAGE;
                if let Some(dst) = buf.as_mut_slice().get_mut(at..at + PAGE) {
                    copy(dst);
                }
            }
        }
    }

    /// Turns the saved pages into a whole image in `buf` (taken only if
    /// this is not one already; returned otherwise). The page buffers go
    /// back to their pool.
    pub(crate) fn make_whole(&mut self, buf: impl FnOnce() -> AlignedBlobBuf) {
        if let Self::Pages { pool, pages } = self {
            let mut whole = buf();
            for (page, bytes) in pages.iter() {
                let at = page * PAGE;
                if let Some(dst) = whole.as_mut_slice().get_mut(at..at + PAGE) {
                    dst.copy_from_slice(&bytes[..]);
                }
            }
            pool.give(pages.drain(..).map(|(_, b)| b));
            *self = Self::Whole(whole);
        }
    }

    /// The whole-frame buffer, if the round made one; saved pages go back
    /// to their pool otherwise.
    pub(crate) fn into_whole(self) -> Option<AlignedBlobBuf> {
        match self {
            Self::Whole(buf) => Some(buf),
            Self::Pages { pool, pages } => {
                pool.give(pages.into_iter().map(|(_, b)| b));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image made with room for a frame's pages saves that many
    /// without growing its page list (a grow in the writer's thread is
    /// what slept on the round's malloc arena lock). Deliberate bug
    /// caught: `with_room` ignoring `pages` (an empty list, as before).
    #[test]
    fn an_image_with_room_saves_without_growing() {
        let pool = Arc::new(PagePool::new(16));
        let mut img = CaptureImage::with_room(&pool, 8);
        assert_eq!(img.page_room(), Some(8));
        for p in 0..8 {
            img.fill(p, |d| d.fill(1));
        }
        assert_eq!(img.page_room(), Some(0), "eight saves, no grow");
    }

    /// Saved pages land at their place in the whole image; pages filled
    /// afterwards go straight into it.
    #[test]
    fn saved_pages_move_into_the_whole_image() {
        let pool = Arc::new(PagePool::new(16));
        let mut img = CaptureImage::empty(&pool);
        img.fill(3, |d| d.fill(3));
        img.fill(0, |d| d.fill(9));
        assert!(img.into_whole().is_none());
        let mut img = CaptureImage::empty(&pool);
        img.fill(3, |d| d.fill(3));
        img.make_whole(AlignedBlobBuf::zeroed);
        img.fill(5, |d| d.fill(5));
        img.make_whole(|| unreachable!("already whole"));
        let buf = img.into_whole().unwrap();
        let s = buf.as_slice();
        assert!(s[3 * PAGE..4 * PAGE].iter().all(|&b| b == 3));
        assert!(s[5 * PAGE..6 * PAGE].iter().all(|&b| b == 5));
        assert!(s[..3 * PAGE].iter().all(|&b| b == 0));
    }

    /// P2: a round's saves take pages from the pool and the round gives
    /// them back, so a second round's saves allocate nothing. Fails if
    /// `make_whole` (or `into_whole`) drops the page buffers instead of
    /// returning them, or if `fill` allocates while the pool has pages.
    #[test]
    fn saved_pages_come_from_the_pool_and_go_back() {
        let pool = Arc::new(PagePool::new(4));
        pool.reserve(10, 4);
        assert_eq!(pool.pooled(), 4, "reserve stops at its bound");
        let mut img = CaptureImage::empty(&pool);
        img.fill(1, |d| d.fill(1));
        img.fill(2, |d| d.fill(2));
        assert_eq!(pool.pooled(), 2, "saves take pooled pages");
        img.make_whole(AlignedBlobBuf::zeroed);
        assert_eq!(pool.pooled(), 4, "the round gives them back");
        let mut img = CaptureImage::empty(&pool);
        img.fill(7, |d| d.fill(7));
        assert!(img.into_whole().is_none());
        assert_eq!(pool.pooled(), 4, "a disarmed capture gives them back");
        // More saves than pooled pages: the writer allocates, and the
        // pool keeps no more than its bound afterwards.
        let mut img = CaptureImage::empty(&pool);
        for p in 0..6 {
            img.fill(p, |d| d.fill(1));
        }
        assert_eq!(pool.pooled(), 0);
        img.make_whole(AlignedBlobBuf::zeroed);
        assert_eq!(pool.pooled(), 4);
    }

    /// While a round runs the pool holds everything it reserved, beyond
    /// `keep`; `trim` brings it back to `keep`. Fails if `give` caps at
    /// `keep` mid-round (pages freed in the round's thread) or if `trim`
    /// keeps the round's reserve.
    #[test]
    fn a_round_holds_its_reserve_and_trim_returns_to_keep() {
        let pool = Arc::new(PagePool::new(2));
        pool.reserve(8, 100);
        assert_eq!(pool.pooled(), 8);
        let mut img = CaptureImage::empty(&pool);
        for p in 0..8 {
            img.fill(p, |d| d.fill(1));
        }
        img.make_whole(AlignedBlobBuf::zeroed);
        assert_eq!(pool.pooled(), 8, "nothing freed mid-round");
        pool.trim();
        assert_eq!(pool.pooled(), 2);
        img = CaptureImage::empty(&pool);
        for p in 0..4 {
            img.fill(p, |d| d.fill(1));
        }
        assert!(img.into_whole().is_none());
        assert_eq!(pool.pooled(), 2, "between rounds the bound is keep");
    }

    /// Mid-round, `top_up` refills the pool to twice the pages taken
    /// since its last call (at least `MIN_SPARE_PAGES`), within the
    /// round's bound on pages held and out, so writers keep finding
    /// pooled pages when the reserve was too small. Fails if `top_up`
    /// ignores the pages taken, or overshoots the bound.
    #[test]
    fn top_up_refills_what_writers_took() {
        let pool = Arc::new(PagePool::new(0));
        pool.reserve(8, 1000);
        let mut img = CaptureImage::empty(&pool);
        for p in 0..100 {
            img.fill(p, |d| d.fill(1));
        }
        assert_eq!(pool.pooled(), 0, "the reserve ran dry");
        pool.top_up();
        assert_eq!(pool.pooled(), 200, "twice what was taken");
        pool.top_up();
        assert_eq!(pool.pooled(), 200, "nothing taken since: no more");
        let pool = Arc::new(PagePool::new(0));
        pool.reserve(0, 120);
        let mut img2 = CaptureImage::empty(&pool);
        for p in 0..100 {
            img2.fill(p, |d| d.fill(1));
        }
        pool.top_up();
        assert_eq!(pool.pooled(), 20, "held + out stays within the bound");
        drop((img, img2));
    }

    /// The next reserve covers the last round's peak of pages out at once
    /// (within the bound). Fails if `reserve` ignores the peak.
    #[test]
    fn reserve_covers_the_last_peak() {
        let pool = Arc::new(PagePool::new(0));
        pool.reserve(2, 64);
        let mut img = CaptureImage::empty(&pool);
        for p in 0..10 {
            img.fill(p, |d| d.fill(1));
        }
        img.make_whole(AlignedBlobBuf::zeroed);
        let pooled = pool.pooled();
        assert_eq!(pooled, 10, "every page came back");
        pool.lock().clear();
        pool.reserve(2, 64);
        assert_eq!(pool.pooled(), 10, "topped up to the peak, not to 2");
        pool.lock().clear();
        pool.reserve(2, 64);
        assert_eq!(pool.pooled(), 2, "no saves since: the peak is gone");
    }

    /// A round after quiet rounds (peak 0) still starts with the pages
    /// the pool may keep between rounds, so the first writer it meets
    /// finds them pooled instead of faulting in fresh heap pages; the
    /// round's bound still caps it. Fails with the deliberate bug of
    /// `reserve` ignoring `keep` (target `want.max(peak)`): 4 pooled, not
    /// 32.
    #[test]
    fn reserve_fills_to_keep_after_quiet_rounds() {
        let pool = Arc::new(PagePool::new(32));
        pool.reserve(4, 1000);
        assert_eq!(pool.pooled(), 32, "keep, not the estimate of 4");
        pool.trim();
        assert_eq!(pool.pooled(), 32, "trim leaves them pooled");
        let pool = Arc::new(PagePool::new(32));
        pool.reserve(4, 10);
        assert_eq!(pool.pooled(), 10, "within the round's bound");
    }
}
