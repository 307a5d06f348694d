//! Message history per channel (a uid, a group, everyone), opt in: each
//! message published on a channel with history gets the next offset of
//! that channel; each channel has an epoch, random, that changes whenever
//! its history is lost. A connection that comes back with the position it
//! last saw is sent what it missed ([`Hub::recover`](crate::Hub::recover)).
//!
//! [`History`] says which channels keep history and how much. A single
//! node keeps it in memory ([`MemoryHistory`]); the Redis backplane in a
//! stream per channel (see [`crate::RedisBackplane`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::HubError;
use crate::Target;

/// A channel's epoch: 64 random bits from the operating system's
/// cryptographic source, drawn when the channel's history starts (again).
/// Shown and parsed as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl Epoch {
    /// A new random epoch.
    pub fn random() -> Result<Epoch, HubError> {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b)
            .map_err(|e| HubError::Config(format!("no random epoch: {e}")))?;
        Ok(Epoch(u64::from_be_bytes(b)))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Epoch {
    type Err = HubError;

    /// 16 hex digits.
    fn from_str(s: &str) -> Result<Self, HubError> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HubError::Config(format!(
                "an epoch is 16 hex digits, not {:?}",
                s.get(..32).unwrap_or("(long)")
            )));
        }
        u64::from_str_radix(s, 16)
            .map(Epoch)
            .map_err(|e| HubError::Config(format!("epoch: {e}")))
    }
}

/// Where a message stands in its channel's history: the channel's epoch
/// and the message's offset (1 for the first message of an epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The channel's epoch.
    pub epoch: Epoch,
    /// The message's offset in the epoch (the last one seen, for a
    /// connection's position; 0: none yet).
    pub offset: u64,
}

impl fmt::Display for Position {
    /// `EPOCH:OFFSET`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

impl FromStr for Position {
    type Err = HubError;

    /// `EPOCH:OFFSET`.
    fn from_str(s: &str) -> Result<Self, HubError> {
        let (e, o) = s
            .split_once(':')
            .ok_or_else(|| HubError::Config("a position is EPOCH:OFFSET".into()))?;
        Ok(Position {
            epoch: e.parse()?,
            offset: o
                .parse()
                .map_err(|_| HubError::Config(format!("not an offset: {o:?}")))?,
        })
    }
}

/// What a connection's catch-up came to (see
/// [`Hub::recover`](crate::Hub::recover)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Every message after the position given was delivered, in order:
    /// nothing was lost. `false` when the channel's epoch changed (its
    /// history was lost: Redis restarted without persistence, it expired)
    /// or the connection was away longer than the history keeps: then no
    /// old message was delivered, and the connection goes on from
    /// [`position`](Self::position).
    pub recovered: bool,
    /// Messages delivered from history (0 when not recovered).
    pub delivered: usize,
    /// The channel's position when the catch-up ended: the last message
    /// the connection got from history, or where it goes on from.
    pub position: Position,
}

/// Turns a message (as the protocol encoded it) and its position into what
/// members are sent: to show the position to the client (`[EPOCH:OFFSET]
/// line` for a text chat). Called once per message per node.
pub type Stamp = Arc<dyn Fn(&Position, &[u8]) -> Vec<u8> + Send + Sync>;

/// Which channels keep history, and how much (off by default for every
/// channel). Every node of a cluster must use the same settings: the node
/// that publishes decides.
///
/// ```
/// use std::time::Duration;
/// use lubdub_hub::History;
///
/// let history = History::default()
///     .groups(true)                // every group
///     .pattern("u:vip-*")          // and the uids starting with vip-
///     .max_len(500)
///     .max_age(Duration::from_secs(120));
/// ```
#[derive(Clone)]
pub struct History {
    /// Every uid's channel keeps history.
    pub uids: bool,
    /// Every group's channel keeps history.
    pub groups: bool,
    /// The everyone channel (`send_to_all`) keeps history.
    pub all: bool,
    /// Channels that keep history besides: `u:NAME` or `g:NAME`, a
    /// trailing `*` matching any rest (`g:room-*`).
    pub patterns: Vec<String>,
    /// Messages kept per channel. Default 1,000. A connection that missed
    /// more is not recovered.
    pub max_len: usize,
    /// How long a message is kept. Default 5 minutes. A channel with no
    /// message for that long loses its history (a new epoch).
    pub max_age: Duration,
    stamp: Option<Stamp>,
}

