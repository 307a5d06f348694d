//! `Worker`: listens, runs `count` event loops, and calls your callbacks.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::addr::{IntoListenAddr, ListenAddr};
use crate::config::{default_name, WorkerConfig};
use crate::connection::Connection;
use crate::dispatch::Site;
use crate::driver::ConnDriver;
use crate::endpoint::Endpoint;
use crate::error::{ConfigError, Error};
use crate::event_loop::{catch, sleep_until, yield_to_reactor, LoopCtx, StopSignal};
use crate::handle::{WorkerFn, WorkerHandle, WorkerShared};
use crate::handlers::{connection_callbacks, Handlers};
use crate::lifecycle::Tenure;
use crate::limits::Limits;
use crate::mailbox::{ConnConfig, ConnShared};
use crate::protocol::Protocol;
use crate::reactor::Io;
use crate::timer::Timer;
use crate::tls::{Tls, TlsConfig};
use crate::transport::Plain;

/// A server: an address, a protocol, callbacks, and `count` event loops.
///
/// The Rust spelling of Workerman's `new Worker('text://0.0.0.0:1234')`:
///
/// ```no_run
/// use lubdub_worker::{Worker, protocol::Raw};
///
/// let mut worker = Worker::<Raw>::new("tcp://0.0.0.0:1234").unwrap();
/// worker.count(4).name("echo");
/// worker.on_message(|conn, data| {
///     let _ = conn.send(&data);
/// });
/// worker.run().unwrap(); // until SIGINT/SIGTERM
/// ```
///
/// Callbacks are plain closures run on the event loop that owns the
/// connection; they must not block. For async work per message use
/// [`on_message_async`](Self::on_message_async).
pub struct Worker<P: Protocol> {
    listen: ListenAddr,
    protocol: P,
    count: usize,
    name: String,
    limits: Limits,
    handlers: Handlers<P>,
    on_worker_start: Option<WorkerFn<P>>,
    on_worker_stop: Option<WorkerFn<P>>,
    tls: Option<TlsConfig>,
    /// The address names the protocol's TLS scheme (`wss://`).
    tls_scheme: bool,
    /// Listening sockets handed over by a process this one replaces; the
    /// next `start` serves them instead of binding.
    adopted: Mutex<Vec<TcpListener>>,
}

impl<P: Protocol + Default> Worker<P> {
    /// A worker for `addr` (`text://0.0.0.0:1234`, `tcp://[::1]:0`, a
    /// `SocketAddr`...) with the protocol's default settings. A scheme in the
    /// address must match the protocol's.
    pub fn new(addr: impl IntoListenAddr) -> Result<Self, Error> {
        Self::with_protocol(addr, P::default())
    }
}

impl<P: Protocol> Worker<P> {
    /// A worker for `addr` speaking a configured `protocol`.
    pub fn with_protocol(addr: impl IntoListenAddr, protocol: P) -> Result<Self, Error> {
        let listen = addr.into_listen_addr()?;
        let tls_scheme = listen.check_scheme(P::SCHEME, P::TLS_SCHEME)?;
        if let Some(path) = listen.path() {
            return Err(ConfigError::Address(format!(
                "a listen address has no path: `{path}` in `{listen}`"
            ))
            .into());
        }
        Ok(Worker {
            listen,
            protocol,
            count: 1,
            name: default_name(),
            limits: Limits::default(),
            handlers: Handlers::default(),
            on_worker_start: None,
            on_worker_stop: None,
            tls: None,
            tls_scheme,
            adopted: Mutex::new(Vec::new()),
        })
    }

    /// A worker from deserialized settings.
    pub fn from_config(config: &WorkerConfig, protocol: P) -> Result<Self, Error> {
        if config.count == 0 {
            return Err(ConfigError::Invalid("count must be at least 1".into()).into());
        }
        config.limits.check().map_err(ConfigError::Invalid)?;
        let mut w = Self::with_protocol(config.listen.as_str(), protocol)?;
        w.count(config.count)
            .name(&config.name)
            .limits(config.limits.clone());
        if let Some(files) = &config.tls {
            w.tls(TlsConfig::from_pem_files(&files.cert, &files.key)?);
        }
        Ok(w)
    }

