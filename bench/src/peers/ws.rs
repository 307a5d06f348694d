//! The WebSocket servers of the `ws-*` scenarios and `attack-ws`, each in
//! its own child process: `lubdub-bench ws-serve
//! <lubdub|tungstenite|fastwebsockets> [--deflate] [--attack] [--cpu C]
//! [--report-conns]`.
//!
//! Like `serve` (see `peers/tcp.rs`), the child prints `nofile ...` and
//! `port <port>`, and with `--report-conns` a `conns <n>` line every 50 ms.
//! Every server echoes each text or binary message back as it came, on
//! any path, with a 10 MiB message and frame limit, and sets TCP_NODELAY.
//!
//! * **lubdub**: `examples/ws_echo.rs`'s server: `Worker::with_protocol(
//!   "ws://...", Ws::server(config))`, `count(1)`, `PauseRecv`
//!   backpressure, `on_message` → `conn.send(&msg)`; `--deflate` turns on
//!   `WsConfig::deflate(DeflateConfig::default())` (level 6, context
//!   takeover, 15-bit windows), as `LUBDUB_WS_DEFLATE=1` does there;
//!   `--attack` is the `attack-ws` scenario's server
//!   ([`lubdub_ws_attack_worker`]).
//! * **tungstenite**: `tokio_tungstenite::accept_async_with_config` on a
//!   current_thread runtime, one task per connection, feeding replies and
//!   flushing once nothing more is ready (`peers/serve.rs`).
//!   tungstenite 0.30 has no permessage-deflate: `--deflate` is refused.
//! * **fastwebsockets**: its `echo_server` example: hyper's HTTP/1 server
//!   `with_upgrades()`, `fastwebsockets::upgrade::upgrade`, a
//!   `FragmentCollector`, the connection task spawned `unconstrained`, on a
//!   current_thread runtime. One change, for a fair comparison: the stream
//!   is wrapped in [`FlushOnIdle`], so the replies to one batch of
//!   pipelined messages go out in one write (fastwebsockets writes every
//!   frame straight to the socket, one syscall each; lubdub and the
//!   tungstenite peer write a batch at once).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use anyhow::{bail, Result};
use futures_util::{FutureExt, SinkExt, StreamExt};
use lubdub::ws::{DeflateConfig, Message, Ws, WsConfig};
use lubdub::{Backpressure, Limits, Worker};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as TMessage;
use tokio_tungstenite::WebSocketStream;

use crate::child::Server;
use crate::peers::serve::{
    accept_each, run_attack_server, run_lubdub, run_tokio_peer, start_server_child, MAX_MESSAGE,
};

/// A WebSocket server implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WsImpl {
    /// lubdub's WebSocket server.
    Lubdub,
    /// tokio-tungstenite.
    Tungstenite,
    /// fastwebsockets behind hyper.
    #[value(name = "fastwebsockets")]
    FastWebSockets,
}

impl WsImpl {
    /// The name on command lines.
    pub fn name(self) -> &'static str {
        match self {
            WsImpl::Lubdub => "lubdub",
            WsImpl::Tungstenite => "tungstenite",
            WsImpl::FastWebSockets => "fastwebsockets",
        }
    }

    /// How the table names the peer.
    pub fn label(self) -> &'static str {
        match self {
            WsImpl::Lubdub => "lubdub",
            WsImpl::Tungstenite => "tokio-tungstenite",
            WsImpl::FastWebSockets => "fastwebsockets",
        }
    }
}

/// The command line of a `ws-serve` child.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
pub struct WsServeOpts {
    /// The server.
    #[arg(value_enum)]
    pub imp: WsImpl,
    /// permessage-deflate on (lubdub only).
    #[arg(long, conflicts_with = "attack")]
    pub deflate: bool,
    /// The `attack-ws` scenario's server: lubdub configured by
    /// `lubdub_ws_attack_worker`; the peers unchanged.
    #[arg(long)]
    pub attack: bool,
    /// CPU to pin the whole server process to.
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
    /// Print `conns <n>` every 50 ms.
    #[arg(long)]
    pub report_conns: bool,
    /// tungstenite only: `WebSocketConfig::read_buffer_size` instead of
    /// its default (128 KiB), for a tuned peer (not used by the scenarios).
    #[arg(long, value_name = "BYTES")]
    pub read_buffer: Option<usize>,
}

