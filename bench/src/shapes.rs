//! Key and value generators (BENCH.md "Shapes").
//!
//! Everything here is deterministic: key `i` of a shape is a pure function
//! of `(shape, seed, i)`, and value `j` of the value pool is a pure function
//! of `(shape, seed, j)`. Keys `0..n` are loaded; keys `n..` are absent
//! (misses, rename targets, temporary creates).

use std::fmt;

/// splitmix64 finalizer: a good 64-bit mixer.
#[must_use]
pub const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small, fast, seeded generator (splitmix64 stream).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Seeds a stream from a base seed and a label, so that every op group
    /// gets its own reproducible sequence.
    #[must_use]
    pub fn for_label(seed: u64, label: &str) -> Self {
        let mut h = mix(seed ^ 0x5EED);
        for b in label.bytes() {
            h = mix(h ^ u64::from(b));
        }
        Self(h)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (Lemire's multiply-shift; `bound > 0`).
    #[inline]
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// True with probability `pct / 100`.
    #[inline]
    pub fn percent(&mut self, pct: u32) -> bool {
        self.below(100) < pct as usize
    }
}

/// A Fisher-Yates permutation of `0..n`.
#[must_use]
pub fn permutation(n: usize, rng: &mut Rng) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    Kv,
    Objstore,
    Fs,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Appends `v` in decimal, zero-padded to at least `width` digits.
fn push_num(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut tmp = [0u8; 20];
    let mut len = 0;
    loop {
        tmp[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push(b'0');
    }
    out.extend(tmp[..len].iter().rev());
}

fn push_hex(out: &mut Vec<u8>, mut v: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for _ in 0..digits {
        out.push(HEX[(v & 15) as usize]);
        v >>= 4;
    }
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Kv, Shape::Objstore, Shape::Fs];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Shape::Kv => "kv",
            Shape::Objstore => "objstore",
            Shape::Fs => "fs",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|sh| sh.name() == s)
    }

    const fn salt(self) -> u64 {
        match self {
            Shape::Kv => 0x6B76,
            Shape::Objstore => 0x6F62_6A73,
            Shape::Fs => 0x6673,
        }
    }

    fn hash(self, seed: u64, i: u64) -> u64 {
        mix(mix(seed ^ self.salt()) ^ mix(i))
    }

    /// A generous estimate of the frame bytes one key costs in holt, used
    /// only to size the default buffer pool. Measured at n = 1e6 (frames x
    /// 512 KiB / n): kv ~1230 (fill 7%), objstore ~480, fs ~135.
    #[must_use]
    pub const fn est_bytes_per_key(self) -> usize {
        match self {
            Shape::Kv => 1600,
            Shape::Objstore => 800,
            Shape::Fs => 400,
        }
    }

    /// Appends key `i` to `out`.
    pub fn write_key(self, seed: u64, i: u64, out: &mut Vec<u8>) {
        let r = self.hash(seed, i);
        match self {
            Shape::Kv => {
                let mut g = Rng::new(r);
                for _ in 0..16 {
                    out.push(ALNUM[g.below(62)]);
                }
            }
            Shape::Objstore => {
                // 8 buckets x 8 tenants x 2 years x 12 months = 1536 leaves.
                let leaf = r % 1536;
                out.extend_from_slice(b"bucket-");
                push_num(out, leaf / 192, 2);
                out.extend_from_slice(b"/tenant-");
                push_num(out, (leaf / 24) % 8, 1);
                out.push(b'/');
                if (r >> 32) % 50 == 0 {
                    out.extend_from_slice(b"manifest-");
                    push_num(out, i, 7);
                    out.extend_from_slice(b".json");
                } else {
                    push_num(out, 2024 + (leaf / 12) % 2, 4);
                    out.push(b'/');
                    push_num(out, leaf % 12 + 1, 2);
                    out.extend_from_slice(b"/obj-");
                    push_num(out, i, 7);
                    out.extend_from_slice(b".parquet");
                }
            }
            Shape::Fs => {
                // 64 users x 4 projects x 8 modules = 2048 leaves.
                let leaf = r % 2048;
                out.extend_from_slice(b"/home/u");
                push_num(out, leaf / 32, 3);
                out.extend_from_slice(b"/proj");
                push_num(out, (leaf / 8) % 4, 1);
                out.push(b'/');
                if (r >> 32) % 20 == 0 {
                    out.extend_from_slice(b"notes_");
                    push_num(out, i, 7);
                    out.extend_from_slice(b".md");
                } else {
                    out.extend_from_slice(b"src/mod_");
                    push_num(out, leaf % 8, 1);
                    out.extend_from_slice(b"/file_");
                    push_num(out, i, 7);
                    out.extend_from_slice(b".rs");
                }
            }
        }
    }

    /// Appends pool value `j` to `out`.
    pub fn write_value(self, seed: u64, j: u64, out: &mut Vec<u8>) {
        let mut g = Rng::new(self.hash(seed ^ 0x0076_616C_7565, j));
        match self {
            Shape::Kv => {
                for _ in 0..4 {
                    out.extend_from_slice(&g.next_u64().to_le_bytes());
                }
            }
            Shape::Objstore => {
                let start = out.len();
                let target = 100 + g.below(101);
                out.extend_from_slice(b"{\"size\":");
                push_num(out, g.next_u64() % 10_000_000_000, 1);
                out.extend_from_slice(b",\"etag\":\"");
                push_hex(out, g.next_u64(), 16);
                push_hex(out, g.next_u64(), 16);
                out.extend_from_slice(b"\",\"mtime\":");
                push_num(out, 1_704_067_200 + g.next_u64() % 63_072_000, 1);
                out.extend_from_slice(b",\"class\":\"");
                out.extend_from_slice(match g.below(3) {
                    0 => &b"STANDARD"[..],
                    1 => b"STANDARD_IA",
                    _ => b"GLACIER",
                });
                out.extend_from_slice(b"\",\"ct\":\"");
                out.extend_from_slice(if g.percent(90) {
                    &b"application/vnd.apache.parquet"[..]
                } else {
                    b"application/json"
                });
                out.push(b'"');
                let cur = out.len() - start + 1;
                if target >= cur + 11 {
                    out.extend_from_slice(b",\"user\":\"");
                    for _ in 0..target - cur - 10 {
                        out.push(ALNUM[g.below(62)]);
                    }
                    out.push(b'"');
                }
                out.push(b'}');
            }
            Shape::Fs => {
                // ino, mode, uid, gid, nlink, size, atime, mtime, ctime,
                // generation: 8+4+4+4+4+8+8+8+8+8 = 64 bytes.
                let t = 1_704_067_200_000_000_000u64 + g.next_u64() % 63_072_000_000_000_000;
                out.extend_from_slice(&(j + 2).to_le_bytes());
                out.extend_from_slice(&0o100_644u32.to_le_bytes());
                let uid = 1000 + g.below(64) as u32;
                out.extend_from_slice(&uid.to_le_bytes());
                out.extend_from_slice(&uid.to_le_bytes());
                out.extend_from_slice(&1u32.to_le_bytes());
                out.extend_from_slice(&(g.next_u64() % (1 << 24)).to_le_bytes());
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&g.next_u64().to_le_bytes());
            }
        }
    }

    /// Appends to `cuts` the lengths of every ancestor "directory" prefix of
    /// `key`: each prefix ends with `/`. `kv` keys have no directories; their
    /// ancestors are the first one and two bytes.
    pub fn ancestor_cuts(self, key: &[u8], cuts: &mut Vec<usize>) {
        cuts.clear();
        match self {
            Shape::Kv => {
                cuts.push(1.min(key.len()));
                cuts.push(2.min(key.len()));
            }
            Shape::Objstore | Shape::Fs => {
                cuts.extend(
                    key.iter()
                        .enumerate()
                        .filter(|&(_, &b)| b == b'/')
                        .map(|(p, _)| p + 1),
                );
            }
        }
    }
}

