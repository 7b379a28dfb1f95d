//! Markdown tables of the `checkpoint` scenario.

use std::fmt::Write as _;

use super::{Outcome, Raw, MIB};
use crate::report::{grouped, us};

/// The raw `pwrite` bandwidth of N: the mean of its before / after runs.
fn raw_ref(out: &Outcome, n: usize) -> Option<f64> {
    let v: Vec<f64> = out
        .raws
        .iter()
        .filter(|r| r.target == n && r.method == "pwrite")
        .map(Raw::mib_s)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn pct(v: f64, base: Option<f64>) -> String {
    base.filter(|b| *b > 0.0)
        .map_or_else(|| "-".into(), |b| format!("{:.0}", 100.0 * v / b))
}

fn io_mib(b: Option<u64>) -> String {
    b.map_or_else(|| "-".into(), |b| format!("{:.0}", b as f64 / MIB))
}

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(" / ")
}

/// Per N: the raw writes and the timed rounds of each driver, with MiB/s
/// as a percentage of the raw `pwrite` reference.
#[must_use]
pub fn bandwidth_table(out: &Outcome) -> String {
    let mut s = String::new();
    s.push_str(
        "| N | what | driver | frames | MiB | s | MiB/s | % of raw pwrite | MiB to block layer |\n",
    );
    s.push_str("|--:|---|---|--:|--:|--:|--:|--:|--:|\n");
    for &(n, _) in &out.walls {
        let base = raw_ref(out, n);
        let raw_row = |s: &mut String, when: &str| {
            for r in out.raws.iter().filter(|r| r.target == n && r.when == when) {
                let _ = writeln!(
                    s,
                    "| {n} | raw {} ({}){} | - | {} | {:.0} | {:.3} | {:.0} | {} | {} |",
                    r.method,
                    r.when,
                    if r.direct { "" } else { " (NOT O_DIRECT)" },
                    r.frames,
                    r.mib(),
                    r.secs,
                    r.mib_s(),
                    pct(r.mib_s(), base),
                    io_mib(r.io_bytes),
                );
            }
        };
        raw_row(&mut s, "before");
        for r in out.rounds.iter().filter(|r| r.target == n) {
            for (k, p) in r.reps.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "| {n} | holt checkpoint() #{} | {}{} | {} | {:.0} | {:.3} | {:.0} | {} | {} |",
                    k + 1,
                    r.reported,
                    if r.direct_io { "" } else { " (buffered)" },
                    p.frames,
                    p.mib(),
                    p.secs,
                    p.mib_s(),
                    pct(p.mib_s(), base),
                    io_mib(p.io_bytes),
                );
            }
        }
        raw_row(&mut s, "after");
    }
    s
}

/// Put latency on a second thread: idle period, then during a round.
#[must_use]
pub fn latency_table(out: &Outcome) -> String {
    let mut s = String::new();
    s.push_str(
        "| N | driver | frames | idle s | idle puts | idle p50 µs | idle p99 µs | round s | \
         round puts | round p50 µs | round p99 µs | p99 ratio | corrected p99 µs | corrected \
         ratio | longest put ms | at ms | WAL MiB at cut |\n",
    );
    s.push_str("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let ratio = |a: u64, b: u64| {
        if b > 0 {
            format!("{:.1}", a as f64 / b as f64)
        } else {
            "-".into()
        }
    };
    for r in &out.rounds {
        let l = &r.lat;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {:.1} | \
             {:+.0} | {:.1} |",
            r.target,
            r.reported,
            l.frames,
            l.idle_secs,
            grouped(l.idle.puts),
            us(l.idle.p50),
            us(l.idle.p99),
            l.round_secs,
            grouped(l.round.puts),
            us(l.round.p50),
            us(l.round.p99),
            ratio(l.round.p99, l.idle.p99),
            us(l.round_co.p99),
            ratio(l.round_co.p99, l.idle.p99),
            l.longest_ms,
            l.longest_at_ms,
            l.wal_bytes as f64 / MIB,
        );
    }
    s
}

/// How each tree was built, and sanity numbers.
#[must_use]
pub fn setup_table(out: &Outcome) -> String {
    let mut s = String::new();
    s.push_str(
        "| N | driver | keys | frames | pool | O_DIRECT | load s | stats s | 1st ckpt s | \
         dirtying puts | dirty after | page-cache dirty MiB | dir MiB | cache misses | \
         peak RSS MiB | tree wall s |\n",
    );
    s.push_str("|--:|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in &out.rounds {
        let mib = |b: u64| format!("{:.0}", b as f64 / MIB);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.3} | {} | {} | {} | {} -> {} | {} \
             | {} | {:.1} |",
            r.target,
            r.reported,
            grouped(r.keys as u64),
            r.blob_count,
            r.pool,
            if r.direct_io { "yes" } else { "no" },
            r.load_secs,
            r.load_stats_secs,
            r.first_ckpt_secs,
            list(&r.reps, |p| grouped(p.dirty_puts as u64)),
            list(&r.reps, |p| p.dirty_after.to_string()),
            list(&r.reps, |p| p.page_cache_dirty_kib.map_or_else(
                || "-".into(),
                |k| format!("{:.0}", k as f64 / 1024.0)
            )),
            mib(r.first_dir_bytes),
            list(&r.reps, |p| mib(p.dir_bytes)),
            r.cache_misses,
            r.peak_rss.map_or_else(|| "-".into(), mib),
            r.wall_secs,
        );
    }
    s
}
