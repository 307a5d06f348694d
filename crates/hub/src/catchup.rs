//! One connection catching up on one channel (sans-IO): what it missed,
//! read from history, then the live messages, in offset order, each once.
//!
//! While the history is read, live messages for the connection are held
//! (they may be newer than what the read returns, or the same messages
//! again). Each message is delivered when it is the next offset; older
//! ones are dropped as duplicates. A gap among the live messages (a
//! message the node did not hear) asks for another read from the first
//! missing offset.
//!
//! ```text
//!   new(next) ──► Reading ── read(off, m)* ── read_done() ─┬─► Live (nothing held)
//!                   ▲  live(off, m): held                  │
//!                   └──────── a gap: read from `next` ◄────┘
//!   Live: live(off == next) delivered; off < next dropped; off > next held, read again
//! ```

use std::collections::BTreeMap;

/// A read from history found a hole: the offsets from `next` are gone
/// (trimmed, expired), so the catch-up cannot be complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    /// The first offset that is missing.
    pub next: u64,
}

/// What [`Catchup::read_done`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterRead {
    /// Caught up: the live messages follow on.
    Live,
    /// Held live messages skip offsets: read again from this offset.
    ReadFrom(u64),
}

/// The state of one connection's catch-up on one channel.
#[derive(Debug)]
pub(crate) struct Catchup<M> {
    /// The next offset to deliver.
    next: u64,
    /// Live messages past `next`, waiting for their turn.
    held: BTreeMap<u64, M>,
    /// A history read is under way.
    reading: bool,
    /// Most messages held; past it they are dropped and the catch-up is
    /// no longer complete.
    max_held: usize,
    /// Messages were dropped for want of room.
    overflowed: bool,
}

impl<M> Catchup<M> {
    /// A catch-up that delivers from offset `next`, reading history first.
    pub fn new(next: u64, max_held: usize) -> Self {
        Catchup {
            next,
            held: BTreeMap::new(),
            reading: true,
            max_held: max_held.max(1),
            overflowed: false,
        }
    }

    /// The next offset to deliver.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Whether live messages were dropped for want of room.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Live, nothing held, no read under way: every later live message is
    /// delivered as it comes (the catch-up can end).
    #[cfg(test)]
    pub fn settled(&self) -> bool {
        !self.reading && self.held.is_empty()
    }

    /// A live message. What is deliverable now goes to `out`, in order.
    /// Returns the offset to read from when it reveals a gap.
    pub fn live(&mut self, off: u64, msg: M, out: &mut Vec<(u64, M)>) -> Option<u64> {
        if self.reading {
            // Even one older than `next`: until a read says otherwise, the
            // position may be of a lost epoch, or past the top.
            self.hold(off, msg);
            return None;
        }
        if off < self.next {
            return None; // delivered already
        }
        if off == self.next {
            out.push((off, msg));
            self.next += 1;
            self.drain(out);
            return None;
        }
        self.hold(off, msg);
        // A hole before `off`: fill it from history.
        self.reading = true;
        Some(self.next)
    }

    fn hold(&mut self, off: u64, msg: M) {
        if self.held.contains_key(&off) {
            return;
        }
        if self.held.len() >= self.max_held {
            self.overflowed = true;
            return;
        }
        self.held.insert(off, msg);
    }

    /// A message read from history (reads return offsets in increasing
    /// order). `Err` when offsets before `off` are gone from history.
    pub fn read(&mut self, off: u64, msg: M, out: &mut Vec<(u64, M)>) -> Result<(), Gap> {
        if off < self.next {
            return Ok(());
        }
        if off > self.next {
            return Err(Gap { next: self.next });
        }
        out.push((off, msg));
        self.next += 1;
        Ok(())
    }

    /// The read reached the top of the history: deliver what is held and
    /// contiguous, and say whether another read is needed.
    pub fn read_done(&mut self, out: &mut Vec<(u64, M)>) -> AfterRead {
        self.reading = false;
        self.drain(out);
        if self.held.is_empty() {
            AfterRead::Live
        } else {
            self.reading = true;
            AfterRead::ReadFrom(self.next)
        }
    }