/// Many byte strings in one contiguous buffer.
#[derive(Debug, Default)]
pub struct ByteTable {
    buf: Vec<u8>,
    offs: Vec<usize>,
}

impl ByteTable {
    fn with_capacity(items: usize, bytes: usize) -> Self {
        let mut offs = Vec::with_capacity(items + 1);
        offs.push(0);
        Self {
            buf: Vec::with_capacity(bytes),
            offs,
        }
    }

    fn seal(&mut self) {
        self.offs.push(self.buf.len());
    }

    #[inline]
    #[must_use]
    pub fn get(&self, i: usize) -> &[u8] {
        &self.buf[self.offs[i]..self.offs[i + 1]]
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.offs.len() - 1
    }

    #[must_use]
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }
}

/// The keys of one shape: `0..n` loaded, `n..n+misses` absent (used for
/// misses), `n+misses..n+misses+aux` absent (rename targets and temporary
/// creates); indices beyond those are "extra" fresh keys, generated on
/// demand ([`KeySet::extra_keys`]).
#[derive(Debug)]
pub struct KeySet {
    pub shape: Shape,
    pub seed: u64,
    pub n: usize,
    pub misses: usize,
    pub aux: usize,
    pub table: ByteTable,
}

impl KeySet {
    #[must_use]
    pub fn generate(shape: Shape, seed: u64, n: usize, misses: usize, aux: usize) -> Self {
        let total = n + misses + aux;
        let mut table = ByteTable::with_capacity(total, total * 48);
        for i in 0..total {
            shape.write_key(seed, i as u64, &mut table.buf);
            table.seal();
        }
        Self {
            shape,
            seed,
            n,
            misses,
            aux,
            table,
        }
    }

    /// Key index of extra key `j` (beyond every reserved index).
    #[must_use]
    pub fn extra_index(&self, j: usize) -> usize {
        self.n + self.misses + self.aux + j
    }

