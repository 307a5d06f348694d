//! The connection handle shared by callbacks, timers and other threads.
//!
//! A [`Connection`] is what the application holds: sends, closes, pauses,
//! counters, user data. It never touches the socket: it records requests
//! (flags, the send queue) and wakes the connection's task, whose state
//! machine (`crate::core`) acts on them on the connection's own loop.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;

use crate::client_ctl::ClientCtl;
use crate::clock::{instant_of, monotonic_nanos};
use crate::endpoint::Endpoint;
use crate::error::{CloseReason, Error};
use crate::handlers::fire_buffer_full;
use crate::outbox::Outbox;
use crate::protocol::{Protocol, ProtocolError, SessionClose};

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
}

pub(crate) const CLOSE_REQ: u8 = 1;
pub(crate) const DESTROY_REQ: u8 = 2;
pub(crate) const PAUSED: u8 = 4;
pub(crate) const FINISHED: u8 = 8;
/// Close without waiting for the peer's FIN (the worker is stopping).
pub(crate) const NO_LINGER: u8 = 16;
/// The send queue reached `send_buffer_size` and has not drained yet.
pub(crate) const OVER_LIMIT: u8 = 32;

pub(crate) struct ConnInner<P: Protocol> {
    pub id: u64,
    /// Index of the event loop that drives the connection.
    pub loop_id: usize,
    /// Process-unique identity of that loop.
    pub loop_uid: u64,
    pub remote: SocketAddr,
    pub local: Mutex<SocketAddr>,
    pub ep: Arc<Endpoint<P>>,
    pub out: Mutex<Outbox<P>>,
    pub flags: AtomicU8,
    pub waker: AtomicWaker,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub write_calls: AtomicU64,
    /// [`monotonic_nanos`] of the last inbound bytes.
    pub last_active: AtomicU64,
    /// Largest message (or incomplete message) accepted, in bytes.
    pub max_package_size: AtomicUsize,
    reason: Mutex<Option<CloseReason>>,
    /// Reconnect control, for client connections only.
    pub client: Option<Box<ClientCtl>>,
    context: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
}

