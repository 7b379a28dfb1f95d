#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `kill -9` at random instants (DESIGN.md §11 "process killed at any
//! instant": reopen yields a prefix of the acknowledged ops, all of them
//! with sync on; §9 "second process opens the same directory: refused").
//!
//! The test binary re-executes itself as a child (`--exact child_writer`)
//! with `HOLT_KILL9_CHILD=<mode>:<driver>:<sync 0|1>:<cycle>:<seed>:<dir>`
//! set; every scenario runs once per I/O driver (`<test>::sync`,
//! `<test>::uring`), the child and the parent's reopen on that driver. In
//! `write` mode the child opens the tree in `<dir>` (the same directory in
//! every cycle), runs a deterministic sequence of ops derived from
//! `(seed, cycle, i)` and prints `ACK <i>` after op `i` returns `Ok`
//! (`CKPT <n>` after a `checkpoint()` covering the first `n` ops). The
//! parent reads those lines, sends SIGKILL after a random 2–100 ms, reopens
//! the directory and checks the recovered state against the ops it can
//! regenerate: it must equal the state before the cycle plus the first
//! `p` ops of the cycle, with `p` = acked or acked + 1 (the op in flight)
//! when syncing on commit, and `checkpointed <= p <= acked + 1` without.
//! Values are unique per `(cycle, i)`, so a resurrected or garbage value
//! fails the check too.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::workload::dump_plain as dump;
use common::{builder, per_driver, Driver};
use holt::{CheckpointConfig, Error, Tree, TreeBuilder};

const ENV: &str = "HOLT_KILL9_CHILD";
/// Ops a child runs per cycle before it idles (until it is killed).
const MAX_OPS: u64 = 4000;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Forced rename; a missing source is a no-op (`NotFound`).
    Rename(Vec<u8>, Vec<u8>),
    Txn(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>),
}

fn key(h: u64) -> Vec<u8> {
    let n = h % 160;
    format!("d{}/k{n:03}", n % 5).into_bytes()
}

fn value(seed: u64, cycle: u64, i: u64, part: u64) -> Vec<u8> {
    let h = mix(seed ^ (cycle << 40) ^ (i << 8) ^ part ^ 0x5555);
    let len = if h % 50 == 0 {
        20_000
    } else {
        10 + (h % 400) as usize
    };
    let mut v = format!("s{seed}c{cycle}i{i}p{part}:").into_bytes();
    let fill = b'a' + (h % 26) as u8;
    v.resize(len.max(v.len()), fill);
    v
}

/// Op `i` of `cycle`: a pure function, so the parent can regenerate it.
fn op(seed: u64, cycle: u64, i: u64) -> Op {
    let h = mix(seed ^ (cycle << 40) ^ i);
    let (h1, h2, h3) = (mix(h ^ 1), mix(h ^ 2), mix(h ^ 3));
    match h % 20 {
        0 | 1 => Op::Delete(key(h1)),
        2 => Op::Rename(key(h1), key(h2)),
        3 => Op::Txn(
            key(h1),
            value(seed, cycle, i, 1),
            key(h2),
            value(seed, cycle, i, 2),
            key(h3),
        ),
        _ => Op::Put(key(h1), value(seed, cycle, i, 0)),
    }
}

fn apply(m: &mut Model, op: &Op) {
    match op {
        Op::Put(k, v) => {
            m.insert(k.clone(), v.clone());
        }
        Op::Delete(k) => {
            m.remove(k);
        }
        Op::Rename(s, d) => {
            if s != d {
                if let Some(v) = m.remove(s) {
                    m.insert(d.clone(), v);
                }
            }
        }
        Op::Txn(a, va, b, vb, c) => {
            // Applied in the order queued: put a, put b, delete c.
            m.insert(a.clone(), va.clone());
            m.insert(b.clone(), vb.clone());
            m.remove(c);
        }
    }
}

fn run(t: &Tree, op: &Op) -> holt::Result<()> {
    match op {
        Op::Put(k, v) => t.put(k, v).map(|_| ()),
        Op::Delete(k) => t.delete(k).map(|_| ()),
        Op::Rename(s, d) => match t.rename(s, d, true) {
            Err(Error::NotFound) => Ok(()),
            other => other,
        },
        Op::Txn(a, va, b, vb, c) => t.txn(|x| {
            x.put(a, va);
            x.put(b, vb);
            x.delete(c);
        }),
    }
}

/// Per-cycle tree configuration, so kills land in every code path:
/// background checkpointer, manual checkpoints, no checkpoints, a tiny
/// buffer pool.
fn child_builder(dir: &Path, d: Driver, sync: bool, cycle: u64) -> (TreeBuilder, bool) {
    let mut b = builder(dir, d).wal_sync_on_commit(sync);
    let mut manual = false;
    match cycle % 4 {
        0 => {
            b = b.checkpoint(CheckpointConfig {
                idle_interval: Duration::from_millis(5),
                dirty_blob_threshold: 2,
                ..CheckpointConfig::enabled()
            });
        }
        1 => manual = true,
        2 => b = b.buffer_pool_size(2),
        _ => {}
    }
    (b, manual)
}

