//! Op groups (BENCH.md "Ops"): the timed loops.
//!
//! Every group draws its op sequence from its own seeded stream, so two
//! engines run exactly the same sequence. Groups run in a fixed order
//! (`OpKind::order`) and leave the key set as they found it, except `load`
//! (creates keys `0..n`) and `delete` (runs last).
//!
//! Timing: `Instant::now()` costs about 43 ns here (AMD EPYC VM, TSC
//! clocksource; measured, see `timer_overhead_ns`), as much as a whole
//! `HashMap` get. So point-op groups time one op in 16 into the histogram
//! (the timer pair is then ~5 ns per op on average) and scans / listings
//! time every op; the calibrated timer cost is subtracted from each sample.
//! ops/s is always total ops / wall time of the whole loop.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::engines::{DirEntry, Engine, Renamed};
use crate::error::{BenchError, Result};
use crate::persist;
use crate::shapes::{permutation, KeySet, Rng, ValuePool};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Load,
    Get,
    Update,
    Mixed,
    Scan100,
    ListDir,
    Rename,
    CreateDelete,
    /// `get` on this many threads; 0 means "the `--threads` counts".
    GetThreads(usize),
    Delete,
    // Persistent engines only (see `persist`).
    /// Clean close after the load's checkpoint, reopen, cold-cache gets.
    Reopen,
    /// Unflushed inserts, close, reopen replaying the WAL tail.
    ReopenWal,
    /// Baseline: 4 KiB overwrite + `fdatasync` of a pre-written scratch file.
    Fsync,
    /// Puts with a WAL sync per commit on this many threads; 0 means "the
    /// sync thread counts".
    SyncCommit(usize),
    /// One timed checkpoint round per dirty-frame count and I/O driver, on
    /// trees of its own (see `ckpt`); runs once per run, not per engine.
    Checkpoint,
}

impl OpKind {
    pub const ALL_BUT_THREADED: [OpKind; 9] = [
        OpKind::Load,
        OpKind::Get,
        OpKind::Update,
        OpKind::Mixed,
        OpKind::Scan100,
        OpKind::ListDir,
        OpKind::Rename,
        OpKind::CreateDelete,
        OpKind::Delete,
    ];

    /// The groups that need a persistent engine (`SyncCommit(0)` expands
    /// to the sync thread counts).
    pub const PERSISTENT: [OpKind; 5] = [
        OpKind::Reopen,
        OpKind::ReopenWal,
        OpKind::Fsync,
        OpKind::SyncCommit(0),
        OpKind::Checkpoint,
    ];

    /// Whether the group needs an engine with files (persistent mode).
    #[must_use]
    pub const fn needs_persistence(self) -> bool {
        matches!(
            self,
            OpKind::Reopen
                | OpKind::ReopenWal
                | OpKind::Fsync
                | OpKind::SyncCommit(_)
                | OpKind::Checkpoint
        )
    }

