//! The hub loads against the real servers in this process: both local
//! fan-out servers, and clusters of three lubdub or Socket.IO nodes on a
//! real Redis.

use std::net::SocketAddr;
use std::time::Duration;

use crate::child::Child;
use crate::load::hub::{cluster_load, local_fanout, Peer};
use crate::load::measure;
use crate::peers::hub::{
    local_lubdub, lubdub_node, socketio_dir, start_socketio, tokio_local, Redis,
};
use crate::report::Window;

/// A short window: the tests check the harness, not the figures.
const WINDOW: Window = Window {
    warmup: Duration::from_millis(100),
    measure: Duration::from_millis(300),
};

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// 40 members, 3 + 5 fan-outs: every member gets every message once,
/// in order (`local_fanout` fails otherwise), from both servers.
#[test]
fn local_fanout_reaches_every_member_of_both_servers() {
    let me = std::process::id();
    let lubdub = local_lubdub().unwrap();
    let addr = local(lubdub.local_addr().port());
    let r = measure::run(None, Duration::from_secs(120), || {
        local_fanout(addr, me, 40, 3, 5)
    })
    .unwrap();
    assert_eq!(r.times.len(), 5);
    assert!(r.times.iter().all(|t| *t > Duration::ZERO));
    lubdub.stop_and_wait();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The tokio peer serves until the test process ends.
    std::thread::spawn(move || tokio_local(listener));
    let r = measure::run(None, Duration::from_secs(120), || {
        local_fanout(addr, me, 40, 3, 5)
    })
    .unwrap();
    assert_eq!(r.times.len(), 5);
}

/// The members on nodes 2 and 3, 1 + i % 2.
fn member_addrs(ports: &[u16], members: usize) -> Vec<SocketAddr> {
    (0..members).map(|i| local(ports[1 + i % 2])).collect()
}

/// A real redis-server, three lubdub nodes in this process, the
/// publisher on node 1 and 10 members on nodes 2 and 3: every measured
/// message crosses Redis and reaches every member once, in order.
#[test]
fn lubdub_cluster_delivers_every_message_through_redis() {
    let redis = Redis::start().unwrap();
    let nodes: Vec<_> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| lubdub_node(&redis.url(), n, false).unwrap())
        .collect();
    let ports: Vec<u16> = nodes.iter().map(|h| h.local_addr().port()).collect();
    let members = member_addrs(&ports, 10);
    let pids = [redis.proc.pid()];
    let r = measure::run(None, Duration::from_secs(120), || {
        cluster_load(Peer::Lubdub, local(ports[0]), &members, 4, WINDOW, &pids)
    })
    .unwrap();
    assert!(r.delivered_per_sec > 0.0);
    assert!((r.delivered_per_sec / r.publishes_per_sec - 10.0).abs() < 1e-6);
    assert!(r.p50_us > 0.0 && r.p99_us >= r.p50_us);
    assert_eq!(r.cpu_each.len(), 1);
    for n in &nodes {
        n.stop_and_wait();
    }
}

/// The same through three Socket.IO nodes (bench/socketio, `npm ci`
/// first): the load generator's Engine.IO/Socket.IO framing works
/// against the real server and adapter.
#[test]
fn socketio_cluster_delivers_every_message_through_redis() {
    let dir = socketio_dir().unwrap();
    let redis = Redis::start().unwrap();
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let (p, port) = start_socketio(&dir, &redis.url()).unwrap();
        procs.push(p);
        ports.push(port);
    }
    let members = member_addrs(&ports, 10);
    let pids: Vec<u32> = std::iter::once(redis.proc.pid())
        .chain(procs.iter().map(Child::pid))
        .collect();
    let r = measure::run(None, Duration::from_secs(120), || {
        cluster_load(Peer::SocketIo, local(ports[0]), &members, 4, WINDOW, &pids)
    })
    .unwrap();
    assert!(r.delivered_per_sec > 0.0);
    assert!((r.delivered_per_sec / r.publishes_per_sec - 10.0).abs() < 1e-6);
    assert_eq!(r.cpu_each.len(), 4);
}
