//! The crate-wide [`Error`] type and [`Result`] alias.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::store::{AllocError, BlobGuid, FreeError};

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a holt call.
///
/// New variants may be added in minor releases, so matches need a `_` arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The storage backend (file system, custom [`Backend`](crate::Backend))
    /// reported an I/O failure.
    BackendIo(io::Error),
    /// A node could not be allocated inside a blob frame.
    Alloc(AllocError),
    /// A node slot could not be released inside a blob frame.
    Free(FreeError),
    /// A key is longer than 65 535 bytes; `len` is its actual length.
    KeyTooLong {
        /// Length of the rejected key in bytes.
        len: usize,
    },
    /// A value is longer than 65 535 bytes; `len` is its actual length.
    ValueTooLong {
        /// Length of the rejected value in bytes.
        len: usize,
    },
    /// Kept for source compatibility with older releases; never returned.
    NotYetImplemented(&'static str),
    /// An internal invariant did not hold (a bug, or an invalid configuration).
    Internal(&'static str),
    /// A node inside a blob frame failed validation.
    NodeCorrupt {
        /// What was being checked.
        context: &'static str,
        /// The frame holding the node, when known.
        blob_guid: Option<BlobGuid>,
        /// The node slot inside the frame, when known.
        slot: Option<u16>,
    },
    /// A write-ahead-log record failed its sanity check during recovery.
    ReplaySanityFailed {
        /// What was being checked.
        context: &'static str,
        /// Byte offset of the record in the WAL.
        record_offset: u64,
    },
    /// The key to rename does not exist.
    NotFound,
    /// The rename destination exists and `force` was not set.
    DstExists,
    /// The data directory is already in use by another holt handle or
    /// process.
    Locked {
        /// The locked data directory.
        dir: PathBuf,
    },
    /// A durable write (data write or sync) failed earlier. Reads still work;
    /// writes are refused until the tree is reopened.
    Poisoned,
    /// An on-disk file failed validation.
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage inside `file`.
        offset: u64,
        /// What was being checked.
        context: &'static str,
    },
}

impl Error {
    /// A [`NodeCorrupt`](Error::NodeCorrupt) error with no frame or slot
    /// attached yet.
    #[must_use]
    pub const fn node_corrupt(context: &'static str) -> Self {
        Self::NodeCorrupt {
            context,
            blob_guid: None,
            slot: None,
        }
    }

    /// Attaches the frame GUID to a [`NodeCorrupt`](Error::NodeCorrupt)
    /// error that has none yet. Any other error is returned unchanged.
    #[must_use]
    pub fn with_blob_guid(mut self, guid: BlobGuid) -> Self {
        if let Self::NodeCorrupt { blob_guid, .. } = &mut self {
            if blob_guid.is_none() {
                *blob_guid = Some(guid);
            }
        }
        self
    }

    /// Attaches the node slot to a [`NodeCorrupt`](Error::NodeCorrupt)
    /// error that has none yet. Any other error is returned unchanged.
    #[must_use]
    pub fn with_slot(mut self, slot_index: u16) -> Self {
        if let Self::NodeCorrupt { slot, .. } = &mut self {
            if slot.is_none() {
                *slot = Some(slot_index);
            }
        }
        self
    }
}

impl fmt::Display for Error {
    // Paths are printed with `{:?}` on purpose: quoted and escaped.
    #[allow(clippy::unnecessary_debug_formatting)]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BackendIo(e) => write!(f, "backend I/O: {e}"),
            Self::Alloc(e) => write!(f, "alloc: {e}"),
            Self::Free(e) => write!(f, "free: {e}"),
            Self::KeyTooLong { len } => write!(f, "key too long ({len} bytes; max 65535)"),
            Self::ValueTooLong { len } => write!(f, "value too long ({len} bytes; max 65535)"),
            Self::NotYetImplemented(s) => write!(f, "not yet implemented: {s}"),
            Self::Internal(s) => write!(f, "internal invariant violated: {s}"),
            Self::NodeCorrupt {
                context,
                blob_guid,
                slot,
            } => {
                write!(f, "node corrupt at {context}")?;
                if let Some(g) = blob_guid {
                    let head: [u8; 4] = [g[0], g[1], g[2], g[3]];
                    write!(f, " (blob={head:02x?})")?;
                }
                if let Some(s) = slot {
                    write!(f, " (slot={s})")?;
                }
                Ok(())
            }
            Self::ReplaySanityFailed {
                context,
                record_offset,
            } => write!(
                f,
                "WAL replay sanity-check failed at offset {record_offset}: {context}"
            ),
            Self::NotFound => f.write_str("key not found"),
            Self::DstExists => {
                f.write_str("destination key already exists (use force=true to overwrite)")
            }
            Self::Locked { dir } => {
                write!(
                    f,
                    "directory {dir:?} is locked by another holt handle or process"
                )
            }
            Self::Poisoned => f.write_str(
                "tree is poisoned after a failed durable write; reopen it to write again",
            ),
            Self::Corrupt {
                file,
                offset,
                context,
            } => write!(f, "corruption in {file:?} at offset {offset}: {context}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::BackendIo(e) => Some(e),
            Self::Alloc(e) => Some(e),
            Self::Free(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::BackendIo(e)
    }
}

impl From<AllocError> for Error {
    fn from(e: AllocError) -> Self {
        Self::Alloc(e)
    }
}

impl From<FreeError> for Error {
    fn from(e: FreeError) -> Self {
        Self::Free(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn node_corrupt_builders() {
        let e = Error::node_corrupt("n4 header")
            .with_blob_guid([0xab, 0xcd, 0xef, 0x01, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9])
            .with_slot(7)
            .with_blob_guid([0; 16])
            .with_slot(8);
        assert_eq!(
            e.to_string(),
            "node corrupt at n4 header (blob=[ab, cd, ef, 01]) (slot=7)"
        );
        assert_eq!(
            Error::node_corrupt("x").with_slot(2).to_string(),
            "node corrupt at x (slot=2)"
        );
    }

    #[test]
    fn sources_and_from() {
        let e: Error = io::Error::other("disk").into();
        assert!(e.source().is_some());
        let e: Error = AllocError::OutOfSlots.into();
        assert!(matches!(e, Error::Alloc(AllocError::OutOfSlots)));
        assert!(e.source().is_some());
        let e: Error = FreeError::InvalidSlot(1).into();
        assert!(e.source().is_some());
        assert!(Error::NotFound.source().is_none());
        assert_eq!(
            Error::from(AllocError::OutOfSpace { need: 9, avail: 1 }).to_string(),
            "alloc: frame out of space (need 9 bytes, 1 available)"
        );
        assert_eq!(
            Error::from(FreeError::InvalidSlot(4)).to_string(),
            "free: invalid slot 4"
        );
    }
}
