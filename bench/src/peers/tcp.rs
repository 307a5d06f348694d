//! The TCP servers under test, each run in its own child process:
//! `lubdub-bench serve <lubdub|tokio> <text|frame> [--count N] [--cpu C] [--report-conns] [--sweep N] [--attack]`.
//!
//! The child prints `nofile <soft-before> <soft> <hard>` and then
//! `port <port>` on stdout, and with `--report-conns` a `conns <n>` line
//! every 50 ms. With `--sweep N` (text only) the server also keeps a
//! heartbeat registry of its connections (lubdub: the heartbeat plugin;
//! tokio: per-connection state in maps) and, once it holds N connections,
//! times sweep passes over them and prints a `sweep ...` line (see
//! `peers/sweep.rs`). With `--attack` (text only) the lubdub server is the
//! `attack` scenario's ([`lubdub_attack_worker`]); the tokio peer is the
//! same as without it. It runs until the runner kills it.
//!
//! Both implementations do the same thing: decode a message, hand an owned
//! copy to user code, encode it back, and write the replies of one read
//! batch with one write. TCP_NODELAY is set on accepted sockets by both.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::BytesMut;
use lubdub::{Text, Worker};
use lubdub_frame::Frame;
use tokio_util::codec::{Framed, LengthDelimitedCodec, LinesCodec};

use crate::child::Server;
use crate::peers::serve::{
    accept_each, echo_framed, run_attack_server, run_lubdub, run_tokio_peer, start_server_child,
    MAX_MESSAGE,
};
use crate::peers::sweep::{self, PeerRegistry};
use crate::report::Impl;

/// Wire protocol of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// Workerman Text: `\n`-terminated lines. tokio peer: `LinesCodec`.
    Text,
    /// Workerman Frame: u32 BE length counting itself, then the payload.
    /// tokio peer: `tokio_frame_codec`.
    Frame,
}

impl Proto {
    /// The name on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Text => "text",
            Proto::Frame => "frame",
        }
    }
}

/// The command line of a `serve` child.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
pub struct ServeOpts {
    /// lubdub's server, or the tokio peer.
    #[arg(value_enum)]
    pub imp: Impl,
    /// The wire protocol.
    #[arg(value_enum)]
    pub proto: Proto,
    /// Event-loop threads (lubdub `count`; tokio: 1 = current_thread
    /// runtime, more = multi_thread runtime with that many workers).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// CPU to pin the whole server process to.
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
    /// Print `conns <n>` every 50 ms.
    #[arg(long)]
    pub report_conns: bool,
    /// Keep a heartbeat registry and time sweeps over this many
    /// connections (text only).
    #[arg(long, value_name = "N", conflicts_with = "attack")]
    pub sweep: Option<usize>,
    /// The `attack` scenario's server: lubdub configured by
    /// `lubdub_attack_worker`; the tokio peer unchanged (text only).
    #[arg(long)]
    pub attack: bool,
}

impl ServeOpts {
    /// A plain echo server: no conns reports, no sweep, not the attack's.
    pub fn echo(imp: Impl, proto: Proto, count: usize, cpu: Option<usize>) -> ServeOpts {
        ServeOpts {
            imp,
            proto,
            count,
            cpu,
            report_conns: false,
            sweep: None,
            attack: false,
        }
    }

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

