//! The write-ahead log (DESIGN.md §7): after-image records (`record`),
//! the group-commit writer with rotation at checkpoint cuts (`writer`),
//! and reading it back at open (`replay`).

pub(crate) mod record;
pub(crate) mod replay;
pub(crate) mod writer;

pub(crate) use record::{Op, OpRef};
pub(crate) use writer::Wal;
