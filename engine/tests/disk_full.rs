#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Disk full: a WAL write refused with `StorageFull` fails the operation
//! cleanly, reads keep working, and writes work again once space returns
//! (the tree is not poisoned: nothing was written, so nothing was lost).
//!
//! Fails if the WAL poisoned the tree on `StorageFull` (writes would stay
//! refused after space returns), or if the refused records were dropped
//! from the buffer instead of retried (the records queued behind them
//! would then follow a seq gap and vanish at the next recovery).

mod common;

use std::io;

use common::fault::{Injector, Kind, Plan};
use common::{builder, per_driver, Driver};

/// Writes and preallocation refused with `StorageFull`, nothing written:
/// a disk with no space left.
fn disk_full() -> Plan {
    Plan {
        kinds: &[Kind::Write, Kind::Alloc],
        ..Plan::always(Kind::Write, io::ErrorKind::StorageFull)
    }
}

/// A put refused for lack of space fails alone; reads work; writes and
/// checkpoints resume once space returns, and reopen has every
/// acknowledged put. Fails if `StorageFull` poisoned the tree or the
/// refused records were dropped instead of retried (see the module docs).
fn wal_disk_full_fails_cleanly_and_writes_resume_when_space_returns(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let (driver, full) = Injector::wrap(d.io());
    {
        let t = builder(dir.path(), d)
            .wal_sync_on_commit(true)
            .io_driver(driver)
            .open()
            .unwrap();
        t.put(b"before", b"1").unwrap();
        full.arm(disk_full());
        let err = t.put(b"during", b"2").unwrap_err();
        assert!(
            matches!(&err, holt::Error::BackendIo(e) if e.kind() == io::ErrorKind::StorageFull),
            "{err:?}"
        );
        assert_eq!(
            t.get(b"before").unwrap(),
            Some(b"1".to_vec()),
            "reads keep working"
        );
        assert!(t.checkpoint().is_err(), "a checkpoint cannot write either");
        full.disarm();
        t.put(b"after", b"3").unwrap();
        t.checkpoint().unwrap();
        t.put(b"tail", b"4").unwrap();
    }
    let t = builder(dir.path(), d).open().unwrap();
    assert_eq!(t.get(b"before").unwrap(), Some(b"1".to_vec()));
    assert_eq!(t.get(b"after").unwrap(), Some(b"3".to_vec()));
    assert_eq!(t.get(b"tail").unwrap(), Some(b"4".to_vec()));
    // The refused put was never acknowledged; it was retried with the
    // next write, so it is whole if present.
    let during = t.get(b"during").unwrap();
    assert!(during.is_none() || during == Some(b"2".to_vec()));
}

per_driver!(wal_disk_full_fails_cleanly_and_writes_resume_when_space_returns);
