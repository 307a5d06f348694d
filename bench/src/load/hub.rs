//! The hub scenarios' load generators: the local fan-out (one message to
//! a group of Text connections, timed until the last member has it) and
//! the cluster load (WebSocket members on two nodes, a publisher on a
//! third), which speaks plain WebSocket to lubdub's nodes and Engine.IO v4
//! over WebSocket to Socket.IO's (`load/socketio.rs`), with the one
//! WebSocket client codec (`load/ws_codec.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::load::connect::{connect_from, connect_many, many_source, open_in_order};
use crate::load::socketio::{
    eio, read_stamp, sio_event, sio_event_arg, stamp, Eio, EIO_PONG, SIO_CONNECT, STAMP_LEN,
};
use crate::load::tcp::new_histogram;
use crate::load::ws_codec::{
    push_client_frame, upgrade, whole_server_frame, FIN, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,
};
use crate::report::Window;
use crate::sys;

/// Largest frame the hub load accepts (its messages are tens of bytes).
const MAX_FRAME: usize = 64 * 1024;

/// The masking key of every client frame of the hub load (any key is
/// valid; a constant one keeps the load generator's cost per frame to the
/// XOR).
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x88];

/// Appends a masked, final client frame of `opcode` carrying `payload`.
fn client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    push_client_frame(out, FIN | opcode, payload, MASK);
}

/// ns since the load generator's first look at the clock: the publisher
/// stamps messages with it, members compare on receipt (one process, one
/// clock).
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A line of `hub-fanout-local`: `f`, the fan-out's number in 16 hex
/// digits, padding: 31 bytes, 32 with the `\n` members receive.
const LOCAL_LINE: usize = 31;

fn local_line(seq: u64) -> [u8; LOCAL_LINE] {
    let mut l = [b'x'; LOCAL_LINE];
    let mut s = [0u8; STAMP_LEN];
    stamp(b'f', seq, 0, &mut s);
    l[..17].copy_from_slice(&s[..17]);
    l
}

/// State shared by the members and the publisher of `hub-fanout-local`.
#[derive(Default)]
struct LocalShared {
    joined: AtomicUsize,
    /// Members that have the current fan-out's message.
    received: AtomicUsize,
    /// When the last member got it ([`now_ns`]).
    last_ns: AtomicU64,
    done: Notify,
}

/// What one `hub-fanout-local` run measured.
pub struct LocalFanout {
    /// Time from the publish to the last member's receipt, per measured fan-out.
    pub times: Vec<Duration>,
    /// Server CPU over the measured fan-outs / deliveries.
    pub server_cpu_per_delivery: Duration,
    /// Load generator thread CPU / wall time over the measured fan-outs.
    pub loadgen_cpu: f64,
}

