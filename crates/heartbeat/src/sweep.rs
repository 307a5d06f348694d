//! The server's idle sweep (Workerman's heartbeat timer), sans-IO.

use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use lubdub_worker::{Connection, Protocol};

use crate::time::{Stall, StallLog, Ticker};

/// What the sweep needs to know about a connection: when bytes last
/// arrived and which event loop owns it.
///
/// Implemented for [`Connection`]; benchmarks and tests can implement it
/// for a stand-in holding an atomic.
pub trait Liveness {
    /// When inbound bytes last arrived (monotonic).
    fn last_active(&self) -> Instant;
    /// The index of the event loop that drives the connection.
    fn loop_index(&self) -> usize;
    /// `last_active` as raw `lubdub_worker::monotonic_nanos`, when the
    /// type can give it with one load: sweeps then compare integers instead
    /// of building an `Instant` per connection.
    fn last_active_nanos(&self) -> Option<u64> {
        None
    }
}

impl<P: Protocol> Liveness for Connection<P> {
    #[inline]
    fn last_active(&self) -> Instant {
        Connection::last_active(self)
    }

    #[inline]
    fn loop_index(&self) -> usize {
        Connection::loop_index(self)
    }

    #[inline]
    fn last_active_nanos(&self) -> Option<u64> {
        Some(Connection::last_active_nanos(self))
    }
}

/// Settings of the idle sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepConfig {
    /// How often the sweep runs. Default 10 s (Workerman's timer).
    pub check_interval: Duration,
    /// A connection with no inbound bytes for longer than this is closed.
    /// Default 55 s (Workerman's `HEARTBEAT_TIME`).
    pub timeout: Duration,
    /// A sweep tick running more than this late is a stall: the time is
    /// forgiven instead of blamed on the peers. Default: the check interval.
    pub stall_threshold: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            check_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(55),
            stall_threshold: Duration::from_secs(10),
        }
    }
}

/// Outcome of one sweep pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Connections looked at (those of the loop, or all).
    pub scanned: usize,
    /// Connections found idle beyond the timeout.
    pub expired: usize,
    /// The stall detected on this tick, if it ran late.
    pub stall: Option<Stall>,
}

/// The idle sweep: every `check_interval`, connections silent for longer
/// than `timeout` are expired.
///
/// * **Any inbound byte counts as life**: the clock is
///   [`Connection::last_active`], which the worker updates on every read, so
///   a slow upload of one big message is not mistaken for silence.
/// * **Detection bound**: a silent peer is expired by the first sweep after
///   `timeout`, so within `timeout + check_interval` of its last byte.
/// * **Stall tolerance**: when a tick runs more than `stall_threshold` late
///   (the process was stopped, the machine slept, the loop was starved),
///   the late time is recorded in a [`StallLog`] and not counted as
///   silence, so a resumed server does not close every connection at once.
///
/// The per-connection check is one atomic load and one comparison; the
/// stall log is consulted only for connections already past the timeout.
///
/// ```
/// use std::time::{Duration, Instant};
/// use lubdub_heartbeat::{IdleSweep, SweepConfig};
///
/// let t0 = Instant::now();
/// let s = Duration::from_secs(1);
/// let mut sweep = IdleSweep::new(SweepConfig::default(), t0);
/// sweep.tick(t0 + 10 * s);
/// assert!(!sweep.is_expired(t0, t0 + 10 * s));
/// sweep.tick(t0 + 60 * s); // 50 s late: a stall, forgiven
/// assert!(!sweep.is_expired(t0, t0 + 60 * s));
/// ```
#[derive(Debug, Clone)]
pub struct IdleSweep {
    cfg: SweepConfig,
    ticker: Ticker,
    stalls: StallLog,
}

