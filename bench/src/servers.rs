//! The servers under test, each run in its own child process:
//! `lubdub-bench serve <lubdub|tokio> <text|frame> [--count N] [--cpu C] [--report-conns] [--sweep N] [--attack]`.
//!
//! The child prints `nofile <soft-before> <soft> <hard>` and then
//! `port <port>` on stdout, and with `--report-conns` a `conns <n>` line
//! every 50 ms. With `--sweep N` (text only) the server also keeps a
//! heartbeat registry of its connections (lubdub: the heartbeat plugin;
//! tokio: per-connection state in maps) and, once it holds N connections,
//! times sweep passes over them and prints a `sweep ...` line (see
//! `sweep.rs`). With `--attack` (text only) the lubdub server is the
//! `attack` scenario's (see `attack.rs`); the tokio peer is the same as
//! without it. It runs until the runner kills it.
//!
//! Both implementations do the same thing: decode a message, hand an owned
//! copy to user code, encode it back, and write the replies of one read
//! batch with one write. TCP_NODELAY is set on accepted sockets by both.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt, StreamExt};
use lubdub::{Protocol, Text, Worker, WorkerHandle};
use lubdub_frame::Frame;
use tokio::net::TcpListener;
use tokio_util::codec::{Decoder, Encoder, Framed, LengthDelimitedCodec, LinesCodec};

use crate::sweep::{self, PeerRegistry};
use crate::sys;

/// Largest message either side accepts: lubdub's default maximum package
/// size (10 MiB), applied to the tokio codecs too.
pub const MAX_MESSAGE: usize = 10 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Lubdub,
    Tokio,
}

impl Impl {
    pub fn name(self) -> &'static str {
        match self {
            Impl::Lubdub => "lubdub",
            Impl::Tokio => "tokio",
        }
    }

    pub fn parse(s: &str) -> Result<Impl> {
        match s {
            "lubdub" => Ok(Impl::Lubdub),
            "tokio" => Ok(Impl::Tokio),
            _ => bail!("unknown implementation {s:?} (lubdub, tokio)"),
        }
    }
}

/// Wire protocol of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Workerman Text: `\n`-terminated lines. tokio peer: `LinesCodec`.
    Text,
    /// Workerman Frame: u32 BE length counting itself, then the payload.
    /// tokio peer: [`tokio_frame_codec`].
    Frame,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Text => "text",
            Proto::Frame => "frame",
        }
    }

    pub fn parse(s: &str) -> Result<Proto> {
        match s {
            "text" => Ok(Proto::Text),
            "frame" => Ok(Proto::Frame),
            _ => bail!("unknown protocol {s:?} (text, frame)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServeOpts {
    pub imp: Impl,
    pub proto: Proto,
    /// Event-loop threads (lubdub `count`; tokio: 1 = current_thread
    /// runtime, more = multi_thread runtime with that many workers).
    pub count: usize,
    /// CPU to pin the whole server process to.
    pub cpu: Option<usize>,
    /// Print `conns <n>` every 50 ms.
    pub report_conns: bool,
    /// Keep a heartbeat registry and time sweeps over this many connections.
    pub sweep: Option<usize>,
    /// The `attack` scenario's server: lubdub configured by
    /// [`crate::attack::lubdub_attack_worker`]; the tokio peer unchanged.
    pub attack: bool,
}

impl ServeOpts {
    /// The command line that makes a child run this server.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "serve".to_string(),
            self.imp.name().into(),
            self.proto.name().into(),
            "--count".into(),
            self.count.to_string(),
        ];
        if let Some(cpu) = self.cpu {
            a.push("--cpu".into());
            a.push(cpu.to_string());
        }
        if self.report_conns {
            a.push("--report-conns".into());
        }
        if let Some(n) = self.sweep {
            a.push("--sweep".into());
            a.push(n.to_string());
        }
        if self.attack {
            a.push("--attack".into());
        }
        a
    }

    pub fn from_args(args: &[String]) -> Result<ServeOpts> {
        let [imp, proto, rest @ ..] = args else {
            bail!(
                "usage: serve <lubdub|tokio> <text|frame> [--count N] [--cpu C] [--report-conns] \
                 [--sweep N] [--attack]"
            );
        };
        let mut o = ServeOpts {
            imp: Impl::parse(imp)?,
            proto: Proto::parse(proto)?,
            count: 1,
            cpu: None,
            report_conns: false,
            sweep: None,
            attack: false,
        };
        let mut it = rest.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--count" => o.count = crate::next_num(&mut it, a)?,
                "--cpu" => o.cpu = Some(crate::next_num(&mut it, a)?),
                "--report-conns" => o.report_conns = true,
                "--sweep" => o.sweep = Some(crate::next_num(&mut it, a)?),
                "--attack" => o.attack = true,
                _ => bail!("serve: unknown argument {a:?}"),
            }
        }
        if (o.sweep.is_some() || o.attack) && o.proto != Proto::Text {
            bail!("serve: --sweep and --attack need the text protocol");
        }
        if o.sweep.is_some() && o.attack {
            bail!("serve: --sweep and --attack do not go together");
        }
        Ok(o)
    }
}

