//! Group commit: one *leader* at a time writes the whole append buffer
//! out and, when asked, fdatasyncs, covering every committer waiting
//! meanwhile ([`Wal::drain`]; the leader's round is `write_round`).
//!
//! Gathering (sync mode): committers block until a sync covers them, so
//! with N threads the ones released by a sync come back with new records
//! just after the next leader took the buffer, and syncs would alternate
//! between two halves of the crowd. A leader about to sync therefore
//! waits, before taking the buffer, until as many records are pending as
//! there were committers around the previous sync (the *crowd*), or for
//! at most half the previous sync's duration ([`MAX_GATHER`] at most).
//! The committer whose record completes the crowd does not wake the
//! gathering leader: it takes the round over and writes and syncs itself,
//! while the gatherer stays parked as an ordinary follower (a wake-up
//! less on the path from one sync to the next). A lone committer has a
//! crowd of one and never waits; a crowd that stops coming back shrinks
//! at the next sync.
//!
//! Spinning: a crowd is complete only once every member has appended
//! again, so every member's wake-up after a round lies on the path to the
//! next sync. Waking a parked thread costs tens of microseconds (a futex
//! wake, then an idle CPU leaving its sleep state; on a virtual machine a
//! VM exit too): with four committers the gap from one sync's end to the
//! next one's start measured about 75 µs, against about 12 µs for a lone
//! committer whose sync returns to a running thread. So a waiter (a
//! follower, or a gatherer) first spins, calling `yield_now` in a loop,
//! for at most 1.5 times the last sync's duration ([`MAX_SPIN`] at most),
//! and only then parks; a gatherer also spins through its gathering wait
//! (at most half the last sync) before that. Yielding hands the CPU to
//! any runnable thread, the leader whose sync has just completed
//! included. At most two
//! waiters per CPU spin at once ([`spin_slots`]; the builder's
//! `wal_spin_waiters` changes that bound, 0 switching spinning off for
//! hosts where CPU time is scarcer than sync latency); before any sync
//! has been timed (`last_sync` zero, e.g. buffered writes only) nobody
//! spins.
//!
//! Preallocation (sync mode): a sync that changes the file's size or
//! starts a new block makes the filesystem commit metadata (block
//! allocation, `i_size`) inside the fdatasync, which costs about half as
//! much again as syncing the data alone. So a leader about to sync a write
//! that ends past the zero-filled part of the file also writes zeros from
//! the end of its records up to the next [`PREALLOC`] boundary, covered by
//! the same sync: the next megabyte of commits then overwrites allocated,
//! written blocks inside the file's size, and their syncs are pure data.
//! The logical end of the log (`State::file_len`, where the next write
//! goes, and what batch markers vouch for) thus lies below the file's size;
//! recovery finds it as the first record that does not decode (see
//! `replay`). Only commits' syncs extend: buffered writes are not synced
//! one by one, and the sync at close is the last.
//!
//! Early writeback (buffered mode): a drain that leaves at least
//! [`WRITEBACK_EVERY`] bytes written since the last such start asks the
//! OS to start writing them to the device (`IoFile::start_writeback`,
//! without waiting). Otherwise every buffered record since the last
//! checkpoint stays dirty in the page cache until the rotation's
//! fdatasync, which then writes tens of megabytes in the middle of a
//! round and waits for them folio by folio, each completion waking the
//! round's thread on the core a writer runs on. Durability is unchanged:
//! only a sync makes anything durable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use holt_backend_sync::IoFile;

use super::append::{recycle, swap_out};
use super::{io, State, Wal};
use crate::api::errors::{Error, Result};
use crate::wal::record;

/// A syncing write that ends past the zero-filled part of the active file
/// zero-fills it up to the next multiple of this (see the module docs).
pub(crate) const PREALLOC: u64 = 1 << 20;

/// Buffered drains start writeback of what they wrote once this much is
/// unstarted (see the module docs).
pub(crate) const WRITEBACK_EVERY: u64 = 1 << 20;

