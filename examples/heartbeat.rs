//! lubdub's heartbeat: Workerman's 55 s idle sweep, ping/pong, server pings
//! with RTT, and a client that keeps itself alive.
//!
//! ```text
//! cargo run --example heartbeat                # text on 127.0.0.1:1234, Workerman defaults
//! cargo run --example heartbeat -- --demo      # a healthy and a silent client, in-process
//! cargo run --example heartbeat -- --ping-interval 5 --timeout 20
//! cargo run --example heartbeat -- --protocol packet --demo
//! ```
//!
//! `--help` lists the flags (the fields of `Opts` below), with their
//! defaults: Workerman's 10 s sweep and 55 s timeout on 127.0.0.1:1234.
//!
//! It runs under lubdub's command line (`lubdub::cli`), as Workerman's
//! `php start.php start -d`:
//!
//! ```text
//! heartbeat start -d --listen 127.0.0.1:1234   # in the background
//! heartbeat status                             # per event loop: connections, messages/s...
//! heartbeat connections                        # one line per connection
//! heartbeat reload                             # a new process, no connect refused
//! heartbeat stop
//! ```
//!
//! On a reload, a text client gets `bye: server restarting, reconnect`.
//!
//! With the text protocol, try `nc 127.0.0.1 1234`: type `ping` and get
//! `pong`; any line counts as life; say nothing for 55 s and the server says
//! goodbye and closes.

mod common;

use std::borrow::Borrow;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use common::log_limited;
use log::Level;
use lubdub::heartbeat::{
    FrameHeartbeat, Heartbeat, HeartbeatCodec, HeartbeatHandle, PacketHeartbeat, ServerHeartbeat,
    TextHeartbeat, WsHeartbeat,
};
use lubdub::Text;
use lubdub::{cli, Client, CloseReason, Connection, EventLoop, Protocol, Worker, WorkerHandle};
use lubdub::{Frame, PacketCodec};
use lubdub::{TlsClientConfig, Ws};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Proto {
    Text,
    Frame,
    Packet,
    Ws,
}

const ABOUT: &str = "lubdub's heartbeat: Workerman's idle sweep, ping/pong, server pings with \
                     RTT, and a client that keeps itself alive";

/// The example's own flags (the command line adds start/stop/reload...).
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("listen", |a| a.default_value("127.0.0.1:1234")))]
struct Opts {
    #[command(flatten)]
    listen: common::ListenArgs,
    /// Sweep for silent connections every SECS
    #[arg(long = "check-interval", value_name = "SECS", default_value = "10", value_parser = secs)]
    check: Duration,
    /// Close a connection after SECS of inbound silence
    #[arg(long, value_name = "SECS", default_value = "55", value_parser = secs)]
    timeout: Duration,
    /// Ping from the server every SECS and measure each round trip (default: off; ws: a third of --timeout)
    #[arg(long = "ping-interval", value_name = "SECS", value_parser = secs)]
    ping: Option<Duration>,
    /// How long a server ping may go unanswered
    #[arg(long = "ack-timeout", value_name = "SECS", default_value = "5", value_parser = secs)]
    ack: Duration,
    /// The protocol served; over ws the server pings (browsers answer pings but cannot send them)
    #[arg(long, value_enum, default_value_t = Proto::Text)]
    protocol: Proto,
    /// Run a healthy and a silent client against the server with short settings, report, exit
    #[arg(long)]
    demo: bool,
    /// With --demo: debug logs of the worker too (a server's level: --log-level)
    #[arg(short, long)]
    verbose: bool,
    #[command(flatten)]
    tls: common::TlsArgs,
}

