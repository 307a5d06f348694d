//! The HTTP scenarios (the `http` group): lubdub's `Worker<Http>` next to
//! hyper 1.x, each in its own process (`peers/http.rs`), driven by the
//! load generator's HTTP mode (`load/http.rs`); and lubdub's publish API
//! alone, on one node and on two over a real Redis. See docs/benchmarks.md, "HTTP".

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;

use crate::child::Server;
use crate::load::http::{self, HttpUnit, PublishTarget};
use crate::load::measure;
use crate::load::tcp;
use crate::peers::http::{HttpImpl, HttpServeOpts, NAMESPACE};
use crate::peers::hub::Redis;
use crate::report::{Better, Config, Impl, Outcome};
use crate::scenarios::runs::{alternate, describe, lubdub_alone, rate_metrics};

/// Target of `http-idle-mem`: bytes of server RSS per idle keep-alive
/// connection.
pub const IDLE_TARGET: f64 = 2.0 * 1024.0;

/// Publishers (and members) of `publish-api`.
const PUBLISHERS: usize = 32;

/// An `http-serve` child of `imp`, pinned as `cfg` says.
fn start(cfg: &Config, imp: Impl, pipeline_flush: bool, report: bool) -> Result<Server> {
    let imp = match imp {
        Impl::Lubdub => HttpImpl::Lubdub,
        Impl::Tokio => HttpImpl::Hyper,
    };
    HttpServeOpts {
        imp,
        pipeline_flush: pipeline_flush && imp == HttpImpl::Hyper,
        publish_api: false,
        redis: None,
        node: None,
        cpu: cfg.server_cpu(1),
        report_conns: report,
    }
    .start()
}

/// `http-keepalive` (`depth` 1) and `http-pipelined` (`depth` 16, hyper
/// with `pipeline_flush(true)`): hello-world requests/s over `cfg.conns`
/// keep-alive connections.
pub fn hello(cfg: &Config, out: &mut Outcome, depth: usize) -> Result<()> {
    let (name, target) = if depth == 1 {
        ("http-keepalive", 1.1)
    } else {
        ("http-pipelined", 1.5)
    };
    let [l, p] = alternate(cfg, &format!("{name} vs hyper"), 2, |imp| {
        let server = start(cfg, imp, depth > 1, false)?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let limit = cfg.limit() + Duration::from_millis(cfg.conns as u64 * 2);
        let t = measure::run(cfg.loadgen_cpu(1), limit, || {
            tcp::pipelined(addr, pid, cfg.conns, depth, HttpUnit::default(), cfg.window)
        })?;
        Ok((rate_metrics(&t), describe(&t, "req/s")))
    })?;
    let label = if depth == 1 {
        format!(
            "http hello world, {} keep-alive conns, depth 1, count=1 vs hyper http1 current_thread",
            cfg.conns
        )
    } else {
        format!(
            "http hello world, {}x{depth} pipelined, count=1 vs hyper http1 (pipeline_flush) current_thread",
            cfg.conns
        )
    };
    let row = out.rows.len();
    out.rate_rows(label, "req/s", &l, &p);
    out.target_note(name, row, target);
    Ok(())
}

/// `http-idle-mem`: server RSS per idle keep-alive connection after one
/// request each, against hyper.
pub fn idle_mem(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let n = cfg.idle_conns;
    cfg.check_fds("http-idle-mem", n)?;
    let [l, p] = alternate(cfg, "http-idle-mem vs hyper", 1, |imp| {
        let server = start(cfg, imp, false, true)?;
        let (addr, pid, reported) = (
            server.addr(),
            server.child.pid(),
            server.child.conns_handle(),
        );
        let r = measure::run(cfg.loadgen_cpu(1), Duration::from_secs(120), || {
            http::idle(addr, pid, &reported, n)
        })?;
        drop(server);
        Ok(r.outcome("idle keep-alive HTTP"))
    })?;
    let label = format!(
        "http idle memory, {n} keep-alive conns after one request, server RSS per conn vs hyper (bytes)"
    );
    let row = out.rows.len();
    out.row(label, "B", Better::Lower, &l[0], &p[0]);
    out.idle_target_note("http-idle-mem", "keep-alive", row, n, IDLE_TARGET);
    Ok(())
}

