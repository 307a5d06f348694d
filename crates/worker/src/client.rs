//! Client connections (Workerman's `AsyncTcpConnection`) with reconnect, and
//! a standalone event loop to run them without a server.

use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::reactor::{Io, Reactor};
use dashmap::DashMap;
use event_listener::Event;
use serde::Deserialize;

use crate::addr::IntoListenAddr;
use crate::connection::{
    connection_callbacks, Connection, Endpoint, Handlers, Limits, LocalBoxFuture, MessageHandler,
    FINISHED,
};
use crate::driver::{report, ConnDriver};
use crate::error::{CloseReason, Error};
use crate::event_loop::{LoopCtx, StopSignal};
use crate::protocol::Protocol;

/// Automatic reconnect policy: exponential backoff with full jitter.
///
/// Before reconnect attempt `n` (0 for the first after a disconnect) the
/// client sleeps `random(0, min(cap, base * 2^n))`. The attempt counter goes
/// back to 0 only once a connection proved healthy: it stayed up for
/// `healthy_after`, or [`Connection::mark_healthy`] was called (the heartbeat
/// does after a round trip). Deserializable (durations in milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// First backoff ceiling, in ms. Default 1000 (1 s).
    #[serde(rename = "base_ms", with = "millis")]
    pub base: Duration,
    /// Largest backoff ceiling, in ms. Default 30000 (30 s).
    #[serde(rename = "cap_ms", with = "millis")]
    pub cap: Duration,
    /// Give up after this many failed attempts in a row. Default: never.
    pub max_attempts: Option<u32>,
    /// A connection that stays up this long resets the backoff, in ms.
    /// Default 10000 (10 s).
    #[serde(rename = "healthy_after_ms", with = "millis")]
    pub healthy_after: Duration,
    /// Seed of the jitter generator; `None` seeds from the clock. Set it
    /// for reproducible schedules in tests.
    pub seed: Option<u64>,
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            max_attempts: None,
            healthy_after: Duration::from_secs(10),
            seed: None,
        }
    }
}

/// The reconnect schedule as a state machine (no I/O, no clock): what the
/// client's supervisor consults, public so schedules can be checked exactly.
///
/// ```
/// use std::time::Duration;
/// use lubdub_worker::{Backoff, ReconnectPolicy};
///
/// let mut p = ReconnectPolicy::new(Backoff { seed: Some(7), ..Backoff::default() });
/// for n in 0..8 {
///     let d = p.next_delay().unwrap();
///     assert!(d <= Duration::from_secs(1 << n).min(Duration::from_secs(30)));
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    cfg: Backoff,
    attempt: u32,
    rng: u64,
}

impl ReconnectPolicy {
    /// A fresh policy (attempt 0).
    pub fn new(cfg: Backoff) -> Self {
        let rng = cfg.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (crate::connection::next_conn_id().wrapping_mul(0x9E37_79B9_7F4A_7C15))
        });
        ReconnectPolicy {
            cfg,
            attempt: 0,
            rng,
        }
    }

    /// Failed attempts in a row since the last healthy connection.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The backoff ceiling for attempt `n`: `min(cap, base * 2^n)`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.cfg
            .base
            .checked_mul(factor)
            .map_or(self.cfg.cap, |d| d.min(self.cfg.cap))
    }

    /// The delay before the next attempt, or `None` once `max_attempts`
    /// failed in a row. Advances the attempt counter.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.cfg.max_attempts.is_some_and(|max| self.attempt >= max) {
            return None;
        }
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Some(ceiling.mul_f64(unit))
    }

    /// A connection ended after `lasted`; resets the counter if it was
    /// healthy (long enough, or proven by a heartbeat round trip).
    pub fn session_ended(&mut self, lasted: Duration, proven_healthy: bool) {
        if proven_healthy || lasted >= self.cfg.healthy_after {
            self.reset();
        }
    }

    /// Back to attempt 0.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// SplitMix64.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Reconnect control shared by a client connection's handle and supervisor.
