//! [`FaultDriver`]: wraps any [`IoDriver`] (and every file it opens),
//! counts each call by [`Kind`] and fails the call(s) an armed [`Plan`]
//! names with an injected `io::Error`. Batches are forwarded as batches
//! (so io_uring's batch paths run), each entry counting as one call.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use holt::io::{AlignedBuf, IoDriver, IoFile, OpenOptions, ALIGN};

/// What a driver call does, for counting and for choosing the call to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `read_at`, and each entry of `read_batch`.
    Read,
    /// `write_at`, and each entry of `write_batch`.
    Write,
    /// `sync_data` and `sync_all`.
    Sync,
    Rename,
    Remove,
    SyncDir,
    /// `set_len` and `allocate`.
    Alloc,
    Open,
}

/// Which call(s) to fail, and how.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The kinds of call the plan counts (and fails).
    pub kinds: &'static [Kind],
    /// 1-based index among the counted calls (that match `file`).
    pub nth: u64,
    pub err: io::ErrorKind,
    /// Fail every counted call from the `nth` on, not only the `nth`.
    pub sticky: bool,
    /// Only calls on a path whose file name is this count.
    pub file: Option<&'static str>,
    /// A failing write first writes half of its buffer (rounded down to
    /// [`ALIGN`] on a direct file), as a real short write before
    /// `EIO`/`ENOSPC` may; without it a failing write writes nothing.
    pub torn: bool,
}

impl Plan {
    /// Fail the `nth` call of `kind` once, with `err`.
    pub fn nth(kind: Kind, nth: u64, err: io::ErrorKind) -> Self {
        let kinds: &'static [Kind] = match kind {
            Kind::Read => &[Kind::Read],
            Kind::Write => &[Kind::Write],
            Kind::Sync => &[Kind::Sync],
            Kind::Rename => &[Kind::Rename],
            Kind::Remove => &[Kind::Remove],
            Kind::SyncDir => &[Kind::SyncDir],
            Kind::Alloc => &[Kind::Alloc],
            Kind::Open => &[Kind::Open],
        };
        Self {
            kinds,
            nth,
            err,
            sticky: false,
            file: None,
            torn: false,
        }
    }

    /// Fail every call of `kind` from now on (a switch), with `err`.
    pub fn always(kind: Kind, err: io::ErrorKind) -> Self {
        Self {
            sticky: true,
            ..Self::nth(kind, 1, err)
        }
    }

    /// Only calls on files named `name`.
    pub fn on(mut self, name: &'static str) -> Self {
        self.file = Some(name);
        self
    }
}

#[derive(Debug, Default)]
struct InjState {
    /// Every call, by kind, whether or not a plan is armed.
    counts: HashMap<Kind, u64>,
    plan: Option<Plan>,
    /// Calls matching the plan so far.
    matched: u64,
    /// Description of every injected failure.
    hits: Vec<String>,
}

/// The shared switchboard of a [`FaultDriver`] and its files.
#[derive(Debug, Default)]
pub struct Injector {
    st: Mutex<InjState>,
}

impl Injector {
    pub fn arm(&self, plan: Plan) {
        let mut st = self.st.lock().unwrap();
        st.plan = Some(plan);
        st.matched = 0;
    }

    pub fn disarm(&self) {
        self.st.lock().unwrap().plan = None;
    }

    /// Every injected failure so far.
    pub fn hits(&self) -> Vec<String> {
        self.st.lock().unwrap().hits.clone()
    }

