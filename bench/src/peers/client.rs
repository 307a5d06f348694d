//! The client side: `lubdub::Client` against the tokio client a Rust user
//! would write instead, both driving the same server.
//!
//! `lubdub-bench client-child <lubdub|tokio> --port P [--conns N] [--depth D]
//! [--warmup-ms W] [--measure-ms M] [--cpu C]` opens `N` text connections
//! to 127.0.0.1:P from one thread, keeps `D` 32-byte lines in flight on
//! each (a new line for every reply), measures the replies completed in
//! the window and its own CPU time, then stops sending, waits for every
//! reply still owed and prints `result <replies> <seconds> <cpu seconds>`.
//!
//! The per-message work is the same on both sides: the protocol decodes a
//! line into a `String` and hands it to user code, which checks its length
//! (and, one reply in [`SAMPLE`], its content against what was sent), then
//! writes the next line from a stack buffer.
//!
//! * lubdub: one [`EventLoop`] running `N` [`Client::connect`] sessions;
//!   `on_message` replies with `conn.send(line)`; sends of one loop turn
//!   leave in one write.
//! * tokio: a current_thread runtime, one task per connection holding a
//!   `Framed<TcpStream, LinesCodec>`; it feeds a line per reply and flushes
//!   once nothing more is ready, like the echo peer (`peers/serve.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures_util::{FutureExt, SinkExt, StreamExt};
use lubdub::{Client, EventLoop, LoopHandle, Text, Timer};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LinesCodec};

use crate::payload::{fill_pattern, SAMPLE};
use crate::peers::serve::MAX_MESSAGE;
use crate::report::Impl;
use crate::sys;

/// Bytes on the wire per line, `\n` included.
const LINE: usize = 32;
/// Longest wait for the replies still owed after the window.
const DRAIN: Duration = Duration::from_secs(10);

/// The command line of a `client-child`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
pub struct ClientOpts {
    /// lubdub's `Client`, or the tokio client.
    #[arg(value_enum)]
    pub imp: Impl,
    /// The server's port on 127.0.0.1.
    #[arg(long)]
    pub port: u16,
    /// Connections.
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Lines in flight per connection.
    #[arg(long, default_value_t = 16)]
    pub depth: usize,
    /// Warm-up before the window, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub warmup_ms: u64,
    /// The measured window, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub measure_ms: u64,
    /// CPU to pin the process to.
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
}

impl ClientOpts {
    /// The command line that makes a child run this client.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "client-child".to_string(),
            self.imp.name().to_string(),
            "--port".into(),
            self.port.to_string(),
            "--conns".into(),
            self.conns.to_string(),
            "--depth".into(),
            self.depth.to_string(),
            "--warmup-ms".into(),
            self.warmup_ms.to_string(),
            "--measure-ms".into(),
            self.measure_ms.to_string(),
        ];
        if let Some(cpu) = self.cpu {
            a.extend(["--cpu".into(), cpu.to_string()]);
        }
        a
    }

    fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }

    fn measure(&self) -> Duration {
        Duration::from_millis(self.measure_ms)
    }
}

/// What a client child reports.
#[derive(Debug, Clone, Copy)]
pub struct ClientResult {
    /// Replies completed within the window.
    pub replies: u64,
    /// The window's length.
    pub secs: f64,
    /// CPU time of the client process within the window.
    pub cpu_secs: f64,
}

/// Entry point of a client child.
pub fn child_main(o: &ClientOpts) -> Result<()> {
    sys::die_with_parent();
    if o.port == 0 || o.conns == 0 || o.depth == 0 {
        bail!("client: --port, --conns and --depth must be non-zero");
    }
    if let Some(cpu) = o.cpu {
        sys::pin_current_thread(cpu)?;
    }
    let r = match o.imp {
        Impl::Lubdub => lubdub_client(o),
        Impl::Tokio => tokio_client(o),
    };
    match r {
        Ok(r) => {
            println!("result {} {} {}", r.replies, r.secs, r.cpu_secs);
            Ok(())
        }
        Err(e) => {
            println!("error {e:#}");
            Err(e)
        }
    }
}

/// The window's start and end marks and the run's outcome, shared by the
/// connections of one run.
#[derive(Default)]
struct Run {
    completed: AtomicU64,
    stop: AtomicBool,
    /// Connections that got every reply they were owed after `stop`.
    drained: AtomicUsize,
    marks: Mutex<Vec<(u64, Instant, Duration)>>,
    failure: Mutex<Option<String>>,
}

impl Run {
    fn mark(&self) {
        let m = (
            self.completed.load(Ordering::Relaxed),
            Instant::now(),
            sys::own_cpu(),
        );
        self.marks.lock().unwrap().push(m);
    }

    fn fail(&self, why: String) {
        self.failure.lock().unwrap().get_or_insert(why);
    }

