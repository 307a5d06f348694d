//! The timer state machine: deadlines over an injected clock, no I/O.
//!
//! [`TimerQueue`] is what [`Timer`](crate::Timer) uses on every event loop; it
//! is public so the scheduling rules can be tested (and reused) in virtual
//! time: every method that needs the time takes `now`.
//!
//! Rules:
//! * Repeating timers run at a fixed rate: the next deadline is the previous
//!   deadline plus the interval, never "callback end plus interval", so a
//!   slow callback does not make the schedule drift.
//! * Ticks missed because the loop was late are skipped, not replayed in a
//!   burst: the next deadline is the first one on the fixed-rate grid that is
//!   still in the future.
//! * An interval of zero means "next loop turn".
//! * A timer can be deleted at any time, including by its own callback while
//!   it runs (its payload is then dropped instead of rescheduled).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lubdub_worker::timer_queue::TimerQueue;
//!
//! let t0 = Instant::now();
//! let mut q = TimerQueue::new();
//! let id = q.add(t0, Duration::from_secs(1), true, "tick");
//! let mut due = Vec::new();
//! q.collect_due(t0 + Duration::from_millis(3500), &mut due);
//! assert_eq!(due, [id]);
//! let payload = q.take(id).unwrap();
//! q.finish(id, payload, t0 + Duration::from_millis(3500));
//! // ticks at 2 s and 3 s were skipped; the next one is on the 1 s grid
//! assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(4)));
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Identifies a timer within the queue (and event loop) that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub(crate) u64);

impl TimerId {
    /// The raw id number: a slot index and a process-wide generation, so it
    /// is unique within the process until 2^32 timers have been created.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

#[derive(Debug)]
struct Entry<T> {
    /// Deadline while scheduled in the heap; `None` while due/running, or
    /// when it can never fire (an interval too large for `Instant`).
    deadline: Option<Instant>,
    /// The grid point of the latest scheduled tick (fixed-rate anchor).
    tick: Instant,
    interval: Duration,
    repeat: bool,
    /// `None` while the payload is out being run.
    payload: Option<T>,
}

/// Timer entries in a slab: an id is `generation << 32 | slot`, so lookups
/// are an index and a compare, and a freed slot's old ids stop matching.
#[derive(Debug)]
struct Slots<T> {
    slots: Vec<(u32, Option<Entry<T>>)>,
    free: Vec<u32>,
    live: usize,
}

/// Generations are global, so an id from one event loop's queue never
/// matches a timer of another loop's queue.
fn fresh_generation() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl<T> Slots<T> {
    fn new() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    fn insert(&mut self, entry: Entry<T>) -> u64 {
        let gen = fresh_generation();
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = (gen, Some(entry));
                i
            }
            None => {
                self.slots.push((gen, Some(entry)));
                (self.slots.len() - 1) as u32
            }
        };
        self.live += 1;
        (u64::from(gen) << 32) | u64::from(slot)
    }

    fn split(id: u64) -> (usize, u32) {
        ((id & 0xFFFF_FFFF) as usize, (id >> 32) as u32)
    }

    fn get(&self, id: &u64) -> Option<&Entry<T>> {
        let (slot, gen) = Self::split(*id);
        match self.slots.get(slot) {
            Some((g, Some(e))) if *g == gen => Some(e),
            _ => None,
        }
    }

    fn get_mut(&mut self, id: &u64) -> Option<&mut Entry<T>> {
        let (slot, gen) = Self::split(*id);
        match self.slots.get_mut(slot) {
            Some((g, Some(e))) if *g == gen => Some(e),
            _ => None,
        }
    }

    fn contains_key(&self, id: &u64) -> bool {
        self.get(id).is_some()
    }

    fn remove(&mut self, id: &u64) -> Option<Entry<T>> {
        let (slot, gen) = Self::split(*id);
        match self.slots.get_mut(slot) {
            Some((g, e @ Some(_))) if *g == gen => {
                self.live -= 1;
                self.free.push(slot as u32);
                e.take()
            }
            _ => None,
        }
    }

    fn len(&self) -> usize {
        self.live
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn drain(&mut self) -> impl Iterator<Item = Entry<T>> + '_ {
        self.free.clear();
        self.live = 0;
        self.slots.drain(..).filter_map(|(_, e)| e)
    }
}

