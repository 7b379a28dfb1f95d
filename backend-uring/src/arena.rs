//! The registered-buffer arena: one block of aligned memory per process,
//! cut into fixed-size slots that the [`UringDriver`](crate::UringDriver)'s
//! `alloc_buffer` hands out as [`AlignedBuf`]s, and that rings register
//! with `IORING_REGISTER_BUFFERS` so transfers on it can use
//! `READ_FIXED`/`WRITE_FIXED` (the kernel then skips pinning and mapping
//! the pages on every I/O).
//!
//! # Why one arena per process
//!
//! Registered buffers are pinned and, unless the process has
//! `CAP_IPC_LOCK`, charged to `RLIMIT_MEMLOCK` — a per-process (per-user)
//! limit, charged again for every ring that registers the same pages. So
//! the arena is sized from that limit once ([`memlock_budget`]): the whole
//! cap ([`ARENA_CAP`]) when the kernel does not charge us (`CAP_IPC_LOCK`
//! or an unlimited rlimit), else at most half of the limit, leaving the
//! other half for everything else that locks memory. Each ring that
//! registers the arena reserves its size from that budget first; a ring
//! that finds the budget spent (or the kernel answering `ENOMEM`/`EPERM`)
//! keeps using plain `READ`/`WRITE` and records why.
//!
//! The arena is created by the first `reserve_buffers` or `alloc_buffer`
//! call and never freed (it lives in a `static`): memory registered with a
//! ring can therefore never be released while the kernel may still use
//! it, whatever order rings, files and buffers are dropped in. Because it
//! is never freed, its size is chosen once, from what the first caller
//! asks for: `reserve_buffers(len, count)` (the engine: at its first
//! checkpoint round, `count` = the most frame images it keeps between
//! rounds) gives it at most `count` slots, `alloc_buffer` the whole
//! [`ARENA_CAP`]; both within the memlock budget.
//!
//! # Refusal is remembered
//!
//! When the kernel refuses to register the arena with a ring (`ENOMEM`:
//! `RLIMIT_MEMLOCK`; `EPERM`), the arena records it and stops handing out
//! slots: later buffers come from the allocator, `reserve_buffers`
//! answers 0, and no other ring tries again. Slots already handed out
//! keep working (as plain memory). A ring turned away only by the
//! process's own budget (other rings hold it) does not count as a
//! refusal.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::fs;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use holt_backend_sync::{AlignedBuf, BufferArena, ALIGN};

/// Largest arena, in bytes: 128 frame images of 512 KiB in flight.
pub const ARENA_CAP: usize = 64 << 20;

/// Size of one arena slot: one frame image.
pub const SLOT_BYTES: usize = 512 << 10;

/// `CAP_IPC_LOCK`'s bit in the capability sets of `/proc/self/status`.
const CAP_IPC_LOCK_BIT: u32 = 14;

/// What [`memlock_budget`] decided, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Bytes the arena may have.
    pub(crate) arena_bytes: usize,
    /// Bytes all rings together may register (`u64::MAX`: not charged).
    pub(crate) register_bytes: u64,
    /// How the numbers came about, for [`ArenaInfo::budget`].
    pub(crate) why: String,
}

/// Sizes the arena and the registration budget from `RLIMIT_MEMLOCK`'s
/// soft limit (`None`: unlimited) and whether the process has
/// `CAP_IPC_LOCK`, capped at `cap` bytes; whole [`SLOT_BYTES`] slots.
pub(crate) fn memlock_budget(rlimit: Option<u64>, cap_ipc_lock: bool, cap: usize) -> Budget {
    let cap = cap - cap % SLOT_BYTES;
    let (bytes, register_bytes, why) = match (cap_ipc_lock, rlimit) {
        (true, _) => (
            cap,
            u64::MAX,
            "CAP_IPC_LOCK: registered buffers are not charged to RLIMIT_MEMLOCK".to_string(),
        ),
        (false, None) => (cap, u64::MAX, "RLIMIT_MEMLOCK unlimited".to_string()),
        (false, Some(limit)) => {
            let half = usize::try_from(limit / 2).unwrap_or(usize::MAX);
            (
                cap.min(half),
                limit / 2,
                format!("half of RLIMIT_MEMLOCK ({limit} bytes)"),
            )
        }
    };
    Budget {
        arena_bytes: bytes - bytes % SLOT_BYTES,
        register_bytes,
        why,
    }
}