    /// Number of event-loop threads (Workerman's process `count`). Default 1.
    /// Each loop has its own listening socket (`SO_REUSEPORT`), so the
    /// kernel spreads new connections over the loops.
    pub fn count(&mut self, count: usize) -> &mut Self {
        self.count = count.max(1);
        self
    }

    /// The worker's name, used for thread names and logs. Default `"none"`.
    pub fn name(&mut self, name: &str) -> &mut Self {
        self.name = name.to_string();
        self
    }

    /// The name set with [`name`](Self::name).
    pub fn worker_name(&self) -> &str {
        &self.name
    }

    /// Every limit of the worker's connections (send buffer, message size,
    /// timeouts, backpressure, memory budget, most connections): see
    /// [`Limits`] for each default and docs/limits.md for what happens at
    /// each. Replaces the limits set before.
    ///
    /// ```no_run
    /// # use lubdub_worker::{Limits, Worker, Raw};
    /// let mut worker = Worker::<Raw>::new("tcp://0.0.0.0:1234").unwrap();
    /// worker.limits(Limits::default().send_buffer_size(64 * 1024));
    /// ```
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = limits;
        self
    }

    /// The limits the worker will use.
    pub fn limits_ref(&self) -> &Limits {
        &self.limits
    }

    /// Terminates TLS (1.3 and 1.2, rustls with ring) for every connection,
    /// whatever the protocol: Workerman's `transport = 'ssl'`. A TLS scheme
    /// (`wss://`) requires it. New connections use the newest configuration
    /// ([`WorkerHandle::reload_tls`]); nothing is read from a connection
    /// before its TLS handshake completes, within the handshake timeout.
    pub fn tls(&mut self, config: TlsConfig) -> &mut Self {
        self.tls = Some(config);
        self
    }

    /// Runs on each event loop when it starts (add timers here).
    pub fn on_worker_start(
        &mut self,
        f: impl Fn(&WorkerHandle<P>) + Send + Sync + 'static,
    ) -> &mut Self {
        self.on_worker_start = Some(Arc::new(f));
        self
    }

    /// Runs on each event loop when the worker stops, before connections close.
    pub fn on_worker_stop(
        &mut self,
        f: impl Fn(&WorkerHandle<P>) + Send + Sync + 'static,
    ) -> &mut Self {
        self.on_worker_stop = Some(Arc::new(f));
        self
    }

    /// Serves listening sockets that another process bound (the one this
    /// process replaces in a reload, or a supervisor) instead of binding
    /// the address: connections waiting in their queues are accepted here,
    /// none is refused. The next [`start`](Self::start) uses them: loop `i`
    /// accepts on socket `i` (a loop without a socket of its own shares one,
    /// extra sockets are shared out over the loops). Each must be a
    /// listening TCP socket.
    pub fn adopt_listeners(&mut self, listeners: Vec<TcpListener>) -> &mut Self {
        *self.adopted.lock().unwrap_or_else(PoisonError::into_inner) = listeners;
        self
    }

    connection_callbacks!();

    /// The address given to the worker (port 0 until started).
    pub fn listen_addr(&self) -> &ListenAddr {
        &self.listen
    }

    /// Binds and starts the event loops; returns at once with a handle.
    pub fn start(&self) -> Result<WorkerHandle<P>, Error> {
        if self.tls_scheme && self.tls.is_none() {
            return Err(ConfigError::Invalid(format!(
                "`{}` is a TLS address: configure it with worker.tls(TlsConfig::from_pem_files(..))",
                self.listen
            ))
            .into());
        }
        let count = self.count;
        let adopted =
            std::mem::take(&mut *self.adopted.lock().unwrap_or_else(PoisonError::into_inner));
        let listeners = if adopted.is_empty() {
            let first = bind(self.listen.socket_addr(), count > 1)?;
            let local_addr = first.local_addr()?;
            let mut listeners = vec![first];
            for _ in 1..count {
                listeners.push(bind(local_addr, true)?);
            }
            listeners
        } else {
            check_adopted(&adopted)?;
            adopted
        };
        let local_addr = listeners[0].local_addr()?;
        let copies = listeners
            .iter()
            .map(TcpListener::try_clone)
            .collect::<Result<Vec<_>, _>>()?;
        let per_loop = share_out(listeners, count)?;
        let endpoint = Arc::new(Endpoint::new(
            self.limits.memory_budget,
            self.limits.max_connections_per_ip,
        ));
        let serving = Arc::new(Serving {
            config: Arc::new(ConnConfig {
                protocol: self.protocol.clone(),
                limits: self.limits.clone(),
            }),
            site: Arc::new(Site {
                handlers: self.handlers.clone(),
                endpoint: endpoint.clone(),
            }),
        });
        let shared = Arc::new(WorkerShared {
            name: self.name.clone(),
            count,
            local_addr,
            ep: endpoint,
            stop: StopSignal::default(),
            stop_timeout: self.limits.stop_timeout,
            max_connections: self.limits.max_connections,
            rejected: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
            on_worker_start: self.on_worker_start.clone(),
            on_worker_stop: self.on_worker_stop.clone(),
            tls: std::sync::RwLock::new(self.tls.as_ref().map(|t| t.rustls().clone())),
            loops: (0..count).map(|_| std::sync::OnceLock::new()).collect(),
            accepting: StopSignal::default(),
            listeners: Mutex::new(copies),
        });
        log::info!(
            "worker {} listening on {}://{} with {count} loop(s)",
            self.name,
            P::SCHEME,
            local_addr
        );
        let mut threads = Vec::with_capacity(count);
        for (idx, listener) in per_loop.into_iter().enumerate() {
            let shared = shared.clone();
            let serving = serving.clone();
            let t = std::thread::Builder::new()
                .name(format!("{}-{idx}", self.name))
                .spawn(move || run_loop(shared, serving, idx, listener))?;
            threads.push(t);
        }
        *shared
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = threads;
        Ok(WorkerHandle { shared })
    }

    /// Starts, stops on SIGINT or SIGTERM, and returns once every loop has
    /// stopped (Workerman's `Worker::runAll()` for one worker).
    pub fn run(&self) -> Result<(), Error> {
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGINT, SIGTERM};
            // Registered before the loops start: a signal that arrives
            // during on_worker_start is queued, not fatal.
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
            let handle = self.start()?;
            let sig_handle = signals.handle();
            let h = handle.clone();
            let watcher = std::thread::Builder::new()
                .name(format!("{}-signals", self.name))
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        log::info!("signal {sig} received: stopping worker {}", h.name());
                        h.stop();
                    }
                })?;
            handle.wait();
            sig_handle.close();
            let _ = watcher.join();
        }
        Ok(())
    }
}

