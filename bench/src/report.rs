//! The vocabulary every floor shares: the run's configuration, which
//! implementation a run is for, the rows of the result table, medians and
//! number formatting.
//!
//! This is the ground floor: it imports nothing of the crate but `sys`.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::sys::FdLimit;

/// CPU the server process is pinned to in single-loop scenarios.
pub const SERVER_CPU: usize = 0;
/// CPU the load generator thread is pinned to in single-loop scenarios.
pub const LOADGEN_CPU: usize = 1;

/// What the runner's options make of a run of the benchmarks.
#[derive(Debug, Clone)]
pub struct Config {
    /// Runs per implementation, alternating lubdub, tokio, lubdub, tokio...
    pub runs: usize,
    /// `--quick`: short smoke runs.
    pub quick: bool,
    /// `attack`: `--attacks KIND[=N],...`, only these attacks.
    pub attacks: Option<String>,
    /// `attack`: `--attack-phases B,D,A`, phase lengths in seconds.
    pub attack_phases: Option<String>,
    /// Warm-up and measured window of the throughput scenarios.
    pub window: Window,
    /// Pin server and load generator to separate CPUs (count = 1 scenarios).
    pub pin: bool,
    /// Connections of the echo, ping-pong and frame scenarios.
    pub conns: usize,
    /// Messages in flight per connection in the pipelined scenarios.
    pub depth: usize,
    /// Connections of `echo-10k` (10,000; `--quick`: 2,000).
    pub many_conns: usize,
    /// Connections of the idle-memory and sweep scenarios.
    pub idle_conns: usize,
    /// Timers added and deleted per pattern of `timers`.
    pub timer_ops: usize,
    /// Concurrent connect-close loops of the churn scenarios.
    pub churners: usize,
    /// The runner's fd limit, as raised at start.
    pub fd: FdLimit,
    /// Longest wait for a quiet machine before each run.
    pub max_wait: Duration,
    /// Extra attempts for a run disturbed by other processes.
    pub retries: usize,
}

impl Config {
    /// The CPU a server with `count` event loops is pinned to, if any.
    pub fn server_cpu(&self, count: usize) -> Option<usize> {
        (self.pin && count == 1).then_some(SERVER_CPU)
    }

    /// The CPU the load generator driving a `count`-loop server is pinned
    /// to, if any.
    pub fn loadgen_cpu(&self, count: usize) -> Option<usize> {
        (self.pin && count == 1).then_some(LOADGEN_CPU)
    }

    /// Deadline of one load phase.
    pub fn limit(&self) -> Duration {
        self.window.warmup + self.window.measure + Duration::from_secs(30)
    }

    /// Fails unless the fd limit leaves room for `conns` connections (and
    /// 64 more descriptors) in `scenario`.
    pub fn check_fds(&self, scenario: &str, conns: usize) -> Result<()> {
        if conns as u64 + 64 > self.fd.soft {
            bail!(
                "{scenario} needs {} fds but RLIMIT_NOFILE is {} (hard {})",
                conns + 64,
                self.fd.soft,
                self.fd.hard
            );
        }
        Ok(())
    }
}

/// Timing of a run: warm-up, then the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Load before the window, not measured.
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
}

/// Which column of the table a run is for: lubdub, or the peer it is
/// compared with (named `tokio` on command lines, whatever the peer is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Impl {
    /// The lubdub side.
    Lubdub,
    /// The peer: tokio, or what the scenario compares with.
    Tokio,
}

impl Impl {
    /// The name on command lines and in progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Lubdub => "lubdub",
            Impl::Tokio => "tokio",
        }
    }
}

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// A rate: more is better.
    Higher,
    /// A cost (time, memory, losses): less is better.
    Lower,
    /// A count to read, not to compare (what the attackers met): no ratio.
    Neither,
}

/// One line of the table: a metric measured for both implementations.
#[derive(Debug, Clone)]
pub struct Row {
    /// What the row measures, as the table shows it.
    pub label: String,
    /// The unit of its values; it decides how they are printed.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// lubdub's value in each run.
    pub lubdub: Vec<f64>,
    /// The peer's value in each run.
    pub peer: Vec<f64>,
}

impl Row {
    /// lubdub / peer for throughput, peer / lubdub for costs: above 1
    /// means lubdub did better. Compares medians.
    pub fn ratio(&self) -> f64 {
        let (l, p) = (median(&self.lubdub), median(&self.peer));
        if self.better == Better::Neither {
            return f64::NAN;
        }
        if l == p {
            // Equal, zeros included (no loss on either side).
            return 1.0;
        }
        match self.better {
            Better::Higher => l / p,
            Better::Lower => p / l,
            Better::Neither => f64::NAN,
        }
    }
}

/// What the scenarios of a run produced: the table's rows and the notes
/// printed under it.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The table, in order.
    pub rows: Vec<Row>,
    /// Lines printed under the table (what a scenario wants to say).
    pub notes: Vec<String>,
}