pub(crate) struct ClientCtl {
    /// An automatic reconnect policy is on.
    auto: bool,
    /// Waiting for an explicit `reconnect()` (no policy, gave up, cancelled).
    idle: AtomicBool,
    user_closed: AtomicBool,
    connected: AtomicBool,
    healthy: AtomicBool,
    cancel: AtomicBool,
    pending: Mutex<Option<Duration>>,
    attempts: AtomicU32,
    event: Event,
}

impl ClientCtl {
    fn new(auto: bool) -> Self {
        ClientCtl {
            auto,
            idle: AtomicBool::new(false),
            user_closed: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            pending: Mutex::new(None),
            attempts: AtomicU32::new(0),
            event: Event::new(),
        }
    }

    /// Sends between sessions queue for the next one: a reconnect is coming.
    pub fn keeps_queue(&self) -> bool {
        self.auto && !self.is_user_closed() && !self.idle.load(Ordering::SeqCst)
    }

    pub fn user_close(&self) {
        self.user_closed.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }
    pub fn is_user_closed(&self) -> bool {
        self.user_closed.load(Ordering::SeqCst)
    }
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }
    pub fn request_reconnect(&self, after: Duration) {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(after);
        self.cancel.store(false, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }
    pub fn cancel_reconnect(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.cancel.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }
    pub fn mark_healthy(&self) {
        self.healthy.store(true, Ordering::SeqCst);
    }
    fn take_pending(&self) -> Option<Duration> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// What interrupted a supervisor's wait.
enum Wake {
    Closed,
    Reconnect(Duration),
    Cancelled,
    Elapsed,
}

/// Waits until `deadline` (forever if `None`) or a control request.
async fn wait_ctl(ctl: &ClientCtl, deadline: Option<Instant>) -> Wake {
    loop {
        if ctl.is_user_closed() {
            return Wake::Closed;
        }
        if let Some(after) = ctl.take_pending() {
            return Wake::Reconnect(after);
        }
        if ctl.cancel.swap(false, Ordering::SeqCst) {
            return Wake::Cancelled;
        }
        let listener = ctl.event.listen();
        if ctl.is_user_closed() || ctl.cancel.load(Ordering::SeqCst) {
            continue;
        }
        if ctl
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            continue;
        }
        let elapsed = futures_lite::future::or(
            async {
                listener.await;
                false
            },
            async {
                match deadline {
                    Some(d) => {
                        async_io::Timer::at(d).await;
                        true
                    }
                    None => futures_lite::future::pending().await,
                }
            },
        )
        .await;
        if elapsed {
            return Wake::Elapsed;
        }
    }
}

/// A client: an address, a protocol and callbacks, from which
/// [`connect`](Self::connect) makes connections (Workerman's
/// `AsyncTcpConnection`).
///
/// The [`Connection`] it returns is the same handle servers use, and it is
/// stable across reconnects: its id, user data and queued sends survive, so
/// bookkeeping keyed by it stays right. Sends made before a (re)connect are
/// queued (up to the send buffer limit) and delivered in order once
/// connected. `on_connect` and `on_close` run once per established session;
/// a failed attempt is reported through `on_error` as
/// [`Error::ConnectFailed`] (with the address and OS error), a broken
/// session as [`Error::Io`] and a close reason.
///
/// `connect` must run on an event loop: in a worker's `on_worker_start` or
/// any callback, or in [`EventLoop::run`] for a standalone client.
pub struct Client<P: Protocol> {
    addr: SocketAddr,
    protocol: P,
    handlers: Handlers<P>,
    limits: Limits,
    connect_timeout: Duration,
    backoff: Option<Backoff>,
    ep: OnceLock<Arc<Endpoint<P>>>,
}

impl<P: Protocol + Default> Client<P> {
    /// A client of `addr` (`text://127.0.0.1:1234` or a `SocketAddr`) with
    /// the protocol's default settings.
    pub fn new(addr: impl IntoListenAddr) -> Result<Self, Error> {
        Self::with_protocol(addr, P::default())
    }
}

