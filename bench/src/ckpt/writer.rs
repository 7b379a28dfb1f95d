//! Put latency on a second thread during a checkpoint round, against an
//! idle period of the same length right before it.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::fill::{dirty_all, overwrite};
use super::{herr, Config, Lat, WriterLat};
use crate::error::{BenchError, Result};
use crate::ops::new_hist;
use crate::persist::wal_bytes;
use crate::shapes::{Rng, ValuePool};

const IDLE: u8 = 0;
const ROUND: u8 = 1;
const STOP: u8 = 2;

/// Dirties every frame again, then a second thread puts continuously
/// through `idle` and through one round on this thread. A put counts as
/// idle if the phase was idle when it started and when it ended.
pub(super) fn writer_latency(
    tree: &holt::Tree,
    cfg: &Config<'_>,
    vals: &ValuePool,
    keys: usize,
    target: usize,
    idle: Duration,
    dir: &Path,
) -> Result<WriterLat> {
    let (_, st) = dirty_all(tree, cfg, vals, keys, target, 2)?;
    let phase = AtomicU8::new(IDLE);
    let barrier = Barrier::new(2);
    let hists = (new_hist()?, new_hist()?);
    let (writer, round) = std::thread::scope(|sc| {
        let h = sc.spawn(|| writer(tree, cfg, vals, keys, &phase, &barrier, hists));
        barrier.wait();
        let t = Instant::now();
        std::thread::sleep(idle);
        let idle_secs = t.elapsed().as_secs_f64();
        let wal = wal_bytes(dir);
        phase.store(ROUND, Ordering::SeqCst);
        let t = Instant::now();
        let res = tree.checkpoint();
        let round_secs = t.elapsed().as_secs_f64();
        phase.store(STOP, Ordering::SeqCst);
        let w = h.join().unwrap_or_else(|_| {
            Err(BenchError::Engine {
                engine: "holt",
                what: "checkpoint writer".into(),
                err: "writer thread panicked".into(),
            })
        });
        (w, res.map(|()| (idle_secs, round_secs, wal)))
    });
    let (idle_h, round_h) = writer?;
    let (idle_secs, round_secs, wal) = round.map_err(herr("checkpoint with a writer"))?;
    Ok(WriterLat {
        frames: st.bm_dirty_count,
        idle_secs,
        round_secs,
        wal_bytes: wal,
        idle: Lat::of(&idle_h),
        round: Lat::of(&round_h),
    })
}

/// The writer thread: overwrites random keys until the phase is `STOP`,
/// timing every put.
fn writer(
    tree: &holt::Tree,
    cfg: &Config<'_>,
    vals: &ValuePool,
    keys: usize,
    phase: &AtomicU8,
    barrier: &Barrier,
    (mut idle, mut round): (Histogram<u64>, Histogram<u64>),
) -> Result<(Histogram<u64>, Histogram<u64>)> {
    barrier.wait();
    let mut rng = Rng::for_label(cfg.seed, "checkpoint/writer");
    let mut key = Vec::new();
    let mut value = Vec::new();
    for j in 0u64.. {
        let i = rng.below(keys);
        key.clear();
        cfg.shape.write_key(cfg.seed, i as u64, &mut key);
        // Bit 7 set: never the loaded value, nor the dirtying passes'.
        overwrite(vals, i, 0x80 | (j & 0x7F) as u8, &mut value);
        let before = phase.load(Ordering::SeqCst);
        if before == STOP {
            break;
        }
        let t = Instant::now();
        let old = tree
            .put(&key, &value)
            .map_err(herr(format!("put({})", String::from_utf8_lossy(&key))))?;
        let ns = (t.elapsed().as_nanos() as u64)
            .saturating_sub(cfg.timer_overhead)
            .max(1);
        let after = phase.load(Ordering::SeqCst);
        if old.is_none() {
            return Err(BenchError::Engine {
                engine: "holt",
                what: format!("put({})", String::from_utf8_lossy(&key)),
                err: "an existing key was absent".into(),
            });
        }
        if before == IDLE && after == IDLE {
            idle.saturating_record(ns);
        } else {
            round.saturating_record(ns);
        }
    }
    Ok((idle, round))
}
