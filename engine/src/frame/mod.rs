//! Blob frames: self-describing 512 KiB images holding part of the ART.
//!
//! `header` (magic, version, GUID, CRC32C, allocator state), `node` (node
//! layouts and edits), `alloc` (space inside a frame), `copy` (moving
//! subtrees between frames, repacking, structural checks, stats), `mem`
//! (the atomic byte store every access goes through), `capture` (the
//! page-wise copy-on-write of a checkpoint's image, fed by `mem`'s
//! stores).

pub(crate) mod alloc;
mod arena;
pub(crate) mod capture;
pub(crate) mod copy;
pub(crate) mod header;
pub(crate) mod image;
pub(crate) mod mem;
pub(crate) mod node;
mod simd;
pub(crate) mod validate;

pub(crate) use header::HEADER_SIZE;
pub(crate) use mem::{AtomicFrame, Corrupt, FResult, PAGES};
