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
//! Every server runs in its own process (this binary re-executed with the
//! hidden `serve` subcommand), driven by one load generator inside the
//! runner; see docs/benchmarks.md for the method.

mod attack;
mod attackers;
mod child;
mod clients;
mod healthy;
mod hub;
mod hub_wire;
mod loadgen;
mod scenarios;
mod servers;
mod sweep;
mod sys;
mod timers;
mod tls;
mod ws;
mod ws_load;
mod ws_peers;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::loadgen::Window;
use crate::scenarios::{Config, Outcome, SCENARIOS};

const USAGE: &str = "\
usage: lubdub-bench <all | tls | ws | hub | SCENARIO...> [options]
       lubdub-bench list

`all`: every scenario but `attack` and the TLS, WebSocket and hub ones;
`tls`, `ws`, `hub`: the TLS, WebSocket and hub scenarios.

options:
  --runs N          runs per implementation, alternating (default 3; --quick: 1)
  --quick           short smoke version (short windows, fewer connections/timers)
  --warmup SECS     warm-up before each measured window (default 0.5)
  --duration SECS   measured window (default 3)
  --no-pin          do not pin server and load generator to separate CPUs
  --max-wait SECS   before each run, wait at most this long for other processes
                    to leave the CPUs alone (default 60; --quick: 5)
  --retries N       repeat a run disturbed by other processes up to N times (default 2)
  --attach CMD      run `sh -c CMD` at the start of each measured window of the
                    throughput scenarios, {pid} = server pid, {secs} = window length
                    (e.g. --attach 'perf stat -e syscalls:sys_enter_epoll_wait -p {pid} -- sleep {secs}')
  --attacks LIST    attack scenario: only these attacks, optionally sized, e.g.
                    longline=50,storm (slowloris, longline, nonreader, invalid, storm)
  --attack-phases B,D,A  attack scenario: seconds before, during, after (default 3,10,10)
  --wrap-server CMD start every server child as `CMD <server command line>` (same pid),
                    e.g. --wrap-server 'valgrind --tool=callgrind --cache-sim=yes'
";