/// A `--publish-api` node: on its own (`redis` `None`), or node `node`
/// of the cluster on the Redis at `redis`; its API and text addresses.
fn start_api_node(
    cpu: Option<usize>,
    redis: Option<(&str, &str)>,
) -> Result<(Server, SocketAddr, SocketAddr)> {
    let mut server = HttpServeOpts {
        imp: HttpImpl::Lubdub,
        pipeline_flush: false,
        publish_api: true,
        redis: redis.map(|(url, _)| url.to_string()),
        node: redis.map(|(_, node)| node.to_string()),
        cpu,
        report_conns: false,
    }
    .start()?;
    let text_port: u16 = server
        .child
        .expect("text_port", Duration::from_secs(5))?
        .parse()?;
    let api = server.addr();
    Ok((server, api, SocketAddr::from(([127, 0, 0, 1], text_port))))
}

/// `publish-api` (`cluster` false) and `publish-api-redis` (true): `POST
/// /api/publish` to a uid with one text member, lubdub alone (no peer has
/// this API): publishes/s, and p50/p99 from the `POST`'s write to the
/// member's receipt. On one node; or with a real redis-server, the POST
/// on node A and the members on node B.
pub fn publish_api(cfg: &Config, out: &mut Outcome, cluster: bool) -> Result<()> {
    let name = if cluster {
        "publish-api-redis"
    } else {
        "publish-api"
    };
    let [l, _] = lubdub_alone(cfg, name, 4, || {
        let (_servers, target, pids, _redis) = if cluster {
            let redis = Redis::start()?;
            let url = redis.url();
            let (a, api, _) = start_api_node(None, Some((&url, "a")))?;
            let (b, _, text) = start_api_node(None, Some((&url, "b")))?;
            let pids = vec![redis.proc.pid(), a.child.pid(), b.child.pid()];
            let redis_port = Some((redis.port, NAMESPACE));
            (
                vec![a, b],
                PublishTarget {
                    api,
                    text,
                    redis: redis_port,
                },
                pids,
                Some(redis),
            )
        } else {
            let (a, api, text) = start_api_node(cfg.server_cpu(1), None)?;
            let pids = vec![a.child.pid()];
            (
                vec![a],
                PublishTarget {
                    api,
                    text,
                    redis: None,
                },
                pids,
                None,
            )
        };
        let loadgen = if cluster { None } else { cfg.loadgen_cpu(1) };
        let r = measure::run(loadgen, cfg.limit(), || {
            http::publish(target.clone(), &pids, PUBLISHERS, cfg.window)
        })?;
        let mut vals = rate_metrics(&r.throughput);
        vals.extend([r.p50_us, r.p99_us]);
        Ok((
            vals,
            format!(
                "{}; POST to receipt p50 {:.0} us, p99 {:.0} us",
                describe(&r.throughput, "publishes/s"),
                r.p50_us,
                r.p99_us
            ),
        ))
    })?;
    let label = if cluster {
        format!(
            "publish API over Redis, {PUBLISHERS} keep-alive publishers, depth 1, POST on node A to a uid \
             whose one text member is on node B, lubdub alone (publishes/s)"
        )
    } else {
        format!(
            "publish API, {PUBLISHERS} keep-alive publishers, depth 1, POST /api/publish to a uid with \
             one local text member, lubdub alone (publishes/s)"
        )
    };
    let cpu = if cluster {
        "↳ CPU of both nodes and Redis per publish (us)"
    } else {
        "↳ server CPU per publish (us)"
    };
    out.row(label, "req/s", Better::Higher, &l[0], &[]);
    out.row(cpu, "us", Better::Lower, &l[1], &[]);
    for (i, q) in [(2, "p50"), (3, "p99")] {
        let label = format!("↳ {q} POST to member's receipt (us)");
        out.row(label, "us", Better::Lower, &l[i], &[]);
    }
    Ok(())
}
