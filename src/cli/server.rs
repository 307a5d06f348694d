//! [`Server`]: the workers a command-line server started, seen by the
//! control socket whatever their protocols.

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lubdub_worker::{Drain, Error, LoopStats, Protocol, Worker, WorkerHandle};

use crate::metrics::{Metrics, MetricsServer};

use super::control::HandedSocket;
use super::status::{secs, ConnRow, LoopRow};

/// A started worker, whatever its protocol.
pub(crate) trait Served: Send + Sync {
    fn name(&self) -> &str;
    fn scheme(&self) -> &'static str;
    fn listen(&self) -> String;
    fn accepting(&self) -> bool;
    fn stopping(&self) -> bool;
    fn listeners(&self) -> std::io::Result<Vec<TcpListener>>;
    fn loop_stats(&self) -> Vec<LoopStats>;
    /// Per loop: the bytes its connections queued for output.
    fn loop_memory(&self) -> Vec<u64>;
    fn connections(&self, out: &mut Vec<ConnRow>);
    fn stop_accepting(&self);
    fn drain(&self, how: Drain, deadline: Instant) -> bool;
    fn stop(&self);
    fn wait(&self);
}

impl<P: Protocol> Served for WorkerHandle<P> {
    fn name(&self) -> &str {
        WorkerHandle::name(self)
    }

    fn scheme(&self) -> &'static str {
        P::SCHEME
    }

    fn listen(&self) -> String {
        self.local_addr().to_string()
    }

    fn accepting(&self) -> bool {
        self.is_accepting()
    }

    fn stopping(&self) -> bool {
        self.is_stopping()
    }

    fn listeners(&self) -> std::io::Result<Vec<TcpListener>> {
        WorkerHandle::listeners(self)
    }

    fn loop_stats(&self) -> Vec<LoopStats> {
        WorkerHandle::loop_stats(self)
    }

    fn loop_memory(&self) -> Vec<u64> {
        let mut memory = vec![0u64; self.count()];
        for entry in self.connections().iter() {
            let c = entry.value();
            if let Some(m) = memory.get_mut(c.loop_index()) {
                *m += c.send_buffer_len() as u64;
            }
        }
        memory
    }

    fn connections(&self, out: &mut Vec<ConnRow>) {
        let conns: Vec<_> = self
            .connections()
            .iter()
            .map(|e| e.value().clone())
            .collect();
        for c in conns {
            let i = c.info();
            out.push(ConnRow {
                id: i.id,
                worker: self.name().to_owned(),
                loop_index: i.loop_index,
                protocol: P::SCHEME.to_owned(),
                remote: i.remote.to_string(),
                local: i.local.to_string(),
                bytes_in: i.stats.bytes_in,
                bytes_out: i.stats.bytes_out,
                messages_in: i.stats.messages_in,
                messages_out: i.stats.messages_out,
                send_queue: i.send_queue,
                state: format!("{:?}", i.state).to_lowercase(),
                age_secs: secs(i.age),
                idle_secs: secs(i.idle),
            });
        }
    }

    fn stop_accepting(&self) {
        WorkerHandle::stop_accepting(self);
    }

    fn drain(&self, how: Drain, deadline: Instant) -> bool {
        WorkerHandle::drain(self, how, deadline).unwrap_or(false)
    }

    fn stop(&self) {
        WorkerHandle::stop(self);
    }

    fn wait(&self) {
        WorkerHandle::wait(self);
    }
}

/// Listening sockets a reload handed to this process, waiting for the
/// workers that will serve them.
#[derive(Default)]
pub(crate) struct Inherited {
    /// `(what the socket is, the socket)`, in the order handed.
    sockets: Vec<(HandedSocket, Option<TcpListener>)>,
}

impl Inherited {
    pub fn new(described: Vec<HandedSocket>, fds: Vec<OwnedFd>) -> Self {
        Inherited {
            sockets: described
                .into_iter()
                .zip(fds)
                .map(|(d, fd)| (d, Some(TcpListener::from(fd))))
                .collect(),
        }
    }

    /// The sockets of the `index`th worker, if the old process had one
    /// under that index and name.
    fn take_worker(&mut self, index: usize, name: &str) -> Vec<TcpListener> {
        let mut out = Vec::new();
        for (d, sock) in &mut self.sockets {
            if d.role == "worker" && d.index == index && d.name == name {
                out.extend(sock.take());
            }
        }
        out
    }

    /// The metrics listener, if the old process served metrics.
    pub fn take_metrics(&mut self) -> Option<TcpListener> {
        self.sockets
            .iter_mut()
            .find(|(d, s)| d.role == "metrics" && s.is_some())
            .and_then(|(_, s)| s.take())
    }

    /// Sockets no worker took: logged, then closed with this value.
    pub fn unclaimed(&self) -> Vec<&HandedSocket> {
        self.sockets
            .iter()
            .filter(|(_, s)| s.is_some())
            .map(|(d, _)| d)
            .collect()
    }
}

