//! The scenarios, how runs alternate, and the result table.
//!
//! # Adding a scenario
//!
//! Write a `fn(&Config, &mut Outcome) -> Result<()>` that calls
//! [`alternate`] with a closure doing one run for one implementation
//! (start a [`Server`] child, drive it with a `loadgen` function, return
//! the metric values), push one [`Row`] per metric onto the outcome, and
//! add a [`Scenario`] entry to [`SCENARIOS`]. A server the scenario needs
//! is a new [`Proto`] or a new flag of `serve` (see `servers.rs`), so that
//! it runs in its own process like the others. The heartbeat sweep went in
//! that way: [`sweep`] runs `serve <impl> text --sweep N` children (see
//! `sweep.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::child::{Child, Server};
use crate::clients::ClientOpts;
use crate::loadgen::{self, Throughput, Unit, Window};
use crate::servers::{Impl, Proto, ServeOpts};
use crate::sys::{self, FdLimit};

/// CPU the server process is pinned to in single-loop scenarios.
pub const SERVER_CPU: usize = 0;
/// CPU the load generator thread is pinned to in single-loop scenarios.
pub const LOADGEN_CPU: usize = 1;

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
    pub window: Window,
    /// Pin server and load generator to separate CPUs (count = 1 scenarios).
    pub pin: bool,
    /// Connections of the echo, ping-pong and frame scenarios.
    pub conns: usize,
    /// Messages in flight per connection in the pipelined scenarios.
    pub depth: usize,
    /// Connections of `echo-10k` (10,000; `--quick`: 2,000).
    pub many_conns: usize,
    pub idle_conns: usize,
    pub timer_ops: usize,
    pub churners: usize,
    pub fd: FdLimit,
    /// Longest wait for a quiet machine before each run.
    pub max_wait: Duration,
    /// Extra attempts for a run disturbed by other processes.
    pub retries: usize,
}

impl Config {
    pub(crate) fn server_cpu(&self, count: usize) -> Option<usize> {
        (self.pin && count == 1).then_some(SERVER_CPU)
    }

    pub(crate) fn loadgen_cpu(&self, count: usize) -> Option<usize> {
        (self.pin && count == 1).then_some(LOADGEN_CPU)
    }

