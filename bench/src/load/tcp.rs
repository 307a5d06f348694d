//! The load generator over TCP (and, given TLS streams, over TLS), used
//! unchanged against both servers.
//!
//! It runs in the runner process on a dedicated thread (pinned to its own
//! CPU when the scenario asks for it) with a tokio current_thread runtime
//! (`load/measure.rs`), and keeps its per-message work small: messages are
//! fixed-size units written from a per-connection template, replies are
//! checked by byte position (every unit's framing bytes, and the whole
//! content of every [`SAMPLE`]th unit), never parsed into owned values.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::load::connect::{churn_source, connect, connect_from, connect_many, Conn};
use crate::load::idle::{measure_idle, Idle, IdleConns};
use crate::load::measure::{self, measure_and_drain, Churner, Shared, Throughput};
use crate::payload::{fill_pattern, HEAD_LEN, SAMPLE};
use crate::report::Window;

/// Read buffer of the depth-1 scenarios (larger than any reply).
pub const REPLY_BUF: usize = 4096;

/// What a message looks like on the wire; every message of a scenario has
/// the same size, so reply offsets say which message and which byte.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// A Workerman Frame (length header), else a Text line.
    pub frame: bool,
    /// Bytes on the wire per message, header or `\n` included.
    pub size: usize,
}

/// A fixed-size request and its fixed-size reply, as the pipelined
/// scenarios need them: [`Unit`] (a reply is the request), and the
/// WebSocket units (a masked client frame, an unmasked echo).
pub trait PipelineUnit: Copy + Send + 'static {
    /// Bytes on the wire per request.
    fn request_size(&self) -> usize;
    /// Bytes on the wire per reply.
    fn reply_size(&self) -> usize;
    /// Writes request `seq` of connection `conn` (`request_size` bytes).
    fn fill_request(&self, conn: u32, seq: u64, out: &mut [u8]);
    /// Checks `chunk`, the reply bytes at stream offset `start`.
    fn check(&self, conn: u32, start: u64, chunk: &[u8], scratch: &mut [u8]) -> Result<()>;
}

impl PipelineUnit for Unit {
    fn request_size(&self) -> usize {
        self.size
    }
    fn reply_size(&self) -> usize {
        self.size
    }
    fn fill_request(&self, conn: u32, seq: u64, out: &mut [u8]) {
        self.fill(conn, seq, out)
    }
    fn check(&self, conn: u32, start: u64, chunk: &[u8], scratch: &mut [u8]) -> Result<()> {
        Unit::check(self, conn, start, chunk, scratch)
    }
}

impl Unit {
    /// A Text line of `size` bytes, `\n` included.
    pub fn text(size: usize) -> Unit {
        assert!(size > HEAD_LEN, "messages must hold the {HEAD_LEN}-byte id");
        Unit { frame: false, size }
    }

    /// A Workerman Frame carrying `payload` bytes (`payload + 4` on the wire).
    pub fn frame(payload: usize) -> Unit {
        assert!(
            payload >= HEAD_LEN,
            "messages must hold the {HEAD_LEN}-byte id"
        );
        Unit {
            frame: true,
            size: payload + 4,
        }
    }

    fn body_range(&self) -> std::ops::Range<usize> {
        if self.frame {
            4..self.size
        } else {
            0..self.size - 1
        }
    }

    /// Writes message `seq` of connection `conn` into `out` (`size` bytes):
    /// `c<conn hex>s<seq hex>` padded with a letter pattern, all ASCII, so
    /// it is valid UTF-8 for the Text servers.
    pub fn fill(&self, conn: u32, seq: u64, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.size);
        if self.frame {
            out[..4].copy_from_slice(&(self.size as u32).to_be_bytes());
        } else {
            out[self.size - 1] = b'\n';
        }
        fill_pattern(conn, seq, &mut out[self.body_range()]);
    }

    /// The fixed framing byte at `pos` of every unit, if `pos` is one.
    fn framing_byte(&self, pos: usize) -> Option<u8> {
        if self.frame {
            (pos < 4).then(|| (self.size as u32).to_be_bytes()[pos])
        } else {
            (pos == self.size - 1).then_some(b'\n')
        }
    }

    fn framing_positions(&self) -> std::ops::Range<usize> {
        if self.frame {
            0..4
        } else {
            self.size - 1..self.size
        }
    }

    /// Checks `chunk`, the reply bytes at stream offset `start` of
    /// connection `conn`: each unit's framing bytes, and the content of
    /// every [`SAMPLE`]th unit that lies whole in the chunk.
    pub fn check(&self, conn: u32, start: u64, chunk: &[u8], scratch: &mut [u8]) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let size = self.size as u64;
        let end = start + chunk.len() as u64;
        for u in start / size..=(end - 1) / size {
            let ustart = u * size;
            for p in self.framing_positions() {
                let g = ustart + p as u64;
                if g >= start && g < end {
                    let got = chunk[(g - start) as usize];
                    if Some(got) != self.framing_byte(p) {
                        bail!(
                            "connection {conn}: reply byte {g} (message {u}, offset {p}) is {got:#04x}, \
                             framing broken"
                        );
                    }
                }
            }
            if u % SAMPLE == 0 && ustart >= start && ustart + size <= end {
                self.fill(conn, u, scratch);
                let off = (ustart - start) as usize;
                if chunk[off..off + self.size] != scratch[..] {
                    bail!(
                        "connection {conn}: reply message {u} differs from what was sent: {:?}",
                        String::from_utf8_lossy(&chunk[off..off + self.size])
                    );
                }
            }
        }
        Ok(())
    }
}

