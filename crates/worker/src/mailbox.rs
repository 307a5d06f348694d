//! A connection's mailbox: the one part of a connection that other threads
//! touch. The [`Connection`](crate::Connection) handle is a reference to it.
//!
//! Who writes what (one writer per piece of state):
//!
//! | state | written by | read by |
//! |---|---|---|
//! | the send queue, its encoder, dropped sends, `messages_out` | `send` (any thread), under the mailbox lock | the state machine, which takes the queue to write it |
//! | `in_flight` (taken, not yet written) | the state machine | `send`, for the buffer limit |
//! | request bits (close, destroy, pause, no linger, buffer full) and the requested close reason | the handle (any thread) | the state machine, which acts on them |
//! | `accepting` (sends accepted) | closing the handle; the state machine and a client's supervisor at session boundaries | `send` |
//! | `polling` (no wake needed) | the connection's task | `send` |
//! | the published [`status`](ConnShared::status) | the state machine (a client's supervisor between sessions) | `is_connected`, `is_closing`, `is_closed` |
//! | counters, `last_active` | the state machine (one loop) | anyone |
//!
//! Everything else about a connection (its phase, the effective close
//! reason, full-buffer and dropped-send episodes, buffers, deadlines) is the
//! state machine's alone (`crate::lifecycle`).

use std::any::Any;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use atomic_waker::AtomicWaker;

use crate::client_ctl::ClientCtl;
use crate::clock::monotonic_nanos;
use crate::error::CloseReason;
use crate::limits::Limits;
use crate::memory::release;
use crate::protocol::Protocol;

/// What every connection of a worker (or a client) is configured with.
pub(crate) struct ConnConfig<P: Protocol> {
    /// The protocol's configuration, handed to the sessions.
    pub protocol: P,
    /// The limits.
    pub limits: Limits,
}

/// Request bits, set by the handle from any thread.
pub(crate) mod req {
    /// Close gracefully (the reason is in the mailbox).
    pub const CLOSE: u8 = 1;
    /// Close at once, discarding what is queued.
    pub const DESTROY: u8 = 2;
    /// Stop reading until resumed (a state the application holds).
    pub const PAUSE: u8 = 4;
    /// The worker is stopping: close without waiting for the peer's FIN.
    pub const NO_LINGER: u8 = 8;
    /// A send took the queue to the send buffer limit.
    pub const FULL: u8 = 16;
}

/// The status the connection's owner publishes for the handle.
pub(crate) mod status {
    /// No socket: a client before its first connect or between sessions.
    pub const IDLE: u8 = 0;
    /// A socket is up (handshaking or established).
    pub const LIVE: u8 = 1;
    /// Closing: no more input is delivered; what is queued is flushed.
    pub const CLOSING: u8 = 2;
    /// `on_close` ran (or is running), or a client closed for good.
    pub const CLOSED: u8 = 3;
}

/// The part of the mailbox guarded by the connection's own lock.
pub(crate) struct Mailbox<P: Protocol> {
    /// Encoded bytes not yet taken by the writer.
    pub queue: Vec<u8>,
    /// Bytes taken by the writer and not yet written.
    pub in_flight: usize,
    /// Sends dropped since the last report.
    pub dropped: u64,
    /// Sends are accepted.
    pub accepting: bool,
    /// The connection's task is running and will look at the mailbox
    /// before it sleeps, so senders need not wake it.
    pub polling: bool,
    /// Messages queued by `send`.
    pub messages_out: u64,
    /// Why the application asked to close (the first request wins).
    pub close_request: Option<CloseReason>,
    /// The protocol session's encoding half.
    pub encoder: P::Encoder,
}

impl<P: Protocol> Mailbox<P> {
    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queue.len() + self.in_flight
    }
}

/// The shared state behind a [`Connection`](crate::Connection) handle.
pub(crate) struct ConnShared<P: Protocol> {
    pub id: u64,
    /// Index of the event loop that drives the connection.
    pub loop_id: usize,
    pub remote: SocketAddr,
    pub local: Mutex<SocketAddr>,
    pub config: Arc<ConnConfig<P>>,
    mailbox: Mutex<Mailbox<P>>,
    requests: AtomicU8,
    status: AtomicU8,
    pub waker: AtomicWaker,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub write_calls: AtomicU64,
    /// [`monotonic_nanos`] of the last inbound bytes.
    pub last_active: AtomicU64,
    /// [`monotonic_nanos`] of the connection's creation.
    pub created: u64,
    /// Full-send-buffer episodes (the state machine counts them).
    pub buffer_full: AtomicU64,
    /// Largest message (or incomplete message) accepted, in bytes.
    pub max_package_size: AtomicUsize,
    /// Reconnect requests, for client connections only.
    pub client: Option<Box<ClientCtl>>,
    pub context: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
}

