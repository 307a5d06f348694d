//! Server-originated pings (MagicOnion style), per connection, sans-IO.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rtt::{RttEstimator, RttStats};
use crate::time::{mix64, StallLog};

/// Settings of server pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingConfig {
    /// Time between two pings to the same connection.
    pub interval: Duration,
    /// How long a ping may stay unanswered.
    pub ack_timeout: Duration,
    /// `false` (default): any inbound bytes after a ping prove the peer
    /// alive, like the idle sweep; only a peer that sent nothing at all
    /// since a ping `ack_timeout` ago is dead. `true`: only acks count
    /// (MagicOnion's rule): a peer that talks but never acks is closed.
    pub require_ack: bool,
}

impl PingConfig {
    /// Pings every `interval`, acks due within 5 s, any traffic counts.
    pub fn new(interval: Duration) -> Self {
        PingConfig {
            interval,
            ack_timeout: Duration::from_secs(5),
            require_ack: false,
        }
    }
}

/// What [`PingState::poll`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingVerdict {
    /// Nothing to do.
    Idle,
    /// Send ping number `seq` now (it is recorded as outstanding).
    Ping(u32),
    /// Ping `seq` has gone unanswered (and, unless acks are required, the
    /// peer silent) for `waited`, more than the ack timeout.
    Dead {
        /// The ping that timed out.
        seq: u32,
        /// How long it waited, stalls forgiven.
        waited: Duration,
    },
}

/// An acknowledged ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckSample {
    /// The acknowledged sequence number.
    pub seq: u32,
    /// This round trip.
    pub rtt: Duration,
    /// Pings cleared by this ack (it and all older outstanding ones).
    pub cleared: usize,
    /// The connection's statistics including this sample.
    pub stats: RttStats,
}

/// At most this many pings are remembered as outstanding; older ones are
/// forgotten (an ack for them is then ignored).
pub const MAX_OUTSTANDING: usize = 32;

/// Ping schedule, outstanding pings and RTT of one connection.
///
/// * Pings are sent every `interval` on a per-connection fixed-rate grid
///   whose phase comes from the connection id ([`PingState::phase`]), so
///   the pings of many connections are spread over the interval instead of
///   leaving in one burst.
/// * An ack for **any** outstanding sequence number counts, not only for
///   the latest: it clears that ping and every older one. The RTT sample is
///   the acked ping's own round trip (unambiguous, sequence numbers are
///   never reused within the window).
/// * RTT: latest, RFC 6298 smoothed and variation, minimum.
///
/// ```
/// use std::time::{Duration, Instant};
/// use lubdub_heartbeat::{PingConfig, PingState, PingVerdict, StallLog};
///
/// let t0 = Instant::now();
/// let ms = Duration::from_millis;
/// let cfg = PingConfig::new(Duration::from_secs(1));
/// let mut p = PingState::new(&cfg, t0, Duration::ZERO);
/// let none = StallLog::new();
/// assert_eq!(p.poll(&cfg, t0, t0, &none), PingVerdict::Ping(1));
/// let ack = p.on_ack(t0 + ms(30), Some(1)).unwrap();
/// assert_eq!(ack.rtt, ms(30));
/// ```
#[derive(Debug, Clone)]
pub struct PingState {
    next_ping: Instant,
    seq: u32,
    outstanding: VecDeque<(u32, Instant)>,
    rtt: RttEstimator,
    started: Instant,
}

impl PingState {
    /// The phase of connection `id` within `interval`: a hash of the id,
    /// uniform over `[0, interval)`.
    pub fn phase(id: u64, interval: Duration) -> Duration {
        let n = interval.as_nanos().max(1);
        let x = u128::from(mix64(id)) % n;
        Duration::from_nanos(u64::try_from(x).unwrap_or(u64::MAX))
    }

    /// A connection established at `now` whose first ping is due at
    /// `now + phase`.
    pub fn new(_cfg: &PingConfig, now: Instant, phase: Duration) -> Self {
        PingState {
            next_ping: now + phase,
            seq: 0,
            outstanding: VecDeque::new(),
            rtt: RttEstimator::new(),
            started: now,
        }
    }

    /// When the next ping is due.
    pub fn next_ping(&self) -> Instant {
        self.next_ping
    }

    /// Forgets the outstanding pings: the codec's pings are keep-alives
    /// no peer answers ([`HeartbeatCodec::answered`](crate::HeartbeatCodec::answered)),
    /// so none is waited for.
    pub fn forget_outstanding(&mut self) {
        self.outstanding.clear();
    }

