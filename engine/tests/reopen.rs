#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Persistent mode: reopen round trips with and without checkpoints,
//! each scenario once per I/O driver (`<test>::sync`, `<test>::uring`).

mod common;

use std::collections::BTreeMap;

use common::{builder, per_driver, Driver};
use holt::{Error, RangeEntry, Tree, TreeBuilder, TreeConfig};

fn all(t: &Tree) -> BTreeMap<Vec<u8>, Vec<u8>> {
    t.range()
        .into_iter()
        .map(|e| match e.unwrap() {
            RangeEntry::Key { key, value } => (key, value),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn workload(t: &Tree, model: &mut BTreeMap<Vec<u8>, Vec<u8>>, round: u64) {
    for i in 0..3000u64 {
        let k = format!(
            "tenant-{}/dir-{}/obj-{:06}",
            i % 3,
            i % 17,
            (i * 7919 + round) % 5000
        )
        .into_bytes();
        if i % 5 == 4 {
            assert_eq!(t.delete(&k).unwrap(), model.remove(&k));
        } else {
            let v = format!("v{round}-{i}")
                .repeat((i % 7) as usize + 1)
                .into_bytes();
            assert_eq!(t.put(&k, &v).unwrap(), model.insert(k, v));
        }
    }
    t.rename(b"tenant-0/dir-0/obj-000000", b"renamed", true)
        .ok();
    if let Some(v) = model.remove(b"tenant-0/dir-0/obj-000000".as_slice()) {
        model.insert(b"renamed".to_vec(), v);
    }
    t.txn(|b| {
        b.put(b"txn/a", b"1");
        b.put(b"txn/b", b"2");
        b.delete(b"txn/a");
    })
    .unwrap();
    model.insert(b"txn/b".to_vec(), b"2".to_vec());
    model.remove(b"txn/a".as_slice());
}

/// Three rounds of writes, no checkpoint, reopen after each. Fails if
/// replay lost or reordered WAL records (the model comparison differs).
fn reopen_without_checkpoint_replays_the_wal(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    for round in 0..3 {
        let t = builder(dir.path(), d).open().unwrap();
        assert_eq!(all(&t), model, "round {round} after reopen");
        workload(&t, &mut model, round);
        assert_eq!(all(&t), model);
    }
    let t = builder(dir.path(), d).open().unwrap();
    assert_eq!(all(&t), model);
}

/// Writes, checkpoint, more writes, reopen, with a small buffer pool.
/// Fails if a checkpoint wrote stale frame images or a manifest whose cut
/// skips WAL records, or if replay over checkpointed frames were not
/// idempotent.
fn reopen_with_checkpoints_and_sync_commit(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    for round in 0..3 {
        let t = builder(dir.path(), d)
            .wal_sync_on_commit(round % 2 == 1)
            .buffer_pool_size(4)
            .open()
            .unwrap();
        assert_eq!(all(&t), model, "round {round} after reopen");
        workload(&t, &mut model, round);
        t.checkpoint().unwrap();
        assert_eq!(t.stats().unwrap().bm_dirty_count, 0);
        workload(&t, &mut model, round + 100);
        assert_eq!(all(&t), model);
    }
    let t = builder(dir.path(), d).open().unwrap();
    assert_eq!(all(&t), model);
    let st = t.stats().unwrap();
    assert!(st.blob_count >= 1);
    // Recovery of a recovery: open again without writing.
    drop(t);
    let t = builder(dir.path(), d).open().unwrap();
    assert_eq!(all(&t), model);
}

/// A second open of a live directory is `Locked`; after the first handle
/// drops it succeeds. Fails if the directory lock were missing or never
/// released.
fn second_open_is_refused_while_the_first_lives(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let t = builder(dir.path(), d).open().unwrap();
    t.put(b"k", b"v").unwrap();
    match builder(dir.path(), d).open() {
        Err(Error::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(t);
    let t = builder(dir.path(), d).open().unwrap();
    assert_eq!(t.get(b"k").unwrap(), Some(b"v".to_vec()));
}

/// Background rounds run and clean the dirty map; writes after the last
/// round survive the drop. Fails if drop skipped the final round and the
/// WAL sync, or a background round lost dirty frames.
fn background_checkpointer_flushes_and_drop_loses_nothing(d: Driver) {
    use holt::CheckpointConfig;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let cfg = CheckpointConfig {
        idle_interval: Duration::from_millis(20),
        ..CheckpointConfig::enabled()
    };
    let mut model = BTreeMap::new();
    {
        let t = builder(dir.path(), d)
            .checkpoint(cfg.clone())
            .open()
            .unwrap();
        workload(&t, &mut model, 7);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let st = t.stats().unwrap();
            let ck = st.checkpointer.expect("checkpointer running");
            if ck.rounds_succeeded >= 2 && st.bm_dirty_count == 0 {
                assert!(ck.blobs_flushed >= 1);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no background round: {ck:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Written after the last background round: only the final round
        // and the WAL sync at drop protect these.
        workload(&t, &mut model, 8);
    }
    let t = builder(dir.path(), d).open().unwrap();
    assert!(t.stats().unwrap().checkpointer.is_none());
    assert_eq!(all(&t), model);
}

/// A torn last WAL record is cut and later writes survive; damage in the
/// middle is `ReplaySanityFailed` and leaves the file untouched. Fails if
/// a torn tail failed open, or mid-file damage were silently truncated.
fn torn_wal_tail_is_cut_and_mid_file_damage_refused(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    {
        let t = builder(dir.path(), d).open().unwrap();
        for i in 0..100u32 {
            t.put(format!("k{i:03}").as_bytes(), &[7u8; 40]).unwrap();
        }
    }
    let wal = dir.path().join("journal.wal");
    let len = std::fs::metadata(&wal).unwrap().len();
    // A torn tail: the last record loses its end.
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    {
        let t = builder(dir.path(), d).open().unwrap();
        assert_eq!(t.get(b"k098").unwrap(), Some(vec![7u8; 40]));
        assert_eq!(t.get(b"k099").unwrap(), None, "torn record dropped");
        t.put(b"after", b"cut").unwrap();
    }
    let t = builder(dir.path(), d).open().unwrap();
    assert_eq!(t.get(b"after").unwrap(), Some(b"cut".to_vec()));
    drop(t);
    // Damage in the middle, valid records after it: refused, file untouched.
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&wal, &bytes).unwrap();
    match builder(dir.path(), d).open() {
        Err(Error::ReplaySanityFailed { .. }) => {}
        other => panic!("expected ReplaySanityFailed, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&wal).unwrap(),
        bytes,
        "refused open changed the WAL"
    );
}

/// A directory written through driver `d` (and checkpointed) reads back
/// identically through the other driver and through the default choice.
/// Fails if the drivers disagreed on file layout, lengths or alignment
/// (e.g. one of them wrote short frames).
fn a_tree_written_by_one_driver_opens_with_the_other(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    {
        let t = builder(dir.path(), d).open().unwrap();
        assert_eq!(t.io_stats().unwrap().driver, d.stats_name());
        workload(&t, &mut model, 1);
        t.checkpoint().unwrap();
        workload(&t, &mut model, 2);
    }
    let other = d.other();
    {
        let t = builder(dir.path(), other).open().unwrap();
        assert_eq!(t.io_stats().unwrap().driver, other.stats_name());
        assert_eq!(all(&t), model);
        workload(&t, &mut model, 3);
        t.checkpoint().unwrap();
        workload(&t, &mut model, 4);
    }
    // Default driver: io_uring where the kernel allows.
    let t = TreeBuilder::new(dir.path()).open().unwrap();
    let io = t.io_stats().expect("persistent tree");
    assert!(
        io.driver == "io_uring" || io.fallback_reason.is_some(),
        "{io:?}"
    );
    assert_eq!(all(&t), model);
    assert!(Tree::open(TreeConfig::memory())
        .unwrap()
        .io_stats()
        .is_none());
}

per_driver!(
    reopen_without_checkpoint_replays_the_wal,
    reopen_with_checkpoints_and_sync_commit,
    second_open_is_refused_while_the_first_lives,
    background_checkpointer_flushes_and_drop_loses_nothing,
    torn_wal_tail_is_cut_and_mid_file_damage_refused,
    a_tree_written_by_one_driver_opens_with_the_other,
);
