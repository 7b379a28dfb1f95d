//! Markdown tables for people, JSON lines for machines, and process
//! memory numbers from `/proc/self/status`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{BenchError, Result};
use crate::ops::GroupResult;

// ---------------------------------------------------------------- JSON --

/// One JSON object, built field by field.
#[derive(Default)]
pub struct Obj(String);

fn escape(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Obj {
    fn key(&mut self, k: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        escape(k, &mut self.0);
        self.0.push(':');
    }

    #[must_use]
    pub fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        escape(v, &mut self.0);
        self
    }

    #[must_use]
    pub fn int(mut self, k: &str, v: u64) -> Self {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }

    #[must_use]
    pub fn num(mut self, k: &str, v: f64) -> Self {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.0, "{v}");
        } else {
            self.0.push_str("null");
        }
        self
    }

    #[must_use]
    pub fn opt_int(self, k: &str, v: Option<u64>) -> Self {
        match v {
            Some(v) => self.int(k, v),
            None => self.null(k),
        }
    }

    #[must_use]
    pub fn opt_num(self, k: &str, v: Option<f64>) -> Self {
        match v {
            Some(v) => self.num(k, v),
            None => self.null(k),
        }
    }

    #[must_use]
    pub fn bool(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }

    #[must_use]
    pub fn null(mut self, k: &str) -> Self {
        self.key(k);
        self.0.push_str("null");
        self
    }

    #[must_use]
    pub fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// JSON-lines sink; every line is flushed so a crashed run keeps its rows.
pub struct JsonOut {
    w: BufWriter<Box<dyn Write>>,
    path: String,
}

impl JsonOut {
    /// # Errors
    /// Creating the parent directory or the file.
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| BenchError::io(format!("create {}", dir.display()), e))?;
        }
        let f = File::create(path)
            .map_err(|e| BenchError::io(format!("create {}", path.display()), e))?;
        Ok(Self {
            w: BufWriter::new(Box::new(f)),
            path: path.display().to_string(),
        })
    }

    /// Lines to stdout (a child process reporting to its parent).
    #[must_use]
    pub fn stdout() -> Self {
        Self {
            w: BufWriter::new(Box::new(std::io::stdout())),
            path: "(stdout)".into(),
        }
    }

    /// Writes a line that is already JSON (forwarded from a child).
    ///
    /// # Errors
    /// Write errors.
    pub fn raw(&mut self, line: &str) -> Result<()> {
        writeln!(self.w, "{line}")
            .and_then(|()| self.w.flush())
            .map_err(|e| BenchError::io(format!("write {}", self.path), e))
    }

    /// # Errors
    /// Write errors.
    pub fn line(&mut self, obj: Obj) -> Result<()> {
        let s = obj.finish();
        writeln!(self.w, "{s}")
            .and_then(|()| self.w.flush())
            .map_err(|e| BenchError::io(format!("write {}", self.path), e))
    }

    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }
}

// ------------------------------------------------------------- numbers --

/// Latency in µs with sensible precision.
#[must_use]
pub fn us(ns: u64) -> String {
    let u = ns as f64 / 1000.0;
    if u < 10.0 {
        format!("{u:.2}")
    } else if u < 1000.0 {
        format!("{u:.1}")
    } else {
        format!("{u:.0}")
    }
}

/// Integer with thin thousands separators: 1 234 567.
#[must_use]
pub fn grouped(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    pub samples: u64,
}

impl Latency {
    #[must_use]
    pub fn of(r: &GroupResult) -> Self {
        let h = &r.hist;
        Self {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
            samples: h.len(),
        }
    }
}

// -------------------------------------------------------------- tables --

pub struct Row {
    pub engine: String,
    pub shape: String,
    pub n: usize,
    pub threads: usize,
    pub op: String,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub lat: Latency,
    /// Latency (ns) at `svg::QUANTILES`, then the max (for the plots).
    pub curve: Vec<u64>,
}

#[must_use]
pub fn ops_table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| engine | shape | n | threads | op | ops | ops/s | p50 µs | p99 µs | p99.9 µs | max µs |\n",
    );
    s.push_str("|---|---|--:|--:|---|--:|--:|--:|--:|--:|--:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.engine,
            r.shape,
            grouped(r.n as u64),
            r.threads,
            r.op,
            grouped(r.ops),
            grouped(r.ops_per_sec.round() as u64),
            us(r.lat.p50),
            us(r.lat.p99),
            us(r.lat.p999),
            us(r.lat.max),
        );
    }
    s
}