/// Pipelined echo (or any fixed-size request and answer: `unit`):
/// `conns` connections, each keeping `depth` messages in flight. Returns
/// messages/second.
pub async fn pipelined<U: PipelineUnit>(
    addr: SocketAddr,
    server_pid: u32,
    conns: usize,
    depth: usize,
    unit: U,
    w: Window,
) -> Result<Throughput> {
    // Up to 1,000 connections come from 127.0.0.1; more from many source
    // addresses (see `many_source`).
    let streams = connect_many(addr, conns, 256, conns > 1000).await?;
    // 64 KiB read buffers for a hundred connections; with thousands, a
    // buffer a little over one batch of replies, so the load generator's
    // own memory does not grow with the connection count (10,000 x 64 KiB
    // would be 640 MiB of buffers, mostly untouched).
    let rbuf = if conns <= 1000 { 64 * 1024 } else { REPLY_BUF };
    pipelined_over(streams, &[server_pid], depth, unit, rbuf, w).await
}

/// [`pipelined`] over connections already open (TCP or TLS, plain lines,
/// frames or WebSocket messages), with read buffers of `rbuf` bytes, the
/// server being processes `server_pids`.
pub async fn pipelined_over<S: Conn, U: PipelineUnit>(
    streams: Vec<S>,
    server_pids: &[u32],
    depth: usize,
    unit: U,
    rbuf: usize,
    w: Window,
) -> Result<Throughput> {
    let sh = Arc::new(Shared::default());
    let mut set = JoinSet::new();
    for (id, s) in streams.into_iter().enumerate() {
        set.spawn(pipeline_conn(s, unit, depth, rbuf, id as u32, sh.clone()));
    }
    let (t, _) = measure_and_drain(&sh, &mut set, w, server_pids).await?;
    Ok(t)
}

async fn pipeline_conn<S: Conn, U: PipelineUnit>(
    mut s: S,
    unit: U,
    depth: usize,
    rbuf_len: usize,
    id: u32,
    sh: Arc<Shared>,
) -> Result<()> {
    let (req, rep) = (unit.request_size(), unit.reply_size());
    let mut wbuf = vec![0u8; depth * req];
    let mut rbuf = vec![0u8; rbuf_len.max(2 * depth * rep)];
    let mut scratch = vec![0u8; rep];
    let (mut sent, mut recv) = (0u64, 0u64);
    for (i, u) in wbuf.chunks_exact_mut(req).enumerate() {
        unit.fill_request(id, i as u64, u);
    }
    s.write_all(&wbuf).await?;
    // A no-op for TCP; TLS streams may hold records until flushed.
    s.flush().await?;
    sent += depth as u64;
    loop {
        if sh.stop.load(Ordering::Relaxed) && recv == sent * rep as u64 {
            return Ok(());
        }
        let n = s.read(&mut rbuf).await?;
        if n == 0 {
            bail!("connection {id}: server closed the connection");
        }
        unit.check(id, recv, &rbuf[..n], &mut scratch)?;
        let before = recv / rep as u64;
        recv += n as u64;
        if recv > sent * rep as u64 {
            bail!("connection {id}: server sent more bytes than it was sent");
        }
        let done = recv / rep as u64 - before;
        if done == 0 {
            continue;
        }
        sh.completed.fetch_add(done, Ordering::Relaxed);
        if !sh.stop.load(Ordering::Relaxed) {
            let out = &mut wbuf[..done as usize * req];
            for (i, u) in out.chunks_exact_mut(req).enumerate() {
                unit.fill_request(id, sent + i as u64, u);
            }
            s.write_all(out).await?;
            s.flush().await?;
            sent += done;
        }
    }
}

