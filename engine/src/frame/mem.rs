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
//! Every store goes through one of four funnels (`write_le`, `write`,
//! `store_words_from`, `store_image`), and each first tells the frame's checkpoint capture
//! slot which pages it is about to change (`before_store`): while a round
//! has the frame armed, those pages are copied into the round's image
//! before their first change (`frame::capture`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::arena::FrameWords;
use super::capture::{CaptureSlot, MAX_PAGES};
use super::image::CaptureImage;
use crate::store::FRAME_SIZE;

/// Bytes of a copy-on-write page: the unit a store into a frame armed
/// for a checkpoint saves first (`frame::capture`). 1 KiB, not the 4 KiB
/// of a memory page: a put changes a few bytes in one or two places, and
/// the save's copy (mostly cache misses, the frame's memory being cold)
/// is most of what a concurrent writer pays during a round; at 4 KiB the
/// saved puts' p50 was 0.7 µs above the unsaved ones' at 512 frames.
pub(crate) const PAGE: usize = 1024;
/// Copy-on-write pages per frame.
pub(crate) const PAGES: usize = FRAME_SIZE / PAGE;
const _: () = assert!(PAGES <= MAX_PAGES && PAGES * PAGE == FRAME_SIZE);

/// A frame decoding failure: the bytes do not form a valid frame. For an
/// optimistic reader this may be a torn read (validate, then restart); for
/// a stable image it is corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) &'static str);

pub(crate) type FResult<T> = Result<T, Corrupt>;

