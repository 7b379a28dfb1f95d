//! Reading the WAL at open: every file, in seq order, with torn-tail
//! detection.
//!
//! A file's records are read until the first one that does not decode.
//! If a later batch marker (see `record`) vouches that bytes past the
//! damage were synced, the damage hit durable data: the open fails with
//! `ReplaySanityFailed` and no file is changed. Otherwise the damage lies
//! in writes no sync covered — a torn tail, possibly with later sectors of
//! an unsynced write persisted before earlier ones, none of it acknowledged
//! as durable — and the active file is cut back to the last whole record
//! before new records are appended.
//!
//! Zero-filled tail: the writer keeps zero-filled space past the log's
//! logical end (see `writer`), so a file normally ends in zeros, which do
//! not decode (a zero length field is below the header size). When every
//! byte past the last whole record is zero the scan ends there without
//! walking them, and the tail is kept (the writer appends at the logical
//! end, over the zeros; cutting it would cost a sync at every open). A
//! tail holding anything else — an extension or a write torn by a crash —
//! goes through the rule above and, when it is a torn tail, is cut, so
//! stale bytes never lie past the point where new records go.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use holt_backend_sync::{IoDriver, IoFile, OpenOptions};

use super::record::{self, Record};
use super::writer::rotation::retired_seq;
use super::writer::ACTIVE;
use crate::api::errors::{Error, Result};

pub(crate) struct Scanned {
    /// Records of every file, retired files first (oldest first), then
    /// the active file.
    pub(crate) records: Vec<Record>,
    /// Length of the valid part of the active file.
    pub(crate) active_len: u64,
    /// The active file's length on disk (more than `active_len` when it
    /// has a zero-filled tail or a torn tail).
    pub(crate) active_file_len: u64,
    /// Every byte of the active file past `active_len` is zero: the tail
    /// is kept rather than cut.
    pub(crate) zero_tail: bool,
    pub(crate) retired: Vec<(u64, PathBuf)>,
    /// The active file as opened for reading, handed on to the writer so
    /// the open does not open it twice.
    pub(crate) active_file: Option<Arc<dyn IoFile>>,
}

fn io(e: std::io::Error) -> Error {
    Error::BackendIo(e)
}

/// What [`parse`] found: the length of the valid part, and whether every
/// byte past it is zero (a zero-filled tail, kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    valid: usize,
    zero_tail: bool,
}

/// Parses one file. `Err` only for damage that a later batch marker
/// proves was synced (see `record`): a bad record followed by valid ones
/// inside the durable part of the file.
fn parse(bytes: &[u8], active: bool, out: &mut Vec<Record>) -> Result<Parsed> {
    let mut off = 0usize;
    while off < bytes.len() {
        if let Some((r, n)) = record::decode(&bytes[off..]) {
            if r.marker.is_none() {
                out.push(r);
            }
            off += n;
            continue;
        }
        // Nothing but zeros left: the zero-filled tail past the logical
        // end, which holds no marker.
        if is_zero(&bytes[off..]) {
            return Ok(Parsed {
                valid: off,
                zero_tail: true,
            });
        }
        // Damage at `off`. Walk whatever valid records follow and see
        // whether any batch marker vouches for bytes past `off`.
        let mut at = off + 8;
        let mut vouched = false;
        while at < bytes.len() {
            match record::decode(&bytes[at..]) {
                Some((r, n)) => {
                    vouched |= r.marker.is_some_and(|len| len > off as u64);
                    at += n;
                }
                None => at += 8,
            }
        }
        if vouched {
            return Err(Error::ReplaySanityFailed {
                context: if active {
                    "damaged record inside the synced part of journal.wal"
                } else {
                    "damaged record inside a retired journal file"
                },
                record_offset: off as u64,
            });
        }
        return Ok(Parsed {
            valid: off,
            zero_tail: false,
        });
    }
    Ok(Parsed {
        valid: off,
        zero_tail: true,
    })
}

/// All bytes zero (word-wise: this runs over up to a megabyte at open).
fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(8);
    words.all(|w| w == [0u8; 8]) && words.remainder().iter().all(|&x| x == 0)
}

