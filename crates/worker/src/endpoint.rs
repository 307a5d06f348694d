//! What the connections of one worker (or one client) share: the protocol,
//! the callbacks, the limits and the live-connections map.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use dashmap::DashMap;

use crate::connection::Connection;
use crate::handlers::Handlers;
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
}

impl<P: Protocol> Endpoint<P> {
    pub fn new(protocol: P, handlers: Handlers<P>, limits: Limits) -> Self {
        Endpoint {
            protocol,
            handlers,
            limits,
            connections: DashMap::new(),
            sockets: AtomicUsize::new(0),
        }
    }
}
