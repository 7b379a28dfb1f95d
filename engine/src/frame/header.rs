//! The frame header: the first [`HEADER_SIZE`] bytes of every frame.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `b"HOLTFRM\0"` |
//! | 8 | 2 | format version ([`FORMAT_VERSION`]) |
//! | 10 | 2 | flags: bit 0 [`FLAG_FAN`] |
//! | 12 | 4 | CRC32C of the whole frame with this field zeroed |
//! | 16 | 16 | the frame's own GUID |
//! | 32 | 8 | highest WAL seq reflected in the image |
//! | 40 | 4 | root node offset (0: empty frame) |
//! | 44 | 4 | bump: end of the allocated area |
//! | 48 | 4 | gap: free bytes below bump |
//! | 52 | 4 | live node count |
//! | 56 | 4 | times compacted |
//! | 60 | 4 | link-node count (child-frame crossings) |
//! | 64 | 4 | depth: key bytes consumed above this frame's root |
//! | 68 | 60 | reserved, zero |
//!
//! All integers little-endian.

use super::mem::{AtomicFrame, Corrupt, FResult};
use crate::store::{BlobGuid, FRAME_SIZE};

pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"HOLTFRM\0");
pub(crate) const FORMAT_VERSION: u16 = 1;
pub(crate) const HEADER_SIZE: usize = 128;

pub(crate) const OFF_MAGIC: usize = 0;
pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_FLAGS: usize = 10;
/// The frame's root is a *fan* node: an inner node with no prefix and no
/// value whose children continue the branches of a parent-frame node. A
/// link to this frame stands in that parent node's child slots, and the
/// walker looks the branch byte it just consumed up again in the fan
/// (`tree::read::walk`). Every frame but the tree's root frame is a fan
/// frame.
pub(crate) const FLAG_FAN: u16 = 1;
pub(crate) const OFF_CRC: usize = 12;
pub(crate) const OFF_GUID: usize = 16;
pub(crate) const OFF_MAX_SEQ: usize = 32;
/// The root pointer is a node-pointer slot like any child slot, so the
/// walker can replace the root the same way it replaces a child.
pub(crate) const OFF_ROOT: usize = 40;
pub(crate) const OFF_BUMP: usize = 44;
pub(crate) const OFF_GAP: usize = 48;
pub(crate) const OFF_NODES: usize = 52;
pub(crate) const OFF_COMPACTS: usize = 56;
pub(crate) const OFF_LINKS: usize = 60;
pub(crate) const OFF_DEPTH: usize = 64;

/// Writes a fresh, empty header.
pub(crate) fn init(f: &AtomicFrame, guid: BlobGuid, depth: u32) -> FResult<()> {
    f.write(0, &[0u8; HEADER_SIZE])?;
    f.set_u64(OFF_MAGIC, MAGIC)?;
    f.set_u16(OFF_VERSION, FORMAT_VERSION)?;
    f.write(OFF_GUID, &guid)?;
    f.set_u32(OFF_BUMP, HEADER_SIZE as u32)?;
    f.set_u32(OFF_DEPTH, depth)
}

pub(crate) fn is_fan(f: &AtomicFrame) -> FResult<bool> {
    Ok(f.u16(OFF_FLAGS)? & FLAG_FAN != 0)
}

pub(crate) fn guid(f: &AtomicFrame) -> FResult<BlobGuid> {
    let mut g = [0u8; 16];
    f.read_exact(OFF_GUID, &mut g)?;
    Ok(g)
}

pub(crate) fn root(f: &AtomicFrame) -> FResult<u32> {
    f.u32(OFF_ROOT)
}
pub(crate) fn bump(f: &AtomicFrame) -> FResult<u32> {
    f.u32(OFF_BUMP)
}
pub(crate) fn gap(f: &AtomicFrame) -> FResult<u32> {
    f.u32(OFF_GAP)
}
pub(crate) fn depth(f: &AtomicFrame) -> FResult<u32> {
    f.u32(OFF_DEPTH)
}
/// Link nodes in the frame. Validation rejects a frame that has a link
/// but counts none, so a count of 0 means every node reached inside the
/// frame has all its keys inside it too.
pub(crate) fn links(f: &AtomicFrame) -> FResult<u32> {
    f.u32(OFF_LINKS)
}
pub(crate) fn max_seq(f: &AtomicFrame) -> FResult<u64> {
    f.u64(OFF_MAX_SEQ)
}

/// Bytes in use: the allocated area minus the gaps inside it (header
/// included).
pub(crate) fn used(f: &AtomicFrame) -> FResult<u32> {
    Ok(bump(f)?.saturating_sub(gap(f)?))
}

/// Adds `delta` (may be negative) to a counter field.
pub(crate) fn add(f: &AtomicFrame, off: usize, delta: i64) -> FResult<()> {
    let v = i64::from(f.u32(off)?) + delta;
    let v = u32::try_from(v).map_err(|_| {
        Corrupt(match off {
            OFF_GAP => "frame gap counter out of range",
            OFF_NODES => "frame node counter out of range",
            OFF_LINKS => "frame link counter out of range",
            _ => "frame header counter out of range",
        })
    })?;
    f.set_u32(off, v)
}

/// Checks the fields that make the rest of the frame decodable. Used on
/// stable images (after a load from the backend); optimistic readers rely
/// on bounds-checked reads instead.
pub(crate) fn check(f: &AtomicFrame, expect: &BlobGuid) -> FResult<()> {
    if f.u64(OFF_MAGIC)? != MAGIC {
        return Err(Corrupt("frame magic"));
    }
    if f.u16(OFF_VERSION)? != FORMAT_VERSION {
        return Err(Corrupt("frame format version"));
    }
    if &guid(f)? != expect {
        return Err(Corrupt("frame guid does not match its name"));
    }
    let bump = bump(f)? as usize;
    if !(HEADER_SIZE..=FRAME_SIZE).contains(&bump) || bump % 8 != 0 {
        return Err(Corrupt("frame bump pointer"));
    }
    if gap(f)? as usize > bump - HEADER_SIZE {
        return Err(Corrupt("frame gap larger than its data area"));
    }
    let root = root(f)? as usize;
    if root != 0 && (root < HEADER_SIZE || root >= bump || root % 8 != 0) {
        return Err(Corrupt("frame root pointer"));
    }
    if f.u16(OFF_FLAGS)? & !FLAG_FAN != 0 {
        return Err(Corrupt("unknown frame flags"));
    }
    Ok(())
}

/// CRC32C of a frame image with the CRC field taken as zero.
pub(crate) fn image_crc(image: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&image[..OFF_CRC]);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4]);
    crc32c::crc32c_append(crc, &image[OFF_CRC + 4..])
}

/// Stamps the CRC into a frame image about to be written.
pub(crate) fn seal_image(image: &mut [u8]) {
    let crc = image_crc(image);
    image[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Verifies the CRC of a frame image read from the backend.
pub(crate) fn verify_image_crc(image: &[u8]) -> FResult<()> {
    if image.len() != FRAME_SIZE {
        return Err(Corrupt("frame image has the wrong size"));
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&image[OFF_CRC..OFF_CRC + 4]);
    if u32::from_le_bytes(stored) == image_crc(image) {
        Ok(())
    } else {
        Err(Corrupt("frame checksum mismatch"))
    }
}
