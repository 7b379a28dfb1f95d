//! What the driver's file tests share: the chunk size they write, how
//! they open files, and the probe that skips a test where io_uring is
//! unavailable.

use holt_backend_sync::{OpenOptions, ALIGN};
use holt_backend_uring::UringDriver;

/// Bytes of one test chunk.
pub const CHUNK: usize = 16 * ALIGN;

/// Files are created and opened with `O_DIRECT`.
pub const OPTS: OpenOptions = OpenOptions {
    create: true,
    direct: true,
};

/// The io_uring driver, or `None` (with a note) where it cannot be set up.
pub fn uring() -> Option<UringDriver> {
    match UringDriver::probe() {
        Ok(d) => Some(d),
        Err(reason) => {
            eprintln!("skipped: io_uring unavailable here ({reason})");
            None
        }
    }
}