fn open_read(driver: &Arc<dyn IoDriver>, path: &Path) -> Result<Arc<dyn IoFile>> {
    driver
        .open(
            path,
            OpenOptions {
                create: false,
                direct: false,
            },
        )
        .map_err(io)
}

fn read_all(f: &dyn IoFile) -> Result<Vec<u8>> {
    let len = f.len().map_err(io)?;
    let len = usize::try_from(len).map_err(|_| Error::Internal("WAL file larger than memory"))?;
    let mut buf = vec![0u8; len];
    if len > 0 {
        f.read_at(&mut buf, 0).map_err(io)?;
    }
    Ok(buf)
}

/// Reads every WAL file of `dir`. Changes nothing on disk.
pub(crate) fn scan(dir: &Path, driver: &Arc<dyn IoDriver>) -> Result<Scanned> {
    let mut retired: Vec<(u64, PathBuf)> = Vec::new();
    let mut active = None;
    for path in driver.list_dir(dir).map_err(io)? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == ACTIVE {
            active = Some(path.clone());
        } else if let Some(seq) = retired_seq(name) {
            retired.push((seq, path.clone()));
        }
    }
    retired.sort();
    let mut records = Vec::new();
    for (_, path) in &retired {
        let bytes = read_all(&*open_read(driver, path)?)?;
        parse(&bytes, false, &mut records)?;
    }
    let (mut active_len, mut active_file_len, mut zero_tail) = (0, 0, true);
    let mut active_file = None;
    if let Some(path) = active {
        let f = open_read(driver, &path)?;
        let bytes = read_all(&*f)?;
        active_file_len = bytes.len() as u64;
        let parsed = parse(&bytes, true, &mut records)?;
        zero_tail = parsed.zero_tail;
        active_len = parsed.valid as u64;
        active_file = Some(f);
    }
    Ok(Scanned {
        records,
        active_len,
        active_file_len,
        zero_tail,
        retired,
        active_file,
    })
}

