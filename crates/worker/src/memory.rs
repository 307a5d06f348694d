//! The worker's memory budget, and giving freed memory back.
//!
//! # The budget
//!
//! Every connection's buffers (incomplete input, queued output, the
//! protocol's own bytes) are *charged* to its worker in units of
//! [`UNIT`] (64 KiB), rounded down: a connection holding less than a unit
//! (nearly every healthy one) is never charged, so the hot path touches no
//! shared counter. Charges change at the end of a poll, when a buffer grew
//! or shrank past a unit boundary.
//!
//! Past the budget, as Envoy's overload manager does with its
//! memory-pressure actions:
//! 1. connections holding a unit or more stop reading (healthy small ones
//!    go on being served) and look again every [`RECHECK`];
//! 2. if the worker stays over for [`GRACE`], the connections of the
//!    largest charge class (charges grouped by powers of two) are closed at
//!    once with `CloseReason::Overload` and an `Error::Overload` report,
//!    class after class, until the worker is under three quarters of its
//!    budget (a low watermark: an episode does not end at the first close
//!    that dips under the limit, only to start again as the others read on).
//!
//! # Giving memory back
//!
//! glibc's allocator keeps freed memory for reuse, and after the first free
//! of a large mmapped block it serves blocks of that size from its heaps,
//! which it does not unmap on free: a burst of 10 MiB messages used to leave
//! a gigabyte resident with nothing buffered. Each loop counts the large
//! buffers it frees and, when it is about to sleep and at least
//! [`TRIM_AFTER`] was freed since, calls `malloc_trim(0)`, which returns the
//! free pages of every arena to the system. Other allocators (jemalloc,
//! mimalloc) return memory by themselves; see docs/limits.md.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::clock::{instant_of, monotonic_nanos};

/// The charging unit: buffers are charged in whole 64 KiB units.
pub(crate) const UNIT: usize = 64 * 1024;
/// How often a connection held back by the budget looks again.
pub(crate) const RECHECK: Duration = Duration::from_millis(50);
/// How long the worker may stay over its budget before the largest
/// holders are closed.
pub(crate) const GRACE: Duration = Duration::from_millis(500);
/// Charge classes: class `c` holds charges of `2^c` to `2^(c+1) - 1` units.
const CLASSES: usize = 24;

/// A worker's memory budget, shared by its loops.
pub(crate) struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// Connections per charge class.
    classes: [AtomicUsize; CLASSES],
    /// [`monotonic_nanos`] when the worker went over, 0 while under.
    over_since: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
            classes: Default::default(),
            over_since: AtomicU64::new(0),
        }
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The charge of a connection holding `bytes`: whole units, rounded down.
    pub fn charge_for(bytes: usize) -> usize {
        bytes / UNIT * UNIT
    }

    /// The class of a (non-zero) charge.
    pub fn class_of(charge: usize) -> Option<usize> {
        let units = charge / UNIT;
        (units > 0).then(|| (units.ilog2() as usize).min(CLASSES - 1))
    }

    /// Moves one connection's charge from `old` to `new` (both from
    /// [`charge_for`](Self::charge_for)).
    pub fn recharge(&self, old: usize, new: usize, now: Instant) {
        if old == new {
            return;
        }
        if let Some(c) = Self::class_of(old) {
            self.classes[c].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(c) = Self::class_of(new) {
            self.classes[c].fetch_add(1, Ordering::Relaxed);
        }
        let used = if new > old {
            self.used.fetch_add(new - old, Ordering::Relaxed) + (new - old)
        } else {
            self.used.fetch_sub(old - new, Ordering::Relaxed) - (old - new)
        };
        if used > self.limit {
            let stamp = monotonic_nanos(now).max(1);
            if self
                .over_since
                .compare_exchange(0, stamp, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                log::warn!(
                    "memory budget of {} MiB exceeded ({} MiB buffered): connections \
                     holding 64 KiB or more stop reading; the largest are closed if it lasts",
                    self.limit >> 20,
                    used >> 20
                );
            }
        } else if used <= self.low_watermark() && self.over_since.swap(0, Ordering::Relaxed) != 0 {
            log::info!(
                "memory budget: back under {} MiB ({} MiB buffered)",
                self.low_watermark() >> 20,
                used >> 20
            );
        }
    }

    /// Whether more is buffered than the budget allows.
    pub fn is_over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }

    /// Where an episode over the budget ends: three quarters of it.
    fn low_watermark(&self) -> usize {
        self.limit / 4 * 3
    }

    /// Whether an episode over the budget is under way (it went over and
    /// has not come back under the low watermark yet).
    pub fn in_episode(&self) -> bool {
        self.over_since.load(Ordering::Relaxed) != 0
    }

    /// Whether the worker has been over its budget for [`GRACE`] at `now`.
    pub fn over_too_long(&self, now: Instant) -> bool {
        match self.over_since.load(Ordering::Relaxed) {
            0 => false,
            since => now.saturating_duration_since(instant_of(since)) >= GRACE,
        }
    }

    /// The largest charge class that has a connection in it.
    pub fn top_class(&self) -> Option<usize> {
        (0..CLASSES)
            .rev()
            .find(|&c| self.classes[c].load(Ordering::Relaxed) > 0)
    }
}

/// The budget's verdict on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemoryVerdict {
    /// No pressure, or this connection holds too little to matter.
    Free,
    /// Over the budget: stop reading, look again after [`RECHECK`].
    Hold,
    /// Back under the budget but still in the episode: read, but look again
    /// after [`RECHECK`] (the largest may still have to go).
    Watch,
    /// Over for too long, and among the largest holders: close.
    Close {
        /// What this connection holds, as charged.
        held: usize,
        /// The worker's budget.
        budget: usize,
    },
}

