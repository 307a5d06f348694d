//! The idle-memory measurement, one skeleton for every kind of connection
//! (TCP, TLS, WebSocket): a warm-up connection (so lazily allocated
//! per-process state is in the baseline), then the server's settled RSS,
//! then `n` connections that send nothing, then the settled RSS again once
//! the server reports all of them. A few connections echo afterwards to
//! show the server still works. The server is killed before the client
//! sockets close, so the TIME_WAIT states land on its side.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::report::bytes;
use crate::sys;

/// Idle-memory result.
#[derive(Debug, Clone)]
pub struct Idle {
    /// The server's RSS before the idle connections.
    pub rss_before: u64,
    /// The server's RSS with all of them open.
    pub rss_after: u64,
    /// How many there were.
    pub conns: usize,
}

impl Idle {
    /// Server memory per idle connection.
    pub fn bytes_per_conn(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / self.conns as f64
    }

    /// The run's metric (bytes per connection) and its progress line;
    /// `kind` names the connections ("idle", "idle TLS", ...).
    pub fn outcome(&self, kind: &str) -> (Vec<f64>, String) {
        (
            vec![self.bytes_per_conn()],
            format!(
                "server RSS {} -> {} with {} {kind} conns: {:.0} B/conn",
                bytes(self.rss_before as f64),
                bytes(self.rss_after as f64),
                self.conns,
                self.bytes_per_conn()
            ),
        )
    }
}

/// The connections an idle-memory run opens: what differs between TCP,
/// TLS and WebSocket.
pub trait IdleConns {
    /// One open connection.
    type Conn;
    /// Opens one connection, makes one round trip on it and closes it as a
    /// well-behaved client does.
    fn warm_up(&self) -> impl Future<Output = Result<()>>;
    /// Opens `n` connections (handshakes done) that then send nothing.
    fn open(&self, n: usize) -> impl Future<Output = Result<Vec<Self::Conn>>>;
    /// Message 1 of connection `id` and its echo, on an open connection.
    fn round_trip(&self, conn: &mut Self::Conn, id: u32) -> impl Future<Output = Result<()>>;
}

/// Measures the server memory of `n` idle connections of `conns`' kind
/// (see the module documentation). `reported` is the server's latest
/// `conns` report; it must reach `n` within `report_limit`.
pub async fn measure_idle<C: IdleConns>(
    conns: &C,
    server_pid: u32,
    reported: &AtomicUsize,
    n: usize,
    report_limit: Duration,
) -> Result<Idle> {
    conns.warm_up().await?;
    wait_until(Duration::from_secs(5), || {
        reported.load(Ordering::SeqCst) == 0
    })
    .await
    .context("the server did not report the warm-up connection closed")?;
    let rss_before = settled_rss(server_pid).await?;
    let mut streams = conns.open(n).await?;
    wait_until(report_limit, || reported.load(Ordering::SeqCst) >= n)
        .await
        .with_context(|| {
            format!(
                "the server reported {} of {n} connections",
                reported.load(Ordering::SeqCst)
            )
        })?;
    let rss_after = settled_rss(server_pid).await?;
    let step = (n / 8).max(1);
    for i in (0..n).step_by(step).chain([n - 1]) {
        conns.round_trip(&mut streams[i], i as u32).await?;
    }
    sys::kill(server_pid);
    drop(streams);
    Ok(Idle {
        rss_before,
        rss_after,
        conns: n,
    })
}

/// Waits until `cond` holds, checking every 20 ms, at most `limit`.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The server's RSS once two reads 150 ms apart agree (at most 3 s).
pub async fn settled_rss(pid: u32) -> Result<u64> {
    let mut last = sys::rss_bytes(pid)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = sys::rss_bytes(pid)?;
        if now == last || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}
