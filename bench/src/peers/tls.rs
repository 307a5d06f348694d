//! The TLS servers, each in its own child process:
//! `lubdub-bench serve-tls <lubdub|tokio> <text|ws> --cert PEM --key PEM [--cpu C] [--report-conns]`.
//!
//! The child prints `nofile ...` and `port <port>` as `serve` does (see
//! `peers/tcp.rs`), with `--report-conns` a `conns <n>` line every 50 ms
//! (connections whose handshake is done, on both sides), and serves until
//! it is killed.
//!
//! * lubdub, text: `echo-1`'s `Worker::<Text>` plus `worker.tls(TlsConfig::from_pem_files(..))`.
//! * lubdub, ws: `examples/ws_echo.rs`'s worker on `wss://` (lubdub-ws,
//!   permessage-deflate off, `Backpressure::PauseRecv`), same TLS config.
//! * tokio, text: current_thread runtime, `TlsAcceptor` (tokio-rustls,
//!   same rustls and settings, see `pki::server_config`), then `echo-1`'s
//!   `Framed<_, LinesCodec>` echo over the TLS stream, and a
//!   `shutdown()` at its end (close_notify, as lubdub sends).
//! * tokio, ws: the same acceptor, then `tokio_tungstenite::accept_async`
//!   and the same feed-then-flush echo of text and binary messages.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Result;
use lubdub::ws::{Message, WsConfig};
use lubdub::{Backpressure, Limits, Text, TlsConfig, Worker, Ws};
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, LinesCodec};

use crate::child::Server;
use crate::peers::serve::{
    accept_each, echo_framed, run_lubdub, run_tokio_peer, start_server_child, MAX_MESSAGE,
};
use crate::peers::ws::echo_tungstenite;
use crate::pki::{server_config, Pki};
use crate::report::Impl;

/// What a TLS server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Text lines.
    Text,
    /// WebSocket (wss).
    Ws,
}

impl Kind {
    /// The name on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Ws => "ws",
        }
    }
}

/// The command line of a `serve-tls` child.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
pub struct TlsServeOpts {
    /// lubdub's server, or the tokio peer.
    #[arg(value_enum)]
    pub imp: Impl,
    /// What it speaks.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The certificate chain to present, PEM.
    #[arg(long, value_name = "PEM")]
    pub cert: PathBuf,
    /// Its private key, PEM.
    #[arg(long, value_name = "PEM")]
    pub key: PathBuf,
    /// CPU to pin the whole server process to.
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
    /// Print `conns <n>` (handshakes done) every 50 ms.
    #[arg(long)]
    pub report_conns: bool,
}

impl TlsServeOpts {
    /// A server of `imp` speaking `kind`, presenting `pki`'s certificate.
    pub fn new(pki: &Pki, imp: Impl, kind: Kind, cpu: Option<usize>, report_conns: bool) -> Self {
        TlsServeOpts {
            imp,
            kind,
            cert: pki.cert.clone(),
            key: pki.key.clone(),
            cpu,
            report_conns,
        }
    }

    /// The command line that makes a child run this server.
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

    /// Starts this server in a child process.
    pub fn start(&self) -> Result<Server> {
        Server::start(&self.to_args())
    }
}

/// Entry point of a `serve-tls` child.
pub fn serve(o: &TlsServeOpts) -> Result<()> {
    start_server_child(o.cpu)?;
    match o.imp {
        Impl::Lubdub => {
            let tls = TlsConfig::from_pem_files(&o.cert, &o.key)?;
            match o.kind {
                Kind::Text => run_lubdub(&lubdub_text(tls)?.start()?, o.report_conns),
                Kind::Ws => run_lubdub(&lubdub_ws(tls)?.start()?, o.report_conns),
            }
        }
        Impl::Tokio => {
            let config = server_config(&o.cert, &o.key)?;
            run_tokio_peer(1, o.report_conns, |listener, live| {
                tokio_tls_server(listener, o.kind, config, live)
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
        .limits(Limits::default().backpressure(Backpressure::PauseRecv));
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
    accept_each(listener, "tokio TLS server", |sock| {
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
                    echo_framed(&mut framed, |line: String| line).await;
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
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

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
        assert_eq!(TlsServeOpts::try_parse_from(&args).unwrap(), o);
        assert!(
            TlsServeOpts::try_parse_from(&args[..3]).is_err(),
            "cert and key required"
        );
    }
}
