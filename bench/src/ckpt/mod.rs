//! The `checkpoint` scenario (BENCH.md "Ops"): how fast one checkpoint
//! round writes N dirty frames with each I/O driver, against the raw
//! sequential `O_DIRECT` write bandwidth of the same disk measured in the
//! same run, and what a round does to a concurrent writer's latency.
//!
//! For each dirty-frame count N (`--ckpt-frames`):
//!
//! 1. raw: N x 512 KiB written with `pwrite` (`O_DIRECT`, 4096-aligned
//!    buffers) sequentially into a fresh file in the run's directory, then
//!    `fdatasync`; and the same N writes as one io_uring
//!    [`IoFile::write_batch`](holt::io::IoFile::write_batch) + `sync_data`
//!    (what a round submits); each also into a file `fallocate`d first;
//! 2. per driver (`--ckpt-drivers`): a fresh tree in a fresh subdirectory
//!    with that driver and a buffer pool of `2N + 128` frames (nothing is
//!    evicted; the pool is a cap, not an allocation), loaded in chunks
//!    until it has at least N frames, checkpointed (untimed), every frame
//!    dirtied by overwriting keys in random order with values of the same
//!    length until `bm_dirty_count` reaches the frame count, then exactly
//!    one `checkpoint()` timed; `--ckpt-reps` times over (dirty all, time
//!    one round). Frames written = `bm_dirty_count` before the round;
//!    MiB = frames x 0.5. The first timed round writes into newly
//!    allocated slots (the data file grows), later ones into the slots
//!    released by the round before last;
//! 3. writer latency: every frame dirtied again, then a second thread puts
//!    (overwrites of random keys, every put timed) through an idle period
//!    as long as the timed round, then through one more round run on the
//!    main thread; p99 during the round against p99 while idle;
//! 4. the raw `pwrite` measurement again, so disk drift shows.
//!
//! Each tree's subdirectory is deleted after its run.

mod fill;
mod raw;
mod table;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use holt::io::{AlignedBuf, IoDriver};
use holt_backend_uring::UringDriver;

use crate::args::DriverKind;
use crate::error::{BenchError, Result};
use crate::report::{self, JsonOut, Obj};
use crate::shapes::{Shape, ValuePool};
use fill::{dirty_all, load_to, stats};
use raw::RawKind;
use writer::writer_latency;

pub use table::{bandwidth_table, latency_table, setup_table};

/// Bytes of one frame (and of one raw write).
pub const FRAME: usize = holt::Tree::page_size() as usize;
const MIB: f64 = 1024.0 * 1024.0;

/// What the scenario runs.
pub struct Config<'a> {
    /// Directory the trees and raw files go in (the run's directory).
    pub root: &'a Path,
    pub shape: Shape,
    pub seed: u64,
    pub frames: &'a [usize],
    pub drivers: &'a [DriverKind],
    /// Timed rounds per tree (each after dirtying every frame again).
    pub reps: usize,
    pub timer_overhead: u64,
}

/// One raw write measurement.
#[derive(Clone, Debug)]
pub struct Raw {
    pub target: usize,
    /// `pwrite` or `io_uring batch`.
    pub method: &'static str,
    /// `before` / `after` the trees of this N.
    pub when: &'static str,
    pub frames: usize,
    pub secs: f64,
    /// Whether the file really was `O_DIRECT`.
    pub direct: bool,
    /// Growth of this process's `write_bytes` (`/proc/self/io`) over it.
    pub io_bytes: Option<u64>,
}

impl Raw {
    #[must_use]
    pub fn mib(&self) -> f64 {
        self.frames as f64 * FRAME as f64 / MIB
    }

    #[must_use]
    pub fn mib_s(&self) -> f64 {
        self.mib() / self.secs.max(1e-12)
    }
}

