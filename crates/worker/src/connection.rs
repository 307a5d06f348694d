//! The connection handle shared by callbacks, timers and other threads.
//!
//! A [`Connection`] is what the application holds: sends, closes, pauses,
//! counters, user data. It never touches the socket and never runs a
//! callback: it writes to the connection's mailbox (`crate::mailbox`: the
//! send queue, request bits) and wakes the connection's task, whose state
//! machine (`crate::lifecycle`) acts on them on the connection's own loop.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::{instant_of, monotonic_nanos};
use crate::error::{CloseReason, Misuse};
use crate::mailbox::{req, status, ConnShared};
use crate::protocol::{Encoder, Protocol, ProtocolError, SessionClose};

/// The outcome of [`Connection::send`].
#[derive(Debug)]
#[non_exhaustive]
pub enum SendStatus {
    /// Encoded and queued; it will be written unless the connection breaks.
    Queued,
    /// Dropped: the send buffer is at its limit (reported through `on_error`).
    BufferFull,
    /// Dropped: the connection is closing or closed.
    Closed,
    /// Dropped: the protocol could not encode the message.
    EncodeFailed(ProtocolError),
}

impl SendStatus {
    /// Whether the message was queued for sending.
    pub fn is_queued(&self) -> bool {
        matches!(self, SendStatus::Queued)
    }
}

/// Traffic counters of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnStats {
    /// Bytes read from the socket.
    pub bytes_in: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// Messages decoded.
    pub messages_in: u64,
    /// Messages queued by `send` (not `send_raw`).
    pub messages_out: u64,
    /// `write` system calls made: sends of one loop turn share one.
    pub write_calls: u64,
    /// Full-send-buffer episodes (`on_buffer_full` calls).
    pub buffer_full: u64,
}

/// Where a connection is, as [`Connection::info`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnState {
    /// No socket: a client before its first connect or between sessions.
    Idle,
    /// Connected (handshaking or established).
    Open,
    /// Closing: no more input delivered, what is queued being flushed.
    Closing,
    /// Closed: `on_close` ran.
    Closed,
}

/// One line of an operator's `connections` listing
/// ([`Connection::info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The connection id.
    pub id: u64,
    /// The event loop that drives it.
    pub loop_index: usize,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The local address.
    pub local: SocketAddr,
    /// Traffic counters.
    pub stats: ConnStats,
    /// Bytes queued and not yet written.
    pub send_queue: usize,
    /// Where it is in its life.
    pub state: ConnState,
    /// Since it was created.
    pub age: Duration,
    /// Since bytes last came in (the age, if none came).
    pub idle: Duration,
}

/// A live connection: cheap to clone, `Send + Sync`, usable from any thread.
///
/// Callbacks receive `&Connection`; clone it to keep it (in a timer, another
/// thread, a map of sessions). All methods are non-blocking.
pub struct Connection<P: Protocol> {
    pub(crate) inner: Arc<ConnShared<P>>,
}

impl<P: Protocol> Clone for Connection<P> {
    fn clone(&self) -> Self {
        Connection {
            inner: self.inner.clone(),
        }
    }
}

impl<P: Protocol> fmt::Debug for Connection<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("remote", &self.inner.remote)
            .finish()
    }
}

impl<P: Protocol> Connection<P> {
    pub(crate) fn from_shared(inner: ConnShared<P>) -> Self {
        Connection {
            inner: Arc::new(inner),
        }
    }

