//! The connection state machine: one connection's whole lifecycle, sans-IO,
//! in the shape of quinn-proto's `Connection`: inputs in, outputs polled as
//! data.
//!
//! [`Lifecycle`] owns everything a connection *is*: its phase, its close
//! reason, its full-buffer and dropped-send episodes, the protocol's
//! decoder, the read and write buffers and the deadlines. It never touches a
//! socket or a real clock, calls no callback, plugin or waker, and touches
//! no map. Its inputs are:
//!
//! * bytes read ([`Lifecycle::handle_read`]), the peer's FIN
//!   ([`Lifecycle::handle_eof`]), a socket error ([`Lifecycle::handle_io_error`]);
//! * how much of [`Lifecycle::poll_transmit`] was written
//!   ([`Lifecycle::handle_written`]) or that the socket is full
//!   ([`Lifecycle::handle_write_blocked`]);
//! * the handle's requests (send, close, destroy, pause, resume): the
//!   connection's mailbox (`crate::mailbox`), read at each step;
//! * the handshake hook's verdict ([`Lifecycle::handle_verdict`]), the
//!   application's backlog of async messages ([`Lifecycle::set_app_backlog`])
//!   and the memory budget's verdict ([`Lifecycle::handle_memory`]);
//! * the time, `now`, injected into every call that needs it.
//!
//! Its outputs are [`Event`]s ([`Lifecycle::poll_event`]), the bytes to
//! write ([`Lifecycle::poll_transmit`]), what to do with the socket
//! ([`Lifecycle::poll_socket_action`]) and the next deadline
//! ([`Lifecycle::poll_deadline`]). `crate::driver` is the thin I/O shell
//! that feeds it from a real socket and hands its events to
//! `crate::dispatch`, which runs plugins and callbacks; the unit tests in
//! `tests.rs` feed it by hand, in virtual time.
//!
//! Messages are decoded lazily, one per [`Lifecycle::poll_event`]: what a
//! callback does with the previous event (close, pause, a send that fills
//! the buffer) is seen before the next message is decoded, as in Workerman.
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
//!   (from any phase)                                    peer's FIN,    sent, Closed event,
//!                                                       timeout, stop  peer's FIN awaited)
//! ```
//!
//! [`Event::Connected`] comes on entering Open; [`Event::Closed`] comes once,
//! on entering Lingering or Closed, and only for a connection that reached
//! Open.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::clock::instant_of;
use crate::connection::Connection;
use crate::error::{CloseReason, ConnError};
use crate::limits::Backpressure;
use crate::mailbox::{req, status, Mailbox};
pub(crate) use crate::memory::MemoryVerdict;
use crate::protocol::{Decoder, Protocol, ProtocolError};

/// Write buffers larger than this are released once empty.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What a lingering connection reads and discards, at most, while it
/// waits for the peer's FIN; past it the socket is closed at once.
pub(crate) const LINGER_DISCARD_MAX: usize = 64 * 1024;

/// Messages (and other decoded items) one connection may take per poll of
/// its task before it yields to the other connections of its loop, as
/// tokio's cooperative budget does. With at most `READS_PER_POLL` reads of
/// 64 KiB, this bounds how long one flooding connection holds the loop.
pub(crate) const MESSAGES_PER_TURN: u16 = 256;

/// How much a protocol session may grow within one poll of its task (a
/// WebSocket message being inflated: a few KiB read can inflate to
/// megabytes) before the poll stops decoding and yields: the shell then
/// charges the growth to the memory budget, whose verdict comes before
/// the next decode. One charging unit (`memory::UNIT`): a thousand
/// sessions growing at once overshoot the budget by at most 64 MiB.
pub(crate) const SESSION_GROWTH_PER_TURN: usize = 64 * 1024;

/// The request bits the state machine acts on when it sees them (a pause
/// only holds delivery).
pub(super) const ACTIONS: u8 = req::DESTROY | req::CLOSE | req::FULL;

