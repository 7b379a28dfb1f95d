#![allow(clippy::unwrap_used, clippy::expect_used)]
// getrusage for CPU time is the only unsafe: plain FFI into a local.
#![allow(unsafe_code)]
//! Registered (fixed) buffers vs plain ones: MB/s and CPU time of one
//! `write_batch` of 64 × 512 KiB `O_DIRECT` writes, and of one
//! `read_batch` of the same 64 frames, median of several runs.
//!
//! ```sh
//! cargo run --release -p holt-backend-uring --example fixed_buffers -- [DIR] [RUNS]
//! ```
//!
//! `DIR` (default `/tmp`) must accept `O_DIRECT` (ext4, xfs; not tmpfs).
//! Three variants run interleaved, so drift in the device hits all alike:
//!
//! * `fixed`: buffers from the driver's registered arena, written with
//!   `WRITE_FIXED` / read with `READ_FIXED`;
//! * `arena-plain`: the very same memory through a driver with registered
//!   buffers off (plain `WRITE`/`READ`): isolates the op, not the memory;
//! * `heap-plain`: `AlignedBuf::new` buffers, plain ops (what the engine
//!   does today).
//!
//! All variants use the same preallocated file (each through its own
//! ring), written once before timing, so no run allocates blocks and all
//! hit the same disk blocks. Only `write_batch` / `read_batch` are timed (no
//! fdatasync). CPU is user + system time of the whole process (io-wq
//! workers included) per run.

use std::path::PathBuf;
use std::time::Instant;

use holt_backend_sync::{AlignedBuf, IoDriver, IoFile, OpenOptions};
use holt_backend_uring::{BufferRegistration, UringDriver, UringFile, SLOT_BYTES};

const FRAMES: usize = 64;
const OPTS: OpenOptions = OpenOptions {
    create: true,
    direct: true,
};

/// User + system CPU time of this process so far, in microseconds.
fn cpu_us() -> f64 {
    // SAFETY: an all-zero `rusage` is a valid value for getrusage to
    // overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` for the call's duration.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Variant {
    name: &'static str,
    file: UringFile,
    bufs: Vec<AlignedBuf>,
    write_mbs: Vec<f64>,
    write_cpu: Vec<f64>,
    read_mbs: Vec<f64>,
    read_cpu: Vec<f64>,
}

