//! The WebSocket scenarios (the `ws` group): lubdub's WebSocket server
//! next to tokio-tungstenite and fastwebsockets, each in its own process
//! (`peers/ws.rs`), driven by the load generator's WebSocket mode
//! (`load/ws.rs`). See docs/benchmarks.md, "WebSocket".

use std::time::Duration;

use anyhow::Result;

use crate::child::Server;
use crate::load::measure;
use crate::load::ws::{self, WsUnit};
use crate::peers::ws::{WsImpl, WsServeOpts};
use crate::report::{bytes, median, size_name, Better, Config, Impl, Outcome};
use crate::scenarios::runs::{alternate, describe, rate_metrics};

/// Target of `ws-idle-mem`: bytes of server RSS per idle WebSocket connection.
pub const IDLE_TARGET: f64 = 1.5 * 1024.0;

/// `LUBDUB_BENCH_TUNGSTENITE_READ_BUFFER=BYTES`: run the tungstenite peer
/// with that `read_buffer_size` instead of its default (128 KiB), to see
/// what a tuned peer does (docs/benchmarks.md, "WebSocket").
const TUNGSTENITE_READ_BUFFER: &str = "LUBDUB_BENCH_TUNGSTENITE_READ_BUFFER";

/// A `ws-serve` child of `imp`, pinned as `cfg` says.
fn start(cfg: &Config, imp: WsImpl, deflate: bool, report: bool) -> Result<Server> {
    let read_buffer = match std::env::var(TUNGSTENITE_READ_BUFFER) {
        Ok(v) if imp == WsImpl::Tungstenite => Some(
            v.parse()
                .map_err(|_| anyhow::anyhow!("{TUNGSTENITE_READ_BUFFER}={v:?}: not a size"))?,
        ),
        _ => None,
    };
    WsServeOpts {
        imp,
        deflate,
        attack: false,
        cpu: cfg.server_cpu(1),
        report_conns: report,
        read_buffer,
    }
    .start()
}

/// `ws-echo-32`, `ws-echo-4k`: pipelined text echo, lubdub against each
/// peer in turn (a row pair per peer, each alternating lubdub and it).
pub fn echo(cfg: &Config, out: &mut Outcome, payload: usize) -> Result<()> {
    let unit = WsUnit::text(payload);
    for peer in [WsImpl::Tungstenite, WsImpl::FastWebSockets] {
        let name = format!("ws-echo-{} vs {}", size_name(payload), peer.name());
        let [l, p] = alternate(cfg, &name, 2, |imp| {
            let which = match imp {
                Impl::Lubdub => WsImpl::Lubdub,
                Impl::Tokio => peer,
            };
            let server = start(cfg, which, false, false)?;
            let (addr, pid) = (server.addr(), server.child.pid());
            let limit = cfg.limit() + Duration::from_millis(cfg.conns as u64 * 2);
            let t = measure::run(cfg.loadgen_cpu(1), limit, || {
                ws::pipelined(addr, pid, cfg.conns, cfg.depth, unit, cfg.window)
            })?;
            Ok((rate_metrics(&t), describe(&t, "msg/s")))
        })?;
        let label = format!(
            "ws echo {} text, {}x{} pipelined, count=1 vs {} current_thread",
            bytes(payload as f64),
            cfg.conns,
            cfg.depth,
            peer.label()
        );
        out.rate_rows(label, "msg/s", &l, &p);
    }
    Ok(())
}

/// `ws-handshakes`: connect, upgrade, close handshake, against tungstenite.
pub fn handshakes(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let [l, p] = alternate(cfg, "ws-handshakes vs tungstenite", 2, |imp| {
        let which = match imp {
            Impl::Lubdub => WsImpl::Lubdub,
            Impl::Tokio => WsImpl::Tungstenite,
        };
        let server = start(cfg, which, false, false)?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let t = measure::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            ws::handshakes(addr, pid, cfg.churners, cfg.window)
        })?;
        Ok((rate_metrics(&t), describe(&t, "handshakes/s")))
    })?;
    let label = format!(
        "ws handshakes, {} churners: connect + upgrade + close handshake, vs tokio-tungstenite",
        cfg.churners
    );
    out.rate_rows(label, "conn/s", &l, &p);
    Ok(())
}

/// `ws-idle-mem`: server RSS per idle upgraded connection, against
/// tungstenite.
pub fn idle_mem(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let n = cfg.idle_conns;
    cfg.check_fds("ws-idle-mem", n)?;
    let unit = WsUnit::text(32);
    let [l, p] = alternate(cfg, "ws-idle-mem vs tungstenite", 1, |imp| {
        let which = match imp {
            Impl::Lubdub => WsImpl::Lubdub,
            Impl::Tokio => WsImpl::Tungstenite,
        };
        let server = start(cfg, which, false, true)?;
        let (addr, pid, reported) = (
            server.addr(),
            server.child.pid(),
            server.child.conns_handle(),
        );
        let r = measure::run(cfg.loadgen_cpu(1), Duration::from_secs(120), || {
            ws::idle(addr, pid, &reported, n, unit)
        })?;
        drop(server);
        Ok(r.outcome("idle WebSocket"))
    })?;
    let label = format!(
        "ws idle memory, {n} upgraded conns, server RSS per conn vs tokio-tungstenite (bytes)"
    );
    out.row(label, "B", Better::Lower, &l[0], &p[0]);
    let m = median(&l[0]);
    out.notes.push(format!(
        "ws-idle-mem: target <= 1.5 KiB (1536 B) per idle WebSocket connection; lubdub median \
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

/// `ws-deflate`: lubdub's echo with permessage-deflate against lubdub's
/// echo without it (no peer has deflate: tungstenite 0.30 lacks it), word
/// text of 32 B and 4 KiB.
pub fn deflate(cfg: &Config, out: &mut Outcome) -> Result<()> {
    for payload in [32, 4096] {
        let name = format!("ws-deflate-{} vs lubdub plain", size_name(payload));
        let mut ratios = Vec::new();
        let [l, p] = alternate(cfg, &name, 2, |imp| {
            let on = imp == Impl::Lubdub;
            let server = start(cfg, WsImpl::Lubdub, on, false)?;
            let (addr, pid) = (server.addr(), server.child.pid());
            let limit = cfg.limit() + Duration::from_millis(cfg.conns as u64 * 2);
            let r = measure::run(cfg.loadgen_cpu(1), limit, || {
                ws::deflate_pipelined(addr, pid, cfg.conns, cfg.depth, payload, on, cfg.window)
            })?;
            if on {
                ratios.push(r.wire_ratio);
            }
            Ok((
                rate_metrics(&r.throughput),
                format!(
                    "{}; deflate {}, reply payload on the wire {:.0}% of the message",
                    describe(&r.throughput, "msg/s"),
                    if r.negotiated { "on" } else { "off" },
                    r.wire_ratio * 100.0
                ),
            ))
        })?;
        let label = format!(
            "ws echo {} word text, {}x{} pipelined, lubdub with permessage-deflate vs lubdub without",
            bytes(payload as f64),
            cfg.conns,
            cfg.depth
        );
        out.rate_rows(label, "msg/s", &l, &p);
        out.notes.push(format!(
            "ws-deflate {}: server CPU per message {:.2} us with deflate, {:.2} us without \
             ({:.1}x); replies on the wire at {:.0}% of their size",
            bytes(payload as f64),
            median(&l[1]),
            median(&p[1]),
            median(&l[1]) / median(&p[1]),
            median(&ratios) * 100.0
        ));
    }
    Ok(())
}