impl WsServeOpts {
    /// The command line that makes a child run this server.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["ws-serve".to_string(), self.imp.name().into()];
        if self.deflate {
            a.push("--deflate".into());
        }
        if self.attack {
            a.push("--attack".into());
        }
        if let Some(cpu) = self.cpu {
            a.push("--cpu".into());
            a.push(cpu.to_string());
        }
        if self.report_conns {
            a.push("--report-conns".into());
        }
        if let Some(n) = self.read_buffer {
            a.push("--read-buffer".into());
            a.push(n.to_string());
        }
        a
    }

    /// Fails for options the chosen server does not have.
    pub fn check(&self) -> Result<()> {
        if self.deflate && self.imp != WsImpl::Lubdub {
            bail!(
                "ws-serve: --deflate is for lubdub only ({} has no permessage-deflate)",
                self.imp.label()
            );
        }
        if self.read_buffer.is_some() && self.imp != WsImpl::Tungstenite {
            bail!("ws-serve: --read-buffer is for tungstenite only");
        }
        Ok(())
    }

    /// Starts this server in a child process.
    pub fn start(&self) -> Result<Server> {
        self.check()?;
        Server::start(&self.to_args())
    }
}

/// Entry point of a `ws-serve` child.
pub fn serve(o: &WsServeOpts) -> Result<()> {
    o.check()?;
    start_server_child(o.cpu)?;
    match o.imp {
        WsImpl::Lubdub if o.attack => serve_attack(),
        WsImpl::Lubdub => serve_lubdub(o.deflate, o.report_conns),
        peer => serve_tokio(peer, o.report_conns, o.read_buffer),
    }
}

/// The lubdub server of the `attack-ws` scenario, configured in this one
/// place: `examples/ws_echo.rs`'s server run with `LUBDUB_WS_DEFLATE=1`
/// (permessage-deflate on: two of the attacks need it), every setting
/// spelled out. Switch a new setting (an origin check, a smaller message
/// limit...) on here, one line, and every `attack-ws` run uses it.
pub fn lubdub_ws_attack_worker() -> Result<Worker<Ws>> {
    let config = WsConfig::default()
        .max_message_size(lubdub::ws::DEFAULT_MAX_MESSAGE_SIZE) // default: 10 MiB
        .max_frame_size(lubdub::ws::DEFAULT_MAX_FRAME_SIZE) // default: 10 MiB
        .max_header_size(lubdub::ws::DEFAULT_MAX_HEADER_SIZE) // default: 16 KiB
        .max_headers(lubdub::ws::DEFAULT_MAX_HEADERS) // default: 64
        .deflate(DeflateConfig::default()); // LUBDUB_WS_DEFLATE=1: level 6, context takeover
    let mut w = Worker::with_protocol("ws://127.0.0.1:0", Ws::server(config))?;
    w.count(1) // examples/ws_echo.rs: `--count`, default 1
        .name("attack-ws")
        .limits(
            Limits::default()
                .max_package_size(lubdub::DEFAULT_MAX_PACKAGE_SIZE) // default: 10 MiB
                .send_buffer_size(lubdub::DEFAULT_SEND_BUFFER_SIZE) // default: 1 MiB per connection
                .backpressure(Backpressure::PauseRecv) // as examples/ws_echo.rs (the default)
                .memory_budget(lubdub::default_memory_budget()) // default: RAM / 64, 64..512 MiB
                .max_connections(Some(lubdub::default_max_connections())) // default: fd limit - 64
                .max_connections_per_ip(Some(lubdub::DEFAULT_MAX_CONNECTIONS_PER_IP)) // default: 1,024
                .handshake_timeout(Duration::from_secs(10)) // default
                .first_message_timeout(Some(Duration::from_secs(60))) // default
                .message_timeout(Some(Duration::from_secs(30))) // default
                .close_timeout(Duration::from_secs(5)) // default
                .stop_timeout(Duration::from_secs(5)), // default
        );
    Ok(w)
}

/// `ws-serve lubdub --attack`: [`lubdub_ws_attack_worker`] echoing text
/// and binary messages, as `examples/ws_echo.rs` does; `on_error` counted
/// (`run_attack_server`).
fn serve_attack() -> Result<()> {
    let mut w = lubdub_ws_attack_worker()?;
    w.on_message(|conn, msg| {
        if let Message::Text(_) | Message::Binary(_) = msg {
            let _ = conn.send(&msg);
        }
    });
    run_attack_server(w)
}

