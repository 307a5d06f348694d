//! Metrics in Prometheus' format (feature `metrics`), with the
//! `prometheus-client` crate.
//!
//! Nothing is counted for metrics on the hot path: the workers already keep
//! per-loop counters (each loop writes its own, see
//! [`WorkerHandle::loop_stats`]), the heartbeat and the hub keep theirs,
//! and a scrape reads and sums them ([`Collector`]s that run at scrape
//! time). So a server with metrics on runs the same per-message code as one
//! without.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lubdub::metrics::{Metrics, MetricsServer};
//! # fn demo(worker: lubdub::WorkerHandle<lubdub::Text>) -> std::io::Result<()> {
//! let mut metrics = Metrics::new();
//! metrics.add_worker(&worker);
//! let listener = std::net::TcpListener::bind("127.0.0.1:9100")?;
//! let server = MetricsServer::start(listener, Arc::new(metrics))?;
//! // curl http://127.0.0.1:9100/metrics
//! # server.stop(); Ok(()) }
//! ```
//!
//! Every metric, with its labels and meaning, is listed in
//! docs/operations.md.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use lubdub_heartbeat::{HeartbeatHandle, HeartbeatStats, RTT_BUCKETS};
use lubdub_hub::{Hub, HubStats};
use lubdub_worker::{LoopStats, Protocol, WorkerHandle, CLOSE_KINDS, LAG_BUCKETS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The metrics of a server: lubdub's (workers, heartbeats, hubs, the
/// process) and the application's own ([`registry_mut`](Self::registry_mut)).
pub struct Metrics {
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The text formats a scrape can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Prometheus' text format 0.0.4 (what `promtool check metrics` and
    /// most scrapers read).
    Prometheus,
    /// OpenMetrics 1.0 text (asked for with
    /// `Accept: application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format a request's `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The response's `Content-Type` for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Metrics {
    /// Metrics with the process' own (resident memory, open files, start
    /// time) and nothing else yet.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector {
            started: SystemTime::now(),
        }));
        Metrics { registry }
    }

    /// Adds a worker's metrics (labels `worker`, `loop`, `protocol`):
    /// connections, accepts, closes by reason, traffic, buffer-full
    /// episodes, handshake failures, timers, the loop's lag, refused
    /// connects and the memory budget.
    pub fn add_worker<P: Protocol>(&mut self, worker: &WorkerHandle<P>) {
        let w = worker.clone();
        self.lubdub().register_collector(Box::new(WorkerCollector {
            name: worker.name().to_owned(),
            protocol: P::SCHEME,
            sample: Box::new(move || WorkerSample {
                loops: w.loop_stats(),
                refused: w.rejected(),
                memory_used: w.buffered_bytes(),
                memory_budget: w.memory_budget(),
                accepting: w.is_accepting(),
            }),
        }));
    }

    /// Adds a heartbeat's metrics (label `worker`: the worker it watches):
    /// timeouts by kind, stalls, pings and acks, and the round-trip
    /// histogram of acknowledged pings.
    pub fn add_heartbeat<P: Protocol>(&mut self, worker: &str, heartbeat: &HeartbeatHandle<P>) {
        let h = heartbeat.clone();
        self.lubdub()
            .register_collector(Box::new(HeartbeatCollector {
                worker: worker.to_owned(),
                sample: Box::new(move || h.stats()),
            }));
    }

    /// Adds a hub's metrics (label `node`): deliveries, sends handed to and
    /// dropped by the backplane, messages from other nodes and those
    /// refused.
    pub fn add_hub<P: Protocol>(&mut self, hub: &Hub<P>) {
        let h = hub.clone();
        self.lubdub().register_collector(Box::new(HubCollector {
            node: hub.node().to_owned(),
            sample: Box::new(move || h.stats()),
        }));
    }

    /// The registry, for the application's own metrics (registered
    /// without lubdub's `lubdub_` prefix).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The metrics in `format`, as a scrape gets them.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; a collector's error would be a
        // bug here, reported in the text rather than by a panic.
        let r = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
        };
        if r.is_err() {
            log::error!("metrics: encoding failed");
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }

    fn lubdub(&mut self) -> &mut Registry {
        self.registry.sub_registry_with_prefix("lubdub")
    }
}

