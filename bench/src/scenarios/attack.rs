//! The `attack` and `attack-ws` scenarios: healthy ping-pong clients timed
//! while other processes attack the server, lubdub and its peer in turn;
//! one runner, switched by the server attacked ([`Target`]).
//!
//! Every party is its own process (this binary re-executed):
//!
//! * the server: for `attack`, `serve lubdub text --attack` (the worker
//!   built by `peers::tcp::lubdub_attack_worker`, the one place where its
//!   settings live) or `serve tokio text` (`Framed<TcpStream, LinesCodec>`
//!   with the same 10 MiB line limit); for `attack-ws`, `ws-serve lubdub
//!   --attack` (`peers::ws::lubdub_ws_attack_worker`) or `ws-serve
//!   tungstenite --attack` (the `ws-*` scenarios' tokio-tungstenite peer);
//! * the healthy clients: `healthy-child --port P --conns 50 --interval-ms 10
//!   [--ws]` (`load/healthy.rs`): each connection sends a 32-byte line (or
//!   WebSocket text message) every 10 ms (waiting for the reply first) and
//!   times it;
//! * one process per attack (`Attack`): `attack-child <kind> --port P --n N`
//!   (`load/attackers.rs`); the WebSocket attackers report what the server
//!   did to them (close codes, HTTP statuses, resets), which `attack-ws`
//!   adds to the table.
//!
//! The runner ([`attack`]) starts the server and the healthy clients, waits
//! out the *before* phase, starts the attackers, waits out the *during*
//! phase, stops them (closing their stdin: they print their counters and
//! exit, and the kernel closes their sockets) and waits out the *after*
//! phase. Phase changes reach the healthy child as `phase N` lines on its
//! stdin; end-of-file ends it. A thread of the runner samples the server's
//! RSS and open descriptors every 100 ms; CPU time, VmRSS and VmHWM are
//! also read at each phase boundary.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use std::collections::BTreeSet;

use crate::child::{Child, Placement, Server};
use crate::load::attackers::{outcome_label, Attack, AttackerOpts, AttackerResult, Target};
use crate::load::healthy::HealthyOpts;
use crate::peers::tcp::{Proto, ServeOpts};
use crate::peers::ws::{WsImpl, WsServeOpts};
use crate::report::{bytes, median, Better, Config, Impl, Outcome, LOADGEN_CPU, SERVER_CPU};
use crate::scenarios::runs::alternate_with;
use crate::sys;

/// How long each phase lasts and how hard each attack hits.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server attacked.
    pub target: Target,
    /// Length of the phase before the attack.
    pub before: Duration,
    /// Length of the attack.
    pub during: Duration,
    /// Length of the phase after it.
    pub after: Duration,
    /// Healthy ping-pong connections.
    pub healthy: usize,
    /// The period of each healthy connection's pings.
    pub interval: Duration,
    /// (attack, connections or concurrent loops) for each attacker process.
    pub attacks: Vec<(Attack, usize)>,
}

impl Plan {
    /// The full plan for `target` (about 25 s of phases per server per
    /// run), or a shorter and lighter smoke version.
    pub fn new(target: Target, quick: bool) -> Plan {
        let s = Duration::from_secs;
        let scale = |n: usize| if quick { n.div_ceil(4) } else { n };
        let attacks = match target {
            Target::Text => vec![
                (Attack::Slowloris, scale(2000)),
                (Attack::LongLine, scale(200)),
                (Attack::NonReader, scale(32)),
                (Attack::Invalid, scale(16)),
                (Attack::Storm, scale(16)),
            ],
            Target::Ws => vec![
                (Attack::WsBigFrame, scale(50)),
                (Attack::WsFragments, scale(50)),
                (Attack::WsSlowFrame, scale(400)),
                (Attack::WsBomb, scale(50)),
                (Attack::WsIdleDeflate, scale(2000)),
                (Attack::WsOrigin, scale(16)),
                (Attack::WsDupHeaders, scale(16)),
            ],
        };
        Plan {
            target,
            before: if quick { s(1) } else { s(3) },
            during: if quick { s(3) } else { s(10) },
            after: if quick { s(3) } else { s(10) },
            healthy: 50,
            interval: Duration::from_millis(10),
            attacks,
        }
    }

