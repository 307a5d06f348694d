//! The client's heartbeat (keepalive, dead-server detection, RTT, clock
//! offset), sans-IO.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crate::rtt::{RttEstimator, RttStats};
use crate::time::{from_unix_ms, mix64, Stall, StallLog};

/// A source of random bits for the jitter (injected, so schedules can be
/// reproduced in tests).
pub trait Entropy: Send + 'static {
    /// 64 random bits.
    fn next_u64(&mut self) -> u64;
}

/// The SplitMix64 generator: tiny, fast, good enough for jitter.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
}

impl Entropy for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
}

impl<F: FnMut() -> u64 + Send + 'static> Entropy for F {
    fn next_u64(&mut self) -> u64 {
        self()
    }
}

/// Settings of the client heartbeat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientConfig {
    /// Time between heartbeats when nothing else was sent. Default 20 s
    /// (well under the 55 s servers commonly allow and the ~60 s after which
    /// NATs and firewalls drop idle flows).
    pub interval: Duration,
    /// Each wait is `interval * (1 ± jitter)`, uniformly. Default 0.1;
    /// clamped to `0..=0.5`.
    pub jitter: f64,
    /// The server is declared dead when nothing at all arrived for longer
    /// than this. Default 60 s (three intervals). `None`: never (for
    /// servers that send nothing unprompted, like the C# seed's).
    pub timeout: Option<Duration>,
    /// Round trips kept for the clock offset estimate. Default 8.
    pub clock_samples: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            interval: Duration::from_secs(20),
            jitter: 0.1,
            timeout: Some(Duration::from_secs(60)),
            clock_samples: 8,
        }
    }
}

/// The counters and clocks the client machine reads from its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIo {
    /// When inbound bytes last arrived ([`Connection::last_active`](lubdub_worker::Connection::last_active)).
    pub last_rx: Instant,
    /// Bytes sent or queued so far, a monotonic counter (`bytes_out` plus
    /// the send buffer length): if it moved, something else was sent.
    pub tx_total: u64,
}

/// What the client should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Nothing; poll again at this instant.
    Wait(Instant),
    /// Send ping `seq`, then report the new `tx_total` with
    /// [`ClientBeat::sent`] and poll again at [`ClientBeat::wake_at`].
    Ping(u32),
    /// Nothing arrived for `silent` (stalls forgiven), more than the
    /// timeout: close the connection (the reconnect policy takes over).
    Dead {
        /// How long the server was silent.
        silent: Duration,
    },
}

/// A completed heartbeat round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundTrip {
    /// The ping answered.
    pub seq: u32,
    /// This round trip.
    pub rtt: Duration,
    /// The server's time in the pong, if any.
    pub server_time: Option<SystemTime>,
    /// RTT statistics including this sample.
    pub stats: RttStats,
}

/// One clock sample: `offset = server_time - local_time` measured with a
/// round trip of `rtt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// Round trip of the exchange (the sample's uncertainty is `rtt / 2`).
    pub rtt: Duration,
    /// Server clock minus local clock, microseconds.
    pub offset_us: i64,
}