    fn result(&self) -> Result<ClientResult> {
        if let Some(f) = self.failure.lock().unwrap().take() {
            bail!(f);
        }
        let marks = self.marks.lock().unwrap();
        let [(c0, t0, u0), (c1, t1, u1)] = marks[..] else {
            bail!("the window did not complete");
        };
        Ok(ClientResult {
            replies: c1 - c0,
            secs: (t1 - t0).as_secs_f64(),
            cpu_secs: (u1 - u0).as_secs_f64(),
        })
    }
}

/// Checks reply `seq` of connection `id`: its length, and its content one
/// reply in [`SAMPLE`].
fn check_reply(id: u32, seq: u64, line: &str, scratch: &mut [u8; LINE]) -> Result<()> {
    if line.len() != LINE - 1 {
        bail!(
            "connection {id}: reply {seq} is {} bytes, not {}",
            line.len(),
            LINE - 1
        );
    }
    if seq.is_multiple_of(SAMPLE) {
        fill_pattern(id, seq, &mut scratch[..LINE - 1]);
        if line.as_bytes() != &scratch[..LINE - 1] {
            bail!("connection {id}: reply {seq} differs from what was sent: {line:?}");
        }
    }
    Ok(())
}

/// Line `seq` of connection `id` without its `\n`, in `buf`.
fn line(id: u32, seq: u64, buf: &mut [u8; LINE]) -> &str {
    fill_pattern(id, seq, &mut buf[..LINE - 1]);
    // The pattern is ASCII.
    std::str::from_utf8(&buf[..LINE - 1]).expect("ASCII line")
}

/// Per-connection counters of the lubdub client, indexed by the order of
/// `connect` (the connections' ids are consecutive).
#[derive(Default)]
struct ConnCounters {
    sent: AtomicU64,
    recv: AtomicU64,
}

fn lubdub_client(o: &ClientOpts) -> Result<ClientResult> {
    let run = Arc::new(Run::default());
    let counters: Arc<Vec<ConnCounters>> =
        Arc::new((0..o.conns).map(|_| ConnCounters::default()).collect());
    let base = Arc::new(AtomicU64::new(0));
    let handle: Arc<OnceLock<LoopHandle>> = Arc::new(OnceLock::new());
    let connected = Arc::new(AtomicUsize::new(0));
    let (conns, depth, warmup, measure) = (o.conns, o.depth, o.warmup(), o.measure());

    let mut client = Client::<Text>::new(format!("text://127.0.0.1:{}", o.port).as_str())?;
    client.connect_timeout(Duration::from_secs(10));
    {
        let (run, counters, base, handle) =
            (run.clone(), counters.clone(), base.clone(), handle.clone());
        client.on_connect(move |conn| {
            let i = (conn.id() - base.load(Ordering::Relaxed)) as usize;
            let mut buf = [0u8; LINE];
            for seq in 0..depth as u64 {
                let _ = conn.send(line(i as u32, seq, &mut buf));
            }
            counters[i].sent.store(depth as u64, Ordering::Relaxed);
            if connected.fetch_add(1, Ordering::Relaxed) + 1 == conns {
                // Everyone is up: warm up, then measure.
                let (r0, r1, h) = (run.clone(), run.clone(), handle.clone());
                let start = Timer::once(warmup, move || r0.mark());
                let end = Timer::once(warmup + measure, move || {
                    r1.mark();
                    r1.stop.store(true, Ordering::Relaxed);
                });
                let (r2, h2) = (run.clone(), handle.clone());
                let deadline = Timer::once(warmup + measure + DRAIN, move || {
                    r2.fail(format!(
                        "{} of {conns} connection(s) still owed replies {DRAIN:?} after the window",
                        conns - r2.drained.load(Ordering::Relaxed)
                    ));
                    if let Some(h) = h2.get() {
                        h.stop();
                    }
                });
                if start.is_err() || end.is_err() || deadline.is_err() {
                    run.fail("cannot add the window timers".into());
                    if let Some(h) = h.get() {
                        h.stop();
                    }
                }
            }
        });
    }
    {
        let (run, counters, base, handle) =
            (run.clone(), counters.clone(), base.clone(), handle.clone());
        client.on_message(move |conn, reply| {
            let i = (conn.id() - base.load(Ordering::Relaxed)) as usize;
            let c = &counters[i];
            let seq = c.recv.load(Ordering::Relaxed);
            c.recv.store(seq + 1, Ordering::Relaxed);
            let mut buf = [0u8; LINE];
            if let Err(e) = check_reply(i as u32, seq, &reply, &mut buf) {
                run.fail(e.to_string());
                if let Some(h) = handle.get() {
                    h.stop();
                }
                return;
            }
            run.completed.fetch_add(1, Ordering::Relaxed);
            let sent = c.sent.load(Ordering::Relaxed);
            if !run.stop.load(Ordering::Relaxed) {
                let _ = conn.send(line(i as u32, sent, &mut buf));
                c.sent.store(sent + 1, Ordering::Relaxed);
            } else if seq + 1 == sent && run.drained.fetch_add(1, Ordering::Relaxed) + 1 == conns {
                if let Some(h) = handle.get() {
                    h.stop();
                }
            }
        });
    }
    {
        let (run, handle) = (run.clone(), handle.clone());
        client.on_close(move |conn, reason| {
            if run.drained.load(Ordering::Relaxed) < conns {
                run.fail(format!("connection {} closed: {reason}", conn.id()));
                if let Some(h) = handle.get() {
                    h.stop();
                }
            }
        });
    }
    {
        let run = run.clone();
        client.on_error(move |conn, err| run.fail(format!("connection {}: {err}", conn.id())));
    }

    let setup_run = run.clone();
    EventLoop::run(move |h| {
        let _ = handle.set(h.clone());
        for k in 0..conns {
            match client.connect() {
                Ok(conn) if k == 0 => base.store(conn.id(), Ordering::Relaxed),
                Ok(conn) if conn.id() == base.load(Ordering::Relaxed) + k as u64 => {}
                Ok(_) => {
                    setup_run.fail("client connection ids are not consecutive".into());
                    h.stop();
                    return;
                }
                Err(e) => {
                    setup_run.fail(format!("connect: {e}"));
                    h.stop();
                    return;
                }
            }
        }
    });
    run.result()
}