/// A live connection: cheap to clone, `Send + Sync`, usable from any thread.
///
/// Callbacks receive `&Connection`; clone it to keep it (in a timer, another
/// thread, a map of sessions). All methods are non-blocking.
pub struct Connection<P: Protocol> {
    pub(crate) inner: Arc<ConnInner<P>>,
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

/// A fresh connection id, unique in the process (servers and clients alike).
pub(crate) fn next_conn_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl<P: Protocol> Connection<P> {
    pub(crate) fn new(
        ep: Arc<Endpoint<P>>,
        remote: SocketAddr,
        local: SocketAddr,
        loop_id: usize,
        loop_uid: u64,
        client: Option<Box<ClientCtl>>,
    ) -> Self {
        let max_package_size = AtomicUsize::new(ep.limits.max_package_size);
        let outbox = Outbox::new(ep.protocol.encoder());
        Connection {
            inner: Arc::new(ConnInner {
                id: next_conn_id(),
                loop_id,
                loop_uid,
                remote,
                local: Mutex::new(local),
                ep,
                out: Mutex::new(outbox),
                flags: AtomicU8::new(0),
                waker: AtomicWaker::new(),
                bytes_in: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
                messages_in: AtomicU64::new(0),
                write_calls: AtomicU64::new(0),
                last_active: AtomicU64::new(monotonic_nanos(Instant::now())),
                max_package_size,
                reason: Mutex::new(None),
                client,
                context: Mutex::new(None),
            }),
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

    /// Records why the connection closes, unless a reason is already recorded.
    pub(crate) fn set_reason(&self, reason: CloseReason) {
        let mut r = self
            .inner
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if r.is_none() {
            *r = Some(reason);
        }
    }

    /// Records `reason`, replacing any recorded before (a flush that timed
    /// out overrides the close that started it).
    pub(crate) fn force_reason(&self, reason: CloseReason) {
        *self
            .inner
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    /// Forgets the close state of the previous session (client reconnects).
    pub(crate) fn reset_session(&self, accept_sends: bool) {
        *self
            .inner
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.inner.flags.store(0, Ordering::Release);
        let mut ob = self.outbox();
        ob.closed = !accept_sends;
        ob.in_flight = 0;
        ob.full = false;
        ob.full_pending = false;
        ob.encoder = self.inner.ep.protocol.encoder();
    }

    pub(crate) fn outbox(&self) -> MutexGuard<'_, Outbox<P>> {
        self.inner
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Encodes `msg` with the protocol and queues it. Never blocks.
    ///
    /// Sends of one loop turn are coalesced into as few writes as possible.
    /// When the queue already holds `send_buffer_size` bytes the message is
    /// dropped ([`SendStatus::BufferFull`]) and reported through `on_error`.
    pub fn send(&self, msg: &P::Outgoing) -> SendStatus {
        let ep = &self.inner.ep;
        self.queue(true, |buf, encoder| ep.protocol.encode(encoder, msg, buf))
    }

    /// Queues bytes as they are, bypassing the protocol's encoder.
    pub fn send_raw(&self, bytes: &[u8]) -> SendStatus {
        self.queue(false, |buf, _| {
            buf.extend_from_slice(bytes);
            Ok(())
        })
    }

    /// Whether the caller runs on the loop that drives this connection, where
    /// buffer events fire synchronously inside `send`, as in Workerman.
    fn on_own_loop(&self) -> bool {
        crate::event_loop::current_loop_uid() == self.inner.loop_uid
    }

    fn queue(
        &self,
        count: bool,
        encode: impl FnOnce(&mut Vec<u8>, &mut P::Encoder) -> Result<(), ProtocolError>,
    ) -> SendStatus {
        let limits = &self.inner.ep.limits;
        let limit = limits.send_buffer_size;
        let mut ob = self.outbox();
        if ob.closed && !self.inner.client.as_ref().is_some_and(|c| c.keeps_queue()) {
            return SendStatus::Closed;
        }
        if ob.queued() >= limits.drop_threshold() {
            // Counted, not reported one by one: the connection's own loop
            // reports the episode (when it drains, closes, or once a second
            // while it stays full), whichever thread sends.
            ob.dropped += 1;
            let wake = ob.dropped == 1 && !ob.polling;
            drop(ob);
            if wake {
                self.inner.waker.wake();
            }
            return SendStatus::BufferFull;
        }
        let before = ob.buf.len();
        let queue = &mut *ob;
        if let Err(e) = encode(&mut queue.buf, &mut queue.encoder) {
            ob.buf.truncate(before);
            return SendStatus::EncodeFailed(e);
        }
        ob.messages_out += u64::from(count);
        let mut wake = before == 0;
        let mut full_now = false;
        if !ob.full && ob.queued() >= limit {
            ob.full = true;
            // Seen by the state machine without taking this lock: with
            // `Backpressure::PauseRecv` reading stops until the queue drains.
            self.inner.flags.fetch_or(OVER_LIMIT, Ordering::AcqRel);
            if self.on_own_loop() {
                full_now = true;
            } else {
                ob.full_pending = true;
                wake = true;
            }
        }
        let wake = wake && !ob.polling;
        drop(ob);
        if wake {
            self.inner.waker.wake();
        }
        if full_now {
            fire_buffer_full(self);
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
        self.outbox().queued()
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
        self.set_reason(reason);
        self.outbox().closed = true;
        self.set_flag(CLOSE_REQ);
    }

    fn user_closed(&self) {
        if let Some(ctl) = &self.inner.client {
            ctl.user_close();
        }
    }

    /// Client connections: closes the current connection, if any, and
    /// connects again after `after` (Workerman's `reconnect()`). Also revives
    /// a client that gave up or waits after a disconnect without an
    /// automatic policy. Returns [`Error::NotAClient`] on a server connection.
    pub fn reconnect(&self, after: Duration) -> Result<(), Error> {
        let ctl = self.inner.client.as_ref().ok_or(Error::NotAClient)?;
        if ctl.is_user_closed() {
            return Err(Error::InvalidState(
                "the connection was closed by the application",
            ));
        }
        ctl.request_reconnect(after);
        if self.flags() & FINISHED == 0 && ctl.is_connected() {
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
        match &self.inner.client {
            Some(ctl) => ctl.is_connected() && self.flags() & FINISHED == 0,
            None => self.flags() & FINISHED == 0,
        }
    }

    /// Graceful close for a stopping worker: flush, but do not linger.
    pub(crate) fn close_for_stop(&self) {
        self.inner.flags.fetch_or(NO_LINGER, Ordering::AcqRel);
        self.user_closed();
        self.close_with_reason(CloseReason::WorkerStopped);
    }

    /// Closes at once, discarding anything not yet written.
    pub fn destroy(&self) {
        self.user_closed();
        self.set_reason(CloseReason::Destroyed);
        self.outbox().closed = true;
        self.set_flag(DESTROY_REQ);
    }

    /// Stops reading from the socket until [`resume_recv`](Self::resume_recv).
    /// Messages already read stay buffered, undelivered.
    pub fn pause_recv(&self) {
        self.set_flag(PAUSED);
    }

    /// Resumes reading after [`pause_recv`](Self::pause_recv).
    pub fn resume_recv(&self) {
        self.inner.flags.fetch_and(!PAUSED, Ordering::AcqRel);
        self.inner.waker.wake();
    }

    /// Whether reading is paused.
    pub fn is_recv_paused(&self) -> bool {
        self.flags() & PAUSED != 0
    }

    /// Whether a close was requested or the connection is closed.
    pub fn is_closing(&self) -> bool {
        self.flags() & (CLOSE_REQ | DESTROY_REQ | FINISHED) != 0
    }

    /// Whether the connection is closed (`on_close` ran or is running).
    pub fn is_closed(&self) -> bool {
        self.flags() & FINISHED != 0
    }

    /// Why the connection closed or is closing, once known.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Traffic counters.
    pub fn stats(&self) -> ConnStats {
        let i = &self.inner;
        ConnStats {
            bytes_in: i.bytes_in.load(Ordering::Relaxed),
            bytes_out: i.bytes_out.load(Ordering::Relaxed),
            messages_in: i.messages_in.load(Ordering::Relaxed),
            messages_out: self.outbox().messages_out,
            write_calls: i.write_calls.load(Ordering::Relaxed),
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

    pub(crate) fn flags(&self) -> u8 {
        self.inner.flags.load(Ordering::Acquire)
    }

    fn set_flag(&self, flag: u8) {
        self.inner.flags.fetch_or(flag, Ordering::AcqRel);
        self.inner.waker.wake();
    }

    pub(crate) fn endpoint(&self) -> &Endpoint<P> {
        &self.inner.ep
    }
}
