//! The real I/O drivers the persistence suites run over.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use holt::io::{IoDriver, SyncDriver};
use holt::TreeBuilder;
use holt_backend_uring::UringDriver;

/// One of the real drivers (see [`per_driver!`](crate::common::per_driver)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `holt-backend-sync`: `pread`/`pwrite`.
    Sync,
    /// `holt-backend-uring`: io_uring, batched.
    Uring,
}

/// The io_uring probe, once per test binary.
fn uring_probe() -> &'static Result<UringDriver, String> {
    static PROBE: OnceLock<Result<UringDriver, String>> = OnceLock::new();
    PROBE.get_or_init(|| UringDriver::probe().map_err(|e| e.to_string()))
}

impl Driver {
    /// Both drivers, sync first.
    pub const ALL: [Driver; 2] = [Driver::Sync, Driver::Uring];

    /// Short name, as in test names and child-process specs.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Sync => "sync",
            Driver::Uring => "uring",
        }
    }

    /// The driver named `name` (see [`Driver::name`]).
    pub fn from_name(name: &str) -> Option<Driver> {
        Driver::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether the driver works here; prints why not (io_uring refused by
    /// the kernel or a sandbox), so a skipped test says so.
    pub fn available(self) -> bool {
        match (self, uring_probe()) {
            (Driver::Sync, _) | (Driver::Uring, Ok(_)) => true,
            (Driver::Uring, Err(why)) => {
                eprintln!("skipped: io_uring unavailable here ({why})");
                false
            }
        }
    }

    /// A fresh driver value. Panics for an unavailable driver: scenarios
    /// run only after [`Driver::available`].
    pub fn io(self) -> Arc<dyn IoDriver> {
        match self {
            Driver::Sync => Arc::new(SyncDriver::new()),
            Driver::Uring => match uring_probe() {
                Ok(d) => Arc::new(*d),
                Err(why) => panic!("io_uring unavailable: {why}"),
            },
        }
    }

    /// The other driver (for cross-driver reopen checks); sync where
    /// io_uring is unavailable.
    pub fn other(self) -> Driver {
        match self {
            Driver::Uring => Driver::Sync,
            Driver::Sync if uring_probe().is_ok() => Driver::Uring,
            Driver::Sync => Driver::Sync,
        }
    }

    /// What `Tree::io_stats().driver` reports for this driver.
    pub fn stats_name(self) -> &'static str {
        match self {
            Driver::Sync => "sync",
            Driver::Uring => "io_uring",
        }
    }
}

/// `TreeBuilder::new(dir)` on driver `d`.
pub fn builder(dir: &Path, d: Driver) -> TreeBuilder {
    TreeBuilder::new(dir).io_driver(d.io())
}
