//! Time bookkeeping shared by the state machines: tick schedules that notice
//! when the process stalled, and a log of stalls to forgive.
//!
//! Everything here takes `now: Instant` from the caller; nothing reads a
//! clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A stretch of time during which the process (or its event loop) did not
/// run: a timer that was due at `start` only ran at `end`.
///
/// Liveness rules treat stalled time as not elapsed: a peer cannot be
/// blamed for silence while we were not listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// When the late tick was due.
    pub start: Instant,
    /// When it actually ran.
    pub end: Instant,
}

impl Stall {
    /// How long the stall lasted.
    pub fn duration(&self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }
}

/// The fixed-rate schedule of a repeating timer, used to tell how late each
/// tick is.
///
/// A tick more than `threshold` late reports a [`Stall`] from the time it
/// was due to the time it ran. After a tick the next one is expected at the
/// first point of the fixed-rate grid after `now` (the worker's timers skip
/// missed ticks, they do not replay them).
///
/// ```
/// use std::time::{Duration, Instant};
/// use lubdub_heartbeat::Ticker;
///
/// let t0 = Instant::now();
/// let s = Duration::from_secs(1);
/// let mut t = Ticker::new(t0, 10 * s, 10 * s);
/// assert_eq!(t.tick(t0 + 10 * s), None);            // on time
/// let stall = t.tick(t0 + 45 * s).unwrap();          // due at 20 s, ran at 45 s
/// assert_eq!(stall.duration(), 25 * s);
/// assert_eq!(t.next_due(), t0 + 50 * s);
/// ```
#[derive(Debug, Clone)]
pub struct Ticker {
    period: Duration,
    threshold: Duration,
    next: Instant,
}

impl Ticker {
    /// A schedule with its first tick due at `now + period`. A zero period
    /// is treated as 1 ms.
    pub fn new(now: Instant, period: Duration, threshold: Duration) -> Self {
        let period = period.max(Duration::from_millis(1));
        Ticker {
            period,
            threshold,
            next: now + period,
        }
    }

    /// The tick period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// When the next tick is due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// Records that the tick ran at `now`; returns the stall if it ran more
    /// than the threshold late.
    pub fn tick(&mut self, now: Instant) -> Option<Stall> {
        if now < self.next {
            // Early (timer granularity): this is the tick that was due.
            self.next += self.period;
            return None;
        }
        let late = now - self.next;
        let stall = (late > self.threshold).then_some(Stall {
            start: self.next,
            end: now,
        });
        let periods = late.as_nanos() / self.period.as_nanos() + 1;
        let skip = u32::try_from(periods).unwrap_or(u32::MAX);
        self.next = self
            .next
            .checked_add(self.period.saturating_mul(skip))
            .unwrap_or(now + self.period);
        stall
    }
}

/// Stalls to forgive, oldest first.
///
/// [`forgiven_since(t)`](Self::forgiven_since) is how much of the recorded
/// stall time lies after `t`: a peer last heard at `t` is only blamed for
/// `now - t - forgiven_since(t)` of silence.
///
/// ```
/// use std::time::{Duration, Instant};
/// use lubdub_heartbeat::{Stall, StallLog};
///
/// let t0 = Instant::now();
/// let s = Duration::from_secs(1);
/// let mut log = StallLog::new();
/// log.record(Stall { start: t0 + 20 * s, end: t0 + 45 * s });
/// assert_eq!(log.forgiven_since(t0), 25 * s);           // heard before the stall
/// assert_eq!(log.forgiven_since(t0 + 30 * s), 15 * s);  // during it
/// assert_eq!(log.forgiven_since(t0 + 50 * s), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Default)]
pub struct StallLog {
    stalls: VecDeque<Stall>,
}

impl StallLog {
    /// At most this many stalls are kept; older ones are merged (which only
    /// forgives more, never less).
    pub const MAX_RECORDS: usize = 32;

    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stall. Overlapping or touching stalls are merged.
    pub fn record(&mut self, stall: Stall) {
        if stall.end <= stall.start {
            return;
        }
        if let Some(last) = self.stalls.back_mut() {
            if stall.start <= last.end && stall.end >= last.start {
                last.start = last.start.min(stall.start);
                last.end = last.end.max(stall.end);
                return;
            }
        }
        self.stalls.push_back(stall);
        if self.stalls.len() > Self::MAX_RECORDS {
            if let Some(oldest) = self.stalls.pop_front() {
                if let Some(next) = self.stalls.front_mut() {
                    next.start = next.start.min(oldest.start);
                }
            }
        }
    }

    /// Recorded stall time after `since`.
    pub fn forgiven_since(&self, since: Instant) -> Duration {
        let mut total = Duration::ZERO;
        for s in self.stalls.iter().rev() {
            if s.end <= since {
                break;
            }
            total += s.end - s.start.max(since);
        }
        total
    }

    /// Total recorded stall time.
    pub fn total(&self) -> Duration {
        self.stalls.iter().map(Stall::duration).sum()
    }