/// Put latency summary of one phase, in ns.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lat {
    pub puts: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Lat {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            puts: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The writer-latency part of one tree's run.
#[derive(Clone, Debug, Default)]
pub struct WriterLat {
    /// `bm_dirty_count` before the round.
    pub frames: usize,
    pub idle_secs: f64,
    pub round_secs: f64,
    /// Bytes of WAL the round's cut had to sync (journal files just
    /// before the round).
    pub wal_bytes: u64,
    pub idle: Lat,
    pub round: Lat,
    /// Mean interval between the idle period's puts, ns: the rate the
    /// coordinated-omission correction assumes.
    pub interval_ns: u64,
    /// `round` corrected for coordinated omission.
    pub round_co: Lat,
    /// The longest put of the round phase, and when it started relative
    /// to the start of the round (negative: before), in ms.
    pub longest_ms: f64,
    pub longest_at_ms: f64,
}

/// One timed round.
#[derive(Clone, Debug, Default)]
pub struct Rep {
    /// Overwrites it took to dirty every frame.
    pub dirty_puts: usize,
    /// `bm_dirty_count` before the round (= frames written).
    pub frames: usize,
    pub secs: f64,
    /// `bm_dirty_count` after it (0: nothing else is writing).
    pub dirty_after: usize,
    /// Page-cache `Dirty` + `Writeback` just before the round, KiB.
    pub page_cache_dirty_kib: Option<u64>,
    /// Bytes of the files in the tree's directory after the round.
    pub dir_bytes: u64,
    /// Growth of this process's `write_bytes` (`/proc/self/io`) over the
    /// round: what it sent towards the disk.
    pub io_bytes: Option<u64>,
    /// CPU time the process spent over the round (user + system, all
    /// threads, `getrusage`), seconds.
    pub cpu_secs: Option<f64>,
}

impl Rep {
    #[must_use]
    pub fn mib(&self) -> f64 {
        self.frames as f64 * FRAME as f64 / MIB
    }

    #[must_use]
    pub fn mib_s(&self) -> f64 {
        self.mib() / self.secs.max(1e-12)
    }
}

/// One tree's run: setup, the timed round, the writer latency.
#[derive(Clone, Debug, Default)]
pub struct Round {
    pub target: usize,
    /// The driver asked for, and what `Tree::io_stats` reports.
    pub driver: &'static str,
    pub reported: String,
    pub direct_io: bool,
    pub pool: usize,
    pub keys: usize,
    pub blob_count: usize,
    pub load_secs: f64,
    /// Time spent in `Tree::stats` while loading (frame counting).
    pub load_stats_secs: f64,
    pub first_ckpt_secs: f64,
    /// Bytes of the files in the tree's directory after the first round.
    pub first_dir_bytes: u64,
    /// The timed rounds; the first writes into newly allocated slots (the
    /// data file grows), later ones into the slots the round before last
    /// released.
    pub reps: Vec<Rep>,
    pub cache_misses: u64,
    pub lat: WriterLat,
    pub peak_rss: Option<u64>,
    pub wall_secs: f64,
}

/// Everything the scenario measured.
#[derive(Debug, Default)]
pub struct Outcome {
    pub raws: Vec<Raw>,
    pub rounds: Vec<Round>,
    /// Wall time of each N (raw writes and every driver's tree).
    pub walls: Vec<(usize, f64)>,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

fn herr(what: impl Into<String>) -> impl FnOnce(holt::Error) -> BenchError {
    let what = what.into();
    move |e| BenchError::Engine {
        engine: "holt",
        what,
        err: e.to_string(),
    }
}

/// A failed put of `key`. The message is built only on failure: the
/// put loops must not allocate per op (the writer-latency phase measures
/// puts, and an allocation per put once made it wait on malloc's lock
/// while the round thread allocated).
fn put_err(key: &[u8], e: holt::Error) -> BenchError {
    herr(format!("put({})", String::from_utf8_lossy(key)))(e)
}

/// `write_bytes` of `/proc/self/io`: bytes this process (all its threads,
/// io_uring workers included) caused to be sent to the block layer.
fn proc_write_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/io")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

fn io_delta(before: Option<u64>) -> Option<u64> {
    Some(proc_write_bytes()?.saturating_sub(before?))
}

/// `Dirty` + `Writeback` of `/proc/meminfo`, in KiB.
fn page_cache_dirty_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(field("Dirty:")? + field("Writeback:")?)
}

/// Runs the scenario; JSON lines go to `json` as results arrive. Engine
/// and I/O failures of one tree or raw write are collected in
/// `Outcome::errors` and the scenario goes on.
///
/// # Errors
/// Only a failure to write the JSON lines or to create `cfg.root`.
pub fn run(cfg: &Config<'_>, json: &mut JsonOut) -> Result<Outcome> {
    let mut out = Outcome::default();
    std::fs::create_dir_all(cfg.root)
        .map_err(|e| BenchError::io(format!("create {}", cfg.root.display()), e))?;
    let vals = ValuePool::generate(cfg.shape, cfg.seed);
    let uring = match UringDriver::probe() {
        Ok(d) => Some(d),
        Err(reason) => {
            out.notes.push(format!(
                "checkpoint: io_uring unavailable ({reason}): io_uring rows skipped"
            ));
            None
        }
    };
    let bufs = match raw::raw_buffers(cfg.seed) {
        Ok(b) => b,
        Err(e) => {
            out.errors.push(format!("raw buffers: {e}"));
            return Ok(out);
        }
    };
    for &n in cfg.frames {
        let t = Instant::now();
        let mut kinds = vec![RawKind::Pwrite, RawKind::PwriteFallocated];
        if let Some(d) = uring {
            kinds.extend([RawKind::Uring(d), RawKind::UringFallocated(d)]);
        }
        for kind in kinds {
            raw_step(cfg, n, "before", kind, &bufs, &mut out, json)?;
        }
        for &kind in cfg.drivers {
            let driver: Arc<dyn IoDriver> = match (kind, uring) {
                (DriverKind::Sync, _) => Arc::new(holt::io::SyncDriver::new()),
                (DriverKind::Uring, Some(d)) => Arc::new(d),
                (DriverKind::Uring, None) => continue,
            };
            let dir = cfg
                .root
                .join(format!("ckpt-{}-{n}-{}", cfg.shape, kind.name()));
            eprintln!(
                "checkpoint: N = {n}, driver {}: loading a fresh tree in {}",
                kind.name(),
                dir.display()
            );
            let res = if dir.exists() {
                Err(BenchError::Usage(format!(
                    "{} exists; remove it or pass another --dir",
                    dir.display()
                )))
            } else {
                let r = tree_run(cfg, &vals, n, kind, driver, &dir);
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    out.errors.push(format!("remove {}: {e}", dir.display()));
                }
                r
            };
            match res {
                Ok(r) => {
                    let reps: Vec<String> = r
                        .reps
                        .iter()
                        .map(|p| {
                            format!(
                                "{} frames in {:.3} s = {:.0} MiB/s, cpu {:.1} ms",
                                p.frames,
                                p.secs,
                                p.mib_s(),
                                p.cpu_secs.unwrap_or(f64::NAN) * 1e3
                            )
                        })
                        .collect();
                    eprintln!(
                        "checkpoint: N = {n}, driver {}: {}; writer p99 {} µs idle, {} µs during \
                         a round (corrected {} µs), longest put {:.1} ms; tree wall {:.1} s",
                        r.reported,
                        reps.join("; "),
                        report::us(r.lat.idle.p99),
                        report::us(r.lat.round.p99),
                        report::us(r.lat.round_co.p99),
                        r.lat.longest_ms,
                        r.wall_secs
                    );
                    json.line(round_json(&r))?;
                    out.rounds.push(r);
                }
                Err(e) => {
                    eprintln!("checkpoint: N = {n}, driver {}: ERROR {e}", kind.name());
                    json.line(
                        Obj::default()
                            .str("type", "error")
                            .str("engine", "holt")
                            .str("op", "checkpoint")
                            .int("ckpt_frames", n as u64)
                            .str("driver", kind.name())
                            .str("error", &e.to_string()),
                    )?;
                    out.errors
                        .push(format!("N = {n}, driver {}: {e}", kind.name()));
                }
            }
        }
        raw_step(cfg, n, "after", RawKind::Pwrite, &bufs, &mut out, json)?;
        let wall = t.elapsed().as_secs_f64();
        eprintln!("checkpoint: N = {n} done in {wall:.1} s");
        out.walls.push((n, wall));
    }
    Ok(out)
}

