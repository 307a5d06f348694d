//! A lubdub WebSocket echo server for the interop peers (in-process), and
//! what it saw of each connection.

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use lubdub::ws::{Message, Reject, WebSocketHooks, Ws, WsConfig};
use lubdub::{CloseReason, ConnStats, Connection, Worker, WorkerHandle};

use super::recv;

/// What the lubdub server saw, per connection: the case is the request path.
#[derive(Debug)]
pub enum Seen {
    Connect {
        case: String,
        deflate: bool,
    },
    Message {
        case: String,
        msg: Message,
    },
    Close {
        case: String,
        reason: CloseReason,
        stats: ConnStats,
    },
    Error {
        case: String,
        error: String,
    },
}

/// The case a connection belongs to (its request path without `/`), and
/// whether its upgrade negotiated permessage-deflate.
struct Case {
    name: String,
    deflate: bool,
}

fn case_of(conn: &Connection<Ws>) -> String {
    conn.context::<Case>()
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// A lubdub WebSocket echo server on a free loopback port: echoes text and
/// binary; the text `please ping` makes it ping (payload `lubdub-ping`) and
/// then send `pinged`,
/// `please close` makes it close with 4002 "done". Stopped on drop.
pub struct EchoServer {
    handle: WorkerHandle<Ws>,
    seen: Receiver<Seen>,
    /// Events received while collecting another case's session.
    pending: Mutex<Vec<Seen>>,
}

impl EchoServer {
    /// Starts the server with `config`.
    pub fn start(config: WsConfig) -> Self {
        Self::with_page(config, None)
    }

    /// Starts the server with `config`; `GET /` (not an upgrade) answers
    /// with `page` as HTML if given.
    pub fn with_page(config: WsConfig, page: Option<&'static str>) -> Self {
        let mut ws = Ws::server(config);
        if let Some(page) = page {
            ws = ws.serve_http(move |req| {
                (req.path() == "/").then(|| {
                    Reject::new(200)
                        .header("Content-Type", "text/html; charset=utf-8")
                        .body(page)
                })
            });
        }
        let mut w = Worker::with_protocol("ws://127.0.0.1:0", ws).unwrap();
        let (tx, seen) = mpsc::channel();
        let tx = Arc::new(Mutex::new(tx));
        let send = move |ev: Seen| {
            let _ = tx.lock().unwrap().send(ev);
        };
        w.name("ws-interop-echo");
        // Workerman's onWebSocketConnect: the path names the case; whether
        // deflate was negotiated is known here.
        w.on_websocket_connect(|conn, req| {
            conn.set_context(Case {
                name: req.path().trim_start_matches('/').to_owned(),
                deflate: req.deflate(),
            });
            Ok(())
        });
        {
            let send = send.clone();
            w.on_connect(move |c| {
                send(Seen::Connect {
                    case: case_of(c),
                    deflate: c.context::<Case>().is_some_and(|c| c.deflate),
                })
            });
        }
        {
            let send = send.clone();
            w.on_message(move |c, msg| {
                match &msg {
                    Message::Text(t) if t == "please ping" => {
                        let _ = c.send(&Message::Ping(b"lubdub-ping".to_vec()));
                        let _ = c.send(&Message::Text("pinged".into()));
                    }
                    Message::Text(t) if t == "please close" => c.close_session(4002, "done"),
                    Message::Text(_) | Message::Binary(_) => {
                        let _ = c.send(&msg);
                    }
                    Message::Ping(_) | Message::Pong(_) => {}
                }
                send(Seen::Message {
                    case: case_of(c),
                    msg,
                });
            });
        }
        {
            let send = send.clone();
            w.on_close(move |c, reason| {
                send(Seen::Close {
                    case: case_of(c),
                    reason: reason.clone(),
                    stats: c.stats(),
                })
            });
        }
        w.on_error(move |c, e| {
            send(Seen::Error {
                case: case_of(c),
                error: e.to_string(),
            })
        });
        EchoServer {
            handle: w.start().unwrap(),
            seen,
            pending: Mutex::default(),
        }
    }

    /// The listening address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.handle.local_addr()
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.handle.local_addr())
    }

    /// Everything the server saw for `case`, up to and including its close.
    /// Events of other cases that arrive meanwhile (connections overlap:
    /// a close can be reported after the next connection opened) are kept
    /// for their own `session` call.
    pub fn session(&self, case: &str) -> Session {
        let mut s = Session::default();
        let mut pending = self.pending.lock().unwrap();
        let mut earlier = std::mem::take(&mut *pending).into_iter();
        loop {
            let ev = match earlier.next() {
                Some(ev) => ev,
                None => recv(&self.seen, &format!("server events of case {case}")),
            };
            if ev.case() != case {
                pending.push(ev);
                continue;
            }
            match ev {
                Seen::Connect { deflate, .. } => s.deflate = Some(deflate),
                Seen::Message { msg, .. } => s.messages.push(msg),
                Seen::Error { error, .. } => s.errors.push(error),
                Seen::Close { reason, stats, .. } => {
                    s.close = Some(reason);
                    s.stats = stats;
                    pending.extend(earlier);
                    return s;
                }
            }
        }
    }
}

impl Seen {
    fn case(&self) -> &str {
        match self {
            Seen::Connect { case, .. }
            | Seen::Message { case, .. }
            | Seen::Close { case, .. }
            | Seen::Error { case, .. } => case,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.handle.stop_and_wait();
    }
}

/// One connection as the lubdub server saw it.
#[derive(Debug, Default)]
pub struct Session {
    /// Set by on_connect: whether permessage-deflate was negotiated.
    pub deflate: Option<bool>,
    /// Everything on_message received, pongs included.
    pub messages: Vec<Message>,
    /// What on_error reported.
    pub errors: Vec<String>,
    /// on_close's reason.
    pub close: Option<CloseReason>,
    /// The connection's counters at on_close.
    pub stats: ConnStats,
}

impl Session {
    /// The data messages (text, binary) received.
    pub fn data(&self) -> Vec<&Message> {
        self.messages.iter().filter(|m| !m.is_control()).collect()
    }

    /// on_connect ran and on_error never did.
    pub fn assert_clean(&self, case: &str) {
        assert!(self.deflate.is_some(), "{case}: on_connect ran");
        assert!(self.errors.is_empty(), "{case}: errors {:?}", self.errors);
    }
}

/// `kind(N bytes)`, for messages too large to print.
pub fn short(m: &Message) -> String {
    let kind = match m {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
    };
    format!("{kind}({} bytes)", m.as_bytes().len())
}

/// Checks that `got` is exactly `want`, message by message.
pub fn assert_messages(case: &str, got: &[&Message], want: &[Message]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{case}: the server received {:?}, expected {:?}",
        got.iter().map(|m| short(m)).collect::<Vec<_>>(),
        want.iter().map(short).collect::<Vec<_>>()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            *g == w,
            "{case}: message {i} differs: got {}, expected {}",
            short(g),
            short(w)
        );
    }
}
