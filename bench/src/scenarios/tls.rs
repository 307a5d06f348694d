//! The TLS scenarios (issue 14, section 7, the `tls` group): lubdub
//! terminating TLS itself next to tokio-rustls, tokio-tungstenite over
//! tokio-rustls, and nginx terminating TLS in front of plain lubdub.
//!
//! * One certificate per scenario (`pki.rs`): the servers present the
//!   leaf; the load generator trusts the CA.
//! * The load generator is the TCP one, given TLS streams (`load/tls.rs`):
//!   its client never resumes a session, and every handshake is checked to
//!   have been a full one.
//! * The servers are child processes: `serve-tls` (`peers/tls.rs`), the
//!   plain lubdub `serve` child behind nginx, and nginx itself
//!   (`peers/nginx.rs`).

use std::time::Duration;

use anyhow::Result;

use crate::child::Server;
use crate::load::measure;
use crate::load::tcp::Unit;
use crate::load::tls::{self, TlsClient};
use crate::load::ws::WsUnit;
use crate::peers::nginx::{Nginx, NginxBin};
use crate::peers::tcp::Proto;
use crate::peers::tls::{Kind, TlsServeOpts};
use crate::pki::Pki;
use crate::report::{bytes, median, size_name, Better, Config, Impl, Outcome};
use crate::scenarios::runs::{alternate, describe, rate_metrics, start_server};

/// The peer's name in the labels of a TLS scenario.
fn peer(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "tokio-rustls current_thread",
        Kind::Ws => "tokio-tungstenite on tokio-rustls, current_thread",
    }
}

/// A `serve-tls` child of `imp` speaking `kind`, presenting `pki`'s
/// certificate, pinned as `cfg` says.
fn start_tls(cfg: &Config, pki: &Pki, imp: Impl, kind: Kind, report_conns: bool) -> Result<Server> {
    TlsServeOpts::new(pki, imp, kind, cfg.server_cpu(1), report_conns).start()
}

/// `tls-echo-32`, `tls-echo-4k`: TLS text echo, 100 x 16 pipelined.
pub fn echo(cfg: &Config, out: &mut Outcome, line: usize) -> Result<()> {
    let name = format!("tls-echo-{}", size_name(line));
    let pki = Pki::generate()?;
    let client = TlsClient::trusting(&pki)?;
    let unit = Unit::text(line);
    let [l, p] = alternate(cfg, &name, 2, |imp| {
        let server = start_tls(cfg, &pki, imp, Kind::Text, false)?;
        let (addr, pids) = (server.addr(), [server.child.pid()]);
        let (t, session) = measure::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            tls::pipelined(&client, addr, &pids, cfg.conns, cfg.depth, unit, cfg.window)
        })?;
        Ok((
            rate_metrics(&t),
            format!("{}; {session}", describe(&t, "msg/s")),
        ))
    })?;
    let first = out.rows.len();
    let label = format!(
        "TLS text echo {}, {}x{} pipelined, count=1 vs {}",
        bytes(line as f64),
        cfg.conns,
        cfg.depth,
        peer(Kind::Text)
    );
    out.rate_rows(label, "msg/s", &l, &p);
    out.target_note(&name, first, 1.0);
    Ok(())
}

/// `tls-handshakes`: full handshakes per second, each followed by one echo
/// and a close (close_notify, then FIN), 32 churners.
pub fn handshakes(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let pki = Pki::generate()?;
    let client = TlsClient::pinning_leaf(&pki)?;
    let unit = Unit::text(32);
    let [l, p] = alternate(cfg, "tls-handshakes", 2, |imp| {
        let server = start_tls(cfg, &pki, imp, Kind::Text, false)?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let (t, session) = measure::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            tls::handshakes(&client, addr, pid, cfg.churners, unit, cfg.window)
        })?;
        Ok((
            rate_metrics(&t),
            format!("{}; {session}", describe(&t, "handshakes/s")),
        ))
    })?;
    let first = out.rows.len();
    let label = format!(
        "TLS full handshakes (no resumption), {} churners: connect, handshake, 1 echo, close, vs {}",
        cfg.churners,
        peer(Kind::Text)
    );
    out.rate_rows(label, "handshakes/s", &l, &p);
    out.target_note("tls-handshakes", first, 1.0);
    Ok(())
}

/// `wss-echo`: WebSocket over TLS, 32-byte text messages, 100 x 16
/// pipelined.
pub fn wss_echo(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let pki = Pki::generate()?;
    let client = TlsClient::trusting(&pki)?;
    let unit = WsUnit::text(32);
    let [l, p] = alternate(cfg, "wss-echo", 2, |imp| {
        let server = start_tls(cfg, &pki, imp, Kind::Ws, false)?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let (t, session) = measure::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            tls::ws_pipelined(&client, addr, pid, cfg.conns, cfg.depth, unit, cfg.window)
        })?;
        Ok((
            rate_metrics(&t),
            format!("{}; {session}", describe(&t, "msg/s")),
        ))
    })?;
    let label = format!(
        "wss echo 32 B text messages, {}x{} pipelined, lubdub-ws vs {}",
        cfg.conns,
        cfg.depth,
        peer(Kind::Ws)
    );
    out.rate_rows(label, "msg/s", &l, &p);
    Ok(())
}

