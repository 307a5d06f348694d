//! The one load generator, used unchanged against both servers.
//!
//! It runs in the runner process on a dedicated thread (pinned to its own
//! CPU when the scenario asks for it) with a tokio current_thread runtime,
//! and keeps its per-message work small: messages are fixed-size units
//! written from a per-connection template, replies are checked by byte
//! position (every unit's framing bytes, and the whole content of every
//! [`SAMPLE`]th unit), never parsed into owned values.
//!
//! Every run is bounded: the whole load phase has a deadline, and after the
//! measured window each connection stops sending and must get back every
//! byte it sent, so a server that drops or corrupts messages fails the run
//! instead of looking fast.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::sys;

/// Length of the `c<conn>s<seq>` id at the start of every message body.
const HEAD_LEN: usize = 26;

/// Read buffer of the depth-1 scenarios (larger than any reply).
pub(crate) const REPLY_BUF: usize = 4096;

/// One unit in this many is compared byte for byte with what was sent.
pub const SAMPLE: u64 = 64;

/// Runs `f`'s future on a fresh load-generator thread with a tokio
/// current_thread runtime, pinned to `cpu` if given, bounded by `limit`.
pub fn run<T, F, Fut>(cpu: Option<usize>, limit: Duration, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("loadgen".into())
            .spawn_scoped(s, move || -> Result<T> {
                if let Some(cpu) = cpu {
                    sys::pin_current_thread(cpu).context("pinning the load generator")?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    tokio::time::timeout(limit, f())
                        .await
                        .map_err(|_| anyhow!("load phase exceeded its {limit:?} limit"))?
                })
            })?;
        h.join()
            .map_err(|_| anyhow!("load generator thread panicked"))?
    })
}

/// What a message looks like on the wire; every message of a scenario has
/// the same size, so reply offsets say which message and which byte.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    pub frame: bool,
    /// Bytes on the wire per message, header or `\n` included.
    pub size: usize,
}

/// A fixed-size request and its fixed-size reply, as the pipelined
/// scenarios need them: [`Unit`] (a reply is the request), and the
/// WebSocket units (a masked client frame, an unmasked echo).
pub(crate) trait PipelineUnit: Copy + Send + 'static {
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
        let body = &mut out[self.body_range()];
        let mut head = [0u8; HEAD_LEN];
        head[0] = b'c';
        hex(conn as u64, &mut head[1..9]);
        head[9] = b's';
        hex(seq, &mut head[10..26]);
        let n = head.len().min(body.len());
        body[..n].copy_from_slice(&head[..n]);
        let rest = body.len() - n;
        body[n..].copy_from_slice(&pattern(rest)[..rest]);
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

/// `abc...zabc...` of at least `len` bytes.
pub(crate) fn pattern(len: usize) -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let p = P.get_or_init(|| (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect());
    assert!(len <= p.len(), "message too large for the pattern");
    p
}

pub(crate) fn hex(v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        let shift = 4 * (n - 1 - i);
        *b = if shift < 64 {
            DIGITS[((v >> shift) & 0xf) as usize]
        } else {
            b'0'
        };
    }
}

/// A connection the load generator drives: a `TcpStream`, or a TLS
/// stream over one (`tls/load.rs`).
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

/// State shared by the connection tasks of one run.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) completed: AtomicU64,
    pub(crate) stop: AtomicBool,
    pub(crate) measuring: AtomicBool,
}

/// Result of a throughput measurement.
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    /// Completed messages (or cycles) per second within the window.
    pub per_sec: f64,
    /// CPU time of the load generator thread / window wall time.
    pub loadgen_cpu: f64,
    /// CPU time of the server process / window wall time (1.0 = one core).
    pub server_cpu: f64,
    /// CPU time used by everything but the server and this runner process
    /// during the window / wall time: other load on the machine that may
    /// disturb the measurement.
    pub other_cpu: f64,
    /// Voluntary context switches of the server's threads per second in
    /// the window (a thread went to sleep).
    pub server_sleeps: f64,
    /// Involuntary context switches of the server's threads per second in
    /// the window (a thread was preempted).
    pub server_preempted: f64,
}