/// `LUBDUB_BENCH_BUSY_TIMERS=N` (inherited from the runner): each event
/// loop of a lubdub text server runs N periodic 1 ms timers, so timers fire
/// all the time while a scenario measures (docs/benchmarks.md, "Timers on
/// the loop's own clock"). Unset: no timers.
fn install_busy_timers(w: &mut Worker<Text>) {
    let n: usize = std::env::var("LUBDUB_BENCH_BUSY_TIMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if n == 0 {
        return;
    }
    w.on_worker_start(move |_| {
        for _ in 0..n {
            let mut fired = 0u64;
            let _ = lubdub::Timer::add(std::time::Duration::from_millis(1), move || {
                fired = std::hint::black_box(fired + 1);
            });
        }
    });
}

/// Entry point of a server child.
pub fn serve(o: &ServeOpts) -> Result<()> {
    sys::die_with_parent();
    let lim = sys::raise_fd_limit()?;
    println!("nofile {} {} {}", lim.soft_before, lim.soft, lim.hard);
    if let Some(cpu) = o.cpu {
        // Before any thread is created: they all inherit the mask.
        sys::pin_current_thread(cpu)?;
    }
    match (o.imp, o.proto) {
        (Impl::Lubdub, Proto::Text) if o.attack => crate::attack::serve_lubdub(),
        (Impl::Lubdub, Proto::Text) => {
            let mut w = Worker::<Text>::new("text://127.0.0.1:0")?;
            w.count(o.count).name("bench");
            w.on_message(|conn, line: String| {
                let _ = conn.send(&line);
            });
            if let Some(n) = o.sweep {
                sweep::install_lubdub(&mut w, n);
            }
            install_busy_timers(&mut w);
            run_lubdub(&w.start()?, o.report_conns)
        }
        (Impl::Lubdub, Proto::Frame) => {
            let mut w = Worker::<Frame>::new("frame://127.0.0.1:0")?;
            w.count(o.count).name("bench");
            w.on_message(|conn, payload: Vec<u8>| {
                let _ = conn.send(&payload);
            });
            run_lubdub(&w.start()?, o.report_conns)
        }
        (Impl::Tokio, proto) => run_tokio(proto, o.count, o.report_conns, o.sweep),
    }
}

pub(crate) fn run_lubdub<P: Protocol>(h: &WorkerHandle<P>, report_conns: bool) -> Result<()> {
    println!("port {}", h.local_addr().port());
    if report_conns {
        loop {
            std::thread::sleep(Duration::from_millis(50));
            println!("conns {}", h.connections().len());
        }
    }
    h.wait();
    Ok(())
}

/// The tokio codec for Workerman's Frame: a 4-byte big-endian length that
/// counts the header itself (hence the -4 adjustment), header stripped
/// from decoded frames (`num_skip(4)`), and on encode written as payload
/// length + 4. Byte-exact with `lubdub_frame::Frame` (see the tests).
pub fn tokio_frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_offset(0)
        .length_field_length(4)
        .big_endian()
        .length_adjustment(-4)
        .num_skip(4)
        .max_frame_length(MAX_MESSAGE - 4)
        .new_codec()
}

