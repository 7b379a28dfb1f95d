//! The `MANIFEST` of a persistent data directory: which data-file slot
//! holds each blob frame, plus the checkpoint cut and sequence floor.
//!
//! On-disk layout, all integers little-endian, fixed width:
//!
//! | offset        | size | field                                        |
//! |---------------|------|----------------------------------------------|
//! | 0             | 8    | magic `b"HOLTMAN1"`                          |
//! | 8             | 4    | format version, `1`                          |
//! | 12            | 4    | reserved, written as 0                       |
//! | 16            | 8    | `cut_seq`: WAL seq the frames reflect         |
//! | 24            | 8    | `seq_floor`: every seq ever used is below it  |
//! | 32            | 8    | `slot_count`: slots in the data file         |
//! | 40            | 8    | entry count `n`                              |
//! | 48 + 24 i     | 16   | entry i: blob guid (strictly ascending)      |
//! | 64 + 24 i     | 8    | entry i: slot (`< slot_count`, unique)       |
//! | 48 + 24 n     | 4    | CRC32C of every preceding byte               |
//!
//! [`Manifest::decode`] checks all of it and reports the first problem as
//! [`Error::Corrupt`] with the byte offset where it was found; it never
//! panics on any input.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{BlobGuid, FRAME_SIZE};
use crate::api::errors::{Error, Result};

/// File magic, first 8 bytes.
pub(crate) const MAGIC: [u8; 8] = *b"HOLTMAN1";
/// The only format version this build reads and writes.
pub(crate) const VERSION: u32 = 1;
/// Bytes before the first entry.
const HEADER_LEN: usize = 48;
/// Bytes per entry: guid (16) + slot (8).
const ENTRY_LEN: usize = 24;
/// Bytes of the trailing CRC32C.
const CRC_LEN: usize = 4;
/// Offset of the format version.
const VERSION_OFFSET: usize = 8;
/// Offset of `cut_seq`.
const CUT_SEQ_OFFSET: usize = 16;
/// Offset of `seq_floor`.
const SEQ_FLOOR_OFFSET: usize = 24;
/// Offset of `slot_count`.
const SLOT_COUNT_OFFSET: usize = 32;
/// Offset of the entry count.
const COUNT_OFFSET: usize = 40;
/// Largest slot count whose byte size (`slot_count * FRAME_SIZE`) fits a
/// `u64` file offset.
const MAX_SLOT_COUNT: u64 = u64::MAX / FRAME_SIZE as u64;

/// A decoded (or about to be encoded) manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Manifest {
    /// WAL sequence number of the checkpoint cut the frames reflect.
    pub(crate) cut_seq: u64,
    /// Every WAL sequence number ever handed out is below this floor.
    pub(crate) seq_floor: u64,
    /// Number of 512 KiB slots the data file had when this was written.
    pub(crate) slot_count: u64,
    /// `(guid, slot)` pairs, sorted by guid, guids and slots unique.
    pub(crate) entries: Vec<(BlobGuid, u64)>,
}

impl Manifest {
    /// Builds a manifest from a guid → slot map, sorting the entries.
    pub(crate) fn from_map(
        cut_seq: u64,
        seq_floor: u64,
        slot_count: u64,
        map: &HashMap<BlobGuid, u64>,
    ) -> Self {
        let mut entries: Vec<(BlobGuid, u64)> = map.iter().map(|(g, s)| (*g, *s)).collect();
        entries.sort_unstable_by_key(|e| e.0);
        Self {
            cut_seq,
            seq_floor,
            slot_count,
            entries,
        }
    }

    /// Size in bytes of the encoded form of a manifest with `entries`
    /// entries.
    pub(crate) fn encoded_len(entries: usize) -> usize {
        HEADER_LEN + entries * ENTRY_LEN + CRC_LEN
    }

