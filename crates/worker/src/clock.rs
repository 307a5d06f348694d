//! The monotonic stamps stored in connections: nanoseconds from a
//! process-wide origin, so a stamp fits one atomic and a sweep compares raw
//! numbers instead of building an `Instant` per connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The process-wide origin of the monotonic timestamps stored in connections.
pub(crate) fn clock_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from a process-wide origin to `t` (0 for instants before it).
/// The unit of [`Connection::last_active_nanos`](crate::Connection::last_active_nanos):
/// compute a cutoff once with this and compare raw stamps against it, no
/// `Instant` per connection (the heartbeat's sweep does).
pub fn monotonic_nanos(t: Instant) -> u64 {
    t.saturating_duration_since(clock_epoch()).as_nanos() as u64
}

/// The `Instant` of a stamp made by [`monotonic_nanos`].
pub(crate) fn instant_of(nanos: u64) -> Instant {
    clock_epoch() + Duration::from_nanos(nanos)
}

/// Adds to a counter only the connection's own loop writes: a plain load
/// and store, no locked read-modify-write on the hot path.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}
