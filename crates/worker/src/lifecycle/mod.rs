//! The connection state machine: one connection's whole lifecycle, sans-IO.
//!
//! [`Lifecycle`] owns everything a connection *is*, from the first byte to the
//! last callback: its phase, its flags, its place in the connections map,
//! its socket count, the protocol's decoder, the read and write buffers,
//! the deadlines, and the exactly-once `on_close`. It never touches a
//! socket or a real clock. Its inputs are:
//!
//! * bytes read ([`Lifecycle::on_read`]), the peer's FIN ([`Lifecycle::on_eof`]), a
//!   socket error ([`Lifecycle::on_io_error`]);
//! * how many bytes of [`Lifecycle::transmit`] were written ([`Lifecycle::on_written`])
//!   or that the socket is full ([`Lifecycle::on_write_blocked`]);
//! * requests from the [`Connection`] handle (send, close, destroy, pause,
//!   resume), read from its flags and send queue by [`Lifecycle::process`];
//! * the time, `now`, injected into every call that needs it.
//!
//! Its outputs are the bytes to write ([`Lifecycle::transmit`]), what to do
//! with the socket ([`Lifecycle::socket_action`]: shut down writing, close), the
//! next deadline ([`Lifecycle::next_deadline`]) and the callbacks it fires.
//! `crate::driver` is the thin I/O shell that feeds it from a real socket
//! through a `crate::transport::Transport`; the unit tests at the end feed
//! it by hand, in virtual time.
//!
//! ```text
//!            start()
//!   New ────────────────┬──────────────────────────────► Open ──┐
//!                       │ Start::Handshake      accepted   ▲    │ close(), FIN,
//!                       └──► Handshake ────────────────────┘    │ violation, timeout
//!                               │ refused, timeout, FIN         ▼
//!                               └─────────────────────────► Closing (flush queued
//!                                                               │    bytes + goodbye)
//!                          flushed, peer's FIN already in  ┌────┴────┐ flushed
//!                                                          ▼         ▼
//!   destroy(), socket error, close timeout ─────────►  Closed ◄── Lingering (our FIN
//!   (from any phase)                                    peer's FIN,    sent, on_close ran,
//!                                                       timeout, stop  peer's FIN awaited)
//! ```
//!
//! `on_connect` runs on entering Open; `on_close` runs once, on entering
//! Lingering or Closed, and only for a connection that reached Open. A
//! server connection enters the connections map just before `on_connect`
//! and leaves it just after `on_close`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::connection::{Connection, CLOSE_REQ, DESTROY_REQ, FINISHED, OVER_LIMIT, PAUSED};
use crate::endpoint::Backpressure;
use crate::error::CloseReason;
use crate::handlers::{guard, LocalBoxFuture};
use crate::memory::{release, MemoryBudget};
use crate::protocol::{Protocol, ProtocolError, SessionClose, Start, Wire};

/// Write buffers larger than this are released once empty.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What a lingering connection reads and discards, at most, while it
/// waits for the peer's FIN; past it the socket is closed at once.
pub(crate) const LINGER_DISCARD_MAX: usize = 64 * 1024;

/// Messages (and other decoded items, and async handler starts) one
/// connection may take per poll of its task before it yields to the other
/// connections of its loop, as tokio's cooperative budget does. With at most
/// `READS_PER_POLL` reads of 64 KiB, this bounds how long one flooding
/// connection holds the loop.
pub(crate) const MESSAGES_PER_TURN: u32 = 256;

/// Where a connection is in its life (see the module diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Created; [`Lifecycle::start`] not called yet.
    New,
    /// The protocol's handshake is under way; `on_connect` has not run.
    Handshake,
    /// Established: messages flow both ways.
    Open,
    /// No more input is delivered; what is queued (and the protocol's
    /// goodbye) is being flushed.
    Closing,
    /// Flushed and our FIN sent; `on_close` ran; the peer's FIN is awaited
    /// (bounded) so our last bytes are not destroyed by a reset.
    Lingering,
    /// Over: the socket is to be dropped.
    Closed,
}

/// How much of the connection's life a [`Lifecycle`] owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tenure {
    /// A server connection: this one session is its whole life. The core
    /// puts it in the connections map when established, takes it out after
    /// `on_close`, and drops what is still queued.
    Whole,
    /// One session of a client connection: the client's supervisor owns
    /// the map entry across sessions (a [`MapEntry`]), and whole messages
    /// still queued at the end are kept for the next session.
    Session,
}

/// What the shell must do with the socket after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketAction {
    /// Shut down writing (send our FIN) and keep reading until the peer's.
    Shutdown,
    /// Drop the socket: the connection is over.
    Close,
}

