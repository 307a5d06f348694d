//! What each event loop counted: written by that loop alone, read by anyone
//! (`WorkerHandle::loop_stats`, an operator's `status`, a metrics scrape).
//!
//! Nothing here is on the per-message path. A connection's traffic is
//! counted on the connection (`Connection::stats`); a loop's totals are
//! what its closed connections left behind ([`LoopCounters::retire`], once
//! per connection) plus its live connections' counters, summed when asked.
//! The per-loop events (accepts, closes by reason, handshakes that failed,
//! full-buffer episodes) are counted once per event, and the loop's lag
//! once per timer pass.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock::bump;
use crate::error::CloseReason;

/// The kinds of [`CloseReason`], in a fixed order (the index of a counter).
pub const CLOSE_KINDS: [&str; 16] = [
    "local",
    "destroyed",
    "peer_closed",
    "io",
    "protocol",
    "session",
    "panic",
    "flush_timeout",
    "worker_stopped",
    "heartbeat_timeout",
    "first_message_timeout",
    "message_timeout",
    "handshake_timeout",
    "overload",
    "custom",
    "restart",
];

/// The index of `reason`'s kind in [`CLOSE_KINDS`].
pub fn close_kind(reason: &CloseReason) -> usize {
    match reason {
        CloseReason::Local => 0,
        CloseReason::Destroyed => 1,
        CloseReason::PeerClosed => 2,
        CloseReason::Io(_) => 3,
        CloseReason::Protocol => 4,
        CloseReason::Session(_) => 5,
        CloseReason::Panic => 6,
        CloseReason::FlushTimeout => 7,
        CloseReason::WorkerStopped => 8,
        CloseReason::HeartbeatTimeout => 9,
        CloseReason::FirstMessageTimeout => 10,
        CloseReason::MessageTimeout => 11,
        CloseReason::HandshakeTimeout => 12,
        CloseReason::Overload => 13,
        CloseReason::Custom(_) => 14,
        CloseReason::Restart => 15,
    }
}

/// Upper bounds of the loop-lag histogram's buckets (the last is +Inf).
pub const LAG_BUCKETS: [Duration; 12] = [
    Duration::from_micros(50),
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
];

/// Traffic counters of closed connections.
#[derive(Debug, Default)]
struct Traffic {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
}

/// The counters of one event loop.
#[derive(Debug, Default)]
pub(crate) struct LoopCounters {
    accepted: AtomicU64,
    closed: [AtomicU64; CLOSE_KINDS.len()],
    handshake_failures: AtomicU64,
    buffer_full: AtomicU64,
    retired: Traffic,
    /// Connection tasks alive on the loop (handshaking, open, lingering).
    sockets: AtomicUsize,
    /// `Timer::add` timers pending on the loop.
    timers: AtomicUsize,
    lag: [AtomicU64; LAG_BUCKETS.len() + 1],
    lag_sum_us: AtomicU64,
}

/// What a closed connection leaves to its loop's totals.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Retired {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub buffer_full: u64,
}

impl LoopCounters {
    /// A connection was accepted (a worker's loop).
    pub fn accepted(&self) {
        bump(&self.accepted, 1);
    }