/// Refuses a socket that is not a listening TCP socket (a wrong fd handed
/// over), and makes the rest non-blocking.
fn check_adopted(listeners: &[TcpListener]) -> Result<(), Error> {
    for l in listeners {
        let sock = socket2::SockRef::from(l);
        let listening = sock.is_listener()?;
        let tcp = sock.r#type()? == socket2::Type::STREAM;
        if !(listening && tcp) {
            return Err(ConfigError::Invalid(
                "an adopted socket is not a listening TCP socket".into(),
            )
            .into());
        }
        l.set_nonblocking(true)?;
    }
    Ok(())
}

/// The listening sockets of each of `count` loops: socket `i` to loop
/// `i % count`; a loop left without one shares a copy of socket
/// `i % len` (both loops watch it, whichever accepts first serves).
fn share_out(listeners: Vec<TcpListener>, count: usize) -> Result<Vec<Vec<TcpListener>>, Error> {
    let len = listeners.len();
    let mut per_loop: Vec<Vec<TcpListener>> = (0..count).map(|_| Vec::new()).collect();
    for i in len..count {
        per_loop[i].push(listeners[i % len].try_clone()?);
    }
    for (i, l) in listeners.into_iter().enumerate() {
        per_loop[i % count].push(l);
    }
    Ok(per_loop)
}