/// `n` members join the group, then a publisher connection sends `warm +
/// count` messages one at a time, each once every member has the one
/// before; each is timed from just before its write to the read that
/// completed the last member's copy.
pub async fn local_fanout(
    addr: SocketAddr,
    server_pid: u32,
    n: usize,
    warm: usize,
    count: usize,
) -> Result<LocalFanout> {
    let members = connect_many(addr, n, 256, true).await?;
    let sh = Arc::new(LocalShared::default());
    let mut set = JoinSet::new();
    for (id, s) in members.into_iter().enumerate() {
        set.spawn(local_member(s, id, n, sh.clone()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while sh.joined.load(Ordering::SeqCst) < n {
        if let Some(r) = set.try_join_next() {
            r??;
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} members joined within 60 s",
                sh.joined.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut publisher = connect_from(addr, "127.0.0.1".parse()?).await?;
    let mut times = Vec::with_capacity(count);
    let mut line = Vec::with_capacity(LOCAL_LINE + 2);
    let (mut cpu0, mut lg0, mut t0) = (Duration::ZERO, Duration::ZERO, Instant::now());
    for k in 0..(warm + count) as u64 {
        if k == warm as u64 {
            cpu0 = sys::process_cpu(server_pid)?;
            lg0 = sys::thread_cpu();
            t0 = Instant::now();
        }
        sh.received.store(0, Ordering::SeqCst);
        line.clear();
        line.push(b'p');
        line.extend_from_slice(&local_line(k));
        line.push(b'\n');
        let sent = now_ns();
        publisher.write_all(&line).await?;
        if tokio::time::timeout(Duration::from_secs(10), sh.done.notified())
            .await
            .is_err()
        {
            if let Some(r) = set.try_join_next() {
                r??;
            }
            bail!(
                "fan-out {k}: {} of {n} members got it within 10 s",
                sh.received.load(Ordering::SeqCst)
            );
        }
        if k >= warm as u64 {
            let last = sh.last_ns.load(Ordering::SeqCst);
            times.push(Duration::from_nanos(last.saturating_sub(sent)));
        }
    }
    let cpu = sys::process_cpu(server_pid)? - cpu0;
    let wall = t0.elapsed();
    let lg = sys::thread_cpu() - lg0;
    set.abort_all();
    Ok(LocalFanout {
        times,
        server_cpu_per_delivery: cpu / (count * n) as u32,
        loadgen_cpu: lg.as_secs_f64() / wall.as_secs_f64(),
    })
}

async fn local_member(mut s: TcpStream, id: usize, n: usize, sh: Arc<LocalShared>) -> Result<()> {
    s.write_all(b"j\n").await?;
    let mut buf = vec![0u8; 4096];
    let (mut filled, mut joined, mut next) = (0usize, false, 0u64);
    loop {
        let r = s.read(&mut buf[filled..]).await?;
        if r == 0 {
            bail!("member {id}: the server closed the connection");
        }
        filled += r;
        let mut off = 0;
        while let Some(nl) = buf[off..filled].iter().position(|&b| b == b'\n') {
            let line = &buf[off..off + nl];
            if !joined {
                if line != b"ok" {
                    bail!(
                        "member {id}: {:?} before the join's ok",
                        String::from_utf8_lossy(line)
                    );
                }
                joined = true;
                sh.joined.fetch_add(1, Ordering::SeqCst);
            } else {
                if line != local_line(next) {
                    bail!(
                        "member {id}: got {:?}, expected fan-out {next}",
                        String::from_utf8_lossy(line)
                    );
                }
                next += 1;
                if sh.received.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    sh.last_ns.store(now_ns(), Ordering::SeqCst);
                    sh.done.notify_one();
                }
            }
            off += nl + 1;
        }
        buf.copy_within(off..filled, 0);
        filled -= off;
        if filled == buf.len() {
            bail!("member {id}: a line longer than {} bytes", buf.len());
        }
    }
}

/// Which cluster the load generator speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// lubdub nodes: plain WebSocket, text messages `j`, `pSTAMP`; members
    /// receive `STAMP`.
    Lubdub,
    /// Socket.IO nodes: Engine.IO v4 over WebSocket, events `join` and
    /// `p` (STAMP); members receive the event `m` (STAMP).
    SocketIo,
}

impl Peer {
    fn path(self) -> &'static str {
        match self {
            Peer::Lubdub => "/",
            Peer::SocketIo => "/socket.io/?EIO=4&transport=websocket",
        }
    }
}

/// Reads from `s` into `buf` until a whole server frame is at its start;
/// returns it (opcode, payload) and leaves the rest in `buf`. Setup only.
async fn next_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u8, Vec<u8>)> {
    loop {
        if let Some(f) = whole_server_frame(buf, MAX_FRAME)? {
            let payload = buf[f.payload.clone()].to_vec();
            buf.drain(..f.len);
            if f.opcode == OP_PING {
                let mut pong = Vec::new();
                client_frame(&mut pong, OP_PONG, &payload);
                s.write_all(&pong).await?;
                continue;
            }
            return Ok((f.opcode, payload));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connects a WebSocket client to a node and, for Socket.IO, opens the
/// Engine.IO session and connects the default namespace; a member also
/// joins the group. Returns the stream and the bytes read past the setup.
async fn cluster_connect(
    addr: SocketAddr,
    source: std::net::IpAddr,
    peer: Peer,
    join: bool,
) -> Result<(TcpStream, Vec<u8>)> {
    let mut s = connect_from(addr, source).await?;
    let up = upgrade(&mut s, &addr.to_string(), peer.path(), false)
        .await
        .with_context(|| format!("{addr}: WebSocket upgrade"))?;
    let mut buf = up.leftover;
    let mut out = Vec::new();
    if peer == Peer::SocketIo {
        let (op, p) = next_frame(&mut s, &mut buf).await?;
        if op != OP_TEXT || !matches!(eio(&p)?, Eio::Open(_)) {
            bail!(
                "expected the Engine.IO open packet, got {:?}",
                String::from_utf8_lossy(&p)
            );
        }
        client_frame(&mut out, OP_TEXT, SIO_CONNECT);
        s.write_all(&out).await?;
        out.clear();
        loop {
            let (op, p) = next_frame(&mut s, &mut buf).await?;
            match (op, eio(&p)?) {
                (OP_TEXT, Eio::Connect(_)) => break,
                (OP_TEXT, Eio::Ping) => {
                    client_frame(&mut out, OP_TEXT, EIO_PONG);
                    s.write_all(&out).await?;
                    out.clear();
                }
                _ => bail!(
                    "expected the namespace's 40 answer, got {:?}",
                    String::from_utf8_lossy(&p)
                ),
            }
        }
    }
    if join {
        match peer {
            Peer::Lubdub => client_frame(&mut out, OP_TEXT, b"j"),
            Peer::SocketIo => {
                let mut ev = Vec::new();
                sio_event("join", b"", &mut ev);
                client_frame(&mut out, OP_TEXT, &ev);
            }
        }
        s.write_all(&out).await?;
    }
    Ok((s, buf))
}

/// State shared by the members and the publisher of a cluster run.
struct ClusterShared {
    members: u64,
    /// Members that got a warm-up probe.
    warmed: AtomicUsize,
    /// Measured messages received, all members together.
    delivered: AtomicU64,
    /// Signalled each time every member has one more message.
    progress: Notify,
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Publish-to-receive times (ns) of the receipts in the window.
    latency: Mutex<Histogram<u64>>,
}

/// What one cluster run measured.
#[derive(Debug, Clone)]
pub struct ClusterRun {
    /// Messages received per second, all members together.
    pub delivered_per_sec: f64,
    /// Publishes per second (each delivered to every member).
    pub publishes_per_sec: f64,
    /// Median publish-to-receive time in the window, µs.
    pub p50_us: f64,
    /// 99th percentile publish-to-receive time in the window, µs.
    pub p99_us: f64,
    /// CPU of each of `pids` (Redis, then the nodes) / wall time in the
    /// window (1.0 = one core).
    pub cpu_each: Vec<f64>,
    /// CPU of the load generator thread / wall time in the window.
    pub loadgen_cpu: f64,
}

impl ClusterRun {
    /// CPU of the nodes and Redis together (1.0 = one core).
    pub fn cluster_cpu(&self) -> f64 {
        self.cpu_each.iter().sum()
    }
}

/// The cluster load: members connect to `members` (one address per
/// member) and join; a publisher on `publisher` sends warm-up probes
/// every 20 ms until every member had one, then keeps `depth` publishes in
/// flight (sent and not yet received by every member) through the warm-up
/// and the measured window. Every member checks that it gets every
/// measured message once, in order. `pids`: the nodes and Redis, whose CPU
/// is measured in the window.
pub async fn cluster_load(
    peer: Peer,
    publisher: SocketAddr,
    members: &[SocketAddr],
    depth: u64,
    w: Window,
    pids: &[u32],
) -> Result<ClusterRun> {
    let n = members.len();
    let sh = Arc::new(ClusterShared {
        members: n as u64,
        warmed: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        progress: Notify::new(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        latency: Mutex::new(new_histogram()),
    });
    let connected = open_in_order(n, 100, |k| {
        let addr = members[k];
        async move {
            cluster_connect(addr, many_source(k), peer, true)
                .await
                .with_context(|| format!("member {k} ({addr})"))
        }
    })
    .await?;
    let mut set = JoinSet::new();
    for (k, (s, rest)) in connected.into_iter().enumerate() {
        set.spawn(cluster_member(s, rest, peer, k, sh.clone()));
    }
    let (mut pub_s, _) = cluster_connect(publisher, "127.0.0.1".parse()?, peer, false)
        .await
        .context("the publisher")?;

    // Warm-up probes until every member got one: the joins and the
    // nodes' subscriptions have taken effect across the cluster.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 0u64;
    while sh.warmed.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} members got a probe within 30 s",
                sh.warmed.load(Ordering::SeqCst)
            );
        }
        if let Some(r) = set.try_join_next() {
            r??;
        }
        let mut out = Vec::new();
        publish_frame(peer, b'w', seq, &mut out);
        pub_s.write_all(&out).await?;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let publisher = tokio::spawn(cluster_publisher(pub_s, peer, depth, sh.clone()));
    tokio::time::sleep(w.warmup).await;
    let cpu = |pids: &[u32]| -> Result<Vec<Duration>> {
        pids.iter()
            .map(|&p| sys::process_cpu(p).map_err(Into::into))
            .collect()
    };
    let (d0, c0, l0, t0) = (
        sh.delivered.load(Ordering::SeqCst),
        cpu(pids)?,
        sys::thread_cpu(),
        Instant::now(),
    );
    sh.measuring.store(true, Ordering::SeqCst);
    tokio::time::sleep(w.measure).await;
    sh.measuring.store(false, Ordering::SeqCst);
    let (d1, c1, l1, secs) = (
        sh.delivered.load(Ordering::SeqCst),
        cpu(pids)?,
        sys::thread_cpu(),
        t0.elapsed().as_secs_f64(),
    );
    sh.stop.store(true, Ordering::SeqCst);
    let published = publisher.await??;

    // Every member must get every measured message.
    let want = published * n as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sh.delivered.load(Ordering::SeqCst) < want {
        if let Some(r) = set.try_join_next() {
            r??;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {want} deliveries 10 s after the window: messages were lost",
                sh.delivered.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    set.abort_all();
    let h = sh.latency.lock().unwrap();
    if h.is_empty() {
        bail!("no message was received in the window");
    }
    let delivered = (d1 - d0) as f64 / secs;
    Ok(ClusterRun {
        delivered_per_sec: delivered,
        publishes_per_sec: delivered / n as f64,
        p50_us: h.value_at_quantile(0.50) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
        cpu_each: c1
            .iter()
            .zip(&c0)
            .map(|(a, b)| (*a - *b).as_secs_f64() / secs)
            .collect(),
        loadgen_cpu: (l1 - l0).as_secs_f64() / secs,
    })
}

/// Appends the publisher's frame for message `seq` of kind `kind`, stamped now.
fn publish_frame(peer: Peer, kind: u8, seq: u64, out: &mut Vec<u8>) {
    let mut st = [0u8; STAMP_LEN];
    stamp(kind, seq, now_ns(), &mut st);
    match peer {
        Peer::Lubdub => {
            let mut p = [0u8; STAMP_LEN + 1];
            p[0] = b'p';
            p[1..].copy_from_slice(&st);
            client_frame(out, OP_TEXT, &p);
        }
        Peer::SocketIo => {
            let mut ev = Vec::with_capacity(48);
            sio_event("p", &st, &mut ev);
            client_frame(out, OP_TEXT, &ev);
        }
    }
}

/// Keeps `depth` measured publishes in flight until told to stop; returns
/// how many it sent.
async fn cluster_publisher(
    mut s: TcpStream,
    peer: Peer,
    depth: u64,
    sh: Arc<ClusterShared>,
) -> Result<u64> {
    let mut seq = 0u64;
    let mut out = Vec::with_capacity(64 * depth as usize);
    while !sh.stop.load(Ordering::SeqCst) {
        let done = sh.delivered.load(Ordering::SeqCst) / sh.members;
        while seq < done + depth {
            publish_frame(peer, b'm', seq, &mut out);
            seq += 1;
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        if tokio::time::timeout(Duration::from_secs(10), sh.progress.notified())
            .await
            .is_err()
        {
            bail!(
                "no progress for 10 s: {} deliveries of {seq} publishes to {} members",
                sh.delivered.load(Ordering::SeqCst),
                sh.members
            );
        }
    }
    Ok(seq)
}

async fn cluster_member(
    mut s: TcpStream,
    rest: Vec<u8>,
    peer: Peer,
    id: usize,
    sh: Arc<ClusterShared>,
) -> Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = rest.len();
    buf[..filled].copy_from_slice(&rest);
    let mut out = Vec::new();
    let (mut warmed, mut next) = (false, 0u64);
    loop {
        let mut off = 0;
        while let Some(f) = whole_server_frame(&buf[off..filled], MAX_FRAME)? {
            let p = &buf[off + f.payload.start..off + f.payload.end];
            let data = match (f.opcode, peer) {
                (OP_TEXT, Peer::Lubdub) => Some(p),
                (OP_TEXT, Peer::SocketIo) => match eio(p)? {
                    Eio::Event(json) => Some(sio_event_arg(json, "m").ok_or_else(|| {
                        anyhow!(
                            "member {id}: unexpected event {:?}",
                            String::from_utf8_lossy(json)
                        )
                    })?),
                    Eio::Ping => {
                        client_frame(&mut out, OP_TEXT, EIO_PONG);
                        None
                    }
                    Eio::Pong | Eio::Other(_) => None,
                    other => bail!("member {id}: unexpected Engine.IO packet {other:?}"),
                },
                (OP_PING, _) => {
                    client_frame(&mut out, OP_PONG, p);
                    None
                }
                (OP_PONG, _) => None,
                (OP_CLOSE, _) => bail!("member {id}: the server closed the WebSocket"),
                (op, _) => bail!("member {id}: unexpected opcode {op:#x}"),
            };
            if let Some(d) = data {
                let (kind, seq, t) = read_stamp(d).ok_or_else(|| {
                    anyhow!("member {id}: not a stamp: {:?}", String::from_utf8_lossy(d))
                })?;
                match kind {
                    b'w' => {
                        if !warmed {
                            warmed = true;
                            sh.warmed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    b'm' => {
                        if seq != next {
                            bail!("member {id}: got message {seq}, expected {next} (lost, duplicated or reordered)");
                        }
                        next += 1;
                        if sh.measuring.load(Ordering::Relaxed) {
                            let lat = now_ns().saturating_sub(t);
                            sh.latency.lock().unwrap().saturating_record(lat.max(1));
                        }
                        if (sh.delivered.fetch_add(1, Ordering::SeqCst) + 1)
                            .is_multiple_of(sh.members)
                        {
                            sh.progress.notify_one();
                        }
                    }
                    k => bail!("member {id}: a stamp of kind {k:#x}"),
                }
            }
            off += f.len;
        }
        buf.copy_within(off..filled, 0);
        filled -= off;
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        let r = s.read(&mut buf[filled..]).await?;
        if r == 0 {
            bail!("member {id}: the server closed the connection");
        }
        filled += r;
    }
}
