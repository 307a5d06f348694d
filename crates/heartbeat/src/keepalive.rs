//! The client plugin: drives [`ClientBeat`] for each client connection.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use lubdub_worker::{CloseReason, Connection, Flow, Plugin, Protocol, Timer, TimerId};

use crate::client::{
    beat_time, ClientAction, ClientBeat, ClientConfig, ClientIo, RoundTrip, SplitMix64,
};
use crate::codec::{Beat, HeartbeatCodec, Ping, Pong};
use crate::rtt::RttStats;
use crate::time::mix64;

/// A ping from the server, as the client saw it (MagicOnion's
/// `ServerHeartbeatEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPing<'a> {
    /// The ping's sequence number (answered automatically).
    pub seq: Option<u32>,
    /// The server's UTC time when it sent the ping.
    pub server_time: Option<SystemTime>,
    /// Metadata the server attached.
    pub metadata: &'a [u8],
}

/// Counters of one client heartbeat plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Pings sent.
    pub pings_sent: u64,
    /// Round trips completed (pongs matched to a ping).
    pub round_trips: u64,
    /// Server pings answered.
    pub server_pings: u64,
    /// Connections closed because the server went silent.
    pub timeouts: u64,
}

#[derive(Default)]
struct Counters {
    pings_sent: AtomicU64,
    round_trips: AtomicU64,
    server_pings: AtomicU64,
    timeouts: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Session {
    beat: ClientBeat<SplitMix64>,
    timer: Option<TimerId>,
    generation: u64,
}

struct State {
    sessions: DashMap<u64, Session>,
    counters: Counters,
    generation: AtomicU64,
}

type RoundTripFn<P> = Arc<dyn Fn(&Connection<P>, &RoundTrip) + Send + Sync>;
type ServerPingFn<P> = Arc<dyn Fn(&Connection<P>, &ServerPing<'_>) + Send + Sync>;
type TimeoutFn<P> = Arc<dyn Fn(&Connection<P>, Duration) + Send + Sync>;

struct Ctx<P: Protocol, C> {
    cfg: ClientConfig,
    seed: u64,
    pass_through: bool,
    codec: C,
    state: Arc<State>,
    on_round_trip: Option<RoundTripFn<P>>,
    on_server_ping: Option<ServerPingFn<P>>,
    on_timeout: Option<TimeoutFn<P>>,
}

/// The client heartbeat plugin; install it on a client with
/// `client.plugin(hb)`.
///
/// For each established session it runs a [`ClientBeat`]: a ping every
/// `interval ± jitter` while the client is otherwise quiet, answers to the
/// server's pings, RTT and clock-offset estimates from the pongs, and a
/// close with [`CloseReason::HeartbeatTimeout`] when nothing arrived for
/// `timeout`, after which the client's reconnect policy takes over. A
/// completed round trip calls [`Connection::mark_healthy`], which resets the
/// reconnect backoff.
///
/// It uses only `on_connect`, `on_message`, `on_close` and one-shot
/// [`Timer`]s on the connection's loop, so it also works on server
/// connections (a server that keeps its peers alive from its side).
pub struct ClientHeartbeat<P: Protocol, C> {
    inner: Arc<Ctx<P, C>>,
}

impl<P: Protocol, C: HeartbeatCodec<P>> ClientHeartbeat<P, C> {
    pub(crate) fn new(codec: C) -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        ClientHeartbeat {
            inner: Arc::new(Ctx {
                cfg: ClientConfig::default(),
                seed,
                pass_through: false,
                codec,
                state: Arc::new(State {
                    sessions: DashMap::new(),
                    counters: Counters::default(),
                    generation: AtomicU64::new(0),
                }),
                on_round_trip: None,
                on_server_ping: None,
                on_timeout: None,
            }),
        }
    }

    /// The builder's own context: shared with timers only once installed,
    /// when no builder method can be called any more.
    fn build(&mut self) -> &mut Ctx<P, C> {
        Arc::get_mut(&mut self.inner).expect("a heartbeat is configured before it is installed")
    }

    /// Replaces all settings.
    pub fn config(mut self, cfg: ClientConfig) -> Self {
        self.build().cfg = cfg;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// Time between pings while the client sends nothing else. Default 20 s.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.build().cfg.interval = interval;
        self
    }

    /// Silence after which the server is declared dead. Default 60 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.build().cfg.timeout = Some(timeout);
        self
    }

    /// Never declare the server dead (keepalive only): for servers that
    /// send nothing unprompted, such as the C# packet scheme's.
    pub fn no_timeout(mut self) -> Self {
        self.build().cfg.timeout = None;
        self
    }

