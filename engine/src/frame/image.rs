//! The image a checkpoint capture fills (`frame::capture`): while the
//! slot is armed, writers save only the 4 KiB pages they are about to
//! change, each in its own small buffer; the round then moves them into
//! a whole-frame buffer and copies the other pages there. A writer on an
//! armed frame therefore allocates a few pages, never a 512 KiB image,
//! and a round's image memory is its capture batch plus those pages.

use super::mem::PAGE;
use crate::store::AlignedBlobBuf;

/// One frame's capture in progress.
pub(crate) enum CaptureImage {
    /// Pages saved by writers (page index, bytes as of the cut).
    Pages(Vec<(usize, Box<[u8; PAGE]>)>),
    /// The whole image, once the round has taken a buffer for it.
    Whole(AlignedBlobBuf),
}

impl std::fmt::Debug for CaptureImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pages(p) => write!(f, "CaptureImage::Pages({})", p.len()),
            Self::Whole(_) => f.write_str("CaptureImage::Whole"),
        }
    }
}

impl CaptureImage {
    /// An image with nothing saved yet.
    pub(crate) fn empty() -> Self {
        Self::Pages(Vec::new())
    }

    /// Fills page `page` by `copy`, which writes the page's `PAGE` bytes
    /// into the slice it is given.
    pub(crate) fn fill(&mut self, page: usize, copy: impl FnOnce(&mut [u8])) {
        match self {
            Self::Pages(pages) => {
                let mut b = Box::new([0u8; PAGE]);
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
    /// this is not one already; returned otherwise).
    pub(crate) fn make_whole(&mut self, buf: impl FnOnce() -> AlignedBlobBuf) {
        if let Self::Pages(pages) = self {
            let mut whole = buf();
            for (page, bytes) in pages.drain(..) {
                let at = page * PAGE;
                if let Some(dst) = whole.as_mut_slice().get_mut(at..at + PAGE) {
                    dst.copy_from_slice(&bytes[..]);
                }
            }
            *self = Self::Whole(whole);
        }
    }

    /// The whole-frame buffer, if the round made one.
    pub(crate) fn into_whole(self) -> Option<AlignedBlobBuf> {
        match self {
            Self::Whole(buf) => Some(buf),
            Self::Pages(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saved pages land at their place in the whole image; pages filled
    /// afterwards go straight into it.
    #[test]
    fn saved_pages_move_into_the_whole_image() {
        let mut img = CaptureImage::empty();
        img.fill(3, |d| d.fill(3));
        img.fill(0, |d| d.fill(9));
        assert!(img.into_whole().is_none());
        let mut img = CaptureImage::empty();
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
}
