//! WebSocket for workers and clients: the `lubdub-ws` protocol crate, plus
//! Workerman's `onWebSocketConnect` as [`WebSocketHooks::on_websocket_connect`].
//!
//! ```no_run
//! use lubdub::ws::{Message, Reject, WebSocketHooks, Ws};
//! use lubdub::Worker;
//!
//! let ws = Ws::default().serve_http(|req| {
//!     (req.path() == "/").then(|| Reject::new(200).body("a WebSocket server"))
//! });
//! let mut worker = Worker::with_protocol("ws://127.0.0.1:8080", ws)?;
//! worker.on_websocket_connect(|_conn, req| match req.query() {
//!     Some(q) if q.starts_with("token=") => Ok(()),
//!     _ => Err(Reject::new(401).body("token required")),
//! });
//! worker.on_message(|conn, msg| {
//!     if let Message::Text(_) | Message::Binary(_) = msg {
//!         let _ = conn.send(&msg);
//!     }
//! });
//! worker.run()?;
//! # Ok::<(), lubdub::Error>(())
//! ```
//!
//! See docs/websocket.md.

pub use lubdub_ws::*;

use crate::{Connection, Worker};

/// The WebSocket upgrade hook of a [`Worker`] speaking [`Ws`]. (A
/// [`Client`](crate::Client) checks the server's answer itself; use its
/// `on_handshake` to look at the [`Response`].)
pub trait WebSocketHooks {
    /// Workerman's `onWebSocketConnect`: runs for each upgrade request,
    /// before `on_connect`, with the request (path, query, headers) and the
    /// connection (its remote address; set its context here). `Err(Reject)`
    /// refuses the peer with that HTTP answer and closes it; `on_connect`
    /// and `on_close` never run for it. Plain HTTP requests never reach it
    /// (see [`Ws::serve_http`]).
    fn on_websocket_connect(
        &mut self,
        f: impl Fn(&Connection<Ws>, &Request) -> Result<(), Reject> + Send + Sync + 'static,
    ) -> &mut Self;
}

impl WebSocketHooks for Worker<Ws> {
    fn on_websocket_connect(
        &mut self,
        f: impl Fn(&Connection<Ws>, &Request) -> Result<(), Reject> + Send + Sync + 'static,
    ) -> &mut Self {
        self.on_handshake(move |conn, handshake| match handshake {
            Handshake::Request(req) if req.is_upgrade() => f(conn, req),
            // Not an upgrade: accepting it answers 426.
            _ => Ok(()),
        })
    }
}