/// A connection's place in its endpoint's connections map: inserted when
/// created, removed when dropped. The only code that touches the map.
pub(crate) struct MapEntry<P: Protocol> {
    conn: Connection<P>,
}

impl<P: Protocol> MapEntry<P> {
    pub fn insert(conn: &Connection<P>) -> Self {
        conn.endpoint().connections.insert(conn.id(), conn.clone());
        MapEntry { conn: conn.clone() }
    }
}

impl<P: Protocol> Drop for MapEntry<P> {
    fn drop(&mut self) {
        self.conn.endpoint().connections.remove(&self.conn.id());
    }
}

/// The final close of a client connection (its supervisor ends): no more
/// sends accepted, nothing kept queued.
pub(crate) fn retire<P: Protocol>(conn: &Connection<P>) {
    conn.inner.flags.fetch_or(FINISHED, Ordering::AcqRel);
    let mut ob = conn.outbox();
    ob.closed = true;
    release(&mut ob.buf);
}

/// One connection's lifecycle as a state machine; see the module docs.
pub(crate) struct Lifecycle<P: Protocol> {
    conn: Connection<P>,
    /// This connection's own clone of the protocol (decoder state).
    decoder: P,
    phase: Phase,
    tenure: Tenure,
    /// Reached Open (so `on_connect` ran and `on_close` is owed).
    established: bool,
    /// Set while a server connection is in the map.
    map_entry: Option<MapEntry<P>>,
    /// Unconsumed inbound bytes (a partial message), empty and unallocated
    /// most of the time.
    rbuf: Vec<u8>,
    /// Where the unconsumed part of `rbuf` starts.
    rpos: usize,
    /// `rbuf` may hold whole messages not yet delivered (delivery was held).
    rbuf_undelivered: bool,
    /// Bytes the protocol wrote by itself; they go out before the queue.
    wire_out: Vec<u8>,
    /// Bytes being written, taken from `wire_out` or the send queue.
    wbuf: Vec<u8>,
    wpos: usize,
    /// `wbuf` came from the send queue (and counts as in flight there).
    wbuf_queued: bool,
    write_blocked: bool,
    /// The last `transmit` found nothing more to write.
    flushed: bool,
    announced: bool,
    /// A read returned 0: the peer's FIN came and nothing is left unread.
    peer_eof: bool,
    first_message_deadline: Option<Instant>,
    /// The connection flags that hold input back (pause, closing, and the
    /// full send buffer under `Backpressure::PauseRecv`).
    hold_mask: u8,
    /// What is left of this poll's [`MESSAGES_PER_TURN`].
    budget: u32,
    /// Bytes the transport still holds for the peer (TLS records): the
    /// connection is not flushed until they are written.
    transport_pending: usize,
    /// Bytes charged to the worker's memory budget.
    charge: usize,
    /// Input held back because the worker is over its memory budget.
    mem_hold: bool,
    /// State few connections need, boxed when first needed (see [`Rare`]).
    rare: Option<Box<Rare<P>>>,
}

/// The part of a connection's state most connections never need, or need
/// only for a moment: the async handler's queue, a handshake or a close
/// under way, dropped sends, memory pressure. It is boxed on first use, so
/// an established idle connection does not carry it: measured, this keeps
/// an idle connection's task under 300 bytes (docs/benchmarks.md, idle
/// memory).
pub(super) struct Rare<P: Protocol> {
    /// Messages waiting for the async handler, and the one it runs.
    pub pending: VecDeque<P::Message>,
    pub inflight: Option<LocalBoxFuture>,
    /// The violation that is closing the connection, for the goodbye.
    pub violation: Option<ProtocolError>,
    /// When the unreported drops of the current full-buffer episode were
    /// first seen.
    pub drops_since: Option<Instant>,
    /// When to look at the memory budget again.
    pub mem_check: Option<Instant>,
    pub handshake_deadline: Option<Instant>,
    pub close_deadline: Option<Instant>,
    /// Bytes read and discarded while lingering.
    pub discarded: usize,
}

impl<P: Protocol> Rare<P> {
    fn new() -> Self {
        Rare {
            pending: VecDeque::new(),
            inflight: None,
            violation: None,
            drops_since: None,
            mem_check: None,
            handshake_deadline: None,
            close_deadline: None,
            discarded: 0,
        }
    }

    /// Holds nothing worth keeping.
    fn is_spent(&self) -> bool {
        self.pending.is_empty()
            && self.pending.capacity() == 0
            && self.inflight.is_none()
            && self.violation.is_none()
            && self.drops_since.is_none()
            && self.mem_check.is_none()
            && self.handshake_deadline.is_none()
            && self.close_deadline.is_none()
    }
}