    /// Whether the group brings its own data (trees of its own) instead of
    /// running on the engine `load` filled.
    #[must_use]
    pub const fn self_contained(self) -> bool {
        matches!(self, OpKind::Checkpoint)
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<OpKind> {
        Some(match s {
            "load" => OpKind::Load,
            "get" => OpKind::Get,
            "update" => OpKind::Update,
            "mixed" => OpKind::Mixed,
            "scan100" | "scan" => OpKind::Scan100,
            "list_dir" | "list" => OpKind::ListDir,
            "rename" => OpKind::Rename,
            "create_delete" => OpKind::CreateDelete,
            "delete" => OpKind::Delete,
            "get_tN" | "get_tn" | "get_t" => OpKind::GetThreads(0),
            "reopen" => OpKind::Reopen,
            "reopen_wal" => OpKind::ReopenWal,
            "fdatasync" | "fsync" => OpKind::Fsync,
            "checkpoint" | "ckpt" => OpKind::Checkpoint,
            "sync_commit" | "sync_commit_tN" | "sync_commit_tn" | "sync_commit_t" => {
                OpKind::SyncCommit(0)
            }
            other => {
                let (sync, t) = match other.strip_prefix("sync_commit_t") {
                    Some(t) => (true, t),
                    None => (false, other.strip_prefix("get_t")?),
                };
                let t: usize = t.parse().ok()?;
                if t == 0 || t > 1024 {
                    return None;
                }
                if sync {
                    OpKind::SyncCommit(t)
                } else {
                    OpKind::GetThreads(t)
                }
            }
        })
    }

    #[must_use]
    pub fn name(self) -> String {
        match self {
            OpKind::Load => "load".into(),
            OpKind::Get => "get".into(),
            OpKind::Update => "update".into(),
            OpKind::Mixed => "mixed".into(),
            OpKind::Scan100 => "scan100".into(),
            OpKind::ListDir => "list_dir".into(),
            OpKind::Rename => "rename".into(),
            OpKind::CreateDelete => "create_delete".into(),
            OpKind::GetThreads(t) => format!("get_t{t}"),
            OpKind::Delete => "delete".into(),
            OpKind::Reopen => "reopen".into(),
            OpKind::ReopenWal => "reopen_wal".into(),
            OpKind::Fsync => "fdatasync".into(),
            OpKind::SyncCommit(t) => format!("sync_commit_t{t}"),
            OpKind::Checkpoint => "checkpoint".into(),
        }
    }

    /// Position in the run: the data each group needs is in place, the
    /// recovery groups run right after the load's checkpoint, the
    /// destructive `delete` comes after the read/write groups, and the
    /// sync-commit groups (which add keys and reopen with a sync per
    /// commit) come next; `checkpoint`, on trees of its own, is last.
    #[must_use]
    pub fn order(self) -> usize {
        match self {
            OpKind::Load => 0,
            OpKind::Reopen => 1,
            OpKind::ReopenWal => 2,
            OpKind::Get => 10,
            OpKind::Update => 11,
            OpKind::Mixed => 12,
            OpKind::Scan100 => 13,
            OpKind::ListDir => 14,
            OpKind::Rename => 15,
            OpKind::CreateDelete => 16,
            OpKind::GetThreads(t) => 100 + t,
            OpKind::Delete => 10_000,
            OpKind::Fsync => 20_000,
            OpKind::SyncCommit(t) => 20_001 + t,
            OpKind::Checkpoint => 30_000,
        }
    }
}

/// Keys reserved beyond `n` for misses.
#[must_use]
pub fn miss_count(n: usize) -> usize {
    (n / 10).max(16)
}

/// Keys reserved beyond the misses for rename targets and creates.
#[must_use]
pub fn aux_count(n: usize) -> usize {
    (n / 20).max(1)
}

// -------------------------------------------------------------- digest --

/// FNV-1a-style digest over 64-bit little-endian words (a byte-serial
/// FNV-1a costs ~1 ns per byte, as much as a `HashMap` get for a 150 B
/// value). Length-prefixed, tail zero-padded, rotated after each word so
/// high bits feed back into low ones.
#[derive(Clone, Copy, Debug)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
}

impl Digest {
    #[inline]
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x0100_0000_01B3).rotate_left(29);
    }

    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        self.word(b.len() as u64);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(w));
        }
    }

    #[must_use]
    pub const fn value(self) -> u64 {
        self.0
    }
}

// ------------------------------------------------------------- sampler --

pub(crate) fn new_hist() -> Result<Histogram<u64>> {
    // 1 ns .. 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).map_err(|e| BenchError::Engine {
        engine: "harness",
        what: "histogram".into(),
        err: e.to_string(),
    })
}