    /// The plan for `cfg`: [`Plan::new`], then the runner's
    /// `--attacks KIND[=N],...` (only these attacks, with these sizes; of
    /// the attacks named, those of `target`: one list serves `attack` and
    /// `attack-ws` run together) and `--attack-phases B,D,A` (seconds) if
    /// given.
    pub fn for_config(cfg: &Config, target: Target) -> Result<Plan> {
        let mut plan = Plan::new(target, cfg.quick);
        if let Some(list) = &cfg.attacks {
            let full = std::mem::take(&mut plan.attacks);
            for item in list.split(',').filter(|i| !i.is_empty()) {
                let (name, n) = match item.split_once('=') {
                    Some((name, n)) => (name, Some(n)),
                    None => (item, None),
                };
                let kind = Attack::parse(name)?;
                if kind.target() != target {
                    continue;
                }
                let n = match n {
                    Some(n) => n
                        .parse()
                        .map_err(|_| anyhow!("--attacks: bad size in {item:?}"))?,
                    None => full
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map(|(_, n)| *n)
                        .expect("every attack is in the full plan"),
                };
                plan.attacks.push((kind, n));
            }
            if plan.attacks.is_empty() {
                let names: Vec<&str> = full.iter().map(|(k, _)| k.name()).collect();
                bail!(
                    "--attacks: no attack of `{}` named (its attacks: {})",
                    target.scenario(),
                    names.join(", ")
                );
            }
        }
        if let Some(phases) = &cfg.attack_phases {
            let v: Vec<f64> = phases
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow!("--attack-phases: {phases:?} is not B,D,A in seconds"))?;
            let [b, d, a] = v[..] else {
                bail!("--attack-phases: {phases:?} is not B,D,A in seconds");
            };
            let secs = |x: f64| Duration::from_secs_f64(x.max(0.1));
            (plan.before, plan.during, plan.after) = (secs(b), secs(d), secs(a));
        }
        Ok(plan)
    }

    /// The plan in one line.
    pub fn describe(&self) -> String {
        let a: Vec<String> = self
            .attacks
            .iter()
            .map(|(k, n)| format!("{} x{n}", k.name()))
            .collect();
        format!(
            "{} healthy conns pinging every {:?}; phases {:?} before, {:?} during, {:?} after; attackers: {}",
            self.healthy,
            self.interval,
            self.before,
            self.during,
            self.after,
            a.join(", ")
        )
    }
}

/// The metrics of one run, in row order.
const METRICS: &[(&str, &str, Better)] = &[
    ("healthy p50 round trip, before (ms)", "ms", Better::Lower),
    ("healthy p99 round trip, before (ms)", "ms", Better::Lower),
    ("healthy p50 round trip, during (ms)", "ms", Better::Lower),
    ("healthy p99 round trip, during (ms)", "ms", Better::Lower),
    (
        "healthy p99 round trip, during, from the write (ms)",
        "ms",
        Better::Lower,
    ),
    ("healthy p50 round trip, after (ms)", "ms", Better::Lower),
    ("healthy p99 round trip, after (ms)", "ms", Better::Lower),
    ("healthy pings lost, all phases", "n", Better::Lower),
    (
        "server CPU during the attack (% of a core)",
        "%",
        Better::Lower,
    ),
    (
        "server CPU after the attack (% of a core)",
        "%",
        Better::Lower,
    ),
    ("server RSS before (MiB)", "MiB", Better::Lower),
    ("server peak RSS, VmHWM (MiB)", "MiB", Better::Lower),
    (
        "server RSS at the end of the after phase (MiB)",
        "MiB",
        Better::Lower,
    ),
    ("server fds before", "n", Better::Lower),
    ("server fds, most during", "n", Better::Lower),
    (
        "server fds at the end of the after phase",
        "n",
        Better::Lower,
    ),
];

