//! Filling a tree of the `checkpoint` scenario to N frames and dirtying
//! every frame.

use std::time::Instant;

use super::{herr, put_err, Config, FRAME};
use crate::error::{BenchError, Result};
use crate::shapes::{permutation, Rng, ValuePool};

/// The value written for key `i` with byte `len / 2` flipped by `mask`
/// (nonzero): same length as the loaded value, so a frame never grows.
pub(super) fn overwrite(vals: &ValuePool, i: usize, mask: u8, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(vals.value(i, 0));
    let mid = out.len() / 2;
    if let Some(b) = out.get_mut(mid) {
        *b ^= mask;
    }
}

pub(super) fn stats(tree: &holt::Tree) -> Result<holt::TreeStats> {
    tree.stats().map_err(herr("stats"))
}

/// Loads keys `0..` of the shape in chunks (each in random order) until
/// the tree has at least `target` frames. Returns the key count, the
/// stats at that point and the seconds spent in `Tree::stats`.
pub(super) fn load_to(
    tree: &holt::Tree,
    cfg: &Config<'_>,
    vals: &ValuePool,
    target: usize,
) -> Result<(usize, holt::TreeStats, f64)> {
    // A low first guess (the shape's generous bytes-per-key estimate), then
    // the keys per frame measured so far.
    let mut per_frame = (FRAME / cfg.shape.est_bytes_per_key()).max(1) as f64;
    let limit = target.saturating_mul(50_000);
    let mut loaded = 0usize;
    let mut key = Vec::new();
    let mut stats_secs = 0.0;
    loop {
        let t = Instant::now();
        let st = stats(tree)?;
        stats_secs += t.elapsed().as_secs_f64();
        let blobs = st.blob_count as usize;
        if blobs >= target {
            return Ok((loaded, st, stats_secs));
        }
        if loaded > 0 && blobs > 1 {
            per_frame = loaded as f64 / blobs as f64;
        }
        // Half the estimated gap at a time: keys per frame fall as the
        // tree grows (frames split in bursts), so a full-gap step overshoots.
        let chunk = (((target - blobs) as f64 * per_frame * 0.5) as usize).max(2000);
        if loaded + chunk > limit {
            return Err(BenchError::Engine {
                engine: "holt",
                what: format!("load to {target} frames"),
                err: format!("still {blobs} frames after {loaded} keys"),
            });
        }
        let mut rng = Rng::for_label(cfg.seed, &format!("checkpoint/load/{loaded}"));
        for j in permutation(chunk, &mut rng) {
            let i = loaded + j as usize;
            key.clear();
            cfg.shape.write_key(cfg.seed, i as u64, &mut key);
            let old = tree
                .put(&key, vals.value(i, 0))
                .map_err(|e| put_err(&key, e))?;
            if old.is_some() {
                return Err(BenchError::Engine {
                    engine: "holt",
                    what: format!("put({})", String::from_utf8_lossy(&key)),
                    err: "a fresh key already had a value".into(),
                });
            }
        }
        loaded += chunk;
    }
}

/// Overwrites keys in random order (same-length values) until every frame
/// is dirty (`bm_dirty_count >= blob_count`), checking the count every
/// half-frame-count puts; stops early only if the count has reached
/// `target` and stopped growing for 8 checks (frames no key reaches).
/// Returns the puts done and the stats at the end.
pub(super) fn dirty_all(
    tree: &holt::Tree,
    cfg: &Config<'_>,
    vals: &ValuePool,
    keys: usize,
    target: usize,
    pass: u8,
) -> Result<(usize, holt::TreeStats)> {
    let st = stats(tree)?;
    let blobs = st.blob_count as usize;
    let step = (blobs / 2).max(32);
    let mut next = blobs.max(32);
    let mut last = 0;
    let mut flat = 0;
    let mut rng = Rng::for_label(cfg.seed, &format!("checkpoint/dirty/{pass}"));
    let mut key = Vec::new();
    let mut value = Vec::new();
    let order = permutation(keys, &mut rng);
    for (j, &i) in order.iter().enumerate() {
        let i = i as usize;
        key.clear();
        cfg.shape.write_key(cfg.seed, i as u64, &mut key);
        overwrite(vals, i, 1 << (pass % 7), &mut value);
        tree.put(&key, &value).map_err(|e| put_err(&key, e))?;
        if j + 1 == next {
            let st = stats(tree)?;
            let dirty = st.bm_dirty_count;
            if dirty >= st.blob_count as usize {
                return Ok((j + 1, st));
            }
            flat = if dirty == last { flat + 1 } else { 0 };
            if dirty >= target && flat >= 8 {
                return Ok((j + 1, st));
            }
            last = dirty;
            next += step;
        }
    }
    Ok((keys, stats(tree)?))
}
