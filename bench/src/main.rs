//! lubdub-bench: lubdub side by side with the tokio + tokio-util code a
//! Rust user would write instead.
//!
//! ```text
//! cargo run --release -p lubdub-bench -- all
//! cargo run --release -p lubdub-bench -- echo-1 pingpong --runs 5
//! cargo run --release -p lubdub-bench -- all --quick      # smoke run, < 60 s
//! cargo run --release -p lubdub-bench -- list
//! ```
//!
//! Every server runs in its own process (this binary re-executed with a
//! hidden subcommand such as `serve`), driven by a load generator inside
//! the runner; see docs/benchmarks.md for the method.
//!
//! The floors, each importing only from those below it:
//!
//! 1. `report`, `sys`, `child`, `payload`, `pki`: the shared vocabulary
//!    (configuration, rows, medians, formatting) and process plumbing;
//! 2. `load/` (the load generators) and `peers/` (the servers and what
//!    they are compared with, in child processes);
//! 3. `scenarios/`: the scenarios, one file per family;
//! 4. `scenarios.rs`, the registry, and this file: the command line.

mod child;
#[cfg(test)]
mod e2e;
mod load;
mod payload;
mod peers;
mod pki;
mod report;
mod scenarios;
mod sys;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};

use crate::load::attackers::AttackerOpts;
use crate::load::healthy::HealthyOpts;
use crate::peers::client::ClientOpts;
use crate::peers::hub::{HubLocalOpts, HubNodeOpts};
use crate::peers::tcp::ServeOpts;
use crate::peers::timers::TimerOpts;
use crate::peers::tls::TlsServeOpts;
use crate::peers::ws::WsServeOpts;
use crate::report::{Config, Outcome, Window, LOADGEN_CPU, SERVER_CPU};
use crate::scenarios::runs::{NOISY, NOISY_RUNS, TOTAL_RUNS};
use crate::scenarios::SCENARIOS;

/// lubdub side by side with the tokio code a Rust user would write instead.
///
/// `all`: every scenario but `attack` and the TLS, WebSocket and hub ones;
/// `tls`, `ws`, `hub`: the TLS, WebSocket and hub scenarios.
#[derive(Debug, Parser)]
#[command(
    name = "lubdub-bench",
    bin_name = "lubdub-bench",
    args_conflicts_with_subcommands = true,
    after_help = scenario_list()
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunOptions,
}

/// The runner's options.
#[derive(Debug, Args)]
struct RunOptions {
    /// `all`, `tls`, `ws`, `hub` or scenario names (listed below)
    #[arg(value_name = "SCENARIO", value_parser = known_word)]
    names: Vec<String>,
    /// Runs per implementation, alternating (default 3; --quick: 1)
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Short smoke version (short windows, fewer connections/timers)
    #[arg(long)]
    quick: bool,
    /// Warm-up before each measured window (default 0.5)
    #[arg(long, value_name = "SECS")]
    warmup: Option<f64>,
    /// Measured window (default 3)
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Do not pin server and load generator to separate CPUs
    #[arg(long)]
    no_pin: bool,
    /// Before each run, wait at most this long for other processes to
    /// leave the CPUs alone (default 60; --quick: 5)
    #[arg(long, value_name = "SECS")]
    max_wait: Option<f64>,
    /// Repeat a run disturbed by other processes up to N times
    #[arg(long, value_name = "N", default_value_t = 2)]
    retries: usize,
    /// Run `sh -c CMD` at the start of each measured window of the
    /// throughput scenarios, {pid} = server pid, {secs} = window length
    /// (e.g. --attach 'perf stat -e syscalls:sys_enter_epoll_wait -p {pid} -- sleep {secs}')
    #[arg(long, value_name = "CMD")]
    attach: Option<String>,
    /// Attack scenarios: only these attacks, optionally sized, e.g.
    /// longline=50,storm (attack: slowloris, longline, nonreader, invalid,
    /// storm; attack-ws: ws-bigframe, ws-fragments, ws-slowframe, ws-bomb,
    /// ws-idle-deflate, ws-origin, ws-dupheaders)
    #[arg(long, value_name = "LIST")]
    attacks: Option<String>,
    /// Attack scenarios: seconds before, during, after (default 3,10,10)
    #[arg(long, value_name = "B,D,A")]
    attack_phases: Option<String>,
    /// Start every measured child (servers, timer and client children) as
    /// `CMD <its command line>` (same pid), e.g. --wrap-server 'valgrind
    /// --tool=callgrind --cache-sim=yes', or bench/scripts/ab-against.sh
    #[arg(long, value_name = "CMD")]
    wrap_server: Option<String>,
}