/// Median cost of an `Instant::now()` + `elapsed()` pair, in ns.
#[must_use]
pub fn timer_overhead_ns() -> u64 {
    let mut v: Vec<u64> = (0..20_001)
        .map(|_| {
            let t = Instant::now();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2]
}

pub(crate) struct Sampler {
    pub(crate) hist: Histogram<u64>,
    mask: usize,
    overhead: u64,
}

impl Sampler {
    pub(crate) fn new(every: usize, overhead: u64) -> Result<Self> {
        Ok(Self {
            hist: new_hist()?,
            mask: every.next_power_of_two() - 1,
            overhead,
        })
    }

    #[inline]
    pub(crate) fn start(&self, j: usize) -> Option<Instant> {
        if j & self.mask == 0 {
            Some(Instant::now())
        } else {
            None
        }
    }

    #[inline]
    pub(crate) fn stop(&mut self, t: Option<Instant>) {
        if let Some(t) = t {
            let ns = t.elapsed().as_nanos() as u64;
            self.hist
                .saturating_record(ns.saturating_sub(self.overhead).max(1));
        }
    }
}

// ------------------------------------------------------------ progress --

pub(crate) struct Progress {
    on: bool,
    label: String,
    total: usize,
    start: Instant,
    last: Instant,
    shown: bool,
}

impl Progress {
    pub(crate) fn new(on: bool, label: String, total: usize) -> Self {
        let now = Instant::now();
        Self {
            on: on && std::io::stderr().is_terminal(),
            label,
            total,
            start: now,
            last: now,
            shown: false,
        }
    }

    /// Called every 1024 ops or so; prints at most 4 times a second.
    #[inline]
    pub(crate) fn tick(&mut self, done: usize) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last).as_millis() < 250 {
            return;
        }
        self.last = now;
        self.shown = true;
        let secs = now.duration_since(self.start).as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K{}: {done}/{} ({:.0}%), {:.0} ops/s",
            self.label,
            self.total,
            100.0 * done as f64 / self.total.max(1) as f64,
            rate
        );
        let _ = err.flush();
    }

    pub(crate) fn finish(&self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

// -------------------------------------------------------------- result --

pub struct GroupResult {
    pub op: String,
    pub threads: usize,
    pub ops: u64,
    pub secs: f64,
    pub hist: Histogram<u64>,
    pub sample_every: usize,
    pub digest: u64,
    /// Keys / entries / values read, for scans and listings.
    pub items: u64,
    /// Extra named numbers (e.g. the checkpoint after `load`).
    pub extra: Vec<(&'static str, f64)>,
    /// Answers the op sequence rules out (an engine bug), with an example.
    pub wrong: Option<String>,
    /// The op group whose digest this one must equal (`None`: its own).
    pub digest_as: Option<&'static str>,
}

impl GroupResult {
    #[must_use]
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-12)
    }
}

/// Counts impossible answers and keeps the first one.
#[derive(Default)]
pub(crate) struct Wrong {
    count: u64,
    first: Option<String>,
}

impl Wrong {
    #[cold]
    pub(crate) fn note(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what());
        }
    }

    pub(crate) fn merge(&mut self, other: Wrong) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    pub(crate) fn finish(self, total: u64) -> Option<String> {
        self.first
            .map(|f| format!("{} of {total} ops wrong; first: {f}", self.count))
    }
}

pub(crate) fn show(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

// ------------------------------------------------------------- context --

pub struct Ctx<'a> {
    pub keys: &'a KeySet,
    pub vals: &'a ValuePool,
    pub seed: u64,
    /// "holt objstore", for the progress line.
    pub label: String,
    pub progress: bool,
    pub timer_overhead: u64,
    /// Fresh keys beyond every reserved index (`KeySet::extra`) are handed
    /// out from here, so no two groups insert the same one.
    pub next_extra: AtomicUsize,
    pub limits: Limits,
}

/// Caps on the op counts of groups (`--ops-per-group`, `--sync-ops`), for
/// long comparisons; `None` keeps the counts of `--help`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Caps `get`, `get_tN` (in total), `reopen`'s gets, `update` and
    /// `mixed`.
    pub point_ops: Option<usize>,
    /// Puts per `sync_commit_tN` group (in total over the threads).
    pub sync_ops: Option<usize>,
}

impl Ctx<'_> {
    /// Ops of `get`, `reopen` and (in total) `get_tN`: n, or the cap.
    #[must_use]
    pub fn point_ops(&self) -> usize {
        self.capped(self.keys.n)
    }

    /// `count`, or the `--ops-per-group` cap if lower.
    #[must_use]
    pub fn capped(&self, count: usize) -> usize {
        self.limits.point_ops.map_or(count, |c| count.min(c)).max(1)
    }

    /// Reserves `count` fresh key indices; returns the first.
    pub fn take_extra(&self, count: usize) -> usize {
        self.next_extra.fetch_add(count, Ordering::Relaxed)
    }
}

pub(crate) const POINT_SAMPLE: usize = 16;

