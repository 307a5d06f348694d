//! The TLS servers, each in its own child process:
//! `lubdub-bench serve-tls <lubdub|tokio> <text|ws> --cert PEM --key PEM [--cpu C] [--report-conns]`.
//!
//! The child prints `nofile ...` and `port <port>` as `serve` does (see
//! `servers.rs`), with `--report-conns` a `conns <n>` line every 50 ms
//! (connections whose handshake is done, on both sides), and serves until
//! it is killed.
//!
//! * lubdub, text: `echo-1`'s `Worker::<Text>` plus `worker.tls(TlsConfig::from_pem_files(..))`.
//! * lubdub, ws: `examples/ws_echo.rs`'s worker on `wss://` (lubdub-ws,
//!   permessage-deflate off, `Backpressure::PauseRecv`), same TLS config.
//! * tokio, text: current_thread runtime, `TlsAcceptor` (tokio-rustls,
//!   same rustls and settings, see `server_config`), then `echo-1`'s
//!   `Framed<_, LinesCodec>` echo over the TLS stream, and a
//!   `shutdown()` at its end (close_notify, as lubdub sends).
//! * tokio, ws: the same acceptor, then `tokio_tungstenite::accept_async`
//!   and the same feed-then-flush echo of text and binary messages.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use lubdub::ws::{Message, WsConfig};
use lubdub::{Backpressure, Text, TlsConfig, Worker, Ws};
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, LinesCodec};

use crate::servers::{echo, run_lubdub, Impl, MAX_MESSAGE};
use crate::sys;
use crate::ws_peers::echo_tungstenite;

/// What a TLS server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text lines.
    Text,
    /// WebSocket (wss).
    Ws,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Ws => "ws",
        }
    }

    pub fn parse(s: &str) -> Result<Kind> {
        match s {
            "text" => Ok(Kind::Text),
            "ws" => Ok(Kind::Ws),
            _ => bail!("unknown TLS server kind {s:?} (text, ws)"),
        }
    }
}

/// The command line of a `serve-tls` child.
#[derive(Debug, Clone)]
pub struct TlsServeOpts {
    pub imp: Impl,
    pub kind: Kind,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cpu: Option<usize>,
    pub report_conns: bool,
}

impl TlsServeOpts {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "serve-tls".to_string(),
            self.imp.name().into(),
            self.kind.name().into(),
            "--cert".into(),
            self.cert.to_string_lossy().into_owned(),
            "--key".into(),
            self.key.to_string_lossy().into_owned(),
        ];
        if let Some(cpu) = self.cpu {
            a.extend(["--cpu".into(), cpu.to_string()]);
        }
        if self.report_conns {
            a.push("--report-conns".into());
        }
        a
    }

    pub fn from_args(args: &[String]) -> Result<TlsServeOpts> {
        let [imp, kind, rest @ ..] = args else {
            bail!(
                "usage: serve-tls <lubdub|tokio> <text|ws> --cert PEM --key PEM [--cpu C] [--report-conns]"
            );
        };
        let (mut cert, mut key) = (None, None);
        let mut o = TlsServeOpts {
            imp: Impl::parse(imp)?,
            kind: Kind::parse(kind)?,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            cpu: None,
            report_conns: false,
        };
        let mut it = rest.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--cert" => cert = it.next().map(PathBuf::from),
                "--key" => key = it.next().map(PathBuf::from),
                "--cpu" => o.cpu = Some(crate::next_num(&mut it, a)?),
                "--report-conns" => o.report_conns = true,
                _ => bail!("serve-tls: unknown argument {a:?}"),
            }
        }
        let (Some(cert), Some(key)) = (cert, key) else {
            bail!("serve-tls: --cert PEM and --key PEM are required");
        };
        o.cert = cert;
        o.key = key;
        Ok(o)
    }
}