/// Latency result of the ping-pong scenario.
#[derive(Debug, Clone)]
pub struct PingPong {
    /// Round trips per second and CPU use.
    pub throughput: Throughput,
    /// Median round trip in the window, µs.
    pub p50_us: f64,
    /// 99th percentile round trip in the window, µs.
    pub p99_us: f64,
    /// Round trips timed.
    pub samples: u64,
}

/// Depth-1 ping-pong: each of `conns` connections sends one message and
/// waits for its reply before the next. Round trips are recorded (ns) in an
/// HDR histogram during the measured window only.
pub async fn pingpong(
    addr: SocketAddr,
    server_pid: u32,
    conns: usize,
    unit: Unit,
    w: Window,
) -> Result<PingPong> {
    let streams = connect_many(addr, conns, 256, false).await?;
    pingpong_over(streams, &[server_pid], unit, w).await
}

/// [`pingpong`] over connections already open (TCP or TLS), the server
/// being processes `server_pids`.
pub async fn pingpong_over<S: Conn>(
    streams: Vec<S>,
    server_pids: &[u32],
    unit: Unit,
    w: Window,
) -> Result<PingPong> {
    let sh = Arc::new(Shared::default());
    let mut set = JoinSet::new();
    for (id, s) in streams.into_iter().enumerate() {
        set.spawn(pingpong_conn(s, unit, id as u32, sh.clone()));
    }
    let (t, hists) = measure_and_drain(&sh, &mut set, w, server_pids).await?;
    let mut all = new_histogram();
    for h in hists {
        all.add(h)?;
    }
    if all.is_empty() {
        bail!("no round trip completed within the window");
    }
    Ok(PingPong {
        throughput: t,
        p50_us: all.value_at_quantile(0.50) as f64 / 1e3,
        p99_us: all.value_at_quantile(0.99) as f64 / 1e3,
        samples: all.len(),
    })
}

/// A histogram of nanoseconds, 1 ns to 60 s.
pub fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

async fn pingpong_conn<S: Conn>(
    mut s: S,
    unit: Unit,
    id: u32,
    sh: Arc<Shared>,
) -> Result<Histogram<u64>> {
    let mut hist = new_histogram();
    let mut out = vec![0u8; unit.size];
    let mut reply = vec![0u8; REPLY_BUF.max(2 * unit.size)];
    let mut seq = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        unit.fill(id, seq, &mut out);
        let t = Instant::now();
        s.write_all(&out).await?;
        s.flush().await?;
        read_reply(&mut s, &mut reply, unit.size)
            .await
            .with_context(|| format!("connection {id}: reading reply {seq}"))?;
        let rtt = t.elapsed();
        if reply[..unit.size] != out[..] {
            bail!("connection {id}: reply {seq} differs from the request");
        }
        seq += 1;
        if sh.measuring.load(Ordering::Relaxed) {
            hist.saturating_record(rtt.as_nanos() as u64);
        }
        sh.completed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(hist)
}

/// A churner of [`churn`]: connect (from [`churn_source`]), one echo round
/// trip, close.
struct TcpChurner {
    addr: SocketAddr,
    unit: Unit,
    id: usize,
    out: Vec<u8>,
    reply: Vec<u8>,
}

impl Churner for TcpChurner {
    async fn cycle(&mut self, seq: u64) -> Result<()> {
        let (id, unit) = (self.id, self.unit);
        let mut s = connect_from(self.addr, churn_source(id, seq)).await?;
        unit.fill(id as u32, seq, &mut self.out);
        s.write_all(&self.out).await?;
        read_reply(&mut s, &mut self.reply, unit.size)
            .await
            .with_context(|| format!("churner {id}: reading reply {seq}"))?;
        if self.reply[..unit.size] != self.out[..] {
            bail!("churner {id}: reply {seq} differs from the request");
        }
        Ok(())
    }
}

/// Connection churn: `churners` tasks each loop over connect, one echo
/// round trip, close. Returns completed cycles per second.
pub async fn churn(
    addr: SocketAddr,
    server_pid: u32,
    churners: usize,
    unit: Unit,
    w: Window,
) -> Result<Throughput> {
    let churners = (0..churners)
        .map(|id| TcpChurner {
            addr,
            unit,
            id,
            out: vec![0u8; unit.size],
            reply: vec![0u8; REPLY_BUF.max(2 * unit.size)],
        })
        .collect();
    measure::churn(churners, w, &[server_pid]).await
}

/// Idle TCP connections from 127.0.0.1 ([`idle`]).
struct TcpIdle {
    addr: SocketAddr,
    unit: Unit,
}

impl IdleConns for TcpIdle {
    type Conn = TcpStream;

    async fn warm_up(&self) -> Result<()> {
        let mut s = connect(self.addr).await?;
        round_trip(&mut s, self.unit, 0, 0).await
    }

