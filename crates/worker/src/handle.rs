//! `WorkerHandle`: a running worker's connections, address and stop control.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::connection::Connection;
use crate::endpoint::Endpoint;
use crate::event_loop::{LoopCtx, StopSignal};
use crate::protocol::Protocol;
use crate::stats::{LoopCounters, LoopStats, Retired};

/// A callback of the worker itself (`on_worker_start`, `on_worker_stop`).
pub(crate) type WorkerFn<P> = Arc<dyn Fn(&WorkerHandle<P>) + Send + Sync>;

pub(crate) struct WorkerShared<P: Protocol> {
    pub name: String,
    pub count: usize,
    pub local_addr: SocketAddr,
    pub ep: Arc<Endpoint<P>>,
    pub stop: StopSignal,
    pub stop_timeout: Duration,
    pub max_connections: Option<usize>,
    pub rejected: AtomicU64,
    pub threads: Mutex<Vec<JoinHandle<()>>>,
    pub on_worker_start: Option<WorkerFn<P>>,
    pub on_worker_stop: Option<WorkerFn<P>>,
    /// The TLS configuration new connections use.
    pub tls: std::sync::RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// Each loop's counters, once it started.
    pub loops: Vec<std::sync::OnceLock<Arc<LoopCounters>>>,
    /// Set when the loops stop accepting (a reload's drain).
    pub accepting: StopSignal,
    /// A copy of each listening socket, to hand to a new process; dropped
    /// when the worker stops accepting or stops.
    pub listeners: Mutex<Vec<TcpListener>>,
}

/// How [`WorkerHandle::drain`] lets go of a worker's connections once it
/// stopped accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drain {
    /// Keep every connection until it closes by itself (reload `-g`).
    Graceful,
    /// Tell every connection to reconnect with the protocol's goodbye
    /// (WebSocket close 1012 "service restart", a Text protocol's restart
    /// line; [`CloseReason::Restart`](crate::CloseReason::Restart)), spread
    /// evenly over `spread` so that clients do not all come back at once.
    Restart {
        /// The time over which the goodbyes are spread.
        spread: Duration,
    },
}

/// A running worker: its live connections, address, and stop control.
/// Cheap to clone, usable from any thread and from callbacks and timers.
pub struct WorkerHandle<P: Protocol> {
    pub(crate) shared: Arc<WorkerShared<P>>,
}

