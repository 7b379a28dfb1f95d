//! Prometheus text rendering of [`TreeStats`] (feature `metrics`).

use std::fmt::Write as _;

use crate::api::stats::{CheckpointerStats, TreeStats};

/// One metric: name, help text, Prometheus type, value.
type Metric = (&'static str, &'static str, &'static str, u64);

/// Renders `stats` in the Prometheus text exposition format.
///
/// Every metric takes three lines (`# HELP`, `# TYPE`, value). Checkpointer
/// counters appear only when [`TreeStats::checkpointer`] is `Some`.
#[must_use]
pub fn render_prometheus(stats: &TreeStats) -> String {
    let mut out = String::with_capacity(2048);
    for m in tree_metrics(stats) {
        push_metric(&mut out, m);
    }
    if let Some(c) = stats.checkpointer {
        for m in checkpointer_metrics(&c) {
            push_metric(&mut out, m);
        }
    }
    out
}

/// The always-present metrics, in contract order.
fn tree_metrics(s: &TreeStats) -> [Metric; 11] {
    const G: &str = "gauge";
    const C: &str = "counter";
    [
        (
            "holt_blob_count",
            "Blob frames reachable from the root.",
            G,
            u64::from(s.blob_count),
        ),
        (
            "holt_space_used_bytes",
            "Bytes in use across all frames.",
            G,
            s.total_space_used,
        ),
        (
            "holt_gap_space_bytes",
            "Free bytes inside used frame areas.",
            G,
            s.total_gap_space,
        ),
        (
            "holt_slots",
            "Node slots across all frames.",
            G,
            s.total_slots,
        ),
        (
            "holt_compactions",
            "Frame compactions so far.",
            G,
            s.total_compactions,
        ),
        (
            "holt_tombstones",
            "Tombstoned leaves (always 0).",
            G,
            s.total_tombstones,
        ),
        (
            "holt_bm_dirty_count",
            "Cached frames not yet written back.",
            G,
            as_u64(s.bm_dirty_count),
        ),
        (
            "holt_bm_pending_delete_count",
            "Frame deletes queued for the next checkpoint.",
            G,
            as_u64(s.bm_pending_delete_count),
        ),
        (
            "holt_bm_cache_hits_total",
            "Buffer-manager cache hits.",
            C,
            s.bm_cache_hits,
        ),
        (
            "holt_bm_cache_misses_total",
            "Buffer-manager cache misses.",
            C,
            s.bm_cache_misses,
        ),
        (
            "holt_bm_optimistic_restarts_total",
            "Optimistic read restarts.",
            C,
            s.bm_optimistic_restarts,
        ),
    ]
}

/// The background checkpointer counters, in contract order.
fn checkpointer_metrics(c: &CheckpointerStats) -> [Metric; 6] {
    const C: &str = "counter";
    [
        (
            "holt_checkpoint_rounds_attempted_total",
            "Checkpoint rounds started.",
            C,
            c.rounds_attempted,
        ),
        (
            "holt_checkpoint_rounds_succeeded_total",
            "Checkpoint rounds completed.",
            C,
            c.rounds_succeeded,
        ),
        (
            "holt_checkpoint_blobs_flushed_total",
            "Frames written by checkpoints.",
            C,
            c.blobs_flushed,
        ),
        (
            "holt_checkpoint_merges_total",
            "Child frames merged into parents.",
            C,
            c.merges_total,
        ),
        (
            "holt_checkpoint_truncates_total",
            "WAL releases after checkpoints.",
            C,
            c.truncates,
        ),
        (
            "holt_checkpoint_evictions_total",
            "Cold frames evicted.",
            C,
            c.evictions,
        ),
    ]
}

/// Widens a count; `usize` is at most 64 bits on every supported target.
fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn push_metric(out: &mut String, (name, help, kind, value): Metric) {
    // Writing to a `String` cannot fail.
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(checkpointer: Option<CheckpointerStats>) -> TreeStats {
        TreeStats {
            blob_count: 1,
            total_space_used: 45_088,
            total_gap_space: 3,
            total_slots: 2,
            total_compactions: 4,
            total_tombstones: 0,
            blobs: Vec::new(),
            bm_dirty_count: 5,
            bm_pending_delete_count: 6,
            bm_cache_hits: 7,
            bm_cache_misses: 8,
            bm_optimistic_restarts: 9,
            checkpointer,
        }
    }

    const BASE: [(&str, &str, &str); 11] = [
        ("holt_blob_count", "gauge", "1"),
        ("holt_space_used_bytes", "gauge", "45088"),
        ("holt_gap_space_bytes", "gauge", "3"),
        ("holt_slots", "gauge", "2"),
        ("holt_compactions", "gauge", "4"),
        ("holt_tombstones", "gauge", "0"),
        ("holt_bm_dirty_count", "gauge", "5"),
        ("holt_bm_pending_delete_count", "gauge", "6"),
        ("holt_bm_cache_hits_total", "counter", "7"),
        ("holt_bm_cache_misses_total", "counter", "8"),
        ("holt_bm_optimistic_restarts_total", "counter", "9"),
    ];

    fn check(text: &str, expected: &[(&str, &str, &str)]) {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), expected.len() * 3, "{text}");
        for (chunk, (name, kind, value)) in lines.chunks(3).zip(expected) {
            assert!(
                chunk[0].starts_with(&format!("# HELP {name} ")),
                "{}",
                chunk[0]
            );
            assert!(chunk[0].len() > format!("# HELP {name} ").len());
            assert_eq!(chunk[1], format!("# TYPE {name} {kind}"));
            assert_eq!(chunk[2], format!("{name} {value}"));
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn without_checkpointer() {
        check(&render_prometheus(&stats(None)), &BASE);
    }

    #[test]
    fn with_checkpointer() {
        let c = CheckpointerStats {
            rounds_attempted: 10,
            rounds_succeeded: 11,
            blobs_flushed: 12,
            merges_total: 13,
            truncates: 14,
            evictions: 15,
        };
        let mut expected = BASE.to_vec();
        expected.extend([
            ("holt_checkpoint_rounds_attempted_total", "counter", "10"),
            ("holt_checkpoint_rounds_succeeded_total", "counter", "11"),
            ("holt_checkpoint_blobs_flushed_total", "counter", "12"),
            ("holt_checkpoint_merges_total", "counter", "13"),
            ("holt_checkpoint_truncates_total", "counter", "14"),
            ("holt_checkpoint_evictions_total", "counter", "15"),
        ]);
        check(&render_prometheus(&stats(Some(c))), &expected);
    }
}