/// lubdub's WebSocket echo, configured as `examples/ws_echo.rs`.
pub fn lubdub_ws_config(deflate: bool) -> WsConfig {
    let config = WsConfig::default()
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE);
    if deflate {
        config.deflate(DeflateConfig::default())
    } else {
        config
    }
}

fn serve_lubdub(deflate: bool, report_conns: bool) -> Result<()> {
    let mut w = Worker::with_protocol("ws://127.0.0.1:0", Ws::server(lubdub_ws_config(deflate)))?;
    w.count(1)
        .name("bench-ws")
        .limits(Limits::default().backpressure(Backpressure::PauseRecv));
    w.on_message(|conn, msg| {
        if let Message::Text(_) | Message::Binary(_) = msg {
            let _ = conn.send(&msg);
        }
    });
    run_lubdub(&w.start()?, report_conns)
}

/// The tungstenite peer's configuration: defaults, limits as lubdub's,
/// and the read buffer asked for, if any.
pub fn tungstenite_config(read_buffer: Option<usize>) -> WebSocketConfig {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    match read_buffer {
        Some(n) => config.read_buffer_size(n),
        None => config,
    }
}

fn serve_tokio(imp: WsImpl, report_conns: bool, read_buffer: Option<usize>) -> Result<()> {
    run_tokio_peer(1, report_conns, |listener, live| async move {
        let live = live.unwrap_or_default();
        let who = format!("{} server", imp.name());
        accept_each(listener, &who, |sock| {
            let live = live.clone();
            match imp {
                WsImpl::Tungstenite => {
                    tokio::spawn(async move {
                        live.fetch_add(1, Ordering::Relaxed);
                        if let Ok(ws) = tokio_tungstenite::accept_async_with_config(
                            sock,
                            Some(tungstenite_config(read_buffer)),
                        )
                        .await
                        {
                            echo_tungstenite(ws).await;
                        }
                        live.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                WsImpl::FastWebSockets => {
                    tokio::spawn(fastwebsockets_conn(sock, live));
                }
                WsImpl::Lubdub => unreachable!("lubdub is served by serve_lubdub"),
            }
        })
        .await
    })
}

/// The tungstenite echo: each text or binary message fed back, every
/// message that is already readable fed too, one flush when nothing more
/// is ready (`peers/serve.rs`'s `echo_framed` pattern). Pings are answered
/// and the close handshake is done by tungstenite itself (on the next
/// flush). Over TCP, or TLS (`peers/tls.rs`, the `wss-echo` peer).
pub async fn echo_tungstenite<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
        ws: &mut WebSocketStream<S>,
        msg: TMessage,
    ) -> bool {
        match msg {
            TMessage::Text(_) | TMessage::Binary(_) => ws.feed(msg).await.is_ok(),
            _ => true,
        }
    }
    while let Some(Ok(msg)) = ws.next().await {
        if !reply(&mut ws, msg).await {
            return;
        }
        loop {
            match ws.next().now_or_never() {
                Some(Some(Ok(msg))) => {
                    if !reply(&mut ws, msg).await {
                        return;
                    }
                }
                Some(_) => {
                    let _ = ws.flush().await;
                    return;
                }
                None => break,
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// One fastwebsockets connection, as its `echo_server` example serves it
/// (hyper HTTP/1 with upgrades), plus [`FlushOnIdle`].
pub async fn fastwebsockets_conn(sock: TcpStream, live: Arc<AtomicUsize>) {
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};

    // Counted from the upgrade to the end of the WebSocket task (hyper's
    // connection future ends at the upgrade).
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let live = live.clone();
        async move {
            let (response, fut) = fastwebsockets::upgrade::upgrade(&mut req)?;
            tokio::task::spawn(tokio::task::unconstrained(async move {
                if let Ok(ws) = fut.await {
                    live.fetch_add(1, Ordering::Relaxed);
                    let _ = echo_fastwebsockets(ws).await;
                    live.fetch_sub(1, Ordering::Relaxed);
                }
            }));
            Ok::<Response<Empty<Bytes>>, fastwebsockets::WebSocketError>(response)
        }
    });
    let io = hyper_util::rt::TokioIo::new(sock);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}

async fn echo_fastwebsockets<S>(
    ws: fastwebsockets::WebSocket<S>,
) -> Result<(), fastwebsockets::WebSocketError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};

    let mut ws = WebSocket::after_handshake(FlushOnIdle::new(ws.into_inner()), Role::Server);
    ws.set_max_message_size(MAX_MESSAGE);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    // The close reply is in the buffer.
    let mut io = ws.into_inner();
    io.flush().await?;
    Ok(())
}

