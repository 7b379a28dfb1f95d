//! [`Faults`]: deterministic fault injection applied to completions in the
//! reaping loop, so tests can exercise short transfers, retries and errors
//! without a misbehaving kernel.

use holt_backend_sync::ALIGN;

/// Faults a [`UringFile`](crate::UringFile) injects into its own
/// completions. Each one rewrites the *result* of a completion the kernel
/// really delivered, after the kernel is done with the buffer, so the
/// simulation is faithful: a faked short write really wrote everything and
/// the driver rewrites the (identical) remainder; a faked `EINTR` is
/// retried; a faked `EIO` fails the call.
///
/// Completions are counted over the life of the file (or since the last
/// [`UringFile::set_faults`](crate::UringFile::set_faults)), starting at 1
/// for the first completion. The default injects nothing.
///
/// ```
/// use holt_backend_uring::Faults;
///
/// // Every third write completion is short, and the fifth completion of
/// // any kind fails with EIO.
/// let faults = Faults {
///     short_write_every: Some(3),
///     fail_nth_completion: Some((5, libc::EIO)),
///     ..Faults::default()
/// };
/// assert!(!faults.is_none());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every n-th write completion (n ≥ 1) reports only part of the bytes
    /// it wrote: half, rounded down to [`ALIGN`] on a direct file (left
    /// alone when that would be zero). `Some(1)` shortens every write.
    pub short_write_every: Option<usize>,
    /// Like `short_write_every`, for read completions.
    pub short_read_every: Option<usize>,
    /// `(n, errno)`: the n-th completion (n ≥ 1, counting reads, writes and
    /// syncs) reports `-errno` instead of its real result.
    pub fail_nth_completion: Option<(usize, i32)>,
    /// How many completions *after* the n-th of `fail_nth_completion` fail
    /// the same way (0: only the n-th). Used to exhaust the retry bound.
    pub fail_repeat: usize,
    /// Makes the ring's registration of the buffer arena fail with this
    /// errno (`ENOMEM` as for an exhausted `RLIMIT_MEMLOCK`, `EPERM`)
    /// instead of asking the kernel, so tests can check the fallback to
    /// plain `READ`/`WRITE`.
    pub fail_buffer_registration: Option<i32>,
}

impl Faults {
    /// No faults (the default).
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether this injects nothing.
    #[must_use]
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }

    /// Rewrites one completion's result `res` for an operation of `kind`,
    /// advancing the counters in `state`. Returns the result to act on and
    /// whether it was altered.
    pub(crate) fn apply(
        &self,
        state: &mut FaultCounters,
        kind: CompletionKind,
        res: i32,
        direct: bool,
    ) -> (i32, bool) {
        state.completions = state.completions.saturating_add(1);
        let every = match kind {
            CompletionKind::Write => {
                state.writes = state.writes.saturating_add(1);
                self.short_write_every.map(|every| (every, state.writes))
            }
            CompletionKind::Read => {
                state.reads = state.reads.saturating_add(1);
                self.short_read_every.map(|every| (every, state.reads))
            }
            CompletionKind::Sync => None,
        };
        if let Some((nth, errno)) = self.fail_nth_completion {
            let n = state.completions;
            if nth >= 1 && n >= nth && n - nth <= self.fail_repeat {
                return (errno.saturating_abs().saturating_neg(), true);
            }
        }
        if let Some((every, count)) = every {
            if every >= 1 && count % every == 0 {
                if let Some(short) = shorten(res, direct) {
                    return (short, true);
                }
            }
        }
        (res, false)
    }
}

/// What a completion belonged to, for [`Faults::apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompletionKind {
    /// A read.
    Read,
    /// A write.
    Write,
    /// An fsync / fdatasync.
    Sync,
}

/// Completion counters that [`Faults`] keys on.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FaultCounters {
    /// All completions seen.
    completions: usize,
    /// Write completions seen.
    writes: usize,
    /// Read completions seen.
    reads: usize,
}

