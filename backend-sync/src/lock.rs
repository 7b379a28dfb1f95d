//! [`DirLock`]: one owner per database directory, via `flock` on
//! `<dir>/LOCK`.

use std::error::Error;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::sys;

/// Name of the lock file inside the locked directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// An exclusive `flock(LOCK_EX | LOCK_NB)` on `<dir>/LOCK`, held until
/// the value is dropped.
///
/// `flock` locks belong to an open file description, so a second
/// [`DirLock::acquire`] of the same directory fails whether it comes from
/// another process or from this one. The kernel drops the lock when the
/// holder exits, however it exits, so a crash never leaves a stale lock.
/// The `LOCK` file itself stays behind and is reused.
#[derive(Debug)]
pub struct DirLock {
    /// The open lock file; closing it (or `LOCK_UN`) releases the lock.
    file: File,
    /// `<dir>/LOCK`.
    path: PathBuf,
}

impl DirLock {
    /// Creates (if needed) and opens `<dir>/LOCK`, then takes the lock
    /// without waiting.
    ///
    /// # Errors
    /// [`io::ErrorKind::WouldBlock`] if another handle holds the lock; its
    /// message names the lock file and its [`source`](Error::source) is the
    /// raw `EWOULDBLOCK` OS error. Any error from opening the file is
    /// returned unchanged.
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        let path = dir.join(LOCK_FILE_NAME);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match sys::try_lock_exclusive(&file) {
            Ok(()) => Ok(Self { file, path }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                LockHeld { path, source: e },
            )),
            Err(e) => Err(e),
        }
    }

    /// The lock file, `<dir>/LOCK`.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the descriptor right after releases the lock anyway;
        // unlocking first just does not depend on that, so an error here
        // changes nothing and is ignored.
        let _ = sys::unlock(&self.file);
    }
}

/// The error inside a [`DirLock::acquire`] failure: someone else holds the
/// lock.
#[derive(Debug)]
struct LockHeld {
    /// The contended lock file.
    path: PathBuf,
    /// The raw `EWOULDBLOCK` from `flock`.
    source: io::Error,
}

impl fmt::Display for LockHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is locked by another process or handle (is the database already open?)",
            self.path.display()
        )
    }
}

impl Error for LockHeld {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_in_process_fails_until_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join("LOCK"));

        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(err.to_string().contains("LOCK"), "{err}");
        assert!(err.to_string().contains("locked"), "{err}");
        let raw = err
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        assert_eq!(raw, Some(libc::EWOULDBLOCK));

        drop(first);
        let again = DirLock::acquire(dir.path()).unwrap();
        assert!(dir.path().join("LOCK").is_file());
        drop(again);
    }

    #[test]
    fn missing_directory_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = DirLock::acquire(&dir.path().join("absent")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
