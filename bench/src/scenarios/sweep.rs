//! The `sweep` scenario: the heartbeat's idle sweep over thousands of idle
//! connections, timed inside the server (`peers/sweep.rs`).

use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::load::{measure, tcp};
use crate::peers::sweep::PASSES;
use crate::peers::tcp::{Proto, ServeOpts};
use crate::report::{median, Better, Config, Impl, Outcome};
use crate::scenarios::runs::alternate;

/// The heartbeat's idle sweep over `cfg.idle_conns` idle connections,
/// timed inside the server (see `peers/sweep.rs` for exactly what is
/// timed).
pub fn sweep(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let n = cfg.idle_conns;
    let [l, p] = alternate(cfg, "sweep", 2, |imp| {
        let mut server = ServeOpts {
            sweep: Some(n),
            ..ServeOpts::echo(imp, Proto::Text, 1, cfg.server_cpu(1))
        }
        .start()?;
        let addr = server.addr();
        let streams = measure::run(cfg.loadgen_cpu(1), Duration::from_secs(120), || {
            tcp::hold_idle(addr, n)
        })?;
        let line = server.child.expect("sweep", Duration::from_secs(60));
        // The server goes first, so the TIME_WAIT states land on its side.
        drop(server);
        drop(streams);
        let v: Vec<f64> = line?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("parsing the server's sweep line")?;
        let [scanned, a, b, a_min, b_min] = v[..] else {
            anyhow::bail!("the server's sweep line has {} values, not 5", v.len());
        };
        let (ka, kb) = match imp {
            Impl::Lubdub => ("plugin slab", "DashMap walk"),
            Impl::Tokio => ("Mutex<HashMap> walk", "DashMap walk"),
        };
        Ok((
            vec![a, b],
            format!(
                "{scanned} conns, us per sweep (median, min of {} passes): \
                 {ka} {a:.1} ({a_min:.1}), {kb} {b:.1} ({b_min:.1})",
                PASSES
            ),
        ))
    })?;
    let label = format!(
        "heartbeat sweep, {n} idle conns, none expires: plugin vs tokio HashMap in a Mutex (us per sweep)"
    );
    out.row(label, "us", Better::Lower, &l[0], &p[0]);
    let label = "↳ naive: walk worker.connections() vs tokio DashMap (us per sweep)";
    out.row(label, "us", Better::Lower, &l[1], &p[1]);
    let m = median(&l[0]);
    out.notes.push(format!(
        "sweep: target < 100 us per sweep of 10,000 connections (Workerman's PHP sweep: ~0.6 ms); \
         lubdub plugin median {m:.1} us over {n} connections{}",
        if n != 10_000 {
            " (not 10,000: not comparable with the target)"
        } else if m < 100.0 {
            ": met"
        } else {
            ": NOT met"
        }
    ));
    Ok(())
}