    /// Encodes the manifest (entries must already be sorted and unique, as
    /// [`Manifest::from_map`] makes them).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::encoded_len(self.entries.len()));
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.cut_seq.to_le_bytes());
        out.extend_from_slice(&self.seq_floor.to_le_bytes());
        out.extend_from_slice(&self.slot_count.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (guid, slot) in &self.entries {
            out.extend_from_slice(guid);
            out.extend_from_slice(&slot.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and validates `bytes`, the whole content of the manifest at
    /// `file` (used only to name the file in errors).
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `file` and the offset of the first problem:
    /// truncation, bad magic, unsupported version, CRC mismatch, an entry
    /// count that does not match the length, a slot count too large to
    /// address, a slot `>= slot_count`, unsorted or duplicate guids, or a
    /// duplicate slot.
    pub(crate) fn decode(bytes: &[u8], file: &Path) -> Result<Self> {
        let corrupt = |offset: usize, context: &'static str| Error::Corrupt {
            file: file.to_path_buf(),
            offset: offset as u64,
            context,
        };
        let len = bytes.len();
        if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(if len < MAGIC.len() {
                corrupt(len, "manifest truncated before the end of its magic")
            } else {
                corrupt(0, "bad manifest magic")
            });
        }
        let version = read_u32(bytes, VERSION_OFFSET)
            .ok_or_else(|| corrupt(len, "manifest truncated in its header"))?;
        if version != VERSION {
            return Err(corrupt(VERSION_OFFSET, "unsupported manifest version"));
        }
        if len < HEADER_LEN + CRC_LEN {
            return Err(corrupt(len, "manifest truncated in its header"));
        }
        let body_len = len - CRC_LEN;
        let stored_crc = read_u32(bytes, body_len)
            .ok_or_else(|| corrupt(len, "manifest truncated in its checksum"))?;
        let body = bytes
            .get(..body_len)
            .ok_or_else(|| corrupt(len, "manifest truncated in its checksum"))?;
        if crc32c::crc32c(body) != stored_crc {
            return Err(corrupt(body_len, "manifest checksum mismatch"));
        }
        let header = |offset: usize| {
            read_u64(bytes, offset).ok_or_else(|| corrupt(len, "manifest truncated in its header"))
        };
        let cut_seq = header(CUT_SEQ_OFFSET)?;
        let seq_floor = header(SEQ_FLOOR_OFFSET)?;
        let slot_count = header(SLOT_COUNT_OFFSET)?;
        let count = header(COUNT_OFFSET)?;
        if slot_count > MAX_SLOT_COUNT {
            return Err(corrupt(SLOT_COUNT_OFFSET, "manifest slot count too large"));
        }
        let entries_len = (body_len - HEADER_LEN) / ENTRY_LEN;
        if (body_len - HEADER_LEN) % ENTRY_LEN != 0 || count != entries_len as u64 {
            return Err(corrupt(
                COUNT_OFFSET,
                "manifest entry count does not match its length",
            ));
        }
        let mut entries: Vec<(BlobGuid, u64)> = Vec::with_capacity(entries_len);
        let mut slots: HashSet<u64> = HashSet::with_capacity(entries_len);
        for i in 0..entries_len {
            let at = HEADER_LEN + i * ENTRY_LEN;
            let guid: BlobGuid = bytes
                .get(at..at + 16)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| corrupt(len, "manifest truncated in an entry"))?;
            let slot = read_u64(bytes, at + 16)
                .ok_or_else(|| corrupt(len, "manifest truncated in an entry"))?;
            if let Some((prev, _)) = entries.last() {
                if *prev == guid {
                    return Err(corrupt(at, "duplicate guid in manifest"));
                }
                if *prev > guid {
                    return Err(corrupt(at, "manifest guids not in ascending order"));
                }
            }
            if slot >= slot_count {
                return Err(corrupt(at + 16, "manifest slot beyond the slot count"));
            }
            if !slots.insert(slot) {
                return Err(corrupt(at + 16, "duplicate slot in manifest"));
            }
            entries.push((guid, slot));
        }
        Ok(Self {
            cut_seq,
            seq_floor,
            slot_count,
            entries,
        })
    }
}