/// Runs one op group.
///
/// # Errors
/// The first engine error (the group is abandoned).
pub fn run<E: Engine>(e: &mut E, op: OpKind, cx: &Ctx<'_>) -> Result<GroupResult> {
    let name = op.name();
    let mut rng = Rng::for_label(cx.seed, &name);
    let n = cx.keys.n;
    let label = format!("{} {name}", cx.label);
    match op {
        OpKind::Load => load(e, cx, &mut rng, label),
        OpKind::Get => {
            let count = cx.point_ops();
            let (s, d, w, secs) = gets(&*e, cx, rng, count, label, true, POINT_SAMPLE)?;
            Ok(point_result(name, 1, count, secs, s, d, w))
        }
        OpKind::Update => update(e, cx, &mut rng, label, name, cx.capped(n / 2), 0),
        OpKind::Mixed => update(e, cx, &mut rng, label, name, cx.capped(n / 2), 80),
        OpKind::Scan100 => scans(e, cx, &mut rng, label, name, (n / 100).max(10), false),
        OpKind::ListDir => scans(e, cx, &mut rng, label, name, (n / 1000).max(10), true),
        OpKind::Rename => rename(e, cx, &mut rng, label, name),
        OpKind::CreateDelete => create_delete(e, cx, label, name),
        OpKind::GetThreads(t) => get_threads(&*e, cx, t.max(1), label, name),
        OpKind::Delete => delete(e, cx, &mut rng, label, name),
        OpKind::Reopen => persist::reopen(e, cx, &mut rng, label, name),
        OpKind::ReopenWal => persist::reopen_wal(e, cx, label, name),
        OpKind::Fsync => persist::fsync_baseline(e, cx, name),
        OpKind::SyncCommit(t) => persist::sync_commit(e, cx, t.max(1), label, name),
        OpKind::Checkpoint => Err(BenchError::Usage(
            "the checkpoint scenario opens trees of its own (ckpt::run), not one engine".into(),
        )),
    }
}

pub(crate) fn point_result(
    op: String,
    threads: usize,
    ops: usize,
    secs: f64,
    s: Sampler,
    d: Digest,
    w: Wrong,
) -> GroupResult {
    GroupResult {
        op,
        threads,
        ops: ops as u64,
        secs,
        hist: s.hist,
        sample_every: POINT_SAMPLE,
        digest: d.value(),
        items: 0,
        extra: Vec::new(),
        wrong: w.finish(ops as u64),
        digest_as: None,
    }
}

fn load<E: Engine>(e: &mut E, cx: &Ctx<'_>, rng: &mut Rng, label: String) -> Result<GroupResult> {
    let n = cx.keys.n;
    let order = permutation(n, rng);
    let batch = e.load_batch();
    let mut d = Digest::default();
    let mut w = Wrong::default();
    let mut p = Progress::new(cx.progress, label, n);
    let t0 = Instant::now();
    let s = if batch > 1 {
        load_batched(e, cx, &order, batch, &mut d, &mut w, &mut p)?
    } else {
        let mut s = Sampler::new(POINT_SAMPLE, cx.timer_overhead)?;
        let mut old = Vec::new();
        for (j, &i) in order.iter().enumerate() {
            let i = i as usize;
            let t = s.start(j);
            let existed = e.put(cx.keys.key(i), cx.vals.value(i, 0), &mut old)?;
            s.stop(t);
            d.word(u64::from(existed));
            if existed {
                d.bytes(&old);
                w.note(|| {
                    format!(
                        "put of new key {} found a previous value",
                        show(cx.keys.key(i))
                    )
                });
            }
            if j & 1023 == 0 {
                p.tick(j);
            }
        }
        s
    };
    let secs = t0.elapsed().as_secs_f64();
    p.finish();
    let t1 = Instant::now();
    e.checkpoint()?;
    let ckpt = t1.elapsed().as_secs_f64();
    let mut r = point_result("load".into(), 1, n, secs, s, d, w);
    r.extra.push(("checkpoint_secs", ckpt));
    if batch > 1 {
        // Latency samples are whole transactions of `batch` keys.
        r.sample_every = 1;
        r.extra.push(("load_batch", batch as f64));
    }
    Ok(r)
}