    /// Deadline of one load phase.
    pub(crate) fn limit(&self) -> Duration {
        self.window.warmup + self.window.measure + Duration::from_secs(30)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One line of the table: a metric measured for both implementations.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub unit: &'static str,
    pub better: Better,
    pub lubdub: Vec<f64>,
    pub peer: Vec<f64>,
}

impl Row {
    /// lubdub / peer for throughput, peer / lubdub for costs: above 1
    /// means lubdub did better. Compares medians.
    pub fn ratio(&self) -> f64 {
        let (l, p) = (median(&self.lubdub), median(&self.peer));
        if l == p {
            // Equal, zeros included (no loss on either side).
            return 1.0;
        }
        match self.better {
            Better::Higher => l / p,
            Better::Lower => p / l,
        }
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: Vec<Row>,
    /// Lines printed under the table (what a scenario wants to say).
    pub notes: Vec<String>,
}

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&Config, &mut Outcome) -> Result<()>,
    /// Part of `all` (false: runs only when named).
    pub in_all: bool,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "echo-1",
        about: "text echo, 32 B lines, 100 conns x 16 pipelined; lubdub count=1 vs tokio current_thread",
        run: |c, o| echo(c, o, 1),
        in_all: true,
    },
    Scenario {
        name: "echo-2",
        about: "text echo, 32 B lines, 100 conns x 16 pipelined; lubdub count=2 vs tokio multi_thread(2)",
        run: |c, o| echo(c, o, 2),
        in_all: true,
    },
    Scenario {
        name: "echo-1k",
        about: "text echo, 32 B lines, 1,000 conns x 4 pipelined; count=1 vs current_thread",
        run: |c, o| echo_many(c, o, 1000, 4),
        in_all: true,
    },
    Scenario {
        name: "echo-10k",
        about: "text echo, 32 B lines, 10,000 conns x 1 (depth 1); count=1 vs current_thread",
        run: |c, o| echo_many(c, o, c.many_conns, 1),
        in_all: true,
    },
    Scenario {
        name: "pingpong",
        about: "text ping-pong, depth 1, 100 conns: round trips/s, p50 and p99 latency",
        run: pingpong,
        in_all: true,
    },
    Scenario {
        name: "frame-32",
        about: "Workerman Frame echo, 32 B payloads, 100 conns x 16 pipelined",
        run: |c, o| frame(c, o, 32),
        in_all: true,
    },
    Scenario {
        name: "frame-4k",
        about: "Workerman Frame echo, 4 KiB payloads, 100 conns x 16 pipelined",
        run: |c, o| frame(c, o, 4096),
        in_all: true,
    },
    Scenario {
        name: "idle-mem",
        about: "server RSS per idle connection, 10,000 connections",
        run: idle_mem,
        in_all: true,
    },
    Scenario {
        name: "timers",
        about: "timer add + delete, 1,000,000 timers, ns each (DelayQueue for tokio)",
        run: timers,
        in_all: true,
    },
    Scenario {
        name: "churn",
        about: "connection churn: connect, one echo round trip, close; 32 concurrent churners",
        run: churn,
        in_all: true,
    },
    Scenario {
        name: "client",
        about: "client side: lubdub Client vs tokio Framed client, 100 conns x 16 pipelined 32 B lines, same server",
        run: client,
        in_all: true,
    },
    Scenario {
        name: "sweep",
        about: "heartbeat idle sweep over 10,000 idle connections, nothing expires: us per sweep",
        run: sweep,
        in_all: true,
    },
    Scenario {
        name: "attack",
        about: "healthy ping-pong under attack (slowloris, endless lines, non-readers, invalid UTF-8, connect storm): \
                latency, losses, server CPU, RSS, fds; not in `all`",
        run: crate::attack::attack,
        in_all: false,
    },
    // TLS (issue 14; bench/src/tls/): the `tls` group, not in `all`
    // (about 6 minutes at --runs 5, and `tls-nginx` needs nginx).
    Scenario {
        name: "tls-echo-32",
        about: "TLS text echo, 32 B lines, 100 conns x 16 pipelined; lubdub TLS vs tokio-rustls current_thread",
        run: |c, o| crate::tls::echo(c, o, 32),
        in_all: false,
    },
    Scenario {
        name: "tls-echo-4k",
        about: "TLS text echo, 4 KiB lines, 100 conns x 16 pipelined; lubdub TLS vs tokio-rustls current_thread",
        run: |c, o| crate::tls::echo(c, o, 4096),
        in_all: false,
    },
    Scenario {
        name: "tls-handshakes",
        about: "full TLS handshakes/s (no resumption): connect, handshake, one echo, close; 32 churners",
        run: crate::tls::handshakes,
        in_all: false,
    },
    Scenario {
        name: "wss-echo",
        about: "wss echo, 32 B text messages, 100 conns x 16 pipelined; lubdub-ws vs tokio-tungstenite, both on TLS",
        run: crate::tls::wss_echo,
        in_all: false,
    },
    Scenario {
        name: "tls-nginx",
        about: "lubdub terminating TLS vs nginx (stream, ssl) in front of plain lubdub: pipelined msg/s, ping-pong p99",
        run: crate::tls::nginx,
        in_all: false,
    },
    Scenario {
        name: "tls-idle-mem",
        about: "server RSS per idle TLS connection after the handshake, 10,000 connections",
        run: crate::tls::idle_mem,
        in_all: false,
    },
    // WebSocket (issue 13; bench/src/ws*.rs): the `ws` group, not in `all`.
    Scenario {
        name: "ws-echo-32",
        about: "WebSocket text echo, 32 B, 100 conns x 16 pipelined, masked client frames; \
                lubdub vs tokio-tungstenite, then vs fastwebsockets (group `ws`, not in `all`)",
        run: |c, o| crate::ws::echo(c, o, 32),
        in_all: false,
    },
    Scenario {
        name: "ws-echo-4k",
        about: "WebSocket text echo, 4 KiB, 100 conns x 16 pipelined; vs tokio-tungstenite, vs fastwebsockets",
        run: |c, o| crate::ws::echo(c, o, 4096),
        in_all: false,
    },
    Scenario {
        name: "ws-handshakes",
        about: "WebSocket handshakes/s: connect, upgrade, close handshake; 32 churners; vs tokio-tungstenite",
        run: crate::ws::handshakes,
        in_all: false,
    },
    Scenario {
        name: "ws-idle-mem",
        about: "server RSS per idle upgraded WebSocket connection, 10,000 connections; vs tokio-tungstenite",
        run: crate::ws::idle_mem,
        in_all: false,
    },
    Scenario {
        name: "ws-deflate",
        about: "WebSocket echo with permessage-deflate, 32 B and 4 KiB word text; lubdub vs lubdub without deflate",
        run: crate::ws::deflate,
        in_all: false,
    },
    // Hub (issue 15; bench/src/hub*.rs): the `hub` group, not in `all`.
    Scenario {
        name: "hub-fanout-local",
        about: "hub: 1 message to a group of 10,000 local conns, time until the last has it; \
                lubdub Hub vs tokio broadcast + FramedWrite; group `hub`, not in `all`",
        run: crate::hub::fanout_local,
        in_all: false,
    },
    Scenario {
        name: "hub-fanout-cluster",
        about: "hub: Redis + 3 nodes, publisher on node 1, 1,000 members on nodes 2+3, WebSocket; \
                delivered msg/s and p99 vs Socket.IO 4 + redis-adapter; group `hub`",
        run: crate::hub::fanout_cluster,
        in_all: false,
    },
    Scenario {
        name: "hub-backplane",
        about: "hub: Redis + 3 nodes, 1 member on node 2 and 1 on node 3: publishes/s vs Socket.IO \
                and vs redis-benchmark PUBLISH; group `hub`",
        run: crate::hub::backplane,
        in_all: false,
    },
];