/// Entry point of a `serve-tls` child.
pub fn serve_main(args: &[String]) -> Result<()> {
    let o = TlsServeOpts::from_args(args)?;
    sys::die_with_parent();
    let lim = sys::raise_fd_limit()?;
    println!("nofile {} {} {}", lim.soft_before, lim.soft, lim.hard);
    if let Some(cpu) = o.cpu {
        // Before any thread is created: they all inherit the mask.
        sys::pin_current_thread(cpu)?;
    }
    match o.imp {
        Impl::Lubdub => {
            let tls = TlsConfig::from_pem_files(&o.cert, &o.key)?;
            match o.kind {
                Kind::Text => run_lubdub(&lubdub_text(tls)?.start()?, o.report_conns),
                Kind::Ws => run_lubdub(&lubdub_ws(tls)?.start()?, o.report_conns),
            }
        }
        Impl::Tokio => {
            let config = super::server_config(&o.cert, &o.key)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                println!("port {}", listener.local_addr()?.port());
                let live = o.report_conns.then(|| Arc::new(AtomicUsize::new(0)));
                if let Some(live) = live.clone() {
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            println!("conns {}", live.load(Ordering::Relaxed));
                        }
                    });
                }
                tokio_tls_server(listener, o.kind, config, live).await
            })
        }
    }
}

/// lubdub's TLS text echo: `echo-1`'s worker with TLS.
pub fn lubdub_text(tls: TlsConfig) -> Result<Worker<Text>> {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0")?;
    w.count(1).name("bench-tls");
    w.tls(tls);
    w.on_message(|conn, line: String| {
        let _ = conn.send(&line);
    });
    Ok(w)
}

/// lubdub's wss echo: `examples/ws_echo.rs`'s worker (text and binary
/// messages back, pings answered by the protocol) on TLS.
pub fn lubdub_ws(tls: TlsConfig) -> Result<Worker<Ws>> {
    let mut w = Worker::with_protocol("wss://127.0.0.1:0", Ws::server(WsConfig::default()))?;
    w.count(1)
        .name("bench-wss")
        .backpressure(Backpressure::PauseRecv);
    w.tls(tls);
    w.on_message(|conn, msg| {
        if let Message::Text(_) | Message::Binary(_) = msg {
            let _ = conn.send(&msg);
        }
    });
    Ok(w)
}

/// The tokio peer's accept loop: one task per connection, the TLS
/// handshake in the task, then the echo of `kind`. `live` counts
/// connections whose handshake is done.
pub async fn tokio_tls_server(
    listener: TcpListener,
    kind: Kind,
    config: Arc<ServerConfig>,
    live: Option<Arc<AtomicUsize>>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let mut warned = false;
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                if !warned {
                    eprintln!("tokio TLS server: accept failed: {e}; retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let (acceptor, live) = (acceptor.clone(), live.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(sock).await else {
                return;
            };
            if let Some(l) = &live {
                l.fetch_add(1, Ordering::Relaxed);
            }
            match kind {
                Kind::Text => {
                    let mut framed = Framed::new(tls, LinesCodec::new_with_max_length(MAX_MESSAGE));
                    echo(&mut framed, |line: String| line).await;
                    let _ = framed.get_mut().shutdown().await;
                }
                Kind::Ws => {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tls).await {
                        echo_tungstenite(ws).await;
                    }
                }
            }
            if let Some(l) = &live {
                l.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_tls_arguments_round_trip() {
        let o = TlsServeOpts {
            imp: Impl::Tokio,
            kind: Kind::Ws,
            cert: "/tmp/c.pem".into(),
            key: "/tmp/k.pem".into(),
            cpu: Some(0),
            report_conns: true,
        };
        let args = o.to_args();
        assert_eq!(args[0], "serve-tls");
        let back = TlsServeOpts::from_args(&args[1..]).unwrap();
        assert_eq!(back.to_args(), args);
        assert!(
            TlsServeOpts::from_args(&args[1..3]).is_err(),
            "cert and key required"
        );
    }
}
