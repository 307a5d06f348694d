//! The per-thread event loop: its context (executor, reactor, timers, read
//! scratch buffer) and the loop that drives them.
//!
//! Timers run on the loop's own clock: the loop fires what is due after
//! each batch of tasks and sleeps in `epoll_wait` no longer than the next
//! deadline. No other thread is involved (async-io's timer thread used to
//! hand every expiry over with a cross-thread wake).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_executor::LocalExecutor;
use event_listener::Event;

use crate::timer_queue::{TimerId, TimerQueue};

/// Size of the per-loop read buffer every connection reads into.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Bytes all the connections of a loop may read in one pass of its
/// executor (at most 200 task polls) before the loop looks at its sockets
/// again. Measured (issue 20, `attack --attacks longline`, a pass timer
/// in the loop): without it, 200 connections each streaming an endless
/// line made passes that read 20–40 MB in 40–100 ms, and a healthy client's
/// ping waited for the whole pass.
pub(crate) const PASS_READ_BUDGET: usize = 256 * 1024;

pub(crate) type TimerFn = Box<dyn FnMut()>;

/// State of one event-loop thread, reachable through a thread-local.
pub(crate) struct LoopCtx {
    /// Index of this loop within its worker (0..count).
    pub id: usize,
    /// This loop's own reactor (edge-triggered epoll).
    pub reactor: Rc<crate::reactor::Reactor>,
    pub ex: Rc<LocalExecutor<'static>>,
    /// `Timer::add` timers.
    pub timers: RefCell<TimerQueue<TimerFn>>,
    /// Deadlines of the loop's own futures ([`Sleep`]): wakers to wake.
    wakeups: RefCell<TimerQueue<Rc<SleepSlot>>>,
    /// Reused list of the timers due in a turn.
    due: RefCell<Vec<TimerId>>,
    /// Tasks that yielded for fairness: woken after the next look at the
    /// reactor, so a connection with new input runs before they go on.
    deferred: RefCell<Vec<Waker>>,
    /// Tasks that had input waiting but found this pass's read budget
    /// spent before reading anything: they go first in the next pass.
    starved: RefCell<Vec<Waker>>,
    /// Bytes this pass of the executor may still read (all connections of
    /// the loop together; see [`PASS_READ_BUDGET`]).
    read_budget: Cell<usize>,
    /// What this loop counted (read by other threads).
    pub counters: Arc<crate::stats::LoopCounters>,
    /// Shared read buffer: taken by a connection for the duration of a read.
    scratch: Cell<Vec<u8>>,
    /// [`Resident`]s of this loop (connection tasks, client supervisors),
    /// and an event when their number drops to 0.
    pub live: Cell<usize>,
    idle: Event,
    /// Closers run when the loop stops, by [`Resident`] token: client
    /// connections (close for good) and server connections out of the
    /// endpoint's map (handshaking, lingering). Connections in the map are
    /// closed by the worker's walk of it instead, so an established idle
    /// connection costs no entry here.
    closers: RefCell<HashMap<u64, Box<dyn Fn()>>>,
    next_closer: Cell<u64>,
    /// The loop is stopping: a task polled from now on closes itself.
    stopping: Cell<bool>,
}

/// A stop request that can be awaited; set from any thread.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopping: AtomicBool,
    event: Event,
}

impl StopSignal {
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub async fn wait(&self) {
        loop {
            if self.is_stopping() {
                return;
            }
            let l = self.event.listen();
            if self.is_stopping() {
                return;
            }
            l.await;
        }
    }
}

