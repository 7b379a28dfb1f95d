//! Hand-rolled command-line parsing.

use std::path::PathBuf;

use crate::error::{BenchError, Result};
use crate::ops::OpKind;
use crate::shapes::Shape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Memory,
    Persistent,
}

impl Mode {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::Persistent => "persistent",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Holt,
    Reference,
    Rocksdb,
    Sqlite,
    Lmdb,
    Redb,
    Fjall,
}

impl EngineKind {
    pub const ALL: [EngineKind; 7] = [
        EngineKind::Holt,
        EngineKind::Reference,
        EngineKind::Rocksdb,
        EngineKind::Sqlite,
        EngineKind::Lmdb,
        EngineKind::Redb,
        EngineKind::Fjall,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            EngineKind::Holt => "holt",
            EngineKind::Reference => "reference",
            EngineKind::Rocksdb => "rocksdb",
            EngineKind::Sqlite => "sqlite",
            EngineKind::Lmdb => "lmdb",
            EngineKind::Redb => "redb",
            EngineKind::Fjall => "fjall",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<EngineKind> {
        match s {
            "ref" => Some(EngineKind::Reference),
            "sqlite3" | "rusqlite" => Some(EngineKind::Sqlite),
            "heed" => Some(EngineKind::Lmdb),
            other => EngineKind::ALL.into_iter().find(|e| e.name() == other),
        }
    }

    /// A peer: a third-party engine behind a cargo feature.
    #[must_use]
    pub const fn is_peer(self) -> bool {
        !matches!(self, EngineKind::Holt | EngineKind::Reference)
    }

    /// Whether this binary was built with the engine (the peers need their
    /// cargo feature, named like the engine).
    #[must_use]
    pub const fn compiled(self) -> bool {
        match self {
            EngineKind::Holt | EngineKind::Reference => true,
            EngineKind::Rocksdb => cfg!(feature = "rocksdb"),
            EngineKind::Sqlite => cfg!(feature = "sqlite"),
            EngineKind::Lmdb => cfg!(feature = "lmdb"),
            EngineKind::Redb => cfg!(feature = "redb"),
            EngineKind::Fjall => cfg!(feature = "fjall"),
        }
    }
}

/// An I/O driver the `checkpoint` scenario measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    Sync,
    Uring,
}

