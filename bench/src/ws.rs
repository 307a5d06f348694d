//! The WebSocket scenarios (`ws` runs them all): lubdub's WebSocket
//! server next to tokio-tungstenite and fastwebsockets, each in its own
//! process (`ws_peers.rs`), driven by the load generator's WebSocket mode
//! (`ws_load.rs`). See docs/benchmarks.md, "WebSocket".

use std::time::Duration;

use anyhow::{bail, Result};

use crate::child::Server;
use crate::loadgen;
use crate::scenarios::{
    alternate, bytes, describe, median, push_rate_rows, rate_metrics, Better, Config, Outcome, Row,
};
use crate::servers::Impl;
use crate::ws_load::{self, WsUnit};
use crate::ws_peers::{WsImpl, WsServeOpts};

/// The scenarios `ws` stands for, in order.
pub const GROUP: &[&str] = &[
    "ws-echo-32",
    "ws-echo-4k",
    "ws-handshakes",
    "ws-idle-mem",
    "ws-deflate",
];

/// Target of `ws-idle-mem`: bytes of server RSS per idle WebSocket connection.
pub const IDLE_TARGET: f64 = 1.5 * 1024.0;

/// `LUBDUB_BENCH_TUNGSTENITE_READ_BUFFER=BYTES`: run the tungstenite peer
/// with that `read_buffer_size` instead of its default (128 KiB), to see
/// what a tuned peer does (docs/benchmarks.md, "WebSocket").
const TUNGSTENITE_READ_BUFFER: &str = "LUBDUB_BENCH_TUNGSTENITE_READ_BUFFER";

fn start(cfg: &Config, imp: WsImpl, deflate: bool, report: bool) -> Result<Server> {
    let read_buffer = match std::env::var(TUNGSTENITE_READ_BUFFER) {
        Ok(v) if imp == WsImpl::Tungstenite => Some(
            v.parse()
                .map_err(|_| anyhow::anyhow!("{TUNGSTENITE_READ_BUFFER}={v:?}: not a size"))?,
        ),
        _ => None,
    };
    Server::start(
        &WsServeOpts {
            imp,
            deflate,
            cpu: cfg.server_cpu(1),
            report_conns: report,
            read_buffer,
        }
        .to_args(),
    )
}

fn size_name(payload: usize) -> String {
    if payload >= 1024 {
        format!("{}k", payload / 1024)
    } else {
        payload.to_string()
    }
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
            let t = loadgen::run(cfg.loadgen_cpu(1), limit, || {
                ws_load::pipelined(addr, pid, cfg.conns, cfg.depth, unit, cfg.window)
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
        push_rate_rows(out, label, "msg/s", &l, &p);
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
        let t = loadgen::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            ws_load::handshakes(addr, pid, cfg.churners, cfg.window)
        })?;
        Ok((rate_metrics(&t), describe(&t, "handshakes/s")))
    })?;
    let label = format!(
        "ws handshakes, {} churners: connect + upgrade + close handshake, vs tokio-tungstenite",
        cfg.churners
    );
    push_rate_rows(out, label, "conn/s", &l, &p);
    Ok(())
}

/// `ws-idle-mem`: server RSS per idle upgraded connection, against
/// tungstenite.
pub fn idle_mem(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let n = cfg.idle_conns;
    if n as u64 + 64 > cfg.fd.soft {
        bail!(
            "ws-idle-mem needs {} fds but RLIMIT_NOFILE is {} (hard {})",
            n + 64,
            cfg.fd.soft,
            cfg.fd.hard
        );
    }
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
        let r = loadgen::run(cfg.loadgen_cpu(1), Duration::from_secs(120), || {
            ws_load::idle(addr, pid, reported, n, unit)
        })?;
        drop(server);
        Ok(r.outcome("idle WebSocket"))
    })?;
    out.rows.push(Row {
        label: format!(
            "ws idle memory, {n} upgraded conns, server RSS per conn vs tokio-tungstenite (bytes)"
        ),
        unit: "B",
        better: Better::Lower,
        lubdub: l[0].clone(),
        peer: p[0].clone(),
    });
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
            let r = loadgen::run(cfg.loadgen_cpu(1), limit, || {
                ws_load::deflate_pipelined(addr, pid, cfg.conns, cfg.depth, payload, on, cfg.window)
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
        push_rate_rows(out, label, "msg/s", &l, &p);
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

#[cfg(test)]
mod tests {
    use crate::scenarios::SCENARIOS;

    /// `ws` names every `ws-*` scenario, and none of them is in `all`.
    #[test]
    fn the_ws_group_is_every_ws_scenario_and_none_is_in_all() {
        let ws: Vec<_> = SCENARIOS
            .iter()
            .filter(|s| s.name.starts_with("ws-"))
            .collect();
        assert_eq!(
            ws.iter().map(|s| s.name).collect::<Vec<_>>(),
            super::GROUP.to_vec()
        );
        assert!(ws.iter().all(|s| !s.in_all));
    }
}