fn raw_step(
    cfg: &Config<'_>,
    n: usize,
    when: &'static str,
    kind: RawKind,
    bufs: &[AlignedBuf],
    out: &mut Outcome,
    json: &mut JsonOut,
) -> Result<()> {
    let method = kind.method();
    let path = cfg.root.join("holt-bench-raw.tmp");
    let dirty = page_cache_dirty_kib();
    let io0 = proc_write_bytes();
    let res = kind.measure(&path, n, bufs);
    let io_bytes = io_delta(io0);
    let rm = std::fs::remove_file(&path);
    match res.and_then(|r| {
        rm.map_err(|e| BenchError::io(format!("remove {}", path.display()), e))?;
        Ok(r)
    }) {
        Ok((secs, direct)) => {
            let r = Raw {
                target: n,
                method,
                when,
                frames: n,
                secs,
                direct,
                io_bytes,
            };
            json.line(
                Obj::default()
                    .str("type", "ckpt_raw")
                    .int("ckpt_frames", n as u64)
                    .str("method", method)
                    .str("when", when)
                    .int("bytes", (n * FRAME) as u64)
                    .num("secs", secs)
                    .num("mib_per_sec", r.mib_s())
                    .bool("direct", direct)
                    .opt_int("io_write_bytes", io_bytes)
                    .opt_int("page_cache_dirty_kib", dirty),
            )?;
            out.raws.push(r);
        }
        Err(e) => out
            .errors
            .push(format!("raw {method} of {n} x 512 KiB: {e}")),
    }
    Ok(())
}

