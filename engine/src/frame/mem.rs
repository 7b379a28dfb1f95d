//! Frame memory: 512 KiB as an array of atomic words.
//!
//! Optimistic readers read a frame while a writer may be changing it (see
//! `crate::latch`), so every access is a relaxed atomic load or store of a
//! 64-bit word: racy but defined behaviour. Multi-byte fields are
//! little-endian and may straddle two words. Every read is bounds-checked
//! against the frame and returns [`Corrupt`] instead of panicking, because
//! an optimistic reader may follow a torn offset anywhere.
//!
//! Stores are only made by the holder of the frame's exclusive latch, so a
//! partial-word store may load, merge and store the word without a CAS.
//!
//! Every store goes through one of three funnels (`write_le`, `write`,
//! `store_image`), and each first tells the frame's checkpoint capture
//! slot which pages it is about to change (`before_store`): while a round
//! has the frame armed, those pages are copied into the round's image
//! before their first change (`frame::capture`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::arena::FrameWords;
use super::capture::{CaptureSlot, MAX_PAGES};
use super::image::CaptureImage;
use crate::store::FRAME_SIZE;

/// Bytes of a copy-on-write page.
pub(crate) const PAGE: usize = 4096;
/// Copy-on-write pages per frame.
pub(crate) const PAGES: usize = FRAME_SIZE / PAGE;
const _: () = assert!(PAGES <= MAX_PAGES && PAGES * PAGE == FRAME_SIZE);

/// A frame decoding failure: the bytes do not form a valid frame. For an
/// optimistic reader this may be a torn read (validate, then restart); for
/// a stable image it is corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) &'static str);

pub(crate) type FResult<T> = Result<T, Corrupt>;

/// Words per frame (a power of two).
const WORDS: usize = FRAME_SIZE / 8;
/// Words per cache line: rotations are whole lines, so a node keeps its
/// alignment to cache lines.
const LINE_WORDS: usize = 8;
const _: () = assert!(WORDS.is_power_of_two());

/// Header words mirrored in [`AtomicFrame::head`]: bytes 0..72, through
/// the depth field at 64.
const HEAD_WORDS: usize = 9;
const _: () = assert!(HEAD_WORDS * 8 >= super::header::OFF_DEPTH + 4);

/// The rotation of the next frame made: successive frames take the line
/// counts `k * ROT_STEP mod LINES`, an odd step, so any `LINES` frames in a
/// row get distinct rotations.
static NEXT_ROT: AtomicUsize = AtomicUsize::new(0);
const LINES: usize = WORDS / LINE_WORDS;
const ROT_STEP: usize = (0x9E37_79B1 % LINES) | 1;

/// A fresh rotation, in words: frame byte `off` lives at word
/// `(off / 8 + rot) % WORDS` of the frame's memory.
///
/// Why: frame memory is 512 KiB-aligned (`arena`), and a cache set is
/// chosen by the low address bits, so unrotated the same offset of every
/// frame (the header at 0, the fan node right after it) maps to the same
/// few sets of L2 and L3. A lookup reads the header and the fan node of
/// every frame it passes; with hundreds of frames those lines evicted each
/// other and each frame hop cost a few memory round trips. Rotated by a
/// different number of lines per frame, they spread over all sets.
fn next_rotation() -> usize {
    rotation(NEXT_ROT.fetch_add(1, Ordering::Relaxed))
}

/// The rotation of the `k`-th frame made, in words.
const fn rotation(k: usize) -> usize {
    (k.wrapping_mul(ROT_STEP) % LINES) * LINE_WORDS
}

/// 512 KiB of frame bytes, accessed through atomics.
///
/// The bytes are stored rotated by `rot` words (see [`next_rotation`]);
/// every access maps its word index through [`AtomicFrame::at`], so the
/// rotation is invisible outside this file.
pub(crate) struct AtomicFrame {
    mem: FrameWords,
    /// Word rotation, a multiple of `LINE_WORDS` below `WORDS`.
    rot: usize,
    /// A copy of the first [`HEAD_WORDS`] words (the header fields a
    /// walker reads on entering a frame: flags, root, depth), kept beside
    /// the frame's pointer so a frame hop does not miss on the header's
    /// lines. Every store funnel updates both copies; every read of those
    /// words is served from here.
    head: [AtomicU64; HEAD_WORDS],
    /// The checkpoint capture pending for this frame, if any: armed at a
    /// round's cut; stores save the pages they change into it first
    /// (`frame::image`: page by page).
    pub(crate) capture: CaptureSlot<CaptureImage>,
}

