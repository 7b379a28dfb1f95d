//! io_uring I/O driver for holt (filled in by the io_uring issue).
