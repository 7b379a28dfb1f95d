//! Fault injection: an [`Injector`] is a [`Hook`] that counts each call
//! of a [`HookedDriver`] by [`Kind`] and fails the call(s) an armed
//! [`Plan`] names with an injected `io::Error` (tearing a failing write if
//! the plan says so). Batches are forwarded as batches (so io_uring's
//! batch paths run), each entry counting as one call.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use holt::io::IoDriver;

pub use super::hooked::Kind;
use super::hooked::{Call, Hook, HookedDriver, Verdict};

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
    /// `ALIGN` on a direct file), as a real short write before
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

/// The switchboard of a fault-injecting [`HookedDriver`] and its files.
#[derive(Debug, Default)]
pub struct Injector {
    st: Mutex<InjState>,
}

impl Injector {
    /// `inner` wrapped in a driver named `"fault"` that fails the calls
    /// the returned injector is armed for; it starts disarmed.
    pub fn wrap(inner: Arc<dyn IoDriver>) -> (Arc<HookedDriver>, Arc<Injector>) {
        let inj = Arc::new(Injector::default());
        (HookedDriver::new(inner, inj.clone()), inj)
    }

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
}

impl Hook for Injector {
    fn before(&self, call: &Call<'_>) -> Verdict {
        match self.check(call.kind, call.path) {
            Ok(()) => Verdict::Forward,
            Err((e, true)) => Verdict::Tear(e),
            Err((e, false)) => Verdict::Fail(e),
        }
    }
    fn name(&self) -> Option<&'static str> {
        Some("fault")
    }
}