/// A fresh connection id, unique in the process (servers and clients alike).
fn next_conn_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl<P: Protocol> ConnShared<P> {
    pub fn new(
        config: Arc<ConnConfig<P>>,
        remote: SocketAddr,
        local: SocketAddr,
        loop_id: usize,
        client: Option<Box<ClientCtl>>,
    ) -> Self {
        let mailbox = Mailbox {
            queue: Vec::new(),
            in_flight: 0,
            dropped: 0,
            accepting: true,
            polling: false,
            messages_out: 0,
            close_request: None,
            encoder: config.protocol.encoder(),
        };
        let created = monotonic_nanos(Instant::now());
        ConnShared {
            id: next_conn_id(),
            loop_id,
            remote,
            local: Mutex::new(local),
            max_package_size: AtomicUsize::new(config.limits.max_package_size),
            config,
            mailbox: Mutex::new(mailbox),
            requests: AtomicU8::new(0),
            status: AtomicU8::new(status::IDLE),
            waker: AtomicWaker::new(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            write_calls: AtomicU64::new(0),
            last_active: AtomicU64::new(created),
            created,
            buffer_full: AtomicU64::new(0),
            client,
            context: Mutex::new(None),
        }
    }

    /// The mailbox under its lock.
    pub fn mailbox(&self) -> MutexGuard<'_, Mailbox<P>> {
        self.mailbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request bits now.
    pub fn requests(&self) -> u8 {
        self.requests.load(Ordering::Acquire)
    }

    /// Sets request bits and wakes the connection's task.
    pub fn request(&self, bits: u8) {
        self.mark(bits);
        self.waker.wake();
    }

    /// Sets request bits without waking (the caller wakes if needed).
    pub fn mark(&self, bits: u8) {
        self.requests.fetch_or(bits, Ordering::AcqRel);
    }

    /// Clears request bits the owner has acted on; returns whether any of
    /// them was set.
    pub fn take_requests(&self, bits: u8) -> bool {
        self.requests.fetch_and(!bits, Ordering::AcqRel) & bits != 0
    }

    /// Clears request bits (the application resumes reading).
    pub fn clear_requests(&self, bits: u8) {
        self.requests.fetch_and(!bits, Ordering::AcqRel);
    }

    /// The status published by the connection's owner.
    pub fn status(&self) -> u8 {
        self.status.load(Ordering::Acquire)
    }

    /// Publishes the connection's status (its owner only).
    pub fn publish(&self, status: u8) {
        self.status.store(status, Ordering::Release);
    }

    /// Asks for a graceful close for `reason` (recorded unless an earlier
    /// request's is) and refuses further sends.
    pub fn request_close(&self, reason: CloseReason, bits: u8) {
        {
            let mut mb = self.mailbox();
            mb.close_request.get_or_insert(reason);
            mb.accepting = false;
        }
        self.request(bits);
    }

    /// Starts a client's next session afresh: no request, nothing in
    /// flight, a new encoder; sends accepted or not (its supervisor only).
    pub fn reset_session(&self, accept_sends: bool) {
        self.requests.store(0, Ordering::Release);
        self.publish(status::IDLE);
        let mut mb = self.mailbox();
        mb.accepting = accept_sends;
        mb.in_flight = 0;
        mb.close_request = None;
        mb.encoder = self.config.protocol.encoder();
    }

    /// A client's final close (its supervisor ends): no more sends accepted,
    /// nothing kept queued.
    pub fn retire(&self) {
        self.publish(status::CLOSED);
        let mut mb = self.mailbox();
        mb.accepting = false;
        release(&mut mb.queue);
    }

    /// Refuses sends until [`reset_session`](Self::reset_session) (a client
    /// waiting for an explicit reconnect).
    pub fn refuse_sends(&self) {
        self.mailbox().accepting = false;
    }
}