/// Per (engine, shape) numbers.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub engine: String,
    pub shape: String,
    pub n: usize,
    pub pool: Option<usize>,
    pub load_secs: f64,
    pub checkpoint_secs: f64,
    pub frames: Option<u64>,
    pub mean_fill: Option<f64>,
    pub cache_hits: Option<u64>,
    pub cache_misses: Option<u64>,
    pub restarts: Option<u64>,
    pub peak_rss: Option<u64>,
    pub base_rss: Option<u64>,
    pub bytes_per_key: Option<f64>,
    pub bytes_per_key_source: &'static str,
    /// Persistent engines, after the load's checkpoint: sum of the file
    /// sizes in the data directory, and the blocks allocated to them.
    pub disk_bytes: Option<u64>,
    pub disk_allocated: Option<u64>,
    pub wall_secs: f64,
    /// The engine keeps its data in files (the budget applies to holt in
    /// persistent mode only; in memory mode the backend is the data).
    pub persistent: bool,
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

fn mib(b: u64) -> String {
    format!("{:.0}", b as f64 / (1024.0 * 1024.0))
}

impl Summary {
    /// Peak RSS minus the RSS before the engine opened (the harness's own
    /// keys and values): the engine's memory at its peak.
    #[must_use]
    pub fn engine_rss(&self) -> Option<u64> {
        Some(self.peak_rss?.saturating_sub(self.base_rss?))
    }

    /// holt's memory budget for its pool in persistent mode: pool x
    /// 512 KiB x 1.1 + 64 MiB (issue 6: frames beyond the pool are
    /// evicted, so this holds whatever n is).
    #[must_use]
    pub fn budget(&self) -> Option<u64> {
        if !self.persistent {
            return None;
        }
        let pool = self.pool? as u64;
        Some(pool * (512 << 10) * 11 / 10 + (64 << 20))
    }

    #[must_use]
    pub fn hit_rate(&self) -> Option<f64> {
        match (self.cache_hits, self.cache_misses) {
            (Some(h), Some(m)) if h + m > 0 => Some(h as f64 / (h + m) as f64),
            _ => None,
        }
    }
}

#[must_use]
pub fn summary_table(rows: &[Summary]) -> String {
    let mut s = String::new();
    s.push_str(
        "| engine | shape | n | load s | ckpt s | frames | pool | fill % | cache hit % | \
         restarts | peak RSS MiB | (base MiB) | RSS - base vs budget MiB | bytes/key | wall s |\n",
    );
    s.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in rows {
        let vs_budget = match (r.engine_rss(), r.budget()) {
            (Some(used), Some(b)) => format!(
                "{} / {} {}",
                mib(used),
                mib(b),
                if used <= b { "ok" } else { "OVER" }
            ),
            (Some(used), None) => mib(used),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.engine,
            r.shape,
            grouped(r.n as u64),
            r.load_secs,
            r.checkpoint_secs,
            opt(r.frames, grouped),
            opt(r.pool, |p| grouped(p as u64)),
            opt(r.mean_fill, |f| format!("{:.1}", f * 100.0)),
            opt(r.hit_rate(), |h| format!("{:.2}", h * 100.0)),
            opt(r.restarts, grouped),
            opt(r.peak_rss, mib),
            opt(r.base_rss, mib),
            vs_budget,
            opt(r.bytes_per_key, |b| format!(
                "{b:.0} ({})",
                r.bytes_per_key_source
            )),
            r.wall_secs,
        );
    }
    s
}

// -------------------------------------------------------------- memory --

/// `(VmRSS, VmHWM)` in bytes, from `/proc/self/status`.
#[must_use]
pub fn rss() -> (Option<u64>, Option<u64>) {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The 1/5/15-minute load averages, from `/proc/loadavg`.
#[must_use]
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Resets the peak-RSS mark to the current RSS (Linux >= 4.0); best
/// effort. Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// One reopen of a persistent engine (`reopen` / `reopen_wal`).
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    pub engine: String,
    pub shape: String,
    pub n: usize,
    pub case: String,
    /// Keys written since the last checkpoint (the WAL tail to replay).
    pub wal_keys: u64,
    /// Bytes of `journal*.wal` files just before the open.
    pub wal_bytes: u64,
    /// Bytes of all files in the directory just before the open.
    pub disk_bytes: u64,
    pub close_ms: f64,
    pub open_ms: f64,
    pub first_get_ms: f64,
    /// Cold-cache gets after a clean reopen: ops/s and frames loaded.
    pub cold_ops_per_sec: Option<f64>,
    pub frame_loads: Option<u64>,
}

#[must_use]
pub fn recovery_table(rows: &[Recovery]) -> String {
    let mut s = String::new();
    s.push_str(
        "| engine | shape | n | case | WAL tail keys | WAL MiB | dir MiB | close ms | open ms | \
         first get ms | open + get ms | cold gets/s | frames loaded |\n",
    );
    s.push_str("|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {} | {} |",
            r.engine,
            r.shape,
            grouped(r.n as u64),
            r.case,
            grouped(r.wal_keys),
            r.wal_bytes as f64 / (1024.0 * 1024.0),
            r.disk_bytes as f64 / (1024.0 * 1024.0),
            r.close_ms,
            r.open_ms,
            r.first_get_ms,
            r.open_ms + r.first_get_ms,
            opt(r.cold_ops_per_sec, |v| grouped(v.round() as u64)),
            opt(r.frame_loads, grouped),
        );
    }
    s
}

