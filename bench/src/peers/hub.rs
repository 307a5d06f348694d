//! The hub scenarios' servers and the programs around them, each in its
//! own process:
//!
//! * `hub-local-serve <lubdub|tokio> [--cpu C]`: the `hub-fanout-local`
//!   server, lubdub's `Hub` or a tokio room on `broadcast`;
//! * `hub-node --redis URL --node NAME`: a lubdub cluster node
//!   (`Hub::with_redis` over WebSocket);
//! * `redis-server` of the run's own ([`Redis`]), the Socket.IO 4 nodes
//!   (`bench/socketio/server.js`, [`start_socketio`]) and `redis-benchmark`
//!   ([`redis_benchmark`]), with what to install when one is missing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use lubdub::hub::{Hub, RedisConfig};
use lubdub::ws::{Message, Ws};
use lubdub::{Text, Worker, WorkerHandle};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};

use crate::child::Child;
use crate::peers::serve::{accept_each, start_server_child, MAX_MESSAGE};
use crate::report::Impl;

/// The group every scenario sends to.
const GROUP: &str = "g";

/// The command line of a `hub-local-serve` child.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
pub struct HubLocalOpts {
    /// lubdub's hub, or the tokio room.
    #[arg(value_enum)]
    pub imp: Impl,
    /// CPU to pin the whole server process to.
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
}

impl HubLocalOpts {
    /// The command line that makes a child run this server.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["hub-local-serve".to_string(), self.imp.name().into()];
        if let Some(cpu) = self.cpu {
            a.extend(["--cpu".into(), cpu.to_string()]);
        }
        a
    }
}

/// The command line of a `hub-node` child.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
pub struct HubNodeOpts {
    /// The Redis backplane, `redis://HOST:PORT`.
    #[arg(long, value_name = "URL")]
    pub redis: String,
    /// The node's name in the cluster.
    #[arg(long, value_name = "NAME")]
    pub node: String,
}

impl HubNodeOpts {
    /// The command line that makes a child run this node.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "hub-node".to_string(),
            "--redis".into(),
            self.redis.clone(),
            "--node".into(),
            self.node.clone(),
        ]
    }
}

/// Entry point of `hub-local-serve <lubdub|tokio> [--cpu C]`: the
/// `hub-fanout-local` server. Text lines: `j` joins the group (answered `ok`), `pREST` sends
/// `REST` to the group.
pub fn serve_local(o: &HubLocalOpts) -> Result<()> {
    start_server_child(o.cpu)?;
    match o.imp {
        Impl::Lubdub => {
            let h = local_lubdub()?;
            println!("port {}", h.local_addr().port());
            h.wait();
            Ok(())
        }
        Impl::Tokio => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("port {}", listener.local_addr()?.port());
            tokio_local(listener)
        }
    }
}

/// The lubdub `hub-fanout-local` server, one event loop, started.
pub fn local_lubdub() -> Result<WorkerHandle<Text>> {
    let hub = Hub::<Text>::local();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0")?;
    w.count(1).name("bench-hub").plugin(hub.plugin());
    w.on_message(move |conn, line: String| match line.as_bytes().first() {
        Some(b'j') => {
            let _ = match hub.join(conn, GROUP) {
                Ok(()) => conn.send("ok"),
                Err(e) => conn.send(&format!("error: {e}")),
            };
        }
        Some(b'p') => {
            hub.send_to_group(GROUP, &line[1..], &[]);
        }
        _ => {}
    });
    Ok(w.start()?)
}

/// The tokio peer: what a tokio user writes for a room. One
/// `broadcast::Sender<Arc<str>>` (a message is shared, not copied, among
/// the receivers); each member has a task that forwards from its
/// `broadcast::Receiver` to its `FramedWrite<_, LinesCodec>`, feeding every
/// message already there and flushing once (as the echo peer does).
pub fn tokio_local(listener: std::net::TcpListener) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let (tx, _) = broadcast::channel::<Arc<str>>(1024);
        accept_each(listener, "tokio hub server", |sock| {
            tokio::spawn(tokio_conn(sock, tx.clone()));
        })
        .await
    })
}

