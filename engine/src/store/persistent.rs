//! [`PersistentBackend`]: blob frames in a slotted data file under a data
//! directory, made durable by shadow paging (DESIGN.md §8, §9, §11).
//!
//! Files in the data directory:
//! - `LOCK`: held with `flock` for the backend's lifetime ([`DirLock`]);
//! - `frames.dat`: slot `i` holds one 512 KiB frame image at bytes
//!   `[i * FRAME_SIZE, (i + 1) * FRAME_SIZE)`; opened with `O_DIRECT` where
//!   the filesystem allows it;
//! - `MANIFEST`: guid → slot map plus checkpoint metadata (see
//!   [`manifest`](super::manifest)), replaced atomically through
//!   `MANIFEST.tmp`.
//!
//! Slot bookkeeping: a slot is *referenced* while the durable manifest maps
//! a guid to it, the live map does, an I/O on it is in flight, or a manifest
//! being (or possibly) persisted names it. Only unreferenced slots are
//! *free*, and writes go only to free slots, so the durable copy of a frame
//! is never overwritten.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use holt_backend_sync::{
    DirLock, Feed, IoDriver, IoFile, OpenOptions, StreamWrite, SyncDriver, WriteFeed,
};

use super::manifest::Manifest;
use super::{AlignedBlobBuf, Backend, BlobGuid, ImageFeed, ImageNext, FRAME_SIZE};
use crate::api::errors::{Error, Result};

/// Name of the slotted data file inside the data directory.
const DATA_FILE: &str = "frames.dat";
/// Name of the manifest inside the data directory.
const MANIFEST_FILE: &str = "MANIFEST";
/// Name of the manifest being written, renamed over [`MANIFEST_FILE`].
const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";
/// Bytes per slot.
const SLOT_BYTES: u64 = FRAME_SIZE as u64;
/// The data file grows by a multiple of this many slots (4 MiB).
const GROW_SLOTS: u64 = 8;
/// A manifest larger than this (about 44 million frames, 22 TiB of data)
/// is treated as corrupt rather than read into memory.
const MAX_MANIFEST_BYTES: u64 = 1 << 30;

/// A [`Backend`] that stores frames in `<dir>/frames.dat` and their
/// locations in `<dir>/MANIFEST`, with **shadow paging**:
///
/// - [`write_blob`](Backend::write_blob) always writes the new image to a
///   *free* slot — never to the slot the durable manifest names for that
///   guid — and only then points the in-memory (live) map at it. A rewrite
///   therefore never overwrites the durable copy of a frame.
/// - [`delete_blob`](Backend::delete_blob) only drops the guid from the live
///   map.
/// - [`flush`](Backend::flush) `fdatasync`s the data file, then replaces the
///   manifest atomically (write `MANIFEST.tmp`, `fsync`, rename over
///   `MANIFEST`, `fsync` the directory). Slots that only the previous
///   manifest referenced are released for reuse only after the new manifest
///   is durable.
///
/// **Crash guarantee:** after a crash or power loss at any instant, reopening
/// the directory yields exactly the frames of the last manifest that was
/// made durable by a successful `flush` — every frame it names is intact,
/// and writes or deletes after that flush are invisible. A failed `flush`
/// leaves the previous manifest in force and the in-memory state unchanged,
/// so it can be retried.
///
/// The directory is locked for the backend's lifetime: a second open (from
/// this process or another) fails with [`Error::Locked`] until this value
/// is dropped. Dropping does not flush.
pub struct PersistentBackend {
    /// The data directory.
    dir: PathBuf,
    /// `<dir>/MANIFEST`.
    manifest_path: PathBuf,
    /// `<dir>/MANIFEST.tmp`.
    manifest_tmp_path: PathBuf,
    /// The driver every byte and directory change goes through.
    driver: Arc<dyn IoDriver>,
    /// The open data file.
    data: Arc<dyn IoFile>,
    /// Slot maps and checkpoint metadata.
    state: Mutex<State>,
    /// Serialises [`Backend::flush`] calls (they share `MANIFEST.tmp`).
    flush_lock: Mutex<()>,
    /// Exclusive lock on the directory; released on drop.
    _lock: DirLock,
}

