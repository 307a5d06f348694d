//! Whether an event loop that ran out of work yields the CPU before it
//! sleeps: a small state machine fed with how long each yield took.
//!
//! Yielding first lets whatever else is runnable on the CPU go ahead, and
//! when that is the very client or loop whose bytes the loop is about to
//! wait for, the loop then finds them without a sleep/wake-up round trip
//! (two loops and a client on two cores: 0.93x -> 1.28x of tokio, see
//! docs/benchmarks.md). But when what is runnable is a CPU-bound stranger,
//! each yield hands it a whole time slice, and the loop ends up with a
//! third of a core instead of half (ping-pong next to `yes`: 80k -> 52k
//! round trips per second). The two cases differ in how long a yield
//! takes: a hand-over to a client comes back within a few hundred
//! microseconds, a yield to a CPU-bound thread lasts its slice (milliseconds).
//! So: when a window of yields holds several long ones, stop yielding for
//! a while (longer each time it happens again), then try again.

use std::time::Duration;

/// A yield at least this long handed the CPU to a thread that kept it.
const LONG: Duration = Duration::from_millis(1);
/// Yields judged together.
const WINDOW: u16 = 256;
/// Long yields in one window that switch yielding off (one in eight; a
/// CPU-bound neighbour makes about every other yield long, hand-overs
/// between two loops and a client about one in a hundred).
const LONG_LIMIT: u16 = 32;
/// Idle turns without yielding after the first switch-off; doubles on
/// each switch-off in a row, up to [`MAX_OFF`].
const FIRST_OFF: u32 = 1024;
const MAX_OFF: u32 = 64 * 1024;

#[derive(Debug)]
pub(crate) struct IdleYield {
    seen: u16,
    long: u16,
    /// Idle turns left without yielding.
    off_left: u32,
    /// Length of the next switch-off.
    next_off: u32,
}

impl Default for IdleYield {
    fn default() -> Self {
        IdleYield {
            seen: 0,
            long: 0,
            off_left: 0,
            next_off: FIRST_OFF,
        }
    }
}

impl IdleYield {
    /// Called once per idle turn: whether to yield before sleeping.
    pub fn should_yield(&mut self) -> bool {
        if self.off_left > 0 {
            self.off_left -= 1;
            return false;
        }
        true
    }

    /// Records how long a yield took.
    pub fn record(&mut self, took: Duration) {
        self.seen += 1;
        if took >= LONG {
            self.long += 1;
        }
        if self.long >= LONG_LIMIT {
            self.off_left = self.next_off;
            self.next_off = (self.next_off * 2).min(MAX_OFF);
            self.seen = 0;
            self.long = 0;
        } else if self.seen >= WINDOW {
            // A clean window: yielding pays here; forget past switch-offs.
            self.next_off = FIRST_OFF;
            self.seen = 0;
            self.long = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_micros(300);
    const SLICE: Duration = Duration::from_millis(3);

    /// Runs `turns` idle turns whose yields take `took(i)`; returns how
    /// many of them yielded.
    fn run(y: &mut IdleYield, turns: usize, took: impl Fn(usize) -> Duration) -> usize {
        let mut yielded = 0;
        for i in 0..turns {
            if y.should_yield() {
                yielded += 1;
                y.record(took(i));
            }
        }
        yielded
    }

    #[test]
    fn hand_overs_keep_yielding() {
        let mut y = IdleYield::default();
        // Short yields, with one long one in 40 (two loops and a client).
        let n = run(&mut y, 100_000, |i| if i % 40 == 0 { SLICE } else { SHORT });
        assert_eq!(n, 100_000);
    }

    #[test]
    fn a_cpu_bound_neighbour_switches_yielding_off_and_back_on_later() {
        let mut y = IdleYield::default();
        // Every other yield lasts a slice: off at the LONG_LIMIT-th long one.
        let turns = 2 * LONG_LIMIT as usize;
        let n = run(&mut y, turns, |i| {
            if i % 2 == 0 {
                SLICE
            } else {
                Duration::ZERO
            }
        });
        assert_eq!(n, turns - 1);
        assert!(!y.should_yield());
        // Off for FIRST_OFF turns in all, then tried again.
        assert_eq!(run(&mut y, FIRST_OFF as usize - 2, |_| SLICE), 0);
        assert!(y.should_yield());
    }

    #[test]
    fn switch_offs_grow_while_the_neighbour_stays_and_reset_when_it_leaves() {
        let mut y = IdleYield::default();
        let turns = 1_000_000;
        let n = run(&mut y, turns, |_| SLICE);
        // LONG_LIMIT yields per switch-off, switch-offs growing to MAX_OFF
        // turns: under 2 % of a million turns yield.
        assert!(n < 20_000, "{n} yields");
        assert_eq!(y.next_off, MAX_OFF);
        // The neighbour is gone: the next clean window resets the growth.
        while !y.should_yield() {}
        y.record(SHORT);
        run(&mut y, WINDOW as usize, |_| SHORT);
        assert_eq!(y.next_off, FIRST_OFF);
    }
}