/// The subcommands: `list`, and the children the runner starts.
#[derive(Debug, Subcommand)]
enum Command {
    /// List the scenarios
    List,
    /// A TCP server (lubdub or the tokio peer)
    #[command(hide = true)]
    Serve(ServeOpts),
    /// A TLS server (lubdub or tokio-rustls)
    #[command(hide = true)]
    ServeTls(TlsServeOpts),
    /// A WebSocket server (lubdub, tungstenite or fastwebsockets)
    #[command(hide = true)]
    WsServe(WsServeOpts),
    /// The timer measurement of one implementation
    #[command(hide = true)]
    TimersChild(TimerOpts),
    /// The client side of one implementation
    #[command(hide = true)]
    ClientChild(ClientOpts),
    /// The attack scenario's healthy clients
    #[command(hide = true)]
    HealthyChild(HealthyOpts),
    /// One attacker of the attack scenario
    #[command(hide = true)]
    AttackChild(AttackerOpts),
    /// The hub-fanout-local server
    #[command(hide = true)]
    HubLocalServe(HubLocalOpts),
    /// A lubdub hub cluster node
    #[command(hide = true)]
    HubNode(HubNodeOpts),
}

impl Command {
    /// Runs the subcommand.
    fn run(&self) -> Result<()> {
        match self {
            Command::List => {
                for s in SCENARIOS {
                    println!("{:<10} {}", s.name, s.about);
                }
                Ok(())
            }
            Command::Serve(o) => peers::tcp::serve(o),
            Command::ServeTls(o) => peers::tls::serve(o),
            Command::WsServe(o) => peers::ws::serve(o),
            Command::TimersChild(o) => peers::timers::child_main(o),
            Command::ClientChild(o) => peers::client::child_main(o),
            Command::HealthyChild(o) => load::healthy::child_main(o),
            Command::AttackChild(o) => load::attackers::child_main(o),
            Command::HubLocalServe(o) => peers::hub::serve_local(o),
            Command::HubNode(o) => peers::hub::serve_node(o),
        }
    }

    /// Whether it is a child of the runner, which reads its stdout.
    fn is_child(&self) -> bool {
        !matches!(self, Command::List)
    }
}

/// The `--help` text after the options: the scenarios.
fn scenario_list() -> String {
    let mut s = String::from("Scenarios:\n");
    for sc in SCENARIOS {
        s.push_str(&format!("  {:<10} {}\n", sc.name, sc.about));
    }
    s
}

/// Accepts a group or a scenario name.
fn known_word(word: &str) -> Result<String, String> {
    if scenarios::is_known(word) {
        return Ok(word.to_owned());
    }
    let known: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
    Err(format!(
        "unknown scenario {word:?}; known: all, tls, ws, hub, {}",
        known.join(", ")
    ))
}