/// Runs `one` for lubdub and the tokio peer in turn, `cfg.runs` times
/// (lubdub, tokio, lubdub, tokio...). `one` returns the metric values of
/// the run and a line describing it. Returns `[lubdub, peer]`, each a
/// list per metric of the values of every run.
pub fn alternate(
    cfg: &Config,
    scenario: &str,
    metrics: usize,
    mut one: impl FnMut(Impl) -> Result<(Vec<f64>, String)>,
) -> Result<[Vec<Vec<f64>>; 2]> {
    let mut out = [vec![Vec::new(); metrics], vec![Vec::new(); metrics]];
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
                let (vals, detail) =
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
                break vals;
            };
            assert_eq!(vals.len(), metrics);
            for (m, v) in vals.into_iter().enumerate() {
                out[k][m].push(v);
            }
        }
    }
    Ok(out)
}

/// Other processes' CPU use (fraction of one CPU) above which a run counts
/// as disturbed.
pub const NOISY: f64 = 0.10;
/// Runs kept although disturbed (retries exhausted), and all runs kept.
pub static NOISY_RUNS: AtomicUsize = AtomicUsize::new(0);
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

pub(crate) fn start_server(
    cfg: &Config,
    imp: Impl,
    proto: Proto,
    count: usize,
    report: bool,
) -> Result<Server> {
    Server::start(
        &ServeOpts {
            imp,
            proto,
            count,
            cpu: cfg.server_cpu(count),
            report_conns: report,
            sweep: None,
            attack: false,
        }
        .to_args(),
    )
}