/// Index of a metric in [`METRICS`].
fn m(label_start: &str) -> usize {
    METRICS
        .iter()
        .position(|(l, _, _)| l.starts_with(label_start))
        .expect("known metric")
}

/// The `attack` scenario: the Text echo servers (see the module
/// documentation).
pub fn attack(cfg: &Config, out: &mut Outcome) -> Result<()> {
    run(cfg, out, Target::Text)
}

/// The `attack-ws` scenario: the WebSocket echo servers, with the
/// attackers' outcomes added to the table.
pub fn attack_ws(cfg: &Config, out: &mut Outcome) -> Result<()> {
    run(cfg, out, Target::Ws)
}

/// What the attackers of one run reported, in plan order.
type Reports = Vec<(Attack, AttackerResult)>;

fn run(cfg: &Config, out: &mut Outcome, target: Target) -> Result<()> {
    let plan = Plan::for_config(cfg, target)?;
    let name = target.scenario();
    eprintln!("  plan: {}", plan.describe());
    let ([l, p], [lr, pr]) =
        alternate_with(cfg, name, METRICS.len(), |imp| one_run(&plan, imp, cfg.pin))?;
    let first = match target {
        Target::Text => "attack: ".to_string(),
        Target::Ws => format!("attack-ws, vs {}: ", WsImpl::Tungstenite.label()),
    };
    for (i, (label, unit, better)) in METRICS.iter().enumerate() {
        let label = format!("{}{label}", if i == 0 { first.as_str() } else { "↳ " });
        out.row(label, unit, *better, &l[i], &p[i]);
    }
    outcome_rows(out, &plan, &lr, &pr);
    let med = |v: &[Vec<f64>], label: &str| median(&v[m(label)]);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let (lp99, pp99) = (
        med(&l, "healthy p99 round trip, during"),
        med(&p, "healthy p99 round trip, during"),
    );
    let lost = l[m("healthy pings lost")]
        .iter()
        .copied()
        .fold(0.0, f64::max);
    let (lpeak, ppeak) = (med(&l, "server peak RSS"), med(&p, "server peak RSS"));
    let after_ok = l[m("server RSS before")]
        .iter()
        .zip(&l[m("server RSS at the end")])
        .all(|(b, a)| *a <= 2.0 * b + 64.0);
    out.notes.push(format!(
        "{name} targets (lubdub): healthy p99 during <= 2x the peer's: {} ({lp99:.1} ms vs {pp99:.1} ms); \
         zero healthy loss: {} (most lost in a run: {lost:.0}); peak RSS <= the peer's: {} ({lpeak:.1} vs {ppeak:.1} MiB); \
         RSS after <= 2x before + 64 MiB in every run: {}",
        verdict(lp99 <= 2.0 * pp99),
        verdict(lost == 0.0),
        verdict(lpeak <= ppeak),
        verdict(after_ok),
    ));
    out.notes.push(format!("{name} plan: {}", plan.describe()));
    Ok(())
}