// ------------------------------------------------------------ the child

/// The child process's entry point; returns at once in a normal test run
/// (the environment variable is not set).
#[test]
fn child_writer() {
    let Ok(spec) = std::env::var(ENV) else { return };
    let mut parts = spec.splitn(6, ':');
    let mode = parts.next().unwrap().to_string();
    let d = Driver::from_name(parts.next().unwrap()).unwrap();
    let sync = parts.next().unwrap() == "1";
    let cycle: u64 = parts.next().unwrap().parse().unwrap();
    let seed: u64 = parts.next().unwrap().parse().unwrap();
    let dir = parts.next().unwrap().to_string();
    let out = std::io::stdout();
    let say = |line: String| {
        let mut o = out.lock();
        writeln!(o, "{line}").unwrap();
        o.flush().unwrap();
    };
    match mode.as_str() {
        "hold" => {
            let _t = builder(Path::new(&dir), d).open().unwrap();
            say("READY".into());
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        "write" => {
            let (b, manual) = child_builder(Path::new(&dir), d, sync, cycle);
            let t = b
                .open()
                .unwrap_or_else(|e| panic!("child open failed: {e:?}"));
            say("OPEN".into());
            for i in 0..MAX_OPS {
                let o = op(seed, cycle, i);
                run(&t, &o).unwrap_or_else(|e| panic!("child op {i} {o:?} failed: {e:?}"));
                say(format!("ACK {i}"));
                if manual && i % 40 == 39 {
                    t.checkpoint()
                        .unwrap_or_else(|e| panic!("child checkpoint failed: {e:?}"));
                    say(format!("CKPT {}", i + 1));
                }
            }
            say("IDLE".into());
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

// ------------------------------------------------------------ the parent

fn spawn_child(spec: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--nocapture",
            "--include-ignored",
        ])
        .env(ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What the child reported before it died.
#[derive(Debug, Default)]
struct Report {
    opened: bool,
    /// Ops acknowledged (`ACK 0 ..= ACK acked-1`).
    acked: u64,
    /// Ops covered by the last successful manual checkpoint.
    checkpointed: u64,
    idle: bool,
}

fn read_report(child: &mut Child) -> (mpsc::Receiver<()>, std::thread::JoinHandle<Report>) {
    let stdout = child.stdout.take().unwrap();
    let (opened_tx, opened_rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut r = Report::default();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.strip_prefix("ACK ") {
                let i: u64 = i.trim().parse().unwrap();
                assert_eq!(i, r.acked, "ACKs out of order");
                r.acked = i + 1;
            } else if let Some(n) = line.strip_prefix("CKPT ") {
                r.checkpointed = n.trim().parse().unwrap();
            } else if line == "OPEN" || line == "READY" {
                r.opened = true;
                let _ = opened_tx.send(());
            } else if line == "IDLE" {
                r.idle = true;
            }
        }
        r
    });
    (opened_rx, h)
}

fn stderr_of(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    })
}

struct Totals {
    killed_before_open: u64,
    killed_while_writing: u64,
    acked_ops: u64,
    in_flight_recovered: u64,
}

