//! The skeleton of every measured load phase: the load generator's thread
//! and runtime, the window (warm-up, then measured), and the drain after
//! it, in which every connection must get back what it is owed.
//!
//! Every run is bounded: the whole load phase has a deadline ([`run`]),
//! and after the measured window each connection stops sending and must
//! get back every byte it sent within 10 s ([`measure_and_drain`]), so a
//! server that drops or corrupts messages fails the run instead of looking
//! fast.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::task::JoinSet;

use crate::report::Window;
use crate::sys;

/// How long the connections may take after the window to get back what
/// they are owed.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Runs `f`'s future on a fresh load-generator thread with a tokio
/// current_thread runtime, pinned to `cpu` if given, bounded by `limit`.
pub fn run<T, F, Fut>(cpu: Option<usize>, limit: Duration, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("loadgen".into())
            .spawn_scoped(s, move || -> Result<T> {
                if let Some(cpu) = cpu {
                    sys::pin_current_thread(cpu).context("pinning the load generator")?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    tokio::time::timeout(limit, f())
                        .await
                        .map_err(|_| anyhow!("load phase exceeded its {limit:?} limit"))?
                })
            })?;
        h.join()
            .map_err(|_| anyhow!("load generator thread panicked"))?
    })
}

/// State shared by the connection tasks of one run.
#[derive(Default)]
pub struct Shared {
    /// Operations (messages, round trips, cycles) completed so far.
    pub completed: AtomicU64,
    /// Set after the window: stop sending, collect what is owed.
    pub stop: AtomicBool,
    /// Set during the measured window.
    pub measuring: AtomicBool,
}

/// Result of a throughput measurement.
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    /// Completed messages (or cycles) per second within the window.
    pub per_sec: f64,
    /// CPU time of the load generator thread / window wall time.
    pub loadgen_cpu: f64,
    /// CPU time of the server process / window wall time (1.0 = one core).
    pub server_cpu: f64,
    /// CPU time used by everything but the server and this runner process
    /// during the window / wall time: other load on the machine that may
    /// disturb the measurement.
    pub other_cpu: f64,
    /// Voluntary context switches of the server's threads per second in
    /// the window (a thread went to sleep).
    pub server_sleeps: f64,
    /// Involuntary context switches of the server's threads per second in
    /// the window (a thread was preempted).
    pub server_preempted: f64,
}

/// Waits out the warm-up, then measures `counter`'s rate over the window,
/// with the CPU use of this thread and of the server, processes
/// `server_pids` (one, or a proxy and its backend: `tls-nginx`).
pub async fn measure(sh: &Shared, w: Window, server_pids: &[u32]) -> Result<Throughput> {
    let cpu = || -> Result<Duration> {
        Ok(server_pids
            .iter()
            .map(|&p| sys::process_cpu(p))
            .sum::<std::io::Result<Duration>>()?)
    };
    let switches = || -> Result<(u64, u64)> {
        server_pids.iter().try_fold((0, 0), |(v, i), &p| {
            let (pv, pi) = sys::context_switches(p)?;
            Ok((v + pv, i + pi))
        })
    };
    tokio::time::sleep(w.warmup).await;
    let attached = attach(server_pids[0], w.measure)?;
    let (c0, t0) = (sh.completed.load(Ordering::SeqCst), Instant::now());
    let (l0, s0) = (sys::thread_cpu(), cpu()?);
    let (r0, m0) = (sys::process_cpu(std::process::id())?, sys::machine_busy()?);
    let x0 = switches()?;
    sh.measuring.store(true, Ordering::SeqCst);
    tokio::time::sleep(w.measure).await;
    sh.measuring.store(false, Ordering::SeqCst);
    let (c1, t1) = (sh.completed.load(Ordering::SeqCst), Instant::now());
    let (l1, s1) = (sys::thread_cpu(), cpu()?);
    let (r1, m1) = (sys::process_cpu(std::process::id())?, sys::machine_busy()?);
    let x1 = switches()?;
    let secs = (t1 - t0).as_secs_f64();
    let ours = (s1 - s0) + (r1 - r0);
    if let Some(child) = attached {
        wait_attached(child).await?;
    }
    Ok(Throughput {
        per_sec: (c1 - c0) as f64 / secs,
        loadgen_cpu: (l1 - l0).as_secs_f64() / secs,
        server_cpu: (s1 - s0).as_secs_f64() / secs,
        other_cpu: (m1 - m0).saturating_sub(ours).as_secs_f64() / secs,
        server_sleeps: x1.0.saturating_sub(x0.0) as f64 / secs,
        server_preempted: x1.1.saturating_sub(x0.1) as f64 / secs,
    })
}

