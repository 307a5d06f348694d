//! The connection handle shared by callbacks, timers and other threads.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use dashmap::DashMap;

use crate::error::{CloseReason, Error};
use crate::protocol::{Protocol, ProtocolError};

/// A boxed, loop-local future returned by async message handlers.
pub type LocalBoxFuture = Pin<Box<dyn Future<Output = ()> + 'static>>;

pub(crate) type ConnFn<P> = Arc<dyn Fn(&Connection<P>) + Send + Sync>;
pub(crate) type CloseFn<P> = Arc<dyn Fn(&Connection<P>, &CloseReason) + Send + Sync>;
pub(crate) type ErrorFn<P> = Arc<dyn Fn(&Connection<P>, &Error) + Send + Sync>;
pub(crate) type MessageFn<P> = Arc<dyn Fn(&Connection<P>, <P as Protocol>::Message) + Send + Sync>;
pub(crate) type AsyncMessageFn<P> =
    Arc<dyn Fn(Connection<P>, <P as Protocol>::Message) -> LocalBoxFuture + Send + Sync>;

/// How inbound messages are handed to the application.
pub(crate) enum MessageHandler<P: Protocol> {
    Sync(MessageFn<P>),
    Async(AsyncMessageFn<P>),
}

impl<P: Protocol> Clone for MessageHandler<P> {
    fn clone(&self) -> Self {
        match self {
            MessageHandler::Sync(f) => MessageHandler::Sync(f.clone()),
            MessageHandler::Async(f) => MessageHandler::Async(f.clone()),
        }
    }
}

/// The connection callbacks of a worker (or client).
pub(crate) struct Handlers<P: Protocol> {
    pub on_connect: Option<ConnFn<P>>,
    pub on_message: Option<MessageHandler<P>>,
    pub on_close: Option<CloseFn<P>>,
    pub on_error: Option<ErrorFn<P>>,
    pub on_buffer_full: Option<ConnFn<P>>,
    pub on_buffer_drain: Option<ConnFn<P>>,
    pub plugins: Vec<Arc<dyn crate::plugin::Plugin<P>>>,
}

impl<P: Protocol> Default for Handlers<P> {
    fn default() -> Self {
        Handlers {
            on_connect: None,
            on_message: None,
            on_close: None,
            on_error: None,
            on_buffer_full: None,
            on_buffer_drain: None,
            plugins: Vec::new(),
        }
    }
}

impl<P: Protocol> Clone for Handlers<P> {
    fn clone(&self) -> Self {
        Handlers {
            on_connect: self.on_connect.clone(),
            on_message: self.on_message.clone(),
            on_close: self.on_close.clone(),
            on_error: self.on_error.clone(),
            on_buffer_full: self.on_buffer_full.clone(),
            on_buffer_drain: self.on_buffer_drain.clone(),
            plugins: self.plugins.clone(),
        }
    }
}