/// While a send buffer stays full, dropped sends are reported at most this often.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// What a connection's state machine tells the application, in order. The
/// dispatcher (`crate::dispatch`) runs the plugins, then the callback of the
/// same name, for each.
#[derive(Debug)]
pub(crate) enum Event<P: Protocol> {
    /// The protocol's handshake finished: the handshake hook decides, and
    /// its verdict goes back through [`Lifecycle::handle_verdict`]. Nothing
    /// more is decoded until then.
    Handshake(P::Handshake),
    /// Established (after the handshake, if any): `on_connect`.
    Connected,
    /// A decoded message: `on_message`.
    Message(P::Message),
    /// The send buffer reached its limit (once per episode): `on_buffer_full`.
    BufferFull,
    /// The full send buffer was written out: `on_buffer_drain`.
    BufferDrain,
    /// Something went wrong on the connection: `on_error`. (Boxed: errors
    /// are rare, and a smaller event is cheaper to hand out per message.)
    Error(Box<ConnError>),
    /// The connection closed (exactly once, for a connection that got
    /// [`Event::Connected`]): `on_close`.
    Closed(CloseReason),
}

impl<P: Protocol> Event<P> {
    /// An [`Event::Error`].
    pub(crate) fn error(err: ConnError) -> Self {
        Event::Error(Box::new(err))
    }
}

/// The hook's answer to [`Event::Handshake`].
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Accept: the protocol writes its acceptance; then [`Event::Connected`].
    Accept,
    /// Refuse with this answer; the connection closes after flushing it.
    Reject(crate::protocol::Reject),
    /// The hook did not answer (it panicked and asked for a close): write
    /// nothing.
    Abort,
}

/// Where a connection is in its life (see the module diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Created; [`Lifecycle::start`] not called yet.
    New,
    /// The protocol's handshake is under way; not established yet.
    Handshake,
    /// Established: messages flow both ways.
    Open,
    /// No more input is delivered; what is queued (and the protocol's
    /// goodbye) is being flushed.
    Closing,
    /// Flushed and our FIN sent; the close was announced; the peer's FIN is
    /// awaited (bounded) so our last bytes are not destroyed by a reset.
    Lingering,
    /// Over: the socket is to be dropped.
    Closed,
}

/// How much of the connection's life a [`Lifecycle`] owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tenure {
    /// A server connection: this one session is its whole life; what is
    /// still queued at the end is dropped.
    Whole,
    /// One session of a client connection.
    Session {
        /// Whole messages still queued at the end are kept for the next
        /// session (`Client::keep_unsent`).
        keep_unsent: bool,
        /// Sends between sessions queue for the next one (an automatic
        /// reconnect is coming): the end of this session does not close the
        /// mailbox to sends.
        queue_between: bool,
    },
}

/// What the shell must do with the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketAction {
    /// Shut down writing (send our FIN) and keep reading until the peer's.
    Shutdown,
    /// Drop the socket: the connection is over.
    Close,
}

/// What [`Lifecycle::end_turn`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TurnEnd {
    /// Another turn has work now.
    pub more: bool,
    /// The bytes the connection holds (what the memory budget charges).
    pub held: usize,
}

/// One connection's lifecycle as a state machine; see the module docs.
pub(crate) struct Lifecycle<P: Protocol> {
    conn: Connection<P>,
    /// This connection's protocol decoder.
    decoder: P::Decoder,
    phase: Phase,
    tenure: Tenure,
    /// Reached Open (so `Connected` was yielded and `Closed` is owed).
    established: bool,
    /// A `Handshake` event was yielded; its verdict has not come back yet.
    awaiting_verdict: bool,
    /// `Connected` is to be yielded next.
    connected_due: bool,
    /// Inbound bytes not consumed yet: most of the time either empty and
    /// unallocated, or the loop's read buffer, lent for one read
    /// ([`handle_read`](Self::handle_read), [`reclaim_read_buffer`](Self::reclaim_read_buffer)).
    rbuf: Vec<u8>,
    /// Where the unconsumed part of `rbuf` starts and ends (a lent buffer
    /// is longer than what was read into it).
    rpos: usize,
    rend: usize,
    /// `rbuf` is the loop's buffer, to give back at the end of the read.
    rbuf_lent: bool,
    /// Decoding stopped on a hold, not on an incomplete item: the bytes at
    /// `rpos` may hold whole messages to deliver once the hold lifts.
    held_input: bool,
    /// Bytes the protocol wrote by itself; they go out before the queue.
    wire_out: Vec<u8>,
    /// Bytes being written, taken from `wire_out` or the send queue.
    wbuf: Vec<u8>,
    wpos: usize,
    /// `wbuf` came from the send queue (and counts as in flight there).
    wbuf_queued: bool,
    write_blocked: bool,
    /// The last `poll_transmit` found nothing more to write.
    flushed: bool,
    announced: bool,
    /// A read returned 0: the peer's FIN came and nothing is left unread.
    peer_eof: bool,
    /// A full-buffer episode is under way (from `BufferFull` to `BufferDrain`).
    full: bool,
    /// Input held back because the worker is over its memory budget.
    mem_hold: bool,
    /// Close without waiting for the peer's FIN (a peer presumed gone).
    no_linger: bool,
    /// What is left of this poll's [`MESSAGES_PER_TURN`].
    budget: u16,
    /// Messages the application has not handled yet (an async handler's
    /// queue), and whether it is handling one.
    app_backlog: u32,
    app_busy: bool,
    /// Bytes the transport still holds for the peer (TLS records): the
    /// connection is not flushed until they are written.
    transport_pending: usize,
    /// State few connections need, boxed when first needed (see [`Rare`]).
    rare: Option<Box<Rare<P>>>,
}