impl<P: Protocol> Client<P> {
    /// A client of `addr` speaking a configured `protocol`.
    pub fn with_protocol(addr: impl IntoListenAddr, protocol: P) -> Result<Self, Error> {
        let addr = addr.into_listen_addr()?;
        addr.check_scheme(P::SCHEME)?;
        Ok(Client {
            addr: addr.socket_addr(),
            protocol,
            handlers: Handlers::default(),
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(10),
            backoff: None,
            ep: OnceLock::new(),
        })
    }

    /// Gives up a connect attempt after this long. Default 10 s.
    pub fn connect_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.connect_timeout = timeout;
        self
    }

    /// Switches on automatic reconnects with this policy. Without it, a
    /// client reconnects only when [`Connection::reconnect`] is called.
    pub fn auto_reconnect(&mut self, policy: Backoff) -> &mut Self {
        self.backoff = Some(policy);
        self
    }

    /// Send buffer limit in bytes (also bounds sends queued before a
    /// connect). Default 1 MiB.
    pub fn send_buffer_size(&mut self, bytes: usize) -> &mut Self {
        self.limits.send_buffer_size = bytes.max(1);
        self
    }

    /// Graceful close timeout. Default 5 s.
    pub fn close_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.limits.close_timeout = timeout;
        self
    }

    connection_callbacks!();

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Live (not finally closed) connections made by this client.
    pub fn connections(&self) -> &DashMap<u64, Connection<P>> {
        &self.endpoint().connections
    }

    fn endpoint(&self) -> &Arc<Endpoint<P>> {
        self.ep.get_or_init(|| {
            Arc::new(Endpoint {
                protocol: self.protocol.clone(),
                handlers: self.handlers.clone(),
                limits: self.limits.clone(),
                connections: DashMap::new(),
                tasks: Default::default(),
            })
        })
    }

    /// Starts connecting and returns the connection at once; sends queue
    /// until it is up. Callbacks and settings are fixed at the first call.
    /// Returns [`Error::NoEventLoop`] off an event loop.
    pub fn connect(&self) -> Result<Connection<P>, Error> {
        let ctx = LoopCtx::current().ok_or(Error::NoEventLoop)?;
        let ep = self.endpoint().clone();
        let unspecified = match self.addr {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        let conn = Connection::new(
            ep.clone(),
            self.addr,
            unspecified,
            ctx.id,
            ctx.uid,
            Some(Box::new(ClientCtl::new(self.backoff.is_some()))),
        );
        ep.connections.insert(conn.id(), conn.clone());
        ctx.live.set(ctx.live.get() + 1);
        {
            let c = conn.clone();
            ctx.closers
                .borrow_mut()
                .insert(conn.id(), Box::new(move || c.close_for_stop()));
        }
        let sup = supervise(
            conn.clone(),
            ctx.clone(),
            self.backoff.clone().map(ReconnectPolicy::new),
            self.connect_timeout,
        );
        ctx.ex.spawn(sup).detach();
        Ok(conn)
    }
}

async fn connect_once(
    addr: SocketAddr,
    timeout: Duration,
    reactor: &Rc<Reactor>,
) -> std::io::Result<Io<TcpStream>> {
    futures_lite::future::or(Io::connect(addr, reactor), async {
        async_io::Timer::after(timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ))
    })
    .await
}