impl Default for History {
    fn default() -> Self {
        History {
            uids: false,
            groups: false,
            all: false,
            patterns: Vec::new(),
            max_len: 1000,
            max_age: Duration::from_secs(300),
            stamp: None,
        }
    }
}

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History")
            .field("uids", &self.uids)
            .field("groups", &self.groups)
            .field("all", &self.all)
            .field("patterns", &self.patterns)
            .field("max_len", &self.max_len)
            .field("max_age", &self.max_age)
            .field("stamp", &self.stamp.is_some())
            .finish()
    }
}

impl History {
    /// Sets [`uids`](Self::uids).
    pub fn uids(mut self, on: bool) -> Self {
        self.uids = on;
        self
    }

    /// Sets [`groups`](Self::groups).
    pub fn groups(mut self, on: bool) -> Self {
        self.groups = on;
        self
    }

    /// Sets [`all`](Self::all).
    pub fn all(mut self, on: bool) -> Self {
        self.all = on;
        self
    }

    /// Adds a pattern (see [`patterns`](Self::patterns)).
    pub fn pattern(mut self, pattern: &str) -> Self {
        self.patterns.push(pattern.to_owned());
        self
    }

    /// Sets [`max_len`](Self::max_len) (at least 1).
    pub fn max_len(mut self, n: usize) -> Self {
        self.max_len = n.max(1);
        self
    }

    /// Sets [`max_age`](Self::max_age) (at least 1 s).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age.max(Duration::from_secs(1));
        self
    }

    /// Sets how a message shows its position to members (see [`Stamp`]).
    /// Without it, members get messages as they were sent.
    pub fn stamp(
        mut self,
        f: impl Fn(&Position, &[u8]) -> Vec<u8> + Send + Sync + 'static,
    ) -> Self {
        self.stamp = Some(Arc::new(f));
        self
    }

    /// Whether `target`'s channel keeps history.
    pub fn keeps(&self, target: &Target) -> bool {
        let (kind, name) = match target {
            Target::Uid(u) => (self.uids, format!("u:{u}")),
            Target::Group(g) => (self.groups, format!("g:{g}")),
            Target::All => return self.all,
            Target::Conn(_) => return false,
        };
        kind || self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => *p == name,
        })
    }

    /// `bytes` as members see them at `pos`.
    pub(crate) fn stamped(&self, pos: &Position, bytes: &[u8]) -> Vec<u8> {
        match &self.stamp {
            Some(f) => f(pos, bytes),
            None => bytes.to_vec(),
        }
    }
}

/// One channel's history in memory.
pub(crate) struct Log {
    epoch: Epoch,
    /// The last offset given.
    top: u64,
    /// Offset, when, the message (unstamped), oldest first.
    entries: VecDeque<(u64, Instant, Arc<[u8]>)>,
    /// When the last message was appended.
    last: Instant,
}

/// What a read of a channel's history found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRead {
    /// The channel's epoch (a fresh one when it has no history).
    pub epoch: Epoch,
    /// The last offset given in this epoch (0: none).
    pub top: u64,
    /// Messages after the offset asked for, oldest first, at most the
    /// count asked for: offset and bytes (as sent, unstamped).
    pub entries: Vec<(u64, Vec<u8>)>,
}

/// The history of a single node: per channel, the last
/// [`History::max_len`] messages younger than [`History::max_age`].
pub(crate) struct MemoryHistory {
    logs: Mutex<HashMap<Target, Arc<Mutex<Log>>>>,
    /// Appends since the last sweep of idle channels.
    appends: std::sync::atomic::AtomicU64,
}

