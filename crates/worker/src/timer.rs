//! `Timer::add` and friends, Workerman's `Timer` on lubdub's event loop.

use std::time::{Duration, Instant};

use crate::error::Misuse;
use crate::event_loop::LoopCtx;
use crate::timer_queue::TimerId;

/// Timers on the current event loop, like Workerman's `Timer`.
///
/// Call these from a running loop: `on_worker_start`, any connection
/// callback, or another timer. Elsewhere they return [`Misuse::NoEventLoop`].
/// A timer belongs to the loop (thread) that added it; callbacks run on that
/// loop and need not be `Send`.
///
/// * Repeating timers keep a fixed rate; ticks missed while the loop was
///   busy are skipped, not replayed.
/// * An interval of zero runs the callback on the next loop turn.
/// * A panicking timer callback is logged; the loop and the timer go on.
pub struct Timer;

impl Timer {
    /// Runs `f` every `interval`, first at `now + interval`.
    pub fn add(interval: Duration, f: impl FnMut() + 'static) -> Result<TimerId, Misuse> {
        Self::insert(interval, true, Box::new(f))
    }

    /// Runs `f` once after `delay`.
    pub fn once(delay: Duration, f: impl FnOnce() + 'static) -> Result<TimerId, Misuse> {
        let mut f = Some(f);
        Self::insert(
            delay,
            false,
            Box::new(move || {
                if let Some(f) = f.take() {
                    f()
                }
            }),
        )
    }

    /// Deletes a timer of this loop. Returns whether it existed. A timer may
    /// delete itself from its own callback.
    pub fn del(id: TimerId) -> bool {
        LoopCtx::current().is_some_and(|ctx| ctx.timers.borrow_mut().del(id))
    }

    /// Deletes every timer of this loop.
    pub fn del_all() {
        if let Some(ctx) = LoopCtx::current() {
            // Drop the callbacks after releasing the borrow: their captures'
            // destructors may call Timer again.
            let dropped = ctx.timers.borrow_mut().clear();
            drop(dropped);
        }
    }

    /// Number of timers on this loop (0 outside a loop).
    pub fn count() -> usize {
        LoopCtx::current().map_or(0, |ctx| ctx.timers.borrow().len())
    }

    fn insert(
        interval: Duration,
        repeat: bool,
        f: crate::event_loop::TimerFn,
    ) -> Result<TimerId, Misuse> {
        let ctx = LoopCtx::current().ok_or(Misuse::NoEventLoop)?;
        let now = Instant::now();
        // The loop looks at its timers before it next waits: nothing to wake.
        let id = ctx.timers.borrow_mut().add(now, interval, repeat, f);
        Ok(id)
    }
}