/// Rows of what the attackers met, for each WebSocket attack (their
/// attackers report outcomes): connections made, connections still open
/// when the attack stopped (if any run had some), and a row per outcome
/// seen in any run of either server (a close code, an HTTP status, a
/// reset...), each a count per run; counts, not compared.
fn outcome_rows(out: &mut Outcome, plan: &Plan, l: &[Reports], p: &[Reports]) {
    for (kind, _) in &plan.attacks {
        if kind.target() != Target::Ws {
            continue;
        }
        let of = |runs: &[Reports], f: &dyn Fn(&AttackerResult) -> u64| -> Vec<f64> {
            runs.iter()
                .map(|r| {
                    r.iter()
                        .filter(|(k, _)| k == kind)
                        .map(|(_, res)| f(res) as f64)
                        .sum()
                })
                .collect()
        };
        let keys: BTreeSet<&String> = l
            .iter()
            .chain(p)
            .flatten()
            .filter(|(k, _)| k == kind)
            .flat_map(|(_, r)| r.outcomes.keys())
            .collect();
        let mut row = |what: String, f: &dyn Fn(&AttackerResult) -> u64| {
            let label = format!("↳ {} attackers: {what}", kind.name());
            out.row(label, "n", Better::Neither, &of(l, f), &of(p, f));
        };
        row("connections made".into(), &|r| r.connects);
        if l.iter()
            .chain(p)
            .flatten()
            .any(|(k, r)| k == kind && r.open > 0)
        {
            row("open when the attack stopped".into(), &|r| r.open);
        }
        for key in keys {
            row(outcome_label(key), &|r| {
                r.outcomes.get(key).copied().unwrap_or(0)
            });
        }
    }
}

/// The server's CPU time, RSS, peak RSS and fds at one moment.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    cpu: Duration,
    rss: u64,
    hwm: u64,
    fds: usize,
}

impl Snapshot {
    fn take(pid: u32) -> Result<Snapshot> {
        let at = Instant::now();
        let cpu = sys::process_cpu(pid).context("the server is gone")?;
        Ok(Snapshot {
            at,
            cpu,
            rss: sys::rss_bytes(pid)?,
            hwm: sys::peak_rss_bytes(pid)?,
            fds: sys::fd_count(pid)?,
        })
    }

    /// CPU used since `earlier`, as a percentage of one core.
    fn cpu_since(&self, earlier: &Snapshot) -> f64 {
        (self.cpu - earlier.cpu).as_secs_f64() / (self.at - earlier.at).as_secs_f64() * 100.0
    }
}

/// Samples the server's RSS and fd count every 100 ms on a thread,
/// keeping the largest of each per phase.
struct Sampler {
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    most: Arc<Mutex<[(u64, usize); 3]>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Result<Sampler> {
        let phase = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(Mutex::new([(0u64, 0usize); 3]));
        let (ph, st, mo) = (phase.clone(), stop.clone(), most.clone());
        let thread = std::thread::Builder::new()
            .name("attack-sampler".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    if let (Ok(rss), Ok(fds)) = (sys::rss_bytes(pid), sys::fd_count(pid)) {
                        let p = ph.load(Ordering::Relaxed).min(2);
                        let mut m = mo.lock().unwrap();
                        m[p].0 = m[p].0.max(rss);
                        m[p].1 = m[p].1.max(fds);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })?;
        Ok(Sampler {
            phase,
            stop,
            most,
            thread: Some(thread),
        })
    }

    fn set_phase(&self, p: usize) {
        self.phase.store(p, Ordering::Relaxed);
    }

