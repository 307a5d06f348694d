//! The `client` scenario: the client side, lubdub's `Client` against the
//! tokio client a Rust user would write, both driving the same lubdub
//! server.

use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::child::Child;
use crate::peers::client::ClientOpts;
use crate::peers::tcp::Proto;
use crate::report::{si, Config, Impl, Outcome};
use crate::scenarios::runs::{alternate, start_server};
use crate::sys;

/// The client side: the same lubdub `count = 1` echo server (pinned to
/// CPU 0) driven by a lubdub `Client` or by the tokio client, each in its
/// own process pinned to CPU 1 (see `peers/client.rs`).
pub fn client(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let [l, p] = alternate(cfg, "client", 2, |imp| {
        let server = start_server(cfg, Impl::Lubdub, Proto::Text, 1, false)?;
        let opts = ClientOpts {
            imp,
            port: server.port,
            conns: cfg.conns,
            depth: cfg.depth,
            warmup_ms: cfg.window.warmup.as_millis() as u64,
            measure_ms: cfg.window.measure.as_millis() as u64,
            cpu: cfg.loadgen_cpu(1),
        };
        let (s0, t0) = (sys::process_cpu(server.child.pid())?, Instant::now());
        let mut child = Child::spawn_server(&opts.to_args())?;
        let res = child.expect("result", cfg.limit())?;
        let server_cpu =
            (sys::process_cpu(server.child.pid())? - s0).as_secs_f64() / t0.elapsed().as_secs_f64();
        let v: Vec<f64> = res
            .split_whitespace()
            .map(|x| x.parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad client result {res:?}"))?;
        let [replies, secs, cpu] = v[..] else {
            anyhow::bail!("bad client result {res:?}");
        };
        let rate = replies / secs;
        let mut detail = format!(
            "{} msg/s (CPU: client {:.0}% in the window, server {:.0}% over the whole run)",
            si(rate),
            cpu / secs * 100.0,
            server_cpu * 100.0
        );
        if cpu / secs > 0.95 {
            detail.push_str(" [client saturated]");
        }
        Ok((vec![rate, cpu / replies * 1e6], detail))
    })?;
    let label = format!(
        "client: text echo 32 B, {}x{} pipelined, lubdub Client vs tokio Framed, same lubdub server",
        cfg.conns, cfg.depth
    );
    out.rate_rows_of(label, "msg/s", "client", &l, &p);
    Ok(())
}