    /// Gives up on what is missing before `to` (not recovered): goes on
    /// from `to` (even backwards: a position of a lost epoch, or past the
    /// top, means nothing), delivers what is held from there, and goes
    /// live.
    pub fn skip_to(&mut self, to: u64, out: &mut Vec<(u64, M)>) {
        self.next = to;
        self.reading = false;
        // What is held past a hole can only come after it: take the
        // oldest held as the new start.
        self.drain(out);
        if let Some((&first, _)) = self.held.iter().next() {
            self.next = first;
            self.drain(out);
        }
    }

    /// Moves held messages that are due to `out`; drops older ones.
    fn drain(&mut self, out: &mut Vec<(u64, M)>) {
        while let Some(entry) = self.held.first_entry() {
            let off = *entry.key();
            if off < self.next {
                entry.remove();
            } else if off == self.next {
                out.push((off, entry.remove()));
                self.next += 1;
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offs(out: &[(u64, u64)]) -> Vec<u64> {
        out.iter().map(|(o, _)| *o).collect()
    }

    #[test]
    fn live_messages_held_during_the_read_follow_it_without_duplicates() {
        let mut c = Catchup::new(4, 100);
        let mut out = Vec::new();
        // Live 6 and 7 arrive while 4..=6 are read.
        assert_eq!(c.live(6, 6, &mut out), None);
        assert_eq!(c.live(7, 7, &mut out), None);
        assert!(out.is_empty(), "held while reading");
        for off in 4..=6 {
            c.read(off, off, &mut out).unwrap();
        }
        assert_eq!(c.read_done(&mut out), AfterRead::Live);
        assert_eq!(offs(&out), [4, 5, 6, 7]);
        assert!(c.settled());
        // A late live duplicate, then the next.
        out.clear();
        c.live(7, 7, &mut out);
        c.live(8, 8, &mut out);
        assert_eq!(offs(&out), [8]);
    }

    #[test]
    fn a_gap_among_live_messages_asks_for_a_read() {
        let mut c = Catchup::new(1, 100);
        let mut out = Vec::new();
        assert_eq!(c.read_done(&mut out), AfterRead::Live);
        c.live(1, 1, &mut out);
        assert_eq!(c.live(3, 3, &mut out), Some(2), "2 was not heard");
        assert_eq!(c.live(4, 4, &mut out), None, "already reading");
        c.read(2, 2, &mut out).unwrap();
        c.read(3, 3, &mut out).unwrap();
        assert_eq!(c.read_done(&mut out), AfterRead::Live);
        assert_eq!(offs(&out), [1, 2, 3, 4]);
    }

    #[test]
    fn held_messages_past_the_read_ask_for_another_read() {
        let mut c = Catchup::new(1, 100);
        let mut out = Vec::new();
        c.live(5, 5, &mut out);
        c.read(1, 1, &mut out).unwrap();
        c.read(2, 2, &mut out).unwrap();
        // The read's top was 2; 3 and 4 were published after it and the
        // node did not hear them (its subscription was new).
        assert_eq!(c.read_done(&mut out), AfterRead::ReadFrom(3));
        c.read(3, 3, &mut out).unwrap();
        c.read(4, 4, &mut out).unwrap();
        c.read(5, 5, &mut out).unwrap();
        assert_eq!(c.read_done(&mut out), AfterRead::Live);
        assert_eq!(offs(&out), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn history_with_a_hole_is_a_gap_and_skipping_goes_live() {
        let mut c = Catchup::new(3, 100);
        let mut out = Vec::new();
        c.live(9, 9, &mut out);
        assert_eq!(c.read(5, 5, &mut out), Err(Gap { next: 3 }));
        c.skip_to(8, &mut out);
        assert_eq!(offs(&out), [9], "the held message after the hole");
        c.live(10, 10, &mut out);
        assert_eq!(offs(&out), [9, 10]);
        // A position past the top (another epoch's): back to the top.
        let mut c = Catchup::new(1_000, 100);
        let mut out = Vec::new();
        c.live(6, 6, &mut out); // held: the read will tell
        c.skip_to(6, &mut out);
        c.live(7, 7, &mut out);
        assert_eq!(offs(&out), [6, 7]);
    }

    #[test]
    fn holding_is_bounded() {
        let mut c = Catchup::new(1, 2);
        let mut out = Vec::new();
        for off in 10..20 {
            c.live(off, off, &mut out);
        }
        assert!(c.overflowed());
        assert_eq!(c.held.len(), 2);
    }

    /// One run of the node and Redis as they interleave: the channel's
    /// messages 1..=total are published; the connection last saw `seen`;
    /// the node hears the live stream in order but with some messages
    /// missing (a new subscription, a blip) and with some heard again
    /// (already read); history reads happen when asked, and each read
    /// sees what was published so far.
    fn run(total: u64, seen: u64, steps: &[(u8, u8)]) -> Vec<u64> {
        let mut c = Catchup::new(seen + 1, 10_000);
        let mut out = Vec::new();
        let mut published = seen; // history holds 1..=published
        let mut heard = seen; // the live stream's position
        let mut read_from = Some(seen + 1);
        let mut steps = steps.iter().cycle();
        let mut guard = 0;
        while out.last().map_or(seen, |(o, _)| *o) < total || read_from.is_some() {
            guard += 1;
            assert!(guard < 100_000, "no progress");
            let (kind, arg) = *steps.next().unwrap();
            // Every 8th step reads (or moves on): the steps may repeat
            // one kind forever.
            let kind = if guard % 8 == 0 { 3 } else { kind };
            match kind % 4 {
                // Publish one more.
                0 if published < total => published += 1,
                // The live stream moves on, maybe skipping one.
                1 if heard < published => {
                    heard += 1;
                    // The last message is never missed: a later one would
                    // reveal the hole, and here none comes.
                    if arg % 5 != 0 || heard == total {
                        if let Some(from) = c.live(heard, heard, &mut out) {
                            read_from.get_or_insert(from);
                        }
                    }
                }
                // A live duplicate of something older.
                2 if heard > 0 => {
                    let old = heard.saturating_sub(u64::from(arg % 4));
                    if old > 0 {
                        if let Some(from) = c.live(old, old, &mut out) {
                            read_from.get_or_insert(from);
                        }
                    }
                }
                // A read runs to the current top.
                _ => {
                    if let Some(from) = read_from.take() {
                        for off in from..=published {
                            c.read(off, off, &mut out).unwrap();
                        }
                        if let AfterRead::ReadFrom(f) = c.read_done(&mut out) {
                            read_from = Some(f);
                        }
                    } else if published < total {
                        published += 1;
                    } else if heard < total {
                        // Nothing more is published: the stream catches up.
                        heard = total;
                        if let Some(from) = c.live(heard, heard, &mut out) {
                            read_from.get_or_insert(from);
                        }
                    }
                }
            }
        }
        offs(&out)
    }

    #[test]
    fn a_fixed_interleaving_delivers_everything_once() {
        let got = run(20, 5, &[(0, 1), (1, 5), (3, 0), (0, 2), (2, 3), (1, 1)]);
        assert_eq!(got, (6..=20).collect::<Vec<_>>());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever the interleaving of publishes, live arrivals (some
        /// missing, some repeated) and reads: every offset after the one
        /// seen, exactly once, in order.
        #[test]
        fn every_message_after_the_position_once_in_order(
            total in 1u64..60,
            seen_frac in 0u64..100,
            steps in proptest::collection::vec((any::<u8>(), any::<u8>()), 1..64),
        ) {
            let seen = total * seen_frac / 100;
            let got = run(total, seen, &steps);
            prop_assert_eq!(got, ((seen + 1)..=total).collect::<Vec<_>>());
        }
    }
}