    /// Calls of `kind` so far.
    pub fn count(&self, kind: Kind) -> u64 {
        self.st
            .lock()
            .unwrap()
            .counts
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// Calls by kind so far.
    pub fn counts(&self) -> HashMap<Kind, u64> {
        self.st.lock().unwrap().counts.clone()
    }

    /// Counts one call and decides whether it fails: `Err((error, torn))`.
    fn check(&self, kind: Kind, path: &Path) -> Result<(), (io::Error, bool)> {
        let mut st = self.st.lock().unwrap();
        *st.counts.entry(kind).or_insert(0) += 1;
        let Some(plan) = st.plan.clone() else {
            return Ok(());
        };
        if !plan.kinds.contains(&kind) {
            return Ok(());
        }
        if let Some(f) = plan.file {
            if path.file_name().and_then(|n| n.to_str()) != Some(f) {
                return Ok(());
            }
        }
        st.matched += 1;
        let n = st.matched;
        if n == plan.nth || (plan.sticky && n > plan.nth) {
            st.hits
                .push(format!("{kind:?} call #{n} on {}", path.display()));
            let err = io::Error::new(
                plan.err,
                format!("injected {:?} at {kind:?} #{n}", plan.err),
            );
            return Err((err, plan.torn));
        }
        Ok(())
    }

    /// [`Injector::check`] for calls that cannot tear.
    fn check_plain(&self, kind: Kind, path: &Path) -> io::Result<()> {
        self.check(kind, path).map_err(|(e, _)| e)
    }
}

/// A driver that fails the calls its [`Injector`] is armed for and
/// forwards everything else to `inner`.
#[derive(Debug)]
pub struct FaultDriver {
    inner: Arc<dyn IoDriver>,
    inj: Arc<Injector>,
}

impl FaultDriver {
    /// Wraps `inner`; the injector starts disarmed.
    pub fn new(inner: Arc<dyn IoDriver>) -> (Arc<Self>, Arc<Injector>) {
        let inj = Arc::new(Injector::default());
        let d = Arc::new(Self {
            inner,
            inj: Arc::clone(&inj),
        });
        (d, inj)
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn IoFile>,
    inj: Arc<Injector>,
}

impl IoDriver for FaultDriver {
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<Arc<dyn IoFile>> {
        self.inj.check_plain(Kind::Open, path)?;
        let inner = self.inner.open(path, opts)?;
        Ok(Arc::new(FaultFile {
            inner,
            inj: Arc::clone(&self.inj),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inj.check_plain(Kind::Rename, to)?;
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inj.check_plain(Kind::Remove, path)?;
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inj.check_plain(Kind::SyncDir, dir)?;
        self.inner.sync_dir(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn name(&self) -> &'static str {
        "fault"
    }
    fn alloc_buffer(&self, len: usize) -> io::Result<AlignedBuf> {
        self.inner.alloc_buffer(len)
    }
    fn reserve_buffers(&self, len: usize, count: usize) -> usize {
        self.inner.reserve_buffers(len, count)
    }
}

impl FaultFile {
    /// The torn prefix of a failing write: half of `buf`, whole pages on
    /// a direct file.
    fn torn_half<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        let mut half = buf.len() / 2;
        if self.inner.is_direct() {
            half &= !(ALIGN - 1);
        }
        &buf[..half]
    }
}

impl IoFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inj.check_plain(Kind::Read, self.inner.path())?;
        self.inner.read_at(buf, offset)
    }
    fn read_batch(&self, reads: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        // Each entry counts; the entries before a failing one are read
        // (as one batch), the rest are not.
        let path = self.inner.path();
        for i in 0..reads.len() {
            if let Err(e) = self.inj.check_plain(Kind::Read, path) {
                self.inner.read_batch(&mut reads[..i])?;
                return Err(e);
            }
        }
        self.inner.read_batch(reads)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Err((e, torn)) = self.inj.check(Kind::Write, self.inner.path()) {
            let half = self.torn_half(buf);
            if torn && !half.is_empty() {
                let _ = self.inner.write_at(half, offset);
            }
            return Err(e);
        }
        self.inner.write_at(buf, offset)
    }
    fn write_batch(&self, writes: &[(u64, &[u8])]) -> io::Result<()> {
        // Each entry counts as one write. Without a fault the batch goes
        // to the inner driver whole; with one, the entries before it are
        // written as a batch, the failing one torn if the plan says so.
        let path = self.inner.path();
        for (i, &(offset, buf)) in writes.iter().enumerate() {
            if let Err((e, torn)) = self.inj.check(Kind::Write, path) {
                self.inner.write_batch(&writes[..i])?;
                let half = self.torn_half(buf);
                if torn && !half.is_empty() {
                    let _ = self.inner.write_at(half, offset);
                }
                return Err(e);
            }
        }
        self.inner.write_batch(writes)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inj.check_plain(Kind::Sync, self.inner.path())?;
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inj.check_plain(Kind::Sync, self.inner.path())?;
        self.inner.sync_all()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inj.check_plain(Kind::Alloc, self.inner.path())?;
        self.inner.set_len(len)
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inj.check_plain(Kind::Alloc, self.inner.path())?;
        self.inner.allocate(offset, len)
    }
    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}