    /// Number of stall records kept.
    pub fn len(&self) -> usize {
        self.stalls.len()
    }

    /// Whether no stall is recorded.
    pub fn is_empty(&self) -> bool {
        self.stalls.is_empty()
    }

    /// Drops stalls that can no longer change a verdict with the given
    /// `horizon` (the longest timeout judged against this log): anything
    /// last heard before such a stall is over its timeout even with every
    /// recorded stall forgiven.
    pub fn prune(&mut self, now: Instant, horizon: Duration) {
        let keep_for = horizon.saturating_add(self.total());
        while let Some(front) = self.stalls.front() {
            if now.saturating_duration_since(front.end) > keep_for {
                self.stalls.pop_front();
            } else {
                break;
            }
        }
    }

    /// Idle time of something last active at `last`, stalls forgiven.
    pub fn effective_idle(&self, last: Instant, now: Instant) -> Duration {
        let raw = now.saturating_duration_since(last);
        raw.saturating_sub(self.forgiven_since(last))
    }
}

/// Milliseconds since the Unix epoch of a wall-clock time (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall-clock time `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// SplitMix64's output function: a cheap, well-mixed hash of a `u64`.
pub(crate) fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ticker_on_time_and_jitter_are_not_stalls() {
        let t0 = Instant::now();
        let mut t = Ticker::new(t0, 10 * S, 10 * S);
        assert_eq!(t.tick(t0 + 10 * S + Duration::from_millis(3)), None);
        assert_eq!(t.next_due(), t0 + 20 * S);
        // up to the threshold late is fine
        assert_eq!(t.tick(t0 + 30 * S), None);
        assert_eq!(t.next_due(), t0 + 40 * S);
        // slightly early (timer granularity) counts as the due tick
        assert_eq!(t.tick(t0 + 40 * S - Duration::from_millis(1)), None);
        assert_eq!(t.next_due(), t0 + 50 * S);
    }

    #[test]
    fn ticker_reports_stall_beyond_threshold() {
        let t0 = Instant::now();
        let mut t = Ticker::new(t0, 10 * S, 10 * S);
        let st = t
            .tick(t0 + 10 * S + 10 * S + Duration::from_millis(1))
            .unwrap();
        assert_eq!(st.start, t0 + 10 * S);
        assert_eq!(st.duration(), 10 * S + Duration::from_millis(1));
        assert_eq!(t.next_due(), t0 + 30 * S);
    }

    #[test]
    fn log_merges_overlaps_and_sums_after() {
        let t0 = Instant::now();
        let mut log = StallLog::new();
        log.record(Stall {
            start: t0 + 10 * S,
            end: t0 + 20 * S,
        });
        log.record(Stall {
            start: t0 + 15 * S,
            end: t0 + 25 * S,
        });
        assert_eq!(log.len(), 1);
        log.record(Stall {
            start: t0 + 40 * S,
            end: t0 + 45 * S,
        });
        assert_eq!(log.len(), 2);
        assert_eq!(log.total(), 20 * S);
        assert_eq!(log.forgiven_since(t0), 20 * S);
        assert_eq!(log.forgiven_since(t0 + 22 * S), 8 * S);
        assert_eq!(log.forgiven_since(t0 + 30 * S), 5 * S);
        assert_eq!(log.forgiven_since(t0 + 45 * S), Duration::ZERO);
        assert_eq!(log.effective_idle(t0, t0 + 60 * S), 40 * S);
        // empty and inverted stalls are ignored
        log.record(Stall {
            start: t0 + 50 * S,
            end: t0 + 50 * S,
        });
        assert_eq!(log.len(), 2);
    }

    #[test]
    fn log_is_bounded_and_merging_only_forgives_more() {
        let t0 = Instant::now();
        let mut log = StallLog::new();
        for i in 0..100u32 {
            log.record(Stall {
                start: t0 + 10 * i * S,
                end: t0 + (10 * i + 2) * S,
            });
        }
        assert_eq!(log.len(), StallLog::MAX_RECORDS);
        // everything after t0 is at least the 200 s actually stalled
        assert!(log.forgiven_since(t0) >= 200 * S);
    }

    #[test]
    fn prune_keeps_what_can_matter() {
        let t0 = Instant::now();
        let mut log = StallLog::new();
        log.record(Stall {
            start: t0,
            end: t0 + 5 * S,
        });
        log.prune(t0 + 60 * S, 55 * S); // 55 s after its end: within 55 + 5
        assert_eq!(log.len(), 1);
        log.prune(t0 + 66 * S, 55 * S);
        assert!(log.is_empty());
    }

    #[test]
    fn unix_ms_round_trips() {
        let t = from_unix_ms(1_700_000_000_123);
        assert_eq!(unix_ms(t), 1_700_000_000_123);
        assert_eq!(unix_ms(UNIX_EPOCH - S), 0);
    }
}