/// Owns a client connection's life: connect, run sessions, back off, reconnect.
async fn supervise<P: Protocol>(
    conn: Connection<P>,
    ctx: Rc<LoopCtx>,
    mut policy: Option<ReconnectPolicy>,
    connect_timeout: Duration,
) {
    let ctl = conn.inner.client.as_deref().expect("client connection");
    let addr = conn.remote_addr();
    let mut delay: Option<Duration> = None;
    'life: loop {
        if let Some(d) = delay.take() {
            log::debug!("client {}: reconnecting to {addr} in {d:?}", conn.id());
            match wait_ctl(ctl, Some(Instant::now() + d)).await {
                Wake::Closed => break 'life,
                Wake::Reconnect(after) => {
                    delay = Some(after);
                    continue;
                }
                Wake::Cancelled => {
                    // Wait for an explicit reconnect() or close().
                    match idle(&conn, ctl).await {
                        Some(after) => {
                            delay = Some(after);
                            continue;
                        }
                        None => break 'life,
                    }
                }
                Wake::Elapsed => {}
            }
        }
        if ctl.is_user_closed() {
            break;
        }
        // One attempt, abandoned if the application closes meanwhile.
        let attempt = futures_lite::future::or(
            async { Some(connect_once(addr, connect_timeout, &ctx.reactor).await) },
            async {
                while !ctl.is_user_closed() {
                    let l = ctl.event.listen();
                    if ctl.is_user_closed() {
                        break;
                    }
                    l.await;
                }
                None
            },
        )
        .await;
        let Some(result) = attempt else { break };
        let next = match result {
            Err(e) => {
                log::debug!("client {}: connect to {addr} failed: {e}", conn.id());
                ctl.attempts.fetch_add(1, Ordering::Relaxed);
                report(&conn, &Error::ConnectFailed { addr, source: e });
                policy.as_mut().map(|p| p.next_delay())
            }
            Ok(stream) => {
                if ctl.is_user_closed() {
                    break;
                }
                let _ = stream.get_ref().set_nodelay(true);
                if let Ok(local) = stream.get_ref().local_addr() {
                    conn.set_local_addr(local);
                }
                conn.reset_session(true);
                ctl.healthy.store(false, Ordering::SeqCst);
                ctl.connected.store(true, Ordering::SeqCst);
                ctl.attempts.store(0, Ordering::Relaxed);
                let started = Instant::now();
                ConnDriver::new(conn.clone(), stream, ctx.clone()).await;
                ctl.connected.store(false, Ordering::SeqCst);
                if ctl.is_user_closed() {
                    break;
                }
                let healthy = ctl.healthy.swap(false, Ordering::SeqCst);
                policy.as_mut().map(|p| {
                    p.session_ended(started.elapsed(), healthy);
                    p.next_delay()
                })
            }
        };
        // A manual reconnect() request wins over the policy.
        if let Some(after) = ctl.take_pending() {
            conn.reset_session(true);
            delay = Some(after);
            continue;
        }
        if ctl.cancel.swap(false, Ordering::SeqCst) {
            match idle(&conn, ctl).await {
                Some(after) => {
                    delay = Some(after);
                    continue;
                }
                None => break,
            }
        }
        match next {
            Some(Some(d)) => {
                conn.reset_session(true);
                delay = Some(d);
            }
            Some(None) => {
                let attempts = policy.as_ref().map_or(0, |p| p.attempt());
                log::warn!(
                    "client {}: giving up on {addr} after {attempts} attempts",
                    conn.id()
                );
                report(&conn, &Error::ReconnectGaveUp { attempts });
                match idle(&conn, ctl).await {
                    Some(after) => {
                        if let Some(p) = policy.as_mut() {
                            p.reset();
                        }
                        delay = Some(after);
                    }
                    None => break,
                }
            }
            None => {
                // No automatic policy: wait for reconnect() or close().
                match idle(&conn, ctl).await {
                    Some(after) => delay = Some(after),
                    None => break,
                }
            }
        }
    }
    // Final close: no session, no timer, no further attempt.
    conn.inner.flags.fetch_or(FINISHED, Ordering::AcqRel);
    {
        let mut ob = conn.outbox();
        ob.closed = true;
        ob.buf = Vec::new();
    }
    conn.endpoint().connections.remove(&conn.id());
    ctx.closers.borrow_mut().remove(&conn.id());
    ctx.conn_finished();
    log::debug!("client {}: closed for good", conn.id());
}

/// Refuses sends and waits for `reconnect()` (returns its delay, sends
/// accepted again) or `close()` (returns `None`).
async fn idle<P: Protocol>(conn: &Connection<P>, ctl: &ClientCtl) -> Option<Duration> {
    conn.outbox().closed = true;
    ctl.idle.store(true, Ordering::SeqCst);
    let woke = loop {
        match wait_ctl(ctl, None).await {
            Wake::Closed => break None,
            Wake::Reconnect(after) => break Some(after),
            Wake::Cancelled | Wake::Elapsed => {}
        }
    };
    ctl.idle.store(false, Ordering::SeqCst);
    if woke.is_some() {
        conn.reset_session(true);
    }
    woke
}