/// A channel's lock, held while its message is appended and delivered, so
/// a catch-up reading it sees every message either in history or live.
pub(crate) struct LogGuard<'a> {
    log: std::sync::MutexGuard<'a, Log>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryHistory {
    pub fn new() -> Self {
        MemoryHistory {
            logs: Mutex::new(HashMap::new()),
            appends: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The log of `target`, made if it has none.
    pub fn log(&self, target: &Target, now: Instant) -> Result<Arc<Mutex<Log>>, HubError> {
        let mut logs = lock(&self.logs);
        if let Some(log) = logs.get(target) {
            return Ok(log.clone());
        }
        let log = Arc::new(Mutex::new(Log {
            epoch: Epoch::random()?,
            top: 0,
            entries: VecDeque::new(),
            last: now,
        }));
        logs.insert(target.clone(), log.clone());
        Ok(log)
    }

    /// Drops the logs of channels idle for `max_age` (every 1,024 appends).
    fn sweep(&self, h: &History, now: Instant) {
        let n = self
            .appends
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 1024 != 1023 {
            return;
        }
        // A log in use (the caller's own, among others) is kept.
        lock(&self.logs).retain(|_, log| match log.try_lock() {
            Ok(log) => now.saturating_duration_since(log.last) < h.max_age,
            Err(_) => true,
        });
    }
}

impl<'a> LogGuard<'a> {
    pub fn new(log: &'a Mutex<Log>) -> Self {
        LogGuard { log: lock(log) }
    }

    /// Drops what is too old or too many; a channel idle past `max_age`
    /// starts a new epoch.
    fn trim(&mut self, h: &History, now: Instant) -> Result<(), HubError> {
        let log = &mut *self.log;
        if now.saturating_duration_since(log.last) >= h.max_age && log.top > 0 {
            log.epoch = Epoch::random()?;
            log.top = 0;
            log.entries.clear();
        }
        while log.entries.len() > h.max_len
            || log
                .entries
                .front()
                .is_some_and(|(_, t, _)| now.saturating_duration_since(*t) >= h.max_age)
        {
            log.entries.pop_front();
        }
        Ok(())
    }

    /// Appends `bytes`: its position.
    pub fn append(
        &mut self,
        mem: &MemoryHistory,
        h: &History,
        bytes: &[u8],
        now: Instant,
    ) -> Result<Position, HubError> {
        self.trim(h, now)?;
        let log = &mut *self.log;
        log.top += 1;
        log.last = now;
        log.entries.push_back((log.top, now, bytes.into()));
        if log.entries.len() > h.max_len {
            log.entries.pop_front();
        }
        let pos = Position {
            epoch: log.epoch,
            offset: log.top,
        };
        mem.sweep(h, now);
        Ok(pos)
    }

    /// What follows `after`, at most `count` messages.
    pub fn read(
        &mut self,
        h: &History,
        after: u64,
        count: usize,
        now: Instant,
    ) -> Result<HistoryRead, HubError> {
        self.trim(h, now)?;
        let log = &*self.log;
        Ok(HistoryRead {
            epoch: log.epoch,
            top: log.top,
            entries: log
                .entries
                .iter()
                .filter(|(o, _, _)| *o > after)
                .take(count)
                .map(|(o, _, b)| (*o, b.to_vec()))
                .collect(),
        })
    }
}

/// How a position compares with a channel's history: what a catch-up
/// from it can expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// Nothing missed.
    UpToDate,
    /// Missed messages, all still in history from `since.offset + 1`.
    Within,
    /// The epoch changed, or the position is past the top (it belongs to
    /// a lost history), or more was missed than history keeps.
    Lost,
}

