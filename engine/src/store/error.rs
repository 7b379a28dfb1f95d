//! Errors raised by the frame slot allocator.

use std::fmt;

/// Why a node-slot allocation inside a blob frame failed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum AllocError {
    /// The frame has no free node slot left.
    OutOfSlots,
    /// The frame lacks the contiguous space the request needs.
    OutOfSpace {
        /// Bytes requested.
        need: u32,
        /// Bytes still available in the frame.
        avail: u32,
    },
    /// The request itself is malformed (for example a zero size).
    InvalidRequest,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfSlots => f.write_str("no free node slot in frame"),
            Self::OutOfSpace { need, avail } => {
                write!(
                    f,
                    "frame out of space (need {need} bytes, {avail} available)"
                )
            }
            Self::InvalidRequest => f.write_str("invalid allocation request"),
        }
    }
}

impl std::error::Error for AllocError {}

/// Why releasing a node slot inside a blob frame failed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum FreeError {
    /// The slot index is out of range or not allocated.
    InvalidSlot(u16),
    /// The slot holds a node of another type than the caller expected.
    TypeMismatch {
        /// Slot index.
        slot: u16,
        /// Type tag actually found in the slot.
        tag: u16,
    },
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidSlot(slot) => write!(f, "invalid slot {slot}"),
            Self::TypeMismatch { slot, tag } => {
                write!(f, "slot {slot} holds a node of unexpected type tag {tag}")
            }
        }
    }
}

impl std::error::Error for FreeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_texts() {
        assert_eq!(
            AllocError::OutOfSlots.to_string(),
            "no free node slot in frame"
        );
        assert_eq!(
            AllocError::OutOfSpace { need: 10, avail: 4 }.to_string(),
            "frame out of space (need 10 bytes, 4 available)"
        );
        assert_eq!(
            AllocError::InvalidRequest.to_string(),
            "invalid allocation request"
        );
        assert_eq!(FreeError::InvalidSlot(7).to_string(), "invalid slot 7");
        assert_eq!(
            FreeError::TypeMismatch { slot: 3, tag: 9 }.to_string(),
            "slot 3 holds a node of unexpected type tag 9"
        );
    }
}