    /// Starts this server in a child process.
    pub fn start(&self) -> Result<Server> {
        Server::start(&self.to_args())
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

/// Entry point of a `serve` child.
pub fn serve(o: &ServeOpts) -> Result<()> {
    if (o.sweep.is_some() || o.attack) && o.proto != Proto::Text {
        bail!("serve: --sweep and --attack need the text protocol");
    }
    start_server_child(o.cpu)?;
    match (o.imp, o.proto) {
        (Impl::Lubdub, Proto::Text) if o.attack => serve_attack(),
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

fn run_tokio(proto: Proto, count: usize, report_conns: bool, sweep: Option<usize>) -> Result<()> {
    run_tokio_peer(count, report_conns, |listener, live| async move {
        let registry = sweep.map(|n| {
            let reg = Arc::new(PeerRegistry::default());
            tokio::spawn(sweep::tokio_sweeper(reg.clone(), n));
            reg
        });
        accept_each(listener, "tokio server", |sock| {
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
                            None => {
                                echo_framed(&mut Framed::new(sock, codec), |line: String| line)
                                    .await
                            }
                            Some(reg) => {
                                // What a tokio user's heartbeat keeps: the
                                // time of the last line, in a shared map.
                                let (id, state) = reg.register();
                                let mut framed = Framed::new(sock, codec);
                                echo_framed(&mut framed, |line: String| {
                                    state.touch();
                                    line
                                })
                                .await;
                                reg.unregister(id);
                            }
                        }
                    }
                    Proto::Frame => {
                        echo_framed(
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
        })
        .await
    })
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

/// The lubdub server of the `attack` scenario, configured in this one
/// place: `examples/echo.rs`'s server (Text protocol, one event loop,
/// lubdub's defaults), each setting spelled out. Switch a new setting (a
/// backpressure mode, a memory budget...) on here, one line, and every
/// `attack` run uses it.
pub fn lubdub_attack_worker() -> Result<Worker<Text>> {
    // The protocol's own line limit: 10 MiB, `\n` included (Text's default,
    // the tokio peer's `LinesCodec::new_with_max_length`).
    let text = Text::with_max_length(MAX_MESSAGE);
    let mut w = Worker::with_protocol("text://127.0.0.1:0", text)?;
    w.count(1) // examples/echo.rs: `--count`, default 1
        .name("attack")
        .limits(
            lubdub::Limits::default()
                .max_package_size(MAX_MESSAGE) // default: 10 MiB
                .send_buffer_size(lubdub::DEFAULT_SEND_BUFFER_SIZE) // default: 1 MiB per connection
                .close_timeout(Duration::from_secs(5)) // default
                .stop_timeout(Duration::from_secs(5)) // default
                .backpressure(lubdub::Backpressure::PauseRecv) // default, as examples/echo.rs
                .memory_budget(lubdub::default_memory_budget()), // default: RAM / 64, 64..512 MiB
        );
    // Off, as in examples/echo.rs: max_connections, first_message_timeout.
    Ok(w)
}

/// `serve lubdub text --attack`: [`lubdub_attack_worker`] echoing lines,
/// as `examples/echo.rs` does. The example's callbacks only log; here
/// `on_error` counts, and the child prints `stat errors N` every 200 ms
/// (`run_attack_server`).
fn serve_attack() -> Result<()> {
    let mut w = lubdub_attack_worker()?;
    w.on_message(|conn, line: String| {
        let _ = conn.send(&line);
    });
    run_attack_server(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use clap::Parser as _;
    use lubdub::{Codec, Decoded};
    use tokio_util::codec::{Decoder, Encoder};

    /// The tokio peer's codec and lubdub's Frame put identical bytes on the
    /// wire and decode each other's output.
    #[test]
    fn tokio_frame_codec_is_byte_exact_with_workerman_frame() {
        for payload in [&b""[..], b"hello", &[7u8; 4096][..]] {
            let mut ours = Vec::new();
            Codec::encode(&Frame::new(), payload, &mut ours).unwrap();
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

            match Codec::decode(&Frame::new(), &mut (), &theirs).unwrap() {
                Decoded::Message { msg, consumed } => {
                    assert_eq!(msg, payload);
                    assert_eq!(consumed, payload.len() + 4);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn serve_arguments_round_trip_and_keep_their_shape() {
        let o = ServeOpts {
            sweep: Some(10),
            report_conns: true,
            ..ServeOpts::echo(Impl::Tokio, Proto::Text, 2, Some(0))
        };
        let args = o.to_args();
        // `--wrap-server bench/scripts/ab-against.sh` relies on this shape.
        assert_eq!(args[..3], ["serve", "tokio", "text"]);
        assert_eq!(ServeOpts::try_parse_from(&args).unwrap(), o);
        let attack = ServeOpts {
            attack: true,
            ..ServeOpts::echo(Impl::Lubdub, Proto::Text, 1, None)
        };
        assert_eq!(ServeOpts::try_parse_from(attack.to_args()).unwrap(), attack);
        assert!(
            ServeOpts::try_parse_from(["serve", "lubdub", "text", "--sweep", "1", "--attack"])
                .is_err(),
            "--sweep and --attack do not go together"
        );
        assert!(ServeOpts::try_parse_from(["serve", "nginx", "text"]).is_err());
    }
}