/// Everything behind the state mutex. Invariant: `free` holds exactly the
/// slots `< slot_count` that [`State::is_referenced`] rejects.
#[derive(Debug, Default)]
struct State {
    /// Guid → slot as the last durable manifest has it.
    durable: HashMap<BlobGuid, u64>,
    /// The slots of `durable`.
    durable_slots: HashSet<u64>,
    /// Guid → slot including writes and deletes not yet flushed.
    live: HashMap<BlobGuid, u64>,
    /// The slots of `live`.
    live_slots: HashSet<u64>,
    /// Slots with a read or write in flight, with their in-flight count.
    busy: HashMap<u64, u32>,
    /// Slots named by the manifest a running flush is persisting.
    flushing: HashSet<u64>,
    /// Slots named by a manifest whose rename may have reached the disk in
    /// a failed flush; protected until the next successful flush.
    maybe_durable: HashSet<u64>,
    /// Unreferenced slots, lowest first.
    free: BTreeSet<u64>,
    /// Slots the data file has room for.
    slot_count: u64,
    /// `(cut_seq, seq_floor)` for the next manifest.
    staged_meta: (u64, u64),
    /// `(cut_seq, seq_floor)` of the durable manifest.
    durable_meta: (u64, u64),
    /// Bumped by every change the next manifest must capture.
    generation: u64,
    /// `generation` captured by the durable manifest; `None` when no
    /// manifest exists.
    flushed_generation: Option<u64>,
    /// Size in bytes of the durable manifest.
    manifest_bytes: u64,
}

impl State {
    /// Whether `slot` must not be handed out for a write.
    fn is_referenced(&self, slot: u64) -> bool {
        self.durable_slots.contains(&slot)
            || self.live_slots.contains(&slot)
            || self.busy.contains_key(&slot)
            || self.flushing.contains(&slot)
            || self.maybe_durable.contains(&slot)
    }

    /// Returns `slot` to `free` if nothing references it any more.
    fn release(&mut self, slot: u64) {
        if slot < self.slot_count && !self.is_referenced(slot) {
            self.free.insert(slot);
        }
    }

    /// Recomputes `free` from scratch.
    fn rebuild_free(&mut self) {
        let free: BTreeSet<u64> = (0..self.slot_count)
            .filter(|&slot| !self.is_referenced(slot))
            .collect();
        self.free = free;
    }

    /// Marks `slot` as having one more I/O in flight.
    fn pin(&mut self, slot: u64) {
        *self.busy.entry(slot).or_insert(0) += 1;
    }

    /// Ends one in-flight I/O on `slot`, releasing it if now unreferenced.
    fn unpin(&mut self, slot: u64) {
        if let Some(count) = self.busy.get_mut(&slot) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.busy.remove(&slot);
                self.release(slot);
            }
        }
    }

    /// Points `guid` at `slot` in the live map, releasing its previous live
    /// slot (which stays reserved if the durable manifest references it).
    fn set_live(&mut self, guid: BlobGuid, slot: u64) {
        self.live_slots.insert(slot);
        if let Some(old) = self.live.insert(guid, slot) {
            if old != slot {
                self.live_slots.remove(&old);
                self.release(old);
            }
        }
        self.generation = self.generation.wrapping_add(1);
    }
}

/// Where a failed flush stopped: whether the manifest rename may have
/// happened.
struct FlushFailure {
    /// The rename was attempted, so the new manifest may be (or become)
    /// the one on disk.
    renamed: bool,
    /// The underlying error.
    error: Error,
}