pub(crate) fn describe(t: &Throughput, unit: &str) -> String {
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
pub(crate) fn rate_metrics(t: &Throughput) -> Vec<f64> {
    vec![t.per_sec, t.server_cpu / t.per_sec * 1e6]
}

/// Pushes the rate row and the server-CPU-per-operation row.
pub(crate) fn push_rate_rows(
    out: &mut Outcome,
    label: String,
    unit: &'static str,
    l: &[Vec<f64>],
    p: &[Vec<f64>],
) {
    push_rate_rows_of(out, label, unit, "server", l, p);
}

/// Pushes the rate row and the row of `whose` CPU per operation.
fn push_rate_rows_of(
    out: &mut Outcome,
    label: String,
    unit: &'static str,
    whose: &str,
    l: &[Vec<f64>],
    p: &[Vec<f64>],
) {
    out.rows.push(Row {
        label: format!("{label} ({unit})"),
        unit,
        better: Better::Higher,
        lubdub: l[0].clone(),
        peer: p[0].clone(),
    });
    out.rows.push(Row {
        label: format!("↳ {whose} CPU per operation (us)"),
        unit: "us",
        better: Better::Lower,
        lubdub: l[1].clone(),
        peer: p[1].clone(),
    });
}

fn pipelined(
    cfg: &Config,
    scenario: &str,
    proto: Proto,
    count: usize,
    unit: Unit,
) -> Result<[Vec<Vec<f64>>; 2]> {
    pipelined_with(cfg, scenario, proto, count, unit, cfg.conns, cfg.depth)
}

/// [`pipelined`] with `conns` connections of `depth` messages in flight.
fn pipelined_with(
    cfg: &Config,
    scenario: &str,
    proto: Proto,
    count: usize,
    unit: Unit,
    conns: usize,
    depth: usize,
) -> Result<[Vec<Vec<f64>>; 2]> {
    alternate(cfg, scenario, 2, |imp| {
        let server = start_server(cfg, imp, proto, count, false)?;
        let (addr, pid) = (server.addr(), server.child.pid());
        // Connecting thousands of sockets takes a while: not part of the
        // window, but of the phase's deadline.
        let mut limit = cfg.limit() + Duration::from_millis(conns as u64 * 2);
        if crate::child::SERVER_WRAP.get().is_some() {
            // A server under valgrind is tens of times slower.
            limit *= 5;
        }
        let t = loadgen::run(cfg.loadgen_cpu(count), limit, || {
            loadgen::pipelined(addr, pid, conns, depth, unit, cfg.window)
        })?;
        Ok((rate_metrics(&t), describe(&t, "msg/s")))
    })
}

fn echo(cfg: &Config, out: &mut Outcome, count: usize) -> Result<()> {
    let name = format!("echo-{count}");
    let [l, p] = pipelined(cfg, &name, Proto::Text, count, Unit::text(32))?;
    let peer = if count == 1 {
        "current_thread".to_string()
    } else {
        format!("multi_thread({count})")
    };
    let label = format!(
        "text echo 32 B, {}x{} pipelined, count={count} vs {peer}",
        cfg.conns, cfg.depth
    );
    push_rate_rows(out, label, "msg/s", &l, &p);
    Ok(())
}

/// Text echo with many connections (`echo-1k`, `echo-10k`): how the cost
/// per message grows with the connection count, count = 1.
fn echo_many(cfg: &Config, out: &mut Outcome, conns: usize, depth: usize) -> Result<()> {
    let name = if conns.is_multiple_of(1000) {
        format!("echo-{}k", conns / 1000)
    } else {
        format!("echo-{conns}")
    };
    let [l, p] = pipelined_with(cfg, &name, Proto::Text, 1, Unit::text(32), conns, depth)?;
    let label = if depth == 1 {
        format!("text echo 32 B, {conns} conns x 1 (depth 1), count=1 vs current_thread")
    } else {
        format!("text echo 32 B, {conns}x{depth} pipelined, count=1 vs current_thread")
    };
    push_rate_rows(out, label, "msg/s", &l, &p);
    Ok(())
}

fn frame(cfg: &Config, out: &mut Outcome, payload: usize) -> Result<()> {
    let name = if payload >= 1024 {
        format!("frame-{}k", payload / 1024)
    } else {
        format!("frame-{payload}")
    };
    let [l, p] = pipelined(cfg, &name, Proto::Frame, 1, Unit::frame(payload))?;
    let label = format!(
        "frame echo {} payload, {}x{} pipelined, count=1",
        bytes(payload as f64),
        cfg.conns,
        cfg.depth
    );
    push_rate_rows(out, label, "msg/s", &l, &p);
    Ok(())
}

fn pingpong(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let unit = Unit::text(32);
    let [l, p] = alternate(cfg, "pingpong", 4, |imp| {
        let server = start_server(cfg, imp, Proto::Text, 1, false)?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let r = loadgen::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            loadgen::pingpong(addr, pid, cfg.conns, unit, cfg.window)
        })?;
        let mut m = rate_metrics(&r.throughput);
        m.extend([r.p50_us, r.p99_us]);
        Ok((
            m,
            format!(
                "{}; p50 {:.1} us, p99 {:.1} us over {} round trips",
                describe(&r.throughput, "rt/s"),
                r.p50_us,
                r.p99_us,
                r.samples
            ),
        ))
    })?;
    let label = format!("text ping-pong depth 1, {} conns", cfg.conns);
    push_rate_rows(out, label, "round trips/s", &l, &p);
    for (i, q) in [(2, "p50"), (3, "p99")] {
        out.rows.push(Row {
            label: format!("↳ {q} round trip (us)"),
            unit: "us",
            better: Better::Lower,
            lubdub: l[i].clone(),
            peer: p[i].clone(),
        });
    }
    Ok(())
}

fn idle_mem(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let unit = Unit::text(32);
    let mut nofile = String::new();
    let [l, p] = alternate(cfg, "idle-mem", 1, |imp| {
        let server = start_server(cfg, imp, Proto::Text, 1, true)?;
        nofile.clone_from(&server.nofile);
        let (addr, pid, reported) = (
            server.addr(),
            server.child.pid(),
            server.child.conns_handle(),
        );
        let r = loadgen::run(cfg.loadgen_cpu(1), Duration::from_secs(120), || {
            loadgen::idle(addr, pid, reported, cfg.idle_conns, unit)
        })?;
        drop(server);
        Ok(r.outcome("idle"))
    })?;
    out.rows.push(Row {
        label: format!(
            "idle memory, {} conns, server RSS per conn (bytes)",
            cfg.idle_conns
        ),
        unit: "B",
        better: Better::Lower,
        lubdub: l[0].clone(),
        peer: p[0].clone(),
    });
    out.notes.push(format!(
        "idle-mem: RLIMIT_NOFILE raised to the hard limit in the runner \
         ({} -> {}, hard {}) and in each server child (soft before, soft, hard: {nofile})",
        cfg.fd.soft_before, cfg.fd.soft, cfg.fd.hard
    ));
    Ok(())
}

