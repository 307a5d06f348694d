//! The HTTP scenarios (the `http` group): lubdub's `Worker<Http>` next to
//! hyper 1.x, each in its own process (`peers/http.rs`), driven by the
//! load generator's HTTP mode (`load/http.rs`); and lubdub's publish API
//! alone. See docs/benchmarks.md, "HTTP".

use std::time::Duration;

use anyhow::Result;

use crate::child::Server;
use crate::load::http;
use crate::load::measure;
use crate::peers::http::{HttpImpl, HttpServeOpts};
use crate::report::{median, Better, Config, Impl, Outcome};
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
            http::pipelined(addr, pid, cfg.conns, depth, cfg.window)
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
    out.row(label, "B", Better::Lower, &l[0], &p[0]);
    let m = median(&l[0]);
    out.notes.push(format!(
        "http-idle-mem: target <= 2 KiB (2048 B) per idle keep-alive connection; lubdub median \
         {m:.0} B over {n} connections{}",
        if n != 10_000 {
            " (not 10,000: not comparable with the target)"
        } else if m <= IDLE_TARGET {
            ": met"
        } else {
            ": NOT met"
        }
    ));
    Ok(())
}

/// `publish-api`: `POST /api/publish` to a uid with one local text
/// member, lubdub alone (no peer has this API): publishes/s, and p50/p99
/// from the `POST`'s write to the member's receipt.
pub fn publish_api(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let [l, _] = lubdub_alone(cfg, "publish-api", 4, || {
        let mut server = HttpServeOpts {
            imp: HttpImpl::Lubdub,
            pipeline_flush: false,
            publish_api: true,
            cpu: cfg.server_cpu(1),
            report_conns: false,
        }
        .start()?;
        let text_port: u16 = server
            .child
            .expect("text_port", Duration::from_secs(5))?
            .parse()?;
        let (api, pid) = (server.addr(), server.child.pid());
        let text = std::net::SocketAddr::from(([127, 0, 0, 1], text_port));
        let r = measure::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            http::publish(api, text, pid, PUBLISHERS, cfg.window)
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
    let label = format!(
        "publish API, {PUBLISHERS} keep-alive publishers, depth 1, POST /api/publish to a uid with one \
         local text member, lubdub alone (publishes/s)"
    );
    out.row(label, "req/s", Better::Higher, &l[0], &[]);
    out.row(
        "↳ server CPU per publish (us)",
        "us",
        Better::Lower,
        &l[1],
        &[],
    );
    out.row(
        "↳ p50 POST to member's receipt (us)",
        "us",
        Better::Lower,
        &l[2],
        &[],
    );
    out.row(
        "↳ p99 POST to member's receipt (us)",
        "us",
        Better::Lower,
        &l[3],
        &[],
    );
    Ok(())
}