/// Parses the value after flag `flag`.
pub(crate) fn next_num<'a, T: std::str::FromStr>(
    it: &mut impl Iterator<Item = &'a String>,
    flag: &str,
) -> Result<T> {
    let v = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| anyhow!("{flag}: {v:?} is not a valid value"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let child = matches!(
        args.first().map(String::as_str),
        Some(
            "serve"
                | "serve-tls"
                | "ws-serve"
                | "timers-child"
                | "client-child"
                | "healthy-child"
                | "attack-child"
                | "hub-local-serve"
                | "hub-node"
        )
    );
    let res = match args.first().map(String::as_str) {
        Some("serve") => servers::ServeOpts::from_args(&args[1..]).and_then(|o| servers::serve(&o)),
        Some("serve-tls") => tls::servers::serve_main(&args[1..]),
        Some("timers-child") => timers::child_main(&args[1..]),
        Some("client-child") => clients::child_main(&args[1..]),
        Some("healthy-child") => healthy::healthy_main(&args[1..]),
        Some("attack-child") => attackers::attack_main(&args[1..]),
        Some("ws-serve") => {
            ws_peers::WsServeOpts::from_args(&args[1..]).and_then(|o| ws_peers::serve(&o))
        }
        Some("hub-local-serve") => hub::local_serve_main(&args[1..]),
        Some("hub-node") => hub::node_main(&args[1..]),
        Some("list") => {
            for s in SCENARIOS {
                println!("{:<10} {}", s.name, s.about);
            }
            Ok(())
        }
        None | Some("-h" | "--help" | "help") => {
            print!("{USAGE}\nscenarios:\n");
            for s in SCENARIOS {
                println!("  {:<10} {}", s.name, s.about);
            }
            Ok(())
        }
        Some(_) => runner(&args),
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

fn runner(args: &[String]) -> Result<()> {
    let mut names: Vec<&str> = Vec::new();
    let mut runs: Option<usize> = None;
    let mut quick = false;
    let mut warmup: Option<f64> = None;
    let mut duration: Option<f64> = None;
    let mut pin = true;
    let mut max_wait: Option<f64> = None;
    let mut retries = 2;
    let mut attacks: Option<String> = None;
    let mut attack_phases: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = Some(next_num(&mut it, a)?),
            "--quick" => quick = true,
            "--warmup" => warmup = Some(next_num(&mut it, a)?),
            "--duration" => duration = Some(next_num(&mut it, a)?),
            "--no-pin" => pin = false,
            "--max-wait" => max_wait = Some(next_num(&mut it, a)?),
            "--retries" => retries = next_num(&mut it, a)?,
            "--attach" => {
                let cmd = it
                    .next()
                    .ok_or_else(|| anyhow!("--attach needs a command"))?;
                let _ = loadgen::ATTACH.set(cmd.clone());
            }
            "--attacks" => {
                attacks = Some(
                    it.next()
                        .ok_or_else(|| anyhow!("--attacks needs a list"))?
                        .clone(),
                )
            }
            "--attack-phases" => {
                attack_phases = Some(
                    it.next()
                        .ok_or_else(|| anyhow!("--attack-phases needs B,D,A"))?
                        .clone(),
                )
            }
            "--wrap-server" => {
                let cmd = it
                    .next()
                    .ok_or_else(|| anyhow!("--wrap-server needs a command"))?;
                let _ = child::SERVER_WRAP.set(cmd.clone());
            }
            "all" => names.extend(SCENARIOS.iter().filter(|s| s.in_all).map(|s| s.name)),
            "tls" => names.extend(tls::GROUP),
            "ws" => names.extend(ws::GROUP),
            "hub" => names.extend(
                SCENARIOS
                    .iter()
                    .filter(|s| s.name.starts_with("hub-"))
                    .map(|s| s.name),
            ),
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n{USAGE}"),
            name => {
                if !SCENARIOS.iter().any(|s| s.name == name) {
                    let known: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
                    bail!(
                        "unknown scenario {name:?}; known: all, {}",
                        known.join(", ")
                    );
                }
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        bail!("no scenario given\n{USAGE}");
    }
    names.dedup();
    hub::preflight(&names)?;

    let fd = sys::raise_fd_limit().context("raising RLIMIT_NOFILE")?;
    let cpus = sys::online_cpus();
    let pin = pin && cpus >= 2;
    let secs = |v: f64| Duration::from_secs_f64(v.max(0.0));
    let cfg = Config {
        runs: runs.unwrap_or(if quick { 1 } else { 3 }).max(1),
        quick,
        attacks,
        attack_phases,
        window: Window {
            warmup: secs(warmup.unwrap_or(if quick { 0.2 } else { 0.5 })),
            measure: secs(duration.unwrap_or(if quick { 0.5 } else { 3.0 })),
        },
        pin,
        conns: 100,
        depth: 16,
        many_conns: if quick { 2_000 } else { 10_000 },
        idle_conns: if quick { 2_000 } else { 10_000 },
        timer_ops: if quick { 100_000 } else { 1_000_000 },
        churners: 32,
        fd,
        max_wait: secs(max_wait.unwrap_or(if quick { 5.0 } else { 60.0 })),
        retries,
    };
    for name in &names {
        let needs = match *name {
            "idle-mem" | "sweep" | "tls-idle-mem" => cfg.idle_conns,
            "echo-10k" => cfg.many_conns,
            _ => continue,
        };
        if needs as u64 + 64 > fd.soft {
            bail!(
                "{name} needs {} fds but RLIMIT_NOFILE is {} (hard {})",
                needs + 64,
                fd.soft,
                fd.hard
            );
        }
    }

    let mut header = vec![
        format!("machine: {}", sys::machine_description()),
        format!(
            "runs: {} per implementation, alternating lubdub/tokio; window {:?} after {:?} warm-up",
            cfg.runs, cfg.window.measure, cfg.window.warmup
        ),
        if pin {
            format!(
                "pinning: count=1 servers on CPU {}, load generator on CPU {} (sched_setaffinity); \
                 count=2 scenarios unpinned",
                scenarios::SERVER_CPU,
                scenarios::LOADGEN_CPU
            )
        } else {
            "pinning: off".to_string()
        },
        format!(
            "RLIMIT_NOFILE (runner): soft {} -> {}, hard {}",
            fd.soft_before, fd.soft, fd.hard
        ),
    ];
    if quick {
        header.push("quick mode: smoke numbers only, not for comparison".into());
    }
    for h in &header {
        eprintln!("{h}");
    }

    let started = Instant::now();
    let mut outcome = Outcome::default();
    let mut failures = Vec::new();
    for name in &names {
        let s = SCENARIOS
            .iter()
            .find(|s| s.name == *name)
            .expect("checked above");
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
    print!("{}", scenarios::table(&outcome.rows));
    println!();
    println!(
        "ratio: lubdub/peer for throughput, peer/lubdub for costs (time, memory); \
         above 1 = lubdub better. Medians compared."
    );
    for n in &outcome.notes {
        println!("{n}");
    }
    let noisy = scenarios::NOISY_RUNS.load(std::sync::atomic::Ordering::Relaxed);
    let total = scenarios::TOTAL_RUNS.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "quiet machine: {} of {total} runs kept had other processes above {:.0}% of a CPU",
        noisy,
        scenarios::NOISY * 100.0
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