impl<P: Protocol> Lifecycle<P> {
    /// A core for `conn`, counted as an open socket of its endpoint.
    pub fn new(conn: Connection<P>, tenure: Tenure) -> Self {
        let decoder = conn.endpoint().protocol.clone();
        let hold_mask = CLOSE_REQ
            | DESTROY_REQ
            | PAUSED
            | match conn.endpoint().limits.backpressure {
                Backpressure::PauseRecv => OVER_LIMIT,
                Backpressure::Drop => 0,
            };
        conn.endpoint().sockets.fetch_add(1, Ordering::Relaxed);
        Lifecycle {
            conn,
            decoder,
            phase: Phase::New,
            tenure,
            established: false,
            map_entry: None,
            rbuf: Vec::new(),
            rpos: 0,
            rbuf_undelivered: false,
            wire_out: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            wbuf_queued: false,
            write_blocked: false,
            flushed: true,
            announced: false,
            peer_eof: false,
            first_message_deadline: None,
            hold_mask,
            budget: MESSAGES_PER_TURN,
            transport_pending: 0,
            charge: 0,
            mem_hold: false,
            rare: None,
        }
    }

    /// The rarely needed state, boxed now if it was not.
    pub(super) fn rare(&mut self) -> &mut Rare<P> {
        self.rare.get_or_insert_with(|| Box::new(Rare::new()))
    }

    /// The rarely needed state, if it exists.
    pub(super) fn rare_ref(&self) -> Option<&Rare<P>> {
        self.rare.as_deref()
    }

    /// Messages queued for the async handler.
    pub(super) fn async_queued(&self) -> usize {
        self.rare_ref().map_or(0, |r| r.pending.len())
    }

    /// The async handler runs or has messages queued.
    pub(super) fn async_busy(&self) -> bool {
        self.rare_ref()
            .is_some_and(|r| r.inflight.is_some() || !r.pending.is_empty())
    }

    /// Drops the rarely needed state if it holds nothing.
    fn shed_rare(&mut self) {
        if self.rare_ref().is_some_and(Rare::is_spent) {
            self.rare = None;
        }
    }

    /// The connection this core drives.
    pub fn conn(&self) -> &Connection<P> {
        &self.conn
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// A server connection in its endpoint's map, where a stopping worker
    /// finds it (before Open and while lingering it is not).
    pub fn in_map(&self) -> bool {
        self.map_entry.is_some()
    }

    /// Whether the connection is a server's (its whole life) or a client's
    /// session.
    pub fn tenure(&self) -> Tenure {
        self.tenure
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The transport is up: the protocol may speak first or announce a
    /// handshake; without one the connection is established at once.
    pub fn start(&mut self, now: Instant) {
        if self.phase != Phase::New {
            return;
        }
        let limits = &self.conn.endpoint().limits;
        self.first_message_deadline = limits.first_message_timeout.map(|t| now + t);
        let handshake_timeout = limits.handshake_timeout;
        let mut asked = None;
        let mut wire = Wire::new(&mut self.wire_out, &mut asked);
        match self.decoder.start(&mut wire) {
            Start::Established => self.establish(),
            Start::Handshake => {
                self.phase = Phase::Handshake;
                self.rare().handshake_deadline = Some(now + handshake_timeout);
            }
        }
        if let Some(close) = asked {
            self.session_close(close);
        }
    }

    /// The protocol asked to close (after the bytes it wrote).
    pub(super) fn session_close(&mut self, close: SessionClose) {
        self.conn.close_with_reason(CloseReason::Session(close));
    }

    /// Enters Open: into the map (servers), then plugin and user `on_connect`.
    fn establish(&mut self) {
        self.phase = Phase::Open;
        self.established = true;
        if let Some(rare) = &mut self.rare {
            rare.handshake_deadline = None;
        }
        self.shed_rare();
        if self.tenure == Tenure::Whole {
            self.map_entry = Some(MapEntry::insert(&self.conn));
        }
        let conn = &self.conn;
        let ep = conn.endpoint();
        for plugin in &ep.handlers.plugins {
            if !guard(conn, "plugin on_connect", || plugin.on_connect(conn)) {
                return;
            }
        }
        if let Some(cb) = &ep.handlers.on_connect {
            guard(conn, "on_connect", || cb(conn));
        }
    }

    /// Acts on the handle's requests and the deadlines (other than the
    /// close deadline, see [`socket_action`](Self::socket_action)), fires
    /// the send-queue events flagged by other threads and delivers
    /// messages a pause held back. Returns the flags it acted on.
    pub fn process(&mut self, now: Instant) -> u8 {
        let flags = self.conn.flags();
        if flags & DESTROY_REQ != 0 {
            if self.phase != Phase::Closed {
                self.finish(CloseReason::Destroyed);
            }
            return flags;
        }
        if self
            .first_message_deadline
            .is_some_and(|d| now >= d && self.is_receiving())
        {
            self.first_message_deadline = None;
            log::debug!(
                "connection {}: no message within the first-message timeout",
                self.conn.id()
            );
            self.conn
                .close_with_reason(CloseReason::FirstMessageTimeout);
        }
        if self
            .rare_ref()
            .and_then(|r| r.handshake_deadline)
            .is_some_and(|d| now >= d && matches!(self.phase, Phase::New | Phase::Handshake))
        {
            self.rare().handshake_deadline = None;
            log::debug!("connection {}: handshake timed out", self.conn.id());
            self.conn.close_with_reason(CloseReason::HandshakeTimeout);
        }
        if self.conn.flags() & CLOSE_REQ != 0 {
            self.begin_closing(now);
        }
        self.fire_send_events(now);
        if self.enforce_memory_budget(now) {
            return flags;
        }
        self.redeliver();
        flags
    }

    /// Whether the connection still takes input for the protocol.
    fn is_receiving(&self) -> bool {
        matches!(self.phase, Phase::Handshake | Phase::Open)
    }

    /// Whether the shell should read from the socket now: input is wanted
    /// (not paused, not held back), or the peer's FIN is awaited.
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Handshake | Phase::Open => !self.hold_delivery(),
            Phase::Lingering => true,
            _ => false,
        }
    }