/// `cycles` kill-and-reopen rounds on one directory.
fn kill_loop(d: Driver, sync: bool, cycles: u64, seed: u64) -> Totals {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut base = Model::new();
    let mut delays = mix(seed ^ 0xDE1A);
    let mut tot = Totals {
        killed_before_open: 0,
        killed_while_writing: 0,
        acked_ops: 0,
        in_flight_recovered: 0,
    };
    for cycle in 0..cycles {
        let spec = format!(
            "write:{}:{}:{cycle}:{seed}:{}",
            d.name(),
            u8::from(sync),
            dir.path().display()
        );
        let mut child = spawn_child(&spec);
        let (_opened, reader) = read_report(&mut child);
        let errs = stderr_of(&mut child);
        delays = mix(delays);
        std::thread::sleep(Duration::from_millis(2 + delays % 99));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let rep = reader.join().unwrap();
        let stderr = errs.join().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "cycle {cycle}: child did not die by SIGKILL ({status:?}); report {rep:?}; stderr:\n{stderr}"
        );
        if !rep.opened {
            tot.killed_before_open += 1;
        } else if !rep.idle {
            tot.killed_while_writing += 1;
        }
        tot.acked_ops += rep.acked;
        // Reopen (the same configuration) and find the recovered prefix.
        let t = builder(dir.path(), d).wal_sync_on_commit(sync).open().unwrap_or_else(|e| {
            panic!("cycle {cycle} (sync={sync} seed={seed}): reopen after kill -9 failed: {e:?}; report {rep:?}")
        });
        let got =
            dump(&t).unwrap_or_else(|e| panic!("cycle {cycle}: reads after reopen fail: {e:?}"));
        let lo = if sync { rep.acked } else { rep.checkpointed };
        let hi = (rep.acked + 1).min(MAX_OPS);
        let mut m = base.clone();
        let mut found = None;
        for p in 0..=hi {
            if p > 0 {
                apply(&mut m, &op(seed, cycle, p - 1));
            }
            if p >= lo && m == got {
                found = Some(p);
            }
        }
        let Some(p) = found else {
            // Name the first difference against the lowest allowed state.
            let mut want = base.clone();
            for i in 0..lo {
                apply(&mut want, &op(seed, cycle, i));
            }
            let first = want
                .iter()
                .find(|(k, v)| got.get(*k) != Some(*v))
                .map(|(k, v)| {
                    format!(
                        "{}: want {:?} got {:?}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(&v[..v.len().min(24)]),
                        got.get(k)
                            .map(|g| String::from_utf8_lossy(&g[..g.len().min(24)]).into_owned())
                    )
                })
                .or_else(|| {
                    got.keys()
                        .find(|k| !want.contains_key(*k))
                        .map(|k| format!("extra {}", String::from_utf8_lossy(k)))
                });
            panic!(
                "cycle {cycle} (sync={sync} seed={seed}): recovered state is not base + a prefix of {lo}..={hi} ops \
                 (acked {}, checkpointed {}); first difference vs {lo} ops: {first:?}",
                rep.acked, rep.checkpointed
            );
        };
        if p > rep.acked {
            tot.in_flight_recovered += 1;
        }
        base = got;
        if cycle % 5 == 4 {
            t.checkpoint().unwrap();
        }
        drop(t);
    }
    eprintln!(
        "kill -9 on {} sync={sync}: {cycles} cycles ({} killed before open, {} while writing), {} acked ops, {} in-flight ops recovered, {:.1?}",
        d.name(),
        tot.killed_before_open,
        tot.killed_while_writing,
        tot.acked_ops,
        tot.in_flight_recovered,
        t0.elapsed()
    );
    tot
}

/// 100 kill cycles with `wal_sync_on_commit(true)`: every acknowledged op
/// survives (`p >= acked`), nothing beyond the one op in flight appears.
/// Fails if `put` acknowledged before its WAL record reached the file (a
/// kill drops the user-space group-commit buffer, the OS keeps the rest),
/// if recovery cut valid records as a torn tail, replayed a txn partially, or if a kill during a background
/// checkpoint (cycles 0, 4, 8, …) left a manifest whose cut skips records
/// its frames do not hold.
fn kill9_sync_on_commit_keeps_every_acknowledged_op(d: Driver) {
    let tot = kill_loop(d, true, 100, 11);
    assert!(
        tot.killed_while_writing >= 10,
        "too few kills landed mid-write: {}",
        tot.killed_while_writing
    );
}

/// 100 kill cycles with `wal_sync_on_commit(false)`: the recovered state is
/// a prefix of the ops, at least everything a returned `checkpoint()`
/// covered, and every value is one the child wrote. Fails if replay went
/// past a gap, if a checkpoint round's manifest became visible before its
/// frames were written, or if a value from a torn buffer drain appeared.
fn kill9_buffered_wal_recovers_a_prefix(d: Driver) {
    let tot = kill_loop(d, false, 100, 12);
    assert!(tot.killed_while_writing + tot.killed_before_open > 0);
}

/// While a child process holds the tree open, `Tree::open` in this
/// process fails with `Error::Locked` naming the directory; once the child
/// is killed, the open succeeds. Fails if the lock were advisory only
/// inside one process (a `static` set of open directories), or if it were
/// a lock *file* whose existence is checked (a killed holder would leave
/// it behind and the reopen would be refused forever).
fn second_process_is_locked_out_until_the_holder_dies(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    builder(dir.path(), d)
        .open()
        .unwrap()
        .put(b"k", b"v")
        .unwrap();
    let mut child = spawn_child(&format!("hold:{}:0:0:0:{}", d.name(), dir.path().display()));
    let (opened, reader) = read_report(&mut child);
    let errs = stderr_of(&mut child);
    if opened.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "holder child never became ready; stderr:\n{}",
            errs.join().unwrap()
        );
    }
    match builder(dir.path(), d).open() {
        Err(Error::Locked { dir: locked }) => assert_eq!(locked, dir.path()),
        Err(e) => panic!("expected Error::Locked, got {e:?}"),
        Ok(_) => panic!("a second process opened a directory another process holds"),
    }
    assert!(matches!(
        builder(dir.path(), d).open(),
        Err(Error::Locked { .. })
    ));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    let _ = reader.join();
    let _ = errs.join();
    let t = builder(dir.path(), d)
        .open()
        .expect("open after the holder was killed");
    assert_eq!(t.get(b"k").unwrap(), Some(b"v".to_vec()));
}

per_driver!(
    kill9_sync_on_commit_keeps_every_acknowledged_op,
    kill9_buffered_wal_recovers_a_prefix,
    second_process_is_locked_out_until_the_holder_dies,
);