/// Cuts a torn tail off the active file (a zero-filled one is kept, see
/// the module docs).
pub(crate) fn cut_tail(dir: &Path, driver: &Arc<dyn IoDriver>, s: &Scanned) -> Result<()> {
    if s.active_file_len > s.active_len && !s.zero_tail {
        let f = driver
            .open(
                &dir.join(ACTIVE),
                OpenOptions {
                    create: false,
                    direct: false,
                },
            )
            .map_err(io)?;
        f.set_len(s.active_len).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{encode, OpRef};

    /// `batches` group-commit writes of `per` records each, every write
    /// led by a marker vouching for everything before it (synced).
    fn log(batches: u64, per: u64) -> Vec<u8> {
        let mut b = Vec::new();
        let mut seq = 0;
        for _ in 0..batches {
            let start = b.len();
            b.resize(start + crate::wal::record::MARKER_LEN, 0);
            crate::wal::record::encode_marker(start as u64, &mut b[start..]);
            for _ in 0..per {
                seq += 1;
                encode(
                    seq,
                    &[OpRef::Put(format!("k{seq}").as_bytes(), b"v")],
                    &mut b,
                );
            }
        }
        b
    }

    #[test]
    fn torn_tail_is_cut_not_an_error() {
        let b = log(1, 5);
        for cut in [b.len() - 1, b.len() - 9, b.len() - 20] {
            let mut out = Vec::new();
            let valid = parse(&b[..cut], true, &mut out).unwrap().valid;
            assert_eq!(out.len(), 4);
            assert!(valid < cut);
        }
    }

    #[test]
    fn damage_in_synced_data_is_refused() {
        let mut b = log(2, 3);
        b[60] ^= 0xFF; // inside the first batch, which the second vouches for
        let mut out = Vec::new();
        match parse(&b, true, &mut out) {
            Err(Error::ReplaySanityFailed { .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn damage_in_unsynced_writes_is_a_torn_tail() {
        // Two writes after the last sync: the first lost, the second kept.
        let mut b = log(1, 2);
        let synced = b.len() as u64;
        for _ in 0..2 {
            let start = b.len();
            b.resize(start + crate::wal::record::MARKER_LEN, 0);
            crate::wal::record::encode_marker(synced, &mut b[start..]);
            encode(9, &[OpRef::Delete(b"x")], &mut b);
        }
        let lost_from = synced as usize;
        let lost_to = lost_from + crate::wal::record::MARKER_LEN + 32;
        b[lost_from..lost_to].iter_mut().for_each(|x| *x = 0);
        let mut out = Vec::new();
        let valid = parse(&b, true, &mut out).unwrap().valid;
        assert_eq!(valid, lost_from);
        assert_eq!(out.len(), 2);
    }

    /// The writer's zero-filled tail ends the scan at the logical end,
    /// with every record read and nothing refused, and is seen as zero
    /// (kept, not cut). Fails if a zero length field were taken for an
    /// empty record and stepped over (the scan ran on through the
    /// zeros and reported the file's end as the log's end).
    #[test]
    fn zero_tail_ends_the_scan_at_the_logical_end() {
        let mut b = log(3, 4);
        let logical = b.len();
        b.resize(crate::wal::writer::group_commit::PREALLOC as usize, 0);
        let mut out = Vec::new();
        let valid = parse(&b, true, &mut out).unwrap().valid;
        assert_eq!((valid, out.len()), (logical, 12));
        assert!(is_zero(&b[valid..]));
        assert!(!is_zero(&b[valid - 1..]));
    }

    /// Damage inside the synced part that reads as a zero gap (a zeroed
    /// record, as a lost block reads) is still refused when a later
    /// marker vouches for the bytes past it, even with a zero-filled tail
    /// after the last write. Fails if a zero length field ended the scan
    /// as the end of the log without looking past it (checking only the
    /// word at the damage instead of the whole rest for zeros).
    #[test]
    fn zero_gap_in_vouched_data_is_refused() {
        let mut b = log(3, 3);
        b.resize(b.len() + 4096, 0);
        // The first batch's second record (the marker is 32 bytes).
        let rec = crate::wal::record::MARKER_LEN;
        let (_, n) = crate::wal::record::decode(&b[rec..]).unwrap();
        b[rec..rec + n].iter_mut().for_each(|x| *x = 0);
        let mut out = Vec::new();
        match parse(&b, true, &mut out) {
            Err(Error::ReplaySanityFailed { record_offset, .. }) => {
                assert_eq!(record_offset, rec as u64);
            }
            other => panic!("{other:?}"),
        }
    }

    /// A crash during an extension (or during the write before it)
    /// leaves bytes that are neither records nor zeros past the logical
    /// end; no marker vouches for them, so they are a torn tail: the scan
    /// ends at the last whole record and the tail is not taken for zeros
    /// (open cuts it). Fails if any bytes past the last record were taken
    /// as a zero tail to keep (`zero_tail` set whenever the scan stopped
    /// without an error).
    #[test]
    fn torn_extension_is_a_torn_tail() {
        let mut b = log(2, 3);
        let logical = b.len();
        // A later write torn mid-way: its marker vouches only for the
        // durable logical end; then a chunk of garbage and zeros.
        let start = b.len();
        b.resize(start + crate::wal::record::MARKER_LEN, 0);
        crate::wal::record::encode_marker(logical as u64, &mut b[start..]);
        encode(99, &[OpRef::Put(b"torn", b"x")], &mut b);
        b[start + crate::wal::record::MARKER_LEN - 2] ^= 0x40;
        b.extend((0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        b.resize(b.len() + 8192, 0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::wal::writer::ACTIVE), &b).unwrap();
        let driver: Arc<dyn IoDriver> = Arc::new(holt_backend_sync::SyncDriver::new());
        let s = scan(dir.path(), &driver).unwrap();
        assert_eq!(s.records.len(), 6);
        assert_eq!(
            (s.active_len, s.active_file_len),
            (logical as u64, b.len() as u64)
        );
        assert!(!s.zero_tail, "garbage past the logical end taken for zeros");
    }
}
