//! Shared by the persistence suites (`mod common;` in each test file):
//! the I/O drivers every scenario runs over ([`Driver`], [`per_driver!`]),
//! the one wrapper that watches or disturbs a driver's calls
//! ([`hooked`]), fault injection through it ([`fault`]), and the op
//! workload with its model ([`workload`]).
//!
//! Each test binary uses a different part of it.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod drivers;
pub mod fault;
pub mod hooked;
pub mod workload;

pub use drivers::{builder, Driver};

/// Turns scenario functions `fn name(d: Driver)` into one test per
/// driver: `name::sync` and `name::uring`, so a failure names its driver.
/// The uring test passes with a printed note where io_uring is
/// unavailable. A scenario left out of the list is an unused function,
/// which `clippy -D warnings` refuses.
///
/// ```ignore
/// /// Doc comment naming the bug the scenario catches.
/// fn reopen_round_trips(d: Driver) { /* ... */ }
/// per_driver!(reopen_round_trips);
/// ```
macro_rules! per_driver {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sync() {
                super::$name($crate::common::Driver::Sync);
            }
            #[test]
            fn uring() {
                if $crate::common::Driver::Uring.available() {
                    super::$name($crate::common::Driver::Uring);
                }
            }
        }
    )*};
}
pub(crate) use per_driver;
