//! [`MemoryBackend`]: blob frames kept in a hash map, for memory trees and
//! tests.

use std::collections::HashMap;
use std::io;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{AlignedBlobBuf, Backend, BlobGuid};
use crate::api::errors::{Error, Result};

/// A [`Backend`] that keeps every frame in RAM. Nothing survives the drop
/// of the backend; [`flush`](Backend::flush) is a no-op.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    inner: RwLock<HashMap<BlobGuid, AlignedBlobBuf>>,
}

impl MemoryBackend {
    /// Creates an empty backend.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of frames stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no frame is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Shared access to the map. A panic in another thread while holding the
    /// lock cannot leave the map half-updated (every update is one map
    /// operation or one full-frame copy), so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<BlobGuid, AlignedBlobBuf>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive access to the map; poisoning is ignored as in [`Self::read`].
    fn write(&self) -> RwLockWriteGuard<'_, HashMap<BlobGuid, AlignedBlobBuf>> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for MemoryBackend {
    fn read_blob(&self, guid: BlobGuid, dst: &mut AlignedBlobBuf) -> Result<()> {
        match self.read().get(&guid) {
            Some(src) => {
                dst.as_mut_slice().copy_from_slice(src.as_slice());
                Ok(())
            }
            None => Err(Error::BackendIo(io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {guid:02x?} not found"),
            ))),
        }
    }

    fn write_blob(&self, guid: BlobGuid, src: &AlignedBlobBuf) -> Result<()> {
        let mut map = self.write();
        match map.get_mut(&guid) {
            Some(existing) => existing.as_mut_slice().copy_from_slice(src.as_slice()),
            None => {
                map.insert(guid, src.clone());
            }
        }
        Ok(())
    }

    fn delete_blob(&self, guid: BlobGuid) -> Result<()> {
        self.write().remove(&guid);
        Ok(())
    }

    fn list_blobs(&self) -> Result<Vec<BlobGuid>> {
        let mut guids: Vec<BlobGuid> = self.read().keys().copied().collect();
        guids.sort_unstable();
        Ok(guids)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn has_blob(&self, guid: BlobGuid) -> Result<bool> {
        Ok(self.read().contains_key(&guid))
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
    fn write_read_overwrite_delete() {
        let backend = MemoryBackend::new();
        assert!(backend.is_empty());
        let guid = [9u8; 16];
        assert!(backend.write_blob(guid, &frame(1)).is_ok());
        assert!(backend.write_blob(guid, &frame(2)).is_ok());
        assert_eq!(backend.len(), 1);
        let mut out = AlignedBlobBuf::zeroed();
        assert!(backend.read_blob(guid, &mut out).is_ok());
        assert!(out.as_slice().iter().all(|&b| b == 2));
        assert!(backend.delete_blob(guid).is_ok());
        assert!(backend.delete_blob(guid).is_ok());
        assert!(backend.is_empty());
        assert_eq!(backend.has_blob(guid).ok(), Some(false));
    }

    #[test]
    fn missing_read_is_not_found() {
        let backend = MemoryBackend::new();
        let mut out = AlignedBlobBuf::zeroed();
        match backend.read_blob([0xab; 16], &mut out) {
            Err(Error::BackendIo(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::NotFound);
                assert!(e.to_string().starts_with("blob [ab, ab,"), "{e}");
                assert!(e.to_string().ends_with("] not found"), "{e}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn list_is_sorted() {
        let backend = MemoryBackend::new();
        for g in [[3u8; 16], [1u8; 16], [2u8; 16]] {
            assert!(backend.write_blob(g, &frame(0)).is_ok());
        }
        assert_eq!(
            backend.list_blobs().ok(),
            Some(vec![[1u8; 16], [2u8; 16], [3u8; 16]])
        );
    }
}
