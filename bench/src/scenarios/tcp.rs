//! The plain TCP scenarios: text echo (`echo-1`, `echo-2`, `echo-1k`,
//! `echo-10k`), ping-pong, Frame echo, idle memory and connection churn,
//! lubdub's `serve` child against the tokio peer's, driven by the TCP load
//! (`load/tcp.rs`).

use std::time::Duration;

use anyhow::Result;

use crate::child::SERVER_WRAP;
use crate::load::measure;
use crate::load::tcp::{self, Unit};
use crate::peers::tcp::{Proto, ServeOpts};
use crate::report::{bytes, size_name, Better, Config, Impl, Outcome};
use crate::scenarios::runs::{alternate, describe, rate_metrics, start_server};

fn pipelined(
    cfg: &Config,
    scenario: &str,
    proto: Proto,
    count: usize,
    unit: Unit,
) -> Result<[Vec<Vec<f64>>; 2]> {
    pipelined_with(cfg, scenario, proto, count, unit, cfg.conns, cfg.depth)
}

/// [`pipelined`] with `conns` connections of `depth` messages in flight.
fn pipelined_with(
    cfg: &Config,
    scenario: &str,
    proto: Proto,
    count: usize,
    unit: Unit,
    conns: usize,
    depth: usize,
) -> Result<[Vec<Vec<f64>>; 2]> {
    alternate(cfg, scenario, 2, |imp| {
        let server = start_server(cfg, imp, proto, count, false)?;
        let (addr, pid) = (server.addr(), server.child.pid());
        // Connecting thousands of sockets takes a while: not part of the
        // window, but of the phase's deadline.
        let mut limit = cfg.limit() + Duration::from_millis(conns as u64 * 2);
        if SERVER_WRAP.get().is_some() {
            // A server under valgrind is tens of times slower.
            limit *= 5;
        }
        let t = measure::run(cfg.loadgen_cpu(count), limit, || {
            tcp::pipelined(addr, pid, conns, depth, unit, cfg.window)
        })?;
        Ok((rate_metrics(&t), describe(&t, "msg/s")))
    })
}

/// `metrics`: `echo-1`'s load against lubdub with Prometheus metrics on
/// and scraped 10 times a second (the lubdub column) and the same server
/// without metrics (the peer's column).
pub fn metrics(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let [on, off] = alternate(cfg, "metrics", 2, |imp| {
        let server = ServeOpts {
            metrics: imp == Impl::Lubdub,
            ..ServeOpts::echo(Impl::Lubdub, Proto::Text, 1, cfg.server_cpu(1))
        }
        .start()?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let t = measure::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            tcp::pipelined(addr, pid, cfg.conns, cfg.depth, Unit::text(32), cfg.window)
        })?;
        Ok((rate_metrics(&t), describe(&t, "msg/s")))
    })?;
    let label = format!(
        "text echo 32 B, {}x{} pipelined, count=1: metrics on, scraped 10/s (lubdub) vs off (peer)",
        cfg.conns, cfg.depth
    );
    out.rate_rows(label, "msg/s", &on, &off);
    Ok(())
}

/// `echo-1`, `echo-2`: text echo, 100 x 16 pipelined, `count` event
/// loops against a current_thread or multi_thread(count) tokio peer.
pub fn echo(cfg: &Config, out: &mut Outcome, count: usize) -> Result<()> {
    let name = format!("echo-{count}");
    let [l, p] = pipelined(cfg, &name, Proto::Text, count, Unit::text(32))?;
    let peer = if count == 1 {
        "current_thread".to_string()
    } else {
        format!("multi_thread({count})")
    };
    let label = format!(
        "text echo 32 B, {}x{} pipelined, count={count} vs {peer}",
        cfg.conns, cfg.depth
    );
    out.rate_rows(label, "msg/s", &l, &p);
    Ok(())
}