/// Where `since` stands against a read of `read.epoch` whose top is
/// `read.top` and whose oldest entry (if it has entries after `since`) is
/// `first`.
pub(crate) fn window(since: &Position, read: &HistoryRead, max_len: usize) -> Window {
    if since.epoch != read.epoch || since.offset > read.top {
        return Window::Lost;
    }
    if since.offset == read.top {
        return Window::UpToDate;
    }
    let missed = read.top - since.offset;
    let first_ok = read
        .entries
        .first()
        .is_some_and(|(o, _)| *o == since.offset + 1);
    if missed > max_len as u64 || !first_ok {
        return Window::Lost;
    }
    Window::Within
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> History {
        History::default()
            .groups(true)
            .max_len(3)
            .max_age(Duration::from_secs(10))
    }

    #[test]
    fn which_channels_keep_history() {
        let h = History::default().pattern("g:room-*").pattern("u:ann");
        assert!(h.keeps(&Target::Group("room-1".into())));
        assert!(!h.keeps(&Target::Group("lobby".into())));
        assert!(h.keeps(&Target::Uid("ann".into())));
        assert!(!h.keeps(&Target::Uid("anna".into())));
        assert!(!h.keeps(&Target::All));
        assert!(History::default().all(true).keeps(&Target::All));
        assert!(History::default()
            .uids(true)
            .keeps(&Target::Uid("x".into())));
    }

    #[test]
    fn positions_print_and_parse() {
        let p = Position {
            epoch: Epoch(0xdead_beef),
            offset: 7,
        };
        assert_eq!(p.to_string(), "00000000deadbeef:7");
        assert_eq!("00000000deadbeef:7".parse::<Position>().unwrap(), p);
        for bad in [
            "",
            "x:1",
            "00000000deadbeef",
            "00000000deadbeef:x",
            "0000000000deadbeef:1",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }

    /// Virtual time: the clock is an `Instant` the test moves.
    #[test]
    fn memory_history_is_bounded_by_length_and_age_in_virtual_time() {
        let mem = MemoryHistory::new();
        let h = h();
        let t0 = Instant::now();
        let g = Target::Group("g".into());
        let log = mem.log(&g, t0).unwrap();
        let mut guard = LogGuard::new(&log);
        let mut last = None;
        for i in 1..=5u64 {
            let p = guard
                .append(
                    &mem,
                    &h,
                    format!("m{i}").as_bytes(),
                    t0 + Duration::from_secs(i),
                )
                .unwrap();
            assert_eq!(p.offset, i);
            last = Some(p);
        }
        let epoch = last.unwrap().epoch;
        let read = guard.read(&h, 0, 100, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(read.top, 5);
        assert_eq!(
            read.entries.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            [3, 4, 5],
            "max_len 3"
        );
        // At t0+12 s the messages of 1 s and 2 s are past max_age (10 s).
        let read = guard
            .read(&h, 0, 100, t0 + Duration::from_secs(13))
            .unwrap();
        assert_eq!(
            read.entries.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(read.epoch, epoch);
        // Idle for max_age: the history is lost, a new epoch starts.
        let read = guard
            .read(&h, 0, 100, t0 + Duration::from_secs(16))
            .unwrap();
        assert_ne!(read.epoch, epoch);
        assert_eq!((read.top, read.entries.len()), (0, 0));
    }

    #[test]
    fn the_window_of_a_position() {
        let e = Epoch(1);
        let read = |top: u64, first: u64| HistoryRead {
            epoch: e,
            top,
            entries: (first..=top).map(|o| (o, vec![])).collect(),
        };
        let at = |o| Position {
            epoch: e,
            offset: o,
        };
        assert_eq!(window(&at(5), &read(5, 1), 10), Window::UpToDate);
        assert_eq!(window(&at(2), &read(5, 3), 10), Window::Within);
        assert_eq!(window(&at(1), &read(5, 3), 10), Window::Lost, "2 trimmed");
        assert_eq!(
            window(&at(0), &read(20, 1), 10),
            Window::Lost,
            "over max_len"
        );
        assert_eq!(
            window(&at(9), &read(5, 1), 10),
            Window::Lost,
            "past the top"
        );
        let other = Position {
            epoch: Epoch(2),
            offset: 5,
        };
        assert_eq!(window(&other, &read(5, 1), 10), Window::Lost);
    }
}