/// The connection callback setters shared by `Worker` and `Client`: both
/// hold a `handlers: Handlers<P>` field.
macro_rules! connection_callbacks {
    () => {
        /// Runs when a connection is established, before any message (for a
        /// client: at each (re)connect).
        pub fn on_connect(
            &mut self,
            f: impl Fn(&Connection<P>) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_connect = Some(Arc::new(f));
            self
        }

        /// Runs for each decoded message, in order.
        pub fn on_message(
            &mut self,
            f: impl Fn(&Connection<P>, P::Message) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_message = Some(MessageHandler::Sync(Arc::new(f)));
            self
        }

        /// Like `on_message`, for handlers that must await (a database
        /// call, say). The loop keeps serving other connections while the
        /// future runs; one connection's messages are still handled one at a
        /// time, in order. Up to `async_queue` messages are decoded ahead,
        /// then reading pauses. The future runs on the connection's loop and
        /// need not be `Send`. Replaces any `on_message` handler.
        pub fn on_message_async<F, Fut>(&mut self, f: F) -> &mut Self
        where
            F: Fn(Connection<P>, P::Message) -> Fut + Send + Sync + 'static,
            Fut: std::future::Future<Output = ()> + 'static,
        {
            self.handlers.on_message = Some(MessageHandler::Async(Arc::new(move |c, m| {
                Box::pin(f(c, m)) as LocalBoxFuture
            })));
            self
        }

        /// Runs exactly once per connection (client: per session) after it
        /// closed for any reason, with the reason.
        pub fn on_close(
            &mut self,
            f: impl Fn(&Connection<P>, &CloseReason) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_close = Some(Arc::new(f));
            self
        }

        /// Runs on a connection error: a protocol violation, dropped sends,
        /// a panicking callback, a socket error, a close that could not
        /// flush, a client's failed connect attempt.
        pub fn on_error(
            &mut self,
            f: impl Fn(&Connection<P>, &Error) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_error = Some(Arc::new(f));
            self
        }

        /// Runs when a connection's send buffer reaches its limit.
        pub fn on_buffer_full(
            &mut self,
            f: impl Fn(&Connection<P>) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_buffer_full = Some(Arc::new(f));
            self
        }

        /// Runs when a full send buffer has been completely written out.
        pub fn on_buffer_drain(
            &mut self,
            f: impl Fn(&Connection<P>) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_buffer_drain = Some(Arc::new(f));
            self
        }

        /// Installs a plugin (the heartbeat, say). Its hooks run before the
        /// callbacks of the same name, in the order plugins were added.
        pub fn plugin(&mut self, plugin: impl crate::plugin::Plugin<P>) -> &mut Self {
            self.handlers.plugins.push(Arc::new(plugin));
            self
        }
    };
}
pub(crate) use connection_callbacks;

/// Per-connection limits, with Workerman's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Send buffer limit per connection in bytes. Default 1 MiB.
    pub send_buffer_size: usize,
    /// Largest incomplete message the worker buffers per connection, in
    /// bytes, whatever the protocol says. Default 10 MiB.
    pub max_package_size: usize,
    /// How long a graceful close may take to flush and see the peer's FIN
    /// before the socket is dropped. Default 5 s.
    pub close_timeout: Duration,
    /// Messages decoded ahead while an async handler runs (per connection)
    /// before reading pauses. Default 64.
    pub async_queue: usize,
    /// Close connections that have not sent a whole first message within
    /// this time (a handshake timeout). Default: none.
    pub first_message_timeout: Option<Duration>,
}

/// Default per-connection send buffer limit: 1 MiB (Workerman's).
pub const DEFAULT_SEND_BUFFER_SIZE: usize = 1024 * 1024;
/// Default maximum buffered package size: 10 MiB (Workerman's).
pub const DEFAULT_MAX_PACKAGE_SIZE: usize = 10 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            send_buffer_size: DEFAULT_SEND_BUFFER_SIZE,
            max_package_size: DEFAULT_MAX_PACKAGE_SIZE,
            close_timeout: Duration::from_secs(5),
            async_queue: 64,
            first_message_timeout: None,
        }
    }
}

/// What connections of one worker (or one client) share.
pub(crate) struct Endpoint<P: Protocol> {
    pub protocol: P,
    pub handlers: Handlers<P>,
    pub limits: Limits,
    pub connections: DashMap<u64, Connection<P>>,
    /// Connection tasks alive (including ones lingering after `on_close`).
    pub tasks: AtomicUsize,
}

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

/// The send queue, guarded by the connection's own lock (never a global one).
#[derive(Default)]
pub(crate) struct Outbox {
    /// Encoded bytes not yet taken by the writer.
    pub buf: Vec<u8>,
    /// Bytes taken by the writer and not yet written.
    pub in_flight: usize,
    /// The buffer crossed the limit and has not drained yet.
    pub full: bool,
    /// `on_buffer_full` is due.
    pub full_pending: bool,
    /// Sends dropped since the last `on_error` report.
    pub dropped: u64,
    /// No more sends accepted.
    pub closed: bool,
    /// The connection's task is running now and will look at the queue
    /// before it sleeps, so senders need not wake it.
    pub polling: bool,
    /// Messages queued by `send` (counted under this lock, by any thread).
    pub messages_out: u64,
}