    /// Extra keys `first..first + count`, generated now (they are not in
    /// the table).
    #[must_use]
    pub fn extra_keys(&self, first: usize, count: usize) -> ByteTable {
        let mut t = ByteTable::with_capacity(count, count * 64);
        for j in first..first + count {
            self.shape
                .write_key(self.seed, self.extra_index(j) as u64, &mut t.buf);
            t.seal();
        }
        t
    }

    #[inline]
    #[must_use]
    pub fn key(&self, i: usize) -> &[u8] {
        self.table.get(i)
    }

    #[inline]
    #[must_use]
    pub fn miss(&self, j: usize) -> &[u8] {
        self.table.get(self.n + j)
    }

    #[inline]
    #[must_use]
    pub fn aux(&self, j: usize) -> &[u8] {
        self.table.get(self.n + self.misses + j)
    }
}

/// A pool of pre-generated values; the value written for key `i` in write
/// round `v` is `pool[hash(i, v) % len]`.
#[derive(Debug)]
pub struct ValuePool {
    seed: u64,
    table: ByteTable,
}

impl ValuePool {
    pub const LEN: usize = 1 << 16;

    #[must_use]
    pub fn generate(shape: Shape, seed: u64) -> Self {
        let mut table = ByteTable::with_capacity(Self::LEN, Self::LEN * 160);
        for j in 0..Self::LEN {
            shape.write_value(seed, j as u64, &mut table.buf);
            table.seal();
        }
        Self { seed, table }
    }

    /// The value for key `i` in write round `round`.
    #[inline]
    #[must_use]
    pub fn value(&self, i: usize, round: u64) -> &[u8] {
        let h = mix(self.seed ^ mix(i as u64 ^ round.wrapping_mul(0xA24B_AED4_963E_E407)));
        self.table.get((h as usize) & (Self::LEN - 1))
    }

    #[must_use]
    pub fn mean_len(&self) -> f64 {
        self.table.bytes() as f64 / self.table.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_are_deterministic_and_unique() {
        for shape in Shape::ALL {
            let a = KeySet::generate(shape, 7, 5000, 500, 500);
            let b = KeySet::generate(shape, 7, 5000, 500, 500);
            let mut seen = HashSet::new();
            for i in 0..a.table.len() {
                assert_eq!(a.key(i), b.key(i));
                assert!(seen.insert(a.key(i).to_vec()), "{shape}: duplicate key {i}");
            }
            let x = a.extra_keys(10, 300);
            assert_eq!(x.len(), 300);
            assert_eq!(x.get(0), a.extra_keys(10, 1).get(0));
            for j in 0..x.len() {
                assert!(
                    seen.insert(x.get(j).to_vec()),
                    "{shape}: extra {j} repeats a key"
                );
            }
        }
    }

    #[test]
    fn shapes_look_right() {
        let mut k = Vec::new();
        Shape::Objstore.write_key(0, 42, &mut k);
        let s = String::from_utf8(k.clone()).unwrap();
        assert!(s.starts_with("bucket-0"), "{s}");
        assert!(
            s.ends_with("-0000042.parquet") || s.ends_with("-0000042.json"),
            "{s}"
        );
        let mut cuts = Vec::new();
        Shape::Objstore.ancestor_cuts(&k, &mut cuts);
        assert!(cuts.len() == 4 || cuts.len() == 2, "{s} {cuts:?}");
        k.clear();
        Shape::Fs.write_key(0, 42, &mut k);
        let s = String::from_utf8(k.clone()).unwrap();
        assert!(s.starts_with("/home/u0"), "{s}");
        Shape::Fs.ancestor_cuts(&k, &mut cuts);
        assert_eq!(cuts[0], 1);
        k.clear();
        Shape::Kv.write_key(0, 42, &mut k);
        assert_eq!(k.len(), 16);
        assert!(k.iter().all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn manifest_and_notes_fractions() {
        let n = 100_000;
        let o = KeySet::generate(Shape::Objstore, 1, n, 0, 0);
        let m = (0..n).filter(|&i| o.key(i).ends_with(b".json")).count();
        assert!((1500..2500).contains(&m), "{m}");
        let f = KeySet::generate(Shape::Fs, 1, n, 0, 0);
        let m = (0..n).filter(|&i| f.key(i).ends_with(b".md")).count();
        assert!((4500..5500).contains(&m), "{m}");
    }

    #[test]
    fn value_sizes() {
        for j in 0..2000 {
            let mut v = Vec::new();
            Shape::Objstore.write_value(3, j, &mut v);
            assert!((100..=200).contains(&v.len()), "{}", v.len());
            v.clear();
            Shape::Fs.write_value(3, j, &mut v);
            assert_eq!(v.len(), 64);
            v.clear();
            Shape::Kv.write_value(3, j, &mut v);
            assert_eq!(v.len(), 32);
        }
    }
}
