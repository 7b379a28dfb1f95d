//! Range iteration (in progress).
/// One item of a range listing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RangeEntry {
    /// A key and its value.
    Key {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// A rolled-up common prefix, delimiter included.
    CommonPrefix(Vec<u8>),
}
/// Range builder (in progress).
pub struct RangeBuilder;
/// Range iterator (in progress).
pub struct RangeIter;
