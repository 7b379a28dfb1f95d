//! [`UringDriver`], the io_uring probe and [`best_driver`].

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use io_uring::{opcode, IoUring, Probe};

use holt_backend_sync::{AlignedBuf, IoDriver, IoFile, OpenOptions, SyncDriver};

use crate::arena::{arena_info, Arena, ArenaInfo, SLOT_BYTES};
use crate::faults::Faults;
use crate::file::{UringConfig, UringFile};

/// The sysctl that restricts io_uring (Linux 6.6+): 0 allowed, 1 only for
/// members of `kernel.io_uring_group` (or `CAP_SYS_ADMIN`), 2 nobody.
const DISABLED_SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// Why io_uring cannot be used here, so the caller falls back to
/// [`SyncDriver`].
#[derive(Debug)]
pub enum FallbackReason {
    /// `kernel.io_uring_disabled` forbids io_uring to this process (the
    /// sysctl's value: 2, or 1 and setup was refused).
    Disabled {
        /// Value of `/proc/sys/kernel/io_uring_disabled`.
        sysctl: u32,
    },
    /// The kernel has no io_uring (`io_uring_setup` is `ENOSYS`).
    Unsupported,
    /// `io_uring_setup` was refused with `EPERM` — typically a seccomp
    /// filter (containers, sandboxes).
    PermissionDenied,
    /// The kernel's io_uring lacks an operation the driver needs (it needs
    /// Linux 5.6 or later).
    MissingOpcode(&'static str),
    /// Setting up a ring failed otherwise (`ENOMEM`, `EMFILE`, a
    /// `RLIMIT_MEMLOCK` too small for the ring on kernels before 5.12, ...).
    Setup(io::Error),
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled { sysctl } => write!(
                f,
                "io_uring disabled by kernel.io_uring_disabled = {sysctl}"
            ),
            Self::Unsupported => f.write_str("io_uring not supported by this kernel (ENOSYS)"),
            Self::PermissionDenied => {
                f.write_str("io_uring_setup refused with EPERM (seccomp filter or sandbox policy)")
            }
            Self::MissingOpcode(op) => {
                write!(f, "io_uring lacks {op} (needs Linux 5.6 or later)")
            }
            Self::Setup(e) => write!(f, "io_uring setup failed: {e}"),
        }
    }
}

impl std::error::Error for FallbackReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Setup(e) => Some(e),
            _ => None,
        }
    }
}

impl From<FallbackReason> for io::Error {
    fn from(reason: FallbackReason) -> Self {
        let kind = match &reason {
            FallbackReason::Setup(e) => e.kind(),
            FallbackReason::Disabled { .. } | FallbackReason::PermissionDenied => {
                io::ErrorKind::PermissionDenied
            }
            FallbackReason::Unsupported | FallbackReason::MissingOpcode(_) => {
                io::ErrorKind::Unsupported
            }
        };
        io::Error::new(kind, reason)
    }
}