    /// Stops the thread; the largest (RSS, fds) of each phase.
    fn finish(mut self) -> [(u64, usize); 3] {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.most.lock().unwrap()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the healthy child reports for one phase (all times in µs).
#[derive(Debug, Clone, Copy, Default)]
struct PhaseReport {
    samples: u64,
    p50: f64,
    p99: f64,
    max: f64,
    raw_p99: f64,
    lost: u64,
}

impl PhaseReport {
    fn parse(line: &str) -> Result<PhaseReport> {
        let v: Vec<f64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad healthy phase line {line:?}"))?;
        let [samples, p50, p99, max, _raw_p50, raw_p99, lost] = v[..] else {
            bail!("bad healthy phase line {line:?}");
        };
        Ok(PhaseReport {
            samples: samples as u64,
            p50,
            p99,
            max,
            raw_p99,
            lost: lost as u64,
        })
    }
}

/// Nice value of the healthy clients' process (see [`one_run`]).
const HEALTHY_NICE: i32 = -10;

/// One run against one server. With pinning (the default), the server
/// has CPU 0 to itself and everything else shares CPU 1: the attackers at
/// the default priority, the healthy clients at nice [`HEALTHY_NICE`], so
/// that their own wake-ups are not queued behind the attackers' (their
/// latency is then the server's doing) and the attack is as strong as one
/// core can make it. Unpinned, everyone shares both cores.
fn one_run(plan: &Plan, imp: Impl, pin: bool) -> Result<(Vec<f64>, String, Reports)> {
    let placement = |nice: Option<i32>| Placement {
        cpu: pin.then_some(LOADGEN_CPU),
        nice: nice.filter(|_| pin),
    };
    let server = start_server(plan.target, imp, pin.then_some(SERVER_CPU))?;
    let pid = server.child.pid();
    let port = server.port;
    let healthy_opts = HealthyOpts {
        port,
        conns: plan.healthy,
        interval_ms: plan.interval.as_millis() as u64,
        ws: plan.target == Target::Ws,
        placement: placement(Some(HEALTHY_NICE)),
    };
    let mut healthy = Child::spawn_piped(&healthy_opts.to_args())?;
    healthy.expect("ready", Duration::from_secs(30))?;
    let sampler = Sampler::start(pid)?;
    let s0 = Snapshot::take(pid)?;
    std::thread::sleep(plan.before);

    let s1 = Snapshot::take(pid)?;
    let h1 = (Instant::now(), sys::sched_times(healthy.pid())?);
    sampler.set_phase(1);
    healthy.send_line("phase 1")?;
    let mut attackers = Vec::new();
    for &(kind, n) in &plan.attacks {
        let opts = AttackerOpts {
            kind,
            port,
            n,
            placement: placement(None),
        };
        attackers.push(Child::spawn_piped(&opts.to_args())?);
    }
    std::thread::sleep(plan.during);
    for a in &mut attackers {
        a.close_stdin();
    }
    let mut said = Vec::new();
    let mut reports = Vec::new();
    for ((kind, _), a) in plan.attacks.iter().zip(&mut attackers) {
        let r = a
            .expect("result", Duration::from_secs(10))
            .unwrap_or_else(|e| format!("no result ({e:#})"));
        // An attacker without a result line has nothing to add to the
        // outcome rows; its progress line says why.
        if let Ok(res) = AttackerResult::parse(&r) {
            reports.push((*kind, res));
        }
        said.push(format!("{} {r}", kind.name()));
    }
    // Reap them: their sockets are closed by now.
    drop(attackers);
    let s2 = Snapshot::take(pid)?;
    let h2 = (Instant::now(), sys::sched_times(healthy.pid())?);
    sampler.set_phase(2);
    healthy.send_line("phase 2")?;
    std::thread::sleep(plan.after);

    let s3 = Snapshot::take(pid)?;
    let errors = server.child.stat("errors");
    healthy.close_stdin();
    let mut ph = [PhaseReport::default(); 3];
    for (i, r) in ph.iter_mut().enumerate() {
        *r = PhaseReport::parse(&healthy.expect(&format!("phase{i}"), Duration::from_secs(30))?)?;
    }
    let most = sampler.finish();
    drop(server);

    // The healthy clients' own share of CPU and time spent runnable but
    // not running during the attack: a starved client would time its own
    // waits, not the server's.
    let secs = (h2.0 - h1.0).as_secs_f64();
    let healthy_cpu = (h2.1 .0 - h1.1 .0).as_secs_f64() / secs * 100.0;
    let healthy_wait = (h2.1 .1 - h1.1 .1).as_secs_f64() / secs * 100.0;
    let ms = |us: f64| us / 1000.0;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let lost: u64 = ph.iter().map(|p| p.lost).sum();
    let vals = vec![
        ms(ph[0].p50),
        ms(ph[0].p99),
        ms(ph[1].p50),
        ms(ph[1].p99),
        ms(ph[1].raw_p99),
        ms(ph[2].p50),
        ms(ph[2].p99),
        lost as f64,
        s2.cpu_since(&s1),
        s3.cpu_since(&s2),
        mib(s1.rss),
        mib(s3.hwm),
        mib(s3.rss),
        s1.fds as f64,
        most[1].1.max(s2.fds) as f64,
        s3.fds as f64,
    ];
    let detail = format!(
        "healthy p99 {:.2} / {:.1} / {:.2} ms (before / during / after; max during {:.0} ms, \
         p99 from the write {:.1} ms), {} / {} / {} pings, lost {lost}; \
         healthy clients during: CPU {healthy_cpu:.0}%, waiting for a CPU {healthy_wait:.0}% of the time; \
         server CPU {:.0}% / {:.0}% / {:.0}%; RSS {} -> peak {} (most sampled during {}, at the attack's end {}) -> {}; \
         fds {} -> {} -> {}{}\n      attackers: {}",
        ms(ph[0].p99),
        ms(ph[1].p99),
        ms(ph[2].p99),
        ms(ph[1].max),
        ms(ph[1].raw_p99),
        ph[0].samples,
        ph[1].samples,
        ph[2].samples,
        s1.cpu_since(&s0),
        s2.cpu_since(&s1),
        s3.cpu_since(&s2),
        bytes(s1.rss as f64),
        bytes(s3.hwm as f64),
        bytes(most[1].0 as f64),
        bytes(s2.rss as f64),
        bytes(s3.rss as f64),
        s1.fds,
        most[1].1.max(s2.fds),
        s3.fds,
        errors.map_or(String::new(), |e| format!("; on_error calls {e}")),
        said.join("; ")
    );
    Ok((vals, detail, reports))
}

/// Starts the server of `target` for `imp`: the Text echo (lubdub's
/// `lubdub_attack_worker` or the tokio peer) or the WebSocket echo
/// (lubdub's `lubdub_ws_attack_worker` or the tokio-tungstenite peer).
fn start_server(target: Target, imp: Impl, cpu: Option<usize>) -> Result<Server> {
    match target {
        Target::Text => ServeOpts {
            attack: true,
            ..ServeOpts::echo(imp, Proto::Text, 1, cpu)
        }
        .start(),
        Target::Ws => WsServeOpts {
            imp: match imp {
                Impl::Lubdub => WsImpl::Lubdub,
                Impl::Tokio => WsImpl::Tungstenite,
            },
            deflate: false,
            attack: true,
            cpu,
            report_conns: false,
            read_buffer: None,
        }
        .start(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Window;
    use crate::sys::FdLimit;

    fn config(attacks: Option<&str>, phases: Option<&str>) -> Config {
        Config {
            runs: 1,
            quick: false,
            attacks: attacks.map(String::from),
            attack_phases: phases.map(String::from),
            window: Window {
                warmup: Duration::ZERO,
                measure: Duration::ZERO,
            },
            pin: true,
            conns: 1,
            depth: 1,
            many_conns: 1,
            idle_conns: 1,
            timer_ops: 1,
            churners: 1,
            fd: FdLimit {
                soft_before: 0,
                soft: 0,
                hard: 0,
            },
            max_wait: Duration::ZERO,
            retries: 0,
        }
    }

    #[test]
    fn attacks_and_phases_options_shape_the_plan() {
        let full = Plan::for_config(&config(None, None), Target::Text).unwrap();
        assert_eq!(full.attacks.len(), 5);
        assert_eq!(full.during, Duration::from_secs(10));

        let p = Plan::for_config(
            &config(Some("storm,longline=7"), Some("1,2,3.5")),
            Target::Text,
        )
        .unwrap();
        assert_eq!(p.attacks, vec![(Attack::Storm, 16), (Attack::LongLine, 7)]);
        assert_eq!(
            (p.before, p.during, p.after),
            (
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_millis(3500)
            )
        );

        let text = |a, p| Plan::for_config(&config(a, p), Target::Text);
        assert!(text(Some("nope"), None).is_err());
        assert!(text(Some("storm=x"), None).is_err());
        assert!(text(Some(","), None).is_err());
        assert!(text(None, Some("1,2")).is_err());
    }

    /// `attack-ws` has the WebSocket attacks only; one `--attacks` list
    /// serves both scenarios, each taking its own kinds, and a list
    /// without any of a scenario's kinds fails it.
    #[test]
    fn attack_ws_plans_the_websocket_attacks() {
        let full = Plan::for_config(&config(None, None), Target::Ws).unwrap();
        assert_eq!(full.attacks.len(), 7);
        assert!(full.attacks.iter().all(|(k, _)| k.target() == Target::Ws));
        let mut quick = config(None, None);
        quick.quick = true;
        let q = Plan::for_config(&quick, Target::Ws).unwrap();
        assert_eq!(q.during, Duration::from_secs(3));
        assert_eq!(q.attacks[0], (Attack::WsBigFrame, 13));

        let both = config(Some("storm,ws-origin=3,ws-bomb"), None);
        let ws = Plan::for_config(&both, Target::Ws).unwrap();
        assert_eq!(
            ws.attacks,
            vec![(Attack::WsOrigin, 3), (Attack::WsBomb, 50)]
        );
        let text = Plan::for_config(&both, Target::Text).unwrap();
        assert_eq!(text.attacks, vec![(Attack::Storm, 16)]);
        let err = Plan::for_config(&config(Some("storm"), None), Target::Ws).unwrap_err();
        assert!(err.to_string().contains("attack-ws"), "{err}");
    }

    /// A row per outcome any run of either server saw, zero where a run
    /// did not see it; a WebSocket attack the servers did nothing to still
    /// has its connections; the text attacks add no rows.
    #[test]
    fn outcome_rows_cover_every_outcome_seen() {
        let plan = Plan {
            attacks: vec![
                (Attack::WsOrigin, 2),
                (Attack::Storm, 2),
                (Attack::WsSlowFrame, 3),
            ],
            ..Plan::new(Target::Ws, true)
        };
        let res = |line: &str| AttackerResult::parse(line).unwrap();
        let l = vec![vec![
            (Attack::WsOrigin, res("connects=5 open=0 | http403=5")),
            (Attack::Storm, res("connects=9 open=0")),
            (Attack::WsSlowFrame, res("connects=3 open=3")),
        ]];
        let p = vec![vec![
            (Attack::WsOrigin, res("connects=7 open=0 | http101=7")),
            (Attack::WsSlowFrame, res("connects=3 open=3")),
        ]];
        let mut out = Outcome::default();
        outcome_rows(&mut out, &plan, &l, &p);
        let rows: Vec<(&str, &[f64], &[f64])> = out
            .rows
            .iter()
            .map(|r| (r.label.as_str(), &r.lubdub[..], &r.peer[..]))
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "↳ ws-origin attackers: connections made",
                    &[5.0][..],
                    &[7.0][..]
                ),
                ("↳ ws-origin attackers: answered 101", &[0.0], &[7.0]),
                ("↳ ws-origin attackers: answered 403", &[5.0], &[0.0]),
                ("↳ ws-slowframe attackers: connections made", &[3.0], &[3.0]),
                (
                    "↳ ws-slowframe attackers: open when the attack stopped",
                    &[3.0],
                    &[3.0]
                ),
            ]
        );
        assert!(out.rows.iter().all(|r| r.ratio().is_nan()));
    }

    #[test]
    fn phase_lines_parse() {
        let r = PhaseReport::parse("1500 120 900 4000 100 800 2").unwrap();
        assert_eq!(r.samples, 1500);
        assert_eq!(r.p99, 900.0);
        assert_eq!(r.lost, 2);
        assert!(PhaseReport::parse("1 2 3").is_err());
        // An empty phase reports NaN latencies.
        assert!(PhaseReport::parse("0 NaN NaN NaN NaN NaN 0")
            .unwrap()
            .p50
            .is_nan());
    }
}
