//! The public API: [`Tree`](tree::Tree), its builder, configuration,
//! errors, range iteration, statistics and transactions.

pub mod builder;
pub mod config;
pub mod errors;
pub mod range;
pub mod stats;
pub mod tree;
pub mod txn;