impl Variant {
    fn run(&mut self) {
        let bytes = (FRAMES * SLOT_BYTES) as f64;
        let writes: Vec<(u64, &[u8])> = self
            .bufs
            .iter()
            .zip(0u64..)
            .map(|(b, i)| (i * SLOT_BYTES as u64, &b[..]))
            .collect();
        let (c0, t0) = (cpu_us(), Instant::now());
        self.file.write_batch(&writes).unwrap();
        let (dt, dc) = (t0.elapsed().as_secs_f64(), cpu_us() - c0);
        self.write_mbs.push(bytes / 1e6 / dt);
        self.write_cpu.push(dc);
        let mut reads: Vec<(u64, &mut [u8])> = self
            .bufs
            .iter_mut()
            .zip(0u64..)
            .map(|(b, i)| (i * SLOT_BYTES as u64, &mut b[..]))
            .collect();
        let (c0, t0) = (cpu_us(), Instant::now());
        self.file.read_batch(&mut reads).unwrap();
        let (dt, dc) = (t0.elapsed().as_secs_f64(), cpu_us() - c0);
        self.read_mbs.push(bytes / 1e6 / dt);
        self.read_cpu.push(dc);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "/tmp".into()));
    let runs: usize = args.next().map_or(15, |r| r.parse().unwrap());
    let d = match UringDriver::probe() {
        Ok(d) => d,
        Err(e) => {
            println!("io_uring unavailable: {e}");
            return;
        }
    };
    let plain = d.with_registered_buffers(false);
    let scratch = tempfile::tempdir_in(&dir).unwrap();
    let fill = |b: &mut AlignedBuf, i: usize| {
        for (j, w) in b.chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&(((i as u64) << 32) | j as u64).to_le_bytes());
        }
    };
    let fixed_bufs: Vec<AlignedBuf> = (0..FRAMES)
        .map(|i| {
            let mut b = d.alloc_buffer(SLOT_BYTES).unwrap();
            fill(&mut b, i);
            b
        })
        .collect();
    if !fixed_bufs[0].is_from_arena() {
        println!(
            "no registered arena here ({:?}); nothing to compare",
            UringDriver::arena_info()
        );
        return;
    }
    let heap_bufs: Vec<AlignedBuf> = (0..FRAMES)
        .map(|i| {
            let mut b = AlignedBuf::new(SLOT_BYTES).unwrap();
            fill(&mut b, i);
            b
        })
        .collect();
    // One file for all variants (each opens it with its own ring), so
    // they write and read the same blocks.
    let path = scratch.path().join("frames");
    let open = |drv: UringDriver| {
        let f = drv.open_file(&path, OPTS).unwrap();
        assert!(f.is_direct(), "{} refuses O_DIRECT", dir.display());
        f.allocate(0, (FRAMES * SLOT_BYTES) as u64).unwrap();
        f
    };
    let mut variants = vec![
        Variant {
            name: "fixed",
            file: open(d),
            bufs: fixed_bufs,
            write_mbs: vec![],
            write_cpu: vec![],
            read_mbs: vec![],
            read_cpu: vec![],
        },
        Variant {
            name: "arena-plain",
            file: open(plain),
            bufs: Vec::new(),
            write_mbs: vec![],
            write_cpu: vec![],
            read_mbs: vec![],
            read_cpu: vec![],
        },
        Variant {
            name: "heap-plain",
            file: open(plain),
            bufs: heap_bufs,
            write_mbs: vec![],
            write_cpu: vec![],
            read_mbs: vec![],
            read_cpu: vec![],
        },
    ];
    // `arena-plain` borrows the fixed variant's buffers (`with_bufs`).
    // Warm-up: every file written (blocks allocated) and read once.
    for v in 0..variants.len() {
        with_bufs(&mut variants, v, |v| v.run());
        let v = &mut variants[v];
        v.write_mbs.clear();
        v.write_cpu.clear();
        v.read_mbs.clear();
        v.read_cpu.clear();
    }
    for _ in 0..runs {
        for v in 0..variants.len() {
            with_bufs(&mut variants, v, |v| v.run());
        }
    }
    println!(
        "{FRAMES} x {} KiB O_DIRECT in {}, {runs} runs each, medians (min..max):",
        SLOT_BYTES >> 10,
        dir.display()
    );
    println!("arena: {:?}", UringDriver::arena_info());
    for v in &mut variants {
        let reg = v.file.buffer_registration();
        let st = v.file.stats();
        let lo_hi = |x: &[f64]| {
            let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = x.iter().copied().fold(0.0, f64::max);
            format!("{lo:.0}..{hi:.0}")
        };
        let (wl, rl) = (lo_hi(&v.write_mbs), lo_hi(&v.read_mbs));
        println!(
            "  {:<12} write {:>7.0} MB/s ({wl}), cpu {:>6.0} µs | read {:>7.0} MB/s ({rl}), cpu {:>6.0} µs | fixed SQEs {}/{} ({})",
            v.name,
            median(&mut v.write_mbs),
            median(&mut v.write_cpu),
            median(&mut v.read_mbs),
            median(&mut v.read_cpu),
            st.fixed_sqes,
            st.sqes,
            match reg {
                BufferRegistration::Registered => "registered".to_string(),
                other => format!("{other:?}"),
            }
        );
    }
}

/// Runs `f` on variant `idx`, lending `arena-plain` (index 1) the fixed
/// variant's buffers for the duration.
fn with_bufs(variants: &mut [Variant], idx: usize, f: impl FnOnce(&mut Variant)) {
    if idx == 1 {
        let bufs = std::mem::take(&mut variants[0].bufs);
        variants[1].bufs = bufs;
        f(&mut variants[1]);
        variants[0].bufs = std::mem::take(&mut variants[1].bufs);
    } else {
        f(&mut variants[idx]);
    }
}
