//! How the load generator opens its connections: one, from a chosen
//! loopback source address, or many at a time in order.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context as _, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// A connection the load generator drives: a `TcpStream`, or a TLS
/// stream over one (`load/tls.rs`).
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

/// Connects to `addr` from 127.0.0.1, TCP_NODELAY set.
pub async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Source address of churn connection `seq` of churner `id`: one of 65,536
/// loopback addresses (127.1.0.0/16), in turn.
///
/// From one source address the churners' `TIME_WAIT` sockets (the client
/// closes first) soon hold most of the 28,000 ephemeral ports, and then
/// every connect searches for a port it may reuse: the load generator's
/// cost per connection doubles and the rate drops from about 24k to 14k
/// connections per second, in one run or the next depending on what the
/// runs before it left behind. Spread over many addresses, a connect finds
/// a free port at once, every run starts from the same state, and the
/// server, not the port search, is what the rate measures.
pub fn churn_source(id: usize, seq: u64) -> IpAddr {
    let k = (seq as usize).wrapping_mul(7919).wrapping_add(id) as u16;
    Ipv4Addr::new(127, 1, (k >> 8) as u8, k as u8).into()
}

/// Source address of connection `i` of a many-connection run: one of the
/// 65,536 loopback addresses of 127.2.0.0/16, in turn ([`churn_source`]
/// explains why: the TIME_WAIT states a run leaves behind).
pub fn many_source(i: usize) -> IpAddr {
    let k = i as u16;
    Ipv4Addr::new(127, 2, (k >> 8) as u8, k as u8).into()
}

/// Connects from `source` (port chosen at connect time, with
/// `IP_BIND_ADDRESS_NO_PORT`, so the whole 4-tuple decides what is free).
pub async fn connect_from(addr: SocketAddr, source: IpAddr) -> Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let sock = tokio::net::TcpSocket::new_v4()?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a valid pointer.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("IP_BIND_ADDRESS_NO_PORT");
    }
    sock.bind(SocketAddr::new(source, 0))
        .with_context(|| format!("bind {source}"))?;
    let s = sock
        .connect(addr)
        .await
        .with_context(|| format!("connect {addr} from {source}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Opens `n` connections with `open(i)` (connect, and a handshake if the
/// protocol has one), at most `parallel` in flight; returns them in order.
pub async fn open_in_order<T, F, Fut>(n: usize, parallel: usize, open: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let base = out.len();
        let batch = parallel.min(n - base);
        let mut set = JoinSet::new();
        for i in 0..batch {
            let opening = open(base + i);
            set.spawn(async move { (i, opening.await) });
        }
        let mut got: Vec<(usize, T)> = Vec::with_capacity(batch);
        while let Some(r) = set.join_next().await {
            let (i, s) = r?;
            got.push((i, s?));
        }
        got.sort_by_key(|(i, _)| *i);
        out.extend(got.into_iter().map(|(_, s)| s));
    }
    Ok(out)
}

/// Opens `n` TCP connections, at most `parallel` connects in flight, in
/// order: from 127.0.0.1, or if `many_sources` connection `i` from
/// [`many_source`]`(i)` (thousands of connections: then ephemeral ports and
/// the TIME_WAIT states of earlier runs never decide whether a run can
/// connect).
pub async fn connect_many(
    addr: SocketAddr,
    n: usize,
    parallel: usize,
    many_sources: bool,
) -> Result<Vec<TcpStream>> {
    open_in_order(n, parallel, |i| async move {
        if many_sources {
            connect_from(addr, many_source(i)).await
        } else {
            connect(addr).await
        }
    })
    .await
}