/// One connection's charge on its worker's budget, kept by the connection's
/// task: what it was charged last, in whole units.
#[derive(Debug, Default)]
pub(crate) struct MemoryAccount {
    charge: usize,
}

impl MemoryAccount {
    /// Charges `held` bytes (rounded down to whole units) in place of what
    /// was charged before.
    pub fn charge(&mut self, budget: &MemoryBudget, held: usize, now: Instant) {
        let charge = MemoryBudget::charge_for(held);
        if charge != self.charge {
            budget.recharge(self.charge, charge, now);
            self.charge = charge;
        }
    }

    /// The budget's verdict on this connection at `now`.
    #[inline]
    pub fn verdict(&self, budget: &MemoryBudget, now: Instant) -> MemoryVerdict {
        // A connection charged nothing (nearly every one) reads no shared
        // counter: the budget's cache line stays where it is.
        if self.charge == 0 || !(budget.is_over() || budget.in_episode()) {
            return MemoryVerdict::Free;
        }
        if budget.over_too_long(now) && MemoryBudget::class_of(self.charge) == budget.top_class() {
            return MemoryVerdict::Close {
                held: self.charge,
                budget: budget.limit(),
            };
        }
        if budget.is_over() {
            MemoryVerdict::Hold
        } else {
            MemoryVerdict::Watch
        }
    }
}

/// The default budget for a worker: a 64th of the machine's memory, at
/// least 64 MiB and at most 512 MiB.
pub fn default_memory_budget() -> usize {
    const MIN: usize = 64 << 20;
    const MAX: usize = 512 << 20;
    (physical_memory() / 64).clamp(MIN, MAX)
}

fn physical_memory() -> usize {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return 8 << 30;
    }
    (pages as usize).saturating_mul(page as usize)
}

/// Buffers at least this large count as "large" when freed.
pub(crate) const LARGE: usize = 1 << 20;
/// Trim once this much was freed in large buffers since the last trim.
pub(crate) const TRIM_AFTER: usize = 16 << 20;

thread_local! {
    static FREED: Cell<usize> = const { Cell::new(0) };
}

/// Notes that a buffer of `capacity` bytes is being freed on this thread.
#[inline]
pub(crate) fn note_freed(capacity: usize) {
    if capacity >= LARGE {
        FREED.with(|f| f.set(f.get().saturating_add(capacity)));
    }
}

/// Frees `buf` now (noting it if large).
pub(crate) fn release(buf: &mut Vec<u8>) {
    note_freed(buf.capacity());
    *buf = Vec::new();
}

/// Makes room for `extra` more bytes in a growing input buffer. Past
/// [`LARGE`] it grows by a quarter instead of doubling, so a multi-MiB
/// incomplete message does not reserve (and copy into) twice its size.
pub(crate) fn reserve_gently(buf: &mut Vec<u8>, extra: usize) {
    let need = buf.len().saturating_add(extra);
    if need > buf.capacity() && buf.capacity() >= LARGE {
        buf.reserve_exact((buf.capacity() / 4).max(extra));
    }
}

/// Gives freed memory back to the system if enough was freed since the
/// last time; called by an event loop about to sleep.
pub(crate) fn trim_if_worth_it() {
    if FREED.with(|f| f.get()) < TRIM_AFTER {
        return;
    }
    FREED.with(|f| f.set(0));
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_holders_are_never_charged() {
        assert_eq!(MemoryBudget::charge_for(UNIT - 1), 0);
        assert_eq!(MemoryBudget::charge_for(UNIT), UNIT);
        assert_eq!(MemoryBudget::charge_for(3 * UNIT + 5), 3 * UNIT);
        assert_eq!(MemoryBudget::class_of(0), None);
        assert_eq!(MemoryBudget::class_of(UNIT), Some(0));
        assert_eq!(MemoryBudget::class_of(3 * UNIT), Some(1));
        assert_eq!(MemoryBudget::class_of(160 * UNIT), Some(7));
    }

    #[test]
    fn an_episode_ends_under_the_low_watermark_not_at_the_limit() {
        let t0 = Instant::now();
        let b = MemoryBudget::new(8 * UNIT);
        b.recharge(0, 9 * UNIT, t0);
        assert!(b.is_over() && b.in_episode());
        b.recharge(9 * UNIT, 7 * UNIT, t0);
        assert!(!b.is_over(), "under the limit");
        assert!(b.in_episode(), "but above three quarters: still closing");
        assert!(b.over_too_long(t0 + GRACE));
        b.recharge(7 * UNIT, 6 * UNIT, t0);
        assert!(!b.in_episode(), "at three quarters: over");
    }

    #[test]
    fn over_the_budget_for_the_grace_period_then_under_again() {
        let t0 = Instant::now();
        let b = MemoryBudget::new(4 * UNIT);
        b.recharge(0, 2 * UNIT, t0);
        b.recharge(0, UNIT, t0);
        assert!(!b.is_over());
        assert_eq!(b.top_class(), Some(1));
        b.recharge(UNIT, 8 * UNIT, t0);
        assert!(b.is_over());
        assert_eq!(b.used(), 10 * UNIT);
        assert_eq!(b.top_class(), Some(3));
        assert!(!b.over_too_long(t0 + GRACE / 2));
        assert!(b.over_too_long(t0 + GRACE));
        b.recharge(8 * UNIT, 0, t0 + GRACE);
        assert!(!b.is_over());
        assert!(!b.over_too_long(t0 + GRACE * 10));
        assert_eq!(b.top_class(), Some(1));
    }

    #[test]
    fn the_default_is_within_its_bounds() {
        let d = default_memory_budget();
        assert!((64 << 20..=512 << 20).contains(&d), "{d}");
    }
}
