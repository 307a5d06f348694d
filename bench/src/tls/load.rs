//! The load generator's TLS mode: the connections of `loadgen.rs`, opened
//! with a TLS handshake (tokio-rustls' client on the workspace's rustls,
//! ring provider) and then driven by the same per-connection code
//! (`pipelined_over`, `pingpong_over`); plus the TLS handshake churn, the
//! idle TLS connections and the wss pipelined echo, which need their own
//! loops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::loadgen::{self, Conn, Idle, PingPong, Shared, Throughput, Unit, Window};
use crate::sys;
use crate::ws_load::{self, WsUnit};

/// A TLS connection of the load generator.
pub type TlsConn = tokio_rustls::client::TlsStream<TcpStream>;

/// The load generator's TLS client: one rustls configuration shared by
/// every connection, and the server name to check.
#[derive(Clone)]
pub struct TlsClient {
    #[cfg_attr(not(test), allow(dead_code))]
    config: Arc<ClientConfig>,
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsClient {
    pub fn new(config: Arc<ClientConfig>, name: &str) -> Result<TlsClient> {
        Ok(TlsClient {
            connector: TlsConnector::from(config.clone()),
            config,
            name: ServerName::try_from(name.to_string())?,
        })
    }

    /// A rustls client connection of this configuration (for tests that
    /// drive a handshake in memory).
    #[cfg(test)]
    pub fn connection(&self) -> Result<rustls::ClientConnection> {
        Ok(rustls::ClientConnection::new(
            self.config.clone(),
            self.name.clone(),
        )?)
    }

    /// The TLS handshake over `tcp`; fails unless it was a full handshake
    /// (the client never offers a session to resume, so a server cannot
    /// skip the key exchange and the certificate).
    pub async fn handshake(&self, tcp: TcpStream) -> Result<TlsConn> {
        let s = self
            .connector
            .connect(self.name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let kind = s.get_ref().1.handshake_kind();
        if kind != Some(HandshakeKind::Full) {
            bail!("the handshake was {kind:?}, not a full one");
        }
        Ok(s)
    }
}

/// What was negotiated: `TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519`.
pub fn session(s: &TlsConn) -> String {
    let c = s.get_ref().1;
    let part = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    format!(
        "{} {} {}",
        part(c.protocol_version().map(|v| format!("{v:?}"))),
        part(
            c.negotiated_cipher_suite()
                .map(|v| format!("{:?}", v.suite()))
        ),
        part(
            c.negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
        ),
    )
}

/// Opens `n` TLS connections, at most `parallel` connects and handshakes
/// in flight, in order; from [`loadgen::many_source`]`(i)` when
/// `many_sources` (thousands of connections), else from 127.0.0.1.
pub async fn connect_many(
    client: &TlsClient,
    addr: SocketAddr,
    n: usize,
    parallel: usize,
    many_sources: bool,
) -> Result<Vec<TlsConn>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let base = out.len();
        let batch = parallel.min(n - base);
        let mut set = JoinSet::new();
        for i in 0..batch {
            let client = client.clone();
            set.spawn(async move {
                let tcp = if many_sources {
                    loadgen::connect_from(addr, loadgen::many_source(base + i)).await
                } else {
                    loadgen::connect(addr).await
                };
                let tls = match tcp {
                    Ok(tcp) => client.handshake(tcp).await,
                    Err(e) => Err(e),
                };
                (i, tls)
            });
        }
        let mut got = Vec::with_capacity(batch);
        while let Some(r) = set.join_next().await {
            let (i, s) = r?;
            got.push((i, s.with_context(|| format!("connection {}", base + i))?));
        }
        got.sort_by_key(|(i, _)| *i);
        out.extend(got.into_iter().map(|(_, s)| s));
    }
    Ok(out)
}

/// Pipelined echo over TLS: `loadgen::pipelined` with TLS connections.
/// Returns the throughput and what was negotiated.
pub async fn pipelined(
    client: &TlsClient,
    addr: SocketAddr,
    server_pids: &[u32],
    conns: usize,
    depth: usize,
    unit: Unit,
    w: Window,
) -> Result<(Throughput, String)> {
    let streams = connect_many(client, addr, conns, 256, false).await?;
    let session = session(&streams[0]);
    let t = loadgen::pipelined_over(streams, server_pids, depth, unit, 64 * 1024, w).await?;
    Ok((t, session))
}

/// Depth-1 ping-pong over TLS: `loadgen::pingpong` with TLS connections.
pub async fn pingpong(
    client: &TlsClient,
    addr: SocketAddr,
    server_pids: &[u32],
    conns: usize,
    unit: Unit,
    w: Window,
) -> Result<(PingPong, String)> {
    let streams = connect_many(client, addr, conns, 256, false).await?;
    let session = session(&streams[0]);
    let r = loadgen::pingpong_over(streams, server_pids, unit, w).await?;
    Ok((r, session))
}

/// Closes a TLS connection as a well-behaved client does: close_notify,
/// then FIN (`shutdown`), then the socket.
async fn close<S: Conn>(mut s: S) {
    let _ = s.shutdown().await;
}

