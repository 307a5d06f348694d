//! The server plugin: drives the idle sweep and server pings on each event
//! loop of a worker.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lubdub_worker::{CloseReason, Connection, Flow, Plugin, Protocol, Timer, WorkerHandle};

use crate::codec::{Beat, HeartbeatCodec, Ping, Pong};
use crate::ping::{AckSample, PingConfig, PingState, PingVerdict};
use crate::registry::{Meta, Registry};
use crate::rtt::RttStats;
use crate::sweep::{IdleSweep, SweepConfig};
use crate::time::{unix_ms, StallLog, Ticker};

/// Settings of a server heartbeat. Build one per worker (clone a base
/// config and override what differs: that is how one worker gets a shorter
/// timeout than another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// How often each event loop sweeps its connections. Default 10 s.
    pub check_interval: Duration,
    /// Close connections with no inbound bytes for longer than this.
    /// Default `Some(55 s)`; `None` disables the idle sweep.
    pub timeout: Option<Duration>,
    /// A sweep running later than this is a stall, forgiven. Default
    /// `None`: the check interval.
    pub stall_threshold: Option<Duration>,
    /// Server-originated pings, one per connection every this long.
    /// Default `None` (off).
    pub ping_interval: Option<Duration>,
    /// How long a server ping may stay unanswered. Default 5 s.
    pub ack_timeout: Duration,
    /// Only acks answer a server ping, not any inbound bytes (MagicOnion's
    /// rule). Default `false`.
    pub require_ack: bool,
    /// Answer the peers' pings with pongs. Default `true`.
    pub answer_pings: bool,
    /// Also hand heartbeat messages to `on_message`. Default `false`: they
    /// are consumed.
    pub pass_through: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            check_interval: Duration::from_secs(10),
            timeout: Some(Duration::from_secs(55)),
            stall_threshold: None,
            ping_interval: None,
            ack_timeout: Duration::from_secs(5),
            require_ack: false,
            answer_pings: true,
            pass_through: false,
        }
    }
}

impl ServerConfig {
    /// The idle sweep settings, if the sweep is on.
    pub fn sweep(&self) -> Option<SweepConfig> {
        let timeout = self.timeout?;
        Some(SweepConfig {
            check_interval: self.check_interval,
            timeout,
            stall_threshold: self.stall_threshold.unwrap_or(self.check_interval),
        })
    }

    /// The server ping settings, if pings are on.
    pub fn ping(&self) -> Option<PingConfig> {
        Some(PingConfig {
            interval: self.ping_interval?.max(Duration::from_millis(1)),
            ack_timeout: self.ack_timeout,
            require_ack: self.require_ack,
        })
    }

    /// How often the ping timer of each loop runs: an eighth of the shorter
    /// of the ping interval and the ack timeout, between 5 ms and 1 s.
    pub fn ping_tick(&self) -> Option<Duration> {
        let p = self.ping()?;
        Some(
            (p.interval.min(p.ack_timeout) / 8)
                .clamp(Duration::from_millis(5), Duration::from_secs(1)),
        )
    }
}

/// Why the heartbeat closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// No inbound bytes for `silent` (stalls forgiven), beyond the timeout.
    Idle {
        /// How long the peer was silent.
        silent: Duration,
    },
    /// Server ping `seq` was not answered within the ack timeout.
    Ack {
        /// The unanswered ping.
        seq: u32,
        /// How long it waited (stalls forgiven).
        waited: Duration,
    },
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timeout::Idle { silent } => write!(f, "silent for {silent:.1?}"),
            Timeout::Ack { seq, waited } => write!(f, "ping {seq} unanswered for {waited:.1?}"),
        }
    }
}

/// Counters of one heartbeat plugin (all loops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatStats {
    /// Connections closed by the idle sweep.
    pub idle_timeouts: u64,
    /// Connections closed because a server ping went unanswered.
    pub ack_timeouts: u64,
    /// Stalls detected (late ticks forgiven).
    pub stalls: u64,
    /// Heartbeat messages received (consumed or passed through).
    pub beats_in: u64,
    /// Pongs sent in answer to peers' pings.
    pub pongs_sent: u64,
    /// Server pings sent.
    pub pings_sent: u64,
    /// Server pings acknowledged.
    pub acks: u64,
    /// Round trips of acknowledged pings, counted per bucket of
    /// [`RTT_BUCKETS`] (non-cumulative; the last counts the rest).
    pub rtt_buckets: [u64; RTT_BUCKETS.len() + 1],
    /// The sum of those round trips.
    pub rtt_sum: Duration,
}

