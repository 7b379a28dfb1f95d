//! [`PersistentBackend`]: frames stored under a data directory.
//!
//! In-memory placeholder; replaced by the persistence issue. Until then it
//! creates the directory but keeps every frame in RAM.

use std::fs;
use std::path::{Path, PathBuf};

use super::{AlignedBlobBuf, Backend, BlobGuid, MemoryBackend};
use crate::api::errors::{Error, Result};

/// A [`Backend`] that stores frames under a data directory.
///
/// In-memory placeholder; replaced by the persistence issue: frames are
/// currently held in a [`MemoryBackend`] and are lost when the backend is
/// dropped.
#[derive(Debug)]
pub struct PersistentBackend {
    dir: PathBuf,
    inner: MemoryBackend,
}

impl PersistentBackend {
    /// Opens the backend rooted at `data_dir`, creating the directory if it
    /// is missing.
    ///
    /// # Errors
    /// [`Error::BackendIo`] if the directory cannot be created.
    pub fn open<P: Into<PathBuf>>(data_dir: P) -> Result<Self> {
        let dir = data_dir.into();
        fs::create_dir_all(&dir).map_err(Error::BackendIo)?;
        Ok(Self {
            dir,
            inner: MemoryBackend::new(),
        })
    }

    /// The data directory this backend was opened on.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Number of frames stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no frame is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

impl Backend for PersistentBackend {
    fn read_blob(&self, guid: BlobGuid, dst: &mut AlignedBlobBuf) -> Result<()> {
        self.inner.read_blob(guid, dst)
    }

    fn write_blob(&self, guid: BlobGuid, src: &AlignedBlobBuf) -> Result<()> {
        self.inner.write_blob(guid, src)
    }

    fn delete_blob(&self, guid: BlobGuid) -> Result<()> {
        self.inner.delete_blob(guid)
    }

    fn list_blobs(&self) -> Result<Vec<BlobGuid>> {
        self.inner.list_blobs()
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn has_blob(&self, guid: BlobGuid) -> Result<bool> {
        self.inner.has_blob(guid)
    }
}
