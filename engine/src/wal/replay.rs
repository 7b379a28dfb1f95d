//! Reading the WAL at open: every file, in seq order, with torn-tail
//! detection.
//!
//! A file's records are read until the first one that does not decode.
//! If any valid record follows it (checked at every 8-byte step), the
//! damage is in the middle: the open fails with `ReplaySanityFailed` and no
//! file is changed. Otherwise it is a torn tail (a write cut short by a
//! crash): the active file is cut back to the last whole record before new
//! records are appended.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use holt_backend_sync::{IoDriver, OpenOptions};

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
}

fn io(e: std::io::Error) -> Error {
    Error::BackendIo(e)
}

/// Parses one file. `Err` only for a bad record followed by valid ones.
fn parse(bytes: &[u8], active: bool, out: &mut Vec<Record>) -> Result<usize> {
    let mut off = 0usize;
    while off < bytes.len() {
        if let Some((r, n)) = record::decode(&bytes[off..]) {
            out.push(r);
            off += n;
            continue;
        }
        let later = (off + 8..bytes.len())
            .step_by(8)
            .any(|at| record::decode(&bytes[at..]).is_some());
        if later {
            return Err(Error::ReplaySanityFailed {
                context: if active {
                    "bad record followed by valid records in journal.wal"
                } else {
                    "bad record followed by valid records in a retired journal file"
                },
                record_offset: off as u64,
            });
        }
        break;
    }
    Ok(off)
}

fn read_all(driver: &Arc<dyn IoDriver>, path: &Path) -> Result<Vec<u8>> {
    let f = driver
        .open(
            path,
            OpenOptions {
                create: false,
                direct: false,
            },
        )
        .map_err(io)?;
    let len = f.len().map_err(io)?;
    let len = usize::try_from(len).map_err(|_| Error::Internal("WAL file larger than memory"))?;
    let mut buf = vec![0u8; len];
    f.read_at(&mut buf, 0).map_err(io)?;
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
        let bytes = read_all(driver, path)?;
        parse(&bytes, false, &mut records)?;
    }
    let (mut active_len, mut active_file_len) = (0, 0);
    if let Some(path) = active {
        let bytes = read_all(driver, &path)?;
        active_file_len = bytes.len() as u64;
        active_len = parse(&bytes, true, &mut records)? as u64;
    }
    Ok(Scanned {
        records,
        active_len,
        active_file_len,
        retired,
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

    fn records(n: u64) -> Vec<u8> {
        let mut b = Vec::new();
        for s in 1..=n {
            encode(s, &[OpRef::Put(format!("k{s}").as_bytes(), b"v")], &mut b);
        }
        b
    }

    #[test]
    fn torn_tail_is_cut_not_an_error() {
        let b = records(5);
        for cut in [b.len() - 1, b.len() - 9, b.len() - 20] {
            let mut out = Vec::new();
            let valid = parse(&b[..cut], true, &mut out).unwrap();
            assert_eq!(out.len(), 4);
            assert!(valid < cut);
        }
    }

    #[test]
    fn bad_record_before_valid_ones_is_refused() {
        let mut b = records(5);
        b[30] ^= 0xFF; // inside the first record
        let mut out = Vec::new();
        match parse(&b, true, &mut out) {
            Err(Error::ReplaySanityFailed {
                record_offset: 0, ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}