/// A short version of a successful transfer of `res` bytes: half of it,
/// rounded down to [`ALIGN`] when `direct` (so the remainder stays
/// aligned). `None` when that leaves nothing to report.
fn shorten(res: i32, direct: bool) -> Option<i32> {
    if res <= 1 {
        return None;
    }
    let mut half = res / 2;
    if direct {
        let align = i32::try_from(ALIGN).ok()?;
        half -= half % align;
    }
    (half > 0).then_some(half)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i32 = 1 << 20;

    #[test]
    fn default_injects_nothing() {
        let f = Faults::none();
        assert!(f.is_none());
        let mut st = FaultCounters::default();
        for kind in [
            CompletionKind::Read,
            CompletionKind::Write,
            CompletionKind::Sync,
        ] {
            assert_eq!(f.apply(&mut st, kind, 4096, true), (4096, false));
            assert_eq!(f.apply(&mut st, kind, -5, true), (-5, false));
        }
    }

    #[test]
    fn short_writes_every_nth_and_stay_aligned() {
        let f = Faults {
            short_write_every: Some(2),
            ..Faults::default()
        };
        let mut st = FaultCounters::default();
        let w = CompletionKind::Write;
        assert_eq!(f.apply(&mut st, w, MIB, true), (MIB, false));
        assert_eq!(f.apply(&mut st, w, MIB, true), (MIB / 2, true));
        // Reads and syncs neither count nor get shortened.
        assert_eq!(
            f.apply(&mut st, CompletionKind::Read, MIB, true),
            (MIB, false)
        );
        assert_eq!(f.apply(&mut st, CompletionKind::Sync, 0, true), (0, false));
        assert_eq!(f.apply(&mut st, w, MIB, true), (MIB, false));
        // 3 pages: half is 1.5 pages, rounded down to one page.
        assert_eq!(f.apply(&mut st, w, 3 * 4096, true), (4096, true));
        // One page cannot be shortened on a direct file...
        let _ = f.apply(&mut st, w, 4096, true);
        assert_eq!(f.apply(&mut st, w, 4096, true), (4096, false));
        // ...but can on a buffered one, to any length.
        let _ = f.apply(&mut st, w, 4096, false);
        assert_eq!(f.apply(&mut st, w, 4097, false), (2048, true));
        // Errors pass through untouched.
        let _ = f.apply(&mut st, w, 4096, false);
        assert_eq!(f.apply(&mut st, w, -5, false), (-5, false));
    }

    #[test]
    fn short_reads_use_their_own_counter() {
        let f = Faults {
            short_read_every: Some(1),
            ..Faults::default()
        };
        let mut st = FaultCounters::default();
        assert_eq!(
            f.apply(&mut st, CompletionKind::Read, 8192, true),
            (4096, true)
        );
        assert_eq!(
            f.apply(&mut st, CompletionKind::Write, 8192, true),
            (8192, false)
        );
    }

    #[test]
    fn nth_completion_fails_with_repeat() {
        let f = Faults {
            fail_nth_completion: Some((3, libc::EIO)),
            fail_repeat: 1,
            ..Faults::default()
        };
        let mut st = FaultCounters::default();
        let got: Vec<_> = (0..6)
            .map(|_| f.apply(&mut st, CompletionKind::Write, 4096, true))
            .collect();
        let eio = -libc::EIO;
        assert_eq!(
            got,
            [
                (4096, false),
                (4096, false),
                (eio, true),
                (eio, true),
                (4096, false),
                (4096, false)
            ]
        );
    }

    #[test]
    fn errno_sign_and_extremes_do_not_panic() {
        for errno in [libc::EINTR, -libc::EINTR, i32::MIN, 0] {
            let f = Faults {
                fail_nth_completion: Some((1, errno)),
                ..Faults::default()
            };
            let (res, hit) = f.apply(
                &mut FaultCounters::default(),
                CompletionKind::Sync,
                0,
                false,
            );
            assert!(hit);
            assert!(res <= 0);
        }
        // n = 0 and every = 0 are inert rather than dividing by zero.
        let f = Faults {
            short_write_every: Some(0),
            fail_nth_completion: Some((0, libc::EIO)),
            ..Faults::default()
        };
        assert_eq!(
            f.apply(
                &mut FaultCounters::default(),
                CompletionKind::Write,
                8192,
                true
            ),
            (8192, false)
        );
    }
}