    /// Jitter fraction of each wait, `0..=0.5`. Default 0.1.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.build().cfg.jitter = fraction;
        self
    }

    /// Seed of the jitter generator (mixed with the connection id); default
    /// from the clock.
    pub fn seed(mut self, seed: u64) -> Self {
        self.build().seed = seed;
        self
    }

    /// Whether heartbeat messages also reach `on_message`. Default `false`.
    pub fn pass_through(mut self, yes: bool) -> Self {
        self.build().pass_through = yes;
        self
    }

    /// Called after each completed round trip (MagicOnion's
    /// `WithClientHeartbeatResponseReceived`).
    pub fn on_round_trip(
        mut self,
        f: impl Fn(&Connection<P>, &RoundTrip) + Send + Sync + 'static,
    ) -> Self {
        self.build().on_round_trip = Some(Arc::new(f));
        self
    }

    /// Called for each server ping, with the server's time and metadata
    /// (MagicOnion's `WithServerHeartbeatReceived`).
    pub fn on_server_ping(
        mut self,
        f: impl Fn(&Connection<P>, &ServerPing<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.build().on_server_ping = Some(Arc::new(f));
        self
    }

    /// Called just before a silent server's connection is closed, with how
    /// long it was silent.
    pub fn on_timeout(
        mut self,
        f: impl Fn(&Connection<P>, Duration) + Send + Sync + 'static,
    ) -> Self {
        self.build().on_timeout = Some(Arc::new(f));
        self
    }

    /// A handle to read RTTs, clock offsets and counters from any thread.
    pub fn handle(&self) -> ClientHeartbeatHandle {
        ClientHeartbeatHandle {
            state: self.inner.state.clone(),
        }
    }

    fn ctx(&self) -> &Arc<Ctx<P, C>> {
        &self.inner
    }
}

/// Bytes sent or queued so far on `conn`.
fn tx_total<P: Protocol>(conn: &Connection<P>) -> u64 {
    conn.stats().bytes_out + conn.send_buffer_len() as u64
}

/// Resets the client's reconnect backoff after a proven round trip.
fn mark_healthy<P: Protocol>(conn: &Connection<P>) {
    conn.mark_healthy();
}

impl<P: Protocol, C: HeartbeatCodec<P>> Ctx<P, C> {
    fn arm(self: &Arc<Self>, conn: &Connection<P>, at: Instant, generation: u64) {
        let delay = at.saturating_duration_since(Instant::now());
        let ctx = self.clone();
        let c = conn.clone();
        match Timer::once(delay, move || ctx.fire(&c, generation)) {
            Ok(id) => {
                if let Some(mut s) = self.state.sessions.get_mut(&conn.id()) {
                    if s.generation == generation {
                        s.timer = Some(id);
                        return;
                    }
                }
                Timer::del(id);
            }
            Err(e) => log::error!(
                "heartbeat: connection {}: cannot arm the client timer: {e}",
                conn.id()
            ),
        }
    }

    fn fire(self: &Arc<Self>, conn: &Connection<P>, generation: u64) {
        let now = Instant::now();
        let io = ClientIo {
            last_rx: conn.last_active(),
            tx_total: tx_total(conn),
        };
        let action = {
            let Some(mut s) = self.state.sessions.get_mut(&conn.id()) else {
                return;
            };
            if s.generation != generation {
                return;
            }
            s.timer = None;
            s.beat.poll(now, SystemTime::now(), io)
        };
        match action {
            ClientAction::Wait(at) => self.arm(conn, at, generation),
            ClientAction::Ping(seq) => {
                let beat = Beat::Ping(Ping {
                    seq: Some(seq),
                    unix_ms: None,
                    meta: b"",
                });
                self.codec.encode(&beat, &mut |m| {
                    let _ = conn.send(m);
                });
                bump(&self.state.counters.pings_sent);
                log::debug!("heartbeat: client ping {seq} on connection {}", conn.id());
                let tx = tx_total(conn);
                let at = {
                    let Some(mut s) = self.state.sessions.get_mut(&conn.id()) else {
                        return;
                    };
                    s.beat.sent(tx);
                    s.beat.wake_at()
                };
                self.arm(conn, at, generation);
            }
            ClientAction::Dead { silent } => {
                if conn.is_closing() {
                    return;
                }
                bump(&self.state.counters.timeouts);
                log::info!(
                    "heartbeat: connection {} ({}): server silent for {silent:.1?}; closing",
                    conn.id(),
                    conn.remote_addr()
                );
                if let Some(cb) = &self.on_timeout {
                    cb(conn, silent);
                }
                conn.close_with_reason(CloseReason::HeartbeatTimeout);
            }
        }
    }
}

impl<P: Protocol, C: HeartbeatCodec<P>> Plugin<P> for ClientHeartbeat<P, C> {
    fn on_connect(&self, conn: &Connection<P>) {
        let ctx = self.ctx().clone();
        let now = Instant::now();
        let generation = ctx.state.generation.fetch_add(1, Ordering::Relaxed);
        // Each session (a client connection keeps its id across reconnects)
        // gets its own jitter sequence.
        let rng = SplitMix64::new(ctx.seed ^ mix64(conn.id()) ^ mix64(!generation));
        let beat = ClientBeat::new(ctx.cfg, now, rng);
        let at = beat.wake_at();
        let old = ctx.state.sessions.insert(
            conn.id(),
            Session {
                beat,
                timer: None,
                generation,
            },
        );
        if let Some(t) = old.and_then(|s| s.timer) {
            Timer::del(t);
        }
        ctx.arm(conn, at, generation);
    }

