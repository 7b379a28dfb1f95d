//! holt: an embedded storage engine for path-shaped metadata keys.
//!
//! Keys such as `bucket/tenant/2025/11/obj.parquet` or `/home/u1/src/main.rs`
//! share long prefixes. holt keeps them in an adaptive radix tree (ART)
//! whose nodes live inside self-describing 512 KiB *blob frames*; a frame
//! links to child frames by GUID, so a tree of any size is a tree of frames.
//! Frames are cached by a buffer manager, each behind its own
//! `HybridLatch`, so readers run optimistically and writers
//! in disjoint subtrees run in parallel.
//!
//! ```
//! use holt::{RangeEntry, TreeBuilder};
//!
//! let tree = TreeBuilder::new("unused").memory().open()?;
//! tree.put(b"photos/2025/a.jpg", b"meta-a")?;
//! tree.put(b"photos/2025/b.jpg", b"meta-b")?;
//! tree.put(b"photos/2026/c.jpg", b"meta-c")?;
//! assert_eq!(tree.get(b"photos/2025/a.jpg")?, Some(b"meta-a".to_vec()));
//!
//! // One directory level, S3 style.
//! let level: Vec<RangeEntry> = tree
//!     .range()
//!     .prefix(b"photos/")
//!     .delimiter(b'/')
//!     .into_iter()
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(level.len(), 2); // "photos/2025/" and "photos/2026/"
//! # Ok::<(), holt::Error>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

#[cfg(not(unix))]
compile_error!("holt supports Unix targets only");

pub mod api;
pub(crate) mod buffer;
pub(crate) mod checkpoint;
pub(crate) mod frame;
pub(crate) mod latch;
#[cfg(feature = "metrics")]
pub mod metrics;

/// The I/O driver contract persistent mode runs on (re-exported from
/// `holt-backend-sync`): implement [`io::IoDriver`] to inject faults or
/// simulate power loss, and pass it to
/// [`TreeBuilder::io_driver`](crate::TreeBuilder::io_driver).
pub mod io {
    pub use holt_backend_sync::{
        AlignedBuf, Feed, IoDriver, IoFile, OpenOptions, StableBuf, StreamWrite, SyncDriver,
        WriteFeed, ALIGN,
    };
}
pub(crate) mod mutation;
pub(crate) mod store;
pub(crate) mod sync;
pub(crate) mod tree;
pub(crate) mod wal;

pub use api::builder::TreeBuilder;
pub use api::config::{CheckpointConfig, Storage, TreeConfig};
pub use api::errors::{Error, Result};
pub use api::range::{RangeBuilder, RangeEntry, RangeEntryRef, RangeIter};
pub use api::stats::{BlobStats, CacheStats, CheckpointerStats, FrameHops, TreeStats, WalStats};
pub use api::tree::{IoStats, Tree};
pub use api::txn::TxnBatch;
pub use store::{
    AlignedBlobBuf, Backend, BlobGuid, ImageFeed, ImageNext, MemoryBackend, PersistentBackend,
};