/// Upper bound of a leader's wait for the crowd (see the module docs).
pub(crate) const MAX_GATHER: Duration = Duration::from_millis(2);

/// Upper bound of a waiter's spinning phase (see the module docs).
const MAX_SPIN: Duration = Duration::from_millis(1);

/// Writes zeros over `[from, to)` of `file` (past the log's logical end).
/// `Ok(false)` if the disk is full: the extension is only an optimisation,
/// the records before `from` are written and their sync goes ahead (a
/// partial extension leaves zeros past the logical end, which recovery
/// reads as the end of the log).
fn extend_with_zeros(file: &dyn IoFile, from: u64, to: u64) -> std::io::Result<bool> {
    let len = usize::try_from(to - from).unwrap_or(usize::MAX);
    let zeros = vec![0u8; len];
    match file.write_at(&zeros, from) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::StorageFull => Ok(false),
        Err(e) => Err(e),
    }
}

/// How many waiters may spin at once (see the module docs): enough for a
/// crowd of two per CPU. Spinners yield, so the thread whose sync
/// completes still gets a CPU at once.
///
/// Asked once per process: `available_parallelism` reads cgroup files
/// (tens of microseconds, on every tree open otherwise).
pub(super) fn spin_slots() -> usize {
    static SLOTS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SLOTS.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| 2 * n.get()))
}

/// A taken spin slot, given back on drop.
struct SpinSlot<'a>(&'a AtomicUsize);

impl Drop for SpinSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long a waiter spins before it parks (see the module docs).
fn spin_budget(st: &State) -> Duration {
    (st.last_sync * 3 / 2).min(MAX_SPIN)
}

/// Records appended and not yet covered by a sync.
fn pending(st: &State) -> usize {
    usize::try_from(st.next_seq - 1 - st.synced).unwrap_or(usize::MAX)
}

impl Wal {
    /// Makes every record up to `seq` reach the OS (`sync` false) or the
    /// disk (`sync` true), sharing the write and the sync with every
    /// writer waiting at the same time.
    pub(crate) fn drain(&self, seq: u64, sync: bool) -> Result<()> {
        if !sync {
            return self.drain_inner(seq, false, false);
        }
        self.synced_drain(seq, true)
    }

    /// `drain` with sync; `prealloc`: a leader may zero-fill ahead (only
    /// for commits, whose syncs come one after another; see the module
    /// docs).
    fn synced_drain(&self, seq: u64, prealloc: bool) -> Result<()> {
        self.counters.sync_commits.fetch_add(1, Ordering::Relaxed);
        self.sync_waiters.fetch_add(1, Ordering::Relaxed);
        let res = self.drain_inner(seq, true, prealloc);
        self.sync_waiters.fetch_sub(1, Ordering::Relaxed);
        res
    }

    /// Parks the caller until the current leader's round ends (`st.leader`
    /// is set). Registration happens under the mutex, and the round's end
    /// moves `epoch` and takes the whole list under it, so no wake-up is
    /// lost.
    pub(super) fn park_until_round_ends(&self, mut st: MutexGuard<'_, State>) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        st.parked.push(std::thread::current());
        let spin = spin_budget(&st);
        drop(st);
        self.wait_for_epoch(epoch, spin);
    }

    /// Waits until `epoch` moves: yielding for at most `spin` while a spin
    /// slot is free, then parked (the caller registered in `parked`
    /// under the mutex, so the round's end will unpark it).
    fn wait_for_epoch(&self, epoch: u64, spin: Duration) {
        if let Some(_slot) = self.spin_slot(spin) {
            let until = Instant::now() + spin;
            while self.epoch.load(Ordering::Acquire) == epoch && Instant::now() < until {
                std::thread::yield_now();
            }
        }
        while self.epoch.load(Ordering::Acquire) == epoch {
            std::thread::park();
        }
    }

