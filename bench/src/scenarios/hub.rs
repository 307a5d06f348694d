//! The hub scenarios (`hub` group, not in `all`): fan-out to a group.
//!
//! * `hub-fanout-local`: one message to a group of 10,000 local
//!   connections, time until the last one has it; lubdub's hub
//!   (`send_to_group`) against a tokio peer broadcasting with
//!   `tokio::sync::broadcast` to a forwarding task per connection that
//!   writes through a `FramedWrite<_, LinesCodec>`. Both servers single
//!   threaded and pinned, the load generator on the other CPU, Text lines.
//! * `hub-fanout-cluster`: `redis-server` (started here on a free loopback
//!   port), three nodes, a publisher on node 1 and 1,000 group members
//!   spread over nodes 2 and 3; delivered messages per second and the
//!   publish-to-receive latency. lubdub nodes (`Hub::with_redis` over
//!   WebSocket) against Socket.IO 4 with `@socket.io/redis-adapter`
//!   (`bench/socketio/server.js`, three Node processes), on the same
//!   Redis, with clients over WebSocket on both sides: the same load
//!   generator speaks plain WebSocket to lubdub and Engine.IO v4 over
//!   WebSocket to Socket.IO (`load/hub.rs`).
//! * `hub-backplane`: the same cluster with one member on node 2 and one on
//!   node 3, so that the backplane, not the fan-out, is the work; its
//!   publishes per second are set against `redis-benchmark`'s PUBLISH rate
//!   on a Redis of the same kind (the engine's limit).
//!
//! * `hub-history`: `hub-fanout-cluster`'s lubdub cluster with the group
//!   keeping history (an offset and a Redis stream entry per message, one
//!   script per publish) against the same cluster without: what history
//!   costs in delivered messages per second, latency and CPU.
//!
//! Children: `hub-local-serve <lubdub|tokio> [--cpu C]` and `hub-node
//! --redis URL --node NAME` (lubdub), see `peers/hub.rs`. See
//! docs/benchmarks.md, "Hub".

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::child::Server;
use crate::load::hub::{cluster_load, local_fanout, ClusterRun, Peer};
use crate::load::measure;
use crate::load::socketio::STAMP_LEN;
use crate::peers::hub::{
    missing_tools, redis_benchmark, socketio_dir, start_socketio, HubLocalOpts, HubNodeOpts, Redis,
    Tool, NODE, NPM, REDIS_BENCHMARK, REDIS_SERVER,
};
use crate::report::{median, si, Better, Config, Impl, Outcome, Window};
use crate::scenarios::runs::alternate;

/// Publishes in flight (sent, not yet received by every member) in
/// `hub-fanout-cluster`: 8 x 1,000 deliveries.
const CLUSTER_DEPTH: u64 = 8;
/// Publishes in flight in `hub-backplane` (2 members).
const BACKPLANE_DEPTH: u64 = 256;