/// Text echo with many connections (`echo-1k`, `echo-10k`): how the cost
/// per message grows with the connection count, count = 1.
pub fn echo_many(cfg: &Config, out: &mut Outcome, conns: usize, depth: usize) -> Result<()> {
    let name = if conns.is_multiple_of(1000) {
        format!("echo-{}k", conns / 1000)
    } else {
        format!("echo-{conns}")
    };
    let [l, p] = pipelined_with(cfg, &name, Proto::Text, 1, Unit::text(32), conns, depth)?;
    let label = if depth == 1 {
        format!("text echo 32 B, {conns} conns x 1 (depth 1), count=1 vs current_thread")
    } else {
        format!("text echo 32 B, {conns}x{depth} pipelined, count=1 vs current_thread")
    };
    out.rate_rows(label, "msg/s", &l, &p);
    Ok(())
}

/// `frame-32`, `frame-4k`: Workerman Frame echo of `payload`-byte
/// payloads, 100 x 16 pipelined.
pub fn frame(cfg: &Config, out: &mut Outcome, payload: usize) -> Result<()> {
    let name = format!("frame-{}", size_name(payload));
    let [l, p] = pipelined(cfg, &name, Proto::Frame, 1, Unit::frame(payload))?;
    let label = format!(
        "frame echo {} payload, {}x{} pipelined, count=1",
        bytes(payload as f64),
        cfg.conns,
        cfg.depth
    );
    out.rate_rows(label, "msg/s", &l, &p);
    Ok(())
}

/// `pingpong`: depth-1 text ping-pong over 100 connections, round trips
/// per second and their p50 and p99.
pub fn pingpong(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let unit = Unit::text(32);
    let [l, p] = alternate(cfg, "pingpong", 4, |imp| {
        let server = start_server(cfg, imp, Proto::Text, 1, false)?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let r = measure::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            tcp::pingpong(addr, pid, cfg.conns, unit, cfg.window)
        })?;
        let mut m = rate_metrics(&r.throughput);
        m.extend([r.p50_us, r.p99_us]);
        Ok((
            m,
            format!(
                "{}; p50 {:.1} us, p99 {:.1} us over {} round trips",
                describe(&r.throughput, "rt/s"),
                r.p50_us,
                r.p99_us,
                r.samples
            ),
        ))
    })?;
    let label = format!("text ping-pong depth 1, {} conns", cfg.conns);
    out.rate_rows(label, "round trips/s", &l, &p);
    out.latency_rows(&l, &p);
    Ok(())
}

/// `idle-mem`: server RSS per idle connection.
pub fn idle_mem(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let unit = Unit::text(32);
    let mut nofile = String::new();
    let [l, p] = alternate(cfg, "idle-mem", 1, |imp| {
        let server = start_server(cfg, imp, Proto::Text, 1, true)?;
        nofile.clone_from(&server.nofile);
        let (addr, pid, reported) = (
            server.addr(),
            server.child.pid(),
            server.child.conns_handle(),
        );
        let r = measure::run(cfg.loadgen_cpu(1), Duration::from_secs(120), || {
            tcp::idle(addr, pid, &reported, cfg.idle_conns, unit)
        })?;
        drop(server);
        Ok(r.outcome("idle"))
    })?;
    let label = format!(
        "idle memory, {} conns, server RSS per conn (bytes)",
        cfg.idle_conns
    );
    out.row(label, "B", Better::Lower, &l[0], &p[0]);
    out.notes.push(format!(
        "idle-mem: RLIMIT_NOFILE raised to the hard limit in the runner \
         ({} -> {}, hard {}) and in each server child (soft before, soft, hard: {nofile})",
        cfg.fd.soft_before, cfg.fd.soft, cfg.fd.hard
    ));
    Ok(())
}

/// `churn`: connect, one echo round trip, close, by 32 churners.
pub fn churn(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let unit = Unit::text(32);
    let [l, p] = alternate(cfg, "churn", 2, |imp| {
        let server = start_server(cfg, imp, Proto::Text, 1, false)?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let t = measure::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            tcp::churn(addr, pid, cfg.churners, unit, cfg.window)
        })?;
        Ok((rate_metrics(&t), describe(&t, "conn/s")))
    })?;
    let label = format!(
        "connection churn, {} churners, connect + 1 echo + close",
        cfg.churners
    );
    out.rate_rows(label, "conn/s", &l, &p);
    Ok(())
}
