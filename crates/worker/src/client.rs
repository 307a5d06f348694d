//! Client connections (Workerman's `AsyncTcpConnection`) with reconnect, and
//! a standalone event loop to run them without a server.

use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::addr::IntoListenAddr;
use crate::client_ctl::{ClientCtl, Wake};
use crate::connection::Connection;
use crate::dispatch::Site;
use crate::driver::ConnDriver;
use crate::endpoint::{Endpoint, MapEntry};
use crate::error::{ConfigError, ConnError, Error, Misuse};
use crate::event_loop::{sleep_until, LoopCtx, Resident, StopSignal};
use crate::handlers::{connection_callbacks, Handlers};
use crate::lifecycle::Tenure;
use crate::limits::Limits;
use crate::mailbox::{ConnConfig, ConnShared};
use crate::protocol::Protocol;
use crate::reactor::{Io, Reactor};
use crate::reconnect::{Backoff, ReconnectPolicy};
use crate::tls::{Tls, TlsClientConfig};
use crate::transport::Plain;
use rustls::pki_types::ServerName;

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
/// [`ConnError::ConnectFailed`] (with the address and OS error), a broken
/// session as [`ConnError::Io`] and a close reason.
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
    /// Fixed at the first `connect`: the configuration and the site.
    running: OnceLock<Running<P>>,
    /// The host as written in the address (for TLS's server name).
    host: String,
    tls: Option<TlsClientConfig>,
    keep_unsent: bool,
}

/// What a client's connections run with, fixed at its first `connect`:
/// their configuration and the site that runs their events.
type Running<P> = (Arc<ConnConfig<P>>, Arc<Site<P>>);

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
        let tls_scheme = addr.check_scheme(P::SCHEME, P::TLS_SCHEME)?;
        // The protocol as a client of this host and path (WebSocket puts
        // them in its upgrade request).
        let protocol = protocol
            .for_client(addr.host(), addr.path().unwrap_or("/"))
            .map_err(|e| ConfigError::Invalid(format!("the protocol refused the address: {e}")))?;
        Ok(Client {
            addr: addr.socket_addr(),
            protocol,
            handlers: Handlers::default(),
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(10),
            backoff: None,
            running: OnceLock::new(),
            host: addr.host().to_owned(),
            // A TLS scheme (`wss://`) trusts Mozilla's roots unless told otherwise.
            tls: tls_scheme.then(TlsClientConfig::default),
            keep_unsent: true,
        })
    }

    /// Whether messages not yet written when a session ends, and sends made
    /// between sessions, wait for the next session (the default) or are
    /// dropped (sends between sessions then return `SendStatus::Closed`).
    /// Off suits at-most-once uses, a pub/sub publisher say, where a late
    /// message is worse than a lost one and each session starts clean.
    pub fn keep_unsent(&mut self, keep: bool) -> &mut Self {
        self.keep_unsent = keep;
        self
    }

    /// Connects over TLS (1.3 and 1.2, rustls with ring) with these
    /// settings: which servers to trust, ALPN, the server name (by default
    /// the address's host, sent as SNI). Reconnects redo the handshake and
    /// resume the session when the server allows it.
    pub fn tls(&mut self, config: TlsClientConfig) -> &mut Self {
        self.tls = Some(config);
        self
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

    /// The limits of this client's connections (see [`Limits`]; the send
    /// buffer limit also bounds sends queued before a connect). Default:
    /// `Limits::default()`.
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = limits;
        self
    }

    connection_callbacks!();

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Live (not finally closed) connections made by this client.
    pub fn connections(&self) -> &DashMap<u64, Connection<P>> {
        &self.running().1.endpoint.connections
    }

    fn running(&self) -> &Running<P> {
        self.running.get_or_init(|| {
            let config = Arc::new(ConnConfig {
                protocol: self.protocol.clone(),
                limits: self.limits.clone(),
            });
            let site = Arc::new(Site {
                handlers: self.handlers.clone(),
                endpoint: Arc::new(Endpoint::new(self.limits.memory_budget, None)),
            });
            (config, site)
        })
    }

    /// Starts connecting and returns the connection at once; sends queue
    /// until it is up. Callbacks and settings are fixed at the first call.
    /// Returns [`Misuse::NoEventLoop`] off an event loop.
    pub fn connect(&self) -> Result<Connection<P>, Error> {
        let ctx = LoopCtx::current().ok_or(Misuse::NoEventLoop)?;
        let (config, site) = self.running();
        let unspecified = match self.addr {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        let conn = Connection::from_shared(ConnShared::new(
            config.clone(),
            self.addr,
            unspecified,
            ctx.id,
            Some(Box::new(ClientCtl::new())),
        ));
        // In the map and counted by the loop from now until the supervisor
        // ends; a stopping loop closes it for good.
        let entry = MapEntry::insert(&site.endpoint, &conn);
        let mut resident = Resident::new(&ctx);
        {
            let c = conn.clone();
            resident.on_stop(move || c.close_for_stop());
        }
        let tls = match &self.tls {
            Some(config) => Some((config.clone(), config.name_for(&self.host)?)),
            None => None,
        };
        let sup = supervise(
            conn.clone(),
            site.clone(),
            (entry, resident),
            Plan {
                policy: self.backoff.clone().map(ReconnectPolicy::new),
                connect_timeout: self.connect_timeout,
                keep_unsent: self.keep_unsent,
                tls,
            },
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
        sleep_until(Instant::now() + timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ))
    })
    .await
}

