//! Prometheus metrics (`lubdub::metrics`) over real sockets: what a scrape
//! reads matches the worker, `promtool check metrics` accepts the output,
//! and a real `prometheus` server, started here with a scrape config
//! pointing at the responder, reports the connection count through its
//! HTTP API.

mod common;
#[path = "common/process.rs"]
mod process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, LineClient, WAIT};
use lubdub::heartbeat::{Heartbeat, TextHeartbeat};
use lubdub::hub::Hub;
use lubdub::metrics::{Format, Metrics, MetricsServer};
use lubdub::{Text, Worker, WorkerHandle};
use process::{output_of, TempDir};

/// A two-loop echo worker with a heartbeat and a local hub, and a
/// responder serving their metrics.
struct Served {
    worker: WorkerHandle<Text>,
    metrics: MetricsServer,
}

fn serve() -> Served {
    let hb = Heartbeat::server(TextHeartbeat::new()).timeout(Duration::from_secs(60));
    let hb_handle = hb.handle();
    let hub = Hub::<Text>::local();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.name("echo").count(2);
    w.plugin(hb);
    w.plugin(hub.plugin());
    let members = hub.clone();
    w.on_message(move |c, m: String| {
        if m == "join" {
            members.join(c, "room").unwrap();
            members.send_to_group("room", "joined", &[]);
        } else {
            let _ = c.send(&m);
        }
    });
    let worker = w.start().unwrap();
    let mut metrics = Metrics::new();
    metrics.add_worker(&worker);
    metrics.add_heartbeat("echo", &hb_handle);
    metrics.add_hub(&hub);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = MetricsServer::start(listener, Arc::new(metrics)).unwrap();
    Served { worker, metrics }
}

/// `GET path` with `accept`, answered in full: (status line, head, body).
fn get(addr: SocketAddr, request: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    let (head, body) = got.split_once("\r\n\r\n").expect("a response head");
    let status = head.lines().next().unwrap().to_owned();
    (status, head.to_owned(), body.to_owned())
}

fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, body.len());
    body
}

