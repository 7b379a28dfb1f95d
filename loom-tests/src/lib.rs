//! loom model checks of holt's latch and buffer-manager protocols.