/// How a client connection's supervisor connects and reconnects.
struct Plan {
    /// The automatic reconnect policy, if any.
    policy: Option<ReconnectPolicy>,
    connect_timeout: Duration,
    /// Whole messages unsent at the end of a session wait for the next.
    keep_unsent: bool,
    tls: Option<(TlsClientConfig, ServerName<'static>)>,
}

/// Owns a client connection's life: connect, run sessions, back off, reconnect.
async fn supervise<P: Protocol>(
    conn: Connection<P>,
    site: Arc<Site<P>>,
    tenancy: (MapEntry<P>, Resident),
    plan: Plan,
) {
    let Some(ctl) = conn.inner.client.as_deref() else {
        return;
    };
    let Plan {
        mut policy,
        connect_timeout,
        keep_unsent,
        tls,
    } = plan;
    let tenure = Tenure::Session {
        keep_unsent,
        queue_between: keep_unsent && policy.is_some(),
    };
    let ctx = tenancy.1.ctx().clone();
    let addr = conn.remote_addr();
    let mut delay: Option<Duration> = None;
    'life: loop {
        if let Some(d) = delay.take() {
            log::debug!("client {}: reconnecting to {addr} in {d:?}", conn.id());
            match ctl.wait(Some(Instant::now() + d)).await {
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
                ctl.closed().await;
                None
            },
        )
        .await;
        let Some(result) = attempt else { break };
        let next = match result {
            Err(e) => {
                log::debug!("client {}: connect to {addr} failed: {e}", conn.id());
                site.handlers
                    .report(&conn, &ConnError::ConnectFailed { addr, source: e });
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
                conn.inner.reset_session(true);
                ctl.take_healthy();
                let started = Instant::now();
                let tls_session = tls
                    .as_ref()
                    .map(|(config, name)| Tls::client(config, name.clone()));
                match tls_session {
                    None => ConnDriver::new(conn.clone(), tenure, &site, stream, Plain, &ctx).await,
                    Some(Ok(transport)) => {
                        ConnDriver::new(conn.clone(), tenure, &site, stream, transport, &ctx).await
                    }
                    Some(Err(e)) => site.handlers.report(&conn, &ConnError::Io(e)),
                }
                if ctl.is_user_closed() {
                    break;
                }
                let healthy = ctl.take_healthy();
                policy.as_mut().map(|p| {
                    p.session_ended(started.elapsed(), healthy);
                    p.next_delay()
                })
            }
        };
        // A manual reconnect() request wins over the policy.
        if let Some(after) = ctl.take_pending() {
            conn.inner.reset_session(true);
            delay = Some(after);
            continue;
        }
        if ctl.take_cancel() {
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
                conn.inner.reset_session(true);
                delay = Some(d);
            }
            Some(None) => {
                let attempts = policy.as_ref().map_or(0, |p| p.attempt());
                log::warn!(
                    "client {}: giving up on {addr} after {attempts} attempts",
                    conn.id()
                );
                site.handlers
                    .report(&conn, &ConnError::ReconnectGaveUp { attempts });
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
    // Final close: no session, no timer, no further attempt; out of the
    // map and the loop's count as the tenancy drops.
    conn.inner.retire();
    drop(tenancy);
    log::debug!("client {}: closed for good", conn.id());
}

/// Refuses sends and waits for `reconnect()` (returns its delay, sends
/// accepted again) or `close()` (returns `None`).
async fn idle<P: Protocol>(conn: &Connection<P>, ctl: &ClientCtl) -> Option<Duration> {
    conn.inner.refuse_sends();
    let woke = loop {
        match ctl.wait(None).await {
            Wake::Closed => break None,
            Wake::Reconnect(after) => break Some(after),
            Wake::Cancelled | Wake::Elapsed => {}
        }
    };
    if woke.is_some() {
        conn.inner.reset_session(true);
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