impl PersistentBackend {
    /// Opens (creating it if missing) the data directory `data_dir` with
    /// the portable [`SyncDriver`].
    ///
    /// Takes the directory lock, opens `frames.dat` with `O_DIRECT` (falling
    /// back to buffered I/O where the filesystem refuses it; see
    /// [`is_direct`](Self::is_direct)) and loads `MANIFEST` if present. A
    /// stale `MANIFEST.tmp` from an interrupted flush is removed.
    ///
    /// # Errors
    /// [`Error::Locked`] if another handle holds the directory,
    /// [`Error::Corrupt`] if the manifest fails validation or names slots
    /// past the end of the data file, [`Error::BackendIo`] for I/O failures.
    pub fn open<P: Into<PathBuf>>(data_dir: P) -> Result<Self> {
        Self::open_with_driver(data_dir, Arc::new(SyncDriver::new()))
    }

    /// Like [`open`](Self::open), with every file and directory operation
    /// going through `driver` (for example io_uring, or a fault-injecting
    /// wrapper in tests).
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub fn open_with_driver<P: Into<PathBuf>>(
        data_dir: P,
        driver: Arc<dyn IoDriver>,
    ) -> Result<Self> {
        let dir = data_dir.into();
        driver.create_dir_all(&dir).map_err(Error::BackendIo)?;
        let lock = DirLock::acquire(&dir).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                Error::Locked { dir: dir.clone() }
            } else {
                Error::BackendIo(e)
            }
        })?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_tmp_path = dir.join(MANIFEST_TMP_FILE);
        match driver.remove(&manifest_tmp_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::BackendIo(e)),
            _ => {}
        }
        let data_path = dir.join(DATA_FILE);
        let data = driver
            .open(
                &data_path,
                OpenOptions {
                    create: true,
                    direct: true,
                },
            )
            .map_err(Error::BackendIo)?;
        let data_len = data.len().map_err(Error::BackendIo)?;
        let loaded = load_manifest(driver.as_ref(), &manifest_path)?;
        let state = initial_state(loaded, data_len, &data_path)?;
        Ok(Self {
            dir,
            manifest_path,
            manifest_tmp_path,
            driver,
            data,
            state: Mutex::new(state),
            flush_lock: Mutex::new(()),
            _lock: lock,
        })
    }

    /// The data directory this backend was opened on.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Number of frames currently stored (the live map, including writes
    /// and deletes not yet flushed).
    #[must_use]
    pub fn len(&self) -> usize {
        self.state().live.len()
    }

    /// Whether no frame is currently stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.state().live.is_empty()
    }

    /// Whether the data file is open with `O_DIRECT`; `false` where the
    /// filesystem refused it (tmpfs) and buffered I/O plus `fdatasync` is
    /// used instead. Durability is the same either way.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.data.is_direct()
    }

    /// The I/O driver every file and directory operation goes through.
    #[must_use]
    pub fn driver(&self) -> &Arc<dyn IoDriver> {
        &self.driver
    }

    /// Number of 512 KiB slots the data file currently has room for. Slots
    /// are reused once no durable manifest references them, so rewriting
    /// the same frames keeps this bounded (about twice the live frames).
    #[must_use]
    pub fn slot_count(&self) -> u64 {
        self.state().slot_count
    }

    /// Bytes on disk: the data file's length plus the durable manifest's
    /// size (for bytes-per-key reports).
    #[must_use]
    pub fn file_bytes(&self) -> u64 {
        let st = self.state();
        let data_bytes = self
            .data
            .len()
            .unwrap_or_else(|_| st.slot_count.saturating_mul(SLOT_BYTES));
        data_bytes.saturating_add(st.manifest_bytes)
    }

    /// Stages the checkpoint metadata — the WAL cut the flushed frames
    /// reflect and the floor above which sequence numbers resume — to be
    /// persisted by the next [`flush`](Backend::flush) in the same manifest
    /// as the frame map, so both become durable together.
    pub fn set_checkpoint_meta(&self, cut_seq: u64, seq_floor: u64) {
        let mut st = self.state();
        if st.staged_meta != (cut_seq, seq_floor) {
            st.staged_meta = (cut_seq, seq_floor);
            st.generation = st.generation.wrapping_add(1);
        }
    }

    /// `(cut_seq, seq_floor)` of the durable manifest; `(0, 0)` when no
    /// manifest has been written yet.
    #[must_use]
    pub fn checkpoint_meta(&self) -> (u64, u64) {
        self.state().durable_meta
    }

    /// Locks the state; a poisoned lock is recovered, since every update
    /// under it leaves the maps consistent before any call that can fail.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `n` free slots (lowest first), growing the data file when
    /// there are too few, and pins them for writing.
    fn reserve(&self, n: usize) -> Result<Vec<u64>> {
        let mut st = self.state();
        let have = st.free.len();
        if have < n {
            let missing = (n - have) as u64;
            let grow = missing.div_ceil(GROW_SLOTS).saturating_mul(GROW_SLOTS);
            let start = st.slot_count;
            let end = start
                .checked_add(grow)
                .filter(|end| end.checked_mul(SLOT_BYTES).is_some())
                .ok_or(Error::Internal("data file slot count overflow"))?;
            self.data
                .allocate(start * SLOT_BYTES, grow * SLOT_BYTES)
                .map_err(Error::BackendIo)?;
            st.slot_count = end;
            st.free.extend(start..end);
        }
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            let slot = st
                .free
                .pop_first()
                .ok_or(Error::Internal("free slot set shorter than counted"))?;
            st.pin(slot);
            slots.push(slot);
        }
        Ok(slots)
    }

    /// Persists `manifest` atomically after syncing the data file.
    fn persist(&self, manifest: &Manifest) -> std::result::Result<u64, FlushFailure> {
        let early = |e: io::Error| FlushFailure {
            renamed: false,
            error: Error::BackendIo(e),
        };
        self.data.sync_data().map_err(early)?;
        let bytes = manifest.encode();
        let tmp = self
            .driver
            .open(
                &self.manifest_tmp_path,
                OpenOptions {
                    create: true,
                    direct: false,
                },
            )
            .map_err(early)?;
        tmp.set_len(0).map_err(early)?;
        tmp.write_at(&bytes, 0).map_err(early)?;
        tmp.sync_all().map_err(early)?;
        drop(tmp);
        let late = |e: io::Error| FlushFailure {
            renamed: true,
            error: Error::BackendIo(e),
        };
        self.driver
            .rename(&self.manifest_tmp_path, &self.manifest_path)
            .map_err(late)?;
        self.driver.sync_dir(&self.dir).map_err(late)?;
        Ok(bytes.len() as u64)
    }
}

