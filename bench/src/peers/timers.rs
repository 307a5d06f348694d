//! Timer churn, measured in a child process per implementation:
//! `lubdub-bench timers-child <lubdub|tokio> --n N [--cpu C]` prints
//! `interleaved <ns per add+del>` and `bulk <ns per add+del>`.
//!
//! * lubdub: `Timer::add(1 h, || {})` and `Timer::del(id)` on a running
//!   event loop (inside `on_worker_start`).
//! * tokio: `tokio_util::time::DelayQueue::insert((), 1 h)` and
//!   `remove(&key)` inside a current_thread runtime. DelayQueue is tokio's
//!   keyed "add a timer, get a handle, cancel it by handle" structure, the
//!   same contract as `Timer::add`/`Timer::del`. (Creating and dropping a
//!   `tokio::time::sleep` future is not equivalent: an unpolled `Sleep`
//!   never registers with the timer wheel, so it would measure nothing.)
//!
//! Two patterns, each over `n` timers after a warm-up of `n / 10`:
//! * interleaved: add one, delete it, repeat (a short-lived timeout per
//!   request);
//! * bulk: add `n` (all live at once), then delete them in insertion order.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use lubdub::{Text, Timer, Worker};
use tokio_util::time::DelayQueue;

use crate::report::Impl;
use crate::sys;

const FAR: Duration = Duration::from_secs(3600);

/// The command line of a `timers-child`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
pub struct TimerOpts {
    /// lubdub's timers, or tokio's `DelayQueue`.
    #[arg(value_enum)]
    pub imp: Impl,
    /// Timers added and deleted per pattern.
    #[arg(long, default_value_t = 1_000_000)]
    pub n: usize,
    /// CPU to pin the process to.
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
}

impl TimerOpts {
    /// The command line that makes a child run this measurement.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "timers-child".to_string(),
            self.imp.name().into(),
            "--n".into(),
            self.n.to_string(),
        ];
        if let Some(cpu) = self.cpu {
            a.extend(["--cpu".into(), cpu.to_string()]);
        }
        a
    }
}

/// What a timer child measured: ns per add + delete in each pattern.
#[derive(Debug, Clone, Copy)]
pub struct TimerResult {
    /// Add one, delete it, repeat.
    pub interleaved_ns: f64,
    /// Add all, then delete them all.
    pub bulk_ns: f64,
}

/// Entry point of a timer child.
pub fn child_main(o: &TimerOpts) -> Result<()> {
    sys::die_with_parent();
    if let Some(cpu) = o.cpu {
        sys::pin_current_thread(cpu)?;
    }
    let n = o.n;
    let r = match o.imp {
        Impl::Lubdub => lubdub_timers(n)?,
        Impl::Tokio => tokio_timers(n)?,
    };
    println!("interleaved {}", r.interleaved_ns);
    println!("bulk {}", r.bulk_ns);
    Ok(())
}

fn per_op(t: Instant, n: usize) -> f64 {
    t.elapsed().as_nanos() as f64 / n as f64
}

fn lubdub_timers(n: usize) -> Result<TimerResult> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let mut w = Worker::<Text>::new("text://127.0.0.1:0")?;
    w.name("timers");
    w.on_worker_start(move |_| {
        let _ = tx.send(lubdub_churn(n));
    });
    let h = w.start()?;
    let r = rx
        .recv_timeout(Duration::from_secs(300))
        .map_err(|e| anyhow!("lubdub timer loop: {e}"))?;
    h.stop_and_wait();
    r.map_err(|e| anyhow!(e))
}

/// Runs on the event loop.
fn lubdub_churn(n: usize) -> Result<TimerResult, String> {
    let interleaved = |n: usize| -> Result<(), String> {
        for _ in 0..n {
            let id = Timer::add(FAR, || {}).map_err(|e| e.to_string())?;
            if !Timer::del(id) {
                return Err("Timer::del did not find a fresh timer".into());
            }
        }
        Ok(())
    };
    let bulk = |n: usize| -> Result<(), String> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(Timer::add(FAR, || {}).map_err(|e| e.to_string())?);
        }
        for id in ids {
            if !Timer::del(id) {
                return Err("Timer::del did not find a live timer".into());
            }
        }
        Ok(())
    };
    interleaved(n / 10)?;
    let t = Instant::now();
    interleaved(n)?;
    let interleaved_ns = per_op(t, n);
    bulk(n / 10)?;
    let t = Instant::now();
    bulk(n)?;
    let bulk_ns = per_op(t, n);
    if Timer::count() != 0 {
        return Err(format!("{} timers left", Timer::count()));
    }
    Ok(TimerResult {
        interleaved_ns,
        bulk_ns,
    })
}

fn tokio_timers(n: usize) -> Result<TimerResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut q: DelayQueue<()> = DelayQueue::new();
        let interleaved = |q: &mut DelayQueue<()>, n: usize| {
            for _ in 0..n {
                let k = q.insert((), FAR);
                q.remove(&k);
            }
        };
        let bulk = |q: &mut DelayQueue<()>, n: usize| {
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                keys.push(q.insert((), FAR));
            }
            for k in keys {
                q.remove(&k);
            }
        };
        interleaved(&mut q, n / 10);
        let t = Instant::now();
        interleaved(&mut q, n);
        let interleaved_ns = per_op(t, n);
        bulk(&mut q, n / 10);
        let t = Instant::now();
        bulk(&mut q, n);
        let bulk_ns = per_op(t, n);
        if !q.is_empty() {
            bail!("{} timers left", q.len());
        }
        Ok(TimerResult {
            interleaved_ns,
            bulk_ns,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn timer_arguments_round_trip() {
        let o = TimerOpts {
            imp: Impl::Tokio,
            n: 1000,
            cpu: Some(0),
        };
        assert_eq!(TimerOpts::try_parse_from(o.to_args()).unwrap(), o);
    }
}