fn bind(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener, Error> {
    use socket2::{Domain, Protocol as SockProto, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(SockProto::TCP),
    )?;
    sock.set_reuse_address(true)?;
    #[cfg(not(any(target_os = "solaris", target_os = "illumos")))]
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    #[cfg(any(target_os = "solaris", target_os = "illumos"))]
    let _ = reuse_port;
    sock.bind(&addr.into())
        .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("bind {addr}: {e}"))))?;
    sock.listen(1024)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// What a worker's loops need to serve connections: their configuration
/// and the site that runs their events.
struct Serving<P: Protocol> {
    config: Arc<ConnConfig<P>>,
    site: Arc<Site<P>>,
}

fn run_loop<P: Protocol>(
    shared: Arc<WorkerShared<P>>,
    serving: Arc<Serving<P>>,
    idx: usize,
    listeners: Vec<TcpListener>,
) {
    let name = shared.name.clone();
    let stopper = shared.clone();
    if let Err(e) = crate::event_loop::run_event_loop(idx, move |ctx| {
        loop_main(shared, serving, ctx, listeners)
    }) {
        log::error!("worker {name} loop {idx} could not start: {e}; stopping the worker");
        stopper.stop.stop();
    }
    log::debug!("worker {name} loop {idx} stopped");
}

async fn loop_main<P: Protocol>(
    shared: Arc<WorkerShared<P>>,
    serving: Arc<Serving<P>>,
    ctx: Rc<LoopCtx>,
    listeners: Vec<TcpListener>,
) {
    let handle = WorkerHandle {
        shared: shared.clone(),
    };
    if let Some(slot) = shared.loops.get(ctx.id) {
        let _ = slot.set(ctx.counters.clone());
    }
    let listeners = match listeners
        .into_iter()
        .map(|l| Io::new(l, &ctx.reactor))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(l) => l,
        Err(e) => {
            log::error!(
                "worker {}: cannot watch the listener: {e}; stopping",
                shared.name
            );
            shared.stop.stop();
            return;
        }
    };
    for plugin in &serving.site.handlers.plugins {
        if let Err(msg) = catch(|| plugin.on_worker_start(&handle)) {
            log::error!(
                "worker {}: plugin on_worker_start panicked: {msg}",
                shared.name
            );
        }
    }
    if let Some(cb) = &shared.on_worker_start {
        if let Err(msg) = catch(|| cb(&handle)) {
            log::error!("worker {}: on_worker_start panicked: {msg}", shared.name);
        }
    }
    // Accept on every socket of this loop until the worker stops or stops
    // accepting (a reload: the new process accepts from the same sockets).
    let mut accepts: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>> = Box::pin(
        futures_lite::future::or(shared.stop.wait(), shared.accepting.wait()),
    );
    for listener in &listeners {
        accepts = Box::pin(futures_lite::future::or(
            accepts,
            accept_loop(&shared, &serving, &ctx, listener),
        ));
    }
    accepts.await;
    drop(listeners);
    if !shared.stop.is_stopping() {
        log::info!(
            "worker {} loop {}: no longer accepting; serving its connections until stopped",
            shared.name,
            ctx.id
        );
        shared.stop.wait().await;
    }
    for plugin in &serving.site.handlers.plugins {
        if let Err(msg) = catch(|| plugin.on_worker_stop(&handle)) {
            log::error!(
                "worker {}: plugin on_worker_stop panicked: {msg}",
                shared.name
            );
        }
    }
    if let Some(cb) = &shared.on_worker_stop {
        if let Err(msg) = catch(|| cb(&handle)) {
            log::error!("worker {}: on_worker_stop panicked: {msg}", shared.name);
        }
    }
    Timer::del_all();
    // Every connection of this loop closes gracefully, bounded: those in
    // the map (established) through it, the rest (handshaking, lingering,
    // client connections, which close for good) through their closers.
    let mine: Vec<Connection<P>> = shared
        .ep
        .connections
        .iter()
        .filter(|e| e.value().loop_index() == ctx.id)
        .map(|e| e.value().clone())
        .collect();
    for conn in &mine {
        conn.close_for_stop();
    }
    drop(mine);
    if !ctx.run_closers_and_wait(shared.stop_timeout).await {
        log::warn!(
            "worker {} loop {}: {} connection(s) did not flush within {:?}; dropping them",
            shared.name,
            ctx.id,
            ctx.live.get(),
            shared.stop_timeout
        );
        // What is left is dropped with the loop: each still gets its
        // `on_close` (reason `WorkerStopped`) as its state machine drops.
    }
}