/// Timing of a run: warm-up, then the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

/// Waits out the warm-up, then measures `counter`'s rate over the window,
/// with the CPU use of this thread and of the server, processes
/// `server_pids` (one, or a proxy and its backend: `tls-nginx`).
pub(crate) async fn measure(sh: &Shared, w: Window, server_pids: &[u32]) -> Result<Throughput> {
    let cpu = || -> Result<Duration> {
        Ok(server_pids
            .iter()
            .map(|&p| sys::process_cpu(p))
            .sum::<std::io::Result<Duration>>()?)
    };
    let switches = || -> Result<(u64, u64)> {
        server_pids.iter().try_fold((0, 0), |(v, i), &p| {
            let (pv, pi) = sys::context_switches(p)?;
            Ok((v + pv, i + pi))
        })
    };
    tokio::time::sleep(w.warmup).await;
    let attached = attach(server_pids[0], w.measure)?;
    let (c0, t0) = (sh.completed.load(Ordering::SeqCst), Instant::now());
    let (l0, s0) = (thread_cpu(), cpu()?);
    let (r0, m0) = (sys::process_cpu(std::process::id())?, sys::machine_busy()?);
    let x0 = switches()?;
    sh.measuring.store(true, Ordering::SeqCst);
    tokio::time::sleep(w.measure).await;
    sh.measuring.store(false, Ordering::SeqCst);
    let (c1, t1) = (sh.completed.load(Ordering::SeqCst), Instant::now());
    let (l1, s1) = (thread_cpu(), cpu()?);
    let (r1, m1) = (sys::process_cpu(std::process::id())?, sys::machine_busy()?);
    let x1 = switches()?;
    let secs = (t1 - t0).as_secs_f64();
    let ours = (s1 - s0) + (r1 - r0);
    if let Some(child) = attached {
        wait_attached(child).await?;
    }
    Ok(Throughput {
        per_sec: (c1 - c0) as f64 / secs,
        loadgen_cpu: (l1 - l0).as_secs_f64() / secs,
        server_cpu: (s1 - s0).as_secs_f64() / secs,
        other_cpu: (m1 - m0).saturating_sub(ours).as_secs_f64() / secs,
        server_sleeps: x1.0.saturating_sub(x0.0) as f64 / secs,
        server_preempted: x1.1.saturating_sub(x0.1) as f64 / secs,
    })
}

/// The runner's `--attach CMD`: a shell command run at the start of each
/// measured window of the throughput scenarios, with `{pid}` replaced by
/// the server's process id and `{secs}` by the window's length in seconds
/// (for `perf stat -p {pid} -- sleep {secs}`, say). Its output goes to
/// the runner's stderr.
pub static ATTACH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Starts the `--attach` command for server `pid`, if there is one.
fn attach(pid: u32, window: Duration) -> Result<Option<std::process::Child>> {
    let Some(cmd) = ATTACH.get() else {
        return Ok(None);
    };
    let cmd = cmd
        .replace("{pid}", &pid.to_string())
        .replace("{secs}", &format!("{:.3}", window.as_secs_f64()));
    let child = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("--attach: starting {cmd:?}"))?;
    Ok(Some(child))
}