async fn tokio_conn(sock: TcpStream, tx: broadcast::Sender<Arc<str>>) {
    let (r, w) = sock.into_split();
    let mut lines = FramedRead::new(r, LinesCodec::new_with_max_length(MAX_MESSAGE));
    let mut writer = Some(FramedWrite::new(
        w,
        LinesCodec::new_with_max_length(MAX_MESSAGE),
    ));
    while let Some(Ok(line)) = lines.next().await {
        if line == "j" {
            if let Some(mut w) = writer.take() {
                // Subscribed before the `ok`: whatever is sent after the
                // member saw it reaches the member.
                let rx = tx.subscribe();
                if w.send("ok").await.is_err() {
                    return;
                }
                tokio::spawn(tokio_forward(rx, w));
            }
        } else if let Some(msg) = line.strip_prefix('p') {
            let _ = tx.send(Arc::from(msg));
        }
    }
}

async fn tokio_forward(
    mut rx: broadcast::Receiver<Arc<str>>,
    mut w: FramedWrite<OwnedWriteHalf, LinesCodec>,
) {
    loop {
        match rx.recv().await {
            Ok(msg) => {
                if w.feed(msg).await.is_err() {
                    return;
                }
                while let Ok(msg) = rx.try_recv() {
                    if w.feed(msg).await.is_err() {
                        return;
                    }
                }
                if SinkExt::<Arc<str>>::flush(&mut w).await.is_err() {
                    return;
                }
            }
            // A member that fell behind the channel's capacity skips
            // messages (the load generator fails the run if one is lost).
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Entry point of `hub-node --redis URL --node NAME`: a lubdub cluster node, one event
/// loop, WebSocket. Text messages: `j` joins the group, `pREST` sends
/// `REST` to the group on every node.
pub fn serve_node(o: &HubNodeOpts) -> Result<()> {
    start_server_child(None)?;
    let h = lubdub_node(&o.redis, &o.node)?;
    println!("port {}", h.local_addr().port());
    h.wait();
    Ok(())
}

/// A lubdub cluster node on the Redis at `url`, one event loop, started.
pub fn lubdub_node(url: &str, node: &str) -> Result<WorkerHandle<Ws>> {
    let hub = Hub::with_redis(
        RedisConfig::new(url, node).namespace("bench"),
        Ws::default(),
    )?;
    let mut w = Worker::with_protocol("ws://127.0.0.1:0", Ws::default())?;
    w.count(1).name(node).plugin(hub.plugin());
    w.on_message(move |conn, msg: Message| {
        if let Message::Text(mut text) = msg {
            match text.as_bytes().first() {
                Some(b'j') => {
                    if let Err(e) = hub.join(conn, GROUP) {
                        conn.close_session(1011, &format!("join: {e}"));
                    }
                }
                Some(b'p') => {
                    text.drain(..1);
                    hub.send_to_group(GROUP, &Message::Text(text), &[]);
                }
                _ => {}
            }
        }
    });
    Ok(w.start()?)
}

const NO_REDIS: &str = "the hub scenarios need redis-server and redis-benchmark on the PATH \
                        (Debian: apt-get install -y redis-server redis-tools)";

/// A `redis-server` of the run's own on a free loopback port, no
/// persistence (`--save '' --appendonly no`, as tests/hub_redis.rs).
pub struct Redis {
    /// The redis-server process.
    pub proc: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Redis {
    /// Starts one on a free port; returns once it accepts connections.
    pub fn start() -> Result<Redis> {
        let mut last = String::new();
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut proc = Child::spawn_program(
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"]),
                "redis-server",
                NO_REDIS,
            )?;
            match proc.wait_for("that it is ready", Duration::from_secs(10), |l| {
                l.contains("Ready to accept connections").then_some(Ok(()))
            }) {
                Ok(()) => return Ok(Redis { proc, port }),
                // The port was taken between the probe and the start.
                Err(e) => last = format!("{e:#}"),
            }
        }
        bail!("redis-server did not start: {last}")
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// A program a hub scenario runs, and how to install it.
pub struct Tool {
    /// The executable.
    pub name: &'static str,
    /// How to install it on Debian.
    pub install: &'static str,
}

/// The Redis server, the cluster scenarios' backplane.
pub const REDIS_SERVER: Tool = Tool {
    name: "redis-server",
    install: "apt-get install -y redis-server",
};
/// The Redis benchmark, `hub-backplane`'s reference.
pub const REDIS_BENCHMARK: Tool = Tool {
    name: "redis-benchmark",
    install: "apt-get install -y redis-tools",
};
/// Node, for the Socket.IO peer.
pub const NODE: Tool = Tool {
    name: "node",
    install: "apt-get install -y nodejs",
};
/// npm, to install the Socket.IO peer.
pub const NPM: Tool = Tool {
    name: "npm",
    install: "apt-get install -y npm",
};

/// Whether an executable file `name` is in one of the directories of `path`
/// (a `PATH` value).
fn on_path(name: &str, path: &std::ffi::OsStr) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The tools of `needed` missing from `path`, each with its install line.
pub fn missing_tools(needed: &[&Tool], path: &std::ffi::OsStr) -> Vec<String> {
    needed
        .iter()
        .filter(|t| !on_path(t.name, path))
        .map(|t| format!("{} (Debian: {})", t.name, t.install))
        .collect()
}

/// Where the Socket.IO peer lives, with its node_modules installed.
pub fn socketio_dir() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio");
    if !dir.join("node_modules/socket.io").exists()
        || !dir.join("node_modules/@socket.io/redis-adapter").exists()
    {
        bail!(
            "the Socket.IO peer is not installed: run `npm ci` in {} (node and npm needed)",
            dir.display()
        );
    }
    Ok(dir)
}

/// One Socket.IO node (`node server.js REDIS_URL`) and its port.
pub fn start_socketio(dir: &std::path::Path, url: &str) -> Result<(Child, u16)> {
    let mut proc = Child::spawn_program(
        Command::new("node")
            .arg("server.js")
            .arg(url)
            .current_dir(dir),
        "node bench/socketio/server.js",
        "the Socket.IO peer needs node on the PATH (Debian: apt-get install -y nodejs npm)",
    )?;
    let port = proc.expect("port", Duration::from_secs(30))?.parse()?;
    Ok((proc, port))
}

/// `redis-benchmark` PUBLISH rate (requests/s) on a fresh Redis: 50
/// clients, `pipeline` commands in flight each, `payload`-byte messages to
/// a channel nobody listens to.
pub fn redis_benchmark(requests: u64, pipeline: u32, payload: usize) -> Result<f64> {
    let redis = Redis::start()?;
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
        .args(["-c", "50", "-n", &requests.to_string()])
        .args(["-P", &pipeline.to_string(), "--csv"])
        .args(["publish", "bench:ch:g:g", &"x".repeat(payload)])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow!("cannot run redis-benchmark ({e}): {NO_REDIS}"))?;
    drop(redis);
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps",...  then  "publish ...","123456.78",...
    text.lines()
        .filter(|l| l.starts_with("\"publish"))
        .find_map(|l| l.split("\",\"").nth(1).and_then(|v| v.parse().ok()))
        .ok_or_else(|| anyhow!("no rate in redis-benchmark's output: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn hub_child_arguments_round_trip() {
        let local = HubLocalOpts {
            imp: Impl::Tokio,
            cpu: Some(0),
        };
        assert_eq!(
            HubLocalOpts::try_parse_from(local.to_args()).unwrap(),
            local
        );
        let node = HubNodeOpts {
            redis: "redis://127.0.0.1:1".into(),
            node: "n2".into(),
        };
        assert_eq!(HubNodeOpts::try_parse_from(node.to_args()).unwrap(), node);
    }

    #[test]
    fn redis_benchmark_rate_is_read() {
        let rate = redis_benchmark(5_000, 1, 48).unwrap();
        assert!(rate > 0.0 && rate.is_finite(), "{rate}");
    }

    #[test]
    fn missing_tools_are_named_with_their_package() {
        let dir = std::env::temp_dir().join(format!("lubdub-bench-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("redis-server");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        let path = std::ffi::OsString::from(&dir);
        // Not executable: not found.
        assert_eq!(missing_tools(&[&REDIS_SERVER], &path).len(), 1);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(missing_tools(&[&REDIS_SERVER], &path).is_empty());
        let missing = missing_tools(&[&REDIS_SERVER, &REDIS_BENCHMARK, &NODE], &path);
        assert_eq!(
            missing,
            [
                "redis-benchmark (Debian: apt-get install -y redis-tools)",
                "node (Debian: apt-get install -y nodejs)"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