    /// The connection id, unique within the process.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Index of the event loop (0..count) that drives this connection.
    /// Compare with [`WorkerHandle::current_loop`](crate::WorkerHandle::current_loop)
    /// to walk only the current loop's connections.
    pub fn loop_index(&self) -> usize {
        self.inner.loop_id
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> SocketAddr {
        *self
            .inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_local_addr(&self, addr: SocketAddr) {
        *self
            .inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = addr;
    }

    /// Encodes `msg` with the protocol and queues it. Never blocks.
    ///
    /// Sends of one loop turn are coalesced into as few writes as possible.
    /// A send that takes the queue to `send_buffer_size` bytes starts a
    /// full-buffer episode; once the queue holds the drop threshold (the
    /// limit, or twice it with `Backpressure::PauseRecv`) messages are
    /// dropped ([`SendStatus::BufferFull`]) and reported through `on_error`,
    /// once per episode.
    ///
    /// `send` never runs a callback: `on_buffer_full` for a send that
    /// reaches the limit runs on the connection's loop afterwards, before
    /// the connection's next message is delivered. So a callback may send
    /// to many connections while holding a lock that `on_buffer_full` takes.
    pub fn send(&self, msg: &P::Outgoing) -> SendStatus {
        let protocol = &self.inner.config.protocol;
        self.queue(true, |buf, encoder| encoder.encode(protocol, msg, buf))
    }

    /// Queues bytes as they are, bypassing the protocol's encoder.
    pub fn send_raw(&self, bytes: &[u8]) -> SendStatus {
        self.queue(false, |buf, _| {
            buf.extend_from_slice(bytes);
            Ok(())
        })
    }

    fn queue(
        &self,
        count: bool,
        encode: impl FnOnce(&mut Vec<u8>, &mut P::Encoder) -> Result<(), ProtocolError>,
    ) -> SendStatus {
        let limits = &self.inner.config.limits;
        let mut mb = self.inner.mailbox();
        if !mb.accepting {
            return SendStatus::Closed;
        }
        if mb.queued() >= limits.drop_threshold() {
            // Counted, not reported one by one: the connection's own loop
            // reports the episode (when it drains, closes, or once a second
            // while it stays full), whichever thread sends.
            mb.dropped += 1;
            let wake = mb.dropped == 1 && !mb.polling;
            drop(mb);
            if wake {
                self.inner.waker.wake();
            }
            return SendStatus::BufferFull;
        }
        let before = mb.queue.len();
        let queued_before = mb.queued();
        let mailbox = &mut *mb;
        if let Err(e) = encode(&mut mailbox.queue, &mut mailbox.encoder) {
            mb.queue.truncate(before);
            return SendStatus::EncodeFailed(e);
        }
        mb.messages_out += u64::from(count);
        // Crossing the limit: the state machine starts a full-buffer
        // episode (`on_buffer_full`, and with `Backpressure::PauseRecv` no
        // more reading) when it sees the request, before it delivers the
        // connection's next message. Sends that stay over it signal nothing.
        let limit = limits.send_buffer_size;
        let full = queued_before < limit && mb.queued() >= limit;
        let wake = (before == 0 || full) && !mb.polling;
        if full {
            // Under the lock: the state machine sees the request no later
            // than the queue that caused it.
            self.inner.mark(req::FULL);
        }
        drop(mb);
        if wake {
            self.inner.waker.wake();
        }
        SendStatus::Queued
    }

    /// Largest message this connection accepts, in bytes (Workerman's
    /// `$connection->maxPackageSize`). Starts at the worker's
    /// `max_package_size`; the protocol's own limit applies as well.
    pub fn max_package_size(&self) -> usize {
        self.inner.max_package_size.load(Ordering::Relaxed)
    }

    /// Changes this connection's message size limit (after a login, say).
    pub fn set_max_package_size(&self, bytes: usize) {
        self.inner
            .max_package_size
            .store(bytes.max(1), Ordering::Relaxed);
    }

    /// Bytes queued and not yet written to the socket.
    pub fn send_buffer_len(&self) -> usize {
        self.inner.mailbox().queued()
    }

    /// Stops reading, flushes what is queued, then closes (Workerman's `close()`).
    ///
    /// On a client connection this is final: it never reconnects and no
    /// timer of it fires afterwards.
    pub fn close(&self) {
        self.user_closed();
        self.close_with_reason(CloseReason::Local);
    }

    /// Sends `msg`, then closes gracefully (final, like [`close`](Self::close)).
    pub fn close_with(&self, msg: &P::Outgoing) {
        let _ = self.send(msg);
        self.close();
    }

    /// Like [`close`](Self::close), with a protocol-level close code and
    /// reason for the protocol's goodbye (WebSocket: the close frame's code,
    /// 1000 when plain `close()` is used). `on_close` gets
    /// [`CloseReason::Session`] with them. Protocols without close codes
    /// write no goodbye.
    pub fn close_session(&self, code: u16, reason: &str) {
        self.user_closed();
        self.close_with_reason(CloseReason::Session(SessionClose::local(code, reason)));
    }

    /// Closes gracefully and records `reason` (shown to `on_close`) unless
    /// a reason was already recorded. Unlike [`close`](Self::close), a client
    /// connection closed this way still follows its reconnect policy (the
    /// heartbeat closes dead links with [`CloseReason::HeartbeatTimeout`] so).
    pub fn close_with_reason(&self, reason: CloseReason) {
        self.inner.request_close(reason, req::CLOSE);
    }

    fn user_closed(&self) {
        if let Some(ctl) = &self.inner.client {
            ctl.user_close();
        }
    }

    /// Client connections: closes the current connection, if any, and
    /// connects again after `after` (Workerman's `reconnect()`). Also revives
    /// a client that gave up or waits after a disconnect without an
    /// automatic policy. Returns [`Misuse::NotAClient`] on a server connection.
    pub fn reconnect(&self, after: Duration) -> Result<(), Misuse> {
        let ctl = self.inner.client.as_ref().ok_or(Misuse::NotAClient)?;
        if ctl.is_user_closed() {
            return Err(Misuse::InvalidState(
                "the connection was closed by the application",
            ));
        }
        ctl.request_reconnect(after);
        if self.is_connected() {
            self.close_with_reason(CloseReason::Custom("reconnect requested".into()));
        }
        Ok(())
    }

    /// Client connections: cancels a scheduled reconnect (manual or from
    /// the automatic policy) without closing anything; the client then waits
    /// for [`reconnect`](Self::reconnect). No-op on server connections.
    pub fn cancel_reconnect(&self) {
        if let Some(ctl) = &self.inner.client {
            ctl.cancel_reconnect();
        }
    }

    /// Client connections: tells the reconnect policy the link proved
    /// healthy (the heartbeat calls this after a round trip), which resets
    /// the backoff. No-op on server connections.
    pub fn mark_healthy(&self) {
        if let Some(ctl) = &self.inner.client {
            ctl.mark_healthy();
        }
    }

    /// Whether this is a client (outgoing) connection.
    pub fn is_client(&self) -> bool {
        self.inner.client.is_some()
    }

    /// Whether a socket is currently connected (servers: until closed;
    /// clients: between `on_connect` and `on_close` of each session).
    pub fn is_connected(&self) -> bool {
        matches!(self.inner.status(), status::LIVE | status::CLOSING)
    }

    /// Graceful close for a stopping worker: flush, but do not linger.
    pub(crate) fn close_for_stop(&self) {
        self.user_closed();
        self.inner
            .request_close(CloseReason::WorkerStopped, req::CLOSE | req::NO_LINGER);
    }

    /// Graceful close for a worker handing its clients to a new process:
    /// the protocol's goodbye asks the peer to reconnect.
    pub(crate) fn close_for_restart(&self) {
        self.user_closed();
        self.inner.request_close(CloseReason::Restart, req::CLOSE);
    }

    /// Closes at once, discarding anything not yet written.
    pub fn destroy(&self) {
        self.user_closed();
        self.inner
            .request_close(CloseReason::Destroyed, req::DESTROY);
    }

    /// Stops reading from the socket until [`resume_recv`](Self::resume_recv).
    /// Messages already read stay buffered, undelivered.
    pub fn pause_recv(&self) {
        self.inner.request(req::PAUSE);
    }

    /// Resumes reading after [`pause_recv`](Self::pause_recv).
    pub fn resume_recv(&self) {
        self.inner.clear_requests(req::PAUSE);
        self.inner.waker.wake();
    }

    /// Whether reading is paused.
    pub fn is_recv_paused(&self) -> bool {
        self.inner.requests() & req::PAUSE != 0
    }

    /// Whether a close was requested or the connection is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.inner.requests() & (req::CLOSE | req::DESTROY) != 0
            || self.inner.status() >= status::CLOSING
    }

    /// Whether the connection is closed (`on_close` ran or is running).
    pub fn is_closed(&self) -> bool {
        self.inner.status() == status::CLOSED
    }

    /// Traffic counters.
    pub fn stats(&self) -> ConnStats {
        let i = &self.inner;
        ConnStats {
            bytes_in: i.bytes_in.load(Ordering::Relaxed),
            bytes_out: i.bytes_out.load(Ordering::Relaxed),
            messages_in: i.messages_in.load(Ordering::Relaxed),
            messages_out: self.inner.mailbox().messages_out,
            write_calls: i.write_calls.load(Ordering::Relaxed),
            buffer_full: i.buffer_full.load(Ordering::Relaxed),
        }
    }

    /// What an operator's listing shows of this connection: addresses,
    /// counters, send queue, state, age and idle time.
    pub fn info(&self) -> ConnInfo {
        let now = monotonic_nanos(Instant::now());
        let i = &self.inner;
        let ago = |t: u64| Duration::from_nanos(now.saturating_sub(t));
        ConnInfo {
            id: i.id,
            loop_index: i.loop_id,
            remote: i.remote,
            local: self.local_addr(),
            stats: self.stats(),
            send_queue: self.send_buffer_len(),
            state: match i.status() {
                status::IDLE => ConnState::Idle,
                status::LIVE => ConnState::Open,
                status::CLOSING => ConnState::Closing,
                _ => ConnState::Closed,
            },
            age: ago(i.created),
            idle: ago(i.last_active.load(Ordering::Relaxed)),
        }
    }

    /// When bytes last arrived (monotonic; the connect time before any).
    pub fn last_active(&self) -> Instant {
        instant_of(self.inner.last_active.load(Ordering::Relaxed))
    }

    /// [`last_active`](Self::last_active) as raw [`monotonic_nanos`]: one
    /// relaxed atomic load, for sweeps over many connections.
    pub fn last_active_nanos(&self) -> u64 {
        self.inner.last_active.load(Ordering::Relaxed)
    }

    /// Stores typed user data on the connection (Workerman's `$connection->context`),
    /// replacing any previous value.
    pub fn set_context<T: Any + Send + Sync>(&self, value: T) {
        *self.context_slot() = Some(Arc::new(value));
    }

    /// The user data, if it was set with type `T`.
    pub fn context<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.context_slot().clone()?.downcast::<T>().ok()
    }

    /// The user data of type `T`, inserting `init()` first if there is none
    /// (or it has another type).
    pub fn context_or_insert_with<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let mut slot = self.context_slot();
        if let Some(v) = slot.clone().and_then(|v| v.downcast::<T>().ok()) {
            return v;
        }
        let v = Arc::new(init());
        *slot = Some(v.clone());
        v
    }

    /// Removes the user data.
    pub fn clear_context(&self) {
        self.context_slot().take();
    }

    fn context_slot(&self) -> MutexGuard<'_, Option<Arc<dyn Any + Send + Sync>>> {
        self.inner
            .context
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