/// Waits for the `--attach` command, at most 60 s after the window
/// (then kills it), without blocking the load generator's runtime.
async fn wait_attached(mut child: std::process::Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                eprintln!("  --attach command exited with {status}");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("--attach command still running 60 s after the window: killed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime writes into a local timespec.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream> {
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
pub(crate) fn churn_source(id: usize, seq: u64) -> std::net::IpAddr {
    let k = (seq as usize).wrapping_mul(7919).wrapping_add(id) as u16;
    std::net::Ipv4Addr::new(127, 1, (k >> 8) as u8, k as u8).into()
}

/// Connects from `source` (port chosen at connect time, with
/// `IP_BIND_ADDRESS_NO_PORT`, so the whole 4-tuple decides what is free).
pub(crate) async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Result<TcpStream> {
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

/// Opens `n` connections, at most `parallel` connects in flight.
async fn connect_many(addr: SocketAddr, n: usize, parallel: usize) -> Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = parallel.min(n - out.len());
        let mut set = JoinSet::new();
        for i in 0..batch {
            set.spawn(async move { (i, connect(addr).await) });
        }
        let mut got: Vec<(usize, TcpStream)> = Vec::with_capacity(batch);
        while let Some(r) = set.join_next().await {
            let (i, s) = r?;
            got.push((i, s?));
        }
        got.sort_by_key(|(i, _)| *i);
        out.extend(got.into_iter().map(|(_, s)| s));
    }
    Ok(out)
}

/// Source address of connection `i` of a many-connection run: one of the
/// 65,536 loopback addresses of 127.2.0.0/16, in turn (`churn_source`
/// explains why: the TIME_WAIT states a run leaves behind).
pub(crate) fn many_source(i: usize) -> std::net::IpAddr {
    let k = i as u16;
    std::net::Ipv4Addr::new(127, 2, (k >> 8) as u8, k as u8).into()
}

/// Opens `n` connections, connection `i` from [`many_source`]`(i)`, at
/// most `parallel` connects in flight, in order.
async fn connect_many_sources(
    addr: SocketAddr,
    n: usize,
    parallel: usize,
) -> Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let base = out.len();
        let batch = parallel.min(n - base);
        let mut set = JoinSet::new();
        for i in 0..batch {
            set.spawn(async move { (i, connect_from(addr, many_source(base + i)).await) });
        }
        let mut got: Vec<(usize, TcpStream)> = Vec::with_capacity(batch);
        while let Some(r) = set.join_next().await {
            let (i, s) = r?;
            got.push((i, s?));
        }
        got.sort_by_key(|(i, _)| *i);
        out.extend(got.into_iter().map(|(_, s)| s));
    }
    Ok(out)
}

/// Joins the connection tasks after the window, each within `grace`.
pub(crate) async fn join_all<T: 'static>(
    set: &mut JoinSet<Result<T>>,
    grace: Duration,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Err(_) => bail!(
                "{} connection(s) still waiting for replies {grace:?} after the window: \
                 the server lost messages",
                set.len()
            ),
            Ok(None) => return Ok(out),
            Ok(Some(r)) => out.push(r??),
        }
    }
}