/// Upper bounds of the round-trip histogram's buckets (the last is +Inf):
/// from a LAN's millisecond to a phone on a bad network's seconds.
pub const RTT_BUCKETS: [Duration; 12] = [
    Duration::from_millis(1),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_micros(2_500_000),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

#[derive(Default)]
struct Counters {
    idle_timeouts: AtomicU64,
    ack_timeouts: AtomicU64,
    stalls: AtomicU64,
    beats_in: AtomicU64,
    pongs_sent: AtomicU64,
    pings_sent: AtomicU64,
    acks: AtomicU64,
    rtt: [AtomicU64; RTT_BUCKETS.len() + 1],
    rtt_sum_us: AtomicU64,
}

impl Counters {
    /// An acknowledged ping's round trip (once per ack, not per message).
    fn acked(&self, rtt: Duration) {
        bump(&self.acks);
        let i = RTT_BUCKETS
            .iter()
            .position(|b| rtt <= *b)
            .unwrap_or(RTT_BUCKETS.len());
        bump(&self.rtt[i]);
        self.rtt_sum_us
            .fetch_add(rtt.as_micros() as u64, Ordering::Relaxed);
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct State<P: Protocol> {
    peers: Registry<P>,
    counters: Counters,
}

type AckFn<P> = Arc<dyn Fn(&Connection<P>, &AckSample) + Send + Sync>;
type TimeoutFn<P> = Arc<dyn Fn(&Connection<P>, &Timeout) + Send + Sync>;
type MetaFn<P> = Arc<dyn Fn(&Connection<P>, &mut Vec<u8>) + Send + Sync>;
type ConnFn<P> = Arc<dyn Fn(&Connection<P>) + Send + Sync>;

struct Hooks<P: Protocol> {
    on_ack: Option<AckFn<P>>,
    on_timeout: Option<TimeoutFn<P>>,
    metadata: Option<MetaFn<P>>,
    goodbye: Option<ConnFn<P>>,
}

impl<P: Protocol> Clone for Hooks<P> {
    fn clone(&self) -> Self {
        Hooks {
            on_ack: self.on_ack.clone(),
            on_timeout: self.on_timeout.clone(),
            metadata: self.metadata.clone(),
            goodbye: self.goodbye.clone(),
        }
    }
}

/// What the loop timers share.
struct Ctx<P: Protocol, C> {
    codec: Arc<C>,
    hooks: Hooks<P>,
    state: Arc<State<P>>,
}

impl<P: Protocol, C: HeartbeatCodec<P>> Ctx<P, C> {
    fn expire(&self, conn: &Connection<P>, why: Timeout) {
        if conn.is_closing() {
            return;
        }
        log::info!(
            "heartbeat: closing connection {} ({}): {why}",
            conn.id(),
            conn.remote_addr()
        );
        bump(match why {
            Timeout::Idle { .. } => &self.state.counters.idle_timeouts,
            Timeout::Ack { .. } => &self.state.counters.ack_timeouts,
        });
        if let Some(cb) = &self.hooks.on_timeout {
            cb(conn, &why);
        }
        if let Some(bye) = &self.hooks.goodbye {
            bye(conn);
        }
        conn.close_with_reason(CloseReason::HeartbeatTimeout);
    }
}

/// The server heartbeat plugin; install it with `worker.plugin(hb)`.
///
/// Built with [`Heartbeat::server`](crate::Heartbeat::server) and
/// configured with the chained methods below. On each event loop it adds:
///
/// * the **idle sweep** timer (every `check_interval`): closes the loop's
///   connections with no inbound bytes for longer than `timeout`, with
///   [`CloseReason::HeartbeatTimeout`] (see [`IdleSweep`]);
/// * with [`ping_interval`](Self::ping_interval), the **ping** timer:
///   sends each connection a ping carrying a sequence number, the server's
///   UTC time and optional metadata, spread over the interval, and closes
///   connections that leave one unanswered for `ack_timeout` (see
///   [`PingState`]).
///
/// Heartbeat messages recognised by the codec are answered (pings) or
/// accounted (pongs) and consumed before `on_message`, unless
/// [`pass_through`](Self::pass_through). Application messages cost one
/// `classify` call (a prefix comparison); the liveness clock itself is the
/// worker's per-read timestamp, so nothing is reset or allocated per
/// message.
pub struct ServerHeartbeat<P: Protocol, C> {
    config: ServerConfig,
    codec: Arc<C>,
    hooks: Hooks<P>,
    state: Arc<State<P>>,
    _p: PhantomData<fn(P)>,
}

impl<P: Protocol, C: HeartbeatCodec<P>> ServerHeartbeat<P, C> {
    pub(crate) fn new(codec: C) -> Self {
        ServerHeartbeat {
            config: ServerConfig::default(),
            codec: Arc::new(codec),
            hooks: Hooks {
                on_ack: None,
                on_timeout: None,
                metadata: None,
                goodbye: None,
            },
            state: Arc::new(State {
                peers: Registry::default(),
                counters: Counters::default(),
            }),
            _p: PhantomData,
        }
    }

    /// Replaces all settings.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &ServerConfig {
        &self.config
    }

    /// How often the idle sweep runs. Default 10 s.
    pub fn check_interval(mut self, every: Duration) -> Self {
        self.config.check_interval = every.max(Duration::from_millis(1));
        self
    }

    /// Inbound silence after which a connection is closed. Default 55 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// Turns the idle sweep off (server pings may still close connections).
    pub fn no_idle_timeout(mut self) -> Self {
        self.config.timeout = None;
        self
    }

    /// How late a sweep may run before the delay is treated as a stall.
    /// Default: the check interval.
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.config.stall_threshold = Some(threshold);
        self
    }

    /// Turns server pings on: one every `interval` per connection.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.config.ping_interval = Some(interval);
        self
    }

    /// How long a server ping may stay unanswered. Default 5 s. Only
    /// meaningful with [`ping_interval`](Self::ping_interval).
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.config.ack_timeout = timeout;
        self
    }

    /// Whether only acks (not any inbound bytes) answer a server ping.
    /// Default `false`.
    pub fn require_ack(mut self, yes: bool) -> Self {
        self.config.require_ack = yes;
        self
    }

    /// Whether peers' pings get pongs. Default `true`.
    pub fn answer_pings(mut self, yes: bool) -> Self {
        self.config.answer_pings = yes;
        self
    }

    /// Whether heartbeat messages also reach `on_message`. Default `false`.
    pub fn pass_through(mut self, yes: bool) -> Self {
        self.config.pass_through = yes;
        self
    }

    /// A message sent just before a heartbeat timeout closes a connection
    /// (for instance `"bye: heartbeat timeout"` with Text).
    pub fn goodbye<M>(mut self, msg: M) -> Self
    where
        M: Borrow<P::Outgoing> + Send + Sync + 'static,
    {
        self.hooks.goodbye = Some(Arc::new(move |c: &Connection<P>| {
            let _ = c.send(msg.borrow());
        }));
        self
    }

    /// Metadata added to each server ping (MagicOnion's metadata provider):
    /// write it into the buffer, which is empty on each call.
    pub fn metadata(
        mut self,
        f: impl Fn(&Connection<P>, &mut Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.metadata = Some(Arc::new(f));
        self
    }

    /// Called when a server ping is acknowledged, with its round trip
    /// (MagicOnion's `SetAckCallback`). Runs on the connection's loop.
    pub fn on_ack(
        mut self,
        f: impl Fn(&Connection<P>, &AckSample) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_ack = Some(Arc::new(f));
        self
    }

    /// Called just before the heartbeat closes a connection.
    pub fn on_timeout(
        mut self,
        f: impl Fn(&Connection<P>, &Timeout) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_timeout = Some(Arc::new(f));
        self
    }

    /// A handle to query RTTs, exempt connections and read counters, from
    /// any thread, before or after the plugin is installed.
    pub fn handle(&self) -> HeartbeatHandle<P> {
        HeartbeatHandle {
            state: self.state.clone(),
        }
    }

    fn ctx(&self) -> Arc<Ctx<P, C>> {
        Arc::new(Ctx {
            codec: self.codec.clone(),
            hooks: self.hooks.clone(),
            state: self.state.clone(),
        })
    }

    fn start_sweep(&self, worker: &WorkerHandle<P>, my_loop: usize, ctx: Arc<Ctx<P, C>>) {
        let Some(cfg) = self.config.sweep() else {
            return;
        };
        let mut sweep = IdleSweep::new(cfg, Instant::now());
        let mut expired: Vec<Connection<P>> = Vec::new();
        let name = worker.name().to_string();
        let res = Timer::add(cfg.check_interval, move || {
            let now = Instant::now();
            if let Some(st) = sweep.tick(now) {
                bump(&ctx.state.counters.stalls);
                log::warn!(
                    "heartbeat: worker {name} loop {my_loop}: sweep ran {:.1?} late (process stopped or starved?); \
                     that time is not counted as silence",
                    st.duration()
                );
            }
            ctx.state.peers.with_loop(my_loop, |lp| {
                sweep.scan_iter(lp.conns.iter().flatten(), now, &mut expired);
                if !expired.is_empty() {
                    expired.retain(|c| lp.meta(c.id()).is_some_and(|m| !m.exempt));
                }
                lp.compact();
            });
            for conn in expired.drain(..) {
                let silent = sweep.idle_for(conn.last_active(), now);
                ctx.expire(&conn, Timeout::Idle { silent });
            }
        });
        if let Err(e) = res {
            log::error!("heartbeat: cannot add the sweep timer: {e}");
        }
    }

    fn start_pings(&self, worker: &WorkerHandle<P>, my_loop: usize, ctx: Arc<Ctx<P, C>>) {
        let (Some(pc), Some(tick)) = (self.config.ping(), self.config.ping_tick()) else {
            return;
        };
        let mut ticker = Ticker::new(Instant::now(), tick, (pc.ack_timeout / 2).max(tick));
        let mut stalls = StallLog::new();
        let mut due: Vec<(Connection<P>, PingVerdict)> = Vec::new();
        let mut meta = Vec::new();
        let name = worker.name().to_string();
        let res = Timer::add(tick, move || {
            let now = Instant::now();
            if let Some(st) = ticker.tick(now) {
                bump(&ctx.state.counters.stalls);
                log::warn!(
                    "heartbeat: worker {name} loop {my_loop}: ping timer ran {:.1?} late; not blamed on peers",
                    st.duration()
                );
                stalls.record(st);
            }
            stalls.prune(now, pc.ack_timeout);
            ctx.state.peers.with_loop(my_loop, |lp| {
                for (conn, m) in lp.conns.iter().zip(lp.meta.iter_mut()) {
                    let (Some(conn), Some(ps)) = (conn, m.ping.as_mut()) else {
                        continue;
                    };
                    if m.exempt {
                        continue;
                    }
                    let v = ps.poll(&pc, now, conn.last_active(), &stalls);
                    if v != PingVerdict::Idle {
                        due.push((conn.clone(), v));
                    }
                }
            });
            if due.is_empty() {
                return;
            }
            let wall = unix_ms(SystemTime::now());
            for (conn, v) in due.drain(..) {
                match v {
                    PingVerdict::Ping(seq) => {
                        meta.clear();
                        if let Some(m) = &ctx.hooks.metadata {
                            m(&conn, &mut meta);
                        }
                        let beat = Beat::Ping(Ping {
                            seq: Some(seq),
                            unix_ms: Some(wall),
                            meta: &meta,
                        });
                        ctx.codec.encode(&beat, &mut |m| {
                            let _ = conn.send(m);
                        });
                        bump(&ctx.state.counters.pings_sent);
                        log::debug!("heartbeat: ping {seq} to connection {}", conn.id());
                    }
                    PingVerdict::Dead { seq, waited } => {
                        ctx.expire(&conn, Timeout::Ack { seq, waited });
                    }
                    PingVerdict::Idle => {}
                }
            }
        });
        if let Err(e) = res {
            log::error!("heartbeat: cannot add the ping timer: {e}");
        }
    }
}