    /// Lets at most `n` waiters spin at once (0: waiters park at once).
    /// Takes `&mut self`, so it runs before anyone can hold a slot.
    pub(crate) fn limit_spinners(&mut self, n: usize) {
        self.spin_limit = n;
        *self.spin_slots.get_mut() = n;
    }

    /// A spin slot, if `spin` is not zero and one is free (counted in
    /// `Counters::spins`).
    fn spin_slot(&self, spin: Duration) -> Option<SpinSlot<'_>> {
        if spin.is_zero() {
            return None;
        }
        self.spin_slots
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()?;
        self.counters.spins.fetch_add(1, Ordering::Relaxed);
        Some(SpinSlot(&self.spin_slots))
    }

    /// Ends the leader's round: publishes `synced`, moves `epoch` and
    /// wakes every parked thread.
    /// The wake-ups come after the mutex is released: woken committers
    /// append again at once and would queue on it.
    pub(super) fn end_round(&self, mut st: MutexGuard<'_, State>) {
        st.leader = false;
        self.synced.store(st.synced, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Release);
        let parked = std::mem::take(&mut st.parked);
        drop(st);
        for t in parked {
            t.unpark();
        }
    }

    /// Before a sync, called as the new leader: waits until the crowd's
    /// records are pending (see the module docs), for at most half the
    /// last sync's duration. Returns the mutex if the caller is still to
    /// write and sync, or `None` if a committer completed the crowd and
    /// took the round over; that round's end has then covered the caller's
    /// record (it was appended before the wait) or failed.
    fn gather_crowd<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Option<MutexGuard<'a, State>> {
        if st.crowd <= 1 || pending(&st) >= st.crowd {
            return Some(st);
        }
        let deadline = Instant::now() + (st.last_sync / 2).min(MAX_GATHER);
        st.gathering = true;
        // Parked like a follower, so the round's end wakes the caller
        // whoever leads it; `leader` stays set throughout.
        let epoch = self.epoch.load(Ordering::Relaxed);
        let me = std::thread::current();
        st.parked.push(me.clone());
        let spin = spin_budget(&st);
        drop(st);
        let slot = self.spin_slot(spin);
        loop {
            let now = Instant::now();
            if now >= deadline {
                let mut st = self.lock();
                if self.epoch.load(Ordering::Relaxed) != epoch {
                    // Taken over, and that round is over: `gathering`
                    // may be another leader's by now.
                    return None;
                }
                if !st.gathering {
                    // Taken over, the round still running: wait for its end.
                    drop(st);
                    break;
                }
                st.gathering = false;
                st.parked.retain(|t| t.id() != me.id());
                return Some(st);
            }
            if self.epoch.load(Ordering::Acquire) != epoch {
                return None;
            }
            if slot.is_some() {
                std::thread::yield_now();
            } else {
                std::thread::park_timeout(deadline - now);
            }
        }
        drop(slot);
        self.wait_for_epoch(epoch, spin);
        None
    }

    fn drain_inner(&self, seq: u64, sync: bool, prealloc: bool) -> Result<()> {
        let mut st = self.lock();
        loop {
            if st.poisoned {
                return Err(Error::Poisoned);
            }
            if (if sync { st.synced } else { st.written }) >= seq {
                return Ok(());
            }
            // A sync waits for a waiting rotation (whose sync covers it);
            // a buffered drain does not: it never comes back to back, and
            // parking it for a whole rotation (syncs, rename, directory
            // sync) would stall a writer that only needs a write.
            if st.leader || (sync && st.rotation_waiting) {
                if sync && st.gathering && pending(&st) >= st.crowd {
                    // Completes the crowd: lead in the gatherer's place.
                    st.gathering = false;
                    st = self.write_round(st, true, prealloc)?;
                    self.end_round(st);
                    return Ok(());
                }
                self.park_until_round_ends(st);
                if sync && self.synced.load(Ordering::Acquire) >= seq {
                    return Ok(());
                }
                st = self.lock();
                continue;
            }
            st.leader = true;
            if sync {
                match self.gather_crowd(st) {
                    Some(g) => st = g,
                    None => {
                        st = self.lock();
                        continue;
                    }
                }
            }
            st = self.write_round(st, sync, prealloc)?;
            // The leader's own record was in the buffer it took.
            self.end_round(st);
            return Ok(());
        }
    }

    /// The leader's round: takes the buffer, writes it at the end of the
    /// file and, with `sync`, fdatasyncs, all outside the mutex. Returns
    /// the mutex with `written` / `synced` advanced over everything the
    /// buffer held, for the caller to end the round; on failure the round
    /// is ended here. `prealloc`: zero-fill ahead (module docs).
    pub(super) fn write_round<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        sync: bool,
        prealloc: bool,
    ) -> Result<MutexGuard<'a, State>> {
        let mut buf = swap_out(&mut st);
        let has_records = buf.len() > record::MARKER_LEN;
        record::encode_marker(st.synced_len, &mut buf);
        let upto = st.next_seq - 1;
        let off = st.file_len;
        let end = off + buf.len() as u64;
        // Zero-fill ahead (module docs): [end, next PREALLOC boundary).
        let extend = (prealloc && has_records && end > st.alloc_end)
            .then(|| (end, (end / PREALLOC + 1) * PREALLOC));
        let file = Arc::clone(&st.file);
        let sync_dir = sync && !st.dir_synced;
        // Early writeback (module docs): only buffered drains; a sync
        // writes everything anyway.
        let writeback = (!sync && has_records && end - st.writeback_from >= WRITEBACK_EVERY)
            .then_some(st.writeback_from);
        drop(st);
        // Which stage failed matters: a write refused for lack of space
        // changed nothing durable and can be retried once space
        // returns; a failed sync may have lost pages for good.
        let mut wrote = true;
        let mut extended = false;
        let mut synced_in = Duration::ZERO;
        let res = (|| -> std::io::Result<()> {
            if has_records {
                if let Err(e) = file.write_at(&buf, off) {
                    wrote = false;
                    return Err(e);
                }
            }
            if let Some((from, to)) = extend {
                extended = extend_with_zeros(&*file, from, to)?;
            }
            if let Some(from) = writeback {
                // A hint: a failure here shows again at the next sync,
                // which is what reports it.
                let _ = file.start_writeback(from, end - from);
            }
            if sync {
                let t = Instant::now();
                file.sync_data()?;
                synced_in = t.elapsed();
            }
            if sync_dir {
                self.driver.sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        st = self.lock();
        match res {
            Ok(()) => {
                if has_records {
                    st.file_len = end;
                    st.alloc_end = st.alloc_end.max(end);
                }
                if writeback.is_some() {
                    st.writeback_from = end;
                }
                if let (true, Some((_, to))) = (extended, extend) {
                    st.alloc_end = st.alloc_end.max(to);
                }
                st.written = st.written.max(upto);
                if sync {
                    st.dir_synced |= sync_dir;
                    st.synced = st.synced.max(upto);
                    st.synced_len = st.file_len;
                    st.last_sync = synced_in;
                    st.crowd = self.sync_waiters.load(Ordering::Relaxed);
                    self.counters.syncs.fetch_add(1, Ordering::Relaxed);
                }
                recycle(&mut st, buf);
            }
            Err(e) if !wrote && e.kind() == std::io::ErrorKind::StorageFull => {
                // Disk full: put the records back in front of what was
                // appended meanwhile; the next leader writes them at the
                // same offset (nothing past `file_len` counts).
                let newer = st.buf.split_off(record::MARKER_LEN);
                buf.extend_from_slice(&newer);
                st.buf = buf;
                self.end_round(st);
                return Err(io(e));
            }
            Err(e) => {
                self.poison(&mut st);
                self.end_round(st);
                return Err(io(e));
            }
        }
        Ok(st)
    }

    /// Drains and syncs everything appended so far (at close: no
    /// zero-filling ahead, no more commits follow).
    pub(crate) fn sync_all(&self) -> Result<()> {
        let last = self.last_seq();
        self.synced_drain(last, false)
    }
}

#[cfg(test)]
mod tests {
    use holt_backend_sync::IoDriver;

    use super::super::test_files::watched_wal;
    use super::*;
    use crate::wal::record::OpRef;

    /// Four threads commit 100 records each, with a sync each; all 400
    /// are synced at the end.
    fn commit_400_from_four_threads(wal: &Wal) {
        std::thread::scope(|s| {
            for t in 0u32..4 {
                s.spawn(move || {
                    for k in 0u32..100 {
                        let key = (t << 16 | k).to_le_bytes();
                        let seq = wal.append(&[OpRef::Put(&key, b"v")], false).unwrap();
                        wal.drain(seq, true).unwrap();
                    }
                });
            }
        });
        assert_eq!(wal.lock().synced, 400, "every commit synced");
    }

    /// Four threads committing with a sync each: waiters spin (the
    /// crowd's members and the gatherers), every spin slot is given back
    /// once they are done, and every commit is durable. Fails with the
    /// deliberate bug of `SpinSlot::drop` not returning its slot (slots
    /// leak until nobody spins), and with waiters that never spin
    /// (`wait_for_epoch` and `gather_crowd` without a slot).
    #[test]
    fn committers_spin_and_give_every_slot_back() {
        let dir = tempfile::tempdir().unwrap();
        let driver: Arc<dyn IoDriver> = Arc::new(crate::io::SyncDriver::new());
        let wal = Wal::open(dir.path(), driver, None, 0, 0, 1, Vec::new()).unwrap();
        commit_400_from_four_threads(&wal);
        assert!(
            wal.counters.spins.load(Ordering::Relaxed) > 0,
            "waiters spun before parking"
        );
        assert_eq!(
            wal.spin_slots.load(Ordering::Relaxed),
            wal.spin_limit,
            "every spin slot given back"
        );
    }

    /// With the spinner limit at 0, four committers never spin and every
    /// commit is still synced. Fails if `limit_spinners` leaves the slots
    /// as they were (waiters then spin as by default).
    #[test]
    fn no_spin_slots_means_no_spinning() {
        let dir = tempfile::tempdir().unwrap();
        let driver: Arc<dyn IoDriver> = Arc::new(crate::io::SyncDriver::new());
        let mut wal = Wal::open(dir.path(), driver, None, 0, 0, 1, Vec::new()).unwrap();
        wal.limit_spinners(0);
        commit_400_from_four_threads(&wal);
        assert_eq!(wal.counters.spins.load(Ordering::Relaxed), 0);
        assert_eq!(wal.spin_slots.load(Ordering::Relaxed), 0);
    }

    /// Buffered drains start writeback of what they wrote, a megabyte or
    /// more at a time, front to back without gaps, so a rotation's sync
    /// finds less than [`WRITEBACK_EVERY`] (plus the last drain) left to
    /// write. Deliberate bug caught: drains never starting writeback (all
    /// of it left to the rotation's fdatasync, inside the round).
    #[test]
    fn buffered_drains_start_writeback_every_megabyte() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, file) = watched_wal(dir.path());
        let value = [3u8; 240];
        for k in 0u32..16_000 {
            wal.append(&[OpRef::Put(&k.to_le_bytes(), &value)], true)
                .unwrap();
        }
        let st = wal.lock();
        assert!(st.file_len > 3 * WRITEBACK_EVERY, "{} written", st.file_len);
        let ranges = file.writebacks.lock().unwrap().clone();
        assert!(ranges.len() >= 3, "{ranges:?}");
        let mut next = 0;
        for &(off, len) in &ranges {
            assert_eq!(off, next, "no gap, no overlap: {ranges:?}");
            assert!(len >= WRITEBACK_EVERY, "{ranges:?}");
            next = off + len;
        }
        assert_eq!(next, st.writeback_from);
        assert!(st.file_len - st.writeback_from < WRITEBACK_EVERY);
    }
}