impl Outcome {
    /// Pushes a row with lubdub's values `lubdub` and the peer's `peer`.
    pub fn row(
        &mut self,
        label: impl Into<String>,
        unit: &'static str,
        better: Better,
        lubdub: &[f64],
        peer: &[f64],
    ) {
        self.rows.push(Row {
            label: label.into(),
            unit,
            better,
            lubdub: lubdub.to_vec(),
            peer: peer.to_vec(),
        });
    }

    /// Pushes the rows of a throughput run: the rate (metric 0, in `unit`)
    /// and the server CPU per operation (metric 1).
    pub fn rate_rows(&mut self, label: String, unit: &'static str, l: &[Vec<f64>], p: &[Vec<f64>]) {
        self.rate_rows_of(label, unit, "server", l, p);
    }

    /// [`rate_rows`](Self::rate_rows) with the CPU of `whose` per operation.
    pub fn rate_rows_of(
        &mut self,
        label: String,
        unit: &'static str,
        whose: &str,
        l: &[Vec<f64>],
        p: &[Vec<f64>],
    ) {
        self.row(
            format!("{label} ({unit})"),
            unit,
            Better::Higher,
            &l[0],
            &p[0],
        );
        let cpu = format!("↳ {whose} CPU per operation (us)");
        self.row(cpu, "us", Better::Lower, &l[1], &p[1]);
    }

    /// Pushes the p50 and p99 round-trip rows of a ping-pong run (metrics
    /// 2 and 3, in µs).
    pub fn latency_rows(&mut self, l: &[Vec<f64>], p: &[Vec<f64>]) {
        for (i, q) in [(2, "p50"), (3, "p99")] {
            let label = format!("↳ {q} round trip (us)");
            self.row(label, "us", Better::Lower, &l[i], &p[i]);
        }
    }

    /// A note under the table: is lubdub's median at least `target` x the
    /// peer's on row `row`?
    pub fn target_note(&mut self, what: &str, row: usize, target: f64) {
        let ratio = self.rows[row].ratio();
        self.notes.push(format!(
            "{what}: target >= {target:.1}x the peer; {ratio:.2}x (medians): {}",
            if ratio >= target { "met" } else { "NOT met" }
        ));
    }
}

/// The median of `v` (NaN if empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// 1234567 -> "1.23M".
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A byte count: "32 B", "4 KiB", "12.5 KiB", "3.2 MiB".
pub fn bytes(v: f64) -> String {
    let a = v.abs();
    if a >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    } else if a >= 1024.0 && v % 1024.0 == 0.0 {
        format!("{} KiB", v / 1024.0)
    } else if a >= 10.0 * 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

/// `32` -> "32", `4096` -> "4k": a size in a scenario's name.
pub fn size_name(n: usize) -> String {
    if n >= 1024 {
        format!("{}k", n / 1024)
    } else {
        n.to_string()
    }
}

fn value(unit: &str, v: f64) -> String {
    match unit {
        "B" => format!("{v:.0}"),
        "us" | "ns" if v.abs() < 10.0 => format!("{v:.2}"),
        "us" | "ns" if v.abs() < 1000.0 => format!("{v:.1}"),
        "us" | "ns" => format!("{v:.0}"),
        "ms" if v.abs() < 10.0 => format!("{v:.2}"),
        "ms" if v.abs() < 1000.0 => format!("{v:.1}"),
        "ms" | "%" | "MiB" | "n" => format!("{v:.0}"),
        _ => si(v),
    }
}

fn cell(unit: &str, v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{}–{}–{}",
        value(unit, min),
        value(unit, median(v)),
        value(unit, max)
    )
}

/// The result table, Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| scenario | lubdub (min–median–max) | tokio peer (min–median–max) | ratio |\n");
    s.push_str("|---|---|---|---|\n");
    for r in rows {
        let ratio = r.ratio();
        let ratio = if ratio.is_finite() {
            format!("{ratio:.2}x")
        } else {
            "-".to_string()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {ratio} |\n",
            r.label,
            cell(r.unit, &r.lubdub),
            cell(r.unit, &r.peer),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios_follow_which_way_is_better() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let mut out = Outcome::default();
        out.row("rate", "msg/s", Better::Higher, &[200.0], &[100.0]);
        out.row("cost", "us", Better::Lower, &[2.0], &[4.0]);
        out.row("none lost", "n", Better::Lower, &[0.0], &[0.0]);
        out.row("closed with 1009", "n", Better::Neither, &[3.0], &[0.0]);
        let ratios: Vec<f64> = out.rows.iter().map(Row::ratio).collect();
        assert_eq!(ratios[..3], [2.0, 2.0, 1.0]);
        assert!(ratios[3].is_nan(), "counts are not compared");
        let t = table(&out.rows);
        assert!(
            t.contains("| rate | 200–200–200 | 100–100–100 | 2.00x |"),
            "{t}"
        );
        assert!(
            t.contains("| closed with 1009 | 3–3–3 | 0–0–0 | - |"),
            "{t}"
        );
    }

    #[test]
    fn numbers_print_short() {
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(bytes(4096.0), "4 KiB");
        assert_eq!(bytes(32.0), "32 B");
        assert_eq!(size_name(4096), "4k");
        assert_eq!(size_name(32), "32");
    }
}