/// Reads and decodes `path`; `None` if it does not exist.
fn load_manifest(driver: &dyn IoDriver, path: &Path) -> Result<Option<Manifest>> {
    let opts = OpenOptions {
        create: false,
        direct: false,
    };
    let file = match driver.open(path, opts) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::BackendIo(e)),
    };
    let len = file.len().map_err(Error::BackendIo)?;
    let too_large = Error::Corrupt {
        file: path.to_path_buf(),
        offset: MAX_MANIFEST_BYTES,
        context: "manifest larger than any valid manifest",
    };
    if len > MAX_MANIFEST_BYTES {
        return Err(too_large);
    }
    let len = usize::try_from(len).map_err(|_| too_large)?;
    let mut bytes = vec![0u8; len];
    file.read_at(&mut bytes, 0).map_err(Error::BackendIo)?;
    Manifest::decode(&bytes, path).map(Some)
}

/// Builds the in-memory state from the loaded manifest and the data file's
/// length.
fn initial_state(loaded: Option<Manifest>, data_len: u64, data_path: &Path) -> Result<State> {
    let mut st = State {
        slot_count: data_len / SLOT_BYTES,
        ..State::default()
    };
    if let Some(m) = loaded {
        if let Some(&(_, slot)) = m.entries.iter().max_by_key(|e| e.1) {
            if slot.saturating_add(1).saturating_mul(SLOT_BYTES) > data_len {
                return Err(Error::Corrupt {
                    file: data_path.to_path_buf(),
                    offset: data_len,
                    context: "data file ends before a slot the manifest references",
                });
            }
        }
        st.slot_count = st.slot_count.max(m.slot_count);
        st.durable = m.entries.iter().copied().collect();
        st.durable_slots = st.durable.values().copied().collect();
        st.live = st.durable.clone();
        st.live_slots = st.durable_slots.clone();
        st.durable_meta = (m.cut_seq, m.seq_floor);
        st.staged_meta = st.durable_meta;
        st.flushed_generation = Some(st.generation);
        st.manifest_bytes = Manifest::encoded_len(m.entries.len()) as u64;
    }
    st.rebuild_free();
    Ok(st)
}