/// The client's heartbeat state machine.
///
/// Rules:
/// * **Keepalive only when quiet**: when a ping falls due
///   (`interval ± jitter` after the previous one) and the client sent
///   nothing else since, it sends a ping; when it did send something, the
///   ping is skipped (the server saw traffic anyway) unless nothing arrived
///   for an interval either (then a ping is sent regardless, so a server
///   that only answers pings still proves it is alive).
/// * **Dead server**: nothing at all arrived (any byte counts) for longer
///   than `timeout` ⇒ [`ClientAction::Dead`]. The machine wakes exactly at
///   that deadline, so the bound is `timeout` plus timer slack.
/// * **Stalls** (a wake-up more than `interval` late: the laptop slept,
///   the process was stopped) are forgiven as for the server sweep; a ping
///   is sent at once to find out.
/// * **Round trips** give RTT (RFC 6298) and, when the pong carries the
///   server's time, a clock sample `server_time - (send_time + rtt / 2)`;
///   the offset estimate is the sample with the lowest RTT among the last
///   `clock_samples`.
///
/// ```
/// use std::time::{Duration, Instant, UNIX_EPOCH};
/// use lubdub_heartbeat::{ClientAction, ClientBeat, ClientConfig, ClientIo};
///
/// let t0 = Instant::now();
/// let cfg = ClientConfig { jitter: 0.0, ..ClientConfig::default() };
/// let mut beat = ClientBeat::new(cfg, t0, || 0u64);
/// let io = ClientIo { last_rx: t0, tx_total: 0 };
/// assert_eq!(beat.poll(t0 + Duration::from_secs(20), UNIX_EPOCH, io), ClientAction::Ping(1));
/// ```
#[derive(Debug, Clone)]
pub struct ClientBeat<R = SplitMix64> {
    cfg: ClientConfig,
    rng: R,
    started: Instant,
    next_ping: Instant,
    wake_at: Instant,
    tx_mark: Option<u64>,
    seq: u32,
    /// (seq, sent monotonic, sent wall clock)
    outstanding: VecDeque<(u32, Instant, SystemTime)>,
    rtt: RttEstimator,
    clock: VecDeque<ClockSample>,
    stalls: StallLog,
    dead: bool,
}

/// Outstanding client pings remembered (older ones are forgotten).
const MAX_OUTSTANDING: usize = 16;
/// Wake-ups after the dead deadline by this much, so a wake-up lands
/// strictly past it.
const SLACK: Duration = Duration::from_millis(1);

impl<R: Entropy> ClientBeat<R> {
    /// A machine for a connection (re)established at `now`.
    pub fn new(cfg: ClientConfig, now: Instant, rng: R) -> Self {
        let mut cfg = cfg;
        cfg.interval = cfg.interval.max(Duration::from_millis(1));
        cfg.jitter = if cfg.jitter.is_finite() {
            cfg.jitter.clamp(0.0, 0.5)
        } else {
            0.0
        };
        cfg.clock_samples = cfg.clock_samples.max(1);
        let mut beat = ClientBeat {
            cfg,
            rng,
            started: now,
            next_ping: now,
            wake_at: now,
            tx_mark: None,
            seq: 0,
            outstanding: VecDeque::new(),
            rtt: RttEstimator::new(),
            clock: VecDeque::new(),
            stalls: StallLog::new(),
            dead: false,
        };
        beat.next_ping = now + beat.jittered();
        beat.wake_at = beat.next_ping;
        if let Some(d) = beat.dead_deadline(now) {
            beat.wake_at = beat.wake_at.min(d);
        }
        beat
    }

    /// The settings in force (the interval may come from the server).
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn jittered(&mut self) -> Duration {
        let j = self.cfg.jitter;
        if j == 0.0 {
            return self.cfg.interval;
        }
        // uniform in [-1, 1)
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        self.cfg.interval.mul_f64(1.0 + j * u)
    }

    /// When the machine wants to be polled next.
    pub fn wake_at(&self) -> Instant {
        self.wake_at
    }

    /// When the next ping is due.
    pub fn next_ping(&self) -> Instant {
        self.next_ping
    }

    fn dead_deadline(&self, last_rx: Instant) -> Option<Instant> {
        let timeout = self.cfg.timeout?;
        last_rx.checked_add(self.stalls.forgiven_since(last_rx) + timeout + SLACK)
    }

