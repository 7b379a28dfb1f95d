//! Rotation and release of WAL files. At a checkpoint cut [`Wal::rotate`]
//! writes out and syncs everything appended so far, renames the active
//! file to a retired name carrying its highest seq (`retired_name`) and
//! starts a fresh one, leading the group commit meanwhile; before that
//! it readies the spare buffer for the appends it will meet, and after
//! it writes them to the fresh file (`catch_up`). Once a durable
//! manifest covers a retired file's highest seq, [`Wal::release`]
//! deletes it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use holt_backend_sync::{IoFile, OpenOptions};

use super::append::{recycle, swap_out, DRAIN_AT};
use super::{io, State, Wal, ACTIVE};
use crate::api::errors::{Error, Result};
use crate::wal::record;

/// Most writes [`Wal::rotate`] makes into the fresh file of what was
/// appended while it ran (each takes less time than the one before, so
/// what is left shrinks; the bound only stops a writer that appends
/// faster than the disk takes it from keeping the round).
const CATCH_UP_WRITES: usize = 4;

/// Name of a retired WAL file whose last record has seq `last`.
pub(crate) fn retired_name(last: u64) -> String {
    format!("journal-{last:020}.wal")
}

/// Parses a retired file name back to its last seq.
pub(crate) fn retired_seq(name: &str) -> Option<u64> {
    name.strip_prefix("journal-")?
        .strip_suffix(".wal")?
        .parse()
        .ok()
}

/// Most bytes [`Wal::rotate`] prepares room for ahead of time.
const MAX_ROTATION_ROOM: usize = 16 << 20;

/// Bytes writers are expected to append while a rotation runs, given
/// `appended` bytes in the `since` the cut and the last rotation's
/// duration and bytes appended meanwhile: at the rate since the cut for
/// twice the last rotation's duration, and no less than the last
/// rotation saw; at most [`MAX_ROTATION_ROOM`].
fn rotation_room(appended: u64, since: Duration, last: (Duration, usize)) -> usize {
    let by_rate = match since.as_nanos() {
        0 => 0,
        ns => u128::from(appended) * last.0.as_nanos() * 2 / ns,
    };
    usize::try_from(by_rate)
        .unwrap_or(usize::MAX)
        .max(last.1)
        .min(MAX_ROTATION_ROOM)
}

impl Wal {
    /// Before a rotation takes the buffer: makes the spare, which appends
    /// go into while the rotation runs (no leader drains them meanwhile),
    /// big enough for what writers are expected to append by then
    /// ([`rotation_room`]), its memory touched here, in the round's
    /// thread. Without it a writer running through the rotation grew the
    /// buffer itself: reallocations and fresh zero-filled pages, each a
    /// page fault in the writer (at 64 dirty frames a rotation saw 1.6 MB
    /// appended, and a quarter of the round's slow puts faulted there).
    fn ready_spare_for_rotation(&self) {
        let want = {
            let st = self.lock();
            let Some((at, when)) = st.cut_mark else {
                return;
            };
            let room = rotation_room(st.appended - at, when.elapsed(), st.last_rotation);
            let have = match st.spare.capacity() {
                0 => DRAIN_AT * 2,
                c => c,
            };
            let want = room + record::MARKER_LEN;
            if want <= have {
                return;
            }
            want
        };
        // Writing every byte faults the pages in now, not in a writer;
        // `vec![0; want]` would not: calloc skips fresh, known-zero pages.
        #[allow(clippy::slow_vector_initialization)]
        let mut fresh = {
            let mut v = Vec::with_capacity(want);
            v.resize(want, 0);
            v
        };
        fresh.truncate(record::MARKER_LEN);
        let mut st = self.lock();
        if st.spare.capacity() < fresh.capacity() {
            std::mem::swap(&mut st.spare, &mut fresh);
        }
        drop(st);
        drop(fresh);
    }

