//! The healthy clients of the `attack` and `attack-ws` scenarios, a child
//! process:
//! `lubdub-bench healthy-child --port P [--conns N] [--interval-ms I] [--ws] [--cpu C] [--nice N]`
//! (see [`child_main`]).

use std::cell::RefCell;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::child::Placement;
use crate::load::tcp::Unit;
use crate::load::ws::{WsUnit, PATH};
use crate::load::ws_codec::upgrade;
use crate::sys;

/// A reply later than this counts as lost (and the connection is redone).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes per healthy ping: a Text line, `\n` included, or the payload of
/// a WebSocket text message.
pub const PING: usize = 32;

/// The command line of a `healthy-child`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
pub struct HealthyOpts {
    /// The server's port on 127.0.0.1.
    #[arg(long)]
    pub port: u16,
    /// Healthy connections.
    #[arg(long, default_value_t = 50)]
    pub conns: usize,
    /// Period of each connection's pings, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub interval_ms: u64,
    /// WebSocket clients (an upgrade, then masked text frames) instead of
    /// Text lines.
    #[arg(long)]
    pub ws: bool,
    /// Where the process runs.
    #[command(flatten)]
    pub placement: Placement,
}

impl HealthyOpts {
    /// The command line that makes a child run these healthy clients.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "healthy-child".to_string(),
            "--port".into(),
            self.port.to_string(),
            "--conns".into(),
            self.conns.to_string(),
            "--interval-ms".into(),
            self.interval_ms.to_string(),
        ];
        if self.ws {
            a.push("--ws".into());
        }
        a.extend(self.placement.to_args());
        a
    }
}

/// Per-phase latency histograms (µs) and losses of the healthy clients.
struct HealthyStats {
    /// To the reply from the time the ping was due (its slot in the
    /// schedule) if the previous reply came after that, else from the
    /// write: a stall counts for every ping it held back.
    due: Vec<Histogram<u64>>,
    /// From the write to the reply.
    raw: Vec<Histogram<u64>>,
    lost: Vec<u64>,
    first_error: Option<String>,
}

/// Entry point of `healthy-child --port P --conns N --interval-ms I [--ws]`
/// (`--ws`: each connection upgrades to WebSocket first and pings with
/// masked text frames of [`PING`] bytes; otherwise [`PING`]-byte lines).
///
/// Prints `ready <conns>` once every connection made one round trip, then
/// pings. Each connection sends its next ping when it is due (every `I`
/// ms) and the previous reply is in, so after a stall the pings that fell
/// due go out back to back. Such a held-back ping is timed from its due
/// time (a stall counts once for every ping it delayed, as a client on a
/// fixed schedule sees it); any other ping from its write.
///
/// A stdin line `phase N` starts the next phase (0 before, 1 during,
/// 2 after); a ping belongs to the phase in which it fell due. At
/// end-of-file the clients stop and the child prints, per phase,
/// `phaseN <replies> <p50> <p99> <max> <raw p50> <raw p99> <lost>` (µs;
/// *raw* from the write instead of the due time). A ping is lost when its
/// reply is not back within 10 s or differs, when the server closes the
/// connection, or when no connection could be made for it.
pub fn child_main(o: &HealthyOpts) -> Result<()> {
    sys::die_with_parent();
    sys::raise_fd_limit()?;
    sys::place(o.placement.cpu, o.placement.nice)?;
    let (port, conns, interval_ms) = (o.port, o.conns, o.interval_ms);
    if port == 0 || conns == 0 || interval_ms == 0 {
        bail!("healthy-child: --port, --conns and --interval-ms must be non-zero");
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let interval = Duration::from_millis(interval_ms);

    // Phase marks: the moments phases 1 and 2 began.
    let marks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (marks, stop) = (marks.clone(), stop.clone());
        std::thread::Builder::new()
            .name("healthy-stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with("phase ") {
                        marks.lock().unwrap().push(Instant::now());
                    }
                }
                stop.store(true, Ordering::SeqCst);
            })?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let kind = PingKind::new(o.ws);
    let stats = local.block_on(&rt, healthy(addr, conns, interval, kind, marks, stop))?;
    for p in 0..3 {
        let (d, r) = (&stats.due[p], &stats.raw[p]);
        let q = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                f64::NAN
            } else {
                h.value_at_quantile(q) as f64
            }
        };
        println!(
            "phase{p} {} {} {} {} {} {} {}",
            d.len(),
            q(d, 0.5),
            q(d, 0.99),
            if d.is_empty() {
                f64::NAN
            } else {
                d.max() as f64
            },
            q(r, 0.5),
            q(r, 0.99),
            stats.lost[p]
        );
    }
    if let Some(e) = &stats.first_error {
        eprintln!("healthy clients: first loss: {e}");
    }
    Ok(())
}