/// The load in `put_batch` units of `batch` keys, every unit timed. The
/// digest is the one the per-key loop computes (a word per key, the old
/// value after each key that existed), so the two paths agree.
fn load_batched<E: Engine>(
    e: &mut E,
    cx: &Ctx<'_>,
    order: &[u32],
    batch: usize,
    d: &mut Digest,
    w: &mut Wrong,
    p: &mut Progress,
) -> Result<Sampler> {
    let mut s = Sampler::new(1, cx.timer_overhead)?;
    let mut items: Vec<(&[u8], &[u8])> = Vec::with_capacity(batch);
    for (c, chunk) in order.chunks(batch).enumerate() {
        items.clear();
        items.extend(chunk.iter().map(|&i| {
            let i = i as usize;
            (cx.keys.key(i), cx.vals.value(i, 0))
        }));
        let mut next = 0;
        let t = s.start(c);
        e.put_batch(&items, &mut |j, old| {
            for _ in next..j {
                d.word(0);
            }
            d.word(1);
            d.bytes(old);
            next = j + 1;
            w.note(|| format!("put of new key {} found a previous value", show(items[j].0)));
        })?;
        s.stop(t);
        for _ in next..chunk.len() {
            d.word(0);
        }
        p.tick(c * batch);
    }
    Ok(s)
}

