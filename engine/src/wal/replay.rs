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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use holt_backend_sync::{IoDriver, IoFile, OpenOptions};

use super::record::{self, Record};
use super::writer::{retired_seq, ACTIVE};
use crate::api::errors::{Error, Result};

pub(crate) struct Scanned {
    /// Records of every file, retired files first (oldest first), then
    /// the active file.
    pub(crate) records: Vec<Record>,
    /// Length of the valid part of the active file.
    pub(crate) active_len: u64,
    /// The active file's length on disk (more than `active_len` when a
    /// torn tail must be cut).
    pub(crate) active_file_len: u64,
    pub(crate) retired: Vec<(u64, PathBuf)>,
    /// The active file as opened for reading, handed on to the writer so
    /// the open does not open it twice.
    pub(crate) active_file: Option<Arc<dyn IoFile>>,
}

fn io(e: std::io::Error) -> Error {
    Error::BackendIo(e)
}

/// Parses one file. `Err` only for damage that a later batch marker
/// proves was synced (see `record`): a bad record followed by valid ones
/// inside the durable part of the file.
fn parse(bytes: &[u8], active: bool, out: &mut Vec<Record>) -> Result<usize> {
    let mut off = 0usize;
    while off < bytes.len() {
        if let Some((r, n)) = record::decode(&bytes[off..]) {
            if r.marker.is_none() {
                out.push(r);
            }
            off += n;
            continue;
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
        break;
    }
    Ok(off)
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
    let (mut active_len, mut active_file_len) = (0, 0);
    let mut active_file = None;
    if let Some(path) = active {
        let f = open_read(driver, &path)?;
        let bytes = read_all(&*f)?;
        active_file_len = bytes.len() as u64;
        active_len = parse(&bytes, true, &mut records)? as u64;
        active_file = Some(f);
    }
    Ok(Scanned {
        records,
        active_len,
        active_file_len,
        retired,
        active_file,
    })
}

/// Cuts a torn tail off the active file.
pub(crate) fn cut_tail(dir: &Path, driver: &Arc<dyn IoDriver>, s: &Scanned) -> Result<()> {
    if s.active_file_len > s.active_len {
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
            let valid = parse(&b[..cut], true, &mut out).unwrap();
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
        let valid = parse(&b, true, &mut out).unwrap();
        assert_eq!(valid, lost_from);
        assert_eq!(out.len(), 2);
    }
}