/// A positive, finite number of seconds, fractions allowed.
fn secs(v: &str) -> Result<Duration, String> {
    let s: f64 = v.parse().map_err(|_| format!("not a number: {v}"))?;
    if !(s.is_finite() && s > 0.0) {
        return Err(format!("must be positive: {v}"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn init_logging(verbose: bool) -> Result<(), fern::InitError> {
    let start = Instant::now();
    fern::Dispatch::new()
        .format(move |out, msg, rec| {
            let t = start.elapsed();
            out.finish(format_args!(
                "{:>3}.{:03} [{:5}] {msg}",
                t.as_secs(),
                t.subsec_millis(),
                rec.level()
            ))
        })
        .level(if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        })
        // Heartbeats, pings and round trips are logged at debug level.
        .level_for("lubdub_heartbeat", log::LevelFilter::Debug)
        .chain(std::io::stderr())
        .apply()?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = cli::parse::<Opts>(ABOUT);
    match cli.app() {
        Some(opts) if opts.demo => {
            if let Err(e) = init_logging(opts.verbose) {
                eprintln!("logging: {e}");
                return ExitCode::FAILURE;
            }
            match by_protocol(opts, None) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("heartbeat example: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        // The server, under the command line: the logs are its (`--log-level`).
        _ => cli
            .run(|opts, server| by_protocol(opts, Some(server)).map_err(|e| e.to_string().into())),
    }
}

/// Serves the protocol `--protocol` names: under the command line's
/// `server`, or the demo without one.
fn by_protocol(opts: &Opts, server: Option<&mut cli::Server>) -> Res<()> {
    match opts.protocol {
        Proto::Text => run::<Text, _>(
            opts,
            // What a client gets when a reload hands it to the new process.
            Text::new().restart_line("bye: server restarting, reconnect")?,
            TextHeartbeat::new(),
            |hb| hb.goodbye("bye: heartbeat timeout"),
            server,
        ),
        Proto::Frame => run::<Frame, _>(
            opts,
            Frame::default(),
            FrameHeartbeat::new(),
            |hb| hb,
            server,
        ),
        Proto::Packet => {
            // SYS_START_HEARTBEAT tells C# clients their interval: a third
            // of the timeout, at least 1 s.
            let secs = (opts.timeout.as_secs() / 3).clamp(1, 255) as u8;
            let codec =
                PacketHeartbeat::new().start_interval(Some(if opts.demo { 1 } else { secs }));
            run::<PacketCodec, _>(opts, PacketCodec::default(), codec, |hb| hb, server)
        }
        Proto::Ws => {
            // Browsers cannot ping: the server does, and the pongs give
            // each connection's round trip.
            let mut opts = opts.clone();
            if opts.ping.is_none() {
                opts.ping = Some(if opts.demo {
                    Duration::from_millis(400)
                } else {
                    (opts.timeout / 3).max(Duration::from_secs(1))
                });
            }
            run::<Ws, _>(&opts, Ws::default(), WsHeartbeat, |hb| hb, server)
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Closes seen by the server: (peer address, reason).
type Closes = mpsc::Receiver<(SocketAddr, CloseReason)>;

fn run<P, C>(
    opts: &Opts,
    protocol: P,
    codec: C,
    extra: impl FnOnce(ServerHeartbeat<P, C>) -> ServerHeartbeat<P, C>,
    server: Option<&mut cli::Server>,
) -> Res<()>
where
    P: Protocol + Default,
    P::Message: Borrow<P::Outgoing>,
    C: HeartbeatCodec<P> + Clone,
{
    let mut opts = opts.clone();
    if opts.demo {
        // Short settings so the demo ends in seconds.
        opts.listen.listen = "127.0.0.1:0".into();
        opts.check = Duration::from_millis(250);
        opts.timeout = Duration::from_millis(1500);
    }
    let hb = Heartbeat::server(codec.clone())
        .check_interval(opts.check)
        .timeout(opts.timeout)
        .ack_timeout(opts.ack)
        .on_ack(|c, a| {
            log_limited!(
                Level::Info,
                "rtt of connection {}: {:?} (smoothed {:?}, min {:?}, {} samples)",
                c.id(),
                a.rtt,
                a.stats.smoothed,
                a.stats.min,
                a.stats.samples
            )
        });
    let hb = match opts.ping {
        Some(p) => hb.ping_interval(p),
        None => hb,
    };
    let hb = extra(hb);
    let hb_handle = hb.handle();

    let (close_tx, closes) = mpsc::channel();
    let close_tx = Mutex::new(close_tx);
    let scheme = P::SCHEME;
    let mut worker = Worker::with_protocol(opts.listen.listen.as_str(), protocol)?;
    worker.name("heartbeat").plugin(hb);
    let tls = opts.tls.config_and_cert()?;
    // The demo's client trusts exactly the certificate made here.
    let mut client_ca = None;
    if let Some((config, cert)) = tls {
        worker.tls(config);
        client_ca = Some(cert.ok_or("--demo over TLS needs --tls-self-signed")?);
    }
    // Peers can connect and close in numbers: logged through a rate limit.
    worker.on_connect(|c| {
        log_limited!(
            Level::Info,
            "connection {} from {}",
            c.id(),
            c.remote_addr()
        )
    });
    worker.on_message(|c, m| {
        // The application: an echo. Heartbeats never get here.
        let _ = c.send(m.borrow());
    });
    worker.on_close(move |c, reason| {
        log_limited!(Level::Info, "connection {} closed: {reason}", c.id());
        let _ = close_tx
            .lock()
            .unwrap()
            .send((c.remote_addr(), reason.clone()));
    });
    let pings = match opts.ping {
        Some(p) => format!(", server pings every {p:?} (ack within {:?})", opts.ack),
        None => String::new(),
    };
    let banner = format!(
        "sweep every {:?}, close after {:?} of inbound silence{pings}",
        opts.check, opts.timeout
    );
    if let Some(server) = server {
        let timeout = opts.timeout;
        worker.on_worker_start(move |w| {
            let addr = w.local_addr();
            println!("heartbeat: {scheme}://{addr}: {banner}");
            if scheme == "text" {
                println!(
                    "try it: nc {} {}  then type `ping` (answer: `pong`) or any line (echoed); \
                     stay silent {timeout:?} and the server says goodbye and closes. \
                     Ctrl-C (or `heartbeat stop`) stops.",
                    addr.ip(),
                    addr.port()
                );
            } else if scheme == "ws" {
                println!(
                    "open a WebSocket to ws://{addr}/ (any path): the server pings it and logs \
                     each round trip; stay silent and it closes. Ctrl-C stops."
                );
            } else {
                println!("binary protocol: `--demo` shows a client. Ctrl-C stops.");
            }
        });
        // Until `stop`, SIGINT or SIGTERM; `reload` hands it over.
        server.serve(&mut worker)?;
        // `start --metrics ADDR`: the heartbeat's timeouts and round trips
        // beside the worker's figures.
        server.metrics().add_heartbeat("heartbeat", &hb_handle);
        return Ok(());
    }
    let server = worker.start()?;
    println!("heartbeat: {scheme}://{}: {banner}", server.local_addr());
    let ok = demo(&opts, codec, &server, &hb_handle, &closes, client_ca);
    server.stop_and_wait();
    if ok? {
        println!("demo: OK");
        Ok(())
    } else {
        Err("demo failed".into())
    }
}

/// Runs a healthy lubdub client and a silent raw socket against the server.
fn demo<P, C>(
    opts: &Opts,
    codec: C,
    server: &WorkerHandle<P>,
    hb: &HeartbeatHandle<P>,
    closes: &Closes,
    client_ca: Option<String>,
) -> Res<bool>
where
    P: Protocol + Default,
    C: HeartbeatCodec<P>,
{
    let addr = server.local_addr();
    let t0 = Instant::now();
    let beat = Duration::from_millis(500);

    // The healthy client: lubdub's Client with the client heartbeat, which
    // pings when quiet, answers server pings and measures the round trip.
    let client_hb = Heartbeat::client(codec)
        .interval(beat)
        .timeout(opts.timeout * 2)
        .on_round_trip(|c, rt| {
            log::info!(
                "client: round trip {} on connection {}: {:?}",
                rt.seq,
                c.id(),
                rt.rtt
            )
        });
    let client_handle = client_hb.handle();
    let (ready_tx, ready_rx) = mpsc::channel();
    let client_closed = Arc::new(Mutex::new(None::<CloseReason>));
    let cc = client_closed.clone();
    // The silent one: connects and says nothing, ever, and answers nothing
    // (over WebSocket it does the upgrade first). A raw client on the same
    // loop, so that it speaks TLS when the server does, and nothing else.
    let (silent_tx, silent_rx) = mpsc::channel();
    let upgrade: &'static [u8] = if P::SCHEME == "ws" {
        b"GET / HTTP/1.1\r\nHost: demo\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    } else {
        b""
    };
    let client_thread = std::thread::spawn(move || {
        EventLoop::run(move |lp| {
            let tls = match client_ca
                .as_deref()
                .map(|ca| TlsClientConfig::with_ca_pem(ca.as_bytes()))
            {
                Some(Ok(tls)) => Some(tls.server_name("localhost")),
                Some(Err(e)) => {
                    log::error!("client: {e}");
                    lp.stop();
                    return;
                }
                None => None,
            };
            let silent = Client::<lubdub::Raw>::new(addr).map(|mut silent| {
                if let Some(tls) = &tls {
                    silent.tls(tls.clone());
                }
                silent.on_connect(move |c| {
                    if !upgrade.is_empty() {
                        let _ = c.send_raw(upgrade);
                    }
                    let _ = silent_tx.send(c.local_addr());
                });
                silent
            });
            if let Err(e) = silent.and_then(|s| s.connect()) {
                log::error!("silent client: {e}");
            }
            let mut client = match Client::<P>::new(addr) {
                Ok(c) => c,
                Err(e) => {
                    log::error!("client: {e}");
                    lp.stop();
                    return;
                }
            };
            client.plugin(client_hb);
            if let Some(tls) = tls {
                client.tls(tls);
            }
            client.on_close(move |_, r| *cc.lock().unwrap() = Some(r.clone()));
            match client.connect() {
                Ok(conn) => {
                    let _ = ready_tx.send((lp.clone(), conn));
                }
                Err(e) => {
                    log::error!("client: {e}");
                    lp.stop();
                }
            }
        })
    });
    let (lp, conn): (_, Connection<P>) = ready_rx.recv_timeout(Duration::from_secs(5))?;
    println!("demo: healthy client pings every {beat:?} when quiet");

    let silent_addr = silent_rx.recv_timeout(Duration::from_secs(5))?;
    println!(
        "demo: silent client {silent_addr} says nothing; expect a close within {:?}",
        opts.timeout + opts.check
    );

    let mut ok = true;
    let deadline = Duration::from_secs(10);
    let closed_at = loop {
        match closes.recv_timeout(deadline.saturating_sub(t0.elapsed())) {
            Ok((a, reason)) if a == silent_addr => {
                let took = t0.elapsed();
                if reason == CloseReason::HeartbeatTimeout {
                    println!("demo: silent client closed after {took:.1?}: {reason}");
                } else {
                    println!("demo: silent client closed for the wrong reason: {reason}");
                    ok = false;
                }
                break took;
            }
            Ok((a, reason)) => {
                println!("demo: unexpected close of {a}: {reason}");
                ok = false;
            }
            Err(_) => {
                println!("demo: the silent client was not closed within {deadline:?}");
                return Ok(false);
            }
        }
    };
    // Keep watching the healthy one until well past the timeout.
    let watch_until = (opts.timeout * 3).max(closed_at + opts.timeout);
    while t0.elapsed() < watch_until {
        if let Ok((a, reason)) = closes.recv_timeout(watch_until.saturating_sub(t0.elapsed())) {
            println!("demo: unexpected close of {a}: {reason}");
            ok = false;
        }
    }
    let connected = conn.is_connected() && client_closed.lock().unwrap().is_none();
    match (connected, client_handle.rtt(&conn)) {
        (true, Some(rtt)) => println!(
            "demo: healthy client still connected after {:.1?}: rtt {:?} (smoothed {:?}, min {:?}) over {} round trips",
            t0.elapsed(),
            rtt.latest,
            rtt.smoothed,
            rtt.min,
            rtt.samples
        ),
        (true, None) => {
            println!("demo: healthy client connected but no round trip measured");
            ok = false;
        }
        (false, _) => {
            println!(
                "demo: healthy client was closed: {:?}",
                client_closed.lock().unwrap()
            );
            ok = false;
        }
    }
    if let Some(off) = client_handle.clock_offset_us(&conn) {
        println!("demo: estimated server clock offset {off} µs (same host: about 0)");
    }
    let st = hb.stats();
    println!(
        "demo: server counters: {} idle timeout(s), {} heartbeat(s) in, {} pong(s) out, {} ack(s) of {} server ping(s)",
        st.idle_timeouts, st.beats_in, st.pongs_sent, st.acks, st.pings_sent
    );
    if st.idle_timeouts + st.ack_timeouts != 1 {
        ok = false;
    }
    lp.stop();
    let _ = client_thread.join();
    Ok(ok)
}