/// One side of `tls-nginx`: lubdub terminating TLS (`Impl::Lubdub`), or
/// nginx terminating it in front of the plain lubdub server
/// (`Impl::Tokio` stands for the peer in `alternate`). Both pinned to the
/// server CPU: the same core serves either way.
struct NginxSide {
    /// The lubdub server: TLS, or the plain backend behind nginx.
    lubdub: Server,
    nginx: Option<Nginx>,
}

impl NginxSide {
    fn start(cfg: &Config, pki: &Pki, bin: &NginxBin, imp: Impl) -> Result<NginxSide> {
        Ok(match imp {
            Impl::Lubdub => NginxSide {
                lubdub: start_tls(cfg, pki, Impl::Lubdub, Kind::Text, false)?,
                nginx: None,
            },
            Impl::Tokio => {
                let lubdub = start_server(cfg, Impl::Lubdub, Proto::Text, 1, false)?;
                let nginx = Nginx::start(bin, &pki.cert, &pki.key, lubdub.port, cfg.server_cpu(1))?;
                NginxSide {
                    lubdub,
                    nginx: Some(nginx),
                }
            }
        })
    }

    /// Where the load generator connects (TLS either way).
    fn addr(&self) -> std::net::SocketAddr {
        match &self.nginx {
            Some(n) => n.addr(),
            None => self.lubdub.addr(),
        }
    }

    /// The processes whose CPU time is the server's.
    fn pids(&self) -> Vec<u32> {
        let mut p = vec![self.lubdub.child.pid()];
        if let Some(n) = &self.nginx {
            p.insert(0, n.pid());
        }
        p
    }

    fn name(&self) -> &'static str {
        if self.nginx.is_some() {
            "nginx -> lubdub"
        } else {
            "lubdub TLS"
        }
    }
}

/// `tls-nginx`: lubdub terminating TLS against nginx's stream module
/// terminating it in front of plain lubdub; pipelined throughput, then
/// depth-1 ping-pong latency.
pub fn nginx(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let bin = NginxBin::find()?;
    let pki = Pki::generate()?;
    let client = TlsClient::trusting(&pki)?;
    let unit = Unit::text(32);
    let [l, p] = alternate(cfg, "tls-nginx echo", 2, |imp| {
        let side = NginxSide::start(cfg, &pki, &bin, imp)?;
        let (addr, pids) = (side.addr(), side.pids());
        let (t, session) = measure::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            tls::pipelined(&client, addr, &pids, cfg.conns, cfg.depth, unit, cfg.window)
        })?;
        Ok((
            rate_metrics(&t),
            format!("{}: {}; {session}", side.name(), describe(&t, "msg/s")),
        ))
    })?;
    let label = format!(
        "TLS text echo 32 B, {}x{} pipelined: lubdub TLS vs nginx TLS -> plain lubdub, one core",
        cfg.conns, cfg.depth
    );
    out.rate_rows(label, "msg/s", &l, &p);

    let [l, p] = alternate(cfg, "tls-nginx ping-pong", 4, |imp| {
        let side = NginxSide::start(cfg, &pki, &bin, imp)?;
        let (addr, pids) = (side.addr(), side.pids());
        let (r, session) = measure::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            tls::pingpong(&client, addr, &pids, cfg.conns, unit, cfg.window)
        })?;
        let mut m = rate_metrics(&r.throughput);
        m.extend([r.p50_us, r.p99_us]);
        Ok((
            m,
            format!(
                "{}: {}; p50 {:.1} us, p99 {:.1} us over {} round trips; {session}",
                side.name(),
                describe(&r.throughput, "rt/s"),
                r.p50_us,
                r.p99_us,
                r.samples
            ),
        ))
    })?;
    let label = format!(
        "TLS text ping-pong depth 1, {} conns: lubdub TLS vs nginx TLS -> plain lubdub",
        cfg.conns
    );
    out.rate_rows(label, "round trips/s", &l, &p);
    out.latency_rows(&l, &p);
    let (lm, pm) = (median(&l[3]), median(&p[3]));
    out.notes.push(format!(
        "tls-nginx: target p99 better than the nginx hop; lubdub {lm:.1} us, nginx -> lubdub {pm:.1} us (medians): {}",
        if lm < pm { "met" } else { "NOT met" }
    ));
    out.notes.push(format!(
        "tls-nginx: {} ({}), stream module, `listen ... ssl` + `proxy_pass`, master_process off, \
         pinned with the plain lubdub backend to the server CPU; its CPU rows add both processes",
        bin.path.display(),
        bin.version
    ));
    Ok(())
}

/// `tls-idle-mem`: server RSS per idle TLS connection after the handshake.
pub fn idle_mem(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let pki = Pki::generate()?;
    let client = TlsClient::trusting(&pki)?;
    let unit = Unit::text(32);
    let [l, p] = alternate(cfg, "tls-idle-mem", 1, |imp| {
        let server = start_tls(cfg, &pki, imp, Kind::Text, true)?;
        let (addr, pid, reported) = (
            server.addr(),
            server.child.pid(),
            server.child.conns_handle(),
        );
        let r = measure::run(cfg.loadgen_cpu(1), Duration::from_secs(180), || {
            tls::idle(&client, addr, pid, &reported, cfg.idle_conns, unit)
        })?;
        drop(server);
        Ok(r.outcome("idle TLS"))
    })?;
    let label = format!(
        "idle TLS memory, {} conns after the handshake, server RSS per conn vs {} (bytes)",
        cfg.idle_conns,
        peer(Kind::Text)
    );
    out.row(label, "B", Better::Lower, &l[0], &p[0]);
    Ok(())
}
