//! The `sweep` scenario, server side: the cost of one heartbeat idle sweep
//! over `n` live, idle connections when nothing expires, timed inside the
//! server process (`lubdub-bench serve <impl> text --sweep N`).
//!
//! Once the server holds `n` connections, a timer on its event loop runs
//! one sweep pass every [`TICK`], alternating two kinds of pass, and times
//! each pass alone. After [`WARMUP`] untimed passes of each kind it times
//! [`PASSES`] of each, then prints
//! `sweep <scanned> <median 0> <median 1> <min 0> <min 1>` (µs per pass).
//! A pass that does not scan exactly `n` connections, or that finds one
//! expired, prints `error ...` instead.
//!
//! * lubdub, the Text echo server of `serve` with the heartbeat plugin
//!   installed (`Heartbeat::server(TextHeartbeat::new())`, Workerman's
//!   defaults: sweep every 10 s, 55 s timeout). The plugin keeps its
//!   per-loop registry private and has no hook that times its own sweep,
//!   so the timer measures what the plugin's sweep timer runs, over the
//!   same connections:
//!   * kind 0, the plugin's pass: `Instant::now()`, `IdleSweep::tick`, lock
//!     a `Mutex` around a `Vec<Option<Connection>>` and
//!     `IdleSweep::scan_iter(slab.iter().flatten(), ..)`. The vector holds
//!     clones of the `n` `Connection` handles taken from
//!     `worker.connections()` on the loop thread once all are open, sorted
//!     by id: the accept order, which is the order the plugin's registry
//!     slab (filled in `on_connect`) has them in. The handles point at the
//!     same connection state the registry's do, so the pointer chase, one
//!     relaxed atomic load and one comparison per connection, is the real
//!     one. Not included: the registry's uncontended `RwLock` read and the
//!     `compact()` check (a length comparison).
//!   * kind 1, the naive sweep: `Instant::now()`, `IdleSweep::tick`,
//!     `IdleSweep::scan(worker.connections(), Some(this loop), ..)`: a walk
//!     of the worker's `DashMap` reading each connection's `last_active()`.
//! * tokio, the Text echo server of `serve` (current_thread runtime, one
//!   task per connection) keeping per-connection state the way a tokio
//!   user would: an `Arc<ConnState>` holding an `AtomicU64` last-activity
//!   (nanoseconds since a process epoch, stored on every received line),
//!   registered when the task starts and removed when it ends, in two
//!   maps: a `Mutex<HashMap<u64, Arc<ConnState>>>` (the tokio tutorial's
//!   shared state) and a `DashMap<u64, Arc<ConnState>>`. A task with a
//!   `tokio::time::interval` does the passes:
//!   * kind 0: take the clock, lock the `HashMap`, walk it: one relaxed load
//!     and `now - last > timeout` per entry;
//!   * kind 1: the same over the `DashMap`.
//!
//! In both servers the passes run where a real sweep runs (a timer callback
//! on the event loop, a task on the runtime), one pass per tick, so each
//! pass starts after the loop went back to `epoll_wait` like a real sweep.

use std::cell::Cell;
use std::collections::HashMap;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use lubdub::heartbeat::{Heartbeat, IdleSweep, SweepConfig, TextHeartbeat};
use lubdub::{Connection, Text, Timer, TimerId, Worker, WorkerHandle};

use crate::report::median;

/// Interval between two passes.
pub const TICK: Duration = Duration::from_millis(2);
/// Untimed passes of each kind once all connections are open.
pub const WARMUP: usize = 25;
/// Timed passes of each kind.
pub const PASSES: usize = 200;
/// The idle timeout (Workerman's 55 s): no connection of a run expires.
pub const TIMEOUT: Duration = Duration::from_secs(55);

/// The passes of one server: which kind is next, and the timings.
struct Passes {
    n: usize,
    done: usize,
    us: [Vec<f64>; 2],
}

impl Passes {
    fn new(n: usize) -> Self {
        Passes {
            n,
            done: 0,
            us: [Vec::with_capacity(PASSES), Vec::with_capacity(PASSES)],
        }
    }

    /// The kind of the next pass (0 or 1), `None` once all are done.
    fn next_kind(&self) -> Option<usize> {
        (self.done < 2 * (WARMUP + PASSES)).then_some(self.done % 2)
    }

