//! Single-key writes: locate the owning frame optimistically, latch it
//! exclusively, edit it (spilling when it is full), mark it dirty while
//! still latched (so a concurrent write-back either sees the edit or
//! finds the mark; I1).

use std::sync::Arc;

use super::erase::{self, Target};
use super::insert::{self, Outcome};
use super::read::Step;
use super::{corrupt_in, spill, Core};
use crate::api::errors::{Error, Result};
use crate::buffer::manager::ROOT_GUID;
use crate::buffer::CachedBlob;
use crate::frame::header;

impl Core {
    /// Inserts or overwrites `key`. `log` runs after the edit, still under
    /// the frame's exclusive latch, and returns the edit's seq (it appends
    /// the WAL record in persistent mode).
    pub(crate) fn put(
        &self,
        key: &[u8],
        value: &[u8],
        log: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<Option<Vec<u8>>> {
        self.put_from(None, key, value, log)
    }

    /// [`Core::put`] starting at `first`, the frame (and its depth) where
    /// an earlier `locate` of `key` ended (a batch's pin pass), instead of
    /// descending from the root again. A stale location is harmless: it
    /// is exactly what a concurrent change between `locate` and the latch
    /// produces, and the insert reports it (an obsolete frame, or the
    /// key's path now crossing a link after a spill), which falls back to
    /// a fresh descent.
    pub(crate) fn put_from(
        &self,
        mut first: Option<(Arc<CachedBlob>, usize)>,
        key: &[u8],
        value: &[u8],
        log: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<Option<Vec<u8>>> {
        loop {
            let (blob, depth) = match first.take() {
                Some(at) => at,
                None => {
                    let loc = self.locate(key)?;
                    (loc.blob, loc.depth)
                }
            };
            let Some(w) = self.lock_live(blob) else {
                continue;
            };
            match insert::insert(w.frame(), key, depth, value)
                .map_err(|c| corrupt_in(w.blob(), c))?
            {
                Outcome::Done(old) => {
                    let seq = log()?;
                    self.bm.mark_dirty(w.blob().guid, seq);
                    return Ok(old);
                }
                Outcome::Link => {}
                Outcome::NoRoom => {
                    // A spill changes no key, so no record covers it; its
                    // frames are dirty with seq 0 ("since the last cut").
                    // WAL files are released per checkpoint cut, not by
                    // the dirty minimum, so the value only orders marks.
                    let seq = 0;
                    if !spill::spill(&self.bm, &w, seq).map_err(|c| corrupt_in(w.blob(), c))? {
                        return Err(Error::Internal("a frame cannot hold one entry"));
                    }
                    self.bm.mark_dirty(w.blob().guid, seq);
                    drop(w);
                    self.bm.evict_over_capacity();
                }
            }
        }
    }

    /// Removes `key`; `log` as for [`Core::put`], called only if the key
    /// existed.
    pub(crate) fn delete(
        &self,
        key: &[u8],
        log: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<Option<Vec<u8>>> {
        loop {
            let loc = self.locate(key)?;
            if !matches!(loc.step, Step::Found) {
                return Ok(None);
            }
            let blob = Arc::clone(&loc.blob);
            let Some(w) = self.lock_live(loc.blob) else {
                continue;
            };
            let f = w.frame();
            match erase::erase(f, key, loc.depth, Target::Key).map_err(|c| corrupt_in(&blob, c))? {
                erase::Outcome::Done(old) => {
                    self.bm.counters.erases.add(1);
                    let seq = log()?;
                    self.bm.mark_dirty(blob.guid, seq);
                    let empty = blob.guid != ROOT_GUID
                        && header::root(f).map_err(|c| corrupt_in(&blob, c))? == 0;
                    drop(w);
                    if empty {
                        if let Some((parent, pd)) = loc.parent {
                            self.unlink_if_empty(parent, pd, blob, &key[..loc.depth], seq)?;
                        }
                    }
                    return Ok(Some(old));
                }
                erase::Outcome::Absent => return Ok(None),
                erase::Outcome::Link => {}
            }
        }
    }
}