impl<P: Protocol, C: HeartbeatCodec<P>> Plugin<P> for ServerHeartbeat<P, C> {
    fn on_worker_start(&self, worker: &WorkerHandle<P>) {
        let Some(my_loop) = WorkerHandle::<P>::current_loop() else {
            log::error!("heartbeat: on_worker_start outside an event loop; heartbeat inactive");
            return;
        };
        let ctx = self.ctx();
        self.start_sweep(worker, my_loop, ctx.clone());
        self.start_pings(worker, my_loop, ctx);
    }

    fn on_connect(&self, conn: &Connection<P>) {
        let ping = self.config.ping().map(|pc| {
            PingState::new(
                &pc,
                Instant::now(),
                PingState::phase(conn.id(), pc.interval),
            )
        });
        self.state.peers.with_loop(conn.loop_index(), |lp| {
            lp.insert(
                conn.clone(),
                Meta {
                    exempt: false,
                    ping,
                },
            )
        });
        if let Some(hello) = self.codec.hello() {
            self.codec.encode(&hello, &mut |m| {
                let _ = conn.send(m);
            });
        }
    }

    fn on_message(&self, conn: &Connection<P>, msg: &P::Message) -> Flow {
        let Some(beat) = self.codec.classify(msg) else {
            return Flow::Continue;
        };
        let counters = &self.state.counters;
        bump(&counters.beats_in);
        match beat {
            Beat::Ping(p) => {
                log::debug!(
                    "heartbeat: ping{} from connection {}",
                    p.seq.map(|s| format!(" {s}")).unwrap_or_default(),
                    conn.id()
                );
                if self.config.answer_pings {
                    let pong = Pong {
                        seq: p.seq,
                        unix_ms: p.seq.map(|_| unix_ms(SystemTime::now())),
                    };
                    self.codec.encode(&Beat::Pong(pong), &mut |m| {
                        if conn.send(m).is_queued() {
                            bump(&counters.pongs_sent);
                        }
                    });
                }
            }
            Beat::Pong(p) => {
                let now = Instant::now();
                let sample = self.state.peers.with_loop(conn.loop_index(), |lp| {
                    lp.meta_mut(conn.id())?.ping.as_mut()?.on_ack(now, p.seq)
                });
                if let Some(s) = sample {
                    counters.acked(s.rtt);
                    log::debug!(
                        "heartbeat: connection {} acked ping {}: rtt {:?} (smoothed {:?}, min {:?})",
                        conn.id(),
                        s.seq,
                        s.rtt,
                        s.stats.smoothed,
                        s.stats.min
                    );
                    if let Some(cb) = &self.hooks.on_ack {
                        cb(conn, &s);
                    }
                }
            }
            Beat::Hello { .. } => {}
        }
        if self.config.pass_through {
            Flow::Continue
        } else {
            Flow::Consumed
        }
    }

