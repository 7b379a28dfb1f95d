//! WAL records: after-images of puts and deletes, one record per
//! operation or atomic batch.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | total length in bytes, header and padding included (multiple of 8) |
//! | 4 | 4 | CRC32C of the length field followed by bytes 8..total |
//! | 8 | 8 | seq |
//! | 16 | 4 | op count |
//! | 20 | 4 | body length (unpadded) |
//! | 24 | … | ops: kind u8 (1 put, 2 delete), 3 zero bytes, key length u32, value length u32, key, value |
//!
//! Records are 8-aligned so a scan can look for a later valid record at
//! every 8-byte step (to tell a torn tail from corruption in the middle).
//!
//! **Batch markers.** Every write the group-commit leader makes starts with
//! a marker record: seq 0, no ops, an 8-byte body holding the file length
//! that was durable (synced) when the write was made. A later marker that
//! vouches for bytes past a damaged record proves the damage hit synced
//! data (corruption); otherwise the damage lies in writes no sync ever
//! covered, which a power loss may tear in any order (a torn tail).
//!
//! The durable length a marker carries is the log's *logical* end: with
//! `wal_sync_on_commit(true)` the writer keeps zero-filled space past it
//! (see `writer`), so the file's size is larger. Before that change the
//! two were equal; nothing else in the format changed. Zero-filled space
//! never decodes: a zero length is below [`HEADER`], and a length torn
//! over zeros still fails the CRC (CRC32C of zero bytes is not 0).

pub(crate) const HEADER: usize = 24;
const OP_HEAD: usize = 12;
/// Largest record accepted when reading (a txn of many large ops fits).
pub(crate) const MAX_RECORD: usize = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) ops: Vec<Op>,
    /// For a batch marker (seq 0): the durable file length it vouches for.
    pub(crate) marker: Option<u64>,
}

/// Size of an encoded batch marker.
pub(crate) const MARKER_LEN: usize = HEADER + 8;

/// Writes a batch marker into `out[..MARKER_LEN]`.
pub(crate) fn encode_marker(durable_len: u64, out: &mut [u8]) {
    let mut v = Vec::with_capacity(MARKER_LEN);
    v.extend_from_slice(&(MARKER_LEN as u32).to_le_bytes());
    v.extend_from_slice(&[0u8; 4]);
    v.extend_from_slice(&0u64.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&8u32.to_le_bytes());
    v.extend_from_slice(&durable_len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&v[..4]), &v[8..]);
    v[4..8].copy_from_slice(&crc.to_le_bytes());
    out[..MARKER_LEN].copy_from_slice(&v);
}

/// Borrowed op for encoding without copies.
pub(crate) enum OpRef<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
}

fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// Appends the encoding of one record to `out`.
pub(crate) fn encode(seq: u64, ops: &[OpRef<'_>], out: &mut Vec<u8>) {
    let start = out.len();
    let body: usize = ops
        .iter()
        .map(|o| match o {
            OpRef::Put(k, v) => OP_HEAD + k.len() + v.len(),
            OpRef::Delete(k) => OP_HEAD + k.len(),
        })
        .sum();
    let total = pad8(HEADER + body);
    out.reserve(total);
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body as u32).to_le_bytes());
    for o in ops {
        let (kind, k, v): (u8, &[u8], &[u8]) = match o {
            OpRef::Put(k, v) => (1, k, v),
            OpRef::Delete(k) => (2, k, &[]),
        };
        out.extend_from_slice(&[kind, 0, 0, 0]);
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out.resize(start + total, 0);
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&out[start..start + 4]),
        &out[start + 8..start + total],
    );
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decodes the record at the start of `b`: `(record, total length)`, or
/// `None` if the bytes there are not a whole, valid record.
pub(crate) fn decode(b: &[u8]) -> Option<(Record, usize)> {
    let total = u32_at(b, 0)? as usize;
    if total < HEADER || total % 8 != 0 || total > MAX_RECORD || total > b.len() {
        return None;
    }
    let crc = u32_at(b, 4)?;
    if crc32c::crc32c_append(crc32c::crc32c(&b[..4]), &b[8..total]) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
    let count = u32_at(b, 16)? as usize;
    let body = u32_at(b, 20)? as usize;
    if HEADER + body > total {
        return None;
    }
    if seq == 0 {
        // A batch marker: no ops, the durable length as its body.
        if count != 0 || body != 8 || total != MARKER_LEN {
            return None;
        }
        let len = u64::from_le_bytes(b.get(HEADER..HEADER + 8)?.try_into().ok()?);
        return Some((
            Record {
                seq,
                ops: Vec::new(),
                marker: Some(len),
            },
            total,
        ));
    }
    let mut ops = Vec::with_capacity(count.min(1 << 16));
    let mut at = HEADER;
    let end = HEADER + body;
    for _ in 0..count {
        let kind = *b.get(at)?;
        let kl = u32_at(b, at + 4)? as usize;
        let vl = u32_at(b, at + 8)? as usize;
        let k0 = at + OP_HEAD;
        let v0 = k0.checked_add(kl)?;
        let v1 = v0.checked_add(vl)?;
        if v1 > end {
            return None;
        }
        ops.push(match kind {
            1 => Op::Put(b[k0..v0].to_vec(), b[v0..v1].to_vec()),
            2 if vl == 0 => Op::Delete(b[k0..v0].to_vec()),
            _ => return None,
        });
        at = v1;
    }
    (at == end).then_some((
        Record {
            seq,
            ops,
            marker: None,
        },
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let mut buf = Vec::new();
        encode(
            7,
            &[OpRef::Put(b"k", b"value"), OpRef::Delete(b"")],
            &mut buf,
        );
        encode(8, &[], &mut buf);
        assert_eq!(buf.len() % 8, 0);
        let (r, n) = decode(&buf).unwrap();
        assert_eq!(r.seq, 7);
        assert_eq!(
            r.ops,
            vec![
                Op::Put(b"k".to_vec(), b"value".to_vec()),
                Op::Delete(Vec::new())
            ]
        );
        let (r2, n2) = decode(&buf[n..]).unwrap();
        assert_eq!((r2.seq, r2.ops.len(), n + n2), (8, 0, buf.len()));
    }

    #[test]
    fn markers_round_trip_and_carry_the_durable_length() {
        let mut buf = vec![0u8; MARKER_LEN];
        encode_marker(123_456, &mut buf);
        let (r, n) = decode(&buf).unwrap();
        assert_eq!((r.seq, r.marker, n), (0, Some(123_456), MARKER_LEN));
        buf[HEADER] ^= 1;
        assert!(decode(&buf).is_none());
    }

    #[test]
    fn any_flipped_bit_or_truncation_is_rejected() {
        let mut buf = Vec::new();
        encode(1, &[OpRef::Put(b"some/key", &[9u8; 100])], &mut buf);
        for i in 0..buf.len() {
            for bit in [0u8, 3, 7] {
                let mut m = buf.clone();
                m[i] ^= 1 << bit;
                assert!(decode(&m).is_none(), "flip at {i} bit {bit} accepted");
            }
        }
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_none());
        }
    }

    /// Zero-filled space (the writer's preallocated tail) never decodes:
    /// not as a whole, and not with a plausible length written over the
    /// zeros (a torn write that kept only its first sector), since the
    /// CRC32C of zero bytes is never the zero stored in the CRC field.
    /// Fails if `decode` skipped the CRC check when the stored CRC is 0.
    #[test]
    fn zero_filled_space_never_decodes() {
        let zeros = vec![0u8; 4096];
        assert!(decode(&zeros).is_none());
        for total in (HEADER..=1024).step_by(8) {
            let mut b = zeros.clone();
            b[..4].copy_from_slice(&(total as u32).to_le_bytes());
            assert!(decode(&b).is_none(), "zeros with length {total} decoded");
            // The same with a marker's shape (seq 0, body 8).
            b[20..24].copy_from_slice(&8u32.to_le_bytes());
            assert!(decode(&b).is_none(), "zero marker with length {total}");
        }
    }
}