/// 512 KiB of frame bytes, accessed through atomics.
///
/// `repr(C)` with the memory pointer first: every walk reads it right
/// after its owner's latch, and `buffer::CachedBlob` places it in the
/// latch's cache line.
#[repr(C)]
pub(crate) struct AtomicFrame {
    mem: FrameWords,
    /// The checkpoint capture pending for this frame, if any: armed at a
    /// round's cut; stores save the pages they change into it first
    /// (`frame::image`: page by page).
    pub(crate) capture: CaptureSlot<CaptureImage>,
    /// In memory only, never in the image: the bump offset as of the last
    /// time the whole data area was written in key order (a key-order
    /// repack, or a fresh frame filled by copying subtrees). Nodes
    /// allocated since lie past it in allocation order; a checkpoint
    /// repacks a dirty frame once they are a large share of it
    /// (`copy::disordered`). A frame loaded from a backend counts as
    /// ordered: its history is unknown, and guessing wrong only costs
    /// scan speed, never correctness.
    ordered_to: AtomicU32,
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
            capture: CaptureSlot::default(),
            ordered_to: AtomicU32::new(0),
        }
    }

    /// Where the memory pointer itself lies (a layout test in
    /// `buffer::cached_blob` checks its cache line).
    #[cfg(test)]
    pub(crate) fn mem_addr(&self) -> usize {
        std::ptr::from_ref(&self.mem) as usize
    }

    #[inline]
    fn words(&self) -> &[AtomicU64] {
        self.mem.words()
    }

    /// A frame holding a copy of `image` (exactly `FRAME_SIZE` bytes).
    pub(crate) fn from_image(image: &[u8]) -> FResult<Self> {
        if image.len() != FRAME_SIZE {
            return Err(Corrupt("frame image has the wrong size"));
        }
        let f = Self {
            mem: FrameWords::recycled(),
            capture: CaptureSlot::default(),
            ordered_to: AtomicU32::new(0),
        };
        f.store_image(image);
        f.mark_ordered()?;
        Ok(f)
    }

    /// Records that every node allocated so far lies in key order (see
    /// `ordered_to`).
    pub(crate) fn mark_ordered(&self) -> FResult<()> {
        let bump = self.u32(super::header::OFF_BUMP)?;
        self.ordered_to.store(bump, Ordering::Relaxed);
        Ok(())
    }

    /// The bump offset of the last [`AtomicFrame::mark_ordered`] (0:
    /// never).
    #[inline]
    pub(crate) fn ordered_to(&self) -> u32 {
        self.ordered_to.load(Ordering::Relaxed)
    }

    /// Copies the whole frame into `dst` (exactly `FRAME_SIZE` bytes).
    #[cfg(test)]
    pub(crate) fn copy_to(&self, dst: &mut [u8]) {
        for (w, c) in self.words().iter().zip(dst.chunks_exact_mut(8)) {
            c.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
    }

    /// Copies page `page` into `dst` (its first `PAGE` bytes).
    pub(crate) fn read_page(&self, page: usize, dst: &mut [u8]) {
        let w0 = page * (PAGE / 8);
        let (Some(words), Some(out)) = (self.words().get(w0..w0 + PAGE / 8), dst.get_mut(..PAGE))
        else {
            return;
        };
        for (w, c) in words.iter().zip(out.chunks_exact_mut(8)) {
            c.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
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
        for (w, c) in self.words().iter().zip(src.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }

    /// Overwrites the whole frame with the first `upto` bytes of `src`
    /// (rounded up to whole words) followed by zeros: what
    /// [`AtomicFrame::store_image`] of `src`'s image would store when
    /// `src` is zero from `upto` on, without the 512 KiB image buffer in
    /// between. Exclusive latch required.
    pub(crate) fn store_from(&self, src: &AtomicFrame, upto: usize) {
        self.before_store(0, FRAME_SIZE);
        let n = upto.div_ceil(8);
        for (i, w) in self.words().iter().enumerate() {
            let v = if i < n { src.word(i) } else { 0 };
            w.store(v, Ordering::Relaxed);
        }
    }

    /// Zeroes the first `upto` bytes (rounded up to whole words) of a
    /// frame nobody else can see (a scratch frame).
    pub(crate) fn zero_prefix(&self, upto: usize) {
        for w in self.words().iter().take(upto.div_ceil(8)) {
            w.store(0, Ordering::Relaxed);
        }
    }

    #[inline]
    fn word(&self, i: usize) -> u64 {
        // `i < WORDS` is established by every caller through `check`.
        self.words().get(i).map_or(0, |w| w.load(Ordering::Relaxed))
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

    /// The `n` words from `off` (8-aligned), bounds-checked once.
    #[inline]
    fn word_run(&self, off: usize, n: usize) -> FResult<&[AtomicU64]> {
        if off % 8 != 0 {
            return Err(Corrupt("unaligned word read"));
        }
        let wi = off >> 3;
        self.words()
            .get(wi..wi.saturating_add(n))
            .ok_or(Corrupt("offset outside frame"))
    }

    /// Overwrites `dst`, whose length is a multiple of 8, with the bytes
    /// at `off` (8-aligned), a word at a time with one bounds check: the
    /// caller sized its buffer once for everything it appends.
    #[inline]
    pub(crate) fn copy_words(&self, off: usize, dst: &mut [u8]) -> FResult<()> {
        let src = self.word_run(off, dst.len() / 8)?;
        for (d, w) in dst.chunks_exact_mut(8).zip(src) {
            d.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        Ok(())
    }

    /// Fills `dst` with the words at `off` (8-aligned), one bounds check
    /// for all of them: a node body read whole instead of field by field.
    #[inline]
    pub(crate) fn words_into(&self, off: usize, dst: &mut [u64]) -> FResult<()> {
        let src = self.word_run(off, dst.len())?;
        for (d, w) in dst.iter_mut().zip(src) {
            *d = w.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Hints the CPU to start loading the cache line holding byte `off`
    /// (ignored outside the frame): a walker that knows which nodes it
    /// will visit next overlaps their cache misses.
    #[inline]
    pub(crate) fn prefetch(&self, off: usize) {
        if let Some(w) = self.words().get(off >> 3) {
            super::simd::prefetch_line(w);
        }
    }

    /// Replaces the contents of `out` with the `len` bytes at `off`: the
    /// aligned words that hold them copied whole ([`Self::copy_words`]),
    /// then the bytes before `off` shifted out in one move. For a value of
    /// a few hundred bytes starting anywhere in a word this takes less
    /// than half the instructions of [`Self::read_into`]'s word-by-word
    /// shifting, which suits short keys appended to a batch. A range past
    /// the frame is an error before any memory is asked for.
    #[inline]
    pub(crate) fn read_value(&self, off: usize, len: usize, out: &mut Vec<u8>) -> FResult<()> {
        check(off, len)?;
        let start = off & !7;
        out.clear();
        out.resize((off + len).next_multiple_of(8) - start, 0);
        self.copy_words(start, out)?;
        out.copy_within(off - start.., 0);
        out.truncate(len);
        Ok(())
    }

    /// Appends `len` bytes at `off` to `out`.
    ///
    /// Eight bytes at a time, each an aligned word or two neighbours
    /// shifted together, into room made for whole words in one step and
    /// cut back to `len` at the end: no variable-length copy (a library
    /// call per key or value was a tenth of a scan) and no length or
    /// capacity update per word.
    #[inline]
    pub(crate) fn read_into(&self, off: usize, len: usize, out: &mut Vec<u8>) -> FResult<()> {
        check(off, len)?;
        let start = out.len();
        let chunks = len.div_ceil(8);
        out.resize(start + chunks * 8, 0);
        let dst = out.get_mut(start..).unwrap_or_default();
        let wi = off >> 3;
        let shift = (off & 7) * 8;
        // The source words as one slice, bounds-checked once rather than
        // per word.
        let words = self.words();
        if shift == 0 {
            // `check` holds `off + len` inside the frame, so the slice is
            // whole.
            let src = words.get(wi..wi + chunks).unwrap_or_default();
            for (d, w) in dst.chunks_exact_mut(8).zip(src) {
                d.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
            }
        } else {
            let mut lo = self.word(wi) >> shift;
            let mut src = words.get(wi + 1..).unwrap_or_default().iter();
            for d in dst.chunks_exact_mut(8) {
                // Past the frame end reads 0: only bytes beyond `len`
                // come from there.
                let next = src.next().map_or(0, |w| w.load(Ordering::Relaxed));
                d.copy_from_slice(&(lo | (next << (64 - shift))).to_le_bytes());
                lo = next >> shift;
            }
        }
        out.truncate(start + len);
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
        let w0 = &self.words()[wi];
        let old = w0.load(Ordering::Relaxed);
        w0.store((old & !(mask << shift)) | (v << shift), Ordering::Relaxed);
        if shift + n * 8 > 64 {
            let spill = 64 - shift;
            let w1 = &self.words()[wi + 1];
            let old = w1.load(Ordering::Relaxed);
            let m1 = mask >> spill;
            w1.store((old & !m1) | (v >> spill), Ordering::Relaxed);
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

    /// Stores the `n` words at `src_off` of `src` at `off` (both
    /// 8-aligned): a node moved to another frame word for word, with
    /// no byte buffer in between. Exclusive latch on `self` required;
    /// `src` must be another frame.
    pub(crate) fn store_words_from(
        &self,
        off: usize,
        src: &AtomicFrame,
        src_off: usize,
        n: usize,
    ) -> FResult<()> {
        let from = src.word_run(src_off, n)?;
        let to = self.word_run(off, n)?;
        if n > 0 {
            self.before_store(off, 8 * n);
        }
        for (d, w) in to.iter().zip(from) {
            d.store(w.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Stores `src` at `off`. Exclusive latch required.
    ///
    /// One bounds check and one capture check for the whole range, then
    /// a word at a time: the bytes before the first word boundary and
    /// after the last merged into their words, the rest stored whole.
    /// (Storing the partial words a byte at a time, each with its own
    /// checks, was a tenth of a bulk load's instructions: a leaf's value
    /// rarely starts on a word boundary.)
    pub(crate) fn write(&self, off: usize, src: &[u8]) -> FResult<()> {
        check(off, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        self.before_store(off, src.len());
        // `check` holds `off + src.len()` inside the frame, so every word
        // below exists.
        let mut words = self.words().get(off >> 3..).unwrap_or_default().iter();
        let mut rest = src;
        let lead = off & 7;
        if lead != 0 {
            let (head, tail) = rest.split_at((8 - lead).min(rest.len()));
            if let Some(w) = words.next() {
                merge_bytes(w, lead, head);
            }
            rest = tail;
        }
        let mut chunks = rest.chunks_exact(8);
        // Chunks first: `zip` stops on the first `None` without taking
        // an item from the second iterator, whose next word is the tail's.
        for (c, w) in (&mut chunks).zip(&mut words) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            if let Some(w) = words.next() {
                merge_bytes(w, 0, tail);
            }
        }
        Ok(())
    }
}

/// Stores `bytes` into word `w` from byte `at` on (`at + bytes.len() <=
/// 8`), keeping its other bytes.
#[inline]
fn merge_bytes(w: &AtomicU64, at: usize, bytes: &[u8]) {
    let mut b = w.load(Ordering::Relaxed).to_le_bytes();
    if let Some(dst) = b.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
    w.store(u64::from_le_bytes(b), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read_value` replaces `out` with exactly the bytes `read_into`
    /// reads, from every offset within a word and for lengths that end
    /// anywhere in a word, up to the frame's last byte; a value that would
    /// run past the frame is an error (and asks for no memory). Deliberate
    /// bugs tried: not shifting out the leading bytes (`copy_within(0.., 0)`);
    /// sizing the copy from the length alone (`pad8(len)`, which drops the
    /// tail of a value that starts late in a word); no bound check before
    /// the resize (the past-the-end case then fails in `copy_words` only
    /// after asking for the memory).
    #[test]
    fn read_value_matches_read_into_at_every_alignment() {
        let f = AtomicFrame::zeroed();
        let bytes: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(1))
            .collect();
        f.write(1024, &bytes).unwrap();
        f.write(FRAME_SIZE - 64, &bytes).unwrap();
        for base in [1024, FRAME_SIZE - 64] {
            for skip in 0..8 {
                for len in 0..=(64 - skip) {
                    let mut want = Vec::new();
                    f.read_into(base + skip, len, &mut want).unwrap();
                    let mut got = b"previous contents".to_vec();
                    f.read_value(base + skip, len, &mut got).unwrap();
                    assert_eq!(got, want, "at {} len {len}", base + skip);
                }
            }
        }
        let mut out = Vec::new();
        assert!(f.read_value(FRAME_SIZE - 3, 4, &mut out).is_err());
        assert!(f.read_value(8, usize::MAX, &mut out).is_err());
        assert!(f.read_value(8, 64 << 20, &mut out).is_err());
        assert!(out.capacity() < 1024, "no allocation for a bad length");
    }

    /// A walker prefetches the line after any child pointer it reads,
    /// torn or near the frame end, so offsets outside the frame must be
    /// ignored. Deliberate bug tried: indexing `words()[off >> 3]` in
    /// `prefetch` instead of `get` panics here.
    #[test]
    fn prefetch_ignores_offsets_outside_the_frame() {
        let f = AtomicFrame::zeroed();
        for off in [
            0,
            FRAME_SIZE - 8,
            FRAME_SIZE,
            FRAME_SIZE + 56,
            u32::MAX as usize,
        ] {
            f.prefetch(off);
        }
        f.prefetch(usize::MAX);
        assert_eq!(f.u64(FRAME_SIZE - 8), Ok(0), "the frame is unchanged");
    }

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

    /// `read_into` at every alignment and length, after bytes already in
    /// the buffer, and up to the frame's last byte, against the bytes
    /// written. Catches a shifted word merge that takes its high bytes
    /// from the wrong neighbour (tried: `next << shift` in place of
    /// `next << (64 - shift)`), a cut that keeps the padding past `len`,
    /// and a read of the word past the frame end that is not zero-safe.
    #[test]
    fn read_into_copies_exact_bytes_at_any_alignment() {
        let f = AtomicFrame::zeroed();
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        f.write(1024, &pattern).unwrap();
        let tail: Vec<u8> = (0..64u8).map(|i| i ^ 0x5A).collect();
        f.write(FRAME_SIZE - 64, &tail).unwrap();
        for start in 0..16 {
            for len in 0..80 {
                let mut out = b"xyz".to_vec();
                f.read_into(1024 + start, len, &mut out).unwrap();
                assert_eq!(&out[..3], b"xyz");
                assert_eq!(
                    &out[3..],
                    &pattern[start..start + len],
                    "at {start} len {len}"
                );
            }
        }
        for len in 0..=64 {
            let mut out = Vec::new();
            f.read_into(FRAME_SIZE - len, len, &mut out).unwrap();
            assert_eq!(out, &tail[64 - len..], "last {len} bytes");
        }
    }

    /// `copy_words` and `words_into` read whole words at 8-aligned
    /// offsets, up to the frame's last word, and refuse an unaligned
    /// offset or one running past the frame. Deliberate bugs tried: the
    /// word index taken as `off >> 2`, and a slice one word short
    /// (`dst.len() / 8 - 1`), which leaves the last word zero.
    #[test]
    fn whole_word_reads_copy_the_bytes_and_check_their_bounds() {
        let f = AtomicFrame::zeroed();
        let pattern: Vec<u8> = (0..256u32).map(|i| (i * 13 + 1) as u8).collect();
        f.write(2048, &pattern).unwrap();
        f.write(FRAME_SIZE - 16, &pattern[..16]).unwrap();
        for start in (0..64).step_by(8) {
            for words in 0..12 {
                let mut dst = vec![0xEE; 8 * words];
                f.copy_words(2048 + start, &mut dst).unwrap();
                assert_eq!(dst, &pattern[start..start + 8 * words], "at {start}");
                let mut w = vec![0u64; words];
                f.words_into(2048 + start, &mut w).unwrap();
                for (i, x) in w.iter().enumerate() {
                    assert_eq!(*x, f.u64(2048 + start + 8 * i).unwrap());
                }
            }
        }
        let mut dst = [0u8; 16];
        f.copy_words(FRAME_SIZE - 16, &mut dst).unwrap();
        assert_eq!(dst, pattern[..16]);
        assert!(f.copy_words(FRAME_SIZE - 8, &mut dst).is_err());
        assert!(f.copy_words(2051, &mut dst).is_err());
        assert!(f.copy_words(usize::MAX - 7, &mut dst).is_err());
        let mut w = [0u64; 2];
        assert!(f.words_into(FRAME_SIZE - 8, &mut w).is_err());
        assert!(f.words_into(2052, &mut w).is_err());
        assert!(f.words_into(usize::MAX - 7, &mut w).is_err());
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

    /// `write` stores exactly its bytes, at every start within a word and
    /// for every length that ends anywhere in a word, leaving the bytes
    /// around them as they were, up to the frame's last byte; a write
    /// past the end is an error that stores nothing. Deliberate bugs
    /// tried: storing the tail as a whole word (`w.store` of the zero-padded
    /// bytes, which clobbers the bytes after the write) and merging the
    /// head at byte 0 instead of at `off & 7`.
    #[test]
    fn writes_store_exact_bytes_at_any_alignment() {
        let f = AtomicFrame::zeroed();
        let around: Vec<u8> = (0..64u8).map(|i| i | 0x80).collect();
        for start in 0..8 {
            for len in 0..=24 {
                f.write(4096, &around).unwrap();
                let data: Vec<u8> = (0..len as u8).collect();
                f.write(4096 + 8 + start, &data).unwrap();
                let mut want = around.clone();
                want[8 + start..8 + start + len].copy_from_slice(&data);
                let mut out = Vec::new();
                f.read_into(4096, 64, &mut out).unwrap();
                assert_eq!(out, want, "start {start} len {len}");
            }
        }
        f.write(FRAME_SIZE - 64, &around).unwrap();
        f.write(FRAME_SIZE - 5, &[1, 2, 3, 4, 5]).unwrap();
        let mut out = Vec::new();
        f.read_into(FRAME_SIZE - 8, 8, &mut out).unwrap();
        assert_eq!(out, [around[56], around[57], around[58], 1, 2, 3, 4, 5]);
        assert!(f.write(FRAME_SIZE - 4, &[9; 5]).is_err());
        out.clear();
        f.read_into(FRAME_SIZE - 8, 8, &mut out).unwrap();
        assert_eq!(out, [around[56], around[57], around[58], 1, 2, 3, 4, 5]);
    }

    /// `store_words_from` copies exactly the words asked for between two
    /// frames, up to the last word of the frame; an unaligned offset or a
    /// run past the end on either side is an error that stores nothing.
    /// Deliberate bug tried: checking only the destination's bounds (the
    /// source run past the end is then copied short, without an error).
    #[test]
    fn word_copies_between_frames_are_exact_and_checked() {
        let src = AtomicFrame::zeroed();
        let dst = AtomicFrame::zeroed();
        let data: Vec<u8> = (0..48u8).map(|i| i | 0x40).collect();
        src.write(1024, &data).unwrap();
        src.write(FRAME_SIZE - 48, &data).unwrap();
        dst.write(2048, &[0xEE; 64]).unwrap();
        dst.store_words_from(2056, &src, 1032, 4).unwrap();
        let mut want = vec![0xEE; 64];
        want[8..40].copy_from_slice(&data[8..40]);
        let mut out = Vec::new();
        dst.read_into(2048, 64, &mut out).unwrap();
        assert_eq!(out, want);
        dst.store_words_from(FRAME_SIZE - 16, &src, FRAME_SIZE - 16, 2)
            .unwrap();
        out.clear();
        dst.read_into(FRAME_SIZE - 16, 16, &mut out).unwrap();
        assert_eq!(out, &data[32..]);
        for (to, from, n) in [
            (2052, 1032, 1),
            (2056, 1036, 1),
            (FRAME_SIZE - 8, 1032, 2),
            (2048, FRAME_SIZE - 8, 2),
        ] {
            assert!(dst.store_words_from(to, &src, from, n).is_err());
        }
        out.clear();
        dst.read_into(2048, 64, &mut out).unwrap();
        assert_eq!(out, want);
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
}