    /// Rotation for a checkpoint whose cut is `cut`, run *outside* the
    /// commit gate: writers go on appending meanwhile. Acting as the
    /// group-commit leader (other leaders wait; appends do not), it writes
    /// out everything appended so far — every record <= `cut` and maybe
    /// some above it — syncs the active file, renames it to a retired name
    /// carrying its highest seq, and starts a fresh active file. A retired
    /// file may therefore hold records above the cut; [`Wal::release`]
    /// deletes it only once a durable manifest's cut covers its highest
    /// seq. On return every record <= `cut` is durable (W2D). It leads
    /// the round after the one in progress: while it waits, would-be
    /// leaders wait for it (`State::rotation_waiting`).
    pub(crate) fn rotate(&self, cut: u64) -> Result<()> {
        self.ready_spare_for_rotation();
        let mut st = self.lock();
        loop {
            if st.poisoned {
                st.rotation_waiting = false;
                return Err(Error::Poisoned);
            }
            if !st.leader {
                break;
            }
            st.rotation_waiting = true;
            self.park_until_round_ends(st);
            st = self.lock();
        }
        st.rotation_waiting = false;
        st.leader = true;
        let mut buf = swap_out(&mut st);
        let has_records = buf.len() > record::MARKER_LEN;
        record::encode_marker(st.synced_len, &mut buf);
        let upto = st.next_seq - 1;
        debug_assert!(upto >= cut, "records up to the cut were appended");
        let off = st.file_len;
        let file = Arc::clone(&st.file);
        drop(st);
        let end = if has_records {
            off + buf.len() as u64
        } else {
            off
        };
        let started = Instant::now();
        let active = self.dir.join(ACTIVE);
        let retired = self.dir.join(retired_name(upto));
        let mut wrote = true;
        let res = (|| -> std::io::Result<Option<Arc<dyn IoFile>>> {
            if has_records {
                if let Err(e) = file.write_at(&buf, off) {
                    wrote = false;
                    return Err(e);
                }
            }
            if end == 0 {
                // Nothing was ever written to this file: keep it.
                return Ok(None);
            }
            file.sync_data()?;
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            self.driver.rename(&active, &retired)?;
            let f = self.driver.open(
                &active,
                OpenOptions {
                    create: true,
                    direct: false,
                },
            )?;
            self.driver.sync_dir(&self.dir)?;
            Ok(Some(f))
        })();
        let mut st = self.lock();
        st.last_rotation = (started.elapsed(), st.buf.len());
        match res {
            Ok(fresh) => {
                st.written = st.written.max(upto);
                st.synced = st.synced.max(upto);
                if let Some(f) = fresh {
                    st.file = f;
                    st.file_len = 0;
                    st.alloc_end = 0;
                    st.synced_len = 0;
                    st.writeback_from = 0;
                    st.dir_synced = true;
                    st.retired.push((upto, retired));
                }
                recycle(&mut st, buf);
                if let Some(st) = self.catch_up(st)? {
                    self.end_round(st);
                }
                Ok(())
            }
            Err(e) if !wrote && e.kind() == std::io::ErrorKind::StorageFull => {
                // As in `drain`: the records go back in front of what was
                // appended meanwhile, to be written at the same offset.
                let newer = st.buf.split_off(record::MARKER_LEN);
                buf.extend_from_slice(&newer);
                st.buf = buf;
                self.end_round(st);
                Err(io(e))
            }
            Err(e) => {
                self.poison(&mut st);
                self.end_round(st);
                Err(io(e))
            }
        }
    }

    /// The end of a rotation, still leading: writes what was appended
    /// while it ran to the fresh file, while that is at least a buffered
    /// drain's worth ([`DRAIN_AT`]; at most [`CATCH_UP_WRITES`] times).
    /// Nobody drained meanwhile, so otherwise the first writer to append
    /// after the round would write it all — megabytes at a large append
    /// rate, one put taking milliseconds — on its own time. Written, not
    /// synced, as a buffered drain does; committers waiting for a sync
    /// still lead it after the round. `None`: the round is already ended,
    /// because the disk is full. The catch-up is only an optimisation and
    /// the rotation itself is done and durable, so that is not the
    /// rotation's failure: the records stay buffered for the next drain
    /// (`write_round` put them back), and the checkpoint goes on to
    /// release retired files, which may be what frees the space. Any
    /// other failure poisons the log and is returned (see `write_round`).
    fn catch_up<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> Result<Option<MutexGuard<'a, State>>> {
        for _ in 0..CATCH_UP_WRITES {
            if st.buf.len() < DRAIN_AT {
                break;
            }
            st = match self.write_round(st, false, false) {
                Ok(st) => st,
                Err(Error::BackendIo(e)) if e.kind() == std::io::ErrorKind::StorageFull => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
        }
        Ok(Some(st))
    }