/// Deadline-ordered timers carrying a payload `T` (the callback, on a loop).
#[derive(Debug)]
pub struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: Slots<T>,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            entries: Slots::new(),
        }
    }

    /// Adds a timer first due at `now + interval`; `repeat` makes it periodic.
    pub fn add(&mut self, now: Instant, interval: Duration, repeat: bool, payload: T) -> TimerId {
        let deadline = now.checked_add(interval);
        let id = self.entries.insert(Entry {
            deadline,
            tick: deadline.unwrap_or(now),
            interval,
            repeat,
            payload: Some(payload),
        });
        if let Some(d) = deadline {
            self.heap.push(Reverse((d, id)));
        }
        TimerId(id)
    }

    /// Deletes a timer. Returns whether it existed. Safe to call from the
    /// timer's own callback (between [`take`](Self::take) and [`finish`](Self::finish)).
    pub fn del(&mut self, id: TimerId) -> bool {
        let existed = self.entries.remove(&id.0).is_some();
        self.compact_if_sparse();
        existed
    }

    /// Deletes every timer and returns their payloads (those not running now).
    pub fn clear(&mut self) -> Vec<T> {
        self.heap.clear();
        self.entries.drain().filter_map(|e| e.payload).collect()
    }

    /// Number of live timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no live timer.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` is a live timer.
    pub fn contains(&self, id: TimerId) -> bool {
        self.entries.contains_key(&id.0)
    }

    /// The earliest deadline of a live timer, if any.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if self.is_current(at, id) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Appends to `out` the ids of all timers due at `now`, earliest first,
    /// and removes them from the schedule. Run each with [`take`](Self::take)
    /// then [`finish`](Self::finish). Timers added while running these are
    /// not included, so an interval of 0 runs once per call.
    pub fn collect_due(&mut self, now: Instant, out: &mut Vec<TimerId>) {
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.is_current(at, id) {
                if let Some(e) = self.entries.get_mut(&id) {
                    e.deadline = None;
                }
                out.push(TimerId(id));
            }
        }
    }

    /// Takes the payload of a due timer out to run it. A one-shot timer is
    /// removed now; a repeating one stays registered until [`finish`](Self::finish).
    /// Returns `None` if the timer was deleted meanwhile.
    pub fn take(&mut self, id: TimerId) -> Option<T> {
        let e = self.entries.get_mut(&id.0)?;
        if e.repeat {
            e.payload.take()
        } else {
            self.entries.remove(&id.0).and_then(|e| e.payload)
        }
    }

    /// Gives back the payload of a repeating timer after it ran and schedules
    /// its next tick on the fixed-rate grid, skipping ticks already in the
    /// past at `now`. Drops the payload if the timer was deleted while it ran.
    pub fn finish(&mut self, id: TimerId, payload: T, now: Instant) {
        let Some(e) = self.entries.get_mut(&id.0) else {
            return;
        };
        if !e.repeat {
            return;
        }
        e.payload = Some(payload);
        let Some(mut next) = e.tick.checked_add(e.interval) else {
            return; // can never fire again
        };
        if next <= now && !e.interval.is_zero() {
            // Skip missed ticks: jump to the first grid point after `now`.
            let behind = now.duration_since(e.tick).as_nanos();
            let step = e.interval.as_nanos();
            let ticks = behind / step + 1;
            let skipped = ticks - 1;
            if skipped > 0 {
                log::debug!("timer {} skipped {skipped} missed tick(s)", id.0);
            }
            match u32::try_from(ticks)
                .ok()
                .and_then(|t| e.interval.checked_mul(t))
                .and_then(|d| e.tick.checked_add(d))
            {
                Some(n) => next = n,
                None => return,
            }
        } else if e.interval.is_zero() {
            next = now;
        }
        e.tick = next;
        e.deadline = Some(next);
        self.heap.push(Reverse((next, id.0)));
    }

    fn is_current(&self, at: Instant, id: u64) -> bool {
        matches!(self.entries.get(&id), Some(e) if e.deadline == Some(at))
    }

    fn compact_if_sparse(&mut self) {
        if self.heap.len() > 64 && self.heap.len() > 2 * self.entries.len() {
            let entries = &self.entries;
            self.heap.retain(
                |Reverse((at, id))| matches!(entries.get(id), Some(e) if e.deadline == Some(*at)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs every due timer at `now`, recording `(id, now)`.
    fn run(q: &mut TimerQueue<u32>, now: Instant, fired: &mut Vec<u32>) {
        let mut due = Vec::new();
        q.collect_due(now, &mut due);
        for id in due {
            if let Some(p) = q.take(id) {
                fired.push(p);
                q.finish(id, p, now);
            }
        }
    }

    #[test]
    fn repeating_fixed_rate_without_drift() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let id = q.add(t0, ms(100), true, 1);
        let mut fired = vec![];
        // the loop wakes 7 ms late every time: the schedule stays on the grid
        for k in 1..=5u64 {
            assert_eq!(q.next_deadline(), Some(t0 + ms(100 * k)));
            run(&mut q, t0 + ms(100 * k + 7), &mut fired);
        }
        assert_eq!(fired.len(), 5);
        assert!(q.contains(id));
    }

    #[test]
    fn missed_ticks_are_skipped_not_burst() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.add(t0, ms(100), true, 1);
        let mut fired = vec![];
        run(&mut q, t0 + ms(1050), &mut fired); // 10 ticks late
        assert_eq!(fired, [1]);
        assert_eq!(q.next_deadline(), Some(t0 + ms(1100)));
        run(&mut q, t0 + ms(1060), &mut fired);
        assert_eq!(fired, [1], "nothing due before 1100 ms");
    }

    #[test]
    fn one_shot_fires_once_and_is_removed() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let id = q.add(t0, ms(10), false, 7);
        let mut fired = vec![];
        run(&mut q, t0 + ms(9), &mut fired);
        assert!(fired.is_empty());
        run(&mut q, t0 + ms(10), &mut fired);
        run(&mut q, t0 + ms(100), &mut fired);
        assert_eq!(fired, [7]);
        assert!(!q.contains(id));
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn delete_while_running_drops_payload() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let id = q.add(t0, ms(10), true, 1);
        let mut due = vec![];
        q.collect_due(t0 + ms(10), &mut due);
        let p = q.take(id).unwrap();
        assert!(q.del(id), "deleting itself from its callback");
        q.finish(id, p, t0 + ms(10));
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn deleted_due_timer_is_not_run() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let a = q.add(t0, ms(10), true, 1);
        let b = q.add(t0, ms(10), true, 2);
        let mut due = vec![];
        q.collect_due(t0 + ms(10), &mut due);
        assert_eq!(due, [a, b]);
        // a's callback deletes b
        let pa = q.take(a).unwrap();
        q.del(b);
        q.finish(a, pa, t0 + ms(10));
        assert!(q.take(b).is_none());
    }

    #[test]
    fn zero_interval_runs_once_per_turn() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.add(t0, Duration::ZERO, true, 3);
        let mut fired = vec![];
        run(&mut q, t0, &mut fired);
        assert_eq!(fired, [3], "one run per collect, not an endless loop");
        assert_eq!(q.next_deadline(), Some(t0));
        run(&mut q, t0 + ms(1), &mut fired);
        assert_eq!(fired, [3, 3]);
    }

    #[test]
    fn earliest_first_and_clear() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let late = q.add(t0, ms(30), false, 30);
        let early = q.add(t0, ms(10), false, 10);
        let mut due = vec![];
        q.collect_due(t0 + ms(50), &mut due);
        assert_eq!(due, [early, late]);
        // collected but not taken: still timers, cleared with the rest
        q.add(t0, ms(5), true, 5);
        let mut left = q.clear();
        left.sort();
        assert_eq!(left, vec![5, 10, 30]);
        assert!(q.is_empty());
    }

    #[test]
    fn huge_interval_never_fires_and_does_not_panic() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let id = q.add(t0, Duration::MAX, true, 1);
        assert_eq!(q.next_deadline(), None);
        assert!(q.del(id));
        let id = q.add(t0, Duration::from_secs(u64::MAX / 4), true, 1);
        let mut fired = vec![];
        run(&mut q, t0 + ms(1), &mut fired);
        assert!(fired.is_empty());
        assert!(q.contains(id));
    }

    #[test]
    fn stale_ids_do_not_touch_reused_slots_or_other_queues() {
        let t0 = Instant::now();
        let mut a = TimerQueue::new();
        let old = a.add(t0, ms(10), false, 1);
        assert!(a.del(old));
        let new = a.add(t0, ms(10), false, 2); // reuses the slot
        assert_ne!(old, new);
        assert!(!a.del(old), "a stale id finds nothing");
        assert!(a.contains(new));
        let mut b = TimerQueue::new();
        let theirs = b.add(t0, ms(10), false, 3);
        assert!(!a.del(theirs) && !b.del(new), "ids never cross queues");
        assert_eq!((a.len(), b.len()), (1, 1));
    }

    #[test]
    fn churn_keeps_heap_bounded() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        for i in 0..100_000u32 {
            let id = q.add(t0, ms(1000), true, i);
            q.del(id);
        }
        assert!(q.is_empty());
        assert!(
            q.heap.len() <= 65,
            "heap holds {} stale entries",
            q.heap.len()
        );
    }
}