/// A standalone event loop on the calling thread, for clients and timers
/// without a server (Workerman's `Worker::runAll()` for a client script).
///
/// ```no_run
/// use lubdub_worker::{Client, EventLoop, Raw};
///
/// EventLoop::run(|_lp| {
///     let client = Client::<Raw>::new("tcp://127.0.0.1:1234").unwrap();
///     let conn = client.connect().unwrap();
///     let _ = conn.send(b"hello");
/// });
/// ```
pub struct EventLoop;

/// Stops an [`EventLoop`]; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct LoopHandle {
    stop: Arc<StopSignal>,
}

impl LoopHandle {
    /// Asks the loop to stop: clients close gracefully (bounded by 5 s),
    /// timers are dropped, then [`EventLoop::run`] returns.
    pub fn stop(&self) {
        self.stop.stop();
    }
}

impl EventLoop {
    /// Runs `setup` on a new event loop on this thread, then serves until
    /// [`LoopHandle::stop`] is called.
    pub fn run(setup: impl FnOnce(&LoopHandle)) {
        let handle = LoopHandle {
            stop: Arc::new(StopSignal::default()),
        };
        let stop = handle.stop.clone();
        let res = crate::event_loop::run_event_loop(0, move |ctx| async move {
            setup(&handle);
            stop.wait().await;
            ctx.run_closers_and_wait(Duration::from_secs(5)).await;
        });
        if let Err(e) = res {
            log::error!("event loop could not start: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: Option<u32>) -> ReconnectPolicy {
        ReconnectPolicy::new(Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            max_attempts: max,
            healthy_after: Duration::from_secs(10),
            seed: Some(1),
        })
    }

    #[test]
    fn delays_are_full_jitter_under_a_growing_capped_ceiling() {
        let mut p = policy(None);
        let ceilings: Vec<u128> = (0..6).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        let mut spread = Vec::new();
        for n in 0..200u32 {
            let d = p.next_delay().unwrap();
            assert!(d <= p.ceiling(n), "attempt {n}: {d:?}");
            if n >= 4 {
                spread.push(d.as_millis());
            }
        }
        // full jitter: the capped delays cover the whole [0, cap] range
        assert!(spread.iter().any(|&d| d < 250) && spread.iter().any(|&d| d > 750));
        assert!(
            p.ceiling(u32::MAX) == Duration::from_millis(1000),
            "no overflow"
        );
    }

    #[test]
    fn same_seed_same_schedule() {
        let a: Vec<_> = {
            let mut p = policy(None);
            (0..10).map(|_| p.next_delay()).collect()
        };
        let b: Vec<_> = {
            let mut p = policy(None);
            (0..10).map(|_| p.next_delay()).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn max_attempts_then_none() {
        let mut p = policy(Some(3));
        assert!(p.next_delay().is_some());
        assert!(p.next_delay().is_some());
        assert!(p.next_delay().is_some());
        assert_eq!(p.next_delay(), None);
        p.reset();
        assert!(p.next_delay().is_some());
    }

    #[test]
    fn counter_resets_only_after_a_healthy_session() {
        let mut p = policy(None);
        for _ in 0..4 {
            p.next_delay();
        }
        // flapping: connected, dropped at once, not proven healthy
        p.session_ended(Duration::from_millis(50), false);
        assert_eq!(p.attempt(), 4);
        // proven by a heartbeat round trip
        p.session_ended(Duration::from_millis(50), true);
        assert_eq!(p.attempt(), 0);
        for _ in 0..4 {
            p.next_delay();
        }
        // stayed up long enough
        p.session_ended(Duration::from_secs(10), false);
        assert_eq!(p.attempt(), 0);
    }

    #[test]
    fn backoff_deserializes_with_defaults() {
        let b: Backoff = serde_json::from_str(r#"{"base_ms": 250, "max_attempts": 7}"#).unwrap();
        assert_eq!(b.base, Duration::from_millis(250));
        assert_eq!(b.cap, Duration::from_secs(30));
        assert_eq!(b.max_attempts, Some(7));
    }
}