    /// A checkpoint at `cut` is durable: delete the retired files it
    /// covers (those whose highest seq is <= `cut`; a file rotated after
    /// the cut waits for the next round). A failed delete leaves the file for the next round. Returns
    /// true if any file went.
    pub(crate) fn release(&self, cut: u64) -> bool {
        // Taken out under the mutex, deleted outside it: an unlink of tens
        // of megabytes (with a discard per freed extent on some mounts)
        // would otherwise hold up every append meanwhile.
        let covered: Vec<(u64, PathBuf)> = {
            let mut st = self.lock();
            let (covered, kept) = std::mem::take(&mut st.retired)
                .into_iter()
                .partition(|(last, _)| *last <= cut);
            st.retired = kept;
            covered
        };
        let before = covered.len();
        let failed: Vec<(u64, PathBuf)> = covered
            .into_iter()
            .filter(|(_, path)| self.driver.remove(path).is_err())
            .collect();
        let removed = failed.len() < before;
        if !failed.is_empty() {
            let mut st = self.lock();
            st.retired.extend(failed);
            st.retired.sort_by_key(|(last, _)| *last);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use holt_backend_sync::IoDriver;

    use super::super::test_files::{watched_wal, watched_wal_on, FullDisk, Watched};
    use super::*;
    use crate::wal::record::OpRef;

    /// The room a rotation prepares: the append rate since the cut over
    /// twice the last rotation's duration, at least what the last
    /// rotation saw appended, at most the bound.
    #[test]
    fn rotation_room_follows_the_rate_since_the_cut() {
        let ms = Duration::from_millis;
        assert_eq!(rotation_room(1000, ms(10), (ms(20), 0)), 4000);
        assert_eq!(rotation_room(1000, ms(10), (ms(20), 9000)), 9000);
        assert_eq!(rotation_room(0, ms(10), (Duration::ZERO, 0)), 0);
        assert_eq!(rotation_room(1000, Duration::ZERO, (ms(20), 5)), 5);
        assert_eq!(
            rotation_room(u64::MAX, Duration::from_nanos(1), (ms(1), 0)),
            MAX_ROTATION_ROOM
        );
    }

    /// A rotation waiting for the group-commit leader gets the next round
    /// even while a committer syncs back to back: the committer's next
    /// commit waits for the rotation (whose sync covers it) instead of
    /// leading again. Fails without `rotation_waiting` (the committer
    /// wins the mutex race after each round and the rotation waits for
    /// dozens to hundreds of rounds): it failed 3 of 5 runs here, the
    /// race being a matter of scheduling; the background checkpointer's
    /// power-loss test, whose rotations took 25-80 ms, failed every
    /// time.
    #[test]
    fn a_rotation_is_not_kept_out_by_a_committer() {
        let dir = tempfile::tempdir().unwrap();
        let driver: Arc<dyn IoDriver> = Arc::new(crate::io::SyncDriver::new());
        let wal = Wal::open(dir.path(), driver, None, 0, 0, 1, Vec::new()).unwrap();
        let done = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut k = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let seq = wal
                        .append(&[OpRef::Put(&k.to_le_bytes(), b"v")], false)
                        .unwrap();
                    wal.drain(seq, true).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
            let mut worst = 0;
            for _ in 0..40 {
                let at = done.load(Ordering::Relaxed);
                while done.load(Ordering::Relaxed) < at + 10 {
                    std::thread::yield_now();
                }
                // Records the committer appended between the cut and the
                // moment the rotation took the round: the highest seq the
                // rotation retired, above the cut. (Counted in seqs, not
                // in commits seen after `rotate` returns, so the test
                // thread being descheduled afterwards does not count.)
                let cut = wal.cut();
                wal.rotate(cut).unwrap();
                let upto = wal.lock().retired.last().unwrap().0;
                worst = worst.max(upto - cut);
            }
            stop.store(true, Ordering::Relaxed);
            // With the fix a rotation waits for at most the round in
            // progress (1-2 records).
            assert!(
                worst <= 8,
                "{worst} records appended while a rotation waited"
            );
        });
    }