/// What a worker's collector reads at a scrape.
struct WorkerSample {
    loops: Vec<LoopStats>,
    refused: u64,
    memory_used: usize,
    memory_budget: usize,
    accepting: bool,
}

type Sampler<T> = Box<dyn Fn() -> T + Send + Sync>;

struct WorkerCollector {
    name: String,
    protocol: &'static str,
    sample: Sampler<WorkerSample>,
}

impl std::fmt::Debug for WorkerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerCollector")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One metric family of `(labels, value)` rows.
fn family<L: prometheus_client::encoding::EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    rows: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, v) in rows {
        let fam = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(fam)?,
            _ => ConstGauge::new(v).encode(fam)?,
        }
    }
    Ok(())
}

/// One metric without labels.
fn single(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// A histogram's rows: `(labels, per-bucket counts, sum in seconds)`,
/// buckets bounded by `bounds` (the last count is +Inf).
fn histogram<L: prometheus_client::encoding::EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    bounds: &[Duration],
    rows: impl IntoIterator<Item = (L, Vec<u64>, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, counts, sum) in rows {
        let buckets: Vec<(f64, u64)> = counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    bounds.get(i).map_or(f64::INFINITY, Duration::as_secs_f64),
                    *c,
                )
            })
            .collect();
        let count = counts.iter().sum();
        let mut fam = m.encode_family(&labels)?;
        fam.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

impl Collector for WorkerCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = (self.sample)();
        let worker = self.name.as_str();
        let protocol = self.protocol;
        let loop_labels = |l: &LoopStats| {
            [
                ("worker", worker.to_owned()),
                ("loop", l.index.to_string()),
                ("protocol", protocol.to_owned()),
            ]
        };
        let per_loop =
            |f: fn(&LoopStats) -> f64| s.loops.iter().map(move |l| (loop_labels(l), f(l)));
        use MetricType::{Counter, Gauge};
        family(
            &mut enc,
            "connections",
            "Established connections.",
            None,
            Gauge,
            per_loop(|l| l.connections as f64),
        )?;
        family(
            &mut enc,
            "sockets",
            "Open sockets: handshaking, established and lingering.",
            None,
            Gauge,
            per_loop(|l| l.sockets as f64),
        )?;
        family(
            &mut enc,
            "accepted",
            "Connections accepted.",
            None,
            Counter,
            per_loop(|l| l.accepted as f64),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "closed",
                "Connections closed, by reason (CloseReason).",
                None,
                Counter,
            )?;
            for l in &s.loops {
                for (kind, n) in CLOSE_KINDS.iter().zip(l.closed) {
                    let [w, lp, p] = loop_labels(l);
                    let labels = [w, lp, p, ("reason", (*kind).to_owned())];
                    ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        family(&mut enc, "handshake_failures", "Connections that closed before they were established (TLS or protocol handshake refused, failed or timed out).", None, Counter, per_loop(|l| l.handshake_failures as f64))?;
        family(
            &mut enc,
            "buffer_full_episodes",
            "Episodes of a full send buffer (Workerman's send failures).",
            None,
            Counter,
            per_loop(|l| l.buffer_full as f64),
        )?;
        family(
            &mut enc,
            "messages_received",
            "Messages decoded.",
            None,
            Counter,
            per_loop(|l| l.messages_in as f64),
        )?;
        family(
            &mut enc,
            "messages_sent",
            "Messages queued by send.",
            None,
            Counter,
            per_loop(|l| l.messages_out as f64),
        )?;
        family(
            &mut enc,
            "received",
            "Bytes read.",
            Some(&Unit::Bytes),
            Counter,
            per_loop(|l| l.bytes_in as f64),
        )?;
        family(
            &mut enc,
            "sent",
            "Bytes written.",
            Some(&Unit::Bytes),
            Counter,
            per_loop(|l| l.bytes_out as f64),
        )?;
        family(
            &mut enc,
            "timers",
            "Timer::add timers pending.",
            None,
            Gauge,
            per_loop(|l| l.timers as f64),
        )?;
        histogram(
            &mut enc,
            "loop_lag",
            "How late the event loop ran its timers (time from a timer's deadline to its run).",
            &LAG_BUCKETS,
            s.loops.iter().map(|l| {
                (
                    loop_labels(l),
                    l.lag_buckets.to_vec(),
                    l.lag_sum.as_secs_f64(),
                )
            }),
        )?;
        let w = [("worker", worker.to_owned())];
        family(
            &mut enc,
            "refused",
            "Connects refused by max_connections or max_connections_per_ip.",
            None,
            Counter,
            [(w.clone(), s.refused as f64)],
        )?;
        family(
            &mut enc,
            "memory_used",
            "Bytes buffered by the worker's connections, as charged to its memory budget.",
            Some(&Unit::Bytes),
            Gauge,
            [(w.clone(), s.memory_used as f64)],
        )?;
        family(
            &mut enc,
            "memory_budget",
            "The worker's memory budget (Limits::memory_budget).",
            Some(&Unit::Bytes),
            Gauge,
            [(w.clone(), s.memory_budget as f64)],
        )?;
        family(
            &mut enc,
            "accepting",
            "1 while the worker accepts connects (0 once a reload or stop began).",
            None,
            Gauge,
            [(w, if s.accepting { 1.0 } else { 0.0 })],
        )?;
        Ok(())
    }
}