impl std::fmt::Debug for AtomicFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AtomicFrame({} B)", FRAME_SIZE)
    }
}

#[inline]
fn check(off: usize, len: usize) -> FResult<()> {
    match off.checked_add(len) {
        Some(end) if end <= FRAME_SIZE => Ok(()),
        _ => Err(Corrupt("offset outside frame")),
    }
}

impl AtomicFrame {
    /// An all-zero frame.
    pub(crate) fn zeroed() -> Self {
        Self {
            mem: FrameWords::zeroed(),
            rot: next_rotation(),
            head: Default::default(),
            capture: CaptureSlot::default(),
        }
    }

    #[inline]
    fn words(&self) -> &[AtomicU64] {
        self.mem.words()
    }

    /// The word holding frame word `i` (`i < WORDS`; larger indices wrap,
    /// so callers check bounds first).
    #[inline]
    fn at(&self, i: usize) -> &AtomicU64 {
        let words = self.words();
        // `words` has exactly WORDS entries, a power of two, so the
        // masked index is in bounds (and the check folds away).
        &words[(i + self.rot) & (words.len() - 1)]
    }

    /// The frame's words in frame order: the stored array split at the
    /// rotation.
    fn in_order(&self) -> impl Iterator<Item = &AtomicU64> {
        let (wrapped, first) = self.words().split_at(self.rot);
        first.iter().chain(wrapped)
    }

    /// An all-zero frame stored with rotation `rot` words (tests).
    #[cfg(test)]
    fn zeroed_rotated(rot: usize) -> Self {
        let mut f = Self::zeroed();
        f.rot = rot % WORDS;
        f
    }

    /// A frame holding a copy of `image` (exactly `FRAME_SIZE` bytes).
    pub(crate) fn from_image(image: &[u8]) -> FResult<Self> {
        if image.len() != FRAME_SIZE {
            return Err(Corrupt("frame image has the wrong size"));
        }
        let f = Self {
            mem: FrameWords::recycled(),
            rot: next_rotation(),
            head: Default::default(),
            capture: CaptureSlot::default(),
        };
        f.store_image(image);
        Ok(f)
    }