    /// Records a pass of `kind` that took `took` and checked `scanned`
    /// connections, `expired` of them expired. Returns the line to print
    /// once the last pass is recorded or a pass went wrong.
    fn record(
        &mut self,
        kind: usize,
        took: Duration,
        scanned: usize,
        expired: usize,
    ) -> Option<String> {
        if scanned != self.n || expired != 0 {
            return Some(format!(
                "error sweep pass {kind} scanned {scanned} of {} connections, {expired} expired",
                self.n
            ));
        }
        if self.done >= 2 * WARMUP {
            self.us[kind].push(took.as_secs_f64() * 1e6);
        }
        self.done += 1;
        if self.next_kind().is_some() {
            return None;
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        Some(format!(
            "sweep {} {} {} {} {}",
            self.n,
            median(&self.us[0]),
            median(&self.us[1]),
            min(&self.us[0]),
            min(&self.us[1])
        ))
    }
}

fn sweep_config() -> SweepConfig {
    SweepConfig {
        check_interval: TICK,
        timeout: TIMEOUT,
        // Passes are never "late": no stall is recorded.
        stall_threshold: Duration::from_secs(3600),
    }
}

/// Checks that `Instant::now() - timeout` exists (the monotonic clock
/// starts at boot): otherwise every sweep would skip its comparisons.
fn check_clock() -> Result<(), String> {
    match Instant::now().checked_sub(TIMEOUT) {
        Some(_) => Ok(()),
        None => Err(format!(
            "error sweep: the monotonic clock is younger than the {TIMEOUT:?} timeout"
        )),
    }
}

/// What the lubdub loop keeps once all connections are open.
struct LubdubPasses {
    my_loop: usize,
    /// The plugin's registry slab, rebuilt from the same handles.
    slab: Mutex<Vec<Option<Connection<Text>>>>,
    sweep: IdleSweep,
    expired: Vec<Connection<Text>>,
    passes: Passes,
}

/// Installs the heartbeat plugin on `w` and the timer that times the
/// sweep passes once `n` connections are open.
pub fn install_lubdub(w: &mut Worker<Text>, n: usize) {
    let hb = Heartbeat::server(TextHeartbeat::new());
    let hb_handle = hb.handle();
    w.plugin(hb);
    w.on_worker_start(move |worker| {
        if let Err(e) = check_clock() {
            println!("{e}");
            return;
        }
        let worker = worker.clone();
        let hb_handle = hb_handle.clone();
        let my_id: Rc<Cell<Option<TimerId>>> = Rc::default();
        let my_id2 = my_id.clone();
        let mut state: Option<LubdubPasses> = None;
        let res = Timer::add(TICK, move || {
            if state.is_none() {
                // Wait until every connection is open and the plugin's
                // registry tracks it.
                if worker.connections().len() < n || hb_handle.tracked() < n {
                    return;
                }
                let my_loop = WorkerHandle::<Text>::current_loop().unwrap_or(0);
                let mut conns: Vec<Connection<Text>> = worker
                    .connections()
                    .iter()
                    .filter(|e| e.value().loop_index() == my_loop)
                    .map(|e| e.value().clone())
                    .collect();
                conns.sort_by_key(Connection::id);
                state = Some(LubdubPasses {
                    my_loop,
                    slab: Mutex::new(conns.into_iter().map(Some).collect()),
                    sweep: IdleSweep::new(sweep_config(), Instant::now()),
                    expired: Vec::new(),
                    passes: Passes::new(n),
                });
            }
            let Some(st) = state.as_mut() else { return };
            let Some(kind) = st.passes.next_kind() else {
                return;
            };
            let t = Instant::now();
            let scanned = if kind == 0 {
                // The plugin's sweep timer (crates/heartbeat/src/server.rs,
                // `start_sweep`), nothing expired.
                let now = Instant::now();
                let _ = st.sweep.tick(now);
                let slab = st.slab.lock().unwrap_or_else(PoisonError::into_inner);
                st.sweep
                    .scan_iter(slab.iter().flatten(), now, &mut st.expired)
            } else {
                let now = Instant::now();
                let _ = st.sweep.tick(now);
                st.sweep
                    .scan(worker.connections(), Some(st.my_loop), now, &mut st.expired)
            };
            let took = t.elapsed();
            let expired = st.expired.len();
            st.expired.clear();
            if let Some(line) = st.passes.record(kind, black_box(took), scanned, expired) {
                println!("{line}");
                if let Some(id) = my_id2.get() {
                    Timer::del(id);
                }
            }
        });
        match res {
            Ok(id) => my_id.set(Some(id)),
            Err(e) => println!("error sweep: cannot add the timer: {e}"),
        }
    });
}

/// Per-connection state of the tokio peer.
pub struct ConnState {
    /// Nanoseconds since [`epoch`] when the last line arrived.
    last_active: AtomicU64,
}

impl ConnState {
    /// Records activity now.
    pub fn touch(&self) {
        self.last_active.store(now_nanos(), Ordering::Relaxed);
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// The tokio peer's connection registry, both maps.
#[derive(Default)]
pub struct PeerRegistry {
    next_id: AtomicU64,
    locked: Mutex<HashMap<u64, Arc<ConnState>>>,
    dash: DashMap<u64, Arc<ConnState>>,
}

impl PeerRegistry {
    /// Registers a new connection: its id and its state.
    pub fn register(&self) -> (u64, Arc<ConnState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let st = Arc::new(ConnState {
            last_active: AtomicU64::new(now_nanos()),
        });
        self.locked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, st.clone());
        self.dash.insert(id, st.clone());
        (id, st)
    }

    /// Removes connection `id` (its task ended).
    pub fn unregister(&self, id: u64) {
        self.locked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.dash.remove(&id);
    }
}

/// The tokio user's sweep over the `Mutex<HashMap>`, at `now` (nanoseconds
/// since the epoch).
fn walk_locked(reg: &PeerRegistry, now: u64, expired: &mut Vec<u64>) -> usize {
    let timeout = TIMEOUT.as_nanos() as u64;
    let map = reg.locked.lock().unwrap_or_else(PoisonError::into_inner);
    let mut scanned = 0;
    for (id, st) in map.iter() {
        scanned += 1;
        if now.saturating_sub(st.last_active.load(Ordering::Relaxed)) > timeout {
            expired.push(*id);
        }
    }
    scanned
}

/// The tokio user's sweep over the `DashMap`, at `now`.
fn walk_dash(reg: &PeerRegistry, now: u64, expired: &mut Vec<u64>) -> usize {
    let timeout = TIMEOUT.as_nanos() as u64;
    let mut scanned = 0;
    for e in reg.dash.iter() {
        scanned += 1;
        if now.saturating_sub(e.value().last_active.load(Ordering::Relaxed)) > timeout {
            expired.push(*e.key());
        }
    }
    scanned
}

/// The tokio peer's sweep task: waits for `n` connections, then times the
/// passes, one per interval tick.
pub async fn tokio_sweeper(reg: Arc<PeerRegistry>, n: usize) {
    if let Err(e) = check_clock() {
        println!("{e}");
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if reg.dash.len() >= n {
            break;
        }
    }
    let mut passes = Passes::new(n);
    let mut expired: Vec<u64> = Vec::new();
    while let Some(kind) = passes.next_kind() {
        tick.tick().await;
        let t = Instant::now();
        let scanned = if kind == 0 {
            walk_locked(&reg, now_nanos(), &mut expired)
        } else {
            walk_dash(&reg, now_nanos(), &mut expired)
        };
        let took = t.elapsed();
        let n_expired = expired.len();
        expired.clear();
        if let Some(line) = passes.record(kind, black_box(took), scanned, n_expired) {
            println!("{line}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_alternate_skip_the_warmup_and_report() {
        let mut p = Passes::new(3);
        let mut kinds = Vec::new();
        let mut line = None;
        while let Some(k) = p.next_kind() {
            kinds.push(k);
            let took = Duration::from_micros(if k == 0 { 10 } else { 30 });
            line = p.record(k, took, 3, 0);
        }
        assert_eq!(kinds.len(), 2 * (WARMUP + PASSES));
        assert!(kinds.iter().enumerate().all(|(i, &k)| k == i % 2));
        assert_eq!(p.us[0].len(), PASSES);
        assert_eq!(line.as_deref(), Some("sweep 3 10 30 10 30"));
        let mut p = Passes::new(3);
        assert!(p
            .record(0, Duration::ZERO, 2, 0)
            .is_some_and(|l| l.starts_with("error ")));
        assert!(p
            .record(0, Duration::ZERO, 3, 1)
            .is_some_and(|l| l.starts_with("error ")));
    }

    #[test]
    fn tokio_walks_see_every_entry_and_expire_nobody_fresh() {
        let reg = PeerRegistry::default();
        let ids: Vec<u64> = (0..100).map(|_| reg.register().0).collect();
        reg.unregister(ids[7]);
        let mut expired = Vec::new();
        assert_eq!(walk_locked(&reg, now_nanos(), &mut expired), 99);
        assert_eq!(walk_dash(&reg, now_nanos(), &mut expired), 99);
        assert!(expired.is_empty());
        // One silent for longer than the timeout, the rest not:
        let (silent, st) = reg.register();
        st.last_active.store(0, Ordering::Relaxed);
        for s in reg.dash.iter().filter(|e| *e.key() != silent) {
            s.value().last_active.store(10, Ordering::Relaxed);
        }
        let later = TIMEOUT.as_nanos() as u64 + 5;
        assert_eq!(walk_locked(&reg, later, &mut expired), 100);
        assert_eq!(walk_dash(&reg, later, &mut expired), 100);
        assert_eq!(expired, [silent, silent]);
    }
}