/// Checks, before any run, that what the hub scenarios among `names` need
/// is installed: `redis-server`, `redis-benchmark`, `node` and the Socket.IO
/// peer's node_modules. An error names each missing piece and its package;
/// the runner stops on it rather than skip a scenario.
pub fn preflight(names: &[&str]) -> Result<()> {
    let mut needed: Vec<&Tool> = Vec::new();
    let mut socketio = false;
    for name in names {
        let tools: &[&Tool] = match *name {
            "hub-fanout-cluster" => &[&REDIS_SERVER, &NODE],
            "hub-backplane" => &[&REDIS_SERVER, &REDIS_BENCHMARK, &NODE],
            "hub-history" => &[&REDIS_SERVER],
            _ => continue,
        };
        socketio |= *name != "hub-history";
        for t in tools {
            if !needed.iter().any(|n| n.name == t.name) {
                needed.push(t);
            }
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut missing = missing_tools(&needed, &path);
    if socketio {
        if let Err(e) = socketio_dir() {
            missing.push(format!("{e:#}"));
            missing.extend(missing_tools(&[&NPM], &path));
        }
    }
    if !missing.is_empty() {
        bail!(
            "the hub scenarios cannot run; missing:\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// `hub-fanout-local`.
pub fn fanout_local(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let n = cfg.many_conns;
    cfg.check_fds("hub-fanout-local", n)?;
    let (warm, count) = if cfg.quick { (5, 30) } else { (30, 300) };
    let [l, p] = alternate(cfg, "hub-fanout-local", 3, |imp| {
        let opts = HubLocalOpts {
            imp,
            cpu: cfg.server_cpu(1),
        };
        let server = Server::start(&opts.to_args())?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let limit = Duration::from_secs(120) + Duration::from_millis(n as u64 * 2);
        let r = measure::run(cfg.loadgen_cpu(1), limit, || {
            local_fanout(addr, pid, n, warm, count)
        })?;
        drop(server);
        let mut ms: Vec<f64> = r.times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let med = median(&ms);
        let p99 = ms[((ms.len() as f64 * 0.99).ceil() as usize).clamp(1, ms.len()) - 1];
        let per = r.server_cpu_per_delivery.as_secs_f64() * 1e6;
        Ok((
            vec![med, p99, per],
            format!(
                "{count} fan-outs to {n}: median {med:.2} ms, p99 {p99:.2} ms, min {:.2}, max {:.2}; \
                 server CPU {per:.3} us per delivery, load generator CPU {:.0}%{}",
                ms[0],
                ms[ms.len() - 1],
                r.loadgen_cpu * 100.0,
                if r.loadgen_cpu > 0.95 { " [load generator saturated]" } else { "" }
            ),
        ))
    })?;
    let label = format!(
        "hub fan-out, 1 message to {n} local members, time until the last has it, \
         lubdub Hub vs tokio broadcast + FramedWrite: median (ms)"
    );
    let rows = [
        (label, "ms"),
        (format!("↳ p99 of {count} fan-outs (ms)"), "ms"),
        ("↳ server CPU per delivered message (us)".to_string(), "us"),
    ];
    for (i, (label, unit)) in rows.into_iter().enumerate() {
        out.row(label, unit, Better::Lower, &l[i], &p[i]);
    }
    Ok(())
}

/// One cluster run: a fresh Redis, three nodes of `imp`'s kind (lubdub,
/// or Socket.IO for the peer side), the publisher on node 1, the members
/// alternating between nodes 2 and 3.
fn cluster_run(
    cfg: &Config,
    imp: Impl,
    members: usize,
    depth: u64,
    socketio: &std::path::Path,
    history: bool,
) -> Result<ClusterRun> {
    let redis = Redis::start()?;
    let url = redis.url();
    let mut pids = vec![redis.proc.pid()];
    let mut lubdub_nodes = Vec::new();
    let mut sio_nodes = Vec::new();
    let mut ports = Vec::new();
    for node in ["n1", "n2", "n3"] {
        match imp {
            Impl::Lubdub => {
                let opts = HubNodeOpts {
                    redis: url.clone(),
                    node: node.into(),
                    history,
                };
                let s = Server::start(&opts.to_args())?;
                pids.push(s.child.pid());
                ports.push(s.port);
                lubdub_nodes.push(s);
            }
            Impl::Tokio => {
                let (p, port) = start_socketio(socketio, &url)?;
                pids.push(p.pid());
                ports.push(port);
                sio_nodes.push(p);
            }
        }
    }
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let member_addrs: Vec<SocketAddr> = (0..members).map(|i| addr(ports[1 + i % 2])).collect();
    let peer = match imp {
        Impl::Lubdub => Peer::Lubdub,
        Impl::Tokio => Peer::SocketIo,
    };
    // Node JIT warm-up: at least a second of load before the window.
    let window = Window {
        warmup: cfg.window.warmup.max(Duration::from_secs(1)),
        measure: cfg.window.measure,
    };
    let limit = window.warmup + window.measure + Duration::from_secs(90);
    let r = measure::run(None, limit, || {
        cluster_load(peer, addr(ports[0]), &member_addrs, depth, window, &pids)
    })?;
    drop(lubdub_nodes);
    drop(sio_nodes);
    drop(redis);
    Ok(r)
}

fn describe_cluster(imp: Impl, r: &ClusterRun) -> String {
    format!(
        "{}: {} delivered/s ({} publishes/s), latency p50 {:.2} ms, p99 {:.2} ms; \
         CPU: nodes + redis {:.0}% (redis {}; n1, n2, n3 {}), load generator {:.0}%{}",
        match imp {
            Impl::Lubdub => "lubdub",
            Impl::Tokio => "Socket.IO",
        },
        si(r.delivered_per_sec),
        si(r.publishes_per_sec),
        r.p50_us / 1e3,
        r.p99_us / 1e3,
        r.cluster_cpu() * 100.0,
        r.cpu_each
            .first()
            .map_or(String::new(), |c| format!("{:.0}%", c * 100.0)),
        r.cpu_each
            .iter()
            .skip(1)
            .map(|c| format!("{:.0}%", c * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        r.loadgen_cpu * 100.0,
        if r.loadgen_cpu > 0.95 {
            " [load generator saturated]"
        } else {
            ""
        }
    )
}

/// `hub-fanout-cluster`: 1,000 members over nodes 2 and 3, under load
/// ([`CLUSTER_DEPTH`] publishes in flight) and one publish at a time.
pub fn fanout_cluster(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let dir = socketio_dir()?;
    let members = if cfg.quick { 200 } else { 1000 };
    let [l, p] = alternate(cfg, "hub-fanout-cluster", 7, |imp| {
        let a = cluster_run(cfg, imp, members, CLUSTER_DEPTH, &dir, false)?;
        let b = cluster_run(cfg, imp, members, 1, &dir, false)?;
        Ok((
            vec![
                a.delivered_per_sec,
                a.p50_us / 1e3,
                a.p99_us / 1e3,
                a.cluster_cpu() / a.delivered_per_sec * 1e6,
                b.delivered_per_sec,
                b.p99_us / 1e3,
                b.cluster_cpu() / b.delivered_per_sec * 1e6,
            ],
            format!(
                "{CLUSTER_DEPTH} in flight: {}\n      1 in flight: {}",
                describe_cluster(imp, &a),
                describe_cluster(imp, &b)
            ),
        ))
    })?;
    let rows = [
        (
            format!(
                "hub cluster fan-out: Redis, 3 nodes, publisher on node 1, {members} members on nodes 2+3, \
                 WebSocket, {CLUSTER_DEPTH} publishes in flight; lubdub vs Socket.IO 4 + redis-adapter: \
                 delivered msg/s"
            ),
            "msg/s",
            Better::Higher,
        ),
        ("↳ p50 publish-to-receive latency (ms)".into(), "ms", Better::Lower),
        ("↳ p99 publish-to-receive latency (ms)".into(), "ms", Better::Lower),
        ("↳ CPU of the nodes and Redis per delivered message (us)".into(), "us", Better::Lower),
        (
            "↳ one publish in flight: delivered msg/s".into(),
            "msg/s",
            Better::Higher,
        ),
        ("↳ one publish in flight: p99 latency (ms)".into(), "ms", Better::Lower),
        (
            "↳ one publish in flight: CPU of the nodes and Redis per delivered message (us)".into(),
            "us",
            Better::Lower,
        ),
    ];
    for (i, (label, unit, better)) in rows.into_iter().enumerate() {
        out.row(label, unit, better, &l[i], &p[i]);
    }
    let ratio = median(&l[0]) / median(&p[0]);
    let p99_lower = median(&l[2]) < median(&p[2]);
    out.notes.push(format!(
        "hub-fanout-cluster, {CLUSTER_DEPTH} publishes in flight: target >= 3x Socket.IO's delivered \
         msg/s with a lower p99: {ratio:.2}x, p99 {}: {}",
        if p99_lower { "lower" } else { "not lower" },
        if ratio >= 3.0 && p99_lower { "met" } else { "NOT met" }
    ));
    out.notes.push(format!(
        "hub-fanout-cluster, one publish in flight (latency-bound, for the latency; the rate is \
         1 / round trip): {:.2}x Socket.IO's msg/s, p99 {}",
        median(&l[4]) / median(&p[4]),
        if median(&l[5]) < median(&p[5]) {
            "lower"
        } else {
            "not lower"
        }
    ));
    out.notes.push(
        "hub-fanout-cluster: the peer column is Socket.IO 4.8 + @socket.io/redis-adapter 8.3 \
         (3 Node processes), not tokio"
            .into(),
    );
    Ok(())
}

/// The payload size of a backplane PUBLISH in `hub-backplane`: the hub's
/// envelope (version, origin `n1`, target group `g`, no exceptions) and a
/// 35-byte WebSocket frame of the 33-byte stamp.
const BACKPLANE_PAYLOAD: usize = 1 + (2 + 2) + (1 + 2 + 1) + 2 + (2 + STAMP_LEN);

/// `hub-backplane`: one member on node 2, one on node 3; publishes per
/// second against `redis-benchmark` PUBLISH.
pub fn backplane(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let dir = socketio_dir()?;
    let [l, p] = alternate(cfg, "hub-backplane", 3, |imp| {
        let r = cluster_run(cfg, imp, 2, BACKPLANE_DEPTH, &dir, false)?;
        Ok((
            vec![
                r.publishes_per_sec,
                r.p99_us / 1e3,
                r.cluster_cpu() / r.publishes_per_sec * 1e6,
            ],
            describe_cluster(imp, &r),
        ))
    })?;
    // About 3 s and 2 s of work each.
    let (plain_n, piped_n) = if cfg.quick {
        (30_000, 200_000)
    } else {
        (300_000, 2_000_000)
    };
    let mut plain = Vec::new();
    let mut piped = Vec::new();
    for run in 1..=cfg.runs {
        let a = redis_benchmark(plain_n, 1, BACKPLANE_PAYLOAD)?;
        let b = redis_benchmark(piped_n, 16, BACKPLANE_PAYLOAD)?;
        eprintln!(
            "  [hub-backplane] run {run}/{} redis-benchmark PUBLISH {BACKPLANE_PAYLOAD} B, 50 clients: \
             {} /s; with -P 16: {} /s",
            cfg.runs,
            si(a),
            si(b)
        );
        plain.push(a);
        piped.push(b);
    }
    let rows = [
        (
            format!(
                "hub backplane: Redis, 3 nodes, publisher on node 1, 1 member on node 2 and 1 on node 3, \
                 {BACKPLANE_DEPTH} in flight; lubdub vs Socket.IO 4 + redis-adapter: publishes/s \
                 (each delivered to both)"
            ),
            "msg/s",
            Better::Higher,
            l[0].clone(),
            p[0].clone(),
        ),
        ("↳ p99 publish-to-receive latency (ms)".into(), "ms", Better::Lower, l[1].clone(), p[1].clone()),
        (
            "↳ CPU of the nodes and Redis per publish (us)".into(),
            "us",
            Better::Lower,
            l[2].clone(),
            p[2].clone(),
        ),
        (
            format!(
                "hub backplane publishes/s: lubdub (column 1) vs redis-benchmark PUBLISH, 50 clients, \
                 {BACKPLANE_PAYLOAD} B, no pipelining (column 2)"
            ),
            "msg/s",
            Better::Higher,
            l[0].clone(),
            plain.clone(),
        ),
        (
            "↳ vs redis-benchmark PUBLISH with -P 16 (column 2)".into(),
            "msg/s",
            Better::Higher,
            l[0].clone(),
            piped.clone(),
        ),
    ];
    for (label, unit, better, lubdub, peer) in rows {
        out.row(label, unit, better, &lubdub, &peer);
    }
    let verdict = |r: f64| if r >= 0.5 { "met" } else { "NOT met" };
    let (r, rp) = (
        median(&l[0]) / median(&plain),
        median(&l[0]) / median(&piped),
    );
    out.notes.push(format!(
        "hub-backplane: the peer column is Socket.IO (rows 1-3) and redis-benchmark (rows 4-5). \
         Target: lubdub's publishes/s through Redis (each reaching both members) >= 0.5x \
         redis-benchmark's PUBLISH/s: against its default (50 clients, one command in flight each) \
         {r:.2}x ({}); against -P 16 (Redis's pipelined ceiling, on a machine Redis shares only \
         with redis-benchmark) {rp:.2}x ({})",
        verdict(r),
        verdict(rp)
    ));
    Ok(())
}

/// `hub-history`: the lubdub cluster of `hub-fanout-cluster` without
/// history (column 1) and with the group keeping history (column 2).
pub fn history(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let members = if cfg.quick { 200 } else { 1000 };
    // Column 1 (`Impl::Lubdub`): no history; column 2: history.
    let [off, on] = alternate(cfg, "hub-history", 3, |imp| {
        let history = imp == Impl::Tokio;
        let r = cluster_run(
            cfg,
            Impl::Lubdub,
            members,
            CLUSTER_DEPTH,
            std::path::Path::new(""),
            history,
        )?;
        let detail = describe_cluster(Impl::Lubdub, &r);
        Ok((
            vec![
                r.delivered_per_sec,
                r.p99_us / 1e3,
                r.cluster_cpu() / r.publishes_per_sec * 1e6,
            ],
            format!("history {}: {detail}", if history { "on" } else { "off" }),
        ))
    })?;
    let rows = [
        (
            format!(
                "hub history: Redis, 3 nodes, publisher on node 1, {members} members on nodes 2+3, \
                 {CLUSTER_DEPTH} in flight; lubdub without history (column 1) vs with the group \
                 keeping history (column 2): delivered msg/s"
            ),
            "msg/s",
            Better::Higher,
        ),
        (
            "↳ p99 publish-to-receive latency (ms)".into(),
            "ms",
            Better::Lower,
        ),
        (
            "↳ CPU of the nodes and Redis per publish (us)".into(),
            "us",
            Better::Lower,
        ),
    ];
    for (k, (label, unit, better)) in rows.into_iter().enumerate() {
        out.row(label, unit, better, &off[k], &on[k]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_fan_out_needs_nothing_outside_this_binary() {
        assert!(preflight(&["hub-fanout-local", "echo-1"]).is_ok());
    }
}