async fn accept_loop<P: Protocol>(
    shared: &WorkerShared<P>,
    serving: &Serving<P>,
    ctx: &Rc<LoopCtx>,
    listener: &Io<TcpListener>,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(10);
    const ACCEPTS_PER_TURN: u32 = 64;
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff = MIN_BACKOFF;
    // (start, errors) of the current run of accept failures.
    let mut episode: Option<(Instant, u64)> = None;
    let mut accepted = 0u32;
    loop {
        // A budget for the accept loop as for connections: a connect storm
        // cannot keep the loop from serving the connections it has.
        accepted += 1;
        if accepted % ACCEPTS_PER_TURN == 0 {
            yield_to_reactor().await;
        }
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Some((since, n)) = episode.take() {
                    log::info!(
                        "worker {}: accepting again after {n} failed accept(s) over {:?}",
                        shared.name,
                        since.elapsed()
                    );
                }
                backoff = MIN_BACKOFF;
                if let Some(max) = shared.max_connections {
                    if shared.ep.sockets.load(Ordering::Relaxed) >= max {
                        if shared.rejected.fetch_add(1, Ordering::Relaxed) == 0 {
                            log::warn!(
                                "worker {}: {max} connections reached; refusing more (counted in rejected())",
                                shared.name
                            );
                        }
                        let _ = stream.get_ref().shutdown(std::net::Shutdown::Both);
                        drop(stream);
                        continue;
                    }
                }
                if let Some(per_ip) = &shared.ep.per_ip {
                    if !per_ip.admit(peer.ip()) {
                        if shared.rejected.fetch_add(1, Ordering::Relaxed) == 0 {
                            log::warn!(
                                "worker {}: {} connections from {} reached; refusing more from \
                                 one address (counted in rejected())",
                                shared.name,
                                per_ip.limit(),
                                peer.ip()
                            );
                        }
                        let _ = stream.get_ref().shutdown(std::net::Shutdown::Both);
                        drop(stream);
                        continue;
                    }
                }
                ctx.counters.accepted();
                spawn_connection(shared, serving, ctx, stream, peer);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM...: back off instead of
                // spinning on a listener that stays readable; log once.
                match &mut episode {
                    None => {
                        log::warn!(
                            "worker {}: accept failed: {e}; backing off until it succeeds",
                            shared.name
                        );
                        episode = Some((Instant::now(), 1));
                    }
                    Some((_, n)) => *n += 1,
                }
                sleep_until(Instant::now() + backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn spawn_connection<P: Protocol>(
    shared: &WorkerShared<P>,
    serving: &Serving<P>,
    ctx: &Rc<LoopCtx>,
    stream: Io<TcpStream>,
    peer: SocketAddr,
) {
    let _ = stream.get_ref().set_nodelay(true);
    // A listener bound to one address accepts on that address; only a
    // wildcard listener needs `getsockname` to learn which one was used.
    let local = if shared.local_addr.ip().is_unspecified() {
        stream.get_ref().local_addr().unwrap_or(shared.local_addr)
    } else {
        shared.local_addr
    };
    let tls = shared
        .tls
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let new_conn = || {
        Connection::from_shared(ConnShared::new(
            serving.config.clone(),
            peer,
            local,
            ctx.id,
            None,
        ))
    };
    let site = &serving.site;
    let Some(tls) = tls else {
        let driver = ConnDriver::new(new_conn(), Tenure::Whole, site, stream, Plain, ctx);
        ctx.ex.spawn(driver).detach();
        return;
    };
    match Tls::server(&tls) {
        Ok(transport) => {
            let driver = ConnDriver::new(new_conn(), Tenure::Whole, site, stream, transport, ctx);
            ctx.ex.spawn(driver).detach();
        }
        Err(e) => {
            log::warn!("worker {}: TLS session for {peer}: {e}", shared.name);
            if let Some(per_ip) = &shared.ep.per_ip {
                per_ip.release(peer.ip());
            }
        }
    }
}
