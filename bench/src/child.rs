//! One process per engine (`--child ENGINE`), so that RSS, allocator state
//! and caches of one engine do not mix with another's.
//!
//! The parent re-executes this binary once per engine with the same
//! arguments plus `--child ENGINE --dir ROOT`; the child runs every
//! per-shape group of that engine and prints its JSON lines (the same
//! `group` / `summary` / `error` / `skipped` lines a single-process run
//! writes) to stdout, its progress to the inherited stderr. The parent
//! forwards each line to its JSON file and rebuilds its rows, summaries,
//! digests and recovery rows from them, so the tables, the digest
//! cross-check and the plots work the same either way.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::compare::DigestEntry;
use crate::error::{BenchError, Result};
use crate::jsonl::{self, Line};
use crate::report::{Latency, Recovery, Row, Summary};
use crate::{Collector, Plan};

/// Runs each engine of the plan in a child process, in order.
///
/// # Errors
/// Spawning a child or writing the JSON file; a child that fails is an
/// error line of the run, not an `Err`.
pub fn run_children(plan: &Plan<'_>, col: &mut Collector) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| BenchError::io("find current_exe", e))?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for kind in &plan.args.engines {
        let mut cmd = Command::new(&exe);
        cmd.args(&argv).arg("--child").arg(kind.name());
        if let Some(root) = &plan.root {
            cmd.arg("--dir").arg(root);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| {
            BenchError::io(
                format!("spawn {} --child {}", exe.display(), kind.name()),
                e,
            )
        })?;
        let errors_before = col.errors.len();
        let mut lines = 0;
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines() {
                let line =
                    line.map_err(|e| BenchError::io(format!("read child {}", kind.name()), e))?;
                match jsonl::parse(&line) {
                    Some(l) => {
                        col.json.raw(&line)?;
                        absorb(&l, col);
                        lines += 1;
                    }
                    // Not ours (a library printing to stdout): pass it on.
                    None => eprintln!("[{}] {line}", kind.name()),
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| BenchError::io(format!("wait for child {}", kind.name()), e))?;
        if !status.success() && col.errors.len() == errors_before {
            let msg = format!("child process exited with {status} after {lines} JSON lines");
            eprintln!("holt-bench: ERROR {}: {msg}", kind.name());
            col.errors.push(format!("{}: {msg}", kind.name()));
        }
    }
    Ok(())
}

/// Rebuilds the collector's records from one child line.
pub fn absorb(l: &Line, col: &mut Collector) {
    let engine = l.str("engine").to_string();
    let shape = l.str("shape").to_string();
    match l.str("type") {
        "group" => group(l, engine, shape, col),
        "summary" => col.summaries.push(summary(l, engine, shape)),
        "error" => col.errors.push(format!(
            "{engine} / {shape} / {}: {}",
            l.str("op"),
            l.str("error")
        )),
        "skipped" => col.notes.push(format!(
            "{engine} {shape}: {}: {}",
            l.str("ops"),
            l.str("reason")
        )),
        _ => {}
    }
}

fn int(l: &Line, k: &str) -> u64 {
    l.int(k).unwrap_or(0)
}

fn group(l: &Line, engine: String, shape: String, col: &mut Collector) {
    let op = l.str("op").to_string();
    let n = int(l, "n") as usize;
    let digest = u64::from_str_radix(l.str("digest").trim_start_matches("0x"), 16).unwrap_or(0);
    col.digests.push(DigestEntry {
        shape: shape.clone(),
        op: l.opt_str("digest_as").unwrap_or(&op).to_string(),
        engine: engine.clone(),
        digest,
    });
    let ops_per_sec = l.num("ops_per_sec").unwrap_or(0.0);
    if op == "reopen" || op == "reopen_wal" {
        col.recovery
            .push(recovery(l, &engine, &shape, n, op == "reopen", ops_per_sec));
    }
    col.rows.push(Row {
        engine,
        shape,
        n,
        threads: int(l, "threads") as usize,
        op,
        ops: int(l, "ops"),
        ops_per_sec,
        lat: Latency {
            p50: int(l, "p50_ns"),
            p99: int(l, "p99_ns"),
            p999: int(l, "p999_ns"),
            max: int(l, "max_ns"),
            mean: l.num("mean_ns").unwrap_or(0.0),
            samples: int(l, "samples"),
        },
        curve: l
            .str("lat_curve_ns")
            .split(',')
            .filter_map(|v| v.parse().ok())
            .collect(),
    });
}

fn recovery(
    l: &Line,
    engine: &str,
    shape: &str,
    n: usize,
    clean: bool,
    ops_per_sec: f64,
) -> Recovery {
    let x = |k: &str| l.num(k);
    Recovery {
        engine: engine.to_string(),
        shape: shape.to_string(),
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
        cold_ops_per_sec: clean.then_some(ops_per_sec),
        frame_loads: x("frame_loads").map(|v| v as u64),
    }
}

fn summary(l: &Line, engine: String, shape: String) -> Summary {
    Summary {
        engine,
        shape,
        n: int(l, "n") as usize,
        pool: l.int("pool_frames").map(|p| p as usize),
        load_secs: l.num("load_secs").unwrap_or(0.0),
        checkpoint_secs: l.num("checkpoint_secs").unwrap_or(0.0),
        frames: l.int("frames"),
        mean_fill: l.num("mean_fill"),
        cache_hits: l.int("cache_hits"),
        cache_misses: l.int("cache_misses"),
        restarts: l.int("optimistic_restarts"),
        peak_rss: l.int("peak_rss_bytes"),
        base_rss: l.int("base_rss_bytes"),
        bytes_per_key: l.num("bytes_per_key"),
        bytes_per_key_source: match l.str("bytes_per_key_source") {
            "disk" => "disk",
            "mem" => "mem",
            "est" => "est",
            "rss" => "rss",
            _ => "",
        },
        disk_bytes: l.int("disk_bytes"),
        disk_allocated: l.int("disk_allocated_bytes"),
        wall_secs: l.num("wall_secs").unwrap_or(0.0),
        persistent: l.str("mode") == "persistent",
    }
}