/// `RLIMIT_MEMLOCK`'s soft limit, `None` when unlimited (or unknown).
fn memlock_rlimit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` that outlives the call;
    // getrlimit only writes into it.
    let ret = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if ret != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(lim.rlim_cur)
}

/// Whether `CapEff` in `/proc/self/status` has `CAP_IPC_LOCK`.
fn has_cap_ipc_lock() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    cap_eff_has(&status, CAP_IPC_LOCK_BIT)
}

/// Whether the `CapEff:` line of a `/proc/<pid>/status` text has `bit`.
fn cap_eff_has(status: &str, bit: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1u64 << bit) != 0)
}

/// What the arena looks like, for stats and the bench.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaInfo {
    /// Bytes of the arena (0 when there is none).
    pub arena_bytes: usize,
    /// Bytes of one slot (one buffer of at most this size per slot).
    pub slot_bytes: usize,
    /// Slots not handed out right now.
    pub free_slots: usize,
    /// Rings that have the arena registered right now.
    pub registered_rings: u64,
    /// How the size was chosen (`RLIMIT_MEMLOCK`, `CAP_IPC_LOCK`).
    pub budget: String,
    /// Why there is no arena (buffers then come from the allocator and
    /// every transfer uses plain `READ`/`WRITE`).
    pub unavailable: Option<String>,
    /// Why the arena hands out no more slots, when the kernel refused to
    /// register it (see the module docs): the first refusal's message.
    pub refused: Option<String>,
}

/// The process's registered-buffer arena.
pub(crate) struct Arena {
    /// Start of the block (never freed).
    base: NonNull<u8>,
    /// Bytes in the block; a multiple of [`SLOT_BYTES`].
    len: usize,
    /// Indices of the slots not handed out.
    free: Mutex<Vec<usize>>,
    /// Bytes all rings together may still register.
    register_left: Mutex<u64>,
    /// Rings holding a registration.
    registered_rings: AtomicU64,
    /// [`Budget::why`].
    budget_why: String,
    /// Set once, by the first refused registration: no more slots are
    /// handed out.
    refused: OnceLock<String>,
}

// SAFETY: the arena's block is plain memory it owns for the life of the
// process; it hands out disjoint slots (each owned by one `AlignedBuf`) and
// keeps its bookkeeping behind mutexes and atomics.
unsafe impl Send for Arena {}
// SAFETY: as above; `&Arena` only reads `base`/`len` and locks the rest.
unsafe impl Sync for Arena {}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// The process-wide arena, created on first use.
static ARENA: OnceLock<Result<Arc<Arena>, String>> = OnceLock::new();

impl Arena {
    /// The process's arena, creating it on the first call with at most
    /// `slots` slots (and at most [`ARENA_CAP`], within
    /// [`memlock_budget`]); later calls return that arena whatever they
    /// ask for. `Err` says why there is none.
    pub(crate) fn get(slots: usize) -> Result<&'static Arc<Arena>, &'static str> {
        ARENA
            .get_or_init(|| {
                let cap = ARENA_CAP.min(slots.saturating_mul(SLOT_BYTES));
                let budget = memlock_budget(memlock_rlimit(), has_cap_ipc_lock(), cap);
                Arena::new(&budget).map(Arc::new)
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// How many slots the arena has (0 once a registration was refused:
    /// it hands out none then).
    pub(crate) fn slots(&self) -> usize {
        if self.refused.get().is_some() {
            return 0;
        }
        self.len / SLOT_BYTES
    }

    /// The first refused registration's message, once there was one.
    pub(crate) fn refused(&self) -> Option<&str> {
        self.refused.get().map(String::as_str)
    }

    /// Records that the kernel refused to register the arena (`why`): no
    /// slot is handed out from now on. The first reason sticks.
    pub(crate) fn note_refused(&self, why: &str) {
        let _ = self.refused.set(why.to_string());
    }

    /// The arena if it was created already (does not create it).
    pub(crate) fn existing() -> Option<&'static Arc<Arena>> {
        ARENA.get().and_then(|a| a.as_ref().ok())
    }

    /// Allocates the block for `budget`.
    fn new(budget: &Budget) -> Result<Self, String> {
        if budget.arena_bytes < SLOT_BYTES {
            return Err(format!(
                "no registered buffers: {} leaves less than one {SLOT_BYTES}-byte slot",
                budget.why
            ));
        }
        let layout = Layout::from_size_align(budget.arena_bytes, ALIGN)
            .map_err(|e| format!("no registered buffers: bad arena layout: {e}"))?;
        // SAFETY: the layout has a non-zero size (at least one slot).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(raw).ok_or_else(|| {
            format!(
                "no registered buffers: cannot allocate {} bytes",
                budget.arena_bytes
            )
        })?;
        let slots = budget.arena_bytes / SLOT_BYTES;
        Ok(Self {
            base,
            len: budget.arena_bytes,
            // Popped from the end: hand out low slots first.
            free: Mutex::new((0..slots).rev().collect()),
            register_left: Mutex::new(budget.register_bytes),
            registered_rings: AtomicU64::new(0),
            budget_why: budget.why.clone(),
            refused: OnceLock::new(),
        })
    }

    /// Start address and length of the block, for the `iovec` a ring
    /// registers and for telling whether a buffer lies inside it.
    pub(crate) fn range(&self) -> (usize, usize) {
        (self.base.as_ptr() as usize, self.len)
    }

    /// The block as one `iovec`, for `IORING_REGISTER_BUFFERS`.
    pub(crate) fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.base.as_ptr().cast(),
            iov_len: self.len,
        }
    }

    /// Reserves one ring's registration from the memlock budget; `Err`
    /// names the budget when it is spent.
    pub(crate) fn reserve_registration(&self) -> Result<(), String> {
        let mut left = self
            .register_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let need = u64::try_from(self.len).unwrap_or(u64::MAX);
        if *left != u64::MAX {
            if *left < need {
                return Err(format!(
                    "registered-buffer budget spent ({}; {} rings hold the arena)",
                    self.budget_why,
                    self.registered_rings.load(Ordering::Relaxed)
                ));
            }
            *left -= need;
        }
        self.registered_rings.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back a reservation (the ring was dropped, or the kernel
    /// refused the registration).
    pub(crate) fn release_registration(&self) {
        let mut left = self
            .register_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *left != u64::MAX {
            *left = left.saturating_add(u64::try_from(self.len).unwrap_or(u64::MAX));
        }
        self.registered_rings.fetch_sub(1, Ordering::Relaxed);
    }

    /// A zeroed slot as a buffer of `len` bytes, or `None` when `len` does
    /// not fit a slot (or is not a positive multiple of [`ALIGN`]), every
    /// slot is handed out, or a registration was refused.
    pub(crate) fn alloc(self: &Arc<Self>, len: usize) -> Option<AlignedBuf> {
        if len == 0 || len > SLOT_BYTES || len % ALIGN != 0 || self.refused.get().is_some() {
            return None;
        }
        let idx = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()?;
        // `idx < len / SLOT_BYTES`, so the slot lies inside the block.
        let ptr = self.base.as_ptr().wrapping_add(idx * SLOT_BYTES);
        // SAFETY: the slot `[ptr, ptr + SLOT_BYTES)` lies inside the block,
        // which lives for the rest of the process, and was just taken off
        // the free list, so nothing else reads or writes it.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        let ptr = NonNull::new(ptr)?;
        let arena: Arc<dyn BufferArena> = Arc::<Arena>::clone(self);
        // SAFETY: `ptr` is ALIGN-aligned (the block is, and SLOT_BYTES is a
        // multiple of ALIGN), valid for `len <= SLOT_BYTES` initialised
        // bytes, owned by this buffer alone until `release` puts the slot
        // back on the free list, and the block is never freed.
        Some(unsafe { AlignedBuf::from_arena(ptr, len, arena) })
    }

    /// Counters for [`ArenaInfo`].
    pub(crate) fn info(&self) -> ArenaInfo {
        ArenaInfo {
            arena_bytes: self.len,
            slot_bytes: SLOT_BYTES,
            free_slots: self
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            registered_rings: self.registered_rings.load(Ordering::Relaxed),
            budget: self.budget_why.clone(),
            unavailable: None,
            refused: self.refused.get().cloned(),
        }
    }
}

impl BufferArena for Arena {
    fn release(&self, ptr: NonNull<u8>, _len: usize) {
        let offset = (ptr.as_ptr() as usize).wrapping_sub(self.base.as_ptr() as usize);
        if offset < self.len && offset % SLOT_BYTES == 0 {
            self.free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(offset / SLOT_BYTES);
        }
    }
}

/// [`ArenaInfo`] of the process's arena, without creating it.
pub(crate) fn arena_info() -> ArenaInfo {
    match ARENA.get() {
        Some(Ok(arena)) => arena.info(),
        Some(Err(why)) => ArenaInfo {
            arena_bytes: 0,
            slot_bytes: SLOT_BYTES,
            free_slots: 0,
            registered_rings: 0,
            budget: String::new(),
            unavailable: Some(why.clone()),
            refused: None,
        },
        None => ArenaInfo {
            arena_bytes: 0,
            slot_bytes: SLOT_BYTES,
            free_slots: 0,
            registered_rings: 0,
            budget: String::new(),
            unavailable: Some(
                "not created yet (no reserve_buffers or alloc_buffer call)".to_string(),
            ),
            refused: None,
        },
    }
}

/// `io::Error` for a refused registration, for messages.
pub(crate) fn registration_refused(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOMEM) => format!("IORING_REGISTER_BUFFERS refused ({e}): RLIMIT_MEMLOCK"),
        Some(libc::EPERM) => format!("IORING_REGISTER_BUFFERS refused ({e})"),
        _ => format!("IORING_REGISTER_BUFFERS failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn budget_follows_rlimit_and_capability() {
        let b = memlock_budget(Some(8 * MIB as u64), false, ARENA_CAP);
        assert_eq!(b.arena_bytes, 4 * MIB);
        assert_eq!(b.register_bytes, 4 * MIB as u64);
        assert!(b.why.contains("half of RLIMIT_MEMLOCK"), "{}", b.why);
        let b = memlock_budget(Some(8 * MIB as u64), true, ARENA_CAP);
        assert_eq!(b.arena_bytes, ARENA_CAP);
        assert_eq!(b.register_bytes, u64::MAX);
        let b = memlock_budget(None, false, ARENA_CAP);
        assert_eq!(b.arena_bytes, ARENA_CAP);
        // 64 KiB (an old default) leaves no slot; odd limits round down.
        assert_eq!(
            memlock_budget(Some(64 << 10), false, ARENA_CAP).arena_bytes,
            0
        );
        let b = memlock_budget(Some(3 * MIB as u64 + 5), false, ARENA_CAP);
        assert_eq!(b.arena_bytes, 3 * SLOT_BYTES);
        let err = Arena::new(&memlock_budget(Some(64 << 10), false, ARENA_CAP)).unwrap_err();
        assert!(err.contains("less than one"), "{err}");
    }

    #[test]
    fn cap_eff_parsing() {
        let status = "Name:\tx\nCapEff:\t000001fffeffffff\n";
        assert!(cap_eff_has(status, CAP_IPC_LOCK_BIT));
        assert!(!cap_eff_has(
            "CapEff:\t0000000000000000\n",
            CAP_IPC_LOCK_BIT
        ));
        assert!(!cap_eff_has("nothing here", CAP_IPC_LOCK_BIT));
    }

    #[test]
    fn slots_are_handed_out_zeroed_and_come_back() {
        let arena = Arc::new(
            Arena::new(&Budget {
                arena_bytes: 2 * SLOT_BYTES,
                register_bytes: 4 * SLOT_BYTES as u64,
                why: "test".into(),
            })
            .unwrap(),
        );
        let (base, len) = arena.range();
        assert_eq!(len, 2 * SLOT_BYTES);
        assert_eq!(base % ALIGN, 0);
        assert!(arena.alloc(SLOT_BYTES + ALIGN).is_none(), "too large");
        assert!(arena.alloc(100).is_none(), "unaligned length");
        let mut a = arena.alloc(SLOT_BYTES).unwrap();
        let b = arena.alloc(ALIGN).unwrap();
        assert!(a.is_from_arena() && b.is_from_arena());
        assert_eq!(a.as_ptr() as usize, base);
        assert_eq!(b.as_ptr() as usize, base + SLOT_BYTES);
        assert!(arena.alloc(ALIGN).is_none(), "all slots out");
        a.fill(0xAB);
        drop(a);
        assert_eq!(arena.info().free_slots, 1);
        let c = arena.alloc(SLOT_BYTES).unwrap();
        assert!(c.iter().all(|&x| x == 0), "a reused slot is zeroed");
        // The registration budget holds two rings' worth of the arena.
        arena.reserve_registration().unwrap();
        arena.reserve_registration().unwrap();
        let err = arena.reserve_registration().unwrap_err();
        assert!(err.contains("budget spent"), "{err}");
        arena.release_registration();
        arena.reserve_registration().unwrap();
        assert_eq!(arena.info().registered_rings, 2);
        drop((b, c));
        assert_eq!(arena.info().free_slots, 2);
        assert_eq!(arena.slots(), 2);
        // A refusal stops the hand-out for good; the first reason sticks.
        arena.note_refused("ENOMEM");
        arena.note_refused("EPERM");
        assert!(arena.alloc(ALIGN).is_none());
        assert_eq!(arena.slots(), 0);
        assert_eq!(arena.info().refused.as_deref(), Some("ENOMEM"));
    }

    /// What a first `reserve_buffers(len, count)` asks for bounds the
    /// arena: `count` slots, never more than the cap or the budget.
    #[test]
    fn arena_is_sized_from_the_first_request() {
        let cap = |slots: usize| ARENA_CAP.min(slots.saturating_mul(SLOT_BYTES));
        let b = memlock_budget(None, true, cap(5));
        assert_eq!(b.arena_bytes, 5 * SLOT_BYTES);
        let b = memlock_budget(None, true, cap(usize::MAX));
        assert_eq!(b.arena_bytes, ARENA_CAP);
        let b = memlock_budget(Some(4 * SLOT_BYTES as u64), false, cap(100));
        assert_eq!(b.arena_bytes, 2 * SLOT_BYTES, "half the rlimit wins");
        assert_eq!(memlock_budget(None, true, cap(0)).arena_bytes, 0);
    }
}