    /// Decides at `now` (monotonic); `wall` is the local wall-clock time,
    /// recorded with a ping for the clock offset.
    pub fn poll(&mut self, now: Instant, wall: SystemTime, io: ClientIo) -> ClientAction {
        let last_rx = io.last_rx.max(self.started);
        if now >= self.wake_at {
            let late = now - self.wake_at;
            if late > self.cfg.interval {
                self.stalls.record(Stall {
                    start: self.wake_at,
                    end: now,
                });
                log::warn!(
                    "heartbeat: client woke {late:?} late (process stalled?); not counted as server silence"
                );
                // Probe at once.
                self.next_ping = now;
            }
        }
        self.stalls
            .prune(now, self.cfg.timeout.unwrap_or(self.cfg.interval));
        let silent = self.stalls.effective_idle(last_rx, now);
        if self.dead || self.cfg.timeout.is_some_and(|t| silent > t) {
            self.dead = true;
            return ClientAction::Dead { silent };
        }
        let mut action = None;
        if now >= self.next_ping {
            self.next_ping = now + self.jittered();
            let other_traffic = self.tx_mark.is_some_and(|m| io.tx_total != m);
            if !other_traffic || silent >= self.cfg.interval {
                self.seq = self.seq.wrapping_add(1).max(1);
                if self.outstanding.len() == MAX_OUTSTANDING {
                    self.outstanding.pop_front();
                }
                self.outstanding.push_back((self.seq, now, wall));
                action = Some(ClientAction::Ping(self.seq));
            }
            self.tx_mark = Some(io.tx_total);
        }
        self.wake_at = self.next_ping;
        if let Some(d) = self.dead_deadline(last_rx) {
            self.wake_at = self.wake_at.min(d);
        }
        action.unwrap_or(ClientAction::Wait(self.wake_at))
    }

    /// The ping was queued; `tx_total` is the counter right after it, so the
    /// ping itself is not mistaken for other traffic.
    pub fn sent(&mut self, tx_total: u64) {
        self.tx_mark = Some(tx_total);
    }

    /// A pong arrived at `now`. `seq: None` (a bare pong) answers the oldest
    /// outstanding ping. Returns `None` when it matches no outstanding ping.
    pub fn on_pong(
        &mut self,
        now: Instant,
        seq: Option<u32>,
        server_time: Option<SystemTime>,
    ) -> Option<RoundTrip> {
        let pos = match seq {
            Some(s) => self.outstanding.iter().position(|&(q, _, _)| q == s)?,
            None if self.outstanding.is_empty() => return None,
            None => 0,
        };
        let (seq, sent, sent_wall) = self.outstanding[pos];
        self.outstanding.drain(..=pos);
        let rtt = now.saturating_duration_since(sent);
        self.rtt.update(rtt);
        if let Some(st) = server_time {
            let offset = signed_us(st, sent_wall) - i64::try_from(rtt.as_micros() / 2).unwrap_or(0);
            self.push_clock(ClockSample {
                rtt,
                offset_us: offset,
            });
        }
        Some(RoundTrip {
            seq,
            rtt,
            server_time,
            stats: self.rtt.stats().expect("just updated"),
        })
    }

    /// A server ping carrying its time arrived at local wall time `wall`.
    /// With an RTT known, it is a clock sample too: the ping left the server
    /// about `rtt / 2` ago. Returns the sample, if one was taken.
    pub fn on_server_ping(
        &mut self,
        wall: SystemTime,
        server_time: SystemTime,
    ) -> Option<ClockSample> {
        let rtt = self.rtt.stats()?.latest;
        let offset = signed_us(server_time, wall) + i64::try_from(rtt.as_micros() / 2).unwrap_or(0);
        let s = ClockSample {
            rtt,
            offset_us: offset,
        };
        self.push_clock(s);
        Some(s)
    }

    fn push_clock(&mut self, s: ClockSample) {
        if self.clock.len() == self.cfg.clock_samples {
            self.clock.pop_front();
        }
        self.clock.push_back(s);
    }

    /// The server asked for another interval (the C# `SYS_START_HEARTBEAT`).
    /// Takes effect for the next ping, no later than `now + interval`. A
    /// timeout shorter than three intervals is raised to that. Zero is
    /// ignored.
    pub fn set_interval(&mut self, now: Instant, interval: Duration) {
        if interval.is_zero() {
            return;
        }
        self.cfg.interval = interval;
        self.cfg.timeout = self.cfg.timeout.map(|t| t.max(interval * 3));
        let next = now + self.jittered();
        self.next_ping = self.next_ping.min(next);
        self.wake_at = self.wake_at.min(self.next_ping);
    }

