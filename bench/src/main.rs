//! holt-bench: throughput and latency of holt on path-shaped keys, beside
//! a `HashMap` + `BTreeMap` reference that shows the harness cost.
//!
//! See `--help` and the design note BENCH.md. Layout:
//! - `args`: flag parsing;
//! - `shapes`: deterministic key / value generators;
//! - `engines`: the `Engine` trait with `holt` and `reference`;
//! - `ops`: the timed op groups;
//! - `persist`: the groups that need a persistent engine (reopen, WAL
//!   replay, sync per commit, the `fdatasync` baseline);
//! - `ckpt`: the `checkpoint` scenario (round bandwidth per I/O driver
//!   against the raw disk, writer latency during a round), on trees of its
//!   own;
//! - `report`: tables, JSON lines, RSS;
//! - `peers`: RocksDB, SQLite, LMDB, redb and fjall behind cargo features
//!   (see its module doc for how each is configured);
//! - `child`: one process per engine when several are compared (the parent
//!   re-executes this binary with `--child ENGINE` and reads its JSON
//!   lines back through `jsonl`);
//! - `compare`: the cross-engine table and the digest cross-check;
//! - `svg`: the latency percentile plots.

mod args;
mod child;
mod ckpt;
mod compare;
mod engines;
mod error;
mod jsonl;
mod ops;
mod peers;
mod persist;
mod report;
mod shapes;
mod svg;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use args::{Args, EngineKind, Mode};
use compare::DigestEntry;
use engines::{Engine, HoltEngine, HoltOptions, ReferenceEngine};
use error::{BenchError, Result};
use ops::{Ctx, Limits, OpKind};
use report::{JsonOut, Latency, Obj, Recovery, Row, Summary};
use shapes::{KeySet, Shape, ValuePool};

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("holt-bench: {e}\n(see --help)");
            return ExitCode::from(2);
        }
    };
    if args.help {
        print!("{}", args::HELP);
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("holt-bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// Everything the run produces.
struct Collector {
    json: JsonOut,
    rows: Vec<Row>,
    summaries: Vec<Summary>,
    /// Digests of the single-threaded groups and of the read-only threaded
    /// ones, whose digests are deterministic too.
    digests: Vec<DigestEntry>,
    errors: Vec<String>,
    /// Op groups skipped and why.
    notes: Vec<String>,
    recovery: Vec<Recovery>,
    ckpt: Option<ckpt::Outcome>,
}

impl Collector {
    fn error(&mut self, engine: &str, shape: Shape, op: &str, msg: String) -> Result<()> {
        eprintln!("holt-bench: ERROR {engine} {shape} {op}: {msg}");
        self.json.line(
            Obj::default()
                .str("type", "error")
                .str("engine", engine)
                .str("shape", shape.name())
                .str("op", op)
                .str("error", &msg),
        )?;
        self.errors
            .push(format!("{engine} / {shape} / {op}: {msg}"));
        Ok(())
    }
}

struct Plan<'a> {
    args: &'a Args,
    /// Root for persistent trees.
    root: Option<PathBuf>,
    timer_overhead: u64,
    progress: bool,
}

fn default_json_path() -> PathBuf {
    if Path::new("target").is_dir() {
        PathBuf::from("target/holt-bench.jsonl")
    } else {
        std::env::temp_dir().join("holt-bench.jsonl")
    }
}

/// Enough frames for the whole tree with headroom (the pool is a cap,
/// not an allocation, so headroom costs nothing).
fn default_pool(shape: Shape, n: usize) -> usize {
    let bytes = n.saturating_mul(shape.est_bytes_per_key());
    (bytes / (holt::Tree::page_size() as usize) + 1).max(64)
}

fn status(on: bool, msg: &str) {
    if on {
        eprint!("\r\x1b[K{msg}");
    }
}

fn run(args: &Args) -> Result<bool> {
    let wall = Instant::now();
    let json_path = args.json.clone().unwrap_or_else(default_json_path);
    let is_child = args.child.is_some();
    let json = if is_child {
        JsonOut::stdout()
    } else {
        JsonOut::create(&json_path)?
    };
    let progress = std::io::stderr().is_terminal();

    // Persistent trees (and the peers, which always keep files) live under
    // --dir or a fresh temporary directory.
    let needs_root = args.mode == Mode::Persistent || args.engines.iter().any(|e| e.is_peer());
    let mut _tmp = None;
    let root = match (needs_root, &args.dir) {
        (false, _) => None,
        (true, Some(d)) => Some(d.clone()),
        (true, None) => {
            let t = tempfile::Builder::new()
                .prefix("holt-bench-")
                .tempdir()
                .map_err(|e| BenchError::io("create temporary directory", e))?;
            let p = t.path().to_path_buf();
            _tmp = Some(t);
            Some(p)
        }
    };

    let timer_overhead = ops::timer_overhead_ns();
    let load_start = report::loadavg();
    let plan = Plan {
        args,
        root,
        timer_overhead,
        progress,
    };
    let mut col = Collector {
        json,
        rows: Vec::new(),
        summaries: Vec::new(),
        digests: Vec::new(),
        errors: Vec::new(),
        notes: Vec::new(),
        recovery: Vec::new(),
        ckpt: None,
    };
    let op_names: Vec<String> = args.ops.iter().map(|o| o.name()).collect();
    let shape_names: Vec<&str> = args.shapes.iter().map(|s| s.name()).collect();
    let engine_names: Vec<&str> = args.engines.iter().map(|e| e.name()).collect();
    if !is_child {
        run_line(&plan, &mut col.json, &load_start)?;
        eprintln!(
            "holt-bench: mode {}, n = {}, shapes {}, engines {}, ops {}; timer overhead {} ns; JSON -> {}",
            args.mode.name(),
            report::grouped(args.n as u64),
            shape_names.join(","),
            engine_names.join(","),
            op_names.join(","),
            timer_overhead,
            col.json.path()
        );
    }

    // Groups on the loaded engines (all but the self-contained ones): in
    // this process, or one child process per engine.
    let per_shape = args.ops.iter().any(|op| !op.self_contained());
    let fork = per_shape && !is_child && !args.in_process && args.engines.len() > 1;
    if fork {
        child::run_children(&plan, &mut col)?;
    }
    for &shape in args.shapes.iter().filter(|_| per_shape && !fork) {
        let t = Instant::now();
        status(progress, &format!("{shape}: generating keys"));
        let keys = KeySet::generate(
            shape,
            args.seed,
            args.n,
            ops::miss_count(args.n),
            ops::aux_count(args.n),
        );
        let vals = ValuePool::generate(shape, args.seed);
        status(progress, "");
        eprintln!(
            "{shape}: {} keys ({:.1} B mean) + {} misses + {} spare generated in {:.2} s; values {:.0} B mean",
            report::grouped(args.n as u64),
            (0..args.n).map(|i| keys.key(i).len()).sum::<usize>() as f64 / args.n as f64,
            report::grouped(keys.misses as u64),
            report::grouped(keys.aux as u64),
            t.elapsed().as_secs_f64(),
            vals.mean_len(),
        );
        for &kind in &args.engines {
            run_engine_kind(&plan, kind, shape, &keys, &vals, &mut col)?;
        }
    }
    if is_child {
        // The parent reads the lines and reports; errors were lines too.
        return Ok(col.errors.is_empty());
    }

    if args.ops.contains(&OpKind::Checkpoint) {
        run_checkpoint(&plan, &mut col)?;
    }

    // Digest cross-check: every engine must agree with holt (or, without
    // holt, with the first engine).
    let (compared, mismatches) = compare::cross_check(&col.digests);
    for m in &mismatches {
        eprintln!("holt-bench: DIGEST MISMATCH {m}");
        col.json.line(
            Obj::default()
                .str("type", "digest_mismatch")
                .str("detail", m),
        )?;
    }
    let total = wall.elapsed().as_secs_f64();
    col.json.line(
        Obj::default()
            .str("type", "done")
            .num("wall_secs", total)
            .int("digests_compared", compared as u64)
            .int("digest_mismatches", mismatches.len() as u64)
            .int("errors", col.errors.len() as u64)
            .str("loadavg", &report::loadavg()),
    )?;

    println!("## holt-bench: {} mode\n", args.mode.name());
    if !col.rows.is_empty() {
        print_main_tables(&col, timer_overhead);
    }
    if args.engines.len() > 1 && !col.rows.is_empty() {
        let names: Vec<String> = args.engines.iter().map(|e| e.name().to_string()).collect();
        println!("\n### Engines compared\n");
        print!(
            "{}",
            compare::comparison_tables(&col.rows, &col.summaries, &names)
        );
    }
    if !col.recovery.is_empty() {
        println!("\n### Recovery (persistent mode)\n");
        println!("{}", report::recovery_table(&col.recovery));
        println!(
            "reopen: clean close right after the load's checkpoint, the directory's files dropped from \
             the OS page cache (fdatasync + posix_fadvise DONTNEED), open, first get of a random key; \
             then the `get` op sequence on the cold cache (holt reads frames with O_DIRECT; the peers \
             read through the page cache or a memory map), whose digest is checked against `get`. \
             reopen_wal: n/10 fresh keys put with the default buffered WAL and no checkpoint (the \
             reopen_wal row in the ops table times these puts), close (drains and syncs the WAL), open \
             replaying the WAL tail, first get of the last key written; then, untimed, every key is \
             checked, deleted again and a checkpoint taken. WAL MiB: the write-ahead log files just \
             before the open (holt journal*.wal, RocksDB *.log, SQLite -wal, fjall journals; LMDB and \
             redb keep none); dir MiB: every file in the directory."
        );
    }
    if let Some(t) = report::sync_table(&col.rows) {
        println!("\n### Sync per commit (persistent mode)\n");
        println!("{t}");
        println!(
            "fdatasync: {} overwrites of 4 KiB in a scratch file in the data directory (its blocks \
             written and synced beforehand, so no sync changes metadata), each followed by fdatasync \
             (after one untimed): the disk's floor for one sync per commit. sync_commit_tN: \
             the engine reopened with an fsync per commit (holt: wal_sync_on_commit(true); peers: see \
             --help, PEERS) and its cache warmed by a full scan (untimed), then fresh-key puts on N \
             threads sharing the engine. x fdatasync rate = ops/s / \
             fdatasync ops/s: about 1.0 means one sync per commit; above 1 means group commit covers \
             several commits per sync; below 1 means a commit costs more than one bare sync.",
            persist::FSYNC_OPS
        );
    }
    if let Some(out) = &col.ckpt {
        print_checkpoint(out, args);
    }
    if !col.notes.is_empty() {
        println!("\nSkipped:");
        for note in &col.notes {
            println!("- {note}");
        }
    }
    if args.engines.len() > 1 && !col.rows.is_empty() {
        if compared == 0 {
            println!(
                "\nDigest check: nothing to compare (fewer than two engines produced results)."
            );
        } else if mismatches.is_empty() {
            println!("\nDigest check: OK ({compared} op groups compared, all engines agree).");
        } else {
            println!(
                "\nDigest check: {} MISMATCH(ES) — engine bug:",
                mismatches.len()
            );
            for m in &mismatches {
                println!("- {m}");
            }
        }
    }
    if !col.errors.is_empty() {
        println!("\nErrors:");
        for e in &col.errors {
            println!("- {e}");
        }
    }
    if !col.rows.is_empty() {
        let dir = args.plot_dir.clone().unwrap_or_else(|| {
            json_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("holt-bench-plots")
        });
        let names: Vec<&str> = args.engines.iter().map(|e| e.name()).collect();
        match svg::write_plots(&dir, args.mode.name(), &col.rows, &names) {
            Ok(files) if !files.is_empty() => {
                let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                println!("\nLatency plots (SVG): {}", files.join(", "));
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("holt-bench: ERROR plots: {e}");
                col.errors.push(format!("plots: {e}"));
            }
        }
    }
    println!(
        "\nWall time {total:.1} s; load average {load_start} at start, {} at end; JSON lines in {}",
        report::loadavg(),
        col.json.path()
    );
    Ok(mismatches.is_empty() && col.errors.is_empty())
}

/// The run's first JSON line: the configuration.
fn run_line(plan: &Plan<'_>, json: &mut JsonOut, load_start: &str) -> Result<()> {
    let args = plan.args;
    let join = |v: &[usize]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let names = |v: Vec<&str>| v.join(",");
    json.line(
        Obj::default()
            .str("type", "run")
            .str("version", env!("CARGO_PKG_VERSION"))
            .str("mode", args.mode.name())
            .int("n", args.n as u64)
            .str(
                "shapes",
                &names(args.shapes.iter().map(|s| s.name()).collect()),
            )
            .str(
                "engines",
                &names(args.engines.iter().map(|e| e.name()).collect()),
            )
            .str(
                "ops",
                &args
                    .ops
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .str("threads", &join(&args.threads))
            .str("sync_threads", &join(&args.sync_threads))
            .int("seed", args.seed)
            .str("ckpt_frames", &join(&args.ckpt_frames))
            .int("ckpt_reps", args.ckpt_reps as u64)
            .str(
                "ckpt_drivers",
                &names(args.ckpt_drivers.iter().map(|d| d.name()).collect()),
            )
            .opt_int("pool", args.pool.map(|p| p as u64))
            .bool("flush_on_write", args.flush_on_write)
            .bool("quick", args.quick)
            .int("cache_mib", args.cache_mib as u64)
            .opt_int("ops_per_group", args.ops_per_group.map(|c| c as u64))
            .opt_int("sync_ops", args.sync_ops.map(|c| c as u64))
            .bool(
                "process_per_engine",
                !args.in_process && args.engines.len() > 1,
            )
            .opt_int(
                "cpus",
                std::thread::available_parallelism()
                    .ok()
                    .map(|c| c.get() as u64),
            )
            .int("timer_overhead_ns", plan.timer_overhead)
            .str("loadavg", load_start)
            .str(
                "dir",
                &plan
                    .root
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
    )
}

fn print_main_tables(col: &Collector, timer_overhead: u64) {
    println!("{}", report::ops_table(&col.rows));
    println!("{}", report::summary_table(&col.summaries));
    println!(
        "Latency: sampled 1 op in 16 for point ops, 1 in 4 for rename/create_delete, every op for \
         scans and for reopen / fdatasync / sync_commit; timer overhead {timer_overhead} ns subtracted. \
         fill = space used / (frames x 512 KiB) after load. bytes/key: sum of the file sizes in the \
         data directory after the load's checkpoint (disk), engine space used (mem), estimated heap of \
         the maps (est), or RSS growth over the load (rss). peak RSS is the process peak during that \
         engine's run; base is the RSS before the engine opened (the harness's keys and values), so \
         RSS - base is the engine's peak memory, checked against holt's budget of pool x 512 KiB x \
         1.1 + 64 MiB (ok / OVER; persistent mode only). cache hit % counts from the engine's last open (the persistence groups reopen \
         it)."
    );
}

fn print_checkpoint(out: &ckpt::Outcome, args: &Args) {
    let shape = args.shapes.first().copied().unwrap_or(Shape::Objstore);
    println!("\n### Checkpoint round (persistent mode, holt, shape {shape})\n");
    if out.walls.is_empty() {
        println!("(nothing measured)");
        return;
    }
    println!("{}", ckpt::bandwidth_table(out));
    println!(
        "Each N: raw pwrite = N x 512 KiB written by sequential pwrite (O_DIRECT, 4096-aligned random \
         buffers) into a fresh file in the run directory, then fdatasync, before and after the trees; \
         raw io_uring batch = the same writes as one IoFile::write_batch on a holt-backend-uring file \
         + sync_data; fallocated = into a file fallocate'd first (timed; pwrite through holt's sync \
         driver), as the engine's data file is. holt checkpoint() #k = one round, timed alone, on a fresh tree (own \
         subdirectory, driver forced with TreeBuilder::io_driver) whose every frame was dirtied just \
         before: frames = bm_dirty_count before it, MiB = frames x 0.5. #1 writes into newly \
         allocated slots (the data file grows by fallocate); #2 and later reuse the slots the round \
         before last released. A round includes the WAL cut (drain + fdatasync + rename + directory \
         fsync), the capture of every dirty frame (copy + checksum, under the commit gate), the \
         frame writes, fdatasync and the manifest (write, fsync, rename, directory fsync). % of raw \
         pwrite: against the mean of the two raw pwrite runs of that N. MiB to block layer: growth of \
         write_bytes in /proc/self/io over the measurement (all threads of the process)."
    );
    println!("\n#### Writer latency during a round\n");
    println!("{}", ckpt::latency_table(out));
    println!(
        "After the timed rounds, every frame dirtied again, then a second thread overwrites random \
         keys (same-length values, every put timed, timer overhead subtracted) through an idle period \
         as long as the first timed round (at least 0.25 s), then through one more checkpoint() on \
         the main thread. A put overlapping the round in any way counts for the round. The writer is \
         a closed loop, so a stall is one sample: corrected p99 adds the puts a writer at the idle \
         rate would have issued during each stall (hdrhistogram record_correct with the idle \
         period's mean interval between puts). longest put: the slowest put overlapping the round and \
         when it started, relative to the round's start. WAL MiB at cut: the WAL written since the \
         last round (mostly the idle period's puts), which the round's WAL rotation writes out and \
         fdatasyncs (outside the commit gate)."
    );
    println!("\n#### Setup\n");
    println!("{}", ckpt::setup_table(out));
    let walls: Vec<String> = out
        .walls
        .iter()
        .map(|(n, s)| format!("N = {n}: {s:.1} s"))
        .collect();
    println!(
        "pool = 2N + 128 frames (a cap, nothing evicted: cache misses must be 0). load: chunks of \
         fresh keys in random order until stats().blob_count >= N (stats s: time spent counting). \
         dirtying puts / dirty after / page-cache dirty (Dirty + Writeback of /proc/meminfo just \
         before) are per timed round. dir MiB: the tree's files after the first round and after each \
         timed round. Wall time per N (raw writes and every driver's tree): {}.",
        walls.join(", ")
    );
}

/// The `checkpoint` scenario: once per run, holt only, persistent mode.
fn run_checkpoint(plan: &Plan<'_>, col: &mut Collector) -> Result<()> {
    let args = plan.args;
    let shape = args.shapes.first().copied().unwrap_or(Shape::Objstore);
    if args.engines.contains(&EngineKind::Reference) {
        col.notes.push(
            "reference: checkpoint: this engine keeps no files (the scenario runs holt only)"
                .into(),
        );
    }
    let disk = plan.root.as_ref().filter(|_| args.mode == Mode::Persistent);
    let root = match (disk, args.engines.contains(&EngineKind::Holt)) {
        (Some(root), true) => root.clone(),
        (None, _) => {
            col.notes
                .push("holt: checkpoint: memory mode has no disk (use --mode persistent)".into());
            return Ok(());
        }
        (_, false) => {
            col.notes
                .push("checkpoint: runs on holt only, which is not among --engine".into());
            return Ok(());
        }
    };
    let cfg = ckpt::Config {
        root: &root,
        shape,
        seed: args.seed,
        frames: &args.ckpt_frames,
        drivers: &args.ckpt_drivers,
        reps: args.ckpt_reps,
        timer_overhead: plan.timer_overhead,
    };
    let out = ckpt::run(&cfg, &mut col.json)?;
    col.notes.extend(out.notes.iter().cloned());
    for e in &out.errors {
        eprintln!("holt-bench: ERROR holt {shape} checkpoint: {e}");
        col.errors.push(format!("holt / {shape} / checkpoint: {e}"));
    }
    col.ckpt = Some(out);
    Ok(())
}

fn run_engine_kind(
    plan: &Plan<'_>,
    kind: EngineKind,
    shape: Shape,
    keys: &KeySet,
    vals: &ValuePool,
    col: &mut Collector,
) -> Result<()> {
    let args = plan.args;
    report::reset_peak_rss();
    let base_rss = report::rss().0;
    match kind {
        EngineKind::Holt => {
            let dir = match (&plan.root, args.mode) {
                (Some(root), Mode::Persistent) => {
                    let d = root.join(format!("holt-{shape}"));
                    if let Err(msg) = fresh_dir(&d) {
                        return col.error("holt", shape, "open", msg);
                    }
                    Some(d)
                }
                _ => None,
            };
            let pool = args.pool.unwrap_or_else(|| default_pool(shape, args.n));
            let opts = HoltOptions {
                dir,
                pool_frames: pool,
                flush_on_write: args.flush_on_write,
            };
            match HoltEngine::open(&opts) {
                Ok(e) => run_engine(plan, e, Some(pool), shape, keys, vals, base_rss, col),
                Err(err) => col.error("holt", shape, "open", err.to_string()),
            }
        }
        EngineKind::Reference => run_engine(
            plan,
            ReferenceEngine::new(),
            None,
            shape,
            keys,
            vals,
            base_rss,
            col,
        ),
        peer => {
            let Some(root) = &plan.root else {
                return col.error(peer.name(), shape, "open", "no directory".into());
            };
            let opts = peers::PeerOptions {
                dir: root.join(format!("{}-{shape}", peer.name())),
                cache_bytes: args.cache_mib << 20,
                reader_threads: args.threads.iter().copied().max().unwrap_or(1),
            };
            if let Err(msg) = fresh_dir(&opts.dir) {
                return col.error(peer.name(), shape, "open", msg);
            }
            run_peer(plan, peer, &opts, shape, keys, vals, base_rss, col)
        }
    }
}

/// A directory an engine may create its files in: absent or empty.
fn fresh_dir(d: &Path) -> std::result::Result<(), String> {
    let occupied = std::fs::read_dir(d)
        .map(|mut it| it.next().is_some())
        .unwrap_or(false);
    if occupied {
        return Err(format!(
            "{} exists and is not empty; remove it or pass another --dir",
            d.display()
        ));
    }
    Ok(())
}

/// Opens a peer (compiled in with its cargo feature) and runs the groups.
#[allow(clippy::too_many_arguments)]
fn run_peer(
    plan: &Plan<'_>,
    kind: EngineKind,
    opts: &peers::PeerOptions,
    shape: Shape,
    keys: &KeySet,
    vals: &ValuePool,
    base_rss: Option<u64>,
    col: &mut Collector,
) -> Result<()> {
    #[allow(unused_macros)] // without any peer feature
    macro_rules! peer {
        ($open:expr) => {
            match $open(opts) {
                Ok(e) => run_engine(plan, e, None, shape, keys, vals, base_rss, col),
                Err(err) => col.error(kind.name(), shape, "open", err.to_string()),
            }
        };
    }
    match kind {
        #[cfg(feature = "rocksdb")]
        EngineKind::Rocksdb => peer!(peers::rocksdb::RocksEngine::open),
        #[cfg(feature = "sqlite")]
        EngineKind::Sqlite => peer!(peers::sqlite::SqliteEngine::open),
        #[cfg(feature = "lmdb")]
        EngineKind::Lmdb => peer!(peers::lmdb::LmdbEngine::open),
        #[cfg(feature = "redb")]
        EngineKind::Redb => peer!(peers::redb::RedbEngine::open),
        #[cfg(feature = "fjall")]
        EngineKind::Fjall => peer!(peers::fjall::FjallEngine::open),
        other => {
            let _ = (plan, opts, keys, vals, base_rss);
            col.error(
                other.name(),
                shape,
                "open",
                format!("built without the `{}` feature", other.name()),
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_engine<E: Engine>(
    plan: &Plan<'_>,
    mut e: E,
    pool: Option<usize>,
    shape: Shape,
    keys: &KeySet,
    vals: &ValuePool,
    base_rss: Option<u64>,
    col: &mut Collector,
) -> Result<()> {
    let args = plan.args;
    let start = Instant::now();
    let engine = e.name();
    let cx = Ctx {
        keys,
        vals,
        seed: args.seed,
        label: format!("{engine} {shape}"),
        progress: plan.progress,
        timer_overhead: plan.timer_overhead,
        next_extra: AtomicUsize::new(0),
        limits: Limits {
            point_ops: args.ops_per_group,
            sync_ops: args.sync_ops,
        },
    };
    let mut skipped = Vec::new();
    let mut sum = Summary {
        engine: engine.to_string(),
        shape: shape.name().to_string(),
        n: args.n,
        pool,
        base_rss,
        persistent: e.data_dir().is_some(),
        ..Summary::default()
    };
    for &op in args.ops.iter().filter(|op| !op.self_contained()) {
        if op.needs_persistence() && e.data_dir().is_none() {
            skipped.push(op.name());
            continue;
        }
        let r = match ops::run(&mut e, op, &cx) {
            Ok(r) => r,
            Err(err) => {
                col.error(engine, shape, &op.name(), err.to_string())?;
                break;
            }
        };
        let lat = Latency::of(&r);
        let mut line = Obj::default()
            .str("type", "group")
            .str("engine", engine)
            .str("shape", shape.name())
            .str("mode", args.mode.name())
            .int("n", args.n as u64)
            .str("op", &r.op)
            .int("threads", r.threads as u64)
            .int("ops", r.ops)
            .num("secs", r.secs)
            .num("ops_per_sec", r.ops_per_sec())
            .int("p50_ns", lat.p50)
            .int("p99_ns", lat.p99)
            .int("p999_ns", lat.p999)
            .int("max_ns", lat.max)
            .num("mean_ns", lat.mean)
            .int("samples", lat.samples)
            .int("sample_every", r.sample_every as u64)
            .str("digest", &format!("{:#018x}", r.digest))
            .int("items", r.items)
            .str(
                "lat_curve_ns",
                &svg::curve(&r.hist)
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        line = match r.digest_as {
            Some(d) => line.str("digest_as", d),
            None => line.null("digest_as"),
        };
        for (k, v) in &r.extra {
            line = line.num(k, *v);
        }
        line = match &r.wrong {
            Some(w) => line.str("wrong", w),
            None => line.null("wrong"),
        };
        col.json.line(line)?;
        if let Some(w) = &r.wrong {
            col.error(engine, shape, &r.op, format!("wrong results: {w}"))?;
        }
        let digest_op = r.digest_as.map_or_else(|| r.op.clone(), str::to_string);
        col.digests.push(DigestEntry {
            shape: shape.name().to_string(),
            op: digest_op,
            engine: engine.to_string(),
            digest: r.digest,
        });
        if op == OpKind::Reopen || op == OpKind::ReopenWal {
            col.recovery
                .push(recovery_row(engine, shape, args.n, op, &r));
        }
        col.rows.push(Row {
            engine: engine.to_string(),
            shape: shape.name().to_string(),
            n: args.n,
            threads: r.threads,
            op: r.op.clone(),
            ops: r.ops,
            ops_per_sec: r.ops_per_sec(),
            lat,
            curve: svg::curve(&r.hist),
        });

        if op == OpKind::Load {
            sum.load_secs = r.secs;
            sum.checkpoint_secs = r
                .extra
                .iter()
                .find(|(k, _)| *k == "checkpoint_secs")
                .map_or(0.0, |(_, v)| *v);
            after_load(&e, shape, args.n, base_rss, &mut sum, pool, col)?;
        }
    }
    if !skipped.is_empty() {
        let why = if args.mode == Mode::Memory {
            "memory mode has no files to reopen or sync (use --mode persistent)"
        } else {
            "this engine keeps no files"
        };
        let note = format!("{engine} {shape}: {}: {why}", skipped.join(", "));
        col.json.line(
            Obj::default()
                .str("type", "skipped")
                .str("engine", engine)
                .str("shape", shape.name())
                .str("ops", &skipped.join(","))
                .str("reason", why),
        )?;
        col.notes.push(note);
    }
    match e.stats() {
        Ok(s) => {
            sum.cache_hits = s.cache_hits;
            sum.cache_misses = s.cache_misses;
            sum.restarts = s.restarts;
        }
        Err(err) => col.error(engine, shape, "stats", err.to_string())?,
    }
    sum.peak_rss = report::rss().1;
    drop(e);
    sum.wall_secs = start.elapsed().as_secs_f64();
    col.json.line(
        Obj::default()
            .str("type", "summary")
            .str("engine", engine)
            .str("shape", shape.name())
            .str("mode", args.mode.name())
            .int("n", args.n as u64)
            .opt_int("pool_frames", sum.pool.map(|p| p as u64))
            .bool("flush_on_write", args.flush_on_write)
            .num("load_secs", sum.load_secs)
            .num("checkpoint_secs", sum.checkpoint_secs)
            .opt_int("frames", sum.frames)
            .opt_num("mean_fill", sum.mean_fill)
            .opt_int("cache_hits", sum.cache_hits)
            .opt_int("cache_misses", sum.cache_misses)
            .opt_num("cache_hit_rate", sum.hit_rate())
            .opt_int("optimistic_restarts", sum.restarts)
            .opt_int("peak_rss_bytes", sum.peak_rss)
            .opt_int("base_rss_bytes", sum.base_rss)
            .opt_int("engine_rss_bytes", sum.engine_rss())
            .opt_int("budget_bytes", sum.budget())
            .opt_num("bytes_per_key", sum.bytes_per_key)
            .str("bytes_per_key_source", sum.bytes_per_key_source)
            .opt_int("disk_bytes", sum.disk_bytes)
            .opt_int("disk_allocated_bytes", sum.disk_allocated)
            .num("wall_secs", sum.wall_secs),
    )?;
    col.summaries.push(sum);
    Ok(())
}

/// Frame count, fill and bytes per key, right after load + checkpoint.
fn after_load<E: Engine>(
    e: &E,
    shape: Shape,
    n: usize,
    base_rss: Option<u64>,
    sum: &mut Summary,
    pool: Option<usize>,
    col: &mut Collector,
) -> Result<()> {
    let stats = match e.stats() {
        Ok(s) => s,
        Err(err) => return col.error(e.name(), shape, "stats", err.to_string()),
    };
    sum.frames = stats.frames;
    if let Some(h) = e.frame_hops() {
        eprintln!(
            "holt-bench: {} {shape}: frames per get mean {:.3} max {}; same-depth hops mean {:.3} max {}; keys by frames {:?}; by same-depth hops {:?}",
            e.name(),
            h.mean_frames(),
            h.max_frames(),
            h.mean_same_depth(),
            h.max_same_depth(),
            h.by_frames,
            h.by_same_depth
        );
    }
    if let (Some(f), Some(used)) = (stats.frames, stats.space_used) {
        if f > 0 {
            sum.mean_fill = Some(used as f64 / (f as f64 * f64::from(holt::Tree::page_size())));
        }
        if let (Some(p), true) = (pool, f as usize > pool.unwrap_or(usize::MAX)) {
            eprintln!(
                "holt-bench: note: {} {shape}: {f} frames > pool of {p}; the cache will evict",
                e.name()
            );
        }
    }
    if let Some(dir) = e.data_dir() {
        let bytes = report::dir_bytes(dir);
        sum.disk_bytes = Some(bytes);
        sum.disk_allocated = Some(report::disk_usage(dir));
        sum.bytes_per_key = Some(bytes as f64 / n as f64);
        sum.bytes_per_key_source = "disk";
    } else if let Some(used) = stats.space_used {
        sum.bytes_per_key = Some(used as f64 / n as f64);
        sum.bytes_per_key_source = "mem";
    } else if let Some(heap) = stats.heap_bytes {
        sum.bytes_per_key = Some(heap as f64 / n as f64);
        sum.bytes_per_key_source = "est";
    } else if let (Some(now), Some(base)) = (report::rss().0, base_rss) {
        sum.bytes_per_key = Some(now.saturating_sub(base) as f64 / n as f64);
        sum.bytes_per_key_source = "rss";
    }
    Ok(())
}

/// The recovery-table row of a `reopen` / `reopen_wal` group.
fn recovery_row(
    engine: &str,
    shape: Shape,
    n: usize,
    op: OpKind,
    r: &ops::GroupResult,
) -> Recovery {
    let x = |k: &str| r.extra.iter().find(|(name, _)| *name == k).map(|(_, v)| *v);
    let clean = op == OpKind::Reopen;
    Recovery {
        engine: engine.to_string(),
        shape: shape.name().to_string(),
        n,
        case: if clean {
            "reopen: clean close".into()
        } else {
            "reopen_wal: WAL tail".into()
        },
        wal_keys: x("wal_keys").unwrap_or(0.0) as u64,
        wal_bytes: x("wal_bytes").unwrap_or(0.0) as u64,
        disk_bytes: x("disk_bytes").unwrap_or(0.0) as u64,
        close_ms: x("close_ms").unwrap_or(f64::NAN),
        open_ms: x("open_ms").unwrap_or(f64::NAN),
        first_get_ms: x("first_get_ms").unwrap_or(f64::NAN),
        cold_ops_per_sec: clean.then(|| r.ops_per_sec()),
        frame_loads: x("frame_loads").map(|v| v as u64),
    }
}