fn main() -> ExitCode {
    if std::env::args_os().len() == 1 {
        // No words at all: the usage, as `--help` prints it.
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    let child = cli.command.as_ref().is_some_and(Command::is_child);
    let res = match &cli.command {
        Some(c) => c.run(),
        None => runner(&cli.run),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if child {
                // The runner reads our stdout: tell it why we stop.
                println!("error {e:#}");
            }
            eprintln!("lubdub-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration the options make.
fn config(o: &RunOptions, fd: sys::FdLimit) -> Config {
    let quick = o.quick;
    let secs = |v: f64| Duration::from_secs_f64(v.max(0.0));
    Config {
        runs: o.runs.unwrap_or(if quick { 1 } else { 3 }).max(1),
        quick,
        attacks: o.attacks.clone(),
        attack_phases: o.attack_phases.clone(),
        window: Window {
            warmup: secs(o.warmup.unwrap_or(if quick { 0.2 } else { 0.5 })),
            measure: secs(o.duration.unwrap_or(if quick { 0.5 } else { 3.0 })),
        },
        pin: !o.no_pin && sys::online_cpus() >= 2,
        conns: 100,
        depth: 16,
        many_conns: if quick { 2_000 } else { 10_000 },
        idle_conns: if quick { 2_000 } else { 10_000 },
        timer_ops: if quick { 100_000 } else { 1_000_000 },
        churners: 32,
        fd,
        max_wait: secs(o.max_wait.unwrap_or(if quick { 5.0 } else { 60.0 })),
        retries: o.retries,
    }
}

/// Runs the scenarios `o` names and prints the table.
fn runner(o: &RunOptions) -> Result<()> {
    if o.names.is_empty() {
        bail!("no scenario given (see --help)");
    }
    if let Some(cmd) = &o.attach {
        let _ = load::measure::ATTACH.set(cmd.clone());
    }
    if let Some(cmd) = &o.wrap_server {
        let _ = child::SERVER_WRAP.set(cmd.clone());
    }
    let selected = scenarios::select(&o.names);
    let names: Vec<&str> = selected.iter().map(|s| s.name).collect();
    scenarios::hub::preflight(&names)?;

    let fd = sys::raise_fd_limit().context("raising RLIMIT_NOFILE")?;
    let cfg = config(o, fd);
    for name in &names {
        let needs = match *name {
            "idle-mem" | "sweep" | "tls-idle-mem" => cfg.idle_conns,
            "echo-10k" => cfg.many_conns,
            _ => continue,
        };
        cfg.check_fds(name, needs)?;
    }

    let mut header = vec![
        format!("machine: {}", sys::machine_description()),
        format!(
            "runs: {} per implementation, alternating lubdub/tokio; window {:?} after {:?} warm-up",
            cfg.runs, cfg.window.measure, cfg.window.warmup
        ),
        if cfg.pin {
            format!(
                "pinning: count=1 servers on CPU {SERVER_CPU}, load generator on CPU {LOADGEN_CPU} \
                 (sched_setaffinity); count=2 scenarios unpinned"
            )
        } else {
            "pinning: off".to_string()
        },
        format!(
            "RLIMIT_NOFILE (runner): soft {} -> {}, hard {}",
            fd.soft_before, fd.soft, fd.hard
        ),
    ];
    if cfg.quick {
        header.push("quick mode: smoke numbers only, not for comparison".into());
    }
    for h in &header {
        eprintln!("{h}");
    }

    let started = Instant::now();
    let mut outcome = Outcome::default();
    let mut failures = Vec::new();
    for s in &selected {
        eprintln!("== {}: {}", s.name, s.about);
        if let Err(e) = (s.run)(&cfg, &mut outcome) {
            eprintln!("!! {} failed: {e:#}", s.name);
            failures.push(format!("{}: {e:#}", s.name));
        }
    }

    println!();
    for h in &header {
        println!("{h}");
    }
    println!();
    print!("{}", report::table(&outcome.rows));
    println!();
    println!(
        "ratio: lubdub/peer for throughput, peer/lubdub for costs (time, memory); \
         above 1 = lubdub better. Medians compared."
    );
    for n in &outcome.notes {
        println!("{n}");
    }
    let noisy = NOISY_RUNS.load(Ordering::Relaxed);
    let total = TOTAL_RUNS.load(Ordering::Relaxed);
    println!(
        "quiet machine: {noisy} of {total} runs kept had other processes above {:.0}% of a CPU",
        NOISY * 100.0
    );
    for f in &failures {
        println!("FAILED {f}");
    }
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{} scenario(s) failed", failures.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner's words and options parse as before the move to clap,
    /// and the children's command lines are subcommands.
    #[test]
    fn command_lines_parse() {
        <Cli as clap::CommandFactory>::command().debug_assert();
        let cli = Cli::try_parse_from([
            "lubdub-bench",
            "echo-1",
            "tls",
            "--runs",
            "5",
            "--quick",
            "--attack-phases",
            "1,2,3",
            "--wrap-server",
            "valgrind --tool=callgrind",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.names, ["echo-1", "tls"]);
        assert_eq!(cli.run.runs, Some(5));
        assert!(cli.run.quick);
        assert!(Cli::try_parse_from(["lubdub-bench", "nope"]).is_err());
        assert!(Cli::try_parse_from(["lubdub-bench", "all", "--bogus"]).is_err());
        let serve = Cli::try_parse_from(["lubdub-bench", "serve", "tokio", "text", "--count", "2"])
            .unwrap();
        assert!(matches!(serve.command, Some(Command::Serve(ref o)) if o.count == 2));
        let list = Cli::try_parse_from(["lubdub-bench", "list"]).unwrap();
        assert!(matches!(list.command, Some(Command::List)));
    }
}