/// The little-endian `u32` at `offset`, or `None` past the end.
fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// The little-endian `u64` at `offset`, or `None` past the end.
fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(offset..offset.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn path() -> PathBuf {
        PathBuf::from("/db/MANIFEST")
    }

    fn sample() -> Manifest {
        let mut map = HashMap::new();
        map.insert([3u8; 16], 0);
        map.insert([1u8; 16], 5);
        map.insert([2u8; 16], 7);
        Manifest::from_map(42, 99, 8, &map)
    }

    /// Re-seals `bytes` with a correct CRC after a deliberate edit, so the
    /// structural checks behind the CRC are reached.
    fn reseal(bytes: &mut Vec<u8>) {
        let body = bytes.len() - CRC_LEN;
        bytes.truncate(body);
        let crc = crc32c::crc32c(bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }

    fn corrupt_at(bytes: &[u8]) -> (u64, &'static str) {
        match Manifest::decode(bytes, &path()) {
            Err(Error::Corrupt {
                file,
                offset,
                context,
            }) => {
                assert_eq!(file, path());
                (offset, context)
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_sorted() {
        let m = sample();
        assert_eq!(
            m.entries.iter().map(|e| e.0[0]).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let bytes = m.encode();
        assert_eq!(bytes.len(), Manifest::encoded_len(3));
        assert_eq!(&bytes[..8], b"HOLTMAN1");
        assert_eq!(Manifest::decode(&bytes, &path()).ok(), Some(m));
    }

    #[test]
    fn empty_round_trip() {
        let m = Manifest::default();
        let bytes = m.encode();
        assert_eq!(bytes.len(), HEADER_LEN + CRC_LEN);
        assert_eq!(Manifest::decode(&bytes, &path()).ok(), Some(m));
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            let _ = corrupt_at(&bytes[..cut]);
        }
    }

    #[test]
    fn every_bit_flip_is_corrupt() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let _ = corrupt_at(&b);
            }
        }
    }

    #[test]
    fn magic_version_crc_offsets() {
        let mut b = sample().encode();
        b[0] = b'X';
        assert_eq!(corrupt_at(&b), (0, "bad manifest magic"));
        let mut b = sample().encode();
        b[8] = 2;
        assert_eq!(corrupt_at(&b).0, 8);
        let mut b = sample().encode();
        let n = b.len();
        b[20] ^= 1;
        assert_eq!(
            corrupt_at(&b),
            ((n - 4) as u64, "manifest checksum mismatch")
        );
        let mut b = sample().encode();
        b.extend_from_slice(&[0; 24]);
        assert!(corrupt_at(&b).0 > 0);
    }

    #[test]
    fn structural_checks_behind_the_crc() {
        // Slot beyond slot_count.
        let mut b = sample().encode();
        b[SLOT_COUNT_OFFSET..SLOT_COUNT_OFFSET + 8].copy_from_slice(&7u64.to_le_bytes());
        reseal(&mut b);
        assert_eq!(
            corrupt_at(&b),
            (
                (HEADER_LEN + ENTRY_LEN + 16) as u64,
                "manifest slot beyond the slot count"
            )
        );
        // Duplicate slot.
        let mut b = sample().encode();
        let second = HEADER_LEN + ENTRY_LEN + 16;
        b[second..second + 8].copy_from_slice(&5u64.to_le_bytes());
        reseal(&mut b);
        assert_eq!(
            corrupt_at(&b),
            (second as u64, "duplicate slot in manifest")
        );
        // Duplicate guid.
        let mut b = sample().encode();
        let g1 = HEADER_LEN + ENTRY_LEN;
        b[g1..g1 + 16].copy_from_slice(&[1u8; 16]);
        reseal(&mut b);
        assert_eq!(corrupt_at(&b), (g1 as u64, "duplicate guid in manifest"));
        // Unsorted guids.
        let mut b = sample().encode();
        b[g1..g1 + 16].copy_from_slice(&[0u8; 16]);
        reseal(&mut b);
        assert_eq!(
            corrupt_at(&b),
            (g1 as u64, "manifest guids not in ascending order")
        );
        // Entry count not matching the length.
        let mut b = sample().encode();
        b[COUNT_OFFSET..COUNT_OFFSET + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        reseal(&mut b);
        assert_eq!(corrupt_at(&b).0, COUNT_OFFSET as u64);
        // Slot count too large to address.
        let mut b = Manifest::default().encode();
        b[SLOT_COUNT_OFFSET..SLOT_COUNT_OFFSET + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        reseal(&mut b);
        assert_eq!(corrupt_at(&b).0, SLOT_COUNT_OFFSET as u64);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in [0usize, 1, 7, 8, 12, 51, 52, 53, 76, 100, 1000] {
            for _ in 0..50 {
                let mut b: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 24) as u8
                    })
                    .collect();
                let _ = corrupt_at(&b);
                if b.len() >= 8 {
                    b[..8].copy_from_slice(&MAGIC);
                    let _ = corrupt_at(&b);
                }
            }
        }
    }
}