/// `count` gets (10% misses), timing one in `sample_every`; shared by
/// `get`, `get_tN` and `reopen`.
pub(crate) fn gets<E: Engine>(
    e: &E,
    cx: &Ctx<'_>,
    mut rng: Rng,
    count: usize,
    label: String,
    show_progress: bool,
    sample_every: usize,
) -> Result<(Sampler, Digest, Wrong, f64)> {
    let keys = cx.keys;
    let (n, misses) = (keys.n, keys.misses);
    let mut s = Sampler::new(sample_every, cx.timer_overhead)?;
    let mut d = Digest::default();
    let mut w = Wrong::default();
    let mut out = Vec::new();
    let mut p = Progress::new(cx.progress && show_progress, label, count);
    let t0 = Instant::now();
    for j in 0..count {
        let miss = rng.percent(10);
        let key = if miss {
            keys.miss(rng.below(misses))
        } else {
            keys.key(rng.below(n))
        };
        let t = s.start(j);
        let found = e.get(key, &mut out)?;
        s.stop(t);
        d.word(u64::from(found));
        if found {
            d.bytes(&out);
        }
        if found == miss {
            w.note(|| format!("get({}) found={found}, expected {}", show(key), !miss));
        }
        if j & 1023 == 0 {
            p.tick(j);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    p.finish();
    Ok((s, d, w, secs))
}

/// `count` ops; `get_pct` percent of them gets, the rest overwrites.
fn update<E: Engine>(
    e: &mut E,
    cx: &Ctx<'_>,
    rng: &mut Rng,
    label: String,
    name: String,
    count: usize,
    get_pct: u32,
) -> Result<GroupResult> {
    let keys = cx.keys;
    let n = keys.n;
    let round = if get_pct == 0 { 1u64 << 32 } else { 2u64 << 32 };
    let mut s = Sampler::new(POINT_SAMPLE, cx.timer_overhead)?;
    let mut d = Digest::default();
    let mut w = Wrong::default();
    let mut buf = Vec::new();
    let mut p = Progress::new(cx.progress, label, count);
    let t0 = Instant::now();
    for j in 0..count {
        let is_get = get_pct > 0 && rng.percent(get_pct);
        let i = rng.below(n);
        let key = keys.key(i);
        let t = s.start(j);
        let found = if is_get {
            e.get(key, &mut buf)?
        } else {
            e.put(key, cx.vals.value(i, round + j as u64), &mut buf)?
        };
        s.stop(t);
        d.word(u64::from(found));
        if found {
            d.bytes(&buf);
        } else {
            w.note(|| {
                format!(
                    "{} of existing key {}: absent",
                    if is_get { "get" } else { "put" },
                    show(key)
                )
            });
        }
        if j & 1023 == 0 {
            p.tick(j);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    p.finish();
    Ok(point_result(name, 1, count, secs, s, d, w))
}

/// `scan100` (no delimiter, 100 keys) or `list_dir` (delimiter `/`, 1000
/// entries) under a random ancestor directory of a random existing key.
fn scans<E: Engine>(
    e: &mut E,
    cx: &Ctx<'_>,
    rng: &mut Rng,
    label: String,
    name: String,
    count: usize,
    list: bool,
) -> Result<GroupResult> {
    let keys = cx.keys;
    let n = keys.n;
    let mut s = Sampler::new(1, cx.timer_overhead)?;
    let mut d = Digest::default();
    let mut w = Wrong::default();
    let mut cuts = Vec::new();
    let mut items = 0u64;
    let mut p = Progress::new(cx.progress, label, count);
    let t0 = Instant::now();
    for j in 0..count {
        let key = keys.key(rng.below(n));
        keys.shape.ancestor_cuts(key, &mut cuts);
        let cut = cuts.get(rng.below(cuts.len().max(1))).copied().unwrap_or(0);
        let prefix = &key[..cut];
        let t = s.start(j);
        let got = if list {
            e.list_dir(prefix, b'/', 1000, |entry| match entry {
                DirEntry::Key(k, v) => {
                    d.word(1);
                    d.bytes(k);
                    d.bytes(v);
                }
                DirEntry::Prefix(k) => {
                    d.word(2);
                    d.bytes(k);
                }
            })?
        } else {
            e.scan(prefix, 100, |k, v| {
                d.bytes(k);
                d.bytes(v);
            })?
        };
        s.stop(t);
        d.word(got as u64);
        items += got as u64;
        if got == 0 {
            w.note(|| {
                format!(
                    "{name}({}) returned nothing, but {} exists",
                    show(prefix),
                    show(key)
                )
            });
        }
        if j & 15 == 0 {
            p.tick(j);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    p.finish();
    Ok(GroupResult {
        op: name,
        threads: 1,
        ops: count as u64,
        secs,
        hist: s.hist,
        sample_every: 1,
        digest: d.value(),
        items,
        extra: Vec::new(),
        wrong: w.finish(count as u64),
        digest_as: None,
    })
}

/// Moves `aux_count(n)` distinct keys to fresh names in other directories,
/// then moves them back: `2 * aux_count(n)` renames, state unchanged.
fn rename<E: Engine>(
    e: &mut E,
    cx: &Ctx<'_>,
    rng: &mut Rng,
    label: String,
    name: String,
) -> Result<GroupResult> {
    let keys = cx.keys;
    let h = keys.aux.min(keys.n);
    let pick = permutation(keys.n, rng);
    let total = 2 * h;
    let mut s = Sampler::new(4, cx.timer_overhead)?;
    let mut d = Digest::default();
    let mut w = Wrong::default();
    let mut p = Progress::new(cx.progress, label, total);
    let t0 = Instant::now();
    for j in 0..total {
        let (src, dst) = if j < h {
            (keys.key(pick[j] as usize), keys.aux(j))
        } else {
            (keys.aux(j - h), keys.key(pick[j - h] as usize))
        };
        let t = s.start(j);
        let r = e.rename(src, dst)?;
        s.stop(t);
        d.word(r.code());
        if r != Renamed::Done {
            w.note(|| format!("rename({} -> {}) = {r:?}", show(src), show(dst)));
        }
        if j & 1023 == 0 {
            p.tick(j);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    p.finish();
    let mut r = point_result(name, 1, total, secs, s, d, w);
    r.sample_every = 4;
    Ok(r)
}

/// `aux_count(n)` times: create a fresh key, then delete it.
fn create_delete<E: Engine>(
    e: &mut E,
    cx: &Ctx<'_>,
    label: String,
    name: String,
) -> Result<GroupResult> {
    let keys = cx.keys;
    let h = keys.aux;
    let total = 2 * h;
    let mut s = Sampler::new(4, cx.timer_overhead)?;
    let mut d = Digest::default();
    let mut w = Wrong::default();
    let mut old = Vec::new();
    let mut p = Progress::new(cx.progress, label, total);
    let round = 3u64 << 32;
    let t0 = Instant::now();
    for j in 0..h {
        let key = keys.aux(j);
        let value = cx.vals.value(keys.n + keys.misses + j, round);
        let t = s.start(2 * j);
        let existed = e.put(key, value, &mut old)?;
        s.stop(t);
        let t = s.start(2 * j + 1);
        let found = e.delete(key, &mut old)?;
        s.stop(t);
        d.word(u64::from(existed));
        d.word(u64::from(found));
        if found {
            d.bytes(&old);
        }
        if existed || !found || old != value {
            w.note(|| {
                format!(
                    "create+delete of {}: put existed={existed}, delete found={found}, value intact={}",
                    show(key),
                    old == value
                )
            });
        }
        if j & 511 == 0 {
            p.tick(2 * j);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    p.finish();
    let mut r = point_result(name, 1, total, secs, s, d, w);
    r.sample_every = 4;
    Ok(r)
}

/// Deletes 10% of the keys (distinct, random).
fn delete<E: Engine>(
    e: &mut E,
    cx: &Ctx<'_>,
    rng: &mut Rng,
    label: String,
    name: String,
) -> Result<GroupResult> {
    let keys = cx.keys;
    let count = (keys.n / 10).max(1);
    let pick = permutation(keys.n, rng);
    let mut s = Sampler::new(POINT_SAMPLE, cx.timer_overhead)?;
    let mut d = Digest::default();
    let mut w = Wrong::default();
    let mut old = Vec::new();
    let mut p = Progress::new(cx.progress, label, count);
    let t0 = Instant::now();
    for (j, &i) in pick[..count].iter().enumerate() {
        let key = keys.key(i as usize);
        let t = s.start(j);
        let found = e.delete(key, &mut old)?;
        s.stop(t);
        d.word(u64::from(found));
        if found {
            d.bytes(&old);
        } else {
            w.note(|| format!("delete({}) of an existing key: absent", show(key)));
        }
        if j & 1023 == 0 {
            p.tick(j);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    p.finish();
    Ok(point_result(name, 1, count, secs, s, d, w))
}

/// `n` gets in total on `threads` threads sharing `e`. The digest is the
/// XOR of the per-thread digests (each thread has its own sequence), so
/// it is deterministic too.
fn get_threads<E: Engine>(
    e: &E,
    cx: &Ctx<'_>,
    threads: usize,
    label: String,
    name: String,
) -> Result<GroupResult> {
    let per = (cx.point_ops() / threads).max(1);
    let barrier = Barrier::new(threads);
    type Part = (Sampler, Digest, Wrong, Instant, Instant);
    let parts: Vec<Result<Part>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                let label = label.clone();
                let name = &name;
                sc.spawn(move || -> Result<Part> {
                    let rng = Rng::for_label(cx.seed, &format!("{name}/{t}"));
                    barrier.wait();
                    let start = Instant::now();
                    let (s, d, w, _) = gets(e, cx, rng, per, label, t == 0, POINT_SAMPLE)?;
                    Ok((s, d, w, start, Instant::now()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BenchError::Engine {
                        engine: e.name(),
                        what: name.clone(),
                        err: "worker thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut hist = new_hist()?;
    let mut digest = 0u64;
    let mut wrong = Wrong::default();
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for part in parts {
        let (s, d, w, a, b) = part?;
        hist.add(&s.hist).map_err(|err| BenchError::Engine {
            engine: "harness",
            what: "histogram merge".into(),
            err: err.to_string(),
        })?;
        digest ^= d.value();
        wrong.merge(w);
        first = Some(first.map_or(a, |f| f.min(a)));
        last = Some(last.map_or(b, |l| l.max(b)));
    }
    let secs = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let total = per * threads;
    Ok(GroupResult {
        op: name,
        threads,
        ops: total as u64,
        secs,
        hist,
        sample_every: POINT_SAMPLE,
        digest,
        items: 0,
        extra: Vec::new(),
        wrong: wrong.finish(total as u64),
        digest_as: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::{HoltEngine, HoltOptions, ReferenceEngine};
    use crate::shapes::Shape;

    #[test]
    fn holt_and_reference_agree_on_every_group() {
        for shape in Shape::ALL {
            let n = 3000;
            let keys = KeySet::generate(shape, 1, n, miss_count(n), aux_count(n));
            let vals = ValuePool::generate(shape, 1);
            let cx = Ctx {
                keys: &keys,
                vals: &vals,
                seed: 1,
                label: String::new(),
                progress: false,
                timer_overhead: 0,
                next_extra: AtomicUsize::new(0),
                limits: Limits::default(),
            };
            let mut h = HoltEngine::open(&HoltOptions {
                dir: None,
                pool_frames: 64,
                flush_on_write: false,
            })
            .unwrap();
            let mut r = ReferenceEngine::new();
            let mut groups = OpKind::ALL_BUT_THREADED.to_vec();
            groups.push(OpKind::GetThreads(2));
            groups.sort_by_key(|g| g.order());
            for g in groups {
                let a = run(&mut h, g, &cx).unwrap();
                let b = run(&mut r, g, &cx).unwrap();
                assert!(a.wrong.is_none(), "{shape} {}: {:?}", a.op, a.wrong);
                assert!(b.wrong.is_none(), "{shape} {}: {:?}", b.op, b.wrong);
                assert_eq!(a.digest, b.digest, "{shape} {}", a.op);
                assert_eq!(a.items, b.items, "{shape} {}", a.op);
            }
        }
    }
}