/// Reads `kernel.io_uring_disabled`; `None` where the sysctl does not
/// exist (kernels before 6.6) or cannot be read.
fn read_disabled_sysctl() -> Option<u32> {
    fs::read_to_string(DISABLED_SYSCTL)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The verdict of the sysctl alone: value 2 rules io_uring out before
/// trying; 0, 1 (we may be in the group) and absent mean "try".
fn disabled_by_sysctl(sysctl: Option<u32>) -> Option<FallbackReason> {
    match sysctl {
        Some(v) if v >= 2 => Some(FallbackReason::Disabled { sysctl: v }),
        _ => None,
    }
}

/// Names a failed `io_uring_setup`, given the sysctl's value.
fn classify_setup_error(err: io::Error, sysctl: Option<u32>) -> FallbackReason {
    match err.raw_os_error() {
        Some(libc::ENOSYS) => FallbackReason::Unsupported,
        Some(libc::EPERM) => match sysctl {
            Some(v) if v >= 1 => FallbackReason::Disabled { sysctl: v },
            _ => FallbackReason::PermissionDenied,
        },
        _ => FallbackReason::Setup(err),
    }
}

/// Sets up a small ring and checks the opcodes the driver uses.
fn probe_kernel(sysctl: Option<u32>) -> Result<(), FallbackReason> {
    if let Some(reason) = disabled_by_sysctl(sysctl) {
        return Err(reason);
    }
    let ring = IoUring::new(8).map_err(|e| classify_setup_error(e, sysctl))?;
    let mut probe = Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return Err(if e.raw_os_error() == Some(libc::EINVAL) {
            FallbackReason::MissingOpcode("IORING_REGISTER_PROBE")
        } else {
            FallbackReason::Setup(e)
        });
    }
    let needed = [
        (opcode::Read::CODE, "IORING_OP_READ"),
        (opcode::Write::CODE, "IORING_OP_WRITE"),
        (opcode::Fsync::CODE, "IORING_OP_FSYNC"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            return Err(FallbackReason::MissingOpcode(name));
        }
    }
    Ok(())
}

/// The io_uring [`IoDriver`]: files opened by it are [`UringFile`]s, each
/// with its own ring; directory operations (rename, remove, `sync_dir`,
/// `list_dir`, `create_dir_all`) are the [`SyncDriver`]'s. Build it with
/// [`UringDriver::probe`] (or let [`best_driver`] choose).
#[derive(Clone, Copy, Debug)]
pub struct UringDriver {
    /// How files are set up.
    config: UringConfig,
}

impl UringDriver {
    /// Checks that io_uring works here — the sysctl, a ring of 8 entries,
    /// and the read, write and fsync opcodes — and returns the driver with
    /// the default [`UringConfig`].
    ///
    /// # Errors
    /// A [`FallbackReason`]: `kernel.io_uring_disabled`, `ENOSYS`, `EPERM`
    /// (seccomp), a kernel too old, or another setup error.
    pub fn probe() -> Result<Self, FallbackReason> {
        Self::probe_with(UringConfig::default())
    }

    /// [`UringDriver::probe`] with an explicit configuration.
    ///
    /// # Errors
    /// As [`UringDriver::probe`].
    pub fn probe_with(config: UringConfig) -> Result<Self, FallbackReason> {
        probe_kernel(read_disabled_sysctl())?;
        Ok(Self { config })
    }

    /// The configuration files are opened with.
    #[must_use]
    pub fn config(&self) -> UringConfig {
        self.config
    }

    /// This driver, injecting `faults` into every file it opens from now
    /// on (tests).
    #[must_use]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.config.faults = faults;
        self
    }

    /// This driver, with rings of `entries` SQEs for files it opens from
    /// now on.
    #[must_use]
    pub fn with_ring_entries(mut self, entries: u32) -> Self {
        self.config.ring_entries = entries;
        self
    }

    /// This driver, with the registered-buffer arena on or off for
    /// buffers it hands out and files it opens from now on (see
    /// [`UringConfig::registered_buffers`]).
    #[must_use]
    pub fn with_registered_buffers(mut self, on: bool) -> Self {
        self.config.registered_buffers = on;
        self
    }

    /// The process's registered-buffer arena: its size, free slots, how
    /// many rings have it registered, how its size was chosen, or why
    /// there is none. Does not create it.
    #[must_use]
    pub fn arena_info() -> ArenaInfo {
        arena_info()
    }

    /// [`IoDriver::open`], returning the concrete [`UringFile`] (for its
    /// stats and fault controls).
    ///
    /// # Errors
    /// As [`IoDriver::open`]: the OS error of the `open`.
    pub fn open_file(&self, path: &Path, opts: OpenOptions) -> io::Result<UringFile> {
        let (file, direct) = open_std(path, opts)?;
        Ok(UringFile::from_file(
            file,
            path.to_path_buf(),
            direct,
            self.config,
        ))
    }
}

