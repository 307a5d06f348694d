//! What the connections of one worker (or one client) share: the protocol,
//! the callbacks, the limits and the live-connections map.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use dashmap::DashMap;
use serde::Deserialize;

use crate::connection::Connection;
use crate::handlers::Handlers;
use crate::memory::{default_memory_budget, MemoryBudget};
use crate::protocol::Protocol;

/// Per-connection limits, with Workerman's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// this time. Default: none.
    pub first_message_timeout: Option<Duration>,
    /// Close connections whose protocol handshake (a WebSocket upgrade, say)
    /// has not finished within this time. Protocols without a handshake
    /// ignore it. Default 10 s.
    pub handshake_timeout: Duration,
    /// What a full send buffer does to the connection. Default
    /// [`Backpressure::PauseRecv`].
    pub backpressure: Backpressure,
    /// Most bytes buffered (incomplete input, queued output) by all the
    /// connections of a worker together; see `Worker::memory_budget`.
    /// Default: a 64th of the machine's memory, between 64 MiB and 512 MiB.
    pub memory_budget: usize,
}

/// What happens when a connection's send buffer reaches its limit
/// (`send_buffer_size`). `on_buffer_full` fires either way, once per episode,
/// and `on_buffer_drain` when it has been written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Backpressure {
    /// Stop reading from the connection until its send buffer drains: a
    /// peer that does not read what it asked for cannot make the server
    /// read, decode and answer more (what Workerman users write by hand in
    /// `onBufferFull` / `onBufferDrain`). Sends still go into the buffer up
    /// to twice the limit, so replies to requests already read are not
    /// lost; past that they are dropped and counted as with `Drop`.
    #[default]
    PauseRecv,
    /// Workerman's behaviour: keep reading; sends past the limit are
    /// dropped, counted, and reported through `on_error` once per episode
    /// (when the buffer drains or the connection closes, and at most once a
    /// second while it stays full).
    Drop,
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
            handshake_timeout: Duration::from_secs(10),
            backpressure: Backpressure::default(),
            memory_budget: default_memory_budget(),
        }
    }
}

impl Limits {
    /// The queue size at which sends are dropped.
    pub(crate) fn drop_threshold(&self) -> usize {
        match self.backpressure {
            Backpressure::PauseRecv => self.send_buffer_size.saturating_mul(2),
            Backpressure::Drop => self.send_buffer_size,
        }
    }
}

/// What connections of one worker (or one client) share.
pub(crate) struct Endpoint<P: Protocol> {
    pub protocol: P,
    pub handlers: Handlers<P>,
    pub limits: Limits,
    /// Established connections (servers), live connections (clients).
    pub connections: DashMap<u64, Connection<P>>,
    /// Sockets open (handshaking, established or lingering after `on_close`).
    pub sockets: AtomicUsize,
    /// What all connections buffer, against `limits.memory_budget`.
    pub memory: MemoryBudget,
}

impl<P: Protocol> Endpoint<P> {
    pub fn new(protocol: P, handlers: Handlers<P>, limits: Limits) -> Self {
        Endpoint {
            protocol,
            handlers,
            memory: MemoryBudget::new(limits.memory_budget),
            limits,
            connections: DashMap::new(),
            sockets: AtomicUsize::new(0),
        }
    }
}