/// The workers of a server run by [`run`](super::run): what `status`,
/// `connections`, `stop` and `reload` act on. Start each worker with
/// [`serve`](Self::serve).
pub struct Server {
    pub(crate) served: Vec<Arc<dyn Served>>,
    pub(crate) inherited: Inherited,
    /// Filled while the application starts its workers; served on
    /// `--metrics` once it is done.
    pub(crate) metrics: Metrics,
    pub(crate) metrics_server: Option<MetricsServer>,
}

impl Server {
    pub(crate) fn new(inherited: Inherited) -> Self {
        Server {
            served: Vec::new(),
            inherited,
            metrics: Metrics::new(),
            metrics_server: None,
        }
    }

    /// Starts `worker` as this server's next worker and returns its
    /// handle. In a process started by a reload, the worker serves the
    /// listening sockets the old process handed over for the worker of the
    /// same position and name (so no connect is refused meanwhile);
    /// otherwise it binds its address.
    pub fn serve<P: Protocol>(&mut self, worker: &mut Worker<P>) -> Result<WorkerHandle<P>, Error> {
        let index = self.served.len();
        let adopted = self.inherited.take_worker(index, worker.worker_name());
        if !adopted.is_empty() {
            log::info!(
                "worker {}: serving {} listening socket(s) handed over by the previous process",
                worker.worker_name(),
                adopted.len()
            );
            worker.adopt_listeners(adopted);
        }
        let handle = worker.start()?;
        self.metrics.add_worker(&handle);
        self.served.push(Arc::new(handle.clone()));
        Ok(handle)
    }

    /// The metrics served on `start --metrics ADDR`: the workers started
    /// with [`serve`](Self::serve) are in already; add a heartbeat's, a
    /// hub's or the application's own here.
    pub fn metrics(&mut self) -> &mut Metrics {
        &mut self.metrics
    }

    /// The listening sockets to hand to a new process, described.
    pub(crate) fn handover(&self) -> std::io::Result<Vec<(HandedSocket, TcpListener)>> {
        let mut out = Vec::new();
        for (index, w) in self.served.iter().enumerate() {
            for l in w.listeners()? {
                out.push((
                    HandedSocket {
                        role: "worker".into(),
                        index,
                        name: w.name().to_owned(),
                    },
                    l,
                ));
            }
        }
        if let Some(m) = &self.metrics_server {
            out.push((
                HandedSocket {
                    role: "metrics".into(),
                    index: 0,
                    name: "metrics".into(),
                },
                m.listener()?,
            ));
        }
        Ok(out)
    }

    /// Serves the metrics on `addr` (or on the listener a reload handed
    /// over), from now on.
    pub(crate) fn serve_metrics(&mut self, addr: std::net::SocketAddr) -> Result<(), String> {
        let listener = match self.inherited.take_metrics() {
            Some(l) => l,
            None => TcpListener::bind(addr).map_err(|e| format!("--metrics {addr}: {e}"))?,
        };
        let metrics = std::mem::take(&mut self.metrics);
        let server = MetricsServer::start(listener, Arc::new(metrics))
            .map_err(|e| format!("--metrics {addr}: {e}"))?;
        self.metrics_server = Some(server);
        Ok(())
    }

    /// Per-loop rows for `status`, from two samples `sample` apart.
    pub(crate) fn loop_rows(&self, sample: Duration) -> (Vec<LoopRow>, f64) {
        let before: Vec<Vec<LoopStats>> = self.served.iter().map(|w| w.loop_stats()).collect();
        let started = Instant::now();
        std::thread::sleep(sample);
        let elapsed = started.elapsed().as_secs_f64().max(1e-3);
        let mut rows = Vec::new();
        for (w, before) in self.served.iter().zip(before) {
            let memory = w.loop_memory();
            for s in w.loop_stats() {
                let prev = before.iter().find(|b| b.index == s.index);
                let msgs = |s: &LoopStats| s.messages_in + s.messages_out;
                let delta = msgs(&s).saturating_sub(prev.map(msgs).unwrap_or(0));
                rows.push(LoopRow {
                    worker: w.name().to_owned(),
                    protocol: w.scheme().to_owned(),
                    listen: w.listen(),
                    accepting: w.accepting(),
                    loop_index: s.index,
                    memory_bytes: memory.get(s.index).copied().unwrap_or(0),
                    connections: s.connections,
                    sockets: s.sockets,
                    accepted: s.accepted,
                    closed: s.closed_total(),
                    send_fail: s.buffer_full,
                    handshake_failures: s.handshake_failures,
                    timers: s.timers,
                    messages_in: s.messages_in,
                    messages_out: s.messages_out,
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                    messages_per_sec: delta as f64 / elapsed,
                });
            }
        }
        (rows, elapsed)
    }

    pub(crate) fn connection_rows(&self) -> Vec<ConnRow> {
        let mut rows = Vec::new();
        for w in &self.served {
            w.connections(&mut rows);
        }
        rows.sort_by_key(|r| r.id);
        rows
    }
}
