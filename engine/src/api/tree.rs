//! `Tree` (in progress).
use std::sync::Arc;

use crate::api::config::TreeConfig;
use crate::api::errors::Result;
use crate::store::Backend;

/// An ART over blob frames (in progress).
#[derive(Clone)]
pub struct Tree {
    cfg: TreeConfig,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").finish_non_exhaustive()
    }
}

impl Tree {
    /// Opens a tree.
    pub fn open(cfg: TreeConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// Opens a tree over a caller-supplied backend.
    pub fn open_with_backend(cfg: TreeConfig, _backend: Arc<dyn Backend>) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &TreeConfig {
        &self.cfg
    }
}