/// [`measure`], then the drain: tells the connection tasks in `set` to
/// stop and joins them, each within [`DRAIN`]. Returns the throughput and
/// what the tasks returned.
pub async fn measure_and_drain<T: 'static>(
    sh: &Shared,
    set: &mut JoinSet<Result<T>>,
    w: Window,
    server_pids: &[u32],
) -> Result<(Throughput, Vec<T>)> {
    let t = measure(sh, w, server_pids).await;
    sh.stop.store(true, Ordering::SeqCst);
    let t = t?;
    let done = join_all(set, DRAIN).await?;
    Ok((t, done))
}

/// Joins the connection tasks after the window, each within `grace`.
pub async fn join_all<T: 'static>(set: &mut JoinSet<Result<T>>, grace: Duration) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Err(_) => bail!(
                "{} connection(s) still waiting for replies {grace:?} after the window: \
                 the server lost messages",
                set.len()
            ),
            Ok(None) => return Ok(out),
            Ok(Some(r)) => out.push(r??),
        }
    }
}

/// One churner of a churn scenario: a loop over connect, some exchange,
/// close.
pub trait Churner: Send + 'static {
    /// Cycle `seq`: connect, exchange, close. An error fails the run.
    fn cycle(&mut self, seq: u64) -> impl Future<Output = Result<()>> + Send;
}

/// Connection churn: each of `churners` loops over its cycles until the
/// window is over. Returns completed cycles per second.
pub async fn churn<C: Churner>(
    churners: Vec<C>,
    w: Window,
    server_pids: &[u32],
) -> Result<Throughput> {
    let sh = Arc::new(Shared::default());
    let mut set = JoinSet::new();
    for mut c in churners {
        let sh = sh.clone();
        set.spawn(async move {
            let mut seq = 0u64;
            while !sh.stop.load(Ordering::Relaxed) {
                c.cycle(seq).await?;
                seq += 1;
                sh.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    let (t, _) = measure_and_drain(&sh, &mut set, w, server_pids).await?;
    Ok(t)
}

/// The runner's `--attach CMD`: a shell command run at the start of each
/// measured window of the throughput scenarios, with `{pid}` replaced by
/// the server's process id and `{secs}` by the window's length in seconds
/// (for `perf stat -p {pid} -- sleep {secs}`, say). Its output goes to
/// the runner's stderr.
pub static ATTACH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Starts the `--attach` command for server `pid`, if there is one.
fn attach(pid: u32, window: Duration) -> Result<Option<std::process::Child>> {
    let Some(cmd) = ATTACH.get() else {
        return Ok(None);
    };
    let cmd = cmd
        .replace("{pid}", &pid.to_string())
        .replace("{secs}", &format!("{:.3}", window.as_secs_f64()));
    let child = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("--attach: starting {cmd:?}"))?;
    Ok(Some(child))
}

/// Waits for the `--attach` command, at most 60 s after the window
/// (then kills it), without blocking the load generator's runtime.
async fn wait_attached(mut child: std::process::Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                eprintln!("  --attach command exited with {status}");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("--attach command still running 60 s after the window: killed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
