//! [`SyncDriver`]: the [`IoDriver`] on `std::fs` and blocking syscalls.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::driver::{IoDriver, IoFile, OpenOptions};
use crate::sync_file::SyncFile;
use crate::sys;

/// The portable driver: `pread`/`pwrite` on std files, `O_DIRECT` where the
/// filesystem accepts it. Stateless, so one value can serve any number of
/// directories and threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncDriver;

impl SyncDriver {
    /// Creates the driver.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

/// Opens `path` read + write without truncation, with `custom_flags` added
/// to the open flags.
fn open_raw(path: &Path, create: bool, custom_flags: libc::c_int) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .custom_flags(custom_flags)
        .open(path)
}

/// The `O_DIRECT` policy, apart from the syscall so it can be tested:
/// when `direct` is asked for and the platform has a flag, try it first; if
/// the open fails with `EINVAL` (the filesystem refuses direct I/O), open
/// buffered. Returns the file and whether it is direct.
fn open_with_fallback<F>(
    direct: bool,
    direct_flag: Option<libc::c_int>,
    mut open: impl FnMut(libc::c_int) -> io::Result<F>,
) -> io::Result<(F, bool)> {
    if let (true, Some(flag)) = (direct, direct_flag) {
        match open(flag) {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((open(0)?, false))
}

impl IoDriver for SyncDriver {
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Arc<dyn IoFile>> {
        let (file, direct) = open_with_fallback(opts.direct, sys::O_DIRECT, |flags| {
            open_raw(path, opts.create, flags)
        })?;
        Ok(Arc::new(SyncFile::from_file(
            file,
            path.to_path_buf(),
            direct,
        )))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)?
            .sync_all()
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut entries = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<io::Result<Vec<_>>>()?;
        entries.sort();
        Ok(entries)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn name(&self) -> &'static str {
        "sync"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAG: libc::c_int = 0o40000;

    #[test]
    fn direct_open_that_succeeds_is_direct() {
        let mut tried = Vec::new();
        let (_, direct) = open_with_fallback(true, Some(FLAG), |f| {
            tried.push(f);
            Ok(())
        })
        .unwrap();
        assert!(direct);
        assert_eq!(tried, [FLAG]);
    }

    #[test]
    fn einval_falls_back_to_buffered() {
        let mut tried = Vec::new();
        let (_, direct) = open_with_fallback(true, Some(FLAG), |f| {
            tried.push(f);
            if f == FLAG {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert!(!direct);
        assert_eq!(tried, [FLAG, 0]);
    }

    #[test]
    fn other_open_errors_are_returned() {
        let mut tried = Vec::new();
        let err = open_with_fallback(true, Some(FLAG), |f| -> io::Result<()> {
            tried.push(f);
            Err(io::Error::from_raw_os_error(libc::ENOENT))
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(tried, [FLAG]);
    }

    #[test]
    fn buffered_request_or_no_flag_opens_buffered_once() {
        for (direct, flag) in [(false, Some(FLAG)), (true, None)] {
            let mut tried = Vec::new();
            let (_, got) = open_with_fallback(direct, flag, |f| {
                tried.push(f);
                Ok(())
            })
            .unwrap();
            assert!(!got);
            assert_eq!(tried, [0]);
        }
    }

    #[test]
    fn missing_file_without_create_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions {
            create: false,
            direct: true,
        };
        let err = SyncDriver.open(&dir.path().join("nope"), opts).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(SyncDriver::new().name(), "sync");
    }
}