/// Pipelined echo: `conns` connections, each keeping `depth` messages in
/// flight. Returns messages/second.
pub async fn pipelined(
    addr: SocketAddr,
    server_pid: u32,
    conns: usize,
    depth: usize,
    unit: Unit,
    w: Window,
) -> Result<Throughput> {
    // Up to 1,000 connections come from 127.0.0.1; more from many source
    // addresses (see `many_source`), so that ephemeral ports and the
    // TIME_WAIT states of earlier runs never decide whether a run can
    // connect.
    let streams = if conns <= 1000 {
        connect_many(addr, conns, 256).await?
    } else {
        connect_many_sources(addr, conns, 256).await?
    };
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
pub(crate) async fn pipelined_over<S: Conn, U: PipelineUnit>(
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
    let t = measure(&sh, w, server_pids).await;
    sh.stop.store(true, Ordering::SeqCst);
    let t = t?;
    join_all(&mut set, Duration::from_secs(10)).await?;
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
    pub throughput: Throughput,
    pub p50_us: f64,
    pub p99_us: f64,
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
    let streams = connect_many(addr, conns, 256).await?;
    pingpong_over(streams, &[server_pid], unit, w).await
}

/// [`pingpong`] over connections already open (TCP or TLS), the server
/// being processes `server_pids`.
pub(crate) async fn pingpong_over<S: Conn>(
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
    let t = measure(&sh, w, server_pids).await;
    sh.stop.store(true, Ordering::SeqCst);
    let t = t?;
    let hists = join_all(&mut set, Duration::from_secs(10)).await?;
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

pub(crate) fn new_histogram() -> Histogram<u64> {
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

/// Connection churn: `churners` tasks each loop over connect, one echo
/// round trip, close. Returns completed cycles per second.
pub async fn churn(
    addr: SocketAddr,
    server_pid: u32,
    churners: usize,
    unit: Unit,
    w: Window,
) -> Result<Throughput> {
    let sh = Arc::new(Shared::default());
    let mut set = JoinSet::new();
    for id in 0..churners {
        let sh = sh.clone();
        set.spawn(async move {
            let mut out = vec![0u8; unit.size];
            let mut reply = vec![0u8; REPLY_BUF.max(2 * unit.size)];
            let mut seq = 0u64;
            while !sh.stop.load(Ordering::Relaxed) {
                let mut s = connect_from(addr, churn_source(id, seq)).await?;
                unit.fill(id as u32, seq, &mut out);
                s.write_all(&out).await?;
                read_reply(&mut s, &mut reply, unit.size)
                    .await
                    .with_context(|| format!("churner {id}: reading reply {seq}"))?;
                if reply[..unit.size] != out[..] {
                    bail!("churner {id}: reply {seq} differs from the request");
                }
                drop(s);
                seq += 1;
                sh.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    let t = measure(&sh, w, &[server_pid]).await;
    sh.stop.store(true, Ordering::SeqCst);
    let t = t?;
    join_all(&mut set, Duration::from_secs(10)).await?;
    Ok(t)
}

/// Idle-memory result.
#[derive(Debug, Clone)]
pub struct Idle {
    pub rss_before: u64,
    pub rss_after: u64,
    pub conns: usize,
}

impl Idle {
    pub fn bytes_per_conn(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / self.conns as f64
    }

    /// The run's metric (bytes per connection) and its progress line;
    /// `kind` names the connections ("idle", "idle TLS", ...).
    pub fn outcome(&self, kind: &str) -> (Vec<f64>, String) {
        use crate::scenarios::bytes;
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

/// Idle memory: one warm-up round trip (so lazily allocated per-process
/// state is in the baseline), then the server's RSS, then `n` connections
/// that send nothing, then the RSS again once the server reports all of
/// them and its RSS has settled. A few connections echo afterwards to show
/// the server still works. The server is killed before the client sockets
/// close, so the TIME_WAIT states land on its side.
pub async fn idle(
    addr: SocketAddr,
    server_pid: u32,
    reported: Arc<AtomicUsize>,
    n: usize,
    unit: Unit,
) -> Result<Idle> {
    {
        let mut s = connect(addr).await?;
        round_trip(&mut s, unit, 0, 0).await?;
    }
    wait_until(Duration::from_secs(5), || {
        reported.load(Ordering::SeqCst) == 0
    })
    .await
    .context("the server did not report the warm-up connection closed")?;
    let rss_before = settled_rss(server_pid).await?;
    let mut streams = connect_many(addr, n, 250).await?;
    wait_until(Duration::from_secs(30), || {
        reported.load(Ordering::SeqCst) >= n
    })
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
        round_trip(&mut streams[i], unit, i as u32, 1).await?;
    }
    sys::kill(server_pid);
    drop(streams);
    Ok(Idle {
        rss_before,
        rss_after,
        conns: n,
    })
}

/// Opens `n` connections (250 connects at a time) that send nothing and
/// hands them over as std sockets, so they stay open after the load
/// generator's runtime is gone, until the caller drops them.
pub async fn hold_idle(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpStream>> {
    let streams = connect_many(addr, n, 250).await?;
    streams
        .into_iter()
        .map(|s| s.into_std().context("TcpStream::into_std"))
        .collect()
}

pub(crate) async fn round_trip<S: Conn>(s: &mut S, unit: Unit, id: u32, seq: u64) -> Result<()> {
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
pub(crate) async fn read_reply<S: Conn>(s: &mut S, buf: &mut [u8], size: usize) -> Result<()> {
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

pub(crate) async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
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
pub(crate) async fn settled_rss(pid: u32) -> Result<u64> {
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
            let mut scratch = vec![0u8; unit.size];
            // Any split of the stream checks out.
            for cut in [1, 7, 31, 32, 33, 1000, 5000] {
                let mut pos = 0;
                while pos < stream.len() {
                    let end = (pos + cut).min(stream.len());
                    unit.check(3, pos as u64, &stream[pos..end], &mut scratch)
                        .unwrap();
                    pos = end;
                }
            }
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