/// Writes go into a buffer that is written out when a read finds nothing
/// more to read (or on flush, or once 64 KiB are pending): the replies to
/// a batch of pipelined requests leave in one write, as lubdub's and the
/// tungstenite peer's do. Cancel-safe, unlike racing fastwebsockets'
/// `read_frame` against a flush (it consumes a header before its payload
/// is in).
pub struct FlushOnIdle<S> {
    inner: S,
    out: Vec<u8>,
    written: usize,
}

/// Pending bytes above which a write first drains the buffer.
const FLUSH_ABOVE: usize = 64 * 1024;

impl<S: AsyncWrite + Unpin> FlushOnIdle<S> {
    /// Buffers the writes to `inner`.
    pub fn new(inner: S) -> Self {
        FlushOnIdle {
            inner,
            out: Vec::new(),
            written: 0,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for FlushOnIdle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                // Nothing more to read now: send what this batch produced.
                // The read's waker is registered; a pending drain
                // registers the same task for writability.
                if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FlushOnIdle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() - this.written >= FLUSH_ABOVE {
            ready!(this.poll_drain(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() - this.written >= FLUSH_ABOVE {
            ready!(this.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            this.out.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use tokio::io::AsyncReadExt;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Writes wait in the buffer until a read finds nothing to read, then
    /// leave in one write; flush sends them too.
    #[test]
    fn flush_on_idle_writes_when_a_read_would_wait() {
        rt().block_on(async {
            let (a, mut b) = tokio::io::duplex(1 << 20);
            let mut a = FlushOnIdle::new(a);
            a.write_all(b"one ").await.unwrap();
            a.write_all(b"two").await.unwrap();
            // Nothing has reached the other end yet.
            let mut got = [0u8; 16];
            assert!(b.read(&mut got).now_or_never().is_none());
            // A read with nothing to read drains the buffer.
            assert!(a.read(&mut got).now_or_never().is_none());
            let n = b.read(&mut got).await.unwrap();
            assert_eq!(&got[..n], b"one two");
            // A read that finds bytes does not drain.
            b.write_all(b"x").await.unwrap();
            a.write_all(b"three").await.unwrap();
            assert_eq!(a.read(&mut got).await.unwrap(), 1);
            assert!(b.read(&mut got).now_or_never().is_none());
            a.flush().await.unwrap();
            let n = b.read(&mut got).await.unwrap();
            assert_eq!(&got[..n], b"three");
        });
    }

    #[test]
    fn deflate_is_refused_for_peers_without_it() {
        let parse = |v: &[&str]| WsServeOpts::try_parse_from(v).unwrap();
        assert!(parse(&["ws-serve", "tungstenite", "--deflate"])
            .check()
            .is_err());
        assert!(parse(&["ws-serve", "lubdub", "--read-buffer", "9"])
            .check()
            .is_err());
        let o = parse(&["ws-serve", "lubdub", "--deflate", "--cpu", "0"]);
        assert!(o.check().is_ok());
        assert_eq!(
            o.to_args(),
            ["ws-serve", "lubdub", "--deflate", "--cpu", "0"]
        );
        let attack = parse(&["ws-serve", "lubdub", "--attack", "--cpu", "0"]);
        assert!(attack.attack && attack.check().is_ok());
        assert_eq!(
            WsServeOpts::try_parse_from(attack.to_args()).unwrap(),
            attack
        );
        assert!(
            WsServeOpts::try_parse_from(["ws-serve", "lubdub", "--attack", "--deflate"]).is_err(),
            "the attack server's deflate is lubdub_ws_attack_worker's"
        );
        let fast = parse(&["ws-serve", "fastwebsockets"]);
        assert_eq!(fast.imp, WsImpl::FastWebSockets);
        assert_eq!(WsServeOpts::try_parse_from(fast.to_args()).unwrap(), fast);
    }
}
