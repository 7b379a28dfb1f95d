//! Put latency on a second thread during a checkpoint round, against an
//! idle period of the same length right before it.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::fill::overwrite;
use super::{herr, put_err, Config, Lat, WriterLat};
use crate::error::{BenchError, Result};
use crate::ops::new_hist;
use crate::persist::wal_bytes;
use crate::shapes::{Rng, ValuePool};

const IDLE: u8 = 0;
const ROUND: u8 = 1;
const STOP: u8 = 2;
/// Most round-phase put latencies kept for the coordinated-omission
/// correction (a round is seconds; a put is microseconds).
const MAX_SAMPLES: usize = 1 << 24;

/// What the writer thread measured.
struct Measured {
    idle: Histogram<u64>,
    round: Histogram<u64>,
    /// Every round-phase latency, ns (up to `MAX_SAMPLES`).
    samples: Vec<u64>,
    /// Start and length (ns) of the longest put of the round phase.
    longest: Option<(Instant, u64)>,
}

/// Round-phase samples kept without growing the vector (a few seconds of
/// puts): growing it in the writer would copy megabytes mid-round.
const RESERVED_SAMPLES: usize = 1 << 21;

/// An empty sample vector with room for [`RESERVED_SAMPLES`], its memory
/// already faulted in, so recording a sample during the round costs a
/// store.
fn touched_samples() -> Vec<u64> {
    let mut v = vec![1u64; RESERVED_SAMPLES];
    v.clear();
    v
}

/// With `frames` dirty frames, a second thread puts continuously through
/// `idle` and through one round on this thread. A put counts as
/// idle if the phase was idle when it started and when it ended.
///
/// The writer is a closed loop: while a put is stalled it issues no
/// others, so the plain round histogram holds one sample per stall. The
/// corrected p99 adds the puts an open-loop writer at the idle rate would
/// have issued meanwhile (`Histogram::record_correct` with the idle
/// period's interval between puts).
pub(super) fn writer_latency(
    tree: &holt::Tree,
    cfg: &Config<'_>,
    vals: &ValuePool,
    keys: usize,
    frames: usize,
    idle: Duration,
    dir: &Path,
) -> Result<WriterLat> {
    let phase = AtomicU8::new(IDLE);
    let barrier = Barrier::new(2);
    let m = Measured {
        idle: new_hist()?,
        round: new_hist()?,
        samples: touched_samples(),
        longest: None,
    };
    let (writer, round) = std::thread::scope(|sc| {
        let h = sc.spawn(|| writer(tree, cfg, vals, keys, &phase, &barrier, m));
        barrier.wait();
        let t = Instant::now();
        std::thread::sleep(idle);
        let idle_secs = t.elapsed().as_secs_f64();
        let wal = wal_bytes(dir);
        phase.store(ROUND, Ordering::SeqCst);
        let start = Instant::now();
        let res = tree.checkpoint();
        let round_secs = start.elapsed().as_secs_f64();
        phase.store(STOP, Ordering::SeqCst);
        let w = h.join().unwrap_or_else(|_| {
            Err(BenchError::Engine {
                engine: "holt",
                what: "checkpoint writer".into(),
                err: "writer thread panicked".into(),
            })
        });
        (w, res.map(|()| (idle_secs, start, round_secs, wal)))
    });
    let m = writer?;
    let (idle_secs, start, round_secs, wal) = round.map_err(herr("checkpoint with a writer"))?;
    let idle_lat = Lat::of(&m.idle);
    let interval = if idle_lat.puts > 0 {
        ((idle_secs * 1e9) / idle_lat.puts as f64) as u64
    } else {
        0
    };
    let mut co = new_hist()?;
    for &v in &m.samples {
        co.record_correct(v, interval.max(1))
            .map_err(|e| BenchError::Engine {
                engine: "harness",
                what: "histogram".into(),
                err: e.to_string(),
            })?;
    }
    let (longest_ms, longest_at_ms) = m.longest.map_or((0.0, 0.0), |(at, ns)| {
        let at_ms = if at >= start {
            at.duration_since(start).as_secs_f64() * 1e3
        } else {
            -(start.duration_since(at).as_secs_f64() * 1e3)
        };
        (ns as f64 / 1e6, at_ms)
    });
    Ok(WriterLat {
        frames,
        idle_secs,
        round_secs,
        wal_bytes: wal,
        idle: idle_lat,
        round: Lat::of(&m.round),
        interval_ns: interval,
        round_co: Lat::of(&co),
        longest_ms,
        longest_at_ms,
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
    mut m: Measured,
) -> Result<Measured> {
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
        let old = tree.put(&key, &value).map_err(|e| put_err(&key, e))?;
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
            m.idle.saturating_record(ns);
        } else {
            m.round.saturating_record(ns);
            if m.samples.len() < MAX_SAMPLES {
                m.samples.push(ns);
            }
            if m.longest.is_none_or(|(_, l)| ns > l) {
                m.longest = Some((t, ns));
            }
        }
    }
    Ok(m)
}