    async fn open(&self, n: usize) -> Result<Vec<TcpStream>> {
        connect_many(self.addr, n, 250, false).await
    }

    async fn round_trip(&self, conn: &mut TcpStream, id: u32) -> Result<()> {
        round_trip(conn, self.unit, id, 1).await
    }
}

/// Idle memory of `n` TCP connections (`load/idle.rs`).
pub async fn idle(
    addr: SocketAddr,
    server_pid: u32,
    reported: &std::sync::atomic::AtomicUsize,
    n: usize,
    unit: Unit,
) -> Result<Idle> {
    let conns = TcpIdle { addr, unit };
    measure_idle(&conns, server_pid, reported, n, Duration::from_secs(30)).await
}

/// Opens `n` connections (250 connects at a time) that send nothing and
/// hands them over as std sockets, so they stay open after the load
/// generator's runtime is gone, until the caller drops them.
pub async fn hold_idle(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpStream>> {
    let streams = connect_many(addr, n, 250, false).await?;
    streams
        .into_iter()
        .map(|s| s.into_std().context("TcpStream::into_std"))
        .collect()
}

/// Message `seq` of connection `id` and its echo, compared whole, within 5 s.
pub async fn round_trip<S: Conn>(s: &mut S, unit: Unit, id: u32, seq: u64) -> Result<()> {
    let mut out = vec![0u8; unit.size];
    let mut reply = vec![0u8; unit.size];
    unit.fill(id, seq, &mut out);
    s.write_all(&out).await?;
    s.flush().await?;
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut reply))
        .await
        .map_err(|_| anyhow!("no echo within 5 s"))??;
    if reply != out {
        bail!("echo differs from the request");
    }
    Ok(())
}

/// Reads exactly one reply of `size` bytes into `buf[..size]`.
///
/// Reads go into a buffer larger than the reply: a short read lets tokio
/// mark the socket not-readable, so the next read waits for epoll instead
/// of first failing with EAGAIN (`read_exact` into an exact-size buffer
/// would cost an extra syscall per round trip).
pub async fn read_reply<S: Conn>(s: &mut S, buf: &mut [u8], size: usize) -> Result<()> {
    let mut got = 0;
    while got < size {
        let n = s.read(&mut buf[got..]).await?;
        if n == 0 {
            bail!("server closed the connection after {got} of {size} bytes");
        }
        got += n;
    }
    if got > size {
        bail!("server sent {got} bytes for a {size}-byte request");
    }
    Ok(())
}

/// Test support: `stream`, the replies of connection 3 from offset 0,
/// passes `unit`'s check however it is cut, into pieces of each of `cuts`
/// bytes.
#[cfg(test)]
pub fn assert_checks_at_any_cut<U: PipelineUnit>(unit: &U, stream: &[u8], cuts: &[usize]) {
    let mut scratch = vec![0u8; unit.reply_size()];
    for &cut in cuts {
        let mut pos = 0;
        while pos < stream.len() {
            let end = (pos + cut).min(stream.len());
            unit.check(3, pos as u64, &stream[pos..end], &mut scratch)
                .unwrap();
            pos = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_check_what_they_fill() {
        for unit in [
            Unit::text(32),
            Unit::frame(32),
            Unit::frame(4096),
            Unit::text(27),
        ] {
            let mut stream = vec![0u8; unit.size * 200];
            for (i, u) in stream.chunks_exact_mut(unit.size).enumerate() {
                unit.fill(3, i as u64, u);
            }
            if !unit.frame {
                assert_eq!(stream.iter().filter(|&&b| b == b'\n').count(), 200);
                assert!(std::str::from_utf8(&stream).is_ok());
            }
            assert_checks_at_any_cut(&unit, &stream, &[1, 7, 31, 32, 33, 1000, 5000]);
            let mut scratch = vec![0u8; unit.size];
            // A lost message breaks framing or the sampled content.
            let mut lossy = stream.clone();
            lossy.drain(unit.size * 5..unit.size * 6);
            assert!(unit.check(3, 0, &lossy, &mut scratch).is_err());
            // So does a corrupted one in a sampled unit.
            let mut bad = stream.clone();
            bad[unit.size * SAMPLE as usize + 2] ^= 1;
            assert!(unit.check(3, 0, &bad, &mut scratch).is_err());
        }
    }

    #[test]
    fn frame_units_carry_a_length_counting_the_header() {
        let unit = Unit::frame(32);
        let mut m = vec![0u8; unit.size];
        unit.fill(1, 2, &mut m);
        assert_eq!(&m[..4], &36u32.to_be_bytes());
        assert_eq!(unit.size, 36);
    }
}
