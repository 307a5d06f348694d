//! What every scenario family shares: runs alternate between lubdub and
//! its peer, each after a wait for a quiet machine and repeated if other
//! processes disturbed it; a throughput run's metrics and progress line;
//! the plain TCP echo server child.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::child::Server;
use crate::load::measure::Throughput;
use crate::peers::tcp::{Proto, ServeOpts};
use crate::report::{si, Config, Impl};
use crate::sys;

/// Runs `one` for lubdub and the tokio peer in turn, `cfg.runs` times
/// (lubdub, tokio, lubdub, tokio...). `one` returns the metric values of
/// the run and a line describing it. Returns `[lubdub, peer]`, each a
/// list per metric of the values of every run.
pub fn alternate(
    cfg: &Config,
    scenario: &str,
    metrics: usize,
    mut one: impl FnMut(Impl) -> Result<(Vec<f64>, String)>,
) -> Result<RunValues> {
    let (out, _) = alternate_with(cfg, scenario, metrics, |imp| {
        let (vals, detail) = one(imp)?;
        Ok((vals, detail, ()))
    })?;
    Ok(out)
}

/// Per implementation (`[lubdub, peer]`), per metric, the value of every
/// run kept.
pub type RunValues = [Vec<Vec<f64>>; 2];

/// [`alternate`] for runs that also return something of their own (the
/// attackers' outcomes, say): that of every run kept, in order, per
/// implementation (`[lubdub, peer]`), after the metrics.
pub fn alternate_with<T>(
    cfg: &Config,
    scenario: &str,
    metrics: usize,
    mut one: impl FnMut(Impl) -> Result<(Vec<f64>, String, T)>,
) -> Result<(RunValues, [Vec<T>; 2])> {
    let mut out = [vec![Vec::new(); metrics], vec![Vec::new(); metrics]];
    let mut extra: [Vec<T>; 2] = [Vec::new(), Vec::new()];
    for run in 1..=cfg.runs {
        for (k, imp) in [Impl::Lubdub, Impl::Tokio].into_iter().enumerate() {
            let mut attempt = 0;
            let vals = loop {
                wait_quiet(cfg.max_wait);
                let (b0, o0, t0) = (
                    sys::machine_busy()?,
                    sys::self_and_children_cpu(),
                    Instant::now(),
                );
                let (vals, detail, own) =
                    one(imp).with_context(|| format!("{scenario}, run {run}, {}", imp.name()))?;
                let other = (sys::machine_busy()?)
                    .saturating_sub(b0)
                    .saturating_sub(sys::self_and_children_cpu() - o0)
                    .as_secs_f64()
                    / t0.elapsed().as_secs_f64();
                let noisy = other > NOISY;
                eprintln!(
                    "  [{scenario}] run {run}/{} {:<6} {detail}{}",
                    cfg.runs,
                    imp.name(),
                    if noisy {
                        format!(" [other processes {:.0}% over the run]", other * 100.0)
                    } else {
                        String::new()
                    }
                );
                if noisy && attempt < cfg.retries {
                    attempt += 1;
                    eprintln!(
                        "  [{scenario}] machine busy: run repeated ({attempt}/{})",
                        cfg.retries
                    );
                    continue;
                }
                if noisy {
                    NOISY_RUNS.fetch_add(1, Ordering::Relaxed);
                }
                TOTAL_RUNS.fetch_add(1, Ordering::Relaxed);
                break (vals, own);
            };
            let (vals, own) = vals;
            assert_eq!(vals.len(), metrics);
            for (m, v) in vals.into_iter().enumerate() {
                out[k][m].push(v);
            }
            extra[k].push(own);
        }
    }
    Ok((out, extra))
}

/// Other processes' CPU use (fraction of one CPU) above which a run counts
/// as disturbed.
pub const NOISY: f64 = 0.10;
/// Runs kept although disturbed (retries exhausted).
pub static NOISY_RUNS: AtomicUsize = AtomicUsize::new(0);
/// All runs kept.
pub static TOTAL_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Waits until other processes use less than [`NOISY`] of a CPU over
/// 500 ms, at most `max` (then goes on regardless).
fn wait_quiet(max: Duration) {
    let start = Instant::now();
    let mut said = false;
    loop {
        let (Ok(b0), o0) = (sys::machine_busy(), sys::self_and_children_cpu()) else {
            return;
        };
        std::thread::sleep(Duration::from_millis(500));
        let Ok(b1) = sys::machine_busy() else { return };
        let other = b1
            .saturating_sub(b0)
            .saturating_sub(sys::self_and_children_cpu() - o0)
            .as_secs_f64()
            / 0.5;
        if other <= NOISY {
            return;
        }
        if start.elapsed() >= max {
            eprintln!(
                "  machine still busy ({:.0}% of a CPU used by other processes) after {max:?}: going on",
                other * 100.0
            );
            return;
        }
        if !said {
            eprintln!(
                "  waiting for a quiet machine ({:.0}% of a CPU used by other processes)",
                other * 100.0
            );
            said = true;
        }
    }
}

/// Starts a plain `serve` echo child of `imp` speaking `proto` with `count`
/// event loops, pinned as `cfg` says, printing `conns N` if `report_conns`.
pub fn start_server(
    cfg: &Config,
    imp: Impl,
    proto: Proto,
    count: usize,
    report_conns: bool,
) -> Result<Server> {
    ServeOpts {
        report_conns,
        ..ServeOpts::echo(imp, proto, count, cfg.server_cpu(count))
    }
    .start()
}

/// The progress line of a throughput run: rate in `unit`, CPU use, and
/// warnings when the load generator or the machine was the limit.
pub fn describe(t: &Throughput, unit: &str) -> String {
    let mut s = format!(
        "{} {unit} (CPU: server {:.0}%, load generator {:.0}%, other processes {:.0}%)",
        si(t.per_sec),
        t.server_cpu * 100.0,
        t.loadgen_cpu * 100.0,
        t.other_cpu * 100.0
    );
    s.push_str(&format!(
        "; server threads slept {:.3}, preempted {:.3} times per op",
        t.server_sleeps / t.per_sec,
        t.server_preempted / t.per_sec
    ));
    if t.loadgen_cpu > 0.95 {
        s.push_str(" [load generator saturated]");
    }
    if t.other_cpu > 0.10 {
        s.push_str(" [machine not quiet]");
    }
    s
}

/// The metrics of a throughput run: rate, and server CPU per operation
/// (µs), which stays comparable even when the load generator is the
/// bottleneck.
pub fn rate_metrics(t: &Throughput) -> Vec<f64> {
    vec![t.per_sec, t.server_cpu / t.per_sec * 1e6]
}