/// One fresh tree: load, first checkpoint, dirty, timed round, writer
/// latency.
fn tree_run(
    cfg: &Config<'_>,
    vals: &ValuePool,
    target: usize,
    kind: DriverKind,
    driver: Arc<dyn IoDriver>,
    dir: &Path,
) -> Result<Round> {
    let wall = Instant::now();
    report::reset_peak_rss();
    let pool = 2 * target + 128;
    let tree = holt::TreeBuilder::new(dir.to_path_buf())
        .buffer_pool_size(pool)
        .io_driver(driver)
        .open()
        .map_err(herr(format!("open {}", dir.display())))?;
    let io = tree.io_stats();
    let mut r = Round {
        target,
        driver: kind.name(),
        reported: io
            .as_ref()
            .map_or_else(|| "?".into(), |s| s.driver.to_string()),
        direct_io: io.as_ref().is_some_and(|s| s.direct_io),
        pool,
        ..Round::default()
    };

    let t = Instant::now();
    let (keys, st, stats_secs) = load_to(&tree, cfg, vals, target)?;
    r.load_secs = t.elapsed().as_secs_f64();
    r.load_stats_secs = stats_secs;
    r.keys = keys;
    r.blob_count = st.blob_count as usize;
    if r.blob_count > pool {
        return Err(BenchError::Engine {
            engine: "holt",
            what: "load".into(),
            err: format!("{} frames exceed the pool of {pool}", r.blob_count),
        });
    }
    let t = Instant::now();
    tree.checkpoint().map_err(herr("first checkpoint"))?;
    r.first_ckpt_secs = t.elapsed().as_secs_f64();
    r.first_dir_bytes = report::dir_bytes(dir);

    let mut pass = 1u8;
    for rep in 0..cfg.reps.max(1) {
        let (dirty_puts, st) = dirty_all(&tree, cfg, vals, keys, target, pass)?;
        pass = pass.wrapping_add(1);
        r.blob_count = st.blob_count as usize;
        let page_cache_dirty_kib = page_cache_dirty_kib();
        let io0 = proc_write_bytes();
        let cpu0 = report::process_cpu_secs();
        let t = Instant::now();
        tree.checkpoint()
            .map_err(herr(format!("timed checkpoint #{}", rep + 1)))?;
        let secs = t.elapsed().as_secs_f64();
        let cpu_secs = cpu0
            .zip(report::process_cpu_secs())
            .map(|(a, b)| (b - a).max(0.0));
        let io_bytes = io_delta(io0);
        r.reps.push(Rep {
            dirty_puts,
            frames: st.bm_dirty_count,
            secs,
            dirty_after: stats(&tree)?.bm_dirty_count,
            page_cache_dirty_kib,
            dir_bytes: report::dir_bytes(dir),
            io_bytes,
            cpu_secs,
        });
    }

    let secs = r.reps.first().map_or(0.0, |p| p.secs);
    let idle = Duration::from_secs_f64(secs.clamp(0.25, 60.0));
    let (_, st) = dirty_all(&tree, cfg, vals, keys, target, pass)?;
    r.lat = writer_latency(&tree, cfg, vals, keys, st.bm_dirty_count, idle, dir)?;
    r.cache_misses = stats(&tree)?.bm_cache_misses;
    drop(tree);
    r.peak_rss = report::rss().1;
    r.wall_secs = wall.elapsed().as_secs_f64();
    Ok(r)
}