    /// A connection task started on the loop.
    pub fn socket_opened(&self) {
        self.sockets.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection task ended: its totals join the loop's, its close (or
    /// its failed handshake) is counted.
    pub fn retire(&self, totals: Retired, closed: Option<&CloseReason>) {
        self.sockets.fetch_sub(1, Ordering::Relaxed);
        bump(&self.retired.bytes_in, totals.bytes_in);
        bump(&self.retired.bytes_out, totals.bytes_out);
        bump(&self.retired.messages_in, totals.messages_in);
        bump(&self.retired.messages_out, totals.messages_out);
        bump(&self.buffer_full, totals.buffer_full);
        match closed {
            Some(reason) => bump(&self.closed[close_kind(reason)], 1),
            None => bump(&self.handshake_failures, 1),
        }
    }

    /// The loop ran a timer `lag` after its deadline.
    pub fn lagged(&self, lag: Duration) {
        let i = LAG_BUCKETS
            .iter()
            .position(|b| lag <= *b)
            .unwrap_or(LAG_BUCKETS.len());
        bump(&self.lag[i], 1);
        bump(&self.lag_sum_us, lag.as_micros() as u64);
    }

    /// `Timer::add` timers pending now.
    pub fn set_timers(&self, n: usize) {
        self.timers.store(n, Ordering::Relaxed);
    }

    /// A snapshot, with `live` (the loop's live connections' traffic,
    /// summed by the caller) added to the retired totals.
    pub fn snapshot(&self, index: usize, connections: usize, live: Retired) -> LoopStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut lag = [0; LAG_BUCKETS.len() + 1];
        for (out, c) in lag.iter_mut().zip(&self.lag) {
            *out = g(c);
        }
        LoopStats {
            index,
            connections,
            sockets: self.sockets.load(Ordering::Relaxed),
            accepted: g(&self.accepted),
            closed: std::array::from_fn(|i| g(&self.closed[i])),
            handshake_failures: g(&self.handshake_failures),
            buffer_full: g(&self.buffer_full) + live.buffer_full,
            bytes_in: g(&self.retired.bytes_in) + live.bytes_in,
            bytes_out: g(&self.retired.bytes_out) + live.bytes_out,
            messages_in: g(&self.retired.messages_in) + live.messages_in,
            messages_out: g(&self.retired.messages_out) + live.messages_out,
            timers: self.timers.load(Ordering::Relaxed),
            lag_buckets: lag,
            lag_sum: Duration::from_micros(g(&self.lag_sum_us)),
        }
    }
}

/// What one event loop of a worker counted since it started
/// ([`WorkerHandle::loop_stats`](crate::WorkerHandle::loop_stats)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopStats {
    /// The loop's index (0..count).
    pub index: usize,
    /// Established connections on the loop now.
    pub connections: usize,
    /// Sockets open on the loop now (handshaking and lingering too).
    pub sockets: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed, by kind of [`CloseReason`] (see [`CLOSE_KINDS`]).
    pub closed: [u64; CLOSE_KINDS.len()],
    /// Connections that closed before they were established (a TLS or
    /// protocol handshake refused, failed or timed out).
    pub handshake_failures: u64,
    /// Full-send-buffer episodes (Workerman's "send fail").
    pub buffer_full: u64,
    /// Bytes read, by live and closed connections.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Messages decoded.
    pub messages_in: u64,
    /// Messages queued by `send`.
    pub messages_out: u64,
    /// `Timer::add` timers pending.
    pub timers: usize,
    /// How late the loop ran its timers: counts per bucket of
    /// [`LAG_BUCKETS`] (non-cumulative; the last counts the rest).
    pub lag_buckets: [u64; LAG_BUCKETS.len() + 1],
    /// The sum of those lags.
    pub lag_sum: Duration,
}

impl LoopStats {
    /// Connections closed, all kinds together.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_counted_by_kind_and_totals_add_the_live_ones() {
        let c = LoopCounters::default();
        c.accepted();
        c.socket_opened();
        c.socket_opened();
        c.retire(
            Retired {
                bytes_in: 10,
                messages_in: 2,
                buffer_full: 1,
                ..Retired::default()
            },
            Some(&CloseReason::Overload),
        );
        c.retire(Retired::default(), None);
        let s = c.snapshot(
            3,
            1,
            Retired {
                bytes_in: 5,
                ..Retired::default()
            },
        );
        assert_eq!(
            (s.index, s.connections, s.sockets, s.accepted),
            (3, 1, 0, 1)
        );
        assert_eq!(s.closed[close_kind(&CloseReason::Overload)], 1);
        assert_eq!(CLOSE_KINDS[close_kind(&CloseReason::Overload)], "overload");
        assert_eq!((s.closed_total(), s.handshake_failures), (1, 1));
        assert_eq!((s.bytes_in, s.messages_in, s.buffer_full), (15, 2, 1));
    }

    #[test]
    fn lags_fall_in_their_buckets() {
        let c = LoopCounters::default();
        c.lagged(Duration::from_micros(10));
        c.lagged(Duration::from_millis(3));
        c.lagged(Duration::from_secs(2));
        let s = c.snapshot(0, 0, Retired::default());
        assert_eq!(s.lag_buckets[0], 1);
        assert_eq!(s.lag_buckets[6], 1, "3 ms is under 5 ms");
        assert_eq!(s.lag_buckets[LAG_BUCKETS.len()], 1, "over every bound");
        assert_eq!(s.lag_sum, Duration::from_micros(2_003_010));
    }
}