struct HeartbeatCollector {
    worker: String,
    sample: Sampler<HeartbeatStats>,
}

impl std::fmt::Debug for HeartbeatCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatCollector")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl Collector for HeartbeatCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = (self.sample)();
        let w = || ("worker", self.worker.clone());
        use MetricType::Counter;
        family(
            &mut enc,
            "heartbeat_timeouts",
            "Connections the heartbeat closed: idle (nothing received in time) or ack (a server ping unanswered).",
            None,
            Counter,
            [
                ([w(), ("kind", "idle".to_owned())], s.idle_timeouts as f64),
                ([w(), ("kind", "ack".to_owned())], s.ack_timeouts as f64),
            ],
        )?;
        family(
            &mut enc,
            "heartbeat_stalls",
            "Stalls of the heartbeat's ticks detected (late ticks forgiven).",
            None,
            Counter,
            [([w()], s.stalls as f64)],
        )?;
        family(
            &mut enc,
            "heartbeat_pings_sent",
            "Server pings sent.",
            None,
            Counter,
            [([w()], s.pings_sent as f64)],
        )?;
        family(
            &mut enc,
            "heartbeat_acks",
            "Server pings acknowledged.",
            None,
            Counter,
            [([w()], s.acks as f64)],
        )?;
        histogram(
            &mut enc,
            "heartbeat_rtt",
            "Round trips of acknowledged server pings.",
            &RTT_BUCKETS,
            [([w()], s.rtt_buckets.to_vec(), s.rtt_sum.as_secs_f64())],
        )
    }
}

struct HubCollector {
    node: String,
    sample: Sampler<HubStats>,
}

impl std::fmt::Debug for HubCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCollector")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Collector for HubCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = (self.sample)();
        let n = || [("node", self.node.clone())];
        let rows: [(&str, &str, u64); 6] = [
            ("hub_delivered", "Deliveries queued on a local connection.", s.delivered),
            ("hub_refused", "Local deliveries a connection refused (send buffer full, closing).", s.refused),
            ("hub_published", "Sends handed to the backplane for the other nodes.", s.published),
            ("hub_dropped", "Sends for other nodes dropped: backplane down, or over the hub's limits.", s.dropped),
            ("hub_received", "Messages received from other nodes.", s.received),
            ("hub_rejected", "Messages from the backplane refused: malformed, over the limits or addressed to another channel.", s.rejected),
        ];
        for (name, help, v) in rows {
            family(
                &mut enc,
                name,
                help,
                None,
                MetricType::Counter,
                [(n(), v as f64)],
            )?;
        }
        Ok(())
    }
}