    /// Outstanding pings, oldest first: `(seq, sent)`.
    pub fn outstanding(&self) -> impl Iterator<Item = (u32, Instant)> + '_ {
        self.outstanding.iter().copied()
    }

    /// RTT statistics, once a ping was acked.
    pub fn rtt(&self) -> Option<RttStats> {
        self.rtt.stats()
    }

    /// Decides at `now`; `last_rx` is when inbound bytes last arrived,
    /// `stalls` the loop's forgiven stalls.
    pub fn poll(
        &mut self,
        cfg: &PingConfig,
        now: Instant,
        last_rx: Instant,
        stalls: &StallLog,
    ) -> PingVerdict {
        let last_rx = last_rx.max(self.started);
        let waiting = if cfg.require_ack {
            self.outstanding.front()
        } else {
            // The first ping sent after the peer's last bytes.
            self.outstanding.iter().find(|(_, sent)| *sent >= last_rx)
        };
        if let Some(&(seq, sent)) = waiting {
            let waited = stalls.effective_idle(sent, now);
            if waited > cfg.ack_timeout {
                return PingVerdict::Dead { seq, waited };
            }
        }
        if now < self.next_ping {
            return PingVerdict::Idle;
        }
        // Next grid point after `now` (missed ones are skipped).
        let interval = cfg.interval.max(Duration::from_millis(1));
        let late = now - self.next_ping;
        let skip = u32::try_from(late.as_nanos() / interval.as_nanos() + 1).unwrap_or(u32::MAX);
        self.next_ping = self
            .next_ping
            .checked_add(interval.saturating_mul(skip))
            .unwrap_or(now + interval);
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        if self.outstanding.len() == MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((self.seq, now));
        PingVerdict::Ping(self.seq)
    }

    /// An ack arrived at `now`. `seq: None` (a bare pong) acknowledges the
    /// oldest outstanding ping (answers come back in order on a stream).
    /// Returns `None` for an unknown, stale or duplicate sequence number.
    pub fn on_ack(&mut self, now: Instant, seq: Option<u32>) -> Option<AckSample> {
        let pos = match seq {
            Some(s) => self.outstanding.iter().position(|&(q, _)| q == s)?,
            None if self.outstanding.is_empty() => return None,
            None => 0,
        };
        let (seq, sent) = self.outstanding[pos];
        self.outstanding.drain(..=pos);
        let rtt = now.saturating_duration_since(sent);
        self.rtt.update(rtt);
        Some(AckSample {
            seq,
            rtt,
            cleared: pos + 1,
            stats: self.rtt.stats().expect("just updated"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Stall;

    const S: Duration = Duration::from_secs(1);
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cfg() -> PingConfig {
        PingConfig {
            interval: 10 * S,
            ack_timeout: 5 * S,
            require_ack: false,
        }
    }

    #[test]
    fn pings_on_a_fixed_grid_from_the_phase() {
        let t0 = Instant::now();
        let c = cfg();
        let none = StallLog::new();
        let mut p = PingState::new(&c, t0, 3 * S);
        assert_eq!(p.poll(&c, t0 + 2 * S, t0, &none), PingVerdict::Idle);
        assert_eq!(p.poll(&c, t0 + 3 * S, t0, &none), PingVerdict::Ping(1));
        assert_eq!(p.next_ping(), t0 + 13 * S);
        p.on_ack(t0 + 3 * S + ms(1), Some(1)).unwrap();
        // the loop was late: 13 s and 23 s are skipped, not replayed
        assert_eq!(
            p.poll(&c, t0 + 25 * S, t0 + 25 * S, &none),
            PingVerdict::Ping(2)
        );
        assert_eq!(p.next_ping(), t0 + 33 * S);
        assert_eq!(
            p.poll(&c, t0 + 26 * S, t0 + 26 * S, &none),
            PingVerdict::Idle
        );
    }

    #[test]
    fn phases_spread_over_the_interval() {
        let interval = 10 * S;
        let mut buckets = [0usize; 10];
        for id in 1..=10_000u64 {
            let ph = PingState::phase(id, interval);
            assert!(ph < interval);
            buckets[(ph.as_secs()) as usize] += 1;
        }
        // roughly 1000 per second-bucket: no burst
        for b in buckets {
            assert!((850..1150).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn any_outstanding_seq_acks_and_clears_older() {
        let t0 = Instant::now();
        let c = cfg();
        let none = StallLog::new();
        let mut p = PingState::new(&c, t0, Duration::ZERO);
        // three pings, the peer (slow) answers none yet but keeps talking
        for k in 0..3u32 {
            let now = t0 + 10 * S * k;
            assert_eq!(p.poll(&c, now, now, &none), PingVerdict::Ping(k + 1));
        }
        // the ack of the middle one arrives: it counts, and clears ping 1
        let a = p.on_ack(t0 + 20 * S + ms(500), Some(2)).unwrap();
        assert_eq!(a.seq, 2);
        assert_eq!(a.cleared, 2);
        assert_eq!(a.rtt, 10 * S + ms(500));
        assert_eq!(p.outstanding().map(|(s, _)| s).collect::<Vec<_>>(), [3]);
        // a late ack of 1 is stale now; a duplicate of 2 too
        assert!(p.on_ack(t0 + 21 * S, Some(1)).is_none());
        assert!(p.on_ack(t0 + 21 * S, Some(2)).is_none());
        // a bare pong acks the oldest outstanding
        let a = p.on_ack(t0 + 20 * S + ms(40), None).unwrap();
        assert_eq!((a.seq, a.rtt), (3, ms(40)));
        assert!(p.on_ack(t0 + 21 * S, None).is_none());
        let st = p.rtt().unwrap();
        assert_eq!(st.samples, 2);
        assert_eq!(st.min, ms(40));
        assert_eq!(st.latest, ms(40));
    }

    #[test]
    fn silent_peer_dies_after_ack_timeout() {
        let t0 = Instant::now();
        let c = cfg();
        let none = StallLog::new();
        let mut p = PingState::new(&c, t0, S);
        assert_eq!(p.poll(&c, t0 + S, t0, &none), PingVerdict::Ping(1));
        assert_eq!(p.poll(&c, t0 + 6 * S, t0, &none), PingVerdict::Idle);
        assert_eq!(
            p.poll(&c, t0 + 6 * S + ms(1), t0, &none),
            PingVerdict::Dead {
                seq: 1,
                waited: 5 * S + ms(1)
            }
        );
    }

    #[test]
    fn traffic_after_a_ping_counts_unless_acks_are_required() {
        let t0 = Instant::now();
        let none = StallLog::new();
        let mut c = cfg();
        let mut p = PingState::new(&c, t0, S);
        assert_eq!(p.poll(&c, t0 + S, t0, &none), PingVerdict::Ping(1));
        // the peer sent bytes at 2 s (not an ack): alive at 7 s
        assert_eq!(p.poll(&c, t0 + 7 * S, t0 + 2 * S, &none), PingVerdict::Idle);
        // ping 2 at 11 s, then silence: dead 5 s after ping 2
        assert_eq!(
            p.poll(&c, t0 + 11 * S, t0 + 2 * S, &none),
            PingVerdict::Ping(2)
        );
        assert!(matches!(
            p.poll(&c, t0 + 16 * S + ms(1), t0 + 2 * S, &none),
            PingVerdict::Dead { seq: 2, .. }
        ));
        c.require_ack = true;
        let mut p = PingState::new(&c, t0, S);
        assert_eq!(p.poll(&c, t0 + S, t0, &none), PingVerdict::Ping(1));
        assert!(matches!(
            p.poll(&c, t0 + 7 * S, t0 + 7 * S, &none),
            PingVerdict::Dead { seq: 1, .. }
        ));
    }

    #[test]
    fn stalls_are_not_blamed_on_the_peer() {
        let t0 = Instant::now();
        let c = cfg();
        let mut p = PingState::new(&c, t0, S);
        let mut log = StallLog::new();
        assert_eq!(p.poll(&c, t0 + S, t0, &log), PingVerdict::Ping(1));
        // the loop froze from 2 s to 60 s
        log.record(Stall {
            start: t0 + 2 * S,
            end: t0 + 60 * S,
        });
        assert_eq!(p.poll(&c, t0 + 60 * S, t0, &log), PingVerdict::Ping(2));
        // ping 1 waited 1 s before and 0.5 s after the stall
        assert!(!matches!(
            p.poll(&c, t0 + 60 * S + ms(500), t0, &log),
            PingVerdict::Dead { .. }
        ));
        assert!(matches!(
            p.poll(&c, t0 + 64 * S + ms(1), t0, &log),
            PingVerdict::Dead { seq: 1, .. }
        ));
    }

    #[test]
    fn outstanding_is_bounded_and_seq_skips_zero() {
        let t0 = Instant::now();
        let c = cfg();
        let none = StallLog::new();
        let mut p = PingState::new(&c, t0, Duration::ZERO);
        p.seq = u32::MAX - 1;
        for k in 0..40u32 {
            let now = t0 + 10 * S * k;
            let v = p.poll(&c, now, now, &none);
            assert!(matches!(v, PingVerdict::Ping(s) if s != 0), "{v:?}");
        }
        assert_eq!(p.outstanding().count(), MAX_OUTSTANDING);
    }
}