impl<P: Protocol> Clone for WorkerHandle<P> {
    fn clone(&self) -> Self {
        WorkerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<P: Protocol> WorkerHandle<P> {
    /// The live connections of all loops, keyed by connection id.
    ///
    /// A connection is in the map from just before `on_connect` until just
    /// after `on_close` (so not while a protocol handshake is under way). Do not hold an entry reference across an `.await`
    /// or while sending to many connections from another thread for long.
    pub fn connections(&self) -> &DashMap<u64, Connection<P>> {
        &self.shared.ep.connections
    }

    /// The bound address (the real port when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Number of event loops.
    pub fn count(&self) -> usize {
        self.shared.count
    }

    /// Sockets still open: handshaking, established, and those that already
    /// ran `on_close` and wait (bounded) for the peer's FIN. Zero once idle.
    pub fn live_tasks(&self) -> usize {
        self.shared.ep.sockets.load(Ordering::Relaxed)
    }

    /// Bytes buffered by this worker's connections (incomplete input and
    /// queued output), as charged to its memory budget: in 64 KiB units per
    /// connection, rounded down, so small buffers do not count.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.ep.memory.used()
    }

    /// The worker's memory budget in bytes
    /// ([`Limits::memory_budget`](crate::Limits::memory_budget)), against
    /// which [`buffered_bytes`](Self::buffered_bytes) is charged.
    pub fn memory_budget(&self) -> usize {
        self.shared.ep.memory.limit()
    }

    /// Replaces the TLS configuration (a renewed certificate) without a
    /// restart: new handshakes use it, connections already up keep theirs.
    /// [`Misuse::InvalidState`](crate::Misuse::InvalidState) if the worker
    /// does not use TLS.
    pub fn reload_tls(&self, config: crate::TlsConfig) -> Result<(), crate::Misuse> {
        let mut tls = self
            .shared
            .tls
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if tls.is_none() {
            return Err(crate::Misuse::InvalidState("the worker does not use TLS"));
        }
        *tls = Some(config.rustls().clone());
        log::info!("worker {}: TLS configuration reloaded", self.shared.name);
        Ok(())
    }

    /// What each event loop counted since it started (those that started):
    /// connections, accepts, closes by reason, handshake failures,
    /// full-buffer episodes, traffic, timers and the loop's lag. Walks the
    /// live connections to add their traffic: for an operator's `status`
    /// or a metrics scrape, not for a hot path.
    pub fn loop_stats(&self) -> Vec<LoopStats> {
        let count = self.shared.loops.len();
        let mut live = vec![Retired::default(); count];
        let mut conns = vec![0; count];
        for entry in self.connections().iter() {
            let c = entry.value();
            let Some(t) = live.get_mut(c.loop_index()) else {
                continue;
            };
            let s = c.stats();
            t.bytes_in += s.bytes_in;
            t.bytes_out += s.bytes_out;
            t.messages_in += s.messages_in;
            t.messages_out += s.messages_out;
            t.buffer_full += s.buffer_full;
            conns[c.loop_index()] += 1;
        }
        self.shared
            .loops
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let counters = slot.get()?;
                Some(counters.snapshot(i, conns[i], live[i]))
            })
            .collect()
    }

    /// Connections refused because of `max_connections` or
    /// `max_connections_per_ip`.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Index of the event loop running the caller, if it runs on one.
    pub fn current_loop() -> Option<usize> {
        LoopCtx::current().map(|c| c.id)
    }

    /// Asks every loop to stop: stop accepting, run `on_worker_stop`, close
    /// connections gracefully (bounded by the stop timeout), exit.
    /// Returns at once; see [`wait`](Self::wait).
    pub fn stop(&self) {
        self.shared.stop.stop();
        self.drop_listener_copies();
    }

    /// Copies of the worker's listening sockets (one per socket bound or
    /// adopted), to hand to the process that replaces this one
    /// ([`Worker::adopt_listeners`](crate::Worker::adopt_listeners) there).
    /// Empty once the worker stopped accepting.
    pub fn listeners(&self) -> std::io::Result<Vec<TcpListener>> {
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(TcpListener::try_clone)
            .collect()
    }

    /// Stops taking new connections for good: each loop stops watching its
    /// listening sockets and closes this process's copies. A process that
    /// adopted them keeps accepting on them, so a connect in their queues is
    /// not refused. Connections already here are served until they close or
    /// the worker stops. Returns at once.
    pub fn stop_accepting(&self) {
        self.shared.accepting.stop();
        self.drop_listener_copies();
    }

    /// Whether the worker stopped accepting (or stopped).
    pub fn is_accepting(&self) -> bool {
        !(self.shared.accepting.is_stopping() || self.shared.stop.is_stopping())
    }

    fn drop_listener_copies(&self) {
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The second half of a reload: stops accepting, lets go of the
    /// connections as `how` says, and returns `Ok(true)` once no socket is
    /// left, `Ok(false)` at `deadline` with some still open (then
    /// [`stop`](Self::stop) closes them). Connections that finish a
    /// handshake during the drain are drained too. Blocks the calling
    /// thread: [`Misuse::InvalidState`](crate::Misuse::InvalidState) on an
    /// event loop.
    pub fn drain(&self, how: Drain, deadline: Instant) -> Result<bool, crate::Misuse> {
        const TICK: Duration = Duration::from_millis(10);
        if LoopCtx::current().is_some() {
            return Err(crate::Misuse::InvalidState(
                "drain blocks: call it from a thread of your own, not an event loop",
            ));
        }
        self.stop_accepting();
        let started = Instant::now();
        let mut told: HashSet<u64> = HashSet::new();
        loop {
            if self.live_tasks() == 0 {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            if let Drain::Restart { spread } = how {
                let waiting: Vec<Connection<P>> = self
                    .connections()
                    .iter()
                    .filter(|e| !told.contains(e.key()))
                    .map(|e| e.value().clone())
                    .collect();
                // Spread what is left over what is left of `spread`: all at
                // once when it is over (and for those that arrive later).
                let left = spread.saturating_sub(now - started);
                let ticks = (left.as_nanos() / TICK.as_nanos()).max(1) as usize;
                let now_count = waiting.len().div_ceil(ticks);
                for conn in waiting.into_iter().take(now_count) {
                    told.insert(conn.id());
                    conn.close_for_restart();
                }
            }
            std::thread::sleep(TICK.min(deadline - now));
        }
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop.is_stopping()
    }

    /// Blocks until every loop has stopped. Do not call it from a loop.
    pub fn wait(&self) {
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in threads {
            if t.join().is_err() {
                log::error!("worker {}: an event loop thread panicked", self.shared.name);
            }
        }
    }

    /// [`stop`](Self::stop), then [`wait`](Self::wait).
    pub fn stop_and_wait(&self) {
        self.stop();
        self.wait();
    }
}