/// A [`PersistentBackend::write_stream`] in progress: gives each image a
/// slot on its way to the driver and maps it when its write comes back.
struct Slotted<'a> {
    backend: &'a PersistentBackend,
    feed: &'a mut dyn ImageFeed,
    /// Guid of each write in flight, by slot (the write's tag).
    guids: HashMap<u64, BlobGuid>,
    /// A slot could not be reserved: the stream ended early with this.
    error: Option<Error>,
}

impl WriteFeed for Slotted<'_> {
    fn next(&mut self, wait: bool) -> Feed {
        if self.error.is_some() {
            return Feed::End;
        }
        let (guid, buf) = match self.feed.next(wait) {
            ImageNext::Image(guid, buf) => (guid, buf),
            ImageNext::NotYet => return Feed::NotYet,
            ImageNext::End => return Feed::End,
        };
        let slot = match self.backend.reserve(1).map(|slots| slots.first().copied()) {
            Ok(Some(slot)) => slot,
            Ok(None) => {
                self.feed.done(guid, buf, false);
                self.error = Some(Error::Internal("no slot reserved"));
                return Feed::End;
            }
            Err(e) => {
                self.feed.done(guid, buf, false);
                self.error = Some(e);
                return Feed::End;
            }
        };
        self.guids.insert(slot, guid);
        Feed::Write(StreamWrite {
            offset: slot_offset(slot),
            tag: slot,
            buf: Box::new(buf),
        })
    }

    fn done(&mut self, write: StreamWrite, ok: bool) {
        let slot = write.tag;
        let guid = self.guids.remove(&slot);
        {
            let mut st = self.backend.state();
            if let (true, Some(guid)) = (ok, guid) {
                // Mapped before unpinning, so no slot is ever momentarily
                // free.
                st.set_live(guid, slot);
            }
            st.unpin(slot);
        }
        // Every write this feed hands out carries an `AlignedBlobBuf`.
        if let (Some(guid), Ok(buf)) = (guid, write.buf.into_any().downcast::<AlignedBlobBuf>()) {
            self.feed.done(guid, *buf, ok);
        }
    }
}

/// Offset of `slot` in the data file (slots are bounded so this cannot
/// overflow; see [`PersistentBackend::reserve`]).
fn slot_offset(slot: u64) -> u64 {
    slot.saturating_mul(SLOT_BYTES)
}

