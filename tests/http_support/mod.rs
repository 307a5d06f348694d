//! The HTTP worker the HTTP integration tests talk to, in process on a
//! free loopback port, and the programs they drive it with.
#![allow(dead_code)]

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};

use lubdub::http::http::{Response, StatusCode};
use lubdub::http::{Event, Http, HttpConfig, Reply, Request};
use lubdub::{ConnStats, Connection, Limits, Worker, WorkerHandle};

/// What the worker saw of one connection when it closed.
pub type Closed = (u64, ConnStats);

/// A running worker and what it reports.
pub struct Server {
    pub handle: WorkerHandle<Http>,
    pub addr: SocketAddr,
    /// Each connection's id and counters, when it closes.
    pub closed: mpsc::Receiver<Closed>,
    /// The `Last-Event-ID` of each `/events` request (`None`: none sent).
    pub event_ids: mpsc::Receiver<Option<String>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Answers one request:
/// * `/id`: the connection's id (keep-alive reuse shows as one id);
/// * `/echo`: the body back, with `x-chunked` saying whether it came
///   chunked and `x-method`;
/// * `/stream`: a streamed body of three chunks;
/// * `/events`: an event stream; from `Last-Event-ID` n (0 if none) it
///   sends events n+1..=n+3 and, on a first visit, closes so the client
///   reconnects;
/// * anything else: `404`.
fn answer(conn: &Connection<Http>, req: &Request) {
    let reply = |status: u16, body: Vec<u8>| {
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        req.respond(resp)
    };
    match req.uri().path() {
        "/id" => {
            let _ = conn.send(&reply(200, conn.id().to_string().into_bytes()));
        }
        "/echo" => {
            let chunked = req.headers().contains_key("transfer-encoding");
            let mut resp = Response::new(req.body().clone());
            resp.headers_mut()
                .insert("x-chunked", chunked.to_string().parse().unwrap());
            resp.headers_mut()
                .insert("x-method", req.method().as_str().parse().unwrap());
            let _ = conn.send(&req.respond(resp));
        }
        "/stream" => {
            let _ = conn.send(&req.stream(Response::new(())));
            for part in ["one,", "two,", "three"] {
                let _ = conn.send(&Reply::chunk(part));
            }
            let _ = conn.send(&Reply::End);
        }
        "/events" => {
            let last: u32 = req
                .last_event_id()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let _ = conn.send(&req.event_stream());
            let _ = conn.send(&Reply::comment("hello"));
            for n in last + 1..=last + 3 {
                let event = Event::data(format!("event {n}"))
                    .id(n.to_string())
                    .retry(50);
                let _ = conn.send(&Reply::Event(event));
            }
            if last == 0 {
                conn.close();
            }
        }
        _ => {
            let _ = conn.send(&reply(404, b"not found\n".to_vec()));
        }
    }
}

/// Starts the test worker with `config` and `limits`.
pub fn serve(config: HttpConfig, limits: Limits) -> Server {
    let mut w = Worker::with_protocol("http://127.0.0.1:0", Http::new(config)).unwrap();
    w.limits(limits);
    let (closed_tx, closed) = mpsc::channel();
    let closed_tx = Arc::new(Mutex::new(closed_tx));
    w.on_close(move |conn, _| {
        let _ = closed_tx.lock().unwrap().send((conn.id(), conn.stats()));
    });
    let (ids_tx, event_ids) = mpsc::channel();
    let ids_tx = Arc::new(Mutex::new(ids_tx));
    w.on_message(move |conn, req| {
        if req.uri().path() == "/events" {
            let _ = ids_tx
                .lock()
                .unwrap()
                .send(req.last_event_id().map(str::to_owned));
        }
        answer(conn, &req);
    });
    let handle = w.start().unwrap();
    let addr = handle.local_addr();
    Server {
        handle,
        addr,
        closed,
        event_ids,
    }
}

/// The test worker with default settings.
pub fn serve_default() -> Server {
    serve(HttpConfig::default(), Limits::default())
}

/// `name` on the PATH, or the test fails saying how to get it.
pub fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed (not on PATH): run .ci/run, which installs it")
        })
}

/// Runs `cmd` to its end (the programs are given time limits of their
/// own: curl's `--max-time`, Python's socket timeouts); its stdout and
/// stderr, or the test fails with them.
pub fn run(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Reads until the server closes (bounded by the socket's read timeout).
pub fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!(
                "no end of stream after {} bytes: {e}\n{}",
                out.len(),
                String::from_utf8_lossy(&out)
            ),
        }
    }
}