    /// RTT statistics, once a round trip completed.
    pub fn rtt(&self) -> Option<RttStats> {
        self.rtt.stats()
    }

    /// The clock samples kept, oldest first.
    pub fn clock_samples(&self) -> impl Iterator<Item = ClockSample> + '_ {
        self.clock.iter().copied()
    }

    /// Estimated server clock minus local clock, in microseconds: the
    /// lowest-RTT sample of the last `clock_samples`.
    pub fn clock_offset_us(&self) -> Option<i64> {
        self.clock.iter().min_by_key(|s| s.rtt).map(|s| s.offset_us)
    }

    /// The server's clock now, estimated from the local `now`.
    pub fn server_time(&self, local: SystemTime) -> Option<SystemTime> {
        let off = self.clock_offset_us()?;
        let d = Duration::from_micros(off.unsigned_abs());
        Some(if off >= 0 { local + d } else { local - d })
    }

    /// Whether the machine declared the server dead.
    pub fn is_dead(&self) -> bool {
        self.dead
    }
}

/// `a - b` in microseconds.
fn signed_us(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// The wall-clock time carried by a beat, if any.
pub(crate) fn beat_time(unix_ms: Option<u64>) -> Option<SystemTime> {
    unix_ms.map(from_unix_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const S: Duration = Duration::from_secs(1);
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cfg() -> ClientConfig {
        ClientConfig {
            interval: 5 * S,
            jitter: 0.0,
            timeout: Some(15 * S),
            clock_samples: 4,
        }
    }

    fn wall(t: Duration) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000) + t
    }

    #[test]
    fn pings_when_quiet_and_skips_when_other_traffic_went_out() {
        let t0 = Instant::now();
        let mut b = ClientBeat::new(cfg(), t0, SplitMix64::new(1));
        assert_eq!(b.wake_at(), t0 + 5 * S);
        let mut io = ClientIo {
            last_rx: t0,
            tx_total: 0,
        };
        assert_eq!(b.poll(t0 + 5 * S, wall(5 * S), io), ClientAction::Ping(1));
        io.tx_total = 6; // our ping
        b.sent(io.tx_total);
        // the pong came back
        io.last_rx = t0 + 5 * S + ms(10);
        assert!(b.on_pong(io.last_rx, Some(1), None).is_some());
        // quiet since: ping again at 10 s
        assert_eq!(b.poll(t0 + 10 * S, wall(10 * S), io), ClientAction::Ping(2));
        b.sent(12);
        io.tx_total = 12;
        io.last_rx = t0 + 10 * S + ms(10);
        // the application sent 100 bytes and the server answered: skip
        io.tx_total += 100;
        io.last_rx = t0 + 14 * S;
        assert_eq!(
            b.poll(t0 + 15 * S, wall(15 * S), io),
            ClientAction::Wait(t0 + 20 * S)
        );
        // nothing more from anyone: ping at 20 s
        assert_eq!(b.poll(t0 + 20 * S, wall(20 * S), io), ClientAction::Ping(3));
    }

    #[test]
    fn pings_anyway_when_sending_but_hearing_nothing() {
        let t0 = Instant::now();
        let mut b = ClientBeat::new(cfg(), t0, SplitMix64::new(1));
        let mut io = ClientIo {
            last_rx: t0,
            tx_total: 0,
        };
        assert_eq!(b.poll(t0 + 5 * S, wall(S), io), ClientAction::Ping(1));
        b.sent(6);
        // the application keeps sending, the server says nothing
        io.tx_total = 1000;
        assert_eq!(b.poll(t0 + 10 * S, wall(S), io), ClientAction::Ping(2));
    }

    #[test]
    fn dead_server_detected_at_the_timeout() {
        let t0 = Instant::now();
        let mut b = ClientBeat::new(cfg(), t0, SplitMix64::new(1));
        let io = ClientIo {
            last_rx: t0,
            tx_total: 0,
        };
        let mut now;
        let mut pings = 0;
        loop {
            now = b.wake_at();
            match b.poll(now, wall(S), io) {
                ClientAction::Ping(_) => {
                    pings += 1;
                    b.sent(6 * pings);
                }
                ClientAction::Wait(_) => {}
                ClientAction::Dead { silent } => {
                    assert!(silent > 15 * S);
                    break;
                }
            }
            assert!(now < t0 + 60 * S);
        }
        // pings at 5, 10, 15; dead right after 15 s
        assert_eq!(pings, 3);
        assert_eq!(now, t0 + 15 * S + SLACK);
        assert!(b.is_dead());
        assert!(matches!(
            b.poll(now + S, wall(S), io),
            ClientAction::Dead { .. }
        ));
    }

    #[test]
    fn jitter_is_injected_and_bounded() {
        let t0 = Instant::now();
        let c = ClientConfig {
            jitter: 0.2,
            ..cfg()
        };
        // u = -1: the shortest wait
        let b = ClientBeat::new(c, t0, || 0u64);
        assert_eq!(b.next_ping(), t0 + 4 * S);
        // u close to +1: the longest
        let b = ClientBeat::new(c, t0, || u64::MAX);
        assert!(b.next_ping() > t0 + 5999 * ms(1) && b.next_ping() <= t0 + 6 * S);
        // a seeded generator stays within bounds and varies
        let mut b = ClientBeat::new(c, t0, SplitMix64::new(42));
        let mut waits = std::collections::BTreeSet::new();
        let mut last = t0;
        let io = |t| ClientIo {
            last_rx: t,
            tx_total: 0,
        };
        for _ in 0..50 {
            let at = b.next_ping();
            let w = at - last;
            assert!(w >= 4 * S && w <= 6 * S, "{w:?}");
            waits.insert(w);
            assert!(matches!(b.poll(at, wall(S), io(at)), ClientAction::Ping(_)));
            b.sent(0);
            last = at;
        }
        assert!(waits.len() > 40);
    }

    #[test]
    fn rtt_and_clock_offset_from_the_best_sample() {
        let t0 = Instant::now();
        let mut b = ClientBeat::new(cfg(), t0, SplitMix64::new(1));
        // the server clock is 2 s ahead of ours
        let ahead = 2 * S;
        let mut io = ClientIo {
            last_rx: t0,
            tx_total: 0,
        };
        let rtts = [ms(80), ms(20), ms(50)];
        let mut now = t0;
        for (i, rtt) in rtts.iter().enumerate() {
            now = b.next_ping();
            let at = now - t0;
            assert_eq!(b.poll(now, wall(at), io), ClientAction::Ping(i as u32 + 1));
            b.sent(0);
            // the server stamps its clock halfway... but the way back is
            // slow for the 80 ms sample (asymmetric: 10 ms out, 70 back)
            let out = if i == 0 { ms(10) } else { *rtt / 2 };
            let server = wall(at + out + ahead);
            let rt = b
                .on_pong(now + *rtt, Some(i as u32 + 1), Some(server))
                .unwrap();
            assert_eq!(rt.rtt, *rtt);
            io.last_rx = now + *rtt;
        }
        let _ = now;
        let st = b.rtt().unwrap();
        assert_eq!(st.samples, 3);
        assert_eq!(st.min, ms(20));
        // the 20 ms sample wins: exactly 2 s
        assert_eq!(b.clock_offset_us(), Some(2_000_000));
        assert_eq!(b.server_time(wall(S)), Some(wall(3 * S)));
        // the asymmetric sample alone would have said 2 s - 30 ms
        let worst = b.clock_samples().max_by_key(|s| s.rtt).unwrap();
        assert_eq!(worst.offset_us, 2_000_000 - 30_000);
    }

    #[test]
    fn clock_window_keeps_the_last_n() {
        let t0 = Instant::now();
        let mut b = ClientBeat::new(cfg(), t0, SplitMix64::new(1));
        // first sample has the best RTT but it will slide out of the window
        for (i, rtt) in [ms(1), ms(30), ms(40), ms(50), ms(60)].iter().enumerate() {
            let now = b.next_ping();
            let io = ClientIo {
                last_rx: now,
                tx_total: 0,
            };
            assert!(matches!(b.poll(now, wall(S), io), ClientAction::Ping(_)));
            b.sent(0);
            let server = wall(S + *rtt / 2 + Duration::from_micros(i as u64));
            b.on_pong(now + *rtt, None, Some(server)).unwrap();
        }
        assert_eq!(b.clock_samples().count(), 4);
        // best remaining is the 30 ms one (index 1)
        assert_eq!(b.clock_offset_us(), Some(1));
    }

    #[test]
    fn server_pings_give_samples_once_rtt_known() {
        let t0 = Instant::now();
        let mut b = ClientBeat::new(cfg(), t0, SplitMix64::new(1));
        assert!(b.on_server_ping(wall(S), wall(S)).is_none());
        let now = b.next_ping();
        b.poll(
            now,
            wall(S),
            ClientIo {
                last_rx: t0,
                tx_total: 0,
            },
        );
        b.on_pong(now + ms(10), Some(1), None).unwrap();
        // server ping stamped 5 ms before we got it, server 1 s behind
        let s = b.on_server_ping(wall(10 * S), wall(9 * S - ms(5))).unwrap();
        assert_eq!(s.offset_us, -1_000_000);
    }

    #[test]
    fn unknown_pongs_are_ignored() {
        let t0 = Instant::now();
        let mut b = ClientBeat::new(cfg(), t0, SplitMix64::new(1));
        assert!(b.on_pong(t0, None, None).is_none());
        assert!(b.on_pong(t0, Some(3), None).is_none());
    }

    #[test]
    fn stall_is_forgiven_and_probed() {
        let t0 = Instant::now();
        let mut b = ClientBeat::new(cfg(), t0, SplitMix64::new(1));
        let io = ClientIo {
            last_rx: t0 + ms(100),
            tx_total: 0,
        };
        // wake due at 5 s runs at 65 s (laptop lid closed)
        let now = t0 + 65 * S;
        assert_eq!(b.poll(now, wall(S), io), ClientAction::Ping(1));
        b.sent(6);
        // 60 s of stall forgiven: dead only 15 s after (0.1 + 60 s stall)
        assert!(b.wake_at() <= t0 + 75 * S + ms(100) + SLACK);
        assert!(!matches!(
            b.poll(t0 + 75 * S, wall(S), io),
            ClientAction::Dead { .. }
        ));
        assert!(matches!(
            b.poll(t0 + 75 * S + ms(101), wall(S), io),
            ClientAction::Dead { .. }
        ));
    }

    #[test]
    fn hello_sets_interval() {
        let t0 = Instant::now();
        let mut b = ClientBeat::new(cfg(), t0, SplitMix64::new(1));
        b.set_interval(t0, 2 * S);
        assert_eq!(b.next_ping(), t0 + 2 * S);
        assert_eq!(b.wake_at(), t0 + 2 * S);
        b.set_interval(t0, 10 * S);
        assert_eq!(b.config().timeout, Some(30 * S));
        b.set_interval(t0, Duration::ZERO);
        assert_eq!(b.config().interval, 10 * S);
    }

    #[test]
    fn last_rx_before_the_session_does_not_count() {
        // A client connection is reused across reconnects; bytes of the
        // previous session must not make the new one look silent.
        let t0 = Instant::now();
        let start = t0 + 100 * S;
        let mut b = ClientBeat::new(cfg(), start, SplitMix64::new(1));
        let io = ClientIo {
            last_rx: t0,
            tx_total: 500,
        };
        assert_eq!(b.poll(start + 5 * S, wall(S), io), ClientAction::Ping(1));
    }
}
