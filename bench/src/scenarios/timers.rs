//! The `timers` scenario: lubdub's `Timer::add`/`Timer::del` against
//! tokio's `DelayQueue`, measured in a child process per implementation.

use std::time::Duration;

use anyhow::Result;

use crate::child::Child;
use crate::peers::timers::TimerOpts;
use crate::report::{si, Better, Config, Outcome};
use crate::scenarios::runs::alternate;

/// `timers`: timer add + delete in a child per implementation
/// (`peers/timers.rs`), two patterns.
pub fn timers(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let [l, p] = alternate(cfg, "timers", 2, |imp| {
        let opts = TimerOpts {
            imp,
            n: cfg.timer_ops,
            cpu: cfg.server_cpu(1),
        };
        let mut child = Child::spawn_server(&opts.to_args())?;
        let limit = Duration::from_secs(120);
        let i: f64 = child.expect("interleaved", limit)?.parse()?;
        let b: f64 = child.expect("bulk", limit)?.parse()?;
        Ok((
            vec![i, b],
            format!("add+del interleaved {i:.1} ns, bulk {b:.1} ns"),
        ))
    })?;
    let n = si(cfg.timer_ops as f64);
    let label = format!("timers: {n} x (add, delete), one live (ns per add+del)");
    out.row(label, "ns", Better::Lower, &l[0], &p[0]);
    let label = format!("timers: {n} adds, then {n} deletes (ns per add+del)");
    out.row(label, "ns", Better::Lower, &l[1], &p[1]);
    Ok(())
}