/// Handshake churn: `churners` tasks each loop over connect (from
/// [`loadgen::churn_source`], as `churn` does), a full TLS handshake, one
/// echo round trip, close. Returns completed cycles per second.
pub async fn handshakes(
    client: &TlsClient,
    addr: SocketAddr,
    server_pid: u32,
    churners: usize,
    unit: Unit,
    w: Window,
) -> Result<(Throughput, String)> {
    let sh = Arc::new(Shared::default());
    let mut set = JoinSet::new();
    let first = Arc::new(std::sync::Mutex::new(None));
    for id in 0..churners {
        let (sh, client, first) = (sh.clone(), client.clone(), first.clone());
        set.spawn(async move {
            let mut out = vec![0u8; unit.size];
            let mut reply = vec![0u8; 4096.max(2 * unit.size)];
            let mut seq = 0u64;
            while !sh.stop.load(Ordering::Relaxed) {
                let tcp = loadgen::connect_from(addr, loadgen::churn_source(id, seq)).await?;
                let mut s = client
                    .handshake(tcp)
                    .await
                    .with_context(|| format!("churner {id}, connection {seq}"))?;
                if id == 0 && seq == 0 {
                    *first.lock().unwrap() = Some(session(&s));
                }
                unit.fill(id as u32, seq, &mut out);
                s.write_all(&out).await?;
                s.flush().await?;
                loadgen::read_reply(&mut s, &mut reply, unit.size)
                    .await
                    .with_context(|| format!("churner {id}: reading reply {seq}"))?;
                if reply[..unit.size] != out[..] {
                    bail!("churner {id}: reply {seq} differs from the request");
                }
                close(s).await;
                seq += 1;
                sh.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    let t = loadgen::measure(&sh, w, &[server_pid]).await;
    sh.stop.store(true, Ordering::SeqCst);
    let t = t?;
    loadgen::join_all(&mut set, Duration::from_secs(10)).await?;
    let session = first.lock().unwrap().take().unwrap_or_default();
    Ok((t, session))
}

/// Idle TLS connections: `loadgen::idle` with a TLS handshake on every
/// connection, the RSS read once the server reports all of them open
/// (both servers count a connection once its handshake is done).
pub async fn idle(
    client: &TlsClient,
    addr: SocketAddr,
    server_pid: u32,
    reported: Arc<AtomicUsize>,
    n: usize,
    unit: Unit,
) -> Result<Idle> {
    {
        let mut s = connect_many(client, addr, 1, 1, false).await?.remove(0);
        loadgen::round_trip(&mut s, unit, 0, 0).await?;
        close(s).await;
    }
    loadgen::wait_until(Duration::from_secs(5), || {
        reported.load(Ordering::SeqCst) == 0
    })
    .await
    .context("the server did not report the warm-up connection closed")?;
    let rss_before = loadgen::settled_rss(server_pid).await?;
    let mut streams = connect_many(client, addr, n, 250, true).await?;
    loadgen::wait_until(Duration::from_secs(60), || {
        reported.load(Ordering::SeqCst) >= n
    })
    .await
    .with_context(|| {
        format!(
            "the server reported {} of {n} connections",
            reported.load(Ordering::SeqCst)
        )
    })?;
    let rss_after = loadgen::settled_rss(server_pid).await?;
    let step = (n / 8).max(1);
    for i in (0..n).step_by(step).chain([n - 1]) {
        loadgen::round_trip(&mut streams[i], unit, i as u32, 1).await?;
    }
    sys::kill(server_pid);
    drop(streams);
    Ok(Idle {
        rss_before,
        rss_after,
        conns: n,
    })
}

/// Pipelined WebSocket echo over TLS: `conns` connections, each upgraded
/// (`ws_load::upgrade`, no extension offered) and then keeping `depth`
/// masked text frames in flight, as the plain `ws` scenarios do.
pub async fn ws_pipelined(
    client: &TlsClient,
    addr: SocketAddr,
    server_pid: u32,
    conns: usize,
    depth: usize,
    unit: WsUnit,
    w: Window,
) -> Result<(Throughput, String)> {
    let mut streams = connect_many(client, addr, conns, 256, false).await?;
    let session = session(&streams[0]);
    let mut set = JoinSet::new();
    for (i, mut s) in streams.drain(..).enumerate() {
        set.spawn(async move {
            let up = ws_load::upgrade(&mut s, "localhost", false)
                .await
                .with_context(|| format!("connection {i}: WebSocket upgrade"))?;
            if !up.leftover.is_empty() {
                bail!("connection {i}: server sent frames unasked");
            }
            Ok::<_, anyhow::Error>((i, s))
        });
    }
    let mut upgraded = Vec::with_capacity(conns);
    while let Some(r) = set.join_next().await {
        upgraded.push(r??);
    }
    upgraded.sort_by_key(|(i, _)| *i);
    let streams = upgraded.into_iter().map(|(_, s)| s).collect();
    let t = loadgen::pipelined_over(streams, &[server_pid], depth, unit, 64 * 1024, w).await?;
    Ok((t, session))
}