/// Opens `path` read + write without truncation, trying `O_DIRECT` first
/// when asked (the [`SyncDriver`]'s policy). Returns the file and whether
/// it is direct.
fn open_std(path: &Path, opts: OpenOptions) -> io::Result<(fs::File, bool)> {
    open_with_fallback(opts.direct, |flags| {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(opts.create)
            .truncate(false)
            .custom_flags(flags)
            .open(path)
    })
}

/// The `O_DIRECT` policy apart from the syscall: with `direct`, try
/// `O_DIRECT`; if the filesystem answers `EINVAL`, open buffered.
fn open_with_fallback<F>(
    direct: bool,
    mut open: impl FnMut(libc::c_int) -> io::Result<F>,
) -> io::Result<(F, bool)> {
    if direct {
        match open(libc::O_DIRECT) {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((open(0)?, false))
}

impl IoDriver for UringDriver {
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Arc<dyn IoFile>> {
        Ok(Arc::new(self.open_file(path, opts)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        SyncDriver.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        SyncDriver.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        SyncDriver.sync_dir(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        SyncDriver.list_dir(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        SyncDriver.create_dir_all(dir)
    }

    fn name(&self) -> &'static str {
        "io_uring"
    }

    /// A slot of the process's registered-buffer arena when
    /// [`UringConfig::registered_buffers`] is on, `len` fits a slot (512
    /// KiB), one is free and no ring was refused the registration; else a
    /// plain [`AlignedBuf`]. Creates the arena (at [`ARENA_CAP`](crate::ARENA_CAP))
    /// if no [`IoDriver::reserve_buffers`] did before. Either way the
    /// buffer is zeroed and aligned.
    fn alloc_buffer(&self, len: usize) -> io::Result<AlignedBuf> {
        if self.config.registered_buffers {
            if let Some(buf) = Arena::get(usize::MAX)
                .ok()
                .and_then(|arena| arena.alloc(len))
            {
                return Ok(buf);
            }
        }
        AlignedBuf::new(len)
    }

    /// Creates the registered-buffer arena on the first call, with at most
    /// `count` slots of 512 KiB (and at most [`ARENA_CAP`](crate::ARENA_CAP),
    /// within the `RLIMIT_MEMLOCK` budget), and returns its slot count: 0
    /// when `len` does not fit a slot, registered buffers are off, there
    /// is no arena, or the kernel refused to register it. The arena keeps
    /// the size of the first call (it is never freed or resized).
    fn reserve_buffers(&self, len: usize, count: usize) -> usize {
        if !self.config.registered_buffers || len == 0 || len > SLOT_BYTES || count == 0 {
            return 0;
        }
        Arena::get(count).map_or(0, |arena| arena.slots())
    }
}

/// Which driver [`best_driver`] chose, and why it fell back if it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverInfo {
    /// [`IoDriver::name`] of the chosen driver: `"io_uring"` or `"sync"`.
    pub name: &'static str,
    /// Why io_uring was not used (`None` when it is).
    pub fallback_reason: Option<String>,
}

/// The io_uring driver when [`UringDriver::probe`] succeeds, else the
/// [`SyncDriver`] with the probe's [`FallbackReason`] recorded.
#[must_use]
pub fn best_driver() -> (Arc<dyn IoDriver>, DriverInfo) {
    choose(UringDriver::probe())
}

/// [`best_driver`]'s decision, given the probe's outcome.
fn choose(probe: Result<UringDriver, FallbackReason>) -> (Arc<dyn IoDriver>, DriverInfo) {
    match probe {
        Ok(driver) => {
            let info = DriverInfo {
                name: driver.name(),
                fallback_reason: None,
            };
            (Arc::new(driver), info)
        }
        Err(reason) => {
            let driver = SyncDriver::new();
            let info = DriverInfo {
                name: driver.name(),
                fallback_reason: Some(reason.to_string()),
            };
            (Arc::new(driver), info)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn sysctl_two_disables_without_trying() {
        assert!(matches!(
            disabled_by_sysctl(Some(2)),
            Some(FallbackReason::Disabled { sysctl: 2 })
        ));
        for v in [None, Some(0), Some(1)] {
            assert!(disabled_by_sysctl(v).is_none());
        }
        let reason = probe_kernel(Some(2)).unwrap_err();
        assert_eq!(
            reason.to_string(),
            "io_uring disabled by kernel.io_uring_disabled = 2"
        );
    }

    #[test]
    fn setup_errors_are_classified() {
        assert!(matches!(
            classify_setup_error(os(libc::ENOSYS), None),
            FallbackReason::Unsupported
        ));
        assert!(matches!(
            classify_setup_error(os(libc::EPERM), Some(0)),
            FallbackReason::PermissionDenied
        ));
        assert!(matches!(
            classify_setup_error(os(libc::EPERM), None),
            FallbackReason::PermissionDenied
        ));
        assert!(matches!(
            classify_setup_error(os(libc::EPERM), Some(1)),
            FallbackReason::Disabled { sysctl: 1 }
        ));
        let other = classify_setup_error(os(libc::ENOMEM), Some(0));
        assert!(
            matches!(&other, FallbackReason::Setup(e) if e.raw_os_error() == Some(libc::ENOMEM))
        );
        assert!(std::error::Error::source(&other).is_some());
    }

    #[test]
    fn reasons_read_well_and_convert_to_io_errors() {
        let cases = [
            (
                FallbackReason::Unsupported,
                io::ErrorKind::Unsupported,
                "ENOSYS",
            ),
            (
                FallbackReason::PermissionDenied,
                io::ErrorKind::PermissionDenied,
                "seccomp",
            ),
            (
                FallbackReason::MissingOpcode("IORING_OP_WRITE"),
                io::ErrorKind::Unsupported,
                "IORING_OP_WRITE",
            ),
            (
                FallbackReason::Setup(os(libc::EMFILE)),
                io::ErrorKind::Other,
                "setup failed",
            ),
        ];
        for (reason, kind, text) in cases {
            assert!(reason.to_string().contains(text), "{reason}");
            let err = io::Error::from(reason);
            if kind != io::ErrorKind::Other {
                assert_eq!(err.kind(), kind);
            }
            assert!(err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn choose_falls_back_to_sync_with_the_reason() {
        let (driver, info) = choose(Err(FallbackReason::PermissionDenied));
        assert_eq!(driver.name(), "sync");
        assert_eq!(info.name, "sync");
        let reason = info.fallback_reason.unwrap();
        assert!(reason.contains("EPERM"), "{reason}");
    }

    #[test]
    fn einval_on_direct_open_falls_back_to_buffered() {
        let mut tried = Vec::new();
        let (_, direct) = open_with_fallback(true, |flags| {
            tried.push(flags);
            if flags == libc::O_DIRECT {
                Err(os(libc::EINVAL))
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert!(!direct);
        assert_eq!(tried, [libc::O_DIRECT, 0]);

        let (_, direct) = open_with_fallback(true, |_| Ok(())).unwrap();
        assert!(direct);
        let (_, direct) = open_with_fallback(false, |flags| {
            assert_eq!(flags, 0);
            Ok(())
        })
        .unwrap();
        assert!(!direct);
        let err =
            open_with_fallback(true, |_| -> io::Result<()> { Err(os(libc::ENOENT)) }).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn builder_methods_set_the_config() {
        let driver = UringDriver {
            config: UringConfig::default(),
        }
        .with_ring_entries(16)
        .with_faults(Faults {
            short_write_every: Some(2),
            ..Faults::default()
        });
        let config = driver.config();
        assert_eq!(config.ring_entries, 16);
        assert_eq!(config.faults.short_write_every, Some(2));
    }
}