/// Runs an event loop on this thread: enters the context, starts the timer
/// driver, runs `main` to completion, then tears the loop down.
pub(crate) fn run_event_loop<F, Fut>(id: usize, main: F) -> std::io::Result<()>
where
    F: FnOnce(Rc<LoopCtx>) -> Fut,
    Fut: Future<Output = ()>,
{
    let ctx = LoopCtx::enter(id)?;
    let ex = ctx.ex.clone();
    // Run tasks until none is ready, then wait on this loop's own poller.
    // A wake from any thread (a send, a timer) marks the loop woken and, if
    // it is waiting, interrupts the wait.
    let notify = Arc::new(LoopWake {
        poller: ctx.reactor.poller.clone(),
        woken: AtomicBool::new(false),
        waiting: AtomicBool::new(false),
    });
    let waker = std::task::Waker::from(notify.clone());
    let mut cx = Context::from_waker(&waker);
    {
        let mut fut = std::pin::pin!(ex.run(main(ctx.clone())));
        let mut idle_yield = crate::idle_yield::IdleYield::default();
        loop {
            notify.woken.store(false, Ordering::SeqCst);
            ctx.begin_pass();
            if fut.as_mut().poll(&mut cx).is_ready() {
                break;
            }
            // Timers: fire what is due, and never sleep past the next one.
            // A timer that fired may have woken tasks (the wake sets
            // `woken`); an interval-0 timer keeps the next wait at zero.
            let mut deadline = ctx.run_due_timers();
            // Tasks that used up their budget go on only after the reactor
            // has been asked (without blocking), as tokio defers a task
            // that yields: otherwise a flooding connection, always
            // runnable, would keep the executor from ever returning here.
            if ctx.wake_deferred_after_poll() {
                continue;
            }
            notify.waiting.store(true, Ordering::SeqCst);
            let woken = notify.woken.load(Ordering::SeqCst);
            // Out of work: before sleeping, let whatever else is runnable on
            // this CPU go first (often the very clients or loop whose next
            // bytes we are about to wait for), then look once more without
            // blocking. On a machine with more busy threads than cores this
            // replaces most sleep/wake-up round trips (and the preemption of
            // a client by our wake-up) with a hand-over; on an idle machine
            // it costs a `sched_yield` and an `epoll_wait(0)` per sleep.
            // `IdleYield` stops it while yields go to a CPU-bound neighbour.
            if !woken && idle_yield.should_yield() {
                let t = Instant::now();
                std::thread::yield_now();
                idle_yield.record(t.elapsed());
                let found = ctx.reactor.wait(Some(Duration::ZERO), || {
                    notify.waiting.store(false, Ordering::SeqCst)
                });
                if matches!(found, Ok(n) if n > 0) {
                    continue;
                }
                // Waiting again; a wake that came while we were not is seen here.
                notify.waiting.store(true, Ordering::SeqCst);
                if notify.woken.load(Ordering::SeqCst) {
                    notify.waiting.store(false, Ordering::SeqCst);
                    continue;
                }
                // The yield took time: a deadline may have come meanwhile.
                deadline = ctx.next_deadline();
            }
            let timeout = if woken {
                Some(Duration::ZERO)
            } else {
                // About to sleep: a good moment to give freed memory back.
                crate::memory::trim_if_worth_it();
                deadline.map(|d| d.saturating_duration_since(Instant::now()))
            };
            let res = ctx
                .reactor
                .wait(timeout, || notify.waiting.store(false, Ordering::SeqCst));
            if let Err(e) = res {
                log::error!("event loop {id}: waiting for events failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    ctx.exit();
    // Tasks still alive (none after a clean stop) are dropped with the
    // executor; their destructors still run on_close.
    drop(ex);
    Ok(())
}

/// The waker of a loop's main future: flags work and interrupts a wait.
struct LoopWake {
    poller: Arc<crate::poller::Poller>,
    woken: AtomicBool,
    waiting: AtomicBool,
}

impl std::task::Wake for LoopWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::SeqCst) && self.waiting.load(Ordering::SeqCst) {
            let _ = self.poller.notify();
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<LoopCtx>>> = const { RefCell::new(None) };
}

impl LoopCtx {
    /// Creates a loop context and makes it current on this thread.
    pub fn enter(id: usize) -> std::io::Result<Rc<LoopCtx>> {
        let reactor = Rc::new(crate::reactor::Reactor::new()?);
        let ctx = Rc::new(LoopCtx {
            id,
            reactor,
            ex: Rc::new(LocalExecutor::new()),
            timers: RefCell::new(TimerQueue::new()),
            wakeups: RefCell::new(TimerQueue::new()),
            due: RefCell::new(Vec::new()),
            deferred: RefCell::new(Vec::new()),
            starved: RefCell::new(Vec::new()),
            read_budget: Cell::new(PASS_READ_BUDGET),
            counters: Arc::default(),
            scratch: Cell::new(Vec::new()),
            live: Cell::new(0),
            idle: Event::new(),
            closers: RefCell::new(HashMap::new()),
            next_closer: Cell::new(0),
            stopping: Cell::new(false),
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(ctx.clone()));
        Ok(ctx)
    }

    /// Leaves the loop: drops its timers and forgets the thread-local.
    pub fn exit(&self) {
        let dropped = self.timers.borrow_mut().clear();
        drop(dropped);
        let dropped = self.wakeups.borrow_mut().clear();
        drop(dropped);
        CURRENT.with(|c| c.borrow_mut().take());
    }

    /// The loop running on this thread, if any.
    pub fn current() -> Option<Rc<LoopCtx>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Borrows the read buffer (allocating it on first use).
    pub fn take_scratch(&self) -> Vec<u8> {
        let mut v = self.scratch.take();
        if v.len() < READ_CHUNK {
            v = vec![0; READ_CHUNK];
        }
        v
    }

    /// Returns the read buffer.
    pub fn put_scratch(&self, v: Vec<u8>) {
        self.scratch.set(v);
    }

    /// Fires the deadlines and runs the timers due now; returns the next
    /// deadline left (now or earlier for an interval-0 timer).
    pub fn run_due_timers(&self) -> Option<Instant> {
        if self.wakeups.borrow().is_empty() && self.timers.borrow().is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut due = self.due.take();
        self.wakeups.borrow_mut().collect_due(now, &mut due);
        for &id in &due {
            let slot = self.wakeups.borrow_mut().take(id);
            if let Some(slot) = slot {
                slot.fire();
            }
        }
        due.clear();
        // How late the loop is: the most overdue timer's delay.
        if let Some(d) = self.timers.borrow_mut().next_deadline() {
            if d <= now {
                self.counters.lagged(now - d);
            }
        }
        self.timers.borrow_mut().collect_due(now, &mut due);
        for &id in &due {
            let Some(mut f) = self.timers.borrow_mut().take(id) else {
                continue;
            };
            if let Err(msg) = catch(&mut f) {
                log::error!(
                    "timer {} panicked: {msg}; the loop keeps running",
                    id.as_u64()
                );
            }
            self.timers.borrow_mut().finish(id, f, Instant::now());
        }
        due.clear();
        self.due.replace(due);
        self.counters.set_timers(self.timers.borrow().len());
        self.next_deadline()
    }

    /// Wakes `waker` after the loop's next look at the reactor.
    pub fn defer(&self, waker: &Waker) {
        self.deferred.borrow_mut().push(waker.clone());
    }

    /// Like [`defer`](Self::defer), for a task that had input waiting and
    /// read nothing because this pass's read budget was spent: it goes on
    /// before the tasks that did read, so the budget goes round.
    pub fn defer_starved(&self, waker: &Waker) {
        self.starved.borrow_mut().push(waker.clone());
    }

    /// Whether this pass may still read.
    pub fn may_read(&self) -> bool {
        self.read_budget.get() > 0
    }

    /// `n` bytes were read in this pass.
    pub fn spend_read(&self, n: usize) {
        self.read_budget
            .set(self.read_budget.get().saturating_sub(n));
    }

    /// A new pass of the executor: the read budget is renewed.
    fn begin_pass(&self) {
        self.read_budget.set(PASS_READ_BUDGET);
    }

    /// If tasks yielded, collects the reactor's ready events without
    /// blocking, then wakes them (the starved ones first); returns whether
    /// it did.
    fn wake_deferred_after_poll(&self) -> bool {
        if self.deferred.borrow().is_empty() && self.starved.borrow().is_empty() {
            return false;
        }
        if let Err(e) = self.reactor.wait(Some(Duration::ZERO), || {}) {
            log::error!("event loop {}: polling for events failed: {e}", self.id);
        }
        let starved = std::mem::take(&mut *self.starved.borrow_mut());
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        for w in starved.into_iter().chain(deferred) {
            w.wake();
        }
        true
    }

    /// The earliest deadline of a timer or a [`Sleep`] of this loop.
    pub fn next_deadline(&self) -> Option<Instant> {
        let a = self.wakeups.borrow_mut().next_deadline();
        let b = self.timers.borrow_mut().next_deadline();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every closer (client connections close for good, lingering
    /// sockets stop waiting) and waits (bounded) for every resident of the
    /// loop to leave.
    pub async fn run_closers_and_wait(&self, timeout: Duration) -> bool {
        self.stopping.set(true);
        let closers: Vec<Box<dyn Fn()>> =
            self.closers.borrow_mut().drain().map(|(_, f)| f).collect();
        for close in &closers {
            close();
        }
        drop(closers);
        self.wait_idle(timeout).await
    }

    /// The loop is stopping ([`LoopCtx::run_closers_and_wait`] began).
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    fn resident_left(&self) {
        let n = self.live.get().saturating_sub(1);
        self.live.set(n);
        if n == 0 {
            self.idle.notify(usize::MAX);
        }
    }

    /// Waits until no connection task is left on this loop, or `timeout`.
    /// Returns whether the loop is idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.live.get() == 0 {
                return true;
            }
            let listener = self.idle.listen();
            if self.live.get() == 0 {
                return true;
            }
            let timed_out = futures_lite::future::or(
                async {
                    listener.await;
                    false
                },
                async {
                    sleep_until(deadline).await;
                    true
                },
            )
            .await;
            if timed_out {
                return self.live.get() == 0;
            }
        }
    }
}

/// Runs a panicking-safe callback; returns the panic message on panic.
/// Inlined: every message's callback runs inside it.
#[inline(always)]
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Something a stopping loop must wait for (a connection task, a client
/// supervisor): counted in [`LoopCtx::live`] while it exists, with an
/// optional closer the stop runs to hurry it along.
pub(crate) struct Resident {
    ctx: Rc<LoopCtx>,
    closer: Option<std::num::NonZeroU64>,
}

impl Resident {
    pub fn new(ctx: &Rc<LoopCtx>) -> Self {
        ctx.live.set(ctx.live.get() + 1);
        Resident {
            ctx: ctx.clone(),
            closer: None,
        }
    }

    /// Runs `close` if the loop stops while this resident is here
    /// (replacing a closer set before).
    pub fn on_stop(&mut self, close: impl Fn() + 'static) {
        let token = match self.closer {
            Some(t) => t,
            None => {
                let t = std::num::NonZeroU64::MIN.saturating_add(self.ctx.next_closer.get());
                self.ctx.next_closer.set(t.get());
                self.closer = Some(t);
                t
            }
        };
        self.ctx
            .closers
            .borrow_mut()
            .insert(token.get(), Box::new(close));
    }

    /// Removes the closer set by [`Resident::on_stop`], if any.
    pub fn clear_on_stop(&mut self) {
        if let Some(token) = self.closer.take() {
            if let Ok(mut closers) = self.ctx.closers.try_borrow_mut() {
                closers.remove(&token.get());
            }
        }
    }

    /// A closer is set.
    pub fn has_closer(&self) -> bool {
        self.closer.is_some()
    }

    pub fn ctx(&self) -> &Rc<LoopCtx> {
        &self.ctx
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        if let Some(token) = self.closer {
            // The closers may be out running (a stop): then there is
            // nothing to remove.
            if let Ok(mut closers) = self.ctx.closers.try_borrow_mut() {
                closers.remove(&token.get());
            }
        }
        self.ctx.resident_left();
    }
}

/// Where a [`Sleep`] and the loop's deadline queue meet: the waker to wake.
pub(crate) struct SleepSlot {
    waker: RefCell<Option<Waker>>,
}

impl SleepSlot {
    fn fire(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// A future done at a deadline of the current loop's own clock. Registered
/// with the loop it is first polled on (a sleep lives on one loop: its
/// task's), which it finds again through the thread's current loop; a sleep
/// dropped after its loop ended has nothing to unregister.
pub(crate) struct Sleep {
    deadline: Option<Instant>,
    registered: Option<(TimerId, Rc<SleepSlot>)>,
}

/// Completes at `deadline`; must be polled on an event loop (elsewhere it
/// completes at once, so nothing waits forever by mistake).
pub(crate) fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline: Some(deadline),
        registered: None,
    }
}

impl Sleep {
    /// A sleep that never ends until [`set`](Self::set).
    pub fn never() -> Self {
        Sleep {
            deadline: None,
            registered: None,
        }
    }

    /// Moves the deadline (`None`: never).
    pub fn set(&mut self, deadline: Option<Instant>) {
        if self.deadline != deadline {
            self.unregister();
            self.deadline = deadline;
        }
    }

    fn unregister(&mut self) {
        if let Some((id, _)) = self.registered.take() {
            if let Some(ctx) = LoopCtx::current() {
                ctx.wakeups.borrow_mut().del(id);
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        let now = Instant::now();
        if now >= deadline {
            this.unregister();
            return Poll::Ready(());
        }
        match &this.registered {
            Some((_, slot)) => {
                let mut w = slot.waker.borrow_mut();
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
            }
            None => {
                let Some(ctx) = LoopCtx::current() else {
                    return Poll::Ready(());
                };
                let slot = Rc::new(SleepSlot {
                    waker: RefCell::new(Some(cx.waker().clone())),
                });
                let id = ctx
                    .wakeups
                    .borrow_mut()
                    .add(now, deadline - now, false, slot.clone());
                this.registered = Some((id, slot));
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Yields to the loop's other tasks *and* to the reactor: the task goes on
/// after the loop's next look at its sockets (see [`LoopCtx::defer`]).
pub(crate) async fn yield_to_reactor() {
    let mut yielded = false;
    futures_lite::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        match LoopCtx::current() {
            Some(ctx) => ctx.defer(cx.waker()),
            None => cx.waker().wake_by_ref(),
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::task::{Wake, Waker};

    use super::{LoopCtx, PASS_READ_BUDGET};

    struct Named(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl Wake for Named {
        fn wake(self: Arc<Self>) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    #[test]
    fn a_pass_reads_its_budget_then_the_starved_go_first() {
        let ctx = LoopCtx::enter(0).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let waker = |name| Waker::from(Arc::new(Named(name, order.clone())));
        ctx.begin_pass();
        assert!(ctx.may_read());
        ctx.spend_read(PASS_READ_BUDGET / 2);
        assert!(ctx.may_read());
        ctx.spend_read(PASS_READ_BUDGET);
        assert!(!ctx.may_read(), "the pass read its fill");
        // A task that read and yielded, then one that found nothing left.
        ctx.defer(&waker("read"));
        ctx.defer_starved(&waker("starved"));
        assert!(ctx.wake_deferred_after_poll());
        assert_eq!(*order.lock().unwrap(), ["starved", "read"]);
        assert!(!ctx.wake_deferred_after_poll(), "nothing left deferred");
        ctx.begin_pass();
        assert!(ctx.may_read(), "a new pass, a new budget");
        ctx.exit();
    }
}