impl DriverKind {
    /// The name `holt::Tree::io_stats` reports for it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DriverKind::Sync => "sync",
            DriverKind::Uring => "io_uring",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Args {
    pub shapes: Vec<Shape>,
    pub n: usize,
    /// Op groups in canonical order; `load` is always included.
    pub ops: Vec<OpKind>,
    /// Thread counts of `get_tN`.
    pub threads: Vec<usize>,
    /// Thread counts of `sync_commit_tN`.
    pub sync_threads: Vec<usize>,
    pub mode: Mode,
    pub dir: Option<PathBuf>,
    pub engines: Vec<EngineKind>,
    pub pool: Option<usize>,
    pub flush_on_write: bool,
    pub json: Option<PathBuf>,
    pub quick: bool,
    pub seed: u64,
    /// Dirty-frame counts of the `checkpoint` scenario.
    pub ckpt_frames: Vec<usize>,
    /// I/O drivers of the `checkpoint` scenario.
    pub ckpt_drivers: Vec<DriverKind>,
    /// Timed rounds per tree of the `checkpoint` scenario.
    pub ckpt_reps: usize,
    /// Where the latency plots go (`None`: beside the JSON output).
    pub plot_dir: Option<PathBuf>,
    /// Cache budget of each peer engine, in MiB.
    pub cache_mib: usize,
    /// `--ops-per-group`: cap on the point groups' op counts.
    pub ops_per_group: Option<usize>,
    /// `--sync-ops`: puts per `sync_commit_tN` group.
    pub sync_ops: Option<usize>,
    /// Run every engine in this process instead of one child each.
    pub in_process: bool,
    /// Internal: this process is the child that runs one engine and writes
    /// its JSON lines to stdout.
    pub child: Option<EngineKind>,
    pub help: bool,
}

pub const DEFAULT_N: usize = 1_000_000;
/// Cache budget of each peer engine (`--cache-mib`).
pub const DEFAULT_CACHE_MIB: usize = 1024;
pub const QUICK_N: usize = 100_000;
/// Dirty-frame counts of the `checkpoint` scenario (`--quick`: the first).
pub const DEFAULT_CKPT_FRAMES: [usize; 3] = [64, 512, 2048];

pub const HELP: &str = "\
holt-bench: throughput and latency of holt on path-shaped keys, beside a
HashMap + BTreeMap reference and (optional) peer engines

USAGE: cargo run --release -p holt-bench -- [FLAGS]
       cargo run --release -p holt-bench --features rocksdb,sqlite,lmdb,redb,fjall \\
           -- --engine all --mode persistent [FLAGS]

With no flags: shapes objstore and fs, n = 1 000 000, memory mode, engines
holt and reference, every op group of that mode (about two minutes on two
cores); prints markdown tables (stdout), writes JSON lines
(target/holt-bench.jsonl) and latency plots (target/holt-bench-plots/).
--mode persistent adds the persistence groups (reopen, reopen_wal,
fdatasync, sync_commit_tN, checkpoint).

FLAGS
  --shape S        key shape: kv | objstore | fs; repeatable or a comma list
                   [default: objstore,fs]
  --n N            keys loaded per shape; accepts 1000000, 1_000_000, 1e6,
                   100k, 1m  [default: 1000000; --quick: 100000]
  --ops LIST       comma list of op groups: load, get, update, mixed,
                   scan100, list_dir, rename, create_delete, get_tN, delete,
                   reopen, reopen_wal, fdatasync, sync_commit_tN,
                   checkpoint, or all. get_tN and sync_commit_tN use the
                   --threads counts; get_t4 names one count directly. load
                   runs whenever another group but checkpoint is chosen
                   (they need the data); sync_commit brings fdatasync along
                   [default: every group of the mode]
  --threads N      thread counts for get_tN and sync_commit_tN, a number
                   or a comma list  [default: 2 for get_tN, 1,2,4,8 for
                   sync_commit_tN]
  --mode M         memory | persistent  [default: memory]. Persistent mode
                   stores holt in --dir (the reference engine stays in RAM
                   and skips the persistence groups; the peers keep files
                   in --dir in either mode)
  --dir PATH       where persistent trees and peer files go (one
                   subdirectory per engine and shape, which must not
                   already exist)  [default: a fresh temporary directory,
                   removed at the end]
  --engine LIST    a comma list of holt, reference, rocksdb, sqlite, lmdb,
                   redb, fjall; peers = every peer built in; all = holt,
                   reference and every peer built in  [default:
                   holt,reference]. A peer needs the cargo feature of its
                   name (see PEERS)
  --in-process     run all engines in this process, one after the other
                   (default with several engines: one child process per
                   engine, so RSS and caches do not mix)
  --pool FRAMES    holt buffer pool in 512 KiB frames
                   [default: enough for the tree, at least 64]
  --cache-mib M    block / page cache of each peer in MiB  [default: 1024]
  --flush-on-write memory mode: write every mutation's dirty frames through
                   to the in-process backend (holt's own default; costs a
                   512 KiB copy + checksum per write)  [default: off]
  --ops-per-group N  cap the op counts of get, get_tN (in total), reopen's
                   gets, update and mixed at N (long comparisons; the
                   digests still match across engines)  [default: no cap]
  --sync-ops N     puts per sync_commit_tN group, over all its threads
                   [default: n/200, at least 500, at most 5000]
  --json PATH      JSON-lines output file, truncated at start
                   [default: target/holt-bench.jsonl if ./target exists,
                   else holt-bench.jsonl in the system temp dir]
  --plot-dir DIR   where the latency plots go: latency-<shape>.svg, one
                   panel per op group (latency at p50 .. p99.99 and the max
                   on a log percentile axis), one line per engine
                   [default: holt-bench-plots/ beside the JSON file]
  --seed S         seed of keys, values and op sequences  [default: 0]
  --ckpt-frames L  checkpoint: dirty-frame counts, a comma list
                   [default: 64,512,2048; --quick: 64]
  --ckpt-drivers L checkpoint: I/O drivers, sync and/or uring
                   [default: sync,uring]
  --ckpt-reps R    checkpoint: timed rounds per tree, each after dirtying
                   every frame again (the first grows the data file, later
                   ones reuse released slots)  [default: 1]
  --quick          CI smoke run: n = 100 000 unless --n is given
  --child ENGINE   internal: run one engine and print its JSON lines to
                   stdout (how the parent runs each engine in a process of
                   its own)
  -h, --help       this text

OP GROUPS (op counts scale with n)
  load           insert n keys in random order, then checkpoint (holt
                 and peers: transactions / write batches of 10 000 keys,
                 latency per batch; reference: one put per key)
  get            n uniform random gets, 10% of them misses
  update         n/2 overwrites of random existing keys, each its own
                 committed op that returns the old value
  mixed          n/2 ops, 80% get / 20% update
  scan100        n/100 scans: first 100 keys under a random ancestor
                 directory of a random key
  list_dir       n/1000 listings: one level (delimiter '/'), up to 1000
                 entries, under a random ancestor directory (ordered peers
                 seek past each subdirectory)
  rename         n/10 renames: n/20 keys moved to another directory, then
                 moved back
  create_delete  n/10 ops: create a new key, then delete it
  get_tN         n gets in total, spread over N threads sharing the engine
  delete         delete 10% of the keys (runs after the groups above)

PERSISTENCE GROUPS (persistent mode, engines with files: holt and the
peers; skipped with a note elsewhere)
  reopen         right after load: clean close, the files dropped from the
                 OS page cache, open + first get (recovery time), then n
                 gets on the cold cache
  reopen_wal     n/10 fresh keys with the buffered WAL and no checkpoint,
                 close, open replaying the WAL tail + first get; the keys
                 are then checked and deleted again (untimed)
  fdatasync      200 overwrites of 4 KiB + fdatasync in a scratch file in
                 the data directory, written and synced beforehand: the
                 disk's floor for a sync per commit
  sync_commit_tN fresh-key puts with an fsync per commit on N threads
                 (holt: wal_sync_on_commit(true); peers: see PEERS)
  checkpoint     runs once, after the groups above, on trees of its own
                 (first --shape, holt only): for each --ckpt-frames N and
                 driver, a fresh tree in a fresh subdirectory loaded to N
                 frames, checkpointed, every frame dirtied, and one round
                 timed (MiB/s); beside it the raw O_DIRECT sequential write
                 bandwidth of N x 512 KiB (pwrite, and one io_uring batch);
                 then put latency on a second thread during a round versus
                 an idle period of the same length. Needs about
                 2 x N x 512 KiB of RAM per tree (frames + round images)

PEERS (cargo features, off by default; CI builds none of them)
  rocksdb  RocksDB via the rocksdb crate. To link Debian's librocksdb-dev
           instead of compiling RocksDB (apt-get install librocksdb-dev
           libclang-dev), build with
           ROCKSDB_LIB_DIR=/usr/lib/x86_64-linux-gnu
           ROCKSDB_INCLUDE_DIR=/usr/include. WAL unsynced; sync tier:
           WriteOptions sync; checkpoint: flush.
  sqlite   rusqlite, bundled SQLite: WITHOUT ROWID table, WAL mode,
           synchronous=NORMAL (sync tier FULL); checkpoint:
           wal_checkpoint(TRUNCATE).
  lmdb     heed: MDB_NOSYNC (sync tier: default flags); checkpoint:
           mdb_env_sync.
  redb     Durability::None (sync tier: Immediate); checkpoint: an
           Immediate commit.
  fjall    journal flushed to the OS per write (sync tier: PersistMode::
           SyncData per op); checkpoint: persist(SyncAll).
  Every peer returns the old value of a put / delete like holt (one
  transaction that reads and writes) and must produce holt's digests.

Latency is sampled (every 16th point op, every scan/listing, every
persistence op and load batch); ops/s is ops / wall time of the whole
group. Each single-threaded group records a digest of what it read; every
engine's digest must equal holt's (or the first engine's without holt).
With several engines, a comparison table gives each engine's ops/s and
p99 per group, holt / best peer and holt / reference, bytes on disk per
key and peak RSS. Exit status 1 on any engine error or digest mismatch.
";

/// Parses `1000000`, `1_000_000`, `1e6`, `100k`, `2m`.
fn parse_count(s: &str) -> Option<usize> {
    let t: String = s.chars().filter(|&c| c != '_' && c != ',').collect();
    let t = t.to_ascii_lowercase();
    if let Some((m, e)) = t.split_once('e') {
        let m: usize = m.parse().ok()?;
        let e: u32 = e.parse().ok()?;
        return m.checked_mul(10usize.checked_pow(e)?);
    }
    let (digits, mul) = match t.as_bytes().last()? {
        b'k' => (&t[..t.len() - 1], 1_000),
        b'm' => (&t[..t.len() - 1], 1_000_000),
        _ => (&t[..], 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(mul)
}

fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn usage(m: impl Into<String>) -> BenchError {
    BenchError::Usage(m.into())
}

/// Parses the arguments after the program name.
///
/// # Errors
/// `BenchError::Usage` on an unknown flag or a bad value.
pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Args> {
    let mut shapes = Vec::new();
    let mut n = None;
    let mut ops: Option<Vec<OpKind>> = None;
    let mut threads = Vec::new();
    let mut mode = Mode::Memory;
    let mut dir = None;
    let mut engines = Vec::new();
    let mut pool = None;
    let mut flush_on_write = false;
    let mut json = None;
    let mut quick = false;
    let mut seed = 0;
    let mut ckpt_frames = Vec::new();
    let mut ckpt_drivers = Vec::new();
    let mut ckpt_reps = 1;
    let mut plot_dir = None;
    let mut cache_mib = DEFAULT_CACHE_MIB;
    let mut ops_per_group = None;
    let mut sync_ops = None;
    let mut in_process = false;
    let mut child = None;
    let mut help = false;

    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .ok_or_else(|| usage(format!("{name} needs a value"))),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => help = true,
            "--quick" => quick = true,
            "--flush-on-write" => flush_on_write = true,
            "--shape" | "--shapes" => {
                for s in list(&value("--shape")?) {
                    let sh = Shape::parse(s)
                        .ok_or_else(|| usage(format!("unknown shape {s:?} (kv, objstore, fs)")))?;
                    if !shapes.contains(&sh) {
                        shapes.push(sh);
                    }
                }
            }
            "--n" => {
                let v = value("--n")?;
                let c = parse_count(&v).ok_or_else(|| usage(format!("bad --n {v:?}")))?;
                if c == 0 || c > u32::MAX as usize / 2 {
                    return Err(usage(format!("--n {c} out of range")));
                }
                n = Some(c);
            }
            "--ops" => {
                let v = value("--ops")?;
                let mut sel = ops.take().unwrap_or_default();
                for s in list(&v) {
                    if s == "all" {
                        sel.extend(OpKind::ALL_BUT_THREADED);
                        sel.push(OpKind::GetThreads(0));
                        sel.extend(OpKind::PERSISTENT);
                        continue;
                    }
                    let op = OpKind::parse(s).ok_or_else(|| {
                        usage(format!(
                            "unknown op group {s:?} (load, get, update, mixed, scan100, \
                             list_dir, rename, create_delete, get_tN, delete, reopen, \
                             reopen_wal, fdatasync, sync_commit_tN, checkpoint, all)"
                        ))
                    })?;
                    sel.push(op);
                }
                ops = Some(sel);
            }
            "--threads" => {
                let v = value("--threads")?;
                for s in list(&v) {
                    let t = parse_count(s)
                        .filter(|&t| (1..=1024).contains(&t))
                        .ok_or_else(|| usage(format!("bad --threads {s:?}")))?;
                    if !threads.contains(&t) {
                        threads.push(t);
                    }
                }
            }
            "--mode" => {
                mode = match value("--mode")?.as_str() {
                    "memory" | "mem" => Mode::Memory,
                    "persistent" | "disk" => Mode::Persistent,
                    other => {
                        return Err(usage(format!("bad --mode {other:?} (memory, persistent)")))
                    }
                }
            }
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--engine" | "--engines" => {
                for s in list(&value("--engine")?) {
                    let picked: Vec<EngineKind> = match s {
                        "all" => EngineKind::ALL
                            .into_iter()
                            .filter(|e| e.compiled())
                            .collect(),
                        "peers" => EngineKind::ALL
                            .into_iter()
                            .filter(|e| e.is_peer() && e.compiled())
                            .collect(),
                        other => vec![engine_kind(other)?],
                    };
                    for e in picked {
                        if !engines.contains(&e) {
                            engines.push(e);
                        }
                    }
                }
            }
            "--child" => child = Some(engine_kind(&value("--child")?)?),
            "--in-process" => in_process = true,
            "--plot-dir" => plot_dir = Some(PathBuf::from(value("--plot-dir")?)),
            "--cache-mib" => {
                let v = value("--cache-mib")?;
                cache_mib = parse_count(&v)
                    .filter(|&c| (1..=1 << 20).contains(&c))
                    .ok_or_else(|| usage(format!("bad --cache-mib {v:?}")))?;
            }
            "--ops-per-group" => {
                let v = value("--ops-per-group")?;
                ops_per_group = Some(
                    parse_count(&v)
                        .filter(|&c| c > 0)
                        .ok_or_else(|| usage(format!("bad --ops-per-group {v:?}")))?,
                );
            }
            "--sync-ops" => {
                let v = value("--sync-ops")?;
                sync_ops = Some(
                    parse_count(&v)
                        .filter(|&c| c > 0)
                        .ok_or_else(|| usage(format!("bad --sync-ops {v:?}")))?,
                );
            }
            "--pool" => {
                let v = value("--pool")?;
                let p = parse_count(&v)
                    .filter(|&p| p > 0)
                    .ok_or_else(|| usage(format!("bad --pool {v:?}")))?;
                pool = Some(p);
            }
            "--json" => json = Some(PathBuf::from(value("--json")?)),
            "--seed" => {
                let v = value("--seed")?;
                seed = v.parse().map_err(|_| usage(format!("bad --seed {v:?}")))?;
            }
            "--ckpt-frames" => {
                let v = value("--ckpt-frames")?;
                for s in list(&v) {
                    let f = parse_count(s)
                        .filter(|&f| (1..=1 << 16).contains(&f))
                        .ok_or_else(|| usage(format!("bad --ckpt-frames {s:?} (1..65536)")))?;
                    if !ckpt_frames.contains(&f) {
                        ckpt_frames.push(f);
                    }
                }
            }
            "--ckpt-reps" => {
                let v = value("--ckpt-reps")?;
                ckpt_reps = parse_count(&v)
                    .filter(|&r| (1..=20).contains(&r))
                    .ok_or_else(|| usage(format!("bad --ckpt-reps {v:?} (1..20)")))?;
            }
            "--ckpt-drivers" | "--ckpt-driver" => {
                for s in list(&value("--ckpt-drivers")?) {
                    let d = match s {
                        "sync" => DriverKind::Sync,
                        "uring" | "io_uring" | "io-uring" => DriverKind::Uring,
                        other => {
                            return Err(usage(format!("unknown driver {other:?} (sync, uring)")))
                        }
                    };
                    if !ckpt_drivers.contains(&d) {
                        ckpt_drivers.push(d);
                    }
                }
            }
            other => return Err(usage(format!("unknown argument {other:?}"))),
        }
    }

    if shapes.is_empty() {
        shapes = vec![Shape::Objstore, Shape::Fs];
    }
    if engines.is_empty() {
        engines = vec![EngineKind::Holt, EngineKind::Reference];
    }
    if let Some(c) = child {
        engines = vec![c];
    }
    let sync_threads = if threads.is_empty() {
        vec![1, 2, 4, 8]
    } else {
        threads.clone()
    };
    if threads.is_empty() {
        threads.push(2);
    }
    let n = n.unwrap_or(if quick { QUICK_N } else { DEFAULT_N });

    // Expand get_tN / sync_commit_tN into one group per thread count;
    // canonical order.
    let mut sel = ops.unwrap_or_else(|| {
        let mut v = OpKind::ALL_BUT_THREADED.to_vec();
        v.push(OpKind::GetThreads(0));
        if mode == Mode::Persistent {
            v.extend(OpKind::PERSISTENT);
        }
        v
    });
    // Every group but `checkpoint` (which loads trees of its own) needs
    // the loaded data.
    if sel.iter().any(|op| !op.self_contained()) {
        sel.push(OpKind::Load);
    }
    let mut expanded = Vec::new();
    for op in sel {
        match op {
            OpKind::GetThreads(0) => {
                expanded.extend(threads.iter().map(|&t| OpKind::GetThreads(t)));
            }
            OpKind::SyncCommit(0) => {
                expanded.extend(sync_threads.iter().map(|&t| OpKind::SyncCommit(t)));
            }
            op => expanded.push(op),
        }
    }
    if expanded
        .iter()
        .any(|op| matches!(op, OpKind::SyncCommit(_)))
    {
        expanded.push(OpKind::Fsync);
    }
    expanded.sort_by_key(|op| op.order());
    expanded.dedup();
    if ckpt_frames.is_empty() {
        ckpt_frames = if quick {
            DEFAULT_CKPT_FRAMES[..1].to_vec()
        } else {
            DEFAULT_CKPT_FRAMES.to_vec()
        };
    }
    if ckpt_drivers.is_empty() {
        ckpt_drivers = vec![DriverKind::Sync, DriverKind::Uring];
    }

    Ok(Args {
        shapes,
        n,
        ops: expanded,
        threads,
        sync_threads,
        mode,
        dir,
        engines,
        pool,
        flush_on_write,
        json,
        quick,
        seed,
        ckpt_frames,
        ckpt_drivers,
        ckpt_reps,
        plot_dir,
        cache_mib,
        ops_per_group,
        sync_ops,
        in_process,
        child,
        help,
    })
}

/// An engine name, which this binary must have been built with.
fn engine_kind(s: &str) -> Result<EngineKind> {
    let e = EngineKind::parse(s).ok_or_else(|| {
        usage(format!(
            "unknown engine {s:?} (holt, reference, rocksdb, sqlite, lmdb, redb, fjall, \
             peers, all)"
        ))
    })?;
    if !e.compiled() {
        return Err(usage(format!(
            "engine {s:?} needs the cargo feature `{}`: cargo run --release -p holt-bench \
             --features {} -- ... (see --help, PEERS)",
            e.name(),
            e.name()
        )));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Args> {
        parse(v.iter().map(|s| (*s).to_string()))
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("1_000_000"), Some(1_000_000));
        assert_eq!(parse_count("1e6"), Some(1_000_000));
        assert_eq!(parse_count("100k"), Some(100_000));
        assert_eq!(parse_count("2M"), Some(2_000_000));
        assert_eq!(parse_count("x"), None);
    }

    #[test]
    fn defaults_and_flags() {
        let a = p(&[]).unwrap();
        assert_eq!(a.shapes, vec![Shape::Objstore, Shape::Fs]);
        assert_eq!(a.n, DEFAULT_N);
        assert_eq!(a.ops.first(), Some(&OpKind::Load));
        assert_eq!(a.ops.last(), Some(&OpKind::Delete));
        assert!(a.ops.contains(&OpKind::GetThreads(2)));
        assert!(!a.ops.iter().any(|op| op.needs_persistence()));

        let a = p(&["--mode", "persistent"]).unwrap();
        assert_eq!(
            &a.ops[..3],
            &[OpKind::Load, OpKind::Reopen, OpKind::ReopenWal]
        );
        assert_eq!(
            &a.ops[a.ops.len() - 7..],
            &[
                OpKind::Delete,
                OpKind::Fsync,
                OpKind::SyncCommit(1),
                OpKind::SyncCommit(2),
                OpKind::SyncCommit(4),
                OpKind::SyncCommit(8),
                OpKind::Checkpoint
            ]
        );
        assert!(a.ops.contains(&OpKind::GetThreads(2)));
        assert_eq!(a.ckpt_frames, DEFAULT_CKPT_FRAMES.to_vec());
        assert_eq!(a.ckpt_drivers, vec![DriverKind::Sync, DriverKind::Uring]);

        // `checkpoint` alone loads nothing; with another group, load runs.
        let a = p(&[
            "--ops",
            "checkpoint",
            "--ckpt-frames",
            "8,2k,8",
            "--ckpt-drivers=uring",
        ])
        .unwrap();
        assert_eq!(a.ops, vec![OpKind::Checkpoint]);
        assert_eq!(a.ckpt_frames, vec![8, 2000]);
        assert_eq!(a.ckpt_drivers, vec![DriverKind::Uring]);
        assert_eq!(a.ckpt_reps, 1);
        assert_eq!(p(&["--ckpt-reps", "3"]).unwrap().ckpt_reps, 3);
        assert!(p(&["--ckpt-reps", "0"]).is_err());
        let a = p(&["--ops", "checkpoint,get", "--quick"]).unwrap();
        assert_eq!(a.ops, vec![OpKind::Load, OpKind::Get, OpKind::Checkpoint]);
        assert_eq!(a.ckpt_frames, vec![64]);
        assert!(p(&["--ckpt-frames", "0"]).is_err());
        assert!(p(&["--ckpt-drivers", "aio"]).is_err());

        let a = p(&["--ops", "sync_commit_t3,reopen", "--threads", "2"]).unwrap();
        assert_eq!(
            a.ops,
            vec![
                OpKind::Load,
                OpKind::Reopen,
                OpKind::Fsync,
                OpKind::SyncCommit(3)
            ]
        );
        let a = p(&["--ops", "sync_commit", "--threads", "2,6"]).unwrap();
        assert_eq!(
            a.ops,
            vec![
                OpKind::Load,
                OpKind::Fsync,
                OpKind::SyncCommit(2),
                OpKind::SyncCommit(6)
            ]
        );

        let a = p(&[
            "--shape",
            "kv",
            "--shape=fs,kv",
            "--ops",
            "get,get_t4,get_tN",
            "--threads",
            "1,3",
            "--quick",
            "--mode",
            "persistent",
            "--engine",
            "holt",
        ])
        .unwrap();
        assert_eq!(a.shapes, vec![Shape::Kv, Shape::Fs]);
        assert_eq!(a.n, QUICK_N);
        assert_eq!(
            a.ops,
            vec![
                OpKind::Load,
                OpKind::Get,
                OpKind::GetThreads(1),
                OpKind::GetThreads(3),
                OpKind::GetThreads(4)
            ]
        );
        assert_eq!(a.mode, Mode::Persistent);
        assert_eq!(a.engines, vec![EngineKind::Holt]);

        let a = p(&[
            "--engine",
            "all",
            "--ops-per-group",
            "50k",
            "--sync-ops",
            "2000",
        ])
        .unwrap();
        let compiled: Vec<EngineKind> = EngineKind::ALL
            .into_iter()
            .filter(|e| e.compiled())
            .collect();
        assert_eq!(a.engines, compiled);
        assert_eq!((a.ops_per_group, a.sync_ops), (Some(50_000), Some(2000)));
        assert_eq!(a.cache_mib, DEFAULT_CACHE_MIB);
        let a = p(&["--engine", "holt,reference", "--child", "reference"]).unwrap();
        assert_eq!(a.engines, vec![EngineKind::Reference]);
        assert_eq!(a.child, Some(EngineKind::Reference));
        for peer in EngineKind::ALL.into_iter().filter(|e| e.is_peer()) {
            assert_eq!(
                p(&["--engine", peer.name()]).is_ok(),
                peer.compiled(),
                "{peer:?}"
            );
        }
        assert!(p(&["--engine", "mysql"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["--n"]).is_err());
        assert!(p(&["--ops", "nope"]).is_err());
    }
}
