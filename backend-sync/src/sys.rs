//! Thin safe wrappers over the few libc calls std does not expose. All of
//! the crate's `unsafe` FFI lives here; callers get `io::Result`s.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

/// Most `EINTR`s a single call retries before giving up and returning the
/// `Interrupted` error (a bound, so a signal storm cannot spin us forever).
pub(crate) const MAX_EINTR_RETRIES: u32 = 1000;

/// The open flag that requests direct I/O, where the platform has one.
#[cfg(target_os = "linux")]
pub(crate) const O_DIRECT: Option<libc::c_int> = Some(libc::O_DIRECT);
/// The open flag that requests direct I/O, where the platform has one.
#[cfg(not(target_os = "linux"))]
pub(crate) const O_DIRECT: Option<libc::c_int> = None;

/// Turns a libc return value (0, or -1 with `errno` set) into a result.
fn cvt(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs `call`, retrying while it fails with `EINTR`, at most
/// [`MAX_EINTR_RETRIES`] times.
fn retry_eintr(mut call: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    let mut retries = 0;
    loop {
        match call() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted && retries < MAX_EINTR_RETRIES => {
                retries += 1;
            }
            res => return res,
        }
    }
}

/// Converts a byte offset or length to `off_t`, rejecting values it cannot
/// hold.
fn to_off_t(value: u64, what: &str) -> io::Result<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {value} does not fit in off_t"),
        )
    })
}

/// `fallocate(fd, 0, offset, len)`: reserves blocks and extends the file
/// size if the range ends past it. Returns the OS error unchanged
/// (`EOPNOTSUPP` where the filesystem cannot preallocate).
#[cfg(target_os = "linux")]
pub(crate) fn fallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let offset = to_off_t(offset, "allocate offset")?;
    let len = to_off_t(len, "allocate length")?;
    let fd = file.as_raw_fd();
    retry_eintr(|| {
        // SAFETY: `fd` is a valid open descriptor borrowed from `file`,
        // which outlives this call; fallocate takes plain integers and
        // touches no memory of ours.
        cvt(unsafe { libc::fallocate(fd, 0, offset, len) })
    })
}

/// Preallocation is not implemented on this platform; reports
/// `Unsupported` so the caller falls back to extending the length.
#[cfg(not(target_os = "linux"))]
pub(crate) fn fallocate(_file: &File, offset: u64, len: u64) -> io::Result<()> {
    to_off_t(offset, "allocate offset")?;
    to_off_t(len, "allocate length")?;
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// `sync_file_range(fd, offset, len, SYNC_FILE_RANGE_WRITE)`: starts
/// writeback of the range's dirty pages and returns without waiting for
/// it (nor for pages already under writeback). Durability is unchanged: a
/// later `fdatasync` still waits for them.
#[cfg(target_os = "linux")]
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let offset = to_off_t(offset, "writeback offset")?;
    let len = to_off_t(len, "writeback length")?;
    let fd = file.as_raw_fd();
    retry_eintr(|| {
        // SAFETY: `fd` is a valid open descriptor borrowed from `file`,
        // which outlives this call; sync_file_range takes plain integers
        // and touches no memory of ours.
        cvt(unsafe { libc::sync_file_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE) })
    })
}

/// Starting writeback early is only a hint; elsewhere the later sync does
/// all of it.
#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_file: &File, offset: u64, len: u64) -> io::Result<()> {
    to_off_t(offset, "writeback offset")?;
    to_off_t(len, "writeback length")?;
    Ok(())
}

/// Whether `err` means "this filesystem cannot preallocate".
pub(crate) fn is_unsupported(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Unsupported
        || err.raw_os_error() == Some(libc::EOPNOTSUPP)
        || err.raw_os_error() == Some(libc::ENOTSUP)
}

/// `flock(fd, LOCK_EX | LOCK_NB)`. Fails with the raw `EWOULDBLOCK` when
/// another open file description holds a lock on the file.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    retry_eintr(|| {
        // SAFETY: `fd` is a valid open descriptor borrowed from `file`,
        // which outlives this call; flock takes plain integers.
        cvt(unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) })
    })
}

/// `flock(fd, LOCK_UN)`: releases the lock held through `file`.
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    retry_eintr(|| {
        // SAFETY: `fd` is a valid open descriptor borrowed from `file`,
        // which outlives this call; flock takes plain integers.
        cvt(unsafe { libc::flock(fd, libc::LOCK_UN) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_t_conversion_rejects_huge_values() {
        assert_eq!(to_off_t(4096, "x").unwrap(), 4096);
        let err = to_off_t(u64::MAX, "allocate length").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("allocate length"));
    }

    #[test]
    fn eintr_is_retried_a_bounded_number_of_times() {
        let eintr = || Err(io::Error::from_raw_os_error(libc::EINTR));
        let mut calls = 0u32;
        let res = retry_eintr(|| {
            calls += 1;
            eintr()
        });
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::Interrupted);
        assert_eq!(calls, MAX_EINTR_RETRIES + 1);

        let mut calls = 0u32;
        retry_eintr(|| {
            calls += 1;
            if calls < 3 {
                eintr()
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(calls, 3);
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut calls = 0u32;
        let err = retry_eintr(|| {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::EBADF))
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert_eq!(calls, 1);
    }

    #[test]
    fn unsupported_detection() {
        assert!(is_unsupported(&io::Error::from_raw_os_error(
            libc::EOPNOTSUPP
        )));
        assert!(is_unsupported(&io::Error::from(io::ErrorKind::Unsupported)));
        assert!(!is_unsupported(&io::Error::from_raw_os_error(libc::ENOSPC)));
    }
}
