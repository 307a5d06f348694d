//! The load generator's TLS mode: the connections of `load/tcp.rs`, opened
//! with a TLS handshake (tokio-rustls' client on the workspace's rustls,
//! ring provider) and then driven by the same per-connection code
//! (`pipelined_over`, `pingpong_over`); plus the TLS handshake churn, the
//! idle TLS connections and the wss pipelined echo, on the shared churn
//! and idle skeletons.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::load::connect::{churn_source, connect, connect_from, many_source, open_in_order, Conn};
use crate::load::idle::{measure_idle, Idle, IdleConns};
use crate::load::measure::{self, Churner, Throughput};
use crate::load::tcp::{
    pingpong_over, pipelined_over, read_reply, round_trip, PingPong, Unit, REPLY_BUF,
};
use crate::load::ws::{self, WsUnit};
use crate::load::ws_codec::upgrade;
use crate::pki::{Pki, SERVER_NAME};
use crate::report::Window;

/// A TLS connection of the load generator.
pub type TlsConn = tokio_rustls::client::TlsStream<TcpStream>;

/// The load generator's TLS client: one rustls configuration shared by
/// every connection, and the server name to check.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsClient {
    /// A client of `config` checking the server name `name`.
    pub fn new(config: Arc<ClientConfig>, name: &str) -> Result<TlsClient> {
        Ok(TlsClient {
            connector: TlsConnector::from(config),
            name: ServerName::try_from(name.to_string())?,
        })
    }

    /// The load generator's client of the scenario's certificates: trusts
    /// only its CA, checks `localhost`, never resumes.
    pub fn trusting(pki: &Pki) -> Result<TlsClient> {
        TlsClient::new(pki.client_config()?, SERVER_NAME)
    }

    /// The handshake churn's client: accepts exactly the scenario's leaf
    /// without verifying signatures (see [`Pki::churn_client_config`]).
    pub fn pinning_leaf(pki: &Pki) -> Result<TlsClient> {
        TlsClient::new(pki.churn_client_config()?, SERVER_NAME)
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
/// in flight, in order; from [`many_source`]`(i)` when
/// `many_sources` (thousands of connections), else from 127.0.0.1.
pub async fn connect_many(
    client: &TlsClient,
    addr: SocketAddr,
    n: usize,
    parallel: usize,
    many_sources: bool,
) -> Result<Vec<TlsConn>> {
    open_in_order(n, parallel, |i| {
        let client = client.clone();
        async move {
            let tcp = if many_sources {
                connect_from(addr, many_source(i)).await
            } else {
                connect(addr).await
            };
            let tls = match tcp {
                Ok(tcp) => client.handshake(tcp).await,
                Err(e) => Err(e),
            };
            tls.with_context(|| format!("connection {i}"))
        }
    })
    .await
}

/// Pipelined echo over TLS: `load::tcp::pipelined` with TLS connections.
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
    let t = pipelined_over(streams, server_pids, depth, unit, 64 * 1024, w).await?;
    Ok((t, session))
}

/// Depth-1 ping-pong over TLS: `load::tcp::pingpong` with TLS connections.
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
    let r = pingpong_over(streams, server_pids, unit, w).await?;
    Ok((r, session))
}

/// Closes a TLS connection as a well-behaved client does: close_notify,
/// then FIN (`shutdown`), then the socket.
async fn close<S: Conn>(mut s: S) {
    let _ = s.shutdown().await;
}

/// A churner of [`handshakes`]: connect (from [`churn_source`], as the
/// TCP churn does), a full TLS handshake, one echo round trip, close.
struct TlsChurner {
    client: TlsClient,
    addr: SocketAddr,
    unit: Unit,
    id: usize,
    out: Vec<u8>,
    reply: Vec<u8>,
    /// Where the first churner puts what its first handshake negotiated.
    first: Arc<Mutex<Option<String>>>,
}

impl Churner for TlsChurner {
    async fn cycle(&mut self, seq: u64) -> Result<()> {
        let (id, unit) = (self.id, self.unit);
        let tcp = connect_from(self.addr, churn_source(id, seq)).await?;
        let mut s = self
            .client
            .handshake(tcp)
            .await
            .with_context(|| format!("churner {id}, connection {seq}"))?;
        if id == 0 && seq == 0 {
            *self.first.lock().unwrap() = Some(session(&s));
        }
        unit.fill(id as u32, seq, &mut self.out);
        s.write_all(&self.out).await?;
        s.flush().await?;
        read_reply(&mut s, &mut self.reply, unit.size)
            .await
            .with_context(|| format!("churner {id}: reading reply {seq}"))?;
        if self.reply[..unit.size] != self.out[..] {
            bail!("churner {id}: reply {seq} differs from the request");
        }
        close(s).await;
        Ok(())
    }
}

/// Handshake churn: `churners` tasks each loop over [`TlsChurner`]'s
/// cycle. Returns completed cycles per second and what was negotiated.
pub async fn handshakes(
    client: &TlsClient,
    addr: SocketAddr,
    server_pid: u32,
    churners: usize,
    unit: Unit,
    w: Window,
) -> Result<(Throughput, String)> {
    let first = Arc::new(Mutex::new(None));
    let churners = (0..churners)
        .map(|id| TlsChurner {
            client: client.clone(),
            addr,
            unit,
            id,
            out: vec![0u8; unit.size],
            reply: vec![0u8; REPLY_BUF.max(2 * unit.size)],
            first: first.clone(),
        })
        .collect();
    let t = measure::churn(churners, w, &[server_pid]).await?;
    let session = first.lock().unwrap().take().unwrap_or_default();
    Ok((t, session))
}

/// Idle TLS connections ([`idle`]).
struct TlsIdle<'a> {
    client: &'a TlsClient,
    addr: SocketAddr,
    unit: Unit,
}

impl IdleConns for TlsIdle<'_> {
    type Conn = TlsConn;

    async fn warm_up(&self) -> Result<()> {
        let mut s = connect_many(self.client, self.addr, 1, 1, false)
            .await?
            .remove(0);
        round_trip(&mut s, self.unit, 0, 0).await?;
        close(s).await;
        Ok(())
    }

    async fn open(&self, n: usize) -> Result<Vec<TlsConn>> {
        connect_many(self.client, self.addr, n, 250, true).await
    }

    async fn round_trip(&self, conn: &mut TlsConn, id: u32) -> Result<()> {
        round_trip(conn, self.unit, id, 1).await
    }
}

/// Idle TLS connections: `load::tcp::idle` with a TLS handshake on every
/// connection, the RSS read once the server reports all of them open
/// (both servers count a connection once its handshake is done).
pub async fn idle(
    client: &TlsClient,
    addr: SocketAddr,
    server_pid: u32,
    reported: &AtomicUsize,
    n: usize,
    unit: Unit,
) -> Result<Idle> {
    let conns = TlsIdle { client, addr, unit };
    measure_idle(&conns, server_pid, reported, n, Duration::from_secs(60)).await
}

/// Pipelined WebSocket echo over TLS: `conns` connections, each upgraded
/// (`ws_codec::upgrade`, no extension offered) and then keeping `depth`
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
            let up = upgrade(&mut s, SERVER_NAME, ws::PATH, false)
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
    let t = pipelined_over(streams, &[server_pid], depth, unit, 64 * 1024, w).await?;
    Ok((t, session))
}
