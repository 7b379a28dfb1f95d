//! The cross-engine views of a run: one comparison table per shape (ops/s
//! and p99 per engine, holt against the best peer and the reference,
//! bytes on disk per key, peak RSS) and the digest cross-check.

use std::fmt::Write as _;

use crate::report::{grouped, us, Row, Summary};

/// Engines that are not peers.
fn is_peer(engine: &str) -> bool {
    engine != "holt" && engine != "reference"
}

/// `holt / best` with the best peer's name; `higher`: bigger is better.
fn vs_best<'a>(
    holt: Option<f64>,
    peers: impl Iterator<Item = (&'a str, f64)>,
    higher: bool,
) -> String {
    let best =
        peers
            .filter(|(_, v)| *v > 0.0)
            .fold(None, |b: Option<(&str, f64)>, (e, v)| match b {
                Some((_, bv)) if (higher && bv >= v) || (!higher && bv <= v) => b,
                _ => Some((e, v)),
            });
    match (holt, best) {
        (Some(h), Some((e, b))) if h > 0.0 => format!("{:.2} ({e})", h / b),
        _ => "-".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// Per shape: ops/s (p99 µs) of every engine for every op group, the
/// ratios, then bytes/key and peak RSS.
#[must_use]
pub fn comparison_tables(rows: &[Row], summaries: &[Summary], engines: &[String]) -> String {
    let mut shapes: Vec<&str> = Vec::new();
    for r in rows {
        if !shapes.contains(&r.shape.as_str()) {
            shapes.push(&r.shape);
        }
    }
    let mut s = String::new();
    for shape in shapes {
        let n = rows.iter().find(|r| r.shape == shape).map_or(0, |r| r.n);
        let _ = writeln!(
            s,
            "\n### {shape}, n = {}: ops/s (p99 µs) per engine\n",
            grouped(n as u64)
        );
        s.push_str("| op |");
        for e in engines {
            let _ = write!(s, " {e} |");
        }
        s.push_str(" holt ÷ best peer | holt ÷ reference |\n|---|");
        for _ in engines {
            s.push_str("--:|");
        }
        s.push_str("--:|--:|\n");
        let mut ops: Vec<&str> = Vec::new();
        for r in rows.iter().filter(|r| r.shape == shape) {
            if !ops.contains(&r.op.as_str()) {
                ops.push(&r.op);
            }
        }
        for op in ops {
            let find = |e: &str| {
                rows.iter()
                    .find(|r| r.shape == shape && r.op == op && r.engine == e)
            };
            let _ = write!(s, "| {op} |");
            for e in engines {
                match find(e) {
                    Some(r) => {
                        let _ = write!(
                            s,
                            " {} ({}) |",
                            grouped(r.ops_per_sec.round() as u64),
                            us(r.lat.p99)
                        );
                    }
                    None => s.push_str(" - |"),
                }
            }
            let speed = |e: &str| find(e).map(|r| r.ops_per_sec);
            if op == "fdatasync" {
                // The disk's floor, not an engine property.
                s.push_str(" - | - |\n");
                continue;
            }
            let peers = engines
                .iter()
                .filter(|e| is_peer(e))
                .filter_map(|e| speed(e).map(|v| (e.as_str(), v)));
            let _ = writeln!(
                s,
                " {} | {} |",
                vs_best(speed("holt"), peers, true),
                ratio(speed("holt"), speed("reference"))
            );
        }
        let sum = |e: &str| summaries.iter().find(|x| x.shape == shape && x.engine == e);
        let metric_row = |s: &mut String,
                          label: &str,
                          f: &dyn Fn(&Summary) -> Option<f64>,
                          show: &dyn Fn(&Summary, f64) -> String| {
            let _ = write!(s, "| {label} |");
            for e in engines {
                match sum(e).and_then(|x| f(x).map(|v| (x, v))) {
                    Some((x, v)) => {
                        let _ = write!(s, " {} |", show(x, v));
                    }
                    None => s.push_str(" - |"),
                }
            }
            let get = |e: &str| sum(e).and_then(f);
            let peers = engines
                .iter()
                .filter(|e| is_peer(e))
                .filter_map(|e| get(e).map(|v| (e.as_str(), v)));
            let _ = writeln!(
                s,
                " {} | {} |",
                vs_best(get("holt"), peers, false),
                ratio(get("holt"), get("reference"))
            );
        };
        metric_row(&mut s, "bytes/key", &|x| x.bytes_per_key, &|x, v| {
            format!("{v:.0} ({})", x.bytes_per_key_source)
        });
        metric_row(
            &mut s,
            "bytes/key allocated",
            &|x| x.disk_allocated.map(|b| b as f64 / x.n.max(1) as f64),
            &|_, v| format!("{v:.0}"),
        );
        metric_row(
            &mut s,
            "peak RSS MiB",
            &|x| x.peak_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
            &|_, v| format!("{v:.0}"),
        );
        metric_row(
            &mut s,
            "load + ckpt s",
            &|x| Some(x.load_secs + x.checkpoint_secs),
            &|_, v| format!("{v:.2}"),
        );
    }
    s.push_str(
        "\nCells: ops/s, p99 latency in µs in brackets. holt ÷ best peer: holt's ops/s over the \
         fastest peer's (above 1: holt is faster); for bytes/key, peak RSS and load time, holt's \
         value over the smallest peer's (below 1: holt is smaller / faster). bytes/key: sum of the file \
         sizes in the engine's directory after the load's checkpoint (disk), or the reference's \
         estimated heap (est); bytes/key allocated: the blocks those files occupy (du), which \
         leaves out preallocated but unwritten space (fjall's 64 MiB journal, redb's sparse \
         regions) and counts preallocated blocks (RocksDB's WAL). peak RSS: each engine runs in its own process (keys and values of the harness \
         included, the same for all).\n",
    );
    s
}

/// One digest of an op group.
#[derive(Clone, Debug)]
pub struct DigestEntry {
    pub shape: String,
    pub op: String,
    pub engine: String,
    pub digest: u64,
}

/// Compares every engine's digest of each (shape, op group) with holt's
/// (or, without holt, the first engine's). Returns the number compared and
/// the mismatches.
#[must_use]
pub fn cross_check(digests: &[DigestEntry]) -> (usize, Vec<String>) {
    let mut compared = 0;
    let mut bad = Vec::new();
    for d in digests {
        let same = |x: &&DigestEntry| x.shape == d.shape && x.op == d.op;
        let base = digests
            .iter()
            .filter(same)
            .find(|x| x.engine == "holt")
            .or_else(|| digests.iter().find(same));
        let Some(base) = base else { continue };
        if std::ptr::eq(base, d) {
            continue;
        }
        compared += 1;
        if base.digest != d.digest {
            bad.push(format!(
                "{} {}: {} digest {:#018x} != {} digest {:#018x}",
                d.shape, d.op, base.engine, base.digest, d.engine, d.digest
            ));
        }
    }
    (compared, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Latency;

    fn row(engine: &str, op: &str, ops_per_sec: f64) -> Row {
        Row {
            engine: engine.into(),
            shape: "fs".into(),
            n: 1000,
            threads: 1,
            op: op.into(),
            ops: 10,
            ops_per_sec,
            lat: Latency {
                p99: 2500,
                ..Latency::default()
            },
            curve: Vec::new(),
        }
    }

    #[test]
    fn ratios_against_the_best_peer() {
        let rows = vec![
            row("holt", "get", 300.0),
            row("reference", "get", 600.0),
            row("lmdb", "get", 200.0),
            row("rocksdb", "get", 100.0),
            row("lmdb", "scan100", 5.0),
        ];
        let sums = vec![
            Summary {
                engine: "holt".into(),
                shape: "fs".into(),
                bytes_per_key: Some(50.0),
                bytes_per_key_source: "disk",
                ..Summary::default()
            },
            Summary {
                engine: "lmdb".into(),
                shape: "fs".into(),
                bytes_per_key: Some(100.0),
                bytes_per_key_source: "disk",
                ..Summary::default()
            },
            Summary {
                engine: "rocksdb".into(),
                shape: "fs".into(),
                bytes_per_key: Some(40.0),
                bytes_per_key_source: "disk",
                ..Summary::default()
            },
        ];
        let engines: Vec<String> = ["holt", "reference", "lmdb", "rocksdb"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        let t = comparison_tables(&rows, &sums, &engines);
        assert!(
            t.contains(
                "| get | 300 (2.50) | 600 (2.50) | 200 (2.50) | 100 (2.50) | 1.50 (lmdb) | 0.50 |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| scan100 | - | - | 5 (2.50) | - | - | - |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| bytes/key | 50 (disk) | - | 100 (disk) | 40 (disk) | 1.25 (rocksdb) | - |"
            ),
            "{t}"
        );
    }

    #[test]
    fn cross_check_against_holt() {
        let d = |engine: &str, op: &str, digest: u64| DigestEntry {
            shape: "kv".into(),
            op: op.into(),
            engine: engine.into(),
            digest,
        };
        let (n, bad) = cross_check(&[
            d("reference", "get", 1),
            d("holt", "get", 2),
            d("lmdb", "get", 2),
            d("lmdb", "scan100", 7),
            d("redb", "scan100", 7),
        ]);
        assert_eq!(n, 3);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("holt digest") && bad[0].contains("reference digest"));
    }
}