impl IdleSweep {
    /// A sweep whose first tick is due at `now + check_interval`.
    pub fn new(cfg: SweepConfig, now: Instant) -> Self {
        IdleSweep {
            ticker: Ticker::new(now, cfg.check_interval, cfg.stall_threshold),
            cfg,
            stalls: StallLog::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &SweepConfig {
        &self.cfg
    }

    /// The stalls currently forgiven.
    pub fn stalls(&self) -> &StallLog {
        &self.stalls
    }

    /// When the next tick is due.
    pub fn next_due(&self) -> Instant {
        self.ticker.next_due()
    }

    /// Starts a pass at `now`: detects a stall (returned and recorded) and
    /// forgets stalls that no longer matter. Call once per timer tick,
    /// before [`scan`](Self::scan) or [`is_expired`](Self::is_expired).
    pub fn tick(&mut self, now: Instant) -> Option<Stall> {
        let stall = self.ticker.tick(now);
        if let Some(s) = stall {
            self.stalls.record(s);
        }
        self.stalls.prune(now, self.cfg.timeout);
        stall
    }

    /// Whether a connection last active at `last_active` is past the
    /// timeout at `now`, stalls forgiven.
    #[inline]
    pub fn is_expired(&self, last_active: Instant, now: Instant) -> bool {
        match now.checked_sub(self.cfg.timeout) {
            Some(cutoff) => self.expired_past(last_active, cutoff, now),
            None => false,
        }
    }

    /// With `cutoff = now - timeout`: the fast path is one comparison of
    /// instants (no duration arithmetic); the stall log is consulted only
    /// for connections already past the raw timeout.
    #[inline(always)]
    fn expired_past(&self, last_active: Instant, cutoff: Instant, now: Instant) -> bool {
        last_active < cutoff
            && (self.stalls.is_empty()
                || self.stalls.effective_idle(last_active, now) > self.cfg.timeout)
    }

    /// The silence cutoff of a pass at `now`, as an instant and as raw
    /// monotonic nanoseconds; `None` while nothing can have expired.
    fn cutoff(&self, now: Instant) -> Option<(Instant, u64)> {
        let at = now.checked_sub(self.cfg.timeout)?;
        Some((at, lubdub_worker::monotonic_nanos(at)))
    }

    /// One connection's verdict: a raw stamp at or after the cutoff is
    /// alive (one load, no `Instant` built); others get the full check.
    #[inline]
    fn conn_expired<V: Liveness>(&self, conn: &V, cutoff: (Instant, u64), now: Instant) -> bool {
        if conn.last_active_nanos().is_some_and(|n| n >= cutoff.1) {
            return false;
        }
        self.expired_past(conn.last_active(), cutoff.0, now)
    }

    /// How long a connection last active at `last_active` has been silent
    /// at `now`, stalls forgiven.
    pub fn idle_for(&self, last_active: Instant, now: Instant) -> Duration {
        self.stalls.effective_idle(last_active, now)
    }

    /// Checks each connection of `conns` and pushes clones of the expired
    /// ones into `expired`; returns how many were checked.
    ///
    /// This is the sweep's inner loop, used by the plugin over each event
    /// loop's slab of connections, and the function benchmarks time: per
    /// connection one atomic load and one comparison (a pointer chase to the
    /// connection is the dominant cost). `expired` is not cleared first;
    /// when nothing expires nothing is allocated.
    #[inline]
    pub fn scan_iter<'a, V, I>(&self, conns: I, now: Instant, expired: &mut Vec<V>) -> usize
    where
        V: Liveness + Clone + 'a,
        I: IntoIterator<Item = &'a V>,
    {
        let Some(cutoff) = self.cutoff(now) else {
            return conns.into_iter().count();
        };
        let mut scanned = 0;
        for conn in conns {
            scanned += 1;
            if self.conn_expired(conn, cutoff, now) {
                expired.push(conn.clone());
            }
        }
        scanned
    }

    /// Walks `conns` and pushes clones of the expired ones into `expired`;
    /// with `loop_index`, only the connections of that event loop.
    ///
    /// Nothing is closed and no callback runs while the map is borrowed;
    /// `expired` is not cleared first. Note that `DashMap`'s iterator clones
    /// a shard guard (an atomic increment and decrement) per entry, which
    /// makes this about three times slower per connection than
    /// [`scan_iter`](Self::scan_iter) over a vector; the plugin keeps its
    /// own per-loop vector for that reason.
    pub fn scan<K, V, S>(
        &self,
        conns: &DashMap<K, V, S>,
        loop_index: Option<usize>,
        now: Instant,
        expired: &mut Vec<V>,
    ) -> usize
    where
        K: Eq + Hash,
        V: Liveness + Clone,
        S: BuildHasher + Clone,
    {
        let Some(cutoff) = self.cutoff(now) else {
            return conns.len();
        };
        let mut scanned = 0;
        for entry in conns.iter() {
            let conn = entry.value();
            if let Some(l) = loop_index {
                if conn.loop_index() != l {
                    continue;
                }
            }
            scanned += 1;
            if self.conn_expired(conn, cutoff, now) {
                expired.push(conn.clone());
            }
        }
        scanned
    }

    /// One whole pass: [`tick`](Self::tick), then [`scan`](Self::scan).
    pub fn run<K, V, S>(
        &mut self,
        conns: &DashMap<K, V, S>,
        loop_index: Option<usize>,
        now: Instant,
        expired: &mut Vec<V>,
    ) -> SweepReport
    where
        K: Eq + Hash,
        V: Liveness + Clone,
        S: BuildHasher + Clone,
    {
        let stall = self.tick(now);
        let before = expired.len();
        let scanned = self.scan(conns, loop_index, now, expired);
        SweepReport {
            scanned,
            expired: expired.len() - before,
            stall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const S: Duration = Duration::from_secs(1);

    /// A stand-in connection: last activity as nanoseconds after `base`.
    #[derive(Clone)]
    struct Fake {
        base: Instant,
        nanos: Arc<AtomicU64>,
        loop_index: usize,
    }

    impl Fake {
        fn new(base: Instant, at: Duration, loop_index: usize) -> Self {
            Fake {
                base,
                nanos: Arc::new(AtomicU64::new(at.as_nanos() as u64)),
                loop_index,
            }
        }
        fn touch(&self, at: Duration) {
            self.nanos.store(at.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    impl Liveness for Fake {
        fn last_active(&self) -> Instant {
            self.base + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
        }
        fn loop_index(&self) -> usize {
            self.loop_index
        }
    }

    fn ids(v: &[Fake], all: &[Fake]) -> Vec<usize> {
        v.iter()
            .map(|f| {
                all.iter()
                    .position(|a| Arc::ptr_eq(&a.nanos, &f.nanos))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn workerman_rule_strictly_greater_than_timeout() {
        let t0 = Instant::now();
        let sweep = IdleSweep::new(SweepConfig::default(), t0);
        assert!(!sweep.is_expired(t0, t0 + 55 * S));
        assert!(sweep.is_expired(t0, t0 + 55 * S + Duration::from_nanos(1)));
        // activity in the future of `now` (a read raced the sweep) is alive
        assert!(!sweep.is_expired(t0 + S, t0));
    }

    #[test]
    fn silent_peer_closed_within_timeout_plus_check_interval() {
        // Whatever the phase between the peer's last byte and the sweep
        // grid, the first sweep that expires it is at most
        // timeout + check_interval after the last byte, and never before
        // the timeout.
        let t0 = Instant::now();
        for offset_ms in (0..10_000).step_by(250) {
            let last = t0 + Duration::from_millis(offset_ms);
            let mut sweep = IdleSweep::new(SweepConfig::default(), t0);
            let mut k = 1;
            let closed_at = loop {
                let now = t0 + 10 * S * k;
                assert!(sweep.tick(now).is_none());
                if now >= last && sweep.is_expired(last, now) {
                    break now;
                }
                k += 1;
            };
            let waited = closed_at - last;
            assert!(waited > 55 * S, "closed early: {waited:?}");
            assert!(waited <= 65 * S, "closed late: {waited:?}");
        }
    }

    #[test]
    fn scan_finds_only_the_silent_and_only_on_its_loop() {
        let t0 = Instant::now();
        let map = DashMap::new();
        let all: Vec<Fake> = (0..6)
            .map(|i| Fake::new(t0, Duration::ZERO, i % 2))
            .collect();
        for (i, f) in all.iter().enumerate() {
            map.insert(i as u64, f.clone());
        }
        // 0 and 3 go silent; the others keep talking
        let mut sweep = IdleSweep::new(SweepConfig::default(), t0);
        let mut expired = Vec::new();
        for k in 1..=6u32 {
            let now = t0 + 10 * S * k;
            for (i, f) in all.iter().enumerate() {
                if i != 0 && i != 3 {
                    f.touch(10 * S * k - S);
                }
            }
            let r = sweep.run(&map, None, now, &mut expired);
            assert_eq!(r.scanned, 6);
            if k < 6 {
                assert_eq!(r.expired, 0, "tick {k}");
            }
        }
        let mut got = ids(&expired, &all);
        got.sort();
        assert_eq!(got, [0, 3]);
        // per loop: 0 is on loop 0, 3 on loop 1
        let mut e0 = Vec::new();
        assert_eq!(sweep.scan(&map, Some(0), t0 + 60 * S, &mut e0), 3);
        assert_eq!(ids(&e0, &all), [0]);
        let mut e1 = Vec::new();
        sweep.scan(&map, Some(1), t0 + 60 * S, &mut e1);
        assert_eq!(ids(&e1, &all), [3]);
    }

    #[test]
    fn stall_does_not_mass_close_and_extends_deadlines_by_the_stall() {
        let t0 = Instant::now();
        let mut sweep = IdleSweep::new(SweepConfig::default(), t0);
        // healthy ticks; peer A last heard at 25 s, peer B at 48 s
        let a = t0 + 25 * S;
        let b = t0 + 48 * S;
        for k in 1..=5 {
            assert!(sweep.tick(t0 + 10 * S * k).is_none());
        }
        // the process is stopped from 50 s (tick due) to 300 s
        let now = t0 + 300 * S;
        let stall = sweep.tick(now).expect("stall detected");
        assert_eq!(stall.start, t0 + 60 * S);
        assert_eq!(stall.duration(), 240 * S);
        // A: 275 s raw, 35 s effective; B: 252 s raw, 12 s effective
        assert!(!sweep.is_expired(a, now));
        assert!(!sweep.is_expired(b, now));
        assert_eq!(sweep.idle_for(a, now), 35 * S);
        // deadlines moved by the stall: A now expires 240 s later than it
        // would have (25 + 55 + 240 = 320 s)
        assert!(!sweep.is_expired(a, t0 + 320 * S));
        assert!(sweep.is_expired(a, t0 + 320 * S + Duration::from_millis(1)));
        // a peer heard after the stall gets no credit
        let c = t0 + 301 * S;
        assert!(sweep.is_expired(c, c + 55 * S + Duration::from_millis(1)));
    }

    #[test]
    fn late_tick_within_threshold_is_not_a_stall() {
        let t0 = Instant::now();
        let mut sweep = IdleSweep::new(SweepConfig::default(), t0);
        assert!(sweep.tick(t0 + 19 * S).is_none());
        assert!(sweep.stalls().is_empty());
        assert!(sweep.is_expired(t0, t0 + 56 * S));
    }

    #[test]
    fn forgotten_stalls_do_not_resurrect() {
        let t0 = Instant::now();
        let mut sweep = IdleSweep::new(SweepConfig::default(), t0);
        assert!(sweep.tick(t0 + 100 * S).is_some());
        // after on-time ticks the stall is pruned and plain rules apply again
        for k in 11..=100 {
            assert!(sweep.tick(t0 + 10 * S * k).is_none());
        }
        let later = t0 + 1000 * S;
        assert!(sweep.stalls().is_empty());
        assert!(sweep.is_expired(later - 56 * S, later));
    }

    #[test]
    fn no_allocation_when_nothing_expires() {
        let t0 = Instant::now();
        let map: DashMap<u64, Fake> = (0..1000u64)
            .map(|i| (i, Fake::new(t0, 50 * S, 0)))
            .collect();
        let mut sweep = IdleSweep::new(SweepConfig::default(), t0);
        let mut expired = Vec::new();
        let r = sweep.run(&map, Some(0), t0 + 60 * S, &mut expired);
        assert_eq!((r.scanned, r.expired), (1000, 0));
        assert_eq!(expired.capacity(), 0);
    }
}