    /// Before a rotation takes the buffer, the spare that appends go into
    /// meanwhile has room for the expected appends, so a writer running
    /// through the rotation does not grow the buffer; the rotation still
    /// writes and retires every record. Fails with the deliberate bug of
    /// `ready_spare_for_rotation` returning before it sizes the spare
    /// (the spare stays at 0 bytes of capacity).
    #[test]
    fn rotation_readies_a_spare_for_the_appends_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let driver: Arc<dyn IoDriver> = Arc::new(crate::io::SyncDriver::new());
        let wal = Wal::open(dir.path(), driver, None, 0, 0, 1, Vec::new()).unwrap();
        let value = [7u8; 200];
        for k in 0u32..100 {
            wal.append(&[OpRef::Put(&k.to_le_bytes(), &value)], true)
                .unwrap();
        }
        let cut = wal.cut();
        for k in 100u32..1100 {
            wal.append(&[OpRef::Put(&k.to_le_bytes(), &value)], true)
                .unwrap();
        }
        let appended = {
            let mut st = wal.lock();
            // The cut 10 ms ago and a last rotation of 50 ms: the expected
            // appends meanwhile are ten times those since the cut (at
            // least five however slow this test runs).
            let at = st.cut_mark.unwrap().0;
            st.cut_mark = Some((at, Instant::now() - Duration::from_millis(10)));
            st.last_rotation = (Duration::from_millis(50), 0);
            st.appended - at
        };
        assert!(appended > 200_000, "1000 records of over 200 bytes");
        wal.ready_spare_for_rotation();
        let cap = wal.lock().spare.capacity();
        assert!(
            cap >= 5 * usize::try_from(appended).unwrap(),
            "spare of {cap} bytes for {appended} appended since the cut"
        );
        wal.rotate(cut).unwrap();
        let st = wal.lock();
        assert_eq!(st.synced, 1100, "every record written and synced");
        assert_eq!(st.retired.len(), 1);
    }

    /// Puts one record, then sets `file` (the WAL's active file) to
    /// append 1000 more at its first sync, which is the rotation's: the
    /// appends a rotation meets. Returns the WAL and the cut to rotate at.
    fn appends_during_the_rotation(wal: Wal, file: &Watched) -> (Arc<Wal>, u64) {
        let wal = Arc::new(wal);
        let value = [5u8; 240];
        wal.append(&[OpRef::Put(b"first", &value)], true).unwrap();
        let weak = Arc::downgrade(&wal);
        let hook: Box<dyn Fn() + Send + Sync> = Box::new(move || {
            if let Some(wal) = weak.upgrade() {
                for k in 0u32..1000 {
                    wal.append(&[OpRef::Put(&k.to_le_bytes(), &value)], true)
                        .unwrap();
                }
            }
        });
        assert!(file.on_sync.set(hook).is_ok());
        let cut = wal.cut();
        (wal, cut)
    }

    /// What writers append while a rotation runs is written to the fresh
    /// file by the rotation itself (it is still the leader), not left for
    /// the first writer after the round to write in one long put.
    /// Deliberate bug caught: `rotate` ending its round without
    /// `catch_up` (the buffer then holds everything appended meanwhile).
    #[test]
    fn a_rotation_writes_what_was_appended_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, file) = watched_wal(dir.path());
        let (wal, cut) = appends_during_the_rotation(wal, &file);
        wal.rotate(cut).unwrap();
        let st = wal.lock();
        assert_eq!(st.retired.len(), 1, "rotated");
        assert_eq!(st.retired[0].0, cut, "the retired file ends at the cut");
        assert_eq!(st.next_seq - 1, 1001);
        assert!(
            st.buf.len() < DRAIN_AT,
            "{} bytes left for a writer",
            st.buf.len()
        );
        assert!(st.file_len > 200_000, "the fresh file holds the appends");
        assert_eq!(st.written, 1001, "every record handed to the OS");
        assert_eq!(st.synced, cut, "written, not synced");
    }

    /// A rotation whose catch-up finds the disk full still succeeds: the
    /// old file is retired and durable, the appends made meanwhile stay
    /// buffered for a later drain, and the checkpoint can release the
    /// retired file (which may be what frees the space). Deliberate bug
    /// caught: `rotate` returning the catch-up's `StorageFull` (the round
    /// then fails and never releases, so a full disk never clears).
    #[test]
    fn a_full_disk_during_the_catch_up_does_not_fail_the_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, file) =
            watched_wal_on(dir.path(), Arc::new(FullDisk(crate::io::SyncDriver::new())));
        let (wal, cut) = appends_during_the_rotation(wal, &file);
        wal.rotate(cut)
            .expect("the rotation itself is done and durable");
        {
            let st = wal.lock();
            assert_eq!(st.retired.len(), 1, "rotated");
            assert_eq!(st.next_seq - 1, 1001);
            assert!(st.buf.len() >= DRAIN_AT, "the appends are kept");
            assert_eq!(st.file_len, 0, "nothing reached the fresh file");
            assert_eq!(st.written, cut);
        }
        assert!(wal.release(cut), "the retired file is released");
        assert!(wal.lock().retired.is_empty());
    }
}
