//! `WorkerHandle`: a running worker's connections, address and stop control.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

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