/// The process' resident memory, open files and start time, with the
/// names every Prometheus client library uses.
#[derive(Debug)]
struct ProcessCollector {
    started: SystemTime,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let start = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        single(
            &mut enc,
            "process_start_time",
            "Start time of the process since the Unix epoch.",
            Some(&Unit::Seconds),
            start,
        )?;
        if let Some(rss) = resident_bytes() {
            single(
                &mut enc,
                "process_resident_memory",
                "Resident memory size.",
                Some(&Unit::Bytes),
                rss as f64,
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            single(
                &mut enc,
                "process_open_fds",
                "Open file descriptors.",
                None,
                dir.count() as f64,
            )?;
        }
        Ok(())
    }
}

/// Resident bytes, from `/proc/self/statm` (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The longest request head the metrics responder reads.
const MAX_HEAD: usize = 8 * 1024;

/// How often the responder looks for a scrape (and for its stop) when
/// none is waiting: a scrape waits at most this long to be accepted.
const POLL: Duration = Duration::from_millis(20);

/// How long the responder waits for a request, and for a response to be
/// taken.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A minimal HTTP responder for scrapes on an admin listener: `GET
/// /metrics` (and `HEAD`), one request per connection, on a thread of its
/// own so a scrape never waits on an event loop and a slow scraper never
/// delays one. Bind it to a private address: it has no authentication.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `metrics` on `listener` until [`stop`](Self::stop).
    pub fn start(listener: TcpListener, metrics: Arc<Metrics>) -> io::Result<Self> {
        // Polled (see `serve`): a blocking accept could not be woken to
        // stop once the socket is shared with a reload's new process,
        // whose accept may take the waking connect.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accept = listener.try_clone()?;
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lubdub-metrics".into())
            .spawn(move || serve(accept, &metrics, &flag))?;
        log::info!("metrics: serving http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            listener,
            stop,
            thread: Some(thread),
        })
    }

    /// The address scrapes go to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A duplicate of the listening socket (to hand to a new process in a
    /// reload).
    pub fn listener(&self) -> io::Result<TcpListener> {
        self.listener.try_clone()
    }

    /// Stops answering scrapes, without waiting (after a reload handed
    /// the listener over, the new process answers them).
    pub fn stop_accepting(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Stops serving and waits for the responder's thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        let _ = thread.join();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(listener: TcpListener, metrics: &Metrics, stop: &AtomicBool) {
    let mut failures = 0u32;
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                failures = 0;
                if let Err(e) = stream
                    .set_nonblocking(false)
                    .and_then(|()| answer(stream, metrics))
                {
                    log::debug!("metrics: a scrape failed: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                // fd exhaustion and the like: report the episode once, back
                // off, keep serving.
                if failures == 0 {
                    log::warn!("metrics: accept failed: {e}");
                }
                failures = failures.saturating_add(1);
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let (status, body, content_type, head_only) = loop {
        if len == buf.len() {
            break (
                431,
                String::from("request head too large\n"),
                "text/plain; charset=utf-8",
                false,
            );
        }
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Partial) => continue,
            Err(_) => {
                break (
                    400,
                    String::from("bad request\n"),
                    "text/plain; charset=utf-8",
                    false,
                )
            }
            Ok(httparse::Status::Complete(_)) => {
                let head_only = req.method == Some("HEAD");
                if req.method != Some("GET") && !head_only {
                    break (
                        405,
                        String::from("method not allowed\n"),
                        "text/plain; charset=utf-8",
                        false,
                    );
                }
                let path = req.path.unwrap_or("/");
                let path = path.split('?').next().unwrap_or(path);
                if path != "/metrics" {
                    break (
                        404,
                        String::from("not found: try /metrics\n"),
                        "text/plain; charset=utf-8",
                        head_only,
                    );
                }
                let accept = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("accept"))
                    .and_then(|h| std::str::from_utf8(h.value).ok());
                let format = Format::from_accept(accept);
                break (
                    200,
                    metrics.encode(format),
                    format.content_type(),
                    head_only,
                );
            }
        }
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n{}\r\n",
        body.len(),
        if status == 405 { "allow: GET, HEAD\r\n" } else { "" }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out)?;
    stream.flush()?;
    // A lingering close: unread input (a refused oversized head) would make
    // the kernel answer the close with a reset that can destroy the
    // response before the client reads it. Discard a bounded amount first.
    stream.shutdown(std::net::Shutdown::Write)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut discarded = 0;
    while discarded < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
    Ok(())
}