fn latency_histogram() -> Histogram<u64> {
    // 1 µs .. 120 s, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

async fn healthy(
    addr: SocketAddr,
    conns: usize,
    interval: Duration,
    unit: PingKind,
    marks: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
) -> Result<HealthyStats> {
    let mut streams = Vec::with_capacity(conns);
    for id in 0..conns {
        let mut s = healthy_connect(addr, unit)
            .await
            .with_context(|| format!("healthy connection {id}"))?;
        ping(&mut s, unit, id as u32, 0, &mut [0u8; 4096])
            .await
            .with_context(|| format!("healthy connection {id}: first round trip"))?;
        streams.push(s);
    }
    println!("ready {conns}");
    let stats = Rc::new(RefCell::new(HealthyStats {
        due: (0..3).map(|_| latency_histogram()).collect(),
        raw: (0..3).map(|_| latency_histogram()).collect(),
        lost: vec![0; 3],
        first_error: None,
    }));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (id, s) in streams.into_iter().enumerate() {
        // Spread the connections' slots over the interval.
        let offset = interval * id as u32 / conns as u32;
        tasks.push(tokio::task::spawn_local(healthy_conn(
            addr,
            s,
            unit,
            id as u32,
            start + offset,
            interval,
            marks.clone(),
            stop.clone(),
            stats.clone(),
        )));
    }
    for t in tasks {
        t.await?;
    }
    Rc::try_unwrap(stats)
        .map_err(|_| anyhow!("healthy stats still shared"))
        .map(RefCell::into_inner)
}

/// What a healthy ping is on the wire.
#[derive(Debug, Clone, Copy)]
enum PingKind {
    /// A Text line of [`PING`] bytes, echoed as it is.
    Text(Unit),
    /// A masked WebSocket text frame of [`PING`] payload bytes, on an
    /// upgraded connection; echoed unmasked.
    Ws(WsUnit),
}

/// Longest request or reply of a [`PingKind`].
const MAX_PING_WIRE: usize = 64;

impl PingKind {
    fn new(ws: bool) -> PingKind {
        if ws {
            PingKind::Ws(WsUnit::text(PING))
        } else {
            PingKind::Text(Unit::text(PING))
        }
    }

    /// Writes ping `seq` of connection `id` into `out` and the echo it
    /// must get into `want`; returns their lengths.
    fn fill(&self, id: u32, seq: u64, out: &mut [u8], want: &mut [u8]) -> (usize, usize) {
        match self {
            PingKind::Text(u) => {
                u.fill(id, seq, &mut out[..PING]);
                want[..PING].copy_from_slice(&out[..PING]);
                (PING, PING)
            }
            PingKind::Ws(u) => {
                let (req, rep) = (u.request_size(), u.reply_size());
                u.fill_request(id, seq, &mut out[..req]);
                u.fill_reply(id, seq, &mut want[..rep]);
                (req, rep)
            }
        }
    }
}

/// Connects (and upgrades, for WebSocket pings), within [`REPLY_TIMEOUT`].
async fn healthy_connect(addr: SocketAddr, kind: PingKind) -> Result<TcpStream> {
    let connect = async {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        if let PingKind::Ws(_) = kind {
            let up = upgrade(&mut s, &addr.to_string(), PATH, false).await?;
            if !up.leftover.is_empty() {
                bail!("the server sent frames before any ping");
            }
        }
        Ok(s)
    };
    tokio::time::timeout(REPLY_TIMEOUT, connect)
        .await
        .map_err(|_| anyhow!("connect timed out"))?
}

/// One ping: writes message `seq` and reads back exactly its echo.
async fn ping(s: &mut TcpStream, unit: PingKind, id: u32, seq: u64, buf: &mut [u8]) -> Result<()> {
    let (mut out, mut want) = ([0u8; MAX_PING_WIRE], [0u8; MAX_PING_WIRE]);
    let (req, rep) = unit.fill(id, seq, &mut out, &mut want);
    s.write_all(&out[..req]).await?;
    let mut got = 0;
    while got < rep {
        let n = s.read(&mut buf[got..]).await?;
        if n == 0 {
            bail!("server closed the connection");
        }
        got += n;
    }
    if got != rep || buf[..rep] != want[..rep] {
        bail!("reply differs from the ping");
    }
    Ok(())
}

/// Where a ping's latency is measured from: its due time if the previous
/// ping ended after that (the ping was held back by a late reply), else
/// its write (then any lateness is the client's own, such as a wake-up
/// from `sleep_until` a timer tick late, not the server's).
fn latency_start(due: Instant, previous_done: Instant, sent: Instant) -> Instant {
    if previous_done > due {
        due
    } else {
        sent
    }
}

#[allow(clippy::too_many_arguments)]
async fn healthy_conn(
    addr: SocketAddr,
    s: TcpStream,
    unit: PingKind,
    id: u32,
    first: Instant,
    interval: Duration,
    marks: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    stats: Rc<RefCell<HealthyStats>>,
) {
    let mut conn = Some(s);
    let mut buf = vec![0u8; 4096];
    let mut due = first;
    let mut seq = 0u64;
    // When the previous ping ended (reply or loss).
    let mut last_done = Instant::now();
    let phase_of = |t: Instant| {
        marks
            .lock()
            .unwrap()
            .iter()
            .filter(|m| **m <= t)
            .count()
            .min(2)
    };
    while !stop.load(Ordering::Relaxed) {
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let this = due;
        due += interval;
        seq += 1;
        let outcome = async {
            if conn.is_none() {
                conn = Some(healthy_connect(addr, unit).await.context("reconnecting")?);
            }
            let s = conn.as_mut().expect("connected above");
            let sent = Instant::now();
            tokio::time::timeout(REPLY_TIMEOUT, ping(s, unit, id, seq, &mut buf))
                .await
                .map_err(|_| anyhow!("no reply within {REPLY_TIMEOUT:?}"))??;
            Ok::<_, anyhow::Error>(sent)
        }
        .await;
        let now = Instant::now();
        let p = phase_of(this);
        let mut st = stats.borrow_mut();
        match outcome {
            Ok(sent) => {
                let us = |d: Duration| (d.as_micros() as u64).max(1);
                let from = latency_start(this, last_done, sent);
                st.due[p].saturating_record(us(now - from));
                st.raw[p].saturating_record(us(now - sent));
            }
            Err(e) => {
                st.lost[p] += 1;
                st.first_error
                    .get_or_insert_with(|| format!("connection {id}, ping {seq}: {e:#}"));
                conn = None;
            }
        }
        last_done = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn healthy_arguments_round_trip() {
        let o = HealthyOpts {
            port: 9,
            conns: 3,
            interval_ms: 7,
            ws: true,
            placement: Placement {
                cpu: Some(1),
                nice: Some(-10),
            },
        };
        let args = o.to_args();
        assert_eq!(HealthyOpts::try_parse_from(&args).unwrap(), o);
        assert!(
            HealthyOpts::try_parse_from(["healthy-child"]).is_err(),
            "--port needed"
        );
    }

    /// A WebSocket ping is a masked text frame that lubdub's server
    /// decodes, and its expected echo is what lubdub's encoder writes back;
    /// a Text ping is a line that is its own echo.
    #[test]
    fn pings_and_their_echoes_are_what_the_servers_read_and_write() {
        use crate::load::ws_codec::lubdub_side::{decode_all, server_frames};
        use lubdub::ws::Message;

        let (mut out, mut want) = ([0u8; MAX_PING_WIRE], [0u8; MAX_PING_WIRE]);
        let (req, rep) = PingKind::new(true).fill(3, 9, &mut out, &mut want);
        assert_eq!((req, rep), (2 + 4 + PING, 2 + PING));
        assert_eq!(out[1] & 0x80, 0x80, "masked");
        let mut server = server_frames(false);
        let msgs = decode_all(&mut server, &out[..req]);
        let [Message::Text(t)] = &msgs[..] else {
            panic!("{msgs:?}")
        };
        assert!(t.starts_with("c00000003s0000000000000009"));
        assert_eq!(server.encode(&msgs[0]).unwrap(), &want[..rep]);

        let (req, rep) = PingKind::new(false).fill(3, 9, &mut out, &mut want);
        assert_eq!((req, rep), (PING, PING));
        assert_eq!(out[..req], want[..rep]);
        assert_eq!(out[PING - 1], b'\n');
    }

    #[test]
    fn a_held_back_ping_counts_from_its_due_time_an_on_time_one_from_its_write() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // Previous reply at 25 ms, this ping due at 10 ms, written at 25 ms.
        assert_eq!(latency_start(ms(10), ms(25), ms(25)), ms(10));
        // Previous reply at 5 ms, due at 10 ms, written late at 11 ms
        // (the client's timer): counted from the write.
        assert_eq!(latency_start(ms(10), ms(5), ms(11)), ms(11));
    }
}