    /// Copies the whole frame into `dst` (exactly `FRAME_SIZE` bytes).
    pub(crate) fn copy_to(&self, dst: &mut [u8]) {
        for (w, c) in self.in_order().zip(dst.chunks_exact_mut(8)) {
            c.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
    }

    /// Copies page `page` into `dst` (its first `PAGE` bytes).
    pub(crate) fn read_page(&self, page: usize, dst: &mut [u8]) {
        let w0 = page * (PAGE / 8);
        let Some(out) = dst.get_mut(..PAGE).filter(|_| page < PAGES) else {
            return;
        };
        for (i, c) in out.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&self.at(w0 + i).load(Ordering::Relaxed).to_le_bytes());
        }
    }

    /// A store is about to change `len` bytes at `off` (already checked
    /// to lie inside the frame): a pending checkpoint capture saves those
    /// pages first. Exclusive latch held.
    #[inline]
    fn before_store(&self, off: usize, len: usize) {
        if len > 0 {
            self.capture
                .save(off / PAGE, (off + len - 1) / PAGE, |img, page| {
                    img.fill(page, |dst| self.read_page(page, dst));
                });
        }
    }

    /// Overwrites the whole frame from `src` (exactly `FRAME_SIZE` bytes).
    /// Exclusive latch required.
    pub(crate) fn store_image(&self, src: &[u8]) {
        self.before_store(0, FRAME_SIZE);
        for (w, c) in self.in_order().zip(src.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        for (i, h) in self.head.iter().enumerate() {
            h.store(self.at(i).load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    #[inline]
    fn word(&self, i: usize) -> u64 {
        // `i < WORDS` is established by every caller through `check`.
        if let Some(h) = self.head.get(i) {
            h.load(Ordering::Relaxed)
        } else if i < WORDS {
            self.at(i).load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Reads `n <= 8` little-endian bytes at `off`.
    #[inline]
    fn read_le(&self, off: usize, n: usize) -> FResult<u64> {
        check(off, n)?;
        let wi = off >> 3;
        let shift = (off & 7) * 8;
        let lo = self.word(wi) >> shift;
        let v = if shift + n * 8 <= 64 {
            lo
        } else {
            lo | (self.word(wi + 1) << (64 - shift))
        };
        Ok(if n == 8 {
            v
        } else {
            v & ((1u64 << (n * 8)) - 1)
        })
    }

    #[inline]
    pub(crate) fn u8(&self, off: usize) -> FResult<u8> {
        self.read_le(off, 1).map(|v| v as u8)
    }
    #[inline]
    pub(crate) fn u16(&self, off: usize) -> FResult<u16> {
        self.read_le(off, 2).map(|v| v as u16)
    }
    #[inline]
    pub(crate) fn u32(&self, off: usize) -> FResult<u32> {
        self.read_le(off, 4).map(|v| v as u32)
    }
    #[inline]
    pub(crate) fn u64(&self, off: usize) -> FResult<u64> {
        self.read_le(off, 8)
    }

    /// Hints the CPU to start loading the cache line holding byte `off`
    /// (ignored outside the frame): a walker that knows which nodes it
    /// will visit next overlaps their cache misses.
    #[inline]
    pub(crate) fn prefetch(&self, off: usize) {
        if off < FRAME_SIZE {
            super::simd::prefetch_line(self.at(off >> 3));
        }
    }

    /// Appends `len` bytes at `off` to `out`.
    pub(crate) fn read_into(&self, off: usize, len: usize, out: &mut Vec<u8>) -> FResult<()> {
        check(off, len)?;
        let start = out.len();
        out.resize(start + len, 0);
        self.fill(off, &mut out[start..]);
        Ok(())
    }

    /// Copies the bytes at `off..off + dst.len()` (already bounds-checked)
    /// a word at a time.
    #[inline]
    fn fill(&self, off: usize, dst: &mut [u8]) {
        let mut pos = off;
        let mut rest = dst;
        // Leading partial word.
        let lead = (8 - (pos & 7)) & 7;
        if lead > 0 && !rest.is_empty() {
            let n = lead.min(rest.len());
            let w = self.word(pos >> 3).to_le_bytes();
            let (head, tail) = rest.split_at_mut(n);
            head.copy_from_slice(&w[pos & 7..(pos & 7) + n]);
            rest = tail;
            pos += n;
        }
        let mut chunks = rest.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.word(pos >> 3).to_le_bytes());
            pos += 8;
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let w = self.word(pos >> 3).to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&w[..n]);
        }
    }

    /// Fills `dst` from the bytes at `off`.
    pub(crate) fn read_exact(&self, off: usize, dst: &mut [u8]) -> FResult<()> {
        check(off, dst.len())?;
        self.fill(off, dst);
        Ok(())
    }

    /// Length of the common prefix of the `len` bytes at `off` and `other`
    /// (compares at most `min(len, other.len())` bytes).
    pub(crate) fn common_prefix(&self, off: usize, len: usize, other: &[u8]) -> FResult<usize> {
        check(off, len)?;
        let n = len.min(other.len());
        let mut i = 0;
        while i < n {
            let p = off + i;
            if p & 7 == 0 && i + 8 <= n {
                let w = self.word(p >> 3);
                let mut b = [0u8; 8];
                b.copy_from_slice(&other[i..i + 8]);
                let o = u64::from_le_bytes(b);
                let x = w ^ o;
                if x != 0 {
                    return Ok(i + (x.trailing_zeros() / 8) as usize);
                }
                i += 8;
            } else {
                if (self.word(p >> 3) >> ((p & 7) * 8)) as u8 != other[i] {
                    return Ok(i);
                }
                i += 1;
            }
        }
        Ok(n)
    }

    /// Stores frame word `i` (`i < WORDS`), and its mirror if it has one.
    #[inline]
    fn store_word(&self, i: usize, v: u64) {
        self.at(i).store(v, Ordering::Relaxed);
        if let Some(h) = self.head.get(i) {
            h.store(v, Ordering::Relaxed);
        }
    }

    #[inline]
    fn write_le(&self, off: usize, n: usize, v: u64) -> FResult<()> {
        check(off, n)?;
        self.before_store(off, n);
        let wi = off >> 3;
        let shift = (off & 7) * 8;
        let mask = if n == 8 {
            u64::MAX
        } else {
            (1u64 << (n * 8)) - 1
        };
        let v = v & mask;
        let old = self.word(wi);
        self.store_word(wi, (old & !(mask << shift)) | (v << shift));
        if shift + n * 8 > 64 {
            let spill = 64 - shift;
            let old = self.word(wi + 1);
            let m1 = mask >> spill;
            self.store_word(wi + 1, (old & !m1) | (v >> spill));
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn set_u8(&self, off: usize, v: u8) -> FResult<()> {
        self.write_le(off, 1, u64::from(v))
    }
    #[inline]
    pub(crate) fn set_u16(&self, off: usize, v: u16) -> FResult<()> {
        self.write_le(off, 2, u64::from(v))
    }
    #[inline]
    pub(crate) fn set_u32(&self, off: usize, v: u32) -> FResult<()> {
        self.write_le(off, 4, u64::from(v))
    }
    #[inline]
    pub(crate) fn set_u64(&self, off: usize, v: u64) -> FResult<()> {
        self.write_le(off, 8, v)
    }

    /// Stores `src` at `off`. Exclusive latch required.
    pub(crate) fn write(&self, off: usize, src: &[u8]) -> FResult<()> {
        check(off, src.len())?;
        self.before_store(off, src.len());
        let mut i = 0;
        while i < src.len() {
            let p = off + i;
            if p & 7 == 0 && i + 8 <= src.len() {
                let mut b = [0u8; 8];
                b.copy_from_slice(&src[i..i + 8]);
                self.store_word(p >> 3, u64::from_le_bytes(b));
                i += 8;
            } else {
                self.write_le(p, 1, u64::from(src[i]))?;
                i += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_fields_round_trip_across_word_boundaries() {
        let f = AtomicFrame::zeroed();
        for off in 0..24 {
            f.set_u32(100 + off, 0xDEAD_BEEF).unwrap();
            assert_eq!(f.u32(100 + off).unwrap(), 0xDEAD_BEEF);
            f.set_u16(200 + off, 0xBEEF).unwrap();
            assert_eq!(f.u16(200 + off).unwrap(), 0xBEEF);
            f.set_u64(300 + off, 0x0102_0304_0506_0708).unwrap();
            assert_eq!(f.u64(300 + off).unwrap(), 0x0102_0304_0506_0708);
        }
        // Neighbours untouched by a 1-byte store.
        f.set_u64(1000, u64::MAX).unwrap();
        f.set_u8(1003, 0).unwrap();
        assert_eq!(f.u64(1000).unwrap(), 0xFFFF_FFFF_00FF_FFFF);
    }

    #[test]
    fn out_of_bounds_reads_are_errors_not_panics() {
        let f = AtomicFrame::zeroed();
        assert!(f.u8(FRAME_SIZE).is_err());
        assert!(f.u32(FRAME_SIZE - 3).is_err());
        assert!(f.u64(usize::MAX - 2).is_err());
        let mut v = Vec::new();
        assert!(f.read_into(FRAME_SIZE - 4, 5, &mut v).is_err());
        assert!(f.common_prefix(usize::MAX, 4, b"abcd").is_err());
        assert!(f.set_u32(FRAME_SIZE - 2, 1).is_err());
    }

    #[test]
    fn reads_of_every_alignment_and_length_match_the_bytes() {
        let f = AtomicFrame::zeroed();
        let data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect();
        f.write(4096, &data).unwrap();
        for start in 0..24 {
            for len in 0..=(64 - start) {
                let mut out = vec![0xEE];
                f.read_into(4096 + start, len, &mut out).unwrap();
                assert_eq!(&out[1..], &data[start..start + len], "at {start} len {len}");
                let mut dst = vec![0u8; len];
                f.read_exact(4096 + start, &mut dst).unwrap();
                assert_eq!(dst, &data[start..start + len]);
            }
        }
    }

    #[test]
    fn bulk_write_read_compare() {
        let f = AtomicFrame::zeroed();
        let data: Vec<u8> = (0..100u8).collect();
        for off in [0usize, 3, 8, 13] {
            f.write(5000 + off, &data).unwrap();
            let mut out = Vec::new();
            f.read_into(5000 + off, 100, &mut out).unwrap();
            assert_eq!(out, data);
            assert_eq!(f.common_prefix(5000 + off, 100, &data).unwrap(), 100);
            let mut other = data.clone();
            other[57] = 0xFF;
            assert_eq!(f.common_prefix(5000 + off, 100, &other).unwrap(), 57);
        }
    }

    #[test]
    fn image_round_trip() {
        let mut img = vec![0u8; FRAME_SIZE];
        for (i, b) in img.iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let f = AtomicFrame::from_image(&img).unwrap();
        let mut out = vec![0u8; FRAME_SIZE];
        f.copy_to(&mut out);
        assert_eq!(out, img);
        assert!(AtomicFrame::from_image(&img[..100]).is_err());
    }

    /// Every store funnel and every bulk copy agrees with per-offset reads
    /// whatever the rotation, including ones that wrap inside a page and
    /// right at a word a field straddles. Deliberate bugs this catches: a
    /// bulk copy (`copy_to`, `store_image`, `read_page`) that ignores the
    /// rotation, and a store that skips the header mirror (a header read
    /// then returns the old value).
    #[test]
    fn rotated_frames_and_the_header_mirror_agree_with_the_image() {
        let last_line = WORDS - LINE_WORDS;
        for rot in [0, LINE_WORDS, 40 * LINE_WORDS, last_line, WORDS / 2] {
            let f = AtomicFrame::zeroed_rotated(rot);
            // Header fields (mirrored) through each funnel.
            f.set_u16(10, 0xBEEF).unwrap();
            f.write(24, &[0xAB; 24]).unwrap(); // whole words
            f.set_u32(40, 0x1234_5678).unwrap();
            f.write(60, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
            f.set_u64(68, u64::MAX).unwrap(); // straddles the mirror's end
                                              // Fields around the wrap point of this rotation.
            let wrap = (WORDS - rot) % WORDS * 8;
            let probe = wrap.clamp(PAGE, FRAME_SIZE - 64);
            f.set_u64(probe - 4, 0x0102_0304_0506_0708).unwrap();
            assert_eq!(f.u64(probe - 4).unwrap(), 0x0102_0304_0506_0708);
            f.write(probe - 13, b"across the wrap").unwrap();
            let mut img = vec![0u8; FRAME_SIZE];
            f.copy_to(&mut img);
            for off in (0..128).chain(probe - 16..probe + 16) {
                assert_eq!(f.u8(off).unwrap(), img[off], "rot {rot} off {off}");
            }
            assert_eq!(f.u16(10).unwrap(), 0xBEEF);
            assert_eq!(f.u32(40).unwrap(), 0x1234_5678);
            assert_eq!(f.u32(64).unwrap(), 0x0807_0605);
            assert_eq!(f.u32(68).unwrap(), u32::MAX);
            let page = probe / PAGE;
            let mut p = vec![0u8; PAGE];
            f.read_page(page, &mut p);
            assert_eq!(p, img[page * PAGE..(page + 1) * PAGE], "rot {rot}");
            // An image stored into a frame of another rotation reads back
            // the same, header included.
            let g = AtomicFrame::zeroed_rotated(rot + 3 * LINE_WORDS);
            g.store_image(&img);
            let mut back = vec![0u8; FRAME_SIZE];
            g.copy_to(&mut back);
            assert!(back == img, "rot {rot}: image round trip");
            assert_eq!(g.u32(40).unwrap(), 0x1234_5678);
            let mut across = [0u8; 15];
            g.read_exact(probe - 13, &mut across).unwrap();
            assert_eq!(&across, b"across the wrap", "rot {rot}");
        }
    }

    /// Frames made one after another store byte 0 at different cache-set
    /// positions (the point of the rotation). Deliberate bug this catches:
    /// a rotation step that is zero or a multiple of the line count, which
    /// stacks every header on the same sets again.
    #[test]
    fn successive_frames_take_distinct_rotations() {
        let rots: Vec<usize> = (1000..1000 + LINES).map(rotation).collect();
        let mut sorted = rots.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), LINES, "any LINES frames in a row differ");
        assert!(rots.iter().all(|r| r % LINE_WORDS == 0 && *r < WORDS));
        // Neighbours land far apart, not on adjacent lines.
        assert!((rotation(1) + WORDS - rotation(0)) % WORDS >= 64 * LINE_WORDS);
        assert!(next_rotation() % LINE_WORDS == 0);
    }
}