/// The part of a connection's state most connections never need, or need
/// only for a moment: events waiting to be polled, a handshake or a close
/// under way, dropped sends, memory pressure. It is boxed on first use, so
/// an established idle connection does not carry it: measured, this keeps
/// an idle connection's task small (docs/benchmarks.md, idle memory).
struct Rare<P: Protocol> {
    /// Events produced by inputs, waiting for `poll_event`.
    events: VecDeque<Event<P>>,
    /// Why the connection closes, once known (the first reason wins).
    reason: Option<CloseReason>,
    /// The violation that is closing the connection, for the goodbye.
    violation: Option<ProtocolError>,
    /// When the unreported drops of the current full-buffer episode were
    /// first seen.
    drops_since: Option<Instant>,
    /// When to look at the memory budget again.
    mem_check: Option<Instant>,
    /// When the first whole message must have come
    /// (`Limits::first_message_timeout`).
    first_message_deadline: Option<Instant>,
    handshake_deadline: Option<Instant>,
    close_deadline: Option<Instant>,
    /// Bytes read and discarded while lingering.
    discarded: usize,
    /// The session's held bytes at which this poll stops decoding (0 until
    /// the session first holds a piece in this poll; not state to keep:
    /// `is_spent` ignores it); see [`SESSION_GROWTH_PER_TURN`].
    session_stop: usize,
}

impl<P: Protocol> Rare<P> {
    fn new() -> Self {
        Rare {
            events: VecDeque::new(),
            reason: None,
            violation: None,
            drops_since: None,
            mem_check: None,
            first_message_deadline: None,
            handshake_deadline: None,
            close_deadline: None,
            discarded: 0,
            session_stop: 0,
        }
    }

    /// Holds nothing worth keeping.
    fn is_spent(&self) -> bool {
        self.events.is_empty()
            && self.reason.is_none()
            && self.violation.is_none()
            && self.drops_since.is_none()
            && self.mem_check.is_none()
            && self.first_message_deadline.is_none()
            && self.handshake_deadline.is_none()
            && self.close_deadline.is_none()
    }
}

impl<P: Protocol> Lifecycle<P> {
    /// The state machine of `conn`, for one session of `tenure`.
    pub fn new(conn: Connection<P>, tenure: Tenure) -> Self {
        let decoder = conn.inner.config.protocol.decoder();
        conn.inner.publish(status::LIVE);
        Lifecycle {
            conn,
            decoder,
            phase: Phase::New,
            tenure,
            established: false,
            awaiting_verdict: false,
            connected_due: false,
            rbuf: Vec::new(),
            rpos: 0,
            rend: 0,
            rbuf_lent: false,
            held_input: false,
            wire_out: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            wbuf_queued: false,
            write_blocked: false,
            flushed: true,
            announced: false,
            peer_eof: false,
            full: false,
            mem_hold: false,
            no_linger: false,
            budget: MESSAGES_PER_TURN,
            app_backlog: 0,
            app_busy: false,
            transport_pending: 0,
            rare: None,
        }
    }

    /// The rarely needed state, boxed now if it was not.
    fn rare(&mut self) -> &mut Rare<P> {
        self.rare.get_or_insert_with(|| Box::new(Rare::new()))
    }