fn timers(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let [l, p] = alternate(cfg, "timers", 2, |imp| {
        let mut args = vec![
            "timers-child".to_string(),
            imp.name().into(),
            "--n".into(),
            cfg.timer_ops.to_string(),
        ];
        if cfg.pin {
            args.extend(["--cpu".into(), SERVER_CPU.to_string()]);
        }
        let mut child = Child::spawn(&args)?;
        let limit = Duration::from_secs(120);
        let i: f64 = child.expect("interleaved", limit)?.parse()?;
        let b: f64 = child.expect("bulk", limit)?.parse()?;
        Ok((
            vec![i, b],
            format!("add+del interleaved {i:.1} ns, bulk {b:.1} ns"),
        ))
    })?;
    let n = si(cfg.timer_ops as f64);
    out.rows.push(Row {
        label: format!("timers: {n} x (add, delete), one live (ns per add+del)"),
        unit: "ns",
        better: Better::Lower,
        lubdub: l[0].clone(),
        peer: p[0].clone(),
    });
    out.rows.push(Row {
        label: format!("timers: {n} adds, then {n} deletes (ns per add+del)"),
        unit: "us",
        better: Better::Lower,
        lubdub: l[1].clone(),
        peer: p[1].clone(),
    });
    Ok(())
}

fn churn(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let unit = Unit::text(32);
    let [l, p] = alternate(cfg, "churn", 2, |imp| {
        let server = start_server(cfg, imp, Proto::Text, 1, false)?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let t = loadgen::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            loadgen::churn(addr, pid, cfg.churners, unit, cfg.window)
        })?;
        Ok((rate_metrics(&t), describe(&t, "conn/s")))
    })?;
    let label = format!(
        "connection churn, {} churners, connect + 1 echo + close",
        cfg.churners
    );
    push_rate_rows(out, label, "conn/s", &l, &p);
    Ok(())
}

/// The client side: the same lubdub `count = 1` echo server (pinned to
/// CPU 0) driven by a lubdub `Client` or by the tokio client, each in its
/// own process pinned to CPU 1 (see `clients.rs`).
fn client(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let [l, p] = alternate(cfg, "client", 2, |imp| {
        let server = start_server(cfg, Impl::Lubdub, Proto::Text, 1, false)?;
        let opts = ClientOpts {
            imp,
            port: server.port,
            conns: cfg.conns,
            depth: cfg.depth,
            warmup: cfg.window.warmup,
            measure: cfg.window.measure,
            cpu: cfg.loadgen_cpu(1),
        };
        let (s0, t0) = (sys::process_cpu(server.child.pid())?, Instant::now());
        let mut child = Child::spawn(&opts.to_args())?;
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
    push_rate_rows_of(out, label, "msg/s", "client", &l, &p);
    Ok(())
}

/// The heartbeat's idle sweep over `cfg.idle_conns` idle connections,
/// timed inside the server (see `sweep.rs` for exactly what is timed).
fn sweep(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let n = cfg.idle_conns;
    let [l, p] = alternate(cfg, "sweep", 2, |imp| {
        let mut server = Server::start(
            &ServeOpts {
                imp,
                proto: Proto::Text,
                count: 1,
                cpu: cfg.server_cpu(1),
                report_conns: false,
                sweep: Some(n),
                attack: false,
            }
            .to_args(),
        )?;
        let addr = server.addr();
        let streams = loadgen::run(cfg.loadgen_cpu(1), Duration::from_secs(120), || {
            loadgen::hold_idle(addr, n)
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
                crate::sweep::PASSES
            ),
        ))
    })?;
    out.rows.push(Row {
        label: format!(
            "heartbeat sweep, {n} idle conns, none expires: plugin vs tokio HashMap in a Mutex (us per sweep)"
        ),
        unit: "us",
        better: Better::Lower,
        lubdub: l[0].clone(),
        peer: p[0].clone(),
    });
    out.rows.push(Row {
        label: "↳ naive: walk worker.connections() vs tokio DashMap (us per sweep)".to_string(),
        unit: "us",
        better: Better::Lower,
        lubdub: l[1].clone(),
        peer: p[1].clone(),
    });
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

// ---- formatting ----

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