fn tokio_client(o: &ClientOpts) -> Result<ClientResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (port, conns, depth, warmup, measure) = (o.port, o.conns, o.depth, o.warmup(), o.measure());
    rt.block_on(async move {
        let run = Arc::new(Run::default());
        let mut framed = Vec::with_capacity(conns);
        for _ in 0..conns {
            let s = TcpStream::connect(("127.0.0.1", port)).await?;
            s.set_nodelay(true)?;
            framed.push(Framed::new(s, LinesCodec::new_with_max_length(MAX_MESSAGE)));
        }
        let mut set = tokio::task::JoinSet::new();
        for (i, f) in framed.into_iter().enumerate() {
            set.spawn(tokio_conn(f, i as u32, depth, run.clone()));
        }
        tokio::time::sleep(warmup).await;
        run.mark();
        tokio::time::sleep(measure).await;
        run.mark();
        run.stop.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + DRAIN;
        while !set.is_empty() {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Err(_) => bail!(
                    "{} connection(s) still owed replies {DRAIN:?} after the window",
                    set.len()
                ),
                Ok(Some(r)) => r??,
                Ok(None) => break,
            }
        }
        run.result()
    })
}

/// One tokio connection: `depth` lines out, then a line per reply. Like the
/// echo peer (`peers/serve.rs`), it handles every reply that is already
/// decoded or readable and flushes once nothing more is ready, so a batch
/// of replies is answered with one write.
async fn tokio_conn(
    mut f: Framed<TcpStream, LinesCodec>,
    id: u32,
    depth: usize,
    run: Arc<Run>,
) -> Result<()> {
    let mut buf = [0u8; LINE];
    for seq in 0..depth as u64 {
        f.feed(line(id, seq, &mut buf)).await?;
    }
    SinkExt::<&str>::flush(&mut f).await?;
    let (mut sent, mut recv) = (depth as u64, 0u64);
    let closed = || anyhow!("connection {id}: server closed the connection");
    let mut next = f.next().await;
    loop {
        let reply = next.ok_or_else(closed)??;
        check_reply(id, recv, &reply, &mut buf)?;
        recv += 1;
        run.completed.fetch_add(1, Ordering::Relaxed);
        if !run.stop.load(Ordering::Relaxed) {
            f.feed(line(id, sent, &mut buf)).await?;
            sent += 1;
        } else if recv == sent {
            SinkExt::<&str>::flush(&mut f).await?;
            return Ok(());
        }
        next = match f.next().now_or_never() {
            Some(ready) => ready,
            None => {
                SinkExt::<&str>::flush(&mut f).await?;
                f.next().await
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn client_arguments_round_trip() {
        let o = ClientOpts {
            imp: Impl::Lubdub,
            port: 9,
            conns: 3,
            depth: 2,
            warmup_ms: 10,
            measure_ms: 20,
            cpu: None,
        };
        assert_eq!(ClientOpts::try_parse_from(o.to_args()).unwrap(), o);
    }

    /// A reply passes only with the right length and, one in `SAMPLE`, the
    /// bytes that were sent for its position.
    #[test]
    fn replies_are_checked_for_length_and_sampled_content() {
        let mut buf = [0u8; LINE];
        let mut scratch = [0u8; LINE];
        let good = line(3, SAMPLE, &mut buf).to_string();
        assert!(check_reply(3, SAMPLE, &good, &mut scratch).is_ok());
        // The line of another position, where content is compared.
        assert!(check_reply(3, 0, &good, &mut scratch).is_err());
        // Where content is not compared, the length still is.
        assert!(check_reply(3, 1, &good, &mut scratch).is_ok());
        assert!(check_reply(3, 1, &good[1..], &mut scratch).is_err());
    }
}