/// The sum of a metric's samples whose line contains every `labels` piece.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let n = l.split(['{', ' ']).next().unwrap();
            n == name && labels.iter().all(|p| l.contains(p))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn a_scrape_reads_what_the_worker_counted() {
    let s = serve();
    let addr = s.metrics.local_addr();
    let mut clients: Vec<LineClient> = (0..3)
        .map(|_| LineClient::connect(s.worker.local_addr()))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.roundtrip(&format!("hello {i}")), format!("hello {i}"));
    }
    assert_eq!(clients[0].roundtrip("join"), "joined");
    // one goes away: a peer close
    let gone = clients.pop().unwrap();
    drop(gone);
    wait_until("the close is counted", || {
        sum(
            &scrape(addr),
            "lubdub_closed_total",
            &["reason=\"peer_closed\""],
        ) == 1.0
    });

    let m = scrape(addr);
    assert_eq!(
        sum(&m, "lubdub_connections", &["worker=\"echo\""]),
        2.0,
        "{m}"
    );
    assert_eq!(
        sum(&m, "lubdub_connections", &["loop=\"0\""])
            + sum(&m, "lubdub_connections", &["loop=\"1\""]),
        2.0
    );
    assert_eq!(
        sum(&m, "lubdub_accepted_total", &["protocol=\"text\""]),
        3.0
    );
    assert_eq!(sum(&m, "lubdub_closed_total", &[]), 1.0);
    assert_eq!(sum(&m, "lubdub_messages_received_total", &[]), 4.0);
    // three echoes; the group delivery went out pre-encoded (send_raw), so
    // it counts as the hub's, not as a message sent
    assert_eq!(sum(&m, "lubdub_messages_sent_total", &[]), 3.0);
    // "hello N\n" three times and "join\n"
    assert_eq!(sum(&m, "lubdub_received_bytes_total", &[]), 29.0, "{m}");
    assert_eq!(
        sum(&m, "lubdub_hub_delivered_total", &["node="]),
        1.0,
        "{m}"
    );
    assert_eq!(
        sum(&m, "lubdub_heartbeat_timeouts_total", &["kind=\"idle\""]),
        0.0
    );
    assert!(
        m.contains("# TYPE lubdub_loop_lag_seconds histogram"),
        "{m}"
    );
    assert!(m.contains("lubdub_loop_lag_seconds_bucket{worker=\"echo\",loop=\"0\",protocol=\"text\",le=\"+Inf\"}"), "{m}");
    assert!(
        m.contains("# TYPE lubdub_heartbeat_rtt_seconds histogram"),
        "{m}"
    );
    assert_eq!(
        sum(&m, "lubdub_memory_budget_bytes", &[]),
        s.worker.memory_budget() as f64
    );
    assert_eq!(sum(&m, "lubdub_accepting", &["worker=\"echo\""]), 1.0);
    assert!(sum(&m, "process_resident_memory_bytes", &[]) > 1e6, "{m}");
    assert!(sum(&m, "process_open_fds", &[]) >= 4.0, "{m}");

    // OpenMetrics when asked for it
    let (status, head, body) = get(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(Format::from_accept(None), Format::Prometheus);

    // HEAD, other paths and methods, and garbage get their answers
    let (status, _, body) = get(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    let (status, _, _) = get(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, head, _) = get(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(head.contains("allow: GET, HEAD"));
    let (status, _, _) = get(addr, "GET /metrics HTTP/1.1\r\nHo st: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    let (status, _, _) = get(addr, &long);
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");

    // a scraper that connects and says nothing does not block the next one
    // for longer than the responder's read timeout
    let _silent = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    scrape(addr);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    drop(clients);
    s.metrics.stop();
    s.worker.stop_and_wait();
}

#[test]
fn promtool_accepts_the_output() {
    let s = serve();
    let mut c = LineClient::connect(s.worker.local_addr());
    assert_eq!(c.roundtrip("hi"), "hi");
    let text = scrape(s.metrics.local_addr());
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool (Debian package prometheus) is needed for this test: {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool's linter exits 1 on lint problems and 3 on a parse error:
    // both fail here.
    assert!(out.status.success(), "promtool: {report}\n---\n{text}");
    s.metrics.stop();
    s.worker.stop_and_wait();
}

/// A `prometheus` process killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_real_prometheus_scrapes_the_connection_count() {
    let s = serve();
    let clients: Vec<LineClient> = (0..5)
        .map(|_| LineClient::connect(s.worker.local_addr()))
        .collect();
    wait_until("five connections", || s.worker.connections().len() == 5);

    let dir = TempDir::new("prometheus");
    let config = dir.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: lubdub\n    static_configs:\n      - targets: ['{}']\n",
            s.metrics.local_addr()
        ),
    );
    output_of(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&config),
    )
    .unwrap_or_else(|e| panic!("promtool (Debian package prometheus) is needed: {e}"));
    let port = free_port();
    let web = format!("127.0.0.1:{port}");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("prometheus (Debian package prometheus) is needed: {e}"));
    let _prom = Prometheus(child);

    // Ask its HTTP API until the scraped value is there (scrapes every
    // second; bounded by a generous deadline for a loaded machine).
    let query = "GET /api/v1/query?query=sum(lubdub_connections%7Bworker%3D%22echo%22%7D) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "prometheus never reported 5 connections; last answer: {last}"
        );
        if let Ok(mut c) = TcpStream::connect(&web) {
            c.set_read_timeout(Some(WAIT)).unwrap();
            if c.write_all(query.as_bytes()).is_ok() {
                let mut got = String::new();
                let _ = c.read_to_string(&mut got);
                if got.contains("\"status\":\"success\"") && got.contains("\"5\"]") {
                    break;
                }
                last = got;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // and the target is up, scraped without errors
    let targets = "GET /api/v1/targets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut c = TcpStream::connect(&web).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(targets.as_bytes()).unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert!(got.contains("\"health\":\"up\""), "{got}");
    assert!(got.contains("\"lastError\":\"\""), "{got}");

    drop(clients);
    s.metrics.stop();
    s.worker.stop_and_wait();
}