    /// The earliest deadline this connection waits for, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let receiving = self.is_receiving();
        let first = self.first_message_deadline.filter(|_| receiving);
        let Some(rare) = self.rare_ref() else {
            return first;
        };
        [
            first,
            rare.handshake_deadline
                .filter(|_| matches!(self.phase, Phase::New | Phase::Handshake)),
            rare.close_deadline
                .filter(|_| matches!(self.phase, Phase::Closing | Phase::Lingering)),
            rare.drops_since.map(|t| t + output::DROP_REPORT_INTERVAL),
            rare.mem_check,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether another turn has work before the task may sleep: queued
    /// bytes the socket can take, send events, changed flags, a message for
    /// the async handler. Clears the queue's `polling` mark when not, so the
    /// next send wakes the task.
    ///
    /// Also the end-of-poll moment the buffers are charged to the worker's
    /// memory budget (see `crate::memory`).
    pub fn more_work(&mut self, flags: u8, yield_now: bool, now: Instant) -> bool {
        let mut ob = self.conn.outbox();
        let held = self.rbuf.capacity()
            + self.transport_pending
            + (self.wbuf.len() - self.wpos)
            + self.wire_out.len()
            + ob.buf.len();
        let writable = !self.write_blocked;
        let drops_unseen = ob.dropped > 0 && self.rare_ref().and_then(|r| r.drops_since).is_none();
        let async_ready = self
            .rare_ref()
            .is_some_and(|r| r.inflight.is_none() && !r.pending.is_empty());
        let more = (writable
            && (!self.wire_out.is_empty() || (self.established && !ob.buf.is_empty())))
            || ob.full_pending
            || drops_unseen
            || self.conn.flags() != flags
            || async_ready
            // Input held back by a hold that lifted within the turn (the
            // async queue drained): deliver it now, no socket edge will.
            || (self.rbuf_undelivered && !self.hold_delivery());
        if !more || yield_now {
            ob.polling = false;
        }
        drop(ob);
        self.charge(MemoryBudget::charge_for(held), now);
        more && !yield_now
    }

    /// The transport has a handshake of its own (TLS) before `start`: it
    /// must finish within the handshake timeout too.
    pub fn expect_transport_handshake(&mut self, now: Instant) {
        if self.phase == Phase::New && self.rare_ref().and_then(|r| r.handshake_deadline).is_none()
        {
            let timeout = self.conn.endpoint().limits.handshake_timeout;
            self.rare().handshake_deadline = Some(now + timeout);
        }
    }

    /// How many bytes the transport still holds for the peer.
    pub fn set_transport_pending(&mut self, bytes: usize) {
        self.transport_pending = bytes;
    }

    /// A new poll: registers the task's waker, marks the queue as being
    /// looked at, and renews the message budget.
    pub fn begin_turn(&mut self, waker: &std::task::Waker) {
        self.conn.inner.waker.register(waker);
        self.conn.outbox().polling = true;
        self.budget = MESSAGES_PER_TURN;
    }

    /// Whether this poll's message budget is used up (the task must yield,
    /// with input possibly left to deliver).
    pub fn budget_spent(&self) -> bool {
        self.budget == 0
    }
}

impl<P: Protocol> Drop for Lifecycle<P> {
    fn drop(&mut self) {
        // Dropped alive (the loop is ending): on_close still runs exactly once.
        if self.phase != Phase::Closed {
            self.finish(CloseReason::WorkerStopped);
        }
    }
}

mod close;
mod input;
mod output;

#[cfg(test)]
mod tests;