pub(crate) struct ConnInner<P: Protocol> {
    pub id: u64,
    /// Index of the event loop that drives the connection.
    pub loop_id: usize,
    /// Process-unique identity of that loop.
    pub loop_uid: u64,
    pub remote: SocketAddr,
    pub local: Mutex<SocketAddr>,
    pub ep: Arc<Endpoint<P>>,
    pub out: Mutex<Outbox>,
    pub flags: AtomicU8,
    pub waker: AtomicWaker,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub write_calls: AtomicU64,
    /// Nanoseconds since [`clock_epoch`] of the last inbound bytes.
    pub last_active: AtomicU64,
    /// Largest message (or incomplete message) accepted, in bytes.
    pub max_package_size: AtomicUsize,
    reason: Mutex<Option<CloseReason>>,
    /// Reconnect control, for client connections only.
    pub client: Option<Box<crate::client::ClientCtl>>,
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

/// The process-wide origin of the monotonic timestamps stored in connections.
pub(crate) fn clock_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from a process-wide origin to `t` (0 for instants before it).
/// The unit of [`Connection::last_active_nanos`]: compute a cutoff once with
/// this and compare raw stamps against it, no `Instant` per connection.
pub fn monotonic_nanos(t: Instant) -> u64 {
    mono_nanos(t)
}

pub(crate) fn mono_nanos(t: Instant) -> u64 {
    t.saturating_duration_since(clock_epoch()).as_nanos() as u64
}

/// Adds to a counter only the connection's own loop writes: a plain load
/// and store, no locked read-modify-write on the hot path.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
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
        client: Option<Box<crate::client::ClientCtl>>,
    ) -> Self {
        let max_package_size = AtomicUsize::new(ep.limits.max_package_size);
        Connection {
            inner: Arc::new(ConnInner {
                id: next_conn_id(),
                loop_id,
                loop_uid,
                remote,
                local: Mutex::new(local),
                ep,
                out: Mutex::new(Outbox::default()),
                flags: AtomicU8::new(0),
                waker: AtomicWaker::new(),
                bytes_in: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
                messages_in: AtomicU64::new(0),
                write_calls: AtomicU64::new(0),
                last_active: AtomicU64::new(mono_nanos(Instant::now())),
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
    }

    pub(crate) fn outbox(&self) -> MutexGuard<'_, Outbox> {
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
        self.queue(true, |buf| ep.protocol.encode(msg, buf))
    }

    /// Queues bytes as they are, bypassing the protocol's encoder.
    pub fn send_raw(&self, bytes: &[u8]) -> SendStatus {
        self.queue(false, |buf| {
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
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), ProtocolError>,
    ) -> SendStatus {
        let limit = self.inner.ep.limits.send_buffer_size;
        let mut ob = self.outbox();
        if ob.closed && !self.inner.client.as_ref().is_some_and(|c| c.keeps_queue()) {
            return SendStatus::Closed;
        }
        if ob.buf.len() + ob.in_flight >= limit {
            if self.on_own_loop() {
                drop(ob);
                crate::driver::report(self, &Error::SendBufferFull { dropped: 1, limit });
            } else {
                // Reported by the connection's own loop.
                ob.dropped += 1;
                let wake = !ob.polling;
                drop(ob);
                if wake {
                    self.inner.waker.wake();
                }
            }
            return SendStatus::BufferFull;
        }
        let before = ob.buf.len();
        if let Err(e) = encode(&mut ob.buf) {
            ob.buf.truncate(before);
            return SendStatus::EncodeFailed(e);
        }
        ob.messages_out += u64::from(count);
        let mut wake = before == 0;
        let mut full_now = false;
        if !ob.full && ob.buf.len() + ob.in_flight >= limit {
            ob.full = true;
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
            crate::driver::fire_buffer_full(self);
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
        let ob = self.outbox();
        ob.buf.len() + ob.in_flight
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
            return Err(Error::Config(
                "the connection was closed by the application".into(),
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
        clock_epoch() + Duration::from_nanos(self.inner.last_active.load(Ordering::Relaxed))
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