impl Backend for PersistentBackend {
    fn read_blob(&self, guid: BlobGuid, dst: &mut AlignedBlobBuf) -> Result<()> {
        let slot = {
            let mut st = self.state();
            let Some(&slot) = st.live.get(&guid) else {
                return Err(Error::BackendIo(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("blob {guid:02x?} not found"),
                )));
            };
            // Pinned so a concurrent rewrite or delete cannot hand the slot
            // to another write while this read is in flight.
            st.pin(slot);
            slot
        };
        let res = self.data.read_at(dst.as_mut_slice(), slot_offset(slot));
        self.state().unpin(slot);
        res.map_err(Error::BackendIo)
    }

    fn write_blob(&self, guid: BlobGuid, src: &AlignedBlobBuf) -> Result<()> {
        self.write_blobs(&[(guid, src)])
    }

    /// One [`IoFile::read_batch`] call (one io_uring submission) for all
    /// frames; their slots are pinned while the reads are in flight.
    fn read_blobs(&self, reads: &mut [(BlobGuid, &mut AlignedBlobBuf)]) -> Result<()> {
        let slots = {
            let mut st = self.state();
            let mut slots = Vec::with_capacity(reads.len());
            for (guid, _) in reads.iter() {
                let Some(&slot) = st.live.get(guid) else {
                    for &s in &slots {
                        st.unpin(s);
                    }
                    return Err(Error::BackendIo(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("blob {guid:02x?} not found"),
                    )));
                };
                st.pin(slot);
                slots.push(slot);
            }
            slots
        };
        let mut batch: Vec<(u64, &mut [u8])> = reads
            .iter_mut()
            .zip(&slots)
            .map(|((_, buf), &slot)| (slot_offset(slot), buf.as_mut_slice()))
            .collect();
        let res = self.data.read_batch(&mut batch);
        let mut st = self.state();
        for &s in &slots {
            st.unpin(s);
        }
        res.map_err(Error::BackendIo)
    }

    /// Picks all slots first, then submits every image in one
    /// [`IoFile::write_batch`] call (one io_uring submission). On error no
    /// guid is remapped and every picked slot is freed again.
    fn write_blobs(&self, blobs: &[(BlobGuid, &AlignedBlobBuf)]) -> Result<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        let slots = self.reserve(blobs.len())?;
        let writes: Vec<(u64, &[u8])> = slots
            .iter()
            .zip(blobs)
            .map(|(&slot, (_, buf))| (slot_offset(slot), buf.as_slice()))
            .collect();
        let res = self.data.write_batch(&writes);
        let mut st = self.state();
        if res.is_ok() {
            // Mapped before unpinning, so no slot is ever momentarily free.
            for (&slot, (guid, _)) in slots.iter().zip(blobs) {
                st.set_live(*guid, slot);
            }
        }
        // On error the slots are unreferenced again and return to `free`.
        for &slot in &slots {
            st.unpin(slot);
        }
        res.map_err(Error::BackendIo)
    }

    /// Takes a free slot for each image as the feed hands it out and
    /// streams the writes through [`IoFile::write_stream`]; each guid is
    /// remapped as soon as its own write has completed, and its slot is
    /// unpinned (a failed write's slot returns to `free`).
    fn write_stream(&self, feed: &mut dyn ImageFeed) -> Result<()> {
        let mut slotted = Slotted {
            backend: self,
            feed,
            guids: HashMap::new(),
            error: None,
        };
        let res = self.data.write_stream(&mut slotted);
        match slotted.error.take() {
            Some(e) => Err(e),
            None => res.map_err(Error::BackendIo),
        }
    }

    fn delete_blob(&self, guid: BlobGuid) -> Result<()> {
        let mut st = self.state();
        if let Some(slot) = st.live.remove(&guid) {
            st.live_slots.remove(&slot);
            st.release(slot);
            st.generation = st.generation.wrapping_add(1);
        }
        Ok(())
    }

    fn list_blobs(&self) -> Result<Vec<BlobGuid>> {
        let mut guids: Vec<BlobGuid> = self.state().live.keys().copied().collect();
        guids.sort_unstable();
        Ok(guids)
    }

    /// Syncs the data file, then persists the live map and the staged
    /// checkpoint metadata as the new manifest (write `MANIFEST.tmp`,
    /// `fsync`, rename, `fsync` the directory). Only then are slots that
    /// only the old manifest referenced released. Does nothing when nothing
    /// changed since the last successful flush.
    fn flush(&self) -> Result<()> {
        let _serial = self
            .flush_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (manifest, snapshot, generation) = {
            let mut st = self.state();
            if st.flushed_generation == Some(st.generation) {
                return Ok(());
            }
            // Every write in `live` finished its `write_at` before being
            // mapped, so the `sync_data` below covers all of them.
            let snapshot = st.live.clone();
            let (cut_seq, seq_floor) = st.staged_meta;
            let manifest = Manifest::from_map(cut_seq, seq_floor, st.slot_count, &snapshot);
            st.flushing = snapshot.values().copied().collect();
            (manifest, snapshot, st.generation)
        };
        let res = self.persist(&manifest);
        let mut st = self.state();
        let flushing = std::mem::take(&mut st.flushing);
        match res {
            Ok(bytes) => {
                st.durable = snapshot;
                st.durable_slots = flushing;
                st.durable_meta = (manifest.cut_seq, manifest.seq_floor);
                st.maybe_durable.clear();
                st.flushed_generation = Some(generation);
                st.manifest_bytes = bytes;
                st.rebuild_free();
                Ok(())
            }
            Err(FlushFailure { renamed, error }) => {
                if renamed {
                    st.maybe_durable.extend(flushing);
                }
                st.rebuild_free();
                Err(error)
            }
        }
    }

    fn has_blob(&self, guid: BlobGuid) -> Result<bool> {
        Ok(self.state().live.contains_key(&guid))
    }

    /// Forwards to the driver's
    /// [`IoDriver::reserve_buffers`] for frame-sized buffers.
    fn reserve_frame_bufs(&self, count: usize) -> usize {
        self.driver.reserve_buffers(FRAME_SIZE, count)
    }

    /// The driver's [`IoDriver::alloc_buffer`] of one frame (a registered
    /// arena slot on io_uring while one is free), else a plain frame.
    fn alloc_frame_buf(&self) -> AlignedBlobBuf {
        self.driver
            .alloc_buffer(FRAME_SIZE)
            .ok()
            .and_then(|buf| AlignedBlobBuf::from_driver_buffer(buf).ok())
            .unwrap_or_else(AlignedBlobBuf::zeroed)
    }
}

