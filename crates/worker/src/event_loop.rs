//! The per-thread event loop context: executor, timers, read scratch buffer.

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

use crate::timer_queue::TimerQueue;

/// Size of the per-loop read buffer every connection reads into.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

pub(crate) type TimerFn = Box<dyn FnMut()>;

/// State of one event-loop thread, reachable through a thread-local.
pub(crate) struct LoopCtx {
    /// Index of this loop within its worker (0..count).
    pub id: usize,
    /// Process-unique identity of this loop.
    pub uid: u64,
    /// This loop's own reactor (edge-triggered epoll).
    pub reactor: Rc<crate::reactor::Reactor>,
    pub ex: Rc<LocalExecutor<'static>>,
    pub timers: RefCell<TimerQueue<TimerFn>>,
    /// Waker of the timer driver task and the deadline it sleeps until.
    timer_waker: RefCell<Option<Waker>>,
    timer_armed: Cell<Option<Instant>>,
    /// Shared read buffer: taken by a connection for the duration of a read.
    scratch: Cell<Vec<u8>>,
    /// Connection tasks alive on this loop, and an event when it drops to 0.
    pub live: Cell<usize>,
    pub idle: Event,
    /// Closers run when the loop stops, by connection id: client
    /// connections (close for good) and lingering server sockets (stop waiting).
    pub closers: RefCell<HashMap<u64, Box<dyn Fn()>>>,
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
    // async-io still provides the timers (its helper thread runs them);
    // start its reactor now, not lazily at the first timer, which may come
    // while the process is out of file descriptors.
    static ASYNC_IO: std::sync::Once = std::sync::Once::new();
    ASYNC_IO.call_once(|| {
        async_io::block_on(async_io::Timer::after(Duration::from_millis(1)));
    });
    let ctx = LoopCtx::enter(id)?;
    let ex = ctx.ex.clone();
    ex.spawn(TimerDriver::new(ctx.clone())).detach();
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
            if fut.as_mut().poll(&mut cx).is_ready() {
                break;
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
            }
            let timeout = woken.then_some(Duration::ZERO);
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
    static CURRENT_UID: Cell<u64> = const { Cell::new(0) };
}

/// Identity of the loop running on this thread (0 if none); cheap.
pub(crate) fn current_loop_uid() -> u64 {
    CURRENT_UID.with(|c| c.get())
}

impl LoopCtx {
    /// Creates a loop context and makes it current on this thread.
    pub fn enter(id: usize) -> std::io::Result<Rc<LoopCtx>> {
        let reactor = Rc::new(crate::reactor::Reactor::new()?);
        static NEXT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let uid = NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CURRENT_UID.with(|c| c.set(uid));
        let ctx = Rc::new(LoopCtx {
            id,
            uid,
            reactor,
            ex: Rc::new(LocalExecutor::new()),
            timers: RefCell::new(TimerQueue::new()),
            timer_waker: RefCell::new(None),
            timer_armed: Cell::new(None),
            scratch: Cell::new(Vec::new()),
            live: Cell::new(0),
            idle: Event::new(),
            closers: RefCell::new(HashMap::new()),
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(ctx.clone()));
        Ok(ctx)
    }

    /// Leaves the loop: drops its timers and forgets the thread-local.
    pub fn exit(&self) {
        let dropped = self.timers.borrow_mut().clear();
        drop(dropped);
        CURRENT.with(|c| c.borrow_mut().take());
        CURRENT_UID.with(|c| c.set(0));
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

    /// Wakes the timer driver if a new deadline is earlier than the one it sleeps for.
    pub fn timer_added(&self, deadline: Option<Instant>) {
        let Some(d) = deadline else { return };
        match self.timer_armed.get() {
            Some(armed) if armed <= d => {}
            _ => {
                if let Some(w) = self.timer_waker.borrow().as_ref() {
                    w.wake_by_ref();
                }
            }
        }
    }

    /// Closes this loop's client connections for good and waits (bounded)
    /// for every connection task of the loop to end.
    pub async fn run_closers_and_wait(&self, timeout: Duration) -> bool {
        let closers: Vec<Box<dyn Fn()>> =
            self.closers.borrow_mut().drain().map(|(_, f)| f).collect();
        for close in &closers {
            close();
        }
        drop(closers);
        self.wait_idle(timeout).await
    }

    pub fn conn_finished(&self) {
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
                    async_io::Timer::at(deadline).await;
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

/// The task that runs a loop's timers.
pub(crate) struct TimerDriver {
    ctx: Rc<LoopCtx>,
    sleeper: async_io::Timer,
    due: Vec<crate::timer_queue::TimerId>,
}

impl TimerDriver {
    pub fn new(ctx: Rc<LoopCtx>) -> Self {
        TimerDriver {
            ctx,
            sleeper: async_io::Timer::never(),
            due: Vec::new(),
        }
    }
}

impl Future for TimerDriver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let ctx = &this.ctx;
        {
            let mut w = ctx.timer_waker.borrow_mut();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        loop {
            this.due.clear();
            ctx.timers
                .borrow_mut()
                .collect_due(Instant::now(), &mut this.due);
            for &id in &this.due {
                let Some(mut f) = ctx.timers.borrow_mut().take(id) else {
                    continue;
                };
                if let Err(msg) = catch(&mut f) {
                    log::error!(
                        "timer {} panicked: {msg}; the loop keeps running",
                        id.as_u64()
                    );
                }
                ctx.timers.borrow_mut().finish(id, f, Instant::now());
            }
            let next = ctx.timers.borrow_mut().next_deadline();
            ctx.timer_armed.set(next);
            match next {
                None => return Poll::Pending,
                Some(d) if d <= Instant::now() => {
                    // An interval-0 timer: run it again on the next loop turn.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(d) => {
                    this.sleeper.set_at(d);
                    if Pin::new(&mut this.sleeper).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}