    fn on_close(&self, conn: &Connection<P>, _reason: &CloseReason) {
        self.state
            .peers
            .with_loop(conn.loop_index(), |lp| lp.remove(conn.id()));
    }
}

/// Queries and controls of a [`ServerHeartbeat`] from any thread.
pub struct HeartbeatHandle<P: Protocol> {
    state: Arc<State<P>>,
}

impl<P: Protocol> Clone for HeartbeatHandle<P> {
    fn clone(&self) -> Self {
        HeartbeatHandle {
            state: self.state.clone(),
        }
    }
}

impl<P: Protocol> fmt::Debug for HeartbeatHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatHandle")
            .field("connections", &self.state.peers.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl<P: Protocol> HeartbeatHandle<P> {
    /// RTT statistics of a connection, once a server ping was acked
    /// (MagicOnion's `Latency`).
    pub fn rtt(&self, conn: &Connection<P>) -> Option<RttStats> {
        self.state.peers.with_loop(conn.loop_index(), |lp| {
            lp.meta(conn.id())?.ping.as_ref()?.rtt()
        })
    }

    /// [`rtt`](Self::rtt) by connection id.
    pub fn rtt_by_id(&self, id: u64) -> Option<RttStats> {
        self.state
            .peers
            .with_conn(id, |m| m.ping.as_ref()?.rtt())
            .flatten()
    }

    /// Exempts a connection from the heartbeat: no sweep, no pings
    /// (MagicOnion's `Unregister`). Returns whether it is tracked.
    pub fn unregister(&self, conn: &Connection<P>) -> bool {
        self.set_exempt(conn, true)
    }

    /// Undoes [`unregister`](Self::unregister).
    pub fn register(&self, conn: &Connection<P>) -> bool {
        self.set_exempt(conn, false)
    }

    fn set_exempt(&self, conn: &Connection<P>, exempt: bool) -> bool {
        self.state.peers.with_loop(conn.loop_index(), |lp| {
            lp.meta_mut(conn.id()).map(|m| m.exempt = exempt).is_some()
        })
    }

    /// Whether the heartbeat watches this connection (tracked and not
    /// unregistered).
    pub fn is_registered(&self, conn: &Connection<P>) -> bool {
        self.state.peers.with_loop(conn.loop_index(), |lp| {
            lp.meta(conn.id()).is_some_and(|m| !m.exempt)
        })
    }

    /// Connections tracked.
    pub fn tracked(&self) -> usize {
        self.state.peers.len()
    }

    /// The counters.
    pub fn stats(&self) -> HeartbeatStats {
        let c = &self.state.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HeartbeatStats {
            idle_timeouts: l(&c.idle_timeouts),
            ack_timeouts: l(&c.ack_timeouts),
            stalls: l(&c.stalls),
            beats_in: l(&c.beats_in),
            pongs_sent: l(&c.pongs_sent),
            pings_sent: l(&c.pings_sent),
            acks: l(&c.acks),
            rtt_buckets: std::array::from_fn(|i| l(&c.rtt[i])),
            rtt_sum: Duration::from_micros(l(&c.rtt_sum_us)),
        }
    }
}