    fn on_message(&self, conn: &Connection<P>, msg: &P::Message) -> Flow {
        let ctx = self.ctx();
        let Some(beat) = ctx.codec.classify(msg) else {
            return Flow::Continue;
        };
        let now = Instant::now();
        match beat {
            Beat::Pong(p) => {
                let rt = ctx
                    .state
                    .sessions
                    .get_mut(&conn.id())
                    .and_then(|mut s| s.beat.on_pong(now, p.seq, beat_time(p.unix_ms)));
                if let Some(rt) = rt {
                    bump(&ctx.state.counters.round_trips);
                    log::debug!(
                        "heartbeat: connection {} round trip {}: rtt {:?} (smoothed {:?})",
                        conn.id(),
                        rt.seq,
                        rt.rtt,
                        rt.stats.smoothed
                    );
                    mark_healthy(conn);
                    if let Some(cb) = &ctx.on_round_trip {
                        cb(conn, &rt);
                    }
                }
            }
            Beat::Ping(p) => {
                let pong = Pong {
                    seq: p.seq,
                    unix_ms: None,
                };
                ctx.codec.encode(&Beat::Pong(pong), &mut |m| {
                    let _ = conn.send(m);
                });
                bump(&ctx.state.counters.server_pings);
                let server_time = beat_time(p.unix_ms);
                if let Some(st) = server_time {
                    if let Some(mut s) = ctx.state.sessions.get_mut(&conn.id()) {
                        s.beat.on_server_ping(SystemTime::now(), st);
                    }
                }
                log::debug!(
                    "heartbeat: server ping{} on connection {}",
                    p.seq.map(|s| format!(" {s}")).unwrap_or_default(),
                    conn.id()
                );
                if let Some(cb) = &ctx.on_server_ping {
                    cb(
                        conn,
                        &ServerPing {
                            seq: p.seq,
                            server_time,
                            metadata: p.meta,
                        },
                    );
                }
            }
            Beat::Hello { interval } => {
                log::debug!(
                    "heartbeat: connection {}: server asks for a heartbeat every {interval:?}",
                    conn.id()
                );
                let rearm = ctx.state.sessions.get_mut(&conn.id()).map(|mut s| {
                    s.beat.set_interval(now, interval);
                    (s.timer.take(), s.beat.wake_at(), s.generation)
                });
                if let Some((old, at, generation)) = rearm {
                    if let Some(t) = old {
                        Timer::del(t);
                    }
                    ctx.arm(conn, at, generation);
                }
            }
        }
        if ctx.pass_through {
            Flow::Continue
        } else {
            Flow::Consumed
        }
    }

    fn on_close(&self, conn: &Connection<P>, _reason: &CloseReason) {
        let ctx = self.ctx();
        if let Some((_, s)) = ctx.state.sessions.remove(&conn.id()) {
            if let Some(t) = s.timer {
                Timer::del(t);
            }
        }
    }
}

/// Read access to a [`ClientHeartbeat`]'s sessions from any thread.
#[derive(Clone)]
pub struct ClientHeartbeatHandle {
    state: Arc<State>,
}

impl fmt::Debug for ClientHeartbeatHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHeartbeatHandle")
            .field("sessions", &self.state.sessions.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl ClientHeartbeatHandle {
    /// RTT statistics of a connection's current session.
    pub fn rtt<P: Protocol>(&self, conn: &Connection<P>) -> Option<RttStats> {
        self.state.sessions.get(&conn.id())?.beat.rtt()
    }

    /// Estimated server clock minus local clock, microseconds (from the
    /// lowest-RTT recent round trip).
    pub fn clock_offset_us<P: Protocol>(&self, conn: &Connection<P>) -> Option<i64> {
        self.state.sessions.get(&conn.id())?.beat.clock_offset_us()
    }

    /// The server's clock now, estimated.
    pub fn server_time<P: Protocol>(&self, conn: &Connection<P>) -> Option<SystemTime> {
        self.state
            .sessions
            .get(&conn.id())?
            .beat
            .server_time(SystemTime::now())
    }

    /// The heartbeat interval in force for a connection (the server may
    /// have changed it).
    pub fn interval<P: Protocol>(&self, conn: &Connection<P>) -> Option<Duration> {
        Some(self.state.sessions.get(&conn.id())?.beat.config().interval)
    }

    /// The counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.state.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            pings_sent: l(&c.pings_sent),
            round_trips: l(&c.round_trips),
            server_pings: l(&c.server_pings),
            timeouts: l(&c.timeouts),
        }
    }
}