fn round_json(r: &Round) -> Obj {
    let mut o = Obj::default()
        .str("type", "ckpt_round")
        .int("ckpt_frames", r.target as u64)
        .str("driver", r.driver)
        .str("driver_reported", &r.reported)
        .bool("direct_io", r.direct_io)
        .int("pool_frames", r.pool as u64)
        .int("keys", r.keys as u64)
        .int("blob_count", r.blob_count as u64)
        .num("load_secs", r.load_secs)
        .num("load_stats_secs", r.load_stats_secs)
        .num("first_ckpt_secs", r.first_ckpt_secs)
        .int("first_dir_bytes", r.first_dir_bytes);
    for (k, p) in r.reps.iter().enumerate() {
        o = o
            .int(&format!("rep{}_dirty_puts", k + 1), p.dirty_puts as u64)
            .int(&format!("rep{}_frames_written", k + 1), p.frames as u64)
            .num(&format!("rep{}_mib_written", k + 1), p.mib())
            .num(&format!("rep{}_secs", k + 1), p.secs)
            .num(&format!("rep{}_mib_per_sec", k + 1), p.mib_s())
            .int(&format!("rep{}_dirty_after", k + 1), p.dirty_after as u64)
            .opt_int(
                &format!("rep{}_page_cache_dirty_kib", k + 1),
                p.page_cache_dirty_kib,
            )
            .int(&format!("rep{}_dir_bytes", k + 1), p.dir_bytes)
            .opt_int(&format!("rep{}_io_write_bytes", k + 1), p.io_bytes)
            .opt_num(&format!("rep{}_cpu_secs", k + 1), p.cpu_secs);
    }
    let l = &r.lat;
    o.int("cache_misses", r.cache_misses)
        .int("lat_frames", l.frames as u64)
        .num("lat_idle_secs", l.idle_secs)
        .num("lat_round_secs", l.round_secs)
        .int("lat_wal_bytes", l.wal_bytes)
        .int("idle_puts", l.idle.puts)
        .int("idle_p50_ns", l.idle.p50)
        .int("idle_p99_ns", l.idle.p99)
        .int("idle_p999_ns", l.idle.p999)
        .int("idle_max_ns", l.idle.max)
        .int("round_puts", l.round.puts)
        .int("round_p50_ns", l.round.p50)
        .int("round_p99_ns", l.round.p99)
        .int("round_p999_ns", l.round.p999)
        .int("round_max_ns", l.round.max)
        .int("co_interval_ns", l.interval_ns)
        .int("round_co_p99_ns", l.round_co.p99)
        .int("round_co_p999_ns", l.round_co.p999)
        .num("longest_put_ms", l.longest_ms)
        .num("longest_put_at_ms", l.longest_at_ms)
        .opt_int("peak_rss_bytes", r.peak_rss)
        .num("wall_secs", r.wall_secs)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_scenario_measures_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let json_path = tmp.path().join("out.jsonl");
        let mut json = JsonOut::create(&json_path).unwrap();
        let root = tmp.path().join("run");
        let cfg = Config {
            root: &root,
            shape: Shape::Objstore,
            seed: 3,
            frames: &[3],
            drivers: &[DriverKind::Sync, DriverKind::Uring],
            reps: 2,
            timer_overhead: 0,
        };
        let out = run(&cfg, &mut json).unwrap();
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let uring = UringDriver::probe().is_ok();
        assert_eq!(out.rounds.len(), if uring { 2 } else { 1 });
        assert_eq!(out.raws.len(), if uring { 5 } else { 3 });
        for r in &out.rounds {
            assert!(r.blob_count >= 3, "{r:?}");
            assert_eq!(r.reps.len(), 2);
            for p in &r.reps {
                assert_eq!(p.frames, r.blob_count, "every frame dirty: {r:?}");
                assert_eq!(p.dirty_after, 0);
                assert!(p.secs > 0.0);
                // At least the frames reached the block layer.
                if let Some(b) = p.io_bytes {
                    assert!(b >= (p.frames * FRAME) as u64, "{p:?}");
                }
            }
            // The data file grows in steps of several slots; a round never
            // shrinks it.
            assert!(r.reps[0].dir_bytes >= r.first_dir_bytes, "{r:?}");
            assert_eq!(r.cache_misses, 0);
            assert_eq!(r.reported, r.driver);
            assert!(r.lat.idle.puts > 0 && r.lat.round.puts > 0);
            assert!(r.lat.round_co.puts >= r.lat.round.puts);
        }
        // Only the JSON file is left: trees and raw files are removed.
        let left: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
        let text = std::fs::read_to_string(&json_path).unwrap();
        assert_eq!(text.matches("\"ckpt_round\"").count(), out.rounds.len());
        for t in [
            bandwidth_table(&out),
            latency_table(&out),
            setup_table(&out),
        ] {
            assert!(t.lines().count() >= 2 + out.rounds.len(), "{t}");
        }
    }
}