fn run_tokio(proto: Proto, count: usize, report_conns: bool, sweep: Option<usize>) -> Result<()> {
    let rt = if count <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(count)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("port {}", listener.local_addr()?.port());
        let live = report_conns.then(|| Arc::new(AtomicUsize::new(0)));
        if let Some(live) = live.clone() {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    println!("conns {}", live.load(Ordering::Relaxed));
                }
            });
        }
        let registry = sweep.map(|n| {
            let reg = Arc::new(PeerRegistry::default());
            tokio::spawn(sweep::tokio_sweeper(reg.clone(), n));
            reg
        });
        let mut warned = false;
        loop {
            let (sock, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    if !warned {
                        eprintln!("tokio server: accept failed: {e}; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            let live = live.clone();
            let registry = registry.clone();
            tokio::spawn(async move {
                if let Some(l) = &live {
                    l.fetch_add(1, Ordering::Relaxed);
                }
                match proto {
                    Proto::Text => {
                        let codec = LinesCodec::new_with_max_length(MAX_MESSAGE);
                        match &registry {
                            None => echo(&mut Framed::new(sock, codec), |line: String| line).await,
                            Some(reg) => {
                                // What a tokio user's heartbeat keeps: the
                                // time of the last line, in a shared map.
                                let (id, state) = reg.register();
                                let mut framed = Framed::new(sock, codec);
                                echo(&mut framed, |line: String| {
                                    state.touch();
                                    line
                                })
                                .await;
                                reg.unregister(id);
                            }
                        }
                    }
                    Proto::Frame => {
                        echo(
                            &mut Framed::new(sock, tokio_frame_codec()),
                            BytesMut::freeze,
                        )
                        .await
                    }
                }
                if let Some(l) = &live {
                    l.fetch_sub(1, Ordering::Relaxed);
                }
            });
        }
    })
}

/// The echo a tokio user writes: take each decoded message and send it
/// back, feeding every message that is already readable and flushing once
/// the stream has nothing more ready (what `StreamExt::forward` does), so a
/// batch of pipelined requests is answered with one write, as lubdub does.
/// Over TCP, or TLS (`tls/servers.rs`).
pub(crate) async fn echo<T, C, Out>(framed: &mut Framed<T, C>, reply: impl Fn(C::Item) -> Out)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    C: Decoder + Encoder<Out>,
{
    while let Some(Ok(msg)) = framed.next().await {
        if framed.feed(reply(msg)).await.is_err() {
            return;
        }
        loop {
            match framed.next().now_or_never() {
                Some(Some(Ok(msg))) => {
                    if framed.feed(reply(msg)).await.is_err() {
                        return;
                    }
                }
                Some(_) => {
                    let _ = framed.flush().await;
                    return;
                }
                None => break,
            }
        }
        if framed.flush().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use lubdub::protocol::WireBuf;
    use lubdub::Decoded;

    /// The tokio peer's codec and lubdub's Frame put identical bytes on the
    /// wire and decode each other's output.
    #[test]
    fn tokio_frame_codec_is_byte_exact_with_workerman_frame() {
        for payload in [&b""[..], b"hello", &[7u8; 4096][..]] {
            let mut ours = Vec::new();
            Frame::new().encode(&mut (), payload, &mut ours).unwrap();
            assert_eq!(&ours[..4], &((payload.len() + 4) as u32).to_be_bytes());

            let mut theirs = BytesMut::new();
            tokio_frame_codec()
                .encode(Bytes::copy_from_slice(payload), &mut theirs)
                .unwrap();
            assert_eq!(&theirs[..], &ours[..], "same bytes on the wire");

            let mut buf = BytesMut::from(&ours[..]);
            let got = tokio_frame_codec().decode(&mut buf).unwrap().unwrap();
            assert_eq!(&got[..], payload);
            assert!(buf.is_empty());

            match WireBuf::default()
                .decode(&mut Frame::new(), &theirs)
                .unwrap()
            {
                Decoded::Message { msg, consumed } => {
                    assert_eq!(msg, payload);
                    assert_eq!(consumed, payload.len() + 4);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