    /// The rarely needed state, if it exists.
    fn rare_ref(&self) -> Option<&Rare<P>> {
        self.rare.as_deref()
    }

    /// Drops the rarely needed state if it holds nothing.
    fn shed_rare(&mut self) {
        if self.rare_ref().is_some_and(Rare::is_spent) {
            self.rare = None;
        }
    }

    /// Queues an event for [`poll_event`](Self::poll_event).
    fn emit(&mut self, event: Event<P>) {
        self.rare().events.push_back(event);
    }

    /// The connection this state machine drives.
    pub fn conn(&self) -> &Connection<P> {
        &self.conn
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the connection is a server's (its whole life) or a client's
    /// session.
    pub fn tenure(&self) -> Tenure {
        self.tenure
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// How the connection ended, for its loop's counters: the close
    /// reason of an established connection, `None` for one that never
    /// got that far (a handshake refused, failed or timed out).
    pub fn outcome(&self) -> Option<CloseReason> {
        self.established.then(|| self.reason())
    }

    /// Whether the connection still takes input for the protocol.
    fn is_receiving(&self) -> bool {
        matches!(self.phase, Phase::Handshake | Phase::Open)
    }

    /// The transport is up: the protocol may speak first or announce a
    /// handshake; without one the connection is established at once.
    pub fn start(&mut self, now: Instant) {
        if self.phase != Phase::New {
            return;
        }
        let limits = &self.conn.inner.config.limits;
        let first_message = limits.first_message_timeout;
        let handshake_timeout = limits.handshake_timeout;
        if let Some(t) = first_message {
            self.rare().first_message_deadline = Some(now + t);
        }
        let mut asked = None;
        let protocol = &self.conn.inner.config.protocol;
        let mut wire = crate::protocol::Wire::new(&mut self.wire_out, &mut asked);
        match self.decoder.start(protocol, &mut wire) {
            crate::protocol::Start::Established => self.establish(),
            crate::protocol::Start::Handshake => {
                self.phase = Phase::Handshake;
                self.rare().handshake_deadline = Some(now + handshake_timeout);
            }
        }
        if let Some(close) = asked {
            self.close_for(CloseReason::Session(close), now);
        }
    }

    /// Enters Open and yields `Connected`.
    fn establish(&mut self) {
        self.phase = Phase::Open;
        self.established = true;
        if let Some(rare) = &mut self.rare {
            rare.handshake_deadline = None;
        }
        // Yielded before anything queued, without boxing the rare state:
        // an established idle connection carries none.
        self.connected_due = true;
    }

    /// The transport has a handshake of its own (TLS) before `start`: it
    /// must finish within the handshake timeout too.
    pub fn expect_transport_handshake(&mut self, now: Instant) {
        if self.phase == Phase::New && self.rare_ref().and_then(|r| r.handshake_deadline).is_none()
        {
            let timeout = self.conn.inner.config.limits.handshake_timeout;
            self.rare().handshake_deadline = Some(now + timeout);
        }
    }

    /// How many bytes the transport still holds for the peer.
    pub fn set_transport_pending(&mut self, bytes: usize) {
        self.transport_pending = bytes;
    }

    /// The application's backlog: messages an async handler has not taken
    /// yet, and whether it is running one. Delivery holds at the
    /// `async_queue` limit; a graceful close waits for the handler.
    pub fn set_app_backlog(&mut self, queued: usize, busy: bool) {
        self.app_backlog = u32::try_from(queued).unwrap_or(u32::MAX);
        self.app_busy = busy;
    }

    /// Whether the application's backlog is to be dropped: the connection
    /// closes for a reason other than the peer's FIN (after which what was
    /// read is still handled), or is closed.
    pub fn drops_app_backlog(&self) -> bool {
        match self.phase {
            Phase::New | Phase::Handshake | Phase::Open => false,
            Phase::Closing => self.reason() != CloseReason::PeerClosed,
            Phase::Lingering | Phase::Closed => true,
        }
    }

    /// A new poll of the connection's task: renews the message budget.
    pub fn begin_turn(&mut self) {
        self.budget = MESSAGES_PER_TURN;
        if let Some(rare) = self.rare.as_deref_mut() {
            rare.session_stop = 0;
        }
    }

    /// Whether this poll's message budget is used up (the task must yield,
    /// with input possibly left to deliver).
    pub fn budget_spent(&self) -> bool {
        self.budget == 0
    }

    /// Acts on the handle's requests and on the deadlines that passed
    /// (other than the close deadline, see
    /// [`poll_socket_action`](Self::poll_socket_action)): destroy, close,
    /// timeouts, and the episode of dropped sends. Events it causes are
    /// yielded by [`poll_event`](Self::poll_event).
    pub fn handle_turn(&mut self, now: Instant) {
        self.handle_requests(now);
        if self.phase == Phase::Closed {
            return;
        }
        if self
            .rare_ref()
            .and_then(|r| r.first_message_deadline)
            .is_some_and(|d| now >= d && self.is_receiving())
        {
            self.rare().first_message_deadline = None;
            log::debug!(
                "connection {}: no message within the first-message timeout",
                self.conn.id()
            );
            self.close_for(CloseReason::FirstMessageTimeout, now);
        }
        if self.message_deadline().is_some_and(|d| now >= d) {
            log::debug!(
                "connection {}: a partial message stopped growing",
                self.conn.id()
            );
            self.close_for(CloseReason::MessageTimeout, now);
        }
        if self
            .rare_ref()
            .and_then(|r| r.handshake_deadline)
            .is_some_and(|d| now >= d && matches!(self.phase, Phase::New | Phase::Handshake))
        {
            self.rare().handshake_deadline = None;
            log::debug!("connection {}: handshake timed out", self.conn.id());
            self.close_for(CloseReason::HandshakeTimeout, now);
        }
        self.track_drops(now);
    }

    /// The request bits: destroy and close act at once; a full buffer
    /// starts an episode.
    fn handle_requests(&mut self, now: Instant) {
        let requests = self.conn.inner.requests();
        if requests & ACTIONS != 0 {
            self.act_on_requests(requests, now);
        }
    }

    /// Acts on the request bits in [`ACTIONS`].
    pub(super) fn act_on_requests(&mut self, requests: u8, now: Instant) {
        if requests & req::DESTROY != 0 {
            if self.phase != Phase::Closed {
                let reason = self.requested_reason(CloseReason::Destroyed);
                self.set_reason(reason);
                self.finish(CloseReason::Destroyed);
            }
            return;
        }
        if requests & req::CLOSE != 0
            && matches!(self.phase, Phase::New | Phase::Handshake | Phase::Open)
        {
            let reason = self.requested_reason(CloseReason::Local);
            self.close_for(reason, now);
        }
        if requests & req::FULL != 0 && self.conn.inner.take_requests(req::FULL) {
            self.buffer_filled();
        }
    }

    /// The reason the application gave with its close request.
    fn requested_reason(&self, default: CloseReason) -> CloseReason {
        self.conn
            .inner
            .mailbox()
            .close_request
            .clone()
            .unwrap_or(default)
    }

    /// Records why the connection closes, unless a reason is known already.
    fn set_reason(&mut self, reason: CloseReason) {
        self.rare().reason.get_or_insert(reason);
    }

    /// Why the connection closes (`Local` until known).
    fn reason(&self) -> CloseReason {
        self.rare_ref()
            .and_then(|r| r.reason.clone())
            .unwrap_or(CloseReason::Local)
    }

    /// Whether delivering more input must wait.
    fn hold_delivery(&self) -> bool {
        self.hold_delivery_with(self.conn.inner.requests())
    }

    /// [`hold_delivery`](Self::hold_delivery) with the request bits read
    /// already. The common case (no request, nothing held) reads no limit:
    /// this runs once per message.
    #[inline]
    pub(super) fn hold_delivery_with(&self, requests: u8) -> bool {
        // One branch for the common case: every cause of a hold, or'ed
        // without short-circuits (bools, not `||`), then the exact answer.
        let maybe = (requests & (req::PAUSE | req::CLOSE | req::DESTROY) != 0)
            | (self.budget == 0)
            | self.mem_hold
            | self.awaiting_verdict
            | self.full
            | (self.app_backlog != 0)
            | !self.wire_out.is_empty();
        if !maybe {
            return false;
        }
        if requests & (req::PAUSE | req::CLOSE | req::DESTROY) != 0
            || self.budget == 0
            || self.mem_hold
            || self.awaiting_verdict
        {
            return true;
        }
        let limits = &self.conn.inner.config.limits;
        (self.full && limits.backpressure == Backpressure::PauseRecv)
            || self.app_backlog as usize >= limits.async_queue
            || self.wire_out.len() >= limits.send_buffer_size
    }

    /// Whether [`poll_event`](Self::poll_event) may yield something now:
    /// an event is due, a request came, or there are bytes to decode. The
    /// shell skips polling when not (cheap, inlined).
    #[inline]
    pub fn has_work(&self) -> bool {
        (self.rpos != self.rend && self.is_receiving())
            || self.connected_due
            || self.rare.is_some()
            || self.conn.inner.requests() & ACTIONS != 0
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

    /// While a message is partly in (bytes of it buffered, not held back,
    /// or held by the protocol's session), when it must have grown again:
    /// the last byte read plus `Limits::message_timeout`.
    fn message_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Open {
            return None;
        }
        let partial = (self.rpos != self.rend && !self.held_input) || self.decoder.held_bytes() > 0;
        if !partial {
            return None;
        }
        let timeout = self.conn.inner.config.limits.message_timeout?;
        let last = instant_of(self.conn.inner.last_active.load(Ordering::Relaxed));
        Some(last + timeout)
    }

    /// The earliest deadline this connection waits for, if any.
    pub fn poll_deadline(&self) -> Option<Instant> {
        let message = self.message_deadline();
        let Some(rare) = self.rare_ref() else {
            return message;
        };
        [
            message,
            rare.first_message_deadline.filter(|_| self.is_receiving()),
            rare.handshake_deadline
                .filter(|_| matches!(self.phase, Phase::New | Phase::Handshake)),
            rare.close_deadline
                .filter(|_| matches!(self.phase, Phase::Closing | Phase::Lingering)),
            rare.drops_since.map(|t| t + DROP_REPORT_INTERVAL),
            rare.mem_check,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Bytes this connection holds: its buffers, what the transport holds,
    /// the send queue, and what the protocol's session holds. What the
    /// memory budget charges ([`end_turn`](Self::end_turn) reports it).
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        self.held_with(&self.conn.inner.mailbox())
    }

    fn held_with(&self, mb: &Mailbox<P>) -> usize {
        let own = if self.rbuf_lent {
            0
        } else {
            self.rbuf.capacity()
        };
        own + self.transport_pending
            + (self.wbuf.len() - self.wpos)
            + self.wire_out.len()
            + mb.queue.len()
            + self.decoder.held_bytes()
            + crate::protocol::Encoder::held_bytes(&mb.encoder)
    }

    /// The end of a poll: whether another turn has work before the task may
    /// sleep (queued bytes the socket can take, a request that came in, an
    /// event to yield, input a lifted hold lets through), and the bytes the
    /// connection holds, for the memory budget. When there is no more work,
    /// or when the task yields, the mailbox's `polling` mark is cleared
    /// under the same lock, so the next send wakes the task.
    pub fn end_turn(&mut self, requests_seen: u8, yield_now: bool) -> TurnEnd {
        let input_ready = self.held_input && self.is_receiving() && !self.hold_delivery();
        let events = self.connected_due || self.rare_ref().is_some_and(|r| !r.events.is_empty());
        // The async handler has messages and nothing running: start them.
        let app_ready = self.app_backlog > 0 && !self.app_busy;
        let mut mb = self.conn.inner.mailbox();
        let writable = !self.write_blocked;
        let drops_unseen = mb.dropped > 0 && self.rare_ref().and_then(|r| r.drops_since).is_none();
        let more = (writable
            && (!self.wire_out.is_empty() || (self.established && !mb.queue.is_empty())))
            || drops_unseen
            || events
            || app_ready
            || input_ready
            || self.conn.inner.requests() != requests_seen;
        if !more || yield_now {
            mb.polling = false;
        }
        let held = if self.phase == Phase::Closed {
            0
        } else {
            self.held_with(&mb)
        };
        drop(mb);
        self.shed_rare();
        TurnEnd {
            more: more && !yield_now,
            held,
        }
    }

    /// The loop is ending with the connection still open: it closes now
    /// (the `Closed` event is still yielded once).
    pub fn abandon(&mut self) {
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