impl fmt::Debug for PersistentBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        f.debug_struct("PersistentBackend")
            .field("dir", &self.dir)
            .field("driver", &self.driver.name())
            .field("direct", &self.data.is_direct())
            .field("slot_count", &st.slot_count)
            .field("live", &st.live.len())
            .field("durable", &st.durable.len())
            .field("free", &st.free.len())
            .field("checkpoint_meta", &st.durable_meta)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(byte: u8) -> AlignedBlobBuf {
        let mut buf = AlignedBlobBuf::zeroed();
        buf.as_mut_slice().fill(byte);
        buf
    }

    #[test]
    fn slots_are_shadowed_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let b = PersistentBackend::open(dir.path()).unwrap();
        let g = [1u8; 16];
        b.write_blob(g, &frame(1)).unwrap();
        assert_eq!(b.state().live[&g], 0);
        // Never durable: the rewrite frees slot 0 at once.
        b.write_blob(g, &frame(2)).unwrap();
        assert_eq!(b.state().live[&g], 1);
        assert!(b.state().free.contains(&0));
        b.flush().unwrap();
        // Durable in slot 1: the rewrite goes to slot 0, slot 1 stays
        // reserved until the next flush.
        b.write_blob(g, &frame(3)).unwrap();
        assert_eq!(b.state().live[&g], 0);
        assert!(!b.state().free.contains(&1));
        b.delete_blob(g).unwrap();
        assert!(b.state().free.contains(&0));
        assert!(!b.state().free.contains(&1));
        b.flush().unwrap();
        assert!(b.state().free.contains(&1));
        assert_eq!(b.slot_count(), GROW_SLOTS);
    }

    #[test]
    fn idle_flush_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = PersistentBackend::open(dir.path()).unwrap();
        b.flush().unwrap();
        let manifest = dir.path().join(MANIFEST_FILE);
        std::fs::remove_file(&manifest).unwrap();
        b.flush().unwrap();
        assert!(!manifest.exists());
        b.set_checkpoint_meta(1, 2);
        b.flush().unwrap();
        assert!(manifest.exists());
    }

    #[test]
    fn pinned_slot_is_not_reused_until_unpinned() {
        let dir = tempfile::tempdir().unwrap();
        let b = PersistentBackend::open(dir.path()).unwrap();
        let g = [4u8; 16];
        b.write_blob(g, &frame(1)).unwrap();
        b.state().pin(0);
        b.delete_blob(g).unwrap();
        assert!(!b.state().free.contains(&0));
        b.write_blob([5u8; 16], &frame(2)).unwrap();
        assert_eq!(b.state().live[&[5u8; 16]], 1);
        b.state().unpin(0);
        assert!(b.state().free.contains(&0));
    }
}