/// `sync_commit_tN` rows beside the `fdatasync` baseline of the same
/// engine and shape; `None` if there are none.
#[must_use]
pub fn sync_table(rows: &[Row]) -> Option<String> {
    let sync: Vec<&Row> = rows
        .iter()
        .filter(|r| r.op.starts_with("sync_commit_t") || r.op == "fdatasync")
        .collect();
    if sync.is_empty() {
        return None;
    }
    let mut s = String::new();
    s.push_str(
        "| engine | shape | op | threads | ops/s | p50 µs | p99 µs | max µs | \
         x fdatasync rate |\n",
    );
    s.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|\n");
    for r in &sync {
        let base = sync
            .iter()
            .find(|b| b.op == "fdatasync" && b.engine == r.engine && b.shape == r.shape)
            .map(|b| b.ops_per_sec);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.engine,
            r.shape,
            r.op,
            r.threads,
            grouped(r.ops_per_sec.round() as u64),
            us(r.lat.p50),
            us(r.lat.p99),
            us(r.lat.max),
            opt(base.filter(|b| *b > 0.0), |b| format!(
                "{:.2}",
                r.ops_per_sec / b
            )),
        );
    }
    Some(s)
}

/// Drops the files under `dir` (recursively) from the OS page cache:
/// `fdatasync` (only clean pages can be dropped), then
/// `posix_fadvise(DONTNEED)`. Best effort: a file that cannot be opened is
/// skipped.
pub fn evict_page_cache(dir: &Path) {
    use std::os::fd::AsRawFd;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for ent in rd.flatten() {
            let Ok(md) = ent.metadata() else { continue };
            if md.is_dir() {
                stack.push(ent.path());
                continue;
            }
            let Ok(f) = File::open(ent.path()) else {
                continue;
            };
            let _ = f.sync_data();
            // Best effort; the return value only says whether the advice
            // was taken.
            let _ = advise_dontneed(f.as_raw_fd());
        }
    }
}

#[allow(unsafe_code)]
fn advise_dontneed(fd: std::os::fd::RawFd) -> i32 {
    // SAFETY: `fd` is an open descriptor owned by the caller's `File` for
    // the whole call; posix_fadvise only reads its arguments.
    unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) }
}

/// CPU time (user + system) this process has used so far, all threads,
/// in seconds (`getrusage(RUSAGE_SELF)`); `None` if the call fails.
#[must_use]
#[allow(unsafe_code)]
pub fn process_cpu_secs() -> Option<f64> {
    // SAFETY: `rusage` is plain data for which all-zero bytes are a valid
    // value; getrusage only writes into the struct, which outlives the
    // call.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `&mut ru` is a valid, writable `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// Sum of the sizes of the files under `dir` (recursively).
#[must_use]
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for ent in rd.flatten() {
            let Ok(md) = ent.metadata() else { continue };
            if md.is_dir() {
                stack.push(ent.path());
            } else {
                total += md.len();
            }
        }
    }
    total
}

/// Bytes allocated on disk under `dir` (recursively).
#[must_use]
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for ent in rd.flatten() {
            let Ok(md) = ent.metadata() else { continue };
            if md.is_dir() {
                stack.push(ent.path());
            } else {
                total += md.blocks() * 512;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_numbers() {
        let s = Obj::default()
            .str("a", "x\"y\n")
            .int("b", 3)
            .num("c", f64::NAN)
            .bool("d", true)
            .finish();
        assert_eq!(s, r#"{"a":"x\"y\n","b":3,"c":null,"d":true}"#);
        assert_eq!(Obj::default().finish(), "{}");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(999), "999");
        assert_eq!(us(1234), "1.23");
        assert_eq!(us(123_456), "123.5");
        let (r, h) = rss();
        assert!(r.is_some() && h.is_some());
    }

    /// The budget column: RSS - base against pool x 512 KiB x 1.1 + 64
    /// MiB, flagged when over.
    #[test]
    fn engine_rss_against_the_budget() {
        let mut r = Summary {
            engine: "holt".into(),
            pool: Some(128),
            peak_rss: Some(300 << 20),
            base_rss: Some(100 << 20),
            persistent: true,
            ..Summary::default()
        };
        assert_eq!(r.engine_rss(), Some(200 << 20));
        assert_eq!(r.budget(), Some((128 << 19) * 11 / 10 + (64 << 20)));
        assert!(summary_table(&[r.clone()]).contains("| 200 / 134 OVER |"));
        r.peak_rss = Some(230 << 20);
        assert!(summary_table(&[r.clone()]).contains("| 130 / 134 ok |"));
        r.persistent = false;
        assert!(
            summary_table(&[r]).contains("| 130 |"),
            "memory mode: no budget"
        );
    }
}
